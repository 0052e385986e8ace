/**
 * Secret files at rest (private keys of CAs and TLS servers): sealed under a master key
 * with the file's name as associated data, so a sealed file cannot be swapped for another.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { HypersealError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import { open, seal } from './aead.js';

function context(name: string): Buffer {
  return Buffer.from(`hyperseal-kms-file/v1\0${name}`, 'utf8');
}

export function writeSealedFile(dir: string, name: string, masterKey: Buffer, plaintext: string): void {
  writeFileAtomic(join(dir, name), seal(masterKey, Buffer.from(plaintext, 'utf8'), context(name)), 0o600);
}

export function readSealedFile(dir: string, name: string, masterKey: Buffer): string {
  try {
    return open(masterKey, readFileSync(join(dir, name)), context(name)).toString('utf8');
  } catch (err) {
    throw new HypersealError(
      'HS_ERR_KMS_MASTER_KEY',
      `cannot unseal ${name} in ${dir} with this master key`,
      undefined,
      {
        cause: err,
      },
    );
  }
}
