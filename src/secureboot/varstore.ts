/**
 * The edk2/OVMF variable store (the OVMF_VARS*.fd file a VM's pflash1 holds): parse it,
 * read back the Secure Boot variables, and append keys to a pristine template copy.
 * Pure functions over Buffers; the format is described in qemu-experiments.md §1.9 and
 * edk2's MdeModulePkg/Include/Guid/VariableFormat.h. All integers are little-endian.
 *
 *   0x00  EFI_FIRMWARE_VOLUME_HEADER (FileSystemGuid = EFI_SYSTEM_NV_DATA_FV_GUID, "_FVH",
 *         16-bit checksum over HeaderLength bytes == 0, block map)
 *   HL    VARIABLE_STORE_HEADER (gEfiAuthenticatedVariableGuid, Size, Format 0x5A, State 0xFE)
 *   HL+28 AUTHENTICATED_VARIABLE_HEADER records, 4-byte aligned, until StartId != 0x55AA
 *         (erased flash is 0xFF)
 *   …     after the store: the fault-tolerant-write (FTW) working block and spare area
 *
 * Records are never rewritten in place by the firmware: an update appends a new record
 * and clears State bits of the old one (flash-style), so a store can hold several copies
 * of a variable of which at most one is live. The store carries no checksum or MAC over
 * the records (the protection is that only SMM code may write the flash), so writing
 * offline needs no signing: the firmware trusts what it finds, exactly as it trusts what
 * it wrote itself after verifying a signed update. That is also the risk: a malformed
 * list written here is not caught until boot. Hence the strict rules of
 * appendVariables(): pristine template only, append-only, sizes within the firmware's
 * own limits.
 */
import 'reflect-metadata';
import { X509Certificate } from '@peculiar/x509';
import { createHash } from 'node:crypto';
import { HypersealError } from '../errors.js';
import type { EfiSignatureList } from './esl.js';
import { decodeSignatureLists, SHA256_BYTES } from './esl.js';
import type { Guid } from './guid.js';
import { EfiGuids, GUID_BYTES, readGuid, writeGuid } from './guid.js';

/* ------------------------------------------------------------------ constants (edk2 names) */

export const EFI_VARIABLE_NON_VOLATILE = 0x01;
export const EFI_VARIABLE_BOOTSERVICE_ACCESS = 0x02;
export const EFI_VARIABLE_RUNTIME_ACCESS = 0x04;
export const EFI_VARIABLE_HARDWARE_ERROR_RECORD = 0x08;
export const EFI_VARIABLE_AUTHENTICATED_WRITE_ACCESS = 0x10;
export const EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS = 0x20;
export const EFI_VARIABLE_APPEND_WRITE = 0x40;

/** NV|BS|RT|TIME_BASED_AUTH (0x27): PK, KEK, db, dbx. */
export const SECURE_BOOT_KEY_ATTRIBUTES =
  EFI_VARIABLE_NON_VOLATILE |
  EFI_VARIABLE_BOOTSERVICE_ACCESS |
  EFI_VARIABLE_RUNTIME_ACCESS |
  EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS;
/** NV|BS (0x03): SecureBootEnable and CustomMode, as OVMF's own SecureBootConfigDxe writes them. */
export const SECURE_BOOT_CONFIG_ATTRIBUTES = EFI_VARIABLE_NON_VOLATILE | EFI_VARIABLE_BOOTSERVICE_ACCESS;

const VARIABLE_DATA = 0x55aa;
/** State values; bits are only ever cleared. A record is live when VAR_ADDED (0x3F). */
export const VariableStateBits = {
  VAR_IN_DELETED_TRANSITION: 0xfe,
  VAR_DELETED: 0xfd,
  VAR_HEADER_VALID_ONLY: 0x7f,
  VAR_ADDED: 0x3f,
} as const;

