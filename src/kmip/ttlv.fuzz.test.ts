/**
 * Deterministic fuzzing of the TTLV codec and framer.
 *
 *   (a) random item trees of all ten types round-trip encode → decode → deep-equal;
 *   (b) mutated PyKMIP vectors (and mutated random trees) fed to decodeTtlv and TtlvFramer
 *       either decode or throw a HypersealError with an HS_ERR_KMIP_* code; anything else
 *       (RangeError from Buffer, TypeError, a hang) is a bug;
 *   (c) 1 MiB hostile messages are decoded or refused within a time bound.
 *
 * Seeded PRNG (mulberry32). HYPERSEAL_FUZZ_SEED picks the seed (default fixed, so runs are
 * reproducible), HYPERSEAL_FUZZ_ITERATIONS the iteration count (default 20000). A failure
 * message names the seed and iteration to replay it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HypersealError } from '../errors.js';
import { Tag } from './tags.js';
import {
  DEFAULT_TTLV_LIMITS,
  ItemType,
  TtlvFramer,
  decodeTtlv,
  encodeTtlv,
  encodedLength,
  type ItemTypeName,
  type TtlvItem,
  type TtlvLimits,
} from './ttlv.js';
import { MESSAGES, hex } from './ttlv.vectors.js';

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 0)
    throw new Error(`${name} must be a non-negative integer, got ${raw}`);
  return n;
}
const SEED = envInt('HYPERSEAL_FUZZ_SEED', 0x7717_5ea1) >>> 0;
const ITERATIONS = envInt('HYPERSEAL_FUZZ_ITERATIONS', 20_000);

/** mulberry32: tiny, fast, good enough to drive a fuzzer; deterministic per seed. */
class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  /** Uniform 32-bit unsigned. */
  u32(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  /** Uniform integer in [0, n). */
  below(n: number): number {
    return Math.floor((this.u32() / 0x1_0000_0000) * n);
  }
  /** Uniform integer in [lo, hi]. */
  between(lo: number, hi: number): number {
    return lo + this.below(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)] as T;
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }
  /** Random bigint of up to `maxBytes` bytes, either sign. */
  bigint(maxBytes: number): bigint {
    const n = this.below(maxBytes + 1);
    const v = n === 0 ? 0n : BigInt('0x' + this.bytes(n).toString('hex'));
    return this.chance(0.5) ? -v : v;
  }
}

/** Runs `body` with a fresh generator; on failure, says how to replay it. */
function fuzz(name: string, iterations: number, body: (rng: Rng, i: number) => void): void {
  const rng = new Rng(SEED ^ fnv1a(name));
  for (let i = 0; i < iterations; i++) {
    try {
      body(rng, i);
    } catch (err) {
      const why = err instanceof Error ? (err.stack ?? err.message) : String(err);
      assert.fail(
        `${name}: failed at iteration ${i} with HYPERSEAL_FUZZ_SEED=${SEED} ` +
          `(0x${SEED.toString(16)}), HYPERSEAL_FUZZ_ITERATIONS=${iterations}\n${why}`,
      );
    }
  }
}
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

// ---------------------------------------------------------------------------------------
// (a) random trees

const TYPES = Object.keys(ItemType) as ItemTypeName[];
const KNOWN_TAGS = Object.values(Tag);
const I32_EDGES = [0, 1, -1, 0x7fffffff, -0x80000000, 8, 255];
const U32_EDGES = [0, 1, 0x7fffffff, 0x80000000, 0xffffffff];
const I64_EDGES = [0n, 1n, -1n, (1n << 63n) - 1n, -(1n << 63n), 123456789000000000n];
const BIG_EDGES = [
  0n,
  -1n,
  1n,
  (1n << 63n) - 1n,
  1n << 63n,
  -(1n << 63n),
  -(1n << 63n) - 1n,
  1n << 64n,
  -(1n << 64n),
];
const DATE_EDGES = [0, -1, 1600000000, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER];
// Code points that stress UTF-8: ASCII, NUL, 2/3/4-byte forms, a BOM (which TextDecoder
// would strip by default), U+FFFD, the last BMP and last Unicode scalar values.
const CHARS = [
  'a',
  'Z',
  ' ',
  '\0',
  'é',
  'ß',
  '€',
  '中',
  '\ufeff',
  '\ufffd',
  '\uffff',
  '😀',
  '\u{10ffff}',
  '\n',
];

