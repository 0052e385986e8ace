/**
 * The embedded key server as a service: its data directory (CA, server certificate,
 * sealed private keys, object store), issuing client certificates, and serving KMIP.
 *
 * Data directory layout (everything secret is sealed under the master key, which lives
 * elsewhere — see master-key.ts):
 *   ca.pem              CA certificate (public; give it to clients)
 *   server.pem          TLS server certificate (public)
 *   ca.key.sealed       CA private key, AES-256-GCM under the master key
 *   server.key.sealed   TLS server private key, likewise
 *   objects.db          the object store (SQLite); its presence marks a finished setup
 *
 * First start creates them in that order, each file atomically, and the store last: a
 * kill -9 at any point leaves either no store (the next start creates everything again)
 * or a complete setup.
 */
import { X509Certificate, createPrivateKey, createPublicKey, randomBytes, scryptSync } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  unlinkSync,
} from 'node:fs';
import { hostname } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { open as openSealed, seal } from '../crypto/aead.js';
import { crashPoint } from '../crashpoint.js';
import { isIP } from 'node:net';
import { readSealedFile, writeSealedFile } from '../crypto/sealed-file.js';
import { HypersealError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import { KmipServer } from '../kmip/server.js';
import type { CertifiedKey } from '../pki/index.js';
import { createCertificateAuthority, issueCertificate } from '../pki/index.js';
import { KmsEngine } from './engine.js';
import type { BackupOpener, BackupPayload, BackupSecret } from './backup.js';
import { openBackup, sealBackup } from './backup.js';
import { defaultMasterKeyPath, loadMasterKey, resolveMasterKeySource } from './master-key.js';
import { PostgresObjectStore } from './postgres-store.js';
import type { StoreDurability } from './sqlite-store.js';
import { SqliteObjectStore, decodeAttributeBlob, encodeAttributeBlob } from './sqlite-store.js';
import type { BackupMarker, ObjectStore } from './store.js';

export const KMS_FILES = {
  ca: 'ca.pem',
  serverCert: 'server.pem',
  caKey: 'ca.key.sealed',
  serverKey: 'server.key.sealed',
  store: 'objects.db',
  /** Scrypt parameters and salt when the master key comes from a passphrase. */
  kdf: 'master-key.kdf.json',
} as const;

/** Env variable holding a passphrase the master key is derived from (instead of a key). */
export const MASTER_PASSPHRASE_ENV = 'HYPERSEAL_KMS_MASTER_PASSPHRASE';
/** Scrypt for the master key: 64 MiB, ~0.2 s at every start. */
const MASTER_SCRYPT = { N: 1 << 16, r: 8, p: 1 };

interface KdfFile {
  name: 'scrypt';
  N: number;
  r: number;
  p: number;
  salt: string;
}

function deriveFromPassphrase(passphrase: string, kdf: KdfFile): Buffer {
  return scryptSync(Buffer.from(passphrase, 'utf8'), Buffer.from(kdf.salt, 'base64'), 32, {
    N: kdf.N,
    r: kdf.r,
    p: kdf.p,
    maxmem: 256 * kdf.N * kdf.r + 64 * 1024 * 1024,
  });
}

function newKdf(): KdfFile {
  return { name: 'scrypt', ...MASTER_SCRYPT, salt: randomBytes(16).toString('base64') };
}

function readKdf(path: string): KdfFile {
  return JSON.parse(readFileSync(path, 'utf8')) as KdfFile;
}

/** Master keys to try on a store (the current one, a rotation's successor), in order. */
interface KeyChoice {
  candidates: { key: Buffer; where: string; finish?: () => void }[];
  /** Successor files to delete once the store opened without them (a rotation that never committed). */
  staleIfUnused: string[];
}

/** How to make the new master key in a rotation. */
export type MasterKeyTarget =
  { kind: 'file'; path?: string } | { kind: 'key'; key: Buffer } | { kind: 'passphrase'; passphrase: string };

export interface KmsOpenOptions {
  dataDir: string;
  masterKeyFile?: string;
  /** Host names and addresses the server certificate must be valid for (first start only). */
  serverNames?: string[];
  /** 'full' (default): every answer waits for fsync. 'process': survives kill -9, not power loss. */
  durability?: StoreDurability;
  /** The object store: undefined for DIR/objects.db, or a postgres:// URL shared by replicas. */
  store?: string;
  /** Derive the master key from this passphrase (scrypt; salt in DIR/master-key.kdf.json). */
  masterPassphrase?: string;
  /** Do not create a new key server when the directory is empty (restore, rotation, backup). */
  mustExist?: boolean;
}

export class KmsDataDir {
  private constructor(
    readonly dir: string,
    private masterKey: Buffer,
    readonly store: ObjectStore,
    private readonly keyPath: string | undefined,
  ) {}

  /** Opens the data directory, creating a new key server in it on first use. */
  static async open(opts: KmsOpenOptions): Promise<KmsDataDir> {
    const dir = resolve(opts.dataDir);
    if (opts.mustExist === true && !existsSync(join(dir, KMS_FILES.caKey))) {
      throw new HypersealError('HS_ERR_CONFIG', `${dir} holds no key server (no ${KMS_FILES.caKey})`);
    }
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const fresh =
      opts.store === undefined
        ? !existsSync(join(dir, KMS_FILES.store))
        : !existsSync(join(dir, KMS_FILES.caKey));
    const choice = KmsDataDir.loadKey(dir, opts, fresh);
    const first = choice.candidates[0];
    if (fresh && first !== undefined) await KmsDataDir.initialise(dir, first.key, opts.serverNames ?? []);
    for (const f of [KMS_FILES.ca, KMS_FILES.serverCert, KMS_FILES.caKey, KMS_FILES.serverKey]) {
      if (!existsSync(join(dir, f))) {
        throw new HypersealError('HS_ERR_CONFIG', `key server data directory ${dir} is missing ${f}`);
      }
    }
    // A rotation interrupted by a crash: the store's check value says which key it is
    // under — the current one, or the successor a rotation left in a `.next` file. The one
    // that opens it wins; any other `.next` is from a rotation that never committed.
    let store: ObjectStore | undefined;
    let key: Buffer | undefined;
    let lastError: unknown;
    for (const c of choice.candidates) {
      try {
        store = await KmsDataDir.openStore(dir, opts, c.key, c.where);
      } catch (err) {
        if (!(err instanceof HypersealError && err.code === 'HS_ERR_KMS_MASTER_KEY')) throw err;
        lastError = err;
        continue;
      }
      c.finish?.();
      key = c.key;
      break;
    }
    for (const c of choice.candidates) if (c.key !== key) c.key.fill(0);
    if (store === undefined || key === undefined) throw lastError;
    for (const stale of choice.staleIfUnused) rmSync(stale, { force: true });
    KmsDataDir.settleSealedFiles(dir, key);
    // Where a rotation to a new key file writes it by default: where the key is looked for.
    const keyPath = resolveMasterKeySource(dir, opts.masterKeyFile).path;
    const kms = new KmsDataDir(dir, key, store, keyPath);
    try {
      kms.verifyCertificates();
      await kms.checkSharedCa();
    } catch (err) {
      await kms.close();
      throw err;
    }
    return kms;
  }

  private static async openStore(
    dir: string,
    opts: KmsOpenOptions,
    key: Buffer,
    where: string,
  ): Promise<ObjectStore> {
    if (opts.store !== undefined) return PostgresObjectStore.open(opts.store, key, where);
    return new SqliteObjectStore(join(dir, KMS_FILES.store), key, where, opts.durability ?? 'full');
  }

  /**
   * The master key per the sources (passphrase, env, file), and the successor a rotation
   * may have left (`.next`): the candidates, in the order to try them.
   */
  private static loadKey(dir: string, opts: KmsOpenOptions, fresh: boolean): KeyChoice {
    const kdfPath = join(dir, KMS_FILES.kdf);
    const source = resolveMasterKeySource(dir, opts.masterKeyFile);
    const choice: KeyChoice = {
      candidates: [],
      staleIfUnused: [`${kdfPath}.next`, ...(source.path !== undefined ? [`${source.path}.next`] : [])],
    };
    const passphrase = opts.masterPassphrase ?? process.env[MASTER_PASSPHRASE_ENV];
    if (passphrase !== undefined && passphrase !== '') {
      const next = `${kdfPath}.next`;
      if (!existsSync(kdfPath) && fresh) writeFileAtomic(kdfPath, JSON.stringify(newKdf()) + '\n', 0o600);
      if (existsSync(kdfPath)) {
        choice.candidates.push({
          key: deriveFromPassphrase(passphrase, readKdf(kdfPath)),
          where: 'the master passphrase',
        });
      }
      if (existsSync(next)) {
        choice.candidates.push({
          key: deriveFromPassphrase(passphrase, readKdf(next)),
          where: 'the new master passphrase',
          finish: () => renameDurably(next, kdfPath),
        });
      }
      if (choice.candidates.length === 0) {
        throw new HypersealError(
          'HS_ERR_KMS_MASTER_KEY',
          `a master passphrase was given but ${dir} has no ${KMS_FILES.kdf}: its master key is a key, not a passphrase`,
        );
      }
      return choice;
    }
    const path = source.path;
    const next = path === undefined ? undefined : `${path}.next`;
    const hasNext = next !== undefined && existsSync(next);
    // Without its file but with a successor (a rotation from a passphrase, cut short): the successor.
    if (path === undefined || existsSync(path) || !hasNext) {
      choice.candidates.push({ key: loadMasterKey(source, fresh), where: source.description });
    }
    if (hasNext && path !== undefined) {
      choice.candidates.push({
        key: loadMasterKey({ description: `file ${next}`, path: next }, false),
        where: `file ${next}`,
        finish: () => renameDurably(next, path),
      });
    }
    return choice;
  }

  /** Sealed files a rotation re-sealed (`.next`): kept if they open with the store's key. */
  private static settleSealedFiles(dir: string, key: Buffer): void {
    for (const name of [KMS_FILES.caKey, KMS_FILES.serverKey]) {
      const next = join(dir, `${name}.next`);
      if (!existsSync(next)) continue;
      let opens = true;
      try {
        openSealed(key, readFileSync(next), sealedFileContext(name)).fill(0);
      } catch {
        opens = false;
      }
      if (opens) renameDurably(next, join(dir, name));
      else unlinkSync(next);
    }
  }

  /**
   * Replicas on one PostgreSQL store must share a CA (clients trust one ca.pem): the
   * store remembers the first replica's CA and refuses a data directory with another.
   */
  private async checkSharedCa(): Promise<void> {
    const fingerprint = Buffer.from(new X509Certificate(this.caCertPem()).fingerprint256);
    const known = await this.store.getMeta('ca_sha256');
    if (known === undefined) {
      await this.store.setMeta('ca_sha256', fingerprint);
      await this.store.settled();
    } else if (!known.equals(fingerprint)) {
      throw new HypersealError(
        'HS_ERR_CONFIG',
        `the key store is served with another CA than ${this.caPath}: make this data directory with ` +
          `'hyperseal kms init-replica' from a key server of this store`,
      );
    }
  }

  private static async initialise(dir: string, masterKey: Buffer, serverNames: string[]): Promise<void> {
    const ca = await createCertificateAuthority({
      commonName: `Hyperseal KMS CA (${hostname()})`,
      validityDays: 3650,
    });
    await KmsDataDir.writeIdentity(dir, masterKey, ca, serverNames);
  }

  /** Writes a CA (given) and a new server certificate for `serverNames` into `dir`. */
  private static async writeIdentity(
    dir: string,
    masterKey: Buffer,
    ca: CertifiedKey,
    serverNames: string[],
    server?: CertifiedKey,
  ): Promise<void> {
    const names = [...new Set(['localhost', '127.0.0.1', hostname(), ...serverNames])];
    const srv =
      server ??
      (await issueCertificate(ca, {
        commonName: 'hyperseal-kms',
        usage: 'server',
        dnsNames: names.filter((n) => isIP(n) === 0),
        ipAddresses: names.filter((n) => isIP(n) !== 0),
        validityDays: 825,
      }));
    writeSealedFile(dir, KMS_FILES.caKey, masterKey, ca.keyPem);
    writeSealedFile(dir, KMS_FILES.serverKey, masterKey, srv.keyPem);
    writeFileAtomic(join(dir, KMS_FILES.serverCert), srv.certPem);
    writeFileAtomic(join(dir, KMS_FILES.ca), ca.certPem);
  }

  // -- backup, restore, rotation, replicas ------------------------------------------------

  /**
   * The backup file's bytes: every object and the server identity, encrypted for
   * `secret`. Record it with `recordBackup` once the file is safely written.
   */
  async createBackup(secret: BackupSecret): Promise<{ file: Buffer; marker: BackupMarker }> {
    const objects = await this.store.exportObjects();
    const creds = this.serverCredentials();
    const payload: BackupPayload = {
      format: 1,
      storeId: await this.store.storeId(),
      identity: {
        caCertPem: this.caCertPem(),
        caKeyPem: this.unsealFile(KMS_FILES.caKey),
        serverCertPem: creds.certPem,
        serverKeyPem: creds.keyPem,
      },
      objects: objects.map((o) => ({
        uid: o.uid,
        owner: o.owner,
        objectType: o.objectType,
        state: o.state,
        algorithm: o.algorithm,
        lengthBits: o.lengthBits,
        attributes: encodeAttributeBlob(o.attributes).toString('base64'),
        material: o.material === undefined ? null : o.material.toString('base64'),
        createdAt: o.createdAt,
        grants: o.grants,
      })),
    };
    for (const o of objects) o.material?.fill(0);
    const newest = objects.reduce<number | null>(
      (m, o) => (m === null || o.createdAt > m ? o.createdAt : m),
      null,
    );
    const at = Date.now();
    const file = sealBackup(payload, { createdAt: at, newestObjectAt: newest }, secret);
    return { file, marker: { at, newestObjectAt: newest, objects: objects.length } };
  }

  async recordBackup(marker: BackupMarker): Promise<void> {
    await this.store.recordBackup(marker);
    await this.store.settled();
  }

  /**
   * Rebuilds a key server in `opts.dataDir` (and its store) from a backup: same key
   * values, ids, owners, grants and server identity. Checks the whole backup first, builds
   * the directory beside the target and renames it into place: on any failure nothing of
   * the target changed. An existing key server is replaced only with `force`.
   */
  static async restore(
    opts: KmsOpenOptions,
    file: Buffer,
    opener: BackupOpener,
    force = false,
  ): Promise<{ objects: number; storeId: string }> {
    const { header, payload } = openBackup(file, opener);
    const dir = resolve(opts.dataDir);
    const occupied = existsSync(join(dir, KMS_FILES.store)) || existsSync(join(dir, KMS_FILES.caKey));
    if (occupied && !force) {
      throw new HypersealError(
        'HS_ERR_KMS_RESTORE_NOT_EMPTY',
        `${dir} already holds a key server: restore into an empty directory, or add --force to replace it`,
      );
    }
    if (opts.store !== undefined) {
      const probe = await openDatabaseCount(opts.store);
      if (probe > 0 && !force) {
        throw new HypersealError(
          'HS_ERR_KMS_RESTORE_NOT_EMPTY',
          `the key store at ${opts.store.replace(/:[^:@/]*@/, ':***@')} already holds ${probe} objects: add --force to replace them`,
        );
      }
    }
    const parent = dirname(dir);
    mkdirSync(parent, { recursive: true });
    const tmp = join(parent, `.${basename(dir)}.restore-${process.pid}`);
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { mode: 0o700 });
    // The master key belongs to the target directory (its default file is named after it;
    // a passphrase's salt moves with the directory).
    const passphrase = opts.masterPassphrase ?? process.env[MASTER_PASSPHRASE_ENV];
    const keyPath = resolveMasterKeySource(dir, opts.masterKeyFile).path;
    const hadKeyFile = keyPath === undefined || existsSync(keyPath);
    let key: Buffer | undefined;
    try {
      if (passphrase !== undefined && passphrase !== '') {
        const existing = join(dir, KMS_FILES.kdf);
        const kdf = occupied && existsSync(existing) ? readKdf(existing) : newKdf();
        writeFileAtomic(join(tmp, KMS_FILES.kdf), JSON.stringify(kdf) + '\n', 0o600);
        key = deriveFromPassphrase(passphrase, kdf);
      } else {
        key = loadMasterKey(resolveMasterKeySource(dir, opts.masterKeyFile), true);
      }
      const id = payload.identity;
      await KmsDataDir.writeIdentity(tmp, key, { certPem: id.caCertPem, keyPem: id.caKeyPem }, [], {
        certPem: id.serverCertPem,
        keyPem: id.serverKeyPem,
      });
      const store =
        opts.store !== undefined
          ? await PostgresObjectStore.open(opts.store, key, 'the restore', { replaceKey: true })
          : new SqliteObjectStore(join(tmp, KMS_FILES.store), key, 'the restore', 'full');
      try {
        await store.importObjects(
          payload.objects.map((o) => ({
            uid: o.uid,
            owner: o.owner,
            objectType: o.objectType,
            state: o.state,
            algorithm: o.algorithm,
            lengthBits: o.lengthBits,
            attributes: decodeAttributeBlob(Buffer.from(o.attributes, 'base64')),
            material: o.material === null ? undefined : Buffer.from(o.material, 'base64'),
            createdAt: o.createdAt,
            grants: o.grants,
          })),
        );
        await store.setMeta('ca_sha256', Buffer.from(new X509Certificate(id.caCertPem).fingerprint256));
        await store.setMeta('restored_from', Buffer.from(payload.storeId));
        // What was restored is, by definition, in that backup.
        await store.recordBackup({
          at: header.createdAt,
          newestObjectAt: header.newestObjectAt,
          objects: payload.objects.length,
        });
        await store.settled();
      } finally {
        await store.close();
      }
      crashPoint('kms-restore-before-swap');
      // Swap: the old directory aside, the new one in, the old one removed.
      const old = join(parent, `.${basename(dir)}.replaced-${process.pid}`);
      if (existsSync(dir)) renameSync(dir, old);
      renameDurably(tmp, dir);
      rmSync(old, { recursive: true, force: true });
      return { objects: payload.objects.length, storeId: payload.storeId };
    } catch (err) {
      rmSync(tmp, { recursive: true, force: true });
      if (!hadKeyFile && keyPath !== undefined) rmSync(keyPath, { force: true });
      throw err;
    } finally {
      key?.fill(0);
    }
  }

  /**
   * Re-seals the store and the two sealed files under a new master key; ids and key
   * values do not change. Crash-safe: the successor key (a `.next` file) and re-sealed
   * files (`*.sealed.next`) are written first, then one store transaction re-seals every
   * object and switches the check value (the commit point), then the `.next` files are
   * renamed into place. `open` finishes or discards an interrupted rotation, so a kill -9
   * at any point leaves a store that opens with the old key or the new one.
   * The data directory is closed afterwards.
   */
  async rotateMasterKey(target: MasterKeyTarget): Promise<{ where: string }> {
    const caKey = this.unsealFile(KMS_FILES.caKey);
    const serverKey = this.unsealFile(KMS_FILES.serverKey);
    let newKey: Buffer;
    let finish: () => void = () => undefined;
    let where: string;
    if (target.kind === 'key') {
      newKey = Buffer.from(target.key);
      where = 'the new key given';
    } else if (target.kind === 'passphrase') {
      const kdf = newKdf();
      const kdfPath = join(this.dir, KMS_FILES.kdf);
      writeFileAtomic(`${kdfPath}.next`, JSON.stringify(kdf) + '\n', 0o600);
      newKey = deriveFromPassphrase(target.passphrase, kdf);
      finish = () => renameDurably(`${kdfPath}.next`, kdfPath);
      where = 'the new master passphrase';
    } else {
      const path = target.path ?? this.keyPath ?? defaultMasterKeyPath(this.dir);
      newKey = randomBytes(32);
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
      writeFileAtomic(`${path}.next`, newKey.toString('base64') + '\n', 0o600);
      finish = () => renameDurably(`${path}.next`, path);
      where = `file ${path}`;
    }
    if (newKey.equals(this.masterKey)) {
      throw new HypersealError('HS_ERR_INVALID_ARGUMENT', 'the new master key is the current one');
    }
    crashPoint('kms-rotate-after-pending-key');
    writeFileAtomic(
      join(this.dir, `${KMS_FILES.caKey}.next`),
      sealFile(newKey, KMS_FILES.caKey, caKey),
      0o600,
    );
    writeFileAtomic(
      join(this.dir, `${KMS_FILES.serverKey}.next`),
      sealFile(newKey, KMS_FILES.serverKey, serverKey),
      0o600,
    );
    crashPoint('kms-rotate-after-sealed-files');
    await this.store.rotateMasterKey(newKey);
    crashPoint('kms-rotate-after-store');
    finish();
    crashPoint('kms-rotate-after-key-file');
    KmsDataDir.settleSealedFiles(this.dir, newKey);
    this.masterKey.fill(0);
    this.masterKey = newKey;
    await this.close();
    return { where };
  }

  /**
   * Makes `toDir` a replica of this key server for a shared PostgreSQL store: the same CA
   * (its key sealed under the master key, which replicas share), and a server
   * certificate of its own for `serverNames`.
   */
  async initReplica(toDir: string, serverNames: string[]): Promise<void> {
    const dir = resolve(toDir);
    if (existsSync(join(dir, KMS_FILES.caKey))) {
      throw new HypersealError('HS_ERR_KMS_RESTORE_NOT_EMPTY', `${dir} already holds a key server`);
    }
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    await KmsDataDir.writeIdentity(
      dir,
      this.masterKey,
      { certPem: this.caCertPem(), keyPem: this.unsealFile(KMS_FILES.caKey) },
      serverNames,
    );
    if (existsSync(join(this.dir, KMS_FILES.kdf))) {
      writeFileAtomic(join(dir, KMS_FILES.kdf), readFileSync(join(this.dir, KMS_FILES.kdf)), 0o600);
    }
  }

  /**
   * ca.pem and server.pem are plain files; their private keys are sealed. Someone who can
   * write the directory could swap ca.pem for their own CA (and then connect as anyone),
   * so each certificate must match its sealed key, and the server's must chain to the CA.
   */
  private verifyCertificates(): void {
    const check = (certPem: string, keyPem: string, what: string): X509Certificate => {
      const cert = new X509Certificate(certPem);
      const pub = createPublicKey(createPrivateKey(keyPem)).export({ type: 'spki', format: 'der' });
      if (!pub.equals(cert.publicKey.export({ type: 'spki', format: 'der' }))) {
        throw new HypersealError(
          'HS_ERR_CONFIG',
          `${what} in ${this.dir} does not match its sealed private key: it was replaced`,
        );
      }
      return cert;
    };
    const ca = check(this.caCertPem(), this.unsealFile(KMS_FILES.caKey), KMS_FILES.ca);
    const creds = this.serverCredentials();
    const server = check(creds.certPem, creds.keyPem, KMS_FILES.serverCert);
    if (!server.checkIssued(ca) || !server.verify(ca.publicKey)) {
      throw new HypersealError(
        'HS_ERR_CONFIG',
        `${KMS_FILES.serverCert} in ${this.dir} was not issued by ${KMS_FILES.ca}`,
      );
    }
  }

  get caPath(): string {
    return join(this.dir, KMS_FILES.ca);
  }

  caCertPem(): string {
    return readFileSync(this.caPath, 'utf8');
  }

  private unsealFile(name: string): string {
    return readSealedFile(this.dir, name, this.masterKey);
  }

  serverCredentials(): { certPem: string; keyPem: string } {
    return {
      certPem: readFileSync(join(this.dir, KMS_FILES.serverCert), 'utf8'),
      keyPem: this.unsealFile(KMS_FILES.serverKey),
    };
  }

  /** Issues a client certificate (clientAuth) whose CN becomes the client's identity. */
  async issueClientCertificate(name: string, validityDays = 825): Promise<CertifiedKey> {
    if (!/^[A-Za-z0-9._@-]{1,64}$/.test(name)) {
      throw new HypersealError(
        'HS_ERR_INVALID_ARGUMENT',
        `client name '${name}' must be 1-64 characters of letters, digits, '.', '_', '@' or '-'`,
      );
    }
    const ca: CertifiedKey = { certPem: this.caCertPem(), keyPem: this.unsealFile(KMS_FILES.caKey) };
    return issueCertificate(ca, { commonName: name, usage: 'client', validityDays });
  }

  private closed = false;

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.store.close();
    this.masterKey.fill(0);
  }
}

