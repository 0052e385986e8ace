/**
 * bench/migration — the encrypted migration data channel, measured in one run so the
 * machine's noise hits every contender alike. Prints rates and ratios:
 *
 *   1. the codec alone, one core, in memory: FrameSealer / FrameOpener over 256 KiB frames
 *      built from 64 KiB reads, against `openssl speed -evp aes-256-gcm -bytes 65536
 *      -seconds 3` (one core, the same OpenSSL family Node links);
 *   2. the channel: BENCH_MIGRATION_GIB GiB from a source socket (standing in for QEMU)
 *      through MigrationSender → TCP on 127.0.0.1 → MigrationReceiver → a sink socket,
 *      sender and receiver each in a process of its own (two agents), aes-256-gcm against
 *      the plaintext relay built from the same code (cipher none), alternated, medians.
 *      Each end's CPU is reported too, as GB per CPU-second: what it would carry with a
 *      core of its own. On a 2-core machine the wall-clock rates are bounded by the sum of
 *      everyone's CPU (the stand-ins run in this process and are shown as well);
 *   3. end to end, when QEMU is installed: a BENCH_VM_MIB MiB VM (TCG, UEFI shell) with
 *      BENCH_FILL_MIB MiB of random data loaded into its RAM, live-migrated through the
 *      channel (ends in their own processes again) with and without encryption, medians
 *      of `migrate` → MIGRATION completed on the source.
 *
 * Knobs (env): BENCH_MIGRATION_GIB (2), BENCH_ROUNDS (3), BENCH_FRAME_KIB (256),
 * BENCH_QEMU (1; 0 skips part 3), BENCH_VM_MIB (512), BENCH_FILL_MIB (256).
 * Run: npm run bench -- migration
 */
import { fork, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChannelAddress, MigrationResult } from '../src/migration/index.js';
import {
  FRAME,
  FrameOpener,
  FrameSealer,
  MigrationReceiver,
  MigrationSender,
  sealStream,
} from '../src/migration/index.js';
import type { MigrationCipher } from '../src/migration/index.js';
import { primeAllocator } from '../src/migration/allocator.js';
import { TestVm, qemuUnavailable } from '../src/migration/testing.js';

const GIB = Number(process.env.BENCH_MIGRATION_GIB ?? 2);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const FRAME_BYTES = Number(process.env.BENCH_FRAME_KIB ?? 256) * 1024;
const WITH_QEMU = process.env.BENCH_QEMU !== '0';
const VM_MIB = Number(process.env.BENCH_VM_MIB ?? 512);
const FILL_MIB = Number(process.env.BENCH_FILL_MIB ?? 256);
const SELF = fileURLToPath(import.meta.url);

const gbps = (bytes: number, ms: number): number => bytes / ms / 1e6;
/** CPU milliseconds (user + system) of this process so far. */
const cpuMs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

// ---------------------------------------------------------------------------------------
// Child processes: one channel end each, driven over the IPC channel.

interface EndJob {
  role: 'sender' | 'receiver';
  migrationId: string;
  cipher: MigrationCipher;
  keyHex?: string;
  nonceHex?: string;
  qemuSocketPath: string;
  peer?: ChannelAddress;
  framePayloadBytes: number;
}

type EndMessage =
  | { kind: 'ready'; address: ChannelAddress }
  | { kind: 'done'; result: MigrationResult; cpuMs: number }
  | { kind: 'failed'; code: string; message: string; cpuMs: number };

