// SyslogSink against a real rsyslog (rsyslog.testutil.ts): events arrive in order and
// exactly once over TCP and TLS, a long event arrives over UDP as numbered parts, nothing
// is lost when the collector stops in the middle of a burst (SIGTERM, then SIGKILL), and a
// sink process killed with SIGKILL hands its queue to the next one. Arrival is checked on
// what rsyslog wrote to its file, parsed back.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isHypersealError } from '../../errors.js';
import { createCertificateAuthority } from '../../pki/index.js';
import type { Event } from '../index.js';
import { computeHash, verifyChain } from '../index.js';
import { SD_ID_EVENT, formatMessages, joinParts, parseRfc5424, sdParam, toRfc5424 } from './format.js';
import type { Rsyslog } from './rsyslog.testutil.js';
import { makeEvents, startRsyslog } from './rsyslog.testutil.js';
import type { SyslogSinkOptions, SyslogSinkStats, SyslogTargetConfig } from './sink.js';
import { SyslogSink } from './sink.js';

const CHILD = join(dirname(fileURLToPath(import.meta.url)), 'sink-child.testutil.js');

let rs: Rsyslog;
const dirs: string[] = [];
/** Closed after the tests whatever happened, so that a failed test cannot hang the file. */
const sinks: SyslogSink[] = [];

before(async () => {
  rs = await startRsyslog();
});
after(async () => {
  await Promise.all(sinks.map((s) => s.close().catch(() => undefined)));
  await rs.dispose();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function queueDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'hyperseal-sink-'));
  dirs.push(d);
  return d;
}

function sinkFor(
  target: Partial<SyslogTargetConfig> & Pick<SyslogTargetConfig, 'port'>,
  opts: Partial<SyslogSinkOptions> = {},
): SyslogSink {
  const sink = new SyslogSink(
    { id: 'test', host: '127.0.0.1', transport: 'tcp', format: 'rfc5424', ...target },
    { queueDir: queueDir(), reconnectMinMs: 20, reconnectMaxMs: 200, ...opts },
  );
  sink.start();
  sinks.push(sink);
  return sink;
}

interface Arrival {
  readonly object: string;
  readonly id: string;
  readonly line: string;
}
/** Every collected line parsed once (waitFor polls often, and the file grows to thousands of lines). */
const parsed: Arrival[] = [];
function collected(): readonly Arrival[] {
  const lines = rs.lines();
  for (let i = parsed.length; i < lines.length; i++) {
    const line = lines[i] as string;
    const m = line === '' ? null : parseRfc5424(line);
    parsed.push({
      object: m === null ? '' : (sdParam(m, SD_ID_EVENT, 'object') ?? ''),
      id: m === null ? '' : (sdParam(m, SD_ID_EVENT, 'id') ?? ''),
      line,
    });
  }
  return parsed;
}

/** The collected messages of events tagged `tag`: index (from object id `tag-i`) and event id, in arrival order. */
function arrivals(tag: string): { index: number; id: string; line: string }[] {
  const prefix = `vm:${tag}-`;
  return collected()
    .filter((a) => a.object.startsWith(prefix))
    .map((a) => ({ index: Number(a.object.slice(prefix.length)), id: a.id, line: a.line }));
}

async function waitForAll(tag: string, n: number, timeoutMs = 15_000): Promise<void> {
  await rs.waitFor(() => new Set(arrivals(tag).map((a) => a.index)).size >= n, timeoutMs);
}

/**
 * Checks that the indices arrived as 0, 1, … n−1 in order, where a step back (a resend
 * after a reconnect) is allowed but a step forward over a missing index never is; and that
 * a repeated index always carries the same event id. Returns the steps back and repeats.
 */
function checkOrder(
  got: { index: number; id: string }[],
  n: number,
  events: Event[],
): { rewinds: number; duplicates: number } {
  assert.ok(got.length > 0, 'nothing arrived');
  assert.equal(got[0]?.index, 0, 'the first event arrived first');
  let rewinds = 0;
  for (let k = 0; k < got.length; k++) {
    const { index, id } = got[k] as { index: number; id: string };
    assert.equal(id, events[index]?.id, `arrival ${k}: event ${index} carries its own id`);
    if (k === 0) continue;
    const prev = (got[k - 1] as { index: number }).index;
    assert.ok(
      index <= prev + 1,
      `arrival ${k}: event ${index} after event ${prev}: ${index - prev - 1} missing`,
    );
    if (index <= prev) rewinds++;
  }
  const distinct = new Set(got.map((g) => g.index));
  assert.equal(distinct.size, n, `${n - distinct.size} events missing`);
  return { rewinds, duplicates: got.length - n };
}

