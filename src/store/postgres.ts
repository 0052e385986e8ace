/**
 * The PostgreSQL driver: a pg Pool; a transaction holds one pool client from BEGIN to
 * COMMIT/ROLLBACK. Statements outside a transaction take any free client.
 */
import pg from 'pg';
import type { PoolClient, QueryResult, QueryResultRow } from 'pg';
import { HypersealError } from '../errors.js';
import { trace } from '../trace.js';
import type { Db, RunResult, SqlParam, SqlValue } from './db.js';
import { abbreviate, checkParams } from './db.js';
import type { Connection } from './tx.js';
import { TxGuard } from './tx.js';

/** SQLSTATE classes and codes (PostgreSQL manual, appendix A "Error Codes"). */
const UNIQUE_VIOLATION = '23505';
const CONSTRAINT_CLASS = '23';
const BUSY_CODES = new Set(['40001', '40P01', '55P03']); // serialization, deadlock, lock_not_available
const UNAVAILABLE_CODES = new Set(['28000', '28P01', '3D000', '53300', '57P01', '57P02', '57P03']);
const UNAVAILABLE_CLASSES = new Set(['08']); // connection exception
/** Node socket errors and pg's own connection failures, which carry no SQLSTATE. */
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENOTFOUND',
  'EPIPE',
  'ENOENT', // no socket file in a unix socket directory
  'EACCES',
]);

const INT8_OID = 20;

/**
 * BIGINT as a JS number when exact, as a bigint otherwise: pg returns every int8 as a
 * string by default (to never round), and SQLite returns numbers. Per pool, not global
 * (pg.types.setTypeParser would change every pg user in the process).
 */
const getTypeParser = ((oid: number, format?: 'text' | 'binary') => {
  if (oid === INT8_OID && format !== 'binary') {
    return (text: string): number | bigint => {
      const n = Number(text);
      return Number.isSafeInteger(n) ? n : BigInt(text);
    };
  }
  return pg.types.getTypeParser(oid, format);
}) as typeof pg.types.getTypeParser;

function stringProp(err: unknown, key: string): string | undefined {
  if (typeof err !== 'object' || err === null || !(key in err)) return undefined;
  const v: unknown = (err as Record<string, unknown>)[key];
  return typeof v === 'string' ? v : undefined;
}

/**
 * Maps a pg error to a Hyperseal code. `scrub` removes the password from any text that
 * goes into a message. Connection failures carry no `cause`: the foreign error object
 * would be printed with the message, and nothing vouches for what it contains.
 */