const FV_SIGNATURE = 0x4856465f; // "_FVH"
const FV_MIN_HEADER_BYTES = 0x48;
const VARIABLE_STORE_HEADER_BYTES = 28;
const VARIABLE_STORE_FORMATTED = 0x5a;
const VARIABLE_STORE_HEALTHY = 0xfe;
/** sizeof(AUTHENTICATED_VARIABLE_HEADER). */
export const AUTH_VARIABLE_HEADER_BYTES = 60;
const HEADER_ALIGNMENT = 4;
const FTW_WORKING_HEADER_BYTES = 32;
const ERASED = 0xff;

/** edk2 OvmfPkg PcdMaxAuthVariableSize: 0x8400 for 4 MiB builds, 0x2800 for 1/2 MiB ones. */
const MAX_AUTH_VARIABLE_BYTES_4M = 0x8400;
const MAX_AUTH_VARIABLE_BYTES_2M = 0x2800;
/** Store size of the 4 MiB layout (PcdFlashNvStorageVariableSize 0x40000, minus the FV header). */
const STORE_SIZE_4M = 0x40000 - FV_MIN_HEADER_BYTES;
/**
 * Free space left after our records for what the firmware writes at first boot (Boot####,
 * BootOrder, ConIn/ConOut, certdb, VendorKeysNv, MTC: about 8 KiB in .ms.fd) so it never has
 * to reclaim on its first boot.
 */
export const DEFAULT_RESERVE_BYTES = 16 * 1024;

/* ------------------------------------------------------------------ types */

export interface EfiTime {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
  nanosecond: number;
  timeZone: number;
  daylight: number;
}

/** `live`: the copy the firmware uses; the others are kept only until the next reclaim. */
export type VariableStatus = 'live' | 'in-deleted-transition' | 'deleted' | 'header-only';

export interface VariableRecord {
  /** Offset of the record's header in the file. */
  offset: number;
  /** Header + name + data + padding: where the next record starts. */
  size: number;
  state: number;
  status: VariableStatus;
  attributes: number;
  monotonicCount: bigint;
  timestamp: EfiTime;
  pubKeyIndex: number;
  name: string;
  vendor: Guid;
  data: Buffer;
}

export interface FirmwareVolumeInfo {
  length: number;
  headerLength: number;
  attributes: number;
  revision: number;
  blockSize: number;
  numBlocks: number;
}

export interface VarStore {
  fv: FirmwareVolumeInfo;
  /** File offset of VARIABLE_STORE_HEADER. */
  storeOffset: number;
  /** VARIABLE_STORE_HEADER.Size (includes that header). */
  storeSize: number;
  /** First byte past the variable store. */
  storeEnd: number;
  /** Offset of the first record. */
  variablesStart: number;
  /** Offset where the next record would be appended (first non-0x55AA StartId). */
  freeOffset: number;
  /** Bytes from freeOffset to storeEnd are all erased (0xFF). False means unknown data there. */
  freeAreaErased: boolean;
  records: VariableRecord[];
  /** The FTW working block, if found after the store; pendingWrite means its queue is not empty. */
  ftw: { offset: number; writeQueueSize: number; pendingWrite: boolean } | undefined;
  /** Largest header+name+data one authenticated variable may take, for this layout. */
  maxAuthVariableBytes: number;
}

function bad(message: string): never {
  throw new HypersealError('HS_ERR_SECUREBOOT_BAD_VARSTORE', message);
}

const align = (n: number, a: number): number => Math.ceil(n / a) * a;

/* ------------------------------------------------------------------ parsing */

