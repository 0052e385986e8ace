/**
 * The simulated driver: VMs that exist only as records, for scale tests, demos and
 * hosts without QEMU. Every answer says `simulated: true` so nothing downstream can
 * mistake it for a real VM. Operations are instant and need no timers, so 10,000 VMs
 * cost a Map and one JSON file.
 *
 * Durability: the records live in `<dataDir>/sim-vms.json`, rewritten atomically. Writes
 * are group-committed: an operation resolves only once a write that includes it is on
 * disk, and all operations that arrive while a write is in progress share the next one,
 * so 10,000 concurrent defines cost a handful of writes, not 10,000.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { HypersealError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import type { ConsoleChunk, VmRuntime, VmRuntimeState, VmSpec } from './api.js';
import type { VmDriver } from './driver.js';
import { consoleChunk, vmNotFound, vmStateConflict } from './driver.js';
import { hardwareDiffers, parseVmSpec } from './spec.js';

export const SIM_STATE_FILE = 'sim-vms.json';
const FORMAT_VERSION = 1;

/** States a simulated VM can be in; nothing transitional, since every step is instant. */
type SimState = Extract<VmRuntimeState, 'stopped' | 'running'>;

interface SimVm {
  spec: VmSpec;
  state: SimState;
}

interface SimFile {
  version: number;
  vms: SimVm[];
}

export class SimDriver implements VmDriver {
  readonly kind = 'sim' as const;
  readonly accel = 'none' as const;
  private readonly vms = new Map<string, SimVm>();
  private readonly path: string;
  /** The write in progress, and whether another one is needed after it. */
  private writing: Promise<void> | null = null;
  /** Whether the write in progress has already taken its snapshot of `vms`. */
  private snapshotTaken = false;
  private pending: Promise<void> | null = null;

  private constructor(dataDir: string) {
    this.path = join(dataDir, SIM_STATE_FILE);
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
    const next: SimVm = { spec: checked, state: vm?.state ?? 'stopped' };
    this.vms.set(checked.id, next);
    await this.persist();
    return runtimeOf(next);
  }

  async remove(id: string): Promise<void> {
    const vm = this.get(id);
    if (vm.state !== 'stopped') throw vmStateConflict(id, vm.state, 'delete a VM that is not stopped');
    this.vms.delete(id);
    await this.persist();
  }

  powerOn(id: string): Promise<VmRuntime> {
    return this.transition(id, 'running');
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
    return runtimeOf(vm);
  }

  async runtime(id: string): Promise<VmRuntime> {
    return runtimeOf(this.get(id));
  }

  async list(): Promise<VmRuntime[]> {
    return Array.from(this.vms.values(), runtimeOf);
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
  async recover(): Promise<void> {}

  async close(): Promise<void> {
    await this.pending;
    await this.writing;
  }

  private get(id: string): SimVm {
    const vm = this.vms.get(id);
    if (!vm) throw vmNotFound(id);
    return vm;
  }

  private async transition(id: string, state: SimState): Promise<VmRuntime> {
    const vm = this.get(id);
    if (vm.state === state) return runtimeOf(vm); // idempotent: no write needed
    vm.state = state;
    await this.persist();
    return runtimeOf(vm);
  }

  /**
   * Resolves once the current in-memory state (including the caller's change) is on
   * disk. At most one write runs; callers arriving during it share the next one.
   */
  private persist(): Promise<void> {
    if (this.pending) return this.pending;
    if (this.writing && !this.snapshotTaken) return this.writing;
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
    this.snapshotTaken = false;
    const writing = this.write().finally(() => {
      if (this.writing === writing) this.writing = null;
    });
    this.writing = writing;
    return writing;
  }

  private async write(): Promise<void> {
    // Yield once so that operations issued in the same tick join this write.
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.snapshotTaken = true;
    const file: SimFile = { version: FORMAT_VERSION, vms: Array.from(this.vms.values()) };
    try {
      writeFileAtomic(this.path, JSON.stringify(file));
    } catch (cause) {
      throw new HypersealError('HS_ERR_AGENT_DRIVER', `cannot save simulated VMs to ${this.path}`, undefined, {
        cause,
      });
    }
  }

  private load(): void {
    if (!existsSync(this.path)) return;
    let file: unknown;
    try {
      file = JSON.parse(readFileSync(this.path, 'utf8'));
    } catch (cause) {
      throw new HypersealError('HS_ERR_CONFIG', `${this.path} is not readable JSON`, undefined, { cause });
    }
    const f = file as Partial<SimFile> | null;
    if (typeof f !== 'object' || f === null || f.version !== FORMAT_VERSION || !Array.isArray(f.vms)) {
      throw new HypersealError('HS_ERR_CONFIG', `${this.path} is not a version ${FORMAT_VERSION} sim VM file`);
    }
    for (const [i, raw] of f.vms.entries()) {
      const rec = raw as Partial<SimVm> | null;
      const state = rec?.state;
      if (state !== 'stopped' && state !== 'running') {
        throw new HypersealError('HS_ERR_CONFIG', `${this.path}: vms[${i}] has no valid state`);
      }
      // Re-validated: a hand-edited file must not smuggle in what the API would refuse.
      let spec: VmSpec;
      try {
        spec = parseVmSpec(rec?.spec);
      } catch (cause) {
        throw new HypersealError('HS_ERR_CONFIG', `${this.path}: vms[${i}] has an invalid spec`, undefined, {
          cause,
        });
      }
      this.vms.set(spec.id, { spec, state });
    }
  }
}

function runtimeOf(vm: SimVm): VmRuntime {
  return { id: vm.spec.id, state: vm.state, simulated: true };
}
