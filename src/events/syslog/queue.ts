/**
 * A durable FIFO on disk, one per syslog target: events wait here until the collector has
 * them, so a collector that is down (or a manager that crashes) loses nothing.
 *
 * Layout of the queue directory:
 *
 *   000000000001.seg   segment files, append-only: an 8-byte header ("HSSQ", u32 version 1)
 *   000000000002.seg   then records; numbered consecutively, the highest is written to
 *   cursor.json        {"version":1,"segment":N,"offset":M}: the first record not yet
 *                      acknowledged; replaced atomically (temporary file, fsync, rename)
 *   lock               the pid of the process that has the queue open
 *
 * A record is `u32 length | u32 CRC-32 | payload`, payload = `u8 idLength | event id |
 * body` (big-endian; the body is the formatted messages, ready to send).
 *
 * Durability: enqueue() resolves once its record is on disk (written and fdatasync'd).
 * Records are written in groups, as WalFlusher does for SQLite: every record enqueued while
 * one group is being written and synced goes into the next group, so a slow disk makes
 * bigger groups, not a longer wait per record. Only one writer exists, so records land in
 * enqueue() order, and a group is written at the position where the previous one ended.
 *
 * Crash safety (kill -9 at any point):
 *  - a torn group at the end of the last segment (a record cut short, or whose CRC does not
 *    match: bytes written but not synced) is cut off at open. Such records were never
 *    confirmed to their caller; they are never delivered half;
 *  - a segment is rotated only between groups, after its last group is synced, and a new
 *    segment appears (rename) only with its header on disk: every segment but the last is
 *    complete, so a bad record anywhere else is real damage (HS_ERR_SYSLOG_QUEUE_CORRUPT);
 *  - the cursor is written after the acknowledgement it records, and segments are deleted
 *    only after a cursor beyond them is on disk.
 *
 * Delivery: a record acknowledged (ack()) is never read again by this queue object, and
 * never after a clean close() (which writes the cursor). The cursor is written at most
 * every `cursorIntervalMs`, so a crash can forget the last acknowledgements: those records
 * are delivered again after the restart. That is at-least-once, acceptable only because
 * duplicates are recognisable — every message carries its event's id (and seq), which a
 * collector or SIEM can de-duplicate on.
 */
import fs from 'node:fs';
import zlib from 'node:zlib';
import { join } from 'node:path';
import { HypersealError, isHypersealError } from '../../errors.js';
import { writeFileAtomic } from '../../fsutil.js';
import { trace } from '../../trace.js';

export interface QueuePosition {
  readonly segment: number;
  readonly offset: number;
}

export interface QueueRecord {
  /** The event id this record carries. */
  readonly id: string;
  /** The formatted messages (octet-counted frames). */
  readonly body: Buffer;
  /** Where the record starts. */
  readonly pos: QueuePosition;
  /** Where the next record starts: ack() up to here acknowledges this one. */
  readonly next: QueuePosition;
}

export interface DiskQueueOptions {
  readonly dir: string;
  /** A segment is closed and a new one started once it reaches this size. Default 8 MiB. */
  readonly segmentBytes?: number;
  /** enqueue() refuses a record beyond this many unacknowledged bytes. Default 1 GiB. */
  readonly maxQueueBytes?: number;
  /** The acknowledged position is written at most this often. Default 100 ms. */
  readonly cursorIntervalMs?: number;
  /**
   * The latest durable records are also kept in memory, up to this many bytes, so that a
   * sender keeping up reads them from there rather than back from the file. Default 16 MiB.
   */
  readonly memoryBytes?: number;
  /** Called (synchronously) whenever records became durable: readers may read on. */
  readonly onDurable?: () => void;
  /**
   * Take the directory's lock file in open() and release it in close(). Default true;
   * false when the caller holds it (lockQueueDir), as the sink does from its own thread.
   */
  readonly lock?: boolean;
}

export const DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024;
export const DEFAULT_MAX_QUEUE_BYTES = 1024 * 1024 * 1024;
export const DEFAULT_CURSOR_INTERVAL_MS = 100;
export const DEFAULT_MEMORY_BYTES = 16 * 1024 * 1024;