test('TCP: 1,000 events arrive in order, each exactly once, byte for byte; a clean close empties the queue', async () => {
  const events = makeEvents(1000, 'tcp');
  const sink = sinkFor({ port: rs.tcpPort });
  await Promise.all(events.map((e) => sink.deliver(e)));
  await waitForAll('tcp', 1000);
  const got = arrivals('tcp');
  assert.deepEqual(
    got.map((g) => g.index),
    events.map((_, i) => i),
    'in order, exactly once',
  );
  const expected = formatMessages(events[0] as Event, 'rfc5424', {
    hostname: hostname().replace(/[^\x21-\x7e]/g, '_'),
    procId: String(process.pid),
    maxMessageBytes: 8000,
  });
  assert.deepEqual([got[0]?.line], expected, 'the collector has the exact message');
  // Stats come from the sink's worker thread a moment after the fact.
  for (let i = 0; i < 100 && sink.stats().sent < 1000; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(sink.stats().connected, true);
  assert.equal(sink.stats().sent, 1000);
  await sink.close();
  assert.deepEqual(sink.stats(), { queued: 0, sent: 1000, lastError: null, connected: false });
  await assert.rejects(sink.deliver(events[0] as Event), (e) => isHypersealError(e, 'HS_ERR_SYSLOG_CLOSED'));
});

test('TLS (RFC 5425): 1,000 events, verified collector, in order and exactly once; client certificates work', async () => {
  const events = makeEvents(1000, 'tls');
  const sink = sinkFor({ port: rs.tlsPort, transport: 'tls', caPem: rs.ca.certPem });
  await Promise.all(events.map((e) => sink.deliver(e)));
  await waitForAll('tls', 1000);
  assert.deepEqual(
    arrivals('tls').map((g) => g.index),
    events.map((_, i) => i),
  );
  await sink.close();
  assert.equal(sink.stats().queued, 0);

  // The collector port that demands a client certificate.
  const mutual = makeEvents(10, 'mtls');
  const withCert = sinkFor({
    port: rs.tlsClientAuthPort,
    transport: 'tls',
    caPem: rs.ca.certPem,
    certPem: rs.client.certPem,
    keyPem: rs.client.keyPem,
  });
  await Promise.all(mutual.map((e) => withCert.deliver(e)));
  await waitForAll('mtls', 10);
  await withCert.close();
});

test('TLS: a collector whose certificate is not from the configured CA gets nothing; events stay queued', async () => {
  const other = await createCertificateAuthority({ commonName: 'not the collector’s CA' });
  const dir = queueDir();
  const events = makeEvents(10, 'badca');
  const sink = new SyslogSink(
    {
      id: 'badca',
      host: '127.0.0.1',
      port: rs.tlsPort,
      transport: 'tls',
      format: 'rfc5424',
      caPem: other.certPem,
    },
    { queueDir: dir, reconnectMinMs: 20, reconnectMaxMs: 100, closeTimeoutMs: 200 },
  );
  sinks.push(sink);
  sink.start();
  await Promise.all(events.map((e) => sink.deliver(e)));
  for (let i = 0; i < 100 && sink.stats().lastError === null; i++)
    await new Promise((r) => setTimeout(r, 10));
  const s = sink.stats();
  assert.equal(s.connected, false);
  assert.match(s.lastError ?? '', /certificate/i);
  assert.equal(s.queued, 10);
  assert.equal(s.sent, 0);
  await sink.close();
  // Fixed configuration, same queue: the ten arrive.
  const fixed = new SyslogSink(
    {
      id: 'badca',
      host: '127.0.0.1',
      port: rs.tlsPort,
      transport: 'tls',
      format: 'rfc5424',
      caPem: rs.ca.certPem,
    },
    { queueDir: dir },
  );
  sinks.push(fixed);
  fixed.start();
  await waitForAll('badca', 10);
  checkOrder(arrivals('badca'), 10, events);
  await fixed.close();
});

test('UDP: a 5 KB event arrives as numbered parts of ≤ 1400 bytes that join back to the whole', async () => {
  const [base] = makeEvents(1, 'udp') as [Event];
  const big: Event = { ...base, changes: [{ path: 'notes', from: null, to: 'x→"]\\'.repeat(1000) }] };
  const small = makeEvents(1, 'udpsmall')[0] as Event;
  const sink = sinkFor({ port: rs.udpPort, transport: 'udp' });
  await sink.deliver(big);
  await sink.deliver(small);
  const mine = (): string[] => rs.lines().filter((l) => l.includes(`id="${big.id}"`));
  await rs.waitFor(
    () => mine().length > 0 && mine().length === Number(/part="\d+\/(\d+)"/.exec(mine()[0] ?? '')?.[1]),
    5000,
  );
  await waitForAll('udpsmall', 1);
  const parts = mine();
  assert.ok(parts.length >= 4, `${parts.length} parts`);
  for (const p of parts)
    assert.ok(Buffer.byteLength(p) <= 1400, `a datagram of ${Buffer.byteLength(p)} bytes`);
  const parsed = parts.map(parseRfc5424);
  assert.deepEqual(
    parsed.map((p) => sdParam(p, SD_ID_EVENT, 'part')).sort(),
    parts.map((_, i) => `${i + 1}/${parts.length}`).sort(),
  );
  const whole = parseRfc5424(
    toRfc5424(big, { hostname: parsed[0]?.hostname ?? '', procId: String(process.pid) }),
  );
  assert.deepEqual(joinParts(parsed), whole);
  await sink.close();
});

test('json and ocsf formats: the collector can verify the hash chain from what it received', async () => {
  const events = makeEvents(20, 'fmt');
  const json = sinkFor({ port: rs.tcpPort, format: 'json' });
  const ocsf = sinkFor({ port: rs.tcpPort, format: 'ocsf' });
  await Promise.all(events.flatMap((e) => [json.deliver(e), ocsf.deliver(e)]));
  const ids = new Set(events.map((e) => e.id));
  const received = (): { msg: string }[] =>
    rs
      .lines()
      .map(parseRfc5424)
      .filter((m) => ids.has(sdParam(m, SD_ID_EVENT, 'id') ?? ''));
  await rs.waitFor(() => received().length >= 40, 5000);
  const asJson = received().map((m) => JSON.parse(m.msg) as Record<string, unknown>);
  const chained = asJson.filter((o) => 'hash' in o) as unknown as Event[];
  assert.equal(chained.length, 20);
  for (const e of chained) assert.equal(computeHash(e), e.hash);
  assert.deepEqual(verifyChain(chained), { ok: true });
  const ocsfEvents = asJson.filter((o) => 'class_uid' in o);
  assert.deepEqual(
    ocsfEvents.map((o) => (o.metadata as { uid: string }).uid),
    events.map((e) => e.id),
  );
  await Promise.all([json.close(), ocsf.close()]);
});

test('collector stopped mid-burst (SIGTERM; later hung, then SIGKILL): nothing lost, order kept, repeats only around the outages', async (t) => {
  const n = 2000;
  const events = makeEvents(n, 'outage');
  // A short grace suits a collector on loopback, where a dead peer's RST is back at once.
  // With ackGraceMs 0 and holdRecords 0 this test fails: the records the hung collector
  // had in its socket buffer when it was killed are lost.
  const sink = sinkFor({ port: rs.tcpPort }, { ackGraceMs: 50, holdRecords: 32 });
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  const count = (): number => arrivals('outage').length;
  const whileDown: SyslogSinkStats[] = [];
  // The collector fails while the burst goes on, at points set by what it has received.
  const outages = (async () => {
    while (count() < 500) await sleep(1);
    await rs.stop('SIGTERM');
    await sleep(150);
    whileDown.push(sink.stats());
    await rs.start();
    const restarted = performance.now();
    // Mid-flow, not while the backlog is flushed in one go.
    while (count() < 1300 || performance.now() - restarted < 200) await sleep(1);
    rs.freeze(); // hung: our writes still succeed, into its socket buffer
    await sleep(20);
    await rs.stop('SIGKILL');
    await sleep(150);
    whileDown.push(sink.stats());
    await rs.start();
  })();
  const delivered: Promise<void>[] = [];
  for (let i = 0; i < n; i++) {
    delivered.push(sink.deliver(events[i] as Event));
    if (i % 20 === 19) await sleep(10); // ~1,600 events/s
  }
  await Promise.all(delivered); // resolved while the collector was down, too: queued on disk
  await outages;
  for (const s of whileDown) {
    assert.equal(s.connected, false);
    assert.match(s.lastError ?? '', /ECONNREFUSED/);
  }
  // During the first outage the burst went on at full speed: those events waited on disk.
  assert.ok(
    (whileDown[0]?.queued ?? 0) >= 150,
    `${whileDown[0]?.queued} queued while the collector was down`,
  );
  await waitForAll('outage', n, 10_000);
  const { rewinds, duplicates } = checkOrder(arrivals('outage'), n, events);
  assert.ok(rewinds >= 1 && rewinds <= 4, `${rewinds} resends: one per failed connection`);
  // A repeat is a record sent within ackGraceMs (or among the last holdRecords) before the
  // connection failed: at ~1,600 events/s, about 100–150 per outage.
  assert.ok(duplicates <= 600, `${duplicates} duplicates`);
  // Back on line, a clean close confirms what is still held unacknowledged.
  for (let i = 0; i < 200 && !sink.stats().connected; i++) await sleep(10);
  await sink.close();
  assert.equal(sink.stats().queued, 0);
  t.diagnostic(`outages: ${rewinds} resends, ${duplicates} duplicates of ${n} events`);
});

/** Runs sink-child.testutil.js until it has confirmed `killAt` events, then SIGKILLs it. */
async function runChildUntil(args: object, killAt: number): Promise<number> {
  const child = spawn(process.execPath, [CHILD, JSON.stringify(args)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const confirmed = (): number => (out.match(/^Q \d+$/gm) ?? []).length;
  const deadline = Date.now() + 15_000;
  while (confirmed() < killAt) {
    assert.equal(child.exitCode, null, `the child exited: ${err}`);
    assert.ok(Date.now() < deadline, `the child confirmed only ${confirmed()} events`);
    await new Promise((r) => setTimeout(r, 2));
  }
  child.kill('SIGKILL');
  await exited;
  const qs = [...out.matchAll(/^Q (\d+)$/gm)].map((m) => Number(m[1]));
  // Confirmations come in delivery order.
  qs.forEach((q, k) => assert.equal(q, k));
  return qs.length;
}

test('a sink process killed with SIGKILL while the collector is down: the next one delivers its queue', async () => {
  const dir = queueDir();
  const n = 600;
  await rs.stop();
  let confirmed: number;
  try {
    confirmed = await runChildUntil(
      { queueDir: dir, port: rs.tcpPort, n, tag: 'killed-down', paceEvery: 20, paceMs: 3, ackGraceMs: 50 },
      300,
    );
  } finally {
    await rs.start();
  }
  assert.ok(confirmed >= 300 && confirmed < n, `${confirmed} confirmed`);
  const sink = new SyslogSink(
    { id: 'next', host: '127.0.0.1', port: rs.tcpPort, transport: 'tcp', format: 'rfc5424' },
    { queueDir: dir },
  );
  sinks.push(sink);
  sink.start(); // takes over the dead process's lock
  await waitForAll('killed-down', confirmed);
  await new Promise((r) => setTimeout(r, 300)); // anything beyond would show up now
  const got = arrivals('killed-down');
  // Nothing had been sent before the kill: every queued event arrives exactly once, in order.
  const indices = got.map((g) => g.index);
  assert.deepEqual(
    indices,
    indices.map((_, i) => i),
  );
  assert.ok(indices.length >= confirmed && indices.length <= n);
  await sink.close();
  assert.equal(sink.stats().queued, 0);
});

test('a sink process killed with SIGKILL mid-send: what it confirmed arrives, in order; repeats only at the kill', async (t) => {
  const dir = queueDir();
  const n = 2000;
  const confirmed = await runChildUntil(
    { queueDir: dir, port: rs.tcpPort, n, tag: 'killed-up', paceEvery: 20, paceMs: 10, ackGraceMs: 50 },
    1000,
  );
  const sink = new SyslogSink(
    { id: 'next', host: '127.0.0.1', port: rs.tcpPort, transport: 'tcp', format: 'rfc5424' },
    { queueDir: dir },
  );
  sinks.push(sink);
  sink.start();
  await waitForAll('killed-up', confirmed);
  await new Promise((r) => setTimeout(r, 300));
  const got = arrivals('killed-up');
  const indices = got.map((g) => g.index);
  assert.equal(indices[0], 0);
  let rewinds = 0;
  for (let k = 1; k < indices.length; k++) {
    const [prev, cur] = [indices[k - 1] as number, indices[k] as number];
    assert.ok(cur <= prev + 1, `event ${cur} after ${prev}: a gap`);
    if (cur <= prev) rewinds++;
  }
  assert.ok(
    rewinds <= 1,
    `${rewinds} resends: only the new process resends what the killed one had in flight`,
  );
  const distinct = new Set(indices).size;
  assert.ok(distinct >= confirmed, `${confirmed - distinct} confirmed events missing`);
  const byIndex = new Map<number, string>();
  for (const g of got) {
    assert.equal(byIndex.get(g.index) ?? g.id, g.id, 'a repeat carries the same event id');
    byIndex.set(g.index, g.id);
  }
  // Repeats: what the killed process had sent within its grace period, plus what it had
  // acknowledged but not yet recorded in its cursor (written every 100 ms).
  assert.ok(indices.length - distinct <= 600, `${indices.length - distinct} repeats`);
  await sink.close();
  t.diagnostic(`killed mid-send: ${indices.length - distinct} repeats of ${distinct} events`);
});

test('configuration is checked when the sink is made: HS_ERR_SYSLOG_CONFIG names what is wrong', () => {
  const base: SyslogTargetConfig = {
    id: 'cfg',
    host: '127.0.0.1',
    port: 514,
    transport: 'tcp',
    format: 'rfc5424',
  };
  const bad: [Partial<SyslogTargetConfig>, RegExp][] = [
    [{ port: 0 }, /port 0/],
    [{ host: 'a b' }, /host/],
    [{ transport: 'tls' }, /caPem/],
    [{ certPem: 'x' }, /certPem and keyPem/],
    [{ facility: 24 }, /facility 24/],
    [{ appName: 'has space' }, /appName/],
    [{ hostname: 'é' }, /hostname/],
    [{ transport: 'udp', maxDatagramBytes: 100 }, /maxDatagramBytes 100/],
    [{ format: 'xml' as SyslogTargetConfig['format'] }, /format xml/],
  ];
  for (const [over, re] of bad) {
    assert.throws(
      () => new SyslogSink({ ...base, ...over }, { queueDir: '/nonexistent' }),
      (e) => isHypersealError(e, 'HS_ERR_SYSLOG_CONFIG') && re.test(e.message),
      JSON.stringify(over),
    );
  }
  // A limit that holds the header but leaves nothing for a part of an event (a long hostname).
  assert.throws(
    () =>
      new SyslogSink(
        { ...base, hostname: 'h'.repeat(255), appName: 'a'.repeat(48), maxMessageBytes: 480 },
        { queueDir: '/x' },
      ),
    (e) => isHypersealError(e, 'HS_ERR_SYSLOG_CONFIG') && /cannot hold a part/.test(e.message),
  );
});

test('a queue directory is one sink’s: a second start() throws HS_ERR_SYSLOG_QUEUE_LOCKED', async () => {
  const dir = queueDir();
  const target: SyslogTargetConfig = {
    id: 'lock',
    host: '127.0.0.1',
    port: rs.tcpPort,
    transport: 'tcp',
    format: 'rfc5424',
  };
  const first = new SyslogSink(target, { queueDir: dir });
  sinks.push(first);
  first.start();
  assert.throws(
    () => new SyslogSink(target, { queueDir: dir }).start(),
    (e) => isHypersealError(e, 'HS_ERR_SYSLOG_QUEUE_LOCKED'),
  );
  await first.close();
  const second = new SyslogSink(target, { queueDir: dir });
  sinks.push(second);
  second.start(); // released by close()
  await second.close();
});

test('a damaged queue refuses deliveries with HS_ERR_SYSLOG_QUEUE_CORRUPT and says so in stats', async () => {
  const dir = queueDir();
  writeFileSync(join(dir, 'cursor.json'), 'not json');
  const sink = new SyslogSink(
    { id: 'corrupt', host: '127.0.0.1', port: rs.tcpPort, transport: 'tcp', format: 'rfc5424' },
    { queueDir: dir },
  );
  sinks.push(sink);
  sink.start();
  await assert.rejects(sink.deliver(makeEvents(1, 'corrupt')[0] as Event), (e) =>
    isHypersealError(e, 'HS_ERR_SYSLOG_QUEUE_CORRUPT'),
  );
  assert.match(sink.stats().lastError ?? '', /cursor\.json is not JSON/);
  await sink.close();
  assert.ok(!existsSync(join(dir, 'lock')), 'the lock is released');
});

test('close() is prompt while a connection attempt hangs (a peer that never answers the TLS handshake)', async () => {
  const { createServer } = await import('node:net');
  const silent = createServer(() => undefined);
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
  const port = (silent.address() as { port: number }).port;
  const sink = new SyslogSink(
    { id: 'hang', host: '127.0.0.1', port, transport: 'tls', format: 'rfc5424', caPem: rs.ca.certPem },
    { queueDir: queueDir(), connectTimeoutMs: 10_000, closeTimeoutMs: 300 },
  );
  sinks.push(sink);
  try {
    sink.start();
    await sink.deliver(makeEvents(1, 'hang')[0] as Event);
    await new Promise((r) => setTimeout(r, 100)); // the handshake is under way
    const t0 = performance.now();
    await sink.close();
    assert.ok(performance.now() - t0 < 3000, `close took ${Math.round(performance.now() - t0)} ms`);
    assert.equal(sink.stats().queued, 1, 'the event stays queued for the next start');
  } finally {
    silent.close();
  }
});
