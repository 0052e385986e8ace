/**
 * Certificate authority, leaf issuance and CSR signing on top of @peculiar/x509.
 * Policy (extensions, validity, serials, accepted keys) lives here; the library only
 * encodes and signs.
 */
// @peculiar/x509 resolves its algorithm registry through tsyringe, which needs the
// Reflect metadata polyfill loaded before the library module is evaluated.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createHash, randomBytes, webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import { HypersealError } from '../errors.js';
import type { KeyType, SigningKey } from './keys.js';
import {
  exportPrivateKeyPem,
  generateKeyPair,
  importSigningKey,
  inspectPublicKey,
  keyTypeOf,
  parseKeyType,
  signatureParams,
} from './keys.js';
import { decodePem, encodePem } from './pem.js';

// Internals of @peculiar/x509 that take no crypto argument fall back to this provider;
// everything we call explicitly also gets Node's WebCrypto passed in.
x509.cryptoProvider.set(webcrypto);

export interface CertifiedKey {
  certPem: string;
  keyPem: string;
}

export type CertificateUsage = 'server' | 'client';

export interface CertificateAuthorityOptions {
  commonName: string;
  validityDays?: number;
  keyType?: KeyType;
}

export interface IssueCertificateOptions {
  commonName: string;
  usage: CertificateUsage;
  dnsNames?: string[];
  ipAddresses?: string[];
  validityDays?: number;
  keyType?: KeyType;
}

export interface CsrOptions {
  commonName: string;
  keyType?: KeyType;
}

export interface SignCsrOptions {
  usage: CertificateUsage;
  /** Overrides the CSR's CN: the CA, not the requester, decides identities. */
  commonName?: string;
  dnsNames?: string[];
  ipAddresses?: string[];
  validityDays?: number;
}

const DEFAULT_CA_VALIDITY_DAYS = 3650;
const DEFAULT_LEAF_VALIDITY_DAYS = 825;
const MAX_VALIDITY_DAYS = 36500;
const DAY_MS = 86_400_000;
// Back-date notBefore so peers whose clocks lag a little still accept a fresh cert.
const CLOCK_SKEW_MS = 5 * 60_000;
// X.520 upper bound for commonName; OpenSSL refuses longer ones in requests.
const MAX_COMMON_NAME_LENGTH = 64;
const SERIAL_BYTES = 16;
const DNS_LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?';
const DNS_NAME = new RegExp(`^(?:\\*\\.)?${DNS_LABEL}(?:\\.${DNS_LABEL})*$`);
const DEFAULT_SERVER_NAMES: readonly x509.JsonGeneralName[] = [
  { type: 'dns', value: 'localhost' },
  { type: 'ip', value: '127.0.0.1' },
];
const CERTIFICATE_LABEL = 'CERTIFICATE';
// Some older tools still write the Netscape-era label.
const CSR_LABELS = ['CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST'] as const;

type PublicKeyInput = webcrypto.CryptoKey | x509.PublicKey;

interface Issuer {
  readonly cert: x509.X509Certificate;
  readonly key: SigningKey;
}

interface LeafProfile {
  readonly subject: x509.Name;
  readonly usage: CertificateUsage;
  readonly altNames: readonly x509.JsonGeneralName[];
  readonly validityDays: number;
}

/* ------------------------------------------------------------------ public API */

/** Creates a self-signed CA (CA:true, pathLen 0) and returns its cert and PKCS#8 key. */
export async function createCertificateAuthority(opts: CertificateAuthorityOptions): Promise<CertifiedKey> {
  const keyType = parseKeyType(opts.keyType);
  const name = subjectName(opts.commonName);
  const days = parseValidityDays(opts.validityDays, DEFAULT_CA_VALIDITY_DAYS);
  return guard('creating a certificate authority', async () => {
    const keys = await generateKeyPair(keyType);
    const ski = await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, webcrypto);
    const cert = await x509.X509CertificateGenerator.create(
      {
        serialNumber: randomSerialHex(),
        subject: name,
        issuer: name,
        ...validityWindow(days),
        publicKey: keys.publicKey,
        signingKey: keys.privateKey,
        signingAlgorithm: signatureParams(keyType),
        extensions: [
          // pathLen 0: this CA only ever signs end-entity certificates.
          new x509.BasicConstraintsExtension(true, 0, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
          ski,
          new x509.AuthorityKeyIdentifierExtension(ski.keyId),
        ],
      },
      webcrypto,
    );
    return {
      certPem: encodePem(cert.rawData, CERTIFICATE_LABEL),
      keyPem: await exportPrivateKeyPem(keys.privateKey),
    };
  });
}

