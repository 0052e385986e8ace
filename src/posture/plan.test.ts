/**
 * The planner: from → to per change, grouped per rule with VM counts, in a deterministic
 * order; what the manager would refuse marked blocked up front; conflicting rules
 * refused; and idempotency — the plan of the state a plan leads to is empty.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HypersealError } from '../errors.js';
import type { AlertRule, KeyProvider, SyslogTarget, Vm } from '../sdk/api.gen.js';
import type { Plan, Snapshot, Step } from './plan.js';
import { planPosture, publicAlertRule, renderPlan, summaryLine } from './plan.js';
import { parsePosture } from './schema.js';
import { folderGlob } from './select.js';
import { exportPosture } from './export.js';
import { testVm } from './testing.js';

const vm = testVm;

const POLICY = {
  id: 'vm-encryption-policy',
  name: 'VM Encryption Policy',
  description: '',
  providerId: null,
  builtin: true,
  createdAt: 0,
};
const ENCRYPTED = { policyId: POLICY.id, providerId: 'kp', keyId: 'k1' };

function snapshot(vms: Vm[], extra: Partial<Snapshot> = {}): Snapshot {
  return { vms, policies: [POLICY], keySets: [{ id: 'ks-1', name: 'corp-keys' }], ...extra };
}

function posture(yaml: string) {
  return parsePosture(`version: 1\n${yaml}`, { file: 't.yaml', baseDir: '/base' });
}

const WEB = posture(`vms:
  - name: web
    select: { namePattern: 'web-*' }
    encryption: { policy: VM Encryption Policy }
    secureBoot: true
    migrationEncryption: required
`);

/** What the manager would do with each step: enough state for the planner to re-plan. */
function simulate(snap: Snapshot, plan: Plan): Snapshot {
  const next: Snapshot = structuredClone(snap);
  for (const s of plan.steps) {
    assert.equal(s.blocked, undefined, 'simulate only plans without blocked steps');
    const v = next.vms.find((x) => x.id === (s as Step & { vmId?: string }).vmId);
    switch (s.op) {
      case 'vm.update': {
        const { folder, secureBootKeySet, ...rest } = s.patch;
        Object.assign(v?.config ?? {}, rest);
        if (secureBootKeySet !== undefined && v) v.config.secureBootKeySet = secureBootKeySet;
        if (folder !== undefined && v) {
          if (folder === null) delete v.config.folder;
          else v.config.folder = folder;
        }
        break;
      }
      case 'vm.encrypt':
        if (v) {
          v.encryption = { policyId: s.policyId, providerId: 'kp', keyId: 'new' };
          v.config.migrationEncryption = 'required';
        }
        break;
      case 'vm.decrypt':
        if (v) v.encryption = null;
        break;
      case 'vm.rekey':
        if (v?.encryption) v.encryption = { ...v.encryption, policyId: s.policyId, keyId: 'rekeyed' };
        break;
      case 'alert-rule.create':
      case 'alert-rule.update':
        next.alertRules = [
          ...(next.alertRules ?? []).filter((r) => r.name !== s.spec.name),
          { id: `r-${s.spec.name}`, ...publicAlertRule(s.spec) } as AlertRule,
        ];
        break;
      case 'syslog-target.create':
      case 'syslog-target.update':
        next.syslogTargets = [
          ...(next.syslogTargets ?? []).filter((t) => t.name !== s.spec.name),
          {
            id: `t-${s.spec.name}`,
            name: s.spec.name,
            host: s.spec.host,
            port: s.spec.port,
            transport: s.spec.transport,
            format: s.spec.format,
          },
        ];
        break;
      case 'key-provider.set-default':
        for (const p of next.keyProviders ?? []) p.isDefault = p.id === s.providerId;
        break;
      case 'key-provider.update': {
        const p = next.keyProviders?.find((x) => x.id === s.providerId);
        if (p && s.servers) p.servers = s.servers;
        break;
      }
      default:
        throw new Error(`not simulated: ${s.op}`);
    }
  }
  return next;
}

