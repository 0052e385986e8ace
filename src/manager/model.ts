/**
 * The manager's API schemas (TypeBox → JSON Schema): one definition validates requests,
 * types handlers and documents the API in OpenAPI.
 */
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';

export const Id = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9._:-]+$' });
export const Name = Type.String({ minLength: 1, maxLength: 80, pattern: '^[A-Za-z0-9][A-Za-z0-9 ._@()-]*$' });
export const IdParams = Type.Object({ id: Id });

export const Disk = Type.Object(
  {
    id: Type.String({ pattern: '^[a-z][a-z0-9-]{0,31}$', description: 'Stable key, e.g. disk0' }),
    sizeMiB: Type.Integer({ minimum: 1, maximum: 16 * 1024 * 1024 }),
    datastoreId: Id,
  },
  { title: 'Disk' },
);
export const Nic = Type.Object(
  {
    id: Type.String({ pattern: '^[a-z][a-z0-9-]{0,31}$', description: 'Stable key, e.g. nic0' }),
    network: Type.String({ minLength: 1, maxLength: 80, description: 'Network (port group) name' }),
    mac: Type.Optional(Type.String({ pattern: '^([0-9a-f]{2}:){5}[0-9a-f]{2}$' })),
  },
  { title: 'Nic' },
);
export const Firmware = Type.Union([Type.Literal('bios'), Type.Literal('efi')]);
/** How a VM's live migrations are protected (docs/encrypted-migration.md). Absent: opportunistic. */
export const MigrationEncryption = Type.Union(
  [Type.Literal('disabled'), Type.Literal('opportunistic'), Type.Literal('required')],
  {
    description:
      'disabled: plaintext; opportunistic (default): encrypted when both agents can; required: encrypted or refused. Encrypted VMs always migrate encrypted.',
  },
);
export type MigrationEncryption = Static<typeof MigrationEncryption>;

/** Absent or null: Microsoft's keys (OVMF's template); else the id of a custom key set. */
const SecureBootKeySetRef = Type.Optional(
  Type.Union([Id, Type.Null()], {
    description: 'Secure Boot key set id (GET /secure-boot/key-sets); null or absent: Microsoft’s keys',
  }),
);

/** A VM's folder: an inventory path such as /prod/payments (no meaning to the host). */
export const Folder = Type.String({
  minLength: 2,
  maxLength: 255,
  pattern: '^(/[A-Za-z0-9][A-Za-z0-9._-]{0,63})+$',
  description: 'Inventory folder path, e.g. /prod/payments: segments of letters, digits, . _ -',
});

export const VmConfig = Type.Object(
  {
    cpus: Type.Integer({ minimum: 1, maximum: 64 }),
    memoryMiB: Type.Integer({ minimum: 32, maximum: 1024 * 1024 }),
    firmware: Firmware,
    secureBoot: Type.Boolean(),
    secureBootKeySet: SecureBootKeySetRef,
    vtpm: Type.Optional(Type.Boolean({ description: 'A vTPM 2.0 (swtpm); needs firmware efi' })),
    disks: Type.Array(Disk, { maxItems: 16 }),
    nics: Type.Array(Nic, { maxItems: 8 }),
    tags: Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 32 }),
    migrationEncryption: Type.Optional(MigrationEncryption),
    folder: Type.Optional(Folder),
  },
  { title: 'VmConfig' },
);
export type VmConfig = Static<typeof VmConfig>;

export const VmEncryption = Type.Object(
  {
    policyId: Type.String(),
    providerId: Type.String({ description: 'The key provider holding the VM’s KEK' }),
    keyId: Type.String({ description: 'The KEK’s KMIP unique identifier (never the key itself)' }),
  },
  { title: 'VmEncryption' },
);
export type VmEncryption = Static<typeof VmEncryption>;

export const Vm = Type.Object(
  {
    id: Id,
    name: Type.String(),
    hostId: Type.String(),
    state: Type.String({ description: 'Runtime state reported by the host: stopped, running, …' }),
    simulated: Type.Boolean({ description: 'True when the host runs the sim driver: nothing really runs' }),
    /** Hardware changes made while running wait for the next power-on. */
    pendingRestart: Type.Boolean(),
    /** null: plain. */
    encryption: Type.Union([VmEncryption, Type.Null()]),
    locked: Type.Boolean({ description: 'Encrypted and its key cannot be had: it cannot start' }),
    lockedReason: Type.Union([Type.String(), Type.Null()]),
    config: VmConfig,
    version: Type.Integer(),
    createdAt: Type.Integer(),
    updatedAt: Type.Integer(),
  },
  { title: 'Vm' },
);
export type Vm = Static<typeof Vm>;

