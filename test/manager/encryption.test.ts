// VM encryption through the manager API, with the embedded key server as the key provider
// and sim-driver hosts (the same key handling as QEMU: real KEKs, real RFC 3394 wrapping;
// test/manager/encryption-qemu.test.ts does it with real QEMU images). Covers: encrypt,
// decrypt, create encrypted, add disk, clone (own KEK), shallow and deep rekey, policy
// applied by tag, crypto-shred, locked VMs after an agent restart and a key provider
// outage, the No Cryptography Administrator refusals — and that the KEK's bytes appear in
// no manager file, no event and no agent file.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startAgent } from '../../src/agent/server.js';
import { SimDriver } from '../../src/agent/sim-driver.js';
import type { Event } from '../../src/events/index.js';
import type { RunningKms } from '../../src/kms/service.js';
import { startKms } from '../../src/kms/service.js';
import type { Vm } from '../../src/manager/model.js';
import type { ErrorAnswer, TestPlatform } from '../support/manager.js';
import { startTestPlatform, useTempConfigHome } from '../support/manager.js';
import { filesUnder, findIn, keyForms } from '../support/scan.js';

interface TaskAnswer {
  id: string;
  state: string;
  progress: number;
  error: { code: string; message: string } | null;
  result: unknown;
}

function assertNowhere(files: string[], key: Buffer, where: string): void {
  assert.deepEqual(findIn(files, keyForms(key)), [], `${where}: key material found`);
}