void test('from → to per change, grouped per rule, with VM counts, in name order', () => {
  const snap = snapshot([
    vm('web-02'),
    vm('web-01', {}, { migrationEncryption: 'disabled' }),
    vm('web-00', { encryption: ENCRYPTED }, { secureBoot: true, migrationEncryption: 'required' }),
    vm('db-01'),
  ]);
  const plan = planPosture(WEB, snap);
  assert.equal(plan.groups.length, 1);
  const g = plan.groups[0];
  assert.equal(g?.matched, 3, 'web-00, web-01, web-02; not db-01');
  assert.equal(g?.vmsChanged, 2, 'web-00 already matches');
  assert.deepEqual(
    g?.changes.map((c) => [c.object, c.field, c.from, c.to, c.implied === true]),
    [
      ['web-01', 'secureBoot', false, true, false],
      ['web-01', 'migrationEncryption', 'disabled', 'required', false],
      ['web-01', 'encryption', 'none', 'VM Encryption Policy', false],
      ['web-02', 'secureBoot', false, true, false],
      ['web-02', 'migrationEncryption', 'opportunistic', 'required', false],
      ['web-02', 'encryption', 'none', 'VM Encryption Policy', false],
    ],
  );
  // One PATCH per VM for the settings, then the encryption task.
  assert.deepEqual(
    plan.steps.map((s) => [s.object, s.op]),
    [
      ['web-01', 'vm.update'],
      ['web-01', 'vm.encrypt'],
      ['web-02', 'vm.update'],
      ['web-02', 'vm.encrypt'],
    ],
  );
  assert.deepEqual((plan.steps[0] as Step & { patch: unknown }).patch, {
    secureBoot: true,
    migrationEncryption: 'required',
  });
  assert.equal(summaryLine(plan.summary), '6 changes on 2 VMs');
  const text = renderPlan(plan);
  assert.match(text, /^vms\[0\] web — 3 VMs matched, 2 to change$/m);
  assert.match(text, /^ {2}vm web-01 +secureBoot +false → true$/m);
  assert.match(text, /^ {2}vm web-02 +encryption +none → VM Encryption Policy$/m);
  // Deterministic: the same input in another order gives the same plan.
  assert.deepEqual(planPosture(WEB, snapshot([...snap.vms].reverse())), plan);
});

void test('idempotent: the plan of the state a plan leads to is empty', () => {
  const p = posture(`vms:
  - select: { namePattern: '*' }
    secureBoot: { enabled: true, keySet: corp-keys }
    vtpm: true
  - select: { tag: pci }
    encryption: { policy: VM Encryption Policy }
  - select: { tag: lab }
    encryption: none
    migrationEncryption: disabled
alertRules:
  - name: sb-off
    severity: critical
    match: { types: [vm.secure-boot-disabled] }
syslogTargets:
  - { name: siem, host: 10.0.0.5, port: 514, transport: udp }
`);
  const snap = snapshot(
    [
      vm('a'),
      vm('b', { encryption: ENCRYPTED }, { tags: ['lab'], migrationEncryption: 'required' }),
      vm('c', {}, { tags: ['pci'], secureBoot: true }),
    ],
    {
      alertRules: [],
      syslogTargets: [{ id: 't', name: 'siem', host: 'old', port: 514, transport: 'udp', format: 'rfc5424' }],
    },
  );
  const plan = planPosture(p, snap);
  assert.ok(plan.steps.length > 0);
  assert.equal(plan.summary.blocked, 0, renderPlan(plan));
  assert.deepEqual(plan.summary.alertRules, { create: 1, update: 0 });
  assert.deepEqual(plan.summary.syslogTargets, { create: 0, update: 1 });
  const after = simulate(snap, plan);
  const again = planPosture(p, after);
  assert.deepEqual(again.steps, [], renderPlan(again));
  assert.equal(summaryLine(again.summary), 'nothing to change: the state matches the posture');
  // And an export of that state re-plans to nothing as well.
  const exported = parsePosture(JSON.stringify(exportPosture(after)), { baseDir: '/' });
  assert.deepEqual(planPosture(exported, after).steps, []);
});

