/**
 * KMIP over TLS (profiles v1.1 §3): one persistent connection, requests written as soon as
 * they are made (pipelined) and answered in order. The codec does not know about sockets
 * and this file does not know about operations: it moves whole TTLV messages.
 */
import tls from 'node:tls';
import { isIP } from 'node:net';
import { HypersealError } from '../errors.js';
import { trace } from '../trace.js';
import { corkedWrite } from './cork.js';
import { DEFAULT_TTLV_LIMITS, TtlvFramer } from './ttlv.js';

export interface KmipTlsOptions {
  host: string;
  port: number;
  /** PEM of the CA that signed the server certificate; the only trust anchor used. */
  ca: string | Buffer;
  cert: string | Buffer;
  key: string | Buffer;
  /** Name to verify the server certificate against; defaults to `host`. */
  serverName?: string;
  connectTimeoutMs?: number;
  requestTimeoutMs?: number;
  maxMessageBytes?: number;
}

interface Pending {
  resolve(frame: Buffer): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

export class KmipConnection {
  private socket: tls.TLSSocket | undefined;
  private connecting: Promise<tls.TLSSocket> | undefined;
  /** The socket of `connecting`, so that close() can abort a handshake in progress. */
  private handshaking: tls.TLSSocket | undefined;
  private framer: TtlvFramer;
  private pending: Pending[] = [];
  private closed = false;

  constructor(private readonly opts: KmipTlsOptions) {
    this.framer = new TtlvFramer(opts.maxMessageBytes ?? DEFAULT_TTLV_LIMITS.maxMessageBytes);
  }

  get address(): string {
    return `${this.opts.host}:${this.opts.port}`;
  }

  /** Sends one encoded request and resolves with the raw response frame. */
  async roundTrip(frame: Buffer): Promise<Buffer> {
    if (this.closed) throw new HypersealError('HS_ERR_KMIP_CONNECTION_CLOSED', 'the KMIP client was closed');
    const socket = await this.connect();
    return new Promise<Buffer>((resolve, reject) => {
      if (this.socket !== socket) {
        reject(new HypersealError('HS_ERR_KMIP_CONNECTION_CLOSED', `${this.address} closed the connection`));
        return;
      }
      const timeoutMs = this.opts.requestTimeoutMs ?? 30_000;
      const timer = setTimeout(() => {
        // A late answer would pair with the wrong request, so the connection is dropped.
        this.drop(
          new HypersealError('HS_ERR_KMIP_TIMEOUT', `no answer from ${this.address} within ${timeoutMs} ms`),
        );
      }, timeoutMs);
      this.pending.push({ resolve, reject, timer });
      corkedWrite(socket, frame);
    });
  }

  close(): void {
    this.closed = true;
    // A connect still in progress would otherwise complete, send its request and keep
    // the process alive on an open socket nobody will ever close.
    this.handshaking?.destroy(
      new HypersealError('HS_ERR_KMIP_CONNECTION_CLOSED', 'the KMIP client was closed'),
    );
    this.drop(new HypersealError('HS_ERR_KMIP_CONNECTION_CLOSED', 'the KMIP client was closed'));
  }

  private connect(): Promise<tls.TLSSocket> {
    if (this.socket !== undefined && !this.socket.destroyed) return Promise.resolve(this.socket);
    this.connecting ??= new Promise<tls.TLSSocket>((resolve, reject) => {
      const { host, port } = this.opts;
      const serverName = this.opts.serverName ?? host;
      const socket = tls.connect({
        host,
        port,
        ca: this.opts.ca,
        cert: this.opts.cert,
        key: this.opts.key,
        // SNI must not carry an IP address (RFC 6066 §3); identity is still checked against SANs.
        ...(isIP(serverName) === 0 ? { servername: serverName } : {}),
        checkServerIdentity: (_name, cert) => tls.checkServerIdentity(serverName, cert),
        // KMIP's TLS 1.2 profile; servers like PyKMIP speak nothing newer, others get 1.3.
        minVersion: 'TLSv1.2',
        rejectUnauthorized: true,
      });
      const connectTimeoutMs = this.opts.connectTimeoutMs ?? 10_000;
      socket.setTimeout(connectTimeoutMs, () =>
        socket.destroy(
          new HypersealError(
            'HS_ERR_KMIP_TIMEOUT',
            `TLS connect to ${host}:${port} took over ${connectTimeoutMs} ms`,
          ),
        ),
      );
      socket.setNoDelay(true);
      this.handshaking = socket;
      const onError = (err: Error): void => {
        this.connecting = undefined;
        this.handshaking = undefined;
        reject(
          err instanceof HypersealError
            ? err
            : new HypersealError('HS_ERR_KMIP_CONNECT', `cannot connect to ${host}:${port}: ${err.message}`, {
                address: `${host}:${port}`,
              }),
        );
      };
      socket.once('error', onError);
      socket.once('secureConnect', () => {
        socket.setTimeout(0);
        socket.off('error', onError);
        this.connecting = undefined;
        this.handshaking = undefined;
        this.socket = socket;
        this.framer = new TtlvFramer(this.opts.maxMessageBytes ?? DEFAULT_TTLV_LIMITS.maxMessageBytes);
        trace('kmip', 'connected', {
          address: this.address,
          protocol: socket.getProtocol(),
          cipher: socket.getCipher().name,
        });
        socket.on('data', (chunk: Buffer) => this.onData(chunk));
        // Only the current socket may fail the requests in flight: an old one's late
        // 'close' must not tear down the connection that replaced it.
        socket.on('error', (err) => {
          if (this.socket === socket) {
            this.drop(
              new HypersealError(
                'HS_ERR_KMIP_CONNECTION_CLOSED',
                `connection to ${this.address} failed: ${err.message}`,
              ),
            );
          }
        });
        socket.on('close', () => {
          if (this.socket === socket) {
            this.drop(
              new HypersealError('HS_ERR_KMIP_CONNECTION_CLOSED', `${this.address} closed the connection`),
            );
          }
        });
        resolve(socket);
      });
    });
    return this.connecting;
  }

  private onData(chunk: Buffer): void {
    let frames: Buffer[];
    try {
      frames = this.framer.push(chunk);
    } catch (err) {
      this.drop(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    for (const frame of frames) {
      const p = this.pending.shift();
      if (p === undefined) {
        this.drop(
          new HypersealError('HS_ERR_KMIP_BAD_RESPONSE', `${this.address} sent a response nobody asked for`),
        );
        return;
      }
      clearTimeout(p.timer);
      p.resolve(frame);
    }
  }

  /** Fails every request in flight and forgets the socket; the next request reconnects. */
  private drop(err: Error): void {
    const socket = this.socket;
    this.socket = undefined;
    socket?.removeAllListeners('data');
    socket?.destroy();
    const pending = this.pending;
    this.pending = [];
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(err);
    }
  }
}
