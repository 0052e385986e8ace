// Key provider clusters against the real embedded key server (startKms on 127.0.0.1:0):
// failover past a closed port, a server that never answers the TLS handshake, and a
// server that dies between calls; no failover on a KMIP refusal; one persistent
// connection per server; and the KEK lifecycle with its round-trip counts.
//
// The "servers" of a cluster are TCP relays in front of one key server, as the members of
// a replicated KMIP cluster would be: every relay reaches the same keys. A relay counts
// the connections it carried and can be killed.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import type { Server, Socket } from 'node:net';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { HypersealError, isHypersealError } from '../../src/errors.js';
import { KmipCluster } from '../../src/keys/cluster.js';
import type { KekContext } from '../../src/keys/kek.js';
import { createKek, destroyKek, fetchKek, fetchKeks, keyError } from '../../src/keys/kek.js';
import { KmipClient } from '../../src/kmip/client.js';
import { CryptographicUsageMask, State } from '../../src/kmip/enums.js';
import type { RunningKms } from '../../src/kms/service.js';
import { startKms } from '../../src/kms/service.js';
import type { CertifiedKey } from '../../src/pki/index.js';
import { stateOf } from '../kmip/behaviour.js';

/** A port nothing listens on (it was free a moment ago): connections are refused. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return typeof address === 'object' && address !== null ? address.port : 0;
}

interface Relay {
  port: number;
  /** TCP connections carried so far. */
  connections: number;
  kill(): Promise<void>;
}

/** A TCP relay to the key server: one more "server" of the cluster. */
async function relay(target: { host: string; port: number }): Promise<Relay> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    r.connections++;
    const upstream = connect(target.port, target.host);
    sockets.add(client).add(upstream);
    client.pipe(upstream).pipe(client);
    const end = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const r: Relay = {
    port: typeof address === 'object' && address !== null ? address.port : 0,
    connections: 0,
    kill: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return r;
}

