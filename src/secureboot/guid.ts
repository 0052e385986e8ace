/**
 * EFI GUIDs: the text form ("8be4df61-93ca-11d2-aa0d-00e098032b8c", always lower case
 * here) and the 16-byte in-memory form UEFI uses, which is mixed-endian: the first three
 * fields (u32, u16, u16) are little-endian, the last eight bytes are stored as written.
 * (That is Python's uuid.bytes_le, and Microsoft's GUID struct laid out on x86.)
 */
import { HypersealError } from '../errors.js';
import type { ErrorCode } from '../errors.js';

declare const guidBrand: unique symbol;
/** A GUID in canonical lower-case text form. */
export type Guid = string & { readonly [guidBrand]: true };

export const GUID_BYTES = 16;
const GUID_TEXT = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Well-known GUIDs, named as in the UEFI specification and edk2. */
export const EfiGuids = {
  /** EFI_GLOBAL_VARIABLE: PK, KEK, SecureBoot, SetupMode, Boot####… */
  EFI_GLOBAL_VARIABLE: '8be4df61-93ca-11d2-aa0d-00e098032b8c' as Guid,
  /** EFI_IMAGE_SECURITY_DATABASE_GUID: db, dbx, dbt. */
  EFI_IMAGE_SECURITY_DATABASE_GUID: 'd719b2cb-3d3a-4596-a3bc-dad00e67656f' as Guid,
  /** EFI_SECURE_BOOT_ENABLE_DISABLE (edk2): SecureBootEnable. */
  EFI_SECURE_BOOT_ENABLE_DISABLE: 'f0a30bc7-af08-4556-99c4-001009c93a44' as Guid,
  /** EFI_CUSTOM_MODE_ENABLE_GUID (edk2): CustomMode. */
  EFI_CUSTOM_MODE_ENABLE_GUID: 'c076ec0c-7028-4399-a072-71ee5c448b9f' as Guid,
  /** EFI_CERT_DB_GUID (edk2): certdb, kept by the firmware itself. */
  EFI_CERT_DB_GUID: 'd9bee56e-75dc-49d9-b4d7-b534210f637a' as Guid,
  /** EFI_VENDOR_KEYS_NV_GUID (edk2): VendorKeysNv, kept by the firmware itself. */
  EFI_VENDOR_KEYS_NV_GUID: '9073e4e0-60ec-4b6e-9903-4c223c260f3c' as Guid,
  /** EFI_CERT_X509_GUID: signature type of a DER X.509 certificate entry. */
  EFI_CERT_X509_GUID: 'a5c059a1-94e4-4aa7-87b5-ab155c2bf072' as Guid,
  /** EFI_CERT_SHA256_GUID: signature type of a SHA-256 (Authenticode) image hash entry. */
  EFI_CERT_SHA256_GUID: 'c1c41626-504c-4092-aca9-41f936934328' as Guid,
  /** EFI_SYSTEM_NV_DATA_FV_GUID: file system GUID of the firmware volume holding variables. */
  EFI_SYSTEM_NV_DATA_FV_GUID: 'fff12b8d-7696-4c8b-a985-2747075b4f50' as Guid,
  /** gEfiAuthenticatedVariableGuid: signature of an authenticated variable store. */
  EFI_AUTHENTICATED_VARIABLE_GUID: 'aaf32c78-947b-439a-a180-2e144ec37792' as Guid,
  /** gEfiVariableGuid: signature of a plain (non-authenticated) variable store. */
  EFI_VARIABLE_GUID: 'ddcf3616-3275-4164-98b6-fe85707ffe7d' as Guid,
  /** EDKII_WORKING_BLOCK_SIGNATURE_GUID: fault-tolerant-write working block header. */
  EDKII_WORKING_BLOCK_SIGNATURE_GUID: '9e58292b-7c68-497d-a0ce-6500fd9f1b95' as Guid,
} as const;

/** Accepts any letter case and optional braces; returns the canonical form. */
export function parseGuid(value: unknown, what = 'GUID', code: ErrorCode = 'HS_ERR_INVALID_ARGUMENT'): Guid {
  if (typeof value === 'string') {
    const text = value.replace(/^\{(.*)\}$/, '$1').toLowerCase();
    if (GUID_TEXT.test(text)) return text as Guid;
  }
  throw new HypersealError(code, `${what} must be a GUID like 8be4df61-93ca-11d2-aa0d-00e098032b8c`);
}

export function isGuid(value: unknown): value is Guid {
  return typeof value === 'string' && GUID_TEXT.test(value);
}

/** Writes the 16-byte mixed-endian form of `guid` into `out` at `offset`. */
export function writeGuid(guid: Guid, out: Uint8Array, offset: number): void {
  const hex = guid.replace(/-/g, '');
  const bytes = Buffer.from(hex, 'hex');
  // Data1 (u32), Data2 (u16), Data3 (u16) little-endian; Data4[8] as is.
  const order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
  for (let i = 0; i < GUID_BYTES; i++) out[offset + i] = bytes[order[i] as number] as number;
}

export function guidToBytes(guid: Guid): Buffer {
  const out = Buffer.alloc(GUID_BYTES);
  writeGuid(guid, out, 0);
  return out;
}

/** Reads a mixed-endian GUID; the caller has checked that 16 bytes are there. */
export function readGuid(buf: Uint8Array, offset: number): Guid {
  const b = (i: number): string => (buf[offset + i] as number).toString(16).padStart(2, '0');
  const part = (idx: readonly number[]): string => idx.map(b).join('');
  return [part([3, 2, 1, 0]), part([5, 4]), part([7, 6]), part([8, 9]), part([10, 11, 12, 13, 14, 15])].join(
    '-',
  ) as Guid;
}
