/**
 * Signed host software bundles (the VIB analogue) and the agent's own core manifest: one
 * descriptor format for both.
 *
 * A bundle is a directory:
 *
 *   bundle.json   the descriptor, canonical JSON (canonical-json.ts):
 *                 {format:"hyperseal-bundle/1", kind:"bundle", name, version, vendor,
 *                  acceptance, files:[{path, size, sha256}] sorted by path}
 *   bundle.sig    the detached signature (JSON): {format:"hyperseal-signature/1",
 *                 algorithm:"ecdsa-p256-sha256"|"rsa-pkcs1-sha256", signature:base64,
 *                 certificates:[signer PEM, intermediates…]}
 *   …             every other file, each listed in the descriptor
 *
 * The signature covers the canonical bytes of the descriptor, and the descriptor covers
 * every file by SHA-256, so one signature check plus one hash per file verifies it all.
 * The agent's core manifest is the same with kind "agent-core" and the file names
 * hyperseal-manifest.json / hyperseal-manifest.sig at the root of its install directory;
 * `kind` keeps a bundle's signature from passing as a manifest's and vice versa.
 *
 * Verification checks in this order and stops at the first failure: descriptor
 * (HS_ERR_BUNDLE_INVALID), signature present (UNSIGNED), signature (BAD_SIGNATURE), chain
 * (UNTRUSTED, CERT_REVOKED), level (ACCEPTANCE_TOO_LOW), then the files in path order
 * (FILE_MISSING, FILE_MODIFIED, FILE_EXTRA): the result names the first failing file.
 */
