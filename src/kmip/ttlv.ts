/**
 * TTLV (Tag-Type-Length-Value) codec for KMIP 1.1, spec §9.1. Pure: bytes in, items out,
 * no I/O. Every limit is explicit so that hostile input costs bounded memory and time:
 * a message larger than `maxMessageBytes`, nested deeper than `maxDepth`, or with more
 * than `maxItems` items is refused with a stable error code before any work is wasted.
 */
import { HypersealError } from '../errors.js';
import { tagName } from './tags.js';

export const ItemType = {
  Structure: 0x01,
  Integer: 0x02,
  LongInteger: 0x03,
  BigInteger: 0x04,
  Enumeration: 0x05,
  Boolean: 0x06,
  TextString: 0x07,
  ByteString: 0x08,
  DateTime: 0x09,
  Interval: 0x0a,
} as const;
export type ItemTypeName = keyof typeof ItemType;

/**
 * One decoded item. DateTime is seconds since the epoch as a number (values outside
 * ±2^53 are refused rather than silently rounded); Long and Big Integers are bigints.
 */
export type TtlvItem =
  | { tag: number; type: 'Structure'; value: TtlvItem[] }
  | { tag: number; type: 'Integer'; value: number }
  | { tag: number; type: 'LongInteger'; value: bigint }
  | { tag: number; type: 'BigInteger'; value: bigint }
  | { tag: number; type: 'Enumeration'; value: number }
  | { tag: number; type: 'Boolean'; value: boolean }
  | { tag: number; type: 'TextString'; value: string }
  | { tag: number; type: 'ByteString'; value: Buffer }
  | { tag: number; type: 'DateTime'; value: number }
  | { tag: number; type: 'Interval'; value: number };

export type TtlvOf<T extends ItemTypeName> = Extract<TtlvItem, { type: T }>;

export interface TtlvLimits {
  /** Largest whole message, header included. */
  maxMessageBytes: number;
  /** Deepest structure nesting; the top-level message is depth 1. */
  maxDepth: number;
  /** Most items in one message, to bound allocation on hostile input. */
  maxItems: number;
}

/** Generous for key management (an RSA-4096 key pair is ~5 KiB), tight against abuse. */
export const DEFAULT_TTLV_LIMITS: TtlvLimits = { maxMessageBytes: 1 << 20, maxDepth: 16, maxItems: 65536 };

const HEADER_BYTES = 8;
/** Upper bound on any configured maxDepth (KMIP 1.1 messages nest fewer than 10 levels). */
export const MAX_SAFE_DEPTH = 256;
const typeNames = new Map<number, ItemTypeName>(
  Object.entries(ItemType).map(([k, v]) => [v, k as ItemTypeName]),
);
// ignoreBOM: keep a leading U+FEFF as part of the value (the default strips it, so a Text
// String starting with a BOM would not survive decode → encode byte-identically).
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

// Plain arithmetic, not `(n + 7) & ~7`: bitwise operators truncate to int32, so a hostile
// length ≥ 0x7FFFFFF9 came out 0 or negative and slipped past the bounds checks.
const padded = (n: number): number => n + ((8 - (n % 8)) % 8);

// ---------------------------------------------------------------------------------------
// Encoding

function bigIntBytes(v: bigint): Buffer {
  // Two's complement, sign-extended on the left to a multiple of 8 bytes (spec §9.1.1.4).
  // Sized from the magnitude's hex digits and converted with one hex round trip: linear in
  // the size (growing the length 8 bytes at a time and shifting per byte was quadratic).
  const magnitude = v < 0n ? ~v : v; // ~v = -v - 1: the bits a negative value needs
  const digits = magnitude.toString(16);
  const bits =
    magnitude === 0n ? 0 : (digits.length - 1) * 4 + parseInt(digits[0] as string, 16).toString(2).length;
  const len = Math.max(8, Math.ceil((bits + 1) / 64) * 8); // + 1 for the sign bit
  return Buffer.from(
    BigInt.asUintN(len * 8, v)
      .toString(16)
      .padStart(len * 2, '0'),
    'hex',
  );
}