export function mapPgError(
  err: unknown,
  sql: string | undefined,
  where: string,
  scrub: (s: string) => string,
): HypersealError {
  if (err instanceof HypersealError) return err;
  const code = stringProp(err, 'code') ?? '';
  const message = scrub(err instanceof Error ? err.message : String(err));
  const inSql = sql === undefined ? '' : ` (in: ${abbreviate(sql)})`;
  if (code === UNIQUE_VIOLATION) {
    const table = stringProp(err, 'table') ?? '';
    // detail: 'Key (host_id, name)=(h1, web) already exists.' Only the names are kept: the
    // values may be anything a caller stored.
    const m = /^Key \((.*?)\)=\(/.exec(stringProp(err, 'detail') ?? '');
    const columns = m?.[1] !== undefined ? m[1].split(/,\s*/) : [];
    return new HypersealError(
      'HS_ERR_DB_CONFLICT',
      `${table} already has a row with this ${columns.join(', ')}`,
      { table, columns },
      { cause: err },
    );
  }
  if (code.startsWith(CONSTRAINT_CLASS)) {
    return new HypersealError('HS_ERR_DB_CONSTRAINT', `${message}${inSql}`, undefined, { cause: err });
  }
  if (BUSY_CODES.has(code)) {
    return new HypersealError('HS_ERR_DB_BUSY', `${message}${inSql}`, undefined, { cause: err });
  }
  if (
    UNAVAILABLE_CODES.has(code) ||
    UNAVAILABLE_CLASSES.has(code.slice(0, 2)) ||
    NETWORK_CODES.has(code) ||
    /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error/i.test(
      message,
    )
  ) {
    return new HypersealError('HS_ERR_DB_UNAVAILABLE', `PostgreSQL at ${where}: ${message}`, {
      ...(code === '' ? {} : { reason: code }),
    });
  }
  return new HypersealError('HS_ERR_INTERNAL', `database error: ${message}${inSql}`, undefined, {
    cause: err,
  });
}

export interface PostgresOptions {
  /** The URL with its password replaced, for messages. */
  display: string;
  /** The password, removed from every message that might echo it. */
  password: string | undefined;
  /** Pool size. */
  maxConnections?: number;
  connectTimeoutMs?: number;
}

function makeScrubber(password: string | undefined): (s: string) => string {
  if (password === undefined || password === '') return (s) => s;
  const forms = [...new Set([password, encodeURIComponent(password)])];
  return (s) => forms.reduce((acc, f) => acc.split(f).join('***'), s);
}

/** One client's statements; errors mapped. */
class PgConnection implements Connection {
  readonly dialect = 'postgres' as const;

  constructor(
    private readonly target: pg.Pool | PoolClient,
    private readonly map: (err: unknown, sql: string | undefined) => HypersealError,
  ) {}

  private async send(sql: string, params: readonly SqlParam[]): Promise<QueryResult<QueryResultRow>> {
    checkParams(params, sql);
    try {
      return await this.target.query<QueryResultRow>({ text: sql, values: [...params] });
    } catch (err) {
      throw this.map(err, sql);
    }
  }

  async query<T extends object>(sql: string, params: readonly SqlParam[]): Promise<T[]> {
    return (await this.send(sql, params)).rows as T[];
  }

  async run(sql: string, params: readonly SqlParam[]): Promise<RunResult> {
    return { changes: (await this.send(sql, params)).rowCount ?? 0 };
  }

  async exec(sql: string): Promise<void> {
    try {
      // No values: the simple-query protocol, which accepts several statements.
      await this.target.query(sql);
    } catch (err) {
      throw this.map(err, sql);
    }
  }
}

export class PostgresDb implements Db {
  readonly dialect = 'postgres' as const;
  private readonly pool: pg.Pool;
  private readonly conn: PgConnection;
  private readonly guard = new TxGuard();
  private readonly map: (err: unknown, sql: string | undefined) => HypersealError;
  private closed = false;

  /** Creates the pool; nothing connects until `connect()` or the first statement. */
  constructor(
    connectionString: string,
    private readonly options: PostgresOptions,
  ) {
    const scrub = makeScrubber(options.password);
    this.map = (err, sql) => mapPgError(err, sql, options.display, scrub);
    this.pool = new pg.Pool({
      connectionString,
      max: options.maxConnections ?? 10,
      connectionTimeoutMillis: options.connectTimeoutMs ?? 10_000,
      // The URL's own application_name wins over this default.
      application_name: 'hyperseal',
      types: { getTypeParser },
    });
    // An idle client whose server went away emits 'error' on the pool; unhandled, that
    // would crash the manager. The pool drops the client, and the next query reconnects.
    this.pool.on('error', (err) =>
      trace('store', 'idle PostgreSQL connection failed', { error: scrub(err.message) }),
    );
    this.conn = new PgConnection(this.pool, this.map);
  }

  /** Proves the server is reachable and accepts our login; closes the pool if not. */
  async connect(): Promise<void> {
    try {
      await this.conn.query('SELECT 1 AS ok', []);
    } catch (err) {
      await this.pool.end().catch(() => undefined);
      this.closed = true;
      const e = err instanceof HypersealError ? err : this.map(err, undefined);
      throw e.code === 'HS_ERR_INTERNAL'
        ? new HypersealError('HS_ERR_DB_UNAVAILABLE', `PostgreSQL at ${this.options.display}: ${e.message}`)
        : e;
    }
  }

  private check(operation: string): void {
    this.guard.assertOutside(operation);
    if (this.closed) throw new HypersealError('HS_ERR_INTERNAL', 'the database is closed');
  }

  async query<T extends object = Record<string, SqlValue>>(
    sql: string,
    params: readonly SqlParam[] = [],
  ): Promise<T[]> {
    this.check('query');
    return this.conn.query<T>(sql, params);
  }

  async one<T extends object = Record<string, SqlValue>>(
    sql: string,
    params: readonly SqlParam[] = [],
  ): Promise<T | undefined> {
    return (await this.query<T>(sql, params))[0];
  }

  async run(sql: string, params: readonly SqlParam[] = []): Promise<RunResult> {
    this.check('run');
    return this.conn.run(sql, params);
  }

  async exec(sql: string): Promise<void> {
    this.check('exec');
    return this.conn.exec(sql);
  }

  async transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T> {
    this.check('transaction');
    let client: PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      throw this.map(err, undefined);
    }
    let broken: Error | undefined;
    // A client that fails mid-transaction must not go back to the pool in an unknown
    // state: releasing it with an error destroys it.
    const onError = (err: Error): void => {
      broken = err;
    };
    client.on('error', onError);
    try {
      return await this.guard.run(new PgConnection(client, this.map), 'BEGIN', fn, (err) => {
        broken = err instanceof Error ? err : new Error(String(err));
      });
    } finally {
      client.off('error', onError);
      client.release(broken);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }
}