async function runEnd(): Promise<void> {
  const job = await new Promise<EndJob>((resolve) => process.once('message', (m) => resolve(m as EndJob)));
  const params =
    job.cipher === 'none'
      ? { migrationId: job.migrationId, cipher: job.cipher }
      : {
          migrationId: job.migrationId,
          cipher: job.cipher,
          key: Buffer.from(job.keyHex ?? '', 'hex'),
          nonce: Buffer.from(job.nonceHex ?? '', 'hex'),
        };
  const send = (m: EndMessage): Promise<void> => new Promise((r) => process.send?.(m, () => r()));
  const cpuMs = (): number => {
    const u = process.resourceUsage();
    return (u.userCPUTime + u.systemCPUTime) / 1000;
  };
  let done: Promise<MigrationResult>;
  if (job.role === 'receiver') {
    const r = await MigrationReceiver.listen({
      ...params,
      listen: { host: '127.0.0.1', port: 0 },
      qemuSocketPath: job.qemuSocketPath,
    });
    await send({ kind: 'ready', address: r.address });
    done = r.done;
  } else {
    const s = await MigrationSender.open({
      ...params,
      peer: job.peer as ChannelAddress,
      qemuSocketPath: job.qemuSocketPath,
      framePayloadBytes: job.framePayloadBytes,
    });
    await send({ kind: 'ready', address: { path: s.qemuSocketPath } });
    done = s.done;
  }
  const cpuBefore = cpuMs();
  try {
    const result = await done;
    await send({ kind: 'done', result, cpuMs: cpuMs() - cpuBefore });
  } catch (err) {
    const e = err as { code?: string; message?: string };
    await send({
      kind: 'failed',
      code: e.code ?? '?',
      message: e.message ?? String(err),
      cpuMs: cpuMs() - cpuBefore,
    });
  }
  process.disconnect();
}

class End {
  private readonly messages: EndMessage[] = [];
  private waiter: (() => void) | undefined;
  private constructor(readonly child: ChildProcess) {
    child.on('message', (m) => {
      this.messages.push(m as EndMessage);
      this.waiter?.();
    });
  }

