/**
 * KMIP 1.1 enumerations (spec §9.1.3.2), spec names in PascalCase with their values.
 * Only the enumerations the codec, client and server interpret are listed; the codec
 * itself carries any 32-bit value through untouched.
 */

export const Operation = {
  Create: 0x01,
  CreateKeyPair: 0x02,
  Register: 0x03,
  ReKey: 0x04,
  DeriveKey: 0x05,
  Certify: 0x06,
  ReCertify: 0x07,
  Locate: 0x08,
  Check: 0x09,
  Get: 0x0a,
  GetAttributes: 0x0b,
  GetAttributeList: 0x0c,
  AddAttribute: 0x0d,
  ModifyAttribute: 0x0e,
  DeleteAttribute: 0x0f,
  ObtainLease: 0x10,
  GetUsageAllocation: 0x11,
  Activate: 0x12,
  Revoke: 0x13,
  Destroy: 0x14,
  Archive: 0x15,
  Recover: 0x16,
  Validate: 0x17,
  Query: 0x18,
  Cancel: 0x19,
  Poll: 0x1a,
  Notify: 0x1b,
  Put: 0x1c,
  ReKeyKeyPair: 0x1d,
  DiscoverVersions: 0x1e,
} as const;
export type Operation = (typeof Operation)[keyof typeof Operation];

export const ObjectType = {
  Certificate: 0x01,
  SymmetricKey: 0x02,
  PublicKey: 0x03,
  PrivateKey: 0x04,
  SplitKey: 0x05,
  Template: 0x06,
  SecretData: 0x07,
  OpaqueObject: 0x08,
} as const;
export type ObjectType = (typeof ObjectType)[keyof typeof ObjectType];

export const CryptographicAlgorithm = {
  DES: 0x01,
  TripleDES: 0x02,
  AES: 0x03,
  RSA: 0x04,
  DSA: 0x05,
  ECDSA: 0x06,
  HMACSHA1: 0x07,
  HMACSHA224: 0x08,
  HMACSHA256: 0x09,
  HMACSHA384: 0x0a,
  HMACSHA512: 0x0b,
  HMACMD5: 0x0c,
  DH: 0x0d,
  ECDH: 0x0e,
  ECMQV: 0x0f,
  Blowfish: 0x10,
  Camellia: 0x11,
  CAST5: 0x12,
  IDEA: 0x13,
  MARS: 0x14,
  RC2: 0x15,
  RC4: 0x16,
  RC5: 0x17,
  SKIPJACK: 0x18,
  Twofish: 0x19,
} as const;
export type CryptographicAlgorithm = (typeof CryptographicAlgorithm)[keyof typeof CryptographicAlgorithm];

export const ResultStatus = {
  Success: 0x00,
  OperationFailed: 0x01,
  OperationPending: 0x02,
  OperationUndone: 0x03,
} as const;
export type ResultStatus = (typeof ResultStatus)[keyof typeof ResultStatus];

export const ResultReason = {
  ItemNotFound: 0x01,
  ResponseTooLarge: 0x02,
  AuthenticationNotSuccessful: 0x03,
  InvalidMessage: 0x04,
  OperationNotSupported: 0x05,
  MissingData: 0x06,
  InvalidField: 0x07,
  FeatureNotSupported: 0x08,
  OperationCanceledByRequester: 0x09,
  CryptographicFailure: 0x0a,
  IllegalOperation: 0x0b,
  PermissionDenied: 0x0c,
  ObjectArchived: 0x0d,
  IndexOutOfBounds: 0x0e,
  ApplicationNamespaceNotSupported: 0x0f,
  KeyFormatTypeNotSupported: 0x10,
  KeyCompressionTypeNotSupported: 0x11,
  EncodingOptionError: 0x12,
  GeneralFailure: 0x100,
} as const;
export type ResultReason = (typeof ResultReason)[keyof typeof ResultReason];

export const State = {
  PreActive: 0x01,
  Active: 0x02,
  Deactivated: 0x03,
  Compromised: 0x04,
  Destroyed: 0x05,
  DestroyedCompromised: 0x06,
} as const;
export type State = (typeof State)[keyof typeof State];

export const KeyFormatType = {
  Raw: 0x01,
  Opaque: 0x02,
  PKCS1: 0x03,
  PKCS8: 0x04,
  X509: 0x05,
  ECPrivateKey: 0x06,
  TransparentSymmetricKey: 0x07,
  TransparentDSAPrivateKey: 0x08,
  TransparentDSAPublicKey: 0x09,
  TransparentRSAPrivateKey: 0x0a,
  TransparentRSAPublicKey: 0x0b,
  TransparentDHPrivateKey: 0x0c,
  TransparentDHPublicKey: 0x0d,
  TransparentECDSAPrivateKey: 0x0e,
  TransparentECDSAPublicKey: 0x0f,
  TransparentECDHPrivateKey: 0x10,
  TransparentECDHPublicKey: 0x11,
  TransparentECMQVPrivateKey: 0x12,
  TransparentECMQVPublicKey: 0x13,
} as const;
export type KeyFormatType = (typeof KeyFormatType)[keyof typeof KeyFormatType];

export const NameType = { UninterpretedTextString: 0x01, URI: 0x02 } as const;
export type NameType = (typeof NameType)[keyof typeof NameType];

export const RevocationReasonCode = {
  Unspecified: 0x01,
  KeyCompromise: 0x02,
  CACompromise: 0x03,
  AffiliationChanged: 0x04,
  Superseded: 0x05,
  CessationOfOperation: 0x06,
  PrivilegeWithdrawn: 0x07,
} as const;
export type RevocationReasonCode = (typeof RevocationReasonCode)[keyof typeof RevocationReasonCode];

export const QueryFunction = {
  QueryOperations: 0x01,
  QueryObjects: 0x02,
  QueryServerInformation: 0x03,
  QueryApplicationNamespaces: 0x04,
  QueryExtensionList: 0x05,
  QueryExtensionMap: 0x06,
} as const;
export type QueryFunction = (typeof QueryFunction)[keyof typeof QueryFunction];

export const CredentialType = { UsernameAndPassword: 0x01, Device: 0x02 } as const;

export const BatchErrorContinuationOption = { Continue: 0x01, Stop: 0x02, Undo: 0x03 } as const;

/** Cryptographic Usage Mask bits (an Integer bitmask, not an enumeration). */
export const CryptographicUsageMask = {
  Sign: 0x1,
  Verify: 0x2,
  Encrypt: 0x4,
  Decrypt: 0x8,
  WrapKey: 0x10,
  UnwrapKey: 0x20,
  Export: 0x40,
  MACGenerate: 0x80,
  MACVerify: 0x100,
  DeriveKey: 0x200,
  ContentCommitment: 0x400,
  KeyAgreement: 0x800,
  CertificateSign: 0x1000,
  CRLSign: 0x2000,
} as const;

/** Reverse look-up: the spec name of an enumeration value, for messages and --json output. */
export function enumName(table: Readonly<Record<string, number>>, value: number): string {
  for (const [k, v] of Object.entries(table)) if (v === value) return k;
  return `0x${value.toString(16)}`;
}
