/**
 * The migration data channel: the I/O around the frame codec (frame.ts).
 *
 *   source QEMU ──unix──▶ MigrationSender ══TCP (frames)══▶ MigrationReceiver ──unix──▶ destination QEMU
 *   `migrate unix:<qemuSocketPath>`           ◀══ ACK ══                 `migrate-incoming unix:<qemuSocketPath>`
 *
 * The receiver listens for exactly one peer, verifies its START frame (right migration,
 * right key) and only then connects to the destination QEMU's incoming socket, so QEMU
 * never sees a byte that did not authenticate. The sender connects to the receiver first
 * (an unreachable peer fails before QEMU is told to migrate), then listens for the source
 * QEMU's one connection, seals what QEMU writes and sends END when QEMU closes; it
 * succeeds only on the receiver's authenticated ACK, which says every byte reached the
 * destination QEMU's socket.
 *
 * Any failure on either end destroys every socket of that end at once; the other end sees
 * its connection drop and does the same. Source QEMU then fails its migration and keeps
 * the VM running; destination QEMU fails its incoming migration. `done` rejects with the
 * first error, a HypersealError.
 *
 * Throughput: the sockets that carry the stream in (QEMU's on the sender, the peer's on
 * the receiver) are read straight into large slabs of ours (`adoptReader`) instead of
 * through the Readable stream; frames are sealed from the list of chunks read since the
 * last one, without concatenating them, and leave in one corked writev; what is pending
 * goes out at the end of each burst of reads, so a slow trickle is never held back.
 * Backpressure: reading from one side stops while the other side's write buffer is above
 * its high-water mark, so memory stays bounded by about one frame, one slab and two
 * socket buffers whatever the speeds.
 */
