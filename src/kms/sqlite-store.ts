/**
 * ObjectStore on one SQLite file.
 *
 * Durability: by default ('full') the WAL is fsynced after every group commit and before
 * any answer, so a key handed to a client is on disk and neither kill -9 nor power loss
 * can lose it. `durability: 'process'` skips that fsync: it survives a crash of the
 * process (the WAL is in the page cache), not of the machine.
 *
 * Group commit: writes made in the same event-loop turn share one transaction and one
 * fsync. Each write runs at once inside the open transaction (so later reads on this
 * connection see it); `settled()` resolves when that transaction has committed, and the
 * engine holds every answer until then, so nothing not yet durable is ever reported.
 */
import Database from 'better-sqlite3';
import { randomUUID } from 'node:crypto';
import { open, seal } from '../crypto/aead.js';
import { HypersealError } from '../errors.js';
import { WalFlusher } from '../store/wal-flusher.js';
import type { KmipAttribute } from '../kmip/attributes.js';
import { decodeAttributes, encodeAttribute, nameValueOf } from '../kmip/attributes.js';
import { Tag } from '../kmip/tags.js';
import { decodeTtlv, encodeTtlv, ttlv } from '../kmip/ttlv.js';
import type {
  BackupMarker,
  ExportedObject,
  LocateFilter,
  ManagedObject,
  ObjectStore,
  ObjectUpdate,
  StoreBackupState,
} from './store.js';
import { masterKeyCheck, verifyMasterKey } from './master-key.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
  uid TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  object_type INTEGER NOT NULL,
  state INTEGER NOT NULL,
  algorithm INTEGER NOT NULL,
  length_bits INTEGER NOT NULL,
  attributes BLOB NOT NULL,
  sealed_material BLOB,
  created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS object_names (uid TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (uid, name));
