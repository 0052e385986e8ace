/**
 * Password hashing for local users, with Node's scrypt: memory-hard, so guessing a
 * stolen hash costs memory as well as time, which GPUs and ASICs cannot cheapen much.
 *
 * Stored form, self-describing so that parameters can be raised later without breaking
 * existing hashes (`needsRehash` tells the login path to re-hash):
 *
 *     scrypt$<N>$<r>$<p>$<salt, base64url>$<hash, base64url>
 */
// The default import, called as `crypto.scrypt` / `crypto.timingSafeEqual`, looks the
// functions up at call time: the tests wrap them with node:test's mock.method to prove
// that the compare is constant-time and that an unknown user costs a full scrypt run.
import crypto from 'node:crypto';
import { HypersealError } from '../errors.js';

/** Current parameters: N=2^15, r=8 needs 32 MiB and ~90 ms per hash on these machines. */
export const SCRYPT_PARAMS = Object.freeze({ N: 2 ** 15, r: 8, p: 1, saltBytes: 16, keyBytes: 32 });

export const PASSWORD_MIN_CHARS = 12;
/** Caps what a login request can make scrypt's first pass read; no person needs more. */
export const PASSWORD_MAX_CHARS = 1024;

// Bounds on parameters read back from a stored hash: a tampered or corrupt row must not
// make one login allocate gigabytes or spin for minutes.
const MAX_SCRYPT_MEMORY_BYTES = 256 * 1024 * 1024;
const MAX_P = 16;

interface ScryptParams {
  readonly N: number;
  readonly r: number;
  readonly p: number;
}

interface ParsedHash extends ScryptParams {
  readonly salt: Buffer;
  readonly hash: Buffer;
}

/** scrypt needs 128·N·r bytes; Node refuses beyond `maxmem` (32 MiB by default, too tight). */
const memoryFor = ({ N, r }: ScryptParams): number => 128 * N * r;

function scrypt(password: string, salt: Buffer, keyBytes: number, params: ScryptParams): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    crypto.scrypt(
      password,
      salt,
      keyBytes,
      { N: params.N, r: params.r, p: params.p, maxmem: memoryFor(params) + 1024 * 1024 },
      (err, key) => (err === null ? resolve(key) : reject(err)),
    );
  });
}

/**
 * NFC first: the same password typed on two systems may arrive as different code point
 * sequences (é as one code point or e + combining accent) and must still match.
 */
const normalize = (password: string): string => password.normalize('NFC');

export async function hashPassword(password: string): Promise<string> {
  const { N, r, p, saltBytes, keyBytes } = SCRYPT_PARAMS;
  const salt = crypto.randomBytes(saltBytes);
  const hash = await scrypt(normalize(password), salt, keyBytes, { N, r, p });
  return `scrypt$${N}$${r}$${p}$${salt.toString('base64url')}$${hash.toString('base64url')}`;
}

const DECIMAL = /^[1-9][0-9]{0,9}$/;
const BASE64URL = /^[A-Za-z0-9_-]+$/;

function corrupt(why: string): HypersealError {
  // Not the caller's fault and not a wrong password: the user record is damaged. The
  // message never quotes the stored string, which is secret-derived.
  return new HypersealError('HS_ERR_INTERNAL', `stored password hash is malformed: ${why}`);
}

function decodeBase64url(s: string | undefined, what: string): Buffer {
  if (s === undefined || !BASE64URL.test(s)) throw corrupt(`${what} is not base64url`);
  const bytes = Buffer.from(s, 'base64url');
  if (bytes.toString('base64url') !== s) throw corrupt(`${what} is not canonical base64url`);
  if (bytes.length < 16 || bytes.length > 64) throw corrupt(`${what} has ${bytes.length} bytes`);
  return bytes;
}

