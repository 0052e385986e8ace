/**
 * SyslogSink: one syslog target. Events are formatted when delivered, queued on disk
 * (queue.ts) and sent in order by one pump over one connection (transport.ts); a
 * collector that is down only makes the queue grow, and it drains in order when the
 * collector is back. deliver() resolves once the event is durably queued.
 *
 * When is a record "acknowledged" (removed from the queue)? Syslog over TCP/TLS has no
 * application-level acknowledgement: a successful write means the bytes reached our
 * kernel, not the collector's disk. When a collector dies, what it had not read yet (its
 * socket buffer, our socket buffer, its own in-memory queue) is lost, and we learn of it
 * only from the RST or FIN that follows. So a record written is acknowledged only when:
 *
 *   1. `ackGraceMs` have passed since its write completed, with the connection still up
 *      (a collector that died meanwhile has made the connection fail by then), and
 *   2. at least `holdRecords` more records were written after it on the same connection
 *      (a later write succeeding is more evidence the collector is alive and reading),
 *
 * or when close() ends the connection cleanly: we send FIN and the collector answers with
 * its own only after reading everything before it — a real end-to-end acknowledgement.
 * When the connection fails, every record not yet acknowledged is sent again on the next
 * connection, in order.
 *
 * The trade-off: around an outage the collector may receive some records twice (those it
 * had received in the last `ackGraceMs` / `holdRecords` before the connection failed).
 * Every message carries its event's id (and seq), so duplicates are recognisable and a
 * SIEM can drop them; losing an event would not be recognisable at all. What this cannot
 * catch: a collector that stops reading for longer than the grace period and then dies
 * with our bytes in its buffers — only an application-level protocol (RELP) can.
 * Idle, the last `holdRecords` records stay queued (they count in stats().queued) until
 * more events are written or the sink is closed.
 */
import { hostname as osHostname } from 'node:os';
import { HypersealError } from '../../errors.js';
import { trace } from '../../trace.js';
import type { Event } from '../index.js';
import type { HeaderOptions, SyslogFormat } from './format.js';
import { createFormatter, HEADER_LIMITS, isHeaderToken } from './format.js';
import type { QueuePosition, QueueRecord } from './queue.js';
import { DiskQueue, MAX_RECORD_BYTES } from './queue.js';
import type { Connector, SyslogConnection, TransportKind, TransportOptions } from './transport.js';
import { CONNECTORS } from './transport.js';

export interface SyslogTargetConfig {
  /** The target's id (names it in errors and traces). */
  readonly id: string;
  readonly host: string;
  readonly port: number;
  readonly transport: TransportKind;
  readonly format: SyslogFormat;
  /** TLS: the CA (PEM) that signed the collector's certificate. Required for TLS. */
  readonly caPem?: string;
  /** TLS: a client certificate and key (PEM), for collectors that require one. */
  readonly certPem?: string;
  readonly keyPem?: string;
  /** 0–23; default 16 (local0). */
  readonly facility?: number;
  /** RFC 5424 APP-NAME; default `hyperseal`. */
  readonly appName?: string;
  /** RFC 5424 HOSTNAME; default this machine's host name. */
  readonly hostname?: string;
  /** UDP: the largest datagram; longer events are split into parts. Default 1400. */
  readonly maxDatagramBytes?: number;
  /** TCP/TLS: the largest message; longer events are split into parts. Default 8000. */
  readonly maxMessageBytes?: number;
}

export interface SyslogSinkOptions {
  /** The target's own directory for its on-disk queue (created if missing). */
  readonly queueDir: string;
  /** See the file comment. Default 500 ms. */
  readonly ackGraceMs?: number;
  /** See the file comment. Default 64. */
  readonly holdRecords?: number;
  /** First reconnection delay; doubles on each failure up to reconnectMaxMs. Default 100 ms. */
  readonly reconnectMinMs?: number;
  /** Default 30 s. */
  readonly reconnectMaxMs?: number;
  /** Default 10 s. */
  readonly connectTimeoutMs?: number;
  /** Bytes of queued records sent in one write. Default 256 KiB. */
  readonly maxBatchBytes?: number;
  /** close() drains what is queued (if connected) and ends the connection within this. Default 5 s. */
  readonly closeTimeoutMs?: number;
  /** Queue tuning (queue.ts). */
  readonly segmentBytes?: number;
  readonly maxQueueBytes?: number;
  readonly cursorIntervalMs?: number;
  /** How to connect; default by the target's transport (tests inject their own). */
  readonly connector?: Connector;
}

