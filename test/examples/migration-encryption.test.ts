// examples/migration-encryption.ts against the demo data of `up --demo` (two sim hosts):
// the `frontend` group gets migrationEncryption required, and one VM moves to the other
// host encrypted — cold when stopped, live when it runs — with its vm.migrated event.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { DemoPlatform } from '../support/examples.js';
import { runExample, runExampleOk, startDemoPlatform } from '../support/examples.js';

describe('example migration-encryption', { concurrency: 1 }, () => {
  let demo: DemoPlatform;
  before(async () => {
    demo = await startDemoPlatform();
  });
  after(async () => {
    await demo?.close();
  });
  const migrated = async (name: string): Promise<{ result: string; changes: unknown }[]> => {
    const vm = await demo.vm(name);
    return (await demo.platform.api.listEvents({ objectId: vm.id, type: 'vm.migrated' })).filter(
      (e) => e.type === 'vm.migrated',
    );
  };

  test('the group requires encrypted migration; its first VM moves to the other host, encrypted', async () => {
    const [h1, h2] = demo.platform.agents;
    const before = await demo.vm('web-01');
    assert.equal(before.hostId, h1?.hostId);
    const out = await runExampleOk('migration-encryption', [], demo.credentials);
    for (const name of ['web-01', 'web-02']) {
      assert.equal((await demo.vm(name)).config.migrationEncryption, 'required', name);
      assert.match(out, new RegExp(`${name}: opportunistic → required`));
    }
    for (const name of ['db-01', 'legacy-01']) {
      assert.equal(
        (await demo.vm(name)).config.migrationEncryption,
        undefined,
        `${name} is not in the group`,
      );
    }
    const after = await demo.vm('web-01');
    assert.equal(after.hostId, h2?.hostId, 'web-01 is on the other host');
    assert.equal(after.state, 'stopped');
    const events = await migrated('web-01');
    assert.equal(events.length, 1);
    assert.equal(events[0]?.result, 'success');
    assert.deepEqual(events[0]?.changes, [
      { path: 'hostId', from: h1?.hostId, to: h2?.hostId },
      { path: 'encrypted', from: null, to: true },
    ]);
    assert.match(
      out,
      /Migrated web-01 from host-1 to host-2 \(cold: it is stopped, encrypted, aes-256-gcm\)/,
    );
    assert.match(out, /Event #\d+ vm\.migrated \(success\)/);
  });

  test('a running VM of the group migrates live to the host named', async () => {
    const api = demo.platform.api;
    const [h1, h2] = demo.platform.agents;
    const web2 = await demo.vm('web-02');
    assert.equal(web2.hostId, h1?.hostId);
    await api.run(api.powerOnVm(web2.id));
    const out = await runExampleOk(
      'migration-encryption',
      ['--vm', 'web-02', '--to', 'host-2'],
      demo.credentials,
    );
    assert.match(out, /web-02: already required/);
    assert.match(out, /Migrated web-02 from host-1 to host-2 \(live, encrypted, aes-256-gcm\)/);
    const after = await demo.vm('web-02');
    assert.equal(after.hostId, h2?.hostId);
    assert.equal(after.state, 'running');
    assert.equal((await migrated('web-02'))[0]?.result, 'success');
  });

  test('failures exit non-zero with the code: an empty group, a VM already on the host', async () => {
    const empty = await runExample('migration-encryption', ['--group', 'nobody'], demo.credentials);
    assert.equal(empty.code, 1);
    assert.equal(empty.stderr, "migration-encryption: no VM is tagged 'nobody' [HS_ERR_NOT_FOUND]\n");
    const same = await runExample(
      'migration-encryption',
      ['--vm', 'web-01', '--to', 'host-2'],
      demo.credentials,
    );
    assert.equal(same.code, 2);
    assert.match(
      same.stderr,
      /^migration-encryption: VM web-01 is already on host \S+ \[HS_ERR_INVALID_ARGUMENT\]\n$/,
    );
    assert.equal((await migrated('web-01')).length, 1, 'no new migration');
  });
});
