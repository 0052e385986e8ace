/**
 * Fixtures for migration tests and bench/migration: small real QEMU VMs (q35, TCG, OVMF,
 * no disk: they sit at the UEFI shell) with QMP and a serial console on unix sockets, and
 * one function that live-migrates a VM from one QEMU to another through a
 * MigrationSender → TCP → MigrationReceiver channel, optionally through a proxy.
 *
 * QEMU is spawned here rather than through src/qemu's VmProcess: a migration destination
 * needs `-incoming defer` and the console must take input, neither of which the VM
 * command line offers (yet). QMP is src/qemu's client.
 */
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { HypersealError } from '../errors.js';
import { QmpClient, discoverOvmf, selectOvmf } from '../qemu/index.js';
import type { OvmfBuild, QmpEvent } from '../qemu/index.js';
import { MigrationReceiver, MigrationSender } from './channel.js';
import type { ChannelAddress, MigrationResult } from './channel.js';
import type { MigrationCipher } from './frame.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Why real-QEMU tests cannot run here, or undefined when they can. */
export async function qemuUnavailable(): Promise<string | undefined> {
  const r = spawnSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' });
  if (r.status !== 0) return 'qemu-system-x86_64 is not installed';
  try {
    selectOvmf(await discoverOvmf(), { secureBoot: false });
  } catch {
    return 'no OVMF firmware (package ovmf)';
  }
  return undefined;
}

export interface TestVmOptions {
  dir: string;
  name: string;
  /** Default 128. */
  memoryMiB?: number;
  /** Start as a migration destination (`-incoming defer`) instead of booting. */
  incoming?: boolean;
  /** More QEMU arguments, the same on both ends (e.g. `-device loader,…` to fill RAM). */
  extraArgs?: readonly string[];
}

export class TestVm {
  private serialText = '';
  private exitInfo: string | undefined;

  private constructor(
    readonly name: string,
    readonly dir: string,
    readonly child: ChildProcess,
    readonly qmp: QmpClient,
    private readonly serial: net.Socket,
  ) {
    serial.on('data', (c: Buffer) => {
      this.serialText += c.toString('latin1');
      if (this.serialText.length > 1 << 20) this.serialText = this.serialText.slice(-(1 << 19));
    });
    serial.on('error', () => undefined);
    child.once('exit', (code, signal) => {
      this.exitInfo = signal === null ? `exit code ${code}` : `signal ${signal}`;
    });
  }

  /** The incoming migration socket of a destination. */
  get incomingSocketPath(): string {
    return join(this.dir, 'incoming.sock');
  }

  static async start(opts: TestVmOptions, ovmf?: OvmfBuild): Promise<TestVm> {
    const fw = ovmf ?? selectOvmf(await discoverOvmf(), { secureBoot: false });
    const dir = join(opts.dir, opts.name);
    mkdirSync(dir, { recursive: true });
    // Each QEMU has its own variable store; its contents travel as RAM (qemu-experiments §3.1).
    copyFileSync(fw.varsTemplate, join(dir, 'vars.fd'));
    const argv = [
      '-name',
      `guest=${opts.name}`,
      '-machine',
      'q35,smm=off',
      '-accel',
      'tcg',
      '-cpu',
      'qemu64',
      '-m',
      `${opts.memoryMiB ?? 128}M`,
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-drive',
      `if=pflash,format=raw,unit=0,readonly=on,file=${fw.code.replaceAll(',', ',,')}`,
      '-drive',
      `if=pflash,format=raw,unit=1,file=${join(dir, 'vars.fd').replaceAll(',', ',,')}`,
      '-chardev',
      `socket,id=s0,path=${join(dir, 'serial.sock')},server=on,wait=off`,
      '-serial',
      'chardev:s0',
      '-qmp',
      `unix:${join(dir, 'qmp.sock')},server=on,wait=off`,
      ...(opts.extraArgs ?? []),
      ...(opts.incoming === true ? ['-incoming', 'defer'] : ['-S']),
    ];
    const child = spawn('qemu-system-x86_64', argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (c: Buffer) => {
      if (stderr.length < 8192) stderr += c.toString();
    });
    let qmp: QmpClient | undefined;
    const deadline = Date.now() + 20_000;
    while (qmp === undefined) {
      await sleep(50);
      if (child.exitCode !== null) throw new Error(`QEMU ${opts.name} exited: ${stderr}`);
      try {
        qmp = await QmpClient.connect(join(dir, 'qmp.sock'), { label: opts.name, commandTimeoutMs: 30_000 });
      } catch (err) {
        if (Date.now() > deadline) throw err;
      }
    }
    const serial = net.connect(join(dir, 'serial.sock'));
    await new Promise<void>((resolve, reject) => {
      serial.once('connect', resolve);
      serial.once('error', reject);
    });
    const vm = new TestVm(opts.name, dir, child, qmp, serial);
    if (opts.incoming !== true) await qmp.execute('cont');
    return vm;
  }

  get exited(): string | undefined {
    return this.exitInfo;
  }

  /** Serial output so far (latin1). */
  get console(): string {
    return this.serialText;
  }

  type(text: string): void {
    this.serial.write(text);
  }