export interface SyslogSinkStats {
  /** Events queued and not yet acknowledged (see the file comment). */
  readonly queued: number;
  /** Events written to the collector since start, sent-again ones counted again. */
  readonly sent: number;
  /** Why the last connection attempt or connection failed; null once connected again. */
  readonly lastError: string | null;
  readonly connected: boolean;
}

/** RFC 5426 §3.2: 1400 keeps a datagram below common path MTUs (no IP fragmentation). */
export const DEFAULT_MAX_DATAGRAM_BYTES = 1400;
/** rsyslog's default maxMessageSize is 8 KiB and RFC 5425 asks receivers for 8192; stay under both. */
export const DEFAULT_MAX_MESSAGE_BYTES = 8000;
/** RFC 5424 §6.1: every receiver accepts 480 octets. */
export const MIN_MESSAGE_BYTES = 480;
/** The largest UDP payload over IPv4. */
const MAX_DATAGRAM_BYTES = 65_507;

const DEFAULTS = {
  ackGraceMs: 500,
  holdRecords: 64,
  reconnectMinMs: 100,
  reconnectMaxMs: 30_000,
  connectTimeoutMs: 10_000,
  maxBatchBytes: 256 * 1024,
  closeTimeoutMs: 5_000,
} as const;

interface Batch {
  /** ack() up to here acknowledges the batch. */
  readonly end: QueuePosition;
  readonly count: number;
  /** When its write completed (performance.now()). */
  readonly writtenAt: number;
  /** Records written on the connection up to and including this batch. */
  readonly writtenUpTo: number;
}

function configError(target: { id?: unknown }, message: string): HypersealError {
  return new HypersealError('HS_ERR_SYSLOG_CONFIG', `syslog target ${String(target.id)}: ${message}`);
}

/** A stand-in event for checking, at construction, that the message limit can hold a part. */
const PROBE_EVENT: Event = {
  id: '00000000-0000-4000-8000-000000000000',
  time: '2000-01-01T00:00:00.000Z',
  type: 'host.enrollment-token-created',
  severity: 'critical',
  user: 'x',
  sourceIp: null,
  object: { kind: 'host', id: 'x', name: 'x' },
  changes: [],
  result: 'success',
  message: '',
  seq: 0,
  prevHash: '0'.repeat(64),
  hash: '0'.repeat(64),
};

export class SyslogSink {
  readonly target: SyslogTargetConfig;
  private readonly queue: DiskQueue;
  private readonly connector: Connector;
  private readonly transportOpts: TransportOptions;
  private readonly format: (event: Event) => string[];
  private readonly ackGraceMs: number;
  private readonly holdRecords: number;
  private readonly reconnectMinMs: number;
  private readonly reconnectMaxMs: number;
  private readonly maxBatchBytes: number;
  private readonly closeTimeoutMs: number;

  private state: 'new' | 'running' | 'closing' | 'closed' = 'new';
  private closing: Promise<void> | null = null;
  /** Set by close() once draining is over: the pump returns at its next step. */
  private stopping = false;
  private pump: Promise<void> = Promise.resolve();
  private conn: SyslogConnection | null = null;
  private sendPos: QueuePosition = { segment: 0, offset: 0 };
  private inflight: Batch[] = [];
  private writtenOnConn = 0;
  private sentTotal = 0;
  private lastError: string | null = null;
  private attempt = 0;
  private woken = false;
  private wakeWaiter: (() => void) | null = null;
  private ackTimer: NodeJS.Timeout | null = null;

