/**
 * ObjectStore on PostgreSQL, so that several key servers (`hyperseal kms serve --store
 * postgres://…` on different machines) serve the same keys. Same model as the SQLite
 * store: metadata in clear, key material sealed under the master key with the object's
 * identity as associated data, an HMAC check value that tells a wrong master key from a
 * damaged record. Every replica must therefore run with the same master key.
 *
 * Tables are prefixed `kms_` so the key store can share a database (not a schema owner)
 * with nothing else by accident. Each write is its own transaction and is committed
 * (PostgreSQL's durability: synchronous_commit) before it resolves, so `settled()` has
 * nothing to wait for. Requests from two key servers are not serialised against each
 * other: two clients changing the same object's state at the same instant on two servers
 * both succeed in turn (last write wins), as with any replicated key manager.
 */
import { randomUUID } from 'node:crypto';
import { seal } from '../crypto/aead.js';
import { HypersealError } from '../errors.js';
import type { Db, SqlParam } from '../store/db.js';
import { openDatabase, parseDatabaseTarget } from '../store/open.js';
import { masterKeyCheck, verifyMasterKey } from './master-key.js';
import {
  BACKUP_MARKER_KEY,
  MASTER_KEY_CHECK_KEY,
  encodeAttributeBlob,
  materialContext,
  namesOf,
  objectFromRow,
} from './sqlite-store.js';
import type { StoredObjectRow } from './sqlite-store.js';
import type {
  BackupMarker,
  ExportedObject,
  LocateFilter,
  ManagedObject,
  ObjectStore,
  ObjectUpdate,
  StoreBackupState,
} from './store.js';

const SCHEMA = [
  `CREATE TABLE IF NOT EXISTS kms_meta (key TEXT PRIMARY KEY, value BYTEA NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS kms_objects (
    uid TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    object_type INTEGER NOT NULL,
    state INTEGER NOT NULL,
    algorithm INTEGER NOT NULL,
    length_bits INTEGER NOT NULL,
    attributes BYTEA NOT NULL,
    sealed_material BYTEA,
    created_at BIGINT NOT NULL
  )`,
  `CREATE TABLE IF NOT EXISTS kms_object_names (uid TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (uid, name))`,
  `CREATE INDEX IF NOT EXISTS kms_object_names_by_name ON kms_object_names (name)`,
  `CREATE INDEX IF NOT EXISTS kms_objects_by_owner ON kms_objects (owner, state)`,
  `CREATE TABLE IF NOT EXISTS kms_grants (uid TEXT NOT NULL, identity TEXT NOT NULL, PRIMARY KEY (uid, identity))`,
];

type Row = StoredObjectRow;

/** Creation times must be unique-ish and increasing per server, as in SQLite (ms). */
function nowMs(): number {
  return Date.now();
}

export class PostgresObjectStore implements ObjectStore {
  private constructor(
    private readonly db: Db,
    private masterKey: Buffer,
  ) {}

  /** Connects, creates the tables when new, and refuses a master key that is not the store's. */
  static async open(
    url: string,
    masterKey: Buffer,
    masterKeyWhere: string,
    opts: { replaceKey?: boolean } = {},
  ): Promise<PostgresObjectStore> {
    if (parseDatabaseTarget(url).kind !== 'postgres') {
      throw new HypersealError(
        'HS_ERR_INVALID_ARGUMENT',
        'a key store other than the data directory is a PostgreSQL URL: postgres://user:password@host:port/database',
      );
    }
    const db = await openDatabase(url, { maxConnections: 4 });
    try {
      await db.transaction(async (tx) => {
        // Two replicas starting at once on a new database: one creates, the other waits.
        await tx.exec(`SELECT pg_advisory_xact_lock(5696)`);
        for (const sql of SCHEMA) await tx.exec(sql);
        const existing = await tx.one<{ value: Buffer }>(`SELECT value FROM kms_meta WHERE key = $1`, [
          MASTER_KEY_CHECK_KEY,
        ]);
        if (existing === undefined) {
          await tx.run(`INSERT INTO kms_meta (key, value) VALUES ($1, $2), ($3, $4)`, [
            MASTER_KEY_CHECK_KEY,
            masterKeyCheck(masterKey),
            'store_id',
            Buffer.from(randomUUID()),
          ]);
        } else if (opts.replaceKey === true) {
          // A restore (--force): the objects are about to be replaced under this key.
          await tx.run(`UPDATE kms_meta SET value = $1 WHERE key = $2`, [
            masterKeyCheck(masterKey),
            MASTER_KEY_CHECK_KEY,
          ]);
        } else {
          verifyMasterKey(masterKey, Buffer.from(existing.value), masterKeyWhere);
        }
      });
    } catch (err) {
      await db.close();
      throw err;
    }
    return new PostgresObjectStore(db, masterKey);
  }

