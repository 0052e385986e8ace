/**
 * bench/events — enhanced logging throughput, measured in one run so the machine's noise
 * hits every contender alike:
 *
 *   baseline  event creation (createEvent: redaction, message) + hash chain (chainEvent),
 *             no sink;
 *   full      the same burst, each event also delivered to a SyslogSink over TCP to a
 *             real rsyslog (rsyslog.testutil.ts), timed until the collector has written
 *             every event; the count at the collector (distinct ids, no gap in order)
 *             proves nothing was lost.
 *
 * Then where the time goes: each stage alone (formatting, the durable queue with its group
 * commit), and the CPU of the full run split between the caller's thread (event creation
 * and chaining, then sink.deliver: format, encode, hand over), the rest of the process (the
 * sink's worker thread: queue writes, fdatasync, sending) and rsyslogd.
 *
 * Knobs (env): BENCH_EVENTS (per measurement, default 100000), BENCH_WINDOW (deliveries
 * in flight before the producer waits for the oldest, default 8192).
 * Run: npm run bench -- events
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChainHead, Event } from '../src/events/index.js';
import { chainEvent, createEvent, headOf } from '../src/events/index.js';
import { createFormatter, frameOctetCounted } from '../src/events/syslog/format.js';
import { DiskQueue } from '../src/events/syslog/queue.js';
import { startRsyslog } from '../src/events/syslog/rsyslog.testutil.js';
import { SyslogSink } from '../src/events/syslog/sink.js';

const N = Number(process.env.BENCH_EVENTS ?? 100_000);
const WINDOW = Number(process.env.BENCH_WINDOW ?? 8192);
const TARGET_PER_S = 20_000;

/** A realistic event: a VM reconfiguration with two changes, its object id numbered. */
function nextEvent(i: number, head: ChainHead | null): Event {
  return chainEvent(
    createEvent({
      type: 'vm.reconfigured',
      user: 'ops@local',
      sourceIp: '10.0.0.5',
      object: { kind: 'vm', id: `bench-${i}`, name: 'web-01' },
      changes: [
        { path: 'memoryMiB', from: 6144, to: 10240 + (i % 1000) },
        { path: 'nics[nic0].network', from: 'PCI', to: 'Non-PCI' },
      ],
    }),
    head,
  );
}

const rate = (n: number, ms: number): number => n / (ms / 1000);
const fmt = (r: number): string => `${r.toFixed(0).padStart(8)} events/s`;

/**
 * CPU seconds (user + system) of a process — or of one thread: /proc/PID/task/TID — from
 * /proc/…/stat (rsyslogd's share of the run; the caller's thread apart from the sink's worker).
 */
