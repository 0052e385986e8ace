// The manager's persistence layer: one async interface over SQLite and PostgreSQL, and
// one list of migrations for both. Conventions (placeholders, JSON, booleans, times) are
// in db.ts.
export type { Db, Dialect, RunResult, SqlParam, SqlValue } from './db.js';
export { fromJson, toJson } from './db.js';
export type { DatabaseTarget, OpenOptions } from './open.js';
export { openDatabase, redactUrl } from './open.js';
export type { Migration, MigrateResult } from './migrations.js';
export { MIGRATIONS, migrate } from './migrations.js';
