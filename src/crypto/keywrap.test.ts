import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { unwrapKey, wrapKey } from './keywrap.js';

test('RFC 3394 §4.6 vector: 256-bit key data with a 256-bit KEK', () => {
  const kek = Buffer.from('000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F', 'hex');
  const data = Buffer.from('00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F', 'hex');
  const expected = '28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21';
  const wrapped = wrapKey(kek, data);
  assert.equal(wrapped.toString('hex').toUpperCase(), expected);
  assert.deepEqual(unwrapKey(kek, wrapped), data);
});

test('a wrong KEK or one flipped bit is refused, never a wrong key', () => {
  const kek = randomBytes(32);
  const dek = randomBytes(32);
  const wrapped = wrapKey(kek, dek);
  assert.throws(() => unwrapKey(randomBytes(32), wrapped), { code: 'HS_ERR_KEY_MISMATCH' });
  for (const i of [0, 8, 39]) {
    const bad = Buffer.from(wrapped);
    bad[i] = (bad[i] ?? 0) ^ 1;
    assert.throws(() => unwrapKey(kek, bad), { code: 'HS_ERR_KEY_MISMATCH' });
  }
  assert.throws(() => unwrapKey(kek, wrapped.subarray(0, 20)), { code: 'HS_ERR_KEY_MISMATCH' });
  assert.throws(() => wrapKey(Buffer.alloc(16), dek), { code: 'HS_ERR_KEY_INVALID' });
});
