/**
 * Numbered schema migrations, one list for SQLite and PostgreSQL.
 *
 * Rules:
 * - A migration is never edited or renumbered once released; a change is a new one.
 * - Each runs in its own transaction with its row in `schema_migrations`, so it is
 *   applied entirely or not at all (both engines have transactional DDL).
 * - `migrate()` refuses a database that records a migration this code does not have
 *   (a newer Hyperseal ran there) or one whose name differs under the same number.
 * - SQL uses only the types of the convention in db.ts (TEXT, INTEGER, BIGINT, BOOLEAN;
 *   JSON as TEXT; times as BIGINT ms). Where the engines really differ, a migration
 *   gives `{ sqlite, postgres }` instead of one string.
 * - Migration SQL runs without parameters, so it must not contain `$n`.
 */
import { HypersealError } from '../errors.js';
import type { Db } from './db.js';

export interface Migration {
  readonly id: number;
  readonly name: string;
  readonly sql: string | { readonly sqlite: string; readonly postgres: string };
}

/**
 * The manager schema.
 *
 * - Ids are TEXT (UUIDs or our own prefixed ids), made by the application, so a row can
 *   be referred to (in a task, an event) before it is inserted.
 * - `events.seq` is assigned by the appender as the previous seq + 1, not by an
 *   autoincrement: appending to the hash chain needs the previous row (its hash) anyway,
 *   and the primary key then makes a forked chain impossible. Two managers appending at
 *   once cannot both write seq n: one gets HS_ERR_DB_CONFLICT and retries on the new head.
 *   It also keeps one DDL for both engines (no SERIAL vs AUTOINCREMENT).
 * - Secrets are stored only as hashes (`password_hash`, `token_hash`, `id_hash`).
 * - `vms.version` starts at 1 and is bumped by every update (`… WHERE id = $1 AND
 *   version = $2`): optimistic concurrency that works the same on both engines.
 * - `tasks.result` (JSON) is not in the first sketch of the schema: `?sync=true` answers
 *   with a task's result, so the task has to keep it.
 */
const MANAGER_SCHEMA = `
CREATE TABLE hosts (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  address TEXT NOT NULL,
  state TEXT NOT NULL,
  cert_fingerprint TEXT,
  facts TEXT NOT NULL DEFAULT '{}',
  simulated BOOLEAN NOT NULL DEFAULT FALSE,
  joined_at BIGINT NOT NULL,
  revoked_at BIGINT
);

-- host_id NULL: a shared datastore, reachable from every host. Names are unique per host,
-- and among shared datastores (NULLs never collide in a UNIQUE constraint, in either engine).
CREATE TABLE datastores (
  id TEXT PRIMARY KEY,
  host_id TEXT REFERENCES hosts (id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  path TEXT NOT NULL,
  shared BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE UNIQUE INDEX datastores_host_name ON datastores (host_id, name) WHERE host_id IS NOT NULL;
CREATE UNIQUE INDEX datastores_shared_name ON datastores (name) WHERE host_id IS NULL;

CREATE TABLE networks (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL DEFAULT 'port-group' CHECK (kind IN ('port-group'))
);

-- host_id NULL: registered on no host (its host was removed). A host that still has VMs
-- cannot be deleted (HS_ERR_DB_CONSTRAINT).
CREATE TABLE vms (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  host_id TEXT REFERENCES hosts (id),
  state TEXT NOT NULL,
  config TEXT NOT NULL,
  version INTEGER NOT NULL DEFAULT 1,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE INDEX vms_by_host ON vms (host_id, name);

CREATE TABLE tasks (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  object_kind TEXT,
  object_id TEXT,
  user_name TEXT,
  state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
  progress INTEGER NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
  error TEXT,
  result TEXT,
  created_at BIGINT NOT NULL,
  started_at BIGINT,
  finished_at BIGINT
);
CREATE INDEX tasks_by_created ON tasks (created_at);
CREATE INDEX tasks_by_state ON tasks (state, created_at);
CREATE INDEX tasks_by_object ON tasks (object_kind, object_id, created_at);

CREATE TABLE events (
  seq BIGINT PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  time BIGINT NOT NULL,
  type TEXT NOT NULL,
  severity TEXT NOT NULL,
  user_name TEXT,
  source_ip TEXT,
  object_kind TEXT,
  object_id TEXT,
  object_name TEXT,
  changes TEXT NOT NULL DEFAULT '[]',
  result TEXT NOT NULL,
  message TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE INDEX events_by_time ON events (time, seq);
CREATE INDEX events_by_type ON events (type, time);
CREATE INDEX events_by_object ON events (object_kind, object_id, time);

CREATE TABLE users (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  password_hash TEXT,
  disabled BOOLEAN NOT NULL DEFAULT FALSE,
  created_at BIGINT NOT NULL
);

CREATE TABLE roles (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  privileges TEXT NOT NULL DEFAULT '[]',
  builtin BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE user_roles (
  user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  role_id TEXT NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
  PRIMARY KEY (user_id, role_id)
);
CREATE INDEX user_roles_by_role ON user_roles (role_id);

CREATE TABLE api_tokens (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  token_hash TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  last_used_at BIGINT,
  expires_at BIGINT
);
CREATE INDEX api_tokens_by_user ON api_tokens (user_id);

CREATE TABLE sessions (
  id_hash TEXT PRIMARY KEY,
  user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

CREATE TABLE enrollment_tokens (
  token_hash TEXT PRIMARY KEY,
  expires_at BIGINT NOT NULL,
  used_at BIGINT
);
`;

