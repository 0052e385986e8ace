// examples/posture-demo.yaml against exactly what `up --demo` seeds: the dry run shows the
// plan and changes nothing; apply makes it so (the pci VMs encrypted and migrating only
// encrypted, the web servers with Secure Boot and a vTPM, the alert rules there); a second
// dry run plans nothing.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { DemoPlatform } from '../support/examples.js';
import { EXAMPLES_DIR, runCli, startDemoPlatform } from '../support/examples.js';

const POSTURE = join(EXAMPLES_DIR, '..', '..', 'examples', 'posture-demo.yaml');

describe('examples/posture-demo.yaml', { concurrency: 1 }, () => {
  let demo: DemoPlatform;
  before(async () => {
    demo = await startDemoPlatform({ kms: true });
  });
  after(async () => {
    await demo?.close();
  });

  test('--dry-run prints the plan and changes nothing', async () => {
    const api = demo.platform.api;
    const before = await api.listVms();
    const events = (await api.listEvents({ limit: 1 }))[0]?.seq;
    const r = await runCli(['apply', '-f', POSTURE, '--dry-run'], demo.credentials);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /vm web-01\s+secureBoot\s+false → true/);
    assert.match(r.stdout, /vm db-01\s+encryption\s+none → VM Encryption Policy/);
    assert.match(r.stdout, /PCI NIC moved out of PCI/);
    assert.doesNotMatch(r.stdout, /legacy-01\s+secureBoot/, 'legacy-01 is not a web server');
    assert.deepEqual(await api.listVms(), before);
    const newer = (await api.listEvents({ limit: 20 })).filter(
      (e) => e.seq > (events ?? -1) && e.user !== 'system',
    );
    assert.deepEqual(newer, [], 'a dry run records no change');
  });

  test('apply carries it out; a second dry run plans nothing', async () => {
    const api = demo.platform.api;
    const r = await runCli(['apply', '-f', POSTURE], demo.credentials);
    assert.equal(r.code, 0, `${r.stderr}\n${r.stdout}`);
    for (const name of ['web-01', 'db-01']) {
      const vm = await demo.vm(name);
      assert.notEqual(vm.encryption, null, `${name} encrypted`);
      assert.equal(vm.config.migrationEncryption, 'required', name);
    }
    for (const name of ['web-01', 'web-02']) {
      const vm = await demo.vm(name);
      assert.equal(vm.config.secureBoot, true, name);
      assert.equal(vm.config.vtpm, true, name);
    }
    const legacy = await demo.vm('legacy-01');
    assert.equal(legacy.encryption, null);
    assert.equal(legacy.config.secureBoot, false);
    const rules = (await api.listAlertRules()).map((x) => x.name).sort();
    assert.deepEqual(rules, ['PCI NIC moved out of PCI', 'Secure Boot turned off']);
    const again = await runCli(['apply', '-f', POSTURE, '--dry-run'], demo.credentials);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /nothing to change/i);
  });
});
