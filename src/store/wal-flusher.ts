/**
 * Group commit for SQLite in WAL mode: with synchronous=NORMAL a commit is a write to the
 * WAL in the page cache (it survives a crash of the process, not of the machine); this
 * makes it durable by fdatasync'ing the WAL on libuv's thread pool, off the event loop.
 * Flushes coalesce: every request made while one flush runs is covered by the next, so
 * a slow disk means bigger groups rather than a queue, and the result is what
 * synchronous=FULL guarantees without blocking the process on each commit.
 */
import fsp from 'node:fs/promises';

interface Waiter {
  resolve(): void;
  reject(err: Error): void;
}

export class WalFlusher {
  private waiting: Waiter[] = [];
  private running = false;

  constructor(private readonly walPath: string) {}

  /** Resolves once everything written to the WAL before this call is on disk. */
  flush(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      if (!this.running) this.run();
    });
  }

  /** Whether a flush is running or requested (then `flush()` is needed to be sure). */
  get busy(): boolean {
    return this.running || this.waiting.length > 0;
  }

  private run(): void {
    const batch = this.waiting;
    this.waiting = [];
    this.running = true;
    this.datasync()
      .then(
        () => {
          for (const w of batch) w.resolve();
        },
        (err: unknown) => {
          const e = err instanceof Error ? err : new Error(String(err));
          for (const w of batch) w.reject(e);
        },
      )
      .finally(() => {
        this.running = false;
        if (this.waiting.length > 0) this.run();
      });
  }

  protected async datasync(): Promise<void> {
    let handle;
    try {
      // Opened per flush: SQLite may replace the WAL file after a checkpoint.
      handle = await fsp.open(this.walPath, 'r');
    } catch (err) {
      // No WAL yet: nothing was written, nothing to flush.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    try {
      await handle.datasync();
    } finally {
      await handle.close();
    }
  }
}