import { createHash, createPrivateKey, createPublicKey, sign, verify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import type { Dirent } from 'node:fs';
import { lstat, open, readdir, readFile, rm } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { HypersealError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import { decodePem } from '../pki/pem.js';
import type { AcceptanceLevel } from './acceptance.js';
import { admits, isAcceptanceLevel } from './acceptance.js';
import { canonicalJson } from './canonical-json.js';
import type { ParsedAnchor, TrustAnchorInput, TrustOptions } from './trust.js';
import { anchorAllows, parseCertificatePem, parseTrustAnchors, verifyChain } from './trust.js';

export const DESCRIPTOR_FORMAT = 'hyperseal-bundle/1';
export const SIGNATURE_FORMAT = 'hyperseal-signature/1';

export type DescriptorKind = 'bundle' | 'agent-core';

export const BUNDLE_FILES = { descriptor: 'bundle.json', signature: 'bundle.sig' } as const;
export const MANIFEST_FILES = {
  descriptor: 'hyperseal-manifest.json',
  signature: 'hyperseal-manifest.sig',
} as const;

export interface DescriptorFile {
  /** Relative POSIX path ("bin/tool"), no "." or ".." segments. */
  path: string;
  size: number;
  /** Lower-case hex. */
  sha256: string;
}

export interface BundleDescriptor {
  format: typeof DESCRIPTOR_FORMAT;
  kind: DescriptorKind;
  name: string;
  version: string;
  vendor: string;
  acceptance: AcceptanceLevel;
  files: DescriptorFile[];
}

export interface DescriptorMeta {
  name: string;
  version: string;
  vendor: string;
  acceptance: AcceptanceLevel;
}

export type SignatureAlgorithm = 'ecdsa-p256-sha256' | 'rsa-pkcs1-sha256';

export interface SignatureEnvelope {
  format: typeof SIGNATURE_FORMAT;
  algorithm: SignatureAlgorithm;
  /** Base64 signature over canonicalDescriptorBytes(descriptor): DER ECDSA, or RSASSA-PKCS1-v1_5. */
  signature: string;
  /** Signer first, then intermediates (PEM). */
  certificates: string[];
}

export interface Signer {
  certPem: string;
  /** PKCS#8 PEM: EC P-256 or RSA ≥ 2048. */
  keyPem: string;
  /** Intermediate CA certificates between the signer and the host's anchor. */
  chainPems?: readonly string[];
}

export type BundleErrorCode = Extract<ErrorCode, `HS_ERR_BUNDLE_${string}`>;
export type FileProblemCode =
  'HS_ERR_BUNDLE_FILE_MISSING' | 'HS_ERR_BUNDLE_FILE_MODIFIED' | 'HS_ERR_BUNDLE_FILE_EXTRA';

export interface FileProblem {
  code: FileProblemCode;
  path: string;
  message: string;
}

export interface VerifiedSigner {
  subject: string;
  sha256: string;
  anchorSubject: string;
  anchorSha256: string;
}

export type VerificationResult =
  | { ok: true; descriptor: BundleDescriptor; signer: VerifiedSigner }
  | {
      ok: false;
      code: BundleErrorCode;
      message: string;
      /** The first failing file, for file problems. */
      file?: string;
      /** Every file problem found (capped), in path order; empty for other failures. */
      fileProblems: FileProblem[];
      /** Present once the descriptor parsed (and, for file problems, its signature verified). */
      descriptor?: BundleDescriptor;
      signer?: VerifiedSigner;
    };

export interface VerifyOptions extends TrustOptions {
  /** The host's acceptance level: bundles below it are refused (default community: any). */
  minAcceptance?: AcceptanceLevel;
  /** Files present but not listed: refused (default) or ignored. */
  extraFiles?: 'refuse' | 'ignore';
}

/* ------------------------------------------------------------------ limits */

const MAX_DESCRIPTOR_BYTES = 16 * 1024 * 1024;
const MAX_SIGNATURE_BYTES = 256 * 1024;
const MAX_FILES = 100_000;
const MAX_PATH_CHARS = 1024;
const MAX_FILE_PROBLEMS = 100;
const NAME = /^[a-z0-9][a-z0-9._+-]{0,63}$/;
// Printable ASCII without spaces for versions; vendor may hold spaces and any printable character.
const VERSION = /^[\x21-\x7e]{1,64}$/;
const VENDOR = /^[^\p{Cc}]{1,128}$/u;
const SHA256_HEX = /^[0-9a-f]{64}$/;
const DESCRIPTOR_KEYS = ['acceptance', 'files', 'format', 'kind', 'name', 'vendor', 'version'] as const;

/* ------------------------------------------------------------------ descriptor */

function invalid(message: string): never {
  throw new HypersealError('HS_ERR_BUNDLE_INVALID', message);
}

/** The bytes a signature covers. */
export function canonicalDescriptorBytes(descriptor: BundleDescriptor): Buffer {
  return Buffer.from(canonicalJson(descriptor), 'utf8');
}

function checkPath(path: unknown, reserved: readonly string[]): string {
  if (typeof path !== 'string' || path.length === 0 || path.length > MAX_PATH_CHARS)
    invalid('a file path is empty or too long');
  // eslint-disable-next-line no-control-regex -- control characters in paths are refused
  if (/[\u0000-\u001f\u007f\\]/.test(path))
    invalid(`file path ${JSON.stringify(path)} holds a control character or backslash`);
  const segments = path.split('/');
  if (segments.some((s) => s === '' || s === '.' || s === '..')) {
    invalid(`file path ${JSON.stringify(path)} is not a plain relative path`);
  }
  if (reserved.includes(path)) invalid(`file path ${path} is reserved for the descriptor or signature`);
  return path;
}

/** Checks a parsed descriptor strictly (known keys only, canonical file order) and returns it typed. */
export function validateDescriptor(value: unknown, kind: DescriptorKind): BundleDescriptor {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    invalid('the descriptor is not a JSON object');
  const v = value as Record<string, unknown>;
  const extra = Object.keys(v).filter((k) => !(DESCRIPTOR_KEYS as readonly string[]).includes(k));
  if (extra.length > 0) invalid(`the descriptor has unknown fields: ${extra.join(', ')}`);
  if (v.format !== DESCRIPTOR_FORMAT) invalid(`the descriptor format is not ${DESCRIPTOR_FORMAT}`);
  if (v.kind !== kind) invalid(`the descriptor is of kind ${JSON.stringify(v.kind)}, not ${kind}`);
  const meta = validateMeta(v);
  const reserved = reservedNames(kind);
  if (!Array.isArray(v.files) || v.files.length > MAX_FILES)
    invalid(`files must be a list of at most ${MAX_FILES}`);
  const files: DescriptorFile[] = [];
  let previous: string | undefined;
  for (const f of v.files as unknown[]) {
    if (typeof f !== 'object' || f === null || Array.isArray(f)) invalid('a files entry is not an object');
    const e = f as Record<string, unknown>;
    if (Object.keys(e).some((k) => k !== 'path' && k !== 'size' && k !== 'sha256'))
      invalid('a files entry has unknown fields');
    const path = checkPath(e.path, reserved);
    if (previous !== undefined && !(previous < path)) invalid(`files are not sorted and unique at ${path}`);
    previous = path;
    if (typeof e.size !== 'number' || !Number.isSafeInteger(e.size) || e.size < 0)
      invalid(`${path}: size is not a byte count`);
    if (typeof e.sha256 !== 'string' || !SHA256_HEX.test(e.sha256))
      invalid(`${path}: sha256 is not 64 lower-case hex digits`);
    files.push({ path, size: e.size, sha256: e.sha256 });
  }
  return { format: DESCRIPTOR_FORMAT, kind, ...meta, files };
}

function validateMeta(v: Record<string, unknown>): DescriptorMeta {
  if (typeof v.name !== 'string' || !NAME.test(v.name))
    invalid('name must be 1–64 of a-z 0-9 . _ + - starting with a letter or digit');
  if (typeof v.version !== 'string' || !VERSION.test(v.version))
    invalid('version must be 1–64 printable characters without spaces');
  if (typeof v.vendor !== 'string' || !VENDOR.test(v.vendor))
    invalid('vendor must be 1–128 characters without control characters');
  if (!isAcceptanceLevel(v.acceptance))
    invalid('acceptance must be certified, accepted, partner or community');
  return { name: v.name, version: v.version, vendor: v.vendor, acceptance: v.acceptance };
}

function reservedNames(kind: DescriptorKind): readonly string[] {
  const names = kind === 'bundle' ? BUNDLE_FILES : MANIFEST_FILES;
  return [names.descriptor, names.signature];
}

/** Parses descriptor bytes (any JSON whitespace) and validates them. */
export function parseDescriptor(bytes: Uint8Array, kind: DescriptorKind): BundleDescriptor {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    invalid('the descriptor is not valid JSON');
  }
  return validateDescriptor(value, kind);
}

/* ------------------------------------------------------------------ signing */

function signingKey(keyPem: string): { key: KeyObject; algorithm: SignatureAlgorithm } {
  let key: KeyObject;
  try {
    key = createPrivateKey({
      key: decodePem(keyPem, 'PRIVATE KEY', 'signing key'),
      format: 'der',
      type: 'pkcs8',
    });
  } catch (err) {
    throw err instanceof HypersealError
      ? err
      : new HypersealError('HS_ERR_PKI', 'the signing key is not a PKCS#8 private key');
  }
  return { key, algorithm: algorithmFor(key, 'signing key') };
}

function algorithmFor(key: KeyObject, what: string): SignatureAlgorithm {
  const d = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'ec' && d.namedCurve === 'prime256v1') return 'ecdsa-p256-sha256';
  if (key.asymmetricKeyType === 'rsa' && (d.modulusLength ?? 0) >= 2048) return 'rsa-pkcs1-sha256';
  throw new HypersealError('HS_ERR_PKI', `${what} must be EC P-256 or RSA of at least 2048 bits`);
}

