/**
 * KMIP over TLS, server side: mutual TLS (client certificate required, chained to our CA
 * and carrying the clientAuth usage), message framing with a size limit, and in-order
 * answers per connection. What a message means is the handler's business.
 *
 * Hostile input: a frame that cannot be framed (not a Structure, over the size limit)
 * gets a clean close; a slow or idle client is dropped after `idleTimeoutMs`; each
 * connection has at most `maxInFlight` requests queued, after which reading pauses.
 */
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { HypersealError } from '../errors.js';
import { trace } from '../trace.js';
import { corkedWrite } from './cork.js';
import { DEFAULT_TTLV_LIMITS, TtlvFramer } from './ttlv.js';

export interface KmipPeer {
  /** The client certificate's subject CN: the identity objects are owned by. */
  identity: string;
  remoteAddress: string;
}

export type KmipFrameHandler = (frame: Buffer, peer: KmipPeer) => Promise<Buffer>;

export interface KmipServerOptions {
  host?: string;
  port?: number;
  ca: string | Buffer;
  cert: string | Buffer;
  key: string | Buffer;
  handler: KmipFrameHandler;
  maxMessageBytes?: number;
  idleTimeoutMs?: number;
  maxConnections?: number;
  maxInFlight?: number;
}

const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2';

export class KmipServer {
  private readonly server: tls.Server;
  private readonly sockets = new Set<tls.TLSSocket>();

  constructor(private readonly opts: KmipServerOptions) {
    this.server = tls.createServer({
      ca: opts.ca,
      cert: opts.cert,
      key: opts.key,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.2',
    });
    this.server.maxConnections = opts.maxConnections ?? 1024;
    this.server.on('secureConnection', (socket) => this.serve(socket));
    // Handshake failures (wrong CA, no certificate) are the client's problem, not ours.
    this.server.on('tlsClientError', (err) => trace('kmip', 'tls handshake refused', { error: err.message }));
  }

  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.port ?? 5696, this.opts.host ?? '127.0.0.1', () => {
        this.server.off('error', reject);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  private serve(socket: tls.TLSSocket): void {
    const peerCert = socket.getPeerCertificate();
    const identity = typeof peerCert.subject?.CN === 'string' ? peerCert.subject.CN : '';
    const eku = (peerCert as tls.DetailedPeerCertificate & { ext_key_usage?: string[] }).ext_key_usage;
    if (identity === '' || (eku !== undefined && !eku.includes(CLIENT_AUTH_OID))) {
      trace('kmip', 'client certificate refused', { identity, reason: 'no CN or no clientAuth usage' });
      socket.destroy();
      return;
    }
    const peer: KmipPeer = {
      identity,
      remoteAddress: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`,
    };
    trace('kmip', 'client connected', { ...peer, protocol: socket.getProtocol() });
    this.sockets.add(socket);
    socket.setNoDelay(true);
    socket.setTimeout(this.opts.idleTimeoutMs ?? 5 * 60_000, () => socket.destroy());
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', (err) => trace('kmip', 'connection error', { ...peer, error: err.message }));

    const framer = new TtlvFramer(this.opts.maxMessageBytes ?? DEFAULT_TTLV_LIMITS.maxMessageBytes);
    const maxInFlight = this.opts.maxInFlight ?? 64;
    let inFlight = 0;
    // Answers go out strictly in arrival order (KMIP clients match them by position).
    // Each frame is handed to the handler as soon as it is framed, so a connection's
    // pipelined requests can share work (e.g. one commit); only the writes are chained.
    let writes: Promise<void> = Promise.resolve();

    socket.on('data', (chunk: Buffer) => {
      let frames: Buffer[];
      try {
        frames = framer.push(chunk);
      } catch (err) {
        // Unframeable input: nothing sensible can be answered in-stream. Close cleanly.
        trace('kmip', 'unframeable input, closing', {
          ...peer,
          error: err instanceof HypersealError ? err.code : String(err),
        });
        socket.end();
        socket.pause();
        return;
      }
      for (const frame of frames) {
        inFlight++;
        if (inFlight >= maxInFlight) socket.pause();
        // Promise.resolve().then: a handler that throws synchronously fails this
        // connection, never the process.
        const answer = Promise.resolve().then(() => this.opts.handler(frame, peer));
        // Its failure is reported through `writes`; this only marks it as handled.
        answer.catch(() => undefined);
        writes = writes.then(async () => {
          const response = await answer;
          if (!socket.destroyed) corkedWrite(socket, response, () => response.fill(0));
          inFlight--;
          if (inFlight < maxInFlight && socket.isPaused() && !socket.destroyed) socket.resume();
        });
        writes.catch((err: unknown) => {
          trace('kmip', 'handler failed, closing', { ...peer, error: String(err) });
          socket.destroy();
        });
      }
    });
  }
}
