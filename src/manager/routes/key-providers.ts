/**
 * Key providers: KMIP clusters the manager takes VM keys from. Every route, reads
 * included, needs crypto.manageKeyServers: server addresses, identities and certificates
 * of the key infrastructure are for cryptography administrators only (there is no
 * separate read privilege; the No Cryptography Administrator role sees none of it).
 * Answers never carry a private key or the sealed blob.
 */
import { Type } from '@sinclair/typebox';
import { Priv } from '../../auth/privileges.js';
import { HypersealError } from '../../errors.js';
import type { AnyRoute } from '../http.js';
import { route } from '../http.js';
import { IdParams, Name } from '../model.js';
import type { ManagerServices } from '../services.js';
import { actorOf } from './common.js';

const PEM_MAX = 65_536;
const Pem = (description: string) => Type.String({ minLength: 1, maxLength: PEM_MAX, description });

const Server = Type.Object(
  {
    host: Type.String({
      minLength: 1,
      maxLength: 253,
      description: 'Host name or IP address; must be named in the server certificate',
    }),
    port: Type.Integer({ minimum: 1, maximum: 65535, default: 5696 }),
  },
  { title: 'KeyServer', additionalProperties: false },
);
const Servers = Type.Array(Server, {
  minItems: 1,
  maxItems: 16,
  description: 'Tried in this order; the one that answered last is tried first',
});

const Certificate = Type.Object(
  {
    subject: Type.String(),
    issuer: Type.String(),
    serialNumber: Type.String(),
    notBefore: Type.String(),
    notAfter: Type.String(),
    sha256: Type.String(),
  },
  { title: 'CertificateInfo' },
);

const KeySafety = Type.Object(
  {
    providerId: Type.Union([Type.String(), Type.Null()]),
    providerName: Type.Union([Type.String(), Type.Null()]),
    embedded: Type.Boolean({ description: 'The provider reports its backup state (a Hyperseal key server)' }),
    health: Type.Union(
      ['ok', 'missing', 'never-backed-up', 'unknown', 'no-provider'].map((h) => Type.Literal(h)),
    ),
    lastBackupAt: Type.Union([Type.Integer(), Type.Null()]),
    lastBackupNewestObjectAt: Type.Union([Type.Integer(), Type.Null()]),
    newestObjectAt: Type.Union([Type.Integer(), Type.Null()]),
    encryptedVms: Type.Integer(),
    warning: Type.Union([Type.String(), Type.Null()]),
  },
  {
    title: 'KeySafety',
    description: 'Whether every key of the key server is in a backup (docs/key-safety.md)',
  },
);

const KeyProvider = Type.Object(
  {
    backup: Type.Optional(KeySafety),
    id: Type.String(),
    name: Type.String(),
    isDefault: Type.Boolean(),
    state: Type.Union([Type.Literal('ready'), Type.Literal('awaiting-certificate')]),
    servers: Type.Array(Type.Object({ host: Type.String(), port: Type.Integer() })),
    caCertificates: Type.Array(Certificate),
    clientCertificate: Type.Union([Certificate, Type.Null()]),
    identity: Type.Union([Type.String(), Type.Null()], {
      description: 'The client certificate’s CN: who the key servers see',
    }),
    csrPem: Type.Union([Type.String(), Type.Null()], {
      description: 'While awaiting its certificate: the CSR for the key manager’s CA to sign',
    }),
    createdAt: Type.Integer(),
    updatedAt: Type.Integer(),
  },
  { title: 'KeyProvider' },
);

const AddBody = Type.Object(
  {
    name: Name,
    servers: Servers,
    caPem: Pem('PEM of the CA certificate(s) that signed the KMIP servers’ certificates'),
    clientCertPem: Type.Optional(Pem('The manager’s client certificate (clientAuth), PEM')),
    clientKeyPem: Type.Optional(Pem('Its private key, PEM, unencrypted; stored only sealed')),
    csr: Type.Optional(
      Type.Object(
        {
          commonName: Type.Optional(
            Type.String({ pattern: '^[A-Za-z0-9._@-]{1,64}$', description: 'Default hyperseal-manager' }),
          ),
          keyType: Type.Optional(Type.Union([Type.Literal('rsa'), Type.Literal('ec')], { default: 'rsa' })),
        },
        { additionalProperties: false },
      ),
    ),
  },
  {
    title: 'KeyProviderCreate',
    additionalProperties: false,
    description:
      'Either clientCertPem + clientKeyPem, or csr: the manager generates the key pair and answers with csrPem',
  },
);

const ServerResult = Type.Object(
  {
    host: Type.String(),
    port: Type.Integer(),
    address: Type.String(),
    ok: Type.Boolean(),
    latencyMs: Type.Number(),
    versions: Type.Optional(Type.Array(Type.String())),
    vendor: Type.Optional(Type.String()),
    operations: Type.Optional(Type.Array(Type.String())),
    error: Type.Optional(Type.Object({ code: Type.String(), message: Type.String() })),
  },
  { title: 'KeyServerTestResult' },
);

const TestResult = Type.Object(
  {
    providerId: Type.String(),
    name: Type.String(),
    ok: Type.Boolean({ description: 'Every server answered' }),
    servers: Type.Array(ServerResult),
  },
  { title: 'KeyProviderTestResult' },
);