/** Signs a descriptor; the signer's certificate must match the key. */
export function signDescriptor(descriptor: BundleDescriptor, signer: Signer): SignatureEnvelope {
  const { key, algorithm } = signingKey(signer.keyPem);
  const cert = parseCertificatePem(signer.certPem, 'signing certificate');
  if (!createPublicKey(key).equals(cert.node.publicKey)) {
    throw new HypersealError('HS_ERR_PKI', 'the signing key does not match the signing certificate');
  }
  const chain = (signer.chainPems ?? []).map((pem, i) => {
    parseCertificatePem(pem, `chain certificate ${i}`);
    return pem;
  });
  const signature = sign('sha256', canonicalDescriptorBytes(descriptor), key).toString('base64');
  return { format: SIGNATURE_FORMAT, algorithm, signature, certificates: [signer.certPem, ...chain] };
}

/** The outcome of one verification step: a value, or the code and message of its failure. */
export type Step<T> = { ok: true; value: T } | { ok: false; code: BundleErrorCode; message: string };

function parseEnvelope(bytes: Uint8Array): Step<SignatureEnvelope> {
  const fail = (message: string): Step<SignatureEnvelope> => ({
    ok: false,
    code: 'HS_ERR_BUNDLE_BAD_SIGNATURE',
    message,
  });
  if (bytes.length > MAX_SIGNATURE_BYTES) return fail('the signature file is too large');
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    return fail('the signature file is not valid JSON');
  }
  const e = v as Partial<Record<keyof SignatureEnvelope, unknown>> | null;
  if (typeof e !== 'object' || e === null || e.format !== SIGNATURE_FORMAT)
    return fail(`the signature file is not ${SIGNATURE_FORMAT}`);
  if (e.algorithm !== 'ecdsa-p256-sha256' && e.algorithm !== 'rsa-pkcs1-sha256')
    return fail('unknown signature algorithm');
  if (typeof e.signature !== 'string' || !/^[A-Za-z0-9+/]+={0,2}$/.test(e.signature))
    return fail('the signature is not base64');
  if (
    !Array.isArray(e.certificates) ||
    e.certificates.length === 0 ||
    !e.certificates.every((c) => typeof c === 'string')
  ) {
    return fail('the signature carries no certificates');
  }
  return {
    ok: true,
    value: {
      format: SIGNATURE_FORMAT,
      algorithm: e.algorithm,
      signature: e.signature,
      certificates: e.certificates as string[],
    },
  };
}