/** Generates a fresh key pair and a leaf certificate for it, signed by `ca`. */
export async function issueCertificate(
  ca: CertifiedKey,
  opts: IssueCertificateOptions,
): Promise<CertifiedKey> {
  const keyType = parseKeyType(opts.keyType);
  const profile = leafProfile(opts.commonName, opts);
  const issuer = await loadIssuer(ca);
  return guard('issuing a certificate', async () => {
    const keys = await generateKeyPair(keyType);
    const certPem = await signLeaf(issuer, profile, keys.publicKey, keyType);
    return { certPem, keyPem: await exportPrivateKeyPem(keys.privateKey) };
  });
}

/** Generates a key pair and a PKCS#10 request whose subject is just `CN=commonName`. */
export async function createCsr(opts: CsrOptions): Promise<{ csrPem: string; keyPem: string }> {
  const keyType = parseKeyType(opts.keyType);
  const name = subjectName(opts.commonName);
  return guard('creating a CSR', async () => {
    const keys = await generateKeyPair(keyType);
    const csr = await x509.Pkcs10CertificateRequestGenerator.create(
      { name, keys, signingAlgorithm: signatureParams(keyType) },
      webcrypto,
    );
    const csrPem = encodePem(csr.rawData, CSR_LABELS[0]);
    return { csrPem, keyPem: await exportPrivateKeyPem(keys.privateKey) };
  });
}

/**
 * Signs a CSR after checking its self-signature (proof the requester holds the key).
 * Only the CSR's public key and CN are used: requested extensions and other subject
 * attributes are ignored, because usage and names are the CA's decision.
 */
export async function signCsr(ca: CertifiedKey, csrPem: string, opts: SignCsrOptions): Promise<string> {
  const issuer = await loadIssuer(ca);
  const { csr, keyType } = await parseVerifiedCsr(csrPem);
  const commonName = opts.commonName ?? commonNameOf(csr.subjectName, 'CSR subject');
  const profile = leafProfile(commonName, opts);
  return guard('signing a CSR', () => signLeaf(issuer, profile, csr.publicKey, keyType));
}

/** The subject's CN; throws unless there is exactly one, since it is used as an identity. */
export function certificateCommonName(certPem: string): string {
  const cert = parseCertificate(decodePem(certPem, CERTIFICATE_LABEL, 'certificate'), 'certificate');
  return commonNameOf(cert.subjectName, 'certificate subject');
}

/** SHA-256 over the certificate's DER, as lower-case hex without separators. */
export function certificateFingerprint256(certPem: string): string {
  const der = decodePem(certPem, CERTIFICATE_LABEL, 'certificate');
  parseCertificate(der, 'certificate'); // fingerprint only real certificates
  return createHash('sha256').update(der).digest('hex');
}

/* ------------------------------------------------------------------ signing */

async function signLeaf(
  issuer: Issuer,
  profile: LeafProfile,
  publicKey: PublicKeyInput,
  keyType: KeyType,
): Promise<string> {
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(leafKeyUsage(keyType), true),
    new x509.ExtendedKeyUsageExtension([extendedKeyUsage(profile.usage)], false),
    await x509.SubjectKeyIdentifierExtension.create(publicKey, false, webcrypto),
    await authorityKeyIdentifier(issuer.cert),
  ];
  if (profile.altNames.length > 0) {
    extensions.push(new x509.SubjectAlternativeNameExtension([...profile.altNames], false));
  }
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: randomSerialHex(),
      subject: profile.subject,
      // Reuse the CA's encoded name so issuer/subject match byte for byte.
      issuer: issuer.cert.subjectName,
      ...validityWindow(profile.validityDays, issuer.cert.notAfter),
      publicKey,
      signingKey: issuer.key.cryptoKey,
      signingAlgorithm: signatureParams(issuer.key.keyType),
      extensions,
    },
    webcrypto,
  );
  return encodePem(cert.rawData, CERTIFICATE_LABEL);
}

