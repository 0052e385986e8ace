// Key safety through the manager, with real key servers in child processes (`hyperseal kms
// serve`) and sim-driver hosts:
//  - the backup warning (GET /key-safety, GET /key-providers/:id, events once per change)
//    and the confirmation the first VM encrypted with a never-backed-up key server needs;
//  - the recovery drill of docs/key-safety.md: encrypt several VMs, back up, lose the key
//    server's data (and its master key), restore — after a wrong passphrase and a corrupt
//    backup changed nothing — restart the agents (they forget every key): every VM unlocks
//    and powers on;
//  - high availability: two key servers on one real PostgreSQL in one key provider; one
//    is killed (-9) during a bulk encryption and every VM finishes encrypted.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openQemuDriver } from '../../src/agent/qemu-driver.js';
import { startAgent } from '../../src/agent/server.js';
import { SimDriver } from '../../src/agent/sim-driver.js';
import type { Event } from '../../src/events/index.js';
import { KMS_FILES } from '../../src/kms/service.js';
import { defaultMasterKeyPath } from '../../src/kms/master-key.js';
import type { Vm } from '../../src/manager/model.js';
import type { ErrorAnswer, TestPlatform } from '../support/manager.js';
import { startTestPlatform, useTempConfigHome } from '../support/manager.js';
import type { KmsDaemon } from '../support/kms-process.js';
import { runHyperseal, startKmsDaemon } from '../support/kms-process.js';
import type { PostgresServer } from '../support/postgres.js';
import { startPostgres } from '../support/postgres.js';

const PASS = 'drill passphrase 42';
const SYSTEM = { user: 'system', sourceIp: null };

interface TaskAnswer {
  id: string;
  state: string;
  error: { code: string; message: string } | null;
  result: unknown;
}

interface KeySafetyAnswer {
  status: { health: string; encryptedVms: number; lastBackupAt: number | null; warning: string | null };
  warnings: string[];
}

