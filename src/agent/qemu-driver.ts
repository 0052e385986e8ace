/**
 * The QEMU driver: real VMs through src/qemu (command-line builder, VmProcess, QMP).
 *
 * Files. A VM's home is `<home datastore>/<vmId>/` (the first configured datastore):
 *   spec.json     what the manager defined, plus the VM's UUID (written last, atomically:
 *                 a VM exists for the agent exactly when this file does)
 *   OVMF_VARS.fd  its own copy of the firmware variable store (EFI VMs)
 *   serial.log    the serial console (QEMU truncates it at each power-on)
 *   qemu.log      QEMU's own stderr
 *   qmp.sock, qemu.pid   while QEMU runs
 * and each disk is `<disk.datastorePath>/<vmId>/<diskId>.qcow2`, as api.ts says.
 *
 * Processes. QEMU runs detached (VmProcess.start), so it outlives the agent; recover()
 * finds it again by pidfile, /proc cmdline (this VM's UUID) and QMP query-uuid. States
 * come from QEMU itself (query-status), never from memory: a QEMU that died with its
 * pidfile left behind (SIGKILL, crash) is `crashed`; one that exited cleanly (guest
 * power-off, our quit) removed its pidfile and is `stopped`.
 *
 * Rules: define refuses to change the hardware of a VM whose QEMU runs, remove refuses a
 * VM whose QEMU runs (a crashed one may go), disks live only in configured datastores.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, unlinkSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { HypersealError, isHypersealError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import type { Accelerator, HostRuntime, NicBackend, VmSpec as QemuVmSpec } from '../qemu/command-line.js';
import { buildQemuArgv } from '../qemu/command-line.js';
import type { OvmfBuild } from '../qemu/firmware.js';
import { discoverOvmf, probeKvm, selectOvmf } from '../qemu/firmware.js';
import { VmProcess, createQcow2Image, findRunningQemu, isPidAlive } from '../qemu/vm-process.js';
import type { RunState } from '../qemu/vm-process.js';
import { trace } from '../trace.js';
import type { ConsoleChunk, VmRuntime, VmRuntimeState, VmSpec } from './api.js';
import type { Datastore, VmDriver } from './driver.js';
import {
  CONSOLE_CHUNK_BYTES,
  consoleChunk,
  defaultDatastores,
  vmNotFound,
  vmStateConflict,
} from './driver.js';
import { hardwareDiffers, parseVmSpec } from './spec.js';

export interface QemuDriverOptions {
  /** Where VM files may live; the first is every VM's home. Default: defaultDatastores(dataDir). */
  datastores?: Datastore[];
  /** Default: kvm when firmware.ts's probeKvm() finds it usable, else tcg. */
  accel?: Accelerator;
  qemuBinary?: string;
  qemuImgBinary?: string;
  /** Default: discoverOvmf() (QEMU firmware descriptors, then Debian's paths). */
  ovmfBuilds?: readonly OvmfBuild[];
  /** Default 'user-isolated' (slirp, restrict=on): no host network is touched. */
  nicBackend?: NicBackend;
  /** Until QEMU answers on QMP after spawn. Default 20,000. */
  startTimeoutMs?: number;
}

const SPEC_FILE = 'spec.json';
const RECORD_VERSION = 1;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** What spec.json holds. */
interface VmRecord {
  version: number;
  spec: VmSpec;
  /** QEMU's -uuid: how a running QEMU is recognised as this VM's. */
  uuid: string;
  /** The variable store template the NVRAM was made from (EFI); a change resets it. */
  varsTemplate: string | null;
}

interface Vm {
  record: VmRecord;
  home: string;
  /** Attached QEMU, when it runs and we hold its QMP connection. */
  proc: VmProcess | null;
  /**
   * Set while a power operation is under way. Reads then report it instead of asking
   * QMP: the monitor takes one client at a time, and VmProcess.start or a shutdown wait
   * holds it, so a read that tried to attach would stall until its connect timeout.
   */
  busy: 'starting' | 'shutting-down' | null;
  /** One attach at a time per VM, shared by concurrent readers. */
  attaching: Promise<void> | null;
}

/** The API's names for QEMU's RunStates (qapi/run-state.json). */
function runtimeState(status: RunState | (string & {})): VmRuntimeState {
  switch (status) {
    case 'running':
      return 'running';
    case 'prelaunch':
      return 'starting';
    case 'shutdown':
      return 'shutting-down';
    case 'internal-error':
    case 'guest-panicked':
    case 'watchdog':
      return 'crashed';
    case 'paused':
    case 'suspended':
    case 'io-error':
    case 'debug':
    case 'inmigrate':
    case 'postmigrate':
    case 'finish-migrate':
    case 'restore-vm':
    case 'save-vm':
    case 'colo':
      return 'paused';
    default:
      return 'unknown';
  }
}

