/**
 * Transports to a syslog collector behind one narrow interface (as Xen Orchestra's
 * xen-api transports and grpc-js's transport.ts): the sink writes octet-counted frames and
 * learns when the connection fails; it does not know which transport it talks to.
 *
 *  - TCP (RFC 6587 octet counting): frames are written as they are.
 *  - TLS (RFC 5425): the same frames over TLS 1.2+; the collector's certificate must chain
 *    to the configured CA and name the target host (DNS name or IP address); a client
 *    certificate is presented when configured (collectors in x509 auth modes ask for one).
 *  - UDP (RFC 5426): each frame's message is one datagram. The socket is connected, so an
 *    ICMP "port unreachable" from a collector that is down comes back as ECONNREFUSED and
 *    is treated like a broken TCP connection; beyond that UDP gives no guarantee at all.
 *
 * Syslog has no acknowledgement in the protocol (RELP has, but is not a standard). What a
 * transport can say is "the bytes were handed to the kernel and the socket has not failed
 * since"; sink.ts builds its acknowledgement from that.
 */
import dgram from 'node:dgram';
import { lookup } from 'node:dns/promises';
import net from 'node:net';
import tls from 'node:tls';
import { HypersealError } from '../../errors.js';
import { splitFrames } from './format.js';

export type TransportKind = 'udp' | 'tcp' | 'tls';

export interface TransportOptions {
  readonly host: string;
  readonly port: number;
  /** TLS: the CA (PEM) the collector's certificate must chain to. */
  readonly caPem?: string;
  /** TLS: our client certificate and its key (PEM), for collectors that ask for one. */
  readonly certPem?: string;
  readonly keyPem?: string;
  /** Connecting (TCP handshake + TLS handshake) must finish within this. Default 10 s. */
  readonly connectTimeoutMs?: number;
}

export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/** TCP keep-alive probes start after this idle time: a collector that vanished is noticed. */
const KEEPALIVE_MS = 30_000;

/** One connection to a collector. */
export interface SyslogConnection {
  readonly kind: TransportKind;
  /**
   * Writes octet-counted frames; resolves once they were handed to the kernel, rejects
   * (HS_ERR_SYSLOG_CONNECT) when the connection has failed. One write at a time.
   */
  write(frames: Buffer): Promise<void>;
  /** Null while the connection is usable; the reason once it failed or was closed. */
  readonly failure: Error | null;
  /** Resolves (never rejects) with the reason when the connection fails or is closed. */
  readonly closed: Promise<Error>;
  /**
   * Ends the connection cleanly. TCP/TLS: half-closes and waits for the collector to close
   * its side too — a syslog receiver closes only after it read everything up to our FIN,
   * so `true` proves every byte written was read. UDP: waits `timeoutMs` for a late ICMP
   * error; `true` if none came (the best UDP can say). False on error or timeout.
   */
  end(timeoutMs: number): Promise<boolean>;
  /** Drops the connection now. */
  destroy(): void;
}

export type Connector = (opts: TransportOptions) => Promise<SyslogConnection>;

function connectError(kind: TransportKind, opts: TransportOptions, err: unknown): HypersealError {
  const reason = err instanceof Error ? err.message : String(err);
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return new HypersealError(
    'HS_ERR_SYSLOG_CONNECT',
    `syslog collector ${kind}://${opts.host}:${opts.port}: ${reason}`,
    code === undefined ? { transport: kind } : { transport: kind, reason: code },
    { cause: err },
  );
}

/** The address as URL-like hosts write it: an IPv6 literal may come in brackets. */
function bareHost(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

/** TCP and TLS sockets behave the same once connected. */
class StreamConnection implements SyslogConnection {
  failure: Error | null = null;
  readonly closed: Promise<Error>;
  private settle!: (err: Error) => void;
  private peerEnded = false;

  constructor(
    readonly kind: 'tcp' | 'tls',
    private readonly socket: net.Socket,
    private readonly opts: TransportOptions,
  ) {
    this.closed = new Promise((resolve) => (this.settle = resolve));
    socket.setNoDelay(true); // we batch frames ourselves; Nagle would only add latency
    socket.setKeepAlive(true, KEEPALIVE_MS);
    // Collectors send nothing on a syslog connection; read anyway, to see FIN and RST.
    socket.on('data', () => undefined);
    socket.on('end', () => {
      this.peerEnded = true;
      this.fail(connectError(kind, opts, new Error('the collector closed the connection')));
    });
    socket.on('error', (err) => this.fail(connectError(kind, opts, err)));
    socket.on('close', () => this.fail(connectError(kind, opts, new Error('connection closed'))));
  }

  private fail(err: Error): void {
    if (this.failure !== null) return;
    this.failure = err;
    this.settle(err);
  }

  write(frames: Buffer): Promise<void> {
    if (this.failure !== null) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.socket.write(frames, (err) => {
        if (err !== null && err !== undefined) {
          const e = connectError(this.kind, this.opts, err);
          this.fail(e);
          reject(e);
        } else if (this.failure !== null) {
          reject(this.failure);
        } else {
          resolve();
        }
      });
    });
  }

  end(timeoutMs: number): Promise<boolean> {
    if (this.failure !== null) return Promise.resolve(false);
    return new Promise((resolve) => {
      let done = false;
      const finish = (ok: boolean): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.socket.destroy();
        resolve(ok);
      };
      const timer = setTimeout(() => finish(false), timeoutMs);
      // Our FIN (TLS: close_notify, then FIN); the collector answers with its own once it
      // has read everything. An RST instead ('error') means it had not.
      this.socket.once('end', () => finish(true));
      this.socket.once('error', () => finish(false));
      this.socket.once('close', (hadError: boolean) => finish(!hadError && this.peerEnded));
      this.socket.end();
    });
  }

  destroy(): void {
    this.fail(connectError(this.kind, this.opts, new Error('connection closed by us')));
    this.socket.destroy();
  }
}