function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('HYPERSEAL_')) delete env[k];
  return { ...env, ...extra };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** Adds the key servers as one provider (CN hyperseal-manager, issued by the first one's CA). */
async function addProvider(
  p: TestPlatform,
  dataDir: string,
  ports: number[],
  extra: string[],
  env: NodeJS.ProcessEnv,
): Promise<string> {
  const prefix = join(dataDir, '..', `manager-${ports.join('-')}`);
  const r = await runHyperseal(
    ['kms', 'client-cert', '--data-dir', dataDir, '--name', 'hyperseal-manager', '--out', prefix, ...extra],
    env,
  );
  assert.equal(r.code, 0, r.stderr);
  const provider = await p.manager.services.keyProviders.add(SYSTEM, {
    name: `kms-${ports.join('-')}`,
    servers: ports.map((port) => ({ host: '127.0.0.1', port })),
    caPem: readFileSync(join(dataDir, KMS_FILES.ca), 'utf8'),
    clientCertPem: readFileSync(`${prefix}.pem`, 'utf8'),
    clientKeyPem: readFileSync(`${prefix}.key`, 'utf8'),
  });
  return provider.id;
}

async function restartAgents(p: TestPlatform): Promise<void> {
  for (const agent of p.agents) {
    const port = Number(new URL(agent.address).port);
    await agent.server.close();
    agent.server = await startAgent({
      dataDir: agent.dataDir,
      listen: { host: '127.0.0.1', port },
      driver: SimDriver.open(agent.dataDir),
    });
  }
}

describe('key safety: backup warning, confirmation, and the recovery drill', { concurrency: 1 }, () => {
  let restoreConfig: () => void;
  let p: TestPlatform;
  let root: string;
  let kmsDir: string;
  let daemon: KmsDaemon | undefined;
  let providerId: string;
  const env = (): NodeJS.ProcessEnv => cleanEnv({ XDG_CONFIG_HOME: process.env.XDG_CONFIG_HOME ?? '' });
  const vms: Vm[] = [];

  const sync = async (path: string, body: unknown = {}): Promise<TaskAnswer> => {
    const r = await p.request<TaskAnswer>(p.adminToken, 'POST', `${path}?sync=true`, body);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body;
  };
  const safety = (): Promise<KeySafetyAnswer> => p.api.get<KeySafetyAnswer>('/key-safety');
  const eventsOf = async (type: string): Promise<Event[]> =>
    (await p.api.get<Event[]>(`/events?type=${type}&limit=100`)).filter((e) => e.type === type);

  before(async () => {
    restoreConfig = useTempConfigHome();
    root = mkdtempSync(join(tmpdir(), 'hs-drill-'));
    kmsDir = join(root, 'kms');
    p = await startTestPlatform({ agents: 2, healthIntervalMs: 200 });
    daemon = await startKmsDaemon(kmsDir, [], env());
    providerId = await addProvider(p, kmsDir, [daemon.port], [], env());
    const ds = await p.api.get<{ id: string; hostId: string }[]>('/datastores');
    for (let i = 0; i < 6; i++) {
      const hostDs = ds[i % ds.length];
      assert.ok(hostDs);
      vms.push(
        await p.api.post<Vm>('/vms', {
          name: `drill-${i}`,
          hostId: hostDs.hostId,
          memoryMiB: 64,
          tags: ['drill'],
          disks: [{ id: 'disk0', sizeMiB: 32, datastoreId: hostDs.id }],
        }),
      );
    }
  });
  after(async () => {
    await p?.close();
    await daemon?.stop('SIGKILL');
    rmSync(root, { recursive: true, force: true });
    restoreConfig();
  });

  test('the first VM on a never-backed-up key server needs acceptNoBackup (409 says how to back up)', async () => {
    const [first] = vms;
    assert.ok(first);
    const r = await p.request<ErrorAnswer>(p.adminToken, 'POST', `/vms/${first.id}/actions/encrypt`, {});
    assert.equal(r.status, 409);
    assert.equal(r.body.code, 'HS_ERR_KMS_NOT_BACKED_UP');
    assert.match(r.body.message, /hyperseal kms backup --data-dir DIR --out FILE/);
    // The same for a policy applied to many VMs, and for creating an encrypted VM.
    const apply = await p.request<ErrorAnswer>(
      p.adminToken,
      'POST',
      '/encryption-policies/vm-encryption-policy/actions/apply',
      { tag: 'drill' },
    );
    assert.equal(apply.body.code, 'HS_ERR_KMS_NOT_BACKED_UP');
    const create = await p.request<ErrorAnswer>(p.adminToken, 'POST', '/vms', {
      name: 'new-enc',
      encryptionPolicyId: 'VM Encryption Policy',
    });
    assert.equal(create.body.code, 'HS_ERR_KMS_NOT_BACKED_UP');
    assert.equal((await p.api.get<Vm>(`/vms/${first.id}`)).encryption, null);

    // The CLI: refused with the way to back up (exit 5), then confirmed.
    const creds = join(root, 'credentials.json');
    writeFileSync(
      creds,
      JSON.stringify({ managerUrl: p.manager.url, caPath: p.manager.caPath, token: p.adminToken }),
    );
    const cli = (args: string[]) => runHyperseal([...args, '--credentials', creds], env());
    const refused = await cli(['vm', 'encrypt', first.name]);
    assert.equal(refused.code, 5, refused.stderr);
    assert.match(refused.stderr, /never been backed up.*hyperseal kms backup.*\[HS_ERR_KMS_NOT_BACKED_UP\]/);
    const ok = await cli(['vm', 'encrypt', first.name, '--accept-no-backup']);
    assert.equal(ok.code, 0, ok.stderr);
    // Now a warning: keys of an encrypted VM, no backup — in the API and as one event.
    await until('the warning', async () => (await safety()).status.encryptedVms === 1);
    const s = await safety();
    assert.equal(s.status.health, 'never-backed-up');
    assert.equal(s.status.encryptedVms, 1);
    assert.match(s.warnings[0] ?? '', /never been backed up: back up the key server/);
    const kp = await p.api.get<{ backup?: { health: string } }>(`/key-providers/${providerId}`);
    assert.equal(kp.backup?.health, 'never-backed-up');
    await until('a kms.backup-missing event', async () => (await eventsOf('kms.backup-missing')).length > 0);
    // The CLI listings carry it.
    const list = await cli(['vm', 'list']);
    assert.match(list.stdout, /WARNING: key provider .* has never been backed up/);
    const hosts = await cli(['host', 'list']);
    assert.match(hosts.stdout, /WARNING: /);
    const kps = await cli(['key-provider', 'list']);
    assert.match(kps.stdout, /BACKUP[\s\S]*never/);
    await sleep(600);
    assert.equal((await eventsOf('kms.backup-missing')).length, 1, 'one event per change, not per check');
    // Nor per manager start.
    await p.restartManager();
    await sleep(800);
    assert.equal((await eventsOf('kms.backup-missing')).length, 1, 'not again after a restart');
  });

  test('backup while serving clears the warning (event), newer keys raise it again', async () => {
    const out = join(root, 'first.backup');
    const b = await runHyperseal(['kms', 'backup', '--data-dir', kmsDir, '--out', out], {
      ...env(),
      HYPERSEAL_KMS_BACKUP_PASSPHRASE: PASS,
    });
    assert.equal(b.code, 0, b.stderr);
    await until('kms.backup-current', async () => (await eventsOf('kms.backup-current')).length > 0);
    assert.deepEqual((await safety()).warnings, []);
    // The rest, in bulk through the policy: new keys, newer than the backup.
    const t = await sync('/encryption-policies/vm-encryption-policy/actions/apply', { tag: 'drill' });
    assert.equal(t.state, 'succeeded', JSON.stringify(t));
    for (const vm of vms) assert.ok((await p.api.get<Vm>(`/vms/${vm.id}`)).encryption, vm.name);
    await until('a stale-backup warning', async () => (await safety()).status.health === 'missing');
    assert.match((await safety()).warnings[0] ?? '', /newer than its last backup/);
    await until(
      'a second kms.backup-missing',
      async () => (await eventsOf('kms.backup-missing')).length === 2,
    );
  });

  test('recovery drill: back up, lose the key server, restore (wrong passphrase and corrupt file change nothing), every VM unlocks and boots', async () => {
    const backup = join(root, 'drill.backup');
    const b = await runHyperseal(['kms', 'backup', '--data-dir', kmsDir, '--out', backup], {
      ...env(),
      HYPERSEAL_KMS_BACKUP_PASSPHRASE: PASS,
    });
    assert.equal(b.code, 0, b.stderr);
    const verify = await runHyperseal(['kms', 'backup', 'verify', backup], {
      ...env(),
      HYPERSEAL_KMS_BACKUP_PASSPHRASE: PASS,
    });
    assert.equal(verify.code, 0, verify.stderr);
    await until('no warning', async () => (await safety()).warnings.length === 0);

    // Disaster: the key server, its data directory and its master key are gone.
    assert.ok(daemon);
    const port = daemon.port;
    await daemon.stop('SIGKILL');
    daemon = undefined;
    rmSync(kmsDir, { recursive: true, force: true });
    rmSync(defaultMasterKeyPath(kmsDir), { force: true });
    // Hosts restart meanwhile and forget their keys: the VMs lock.
    await restartAgents(p);
    await until('every VM locked', async () =>
      (await Promise.all(vms.map((v) => p.api.get<Vm>(`/vms/${v.id}`)))).every((v) => v.locked),
    );

    // Wrong passphrase, corrupt backup: clear errors, nothing written.
    const wrong = await runHyperseal(['kms', 'restore', '--data-dir', kmsDir, '--from', backup], {
      ...env(),
      HYPERSEAL_KMS_BACKUP_PASSPHRASE: 'wrong passphrase',
    });
    assert.equal(wrong.code, 4);
    assert.match(wrong.stderr, /wrong passphrase/);
    const bytes = readFileSync(backup);
    const mid = Math.floor(bytes.length / 2);
    bytes[mid] = (bytes[mid] ?? 0) ^ 0x40;
    writeFileSync(join(root, 'corrupt.backup'), bytes);
    const corrupt = await runHyperseal(
      ['kms', 'restore', '--data-dir', kmsDir, '--from', join(root, 'corrupt.backup')],
      { ...env(), HYPERSEAL_KMS_BACKUP_PASSPHRASE: PASS },
    );
    assert.match(corrupt.stderr, /HS_ERR_KMS_BACKUP_CORRUPT/);
    assert.equal(existsSync(kmsDir), false, 'nothing written');
    assert.equal(existsSync(defaultMasterKeyPath(kmsDir)), false, 'no master key written');
    assert.deepEqual(
      readdirSync(root).filter((f) => f.includes('restore')),
      [],
    );

    // The restore, and the key server back on its address.
    const r = await runHyperseal(['kms', 'restore', '--data-dir', kmsDir, '--from', backup], {
      ...env(),
      HYPERSEAL_KMS_BACKUP_PASSPHRASE: PASS,
    });
    assert.equal(r.code, 0, r.stderr);
    daemon = await startKmsDaemon(kmsDir, [], env(), port);

    // `vm unlock` for each (the health loop would too, within 30 s); then every VM boots.
    for (const vm of vms) {
      const u = await p.request<Vm>(p.adminToken, 'POST', `/vms/${vm.id}/actions/unlock`, {});
      assert.equal(u.status, 200, JSON.stringify(u.body));
      assert.equal(u.body.locked, false);
    }
    for (const vm of vms) {
      const on = await sync(`/vms/${vm.id}/actions/power-on`);
      assert.equal(on.state, 'succeeded', `${vm.name}: ${JSON.stringify(on.error)}`);
      assert.equal((await p.api.get<Vm>(`/vms/${vm.id}`)).state, 'running');
    }
    // The restored server counts as backed up: no warning.
    assert.deepEqual((await safety()).warnings, []);
  });
});

describe('high availability: two key servers on one PostgreSQL', { concurrency: 1 }, () => {
  let restoreConfig: () => void;
  let pg: PostgresServer;
  let p: TestPlatform;
  let root: string;
  const daemons: KmsDaemon[] = [];

  before(async () => {
    restoreConfig = useTempConfigHome();
    pg = await startPostgres();
    root = mkdtempSync(join(tmpdir(), 'hs-ha-'));
    p = await startTestPlatform({ agents: 1, healthIntervalMs: 500 });
  });
  after(async () => {
    await p?.close();
    for (const d of daemons) await d.stop('SIGKILL');
    await pg?.stop();
    rmSync(root, { recursive: true, force: true });
    restoreConfig();
  });

  test('one key server killed during a bulk encryption: every VM finishes encrypted', async (t) => {
    const env = cleanEnv({
      XDG_CONFIG_HOME: process.env.XDG_CONFIG_HOME ?? '',
      HYPERSEAL_KMS_MASTER_KEY: randomBytes(32).toString('base64'),
    });
    const a = join(root, 'a');
    const b = join(root, 'b');
    const first = await startKmsDaemon(a, ['--store', pg.url], env);
    daemons.push(first);
    const init = await runHyperseal(
      ['kms', 'init-replica', '--from', a, '--data-dir', b, '--store', pg.url],
      env,
    );
    assert.equal(init.code, 0, init.stderr);
    const second = await startKmsDaemon(b, ['--store', pg.url], env);
    daemons.push(second);
    await addProvider(p, a, [first.port, second.port], ['--store', pg.url], env);

    const ds = (await p.api.get<{ id: string }[]>('/datastores'))[0];
    assert.ok(ds);
    const vms: Vm[] = [];
    for (let i = 0; i < 12; i++) {
      vms.push(
        await p.api.post<Vm>('/vms', {
          name: `ha-${i}`,
          memoryMiB: 64,
          tags: ['ha'],
          disks: [{ id: 'disk0', sizeMiB: 32, datastoreId: ds.id }],
        }),
      );
    }
    const task = await p.api.post<TaskAnswer>('/encryption-policies/vm-encryption-policy/actions/apply', {
      tag: 'ha',
      acceptNoBackup: true,
    });
    // As soon as the first VM is encrypted (its KEK came from the first server), kill it.
    await until('a first encrypted VM', async () =>
      (await p.api.get<Vm[]>('/vms?limit=100')).some(
        (v) => v.name.startsWith('ha-') && v.encryption !== null,
      ),
    );
    const stateAtKill = (await p.api.get<TaskAnswer>(`/tasks/${task.id}`)).state;
    await first.stop('SIGKILL');
    const done = await p.api.waitTask(task.id);
    assert.equal(done.state, 'succeeded', JSON.stringify(done));
    const failures = async (): Promise<string> =>
      JSON.stringify(
        (await p.api.listEvents({ type: 'vm.encrypted', limit: 100 }))
          .filter((e) => e.result === 'failure')
          .map((e) => e.message),
      );
    for (const vm of vms) {
      const v = await p.api.get<Vm>(`/vms/${vm.id}`);
      assert.ok(
        v.encryption,
        `${v.name} is encrypted; task ${JSON.stringify(done.result)}; ${await failures()}`,
      );
      // Its key is served by the surviving server.
      const kek = await p.manager.services.keyProviders.fetchKek(v.encryption.providerId, v.encryption.keyId);
      assert.equal(kek.length, 32);
    }
    t.diagnostic(`apply task was ${stateAtKill} when the first key server was killed`);
  });
});

const haveQemu = existsSync('/usr/bin/qemu-system-x86_64') && existsSync('/usr/bin/qemu-img');

describe('recovery drill with a real QEMU VM', { concurrency: 1, skip: haveQemu ? false : 'no QEMU' }, () => {
  let restoreConfig: () => void;
  let p: TestPlatform;
  let root: string;
  let daemon: KmsDaemon | undefined;
  let vm: Vm | undefined;
  const env = (): NodeJS.ProcessEnv => cleanEnv({ XDG_CONFIG_HOME: process.env.XDG_CONFIG_HOME ?? '' });
  const sync = async (path: string, body: unknown = {}): Promise<TaskAnswer> => {
    const r = await p.request<TaskAnswer>(p.adminToken, 'POST', `${path}?sync=true&timeoutMs=300000`, body);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body;
  };

  before(async () => {
    restoreConfig = useTempConfigHome();
    root = mkdtempSync(join(tmpdir(), 'hs-drill-qemu-'));
    p = await startTestPlatform({ agents: 1, healthIntervalMs: 500, driver: (dir) => openQemuDriver(dir) });
  });
  after(async () => {
    if (vm !== undefined) {
      await p
        .request(p.adminToken, 'POST', `/vms/${vm.id}/actions/power-off?sync=true`)
        .catch(() => undefined);
    }
    await p?.close();
    await daemon?.stop('SIGKILL');
    rmSync(root, { recursive: true, force: true });
    restoreConfig();
  });

  test('encrypted QEMU VM: back up, lose the key server, restore, restart the agent, unlock, boot', async () => {
    const kmsDir = join(root, 'kms');
    daemon = await startKmsDaemon(kmsDir, [], env());
    await addProvider(p, kmsDir, [daemon.port], [], env());
    const ds = (await p.api.get<{ id: string }[]>('/datastores'))[0];
    assert.ok(ds);
    vm = await p.api.post<Vm>('/vms', {
      name: 'drill-qemu',
      memoryMiB: 64,
      firmware: 'bios',
      disks: [{ id: 'disk0', sizeMiB: 16, datastoreId: ds.id }],
    });
    const enc = await sync(`/vms/${vm.id}/actions/encrypt`, { acceptNoBackup: true });
    assert.equal(enc.state, 'succeeded', JSON.stringify(enc.error));
    const backup = join(root, 'kms.backup');
    const b = await runHyperseal(['kms', 'backup', '--data-dir', kmsDir, '--out', backup], {
      ...env(),
      HYPERSEAL_KMS_BACKUP_PASSPHRASE: PASS,
    });
    assert.equal(b.code, 0, b.stderr);

    const port = daemon.port;
    await daemon.stop('SIGKILL');
    daemon = undefined;
    rmSync(kmsDir, { recursive: true, force: true });
    rmSync(defaultMasterKeyPath(kmsDir), { force: true });
    const agent = p.agents[0];
    assert.ok(agent);
    const agentPort = Number(new URL(agent.address).port);
    await agent.server.close();
    agent.server = await startAgent({
      dataDir: agent.dataDir,
      listen: { host: '127.0.0.1', port: agentPort },
      driver: await openQemuDriver(agent.dataDir),
    });
    const id = vm.id;
    await until('the VM locked', async () => (await p.api.get<Vm>(`/vms/${id}`)).locked);
    const refused = await sync(`/vms/${id}/actions/power-on`);
    assert.equal(refused.error?.code, 'HS_ERR_VM_LOCKED');

    const r = await runHyperseal(['kms', 'restore', '--data-dir', kmsDir, '--from', backup], {
      ...env(),
      HYPERSEAL_KMS_BACKUP_PASSPHRASE: PASS,
    });
    assert.equal(r.code, 0, r.stderr);
    daemon = await startKmsDaemon(kmsDir, [], env(), port);
    const u = await p.request<Vm>(p.adminToken, 'POST', `/vms/${id}/actions/unlock`, {});
    assert.equal(u.status, 200, JSON.stringify(u.body));
    const on = await sync(`/vms/${id}/actions/power-on`);
    assert.equal(on.state, 'succeeded', JSON.stringify(on.error));
    assert.equal((await p.api.get<Vm>(`/vms/${id}`)).state, 'running');
    assert.equal((await sync(`/vms/${id}/actions/power-off`)).state, 'succeeded');
  });
});