describe('VM encryption (sim hosts, embedded key server)', { concurrency: 1 }, () => {
  let restoreConfig: () => void;
  let p: TestPlatform;
  let restartedKms: RunningKms | undefined;

  before(async () => {
    restoreConfig = useTempConfigHome();
    p = await startTestPlatform({ kms: true, healthIntervalMs: 200 });
  });
  after(async () => {
    await p?.close();
    await restartedKms?.close();
    restoreConfig();
  });

  const sync = async (
    method: string,
    path: string,
    body?: unknown,
    token = p.adminToken,
  ): Promise<TaskAnswer> => {
    const r = await p.request<TaskAnswer>(
      token,
      method,
      `${path}${path.includes('?') ? '&' : '?'}sync=true`,
      body ?? {},
    );
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body;
  };
  const vm = (id: string): Promise<Vm> => p.api.get<Vm>(`/vms/${id}`);
  const createVm = (name: string, extra: Record<string, unknown> = {}): Promise<Vm> =>
    p.api.post<Vm>('/vms', {
      name,
      memoryMiB: 64,
      disks: [{ id: 'disk0', sizeMiB: 64, datastoreId: datastoreId }],
      ...extra,
    });
  let datastoreId = '';
  const eventsOf = async (id: string, type: string): Promise<Event[]> =>
    (await p.api.get<Event[]>(`/events?objectId=${id}&type=${type}`)).filter((e) => e.type === type);

  test('encrypt: a task, the key id recorded, an event with from → to, no key bytes anywhere', async () => {
    const ds = await p.api.get<{ id: string }[]>('/datastores');
    datastoreId = ds[0]?.id ?? '';
    assert.ok(datastoreId, 'the host offers a datastore');
    const web = await createVm('web-01', { tags: ['pci'] });
    assert.equal(web.encryption, null);

    const task = await sync('POST', `/vms/${web.id}/actions/encrypt`);
    assert.equal(task.state, 'succeeded', JSON.stringify(task.error));
    const after = await vm(web.id);
    assert.ok(after.encryption, 'the VM is encrypted');
    assert.equal(after.encryption.providerId, p.keyProviderId);
    assert.equal(after.locked, false);

    const [ev] = await eventsOf(web.id, 'vm.encrypted');
    assert.ok(ev, 'a vm.encrypted event');
    assert.deepEqual(
      ev.changes.find((c) => c.path === 'encryption'),
      { path: 'encryption', from: null, to: 'VM Encryption Policy' },
    );
    assert.deepEqual(
      ev.changes.find((c) => c.path === 'keyId'),
      {
        path: 'keyId',
        from: null,
        to: after.encryption.keyId,
      },
    );

    // The key itself, fetched from the key server the way the manager does.
    const kek = await p.manager.services.keyProviders.fetchKek(
      after.encryption.providerId,
      after.encryption.keyId,
    );
    assert.equal(kek.length, 32);
    assertNowhere(filesUnder(p.managerDir), kek, 'manager data directory');
    for (const a of p.agents) assertNowhere(filesUnder(a.dataDir), kek, 'agent data directory');
    const events = await p.api.get<Event[]>('/events?limit=1000');
    for (const form of keyForms(kek)) assert.ok(!JSON.stringify(events).includes(form.toString('latin1')));

    // Powering on pushes the key; the host runs it.
    const on = await sync('POST', `/vms/${web.id}/actions/power-on`);
    assert.equal(on.state, 'succeeded', JSON.stringify(on.error));
  });

  test('bad input changes nothing: unknown policy, encrypting twice, deep rekey while running', async () => {
    const web = (await p.api.get<Vm[]>('/vms?name=web-01'))[0] as Vm;
    let r = await p.request<ErrorAnswer>(p.adminToken, 'POST', `/vms/${web.id}/actions/encrypt`, {
      policyId: 'nope',
    });
    assert.equal(r.status, 404);
    r = await p.request<ErrorAnswer>(p.adminToken, 'POST', `/vms/${web.id}/actions/encrypt`, {});
    assert.equal(r.status, 409);
    assert.equal(r.body.code, 'HS_ERR_CONFLICT');
    const t = await sync('POST', `/vms/${web.id}/actions/rekey`, { deep: true });
    assert.equal(t.state, 'failed');
    assert.equal(t.error?.code, 'HS_ERR_CONFLICT');
    assert.deepEqual((await vm(web.id)).encryption, web.encryption);
  });

  test('shallow rekey while running: a new KEK, the old key id → the new one in the event', async () => {
    const web = (await p.api.get<Vm[]>('/vms?name=web-01'))[0] as Vm;
    assert.equal(web.state, 'running');
    const t = await sync('POST', `/vms/${web.id}/actions/rekey`, {});
    assert.equal(t.state, 'succeeded', JSON.stringify(t.error));
    const after = await vm(web.id);
    assert.notEqual(after.encryption?.keyId, web.encryption?.keyId);
    const evs = await eventsOf(web.id, 'vm.rekeyed');
    const change = { path: 'keyId', from: web.encryption?.keyId, to: after.encryption?.keyId };
    assert.ok(
      evs.some(
        (e) => e.result === 'success' && e.changes.some((c) => JSON.stringify(c) === JSON.stringify(change)),
      ),
      JSON.stringify(evs),
    );
    // The refused deep rekey of the previous test is an event too, marked failed.
    assert.ok(evs.some((e) => e.result === 'failure' && /power it off/.test(e.message)));
    // Deep rekey once powered off: again a new KEK.
    assert.equal((await sync('POST', `/vms/${web.id}/actions/power-off`)).state, 'succeeded');
    const deep = await sync('POST', `/vms/${web.id}/actions/rekey`, { deep: true });
    assert.equal(deep.state, 'succeeded', JSON.stringify(deep.error));
    assert.notEqual((await vm(web.id)).encryption?.keyId, after.encryption?.keyId);
  });

  test('rekey under another policy while running: the VM moves to it with a new KEK, never in clear', async () => {
    const web = (await p.api.get<Vm[]>('/vms?name=web-01'))[0] as Vm;
    assert.equal((await sync('POST', `/vms/${web.id}/actions/power-on`)).state, 'succeeded');
    const gold = await p.api.post<{ id: string; name: string }>('/encryption-policies', {
      name: 'Gold',
      description: 'a second policy',
    });
    const unknown = await p.request<ErrorAnswer>(p.adminToken, 'POST', `/vms/${web.id}/actions/rekey`, {
      policyId: 'no-such-policy',
    });
    assert.equal(unknown.status, 404);
    assert.deepEqual((await vm(web.id)).encryption, web.encryption, 'nothing changed');

    const t = await sync('POST', `/vms/${web.id}/actions/rekey`, { policyId: gold.id });
    assert.equal(t.state, 'succeeded', JSON.stringify(t.error));
    const after = await vm(web.id);
    assert.equal(after.encryption?.policyId, gold.id);
    assert.notEqual(after.encryption?.keyId, web.encryption?.keyId);
    assert.equal(after.state, 'running');
    const e = (await eventsOf(web.id, 'vm.rekeyed')).find((x) => x.result === 'success');
    assert.deepEqual(
      e?.changes
        .filter((c) => c.path === 'policyId' || c.path === 'keyId')
        .map((c) => [c.path, c.from, c.to]),
      [
        ['policyId', web.encryption?.policyId, gold.id],
        ['keyId', web.encryption?.keyId, after.encryption?.keyId],
      ],
    );
    // Its keys still open it: a power cycle fetches the new KEK.
    assert.equal((await sync('POST', `/vms/${web.id}/actions/power-off`)).state, 'succeeded');
    assert.equal((await sync('POST', `/vms/${web.id}/actions/power-on`)).state, 'succeeded');
    assert.equal((await sync('POST', `/vms/${web.id}/actions/power-off`)).state, 'succeeded');
  });

  test('clone of an encrypted VM: encrypted, with its own KEK', async () => {
    const web = (await p.api.get<Vm[]>('/vms?name=web-01'))[0] as Vm;
    const t = await sync('POST', `/vms/${web.id}/actions/clone`, { name: 'web-01-clone' });
    assert.equal(t.state, 'succeeded', JSON.stringify(t.error));
    const clone = (await p.api.get<Vm[]>('/vms?name=web-01-clone'))[0] as Vm;
    assert.ok(clone.encryption, 'the clone is encrypted');
    assert.notEqual(clone.encryption.keyId, web.encryption?.keyId);
    assert.equal((await sync('POST', `/vms/${clone.id}/actions/power-on`)).state, 'succeeded');
    assert.equal((await sync('POST', `/vms/${clone.id}/actions/power-off`)).state, 'succeeded');
  });

  test('create encrypted, add a disk (encrypted), decrypt', async () => {
    const db = await createVm('db-01', { encryptionPolicyId: 'VM Encryption Policy' });
    assert.ok(db.encryption, 'created encrypted');
    const grown = await p.api.patch<Vm>(`/vms/${db.id}`, {
      disks: [...db.config.disks, { id: 'disk1', sizeMiB: 32, datastoreId }],
    });
    assert.equal(grown.config.disks.length, 2);
    const t = await sync('POST', `/vms/${db.id}/actions/decrypt`);
    assert.equal(t.state, 'succeeded', JSON.stringify(t.error));
    assert.equal((await vm(db.id)).encryption, null);
    const [ev] = await eventsOf(db.id, 'vm.decrypted');
    assert.deepEqual(
      ev?.changes.find((c) => c.path === 'encryption'),
      {
        path: 'encryption',
        from: 'VM Encryption Policy',
        to: null,
      },
    );
  });

  test('a policy applied by tag: one task per VM, overall progress, only the tagged VMs', async () => {
    const a = await createVm('app-01', { tags: ['pci'] });
    const b = await createVm('app-02', { tags: ['pci'] });
    const c = await createVm('app-03', { tags: ['dev'] });
    const policy = await p.api.post<{ id: string }>('/encryption-policies', { name: 'PCI policy' });
    const t = await sync('POST', `/encryption-policies/${policy.id}/actions/apply`, { tag: 'pci' });
    assert.equal(t.state, 'succeeded', JSON.stringify(t.error));
    assert.equal(t.progress, 100);
    const result = t.result as { total: number; succeeded: number };
    assert.equal(result.total, 2, 'web-01 is already encrypted; app-03 is not tagged');
    assert.equal(result.succeeded, 2);
    assert.equal((await vm(a.id)).encryption?.policyId, policy.id);
    assert.equal((await vm(b.id)).encryption?.policyId, policy.id);
    assert.equal((await vm(c.id)).encryption, null);
    // A policy in use cannot be deleted.
    const del = await p.request<ErrorAnswer>(p.adminToken, 'DELETE', `/encryption-policies/${policy.id}`);
    assert.equal(del.status, 409);
  });

  test('No Cryptography Administrator: power and memory yes; every crypto operation 403 with an event', async () => {
    const web = (await p.api.get<Vm[]>('/vms?name=web-01'))[0] as Vm;
    const plain = (await p.api.get<Vm[]>('/vms?name=app-03'))[0] as Vm;
    const nca = await p.userClient('No Cryptography Administrator', 'nca');
    // Allowed:
    assert.equal((await sync('POST', `/vms/${web.id}/actions/power-on`, {}, nca.token)).state, 'succeeded');
    assert.equal((await sync('POST', `/vms/${web.id}/actions/power-off`, {}, nca.token)).state, 'succeeded');
    const mem = await p.request<Vm>(nca.token, 'PATCH', `/vms/${web.id}`, { memoryMiB: 96 });
    assert.equal(mem.status, 200, JSON.stringify(mem.body));
    // Refused:
    const refused: [string, string, unknown][] = [
      ['POST', `/vms/${plain.id}/actions/encrypt`, {}],
      ['POST', `/vms/${web.id}/actions/decrypt`, {}],
      ['POST', `/vms/${web.id}/actions/rekey`, {}],
      ['POST', `/vms/${web.id}/actions/clone`, { name: 'nca-clone' }],
      ['POST', `/vms/${web.id}/actions/crypto-shred`, { confirm: 'web-01' }],
      ['POST', '/encryption-policies', { name: 'nca policy' }],
      ['GET', '/key-providers', undefined],
      ['GET', `/vms/${web.id}/console`, undefined],
      ['POST', '/vms', { name: 'nca-enc', memoryMiB: 64, encryptionPolicyId: 'VM Encryption Policy' }],
      [
        'PATCH',
        `/vms/${web.id}`,
        { disks: [...web.config.disks, { id: 'disk9', sizeMiB: 16, datastoreId }] },
      ],
    ];
    for (const [method, path, body] of refused) {
      const r = await p.request<ErrorAnswer>(nca.token, method, path, body);
      assert.equal(r.status, 403, `${method} ${path}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.code, 'HS_ERR_AUTH_FORBIDDEN');
    }
    const denied = (await p.api.get<Event[]>('/events?type=access.denied&limit=1000')).filter(
      (e) => e.user === 'nca',
    );
    assert.ok(denied.length >= refused.length, `an access.denied event per refusal (${denied.length})`);
    // Nothing changed.
    assert.equal((await vm(plain.id)).encryption, null);
    assert.equal((await p.api.get<Vm[]>('/vms?name=nca-enc')).length, 0);
    assert.equal((await vm(web.id)).config.disks.length, 1);
    // The console of a plain VM is fine.
    assert.equal((await p.request(nca.token, 'GET', `/vms/${plain.id}/console`)).status, 200);
  });

  test('an agent restart forgets every key: the manager pushes them again (locked meanwhile)', async () => {
    const web = (await p.api.get<Vm[]>('/vms?name=web-01'))[0] as Vm;
    const agent = p.agents[0];
    assert.ok(agent);
    const port = Number(new URL(agent.address).port);
    await agent.server.close();
    const driver = SimDriver.open(agent.dataDir);
    assert.ok((await driver.neededKeys()).includes(`${web.encryption?.providerId}/${web.encryption?.keyId}`));
    assert.equal((await driver.runtime(web.id)).locked, true);
    agent.server = await startAgent({ dataDir: agent.dataDir, listen: { host: '127.0.0.1', port }, driver });
    // The health loop (200 ms here) delivers the key.
    for (let i = 0; i < 100 && (await driver.neededKeys()).length > 0; i++)
      await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(await driver.neededKeys(), []);
    assert.equal((await sync('POST', `/vms/${web.id}/actions/power-on`)).state, 'succeeded');
    assert.equal((await sync('POST', `/vms/${web.id}/actions/power-off`)).state, 'succeeded');
  });

  test('key provider down: the VM is locked with the reason and an event; unlock once it is back', async () => {
    const web = (await p.api.get<Vm[]>('/vms?name=web-01'))[0] as Vm;
    const kms = p.kms;
    assert.ok(kms);
    const kmsDir = kms.dataDir.dir;
    const kmsPort = kms.port;
    await kms.close();
    // Restart the agent so it no longer holds the key.
    const agent = p.agents[0];
    assert.ok(agent);
    const port = Number(new URL(agent.address).port);
    await agent.server.close();
    agent.server = await startAgent({
      dataDir: agent.dataDir,
      listen: { host: '127.0.0.1', port },
      driver: SimDriver.open(agent.dataDir),
    });
    let locked: Vm = web;
    for (let i = 0; i < 150 && (!locked.locked || (await eventsOf(web.id, 'vm.locked')).length === 0); i++) {
      await new Promise((r) => setTimeout(r, 100));
      locked = await vm(web.id);
    }
    assert.equal(locked.locked, true);
    assert.match(locked.lockedReason ?? '', /.+/);
    const [lockedEvent] = await eventsOf(web.id, 'vm.locked');
    assert.match(lockedEvent?.message ?? '', /hyperseal vm unlock web-01/);
    const on = await sync('POST', `/vms/${web.id}/actions/power-on`);
    assert.equal(on.state, 'failed');
    assert.equal(on.error?.code, 'HS_ERR_VM_LOCKED');
    // Encrypting another VM fails clearly and changes nothing.
    const plain = (await p.api.get<Vm[]>('/vms?name=app-03'))[0] as Vm;
    const enc = await sync('POST', `/vms/${plain.id}/actions/encrypt`);
    assert.equal(enc.state, 'failed');
    assert.equal(enc.error?.code, 'HS_ERR_KEY_PROVIDER_UNAVAILABLE');
    assert.equal((await vm(plain.id)).encryption, null);

    // Back on the same address: unlock.
    restartedKms = await startKms({ dataDir: kmsDir, port: kmsPort });
    const r = await p.request<Vm>(p.adminToken, 'POST', `/vms/${web.id}/actions/unlock`, {});
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.locked, false);
    assert.equal(r.body.lockedReason, null);
    assert.equal((await eventsOf(web.id, 'vm.unlocked')).length >= 1, true);
    assert.equal((await sync('POST', `/vms/${web.id}/actions/power-on`)).state, 'succeeded');
    assert.equal((await sync('POST', `/vms/${web.id}/actions/power-off`)).state, 'succeeded');
  });

  test('crypto-shred: needs the exact name; destroys the KEK; the VM stays locked for good', async () => {
    const clone = (await p.api.get<Vm[]>('/vms?name=web-01-clone'))[0] as Vm;
    // Locked since the outage of the previous test (the health loop retries every 30 s): unlock.
    assert.equal((await p.request(p.adminToken, 'POST', `/vms/${clone.id}/actions/unlock`, {})).status, 200);
    let r = await p.request<ErrorAnswer>(p.adminToken, 'POST', `/vms/${clone.id}/actions/crypto-shred`, {
      confirm: 'web-01',
    });
    assert.equal(r.status, 400);
    assert.equal((await vm(clone.id)).locked, false);
    r = await p.request<ErrorAnswer>(p.adminToken, 'POST', `/vms/${clone.id}/actions/crypto-shred`, {
      confirm: 'web-01-clone',
    });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const shredded = await vm(clone.id);
    assert.equal(shredded.locked, true);
    const enc = shredded.encryption;
    assert.ok(enc);
    await assert.rejects(p.manager.services.keyProviders.fetchKek(enc.providerId, enc.keyId));
    const [ev] = await eventsOf(clone.id, 'vm.crypto-shredded');
    assert.equal(ev?.severity, 'critical');
    const on = await sync('POST', `/vms/${clone.id}/actions/power-on`);
    assert.equal(on.state, 'failed');
    assert.equal(on.error?.code, 'HS_ERR_VM_LOCKED');
    const unlock = await p.request<ErrorAnswer>(p.adminToken, 'POST', `/vms/${clone.id}/actions/unlock`, {});
    assert.equal(unlock.status, 409);
    assert.equal(unlock.body.code, 'HS_ERR_VM_LOCKED');
  });
});
