// The agent's validation of migration requests: unknown fields refused, keys exact.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { HypersealError } from '../errors.js';
import {
  parseMigrationIncoming,
  parseMigrationOutgoing,
  parseMigrationResolve,
  parseMigrationSettle,
} from './spec.js';

const spec = {
  id: 'vm1',
  name: 'vm1',
  cpus: 1,
  memoryMiB: 128,
  firmware: 'efi',
  secureBoot: false,
  disks: [],
  nics: [],
  encryption: null,
};
const key = randomBytes(32).toString('base64');
const nonce = randomBytes(8).toString('base64');
const migration = { id: 'mig-1', cipher: 'aes-256-gcm', key, nonce };
const invalid = (fn: () => unknown, re: RegExp): void =>
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof HypersealError);
    assert.equal(err.code, 'HS_ERR_INVALID_ARGUMENT');
    assert.match(err.message, re);
    return true;
  });

test('incoming: key and nonce decoded to buffers; cold optional', () => {
  const r = parseMigrationIncoming({ spec, record: { version: 2 }, migration }, 'vm1');
  assert.equal(r.migration.key?.length, 32);
  assert.equal(r.migration.nonce?.length, 8);
  assert.equal(r.cold, false);
  assert.equal(
    parseMigrationIncoming({ spec, record: {}, migration: { id: 'm', cipher: 'none' }, cold: true }, 'vm1')
      .cold,
    true,
  );
});

test('incoming: unknown fields, short keys, keys with cipher none, other ids are refused', () => {
  invalid(() => parseMigrationIncoming({ spec, record: {}, migration, extra: 1 }, 'vm1'), /unknown field/);
  invalid(
    () => parseMigrationIncoming({ spec, record: {}, migration: { ...migration, tls: true } }, 'vm1'),
    /unknown field/,
  );
  invalid(
    () => parseMigrationIncoming({ spec, record: {}, migration: { ...migration, key: nonce } }, 'vm1'),
    /key must be base64 of 32 bytes/,
  );
  invalid(
    () => parseMigrationIncoming({ spec, record: {}, migration: { id: 'm', cipher: 'none', key } }, 'vm1'),
    /takes no key/,
  );
  invalid(
    () =>
      parseMigrationIncoming({ spec, record: {}, migration: { ...migration, cipher: 'aes-128-gcm' } }, 'vm1'),
    /cipher/,
  );
  invalid(() => parseMigrationIncoming({ spec, record: {}, migration }, 'vm2'), /vm2|id/);
  invalid(() => parseMigrationIncoming({ spec, record: [], migration }, 'vm1'), /record/);
});

test('outgoing: a peer host and port, nothing else', () => {
  const r = parseMigrationOutgoing({ migration, peer: { host: '10.0.0.2', port: 4000 } });
  assert.deepEqual(r.peer, { host: '10.0.0.2', port: 4000 });
  invalid(() => parseMigrationOutgoing({ migration, peer: { host: 'h', port: 0 } }), /port/);
  invalid(() => parseMigrationOutgoing({ migration, peer: { host: 'h', port: 1, tls: 1 } }), /unknown field/);
  invalid(() => parseMigrationOutgoing({ migration, peer: { host: 'h', port: 1 }, cold: 'yes' }), /cold/);
});

test('settle and resolve: a migration id (and for resolve, moved), nothing else', () => {
  assert.deepEqual(parseMigrationSettle({ migrationId: 'mig-1' }), { migrationId: 'mig-1' });
  assert.deepEqual(parseMigrationResolve({ migrationId: 'mig-1', moved: true }), {
    migrationId: 'mig-1',
    moved: true,
  });
  invalid(() => parseMigrationSettle({}), /migrationId/);
  invalid(() => parseMigrationSettle({ migrationId: '../x' }), /migrationId must match/);
  invalid(() => parseMigrationSettle({ migrationId: 'mig-1', moved: true }), /moved/);
  invalid(() => parseMigrationResolve({ migrationId: 'mig-1' }), /moved/);
  invalid(() => parseMigrationResolve({ migrationId: 'mig-1', moved: 'yes' }), /moved must be true or false/);
});
