/**
 * The SQLite driver: one better-sqlite3 connection, synchronous calls behind the async Db
 * interface.
 *
 * better-sqlite3 has a single connection and a transaction is just a state of it, so two
 * async transactions interleaving their awaits would run each other's statements (and
 * roll each other back). A FIFO mutex gives the connection to one transaction at a time;
 * a statement outside any transaction waits for the mutex too, or it would join (and
 * maybe be rolled back with) whatever transaction is open. BEGIN IMMEDIATE takes
 * SQLite's write lock at once, so a second process fails fast (after busy_timeout) at
 * BEGIN rather than at its first write, halfway through its work.
 */
import Database from 'better-sqlite3';
import { HypersealError } from '../errors.js';
import { WalFlusher } from './wal-flusher.js';
import type { Db, RunResult, SqlParam, SqlValue } from './db.js';
import { abbreviate, checkParams } from './db.js';
import type { Connection } from './tx.js';
import { TxGuard } from './tx.js';

/** `$n` placeholders rewritten for SQLite: `?` in order, and which parameter each one takes. */
export interface RewrittenSql {
  sql: string;
  /** Zero-based parameter index for each `?`, in order. */
  order: number[];
  /** The highest n of any `$n` (the number of parameters the statement expects). */
  count: number;
}

/**
 * Rewrites `$1, $2, …` to `?` outside '…' literals, "…" identifiers and comments. A raw
 * `?` is refused: PostgreSQL would not understand it, and it would pass tests on SQLite.
 */
export function rewritePlaceholders(sql: string): RewrittenSql {
  let out = '';
  const order: number[] = [];
  let count = 0;
  let i = 0;
  const n = sql.length;
  while (i < n) {
    const c = sql[i] as string;
    if (c === "'" || c === '"') {
      // A quoted run ends at the next unpaired quote ('' and "" escape themselves).
      let j = i + 1;
      while (j < n) {
        if (sql[j] === c) {
          if (sql[j + 1] === c) j += 2;
          else break;
        } else j++;
      }
      out += sql.slice(i, j + 1);
      i = j + 1;
    } else if (c === '-' && sql[i + 1] === '-') {
      const end = sql.indexOf('\n', i);
      const j = end === -1 ? n : end;
      out += sql.slice(i, j);
      i = j;
    } else if (c === '/' && sql[i + 1] === '*') {
      const end = sql.indexOf('*/', i + 2);
      const j = end === -1 ? n : end + 2;
      out += sql.slice(i, j);
      i = j;
    } else if (c === '$' && /[0-9]/.test(sql[i + 1] ?? '')) {
      let j = i + 1;
      while (j < n && /[0-9]/.test(sql[j] as string)) j++;
      const index = Number(sql.slice(i + 1, j));
      if (index < 1) {
        throw new HypersealError('HS_ERR_INTERNAL', `placeholder $${index} in: ${abbreviate(sql)}`);
      }
      out += '?';
      order.push(index - 1);
      count = Math.max(count, index);
      i = j;
    } else if (c === '?') {
      throw new HypersealError(
        'HS_ERR_INTERNAL',
        `use $1, $2, … placeholders, not ?, in: ${abbreviate(sql)}`,
      );
    } else {
      out += c;
      i++;
    }
  }
  return { sql: out, order, count };
}

/** Maps a better-sqlite3 error to a Hyperseal code; anything unknown is internal. */
export function mapSqliteError(err: unknown, sql: string | undefined): HypersealError {
  if (err instanceof HypersealError) return err;
  const code = typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : '';
  const message = err instanceof Error ? err.message : String(err);
  const where = sql === undefined ? '' : ` (in: ${abbreviate(sql)})`;
  if (code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
    // "UNIQUE constraint failed: hosts.name" or "…: datastores.host_id, datastores.name"
    const cols = message.replace(/^.*constraint failed:\s*/i, '').split(/,\s*/);
    const table = cols[0]?.split('.')[0] ?? '';
    const columns = cols.map((c) => c.split('.').slice(1).join('.'));
    return new HypersealError(
      'HS_ERR_DB_CONFLICT',
      `${table} already has a row with this ${columns.join(', ')}`,
      { table, columns },
      { cause: err },
    );
  }
  if (code.startsWith('SQLITE_CONSTRAINT')) {
    return new HypersealError('HS_ERR_DB_CONSTRAINT', `${message}${where}`, undefined, { cause: err });
  }
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) {
    return new HypersealError('HS_ERR_DB_BUSY', `the database file is locked: ${message}`, undefined, {
      cause: err,
    });
  }
  if (code.startsWith('SQLITE_CANTOPEN') || code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_READONLY')) {
    return new HypersealError('HS_ERR_DB_UNAVAILABLE', message, undefined, { cause: err });
  }
  return new HypersealError('HS_ERR_INTERNAL', `database error: ${message}${where}`, undefined, {
    cause: err,
  });
}

