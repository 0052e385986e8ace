/**
 * The frame codec with byte fixtures. The vectors were computed independently of this code,
 * from the format in frame.ts, with Python's `cryptography` (AESGCM):
 *
 *   key = bytes(range(32)); nonce = a0a1a2a3a4a5a6a7; id = b'vec-0001'
 *   hdr(t, c, n, len) = b'HSMF' + [1, t, c, 0] + u32be(n) + u32be(len)
 *   START = hdr(1,1,0,8) + id + AESGCM(key).encrypt(nonce+u32be(0), b'', id+hdr)
 *   DATA  = hdr(2,1,n,len) + AESGCM(key).encrypt(nonce+u32be(n), body, id+hdr)
 *   END   = hdr(3,1,3,8) + AESGCM(key).encrypt(nonce+u32be(3), u64be(24), id+hdr)
 */
import assert from 'node:assert/strict';
import { createCipheriv, randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { HypersealError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { FRAME, FrameOpener, FrameSealer, FrameType, openStream, sealStream } from './frame.js';
import type { FrameCodecParams } from './frame.js';

const KEY = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
const NONCE = Buffer.from('a0a1a2a3a4a5a6a7', 'hex');
const ID = 'vec-0001';
const DATA = Buffer.concat([Buffer.from('5145564d00000003', 'hex'), Buffer.from('hello migration!')]);
const VECTOR: FrameCodecParams = { migrationId: ID, cipher: 'aes-256-gcm', key: KEY, nonce: NONCE };
const PLAIN: FrameCodecParams = { migrationId: ID, cipher: 'none' };

const ENCRYPTED_HEX =
  // START: header, "vec-0001", tag
  '48534d46010101000000000000000008' +
  '7665632d30303031' +
  '6404513f1695ff1edc0b308417fd3b86' +
  // DATA 1 (16 bytes)
  '48534d46010201000000000100000010' +
  '62c60169745068d2abd5dd5505ad63cb' +
  '35378176c799ee5787f8680fec3d8286' +
  // DATA 2 (8 bytes)
  '48534d46010201000000000200000008' +
  'b1e2c4f5cf0b6fa3' +
  'b4bab5e6bbfd7eca46ecd5d3294d7fff' +
  // END (total 24)
  '48534d46010301000000000300000008' +
  '0d12a0bef7ec598f' +
  'bc45c3a39274846c35cc0746170151a5';
const ENCRYPTED_ACK_HEX =
  '48534d4601040100ffffffff00000008' + '231a55b592c7b0b5' + '94fb1c403372ac9a452e58b226849251';
const PLAIN_HEX =
  '48534d46010100000000000000000008' +
  '7665632d30303031' +
  '48534d46010200000000000100000010' +
  '5145564d0000000368656c6c6f206d69' +
  '48534d46010200000000000200000008' +
  '67726174696f6e21' +
  '48534d46010300000000000300000008' +
  '0000000000000018';
const PLAIN_ACK_HEX = '48534d4601040000ffffffff00000008' + '0000000000000018';

function codeOf(fn: () => unknown): ErrorCode | 'none' {
  try {
    fn();
  } catch (err) {
    if (err instanceof HypersealError) return err.code;
    throw err;
  }
  return 'none';
}

function expectCode(fn: () => unknown, code: ErrorCode): HypersealError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof HypersealError, `expected a HypersealError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}, nothing was thrown`);
}

function fresh(cipher: 'aes-256-gcm' | 'none' = 'aes-256-gcm', id = 'mig-1'): FrameCodecParams {
  return cipher === 'none'
    ? { migrationId: id, cipher }
    : { migrationId: id, cipher, key: randomBytes(32), nonce: randomBytes(8) };
}

/** Splits a sealed stream into its frames (trusting the headers: test streams only). */
function frames(stream: Buffer, tagBytes: number): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < stream.length;) {
    const len = stream.readUInt32BE(at + 12);
    const size = FRAME.headerBytes + len + tagBytes;
    out.push(stream.subarray(at, at + size));
    at += size;
  }
  return out;
}

