/**
 * A key provider's KMIP servers as one cluster: tried in order with one CA and one client
 * identity, each over its own persistent connection (KmipSession), reused across calls.
 *
 * Failover is for transport failures only (refused, TLS failed, timeout, connection lost,
 * an answer that is not KMIP): the next server is tried, and the one that answered last
 * is tried first next time. A KMIP answer, success or refusal (Item Not Found, Permission
 * Denied, …), ends the call: another server of the same cluster holds the same objects
 * and would say the same, and retrying a refused Destroy elsewhere would only hide it.
 *
 * Each `run` sends one KMIP message per attempt, so a call that is retried on another
 * server never repeats half of a multi-message operation. A Create whose answer was lost
 * (timeout after sending) and that is then sent to the next server can leave an unused
 * key on the key manager; that is the price of not failing key creation when one server
 * dies mid-request.
 */
import type { ErrorCode } from '../errors.js';
import { HypersealError } from '../errors.js';
import { KmipClient } from '../kmip/client.js';
import type { KmipTlsOptions } from '../kmip/transport.js';
import { Operation, QueryFunction, enumName } from '../kmip/enums.js';
import { trace } from '../trace.js';
import { KmipSession } from './session.js';

export interface KmipServerAddress {
  host: string;
  port: number;
}

export interface KmipClusterOptions {
  /** The key provider's name, for messages. */
  name: string;
  servers: readonly KmipServerAddress[];
  /** PEM of the CA(s) that signed the servers' certificates: the only trust anchors used. */
  caPem: string;
  clientCertPem: string;
  clientKeyPem: string;
  /** TLS connect timeout per server (default 5000 ms): how long a dead server delays failover. */
  connectTimeoutMs?: number;
  /** Time for one answer once connected (default 15000 ms). */
  requestTimeoutMs?: number;
}

export interface ServerFailure {
  address: string;
  code: ErrorCode;
  message: string;
}

export interface ServerTestResult {
  host: string;
  port: number;
  address: string;
  ok: boolean;
  /** Connect (TLS handshake included), Discover Versions and Query, in ms. */
  latencyMs: number;
  /** Protocol versions the server speaks, e.g. ['1.1', '1.0']. */
  versions?: string[];
  vendor?: string;
  /** Operations the server lists in Query (spec names). */
  operations?: string[];
  error?: { code: ErrorCode; message: string };
}

/** Codes that mean "this server did not answer usefully", as opposed to a KMIP refusal. */
const TRANSPORT_FAILURES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'HS_ERR_KMIP_CONNECT',
  'HS_ERR_KMIP_TIMEOUT',
  'HS_ERR_KMIP_CONNECTION_CLOSED',
  'HS_ERR_KMIP_BAD_RESPONSE',
  // Framing failures surface as codec errors on the connection (garbage from a non-KMIP port).
  'HS_ERR_KMIP_TOO_LARGE',
  'HS_ERR_KMIP_TRUNCATED',
  'HS_ERR_KMIP_BAD_TYPE',
  'HS_ERR_KMIP_BAD_LENGTH',
  'HS_ERR_KMIP_BAD_PADDING',
  'HS_ERR_KMIP_TOO_DEEP',
  'HS_ERR_KMIP_BAD_TEXT',
  'HS_ERR_KMIP_TRAILING_BYTES',
  'HS_ERR_KMIP_BAD_MESSAGE',
]);

export function isTransportFailure(err: unknown): err is HypersealError {
  return err instanceof HypersealError && TRANSPORT_FAILURES.has(err.code);
}

export function formatAddress(s: KmipServerAddress): string {
  return s.host.includes(':') ? `[${s.host}]:${s.port}` : `${s.host}:${s.port}`;
}

export class KmipCluster {
  readonly name: string;
  readonly servers: readonly KmipServerAddress[];
  private readonly sessions: (KmipSession | undefined)[];
  private preferred = 0;
  private closed = false;
  /** Calls under way: a retired cluster closes its connections when the last one ends. */
  private inFlight = 0;
  private retiring = false;
  /** KMIP request messages attempted (one per server tried), for tests and diagnostics. */
  requestsSent = 0;
  /** What the servers turned out to support; undefined until tried. */
  readonly features: { idPlaceholder?: boolean } = {};