  static start(job: EndJob): End {
    const end = new End(fork(SELF, ['--end'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
    end.child.send(job);
    return end;
  }

  async next(): Promise<EndMessage> {
    while (this.messages.length === 0) {
      if (this.child.exitCode !== null) throw new Error(`channel process exited with ${this.child.exitCode}`);
      await new Promise<void>((r) => {
        this.waiter = r;
        setTimeout(r, 100);
      });
    }
    return this.messages.shift() as EndMessage;
  }
}

function job(
  role: 'sender' | 'receiver',
  cipher: MigrationCipher,
  id: string,
  key: Buffer,
  nonce: Buffer,
): EndJob {
  return {
    role,
    migrationId: id,
    cipher,
    ...(cipher === 'none' ? {} : { keyHex: key.toString('hex'), nonceHex: nonce.toString('hex') }),
    qemuSocketPath: '',
    framePayloadBytes: FRAME_BYTES,
  };
}

/** Starts a receiver and a sender process for one migration; resolves once both are ready. */
async function channel(
  cipher: MigrationCipher,
  id: string,
  srcSocket: string,
  dstSocket: string,
): Promise<{ sender: End; receiver: End }> {
  const key = randomBytes(32);
  const nonce = randomBytes(8);
  const receiver = End.start({ ...job('receiver', cipher, id, key, nonce), qemuSocketPath: dstSocket });
  const ready = await receiver.next();
  if (ready.kind !== 'ready') throw new Error(`receiver: ${JSON.stringify(ready)}`);
  const sender = End.start({
    ...job('sender', cipher, id, key, nonce),
    qemuSocketPath: srcSocket,
    peer: ready.address,
  });
  const ready2 = await sender.next();
  if (ready2.kind !== 'ready') throw new Error(`sender: ${JSON.stringify(ready2)}`);
  key.fill(0);
  return { sender, receiver };
}

// ---------------------------------------------------------------------------------------
// 1. The codec alone

function opensslSpeed(): number | undefined {
  const r = spawnSync('openssl', ['speed', '-evp', 'aes-256-gcm', '-bytes', '65536', '-seconds', '3'], {
    encoding: 'utf8',
  });
  // "AES-256-GCM    3339787.38k": thousands of bytes per second, for 65536-byte blocks.
  const m = /^AES-256-GCM\s+([\d.]+)k\s*$/m.exec(r.stdout ?? '');
  return m?.[1] === undefined ? undefined : Number(m[1]) * 1000;
}

function codecSeal(seconds: number): number {
  const chunk = randomBytes(64 * 1024);
  const per = FRAME_BYTES / chunk.length;
  const pieces = Array.from({ length: per }, () => chunk);
  const sealer = new FrameSealer({
    migrationId: 'bench-codec',
    cipher: 'aes-256-gcm',
    key: randomBytes(32),
    nonce: randomBytes(8),
  });
  sealer.start();
  const started = performance.now();
  const cpu0 = cpuMs();
  let bytes = 0;
  while (performance.now() - started < seconds * 1000) {
    sealer.seal(pieces);
    bytes += FRAME_BYTES;
  }
  const cpu = cpuMs() - cpu0;
  sealer.dispose();
  return gbps(bytes, cpu);
}

function codecOpen(seconds: number): number {
  const params = {
    migrationId: 'bench-codec',
    cipher: 'aes-256-gcm' as const,
    key: randomBytes(32),
    nonce: randomBytes(8),
  };
  const stream = sealStream(params, randomBytes(256 * 1024 * 1024), FRAME_BYTES);
  const started = performance.now();
  const cpu0 = cpuMs();
  let bytes = 0;
  while (performance.now() - started < seconds * 1000) {
    const opener = new FrameOpener(params);
    // 64 KiB at a time, as a socket delivers it.
    for (let at = 0; at < stream.length; at += 64 * 1024) {
      for (const b of opener.push(stream.subarray(at, at + 64 * 1024))) bytes += b.length;
    }
    opener.finish();
    opener.dispose();
  }
  return gbps(bytes, cpuMs() - cpu0);
}

// ---------------------------------------------------------------------------------------
// 2. The channel between two processes

interface ChannelRun {
  gbPerS: number;
  /** Share of one core used over the run. */
  senderCpu: number;
  receiverCpu: number;
  /** GB per CPU-second of each end: what it would carry with a core to itself. */
  senderPerCore: number;
  receiverPerCore: number;
  /** Share of a core used by the two QEMU stand-ins (this process). */
  standIns: number;
}

async function channelRun(dir: string, cipher: MigrationCipher, round: number): Promise<ChannelRun> {
  const total = Math.round(GIB * 1024 * 1024 * 1024);
  const src = join(dir, `src-${cipher}-${round}.sock`);
  const dst = join(dir, `dst-${cipher}-${round}.sock`);
  // The destination "QEMU": reads and counts.
  let received = 0;
  const sinkDone = new Promise<void>((resolve) => {
    const sink = net.createServer((s) => {
      s.on('data', (c: Buffer) => (received += c.length));
      s.on('close', () => {
        sink.close();
        resolve();
      });
    });
    sink.listen(dst);
  });
  const { sender, receiver } = await channel(cipher, `bench-${cipher}-${round}`, src, dst);
  // The source "QEMU": writes one 1 MiB block over and over.
  const block = randomBytes(1024 * 1024);
  const started = performance.now();
  const cpu0 = cpuMs();
  const socket = net.connect(src);
  let written = 0;
  await new Promise<void>((resolve) => {
    const pump = (): void => {
      while (written < total) {
        const n = Math.min(block.length, total - written);
        written += n;
        if (!socket.write(n === block.length ? block : block.subarray(0, n))) {
          socket.once('drain', pump);
          return;
        }
      }
      socket.end(resolve);
    };
    socket.once('connect', pump);
  });
  await sinkDone;
  const ms = performance.now() - started;
  const standIns = (cpuMs() - cpu0) / ms;
  const s = await sender.next();
  const r = await receiver.next();
  if (s.kind !== 'done' || r.kind !== 'done' || received !== total) {
    throw new Error(`channel run failed: ${JSON.stringify({ s, r, received, total })}`);
  }
  return {
    gbPerS: gbps(total, ms),
    senderCpu: s.cpuMs / ms,
    receiverCpu: r.cpuMs / ms,
    senderPerCore: gbps(total, s.cpuMs),
    receiverPerCore: gbps(total, r.cpuMs),
    standIns,
  };
}

// ---------------------------------------------------------------------------------------
// 3. End to end with QEMU

async function qemuRuns(dir: string): Promise<Record<MigrationCipher, number[]> | undefined> {
  const why = await qemuUnavailable();
  if (why !== undefined) {
    console.log(`part 3 skipped: ${why}`);
    return undefined;
  }
  // Random data in guest RAM, so most pages are real pages and not zero-page markers.
  const fill = join(dir, 'fill.bin');
  writeFileSync(fill, randomBytes(FILL_MIB * 1024 * 1024));
  const loader = ['-device', `loader,file=${fill},addr=0x4000000`];
  const times: Record<MigrationCipher, number[]> = { 'aes-256-gcm': [], none: [] };
  let n = 0;
  let current = await TestVm.start({ dir, name: `vm${n++}`, memoryMiB: VM_MIB, extraArgs: loader });
  try {
    await current.waitForConsole('Shell>', 120_000);
    for (let round = 0; round < ROUNDS; round++) {
      for (const cipher of ['none', 'aes-256-gcm'] as const) {
        const next = await TestVm.start({
          dir,
          name: `vm${n++}`,
          memoryMiB: VM_MIB,
          incoming: true,
          extraArgs: loader,
        });
        const events = { capabilities: [{ capability: 'events', state: true }] };
        await next.qmp.execute('migrate-set-capabilities', events);
        await next.qmp.execute('migrate-incoming', { uri: `unix:${next.incomingSocketPath}` });
        const { sender, receiver } = await channel(
          cipher,
          `bench-vm-${round}-${cipher}`,
          join(current.dir, 'out.sock'),
          next.incomingSocketPath,
        );
        await current.qmp.execute('migrate-set-capabilities', events);
        await current.qmp.execute('migrate-set-parameters', {
          'max-bandwidth': 8 * 1024 ** 3,
          'downtime-limit': 300,
        });
        const final = current.qmp.waitForEvent('MIGRATION', {
          timeoutMs: 300_000,
          match: (e) => ['completed', 'failed', 'cancelled'].includes(String(e.data.status)),
        });
        const started = performance.now();
        await current.qmp.execute('migrate', { uri: `unix:${join(current.dir, 'out.sock')}` });
        const status = String((await final).data.status);
        const ms = performance.now() - started;
        const [s, r] = [await sender.next(), await receiver.next()];
        if (status !== 'completed' || s.kind !== 'done' || r.kind !== 'done') {
          throw new Error(`migration ${status}: ${JSON.stringify({ s, r })}`);
        }
        times[cipher].push(ms);
        console.log(
          `  round ${round + 1} ${cipher.padEnd(11)} ${ms.toFixed(0).padStart(6)} ms  ` +
            `stream ${(s.result.bytes / 1e6).toFixed(0)} MB at ${gbps(s.result.bytes, ms).toFixed(2)} GB/s, ` +
            `${s.result.frames} frames (${(s.result.bytes / s.result.frames / 1024).toFixed(0)} KiB avg), ` +
            `CPU sender ${((s.cpuMs / ms) * 100).toFixed(0)} %, receiver ${((r.cpuMs / ms) * 100).toFixed(0)} %`,
        );
        await current.kill();
        current = next;
        await current.echo(`hop${n}`);
      }
    }
  } finally {
    await current.kill();
  }
  return times;
}

// ---------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'hs-bench-mig-'));
  try {
    console.log(
      `bench/migration: frames of ${FRAME_BYTES / 1024} KiB (max ${FRAME.maxPayloadBytes / 1024}), ` +
        `${GIB} GiB per channel run, ${ROUNDS} rounds\n`,
    );
    console.log('1. codec, one core, in memory (aes-256-gcm), GB per CPU-second like openssl speed');
    const openssl = opensslSpeed();
    // What MigrationSender.open and MigrationReceiver.listen do first (see allocator.ts).
    primeAllocator();
    const seal = codecSeal(3);
    const open = codecOpen(3);
    console.log(
      `  openssl speed -evp aes-256-gcm -bytes 65536   ${openssl === undefined ? 'n/a' : (openssl / 1e9).toFixed(2)} GB/s`,
    );
    console.log(`  FrameSealer.seal                               ${seal.toFixed(2)} GB/s`);
    console.log(`  FrameOpener.push                               ${open.toFixed(2)} GB/s`);

    console.log(
      '\n2. channel: source socket → sender → TCP 127.0.0.1 → receiver → sink (ends in own processes)',
    );
    const runs: Record<MigrationCipher, ChannelRun[]> = { 'aes-256-gcm': [], none: [] };
    for (let round = 0; round < ROUNDS; round++) {
      for (const cipher of ['none', 'aes-256-gcm'] as const) {
        const r = await channelRun(dir, cipher, round);
        runs[cipher].push(r);
        console.log(
          `  round ${round + 1} ${cipher.padEnd(11)} ${r.gbPerS.toFixed(2)} GB/s   ` +
            `sender ${(r.senderCpu * 100).toFixed(0)} % of a core (${r.senderPerCore.toFixed(2)} GB per CPU-s), ` +
            `receiver ${(r.receiverCpu * 100).toFixed(0)} % (${r.receiverPerCore.toFixed(2)} GB per CPU-s), ` +
            `stand-ins ${(r.standIns * 100).toFixed(0)} %`,
        );
      }
    }
    const enc = median(runs['aes-256-gcm'].map((r) => r.gbPerS));
    const plain = median(runs.none.map((r) => r.gbPerS));
    const perCore = (rs: ChannelRun[]): number =>
      median(rs.map((r) => Math.min(r.senderPerCore, r.receiverPerCore)));
    const encCore = perCore(runs['aes-256-gcm']);
    const plainCore = perCore(runs.none);

    let e2e: Record<MigrationCipher, number[]> | undefined;
    if (WITH_QEMU) {
      console.log(
        `\n3. QEMU live migration, ${VM_MIB} MiB VM with ${FILL_MIB} MiB of random data in RAM (TCG)`,
      );
      e2e = await qemuRuns(dir);
    }

    console.log('\nresults (medians)');
    console.log(`  encrypted channel                       ${enc.toFixed(2)} GB/s   (target >= 1.5)`);
    console.log(`  plaintext relay, same code              ${plain.toFixed(2)} GB/s`);
    console.log(`  ratio encrypted / plaintext relay       ${(enc / plain).toFixed(2)}x   (target >= 0.8)`);
    console.log(`  encrypted channel, per core (slower end) ${encCore.toFixed(2)} GB per CPU-s`);
    console.log(`  plaintext relay, per core (slower end)   ${plainCore.toFixed(2)} GB per CPU-s`);
    if (openssl !== undefined) {
      const o = openssl / 1e9;
      console.log(`  ratio encrypted channel / openssl speed ${(enc / o).toFixed(2)}x`);
      console.log(`  ratio codec seal / openssl speed        ${(seal / o).toFixed(2)}x`);
      console.log(`  ratio codec open / openssl speed        ${(open / o).toFixed(2)}x`);
    }
    if (e2e !== undefined) {
      const te = median(e2e['aes-256-gcm']);
      const tp = median(e2e.none);
      console.log(`  migration time encrypted                ${te.toFixed(0)} ms`);
      console.log(`  migration time plaintext                ${tp.toFixed(0)} ms`);
      console.log(`  ratio migration time encrypted / plain  ${(te / tp).toFixed(2)}x   (target <= 1.15)`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--end') await runEnd();
else await main();
