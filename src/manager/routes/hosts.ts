/** /hosts: enrollment (tokens, the agent's enroll call), listing, revocation; datastores and networks. */
import { Type } from '@sinclair/typebox';
import type { AnyRoute } from '../http.js';
import { route } from '../http.js';
import { Host, IdParams, Name } from '../model.js';
import type { ManagerServices } from '../services.js';
import { actorOf } from './common.js';

const Datastore = Type.Object(
  {
    id: Type.String(),
    hostId: Type.Union([Type.String(), Type.Null()]),
    name: Type.String(),
    path: Type.String(),
    shared: Type.Boolean(),
  },
  { title: 'Datastore' },
);
const Network = Type.Object(
  { id: Type.String(), name: Type.String(), kind: Type.String() },
  { title: 'Network' },
);

export function hostRoutes(s: ManagerServices): AnyRoute[] {
  return [
    route({
      method: 'GET',
      url: '/hosts',
      summary: 'List hosts',
      tag: 'hosts',
      privilege: 'host.read',
      response: Type.Array(Host),
      handler: () => s.hosts.list(),
    }),
    route({
      method: 'GET',
      url: '/hosts/:id',
      summary: 'Show a host with its facts',
      tag: 'hosts',
      privilege: 'host.read',
      params: IdParams,
      response: Host,
      handler: ({ params }) => s.hosts.get(params.id),
    }),
    route({
      method: 'POST',
      url: '/hosts/enrollment-tokens',
      operationId: 'createEnrollmentToken',
      event: 'host.enrollment-token-created',
      summary: 'Create a one-time token for a host agent to join',
      tag: 'hosts',
      privilege: 'host.enroll',
      body: Type.Object(
        { ttlMs: Type.Optional(Type.Integer({ minimum: 60_000 })) },
        { additionalProperties: false },
      ),
      response: Type.Object({ token: Type.String(), caSha256: Type.String(), expiresAt: Type.Integer() }),
      status: 201,
      handler: ({ body, user, ip }) => s.hosts.createEnrollmentToken(actorOf(user, ip), body.ttlMs),
    }),
    route({
      method: 'POST',
      url: '/hosts/enroll',
      operationId: 'enrollHost',
      event: 'host.joined',
      summary: 'Agent enrollment: a one-time token and a CSR in, a certificate from the manager CA out',
      tag: 'hosts',
      // Authenticated by the one-time token in the body, checked by the service.
      privilege: 'public',
      body: Type.Object(
        {
          token: Type.String({ maxLength: 128 }),
          name: Name,
          address: Type.String({ maxLength: 256 }),
          csrPem: Type.String({ maxLength: 16_384 }),
        },
        { additionalProperties: false },
      ),
      response: Type.Object({ hostId: Type.String(), certPem: Type.String(), caPem: Type.String() }),
      status: 201,
      handler: ({ body, ip }) => s.hosts.enroll(body, ip),
    }),
    route({
      method: 'POST',
      url: '/hosts/:id/actions/connect',
      event: 'host.reconnected',
      summary: 'Connect to an enrolled host and refresh its facts',
      tag: 'hosts',
      privilege: 'host.manage',
      params: IdParams,
      response: Host,
      handler: ({ params }) => s.hosts.attach(params.id),
    }),
    route({
      method: 'POST',
      url: '/hosts/:id/actions/revoke',
      event: 'host.revoked',
      summary: 'Revoke a host: the manager stops trusting and using it',
      tag: 'hosts',
      privilege: 'host.manage',
      params: IdParams,
      response: Host,
      handler: ({ params, user, ip }) => s.hosts.revoke(actorOf(user, ip), params.id),
    }),
    route({
      method: 'GET',
      url: '/datastores',
      summary: 'List datastores',
      tag: 'datastores',
      privilege: 'datastore.read',
      response: Type.Array(Datastore),
      handler: async () =>
        (
          await s.db.query<{
            id: string;
            host_id: string | null;
            name: string;
            path: string;
            shared: boolean;
          }>(`SELECT * FROM datastores ORDER BY name`)
        ).map((d) => ({ id: d.id, hostId: d.host_id, name: d.name, path: d.path, shared: d.shared })),
    }),
    route({
      method: 'GET',
      url: '/networks',
      summary: 'List networks (port groups)',
      tag: 'networks',
      privilege: 'network.read',
      response: Type.Array(Network),
      handler: () =>
        s.db.query<{ id: string; name: string; kind: string }>(
          `SELECT id, name, kind FROM networks ORDER BY name`,
        ),
    }),
    route({
      method: 'POST',
      url: '/networks',
      event: 'network.created',
      summary: 'Create a network (port group), e.g. "PCI"',
      tag: 'networks',
      privilege: 'network.manage',
      body: Type.Object({ name: Name }, { additionalProperties: false }),
      response: Network,
      status: 201,
      handler: ({ body, user, ip }) => s.createNetwork(actorOf(user, ip), body.name),
    }),
  ];
}