  constructor(private readonly opts: KmipClusterOptions) {
    if (opts.servers.length === 0) {
      throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `key provider '${opts.name}' has no KMIP servers`);
    }
    this.name = opts.name;
    this.servers = opts.servers.map((s) => ({ host: s.host, port: s.port }));
    this.sessions = this.servers.map(() => undefined);
  }

  /** The server tried first by the next call: the one that answered last. */
  get preferredServer(): KmipServerAddress {
    return this.servers[this.preferred] as KmipServerAddress;
  }

  private tlsOptions(s: KmipServerAddress): KmipTlsOptions {
    return {
      host: s.host,
      port: s.port,
      ca: this.opts.caPem,
      cert: this.opts.clientCertPem,
      key: this.opts.clientKeyPem,
      connectTimeoutMs: this.opts.connectTimeoutMs ?? 5_000,
      requestTimeoutMs: this.opts.requestTimeoutMs ?? 15_000,
    };
  }

  private sessionAt(i: number): KmipSession {
    let c = this.sessions[i];
    if (c === undefined) {
      c = new KmipSession(this.tlsOptions(this.servers[i] as KmipServerAddress));
      this.sessions[i] = c;
    }
    return c;
  }

  /**
   * Runs `send` (which must send exactly one KMIP message) against the servers in turn,
   * starting with the one that answered last, until one answers. A KMIP refusal is thrown
   * as is (HS_ERR_KMIP_*); when no server answers: HS_ERR_KEY_PROVIDER_UNAVAILABLE naming
   * each server's failure.
   */
  async run<T>(what: string, send: (session: KmipSession) => Promise<T>): Promise<T> {
    if (this.closed) {
      throw new HypersealError('HS_ERR_KEY_PROVIDER_UNAVAILABLE', `key provider '${this.name}' was closed`, {
        provider: this.name,
      });
    }
    this.inFlight++;
    try {
      return await this.attempt(what, send);
    } finally {
      this.inFlight--;
      if (this.retiring && this.inFlight === 0) this.close();
    }
  }

  private async attempt<T>(what: string, send: (session: KmipSession) => Promise<T>): Promise<T> {
    const failures: ServerFailure[] = [];
    const n = this.servers.length;
    const start = this.preferred;
    for (let k = 0; k < n && !this.closed; k++) {
      const i = (start + k) % n;
      const address = formatAddress(this.servers[i] as KmipServerAddress);
      // A connection the server closed while idle shows up as "closed" on first use:
      // one retry on a fresh connection to the same server before moving on.
      for (let attempt = 0; attempt < 2; attempt++) {
        this.requestsSent++;
        try {
          const result = await send(this.sessionAt(i));
          this.preferred = i;
          return result;
        } catch (err) {
          if (!isTransportFailure(err)) {
            // The server answered (a refusal): it is alive, keep using it.
            this.preferred = i;
            throw err;
          }
          trace('kmip', 'key provider server failed', {
            provider: this.name,
            operation: what,
            address,
            code: err.code,
          });
          if (attempt === 0 && err.code === 'HS_ERR_KMIP_CONNECTION_CLOSED') continue;
          failures.push({ address, code: err.code, message: err.message });
          break;
        }
      }
    }
    if (this.closed && failures.length < n) {
      throw new HypersealError(
        'HS_ERR_KEY_PROVIDER_UNAVAILABLE',
        `key provider '${this.name}' was closed during ${what}`,
        { provider: this.name, servers: failures },
      );
    }
    throw new HypersealError(
      'HS_ERR_KEY_PROVIDER_UNAVAILABLE',
      `key provider '${this.name}' is unavailable: none of its ${n} KMIP server${n === 1 ? '' : 's'} answered ${what} (` +
        failures.map((f) => `${f.address}: ${f.message} [${f.code}]`).join('; ') +
        ')',
      { provider: this.name, servers: failures },
    );
  }

  /**
   * Connects to every server on a fresh connection (so the TLS handshake is part of the
   * test) and asks Discover Versions and Query. Never throws for a server's failure.
   */
  async test(): Promise<ServerTestResult[]> {
    return Promise.all(
      this.servers.map(async (s): Promise<ServerTestResult> => {
        const client = new KmipClient(this.tlsOptions(s));
        const started = performance.now();
        const base = { host: s.host, port: s.port, address: formatAddress(s) };
        try {
          const versions = await client.discoverVersions();
          const q = await client.query([QueryFunction.QueryOperations, QueryFunction.QueryServerInformation]);
          const latencyMs = Math.round((performance.now() - started) * 10) / 10;
          return {
            ...base,
            ok: true,
            latencyMs,
            versions: versions.map((v) => `${v.major}.${v.minor}`),
            ...(q.vendorIdentification !== undefined ? { vendor: q.vendorIdentification } : {}),
            operations: q.operations.map((op) => enumName(Operation, op)),
          };
        } catch (err) {
          const latencyMs = Math.round((performance.now() - started) * 10) / 10;
          const e =
            err instanceof HypersealError
              ? { code: err.code, message: err.message }
              : {
                  code: 'HS_ERR_INTERNAL' as const,
                  message: err instanceof Error ? err.message : String(err),
                };
          return { ...base, ok: false, latencyMs, error: e };
        } finally {
          client.close();
        }
      }),
    );
  }

  /**
   * Lets calls under way finish (on their current connections), then closes: for a
   * provider whose servers or credentials changed while it was in use.
   */
  retire(): void {
    this.retiring = true;
    if (this.inFlight === 0) this.close();
  }

  close(): void {
    this.closed = true;
    for (const c of this.sessions) c?.close();
    this.sessions.fill(undefined);
  }
}