  constructor(target: SyslogTargetConfig, opts: SyslogSinkOptions) {
    this.target = target;
    this.validate(target, opts);
    this.connector = opts.connector ?? CONNECTORS[target.transport];
    this.transportOpts = {
      host: target.host,
      port: target.port,
      ...(target.caPem === undefined ? {} : { caPem: target.caPem }),
      ...(target.certPem === undefined ? {} : { certPem: target.certPem }),
      ...(target.keyPem === undefined ? {} : { keyPem: target.keyPem }),
      connectTimeoutMs: opts.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
    };
    const header: HeaderOptions = {
      ...(target.facility === undefined ? {} : { facility: target.facility }),
      ...(target.appName === undefined ? {} : { appName: target.appName }),
      hostname: target.hostname ?? osHostname(),
      procId: String(process.pid),
    };
    const maxMessageBytes =
      target.transport === 'udp'
        ? (target.maxDatagramBytes ?? DEFAULT_MAX_DATAGRAM_BYTES)
        : (target.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES);
    this.format = createFormatter(target.format, { ...header, maxMessageBytes });
    // Fails now rather than on the first long event: the limit must hold a part's header.
    this.format({ ...PROBE_EVENT, message: 'x'.repeat(maxMessageBytes) });
    this.ackGraceMs = opts.ackGraceMs ?? DEFAULTS.ackGraceMs;
    this.holdRecords = opts.holdRecords ?? DEFAULTS.holdRecords;
    this.reconnectMinMs = opts.reconnectMinMs ?? DEFAULTS.reconnectMinMs;
    this.reconnectMaxMs = opts.reconnectMaxMs ?? DEFAULTS.reconnectMaxMs;
    this.maxBatchBytes = opts.maxBatchBytes ?? DEFAULTS.maxBatchBytes;
    this.closeTimeoutMs = opts.closeTimeoutMs ?? DEFAULTS.closeTimeoutMs;
    this.queue = new DiskQueue({
      dir: opts.queueDir,
      ...(opts.segmentBytes === undefined ? {} : { segmentBytes: opts.segmentBytes }),
      ...(opts.maxQueueBytes === undefined ? {} : { maxQueueBytes: opts.maxQueueBytes }),
      ...(opts.cursorIntervalMs === undefined ? {} : { cursorIntervalMs: opts.cursorIntervalMs }),
      onDurable: () => this.wake(),
    });
  }