CREATE INDEX IF NOT EXISTS object_names_by_name ON object_names (name);
CREATE INDEX IF NOT EXISTS objects_by_owner ON objects (owner, state);
CREATE TABLE IF NOT EXISTS grants (uid TEXT NOT NULL, identity TEXT NOT NULL, PRIMARY KEY (uid, identity));
`;

/** An object's row, the same in both stores (SQLite here, PostgreSQL in postgres-store.ts). */
export interface StoredObjectRow {
  uid: string;
  owner: string;
  object_type: number;
  state: number;
  algorithm: number;
  length_bits: number;
  attributes: Buffer;
  sealed_material: Buffer | null;
  created_at: number;
}
type Row = StoredObjectRow;

export const BACKUP_MARKER_KEY = 'last_backup';
export const MASTER_KEY_CHECK_KEY = 'master_key_check';

/** Associated data binding sealed material to the object it belongs to. */
export function materialContext(
  o: Pick<ManagedObject, 'uid' | 'owner' | 'objectType' | 'algorithm' | 'lengthBits'>,
): Buffer {
  return Buffer.from(
    ['hyperseal-kms-object/v1', o.uid, o.owner, o.objectType, o.algorithm, o.lengthBits].join('\0'),
    'utf8',
  );
}

export function encodeAttributeBlob(attributes: KmipAttribute[]): Buffer {
  return encodeTtlv(ttlv.struct(Tag.TemplateAttribute, attributes.map(encodeAttribute)));
}

export function decodeAttributeBlob(blob: Buffer): KmipAttribute[] {
  const root = decodeTtlv(blob);
  return root.type === 'Structure' ? decodeAttributes(root.value) : [];
}

export function namesOf(attributes: KmipAttribute[]): string[] {
  return attributes.flatMap((a) => (a.name === 'Name' ? [nameValueOf(a.value) ?? ''] : [])).filter(Boolean);
}

export type StoreDurability = 'full' | 'process';

function baseOfRow(row: StoredObjectRow): Omit<ManagedObject, 'attributes' | 'material'> {
  return {
    uid: row.uid,
    owner: row.owner,
    objectType: row.object_type,
    state: row.state,
    algorithm: row.algorithm,
    lengthBits: row.length_bits,
  };
}

/** A row as a ManagedObject, its material unsealed (and authenticated) only when asked for. */
export function objectFromRow(row: StoredObjectRow, masterKey: Buffer, withMaterial: boolean): ManagedObject {
  const base = baseOfRow(row);
  let material: Buffer | undefined;
  if (row.sealed_material !== null && withMaterial) {
    try {
      material = open(masterKey, Buffer.from(row.sealed_material), materialContext(base));
    } catch {
      throw new HypersealError(
        'HS_ERR_KMS_STORE_CORRUPT',
        `the stored key material of object ${row.uid} failed authentication`,
      );
    }
  }
  return { ...base, attributes: decodeAttributeBlob(Buffer.from(row.attributes)), material };
}

export class SqliteObjectStore implements ObjectStore {
  private readonly db: Database.Database;
  private readonly stmts;

  /** Opens (creating when new) the store; refuses a master key that is not this store's. */
  private txWaiters: { resolve(): void; reject(err: Error): void }[] | undefined;
  private readonly fsyncOnCommit: boolean;
  /** Committed groups whose answers wait for the next WAL flush. */
  private readonly flusher: WalFlusher;

  constructor(
    path: string,
    private masterKey: Buffer,
    masterKeyWhere: string,
    durability: StoreDurability = 'full',
  ) {
    this.flusher = new WalFlusher(`${path}-wal`);
    this.fsyncOnCommit = durability === 'full';
    this.db = new Database(path);
    // A refused master key (or any failure here) must not leave the file open: the handle
    // would keep -wal/-shm files in the data directory and the database locked.
    try {
      this.db.pragma('journal_mode = WAL');
      // NORMAL: SQLite itself does not fsync on commit; in 'full' mode we fsync the WAL
      // ourselves, off the event loop (see commit()), which is what FULL would do inline.
      this.db.pragma('synchronous = NORMAL');
      this.db.pragma('busy_timeout = 5000');
      this.db.exec(SCHEMA);
      const check = this.db.prepare<[string], { value: Buffer }>('SELECT value FROM meta WHERE key = ?');
      const existing = check.get(MASTER_KEY_CHECK_KEY);
      if (existing === undefined) {
        const insert = this.db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)');
        this.db.transaction(() => {
          insert.run(MASTER_KEY_CHECK_KEY, masterKeyCheck(masterKey));
          insert.run('store_id', Buffer.from(randomUUID()));
        })();
      } else {
        verifyMasterKey(masterKey, existing.value, masterKeyWhere);
      }
    } catch (err) {
      this.db.close();
      throw err;
    }
    this.stmts = {
      insert: this.db.prepare(
        `INSERT INTO objects (uid, owner, object_type, state, algorithm, length_bits, attributes, sealed_material, created_at)
         VALUES (@uid, @owner, @objectType, @state, @algorithm, @lengthBits, @attributes, @sealed, @createdAt)`,
      ),
      insertName: this.db.prepare('INSERT OR IGNORE INTO object_names (uid, name) VALUES (?, ?)'),
      deleteNames: this.db.prepare('DELETE FROM object_names WHERE uid = ?'),
      get: this.db.prepare<[string], Row>('SELECT * FROM objects WHERE uid = ?'),
      setState: this.db.prepare('UPDATE objects SET state = ? WHERE uid = ?'),
      setAttributes: this.db.prepare('UPDATE objects SET attributes = ? WHERE uid = ?'),
      destroyMaterial: this.db.prepare('UPDATE objects SET sealed_material = NULL WHERE uid = ?'),
      access: this.db.prepare<[string, string, string, string], { ok: number }>(
        `SELECT 1 AS ok FROM objects WHERE uid = ? AND owner = ?
         UNION SELECT 1 FROM grants WHERE uid = ? AND identity = ?`,
      ),
      grant: this.db.prepare('INSERT OR IGNORE INTO grants (uid, identity) VALUES (?, ?)'),
      granted: this.db.prepare<[string, string], { ok: number }>(
        'SELECT 1 AS ok FROM grants WHERE uid = ? AND identity = ?',
      ),
      count: this.db.prepare<[], { n: number }>('SELECT count(*) AS n FROM objects'),
    };
  }

  insert(obj: ManagedObject): Promise<void> {
    const sealed =
      obj.material === undefined ? null : seal(this.masterKey, obj.material, materialContext(obj));
    return this.write(() => {
      this.stmts.insert.run({
        uid: obj.uid,
        owner: obj.owner,
        objectType: obj.objectType,
        state: obj.state,
        algorithm: obj.algorithm,
        lengthBits: obj.lengthBits,
        attributes: encodeAttributeBlob(obj.attributes),
        sealed,
        createdAt: Date.now(),
      });
      for (const name of namesOf(obj.attributes)) this.stmts.insertName.run(obj.uid, name);
    });
  }

  exportObjects(): Promise<ExportedObject[]> {
    const rows = this.db.prepare<[], Row>('SELECT * FROM objects ORDER BY created_at, uid').all();
    const grants = this.db.prepare<[string], { identity: string }>(
      'SELECT identity FROM grants WHERE uid = ? ORDER BY identity',
    );
    return Promise.resolve(
      rows.map((row) => ({
        ...this.unsealRow(row, true),
        createdAt: row.created_at,
        grants: grants.all(row.uid).map((g) => g.identity),
      })),
    );
  }

  async importObjects(objects: readonly ExportedObject[]): Promise<void> {
    await this.settled();
    const grant = this.stmts.grant;
    this.db.transaction(() => {
      for (const obj of objects) {
        this.stmts.insert.run({
          uid: obj.uid,
          owner: obj.owner,
          objectType: obj.objectType,
          state: obj.state,
          algorithm: obj.algorithm,
          lengthBits: obj.lengthBits,
          attributes: encodeAttributeBlob(obj.attributes),
          sealed:
            obj.material === undefined ? null : seal(this.masterKey, obj.material, materialContext(obj)),
          createdAt: obj.createdAt,
        });
        for (const name of namesOf(obj.attributes)) this.stmts.insertName.run(obj.uid, name);
        for (const who of obj.grants) grant.run(obj.uid, who);
      }
    })();
    // Restores are rare and must be on disk before the caller says they are done.
    this.db.pragma('wal_checkpoint(FULL)');
  }

  backupState(): Promise<StoreBackupState> {
    const agg = this.db
      .prepare<[], { n: number; newest: number | null }>(
        'SELECT count(*) AS n, max(created_at) AS newest FROM objects',
      )
      .get();
    const marker = this.metaGet(BACKUP_MARKER_KEY);
    return Promise.resolve({
      lastBackup: marker === undefined ? null : (JSON.parse(marker.toString('utf8')) as BackupMarker),
      newestObjectAt: agg?.newest ?? null,
      objects: agg?.n ?? 0,
    });
  }

  recordBackup(marker: BackupMarker): Promise<void> {
    return this.setMeta(BACKUP_MARKER_KEY, Buffer.from(JSON.stringify(marker)));
  }

  async rotateMasterKey(newKey: Buffer): Promise<void> {
    await this.settled();
    const rows = this.db.prepare<[], Row>('SELECT * FROM objects WHERE sealed_material IS NOT NULL').all();
    const update = this.db.prepare('UPDATE objects SET sealed_material = ? WHERE uid = ?');
    const setCheck = this.db.prepare('UPDATE meta SET value = ? WHERE key = ?');
    // One transaction: every object and the check value change together. SQLite commits
    // it atomically (WAL), so a kill -9 leaves the store wholly under one key.
    this.db.transaction(() => {
      for (const row of rows) {
        const material = this.unsealRow(row, true).material;
        if (material === undefined) continue;
        update.run(seal(newKey, material, materialContext(this.baseOf(row))), row.uid);
        material.fill(0);
      }
      setCheck.run(masterKeyCheck(newKey), MASTER_KEY_CHECK_KEY);
    })();
    this.db.pragma('wal_checkpoint(FULL)');
    // The caller owns both buffers (and wipes the old one once its sealed files are done).
    this.masterKey = newKey;
  }

  storeId(): Promise<string> {
    return Promise.resolve(this.metaGet('store_id')?.toString('utf8') ?? '');
  }

  getMeta(key: string): Promise<Buffer | undefined> {
    return Promise.resolve(this.metaGet(key));
  }

  setMeta(key: string, value: Buffer): Promise<void> {
    return this.write(() =>
      this.db.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)').run(key, value),
    );
  }

  private metaGet(key: string): Buffer | undefined {
    return this.db.prepare<[string], { value: Buffer }>('SELECT value FROM meta WHERE key = ?').get(key)
      ?.value;
  }

  private baseOf(row: Row): Omit<ManagedObject, 'attributes' | 'material'> {
    return baseOfRow(row);
  }

  private unsealRow(row: Row, withMaterial: boolean): ManagedObject {
    return objectFromRow(row, this.masterKey, withMaterial);
  }

  get(uid: string, withMaterial = true, accessibleBy?: string): Promise<ManagedObject | undefined> {
    const row = this.stmts.get.get(uid);
    if (row === undefined) return Promise.resolve(undefined);
    // Access is checked before anything is unsealed; the owner needs no second query.
    if (
      accessibleBy !== undefined &&
      row.owner !== accessibleBy &&
      this.stmts.granted.get(uid, accessibleBy) === undefined
    ) {
      return Promise.resolve(undefined);
    }
    return Promise.resolve(this.unsealRow(row, withMaterial));
  }

  update(uid: string, change: ObjectUpdate): Promise<void> {
    return this.write(() => {
      if (change.state !== undefined) this.stmts.setState.run(change.state, uid);
      if (change.attributes !== undefined) {
        this.stmts.setAttributes.run(encodeAttributeBlob(change.attributes), uid);
        this.stmts.deleteNames.run(uid);
        for (const name of namesOf(change.attributes)) this.stmts.insertName.run(uid, name);
      }
      if (change.destroyMaterial === true) this.stmts.destroyMaterial.run(uid);
    });
  }

  locate(f: LocateFilter): Promise<string[]> {
    const where: string[] = [
      '(o.owner = @who OR EXISTS (SELECT 1 FROM grants g WHERE g.uid = o.uid AND g.identity = @who))',
    ];
    const params: Record<string, string | number> = { who: f.accessibleBy };
    if (f.objectType !== undefined) {
      where.push('o.object_type = @objectType');
      params.objectType = f.objectType;
    }
    if (f.state !== undefined) {
      where.push('o.state = @state');
      params.state = f.state;
    }
    if (f.algorithm !== undefined) {
      where.push('o.algorithm = @algorithm');
      params.algorithm = f.algorithm;
    }
    if (f.lengthBits !== undefined) {
      where.push('o.length_bits = @lengthBits');
      params.lengthBits = f.lengthBits;
    }
    if (f.liveOnly === true) where.push('o.state NOT IN (5, 6)');
    if (f.name !== undefined) {
      where.push('EXISTS (SELECT 1 FROM object_names n WHERE n.uid = o.uid AND n.name = @name)');
      params.name = f.name;
    }
    const limit = f.limit !== undefined ? ` LIMIT ${Math.max(0, Math.floor(f.limit))}` : '';
    const rows = this.db
      .prepare<Record<string, string | number>, { uid: string }>(
        `SELECT o.uid FROM objects o WHERE ${where.join(' AND ')} ORDER BY o.created_at, o.uid${limit}`,
      )
      .all(params);
    return Promise.resolve(rows.map((r) => r.uid));
  }

  canAccess(uid: string, identity: string): Promise<boolean> {
    return Promise.resolve(this.stmts.access.get(uid, identity, uid, identity) !== undefined);
  }

  grant(uid: string, identity: string): Promise<void> {
    return this.write(() => this.stmts.grant.run(uid, identity));
  }

  /**
   * Applies `change` atomically inside the shared transaction, at once: later reads see
   * it. It is durable only once `settled()` resolves; callers answer after that.
   */
  private write(change: () => void): Promise<void> {
    if (this.txWaiters === undefined) {
      this.db.exec('BEGIN IMMEDIATE');
      this.txWaiters = [];
      setImmediate(() => this.commit());
    }
    // A nested better-sqlite3 transaction is a SAVEPOINT: a failing change is undone
    // alone and the other writes of this group still commit.
    this.db.transaction(change)();
    return Promise.resolve();
  }

  private commit(): void {
    const waiters = this.txWaiters ?? [];
    this.txWaiters = undefined;
    try {
      this.db.exec('COMMIT');
    } catch (err) {
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
      const e = new HypersealError('HS_ERR_INTERNAL', `key store commit failed: ${(err as Error).message}`);
      for (const w of waiters) w.reject(e);
      return;
    }
    if (!this.fsyncOnCommit) {
      for (const w of waiters) w.resolve();
      return;
    }
    // The event loop keeps executing and committing the next groups while this one
    // reaches the disk (WalFlusher: coalesced fdatasync off the loop).
    this.flusher.flush().then(
      () => {
        for (const w of waiters) w.resolve();
      },
      (err: unknown) => {
        const e = new HypersealError('HS_ERR_INTERNAL', `key store flush failed: ${(err as Error).message}`);
        for (const w of waiters) w.reject(e);
      },
    );
  }

  /** Resolves when every write made so far is committed and on disk. */
  settled(): Promise<void> {
    if (this.txWaiters !== undefined) {
      return new Promise((resolve, reject) => this.txWaiters?.push({ resolve, reject }));
    }
    // A flush running (or due) may have started before our last commit: wait for the next.
    return this.flusher.busy ? this.flusher.flush() : Promise.resolve();
  }

  count(): Promise<number> {
    return Promise.resolve(this.stmts.count.get()?.n ?? 0);
  }

  async close(): Promise<void> {
    await this.settled();
    this.db.close();
  }
}
