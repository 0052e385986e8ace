/**
 * The simulated driver: VMs that exist only as records, for scale tests, demos and
 * hosts without QEMU. Every answer says `simulated: true` so nothing downstream can
 * mistake it for a real VM. Operations are instant and need no timers, so 10,000 VMs
 * cost a Map and a JSON file.
 *
 * Durability: `<dataDir>/sim-vms.json` is a snapshot (rewritten atomically) and
 * `<dataDir>/sim-vms.journal` holds one JSON line per change since it. Rewriting a
 * 10,000-VM snapshot per change would cost megabytes per operation; a journal line costs
 * a few hundred bytes. Changes are group-committed: an operation resolves once a write
 * containing its line is fdatasync'ed, and all operations that arrive while a write is
 * in progress share the next one. When the journal outgrows the snapshot, the snapshot
 * is rewritten and the journal emptied; replaying a journal over a newer snapshot (a crash
 * between the two) is harmless, because every line sets a whole record.
 */
import {
  closeSync,
  existsSync,
  fdatasyncSync,
  ftruncateSync,
  openSync,
  readFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { HypersealError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import type { ConsoleChunk, MigrationOutgoingResponse, VmRuntime, VmRuntimeState, VmSpec } from './api.js';
import { zeroize } from '../crypto/aead.js';
import type { MigrateOutOptions, VmDriver } from './driver.js';
import { consoleChunk, vmNotFound, vmStateConflict } from './driver.js';
import { hardwareDiffers, parseVmSpec } from './spec.js';
import type { ParsedMigration } from './spec.js';
import type { Deks, EncryptionBundle } from './vm-keys.js';
import { Keyring, newDek, newDeks, parseBundle, unwrapDeks, wrapDeks, zeroizeDeks } from './vm-keys.js';

export const SIM_STATE_FILE = 'sim-vms.json';
export const SIM_JOURNAL_FILE = 'sim-vms.journal';
const FORMAT_VERSION = 1;
/** The journal is folded into the snapshot once it has this many lines and more than VMs. */
const MIN_COMPACT_LINES = 1000;

/** States a simulated VM can be in; nothing transitional, since every step is instant. */
type SimState = Extract<VmRuntimeState, 'stopped' | 'running'>;

interface SimVm {
  spec: VmSpec;
  state: SimState;
  /** Wrapped DEKs of an encrypted VM (spec.encryption names the same KEK). */
  bundle?: EncryptionBundle;
}

interface SimFile {
  version: number;
  vms: SimVm[];
}

/** A journal line: the whole record after a change, or its removal. */
type JournalEntry = { put: SimVm } | { del: string };

export class SimDriver implements VmDriver {
  readonly kind = 'sim' as const;
  readonly accel = 'none' as const;
  readonly keyring = new Keyring();
  private readonly vms = new Map<string, SimVm>();
  private readonly snapshotPath: string;
  private readonly journalPath: string;
  private journalFd: number | null = null;
  private journalLines = 0;
  /** Lines not yet handed to a write. */
  private queued: string[] = [];
  /** The write in progress (null when idle) and the one queued behind it. */
  private writing: Promise<void> | null = null;
  private pending: Promise<void> | null = null;
  /** Whether the write in progress has already taken the queued lines. */
  private linesTaken = false;

  private constructor(dataDir: string) {
    this.snapshotPath = join(dataDir, SIM_STATE_FILE);
    this.journalPath = join(dataDir, SIM_JOURNAL_FILE);
  }

  /** Loads the records kept by a previous run (none on a fresh data directory). */
  static open(dataDir: string): SimDriver {
    const driver = new SimDriver(dataDir);
    driver.load();
    return driver;
  }

  async define(spec: VmSpec): Promise<VmRuntime> {
    // Drivers are also called directly (tests, `up`), not only through the HTTP layer.
    const checked = parseVmSpec(spec);
    const vm = this.vms.get(checked.id);
    if (vm && vm.state !== 'stopped' && hardwareDiffers(vm.spec, checked)) {
      throw vmStateConflict(checked.id, vm.state, 'change the hardware of a running VM');
    }
    const bundle = this.bundleForDefine(vm, checked);
    const next: SimVm = { spec: checked, state: vm?.state ?? 'stopped', ...(bundle ? { bundle } : {}) };
    this.vms.set(checked.id, next);
    await this.persist({ put: next });
    return this.runtimeOf(next);
  }

  async remove(id: string): Promise<void> {
    const vm = this.get(id);
    if (vm.state !== 'stopped') throw vmStateConflict(id, vm.state, 'delete a VM that is not stopped');
    this.vms.delete(id);
    await this.persist({ del: id });
  }

  async powerOn(id: string): Promise<VmRuntime> {
    const vm = this.get(id);
    if (vm.bundle && vm.state !== 'running') {
      // What QEMU would need to open the disks: the DEKs, so the KEK must be here and right.
      zeroizeDeks(unwrapDeks(this.keyring.require(vm.bundle.kekRef, id), vm.bundle));
    }
    return this.transition(id, 'running');
  }

  async putKey(ref: string, material: Buffer): Promise<void> {
    for (const vm of this.vms.values()) {
      if (vm.bundle?.kekRef === ref) zeroizeDeks(unwrapDeks(material, vm.bundle));
    }
    this.keyring.put(ref, material);
  }

  async neededKeys(): Promise<string[]> {
    const refs = new Set<string>();
    for (const vm of this.vms.values()) {
      if (vm.bundle && !this.keyring.has(vm.bundle.kekRef)) refs.add(vm.bundle.kekRef);
    }
    return [...refs];
  }

  async encrypt(id: string, kekRef: string): Promise<VmRuntime> {
    const vm = this.stopped(id, 'encrypt');
    if (vm.bundle) throw cryptoConflict(id, 'is already encrypted');
    const kek = this.keyring.require(kekRef, id);
    const deks = newDeks(vm.spec.disks.map((d) => d.id));
    try {
      return await this.commit({
        ...vm,
        spec: { ...vm.spec, encryption: { kekRef } },
        bundle: wrapDeks(kek, kekRef, deks),
      });
    } finally {
      zeroizeDeks(deks);
    }
  }

  async decrypt(id: string): Promise<VmRuntime> {
    const vm = this.stopped(id, 'decrypt');
    if (!vm.bundle) throw cryptoConflict(id, 'is not encrypted');
    // Reading the data needs the DEKs: a VM whose key is gone cannot be decrypted.
    zeroizeDeks(unwrapDeks(this.keyring.require(vm.bundle.kekRef, id), vm.bundle));
    return this.commit({ spec: { ...vm.spec, encryption: null }, state: vm.state });
  }

  async rekey(id: string, kekRef: string, deep: boolean): Promise<VmRuntime> {
    const vm = deep ? this.stopped(id, 'deep-rekey') : this.get(id);
    if (!vm.bundle) throw cryptoConflict(id, 'is not encrypted');
    const oldKek = this.keyring.require(vm.bundle.kekRef, id);
    const newKek = this.keyring.require(kekRef, id);
    const old = unwrapDeks(oldKek, vm.bundle);
    let deks: Deks = old;
    if (deep) {
      deks = newDeks([...old.disks.keys()]);
      zeroizeDeks(old);
    }
    try {
      return await this.commit({
        ...vm,
        spec: { ...vm.spec, encryption: { kekRef } },
        bundle: wrapDeks(newKek, kekRef, deks),
      });
    } finally {
      zeroizeDeks(deks);
    }
  }

  async clone(id: string, spec: VmSpec): Promise<VmRuntime> {
    const source = this.stopped(id, 'clone');
    const target = parseVmSpec(spec);
    if (this.vms.has(target.id)) throw cryptoConflict(target.id, 'already exists');
    if (source.bundle) zeroizeDeks(unwrapDeks(this.keyring.require(source.bundle.kekRef, id), source.bundle));
    let bundle: EncryptionBundle | undefined;
    if (target.encryption) {
      const deks = newDeks(target.disks.map((d) => d.id));
      bundle = wrapDeks(
        this.keyring.require(target.encryption.kekRef, target.id),
        target.encryption.kekRef,
        deks,
      );
      zeroizeDeks(deks);
    }
    return this.commit({ spec: target, state: 'stopped', ...(bundle ? { bundle } : {}) });
  }

  powerOff(id: string): Promise<VmRuntime> {
    return this.transition(id, 'stopped');
  }

  async shutdown(id: string, _timeoutMs: number): Promise<VmRuntime> {
    const vm = this.get(id);
    if (vm.state !== 'running') throw vmStateConflict(id, vm.state, 'shut down');
    // A simulated guest honours the power button at once.
    return this.transition(id, 'stopped');
  }

  async reset(id: string): Promise<VmRuntime> {
    const vm = this.get(id);
    if (vm.state !== 'running') throw vmStateConflict(id, vm.state, 'reset');
    return this.runtimeOf(vm);
  }

  async runtime(id: string): Promise<VmRuntime> {
    return this.runtimeOf(this.get(id));
  }

  async list(): Promise<VmRuntime[]> {
    return Array.from(this.vms.values(), (vm) => this.runtimeOf(vm));
  }

  async console(id: string, offset: number): Promise<ConsoleChunk> {
    const vm = this.get(id);
    const banner = Buffer.from(
      `Hyperseal simulated console: VM ${vm.spec.id} (${vm.spec.name}) runs nothing; ` +
        `this host's driver is 'sim'.\r\n`,
    );
    return consoleChunk(banner, 0, offset);
  }

  /** Records were loaded by open(); simulated VMs "kept running" across the restart. */
  /** Simulated live migration: the record moves, no byte of any stream does. */
  readonly migration = { live: true, encrypted: true };

  async migrationRecord(id: string): Promise<Record<string, unknown>> {
    const vm = this.get(id);
    return { sim: true, ...(vm.bundle ? { bundle: vm.bundle } : {}) };
  }

  async migrateIn(
    spec: VmSpec,
    record: Record<string, unknown>,
    mig: ParsedMigration,
    listenHost: string,
    cold = false,
  ): Promise<{ host: string; port: number }> {
    zeroize(mig.key);
    zeroize(mig.nonce);
    const checked = parseVmSpec(spec);
    if (this.vms.has(checked.id)) throw cryptoConflict(checked.id, 'is already defined on this host');
    const bundle = record.bundle === undefined ? undefined : parseBundle(record.bundle, 'record.bundle');
    if (bundle) zeroizeDeks(unwrapDeks(this.keyring.require(bundle.kekRef, checked.id), bundle));
    await this.commit({ spec: checked, state: cold ? 'stopped' : 'running', ...(bundle ? { bundle } : {}) });
    // Nothing listens: the source's sim driver never connects.
    return { host: listenHost, port: 9 };
  }

  async migrateOut(
    id: string,
    mig: ParsedMigration,
    _peer: { host: string; port: number },
    opts: MigrateOutOptions = {},
  ): Promise<MigrationOutgoingResponse> {
    const cold = opts.cold === true;
    zeroize(mig.key);
    zeroize(mig.nonce);
    const vm = this.get(id);
    if (vm.state !== (cold ? 'stopped' : 'running')) {
      throw vmStateConflict(id, vm.state, cold ? 'migrate it stopped' : 'live-migrate (it must run)');
    }
    this.vms.delete(id);
    await this.persist({ del: id });
    return { bytes: 0, wireBytes: 0, elapsedMs: 0, bytesPerSecond: 0, cipher: mig.cipher };
  }

  /** Nothing is ever half-received here: the VM is either defined or not. */
  async settleIncoming(id: string): Promise<'aborted' | 'absent' | 'committed'> {
    return this.vms.has(id) ? 'committed' : 'absent';
  }

  /** migrateOut never holds a VM here (no stream to lose an ACK of). */
  async resolveOutgoing(id: string, migrationId: string, moved: boolean): Promise<'gone' | 'kept'> {
    if (!this.vms.has(id)) {
      if (moved) return 'gone';
      throw vmNotFound(id);
    }
    if (moved) throw vmStateConflict(id, 'not held for a migration', `end it for migration ${migrationId}`);
    return 'kept';
  }

  async recover(): Promise<void> {}

  async close(): Promise<void> {
    await this.pending?.catch(() => undefined);
    await this.writing?.catch(() => undefined);
    if (this.journalFd !== null) closeSync(this.journalFd);
    this.journalFd = null;
    this.keyring.clear();
  }

  private get(id: string): SimVm {
    const vm = this.vms.get(id);
    if (!vm) throw vmNotFound(id);
    return vm;
  }

  private stopped(id: string, what: string): SimVm {
    const vm = this.get(id);
    if (vm.state !== 'stopped') throw vmStateConflict(id, vm.state, what);
    return vm;
  }

  private async commit(next: SimVm): Promise<VmRuntime> {
    this.vms.set(next.spec.id, next);
    await this.persist({ put: next });
    return this.runtimeOf(next);
  }

  /**
   * The bundle a define leaves: a new encrypted VM gets fresh DEKs; an existing one keeps
   * its own (define never encrypts, decrypts or rekeys), with keys added for new disks
   * (which needs its KEK) and dropped for removed ones.
   */
  private bundleForDefine(vm: SimVm | undefined, spec: VmSpec): EncryptionBundle | undefined {
    const want = spec.encryption?.kekRef;
    if (vm && (vm.bundle?.kekRef ?? undefined) !== want) {
      throw cryptoConflict(
        spec.id,
        want === undefined
          ? 'is encrypted: decrypt it rather than define it plain'
          : vm.bundle
            ? `is encrypted under ${vm.bundle.kekRef}, not ${want}: rekey it`
            : 'is plain: encrypt it rather than define it encrypted',
      );
    }
    if (want === undefined) return undefined;
    const ids = spec.disks.map((d) => d.id);
    const kept = vm?.bundle;
    const missing = ids.filter((d) => kept?.disks[d] === undefined);
    if (kept && missing.length === 0 && Object.keys(kept.disks).length === ids.length) return kept;
    const kek = this.keyring.require(want, spec.id);
    if (!kept) {
      const deks = newDeks(ids);
      try {
        return wrapDeks(kek, want, deks);
      } finally {
        zeroizeDeks(deks);
      }
    }
    const deks = unwrapDeks(kek, kept);
    try {
      const disks = new Map<string, Buffer>();
      for (const d of ids) disks.set(d, deks.disks.get(d) ?? newDek());
      return wrapDeks(kek, want, { home: deks.home, disks });
    } finally {
      zeroizeDeks(deks);
    }
  }

  private runtimeOf(vm: SimVm): VmRuntime {
    return runtimeOf(vm, vm.bundle !== undefined && !this.keyring.has(vm.bundle.kekRef));
  }

  private async transition(id: string, state: SimState): Promise<VmRuntime> {
    const vm = this.get(id);
    if (vm.state === state) return this.runtimeOf(vm); // idempotent: no write needed
    vm.state = state;
    await this.persist({ put: vm });
    return this.runtimeOf(vm);
  }

  /**
   * Queues the line for `entry` (serialized now, so later changes to the record do not
   * leak into it) and resolves once it is on disk. At most one write runs; callers
   * arriving during it share the next one.
   */
  private persist(entry: JournalEntry): Promise<void> {
    this.queued.push(JSON.stringify(entry) + '\n');
    if (this.pending) return this.pending;
    if (this.writing && !this.linesTaken) return this.writing;
    if (!this.writing) return this.startWrite();
    this.pending = this.writing
      .catch(() => undefined)
      .then(() => {
        this.pending = null;
        return this.startWrite();
      });
    return this.pending;
  }

  private startWrite(): Promise<void> {
    this.linesTaken = false;
    const writing = this.write().finally(() => {
      if (this.writing === writing) this.writing = null;
    });
    this.writing = writing;
    return writing;
  }

  private async write(): Promise<void> {
    // Yield once so that operations issued in the same tick join this write.
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.linesTaken = true;
    const lines = this.queued;
    this.queued = [];
    try {
      this.journalFd ??= openSync(this.journalPath, 'a', 0o600);
      writeSync(this.journalFd, lines.join(''));
      fdatasyncSync(this.journalFd);
      this.journalLines += lines.length;
      if (this.journalLines >= Math.max(MIN_COMPACT_LINES, this.vms.size)) this.compact();
    } catch (cause) {
      throw new HypersealError(
        'HS_ERR_AGENT_DRIVER',
        `cannot save simulated VMs to ${this.journalPath}`,
        undefined,
        { cause },
      );
    }
  }

  /** Snapshot first, then empty the journal: a crash in between replays it harmlessly. */
  private compact(): void {
    const file: SimFile = { version: FORMAT_VERSION, vms: Array.from(this.vms.values()) };
    writeFileAtomic(this.snapshotPath, JSON.stringify(file), 0o600);
    if (this.journalFd !== null) {
      ftruncateSync(this.journalFd, 0);
      fdatasyncSync(this.journalFd);
    }
    this.journalLines = 0;
  }

  private load(): void {
    if (existsSync(this.snapshotPath)) {
      let file: unknown;
      try {
        file = JSON.parse(readFileSync(this.snapshotPath, 'utf8'));
      } catch (cause) {
        throw new HypersealError('HS_ERR_CONFIG', `${this.snapshotPath} is not readable JSON`, undefined, {
          cause,
        });
      }
      const f = file as Partial<SimFile> | null;
      if (typeof f !== 'object' || f === null || f.version !== FORMAT_VERSION || !Array.isArray(f.vms)) {
        throw new HypersealError(
          'HS_ERR_CONFIG',
          `${this.snapshotPath} is not a version ${FORMAT_VERSION} sim VM file`,
        );
      }
      for (const [i, raw] of f.vms.entries()) this.apply({ put: raw as SimVm }, `vms[${i}]`);
    }
    if (existsSync(this.journalPath)) {
      const lines = readFileSync(this.journalPath, 'utf8').split('\n');
      // The last element is '' after a complete final line, or a line torn by a crash
      // mid-write, which was never acknowledged: either way not replayed.
      const complete = lines.slice(0, -1);
      for (const [i, line] of complete.entries()) {
        let entry: unknown;
        try {
          entry = JSON.parse(line);
        } catch (cause) {
          throw new HypersealError('HS_ERR_CONFIG', `${this.journalPath}:${i + 1} is not JSON`, undefined, {
            cause,
          });
        }
        this.apply(entry as JournalEntry, `line ${i + 1}`);
      }
      this.journalLines = complete.length;
      if (lines.at(-1) !== '') {
        // Cut the torn tail, or the next append would glue a new line onto it.
        const keep = complete.reduce((n, l) => n + Buffer.byteLength(l) + 1, 0);
        const fd = openSync(this.journalPath, 'r+');
        try {
          ftruncateSync(fd, keep);
          fdatasyncSync(fd);
        } finally {
          closeSync(fd);
        }
      }
    }
  }

  /** Applies one stored change, re-validated: a hand-edited file must not smuggle in what the API refuses. */
  private apply(entry: JournalEntry, where: string): void {
    const bad = (what: string, cause?: unknown): HypersealError =>
      new HypersealError('HS_ERR_CONFIG', `simulated VM store, ${where}: ${what}`, undefined, { cause });
    if (typeof entry !== 'object' || entry === null) throw bad('not an object');
    if ('del' in entry) {
      if (typeof entry.del !== 'string') throw bad('del is not an id');
      this.vms.delete(entry.del);
      return;
    }
    const rec = (entry as { put?: Partial<SimVm> }).put;
    const state = rec?.state;
    if (state !== 'stopped' && state !== 'running') throw bad('no valid state');
    let spec: VmSpec;
    let bundle: EncryptionBundle | undefined;
    try {
      spec = parseVmSpec(rec?.spec);
      if (rec?.bundle !== undefined) bundle = parseBundle(rec.bundle, where);
    } catch (cause) {
      throw bad('invalid spec', cause);
    }
    if ((bundle?.kekRef ?? null) !== (spec.encryption?.kekRef ?? null))
      throw bad('encryption and bundle differ');
    this.vms.set(spec.id, { spec, state, ...(bundle ? { bundle } : {}) });
  }
}

function runtimeOf(vm: SimVm, locked: boolean): VmRuntime {
  return {
    id: vm.spec.id,
    state: vm.state,
    simulated: true,
    encryption: vm.bundle ? { kekRef: vm.bundle.kekRef } : null,
    locked,
  };
}

function cryptoConflict(id: string, what: string): HypersealError {
  return new HypersealError('HS_ERR_CONFLICT', `VM ${id} ${what}`, { vmId: id });
}
