/**
 * Bearer secrets: API tokens, session ids and one-time host enrollment tokens.
 *
 * Each is 32 random bytes, shown once as `<prefix><base64url>` (43 characters after the
 * prefix). The prefix says what kind of secret it is, so a leaked one is recognisable in
 * a log or a repository (secret scanners match `hs_…`) and one kind cannot be mistaken
 * for another. The database keeps only the SHA-256 of the whole string: a plain hash is
 * enough because the secret has 256 bits of entropy (nothing to brute-force, unlike a
 * password), and it lets the store find a token by an indexed equality lookup.
 *
 * Everything here is pure: the caller looks the record up by `hashToken(token)` and
 * passes it (or `undefined`) with the current time.
 */
import crypto from 'node:crypto';
import { HypersealError } from '../errors.js';

export const TOKEN_PREFIX = Object.freeze({
  api: 'hs_',
  session: 'hs_sess_',
  enrollment: 'hs_enroll_',
} as const);
export type TokenKind = keyof typeof TOKEN_PREFIX;

const SECRET_BYTES = 32;
/** base64url of 32 bytes, without padding. */
const SECRET_CHARS = 43;

// Anchored patterns of fixed length: `hs_` + 43 characters can never be a session id
// (`hs_sess_` + 43 is 5 longer) even though base64url may itself begin with "sess_".
const TOKEN_PATTERN: Readonly<Record<TokenKind, RegExp>> = Object.freeze({
  api: new RegExp(`^hs_([A-Za-z0-9_-]{${SECRET_CHARS}})$`),
  session: new RegExp(`^hs_sess_([A-Za-z0-9_-]{${SECRET_CHARS}})$`),
  enrollment: new RegExp(`^hs_enroll_([A-Za-z0-9_-]{${SECRET_CHARS}})$`),
});

declare const tokenHashBrand: unique symbol;
/** SHA-256 of a token, 64 lowercase hex digits: the only form a token is stored in. */
export type TokenHash = string & { readonly [tokenHashBrand]: true };

export interface ParsedToken {
  readonly kind: TokenKind;
  /** The whole token, prefix included, exactly as presented. */
  readonly token: string;
}

export interface IssuedToken {
  readonly kind: TokenKind;
  /** Shown to the user once, never stored and never logged. */
  readonly token: string;
  /** What the database stores and looks tokens up by. */
  readonly hash: TokenHash;
  /**
   * The prefix and first 4 secret characters (`hs_AbCd…`), safe to store and list so a
   * user can tell their tokens apart: 24 of 256 bits, which does not help a guesser.
   */
  readonly hint: string;
}

export function hashToken(token: string): TokenHash {
  return crypto.createHash('sha256').update(token, 'utf8').digest('hex') as TokenHash;
}

export function issueToken(kind: TokenKind): IssuedToken {
  const token = TOKEN_PREFIX[kind] + crypto.randomBytes(SECRET_BYTES).toString('base64url');
  return { kind, token, hash: hashToken(token), hint: `${token.slice(0, TOKEN_PREFIX[kind].length + 4)}…` };
}

const invalid = (why: string): HypersealError => new HypersealError('HS_ERR_AUTH_INVALID_TOKEN', why);

/**
 * Recognises a token by its prefix and exact length. The secret must also be canonical
 * base64url (the last of its 43 characters carries only 4 bits): two spellings of one
 * secret would hash differently, and refusing the odd one keeps "one token, one hash".
 * Error messages never quote the presented string: it may be a real secret.
 */
export function parseToken(s: string): ParsedToken {
  for (const kind of Object.keys(TOKEN_PATTERN) as TokenKind[]) {
    const secret = TOKEN_PATTERN[kind].exec(s)?.[1];
    if (secret === undefined) continue;
    if (Buffer.from(secret, 'base64url').toString('base64url') !== secret) {
      throw invalid(`malformed token: not a token Hyperseal issued`);
    }
    return { kind, token: s };
  }
  throw invalid(
    s.startsWith('hs_')
      ? `malformed token: wrong length or characters (${s.length} characters)`
      : `malformed token: Hyperseal tokens start with "hs_"`,
  );
}