function randomTag(rng: Rng): number {
  switch (rng.below(4)) {
    case 0:
    case 1:
      return rng.pick(KNOWN_TAGS);
    case 2:
      return 0x540000 | rng.below(0x10000); // extension tags
    default:
      return rng.below(0x1000000); // any 24-bit value
  }
}

function randomText(rng: Rng): string {
  let s = '';
  const n = rng.chance(0.2) ? 0 : rng.between(1, 24);
  for (let i = 0; i < n; i++)
    s += rng.chance(0.5) ? String.fromCharCode(rng.between(0x20, 0x7e)) : rng.pick(CHARS);
  return s;
}

function randomItem(rng: Rng, depth: number, budget: { items: number }): TtlvItem {
  budget.items--;
  const tag = randomTag(rng);
  // Structures get rarer with depth; never deeper than the default limit allows.
  const canNest = depth < DEFAULT_TTLV_LIMITS.maxDepth && budget.items > 0;
  const type: ItemTypeName =
    canNest && rng.chance(depth === 1 ? 0.9 : 0.35 / depth)
      ? 'Structure'
      : rng.pick(TYPES.filter((t) => t !== 'Structure' || canNest));
  switch (type) {
    case 'Structure': {
      const value: TtlvItem[] = [];
      const n = rng.below(6);
      for (let i = 0; i < n && budget.items > 0; i++) value.push(randomItem(rng, depth + 1, budget));
      return { tag, type, value };
    }
    case 'Integer':
      return { tag, type, value: rng.chance(0.3) ? rng.pick(I32_EDGES) : rng.u32() | 0 };
    case 'Enumeration':
    case 'Interval':
      return { tag, type, value: rng.chance(0.3) ? rng.pick(U32_EDGES) : rng.u32() };
    case 'LongInteger':
      return { tag, type, value: rng.chance(0.3) ? rng.pick(I64_EDGES) : BigInt.asIntN(64, rng.bigint(8)) };
    case 'BigInteger':
      return {
        tag,
        type,
        value: rng.chance(0.3) ? rng.pick(BIG_EDGES) : rng.bigint(rng.chance(0.1) ? 600 : 40),
      };
    case 'Boolean':
      return { tag, type, value: rng.chance(0.5) };
    case 'TextString':
      return { tag, type, value: randomText(rng) };
    case 'ByteString':
      return { tag, type, value: rng.bytes(rng.chance(0.2) ? 0 : rng.between(1, 40)) };
    case 'DateTime': {
      const v = rng.chance(0.3)
        ? rng.pick(DATE_EDGES)
        : (rng.u32() - 0x8000_0000) * rng.between(1, 0x1f_ffff);
      return { tag, type, value: v };
    }
  }
}

// ---------------------------------------------------------------------------------------
// (b) mutations of the PyKMIP vectors (copied verbatim from kmip-vectors.md; the unit test
// ttlv.test.ts checks each of them byte for byte)

const SEEDS: readonly Buffer[] = Object.values(MESSAGES).map((m) => hex(m.hex));

interface Spot {
  at: number;
  len: number;
}
/** Offset and declared length of every item header in a well-formed encoding. */
function headers(item: TtlvItem, bytes: Buffer, offset = 0, out: Spot[] = []): Spot[] {
  out.push({ at: offset, len: bytes.readUInt32BE(offset + 4) });
  if (item.type === 'Structure') {
    let p = offset + 8;
    for (const c of item.value) {
      headers(c, bytes, p, out);
      p += encodedLength(c);
    }
  }
  return out;
}

const INTERESTING_BYTES = [0x00, 0x01, 0x07, 0x08, 0x0a, 0x0b, 0x42, 0x7f, 0x80, 0xfe, 0xff];
const INTERESTING_LENGTHS = [
  0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 24, 0xff, 0x100, 0xfff8, 0x7ffffff8, 0x7ffffff9, 0x7fffffff, 0x80000000,
  0x80000007, 0xfffffff0, 0xfffffff8, 0xfffffff9, 0xffffffff,
];

