/**
 * The enhanced-logging demo (vSphere 6.5's classic): add memory to a VM and move its NIC
 * from the PCI network to Non-PCI, then show the two actionable records and the alert a
 * rule raised for the PCI move.
 *
 * Run against `npm run up -- --demo` (or any manager):  node dist/examples/enhanced-logging-demo.js
 * Credentials: $HYPERSEAL_CREDENTIALS or ./.hyperseal/credentials.json (written by `up`).
 */
import { ApiClient } from '../src/sdk/client.js';

interface Vm {
  id: string;
  name: string;
  config: { memoryMiB: number; nics: { id: string; network: string }[] };
}
interface Event {
  seq: number;
  type: string;
  message: string;
  changes: { path: string; from: unknown; to: unknown }[];
}

const VM_NAME = process.env.DEMO_VM ?? 'pci-app-01';

async function main(): Promise<void> {
  const api = ApiClient.fromCredentials();
  try {
    // 1. The stage: two networks, a VM on PCI with 6 GiB, and a rule watching PCI moves.
    const networks = await api.get<{ name: string }[]>('/networks');
    for (const name of ['PCI', 'Non-PCI']) {
      if (!networks.some((n) => n.name === name)) await api.post('/networks', { name });
    }
    let vm = (await api.get<Vm[]>(`/vms?name=${encodeURIComponent(VM_NAME)}`))[0];
    vm ??= await api.post<Vm>('/vms', {
      name: VM_NAME,
      memoryMiB: 6144,
      nics: [{ id: 'nic0', network: 'PCI' }],
      tags: ['pci'],
    });
    const rules = await api.get<{ name: string }[]>('/alert-rules');
    if (!rules.some((r) => r.name === 'PCI NIC moved out of PCI')) {
      await api.post('/alert-rules', {
        name: 'PCI NIC moved out of PCI',
        severity: 'critical',
        match: {
          types: ['vm.reconfigured'],
          changes: [{ path: 'nics[*].network', from: { glob: 'PCI*' }, to: { notGlob: 'PCI*' } }],
        },
        actions: { event: true },
      });
    }
    const before = (await api.get<Event[]>('/events?limit=1'))[0]?.seq ?? -1;

    // 2. The two changes an operator makes.
    await api.patch(`/vms/${vm.id}`, { memoryMiB: 10240 });
    await api.patch(`/vms/${vm.id}`, {
      nics: vm.config.nics.map((n) => (n.id === 'nic0' ? { ...n, network: 'Non-PCI' } : n)),
    });

    // 3. What the platform recorded: two actionable records and the alert.
    await new Promise((r) => setTimeout(r, 200));
    const events = (await api.get<Event[]>('/events?limit=50')).filter((e) => e.seq > before).reverse();
    for (const e of events.filter((x) => x.type === 'vm.reconfigured' || x.type === 'alert.raised')) {
      console.log(`${e.type.padEnd(16)} ${e.message}`);
      for (const c of e.changes)
        console.log(`${' '.repeat(17)}${c.path}: ${JSON.stringify(c.from)} → ${JSON.stringify(c.to)}`);
    }
  } finally {
    api.close();
  }
}

await main();