export const VmCreate = Type.Object(
  {
    name: Name,
    hostId: Type.Optional(Id),
    cpus: Type.Optional(Type.Integer({ minimum: 1, maximum: 64, default: 1 })),
    memoryMiB: Type.Optional(Type.Integer({ minimum: 32, maximum: 1024 * 1024, default: 128 })),
    firmware: Type.Optional(Firmware),
    secureBoot: Type.Optional(Type.Boolean()),
    secureBootKeySet: SecureBootKeySetRef,
    vtpm: Type.Optional(Type.Boolean()),
    disks: Type.Optional(Type.Array(Disk, { maxItems: 16 })),
    nics: Type.Optional(Type.Array(Nic, { maxItems: 8 })),
    tags: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 32 })),
    migrationEncryption: Type.Optional(MigrationEncryption),
    folder: Type.Optional(Folder),
    encryptionPolicyId: Type.Optional(
      Type.String({ description: 'Create the VM encrypted under this policy (needs crypto.encryptNew)' }),
    ),
    acceptNoBackup: Type.Optional(
      Type.Boolean({ description: 'Encrypt even though the embedded key server was never backed up' }),
    ),
  },
  { title: 'VmCreate', additionalProperties: false },
);

export const VmPatch = Type.Object(
  {
    name: Type.Optional(Name),
    cpus: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })),
    memoryMiB: Type.Optional(Type.Integer({ minimum: 32, maximum: 1024 * 1024 })),
    firmware: Type.Optional(Firmware),
    secureBoot: Type.Optional(Type.Boolean()),
    secureBootKeySet: SecureBootKeySetRef,
    vtpm: Type.Optional(Type.Boolean()),
    disks: Type.Optional(Type.Array(Disk, { maxItems: 16 })),
    nics: Type.Optional(Type.Array(Nic, { maxItems: 8 })),
    tags: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 32 })),
    migrationEncryption: Type.Optional(MigrationEncryption),
    folder: Type.Optional(
      Type.Union([Folder, Type.Null()], { description: 'Inventory folder path; null: no folder' }),
    ),
  },
  { title: 'VmPatch', additionalProperties: false, minProperties: 1 },
);
export type VmPatch = Static<typeof VmPatch>;

export const Task = Type.Object(
  {
    id: Type.String(),
    kind: Type.String(),
    objectKind: Type.String(),
    objectId: Type.String(),
    user: Type.String(),
    state: Type.String(),
    progress: Type.Integer(),
    error: Type.Union([Type.Null(), Type.Object({ code: Type.String(), message: Type.String() })]),
    result: Type.Unknown(),
    createdAt: Type.Integer(),
    startedAt: Type.Union([Type.Integer(), Type.Null()]),
    finishedAt: Type.Union([Type.Integer(), Type.Null()]),
  },
  { title: 'Task' },
);

export const Host = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    address: Type.String(),
    state: Type.String({
      description:
        'connected, disconnected, failed (its agent failed its host Secure Boot check at start: GET /hosts/{id}/secure-boot says why), revoked',
    }),
    simulated: Type.Boolean(),
    certFingerprint: Type.String(),
    facts: Type.Unknown(),
    joinedAt: Type.Integer(),
    revokedAt: Type.Union([Type.Integer(), Type.Null()]),
  },
  { title: 'Host' },
);

export const Change = Type.Object(
  { path: Type.String(), from: Type.Unknown(), to: Type.Unknown() },
  { title: 'Change' },
);

export const Event = Type.Object(
  {
    seq: Type.Integer(),
    id: Type.String(),
    time: Type.String(),
    type: Type.String(),
    severity: Type.String(),
    user: Type.String(),
    sourceIp: Type.Union([Type.String(), Type.Null()]),
    object: Type.Object({ kind: Type.String(), id: Type.String(), name: Type.String() }),
    changes: Type.Array(Change),
    result: Type.String(),
    message: Type.String(),
    prevHash: Type.String(),
    hash: Type.String(),
  },
  { title: 'Event' },
);

export const MigrateBody = Type.Object(
  { hostId: Id },
  { title: 'MigrateBody', additionalProperties: false, description: 'The destination host' },
);

export const ActionQuery = Type.Object(
  {
    sync: Type.Optional(Type.Boolean({ description: 'Wait for the task to finish (up to timeoutMs)' })),
    timeoutMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 600_000, default: 120_000 })),
  },
  { title: 'ActionQuery' },
);
