/**
 * The migration frame codec: pure, no I/O. A migration stream (the bytes QEMU writes for
 * `migrate`) is cut into frames; each is sealed with AES-256-GCM under a one-time key, or
 * sent in the clear with the same framing (cipher `none`, for migrations whose setting is
 * `disabled` or an `opportunistic` fallback, and as the benchmark baseline).
 *
 * A frame, all integers big-endian:
 *
 *   0   4  magic "HSMF"
 *   4   1  version (1)
 *   5   1  type: 1 START, 2 DATA, 3 END, 4 ACK
 *   6   1  cipher: 0 none, 1 aes-256-gcm
 *   7   1  reserved, 0
 *   8   4  frame counter
 *  12   4  body length (bytes between the header and the tag)
 *  16   …  body
 *   …  16  GCM tag (aes-256-gcm only)
 *
 * IV = 64-bit per-migration nonce ‖ 32-bit counter; AAD = migration id (UTF-8) ‖ the
 * 16-byte header, so the header (type, counter, length, cipher) is authenticated and a
 * frame cannot be moved to another migration, position or mode. The sender's frames are
 * START (counter 0, body = the migration id in the clear, authenticated as AAD: the
 * receiver can say "wrong migration" before it says "bad tag"), DATA (counters 1, 2, …,
 * body = 1 to 1 MiB of the stream) and END (the next counter, body = the total number of
 * stream bytes as a u64, encrypted). The receiver takes frames only in strict counter
 * order, so a dropped, reordered, replayed or altered frame, a missing END or a wrong
 * total stops the stream before any unauthenticated byte is released. ACK goes the other
 * way, once: the receiver's confirmation that it verified END and delivered every byte,
 * under the counter 0xFFFFFFFF that the sender's frames never reach (so the two
 * directions never share an IV).
 *
 * Limits are checked on the header, before a body byte is buffered or a buffer allocated.
 * Errors are HypersealErrors with distinct codes (see the HS_ERR_MIGRATION_ rows of
 * docs/errors.md); a sealer or opener that has failed stays failed.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import type { CipherGCM, DecipherGCM } from 'node:crypto';
import { HypersealError } from '../errors.js';
import type { ErrorCode } from '../errors.js';

/** The ciphers a migration channel can run with; `none` is the same framing without encryption. */
export const MIGRATION_CIPHERS = ['aes-256-gcm', 'none'] as const;
export type MigrationCipher = (typeof MIGRATION_CIPHERS)[number];

export const FrameType = { START: 1, DATA: 2, END: 3, ACK: 4 } as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

/** The cipher byte of the header. */
export const CipherId = { none: 0, 'aes-256-gcm': 1 } as const satisfies Record<MigrationCipher, number>;

export const FRAME = {
  /** "HSMF": Hyperseal migration frame. */
  magic: 0x48534d46,
  version: 1,
  headerBytes: 16,
  tagBytes: 16,
  keyBytes: 32,
  nonceBytes: 8,
  /** The largest DATA body the protocol allows; a longer one is refused from its header. */
  maxPayloadBytes: 1024 * 1024,
  /** The smallest frame size a sender may be configured with (a frame may carry less). */
  minFramePayloadBytes: 4096,
  /** Sender default: large enough to amortise a frame's cost, small enough to stream. */
  defaultFramePayloadBytes: 256 * 1024,
  /** The last counter a sender's frame may carry; 0xFFFFFFFF is the receiver's ACK. */
  maxCounter: 0xfffffffe,
  ackCounter: 0xffffffff,
  /** END and ACK bodies: a u64 byte count. */
  countBytes: 8,
  maxMigrationIdBytes: 64,
} as const;

/** Migration ids: what the manager names a migration with (a UUID, typically). */
const MIGRATION_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;

export interface FrameCodecParams {
  migrationId: string;
  cipher: MigrationCipher;
  /** 32 bytes, for aes-256-gcm. Copied: the caller zeroizes its own buffer. */
  key?: Buffer;
  /** 8 bytes, for aes-256-gcm. */
  nonce?: Buffer;
  /**
   * Lowers the last usable counter (default and maximum FRAME.maxCounter); a lower limit
   * only ends a stream sooner. Exists so exhaustion can be tested without 2^32 frames.
   */
  maxCounter?: number;
}

