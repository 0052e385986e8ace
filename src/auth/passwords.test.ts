import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { mock, test } from 'node:test';
import { isHypersealError } from '../errors.js';
import {
  PASSWORD_MIN_CHARS,
  authenticatePassword,
  checkPasswordPolicy,
  hashPassword,
  needsRehash,
  verifyPassword,
} from './passwords.js';

const PASSWORD = 'correct horse battery staple';
const STORED = /^scrypt\$32768\$8\$1\$([A-Za-z0-9_-]{22})\$([A-Za-z0-9_-]{43})$/;

// One hash shared by the tests: each costs ~100 ms of scrypt.
const stored = hashPassword(PASSWORD);

void test('hash format: scrypt$N$r$p$salt$hash with N=2^15, r=8, p=1, 16-byte salt, 32-byte hash', async () => {
  const h = await stored;
  const m = STORED.exec(h);
  assert.ok(m, h);
  assert.equal(Buffer.from(m[1] ?? '', 'base64url').length, 16);
  assert.equal(Buffer.from(m[2] ?? '', 'base64url').length, 32);
  // Really scrypt with those parameters: recompute independently from the salt.
  const expected = crypto.scryptSync(PASSWORD, Buffer.from(m[1] ?? '', 'base64url'), 32, {
    N: 32768,
    r: 8,
    p: 1,
    maxmem: 64 * 1024 * 1024,
  });
  assert.equal(m[2], expected.toString('base64url'));
});

void test('round trip: the right password verifies, a wrong one does not', async () => {
  const h = await stored;
  assert.equal(await verifyPassword(PASSWORD, h), true);
  assert.equal(await verifyPassword(PASSWORD + ' ', h), false);
  assert.equal(await verifyPassword('Correct horse battery staple', h), false);
  assert.equal(await verifyPassword('', h), false);
  await assert.rejects(authenticatePassword('wrong password!', h), {
    code: 'HS_ERR_AUTH_INVALID_CREDENTIALS',
  });
  await authenticatePassword(PASSWORD, h);
});

void test('each hash has its own salt', async () => {
  const again = await hashPassword(PASSWORD);
  assert.notEqual(again, await stored);
  assert.equal(await verifyPassword(PASSWORD, again), true);
});

void test('the stored string contains the password in no encoding', async () => {
  const h = await stored;
  const pw = Buffer.from(PASSWORD, 'utf8');
  for (const enc of ['utf8', 'base64', 'base64url', 'hex'] as const) {
    const needle = pw.toString(enc).replace(/=+$/, '');
    assert.equal(h.includes(needle), false, enc);
    assert.equal(h.toLowerCase().includes(needle.toLowerCase().slice(0, 8)), false, `${enc} prefix`);
  }
});

void test('verification compares with crypto.timingSafeEqual', async (t) => {
  const h = await stored;
  const spy = t.mock.method(crypto, 'timingSafeEqual');
  assert.equal(await verifyPassword(PASSWORD, h), true);
  assert.equal(await verifyPassword('not the password', h), false);
  assert.equal(spy.mock.callCount(), 2);
  for (const call of spy.mock.calls) {
    const [a, b] = call.arguments;
    assert.ok(a instanceof Uint8Array && b instanceof Uint8Array);
    assert.equal(a.length, 32);
    assert.equal(b.length, 32);
  }
});

void test('an unknown user costs the same scrypt run and compare as a real one, and never matches', async (t) => {
  const h = await stored;
  const scryptSpy = t.mock.method(crypto, 'scrypt');
  const compareSpy = t.mock.method(crypto, 'timingSafeEqual');
  assert.equal(await verifyPassword(PASSWORD, undefined), false);
  assert.equal(await verifyPassword(PASSWORD, h), true);
  assert.equal(scryptSpy.mock.callCount(), 2);
  assert.equal(compareSpy.mock.callCount(), 2);
  const [unknownUser, knownUser] = scryptSpy.mock.calls.map((c) => c.arguments);
  assert.ok(unknownUser && knownUser);
  const costOf = (args: readonly unknown[]): unknown => {
    const opts = args[3] as { N: number; r: number; p: number };
    return { keylen: args[2], N: opts.N, r: opts.r, p: opts.p };
  };
  assert.deepEqual(costOf(unknownUser), { keylen: 32, N: 32768, r: 8, p: 1 });
  assert.deepEqual(costOf(unknownUser), costOf(knownUser));
  // The same refusal for both, so the answer does not tell names apart either.
  const refusal = async (s: string | undefined): Promise<unknown> =>
    authenticatePassword('wrong password!', s).then(
      () => assert.fail('accepted'),
      (err: unknown) => err,
    );
  const [a, b] = [await refusal(undefined), await refusal(h)];
  assert.ok(isHypersealError(a, 'HS_ERR_AUTH_INVALID_CREDENTIALS') && isHypersealError(b));
  assert.equal(a.status, 401);
  assert.deepEqual(a.toJSON(), b.toJSON());
  mock.restoreAll();
});

