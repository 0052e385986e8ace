/**
 * EFI_SIGNATURE_LIST codec (UEFI 2.10 §32.4.1): the payload of the PK, KEK, db and dbx
 * variables is a concatenation of signature lists, each
 *
 *   EFI_GUID SignatureType        x509 / sha256 / …
 *   UINT32   SignatureListSize    whole list, this header included
 *   UINT32   SignatureHeaderSize  bytes of type-specific header after this one (0 for both types here)
 *   UINT32   SignatureSize        size of each EFI_SIGNATURE_DATA that follows
 *   UINT8    SignatureHeader[SignatureHeaderSize]
 *   EFI_SIGNATURE_DATA Signatures[…]  = { EFI_GUID SignatureOwner; UINT8 SignatureData[SignatureSize - 16] }
 *
 * all integers little-endian, GUIDs mixed-endian (see guid.ts). Every entry of a list has
 * the same size, so each X.509 certificate normally gets a list of its own (that is what
 * efitools' cert-to-efi-sig-list writes, byte for byte the same as x509SignatureList).
 *
 * Pure: bytes in, values out, no I/O. Decoding never trusts a size field beyond the
 * buffer it was given.
 */
import { HypersealError } from '../errors.js';
import type { Guid } from './guid.js';
import { EfiGuids, GUID_BYTES, readGuid, writeGuid } from './guid.js';

/** sizeof(EFI_SIGNATURE_LIST) without the variable parts. */
export const ESL_HEADER_BYTES = 28;
export const SHA256_BYTES = 32;
/** Owner GUID + data: the smallest meaningful EFI_SIGNATURE_DATA has one data byte. */
const MIN_SIGNATURE_SIZE = GUID_BYTES + 1;
/** No real variable comes near this; it bounds work on hostile input (edk2 caps a variable at 33 KiB). */
export const MAX_ESL_BYTES = 16 * 1024 * 1024;

export interface EfiSignatureData {
  owner: Guid;
  data: Buffer;
}

export interface EfiSignatureList {
  signatureType: Guid;
  /** Type-specific header; empty for X.509 and SHA-256 lists. */
  header: Buffer;
  /** Each EFI_SIGNATURE_DATA's size (owner GUID + data). */
  signatureSize: number;
  signatures: EfiSignatureData[];
}

function bad(message: string): never {
  throw new HypersealError('HS_ERR_SECUREBOOT_BAD_ESL', message);
}

/** One list holding one DER certificate, as cert-to-efi-sig-list writes it. */
export function x509SignatureList(certDer: Uint8Array, owner: Guid): EfiSignatureList {
  if (certDer.length === 0) bad('an X.509 signature list needs a certificate');
  return {
    signatureType: EfiGuids.EFI_CERT_X509_GUID,
    header: Buffer.alloc(0),
    signatureSize: GUID_BYTES + certDer.length,
    signatures: [{ owner, data: Buffer.from(certDer) }],
  };
}

/** One list holding SHA-256 image hashes (Authenticode digests), each with its owner. */
export function sha256SignatureList(entries: readonly { hash: Uint8Array; owner: Guid }[]): EfiSignatureList {
  if (entries.length === 0) bad('a SHA-256 signature list needs at least one hash');
  for (const e of entries) {
    if (e.hash.length !== SHA256_BYTES) bad(`a SHA-256 hash is ${SHA256_BYTES} bytes, not ${e.hash.length}`);
  }
  return {
    signatureType: EfiGuids.EFI_CERT_SHA256_GUID,
    header: Buffer.alloc(0),
    signatureSize: GUID_BYTES + SHA256_BYTES,
    signatures: entries.map((e) => ({ owner: e.owner, data: Buffer.from(e.hash) })),
  };
}

/** Size in bytes of one encoded list. */
export function signatureListSize(list: EfiSignatureList): number {
  return ESL_HEADER_BYTES + list.header.length + list.signatureSize * list.signatures.length;
}