/** Feeds `stream` in pieces; returns what was released before success or the error. */
function feed(
  params: FrameCodecParams,
  stream: Buffer,
  piece = 7,
): { released: Buffer; error: HypersealError | undefined } {
  const opener = new FrameOpener(params);
  const released: Buffer[] = [];
  try {
    for (let at = 0; at < stream.length; at += piece) {
      released.push(...opener.push(stream.subarray(at, at + piece)));
    }
    opener.finish();
    return { released: Buffer.concat(released), error: undefined };
  } catch (err) {
    assert.ok(err instanceof HypersealError);
    return { released: Buffer.concat(released), error: err };
  }
}

/** A frame built from the spec with node:crypto directly, for streams the sealer refuses to make. */
function rawFrame(
  p: { id: string; key: Buffer; nonce: Buffer },
  type: number,
  counter: number,
  body: Buffer,
  clearBody = false,
): Buffer {
  const header = Buffer.alloc(16);
  header.write('HSMF', 0, 'latin1');
  header[4] = 1;
  header[5] = type;
  header[6] = 1;
  header.writeUInt32BE(counter, 8);
  header.writeUInt32BE(body.length, 12);
  const iv = Buffer.concat([p.nonce, Buffer.alloc(4)]);
  iv.writeUInt32BE(counter, 8);
  const c = createCipheriv('aes-256-gcm', p.key, iv);
  c.setAAD(Buffer.concat([Buffer.from(p.id), header]));
  const ct = clearBody ? body : c.update(body);
  if (clearBody) c.update(Buffer.alloc(0));
  c.final();
  return Buffer.concat([header, ct, c.getAuthTag()]);
}

void test('vector: AES-256-GCM stream, byte for byte, and back', () => {
  const stream = sealStream(VECTOR, DATA, 16);
  assert.equal(stream.toString('hex'), ENCRYPTED_HEX);
  assert.deepEqual(openStream(VECTOR, stream), DATA);
  // One byte at a time exercises every boundary of the push parser.
  const { released, error } = feed(VECTOR, stream, 1);
  assert.equal(error, undefined);
  assert.deepEqual(released, DATA);
});

void test('vector: plaintext mode is the same framing without tags', () => {
  const stream = sealStream(PLAIN, DATA, 16);
  assert.equal(stream.toString('hex'), PLAIN_HEX);
  assert.deepEqual(openStream(PLAIN, stream), DATA);
  assert.ok(stream.includes(Buffer.from('hello migration!').subarray(0, 8)));
});

void test('vector: the ACK, and the sealer accepts only an authentic one for every byte', () => {
  for (const [params, hex] of [
    [VECTOR, ENCRYPTED_ACK_HEX],
    [PLAIN, PLAIN_ACK_HEX],
  ] as const) {
    const opener = new FrameOpener(params);
    opener.push(sealStream(params, DATA, 16));
    opener.finish();
    const ack = Buffer.concat(opener.acknowledge());
    assert.equal(ack.toString('hex'), hex);

    const sealer = new FrameSealer(params);
    sealer.start();
    sealer.seal([DATA]);
    sealer.end();
    assert.equal(sealer.ackBytes, ack.length);
    sealer.verifyAck(ack);
  }
  // Tampered ACKs are refused: each byte of the encrypted ACK matters.
  const good = Buffer.from(ENCRYPTED_ACK_HEX, 'hex');
  for (let i = 0; i < good.length; i++) {
    const bad = Buffer.from(good);
    bad[i] = (bad[i] as number) ^ 0x01;
    const sealer = new FrameSealer(VECTOR);
    sealer.start();
    sealer.seal([DATA]);
    sealer.end();
    assert.match(
      codeOf(() => sealer.verifyAck(bad)),
      /^HS_ERR_MIGRATION_/,
      `ACK byte ${i}`,
    );
  }
  // An authentic ACK for fewer bytes than were sent.
  const short = new FrameSealer(VECTOR);
  short.start();
  short.seal([DATA, Buffer.from('x')]);
  short.end();
  expectCode(() => short.verifyAck(good), 'HS_ERR_MIGRATION_TRUNCATED');
});