  private validate(t: SyslogTargetConfig, opts: SyslogSinkOptions): void {
    if (typeof t.id !== 'string' || t.id === '') throw configError(t, 'id is empty');
    if (typeof t.host !== 'string' || !/^[^\s/]+$/.test(t.host))
      throw configError(t, `host ${JSON.stringify(t.host)}`);
    if (!Number.isInteger(t.port) || t.port < 1 || t.port > 65_535)
      throw configError(t, `port ${t.port} is not 1–65535`);
    if (!Object.hasOwn(CONNECTORS, t.transport)) throw configError(t, `transport ${String(t.transport)}`);
    if (!['rfc5424', 'json', 'ocsf'].includes(t.format)) throw configError(t, `format ${String(t.format)}`);
    if (
      t.transport === 'tls' &&
      (t.caPem === undefined || !t.caPem.includes('-----BEGIN CERTIFICATE-----'))
    ) {
      throw configError(t, 'a TLS target needs caPem: the CA certificate (PEM) of its collector');
    }
    if ((t.certPem === undefined) !== (t.keyPem === undefined)) {
      throw configError(t, 'certPem and keyPem go together');
    }
    if (t.facility !== undefined && (!Number.isInteger(t.facility) || t.facility < 0 || t.facility > 23)) {
      throw configError(t, `facility ${t.facility} is not 0–23`);
    }
    if (t.appName !== undefined && !isHeaderToken(t.appName, HEADER_LIMITS.appName)) {
      throw configError(
        t,
        `appName must be 1–${HEADER_LIMITS.appName} printable ASCII characters, no spaces`,
      );
    }
    if (t.hostname !== undefined && !isHeaderToken(t.hostname, HEADER_LIMITS.hostname)) {
      throw configError(
        t,
        `hostname must be 1–${HEADER_LIMITS.hostname} printable ASCII characters, no spaces`,
      );
    }
    const max = t.transport === 'udp' ? MAX_DATAGRAM_BYTES : MAX_RECORD_BYTES;
    for (const [name, v] of [
      ['maxDatagramBytes', t.maxDatagramBytes],
      ['maxMessageBytes', t.maxMessageBytes],
    ] as const) {
      if (v !== undefined && (!Number.isInteger(v) || v < MIN_MESSAGE_BYTES || v > max)) {
        throw configError(t, `${name} ${v} is not ${MIN_MESSAGE_BYTES}–${max}`);
      }
    }
    for (const [name, v] of Object.entries(opts)) {
      if (name.endsWith('Ms') || name.endsWith('Bytes') || name === 'holdRecords') {
        if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || v < 0)) {
          throw configError(t, `${name} ${String(v)} is not a number ≥ 0`);
        }
      }
    }
  }

  /**
   * Opens the queue (recovering it after a crash) and starts sending. Throws
   * HS_ERR_SYSLOG_QUEUE_LOCKED / _CORRUPT / _IO when the queue cannot be opened.
   */
  start(): void {
    if (this.state !== 'new') return;
    this.queue.open();
    this.sendPos = this.queue.head;
    this.state = 'running';
    this.ackTimer = setInterval(() => this.ackTick(), Math.max(5, Math.min(100, this.ackGraceMs / 4)));
    this.ackTimer.unref();
    this.pump = this.run();
    trace('syslog', 'sink started', { target: this.target.id, queued: this.queue.count });
  }

  /**
   * Formats the event and queues it; resolves once it is on disk. Events go out in the
   * order of deliver() calls (no need to wait for one before delivering the next).
   */
  deliver(event: Event): Promise<void> {
    if (this.state !== 'running') {
      return Promise.reject(
        new HypersealError(
          'HS_ERR_SYSLOG_CLOSED',
          `syslog target ${this.target.id} is ${this.state === 'new' ? 'not started' : 'closed'}`,
        ),
      );
    }
    let msgs: string[];
    try {
      msgs = this.format(event);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    return this.queue.enqueue(event.id, msgs);
  }

  stats(): SyslogSinkStats {
    return {
      queued: this.queue.count,
      sent: this.sentTotal,
      lastError: this.lastError,
      connected: this.conn !== null && this.conn.failure === null,
    };
  }

  // -- the pump ---------------------------------------------------------------------------

  private wake(): void {
    this.woken = true;
    const w = this.wakeWaiter;
    this.wakeWaiter = null;
    w?.();
  }

  /** Waits for wake() or `ms`; returns at once if woken since the flag was last cleared. */
  private waitForWake(ms?: number): Promise<void> {
    if (this.woken || this.stopping) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = ms === undefined ? undefined : setTimeout(() => this.wake(), ms);
      this.wakeWaiter = () => {
        if (timer !== undefined) clearTimeout(timer);
        resolve();
      };
    });
  }

  /** Capped exponential backoff with jitter (half to full delay), so that many sinks do not reconnect in step. */
  private backoff(): number {
    const full = Math.min(this.reconnectMaxMs, this.reconnectMinMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return full / 2 + (Math.random() * full) / 2;
  }

  private noteError(err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    if (message !== this.lastError)
      trace('syslog', 'target error', { target: this.target.id, error: message });
    this.lastError = message;
  }

  /** Connects, sends, reconnects; returns only once close() has set `stopping`. Never rejects. */
  private async run(): Promise<void> {
    while (!this.stopping) {
      let conn: SyslogConnection;
      try {
        conn = await this.connector(this.transportOpts);
      } catch (err) {
        this.noteError(err);
        this.woken = false;
        await this.waitForWake(this.backoff());
        continue;
      }
      if (this.stopping) {
        conn.destroy();
        return;
      }
      this.conn = conn;
      this.lastError = null;
      this.writtenOnConn = 0;
      trace('syslog', 'connected', { target: this.target.id, queued: this.queue.count });
      void conn.closed.then(() => this.wake());
      const failure = await this.sendOn(conn);
      if (failure === null) return; // stopping: close() ends the connection cleanly
      this.noteError(failure);
      conn.destroy();
      // Everything not acknowledged goes again, in order, on the next connection.
      this.conn = null;
      this.inflight = [];
      this.sendPos = this.queue.head;
      this.woken = false;
      await this.waitForWake(this.backoff());
    }
  }

  /** Sends queued records until the connection fails (its error) or the sink stops (null). */
  private async sendOn(conn: SyslogConnection): Promise<Error | null> {
    for (;;) {
      if (conn.failure !== null) return conn.failure;
      if (this.stopping) return null;
      this.woken = false;
      let records: QueueRecord[];
      try {
        records = await this.queue.read(this.sendPos, this.maxBatchBytes);
      } catch (err) {
        // A damaged segment: nothing after it can go out; say so and retry slowly.
        this.noteError(err);
        await this.waitForWake(this.reconnectMaxMs);
        continue;
      }
      if (records.length === 0) {
        await this.waitForWake();
        continue;
      }
      const last = records[records.length - 1] as QueueRecord;
      const payload = records.length === 1 ? last.body : Buffer.concat(records.map((r) => r.body));
      try {
        await conn.write(payload);
      } catch (err) {
        return err instanceof Error ? err : new Error(String(err));
      }
      if (conn.failure !== null) return conn.failure;
      this.writtenOnConn += records.length;
      this.inflight.push({
        end: last.next,
        count: records.length,
        writtenAt: performance.now(),
        writtenUpTo: this.writtenOnConn,
      });
      this.sendPos = last.next;
      this.sentTotal += records.length;
    }
  }

  /** Acknowledges the batches that passed both tests of the file comment. */
  private ackTick(): void {
    const conn = this.conn;
    if (conn === null || conn.failure !== null) return;
    const now = performance.now();
    let to: QueuePosition | null = null;
    let count = 0;
    while (this.inflight.length > 0) {
      const b = this.inflight[0] as Batch;
      if (now - b.writtenAt < this.ackGraceMs || this.writtenOnConn - b.writtenUpTo < this.holdRecords) break;
      to = b.end;
      count += b.count;
      this.inflight.shift();
    }
    if (to !== null) {
      this.queue.ack(to, count);
      this.attempt = 0; // this connection proved useful: the next failure starts backoff afresh
    }
  }

  // -- closing ----------------------------------------------------------------------------

  /**
   * Stops taking events; while connected, sends what is queued (within closeTimeoutMs) and
   * ends the connection cleanly, which acknowledges everything sent; writes the queue's
   * cursor and releases it. What was not sent stays queued for the next start.
   */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    if (this.state === 'new') {
      this.state = 'closed';
      return;
    }
    this.state = 'closing';
    const deadline = performance.now() + this.closeTimeoutMs;
    const left = (): number => Math.max(0, deadline - performance.now());
    // Drain while a connection is up: wait until every queued record was written.
    while (
      left() > 0 &&
      this.conn !== null &&
      this.conn.failure === null &&
      (this.queue.hasRecordsFrom(this.sendPos) || this.queue.count > this.queuedAfter())
    ) {
      await new Promise((r) => setTimeout(r, 5));
    }
    this.stopping = true;
    this.wake();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.pump, new Promise((r) => (timer = setTimeout(r, left())))]);
    clearTimeout(timer);
    const conn = this.conn;
    this.conn = null;
    if (conn !== null && conn.failure === null) {
      // A write still stuck (the collector stopped reading) ends here too.
      // UDP can only wait for a late ICMP error; a stream waits for the collector's FIN.
      const clean = await conn.end(conn.kind === 'udp' ? this.ackGraceMs : Math.max(left(), this.ackGraceMs));
      const last = this.inflight.at(-1);
      if (clean && last !== undefined) {
        this.queue.ack(
          last.end,
          this.inflight.reduce((n, b) => n + b.count, 0),
        );
      }
      trace('syslog', 'connection ended', { target: this.target.id, clean });
    } else {
      conn?.destroy();
    }
    this.inflight = [];
    if (this.ackTimer !== null) clearInterval(this.ackTimer);
    this.ackTimer = null;
    await this.queue.close();
    this.state = 'closed';
  }

  /** Records sent but not acknowledged (the queue counts them as queued). */
  private queuedAfter(): number {
    return this.inflight.reduce((n, b) => n + b.count, 0);
  }
}
