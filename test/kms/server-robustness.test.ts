// The embedded key server under hostile bytes: a real startKms server on 127.0.0.1:0, and
// raw node:tls connections (with a valid client certificate unless said otherwise) that send
// what no well-behaved KMIP client would. Every answer is decoded with our own codec, so a
// "response" here is a real KMIP Response Message, not merely some bytes.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import tls from 'node:tls';
import { KmipClient } from '../../src/kmip/client.js';
import { attr, encodeAttribute, encodeSymmetricKey } from '../../src/kmip/attributes.js';
import {
  CryptographicAlgorithm,
  ObjectType,
  Operation,
  QueryFunction,
  ResultReason,
  ResultStatus,
  RevocationReasonCode,
  enumName,
} from '../../src/kmip/enums.js';
import type { ProtocolVersion, RequestBatchItem, ResponseMessage } from '../../src/kmip/messages.js';
import { KMIP_1_0, KMIP_1_1, decodeResponse, encodeRequest, encodeVersion } from '../../src/kmip/messages.js';
import { Tag } from '../../src/kmip/tags.js';
import type { TtlvItem } from '../../src/kmip/ttlv.js';
import { DEFAULT_TTLV_LIMITS, TtlvFramer, decodeTtlv, encodeTtlv, ttlv } from '../../src/kmip/ttlv.js';
import type { RunningKms } from '../../src/kms/service.js';
import { startKms } from '../../src/kms/service.js';
import type { CertifiedKey } from '../../src/pki/index.js';
import { createCertificateAuthority, issueCertificate } from '../../src/pki/index.js';

const root = mkdtempSync(join(tmpdir(), 'hs-'));
process.env.XDG_CONFIG_HOME = join(root, 'xdg');

let kms: RunningKms;
let ca: string;
let alice: CertifiedKey;
let client: KmipClient;
/** Internal failures the engine reports (it emits a process warning for each). */
const internalErrors: string[] = [];
const onWarning = (w: Error): void => {
  if (w.message.includes('kms: internal error')) internalErrors.push(w.message);
};

before(async () => {
  process.on('warning', onWarning);
  kms = await startKms({
    dataDir: join(root, 'data'),
    masterKeyFile: join(root, 'keys', 'master.key'),
    port: 0,
  });
  ca = kms.dataDir.caCertPem();
  alice = await kms.dataDir.issueClientCertificate('alice');
  client = newClient(alice);
});

after(async () => {
  client.close();
  await kms.close();
  process.off('warning', onWarning);
  rmSync(root, { recursive: true, force: true });
});

function newClient(cert: CertifiedKey): KmipClient {
  return new KmipClient({
    host: kms.host,
    port: kms.port,
    ca,
    cert: cert.certPem,
    key: cert.keyPem,
    requestTimeoutMs: 5000,
  });
}

// ---------------------------------------------------------------------------------------
// A raw TLS peer: writes whatever bytes it is told to and reports exactly what came back.

type Event = { kind: 'frame'; frame: Buffer } | { kind: 'closed'; bytes: number } | { kind: 'silent' };

class RawPeer {
  private readonly framer = new TtlvFramer(DEFAULT_TTLV_LIMITS.maxMessageBytes);
  private readonly frames: Buffer[] = [];
  private waiter: (() => void) | undefined;
  /** Every byte the server sent, framed or not. */
  received = 0;
  closed = false;
  error: Error | undefined;

  private constructor(readonly socket: tls.TLSSocket) {
    socket.on('data', (chunk: Buffer) => {
      this.received += chunk.length;
      this.frames.push(...this.framer.push(chunk));
      this.waiter?.();
    });
    socket.on('error', (err) => {
      this.error = err;
    });
    socket.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
  }

  static connect(cert: CertifiedKey, trust: string = ca): Promise<RawPeer> {
    return new Promise((resolve, reject) => {
      const socket = tls.connect({
        host: kms.host,
        port: kms.port,
        ca: trust,
        cert: cert.certPem,
        key: cert.keyPem,
        servername: 'localhost',
      });
      const peer = new RawPeer(socket);
      socket.once('secureConnect', () => resolve(peer));
      socket.once('error', reject);
    });
  }

