/**
 * Long work runs as tasks (CONVENTIONS §8): an API action answers 202 with a task id at
 * once, the work runs here with progress, and the row in `tasks` is the truth a client
 * polls. A manager that dies mid-task leaves the row `running`, so no task may stay
 * running forever: each row names its owner (a manager's stable id: host name and data
 * directory) and the owner refreshes `heartbeat_at` while it runs. A manager closes, as
 * failed with the reason, its own previous process's unfinished tasks when it starts, and
 * — at start and every heartbeat — any whose owner has gone quiet. Another live manager's
 * tasks on the same PostgreSQL database are left alone.
 */
import { randomUUID } from 'node:crypto';
import { HypersealError, isHypersealError } from '../errors.js';
import type { Db } from '../store/db.js';
import { fromJson, toJson } from '../store/db.js';

export type TaskState = 'queued' | 'running' | 'succeeded' | 'failed';

export interface Task {
  id: string;
  kind: string;
  objectKind: string;
  objectId: string;
  user: string;
  state: TaskState;
  progress: number;
  error: { code: string; message: string } | null;
  result: unknown;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
}

interface TaskRow {
  id: string;
  owner?: string | null;
  heartbeat_at?: number | null;
  kind: string;
  object_kind: string;
  object_id: string;
  user_name: string;
  state: TaskState;
  progress: number;
  error: string | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
}

function toTask(r: TaskRow, result: unknown): Task {
  return {
    id: r.id,
    kind: r.kind,
    objectKind: r.object_kind,
    objectId: r.object_id,
    user: r.user_name,
    state: r.state,
    progress: r.progress,
    error: fromJson<{ code: string; message: string }>(r.error),
    result,
    createdAt: r.created_at,
    startedAt: r.started_at,
    finishedAt: r.finished_at,
  };
}

export interface TaskContext {
  /** Reports progress 0–100; cheap to call often (writes are throttled). */
  progress(percent: number): void;
  /** Details of the progress (e.g. bytes and rate), shown as the running task's result (in memory). */
  detail?(value: unknown): void;
}

export type TaskWork = (ctx: TaskContext) => Promise<unknown>;

export class TaskEngine {
  private running = 0;
  private readonly queue: (() => void)[] = [];
  private readonly waiters = new Map<string, ((t: Task) => void)[]>();
  /** Results live in memory only (they may be large); the row keeps state and errors. */
  private readonly results = new Map<string, unknown>();

  private readonly owner: string;
  private readonly heartbeatMs: number;
  private readonly staleMs: number;
  private heartbeat: NodeJS.Timeout | undefined;

  constructor(
    private readonly db: Db,
    opts: {
      /** This manager's stable id (the same across its restarts, distinct from other managers'). */
      owner?: string;
      concurrency?: number;
      /** How often running tasks are marked alive (default 10 s). */
      heartbeatMs?: number;
      /** A task not marked alive for this long belongs to a manager that is gone (default 6 heartbeats). */
      staleMs?: number;
    } = {},
  ) {
    this.owner = opts.owner ?? 'manager';
    this.concurrency = opts.concurrency ?? 64;
    this.heartbeatMs = opts.heartbeatMs ?? 10_000;
    this.staleMs = opts.staleMs ?? 6 * this.heartbeatMs;
  }

  private readonly concurrency: number;

  /**
   * Closes the unfinished tasks of a manager that is gone: this one's previous process,
   * and any whose owner stopped marking them alive. Then keeps this manager's own tasks
   * marked alive (and sweeps again) every heartbeat until `close()`.
   */
  async recover(): Promise<number> {
    const now = Date.now();
    const own = await this.db.run(
      `UPDATE tasks SET state = 'failed', finished_at = $1, error = $2
        WHERE state IN ('queued', 'running') AND (owner = $3 OR owner IS NULL)`,
      [
        now,
        toJson({ code: 'HS_ERR_INTERNAL', message: 'interrupted: the manager restarted while it ran' }),
        this.owner,
      ],
    );
    const stale = await this.sweep(now);
    if (this.heartbeat === undefined) {
      this.heartbeat = setInterval(() => void this.beat().catch(() => undefined), this.heartbeatMs);
      this.heartbeat.unref();
    }
    return own.changes + stale;
  }

  /** Marks this manager's unfinished tasks alive, then closes those of managers gone quiet. */
  private async beat(): Promise<void> {
    const now = Date.now();
    await this.db.run(
      `UPDATE tasks SET heartbeat_at = $1 WHERE owner = $2 AND state IN ('queued', 'running')`,
      [now, this.owner],
    );
    await this.sweep(now);
  }

  private async sweep(now: number): Promise<number> {
    const r = await this.db.run(
      `UPDATE tasks SET state = 'failed', finished_at = $1, error = $2
        WHERE state IN ('queued', 'running') AND owner <> $3 AND (heartbeat_at IS NULL OR heartbeat_at < $4)`,
      [
        now,
        toJson({
          code: 'HS_ERR_INTERNAL',
          message: 'interrupted: the manager running it stopped (no heartbeat)',
        }),
        this.owner,
        now - this.staleMs,
      ],
    );
    return r.changes;
  }