/** Parses a whole variable store file. Throws HS_ERR_SECUREBOOT_BAD_VARSTORE on anything unexpected. */
export function parseVarStore(bytes: Uint8Array): VarStore {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  const fv = parseFvHeader(buf);
  const storeOffset = fv.headerLength;
  if (buf.length < storeOffset + VARIABLE_STORE_HEADER_BYTES)
    bad('file ends inside the variable store header');
  const sig = readGuid(buf, storeOffset);
  if (sig === EfiGuids.EFI_VARIABLE_GUID) {
    bad('variable store is the non-authenticated kind; Secure Boot needs an authenticated store');
  }
  if (sig !== EfiGuids.EFI_AUTHENTICATED_VARIABLE_GUID) bad(`unknown variable store signature ${sig}`);
  const storeSize = buf.readUInt32LE(storeOffset + 16);
  const format = buf.readUInt8(storeOffset + 20);
  const state = buf.readUInt8(storeOffset + 21);
  const storeEnd = storeOffset + storeSize;
  if (storeSize < VARIABLE_STORE_HEADER_BYTES || storeEnd > fv.length) {
    bad(`variable store size ${storeSize} does not fit the ${fv.length}-byte volume`);
  }
  if (format !== VARIABLE_STORE_FORMATTED)
    bad(`variable store is not formatted (Format 0x${format.toString(16)})`);
  if (state !== VARIABLE_STORE_HEALTHY) bad(`variable store is not healthy (State 0x${state.toString(16)})`);

  const variablesStart = align(storeOffset + VARIABLE_STORE_HEADER_BYTES, HEADER_ALIGNMENT);
  const records: VariableRecord[] = [];
  let off = variablesStart;
  while (off + AUTH_VARIABLE_HEADER_BYTES <= storeEnd && buf.readUInt16LE(off) === VARIABLE_DATA) {
    const record = parseRecord(buf, off, storeEnd);
    // A header torn mid-write (sizes still erased) ends the walk, as in edk2's GetNextVariablePtr.
    if (record === undefined) break;
    records.push(record);
    off += record.size;
  }
  const freeOffset = Math.min(off, storeEnd);
  return {
    fv,
    storeOffset,
    storeSize,
    storeEnd,
    variablesStart,
    freeOffset,
    freeAreaErased: isErased(buf, freeOffset, storeEnd),
    records,
    ftw: findFtwWorkingBlock(buf, storeEnd, fv),
    maxAuthVariableBytes:
      storeSize >= STORE_SIZE_4M ? MAX_AUTH_VARIABLE_BYTES_4M : MAX_AUTH_VARIABLE_BYTES_2M,
  };
}

function parseFvHeader(buf: Buffer): FirmwareVolumeInfo {
  if (buf.length < FV_MIN_HEADER_BYTES) bad(`file of ${buf.length} bytes is too small for a firmware volume`);
  for (let i = 0; i < 16; i++) if (buf[i] !== 0) bad('firmware volume ZeroVector is not zero');
  const fsGuid = readGuid(buf, 16);
  if (fsGuid !== EfiGuids.EFI_SYSTEM_NV_DATA_FV_GUID)
    bad(`firmware volume is not an NV data volume (${fsGuid})`);
  const length = Number(buf.readBigUInt64LE(32));
  if (buf.readUInt32LE(40) !== FV_SIGNATURE) bad('no "_FVH" firmware volume signature');
  const attributes = buf.readUInt32LE(44);
  const headerLength = buf.readUInt16LE(48);
  const revision = buf.readUInt8(55);
  if (length !== buf.length) bad(`firmware volume length ${length} differs from the file size ${buf.length}`);
  if (headerLength < FV_MIN_HEADER_BYTES || headerLength % 2 !== 0 || headerLength > buf.length) {
    bad(`firmware volume HeaderLength ${headerLength} is invalid`);
  }
  let sum = 0;
  for (let i = 0; i < headerLength; i += 2) sum = (sum + buf.readUInt16LE(i)) & 0xffff;
  if (sum !== 0) bad('firmware volume header checksum does not verify');
  // Block map: {NumBlocks, Length} pairs ending with {0, 0}; OVMF has exactly one entry.
  const numBlocks = buf.readUInt32LE(56);
  const blockSize = buf.readUInt32LE(60);
  if (numBlocks === 0 || blockSize === 0 || numBlocks * blockSize !== length) {
    bad(`firmware volume block map (${numBlocks} × ${blockSize}) does not cover its ${length} bytes`);
  }
  return { length, headerLength, attributes, revision, blockSize, numBlocks };
}