export interface FrameHeader {
  type: FrameType;
  cipher: number;
  counter: number;
  length: number;
}

function fail(code: ErrorCode, message: string, details?: Record<string, unknown>): never {
  throw new HypersealError(code, message, details);
}

/** Encodes a header (no checks beyond the field widths). */
export function encodeFrameHeader(h: FrameHeader): Buffer {
  const b = Buffer.allocUnsafe(FRAME.headerBytes);
  b.writeUInt32BE(FRAME.magic, 0);
  b[4] = FRAME.version;
  b[5] = h.type;
  b[6] = h.cipher;
  b[7] = 0;
  b.writeUInt32BE(h.counter, 8);
  b.writeUInt32BE(h.length, 12);
  return b;
}

/** Decodes the fixed fields; refuses a wrong magic, version, type or reserved byte. */
export function decodeFrameHeader(b: Buffer): FrameHeader {
  if (b.length < FRAME.headerBytes) fail('HS_ERR_MIGRATION_TRUNCATED', 'frame header is incomplete');
  if (b.readUInt32BE(0) !== FRAME.magic) {
    fail('HS_ERR_MIGRATION_BAD_FRAME', 'not a migration frame (bad magic)', {
      magic: b.subarray(0, 4).toString('hex'),
    });
  }
  if (b[4] !== FRAME.version) {
    fail('HS_ERR_MIGRATION_BAD_FRAME', `migration frame version ${b[4]} is not supported (want 1)`);
  }
  const type = b[5] as number;
  if (type < FrameType.START || type > FrameType.ACK) {
    fail('HS_ERR_MIGRATION_BAD_FRAME', `unknown migration frame type ${type}`);
  }
  if (b[7] !== 0) fail('HS_ERR_MIGRATION_BAD_FRAME', 'migration frame header has a non-zero reserved byte');
  return {
    type: type as FrameType,
    cipher: b[6] as number,
    counter: b.readUInt32BE(8),
    length: b.readUInt32BE(12),
  };
}

const TYPE_NAMES: Record<number, string> = { 1: 'START', 2: 'DATA', 3: 'END', 4: 'ACK' };

/** Validated, owned copies of the parameters both ends need. */
class Params {
  readonly id: Buffer;
  readonly cipher: MigrationCipher;
  readonly cipherId: number;
  readonly key: Buffer | undefined;
  readonly nonce: Buffer | undefined;
  readonly maxCounter: number;

  constructor(p: FrameCodecParams) {
    if (typeof p.migrationId !== 'string' || !MIGRATION_ID.test(p.migrationId)) {
      fail('HS_ERR_MIGRATION_BAD_PARAMS', `migration id must match ${MIGRATION_ID.source}`);
    }
    if (!MIGRATION_CIPHERS.includes(p.cipher)) {
      fail('HS_ERR_MIGRATION_BAD_PARAMS', `unknown migration cipher ${String(p.cipher)}`);
    }
    const maxCounter = p.maxCounter ?? FRAME.maxCounter;
    if (!Number.isSafeInteger(maxCounter) || maxCounter < 2 || maxCounter > FRAME.maxCounter) {
      fail('HS_ERR_MIGRATION_BAD_PARAMS', `maxCounter must be an integer from 2 to ${FRAME.maxCounter}`);
    }
    this.id = Buffer.from(p.migrationId, 'utf8');
    this.cipher = p.cipher;
    this.cipherId = CipherId[p.cipher];
    this.maxCounter = maxCounter;
    if (p.cipher === 'aes-256-gcm') {
      if (!Buffer.isBuffer(p.key) || p.key.length !== FRAME.keyBytes) {
        fail('HS_ERR_MIGRATION_BAD_PARAMS', `an aes-256-gcm migration needs a ${FRAME.keyBytes}-byte key`);
      }
      if (!Buffer.isBuffer(p.nonce) || p.nonce.length !== FRAME.nonceBytes) {
        fail(
          'HS_ERR_MIGRATION_BAD_PARAMS',
          `an aes-256-gcm migration needs an ${FRAME.nonceBytes}-byte nonce`,
        );
      }
      if (p.key.every((x) => x === 0)) {
        // A zeroized buffer handed over by mistake, e.g. a spec used after it was forgotten.
        fail('HS_ERR_MIGRATION_BAD_PARAMS', 'the migration key is all zeros (already zeroized?)');
      }
      // Buffer.alloc, not Buffer.from: never a slice of the shared pool.
      this.key = Buffer.alloc(FRAME.keyBytes);
      p.key.copy(this.key);
      this.nonce = Buffer.alloc(FRAME.nonceBytes);
      p.nonce.copy(this.nonce);
    } else if (p.key !== undefined || p.nonce !== undefined) {
      fail('HS_ERR_MIGRATION_BAD_PARAMS', 'a plaintext (cipher none) migration takes no key or nonce');
    }
  }

