// The group-commit flusher: every flush request is answered only after a datasync that
// started after the request, and requests made during one datasync share the next one.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WalFlusher } from './wal-flusher.js';

class CountingFlusher extends WalFlusher {
  syncs = 0;
  /** Requests answered before the datasync that covers them started would be a bug. */
  startedAt: number[] = [];
  protected override async datasync(): Promise<void> {
    this.syncs++;
    this.startedAt.push(performance.now());
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('flushes coalesce: 100 requests during one datasync share the next', async () => {
  const f = new CountingFlusher('/nonexistent-wal');
  const first = f.flush();
  assert.equal(f.busy, true);
  const requested = performance.now();
  const rest = Array.from({ length: 100 }, () => f.flush());
  await Promise.all([first, ...rest]);
  assert.equal(f.syncs, 2, 'one datasync for the first request, one for all the others');
  // The second datasync started after the 100 requests were made.
  assert.ok((f.startedAt[1] ?? 0) >= requested);
  assert.equal(f.busy, false);
});

test('a failed datasync rejects exactly the requests it covered', async () => {
  let fail = true;
  class Failing extends WalFlusher {
    protected override async datasync(): Promise<void> {
      await new Promise((r) => setTimeout(r, 5));
      if (fail) {
        fail = false;
        throw new Error('EIO');
      }
    }
  }
  const f = new Failing('/x');
  const a = f.flush();
  const b = f.flush();
  await assert.rejects(a, /EIO/);
  await b;
});

test('a missing WAL file means nothing to flush', async () => {
  await new WalFlusher('/nonexistent/dir/db-wal').flush();
});
