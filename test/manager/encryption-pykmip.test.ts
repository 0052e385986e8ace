// The same encryption flows with an independent key manager as the provider: a real
// PyKMIP 0.10 server (Debian's python3-pykmip), added through the API like any KMIP 1.1
// key manager. Encrypt, power on (key delivered), shallow rekey, clone (own KEK), decrypt
// and crypto-shred, each checked against PyKMIP itself (the KEK exists there, is active,
// and is gone after the shred).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Vm } from '../../src/manager/model.js';
import type { Task } from '../../src/manager/tasks.js';
import type { TestPlatform } from '../support/manager.js';
import { startTestPlatform, useTempConfigHome } from '../support/manager.js';
import type { PyKmipServer } from '../support/pykmip.js';
import { pykmipAvailable, startPyKmipWithIdentities } from '../support/pykmip.js';

const SKIP = pykmipAvailable() ? false : '/usr/bin/python3 cannot import kmip (install python3-pykmip)';

describe('VM encryption with PyKMIP as the key provider', { skip: SKIP, concurrency: 1 }, () => {
  let restoreConfig: () => void;
  let dir: string;
  let server: PyKmipServer;
  let p: TestPlatform;
  let providerId: string;
  let vm: Vm;

  before(async () => {
    restoreConfig = useTempConfigHome();
    dir = mkdtempSync(join(tmpdir(), 'hs-enc-pykmip-'));
    const started = await startPyKmipWithIdentities(dir);
    server = started.server;
    const { ca, client } = started;
    p = await startTestPlatform({});
    const provider = await p.api.post<{ id: string; isDefault: boolean }>('/key-providers', {
      name: 'pykmip',
      servers: [{ host: server.host, port: server.port }],
      caPem: ca.certPem,
      clientCertPem: client.certPem,
      clientKeyPem: client.keyPem,
    });
    assert.equal(provider.isDefault, true, 'the first provider is the default');
    providerId = provider.id;
  });
  after(async () => {
    await p?.close();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
    restoreConfig();
  });

  const sync = async (path: string, body: unknown = {}): Promise<Task> => {
    const r = await p.request<Task>(p.adminToken, 'POST', `${path}?sync=true`, body);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.state, 'succeeded', JSON.stringify(r.body.error));
    return r.body;
  };
  const get = (id: string): Promise<Vm> => p.api.get<Vm>(`/vms/${id}`);

  test('encrypt, power on, rekey, clone, decrypt', async () => {
    const ds = await p.api.get<{ id: string }[]>('/datastores');
    vm = await p.api.post<Vm>('/vms', {
      name: 'pyk-01',
      memoryMiB: 64,
      disks: [{ id: 'disk0', sizeMiB: 32, datastoreId: ds[0]?.id }],
    });
    await sync(`/vms/${vm.id}/actions/encrypt`);
    const enc = (await get(vm.id)).encryption;
    assert.ok(enc);
    assert.equal(enc.providerId, providerId);
    // The KEK is a real 256-bit key on PyKMIP.
    const kek = await p.manager.services.keyProviders.fetchKek(enc.providerId, enc.keyId);
    assert.equal(kek.length, 32);
    kek.fill(0);

    await sync(`/vms/${vm.id}/actions/power-on`);
    await sync(`/vms/${vm.id}/actions/rekey`);
    const rekeyed = (await get(vm.id)).encryption;
    assert.notEqual(rekeyed?.keyId, enc.keyId);
    await sync(`/vms/${vm.id}/actions/power-off`);

    const clone = await sync(`/vms/${vm.id}/actions/clone`, { name: 'pyk-02' });
    const cloneId = (clone.result as { vmId: string }).vmId;
    const cloneEnc = (await get(cloneId)).encryption;
    assert.ok(cloneEnc);
    assert.notEqual(cloneEnc.keyId, rekeyed?.keyId);

    await sync(`/vms/${vm.id}/actions/decrypt`);
    assert.equal((await get(vm.id)).encryption, null);
  });

  test('crypto-shred destroys the KEK on PyKMIP', async () => {
    const clone = (await p.api.get<Vm[]>('/vms?name=pyk-02'))[0] as Vm;
    const enc = clone.encryption;
    assert.ok(enc);
    const r = await p.request<Vm>(p.adminToken, 'POST', `/vms/${clone.id}/actions/crypto-shred`, {
      confirm: 'pyk-02',
    });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    await assert.rejects(p.manager.services.keyProviders.fetchKek(enc.providerId, enc.keyId), {
      code: 'HS_ERR_KEY_NOT_FOUND',
    });
  });
});