const MAGIC = Buffer.from('HSSQ', 'latin1');
const VERSION = 1;
export const SEGMENT_HEADER_BYTES = 8;
const RECORD_HEADER_BYTES = 8;
/** Larger lengths are garbage (a torn or zeroed header), not records. */
export const MAX_RECORD_BYTES = 16 * 1024 * 1024;
const MAX_ID_BYTES = 255;
const CURSOR_FILE = 'cursor.json';
const LOCK_FILE = 'lock';
const SEGMENT_NAME = /^(\d{12})\.seg$/;

// ---------------------------------------------------------------------------------------
// CRC-32 (IEEE 802.3, as zlib): detects a torn or damaged record. zlib.crc32 (native)
// appeared in Node 20.15; on older 20.x the table version below does it (~1 µs a record).

const CRC_TABLE = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
})();

export function crc32Js(buf: Uint8Array, start = 0, end = buf.length): number {
  let c = -1;
  for (let i = start; i < end; i++) c = (CRC_TABLE[(c ^ (buf[i] as number)) & 0xff] as number) ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

const nativeCrc32 = (zlib as { crc32?: (data: Uint8Array) => number }).crc32;

export function crc32(buf: Uint8Array, start = 0, end = buf.length): number {
  return nativeCrc32 === undefined ? crc32Js(buf, start, end) : nativeCrc32(buf.subarray(start, end));
}

// ---------------------------------------------------------------------------------------
// Records

/** A record measured (recordLayout) and ready to be written (writeRecord). */
export interface RecordLayout {
  readonly id: string;
  readonly body: Buffer | readonly string[];
  readonly idLength: number;
  /** For messages: `${length} ` prefixes and UTF-8 lengths. */
  readonly prefixes: readonly string[];
  readonly lengths: readonly number[];
  /** Bytes of the whole record, header included. */
  readonly size: number;
}

/**
 * Measures the record of event `id`. The body is given as bytes, or as messages that are
 * written octet-counted (`LEN SP MSG`, RFC 6587) straight into the record: one UTF-8
 * encoding per event, into whatever buffer the caller has room in.
 */
export function recordLayout(id: string, body: Buffer | readonly string[]): RecordLayout {
  const idLength = Buffer.byteLength(id);
  if (idLength === 0 || idLength > MAX_ID_BYTES) {
    throw new HypersealError('HS_ERR_SYSLOG_QUEUE_IO', `an event id of ${idLength} bytes cannot be queued`);
  }
  let bodyLength: number;
  let prefixes: string[] = [];
  let lengths: number[] = [];
  if (Buffer.isBuffer(body)) {
    bodyLength = body.length;
  } else {
    lengths = body.map((m) => Buffer.byteLength(m));
    prefixes = lengths.map((n) => `${n} `);
    bodyLength = lengths.reduce((sum, n, i) => sum + n + (prefixes[i] as string).length, 0);
  }
  const payloadLength = 1 + idLength + bodyLength;
  if (payloadLength > MAX_RECORD_BYTES) {
    throw new HypersealError(
      'HS_ERR_SYSLOG_QUEUE_IO',
      `event ${id} formats to ${bodyLength} bytes, over the queue's ${MAX_RECORD_BYTES}-byte record limit`,
    );
  }
  return { id, body, idLength, prefixes, lengths, size: RECORD_HEADER_BYTES + payloadLength };
}

/** Writes the record at `start` of `buf` (which has room for layout.size bytes). */
export function writeRecord(buf: Buffer, start: number, layout: RecordLayout): void {
  let at = start + RECORD_HEADER_BYTES;
  buf[at++] = layout.idLength;
  at += buf.write(layout.id, at, 'utf8');
  const body = layout.body;
  if (Buffer.isBuffer(body)) {
    body.copy(buf, at);
  } else {
    body.forEach((m, i) => {
      at += buf.write(layout.prefixes[i] as string, at, 'latin1');
      at += buf.write(m, at, layout.lengths[i] as number, 'utf8');
    });
  }
  const end = start + layout.size;
  buf.writeUInt32BE(layout.size - RECORD_HEADER_BYTES, start);
  buf.writeUInt32BE(crc32(buf, start + RECORD_HEADER_BYTES, end), start + 4);
}

/** The record of event `id` in a buffer of its own (see recordLayout). */
export function encodeRecord(id: string, body: Buffer | readonly string[]): Buffer {
  const layout = recordLayout(id, body);
  const rec = Buffer.allocUnsafe(layout.size);
  writeRecord(rec, 0, layout);
  return rec;
}

type Decoded =
  | { readonly kind: 'record'; readonly id: string; readonly body: Buffer; readonly size: number }
  /** The bytes end inside the record (more may follow, or it is torn). */
  | { readonly kind: 'short'; readonly need: number }
  | { readonly kind: 'bad'; readonly why: string };

/** The record at `at` in `buf`; zero-copy (body is a view of buf). */
function decodeRecord(buf: Buffer, at: number): Decoded {
  if (buf.length - at < RECORD_HEADER_BYTES) return { kind: 'short', need: RECORD_HEADER_BYTES };
  const len = buf.readUInt32BE(at);
  if (len < 2 || len > MAX_RECORD_BYTES) return { kind: 'bad', why: `record length ${len}` };
  const size = RECORD_HEADER_BYTES + len;
  if (buf.length - at < size) return { kind: 'short', need: size };
  const start = at + RECORD_HEADER_BYTES;
  if (crc32(buf, start, at + size) !== buf.readUInt32BE(at + 4)) return { kind: 'bad', why: 'CRC mismatch' };
  const idLen = buf.readUInt8(start);
  if (idLen === 0 || 1 + idLen > len) return { kind: 'bad', why: `id length ${idLen}` };
  return {
    kind: 'record',
    id: buf.toString('utf8', start + 1, start + 1 + idLen),
    body: buf.subarray(start + 1 + idLen, at + size),
    size,
  };
}

export function comparePositions(a: QueuePosition, b: QueuePosition): number {
  return a.segment - b.segment || a.offset - b.offset;
}

// ---------------------------------------------------------------------------------------
// Small promise wrappers over fd-based fs calls (the queue keeps plain fds: open() is sync).

function fsCall<T>(fn: (cb: (err: NodeJS.ErrnoException | null, value: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, value) => (err === null ? resolve(value) : reject(err))));
}