function parseRecord(buf: Buffer, off: number, storeEnd: number): VariableRecord | undefined {
  const state = buf.readUInt8(off + 2);
  const attributes = buf.readUInt32LE(off + 4);
  const monotonicCount = buf.readBigUInt64LE(off + 8);
  const timestamp = readEfiTime(buf, off + 16);
  const pubKeyIndex = buf.readUInt32LE(off + 32);
  const nameSize = buf.readUInt32LE(off + 36);
  const dataSize = buf.readUInt32LE(off + 40);
  const vendor = readGuid(buf, off + 44);
  const nameStart = off + AUTH_VARIABLE_HEADER_BYTES;
  const end = nameStart + nameSize + dataSize;
  const status = recordStatus(state);
  if (nameSize > storeEnd || dataSize > storeEnd || end > storeEnd) {
    if (status === 'header-only') return undefined;
    bad(`variable record at 0x${off.toString(16)} runs past the end of the store`);
  }
  let name = '';
  if (status !== 'header-only') {
    if (nameSize < 2 || nameSize % 2 !== 0 || buf.readUInt16LE(nameStart + nameSize - 2) !== 0) {
      bad(`variable record at 0x${off.toString(16)} has a malformed name (NameSize ${nameSize})`);
    }
    name = buf.toString('utf16le', nameStart, nameStart + nameSize - 2);
  }
  return {
    offset: off,
    size: align(end - off, HEADER_ALIGNMENT),
    state,
    status,
    attributes,
    monotonicCount,
    timestamp,
    pubKeyIndex,
    name,
    vendor,
    data: Buffer.from(buf.subarray(nameStart + nameSize, end)),
  };
}

/**
 * Bit 7 clear: header written; bit 6 clear: data written (VAR_ADDED); bit 1 clear: deleted;
 * bit 0 clear: an update is in flight (still valid until the new copy is added).
 */
function recordStatus(state: number): VariableStatus {
  if ((state & 0x80) !== 0 || (state & 0x40) !== 0) return 'header-only';
  if ((state & 0x02) === 0) return 'deleted';
  if ((state & 0x01) === 0) return 'in-deleted-transition';
  return 'live';
}

function readEfiTime(buf: Buffer, off: number): EfiTime {
  return {
    year: buf.readUInt16LE(off),
    month: buf.readUInt8(off + 2),
    day: buf.readUInt8(off + 3),
    hour: buf.readUInt8(off + 4),
    minute: buf.readUInt8(off + 5),
    second: buf.readUInt8(off + 6),
    nanosecond: buf.readUInt32LE(off + 8),
    timeZone: buf.readInt16LE(off + 12),
    daylight: buf.readUInt8(off + 14),
  };
}

/** EFI_TIME of an authenticated variable: UTC, Pad/Nanosecond/TimeZone/Daylight zero (UEFI §8.2.2). */
function writeEfiTime(date: Date | undefined, out: Buffer, off: number): void {
  out.fill(0, off, off + 16);
  if (date === undefined) return;
  out.writeUInt16LE(date.getUTCFullYear(), off);
  out.writeUInt8(date.getUTCMonth() + 1, off + 2);
  out.writeUInt8(date.getUTCDate(), off + 3);
  out.writeUInt8(date.getUTCHours(), off + 4);
  out.writeUInt8(date.getUTCMinutes(), off + 5);
  out.writeUInt8(date.getUTCSeconds(), off + 6);
}

function isErased(buf: Buffer, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (buf[i] !== ERASED) return false;
  return true;
}

