/** /vms: inventory CRUD, power actions as tasks, the serial console log. */
import { Type } from '@sinclair/typebox';
import type { EventType } from '../../events/index.js';
import type { AnyRoute } from '../http.js';
import { route } from '../http.js';
import { ActionQuery, IdParams, MigrateBody, Task, Vm, VmCreate, VmPatch } from '../model.js';
import type { ManagerServices } from '../services.js';
import type { VmAction } from '../vms.js';
import { requirePrivilege } from '../vm-crypto.js';
import { actorOf, taskReply } from './common.js';

const ListQuery = Type.Object({
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, default: 1000 })),
  offset: Type.Optional(Type.Integer({ minimum: 0, default: 0 })),
  name: Type.Optional(Type.String()),
  hostId: Type.Optional(Type.String()),
  tag: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'Only VMs with this tag' })),
  search: Type.Optional(
    Type.String({
      minLength: 1,
      maxLength: 80,
      description: 'Only VMs whose name contains this text (case-insensitive)',
    }),
  ),
});

const ACTIONS: readonly { verb: VmAction; summary: string; event: EventType }[] = [
  {
    verb: 'power-on',
    summary: 'Power a VM on (applies configuration changes made while it ran)',
    event: 'vm.powered-on',
  },
  { verb: 'power-off', summary: 'Power a VM off at once (like pulling the plug)', event: 'vm.powered-off' },
  { verb: 'shutdown', summary: 'Ask the guest to shut down (ACPI), then wait', event: 'vm.shut-down' },
  { verb: 'reset', summary: 'Reset a running VM', event: 'vm.reset' },
];

export function vmRoutes(s: ManagerServices): AnyRoute[] {
  return [
    route({
      method: 'GET',
      url: '/vms',
      summary: 'List VMs',
      tag: 'vms',
      privilege: 'vm.read',
      query: ListQuery,
      response: Type.Array(Vm),
      handler: ({ query }) =>
        s.vms.list({
          limit: query.limit ?? 1000,
          offset: query.offset ?? 0,
          ...(query.name ? { name: query.name } : {}),
          ...(query.hostId ? { hostId: query.hostId } : {}),
          ...(query.tag ? { tag: query.tag } : {}),
          ...(query.search ? { search: query.search } : {}),
        }),
    }),
    route({
      method: 'POST',
      url: '/vms',
      event: 'vm.created',
      summary: 'Create a VM',
      tag: 'vms',
      privilege: 'vm.create',
      body: VmCreate,
      response: Vm,
      status: 201,
      handler: async ({ body, user, ip }) => {
        const { encryptionPolicyId, acceptNoBackup, ...input } = body;
        if (encryptionPolicyId === undefined) return s.vms.create(actorOf(user, ip), input);
        requirePrivilege(user, 'crypto.encryptNew', `create encrypted VM ${body.name}`);
        const policy = await s.crypto.policies.get(encryptionPolicyId);
        await s.keySafety.checkBeforeEncrypt(policy.providerId, acceptNoBackup === true);
        const hostId = input.hostId ?? (await s.hosts.defaultHostId());
        const encryption = await s.crypto.prepareNewVm(encryptionPolicyId, hostId);
        return s.vms.create(actorOf(user, ip), { ...input, hostId }, encryption);
      },
    }),
    route({
      method: 'GET',
      url: '/vms/:id',
      summary: 'Show a VM',
      tag: 'vms',
      privilege: 'vm.read',
      params: IdParams,
      response: Vm,
      handler: ({ params }) => s.vms.get(params.id),
    }),
    route({
      method: 'PATCH',
      url: '/vms/:id',
      event: 'vm.reconfigured',
      summary: 'Reconfigure a VM (hardware changes on a running VM apply at its next power-on)',
      tag: 'vms',
      privilege: 'vm.reconfigure',
      params: IdParams,
      body: VmPatch,
      response: Vm,
      handler: async ({ params, body, user, ip }) => {
        if (body.disks !== undefined) {
          const vm = await s.vms.get(params.id);
          const added = body.disks.filter((d) => !vm.config.disks.some((o) => o.id === d.id));
          if (vm.encryption && added.length > 0) {
            requirePrivilege(user, 'crypto.addDisk', `add an encrypted disk to VM ${vm.name}`);
          }
        }
        return s.vms.reconfigure(actorOf(user, ip), params.id, body);
      },
    }),
    route({
      method: 'DELETE',
      url: '/vms/:id',
      event: 'vm.deleted',
      summary: 'Delete a powered-off VM and its disks',
      tag: 'vms',
      privilege: 'vm.delete',
      params: IdParams,
      response: Type.Null(),
      status: 204,
      handler: async ({ params, user, ip }) => {
        await s.vms.remove(actorOf(user, ip), params.id);
        return null;
      },
    }),
    ...ACTIONS.map((a) =>
      route({
        method: 'POST',
        url: `/vms/:id/actions/${a.verb}`,
        event: a.event,
        summary: a.summary,
        tag: 'vms',
        privilege: 'vm.power',
        params: IdParams,
        query: ActionQuery,
        response: Task,
        status: 202,
        handler: async ({ params, query, user, ip, reply }) =>
          taskReply(s, await s.vms.action(actorOf(user, ip), params.id, a.verb), query, reply),
      }),
    ),
    route({
      method: 'POST',
      url: '/vms/:id/actions/migrate',
      event: 'vm.migrated',
      summary:
        'Live-migrate a running VM to another host, encrypted per its migrationEncryption (an encrypted VM also needs crypto.migrate)',
      tag: 'vms',
      privilege: 'vm.migrate',
      params: IdParams,
      query: ActionQuery,
      body: MigrateBody,
      response: Task,
      status: 202,
      handler: async ({ params, query, body, user, ip, reply }) => {
        const vm = await s.vms.get(params.id);
        if (vm.encryption) requirePrivilege(user, 'crypto.migrate', `migrate encrypted VM ${vm.name}`);
        return taskReply(s, await s.vms.migrate(actorOf(user, ip), params.id, body.hostId), query, reply);
      },
    }),
    route({
      method: 'GET',
      url: '/vms/:id/console',
      summary: 'Read the serial console log from a byte offset',
      tag: 'vms',
      privilege: 'vm.console',
      params: IdParams,
      query: Type.Object({ offset: Type.Optional(Type.Integer({ minimum: 0, default: 0 })) }),
      response: Type.Object({ offset: Type.Integer(), next: Type.Integer(), data: Type.String() }),
      handler: async ({ params, query, user }) => {
        const vm = await s.vms.get(params.id);
        if (vm.encryption)
          requirePrivilege(user, 'crypto.access', `read the console of encrypted VM ${vm.name}`);
        return s.vms.console(params.id, query.offset ?? 0);
      },
    }),
  ];
}