function mutate(rng: Rng, seed: Buffer, spots: readonly Spot[]): Buffer {
  let b = Buffer.from(seed);
  const rounds = rng.between(1, 3);
  for (let r = 0; r < rounds; r++) {
    const spot = rng.pick(spots);
    switch (rng.below(11)) {
      case 0: // bit flips
        for (let k = rng.between(1, 8); k > 0 && b.length > 0; k--) {
          const i = rng.below(b.length);
          b[i] = (b[i] as number) ^ (1 << rng.below(8));
        }
        break;
      case 1: // byte changes
        for (let k = rng.between(1, 4); k > 0 && b.length > 0; k--) {
          b[rng.below(b.length)] = rng.chance(0.5) ? rng.pick(INTERESTING_BYTES) : rng.below(256);
        }
        break;
      case 2: // type byte of a header
        if (spot.at + 4 <= b.length) b[spot.at + 3] = rng.chance(0.8) ? rng.below(0x0d) : rng.below(256);
        break;
      case 3: // length field of a header
        if (spot.at + 8 <= b.length) {
          const len = rng.pick([
            rng.pick(INTERESTING_LENGTHS),
            spot.len + rng.between(-9, 9),
            b.length - spot.at - 8 + rng.between(-8, 8),
            rng.u32(),
          ]);
          b.writeUInt32BE(len >>> 0, spot.at + 4);
        }
        break;
      case 4: // tag of a header (including into the extension range)
        if (spot.at + 3 <= b.length)
          b.writeUIntBE(rng.chance(0.5) ? 0x540000 | rng.below(0x10000) : rng.below(0x1000000), spot.at, 3);
        break;
      case 5: // truncation (often at an 8-byte boundary)
        b = b.subarray(0, rng.chance(0.5) ? rng.below(b.length + 1) & ~7 : rng.below(b.length + 1));
        break;
      case 6: // extension: zeros, random bytes or another whole message
        b = Buffer.concat([
          b,
          rng.pick([Buffer.alloc(rng.between(1, 16)), rng.bytes(rng.between(1, 16)), rng.pick(SEEDS)]),
        ]);
        break;
      case 7: {
        // splice: the head of this buffer with the tail of another message
        const other = rng.pick(SEEDS);
        const cutA = rng.chance(0.5) ? rng.below(b.length + 1) & ~7 : rng.below(b.length + 1);
        const cutB = rng.chance(0.5) ? rng.below(other.length + 1) & ~7 : rng.below(other.length + 1);
        b = Buffer.concat([b.subarray(0, cutA), other.subarray(cutB)]);
        break;
      }
      case 8: {
        // insert or delete a run of bytes
        const at = rng.below(b.length + 1);
        const n = rng.chance(0.5) ? 8 : rng.between(1, 16);
        b = rng.chance(0.5)
          ? Buffer.concat([b.subarray(0, at), rng.bytes(n), b.subarray(at)])
          : Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + n))]);
        break;
      }
      case 9: {
        // copy one item's header over another's
        const other = rng.pick(spots);
        if (spot.at + 8 <= b.length && other.at + 8 <= b.length) b.copy(b, spot.at, other.at, other.at + 8);
        break;
      }
      default: // make the top-level length agree with the bytes, to get past the first check
        if (b.length >= 8) b.writeUInt32BE(b.length - 8, 4);
    }
  }
  return b;
}

function isKmipError(err: unknown): err is HypersealError {
  return err instanceof HypersealError && err.code.startsWith('HS_ERR_KMIP_');
}
function unexpected(what: string, input: Buffer, err: unknown): Error {
  const shown =
    input.length > 256
      ? `${input.subarray(0, 256).toString('hex')}… (${input.length} bytes)`
      : input.toString('hex');
  const desc = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return new Error(`${what} threw ${desc}\ninput: ${shown}`, { cause: err });
}
const hasBigInteger = (item: TtlvItem): boolean =>
  item.type === 'BigInteger' || (item.type === 'Structure' && item.value.some(hasBigInteger));

