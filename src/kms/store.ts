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
  /** Resolves once every write made so far is durable; answers wait for it. */
  settled(): Promise<void>;
  close(): Promise<void>;
}
