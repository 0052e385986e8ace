/** Fixtures for the posture tests (a VM as the API shows it). */
import type { Vm } from '../sdk/api.gen.js';

/** A stopped, plain EFI VM on host h1 with one NIC on PCI and the tag pci, unless told otherwise. */
export function testVm(name: string, over: Partial<Vm> = {}, config: Partial<Vm['config']> = {}): Vm {
  return {
    id: `id-${name}`,
    name,
    hostId: 'h1',
    state: 'stopped',
    simulated: true,
    pendingRestart: false,
    encryption: null,
    locked: false,
    lockedReason: null,
    version: 1,
    createdAt: 0,
    updatedAt: 0,
    ...over,
    config: {
      cpus: 1,
      memoryMiB: 128,
      firmware: 'efi',
      secureBoot: false,
      disks: [],
      nics: [{ id: 'nic0', network: 'PCI' }],
      tags: ['pci'],
      ...config,
    },
  };
}