void test('what the manager would refuse is blocked in the plan, with the reason', () => {
  const p = posture(`vms:
  - select: { namePattern: '*' }
    secureBoot: true
    vtpm: true
  - select: { tag: pci }
    encryption: { policy: VM Encryption Policy }
  - select: { tag: gold }
    encryption: { policy: Gold }
  - select: { tag: fast }
    migrationEncryption: opportunistic
`);
  const plan = planPosture(
    p,
    snapshot([
      vm('web-03', {}, { firmware: 'bios', tags: [] }),
      vm('web-04', { state: 'running' }, { tags: ['pci'] }),
      vm('web-05', {}, { tags: ['gold'] }),
      vm('web-06', { encryption: ENCRYPTED }, { tags: ['fast'], migrationEncryption: 'required' }),
    ]),
  );
  const blocked = plan.steps
    .flatMap((s) => s.changes)
    .filter((c) => c.blocked !== undefined)
    .map((c) => `${c.object} ${c.field}: ${c.blocked}`);
  assert.deepEqual(blocked, [
    'web-03 secureBoot: BIOS firmware, secure boot impossible',
    'web-03 vtpm: BIOS firmware, a vTPM needs EFI',
    'web-04 encryption: running: encrypting needs the VM powered off',
    "web-05 encryption: no encryption policy named 'Gold'",
    'web-06 migrationEncryption: encrypted VMs always migrate encrypted (required)',
  ]);
  // A running VM's settings change (at its next power-on); only its encryption is blocked.
  const web04 = plan.steps.filter((s) => s.object === 'web-04');
  assert.deepEqual(
    web04.map((s) => [s.op, s.blocked ?? null]),
    [
      ['vm.update', null],
      ['vm.encrypt', 'running: encrypting needs the VM powered off'],
    ],
  );
  assert.match(
    renderPlan(plan),
    /vm web-03 +secureBoot +false → true +BLOCKED: BIOS firmware, secure boot impossible/,
  );
  assert.match(summaryLine(plan.summary), /5 changes blocked \(apply stops at the first\)$/);
});

void test('rules that select the same VM combine when they agree, and are refused when they do not', () => {
  const agree = posture(`vms:
  - { select: { tag: pci }, secureBoot: true }
  - { select: { namePattern: 'web-*' }, secureBoot: true, vtpm: true }
`);
  const plan = planPosture(agree, snapshot([vm('web-01')]));
  // secureBoot belongs to the first rule that asked for it, vtpm to the second.
  assert.deepEqual(
    plan.steps.map((s) => [s.rule, s.changes.map((c) => c.field)]),
    [
      ['vms[0]', ['secureBoot']],
      ['vms[1]', ['vtpm']],
    ],
  );
  const disagree = posture(`vms:
  - { select: { tag: pci }, secureBoot: true }
  - { select: { namePattern: 'web-*' }, secureBoot: false }
`);
  assert.throws(
    () => planPosture(disagree, snapshot([vm('db-01', {}, { tags: [] }), vm('web-01')])),
    (err: unknown) =>
      err instanceof HypersealError &&
      err.code === 'HS_ERR_POSTURE_CONFLICT' &&
      /VM web-01 is selected by vms\[0\] and vms\[1\], which want different secureBoot: true and false/.test(
        err.message,
      ),
  );
  // No VM in both: no conflict.
  assert.doesNotThrow(() => planPosture(disagree, snapshot([vm('web-01', {}, { tags: [] }), vm('db-01')])));
});

void test('selection: folder globs, tags, networks, all conditions at once', () => {
  assert.ok(folderGlob('/prod/**').test('/prod'));
  assert.ok(folderGlob('/prod/**').test('/prod/payments/eu'));
  assert.ok(!folderGlob('/prod/**').test('/production'));
  assert.ok(folderGlob('/prod/*').test('/prod/payments'));
  assert.ok(!folderGlob('/prod/*').test('/prod/payments/eu'));
  assert.ok(!folderGlob('/prod').test('/prod/payments'));
  const p = posture(`vms:
  - select: { folder: '/prod/**', tag: pci, network: PCI }
    vtpm: true
`);
  const plan = planPosture(
    p,
    snapshot([
      vm('in', {}, { folder: '/prod/payments' }),
      vm('no-folder'),
      vm('other-net', {}, { folder: '/prod', nics: [{ id: 'nic0', network: 'LAN' }] }),
      vm('untagged', {}, { folder: '/prod', tags: [] }),
    ]),
  );
  assert.equal(plan.groups[0]?.matched, 1);
  assert.deepEqual(
    plan.steps.map((s) => s.object),
    ['in'],
  );
});

