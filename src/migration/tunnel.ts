/**
 * A duplex tunnel over the frame codec (frame.ts): carries byte streams in both
 * directions between two agents, e.g. the NBD connections of a live migration with local
 * disks (source QEMU's NBD client ⇄ destination QEMU's NBD server).
 *
 *   source QEMU ──unix──▶ TunnelSource ══TCP (frames both ways)══ TunnelDestination ──unix──▶ destination QEMU
 *   (NBD client, blockdev-add nbd)                                 (nbd-server-start + block-export-add)
 *
 * Every connection QEMU opens to the source's unix socket (0600) becomes one TCP
 * connection to the destination, preceded by a 4-byte connection number (in the clear;
 * each number is accepted once). Each direction of each connection has its own key and
 * nonce, derived with HKDF-SHA256 from the migration key (salt: the migration nonce;
 * info: "hyperseal nbd a→b #n" or "hyperseal nbd b→a #n"), so no (key, IV) pair is ever
 * used twice, and never the memory stream's own key. Each direction is a frame stream of
 * its own: START, DATA with strict counters, END; any tampered, replayed, reordered or
 * truncated frame fails the connection (both sockets destroyed) and the tunnel.
 *
 * The destination connects to its NBD socket only once the source's START verified, so
 * QEMU never sees an unauthenticated byte. A half-close on one side is forwarded as END.
 */
import { hkdfSync } from 'node:crypto';
import { chmod, unlink } from 'node:fs/promises';
import net from 'node:net';
import { HypersealError } from '../errors.js';
import { trace } from '../trace.js';
import { FRAME, FrameOpener, FrameSealer } from './frame.js';
import type { FrameCodecParams, MigrationCipher } from './frame.js';

export interface TunnelParams {
  migrationId: string;
  cipher: MigrationCipher;
  /** 32 bytes (aes-256-gcm); copied. Directional keys are derived from it. */
  key?: Buffer;
  /** 8 bytes (aes-256-gcm); copied. */
  nonce?: Buffer;
}

export type TunnelDirection = 'a→b' | 'b→a';

/** The most connections one tunnel accepts (one per disk, with room for reconnects). */
const MAX_CONNECTIONS = 64;

/**
 * The codec parameters of one direction of connection `n`: key and nonce derived from
 * the migration key (aes-256-gcm), or none. The caller zeroizes the returned key/nonce.
 */
export function tunnelCodecParams(p: TunnelParams, direction: TunnelDirection, n: number): FrameCodecParams {
  if (p.cipher === 'none') return { migrationId: p.migrationId, cipher: 'none' };
  if (!p.key || !p.nonce) {
    throw new HypersealError('HS_ERR_MIGRATION_BAD_PARAMS', 'an aes-256-gcm tunnel needs a key and nonce');
  }
  const okm = Buffer.from(
    hkdfSync('sha256', p.key, p.nonce, Buffer.from(`hyperseal nbd ${direction} #${n}`, 'utf8'), 40),
  );
  const key = Buffer.alloc(FRAME.keyBytes);
  const nonce = Buffer.alloc(FRAME.nonceBytes);
  okm.copy(key, 0, 0, 32);
  okm.copy(nonce, 0, 32, 40);
  okm.fill(0);
  return { migrationId: p.migrationId, cipher: 'aes-256-gcm', key, nonce };
}

function codec<T>(
  p: TunnelParams,
  direction: TunnelDirection,
  n: number,
  make: (c: FrameCodecParams) => T,
): T {
  const c = tunnelCodecParams(p, direction, n);
  try {
    return make(c);
  } finally {
    c.key?.fill(0);
    c.nonce?.fill(0);
  }
}

function copyParams(p: TunnelParams): TunnelParams {
  const own = (b: Buffer | undefined): Buffer | undefined => {
    if (b === undefined) return undefined;
    const c = Buffer.alloc(b.length);
    b.copy(c);
    return c;
  };
  const key = own(p.key);
  const nonce = own(p.nonce);
  return {
    migrationId: p.migrationId,
    cipher: p.cipher,
    ...(key ? { key } : {}),
    ...(nonce ? { nonce } : {}),
  };
}

