/**
 * The QEMU driver: real VMs through src/qemu (command-line builder, VmProcess, QMP).
 *
 * Files. A VM's home is `<home datastore>/<vmId>/` (the first configured datastore):
 *   spec.json     the VM record: the VM's UUID, its image generation and, for a plain VM,
 *                 the spec the manager defined; for an encrypted VM the spec sealed under
 *                 its home DEK and the encryption bundle (DEKs wrapped by the KEK). Written
 *                 last and atomically: a VM exists for the agent exactly when it does, and
 *                 replacing it is the one commit point of every multi-file change.
 *   OVMF_VARS[.gN].fd | OVMF_VARS.gN.luks   its own firmware variable store (EFI VMs);
 *                 a LUKS container when encrypted; with Secure Boot and a custom key set,
 *                 written with the set's keys before its first boot (and before encryption)
 *   serial.log    the serial console of a plain VM (QEMU truncates it at each power-on);
 *                 an encrypted VM's console goes to a socket and is kept in memory only
 *   qemu.log      QEMU's own stderr
 *   qmp.sock, qemu.pid, serial.sock   while QEMU runs
 *   tpm/, swtpm.sock, swtpm.pid, swtpm.log   the vTPM of a VM with `vtpm` (vtpm.ts): swtpm's
 *                 state (encrypted under a key derived from the home DEK when the VM is)
 * and each disk is `<disk.datastorePath>/<vmId>/<diskId>[.gN].qcow2` (qcow2 with LUKS,
 * AES-256-XTS, when encrypted).
 *
 * Generations. Encrypting, decrypting, deep-rekeying write complete new images under the
 * next generation's names, then replace spec.json (the commit), then delete the old
 * generation. A kill -9 before the commit leaves the old VM whole plus stray new files;
 * after it, the new VM plus stray old files. Files of any other generation are strays and
 * are removed when the VM is next loaded: never half a VM.
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
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, rmdirSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { HypersealError, isHypersealError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import type { ColdFile, ColdSink } from './cold-transfer.js';
import {
  clearIncomingMarker,
  coldSink,
  confirmReceived,
  installReceived,
  readIncomingMarker,
  recoverIncoming,
  sendColdStream,
  writeIncomingMarker,
} from './cold-transfer.js';
import type { ColdEntry } from '../migration/cold-archive.js';
import { COLD_ENTRY_NAME } from '../migration/cold-archive.js';
import type { Accelerator, HostRuntime, NicBackend, VmSpec as QemuVmSpec } from '../qemu/command-line.js';
import { buildQemuArgv } from '../qemu/command-line.js';
import type { OvmfBuild } from '../qemu/firmware.js';
import { discoverOvmf, probeKvm, selectOvmf } from '../qemu/firmware.js';
import { VmProcess, createQcow2Image, findRunningQemu, isPidAlive, isQemuOf } from '../qemu/vm-process.js';
import type { RunState } from '../qemu/vm-process.js';
import { trace } from '../trace.js';
import { zeroize } from '../crypto/aead.js';
import { crashPoint } from '../crashpoint.js';
import {
  convertImage,
  convertNvram,
  createEncryptedNvram,
  createEncryptedNvramFromBytes,
  createEncryptedQcow2,
  lukPassphrase,
  resizeEncryptedQcow2,
} from '../qemu/encrypted-images.js';
import { diskNodeName, sealSecretForQemu } from '../qemu/command-line.js';
import { SerialSocketReader } from '../qemu/serial-socket.js';
import type {
  ConsoleChunk,
  MigrationOutgoingResponse,
  VmCryptoOperation,
  VmRuntime,
  VmRuntimeState,
  VmSpec,
} from './api.js';
import type { Deks, EncryptionBundle } from './vm-keys.js';
import {
  Keyring,
  newDek,
  newDeks,
  openWithHomeKey,
  parseBundle,
  sealWithHomeKey,
  unwrapDeks,
  wrapDeks,
  zeroizeDeks,
} from './vm-keys.js';
import type { Datastore, MigrateOutOptions, VmDriver } from './driver.js';
import {
  CONSOLE_CHUNK_BYTES,
  consoleChunk,
  defaultDatastores,
  vmNotFound,
  vmStateConflict,
} from './driver.js';
import { hardwareDiffers, parseVmSpec } from './spec.js';
import type { ParsedMigration } from './spec.js';
import { MigrationReceiver, MigrationSender } from '../migration/index.js';
import { TunnelDestination, TunnelSource } from '../migration/tunnel.js';
import { MICROSOFT_KEY_SET, buildVarsForKeySet, ovmfRequirementFor } from '../secureboot/keyset.js';
import { VTPM_FILES, startSwtpm, stopSwtpm } from './vtpm.js';

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
  /** Default 'swtpm' (Debian package swtpm), for VMs with a vTPM. */
  swtpmBinary?: string;
  /** false: this agent refuses encrypted migrations and says so in its facts (tests). Default true. */
  migrationEncryption?: boolean;
  /**
   * What the destination tells the manager its migration listener is (NAT, or a test's
   * proxy between the agents). Default: the listener's own address.
   */
  migrationAdvertise?: (listener: { host: string; port: number }) => Promise<{ host: string; port: number }>;
}

const SPEC_FILE = 'spec.json';
/** 1: plain spec only (read, never written). 2: generations and encryption. */
const RECORD_VERSION = 2;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Image files this driver names: `<base>[.g<N>].<qcow2|fd|luks>` (see "Generations"). */
const IMAGE_FILE = /^([A-Za-z][A-Za-z0-9_-]*)(?:\.g(\d+))?\.(qcow2|fd|luks)$/;
const SEALED_SPEC = 'spec';

/** What spec.json holds. */
interface VmRecord {
  version: number;
  /** QEMU's -uuid: how a running QEMU is recognised as this VM's. */
  uuid: string;
  /** The variable store template the NVRAM was made from (EFI); a change resets it. */
  varsTemplate: string | null;
  /** SHA-256 of the Secure Boot key set written into the NVRAM (custom sets only); a change resets it. */
  varsKeys?: string;
  /** Which files are the VM's images (0: the names from before generations). */
  generation: number;
  /** Plain VMs only. */
  spec?: VmSpec;
  /** Encrypted VMs: the spec, sealed under the home DEK (AES-256-GCM, bound to the VM id). */
  sealedSpec?: string;
  bundle?: EncryptionBundle;
}

/** A local-disk migration under way on the destination: the images it created, its tunnel. */
interface IncomingCopy {
  paths: string[];
  tunnel: TunnelDestination | undefined;
}

/** Removes a disk image and its VM directory on the datastore once empty. */
function removeImage(path: string): void {
  rmSync(path, { force: true });
  try {
    rmdirSync(dirname(path));
  } catch {
    // Not empty (other disks, other generations) or already gone.
  }
}

interface Vm {
  id: string;
  record: VmRecord;
  /** The spec: from the record, or (encrypted) once its KEK was pushed; null while locked. */
  spec: VmSpec | null;
  home: string;
  /** An encrypted VM's console, in memory only. */
  serial: SerialSocketReader | null;
  operation: NonNullable<VmRuntime['operation']> | null;
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
  /**
   * Source of a live migration whose stream went whole: held paused until the manager
   * resolves it with the destination's answer (resolveOutgoing).
   */
  unresolved: UnresolvedMigration | null;
}

/** What resolveOutgoing needs to end or resume a VM whose stream went whole. */
interface UnresolvedMigration {
  migrationId: string;
  /** Images of local disks copied to the destination: deleted here once it keeps the VM. */
  copiedImages: string[];
}

