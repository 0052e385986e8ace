/**
 * QmpClient against a scripted QMP server on a unix socket: id matching with out-of-order
 * replies, events, timeouts with late replies, closes, malformed input, redaction of secret
 * object arguments in errors and traces. The real-QEMU side is in vm-process.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { HypersealError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import type { QmpEvent } from './qmp-codec.js';

// Tracing is read once when trace.js loads: switch it on before the client is imported.
process.env.HYPERSEAL_TRACE = 'qmp';
const { QmpClient } = await import('./qmp-client.js');

const dir = mkdtempSync(join(tmpdir(), 'hs-qmp-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let serial = 0;

const GREETING =
  '{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}\r\n';

interface Request {
  execute: string;
  arguments?: Record<string, unknown>;
  id?: unknown;
}

/** Answers `reply(line)` for each request; `reply` may write anything, or nothing. */
type Handler = (req: Request, send: (text: string) => void, socket: net.Socket) => void;

interface FakeQemu {
  path: string;
  requests: Request[];
  sockets: net.Socket[];
  close(): Promise<void>;
}

const ok = (req: Request, value: unknown = {}): string =>
  JSON.stringify({ return: value, id: req.id }) + '\r\n';

async function fakeQemu(handler: Handler, opts: { greeting?: string | false } = {}): Promise<FakeQemu> {
  const path = join(dir, `q${++serial}.sock`);
  const requests: Request[] = [];
  const sockets: net.Socket[] = [];
  const server = net.createServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => {});
    if (opts.greeting !== false) socket.write(opts.greeting ?? GREETING);
    let buf = '';
    socket.on('data', (chunk) => {
      buf += chunk.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const req = JSON.parse(buf.slice(0, nl)) as Request;
        buf = buf.slice(nl + 1);
        requests.push(req);
        if (req.execute === 'qmp_capabilities') socket.write(ok(req));
        else handler(req, (t) => socket.write(t), socket);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return {
    path,
    requests,
    sockets,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

async function rejects(p: Promise<unknown>, code: ErrorCode): Promise<HypersealError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof HypersealError, `expected ${code}, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}, but it resolved`);
}

/**
 * Trace lines (stderr, JSON with "subsystem") are kept here instead of cluttering the test
 * output; the redaction test reads them. Anything else still reaches stderr.
 */
let traced = '';
const stderrWrite = process.stderr.write.bind(process.stderr);
process.stderr.write = ((chunk: string | Uint8Array, ...rest: never[]): boolean => {
  const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
  if (text.startsWith('{"time":') && text.includes('"subsystem":"qmp"')) {
    traced += text;
    return true;
  }
  return stderrWrite(chunk, ...rest);
}) as typeof process.stderr.write;
after(() => {
  process.stderr.write = stderrWrite;
});

/** The trace lines written while `fn` ran. */
async function captureTraces(fn: () => Promise<void>): Promise<string> {
  const from = traced.length;
  await fn();
  return traced.slice(from);
}

void test('negotiates, matches ids with out-of-order replies, routes interleaved events', async () => {
  const held: Request[] = [];
  const q = await fakeQemu((req, send) => {
    if (req.execute === 'slow') {
      held.push(req);
      return;
    }
    // An event before the reply, as QEMU does (SHUTDOWN comes before quit's return).
    send('{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME"}\r\n');
    send(ok(req, { echo: req.execute }));
    if (req.execute === 'fast') {
      const slow = held.shift();
      if (slow !== undefined) send(ok(slow, { echo: 'slow' }));
    }
  });
  const client = await QmpClient.connect(q.path, { label: 'vm-a' });
  assert.deepEqual(client.version, {
    major: 7,
    minor: 2,
    micro: 22,
    package: 'Debian 1:7.2+dfsg-7+deb12u18+b3',
  });
  assert.deepEqual(client.capabilities, ['oob']);
  assert.equal(q.requests[0]?.execute, 'qmp_capabilities');
  const seen: QmpEvent[] = [];
  const off = client.onEvent((e) => seen.push(e));
  const resumed = client.waitForEvent('RESUME', { timeoutMs: 2000 });
  const slow = client.execute('slow');
  const fast = client.execute('fast');
  assert.deepEqual(await fast, { echo: 'fast' });
  assert.deepEqual(await slow, { echo: 'slow' });
  assert.equal((await resumed).event, 'RESUME');
  assert.equal(seen.length, 1);
  off();
  await client.execute('other');
  assert.equal(seen.length, 1, 'unsubscribed listener is not called');
  // Every request carried a distinct numeric id.
  const ids = q.requests.map((r) => r.id);
  assert.equal(new Set(ids).size, ids.length);
  assert.ok(ids.every((id) => typeof id === 'number'));
  await client.close();
  await q.close();
});

void test('an error reply is HS_ERR_QMP_COMMAND_FAILED naming the command, class and desc', async () => {
  const q = await fakeQemu((req, send) =>
    send(
      JSON.stringify({ error: { class: 'DeviceNotFound', desc: "Device 'vd9' not found" }, id: req.id }) +
        '\r\n',
    ),
  );
  const client = await QmpClient.connect(q.path, { label: 'vm-b' });
  const err = await rejects(client.execute('device_del', { id: 'vd9' }), 'HS_ERR_QMP_COMMAND_FAILED');
  assert.match(err.message, /device_del on vm-b failed: DeviceNotFound: Device 'vd9' not found/);
  assert.equal(err.details?.command, 'device_del');
  assert.equal(err.details?.errorClass, 'DeviceNotFound');
  assert.deepEqual(err.details?.arguments, { id: 'vd9' });
  assert.equal(typeof err.details?.durationMs, 'number');
  assert.equal(err.status, 502);
  await client.close();
  await q.close();
});

void test('a timed-out command fails alone; its late reply is dropped by id', async () => {
  let late: (() => void) | undefined;
  const q = await fakeQemu((req, send) => {
    if (req.execute === 'hang') late = () => send(ok(req, 'late'));
    else send(ok(req, req.execute));
  });
  const client = await QmpClient.connect(q.path, { commandTimeoutMs: 5000 });
  const err = await rejects(client.execute('hang', undefined, { timeoutMs: 100 }), 'HS_ERR_QMP_TIMEOUT');
  assert.match(err.message, /hang .*no answer within 100 ms/);
  assert.equal(err.status, 504);
  late?.();
  assert.equal(await client.execute('after'), 'after');
  assert.ok(client.isOpen);
  await client.close();
  await q.close();
});

void test('secret object arguments never reach errors or traces', async () => {
  const DATA = 'P14znqo/nUaK3oD061sVqqtlfYLYeK/SJOwGd+oYerw=';
  const IV = '27pS5pv0MJfNeGFolEo+dw==';
  const q = await fakeQemu((req, send) => {
    if (req.id === undefined) return;
    if ((req.arguments?.id as string) === 'sec-hang') return; // let it time out
    // A desc quoting the value: QEMU does not today, the scrubber makes sure it never shows.
    send(
      JSON.stringify({ error: { class: 'GenericError', desc: `bad data ${DATA} / ${IV}` }, id: req.id }) +
        '\r\n',
    );
  });
  const client = await QmpClient.connect(q.path, { label: 'vm-s' });
  const errors: HypersealError[] = [];
  const stderr = await captureTraces(async () => {
    errors.push(
      await rejects(
        client.execute('object-add', {
          'qom-type': 'secret',
          id: 'sec0',
          data: DATA,
          keyid: 'master0',
          iv: IV,
          format: 'base64',
        }),
        'HS_ERR_QMP_COMMAND_FAILED',
      ),
    );
    errors.push(
      await rejects(
        client.execute(
          'object-add',
          { 'qom-type': 'secret', id: 'sec-hang', data: DATA, iv: IV },
          { timeoutMs: 50 },
        ),
        'HS_ERR_QMP_TIMEOUT',
      ),
    );
    const pending = client.execute('object-add', {
      'qom-type': 'secret',
      id: 'sec-hang',
      data: DATA,
      iv: IV,
    });
    for (const s of q.sockets) s.destroy();
    errors.push(await rejects(pending, 'HS_ERR_QMP_CONNECTION_CLOSED'));
  });
  // The secret did reach QEMU (the point of the command)...
  assert.equal(q.requests[1]?.arguments?.data, DATA);
  // ...and nothing else.
  assert.match(stderr, /"subsystem":"qmp"/, 'tracing was on');
  assert.match(stderr, /object-add/);
  for (const text of [
    stderr,
    ...errors.map((e) => `${e.message} ${JSON.stringify(e.toJSON())} ${e.stack ?? ''}`),
  ]) {
    assert.ok(!text.includes(DATA), `secret data leaked: ${text}`);
    assert.ok(!text.includes(IV), `secret iv leaked: ${text}`);
    assert.ok(!text.includes('master0'), `keyid leaked: ${text}`);
  }
  assert.deepEqual(errors[0]?.details?.arguments, {
    'qom-type': 'secret',
    id: 'sec0',
    data: '<redacted>',
    keyid: '<redacted>',
    iv: '<redacted>',
    format: 'base64',
  });
  await client.close();
  await q.close();
});

void test('QEMU going away fails commands in flight and later ones with CONNECTION_CLOSED', async () => {
  const q = await fakeQemu((req, _send, socket) => {
    if (req.execute === 'quit') socket.end();
  });
  const client = await QmpClient.connect(q.path, { label: 'vm-c' });
  const err = await rejects(client.execute('quit'), 'HS_ERR_QMP_CONNECTION_CLOSED');
  assert.match(err.message, /QMP quit on vm-c/);
  await client.closed;
  assert.equal(client.isOpen, false);
  await rejects(client.execute('query-status'), 'HS_ERR_QMP_CONNECTION_CLOSED');
  await rejects(client.waitForEvent('STOP'), 'HS_ERR_QMP_CONNECTION_CLOSED');
  await q.close();
});

void test('malformed or over-long lines drop the connection with a stable code', async () => {
  for (const [reply, code] of [
    ['{"return": \r\n', 'HS_ERR_QMP_BAD_MESSAGE'],
    ['{"return": {}}\r\n', 'HS_ERR_QMP_BAD_MESSAGE'], // no id: out of step
    [
      '{"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": []}}\n',
      'HS_ERR_QMP_BAD_MESSAGE',
    ],
    [`{"return": "${'x'.repeat(300)}"}\r\n`, 'HS_ERR_QMP_TOO_LARGE'],
  ] as const) {
    const q = await fakeQemu((_req, send) => send(reply));
    const client = await QmpClient.connect(q.path, { maxLineBytes: 256 });
    await rejects(client.execute('query-status'), code);
    await client.closed;
    assert.equal(client.isOpen, false);
    await q.close();
  }
  // Something that is not a greeting first.
  const q = await fakeQemu(() => {}, { greeting: '{"return": {}}\r\n' });
  await rejects(QmpClient.connect(q.path), 'HS_ERR_QMP_BAD_MESSAGE');
  await q.close();
});

void test('connect: missing socket, held-back greeting, refused negotiation', async () => {
  const missing = await rejects(QmpClient.connect(join(dir, 'nope.sock')), 'HS_ERR_QMP_CONNECT');
  assert.equal(missing.details?.errno, 'ENOENT');
  // QEMU greets one client at a time: the second one sees a silent socket.
  const busy = await fakeQemu(() => {}, { greeting: false });
  const err = await rejects(QmpClient.connect(busy.path, { connectTimeoutMs: 150 }), 'HS_ERR_QMP_TIMEOUT');
  assert.match(err.message, /another QMP client/);
  await busy.close();
  const refusing = await fakeQemu(() => {}, { greeting: false });
  const server = net.createServer((socket) => {
    socket.write(GREETING);
    socket.on('data', () =>
      socket.write(
        '{"error": {"class": "CommandNotFound", "desc": "Capabilities negotiation is already complete"}, "id": 1}\r\n',
      ),
    );
  });
  const path = join(dir, 'refuse.sock');
  await new Promise<void>((r) => server.listen(path, r));
  await rejects(QmpClient.connect(path), 'HS_ERR_QMP_CONNECT');
  await new Promise<void>((r) => server.close(() => r()));
  await refusing.close();
});

void test('close(): in-flight commands fail, the server sees the disconnect', async () => {
  const q = await fakeQemu(() => {});
  const client = await QmpClient.connect(q.path);
  const failed = rejects(client.execute('query-status'), 'HS_ERR_QMP_CONNECTION_CLOSED');
  const ended = new Promise<void>((r) => q.sockets[0]?.once('close', () => r()));
  await client.close();
  const err = await failed;
  assert.match(err.message, /closed by the client/);
  await ended;
  await client.close(); // idempotent
  await q.close();
});

void test('a throwing event listener does not break the connection', async () => {
  const q = await fakeQemu((req, send) => {
    send('{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}\r\n');
    send(ok(req));
  });
  const client = await QmpClient.connect(q.path);
  client.onEvent(() => {
    throw new Error('listener bug');
  });
  const stop = client.waitForEvent('STOP', { match: (e) => e.timestamp.seconds === 1 });
  await client.execute('stop');
  assert.equal((await stop).event, 'STOP');
  assert.ok(client.isOpen);
  await rejects(client.waitForEvent('NEVER', { timeoutMs: 30 }), 'HS_ERR_QMP_TIMEOUT');
  await client.close();
  await q.close();
});
