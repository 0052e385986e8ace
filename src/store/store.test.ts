// One behavioural suite, run against SQLite (a temp file) and PostgreSQL (a real server
// from test/support/postgres.ts): migrations, identical values from both, stable error
// codes, transactions, and passwords kept out of messages. The last test compares what
// the two engines returned, value for value.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { inspect } from 'node:util';
import { startPostgres } from '../../test/support/postgres.js';
import type { PostgresServer } from '../../test/support/postgres.js';
import { HypersealError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import type { Db, SqlValue } from './db.js';
import { fromJson, toJson } from './db.js';
import type { Migration } from './migrations.js';
import { MIGRATIONS, migrate } from './migrations.js';

const IDS = MIGRATIONS.map((m) => m.id);
const LATEST = Math.max(...IDS);
import { openDatabase } from './open.js';

const root = mkdtempSync(join(tmpdir(), 'hs-store-'));
after(() => rmSync(root, { recursive: true, force: true }));

/** Asserts that `promise` rejects with a HypersealError of `code`, and returns it. */
async function rejectsWith(promise: Promise<unknown>, code: ErrorCode): Promise<HypersealError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof HypersealError, `expected a HypersealError, got ${inspect(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}, but it resolved`);
}

interface Backend {
  name: 'sqlite' | 'postgres';
  /** A URL of a fresh, empty database. */
  fresh(): Promise<string>;
  /** Only PostgreSQL: the server, for tests that build URLs of their own. */
  server?: PostgresServer;
}

const servers: PostgresServer[] = [];
after(async () => {
  await Promise.all(servers.map((s) => s.stop()));
});

let files = 0;
const sqlite: Backend = {
  name: 'sqlite',
  fresh: () => Promise.resolve(`sqlite:${join(root, `db-${++files}.sqlite`)}`),
};
const postgres: Backend = {
  name: 'postgres',
  fresh: async () => {
    const s = await startPostgres();
    servers.push(s);
    return s.url;
  },
};

/** What each engine returned in the round-trip test, compared at the end. */
const seen = new Map<string, unknown>();

const T0 = 1_700_000_000_123; // ms timestamps: exact in a double, beyond 32 bits

const HOST = {
  id: 'host-1',
  name: 'kvm-01',
  address: '10.0.0.11',
  state: 'connected',
  cert_fingerprint: 'sha256:ab:cd',
  facts: toJson({
    cpus: 32,
    memoryMiB: 262144,
    secureBoot: true,
    cpuFlags: ['aes', 'avx2'],
    os: 'Débian 12 ✓',
  }),
  simulated: true,
  joined_at: T0,
  revoked_at: null,
};

const VM_CONFIG = {
  cpus: 4,
  memoryMiB: 6144,
  firmware: 'efi',
  disks: [{ id: 'disk0', sizeGiB: 40, datastore: 'ds-1', encrypted: true }],
  nics: [{ id: 'nic0', network: 'PCI', mac: '52:54:00:12:34:56' }],
  tags: { env: 'prod', 'quoted "key"': "it's" },
};

