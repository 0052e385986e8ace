// examples/encrypt-pci-vms.ts against the demo data of `up --demo` (two sim hosts, the
// embedded key server never backed up, as `up` leaves it): every VM tagged pci gets
// encrypted, one is decrypted again, running VMs are skipped unless --power-off.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { DemoPlatform } from '../support/examples.js';
import { runExample, runExampleOk, startDemoPlatform } from '../support/examples.js';

describe('example encrypt-pci-vms', { concurrency: 1 }, () => {
  let demo: DemoPlatform;
  before(async () => {
    demo = await startDemoPlatform({ kms: true, kmsBackedUp: false });
  });
  after(async () => {
    await demo?.close();
  });
  const pci = ['db-01', 'web-01'];
  const others = ['legacy-01', 'web-02'];
  const events = async (name: string, type: string): Promise<number> =>
    (await demo.platform.api.listEvents({ objectId: (await demo.vm(name)).id, type })).filter(
      (e) => e.type === type && e.result === 'success',
    ).length;

  test('a never backed-up key server: exits non-zero with the code and encrypts nothing', async () => {
    const r = await runExample('encrypt-pci-vms', [], demo.credentials);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, /^encrypt-pci-vms: .*never been backed up.* \[HS_ERR_KMS_NOT_BACKED_UP\]\n$/);
    for (const name of [...pci, ...others]) assert.equal((await demo.vm(name)).encryption, null, name);
  });

  test('encrypts every pci VM under the default key provider, then decrypts the one named', async () => {
    const out = await runExampleOk(
      'encrypt-pci-vms',
      ['--accept-no-backup', '--decrypt', 'web-01'],
      demo.credentials,
    );
    assert.match(out, /VMs tagged 'pci': db-01, web-01/);
    assert.match(out, /db-01: encrypted, its KEK \S+ is on key provider embedded/);
    assert.match(out, /Decrypted web-01/);
    const db = await demo.vm('db-01');
    assert.equal(db.encryption?.providerId, demo.platform.keyProviderId);
    assert.ok(db.encryption?.keyId, 'the KEK id is recorded');
    assert.equal(db.config.migrationEncryption, 'required');
    const web = await demo.vm('web-01');
    assert.equal(web.encryption, null, 'web-01 was decrypted again');
    assert.equal(await events('web-01', 'vm.encrypted'), 1);
    assert.equal(await events('web-01', 'vm.decrypted'), 1);
    assert.equal(await events('db-01', 'vm.encrypted'), 1);
    for (const name of others) {
      assert.equal((await demo.vm(name)).encryption, null, `${name} is not tagged pci: left plain`);
    }
  });

  test('a running VM is skipped and named; with --power-off it is encrypted and runs again', async () => {
    const api = demo.platform.api;
    const web = await demo.vm('web-01');
    await api.run(api.powerOnVm(web.id));
    // db-01 is already encrypted: skipped; it is then the one decrypted.
    const out = await runExampleOk('encrypt-pci-vms', [], demo.credentials);
    assert.match(out, /web-01: skipped, it is running \(it must be powered off; pass --power-off\)/);
    assert.match(out, /db-01: already encrypted/);
    assert.match(out, /Decrypted db-01/);
    assert.equal((await demo.vm('web-01')).encryption, null);
    assert.equal((await demo.vm('web-01')).state, 'running');
    assert.equal((await demo.vm('db-01')).encryption, null);

    // No VM is encrypted any more: the never backed-up key server needs the confirmation again.
    await runExampleOk(
      'encrypt-pci-vms',
      ['--power-off', '--decrypt', 'db-01', '--accept-no-backup'],
      demo.credentials,
    );
    const after = await demo.vm('web-01');
    assert.ok(after.encryption, 'web-01 is encrypted');
    assert.equal(after.state, 'running', 'and powered on again');
    assert.equal(await events('web-01', 'vm.powered-off'), 1);
    assert.equal((await demo.vm('db-01')).encryption, null, 'db-01 encrypted, then decrypted as asked');
    assert.equal(await events('db-01', 'vm.encrypted'), 2);
  });
});