/** An incoming migration on the destination: abortable until it acknowledged the stream. */
interface IncomingMigration {
  migrationId: string;
  receiver: MigrationReceiver;
  acknowledged: boolean;
  /** Settles once the VM runs (or is stopped, cold) here, or is dropped. */
  finished: Promise<void>;
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

/** What identifies the keys a VM's store was written with (undefined: template as is). */
function keySetDigest(spec: VmSpec): string | undefined {
  if (spec.firmware !== 'efi' || !spec.secureBoot || spec.secureBootKeySet === undefined) return undefined;
  return createHash('sha256').update(JSON.stringify(spec.secureBootKeySet)).digest('hex');
}

function cryptoConflict(id: string, what: string): HypersealError {
  return new HypersealError('HS_ERR_CONFLICT', `VM ${id} ${what}`, { vmId: id });
}

export class QemuDriver implements VmDriver {
  readonly kind = 'qemu' as const;
  readonly keyring = new Keyring();
  private readonly vms = new Map<string, Vm>();
  private readonly incomingCopies = new Map<string, IncomingCopy>();
  /** Incoming migrations by VM id, until they finished (or were dropped). */
  private readonly incomingMigrations = new Map<string, IncomingMigration>();
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
    const oldSpec = old ? this.requireSpec(old) : null;
    if (old && oldSpec) {
      const want = spec.encryption?.kekRef;
      const have = old.record.bundle?.kekRef;
      if (want !== have) {
        throw cryptoConflict(
          spec.id,
          want === undefined
            ? 'is encrypted: decrypt it rather than define it plain'
            : have === undefined
              ? 'is plain: encrypt it rather than define it encrypted'
              : `is encrypted under ${have}, not ${want}: rekey it`,
        );
      }
      const state = (await this.runtimeOf(old)).state;
      if (state !== 'stopped' && state !== 'crashed' && hardwareDiffers(oldSpec, spec)) {
        throw vmStateConflict(spec.id, state, 'change the hardware of a VM whose QEMU runs');
      }
      for (const d of spec.disks) {
        const was = oldSpec.disks.find((o) => o.id === d.id);
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
    const generation = old?.record.generation ?? 0;
    // Build the command line now (pure): a spec QEMU cannot run fails here, not at power-on.
    const { host, ovmf } = this.hostRuntime(spec);
    buildQemuArgv(this.qemuSpec(spec, uuid, generation, home), host);
    const varsTemplate = ovmf?.varsTemplate ?? null;
    const varsKeys = keySetDigest(spec);

    // Keys: a new encrypted VM gets fresh DEKs; an existing one keeps its own, with a new
    // DEK for each new disk (which needs its KEK) and none for removed disks.
    let deks: Deks | undefined;
    let bundle: EncryptionBundle | undefined;
    if (spec.encryption) {
      const kek = this.keyring.require(spec.encryption.kekRef, spec.id);
      const kept = old?.record.bundle ? unwrapDeks(kek, old.record.bundle) : undefined;
      deks = {
        home: kept?.home ?? newDek(),
        disks: new Map(spec.disks.map((d) => [d.id, kept?.disks.get(d.id) ?? newDek()])),
      };
      if (kept) for (const [id, k] of kept.disks) if (!deks.disks.has(id)) zeroize(k);
      bundle = wrapDeks(kek, spec.encryption.kekRef, deks);
    }
    try {
      mkdirSync(home, { recursive: true, mode: 0o700 });
      for (const d of spec.disks) {
        mkdirSync(join(d.datastorePath, spec.id), { recursive: true, mode: 0o700 });
        const path = this.diskPath(spec.id, d, generation);
        const was = oldSpec?.disks.find((o) => o.id === d.id);
        if (!existsSync(path)) {
          const dek = deks?.disks.get(d.id);
          if (dek) await createEncryptedQcow2(path, d.sizeMiB, dek, this.opts.qemuImgBinary);
          else await createQcow2Image(path, d.sizeMiB, this.opts.qemuImgBinary);
        } else if (was && d.sizeMiB > was.sizeMiB) {
          await this.resize(path, d.sizeMiB, deks?.disks.get(d.id));
        }
        // An existing image unknown to the old record is adopted: a define that crashed
        // after creating it and before writing spec.json left it for this retry.
      }
      if (old?.record.varsTemplate !== varsTemplate || old?.record.varsKeys !== varsKeys) {
        // Other firmware (Secure Boot switched, BIOS↔EFI) or other enrolled keys: the store
        // is made anew from the new template at power-on; the old store's variables do not
        // belong to that firmware, and keys are written only into a pristine store.
        rmSync(this.nvramPath(home, generation, bundle !== undefined), { force: true });
      }
      const record: VmRecord = {
        version: RECORD_VERSION,
        uuid,
        varsTemplate,
        ...(varsKeys === undefined ? {} : { varsKeys }),
        generation,
        ...this.specFields(spec, deks, bundle),
      };
      this.writeRecord(home, record);
      const vm: Vm = old ?? this.newVm(spec.id, home, record, spec);
      vm.record = record;
      vm.spec = spec;
      this.vms.set(spec.id, vm);
    } catch (err) {
      throw wrap(`defining VM ${spec.id}`, err);
    } finally {
      zeroizeDeks(deks);
    }
    // Only once the new spec is committed: images of disks the spec no longer has.
    for (const d of oldSpec?.disks ?? []) {
      if (!spec.disks.some((n) => n.id === d.id))
        rmSync(this.diskPath(spec.id, d, generation), { force: true });
    }
    return this.runtimeOf(this.get(spec.id));
  }

  async remove(id: string): Promise<void> {
    const vm = this.getFree(id, 'delete it');
    const { state } = await this.runtimeOf(vm);
    if (state !== 'stopped' && state !== 'crashed')
      throw vmStateConflict(id, state, 'delete a VM whose QEMU runs');
    try {
      // Disks first, spec.json (in the home) last: a crash half-way leaves a VM that is
      // still listed and whose removal can be retried, never unlisted orphan disks. A
      // locked VM's disk list is sealed (a crypto-shredded one's for good): its directory
      // on every datastore of this host goes instead.
      const dirs = vm.spec
        ? vm.spec.disks.map((d) => join(d.datastorePath, id))
        : this.datastores.map((ds) => join(ds.path, id));
      for (const dir of new Set(dirs)) {
        if (dir !== vm.home) rmSync(dir, { recursive: true, force: true });
      }
      for (const d of vm.spec?.disks ?? []) {
        if (join(d.datastorePath, id) === vm.home)
          rmSync(this.diskPath(id, d, vm.record.generation), { force: true });
      }
      rmSync(vm.home, { recursive: true, force: true });
    } catch (err) {
      throw wrap(`removing VM ${id}`, err);
    }
    vm.serial?.close();
    this.vms.delete(id);
  }

  async powerOn(id: string): Promise<VmRuntime> {
    const vm = this.getFree(id, 'power it on');
    const current = await this.runtimeOf(vm);
    if (vm.proc) return current; // already running (or paused): idempotent
    await this.startQemu(vm, false);
    return this.runtimeOf(vm);
  }

  /** Starts the VM's QEMU: booting, or (`incoming`) as a live-migration destination. */
  private async startQemu(vm: Vm, incoming: boolean | 'paused'): Promise<void> {
    const id = vm.id;
    const spec = this.requireSpec(vm);
    const { host, ovmf } = this.hostRuntime(spec);
    let qspec = this.qemuSpec(spec, vm.record.uuid, vm.record.generation, vm.home);
    const bundle = vm.record.bundle;
    let deks: Deks | undefined;
    // Per QEMU process: the DEKs reach QEMU only encrypted under it, and it reaches QEMU
    // only through a FIFO; it lives on in QEMU's memory and nowhere else.
    const masterKey = bundle ? randomBytes(32) : undefined;
    vm.busy = 'starting';
    try {
      if (bundle && masterKey) {
        deks = unwrapDeks(this.keyring.require(bundle.kekRef, id), bundle);
        const homeDek = deks.home;
        qspec = {
          ...qspec,
          disks: qspec.disks.map((d) => {
            const dek = deks?.disks.get(d.id);
            if (!dek) throw new HypersealError('HS_ERR_KEY_MISMATCH', `VM ${id} has no key for disk ${d.id}`);
            return { ...d, encryption: sealSecretForQemu(masterKey, lukPassphrase(dek)) };
          }),
          ...(qspec.nvramPath !== undefined
            ? { nvramEncryption: sealSecretForQemu(masterKey, lukPassphrase(homeDek)) }
            : {}),
        };
        if (qspec.nvramPath !== undefined && ovmf && !existsSync(qspec.nvramPath)) {
          // Keys are written into the store before it is encrypted (docs/secure-boot.md).
          const keyed = await this.keyedVars(spec, ovmf.varsTemplate);
          if (keyed)
            await createEncryptedNvramFromBytes(keyed, qspec.nvramPath, homeDek, this.opts.qemuImgBinary);
          else
            await createEncryptedNvram(ovmf.varsTemplate, qspec.nvramPath, homeDek, this.opts.qemuImgBinary);
        }
      } else if (qspec.nvramPath !== undefined && ovmf && !existsSync(qspec.nvramPath)) {
        const keyed = await this.keyedVars(spec, ovmf.varsTemplate);
        if (keyed) writeFileAtomic(qspec.nvramPath, keyed, 0o600);
      }
      if (qspec.tpmSocketPath !== undefined) {
        await startSwtpm({
          home: vm.home,
          homeDek: deks?.home,
          ...(this.opts.swtpmBinary !== undefined ? { binary: this.opts.swtpmBinary } : {}),
        });
      }
      // One console reader per VM, kept across QEMU restarts (QEMU serves one at a time).
      if (qspec.serialSocketPath !== undefined) {
        vm.serial ??= new SerialSocketReader(qspec.serialSocketPath, { label: id });
      }
      vm.proc = await VmProcess.start(qspec, {
        ...(vm.serial && qspec.serialSocketPath !== undefined ? { serial: vm.serial } : {}),
        accel: host.accel,
        ovmfBuilds: this.ovmfBuilds,
        ...(spec.secureBoot
          ? { enrolledKeys: ovmfRequirementFor(spec.secureBootKeySet ?? MICROSOFT_KEY_SET).enrolledKeys }
          : {}),
        nicBackend: this.opts.nicBackend ?? 'user-isolated',
        qemuLogPath: join(vm.home, 'qemu.log'),
        ...(incoming ? { incoming: true } : {}),
        ...(incoming === 'paused' ? { incomingPaused: true } : {}),
        ...(masterKey ? { masterKey } : {}),
        ...(this.opts.qemuBinary !== undefined ? { qemuBinary: this.opts.qemuBinary } : {}),
        ...(this.opts.qemuImgBinary !== undefined ? { qemuImgBinary: this.opts.qemuImgBinary } : {}),
        ...(this.opts.startTimeoutMs !== undefined ? { startTimeoutMs: this.opts.startTimeoutMs } : {}),
      });
    } catch (err) {
      // A QEMU killed while starting leaves its pidfile: that is a failed start, which the
      // error reports, not a crash of a VM that ran.
      this.removeStalePidfile(vm);
      stopSwtpm(vm.home);
      throw wrap(`starting VM ${id}`, err);
    } finally {
      vm.busy = null;
      zeroize(masterKey);
      zeroizeDeks(deks);
    }
    trace('agent', incoming ? 'started for incoming migration' : 'powered on', {
      vmId: id,
      pid: vm.proc.pid,
      encrypted: bundle !== undefined,
    });
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
    const vm = this.getFree(id, 'shut it down');
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
    const vm = this.getFree(id, 'reset it');
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
    if (vm.record.bundle) {
      // Encrypted: the console exists only in this agent's memory (since its last start).
      return vm.serial ? vm.serial.chunk(offset, CONSOLE_CHUNK_BYTES) : { offset: 0, next: 0, data: '' };
    }
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

  /* ---------------------------------------------------------------- keys and encryption */

  async putKey(ref: string, material: Buffer): Promise<void> {
    // Checked against every VM naming it before anything is kept or unsealed.
    const unlocked: { vm: Vm; spec: VmSpec }[] = [];
    for (const vm of this.vms.values()) {
      if (vm.record.bundle?.kekRef !== ref) continue;
      const deks = unwrapDeks(material, vm.record.bundle);
      try {
        unlocked.push({ vm, spec: vm.spec ?? this.openSpec(vm.id, vm.record, deks.home) });
      } finally {
        zeroizeDeks(deks);
      }
    }
    this.keyring.put(ref, material);
    for (const { vm, spec } of unlocked) {
      if (vm.spec === null) {
        vm.spec = spec;
        this.collectStrays(vm);
        trace('agent', 'unlocked', { vmId: vm.id });
      }
    }
  }

  async neededKeys(): Promise<string[]> {
    const refs = new Set<string>();
    for (const vm of this.vms.values()) {
      const ref = vm.record.bundle?.kekRef;
      if (ref !== undefined && !this.keyring.has(ref)) refs.add(ref);
    }
    return [...refs];
  }

  async encrypt(id: string, kekRef: string): Promise<VmRuntime> {
    const vm = this.getFree(id, 'encrypt it');
    const spec = this.requireSpec(vm);
    await this.requireStopped(vm, 'encrypt');
    this.requireNoVtpmState(vm, 'encrypt');
    if (vm.record.bundle) throw cryptoConflict(id, 'is already encrypted');
    const kek = this.keyring.require(kekRef, id);
    const deks = newDeks(spec.disks.map((d) => d.id));
    try {
      const next = { ...spec, encryption: { kekRef } };
      await this.recopy(vm, 'encrypt', next, undefined, deks, wrapDeks(kek, kekRef, deks));
      // The plain console log is guest output: it goes with the plain images.
      rmSync(join(vm.home, 'serial.log'), { force: true });
    } finally {
      zeroizeDeks(deks);
    }
    return this.runtimeOf(vm);
  }

  async decrypt(id: string): Promise<VmRuntime> {
    const vm = this.getFree(id, 'decrypt it');
    const spec = this.requireSpec(vm);
    await this.requireStopped(vm, 'decrypt');
    this.requireNoVtpmState(vm, 'decrypt');
    const bundle = vm.record.bundle;
    if (!bundle) throw cryptoConflict(id, 'is not encrypted');
    const deks = unwrapDeks(this.keyring.require(bundle.kekRef, id), bundle);
    try {
      await this.recopy(vm, 'decrypt', { ...spec, encryption: null }, deks, undefined, undefined);
    } finally {
      zeroizeDeks(deks);
    }
    vm.serial?.close();
    vm.serial = null;
    return this.runtimeOf(vm);
  }

  async rekey(id: string, kekRef: string, deep: boolean): Promise<VmRuntime> {
    const vm = this.getFree(id, 'rekey it');
    const spec = this.requireSpec(vm);
    const bundle = vm.record.bundle;
    if (!bundle) throw cryptoConflict(id, 'is not encrypted');
    const oldDeks = unwrapDeks(this.keyring.require(bundle.kekRef, id), bundle);
    const newKek = this.keyring.require(kekRef, id);
    const next = { ...spec, encryption: { kekRef } };
    try {
      if (!deep) {
        // Shallow: the same DEKs under the new KEK; only spec.json changes, so a running
        // QEMU (which holds the DEKs already) is not disturbed.
        vm.operation = { kind: 'rekey', progress: 0 };
        const record: VmRecord = {
          ...vm.record,
          ...this.specFields(next, oldDeks, wrapDeks(newKek, kekRef, oldDeks)),
        };
        this.writeRecord(vm.home, record);
        vm.record = record;
        vm.spec = next;
      } else {
        await this.requireStopped(vm, 'deep-rekey');
        this.requireNoVtpmState(vm, 'deep-rekey');
        const deks = newDeks(spec.disks.map((d) => d.id));
        try {
          await this.recopy(vm, 'deep-rekey', next, oldDeks, deks, wrapDeks(newKek, kekRef, deks));
        } finally {
          zeroizeDeks(deks);
        }
      }
    } finally {
      zeroizeDeks(oldDeks);
      vm.operation = null;
    }
    return this.runtimeOf(vm);
  }

  async clone(id: string, input: VmSpec): Promise<VmRuntime> {
    const source = this.getFree(id, 'clone it');
    const sourceSpec = this.requireSpec(source);
    await this.requireStopped(source, 'clone');
    const target = parseVmSpec(input);
    if (this.vms.has(target.id)) throw cryptoConflict(target.id, 'already exists');
    if (
      target.disks.length !== sourceSpec.disks.length ||
      target.disks.some((d, i) => d.id !== sourceSpec.disks[i]?.id)
    ) {
      throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `a clone has the disks of its source (${id})`);
    }
    for (const d of target.disks) {
      if (!this.datastores.some((ds) => ds.path === d.datastorePath)) {
        throw new HypersealError(
          'HS_ERR_INVALID_ARGUMENT',
          `${d.datastorePath} is not a datastore of this host`,
        );
      }
    }
    const srcBundle = source.record.bundle;
    const srcDeks = srcBundle ? unwrapDeks(this.keyring.require(srcBundle.kekRef, id), srcBundle) : undefined;
    const dstDeks = target.encryption ? newDeks(target.disks.map((d) => d.id)) : undefined;
    const home = join(this.homeRoot, target.id);
    source.operation = { kind: 'clone', progress: 0 };
    try {
      const bundle =
        target.encryption && dstDeks
          ? wrapDeks(
              this.keyring.require(target.encryption.kekRef, target.id),
              target.encryption.kekRef,
              dstDeks,
            )
          : undefined;
      // Leftovers of an earlier clone to this id that died before its record was written.
      this.removeVmFiles(target, home);
      mkdirSync(home, { recursive: true, mode: 0o700 });
      const steps = target.disks.length + 1;
      for (const [i, d] of target.disks.entries()) {
        const src = sourceSpec.disks[i];
        if (!src) continue;
        mkdirSync(join(d.datastorePath, target.id), { recursive: true, mode: 0o700 });
        await convertImage({
          src: { path: this.diskPath(id, src, source.record.generation), dek: srcDeks?.disks.get(src.id) },
          dst: { path: this.diskPath(target.id, d, 0), dek: dstDeks?.disks.get(d.id) },
          onProgress: (p) =>
            (source.operation = { kind: 'clone', progress: Math.round((100 * (i + p / 100)) / steps) }),
          qemuImgBinary: this.opts.qemuImgBinary,
        });
      }
      const srcNvram = this.nvramPath(source.home, source.record.generation, srcBundle !== undefined);
      if (existsSync(srcNvram)) {
        await convertNvram({
          src: { path: srcNvram, dek: srcDeks?.home },
          dst: { path: this.nvramPath(home, 0, bundle !== undefined), dek: dstDeks?.home },
          qemuImgBinary: this.opts.qemuImgBinary,
        });
      }
      const record: VmRecord = {
        version: RECORD_VERSION,
        uuid: UUID.test(target.id) ? target.id.toLowerCase() : randomUUID(),
        varsTemplate: source.record.varsTemplate,
        ...(source.record.varsKeys === undefined ? {} : { varsKeys: source.record.varsKeys }),
        generation: 0,
        ...this.specFields(target, dstDeks, bundle),
      };
      crashPoint('clone:before-commit');
      this.writeRecord(home, record);
      this.vms.set(target.id, this.newVm(target.id, home, record, target));
    } catch (err) {
      if (!this.vms.has(target.id)) this.removeVmFiles(target, home);
      throw wrap(`cloning VM ${id} to ${target.id}`, err);
    } finally {
      source.operation = null;
      zeroizeDeks(srcDeks);
      zeroizeDeks(dstDeks);
    }
    return this.runtimeOf(this.get(target.id));
  }

  /** Re-attaches every VM whose QEMU kept running while the agent was away. */
  async recover(): Promise<void> {
    await Promise.all(
      Array.from(this.vms.values(), async (vm) => {
        const rt = await this.runtimeOf(vm);
        trace('agent', 'recovered', { vmId: rt.id, state: rt.state, pid: rt.pid, locked: rt.locked });
      }),
    );
  }

  /** Drops the QMP connections; the VMs keep running for the next agent to attach. */
  async close(): Promise<void> {
    await Promise.all(
      Array.from(this.vms.values(), async (vm) => {
        const proc = vm.proc;
        vm.proc = null;
        vm.serial?.close();
        vm.serial = null;
        await proc?.detach().catch(() => undefined);
      }),
    );
    this.keyring.clear();
  }

  /* ---------------------------------------------------------------- live migration */

  /** Whether this agent seals and opens the encrypted migration channel (facts report it). */
  get migration(): { live: boolean; encrypted: boolean } {
    return { live: true, encrypted: this.opts.migrationEncryption !== false };
  }

  async migrationRecord(id: string): Promise<Record<string, unknown>> {
    const vm = this.get(id);
    this.requireSpec(vm);
    return JSON.parse(JSON.stringify(vm.record)) as Record<string, unknown>;
  }

  async migrateIn(
    spec: VmSpec,
    raw: Record<string, unknown>,
    mig: ParsedMigration,
    listenHost: string,
    cold = false,
    copyDisks = false,
  ): Promise<{ host: string; port: number; nbd?: { host: string; port: number } }> {
    try {
      if (this.vms.has(spec.id)) throw cryptoConflict(spec.id, 'is already defined on this host');
      this.requireCipher(mig);
      for (const [i, d] of spec.disks.entries()) {
        // Disks stay in place on a datastore both hosts mount; local disks are copied
        // (copyDisks) into new images on a datastore of this host.
        const path = this.diskPath(spec.id, d, Number(raw.generation ?? 0));
        const known = this.datastores.some((ds) => ds.path === d.datastorePath);
        if (copyDisks && known && !existsSync(path)) continue;
        if (copyDisks && known) {
          throw cryptoConflict(spec.id, `already has an image at ${path} on this host`);
        }
        if (!known || !existsSync(path)) {
          throw new HypersealError(
            'HS_ERR_MIGRATION_UNSUPPORTED',
            `spec.disks[${i}] (${d.id}) is not on a datastore this host shares with the source`,
            { vmId: spec.id },
          );
        }
      }
      const record = this.migratedRecord(spec, raw);
      const home = join(this.homeRoot, spec.id);
      mkdirSync(home, { recursive: true, mode: 0o700 });
      // Cold: the marker before the record, so a restart never mistakes half a VM for one.
      const images = new Map(spec.disks.map((d) => [d.id, this.diskPath(spec.id, d, record.generation)]));
      const coldDisks = cold && copyDisks ? [...images.values()] : [];
      // Live: the images it creates for disk copies are this attempt's, dropped with it.
      const liveMarker = {
        migrationId: mig.id,
        kind: 'live' as const,
        disks: !cold && copyDisks ? [...images.values()] : [],
      };
      writeIncomingMarker(
        home,
        cold
          ? { migrationId: mig.id, phase: 'receiving', disks: coldDisks }
          : { ...liveMarker, phase: 'receiving' },
      );
      this.writeRecord(home, record);
      const vm = this.newVm(spec.id, home, record, spec);
      vm.operation = { kind: 'migrate', progress: 0 };
      this.vms.set(spec.id, vm);
      const incoming = join(home, 'incoming.sock');
      let receiver: MigrationReceiver | undefined;
      let sink: ColdSink | undefined;
      let tunnel: TunnelDestination | undefined;
      try {
        if (cold) {
          // A stopped VM: the stream is its files (cold-archive.ts): NVRAM, vTPM state and,
          // with copyDisks, the images of its disks, each streamed to a file of its own.
          const nvram = this.nvramPath(home, record.generation, record.bundle !== undefined);
          if (copyDisks) this.incomingCopies.set(spec.id, { paths: coldDisks, tunnel: undefined });
          sink = await coldSink(
            incoming,
            (name) =>
              name === 'nvram'
                ? nvram
                : name.startsWith('tpm/')
                  ? join(home, name)
                  : copyDisks && name.startsWith('disk/')
                    ? images.get(name.slice('disk/'.length))
                    : undefined,
            mig.id,
          );
        } else if (copyDisks) {
          const copy: IncomingCopy = { paths: [], tunnel: undefined };
          this.incomingCopies.set(spec.id, copy);
          await this.createCopyTargets(spec, record, copy);
          await this.startQemu(vm, 'paused');
          const qmp = (vm.proc as VmProcess).qmp;
          await qmp.execute('migrate-set-capabilities', {
            capabilities: [
              { capability: 'events', state: true },
              { capability: 'late-block-activate', state: true },
            ],
          });
          const nbdSocket = join(home, 'nbd.sock');
          await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: nbdSocket } } });
          for (const d of spec.disks) {
            await qmp.execute('block-export-add', {
              type: 'nbd',
              id: `hs-export-${d.id}`,
              'node-name': diskNodeName(d.id),
              name: diskNodeName(d.id),
              writable: true,
            });
          }
          await qmp.execute('migrate-incoming', { uri: `unix:${incoming}` });
          tunnel = await TunnelDestination.listen({
            params: {
              migrationId: mig.id,
              cipher: mig.cipher,
              ...(mig.key && mig.nonce ? { key: mig.key, nonce: mig.nonce } : {}),
            },
            listen: { host: listenHost, port: 0 },
            targetPath: nbdSocket,
          });
          copy.tunnel = tunnel;
        } else {
          await this.startQemu(vm, true);
          const qmp = (vm.proc as VmProcess).qmp;
          await qmp.execute('migrate-set-capabilities', {
            capabilities: [{ capability: 'events', state: true }],
          });
          await qmp.execute('migrate-incoming', { uri: `unix:${incoming}` });
        }
        const coldSinkOf = sink;
        const expected = copyDisks ? spec.disks.map((d) => `disk/${d.id}`) : [];
        receiver = await MigrationReceiver.listen({
          migrationId: mig.id,
          cipher: mig.cipher,
          ...(mig.key ? { key: mig.key, nonce: mig.nonce } : {}),
          listen: { host: listenHost, port: 0 },
          qemuSocketPath: incoming,
          // Cold: the ACK (after which the source deletes its copy) only once every file is
          // whole and durable here, and the marker says so.
          // Live: QEMU has the whole stream; the marker says so before the ACK, so that a
          // restart keeps the VM the source will then let go of.
          beforeAck: coldSinkOf
            ? () => confirmReceived(coldSinkOf, home, { migrationId: mig.id, disks: coldDisks }, expected)
            : async () => writeIncomingMarker(home, { ...liveMarker, phase: 'received' }),
        });
      } catch (err) {
        sink?.close();
        await this.dropIncoming(vm);
        throw err;
      }
      const rcv = receiver;
      // A failed disk tunnel fails the incoming migration too.
      tunnel?.onFailure((err) => rcv.abort(err));
      const entry: IncomingMigration = {
        migrationId: mig.id,
        receiver,
        acknowledged: false,
        finished: Promise.resolve(),
      };
      this.incomingMigrations.set(spec.id, entry);
      receiver.done.then(
        () => (entry.acknowledged = true),
        () => undefined,
      );
      entry.finished = this.finishIncoming(vm, receiver, sink).finally(() => {
        if (this.incomingMigrations.get(spec.id) === entry) this.incomingMigrations.delete(spec.id);
      });
      const address = receiver.address as { host: string; port: number };
      const advertise = async (a: { host: string; port: number }): Promise<{ host: string; port: number }> =>
        this.opts.migrationAdvertise ? this.opts.migrationAdvertise(a) : a;
      const advertised = await advertise(address);
      trace('agent', 'migration incoming', {
        vmId: spec.id,
        migrationId: mig.id,
        cipher: mig.cipher,
        copyDisks,
      });
      return tunnel ? { ...advertised, nbd: await advertise(tunnel.address) } : advertised;
    } catch (err) {
      throw wrap(`receiving VM ${spec.id}`, err);
    } finally {
      zeroize(mig.key);
      zeroize(mig.nonce);
    }
  }

  /** Destination: waits for the stream and for QEMU to run it; cleans up on any failure. */
  private async finishIncoming(
    vm: Vm,
    receiver: MigrationReceiver,
    sink: ColdSink | undefined,
  ): Promise<void> {
    try {
      await receiver.done;
      if (sink) {
        // Acknowledged: every entry was whole and durable (beforeAck). Into place, then the
        // marker goes (a crash in between repeats the renames at the next start).
        const got = await sink.done;
        installReceived(got);
        clearIncomingMarker(vm.home);
        this.incomingCopies.delete(vm.id);
        vm.operation = null;
        trace('agent', 'cold migration received', {
          vmId: vm.id,
          bytes: got.reduce((n, g) => n + g.bytes, 0),
          files: got.map((g) => g.name),
        });
        return;
      }
      const proc = vm.proc;
      if (!proc) throw new HypersealError('HS_ERR_MIGRATION_FAILED', 'the destination QEMU is gone');
      const copy = this.incomingCopies.get(vm.id);
      if (copy) await this.finishCopy(vm.id, proc, copy);
      const deadline = Date.now() + 30_000;
      for (;;) {
        const { status } = await proc.status();
        if (status === 'running') break;
        if (status !== 'inmigrate' || Date.now() > deadline) {
          throw new HypersealError('HS_ERR_MIGRATION_FAILED', `the destination QEMU is ${status}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      vm.operation = null;
      this.incomingCopies.delete(vm.id);
      clearIncomingMarker(vm.home);
      trace('agent', 'migration received', { vmId: vm.id });
    } catch (err) {
      trace('agent', 'incoming migration failed', { vmId: vm.id, error: String(err) });
      sink?.close();
      for (const f of sink?.temporaryFiles() ?? []) removeImage(f);
      await this.dropIncoming(vm);
    }
  }

  /** Destination cleanup: QEMU gone, the VM's home gone (its disks stay: they are the source's). */
  private async dropIncoming(vm: Vm): Promise<void> {
    if (this.vms.get(vm.id) !== vm) return;
    // Images created here for a local-disk migration are this attempt's, not the source's.
    const copy = this.incomingCopies.get(vm.id);
    copy?.tunnel?.close();
    this.incomingCopies.delete(vm.id);
    await this.forgetHere(vm, copy?.paths ?? []);
  }

  /**
   * A VM that left this host (or never arrived): its QEMU, swtpm and home go, and `images`
   * (copies of local disks) with them; disks on a shared datastore stay.
   */
  private async forgetHere(vm: Vm, images: readonly string[]): Promise<void> {
    await vm.proc?.powerOff().catch(() => undefined);
    vm.proc = null;
    vm.serial?.close();
    stopSwtpm(vm.home);
    rmSync(vm.home, { recursive: true, force: true });
    for (const path of images) removeImage(path);
    this.vms.delete(vm.id);
  }

  /** Local-disk migration, destination: an empty image per disk, encrypted with the VM's own DEKs. */
  private async createCopyTargets(spec: VmSpec, record: VmRecord, copy: IncomingCopy): Promise<void> {
    const deks = record.bundle
      ? unwrapDeks(this.keyring.require(record.bundle.kekRef, spec.id), record.bundle)
      : undefined;
    try {
      for (const d of spec.disks) {
        mkdirSync(join(d.datastorePath, spec.id), { recursive: true, mode: 0o700 });
        const path = this.diskPath(spec.id, d, record.generation);
        copy.paths.push(path);
        if (deks) {
          const dek = deks.disks.get(d.id);
          if (!dek)
            throw new HypersealError('HS_ERR_KEY_MISMATCH', `VM ${spec.id} has no key for disk ${d.id}`);
          await createEncryptedQcow2(path, d.sizeMiB, dek, this.opts.qemuImgBinary);
        } else {
          await createQcow2Image(path, d.sizeMiB, this.opts.qemuImgBinary);
        }
      }
    } finally {
      if (deks) {
        zeroize(deks.home);
        for (const k of deks.disks.values()) zeroize(k);
      }
    }
  }

  /**
   * Local-disk migration, destination, once the memory arrived (QEMU paused, -S): the NBD
   * exports go once the source dropped its NBD client, then the VM runs.
   */
  private async finishCopy(id: string, proc: VmProcess, copy: IncomingCopy): Promise<void> {
    const qmp = proc.qmp;
    const deadline = Date.now() + 120_000;
    for (;;) {
      const { status } = await proc.status();
      if (status === 'paused' || status === 'prelaunch') break;
      if (status !== 'inmigrate' || Date.now() > deadline) {
        throw new HypersealError('HS_ERR_MIGRATION_FAILED', `the destination QEMU is ${status}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    const spec = this.requireSpec(this.get(id));
    for (const d of spec.disks) {
      // Refused while the source's NBD client is still connected: it disconnects after its mirror ended.
      for (;;) {
        try {
          await qmp.execute('block-export-del', { id: `hs-export-${d.id}` });
          break;
        } catch (err) {
          if (Date.now() > deadline) throw err;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    }
    await qmp.execute('nbd-server-stop');
    copy.tunnel?.close();
    copy.tunnel = undefined;
    await qmp.execute('cont');
  }

  async migrateOut(
    id: string,
    mig: ParsedMigration,
    peer: { host: string; port: number },
    opts: MigrateOutOptions = {},
  ): Promise<MigrationOutgoingResponse> {
    if (opts.cold === true) return this.migrateStoppedOut(id, mig, peer, opts.copyDisks ?? []);
    const nbdPeer = opts.nbdPeer;
    let sender: MigrationSender;
    let tunnel: TunnelSource | undefined;
    const vm = this.getFree(id, 'migrate it');
    try {
      this.requireCipher(mig);
      const { state } = await this.runtimeOf(vm);
      if (!vm.proc || (state !== 'running' && state !== 'paused')) {
        throw vmStateConflict(id, state, 'live-migrate (it must run)');
      }
      sender = await MigrationSender.open({
        migrationId: mig.id,
        cipher: mig.cipher,
        ...(mig.key ? { key: mig.key, nonce: mig.nonce } : {}),
        peer,
        qemuSocketPath: join(vm.home, 'outgoing.sock'),
      });
      if (nbdPeer) {
        try {
          tunnel = await TunnelSource.listen({
            params: {
              migrationId: mig.id,
              cipher: mig.cipher,
              ...(mig.key && mig.nonce ? { key: mig.key, nonce: mig.nonce } : {}),
            },
            socketPath: join(vm.home, 'nbd-out.sock'),
            peer: nbdPeer,
          });
        } catch (err) {
          sender.abort();
          throw err;
        }
      }
    } catch (err) {
      throw wrap(`migrating VM ${id}`, err);
    } finally {
      zeroize(mig.key);
      zeroize(mig.nonce);
    }
    const proc = vm.proc as VmProcess;
    const disks = tunnel ? this.requireSpec(vm).disks : [];
    const mirrors: { job: string; node: string; path: string }[] = [];
    const qmp = proc.qmp;
    vm.operation = { kind: 'migrate', progress: 0 };
    const ticker = setInterval(() => {
      void qmp
        .execute('query-migrate')
        .then((r) => {
          const ram = (r as { ram?: { total?: number; remaining?: number } }).ram;
          if (vm.operation && ram?.total) {
            const done = Math.floor((100 * (ram.total - (ram.remaining ?? 0))) / ram.total);
            const sent = sender.progress();
            vm.operation = {
              kind: 'migrate',
              progress: Math.max(vm.operation.progress, Math.min(99, done)),
              bytes: sent.bytes,
              bytesPerSecond: Math.round(sent.bytesPerSecond),
              remainingBytes: ram.remaining ?? 0,
            };
          }
        })
        .catch(() => undefined);
    }, 500);
    try {
      // Held from before the first byte until the manager resolves it (or the stream fails
      // before its END): an agent killed at any point finds the hold at its next start, so
      // the VM is resumed here only once the destination is known not to have it.
      this.holdUnresolved(
        vm,
        mig.id,
        disks.map((d) => ({ path: this.diskPath(id, d, vm.record.generation) })),
      );
      await qmp.execute('migrate-set-capabilities', {
        capabilities: [{ capability: 'events', state: true }],
      });
      await qmp.execute('migrate-set-parameters', { 'max-bandwidth': 4 * 1024 * 1024 * 1024 });
      if (tunnel) {
        // Local disks: each mirrored through the tunnel into the destination's NBD export
        // and kept in sync until the memory has moved.
        const t = tunnel;
        const tunnelFailed = new Promise<never>((_, reject) => t.onFailure(reject));
        tunnelFailed.catch(() => undefined);
        for (const d of disks) {
          const m = {
            job: `hs-mirror-${d.id}`,
            node: `hs-mirror-${d.id}`,
            path: this.diskPath(id, d, vm.record.generation),
          };
          await qmp.execute('blockdev-add', {
            driver: 'nbd',
            'node-name': m.node,
            server: { type: 'unix', path: t.socketPath },
            export: diskNodeName(d.id),
          });
          mirrors.push(m);
          const ready = qmp.waitForEvent('BLOCK_JOB_READY', {
            timeoutMs: 24 * 3600_000,
            match: (e) => e.data.device === m.job,
          });
          const ended = qmp
            .waitForEvent('BLOCK_JOB_COMPLETED', {
              timeoutMs: 24 * 3600_000,
              match: (e) => e.data.device === m.job,
            })
            .then((e) => {
              throw new HypersealError(
                'HS_ERR_MIGRATION_FAILED',
                `copying disk ${d.id} ended before it was in sync: ${String(e.data.error ?? 'no error given')}`,
              );
            });
          ready.catch(() => undefined);
          ended.catch(() => undefined);
          await qmp.execute('blockdev-mirror', {
            'job-id': m.job,
            device: diskNodeName(d.id),
            target: m.node,
            sync: 'full',
          });
          await Promise.race([ready, ended, tunnelFailed]);
          trace('agent', 'disk in sync', { vmId: id, disk: d.id });
        }
      }
      const final = qmp.waitForEvent('MIGRATION', {
        timeoutMs: 24 * 3600_000,
        match: (e) => ['completed', 'failed', 'cancelled'].includes(String(e.data.status)),
      });
      await qmp.execute('migrate', { uri: `unix:${sender.qemuSocketPath}` });
      const status = String((await final).data.status);
      if (status !== 'completed') {
        sender.abort(new HypersealError('HS_ERR_MIGRATION_FAILED', `the source QEMU's migration ${status}`));
      }
      // Only the destination's authenticated ACK says it has every byte.
      const result = await sender.done;
      crashPoint('migrate-out:after-ack');
      if (status !== 'completed') {
        throw new HypersealError('HS_ERR_MIGRATION_FAILED', `the source QEMU's migration ${status}`);
      }
      // Acknowledged: the VM stays paused (and held) here until the manager has seen it run
      // on the destination (resolveOutgoing); nothing from here on may resume it.
      // Local disks: the mirrors end without a pivot (the destination has every write),
      // then the NBD clients go, which lets the destination drop its exports and run.
      await this.endMirrors(qmp, mirrors, true).catch((e: unknown) => {
        trace('agent', 'ending disk mirrors failed', { vmId: id, error: String(e) });
      });
      tunnel?.close();
      trace('agent', 'migrated out, held until resolved', {
        vmId: id,
        migrationId: mig.id,
        bytes: result.bytes,
      });
      return outgoingResult(result);
    } catch (err) {
      sender.abort();
      if (sender.endSent) {
        // The whole stream went but no ACK came: the destination may run the VM already.
        // Resuming here could run it twice; it stays paused (and held) until the manager
        // asks the destination which host keeps it.
        tunnel?.close();
        await this.endMirrors(qmp, mirrors, false).catch((e: unknown) => {
          trace('agent', 'ending disk mirrors failed', { vmId: id, error: String(e) });
        });
        trace('agent', 'migration out unconfirmed', { vmId: id, error: String(err) });
        throw unconfirmed(id, mig.id, err);
      }
      await qmp.execute('migrate_cancel').catch(() => undefined);
      tunnel?.close();
      await this.endMirrors(qmp, mirrors, false).catch((e: unknown) => {
        trace('agent', 'ending disk mirrors failed', { vmId: id, error: String(e) });
      });
      // No END went out: the destination cannot have the VM.
      this.releaseHold(vm);
      // The VM keeps running here: resumed if QEMU had paused it for the last copy.
      await resumeAfterMigration(proc).catch((e: unknown) => {
        trace('agent', 'cont after failed migration failed', { vmId: id, error: String(e) });
      });
      trace('agent', 'migration out failed', { vmId: id, error: String(err) });
      throw wrap(`migrating VM ${id}`, err);
    } finally {
      clearInterval(ticker);
      vm.operation = null;
    }
  }

  /**
   * Ends local-disk mirrors without a pivot (block-job-cancel) and deletes their NBD client
   * nodes. `strict`: after a completed migration, where each must end cleanly.
   */
  private async endMirrors(
    qmp: VmProcess['qmp'],
    mirrors: readonly { job: string; node: string }[],
    strict: boolean,
  ): Promise<void> {
    for (const m of mirrors) {
      const jobs = (await qmp.execute('query-block-jobs')) as { device: string }[];
      if (jobs.some((j) => j.device === m.job)) {
        const ended = qmp.waitForEvent('BLOCK_JOB_COMPLETED', {
          timeoutMs: 60_000,
          match: (e) => e.data.device === m.job,
        });
        const cancelled = strict
          ? undefined
          : qmp.waitForEvent('BLOCK_JOB_CANCELLED', {
              timeoutMs: 60_000,
              match: (e) => e.data.device === m.job,
            });
        ended.catch(() => undefined);
        cancelled?.catch(() => undefined);
        await qmp.execute('block-job-cancel', strict ? { device: m.job } : { device: m.job, force: true });
        const e = await (cancelled ? Promise.race([ended, cancelled]) : ended);
        if (strict && e.data.error !== undefined) {
          throw new HypersealError(
            'HS_ERR_MIGRATION_FAILED',
            `disk mirror ${m.job}: ${String(e.data.error)}`,
          );
        }
      }
      if (strict) await qmp.execute('blockdev-del', { 'node-name': m.node });
      else await qmp.execute('blockdev-del', { 'node-name': m.node }).catch(() => undefined);
    }
  }

  /**
   * Cold migration: the stopped VM's NVRAM, vTPM state and the images of `copyDisks`
   * (disks on this host's local datastore) through the channel; once the destination has
   * acknowledged all of it, the VM and those images leave this host.
   */
  /** Marks the VM held for the manager's answer, on disk too (an agent restart keeps it). */
  private holdUnresolved(vm: Vm, migrationId: string, copied: readonly { path: string }[]): void {
    vm.unresolved = { migrationId, copiedImages: copied.map((c) => c.path) };
    writeFileAtomic(join(vm.home, UNRESOLVED_FILE), JSON.stringify(vm.unresolved), 0o600);
  }

  private releaseHold(vm: Vm): void {
    vm.unresolved = null;
    rmSync(join(vm.home, UNRESOLVED_FILE), { force: true });
  }

  async resolveOutgoing(id: string, migrationId: string, moved: boolean): Promise<'gone' | 'kept'> {
    const vm = this.vms.get(id);
    if (vm === undefined) {
      if (moved) return 'gone';
      throw vmNotFound(id);
    }
    if (vm.unresolved?.migrationId !== migrationId) {
      // Nothing held for this migration: the VM is here as it is, and it stays.
      if (moved) {
        throw vmStateConflict(id, 'not held for a migration', `end it for migration ${migrationId}`);
      }
      return 'kept';
    }
    const held = vm.unresolved;
    if (moved) {
      // The destination keeps it: the local images that were copied go too.
      await this.forgetHere(vm, held.copiedImages);
      trace('agent', 'migrated out', { vmId: id, migrationId });
      return 'gone';
    }
    // The destination does not have it: it runs here again (a stopped VM stays stopped).
    if (vm.proc) await resumeAfterMigration(vm.proc);
    this.releaseHold(vm);
    trace('agent', 'migration resolved: kept here', { vmId: id, migrationId });
    return 'kept';
  }

  async settleIncoming(id: string, migrationId: string): Promise<'aborted' | 'absent' | 'committed'> {
    const entry = this.incomingMigrations.get(id);
    let aborted = false;
    if (entry !== undefined && entry.migrationId === migrationId) {
      if (!entry.acknowledged) {
        entry.receiver.abort(
          new HypersealError(
            'HS_ERR_MIGRATION_ABORTED',
            `migration ${migrationId} was aborted by the manager`,
          ),
        );
        aborted = true;
      }
      // Acknowledged (or acknowledging as the abort came): the VM runs here, or fails to.
      await entry.finished;
    } else if (entry !== undefined) {
      // Another migration of this VM is under way here: not the one asked about.
      return 'absent';
    }
    if (this.vms.has(id)) return 'committed';
    return aborted ? 'aborted' : 'absent';
  }

  private async migrateStoppedOut(
    id: string,
    mig: ParsedMigration,
    peer: { host: string; port: number },
    copyDisks: readonly string[],
  ): Promise<MigrationOutgoingResponse> {
    const vm = this.getFree(id, 'migrate it');
    let sender: MigrationSender;
    let disks: ColdFile[];
    try {
      this.requireCipher(mig);
      const spec = this.requireSpec(vm);
      disks = copyDisks.map((diskId) => {
        const d = spec.disks.find((x) => x.id === diskId);
        if (d === undefined) {
          throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `VM ${id} has no disk ${diskId} to copy`);
        }
        return { name: `disk/${d.id}`, path: this.diskPath(id, d, vm.record.generation) };
      });
      await this.requireStopped(vm, 'migrate it stopped');
      sender = await MigrationSender.open({
        migrationId: mig.id,
        cipher: mig.cipher,
        ...(mig.key ? { key: mig.key, nonce: mig.nonce } : {}),
        peer,
        qemuSocketPath: join(vm.home, 'outgoing.sock'),
      });
    } catch (err) {
      throw wrap(`migrating VM ${id}`, err);
    } finally {
      zeroize(mig.key);
      zeroize(mig.nonce);
    }
    vm.operation = { kind: 'migrate', progress: 0 };
    try {
      // Held from before the first byte, as for a running VM (see migrateOut).
      this.holdUnresolved(vm, mig.id, disks);
      // The files as they are on disk (ciphertext when the VM is encrypted).
      await sendColdStream(sender.qemuSocketPath, this.coldFiles(vm), disks, (sent, total) => {
        const rate = sender.progress();
        vm.operation = {
          kind: 'migrate',
          progress: Math.min(99, Math.floor((100 * sent) / Math.max(1, total))),
          bytes: rate.bytes,
          bytesPerSecond: Math.round(rate.bytesPerSecond),
          remainingBytes: total - sent,
        };
      });
      const result = await sender.done;
      await this.forgetHere(
        vm,
        disks.map((d) => d.path),
      );
      trace('agent', 'migrated out (stopped)', {
        vmId: id,
        migrationId: mig.id,
        bytes: result.bytes,
        disks: disks.map((d) => d.name),
      });
      return outgoingResult(result);
    } catch (err) {
      // A socket error here (EPIPE) is the symptom; the channel knows the cause.
      sender.abort();
      const cause = await sender.done.then(
        () => undefined,
        (e: unknown) => e,
      );
      const shown =
        !isHypersealError(err) && isHypersealError(cause) && cause.code !== 'HS_ERR_MIGRATION_ABORTED'
          ? cause
          : err;
      if (sender.endSent) {
        // Sent whole, not acknowledged: the destination may have installed the files. They
        // stay here (held) too until the manager has the destination's answer.
        throw unconfirmed(id, mig.id, shown);
      }
      this.releaseHold(vm);
      throw wrap(`migrating VM ${id}`, shown);
    } finally {
      vm.operation = null;
    }
  }

  /** A stopped VM's files that travel on cold migration: its NVRAM, its vTPM's state files. */
  private coldFiles(vm: Vm): ColdEntry[] {
    const entries: ColdEntry[] = [];
    const nvram = this.nvramPath(vm.home, vm.record.generation, vm.record.bundle !== undefined);
    if (existsSync(nvram)) entries.push({ name: 'nvram', data: readFileSync(nvram) });
    const tpmDir = join(vm.home, VTPM_FILES.stateDir);
    if (existsSync(tpmDir)) {
      for (const name of readdirSync(tpmDir).sort()) {
        const entry = `${VTPM_FILES.stateDir}/${name}`;
        // swtpm's lock file and anything else that is not state stay behind.
        if (!COLD_ENTRY_NAME.test(entry) || !statSync(join(tpmDir, name)).isFile()) continue;
        entries.push({ name: entry, data: readFileSync(join(tpmDir, name)) });
      }
    }
    return entries;
  }

  private requireCipher(mig: ParsedMigration): void {
    if (mig.cipher === 'aes-256-gcm' && this.opts.migrationEncryption === false) {
      throw new HypersealError(
        'HS_ERR_MIGRATION_ENCRYPTION_UNAVAILABLE',
        'this agent does not encrypt migrations (migrationEncryption is off)',
      );
    }
  }

  /** The source's record made this host's: same identity, generation and keys; this host's firmware. */
  private migratedRecord(spec: VmSpec, raw: Record<string, unknown>): VmRecord {
    const bad = (what: string): HypersealError =>
      new HypersealError('HS_ERR_INVALID_ARGUMENT', `record: ${what}`);
    if (raw.version !== RECORD_VERSION) throw bad(`version must be ${RECORD_VERSION}`);
    if (typeof raw.uuid !== 'string' || !UUID.test(raw.uuid)) throw bad('uuid must be a UUID');
    const generation = raw.generation;
    if (typeof generation !== 'number' || !Number.isSafeInteger(generation) || generation < 0) {
      throw bad('generation must be a non-negative integer');
    }
    const { ovmf } = this.hostRuntime(spec);
    const varsKeys = keySetDigest(spec);
    const base = {
      version: RECORD_VERSION,
      uuid: raw.uuid,
      varsTemplate: ovmf?.varsTemplate ?? null,
      ...(varsKeys === undefined ? {} : { varsKeys }),
      generation,
    };
    if (spec.encryption === null) {
      if (raw.bundle !== undefined) throw bad('the VM is encrypted; the spec says plain');
      return { ...base, spec };
    }
    const bundle = parseBundle(raw.bundle, 'record.bundle');
    if (bundle.kekRef !== spec.encryption.kekRef || typeof raw.sealedSpec !== 'string') {
      throw bad('the encryption bundle does not match the spec');
    }
    const record: VmRecord = { ...base, sealedSpec: raw.sealedSpec, bundle };
    // The KEK must be here already (the manager pushes it first) and open the sealed spec.
    const deks = unwrapDeks(this.keyring.require(bundle.kekRef, spec.id), bundle);
    try {
      this.openSpec(spec.id, record, deks.home);
    } finally {
      zeroizeDeks(deks);
    }
    return record;
  }

  /* ---------------------------------------------------------------- internals */

  private get(id: string): Vm {
    const vm = this.vms.get(id);
    if (!vm) throw vmNotFound(id);
    return vm;
  }

  /** The VM, unless it is held for a migration's answer (nothing may change it then). */
  private getFree(id: string, what: string): Vm {
    const vm = this.get(id);
    if (vm.unresolved) {
      throw vmStateConflict(id, `held for migration ${vm.unresolved.migrationId}`, what);
    }
    return vm;
  }

  /** The spec, or HS_ERR_VM_LOCKED for an encrypted VM whose KEK has not been pushed. */
  private requireSpec(vm: Vm): VmSpec {
    if (vm.spec) return vm.spec;
    const ref = vm.record.bundle?.kekRef ?? '?';
    throw new HypersealError(
      'HS_ERR_VM_LOCKED',
      `VM ${vm.id} is locked: this host does not hold its key ${ref} (the manager pushes it; see hyperseal vm unlock)`,
      { vmId: vm.id, kekRef: ref },
    );
  }

  private async requireStopped(vm: Vm, what: string): Promise<void> {
    const { state } = await this.runtimeOf(vm);
    if (state !== 'stopped' && state !== 'crashed') throw vmStateConflict(vm.id, state, what);
    this.removeStalePidfile(vm);
  }

  private newVm(id: string, home: string, record: VmRecord, spec: VmSpec | null): Vm {
    return {
      id,
      record,
      spec,
      home,
      serial: null,
      operation: null,
      proc: null,
      busy: null,
      attaching: null,
      unresolved: readUnresolved(home),
    };
  }

  private diskPath(vmId: string, disk: { id: string; datastorePath: string }, generation: number): string {
    const g = generation === 0 ? '' : `.g${generation}`;
    return join(disk.datastorePath, vmId, `${disk.id}${g}.qcow2`);
  }

  private nvramPath(home: string, generation: number, encrypted: boolean): string {
    if (encrypted) return join(home, `OVMF_VARS.g${generation}.luks`);
    return join(home, generation === 0 ? 'OVMF_VARS.fd' : `OVMF_VARS.g${generation}.fd`);
  }

  private qemuSpec(spec: VmSpec, uuid: string, generation: number, home: string): QemuVmSpec {
    const encrypted = spec.encryption !== null;
    return {
      // The id, not the display name: QEMU's -name must be a plain token.
      name: spec.id,
      uuid,
      cpus: spec.cpus,
      memoryMiB: spec.memoryMiB,
      firmware: spec.firmware,
      secureBoot: spec.secureBoot,
      disks: spec.disks.map((d) => ({
        id: d.id,
        path: this.diskPath(spec.id, d, generation),
        format: 'qcow2' as const,
      })),
      nics: spec.nics.map((n) => ({ id: n.id, mac: n.mac, network: n.network })),
      // An encrypted VM's console is guest data: a socket read into memory, never a file.
      ...(encrypted
        ? { serialSocketPath: join(home, 'serial.sock') }
        : { serialLogPath: join(home, 'serial.log') }),
      qmpSocketPath: join(home, 'qmp.sock'),
      pidFilePath: join(home, 'qemu.pid'),
      ...(spec.firmware === 'efi' ? { nvramPath: this.nvramPath(home, generation, encrypted) } : {}),
      ...(spec.vtpm === true ? { tpmSocketPath: join(home, VTPM_FILES.socket) } : {}),
    };
  }

  /** Enough of a QEMU spec to find and attach to a running QEMU (works for a locked VM too). */
  private processSpec(vm: Vm): QemuVmSpec {
    return {
      name: vm.id,
      uuid: vm.record.uuid,
      cpus: 1,
      memoryMiB: 32,
      firmware: 'bios',
      disks: [],
      nics: [],
      serialLogPath: join(vm.home, 'serial.log'),
      qmpSocketPath: join(vm.home, 'qmp.sock'),
      pidFilePath: join(vm.home, 'qemu.pid'),
    };
  }

  /**
   * The host side of the command line, for checking a spec at define time and choosing
   * the accelerator; VmProcess.start makes the same OVMF choice when it really starts.
   */
  private hostRuntime(spec: VmSpec): { host: HostRuntime; ovmf: OvmfBuild | undefined } {
    const ovmf =
      spec.firmware === 'efi'
        ? selectOvmf(
            this.ovmfBuilds,
            spec.secureBoot
              ? ovmfRequirementFor(spec.secureBootKeySet ?? MICROSOFT_KEY_SET)
              : { secureBoot: false },
          )
        : undefined;
    return {
      host: {
        accel: this.accel,
        ...(ovmf ? { ovmf: { code: ovmf.code, requiresSmm: ovmf.requiresSmm } } : {}),
        nicBackend: this.opts.nicBackend ?? 'user-isolated',
      },
      ovmf,
    };
  }

  /** The record fields that carry the spec: plain, or sealed with the bundle beside it. */
  private specFields(
    spec: VmSpec,
    deks: Deks | undefined,
    bundle: EncryptionBundle | undefined,
  ): Pick<VmRecord, 'spec' | 'sealedSpec' | 'bundle'> {
    if (!bundle) return { spec };
    if (!deks) throw new HypersealError('HS_ERR_INTERNAL', `sealing the spec of ${spec.id} needs its DEKs`);
    return {
      sealedSpec: sealWithHomeKey(deks.home, spec.id, SEALED_SPEC, Buffer.from(JSON.stringify(spec))),
      bundle,
    };
  }

  private openSpec(id: string, record: VmRecord, homeDek: Buffer): VmSpec {
    if (record.sealedSpec === undefined)
      throw new HypersealError('HS_ERR_CONFIG', `VM ${id} has no sealed spec`);
    const spec = parseVmSpec(
      JSON.parse(openWithHomeKey(homeDek, id, SEALED_SPEC, record.sealedSpec).toString('utf8')),
    );
    if (spec.id !== id)
      throw new HypersealError('HS_ERR_CONFIG', `the sealed spec of ${id} names ${spec.id}`);
    return spec;
  }

  /** A fresh store with a custom key set's keys, or undefined when the template is used as is. */
  private async keyedVars(spec: VmSpec, template: string): Promise<Buffer | undefined> {
    if (!spec.secureBoot || spec.secureBootKeySet === undefined) return undefined;
    return buildVarsForKeySet(template, spec.secureBootKeySet);
  }

  /** Refuses what would re-encrypt the home while a vTPM's state is bound to its key. */
  private requireNoVtpmState(vm: Vm, what: string): void {
    if (existsSync(join(vm.home, VTPM_FILES.stateDir))) {
      throw cryptoConflict(
        vm.id,
        `has vTPM state bound to its home key: ${what} would make it unreadable (turn the vTPM off first)`,
      );
    }
  }

  private writeRecord(home: string, record: VmRecord): void {
    writeFileAtomic(join(home, SPEC_FILE), JSON.stringify(record, null, 2) + '\n', 0o600);
  }

  /**
   * Copies every image of `vm` to the next generation (decrypting with `srcDeks`,
   * encrypting with `dstDeks`), commits by replacing spec.json, then removes the old
   * generation. See "Generations" at the top: a kill -9 anywhere leaves old or new.
   */
  private async recopy(
    vm: Vm,
    kind: VmCryptoOperation,
    next: VmSpec,
    srcDeks: Deks | undefined,
    dstDeks: Deks | undefined,
    bundle: EncryptionBundle | undefined,
  ): Promise<void> {
    const spec = this.requireSpec(vm);
    const gen = vm.record.generation;
    const nextGen = gen + 1;
    const steps = spec.disks.length + 1;
    vm.operation = { kind, progress: 0 };
    try {
      for (const [i, d] of spec.disks.entries()) {
        const dst = this.diskPath(vm.id, d, nextGen);
        rmSync(dst, { force: true }); // a stray of an earlier attempt
        await convertImage({
          src: { path: this.diskPath(vm.id, d, gen), dek: srcDeks?.disks.get(d.id) },
          dst: { path: dst, dek: dstDeks?.disks.get(d.id) },
          onProgress: (p) => (vm.operation = { kind, progress: Math.round((100 * (i + p / 100)) / steps) }),
          qemuImgBinary: this.opts.qemuImgBinary,
        });
        crashPoint(`${kind}:after-disk`);
      }
      const srcNvram = this.nvramPath(vm.home, gen, srcDeks !== undefined);
      if (spec.firmware === 'efi' && existsSync(srcNvram)) {
        const dst = this.nvramPath(vm.home, nextGen, dstDeks !== undefined);
        rmSync(dst, { force: true });
        await convertNvram({
          src: { path: srcNvram, dek: srcDeks?.home },
          dst: { path: dst, dek: dstDeks?.home },
          qemuImgBinary: this.opts.qemuImgBinary,
        });
      }
      crashPoint(`${kind}:before-commit`);
      const record: VmRecord = {
        version: RECORD_VERSION,
        uuid: vm.record.uuid,
        varsTemplate: vm.record.varsTemplate,
        ...(vm.record.varsKeys === undefined ? {} : { varsKeys: vm.record.varsKeys }),
        generation: nextGen,
        ...this.specFields(next, dstDeks, bundle),
      };
      this.writeRecord(vm.home, record);
      vm.record = record;
      vm.spec = next;
      crashPoint(`${kind}:after-commit`);
    } catch (err) {
      throw wrap(`${kind} of VM ${vm.id}`, err);
    } finally {
      vm.operation = null;
      // Whichever generation lost (the new one on failure, the old one on success).
      this.collectStrays(vm);
    }
  }

  /** Removes image files of any generation but the VM's own, and temporary files. */
  private collectStrays(vm: Vm): void {
    const spec = vm.spec;
    if (!spec) return; // locked: its disks' datastores are in the sealed spec
    const dirs = new Set([vm.home, ...spec.disks.map((d) => join(d.datastorePath, vm.id))]);
    for (const dir of dirs) {
      let names: string[];
      try {
        names = readdirSync(dir);
      } catch {
        continue;
      }
      for (const name of names) {
        const m = IMAGE_FILE.exec(name);
        const stray = name.includes('.tmp-') || (m !== null && Number(m[2] ?? 0) !== vm.record.generation);
        if (stray) {
          trace('agent', 'removing stray file', { vmId: vm.id, file: join(dir, name) });
          rmSync(join(dir, name), { force: true });
        }
      }
    }
  }

  /** Deletes the directories of a VM that has no record (leftovers of a failed clone). */
  private removeVmFiles(spec: VmSpec, home: string): void {
    if (existsSync(join(home, SPEC_FILE))) return; // someone's VM: never
    for (const d of spec.disks) rmSync(join(d.datastorePath, spec.id), { recursive: true, force: true });
    rmSync(home, { recursive: true, force: true });
  }

  private async resize(path: string, sizeMiB: number, dek: Buffer | undefined): Promise<void> {
    if (dek) await resizeEncryptedQcow2(path, sizeMiB, dek, this.opts.qemuImgBinary);
    else await run(this.opts.qemuImgBinary ?? 'qemu-img', ['resize', '-q', path, `${sizeMiB}M`]);
  }

  /** For reads, which do not hold the VM's lock: a power operation under way answers for QEMU. */
  private observe(vm: Vm): Promise<VmRuntime> {
    if (vm.busy === null) return this.runtimeOf(vm);
    const pid = vm.proc?.pid;
    return Promise.resolve({
      ...this.cryptoState(vm),
      id: vm.id,
      state: vm.busy,
      ...(pid !== undefined ? { pid } : {}),
      simulated: false,
    });
  }

  private cryptoState(
    vm: Vm,
  ): Pick<VmRuntime, 'encryption' | 'locked' | 'operation' | 'unresolvedMigration'> {
    const bundle = vm.record.bundle;
    return {
      encryption: bundle ? { kekRef: bundle.kekRef } : null,
      locked: bundle !== undefined && !this.keyring.has(bundle.kekRef),
      ...(vm.operation ? { operation: { ...vm.operation } } : {}),
      ...(vm.unresolved ? { unresolvedMigration: vm.unresolved.migrationId } : {}),
    };
  }

  /**
   * The VM's state as QEMU sees it. Attaches to a running QEMU we hold no connection to
   * (started before an agent restart), and drops a connection whose QEMU has gone.
   */
  private async runtimeOf(vm: Vm): Promise<VmRuntime> {
    const id = vm.id;
    const crypto = this.cryptoState(vm);
    if (vm.proc && !vm.proc.isAlive()) {
      await vm.proc.detach().catch(() => undefined);
      vm.proc = null;
    }
    if (!vm.proc) {
      const pspec = this.processSpec(vm);
      const pid = await findRunningQemu(pspec);
      if (pid !== undefined) {
        vm.attaching ??= VmProcess.attach(pspec)
          .then((proc) => {
            vm.proc = proc;
            // An encrypted VM's console after an agent restart: from now on, in memory.
            if (vm.record.bundle && !vm.serial) {
              vm.serial = new SerialSocketReader(join(vm.home, 'serial.sock'), { label: id });
            }
          })
          .finally(() => (vm.attaching = null));
        try {
          await vm.attaching;
        } catch (err) {
          // It runs, but its monitor does not answer us (another client holds it, or it
          // hangs): say so rather than guess.
          trace('agent', 'attach failed', { vmId: id, pid, error: String(err) });
          return { id, state: 'unknown', pid, simulated: false, ...crypto };
        }
      }
    }
    if (vm.proc) {
      const pid = vm.proc.pid;
      try {
        const { status } = await vm.proc.status();
        return { id, state: runtimeState(status), pid, simulated: false, ...crypto };
      } catch (err) {
        trace('agent', 'status failed', { vmId: id, pid, error: String(err) });
        return { id, state: vm.proc.isAlive() ? 'unknown' : 'crashed', simulated: false, ...crypto };
      }
    }
    // No QEMU. A clean exit removes the pidfile; one left behind means it died.
    return {
      id,
      state: existsSync(join(vm.home, 'qemu.pid')) ? 'crashed' : 'stopped',
      simulated: false,
      ...crypto,
    };
  }

  private removeStalePidfile(vm: Vm): void {
    const pidFile = join(vm.home, 'qemu.pid');
    try {
      const pid = Number(readFileSync(pidFile, 'utf8').trim());
      if (!Number.isSafeInteger(pid) || pid <= 1 || !isPidAlive(pid)) {
        rmSync(pidFile, { force: true });
        rmSync(join(vm.home, 'qmp.sock'), { force: true });
        rmSync(join(vm.home, 'serial.sock'), { force: true });
      }
    } catch {
      // no pidfile: nothing to clean
    }
  }

  /**
   * Reads every `<home datastore>/<id>/spec.json`; a damaged one is skipped and traced.
   * Encrypted VMs load locked (their spec is sealed) until the manager pushes their KEK.
   */
  private load(): void {
    for (const entry of readdirSync(this.homeRoot, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      const home = join(this.homeRoot, entry.name);
      const file = join(home, SPEC_FILE);
      // A migration cut by our own death: finished if acknowledged, else dropped (a live
      // one's QEMU, waiting for or half-way through the stream, ends first).
      const marker = readIncomingMarker(home);
      if (marker?.kind === 'live' && marker.phase !== 'received') endIncomingQemu(home);
      if (!recoverIncoming(home)) {
        trace('agent', 'dropped an unfinished incoming migration', { vmId: entry.name });
        continue;
      }
      if (!existsSync(file)) continue; // a define that never committed, or not ours
      try {
        const raw = JSON.parse(readFileSync(file, 'utf8')) as Partial<VmRecord>;
        if (
          (raw.version !== 1 && raw.version !== RECORD_VERSION) ||
          typeof raw.uuid !== 'string' ||
          !UUID.test(raw.uuid)
        ) {
          throw new Error(`not a version 1 or ${RECORD_VERSION} VM record`);
        }
        const generation = raw.version === 1 ? 0 : raw.generation;
        if (typeof generation !== 'number' || !Number.isSafeInteger(generation) || generation < 0) {
          throw new Error('no valid generation');
        }
        const varsTemplate = typeof raw.varsTemplate === 'string' ? raw.varsTemplate : null;
        const base = {
          version: RECORD_VERSION,
          uuid: raw.uuid.toLowerCase(),
          varsTemplate,
          ...(typeof raw.varsKeys === 'string' ? { varsKeys: raw.varsKeys } : {}),
          generation,
        };
        let record: VmRecord;
        let spec: VmSpec | null = null;
        if (raw.bundle !== undefined) {
          if (typeof raw.sealedSpec !== 'string')
            throw new Error('an encrypted record without its sealed spec');
          record = { ...base, sealedSpec: raw.sealedSpec, bundle: parseBundle(raw.bundle, file) };
        } else {
          spec = parseVmSpec(raw.spec);
          if (spec.id !== entry.name) throw new Error(`its id ${spec.id} is not its directory's name`);
          if (spec.encryption !== null) throw new Error('a plain record whose spec says encrypted');
          record = { ...base, spec };
        }
        const vm = this.newVm(entry.name, home, record, spec);
        this.vms.set(entry.name, vm);
        this.collectStrays(vm);
      } catch (err) {
        // One bad file must not keep the agent, and every other VM, from starting.
        trace('agent', 'skipping unreadable VM record', { file, error: String(err) });
      }
    }
  }
}

/** The entry point the CLI loads on demand (`hyperseal agent serve --driver qemu`, `up`). */
/** `cont` for a source QEMU that a migration left paused (for its last copy, or after it). */
async function resumeAfterMigration(proc: VmProcess): Promise<void> {
  const { status } = await proc.status().catch(() => ({ status: 'unknown' }));
  if (status === 'paused' || status === 'postmigrate' || status === 'finish-migrate') {
    await proc.qmp.execute('cont');
  }
}

/** Ends the QEMU (and swtpm) of a half-received live migration found at agent start. */
function endIncomingQemu(home: string): void {
  stopSwtpm(home);
  let pid: number;
  let uuid: unknown;
  try {
    pid = Number(readFileSync(join(home, 'qemu.pid'), 'utf8').trim());
    uuid = (JSON.parse(readFileSync(join(home, SPEC_FILE), 'utf8')) as { uuid?: unknown }).uuid;
  } catch {
    return; // no QEMU was started, or no record: nothing of ours runs
  }
  if (!Number.isSafeInteger(pid) || pid <= 1 || typeof uuid !== 'string') return;
  if (isPidAlive(pid) && isQemuOf(pid, uuid)) {
    trace('agent', 'ending the QEMU of a half-received migration', { pid, home });
    process.kill(pid, 'SIGKILL');
  }
}

/** In a VM's home while it is held for the manager's answer after its stream went whole. */
const UNRESOLVED_FILE = 'unresolved-migration.json';

function readUnresolved(home: string): UnresolvedMigration | null {
  try {
    const raw = JSON.parse(readFileSync(join(home, UNRESOLVED_FILE), 'utf8')) as Partial<UnresolvedMigration>;
    if (typeof raw.migrationId !== 'string' || !Array.isArray(raw.copiedImages)) return null;
    return {
      migrationId: raw.migrationId,
      copiedImages: raw.copiedImages.filter((p): p is string => typeof p === 'string'),
    };
  } catch {
    return null;
  }
}

function unconfirmed(id: string, migrationId: string, cause: unknown): HypersealError {
  const why = cause instanceof Error ? cause.message : String(cause);
  return new HypersealError(
    'HS_ERR_MIGRATION_UNCONFIRMED',
    `VM ${id}: migration ${migrationId} was sent whole but not acknowledged (${why}); it is held paused here until the destination answers`,
    { vmId: id, migrationId },
    { cause },
  );
}

/** What the source reports of a finished outgoing migration (live or cold). */
function outgoingResult(result: Awaited<MigrationSender['done']>): MigrationOutgoingResponse {
  return {
    bytes: result.bytes,
    wireBytes: result.wireBytes,
    elapsedMs: Math.round(result.elapsedMs),
    bytesPerSecond: Math.round(result.bytesPerSecond),
    cipher: result.cipher,
  };
}

export function openQemuDriver(dataDir: string, opts: QemuDriverOptions = {}): Promise<QemuDriver> {
  return QemuDriver.open(dataDir, opts);
}