/** Longer than any token we issue plus slack; checked before any other work. */
const MAX_AUTHORIZATION_CHARS = 256;

/**
 * Reads `Authorization: Bearer <token>` (RFC 6750 §2.1). The scheme is case-insensitive
 * (RFC 9110 §11.1); surrounding whitespace is tolerated, nothing else is. No header is
 * HS_ERR_AUTH_REQUIRED (the client did not try); anything malformed is
 * HS_ERR_AUTH_INVALID_TOKEN.
 */
export function parseBearer(header: string | undefined): ParsedToken {
  if (header === undefined || header.trim() === '') {
    throw new HypersealError(
      'HS_ERR_AUTH_REQUIRED',
      'authentication required: send Authorization: Bearer hs_…',
    );
  }
  if (header.length > MAX_AUTHORIZATION_CHARS) throw invalid('Authorization header too long');
  const m = /^\s*([A-Za-z]+) +(\S+)\s*$/.exec(header);
  if (m?.[1] === undefined || m[2] === undefined) {
    throw invalid('malformed Authorization header: expected "Bearer <token>"');
  }
  if (m[1].toLowerCase() !== 'bearer') {
    throw invalid(`unsupported authorization scheme ${JSON.stringify(m[1])}: expected Bearer`);
  }
  return parseToken(m[2]);
}

/** Constant-time comparison of a presented token with a stored hash. */
export function tokenMatchesHash(token: string, storedHash: string): boolean {
  const presented = Buffer.from(hashToken(token), 'hex');
  const stored = /^[0-9a-f]{64}$/.test(storedHash) ? Buffer.from(storedHash, 'hex') : undefined;
  // A malformed stored hash still costs one compare, against itself, and never matches.
  return crypto.timingSafeEqual(presented, stored ?? presented) && stored !== undefined;
}

/* ------------------------------------------------------------------ records */

/** What the store keeps for an API token or a session. */
export interface TokenRecord {
  readonly tokenHash: string;
  readonly createdAt: Date;
  /** `null`: never expires (API tokens only; sessions always expire). */
  readonly expiresAt: Date | null;
}

/** What the store keeps for a one-time token. */
export interface OneTimeTokenRecord extends TokenRecord {
  readonly expiresAt: Date;
  readonly usedAt: Date | null;
}

export interface NewToken<R extends TokenRecord> {
  readonly token: string;
  readonly hint: string;
  readonly record: R;
}

const MINUTE_MS = 60_000;
const DAY_MS = 24 * 60 * MINUTE_MS;

/** Enrollment tokens live an hour unless asked otherwise: long enough to install a host. */
export const DEFAULT_ENROLLMENT_TTL_MS = 60 * MINUTE_MS;
export const MAX_ENROLLMENT_TTL_MS = 7 * DAY_MS;
export const DEFAULT_SESSION_TTL_MS = 12 * 60 * MINUTE_MS;
export const MAX_SESSION_TTL_MS = 7 * DAY_MS;

function expiry(now: Date, ttlMs: number, max: number, what: string): Date {
  if (!Number.isSafeInteger(ttlMs) || ttlMs < MINUTE_MS || ttlMs > max) {
    throw new HypersealError(
      'HS_ERR_INVALID_ARGUMENT',
      `${what} lifetime must be between 1 minute and ${max / DAY_MS} days (got ${ttlMs} ms)`,
    );
  }
  return new Date(now.getTime() + ttlMs);
}

/** An API token; `ttlMs: null` for one that lives until revoked. */
export function newApiToken(now: Date, ttlMs: number | null): NewToken<TokenRecord> {
  const t = issueToken('api');
  // API tokens may live long (years for automation); only a lower bound applies.
  const expiresAt = ttlMs === null ? null : expiry(now, ttlMs, Number.MAX_SAFE_INTEGER, 'API token');
  return { token: t.token, hint: t.hint, record: { tokenHash: t.hash, createdAt: now, expiresAt } };
}