/** decodeTtlv may return an item or throw HS_ERR_KMIP_*; a decoded item must re-encode sanely. */
function checkDecode(input: Buffer, limits: TtlvLimits): void {
  let item: TtlvItem;
  try {
    item = decodeTtlv(input, limits);
  } catch (err) {
    if (isKmipError(err)) return;
    throw unexpected('decodeTtlv', input, err);
  }
  const again = encodeTtlv(item);
  // Decoding is strict (fixed lengths, zero padding, 0/1 Booleans), so re-encoding gives the
  // same bytes; only a Big Integer may have been sign-extended further than the minimum.
  if (!hasBigInteger(item)) assert.ok(again.equals(input), 'accepted input did not re-encode identically');
  assert.deepEqual(decodeTtlv(again, { ...limits, maxMessageBytes: Infinity }), item);
}

/** The framer may return messages or throw HS_ERR_KMIP_*; messages come out whole. */
function checkFramer(rng: Rng, stream: Buffer, max: number): void {
  const framer = new TtlvFramer(max);
  let out = 0;
  let fed = 0;
  while (fed < stream.length) {
    const n = Math.min(stream.length - fed, rng.chance(0.3) ? rng.between(1, 9) : rng.between(1, 300));
    let messages: Buffer[];
    try {
      messages = framer.push(stream.subarray(fed, fed + n));
    } catch (err) {
      if (isKmipError(err)) return;
      throw unexpected('TtlvFramer.push', stream, err);
    }
    fed += n;
    for (const m of messages) {
      assert.ok(m.length >= 8 && m.length <= max, `framed message of ${m.length} bytes`);
      assert.equal(m.readUInt32BE(4), m.length - 8, 'framed message length disagrees with its header');
      assert.equal(m[3], ItemType.Structure);
      assert.ok(m.equals(stream.subarray(out, out + m.length)), 'framed bytes are not the stream bytes');
      out += m.length;
      checkDecode(m, DEFAULT_TTLV_LIMITS);
    }
    assert.equal(out + framer.pendingBytes, fed, 'framer lost or invented bytes');
  }
}

function randomLimits(rng: Rng): TtlvLimits {
  if (rng.chance(0.7)) return DEFAULT_TTLV_LIMITS;
  return {
    maxMessageBytes: rng.chance(0.5) ? DEFAULT_TTLV_LIMITS.maxMessageBytes : rng.between(0, 512),
    maxDepth: rng.between(0, 10),
    maxItems: rng.chance(0.5) ? DEFAULT_TTLV_LIMITS.maxItems : rng.between(0, 40),
  };
}

// ---------------------------------------------------------------------------------------

test(`(a) random item trees round-trip (seed 0x${SEED.toString(16)}, ${ITERATIONS} iterations)`, () => {
  const seen = new Set<ItemTypeName>();
  fuzz('roundtrip', ITERATIONS, (rng) => {
    const item = randomItem(rng, 1, { items: rng.between(1, 60) });
    const bytes = encodeTtlv(item);
    assert.equal(bytes.length, encodedLength(item));
    assert.equal(bytes.length % 8, 0);
    const back = decodeTtlv(bytes);
    assert.deepEqual(back, item);
    assert.ok(encodeTtlv(back).equals(bytes));
    (function walk(i: TtlvItem): void {
      seen.add(i.type);
      if (i.type === 'Structure') i.value.forEach(walk);
    })(item);
    // Whole messages also go through the framer, cut anywhere.
    if (item.type === 'Structure' && bytes.length <= DEFAULT_TTLV_LIMITS.maxMessageBytes) {
      const cut = rng.below(bytes.length + 1);
      const framer = new TtlvFramer();
      const out = [...framer.push(bytes.subarray(0, cut)), ...framer.push(bytes.subarray(cut))];
      assert.equal(out.length, 1);
      assert.ok((out[0] as Buffer).equals(bytes));
    }
  });
  if (ITERATIONS >= 1000) assert.deepEqual([...seen].sort(), [...TYPES].sort(), 'every type was generated');
});

