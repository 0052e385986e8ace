// The manager's migration flow with sim agents (no QEMU): the record moves, the inventory
// and the events follow, privileges and refusals hold. Real QEMU: migration-qemu.test.ts.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Vm } from '../../src/manager/model.js';
import type { Task } from '../../src/manager/tasks.js';
import type { TestPlatform } from '../support/manager.js';
import { startTestPlatform, useTempConfigHome } from '../support/manager.js';

describe('vm migrate (sim agents)', { concurrency: 1 }, () => {
  let restoreConfig: () => void;
  let p: TestPlatform;
  const host = (i: number): string => p.agents[i]?.hostId ?? '';

  before(async () => {
    restoreConfig = useTempConfigHome();
    p = await startTestPlatform({ agents: 2, kms: true });
  });
  after(async () => {
    await p?.close();
    restoreConfig();
  });

  const migrate = (token: string, id: string, hostId: string) =>
    p.request<Task & { code?: string }>(token, 'POST', `/vms/${id}/actions/migrate?sync=true`, { hostId });

  test('a running VM moves; hostId, agents and the event follow', async () => {
    const vm = await p.api.post<Vm>('/vms', { name: 'sim-mig', hostId: host(0), memoryMiB: 64 });
    assert.equal(vm.config.migrationEncryption, undefined, 'absent means opportunistic');
    // Stopped: a cold migration, and back.
    const cold = await migrate(p.adminToken, vm.id, host(1));
    assert.equal(cold.body.state, 'succeeded', JSON.stringify(cold.body));
    assert.equal((cold.body.result as { cold: boolean }).cold, true);
    assert.equal((await p.api.get<Vm>(`/vms/${vm.id}`)).hostId, host(1));
    assert.equal((await p.manager.services.hosts.agent(host(1)).getVm(vm.id)).state, 'stopped');
    const coldBack = await migrate(p.adminToken, vm.id, host(0));
    assert.equal(coldBack.body.state, 'succeeded', JSON.stringify(coldBack.body));
    await p.request(p.adminToken, 'POST', `/vms/${vm.id}/actions/power-on?sync=true`);
    const same = await migrate(p.adminToken, vm.id, host(0));
    assert.equal(same.status, 400);
    const r = await migrate(p.adminToken, vm.id, host(1));
    assert.equal(r.body.state, 'succeeded', JSON.stringify(r.body));
    assert.equal((r.body.result as { encrypted: boolean }).encrypted, true);
    const moved = await p.api.get<Vm>(`/vms/${vm.id}`);
    assert.equal(moved.hostId, host(1));
    assert.equal(moved.state, 'running');
    assert.equal((await p.manager.services.hosts.agent(host(1)).getVm(vm.id)).state, 'running');
    await assert.rejects(p.manager.services.hosts.agent(host(0)).getVm(vm.id), /no VM/);
    const events = await p.api.get<
      {
        type: string;
        result: string;
        object: { id: string };
        changes: { path: string; from: unknown; to: unknown }[];
        message: string;
      }[]
    >('/events?type=vm.migrated');
    const ok = events.filter((e) => e.object.id === vm.id && e.result === 'success');
    assert.equal(ok.length, 3, 'cold there and back, then live');
    // The message names the hosts as operators know them; the change keeps their ids.
    const names = await Promise.all([0, 1].map(async (i) => (await p.api.getHost(host(i))).name));
    assert.ok(ok[2]?.message.includes(`from host ${names[0]} to ${names[1]}`), ok[2]?.message);
    assert.deepEqual(
      ok[2]?.changes.find((c) => c.path === 'hostId'),
      { path: 'hostId', from: host(0), to: host(1) },
    );
    // Disabled: plaintext, and said so.
    await p.api.patch(`/vms/${vm.id}`, { migrationEncryption: 'disabled' });
    const back = await migrate(p.adminToken, vm.id, host(0));
    assert.equal(back.body.state, 'succeeded', JSON.stringify(back.body));
    assert.equal((back.body.result as { encrypted: boolean }).encrypted, false);
    await p.request(p.adminToken, 'POST', `/vms/${vm.id}/actions/power-off?sync=true`);
  });

  test('an encrypted VM needs crypto.migrate, is required, and its host changes', async () => {
    const vm = await p.api.post<Vm>('/vms', {
      name: 'sim-mig-enc',
      hostId: host(0),
      memoryMiB: 64,
      encryptionPolicyId: 'VM Encryption Policy',
      acceptNoBackup: true,
    });
    assert.equal(vm.config.migrationEncryption, 'required');
    await p.request(p.adminToken, 'POST', `/vms/${vm.id}/actions/power-on?sync=true`);
    const nca = await p.userClient('No Cryptography Administrator');
    const denied = await migrate(nca.token, vm.id, host(1));
    assert.equal(denied.status, 403, JSON.stringify(denied.body));
    const r = await migrate(p.adminToken, vm.id, host(1));
    assert.equal(r.body.state, 'succeeded', JSON.stringify(r.body));
    assert.equal((r.body.result as { cipher: string }).cipher, 'aes-256-gcm');
    const rt = await p.manager.services.hosts.agent(host(1)).getVm(vm.id);
    assert.equal(rt.locked, false, 'the destination holds the KEK');
    await p.request(p.adminToken, 'POST', `/vms/${vm.id}/actions/power-off?sync=true`);
  });

  test('hyperseal vm migrate VM --to HOST', async () => {
    const vm = await p.api.post<Vm>('/vms', { name: 'sim-mig-cli', hostId: host(0), memoryMiB: 64 });
    await p.request(p.adminToken, 'POST', `/vms/${vm.id}/actions/power-on?sync=true`);
    const creds = join(p.managerDir, 'cli-credentials.json');
    writeFileSync(
      creds,
      JSON.stringify({ managerUrl: p.manager.url, caPath: p.manager.caPath, token: p.adminToken }),
    );
    const hostName = p.agents[1]?.name ?? '';
    const out = await new Promise<{ code: number; stdout: string; stderr: string }>((done) => {
      execFile(
        process.execPath,
        [
          resolve('dist/src/cli/main.js'),
          'vm',
          'migrate',
          'sim-mig-cli',
          '--to',
          hostName,
          '--json',
          '--credentials',
          creds,
        ],
        (err, stdout, stderr) => done({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
      );
    });
    assert.equal(out.code, 0, out.stderr);
    const task = JSON.parse(out.stdout) as Task;
    assert.equal(task.state, 'succeeded');
    assert.equal((await p.api.get<Vm>(`/vms/${vm.id}`)).hostId, host(1));
    // Back, to a host given by id; a stopped VM goes cold.
    await p.request(p.adminToken, 'POST', `/vms/${vm.id}/actions/power-off?sync=true`);
  });
});
