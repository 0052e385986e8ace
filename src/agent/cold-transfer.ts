/**
 * The I/O of a stopped VM's cold migration (the format is migration/cold-archive.ts):
 * the source writes its files — NVRAM, vTPM state and the images of disks on its local
 * datastore — into the migration channel's local socket; the destination's sink reads the
 * entries as they arrive and streams each into a file of its own, never holding a disk
 * in memory.
 *
 * Nothing the destination writes is in place until the whole stream is in and the channel
 * has authenticated its end (MigrationReceiver.done): entries land as `<file>.incoming-<id>`
 * and install() renames them afterwards. A stream cut or refused midway leaves only
 * temporary files, which the caller removes (names() lists them).
 */
import { once } from 'node:events';
import {
  closeSync,
  createReadStream,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
} from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { HypersealError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import type { ColdEntry } from '../migration/cold-archive.js';
import { ColdArchiveReader, encodeColdArchive, encodeColdEntryHeader } from '../migration/cold-archive.js';

export interface ColdReceived {
  name: string;
  /** Where it was written, and where install() puts it. */
  tmp: string;
  final: string;
  bytes: number;
}

export interface ColdSink {
  /** The entries, once the one connection ended cleanly and every file is flushed. */
  readonly done: Promise<ColdReceived[]>;
  /** Every temporary file made so far (for cleanup after a failure). */
  temporaryFiles(): string[];
  close(): void;
}

/** The data of one connection, a chunk at a time (backpressure: the next read waits). */
async function writeAll(fh: FileHandle, data: Buffer): Promise<void> {
  let at = 0;
  while (at < data.length) at += (await fh.write(data, at, data.length - at)).bytesWritten;
}

/**
 * Listens on `socketPath` for the channel's one connection. `targetOf(name)` says where an
 * entry goes, or undefined for an entry this VM does not expect (the stream is refused).
 */
export async function coldSink(
  socketPath: string,
  targetOf: (name: string) => string | undefined,
  suffix: string,
): Promise<ColdSink> {
  let settle!: { resolve: (r: ColdReceived[]) => void; reject: (e: unknown) => void };
  const done = new Promise<ColdReceived[]>((resolve, reject) => (settle = { resolve, reject }));
  done.catch(() => undefined);
  const received: ColdReceived[] = [];
  const receive = async (sock: net.Socket): Promise<ColdReceived[]> => {
    const reader = new ColdArchiveReader();
    let fh: FileHandle | undefined;
    try {
      for await (const chunk of sock as AsyncIterable<Buffer>) {
        for (const part of reader.push(chunk)) {
          if (part.kind === 'start') {
            const final = targetOf(part.name);
            if (final === undefined) {
              throw new HypersealError(
                'HS_ERR_MIGRATION_BAD_FRAME',
                `cold migration archive: ${part.name} is not expected for this VM`,
              );
            }
            const tmp = `${final}.incoming-${suffix}`;
            mkdirSync(dirname(final), { recursive: true, mode: 0o700 });
            received.push({ name: part.name, tmp, final, bytes: part.length });
            fh = await open(tmp, 'w', 0o600);
          } else if (part.kind === 'data') {
            await writeAll(fh as FileHandle, part.data);
          } else {
            // Durable before the source may delete its copy (it does once we acknowledge).
            await (fh as FileHandle).sync();
            await (fh as FileHandle).close();
            fh = undefined;
          }
        }
      }
      reader.finish();
      return received;
    } finally {
      await fh?.close().catch(() => undefined);
    }
  };
  const server = net.createServer((sock) => {
    server.close();
    receive(sock).then(settle.resolve, (err: unknown) => {
      sock.destroy();
      settle.reject(err);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, resolve);
  });
  return {
    done,
    temporaryFiles: () => received.map((r) => r.tmp),
    close: () => {
      server.close();
      settle.reject(new Error('closed'));
    },
  };
}

/** Puts each received file in place (rename: all or nothing per file) and syncs its directory. */
export function installReceived(received: readonly Pick<ColdReceived, 'tmp' | 'final'>[]): void {
  for (const r of received) {
    renameSync(r.tmp, r.final);
    try {
      const dir = openSync(dirname(r.final), 'r');
      try {
        fsyncSync(dir);
      } finally {
        closeSync(dir);
      }
    } catch {
      // Some file systems cannot sync a directory; the rename itself is done.
    }
  }
}

export interface ColdFile {
  /** `disk/<id>`. */
  name: string;
  path: string;
}

/**
 * Source: writes the small entries, then each file (streamed), into the channel's local
 * socket. `onProgress(sent, total)` follows the bytes. A file that changes size while it
 * is read fails the transfer (a stopped VM's files do not change).
 */
export async function sendColdStream(
  socketPath: string,
  small: readonly ColdEntry[],
  files: readonly ColdFile[],
  onProgress: (sent: number, total: number) => void,
): Promise<void> {
  const sizes = files.map((f) => statSync(f.path).size);
  const head = encodeColdArchive(small);
  const total = head.length + sizes.reduce((a, b) => a + b, 0);
  const sock = net.connect(socketPath);
  await once(sock, 'connect');
  let sent = 0;
  const write = async (data: Buffer): Promise<void> => {
    sent += data.length;
    if (!sock.write(data)) await once(sock, 'drain');
  };
  try {
    await write(head);
    for (const [i, f] of files.entries()) {
      const size = sizes[i] as number;
      await write(encodeColdEntryHeader(f.name, size));
      let read = 0;
      for await (const chunk of createReadStream(f.path, {
        highWaterMark: 1024 * 1024,
      }) as AsyncIterable<Buffer>) {
        read += chunk.length;
        if (read > size) break;
        await write(chunk);
        onProgress(sent, total);
      }
      if (read !== size) {
        throw new HypersealError(
          'HS_ERR_MIGRATION_FAILED',
          `${f.name} changed size while it was sent (${size} → ${read} bytes)`,
        );
      }
    }
    await new Promise<void>((resolve) => sock.end(resolve));
  } catch (err) {
    sock.destroy();
    throw err;
  }
}

/**
 * The destination's note of a migration under way, in the VM's home beside (and before)
 * its record, so that an agent killed at any point recovers to a consistent state:
 * - `receiving`: the stream is not all in; the source still has the VM. On restart the
 *   half-received VM is dropped (its home, the temporary files of a cold migration, the
 *   images a live one created for its disk copies; the driver ends its QEMU first).
 * - `received`: cold, every file is written and fsynced; live, QEMU has the whole stream.
 *   Only now is the ACK sent, and after it nothing may be dropped: on restart a cold
 *   migration's files are put in place, and either kind of VM is kept.
 */
export interface IncomingMarker {
  migrationId: string;
  /** Absent: cold (markers written before live ones had one). */
  kind?: 'cold' | 'live';
  phase: 'receiving' | 'received';
  /**
   * Cold: disk images that arrive (final paths; their temporary files are
   * `<path>.incoming-<id>`). Live: the images created here for the disk copies.
   */
  disks: string[];
  /** With `received`: what to rename into place. */
  received?: { tmp: string; final: string }[];
}

export const INCOMING_MARKER = 'incoming.json';

export function writeIncomingMarker(home: string, marker: IncomingMarker): void {
  writeFileAtomic(join(home, INCOMING_MARKER), JSON.stringify(marker), 0o600);
}

export function clearIncomingMarker(home: string): void {
  rmSync(join(home, INCOMING_MARKER), { force: true });
}

/** The marker in `home`, if there is a readable one. */
export function readIncomingMarker(home: string): Partial<IncomingMarker> | undefined {
  try {
    return JSON.parse(readFileSync(join(home, INCOMING_MARKER), 'utf8')) as Partial<IncomingMarker>;
  } catch {
    return undefined;
  }
}

/**
 * At agent start, for a home holding a marker: finishes a received migration (true: keep
 * the VM) or drops an unfinished one (false: the home and temporary files are gone).
 */
export function recoverIncoming(home: string): boolean {
  const file = join(home, INCOMING_MARKER);
  if (!existsSync(file)) return true;
  // Unreadable: torn before its first complete write, so nothing was acknowledged yet.
  const marker = readIncomingMarker(home) ?? {};
  const live = marker.kind === 'live';
  if (marker.phase === 'received' && (live || Array.isArray(marker.received))) {
    if (!live) installReceived((marker.received ?? []).filter((r) => existsSync(r.tmp)));
    rmSync(file, { force: true });
    return true;
  }
  for (const disk of marker.disks ?? []) {
    const path = live ? disk : `${disk}.incoming-${String(marker.migrationId)}`;
    rmSync(path, { force: true });
    try {
      rmdirSync(dirname(path));
    } catch {
      // Not empty (the home itself, or other VMs' files), or gone.
    }
  }
  rmSync(home, { recursive: true, force: true });
  return false;
}

/**
 * Before the ACK: every `expected` entry arrived, whole and fsynced, and the marker says
 * `received` — from here a restart keeps the VM.
 */
export async function confirmReceived(
  sink: ColdSink,
  home: string,
  marker: Pick<IncomingMarker, 'migrationId' | 'disks'>,
  expected: readonly string[],
): Promise<void> {
  const got = await sink.done;
  const missing = expected.filter((name) => !got.some((g) => g.name === name));
  if (missing.length > 0) {
    throw new HypersealError(
      'HS_ERR_MIGRATION_TRUNCATED',
      `the cold migration stream lacks ${missing.join(', ')}`,
    );
  }
  writeIncomingMarker(home, {
    ...marker,
    phase: 'received',
    received: got.map(({ tmp, final }) => ({ tmp, final })),
  });
}