  iv(counter: number): Buffer {
    const iv = Buffer.allocUnsafe(12);
    (this.nonce as Buffer).copy(iv, 0);
    iv.writeUInt32BE(counter, 8);
    return iv;
  }

  aad(header: Buffer): Buffer {
    return Buffer.concat([this.id, header], this.id.length + header.length);
  }

  get tagBytes(): number {
    return this.key === undefined ? 0 : FRAME.tagBytes;
  }

  cipherFor(header: Buffer, counter: number): CipherGCM {
    const c = createCipheriv('aes-256-gcm', this.liveKey(), this.iv(counter), {
      authTagLength: FRAME.tagBytes,
    });
    c.setAAD(this.aad(header));
    return c;
  }

  decipherFor(header: Buffer, counter: number): DecipherGCM {
    const d = createDecipheriv('aes-256-gcm', this.liveKey(), this.iv(counter), {
      authTagLength: FRAME.tagBytes,
    });
    d.setAAD(this.aad(header));
    return d;
  }

  private zeroized = false;

  private liveKey(): Buffer {
    if (this.zeroized) fail('HS_ERR_INTERNAL', 'the migration key was already zeroized');
    return this.key as Buffer;
  }

  zeroize(): void {
    this.key?.fill(0);
    this.nonce?.fill(0);
    this.zeroized = true;
  }
}

