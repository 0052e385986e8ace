/**
 * A VM's serial console read from QEMU's unix-socket chardev into memory, so that an
 * encrypted VM's console output (guest data) never lands on disk.
 *
 * QEMU (`-chardev socket,server=on,wait=off`) serves one client at a time and drops
 * output while none is connected; a second client's connect succeeds at the kernel level
 * but sits in the listen backlog, receiving nothing, until the first lets go. So there
 * must be one reader per VM: VmProcess makes one unless it is given one (StartOptions.serial).
 *
 * The reader connects, and reconnects every `reconnectMs` after the connection ends (QEMU
 * exited or restarted) or fails (not started yet, agent restarted before it). It keeps the
 * last `bufferBytes` of output with byte offsets counted from the start of the current
 * QEMU process's output, like the serial log file that QEMU truncates at each start: a
 * reconnect to a new QEMU (a new socket file: other inode or change time) restarts the
 * offsets at 0, and an offset past the end reads as `restarted` from the oldest byte kept.
 * Output of a QEMU that ran before this reader connected (e.g. before an agent restart) is
 * gone: it was never stored anywhere.
 */
import { stat } from 'node:fs/promises';
import { createConnection } from 'node:net';
import type { Socket } from 'node:net';
import { HypersealError } from '../errors.js';
import { trace } from '../trace.js';

export interface SerialSocketOptions {
  /** Output kept in memory, newest last. Default 1 MiB. */
  bufferBytes?: number;
  /** Between connection attempts. Default 200. */
  reconnectMs?: number;
  /** For messages and traces. Default: the socket path. */
  label?: string;
}

/** A slice of the console: raw bytes. */
export interface SerialBytes {
  /** Where `data` starts: `offset` asked for, or later when those bytes were dropped. */
  offset: number;
  data: Buffer;
  /** Where the next read should start. */
  nextOffset: number;
  /** The offset asked for is past the end (QEMU restarted): read from the oldest byte kept. */
  restarted: boolean;
}

/** A slice of the console as text, ending on a UTF-8 character boundary. */
export interface SerialText {
  offset: number;
  next: number;
  data: string;
}

const DEFAULT_BUFFER_BYTES = 1 << 20;

export class SerialSocketReader {
  private readonly bufferBytes: number;
  private readonly reconnectMs: number;
  private readonly label: string;
  private chunks: { start: number; data: Buffer }[] = [];
  /** Offset of the first byte kept. */
  private base = 0;
  /** Offset just past the last byte received. */
  private total = 0;
  private socket: Socket | undefined;
  private isConnected = false;
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  /** The socket file we last connected to, to tell a new QEMU from a reconnect. */
  private identity: string | undefined;
  private waiters: { resolve: () => void }[] = [];
  private connections = 0;

