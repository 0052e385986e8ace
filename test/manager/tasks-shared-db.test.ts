// Several managers on one database (PostgreSQL for real HA; SQLite as well): a manager that
// starts closes only the tasks of a manager that is gone — its own previous process's at
// once, another's once that one's heartbeat goes stale — and never a live manager's.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { TaskEngine } from '../../src/manager/tasks.js';
import type { Db } from '../../src/store/db.js';
import { migrate, openDatabase } from '../../src/store/index.js';
import type { PostgresServer } from '../support/postgres.js';
import { startPostgres } from '../support/postgres.js';

const FAST = { heartbeatMs: 40, staleMs: 300 };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

for (const backend of ['sqlite', 'postgres'] as const) {
  describe(`tasks on a shared database (${backend})`, { concurrency: 1 }, () => {
    let pg: PostgresServer | undefined;
    const dbs: Db[] = [];
    const engines: TaskEngine[] = [];
    let url = '';
    before(async () => {
      if (backend === 'postgres') {
        pg = await startPostgres();
        url = pg.url;
      } else url = `sqlite:${join(mkdtempSync(join(tmpdir(), 'hs-tasks-')), 'manager.db')}`;
      const db = await open();
      await migrate(db);
    });
    after(async () => {
      for (const e of engines) e.close();
      for (const d of dbs) await d.close().catch(() => undefined);
      await pg?.stop();
    });
    async function open(): Promise<Db> {
      const db = await openDatabase(url);
      dbs.push(db);
      return db;
    }
    async function manager(owner: string): Promise<TaskEngine> {
      const e = new TaskEngine(await open(), { owner, ...FAST });
      engines.push(e);
      await e.recover();
      return e;
    }
    /** A task that runs until the test lets it go (or forever: its manager "crashes"). */
    const hang = (e: TaskEngine, name: string) =>
      e.submit(
        { kind: name, objectKind: 'vm', objectId: name, user: 'test' },
        () => new Promise(() => undefined),
      );
    const until = async (e: TaskEngine, id: string, state: string): Promise<void> => {
      for (let i = 0; i < 100 && (await e.get(id)).state !== state; i++) await sleep(20);
      assert.equal((await e.get(id)).state, state);
    };

    test('a second manager starting and sweeping leaves the first one’s running task alone', async () => {
      const a = await manager('host-a:/var/lib/hyperseal');
      const t = await hang(a, 'a-live');
      await until(a, t.id, 'running');
      const b = await manager('host-b:/var/lib/hyperseal');
      await sleep(FAST.staleMs * 2); // many of b's sweeps, while a keeps its heartbeat
      assert.equal((await b.get(t.id)).state, 'running');
      a.close(); // a dies: its heartbeat stops
      await until(b, t.id, 'failed');
      assert.match((await b.get(t.id)).error?.message ?? '', /stopped \(no heartbeat\)/);
    });

    test('a manager restarting closes its own previous process’s tasks at once', async () => {
      const first = await manager('host-c:/srv/hs');
      const t = await hang(first, 'c-interrupted');
      await until(first, t.id, 'running');
      first.close(); // killed
      const again = await manager('host-c:/srv/hs');
      const after = await again.get(t.id);
      assert.equal(after.state, 'failed', 'closed by recover(), not after the stale period');
      assert.match(after.error?.message ?? '', /manager restarted/);
    });
  });
}
