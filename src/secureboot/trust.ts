/**
 * Who may sign host bundles: X.509 chains from a signing certificate to one of the host's
 * trust anchors, with a revocation list of certificate fingerprints, and issuance of
 * code-signing certificates from a Hyperseal CA (src/pki).
 *
 * Policy, checked at verification time:
 * - every certificate of the path is within its validity period;
 * - each issuer is a CA (basicConstraints CA:true, keyCertSign when keyUsage is present,
 *   pathLen respected) and its signature over the child verifies;
 * - the signer has digitalSignature (when keyUsage is present) and codeSigning (when
 *   extendedKeyUsage is present); a self-signed signer may itself be an anchor;
 * - no certificate of the path (anchor included) is on the revocation list;
 * - the anchor reached may cap the acceptance level its signers can claim.
 * Signature checks use node:crypto (OpenSSL); @peculiar/x509 only reads extensions.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createHash, X509Certificate as NodeCertificate, webcrypto } from 'node:crypto';
import { HypersealError } from '../errors.js';
import type { CertifiedKey, KeyType } from '../pki/index.js';
import {
  exportPrivateKeyPem,
  generateKeyPair,
  importSigningKey,
  parseKeyType,
  signatureParams,
} from '../pki/keys.js';
import { decodePem, encodePem } from '../pki/pem.js';
import type { AcceptanceLevel } from './acceptance.js';
import { acceptanceRank, isAcceptanceLevel } from './acceptance.js';

x509.cryptoProvider.set(webcrypto);

/** A certificate the host trusts for bundle signatures, optionally capped in acceptance level. */
export interface TrustAnchor {
  certPem: string;
  /** Bundles signed under this anchor may claim at most this level (default: any). */
  maxAcceptance?: AcceptanceLevel;
}

export type TrustAnchorInput = string | TrustAnchor;

export interface TrustOptions {
  /** Verification time (default now). */
  at?: Date;
  /** SHA-256 fingerprints (hex, any case, colons allowed) of certificates no longer trusted. */
  revokedCertificates?: readonly string[];
}

export type ChainResult =
  | {
      ok: true;
      /** Signer first, anchor last. */
      path: ParsedCertificate[];
      anchor: ParsedAnchor;
    }
  | { ok: false; code: 'HS_ERR_BUNDLE_UNTRUSTED' | 'HS_ERR_BUNDLE_CERT_REVOKED'; message: string };

export interface ParsedCertificate {
  der: Buffer;
  node: NodeCertificate;
  cert: x509.X509Certificate;
  subject: string;
  /** SHA-256 over the DER, lower-case hex. */
  sha256: string;
}

export interface ParsedAnchor extends ParsedCertificate {
  maxAcceptance: AcceptanceLevel | undefined;
}

const MAX_CHAIN = 8;
const CODE_SIGNING_OID = '1.3.6.1.5.5.7.3.3';
const ANY_EKU_OID = '2.5.29.37.0';
const SERIAL_BYTES = 16;

/** Parses one PEM certificate; throws HS_ERR_PKI naming `what`. */
export function parseCertificatePem(pem: unknown, what: string): ParsedCertificate {
  const der = decodePem(pem, 'CERTIFICATE', what);
  try {
    const node = new NodeCertificate(der);
    const cert = new x509.X509Certificate(der);
    void [cert.extensions, cert.notAfter];
    return { der, node, cert, subject: cert.subject, sha256: createHash('sha256').update(der).digest('hex') };
  } catch {
    throw new HypersealError('HS_ERR_PKI', `${what} is not a parseable X.509 certificate`);
  }
}

