/**
 * What a stopped VM's cold migration carries besides its record: its NVRAM (the UEFI
 * variable store), its vTPM's state files and the images of disks on the source's local
 * datastore, as one stream of entries sent through the (encrypted, authenticated)
 * migration channel. Pure codec, no I/O.
 *
 *   entry  := u16 nameLength ‖ name (UTF-8) ‖ u64 dataLength ‖ data      (big-endian)
 *   stream := entry*                                                    (may be empty)
 *
 * Names are a closed set — `nvram`, `tpm/<file>`, `disk/<disk id>` — so a peer cannot
 * name a path outside the VM's home or its disks; the files are already ciphertext for an
 * encrypted VM (LUKS, swtpm --key). Small entries (NVRAM, TPM state) are capped so that a
 * peer cannot make the destination hold a huge one in memory; a disk image is streamed to
 * its file by the reader's caller and may be as large as a file can be.
 */
import { HypersealError } from '../errors.js';

export interface ColdEntry {
  name: string;
  data: Buffer;
}

/** `nvram`, one of swtpm's state files under `tpm/`, or `disk/<id>` (no directories, no dot files). */
export const COLD_ENTRY_NAME = /^(nvram|(tpm|disk)\/[A-Za-z0-9][A-Za-z0-9._-]{0,63})$/;

/** More than any NVRAM (a few MiB) or TPM state (KiBs): a bigger one of those is refused. */
export const MAX_COLD_ENTRY_BYTES = 64 * 1024 * 1024;
/** NVRAM, a handful of TPM files, and the disks a VM may have. */
const MAX_ENTRIES = 96;
const MAX_NAME_BYTES = 128;

function malformed(what: string): HypersealError {
  return new HypersealError('HS_ERR_MIGRATION_BAD_FRAME', `cold migration archive: ${what}`);
}

function truncated(): HypersealError {
  return new HypersealError('HS_ERR_MIGRATION_TRUNCATED', 'cold migration archive: truncated entry');
}

export function isDiskEntry(name: string): boolean {
  return name.startsWith('disk/');
}

function checkEntry(name: string, length: number): void {
  if (!COLD_ENTRY_NAME.test(name)) throw malformed(`bad entry name ${JSON.stringify(name)}`);
  if (!Number.isSafeInteger(length) || length < 0) throw malformed(`${name} has a bad length`);
  if (!isDiskEntry(name) && length > MAX_COLD_ENTRY_BYTES) throw malformed(`${name} is too large`);
}

/** The bytes that precede an entry's data. */
export function encodeColdEntryHeader(name: string, length: number): Buffer {
  checkEntry(name, length);
  const n = Buffer.from(name, 'utf8');
  const head = Buffer.alloc(2 + n.length + 8);
  head.writeUInt16BE(n.length, 0);
  n.copy(head, 2);
  head.writeBigUInt64BE(BigInt(length), 2 + n.length);
  return head;
}

export function encodeColdArchive(entries: readonly ColdEntry[]): Buffer {
  return Buffer.concat(entries.flatMap((e) => [encodeColdEntryHeader(e.name, e.data.length), e.data]));
}

/** What the reader found in the bytes pushed to it, in order. */
export type ColdArchivePart =
  | { kind: 'start'; name: string; length: number }
  | { kind: 'data'; name: string; data: Buffer }
  | { kind: 'end'; name: string };

/**
 * Reads the stream as it arrives, without holding an entry in memory: push() returns the
 * entries' starts, data pieces and ends; finish() throws unless the stream ended between
 * entries. Every entry's name and length is checked before any of its data is returned,
 * and a name may come once only.
 */
export class ColdArchiveReader {
  private head = Buffer.alloc(0);
  private current: { name: string; left: number } | undefined;
  private readonly seen = new Set<string>();

  push(chunk: Buffer): ColdArchivePart[] {
    const out: ColdArchivePart[] = [];
    let at = 0;
    while (at < chunk.length) {
      if (this.current !== undefined) {
        const take = Math.min(this.current.left, chunk.length - at);
        out.push({ kind: 'data', name: this.current.name, data: chunk.subarray(at, at + take) });
        at += take;
        this.current.left -= take;
        if (this.current.left === 0) this.endEntry(out);
        continue;
      }
      // A header, possibly split across chunks: gather just enough bytes.
      const need = this.head.length < 2 ? 2 : 2 + this.head.readUInt16BE(0) + 8;
      const take = Math.min(need - this.head.length, chunk.length - at);
      this.head = Buffer.concat([this.head, chunk.subarray(at, at + take)]);
      at += take;
      if (this.head.length === 2 && this.head.readUInt16BE(0) > MAX_NAME_BYTES)
        throw malformed('name too long');
      if (this.head.length < 2 || this.head.length < 2 + this.head.readUInt16BE(0) + 8) continue;
      const nameLength = this.head.readUInt16BE(0);
      const name = this.head.subarray(2, 2 + nameLength).toString('utf8');
      const length = this.head.readBigUInt64BE(2 + nameLength);
      this.head = Buffer.alloc(0);
      if (length > BigInt(Number.MAX_SAFE_INTEGER)) throw malformed(`${name} is too large`);
      checkEntry(name, Number(length));
      if (this.seen.has(name)) throw malformed(`${name} twice`);
      if (this.seen.size === MAX_ENTRIES) throw malformed('too many entries');
      this.seen.add(name);
      this.current = { name, left: Number(length) };
      out.push({ kind: 'start', name, length: Number(length) });
      if (this.current.left === 0) this.endEntry(out);
    }
    return out;
  }

  private endEntry(out: ColdArchivePart[]): void {
    out.push({ kind: 'end', name: (this.current as { name: string }).name });
    this.current = undefined;
  }

  /** The stream ended: anything but a clean boundary between entries is a truncation. */
  finish(): void {
    if (this.current !== undefined || this.head.length > 0) throw truncated();
  }
}

/** A whole archive in memory (small entries): the reader's parts gathered. */
export function decodeColdArchive(archive: Buffer): ColdEntry[] {
  const reader = new ColdArchiveReader();
  const entries: ColdEntry[] = [];
  const pieces = new Map<string, Buffer[]>();
  for (const part of reader.push(archive)) {
    if (part.kind === 'start') pieces.set(part.name, []);
    else if (part.kind === 'data') pieces.get(part.name)?.push(part.data);
    else entries.push({ name: part.name, data: Buffer.concat(pieces.get(part.name) ?? []) });
  }
  reader.finish();
  return entries;
}
