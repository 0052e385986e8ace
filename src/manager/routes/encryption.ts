/** VM encryption: policies, and the crypto actions on VMs (each gated by its crypto.* privilege). */
import { Type } from '@sinclair/typebox';
import type { AnyRoute } from '../http.js';
import { route } from '../http.js';
import { ActionQuery, IdParams, Task, Vm } from '../model.js';
import type { ManagerServices } from '../services.js';
import { BUILTIN_POLICY_ID, requirePrivilege } from '../vm-crypto.js';
import { actorOf, taskReply } from './common.js';

const Policy = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    description: Type.String(),
    providerId: Type.Union([Type.String(), Type.Null()], {
      description: 'The key provider for new KEKs; null: the default provider',
    }),
    builtin: Type.Boolean(),
    createdAt: Type.Integer(),
  },
  { title: 'EncryptionPolicy' },
);

const PolicyCreate = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 80, pattern: '^[A-Za-z0-9][A-Za-z0-9 ._()-]*$' }),
    description: Type.Optional(Type.String({ maxLength: 500 })),
    providerId: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
  },
  { title: 'EncryptionPolicyCreate', additionalProperties: false },
);

const AcceptNoBackup = Type.Boolean({
  description:
    'Encrypt even though the embedded key server was never backed up (else 409 HS_ERR_KMS_NOT_BACKED_UP for the first VM)',
});

/** The first VM encrypted with a never-backed-up embedded key server needs confirmation. */
async function checkBackup(
  s: ManagerServices,
  policyIdOrName: string,
  accept: boolean | undefined,
): Promise<void> {
  const policy = await s.crypto.policies.get(policyIdOrName);
  await s.keySafety.checkBeforeEncrypt(policy.providerId, accept === true);
}

const EncryptBody = Type.Object(
  {
    policyId: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 80,
        description: 'Policy id or name; default the built-in one',
      }),
    ),
    acceptNoBackup: Type.Optional(AcceptNoBackup),
  },
  { title: 'EncryptBody', additionalProperties: false },
);