  constructor(
    readonly path: string,
    opts: SerialSocketOptions = {},
  ) {
    this.bufferBytes = opts.bufferBytes ?? DEFAULT_BUFFER_BYTES;
    this.reconnectMs = opts.reconnectMs ?? 200;
    this.label = opts.label ?? path;
    if (!Number.isSafeInteger(this.bufferBytes) || this.bufferBytes < 1) {
      throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `bufferBytes must be a positive integer`);
    }
    this.connect();
  }

  /** Connected to QEMU now. */
  get connected(): boolean {
    return this.isConnected;
  }

  /** Offset just past the newest byte (bytes received from the current QEMU). */
  get end(): number {
    return this.total;
  }

  /** Offset of the oldest byte still in memory. */
  get start(): number {
    return this.base;
  }

  /** How many times a connection was made (a test hook; also in traces). */
  get connectionCount(): number {
    return this.connections;
  }

  private connect(): void {
    if (this.closed) return;
    this.timer = undefined;
    void stat(this.path, { bigint: true })
      .then((st) => `${st.dev}:${st.ino}:${st.ctimeNs}`)
      .catch(() => undefined)
      .then((identity) => {
        if (this.closed) return;
        if (identity === undefined) return this.retry();
        const socket = createConnection(this.path);
        this.socket = socket;
        socket.unref();
        socket.on('connect', () => {
          if (this.closed) {
            socket.destroy();
            return;
          }
          this.isConnected = true;
          this.connections++;
          if (this.identity !== undefined && this.identity !== identity) this.restart();
          this.identity = identity;
          trace('qemu', 'serial socket connected', { vm: this.label, connections: this.connections });
          for (const w of this.waiters.splice(0)) w.resolve();
        });
        socket.on('data', (data: Buffer) => this.append(data));
        socket.on('error', (err) => {
          trace('qemu', 'serial socket error', { vm: this.label, error: err.message });
        });
        socket.on('close', () => {
          if (this.socket === socket) this.socket = undefined;
          this.isConnected = false;
          this.retry();
        });
      });
  }

  private retry(): void {
    if (this.closed || this.timer !== undefined) return;
    this.timer = setTimeout(() => this.connect(), this.reconnectMs);
    this.timer.unref();
  }

  /** A new QEMU: its output starts at offset 0, as its log file would. */
  private restart(): void {
    for (const c of this.chunks) c.data.fill(0);
    this.chunks = [];
    this.base = 0;
    this.total = 0;
  }

  private append(data: Buffer): void {
    this.chunks.push({ start: this.total, data });
    this.total += data.length;
    // Drop whole chunks, then trim the oldest one, until within the budget.
    while (this.total - this.base > this.bufferBytes) {
      const first = this.chunks[0];
      if (first === undefined) break;
      const excess = this.total - this.base - this.bufferBytes;
      if (first.data.length <= excess) {
        this.chunks.shift();
        this.base += first.data.length;
        first.data.fill(0);
      } else {
        // subarray shares memory with the socket's buffer: copy so the rest can be freed.
        const rest = Buffer.from(first.data.subarray(excess));
        first.data.fill(0);
        this.chunks[0] = { start: first.start + excess, data: rest };
        this.base += excess;
      }
    }
  }

  /** Up to `maxBytes` from `offset` (see SerialBytes for offsets past the end or dropped). */
  read(offset = 0, maxBytes = 1 << 20): SerialBytes {
    const restarted = offset > this.total;
    const from = restarted || offset < this.base ? this.base : offset;
    const to = Math.min(this.total, from + Math.max(0, maxBytes));
    const parts: Buffer[] = [];
    for (const c of this.chunks) {
      const cEnd = c.start + c.data.length;
      if (cEnd <= from) continue;
      if (c.start >= to) break;
      parts.push(c.data.subarray(Math.max(0, from - c.start), Math.min(c.data.length, to - c.start)));
    }
    return { offset: from, data: Buffer.concat(parts), nextOffset: to, restarted };
  }

  /**
   * As read(), decoded as UTF-8 and cut before a character that is not complete yet (cut
   * by `maxBytes`, or its last bytes not received yet): `next` is where it resumes.
   */
  chunk(offset = 0, maxBytes = 64 * 1024): SerialText {
    const r = this.read(offset, maxBytes);
    const length = utf8Prefix(r.data);
    return { offset: r.offset, next: r.offset + length, data: r.data.subarray(0, length).toString('utf8') };
  }

  /** Sends input to the guest's serial port. Throws HS_ERR_QEMU_NOT_RUNNING when not connected. */
  write(data: Buffer | string): Promise<void> {
    const socket = this.socket;
    if (!this.isConnected || socket === undefined) {
      return Promise.reject(
        new HypersealError(
          'HS_ERR_QEMU_NOT_RUNNING',
          `the serial console of ${this.label} is not connected`,
          {
            vm: this.label,
          },
        ),
      );
    }
    return new Promise((resolve, reject) => socket.write(data, (err) => (err ? reject(err) : resolve())));
  }

  /** Resolves once connected (now or later); HS_ERR_QEMU_SERIAL_TIMEOUT after `timeoutMs`. */
  waitConnected(timeoutMs: number): Promise<void> {
    if (this.isConnected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(
          new HypersealError(
            'HS_ERR_QEMU_SERIAL_TIMEOUT',
            `could not connect to the serial console of ${this.label} within ${timeoutMs} ms`,
            { vm: this.label, serialSocket: this.path },
          ),
        );
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  /** Disconnects for good and wipes the buffer. Idempotent. */
  close(): void {
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.socket?.destroy();
    this.socket = undefined;
    this.isConnected = false;
    this.restart();
  }
}

/**
 * Length of the longest prefix of `b` that does not end inside a UTF-8 sequence. Bytes that are not UTF-8 at all are passed through: the decoder's
 * U+FFFD is the honest answer for them.
 */
function utf8Prefix(b: Buffer): number {
  for (let i = b.length - 1; i >= 0 && i >= b.length - 4; i--) {
    const byte = b[i] ?? 0;
    if ((byte & 0xc0) === 0x80) continue; // continuation byte
    const need = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1;
    return b.length - i >= need ? b.length : i;
  }
  return b.length;
}
