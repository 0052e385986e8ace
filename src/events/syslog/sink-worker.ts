/**
 * The thread behind a SyslogSink: its disk queue and its sender (sender.ts) run here, so
 * that writing records, fsync, reading them back and socket writes cost the caller's event
 * loop nothing. The caller's thread formats and encodes each event (it has the object:
 * copying an event here would cost more than formatting it) and transfers the bytes.
 *
 * Protocol (worker_threads messages, in order on one port):
 *   → {type:'records', batch, bytes} records to queue, in delivery order (encoded by
 *                                   the sink; the buffer is transferred, not copied)
 *   → {type:'close'}                drain, end the connection, close the queue, exit
 *   ← {type:'opened', queued}       the queue is recovered (records found on disk)
 *   ← {type:'open-failed', error}   it is not (corrupt, I/O); the worker exits
 *   ← {type:'results', runs}        outcome of the records received, in order: runs of
 *                                   {ok: n} or {failed: n, error}
 *   ← {type:'stats', stats}         after changes, at most every STATS_INTERVAL_MS
 *   ← {type:'closed', stats}        final; the worker exits after it
 */
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { HypersealError, isHypersealError } from '../../errors.js';
import type { ErrorCode } from '../../errors.js';
import { trace } from '../../trace.js';
import { DiskQueue } from './queue.js';
import { Sender } from './sender.js';
import type { TransportKind, TransportOptions } from './transport.js';
import { CONNECTORS } from './transport.js';

export interface WorkerInit {
  readonly targetId: string;
  readonly transport: TransportKind;
  readonly transportOptions: TransportOptions;
  readonly queueDir: string;
  readonly segmentBytes?: number;
  readonly maxQueueBytes?: number;
  readonly cursorIntervalMs?: number;
  readonly memoryBytes?: number;
  readonly ackGraceMs: number;
  readonly holdRecords: number;
  readonly reconnectMinMs: number;
  readonly reconnectMaxMs: number;
  readonly maxBatchBytes: number;
  readonly closeTimeoutMs: number;
}

export interface SerializedError {
  readonly code: ErrorCode;
  readonly message: string;
}

export interface WorkerStats {
  /** Records in the queue (being written, waiting, or sent but not acknowledged). */
  readonly queued: number;
  /** Records received from the sink so far (to count those still in the message port). */
  readonly received: number;
  readonly sent: number;
  readonly lastError: string | null;
  readonly connected: boolean;
}

/** Records made by writeRecord() (queue.ts), back to back in the first `bytes` of a transferred buffer. */
export interface RecordsMessage {
  readonly type: 'records';
  readonly batch: ArrayBuffer;
  readonly bytes: number;
}

export type ToWorker = RecordsMessage | { readonly type: 'close' };

export type ResultRun =
  { readonly ok: number } | { readonly failed: number; readonly error: SerializedError };

export type FromWorker =
  | { readonly type: 'opened'; readonly queued: number }
  | { readonly type: 'open-failed'; readonly error: SerializedError }
  | { readonly type: 'results'; readonly runs: readonly ResultRun[] }
  | { readonly type: 'stats'; readonly stats: WorkerStats }
  | { readonly type: 'closed'; readonly stats: WorkerStats };

const STATS_INTERVAL_MS = 20;

export function serializeError(err: unknown): SerializedError {
  if (isHypersealError(err)) return { code: err.code, message: err.message };
  return { code: 'HS_ERR_INTERNAL', message: err instanceof Error ? err.message : String(err) };
}

export function deserializeError(e: SerializedError): HypersealError {
  return new HypersealError(e.code, e.message);
}

