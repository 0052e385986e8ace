/**
 * Secrets never reach an event. Redaction works by TYPE and by NAME, so that nobody has to
 * remember to call it:
 *
 *  - by type: a `Secret` (the wrapper below), any byte array (Buffer, Uint8Array, any
 *    ArrayBuffer view: key material travels as bytes), and a string holding a PEM private
 *    key become '[redacted]' wherever they sit, however deep;
 *  - by name: a property whose name says "secret" (isSecretName) has its value replaced,
 *    except booleans — one bit cannot carry key material, and `hasPassword: true` is
 *    worth seeing.
 *
 * diff() redacts as it produces changes, the message renderer redacts again before it
 * prints (a change built by hand gets the same treatment), and createEvent() redacts the
 * changes it is given. The fact of a change is kept, the values are not:
 * `password '[redacted]' → '[redacted]'`. null stays null (unset → set is worth seeing and
 * says nothing about the value).
 */
import { inspect } from 'node:util';
import { HypersealError } from '../errors.js';
import type { Change, JsonObject, JsonValue } from './model.js';
import { compareNatural, parsePath } from './path.js';

export const REDACTED = '[redacted]';

/**
 * A value that must never be printed, logged or serialized: JSON.stringify, String(),
 * template literals and util.inspect (console.log) all see '[redacted]'. The private
 * field brands the class: TypeScript will not accept a look-alike object as a Secret, and
 * the value is not an own property (Object.keys, spread and structuredClone do not copy
 * it). `reveal()` is the one way in; grep for it.
 */
export class Secret<T = string> {
  readonly #value: T;

  constructor(value: T) {
    this.#value = value;
    Object.freeze(this);
  }

  reveal(): T {
    return this.#value;
  }

  toJSON(): string {
    return REDACTED;
  }

  toString(): string {
    return REDACTED;
  }

  [Symbol.toPrimitive](): string {
    return REDACTED;
  }

  [inspect.custom](): string {
    return REDACTED;
  }
}

export function isBytes(v: unknown): v is ArrayBufferView | ArrayBuffer | SharedArrayBuffer {
  return (
    ArrayBuffer.isView(v) ||
    v instanceof ArrayBuffer ||
    (typeof SharedArrayBuffer !== 'undefined' && v instanceof SharedArrayBuffer)
  );
}