  send(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** The next whole frame, or the close, or silence for `ms`. */
  next(ms: number): Promise<Event> {
    return new Promise((resolve) => {
      const check = (): boolean => {
        const frame = this.frames.shift();
        if (frame !== undefined) resolve({ kind: 'frame', frame });
        else if (this.closed) resolve({ kind: 'closed', bytes: this.received });
        else return false;
        return true;
      };
      if (check()) return;
      const timer = setTimeout(() => {
        this.waiter = undefined;
        resolve({ kind: 'silent' });
      }, ms);
      this.waiter = () => {
        if (check()) {
          clearTimeout(timer);
          this.waiter = undefined;
        }
      };
    });
  }

  destroy(): void {
    this.socket.destroy();
  }
}

function request(
  items: RequestBatchItem[],
  opts: { version?: ProtocolVersion; maxResponse?: number } = {},
): Buffer {
  return encodeTtlv(
    encodeRequest({
      protocolVersion: opts.version ?? KMIP_1_1,
      ...(opts.maxResponse !== undefined ? { maximumResponseSize: opts.maxResponse } : {}),
      batchItems: items,
    }),
  );
}

const queryRequest = (): Buffer =>
  request([
    { operation: Operation.Query, payload: [ttlv.enum(Tag.QueryFunction, QueryFunction.QueryOperations)] },
  ]);

const getPayload = (uid: string): TtlvItem[] => [ttlv.text(Tag.UniqueIdentifier, uid)];

function decodeAnswer(frame: Buffer): ResponseMessage {
  return decodeResponse(decodeTtlv(frame));
}

async function expectAnswer(peer: RawPeer, what: string): Promise<ResponseMessage> {
  const ev = await peer.next(5000);
  assert.equal(ev.kind, 'frame', `${what}: expected a KMIP response, got ${JSON.stringify(ev)}`);
  return decodeAnswer((ev as { frame: Buffer }).frame);
}

async function expectCleanClose(peer: RawPeer, what: string): Promise<void> {
  const ev = await peer.next(5000);
  assert.deepEqual(ev, { kind: 'closed', bytes: 0 }, `${what}: expected a close without any answer`);
}

/** A normal client still gets full service: proof that nothing above broke the server. */
async function assertServerHealthy(): Promise<void> {
  const c = newClient(alice);
  try {
    const uid = await c.create({ name: `health-${randomBytes(4).toString('hex')}` });
    const key = await c.get(uid);
    assert.equal(key.material.length, 32);
  } finally {
    c.close();
  }
}

// ---------------------------------------------------------------------------------------

void test('a well-framed message with an invalid item type gets Invalid Message, and the connection lives on', async () => {
  const peer = await RawPeer.connect(alice);
  try {
    const good = queryRequest();
    const bad = Buffer.from(good);
    // Byte 11 is the type of the Request Header (the first child): 0x01 → 0x0e, no such type.
    assert.equal(bad[11], 0x01);
    bad[11] = 0x0e;
    peer.send(bad);
    const answer = await expectAnswer(peer, 'bad type');
    assert.equal(answer.batchItems.length, 1);
    const item = answer.batchItems[0]!;
    assert.equal(item.resultStatus, ResultStatus.OperationFailed);
    assert.equal(
      item.resultReason,
      ResultReason.InvalidMessage,
      enumName(ResultReason, item.resultReason ?? -1),
    );
    assert.match(item.resultMessage ?? '', /type/i);

    // Same connection, now a valid request: answered in full.
    peer.send(good);
    const ok = await expectAnswer(peer, 'valid request after a bad one');
    assert.equal(ok.batchItems[0]?.resultStatus, ResultStatus.Success);
    assert.equal(ok.batchItems[0]?.operation, Operation.Query);
    assert.ok(
      (ok.batchItems[0]?.payload ?? []).some((i) => i.tag === Tag.Operation && i.value === Operation.Get),
    );
    assert.equal(peer.closed, false);
  } finally {
    peer.destroy();
  }
});

void test('unframeable input (length over the maximum, top-level item not a Structure) gets a clean close', async () => {
  const cases: [string, Buffer][] = [
    ['declared length 0x7fffffff', Buffer.from('42007801' + '7fffffff', 'hex')],
    ['declared length 0xffffffff', Buffer.from('42007801' + 'ffffffff', 'hex')],
    ['declared length 1 MiB (header makes it over the limit)', Buffer.from('42007801' + '00100000', 'hex')],
    ['top-level Integer', Buffer.from('42007802' + '00000004' + '0000000100000000', 'hex')],
    [
      'top-level Text String with a valid request after it',
      Buffer.concat([Buffer.from('42007807' + '00000000', 'hex'), queryRequest()]),
    ],
  ];
  for (const [what, bytes] of cases) {
    const peer = await RawPeer.connect(alice);
    peer.send(bytes);
    await expectCleanClose(peer, what);
    assert.equal(peer.error, undefined, `${what}: ${String(peer.error)}`);
  }
  // A message of exactly the maximum size is framed (and then refused in KMIP terms, not by closing).
  const peer = await RawPeer.connect(alice);
  try {
    const max = DEFAULT_TTLV_LIMITS.maxMessageBytes;
    const body = Buffer.alloc(max - 8);
    const head = Buffer.from('4200780100000000', 'hex');
    head.writeUInt32BE(max - 8, 4);
    peer.send(Buffer.concat([head, body]));
    const answer = await expectAnswer(peer, 'message of exactly the maximum size');
    assert.equal(answer.batchItems[0]?.resultReason, ResultReason.InvalidMessage);
  } finally {
    peer.destroy();
  }
  await assertServerHealthy();
});

void test('a half-sent message followed by silence does not hold up other clients', async () => {
  const holder = await RawPeer.connect(alice);
  try {
    const whole = queryRequest();
    holder.send(whole.subarray(0, Math.floor(whole.length / 2)));
    // The server is now waiting for the rest of A's message; B must not notice.
    const started = Date.now();
    const b = newClient(alice);
    try {
      const uid = await b.create();
      const key = await b.get(uid);
      assert.equal(key.uniqueIdentifier, uid);
      assert.equal(key.material.length, 32);
    } finally {
      b.close();
    }
    assert.ok(Date.now() - started < 4000, `client B took ${Date.now() - started} ms`);
    // A was really mid-message, not dropped: the rest completes it and it is answered.
    assert.deepEqual(await holder.next(50), { kind: 'silent' });
    holder.send(whole.subarray(Math.floor(whole.length / 2)));
    const answer = await expectAnswer(holder, 'rest of the held message');
    assert.equal(answer.batchItems[0]?.resultStatus, ResultStatus.Success);
  } finally {
    holder.destroy();
  }
});

// ---------------------------------------------------------------------------------------
// Fuzzing with a seeded PRNG: the failing seed and case are in the assertion message.

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Offsets of every item header in a valid encoding (depth-first). */
function itemOffsets(buf: Buffer, start = 0, end = buf.length, out: number[] = []): number[] {
  let p = start;
  while (p + 8 <= end) {
    out.push(p);
    const len = buf.readUInt32BE(p + 4);
    if (buf[p + 3] === 0x01) itemOffsets(buf, p + 8, p + 8 + len, out);
    p += 8 + len + ((8 - (len % 8)) % 8);
  }
  return out;
}

function withLength(body: Buffer): Buffer {
  const out = Buffer.concat([Buffer.from('4200780100000000', 'hex'), body]);
  out.writeUInt32BE(body.length, 4);
  return out;
}

type Expect = 'answer' | 'close' | 'wait';

/** What the server must do with `bytes`, judged by the framing rules alone. */
function expectationOf(bytes: Buffer): Expect {
  if (bytes.length < 8) return 'wait';
  if (bytes[3] !== 0x01) return 'close';
  const total = 8 + bytes.readUInt32BE(4);
  if (total > DEFAULT_TTLV_LIMITS.maxMessageBytes) return 'close';
  return total <= bytes.length ? 'answer' : 'wait';
}

function seeds(uid: string): Buffer[] {
  const material = randomBytes(16);
  return [
    queryRequest(),
    request([
      {
        operation: Operation.DiscoverVersions,
        payload: [encodeVersion(KMIP_1_0), encodeVersion({ major: 2, minor: 0 })],
      },
    ]),
    request([
      {
        operation: Operation.Create,
        payload: [
          ttlv.enum(Tag.ObjectType, ObjectType.SymmetricKey),
          ttlv.struct(Tag.TemplateAttribute, [
            encodeAttribute(attr.cryptographicAlgorithm(CryptographicAlgorithm.AES)),
            encodeAttribute(attr.cryptographicLength(128)),
            encodeAttribute(attr.name('fuzz')),
          ]),
        ],
      },
    ]),
    request([
      {
        operation: Operation.Register,
        payload: [
          ttlv.enum(Tag.ObjectType, ObjectType.SymmetricKey),
          ttlv.struct(Tag.TemplateAttribute, [encodeAttribute(attr.text('x-fuzz', 'v'))]),
          encodeSymmetricKey({ algorithm: CryptographicAlgorithm.AES, lengthBits: 128, material }),
        ],
      },
    ]),
    request([{ operation: Operation.Get, payload: getPayload(uid) }]),
    request([
      {
        operation: Operation.GetAttributes,
        payload: [...getPayload(uid), ttlv.text(Tag.AttributeName, 'Name')],
      },
    ]),
    request([
      {
        operation: Operation.AddAttribute,
        payload: [...getPayload(uid), encodeAttribute(attr.text('x-fuzz', 'w'))],
      },
    ]),
    request([
      {
        operation: Operation.Revoke,
        payload: [
          ...getPayload(uid),
          ttlv.struct(Tag.RevocationReason, [
            ttlv.enum(Tag.RevocationReasonCode, RevocationReasonCode.Unspecified),
          ]),
        ],
      },
    ]),
    request([
      {
        operation: Operation.Locate,
        payload: [ttlv.int(Tag.MaximumItems, 3), encodeAttribute(attr.objectType(ObjectType.SymmetricKey))],
      },
    ]),
    request([
      { operation: Operation.Get, uniqueBatchItemId: Buffer.from([1]), payload: getPayload(uid) },
      { operation: Operation.GetAttributeList, uniqueBatchItemId: Buffer.from([2]), payload: [] },
    ]),
  ];
}

function mutate(rand: () => number, base: Buffer): { kind: string; bytes: Buffer } {
  const int = (n: number): number => Math.floor(rand() * n);
  const kind = int(8);
  const b = Buffer.from(base);
  const offsets = itemOffsets(b).filter((o) => o > 0);
  const someItem = (): number => offsets[int(offsets.length)] ?? 8;
  switch (kind) {
    case 0: // flip a few body bytes, header intact
      for (let n = 1 + int(4); n > 0; n--) {
        const at = 8 + int(b.length - 8);
        b[at] = (b[at] as number) ^ (1 + int(255));
      }
      return { kind: 'flip bytes', bytes: b };
    case 1: // an inner item's type byte
      b[someItem() + 3] = int(256);
      return { kind: 'item type', bytes: b };
    case 2: {
      // an inner item's length: huge, zero, off by a little, or random
      const at = someItem() + 4;
      const choices = [
        0xffffffff,
        0x7fffffff,
        0,
        b.readUInt32BE(at) + 1,
        b.readUInt32BE(at) + 8,
        int(0x10000),
      ];
      b.writeUInt32BE(choices[int(choices.length)] as number, at);
      return { kind: 'item length', bytes: b };
    }
    case 3: // an inner item's tag
      b.writeUIntBE(int(2) === 0 ? int(0x1000000) : 0x420000 + int(0x100), someItem(), 3);
      return { kind: 'item tag', bytes: b };
    case 4: // truncated body, outer length fixed up so the frame is whole
      return { kind: 'truncated', bytes: withLength(b.subarray(8, 8 + int(b.length - 8))) };
    case 5: {
      // a random slice of another part of the message spliced in, outer length fixed up
      const at = 8 + int(b.length - 8);
      const from = 8 + int(b.length - 8);
      const piece = b.subarray(from, from + int(64));
      return { kind: 'splice', bytes: withLength(Buffer.concat([b.subarray(8, at), piece, b.subarray(at)])) };
    }
    case 6: // garbage body behind a valid Request Message header
      return { kind: 'garbage body', bytes: withLength(randomBytesFrom(rand, int(160))) };
    default: {
      // garbage, header included: unframeable, whole, or cut short
      const g = randomBytesFrom(rand, 8 + int(64));
      const mode = int(3);
      if (mode > 0) g[3] = 0x01;
      if (mode === 1) g.writeUInt32BE(g.length - 8, 4);
      if (mode === 2) g.writeUInt32BE(g.length - 8 + 1 + int(256), 4);
      return { kind: ['garbage header', 'garbage frame', 'incomplete frame'][mode] as string, bytes: g };
    }
  }
}

function randomBytesFrom(rand: () => number, n: number): Buffer {
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(rand() * 256);
  return out;
}

void test('200 mutated frames on fresh connections: always a KMIP answer or a clean close, never a crash', async () => {
  const seed = 0x5eed1234;
  const rand = mulberry32(seed);
  const uid = await client.create({ name: 'fuzz-target' });
  const bases = seeds(uid);
  const tally: Record<Expect, number> = { answer: 0, close: 0, wait: 0 };
  internalErrors.length = 0;
  for (let i = 0; i < 200; i++) {
    const { kind, bytes } = mutate(rand, bases[Math.floor(rand() * bases.length)] as Buffer);
    const expect = expectationOf(bytes);
    tally[expect]++;
    const label = `seed ${seed} case ${i} (${kind}, ${bytes.length} bytes, expect ${expect}): ${bytes.toString('hex').slice(0, 160)}`;
    const peer = await RawPeer.connect(alice);
    try {
      peer.send(bytes);
      if (expect === 'answer') {
        const ev = await peer.next(5000);
        assert.equal(ev.kind, 'frame', `${label}: got ${JSON.stringify(ev)}`);
        let answer: ResponseMessage;
        try {
          answer = decodeAnswer((ev as { frame: Buffer }).frame);
        } catch (err) {
          assert.fail(`${label}: the answer is not a valid Response Message: ${String(err)}`);
        }
        assert.ok(answer.batchItems.length >= 1, label);
        for (const item of answer.batchItems) {
          if (item.resultStatus !== ResultStatus.Success) {
            assert.notEqual(
              item.resultReason,
              ResultReason.GeneralFailure,
              `${label}: ${item.resultMessage ?? ''}`,
            );
          }
        }
      } else if (expect === 'close') {
        await expectCleanClose(peer, label);
      } else {
        assert.deepEqual(await peer.next(30), { kind: 'silent' }, label);
      }
    } finally {
      peer.destroy();
    }
  }
  // The generator must actually exercise all three paths, or this test proves less than it says.
  assert.ok(tally.answer > 100 && tally.close > 5 && tally.wait > 2, JSON.stringify(tally));
  assert.deepEqual(internalErrors, [], 'hostile input must be refused in KMIP terms, not as internal errors');
  await assertServerHealthy();
});

// ---------------------------------------------------------------------------------------

/** Connects with `cert`, sends a valid request, and reports everything that happened. */
function attempt(
  cert: CertifiedKey,
): Promise<{ secure: boolean; received: number; error: string | undefined }> {
  return new Promise((resolve, reject) => {
    let secure = false;
    let received = 0;
    let error: string | undefined;
    const socket = tls.connect({
      host: kms.host,
      port: kms.port,
      ca,
      cert: cert.certPem,
      key: cert.keyPem,
      servername: 'localhost',
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('the server neither answered nor closed within 5 s'));
    }, 5000);
    socket.on('secureConnect', () => {
      secure = true;
      socket.write(queryRequest());
    });
    socket.on('data', (d: Buffer) => {
      received += d.length;
    });
    socket.on('error', (err) => {
      error = err.message;
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ secure, received, error });
    });
  });
}