function valueLength(item: TtlvItem): number {
  switch (item.type) {
    case 'Structure':
      return item.value.reduce((n, child) => n + encodedLength(child), 0);
    case 'Integer':
    case 'Enumeration':
    case 'Interval':
      return 4;
    case 'LongInteger':
    case 'Boolean':
    case 'DateTime':
      return 8;
    case 'BigInteger':
      return bigIntBytes(item.value).length;
    case 'TextString':
      return Buffer.byteLength(item.value, 'utf8');
    case 'ByteString':
      return item.value.length;
  }
}

/** Bytes the item takes on the wire, padding included. */
export function encodedLength(item: TtlvItem): number {
  return HEADER_BYTES + padded(valueLength(item));
}

function checkTag(tag: number): void {
  if (!Number.isInteger(tag) || tag < 0 || tag > 0xffffff) {
    throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `TTLV tag ${tag} is not a 24-bit value`);
  }
}

function writeItem(item: TtlvItem, buf: Buffer, offset: number): number {
  checkTag(item.tag);
  buf.writeUIntBE(item.tag, offset, 3);
  buf[offset + 3] = ItemType[item.type];
  const body = offset + HEADER_BYTES;
  let len: number;
  switch (item.type) {
    case 'Structure': {
      let p = body;
      for (const child of item.value) p = writeItem(child, buf, p);
      len = p - body;
      break;
    }
    case 'Integer':
      buf.writeInt32BE(item.value, body);
      len = 4;
      break;
    case 'Enumeration':
    case 'Interval':
      buf.writeUInt32BE(item.value, body);
      len = 4;
      break;
    case 'LongInteger':
      buf.writeBigInt64BE(item.value, body);
      len = 8;
      break;
    case 'DateTime':
      buf.writeBigInt64BE(BigInt(item.value), body);
      len = 8;
      break;
    case 'Boolean':
      buf.writeBigUInt64BE(item.value ? 1n : 0n, body);
      len = 8;
      break;
    case 'BigInteger': {
      const bytes = bigIntBytes(item.value);
      bytes.copy(buf, body);
      len = bytes.length;
      break;
    }
    case 'TextString':
      len = buf.write(item.value, body, 'utf8');
      break;
    case 'ByteString':
      item.value.copy(buf, body);
      len = item.value.length;
      break;
  }
  buf.writeUInt32BE(len, offset + 4);
  // Buffer.alloc zero-fills, so padding bytes are already 0x00 as the spec requires.
  return body + padded(len);
}

/** Encodes one item (usually a whole Request or Response Message) into a fresh buffer. */
export function encodeTtlv(item: TtlvItem): Buffer {
  const buf = Buffer.alloc(encodedLength(item));
  writeItem(item, buf, 0);
  return buf;
}

// ---------------------------------------------------------------------------------------
// Decoding

function fail(
  code:
    | 'HS_ERR_KMIP_TRUNCATED'
    | 'HS_ERR_KMIP_BAD_TYPE'
    | 'HS_ERR_KMIP_BAD_LENGTH'
    | 'HS_ERR_KMIP_BAD_PADDING'
    | 'HS_ERR_KMIP_TOO_LARGE'
    | 'HS_ERR_KMIP_TOO_DEEP'
    | 'HS_ERR_KMIP_BAD_TEXT'
    | 'HS_ERR_KMIP_TRAILING_BYTES',
  message: string,
  offset: number,
): never {
  throw new HypersealError(code, `${message} (at byte ${offset})`, { offset });
}

const FIXED_LENGTH: Partial<Record<ItemTypeName, number>> = {
  Integer: 4,
  Enumeration: 4,
  Interval: 4,
  LongInteger: 8,
  Boolean: 8,
  DateTime: 8,
};

class Reader {
  items = 0;
  constructor(
    readonly buf: Buffer,
    readonly limits: TtlvLimits,
  ) {}