/** RSA keys also need keyEncipherment for TLS_RSA_* (key transport) suites. */
function leafKeyUsage(keyType: KeyType): x509.KeyUsageFlags {
  const base = x509.KeyUsageFlags.digitalSignature;
  return keyType === 'rsa' ? base | x509.KeyUsageFlags.keyEncipherment : base;
}

function extendedKeyUsage(usage: CertificateUsage): x509.ExtendedKeyUsage {
  return usage === 'server' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth;
}

/** Copies the CA's own SKI so chain builders match it; hashes the key if the CA has none. */
async function authorityKeyIdentifier(
  caCert: x509.X509Certificate,
): Promise<x509.AuthorityKeyIdentifierExtension> {
  const ski = caCert.getExtension(x509.SubjectKeyIdentifierExtension);
  return ski
    ? new x509.AuthorityKeyIdentifierExtension(ski.keyId)
    : x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey, false, webcrypto);
}

/** 16 random bytes, top bit clear (positive) and next bit set (no DER length trimming). */
function randomSerialHex(): string {
  const bytes = randomBytes(SERIAL_BYTES);
  bytes.writeUInt8((bytes.readUInt8(0) & 0x7f) | 0x40, 0);
  return bytes.toString('hex');
}

/** A leaf never outlives its CA: past that point no peer could verify it anyway. */
function validityWindow(days: number, notAfterCap?: Date): { notBefore: Date; notAfter: Date } {
  const now = Date.now();
  const notAfter = now + days * DAY_MS;
  const cap = notAfterCap?.getTime() ?? Number.POSITIVE_INFINITY;
  return { notBefore: new Date(now - CLOCK_SKEW_MS), notAfter: new Date(Math.min(notAfter, cap)) };
}

/* ------------------------------------------------------------------ parsing */

async function loadIssuer(ca: CertifiedKey): Promise<Issuer> {
  const cert = parseCertificate(decodePem(ca.certPem, CERTIFICATE_LABEL, 'CA certificate'), 'CA certificate');
  assertCanIssue(cert);
  const key = await importSigningKey(ca.keyPem, 'CA private key');
  const certKey = inspectPublicKey(cert.publicKey.rawData, 'CA certificate public key');
  if (!certKey.equals(key.publicKey)) {
    throw new HypersealError('HS_ERR_PKI', 'CA private key does not match the CA certificate');
  }
  return { cert, key };
}

function assertCanIssue(cert: x509.X509Certificate): void {
  if (cert.getExtension(x509.BasicConstraintsExtension)?.ca !== true) {
    throw new HypersealError('HS_ERR_PKI', 'CA certificate lacks basicConstraints CA:true');
  }
  const keyUsage = cert.getExtension(x509.KeyUsagesExtension);
  if (keyUsage && (keyUsage.usages & x509.KeyUsageFlags.keyCertSign) === 0) {
    throw new HypersealError('HS_ERR_PKI', 'CA certificate keyUsage lacks keyCertSign');
  }
  if (cert.notAfter.getTime() <= Date.now()) {
    throw new HypersealError('HS_ERR_PKI', `CA certificate expired at ${cert.notAfter.toISOString()}`);
  }
}

/** Parses DER and touches the lazily decoded fields so malformed input fails here. */
function parseCertificate(der: Buffer, what: string): x509.X509Certificate {
  try {
    const cert = new x509.X509Certificate(der);
    void [cert.subjectName, cert.publicKey, cert.notAfter, cert.extensions];
    return cert;
  } catch (cause) {
    throw new HypersealError('HS_ERR_PKI', `${what} is not a parseable X.509 certificate`, undefined, {
      cause,
    });
  }
}

/** Parses a CSR, applies the key policy, then checks the proof of possession. */
async function parseVerifiedCsr(
  csrPem: unknown,
): Promise<{ csr: x509.Pkcs10CertificateRequest; keyType: KeyType }> {
  const der = decodePem(csrPem, CSR_LABELS, 'CSR');
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(der);
    void [csr.subjectName, csr.publicKey, csr.signatureAlgorithm];
  } catch (cause) {
    throw new HypersealError('HS_ERR_PKI', 'CSR is not a parseable PKCS#10 request', undefined, { cause });
  }
  const keyType = keyTypeOf(inspectPublicKey(csr.publicKey.rawData, 'CSR public key'), 'CSR public key');
  // A verifier that throws (e.g. unsupported signature parameters) counts as invalid.
  if (!(await csr.verify(webcrypto).catch(() => false))) {
    throw new HypersealError('HS_ERR_PKI', 'CSR signature is invalid');
  }
  return { csr, keyType };
}