/**
 * Verifies the signature over a descriptor and the signer's chain, and the acceptance
 * level against the anchor's cap and the host's level. No file is looked at.
 */
export function verifyDescriptorSignature(
  descriptor: BundleDescriptor,
  envelope: SignatureEnvelope,
  anchors: readonly TrustAnchorInput[] | readonly ParsedAnchor[],
  opts: VerifyOptions = {},
): Step<VerifiedSigner> {
  const bad = (message: string): Step<VerifiedSigner> => ({
    ok: false,
    code: 'HS_ERR_BUNDLE_BAD_SIGNATURE',
    message,
  });
  let chain;
  try {
    chain = envelope.certificates.map((pem, i) =>
      parseCertificatePem(pem, i === 0 ? 'signer certificate' : `chain certificate ${i}`),
    );
  } catch (err) {
    return bad(err instanceof Error ? err.message : String(err));
  }
  const signerCert = chain[0];
  if (signerCert === undefined) return bad('the signature carries no certificates');
  let expected: SignatureAlgorithm;
  try {
    expected = algorithmFor(signerCert.node.publicKey, 'the signer certificate key');
  } catch (err) {
    return bad(err instanceof Error ? err.message : String(err));
  }
  if (expected !== envelope.algorithm)
    return bad(`algorithm ${envelope.algorithm} does not fit the signer's key`);
  const good = verify(
    'sha256',
    canonicalDescriptorBytes(descriptor),
    signerCert.node.publicKey,
    Buffer.from(envelope.signature, 'base64'),
  );
  if (!good) return bad(`the signature does not verify with the certificate of ${signerCert.subject}`);

  const parsedAnchors = isParsedAnchors(anchors) ? anchors : parseTrustAnchors(anchors);
  const path = verifyChain(chain, parsedAnchors, opts);
  if (!path.ok) return { ok: false, code: path.code, message: path.message };
  if (!anchorAllows(path.anchor, descriptor.acceptance)) {
    return {
      ok: false,
      code: 'HS_ERR_BUNDLE_UNTRUSTED',
      message: `signers under ${path.anchor.subject} may sign at most ${path.anchor.maxAcceptance ?? '?'}, not ${descriptor.acceptance}`,
    };
  }
  const minimum = opts.minAcceptance ?? 'community';
  if (!admits(minimum, descriptor.acceptance)) {
    return {
      ok: false,
      code: 'HS_ERR_BUNDLE_ACCEPTANCE_TOO_LOW',
      message: `${descriptor.name} ${descriptor.version} is ${descriptor.acceptance}; this host admits ${minimum} and higher`,
    };
  }
  return {
    ok: true,
    value: {
      subject: signerCert.subject,
      sha256: signerCert.sha256,
      anchorSubject: path.anchor.subject,
      anchorSha256: path.anchor.sha256,
    },
  };
}

