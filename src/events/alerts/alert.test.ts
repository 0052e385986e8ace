/**
 * The alert event: from the PCI demo event and the rule's match to the 'alert.raised'
 * input and the finished event (registry entry, object kind, severity from the rule, the
 * matched changes only, a message naming the rule and quoting the original sentence).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chainEvent } from '../chain.js';
import { createEvent } from '../create.js';
import { EventTypes, ObjectKinds } from '../model.js';
import { alertFor, createAlertEvent } from './alert.js';
import { matchRule } from './match.js';
import { validateRule } from './rule.js';

const source = { now: () => new Date('2024-05-01T12:00:00.000Z'), uuid: () => 'a-1' };

const RULE = validateRule({
  id: 'pci-nic',
  name: "NIC left 'PCI'",
  severity: 'critical',
  match: { changes: [{ path: 'nics[*].network', from: { glob: 'PCI*' }, to: { notGlob: 'PCI*' } }] },
});

const EVENT = chainEvent(
  createEvent(
    {
      type: 'vm.reconfigured',
      user: 'ops@local',
      sourceIp: '10.0.0.5',
      object: { kind: 'vm', id: 'vm-1', name: 'web-01' },
      changes: [
        { path: 'memoryMiB', from: 6144, to: 10240 },
        { path: 'nics[nic0].network', from: 'PCI', to: 'Non-PCI' },
      ],
    },
    source,
  ),
  null,
);

void test('the registry knows alert.raised and the alert-rule kind', () => {
  assert.deepEqual(EventTypes['alert.raised'], {
    severity: 'warning',
    description: 'An alert rule matched an event.',
    done: '{user} triggered {object}',
    failed: '{user} triggered {object}',
  });
  assert.deepEqual(ObjectKinds['alert-rule'], { label: 'alert rule' });
});

void test('alertFor: the input for the alert event, from the demo', () => {
  const m = matchRule(RULE, EVENT);
  const input = alertFor(RULE, EVENT, m.changes);
  assert.deepEqual(input, {
    type: 'alert.raised',
    severity: 'critical',
    user: 'ops@local',
    sourceIp: '10.0.0.5',
    object: { kind: 'alert-rule', id: 'pci-nic', name: "NIC left 'PCI'" },
    changes: [{ path: 'nics[nic0].network', from: 'PCI', to: 'Non-PCI' }],
    result: 'success',
    message:
      "Alert rule 'NIC left \\'PCI\\'' matched event #0: ops@local reconfigured VM web-01: memoryMiB 6144 → 10240; nics[nic0].network 'PCI' → 'Non-PCI'",
  });
  // A copy of the list: the caller's array is not shared with the event.
  assert.notEqual(input.changes, m.changes);
});

void test('createAlertEvent: a complete event with the rule severity and the alert message', () => {
  const input = alertFor(RULE, EVENT, matchRule(RULE, EVENT).changes);
  const e = createAlertEvent(input, source);
  assert.equal(e.type, 'alert.raised');
  assert.equal(e.severity, 'critical', 'from the rule, not the registry default');
  assert.deepEqual(e.object, { kind: 'alert-rule', id: 'pci-nic', name: "NIC left 'PCI'" });
  assert.equal(e.message, input.message);
  // Without the override, the registry phrase reads naturally too.
  assert.equal(
    createEvent(input, source).message,
    "ops@local triggered alert rule 'NIC left \\'PCI\\'': nics[nic0].network 'PCI' → 'Non-PCI'",
  );
  // And it chains like any other event.
  assert.equal(chainEvent(e, { seq: EVENT.seq, hash: EVENT.hash }).seq, 1);
});

void test('an unchained trigger has no number; an alert as trigger is refused', () => {
  const { seq: _seq, ...unchained } = EVENT;
  assert.match(
    alertFor(RULE, unchained, []).message,
    /^Alert rule '.*' matched an event: ops@local reconfigured/,
  );
  const alert = createAlertEvent(alertFor(RULE, EVENT, []), source);
  assert.throws(() => alertFor(RULE, alert, []), { code: 'HS_ERR_INTERNAL' });
});