/** Foreign failures (fs, spawn) become HS_ERR_AGENT_DRIVER; ours keep their code. */
function wrap(what: string, err: unknown): HypersealError {
  if (err instanceof HypersealError) return err;
  return new HypersealError(
    'HS_ERR_AGENT_DRIVER',
    `${what}: ${err instanceof Error ? err.message : String(err)}`,
    undefined,
    { cause: err },
  );
}

function run(file: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: 60_000, encoding: 'utf8' }, (err, _stdout, stderr) => {
      if (err) {
        reject(
          new HypersealError(
            'HS_ERR_QEMU_TOOL_FAILED',
            `${file} ${args.join(' ')} failed: ${stderr.trim() || err.message}`,
            { tool: file },
          ),
        );
      } else resolve();
    });
  });
}

export class QemuDriver implements VmDriver {
  readonly kind = 'qemu' as const;
  private readonly vms = new Map<string, Vm>();
  readonly datastores: readonly Datastore[];
  private readonly homeRoot: string;

  private constructor(
    readonly accel: Accelerator,
    private readonly ovmfBuilds: readonly OvmfBuild[],
    datastores: Datastore[],
    private readonly opts: QemuDriverOptions,
  ) {
    const home = datastores[0];
    if (home === undefined) throw new HypersealError('HS_ERR_CONFIG', 'the QEMU driver needs a datastore');
    this.datastores = datastores;
    this.homeRoot = home.path;
  }

  /** Finds the host's accelerator and firmware and loads every VM defined earlier. */
  static async open(dataDir: string, opts: QemuDriverOptions = {}): Promise<QemuDriver> {
    const datastores = opts.datastores ?? defaultDatastores(dataDir);
    for (const ds of datastores) mkdirSync(ds.path, { recursive: true, mode: 0o700 });
    const accel = opts.accel ?? ((await probeKvm()).usable ? 'kvm' : 'tcg');
    const ovmfBuilds = opts.ovmfBuilds ?? (await discoverOvmf());
    const driver = new QemuDriver(accel, ovmfBuilds, datastores, opts);
    driver.load();
    trace('agent', 'qemu driver', { accel, vms: driver.vms.size, home: driver.homeRoot });
    return driver;
  }

  /* ---------------------------------------------------------------- VmDriver */

  async define(input: VmSpec): Promise<VmRuntime> {
    const spec = parseVmSpec(input);
    for (const [i, d] of spec.disks.entries()) {
      if (!this.datastores.some((ds) => ds.path === d.datastorePath)) {
        throw new HypersealError(
          'HS_ERR_INVALID_ARGUMENT',
          `spec.disks[${i}].datastorePath ${d.datastorePath} is not a datastore of this host ` +
            `(${this.datastores.map((ds) => ds.path).join(', ')})`,
        );
      }
    }
    const old = this.vms.get(spec.id);
    if (old) {
      const state = (await this.runtimeOf(old)).state;
      if (state !== 'stopped' && state !== 'crashed' && hardwareDiffers(old.record.spec, spec)) {
        throw vmStateConflict(spec.id, state, 'change the hardware of a VM whose QEMU runs');
      }
      for (const d of spec.disks) {
        const was = old.record.spec.disks.find((o) => o.id === d.id);
        if (was && was.datastorePath !== d.datastorePath) {
          throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `disk ${d.id} cannot move between datastores`);
        }
        if (was && d.sizeMiB < was.sizeMiB) {
          throw new HypersealError(
            'HS_ERR_INVALID_ARGUMENT',
            `disk ${d.id} cannot shrink from ${was.sizeMiB} to ${d.sizeMiB} MiB (its data would be cut)`,
          );
        }
      }
    }
    const uuid = old?.record.uuid ?? (UUID.test(spec.id) ? spec.id.toLowerCase() : randomUUID());
    const home = join(this.homeRoot, spec.id);
    const draft: VmRecord = { version: RECORD_VERSION, spec, uuid, varsTemplate: null };
    // Build the command line now (pure): a spec QEMU cannot run fails here, not at power-on.
    const { host, ovmf } = this.hostRuntime(spec);
    buildQemuArgv(this.qemuSpec(draft, home), host);
    const record: VmRecord = { ...draft, varsTemplate: ovmf?.varsTemplate ?? null };