void test('round trip: sizes, frame sizes, chunkings, both modes', () => {
  for (const cipher of ['aes-256-gcm', 'none'] as const) {
    for (const size of [0, 1, 4095, 4096, 65_537, 1_000_003]) {
      const data = randomBytes(size);
      for (const frameBytes of [4096, 65_536, FRAME.maxPayloadBytes]) {
        const params = fresh(cipher);
        const stream = sealStream(params, data, frameBytes);
        const overhead = FRAME.headerBytes + (cipher === 'none' ? 0 : FRAME.tagBytes);
        const dataFrames = Math.ceil(size / frameBytes);
        assert.equal(stream.length, size + (dataFrames + 2) * overhead + 'mig-1'.length + 8);
        const { released, error } = feed(params, stream, 65_536 - 3);
        assert.equal(error, undefined);
        assert.ok(released.equals(data), `${cipher} ${size}/${frameBytes}`);
      }
    }
  }
});

void test('a frame seals several pieces without concatenating them', () => {
  const params = fresh();
  const sealer = new FrameSealer(params);
  const parts = [randomBytes(10), randomBytes(70_000), randomBytes(1)];
  const stream = Buffer.concat([...sealer.start(), ...sealer.seal(parts), ...sealer.end()]);
  assert.equal(frames(stream, 16).length, 3);
  assert.deepEqual(openStream(params, stream), Buffer.concat(parts));
  const plain = new FrameSealer(fresh('none'));
  plain.start();
  const out = plain.seal(parts);
  // Plaintext mode: the caller's buffers themselves, after the header.
  assert.equal(out[1], parts[0]);
  assert.equal(out[2], parts[1]);
});

void test('flipping any one byte of an encrypted stream is refused, and nothing altered is released', () => {
  const data = randomBytes(3 * 1024 + 100);
  const params = fresh();
  const stream = sealStream(params, data, 1024);
  const seen = new Set<string>();
  for (let i = 0; i < stream.length; i++) {
    for (const mask of [0x01, 0x80]) {
      const bad = Buffer.from(stream);
      bad[i] = (bad[i] as number) ^ mask;
      const { released, error } = feed(params, bad, 333);
      assert.ok(error !== undefined, `flip of byte ${i} (mask ${mask}) was accepted`);
      assert.match(error.code, /^HS_ERR_MIGRATION_/);
      seen.add(error.code);
      // What reached "QEMU" before the refusal is an untouched prefix of the stream.
      assert.ok(released.equals(data.subarray(0, released.length)), `byte ${i}: altered bytes released`);
    }
  }
  // Body and tag flips fail the tag; header flips are caught earlier by what they break.
  for (const code of [
    'HS_ERR_MIGRATION_BAD_TAG',
    'HS_ERR_MIGRATION_BAD_FRAME',
    'HS_ERR_MIGRATION_OUT_OF_ORDER',
    'HS_ERR_MIGRATION_WRONG_ID',
    'HS_ERR_MIGRATION_FRAME_TOO_LARGE',
    'HS_ERR_MIGRATION_TRUNCATED',
  ]) {
    assert.ok(seen.has(code), `no flip produced ${code}: ${[...seen].join(', ')}`);
  }
});

void test('plaintext mode carries no integrity: a body flip passes, header flips do not', () => {
  const params = fresh('none');
  const data = Buffer.from('0123456789abcdef'.repeat(64));
  const stream = sealStream(params, data, 256);
  const bodyByte = FRAME.headerBytes + 'mig-1'.length + FRAME.headerBytes + 5;
  const bad = Buffer.from(stream);
  bad[bodyByte] = (bad[bodyByte] as number) ^ 1;
  const { released, error } = feed(params, bad);
  assert.equal(error, undefined);
  assert.notDeepEqual(released, data);
  const counterByte = FRAME.headerBytes + 'mig-1'.length + 11;
  const bad2 = Buffer.from(stream);
  bad2[counterByte] = (bad2[counterByte] as number) ^ 1;
  assert.equal(feed(params, bad2).error?.code, 'HS_ERR_MIGRATION_OUT_OF_ORDER');
});