/** A FIFO lock: release() hands the lock straight to the next waiter. */
class Mutex {
  private held = false;
  private readonly waiters: (() => void)[] = [];

  get locked(): boolean {
    return this.held;
  }

  acquire(): Promise<void> {
    if (!this.held) {
      this.held = true;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  release(): void {
    const next = this.waiters.shift();
    if (next === undefined) this.held = false;
    else next();
  }
}

interface Prepared {
  stmt: Database.Statement<unknown[], Record<string, unknown>>;
  order: number[];
  count: number;
  /** Names of result columns declared BOOLEAN, whose 0/1 are turned into booleans. */
  booleans: ReadonlySet<string>;
}

/** Prepared statements kept; the manager's SQL is a fixed set, so this rarely evicts. */
const STATEMENT_CACHE_SIZE = 500;

type Bindable = string | number | bigint | Buffer | null;

function bindable(p: SqlParam): Bindable {
  if (typeof p === 'boolean') return p ? 1 : 0;
  // An integer bound as a JS number is bound as a double: into a TEXT column it would be
  // stored as '5.0' where PostgreSQL stores '5'. As a bigint it is bound as an integer.
  if (typeof p === 'number' && Number.isSafeInteger(p)) return BigInt(p);
  if (p instanceof Uint8Array && !Buffer.isBuffer(p))
    return Buffer.from(p.buffer, p.byteOffset, p.byteLength);
  return p as Bindable;
}

/** Integers are read as bigint (nothing is silently rounded) and returned as numbers when exact. */
function convertRow(row: Record<string, unknown>, booleans: ReadonlySet<string>): Record<string, SqlValue> {
  const out: Record<string, SqlValue> = {};
  for (const key of Object.keys(row)) {
    let v = row[key] as SqlValue;
    if (typeof v === 'bigint') {
      if (booleans.has(key)) v = v !== 0n;
      else if (v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)) v = Number(v);
    }
    out[key] = v;
  }
  return out;
}

/** The raw statements of the one connection; callers hold the mutex. */
class SqliteConnection implements Connection {
  readonly dialect = 'sqlite' as const;
  private readonly cache = new Map<string, Prepared>();

  constructor(readonly conn: Database.Database) {}

  private prepare(sql: string): Prepared {
    const hit = this.cache.get(sql);
    if (hit !== undefined) {
      // Re-inserting keeps the Map in least-recently-used order for eviction.
      this.cache.delete(sql);
      this.cache.set(sql, hit);
      return hit;
    }
    const { sql: rewritten, order, count } = rewritePlaceholders(sql);
    const stmt = this.conn.prepare<unknown[], Record<string, unknown>>(rewritten);
    let booleans = new Set<string>();
    if (stmt.reader) {
      stmt.safeIntegers(true);
      booleans = new Set(
        stmt
          .columns()
          .filter((c) => c.type?.toUpperCase() === 'BOOLEAN')
          .map((c) => c.name),
      );
    }
    const prepared: Prepared = { stmt, order, count, booleans };
    this.cache.set(sql, prepared);
    if (this.cache.size > STATEMENT_CACHE_SIZE) {
      const oldest = this.cache.keys().next();
      if (oldest.done !== true) this.cache.delete(oldest.value);
    }
    return prepared;
  }

  private bind(p: Prepared, sql: string, params: readonly SqlParam[]): Bindable[] {
    checkParams(params, sql);
    if (params.length !== p.count) {
      throw new HypersealError(
        'HS_ERR_INTERNAL',
        `statement expects ${p.count} parameter(s), got ${params.length}: ${abbreviate(sql)}`,
      );
    }
    return p.order.map((i) => bindable(params[i] as SqlParam));
  }

  querySync<T extends object>(sql: string, params: readonly SqlParam[]): T[] {
    try {
      const p = this.prepare(sql);
      const args = this.bind(p, sql, params);
      if (!p.stmt.reader) {
        p.stmt.run(...args);
        return [];
      }
      return p.stmt.all(...args).map((r) => convertRow(r, p.booleans) as T);
    } catch (err) {
      throw mapSqliteError(err, sql);
    }
  }

  runSync(sql: string, params: readonly SqlParam[]): RunResult {
    try {
      const p = this.prepare(sql);
      const args = this.bind(p, sql, params);
      // PostgreSQL counts the rows a RETURNING (or SELECT) statement returns; so do we.
      if (p.stmt.reader) return { changes: p.stmt.all(...args).length };
      return { changes: p.stmt.run(...args).changes };
    } catch (err) {
      throw mapSqliteError(err, sql);
    }
  }

  execSync(sql: string): void {
    try {
      this.conn.exec(sql);
    } catch (err) {
      throw mapSqliteError(err, sql);
    }
  }

  query<T extends object>(sql: string, params: readonly SqlParam[]): Promise<T[]> {
    return settle(() => this.querySync<T>(sql, params));
  }