/**
 * Enhanced logging: syslog targets follow the event store by sequence number
 * (`delivered_seq`: the last event durably queued for that target), so a manager that
 * crashes between appending an event and queueing it catches up on the next start.
 */
const LOGGING_SCHEMA = `
CREATE TABLE syslog_targets (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  host TEXT NOT NULL,
  port INTEGER NOT NULL,
  transport TEXT NOT NULL CHECK (transport IN ('udp', 'tcp', 'tls')),
  format TEXT NOT NULL CHECK (format IN ('rfc5424', 'json', 'ocsf')),
  ca_pem TEXT,
  delivered_seq BIGINT NOT NULL,
  created_at BIGINT NOT NULL
);

CREATE TABLE alert_rules (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  rule TEXT NOT NULL,
  enabled BOOLEAN NOT NULL DEFAULT TRUE,
  created_at BIGINT NOT NULL
);
`;

/**
 * VM encryption. Key providers are clusters of KMIP servers (`servers`: JSON list of
 * {host, port}, tried in order). The manager's client private key for a provider is kept
 * only sealed (AES-256-GCM under a key derived from the manager's master key, AAD = the
 * provider id), never in clear; while `client_cert_pem` is NULL the provider waits for
 * its CSR (`csr_pem`) to be signed by the key manager's CA.
 *
 * `vms.crypto` (JSON or NULL): {policyId, providerId, keyId} of an encrypted VM: the
 * provider and KMIP unique identifier of its KEK, never key material. `vms.locked_reason`:
 * why the VM's keys could not be had (NULL when not locked).
 */
const ENCRYPTION_SCHEMA = `
CREATE TABLE key_providers (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  is_default BOOLEAN NOT NULL DEFAULT FALSE,
  servers TEXT NOT NULL,
  ca_pem TEXT NOT NULL,
  client_cert_pem TEXT,
  client_key_sealed TEXT NOT NULL,
  csr_pem TEXT,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX key_providers_one_default ON key_providers (is_default) WHERE is_default;

CREATE TABLE encryption_policies (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  description TEXT NOT NULL DEFAULT '',
  provider_id TEXT REFERENCES key_providers (id),
  builtin BOOLEAN NOT NULL DEFAULT FALSE,
  created_at BIGINT NOT NULL
);

ALTER TABLE vms ADD COLUMN crypto TEXT;
ALTER TABLE vms ADD COLUMN locked_reason TEXT;
`;

/**
 * Secure Boot key sets for VMs: `key_set` is the JSON of a custom key set (PK, KEK, db,
 * dbx as certificates and image hashes with owner GUIDs): certificates only, never a
 * private key. VMs name one in their config (`secureBootKeySet`, the id); none means
 * Microsoft's keys (OVMF's template).
 */
const SECURE_BOOT_SCHEMA = `
CREATE TABLE secureboot_key_sets (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  key_set TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
`;

/**
 * Which manager runs each task, and when it last said so: several managers share one
 * PostgreSQL database, and one that starts (or sweeps) must close only the tasks of a
 * manager that is gone — its own previous process's, or one whose heartbeat went stale —
 * never those another live manager is running.
 */
const TASK_OWNERS_SCHEMA = `
ALTER TABLE tasks ADD COLUMN owner TEXT;
ALTER TABLE tasks ADD COLUMN heartbeat_at BIGINT;
CREATE INDEX tasks_unfinished ON tasks (state, owner);
`;

/**
 * API tokens can be listed and revoked: each keeps the first characters of the token
 * (`hs_abcd…`, as the event of its creation shows them) so an operator can tell them apart.
 */
const TOKEN_HINTS_SCHEMA = `
ALTER TABLE api_tokens ADD COLUMN hint TEXT;
`;

export const MIGRATIONS: readonly Migration[] = [
  { id: 1, name: 'manager schema', sql: MANAGER_SCHEMA },
  { id: 2, name: 'syslog targets and alert rules', sql: LOGGING_SCHEMA },
  { id: 3, name: 'key providers, encryption policies, VM crypto state', sql: ENCRYPTION_SCHEMA },
  { id: 4, name: 'secure boot key sets', sql: SECURE_BOOT_SCHEMA },
  { id: 5, name: 'task owners and heartbeats', sql: TASK_OWNERS_SCHEMA },
  { id: 6, name: 'API token hints', sql: TOKEN_HINTS_SCHEMA },
];