/** The FTW working block sits on a block boundary after the store (0x41000 in the 4 MiB layout). */
function findFtwWorkingBlock(buf: Buffer, storeEnd: number, fv: FirmwareVolumeInfo): VarStore['ftw'] {
  for (
    let off = align(storeEnd, fv.blockSize);
    off + FTW_WORKING_HEADER_BYTES <= fv.length;
    off += fv.blockSize
  ) {
    if (readGuid(buf, off) !== EfiGuids.EDKII_WORKING_BLOCK_SIGNATURE_GUID) continue;
    const writeQueueSize = Number(buf.readBigUInt64LE(off + 24));
    const queueStart = off + FTW_WORKING_HEADER_BYTES;
    const queueEnd = Math.min(queueStart + writeQueueSize, fv.length);
    return { offset: off, writeQueueSize, pendingWrite: !isErased(buf, queueStart, queueEnd) };
  }
  return undefined;
}

/* ------------------------------------------------------------------ lookups */

/** The copy of a variable the firmware would use: the added one, else one in deleted transition. */
export function findVariable(store: VarStore, name: string, vendor: Guid): VariableRecord | undefined {
  const copies = store.records.filter((r) => r.name === name && r.vendor === vendor);
  return copies.find((r) => r.status === 'live') ?? copies.find((r) => r.status === 'in-deleted-transition');
}

/** Every variable's current copy, in store order. */
export function liveVariables(store: VarStore): VariableRecord[] {
  const seen = new Set<string>();
  const out: VariableRecord[] = [];
  for (const r of store.records) {
    const key = `${r.vendor}:${r.name}`;
    if (seen.has(key)) continue;
    const current = findVariable(store, r.name, r.vendor);
    if (current !== undefined) {
      seen.add(key);
      out.push(current);
    }
  }
  return out.sort((a, b) => a.offset - b.offset);
}

/* ------------------------------------------------------------------ writing */

export interface NewVariable {
  name: string;
  vendor: Guid;
  attributes: number;
  data: Uint8Array;
  /** Required for time-based authenticated variables (their update baseline); zero otherwise. */
  timestamp?: Date;
}

export interface AppendOptions {
  /** Free bytes that must remain after our records (default DEFAULT_RESERVE_BYTES). */
  reserveBytes?: number;
}

/** Why a store is not a pristine template, or undefined when it is one. */
export function pristineProblem(
  store: VarStore,
  names: readonly { name: string; vendor: Guid }[],
): string | undefined {
  if (!store.freeAreaErased)
    return `the area after the last variable (0x${store.freeOffset.toString(16)}) is not erased`;
  const unfinished = store.records.find(
    (r) => r.status === 'header-only' || r.status === 'in-deleted-transition',
  );
  if (unfinished !== undefined) {
    return `variable ${unfinished.name || '(unnamed)'} at 0x${unfinished.offset.toString(16)} is mid-update (State 0x${unfinished.state.toString(16)})`;
  }
  if (store.ftw === undefined)
    return 'no fault-tolerant-write working block after the store (unknown layout)';
  if (store.ftw.pendingWrite) return 'the fault-tolerant-write journal holds an unfinished write';
  for (const n of names) {
    if (findVariable(store, n.name, n.vendor) !== undefined) return `it already holds ${n.name}`;
  }
  return undefined;
}

/**
 * Appends records to a copy of `template` (the input is not modified). The template must
 * be pristine: parseable, no record mid-update, erased free space, an idle FTW journal,
 * and none of the variables already present (a second live copy would corrupt the store).
 */
