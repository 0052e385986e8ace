/**
 * The data channel over real sockets, with stand-ins for the two QEMUs: a unix client that
 * writes a stream into the sender's socket (as `migrate unix:` does) and a unix server that
 * takes what the receiver delivers (as `migrate-incoming unix:` does). Proxies between the
 * two agents flip a byte, drop, swap or replay frames. Real QEMU: qemu-migration.test.ts.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { HypersealError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { MigrationReceiver, MigrationSender } from './channel.js';
import type { MigrationChannelParams } from './channel.js';
import { FRAME, sealStream } from './frame.js';

const dir = mkdtempSync(join(tmpdir(), 'hs-mig-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let seq = 0;
const sock = (name: string): string => join(dir, `${name}-${++seq}.sock`);

function params(cipher: 'aes-256-gcm' | 'none' = 'aes-256-gcm', id = `mig-${seq}`): MigrationChannelParams {
  return cipher === 'none'
    ? { migrationId: id, cipher }
    : { migrationId: id, cipher, key: randomBytes(32), nonce: randomBytes(8) };
}

/** A destination "QEMU": listens like `migrate-incoming unix:PATH`, hashes what arrives. */
async function fakeDestination(
  path: string,
  opts: { readDelayMs?: number } = {},
): Promise<{
  connections: number;
  bytes: number;
  closed: Promise<{ bytes: number; sha256: string; error: boolean }>;
  server: net.Server;
  socket: net.Socket | undefined;
}> {
  const hash = createHash('sha256');
  let resolveClosed!: (r: { bytes: number; sha256: string; error: boolean }) => void;
  const state = {
    connections: 0,
    bytes: 0,
    closed: new Promise<{ bytes: number; sha256: string; error: boolean }>((r) => (resolveClosed = r)),
    server: net.createServer((s) => {
      state.connections++;
      state.socket = s;
      let error = false;
      if (opts.readDelayMs !== undefined) {
        s.pause();
        setTimeout(() => s.resume(), opts.readDelayMs);
      }
      s.on('data', (c: Buffer) => {
        state.bytes += c.length;
        hash.update(c);
      });
      s.on('error', () => (error = true));
      s.on('close', () => resolveClosed({ bytes: state.bytes, sha256: hash.digest('hex'), error }));
    }),
    socket: undefined as net.Socket | undefined,
  };
  await new Promise<void>((r) => state.server.listen(path, r));
  return state;
}

/** A source "QEMU": connects like `migrate unix:PATH` and writes `total` bytes of a pattern. */
function fakeSource(
  path: string,
  total: number,
): {
  sha256: Promise<string>;
  written: () => number;
  closed: Promise<{ error: string | undefined; written: number }>;
} {
  const socket = net.connect(path);
  const hash = createHash('sha256');
  const block = randomBytes(1024 * 1024);
  let written = 0;
  let error: string | undefined;
  const closed = new Promise<{ error: string | undefined; written: number }>((resolve) => {
    socket.on('error', (e) => (error = (e as NodeJS.ErrnoException).code ?? e.message));
    socket.on('close', () => resolve({ error, written }));
  });
  const sha256 = new Promise<string>((resolve) => {
    const pump = (): void => {
      while (written < total) {
        const n = Math.min(block.length, total - written);
        // Vary the content so a misordered block would change the hash.
        block.writeUInt32BE(written >>> 0, 0);
        const piece = Buffer.from(block.subarray(0, n));
        hash.update(piece);
        written += n;
        if (!socket.write(piece)) {
          socket.once('drain', pump);
          return;
        }
      }
      socket.end();
      resolve(hash.digest('hex'));
    };
    socket.once('connect', pump);
  });
  return { sha256, written: () => written, closed };
}