function sealedFileContext(name: string): Buffer {
  return Buffer.from(`hyperseal-kms-file/v1\0${name}`, 'utf8');
}

function sealFile(key: Buffer, name: string, plaintext: string): Buffer {
  return seal(key, Buffer.from(plaintext, 'utf8'), sealedFileContext(name));
}

/** rename + fsync of the directory: the new name survives a power cut. */
function renameDurably(from: string, to: string): void {
  renameSync(from, to);
  fsyncDir(dirname(to));
}

async function openDatabaseCount(url: string): Promise<number> {
  const { openDatabase } = await import('../store/open.js');
  const db = await openDatabase(url, { maxConnections: 1 });
  try {
    const t = await db.one<{ t: string | null }>(`SELECT to_regclass('kms_objects')::text AS t`);
    if (t?.t === null || t === undefined) return 0;
    return Number((await db.one<{ n: number }>(`SELECT count(*)::int AS n FROM kms_objects`))?.n ?? 0);
  } finally {
    await db.close();
  }
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export interface RunningKms {
  host: string;
  port: number;
  dataDir: KmsDataDir;
  close(): Promise<void>;
}

/** Opens (or creates) a key server in `dataDir` and serves KMIP on host:port. */
export async function startKms(opts: KmsOpenOptions & { host?: string; port?: number }): Promise<RunningKms> {
  const host = opts.host ?? '127.0.0.1';
  const dataDir = await KmsDataDir.open({ ...opts, serverNames: [host, ...(opts.serverNames ?? [])] });
  const engine = new KmsEngine(dataDir.store, { vendorIdentification: 'Hyperseal KMS' });
  const creds = dataDir.serverCredentials();
  const server = new KmipServer({
    host,
    port: opts.port ?? 5696,
    ca: dataDir.caCertPem(),
    cert: creds.certPem,
    key: creds.keyPem,
    handler: (frame, peer) => engine.handle(frame, peer.identity),
  });
  try {
    const address = await server.listen();
    return {
      host: address.address,
      port: address.port,
      dataDir,
      close: async () => {
        await server.close();
        await dataDir.close();
      },
    };
  } catch (err) {
    await dataDir.close();
    throw new HypersealError(
      'HS_ERR_CONFIG',
      `cannot listen on ${host}:${opts.port ?? 5696}: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
}