/** Parses the host's anchors; a malformed anchor is a configuration error (HS_ERR_PKI). */
export function parseTrustAnchors(anchors: readonly TrustAnchorInput[]): ParsedAnchor[] {
  return anchors.map((a, i) => {
    const input: TrustAnchor = typeof a === 'string' ? { certPem: a } : a;
    if (input.maxAcceptance !== undefined && !isAcceptanceLevel(input.maxAcceptance)) {
      throw new HypersealError('HS_ERR_PKI', `trust anchor ${i}: maxAcceptance is not an acceptance level`);
    }
    return { ...parseCertificatePem(input.certPem, `trust anchor ${i}`), maxAcceptance: input.maxAcceptance };
  });
}

export function normalizeFingerprint(fp: string): string {
  return fp.replace(/[:\s]/g, '').toLowerCase();
}

/**
 * Builds and checks the path from `chain[0]` (the signer) through the other certificates of
 * `chain` (intermediates, any order) to an anchor.
 */
export function verifyChain(
  chain: readonly ParsedCertificate[],
  anchors: readonly ParsedAnchor[],
  opts: TrustOptions = {},
): ChainResult {
  const at = opts.at ?? new Date();
  const revoked = new Set((opts.revokedCertificates ?? []).map(normalizeFingerprint));
  const untrusted = (message: string): ChainResult => ({
    ok: false,
    code: 'HS_ERR_BUNDLE_UNTRUSTED',
    message,
  });
  const signer = chain[0];
  if (signer === undefined) return untrusted('the signature carries no certificate');
  if (chain.length > MAX_CHAIN)
    return untrusted(`the signature carries ${chain.length} certificates; at most ${MAX_CHAIN}`);

  const usage = signerUsageProblem(signer);
  if (usage !== undefined) return untrusted(`signer ${signer.subject}: ${usage}`);

  const path: ParsedCertificate[] = [signer];
  let current = signer;
  for (;;) {
    const dated = validityProblem(current, at);
    if (dated !== undefined) return untrusted(`${current.subject}: ${dated}`);
    if (revoked.has(current.sha256)) {
      return {
        ok: false,
        code: 'HS_ERR_BUNDLE_CERT_REVOKED',
        message: `certificate ${current.subject} (SHA-256 ${current.sha256}) is revoked on this host`,
      };
    }
    const anchor = anchors.find((a) => a.der.equals(current.der));
    if (anchor !== undefined) return { ok: true, path, anchor };
    if (path.length > MAX_CHAIN) return untrusted('certificate path too long');

    // Anchors first: a path that can end now is preferred over a longer one.
    const candidates: ParsedCertificate[] = [...anchors, ...chain.slice(1).filter((c) => !path.includes(c))];
    const issuer = candidates.find((c) => issuedBy(current, c));
    if (issuer === undefined) {
      return untrusted(
        `${current.subject} is not issued by a trust anchor of this host or a certificate in the signature`,
      );
    }
    const caProblem = issuerProblem(issuer, path.length - 1);
    if (caProblem !== undefined) return untrusted(`${issuer.subject}: ${caProblem}`);
    path.push(issuer);
    current = issuer;
  }
}

function issuedBy(child: ParsedCertificate, issuer: ParsedCertificate): boolean {
  try {
    return child.node.checkIssued(issuer.node) && child.node.verify(issuer.node.publicKey);
  } catch {
    return false;
  }
}

function validityProblem(c: ParsedCertificate, at: Date): string | undefined {
  if (at < c.cert.notBefore) return `not valid before ${c.cert.notBefore.toISOString()}`;
  if (at > c.cert.notAfter) return `expired at ${c.cert.notAfter.toISOString()}`;
  return undefined;
}

function signerUsageProblem(c: ParsedCertificate): string | undefined {
  const ku = c.cert.getExtension(x509.KeyUsagesExtension);
  if (ku !== null && (ku.usages & x509.KeyUsageFlags.digitalSignature) === 0)
    return 'keyUsage lacks digitalSignature';
  const eku = c.cert.getExtension(x509.ExtendedKeyUsageExtension);
  if (eku !== null) {
    const oids = eku.usages.map(String);
    if (!oids.includes(CODE_SIGNING_OID) && !oids.includes(ANY_EKU_OID))
      return 'extendedKeyUsage lacks codeSigning';
  }
  return undefined;
}

