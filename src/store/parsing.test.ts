// The pure parts of the store: `$n` rewriting for SQLite and database URL handling.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HypersealError } from '../errors.js';
import { parseDatabaseTarget, redactUrl } from './open.js';
import { rewritePlaceholders } from './sqlite.js';

void test('$n placeholders become ? with the parameters reordered; literals, identifiers, comments untouched', () => {
  assert.deepEqual(rewritePlaceholders('SELECT * FROM t WHERE a = $2 AND b = $1 OR c = $2'), {
    sql: 'SELECT * FROM t WHERE a = ? AND b = ? OR c = ?',
    order: [1, 0, 1],
    count: 2,
  });
  assert.deepEqual(rewritePlaceholders(`SELECT '$1', 'it''s $2', "$3", $1 -- $4\n/* $5 */ , $10`), {
    sql: `SELECT '$1', 'it''s $2', "$3", ? -- $4\n/* $5 */ , ?`,
    order: [0, 9],
    count: 10,
  });
  assert.deepEqual(rewritePlaceholders('SELECT 1'), { sql: 'SELECT 1', order: [], count: 0 });
  assert.throws(() => rewritePlaceholders('SELECT ?'), HypersealError);
  assert.throws(() => rewritePlaceholders('SELECT $0'), HypersealError);
});

void test('database targets: paths and sqlite: URLs are SQLite, postgres:// is PostgreSQL', () => {
  assert.deepEqual(parseDatabaseTarget('/var/lib/hyperseal/manager.db'), {
    kind: 'sqlite',
    path: '/var/lib/hyperseal/manager.db',
  });
  assert.deepEqual(parseDatabaseTarget('data/manager.db'), { kind: 'sqlite', path: 'data/manager.db' });
  assert.deepEqual(parseDatabaseTarget('sqlite:data/m.db'), { kind: 'sqlite', path: 'data/m.db' });
  assert.deepEqual(parseDatabaseTarget('sqlite:///abs/m.db'), { kind: 'sqlite', path: '/abs/m.db' });
  assert.deepEqual(parseDatabaseTarget('sqlite::memory:'), { kind: 'sqlite', path: ':memory:' });
  assert.deepEqual(parseDatabaseTarget({ sqlitePath: 'x.db' }), { kind: 'sqlite', path: 'x.db' });
  assert.deepEqual(parseDatabaseTarget('postgresql://hs:p%40ss%2Fw@db:5432/hyperseal?sslmode=require'), {
    kind: 'postgres',
    url: 'postgresql://hs:p%40ss%2Fw@db:5432/hyperseal?sslmode=require',
    display: 'postgresql://hs:***@db:5432/hyperseal?sslmode=require',
    password: 'p@ss/w',
  });
  const socket = parseDatabaseTarget('postgres:///hyperseal?host=/run/postgresql&user=hs&password=pw');
  assert.equal(socket.kind, 'postgres');
  assert.equal(socket.kind === 'postgres' ? socket.password : '', 'pw');
});

void test('redactUrl removes passwords from parseable and unparseable URLs', () => {
  assert.equal(redactUrl('postgres://u:secret@h:5432/d'), 'postgres://u:***@h:5432/d');
  assert.equal(redactUrl('postgres://u@h/d?password=secret&x=1'), 'postgres://u@h/d?password=***&x=1');
  assert.equal(redactUrl('postgres://u:se@c:r/et@h:bad/d'), 'postgres://u:***@h:bad/d');
  assert.equal(redactUrl('postgres://u@h/d'), 'postgres://u@h/d');
  assert.equal(redactUrl('/var/lib/x.db'), '/var/lib/x.db');
});