export function newSession(now: Date, ttlMs: number = DEFAULT_SESSION_TTL_MS): NewToken<TokenRecord> {
  const t = issueToken('session');
  const expiresAt = expiry(now, ttlMs, MAX_SESSION_TTL_MS, 'session');
  return { token: t.token, hint: t.hint, record: { tokenHash: t.hash, createdAt: now, expiresAt } };
}

export function newEnrollmentToken(
  now: Date,
  ttlMs: number = DEFAULT_ENROLLMENT_TTL_MS,
): NewToken<OneTimeTokenRecord> {
  const t = issueToken('enrollment');
  const expiresAt = expiry(now, ttlMs, MAX_ENROLLMENT_TTL_MS, 'enrollment token');
  return {
    token: t.token,
    hint: t.hint,
    record: { tokenHash: t.hash, createdAt: now, expiresAt, usedAt: null },
  };
}

/** An ISO time for messages; never throws on an invalid Date, unlike toISOString. */
const iso = (d: Date | null): string =>
  d === null || Number.isNaN(d.getTime()) ? 'an unreadable time' : d.toISOString();

const asParsed = (t: string | ParsedToken): ParsedToken => (typeof t === 'string' ? parseToken(t) : t);

/** Expired at and after `expiresAt`; an unreadable date counts as expired (fail closed). */
function isExpired(expiresAt: Date | null, now: Date): boolean {
  if (expiresAt === null) return false;
  const t = expiresAt.getTime();
  return Number.isNaN(t) || Number.isNaN(now.getTime()) || now.getTime() >= t;
}

/**
 * Checks a presented API token or session id against the record the store found for
 * its hash (`undefined` when none). The hash is compared again, in constant time, so a
 * store that matched loosely (by hint, by prefix) cannot let a wrong token through.
 * Returns the record for the caller's convenience.
 */
export function verifyToken<R extends TokenRecord>(
  token: string | ParsedToken,
  expected: 'api' | 'session',
  record: R | undefined,
  now: Date,
): R {
  const presented = asParsed(token);
  if (presented.kind !== expected) {
    throw invalid(
      `a ${presented.kind} token is not accepted here; expected a${expected === 'api' ? 'n API token' : ' session'}`,
    );
  }
  if (record === undefined || !tokenMatchesHash(presented.token, record.tokenHash)) {
    throw invalid('unknown or revoked token');
  }
  if (isExpired(record.expiresAt, now)) {
    throw new HypersealError(
      'HS_ERR_AUTH_TOKEN_EXPIRED',
      `${expected === 'api' ? 'API token' : 'session'} expired at ${iso(record.expiresAt)}`,
    );
  }
  return record;
}

/**
 * Checks a host enrollment token. A used token is reported as used even when it has
 * also expired: a second use is a security signal (a copied token) worth an event.
 *
 * One-time use cannot be guaranteed by a pure function: after this check the store must
 * mark the record used with an atomic compare-and-set (`… SET used_at = ? WHERE
 * token_hash = ? AND used_at IS NULL`, one row changed or refuse), or two agents racing
 * with one token could both join. `markUsed` gives the record to write.
 */
export function verifyEnrollmentToken<R extends OneTimeTokenRecord>(
  token: string | ParsedToken,
  record: R | undefined,
  now: Date,
): R {
  const parsed = asParsed(token);
  if (parsed.kind !== 'enrollment') {
    throw invalid(`a ${parsed.kind} token is not an enrollment token (those start with hs_enroll_)`);
  }
  if (record === undefined || !tokenMatchesHash(parsed.token, record.tokenHash)) {
    throw invalid('unknown enrollment token');
  }
  if (record.usedAt !== null) {
    throw new HypersealError(
      'HS_ERR_AUTH_TOKEN_USED',
      `enrollment token was already used at ${iso(record.usedAt)}`,
    );
  }
  if (isExpired(record.expiresAt, now)) {
    throw new HypersealError(
      'HS_ERR_AUTH_TOKEN_EXPIRED',
      `enrollment token expired at ${iso(record.expiresAt)}`,
    );
  }
  return record;
}

export function markUsed<R extends OneTimeTokenRecord>(record: R, now: Date): R {
  return { ...record, usedAt: now };
}