void test('a dropped frame, two swapped frames and a repeated frame are refused', () => {
  const params = fresh();
  const data = randomBytes(10_000);
  const f = frames(sealStream(params, data, 4096), 16);
  assert.equal(f.length, 5); // START, 3 DATA, END
  const [start, d1, d2, d3, end] = f as [Buffer, Buffer, Buffer, Buffer, Buffer];

  const dropped = feed(params, Buffer.concat([start, d1, d3, end]));
  assert.equal(dropped.error?.code, 'HS_ERR_MIGRATION_OUT_OF_ORDER');
  assert.match(dropped.error?.message ?? '', /frame 3 .* where frame 2 was due/);
  assert.deepEqual(dropped.released, data.subarray(0, 4096));

  const swapped = feed(params, Buffer.concat([start, d2, d1, d3, end]));
  assert.equal(swapped.error?.code, 'HS_ERR_MIGRATION_OUT_OF_ORDER');
  assert.equal(swapped.released.length, 0);

  const repeated = feed(params, Buffer.concat([start, d1, d1, d2, d3, end]));
  assert.equal(repeated.error?.code, 'HS_ERR_MIGRATION_OUT_OF_ORDER');
  assert.match(repeated.error?.message ?? '', /replayed/);

  const droppedEnd = feed(params, Buffer.concat([start, d1, d2, d3]));
  assert.equal(droppedEnd.error?.code, 'HS_ERR_MIGRATION_TRUNCATED');
  assert.deepEqual(droppedEnd.released, data);

  const droppedStart = feed(params, Buffer.concat([d1, d2, d3, end]));
  assert.equal(droppedStart.error?.code, 'HS_ERR_MIGRATION_OUT_OF_ORDER');
});

void test('frames from an earlier migration are refused: another id, or the same id with another key', () => {
  const data = randomBytes(20_000);
  const earlier = fresh('aes-256-gcm', 'mig-earlier');
  const recorded = sealStream(earlier, data, 4096);
  // The whole recording replayed to the receiver of a later migration.
  const later = fresh('aes-256-gcm', 'mig-later');
  const replay = feed(later, recorded);
  assert.equal(replay.error?.code, 'HS_ERR_MIGRATION_WRONG_ID');
  assert.match(replay.error?.message ?? '', /mig-earlier/);
  assert.equal(replay.released.length, 0);

  // A retry of the same migration id gets a new key and nonce: the recording fails its tags.
  const retry = { ...fresh('aes-256-gcm', 'mig-earlier') };
  const replay2 = feed(retry, recorded);
  assert.equal(replay2.error?.code, 'HS_ERR_MIGRATION_BAD_TAG');
  assert.equal(replay2.released.length, 0);

  // Spliced: the later migration's genuine START, then a recorded DATA frame with the counter
  // the receiver expects next. Only the tag can tell, and it does.
  const genuine = frames(sealStream(later, data, 4096), 16);
  const old = frames(recorded, 16);
  const spliced = feed(later, Buffer.concat([genuine[0] as Buffer, old[1] as Buffer]));
  assert.equal(spliced.error?.code, 'HS_ERR_MIGRATION_BAD_TAG');
  assert.equal(spliced.released.length, 0);
});

void test('truncation: cut anywhere before the end of END, or an END that counts other bytes', () => {
  const params = fresh();
  const data = randomBytes(9_000);
  const stream = sealStream(params, data, 4096);
  for (let cut = 0; cut < stream.length; cut += 97) {
    const { error } = feed(params, stream.subarray(0, cut), 50);
    assert.equal(error?.code, 'HS_ERR_MIGRATION_TRUNCATED', `cut at ${cut}`);
  }
  assert.equal(feed(params, stream.subarray(0, stream.length - 1)).error?.code, 'HS_ERR_MIGRATION_TRUNCATED');

  // An authentic END (right key, right counter) whose total disagrees: only a sender with
  // the key could make it, so it is built here from the spec directly.
  const raw = { id: 'mig-1', key: params.key as Buffer, nonce: params.nonce as Buffer };
  const total = Buffer.alloc(8);
  total.writeBigUInt64BE(BigInt(data.length + 1));
  const f = frames(stream, 16);
  const forged = Buffer.concat([...f.slice(0, -1), rawFrame(raw, FrameType.END, f.length - 1, total)]);
  const { error } = feed(params, forged);
  assert.equal(error?.code, 'HS_ERR_MIGRATION_TRUNCATED');
  assert.match(error?.message ?? '', /END says the stream has 9001 bytes but 9000 arrived/);
});