function commonNameOf(name: x509.Name, what: string): string {
  const names = name.getField('CN');
  if (names.length !== 1 || names[0] === undefined) {
    throw new HypersealError('HS_ERR_PKI', `${what} must have exactly one CN (found ${names.length})`);
  }
  return names[0];
}

/* ------------------------------------------------------------------ input validation */

function leafProfile(
  commonName: unknown,
  opts: { usage: unknown; dnsNames?: unknown; ipAddresses?: unknown; validityDays?: unknown },
): LeafProfile {
  const { usage } = opts;
  if (usage !== 'server' && usage !== 'client') {
    throw new HypersealError('HS_ERR_PKI', `usage must be 'server' or 'client'`);
  }
  return {
    subject: subjectName(commonName),
    usage,
    altNames: altNames(usage, opts.dnsNames, opts.ipAddresses),
    validityDays: parseValidityDays(opts.validityDays, DEFAULT_LEAF_VALIDITY_DAYS),
  };
}

/** UTF8String per RFC 5280 §4.1.2.4, so non-ASCII names survive. */
function subjectName(commonName: unknown): x509.Name {
  return new x509.Name([{ CN: [{ utf8String: parseCommonName(commonName) }] }]);
}

function parseCommonName(value: unknown): string {
  // eslint-disable-next-line no-control-regex -- rejecting control characters is the point
  if (typeof value !== 'string' || value.length === 0 || /[\u0000-\u001f\u007f]/.test(value)) {
    throw new HypersealError(
      'HS_ERR_PKI',
      'commonName must be a non-empty string without control characters',
    );
  }
  if (value.length > MAX_COMMON_NAME_LENGTH) {
    throw new HypersealError('HS_ERR_PKI', `commonName is longer than ${MAX_COMMON_NAME_LENGTH} characters`);
  }
  return value;
}

function parseValidityDays(value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > MAX_VALIDITY_DAYS) {
    throw new HypersealError('HS_ERR_PKI', `validityDays must be an integer from 1 to ${MAX_VALIDITY_DAYS}`);
  }
  return value;
}

/** Servers without explicit names get localhost/127.0.0.1, which is how local peers dial. */
function altNames(usage: CertificateUsage, dnsNames: unknown, ipAddresses: unknown): x509.JsonGeneralName[] {
  const dns = stringList(dnsNames, 'dnsNames').map(parseDnsName);
  const ips = stringList(ipAddresses, 'ipAddresses').map(parseIpAddress);
  if (usage === 'server' && dns.length === 0 && ips.length === 0) return [...DEFAULT_SERVER_NAMES];
  return [
    ...dns.map((value): x509.JsonGeneralName => ({ type: 'dns', value })),
    ...ips.map((value): x509.JsonGeneralName => ({ type: 'ip', value })),
  ];
}

function stringList(value: unknown, field: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((item): item is string => typeof item === 'string')) {
    throw new HypersealError('HS_ERR_PKI', `${field} must be an array of strings`);
  }
  return value;
}

function parseDnsName(value: string): string {
  if (value.length > 253 || !DNS_NAME.test(value)) {
    throw new HypersealError('HS_ERR_PKI', `invalid DNS name ${JSON.stringify(value)}`);
  }
  return value;
}

/** The library's IPv6 encoder handles neither zone ids nor embedded dotted quads. */
function parseIpAddress(value: string): string {
  const family = isIP(value);
  if (family === 4 || (family === 6 && !/[.%]/.test(value))) return value;
  throw new HypersealError('HS_ERR_PKI', `invalid IP address ${JSON.stringify(value)}`);
}

/* ------------------------------------------------------------------ errors */

/** Keeps HS_ERR_PKI the only error callers see; our own errors pass through untouched. */
async function guard<T>(action: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err: unknown) {
    if (err instanceof HypersealError) throw err;
    throw new HypersealError('HS_ERR_PKI', `${action} failed`, undefined, { cause: err });
  }
}
