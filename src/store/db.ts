/**
 * The manager's database, one small async interface over SQLite and PostgreSQL.
 *
 * SQL is written once, for both:
 *
 * - **Placeholders** are `$1, $2, …` (PostgreSQL's own). The SQLite driver rewrites them to
 *   `?` and reorders the parameters, so `$2 … $1 … $1` works on both. The rewriter skips
 *   '…' literals, "…" identifiers and -- comments, but keep the rule simple anyway:
 *   never write `$n` inside a literal or comment; pass the value as a parameter.
 * - **Names** are lower-case snake_case, and computed columns get one (`count(*) AS n`):
 *   PostgreSQL folds unquoted names to lower case, SQLite keeps them as written.
 * - **Portable SQL only**: both speak `INSERT … ON CONFLICT … DO UPDATE`, `RETURNING`,
 *   `LIMIT/OFFSET`, partial indexes, `SAVEPOINT`. `$n` parameters in a `LIMIT` are fine.
 *
 * Values: the same row comes back as the same JS value from both (the store test checks
 * it), because every column uses one of these types:
 *
 * | column type | JS value written       | JS value read | why |
 * | ----------- | ---------------------- | ------------- | --- |
 * | `TEXT`      | string                 | string        | |
 * | `INTEGER`   | number                 | number        | 32-bit counters, versions, progress |
 * | `BIGINT`    | number                 | number        | timestamps and sequence numbers (below) |
 * | `BOOLEAN`   | boolean                | boolean       | SQLite stores 0/1; its driver turns them back into booleans by the column's declared type |
 * | JSON        | `toJson(v)` (a string) | string → `fromJson` | stored as `TEXT`, see below |
 *
 * - **Timestamps are BIGINT milliseconds since the Unix epoch** (`Date.now()`), not
 *   ISO-8601 text or `timestamptz`: numbers order and compare the same in both engines
 *   and in JS (ISO text sorts right only while every writer uses the same width and zone),
 *   range queries hit a plain index, and there is no precision mismatch (`timestamptz`
 *   keeps microseconds and comes back as a `Date`). A double holds every ms until the year
 *   275760 exactly. PostgreSQL's driver returns BIGINT as a string by default; ours parses
 *   it. Integers beyond ±(2^53−1) come back as `bigint` from both rather than rounded.
 * - **JSON is TEXT** written with `toJson` and read with `fromJson`: the stored bytes are
 *   exactly the bytes written, on both engines (jsonb reorders keys and drops duplicates,
 *   which would break the events hash chain), and no driver rewrites a JS array into a
 *   PostgreSQL array on the way in. Parameters therefore refuse objects and arrays.
 * - **Computed expressions** have no declared type in SQLite: `SELECT a = b AS same` is a
 *   boolean from PostgreSQL and 0/1 from SQLite, `sum()` is numeric (a string) from
 *   PostgreSQL. Select columns, or `CAST(… AS INTEGER)` and compare in JS.
 * - **Text ordering**: SQLite compares bytes. A PostgreSQL database created with
 *   `LOCALE 'C'` (as the test harness does) orders names identically; under another
 *   collation, names that differ by case or accents may list in a different order.
 *
 * Transactions: `transaction(fn)` commits when `fn` resolves and rolls back when it throws
 * (the error is rethrown). Inside, use only the `tx` handle: using the outer handle there
 * is refused with an error, because on SQLite it would wait for the very transaction it
 * is part of (a deadlock) and on PostgreSQL it would silently run outside it.
 * `tx.transaction(fn)` nests with a SAVEPOINT. PostgreSQL runs READ COMMITTED; SQLite
 * runs one transaction at a time. Code that reads then writes the same row must therefore
 * guard the write (`UPDATE … WHERE version = $n`, a unique key) rather than rely on
 * isolation, and then it is correct on both.
 */
import { HypersealError } from '../errors.js';

export type Dialect = 'sqlite' | 'postgres';

/** What a parameter may be. No objects or arrays: JSON goes through `toJson`. */
export type SqlParam = string | number | bigint | boolean | null | Uint8Array;

/** A row as the drivers return it (see the value table above). */
export type SqlValue = string | number | bigint | boolean | null | Uint8Array;

export interface RunResult {
  /** Rows inserted, updated or deleted (for a statement with RETURNING: rows returned). */
  changes: number;
}

export interface Db {
  readonly dialect: Dialect;
  /** All rows of a statement (none for a statement that returns no rows). */
  query<T extends object = Record<string, SqlValue>>(sql: string, params?: readonly SqlParam[]): Promise<T[]>;
  /** The first row, or undefined. Add a LIMIT when more could match. */
  one<T extends object = Record<string, SqlValue>>(
    sql: string,
    params?: readonly SqlParam[],
  ): Promise<T | undefined>;
  run(sql: string, params?: readonly SqlParam[]): Promise<RunResult>;
  /**
   * Several statements without parameters, e.g. a migration. No placeholder rewriting
   * happens here, so the script must not contain `$n`.
   */
  exec(sql: string): Promise<void>;
  transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T>;
  /** Waits for nothing: call it when no query is in flight. Idempotent. */
  close(): Promise<void>;
}

/** JSON for a TEXT column. Refuses `undefined` (JSON.stringify would return undefined). */
export function toJson(value: unknown): string {
  const text = JSON.stringify(value);
  if (text === undefined) {
    throw new HypersealError(
      'HS_ERR_INTERNAL',
      'toJson: the value has no JSON form (undefined or a function)',
    );
  }
  return text;
}

/** Parses a JSON TEXT column; NULL stays null. */
export function fromJson<T = unknown>(text: string | null): T | null {
  if (text === null) return null;
  return JSON.parse(text) as T;
}

/** Throws when a parameter is of a type the drivers would not store identically. */
export function checkParams(params: readonly SqlParam[], sql: string): void {
  for (let i = 0; i < params.length; i++) {
    const p: unknown = params[i];
    if (
      p === null ||
      typeof p === 'string' ||
      typeof p === 'number' ||
      typeof p === 'bigint' ||
      typeof p === 'boolean' ||
      p instanceof Uint8Array
    ) {
      continue;
    }
    throw new HypersealError(
      'HS_ERR_INTERNAL',
      `database parameter $${i + 1} is ${p === undefined ? 'undefined' : typeof p}; ` +
        `use null, or toJson() for objects (in: ${abbreviate(sql)})`,
    );
  }
}

/** The first line of a statement, for messages. Never includes parameter values. */
export function abbreviate(sql: string): string {
  const flat = sql.replace(/\s+/g, ' ').trim();
  return flat.length > 80 ? `${flat.slice(0, 77)}...` : flat;
}