function writeAll(sock: net.Socket, bufs: Buffer[]): boolean {
  let ok = true;
  for (const b of bufs) ok = sock.write(b) && ok;
  return ok;
}

/**
 * Splices `local` (plaintext) and `remote` (frames) once both STARTs are exchanged: what
 * `local` sends is sealed to `remote`; what `remote` sends is opened to `local`. `pending`
 * holds plaintext the opener released before `local` was ready. Resolves when both
 * directions ended cleanly; rejects (both sockets destroyed) on the first failure.
 */
function splice(
  local: net.Socket,
  remote: net.Socket,
  sealer: FrameSealer,
  opener: FrameOpener,
  feed: (chunk: Buffer) => Buffer[],
  counters: { sent: number; received: number },
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    let localEnded = false;
    let remoteEnded = false;
    const finish = (err?: unknown): void => {
      if (settled) return;
      settled = true;
      sealer.dispose();
      opener.dispose();
      if (err !== undefined) {
        local.destroy();
        remote.destroy();
        reject(
          err instanceof HypersealError
            ? err
            : new HypersealError('HS_ERR_MIGRATION_FAILED', `tunnel: ${String(err)}`, undefined, {
                cause: err,
              }),
        );
      } else {
        resolve();
      }
    };
    const maybeDone = (): void => {
      if (localEnded && remoteEnded) {
        local.end();
        remote.end();
        finish();
      }
    };
    local.on('data', (chunk: Buffer) => {
      try {
        for (let at = 0; at < chunk.length; at += FRAME.maxPayloadBytes) {
          const piece = chunk.subarray(at, Math.min(chunk.length, at + FRAME.maxPayloadBytes));
          counters.sent += piece.length;
          if (!writeAll(remote, sealer.seal([piece]))) local.pause();
        }
      } catch (err) {
        finish(err);
      }
    });
    remote.on('drain', () => local.resume());
    local.on('drain', () => remote.resume());
    local.once('end', () => {
      try {
        writeAll(remote, sealer.end());
        // Half-close: the other direction stays open.
        remote.end();
        localEnded = true;
        maybeDone();
      } catch (err) {
        finish(err);
      }
    });
    remote.on('data', (chunk: Buffer) => {
      try {
        const out = feed(chunk);
        for (const b of out) counters.received += b.length;
        if (out.length > 0 && !writeAll(local, out)) remote.pause();
      } catch (err) {
        finish(err);
      }
    });
    remote.once('end', () => {
      try {
        opener.finish();
        // The peer's stream is complete: pass the half-close on.
        local.end();
        remoteEnded = true;
        maybeDone();
      } catch (err) {
        finish(err);
      }
    });
    for (const [s, name] of [
      [local, 'local'],
      [remote, 'remote'],
    ] as const) {
      s.on('error', (err) =>
        finish(new HypersealError('HS_ERR_MIGRATION_FAILED', `tunnel ${name} socket: ${err.message}`)),
      );
      s.once('close', () => {
        if (!settled)
          finish(new HypersealError('HS_ERR_MIGRATION_FAILED', `tunnel ${name} socket closed early`));
      });
    }
    local.resume();
    remote.resume();
  });
}

/** Shared by both ends: open connections, the first failure, teardown. */
abstract class TunnelEnd {
  protected readonly params: TunnelParams;
  protected readonly sockets = new Set<net.Socket>();
  protected closed = false;
  private failure: HypersealError | undefined;
  private readonly failedListeners: ((err: HypersealError) => void)[] = [];
  /** Plaintext bytes carried: source → destination and back. */
  readonly counters = { sent: 0, received: 0 };
  protected active = 0;

  protected constructor(params: TunnelParams) {
    this.params = copyParams(params);
  }

  /** The first failure of any connection, if any. */
  get error(): HypersealError | undefined {
    return this.failure;
  }

  /** Called on the first failure (once). */
  onFailure(fn: (err: HypersealError) => void): void {
    if (this.failure) fn(this.failure);
    else this.failedListeners.push(fn);
  }