void test('passwords are compared after NFC normalization', async () => {
  const composed = 'caf\u00e9 au lait sans sucre';
  const decomposed = 'cafe\u0301 au lait sans sucre';
  assert.notEqual(composed, decomposed);
  // Both directions: normalizing on only one side (hash or verify) fails one of them.
  assert.equal(await verifyPassword(decomposed, await hashPassword(composed)), true);
  assert.equal(await verifyPassword(composed, await hashPassword(decomposed)), true);
});

void test('a malformed or absurd stored hash is an internal error that does not quote it', async () => {
  const h = await stored;
  const parts = h.split('$');
  const bad = [
    'plain-text-password',
    h.replace('scrypt$', 'bcrypt$'),
    h + '$extra',
    ['scrypt', '32769', ...parts.slice(2)].join('$'), // N not a power of two
    ['scrypt', '1073741824', ...parts.slice(2)].join('$'), // 2^30 · 128 · 8: far too much memory
    ['scrypt', '032768', ...parts.slice(2)].join('$'), // leading zero
    [...parts.slice(0, 4), 'short', parts[5]].join('$'),
    [...parts.slice(0, 5), (parts[5] ?? '') + '!'].join('$'),
  ];
  for (const s of bad) {
    await assert.rejects(verifyPassword(PASSWORD, s), (err: unknown) => {
      assert.ok(isHypersealError(err, 'HS_ERR_INTERNAL'), s);
      assert.equal(err.message.includes(s), false);
      return true;
    });
  }
});

void test('needsRehash is true only for hashes made with other parameters', async () => {
  assert.equal(needsRehash(await stored), false);
  const salt = crypto.randomBytes(16);
  const old = crypto.scryptSync(PASSWORD, salt, 32, { N: 2 ** 14, r: 8, p: 1 });
  const oldStored = `scrypt$16384$8$1$${salt.toString('base64url')}$${old.toString('base64url')}`;
  assert.equal(needsRehash(oldStored), true);
  assert.equal(await verifyPassword(PASSWORD, oldStored), true, 'old parameters still verify');
});

void test('policy: at least 12 characters', () => {
  assert.equal(PASSWORD_MIN_CHARS, 12);
  assert.throws(
    () => checkPasswordPolicy('elevenchars', 'ops@local'),
    (err: unknown) => {
      assert.ok(isHypersealError(err, 'HS_ERR_AUTH_WEAK_PASSWORD'));
      assert.equal(err.status, 400);
      assert.match(err.message, /at least 12 characters \(it has 11\)/);
      assert.equal(err.message.includes('elevenchars'), false, 'the password is not echoed');
      return true;
    },
  );
  assert.doesNotThrow(() => checkPasswordPolicy('twelve chars', 'ops@local'));
  // Counted in characters: 11 emoji are 22 UTF-16 units but still too short.
  assert.throws(() => checkPasswordPolicy('🔑'.repeat(11), 'ops@local'), {
    code: 'HS_ERR_AUTH_WEAK_PASSWORD',
  });
  assert.throws(() => checkPasswordPolicy('x'.repeat(1025), 'ops@local'), /at most 1024/);
});

void test('policy: not the user name, in any case, nor its part before @', () => {
  for (const pw of ['operations@example.local', 'OPERATIONS@EXAMPLE.LOCAL', ' operations@example.local ']) {
    assert.throws(() => checkPasswordPolicy(pw, 'operations@example.local'), /must not be the user name/, pw);
  }
  assert.throws(
    () => checkPasswordPolicy('Administrator', 'administrator@local'),
    /must not be the user name/,
  );
  assert.doesNotThrow(() => checkPasswordPolicy('administrator2', 'administrator@local'));
});

void test('policy: every broken rule is reported at once', () => {
  assert.throws(
    () => checkPasswordPolicy('ops', 'ops'),
    /at least 12 characters.*; it must not be the user name/,
  );
});
