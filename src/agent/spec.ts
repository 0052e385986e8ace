/**
 * Validation of what the manager sends (VmSpec, ids, offsets). Everything from the wire
 * is `unknown` until it passes here; errors are HS_ERR_INVALID_ARGUMENT with the path of
 * the offending field, so a manager bug is named precisely.
 *
 * Unknown fields are refused rather than ignored: a newer manager sending a setting this
 * agent does not know (an encryption flag, say) must not get a VM that silently lacks it.
 */
import { isAbsolute, normalize } from 'node:path';
import { HypersealError } from '../errors.js';
import type {
  CloneRequest,
  EncryptRequest,
  RekeyRequest,
  ShutdownRequest,
  VmDiskSpec,
  VmEncryptionSpec,
  VmNicSpec,
  VmSpec,
} from './api.js';
import type { KeySet } from '../secureboot/keyset.js';
import { validateKeySet } from '../secureboot/keyset.js';
import { checkKekRef } from './vm-keys.js';

/**
 * VM ids become directory names on datastores (`<datastore>/<vmId>/`), so they are
 * restricted to characters that cannot escape a directory or need quoting.
 */
const VM_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** Disk and NIC ids become file names (`disk0.qcow2`) and QEMU ids. */
const DEVICE_ID = /^[A-Za-z][A-Za-z0-9_-]{0,31}$/;
/** A unicast MAC (low bit of the first octet clear), colon-separated. */
const MAC = /^[0-9a-f][02468ace](?::[0-9a-f]{2}){5}$/i;
// eslint-disable-next-line no-control-regex -- refusing control characters is the point
const CONTROL = /[\u0000-\u001f\u007f]/;

export const LIMITS = {
  // The QEMU command-line builder's limits (src/qemu/command-line.ts), so that a spec
  // the API accepts also starts: q35 without an IOMMU tops out at 255 vCPUs.
  maxCpus: 255,
  minMemoryMiB: 32,
  maxMemoryMiB: 4 * 1024 * 1024,
  maxDisks: 16,
  maxDiskSizeMiB: 64 * 1024 * 1024,
  maxNics: 8,
  maxNameLength: 128,
  maxPathLength: 1024,
  maxShutdownTimeoutMs: 10 * 60_000,
} as const;

function invalid(message: string): HypersealError {
  return new HypersealError('HS_ERR_INVALID_ARGUMENT', message);
}

export function parseVmId(value: unknown, where = 'VM id'): string {
  if (typeof value !== 'string' || !VM_ID.test(value) || value === '.' || value === '..') {
    throw invalid(`${where} must match ${VM_ID.source} (got ${JSON.stringify(value)})`);
  }
  return value;
}

type Obj = Record<string, unknown>;

function object(
  value: unknown,
  where: string,
  keys: readonly string[],
  optional: readonly string[] = [],
): Obj {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalid(`${where} must be a JSON object`);
  }
  const obj = value as Obj;
  for (const k of Object.keys(obj)) {
    if (!keys.includes(k) && !optional.includes(k)) {
      throw invalid(`${where} has an unknown field ${JSON.stringify(k)}`);
    }
  }
  for (const k of keys) {
    if (obj[k] === undefined) throw invalid(`${where}.${k} is required`);
  }
  return obj;
}

function int(value: unknown, where: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalid(`${where} must be an integer from ${min} to ${max}`);
  }
  return value;
}

function text(value: unknown, where: string, maxLength: number): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > maxLength || CONTROL.test(value)) {
    throw invalid(`${where} must be a string of 1 to ${maxLength} characters without control characters`);
  }
  return value;
}

function list(value: unknown, where: string, max: number): unknown[] {
  if (!Array.isArray(value) || value.length > max) {
    throw invalid(`${where} must be an array of at most ${max} items`);
  }
  return value;
}

function uniqueIds<T extends { id: string }>(items: T[], where: string): T[] {
  const seen = new Set<string>();
  for (const item of items) {
    if (seen.has(item.id)) throw invalid(`${where} has the id ${JSON.stringify(item.id)} twice`);
    seen.add(item.id);
  }
  return items;
}