export function appendVariables(
  template: Uint8Array,
  variables: readonly NewVariable[],
  opts: AppendOptions = {},
): Buffer {
  const store = parseVarStore(template);
  const seen = new Set<string>();
  for (const v of variables) {
    const key = `${v.vendor}:${v.name}`;
    if (seen.has(key)) throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `variable ${v.name} given twice`);
    seen.add(key);
    checkNewVariable(v);
  }
  const problem = pristineProblem(store, variables);
  if (problem !== undefined) {
    throw new HypersealError(
      'HS_ERR_SECUREBOOT_VARSTORE_NOT_PRISTINE',
      `variable store is not a pristine template: ${problem}`,
    );
  }
  const reserve = opts.reserveBytes ?? DEFAULT_RESERVE_BYTES;
  const encoded = variables.map((v) => encodeRecord(v));
  for (const [i, record] of encoded.entries()) {
    const unpadded =
      record.length - ((HEADER_ALIGNMENT - (record.length % HEADER_ALIGNMENT)) % HEADER_ALIGNMENT);
    if (unpadded > store.maxAuthVariableBytes) {
      throw new HypersealError(
        'HS_ERR_SECUREBOOT_VARSTORE_FULL',
        `${variables[i]?.name ?? '?'} would take ${unpadded} bytes; this firmware allows ${store.maxAuthVariableBytes} per variable`,
      );
    }
  }
  const total = encoded.reduce((n, r) => n + r.length, 0);
  const free = store.storeEnd - store.freeOffset;
  if (total + reserve > free) {
    throw new HypersealError(
      'HS_ERR_SECUREBOOT_VARSTORE_FULL',
      `the variables take ${total} bytes; the store has ${free} free and keeps ${reserve} for the firmware`,
    );
  }
  const out = Buffer.from(template);
  let off = store.freeOffset;
  for (const record of encoded) off += record.copy(out, off);
  return out;
}

function checkNewVariable(v: NewVariable): void {
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
  if (v.name.length === 0 || /[\u0000-\u001f]/.test(v.name)) {
    throw new HypersealError(
      'HS_ERR_INVALID_ARGUMENT',
      'variable names are non-empty and have no control characters',
    );
  }
  if ((v.attributes & EFI_VARIABLE_NON_VOLATILE) === 0) {
    throw new HypersealError(
      'HS_ERR_INVALID_ARGUMENT',
      `${v.name}: only non-volatile variables live in the store`,
    );
  }
  if (v.data.length === 0) {
    throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `${v.name}: a variable with no data does not exist`);
  }
  const timeBased = (v.attributes & EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS) !== 0;
  if (timeBased && v.timestamp === undefined) {
    throw new HypersealError(
      'HS_ERR_INVALID_ARGUMENT',
      `${v.name}: a time-based authenticated variable needs a timestamp`,
    );
  }
  if (
    v.timestamp !== undefined &&
    !(v.timestamp.getUTCFullYear() >= 1900 && v.timestamp.getUTCFullYear() <= 9999)
  ) {
    throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `${v.name}: timestamp out of EFI_TIME range`);
  }
}

/** One AUTHENTICATED_VARIABLE_HEADER + name + data, padded with 0xFF (erased flash) to 4 bytes. */
function encodeRecord(v: NewVariable): Buffer {
  const name = Buffer.from(`${v.name}\0`, 'utf16le');
  const unpadded = AUTH_VARIABLE_HEADER_BYTES + name.length + v.data.length;
  const out = Buffer.alloc(align(unpadded, HEADER_ALIGNMENT), ERASED);
  out.writeUInt16LE(VARIABLE_DATA, 0);
  out.writeUInt8(VariableStateBits.VAR_ADDED, 2);
  out.writeUInt8(0, 3);
  out.writeUInt32LE(v.attributes, 4);
  out.writeBigUInt64LE(0n, 8);
  const timeBased = (v.attributes & EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS) !== 0;
  writeEfiTime(timeBased ? v.timestamp : undefined, out, 16);
  out.writeUInt32LE(0, 32);
  out.writeUInt32LE(name.length, 36);
  out.writeUInt32LE(v.data.length, 40);
  writeGuid(v.vendor, out, 44);
  name.copy(out, AUTH_VARIABLE_HEADER_BYTES);
  Buffer.from(v.data).copy(out, AUTH_VARIABLE_HEADER_BYTES + name.length);
  return out;
}