function procCpuSeconds(pid: number, tid?: number): number {
  try {
    const path = tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`;
    const fields = readFileSync(path, 'utf8').split(') ')[1]?.split(' ') ?? [];
    // utime and stime are fields 14 and 15 of stat(5); fields[] starts at field 3.
    return (Number(fields[11]) + Number(fields[12])) / 100; // USER_HZ is 100 on Linux
  } catch {
    return NaN;
  }
}

function rsyslogPid(dir: string): number {
  return Number(readFileSync(join(dir, 'rsyslogd.pid'), 'utf8').trim());
}

function baseline(): number {
  let head: ChainHead | null = null;
  const t0 = performance.now();
  for (let i = 0; i < N; i++) head = headOf(nextEvent(i, head));
  return rate(N, performance.now() - t0);
}

function formatOnly(events: readonly Event[]): number {
  const format = createFormatter('rfc5424', { hostname: 'bench', procId: '1', maxMessageBytes: 8000 });
  const t0 = performance.now();
  let bytes = 0;
  for (const e of events) bytes += frameOctetCounted(format(e)[0] as string).length;
  if (bytes === 0) throw new Error('nothing formatted');
  return rate(events.length, performance.now() - t0);
}

async function queueOnly(bodies: readonly Buffer[]): Promise<{ perS: number; groups: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'hyperseal-bench-queue-'));
  const q = new DiskQueue({ dir });
  q.open();
  const t0 = performance.now();
  const inFlight: Promise<void>[] = [];
  for (let i = 0; i < bodies.length; i++) {
    inFlight.push(q.enqueue(`e${i}`, bodies[i] as Buffer));
    if (inFlight.length >= WINDOW) await inFlight.splice(0, WINDOW / 2).at(-1);
  }
  await Promise.all(inFlight);
  const perS = rate(bodies.length, performance.now() - t0);
  const groups = q.groupsWritten;
  await q.close();
  rmSync(dir, { recursive: true, force: true });
  return { perS, groups };
}

async function main(): Promise<void> {
  console.log(`bench/events: ${N} events per measurement, up to ${WINDOW} deliveries in flight`);
  const rs = await startRsyslog();
  const queueDir = mkdtempSync(join(tmpdir(), 'hyperseal-bench-sink-'));
  try {
    // Warm-up: JIT, the collector's first connection.
    baseline();

    const base = baseline();

    const sink = new SyslogSink(
      { id: 'bench', host: '127.0.0.1', port: rs.tcpPort, transport: 'tcp', format: 'rfc5424' },
      { queueDir },
    );
    sink.start();
    const rsPid = rsyslogPid(rs.dir);
    const cpu0 = process.cpuUsage();
    // The main thread's id is the process id.
    const main0 = procCpuSeconds(process.pid, process.pid);
    const rsCpu0 = procCpuSeconds(rsPid);
    const t0 = performance.now();
    let head: ChainHead | null = null;
    const inFlight: Promise<void>[] = [];
    for (let i = 0; i < N; i++) {
      const e = nextEvent(i, head);
      head = headOf(e);
      inFlight.push(sink.deliver(e));
      // Backpressure: the oldest half of the window must be on disk before going on.
      if (inFlight.length >= WINDOW) await inFlight.splice(0, WINDOW / 2).at(-1);
    }
    await Promise.all(inFlight);
    const queuedMs = performance.now() - t0;
    // Until the collector has written every event (its output file polled by counting
    // newlines; the lines are parsed after the clock stops).
    const prefix = 'object="vm:bench-';
    const deadline = Date.now() + 120_000;
    while (rs.lineCount() < N && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    const deliveredMs = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    const mainCpu = procCpuSeconds(process.pid, process.pid) - main0;
    const rsCpu = procCpuSeconds(rsPid) - rsCpu0;
    const stats = sink.stats();
    await sink.close();
    const closed = sink.stats();

    // Repeats would make N lines before N events: then wait for the rest (or give up).
    let lines = rs.lines();
    const distinct = (): number => new Set(lines.map((l) => l.slice(l.indexOf(prefix)))).size;
    for (let waited = 0; distinct() < N && waited < 10_000; waited += 100) {
      await new Promise((r) => setTimeout(r, 100));
      lines = rs.lines();
    }

    // Zero loss: every index, in order (a step back would be a resend; none expected here).
    let gaps = 0;
    let prev = -1;
    const seen = new Set<number>();
    for (const l of lines) {
      const at = l.indexOf(prefix);
      if (at < 0) continue;
      const idx = Number.parseInt(l.slice(at + prefix.length), 10);
      if (idx > prev + 1) gaps++;
      prev = idx;
      seen.add(idx);
    }
    const duplicates = lines.length - seen.size;

    // Where the time goes: each stage on its own, on the same kind of events.
    const sample: Event[] = [];
    let h: ChainHead | null = null;
    for (let i = 0; i < N; i++) {
      const e = nextEvent(i, h);
      h = headOf(e);
      sample.push(e);
    }
    const formatPerS = formatOnly(sample);
    const format = createFormatter('rfc5424', { hostname: 'bench', procId: '1', maxMessageBytes: 8000 });
    const bodies = sample.map((e) => frameOctetCounted(format(e)[0] as string));
    const queue = await queueOnly(bodies);

    const full = rate(N, deliveredMs);
    console.log('');
    console.log(`baseline: create + chain, no sink                          ${fmt(base)}`);
    console.log(`full: create + chain + SyslogSink TCP → rsyslog (delivered) ${fmt(full)}`);
    console.log(`      of which durably queued (deliver() resolved)         ${fmt(rate(N, queuedMs))}`);
    console.log(`ratio full / baseline: ${(full / base).toFixed(2)}   (target >= ${TARGET_PER_S} events/s)`);
    console.log(
      `collector: ${seen.size} of ${N} distinct events, ${gaps} gaps, ${duplicates} duplicates` +
        (seen.size === N && gaps === 0 ? ' — zero loss' : ' — LOSS'),
    );
    console.log(
      `sink: sent ${stats.sent}; unacknowledged when the last arrived ${stats.queued} (grace period), ` +
        `after close ${closed.queued} (the collector's FIN confirmed them)`,
    );
    console.log('');
    console.log('where the time goes (each stage alone):');
    console.log(`  create + chain                                            ${fmt(base)}`);
    console.log(`  format RFC 5424 + octet framing                           ${fmt(formatPerS)}`);
    console.log(
      `  disk queue, group commit                                  ${fmt(queue.perS)}` +
        `   (${queue.groups} fdatasyncs, ${(N / queue.groups).toFixed(0)} events each)`,
    );
    // Per event, in µs: the caller's (main) thread's CPU, everything else the
    // process burnt (the sink's worker thread, fsync and write on libuv's pool, GC helpers),
    // and the collector.
    const us = (ms: number): string => ((ms * 1000) / N).toFixed(1).padStart(5);
    const callerMs = mainCpu * 1000;
    const chainMs = (N * 1000) / base;
    const processMs = (cpu.user + cpu.system) / 1000;
    console.log(`  per event during the full run (wall ${us(deliveredMs)} µs):`);
    console.log(
      `    caller's thread ${us(callerMs)} CPU-µs = create + chain ${us(chainMs)} µs` +
        ` + sink.deliver (format, encode, post) ${us(callerMs - chainMs)} µs`,
    );
    console.log(
      `    other threads of the process (sink worker: queue, fsync, send) ${us(processMs - callerMs)} CPU-µs`,
    );
    console.log(`    rsyslogd ${us(rsCpu * 1000)} CPU-µs`);
    if (seen.size !== N || gaps !== 0) process.exitCode = 1;
  } finally {
    await rs.dispose();
    rmSync(queueDir, { recursive: true, force: true });
  }
}

await main();