const CREATE_MIGRATIONS_TABLE = `CREATE TABLE IF NOT EXISTS schema_migrations (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  applied_at BIGINT NOT NULL
)`;

/**
 * PostgreSQL: a transaction-scoped advisory lock, so two managers starting at once
 * against one database take turns instead of racing on CREATE TABLE. The key is an
 * arbitrary constant ("HSMIGRAT" in ASCII). On SQLite, BEGIN IMMEDIATE already serializes.
 */
const MIGRATION_LOCK = `SELECT pg_advisory_xact_lock(${0x48534d49})`;

interface AppliedRow {
  id: number;
  name: string;
}

export interface MigrateResult {
  /** Ids applied by this call, in order. */
  applied: number[];
  /** The id of the newest migration now in the database (0 for none). */
  current: number;
}

async function lockAndRead(tx: Db): Promise<AppliedRow[]> {
  if (tx.dialect === 'postgres') await tx.query(MIGRATION_LOCK);
  await tx.exec(CREATE_MIGRATIONS_TABLE);
  return tx.query<AppliedRow>('SELECT id, name FROM schema_migrations ORDER BY id');
}

/** Throws unless every applied migration is one of `known`, under the same name. */
function checkHistory(applied: readonly AppliedRow[], known: readonly Migration[]): void {
  const byId = new Map(known.map((m) => [m.id, m]));
  const newest = known.reduce((max, m) => Math.max(max, m.id), 0);
  for (const row of applied) {
    const mine = byId.get(row.id);
    if (mine === undefined) {
      throw new HypersealError(
        'HS_ERR_DB_SCHEMA',
        `the database has migration ${row.id} ('${row.name}'), newer than this Hyperseal knows ` +
          `(up to ${newest}): a newer version migrated it; run that version (never downgrade)`,
        { databaseMigration: row.id, knownMigration: newest },
      );
    }
    if (mine.name !== row.name) {
      throw new HypersealError(
        'HS_ERR_DB_SCHEMA',
        `the database's migration ${row.id} is '${row.name}', this Hyperseal's is '${mine.name}': ` +
          'the database was migrated by a different build',
        { databaseMigration: row.id },
      );
    }
  }
  const appliedIds = new Set(applied.map((r) => r.id));
  const highestApplied = applied.reduce((max, r) => Math.max(max, r.id), 0);
  const gap = known.find((m) => !appliedIds.has(m.id) && m.id < highestApplied);
  if (gap !== undefined) {
    throw new HypersealError(
      'HS_ERR_DB_SCHEMA',
      `migration ${gap.id} ('${gap.name}') is missing below applied migration ${highestApplied}: ` +
        'the migration history was altered',
      { missingMigration: gap.id },
    );
  }
}

function validate(migrations: readonly Migration[]): Migration[] {
  const sorted = [...migrations].sort((a, b) => a.id - b.id);
  sorted.forEach((m, i) => {
    if (!Number.isSafeInteger(m.id) || m.id < 1 || (i > 0 && sorted[i - 1]?.id === m.id)) {
      throw new HypersealError(
        'HS_ERR_INTERNAL',
        `migration ids must be distinct positive integers (${m.id})`,
      );
    }
  });
  return sorted;
}

/**
 * Brings the schema up to date: applies, in order, each migration the database lacks.
 * Idempotent; safe when several managers call it at once.
 */
export async function migrate(db: Db, migrations: readonly Migration[] = MIGRATIONS): Promise<MigrateResult> {
  const known = validate(migrations);
  // Checked first in a transaction of its own, so a newer database is refused before
  // anything is applied.
  const initial = await db.transaction(async (tx) => {
    const rows = await lockAndRead(tx);
    checkHistory(rows, known);
    return rows;
  });
  const done = new Set(initial.map((r) => r.id));
  const applied: number[] = [];
  for (const m of known) {
    if (done.has(m.id)) continue;
    const ran = await db.transaction(async (tx) => {
      // Read again under the lock: another manager may have applied it meanwhile.
      const rows = await lockAndRead(tx);
      checkHistory(rows, known);
      if (rows.some((r) => r.id === m.id)) return false;
      const sql = typeof m.sql === 'string' ? m.sql : m.sql[tx.dialect];
      try {
        await tx.exec(sql);
      } catch (err) {
        const reason = err instanceof Error ? err.message : String(err);
        throw new HypersealError(
          'HS_ERR_DB_SCHEMA',
          `migration ${m.id} ('${m.name}') failed and was rolled back: ${reason}`,
          { migration: m.id },
          { cause: err },
        );
      }
      await tx.run('INSERT INTO schema_migrations (id, name, applied_at) VALUES ($1, $2, $3)', [
        m.id,
        m.name,
        Date.now(),
      ]);
      return true;
    });
    if (ran) applied.push(m.id);
    done.add(m.id);
  }
  const current = await db.one<{ id: number | null }>('SELECT max(id) AS id FROM schema_migrations');
  return { applied, current: current?.id ?? 0 };
}
