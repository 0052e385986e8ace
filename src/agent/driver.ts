/**
 * What the agent needs from a hypervisor: one narrow interface, two implementations
 * (sim-driver.ts: in memory, for scale tests and demos; qemu-driver.ts: real QEMU).
 * The HTTP server only ever sees this interface, so both behave the same to the manager.
 *
 * State rules every driver follows (the manager relies on them):
 * - define() creates or updates a VM; hardware changes need it stopped (HS_ERR_CONFLICT).
 * - remove() needs it stopped; powerOn()/powerOff() are idempotent;
 *   shutdown()/reset() of a stopped VM are HS_ERR_CONFLICT.
 * - an unknown id is HS_ERR_NOT_FOUND.
 */
import { join } from 'node:path';
import { HypersealError } from '../errors.js';
import type { ConsoleChunk, DriverKind, MigrationOutgoingResponse, VmRuntime, VmSpec } from './api.js';
import type { ParsedMigration } from './spec.js';
import type { Keyring } from './vm-keys.js';

/** How a VM leaves its host (migrateOut). */
export interface MigrateOutOptions {
  /** A stopped VM: its files go through the channel instead of QEMU's stream. */
  cold?: boolean;
  /** Live, local disks: mirror them through the disk tunnel to this peer before the memory. */
  nbdPeer?: { host: string; port: number };
  /** Cold, local disks: these disks' images go through the channel too, then leave this host. */
  copyDisks?: readonly string[];
}

export interface VmDriver {
  readonly kind: DriverKind;
  /** What this driver runs VMs with (facts report it). */
  readonly accel: 'kvm' | 'tcg' | 'none';
  /** Where it keeps VM files, when it keeps any: the datastores the agent reports. */
  readonly datastores?: readonly Datastore[];
  /** Defines a VM or replaces the spec of a stopped one (creating missing disks). */
  define(spec: VmSpec): Promise<VmRuntime>;
  /** Forgets a stopped VM and deletes its files. */
  remove(id: string): Promise<void>;
  powerOn(id: string): Promise<VmRuntime>;
  /** Hard power-off (QEMU quits at once). */
  powerOff(id: string): Promise<VmRuntime>;
  /** Presses the ACPI power button and waits up to timeoutMs for the guest to stop. */
  shutdown(id: string, timeoutMs: number): Promise<VmRuntime>;
  reset(id: string): Promise<VmRuntime>;
  runtime(id: string): Promise<VmRuntime>;
  list(): Promise<VmRuntime[]>;
  /** Serial console output from byte `offset` on, at most CONSOLE_CHUNK_BYTES of it. */
  console(id: string, offset: number): Promise<ConsoleChunk>;
  /** KEKs the manager pushed, in memory only. */
  readonly keyring: Keyring;
  /**
   * Keeps a KEK after checking it against every VM whose bundle names `ref`
   * (HS_ERR_KEY_MISMATCH when it does not unwrap their DEKs: nothing is kept then).
   */
  putKey(ref: string, material: Buffer): Promise<void>;
  /** KEK refs that encrypted VMs here name and the keyring lacks. */
  neededKeys(): Promise<string[]>;
  /** Encrypts a stopped plain VM with new DEKs under `kekRef` (held): copy, then atomic swap. */
  encrypt(id: string, kekRef: string): Promise<VmRuntime>;
  /** Decrypts a stopped encrypted VM (its KEK held): copy, then atomic swap. */
  decrypt(id: string): Promise<VmRuntime>;
  /**
   * Shallow (deep=false): the DEKs re-wrapped under `kekRef`, allowed while running.
   * Deep: new DEKs and the data re-encrypted, VM stopped. Both KEKs must be held.
   */
  rekey(id: string, kekRef: string, deep: boolean): Promise<VmRuntime>;
  /** Copies stopped VM `id` to the new VM `spec` (encrypted under its own KEK when spec.encryption). */
  clone(id: string, spec: VmSpec): Promise<VmRuntime>;
  /** Live migration (absent: this driver cannot migrate); `encrypted`: it can use aes-256-gcm. */
  readonly migration?: { live: boolean; encrypted: boolean };
  /** Source: the VM's record for the destination (sealed spec and wrapped DEKs, no key). */
  migrationRecord?(id: string): Promise<Record<string, unknown>>;
  /** Destination: defines the VM from the source's record, starts QEMU -incoming, listens. */
  migrateIn?(
    spec: VmSpec,
    record: Record<string, unknown>,
    migration: ParsedMigration,
    listenHost: string,
    cold?: boolean,
    copyDisks?: boolean,
  ): Promise<{ host: string; port: number; nbd?: { host: string; port: number } }>;
  /** Source: streams the running VM to `peer`; on success the VM is gone from this host. */
  migrateOut?(
    id: string,
    migration: ParsedMigration,
    peer: { host: string; port: number },
    opts?: MigrateOutOptions,
  ): Promise<MigrationOutgoingResponse>;
  /**
   * Destination: drops incoming migration `migrationId` of VM `id` unless it was
   * acknowledged; an acknowledged one is awaited until the VM runs here or failed to.
   * `committed`: this host keeps the VM. Idempotent.
   */
  settleIncoming?(id: string, migrationId: string): Promise<'aborted' | 'absent' | 'committed'>;
  /**
   * Source, once the destination answered: `moved` ends the VM here (held paused since its
   * stream went whole), otherwise it resumes. Idempotent; an unknown VM counts as gone.
   */
  resolveOutgoing?(id: string, migrationId: string, moved: boolean): Promise<'gone' | 'kept'>;
  /** After an agent restart: re-attaches VMs that kept running. Safe to call twice. */
  recover(): Promise<void>;
  /** Releases connections and files; running VMs keep running. */
  close(): Promise<void>;
}

