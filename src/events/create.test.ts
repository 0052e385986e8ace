/**
 * createEvent(): defaults from the registry, failure escalation, redaction of the changes
 * it is given whatever their origin, and the refusal of unknown types from untyped callers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HypersealError } from '../errors.js';
import { createEvent, type EventInput, type EventSource } from './create.js';
import type { EventType } from './model.js';
import { REDACTED } from './redact.js';

const source: EventSource = {
  now: () => new Date('2024-05-01T12:00:00.000Z'),
  uuid: () => '3f1c9a4e-7b2d-4c1e-9a8b-000000000001',
};
const base: EventInput = {
  type: 'vm.reconfigured',
  user: 'ops@local',
  sourceIp: '10.0.0.5',
  object: { kind: 'vm', id: 'vm-1', name: 'web-01' },
};

void test('a complete event: id, ISO time, registry severity, success, rendered message', () => {
  assert.deepEqual(
    createEvent({ ...base, changes: [{ path: 'memoryMiB', from: 6144, to: 10240 }] }, source),
    {
      id: '3f1c9a4e-7b2d-4c1e-9a8b-000000000001',
      time: '2024-05-01T12:00:00.000Z',
      severity: 'info',
      type: 'vm.reconfigured',
      user: 'ops@local',
      sourceIp: '10.0.0.5',
      object: { kind: 'vm', id: 'vm-1', name: 'web-01' },
      changes: [{ path: 'memoryMiB', from: 6144, to: 10240 }],
      result: 'success',
      message: 'ops@local reconfigured VM web-01: memoryMiB 6144 → 10240',
    },
  );
});

void test('the system source: a v4 UUID and the current time', () => {
  const e = createEvent({ ...base, sourceIp: null });
  assert.match(e.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.ok(Math.abs(Date.parse(e.time) - Date.now()) < 60_000);
  assert.match(e.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.equal(e.sourceIp, null);
});

void test('severity: registry default; a failure is at least warning; an explicit one wins', () => {
  assert.equal(createEvent(base, source).severity, 'info');
  assert.equal(createEvent({ ...base, result: 'failure' }, source).severity, 'warning');
  assert.equal(
    createEvent({ ...base, type: 'kms.provider-unreachable', result: 'failure' }, source).severity,
    'error',
  );
  assert.equal(createEvent({ ...base, type: 'vm.decrypted' }, source).severity, 'warning');
  assert.equal(createEvent({ ...base, severity: 'critical' }, source).severity, 'critical');
  assert.equal(createEvent({ ...base, result: 'failure', severity: 'info' }, source).severity, 'info');
});

void test('changes are redacted even when built by hand', () => {
  const e = createEvent({ ...base, changes: [{ path: 'vnc.password', from: 'a', to: 'b' }] }, source);
  assert.deepEqual(e.changes, [{ path: 'vnc.password', from: REDACTED, to: REDACTED }]);
  assert.equal(e.message, "ops@local reconfigured VM web-01: vnc.password '[redacted]' → '[redacted]'");
});

void test('failure reason goes into the message', () => {
  const e = createEvent(
    {
      ...base,
      type: 'host.join-refused',
      user: 'agent',
      result: 'failure',
      reason: 'token expired',
      object: { kind: 'host', id: '-', name: 'kvm-03' },
    },
    source,
  );
  assert.equal(e.message, 'host kvm-03 at 10.0.0.5 was not allowed to join (token expired)');
});

void test('unknown types and bad paths from untyped callers are refused', () => {
  assert.throws(
    () => createEvent({ ...base, type: 'vm.exploded' as EventType }, source),
    (err: unknown) => err instanceof HypersealError && err.code === 'HS_ERR_EVENT_INVALID',
  );
  assert.throws(
    () => createEvent({ ...base, changes: [{ path: 'nics[nic0', from: 1, to: 2 }] }, source),
    (err: unknown) => err instanceof HypersealError && err.code === 'HS_ERR_EVENT_BAD_PATH',
  );
});
