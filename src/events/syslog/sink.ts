/**
 * SyslogSink: one syslog target. Events are formatted when delivered, queued on disk
 * (queue.ts) and sent in order over one connection (sender.ts, transport.ts); a collector
 * that is down only makes the queue grow, and it drains in order when the collector is
 * back. deliver() resolves once the event is durably queued.
 *
 * The queue and the sender run in a worker thread (sink-worker.ts): the caller's thread
 * only formats each event and encodes its record into a batch buffer that is transferred
 * (not copied) to the worker, ~4 µs an event, so a busy manager does not pay for fsync,
 * reads and socket writes in its event loop (bench/events measures the split). The worker
 * keeps the process alive only while deliveries are pending: a forgotten close() does not
 * hang a process, and what was queued is sent on the next start.
 *
 * When a record counts as delivered (acknowledged) and why a collector may see a few
 * records twice around an outage, recognisable by their event id: see sender.ts.
 */
import { mkdirSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import { Worker } from 'node:worker_threads';
import { HypersealError } from '../../errors.js';
import type { Event } from '../index.js';
import type { HeaderOptions, SyslogFormat } from './format.js';
import { createFormatter, HEADER_LIMITS, isHeaderToken } from './format.js';
import type { RecordLayout } from './queue.js';
import { lockQueueDir, MAX_RECORD_BYTES, recordLayout, unlockQueueDir, writeRecord } from './queue.js';
import type { FromWorker, ToWorker, WorkerInit, WorkerStats } from './sink-worker.js';
import { deserializeError } from './sink-worker.js';
import type { TransportKind } from './transport.js';
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
  /** See sender.ts. Default 500 ms: a collector across a WAN answers a dead connection within it. */
  readonly ackGraceMs?: number;
  /** See sender.ts. Default 64. */
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
  readonly memoryBytes?: number;
}

export interface SyslogSinkStats {
  /** Events queued and not yet acknowledged (sender.ts says when a sent one is). */
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

/** Bytes of encoded records handed to the worker at a time (more in a burst, one per record if larger). */
const BATCH_BYTES = 256 * 1024;

const DEFAULTS = {
  ackGraceMs: 500,
  holdRecords: 64,
  reconnectMinMs: 100,
  reconnectMaxMs: 30_000,
  connectTimeoutMs: 10_000,
  maxBatchBytes: 256 * 1024,
  closeTimeoutMs: 5_000,
} as const;

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

interface Waiting {
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

export class SyslogSink {
  readonly target: SyslogTargetConfig;
  private readonly opts: SyslogSinkOptions;
  private readonly format: (event: Event) => string[];
  private state: 'new' | 'running' | 'closing' | 'closed' = 'new';
  private worker: Worker | null = null;
  /** Why the worker cannot queue (open failed, it died): every delivery is refused with it. */
  private broken: Error | null = null;
  /**
   * Records encoded straight into a batch buffer of its own (not from Buffer's shared pool,
   * so that it can be transferred to the worker), posted once per burst of deliveries.
   */
  private batch: Buffer | null = null;
  private batchUsed = 0;
  private batchRecords = 0;
  /** Deliveries posted, in order, waiting for the worker's outcome. */
  private waiting: Waiting[] = [];
  private waitingStart = 0;
  private posted = 0;
  private flushScheduled = false;
  private workerStats: WorkerStats = { queued: 0, received: 0, sent: 0, lastError: null, connected: false };
  private closing: Promise<void> | null = null;
  private closed: (() => void) | null = null;
  private workerExited = false;