/* ------------------------------------------------------------------ Secure Boot variables */

export interface SecureBootKeyVariables {
  /** EFI_SIGNATURE_LIST bytes for each variable (see esl.ts). */
  pk: Uint8Array;
  kek: Uint8Array;
  db: Uint8Array;
  /** Omitted: no dbx variable is written (the firmware and OSes treat that as an empty dbx). */
  dbx?: Uint8Array;
  /** Written as SecureBootEnable; default true, so Secure Boot is on from the first boot. */
  secureBootEnable?: boolean;
  /** Timestamp of PK/KEK/db/dbx: signed updates must carry a later one. Default: now. */
  timestamp?: Date;
}

export const SECURE_BOOT_VARIABLES = {
  PK: { name: 'PK', vendor: EfiGuids.EFI_GLOBAL_VARIABLE },
  KEK: { name: 'KEK', vendor: EfiGuids.EFI_GLOBAL_VARIABLE },
  db: { name: 'db', vendor: EfiGuids.EFI_IMAGE_SECURITY_DATABASE_GUID },
  dbx: { name: 'dbx', vendor: EfiGuids.EFI_IMAGE_SECURITY_DATABASE_GUID },
  SecureBootEnable: { name: 'SecureBootEnable', vendor: EfiGuids.EFI_SECURE_BOOT_ENABLE_DISABLE },
  CustomMode: { name: 'CustomMode', vendor: EfiGuids.EFI_CUSTOM_MODE_ENABLE_GUID },
} as const;

/**
 * Enrolls keys into a pristine template copy: PK, KEK, db, dbx (NV|BS|RT|TIME_BASED_AUTH,
 * data = bare signature lists, as the firmware itself stores them after verifying a signed
 * update), SecureBootEnable and CustomMode=0 (standard mode). With a PK present the
 * firmware boots in user mode; it adds certdb, VendorKeysNv and the volatile SecureBoot /
 * SetupMode variables itself at first boot.
 */
export function writeSecureBootVariables(
  template: Uint8Array,
  keys: SecureBootKeyVariables,
  opts: AppendOptions = {},
): Buffer {
  for (const [name, data] of [
    ['PK', keys.pk],
    ['KEK', keys.kek],
    ['db', keys.db],
    ['dbx', keys.dbx],
  ] as const) {
    if (data !== undefined) decodeSignatureLists(data); // refuse malformed lists before they reach firmware
    if (data !== undefined && data.length === 0) {
      throw new HypersealError('HS_ERR_SECUREBOOT_BAD_ESL', `${name} has no signature list`);
    }
  }
  const timestamp = keys.timestamp ?? new Date();
  const auth = (v: { name: string; vendor: Guid }, data: Uint8Array): NewVariable => ({
    ...v,
    attributes: SECURE_BOOT_KEY_ATTRIBUTES,
    data,
    timestamp,
  });
  const variables: NewVariable[] = [
    auth(SECURE_BOOT_VARIABLES.PK, keys.pk),
    auth(SECURE_BOOT_VARIABLES.KEK, keys.kek),
    auth(SECURE_BOOT_VARIABLES.db, keys.db),
  ];
  if (keys.dbx !== undefined) variables.push(auth(SECURE_BOOT_VARIABLES.dbx, keys.dbx));
  variables.push(
    {
      ...SECURE_BOOT_VARIABLES.SecureBootEnable,
      attributes: SECURE_BOOT_CONFIG_ATTRIBUTES,
      data: Uint8Array.of(keys.secureBootEnable === false ? 0 : 1),
    },
    {
      ...SECURE_BOOT_VARIABLES.CustomMode,
      attributes: SECURE_BOOT_CONFIG_ATTRIBUTES,
      data: Uint8Array.of(0),
    },
  );
  return appendVariables(template, variables, opts);
}

/* ------------------------------------------------------------------ read back (status) */