/** Buffers per writev: Linux's IOV_MAX. */
const IOV_MAX = 1024;

/** Writes the buffers in order at `position`: writev without copying them into one. */
async function writeAll(fd: number, bufs: readonly Buffer[], position: number): Promise<void> {
  let pos = position;
  for (let i = 0; i < bufs.length; i += IOV_MAX) {
    const chunk = bufs.slice(i, i + IOV_MAX);
    const total = chunk.reduce((n, b) => n + b.length, 0);
    let done = await fsCall<number>((cb) => fs.writev(fd, chunk, pos, cb));
    if (done < total) {
      // A short write (rare: a signal, a full disk on the way): the rest one copy at a time.
      const rest = Buffer.concat(chunk).subarray(done);
      let off = 0;
      while (done < total) {
        const n = await fsCall<number>((cb) => fs.write(fd, rest, off, rest.length - off, pos + done, cb));
        off += n;
        done += n;
      }
    }
    pos += total;
  }
}

async function readAt(fd: number, length: number, position: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const n = await fsCall<number>((cb) => fs.read(fd, buf, done, length - done, position + done, cb));
    if (n === 0) break;
    done += n;
  }
  return done === length ? buf : buf.subarray(0, done);
}

const fdatasync = (fd: number): Promise<void> =>
  new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err === null ? resolve() : reject(err))));

function ioError(what: string, err: unknown): HypersealError {
  if (isHypersealError(err)) return err;
  const reason = err instanceof Error ? err.message : String(err);
  return new HypersealError('HS_ERR_SYSLOG_QUEUE_IO', `syslog queue: ${what}: ${reason}`, undefined, {
    cause: err,
  });
}

function corrupt(message: string): HypersealError {
  return new HypersealError('HS_ERR_SYSLOG_QUEUE_CORRUPT', `syslog queue: ${message}`);
}

