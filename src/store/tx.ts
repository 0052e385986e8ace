/**
 * Transaction handling shared by both drivers, so both behave the same way:
 *
 * - A statement that fails inside a transaction fails the transaction. PostgreSQL does
 *   this itself (every later statement is refused until ROLLBACK, and COMMIT of such a
 *   transaction quietly rolls back); SQLite would carry on. We make SQLite refuse too, and
 *   make both throw the original error instead of "committing" a failed transaction, so
 *   code that swallows an error inside a transaction fails in tests on SQLite already.
 *   A statement that is expected to fail goes in a nested `tx.transaction()` (a SAVEPOINT).
 * - Using the outer handle inside its own transaction is refused (see db.ts), detected
 *   with AsyncLocalStorage, which follows the transaction's async continuations.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { HypersealError } from '../errors.js';
import type { Db, Dialect, RunResult, SqlParam, SqlValue } from './db.js';

/** The raw statements of one connection: no guards, errors already mapped. */
export interface Connection {
  readonly dialect: Dialect;
  query<T extends object>(sql: string, params: readonly SqlParam[]): Promise<T[]>;
  run(sql: string, params: readonly SqlParam[]): Promise<RunResult>;
  exec(sql: string): Promise<void>;
}

interface TxState {
  done: boolean;
  /** The first error of a statement in this transaction (or savepoint). */
  failed: unknown;
  readonly parent: TxState | undefined;
}

function finished(state: TxState): boolean {
  for (let s: TxState | undefined = state; s !== undefined; s = s.parent) if (s.done) return true;
  return false;
}

/** Tracks which transaction, if any, the current async context belongs to. */
export class TxGuard {
  private readonly als = new AsyncLocalStorage<TxState>();

  /** Throws when called from inside a live transaction of the database owning this guard. */
  assertOutside(operation: string): void {
    const state = this.als.getStore();
    if (state !== undefined && !state.done) {
      throw new HypersealError(
        'HS_ERR_INTERNAL',
        `database ${operation}() called on the outer handle inside one of its transactions: ` +
          'use the transaction handle passed to the callback',
      );
    }
  }

  /**
   * Runs `fn` as a transaction on `conn`, which the caller has reserved for it (SQLite:
   * the mutex; PostgreSQL: a pool client). Commits on success, rolls back and rethrows on
   * failure.
   */
  async run<T>(
    conn: Connection,
    begin: string,
    fn: (tx: Db) => Promise<T>,
    onRollbackFailed?: (err: unknown) => void,
  ): Promise<T> {
    await conn.exec(begin);
    const state: TxState = { done: false, failed: undefined, parent: undefined };
    try {
      const result = await this.als.run(state, () => fn(new TxDb(conn, state)));
      if (state.failed !== undefined) throw state.failed;
      await conn.exec('COMMIT');
      return result;
    } catch (err) {
      // A ROLLBACK that fails means the connection is gone (and a server rolls back a
      // transaction whose connection is gone) or unusable; the caller discards it. The
      // original error is the one to report.
      await conn.exec('ROLLBACK').catch((rollbackErr: unknown) => onRollbackFailed?.(rollbackErr));
      throw err;
    } finally {
      state.done = true;
    }
  }
}

let savepointCounter = 0;

/** The handle a transaction callback gets. */
class TxDb implements Db {
  readonly dialect: Dialect;

  constructor(
    private readonly conn: Connection,
    private readonly state: TxState,
  ) {
    this.dialect = conn.dialect;
  }

  private check(operation: string): void {
    if (finished(this.state)) {
      throw new HypersealError(
        'HS_ERR_INTERNAL',
        `database ${operation}() on a transaction handle after its transaction ended`,
      );
    }
    if (this.state.failed !== undefined) {
      const code = this.state.failed instanceof HypersealError ? this.state.failed.code : 'an error';
      throw new HypersealError(
        'HS_ERR_INTERNAL',
        `database ${operation}() in a transaction that already failed (${code}): let that error ` +
          'propagate so the transaction rolls back, or run the statement that may fail in tx.transaction()',
        undefined,
        { cause: this.state.failed },
      );
    }
  }

  private async guarded<R>(operation: string, work: () => Promise<R>): Promise<R> {
    this.check(operation);
    try {
      return await work();
    } catch (err) {
      this.state.failed ??= err;
      throw err;
    }
  }

  query<T extends object = Record<string, SqlValue>>(
    sql: string,
    params: readonly SqlParam[] = [],
  ): Promise<T[]> {
    return this.guarded('query', () => this.conn.query<T>(sql, params));
  }

  async one<T extends object = Record<string, SqlValue>>(
    sql: string,
    params: readonly SqlParam[] = [],
  ): Promise<T | undefined> {
    return (await this.query<T>(sql, params))[0];
  }

  run(sql: string, params: readonly SqlParam[] = []): Promise<RunResult> {
    return this.guarded('run', () => this.conn.run(sql, params));
  }

  exec(sql: string): Promise<void> {
    return this.guarded('exec', () => this.conn.exec(sql));
  }

  /** A nested transaction: a SAVEPOINT, rolled back alone when `fn` throws. */
  async transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T> {
    // A unique name per savepoint, so savepoints of concurrent callers never collide.
    const name = `hs_sp_${++savepointCounter}`;
    await this.guarded('transaction', () => this.conn.exec(`SAVEPOINT ${name}`));
    const child: TxState = { done: false, failed: undefined, parent: this.state };
    try {
      const result = await fn(new TxDb(this.conn, child));
      if (child.failed !== undefined) throw child.failed;
      await this.guarded('transaction', () => this.conn.exec(`RELEASE SAVEPOINT ${name}`));
      return result;
    } catch (err) {
      if (this.state.failed === undefined) {
        // Undoes the savepoint's work and, on PostgreSQL, clears its aborted state, so the
        // outer transaction can go on. If this fails too, the outer transaction fails.
        await this.guarded('transaction', () =>
          this.conn.exec(`ROLLBACK TO SAVEPOINT ${name}; RELEASE SAVEPOINT ${name}`),
        ).catch(() => undefined);
      }
      throw err;
    } finally {
      child.done = true;
    }
  }

  close(): Promise<void> {
    return Promise.reject(
      new HypersealError('HS_ERR_INTERNAL', 'database close() called on a transaction handle'),
    );
  }
}
