/**
 * One VM's QEMU process: start it, re-attach to it after the agent restarts, drive it over
 * QMP, stop it. QEMU runs detached (its own session and process group, stdio on a log file,
 * cwd "/") so that it outlives the agent; the agent finds it again from its pidfile and QMP
 * socket, and trusts a pid only when /proc/PID/cmdline is a QEMU started with this VM's
 * UUID (pids are reused) and QMP's `query-uuid` agrees.
 *
 * We spawn instead of using -daemonize: with -daemonize the process we spawn exits at once
 * and QEMU's start-up errors go to a stderr nobody reads; spawning keeps its exit visible
 * while it starts, and -pidfile gives the re-attach path the same pid.
 *
 * Encrypted VMs: the per-process master key (StartOptions.masterKey) reaches QEMU through a
 * FIFO beside the pidfile (secret-fifo.ts) while it starts; the disks' and NVRAM's LUKS
 * passphrases are in the spec, sealed under that key (command-line.ts). The console of a
 * VM with `serialSocketPath` is read into memory (serial-socket.ts), never a file.
 *
 * Linux only (reads /proc), as is QEMU/KVM hosting. Callers serialise operations on one VM
 * (the agent's per-VM queue): two concurrent start()s of the same VM are not detected here
 * beyond QEMU's own pidfile lock ("Cannot lock pid file"), which fails the second one.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { chmod, link, lstat, open, readFile, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { HypersealError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import { trace } from '../trace.js';
import type { Accelerator, HostRuntime, NicBackend, VmSpec } from './command-line.js';
import { MASTER_KEY_BYTES, buildQemuArgv, canonicalUuid } from './command-line.js';
import { createEncryptedNvram, createEncryptedQcow2, luksPayloadBytes } from './encrypted-images.js';
import type { OvmfBuild } from './firmware.js';
import { discoverOvmf, probeKvm, selectOvmf } from './firmware.js';
import { QmpClient } from './qmp-client.js';
import type { QmpClientOptions } from './qmp-client.js';
import { withSecretFifos } from './secret-fifo.js';
import { SerialSocketReader } from './serial-socket.js';

/** QAPI RunState names, verbatim (qapi/run-state.json, QEMU 7.2). */
export const RUN_STATES = [
  'debug',
  'inmigrate',
  'internal-error',
  'io-error',
  'paused',
  'postmigrate',
  'prelaunch',
  'finish-migrate',
  'restore-vm',
  'running',
  'save-vm',
  'shutdown',
  'suspended',
  'watchdog',
  'guest-panicked',
  'colo',
] as const;
export type RunState = (typeof RUN_STATES)[number];

export interface VmStatus {
  /** A RunState, or a newer QEMU's state name we do not know yet. */
  status: RunState | (string & {});
  running: boolean;
}

export interface VmRuntimeOptions {
  qemuBinary?: string;
  qemuImgBinary?: string;
  /** Default: kvm when probeKvm() says it is usable, else tcg. */
  accel?: Accelerator;
  /** Default: discoverOvmf(). */
  ovmfBuilds?: readonly OvmfBuild[];
  /** With secureBoot: a template with enrolled keys (default) or an empty one. */
  enrolledKeys?: boolean;
  nicBackend?: NicBackend;
  hotplugPorts?: number;
  sandbox?: boolean;
  qmp?: QmpClientOptions;
}