test(`(b) mutated vectors: a value or an HS_ERR_KMIP_* error, nothing else (seed 0x${SEED.toString(16)})`, (t) => {
  const treeRng = new Rng(SEED ^ 0xa5a5a5a5);
  const pool = [
    ...SEEDS,
    ...Array.from({ length: 40 }, () => encodeTtlv(randomItem(treeRng, 1, { items: 30 }))),
  ];
  const spots = pool.map((b) => headers(decodeTtlv(b), b));
  let accepted = 0;
  const refused = new Map<string, number>();
  fuzz('mutations', ITERATIONS, (rng) => {
    const k = rng.below(pool.length);
    const input = mutate(rng, pool[k] as Buffer, spots[k] as Spot[]);
    const limits = randomLimits(rng);
    try {
      decodeTtlv(input, limits);
      accepted++;
    } catch (err) {
      if (!isKmipError(err)) throw unexpected('decodeTtlv', input, err);
      refused.set(err.code, (refused.get(err.code) ?? 0) + 1);
    }
    checkDecode(input, limits);
    // The framer sees the mutant, sometimes after a good message and before another.
    const stream = rng.chance(0.3) ? Buffer.concat([rng.pick(SEEDS), input, rng.pick(SEEDS)]) : input;
    checkFramer(rng, stream, rng.chance(0.7) ? DEFAULT_TTLV_LIMITS.maxMessageBytes : rng.between(8, 600));
  });
  const refusedTotal = [...refused.values()].reduce((a, b) => a + b, 0);
  t.diagnostic(
    `${accepted} mutants decoded, ${refusedTotal} refused: ${JSON.stringify(Object.fromEntries(refused))}`,
  );
  // Sanity: the mutator must exercise both outcomes, or it is not testing much.
  if (ITERATIONS >= 1000) {
    assert.ok(accepted > ITERATIONS / 100, `only ${accepted} mutants decoded`);
    assert.ok(refusedTotal > ITERATIONS / 10, `only ${refusedTotal} mutants refused`);
    assert.ok(refused.size >= 7, `only ${[...refused.keys()].join(', ')} were seen`);
  }
});

// ---------------------------------------------------------------------------------------
// (c) bounded work on 1 MiB of hostile input

const MiB = 1 << 20;
const BOUND_MS = 2000; // generous for a slow shared 2-core machine; the real cost is ~10-100 ms

function timed<T>(what: string, fn: () => T): T {
  const started = performance.now();
  const result = fn();
  const ms = performance.now() - started;
  assert.ok(ms < BOUND_MS, `${what} took ${ms.toFixed(0)} ms (bound ${BOUND_MS} ms)`);
  return result;
}
function decodeOrRefuse(buf: Buffer, limits: TtlvLimits = DEFAULT_TTLV_LIMITS): TtlvItem | string {
  try {
    return decodeTtlv(buf, limits);
  } catch (err) {
    if (isKmipError(err)) return err.code;
    throw unexpected('decodeTtlv', buf, err);
  }
}

/** `count` Structures each wrapping the next, filling count * 8 bytes. */
function nestedChain(count: number): Buffer {
  const buf = Buffer.alloc(count * 8);
  for (let i = 0; i < count; i++) {
    buf.writeUIntBE(Tag.Attribute, i * 8, 3);
    buf[i * 8 + 3] = ItemType.Structure;
    buf.writeUInt32BE((count - i - 1) * 8, i * 8 + 4);
  }
  return buf;
}
/** One Structure holding `count` copies of the 8- or 16-byte item `child`. */
function flat(count: number, child: Buffer): Buffer {
  const buf = Buffer.alloc(8 + count * child.length);
  buf.writeUIntBE(Tag.RequestMessage, 0, 3);
  buf[3] = ItemType.Structure;
  buf.writeUInt32BE(count * child.length, 4);
  for (let i = 0; i < count; i++) child.copy(buf, 8 + i * child.length);
  return buf;
}
function single(type: ItemTypeName, len: number, fill: number): Buffer {
  const buf = Buffer.alloc(8 + len, fill);
  buf.writeUIntBE(0x420020, 0, 3);
  buf[3] = ItemType[type];
  buf.writeUInt32BE(len, 4);
  return buf;
}