interface Pending {
  readonly id: string;
  readonly rec: Buffer;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

const segmentName = (n: number): string => `${String(n).padStart(12, '0')}.seg`;

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes the lock file of a queue directory for this process (its pid inside); a lock left
 * by a process that is gone is taken over. Throws HS_ERR_SYSLOG_QUEUE_LOCKED while another
 * live process — or another queue in this one — holds it.
 */
export function lockQueueDir(dir: string): void {
  const path = join(dir, LOCK_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(path, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw ioError(`cannot create ${path}`, err);
    }
    const pid = Number.parseInt(fs.readFileSync(path, 'utf8'), 10);
    // A pid reused by an unrelated process keeps the lock: the message says what to do.
    if (Number.isInteger(pid) && pid > 0 && pidAlive(pid)) {
      throw new HypersealError(
        'HS_ERR_SYSLOG_QUEUE_LOCKED',
        `syslog queue ${dir} is in use by process ${pid}` +
          (pid === process.pid ? ' (this one: another sink has it open)' : '') +
          `; if that process is not Hyperseal, remove ${path}`,
      );
    }
    // Left by a process that died: take it over.
    trace('syslog', 'stale queue lock taken over', { dir, pid });
    fs.rmSync(path, { force: true });
  }
  throw new HypersealError('HS_ERR_SYSLOG_QUEUE_LOCKED', `syslog queue ${dir}: lost a race for its lock`);
}

/** Releases the lock file if this process holds it. */
export function unlockQueueDir(dir: string): void {
  const path = join(dir, LOCK_FILE);
  try {
    if (fs.readFileSync(path, 'utf8').trim() === String(process.pid)) fs.rmSync(path, { force: true });
  } catch {
    // Already gone: nothing to release.
  }
}

export class DiskQueue {
  readonly dir: string;
  private readonly segmentBytes: number;
  private readonly maxQueueBytes: number;
  private readonly cursorIntervalMs: number;
  /** Called whenever records became durable (the sender sets it to wake up). */
  onDurable: () => void;
  private readonly memoryBytes: number;
  private readonly takesLock: boolean;

  /** Durable size of each segment on disk (the current one: up to its last synced group). */
  private readonly sizes = new Map<number, number>();
  private readonly readFds = new Map<number, number>();
  private current = 0;
  private writeFd = -1;
  private headPos: QueuePosition = { segment: 0, offset: SEGMENT_HEADER_BYTES };
  private persisted: QueuePosition = this.headPos;
  private pending: Pending[] = [];
  private pendingBytes = 0;
  private records = 0;
  private writing: Promise<void> | null = null;
  private cursorTimer: NodeJS.Timeout | null = null;
  private cursorWrite: Promise<void> | null = null;
  private state: 'new' | 'open' | 'closing' | 'closed' = 'new';
  /** Groups written (each one write + one fdatasync): records / groups is the coalescing. */
  groupsWritten = 0;
  /** The latest durable records, in order, from index recentStart (see memoryBytes). */
  private recent: QueueRecord[] = [];
  private recentStart = 0;
  private recentBytes = 0;

  constructor(opts: DiskQueueOptions) {
    this.dir = opts.dir;
    this.segmentBytes = opts.segmentBytes ?? DEFAULT_SEGMENT_BYTES;
    this.maxQueueBytes = opts.maxQueueBytes ?? DEFAULT_MAX_QUEUE_BYTES;
    this.cursorIntervalMs = opts.cursorIntervalMs ?? DEFAULT_CURSOR_INTERVAL_MS;
    this.onDurable = opts.onDurable ?? (() => undefined);
    this.memoryBytes = opts.memoryBytes ?? DEFAULT_MEMORY_BYTES;
    this.takesLock = opts.lock ?? true;
  }

  /** The first record not yet acknowledged. */
  get head(): QueuePosition {
    return this.headPos;
  }

  /** Just after the last durable record. */
  get end(): QueuePosition {
    return { segment: this.current, offset: this.sizes.get(this.current) ?? SEGMENT_HEADER_BYTES };
  }

  /** Whether durable records exist at or after `pos`. */
  hasRecordsFrom(pos: QueuePosition): boolean {
    return comparePositions(this.normalise(pos), this.end) < 0;
  }

  /** Records enqueued (durable or being written) and not yet acknowledged. */
  get count(): number {
    return this.records;
  }

  /** Bytes of those records, headers included. */
  get bytes(): number {
    let n = this.pendingBytes;
    for (const [seg, size] of this.sizes) {
      if (seg > this.headPos.segment) n += size - SEGMENT_HEADER_BYTES;
      else if (seg === this.headPos.segment) n += size - this.headPos.offset;
    }
    return n;
  }

  /**
   * Recovers the queue (synchronously: it runs once, at start): takes the lock, reads the
   * cursor, checks every unacknowledged record, cuts a torn tail off the last segment, and
   * starts a fresh segment for new records.
   */
  open(): void {
    if (this.state !== 'new') throw new HypersealError('HS_ERR_SYSLOG_CLOSED', 'syslog queue opened twice');
    try {
      fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw ioError(`cannot create ${this.dir}`, err);
    }
    if (this.takesLock) lockQueueDir(this.dir);
    try {
      this.recover();
    } catch (err) {
      if (this.takesLock) unlockQueueDir(this.dir);
      throw isHypersealError(err) ? err : ioError(`cannot open ${this.dir}`, err);
    }
    this.state = 'open';
  }

