import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { test } from 'node:test';
import { isHypersealError } from '../errors.js';
import type { OneTimeTokenRecord, TokenRecord } from './tokens.js';
import {
  hashToken,
  issueToken,
  markUsed,
  newApiToken,
  newEnrollmentToken,
  newSession,
  parseBearer,
  parseToken,
  tokenMatchesHash,
  verifyEnrollmentToken,
  verifyToken,
} from './tokens.js';

const NOW = new Date('2025-06-01T12:00:00.000Z');
const at = (ms: number): Date => new Date(NOW.getTime() + ms);
const HOUR = 3_600_000;

/** Asserts a HypersealError with `code` whose message does not leak `secret`. */
function expectCode(fn: () => unknown, code: string, secret?: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isHypersealError(err), String(err));
    assert.equal(err.code, code, err.message);
    if (secret !== undefined && secret.length > 0) assert.equal(err.message.includes(secret), false);
    return true;
  });
}

void test('token format: prefix per kind, then 43 base64url characters of 32 random bytes', () => {
  const cases = [
    ['api', /^hs_([A-Za-z0-9_-]{43})$/],
    ['session', /^hs_sess_([A-Za-z0-9_-]{43})$/],
    ['enrollment', /^hs_enroll_([A-Za-z0-9_-]{43})$/],
  ] as const;
  for (const [kind, pattern] of cases) {
    const t = issueToken(kind);
    const secret = pattern.exec(t.token)?.[1];
    assert.ok(secret !== undefined, t.token);
    assert.equal(Buffer.from(secret, 'base64url').length, 32);
    assert.equal(parseToken(t.token).kind, kind);
    assert.notEqual(issueToken(kind).token, t.token);
  }
});

void test('tokens are stored as SHA-256 hex of the whole string, and never in clear', () => {
  // sha256sum of the literal string (printf 'hs_AAA…' | sha256sum).
  assert.equal(
    hashToken('hs_' + 'A'.repeat(43)),
    '19d3ae3b7d6afaa86283c0ef6df78f8824f5ae38c101e23a8c987ffb0e0b416b',
  );
  const issued = newApiToken(NOW, null);
  assert.equal(issued.record.tokenHash, hashToken(issued.token));
  assert.match(issued.record.tokenHash, /^[0-9a-f]{64}$/);
  const secret = issued.token.slice('hs_'.length);
  const storedForm = JSON.stringify(issued.record) + issued.hint;
  assert.equal(storedForm.includes(secret), false);
  assert.equal(storedForm.includes(secret.slice(0, 12)), false);
  assert.equal(issued.hint, `${issued.token.slice(0, 7)}…`);
});

void test('parseBearer accepts "Bearer <token>" with any case of the scheme', () => {
  const { token } = issueToken('api');
  assert.deepEqual(parseBearer(`Bearer ${token}`), { kind: 'api', token });
  assert.deepEqual(parseBearer(`bearer ${token}`), { kind: 'api', token });
  assert.deepEqual(parseBearer(` BEARER  ${token} `), { kind: 'api', token });
  const session = issueToken('session').token;
  assert.equal(parseBearer(`Bearer ${session}`).kind, 'session');
});

void test('parseBearer: no header is 401 REQUIRED; anything malformed is INVALID_TOKEN, without echoing it', () => {
  const { token } = issueToken('api');
  expectCode(() => parseBearer(undefined), 'HS_ERR_AUTH_REQUIRED');
  expectCode(() => parseBearer(''), 'HS_ERR_AUTH_REQUIRED');
  const secret = token.slice(3);
  const malformed = [
    `Basic ${Buffer.from('ops:pw').toString('base64')}`,
    'Bearer',
    `Bearer${token}`,
    `Bearer ${token} extra`,
    `Bearer ${token.slice(0, -1)}`, // one character short
    `Bearer ${token}A`, // one too many
    `Bearer ${secret}`, // no prefix
    `Bearer hs_xyz_${secret}`, // unknown kind
    `Bearer ${token.slice(0, 10)}+${token.slice(11)}`, // not base64url
    `Bearer ${'x'.repeat(300)}`,
  ];
  for (const h of malformed)
    expectCode(() => parseBearer(h), 'HS_ERR_AUTH_INVALID_TOKEN', secret.slice(0, 20));
  try {
    parseBearer('Bearer nope');
  } catch (err) {
    assert.ok(isHypersealError(err));
    assert.equal(err.status, 401);
  }
});

void test('a non-canonical spelling of a secret is refused (one token, one hash)', () => {
  // 32 zero bytes encode as 42 'A' and a final 'A'; 'B' decodes to the same bytes.
  const canonical = 'hs_' + 'A'.repeat(43);
  const alias = 'hs_' + 'A'.repeat(42) + 'B';
  assert.deepEqual(Buffer.from(alias.slice(3), 'base64url'), Buffer.from(canonical.slice(3), 'base64url'));
  assert.equal(parseToken(canonical).kind, 'api');
  expectCode(() => parseToken(alias), 'HS_ERR_AUTH_INVALID_TOKEN');
});

void test('verifyToken: known and unexpired passes; unknown, mismatched or of another kind is INVALID', () => {
  const a = newApiToken(NOW, HOUR);
  assert.equal(verifyToken(a.token, 'api', a.record, at(1)), a.record);
  assert.equal(verifyToken(parseBearer(`Bearer ${a.token}`), 'api', a.record, at(1)), a.record);
  expectCode(() => verifyToken(a.token, 'api', undefined, NOW), 'HS_ERR_AUTH_INVALID_TOKEN', a.token);
  const other = newApiToken(NOW, HOUR);
  expectCode(() => verifyToken(a.token, 'api', other.record, NOW), 'HS_ERR_AUTH_INVALID_TOKEN', a.token);
  const s = newSession(NOW);
  expectCode(() => verifyToken(s.token, 'api', s.record, NOW), 'HS_ERR_AUTH_INVALID_TOKEN');
  expectCode(() => verifyToken(a.token, 'session', a.record, NOW), 'HS_ERR_AUTH_INVALID_TOKEN');
  assert.equal(verifyToken(s.token, 'session', s.record, at(HOUR)), s.record);
});

