/**
 * The key server's object store. One interface, so the embedded SQLite file can later be
 * swapped for PostgreSQL (several key servers sharing one database) without touching the
 * KMIP engine. Key material is sealed under the master key with the object's identity as
 * associated data; everything else is plain metadata.
 */
import type { KmipAttribute } from '../kmip/attributes.js';

export interface ManagedObject {
  uid: string;
  /** The identity (client certificate CN) that created it. */
  owner: string;
  objectType: number;
  state: number;
  algorithm: number;
  lengthBits: number;
  /** Every other attribute (names, usage mask, dates, custom x- attributes, …). */
  attributes: KmipAttribute[];
  /** Plaintext key material, in memory only; undefined once the object is destroyed. */
  material: Buffer | undefined;
}

export interface LocateFilter {
  /** Only objects this identity owns or was granted. */
  accessibleBy: string;
  objectType?: number;
  state?: number;
  algorithm?: number;
  lengthBits?: number;
  name?: string;
  /** Leave out Destroyed and Destroyed Compromised objects. */
  liveOnly?: boolean;
  limit?: number;
}

export interface ObjectUpdate {
  state?: number;
  attributes?: KmipAttribute[];
  /** Erase the sealed key material (Destroy). */
  destroyMaterial?: boolean;
}

/** A whole object as a backup carries it: material in clear (in memory only), grants, creation time. */
export interface ExportedObject extends ManagedObject {
  createdAt: number;
  grants: string[];
}

/** What the store remembers of the last backup taken of it (written by `kms backup`). */
export interface BackupMarker {
  /** When the backup file was completed (ms since the epoch). */
  at: number;
  /** Creation time of the newest object the backup holds; null when it held none. */
  newestObjectAt: number | null;
  objects: number;
}

export interface StoreBackupState {
  lastBackup: BackupMarker | null;
  /** Creation time of the newest object in the store; null when empty. */
  newestObjectAt: number | null;
  objects: number;
}

export interface ObjectStore {
  insert(obj: ManagedObject): Promise<void>;
  /**
   * The object, with its material unsealed unless `withMaterial` is false; undefined if
   * absent, or if `accessibleBy` is given and that identity neither owns nor was granted it.
   */
  get(uid: string, withMaterial?: boolean, accessibleBy?: string): Promise<ManagedObject | undefined>;
  update(uid: string, change: ObjectUpdate): Promise<void>;
  locate(filter: LocateFilter): Promise<string[]>;
  canAccess(uid: string, identity: string): Promise<boolean>;
  grant(uid: string, identity: string): Promise<void>;
  count(): Promise<number>;
  /** Every object with its material unsealed and its grants, in creation order (backup). */
  exportObjects(): Promise<ExportedObject[]>;
  /** Inserts exported objects as they were (same ids, times, grants), in one transaction. */
  importObjects(objects: readonly ExportedObject[]): Promise<void>;
  backupState(): Promise<StoreBackupState>;
  recordBackup(marker: BackupMarker): Promise<void>;
  /**
   * Re-seals every object under `newKey` and makes it the store's master key, atomically:
   * after a crash the store opens with the old key or the new one, never with neither.
   */
  rotateMasterKey(newKey: Buffer): Promise<void>;
  /** A random id given to the store when it was created. */
  storeId(): Promise<string>;
  /** Store-wide settings (e.g. the CA fingerprint shared by replicas). */
  getMeta(key: string): Promise<Buffer | undefined>;
  setMeta(key: string, value: Buffer): Promise<void>;
  /** Resolves once every write made so far is durable; answers wait for it. */
  settled(): Promise<void>;
  close(): Promise<void>;
}