function isParsedAnchors(
  a: readonly TrustAnchorInput[] | readonly ParsedAnchor[],
): a is readonly ParsedAnchor[] {
  return a.every((x) => typeof x === 'object' && 'der' in x);
}

/* ------------------------------------------------------------------ files */

interface DiskEntry {
  path: string;
  /** 'file' for regular files; anything else is reported, never followed. */
  type: 'file' | 'other';
}

/** Every entry below `root` (relative POSIX paths, sorted), not following symlinks. */
async function walk(root: string, reserved: readonly string[]): Promise<DiskEntry[]> {
  const out: DiskEntry[] = [];
  const visit = async (dir: string, prefix: string): Promise<void> => {
    let entries: Dirent[];
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      invalid(`cannot read directory ${dir}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
    for (const e of entries) {
      const rel = prefix === '' ? e.name : `${prefix}/${e.name}`;
      if (prefix === '' && reserved.includes(e.name)) continue;
      if (e.isDirectory()) await visit(join(dir, e.name), rel);
      else out.push({ path: rel, type: e.isFile() ? 'file' : 'other' });
      if (out.length > MAX_FILES) invalid(`more than ${MAX_FILES} files`);
    }
  };
  await visit(root, '');
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** SHA-256 and size of a regular file, refusing to follow a symlink swapped in meanwhile. */
async function hashFile(path: string): Promise<{ size: number; sha256: string }> {
  const fh = await open(path, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'ENOTREG' });
    const hash = createHash('sha256');
    let size = 0;
    for await (const chunk of fh.createReadStream({ autoClose: false }) as AsyncIterable<Buffer>) {
      hash.update(chunk);
      size += chunk.length;
    }
    return { size, sha256: hash.digest('hex') };
  } finally {
    await fh.close();
  }
}

const toFsPath = (root: string, rel: string): string => join(root, ...rel.split('/'));

async function describeFiles(
  root: string,
  files: readonly string[] | undefined,
  kind: DescriptorKind,
): Promise<DescriptorFile[]> {
  const reserved = reservedNames(kind);
  let paths: string[];
  if (files === undefined) {
    const entries = await walk(root, reserved);
    const odd = entries.find((e) => e.type !== 'file');
    if (odd !== undefined)
      invalid(`${odd.path} is not a regular file (symlinks and devices cannot be signed)`);
    paths = entries.map((e) => e.path);
  } else {
    paths = [...new Set(files.map((f) => checkPath(f.split(sep).join('/'), reserved)))].sort((a, b) =>
      a < b ? -1 : a > b ? 1 : 0,
    );
  }
  const out: DescriptorFile[] = [];
  for (const path of paths) {
    try {
      out.push({ path, ...(await hashFile(toFsPath(root, path))) });
    } catch (err) {
      invalid(`cannot hash ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
  }
  return out;
}

/** Compares the directory with the descriptor; problems in path order. */
async function checkFiles(
  root: string,
  descriptor: BundleDescriptor,
  extraFiles: 'refuse' | 'ignore',
): Promise<FileProblem[]> {
  const disk = await walk(root, reservedNames(descriptor.kind));
  const onDisk = new Map(disk.map((e) => [e.path, e]));
  const listed = new Set(descriptor.files.map((f) => f.path));
  const problems: FileProblem[] = [];
  const all = [...new Set([...listed, ...onDisk.keys()])].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const byPath = new Map(descriptor.files.map((f) => [f.path, f]));
  for (const path of all) {
    if (problems.length >= MAX_FILE_PROBLEMS) break;
    const want = byPath.get(path);
    const have = onDisk.get(path);
    if (want === undefined) {
      if (extraFiles === 'refuse')
        problems.push({
          code: 'HS_ERR_BUNDLE_FILE_EXTRA',
          path,
          message: `${path} is not listed in the signed descriptor`,
        });
      continue;
    }
    if (have === undefined) {
      // A directory of that name, or nothing at all: either way the file is not there.
      problems.push({ code: 'HS_ERR_BUNDLE_FILE_MISSING', path, message: `${path} is missing` });
      continue;
    }
    if (have.type !== 'file') {
      problems.push({
        code: 'HS_ERR_BUNDLE_FILE_MODIFIED',
        path,
        message: `${path} is no longer a regular file`,
      });
      continue;
    }
    let got: { size: number; sha256: string };
    try {
      got = await hashFile(toFsPath(root, path));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      problems.push(
        code === 'ENOENT'
          ? { code: 'HS_ERR_BUNDLE_FILE_MISSING', path, message: `${path} is missing` }
          : {
              code: 'HS_ERR_BUNDLE_FILE_MODIFIED',
              path,
              message: `${path} cannot be read as a regular file (${code ?? String(err)})`,
            },
      );
      continue;
    }
    if (got.size !== want.size || got.sha256 !== want.sha256) {
      problems.push({
        code: 'HS_ERR_BUNDLE_FILE_MODIFIED',
        path,
        message: `${path} differs from the signed descriptor (SHA-256 ${got.sha256}, expected ${want.sha256})`,
      });
    }
  }
  return problems;
}

/* ------------------------------------------------------------------ directories */

interface Names {
  descriptor: string;
  signature: string;
}

async function buildDirectory(
  root: string,
  kind: DescriptorKind,
  names: Names,
  meta: DescriptorMeta,
  files: readonly string[] | undefined,
): Promise<BundleDescriptor> {
  const checkedMeta = validateMeta(meta as unknown as Record<string, unknown>);
  const descriptor: BundleDescriptor = {
    format: DESCRIPTOR_FORMAT,
    kind,
    ...checkedMeta,
    files: await describeFiles(root, files, kind),
  };
  validateDescriptor(descriptor, kind);
  // A signature over the previous descriptor would no longer match: remove it first.
  await rm(join(root, names.signature), { force: true });
  writeFileAtomic(join(root, names.descriptor), `${canonicalJson(descriptor)}\n`);
  return descriptor;
}

async function readDescriptorFile(
  root: string,
  names: Names,
  kind: DescriptorKind,
): Promise<BundleDescriptor> {
  const path = join(root, names.descriptor);
  let st;
  try {
    st = await lstat(path);
  } catch {
    invalid(`${names.descriptor} is missing from ${root}`);
  }
  if (!st.isFile()) invalid(`${names.descriptor} is not a regular file`);
  if (st.size > MAX_DESCRIPTOR_BYTES)
    invalid(`${names.descriptor} is larger than ${MAX_DESCRIPTOR_BYTES} bytes`);
  return parseDescriptor(await readFile(path), kind);
}

async function signDirectory(
  root: string,
  kind: DescriptorKind,
  names: Names,
  signer: Signer,
): Promise<SignatureEnvelope> {
  const descriptor = await readDescriptorFile(root, names, kind);
  const envelope = signDescriptor(descriptor, signer);
  writeFileAtomic(join(root, names.signature), `${JSON.stringify(envelope, null, 2)}\n`);
  return envelope;
}

async function verifyDirectory(
  root: string,
  kind: DescriptorKind,
  names: Names,
  anchors: readonly TrustAnchorInput[],
  opts: VerifyOptions,
): Promise<VerificationResult> {
  const parsedAnchors = parseTrustAnchors(anchors); // a bad anchor is the host's configuration error: throws
  let descriptor: BundleDescriptor;
  try {
    descriptor = await readDescriptorFile(root, names, kind);
  } catch (err) {
    if (err instanceof HypersealError && err.code === 'HS_ERR_BUNDLE_INVALID') {
      return { ok: false, code: err.code, message: err.message, fileProblems: [] };
    }
    throw err;
  }
  const failed = (code: BundleErrorCode, message: string): VerificationResult => ({
    ok: false,
    code,
    message,
    fileProblems: [],
    descriptor,
  });
  let sigBytes: Buffer;
  try {
    const st = await lstat(join(root, names.signature));
    if (!st.isFile())
      return failed('HS_ERR_BUNDLE_BAD_SIGNATURE', `${names.signature} is not a regular file`);
    if (st.size > MAX_SIGNATURE_BYTES)
      return failed('HS_ERR_BUNDLE_BAD_SIGNATURE', `${names.signature} is too large`);
    sigBytes = await readFile(join(root, names.signature));
  } catch {
    return failed(
      'HS_ERR_BUNDLE_UNSIGNED',
      `${descriptor.name} ${descriptor.version} is not signed (no ${names.signature})`,
    );
  }
  const envelope = parseEnvelope(sigBytes);
  if (!envelope.ok) return failed(envelope.code, envelope.message);
  const signed = verifyDescriptorSignature(descriptor, envelope.value, parsedAnchors, opts);
  if (!signed.ok) return failed(signed.code, signed.message);
  const problems = await checkFiles(root, descriptor, opts.extraFiles ?? 'refuse');
  const first = problems[0];
  if (first !== undefined) {
    return {
      ok: false,
      code: first.code,
      message: first.message,
      file: first.path,
      fileProblems: problems,
      descriptor,
      signer: signed.value,
    };
  }
  return { ok: true, descriptor, signer: signed.value };
}

/** Throws the failure of a verification as a HypersealError (details: file, name, version). */
export function assertVerified(result: VerificationResult): {
  descriptor: BundleDescriptor;
  signer: VerifiedSigner;
} {
  if (result.ok) return result;
  const details: Record<string, unknown> = {};
  if (result.file !== undefined) details.file = result.file;
  if (result.descriptor !== undefined) {
    details.name = result.descriptor.name;
    details.version = result.descriptor.version;
  }
  throw new HypersealError(result.code, result.message, details);
}

/* ------------------------------------------------------------------ public: bundles */

/**
 * Hashes every file under `dir` (symlinks and special files refused) and writes
 * bundle.json; removes a stale bundle.sig.
 */
export function buildBundle(dir: string, meta: DescriptorMeta): Promise<BundleDescriptor> {
  return buildDirectory(dir, 'bundle', BUNDLE_FILES, meta, undefined);
}

/** Signs `dir`'s bundle.json and writes bundle.sig. */
export function signBundle(dir: string, signer: Signer): Promise<SignatureEnvelope> {
  return signDirectory(dir, 'bundle', BUNDLE_FILES, signer);
}

/** Verifies a bundle directory against the host's trust anchors and acceptance level. */
export function verifyBundle(
  dir: string,
  trustAnchors: readonly TrustAnchorInput[],
  opts: VerifyOptions = {},
): Promise<VerificationResult> {
  return verifyDirectory(dir, 'bundle', BUNDLE_FILES, trustAnchors, opts);
}

/* ------------------------------------------------------------------ public: agent core */

/**
 * Writes hyperseal-manifest.json over the agent's own files under `rootDir` (its dist/):
 * `files` as relative paths, or undefined for every regular file below rootDir.
 */
export function buildManifest(
  rootDir: string,
  files: readonly string[] | undefined,
  meta: DescriptorMeta,
): Promise<BundleDescriptor> {
  return buildDirectory(rootDir, 'agent-core', MANIFEST_FILES, meta, files);
}

export function signManifest(rootDir: string, signer: Signer): Promise<SignatureEnvelope> {
  return signDirectory(rootDir, 'agent-core', MANIFEST_FILES, signer);
}

/**
 * What the agent runs at start. `extraFiles: 'ignore'` when the manifest deliberately
 * covers only part of rootDir (files added later are then not checked).
 */
export function verifyManifest(
  rootDir: string,
  trustAnchors: readonly TrustAnchorInput[],
  opts: VerifyOptions = {},
): Promise<VerificationResult> {
  return verifyDirectory(rootDir, 'agent-core', MANIFEST_FILES, trustAnchors, opts);
}
