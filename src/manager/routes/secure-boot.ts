/** /secure-boot/key-sets (VM key sets) and /hosts/{id}/secure-boot, /hosts/{id}/bundles. */
import { Type } from '@sinclair/typebox';
import type { AnyRoute } from '../http.js';
import { route } from '../http.js';
import { IdParams } from '../model.js';
import type { ManagerServices } from '../services.js';
import { actorOf } from './common.js';

const KeyEntry = Type.Object(
  {
    type: Type.Union([Type.Literal('x509'), Type.Literal('sha256')]),
    certPem: Type.Optional(Type.String({ maxLength: 16_384, description: 'PEM certificate (type x509)' })),
    sha256: Type.Optional(
      Type.String({
        pattern: '^[0-9a-fA-F]{64}$',
        description: 'Authenticode SHA-256 of an EFI image (type sha256)',
      }),
    ),
    owner: Type.String({ description: 'Owner GUID (one per organisation)' }),
  },
  { title: 'SecureBootKeyEntry', additionalProperties: false },
);
const KeySetKeys = {
  pk: KeyEntry,
  kek: Type.Array(KeyEntry, { minItems: 1, maxItems: 256 }),
  db: Type.Array(KeyEntry, { minItems: 1, maxItems: 256 }),
  dbx: Type.Optional(Type.Array(KeyEntry, { maxItems: 256 })),
};
const KeySetCreate = Type.Object(
  { name: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' }), ...KeySetKeys },
  { title: 'SecureBootKeySetCreate', additionalProperties: false },
);
const KeySetReplace = Type.Object(KeySetKeys, {
  title: 'SecureBootKeySetUpdate',
  additionalProperties: false,
});
const KeySetView = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    keySet: Type.Unknown({ description: 'kind custom: pk, kek, db, dbx (certificates and hashes only)' }),
    summary: Type.Object({
      pk: Type.String(),
      kek: Type.Array(Type.String()),
      db: Type.Array(Type.String()),
      dbx: Type.Array(Type.String()),
    }),
    usedBy: Type.Integer({ description: 'How many VMs use it' }),
    createdAt: Type.Integer(),
    updatedAt: Type.Integer(),
  },
  { title: 'SecureBootKeySet' },
);
const KeySetParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) });

const InstalledBundle = Type.Object(
  {
    name: Type.String(),
    version: Type.String(),
    vendor: Type.String(),
    acceptance: Type.String(),
    verified: Type.Boolean(),
    signer: Type.Optional(Type.String()),
    problem: Type.Optional(
      Type.Object({ code: Type.String(), message: Type.String(), file: Type.Optional(Type.String()) }),
    ),
  },
  { title: 'InstalledBundle' },
);
const BundleUpload = Type.Object(
  {
    files: Type.Array(
      Type.Object(
        {
          path: Type.String({ minLength: 1, maxLength: 1024 }),
          data: Type.String({ description: 'base64' }),
        },
        { additionalProperties: false },
      ),
      { minItems: 1, maxItems: 10_000 },
    ),
  },
  { title: 'BundleUpload', additionalProperties: false },
);

export function secureBootRoutes(s: ManagerServices): AnyRoute[] {
  return [
    route({
      method: 'GET',
      url: '/secure-boot/key-sets',
      summary: 'List Secure Boot key sets for VMs',
      tag: 'secure-boot',
      privilege: 'vm.read',
      response: Type.Array(KeySetView),
      handler: () => s.secureBoot.listKeySets(),
    }),
    route({
      method: 'GET',
      url: '/secure-boot/key-sets/:id',
      summary: 'Show a Secure Boot key set (by id or name)',
      tag: 'secure-boot',
      privilege: 'vm.read',
      params: KeySetParams,
      response: KeySetView,
      handler: ({ params }) => s.secureBoot.getKeySet(params.id),
    }),
    route({
      method: 'POST',
      url: '/secure-boot/key-sets',
      event: 'secureboot.key-set-created',
      summary:
        'Create a Secure Boot key set (PK, KEK, db, dbx: certificates and image hashes, never private keys)',
      tag: 'secure-boot',
      privilege: 'secureboot.manage',
      body: KeySetCreate,
      response: KeySetView,
      status: 201,
      handler: ({ body, user, ip }) => s.secureBoot.createKeySet(actorOf(user, ip), body),
    }),
    route({
      method: 'PUT',
      url: '/secure-boot/key-sets/:id',
      operationId: 'updateSecureBootKeySet',
      event: 'secureboot.key-set-changed',
      summary: 'Replace the keys of a key set (VMs using it get a new variable store at their next power-on)',
      tag: 'secure-boot',
      privilege: 'secureboot.manage',
      params: KeySetParams,
      body: KeySetReplace,
      response: KeySetView,
      handler: ({ params, body, user, ip }) => s.secureBoot.replaceKeySet(actorOf(user, ip), params.id, body),
    }),
    route({
      method: 'DELETE',
      url: '/secure-boot/key-sets/:id',
      event: 'secureboot.key-set-removed',
      summary: 'Remove a key set no VM uses',
      tag: 'secure-boot',
      privilege: 'secureboot.manage',
      params: KeySetParams,
      response: Type.Null(),
      status: 204,
      handler: async ({ params, user, ip }) => {
        await s.secureBoot.removeKeySet(actorOf(user, ip), params.id);
        return null;
      },
    }),
    route({
      method: 'GET',
      url: '/hosts/:id/secure-boot',
      summary:
        'Host Secure Boot: the machine’s UEFI Secure Boot, the agent’s verification result, acceptance level, bundles',
      tag: 'hosts',
      privilege: 'host.read',
      params: IdParams,
      response: Type.Object({
        hostId: Type.String(),
        hostName: Type.String(),
        hostState: Type.String(),
        uefiSecureBoot: Type.String(),
        live: Type.Boolean(),
        report: Type.Unknown(),
      }),
      handler: ({ params }) => s.secureBoot.hostStatus(params.id),
    }),
    route({
      method: 'GET',
      url: '/hosts/:id/bundles',
      summary: 'List the bundles installed on a host',
      tag: 'hosts',
      privilege: 'host.read',
      params: IdParams,
      response: Type.Array(InstalledBundle),
      handler: ({ params }) => s.secureBoot.listBundles(params.id),
    }),
    route({
      method: 'POST',
      url: '/hosts/:id/bundles',
      operationId: 'installHostBundle',
      event: 'host.bundle-installed',
      summary: 'Install a bundle on a host: verified by the agent against its trust anchors and level first',
      tag: 'hosts',
      privilege: 'bundle.manage',
      params: IdParams,
      body: BundleUpload,
      response: InstalledBundle,
      status: 201,
      handler: ({ params, body, user, ip }) => s.secureBoot.installBundle(actorOf(user, ip), params.id, body),
    }),
    route({
      method: 'DELETE',
      url: '/hosts/:id/bundles/:name',
      event: 'host.bundle-removed',
      summary: 'Remove a bundle from a host',
      tag: 'hosts',
      privilege: 'bundle.manage',
      params: Type.Object({
        id: IdParams.properties.id,
        name: Type.String({ pattern: '^[a-z0-9][a-z0-9._+-]{0,63}$' }),
      }),
      response: Type.Null(),
      status: 204,
      handler: async ({ params, user, ip }) => {
        await s.secureBoot.removeBundle(actorOf(user, ip), params.id, params.name);
        return null;
      },
    }),
  ];
}