  async waitForConsole(pattern: string | RegExp, timeoutMs = 60_000, from = 0): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const text = this.serialText.slice(from);
      const i = typeof pattern === 'string' ? text.indexOf(pattern) : text.search(pattern);
      if (i >= 0) return from + i;
      if (this.exitInfo !== undefined)
        throw new Error(`${this.name} exited (${this.exitInfo}) waiting for ${String(pattern)}`);
      if (Date.now() > deadline) {
        throw new Error(
          `no ${String(pattern)} on ${this.name}'s console in ${timeoutMs} ms: …${text.slice(-300)}`,
        );
      }
      await sleep(50);
    }
  }

  /** Types `echo WORD` at the UEFI shell and waits for the answer. */
  async echo(word: string, timeoutMs = 30_000): Promise<void> {
    const from = this.serialText.length;
    this.type(`echo ${word}\r`);
    // The shell echoes the command line, then prints the word on a line of its own.
    await this.waitForConsole(new RegExp(`\\n${word}\\r?\\n`), timeoutMs, from);
  }

  async status(): Promise<string> {
    const r = (await this.qmp.execute('query-status')) as { status: string };
    return r.status;
  }

  async waitForExit(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.exitInfo === undefined && Date.now() < deadline) await sleep(50);
    return this.exitInfo !== undefined;
  }

  /** QMP quit, then SIGKILL. */
  async kill(): Promise<void> {
    if (this.exitInfo === undefined) {
      await this.qmp.execute('quit', undefined, { timeoutMs: 3000 }).catch(() => undefined);
      if (!(await this.waitForExit(3000))) this.child.kill('SIGKILL');
      await this.waitForExit(3000);
    }
    await this.qmp.close().catch(() => undefined);
    this.serial.destroy();
  }

  /** For process.on('exit'): no await possible there. */
  killNow(): void {
    if (this.exitInfo === undefined) this.child.kill('SIGKILL');
  }
}

export interface ChannelMigrationOptions {
  cipher: MigrationCipher;
  migrationId?: string;
  /** Runs between the agents: given the receiver's address, returns the address the sender should use. */
  via?: (receiver: ChannelAddress) => Promise<ChannelAddress>;
  framePayloadBytes?: number;
  /** QEMU's migrate max-bandwidth, bytes/s. Default 4 GiB/s (QEMU's own default is 128 MiB/s). */
  maxBandwidth?: number;
}

export interface ChannelMigrationOutcome {
  /** The source's final MIGRATION status: completed, failed or cancelled. */
  sourceStatus: string;
  /** From `migrate` to the source's final MIGRATION event. */
  migrateMs: number;
  sender: MigrationResult | HypersealError;
  receiver: MigrationResult | HypersealError;
}

/**
 * Live-migrates `src` into `dst` (started with `incoming: true`) through the encrypted
 * channel, as the agents will: destination QEMU waits on its incoming socket, the receiver
 * listens, the sender connects and listens for the source QEMU, then `migrate`.
 */
export async function migrateThroughChannel(
  src: TestVm,
  dst: TestVm,
  opts: ChannelMigrationOptions,
): Promise<ChannelMigrationOutcome> {
  const events = { capabilities: [{ capability: 'events', state: true }] };
  await dst.qmp.execute('migrate-set-capabilities', events);
  await dst.qmp.execute('migrate-incoming', { uri: `unix:${dst.incomingSocketPath}` });
  const migrationId = opts.migrationId ?? `mig-${randomBytes(6).toString('hex')}`;
  const key = opts.cipher === 'none' ? undefined : randomBytes(32);
  const params =
    key === undefined
      ? { migrationId, cipher: opts.cipher }
      : { migrationId, cipher: opts.cipher, key, nonce: randomBytes(8) };
  const receiver = await MigrationReceiver.listen({
    ...params,
    listen: { host: '127.0.0.1', port: 0 },
    qemuSocketPath: dst.incomingSocketPath,
  });
  const peer = opts.via === undefined ? receiver.address : await opts.via(receiver.address);
  const sender = await MigrationSender.open({
    ...params,
    peer,
    qemuSocketPath: join(src.dir, 'outgoing.sock'),
    ...(opts.framePayloadBytes === undefined ? {} : { framePayloadBytes: opts.framePayloadBytes }),
  });
  // Both ends hold their own copies now: forget ours, as the agents forget the spec's.
  key?.fill(0);
  await src.qmp.execute('migrate-set-capabilities', events);
  await src.qmp.execute('migrate-set-parameters', {
    'max-bandwidth': opts.maxBandwidth ?? 4 * 1024 * 1024 * 1024,
    'downtime-limit': 300,
  });
  const final = src.qmp.waitForEvent('MIGRATION', {
    timeoutMs: 120_000,
    match: (e: QmpEvent) => ['completed', 'failed', 'cancelled'].includes(String(e.data.status)),
  });
  const started = performance.now();
  await src.qmp.execute('migrate', { uri: `unix:${sender.qemuSocketPath}` });
  const event = await final;
  const migrateMs = performance.now() - started;
  const settle = <T>(p: Promise<T>): Promise<T | HypersealError> =>
    p.catch((err: unknown) => {
      if (err instanceof HypersealError) return err;
      throw err;
    });
  // A failed migration may leave the channel waiting on a peer that is gone: abort it.
  const sourceStatus = String(event.data.status);
  if (sourceStatus !== 'completed') {
    setTimeout(() => {
      sender.abort();
      receiver.abort();
    }, 5_000).unref();
  }
  const [s, r] = await Promise.all([settle(sender.done), settle(receiver.done)]);
  return { sourceStatus, migrateMs, sender: s, receiver: r };
}