const PRIVATE_KEY_PEM = /-----BEGIN [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----/;

// ---------------------------------------------------------------------------------------
// Names

/**
 * Words that make a name secret wherever they appear (`newPassword`, `clientSecret`,
 * `wrappedDek`), unless the name ends in a metadata word (below).
 */
const SECRET_WORDS = new Set([
  'password',
  'passwords',
  'passwd',
  'pwd',
  'passphrase',
  'passphrases',
  'secret',
  'secrets',
  'token',
  'tokens',
  'credential',
  'credentials',
  'dek',
  'deks',
  'kek',
  'keks',
  'material',
  'pin',
  'otp',
  'psk',
  'cookie',
  'cookies',
  'authorization',
  // Spelled as one word in some configs and headers.
  'privatekey',
  'apikey',
  'secretkey',
  'privkey',
]);

/**
 * A name ending in one of these is ABOUT a secret, not the secret: `kekId`, `keyId`,
 * `secretName`, `passwordChangedAt`, `tokenExpiresAt`, `keyLength`, `privateKeyPath`.
 * Deliberately absent: `hash`/`digest` (a password hash can be cracked offline) and `hint`
 * (password hints often give the password away).
 */
const METADATA_WORDS = new Set([
  'id',
  'ids',
  'uuid',
  'name',
  'names',
  'ref',
  'refs',
  'uri',
  'url',
  'path',
  'file',
  'length',
  'len',
  'size',
  'bits',
  'algorithm',
  'alg',
  'type',
  'kind',
  'format',
  'mode',
  'state',
  'status',
  'version',
  'provider',
  'server',
  'endpoint',
  'policy',
  'expiry',
  'expires',
  'expiration',
  'at',
  'ttl',
  'lifetime',
  'age',
  'ms',
  'seconds',
  'days',
  'enabled',
  'required',
  'count',
  'label',
  'usage',
  'fingerprint',
  'owner',
  'issuer',
  'subject',
  'serial',
  'created',
  'updated',
  'changed',
  'rotated',
  'rotation',
]);

/** After `key`, these words still denote the key itself: `keyMaterial`, `keyPem`, `apiKey`. */
const KEY_MATERIAL_WORDS = new Set([
  'material',
  'data',
  'bytes',
  'value',
  'block',
  'pem',
  'der',
  'blob',
  'hex',
  'base64',
  'b64',
  'pair',
  'plaintext',
  'raw',
  'jwk',
]);

/** Before `key`, these make it something other than key material: `publicKey`, `partitionKey`. */
const NOT_SECRET_KEY_QUALIFIERS = new Set([
  'public',
  'pub',
  'partition',
  'sort',
  'primary',
  'foreign',
  'cache',
  'idempotency',
  'lookup',
  'device',
  'routing',
]);

/** camelCase, PascalCase, snake_case, kebab-case and ACRONYMCase → lower-case words; digits dropped. */
function words(name: string): string[] {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1 $2')
    .replace(/([a-zA-Z])(\d)/g, '$1 $2')
    .toLowerCase()
    .split(/[^a-z]+/)
    .filter((w) => w !== '');
}

/**
 * Whether a property name holds a secret. Reads the name as English compound words, whose
 * head is the LAST word: `kekId` is an id (about a KEK), `wrappedDek` is a DEK.
 *
 *  1. last word is metadata (id, name, length, …)          → not secret (kekId, keyLength)
 *  2. any word is a secret word (password, token, dek, …)  → secret (newPassword, dekWrapped)
 *  3. `key` followed only by material words, not preceded
 *     by public/partition/…                                → secret (apiKey, privateKeyPem, key)
 *  4. otherwise                                            → not secret (keyServer, monkey)
 *
 * Errs on the side of redacting: a bare `key` is redacted, `sshKey` too (it may be the
 * private half). Use `keyId`-style names for identifiers and they stay visible.
 */
export function isSecretName(name: string): boolean {
  const ws = words(name);
  const last = ws.at(-1);
  if (last === undefined || METADATA_WORDS.has(last)) return false;
  if (ws.some((w) => SECRET_WORDS.has(w))) return true;
  const k = Math.max(ws.lastIndexOf('key'), ws.lastIndexOf('keys'));
  if (k < 0) return false;
  const before = ws[k - 1];
  if (before !== undefined && NOT_SECRET_KEY_QUALIFIERS.has(before)) return false;
  return ws.slice(k + 1).every((w) => KEY_MATERIAL_WORDS.has(w));
}

// ---------------------------------------------------------------------------------------
// Values

export interface WalkLimits {
  /** Nesting depth of objects and arrays. */
  readonly maxDepth: number;
  /** Values visited in one diff or conversion (bounds work on shared or cyclic graphs). */
  readonly maxNodes: number;
}

export const DEFAULT_WALK_LIMITS: WalkLimits = { maxDepth: 32, maxNodes: 100_000 };

export function invalid(message: string, where: string | undefined): HypersealError {
  return new HypersealError(
    'HS_ERR_EVENT_INVALID',
    where === undefined || where === '' ? message : `${message} (at ${where})`,
    where === undefined ? undefined : { path: where },
  );
}

/** The work budget of one walk over caller data. */
export class Walk {
  #nodes = 0;
  readonly limits: WalkLimits;

  constructor(limits: WalkLimits = DEFAULT_WALK_LIMITS) {
    this.limits = limits;
  }

  visit(depth: number, where: string | undefined): void {
    if (++this.#nodes > this.limits.maxNodes)
      throw invalid(`more than ${this.limits.maxNodes} values`, where);
    if (depth > this.limits.maxDepth) throw invalid(`nested deeper than ${this.limits.maxDepth}`, where);
  }
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** Own keys whose value is not undefined (undefined and absent are the same in an event). */
export function definedKeys(o: Record<string, unknown>): string[] {
  return Object.keys(o).filter((k) => o[k] !== undefined);
}

/** The constructor name of a value, for error messages. */
export function describeValue(v: unknown): string {
  if (typeof v !== 'object' || v === null) return typeof v;
  const proto: unknown = Object.getPrototypeOf(v);
  const ctor: unknown =
    typeof proto === 'object' && proto !== null
      ? (proto as { constructor?: unknown }).constructor
      : undefined;
  return typeof ctor === 'function' && ctor.name !== '' ? ctor.name : 'object';
}

/**
 * Converts caller data to what an event may hold: plain JSON with keys sorted (so equal
 * data renders and hashes the same), Dates as ISO strings, undefined as null, and every
 * secret redacted. `name` is the property the value sits under. Throws
 * HS_ERR_EVENT_INVALID for anything JSON would silently mangle: NaN and Infinity (null in
 * JSON), Map and Set and class instances ({}), functions, bigint, cycles.
 */
export function toEventValue(value: unknown, name?: string, limits?: WalkLimits): JsonValue {
  return convert(value, name, new Walk(limits), 0, new Set(), name ?? '');
}

/** @internal shared with diff.ts so that one diff has one budget. */
export function convert(
  value: unknown,
  name: string | undefined,
  walk: Walk,
  depth: number,
  stack: Set<object>,
  where: string,
): JsonValue {
  walk.visit(depth, where);
  if (value === undefined || value === null) return null;
  if (name !== undefined && typeof value !== 'boolean' && isSecretName(name)) return REDACTED;
  if (value instanceof Secret || isBytes(value)) return REDACTED;
  switch (typeof value) {
    case 'string':
      return PRIVATE_KEY_PEM.test(value) ? REDACTED : value;
    case 'number':
      if (!Number.isFinite(value)) throw invalid(`${String(value)} cannot be logged`, where);
      return value === 0 ? 0 : value; // -0 is 0 in JSON
    case 'boolean':
      return value;
    case 'object':
      break;
    default:
      throw invalid(`a ${typeof value} cannot be logged`, where);
  }
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) throw invalid('an invalid Date cannot be logged', where);
    return value.toISOString();
  }
  if (stack.has(value)) throw invalid('a cycle cannot be logged', where);
  if (Array.isArray(value)) {
    stack.add(value);
    const out = value.map((v: unknown, i) => convert(v, undefined, walk, depth + 1, stack, `${where}[${i}]`));
    stack.delete(value);
    return out;
  }
  if (!isPlainObject(value)) throw invalid(`a ${describeValue(value)} cannot be logged`, where);
  stack.add(value);
  const entries = definedKeys(value)
    .sort(compareNatural)
    .map((k): [string, JsonValue] => [
      k,
      convert(value[k], k, walk, depth + 1, stack, where === '' ? k : `${where}.${k}`),
    ]);
  stack.delete(value);
  // fromEntries defines properties, so a key named __proto__ stays data, not a prototype.
  return Object.fromEntries(entries) as JsonObject;
}

/**
 * Redacts a change that may not come from diff(): a value under any secret-named property
 * of its path is replaced (diff never descends into such a property, so this agrees with
 * it), and secrets by type anywhere in from/to. Throws HS_ERR_EVENT_BAD_PATH.
 */
export function redactChange(change: Change): Change {
  const props = parsePath(change.path).flatMap((s) => (s.kind === 'prop' ? [s.name] : []));
  const secretName = props.find((p) => isSecretName(p));
  const last = secretName ?? props.at(-1);
  return {
    path: change.path,
    from: toEventValue(change.from, last),
    to: toEventValue(change.to, last),
  };
}