  constructor(target: SyslogTargetConfig, opts: SyslogSinkOptions) {
    this.target = target;
    this.opts = opts;
    this.validate(target, opts);
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
   * Takes the queue directory (creating it) and starts the worker, which recovers the
   * queue and starts sending. Throws HS_ERR_SYSLOG_QUEUE_LOCKED when another sink has the
   * directory; a queue that cannot be recovered (HS_ERR_SYSLOG_QUEUE_CORRUPT, _IO) is
   * reported by the deliveries it refuses and by stats().lastError.
   */
  start(): void {
    if (this.state !== 'new') return;
    const o = this.opts;
    try {
      mkdirSync(o.queueDir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new HypersealError('HS_ERR_SYSLOG_QUEUE_IO', `cannot create ${o.queueDir}: ${String(err)}`);
    }
    lockQueueDir(o.queueDir);
    const t = this.target;
    const init: WorkerInit = {
      targetId: t.id,
      transport: t.transport,
      transportOptions: {
        host: t.host,
        port: t.port,
        ...(t.caPem === undefined ? {} : { caPem: t.caPem }),
        ...(t.certPem === undefined ? {} : { certPem: t.certPem }),
        ...(t.keyPem === undefined ? {} : { keyPem: t.keyPem }),
        connectTimeoutMs: o.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
      },
      queueDir: o.queueDir,
      ...(o.segmentBytes === undefined ? {} : { segmentBytes: o.segmentBytes }),
      ...(o.maxQueueBytes === undefined ? {} : { maxQueueBytes: o.maxQueueBytes }),
      ...(o.cursorIntervalMs === undefined ? {} : { cursorIntervalMs: o.cursorIntervalMs }),
      ...(o.memoryBytes === undefined ? {} : { memoryBytes: o.memoryBytes }),
      ackGraceMs: o.ackGraceMs ?? DEFAULTS.ackGraceMs,
      holdRecords: o.holdRecords ?? DEFAULTS.holdRecords,
      reconnectMinMs: o.reconnectMinMs ?? DEFAULTS.reconnectMinMs,
      reconnectMaxMs: o.reconnectMaxMs ?? DEFAULTS.reconnectMaxMs,
      maxBatchBytes: o.maxBatchBytes ?? DEFAULTS.maxBatchBytes,
      closeTimeoutMs: o.closeTimeoutMs ?? DEFAULTS.closeTimeoutMs,
    };
    let worker: Worker;
    try {
      worker = new Worker(new URL('./sink-worker.js', import.meta.url), { workerData: { syslogSink: init } });
    } catch (err) {
      unlockQueueDir(o.queueDir);
      throw err;
    }
    this.worker = worker;
    this.state = 'running';
    worker.unref(); // referenced only while deliveries are pending (see the file comment)
    worker.on('message', (m: FromWorker) => this.onMessage(m));
    worker.on('error', (err) => this.fail(err));
    worker.on('exit', () => {
      this.workerExited = true;
      // Expected after close(); otherwise the worker died (an uncaught error, reported above).
      const err = new HypersealError('HS_ERR_SYSLOG_CLOSED', `syslog target ${t.id}: its worker exited`);
      if (this.state === 'running') this.fail(err);
      else this.broken ??= err;
      unlockQueueDir(o.queueDir);
      this.closed?.();
    });
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
    if (this.broken !== null) return Promise.reject(this.broken);
    let layout: RecordLayout;
    try {
      layout = recordLayout(event.id, this.format(event));
    } catch (err) {
      return Promise.reject(err as Error);
    }
    if (this.batch !== null && this.batchUsed + layout.size > this.batch.length) this.flush();
    this.batch ??= Buffer.allocUnsafeSlow(Math.max(BATCH_BYTES, layout.size));
    writeRecord(this.batch, this.batchUsed, layout);
    this.batchUsed += layout.size;
    this.batchRecords++;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // One message per burst: a synchronous loop of deliver() calls is posted at once.
      queueMicrotask(() => this.flush());
    }
    if (this.waiting.length - this.waitingStart === 0) this.worker?.ref();
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }

  private flush(): void {
    this.flushScheduled = false;
    const batch = this.batch;
    if (batch === null || this.batchRecords === 0 || this.worker === null) return;
    this.posted += this.batchRecords;
    this.batch = null;
    this.batchRecords = 0;
    // The unused tail goes along (transferring costs nothing); the worker stops at `bytes`.
    const buffer = batch.buffer as ArrayBuffer;
    const m: ToWorker = { type: 'records', batch: buffer, bytes: this.batchUsed };
    this.batchUsed = 0;
    this.worker.postMessage(m, [buffer]);
  }

  private onMessage(m: FromWorker): void {
    switch (m.type) {
      case 'opened':
        return;
      case 'open-failed':
        this.fail(deserializeError(m.error));
        return;
      case 'results':
        for (const run of m.runs) {
          const n = 'ok' in run ? run.ok : run.failed;
          const err = 'ok' in run ? null : deserializeError(run.error);
          for (let i = 0; i < n; i++) {
            const w = this.waiting[this.waitingStart++];
            if (err === null) w?.resolve();
            else w?.reject(err);
          }
        }
        this.compactWaiting();
        return;
      case 'stats':
        this.workerStats = m.stats;
        return;
      case 'closed':
        this.workerStats = m.stats;
        return;
    }
  }

  private compactWaiting(): void {
    if (this.waitingStart === this.waiting.length) {
      this.waiting = [];
      this.waitingStart = 0;
      if (this.state === 'running') this.worker?.unref();
    } else if (this.waitingStart > 1024 && this.waitingStart * 2 > this.waiting.length) {
      this.waiting = this.waiting.slice(this.waitingStart);
      this.waitingStart = 0;
    }
  }

  /** The worker cannot queue any more: refuse what waits and what comes. */
  private fail(err: Error): void {
    this.broken ??= err;
    this.workerStats = {
      ...this.workerStats,
      lastError: this.workerStats.lastError ?? err.message,
      connected: false,
    };
    const waiting = this.waiting.slice(this.waitingStart);
    this.waiting = [];
    this.waitingStart = 0;
    this.batch = null;
    this.batchUsed = 0;
    this.batchRecords = 0;
    for (const w of waiting) w.reject(err);
  }

  stats(): SyslogSinkStats {
    const s = this.workerStats;
    // Records still on their way to the worker are queued too.
    const inTransit = this.broken === null ? this.posted - s.received + this.batchRecords : 0;
    return { queued: s.queued + inTransit, sent: s.sent, lastError: s.lastError, connected: s.connected };
  }

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
    const worker = this.worker;
    if (this.state === 'new' || worker === null) {
      this.state = 'closed';
      return;
    }
    this.state = 'closing';
    this.flush();
    if (!this.workerExited) {
      const exited = new Promise<void>((resolve) => (this.closed = resolve));
      worker.ref();
      if (this.broken === null) worker.postMessage({ type: 'close' } satisfies ToWorker);
      else void worker.terminate();
      await exited;
    }
    this.state = 'closed';
  }
}