  protected fail(err: unknown): void {
    if (this.closed || this.failure) return;
    // Every failure names the disk tunnel, whichever layer saw it first (a frame reader's
    // "stream ended" would otherwise read like the memory stream's), and keeps its code.
    const message = err instanceof Error ? err.message : String(err);
    const named = /^tunnel\b/.test(message) ? message : `tunnel: ${message}`;
    this.failure =
      err instanceof HypersealError
        ? new HypersealError(err.code, named, err.details === undefined ? undefined : { ...err.details }, {
            cause: err,
          })
        : new HypersealError('HS_ERR_MIGRATION_FAILED', named, undefined, { cause: err });
    trace('migration', 'tunnel failed', {
      migrationId: this.params.migrationId,
      error: this.failure.message,
    });
    for (const s of this.sockets) s.destroy();
    for (const fn of this.failedListeners.splice(0)) fn(this.failure);
  }

  protected track(s: net.Socket): void {
    this.sockets.add(s);
    s.once('close', () => this.sockets.delete(s));
  }

  protected run(
    local: net.Socket,
    remote: net.Socket,
    sealer: FrameSealer,
    opener: FrameOpener,
    feed: (c: Buffer) => Buffer[],
  ): void {
    this.active++;
    splice(local, remote, sealer, opener, feed, this.counters).then(
      () => {
        this.active--;
      },
      (err: unknown) => {
        this.active--;
        this.fail(err);
      },
    );
  }

  /** Stops listening, destroys every connection, zeroizes the key. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.sockets) s.destroy();
    this.params.key?.fill(0);
    this.params.nonce?.fill(0);
    this.stop();
  }

  protected abstract stop(): void;
}

/**
 * The source end: listens on a 0600 unix socket for the local QEMU's NBD client; each
 * connection is tunnelled to `peer` as a connection of its own.
 */
export class TunnelSource extends TunnelEnd {
  private next = 0;

  private constructor(
    params: TunnelParams,
    private readonly server: net.Server,
    readonly socketPath: string,
    private readonly peer: { host: string; port: number },
  ) {
    super(params);
  }

  static async listen(opts: {
    params: TunnelParams;
    socketPath: string;
    peer: { host: string; port: number };
  }): Promise<TunnelSource> {
    codec(opts.params, 'a→b', 0, (c) => new FrameSealer(c).dispose()); // validates the parameters
    await unlink(opts.socketPath).catch(() => undefined);
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    await chmod(opts.socketPath, 0o600);
    const t = new TunnelSource(opts.params, server, opts.socketPath, opts.peer);
    server.on('connection', (s) => t.accept(s));
    return t;
  }

  private accept(local: net.Socket): void {
    this.track(local);
    if (this.closed || this.error || this.next >= MAX_CONNECTIONS) {
      local.destroy();
      return;
    }
    const n = this.next++;
    const remote = net.connect({ host: this.peer.host, port: this.peer.port, allowHalfOpen: true });
    this.track(remote);
    remote.setNoDelay(true);
    remote.pause();
    let sealer: FrameSealer;
    let opener: FrameOpener;
    try {
      sealer = codec(this.params, 'a→b', n, (c) => new FrameSealer(c));
      opener = codec(this.params, 'b→a', n, (c) => new FrameOpener(c));
    } catch (err) {
      this.fail(err);
      return;
    }
    const onEarly = (err: Error): void =>
      this.fail(
        new HypersealError(
          'HS_ERR_MIGRATION_FAILED',
          `tunnel peer ${this.peer.host}:${this.peer.port}: ${err.message}`,
        ),
      );
    remote.once('error', onEarly);
    remote.once('connect', () => {
      remote.off('error', onEarly);
      const hello = Buffer.alloc(4);
      hello.writeUInt32BE(n);
      remote.write(hello);
      writeAll(remote, sealer.start());
      trace('migration', 'tunnel connection', { migrationId: this.params.migrationId, connection: n });
      this.run(local, remote, sealer, opener, (chunk) => opener.push(chunk));
    });
  }