/** A directory for VM files that the agent offers the manager (reported in facts). */
export interface Datastore {
  name: string;
  path: string;
}

/** One datastore named 'local' under the data directory: what a fresh agent offers. */
export function defaultDatastores(dataDir: string): Datastore[] {
  return [{ name: 'local', path: join(dataDir, 'datastore') }];
}

/** Console answers are bounded so one request cannot make the agent read a huge log. */
export const CONSOLE_CHUNK_BYTES = 64 * 1024;

export function vmNotFound(id: string): HypersealError {
  return new HypersealError('HS_ERR_NOT_FOUND', `no VM ${JSON.stringify(id)} on this host`, { vmId: id });
}

export function vmStateConflict(id: string, state: string, wanted: string): HypersealError {
  return new HypersealError('HS_ERR_CONFLICT', `VM ${id} is ${state}: cannot ${wanted}`, {
    vmId: id,
    state,
  });
}

/**
 * Cuts `bytes` (the log from byte `base` on) into a ConsoleChunk starting at `offset`,
 * at most CONSOLE_CHUNK_BYTES long and ending on a UTF-8 character boundary, so a
 * multi-byte character split across two reads is sent whole in the second rather than
 * as two U+FFFD. An offset past the end means the log was recreated (QEMU truncates it at
 * each power-on): the chunk then starts at `base` again, and its `offset` says so.
 */
export function consoleChunk(bytes: Buffer, base: number, offset: number): ConsoleChunk {
  const end = base + bytes.length;
  const start = offset > end || offset < base ? base : offset;
  const window = bytes.subarray(start - base, Math.min(end, start + CONSOLE_CHUNK_BYTES) - base);
  const length = utf8Boundary(window);
  return { offset: start, next: start + length, data: window.subarray(0, length).toString('utf8') };
}

