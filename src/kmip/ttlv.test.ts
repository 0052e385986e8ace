/**
 * Unit tests for the TTLV codec with byte-exact fixtures. Every hex string below was produced
 * by PyKMIP 0.10 (its own encoder, or captured on the wire between ProxyKmipClient and
 * pykmip-server) and copied verbatim from docs/reference kmip-vectors.md: the codec must
 * encode to exactly these bytes and decode them back.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HypersealError, type ErrorCode } from '../errors.js';
import { Tag, tagName } from './tags.js';
import { KeyFormatType, ObjectType, Operation, ResultReason, ResultStatus } from './enums.js';
import {
  DEFAULT_TTLV_LIMITS,
  TtlvFramer,
  decodeTtlv,
  describeTtlv,
  encodeTtlv,
  encodedLength,
  ttlv,
  type TtlvItem,
  type TtlvLimits,
} from './ttlv.js';
import { MESSAGES } from './ttlv.vectors.js';

/** Hex (whitespace allowed, as copied from the reference) to bytes. */
function hex(s: string): Buffer {
  const clean = s.replace(/\s+/g, '');
  assert.match(clean, /^(?:[0-9a-f]{2})*$/, 'fixture is not whole hex bytes');
  return Buffer.from(clean, 'hex');
}
const unhex = (b: Buffer): string => b.toString('hex');

