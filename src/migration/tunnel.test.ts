/**
 * The duplex tunnel over real sockets, with a stand-in NBD server (answers every byte it
 * gets, inverted, and then a trailer) and a proxy between the two agents that can flip a
 * byte or replay a connection.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { TunnelDestination, TunnelSource, tunnelCodecParams } from './tunnel.js';
import type { TunnelParams } from './tunnel.js';

const dir = mkdtempSync(join(tmpdir(), 'hs-tun-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let seq = 0;
const sock = (name: string): string => join(dir, `${name}-${++seq}.sock`);

function params(cipher: 'aes-256-gcm' | 'none' = 'aes-256-gcm'): TunnelParams {
  return cipher === 'none'
    ? { migrationId: `tun-${seq}`, cipher }
    : { migrationId: `tun-${seq}`, cipher, key: randomBytes(32), nonce: randomBytes(8) };
}

const TRAILER = Buffer.from('server done');

/** A stand-in NBD server: sends back every byte inverted; when its input ends, a trailer and end. */
async function fakeServer(path: string): Promise<{ server: net.Server; connections: number }> {
  const state = {
    connections: 0,
    server: net.createServer({ allowHalfOpen: true }, (s) => {
      state.connections++;
      s.on('data', (c: Buffer) => s.write(Buffer.from(c.map((x) => x ^ 0xff))));
      s.on('end', () => s.end(TRAILER));
      s.on('error', () => undefined);
    }),
  };
  await new Promise<void>((r) => state.server.listen(path, r));
  return state;
}

/** A proxy between the agents; `transform` sees (and may change) each a→b chunk of each connection. */
async function proxy(
  target: { host: string; port: number },
  opts: {
    transform?: (c: Buffer, offset: number) => Buffer;
    record?: Buffer[];
    /** Sees (and may change) each b→a chunk; undefined cuts the connection there. */
    answer?: (c: Buffer, offset: number) => Buffer | undefined;
  } = {},
): Promise<{ port: number; server: net.Server }> {
  const server = net.createServer({ allowHalfOpen: true }, (a) => {
    const b = net.connect({ ...target, allowHalfOpen: true });
    let offset = 0;
    a.on('data', (c: Buffer) => {
      opts.record?.push(Buffer.from(c));
      const out = opts.transform ? opts.transform(c, offset) : c;
      offset += c.length;
      b.write(out);
    });
    a.on('end', () => b.end());
    let answered = 0;
    b.on('data', (c: Buffer) => {
      const out = opts.answer ? opts.answer(c, answered) : c;
      answered += c.length;
      if (out === undefined) {
        a.end();
        b.destroy();
        return;
      }
      a.write(out);
    });
    b.on('end', () => a.end());
    a.on('error', () => b.destroy());
    b.on('error', () => a.destroy());
    a.on('close', () => b.destroy());
    b.on('close', () => a.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, server };
}

/** A client like QEMU's NBD client: writes `data`, ends, collects the answer. */
function client(path: string, data: Buffer): Promise<{ answer: Buffer; error: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect({ path, allowHalfOpen: true });
    const got: Buffer[] = [];
    let error = false;
    s.on('connect', () => s.end(data));
    s.on('data', (c: Buffer) => got.push(c));
    s.on('error', () => (error = true));
    s.on('close', () => resolve({ answer: Buffer.concat(got), error }));
  });
}

async function pair(
  p: TunnelParams,
  via?: (t: { host: string; port: number }) => Promise<{ port: number; server: net.Server }>,
): Promise<{
  src: TunnelSource;
  dst: TunnelDestination;
  srv: { connections: number; server: net.Server };
  close: () => void;
}> {
  const target = sock('nbd');
  const srv = await fakeServer(target);
  const dst = await TunnelDestination.listen({
    params: p,
    listen: { host: '127.0.0.1', port: 0 },
    targetPath: target,
  });
  const px = via ? await via(dst.address) : undefined;
  const src = await TunnelSource.listen({
    params: p,
    socketPath: sock('src'),
    peer: { host: '127.0.0.1', port: px ? px.port : dst.address.port },
  });
  return {
    src,
    dst,
    srv,
    close: () => {
      src.close();
      dst.close();
      srv.server.close();
      px?.server.close();
    },
  };
}

const inverted = (b: Buffer): Buffer => Buffer.from(b.map((x) => x ^ 0xff));

for (const cipher of ['aes-256-gcm', 'none'] as const) {
  test(`round trip both directions (${cipher}), several connections`, async () => {
    const t = await pair(params(cipher));
    try {
      assert.equal(statSync(t.src.socketPath).mode & 0o777, 0o600);
      const a = randomBytes(3 * 1024 * 1024 + 17);
      const b = randomBytes(1000);
      const [ra, rb] = await Promise.all([client(t.src.socketPath, a), client(t.src.socketPath, b)]);
      assert.equal(ra.error, false);
      assert.ok(ra.answer.equals(Buffer.concat([inverted(a), TRAILER])));
      assert.ok(rb.answer.equals(Buffer.concat([inverted(b), TRAILER])));
      assert.equal(t.srv.connections, 2);
      assert.equal(t.src.error, undefined);
      assert.equal(t.dst.error, undefined);
    } finally {
      t.close();
    }
  });
}