void test('an oversized length is refused from the header alone, before any body byte', () => {
  const params = fresh();
  const raw = { id: 'mig-1', key: params.key as Buffer, nonce: params.nonce as Buffer };
  const start = rawFrame(raw, FrameType.START, 0, Buffer.from('mig-1'), true);
  for (const length of [FRAME.maxPayloadBytes + 1, 0xffffffff]) {
    const opener = new FrameOpener(params);
    assert.deepEqual(opener.push(start), []);
    assert.ok(opener.started);
    const header = Buffer.from(start.subarray(0, 16));
    header[5] = FrameType.DATA;
    header.writeUInt32BE(1, 8);
    header.writeUInt32BE(length, 12);
    const before = process.memoryUsage().arrayBuffers;
    const err = expectCode(() => opener.push(header), 'HS_ERR_MIGRATION_FRAME_TOO_LARGE');
    assert.equal(err.details?.length, length);
    // Nothing near the declared size was allocated for it.
    assert.ok(process.memoryUsage().arrayBuffers - before < 64 * 1024);
    // Refused for good.
    expectCode(() => opener.push(Buffer.alloc(1)), 'HS_ERR_MIGRATION_FRAME_TOO_LARGE');
  }
  // A lower limit of the receiver's own applies the same way.
  const small = new FrameOpener({ ...params, maxPayloadBytes: 4096 });
  const stream = sealStream(params, randomBytes(4097), 8192);
  expectCode(() => small.push(stream), 'HS_ERR_MIGRATION_FRAME_TOO_LARGE');
  // START carries an id of at most 64 bytes.
  const longStart = Buffer.from(start.subarray(0, 16));
  longStart.writeUInt32BE(65, 12);
  expectCode(() => new FrameOpener(params).push(longStart), 'HS_ERR_MIGRATION_FRAME_TOO_LARGE');
});

void test('a plaintext stream is never accepted where encryption was agreed, nor the reverse', () => {
  const id = 'mig-mode';
  const plain = sealStream({ migrationId: id, cipher: 'none' }, randomBytes(100));
  const enc = fresh('aes-256-gcm', id);
  const err = expectCode(() => openStream(enc, plain), 'HS_ERR_MIGRATION_BAD_FRAME');
  assert.match(err.message, /sends none frames but this migration is aes-256-gcm/);
  expectCode(
    () => openStream({ migrationId: id, cipher: 'none' }, sealStream(enc, randomBytes(100))),
    'HS_ERR_MIGRATION_BAD_FRAME',
  );
});

void test('bytes after END, frames out of place, bad magic and version are refused', () => {
  const params = fresh();
  const stream = sealStream(params, randomBytes(100));
  expectCode(
    () => openStream(params, Buffer.concat([stream, Buffer.from([0])])),
    'HS_ERR_MIGRATION_BAD_FRAME',
  );
  const f = frames(stream, 16);
  // A second START in the middle (its counter is right, its place is not).
  const raw = { id: 'mig-1', key: params.key as Buffer, nonce: params.nonce as Buffer };
  const midStart = rawFrame(raw, FrameType.START, 1, Buffer.from('mig-1'), true);
  expectCode(
    () => openStream(params, Buffer.concat([f[0] as Buffer, midStart])),
    'HS_ERR_MIGRATION_BAD_FRAME',
  );
  // An ACK in the sender's direction.
  const ack = rawFrame(raw, FrameType.ACK, 1, Buffer.alloc(8));
  expectCode(() => openStream(params, Buffer.concat([f[0] as Buffer, ack])), 'HS_ERR_MIGRATION_BAD_FRAME');
  for (const [offset, value] of [
    [0, 0x00],
    [4, 2],
    [5, 9],
    [7, 1],
  ] as const) {
    const bad = Buffer.from(stream);
    bad[offset] = value;
    expectCode(() => openStream(params, bad), 'HS_ERR_MIGRATION_BAD_FRAME');
  }
});

