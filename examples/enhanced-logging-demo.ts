/**
 * The enhanced-logging demo (vSphere 6.5's classic): add memory to a VM and move its NIC
 * from the PCI network to Non-PCI, then show the two actionable records and the alert a
 * rule raised for the PCI move.
 *
 * Shows: `api.updateVm` changes recorded as events with from → to changes, an alert rule
 * matching a change (`nics[*].network` from PCI* to anything else), and `api.listEvents`.
 *
 * Run:  npm run up -- --demo          (in another terminal: the manager, 2 hosts, demo VMs)
 *       node dist/examples/enhanced-logging-demo.js      ($DEMO_VM: the VM, default pci-app-01)
 *
 * It sets its own stage when missing: the PCI and Non-PCI networks, the VM (on PCI, 6 GiB)
 * and the alert rule. Credentials: $HYPERSEAL_CREDENTIALS or ./.hyperseal/credentials.json.
 */
import type { ApiClient, Event, Vm } from '../src/index.js';
import { runExample } from './lib.js';

const VM_NAME = process.env.DEMO_VM ?? 'pci-app-01';
const RULE = 'PCI NIC moved out of PCI';

await runExample('enhanced-logging-demo', async (api) => {
  // 1. The stage: two networks, a VM on PCI with 6 GiB, and a rule watching PCI moves.
  const vm = await stage(api);
  const before = (await api.listEvents({ limit: 1 }))[0]?.seq ?? -1;

  // 2. The two changes an operator makes.
  await api.updateVm(vm.id, { memoryMiB: 10240 });
  await api.updateVm(vm.id, {
    nics: vm.config.nics.map((n) => (n.id === 'nic0' ? { ...n, network: 'Non-PCI' } : n)),
  });

  // 3. What the platform recorded: two actionable records and the alert (raised just
  //    after the change it matched: wait for it a few seconds at most).
  let events: Event[] = [];
  for (const deadline = Date.now() + 5000; Date.now() < deadline;) {
    events = (await api.listEvents({ limit: 50 })).filter((e) => e.seq > before).reverse();
    if (events.some((e) => e.type === 'alert.raised')) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  for (const e of events.filter((x) => x.type === 'vm.reconfigured' || x.type === 'alert.raised')) {
    console.log(`${e.type.padEnd(16)} ${e.message}`);
    for (const c of e.changes)
      console.log(`${' '.repeat(17)}${c.path}: ${JSON.stringify(c.from)} → ${JSON.stringify(c.to)}`);
  }
});

/** Creates what the demo needs unless it exists; returns the VM. */
async function stage(api: ApiClient): Promise<Vm> {
  const networks = await api.listNetworks();
  for (const name of ['PCI', 'Non-PCI']) {
    if (!networks.some((n) => n.name === name)) await api.createNetwork({ name });
  }
  const vm =
    (await api.listVms({ name: VM_NAME }))[0] ??
    (await api.createVm({
      name: VM_NAME,
      memoryMiB: 6144,
      nics: [{ id: 'nic0', network: 'PCI' }],
      tags: ['pci'],
    }));
  const rules = await api.listAlertRules();
  if (!rules.some((r) => r.name === RULE)) {
    await api.createAlertRule({
      name: RULE,
      severity: 'critical',
      match: {
        types: ['vm.reconfigured'],
        changes: [{ path: 'nics[*].network', from: { glob: 'PCI*' }, to: { notGlob: 'PCI*' } }],
      },
      actions: { event: true },
    });
  }
  return vm;
}