void test('client certificates from another CA, or without clientAuth, are refused before any KMIP', async () => {
  // Control: the same procedure with a proper certificate gets an answer (and stays open).
  const good = await RawPeer.connect(alice);
  good.send(queryRequest());
  assert.equal((await expectAnswer(good, 'control')).batchItems[0]?.resultStatus, ResultStatus.Success);
  good.destroy();

  const otherCa = await createCertificateAuthority({ commonName: 'Hostile CA' });
  const foreign = await issueCertificate(otherCa, { commonName: 'alice', usage: 'client' });
  const r1 = await attempt(foreign);
  // With TLS 1.3 the client may believe the handshake done (secure: true) and send its
  // request; the server drops the connection when it checks the certificate, unanswered.
  assert.equal(r1.received, 0, `a foreign client certificate must get no KMIP answer: ${JSON.stringify(r1)}`);

  const ourCaPem = kms.dataDir.caCertPem();
  const caKey = (kms.dataDir as unknown as { unsealFile(name: string): string }).unsealFile('ca.key.sealed');
  const serverOnly = await issueCertificate(
    { certPem: ourCaPem, keyPem: caKey },
    { commonName: 'alice', usage: 'server' },
  );
  const r2 = await attempt(serverOnly);
  assert.equal(
    r2.received,
    0,
    `a serverAuth-only certificate must get no KMIP answer: ${JSON.stringify(r2)}`,
  );

  await assertServerHealthy();
});

