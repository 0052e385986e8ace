/**
 * Opens the manager's database from a URL:
 *
 * - a file path, `sqlite:PATH` or `sqlite:///abs/path` → SQLite (the default: one file,
 *   nothing to install); `sqlite::memory:` → a throwaway in-memory database;
 * - `postgres://user:password@host:port/database` (or `postgresql://`) → PostgreSQL.
 *   Query parameters are passed to the driver (`sslmode=require`, `application_name`);
 *   a unix socket directory is `postgres:///database?host=/run/postgresql&user=NAME`.
 *
 * A URL may carry a password. It never appears in a message: errors show the URL with
 * the password replaced by `***`, and driver messages are scrubbed of it.
 */
import { HypersealError } from '../errors.js';
import type { Db } from './db.js';
import { PostgresDb } from './postgres.js';
import { SqliteDb } from './sqlite.js';

export type DatabaseTarget = string | { sqlitePath: string };

export interface OpenOptions {
  /** SQLite: how long to wait for another process's write lock (default 5000). */
  busyTimeoutMs?: number;
  /** PostgreSQL: pool size (default 10). */
  maxConnections?: number;
  /** PostgreSQL: connect timeout, per connection (default 10000). */
  connectTimeoutMs?: number;
}

export type ParsedTarget =
  | { kind: 'sqlite'; path: string }
  | { kind: 'postgres'; url: string; display: string; password: string | undefined };

const SCHEME = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//;

/** The URL with any password (userinfo or `password=` parameter) replaced by `***`. */
export function redactUrl(url: string): string {
  let out: string;
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    out = u.toString();
  } catch {
    // Unparseable: cut from the first ':' after the user name to the last '@'. Too much
    // may go, never too little.
    out = url.replace(/^([a-zA-Z][a-zA-Z0-9+.-]*:\/\/[^:@/?#]*):[^]*@/, '$1:***@');
  }
  return out.replace(/([?&]password=)[^&#]*/gi, '$1***');
}

function badUrl(url: string, why: string): HypersealError {
  return new HypersealError('HS_ERR_DB_URL', `invalid database URL '${redactUrl(url)}': ${why}`);
}

/** Decides what a target names, without opening anything. */
export function parseDatabaseTarget(target: DatabaseTarget): ParsedTarget {
  if (typeof target !== 'string') {
    if (target.sqlitePath === '') throw badUrl('', 'empty SQLite path');
    return { kind: 'sqlite', path: target.sqlitePath };
  }
  if (target.trim() === '') throw badUrl(target, 'empty');
  if (target === 'sqlite::memory:') return { kind: 'sqlite', path: ':memory:' };
  if (target.startsWith('sqlite:')) {
    let path = target.slice('sqlite:'.length);
    if (path.startsWith('//')) path = path.slice(2);
    if (path === '') throw badUrl(target, 'no file path after sqlite:');
    return { kind: 'sqlite', path };
  }
  const scheme = SCHEME.exec(target)?.[1]?.toLowerCase();
  if (scheme === undefined) return { kind: 'sqlite', path: target };
  if (scheme !== 'postgres' && scheme !== 'postgresql') {
    throw badUrl(
      target,
      `unsupported kind '${scheme}': use a file path, sqlite:PATH or postgres://user:password@host:port/database`,
    );
  }
  let u: URL;
  try {
    u = new URL(target);
  } catch {
    throw badUrl(target, 'not a URL (a password with @, :, / or % must be percent-encoded)');
  }
  if (u.hostname === '' && !u.searchParams.has('host')) {
    throw badUrl(target, 'no host (postgres://user:password@host:port/database)');
  }
  if (u.pathname.length <= 1) throw badUrl(target, 'no database name after the host');
  let password: string | undefined = u.searchParams.get('password') ?? undefined;
  if (u.password !== '') {
    try {
      password = decodeURIComponent(u.password);
    } catch {
      throw badUrl(target, 'the password is not valid percent-encoding');
    }
  }
  return { kind: 'postgres', url: target, display: redactUrl(target), password };
}

/**
 * Opens (SQLite: creating when new) the database. PostgreSQL is connected to once here,
 * so a wrong address or password fails now with HS_ERR_DB_UNAVAILABLE rather than at the
 * first request. Migrations are separate: see `migrate()`.
 */
export async function openDatabase(target: DatabaseTarget, options: OpenOptions = {}): Promise<Db> {
  const parsed = parseDatabaseTarget(target);
  if (parsed.kind === 'sqlite') {
    return new SqliteDb(
      parsed.path,
      options.busyTimeoutMs === undefined ? {} : { busyTimeoutMs: options.busyTimeoutMs },
    );
  }
  const db = new PostgresDb(parsed.url, {
    display: parsed.display,
    password: parsed.password,
    ...(options.maxConnections === undefined ? {} : { maxConnections: options.maxConnections }),
    ...(options.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: options.connectTimeoutMs }),
  });
  await db.connect();
  return db;
}