void test('key providers: created with their files, servers and default updated, never deleted', () => {
  const provider = (over: Partial<KeyProvider>): KeyProvider => ({
    id: 'kp-1',
    name: 'corp',
    isDefault: false,
    state: 'ready',
    servers: [{ host: 'kms1', port: 5696 }],
    caCertificates: [],
    clientCertificate: null,
    identity: null,
    csrPem: null,
    createdAt: 0,
    updatedAt: 0,
    ...over,
  });
  const p = posture(`keyProviders:
  - { name: corp, servers: ['kms1:5696', 'kms2:5697'], default: true }
  - { name: new-one, servers: [kms9], default: false }
`);
  const plan = planPosture(
    p,
    snapshot([], {
      keyProviders: [provider({}), provider({ id: 'kp-2', name: 'unmentioned', isDefault: true })],
    }),
  );
  assert.deepEqual(
    plan.steps.map((s) => [s.object, s.op, s.blocked ?? null]),
    [
      ['corp', 'key-provider.update', null],
      ['corp', 'key-provider.set-default', null],
      [
        'new-one',
        'key-provider.create',
        'creating key provider new-one needs caFile, clientCertFile, clientKeyFile',
      ],
    ],
  );
  assert.deepEqual(plan.steps[0]?.changes[0]?.to, ['kms1:5696', 'kms2:5697']);
  assert.equal(plan.steps.filter((s) => s.object === 'unmentioned').length, 0);
  assert.match(summaryLine(plan.summary), /1 key provider to create, 1 key provider to update/);
});

void test('alert rules and syslog targets differing from the file are updated in place', () => {
  const p = posture(`alertRules:
  - name: sb-off
    severity: critical
    match: { types: [vm.secure-boot-disabled] }
    actions: { webhook: { url: 'https://siem.example/hook', secretFile: hook.secret } }
`);
  const spec = p.alertRules?.[0];
  assert.ok(spec);
  const stored = { id: 'r1', ...publicAlertRule(spec) } as AlertRule;
  assert.deepEqual(
    planPosture(p, snapshot([], { alertRules: [stored] })).steps,
    [],
    'the same rule: nothing',
  );
  const older = { ...stored, severity: 'warning' } as AlertRule;
  const plan = planPosture(p, snapshot([], { alertRules: [older] }));
  assert.deepEqual(
    plan.steps.map((s) => [s.op, s.changes.map((c) => [c.field, c.from, c.to])]),
    [['alert-rule.update', [['severity', 'warning', 'critical']]]],
  );
  assert.equal(summaryLine(plan.summary), '1 alert rule to update');
  const syslog: SyslogTarget = {
    id: 't',
    name: 'x',
    host: 'h',
    port: 514,
    transport: 'udp',
    format: 'rfc5424',
  };
  assert.deepEqual(
    planPosture(
      posture('syslogTargets: [{ name: x, host: h, port: 514, transport: udp }]\n'),
      snapshot([], { syslogTargets: [syslog] }),
    ).steps,
    [],
  );
  const moved = planPosture(
    posture('syslogTargets: [{ name: x, host: h2, port: 6514, transport: udp }]\n'),
    snapshot([], { syslogTargets: [syslog] }),
  );
  assert.deepEqual(
    moved.steps.map((s) => [s.op, s.changes.map((c) => [c.field, c.from, c.to])]),
    [
      [
        'syslog-target.update',
        [
          ['host', 'h', 'h2'],
          ['port', 514, 6514],
        ],
      ],
    ],
  );
  assert.equal(summaryLine(moved.summary), '1 syslog target to update');
});
