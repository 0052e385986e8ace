/**
 * What a stopped VM's cold migration carries besides its record: its NVRAM (the UEFI
 * variable store) and its vTPM's state files, as one small archive sent through the
 * (encrypted, authenticated) migration channel. Pure codec, no I/O.
 *
 *   entry := u16 nameLength ‖ name (UTF-8) ‖ u32 dataLength ‖ data      (big-endian)
 *   archive := entry*                                                   (may be empty)
 *
 * Names are a closed set — `nvram`, `tpm/<file>` — so a peer cannot name a path outside
 * the VM's home; the files are already ciphertext for an encrypted VM (LUKS, swtpm --key).
 */
import { HypersealError } from '../errors.js';

export interface ColdEntry {
  name: string;
  data: Buffer;
}

/** `nvram`, or one of swtpm's state files under `tpm/` (no directories, no dot files). */
export const COLD_ENTRY_NAME = /^(nvram|tpm\/[A-Za-z0-9][A-Za-z0-9._-]{0,63})$/;

/** More than any NVRAM (a few MiB) or TPM state (KiBs): a bigger entry is refused. */
export const MAX_COLD_ENTRY_BYTES = 64 * 1024 * 1024;
const MAX_ENTRIES = 16;

function malformed(what: string): HypersealError {
  return new HypersealError('HS_ERR_MIGRATION_BAD_FRAME', `cold migration archive: ${what}`);
}

export function encodeColdArchive(entries: readonly ColdEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    if (!COLD_ENTRY_NAME.test(e.name)) throw malformed(`bad entry name '${e.name}'`);
    if (e.data.length > MAX_COLD_ENTRY_BYTES) throw malformed(`${e.name} is too large`);
    const name = Buffer.from(e.name, 'utf8');
    const head = Buffer.alloc(2 + name.length + 4);
    head.writeUInt16BE(name.length, 0);
    name.copy(head, 2);
    head.writeUInt32BE(e.data.length, 2 + name.length);
    parts.push(head, e.data);
  }
  return Buffer.concat(parts);
}

export function decodeColdArchive(archive: Buffer): ColdEntry[] {
  const entries: ColdEntry[] = [];
  let at = 0;
  while (at < archive.length) {
    if (entries.length === MAX_ENTRIES) throw malformed('too many entries');
    if (at + 2 > archive.length) throw truncated();
    const nameLength = archive.readUInt16BE(at);
    at += 2;
    if (at + nameLength + 4 > archive.length) throw truncated();
    const name = archive.subarray(at, at + nameLength).toString('utf8');
    at += nameLength;
    if (!COLD_ENTRY_NAME.test(name)) throw malformed(`bad entry name ${JSON.stringify(name)}`);
    if (entries.some((e) => e.name === name)) throw malformed(`${name} twice`);
    const dataLength = archive.readUInt32BE(at);
    at += 4;
    if (dataLength > MAX_COLD_ENTRY_BYTES) throw malformed(`${name} is too large`);
    if (at + dataLength > archive.length) throw truncated();
    entries.push({ name, data: Buffer.from(archive.subarray(at, at + dataLength)) });
    at += dataLength;
  }
  return entries;
}

function truncated(): HypersealError {
  return new HypersealError('HS_ERR_MIGRATION_TRUNCATED', 'cold migration archive: truncated entry');
}
