/**
 * Secure Boot building blocks, for hosts and VMs:
 *
 * - VMs: EFI_SIGNATURE_LIST codec (esl.ts), the edk2/OVMF variable store (varstore.ts:
 *   parse, read back the enrolled keys, write keys into a pristine template) and key
 *   sets (keyset.ts: Microsoft's template as is, or an organisation's own PK/KEK/db/dbx).
 * - Hosts: signed software bundles and the agent's core manifest (bundle.ts), acceptance
 *   levels (acceptance.ts), and the signer → trust anchor chain policy (trust.ts).
 *
 * Pure functions over bytes wherever possible; file I/O only in buildVarsForKeySet and
 * the bundle/manifest directory functions.
 */
export type { Guid } from './guid.js';
export { EfiGuids, parseGuid } from './guid.js';

export type { EfiSignatureData, EfiSignatureList } from './esl.js';
export { decodeSignatureLists, encodeSignatureLists, sha256SignatureList, x509SignatureList } from './esl.js';

export type {
  EfiTime,
  EnrolledEntry,
  NewVariable,
  SecureBootKeyVariables,
  SecureBootVarsState,
  VariableRecord,
  VarStore,
} from './varstore.js';
export {
  appendVariables,
  findVariable,
  liveVariables,
  parseVarStore,
  readSecureBootState,
  writeSecureBootVariables,
} from './varstore.js';

export type {
  CustomKeySet,
  GeneratedKeySet,
  KeyEntry,
  KeySet,
  MicrosoftKeySet,
  Sha256KeyEntry,
  VarsOptions,
  X509KeyEntry,
} from './keyset.js';
export {
  MICROSOFT_KEY_SET,
  OVMF_TEMPLATES,
  buildVarsForKeySet,
  generateKeySet,
  keySetFromVarStore,
  keySetVariables,
  ovmfRequirementFor,
  validateKeySet,
  varsForKeySet,
} from './keyset.js';

export type { AcceptanceLevel } from './acceptance.js';
export {
  ACCEPTANCE_LEVELS,
  acceptanceRank,
  admits,
  lowestAcceptance,
  parseAcceptanceLevel,
} from './acceptance.js';

export type { TrustAnchor, TrustAnchorInput, TrustOptions } from './trust.js';
export { issueCodeSigningCertificate } from './trust.js';

export type {
  BundleDescriptor,
  BundleErrorCode,
  DescriptorMeta,
  FileProblem,
  SignatureEnvelope,
  Signer,
  Step,
  VerificationResult,
  VerifiedSigner,
  VerifyOptions,
} from './bundle.js';
export {
  BUNDLE_FILES,
  MANIFEST_FILES,
  assertVerified,
  buildBundle,
  buildManifest,
  canonicalDescriptorBytes,
  parseDescriptor,
  signBundle,
  signDescriptor,
  signManifest,
  verifyBundle,
  verifyDescriptorSignature,
  verifyManifest,
} from './bundle.js';
