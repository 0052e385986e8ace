/**
 * Require encrypted migration for a group of VMs (the VMs with a tag), then migrate one
 * of them to another host and show how it travelled.
 *
 * Shows: `migrationEncryption` (disabled | opportunistic | required) set with
 * `api.updateVm`, a migration task with `api.run(api.migrateVm(…))` — live when the VM
 * runs, cold when it is stopped — and its `vm.migrated` event. Encrypted VMs always
 * migrate encrypted, whatever their setting; `required` makes plain VMs do so as well
 * (the manager refuses the migration when either host cannot encrypt it).
 *
 * Run:  npm run up -- --demo          (in another terminal: the manager, 2 hosts, demo VMs)
 *       node dist/examples/migration-encryption.js [--group frontend] [--vm VM] [--to HOST]
 *
 * --vm VM     the VM to migrate (default: the group's first, by name)
 * --to HOST   destination host name or id (default: the first other connected host)
 * Credentials: $HYPERSEAL_CREDENTIALS or ./.hyperseal/credentials.json (written by `up`).
 */
import { HypersealError } from '../src/index.js';
import { options, progress, runExample } from './lib.js';

await runExample('migration-encryption', async (api) => {
  const { values } = options(
    { group: { type: 'string', default: 'frontend' }, vm: { type: 'string' }, to: { type: 'string' } },
    'node dist/examples/migration-encryption.js [--group TAG] [--vm VM] [--to HOST]',
  );
  const group = values.group ?? 'frontend';

  // 1. The group: every VM tagged with it.
  const members = await api.listAllVms({ tag: group });
  if (members.length === 0) throw new HypersealError('HS_ERR_NOT_FOUND', `no VM is tagged '${group}'`);

  // 2. migrationEncryption: required on each (an event per VM records the change).
  console.log(`Group '${group}': migration encryption → required`);
  for (const vm of members) {
    const was = vm.config.migrationEncryption ?? 'opportunistic';
    if (was === 'required') {
      console.log(`  ${vm.name}: already required`);
      continue;
    }
    await api.updateVm(vm.id, { migrationEncryption: 'required' });
    const note = vm.encryption !== null ? ' (an encrypted VM: it migrated encrypted anyway)' : '';
    console.log(`  ${vm.name}: ${was} → required${note}`);
  }

  // 3. One VM to another host: it needs a second host that is connected.
  const vm = values.vm !== undefined ? members.find((v) => v.name === values.vm) : members[0];
  if (vm === undefined)
    throw new HypersealError('HS_ERR_NOT_FOUND', `no VM '${values.vm}' in group '${group}'`);
  const hosts = await api.listHosts();
  const hostName = (id: string): string => hosts.find((h) => h.id === id)?.name ?? id;
  const target = hosts.find((h) =>
    values.to !== undefined
      ? h.name === values.to || h.id === values.to
      : h.id !== vm.hostId && h.state === 'connected',
  );
  if (target === undefined) {
    throw new HypersealError(
      'HS_ERR_NOT_FOUND',
      values.to !== undefined ? `no host '${values.to}'` : `no other connected host to migrate ${vm.name} to`,
    );
  }
  const task = await api.run(api.migrateVm(vm.id, { hostId: target.id }), progress(`migrating ${vm.name}`));
  const result = task.result as { cold?: boolean; encrypted?: boolean; cipher?: string };
  console.log(
    `Migrated ${vm.name} from ${hostName(vm.hostId)} to ${target.name} ` +
      `(${result.cold === true ? 'cold: it is stopped' : 'live'}, ` +
      `${result.encrypted === true ? `encrypted, ${result.cipher ?? ''}` : 'plaintext'})`,
  );

  // 4. The record of it in the event log.
  const event = (await api.listEvents({ objectId: vm.id, type: 'vm.migrated', limit: 1 }))[0];
  if (event !== undefined)
    console.log(`Event #${event.seq} ${event.type} (${event.result}): ${event.message}`);
});
