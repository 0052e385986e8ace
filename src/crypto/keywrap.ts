/**
 * AES key wrap (RFC 3394) with a 256-bit KEK, through OpenSSL (`id-aes256-wrap`). How a
 * VM's DEKs are stored: only ever wrapped by its KEK. The wrap has its own integrity check
 * (the RFC's 0xA6… initial value), so unwrapping with the wrong KEK, or a wrapped key that
 * was altered, fails instead of yielding a wrong key: that is how an agent tells that a
 * pushed KEK is not the one a VM needs.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { HypersealError } from '../errors.js';

const DEFAULT_IV = Buffer.from('a6a6a6a6a6a6a6a6', 'hex');
export const KEK_BYTES = 32;

function checkKek(kek: Buffer): void {
  if (kek.length !== KEK_BYTES) {
    throw new HypersealError('HS_ERR_KEY_INVALID', `a KEK must be ${KEK_BYTES} bytes, got ${kek.length}`);
  }
}

/** Wraps `key` (16–512 bytes, a multiple of 8) under `kek`; the result is 8 bytes longer. */
export function wrapKey(kek: Buffer, key: Buffer): Buffer {
  checkKek(kek);
  if (key.length < 16 || key.length % 8 !== 0) {
    throw new HypersealError(
      'HS_ERR_INTERNAL',
      `cannot wrap a ${key.length}-byte key (RFC 3394 needs n×8, n ≥ 2)`,
    );
  }
  const c = createCipheriv('id-aes256-wrap', kek, DEFAULT_IV);
  return Buffer.concat([c.update(key), c.final()]);
}

/** Unwraps; HS_ERR_KEY_MISMATCH when the KEK is not the one that wrapped it (or the blob was altered). */
export function unwrapKey(kek: Buffer, wrapped: Buffer): Buffer {
  checkKek(kek);
  if (wrapped.length < 24 || wrapped.length % 8 !== 0) {
    throw new HypersealError('HS_ERR_KEY_MISMATCH', 'a wrapped key is malformed');
  }
  const d = createDecipheriv('id-aes256-wrap', kek, DEFAULT_IV);
  try {
    return Buffer.concat([d.update(wrapped), d.final()]);
  } catch {
    throw new HypersealError(
      'HS_ERR_KEY_MISMATCH',
      'a wrapped key does not unwrap with this KEK (wrong key, or the wrapped key was altered)',
    );
  }
}
