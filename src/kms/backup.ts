/**
 * The key server's backup file: every managed object (material, attributes, owner,
 * grants, creation time) and the server's identity (CA and TLS server certificate with
 * their private keys), encrypted for a passphrase or for an operator's RSA public key.
 *
 * Layout (all integers big-endian):
 *
 *   "HSKMSBK1"             8 bytes magic
 *   header length          u32
 *   header                 JSON, UTF-8 (below); in clear, authenticated
 *   ciphertext             AES-256-GCM of the payload JSON
 *   tag                    16 bytes GCM tag; AAD = magic ‖ header length ‖ header
 *   checksum               32 bytes SHA-256 of everything before it
 *
 * The header says how to get the 256-bit file key:
 *   - passphrase: `{"kdf": {"name": "scrypt", "N", "r", "p", "salt"}}` — scrypt (memory
 *     hard: 128 MiB with the defaults) over the passphrase;
 *   - public key: `{"recipient": {"alg": "RSA-OAEP-SHA256", "wrappedKey", "publicKeySha256"}}`
 *     — a random file key wrapped with RSA-OAEP (SHA-256) for the operator's key.
 * `keyCheck` (HMAC of a fixed label under the file key, 16 bytes) tells a wrong
 * passphrase or private key from a damaged file; the checksum tells damage from
 * tampering (a damaged file fails the checksum, a forged checksum fails GCM). No secret
 * is in the header: object count, times and the store id only.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  privateDecrypt,
  publicEncrypt,
  randomBytes,
  scryptSync,
  timingSafeEqual,
  constants as cryptoConstants,
  X509Certificate,
} from 'node:crypto';
import { HypersealError } from '../errors.js';

const MAGIC = Buffer.from('HSKMSBK1', 'ascii');
const TAG_BYTES = 16;
const SUM_BYTES = 32;
const KEY_CHECK_LABEL = 'hyperseal kms backup key check v1';
/** Scrypt defaults: N = 2^17, r = 8 → 128 MiB and ~0.5 s per derivation. */
export const DEFAULT_SCRYPT = { N: 1 << 17, r: 8, p: 1 } as const;
/** Upper bounds accepted when reading, so a crafted header cannot exhaust memory. */
const MAX_SCRYPT_N = 1 << 20;
const MAX_HEADER_BYTES = 64 * 1024;

export interface BackupObject {
  uid: string;
  owner: string;
  objectType: number;
  state: number;
  algorithm: number;
  lengthBits: number;
  /** The attributes as one TTLV blob, base64 (the store's own encoding). */
  attributes: string;
  /** The key material, base64; null once destroyed. */
  material: string | null;
  createdAt: number;
  grants: string[];
}

export interface BackupIdentity {
  caCertPem: string;
  caKeyPem: string;
  serverCertPem: string;
  serverKeyPem: string;
}

export interface BackupPayload {
  format: 1;
  storeId: string;
  identity: BackupIdentity;
  objects: BackupObject[];
}

export interface BackupHeader {
  format: 1;
  createdAt: number;
  storeId: string;
  objects: number;
  newestObjectAt: number | null;
  cipher: 'aes-256-gcm';
  iv: string;
  keyCheck: string;
  kdf?: { name: 'scrypt'; N: number; r: number; p: number; salt: string };
  recipient?: { alg: 'RSA-OAEP-SHA256'; wrappedKey: string; publicKeySha256: string };
}

/** Who can open a backup: a passphrase, or the holder of an RSA private key. */
export type BackupSecret =
  { passphrase: string; scrypt?: { N: number; r: number; p: number } } | { publicKeyPem: string };
export type BackupOpener = { passphrase: string } | { privateKeyPem: string };

function corrupt(message: string): HypersealError {
  return new HypersealError('HS_ERR_KMS_BACKUP_CORRUPT', message);
}

function scryptKey(passphrase: string, salt: Buffer, p: { N: number; r: number; p: number }): Buffer {
  return scryptSync(Buffer.from(passphrase, 'utf8'), salt, 32, {
    N: p.N,
    r: p.r,
    p: p.p,
    maxmem: 256 * p.N * p.r + 64 * 1024 * 1024,
  });
}

function keyCheck(fileKey: Buffer): Buffer {
  return createHmac('sha256', fileKey).update(KEY_CHECK_LABEL).digest().subarray(0, 16);
}

