/**
 * Redaction by type and by name: a password change keeps the fact and loses the values; a
 * Buffer or a Secret anywhere (nested in a list item) is '[redacted]'; identifiers of
 * keys (kekId, keyId) stay visible. Every test also checks the serialized output for the
 * secret itself, so a leak through any field fails it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inspect, format } from 'node:util';
import { diff } from './diff.js';
import { REDACTED, Secret, isSecretName, redactChange, toEventValue } from './redact.js';

function assertNoLeak(value: unknown, ...secrets: string[]): void {
  const text = JSON.stringify(value) + inspect(value, { depth: null });
  for (const s of secrets) assert.ok(!text.includes(s), `secret ${JSON.stringify(s)} leaked: ${text}`);
}

void test('a changed password: the change is reported, both values redacted', () => {
  const changes = diff({ user: 'ops', password: 'hunter2' }, { user: 'ops', password: 'correct horse' });
  assert.deepEqual(changes, [{ path: 'password', from: REDACTED, to: REDACTED }]);
  assertNoLeak(changes, 'hunter2', 'correct horse');
  // Unchanged: nothing, and set from unset shows that (not what) it was set.
  assert.deepEqual(diff({ password: 'a' }, { password: 'a' }), []);
  assert.deepEqual(diff({}, { password: 'a' }), [{ path: 'password', from: null, to: REDACTED }]);
});

void test('a secret-named object is compared whole and never descended into', () => {
  const changes = diff(
    { kms: { address: 'kms:5696', credentials: { username: 'u', password: 'p1' } } },
    { kms: { address: 'kms:5697', credentials: { username: 'u', password: 'p2' } } },
  );
  assert.deepEqual(changes, [
    { path: 'kms.address', from: 'kms:5696', to: 'kms:5697' },
    { path: 'kms.credentials', from: REDACTED, to: REDACTED },
  ]);
  assertNoLeak(changes, 'p1', 'p2');
});

void test('a Buffer is always redacted, whatever its name', () => {
  const dek1 = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
  const dek2 = Buffer.from('ffeeddccbbaa99887766554433221100', 'hex');
  const changes = diff(
    { blob: dek1, enc: { sealed: new Uint8Array(dek1) } },
    { blob: dek2, enc: { sealed: new Uint8Array(dek2) } },
  );
  assert.deepEqual(changes, [
    { path: 'blob', from: REDACTED, to: REDACTED },
    { path: 'enc.sealed', from: REDACTED, to: REDACTED },
  ]);
  assertNoLeak(changes, '0011', 'ffee', 'Buffer', '"data"');
  assert.equal(toEventValue(new DataView(new ArrayBuffer(4))), REDACTED);
  assert.equal(toEventValue(new ArrayBuffer(4)), REDACTED);
});

void test('a Secret nested in a keyed list item: redacted when the item is added and when it changes', () => {
  const schema = { disks: 'id' };
  // 'auth' is not a secret name: only the type protects it.
  const before = {
    disks: [{ id: 'iscsi0', target: 'iqn.2024-05.lab:t0', auth: new Secret('chap-s3cr3t-1') }],
  };
  const after = {
    disks: [
      { id: 'iscsi0', target: 'iqn.2024-05.lab:t0', auth: new Secret('chap-s3cr3t-2') },
      { id: 'iscsi1', target: 'iqn.2024-05.lab:t1', auth: new Secret('chap-s3cr3t-3') },
    ],
  };
  const changes = diff(before, after, schema);
  assert.deepEqual(changes, [
    { path: 'disks[iscsi0].auth', from: REDACTED, to: REDACTED },
    { path: 'disks[iscsi1]', from: null, to: { auth: REDACTED, id: 'iscsi1', target: 'iqn.2024-05.lab:t1' } },
  ]);
  assertNoLeak(changes, 's3cr3t');
});

void test('key ids stay visible next to redacted key material', () => {
  const before = {
    encryption: { kekId: 'kms-a/42', keyId: 'k-1', dek: Buffer.from('aa', 'hex'), provider: 'kms-a' },
  };
  const after = {
    encryption: { kekId: 'kms-a/43', keyId: 'k-2', dek: Buffer.from('bb', 'hex'), provider: 'kms-a' },
  };
  assert.deepEqual(diff(before, after), [
    { path: 'encryption.dek', from: REDACTED, to: REDACTED },
    { path: 'encryption.kekId', from: 'kms-a/42', to: 'kms-a/43' },
    { path: 'encryption.keyId', from: 'k-1', to: 'k-2' },
  ]);
  // And by name alone, with strings (no Buffer to give it away).
  assert.deepEqual(diff({ kek: 'wrapped-1', kekId: 'a' }, { kek: 'wrapped-2', kekId: 'b' }), [
    { path: 'kek', from: REDACTED, to: REDACTED },
    { path: 'kekId', from: 'a', to: 'b' },
  ]);
});

void test('secret names: what is redacted', () => {
  const secret = [
    'password',
    'newPassword',
    'PASSWORD',
    'password_hash',
    'passwordHash',
    'passphrase',
    'kmsPassword2',
    'token',
    'accessToken',
    'csrf-token',
    'secret',
    'clientSecret',
    'sharedSecret',
    'privateKey',
    'private_key',
    'PRIVATE_KEY',
    'privateKeyPem',
    'privatekey',
    'apiKey',
    'x-api-key',
    'key',
    'keys',
    'masterKey',
    'sessionKeys',
    'keyMaterial',
    'key_material',
    'keyValue',
    'keyPair',
    'sshKey',
    // Any other qualifier before a final 'key' errs on the side of secrecy.
    'hostKey',
    'signingKey',
    'licenseKey',
    'odd key',
    'material',
    'dek',
    'DEK',
    'wrappedDek',
    'dekWrapped',
    'kek',
    'kekMaterial',
    'credentials',
    'authorization',
    'Authorization',
    'cookie',
    'pin',
    'otpSeed',
    'psk',
    'hasPassword',
  ];
  for (const n of secret) assert.equal(isSecretName(n), true, `${n} should be secret`);
});

void test('secret names: what stays visible (ids, names, lengths, timestamps, public keys, look-alikes)', () => {
  const visible = [
    'kekId',
    'KEKId',
    'kek_id',
    'keyId',
    'keyIds',
    'dekId',
    'apiKeyId',
    'secretKeyId',
    'tokenId',
    'credentialId',
    'secretName',
    'secretRef',
    'keyName',
    'keyLength',
    'keySize',
    'keyAlgorithm',
    'keyState',
    'keyFormat',
    'keyProvider',
    'keyServer',
    'keyFingerprint',
    'passwordChangedAt',
    'passwordPolicy',
    'passwordEnabled',
    'tokenExpiresAt',
    'tokenTtlMs',
    'privateKeyPath',
    'passwordFile',
    'publicKey',
    'sshPublicKey',
    'publicKeyPem',
    'partitionKey',
    'deviceKey',
    'keyboard',
    'keyboardLayout',
    'monkey',
    'tokenizer',
    'passthrough',
    'bypass',
    'author',
    'pinned',
    'privateNetwork',
    'memoryMiB',
    'network',
    'id',
    '',
  ];
  for (const n of visible) assert.equal(isSecretName(n), false, `${n} should be visible`);
});

void test('booleans stay visible under secret names; numbers (PINs) do not', () => {
  assert.deepEqual(diff({ hasPassword: false }, { hasPassword: true }), [
    { path: 'hasPassword', from: false, to: true },
  ]);
  assert.deepEqual(diff({ pin: 1234 }, { pin: 4321 }), [{ path: 'pin', from: REDACTED, to: REDACTED }]);
});

void test('a PEM private key is redacted by content, under any name', () => {
  const pem = '-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB…\n-----END EC PRIVATE KEY-----\n';
  assert.equal(toEventValue(pem, 'note'), REDACTED);
  assert.equal(toEventValue('-----BEGIN OPENSSH PRIVATE KEY-----'), REDACTED);
  assert.equal(toEventValue('-----BEGIN PGP PRIVATE KEY BLOCK-----'), REDACTED);
  assert.equal(toEventValue('-----BEGIN CERTIFICATE-----'), '-----BEGIN CERTIFICATE-----');
  assert.deepEqual(diff({ notes: ['a'] }, { notes: ['a', pem] }), [
    { path: 'notes', from: ['a'], to: [REDACTED, 'a'] },
  ]);
});

void test('Secret prints as [redacted] everywhere and reveals only on request', () => {
  const s = new Secret('hunter2');
  assert.equal(JSON.stringify({ s }), '{"s":"[redacted]"}');
  assert.equal(String(s), REDACTED);
  assert.equal(`${s}`, REDACTED);
  assert.equal('' + s, REDACTED);
  assert.equal(inspect(s), REDACTED);
  assert.equal(inspect({ nested: { s } }, { depth: null }), '{ nested: { s: [redacted] } }');
  assert.equal(format('%o %O %s %j', s, s, s, s).includes('hunter2'), false);
  assert.deepEqual(Object.keys(s), []);
  assert.deepEqual({ ...s }, {});
  assert.equal(s.reveal(), 'hunter2');
  assert.ok(Object.isFrozen(s));
  const bytes = new Secret(Buffer.from('k'));
  assert.equal(bytes.reveal().toString(), 'k');
});

void test('redactChange: hand-built changes get the same treatment as diff output', () => {
  assert.deepEqual(redactChange({ path: 'users[alice].password', from: 'a', to: 'b' }), {
    path: 'users[alice].password',
    from: REDACTED,
    to: REDACTED,
  });
  // Under a secret-named container, every path is secret (diff never produces these).
  assert.deepEqual(redactChange({ path: 'apiKeys[ci]', from: null, to: 'abc' }), {
    path: 'apiKeys[ci]',
    from: null,
    to: REDACTED,
  });
  assert.deepEqual(redactChange({ path: 'nics[nic1]', from: null, to: { id: 'nic1', psk: 'x' } }), {
    path: 'nics[nic1]',
    from: null,
    to: { id: 'nic1', psk: REDACTED },
  });
  assert.deepEqual(redactChange({ path: 'encryption.kekId', from: 'a', to: 'b' }), {
    path: 'encryption.kekId',
    from: 'a',
    to: 'b',
  });
});
