/**
 * The key server's master key: 32 random bytes that seal every managed object at rest.
 * It never lives in the data directory. Sources, first match wins:
 *   1. HYPERSEAL_KMS_MASTER_KEY — base64 of 32 bytes (for secret managers, systemd credentials);
 *   2. an explicit file (--master-key-file, or HYPERSEAL_KMS_MASTER_KEY_FILE);
 *   3. the default file $XDG_CONFIG_HOME/hyperseal/kms-master-<id>.key (mode 0600), <id>
 *      derived from the data directory's absolute path, created on first start. Operators
 *      move it to its own volume or vault; docs/kmip.md says how.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fchmodSync,
  fsyncSync,
  linkSync,
  mkdirSync,
  openSync,
  readFileSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { KEY_BYTES } from '../crypto/aead.js';
import { HypersealError } from '../errors.js';

export interface MasterKeySource {
  /** Where the key came from, for messages (never the key itself). */
  description: string;
  /** Set when the key is (or will be) kept in a file. */
  path?: string;
  /** Set when the key comes from this environment variable. */
  envVar?: string;
}

/** Whose master key: each process kind has its own (and its own environment variables). */
export type MasterKeyRole = 'kms' | 'manager';

const ENV: Record<MasterKeyRole, { key: string; file: string }> = {
  kms: { key: 'HYPERSEAL_KMS_MASTER_KEY', file: 'HYPERSEAL_KMS_MASTER_KEY_FILE' },
  manager: { key: 'HYPERSEAL_MANAGER_MASTER_KEY', file: 'HYPERSEAL_MANAGER_MASTER_KEY_FILE' },
};

export function defaultMasterKeyPath(dataDir: string, role: MasterKeyRole = 'kms'): string {
  const base = process.env.XDG_CONFIG_HOME ?? join(homedir(), '.config');
  const id = createHash('sha256').update(resolve(dataDir)).digest('hex').slice(0, 16);
  return join(base, 'hyperseal', `${role}-master-${id}.key`);
}

function parseKey(text: string, where: string): Buffer {
  const key = Buffer.from(text.trim(), 'base64');
  if (key.length !== KEY_BYTES) {
    throw new HypersealError(
      'HS_ERR_KMS_MASTER_KEY',
      `the master key in ${where} must be base64 of ${KEY_BYTES} bytes (got ${key.length} bytes)`,
    );
  }
  return key;
}

export function resolveMasterKeySource(
  dataDir: string,
  file?: string,
  role: MasterKeyRole = 'kms',
): MasterKeySource {
  const env = ENV[role];
  if (process.env[env.key]) return { description: `environment variable ${env.key}`, envVar: env.key };
  const path = file ?? process.env[env.file] ?? defaultMasterKeyPath(dataDir, role);
  return { description: `file ${path}`, path };
}

/**
 * Loads the master key; creates it (in its file) only when `create` is set, i.e. for a
 * brand-new store. A missing key for an existing store is an error, never a new key.
 */
export function loadMasterKey(source: MasterKeySource, create: boolean): Buffer {
  const env = source.envVar === undefined ? undefined : process.env[source.envVar];
  if (source.path === undefined) {
    if (!env) throw new HypersealError('HS_ERR_KMS_MASTER_KEY', `no master key in ${source.description}`);
    return parseKey(env, source.description);
  }
  if (existsSync(source.path)) return parseKey(readFileSync(source.path, 'utf8'), source.description);
  if (!create) {
    throw new HypersealError(
      'HS_ERR_KMS_MASTER_KEY',
      `the key store exists but its master key is missing (looked in ${source.description}); ` +
        `restore the key file or set the master key's environment variable (${Object.values(ENV)
          .map((e) => e.key)
          .join(' or ')})`,
    );
  }
  const key = randomBytes(KEY_BYTES);
  const dir = dirname(source.path);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // Written in full and fsynced under a temporary name, linked into place (link, unlike
  // rename, never replaces a key file that appeared meanwhile), then the directory is
  // fsynced: a crash or power loss leaves no key file or a complete one, never an empty
  // one beside a store sealed under a key that is gone.
  const tmp = `${source.path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    fchmodSync(fd, 0o600);
    writeFileSync(fd, key.toString('base64') + '\n');
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(tmp, source.path);
  } finally {
    unlinkSync(tmp);
  }
  const dirFd = openSync(dir, 'r');
  try {
    fsyncSync(dirFd);
  } finally {
    closeSync(dirFd);
  }
  return key;
}

const CHECK_LABEL = 'hyperseal kms master key check v1';

/** A value stored with the store that tells a wrong master key from a corrupt record. */
export function masterKeyCheck(key: Buffer): Buffer {
  return createHmac('sha256', key).update(CHECK_LABEL).digest();
}

export function verifyMasterKey(key: Buffer, check: Buffer, where: string): void {
  const actual = masterKeyCheck(key);
  if (actual.length !== check.length || !timingSafeEqual(actual, check)) {
    throw new HypersealError(
      'HS_ERR_KMS_MASTER_KEY',
      `the master key from ${where} does not open this key store`,
    );
  }
}
