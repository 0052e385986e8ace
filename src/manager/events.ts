/**
 * The manager's event recorder: every mutating call and state change becomes one event
 * (src/events builds it: redacted changes, the human sentence), appended to the
 * hash-chained store. Appends are serialized in this process and guarded by the unique
 * `seq` in the database, so two managers on one PostgreSQL cannot fork the chain.
 */
import type {
  Change,
  Event,
  EventObject,
  EventResult,
  EventType,
  Severity,
  VerifyResult,
} from '../events/index.js';
import { chainEvent, createEvent, diff, verifyChain } from '../events/index.js';
import { HypersealError } from '../errors.js';
import type { Db } from '../store/db.js';
import { fromJson, toJson } from '../store/db.js';

export interface Actor {
  user: string;
  sourceIp: string | null;
}

export interface RecordInput {
  type: EventType;
  object: EventObject;
  changes: readonly Change[];
  result?: EventResult;
  severity?: Severity;
  /** Overrides the rendered sentence (rarely: refusals carry their reason). */
  message?: string;
}

export interface EventRecorder {
  record(actor: Actor, input: RecordInput): Promise<Event>;
  diff(before: object, after: object): Change[];
}

/** Lists diffed by key, not position: NICs and disks by their id. */
const DIFF_SCHEMA = { nics: { key: 'id' }, disks: { key: 'id' } } as const;

interface EventRow {
  seq: number;
  id: string;
  time: number;
  type: string;
  severity: string;
  user_name: string | null;
  source_ip: string | null;
  object_kind: string | null;
  object_id: string | null;
  object_name: string | null;
  changes: string;
  result: string;
  message: string;
  prev_hash: string;
  hash: string;
}

function toEvent(r: EventRow): Event {
  return {
    seq: Number(r.seq),
    id: r.id,
    time: new Date(r.time).toISOString(),
    type: r.type as EventType,
    severity: r.severity as Severity,
    user: r.user_name ?? '',
    sourceIp: r.source_ip,
    object: {
      kind: (r.object_kind ?? 'vm') as EventObject['kind'],
      id: r.object_id ?? '',
      name: r.object_name ?? '',
    },
    changes: fromJson<Change[]>(r.changes) ?? [],
    result: r.result as EventResult,
    message: r.message,
    prevHash: r.prev_hash,
    hash: r.hash,
  };
}

export class ManagerEvents implements EventRecorder {
  private tail: Promise<unknown> = Promise.resolve();
  private head: { seq: number; hash: string } | null | undefined;
  private readonly listeners = new Set<(e: Event) => void>();

  constructor(private readonly db: Db) {}

  diff(before: object, after: object): Change[] {
    return diff(before, after, DIFF_SCHEMA);
  }

  /** Live subscribers (event tail). */
  subscribe(fn: (e: Event) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private readonly followers = new Set<() => void>();

  /**
   * A live stream to end when the manager stops: an open stream would otherwise hold the
   * HTTP server's close (and so a restart) for as long as its client stays connected.
   */
  follow(end: () => void): () => void {
    this.followers.add(end);
    return () => this.followers.delete(end);
  }

  /** Ends every live stream (the manager is stopping). */
  endFollowers(): void {
    const ends = [...this.followers];
    this.followers.clear();
    for (const end of ends) end();
  }

  record(actor: Actor, input: RecordInput): Promise<Event> {
    const next = this.tail.then(() => this.append(actor, input));
    this.tail = next.catch(() => undefined);
    return next;
  }

  private async append(actor: Actor, input: RecordInput): Promise<Event> {
    const unchained = createEvent({
      type: input.type,
      user: actor.user,
      sourceIp: actor.sourceIp,
      object: input.object,
      changes: input.changes,
      ...(input.result ? { result: input.result } : {}),
      ...(input.severity ? { severity: input.severity } : {}),
    });
    const base = input.message === undefined ? unchained : { ...unchained, message: input.message };
    for (let attempt = 0; ; attempt++) {
      // The head is cached between appends; a conflict (another manager appended) re-reads it.
      if (this.head === undefined || attempt > 0) {
        const row = await this.db.one<{ seq: number; hash: string }>(
          `SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1`,
        );
        this.head = row === undefined ? null : { seq: Number(row.seq), hash: row.hash };
      }
      const event = chainEvent(base, this.head);
      try {
        await this.db.run(
          `INSERT INTO events (seq, id, time, type, severity, user_name, source_ip, object_kind, object_id, object_name, changes, result, message, prev_hash, hash)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
          [
            event.seq,
            event.id,
            Date.parse(event.time),
            event.type,
            event.severity,
            event.user,
            event.sourceIp,
            event.object.kind,
            event.object.id,
            event.object.name,
            toJson(event.changes),
            event.result,
            event.message,
            event.prevHash,
            event.hash,
          ],
        );
        this.head = { seq: event.seq, hash: event.hash };
        for (const l of this.listeners) l(event);
        return event;
      } catch (err) {
        // Another manager appended first: re-read the head and link after it.
        if (err instanceof HypersealError && err.code === 'HS_ERR_DB_CONFLICT' && attempt < 5) continue;
        throw err;
      }
    }
  }

  async query(q: {
    limit?: number;
    type?: string;
    objectId?: string;
    user?: string;
    since?: number;
    until?: number;
    text?: string;
    severity?: string;
    beforeSeq?: number;
  }): Promise<Event[]> {
    const where: string[] = [];
    const params: (string | number)[] = [];
    const add = (sql: string, v: string | number): void => {
      params.push(v);
      where.push(sql.replace('?', `$${params.length}`));
    };
    if (q.type !== undefined) add('type = ?', q.type);
    if (q.objectId !== undefined) add('object_id = ?', q.objectId);
    if (q.user !== undefined) add('user_name = ?', q.user);
    if (q.since !== undefined) add('time >= ?', q.since);
    if (q.until !== undefined) add('time < ?', q.until);
    if (q.text !== undefined) add('message LIKE ?', `%${q.text.replace(/[%_]/g, '')}%`);
    if (q.severity !== undefined) add('severity = ?', q.severity);
    if (q.beforeSeq !== undefined) add('seq < ?', q.beforeSeq);
    params.push(q.limit ?? 100);
    const rows = await this.db.query<EventRow>(
      `SELECT * FROM events ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY seq DESC LIMIT $${params.length}`,
      params,
    );
    return rows.map(toEvent);
  }

  /** Events after `seq`, oldest first (for sinks catching up). */
  async since(seq: number, limit = 100_000): Promise<Event[]> {
    const rows = await this.db.query<EventRow>(`SELECT * FROM events WHERE seq > $1 ORDER BY seq LIMIT $2`, [
      seq,
      limit,
    ]);
    return rows.map(toEvent);
  }

  /** Checks the whole chain from the genesis event. */
  async verify(): Promise<{ ok: boolean; count: number; firstBad?: Exclude<VerifyResult, { ok: true }> }> {
    const rows = await this.db.query<EventRow>(`SELECT * FROM events ORDER BY seq`);
    const events = rows.map(toEvent);
    const r = verifyChain(events);
    return r.ok ? { ok: true, count: events.length } : { ok: false, count: events.length, firstBad: r };
  }
}