void test('counters never wrap: the sealer stops, leaving room for END', () => {
  const params = { ...fresh(), maxCounter: 3 };
  const sealer = new FrameSealer(params);
  const out = [...sealer.start(), ...sealer.seal([Buffer.from('a')]), ...sealer.seal([Buffer.from('b')])];
  expectCode(() => sealer.seal([Buffer.from('c')]), 'HS_ERR_MIGRATION_COUNTER_EXHAUSTED');
  // A failed sealer stays failed.
  expectCode(() => sealer.end(), 'HS_ERR_INTERNAL');
  // The receiver enforces the same limit on a stream that goes past it.
  const big = sealStream({ ...params, maxCounter: FRAME.maxCounter }, Buffer.from('abc'), 4096);
  assert.equal(openStream(params, big).toString(), 'abc');
  const tooLong = sealStream({ ...params, maxCounter: FRAME.maxCounter }, randomBytes(3 * 4096), 4096);
  expectCode(() => openStream(params, tooLong), 'HS_ERR_MIGRATION_COUNTER_EXHAUSTED');
  assert.equal(Buffer.concat(out).length > 0, true);
  assert.equal(FRAME.maxCounter, 0xfffffffe);
  assert.equal(FRAME.ackCounter, 0xffffffff);
});

void test('parameters: key and nonce sizes, ids, modes; keys are copied and zeroized on dispose', () => {
  const good = fresh();
  expectCode(() => new FrameSealer({ ...good, key: randomBytes(31) }), 'HS_ERR_MIGRATION_BAD_PARAMS');
  expectCode(() => new FrameSealer({ ...good, key: randomBytes(33) }), 'HS_ERR_MIGRATION_BAD_PARAMS');
  expectCode(() => new FrameSealer({ ...good, nonce: randomBytes(12) }), 'HS_ERR_MIGRATION_BAD_PARAMS');
  expectCode(
    () => new FrameOpener({ migrationId: 'x', cipher: 'aes-256-gcm' }),
    'HS_ERR_MIGRATION_BAD_PARAMS',
  );
  expectCode(() => new FrameSealer({ ...good, key: Buffer.alloc(32) }), 'HS_ERR_MIGRATION_BAD_PARAMS');
  expectCode(
    () => new FrameSealer({ migrationId: 'x', cipher: 'none', key: randomBytes(32) }),
    'HS_ERR_MIGRATION_BAD_PARAMS',
  );
  for (const id of ['', 'a b', 'é', '-x', 'x'.repeat(65)]) {
    expectCode(() => new FrameSealer({ ...good, migrationId: id }), 'HS_ERR_MIGRATION_BAD_PARAMS');
  }
  expectCode(
    () => new FrameSealer({ ...good, cipher: 'aes-128-gcm' as 'aes-256-gcm' }),
    'HS_ERR_MIGRATION_BAD_PARAMS',
  );

  const key = randomBytes(32);
  const copy = Buffer.from(key);
  const sealer = new FrameSealer({ ...good, key });
  key.fill(0); // the caller forgets its copy at once; the sealer has its own
  sealer.start();
  sealer.seal([Buffer.from('x')]);
  const inner = Reflect.get(Reflect.get(sealer, 'p') as object, 'key') as Buffer;
  assert.deepEqual(inner, copy);
  sealer.dispose();
  assert.ok(
    inner.every((b) => b === 0),
    'key zeroized',
  );
  expectCode(() => sealer.seal([Buffer.from('y')]), 'HS_ERR_INTERNAL');

  const opener = new FrameOpener(good);
  const innerO = Reflect.get(Reflect.get(opener, 'p') as object, 'key') as Buffer;
  opener.dispose();
  assert.ok(innerO.every((b) => b === 0));
});