  private readCursor(): QueuePosition | null {
    let text: string;
    try {
      text = fs.readFileSync(join(this.dir, CURSOR_FILE), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw corrupt(`${CURSOR_FILE} is not JSON`);
    }
    const c = parsed as { version?: unknown; segment?: unknown; offset?: unknown };
    if (
      c.version !== VERSION ||
      !Number.isSafeInteger(c.segment) ||
      !Number.isSafeInteger(c.offset) ||
      (c.segment as number) < 1 ||
      (c.offset as number) < SEGMENT_HEADER_BYTES
    ) {
      throw corrupt(`${CURSOR_FILE} holds no valid position: ${text.slice(0, 100)}`);
    }
    return { segment: c.segment as number, offset: c.offset as number };
  }

  private recover(): void {
    for (const name of fs.readdirSync(this.dir)) {
      // Temporary files of an atomic write that a crash interrupted.
      if (name.includes('.tmp-')) fs.rmSync(join(this.dir, name), { force: true });
    }
    const numbers = fs
      .readdirSync(this.dir)
      .flatMap((name) => {
        const m = SEGMENT_NAME.exec(name);
        return m?.[1] === undefined ? [] : [Number(m[1])];
      })
      .sort((a, b) => a - b);
    const cursor = this.readCursor();
    // The cursor is only ever written naming a segment that exists, and segments are
    // deleted only behind a written cursor: a cursor naming no segment is damage, and
    // trusting it would delete every segment before it.
    if (cursor !== null && !numbers.includes(cursor.segment)) {
      throw corrupt(`segment ${segmentName(cursor.segment)} named by ${CURSOR_FILE} is missing`);
    }
    let head: QueuePosition = cursor ?? { segment: numbers[0] ?? 1, offset: SEGMENT_HEADER_BYTES };
    const live = numbers.filter((x) => x >= head.segment);
    live.forEach((n, i) => {
      if (n !== head.segment + i) throw corrupt(`segment ${segmentName(head.segment + i)} is missing`);
    });
    let records = 0;
    live.forEach((n, i) => {
      const path = join(this.dir, segmentName(n));
      const data = fs.readFileSync(path);
      const last = i === live.length - 1;
      if (data.length < SEGMENT_HEADER_BYTES || !data.subarray(0, 4).equals(MAGIC)) {
        throw corrupt(`${segmentName(n)} is not a queue segment`);
      }
      if (data.readUInt32BE(4) !== VERSION)
        throw corrupt(`${segmentName(n)} has version ${data.readUInt32BE(4)}`);
      // Acknowledged records before the cursor are walked by their lengths only, to check that
      // the cursor sits on a record boundary: a torn-tail cut from a bad cursor would
      // destroy good records.
      const from = n === head.segment ? head.offset : SEGMENT_HEADER_BYTES;
      let at = SEGMENT_HEADER_BYTES;
      while (at < from && data.length - at >= RECORD_HEADER_BYTES) {
        const len = data.readUInt32BE(at);
        if (len < 2 || len > MAX_RECORD_BYTES) break;
        at += RECORD_HEADER_BYTES + len;
      }
      if (at !== from) {
        throw corrupt(`${CURSOR_FILE} offset ${from} is not a record boundary of ${segmentName(n)}`);
      }
      while (at < data.length) {
        const d = decodeRecord(data, at);
        if (d.kind === 'record') {
          records++;
          at += d.size;
          continue;
        }
        if (!last) {
          throw corrupt(
            `${segmentName(n)} has a bad record at offset ${at} (${d.kind === 'bad' ? d.why : 'cut short'})`,
          );
        }
        // The torn tail of the last group written before a crash: never confirmed, dropped.
        trace('syslog', 'torn queue tail dropped', {
          dir: this.dir,
          segment: n,
          offset: at,
          bytes: data.length - at,
        });
        const fd = fs.openSync(path, 'r+');
        try {
          fs.ftruncateSync(fd, at);
          fs.fsyncSync(fd);
        } finally {
          fs.closeSync(fd);
        }
        break;
      }
      this.sizes.set(n, at);
    });
    this.records = records;
    // Segments before the cursor's were fully acknowledged; a crash came before their
    // deletion. Deleted only now that the rest checked out.
    for (const n of numbers.filter((x) => x < head.segment)) fs.rmSync(join(this.dir, segmentName(n)));
    // New records go to a new segment: the old last one keeps its (checked) size.
    this.current = (live.at(-1) ?? head.segment - 1) + 1;
    this.createSegmentSync(this.current);
    this.writeFd = fs.openSync(join(this.dir, segmentName(this.current)), 'r+');
    this.sizes.set(this.current, SEGMENT_HEADER_BYTES);
    if (live.length === 0) head = { segment: this.current, offset: SEGMENT_HEADER_BYTES };
    this.headPos = this.normalise(head);
    this.writeCursorSync(this.headPos);
    this.deleteBefore(this.headPos.segment);
  }

  private segmentHeader(): Buffer {
    const h = Buffer.alloc(SEGMENT_HEADER_BYTES);
    MAGIC.copy(h, 0);
    h.writeUInt32BE(VERSION, 4);
    return h;
  }

  private createSegmentSync(n: number): void {
    writeFileAtomic(join(this.dir, segmentName(n)), this.segmentHeader(), 0o600);
  }

  private writeCursorSync(pos: QueuePosition): void {
    writeFileAtomic(join(this.dir, CURSOR_FILE), this.cursorText(pos), 0o600);
    this.persisted = pos;
  }

  private cursorText(pos: QueuePosition): string {
    return JSON.stringify({ version: VERSION, segment: pos.segment, offset: pos.offset }) + '\n';
  }

  /** Skips the ends of completed segments: (n, size of n) is (n+1, header). */
  private normalise(pos: QueuePosition): QueuePosition {
    let p = pos;
    while (p.segment < this.current && p.offset >= (this.sizes.get(p.segment) ?? 0)) {
      p = { segment: p.segment + 1, offset: SEGMENT_HEADER_BYTES };
    }
    return p;
  }

  /**
   * Resolves once the record is durable. Rejects with HS_ERR_SYSLOG_QUEUE_* or _CLOSED.
   * `body`: bytes, or messages to store octet-counted (see encodeRecord).
   */
  enqueue(id: string, body: Buffer | readonly string[]): Promise<void> {
    let rec: Buffer;
    try {
      rec = encodeRecord(id, body);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    return this.enqueueRecord(id, rec);
  }

  /**
   * enqueue() for a record made by encodeRecord(id, …) elsewhere (the sink encodes in its
   * caller's thread and hands batches of records to this queue's thread).
   */
  enqueueRecord(id: string, rec: Buffer): Promise<void> {
    if (this.state !== 'open') {
      return Promise.reject(
        new HypersealError('HS_ERR_SYSLOG_CLOSED', `syslog queue ${this.dir} is not open`),
      );
    }
    if (this.bytes + rec.length > this.maxQueueBytes) {
      return Promise.reject(
        new HypersealError(
          'HS_ERR_SYSLOG_QUEUE_FULL',
          `syslog queue ${this.dir} holds ${this.records} records (${this.bytes} bytes), its limit is ${this.maxQueueBytes} bytes`,
        ),
      );
    }
    return new Promise((resolve, reject) => {
      this.pending.push({ id, rec, resolve, reject });
      this.pendingBytes += rec.length;
      this.records++;
      this.writing ??= this.writeLoop();
    });
  }

  /** Writes groups until nothing is pending. Never rejects: failures reject their group. */
  private async writeLoop(): Promise<void> {
    while (this.pending.length > 0) {
      const group = this.pending;
      this.pending = [];
      const bytes = group.reduce((n, p) => n + p.rec.length, 0);
      const at = this.sizes.get(this.current) ?? SEGMENT_HEADER_BYTES;
      try {
        await writeAll(
          this.writeFd,
          group.map((p) => p.rec),
          at,
        );
        await fdatasync(this.writeFd);
      } catch (err) {
        // Cut whatever part of the group reached the file, so that the next group is written
        // right after the last good record (a failed sync may have left anything there).
        try {
          fs.ftruncateSync(this.writeFd, at);
        } catch {
          // The next group overwrites the same bytes anyway; open() would cut them too.
        }
        this.pendingBytes -= bytes;
        this.records -= group.length;
        const e = ioError(`cannot write ${segmentName(this.current)}`, err);
        for (const p of group) p.reject(e);
        continue;
      }
      this.sizes.set(this.current, at + bytes);
      this.pendingBytes -= bytes;
      this.groupsWritten++;
      this.remember(group, at);
      for (const p of group) p.resolve();
      this.onDurable();
      if (at + bytes >= this.segmentBytes) {
        try {
          await this.rotate();
        } catch (err) {
          // Keep appending to the current segment; rotation is retried after the next group.
          trace('syslog', 'segment rotation failed', { dir: this.dir, error: String(err) });
        }
      }
    }
    this.writing = null;
  }

  private async rotate(): Promise<void> {
    const next = this.current + 1;
    const path = join(this.dir, segmentName(next));
    const tmp = `${path}.tmp-${process.pid}`;
    await fs.promises.writeFile(tmp, this.segmentHeader(), { mode: 0o600 });
    const tfd = fs.openSync(tmp, 'r');
    try {
      await fdatasync(tfd);
    } finally {
      fs.closeSync(tfd);
    }
    await fs.promises.rename(tmp, path);
    await this.syncDir();
    const fd = fs.openSync(path, 'r+');
    const old = this.writeFd;
    this.sizes.set(next, SEGMENT_HEADER_BYTES);
    this.current = next;
    this.writeFd = fd;
    fs.closeSync(old);
    // A head at the end of the old segment now moves on, so that segment can be deleted.
    const head = this.normalise(this.headPos);
    if (comparePositions(head, this.headPos) !== 0) {
      this.headPos = head;
      this.scheduleCursor();
    }
  }

  private async syncDir(): Promise<void> {
    const dfd = fs.openSync(this.dir, 'r');
    try {
      await fsCall<void>((cb) => fs.fsync(dfd, (err) => cb(err, undefined)));
    } finally {
      fs.closeSync(dfd);
    }
  }

  /** Keeps a group just made durable in memory, dropping the oldest beyond memoryBytes. */
  private remember(group: readonly Pending[], at: number): void {
    let offset = at;
    for (const p of group) {
      const pos = { segment: this.current, offset };
      offset += p.rec.length;
      const body = p.rec.subarray(RECORD_HEADER_BYTES + 1 + (p.rec[RECORD_HEADER_BYTES] as number));
      this.recent.push({ id: p.id, body, pos, next: { segment: this.current, offset } });
      this.recentBytes += p.rec.length;
    }
    while (this.recentBytes > this.memoryBytes && this.recentStart < this.recent.length) this.forgetOldest();
    this.compactRecent();
  }

  private forgetOldest(): void {
    const r = this.recent[this.recentStart++] as QueueRecord;
    this.recentBytes -= r.next.offset - r.pos.offset;
  }

  private compactRecent(): void {
    if (this.recentStart > 4096 && this.recentStart * 2 > this.recent.length) {
      this.recent = this.recent.slice(this.recentStart);
      this.recentStart = 0;
    }
  }

  /** Records from `pos` on, from memory; null when `pos` is not a remembered record. */
  private readRecent(pos: QueuePosition, maxBytes: number): QueueRecord[] | null {
    let lo = this.recentStart;
    let hi = this.recent.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const c = comparePositions((this.recent[mid] as QueueRecord).pos, pos);
      if (c === 0) {
        const out: QueueRecord[] = [];
        let bytes = 0;
        for (let i = mid; i < this.recent.length && (out.length === 0 || bytes < maxBytes); i++) {
          const r = this.recent[i] as QueueRecord;
          out.push(r);
          bytes += r.body.length;
        }
        return out;
      }
      if (c < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return null;
  }

  /**
   * Durable records from `from` on, at most `maxBytes` of them (but always a whole first
   * record): [] when there are none yet.
   */
  async read(from: QueuePosition, maxBytes: number): Promise<QueueRecord[]> {
    if (this.state === 'closed') return [];
    const pos = this.normalise(from);
    const remembered = this.readRecent(pos, maxBytes);
    if (remembered !== null) return remembered;
    const limit = this.sizes.get(pos.segment);
    if (limit === undefined) throw corrupt(`no segment ${segmentName(pos.segment)} to read`);
    if (pos.offset >= limit) return [];
    const fd = this.readFd(pos.segment);
    let buf = await readAt(
      fd,
      Math.min(limit - pos.offset, Math.max(maxBytes, RECORD_HEADER_BYTES)),
      pos.offset,
    );
    const out: QueueRecord[] = [];
    let at = 0;
    for (;;) {
      const d = decodeRecord(buf, at);
      if (d.kind === 'record') {
        const start = { segment: pos.segment, offset: pos.offset + at };
        at += d.size;
        out.push({
          id: d.id,
          body: d.body,
          pos: start,
          next: { segment: pos.segment, offset: pos.offset + at },
        });
        continue;
      }
      if (d.kind === 'bad')
        throw corrupt(`${segmentName(pos.segment)}: ${d.why} at offset ${pos.offset + at}`);
      // A record larger than maxBytes: read it whole, it is the only one returned.
      if (out.length === 0 && pos.offset + d.need <= limit && buf.length < d.need) {
        buf = await readAt(fd, d.need, pos.offset);
        continue;
      }
      if (out.length === 0 && pos.offset + at < limit) {
        throw corrupt(`${segmentName(pos.segment)}: a record at offset ${pos.offset} runs past the end`);
      }
      return out;
    }
  }

  private readFd(segment: number): number {
    let fd = this.readFds.get(segment);
    if (fd === undefined) {
      fd = fs.openSync(join(this.dir, segmentName(segment)), 'r');
      this.readFds.set(segment, fd);
    }
    return fd;
  }

  /**
   * Acknowledges every record before `to` (`records` of them, as the caller counted).
   * Positions at or before the head are ignored: an acknowledgement is never undone.
   */
  ack(to: QueuePosition, records: number): void {
    if (this.state === 'closed' || comparePositions(to, this.headPos) <= 0) return;
    if (comparePositions(to, this.end) > 0)
      throw new HypersealError('HS_ERR_INTERNAL', 'ack past the queue end');
    this.headPos = this.normalise(to);
    this.records = Math.max(0, this.records - records);
    // Acknowledged records are never read again: no need to remember them.
    while (
      this.recentStart < this.recent.length &&
      comparePositions((this.recent[this.recentStart] as QueueRecord).next, to) <= 0
    ) {
      this.forgetOldest();
    }
    this.compactRecent();
    this.scheduleCursor();
  }

  private scheduleCursor(): void {
    if (this.cursorTimer !== null || this.cursorWrite !== null) return;
    this.cursorTimer = setTimeout(() => {
      this.cursorTimer = null;
      this.cursorWrite = this.persistCursor().finally(() => {
        this.cursorWrite = null;
        if (comparePositions(this.headPos, this.persisted) !== 0 && this.state === 'open')
          this.scheduleCursor();
      });
    }, this.cursorIntervalMs);
  }

  /** Writes the head to cursor.json (atomically), then deletes the segments before it. */
  private async persistCursor(): Promise<void> {
    const pos = this.headPos;
    if (comparePositions(pos, this.persisted) === 0) return;
    const path = join(this.dir, CURSOR_FILE);
    const tmp = `${path}.tmp-${process.pid}`;
    try {
      await fs.promises.writeFile(tmp, this.cursorText(pos), { mode: 0o600 });
      const fd = fs.openSync(tmp, 'r');
      try {
        await fdatasync(fd);
      } finally {
        fs.closeSync(fd);
      }
      await fs.promises.rename(tmp, path);
      await this.syncDir();
      this.persisted = pos;
      this.deleteBefore(pos.segment);
    } catch (err) {
      // The old cursor stays: at worst some acknowledged records are sent again.
      trace('syslog', 'cursor write failed', { dir: this.dir, error: String(err) });
    }
  }

  private deleteBefore(segment: number): void {
    for (const n of [...this.sizes.keys()].filter((x) => x < segment)) {
      const fd = this.readFds.get(n);
      if (fd !== undefined) fs.closeSync(fd);
      this.readFds.delete(n);
      this.sizes.delete(n);
      fs.rmSync(join(this.dir, segmentName(n)), { force: true });
    }
  }

  /**
   * Writes what is pending, records the head in cursor.json, closes the files and releases
   * the lock. Enqueues after this call are refused.
   */
  async close(): Promise<void> {
    if (this.state !== 'open') {
      this.state = 'closed';
      return;
    }
    this.state = 'closing';
    while (this.writing !== null) await this.writing;
    if (this.cursorTimer !== null) clearTimeout(this.cursorTimer);
    this.cursorTimer = null;
    while (this.cursorWrite !== null) await this.cursorWrite;
    await this.persistCursor();
    this.state = 'closed';
    for (const fd of this.readFds.values()) fs.closeSync(fd);
    this.readFds.clear();
    fs.closeSync(this.writeFd);
    this.writeFd = -1;
    if (this.takesLock) unlockQueueDir(this.dir);
  }
}