function u64(n: number): Buffer {
  const b = Buffer.allocUnsafe(FRAME.countBytes);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

/**
 * The sending end: START, then DATA frames, then END; verifies the receiver's ACK.
 * Not reusable: one sealer per migration, and the key must never seal a second stream.
 */
export class FrameSealer {
  private readonly p: Params;
  private counter = 0;
  private state: 'new' | 'open' | 'ended' | 'acknowledged' | 'failed' = 'new';
  /** Stream bytes sealed into DATA frames. */
  bytesIn = 0;
  /** Frame bytes produced (headers, bodies and tags). */
  bytesOut = 0;

  constructor(params: FrameCodecParams) {
    this.p = new Params(params);
  }

  get cipher(): MigrationCipher {
    return this.p.cipher;
  }

  /** Counter of the next frame. */
  get nextCounter(): number {
    return this.counter;
  }

  private take(type: FrameType, length: number): { header: Buffer; counter: number } {
    const counter = this.counter;
    const header = encodeFrameHeader({ type, cipher: this.p.cipherId, counter, length });
    this.counter++;
    return { header, counter };
  }

  /** The START frame: header, the migration id, tag. */
  start(): Buffer[] {
    if (this.state !== 'new') fail('HS_ERR_INTERNAL', `START after the stream was ${this.state}`);
    this.state = 'open';
    const { header, counter } = this.take(FrameType.START, this.p.id.length);
    const out = [header, this.p.id];
    if (this.p.key !== undefined) {
      // GCM over an empty plaintext: a MAC of the AAD, which holds the id and the header.
      const c = this.p.cipherFor(header, counter);
      c.final();
      out.push(c.getAuthTag());
    }
    this.bytesOut += FRAME.headerBytes + this.p.id.length + this.p.tagBytes;
    return out;
  }

  /**
   * One DATA frame carrying `pieces` (1 to FRAME.maxPayloadBytes bytes in total), as
   * buffers to write in order: header, body pieces, tag. In `none` mode the body pieces
   * are the caller's buffers (no copy); with aes-256-gcm they are fresh ciphertext.
   */
  seal(pieces: readonly Buffer[]): Buffer[] {
    if (this.state !== 'open') fail('HS_ERR_INTERNAL', `DATA frame while the stream is ${this.state}`);
    let length = 0;
    for (const piece of pieces) length += piece.length;
    if (length === 0 || length > FRAME.maxPayloadBytes) {
      fail('HS_ERR_INTERNAL', `a DATA frame carries 1 to ${FRAME.maxPayloadBytes} bytes, not ${length}`);
    }
    // END needs a counter of its own after the last DATA frame.
    if (this.counter + 1 > this.p.maxCounter) {
      this.state = 'failed';
      fail(
        'HS_ERR_MIGRATION_COUNTER_EXHAUSTED',
        `migration stream used all ${this.p.maxCounter} frame counters; counters never wrap`,
        { frames: this.counter },
      );
    }
    const { header, counter } = this.take(FrameType.DATA, length);
    const out: Buffer[] = [header];
    if (this.p.key === undefined) {
      for (const piece of pieces) out.push(piece);
    } else {
      const c = this.p.cipherFor(header, counter);
      for (const piece of pieces) out.push(c.update(piece));
      c.final();
      out.push(c.getAuthTag());
    }
    this.bytesIn += length;
    this.bytesOut += FRAME.headerBytes + length + this.p.tagBytes;
    return out;
  }

  /** The END frame, carrying the total of stream bytes. */
  end(): Buffer[] {
    if (this.state !== 'open') fail('HS_ERR_INTERNAL', `END while the stream is ${this.state}`);
    this.state = 'ended';
    const { header, counter } = this.take(FrameType.END, FRAME.countBytes);
    const total = u64(this.bytesIn);
    const out = [header];
    if (this.p.key === undefined) {
      out.push(total);
    } else {
      const c = this.p.cipherFor(header, counter);
      out.push(c.update(total));
      c.final();
      out.push(c.getAuthTag());
    }
    this.bytesOut += FRAME.headerBytes + FRAME.countBytes + this.p.tagBytes;
    return out;
  }

  /** Bytes of a complete ACK frame. */
  get ackBytes(): number {
    return FRAME.headerBytes + FRAME.countBytes + this.p.tagBytes;
  }

  /**
   * Verifies the receiver's ACK (exactly `ackBytes` bytes): it must be authentic and
   * acknowledge every byte sent. Throws otherwise.
   */
  verifyAck(frame: Buffer): void {
    if (this.state !== 'ended') fail('HS_ERR_INTERNAL', `ACK while the stream is ${this.state}`);
    try {
      if (frame.length !== this.ackBytes) {
        fail('HS_ERR_MIGRATION_BAD_FRAME', `an ACK frame is ${this.ackBytes} bytes, not ${frame.length}`);
      }
      const headerBytes = frame.subarray(0, FRAME.headerBytes);
      const h = decodeFrameHeader(headerBytes);
      if (h.type !== FrameType.ACK || h.counter !== FRAME.ackCounter || h.length !== FRAME.countBytes) {
        fail('HS_ERR_MIGRATION_BAD_FRAME', 'the receiver answered with something other than an ACK');
      }
      if (h.cipher !== this.p.cipherId) {
        fail('HS_ERR_MIGRATION_BAD_FRAME', 'the receiver’s ACK uses another cipher than the migration');
      }
      let body = frame.subarray(FRAME.headerBytes, FRAME.headerBytes + FRAME.countBytes);
      if (this.p.key !== undefined) {
        const d = this.p.decipherFor(Buffer.from(headerBytes), h.counter);
        body = d.update(body);
        d.setAuthTag(frame.subarray(FRAME.headerBytes + FRAME.countBytes));
        try {
          d.final();
        } catch {
          fail('HS_ERR_MIGRATION_BAD_TAG', 'the receiver’s ACK failed authentication');
        }
      }
      const acknowledged = Number(body.readBigUInt64BE());
      if (acknowledged !== this.bytesIn) {
        fail(
          'HS_ERR_MIGRATION_TRUNCATED',
          `the receiver acknowledged ${acknowledged} of ${this.bytesIn} stream bytes`,
          { acknowledged, sent: this.bytesIn },
        );
      }
      this.state = 'acknowledged';
    } catch (err) {
      this.state = 'failed';
      throw err;
    }
  }

  /** Overwrites the key and nonce; the sealer is unusable afterwards. Idempotent. */
  dispose(): void {
    this.p.zeroize();
    if (this.state !== 'acknowledged') this.state = 'failed';
  }
}

interface OpenFrame {
  header: Buffer;
  type: FrameType;
  counter: number;
  length: number;
  /** Body bytes still to come. */
  remaining: number;
  decipher: DecipherGCM | undefined;
  /** DATA: plaintext pieces held back until the tag verifies. */
  pieces: Buffer[];
  /** START and END: the whole (small) body. */
  small: Buffer | undefined;
  smallFill: number;
  tag: Buffer | undefined;
  tagFill: number;
}

/**
 * The receiving end, a push parser: bytes in, verified stream bytes out. A DATA frame's
 * plaintext is released only once its tag verifies, so nothing unauthenticated ever
 * reaches the destination. Memory is bounded by one frame (≤ 1 MiB) plus the chunk given.
 */
export class FrameOpener {
  private readonly p: Params;
  private readonly maxPayloadBytes: number;
  private expected = 0;
  private headerBuf = Buffer.alloc(FRAME.headerBytes);
  private headerFill = 0;
  private frame: OpenFrame | undefined;
  private state: 'start' | 'data' | 'done' | 'failed' = 'start';
  private failure: HypersealError | undefined;
  /** Verified stream bytes released. */
  bytesOut = 0;
  /** Frame bytes consumed. */
  bytesIn = 0;
  /** Verified frames, START and END included. */
  frames = 0;

  constructor(params: FrameCodecParams & { maxPayloadBytes?: number }) {
    this.p = new Params(params);
    const max = params.maxPayloadBytes ?? FRAME.maxPayloadBytes;
    if (!Number.isSafeInteger(max) || max < 1 || max > FRAME.maxPayloadBytes) {
      fail('HS_ERR_MIGRATION_BAD_PARAMS', `maxPayloadBytes must be from 1 to ${FRAME.maxPayloadBytes}`);
    }
    this.maxPayloadBytes = max;
  }

  get cipher(): MigrationCipher {
    return this.p.cipher;
  }

  /** The START frame verified: the peer is the sender of this migration. */
  get started(): boolean {
    return this.state === 'data' || this.state === 'done';
  }

  /** The END frame verified and its total matched: the stream is complete. */
  get done(): boolean {
    return this.state === 'done';
  }

  /**
   * Consumes `chunk` and returns the stream bytes it completed, in order (often none: a
   * frame spans many chunks). Keeps references to slices of `chunk` in `none` mode: do
   * not reuse the buffer. Throws on the first violation and forever after.
   */
  push(chunk: Buffer): Buffer[] {
    if (this.failure !== undefined) throw this.failure;
    try {
      return this.consume(chunk);
    } catch (err) {
      this.failure =
        err instanceof HypersealError
          ? err
          : new HypersealError('HS_ERR_INTERNAL', String(err), undefined, { cause: err });
      this.state = 'failed';
      this.frame = undefined;
      throw this.failure;
    }
  }

  /** The input ended: throws HS_ERR_MIGRATION_TRUNCATED unless END was verified. */
  finish(): void {
    if (this.failure !== undefined) throw this.failure;
    if (this.state === 'done') return;
    const where =
      this.frame !== undefined || this.headerFill > 0
        ? `in the middle of frame ${this.expected}`
        : `after frame ${this.expected - 1}, before END`;
    this.failure = new HypersealError('HS_ERR_MIGRATION_TRUNCATED', `migration stream ended ${where}`, {
      frames: this.frames,
      bytes: this.bytesOut,
    });
    this.state = 'failed';
    throw this.failure;
  }

  /** The ACK frame to send back once `done`. */
  acknowledge(): Buffer[] {
    if (this.state !== 'done') fail('HS_ERR_INTERNAL', 'ACK before the stream was complete');
    const header = encodeFrameHeader({
      type: FrameType.ACK,
      cipher: this.p.cipherId,
      counter: FRAME.ackCounter,
      length: FRAME.countBytes,
    });
    const total = u64(this.bytesOut);
    if (this.p.key === undefined) return [header, total];
    const c = this.p.cipherFor(header, FRAME.ackCounter);
    const body = c.update(total);
    c.final();
    return [header, body, c.getAuthTag()];
  }

  /** Overwrites the key and nonce. Idempotent. */
  dispose(): void {
    this.p.zeroize();
    if (this.state !== 'done') this.state = 'failed';
  }

  private consume(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let at = 0;
    while (at < chunk.length) {
      if (this.state === 'done') {
        fail('HS_ERR_MIGRATION_BAD_FRAME', `${chunk.length - at} bytes follow the END frame`);
      }
      if (this.frame === undefined) {
        const n = Math.min(FRAME.headerBytes - this.headerFill, chunk.length - at);
        chunk.copy(this.headerBuf, this.headerFill, at, at + n);
        this.headerFill += n;
        at += n;
        this.bytesIn += n;
        if (this.headerFill < FRAME.headerBytes) break;
        this.frame = this.begin(this.headerBuf);
        this.headerBuf = Buffer.alloc(FRAME.headerBytes);
        this.headerFill = 0;
      }
      const f = this.frame;
      if (f.remaining > 0) {
        const n = Math.min(f.remaining, chunk.length - at);
        const piece = chunk.subarray(at, at + n);
        at += n;
        this.bytesIn += n;
        f.remaining -= n;
        if (f.small !== undefined) {
          piece.copy(f.small, f.smallFill);
          f.smallFill += n;
        } else if (f.decipher !== undefined) {
          f.pieces.push(f.decipher.update(piece));
        } else {
          f.pieces.push(piece);
        }
        if (f.remaining > 0) break;
      }
      if (f.tag !== undefined && f.tagFill < f.tag.length) {
        const n = Math.min(f.tag.length - f.tagFill, chunk.length - at);
        chunk.copy(f.tag, f.tagFill, at, at + n);
        f.tagFill += n;
        at += n;
        this.bytesIn += n;
        if (f.tagFill < f.tag.length) break;
      }
      this.complete(f, out);
      this.frame = undefined;
    }
    return out;
  }

  /** Checks a header against the state, before anything of the body is read. */
  private begin(headerBuf: Buffer): OpenFrame {
    const h = decodeFrameHeader(headerBuf);
    const name = TYPE_NAMES[h.type] ?? String(h.type);
    if (h.cipher !== this.p.cipherId) {
      const theirs = Object.entries(CipherId).find(([, v]) => v === h.cipher)?.[0] ?? `#${h.cipher}`;
      fail(
        'HS_ERR_MIGRATION_BAD_FRAME',
        `the peer sends ${theirs} frames but this migration is ${this.p.cipher}`,
        { expected: this.p.cipher, received: theirs },
      );
    }
    if (h.counter !== this.expected) {
      fail(
        'HS_ERR_MIGRATION_OUT_OF_ORDER',
        h.counter < this.expected
          ? `frame ${h.counter} (${name}) arrived again after frame ${this.expected - 1}: replayed`
          : `frame ${h.counter} (${name}) arrived where frame ${this.expected} was due: frames dropped or reordered`,
        { expected: this.expected, received: h.counter },
      );
    }
    if (this.state === 'start' && h.type !== FrameType.START) {
      fail('HS_ERR_MIGRATION_BAD_FRAME', `the stream begins with a ${name} frame, not START`);
    }
    if (this.state === 'data' && h.type !== FrameType.DATA && h.type !== FrameType.END) {
      fail('HS_ERR_MIGRATION_BAD_FRAME', `a ${name} frame in the middle of the stream`);
    }
    let small: Buffer | undefined;
    if (h.type === FrameType.START) {
      if (h.length > FRAME.maxMigrationIdBytes) {
        fail(
          'HS_ERR_MIGRATION_FRAME_TOO_LARGE',
          `START frame body of ${h.length} bytes (at most ${FRAME.maxMigrationIdBytes})`,
          {
            length: h.length,
          },
        );
      }
      small = Buffer.alloc(h.length);
    } else if (h.type === FrameType.END) {
      if (h.length !== FRAME.countBytes) {
        fail(
          'HS_ERR_MIGRATION_BAD_FRAME',
          `END frame body of ${h.length} bytes (must be ${FRAME.countBytes})`,
        );
      }
      small = Buffer.alloc(h.length);
    } else {
      if (h.length > this.maxPayloadBytes) {
        fail(
          'HS_ERR_MIGRATION_FRAME_TOO_LARGE',
          `DATA frame ${h.counter} declares ${h.length} bytes; at most ${this.maxPayloadBytes} are accepted`,
          { length: h.length, max: this.maxPayloadBytes },
        );
      }
      if (h.length === 0) fail('HS_ERR_MIGRATION_BAD_FRAME', `DATA frame ${h.counter} is empty`);
    }
    if (this.expected > this.p.maxCounter) {
      fail('HS_ERR_MIGRATION_COUNTER_EXHAUSTED', `the stream goes past frame counter ${this.p.maxCounter}`);
    }
    // The header buffer is kept by the frame (it is part of the AAD); START's body is
    // compared before the tag so that a stream of another migration is named as such.
    const header = headerBuf;
    const decipher =
      this.p.key !== undefined && h.type !== FrameType.START
        ? this.p.decipherFor(header, h.counter)
        : undefined;
    return {
      header,
      type: h.type,
      counter: h.counter,
      length: h.length,
      remaining: h.length,
      decipher,
      pieces: [],
      small,
      smallFill: 0,
      tag: this.p.key === undefined ? undefined : Buffer.alloc(FRAME.tagBytes),
      tagFill: 0,
    };
  }

  /** Body and tag are in: verify, then release DATA or settle START/END. */
  private complete(f: OpenFrame, out: Buffer[]): void {
    if (f.type === FrameType.START) {
      const id = f.small as Buffer;
      if (!id.equals(this.p.id)) {
        fail(
          'HS_ERR_MIGRATION_WRONG_ID',
          `the peer streams migration ${printable(id)}, not ${this.p.id.toString()}`,
          {
            expected: this.p.id.toString(),
            received: printable(id),
          },
        );
      }
      if (this.p.key !== undefined) {
        const d = this.p.decipherFor(f.header, f.counter);
        this.verify(d, f);
      }
      this.state = 'data';
    } else if (f.type === FrameType.END) {
      let body = f.small as Buffer;
      if (f.decipher !== undefined) {
        body = f.decipher.update(body);
        this.verify(f.decipher, f);
      }
      const total = body.readBigUInt64BE();
      if (total !== BigInt(this.bytesOut)) {
        fail(
          'HS_ERR_MIGRATION_TRUNCATED',
          `END says the stream has ${total} bytes but ${this.bytesOut} arrived`,
          { declared: total.toString(), received: this.bytesOut },
        );
      }
      this.state = 'done';
    } else {
      if (f.decipher !== undefined) this.verify(f.decipher, f);
      for (const piece of f.pieces) out.push(piece);
      this.bytesOut += f.length;
    }
    this.frames++;
    this.expected++;
  }

  private verify(d: DecipherGCM, f: OpenFrame): void {
    d.setAuthTag(f.tag as Buffer);
    try {
      d.final();
    } catch {
      f.pieces.length = 0;
      fail(
        'HS_ERR_MIGRATION_BAD_TAG',
        `frame ${f.counter} (${TYPE_NAMES[f.type]}) failed authentication: altered, or sealed with another key`,
        {
          counter: f.counter,
        },
      );
    }
  }
}

function printable(b: Buffer): string {
  const s = b.toString('utf8');
  return MIGRATION_ID.test(s) ? s : `0x${b.subarray(0, 32).toString('hex')}`;
}

/** Seals a whole stream in memory (tests, vectors, tools): START, DATA frames, END. */
export function sealStream(
  params: FrameCodecParams,
  data: Buffer,
  framePayloadBytes: number = FRAME.defaultFramePayloadBytes,
): Buffer {
  const sealer = new FrameSealer(params);
  try {
    const out = sealer.start();
    for (let at = 0; at < data.length; at += framePayloadBytes) {
      out.push(...sealer.seal([data.subarray(at, Math.min(data.length, at + framePayloadBytes))]));
    }
    out.push(...sealer.end());
    return Buffer.concat(out);
  } finally {
    sealer.dispose();
  }
}

/** Opens a whole stream in memory; throws unless it is complete and authentic. */
export function openStream(params: FrameCodecParams & { maxPayloadBytes?: number }, stream: Buffer): Buffer {
  const opener = new FrameOpener(params);
  try {
    const out = opener.push(stream);
    opener.finish();
    return Buffer.concat(out);
  } finally {
    opener.dispose();
  }
}