export interface StartOptions extends VmRuntimeOptions {
  /**
   * Disks to create with `qemu-img create -f qcow2` first, by disk id; with `dek`,
   * encrypted (createEncryptedQcow2). Never overwrites.
   */
  createDisks?: Readonly<Record<string, { sizeMiB: number; dek?: Buffer }>>;
  /** Where QEMU's stdout/stderr go. Default: qemu-<uuid>.log beside the pidfile. */
  qemuLogPath?: string;
  /** Leave the vCPUs stopped (status `prelaunch`) for the caller to `cont`. Default false. */
  paused?: boolean;
  /**
   * A live-migration destination: QEMU starts with `-incoming defer` (status `inmigrate`)
   * and the caller sends `migrate-incoming`; the VM runs when the migration completes.
   */
  incoming?: boolean;
  /** With `incoming`: also -S, so the VM stays paused after the migration for the caller to `cont`. */
  incomingPaused?: boolean;
  /** Until QMP answers. Default 20,000. */
  startTimeoutMs?: number;
  /**
   * 32 random bytes, new for each start: the key the spec's sealed secrets (disks'
   * `encryption`, `nvramEncryption`) are encrypted with. Handed to QEMU through a FIFO in
   * the pidfile's directory (which must not be group- or world-writable) and not kept: the
   * caller may zeroize it once start() returns.
   */
  masterKey?: Buffer;
  /**
   * With `nvramEncryption`: the NVRAM's DEK, to create the encrypted store from the
   * firmware's template when it does not exist yet. Without it a missing encrypted store
   * is an error (the caller creates it with createEncryptedNvram first).
   */
  nvramDek?: Buffer;
  /**
   * With `serialSocketPath`: the console reader to use (the caller keeps it across QEMU
   * restarts). Default: one of the VmProcess's own, closed with it. QEMU serves one reader
   * at a time, so never let two exist for one VM.
   */
  serial?: SerialSocketReader;
}

export interface SerialChunk {
  /** Where `data` starts: the offset asked for, or later when those bytes are gone (a socket console keeps 1 MiB). */
  offset: number;
  data: Buffer;
  /** Where the next read should start. */
  nextOffset: number;
  /** The log is shorter than the offset asked for (QEMU restarted and truncated it): read from 0. */
  restarted: boolean;
}

export interface SerialMatch {
  /** Byte offset of the match in the serial log. */
  index: number;
  /** Byte offset just past the match. */
  end: number;
  text: string;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function defaultQemuLogPath(spec: VmSpec): string {
  return join(dirname(spec.pidFilePath), `qemu-${canonicalUuid(spec.uuid)}.log`);
}

/** SeaBIOS's `etc/sercon-port` value: COM1 (0x3f8) as a little-endian u16. */
const SERCON_PORT = Buffer.from([0xf8, 0x03]);

// ---------------------------------------------------------------------------------------
// Processes, by /proc

interface ProcStat {
  state: string;
  pgrp: number;
}

function procStat(pid: number): ProcStat | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // comm (field 2) may contain spaces and parentheses: fields resume after the last ')'.
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { state: rest[0] ?? '?', pgrp: Number(rest[2]) };
  } catch {
    return undefined;
  }
}

/** Alive and not a zombie (a zombie has exited; only its parent has not reaped it yet). */
export function isPidAlive(pid: number): boolean {
  const s = procStat(pid);
  return s !== undefined && s.state !== 'Z' && s.state !== 'X';
}

/** True when `pid` is a QEMU system emulator started with `-uuid <uuid>`. */
export function isQemuOf(pid: number, uuid: string): boolean {
  let argv: string[];
  try {
    argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return false;
  }
  if (!basename(argv[0] ?? '').startsWith('qemu-system-')) return false;
  const want = canonicalUuid(uuid);
  return argv.some((a, i) => a === '-uuid' && argv[i + 1]?.toLowerCase() === want);
}

async function readPidfile(path: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
  const pid = Number(text.trim());
  return Number.isSafeInteger(pid) && pid > 1 ? pid : undefined;
}

/** The pid of the QEMU running `spec`, or undefined (no pidfile, dead pid, pid reused). */
export async function findRunningQemu(spec: VmSpec): Promise<number | undefined> {
  const pid = await readPidfile(spec.pidFilePath);
  if (pid === undefined || !isPidAlive(pid) || !isQemuOf(pid, spec.uuid)) return undefined;
  return pid;
}

async function waitForPidExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!isPidAlive(pid)) return true;
    if (Date.now() >= deadline) return false;
    await sleep(50);
  }
}

