/**
 * Sealed blobs: AES-256-GCM with a random 96-bit IV and associated data that binds the
 * blob to its context (so a sealed value cannot be moved to another record). Layout:
 * version (1 byte) ‖ IV (12) ‖ tag (16) ‖ ciphertext. Uses OpenSSL (AES-NI) via node:crypto.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { HypersealError } from '../errors.js';

const VERSION = 1;
const IV_BYTES = 12;
const TAG_BYTES = 16;
export const KEY_BYTES = 32;

function checkKey(key: Buffer): void {
  if (key.length !== KEY_BYTES) {
    throw new HypersealError(
      'HS_ERR_INTERNAL',
      `a sealing key must be ${KEY_BYTES} bytes, got ${key.length}`,
    );
  }
}

/**
 * A 32-byte sealing key for one purpose, derived from the manager's master key
 * (HKDF-SHA-256, the label as info): the master key itself never seals rows, each kind of
 * row has its own key, and a leak of one gives neither the master key nor the others.
 */
export function deriveSealingKey(masterKey: Buffer, label: string): Buffer {
  checkKey(masterKey);
  return Buffer.from(hkdfSync('sha256', masterKey, Buffer.alloc(0), label, KEY_BYTES));
}

export function seal(key: Buffer, plaintext: Buffer, aad: Buffer): Buffer {
  checkKey(key);
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(aad);
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([Buffer.from([VERSION]), iv, cipher.getAuthTag(), ct]);
}

/** Opens a sealed blob; any change to the blob, the key or the context fails authentication. */
export function open(key: Buffer, blob: Buffer, aad: Buffer): Buffer {
  checkKey(key);
  if (blob.length < 1 + IV_BYTES + TAG_BYTES || blob[0] !== VERSION) {
    throw new HypersealError('HS_ERR_CRYPTO_AUTH', 'sealed data is malformed or of an unknown version');
  }
  const iv = blob.subarray(1, 1 + IV_BYTES);
  const tag = blob.subarray(1 + IV_BYTES, 1 + IV_BYTES + TAG_BYTES);
  const decipher = createDecipheriv('aes-256-gcm', key, iv);
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([decipher.update(blob.subarray(1 + IV_BYTES + TAG_BYTES)), decipher.final()]);
  } catch {
    throw new HypersealError(
      'HS_ERR_CRYPTO_AUTH',
      'sealed data failed authentication (tampered, or wrong key)',
    );
  }
}

/** Overwrites key material in place once it is no longer needed. */
export function zeroize(...buffers: (Buffer | undefined)[]): void {
  for (const b of buffers) b?.fill(0);
}
