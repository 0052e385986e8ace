/**
 * A key provider's TLS credentials: checking what an operator uploads (CA bundle, client
 * certificate, client key), sealing the client key for the database, and the public
 * summaries the API shows instead of PEM.
 *
 * The client private key exists in clear only in memory: it is sealed (AES-256-GCM) under
 * a key derived from the manager's master key, with the provider id as associated data,
 * so a sealed blob copied onto another provider's row does not open.
 */
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { deriveSealingKey, open, seal } from '../crypto/aead.js';
import { HypersealError } from '../errors.js';

/** One certificate as the API shows it (never the PEM of a key). */
export interface CertificateSummary {
  subject: string;
  issuer: string;
  serialNumber: string;
  /** ISO 8601 UTC. */
  notBefore: string;
  notAfter: string;
  /** SHA-256 of the DER, lower-case hex. */
  sha256: string;
}

const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;
const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2';
const SEAL_CONTEXT = 'hyperseal-key-provider/v1/client-key';
const HKDF_INFO = 'hyperseal manager: key provider client keys v1';

/**
 * The 32-byte key that seals key providers' client keys, derived from the manager's master
 * key (HKDF-SHA-256 with a fixed label), so the master key itself never seals rows and a
 * leak of this key does not give the master key.
 */
export function deriveKeyProviderSealingKey(masterKey: Buffer): Buffer {
  return deriveSealingKey(masterKey, HKDF_INFO);
}

function aad(providerId: string): Buffer {
  return Buffer.from(`${SEAL_CONTEXT}\0${providerId}`, 'utf8');
}

/** base64 of the sealed PKCS#8 PEM, for key_providers.client_key_sealed. */
export function sealClientKey(sealingKey: Buffer, providerId: string, keyPem: string): string {
  const plain = Buffer.from(keyPem, 'utf8');
  try {
    return seal(sealingKey, plain, aad(providerId)).toString('base64');
  } finally {
    plain.fill(0);
  }
}

export function unsealClientKey(sealingKey: Buffer, providerId: string, sealed: string): string {
  try {
    return open(sealingKey, Buffer.from(sealed, 'base64'), aad(providerId)).toString('utf8');
  } catch (err) {
    throw new HypersealError(
      'HS_ERR_CRYPTO_AUTH',
      `the sealed client key of key provider ${providerId} does not open with this manager's master key ` +
        '(the row was altered or copied, or the manager runs with another master key)',
      { providerId },
      { cause: err },
    );
  }
}

function invalid(message: string): HypersealError {
  return new HypersealError('HS_ERR_INVALID_ARGUMENT', message);
}

/** Every certificate of a PEM bundle, parsed; `what` names the field in errors. */
export function parseCertificates(pem: string, what: string): X509Certificate[] {
  const blocks = pem.match(CERT_BLOCK) ?? [];
  if (blocks.length === 0) throw invalid(`${what} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch {
      throw invalid(`${what}: certificate ${i + 1} of ${blocks.length} is not a parseable X.509 certificate`);
    }
  });
}

export function summarize(cert: X509Certificate): CertificateSummary {
  return {
    subject: cert.subject.replace(/\n/g, ', '),
    issuer: cert.issuer.replace(/\n/g, ', '),
    serialNumber: cert.serialNumber.toLowerCase(),
    notBefore: new Date(cert.validFrom).toISOString(),
    notAfter: new Date(cert.validTo).toISOString(),
    sha256: cert.fingerprint256.replace(/:/g, '').toLowerCase(),
  };
}

/** The subject CN: the identity a KMIP server such as ours knows the manager by. */
export function commonNameOf(cert: X509Certificate): string | null {
  const m = /(?:^|\n)CN=([^\n]*)/.exec(cert.subject);
  return m?.[1] ?? null;
}

/** The CA bundle that verifies the key servers: at least one certificate, in PEM. */
export function checkCaBundle(caPem: string): X509Certificate[] {
  const certs = parseCertificates(caPem, 'caPem');
  const now = Date.now();
  const live = certs.filter((c) => Date.parse(c.validTo) > now);
  if (live.length === 0) {
    throw invalid(`caPem: every certificate in it has expired (the last at ${certs[0]?.validTo ?? '?'})`);
  }
  return certs;
}

/**
 * Parses an uploaded private key. Never echoes the input or the parser's words (either
 * could carry key bytes); an encrypted key is refused with a hint, since it is stored
 * sealed anyway.
 */
export function parsePrivateKey(keyPem: string, what = 'clientKeyPem'): KeyObject {
  if (/ENCRYPTED/.test(keyPem)) {
    throw invalid(`${what} is passphrase-protected: give it unencrypted (the manager stores it sealed)`);
  }
  try {
    const key = createPrivateKey({ key: keyPem, format: 'pem' });
    if (key.type !== 'private') throw new Error('not private');
    return key;
  } catch {
    throw invalid(`${what} is not a PEM private key (PKCS#8, PKCS#1 or SEC1)`);
  }
}

/**
 * The client certificate (optionally followed by intermediates) checked against its key:
 * same public key, currently valid, and usable for TLS client authentication (KMIP
 * servers, ours and PyKMIP among them, refuse a certificate whose Extended Key Usage
 * lacks clientAuth).
 */
export function checkClientCertificate(certPem: string, key: KeyObject): X509Certificate[] {
  const chain = parseCertificates(certPem, 'clientCertPem');
  const leaf = chain[0] as X509Certificate;
  const certKey = leaf.publicKey.export({ type: 'spki', format: 'der' });
  const ownKey = createPublicKey(key).export({ type: 'spki', format: 'der' });
  if (!certKey.equals(ownKey)) {
    throw invalid(
      `the client certificate (${leaf.subject.replace(/\n/g, ', ')}) is not for this private key` +
        ' (their public keys differ)',
    );
  }
  const now = Date.now();
  if (Date.parse(leaf.validTo) <= now) {
    throw invalid(`the client certificate expired at ${new Date(leaf.validTo).toISOString()}`);
  }
  if (Date.parse(leaf.validFrom) > now + 5 * 60_000) {
    throw invalid(`the client certificate is not valid before ${new Date(leaf.validFrom).toISOString()}`);
  }
  const eku = leaf.keyUsage;
  if (Array.isArray(eku) && eku.length > 0 && !eku.includes(CLIENT_AUTH_OID)) {
    throw invalid(
      'the client certificate has an Extended Key Usage without clientAuth: KMIP servers refuse it for TLS client authentication',
    );
  }
  if (leaf.ca) throw invalid('the client certificate is a CA certificate, not a client certificate');
  return chain;
}

/** The key as PKCS#8 PEM, the one form both Node's TLS and the store keep. */
export function toPkcs8Pem(key: KeyObject): string {
  return key.export({ type: 'pkcs8', format: 'pem' }).toString();
}