/** Asserts that `fn` throws a HypersealError with exactly this stable code. */
function assertCode(fn: () => unknown, code: ErrorCode): HypersealError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught !== undefined, `expected ${code}, but nothing was thrown`);
  assert.ok(caught instanceof HypersealError, `expected HypersealError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  return caught;
}

/** Follows a path of tags (first match at each level) from a Structure. */
function at(item: TtlvItem, ...path: number[]): TtlvItem {
  let cur = item;
  for (const tag of path) {
    if (cur.type !== 'Structure') assert.fail(`${tagName(cur.tag)} is not a Structure`);
    const next = cur.value.find((c) => c.tag === tag);
    if (next === undefined) assert.fail(`no ${tagName(tag)} in ${tagName(cur.tag)}`);
    cur = next;
  }
  return cur;
}
const children = (item: TtlvItem): TtlvItem[] => {
  if (item.type !== 'Structure') assert.fail(`${tagName(item.tag)} is not a Structure`);
  return item.value;
};
const countItems = (item: TtlvItem): number =>
  item.type === 'Structure' ? 1 + item.value.reduce((n, c) => n + countItems(c), 0) : 1;

const T = 0x420020; // the tag the KMIP spec's own encoding examples use (Compromise Date)

// ---------------------------------------------------------------------------------------
// §1 of kmip-vectors.md: primitive encodings, grouped per 8 bytes as in the reference.

const PRIMITIVES: ReadonlyArray<{ name: string; item: TtlvItem; hex: string }> = [
  { name: 'Integer 8', item: ttlv.int(T, 8), hex: '4200200200000004 0000000800000000' },
  {
    name: 'Long Integer 123456789000000000',
    item: ttlv.long(T, 123456789000000000n),
    hex: '4200200300000008 01b69b4ba5749200',
  },
  {
    name: 'Big Integer 1234567890000000000000000000',
    item: ttlv.big(T, 1234567890000000000000000000n),
    hex: '4200200400000010 0000000003fd35eb 6bc2df4618080000',
  },
  { name: 'Big Integer -1', item: ttlv.big(T, -1n), hex: '4200200400000008 ffffffffffffffff' },
  { name: 'Enumeration 255', item: ttlv.enum(T, 255), hex: '4200200500000004 000000ff00000000' },
  { name: 'Boolean True', item: ttlv.bool(T, true), hex: '4200200600000008 0000000000000001' },
  {
    name: "Text String 'Hello World'",
    item: ttlv.text(T, 'Hello World'),
    hex: '420020070000000b 48656c6c6f20576f 726c640000000000',
  },
  {
    name: 'Byte String 010203',
    item: ttlv.bytes(T, Buffer.from([1, 2, 3])),
    hex: '4200200800000003 0102030000000000',
  },
  {
    name: 'Date-Time 2008-03-14T11:56:40Z',
    item: ttlv.date(T, Date.UTC(2008, 2, 14, 11, 56, 40) / 1000),
    hex: '4200200900000008 0000000047da67f8',
  },
  { name: 'Interval 10 days', item: ttlv.interval(T, 864000), hex: '4200200a00000004 000d2f0000000000' },
  { name: "Text String '' (empty)", item: ttlv.text(T, ''), hex: '4200200700000000' },
];

// Edge values derived from the spec's rules (two's complement, sign-extended to a multiple
// of 8 bytes; signed/unsigned 32-bit; 64-bit Boolean), not from PyKMIP.
const EDGES: ReadonlyArray<{ name: string; item: TtlvItem; hex: string }> = [
  { name: 'Integer -1', item: ttlv.int(T, -1), hex: '4200200200000004 ffffffff00000000' },
  { name: 'Integer min', item: ttlv.int(T, -0x80000000), hex: '4200200200000004 8000000000000000' },
  { name: 'Enumeration max', item: ttlv.enum(T, 0xffffffff), hex: '4200200500000004 ffffffff00000000' },
  { name: 'Interval max', item: ttlv.interval(T, 0xffffffff), hex: '4200200a00000004 ffffffff00000000' },
  { name: 'Long Integer -1', item: ttlv.long(T, -1n), hex: '4200200300000008 ffffffffffffffff' },
  { name: 'Boolean False', item: ttlv.bool(T, false), hex: '4200200600000008 0000000000000000' },
  { name: 'Big Integer 0', item: ttlv.big(T, 0n), hex: '4200200400000008 0000000000000000' },
  {
    name: 'Big Integer 2^63-1 (fits 8 bytes)',
    item: ttlv.big(T, (1n << 63n) - 1n),
    hex: '4200200400000008 7fffffffffffffff',
  },
  {
    name: 'Big Integer 2^63 (needs a sign byte: 16)',
    item: ttlv.big(T, 1n << 63n),
    hex: '4200200400000010 0000000000000000 8000000000000000',
  },
  { name: 'Big Integer -2^63', item: ttlv.big(T, -(1n << 63n)), hex: '4200200400000008 8000000000000000' },
  {
    name: 'Big Integer -2^63-1',
    item: ttlv.big(T, -(1n << 63n) - 1n),
    hex: '4200200400000010 ffffffffffffffff 7fffffffffffffff',
  },
  { name: 'Date-Time before 1970', item: ttlv.date(T, -1), hex: '4200200900000008 ffffffffffffffff' },
  { name: 'Byte String empty', item: ttlv.bytes(T, Buffer.alloc(0)), hex: '4200200800000000' },
  {
    name: 'Text String multi-byte UTF-8',
    item: ttlv.text(T, 'é€😀'),
    hex: '4200200700000009 c3a9e282acf09f98 8000000000000000',
  },
  {
    name: 'Text String with a leading BOM keeps it',
    item: ttlv.text(T, '\ufeffA'),
    hex: '4200200700000004 efbbbf4100000000',
  },
  { name: 'empty Structure', item: ttlv.struct(Tag.RequestMessage, []), hex: '4200780100000000' },
  {
    name: 'extension tag 0x54xxxx',
    item: ttlv.struct(0x540001, [ttlv.text(0x54ffff, 'x')]),
    hex: '5400010100000010 54ffff0700000001 7800000000000000',
  },
];

type MessageName = keyof typeof MESSAGES;
const message = (name: MessageName): Buffer => hex(MESSAGES[name].hex);
const ALL_MESSAGES = Object.keys(MESSAGES) as MessageName[];

// ---------------------------------------------------------------------------------------

test('primitive vectors (kmip-vectors.md §1) encode to exactly the PyKMIP bytes and decode back', () => {
  for (const v of [...PRIMITIVES, ...EDGES]) {
    const bytes = hex(v.hex);
    assert.equal(unhex(encodeTtlv(v.item)), unhex(bytes), `encode ${v.name}`);
    assert.equal(encodedLength(v.item), bytes.length, `encodedLength ${v.name}`);
    assert.deepEqual(decodeTtlv(bytes), v.item, `decode ${v.name}`);
  }
});

test('Big Integer: a sign-extended (non-minimal) encoding still decodes to its value', () => {
  // 16 bytes for -1 and for 1: legal on the wire, although we always emit the minimal form.
  assert.deepEqual(decodeTtlv(hex('4200200400000010 ffffffffffffffff ffffffffffffffff')), ttlv.big(T, -1n));
  assert.deepEqual(decodeTtlv(hex('4200200400000010 0000000000000000 0000000000000001')), ttlv.big(T, 1n));
});

test('Big Integer of ~1 MiB decodes in linear time (regression: was quadratic)', () => {
  const len = (1 << 20) - 16;
  const buf = Buffer.alloc(8 + len, 0x5a);
  buf.write('42002004', 0, 'hex');
  buf.writeUInt32BE(len, 4);
  const started = performance.now();
  const item = decodeTtlv(buf);
  const ms = performance.now() - started;
  assert.equal(item.type, 'BigInteger');
  assert.ok(ms < 2000, `took ${ms.toFixed(0)} ms`);
  assert.ok(encodeTtlv(item).equals(buf));
});

test('every canonical and live message decodes and re-encodes byte-identically', () => {
  for (const name of ALL_MESSAGES) {
    const bytes = message(name);
    assert.equal(bytes.length, MESSAGES[name].bytes, `${name} fixture length`);
    const item = decodeTtlv(bytes);
    assert.equal(item.type, 'Structure', name);
    assert.equal(encodedLength(item), bytes.length, name);
    assert.equal(unhex(encodeTtlv(item)), unhex(bytes), `${name} re-encodes identically`);
    assert.ok(describeTtlv(item).split('\n').length === countItems(item), `${name} describe`);
  }
});

test('create_request decodes to the documented tree', () => {
  const msg = decodeTtlv(message('create_request'));
  assert.equal(msg.tag, Tag.RequestMessage);
  assert.deepEqual(at(msg, Tag.RequestHeader, Tag.ProtocolVersion), {
    tag: Tag.ProtocolVersion,
    type: 'Structure',
    value: [ttlv.int(Tag.ProtocolVersionMajor, 1), ttlv.int(Tag.ProtocolVersionMinor, 1)],
  });
  assert.deepEqual(at(msg, Tag.RequestHeader, Tag.BatchCount), ttlv.int(Tag.BatchCount, 1));
  assert.deepEqual(at(msg, Tag.BatchItem, Tag.Operation), ttlv.enum(Tag.Operation, Operation.Create));
  assert.deepEqual(
    at(msg, Tag.BatchItem, Tag.UniqueBatchItemId),
    ttlv.bytes(Tag.UniqueBatchItemId, hex('01')),
  );
  const payload = at(msg, Tag.BatchItem, Tag.RequestPayload);
  assert.deepEqual(at(payload, Tag.ObjectType), ttlv.enum(Tag.ObjectType, ObjectType.SymmetricKey));
  const attrs = children(at(payload, Tag.TemplateAttribute));
  assert.deepEqual(
    attrs.map((a) => at(a, Tag.AttributeName)),
    ['Cryptographic Algorithm', 'Cryptographic Length', 'Cryptographic Usage Mask', 'Name'].map((n) =>
      ttlv.text(Tag.AttributeName, n),
    ),
  );
  assert.deepEqual(at(attrs[1] as TtlvItem, Tag.AttributeValue), ttlv.int(Tag.AttributeValue, 256));
  assert.deepEqual(at(attrs[2] as TtlvItem, Tag.AttributeValue), ttlv.int(Tag.AttributeValue, 0x0c));
  assert.deepEqual(at(attrs[3] as TtlvItem, Tag.AttributeValue), {
    tag: Tag.AttributeValue,
    type: 'Structure',
    value: [ttlv.text(Tag.NameValue, 'vec-key'), ttlv.enum(Tag.NameType, 1)],
  });
});

test('the same Create request built with the ttlv builders encodes to the PyKMIP bytes', () => {
  const attr = (name: string, value: TtlvItem): TtlvItem =>
    ttlv.struct(Tag.Attribute, [ttlv.text(Tag.AttributeName, name), value]);
  const built = ttlv.struct(Tag.RequestMessage, [
    ttlv.struct(Tag.RequestHeader, [
      ttlv.struct(Tag.ProtocolVersion, [
        ttlv.int(Tag.ProtocolVersionMajor, 1),
        ttlv.int(Tag.ProtocolVersionMinor, 1),
      ]),
      ttlv.int(Tag.BatchCount, 1),
    ]),
    ttlv.struct(Tag.BatchItem, [
      ttlv.enum(Tag.Operation, Operation.Create),
      ttlv.bytes(Tag.UniqueBatchItemId, Buffer.from([1])),
      ttlv.struct(Tag.RequestPayload, [
        ttlv.enum(Tag.ObjectType, ObjectType.SymmetricKey),
        ttlv.struct(Tag.TemplateAttribute, [
          attr('Cryptographic Algorithm', ttlv.enum(Tag.AttributeValue, 3)),
          attr('Cryptographic Length', ttlv.int(Tag.AttributeValue, 256)),
          attr('Cryptographic Usage Mask', ttlv.int(Tag.AttributeValue, 0x0c)),
          attr(
            'Name',
            ttlv.struct(Tag.AttributeValue, [
              ttlv.text(Tag.NameValue, 'vec-key'),
              ttlv.enum(Tag.NameType, 1),
            ]),
          ),
        ]),
      ]),
    ]),
  ]);
  assert.equal(unhex(encodeTtlv(built)), unhex(message('create_request')));
});

test('responses and live captures carry the documented values', () => {
  const created = decodeTtlv(message('create_response'));
  assert.deepEqual(at(created, Tag.ResponseHeader, Tag.TimeStamp), ttlv.date(Tag.TimeStamp, 1600000000));
  assert.deepEqual(
    at(created, Tag.BatchItem, Tag.ResultStatus),
    ttlv.enum(Tag.ResultStatus, ResultStatus.Success),
  );
  assert.deepEqual(
    at(created, Tag.BatchItem, Tag.ResponsePayload, Tag.UniqueIdentifier),
    ttlv.text(Tag.UniqueIdentifier, '1'),
  );

  // ProxyKmipClient always sends a Username/Password credential with two empty Text Strings.
  const live = decodeTtlv(message('live_create_request'));
  assert.deepEqual(at(live, Tag.RequestHeader, Tag.Authentication, Tag.Credential, Tag.CredentialValue), {
    tag: Tag.CredentialValue,
    type: 'Structure',
    value: [ttlv.text(Tag.Username, ''), ttlv.text(Tag.Password, '')],
  });
  assert.equal(
    children(at(live, Tag.BatchItem)).some((c) => c.tag === Tag.UniqueBatchItemId),
    false,
    'no Unique Batch Item ID when Batch Count is 1',
  );
  assert.deepEqual(
    at(decodeTtlv(message('live_create_response')), Tag.ResponseHeader, Tag.TimeStamp),
    ttlv.date(Tag.TimeStamp, 1795824952),
  );

  const got = decodeTtlv(message('get_response'));
  const block = at(got, Tag.BatchItem, Tag.ResponsePayload, Tag.SymmetricKey, Tag.KeyBlock);
  assert.deepEqual(at(block, Tag.KeyFormatType), ttlv.enum(Tag.KeyFormatType, KeyFormatType.Raw));
  assert.deepEqual(
    at(block, Tag.KeyValue, Tag.KeyMaterial),
    ttlv.bytes(Tag.KeyMaterial, Buffer.from(Array.from({ length: 32 }, (_, i) => i))),
  );
  assert.deepEqual(at(block, Tag.CryptographicLength), ttlv.int(Tag.CryptographicLength, 256));

  const revoke = decodeTtlv(message('revoke_request'));
  assert.deepEqual(
    at(revoke, Tag.BatchItem, Tag.RequestPayload, Tag.RevocationReason, Tag.RevocationReasonCode),
    ttlv.enum(Tag.RevocationReasonCode, 6),
  );

  const notFound = decodeTtlv(message('error_response_item_not_found'));
  const item = at(notFound, Tag.BatchItem);
  assert.deepEqual(at(item, Tag.ResultStatus), ttlv.enum(Tag.ResultStatus, ResultStatus.OperationFailed));
  assert.deepEqual(at(item, Tag.ResultReason), ttlv.enum(Tag.ResultReason, ResultReason.ItemNotFound));
  assert.deepEqual(at(item, Tag.ResultMessage), ttlv.text(Tag.ResultMessage, 'Could not locate object: 1'));

  // PyKMIP's reply to an undecodable request: protocol 1.0 and no Operation in the batch item.
  const invalid = decodeTtlv(message('live_invalid_message_reply'));
  assert.deepEqual(
    at(invalid, Tag.ResponseHeader, Tag.ProtocolVersion, Tag.ProtocolVersionMinor),
    ttlv.int(Tag.ProtocolVersionMinor, 0),
  );
  assert.equal(
    children(at(invalid, Tag.BatchItem)).some((c) => c.tag === Tag.Operation),
    false,
  );
  assert.deepEqual(
    at(invalid, Tag.BatchItem, Tag.ResultReason),
    ttlv.enum(Tag.ResultReason, ResultReason.InvalidMessage),
  );
  assert.deepEqual(
    at(decodeTtlv(message('live_auth_failed_reply')), Tag.BatchItem, Tag.ResultReason),
    ttlv.enum(Tag.ResultReason, ResultReason.AuthenticationNotSuccessful),
  );
});

test('decoded Byte Strings are copies, not views of the input frame', () => {
  const frame = message('get_response');
  const material = at(decodeTtlv(frame), Tag.BatchItem, Tag.ResponsePayload, Tag.SymmetricKey, Tag.KeyBlock);
  const key = at(material, Tag.KeyValue, Tag.KeyMaterial);
  assert.equal(key.type, 'ByteString');
  if (key.type === 'ByteString') key.value.fill(0);
  assert.equal(unhex(frame), unhex(message('get_response')));
});

// ---------------------------------------------------------------------------------------
// Error paths: each asserts the stable code.

test('truncated header: HS_ERR_KMIP_TRUNCATED', () => {
  assertCode(() => decodeTtlv(Buffer.alloc(0)), 'HS_ERR_KMIP_TRUNCATED');
  assertCode(() => decodeTtlv(hex('42007801000000')), 'HS_ERR_KMIP_TRUNCATED');
  // A header cut short inside a Structure (4 bytes of a child header).
  assertCode(
    () => decodeTtlv(hex('4200780100000008 4200200200000000').subarray(0, 12)),
    'HS_ERR_KMIP_TRUNCATED',
  );
});

test('truncated body: HS_ERR_KMIP_TRUNCATED', () => {
  const full = message('create_request');
  for (const cut of [1, 7, 8, 100, full.length - 8]) {
    assertCode(() => decodeTtlv(full.subarray(0, full.length - cut)), 'HS_ERR_KMIP_TRUNCATED');
  }
  // The padding of the last item is part of the item: dropping it is truncation too.
  assertCode(() => decodeTtlv(hex('4200200200000004 00000008')), 'HS_ERR_KMIP_TRUNCATED');
  // A child that runs past the end of its parent (the bytes exist, but belong to no one).
  const err = assertCode(
    () => decodeTtlv(hex('4200780100000008 4200200200000004 0000000800000000')),
    'HS_ERR_KMIP_TRUNCATED',
  );
  assert.deepEqual(err.details, { offset: 8 });
});

test('huge declared lengths are truncation, not a crash (regression: int32 overflow in padding)', () => {
  // `(len + 7) & ~7` wrapped for len ≥ 0x7ffffff9, so these passed the bounds check and then
  // either misparsed the rest of the message or threw a RangeError from Buffer.
  for (const len of ['7ffffff9', '7fffffff', '80000000', 'fffffff8', 'fffffff9', 'ffffffff']) {
    for (const type of ['07', '08']) {
      const bytes = hex(`4200780100000010 420020${type}${len} 4142434400000000`);
      assertCode(() => decodeTtlv(bytes), 'HS_ERR_KMIP_TRUNCATED');
    }
  }
  assertCode(
    () => decodeTtlv(hex('4200780100000010 42002001fffffff8 4142434400000000')),
    'HS_ERR_KMIP_TRUNCATED',
  );
  assertCode(() => decodeTtlv(hex('42007801fffffff8 4142434400000000')), 'HS_ERR_KMIP_TRUNCATED');
  assertCode(() => decodeTtlv(hex('42002004fffffff8 4142434400000000')), 'HS_ERR_KMIP_TRUNCATED');
});

test('unknown type byte: HS_ERR_KMIP_BAD_TYPE', () => {
  for (const type of ['00', '0b', '0c', '42', '80', 'ff']) {
    assertCode(() => decodeTtlv(hex(`420020${type}00000004 0000000800000000`)), 'HS_ERR_KMIP_BAD_TYPE');
  }
  // Inside a structure too.
  assertCode(
    () => decodeTtlv(hex('4200780100000010 4200200b00000004 0000000800000000')),
    'HS_ERR_KMIP_BAD_TYPE',
  );
});

test('fixed-size types with the wrong length: HS_ERR_KMIP_BAD_LENGTH', () => {
  assertCode(() => decodeTtlv(hex('4200200200000008 0000000000000008')), 'HS_ERR_KMIP_BAD_LENGTH'); // Integer, 8
  assertCode(() => decodeTtlv(hex('4200200200000000')), 'HS_ERR_KMIP_BAD_LENGTH'); // Integer, 0
  assertCode(() => decodeTtlv(hex('4200200500000008 00000000000000ff')), 'HS_ERR_KMIP_BAD_LENGTH'); // Enum, 8
  assertCode(() => decodeTtlv(hex('4200200a00000008 00000000000d2f00')), 'HS_ERR_KMIP_BAD_LENGTH'); // Interval
  assertCode(() => decodeTtlv(hex('4200200300000004 0000000100000000')), 'HS_ERR_KMIP_BAD_LENGTH'); // Long, 4
  assertCode(() => decodeTtlv(hex('4200200900000004 47da67f800000000')), 'HS_ERR_KMIP_BAD_LENGTH'); // DateTime
  assertCode(() => decodeTtlv(hex('4200200600000004 0000000100000000')), 'HS_ERR_KMIP_BAD_LENGTH'); // Boolean
  // Big Integer: a positive multiple of 8 only.
  assertCode(() => decodeTtlv(hex('4200200400000000')), 'HS_ERR_KMIP_BAD_LENGTH');
  assertCode(() => decodeTtlv(hex('4200200400000004 ffffffff00000000')), 'HS_ERR_KMIP_BAD_LENGTH');
});

test('Boolean other than 0 or 1: HS_ERR_KMIP_BAD_LENGTH', () => {
  for (const v of ['0000000000000002', '0100000000000000', 'ffffffffffffffff', '8000000000000001']) {
    assertCode(() => decodeTtlv(hex(`4200200600000008 ${v}`)), 'HS_ERR_KMIP_BAD_LENGTH');
  }
});

test('Date-Time outside ±2^53 is refused rather than rounded', () => {
  assertCode(() => decodeTtlv(hex('4200200900000008 0020000000000000')), 'HS_ERR_KMIP_BAD_LENGTH');
  assertCode(() => decodeTtlv(hex('4200200900000008 8000000000000000')), 'HS_ERR_KMIP_BAD_LENGTH');
  assert.deepEqual(
    decodeTtlv(hex('4200200900000008 001fffffffffffff')),
    ttlv.date(T, Number.MAX_SAFE_INTEGER),
  );
  assert.deepEqual(
    decodeTtlv(hex('4200200900000008 ffe0000000000001')),
    ttlv.date(T, Number.MIN_SAFE_INTEGER),
  );
});

test('non-zero padding: HS_ERR_KMIP_BAD_PADDING', () => {
  assertCode(() => decodeTtlv(hex('4200200200000004 0000000800000001')), 'HS_ERR_KMIP_BAD_PADDING');
  assertCode(() => decodeTtlv(hex('4200200500000004 000000ff80000000')), 'HS_ERR_KMIP_BAD_PADDING');
  assertCode(
    () => decodeTtlv(hex('420020070000000b 48656c6c6f20576f 726c640000000100')),
    'HS_ERR_KMIP_BAD_PADDING',
  );
  assertCode(() => decodeTtlv(hex('4200200800000003 010203ff00000000')), 'HS_ERR_KMIP_BAD_PADDING');
  // In a real message: the padding after the Unique Batch Item ID (value at byte 0x68 of get_request).
  const bytes = message('get_request');
  assert.equal(bytes[0x68], 0x01);
  bytes[0x69] = 0x01;
  const err = assertCode(() => decodeTtlv(bytes), 'HS_ERR_KMIP_BAD_PADDING');
  assert.deepEqual(err.details, { offset: 0x69 });
});

test('Structure length not a multiple of 8: HS_ERR_KMIP_BAD_LENGTH', () => {
  assertCode(() => decodeTtlv(hex('4200780100000004 0000000000000000')), 'HS_ERR_KMIP_BAD_LENGTH');
  assertCode(() => decodeTtlv(hex('4200780100000001 0000000000000000')), 'HS_ERR_KMIP_BAD_LENGTH');
  const bytes = message('create_request');
  bytes.writeUInt32BE(0x16c, 4); // the top-level length, 4 short
  assertCode(() => decodeTtlv(bytes), 'HS_ERR_KMIP_BAD_LENGTH');
});

test('trailing bytes: HS_ERR_KMIP_TRAILING_BYTES', () => {
  const one = message('get_request');
  assertCode(() => decodeTtlv(Buffer.concat([one, Buffer.alloc(1)])), 'HS_ERR_KMIP_TRAILING_BYTES');
  assertCode(() => decodeTtlv(Buffer.concat([one, Buffer.alloc(8)])), 'HS_ERR_KMIP_TRAILING_BYTES');
  // Two whole messages back to back are not one message (that is the framer's job).
  const err = assertCode(() => decodeTtlv(Buffer.concat([one, one])), 'HS_ERR_KMIP_TRAILING_BYTES');
  assert.deepEqual(err.details, { offset: one.length });
});

test('invalid UTF-8 in a Text String: HS_ERR_KMIP_BAD_TEXT', () => {
  for (const bad of [
    '02 c328', // bad continuation byte
    '01 ff', // never valid
    '02 c0af', // overlong '/'
    '03 eda080', // UTF-16 surrogate encoded in UTF-8
    '01 e2', // cut-off sequence
    '04 f4908080', // beyond U+10FFFF
  ]) {
    const [len, body] = bad.split(' ') as [string, string];
    const value = Buffer.alloc(8);
    hex(body).copy(value);
    const bytes = Buffer.concat([hex(`42002007000000${len}`), value]);
    assertCode(() => decodeTtlv(bytes), 'HS_ERR_KMIP_BAD_TEXT');
  }
  // A Byte String with the same bytes is fine.
  assert.deepEqual(decodeTtlv(hex('4200200800000002 c328000000000000')), ttlv.bytes(T, hex('c328')));
});

test('message over maxMessageBytes: HS_ERR_KMIP_TOO_LARGE', () => {
  const bytes = message('create_request'); // 376 bytes
  const limits = (maxMessageBytes: number): TtlvLimits => ({ ...DEFAULT_TTLV_LIMITS, maxMessageBytes });
  assert.equal(decodeTtlv(bytes, limits(376)).tag, Tag.RequestMessage);
  assertCode(() => decodeTtlv(bytes, limits(375)), 'HS_ERR_KMIP_TOO_LARGE');
  // The default (1 MiB) counts the header: 8 + 2^20 - 8 is fine, one more 8-byte unit is not.
  const fits = Buffer.alloc(1 << 20);
  fits.write('4200780100000000', 'hex');
  fits.writeUInt32BE((1 << 20) - 8, 4);
  fits.write('42002008', 8, 'hex');
  fits.writeUInt32BE((1 << 20) - 16, 12);
  assert.equal(decodeTtlv(fits).tag, Tag.RequestMessage);
  assertCode(() => decodeTtlv(Buffer.alloc((1 << 20) + 8)), 'HS_ERR_KMIP_TOO_LARGE');
});

/** `depth` Structures nested inside each other, the innermost holding one Integer. */
function nested(depth: number): TtlvItem {
  let item: TtlvItem = ttlv.int(T, 1);
  for (let i = 0; i < depth; i++) item = ttlv.struct(Tag.Attribute, [item]);
  return item;
}

test('nesting over maxDepth: HS_ERR_KMIP_TOO_DEEP (the top-level message is depth 1)', () => {
  // The documented canonical messages go 7 deep (… Attribute Value > Name Value).
  assert.ok(decodeTtlv(message('create_request'), { ...DEFAULT_TTLV_LIMITS, maxDepth: 7 }));
  assertCode(
    () => decodeTtlv(message('create_request'), { ...DEFAULT_TTLV_LIMITS, maxDepth: 6 }),
    'HS_ERR_KMIP_TOO_DEEP',
  );
  // With the default of 16: an item at depth 16 is fine, one at depth 17 is refused.
  assert.equal(DEFAULT_TTLV_LIMITS.maxDepth, 16);
  const ok = encodeTtlv(nested(15));
  assert.deepEqual(decodeTtlv(ok), nested(15));
  assertCode(() => decodeTtlv(encodeTtlv(nested(16))), 'HS_ERR_KMIP_TOO_DEEP');
  const err = assertCode(() => decodeTtlv(encodeTtlv(nested(40))), 'HS_ERR_KMIP_TOO_DEEP');
  assert.deepEqual(
    err.details,
    { offset: 15 * 8 },
    'refused at the first structure too deep, not at the leaf',
  );
});

test('more than maxItems items: HS_ERR_KMIP_TOO_LARGE', () => {
  const bytes = message('create_request');
  const n = countItems(decodeTtlv(bytes));
  assert.equal(n, 26);
  assert.ok(decodeTtlv(bytes, { ...DEFAULT_TTLV_LIMITS, maxItems: n }));
  assertCode(() => decodeTtlv(bytes, { ...DEFAULT_TTLV_LIMITS, maxItems: n - 1 }), 'HS_ERR_KMIP_TOO_LARGE');
  // Default 65536: 65535 empty Text Strings in one Structure pass, 65536 do not.
  const flat = (count: number): Buffer => {
    const buf = Buffer.alloc(8 + count * 8);
    buf.write('42007801', 0, 'hex');
    buf.writeUInt32BE(count * 8, 4);
    for (let i = 1; i <= count; i++) buf.write('42002007', i * 8, 'hex');
    return buf;
  };
  assert.equal(children(decodeTtlv(flat(65535))).length, 65535);
  assertCode(() => decodeTtlv(flat(65536)), 'HS_ERR_KMIP_TOO_LARGE');
});

test('the encoder refuses a tag that is not 24 bits', () => {
  for (const tag of [-1, 0x1000000, 1.5, Number.NaN]) {
    assertCode(() => encodeTtlv(ttlv.int(tag, 1)), 'HS_ERR_INVALID_ARGUMENT');
  }
});

// ---------------------------------------------------------------------------------------
// TtlvFramer

/** Feeds `chunks` to a fresh framer; returns the messages in order and what is left over. */
function frame(chunks: Buffer[], max?: number): { messages: Buffer[]; pending: number } {
  const framer = max === undefined ? new TtlvFramer() : new TtlvFramer(max);
  const messages: Buffer[] = [];
  for (const c of chunks) messages.push(...framer.push(c));
  return { messages, pending: framer.pendingBytes };
}

test('TtlvFramer: every message comes out whole and in order at any split point', () => {
  const parts = ALL_MESSAGES.map(message);
  const stream = Buffer.concat(parts);
  const expected = parts.map(unhex);
  // Every two-way split of the whole stream (each boundary of each message, and inside headers).
  for (let i = 0; i <= stream.length; i++) {
    const { messages, pending } = frame([stream.subarray(0, i), stream.subarray(i)]);
    assert.deepEqual(messages.map(unhex), expected, `split at ${i}`);
    assert.equal(pending, 0);
  }
  // One byte at a time.
  const bytes = Array.from(stream, (b) => Buffer.from([b]));
  assert.deepEqual(frame(bytes).messages.map(unhex), expected);
  // Every three-way split of a shorter stream of three messages.
  const small = [message('get_request'), message('revoke_request'), hex('4200780100000000')];
  const s = Buffer.concat(small);
  for (let i = 0; i <= s.length; i++) {
    for (let j = i; j <= s.length; j++) {
      const { messages, pending } = frame([s.subarray(0, i), s.subarray(i, j), s.subarray(j)]);
      assert.deepEqual(messages.map(unhex), small.map(unhex), `split at ${i}, ${j}`);
      assert.equal(pending, 0);
    }
  }
  // All of it in one chunk, and each framed message decodes.
  const { messages } = frame([stream]);
  assert.deepEqual(messages.map(unhex), expected);
  for (const m of messages) assert.equal(decodeTtlv(m).type, 'Structure');
});

test('TtlvFramer: returns nothing until a message is whole, and reports pending bytes', () => {
  const framer = new TtlvFramer();
  const msg = message('get_request');
  assert.deepEqual(framer.push(msg.subarray(0, 3)), []);
  assert.equal(framer.pendingBytes, 3);
  assert.deepEqual(framer.push(msg.subarray(3, 100)), []);
  assert.equal(framer.pendingBytes, 100);
  assert.deepEqual(framer.push(Buffer.alloc(0)), []);
  const out = framer.push(Buffer.concat([msg.subarray(100), msg.subarray(0, 9)]));
  assert.deepEqual(out.map(unhex), [unhex(msg)]);
  assert.equal(framer.pendingBytes, 9);
});

test('TtlvFramer: a too-large declared length is refused as soon as the 8-byte header arrives', () => {
  // Header only, no body at all: the framer must not wait for (or buffer) the body.
  const framer = new TtlvFramer(1024);
  assert.deepEqual(framer.push(hex('420078010000')), []);
  assertCode(() => framer.push(hex('03f9')), 'HS_ERR_KMIP_TOO_LARGE'); // 8 + 0x3f9 = 1025
  // Exactly at the limit is accepted and waits for the body.
  const atLimit = new TtlvFramer(1024);
  assert.deepEqual(atLimit.push(hex('42007801000003f8')), []);
  assert.equal(atLimit.pendingBytes, 8);
  // Default limit (1 MiB, header included) and the largest declarable length.
  assertCode(() => new TtlvFramer().push(hex('4200780100100000')), 'HS_ERR_KMIP_TOO_LARGE');
  assertCode(() => new TtlvFramer().push(hex('42007801ffffffff')), 'HS_ERR_KMIP_TOO_LARGE');
  assert.deepEqual(new TtlvFramer().push(hex('42007801000ffff8')), []);
  // After a whole message in the same chunk: the good message is still delivered, and
  // the refusal comes with the next push.
  const mixed = new TtlvFramer(1024);
  assert.deepEqual(mixed.push(Buffer.concat([message('get_request'), hex('42007b0100100000')])), [
    message('get_request'),
  ]);
  assertCode(() => mixed.push(Buffer.alloc(0)), 'HS_ERR_KMIP_TOO_LARGE');
});

test('TtlvFramer: a top level that is not a Structure is refused', () => {
  assertCode(() => new TtlvFramer().push(hex('4200200200000004 0000000800000000')), 'HS_ERR_KMIP_BAD_TYPE');
  assertCode(() => new TtlvFramer().push(hex('4200780700000000')), 'HS_ERR_KMIP_BAD_TYPE');
  // Known as soon as the header is complete, before any body.
  const framer = new TtlvFramer();
  assert.deepEqual(framer.push(hex('42007808000000')), []);
  assertCode(() => framer.push(hex('10')), 'HS_ERR_KMIP_BAD_TYPE');
});