test('keys differ per direction, per connection, and from the migration key', () => {
  const p = params();
  const ab = tunnelCodecParams(p, 'a→b', 0);
  const ba = tunnelCodecParams(p, 'b→a', 0);
  const ab1 = tunnelCodecParams(p, 'a→b', 1);
  const keys = [p.key, ab.key, ba.key, ab1.key].map((k) => (k as Buffer).toString('hex'));
  assert.equal(new Set(keys).size, 4);
  assert.notEqual((ab.nonce as Buffer).toString('hex'), (ba.nonce as Buffer).toString('hex'));
  // Deterministic: both ends derive the same.
  assert.ok((tunnelCodecParams(p, 'a→b', 0).key as Buffer).equals(ab.key as Buffer));
});

for (const at of [6, 4 + 40, 200]) {
  test(`a flipped byte a→b at ${at} is refused; the NBD server sees nothing unauthenticated`, async () => {
    const t = await pair(params(), (target) =>
      proxy(target, {
        transform: (c, offset) => {
          if (at < offset || at >= offset + c.length) return c;
          const d = Buffer.from(c);
          d[at - offset] = (d[at - offset] as number) ^ 0x01;
          return d;
        },
      }),
    );
    try {
      const r = await client(t.src.socketPath, randomBytes(4096));
      assert.ok(!r.answer.includes(TRAILER));
      assert.ok(t.dst.error, 'the destination refused');
      if (at < 60)
        assert.equal(t.srv.connections, 0, 'START did not verify: no connection to the NBD server');
    } finally {
      t.close();
    }
  });
}

test('a flipped byte b→a is refused at the source', async () => {
  const t = await pair(params(), (target) =>
    proxy(target, {
      answer: (c, offset) => {
        if (offset > 100 || 100 >= offset + c.length) return c;
        const d = Buffer.from(c);
        d[100 - offset] = (d[100 - offset] as number) ^ 0x80;
        return d;
      },
    }),
  );
  try {
    const r = await client(t.src.socketPath, randomBytes(4096));
    assert.ok(!r.answer.includes(TRAILER));
    assert.ok(t.src.error, 'the source refused');
    // The failure names the tunnel (a migration's error must say which stream broke) and
    // keeps the code of the check that refused it.
    assert.match(t.src.error.message, /^tunnel/);
    assert.notEqual(t.src.error.code, 'HS_ERR_MIGRATION_FAILED', t.src.error.message);
  } finally {
    t.close();
  }
});

test('a replayed connection and a replayed frame are refused', async () => {
  const record: Buffer[] = [];
  const t = await pair(params(), (target) => proxy(target, { record }));
  try {
    const data = randomBytes(64 * 1024);
    const r = await client(t.src.socketPath, data);
    assert.ok(r.answer.equals(Buffer.concat([inverted(data), TRAILER])));
    const wire = Buffer.concat(record);
    // The same connection again, byte for byte.
    const replay = (bytes: Buffer): Promise<void> =>
      new Promise((resolve) => {
        const s = net.connect(t.dst.address, () => s.end(bytes));
        s.on('data', () => undefined);
        s.on('error', () => undefined);
        s.on('close', () => resolve());
      });
    await replay(wire);
    assert.match(String(t.dst.error?.message), /connection 0 refused/);
    assert.equal(t.srv.connections, 1);
  } finally {
    t.close();
  }
  // A frame repeated inside a connection: the counter check refuses it.
  const t2 = await pair(params(), (target) =>
    proxy(target, {
      transform: (c, offset) => (offset === 0 ? c : Buffer.concat([c, c])),
    }),
  );
  try {
    const s = net.connect({ path: t2.src.socketPath, allowHalfOpen: true });
    await new Promise<void>((r) => s.once('connect', r));
    s.on('error', () => undefined);
    s.write(randomBytes(1000));
    await new Promise((r) => setTimeout(r, 200));
    s.write(randomBytes(1000));
    await new Promise<void>((r) => s.once('close', () => r()));
    assert.ok(t2.dst.error, 'the destination refused the replayed frame');
  } finally {
    t2.close();
  }
});

test('a connection cut after its answer began fails the source with a tunnel error', async () => {
  // Forwards both ways; once 300 bytes of answer went back, cuts the connection.
  const t = await pair(params(), (target) =>
    proxy(target, { answer: (c, offset) => (offset + c.length > 300 ? undefined : c) }),
  );
  try {
    await client(t.src.socketPath, randomBytes(64 * 1024));
    assert.ok(t.src.error, 'the source failed');
    assert.match(t.src.error.message, /^tunnel/);
    assert.equal(t.src.error.code, 'HS_ERR_MIGRATION_TRUNCATED', t.src.error.message);
  } finally {
    t.close();
  }
});