  protected stop(): void {
    this.server.close();
    void unlink(this.socketPath).catch(() => undefined);
  }
}

/**
 * The destination end: listens on TCP; each connection presents its number and START,
 * and only then is connected to the local NBD socket.
 */
export class TunnelDestination extends TunnelEnd {
  private readonly used = new Set<number>();

  private constructor(
    params: TunnelParams,
    private readonly server: net.Server,
    private readonly targetPath: string,
  ) {
    super(params);
  }

  get address(): { host: string; port: number } {
    const a = this.server.address() as net.AddressInfo;
    return { host: a.address, port: a.port };
  }

  static async listen(opts: {
    params: TunnelParams;
    listen: { host: string; port: number };
    targetPath: string;
  }): Promise<TunnelDestination> {
    codec(opts.params, 'b→a', 0, (c) => new FrameSealer(c).dispose());
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.listen.port, opts.listen.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const t = new TunnelDestination(opts.params, server, opts.targetPath);
    server.on('connection', (s) => t.accept(s));
    return t;
  }

  private accept(remote: net.Socket): void {
    this.track(remote);
    if (this.closed || this.error) {
      remote.destroy();
      return;
    }
    remote.setNoDelay(true);
    let hello = Buffer.alloc(0);
    let opener: FrameOpener | undefined;
    let n = -1;
    const early: Buffer[] = [];
    const refuse = (err: unknown): void => {
      remote.destroy();
      opener?.dispose();
      this.fail(err);
    };
    const onData = (chunk: Buffer): void => {
      try {
        if (opener === undefined) {
          hello = Buffer.concat([hello, chunk]);
          if (hello.length < 4) return;
          n = hello.readUInt32BE(0);
          if (n >= MAX_CONNECTIONS || this.used.has(n)) {
            throw new HypersealError(
              'HS_ERR_MIGRATION_BAD_FRAME',
              `tunnel connection ${n} refused (used or out of range)`,
            );
          }
          this.used.add(n);
          opener = codec(this.params, 'a→b', n, (c) => new FrameOpener(c));
          chunk = hello.subarray(4);
        }
        const out = opener.push(chunk);
        early.push(...out);
        if (opener.started) {
          remote.off('data', onData);
          remote.off('end', onEnd);
          remote.pause();
          this.connectLocal(remote, opener, n, early);
        }
      } catch (err) {
        refuse(err);
      }
    };
    const onEnd = (): void =>
      refuse(new HypersealError('HS_ERR_MIGRATION_TRUNCATED', 'tunnel connection ended before START'));
    remote.on('data', onData);
    remote.on('end', onEnd);
    remote.once('error', (err) =>
      refuse(new HypersealError('HS_ERR_MIGRATION_FAILED', `tunnel peer: ${err.message}`)),
    );
    remote.resume();
  }

  private connectLocal(remote: net.Socket, opener: FrameOpener, n: number, early: Buffer[]): void {
    let sealer: FrameSealer;
    try {
      sealer = codec(this.params, 'b→a', n, (c) => new FrameSealer(c));
    } catch (err) {
      this.fail(err);
      return;
    }
    const local = net.connect({ path: this.targetPath, allowHalfOpen: true });
    this.track(local);
    local.pause();
    const onEarly = (err: Error): void => {
      remote.destroy();
      this.fail(
        new HypersealError('HS_ERR_MIGRATION_FAILED', `tunnel target ${this.targetPath}: ${err.message}`),
      );
    };
    local.once('error', onEarly);
    local.once('connect', () => {
      local.off('error', onEarly);
      writeAll(remote, sealer.start());
      writeAll(local, early);
      for (const b of early) this.counters.sent += b.length;
      trace('migration', 'tunnel connection accepted', {
        migrationId: this.params.migrationId,
        connection: n,
      });
      // Here `local` is the NBD server: what it sends goes back (b→a).
      this.run(local, remote, sealer, opener, (chunk) => opener.push(chunk));
    });
  }

  protected stop(): void {
    this.server.close();
  }
}