  read(offset: number, end: number, depth: number): [TtlvItem, number] {
    if (++this.items > this.limits.maxItems) {
      fail('HS_ERR_KMIP_TOO_LARGE', `more than ${this.limits.maxItems} items in one message`, offset);
    }
    if (end - offset < HEADER_BYTES) fail('HS_ERR_KMIP_TRUNCATED', 'item header is cut short', offset);
    const buf = this.buf;
    const tag = buf.readUIntBE(offset, 3);
    const typeByte = buf[offset + 3] as number;
    const type = typeNames.get(typeByte);
    if (type === undefined) {
      fail(
        'HS_ERR_KMIP_BAD_TYPE',
        `unknown item type 0x${typeByte.toString(16)} for ${tagName(tag)}`,
        offset,
      );
    }
    const len = buf.readUInt32BE(offset + 4);
    const body = offset + HEADER_BYTES;
    const fixed = FIXED_LENGTH[type];
    if (fixed !== undefined && len !== fixed) {
      fail('HS_ERR_KMIP_BAD_LENGTH', `${type} ${tagName(tag)} has length ${len}, expected ${fixed}`, offset);
    }
    if (type === 'BigInteger' && (len === 0 || len % 8 !== 0)) {
      fail(
        'HS_ERR_KMIP_BAD_LENGTH',
        `Big Integer ${tagName(tag)} length ${len} is not a multiple of 8`,
        offset,
      );
    }
    if (type === 'Structure' && len % 8 !== 0) {
      fail(
        'HS_ERR_KMIP_BAD_LENGTH',
        `Structure ${tagName(tag)} length ${len} is not a multiple of 8`,
        offset,
      );
    }
    const next = body + padded(len);
    if (next > end)
      fail('HS_ERR_KMIP_TRUNCATED', `${tagName(tag)} declares ${len} bytes past the end`, offset);
    for (let p = body + len; p < next; p++) {
      if (buf[p] !== 0) fail('HS_ERR_KMIP_BAD_PADDING', `non-zero padding after ${tagName(tag)}`, p);
    }
    return [this.value(tag, type, body, len, depth, offset), next];
  }

  private value(
    tag: number,
    type: ItemTypeName,
    body: number,
    len: number,
    depth: number,
    at: number,
  ): TtlvItem {
    const buf = this.buf;
    switch (type) {
      case 'Structure': {
        if (depth + 1 > this.limits.maxDepth) {
          fail('HS_ERR_KMIP_TOO_DEEP', `structures nested deeper than ${this.limits.maxDepth}`, at);
        }
        const children: TtlvItem[] = [];
        const end = body + len;
        let p = body;
        while (p < end) {
          const [child, next] = this.read(p, end, depth + 1);
          children.push(child);
          p = next;
        }
        return { tag, type, value: children };
      }
      case 'Integer':
        return { tag, type, value: buf.readInt32BE(body) };
      case 'Enumeration':
      case 'Interval':
        return { tag, type, value: buf.readUInt32BE(body) };
      case 'LongInteger':
        return { tag, type, value: buf.readBigInt64BE(body) };
      case 'DateTime': {
        const v = buf.readBigInt64BE(body);
        if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
          fail('HS_ERR_KMIP_BAD_LENGTH', `Date-Time ${tagName(tag)} is out of range`, at);
        }
        return { tag, type, value: Number(v) };
      }
      case 'Boolean': {
        const v = buf.readBigUInt64BE(body);
        if (v > 1n) fail('HS_ERR_KMIP_BAD_LENGTH', `Boolean ${tagName(tag)} is neither 0 nor 1`, at);
        return { tag, type, value: v === 1n };
      }
      case 'BigInteger': {
        // One hex parse, linear in len (a shift-per-byte loop is quadratic: minutes for 1 MiB).
        const v = BigInt('0x' + buf.toString('hex', body, body + len));
        return { tag, type, value: BigInt.asIntN(len * 8, v) };
      }
      case 'TextString':
        try {
          return { tag, type, value: utf8.decode(buf.subarray(body, body + len)) };
        } catch {
          return fail('HS_ERR_KMIP_BAD_TEXT', `Text String ${tagName(tag)} is not valid UTF-8`, at);
        }
      case 'ByteString':
        // A copy, not a view: the caller may zeroise it without touching the input frame.
        return { tag, type, value: Buffer.from(buf.subarray(body, body + len)) };
    }
  }
}

/** Decodes exactly one item filling `buf`; trailing bytes are an error. */
export function decodeTtlv(buf: Buffer, limits: TtlvLimits = DEFAULT_TTLV_LIMITS): TtlvItem {
  if (buf.length > limits.maxMessageBytes) {
    fail('HS_ERR_KMIP_TOO_LARGE', `message of ${buf.length} bytes exceeds ${limits.maxMessageBytes}`, 0);
  }
  // The decoder recurses once per nesting level; a hard cap keeps a careless limit from
  // turning hostile nesting into a stack overflow.
  const safe = { ...limits, maxDepth: Math.min(limits.maxDepth, MAX_SAFE_DEPTH) };
  const [item, next] = new Reader(buf, safe).read(0, buf.length, 1);
  if (next !== buf.length)
    fail('HS_ERR_KMIP_TRAILING_BYTES', `${buf.length - next} bytes after the message`, next);
  return item;
}