    try {
      mkdirSync(home, { recursive: true, mode: 0o700 });
      for (const d of spec.disks) {
        mkdirSync(join(d.datastorePath, spec.id), { recursive: true, mode: 0o700 });
        const path = this.diskPath(spec.id, d.id, d.datastorePath);
        const was = old?.record.spec.disks.find((o) => o.id === d.id);
        if (!existsSync(path)) await createQcow2Image(path, d.sizeMiB, this.opts.qemuImgBinary);
        else if (was && d.sizeMiB > was.sizeMiB) {
          await run(this.opts.qemuImgBinary ?? 'qemu-img', ['resize', '-q', path, `${d.sizeMiB}M`]);
        }
        // An existing image unknown to the old record is adopted: a define that crashed
        // after creating it and before writing spec.json left it for this retry.
      }
      const nvram = join(home, 'OVMF_VARS.fd');
      if (old?.record.varsTemplate !== record.varsTemplate && existsSync(nvram)) {
        // Other firmware (Secure Boot switched, BIOS↔EFI): VmProcess.start copies the new
        // template; the old store's variables do not belong to that firmware.
        unlinkSync(nvram);
      }
      writeFileAtomic(join(home, SPEC_FILE), JSON.stringify(record, null, 2) + '\n', 0o600);
    } catch (err) {
      throw wrap(`defining VM ${spec.id}`, err);
    }
    // Only once the new spec is committed: images of disks the spec no longer has.
    for (const d of old?.record.spec.disks ?? []) {
      if (!spec.disks.some((n) => n.id === d.id)) {
        rmSync(this.diskPath(spec.id, d.id, d.datastorePath), { force: true });
      }
    }
    const vm: Vm = { record, home, proc: old?.proc ?? null, busy: null, attaching: null };
    this.vms.set(spec.id, vm);
    return this.runtimeOf(vm);
  }

  async remove(id: string): Promise<void> {
    const vm = this.get(id);
    const { state } = await this.runtimeOf(vm);
    if (state !== 'stopped' && state !== 'crashed')
      throw vmStateConflict(id, state, 'delete a VM whose QEMU runs');
    try {
      // Disks first, spec.json (in the home) last: a crash half-way leaves a VM that is
      // still listed and whose removal can be retried, never unlisted orphan disks.
      for (const d of vm.record.spec.disks) {
        const dir = join(d.datastorePath, id);
        if (dir !== vm.home) rmSync(dir, { recursive: true, force: true });
        else rmSync(this.diskPath(id, d.id, d.datastorePath), { force: true });
      }
      rmSync(vm.home, { recursive: true, force: true });
    } catch (err) {
      throw wrap(`removing VM ${id}`, err);
    }
    this.vms.delete(id);
  }

  async powerOn(id: string): Promise<VmRuntime> {
    const vm = this.get(id);
    const current = await this.runtimeOf(vm);
    if (vm.proc) return current; // already running (or paused): idempotent
    const { host } = this.hostRuntime(vm.record.spec);
    const qspec = this.qemuSpec(vm.record, vm.home);
    vm.busy = 'starting';
    try {
      vm.proc = await VmProcess.start(qspec, {
        accel: host.accel,
        ovmfBuilds: this.ovmfBuilds,
        nicBackend: this.opts.nicBackend ?? 'user-isolated',
        qemuLogPath: join(vm.home, 'qemu.log'),
        ...(this.opts.qemuBinary !== undefined ? { qemuBinary: this.opts.qemuBinary } : {}),
        ...(this.opts.qemuImgBinary !== undefined ? { qemuImgBinary: this.opts.qemuImgBinary } : {}),
        ...(this.opts.startTimeoutMs !== undefined ? { startTimeoutMs: this.opts.startTimeoutMs } : {}),
      });
    } catch (err) {
      // A QEMU killed while starting leaves its pidfile: that is a failed start, which the
      // error reports, not a crash of a VM that ran.
      this.removeStalePidfile(vm);
      throw wrap(`starting VM ${id}`, err);
    } finally {
      vm.busy = null;
    }
    trace('agent', 'powered on', { vmId: id, pid: vm.proc.pid });
    return this.runtimeOf(vm);
  }

  async powerOff(id: string): Promise<VmRuntime> {
    const vm = this.get(id);
    await this.runtimeOf(vm); // attaches to a QEMU we did not know about
    if (vm.proc) {
      const proc = vm.proc;
      vm.busy = 'shutting-down';
      try {
        await proc.powerOff();
        vm.proc = null;
      } catch (err) {
        if (!proc.isAlive()) vm.proc = null;
        throw wrap(`powering off VM ${id}`, err);
      } finally {
        vm.busy = null;
      }
    } else {
      // Crashed: clear what the dead QEMU left, so the VM reads `stopped`.
      this.removeStalePidfile(vm);
    }
    return this.runtimeOf(vm);
  }

  async shutdown(id: string, timeoutMs: number): Promise<VmRuntime> {
    const vm = this.get(id);
    const { state } = await this.runtimeOf(vm);
    const proc = vm.proc;
    if (!proc) throw vmStateConflict(id, state, 'shut down');
    vm.busy = 'shutting-down';
    try {
      await proc.shutdown({ timeoutMs });
      vm.proc = null;
    } catch (err) {
      // The guest may take longer than the caller wants to wait, or ignore the button
      // (firmware menus, the UEFI shell): the VM keeps running and the state says so.
      if (!isHypersealError(err, 'HS_ERR_QEMU_SHUTDOWN_TIMEOUT')) throw wrap(`shutting down VM ${id}`, err);
    } finally {
      vm.busy = null;
    }
    return this.runtimeOf(vm);
  }

  async reset(id: string): Promise<VmRuntime> {
    const vm = this.get(id);
    const { state } = await this.runtimeOf(vm);
    if (!vm.proc) throw vmStateConflict(id, state, 'reset');
    await vm.proc.reset().catch((err: unknown) => {
      throw wrap(`resetting VM ${id}`, err);
    });
    return this.runtimeOf(vm);
  }

  runtime(id: string): Promise<VmRuntime> {
    return this.observe(this.get(id));
  }

  list(): Promise<VmRuntime[]> {
    return Promise.all(Array.from(this.vms.values(), (vm) => this.observe(vm)));
  }

  async console(id: string, offset: number): Promise<ConsoleChunk> {
    const vm = this.get(id);
    let fh;
    try {
      fh = await open(join(vm.home, 'serial.log'), 'r');
    } catch {
      return { offset: 0, next: 0, data: '' }; // never powered on
    }
    try {
      const { size } = await fh.stat();
      const start = offset > size ? 0 : offset;
      // A few bytes more than a chunk, so consoleChunk can end on a character boundary.
      const buf = Buffer.alloc(Math.min(size - start, CONSOLE_CHUNK_BYTES + 4));
      const { bytesRead } = await fh.read(buf, 0, buf.length, start);
      return consoleChunk(buf.subarray(0, bytesRead), start, start);
    } finally {
      await fh.close();
    }
  }

  /** Re-attaches every VM whose QEMU kept running while the agent was away. */
  async recover(): Promise<void> {
    await Promise.all(
      Array.from(this.vms.values(), async (vm) => {
        const rt = await this.runtimeOf(vm);
        trace('agent', 'recovered', { vmId: rt.id, state: rt.state, pid: rt.pid });
      }),
    );
  }

  /** Drops the QMP connections; the VMs keep running for the next agent to attach. */
  async close(): Promise<void> {
    await Promise.all(
      Array.from(this.vms.values(), async (vm) => {
        const proc = vm.proc;
        vm.proc = null;
        await proc?.detach().catch(() => undefined);
      }),
    );
  }

  /* ---------------------------------------------------------------- internals */

  private get(id: string): Vm {
    const vm = this.vms.get(id);
    if (!vm) throw vmNotFound(id);
    return vm;
  }

  private diskPath(vmId: string, diskId: string, datastorePath: string): string {
    return join(datastorePath, vmId, `${diskId}.qcow2`);
  }

  private qemuSpec(record: VmRecord, home: string): QemuVmSpec {
    const { spec } = record;
    return {
      // The id, not the display name: QEMU's -name must be a plain token.
      name: spec.id,
      uuid: record.uuid,
      cpus: spec.cpus,
      memoryMiB: spec.memoryMiB,
      firmware: spec.firmware,
      secureBoot: spec.secureBoot,
      disks: spec.disks.map((d) => ({
        id: d.id,
        path: this.diskPath(spec.id, d.id, d.datastorePath),
        format: 'qcow2' as const,
      })),
      nics: spec.nics.map((n) => ({ id: n.id, mac: n.mac, network: n.network })),
      serialLogPath: join(home, 'serial.log'),
      qmpSocketPath: join(home, 'qmp.sock'),
      pidFilePath: join(home, 'qemu.pid'),
      ...(spec.firmware === 'efi' ? { nvramPath: join(home, 'OVMF_VARS.fd') } : {}),
    };
  }

  /**
   * The host side of the command line, for checking a spec at define time and choosing
   * the accelerator; VmProcess.start makes the same OVMF choice when it really starts.
   */
  private hostRuntime(spec: VmSpec): { host: HostRuntime; ovmf: OvmfBuild | undefined } {
    const ovmf =
      spec.firmware === 'efi' ? selectOvmf(this.ovmfBuilds, { secureBoot: spec.secureBoot }) : undefined;
    return {
      host: {
        accel: this.accel,
        ...(ovmf ? { ovmf: { code: ovmf.code, requiresSmm: ovmf.requiresSmm } } : {}),
        nicBackend: this.opts.nicBackend ?? 'user-isolated',
      },
      ovmf,
    };
  }

  /** For reads, which do not hold the VM's lock: a power operation under way answers for QEMU. */
  private observe(vm: Vm): Promise<VmRuntime> {
    if (vm.busy === null) return this.runtimeOf(vm);
    const pid = vm.proc?.pid;
    return Promise.resolve({
      id: vm.record.spec.id,
      state: vm.busy,
      ...(pid !== undefined ? { pid } : {}),
      simulated: false,
    });
  }

  /**
   * The VM's state as QEMU sees it. Attaches to a running QEMU we hold no connection to
   * (started before an agent restart), and drops a connection whose QEMU has gone.
   */
  private async runtimeOf(vm: Vm): Promise<VmRuntime> {
    const id = vm.record.spec.id;
    if (vm.proc && !vm.proc.isAlive()) {
      await vm.proc.detach().catch(() => undefined);
      vm.proc = null;
    }
    if (!vm.proc) {
      const qspec = this.qemuSpec(vm.record, vm.home);
      const pid = await findRunningQemu(qspec);
      if (pid !== undefined) {
        vm.attaching ??= VmProcess.attach(qspec)
          .then((proc) => {
            vm.proc = proc;
          })
          .finally(() => (vm.attaching = null));
        try {
          await vm.attaching;
        } catch (err) {
          // It runs, but its monitor does not answer us (another client holds it, or it
          // hangs): say so rather than guess.
          trace('agent', 'attach failed', { vmId: id, pid, error: String(err) });
          return { id, state: 'unknown', pid, simulated: false };
        }
      }
    }
    if (vm.proc) {
      const pid = vm.proc.pid;
      try {
        const { status } = await vm.proc.status();
        return { id, state: runtimeState(status), pid, simulated: false };
      } catch (err) {
        trace('agent', 'status failed', { vmId: id, pid, error: String(err) });
        return { id, state: vm.proc.isAlive() ? 'unknown' : 'crashed', simulated: false };
      }
    }
    // No QEMU. A clean exit removes the pidfile; one left behind means it died.
    return { id, state: existsSync(join(vm.home, 'qemu.pid')) ? 'crashed' : 'stopped', simulated: false };
  }

  private removeStalePidfile(vm: Vm): void {
    const pidFile = join(vm.home, 'qemu.pid');
    try {
      const pid = Number(readFileSync(pidFile, 'utf8').trim());
      if (!Number.isSafeInteger(pid) || pid <= 1 || !isPidAlive(pid)) {
        rmSync(pidFile, { force: true });
        rmSync(join(vm.home, 'qmp.sock'), { force: true });
      }
    } catch {
      // no pidfile: nothing to clean
    }
  }

  /** Reads every `<home datastore>/<id>/spec.json`; a damaged one is skipped and traced. */
  private load(): void {
    for (const entry of readdirSync(this.homeRoot, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      const home = join(this.homeRoot, entry.name);
      const file = join(home, SPEC_FILE);
      if (!existsSync(file)) continue; // a define that never committed, or not ours
      try {
        const raw = JSON.parse(readFileSync(file, 'utf8')) as Partial<VmRecord>;
        if (raw.version !== RECORD_VERSION || typeof raw.uuid !== 'string' || !UUID.test(raw.uuid)) {
          throw new Error(`not a version ${RECORD_VERSION} VM record`);
        }
        const spec = parseVmSpec(raw.spec);
        if (spec.id !== entry.name) throw new Error(`its id ${spec.id} is not its directory's name`);
        const varsTemplate = typeof raw.varsTemplate === 'string' ? raw.varsTemplate : null;
        this.vms.set(spec.id, {
          record: { version: RECORD_VERSION, spec, uuid: raw.uuid.toLowerCase(), varsTemplate },
          home,
          proc: null,
          busy: null,
          attaching: null,
        });
      } catch (err) {
        // One bad file must not keep the agent, and every other VM, from starting.
        trace('agent', 'skipping unreadable VM record', { file, error: String(err) });
      }
    }
  }
}

/** The entry point the CLI loads on demand (`hyperseal agent serve --driver qemu`, `up`). */
export function openQemuDriver(dataDir: string, opts: QemuDriverOptions = {}): Promise<QemuDriver> {
  return QemuDriver.open(dataDir, opts);
}
