/**
 * Matching: the PCI demo (a NIC moved off a PCI network, alongside a memory change that
 * must not be reported), globs as a person reads them ('Non-PCI' is not 'PCI*'), type and
 * kind and result filters, every ValueMatch form, several change conditions, disabled
 * rules, the alert loop guard, and one compiled matcher reused across events.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createEvent } from '../create.js';
import type { Change, UnchainedEvent } from '../model.js';
import { compileGlob } from './glob.js';
import { compileRule, evaluate, jsonEqual, matchRule } from './match.js';
import { validateRule, type AlertRule, type ChangeMatch } from './rule.js';

const source = { now: () => new Date('2024-05-01T12:00:00.000Z'), uuid: () => 'e-1' };

function vmEvent(changes: Change[], extra: Partial<Parameters<typeof createEvent>[0]> = {}): UnchainedEvent {
  return createEvent(
    {
      type: 'vm.reconfigured',
      user: 'ops@local',
      sourceIp: '10.0.0.5',
      object: { kind: 'vm', id: 'vm-1', name: 'web-01' },
      changes,
      ...extra,
    },
    source,
  );
}

function rule(match: Record<string, unknown>, extra: Record<string, unknown> = {}): AlertRule {
  return validateRule({ id: 'r1', name: 'test rule', severity: 'warning', match, ...extra });
}

const PCI_RULE = validateRule({
  id: 'pci-nic',
  name: 'NIC left the PCI network',
  severity: 'critical',
  match: {
    types: ['vm.reconfigured'],
    changes: [{ path: 'nics[*].network', from: { glob: 'PCI*' }, to: { notGlob: 'PCI*' } }],
  },
});

const MEMORY: Change = { path: 'memoryMiB', from: 6144, to: 10240 };
const NIC_OFF_PCI: Change = { path: 'nics[nic0].network', from: 'PCI', to: 'Non-PCI' };

void test('the demo: memory and a NIC off PCI → matched, exactly the NIC change', () => {
  const event = vmEvent([MEMORY, NIC_OFF_PCI]);
  assert.equal(
    event.message,
    "ops@local reconfigured VM web-01: memoryMiB 6144 → 10240; nics[nic0].network 'PCI' → 'Non-PCI'",
  );
  const m = matchRule(PCI_RULE, event);
  assert.equal(m.matched, true);
  assert.deepEqual(m.changes, [NIC_OFF_PCI]);
});

void test('the demo: a move between PCI networks, or memory alone, does not match', () => {
  const toPci2 = matchRule(
    PCI_RULE,
    vmEvent([MEMORY, { path: 'nics[nic0].network', from: 'PCI', to: 'PCI-2' }]),
  );
  assert.deepEqual(toPci2, { matched: false, changes: [] });
  assert.equal(matchRule(PCI_RULE, vmEvent([MEMORY])).matched, false);
  // Onto PCI is the other direction, not this rule.
  const onto = vmEvent([{ path: 'nics[nic0].network', from: 'Non-PCI', to: 'PCI' }]);
  assert.equal(matchRule(PCI_RULE, onto).matched, false);
});

void test('the demo: every NIC that left PCI is reported, in event order', () => {
  const nic2: Change = { path: 'nics[nic2].network', from: 'PCI-DMZ', to: 'lab' };
  const stays: Change = { path: 'nics[nic1].network', from: 'PCI', to: 'PCI-2' };
  const m = matchRule(PCI_RULE, vmEvent([NIC_OFF_PCI, stays, MEMORY, nic2]));
  assert.deepEqual(m.changes, [NIC_OFF_PCI, nic2]);
});

void test('globs: anchored, case-sensitive, * and ? only, everything else literal', () => {
  const g = (glob: string, s: string): boolean => compileGlob(glob).test(s);
  assert.equal(g('PCI*', 'PCI'), true);
  assert.equal(g('PCI*', 'PCI-2'), true);
  assert.equal(g('PCI*', 'Non-PCI'), false);
  assert.equal(g('PCI*', 'pci'), false);
  assert.equal(g('*PCI', 'Non-PCI'), true);
  assert.equal(g('PCI', 'PCI-2'), false);
  assert.equal(g('net?', 'net1'), true);
  assert.equal(g('net?', 'net'), false);
  assert.equal(g('net?', 'net12'), false);
  assert.equal(g('n?t', 'n😀t'), true, '? is one character, not one UTF-16 unit');
  assert.equal(g('a.b', 'axb'), false, '. is literal');
  assert.equal(g('[ab]', 'a'), false, 'no classes');
  assert.equal(g('[ab]', '[ab]'), true);
  assert.equal(g('(a|b)+', '(a|b)+'), true);
  assert.equal(g('a**b', 'a-x-b'), true);
  assert.equal(g('*', 'line1\nline2'), true, '* covers line breaks');
  assert.equal(g('x*', 'y\nx'), false, 'anchored at the start, not at each line');
});

void test('path globs work per segment: * never crosses a . or a [key]', () => {
  const paths = (pattern: string, ...ps: string[]): boolean[] =>
    ps.map(
      (p) =>
        matchRule(rule({ changes: [{ path: pattern }] }), vmEvent([{ path: p, from: 1, to: 2 }])).matched,
    );
  assert.deepEqual(
    paths(
      'nics[*].network',
      'nics[nic0].network',
      'nics["a.b"].network',
      'nics[nic0]',
      'nics[nic0].ipv4.network',
      'disks[nic0].network',
    ),
    [true, true, false, false, false],
  );
  assert.deepEqual(paths('nics[*]', 'nics[nic1]', 'nics[nic1].network', 'nics'), [true, false, false]);
  assert.deepEqual(paths('nics.*', 'nics[nic1]', 'nics.count'), [false, true], 'a [key] is not a .name');
  assert.deepEqual(paths('*', 'memoryMiB', 'nics[nic0]', 'config.cpu'), [true, false, false]);
  assert.deepEqual(paths('disks["a.*"].sizeGiB', 'disks["a.b"].sizeGiB', 'disks[ab].sizeGiB'), [true, false]);
  assert.deepEqual(paths('config.cpu.cores', 'config.cpu.cores', 'config.cpu.coresMax'), [true, false]);
});

void test('types: globs, any one may match; objectKinds; result', () => {
  const decrypted = createEvent(
    { type: 'vm.decrypted', user: 'ops@local', object: { kind: 'vm', id: 'vm-1', name: 'web-01' } },
    source,
  );
  const hostDown = createEvent(
    { type: 'host.disconnected', user: 'system', object: { kind: 'host', id: 'h-1', name: 'kvm-01' } },
    source,
  );
  assert.deepEqual(matchRule(rule({ types: ['vm.decrypted'] }), decrypted), { matched: true, changes: [] });
  assert.equal(matchRule(rule({ types: ['vm.decrypted'] }), vmEvent([MEMORY])).matched, false);
  assert.equal(matchRule(rule({ types: ['vm.*'] }), decrypted).matched, true);
  assert.equal(matchRule(rule({ types: ['vm.*'] }), hostDown).matched, false);
  assert.equal(matchRule(rule({ types: ['kms.*', 'host.*'] }), hostDown).matched, true);
  assert.equal(matchRule(rule({ types: ['*.disconnected'] }), hostDown).matched, true);
  assert.equal(matchRule(rule({ types: ['vm.?ecrypted'] }), decrypted).matched, true);

  assert.equal(matchRule(rule({ objectKinds: ['host'] }), hostDown).matched, true);
  assert.equal(matchRule(rule({ objectKinds: ['host'] }), decrypted).matched, false);
  assert.equal(matchRule(rule({ objectKinds: ['key', 'vm'] }), decrypted).matched, true);

  const failed = vmEvent([MEMORY], { result: 'failure', reason: 'not enough memory' });
  assert.equal(matchRule(rule({ result: 'failure' }), failed).matched, true);
  assert.equal(matchRule(rule({ result: 'failure' }), vmEvent([MEMORY])).matched, false);
  assert.equal(matchRule(rule({ result: 'success' }), failed).matched, false);
  assert.equal(matchRule(rule({ result: 'success' }), vmEvent([MEMORY])).matched, true);
  // `{}` matches every event (except alerts, below).
  assert.equal(matchRule(rule({}), hostDown).matched, true);
});

void test('secure boot turned off: by change values or by type', () => {
  const byChange = rule({
    types: ['vm.reconfigured', 'vm.secure-boot-disabled'],
    changes: [{ path: 'secureBoot', from: { equals: true }, to: { equals: false } }],
  });
  const off: Change = { path: 'secureBoot', from: true, to: false };
  assert.deepEqual(matchRule(byChange, vmEvent([MEMORY, off])).changes, [off]);
  assert.equal(matchRule(byChange, vmEvent([{ path: 'secureBoot', from: false, to: true }])).matched, false);
  assert.equal(
    matchRule(byChange, vmEvent([{ path: 'secureBoot', from: 'true', to: 'false' }])).matched,
    false,
  );
  const disabled = createEvent(
    {
      type: 'vm.secure-boot-disabled',
      user: 'ops@local',
      object: { kind: 'vm', id: 'vm-1', name: 'web-01' },
    },
    source,
  );
  assert.equal(matchRule(rule({ types: ['vm.secure-boot-disabled'] }), disabled).matched, true);
});

void test('value matches: glob only on strings, notGlob its exact complement, equals deep, exists', () => {
  const on = (m: ChangeMatch['to'], to: Change['to']): boolean =>
    matchRule(rule({ changes: [{ path: 'v', to: m }] }), vmEvent([{ path: 'v', from: null, to }])).matched;
  assert.equal(on({ glob: '1*' }, '10240'), true);
  assert.equal(on({ glob: '1*' }, 10240), false, 'a number is not a string');
  assert.equal(on({ glob: '*' }, null), false);
  assert.equal(on({ notGlob: 'PCI*' }, null), true, 'unset is not on PCI');
  assert.equal(on({ notGlob: 'PCI*' }, 7), true);
  assert.equal(on({ notGlob: 'PCI*' }, 'PCI-9'), false);
  assert.equal(on({ equals: 10240 }, 10240), true);
  assert.equal(on({ equals: 10240 }, '10240'), false);
  assert.equal(on({ equals: null }, null), true);
  assert.equal(
    on({ equals: { id: 'nic1', network: 'DMZ' } }, { network: 'DMZ', id: 'nic1' }),
    true,
    'key order',
  );
  assert.equal(on({ equals: { id: 'nic1' } }, { id: 'nic1', network: 'DMZ' }), false);
  assert.equal(on({ equals: ['a', 'b'] }, ['a', 'b']), true);
  assert.equal(on({ equals: ['a', 'b'] }, ['b', 'a']), false, 'list order');
  assert.equal(on({ equals: [] }, {}), false);
  assert.equal(on({ exists: true }, 0), true);
  assert.equal(on({ exists: true }, null), false);
  assert.equal(on({ exists: false }, null), true);
  assert.equal(on({ exists: false }, ''), false);
  assert.equal(jsonEqual({ a: [1, { b: null }] }, { a: [1, { b: null }] }), true);
  assert.equal(jsonEqual({ a: [1, { b: null }] }, { a: [1, { b: 0 }] }), false);
  assert.equal(jsonEqual({ a: 1, b: 2 }, { a: 1, c: 2 }), false);
});

void test('several change conditions: each needs a change; the result is their union', () => {
  const r = rule({
    changes: [
      { path: 'memoryMiB', to: { exists: true } },
      { path: 'nics[*].network', to: { glob: 'Non-*' } },
    ],
  });
  const both = matchRule(r, vmEvent([NIC_OFF_PCI, { path: 'cpus', from: 2, to: 4 }, MEMORY]));
  assert.deepEqual(both, { matched: true, changes: [NIC_OFF_PCI, MEMORY] });
  assert.equal(matchRule(r, vmEvent([MEMORY])).matched, false);
  assert.equal(matchRule(r, vmEvent([NIC_OFF_PCI])).matched, false);
  // One change may satisfy two conditions; it is reported once.
  const twice = rule({
    changes: [{ path: 'nics[*].network' }, { path: 'nics[nic0].*', from: { equals: 'PCI' } }],
  });
  assert.deepEqual(matchRule(twice, vmEvent([NIC_OFF_PCI])).changes, [NIC_OFF_PCI]);
});

void test('a change path that does not parse matches no path glob, and does not throw', () => {
  const r = rule({ changes: [{ path: '*' }] });
  assert.equal(matchRule(r, { ...vmEvent([]), changes: [{ path: 'a[', from: 1, to: 2 }] }).matched, false);
  const good: Change = { path: 'ok', from: 1, to: 2 };
  assert.deepEqual(matchRule(r, { ...vmEvent([]), changes: [{ path: '', from: 1, to: 2 }, good] }).changes, [
    good,
  ]);
});

void test('disabled rules never match; evaluate() returns the matching rules in order', () => {
  const disabled = validateRule({ ...PCI_RULE, enabled: false });
  const event = vmEvent([MEMORY, NIC_OFF_PCI]);
  assert.equal(matchRule(disabled, event).matched, false);
  const memory = rule({ changes: [{ path: 'memoryMiB' }] }, { id: 'mem' });
  const hosts = rule({ types: ['host.*'] }, { id: 'hosts' });
  const everything = rule({}, { id: 'all' });
  const got = evaluate([memory, disabled, hosts, PCI_RULE, everything], event);
  assert.deepEqual(
    got.map((m) => [m.rule.id, m.changes]),
    [
      ['mem', [MEMORY]],
      ['pci-nic', [NIC_OFF_PCI]],
      ['all', []],
    ],
  );
  assert.equal(got[1]?.rule, PCI_RULE, 'the same rule object');
});

void test('loop guard: an alert.raised event never matches, whatever the rule says', () => {
  const alert = createEvent(
    {
      type: 'alert.raised',
      user: 'ops@local',
      object: { kind: 'alert-rule', id: 'pci-nic', name: 'NIC left the PCI network' },
      changes: [NIC_OFF_PCI],
      severity: 'critical',
    },
    source,
  );
  const everything = rule({});
  const anyType = rule({ types: ['*'] });
  const alertKind = rule({ objectKinds: ['alert-rule'] });
  const nic = rule({ changes: [{ path: 'nics[*].network' }] });
  for (const r of [everything, anyType, alertKind, nic, PCI_RULE])
    assert.equal(matchRule(r, alert).matched, false, r.id);
  assert.deepEqual(evaluate([everything, anyType, alertKind, nic, PCI_RULE], alert), []);
  // The same rules do match an ordinary event, so the guard is what stops them.
  assert.equal(matchRule(nic, vmEvent([NIC_OFF_PCI])).matched, true);
  assert.equal(matchRule(everything, vmEvent([])).matched, true);
});

void test('compileRule: one callable matcher per rule object, reused; hand-built rules are validated', () => {
  const m = compileRule(PCI_RULE);
  assert.equal(compileRule(PCI_RULE), m, 'cached');
  assert.equal(m.rule, PCI_RULE);
  assert.equal(m(vmEvent([NIC_OFF_PCI])).matched, true);
  assert.equal(m(vmEvent([MEMORY])).matched, false);
  assert.equal(matchRule(m, vmEvent([NIC_OFF_PCI])).matched, true);
  assert.deepEqual(evaluate([m], vmEvent([NIC_OFF_PCI]))[0]?.changes, [NIC_OFF_PCI]);

  const handBuilt: AlertRule = {
    id: 'hb',
    name: 'hand built',
    enabled: true,
    severity: 'info',
    match: { changes: [{ path: 'nics[*' }] },
    actions: { event: true },
  };
  assert.throws(() => compileRule(handBuilt), {
    code: 'HS_ERR_INVALID_ARGUMENT',
    details: { field: 'match.changes[0].path' },
  });
});

void test('fast enough: 50 compiled rules × 2,000 events well under a second', () => {
  const rules = Array.from({ length: 50 }, (_, i) =>
    rule(
      {
        types: ['vm.*'],
        changes: [{ path: `nics[*].network`, from: { glob: `NET${i}*` }, to: { notGlob: `NET${i}*` } }],
      },
      { id: `r${i}` },
    ),
  );
  const events = Array.from({ length: 2000 }, (_, i) =>
    vmEvent([MEMORY, { path: `nics[nic${i % 4}].network`, from: `NET${i % 60}`, to: 'other' }]),
  );
  const start = process.hrtime.bigint();
  let matched = 0;
  for (const e of events) matched += evaluate(rules, e).length;
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  // 'NET1*' also catches NET10…NET19: count what a correct matcher must find.
  const expected = events.reduce(
    (n, _, i) => n + rules.filter((_r, k) => `NET${i % 60}`.startsWith(`NET${k}`)).length,
    0,
  );
  assert.equal(matched, expected);
  assert.ok(ms < 1000, `took ${ms.toFixed(0)} ms`);
});