void test('a Maximum Response Size smaller than the Get response yields Response Too Large, without the key', async () => {
  const material = randomBytes(32);
  const uid = await client.register({ algorithm: CryptographicAlgorithm.AES, lengthBits: 256, material });
  const peer = await RawPeer.connect(alice);
  try {
    peer.send(request([{ operation: Operation.Get, payload: getPayload(uid) }], { maxResponse: 100 }));
    const ev = await peer.next(5000);
    assert.equal(ev.kind, 'frame');
    const frame = (ev as { frame: Buffer }).frame;
    assert.equal(frame.indexOf(material), -1, 'the refused answer must not carry the key');
    const item = decodeAnswer(frame).batchItems[0]!;
    assert.equal(item.resultStatus, ResultStatus.OperationFailed);
    assert.equal(item.resultReason, ResultReason.ResponseTooLarge);
    assert.equal(item.operation, Operation.Get);

    // The same Get with room enough returns the key: the limit, not the Get, caused the refusal.
    peer.send(request([{ operation: Operation.Get, payload: getPayload(uid) }], { maxResponse: 4096 }));
    const ok = await expectAnswer(peer, 'Get with a large enough Maximum Response Size');
    assert.equal(ok.batchItems[0]?.resultStatus, ResultStatus.Success);
  } finally {
    peer.destroy();
  }
});