function withTimeout(
  socket: net.Socket,
  kind: TransportKind,
  opts: TransportOptions,
  readyEvent: 'connect' | 'secureConnect',
): Promise<void> {
  const ms = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(connectError(kind, opts, new Error(`no connection within ${ms} ms`)));
    }, ms);
    socket.once(readyEvent, () => {
      clearTimeout(timer);
      socket.removeListener('error', onError);
      resolve();
    });
    const onError = (err: Error): void => {
      clearTimeout(timer);
      socket.destroy();
      reject(connectError(kind, opts, err));
    };
    socket.once('error', onError);
  });
}

export const connectTcp: Connector = async (opts) => {
  const socket = net.connect({ host: bareHost(opts.host), port: opts.port });
  await withTimeout(socket, 'tcp', opts, 'connect');
  return new StreamConnection('tcp', socket, opts);
};

export const connectTls: Connector = async (opts) => {
  if (opts.caPem === undefined || opts.caPem === '') {
    throw new HypersealError(
      'HS_ERR_SYSLOG_CONFIG',
      'a TLS syslog target needs caPem: the CA of its collector',
    );
  }
  const host = bareHost(opts.host);
  const socket = tls.connect({
    host,
    port: opts.port,
    ca: [opts.caPem],
    // SNI takes DNS names only; the certificate is still checked against an IP address.
    ...(net.isIP(host) === 0 ? { servername: host } : {}),
    ...(opts.certPem !== undefined && opts.keyPem !== undefined
      ? { cert: opts.certPem, key: opts.keyPem }
      : {}),
    minVersion: 'TLSv1.2',
    rejectUnauthorized: true,
  });
  await withTimeout(socket, 'tls', opts, 'secureConnect');
  return new StreamConnection('tls', socket, opts);
};

class DatagramConnection implements SyslogConnection {
  readonly kind = 'udp' as const;
  failure: Error | null = null;
  readonly closed: Promise<Error>;
  private settle!: (err: Error) => void;

  constructor(
    private readonly socket: dgram.Socket,
    private readonly opts: TransportOptions,
  ) {
    this.closed = new Promise((resolve) => (this.settle = resolve));
    socket.on('error', (err) => this.fail(connectError('udp', opts, err)));
    socket.on('close', () => this.fail(connectError('udp', opts, new Error('socket closed'))));
  }

  private fail(err: Error): void {
    if (this.failure !== null) return;
    this.failure = err;
    this.settle(err);
  }

  async write(frames: Buffer): Promise<void> {
    for (const msg of splitFrames(frames)) {
      if (this.failure !== null) throw this.failure;
      await new Promise<void>((resolve, reject) =>
        this.socket.send(msg, (err) => {
          if (err === null || err === undefined) return resolve();
          const e = connectError('udp', this.opts, err);
          this.fail(e);
          reject(e);
        }),
      );
    }
    if (this.failure !== null) throw this.failure;
  }

  end(timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      setTimeout(() => {
        const ok = this.failure === null;
        this.destroy();
        resolve(ok);
      }, timeoutMs);
    });
  }

  destroy(): void {
    this.fail(connectError('udp', this.opts, new Error('socket closed by us')));
    try {
      this.socket.close();
    } catch {
      // Already closed.
    }
  }
}

export const connectUdp: Connector = async (opts) => {
  let address: string;
  let family: number;
  try {
    ({ address, family } = await lookup(bareHost(opts.host)));
  } catch (err) {
    throw connectError('udp', opts, err);
  }
  const socket = dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
  await new Promise<void>((resolve, reject) => {
    socket.once('error', (err) => {
      socket.close();
      reject(connectError('udp', opts, err));
    });
    socket.connect(opts.port, address, () => {
      socket.removeAllListeners('error');
      resolve();
    });
  });
  return new DatagramConnection(socket, opts);
};

export const CONNECTORS: Readonly<Record<TransportKind, Connector>> = {
  udp: connectUdp,
  tcp: connectTcp,
  tls: connectTls,
};
