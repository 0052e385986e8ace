/**
 * Key providers (manager side): clusters of KMIP servers with failover, the providers'
 * stored credentials, and the KEK lifecycle VM encryption builds on.
 */
export type { KmipClusterOptions, KmipServerAddress, ServerFailure, ServerTestResult } from './cluster.js';
export { KmipCluster, formatAddress, isTransportFailure } from './cluster.js';
export type { CertificateSummary } from './credentials.js';
export { deriveKeyProviderSealingKey } from './credentials.js';
export type { FetchedKeks, KekContext } from './kek.js';
export { FETCH_BATCH, KEK_LENGTH_BITS, KEK_USAGE_MASK } from './kek.js';
export type {
  AddKeyProviderCsrInput,
  AddKeyProviderInput,
  KeyProvider,
  KeyProviderServiceOptions,
  KeyProviderState,
  KeyProviderTestResult,
  UpdateKeyProviderInput,
} from './service.js';
export { DEFAULT_CSR_COMMON_NAME, KeyProviderService, checkServers } from './service.js';
export type { EmbeddedKeyProviderOptions, EmbeddedKeyProviderResult } from './embedded.js';
export { EMBEDDED_CLIENT_NAME, EMBEDDED_PROVIDER_NAME, ensureEmbeddedKeyProvider } from './embedded.js';