  async insert(obj: ManagedObject): Promise<void> {
    await this.insertMany([{ ...obj, createdAt: nowMs(), grants: [] }]);
  }

  private async insertMany(objects: readonly ExportedObject[], replace = false): Promise<void> {
    await this.db.transaction(async (tx) => {
      if (replace) {
        await tx.exec(`DELETE FROM kms_grants; DELETE FROM kms_object_names; DELETE FROM kms_objects`);
      }
      for (const obj of objects) {
        const sealed =
          obj.material === undefined ? null : seal(this.masterKey, obj.material, materialContext(obj));
        await tx.run(
          `INSERT INTO kms_objects (uid, owner, object_type, state, algorithm, length_bits, attributes, sealed_material, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
          [
            obj.uid,
            obj.owner,
            obj.objectType,
            obj.state,
            obj.algorithm,
            obj.lengthBits,
            encodeAttributeBlob(obj.attributes),
            sealed,
            obj.createdAt,
          ],
        );
        for (const name of new Set(namesOf(obj.attributes))) {
          await tx.run(`INSERT INTO kms_object_names (uid, name) VALUES ($1, $2)`, [obj.uid, name]);
        }
        for (const who of obj.grants) {
          await tx.run(`INSERT INTO kms_grants (uid, identity) VALUES ($1, $2) ON CONFLICT DO NOTHING`, [
            obj.uid,
            who,
          ]);
        }
      }
    });
  }

  async get(uid: string, withMaterial = true, accessibleBy?: string): Promise<ManagedObject | undefined> {
    const row = await this.db.one<Row>(`SELECT * FROM kms_objects WHERE uid = $1`, [uid]);
    if (row === undefined) return undefined;
    if (
      accessibleBy !== undefined &&
      row.owner !== accessibleBy &&
      !(await this.granted(uid, accessibleBy))
    ) {
      return undefined;
    }
    return this.unsealRow(row, withMaterial);
  }

  private async granted(uid: string, identity: string): Promise<boolean> {
    return (
      (await this.db.one(`SELECT 1 AS ok FROM kms_grants WHERE uid = $1 AND identity = $2`, [
        uid,
        identity,
      ])) !== undefined
    );
  }

  private unsealRow(row: Row, withMaterial: boolean): ManagedObject {
    return objectFromRow(row, this.masterKey, withMaterial);
  }

  async update(uid: string, change: ObjectUpdate): Promise<void> {
    await this.db.transaction(async (tx) => {
      if (change.state !== undefined) {
        await tx.run(`UPDATE kms_objects SET state = $1 WHERE uid = $2`, [change.state, uid]);
      }
      if (change.attributes !== undefined) {
        await tx.run(`UPDATE kms_objects SET attributes = $1 WHERE uid = $2`, [
          encodeAttributeBlob(change.attributes),
          uid,
        ]);
        await tx.run(`DELETE FROM kms_object_names WHERE uid = $1`, [uid]);
        for (const name of new Set(namesOf(change.attributes))) {
          await tx.run(`INSERT INTO kms_object_names (uid, name) VALUES ($1, $2)`, [uid, name]);
        }
      }
      if (change.destroyMaterial === true) {
        await tx.run(`UPDATE kms_objects SET sealed_material = NULL WHERE uid = $1`, [uid]);
      }
    });
  }

  async locate(f: LocateFilter): Promise<string[]> {
    const params: SqlParam[] = [f.accessibleBy];
    const where: string[] = [
      '(o.owner = $1 OR EXISTS (SELECT 1 FROM kms_grants g WHERE g.uid = o.uid AND g.identity = $1))',
    ];
    const add = (sql: string, value: SqlParam): void => {
      params.push(value);
      where.push(sql.replace('?', `$${params.length}`));
    };
    if (f.objectType !== undefined) add('o.object_type = ?', f.objectType);
    if (f.state !== undefined) add('o.state = ?', f.state);
    if (f.algorithm !== undefined) add('o.algorithm = ?', f.algorithm);
    if (f.lengthBits !== undefined) add('o.length_bits = ?', f.lengthBits);
    if (f.liveOnly === true) where.push('o.state NOT IN (5, 6)');
    if (f.name !== undefined) {
      add('EXISTS (SELECT 1 FROM kms_object_names n WHERE n.uid = o.uid AND n.name = ?)', f.name);
    }
    const limit = f.limit !== undefined ? ` LIMIT ${Math.max(0, Math.floor(f.limit))}` : '';
    const rows = await this.db.query<{ uid: string }>(
      `SELECT o.uid FROM kms_objects o WHERE ${where.join(' AND ')} ORDER BY o.created_at, o.uid${limit}`,
      params,
    );
    return rows.map((r) => r.uid);
  }

  async canAccess(uid: string, identity: string): Promise<boolean> {
    const row = await this.db.one(
      `SELECT 1 AS ok FROM kms_objects WHERE uid = $1 AND owner = $2
       UNION SELECT 1 FROM kms_grants WHERE uid = $1 AND identity = $2`,
      [uid, identity],
    );
    return row !== undefined;
  }

  async grant(uid: string, identity: string): Promise<void> {
    await this.db.run(`INSERT INTO kms_grants (uid, identity) VALUES ($1, $2) ON CONFLICT DO NOTHING`, [
      uid,
      identity,
    ]);
  }

  async count(): Promise<number> {
    return Number((await this.db.one<{ n: number }>(`SELECT count(*)::int AS n FROM kms_objects`))?.n ?? 0);
  }

  async exportObjects(): Promise<ExportedObject[]> {
    const rows = await this.db.query<Row>(`SELECT * FROM kms_objects ORDER BY created_at, uid`);
    const grants = await this.db.query<{ uid: string; identity: string }>(
      `SELECT uid, identity FROM kms_grants ORDER BY identity`,
    );
    const byUid = new Map<string, string[]>();
    for (const g of grants) byUid.set(g.uid, [...(byUid.get(g.uid) ?? []), g.identity]);
    return rows.map((row) => ({
      ...this.unsealRow(row, true),
      createdAt: Number(row.created_at),
      grants: byUid.get(row.uid) ?? [],
    }));
  }

  importObjects(objects: readonly ExportedObject[]): Promise<void> {
    // A restore: whatever was there goes, in the same transaction.
    return this.insertMany(objects, true);
  }

  async backupState(): Promise<StoreBackupState> {
    const agg = await this.db.one<{ n: number; newest: number | null }>(
      `SELECT count(*)::int AS n, max(created_at) AS newest FROM kms_objects`,
    );
    const marker = await this.getMeta(BACKUP_MARKER_KEY);
    return {
      lastBackup: marker === undefined ? null : (JSON.parse(marker.toString('utf8')) as BackupMarker),
      newestObjectAt: agg?.newest === null || agg?.newest === undefined ? null : Number(agg.newest),
      objects: Number(agg?.n ?? 0),
    };
  }

  recordBackup(marker: BackupMarker): Promise<void> {
    return this.setMeta(BACKUP_MARKER_KEY, Buffer.from(JSON.stringify(marker)));
  }

  async rotateMasterKey(newKey: Buffer): Promise<void> {
    await this.db.transaction(async (tx) => {
      // Every replica's writes wait: no object can be sealed under the old key meanwhile.
      await tx.exec(`LOCK TABLE kms_objects IN EXCLUSIVE MODE`);
      const rows = await tx.query<Row>(`SELECT * FROM kms_objects WHERE sealed_material IS NOT NULL`);
      for (const row of rows) {
        const material = this.unsealRow(row, true).material;
        if (material === undefined) continue;
        await tx.run(`UPDATE kms_objects SET sealed_material = $1 WHERE uid = $2`, [
          seal(newKey, material, materialContext(this.unsealRow(row, false))),
          row.uid,
        ]);
        material.fill(0);
      }
      await tx.run(`UPDATE kms_meta SET value = $1 WHERE key = $2`, [
        masterKeyCheck(newKey),
        MASTER_KEY_CHECK_KEY,
      ]);
    });
    this.masterKey = newKey;
  }

  async storeId(): Promise<string> {
    return (await this.getMeta('store_id'))?.toString('utf8') ?? '';
  }

  async getMeta(key: string): Promise<Buffer | undefined> {
    const row = await this.db.one<{ value: Buffer }>(`SELECT value FROM kms_meta WHERE key = $1`, [key]);
    return row === undefined ? undefined : Buffer.from(row.value);
  }

  async setMeta(key: string, value: Buffer): Promise<void> {
    await this.db.run(
      `INSERT INTO kms_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`,
      [key, value],
    );
  }

  settled(): Promise<void> {
    return Promise.resolve();
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}
