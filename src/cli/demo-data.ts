/**
 * The data `hyperseal up --demo` creates, in one place so that the tests of examples/
 * run against exactly what the demo offers: the PCI and Non-PCI networks of the
 * enhanced-logging demo and four small VMs spread over the hosts —
 *
 *   web-01     EFI   PCI      tags demo, pci, frontend
 *   db-01      EFI   PCI      tags demo, pci
 *   web-02     EFI   Non-PCI  tags demo, frontend
 *   legacy-01  BIOS  Non-PCI  tags demo
 *
 * `pci` is what examples/encrypt-pci-vms.ts encrypts, `frontend` the group whose
 * migration encryption examples/migration-encryption.ts sets, legacy-01 the BIOS VM
 * examples/secure-boot-efi-vms.ts reports. Idempotent: what exists already is kept.
 */
import { isHypersealError } from '../errors.js';
import type { Actor } from '../manager/events.js';
import type { Vm } from '../manager/model.js';
import type { ManagerServices } from '../manager/services.js';

export const DEMO_NETWORKS = ['PCI', 'Non-PCI'] as const;

export interface DemoVm {
  name: string;
  firmware: 'efi' | 'bios';
  network: (typeof DEMO_NETWORKS)[number];
  tags: string[];
  /** Index into the host list (wrapped when there are fewer hosts). */
  host: number;
}

export const DEMO_VMS: readonly DemoVm[] = [
  { name: 'web-01', firmware: 'efi', network: 'PCI', tags: ['demo', 'pci', 'frontend'], host: 0 },
  { name: 'db-01', firmware: 'efi', network: 'PCI', tags: ['demo', 'pci'], host: 1 },
  { name: 'web-02', firmware: 'efi', network: 'Non-PCI', tags: ['demo', 'frontend'], host: 0 },
  { name: 'legacy-01', firmware: 'bios', network: 'Non-PCI', tags: ['demo'], host: 1 },
];

/** Creates the demo networks and VMs that do not exist yet; returns the demo VMs. */
export async function seedDemo(
  services: ManagerServices,
  hostIds: readonly string[],
  actor: Actor = { user: 'system', sourceIp: null },
): Promise<Vm[]> {
  if (hostIds.length === 0) throw new Error('seedDemo needs at least one host');
  for (const net of DEMO_NETWORKS) {
    await services.createNetwork(actor, net).catch((err: unknown) => {
      if (!isHypersealError(err, 'HS_ERR_CONFLICT')) throw err; // it exists: fine
    });
  }
  const vms: Vm[] = [];
  for (const d of DEMO_VMS) {
    const existing = (await services.vms.list({ limit: 1, offset: 0, name: d.name }))[0];
    vms.push(
      existing ??
        (await services.vms.create(actor, {
          name: d.name,
          hostId: hostIds[d.host % hostIds.length] ?? '',
          memoryMiB: 128,
          firmware: d.firmware,
          nics: [{ id: 'nic0', network: d.network }],
          tags: d.tags,
        })),
    );
  }
  return vms;
}