test('(c) 1 MiB of deeply nested structures is refused quickly', () => {
  const deep = nestedChain(MiB / 8);
  assert.equal(deep.length, MiB);
  assert.equal(
    timed('nested, default limits', () => decodeOrRefuse(deep)),
    'HS_ERR_KMIP_TOO_DEEP',
  );
  assert.equal(
    timed('nested, maxDepth 1000', () =>
      decodeOrRefuse(deep, { ...DEFAULT_TTLV_LIMITS, maxDepth: 1000, maxItems: MiB }),
    ),
    'HS_ERR_KMIP_TOO_DEEP',
  );
  // The framer does not parse inside, so it just hands the whole message over.
  const framed = timed('framer, nested', () => new TtlvFramer().push(deep));
  assert.equal(framed.length, 1);
});

test('(c) 1 MiB of tiny items is refused (or decoded with a raised limit) quickly', () => {
  const emptyText = Buffer.from('4200200700000000', 'hex');
  const tiny = flat(MiB / 8 - 1, emptyText);
  assert.equal(tiny.length, MiB);
  assert.equal(
    timed('tiny items, default limits', () => decodeOrRefuse(tiny)),
    'HS_ERR_KMIP_TOO_LARGE',
  );
  const all = timed('tiny items, maxItems raised', () =>
    decodeOrRefuse(tiny, { ...DEFAULT_TTLV_LIMITS, maxItems: MiB }),
  );
  assert.ok(typeof all !== 'string' && all.type === 'Structure' && all.value.length === MiB / 8 - 1);
  // 65535 Integers (16 bytes each): just under both limits, so it decodes.
  const ints = flat(65535, Buffer.from('4200200200000004 0000000800000000'.replace(' ', ''), 'hex'));
  assert.ok(ints.length <= MiB);
  const decoded = timed('65535 integers', () => decodeOrRefuse(ints));
  assert.ok(typeof decoded !== 'string' && decoded.type === 'Structure' && decoded.value.length === 65535);
  timed('re-encode 65535 integers', () => assert.ok(encodeTtlv(decoded).equals(ints)));
  // Nested empty Structures alternating with items: depth within limit, many items.
  assert.equal(
    timed('empty structures', () =>
      decodeOrRefuse(flat(MiB / 8 - 1, Buffer.from('5400000100000000', 'hex'))),
    ),
    'HS_ERR_KMIP_TOO_LARGE',
  );
});

test('(c) 1 MiB single values decode and re-encode in linear time', () => {
  for (const [type, fill] of [
    ['BigInteger', 0xa5],
    ['ByteString', 0xa5],
    ['TextString', 0x41],
  ] as const) {
    const buf = single(type, MiB - 8, fill);
    const item = timed(`decode ${type}`, () => decodeOrRefuse(buf));
    assert.ok(typeof item !== 'string' && item.type === type);
    timed(`encode ${type}`, () => assert.ok(encodeTtlv(item).equals(buf)));
  }
  // A Text String of 1 MiB of invalid UTF-8 is refused, not slowly.
  assert.equal(
    timed('bad text', () => decodeOrRefuse(single('TextString', MiB - 8, 0xff))),
    'HS_ERR_KMIP_BAD_TEXT',
  );
  // One byte over the limit: refused before any parsing.
  assert.equal(
    timed('too large', () => decodeOrRefuse(single('ByteString', MiB - 7, 0))),
    'HS_ERR_KMIP_TOO_LARGE',
  );
});

test('(c) the framer splits 1 MiB of tiny messages, and a 1 MiB message fed in small chunks, quickly', () => {
  const tinyMessages = Buffer.alloc(MiB);
  for (let i = 0; i < MiB; i += 8) tinyMessages.write('4200780100000000', i, 'hex');
  const out = timed('framer, 131072 messages', () => new TtlvFramer().push(tinyMessages));
  assert.equal(out.length, MiB / 8);
  const big = single('ByteString', MiB - 16, 0x5a);
  const msg = Buffer.concat([Buffer.from('4200780100000000', 'hex'), big]);
  msg.writeUInt32BE(msg.length - 8, 4);
  assert.equal(msg.length, MiB);
  const framed = timed('framer, 16-byte chunks', () => {
    const framer = new TtlvFramer();
    const got: Buffer[] = [];
    for (let i = 0; i < msg.length; i += 16) got.push(...framer.push(msg.subarray(i, i + 16)));
    return got;
  });
  assert.equal(framed.length, 1);
  assert.ok((framed[0] as Buffer).equals(msg));
});
