// The wire formats, byte for byte: RFC 5424 header and structured data (escaping, PRI),
// parts that each stay valid and join back to the whole message, JSON and OCSF, and the
// octet-counting codec with its limits.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isHypersealError } from '../../errors.js';
import type { Event, JsonValue } from '../index.js';
import { EventTypes, computeHash, renderValue } from '../index.js';
import {
  OctetCountedDecoder,
  SD_ID_EVENT,
  escapeParamValue,
  formatMessages,
  frameOctetCounted,
  joinParts,
  parseRfc5424,
  priority,
  renderChangeParam,
  renderFullValue,
  sdParam,
  splitFrames,
  toJsonLine,
  toOcsf,
  toRfc5424,
} from './format.js';
import { makeEvents } from './rsyslog.testutil.js';

const EVENT: Event = {
  id: '6f1c1f9e-8a8b-4c1e-9a57-3b2d6c1f0a11',
  time: '2024-05-01T12:00:00.000Z',
  type: 'vm.reconfigured',
  severity: 'info',
  user: 'ops@local',
  sourceIp: '10.0.0.5',
  object: { kind: 'vm', id: 'vm-42', name: 'web-01' },
  changes: [
    { path: 'memoryMiB', from: 6144, to: 10240 },
    { path: 'nics[nic0].network', from: 'PCI', to: 'Non-PCI' },
  ],
  result: 'success',
  message: "ops@local reconfigured VM web-01: memoryMiB 6144 → 10240; nics[nic0].network 'PCI' → 'Non-PCI'",
  seq: 7,
  prevHash: 'a'.repeat(64),
  hash: 'b'.repeat(64),
};
const HEADER = { hostname: 'mgr01', procId: '4242' };

test('RFC 5424: header, both SD elements (with ] escaped), BOM-less MSG', () => {
  assert.equal(
    toRfc5424(EVENT, HEADER),
    '<134>1 2024-05-01T12:00:00.000Z mgr01 hyperseal 4242 vm.reconfigured ' +
      '[hyperseal@32473 id="6f1c1f9e-8a8b-4c1e-9a57-3b2d6c1f0a11" type="vm.reconfigured" seq="7" ' +
      'user="ops@local" sourceIp="10.0.0.5" object="vm:vm-42" result="success" hash="' +
      'b'.repeat(64) +
      '"]' +
      `[hyperseal-changes@32473 c1="memoryMiB: 6144 → 10240" c2="nics[nic0\\].network: 'PCI' → 'Non-PCI'"] ` +
      "ops@local reconfigured VM web-01: memoryMiB 6144 → 10240; nics[nic0].network 'PCI' → 'Non-PCI'",
  );
  assert.notEqual(Buffer.from(toRfc5424(EVENT, HEADER))[0], 0xef, 'no BOM anywhere at the start');
  assert.ok(!Buffer.from(toRfc5424(EVENT, HEADER)).includes(Buffer.from([0xef, 0xbb, 0xbf])), 'no BOM');
});

test('RFC 5424: no sourceIp, no changes, defaults (hostname and procid NILVALUE), failure result', () => {
  const e: Event = {
    ...EVENT,
    sourceIp: null,
    changes: [],
    result: 'failure',
    severity: 'warning',
    message: 'm',
  };
  assert.equal(
    toRfc5424(e),
    '<132>1 2024-05-01T12:00:00.000Z - hyperseal - vm.reconfigured ' +
      '[hyperseal@32473 id="6f1c1f9e-8a8b-4c1e-9a57-3b2d6c1f0a11" type="vm.reconfigured" seq="7" ' +
      `user="ops@local" object="vm:vm-42" result="failure" hash="${'b'.repeat(64)}"] m`,
  );
});

test('SD-PARAM escaping: exactly ", \\ and ] get a backslash', () => {
  assert.equal(escapeParamValue('a"b\\c]d[e=f'), 'a\\"b\\\\c\\]d[e=f');
  const e: Event = { ...EVENT, user: 'x"y\\z]', changes: [{ path: 'a', from: 'p"q', to: 'r]s' }] };
  const text = toRfc5424(e, HEADER);
  assert.ok(text.includes('user="x\\"y\\\\z\\]"'), text);
  assert.ok(text.includes(`c1="a: 'p\\"q' → 'r\\]s'"`), text);
  // And the parser undoes it.
  const parsed = parseRfc5424(text);
  assert.equal(sdParam(parsed, SD_ID_EVENT, 'user'), 'x"y\\z]');
  assert.equal(sdParam(parsed, 'hyperseal-changes@32473', 'c1'), "a: 'p\"q' → 'r]s'");
});