/** A proxy between the agents; `transform` sees every chunk of the sender→receiver direction. */
async function proxy(
  target: { host: string; port: number },
  transform: (chunk: Buffer, offset: number) => Buffer,
): Promise<{ port: number; close(): void; captured: Buffer[] }> {
  const captured: Buffer[] = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(target);
    let offset = 0;
    client.on('data', (c: Buffer) => {
      captured.push(c);
      const out = transform(c, offset);
      offset += c.length;
      if (out.length > 0) upstream.write(out);
    });
    upstream.on('data', (c: Buffer) => client.write(c));
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close(), captured };
}

/** A proxy that reframes the stream and lets `edit` rewrite the list of whole frames. */
function frameEditor(tagBytes: number, edit: (frames: Buffer[]) => Buffer[]): (chunk: Buffer) => Buffer {
  let buf = Buffer.alloc(0);
  let index = 0;
  return (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    const whole: Buffer[] = [];
    for (;;) {
      if (buf.length < FRAME.headerBytes) break;
      const size = FRAME.headerBytes + buf.readUInt32BE(12) + tagBytes;
      if (buf.length < size) break;
      whole.push(buf.subarray(0, size));
      buf = buf.subarray(size);
    }
    const out = whole.length === 0 ? [] : edit(whole.map((f) => Object.assign(f, { index: index++ })));
    return Buffer.concat(out);
  };
}

