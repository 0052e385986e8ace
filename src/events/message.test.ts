/**
 * The sentences, byte for byte: the demo sentence, quoting and escaping (no forged log
 * lines), (none), truncation, '+K more', failures with reasons, and redaction of changes
 * that did not come from diff().
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { diff } from './diff.js';
import { renderMessage, renderValue, type MessageInput } from './message.js';
import { EventTypes, isEventType } from './model.js';
import { Secret } from './redact.js';

const webVm = { kind: 'vm', id: '3f1c9a4e-0000-4000-8000-000000000001', name: 'web-01' } as const;

function input(over: Partial<MessageInput>): MessageInput {
  return {
    type: 'vm.reconfigured',
    user: 'ops@local',
    sourceIp: '10.0.0.5',
    object: webVm,
    changes: [],
    result: 'success',
    ...over,
  };
}

void test('the demo sentence, from a real diff', () => {
  const before = {
    memoryMiB: 6144,
    nics: [
      { id: 'nic0', network: 'PCI' },
      { id: 'nic1', network: 'Mgmt' },
    ],
  };
  const after = {
    memoryMiB: 10240,
    nics: [
      { id: 'nic1', network: 'Mgmt' },
      { id: 'nic0', network: 'Non-PCI' },
    ],
  };
  const changes = diff(before, after, { nics: 'id' });
  assert.equal(
    renderMessage(input({ changes })),
    "ops@local reconfigured VM web-01: memoryMiB 6144 → 10240; nics[nic0].network 'PCI' → 'Non-PCI'",
  );
});

void test('no changes: the head alone', () => {
  assert.equal(renderMessage(input({ type: 'vm.powered-on' })), 'ops@local powered on VM web-01');
});

void test('values: strings quoted, numbers and booleans bare, null as (none), lists and objects', () => {
  const changes = [
    { path: 'notes', from: null, to: 'hello' },
    { path: 'cpus', from: 2, to: 4.5 },
    { path: 'secureBoot', from: false, to: true },
    { path: 'tags', from: [], to: ['a', 'b'] },
    { path: 'nics[nic1]', from: { id: 'nic1', network: 'DMZ', 'odd field': 1 }, to: null },
  ];
  assert.equal(
    renderMessage(input({ changes })),
    "ops@local reconfigured VM web-01: notes (none) → 'hello'; cpus 2 → 4.5; secureBoot false → true; " +
      "tags [] → ['a', 'b']; nics[nic1] {id: 'nic1', network: 'DMZ', 'odd field': 1} → (none)",
  );
});

void test('quotes, backslashes and control characters are escaped: no forged log lines', () => {
  const changes = [
    { path: 'description', from: "O'Brien\\x", to: 'line1\nFAKE: root logged in\r\u2028\u0007' },
  ];
  assert.equal(
    renderMessage(input({ changes, user: 'ev\nil', object: { ...webVm, name: 'web 01\n' } })),
    "'ev\\nil' reconfigured VM 'web 01\\n': description 'O\\'Brien\\\\x' → 'line1\\nFAKE: root logged in\\r\\u2028\\u0007'",
  );
  // The object's id stands in for an empty name.
  assert.equal(
    renderMessage(input({ object: { ...webVm, name: '' } })),
    `ops@local reconfigured VM ${webVm.id}`,
  );
});

void test('long values are cut to maxValueChars with …, without splitting a character', () => {
  assert.equal(renderValue('abcdefghij', 8), "'abcde…'");
  assert.equal(renderValue('abcdef', 8), "'abcdef'");
  assert.equal(renderValue('😀😀😀😀😀😀😀😀', 6), "'😀😀😀…'");
  assert.equal(renderValue(['aaaa', 'bbbb', 'cccc'], 12), "['aaaa', 'b…");
  assert.equal(renderValue(123456789.25, 8), '1234567…');
  const long = 'x'.repeat(100);
  const msg = renderMessage(input({ changes: [{ path: 'annotation', from: null, to: long }] }), {
    maxValueChars: 10,
  });
  assert.equal(msg, "ops@local reconfigured VM web-01: annotation (none) → 'xxxxxxx…'");
});

void test('at most maxChanges changes, then +K more', () => {
  const changes = Array.from({ length: 7 }, (_, i) => ({ path: `p${i}`, from: i, to: i + 1 }));
  assert.equal(
    renderMessage(input({ changes }), { maxChanges: 2 }),
    'ops@local reconfigured VM web-01: p0 0 → 1; p1 1 → 2; +5 more',
  );
  assert.equal(
    renderMessage(input({ changes }), { maxChanges: 0 }),
    'ops@local reconfigured VM web-01: +7 more',
  );
  assert.equal(
    renderMessage(input({ changes: changes.slice(0, 5) })).split('; ').length,
    5,
    'default shows 5',
  );
  assert.ok(renderMessage(input({ changes: changes.slice(0, 6) })).endsWith('; +1 more'));
});

void test('failures use the failure phrase and carry the reason', () => {
  assert.equal(
    renderMessage(
      input({
        result: 'failure',
        reason: 'not enough memory on host kvm-02',
        changes: [{ path: 'memoryMiB', from: 6144, to: 102400 }],
      }),
    ),
    'ops@local failed to reconfigure VM web-01 (not enough memory on host kvm-02): memoryMiB 6144 → 102400',
  );
  assert.equal(
    renderMessage(
      input({
        type: 'user.login-failed',
        user: 'mallory',
        result: 'failure',
        object: { kind: 'user', id: '-', name: 'admin' },
      }),
    ),
    'mallory failed to log in from 10.0.0.5',
  );
  assert.equal(
    renderMessage(
      input({ type: 'user.logged-in', sourceIp: null, object: { kind: 'user', id: 'u1', name: 'ops' } }),
    ),
    'ops@local logged in from (unknown address)',
  );
  assert.equal(
    renderMessage(
      input({ type: 'kms.provider-added', object: { kind: 'kms-provider', id: 'k1', name: 'kms-a' } }),
    ),
    'ops@local added key provider kms-a',
  );
  assert.equal(
    renderMessage(
      input({ type: 'host.joined', user: 'agent', object: { kind: 'host', id: 'h1', name: 'kvm-01' } }),
    ),
    'host kvm-01 joined',
  );
});

void test('the renderer redacts changes that were built by hand', () => {
  const msg = renderMessage(
    input({
      type: 'kms.provider-changed',
      object: { kind: 'kms-provider', id: 'k1', name: 'kms-a' },
      changes: [
        { path: 'password', from: 'old-pw', to: 'new-pw' },
        // A Secret smuggled past the types still prints as [redacted].
        { path: 'clientCert', from: null, to: new Secret('pem') as unknown as string },
        { path: 'kekId', from: 'k/1', to: 'k/2' },
      ],
    }),
  );
  assert.equal(
    msg,
    "ops@local changed key provider kms-a: password '[redacted]' → '[redacted]'; clientCert (none) → '[redacted]'; kekId 'k/1' → 'k/2'",
  );
});

void test('every registered type has a one-line description, phrases with known placeholders only', () => {
  for (const [type, info] of Object.entries(EventTypes)) {
    assert.ok(isEventType(type));
    assert.match(type, /^[a-z]+\.[a-z]+(-[a-z]+)*$/, `type name ${type}`);
    assert.match(info.description, /^[A-Z][^\n]*\.$/, `description of ${type}`);
    assert.ok(['info', 'warning', 'error', 'critical'].includes(info.severity), `severity of ${type}`);
    for (const phrase of [info.done, info.failed]) {
      const placeholders = phrase.match(/\{[^}]*\}/g) ?? [];
      for (const p of placeholders)
        assert.ok(['{user}', '{object}', '{sourceIp}'].includes(p), `${type}: ${p}`);
      assert.ok(!/[{}]/.test(phrase.replace(/\{(user|object|sourceIp)\}/g, '')), `${type}: stray brace`);
    }
  }
  assert.equal(isEventType('vm.exploded'), false);
  assert.equal(isEventType('toString'), false);
});