function suite(backend: Backend): void {
  describe(backend.name, () => {
    let db: Db;

    before(async () => {
      db = await openDatabase(await backend.fresh());
    });
    after(async () => {
      await db.close();
    });

    test('migrations apply once, are idempotent, and create every table', async () => {
      assert.deepEqual(await migrate(db), { applied: IDS, current: LATEST });
      assert.deepEqual(await migrate(db), { applied: [], current: LATEST });
      assert.deepEqual(
        await db.query('SELECT id, name FROM schema_migrations ORDER BY id'),
        MIGRATIONS.map((m) => ({ id: m.id, name: m.name })),
      );
      const tables = [
        'hosts',
        'datastores',
        'networks',
        'vms',
        'tasks',
        'events',
        'users',
        'roles',
        'user_roles',
        'api_tokens',
        'sessions',
        'enrollment_tokens',
        'syslog_targets',
        'alert_rules',
      ];
      for (const t of tables)
        assert.deepEqual(await db.query(`SELECT count(*) AS n FROM ${t}`), [{ n: 0 }], t);
    });

    test('concurrent migrate() calls apply each migration exactly once', async () => {
      const url = await backend.fresh();
      const a = await openDatabase(url);
      // Two pools on PostgreSQL; on SQLite the same handle (its mutex serializes them):
      // two better-sqlite3 connections in one process would block each other's event loop.
      const b = backend.name === 'postgres' ? await openDatabase(url) : a;
      try {
        const results = await Promise.all([migrate(a), migrate(b), migrate(a), migrate(b)]);
        assert.deepEqual(
          results.flatMap((r) => r.applied).sort((x, y) => x - y),
          IDS,
        );
        assert.ok(results.every((r) => r.current === LATEST));
        assert.deepEqual(
          await b.query('SELECT id FROM schema_migrations ORDER BY id'),
          IDS.map((id) => ({ id })),
        );
      } finally {
        await a.close();
        if (b !== a) await b.close();
      }
    });

    test('a database migrated by a newer version is refused, and a failed migration rolls back', async () => {
      const other = await openDatabase(await backend.fresh());
      try {
        await migrate(other);
        const future: Migration[] = [
          ...MIGRATIONS,
          {
            id: LATEST + 1,
            name: 'from the future',
            sql: 'CREATE TABLE future_things (id TEXT PRIMARY KEY)',
          },
        ];
        assert.deepEqual(await migrate(other, future), { applied: [LATEST + 1], current: LATEST + 1 });
        const err = await rejectsWith(migrate(other), 'HS_ERR_DB_SCHEMA');
        assert.equal(err.status, 500);
        assert.match(
          err.message,
          new RegExp(
            `migration ${LATEST + 1} \\('from the future'\\), newer than this Hyperseal knows \\(up to ${LATEST}\\)`,
          ),
        );
        assert.deepEqual(err.details, { databaseMigration: LATEST + 1, knownMigration: LATEST });

        // Same number, different name: a different build's history.
        const renamed: Migration[] = [
          ...MIGRATIONS,
          { id: LATEST + 1, name: 'something else', sql: 'SELECT 1' },
        ];
        await rejectsWith(migrate(other, renamed), 'HS_ERR_DB_SCHEMA');

        // Migration 3 creates one table, then fails: neither the table nor its row stays.
        const failing: Migration[] = [
          ...future,
          {
            id: LATEST + 2,
            name: 'half',
            sql: 'CREATE TABLE half_done (id TEXT); CREATE TABLE hosts (id TEXT)',
          },
        ];
        const failed = await rejectsWith(migrate(other, failing), 'HS_ERR_DB_SCHEMA');
        assert.match(
          failed.message,
          new RegExp(`migration ${LATEST + 2} \\('half'\\) failed and was rolled back`),
        );
        assert.deepEqual(
          await other.query('SELECT id FROM schema_migrations ORDER BY id'),
          [...IDS, LATEST + 1].map((id) => ({ id })),
        );
        await assert.rejects(other.query('SELECT * FROM half_done'));
      } finally {
        await other.close();
      }
    });

    test('round trips return the same JS values: JSON, booleans, ms timestamps, NULLs, big integers', async () => {
      const got: Record<string, unknown> = {};
      await db.run(
        `INSERT INTO hosts (id, name, address, state, cert_fingerprint, facts, simulated, joined_at, revoked_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
        [
          HOST.id,
          HOST.name,
          HOST.address,
          HOST.state,
          HOST.cert_fingerprint,
          HOST.facts,
          HOST.simulated,
          HOST.joined_at,
          HOST.revoked_at,
        ],
      );
      // Defaults: facts '{}', simulated false, revoked_at NULL.
      await db.run('INSERT INTO hosts (id, name, address, state, joined_at) VALUES ($1, $2, $3, $4, $5)', [
        'host-2',
        'kvm-02',
        '10.0.0.12',
        'disconnected',
        T0 + 1,
      ]);
      got.hosts = await db.query('SELECT * FROM hosts ORDER BY name');
      assert.deepEqual(got.hosts, [
        HOST,
        {
          id: 'host-2',
          name: 'kvm-02',
          address: '10.0.0.12',
          state: 'disconnected',
          cert_fingerprint: null,
          facts: '{}',
          simulated: false,
          joined_at: T0 + 1,
          revoked_at: null,
        },
      ]);
      const facts = fromJson<{ cpuFlags: string[]; os: string }>(
        (got.hosts as { facts: string }[])[0]?.facts ?? null,
      );
      assert.deepEqual(facts?.cpuFlags, ['aes', 'avx2']);
      assert.equal(facts?.os, 'Débian 12 ✓');

      // A VM, and an optimistic-concurrency update: the stale version changes nothing.
      await db.run(
        `INSERT INTO vms (id, name, host_id, state, config, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6)`,
        ['vm-1', 'web-01', HOST.id, 'poweredOff', toJson(VM_CONFIG), T0],
      );
      const update = `UPDATE vms SET config = $1, version = version + 1, updated_at = $2 WHERE id = $3 AND version = $4`;
      const bigger = toJson({ ...VM_CONFIG, memoryMiB: 10240 });
      assert.deepEqual(await db.run(update, [bigger, T0 + 5, 'vm-1', 1]), { changes: 1 });
      assert.deepEqual(await db.run(update, [bigger, T0 + 6, 'vm-1', 1]), { changes: 0 });
      got.vm = await db.one('SELECT * FROM vms WHERE name = $1', ['web-01']);
      assert.deepEqual(got.vm, {
        id: 'vm-1',
        name: 'web-01',
        host_id: HOST.id,
        state: 'poweredOff',
        config: bigger,
        version: 2,
        created_at: T0,
        updated_at: T0 + 5,
        crypto: null,
        locked_reason: null,
      });
      assert.deepEqual(fromJson((got.vm as { config: string }).config), { ...VM_CONFIG, memoryMiB: 10240 });

      // Listing by host through the index, with $n reused and out of order.
      got.byHost = await db.query(
        'SELECT name, version FROM vms WHERE host_id = $2 AND name <> $1 ORDER BY name',
        ['nope', HOST.id],
      );
      assert.deepEqual(got.byHost, [{ name: 'web-01', version: 2 }]);

      // A task: NULL JSON, progress, NULL times; then an update with RETURNING.
      await db.run(
        `INSERT INTO tasks (id, kind, object_kind, object_id, user_name, state, progress, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
        ['task-1', 'vm.powerOn', 'vm', 'vm-1', 'ops@local', 'running', 40, T0],
      );
      got.taskUpdate = await db.query(
        `UPDATE tasks SET state = $1, progress = $2, error = $3, finished_at = $4 WHERE id = $5
         RETURNING id, state, progress, error, result, started_at, finished_at`,
        ['failed', 100, toJson({ code: 'HS_ERR_INTERNAL', message: 'boom' }), T0 + 9, 'task-1'],
      );
      assert.deepEqual(got.taskUpdate, [
        {
          id: 'task-1',
          state: 'failed',
          progress: 100,
          error: '{"code":"HS_ERR_INTERNAL","message":"boom"}',
          result: null,
          started_at: null,
          finished_at: T0 + 9,
        },
      ]);

      // Events: JSON kept byte for byte (the hash chain hashes these bytes); a seq beyond
      // 2^53 comes back as a bigint rather than rounded.
      const changes =
        '[{"path":"memoryMiB","from":6144,"to":10240},{"path":"nic0.network","from":"PCI","to":"Non-PCI"}]';
      for (const [seq, id] of [
        [1, 'ev-1'],
        [2n ** 60n + 1n, 'ev-2'],
      ] as const) {
        await db.run(
          `INSERT INTO events (seq, id, time, type, severity, user_name, source_ip, object_kind, object_id,
             object_name, changes, result, message, prev_hash, hash)
           VALUES ($1, $2, $3, 'vm.reconfigured', 'info', $4, $5, 'vm', 'vm-1', 'web-01', $6, 'success', $7, $8, $9)`,
          [
            seq,
            id,
            T0,
            'ops@local',
            '192.0.2.7',
            changes,
            'ops@local reconfigured VM web-01',
            'h0',
            `h-${id}`,
          ],
        );
      }
      got.events = await db.query('SELECT seq, id, time, changes, prev_hash FROM events ORDER BY seq');
      assert.deepEqual(got.events, [
        { seq: 1, id: 'ev-1', time: T0, changes, prev_hash: 'h0' },
        { seq: 2n ** 60n + 1n, id: 'ev-2', time: T0, changes, prev_hash: 'h0' },
      ]);
      got.lastSeq = await db.one('SELECT max(seq) AS seq FROM events WHERE seq < $1', [1000]);
      assert.deepEqual(got.lastSeq, { seq: 1 });

      // Users, roles and the join table; booleans both ways; bytes of a hash as TEXT.
      await db.run(
        'INSERT INTO users (id, name, password_hash, disabled, created_at) VALUES ($1, $2, $3, $4, $5)',
        ['u-1', 'ops@local', '$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA', false, T0],
      );
      await db.run('INSERT INTO roles (id, name, privileges, builtin) VALUES ($1, $2, $3, $4)', [
        'r-1',
        'Administrator',
        toJson(['vm.create', 'crypto.encrypt']),
        true,
      ]);
      await db.run('INSERT INTO user_roles (user_id, role_id) VALUES ($1, $2)', ['u-1', 'r-1']);
      got.userRoles = await db.query(
        `SELECT u.name AS user_name, u.disabled, r.name AS role_name, r.privileges, r.builtin
         FROM users u JOIN user_roles ur ON ur.user_id = u.id JOIN roles r ON r.id = ur.role_id`,
      );
      assert.deepEqual(got.userRoles, [
        {
          user_name: 'ops@local',
          disabled: false,
          role_name: 'Administrator',
          privileges: '["vm.create","crypto.encrypt"]',
          builtin: true,
        },
      ]);

      // Upsert, the same on both engines.
      const upsert = `INSERT INTO networks (id, name) VALUES ($1, $2)
        ON CONFLICT (name) DO UPDATE SET id = networks.id RETURNING id, name, kind`;
      got.upsert = [await db.query(upsert, ['net-1', 'PCI']), await db.query(upsert, ['net-2', 'PCI'])];
      assert.deepEqual(got.upsert, [
        [{ id: 'net-1', name: 'PCI', kind: 'port-group' }],
        [{ id: 'net-1', name: 'PCI', kind: 'port-group' }],
      ]);

      // Deletes count rows; a missing row is undefined, not null.
      assert.deepEqual(await db.run('DELETE FROM tasks WHERE id = $1', ['task-1']), { changes: 1 });
      assert.equal(await db.one('SELECT id FROM tasks WHERE id = $1', ['task-1']), undefined);
      got.counts = await db.query('SELECT count(*) AS n FROM hosts WHERE simulated = $1', [true]);
      assert.deepEqual(got.counts, [{ n: 1 }]);
      seen.set(backend.name, got);
    });

    test('unique violations are HS_ERR_DB_CONFLICT (409) with the same details; other rules HS_ERR_DB_CONSTRAINT', async () => {
      const dup = await rejectsWith(
        db.run('INSERT INTO hosts (id, name, address, state, joined_at) VALUES ($1, $2, $3, $4, $5)', [
          'host-9',
          HOST.name,
          'x',
          'y',
          T0,
        ]),
        'HS_ERR_DB_CONFLICT',
      );
      assert.equal(dup.status, 409);
      assert.deepEqual(dup.details, { table: 'hosts', columns: ['name'] });
      assert.equal(dup.message, 'hosts already has a row with this name');

      const pk = await rejectsWith(
        db.run('INSERT INTO networks (id, name) VALUES ($1, $2)', ['net-1', 'other']),
        'HS_ERR_DB_CONFLICT',
      );
      assert.deepEqual(pk.details, { table: 'networks', columns: ['id'] });

      // A two-column partial unique index.
      const ds = 'INSERT INTO datastores (id, host_id, name, path, shared) VALUES ($1, $2, $3, $4, $5)';
      await db.run(ds, ['ds-1', HOST.id, 'local', '/var/lib/hyperseal', false]);
      await db.run(ds, ['ds-2', 'host-2', 'local', '/var/lib/hyperseal', false]);
      const perHost = await rejectsWith(
        db.run(ds, ['ds-3', HOST.id, 'local', '/srv', false]),
        'HS_ERR_DB_CONFLICT',
      );
      assert.deepEqual(perHost.details, { table: 'datastores', columns: ['host_id', 'name'] });

      // A missing referenced row, a check, a NOT NULL: the same code on both engines.
      await rejectsWith(
        db.run(
          'INSERT INTO vms (id, name, host_id, state, config, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)',
          ['vm-9', 'orphan', 'no-such-host', 'poweredOff', '{}', T0],
        ),
        'HS_ERR_DB_CONSTRAINT',
      );
      await rejectsWith(db.run('DELETE FROM hosts WHERE id = $1', [HOST.id]), 'HS_ERR_DB_CONSTRAINT');
      await rejectsWith(
        db.run('INSERT INTO tasks (id, kind, progress, created_at) VALUES ($1, $2, $3, $4)', [
          't-9',
          'x',
          101,
          T0,
        ]),
        'HS_ERR_DB_CONSTRAINT',
      );
      await rejectsWith(
        db.run('INSERT INTO users (id, name, created_at) VALUES ($1, $2, $3)', ['u-9', null, T0]),
        'HS_ERR_DB_CONSTRAINT',
      );
    });

    test('a transaction commits its result, and rolls back entirely when its callback throws', async () => {
      const insert = 'INSERT INTO networks (id, name) VALUES ($1, $2)';
      const count = async (): Promise<number> =>
        (await db.one<{ n: number }>('SELECT count(*) AS n FROM networks WHERE id LIKE $1', ['tx-%']))?.n ??
        -1;

      assert.equal(
        await db.transaction(async (tx) => {
          await tx.run(insert, ['tx-1', 'tx one']);
          return 'done';
        }),
        'done',
      );
      assert.equal(await count(), 1);

      const boom = new Error('boom');
      await assert.rejects(
        db.transaction(async (tx) => {
          await tx.run(insert, ['tx-2', 'tx two']);
          assert.equal(
            (await tx.one<{ n: number }>('SELECT count(*) AS n FROM networks WHERE id = $1', ['tx-2']))?.n,
            1,
          );
          throw boom;
        }),
        (err) => err === boom,
      );
      assert.equal(await count(), 1);

      // A failing statement fails the transaction, even if the callback swallows it:
      // later statements are refused, and the original error surfaces; nothing commits.
      await rejectsWith(
        db.transaction(async (tx) => {
          await tx.run(insert, ['tx-3', 'tx three']);
          await tx.run(insert, ['tx-4', 'tx one']).catch(() => undefined);
          await rejectsWith(tx.run(insert, ['tx-5', 'tx five']), 'HS_ERR_INTERNAL');
        }),
        'HS_ERR_DB_CONFLICT',
      );
      assert.equal(await count(), 1);

      // A nested transaction is a savepoint: its failure undoes only its own work.
      await db.transaction(async (tx) => {
        await tx.run(insert, ['tx-6', 'tx six']);
        await rejectsWith(
          tx.transaction(async (inner) => {
            await inner.run(insert, ['tx-7', 'tx seven']);
            await inner.run(insert, ['tx-8', 'tx one']);
          }),
          'HS_ERR_DB_CONFLICT',
        );
        await tx.run(insert, ['tx-9', 'tx nine']);
      });
      assert.deepEqual(await db.query('SELECT id FROM networks WHERE id LIKE $1 ORDER BY id', ['tx-%']), [
        { id: 'tx-1' },
        { id: 'tx-6' },
        { id: 'tx-9' },
      ]);

      // The outer handle inside its own transaction is refused (on SQLite it would wait
      // for the transaction it is part of), and a finished transaction's handle is dead.
      let leaked: Db | undefined;
      await rejectsWith(
        db.transaction(async (tx) => {
          leaked = tx;
          await db.query('SELECT 1 AS one');
        }),
        'HS_ERR_INTERNAL',
      );
      assert.ok(leaked !== undefined);
      await rejectsWith(leaked.query('SELECT 1 AS one'), 'HS_ERR_INTERNAL');
    });

    test('concurrent transactions do not interleave, and all commit', async () => {
      const insert = 'INSERT INTO networks (id, name) VALUES ($1, $2)';
      // A sleeps mid-transaction and then fails; B runs meanwhile. On one SQLite
      // connection without the mutex, B's insert would land inside A's transaction and be
      // rolled back with it.
      const a = db.transaction(async (tx) => {
        await tx.run(insert, ['cc-a', 'cc a']);
        await delay(50);
        throw new Error('A fails');
      });
      const b = db.transaction(async (tx) => {
        await tx.run(insert, ['cc-b', 'cc b']);
        return 'B';
      });
      const outside = db.run(insert, ['cc-c', 'cc c']);
      const [ra, rb, rc] = await Promise.allSettled([a, b, outside]);
      assert.equal(ra.status, 'rejected');
      assert.deepEqual(rb, { status: 'fulfilled', value: 'B' });
      assert.equal(rc.status, 'fulfilled');
      assert.deepEqual(await db.query('SELECT id FROM networks WHERE id LIKE $1 ORDER BY id', ['cc-%']), [
        { id: 'cc-b' },
        { id: 'cc-c' },
      ]);

      // Ten transactions at once, each bumping the VM's version and logging its steps.
      const before =
        (await db.one<{ version: number }>('SELECT version FROM vms WHERE id = $1', ['vm-1']))?.version ?? 0;
      const log: string[] = [];
      await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          db.transaction(async (tx) => {
            log.push(`${i}:begin`);
            await delay(2);
            await tx.run('UPDATE vms SET version = version + 1 WHERE id = $1', ['vm-1']);
            await delay(2);
            log.push(`${i}:end`);
          }),
        ),
      );
      assert.deepEqual(await db.one('SELECT version FROM vms WHERE id = $1', ['vm-1']), {
        version: before + 10,
      });
      if (backend.name === 'sqlite') {
        // One at a time, in arrival order.
        assert.deepEqual(log, Array.from({ length: 10 }, (_, i) => [`${i}:begin`, `${i}:end`]).flat());
      }
    });

    test('a value with no stable form in both engines is refused', async () => {
      const bad = [undefined, { a: 1 }, ['x'], new Date(T0)] as unknown as SqlValue[];
      for (const value of bad) {
        await rejectsWith(db.query('SELECT id FROM hosts WHERE name = $1', [value]), 'HS_ERR_INTERNAL');
      }
      assert.throws(() => toJson(undefined), HypersealError);
    });

    if (backend.name === 'postgres') {
      test('PostgreSQL: the password in the URL never appears in an error', async () => {
        const good = new URL(await backend.fresh());
        const realPassword = decodeURIComponent(good.password);
        const wrong = 'Wr0ng:P@ss/w%rd-7f3a';
        const leaks = (err: HypersealError, secrets: string[]): void => {
          const shown = [
            err.message,
            String(err),
            JSON.stringify(err.toJSON()),
            inspect(err, { depth: 10 }),
          ].join('\n');
          for (const s of secrets) {
            assert.ok(!shown.includes(s), `error shows the password ${s}: ${shown}`);
            assert.ok(!shown.includes(encodeURIComponent(s)), `error shows the encoded password: ${shown}`);
          }
        };

        const wrongUrl = new URL(good.href);
        wrongUrl.password = encodeURIComponent(wrong);
        const refused = await rejectsWith(openDatabase(wrongUrl.href), 'HS_ERR_DB_UNAVAILABLE');
        assert.equal(refused.status, 503);
        assert.match(refused.message, /password authentication failed/);
        assert.match(refused.message, /:\*\*\*@127\.0\.0\.1/);
        leaks(refused, [wrong]);

        // Right password, no such database: the message names the database, not the password.
        const noDb = new URL(good.href);
        noDb.pathname = '/no_such_database';
        const missing = await rejectsWith(openDatabase(noDb.href), 'HS_ERR_DB_UNAVAILABLE');
        assert.match(missing.message, /no_such_database/);
        leaks(missing, [realPassword]);

        // Nothing listening there.
        const closed = new URL(good.href);
        closed.port = '1';
        leaks(
          await rejectsWith(openDatabase(closed.href, { connectTimeoutMs: 2000 }), 'HS_ERR_DB_UNAVAILABLE'),
          [realPassword],
        );

        // The password as a query parameter.
        const query = new URL(good.href);
        query.password = '';
        query.searchParams.set('password', wrong);
        leaks(await rejectsWith(openDatabase(query.href), 'HS_ERR_DB_UNAVAILABLE'), [wrong]);
      });
    }

    if (backend.name === 'sqlite') {
      test('SQLite: WAL, synchronous=NORMAL plus our own WAL flush, foreign keys on; unusable files are HS_ERR_DB_UNAVAILABLE', async () => {
        assert.deepEqual(await db.query('PRAGMA journal_mode'), [{ journal_mode: 'wal' }]);
        assert.deepEqual(await db.query('PRAGMA synchronous'), [{ synchronous: 1 }]);
        assert.deepEqual(await db.query('PRAGMA foreign_keys'), [{ foreign_keys: 1 }]);
        await rejectsWith(openDatabase(join(root, 'no', 'such', 'dir', 'x.db')), 'HS_ERR_DB_UNAVAILABLE');
        const junk = join(root, 'junk.db');
        writeFileSync(junk, 'this is not a database, just some text that is long enough'.repeat(20));
        await rejectsWith(openDatabase({ sqlitePath: junk }), 'HS_ERR_DB_UNAVAILABLE');
      });
    }
  });
}

suite(sqlite);
suite(postgres);

test('both engines returned identical rows', () => {
  assert.ok(seen.has('sqlite') && seen.has('postgres'), 'both round-trip tests ran');
  assert.deepStrictEqual(seen.get('postgres'), seen.get('sqlite'));
});

test('bad URLs are HS_ERR_DB_URL and never show the password', async () => {
  const secret = 'S3cr3t-Hunter2';
  for (const url of [
    `postgres://admin:${secret}@db.example:notaport/hyperseal`,
    `mysql://admin:${secret}@db.example/hyperseal`,
    `postgres://admin:${secret}@db.example:5432`,
    `postgres://admin:${secret}%zz@db.example:5432/hyperseal`,
    `postgres:///hyperseal?password=${secret}`,
    '',
    'sqlite:',
  ]) {
    const err = await rejectsWith(openDatabase(url), 'HS_ERR_DB_URL');
    assert.equal(err.status, 500);
    const shown = [err.message, inspect(err, { depth: 10 }), JSON.stringify(err)].join('\n');
    assert.ok(!shown.includes(secret), `${url}: ${shown}`);
  }
});