async function expectReject(p: Promise<unknown>, code: ErrorCode | RegExp): Promise<HypersealError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof HypersealError, `not a HypersealError: ${String(err)}`);
    if (typeof code === 'string') assert.equal(err.code, code, err.message);
    else assert.match(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${String(code)}`);
}

async function pair(
  p: MigrationChannelParams,
  opts: {
    through?: (chunk: Buffer, offset: number) => Buffer;
    receiverParams?: MigrationChannelParams;
    framePayloadBytes?: number;
    readDelayMs?: number;
    idleTimeoutMs?: number;
  } = {},
): Promise<{
  sender: MigrationSender;
  receiver: MigrationReceiver;
  dst: Awaited<ReturnType<typeof fakeDestination>>;
  tap: Awaited<ReturnType<typeof proxy>> | undefined;
}> {
  const dstPath = sock('dst');
  const dst = await fakeDestination(
    dstPath,
    opts.readDelayMs === undefined ? {} : { readDelayMs: opts.readDelayMs },
  );
  const receiver = await MigrationReceiver.listen({
    ...(opts.receiverParams ?? p),
    listen: { host: '127.0.0.1', port: 0 },
    qemuSocketPath: dstPath,
    ...(opts.idleTimeoutMs === undefined ? {} : { idleTimeoutMs: opts.idleTimeoutMs }),
  });
  const addr = receiver.address as { host: string; port: number };
  const tap = opts.through === undefined ? undefined : await proxy(addr, opts.through);
  const sender = await MigrationSender.open({
    ...p,
    peer: tap === undefined ? addr : { host: '127.0.0.1', port: tap.port },
    qemuSocketPath: sock('src'),
    ...(opts.framePayloadBytes === undefined ? {} : { framePayloadBytes: opts.framePayloadBytes }),
    ...(opts.idleTimeoutMs === undefined ? {} : { idleTimeoutMs: opts.idleTimeoutMs }),
  });
  return { sender, receiver, dst, tap };
}

for (const cipher of ['aes-256-gcm', 'none'] as const) {
  void test(`a 96 MiB stream arrives intact (${cipher}), with progress and an ACK`, async () => {
    const { sender, receiver, dst } = await pair(params(cipher));
    const total = 96 * 1024 * 1024 + 12345;
    const src = fakeSource(sender.qemuSocketPath, total);
    const [sent, received] = await Promise.all([sender.done, receiver.done]);
    const out = await dst.closed;
    assert.equal(out.bytes, total);
    assert.equal(out.sha256, await src.sha256);
    assert.equal(sent.bytes, total);
    assert.equal(received.bytes, total);
    assert.equal(sent.cipher, cipher);
    assert.equal(sent.wireBytes, received.wireBytes);
    assert.equal(sent.frames, received.frames);
    assert.ok(sent.frames >= Math.ceil(total / FRAME.maxPayloadBytes) + 2);
    assert.ok(received.bytesPerSecond > 0);
    assert.equal(dst.connections, 1);
    dst.server.close();
  });
}

void test('the wire carries no plaintext when encrypted, and all of it in plaintext mode', async () => {
  const marker = Buffer.from('HYPERSEAL-MARKER-' + randomBytes(8).toString('hex'));
  for (const cipher of ['aes-256-gcm', 'none'] as const) {
    const { sender, receiver, dst, tap } = await pair(params(cipher), { through: (c) => c });
    const socket = net.connect(sender.qemuSocketPath);
    socket.end(Buffer.concat([randomBytes(5000), marker, randomBytes(5000)]));
    await Promise.all([sender.done, receiver.done]);
    const wire = Buffer.concat(tap?.captured ?? []);
    assert.equal(wire.includes(marker), cipher === 'none', `${cipher}: marker on the wire`);
    assert.equal((await dst.closed).bytes, 10_000 + marker.length);
    tap?.close();
    dst.server.close();
  }
});

void test('a proxy that flips one byte: both ends fail at once, both QEMU sockets are cut', async () => {
  const flipAt = 3 * 1024 * 1024 + 17;
  const { sender, receiver, dst, tap } = await pair(params(), {
    through: (c, offset) => {
      if (offset <= flipAt && flipAt < offset + c.length) {
        const copy = Buffer.from(c);
        copy[flipAt - offset] = (copy[flipAt - offset] as number) ^ 0x40;
        return copy;
      }
      return c;
    },
  });
  const src = fakeSource(sender.qemuSocketPath, 64 * 1024 * 1024);
  await expectReject(receiver.done, 'HS_ERR_MIGRATION_BAD_TAG');
  await expectReject(sender.done, 'HS_ERR_MIGRATION_CONNECTION_LOST');
  // The source QEMU's socket is cut before it could write everything: its migration fails.
  const srcEnd = await src.closed;
  assert.ok(srcEnd.written < 64 * 1024 * 1024, `source wrote ${srcEnd.written}`);
  // The destination got only authenticated frames before the cut, never the altered one.
  const out = await dst.closed;
  assert.ok(out.bytes < flipAt, `${out.bytes} bytes delivered`);
  tap?.close();
  dst.server.close();
});

for (const [name, edit, code] of [
  [
    'drops a frame',
    (f: Buffer[]) => f.filter((x) => Reflect.get(x, 'index') !== 5),
    'HS_ERR_MIGRATION_OUT_OF_ORDER',
  ],
  [
    'swaps two frames',
    (() => {
      let held: Buffer | undefined;
      return (f: Buffer[]) =>
        f.flatMap((x) => {
          if (Reflect.get(x, 'index') === 4) {
            held = x;
            return [];
          }
          if (Reflect.get(x, 'index') === 5 && held !== undefined) return [x, held];
          return [x];
        });
    })(),
    'HS_ERR_MIGRATION_OUT_OF_ORDER',
  ],
  [
    'repeats a frame',
    (f: Buffer[]) => f.flatMap((x) => (Reflect.get(x, 'index') === 6 ? [x, x] : [x])),
    'HS_ERR_MIGRATION_OUT_OF_ORDER',
  ],
] as const) {
  void test(`a proxy that ${name}: refused, nothing after the gap reaches QEMU`, async () => {
    const { sender, receiver, dst, tap } = await pair(params(), {
      through: frameEditor(FRAME.tagBytes, edit),
      framePayloadBytes: 64 * 1024,
    });
    const src = fakeSource(sender.qemuSocketPath, 32 * 1024 * 1024);
    await expectReject(receiver.done, code);
    await expectReject(sender.done, 'HS_ERR_MIGRATION_CONNECTION_LOST');
    await src.closed;
    const out = await dst.closed;
    // Frames 1–3 (and 4 when it is the one repeated or dropped later) carry ≤ 64 KiB each.
    assert.ok(out.bytes <= 5 * 64 * 1024, `${out.bytes} bytes delivered`);
    tap?.close();
    dst.server.close();
  });
}

void test('a proxy that replays a frame of an earlier migration (same id, old key): refused', async () => {
  const id = `mig-replay-${seq}`;
  const earlier = params('aes-256-gcm', id);
  const recorded = sealStream(earlier, randomBytes(256 * 1024), 64 * 1024);
  // Frame 2 of the recording (a DATA frame), put where the new stream's frame 2 belongs.
  const oldFrame2 = recorded.subarray(
    FRAME.headerBytes + id.length + FRAME.tagBytes + (FRAME.headerBytes + 64 * 1024 + FRAME.tagBytes),
    FRAME.headerBytes + id.length + FRAME.tagBytes + 2 * (FRAME.headerBytes + 64 * 1024 + FRAME.tagBytes),
  );
  assert.equal(oldFrame2.readUInt32BE(8), 2);
  const { sender, receiver, dst, tap } = await pair(params('aes-256-gcm', id), {
    through: frameEditor(FRAME.tagBytes, (f) =>
      f.map((x) => (Reflect.get(x, 'index') === 2 ? oldFrame2 : x)),
    ),
    framePayloadBytes: 64 * 1024,
  });
  fakeSource(sender.qemuSocketPath, 8 * 1024 * 1024);
  await expectReject(receiver.done, 'HS_ERR_MIGRATION_BAD_TAG');
  await expectReject(sender.done, 'HS_ERR_MIGRATION_CONNECTION_LOST');
  assert.ok((await dst.closed).bytes <= 64 * 1024);
  tap?.close();
  dst.server.close();
});

/**
 * A receiver of one migration and a sender of another (or of another mode). The sender
 * fails either in `open` (the refusal came back before it returned) or later, in `done`.
 */
async function mismatched(
  senderParams: MigrationChannelParams,
  receiverParams: MigrationChannelParams,
): Promise<{ receiverError: HypersealError; senderError: HypersealError; dstConnections: number }> {
  const dstPath = sock('dst');
  const dst = await fakeDestination(dstPath);
  const receiver = await MigrationReceiver.listen({
    ...receiverParams,
    listen: { host: '127.0.0.1', port: 0 },
    qemuSocketPath: dstPath,
  });
  const senderDone = MigrationSender.open({
    ...senderParams,
    peer: receiver.address,
    qemuSocketPath: sock('src'),
  }).then((s) => s.done);
  const receiverError = await expectReject(receiver.done, /^HS_ERR_MIGRATION_/);
  const senderError = await expectReject(senderDone, 'HS_ERR_MIGRATION_CONNECTION_LOST');
  dst.server.close();
  return { receiverError, senderError, dstConnections: dst.connections };
}

void test('a sender of another migration: WRONG_ID, and the destination QEMU is never connected to', async () => {
  const r = await mismatched(params('aes-256-gcm', 'mig-a'), params('aes-256-gcm', 'mig-b'));
  assert.equal(r.receiverError.code, 'HS_ERR_MIGRATION_WRONG_ID');
  assert.equal(r.dstConnections, 0);
});

void test('modes must agree: a plaintext sender to an encrypting receiver is refused', async () => {
  const r = await mismatched(params('none', 'mig-mode'), params('aes-256-gcm', 'mig-mode'));
  assert.equal(r.receiverError.code, 'HS_ERR_MIGRATION_BAD_FRAME');
  assert.match(r.receiverError.message, /none frames but this migration is aes-256-gcm/);
  assert.equal(r.dstConnections, 0);
});

void test('a nonce seals one stream per process: a second sender with the same spec is refused', async () => {
  const p = params();
  const { sender, receiver, dst } = await pair(p);
  // Another listener, so that the second sender gets as far as sealing its START.
  const other = net.createServer((s) => s.resume());
  await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
  const otherPort = (other.address() as net.AddressInfo).port;
  try {
    await expectReject(
      MigrationSender.open({
        ...p,
        peer: { host: '127.0.0.1', port: otherPort },
        qemuSocketPath: sock('src'),
      }),
      'HS_ERR_MIGRATION_KEY_REUSED',
    );
  } finally {
    await new Promise((r) => other.close(r));
    sender.abort();
  }
  await expectReject(sender.done, 'HS_ERR_MIGRATION_ABORTED');
  await expectReject(receiver.done, /^HS_ERR_MIGRATION_(TRUNCATED|CONNECTION_LOST)$/);
  dst.server.close();
  // A sender that could not even connect sealed nothing: its spec may be tried again.
  const q = params();
  const nowhere = { host: '127.0.0.1', port: otherPort }; // closed above
  await expectReject(
    MigrationSender.open({ ...q, peer: nowhere, qemuSocketPath: sock('src') }),
    'HS_ERR_MIGRATION_CONNECT',
  );
  const again = await pair(q);
  fakeSource(again.sender.qemuSocketPath, 1000);
  assert.equal((await again.sender.done).bytes, 1000);
  await again.receiver.done;
  again.dst.server.close();
});

void test('unreachable peer, missing destination QEMU, QEMU that never connects', async () => {
  // Nobody listens on this port (a server bound then closed).
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  await expectReject(
    MigrationSender.open({ ...params(), peer: { host: '127.0.0.1', port }, qemuSocketPath: sock('src') }),
    'HS_ERR_MIGRATION_CONNECT',
  );

  const receiver = await MigrationReceiver.listen({
    ...params('none', 'mig-nodst'),
    listen: { host: '127.0.0.1', port: 0 },
    qemuSocketPath: sock('nobody'),
  });
  const senderDone = MigrationSender.open({
    ...params('none', 'mig-nodst'),
    peer: receiver.address,
    qemuSocketPath: sock('src'),
  }).then((s) => s.done);
  await expectReject(receiver.done, 'HS_ERR_MIGRATION_CONNECT');
  await expectReject(senderDone, 'HS_ERR_MIGRATION_CONNECTION_LOST');

  const dstPath = sock('dst');
  const dst = await fakeDestination(dstPath);
  const r2 = await MigrationReceiver.listen({
    ...params('none', 'mig-idle'),
    listen: { path: sock('peer') },
    qemuSocketPath: dstPath,
  });
  const s2 = await MigrationSender.open({
    ...params('none', 'mig-idle'),
    peer: r2.address,
    qemuSocketPath: sock('src'),
    acceptTimeoutMs: 200,
  });
  const err = await expectReject(s2.done, 'HS_ERR_MIGRATION_TIMEOUT');
  assert.match(err.message, /source QEMU did not connect/);
  await expectReject(r2.done, /^HS_ERR_MIGRATION_/);
  dst.server.close();
});

void test('backpressure: a destination that stops reading stops the source, memory stays bounded', async () => {
  const { sender, receiver, dst } = await pair(params(), { readDelayMs: 1500 });
  const total = 512 * 1024 * 1024;
  const src = fakeSource(sender.qemuSocketPath, total);
  await new Promise((r) => setTimeout(r, 1000));
  // While the destination reads nothing, only socket buffers and high-water marks fill.
  const inFlight = src.written();
  assert.ok(inFlight < 64 * 1024 * 1024, `source could write ${inFlight} bytes into a stalled channel`);
  assert.ok(receiver.progress().bytes <= inFlight);
  const [sent] = await Promise.all([sender.done, receiver.done]);
  assert.equal(sent.bytes, total);
  assert.equal((await dst.closed).sha256, await src.sha256);
  dst.server.close();
});

void test('an idle stream times out on both ends', async () => {
  const { sender, receiver, dst } = await pair(params(), { idleTimeoutMs: 300 });
  // QEMU connects, writes a little, then hangs.
  const s = net.connect(sender.qemuSocketPath);
  s.write(randomBytes(1000));
  await expectReject(sender.done, /^HS_ERR_MIGRATION_(TIMEOUT|CONNECTION_LOST)$/);
  await expectReject(receiver.done, /^HS_ERR_MIGRATION_(TIMEOUT|TRUNCATED|CONNECTION_LOST)$/);
  s.destroy();
  dst.server.close();
});