test('PRI = facility × 8 + severity (info 6, warning 4, error 3, critical 2); facility configurable', () => {
  assert.deepEqual(
    (['info', 'warning', 'error', 'critical'] as const).map((s) => priority(16, s)),
    [134, 132, 131, 130],
  );
  assert.ok(toRfc5424({ ...EVENT, severity: 'critical' }, { facility: 4 }).startsWith('<34>1 '));
  assert.ok(toRfc5424(EVENT, { facility: 23 }).startsWith('<190>1 '));
  assert.throws(
    () => toRfc5424(EVENT, { facility: 24 }),
    (e) => isHypersealError(e, 'HS_ERR_SYSLOG_CONFIG'),
  );
});

test('header fields: spaces and non-ASCII become _, lengths are capped; every event type fits MSGID', () => {
  const text = toRfc5424(EVENT, { hostname: 'my host', appName: 'app é', procId: 'p'.repeat(200) });
  const p = parseRfc5424(text);
  assert.equal(p.hostname, 'my_host');
  assert.equal(p.appName, 'app__');
  assert.equal(p.procId.length, 128);
  for (const type of Object.keys(EventTypes)) {
    assert.ok(type.length <= 32 && /^[\x21-\x7e]+$/.test(type), `event type ${type} is a valid MSGID`);
  }
});

test('a message within the limit is not split', () => {
  const whole = toRfc5424(EVENT, HEADER);
  assert.deepEqual(
    formatMessages(EVENT, 'rfc5424', { ...HEADER, maxMessageBytes: Buffer.byteLength(whole) }),
    [whole],
  );
});

test('parts: exact strings of a split event, each a valid RFC 5424 message with the same id', () => {
  const e: Event = {
    ...EVENT,
    changes: [{ path: 'note', from: null, to: 'x'.repeat(300) }],
    message: 'y'.repeat(200),
  };
  const parts = formatMessages(e, 'rfc5424', { ...HEADER, maxMessageBytes: 480 });
  const head = '<134>1 2024-05-01T12:00:00.000Z mgr01 hyperseal 4242 vm.reconfigured ';
  const id = 'id="6f1c1f9e-8a8b-4c1e-9a57-3b2d6c1f0a11"';
  assert.deepEqual(parts, [
    `${head}[hyperseal@32473 ${id} part="1/3" type="vm.reconfigured" seq="7" user="ops@local" ` +
      `sourceIp="10.0.0.5" object="vm:vm-42" result="success" hash="${'b'.repeat(64)}"]` +
      `[hyperseal-changes@32473 c1="note: (none) → '${'x'.repeat(117)}"]`,
    `${head}[hyperseal@32473 ${id} part="2/3"][hyperseal-changes@32473 c1="${'x'.repeat(183)}'"] ${'y'.repeat(125)}`,
    `${head}[hyperseal@32473 ${id} part="3/3"] ${'y'.repeat(75)}`,
  ]);
  // Packed tight: the first two parts are exactly at the limit (the change is cut mid-value).
  assert.deepEqual(
    parts.map((p) => Buffer.byteLength(p)),
    [480, 480, 215],
  );
  assert.deepEqual(joinParts(parts.map(parseRfc5424)), parseRfc5424(toRfc5424(e, HEADER)));
});