  /** Stops the heartbeat (the manager is closing; its running tasks end with it). */
  close(): void {
    if (this.heartbeat !== undefined) clearInterval(this.heartbeat);
    this.heartbeat = undefined;
  }

  /** Records a task and starts it (as soon as a slot is free); returns it queued. */
  async submit(
    spec: { kind: string; objectKind: string; objectId: string; user: string },
    work: TaskWork,
  ): Promise<Task> {
    const row: TaskRow = {
      id: randomUUID(),
      kind: spec.kind,
      object_kind: spec.objectKind,
      object_id: spec.objectId,
      user_name: spec.user,
      state: 'queued',
      progress: 0,
      error: null,
      created_at: Date.now(),
      started_at: null,
      finished_at: null,
    };
    await this.db.run(
      `INSERT INTO tasks (id, kind, object_kind, object_id, user_name, state, progress, error, created_at, started_at, finished_at, owner, heartbeat_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
      [
        row.id,
        row.kind,
        row.object_kind,
        row.object_id,
        row.user_name,
        row.state,
        0,
        null,
        row.created_at,
        null,
        null,
        this.owner,
        row.created_at,
      ],
    );
    const start = (): void => void this.run(row.id, work);
    if (this.running < this.concurrency) start();
    else this.queue.push(start);
    return toTask(row, null);
  }

  private async run(id: string, work: TaskWork): Promise<void> {
    this.running++;
    let lastWrite = 0;
    let pending: number | undefined;
    try {
      await this.db.run(`UPDATE tasks SET state = 'running', started_at = $1 WHERE id = $2`, [
        Date.now(),
        id,
      ]);
      const ctx: TaskContext = {
        progress: (percent) => {
          const p = Math.max(0, Math.min(99, Math.round(percent)));
          const now = Date.now();
          if (now - lastWrite < 200) {
            pending = p;
            return;
          }
          lastWrite = now;
          void this.db
            .run(`UPDATE tasks SET progress = $1 WHERE id = $2 AND state = 'running'`, [p, id])
            .catch(() => {});
        },
        detail: (value) => {
          this.results.set(id, value);
        },
      };
      const result = await work(ctx);
      void pending;
      this.results.set(id, result ?? null);
      await this.db.run(
        `UPDATE tasks SET state = 'succeeded', progress = 100, finished_at = $1 WHERE id = $2`,
        [Date.now(), id],
      );
    } catch (err) {
      const error = isHypersealError(err)
        ? { code: err.code, message: err.message }
        : { code: 'HS_ERR_INTERNAL', message: err instanceof Error ? err.message : String(err) };
      await this.db
        .run(`UPDATE tasks SET state = 'failed', finished_at = $1, error = $2 WHERE id = $3`, [
          Date.now(),
          toJson(error),
          id,
        ])
        .catch(() => {});
    } finally {
      this.running--;
      this.queue.shift()?.();
      const task = await this.get(id).catch(() => undefined);
      if (task !== undefined) for (const w of this.waiters.get(id) ?? []) w(task);
      this.waiters.delete(id);
      // Keep results for a while so a late `wait` still sees them.
      setTimeout(() => this.results.delete(id), 10 * 60_000).unref();
    }
  }

  async get(id: string): Promise<Task> {
    const row = await this.db.one<TaskRow>(`SELECT * FROM tasks WHERE id = $1`, [id]);
    if (row === undefined) throw new HypersealError('HS_ERR_NOT_FOUND', `no task ${id}`);
    return toTask(row, this.results.get(id) ?? null);
  }

  async list(opts: { limit: number; state?: TaskState; objectId?: string }): Promise<Task[]> {
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (opts.state !== undefined) {
      params.push(opts.state);
      where.push(`state = $${params.length}`);
    }
    if (opts.objectId !== undefined) {
      params.push(opts.objectId);
      where.push(`object_id = $${params.length}`);
    }
    params.push(opts.limit);
    const rows = await this.db.query<TaskRow>(
      `SELECT * FROM tasks ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at DESC LIMIT $${params.length}`,
      params,
    );
    return rows.map((r) => toTask(r, this.results.get(r.id) ?? null));
  }

  /** Resolves when the task has finished (or the timeout passes: then its current state). */
  async wait(id: string, timeoutMs: number): Promise<Task> {
    const task = await this.get(id);
    if (task.state === 'succeeded' || task.state === 'failed') return task;
    return new Promise<Task>((resolve) => {
      const timer = setTimeout(() => void this.get(id).then(resolve, () => resolve(task)), timeoutMs);
      const list = this.waiters.get(id) ?? [];
      list.push((t) => {
        clearTimeout(timer);
        resolve(t);
      });
      this.waiters.set(id, list);
    });
  }
}