  run(sql: string, params: readonly SqlParam[]): Promise<RunResult> {
    return settle(() => this.runSync(sql, params));
  }

  exec(sql: string): Promise<void> {
    return settle(() => this.execSync(sql));
  }
}

function settle<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (err) {
    return Promise.reject(err instanceof Error ? err : new Error(String(err)));
  }
}

export interface SqliteOptions {
  /** How long a statement waits for another process's lock before HS_ERR_DB_BUSY. */
  busyTimeoutMs?: number;
}

export class SqliteDb implements Db {
  readonly dialect = 'sqlite' as const;
  private readonly conn: SqliteConnection;
  private readonly mutex = new Mutex();
  private readonly guard = new TxGuard();
  private closed = false;

  /** Opens (creating when new) the file; `:memory:` for a throwaway database. */
  constructor(
    readonly path: string,
    options: SqliteOptions = {},
  ) {
    let db: Database.Database;
    try {
      db = new Database(path);
    } catch (err) {
      throw new HypersealError(
        'HS_ERR_DB_UNAVAILABLE',
        `cannot open SQLite database ${path}: ${err instanceof Error ? err.message : String(err)}`,
        { path },
        { cause: err },
      );
    }
    try {
      // WAL: readers never block the writer, and a commit is one sequential append.
      // synchronous=NORMAL plus our own WAL fdatasync after every write (WalFlusher): a
      // committed task, event or token survives power loss, as with FULL, but the fsync
      // runs off the event loop and concurrent writers share it. foreign_keys is off by
      // default in SQLite, for backwards compatibility; PostgreSQL always enforces them.
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      db.pragma('foreign_keys = ON');
      db.pragma(`busy_timeout = ${Math.max(0, Math.floor(options.busyTimeoutMs ?? 5000))}`);
    } catch (err) {
      db.close();
      const mapped = mapSqliteError(err, undefined);
      throw new HypersealError(
        mapped.code === 'HS_ERR_INTERNAL' ? 'HS_ERR_DB_UNAVAILABLE' : mapped.code,
        `cannot use SQLite database ${path}: ${mapped.message}`,
        { path },
        { cause: err },
      );
    }
    this.conn = new SqliteConnection(db);
    this.flusher = path === ':memory:' ? undefined : new WalFlusher(`${path}-wal`);
  }

  private readonly flusher: WalFlusher | undefined;

  /** A write is answered only once it is on disk (see WalFlusher). */
  private async durable<T>(result: T): Promise<T> {
    await this.flusher?.flush();
    return result;
  }

  /** Runs one statement (or script) under the mutex, at once when nothing holds it. */
  private locked<T>(operation: string, fn: () => T): Promise<T> {
    // Refusals are rejections too, never synchronous throws: callers may use .catch().
    try {
      this.guard.assertOutside(operation);
      if (this.closed) throw closedError();
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    // Statements are synchronous: with the mutex free, nothing can run in between.
    if (!this.mutex.locked) return settle(fn);
    return this.mutex.acquire().then(() => {
      try {
        if (this.closed) throw closedError();
        return fn();
      } finally {
        this.mutex.release();
      }
    });
  }

  async query<T extends object = Record<string, SqlValue>>(
    sql: string,
    params: readonly SqlParam[] = [],
  ): Promise<T[]> {
    const rows = await this.locked('query', () => this.conn.querySync<T>(sql, params));
    // INSERT … RETURNING and friends write too.
    return /^\s*(SELECT|WITH|PRAGMA)\b/i.test(sql) ? rows : this.durable(rows);
  }

  async one<T extends object = Record<string, SqlValue>>(
    sql: string,
    params: readonly SqlParam[] = [],
  ): Promise<T | undefined> {
    return (await this.query<T>(sql, params))[0];
  }

  async run(sql: string, params: readonly SqlParam[] = []): Promise<RunResult> {
    return this.durable(await this.locked('run', () => this.conn.runSync(sql, params)));
  }

  async exec(sql: string): Promise<void> {
    await this.locked('exec', () => this.conn.execSync(sql));
    await this.durable(undefined);
  }

  async transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T> {
    this.guard.assertOutside('transaction');
    if (this.closed) throw closedError();
    await this.mutex.acquire();
    let released = false;
    try {
      if (this.closed) throw closedError();
      const result = await this.guard.run(this.conn, 'BEGIN IMMEDIATE', fn);
      // Released before the flush: the next transaction runs while this one reaches disk.
      this.mutex.release();
      released = true;
      return await this.durable(result);
    } finally {
      if (!released) this.mutex.release();
    }
  }

  /** Waits for a running transaction to end, then closes the file. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.flusher?.busy === true) await this.flusher.flush();
    await this.mutex.acquire();
    try {
      if (!this.closed) {
        this.closed = true;
        this.conn.conn.close();
      }
    } finally {
      this.mutex.release();
    }
  }
}

function closedError(): HypersealError {
  return new HypersealError('HS_ERR_INTERNAL', 'the database is closed');
}