export function encryptionRoutes(s: ManagerServices): AnyRoute[] {
  return [
    route({
      method: 'GET',
      url: '/encryption-policies',
      summary: 'List encryption policies',
      tag: 'encryption',
      privilege: 'vm.read',
      response: Type.Array(Policy),
      handler: () => s.crypto.policies.list(),
    }),
    route({
      method: 'POST',
      url: '/encryption-policies',
      event: 'encryption.policy-created',
      summary: 'Create an encryption policy',
      tag: 'encryption',
      privilege: 'crypto.manageEncryptionPolicy',
      body: PolicyCreate,
      response: Policy,
      status: 201,
      handler: ({ body, user, ip }) => s.crypto.policies.create(actorOf(user, ip), body),
    }),
    route({
      method: 'DELETE',
      url: '/encryption-policies/:id',
      event: 'encryption.policy-deleted',
      summary: 'Delete an encryption policy no VM uses',
      tag: 'encryption',
      privilege: 'crypto.manageEncryptionPolicy',
      params: IdParams,
      response: Type.Null(),
      status: 204,
      handler: async ({ params, user, ip }) => {
        await s.crypto.policies.remove(actorOf(user, ip), params.id);
        return null;
      },
    }),
    route({
      method: 'POST',
      url: '/encryption-policies/:id/actions/apply',
      event: 'encryption.policy-applied',
      summary: 'Encrypt every plain VM matching a name pattern and/or tag (one task per VM)',
      tag: 'encryption',
      privilege: 'crypto.encrypt',
      params: IdParams,
      query: ActionQuery,
      body: Type.Object(
        {
          namePattern: Type.Optional(
            Type.String({ minLength: 1, maxLength: 128, description: 'e.g. web-*' }),
          ),
          tag: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
          acceptNoBackup: Type.Optional(AcceptNoBackup),
        },
        { additionalProperties: false },
      ),
      response: Task,
      status: 202,
      handler: async ({ params, body, query, user, ip, reply }) => {
        const { acceptNoBackup, ...select } = body;
        await checkBackup(s, params.id, acceptNoBackup);
        return taskReply(s, await s.crypto.applyPolicy(actorOf(user, ip), params.id, select), query, reply);
      },
    }),
    route({
      method: 'POST',
      url: '/vms/:id/actions/encrypt',
      event: 'vm.encrypted',
      summary: 'Encrypt a powered-off VM (home and every disk) under a policy',
      tag: 'encryption',
      privilege: 'crypto.encrypt',
      params: IdParams,
      query: ActionQuery,
      body: EncryptBody,
      response: Task,
      status: 202,
      handler: async ({ params, body, query, user, ip, reply }) => {
        await checkBackup(s, body.policyId ?? BUILTIN_POLICY_ID, body.acceptNoBackup);
        return taskReply(
          s,
          await s.crypto.encrypt(actorOf(user, ip), params.id, body.policyId),
          query,
          reply,
        );
      },
    }),
    route({
      method: 'POST',
      url: '/vms/:id/actions/decrypt',
      event: 'vm.decrypted',
      summary: 'Decrypt a powered-off VM (its KEK stays on the key provider)',
      tag: 'encryption',
      privilege: 'crypto.decrypt',
      params: IdParams,
      query: ActionQuery,
      response: Task,
      status: 202,
      handler: async ({ params, query, user, ip, reply }) =>
        taskReply(s, await s.crypto.decrypt(actorOf(user, ip), params.id), query, reply),
    }),
    route({
      method: 'POST',
      url: '/vms/:id/actions/rekey',
      event: 'vm.rekeyed',
      summary:
        'Rekey: shallow (new KEK, may run) or deep (new DEKs, data re-encrypted, powered off); with policyId, under that policy',
      tag: 'encryption',
      privilege: 'crypto.recrypt',
      params: IdParams,
      query: ActionQuery,
      body: Type.Object(
        {
          deep: Type.Optional(Type.Boolean({ default: false })),
          policyId: Type.Optional(
            Type.String({
              minLength: 1,
              description: 'Move the VM to this policy: the new KEK comes from its key provider',
            }),
          ),
          acceptNoBackup: Type.Optional(Type.Boolean()),
        },
        { additionalProperties: false },
      ),
      response: Task,
      status: 202,
      handler: async ({ params, body, query, user, ip, reply }) => {
        if (body.policyId !== undefined) {
          // A new provider may be a key server that was never backed up, as for encrypt.
          const policy = await s.crypto.policies.get(body.policyId);
          await s.keySafety.checkBeforeEncrypt(policy.providerId, body.acceptNoBackup === true);
        }
        return taskReply(
          s,
          await s.crypto.rekey(actorOf(user, ip), params.id, body.deep ?? false, body.policyId),
          query,
          reply,
        );
      },
    }),
    route({
      method: 'POST',
      url: '/vms/:id/actions/clone',
      event: 'vm.cloned',
      summary: 'Clone a powered-off VM on its host (an encrypted one gets its own KEK; needs crypto.clone)',
      tag: 'encryption',
      privilege: 'vm.create',
      params: IdParams,
      query: ActionQuery,
      body: Type.Object(
        { name: Type.String({ minLength: 1, maxLength: 80, pattern: '^[A-Za-z0-9][A-Za-z0-9 ._@()-]*$' }) },
        { additionalProperties: false },
      ),
      response: Task,
      status: 202,
      handler: async ({ params, body, query, user, ip, reply }) => {
        const vm = await s.vms.get(params.id);
        if (vm.encryption) requirePrivilege(user, 'crypto.clone', `clone encrypted VM ${vm.name}`);
        return taskReply(s, await s.crypto.clone(actorOf(user, ip), params.id, body.name), query, reply);
      },
    }),
    route({
      method: 'POST',
      url: '/vms/:id/actions/crypto-shred',
      event: 'vm.crypto-shredded',
      summary: "Destroy a powered-off VM's KEK on its key provider: its data becomes unrecoverable",
      tag: 'encryption',
      privilege: 'crypto.manageKeys',
      params: IdParams,
      body: Type.Object(
        { confirm: Type.String({ description: "The VM's exact name, to confirm" }) },
        { additionalProperties: false },
      ),
      response: Vm,
      handler: ({ params, body, user, ip }) =>
        s.crypto.cryptoShred(actorOf(user, ip), params.id, body.confirm),
    }),
    route({
      method: 'POST',
      url: '/vms/:id/actions/unlock',
      event: 'vm.unlocked',
      summary: "Deliver a locked VM's key to its host again (after the key provider was fixed)",
      tag: 'encryption',
      privilege: 'crypto.registerVm',
      params: IdParams,
      response: Vm,
      handler: ({ params, user, ip }) => s.crypto.unlock(actorOf(user, ip), params.id),
    }),
  ];
}