/** `below` = number of non-self-issued CA certificates between this issuer and the signer. */
function issuerProblem(c: ParsedCertificate, below: number): string | undefined {
  const bc = c.cert.getExtension(x509.BasicConstraintsExtension);
  if (bc === null || !bc.ca) return 'is not a CA (basicConstraints CA:true missing)';
  if (bc.pathLength !== undefined && below > bc.pathLength) return `pathLen ${bc.pathLength} exceeded`;
  const ku = c.cert.getExtension(x509.KeyUsagesExtension);
  if (ku !== null && (ku.usages & x509.KeyUsageFlags.keyCertSign) === 0) return 'keyUsage lacks keyCertSign';
  return undefined;
}

/** Whether an anchor lets its signers claim `level`. */
export function anchorAllows(anchor: ParsedAnchor, level: AcceptanceLevel): boolean {
  return anchor.maxAcceptance === undefined || acceptanceRank(level) <= acceptanceRank(anchor.maxAcceptance);
}

/* ------------------------------------------------------------------ issuance */

export interface CodeSigningCertificateOptions {
  commonName: string;
  validityDays?: number;
  keyType?: KeyType;
}

/**
 * A code-signing leaf (digitalSignature, extendedKeyUsage codeSigning, CA:false) for a fresh
 * key, signed by `ca` (e.g. from src/pki createCertificateAuthority). Never outlives the CA.
 */
export async function issueCodeSigningCertificate(
  ca: CertifiedKey,
  opts: CodeSigningCertificateOptions,
): Promise<CertifiedKey> {
  const keyType = parseKeyType(opts.keyType);
  const issuer = parseCertificatePem(ca.certPem, 'CA certificate');
  const issuerKey = await importSigningKey(ca.keyPem, 'CA private key');
  if (!issuerKey.publicKey.equals(issuer.node.publicKey)) {
    throw new HypersealError('HS_ERR_PKI', 'CA private key does not match the CA certificate');
  }
  if (typeof opts.commonName !== 'string' || opts.commonName.length === 0 || opts.commonName.length > 64) {
    throw new HypersealError('HS_ERR_PKI', 'commonName must have 1 to 64 characters');
  }
  const days = opts.validityDays ?? 825;
  if (!Number.isInteger(days) || days < 1 || days > 36500) {
    throw new HypersealError('HS_ERR_PKI', 'validityDays must be an integer from 1 to 36500');
  }
  const keys = await generateKeyPair(keyType);
  const now = Date.now();
  const serial = Buffer.from(webcrypto.getRandomValues(new Uint8Array(SERIAL_BYTES)));
  serial[0] = ((serial[0] ?? 0) & 0x7f) | 0x40;
  const caSki = issuer.cert.getExtension(x509.SubjectKeyIdentifierExtension);
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: serial.toString('hex'),
      subject: new x509.Name([{ CN: [{ utf8String: opts.commonName }] }]),
      issuer: issuer.cert.subjectName,
      notBefore: new Date(now - 5 * 60_000),
      notAfter: new Date(Math.min(now + days * 86_400_000, issuer.cert.notAfter.getTime())),
      publicKey: keys.publicKey,
      signingKey: issuerKey.cryptoKey,
      signingAlgorithm: signatureParams(issuerKey.keyType),
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.codeSigning], false),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, webcrypto),
        caSki !== null
          ? new x509.AuthorityKeyIdentifierExtension(caSki.keyId)
          : await x509.AuthorityKeyIdentifierExtension.create(issuer.cert.publicKey, false, webcrypto),
      ],
    },
    webcrypto,
  );
  return {
    certPem: encodePem(cert.rawData, 'CERTIFICATE'),
    keyPem: await exportPrivateKeyPem(keys.privateKey),
  };
}