/** Accepts TCP connections and never says a word: a TLS handshake that times out. */
async function blackHole(): Promise<{ port: number; close(): Promise<void> }> {
  const held = new Set<Socket>();
  const server = createServer((s) => {
    held.add(s);
    s.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  return {
    port: typeof address === 'object' && address !== null ? address.port : 0,
    close: async () => {
      for (const s of held) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('key provider cluster (embedded key server)', () => {
  let root: string;
  let kms: RunningKms;
  let caPem: string;
  let manager: CertifiedKey;
  const clusters: KmipCluster[] = [];
  const clients: KmipClient[] = [];

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'hs-keys-'));
    kms = await startKms({ dataDir: join(root, 'kms'), masterKeyFile: join(root, 'master.key'), port: 0 });
    caPem = kms.dataDir.caCertPem();
    manager = await kms.dataDir.issueClientCertificate('hyperseal-manager');
  });
  after(async () => {
    for (const c of clusters) c.close();
    for (const c of clients) c.close();
    await kms.close();
    rmSync(root, { recursive: true, force: true });
  });

  const live = (): { host: string; port: number } => ({ host: '127.0.0.1', port: kms.port });
  function cluster(
    servers: { host: string; port: number }[],
    timeouts = { connect: 2000, request: 5000 },
  ): KekContext {
    const c = new KmipCluster({
      name: 'test-provider',
      servers,
      caPem,
      clientCertPem: manager.certPem,
      clientKeyPem: manager.keyPem,
      connectTimeoutMs: timeouts.connect,
      requestTimeoutMs: timeouts.request,
    });
    clusters.push(c);
    return { cluster: c, identity: 'hyperseal-manager' };
  }
  /** A plain KMIP client with the manager's identity, to check what the cluster did. */
  function direct(): KmipClient {
    const c = new KmipClient({ ...live(), ca: caPem, cert: manager.certPem, key: manager.keyPem });
    clients.push(c);
    return c;
  }

  test('KEK lifecycle: Create + Activate in one message, Get, Revoke + Destroy in one message', async () => {
    const ctx = cluster([live()]);
    const keyId = await createKek(ctx, { name: 'kek-lifecycle' });
    assert.equal(ctx.cluster.requestsSent, 1, 'Create and Activate travel in one KMIP message');
    const kmip = direct();
    assert.equal(await stateOf(kmip, keyId), State.Active);
    const attrs = await kmip.getAttributes(keyId, ['Cryptographic Usage Mask', 'Cryptographic Length']);
    const mask = attrs.find((a) => a.name === 'Cryptographic Usage Mask')?.value;
    assert.equal(
      mask?.value,
      CryptographicUsageMask.WrapKey |
        CryptographicUsageMask.UnwrapKey |
        CryptographicUsageMask.Encrypt |
        CryptographicUsageMask.Decrypt,
    );

    const key = await fetchKek(ctx, keyId);
    assert.equal(key.length, 32);
    const reference = await kmip.get(keyId);
    assert.ok(key.equals(reference.material), 'the same key material as a plain Get');
    key.fill(0);
    reference.material.fill(0);

    const before = ctx.cluster.requestsSent;
    await destroyKek(ctx, keyId);
    assert.equal(ctx.cluster.requestsSent - before, 1, 'Revoke and Destroy travel in one KMIP message');
    assert.equal(await stateOf(kmip, keyId), State.Destroyed);

    await assert.rejects(fetchKek(ctx, keyId), (err) => {
      assert.ok(isHypersealError(err, 'HS_ERR_KEY_NOT_FOUND'), String(err));
      assert.equal(err.status, 404);
      assert.match(err.message, /key provider 'test-provider' has no key .*destroyed/);
      assert.match(err.message, /identity 'hyperseal-manager'/);
      return true;
    });
    await assert.rejects(destroyKek(ctx, keyId), (err) => isHypersealError(err, 'HS_ERR_KEY_NOT_FOUND'));
  });

  test('destroyKek of a key that was never activated: the Revoke is refused, the Destroy runs', async () => {
    const ctx = cluster([live()]);
    const preActive = await direct().create({ name: 'pre-active' });
    const before = ctx.cluster.requestsSent;
    await destroyKek(ctx, preActive);
    assert.equal(ctx.cluster.requestsSent - before, 1, 'one message, with Batch Error Continuation Continue');
    assert.equal(await stateOf(direct(), preActive), State.Destroyed);
  });

  test('fetchKeks: one message for all keys; a missing key fails alone', async () => {
    const ctx = cluster([live()]);
    const a = await createKek(ctx);
    const b = await createKek(ctx);
    const before = ctx.cluster.requestsSent;
    const good = await fetchKeks(ctx, [a, b, a]);
    assert.equal(ctx.cluster.requestsSent - before, 1);
    assert.deepEqual([...good.keys.keys()].sort(), [a, b].sort());
    assert.equal(good.errors.size, 0);
    for (const k of good.keys.values()) {
      assert.equal(k.length, 32);
      k.fill(0);
    }

    // Continue: the Gets after the unknown id still run, in the same message.
    const mid = ctx.cluster.requestsSent;
    const mixed = await fetchKeks(ctx, ['no-such-key', a, b]);
    assert.equal(ctx.cluster.requestsSent - mid, 1);
    assert.deepEqual([...mixed.keys.keys()].sort(), [a, b].sort());
    assert.deepEqual([...mixed.errors.keys()], ['no-such-key']);
    assert.equal(mixed.errors.get('no-such-key')?.code, 'HS_ERR_KEY_NOT_FOUND');
    for (const k of mixed.keys.values()) k.fill(0);
  });

  test('a key that is not AES-256 is refused and its material wiped', async () => {
    const ctx = cluster([live()]);
    const small = await direct().create({ lengthBits: 128 });
    await assert.rejects(fetchKek(ctx, small), (err) => {
      assert.ok(isHypersealError(err, 'HS_ERR_KEY_UNUSABLE'), String(err));
      assert.match(err.message, /128 bits/);
      return true;
    });
  });

  test('[closed port, live server]: fails over, then starts with the server that answered', async () => {
    const dead = await freePort();
    const ctx = cluster([{ host: '127.0.0.1', port: dead }, live()]);
    const keyId = await createKek(ctx);
    assert.equal(ctx.cluster.requestsSent, 2, 'one attempt on the closed port, one on the live server');
    assert.equal(ctx.cluster.preferredServer.port, kms.port);
    const key = await fetchKek(ctx, keyId);
    key.fill(0);
    assert.equal(ctx.cluster.requestsSent, 3, 'the next call goes straight to the server that answered');
  });

  test('a server that never completes the TLS handshake times out and the next one answers', async () => {
    const hole = await blackHole();
    try {
      const ctx = cluster([{ host: '127.0.0.1', port: hole.port }, live()], { connect: 300, request: 2000 });
      const started = Date.now();
      const keyId = await createKek(ctx);
      assert.ok(keyId.length > 0);
      assert.ok(Date.now() - started < 5000, 'failover after the connect timeout, not a long hang');
    } finally {
      await hole.close();
    }
  });

  test('one persistent connection per server, reused; a server that dies is left for the next', async () => {
    const first = await relay(live());
    const second = await relay(live());
    try {
      const ctx = cluster([
        { host: '127.0.0.1', port: first.port },
        { host: '127.0.0.1', port: second.port },
      ]);
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push(await createKek(ctx));
      const keys = await fetchKeks(ctx, ids);
      for (const k of keys.keys.values()) k.fill(0);
      assert.equal(first.connections, 1, 'six calls over one TLS connection');
      assert.equal(second.connections, 0, 'the second server is not touched while the first answers');

      await first.kill();
      const key = await fetchKek(ctx, ids[0] as string);
      key.fill(0);
      assert.equal(second.connections, 1, 'failed over to the second server');
      assert.equal(ctx.cluster.preferredServer.port, second.port);
      await destroyKek(ctx, ids[1] as string);
      assert.equal(second.connections, 1);
    } finally {
      await first.kill().catch(() => undefined);
      await second.kill();
    }
  });

  test('a KMIP refusal is not failed over: the next server is never tried', async () => {
    const dead = await freePort();
    const ctx = cluster([live(), { host: '127.0.0.1', port: dead }]);
    await assert.rejects(fetchKek(ctx, 'no-such-key'), (err) =>
      isHypersealError(err, 'HS_ERR_KEY_NOT_FOUND'),
    );
    assert.equal(ctx.cluster.requestsSent, 1);
  });

  test('no server answers: HS_ERR_KEY_PROVIDER_UNAVAILABLE naming the provider and each failure', async () => {
    const dead = await freePort();
    const hole = await blackHole();
    try {
      const ctx = cluster(
        [
          { host: '127.0.0.1', port: dead },
          { host: '127.0.0.1', port: hole.port },
        ],
        { connect: 300, request: 1000 },
      );
      await assert.rejects(createKek(ctx), (err) => {
        assert.ok(isHypersealError(err, 'HS_ERR_KEY_PROVIDER_UNAVAILABLE'), String(err));
        assert.equal(err.status, 503);
        assert.match(
          err.message,
          /key provider 'test-provider' is unavailable: none of its 2 KMIP servers answered/,
        );
        assert.match(
          err.message,
          new RegExp(`127\\.0\\.0\\.1:${dead}: .*ECONNREFUSED.*\\[HS_ERR_KMIP_CONNECT\\]`),
        );
        assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${hole.port}: .*\\[HS_ERR_KMIP_TIMEOUT\\]`));
        const servers = err.details?.['servers'];
        assert.ok(Array.isArray(servers) && servers.length === 2);
        return true;
      });
    } finally {
      await hole.close();
    }
  });

  test('test(): every server on a fresh connection, with versions, vendor and latency', async () => {
    const dead = await freePort();
    const ctx = cluster([live(), { host: '127.0.0.1', port: dead }]);
    const results = await ctx.cluster.test();
    assert.equal(results.length, 2);
    const [ok, failed] = results;
    assert.equal(ok?.ok, true);
    assert.deepEqual(ok?.versions, ['1.1', '1.0']);
    assert.equal(ok?.vendor, 'Hyperseal KMS');
    assert.ok(ok?.operations?.includes('Create'));
    assert.ok((ok?.latencyMs ?? -1) >= 0);
    assert.equal(failed?.ok, false);
    assert.equal(failed?.error?.code, 'HS_ERR_KMIP_CONNECT');
  });

  test('KMIP refusals other than Item Not Found map to HS_ERR_KEY_PROVIDER_REFUSED with the reason', () => {
    const ctx = cluster([live()]);
    const refusal = new HypersealError(
      'HS_ERR_KMIP_PERMISSION_DENIED',
      'KMIP Get on x failed (…, PermissionDenied)',
      {
        resultReason: 'PermissionDenied',
        server: '127.0.0.1:5696',
      },
    );
    const mapped = keyError(ctx, 'Get', 'k1', refusal);
    assert.ok(isHypersealError(mapped, 'HS_ERR_KEY_PROVIDER_REFUSED'));
    assert.equal(mapped.status, 502);
    assert.equal(mapped.details?.['resultReason'], 'PermissionDenied');
    assert.match(mapped.message, /refused Get of key k1 for identity 'hyperseal-manager'/);
    const transport = new HypersealError('HS_ERR_KEY_PROVIDER_UNAVAILABLE', 'down');
    assert.equal(keyError(ctx, 'Get', 'k1', transport), transport, 'other errors pass unchanged');
  });
});
