/**
 * QMP codec with byte fixtures. The "captured" lines are verbatim from QEMU 7.2.22 (Debian
 * 1:7.2+dfsg-7+deb12u18+b3) on a unix socket, "\r\n" included; the malformed ones are ours.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HypersealError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import type { QmpMessage } from './qmp-codec.js';
import {
  DEFAULT_QMP_LIMITS,
  QmpLineFramer,
  REDACTED,
  decodeQmpLine,
  encodeQmpCommand,
  redactArguments,
  scrub,
} from './qmp-codec.js';

const CAPTURED = {
  greeting:
    '{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}\r\n',
  negotiated: '{"return": {}, "id": 1}\r\n',
  status: '{"return": {"status": "prelaunch", "singlestep": false, "running": false}, "id": {"a": [1]}}\r\n',
  uuid: '{"return": {"UUID": "11111111-2222-3333-4444-555555555555"}, "id": "x"}\r\n',
  notFound: '{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}\r\n',
  shutdown:
    '{"timestamp": {"seconds": 1795831011, "microseconds": 939546}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}\r\n',
  quitReturn: '{"return": {}}\r\n',
};

function assertCode(fn: () => unknown, code: ErrorCode): HypersealError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof HypersealError, `expected ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  return caught;
}

const lines = (framer: QmpLineFramer, ...chunks: (string | Buffer)[]): string[] =>
  chunks.flatMap((c) =>
    framer.push(typeof c === 'string' ? Buffer.from(c, 'utf8') : c).map((b) => b.toString('utf8')),
  );

void test('captured QEMU 7.2 lines decode to greeting, return, error and event', () => {
  const framer = new QmpLineFramer();
  const all = lines(framer, Object.values(CAPTURED).join(''));
  assert.equal(all.length, 7);
  // Line 2 (an object id) is checked last: the others decode.
  const msgs = all.map((l, i) => (i === 2 ? undefined : decodeQmpLine(l)));
  assert.deepEqual(msgs[0], {
    kind: 'greeting',
    version: { major: 7, minor: 2, micro: 22, package: 'Debian 1:7.2+dfsg-7+deb12u18+b3' },
    capabilities: ['oob'],
  });
  assert.deepEqual(msgs[1], { kind: 'return', id: 1, value: {} });
  assert.deepEqual(msgs[3], {
    kind: 'return',
    id: 'x',
    value: { UUID: '11111111-2222-3333-4444-555555555555' },
  });
  assert.deepEqual(msgs[4], {
    kind: 'error',
    id: undefined,
    errorClass: 'CommandNotFound',
    desc: 'The command nope has not been found',
  });
  assert.deepEqual(msgs[5], {
    kind: 'event',
    event: 'SHUTDOWN',
    data: { guest: false, reason: 'host-qmp-quit' },
    timestamp: { seconds: 1795831011, microseconds: 939546 },
  });
  assert.deepEqual(msgs[6], { kind: 'return', id: undefined, value: {} });
  // QEMU echoes any JSON id; we send numbers only, so an object id is refused.
  assertCode(() => decodeQmpLine(all[2] as string), 'HS_ERR_QMP_BAD_MESSAGE');
});

void test('framer: byte-at-a-time, bare LF, blank lines, CR split from LF across chunks', () => {
  const framer = new QmpLineFramer();
  const bytes = Buffer.from(CAPTURED.greeting + CAPTURED.negotiated, 'utf8');
  const out: string[] = [];
  for (const b of bytes) out.push(...lines(framer, Buffer.from([b])));
  assert.equal(out.length, 2);
  assert.equal(out[1], '{"return": {}, "id": 1}');
  assert.equal(framer.pendingBytes, 0);
  assert.deepEqual(lines(new QmpLineFramer(), '{"return": 1}\n\r\n\n{"return": 2}\n'), [
    '{"return": 1}',
    '{"return": 2}',
  ]);
  const f = new QmpLineFramer();
  assert.deepEqual(lines(f, '{"return": 3}\r'), []);
  assert.deepEqual(lines(f, '\n'), ['{"return": 3}']);
  // A multi-byte UTF-8 character cut between chunks survives.
  const text = Buffer.from('{"return": "é€😀"}\r\n', 'utf8');
  const g = new QmpLineFramer();
  const got = [...lines(g, text.subarray(0, 14)), ...lines(g, text.subarray(14))];
  assert.deepEqual(decodeQmpLine(got[0] as string), { kind: 'return', id: undefined, value: 'é€😀' });
});

void test('framer: a line over the limit is refused as soon as it is over, good lines first', () => {
  const f = new QmpLineFramer(16);
  assert.deepEqual(lines(f, '{"return": 1}\r\n'), ['{"return": 1}']); // 13 bytes + CRLF: fine
  // Exactly the limit, with CRLF split: allowed.
  assert.deepEqual(lines(f, '0123456789abcdef\r', '\n'), ['0123456789abcdef']);
  // Over the limit without any newline yet: refused at once, not buffered without end.
  const g = new QmpLineFramer(16);
  assertCode(() => g.push(Buffer.alloc(18, 0x41)), 'HS_ERR_QMP_TOO_LARGE');
  assertCode(() => g.push(Buffer.from('\n')), 'HS_ERR_QMP_TOO_LARGE'); // stays failed
  // A good line and an over-long one in one chunk: the good one is delivered, then the error.
  const h = new QmpLineFramer(16);
  assert.deepEqual(lines(h, `{"return": 1}\n${'x'.repeat(40)}\n`), ['{"return": 1}']);
  assertCode(() => h.push(Buffer.from('{"return": 2}\n')), 'HS_ERR_QMP_TOO_LARGE');
  assert.equal(DEFAULT_QMP_LIMITS.maxLineBytes, 4 << 20);
  // decodeQmpLine enforces the limit too.
  assertCode(() => decodeQmpLine('{"return": 12345678}', { maxLineBytes: 8 }), 'HS_ERR_QMP_TOO_LARGE');
});

void test('malformed lines: clean HS_ERR_QMP_BAD_MESSAGE, never a crash', () => {
  const bad: (string | Buffer)[] = [
    '',
    'not json',
    '{"execute"',
    '[1, 2]',
    'null',
    '"return"',
    '{}',
    '{"id": 1}',
    '{"return": {}, "error": {"class": "x", "desc": "y"}}',
    '{"QMP": {}}',
    '{"QMP": {"version": {"qemu": {"major": -1, "minor": 0, "micro": 0}}, "capabilities": []}}',
    '{"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 1.5}}, "capabilities": []}}',
    '{"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": [1]}}',
    '{"error": "boom"}',
    '{"error": {"class": 1, "desc": "x"}}',
    '{"error": {"class": "GenericError"}}',
    '{"return": {}, "id": null}',
    '{"return": {}, "id": [1]}',
    '{"event": 5, "timestamp": {"seconds": 1, "microseconds": 2}}',
    '{"event": "STOP"}',
    '{"event": "STOP", "timestamp": {"seconds": "1", "microseconds": 2}}',
    '{"event": "STOP", "data": [1], "timestamp": {"seconds": 1, "microseconds": 2}}',
    Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]), // invalid UTF-8
    Buffer.from([0xc3]), // truncated UTF-8 sequence
  ];
  for (const line of bad) {
    const err = assertCode(() => decodeQmpLine(line), 'HS_ERR_QMP_BAD_MESSAGE');
    assert.ok(err.message.length > 0);
  }
});

void test('hostile shapes within the limit: deep nesting, __proto__, huge numbers', () => {
  const deep = '{"return": ' + '['.repeat(100_000) + ']'.repeat(100_000) + ', "id": 3}';
  const m = decodeQmpLine(deep);
  assert.equal(m.kind, 'return');
  // JSON.parse makes "__proto__" an own data property; it must not become a prototype.
  const p = decodeQmpLine(
    '{"__proto__": {"return": 1}, "event": "X", "timestamp": {"seconds": 1, "microseconds": 0}}',
  );
  assert.equal(p.kind, 'event');
  assertCode(() => decodeQmpLine('{"__proto__": {"return": 1}}'), 'HS_ERR_QMP_BAD_MESSAGE');
  assertCode(
    () => decodeQmpLine('{"event": "X", "timestamp": {"seconds": 1e400, "microseconds": 0}}'),
    'HS_ERR_QMP_BAD_MESSAGE',
  );
  // Random bytes: every outcome is a message or a HypersealError.
  let seed = 42;
  const rnd = (): number => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  const alphabet = '{}[]":,0123456789.-eE truefalsnul\\"return"error"event"QMP"id"é';
  for (let i = 0; i < 2000; i++) {
    const len = Math.floor(rnd() * 60);
    let s = '';
    for (let j = 0; j < len; j++) s += alphabet[Math.floor(rnd() * alphabet.length)];
    try {
      const msg: QmpMessage = decodeQmpLine(s);
      assert.ok(['greeting', 'return', 'error', 'event'].includes(msg.kind));
    } catch (err) {
      assert.ok(
        err instanceof HypersealError,
        `non-Hyperseal error for ${JSON.stringify(s)}: ${String(err)}`,
      );
    }
  }
});

void test('encodeQmpCommand: one LF-terminated line, newlines in strings escaped', () => {
  assert.equal(
    encodeQmpCommand({ execute: 'qmp_capabilities' }).toString(),
    '{"execute":"qmp_capabilities"}\n',
  );
  assert.equal(
    encodeQmpCommand({ execute: 'query-status', id: 42 }).toString(),
    '{"execute":"query-status","id":42}\n',
  );
  const line = encodeQmpCommand({
    execute: 'human-monitor-command',
    arguments: { 'command-line': 'a\nb' },
    id: 1,
  });
  assert.equal(line.indexOf(0x0a), line.length - 1);
  assertCode(() => encodeQmpCommand({ execute: 'bad name' }), 'HS_ERR_INVALID_ARGUMENT');
  assertCode(() => encodeQmpCommand({ execute: '' }), 'HS_ERR_INVALID_ARGUMENT');
  assertCode(() => encodeQmpCommand({ execute: 'x', arguments: { n: 1n } }), 'HS_ERR_INVALID_ARGUMENT');
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  assertCode(() => encodeQmpCommand({ execute: 'x', arguments: cyclic }), 'HS_ERR_INVALID_ARGUMENT');
});

void test('redaction: secret objects lose data/iv/keyid, other commands are untouched', () => {
  const args = {
    'qom-type': 'secret',
    id: 'sec0',
    data: 'P14znqo/nUaK3oD061sVqqtlfYLYeK/SJOwGd+oYerw=',
    keyid: 'master0',
    iv: '27pS5pv0MJfNeGFolEo+dw==',
    format: 'base64',
  };
  const r = redactArguments('object-add', args);
  assert.deepEqual(r.arguments, {
    'qom-type': 'secret',
    id: 'sec0',
    data: REDACTED,
    keyid: REDACTED,
    iv: REDACTED,
    format: 'base64',
  });
  assert.deepEqual(r.secrets.sort(), [args.data, args.iv, args.keyid].sort());
  assert.equal(
    args.data,
    'P14znqo/nUaK3oD061sVqqtlfYLYeK/SJOwGd+oYerw=',
    'the caller’s object is not modified',
  );
  // Legacy props wrapper and secret_keyring.
  const legacy = redactArguments('object-add', {
    'qom-type': 'secret_keyring',
    id: 's',
    props: { data: 'k' },
  });
  assert.deepEqual(legacy.arguments, { 'qom-type': 'secret_keyring', id: 's', props: { data: REDACTED } });
  // Not a secret object: nothing to hide.
  const plain = { 'qom-type': 'iothread', id: 'io0' };
  assert.equal(redactArguments('object-add', plain).arguments, plain);
  assert.equal(redactArguments('query-status', undefined).arguments, undefined);
  assert.deepEqual(redactArguments('set_password', { protocol: 'vnc', password: 'pw' }).arguments, {
    protocol: 'vnc',
    password: REDACTED,
  });
  const hmp = redactArguments('human-monitor-command', { 'command-line': 'object_add secret,id=s,data=k' });
  assert.deepEqual(hmp.arguments, { 'command-line': REDACTED });
  assert.equal(scrub('bad value P14z for sec0 P14z', ['P14z']), `bad value ${REDACTED} for sec0 ${REDACTED}`);
});