/** SIGKILL to the process group when `pid` leads one (it does when we spawned it). */
function killHard(pid: number): void {
  const s = procStat(pid);
  try {
    process.kill(s !== undefined && s.pgrp === pid ? -pid : pid, 'SIGKILL');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

async function removeIfExists(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

async function tail(path: string, bytes: number): Promise<string> {
  try {
    const data = await readFile(path);
    return data
      .subarray(Math.max(0, data.length - bytes))
      .toString('utf8')
      .trim();
  } catch {
    return '';
  }
}

// ---------------------------------------------------------------------------------------
// Files a VM needs before it starts

function runTool(file: string, args: readonly string[], timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
    let output = '';
    const keep = (chunk: Buffer): void => {
      if (output.length < 4096) output += chunk.toString('utf8');
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.once('error', (err) =>
      reject(
        new HypersealError('HS_ERR_QEMU_TOOL_FAILED', `${file} failed to start: ${err.message}`, {
          tool: file,
        }),
      ),
    );
    child.once('close', (code, signal) => {
      if (code === 0) resolve();
      else {
        reject(
          new HypersealError(
            'HS_ERR_QEMU_TOOL_FAILED',
            `${file} ${args.join(' ')} exited with ${code ?? signal}: ${output.trim()}`,
            { tool: file },
          ),
        );
      }
    });
  });
}

/**
 * Creates an empty qcow2 image. `qemu-img create` silently overwrites an existing file, so
 * the image is made under a temporary name and hard-linked into place: link() fails with
 * EEXIST instead of replacing a disk that appeared meanwhile.
 */
export async function createQcow2Image(
  path: string,
  sizeMiB: number,
  qemuImgBinary = 'qemu-img',
): Promise<void> {
  if (!Number.isSafeInteger(sizeMiB) || sizeMiB < 1 || sizeMiB > 64 * 1024 * 1024) {
    throw new HypersealError('HS_ERR_QEMU_INVALID_SPEC', `disk size ${sizeMiB} MiB is out of range`, {
      field: 'sizeMiB',
    });
  }
  if (await exists(path)) {
    throw new HypersealError('HS_ERR_QEMU_DISK_EXISTS', `disk image ${path} already exists`, { path });
  }
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  try {
    await runTool(qemuImgBinary, ['create', '-q', '-f', 'qcow2', tmp, `${sizeMiB}M`], 60_000);
    // Guest data: readable by the agent (and QEMU, same user) only.
    await chmod(tmp, 0o600);
    try {
      await link(tmp, path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new HypersealError('HS_ERR_QEMU_DISK_EXISTS', `disk image ${path} already exists`, { path });
      }
      throw err;
    }
  } finally {
    await removeIfExists(tmp);
  }
}

/**
 * The VM's own copy of the OVMF variable store. An existing store is kept (it holds the
 * VM's boot entries and enrolled keys) but must be the template's size: a 2 MiB store with
 * the 4 MiB code, or the reverse, makes OVMF crash on serial with no QEMU error at all.
 *
 * `encrypted`: the store is a LUKS container whose payload must be the template's size; a
 * missing one is made from the template with `dek` (createEncryptedNvram), or refused
 * when there is no `dek`.
 */
export async function prepareNvram(
  nvramPath: string,
  template: string,
  opts: { encrypted?: boolean; dek?: Buffer | undefined; qemuImgBinary?: string | undefined } = {},
): Promise<'created' | 'kept'> {
  const want = (await stat(template)).size;
  const what = opts.encrypted === true ? 'encrypted NVRAM' : 'NVRAM';
  try {
    const luksPayload = await luksPayloadBytes(nvramPath);
    if (opts.encrypted === true ? luksPayload === undefined : luksPayload !== undefined) {
      throw new HypersealError(
        'HS_ERR_QEMU_INVALID_SPEC',
        `NVRAM ${nvramPath} is ${luksPayload === undefined ? 'not' : ''} a LUKS container, but the VM's NVRAM is ${opts.encrypted === true ? '' : 'not '}encrypted`,
        { field: 'nvramPath' },
      );
    }
    const have = luksPayload ?? (await stat(nvramPath)).size;
    if (have !== want) {
      throw new HypersealError(
        'HS_ERR_QEMU_INVALID_SPEC',
        `${what} ${nvramPath} holds ${have} bytes but the firmware's template ${template} is ${want}`,
        { field: 'nvramPath' },
      );
    }
    return 'kept';
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (opts.encrypted === true) {
    if (opts.dek === undefined) {
      throw new HypersealError(
        'HS_ERR_QEMU_INVALID_SPEC',
        `encrypted NVRAM ${nvramPath} does not exist and no key was given to create it`,
        { field: 'nvramDek' },
      );
    }
    await createEncryptedNvram(template, nvramPath, opts.dek, opts.qemuImgBinary);
    return 'created';
  }
  // Written to a temporary file, fsynced and renamed: a crash leaves no half-written store.
  writeFileAtomic(nvramPath, await readFile(template), 0o600);
  return 'created';
}

// ---------------------------------------------------------------------------------------

export class VmProcess {
  private constructor(
    /** The spec, with its UUID in canonical (lower-case) form. */
    readonly spec: VmSpec,
    readonly pid: number,
    /** The QMP connection; for commands this class does not wrap (object-add, blockdev-add, …). */
    readonly qmp: QmpClient,
    /** The console reader of a VM with `serialSocketPath`. */
    readonly serial: SerialSocketReader | undefined,
    /** We made `serial`, so we close it. */
    private readonly ownsSerial: boolean,
  ) {}

  /** Starts QEMU for `spec` and returns once QMP answers (and, unless `paused`, the vCPUs run). */
  static async start(specIn: VmSpec, opts: StartOptions = {}): Promise<VmProcess> {
    const spec: VmSpec = { ...specIn, uuid: canonicalUuid(specIn.uuid) };
    const running = await findRunningQemu(spec);
    if (running !== undefined) {
      throw new HypersealError(
        'HS_ERR_QEMU_ALREADY_RUNNING',
        `VM ${spec.name} already runs as pid ${running}`,
        {
          vm: spec.name,
          pid: running,
        },
      );
    }
    const accel = opts.accel ?? ((await probeKvm()).usable ? 'kvm' : 'tcg');
    let ovmf: OvmfBuild | undefined;
    if (spec.firmware === 'efi') {
      ovmf = selectOvmf(opts.ovmfBuilds ?? (await discoverOvmf()), {
        secureBoot: spec.secureBoot === true,
        ...(opts.enrolledKeys === undefined ? {} : { enrolledKeys: opts.enrolledKeys }),
      });
    }
    const serconFile = join(dirname(spec.pidFilePath), 'seabios-sercon-port.bin');
    const host: HostRuntime = {
      accel,
      startPaused: true,
      ...(opts.incoming === true ? { incoming: true } : {}),
      ...(opts.incoming === true && opts.incomingPaused === true ? { incomingPaused: true } : {}),
      ...(ovmf === undefined ? {} : { ovmf: { code: ovmf.code, requiresSmm: ovmf.requiresSmm } }),
      ...(spec.firmware === 'bios' ? { biosSerialConsoleFile: serconFile } : {}),
      ...(opts.nicBackend === undefined ? {} : { nicBackend: opts.nicBackend }),
      ...(opts.hotplugPorts === undefined ? {} : { hotplugPorts: opts.hotplugPorts }),
      ...(opts.sandbox === undefined ? {} : { sandbox: opts.sandbox }),
    };
    if (
      opts.masterKey !== undefined &&
      (!Buffer.isBuffer(opts.masterKey) || opts.masterKey.length !== MASTER_KEY_BYTES)
    ) {
      throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `masterKey must be ${MASTER_KEY_BYTES} bytes`, {
        field: 'masterKey',
      });
    }
    const secretDir = dirname(spec.pidFilePath);
    // Validates the whole spec before anything is written to disk (the FIFO's name is
    // random, so the real argv is made again once it exists).
    buildQemuArgv(spec, {
      ...host,
      ...(opts.masterKey === undefined ? {} : { masterKeyFile: join(secretDir, 'master-key-fifo') }),
    });

    for (const [id, { sizeMiB, dek }] of Object.entries(opts.createDisks ?? {})) {
      const disk = spec.disks.find((d) => d.id === id);
      if (disk === undefined) {
        throw new HypersealError(
          'HS_ERR_QEMU_INVALID_SPEC',
          `createDisks names ${id}, which is not a disk of ${spec.name}`,
          {
            field: 'createDisks',
          },
        );
      }
      if (dek === undefined) await createQcow2Image(disk.path, sizeMiB, opts.qemuImgBinary);
      else await createEncryptedQcow2(disk.path, sizeMiB, dek, opts.qemuImgBinary);
    }
    if (ovmf !== undefined) {
      await prepareNvram(spec.nvramPath as string, ovmf.varsTemplate, {
        encrypted: spec.nvramEncryption !== undefined,
        dek: opts.nvramDek,
        qemuImgBinary: opts.qemuImgBinary,
      });
    }
    if (spec.firmware === 'bios') {
      const current = await readFile(serconFile).catch(() => undefined);
      if (current === undefined || !current.equals(SERCON_PORT))
        writeFileAtomic(serconFile, SERCON_PORT, 0o644);
    }
    // Leftovers of a QEMU that was SIGKILLed (a clean exit removes both itself).
    await removeIfExists(spec.pidFilePath);
    await removeIfExists(spec.qmpSocketPath);
    if (spec.serialSocketPath !== undefined) await removeIfExists(spec.serialSocketPath);

    if (opts.masterKey === undefined) return VmProcess.launch(spec, host, opts);
    return withSecretFifos(
      secretDir,
      { master: opts.masterKey },
      ({ paths, delivered }) =>
        VmProcess.launch(spec, { ...host, masterKeyFile: paths.master as string }, opts, delivered),
      // QEMU reads it while it starts, long before QMP answers.
      { timeoutMs: opts.startTimeoutMs ?? 20_000 },
    );
  }

  /** Spawns QEMU and waits for QMP; `delivered` settles when QEMU has read its secrets. */
  private static async launch(
    spec: VmSpec,
    host: HostRuntime,
    opts: StartOptions,
    delivered?: Promise<void>,
  ): Promise<VmProcess> {
    const argv = buildQemuArgv(spec, host);
    const accel = host.accel;
    let secretsFailed: unknown;
    delivered?.catch((err: unknown) => (secretsFailed = err));
    const binary = opts.qemuBinary ?? 'qemu-system-x86_64';
    const logPath = opts.qemuLogPath ?? defaultQemuLogPath(spec);
    trace('qemu', 'spawn', { vm: spec.name, binary, argv });
    const logFd = openSync(logPath, 'w', 0o600);
    const child = ((): ChildProcess => {
      try {
        return spawn(binary, argv, {
          // Own session and process group: the agent's exit, its terminal's hangup or a
          // Ctrl-C to its group never reach QEMU.
          detached: true,
          // A log file, not a pipe: after the agent is gone QEMU must still be able to write.
          stdio: ['ignore', logFd, logFd],
          cwd: '/',
          // Not the agent's environment: it may hold credentials QEMU has no use for.
          env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' },
        });
      } finally {
        // QEMU has its own copy of the descriptor now.
        closeSync(logFd);
      }
    })();
    child.unref();
    let exit: string | undefined;
    child.once('exit', (code, signal) => {
      exit = signal === null ? `exit code ${code}` : `signal ${signal}`;
    });
    child.once('error', (err) => {
      exit = err.message;
    });

    const failStart = async (why: string, cause?: unknown): Promise<never> => {
      if (child.pid !== undefined && isPidAlive(child.pid)) {
        killHard(child.pid);
        await waitForPidExit(child.pid, 5_000);
        // Killed, it could not remove these; the next start must not trip over them.
        await removeIfExists(spec.pidFilePath);
        await removeIfExists(spec.qmpSocketPath);
        if (spec.serialSocketPath !== undefined) await removeIfExists(spec.serialSocketPath);
      }
      const stderr = await tail(logPath, 2048);
      throw new HypersealError(
        'HS_ERR_QEMU_START_FAILED',
        `QEMU for VM ${spec.name} ${why}${stderr === '' ? '' : `: ${stderr}`}`,
        { vm: spec.name, qemuLog: logPath },
        cause === undefined ? undefined : { cause },
      );
    };

    const timeoutMs = opts.startTimeoutMs ?? 20_000;
    const deadline = Date.now() + timeoutMs;
    let qmp: QmpClient | undefined;
    while (qmp === undefined) {
      // Give a just-spawned process a moment to fail on its arguments before connecting.
      await sleep(50);
      if (exit !== undefined) return failStart(`exited while starting (${exit})`);
      if (secretsFailed !== undefined) return failStart('did not read its master key', secretsFailed);
      if (Date.now() >= deadline) return failStart(`did not open its QMP socket within ${timeoutMs} ms`);
      try {
        qmp = await QmpClient.connect(spec.qmpSocketPath, {
          label: spec.name,
          ...opts.qmp,
          connectTimeoutMs: Math.max(1, Math.min(deadline - Date.now(), opts.qmp?.connectTimeoutMs ?? 5_000)),
        });
      } catch (err) {
        // The socket is not there yet, or not listening yet: QEMU is still initialising.
        const errno = err instanceof HypersealError ? err.details?.errno : undefined;
        if (errno === 'ENOENT' || errno === 'ECONNREFUSED') continue;
        return failStart('did not answer on QMP', err);
      }
    }
    const pid = child.pid as number;
    const ownsSerial = spec.serialSocketPath !== undefined && opts.serial === undefined;
    const serial =
      spec.serialSocketPath === undefined
        ? undefined
        : (opts.serial ?? new SerialSocketReader(spec.serialSocketPath, { label: spec.name }));
    try {
      // QEMU writes -pidfile before it creates the QMP socket; read it back to be sure the
      // file an agent will re-attach from names this process.
      const fromFile = await readPidfile(spec.pidFilePath);
      if (fromFile !== pid) throw new Error(`pidfile ${spec.pidFilePath} says ${fromFile}, expected ${pid}`);
      // QEMU drops console output while no reader is connected: connect before the vCPUs run.
      await serial?.waitConnected(Math.max(1_000, deadline - Date.now()));
      if (opts.paused !== true && opts.incoming !== true) await qmp.execute('cont');
    } catch (err) {
      await qmp.close();
      if (ownsSerial) serial?.close();
      return failStart(err instanceof Error ? err.message : String(err), err);
    }
    trace('qemu', 'started', { vm: spec.name, pid, accel });
    return new VmProcess(spec, pid, qmp, serial, ownsSerial);
  }

  /**
   * Re-attaches to the running QEMU of `spec` (e.g. after the agent restarted). Throws
   * HS_ERR_QEMU_NOT_RUNNING when there is none, HS_ERR_QMP_TIMEOUT when another QMP
   * client holds the monitor.
   */
  static async attach(
    specIn: VmSpec,
    opts: Pick<VmRuntimeOptions, 'qmp'> & Pick<StartOptions, 'serial'> = {},
  ): Promise<VmProcess> {
    const spec: VmSpec = { ...specIn, uuid: canonicalUuid(specIn.uuid) };
    const pid = await readPidfile(spec.pidFilePath);
    if (pid === undefined) {
      throw new HypersealError(
        'HS_ERR_QEMU_NOT_RUNNING',
        `VM ${spec.name} is not running (no pidfile ${spec.pidFilePath})`,
        {
          vm: spec.name,
        },
      );
    }
    if (!isPidAlive(pid)) {
      throw new HypersealError(
        'HS_ERR_QEMU_NOT_RUNNING',
        `VM ${spec.name} is not running (pid ${pid} is gone)`,
        {
          vm: spec.name,
          pid,
        },
      );
    }
    if (!isQemuOf(pid, spec.uuid)) {
      throw new HypersealError(
        'HS_ERR_QEMU_NOT_RUNNING',
        `VM ${spec.name} is not running (pid ${pid} is not a QEMU with uuid ${spec.uuid}: the pid was reused)`,
        { vm: spec.name, pid },
      );
    }
    const qmp = await QmpClient.connect(spec.qmpSocketPath, { label: spec.name, ...opts.qmp });
    try {
      // The socket could belong to another VM (a copied spec, a reused path): ask QEMU.
      const answer = await qmp.execute('query-uuid');
      const uuid =
        typeof answer === 'object' && answer !== null ? (answer as { UUID?: unknown }).UUID : undefined;
      if (uuid !== spec.uuid) {
        throw new HypersealError(
          'HS_ERR_QEMU_NOT_RUNNING',
          `QMP socket ${spec.qmpSocketPath} belongs to VM ${String(uuid)}, not ${spec.name} (${spec.uuid})`,
          { vm: spec.name },
        );
      }
    } catch (err) {
      await qmp.close();
      throw err;
    }
    trace('qemu', 'attached', { vm: spec.name, pid });
    // The console from now on: what QEMU printed before was never stored anywhere.
    const ownsSerial = spec.serialSocketPath !== undefined && opts.serial === undefined;
    const serial =
      spec.serialSocketPath === undefined
        ? undefined
        : (opts.serial ?? new SerialSocketReader(spec.serialSocketPath, { label: spec.name }));
    return new VmProcess(spec, pid, qmp, serial, ownsSerial);
  }

  /** The process exists and is still this VM's QEMU. */
  isAlive(): boolean {
    return isPidAlive(this.pid) && isQemuOf(this.pid, this.spec.uuid);
  }

  private assertAlive(action: string): void {
    if (!this.isAlive()) {
      throw new HypersealError(
        'HS_ERR_QEMU_NOT_RUNNING',
        `cannot ${action} VM ${this.spec.name}: its QEMU (pid ${this.pid}) has exited`,
        {
          vm: this.spec.name,
          pid: this.pid,
        },
      );
    }
  }

  async status(): Promise<VmStatus> {
    this.assertAlive('query');
    const r = await this.qmp.execute('query-status');
    if (typeof r !== 'object' || r === null) {
      throw new HypersealError(
        'HS_ERR_QMP_BAD_MESSAGE',
        `query-status of ${this.spec.name} returned ${JSON.stringify(r)}`,
      );
    }
    const { status, running } = r as { status?: unknown; running?: unknown };
    if (typeof status !== 'string' || typeof running !== 'boolean') {
      throw new HypersealError(
        'HS_ERR_QMP_BAD_MESSAGE',
        `query-status of ${this.spec.name} returned ${JSON.stringify(r)}`,
      );
    }
    return { status, running };
  }

  /** Hard reset (the reset button): QEMU emits RESET {guest: false}. */
  async reset(): Promise<void> {
    this.assertAlive('reset');
    await this.qmp.execute('system_reset');
  }

  /**
   * Presses the ACPI power button and waits for QEMU to exit. Throws
   * HS_ERR_QEMU_SHUTDOWN_TIMEOUT, leaving the VM running, when the guest ignores it (the
   * UEFI shell and firmware menus always do): the caller decides whether to powerOff().
   */
  async shutdown(opts: { timeoutMs?: number } = {}): Promise<void> {
    const timeoutMs = opts.timeoutMs ?? 60_000;
    this.assertAlive('shut down');
    await this.qmp.execute('system_powerdown');
    if (!(await waitForPidExit(this.pid, timeoutMs))) {
      throw new HypersealError(
        'HS_ERR_QEMU_SHUTDOWN_TIMEOUT',
        `VM ${this.spec.name} did not power off within ${timeoutMs} ms of the ACPI power button`,
        { vm: this.spec.name, timeoutMs },
      );
    }
    await this.afterExit();
  }

  /**
   * Pulls the plug: QMP `quit`, then SIGKILL (to the whole process group) if QEMU is still
   * there after `timeoutMs`. Returns once the process is gone; idempotent.
   */
  async powerOff(opts: { timeoutMs?: number } = {}): Promise<void> {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    if (this.isAlive()) {
      if (this.qmp.isOpen) {
        try {
          await this.qmp.execute('quit', undefined, { timeoutMs: Math.min(timeoutMs, 5_000) });
        } catch (err) {
          // QEMU may close the socket before our read of its reply; the exit is what counts.
          trace('qemu', 'quit failed', { vm: this.spec.name, error: String(err) });
        }
      }
      if (!(await waitForPidExit(this.pid, timeoutMs))) {
        trace('qemu', 'SIGKILL', { vm: this.spec.name, pid: this.pid });
        // Checked again just before the kill: never signal a pid that is no longer ours.
        if (isQemuOf(this.pid, this.spec.uuid)) killHard(this.pid);
        if (!(await waitForPidExit(this.pid, 5_000))) {
          throw new HypersealError(
            'HS_ERR_INTERNAL',
            `QEMU pid ${this.pid} of VM ${this.spec.name} survived SIGKILL`,
          );
        }
      }
    }
    await this.afterExit();
  }

  /** Closes the QMP connection (and our console reader) and leaves the VM running (agent shutdown or restart). */
  async detach(): Promise<void> {
    if (this.ownsSerial) this.serial?.close();
    await this.qmp.close();
  }

  private async afterExit(): Promise<void> {
    if (this.ownsSerial) this.serial?.close();
    await this.qmp.close();
    // A clean exit removes them; a SIGKILL leaves both behind. The pid is dead: safe.
    if (!isPidAlive(this.pid)) {
      if ((await readPidfile(this.spec.pidFilePath)) === this.pid)
        await removeIfExists(this.spec.pidFilePath);
      await removeIfExists(this.spec.qmpSocketPath);
      if (this.spec.serialSocketPath !== undefined) await removeIfExists(this.spec.serialSocketPath);
    }
  }

  /**
   * Up to `maxBytes` of the serial console from `offset`: the log file (QEMU truncates it
   * at each start), or the socket reader's memory.
   */
  async readSerialLog(offset = 0, maxBytes = 1 << 20): Promise<SerialChunk> {
    if (this.serial !== undefined) {
      const r = this.serial.read(offset, maxBytes);
      return { offset: r.offset, data: r.data, nextOffset: r.nextOffset, restarted: r.restarted };
    }
    let fh;
    try {
      fh = await open(this.spec.serialLogPath as string, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT')
        return { offset: 0, data: Buffer.alloc(0), nextOffset: 0, restarted: offset > 0 };
      throw err;
    }
    try {
      const { size } = await fh.stat();
      const restarted = offset > size;
      const start = restarted ? 0 : offset;
      const length = Math.min(size - start, maxBytes);
      const data = Buffer.alloc(length);
      const { bytesRead } = await fh.read(data, 0, length, start);
      return { offset: start, data: data.subarray(0, bytesRead), nextOffset: start + bytesRead, restarted };
    } finally {
      await fh.close();
    }
  }

  /**
   * Polls the serial log from `fromOffset` until `pattern` appears. Text is decoded as
   * latin1 so that string indexes are byte offsets. Fails early if QEMU exits.
   */
  async waitForSerial(
    pattern: string | RegExp,
    opts: { timeoutMs?: number; fromOffset?: number; pollMs?: number } = {},
  ): Promise<SerialMatch> {
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const deadline = Date.now() + timeoutMs;
    const keep = 64 * 1024;
    let base = opts.fromOffset ?? 0;
    let offset = base;
    let text = '';
    for (;;) {
      const chunk = await this.readSerialLog(offset);
      if (chunk.restarted || chunk.offset !== offset) {
        // From wherever the data now starts (a restart, or bytes a socket console dropped).
        base = chunk.offset;
        text = '';
      }
      text += chunk.data.toString('latin1');
      offset = chunk.nextOffset;
      const m =
        typeof pattern === 'string'
          ? ((i) => (i < 0 ? undefined : { index: i, text: pattern }))(text.indexOf(pattern))
          : ((r) => (r === null ? undefined : { index: r.index, text: r[0] }))(pattern.exec(text));
      if (m !== undefined)
        return { index: base + m.index, end: base + m.index + m.text.length, text: m.text };
      // Bounded memory for chatty guests: patterns are short, keep a tail to match across reads.
      if (text.length > 4 * keep) {
        base += text.length - keep;
        text = text.slice(-keep);
      }
      if (chunk.data.length === 0) {
        this.assertAlive(`wait for ${String(pattern)} on the serial console of`);
        if (Date.now() >= deadline) {
          throw new HypersealError(
            'HS_ERR_QEMU_SERIAL_TIMEOUT',
            `no ${String(pattern)} on the serial console of VM ${this.spec.name} within ${timeoutMs} ms`,
            { vm: this.spec.name, serialLog: this.spec.serialLogPath ?? this.spec.serialSocketPath },
          );
        }
        await sleep(opts.pollMs ?? 100);
      }
    }
  }

  /** Resolves true when the process has exited within `timeoutMs`. */
  waitForExit(timeoutMs: number): Promise<boolean> {
    return waitForPidExit(this.pid, timeoutMs);
  }
}
