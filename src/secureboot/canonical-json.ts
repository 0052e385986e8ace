/**
 * Canonical JSON for signed descriptors: object keys sorted by UTF-16 code units, no
 * whitespace, strings escaped as JSON.stringify does, numbers only as safe integers. This
 * is the subset of RFC 8785 (JCS) our descriptors need; restricting numbers to integers
 * avoids JCS's float formatting rules altogether. The same value always yields the same
 * bytes, so a signature over them does not depend on how a file was pretty-printed.
 */
import { HypersealError } from '../errors.js';

export type CanonicalValue =
  string | number | boolean | null | readonly CanonicalValue[] | { readonly [key: string]: CanonicalValue };

const MAX_DEPTH = 32;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

export function canonicalJson(value: unknown): string {
  return encode(value, 0);
}

function encode(value: unknown, depth: number): string {
  if (depth > MAX_DEPTH) fail('nesting too deep');
  if (value === null || typeof value === 'boolean') return JSON.stringify(value);
  if (typeof value === 'string') {
    if (LONE_SURROGATE.test(value)) fail('a string holds a lone surrogate');
    return JSON.stringify(value);
  }
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) fail(`${value} is not a safe integer`);
    return String(value);
  }
  if (Array.isArray(value)) return `[${value.map((v) => encode(v, depth + 1)).join(',')}]`;
  if (typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined);
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${encode(v, depth + 1)}`).join(',')}}`;
  }
  return fail(`a ${typeof value} cannot be written as canonical JSON`);
}

function fail(message: string): never {
  throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `canonical JSON: ${message}`);
}