/** Length of the longest prefix of `b` that does not end inside a UTF-8 sequence. */
function utf8Boundary(b: Buffer): number {
  // Look back at most 3 bytes for the lead byte of the last sequence.
  for (let i = b.length - 1; i >= 0 && i >= b.length - 4; i--) {
    const byte = b[i] ?? 0;
    if ((byte & 0xc0) === 0x80) continue; // continuation byte
    const need = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1;
    return b.length - i >= need ? b.length : i;
  }
  return b.length; // not UTF-8 at all: the decoder's U+FFFD is the honest answer
}

/**
 * Runs operations on the same VM one after another (a power-on racing a define or a
 * delete must not interleave), while different VMs proceed in parallel. The manager
 * already serializes per VM; this protects the agent from a retry overlapping the
 * original request.
 */
export class VmLocks {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(id: string, op: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(id) ?? Promise.resolve();
    const next = prev.then(op, op);
    const tail = next.catch(() => undefined);
    this.tails.set(id, tail);
    // Forget idle VMs so 10,000 defined VMs do not keep 10,000 settled promises.
    void tail.then(() => {
      if (this.tails.get(id) === tail) this.tails.delete(id);
    });
    return next;
  }
}

/** Wraps a driver so that every per-VM operation holds that VM's lock. */
export function serializedDriver(driver: VmDriver): VmDriver {
  const locks = new VmLocks();
  return {
    kind: driver.kind,
    accel: driver.accel,
    ...(driver.datastores !== undefined ? { datastores: driver.datastores } : {}),
    keyring: driver.keyring,
    putKey: (ref, material) => driver.putKey(ref, material),
    neededKeys: () => driver.neededKeys(),
    encrypt: (id, kekRef) => locks.run(id, () => driver.encrypt(id, kekRef)),
    decrypt: (id) => locks.run(id, () => driver.decrypt(id)),
    rekey: (id, kekRef, deep) => locks.run(id, () => driver.rekey(id, kekRef, deep)),
    // The clone's id is new: holding it too keeps a concurrent define of that id out.
    clone: (id, spec) => locks.run(id, () => locks.run(spec.id, () => driver.clone(id, spec))),
    define: (spec) => locks.run(spec.id, () => driver.define(spec)),
    remove: (id) => locks.run(id, () => driver.remove(id)),
    powerOn: (id) => locks.run(id, () => driver.powerOn(id)),
    powerOff: (id) => locks.run(id, () => driver.powerOff(id)),
    shutdown: (id, timeoutMs) => locks.run(id, () => driver.shutdown(id, timeoutMs)),
    reset: (id) => locks.run(id, () => driver.reset(id)),
    // Reads do not wait behind a slow shutdown: they report the state as it is.
    runtime: (id) => driver.runtime(id),
    list: () => driver.list(),
    console: (id, offset) => driver.console(id, offset),
    recover: () => driver.recover(),
    close: () => driver.close(),
    ...(driver.migration !== undefined ? { migration: driver.migration } : {}),
    ...(driver.migrationRecord ? { migrationRecord: (id: string) => driver.migrationRecord!(id) } : {}),
    ...(driver.migrateIn
      ? {
          migrateIn: (
            spec: VmSpec,
            record: Record<string, unknown>,
            m: ParsedMigration,
            host: string,
            cold?: boolean,
            copyDisks?: boolean,
          ) => locks.run(spec.id, () => driver.migrateIn!(spec, record, m, host, cold, copyDisks)),
        }
      : {}),
    ...(driver.migrateOut
      ? {
          migrateOut: (
            id: string,
            m: ParsedMigration,
            peer: { host: string; port: number },
            opts?: MigrateOutOptions,
          ) => locks.run(id, () => driver.migrateOut!(id, m, peer, opts)),
        }
      : {}),
    ...(driver.settleIncoming
      ? { settleIncoming: (id: string, m: string) => locks.run(id, () => driver.settleIncoming!(id, m)) }
      : {}),
    ...(driver.resolveOutgoing
      ? {
          resolveOutgoing: (id: string, m: string, moved: boolean) =>
            locks.run(id, () => driver.resolveOutgoing!(id, m, moved)),
        }
      : {}),
  };
}