function checkList(list: EfiSignatureList): void {
  if (!Number.isInteger(list.signatureSize) || list.signatureSize < MIN_SIGNATURE_SIZE) {
    bad(`SignatureSize ${list.signatureSize} is smaller than an owner GUID plus data`);
  }
  for (const s of list.signatures) {
    if (GUID_BYTES + s.data.length !== list.signatureSize) {
      bad(
        `an entry of ${GUID_BYTES + s.data.length} bytes in a list whose SignatureSize is ${list.signatureSize}`,
      );
    }
  }
  checkTypeSize(list.signatureType, list.signatureSize);
}

/** Sizes fixed by the type: a SHA-256 entry is owner + 32 bytes (edk2 refuses anything else). */
function checkTypeSize(type: Guid, signatureSize: number): void {
  if (type === EfiGuids.EFI_CERT_SHA256_GUID && signatureSize !== GUID_BYTES + SHA256_BYTES) {
    bad(`a SHA-256 list has SignatureSize ${GUID_BYTES + SHA256_BYTES}, not ${signatureSize}`);
  }
}

/** Encodes one or more lists back to back: the data of a PK/KEK/db/dbx variable. */
export function encodeSignatureLists(lists: readonly EfiSignatureList[]): Buffer {
  let total = 0;
  for (const list of lists) {
    checkList(list);
    total += signatureListSize(list);
  }
  if (total > MAX_ESL_BYTES) bad(`signature lists of ${total} bytes exceed ${MAX_ESL_BYTES}`);
  const out = Buffer.alloc(total);
  let off = 0;
  for (const list of lists) {
    const size = signatureListSize(list);
    writeGuid(list.signatureType, out, off);
    out.writeUInt32LE(size, off + 16);
    out.writeUInt32LE(list.header.length, off + 20);
    out.writeUInt32LE(list.signatureSize, off + 24);
    off += ESL_HEADER_BYTES;
    off += list.header.copy(out, off);
    for (const s of list.signatures) {
      writeGuid(s.owner, out, off);
      off += GUID_BYTES;
      off += s.data.copy(out, off);
    }
  }
  return out;
}

/**
 * Decodes a variable's data into its lists. The lists must cover the bytes exactly; a list
 * with no entries is accepted (the spec allows it), a truncated one is not.
 */
export function decodeSignatureLists(bytes: Uint8Array): EfiSignatureList[] {
  if (bytes.length > MAX_ESL_BYTES) bad(`signature lists of ${bytes.length} bytes exceed ${MAX_ESL_BYTES}`);
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  const lists: EfiSignatureList[] = [];
  let off = 0;
  while (off < buf.length) {
    if (buf.length - off < ESL_HEADER_BYTES) {
      bad(`${buf.length - off} stray bytes at offset ${off}, less than a list header`);
    }
    const signatureType = readGuid(buf, off);
    const listSize = buf.readUInt32LE(off + 16);
    const headerSize = buf.readUInt32LE(off + 20);
    const signatureSize = buf.readUInt32LE(off + 24);
    if (listSize > buf.length - off)
      bad(`list at offset ${off} claims ${listSize} bytes, ${buf.length - off} remain`);
    if (listSize < ESL_HEADER_BYTES + headerSize) {
      bad(
        `list at offset ${off}: SignatureListSize ${listSize} < header ${ESL_HEADER_BYTES} + ${headerSize}`,
      );
    }
    if (signatureSize < MIN_SIGNATURE_SIZE)
      bad(`list at offset ${off}: SignatureSize ${signatureSize} too small`);
    const body = listSize - ESL_HEADER_BYTES - headerSize;
    if (body % signatureSize !== 0) {
      bad(
        `list at offset ${off}: ${body} bytes of entries is not a multiple of SignatureSize ${signatureSize}`,
      );
    }
    checkTypeSize(signatureType, signatureSize);
    const start = off + ESL_HEADER_BYTES;
    const header = Buffer.from(buf.subarray(start, start + headerSize));
    const signatures: EfiSignatureData[] = [];
    for (let p = start + headerSize; p < off + listSize; p += signatureSize) {
      signatures.push({
        owner: readGuid(buf, p),
        data: Buffer.from(buf.subarray(p + GUID_BYTES, p + signatureSize)),
      });
    }
    lists.push({ signatureType, header, signatureSize, signatures });
    off += listSize;
  }
  return lists;
}