function parseHash(stored: string): ParsedHash {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') throw corrupt('not scrypt$N$r$p$salt$hash');
  const [n, r, p] = parts.slice(1, 4).map((x) => (DECIMAL.test(x ?? '') ? Number(x) : NaN));
  if (n === undefined || r === undefined || p === undefined || [n, r, p].some(Number.isNaN)) {
    throw corrupt('N, r and p must be positive decimal integers');
  }
  // N must be a power of two above 1 (scrypt's definition); memory and p are bounded.
  if (n < 2 || (n & (n - 1)) !== 0 || n > 2 ** 30) throw corrupt(`N=${n} is not a power of two`);
  if (memoryFor({ N: n, r, p }) > MAX_SCRYPT_MEMORY_BYTES || p > MAX_P) {
    throw corrupt(`N=${n}, r=${r}, p=${p} exceed the allowed cost`);
  }
  return { N: n, r, p, salt: decodeBase64url(parts[4], 'salt'), hash: decodeBase64url(parts[5], 'hash') };
}

// A stand-in for the hash of a user who does not exist: random, so no password matches it.
const DUMMY_SALT = crypto.randomBytes(SCRYPT_PARAMS.saltBytes);
const DUMMY_HASH = crypto.randomBytes(SCRYPT_PARAMS.keyBytes);

/**
 * True when `password` matches `stored`. Pass `undefined` when the user does not exist:
 * the same scrypt work and compare still run (against a random hash, so the answer is
 * false), and the response time does not tell which user names exist. Taking the
 * possibly-absent hash here, rather than offering a separate dummy function, means a
 * login path cannot forget the dummy run.
 *
 * A stored hash with older (cheaper) parameters takes less time than the dummy; that
 * reveals only that the user exists *and* has not logged in since the upgrade, and
 * disappears as `needsRehash` upgrades them.
 */
export async function verifyPassword(password: string, stored: string | undefined): Promise<boolean> {
  const target: ParsedHash =
    stored === undefined ? { ...SCRYPT_PARAMS, salt: DUMMY_SALT, hash: DUMMY_HASH } : parseHash(stored);
  const candidate = await scrypt(normalize(password), target.salt, target.hash.length, target);
  // Equal lengths by construction (keylen = stored length), as timingSafeEqual requires.
  const same = crypto.timingSafeEqual(candidate, target.hash);
  return same && stored !== undefined;
}

/**
 * The login check: throws the same HS_ERR_AUTH_INVALID_CREDENTIALS for an unknown user
 * and a wrong password, after the same work, so neither the answer nor its timing says
 * which user names exist.
 */
export async function authenticatePassword(password: string, stored: string | undefined): Promise<void> {
  if (await verifyPassword(password, stored)) return;
  throw new HypersealError('HS_ERR_AUTH_INVALID_CREDENTIALS', 'wrong user name or password');
}

/** True when `stored` was made with other parameters than today's: re-hash at next login. */
export function needsRehash(stored: string): boolean {
  const h = parseHash(stored);
  return (
    h.N !== SCRYPT_PARAMS.N ||
    h.r !== SCRYPT_PARAMS.r ||
    h.p !== SCRYPT_PARAMS.p ||
    h.salt.length !== SCRYPT_PARAMS.saltBytes ||
    h.hash.length !== SCRYPT_PARAMS.keyBytes
  );
}

/**
 * The password policy, checked when a password is set (never at login, so a policy
 * change does not lock anyone out). Every broken rule is reported at once. Length is
 * counted in characters (code points), not UTF-16 units or bytes, after NFC.
 */
export function checkPasswordPolicy(password: string, userName: string): void {
  const chars = [...normalize(password)].length;
  const broken: string[] = [];
  if (chars < PASSWORD_MIN_CHARS) {
    broken.push(`it must have at least ${PASSWORD_MIN_CHARS} characters (it has ${chars})`);
  }
  if (chars > PASSWORD_MAX_CHARS) {
    broken.push(`it must have at most ${PASSWORD_MAX_CHARS} characters (it has ${chars})`);
  }
  if (isUserName(password, userName)) broken.push('it must not be the user name');
  if (broken.length === 0) return;
  throw new HypersealError('HS_ERR_AUTH_WEAK_PASSWORD', `password refused: ${broken.join('; ')}`, {
    user: userName,
  });
}

/** The user name, or its part before '@' ("ops" of "ops@local"), in any letter case. */
function isUserName(password: string, userName: string): boolean {
  const pw = normalize(password).trim().toLowerCase();
  const name = normalize(userName).trim().toLowerCase();
  const at = name.lastIndexOf('@');
  return pw === name || (at > 0 && pw === name.slice(0, at));
}
