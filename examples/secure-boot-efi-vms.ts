/**
 * Turn on Secure Boot and a vTPM on every EFI VM; list the BIOS VMs, which cannot have
 * either (the manager refuses both on firmware bios) and are left as they are.
 *
 * Shows: reconfiguring VMs with `api.updateVm(id, {...})`, and that a change to a running
 * VM applies at its next power-on (`pendingRestart`).
 *
 * Run:  npm run up -- --demo          (in another terminal: the manager, 2 hosts, demo VMs)
 *       node dist/examples/secure-boot-efi-vms.js [--no-vtpm]
 *
 * Credentials: $HYPERSEAL_CREDENTIALS or ./.hyperseal/credentials.json (written by `up`).
 */
import { options, runExample } from './lib.js';

await runExample('secure-boot-efi-vms', async (api) => {
  const { values } = options(
    { 'no-vtpm': { type: 'boolean', default: false } },
    'node dist/examples/secure-boot-efi-vms.js [--no-vtpm]',
  );
  const vtpm = values['no-vtpm'] !== true;
  const vms = await api.listAllVms();

  // 1. EFI VMs: Secure Boot on (Microsoft's keys unless a key set is chosen), and a vTPM.
  const efi = vms.filter((vm) => vm.config.firmware === 'efi');
  console.log(`EFI VMs (${efi.length}): Secure Boot${vtpm ? ' and vTPM' : ''}`);
  for (const vm of efi) {
    if (vm.config.secureBoot && (!vtpm || vm.config.vtpm === true)) {
      console.log(`  ${vm.name}: already on`);
      continue;
    }
    const after = await api.updateVm(vm.id, { secureBoot: true, ...(vtpm ? { vtpm: true } : {}) });
    console.log(
      `  ${vm.name}: enabled${after.pendingRestart ? ' (it runs: takes effect at its next power-on)' : ''}`,
    );
  }

  // 2. BIOS VMs: reported only. Moving one to EFI means reinstalling its boot loader.
  const bios = vms.filter((vm) => vm.config.firmware === 'bios');
  console.log(`BIOS VMs (${bios.length}): no Secure Boot possible, left unchanged`);
  for (const vm of bios) console.log(`  ${vm.name}`);
});
