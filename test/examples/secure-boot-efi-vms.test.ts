// examples/secure-boot-efi-vms.ts against the demo data of `up --demo` (two sim hosts):
// Secure Boot and a vTPM on every EFI VM, the BIOS VM reported and left alone; a running
// VM gets the change at its next power-on.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { DemoPlatform } from '../support/examples.js';
import { runExampleOk, startDemoPlatform } from '../support/examples.js';

describe('example secure-boot-efi-vms', { concurrency: 1 }, () => {
  let demo: DemoPlatform;
  before(async () => {
    demo = await startDemoPlatform();
  });
  after(async () => {
    await demo?.close();
  });
  const efi = ['db-01', 'web-01', 'web-02'];

  test('EFI VMs get Secure Boot and a vTPM (events recorded); the BIOS VM is listed, unchanged', async () => {
    const api = demo.platform.api;
    // One EFI VM runs: its change waits for its next power-on.
    await api.run(api.powerOnVm((await demo.vm('web-02')).id));
    const legacyBefore = await demo.vm('legacy-01');
    const out = await runExampleOk('secure-boot-efi-vms', [], demo.credentials);
    for (const name of efi) {
      const vm = await demo.vm(name);
      assert.equal(vm.config.secureBoot, true, `${name}: Secure Boot`);
      assert.equal(vm.config.vtpm, true, `${name}: vTPM`);
      const enabled = await api.listEvents({ objectId: vm.id, type: 'vm.secure-boot-enabled' });
      assert.equal(enabled.filter((e) => e.type === 'vm.secure-boot-enabled').length, 1, name);
      assert.match(out, new RegExp(`\\n  ${name}: enabled`));
    }
    assert.equal((await demo.vm('web-02')).pendingRestart, true);
    assert.match(out, /web-02: enabled \(it runs: takes effect at its next power-on\)/);
    assert.match(out, /BIOS VMs \(1\): no Secure Boot possible, left unchanged\n {2}legacy-01\n/);
    const legacy = await demo.vm('legacy-01');
    assert.deepEqual(legacy.config, legacyBefore.config, 'the BIOS VM is not touched');
    assert.equal(legacy.version, legacyBefore.version);
  });

  test('run again, it changes nothing: every EFI VM is already on', async () => {
    const versions = await Promise.all(efi.map(async (n) => (await demo.vm(n)).version));
    const out = await runExampleOk('secure-boot-efi-vms', [], demo.credentials);
    for (const name of efi) assert.match(out, new RegExp(`${name}: already on`));
    assert.deepEqual(await Promise.all(efi.map(async (n) => (await demo.vm(n)).version)), versions);
  });
});