function spkiSha256(keyPem: string): string {
  return createHash('sha256')
    .update(createPublicKey(keyPem).export({ type: 'spki', format: 'der' }))
    .digest('hex');
}

/** Encrypts a payload into the backup file's bytes. */
export function sealBackup(
  payload: BackupPayload,
  meta: { createdAt: number; newestObjectAt: number | null },
  secret: BackupSecret,
): Buffer {
  const iv = randomBytes(12);
  let fileKey: Buffer;
  const header: BackupHeader = {
    format: 1,
    createdAt: meta.createdAt,
    storeId: payload.storeId,
    objects: payload.objects.length,
    newestObjectAt: meta.newestObjectAt,
    cipher: 'aes-256-gcm',
    iv: iv.toString('base64'),
    keyCheck: '',
  };
  if ('passphrase' in secret) {
    if (secret.passphrase.length < 8) {
      throw new HypersealError('HS_ERR_INVALID_ARGUMENT', 'a backup passphrase has at least 8 characters');
    }
    const params = secret.scrypt ?? DEFAULT_SCRYPT;
    const salt = randomBytes(16);
    fileKey = scryptKey(secret.passphrase, salt, params);
    header.kdf = { name: 'scrypt', N: params.N, r: params.r, p: params.p, salt: salt.toString('base64') };
  } else {
    const pub = createPublicKey(secret.publicKeyPem);
    if (pub.asymmetricKeyType !== 'rsa' || (pub.asymmetricKeyDetails?.modulusLength ?? 0) < 2048) {
      throw new HypersealError(
        'HS_ERR_INVALID_ARGUMENT',
        'the backup recipient key must be RSA, 2048 bits or more',
      );
    }
    fileKey = randomBytes(32);
    const wrapped = publicEncrypt(
      { key: pub, padding: cryptoConstants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
      fileKey,
    );
    header.recipient = {
      alg: 'RSA-OAEP-SHA256',
      wrappedKey: wrapped.toString('base64'),
      publicKeySha256: spkiSha256(secret.publicKeyPem),
    };
  }
  header.keyCheck = keyCheck(fileKey).toString('base64');
  const headerBytes = Buffer.from(JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32BE(headerBytes.length);
  const cipher = createCipheriv('aes-256-gcm', fileKey, iv);
  cipher.setAAD(Buffer.concat([MAGIC, len, headerBytes]));
  const plain = Buffer.from(JSON.stringify(payload), 'utf8');
  const ct = Buffer.concat([cipher.update(plain), cipher.final()]);
  plain.fill(0);
  fileKey.fill(0);
  const body = Buffer.concat([MAGIC, len, headerBytes, ct, cipher.getAuthTag()]);
  return Buffer.concat([body, createHash('sha256').update(body).digest()]);
}

/** The header, after checking the magic and checksum; no secret needed. */
export function readBackupHeader(file: Buffer): { header: BackupHeader; headerEnd: number } {
  if (file.length < MAGIC.length + 4 + TAG_BYTES + SUM_BYTES || !file.subarray(0, 8).equals(MAGIC)) {
    throw corrupt('this is not a Hyperseal key server backup (bad magic or too short)');
  }
  const body = file.subarray(0, file.length - SUM_BYTES);
  if (
    !createHash('sha256')
      .update(body)
      .digest()
      .equals(file.subarray(file.length - SUM_BYTES))
  ) {
    throw corrupt('the backup file is damaged: its checksum does not match (changed or truncated)');
  }
  const len = file.readUInt32BE(8);
  if (len > MAX_HEADER_BYTES || 12 + len + TAG_BYTES > body.length)
    throw corrupt('the backup header is malformed');
  let header: BackupHeader;
  try {
    header = JSON.parse(file.subarray(12, 12 + len).toString('utf8')) as BackupHeader;
  } catch {
    throw corrupt('the backup header is not valid JSON');
  }
  if (header.format !== 1 || header.cipher !== 'aes-256-gcm') {
    throw corrupt(`unsupported backup format ${String(header.format)}/${String(header.cipher)}`);
  }
  return { header, headerEnd: 12 + len };
}

/** Decrypts and checks a backup completely; throws on any damage or a wrong secret. */
export function openBackup(
  file: Buffer,
  opener: BackupOpener,
): { header: BackupHeader; payload: BackupPayload } {
  const { header, headerEnd } = readBackupHeader(file);
  let fileKey: Buffer;
  if ('passphrase' in opener) {
    const k = header.kdf;
    if (k === undefined) {
      throw new HypersealError(
        'HS_ERR_KMS_BACKUP_KEY',
        'this backup is encrypted for a public key, not a passphrase: give the private key (--identity FILE)',
      );
    }
    if (
      k.name !== 'scrypt' ||
      !(k.N > 1 && k.N <= MAX_SCRYPT_N && k.r >= 1 && k.r <= 32 && k.p >= 1 && k.p <= 16)
    ) {
      throw corrupt('the backup header has unsupported key derivation parameters');
    }
    fileKey = scryptKey(opener.passphrase, Buffer.from(k.salt, 'base64'), k);
  } else {
    const r = header.recipient;
    if (r === undefined) {
      throw new HypersealError(
        'HS_ERR_KMS_BACKUP_KEY',
        'this backup is encrypted for a passphrase, not a public key: give the passphrase',
      );
    }
    if (spkiSha256(opener.privateKeyPem) !== r.publicKeySha256) {
      throw new HypersealError(
        'HS_ERR_KMS_BACKUP_KEY',
        `this backup was encrypted for another key (public key SHA-256 ${r.publicKeySha256})`,
      );
    }
    try {
      fileKey = privateDecrypt(
        {
          key: createPrivateKey(opener.privateKeyPem),
          padding: cryptoConstants.RSA_PKCS1_OAEP_PADDING,
          oaepHash: 'sha256',
        },
        Buffer.from(r.wrappedKey, 'base64'),
      );
    } catch {
      throw corrupt('the wrapped file key does not decrypt with this private key');
    }
  }
  const expected = Buffer.from(header.keyCheck, 'base64');
  const actual = keyCheck(fileKey);
  if (expected.length !== actual.length || !timingSafeEqual(expected, actual)) {
    fileKey.fill(0);
    throw new HypersealError(
      'HS_ERR_KMS_BACKUP_KEY',
      'wrong passphrase (or private key) for this backup: nothing was read or written',
    );
  }
  const end = file.length - SUM_BYTES;
  const decipher = createDecipheriv('aes-256-gcm', fileKey, Buffer.from(header.iv, 'base64'));
  decipher.setAAD(file.subarray(0, headerEnd));
  decipher.setAuthTag(file.subarray(end - TAG_BYTES, end));
  let plain: Buffer;
  try {
    plain = Buffer.concat([decipher.update(file.subarray(headerEnd, end - TAG_BYTES)), decipher.final()]);
  } catch {
    throw corrupt('the backup failed authentication: it was altered');
  } finally {
    fileKey.fill(0);
  }
  let payload: BackupPayload;
  try {
    payload = JSON.parse(plain.toString('utf8')) as BackupPayload;
  } finally {
    plain.fill(0);
  }
  checkPayload(header, payload);
  return { header, payload };
}

/** Everything a restore relies on, checked before anything is written. */
function checkPayload(header: BackupHeader, p: BackupPayload): void {
  if (p.format !== 1 || !Array.isArray(p.objects) || p.objects.length !== header.objects) {
    throw corrupt('the backup payload does not match its header');
  }
  const seen = new Set<string>();
  for (const o of p.objects) {
    if (typeof o.uid !== 'string' || seen.has(o.uid))
      throw corrupt(`duplicate or missing object id ${o.uid}`);
    seen.add(o.uid);
    if (o.material !== null && Buffer.from(o.material, 'base64').length * 8 !== o.lengthBits) {
      throw corrupt(`object ${o.uid}: key material is not ${o.lengthBits} bits`);
    }
  }
  const id = p.identity;
  try {
    const ca = new X509Certificate(id.caCertPem);
    const server = new X509Certificate(id.serverCertPem);
    const matches = (cert: X509Certificate, keyPem: string): boolean =>
      createPublicKey(createPrivateKey(keyPem))
        .export({ type: 'spki', format: 'der' })
        .equals(cert.publicKey.export({ type: 'spki', format: 'der' }));
    if (!matches(ca, id.caKeyPem) || !matches(server, id.serverKeyPem) || !server.checkIssued(ca)) {
      throw new Error('mismatch');
    }
  } catch {
    throw corrupt("the backup's server identity (CA and server certificate and keys) is inconsistent");
  }
}
