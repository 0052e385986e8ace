/**
 * Encrypt every VM tagged `pci`, then decrypt one of them again.
 *
 * Shows: finding VMs by tag, the encrypt and decrypt tasks with `api.run(…)` (they need
 * the VM powered off: a running VM is skipped and named, or with --power-off it is powered
 * off, encrypted and powered on again), and where each VM's key now lives (its KEK on a
 * key provider; the manager keeps only the key's id).
 *
 * Run:  npm run up -- --demo          (in another terminal: the manager, 2 hosts, demo VMs)
 *       node dist/examples/encrypt-pci-vms.js [--tag pci] [--decrypt VM] [--power-off] [--accept-no-backup]
 *
 * --decrypt VM         the VM to decrypt afterwards (default: the first encrypted one by name)
 * --accept-no-backup   a fresh `up` has never backed up its embedded key server, and the
 *                      manager refuses to encrypt the first VM until it is (HS_ERR_KMS_NOT_BACKED_UP,
 *                      docs/key-safety.md); this confirms you accept that for a demo.
 * Credentials: $HYPERSEAL_CREDENTIALS or ./.hyperseal/credentials.json (written by `up`).
 */
import type { ApiClient, Vm } from '../src/index.js';
import { HypersealError } from '../src/index.js';
import { options, progress, runExample, vmNamed } from './lib.js';

const USAGE =
  'node dist/examples/encrypt-pci-vms.js [--tag TAG] [--decrypt VM] [--power-off] [--accept-no-backup]';

await runExample('encrypt-pci-vms', async (api) => {
  const { values } = options(
    {
      tag: { type: 'string', default: 'pci' },
      decrypt: { type: 'string' },
      'power-off': { type: 'boolean', default: false },
      'accept-no-backup': { type: 'boolean', default: false },
    },
    USAGE,
  );
  const tag = values.tag ?? 'pci';
  const powerOff = values['power-off'] === true;

  // 1. The VMs of the tag (the server filters: GET /vms?tag=…).
  const tagged = await api.listAllVms({ tag });
  if (tagged.length === 0) throw new HypersealError('HS_ERR_NOT_FOUND', `no VM is tagged '${tag}'`);
  const providers = await providerNames(api);
  console.log(`VMs tagged '${tag}': ${tagged.map((v) => v.name).join(', ')}`);

  // 2. Encrypt each one that is not yet (one task per VM, awaited with progress).
  for (const vm of tagged) {
    if (vm.encryption !== null) {
      console.log(`  ${vm.name}: already encrypted (key ${vm.encryption.keyId}), skipped`);
      continue;
    }
    const done = await whileStopped(api, vm, powerOff, () =>
      api.run(
        api.encryptVm(vm.id, { acceptNoBackup: values['accept-no-backup'] === true }),
        progress(`encrypting ${vm.name}`),
      ),
    );
    if (!done) continue;
    const enc = (await api.getVm(vm.id)).encryption;
    console.log(
      `  ${vm.name}: encrypted, its KEK ${enc?.keyId ?? '?'} is on key provider ${providers(enc?.providerId)}`,
    );
  }

  // 3. Decrypt one again (its KEK stays on the key provider: only crypto-shred destroys keys).
  const encrypted = (await api.listAllVms({ tag })).filter((v) => v.encryption !== null);
  const target = values.decrypt !== undefined ? await vmNamed(api, values.decrypt) : encrypted[0];
  if (target === undefined) {
    console.log('No encrypted VM to decrypt.');
    return;
  }
  if (target.encryption === null)
    throw new HypersealError('HS_ERR_CONFLICT', `VM ${target.name} is not encrypted`);
  const decrypted = await whileStopped(api, target, powerOff, () =>
    api.run(api.decryptVm(target.id), progress(`decrypting ${target.name}`)),
  );
  if (decrypted)
    console.log(`Decrypted ${target.name}: it is plain again (migration encryption stays required).`);
});

/**
 * Runs `action` (an encrypt or a decrypt: the VM must be powered off). A running VM is
 * skipped and named (false), or, with `powerOff`, powered off first and on again after.
 */
async function whileStopped(
  api: ApiClient,
  vm: Vm,
  powerOff: boolean,
  action: () => Promise<unknown>,
): Promise<boolean> {
  const current = await api.getVm(vm.id);
  const stopped = current.state === 'stopped' || current.state === 'crashed';
  if (!stopped && !powerOff) {
    console.log(`  ${vm.name}: skipped, it is ${current.state} (it must be powered off; pass --power-off)`);
    return false;
  }
  if (!stopped) await api.run(api.powerOffVm(vm.id), progress(`powering off ${vm.name}`));
  await action();
  if (!stopped) await api.run(api.powerOnVm(vm.id), progress(`powering on ${vm.name}`));
  return true;
}

/** Key provider id → name (the ids alone if this user may not list key providers). */
async function providerNames(api: ApiClient): Promise<(id: string | undefined) => string> {
  const names = new Map<string, string>();
  try {
    for (const p of await api.listKeyProviders()) names.set(p.id, p.name);
  } catch (err) {
    if (!(err instanceof HypersealError && err.code === 'HS_ERR_AUTH_FORBIDDEN')) throw err;
  }
  return (id) => (id === undefined ? '?' : (names.get(id) ?? id));
}