function run(init: WorkerInit): void {
  const port = parentPort;
  if (port === null) throw new Error('sink-worker.js runs as a worker thread');
  const post = (m: FromWorker): void => port.postMessage(m);
  const queue = new DiskQueue({
    dir: init.queueDir,
    lock: false, // the sink took it in the caller's thread, where start() can throw
    ...(init.segmentBytes === undefined ? {} : { segmentBytes: init.segmentBytes }),
    ...(init.maxQueueBytes === undefined ? {} : { maxQueueBytes: init.maxQueueBytes }),
    ...(init.cursorIntervalMs === undefined ? {} : { cursorIntervalMs: init.cursorIntervalMs }),
    ...(init.memoryBytes === undefined ? {} : { memoryBytes: init.memoryBytes }),
  });
  try {
    queue.open();
  } catch (err) {
    post({ type: 'open-failed', error: serializeError(err) });
    port.close();
    return;
  }
  post({ type: 'opened', queued: queue.count });

  let received = 0;
  let statsTimer: NodeJS.Timeout | null = null;
  const stats = (): WorkerStats => ({ queued: queue.count, received, ...sender.stats() });
  const changed = (): void => {
    statsTimer ??= setTimeout(() => {
      statsTimer = null;
      post({ type: 'stats', stats: stats() });
    }, STATS_INTERVAL_MS);
  };
  const connect = CONNECTORS[init.transport];
  const sender = new Sender(queue, {
    targetId: init.targetId,
    connect: () => connect(init.transportOptions),
    ackGraceMs: init.ackGraceMs,
    holdRecords: init.holdRecords,
    reconnectMinMs: init.reconnectMinMs,
    reconnectMaxMs: init.reconnectMaxMs,
    maxBatchBytes: init.maxBatchBytes,
    closeTimeoutMs: init.closeTimeoutMs,
    onChange: changed,
  });
  queue.onDurable = () => sender.wake();
  sender.start();
  trace('syslog', 'sink started', { target: init.targetId, queued: queue.count });

  // Outcomes are reported in the order the records came, whatever order they settle in
  // (a record refused at once — queue full — settles before earlier ones being written).
  let nextIndex = 0;
  let reportFrom = 0;
  const settled = new Map<number, SerializedError | null>();
  let reportScheduled = false;
  const report = (): void => {
    reportScheduled = false;
    const runs: ResultRun[] = [];
    while (settled.has(reportFrom)) {
      const outcome = settled.get(reportFrom) ?? null;
      settled.delete(reportFrom);
      reportFrom++;
      const last = runs.at(-1);
      if (outcome === null) {
        if (last !== undefined && 'ok' in last) runs[runs.length - 1] = { ok: last.ok + 1 };
        else runs.push({ ok: 1 });
      } else if (last !== undefined && 'failed' in last && last.error.message === outcome.message) {
        runs[runs.length - 1] = { failed: last.failed + 1, error: last.error };
      } else {
        runs.push({ failed: 1, error: outcome });
      }
    }
    if (runs.length > 0) post({ type: 'results', runs });
  };
  const settle = (index: number, outcome: SerializedError | null): void => {
    settled.set(index, outcome);
    if (!reportScheduled) {
      reportScheduled = true;
      setImmediate(report);
    }
  };

  port.on('message', (m: ToWorker) => {
    if (m.type === 'records') {
      const batch = Buffer.from(m.batch, 0, m.bytes);
      for (let at = 0; at < batch.length;) {
        // u32 length | u32 CRC | u8 id length | id | body (queue.ts writeRecord)
        const size = 8 + batch.readUInt32BE(at);
        const idLength = batch[at + 8] as number;
        const id = batch.toString('utf8', at + 9, at + 9 + idLength);
        const index = nextIndex++;
        received++;
        queue.enqueueRecord(id, batch.subarray(at, at + size)).then(
          () => settle(index, null),
          (err: unknown) => settle(index, serializeError(err)),
        );
        at += size;
      }
      changed();
      return;
    }
    void (async () => {
      await sender.close();
      await queue.close();
      if (statsTimer !== null) clearTimeout(statsTimer);
      report();
      post({ type: 'closed', stats: stats() });
      port.close();
      // A connection attempt still under way (up to connectTimeoutMs) must not hold up the
      // sink's close(): the queue is closed and its cursor written, nothing is left to do.
      // process.exit() in a worker ends this thread only.
      setImmediate(() => process.exit(0));
    })();
  });
}

if (!isMainThread && parentPort !== null && (workerData as { syslogSink?: WorkerInit } | null)?.syslogSink) {
  run((workerData as { syslogSink: WorkerInit }).syslogSink);
}
