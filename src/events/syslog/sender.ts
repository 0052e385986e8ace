/**
 * The sender of one target: reads its queue in order and writes the records over one
 * connection, reconnecting with capped exponential backoff, and decides when a record the
 * collector got is "acknowledged" (removed from the queue). It runs in the sink's worker
 * thread (sink-worker.ts), next to the queue.
 *
 * Syslog over TCP/TLS has no application-level acknowledgement: a successful write means
 * the bytes reached our kernel, not the collector's disk. When a collector dies, what it
 * had not read yet (its socket buffer, our socket buffer, its own in-memory queue) is
 * lost, and we learn of it only from the RST or FIN that follows. So a record written is
 * acknowledged only when:
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
 * had received within `ackGraceMs`, or among the last `holdRecords`, before the connection
 * failed). Every message carries its event's id (and seq), so duplicates are recognisable
 * and a SIEM can drop them; a lost event would not be recognisable at all. What this
 * cannot catch: a collector that stops reading for longer than the grace period and then
 * dies with our bytes in its buffers — only an application-level protocol (RELP) can.
 * Idle, the last `holdRecords` records stay queued (they count in stats().queued) until
 * more events are written or the sink is closed.
 */
import { trace } from '../../trace.js';
import type { DiskQueue, QueuePosition, QueueRecord } from './queue.js';
import type { SyslogConnection } from './transport.js';

export interface SenderOptions {
  readonly targetId: string;
  readonly connect: () => Promise<SyslogConnection>;
  readonly ackGraceMs: number;
  readonly holdRecords: number;
  readonly reconnectMinMs: number;
  readonly reconnectMaxMs: number;
  readonly maxBatchBytes: number;
  readonly closeTimeoutMs: number;
  /** Called when `stats()` may have changed (connected, sent, lastError, acknowledgements). */
  readonly onChange?: () => void;
}

export interface SenderStats {
  readonly sent: number;
  readonly lastError: string | null;
  readonly connected: boolean;
}

interface Batch {
  /** ack() up to here acknowledges the batch. */
  readonly end: QueuePosition;
  readonly count: number;
  /** When its write completed (performance.now()). */
  readonly writtenAt: number;
  /** Records written on the connection up to and including this batch. */
  readonly writtenUpTo: number;
}

export class Sender {
  private stopping = false;
  private pump: Promise<void> = Promise.resolve();
  private conn: SyslogConnection | null = null;
  private sendPos: QueuePosition;
  private inflight: Batch[] = [];
  private writtenOnConn = 0;
  private sentTotal = 0;
  private lastError: string | null = null;
  private attempt = 0;
  private woken = false;
  private wakeWaiter: (() => void) | null = null;
  private ackTimer: NodeJS.Timeout | null = null;
  private closing: Promise<void> | null = null;
  private readonly onChange: () => void;

  constructor(
    private readonly queue: DiskQueue,
    private readonly o: SenderOptions,
  ) {
    this.sendPos = queue.head;
    this.onChange = o.onChange ?? (() => undefined);
  }

  /** Starts sending from the queue's head. The queue must be open. */
  start(): void {
    this.sendPos = this.queue.head;
    this.ackTimer = setInterval(() => this.ackTick(), Math.max(5, Math.min(100, this.o.ackGraceMs / 4)));
    this.ackTimer.unref();
    this.pump = this.run();
  }

  /** More records may be durable: the queue calls this. */
  wake(): void {
    this.woken = true;
    const w = this.wakeWaiter;
    this.wakeWaiter = null;
    w?.();
  }

  stats(): SenderStats {
    return {
      sent: this.sentTotal,
      lastError: this.lastError,
      connected: this.conn !== null && this.conn.failure === null,
    };
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
    const full = Math.min(this.o.reconnectMaxMs, this.o.reconnectMinMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return full / 2 + (Math.random() * full) / 2;
  }

  private noteError(err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    if (message !== this.lastError)
      trace('syslog', 'target error', { target: this.o.targetId, error: message });
    this.lastError = message;
    this.onChange();
  }

  /** Connects, sends, reconnects; returns only once close() has set `stopping`. Never rejects. */
  private async run(): Promise<void> {
    while (!this.stopping) {
      let conn: SyslogConnection;
      try {
        conn = await this.o.connect();
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
      trace('syslog', 'connected', { target: this.o.targetId, queued: this.queue.count });
      this.onChange();
      void conn.closed.then(() => this.wake());
      const failure = await this.sendOn(conn);
      if (failure === null) return; // stopping: close() ends the connection cleanly
      this.noteError(failure);
      conn.destroy();
      // Everything not acknowledged goes again, in order, on the next connection.
      this.conn = null;
      this.inflight = [];
      this.sendPos = this.queue.head;
      this.onChange();
      this.woken = false;
      await this.waitForWake(this.backoff());
    }
  }

  /** Sends queued records until the connection fails (its error) or the sender stops (null). */
  private async sendOn(conn: SyslogConnection): Promise<Error | null> {
    for (;;) {
      if (conn.failure !== null) return conn.failure;
      if (this.stopping) return null;
      this.woken = false;
      let records: QueueRecord[];
      try {
        records = await this.queue.read(this.sendPos, this.o.maxBatchBytes);
      } catch (err) {
        // A damaged segment: nothing after it can go out; say so and retry slowly.
        this.noteError(err);
        await this.waitForWake(this.o.reconnectMaxMs);
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
      this.onChange();
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
      if (now - b.writtenAt < this.o.ackGraceMs || this.writtenOnConn - b.writtenUpTo < this.o.holdRecords)
        break;
      to = b.end;
      count += b.count;
      this.inflight.shift();
    }
    if (to !== null) {
      this.queue.ack(to, count);
      this.attempt = 0; // this connection proved useful: the next failure starts backoff afresh
      this.onChange();
    }
  }

  /** Records sent but not acknowledged (the queue counts them as queued). */
  private inflightCount(): number {
    return this.inflight.reduce((n, b) => n + b.count, 0);
  }

  /**
   * While connected, sends what is queued (within closeTimeoutMs) and ends the connection
   * cleanly, which acknowledges everything sent. What was not sent stays queued. The
   * queue itself is left open (the caller closes it after this).
   */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    const deadline = performance.now() + this.o.closeTimeoutMs;
    const left = (): number => Math.max(0, deadline - performance.now());
    // Drain while a connection is up: wait until every queued record was written.
    while (
      left() > 0 &&
      this.conn !== null &&
      this.conn.failure === null &&
      (this.queue.hasRecordsFrom(this.sendPos) || this.queue.count > this.inflightCount())
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
      // UDP can only wait for a late ICMP error; a stream waits for the collector's FIN.
      // A write still stuck (the collector stopped reading) ends here too.
      const clean = await conn.end(
        conn.kind === 'udp' ? this.o.ackGraceMs : Math.max(left(), this.o.ackGraceMs),
      );
      const last = this.inflight.at(-1);
      if (clean && last !== undefined) this.queue.ack(last.end, this.inflightCount());
      trace('syslog', 'connection ended', { target: this.o.targetId, clean });
    } else {
      conn?.destroy();
    }
    this.inflight = [];
    if (this.ackTimer !== null) clearInterval(this.ackTimer);
    this.ackTimer = null;
    this.onChange();
  }
}