void test('protocol version 2.0 gets an error response; 1.0 is answered in 1.0', async () => {
  const peer = await RawPeer.connect(alice);
  try {
    peer.send(request([{ operation: Operation.Query, payload: [] }], { version: { major: 2, minor: 0 } }));
    const v2 = await expectAnswer(peer, 'KMIP 2.0 request');
    assert.equal(v2.batchItems[0]?.resultStatus, ResultStatus.OperationFailed);
    assert.match(v2.batchItems[0]?.resultMessage ?? '', /version/);
    assert.equal(v2.protocolVersion.major, 1);

    peer.send(
      request(
        [{ operation: Operation.Query, payload: [ttlv.enum(Tag.QueryFunction, QueryFunction.QueryObjects)] }],
        {
          version: KMIP_1_0,
        },
      ),
    );
    const v10 = await expectAnswer(peer, 'KMIP 1.0 request');
    assert.deepEqual(v10.protocolVersion, KMIP_1_0);
    assert.equal(v10.batchItems[0]?.resultStatus, ResultStatus.Success);

    peer.send(request([{ operation: Operation.Query, payload: [] }], { version: { major: 1, minor: 4 } }));
    assert.deepEqual((await expectAnswer(peer, 'KMIP 1.4 request')).protocolVersion, KMIP_1_1);
  } finally {
    peer.destroy();
  }
});
