/**
 * Hyperseal's X.509 toolkit: a small CA for the embedded KMIP server and the manager,
 * leaf certificates for TLS servers and clients, and CSR signing for host agents.
 * All certificates, requests and keys are PEM; private keys are PKCS#8.
 */
export type { KeyType } from './keys.js';
export type {
  CertificateAuthorityOptions,
  CertificateUsage,
  CertifiedKey,
  CsrOptions,
  IssueCertificateOptions,
  SignCsrOptions,
} from './certificates.js';
export {
  certificateCommonName,
  certificateFingerprint256,
  createCertificateAuthority,
  createCsr,
  issueCertificate,
  signCsr,
} from './certificates.js';