/**
 * Splits a byte stream (TLS) into whole top-level messages. Reads the 8-byte header,
 * refuses a declared length over the limit at once (before buffering it), then waits for
 * the body. It never decodes: that is `decodeTtlv`'s job, so framing stays cheap.
 */
export class TtlvFramer {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(private readonly maxMessageBytes: number = DEFAULT_TTLV_LIMITS.maxMessageBytes) {}

  /** Feeds bytes; returns every message completed by them, in order. */
  push(chunk: Buffer): Buffer[] {
    // A bad header after whole messages in the same chunk: those messages are still
    // delivered, and the error is raised on the next push.
    if (this.failure !== undefined) throw this.failure;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const out: Buffer[] = [];
    for (;;) {
      if (this.buffered < HEADER_BYTES) return out;
      const head = this.peek(HEADER_BYTES);
      const len = head.readUInt32BE(4);
      const total = HEADER_BYTES + len;
      let problem: HypersealError | undefined;
      if (head[3] !== ItemType.Structure) {
        problem = new HypersealError(
          'HS_ERR_KMIP_BAD_TYPE',
          'a KMIP message must be a Structure (at byte 0)',
        );
      } else if (total > this.maxMessageBytes) {
        problem = new HypersealError(
          'HS_ERR_KMIP_TOO_LARGE',
          `message of ${total} bytes exceeds ${this.maxMessageBytes} (at byte 0)`,
        );
      }
      if (problem !== undefined) {
        if (out.length === 0) throw problem;
        this.failure = problem;
        return out;
      }
      if (this.buffered < total) return out;
      out.push(this.take(total));
    }
  }

  private failure: HypersealError | undefined;

  /** Bytes received but not yet part of a whole message. */
  get pendingBytes(): number {
    return this.buffered;
  }

  private peek(n: number): Buffer {
    if ((this.chunks[0] as Buffer).length < n) this.chunks = [Buffer.concat(this.chunks)];
    return (this.chunks[0] as Buffer).subarray(0, n);
  }

  private take(n: number): Buffer {
    const first = this.chunks[0] as Buffer;
    let msg: Buffer;
    if (first.length >= n) {
      msg = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      const all = Buffer.concat(this.chunks);
      msg = all.subarray(0, n);
      this.chunks = all.length > n ? [all.subarray(n)] : [];
    }
    this.buffered -= n;
    return msg;
  }
}

// ---------------------------------------------------------------------------------------
// Builders and accessors: small, typed, used by the message layer.

export const ttlv = {
  struct: (tag: number, value: TtlvItem[]): TtlvItem => ({ tag, type: 'Structure', value }),
  int: (tag: number, value: number): TtlvItem => ({ tag, type: 'Integer', value }),
  long: (tag: number, value: bigint): TtlvItem => ({ tag, type: 'LongInteger', value }),
  big: (tag: number, value: bigint): TtlvItem => ({ tag, type: 'BigInteger', value }),
  enum: (tag: number, value: number): TtlvItem => ({ tag, type: 'Enumeration', value }),
  bool: (tag: number, value: boolean): TtlvItem => ({ tag, type: 'Boolean', value }),
  text: (tag: number, value: string): TtlvItem => ({ tag, type: 'TextString', value }),
  bytes: (tag: number, value: Buffer): TtlvItem => ({ tag, type: 'ByteString', value }),
  date: (tag: number, value: number): TtlvItem => ({ tag, type: 'DateTime', value }),
  interval: (tag: number, value: number): TtlvItem => ({ tag, type: 'Interval', value }),
};

/** Renders an item as indented text (tag names from the spec) for traces and tests. */
export function describeTtlv(item: TtlvItem, indent = ''): string {
  const head = `${indent}${tagName(item.tag)} ${item.type}`;
  if (item.type === 'Structure') {
    return [head, ...item.value.map((c) => describeTtlv(c, indent + '  '))].join('\n');
  }
  const v = item.type === 'ByteString' ? `<${item.value.length} bytes>` : String(item.value);
  return `${head} = ${v}`;
}
