// `hyperseal apply` / `hyperseal export` end to end: the CLI process against a real
// manager with a (simulated) host and the embedded key server. Dry-run changes nothing;
// apply makes the changes through the API, each an ordinary event from → to; a second
// apply plans nothing; a blocked change and a server refusal stop cleanly with the
// earlier steps kept; export → apply --dry-run plans nothing; a malformed file changes
// nothing.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Event, Vm } from '../../src/sdk/api.gen.js';
import type { ExampleRun } from '../support/examples.js';
import { runCli } from '../support/examples.js';
import type { TestPlatform } from '../support/manager.js';
import { startTestPlatform, useTempConfigHome } from '../support/manager.js';

let restore: () => void;
let platform: TestPlatform;
let dir: string;
let creds: string;

type Run = ExampleRun;

function cli(args: string[], credentials = creds): Promise<Run> {
  return runCli(args, credentials);
}

function writeCredentials(name: string, token: string): string {
  const file = join(dir, name);
  writeFileSync(
    file,
    JSON.stringify({ managerUrl: platform.manager.url, caPath: platform.manager.caPath, token }),
    { mode: 0o600 },
  );
  return file;
}

function posture(name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

async function vmsByName(): Promise<Record<string, Vm>> {
  return Object.fromEntries((await platform.api.listVms()).map((v) => [v.name, v]));
}

/** Events made by users (the manager's own health loop records as 'system' meanwhile). */
async function events(): Promise<Event[]> {
  return (await platform.api.listEvents({ limit: 10_000 })).filter((e) => e.user !== 'system');
}

/** The newest event's sequence number (any user). */
async function lastSeq(): Promise<number> {
  return (await platform.api.listEvents({ limit: 1 }))[0]?.seq ?? -1;
}

async function eventsAfter(seq: number): Promise<Event[]> {
  return (await events()).filter((e) => e.seq > seq);
}

function describeEvents(es: Event[]): string {
  return es.map((e) => `${e.seq} ${e.user} ${e.type} ${e.object.name}`).join('\n');
}

/** The VMs as apply may change them (tasks and timestamps aside). */
async function vmState(): Promise<unknown> {
  return (await platform.api.listVms()).map((v) => ({
    name: v.name,
    encryption: v.encryption,
    config: v.config,
    version: v.version,
  }));
}

const GOOD = `# the posture the first apply brings about
version: 1
alertRules:
  - name: Secure Boot turned off
    severity: critical
    match: { types: [vm.secure-boot-disabled] }
syslogTargets:
  - { name: siem, host: 127.0.0.1, port: 5514, transport: udp, format: json }
vms:
  - name: PCI web servers
    select: { tag: pci, folder: '/prod/**', network: PCI }
    encryption: { policy: VM Encryption Policy }
    secureBoot: true
    migrationEncryption: required
  - name: databases
    select: { namePattern: 'db-*' }
    migrationEncryption: disabled
`;

before(async () => {
  restore = useTempConfigHome();
  dir = mkdtempSync(join(process.env.XDG_CONFIG_HOME ?? '', 'posture-'));
  platform = await startTestPlatform({ agents: 1, kms: true });
  creds = writeCredentials('credentials.json', platform.adminToken);
  const api = platform.api;
  await api.createNetwork({ name: 'PCI' });
  const nic = [{ id: 'nic0', network: 'PCI' }];
  await api.createVm({ name: 'web-01', tags: ['pci'], nics: nic, folder: '/prod/web' });
  await api.createVm({ name: 'web-02', tags: ['pci'], nics: nic });
  await api.createVm({ name: 'web-03', tags: ['pci'], firmware: 'bios', nics: nic, folder: '/lab' });
  const db = await api.createVm({ name: 'db-01', tags: ['db'] });
  await api.run(api.powerOnVm(db.id));
});
after(async () => {
  await platform?.close();
  restore?.();
});

describe('hyperseal apply / export', { concurrency: 1 }, () => {
  test('a VM folder is set through the CLI and the API, each a vm.reconfigured event old → new', async () => {
    const set = await cli(['vm', 'set', 'web-02', '--folder', '/staging']);
    assert.equal(set.code, 0, set.stderr);
    const web02 = (await vmsByName())['web-02'];
    assert.equal(web02?.config.folder, '/staging');
    await platform.api.updateVm(web02?.id ?? '', { folder: '/prod/web' });
    const moves = (await platform.api.listEvents({ type: 'vm.reconfigured', limit: 1000 }))
      .filter((e) => e.object.name === 'web-02')
      .map((e) => e.changes);
    assert.deepEqual(
      moves.slice(-2).sort((a, b) => String(a[0]?.to).localeCompare(String(b[0]?.to))),
      [
        [{ path: 'folder', from: '/staging', to: '/prod/web' }],
        [{ path: 'folder', from: null, to: '/staging' }],
      ],
    );
    const bad = await platform.request(platform.adminToken, 'PATCH', `/vms/${web02?.id ?? ''}`, {
      folder: 'no-slash',
    });
    assert.equal(bad.status, 400);
  });

  test('--dry-run prints the plan and changes nothing', async () => {
    const file = posture('good.yaml', GOOD);
    const vmsBefore = await vmState();
    const seq = await lastSeq();
    const run = await cli(['apply', '-f', file, '--dry-run']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^vms\[0\] PCI web servers — 2 VMs matched, 2 to change$/m);
    assert.match(run.stdout, /^ {2}vm web-01 +secureBoot +false → true/m);
    assert.match(run.stdout, /^ {2}vm web-02 +encryption +none → VM Encryption Policy/m);
    assert.match(run.stdout, /^ {2}vm db-01 +migrationEncryption +opportunistic → disabled/m);
    assert.match(run.stdout, /^ {2}alert-rule Secure Boot turned off +rule +— → /m);
    assert.match(
      run.stdout,
      /^7 changes on 3 VMs, 1 alert rule to create, 1 syslog target to create$/m,
      run.stdout,
    );
    const json = await cli(['apply', '-f', file, '--dry-run', '--json']);
    const parsed = JSON.parse(json.stdout) as { dryRun: boolean; plan: { summary: { vms: number } } };
    assert.equal(parsed.dryRun, true);
    assert.equal(parsed.plan.summary.vms, 3);
    assert.deepEqual(await vmState(), vmsBefore);
    const made = await eventsAfter(seq);
    assert.equal(made.length, 0, `no event: nothing was changed, yet:\n${describeEvents(made)}`);
    assert.deepEqual(await platform.api.listAlertRules(), []);
  });

  test('apply makes the changes, each recorded as its ordinary event from → to', async () => {
    const seq = await lastSeq();
    const run = await cli(['apply', '-f', join(dir, 'good.yaml')]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /applied: 7 of 7 steps done/);
    assert.match(run.stderr, /\[\d\/7\] vm web-01: encrypt: done/);
    const vms = await vmsByName();
    for (const name of ['web-01', 'web-02']) {
      assert.equal(vms[name]?.encryption?.policyId, 'vm-encryption-policy', name);
      assert.equal(vms[name]?.config.secureBoot, true, name);
      assert.equal(vms[name]?.config.migrationEncryption, 'required', name);
    }
    assert.equal(vms['web-03']?.encryption, null, 'web-03 is in /lab: not selected');
    assert.equal(vms['db-01']?.config.migrationEncryption, 'disabled');
    assert.deepEqual(
      (await platform.api.listAlertRules()).map((r) => [r.name, r.severity]),
      [['Secure Boot turned off', 'critical']],
    );
    assert.deepEqual(
      (await platform.api.listSyslogTargets()).map((t) => [t.name, t.host, t.port, t.transport, t.format]),
      [['siem', '127.0.0.1', 5514, 'udp', 'json']],
    );
    const recorded = (await events()).filter((e) => e.seq > seq);
    const of = (type: string, name: string): Event | undefined =>
      recorded.find((e) => e.type === type && e.object.name === name);
    assert.deepEqual(
      of('vm.reconfigured', 'web-01')?.changes,
      [
        { path: 'migrationEncryption', from: null, to: 'required' },
        { path: 'secureBoot', from: false, to: true },
      ].sort((a, b) => a.path.localeCompare(b.path)),
    );
    assert.ok(of('vm.secure-boot-enabled', 'web-01'));
    assert.deepEqual(of('vm.encrypted', 'web-02')?.changes[0], {
      path: 'encryption',
      from: null,
      to: 'VM Encryption Policy',
    });
    assert.deepEqual(of('vm.reconfigured', 'db-01')?.changes, [
      { path: 'migrationEncryption', from: null, to: 'disabled' },
    ]);
    assert.ok(of('alert.rule-added', 'Secure Boot turned off'));
    assert.ok(of('syslog.target-added', 'siem'));
    for (const e of recorded.filter((x) => x.object.kind === 'vm' || x.type.startsWith('alert.rule'))) {
      assert.equal(e.result, 'success', `${e.type} ${e.object.name}: ${e.message}`);
    }
  });

  test('a second apply plans nothing and records no event', async () => {
    const seq = await lastSeq();
    const run = await cli(['apply', '-f', join(dir, 'good.yaml')]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /nothing to change: the state matches the posture/);
    assert.doesNotMatch(run.stdout, /→/);
    const made = await eventsAfter(seq);
    assert.equal(made.length, 0, describeEvents(made));
  });

  test('export, then apply --dry-run of the exported file, plans nothing (and holds no secret)', async () => {
    const out = join(dir, 'exported.yaml');
    const run = await cli(['export', '-o', out]);
    assert.equal(run.code, 0, run.stderr);
    const text = readFileSync(out, 'utf8');
    assert.match(text, /^version: 1$/m);
    assert.match(text, /namePattern: web-01/);
    assert.match(text, /policy: VM Encryption Policy/);
    assert.doesNotMatch(text, /BEGIN|PRIVATE|token/i);
    const again = await cli(['apply', '-f', out, '--dry-run']);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /nothing to change: the state matches the posture/, again.stdout);
    const only = await cli(['export', '--select', 'tag=pci', '--select', 'folder=/prod/**']);
    assert.equal(only.code, 0, only.stderr);
    assert.match(only.stdout, /namePattern: web-02/);
    assert.doesNotMatch(only.stdout, /web-03|db-01/);
  });

  test('a blocked change stops the run there: the steps before it are kept, none after it is made', async () => {
    const file = posture(
      'blocked.yaml',
      `version: 1
vms:
  - { select: { namePattern: 'db-*' }, vtpm: true }
  - { select: { namePattern: web-03 }, secureBoot: true }
  - { select: { namePattern: web-02 }, encryption: none }
`,
    );
    const dry = await cli(['apply', '-f', file, '--dry-run']);
    assert.equal(dry.code, 5, `a dry run of a plan apply cannot finish exits 5: ${dry.stderr}`);
    assert.match(
      dry.stdout,
      /vm web-03 +secureBoot +false → true +BLOCKED: BIOS firmware, secure boot impossible/,
    );
    const seq = await lastSeq();
    const run = await cli(['apply', '-f', file]);
    assert.equal(run.code, 5, run.stderr);
    assert.match(run.stderr, /web-03: BIOS firmware, secure boot impossible .*\[HS_ERR_POSTURE_BLOCKED\]/);
    assert.match(run.stdout, /stopped: 1 of 3 steps done/);
    assert.match(run.stdout, /done +vm db-01: set vtpm/);
    assert.match(run.stdout, /not done +vm web-02: decrypt/);
    const vms = await vmsByName();
    assert.equal(vms['db-01']?.config.vtpm, true, 'the step before is kept');
    assert.equal(vms['web-03']?.config.secureBoot, false);
    assert.notEqual(vms['web-02']?.encryption, null, 'the step after is not made');
    const made = await eventsAfter(seq);
    assert.deepEqual(
      made.map((e) => `${e.type} ${e.object.name}`),
      ['vm.reconfigured db-01'],
      `one event, db-01 reconfigured:\n${describeEvents(made)}`,
    );
  });

  test('a refusal from the manager stops the run with its code; the steps before it are kept', async () => {
    const user = await platform.userClient('No Cryptography Administrator');
    const limited = writeCredentials('limited.json', user.token);
    const file = posture(
      'refused.yaml',
      `version: 1
vms:
  - { select: { namePattern: 'db-*' }, migrationEncryption: required }
  - { select: { namePattern: web-03 }, encryption: { policy: VM Encryption Policy } }
  - { select: { namePattern: 'db-*' }, vtpm: false }
`,
    );
    const run = await cli(['apply', '-f', file], limited);
    assert.equal(run.code, 4, run.stderr);
    assert.match(run.stderr, /crypto\.encrypt.*\[HS_ERR_AUTH_FORBIDDEN\]/);
    assert.match(run.stdout, /stopped: 1 of 3 steps done/);
    const vms = await vmsByName();
    assert.equal(vms['db-01']?.config.migrationEncryption, 'required', 'kept');
    assert.equal(vms['web-03']?.encryption, null);
    assert.equal(vms['db-01']?.config.vtpm, true, 'not tried after the refusal');
  });

  test('a malformed file exits 2 with HS_ERR_POSTURE_INVALID naming the path, and changes nothing', async () => {
    const seq = await lastSeq();
    const vmsBefore = await vmState();
    const file = posture(
      'bad.yaml',
      `version: 1
vms:
  - select: { namePattern: 'db-*' }
    vtpm: false
  - select:
      tag: 42
    secureBoot: false
`,
    );
    const run = await cli(['apply', '-f', file]);
    assert.equal(run.code, 2);
    assert.match(
      run.stderr,
      /bad\.yaml:6: vms\[1\]\.select\.tag must be a string, got a number \[HS_ERR_POSTURE_INVALID\]/,
    );
    assert.equal(run.stdout, '');
    const json = await cli(['apply', '-f', file, '--json']);
    assert.equal(json.code, 2);
    const err = JSON.parse(json.stderr) as {
      error: { code: string; details: { path: string; line: number } };
    };
    assert.equal(err.error.code, 'HS_ERR_POSTURE_INVALID');
    assert.deepEqual([err.error.details.path, err.error.details.line], ['vms[1].select.tag', 6]);
    assert.deepEqual(await vmState(), vmsBefore);
    const made = await eventsAfter(seq);
    assert.equal(made.length, 0, describeEvents(made));
  });

  test('key providers: a missing one is created from its files, made the default; the key is never shown', async () => {
    const kms = platform.kms;
    assert.ok(kms);
    const pki = join(dir, 'pki');
    mkdirSync(pki, { mode: 0o700 });
    const client = await kms.dataDir.issueClientCertificate('posture-test');
    writeFileSync(join(pki, 'ca.pem'), kms.dataDir.caCertPem());
    writeFileSync(join(pki, 'client.pem'), client.certPem);
    writeFileSync(join(pki, 'client.key'), client.keyPem, { mode: 0o600 });
    const server = `127.0.0.1:${kms.port}`;
    const file = posture(
      'providers.yaml',
      `version: 1
keyProviders:
  - name: embedded
    servers: ['${server}']
    caFile: pki/ca.pem
  - name: second
    servers: ['${server}']
    caFile: pki/ca.pem
    clientCertFile: pki/client.pem
    clientKeyFile: pki/client.key
    default: true
`,
    );
    const dry = await cli(['apply', '-f', file, '--dry-run']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /^keyProviders\[0\] embedded\n {2}\(no change\)$/m, 'same servers, same CA');
    assert.match(dry.stdout, /^ {2}key-provider second +servers +— → \[127\.0\.0\.1:\d+\]$/m);
    assert.match(dry.stdout, /^ {2}key-provider second +default +false → true$/m);
    assert.match(dry.stdout, /^1 key provider to create$/m);
    const seq = await lastSeq();
    const run = await cli(['apply', '-f', file]);
    assert.equal(run.code, 0, run.stderr);
    const providers = await platform.api.listKeyProviders();
    const second = providers.find((p) => p.name === 'second');
    assert.equal(second?.state, 'ready');
    assert.equal(second?.isDefault, true);
    assert.equal(
      providers.find((p) => p.name === 'embedded')?.isDefault,
      false,
      'still there, no longer default',
    );
    const made = await eventsAfter(seq);
    assert.deepEqual(
      made.map((e) => `${e.type} ${e.object.name}`),
      ['kms.provider-default-changed second', 'kms.provider-added second'],
      describeEvents(made),
    );
    // The private key went to the manager only: not in the output, not in any event.
    const keyBody = client.keyPem.split('\n')[1] ?? '';
    assert.ok(keyBody.length > 20);
    for (const text of [dry.stdout, dry.stderr, run.stdout, run.stderr, JSON.stringify(made)]) {
      assert.ok(!text.includes(keyBody), 'the client key leaked');
    }
    const again = await cli(['apply', '-f', file]);
    assert.match(again.stdout, /nothing to change/);
    // Back as it was, for whoever comes next.
    await platform.api.setDefaultKeyProvider(platform.keyProviderId ?? '');
  });

  test('an encrypted VM put under another policy is rekeyed under it, not blocked, and stays encrypted', async () => {
    const before = (await vmsByName())['web-01'];
    assert.ok(before?.encryption, 'web-01 was encrypted by the first apply');
    const gold = await platform.api.createEncryptionPolicy({ name: 'Gold', description: 'posture test' });
    const file = posture(
      'gold.yaml',
      `version: 1
vms:
  - { select: { namePattern: web-01 }, encryption: { policy: Gold } }
`,
    );
    const dry = await cli(['apply', '-f', file, '--dry-run']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /VM Encryption Policy.*Gold/);
    assert.doesNotMatch(dry.stdout, /BLOCKED/);
    const run = await cli(['apply', '-f', file]);
    assert.equal(run.code, 0, run.stderr);
    const after = (await vmsByName())['web-01'];
    assert.equal(after?.encryption?.policyId, gold.id);
    assert.notEqual(after?.encryption?.keyId, before.encryption.keyId);
    const again = await cli(['apply', '-f', file, '--dry-run']);
    assert.match(again.stdout, /nothing to change/);
  });
});