function datastorePath(value: unknown, where: string): string {
  const raw = text(value, where, LIMITS.maxPathLength);
  const path = raw.length > 1 ? raw.replace(/\/+$/, '') : raw;
  // Absolute and already normal (no '..', '.', '//'): the agent never resolves a
  // datastore relative to its own working directory or through a parent reference.
  if (!isAbsolute(path) || normalize(path) !== path) {
    throw invalid(`${where} must be an absolute, normalized path (got ${JSON.stringify(raw)})`);
  }
  return path;
}

function disk(value: unknown, where: string): VmDiskSpec {
  const o = object(value, where, ['id', 'sizeMiB', 'datastorePath']);
  const id = o.id;
  if (typeof id !== 'string' || !DEVICE_ID.test(id))
    throw invalid(`${where}.id must match ${DEVICE_ID.source}`);
  return {
    id,
    sizeMiB: int(o.sizeMiB, `${where}.sizeMiB`, 1, LIMITS.maxDiskSizeMiB),
    datastorePath: datastorePath(o.datastorePath, `${where}.datastorePath`),
  };
}

function nic(value: unknown, where: string): VmNicSpec {
  const o = object(value, where, ['id', 'mac', 'network']);
  const id = o.id;
  if (typeof id !== 'string' || !DEVICE_ID.test(id))
    throw invalid(`${where}.id must match ${DEVICE_ID.source}`);
  const mac = o.mac;
  if (typeof mac !== 'string' || !MAC.test(mac)) {
    throw invalid(`${where}.mac must be a unicast MAC address like 52:54:00:12:34:56`);
  }
  return { id, mac: mac.toLowerCase(), network: text(o.network, `${where}.network`, 64) };
}

/** Parses a full VmSpec; `pathId`, when given, must equal the spec's id. */
export function parseVmSpec(value: unknown, pathId?: string): VmSpec {
  const o = object(
    value,
    'spec',
    ['id', 'name', 'cpus', 'memoryMiB', 'firmware', 'secureBoot', 'disks', 'nics'],
    // Absent means plain: what a manager from before encryption sends, and what records
    // written before it hold. Likewise no key set (Microsoft's keys) and no vTPM.
    ['encryption', 'secureBootKeySet', 'vtpm'],
  );
  const id = parseVmId(o.id, 'spec.id');
  if (pathId !== undefined && id !== pathId) {
    throw invalid(`spec.id ${JSON.stringify(id)} differs from the id in the path ${JSON.stringify(pathId)}`);
  }
  const firmware = o.firmware;
  if (firmware !== 'bios' && firmware !== 'efi') throw invalid(`spec.firmware must be 'bios' or 'efi'`);
  if (typeof o.secureBoot !== 'boolean') throw invalid('spec.secureBoot must be true or false');
  if (o.secureBoot && firmware !== 'efi') {
    throw invalid('spec.secureBoot needs firmware "efi": a BIOS VM has no UEFI Secure Boot');
  }
  return {
    id,
    name: text(o.name, 'spec.name', LIMITS.maxNameLength),
    cpus: int(o.cpus, 'spec.cpus', 1, LIMITS.maxCpus),
    memoryMiB: int(o.memoryMiB, 'spec.memoryMiB', LIMITS.minMemoryMiB, LIMITS.maxMemoryMiB),
    firmware,
    secureBoot: o.secureBoot,
    disks: uniqueIds(
      list(o.disks, 'spec.disks', LIMITS.maxDisks).map((d, i) => disk(d, `spec.disks[${i}]`)),
      'spec.disks',
    ),
    nics: uniqueIds(
      list(o.nics, 'spec.nics', LIMITS.maxNics).map((n, i) => nic(n, `spec.nics[${i}]`)),
      'spec.nics',
    ),
    encryption: encryptionSpec(o.encryption, 'spec.encryption'),
    ...optionalSecureBootFields(o, firmware),
  };
}