void test('verifyToken: expired from expiresAt on; no expiry never expires; unreadable dates fail closed', () => {
  const a = newApiToken(NOW, HOUR);
  assert.equal(a.record.expiresAt?.getTime(), NOW.getTime() + HOUR);
  assert.doesNotThrow(() => verifyToken(a.token, 'api', a.record, at(HOUR - 1)));
  expectCode(() => verifyToken(a.token, 'api', a.record, at(HOUR)), 'HS_ERR_AUTH_TOKEN_EXPIRED');
  expectCode(() => verifyToken(a.token, 'api', a.record, at(100 * HOUR)), 'HS_ERR_AUTH_TOKEN_EXPIRED');
  const forever = newApiToken(NOW, null);
  assert.doesNotThrow(() => verifyToken(forever.token, 'api', forever.record, at(10 * 365 * 24 * HOUR)));
  const broken: TokenRecord = { ...a.record, expiresAt: new Date(Number.NaN) };
  expectCode(() => verifyToken(a.token, 'api', broken, NOW), 'HS_ERR_AUTH_TOKEN_EXPIRED');
  const s = newSession(NOW);
  assert.equal(s.record.expiresAt?.getTime(), NOW.getTime() + 12 * HOUR);
  expectCode(() => verifyToken(s.token, 'session', s.record, at(12 * HOUR)), 'HS_ERR_AUTH_TOKEN_EXPIRED');
});

void test('enrollment: one hour by default, once only; used wins over expired', () => {
  const e = newEnrollmentToken(NOW);
  assert.match(e.token, /^hs_enroll_/);
  assert.equal(e.record.usedAt, null);
  assert.equal(e.record.expiresAt.getTime(), NOW.getTime() + HOUR);
  assert.equal(verifyEnrollmentToken(e.token, e.record, at(HOUR - 1)), e.record);

  const used: OneTimeTokenRecord = markUsed(e.record, at(5));
  assert.equal(e.record.usedAt, null, 'markUsed does not mutate the record it was given');
  assert.deepEqual(used.usedAt, at(5));
  expectCode(() => verifyEnrollmentToken(e.token, used, at(10)), 'HS_ERR_AUTH_TOKEN_USED');
  expectCode(() => verifyEnrollmentToken(e.token, used, at(2 * HOUR)), 'HS_ERR_AUTH_TOKEN_USED');
  expectCode(() => verifyEnrollmentToken(e.token, e.record, at(HOUR)), 'HS_ERR_AUTH_TOKEN_EXPIRED');
  expectCode(() => verifyEnrollmentToken(e.token, undefined, NOW), 'HS_ERR_AUTH_INVALID_TOKEN', e.token);
  expectCode(
    () => verifyEnrollmentToken(e.token, newEnrollmentToken(NOW).record, NOW),
    'HS_ERR_AUTH_INVALID_TOKEN',
  );
  const api = newApiToken(NOW, null);
  expectCode(
    () => verifyEnrollmentToken(api.token, { ...e.record, tokenHash: api.record.tokenHash }, NOW),
    'HS_ERR_AUTH_INVALID_TOKEN',
  );
  for (const code of ['HS_ERR_AUTH_TOKEN_USED', 'HS_ERR_AUTH_TOKEN_EXPIRED'] as const) {
    try {
      verifyEnrollmentToken(e.token, code === 'HS_ERR_AUTH_TOKEN_USED' ? used : e.record, at(2 * HOUR));
      assert.fail('accepted');
    } catch (err) {
      assert.ok(isHypersealError(err, code));
      assert.equal(err.status, 401);
    }
  }
});

void test('lifetimes out of range are refused', () => {
  expectCode(() => newEnrollmentToken(NOW, 0), 'HS_ERR_INVALID_ARGUMENT');
  expectCode(() => newEnrollmentToken(NOW, 8 * 24 * HOUR), 'HS_ERR_INVALID_ARGUMENT');
  expectCode(() => newEnrollmentToken(NOW, Number.NaN), 'HS_ERR_INVALID_ARGUMENT');
  expectCode(() => newSession(NOW, 30 * 24 * HOUR), 'HS_ERR_INVALID_ARGUMENT');
  expectCode(() => newApiToken(NOW, -1), 'HS_ERR_INVALID_ARGUMENT');
  assert.equal(
    newEnrollmentToken(NOW, 7 * 24 * HOUR).record.expiresAt.getTime(),
    NOW.getTime() + 7 * 24 * HOUR,
  );
});

void test('hash comparison is constant-time and a malformed stored hash never matches', (t) => {
  const a = newApiToken(NOW, null);
  const spy = t.mock.method(crypto, 'timingSafeEqual');
  assert.equal(tokenMatchesHash(a.token, a.record.tokenHash), true);
  assert.equal(tokenMatchesHash(a.token, a.record.tokenHash.toUpperCase()), false);
  assert.equal(tokenMatchesHash(a.token, ''), false);
  assert.equal(tokenMatchesHash(issueToken('api').token, a.record.tokenHash), false);
  assert.equal(spy.mock.callCount(), 4);
});