export type EnrolledEntry =
  | {
      type: 'x509';
      owner: Guid;
      subject: string;
      issuer: string;
      notAfter: string;
      /** SHA-256 over the certificate's DER, lower-case hex. */
      sha256: string;
    }
  | { type: 'sha256'; owner: Guid; hash: string }
  | { type: 'other'; owner: Guid; signatureType: Guid; bytes: number };

export interface SecureBootVarsState {
  pk: EnrolledEntry[];
  kek: EnrolledEntry[];
  db: EnrolledEntry[];
  dbx: EnrolledEntry[];
  /** SecureBootEnable as stored; undefined when absent (the firmware creates it on first boot). */
  secureBootEnable: boolean | undefined;
  customMode: boolean | undefined;
  /** No PK: the firmware boots in setup mode and runs anything. */
  setupMode: boolean;
  /**
   * What the guest will see as SecureBoot at the next boot: a PK is enrolled and
   * SecureBootEnable is not 0 (OVMF sets it to 1 itself when a PK exists and it is absent).
   */
  secureBootAtNextBoot: boolean;
  /** Signature lists that could not be decoded, by variable name (a damaged store). */
  problems: string[];
}

/** Reads the Secure Boot variables of a store (a template, or a VM's NVRAM) for status reports. */
export function readSecureBootState(bytes: Uint8Array): SecureBootVarsState {
  const store = parseVarStore(bytes);
  const problems: string[] = [];
  const entries = (v: { name: string; vendor: Guid }): EnrolledEntry[] => {
    const record = findVariable(store, v.name, v.vendor);
    if (record === undefined) return [];
    try {
      return decodeSignatureLists(record.data).flatMap(describeList);
    } catch (err) {
      problems.push(`${v.name}: ${err instanceof Error ? err.message : String(err)}`);
      return [];
    }
  };
  const flag = (v: { name: string; vendor: Guid }): boolean | undefined => {
    const record = findVariable(store, v.name, v.vendor);
    return record === undefined || record.data.length === 0 ? undefined : record.data[0] !== 0;
  };
  const pk = entries(SECURE_BOOT_VARIABLES.PK);
  const secureBootEnable = flag(SECURE_BOOT_VARIABLES.SecureBootEnable);
  // Setup mode means no PK variable at all; a PK whose lists do not decode is a problem, not setup mode.
  const setupMode =
    findVariable(store, SECURE_BOOT_VARIABLES.PK.name, SECURE_BOOT_VARIABLES.PK.vendor) === undefined;
  return {
    pk,
    kek: entries(SECURE_BOOT_VARIABLES.KEK),
    db: entries(SECURE_BOOT_VARIABLES.db),
    dbx: entries(SECURE_BOOT_VARIABLES.dbx),
    secureBootEnable,
    customMode: flag(SECURE_BOOT_VARIABLES.CustomMode),
    setupMode,
    secureBootAtNextBoot: !setupMode && secureBootEnable !== false,
    problems,
  };
}

function describeList(list: EfiSignatureList): EnrolledEntry[] {
  return list.signatures.map((s): EnrolledEntry => {
    if (list.signatureType === EfiGuids.EFI_CERT_SHA256_GUID && s.data.length === SHA256_BYTES) {
      return { type: 'sha256', owner: s.owner, hash: s.data.toString('hex') };
    }
    if (list.signatureType === EfiGuids.EFI_CERT_X509_GUID) {
      try {
        const cert = new X509Certificate(s.data);
        return {
          type: 'x509',
          owner: s.owner,
          subject: cert.subject,
          issuer: cert.issuer,
          notAfter: cert.notAfter.toISOString(),
          sha256: createHash('sha256').update(s.data).digest('hex'),
        };
      } catch {
        // Not parseable as a certificate: report it as opaque rather than failing the status.
      }
    }
    return {
      type: 'other',
      owner: s.owner,
      signatureType: list.signatureType,
      bytes: s.data.length + GUID_BYTES,
    };
  });
}