/** secureBootKeySet and vtpm, omitted when absent or default so that older records compare equal. */
function optionalSecureBootFields(
  o: Obj,
  firmware: 'bios' | 'efi',
): Pick<VmSpec, 'secureBootKeySet' | 'vtpm'> {
  let keySet: KeySet | undefined;
  if (o.secureBootKeySet !== undefined && o.secureBootKeySet !== null) {
    try {
      keySet = validateKeySet(o.secureBootKeySet);
    } catch (err) {
      throw invalid(`spec.secureBootKeySet: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  if (o.vtpm !== undefined && typeof o.vtpm !== 'boolean') throw invalid('spec.vtpm must be true or false');
  if (o.vtpm === true && firmware !== 'efi') {
    throw invalid('spec.vtpm needs firmware "efi": the vTPM is a TPM 2.0 CRB device for UEFI');
  }
  return {
    ...(keySet !== undefined && keySet.kind === 'custom' ? { secureBootKeySet: keySet } : {}),
    ...(o.vtpm === true ? { vtpm: true } : {}),
  };
}

function encryptionSpec(value: unknown, where: string): VmEncryptionSpec | null {
  if (value === undefined || value === null) return null;
  const o = object(value, where, ['kekRef']);
  return { kekRef: checkKekRef(o.kekRef, `${where}.kekRef`) };
}

/** Body of encrypt: `{ kekRef }`. */
export function parseEncryptRequest(value: unknown): EncryptRequest {
  const o = object(value, 'body', ['kekRef']);
  return { kekRef: checkKekRef(o.kekRef, 'kekRef') };
}

export function parseRekeyRequest(value: unknown): RekeyRequest {
  const o = object(value, 'body', ['kekRef', 'deep']);
  if (typeof o.deep !== 'boolean') throw invalid('deep must be true or false');
  return { kekRef: checkKekRef(o.kekRef, 'kekRef'), deep: o.deep };
}

export function parseCloneRequest(value: unknown): CloneRequest {
  const o = object(value, 'body', ['spec']);
  return { spec: parseVmSpec(o.spec) };
}

const MAX_KEYS_PER_CALL = 10_000;

export function parsePutKeys(value: unknown): { ref: string; material: Buffer }[] {
  const o = object(value, 'body', ['keys']);
  return list(o.keys, 'keys', MAX_KEYS_PER_CALL).map((k, i) => {
    const e = object(k, `keys[${i}]`, ['ref', 'material']);
    const material = typeof e.material === 'string' ? Buffer.from(e.material, 'base64') : Buffer.alloc(0);
    if (material.length !== 32 || material.toString('base64') !== e.material) {
      throw invalid(`keys[${i}].material must be base64 of 32 bytes`);
    }
    return { ref: checkKekRef(e.ref, `keys[${i}].ref`), material };
  });
}

export function parseKeyRefs(value: unknown): string[] {
  const o = object(value, 'body', ['refs']);
  return list(o.refs, 'refs', MAX_KEYS_PER_CALL).map((r, i) => checkKekRef(r, `refs[${i}]`));
}

/** The shutdown body is optional; an empty body means "do not wait". */
export function parseShutdownRequest(value: unknown): Required<ShutdownRequest> {
  if (value === null || value === undefined) return { timeoutMs: 0 };
  if (typeof value !== 'object' || Array.isArray(value)) throw invalid('shutdown body must be a JSON object');
  const o = value as Obj;
  for (const k of Object.keys(o)) {
    if (k !== 'timeoutMs') throw invalid(`shutdown body has an unknown field ${JSON.stringify(k)}`);
  }
  return {
    timeoutMs: o.timeoutMs === undefined ? 0 : int(o.timeoutMs, 'timeoutMs', 0, LIMITS.maxShutdownTimeoutMs),
  };
}

/** Console offsets are byte offsets into the serial log; absent means 0. */
export function parseOffset(value: string | null): number {
  if (value === null || value === '') return 0;
  if (!/^\d{1,15}$/.test(value)) throw invalid('offset must be a non-negative integer');
  return Number(value);
}

/** Whether two specs differ in anything that needs the VM stopped to change. */
export function hardwareDiffers(a: VmSpec, b: VmSpec): boolean {
  const { name: _a, ...hwA } = a;
  const { name: _b, ...hwB } = b;
  return JSON.stringify(hwA) !== JSON.stringify(hwB);
}

/** A migration's parameters, decoded: key and nonce as Buffers the caller zeroizes. */
export interface ParsedMigration {
  id: string;
  cipher: 'aes-256-gcm' | 'none';
  key?: Buffer;
  nonce?: Buffer;
}

const MIGRATION_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;

function base64Of(value: unknown, bytes: number, where: string): Buffer {
  const b = typeof value === 'string' ? Buffer.from(value, 'base64') : Buffer.alloc(0);
  if (b.length !== bytes || b.toString('base64') !== value) {
    b.fill(0);
    throw invalid(`${where} must be base64 of ${bytes} bytes`);
  }
  return b;
}

function migration(value: unknown, where: string): ParsedMigration {
  const o = object(value, where, ['id', 'cipher'], ['key', 'nonce']);
  const id = migrationIdOf(o.id, `${where}.id`);
  if (o.cipher === 'none') {
    if (o.key !== undefined || o.nonce !== undefined) throw invalid(`${where}: cipher none takes no key`);
    return { id, cipher: 'none' };
  }
  if (o.cipher !== 'aes-256-gcm') throw invalid(`${where}.cipher must be aes-256-gcm or none`);
  const key = base64Of(o.key, 32, `${where}.key`);
  try {
    return { id, cipher: 'aes-256-gcm', key, nonce: base64Of(o.nonce, 8, `${where}.nonce`) };
  } catch (err) {
    key.fill(0);
    throw err;
  }
}

/** Body of migrationIncoming: `{ spec, record, migration }` (the spec's id is the path's). */
export function parseMigrationIncoming(
  value: unknown,
  pathId: string,
): {
  spec: VmSpec;
  record: Record<string, unknown>;
  migration: ParsedMigration;
  cold: boolean;
  copyDisks: boolean;
} {
  const o = object(value, 'body', ['spec', 'record', 'migration'], ['cold', 'copyDisks']);
  if (o.cold !== undefined && typeof o.cold !== 'boolean') throw invalid('cold must be true or false');
  if (o.copyDisks !== undefined && typeof o.copyDisks !== 'boolean') {
    throw invalid('copyDisks must be true or false');
  }
  const spec = parseVmSpec(o.spec, pathId);
  if (typeof o.record !== 'object' || o.record === null || Array.isArray(o.record)) {
    throw invalid('record must be a JSON object (the source agent’s VM record)');
  }
  return {
    spec,
    record: o.record as Record<string, unknown>,
    cold: o.cold === true,
    copyDisks: o.copyDisks === true,
    migration: migration(o.migration, 'migration'),
  };
}

/** Body of migrationOutgoing: `{ migration, peer: { host, port } }`. */
export function parseMigrationOutgoing(value: unknown): {
  migration: ParsedMigration;
  peer: { host: string; port: number };
  cold: boolean;
  nbdPeer?: { host: string; port: number };
  copyDisks?: string[];
} {
  const o = object(value, 'body', ['migration', 'peer'], ['cold', 'nbdPeer', 'copyDisks']);
  const p = object(o.peer, 'peer', ['host', 'port']);
  const n = o.nbdPeer === undefined ? undefined : object(o.nbdPeer, 'nbdPeer', ['host', 'port']);
  if (o.cold !== undefined && typeof o.cold !== 'boolean') throw invalid('cold must be true or false');
  return {
    cold: o.cold === true,
    peer: { host: text(p.host, 'peer.host', 253), port: int(p.port, 'peer.port', 1, 65535) },
    ...(n
      ? { nbdPeer: { host: text(n.host, 'nbdPeer.host', 253), port: int(n.port, 'nbdPeer.port', 1, 65535) } }
      : {}),
    ...(o.copyDisks !== undefined ? { copyDisks: diskIds(o.copyDisks) } : {}),
    migration: migration(o.migration, 'migration'),
  };
}

/** Body of migrationSettle: `{ migrationId }`. */
export function parseMigrationSettle(value: unknown): { migrationId: string } {
  const o = object(value, 'body', ['migrationId']);
  return { migrationId: migrationIdOf(o.migrationId, 'migrationId') };
}

/** Body of migrationResolve: `{ migrationId, moved }`. */
export function parseMigrationResolve(value: unknown): { migrationId: string; moved: boolean } {
  const o = object(value, 'body', ['migrationId', 'moved']);
  if (typeof o.moved !== 'boolean') throw invalid('moved must be true or false');
  return { migrationId: migrationIdOf(o.migrationId, 'migrationId'), moved: o.moved };
}

function migrationIdOf(value: unknown, where: string): string {
  if (typeof value !== 'string' || !MIGRATION_ID.test(value)) {
    throw invalid(`${where} must match ${MIGRATION_ID.source}`);
  }
  return value;
}

function diskIds(value: unknown): string[] {
  return list(value, 'copyDisks', LIMITS.maxDisks).map((id, i) => {
    if (typeof id !== 'string' || !DEVICE_ID.test(id)) {
      throw invalid(`copyDisks[${i}] must match ${DEVICE_ID.source}`);
    }
    return id;
  });
}
