// The enhanced-logging example runs against a real manager (simulated hosts, the demo
// data of `up --demo`) and shows the two actionable records and the alert the PCI rule raised.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { DemoPlatform } from '../support/examples.js';
import { runExampleOk, startDemoPlatform } from '../support/examples.js';

let demo: DemoPlatform;
before(async () => {
  demo = await startDemoPlatform();
});
after(async () => {
  await demo?.close();
});

test('enhanced-logging demo: memory and PCI → Non-PCI are actionable records, and the rule fires', async () => {
  const out = await runExampleOk('enhanced-logging-demo', [], demo.credentials);
  assert.match(out, /vm\.reconfigured .*memoryMiB 6144 → 10240/);
  assert.match(out, /vm\.reconfigured .*nics\[nic0\]\.network 'PCI' → 'Non-PCI'/);
  assert.match(out, /alert\.raised .*PCI NIC moved out of PCI/);
  const api = demo.platform.api;
  const vm = await demo.vm('pci-app-01');
  assert.equal(vm.config.memoryMiB, 10240);
  assert.equal(vm.config.nics[0]?.network, 'Non-PCI');
  const alerts = await api.listEvents({ type: 'alert.raised' });
  assert.equal(alerts.length, 1, 'exactly one alert: the memory change alone matches no rule');
  assert.deepEqual(alerts[0]?.changes, [{ path: 'nics[nic0].network', from: 'PCI', to: 'Non-PCI' }]);
  assert.equal(alerts[0]?.severity, 'critical');
});