import { chmod, lstat, unlink } from 'node:fs/promises';
import net from 'node:net';
import { HypersealError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { trace } from '../trace.js';
import { primeAllocator } from './allocator.js';
import { FRAME, FrameOpener, FrameSealer } from './frame.js';
import type { MigrationCipher } from './frame.js';

/** A TCP endpoint, or a unix socket path (tests, same-host migrations). */
export type ChannelAddress = { host: string; port: number } | { path: string };

export interface MigrationChannelParams {
  migrationId: string;
  cipher: MigrationCipher;
  /** 32 bytes for aes-256-gcm; copied, the caller zeroizes its own buffer. */
  key?: Buffer;
  /** 8 bytes for aes-256-gcm. */
  nonce?: Buffer;
}

export interface MigrationProgress {
  /** Bytes of QEMU's migration stream through the channel so far. */
  bytes: number;
  /** Bytes on the peer connection: frame headers, bodies and tags. */
  wireBytes: number;
  /** Frames sent (sender) or verified (receiver). */
  frames: number;
  /** Since the first byte of QEMU's stream. */
  elapsedMs: number;
  /** Average stream rate since the first byte. */
  bytesPerSecond: number;
}

export interface MigrationResult extends MigrationProgress {
  migrationId: string;
  cipher: MigrationCipher;
}

interface CommonOptions extends MigrationChannelParams {
  /** Waiting for the one connection this end accepts (QEMU's, or the peer's). Default 60,000. */
  acceptTimeoutMs?: number;
  /** Connecting to the peer or to QEMU. Default 10,000. */
  connectTimeoutMs?: number;
  /** No byte moving in either direction for this long fails the channel. Default 60,000. */
  idleTimeoutMs?: number;
  /** Peer-socket write buffer above which reading from QEMU pauses. Default 4 MiB. */
  highWaterMarkBytes?: number;
}

export interface MigrationSenderOptions extends CommonOptions {
  /** The receiver (the destination agent's migration listener). */
  peer: ChannelAddress;
  /** Where this end listens for the source QEMU (`migrate unix:<path>`); created, removed after. */
  qemuSocketPath: string;
  /** Largest DATA frame body, 4 KiB to 1 MiB. Default 256 KiB. */
  framePayloadBytes?: number;
}

export interface MigrationReceiverOptions extends CommonOptions {
  /** Where to listen for the sender; port 0 picks a free port (see `address`). */
  listen: ChannelAddress;
  /** The destination QEMU's incoming socket (`migrate-incoming unix:<path>`). */
  qemuSocketPath: string;
  /**
   * Runs once every verified byte is delivered, before the ACK goes out: the ACK then
   * also says this succeeded (a cold migration's files are durable, say). A rejection
   * fails the migration without an ACK, so the source keeps its VM.
   */
  beforeAck?: () => Promise<void>;
}

const DEFAULTS = {
  acceptTimeoutMs: 60_000,
  connectTimeoutMs: 10_000,
  idleTimeoutMs: 60_000,
  highWaterMarkBytes: 4 * 1024 * 1024,
} as const;

/** Read buffering per socket before a paused stream stops reading from the kernel. */
const READ_HWM = 256 * 1024;

/** Nonces that sealed a stream in this process (a retry must come with a new spec). */
const usedNonces = new Set<string>();
const USED_NONCES_KEPT = 65_536;

function claimNonce(nonce: Buffer | undefined): void {
  if (nonce === undefined) return;
  const hex = nonce.toString('hex');
  if (usedNonces.has(hex)) {
    throw new HypersealError(
      'HS_ERR_MIGRATION_KEY_REUSED',
      'this migration key and nonce already sealed a stream: ask the manager for a new migration spec',
    );
  }
  // A 64-bit random nonce repeats by chance with negligible probability; the bound only
  // keeps a long-lived agent's memory flat.
  if (usedNonces.size >= USED_NONCES_KEPT) usedNonces.delete(usedNonces.values().next().value as string);
  usedNonces.add(hex);
}

function checkTimeout(v: number | undefined, name: string, fallback: number): number {
  if (v === undefined) return fallback;
  if (!Number.isSafeInteger(v) || v < 1 || v > 24 * 3600_000) {
    throw new HypersealError('HS_ERR_MIGRATION_BAD_PARAMS', `${name} must be from 1 ms to 24 h, not ${v}`);
  }
  return v;
}

function checkAddress(a: ChannelAddress, name: string): ChannelAddress {
  if ('path' in a) {
    if (typeof a.path !== 'string' || a.path.length === 0 || Buffer.byteLength(a.path) > 107) {
      throw new HypersealError(
        'HS_ERR_MIGRATION_BAD_PARAMS',
        `${name}.path must be a unix socket path of 1–107 bytes`,
      );
    }
    return { path: a.path };
  }
  if (
    typeof a.host !== 'string' ||
    a.host.length === 0 ||
    !Number.isSafeInteger(a.port) ||
    a.port < 0 ||
    a.port > 65535
  ) {
    throw new HypersealError(
      'HS_ERR_MIGRATION_BAD_PARAMS',
      `${name} must be a host and a port from 0 to 65535`,
    );
  }
  return { host: a.host, port: a.port };
}

function describe(a: ChannelAddress): string {
  return 'path' in a ? `unix:${a.path}` : `${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;
}

function wrap(code: ErrorCode, message: string, cause: unknown): HypersealError {
  if (cause instanceof HypersealError) return cause;
  const errno = (cause as NodeJS.ErrnoException | undefined)?.code;
  const why = cause instanceof Error ? cause.message : String(cause);
  return new HypersealError(code, `${message}: ${why}`, errno === undefined ? undefined : { errno }, {
    cause,
  });
}

/** Removes a stale unix socket left by a killed process; never anything that is not a socket. */
async function removeStaleSocket(path: string): Promise<void> {
  try {
    const st = await lstat(path);
    if (!st.isSocket()) {
      throw new HypersealError('HS_ERR_MIGRATION_BAD_PARAMS', `${path} exists and is not a socket`);
    }
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/** Listens; a unix socket is made owner-only (QEMU runs as the agent's user). */
async function listenOn(server: net.Server, a: ChannelAddress): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => {
      reject(wrap('HS_ERR_MIGRATION_BAD_PARAMS', `cannot listen on ${describe(a)}`, err));
    };
    server.once('error', onError);
    const done = (): void => {
      server.off('error', onError);
      resolve();
    };
    if ('path' in a) server.listen({ path: a.path, backlog: 1 }, done);
    else server.listen({ host: a.host, port: a.port, backlog: 1 }, done);
  });
  if ('path' in a) await chmod(a.path, 0o600);
}

function connectTo(a: ChannelAddress, timeoutMs: number, what: string, hwm: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    // net.Socket hands its options to stream.Duplex, which takes the high-water marks
    // (@types/node does not declare them on SocketConstructorOpts).
    const socket = new net.Socket({
      writableHighWaterMark: hwm,
      readableHighWaterMark: READ_HWM,
    } as net.SocketConstructorOpts);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new HypersealError(
          'HS_ERR_MIGRATION_CONNECT',
          `connecting to ${what} at ${describe(a)} took over ${timeoutMs} ms`,
        ),
      );
    }, timeoutMs);
    socket.once('error', (err) => {
      clearTimeout(timer);
      socket.destroy();
      reject(wrap('HS_ERR_MIGRATION_CONNECT', `cannot connect to ${what} at ${describe(a)}`, err));
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    if ('path' in a) socket.connect({ path: a.path });
    else socket.connect({ host: a.host, port: a.port });
  });
}

/** Reads land in slabs of this size, each read in the next unused part of one. */
const SLAB_BYTES = 4 * 1024 * 1024;
const MAX_READ_BYTES = 1024 * 1024;
const MIN_READ_BYTES = 256 * 1024;

/**
 * Takes over the reading of an accepted socket (taken with `pauseOnConnect`) so that the
 * kernel copies straight into buffers of ours, through net's `onread` option.
 *
 * Why: a socket's ordinary 'data' path allocates a fresh 64 KiB buffer per read and runs
 * it through the Readable stream machinery; measured here, reading a unix socket that way
 * costs 3 GB per CPU-second against 9–10 GB with `onread` (and TCP 1.8–2.0 against 5–6),
 * more than the cipher itself. `onread` is offered for sockets we connect, not for those a
 * net.Server accepts, so the accepted socket's libuv handle is moved into a new Socket
 * built with `onread` (the constructor's `handle` option is how net.Server builds its own
 * sockets). Should that internal shape ever change, this falls back to 'data' events.
 *
 * Chunks are never overwritten: each read gets the next unused part of a 4 MiB slab, so
 * pending chunks stay valid until sealed or written, without a copy; a slab is freed
 * once nothing refers to it any more.
 */
function adoptReader(accepted: net.Socket, onChunk: (chunk: Buffer) => void): net.Socket {
  const holder = accepted as unknown as { _handle?: unknown };
  const handle = holder._handle;
  if (typeof handle !== 'object' || handle === null) {
    accepted.on('data', onChunk);
    accepted.resume();
    return accepted;
  }
  let slab = Buffer.allocUnsafe(SLAB_BYTES);
  let at = 0;
  const next = (): Buffer => {
    if (SLAB_BYTES - at < MIN_READ_BYTES) {
      slab = Buffer.allocUnsafe(SLAB_BYTES);
      at = 0;
    }
    return slab.subarray(at, Math.min(SLAB_BYTES, at + MAX_READ_BYTES));
  };
  // The accepted Socket lets go of the handle; it is never used again.
  holder._handle = null;
  return new net.Socket({
    handle,
    readable: true,
    writable: true,
    onread: {
      buffer: next,
      callback: (n: number, buf: Uint8Array): void => {
        at += n;
        onChunk((buf as Buffer).subarray(0, n));
      },
    },
  } as net.SocketConstructorOpts);
}

/** What both ends share: settling once, tearing everything down at once, progress, timers. */
abstract class ChannelEnd {
  readonly done: Promise<MigrationResult>;
  protected settled = false;
  protected readonly sockets = new Set<net.Socket>();
  /** Listening servers, with the unix socket path to remove when each stops listening. */
  protected readonly servers = new Map<net.Server, string | undefined>();
  protected readonly timers = new Set<NodeJS.Timeout>();
  protected firstByteAt: number | undefined;
  protected lastActivity = Date.now();
  private resolveDone!: (r: MigrationResult) => void;
  private rejectDone!: (err: HypersealError) => void;

  protected constructor(
    protected readonly role: 'sender' | 'receiver',
    protected readonly migrationId: string,
    readonly cipher: MigrationCipher,
    protected readonly idleTimeoutMs: number,
  ) {
    this.done = new Promise<MigrationResult>((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    // The owner may learn of a failure from `open`/`listen` and never await `done`: an
    // unobserved rejection must not take the agent down.
    this.done.catch(() => undefined);
  }

  abstract progress(): MigrationProgress;
  protected abstract dispose(): void;

  protected snapshot(bytes: number, wireBytes: number, frames: number): MigrationProgress {
    const elapsedMs = this.firstByteAt === undefined ? 0 : performance.now() - this.firstByteAt;
    return {
      bytes,
      wireBytes,
      frames,
      elapsedMs,
      bytesPerSecond: elapsedMs > 0 ? (bytes * 1000) / elapsedMs : 0,
    };
  }

  /** Fails the channel: every socket of this end is destroyed at once. */
  abort(reason?: Error): void {
    this.fail(
      reason ??
        new HypersealError(
          'HS_ERR_MIGRATION_ABORTED',
          `migration ${this.migrationId} ${this.role} was aborted`,
        ),
    );
  }

  protected fail(err: unknown): void {
    if (this.settled) return;
    this.settled = true;
    const e =
      err instanceof HypersealError ? err : wrap('HS_ERR_INTERNAL', `migration ${this.role} failed`, err);
    trace('migration', 'failed', {
      migration: this.migrationId,
      role: this.role,
      code: e.code,
      error: e.message,
    });
    this.teardown();
    this.rejectDone(e);
  }

  protected succeed(): void {
    if (this.settled) return;
    this.settled = true;
    const result: MigrationResult = {
      ...this.progress(),
      migrationId: this.migrationId,
      cipher: this.cipher,
    };
    trace('migration', 'completed', { migration: this.migrationId, role: this.role, ...result });
    this.teardown();
    this.resolveDone(result);
  }

  private teardown(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const s of this.sockets) s.destroy();
    for (const server of [...this.servers.keys()]) this.stopListening(server);
    this.dispose();
  }

  /** Stops accepting connections at once (existing ones stay) and removes the socket file. */
  protected stopListening(server: net.Server): void {
    if (!this.servers.has(server)) return;
    const path = this.servers.get(server);
    this.servers.delete(server);
    server.close();
    if (path !== undefined) unlink(path).catch(() => undefined);
  }

  protected track(socket: net.Socket, name: string): void {
    this.sockets.add(socket);
    socket.on('error', (err) => this.fail(wrap('HS_ERR_MIGRATION_CONNECTION_LOST', `${name} failed`, err)));
  }

  protected touch(): void {
    this.lastActivity = Date.now();
  }

  protected after(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    t.unref();
    this.timers.add(t);
  }

  /** Fails with HS_ERR_MIGRATION_TIMEOUT once nothing has moved for idleTimeoutMs. */
  protected watchIdle(what: () => string): void {
    const check = (): void => {
      if (this.settled) return;
      const idle = Date.now() - this.lastActivity;
      if (idle >= this.idleTimeoutMs) {
        this.fail(
          new HypersealError(
            'HS_ERR_MIGRATION_TIMEOUT',
            `migration ${this.role}: nothing moved for ${idle} ms (${what()})`,
          ),
        );
      } else {
        this.after(Math.min(1000, this.idleTimeoutMs - idle), check);
      }
    };
    this.after(Math.min(1000, this.idleTimeoutMs), check);
  }
}

/** The source end: QEMU's stream in, sealed frames out. */
export class MigrationSender extends ChannelEnd {
  private readonly sealer: FrameSealer;
  private peer!: net.Socket;
  private qemu: net.Socket | undefined;
  private readonly pending: Buffer[] = [];
  private pendingBytes = 0;
  private flushScheduled = false;
  private ack: Buffer[] = [];
  private ackFill = 0;
  private ended = false;

  /** END went out: from here the destination may have the whole stream (and commit). */
  get endSent(): boolean {
    return this.ended;
  }

  private constructor(
    private readonly opts: MigrationSenderOptions,
    private readonly framePayloadBytes: number,
    idleTimeoutMs: number,
  ) {
    super('sender', opts.migrationId, opts.cipher, idleTimeoutMs);
    this.sealer = new FrameSealer(opts);
  }

  /**
   * Connects to the receiver, sends START and listens for the source QEMU on
   * `qemuSocketPath`. Resolves once QEMU can be told `migrate unix:<qemuSocketPath>`.
   */
  static async open(opts: MigrationSenderOptions): Promise<MigrationSender> {
    const framePayloadBytes = opts.framePayloadBytes ?? FRAME.defaultFramePayloadBytes;
    if (
      !Number.isSafeInteger(framePayloadBytes) ||
      framePayloadBytes < FRAME.minFramePayloadBytes ||
      framePayloadBytes > FRAME.maxPayloadBytes
    ) {
      throw new HypersealError(
        'HS_ERR_MIGRATION_BAD_PARAMS',
        `framePayloadBytes must be from ${FRAME.minFramePayloadBytes} to ${FRAME.maxPayloadBytes}`,
      );
    }
    const peer = checkAddress(opts.peer, 'peer');
    checkAddress({ path: opts.qemuSocketPath }, 'qemuSocketPath');
    const connectTimeoutMs = checkTimeout(
      opts.connectTimeoutMs,
      'connectTimeoutMs',
      DEFAULTS.connectTimeoutMs,
    );
    const acceptTimeoutMs = checkTimeout(opts.acceptTimeoutMs, 'acceptTimeoutMs', DEFAULTS.acceptTimeoutMs);
    const idleTimeoutMs = checkTimeout(opts.idleTimeoutMs, 'idleTimeoutMs', DEFAULTS.idleTimeoutMs);
    const hwm = opts.highWaterMarkBytes ?? DEFAULTS.highWaterMarkBytes;
    primeAllocator();
    // Validates key, nonce and id (the FrameSealer copies them).
    const sender = new MigrationSender(opts, framePayloadBytes, idleTimeoutMs);
    try {
      const socket = await connectTo(peer, connectTimeoutMs, 'the migration receiver', hwm);
      socket.setNoDelay(true);
      sender.peer = socket;
      sender.track(socket, `connection to the migration receiver at ${describe(peer)}`);
      // Claimed just before the first sealed byte: an attempt that could not even connect
      // sealed nothing, and its spec may be tried again.
      claimNonce(opts.cipher === 'aes-256-gcm' ? opts.nonce : undefined);
      sender.writeFrame(sender.sealer.start());
      socket.on('data', (chunk: Buffer) => sender.onPeerData(chunk));
      socket.on('end', () => {
        sender.fail(
          new HypersealError(
            'HS_ERR_MIGRATION_CONNECTION_LOST',
            sender.ended
              ? 'the migration receiver closed the connection without acknowledging the stream'
              : 'the migration receiver closed the connection mid-stream (it refused the stream: its agent reports why)',
          ),
        );
      });
      socket.on('drain', () => {
        sender.touch();
        sender.qemu?.resume();
      });

      await removeStaleSocket(opts.qemuSocketPath);
      const server = net.createServer({ pauseOnConnect: true, highWaterMark: READ_HWM });
      server.on('connection', (qemu) => sender.onQemuConnection(qemu, server));
      await listenOn(server, { path: opts.qemuSocketPath });
      sender.servers.set(server, opts.qemuSocketPath);
      if (sender.settled) sender.stopListening(server);
      sender.after(acceptTimeoutMs, () => {
        if (sender.qemu === undefined) {
          sender.fail(
            new HypersealError(
              'HS_ERR_MIGRATION_TIMEOUT',
              `source QEMU did not connect to ${opts.qemuSocketPath} within ${acceptTimeoutMs} ms`,
            ),
          );
        }
      });
      trace('migration', 'sender open', {
        migration: opts.migrationId,
        cipher: opts.cipher,
        peer: describe(peer),
        qemuSocket: opts.qemuSocketPath,
      });
    } catch (err) {
      sender.fail(err);
      throw err instanceof HypersealError
        ? err
        : wrap('HS_ERR_INTERNAL', 'migration sender failed to open', err);
    }
    if (sender.settled) await sender.done;
    return sender;
  }

  get qemuSocketPath(): string {
    return this.opts.qemuSocketPath;
  }

  progress(): MigrationProgress {
    return this.snapshot(this.sealer.bytesIn, this.sealer.bytesOut, this.sealer.nextCounter);
  }

  protected dispose(): void {
    this.sealer.dispose();
  }

  private onQemuConnection(accepted: net.Socket, server: net.Server): void {
    if (this.qemu !== undefined || this.settled) {
      accepted.destroy();
      return;
    }
    // One QEMU per migration: nobody else gets to connect.
    this.stopListening(server);
    const qemu = adoptReader(accepted, (chunk) => this.onQemuData(chunk));
    this.qemu = qemu;
    this.track(qemu, 'the source QEMU’s migration connection');
    this.touch();
    this.watchIdle(() => (this.ended ? 'waiting for the receiver’s ACK' : 'streaming from the source QEMU'));
    qemu.on('end', () => this.onQemuEnd());
  }

  private onQemuData(chunk: Buffer): void {
    if (this.settled) return;
    this.firstByteAt ??= performance.now();
    this.touch();
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    try {
      while (this.pendingBytes >= this.framePayloadBytes) this.sealPending(this.framePayloadBytes);
    } catch (err) {
      this.fail(err);
      return;
    }
    // Whatever is left goes out once this burst of reads is over (libuv reads up to 32
    // chunks per wake-up): large frames under load, no added latency when trickling.
    if (this.pendingBytes > 0 && !this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => {
        this.flushScheduled = false;
        if (this.settled || this.pendingBytes === 0) return;
        try {
          this.sealPending(this.pendingBytes);
        } catch (err) {
          this.fail(err);
        }
      });
    }
  }

  /** Seals the first `n` pending bytes into one DATA frame, slicing (not copying) chunks. */
  private sealPending(n: number): void {
    const pieces: Buffer[] = [];
    let need = n;
    while (need > 0) {
      const head = this.pending[0] as Buffer;
      if (head.length <= need) {
        pieces.push(head);
        this.pending.shift();
        need -= head.length;
      } else {
        pieces.push(head.subarray(0, need));
        this.pending[0] = head.subarray(need);
        need = 0;
      }
    }
    this.pendingBytes -= n;
    this.writeFrame(this.sealer.seal(pieces));
  }

  private writeFrame(buffers: Buffer[]): void {
    const peer = this.peer;
    peer.cork();
    let ok = true;
    for (const b of buffers) ok = peer.write(b);
    peer.uncork();
    if (!ok) this.qemu?.pause();
  }

  private onQemuEnd(): void {
    if (this.settled) return;
    try {
      if (this.pendingBytes > 0) this.sealPending(this.pendingBytes);
      this.ended = true;
      this.writeFrame(this.sealer.end());
    } catch (err) {
      this.fail(err);
      return;
    }
    trace('migration', 'sender sent END', { migration: this.migrationId, bytes: this.sealer.bytesIn });
  }

  private onPeerData(chunk: Buffer): void {
    if (this.settled) return;
    this.touch();
    const want = this.sealer.ackBytes;
    if (!this.ended || this.ackFill + chunk.length > want) {
      this.fail(
        new HypersealError(
          'HS_ERR_MIGRATION_BAD_FRAME',
          this.ended
            ? 'the migration receiver sent more than an ACK'
            : 'the migration receiver sent data before END',
        ),
      );
      return;
    }
    this.ack.push(chunk);
    this.ackFill += chunk.length;
    if (this.ackFill < want) return;
    try {
      this.sealer.verifyAck(Buffer.concat(this.ack, want));
    } catch (err) {
      this.fail(err);
      return;
    }
    // The receiver has everything: close politely (a FIN, not a reset).
    this.peer.end();
    this.sockets.delete(this.peer);
    this.succeed();
  }
}

/** The destination end: frames in, verified stream out to the destination QEMU. */
export class MigrationReceiver extends ChannelEnd {
  private readonly opener: FrameOpener;
  private peer: net.Socket | undefined;
  private qemu: net.Socket | undefined;
  private qemuConnecting = false;
  /** Verified bytes waiting for the destination QEMU's socket to connect. */
  private early: Buffer[] = [];
  /** The address actually listened on (with the port chosen when 0 was asked for). */
  address!: ChannelAddress;

  private constructor(
    private readonly opts: MigrationReceiverOptions,
    idleTimeoutMs: number,
    private readonly connectTimeoutMs: number,
    private readonly hwm: number,
  ) {
    super('receiver', opts.migrationId, opts.cipher, idleTimeoutMs);
    this.opener = new FrameOpener(opts);
  }

  /** Listens for the sender. The destination QEMU must already wait on `qemuSocketPath`. */
  static async listen(opts: MigrationReceiverOptions): Promise<MigrationReceiver> {
    const listenAt = checkAddress(opts.listen, 'listen');
    checkAddress({ path: opts.qemuSocketPath }, 'qemuSocketPath');
    const connectTimeoutMs = checkTimeout(
      opts.connectTimeoutMs,
      'connectTimeoutMs',
      DEFAULTS.connectTimeoutMs,
    );
    const acceptTimeoutMs = checkTimeout(opts.acceptTimeoutMs, 'acceptTimeoutMs', DEFAULTS.acceptTimeoutMs);
    const idleTimeoutMs = checkTimeout(opts.idleTimeoutMs, 'idleTimeoutMs', DEFAULTS.idleTimeoutMs);
    const hwm = opts.highWaterMarkBytes ?? DEFAULTS.highWaterMarkBytes;
    const receiver = new MigrationReceiver(opts, idleTimeoutMs, connectTimeoutMs, hwm);
    primeAllocator();
    try {
      if ('path' in listenAt) await removeStaleSocket(listenAt.path);
      const server = net.createServer({ pauseOnConnect: true, highWaterMark: READ_HWM });
      server.on('connection', (socket) => receiver.onPeerConnection(socket, server));
      await listenOn(server, listenAt);
      receiver.servers.set(server, 'path' in listenAt ? listenAt.path : undefined);
      const a = server.address();
      receiver.address =
        typeof a === 'object' && a !== null && 'port' in listenAt
          ? { host: listenAt.host, port: a.port }
          : listenAt;
      receiver.after(acceptTimeoutMs, () => {
        if (receiver.peer === undefined) {
          receiver.fail(
            new HypersealError(
              'HS_ERR_MIGRATION_TIMEOUT',
              `no migration sender connected to ${describe(receiver.address)} within ${acceptTimeoutMs} ms`,
            ),
          );
        }
      });
      trace('migration', 'receiver listening', {
        migration: opts.migrationId,
        cipher: opts.cipher,
        address: describe(receiver.address),
      });
    } catch (err) {
      receiver.fail(err);
      throw err instanceof HypersealError
        ? err
        : wrap('HS_ERR_INTERNAL', 'migration receiver failed to listen', err);
    }
    return receiver;
  }

  progress(): MigrationProgress {
    return this.snapshot(this.opener.bytesOut, this.opener.bytesIn, this.opener.frames);
  }

  protected dispose(): void {
    this.opener.dispose();
  }

  private onPeerConnection(accepted: net.Socket, server: net.Server): void {
    if (this.peer !== undefined || this.settled) {
      accepted.destroy();
      return;
    }
    // One sender per migration: a second connection (a replay, a scan) is never read.
    this.stopListening(server);
    const socket = adoptReader(accepted, (chunk) => this.onPeerData(chunk));
    this.peer = socket;
    socket.setNoDelay(true);
    this.track(socket, 'the migration sender’s connection');
    this.touch();
    this.watchIdle(() =>
      this.opener.started ? 'streaming from the sender' : 'waiting for the sender’s START',
    );
    socket.on('end', () => {
      if (this.settled) return;
      try {
        this.opener.finish();
      } catch (err) {
        this.fail(err);
        return;
      }
      // END verified but the sender left before our ACK: the stream itself is complete.
    });
  }

  private onPeerData(chunk: Buffer): void {
    if (this.settled) return;
    this.touch();
    let out: Buffer[];
    try {
      out = this.opener.push(chunk);
    } catch (err) {
      this.fail(err);
      return;
    }
    if (this.opener.started) this.firstByteAt ??= performance.now();
    if (this.qemu === undefined) {
      if (!this.opener.started) return;
      for (const b of out) this.early.push(b);
      if (!this.qemuConnecting) this.connectQemu();
      // Nothing more is read until QEMU's socket is there to take it.
      this.peer?.pause();
      return;
    }
    this.deliver(out);
    if (this.opener.done) this.finishStream();
  }

  private connectQemu(): void {
    this.qemuConnecting = true;
    connectTo(
      { path: this.opts.qemuSocketPath },
      this.connectTimeoutMs,
      'the destination QEMU',
      this.hwm,
    ).then(
      (qemu) => {
        if (this.settled) {
          qemu.destroy();
          return;
        }
        this.qemu = qemu;
        this.track(qemu, 'the destination QEMU’s migration connection');
        // QEMU writes nothing back without a return path; read anyway so its close is seen.
        qemu.on('data', () => this.touch());
        qemu.on('drain', () => {
          this.touch();
          this.peer?.resume();
        });
        const early = this.early;
        this.early = [];
        this.deliver(early);
        if (this.opener.done) this.finishStream();
        else if (qemu.writableLength < this.hwm) this.peer?.resume();
      },
      (err: unknown) => this.fail(err),
    );
  }

  private deliver(buffers: Buffer[]): void {
    const qemu = this.qemu;
    if (qemu === undefined || buffers.length === 0) return;
    qemu.cork();
    let ok = true;
    for (const b of buffers) ok = qemu.write(b);
    qemu.uncork();
    if (!ok) this.peer?.pause();
  }

  private finishStream(): void {
    const qemu = this.qemu as net.Socket;
    const peer = this.peer as net.Socket;
    // Every verified byte handed to the kernel for QEMU, then the ACK.
    qemu.end(() => {
      if (this.settled) return;
      trace('migration', 'receiver delivered the stream', {
        migration: this.migrationId,
        bytes: this.opener.bytesOut,
      });
      (this.opts.beforeAck?.() ?? Promise.resolve()).then(
        () => {
          if (this.settled) return;
          let ack: Buffer[];
          try {
            ack = this.opener.acknowledge();
          } catch (err) {
            this.fail(err);
            return;
          }
          peer.cork();
          for (const b of ack) peer.write(b);
          peer.uncork();
          // Written, this end has committed: a cut from here on cannot undo it. The sender
          // may still miss the ACK; it then reports the migration unconfirmed and the
          // manager settles it by asking this host (which answers: committed).
          this.sockets.delete(peer);
          this.sockets.delete(qemu);
          this.succeed();
          peer.end();
        },
        (err: unknown) => this.fail(err),
      );
    });
  }
}