export function keyProviderRoutes(s: ManagerServices): AnyRoute[] {
  const kp = s.keyProviders;
  const privilege = Priv['crypto.manageKeyServers'];
  return [
    route({
      method: 'GET',
      url: '/key-providers',
      summary: 'List key providers (no key material)',
      tag: 'key-providers',
      privilege,
      response: Type.Array(KeyProvider),
      handler: async () => {
        const list = await kp.list();
        // The default provider's backup state (cached; others: GET /key-providers/:id).
        const safety = await s.keySafety.status().catch(() => undefined);
        return list.map((p) => (p.isDefault && safety !== undefined ? { ...p, backup: safety } : p));
      },
    }),
    route({
      method: 'GET',
      url: '/key-safety',
      summary: 'Backup state of the default key provider, and warnings to act on',
      tag: 'key-providers',
      privilege: 'vm.read',
      response: Type.Object({ status: KeySafety, warnings: Type.Array(Type.String()) }),
      handler: async () => {
        const status = await s.keySafety.status();
        return { status, warnings: status.warning === null ? [] : [status.warning] };
      },
    }),
    route({
      method: 'POST',
      url: '/key-providers',
      summary: 'Add a key provider with a client certificate and key, or with a CSR the manager generates',
      tag: 'key-providers',
      privilege,
      event: 'kms.provider-added',
      body: AddBody,
      response: KeyProvider,
      status: 201,
      handler: async ({ body, user, ip }) => {
        const actor = actorOf(user, ip);
        const base = { name: body.name, servers: body.servers, caPem: body.caPem };
        if (body.csr !== undefined) {
          if (body.clientCertPem !== undefined || body.clientKeyPem !== undefined) {
            throw new HypersealError(
              'HS_ERR_INVALID_ARGUMENT',
              'give either csr or clientCertPem + clientKeyPem, not both',
            );
          }
          return kp.addWithCsr(actor, {
            ...base,
            ...(body.csr.commonName !== undefined ? { commonName: body.csr.commonName } : {}),
            ...(body.csr.keyType !== undefined ? { keyType: body.csr.keyType } : {}),
          });
        }
        if (body.clientCertPem === undefined || body.clientKeyPem === undefined) {
          throw new HypersealError(
            'HS_ERR_INVALID_ARGUMENT',
            'give clientCertPem and clientKeyPem, or csr: {} to have the manager generate the key and a CSR',
          );
        }
        return kp.add(actor, { ...base, clientCertPem: body.clientCertPem, clientKeyPem: body.clientKeyPem });
      },
    }),
    route({
      method: 'GET',
      url: '/key-providers/:id',
      summary: 'One key provider (with its CSR while it awaits its certificate)',
      tag: 'key-providers',
      privilege,
      params: IdParams,
      response: KeyProvider,
      handler: async ({ params }) => {
        const p = await kp.get(params.id);
        if (p.state !== 'ready') return p;
        const backup = await s.keySafety.statusOf(params.id).catch(() => undefined);
        return backup === undefined ? p : { ...p, backup };
      },
    }),
    route({
      method: 'PATCH',
      url: '/key-providers/:id',
      summary: 'Replace a key provider’s servers and/or CA bundle',
      tag: 'key-providers',
      privilege,
      event: 'kms.provider-changed',
      params: IdParams,
      body: Type.Object(
        {
          servers: Type.Optional(Servers),
          caPem: Type.Optional(
            Pem('PEM of the CA certificate(s) that signed the KMIP servers’ certificates'),
          ),
        },
        { additionalProperties: false },
      ),
      response: KeyProvider,
      handler: ({ params, body, user, ip }) =>
        kp.update(actorOf(user, ip), params.id, {
          ...(body.servers !== undefined ? { servers: body.servers } : {}),
          ...(body.caPem !== undefined ? { caPem: body.caPem } : {}),
        }),
    }),
    route({
      method: 'DELETE',
      url: '/key-providers/:id',
      summary:
        'Remove a key provider (refused while VMs or policies use it, or while it is the default of several)',
      tag: 'key-providers',
      privilege,
      event: 'kms.provider-removed',
      params: IdParams,
      response: Type.Null(),
      status: 204,
      handler: async ({ params, user, ip }) => {
        await kp.remove(actorOf(user, ip), params.id);
        return null;
      },
    }),
    route({
      method: 'PUT',
      url: '/key-providers/:id/certificate',
      summary: 'Install the client certificate (signed CSR, or a renewal for the same key)',
      tag: 'key-providers',
      privilege,
      event: 'kms.provider-certificate-set',
      params: IdParams,
      body: Type.Object(
        { certPem: Pem('The signed client certificate, PEM') },
        { additionalProperties: false },
      ),
      response: KeyProvider,
      handler: ({ params, body, user, ip }) => kp.setCertificate(actorOf(user, ip), params.id, body.certPem),
    }),
    route({
      method: 'POST',
      url: '/key-providers/:id/actions/test',
      summary: 'Connect to every KMIP server of the provider: Discover Versions and Query, latency',
      tag: 'key-providers',
      privilege,
      event: 'kms.provider-tested',
      params: IdParams,
      response: TestResult,
      handler: ({ params, user, ip }) => kp.test(actorOf(user, ip), params.id),
    }),
    route({
      method: 'POST',
      url: '/key-providers/:id/actions/set-default',
      summary: 'Make this the default key provider',
      tag: 'key-providers',
      privilege,
      event: 'kms.provider-default-changed',
      params: IdParams,
      response: KeyProvider,
      handler: ({ params, user, ip }) => kp.setDefault(actorOf(user, ip), params.id),
    }),
  ];
}