/** A deterministic generator, so a failing case can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0;
    return s / 2 ** 32;
  };
}

test('parts under fuzzing: any content, any limit — every part fits, parses, and they join to the whole', () => {
  const alphabet = ['a', 'Z', ' ', '"', '\\', ']', '[', '=', 'é', '→', '😀', '\u00a0', "'"];
  const rand = rng(42);
  const str = (max: number): string =>
    Array.from(
      { length: Math.floor(rand() * max) },
      () => alphabet[Math.floor(rand() * alphabet.length)],
    ).join('');
  for (let round = 0; round < 300; round++) {
    const changes = Array.from({ length: Math.floor(rand() * 6) }, () => ({
      path: `p${str(8)}`,
      from: str(40),
      to: rand() < 0.2 ? null : str(700),
    }));
    const e: Event = {
      ...EVENT,
      user: `u${str(30)}`,
      sourceIp: rand() < 0.5 ? null : str(20),
      changes,
      message: str(3000),
    };
    const max = 480 + Math.floor(rand() * 2000);
    for (const format of ['rfc5424', 'json', 'ocsf'] as const) {
      const parts = formatMessages(e, format, { ...HEADER, maxMessageBytes: max });
      const whole = toRfc5424(e, HEADER, format);
      const unsplit = formatMessages(e, format, { ...HEADER, maxMessageBytes: 1 << 20 });
      assert.deepEqual(
        unsplit,
        [whole],
        `round ${round} ${format}: the fast path writes what assemble() does`,
      );
      for (const p of parts) {
        assert.ok(
          Buffer.byteLength(p) <= max,
          `round ${round} ${format}: a part of ${Buffer.byteLength(p)} > ${max}`,
        );
        const parsed = parseRfc5424(p);
        assert.equal(sdParam(parsed, SD_ID_EVENT, 'id'), e.id);
        assert.equal(parsed.msgId, 'vm.reconfigured');
      }
      if (parts.length === 1) {
        assert.equal(parts[0], whole);
      } else {
        const shuffled = [...parts].sort(() => rand() - 0.5).map(parseRfc5424);
        assert.deepEqual(joinParts(shuffled), parseRfc5424(whole), `round ${round} ${format}: join`);
      }
    }
  }
});

test('change values use the event message’s notation, uncut (renderFullValue ≡ renderValue without a limit)', () => {
  const rand = rng(7);
  const chars = ['a', "'", '\\', '\n', '\u0007', '\u2028', 'é', '😀', '"', ']', ' '];
  const value = (depth: number): JsonValue => {
    const r = rand();
    if (r < 0.1) return null;
    if (r < 0.2) return rand() < 0.5;
    if (r < 0.35) return Math.round((rand() - 0.5) * 1e6) / 100;
    if (r < 0.7 || depth > 3)
      return Array.from(
        { length: Math.floor(rand() * 12) },
        () => chars[Math.floor(rand() * chars.length)],
      ).join('');
    if (r < 0.85) return Array.from({ length: Math.floor(rand() * 4) }, () => value(depth + 1));
    const o: Record<string, JsonValue> = {};
    for (let i = Math.floor(rand() * 4); i > 0; i--)
      o[rand() < 0.5 ? `k${i}` : `a b${i}'`] = value(depth + 1);
    return o;
  };
  for (let i = 0; i < 2000; i++) {
    const v = value(0);
    assert.equal(renderFullValue(v), renderValue(v, Number.MAX_SAFE_INTEGER), JSON.stringify(v));
  }
  assert.equal(
    renderChangeParam({ path: 'a\nb', from: 'x'.repeat(100), to: null }),
    `a\\nb: '${'x'.repeat(100)}' → (none)`,
  );
});

test('a limit too small for a part header is a configuration error', () => {
  const e: Event = { ...EVENT, message: 'y'.repeat(1000) };
  assert.throws(
    () =>
      formatMessages(e, 'rfc5424', {
        hostname: 'h'.repeat(255),
        appName: 'a'.repeat(48),
        maxMessageBytes: 400,
      }),
    (err) => isHypersealError(err, 'HS_ERR_SYSLOG_CONFIG'),
  );
});

test('json: one line of canonical JSON from which the collector can recompute the hash', () => {
  const [e] = makeEvents(1, 'json') as [Event];
  const line = toJsonLine(e);
  assert.ok(!line.includes('\n'));
  const back = JSON.parse(line) as Event;
  assert.deepEqual(back, e);
  assert.equal(computeHash(back), e.hash);
  const msg = formatMessages(e, 'json', { ...HEADER, maxMessageBytes: 8000 });
  assert.equal(msg.length, 1);
  const parsed = parseRfc5424(msg[0] as string);
  assert.deepEqual(parsed.sd, [
    {
      id: SD_ID_EVENT,
      params: [
        ['id', e.id],
        ['seq', '0'],
      ],
    },
  ]);
  assert.equal(parsed.msg, line);
});

test('ocsf: Entity Management update with actor, endpoint, entity, changes unmapped', () => {
  assert.deepEqual(toOcsf(EVENT), {
    category_uid: 3,
    category_name: 'Identity & Access Management',
    class_uid: 3004,
    class_name: 'Entity Management',
    activity_id: 3,
    activity_name: 'Update',
    type_uid: 300403,
    type_name: 'Entity Management: Update',
    time: Date.parse('2024-05-01T12:00:00.000Z'),
    severity_id: 1,
    severity: 'Informational',
    status_id: 1,
    status: 'Success',
    message: EVENT.message,
    metadata: {
      version: '1.3.0',
      uid: EVENT.id,
      sequence: 7,
      event_code: 'vm.reconfigured',
      product: { name: 'Hyperseal', vendor_name: 'Hyperseal' },
    },
    actor: { user: { name: 'ops@local' } },
    src_endpoint: { ip: '10.0.0.5' },
    entity: { uid: 'vm-42', name: 'web-01', type: 'vm' },
    unmapped: { changes: EVENT.changes, seq: 7, hash: 'b'.repeat(64), prev_hash: 'a'.repeat(64) },
  });
});

test('ocsf: logins are Authentication, refused calls API Activity, verbs pick the activity', () => {
  const of = (type: Event['type'], over: Partial<Event> = {}): ReturnType<typeof toOcsf> =>
    toOcsf({ ...EVENT, type, ...over });
  const failed = of('user.login-failed', { sourceIp: null });
  assert.deepEqual(
    [failed.class_uid, failed.activity_id, failed.type_uid, failed.status_id],
    [3002, 1, 300201, 2],
  );
  assert.equal(failed.src_endpoint, undefined);
  assert.deepEqual([of('user.logged-out').type_uid, of('user.logged-in').status], [300202, 'Success']);
  const denied = of('access.denied');
  assert.deepEqual(
    [denied.class_uid, denied.category_uid, denied.activity_id, denied.status],
    [6003, 6, 99, 'Failure'],
  );
  assert.deepEqual(denied.api, { operation: 'access.denied' });
  assert.deepEqual(denied.resources, [{ uid: 'vm-42', name: 'web-01', type: 'vm' }]);
  assert.deepEqual(
    (
      [
        'vm.created',
        'vm.deleted',
        'vm.migrated',
        'vm.powered-on',
        'vm.shut-down',
        'vm.secure-boot-disabled',
      ] as const
    ).map((t) => of(t).activity_id),
    [1, 4, 5, 10, 11, 9],
  );
  assert.equal(of('vm.created', { result: 'failure' }).status_id, 2);
  assert.equal(of('audit.integrity-failed', { severity: 'critical' }).severity_id, 5);
});

test('octet counting: LEN counts bytes, not characters', () => {
  assert.equal(frameOctetCounted('héllo').toString(), '6 héllo');
  const two = Buffer.concat([frameOctetCounted('a b'), frameOctetCounted('→')]);
  assert.equal(two.toString(), '3 a b3 →');
  assert.deepEqual(
    splitFrames(two).map((b) => b.toString()),
    ['a b', '→'],
  );
  assert.throws(
    () => splitFrames(Buffer.from('5 abc')),
    (e) => isHypersealError(e, 'HS_ERR_SYSLOG_FRAMING'),
  );
});

test('octet-counting decoder: any chunking gives the same messages', () => {
  const msgs = ['<134>1 - - - - - - x', 'y'.repeat(300), 'é→😀'];
  const stream = Buffer.concat(msgs.map(frameOctetCounted));
  for (const size of [1, 2, 3, 7, 64, stream.length]) {
    const d = new OctetCountedDecoder();
    const out: string[] = [];
    for (let i = 0; i < stream.length; i += size)
      out.push(...d.push(stream.subarray(i, i + size)).map(String));
    assert.deepEqual(out, msgs, `chunks of ${size}`);
    assert.equal(d.pending, 0);
  }
});

test('octet-counting decoder: refuses bad lengths and oversize frames before buffering them', () => {
  const bad = ['0 x', ' x', 'a x', '1234567890 x', '01 x'];
  for (const b of bad) {
    assert.throws(
      () => new OctetCountedDecoder().push(Buffer.from(b)),
      (e) => isHypersealError(e, 'HS_ERR_SYSLOG_FRAMING'),
      JSON.stringify(b),
    );
  }
  const d = new OctetCountedDecoder(100);
  assert.throws(() => d.push(Buffer.from('101 ')), /exceeds the limit of 100/);
  assert.throws(() => d.push(Buffer.from('1 x')), /out of sync/);
  assert.deepEqual(new OctetCountedDecoder(100).push(Buffer.from('100 ')), []);
});

test('parser: rejects what is not RFC 5424', () => {
  for (const text of [
    'hello',
    '<13>1 a b c d e',
    '<13>1 a b c d e [x',
    '<13>1 a b c d e [x a="b"',
    '<13>1 a b c d e -x',
  ]) {
    assert.throws(
      () => parseRfc5424(text),
      (e) => isHypersealError(e, 'HS_ERR_SYSLOG_FRAMING'),
      text,
    );
  }
  assert.equal(parseRfc5424('<13>1 - - - - - -').msg, '');
  assert.deepEqual(parseRfc5424('<13>1 - - - - - [a@1][b@1 x="1"] m').sd, [
    { id: 'a@1', params: [] },
    { id: 'b@1', params: [['x', '1']] },
  ]);
});
