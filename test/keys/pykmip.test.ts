// The KEK lifecycle against a real PyKMIP 0.10 server (an independent KMIP
// implementation), through a cluster whose first server is a closed port: failover,
// Create and Activate (PyKMIP's parser refuses Activate without a Unique Identifier, so
// the one-message form falls back to two), Get, batched Gets with an unknown id among
// them, Revoke + Destroy, and Item Not Found afterwards.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isHypersealError } from '../../src/errors.js';
import { KmipCluster } from '../../src/keys/cluster.js';
import type { KekContext } from '../../src/keys/kek.js';
import { createKek, destroyKek, fetchKek, fetchKeks } from '../../src/keys/kek.js';
import { KmipClient } from '../../src/kmip/client.js';
import { State } from '../../src/kmip/enums.js';
import type { CertifiedKey } from '../../src/pki/index.js';
import { stateOf } from '../kmip/behaviour.js';
import type { PyKmipServer } from '../support/pykmip.js';
import { pykmipAvailable, startPyKmipWithIdentities } from '../support/pykmip.js';

const SKIP = pykmipAvailable() ? false : '/usr/bin/python3 cannot import kmip (install python3-pykmip)';

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return typeof address === 'object' && address !== null ? address.port : 0;
}

void describe('key provider cluster (PyKMIP 0.10)', { skip: SKIP }, () => {
  if (SKIP !== false) return;
  let dir: string;
  let server: PyKmipServer;
  let ca: CertifiedKey;
  let manager: CertifiedKey;
  let ctx: KekContext;
  let plain: KmipClient;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hs-keys-pykmip-'));
    ({ server, ca, client: manager } = await startPyKmipWithIdentities(dir));
    const cluster = new KmipCluster({
      name: 'pykmip',
      servers: [
        { host: '127.0.0.1', port: await closedPort() },
        { host: server.host, port: server.port },
      ],
      caPem: ca.certPem,
      clientCertPem: manager.certPem,
      clientKeyPem: manager.keyPem,
    });
    ctx = { cluster, identity: 'hyperseal-manager' };
    plain = new KmipClient({
      host: server.host,
      port: server.port,
      ca: ca.certPem,
      cert: manager.certPem,
      key: manager.keyPem,
    });
  });
  after(async () => {
    ctx?.cluster.close();
    plain?.close();
    await server?.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  test('createKek: fails over past the closed port; Create and Activate (no ID placeholder in PyKMIP)', async () => {
    const keyId = await createKek(ctx);
    // The closed port; the one-message form, which PyKMIP cannot parse; Create; Activate.
    assert.equal(ctx.cluster.requestsSent, 4);
    assert.equal(ctx.cluster.features.idPlaceholder, false);
    assert.equal(await stateOf(plain, keyId), State.Active);
    const second = ctx.cluster.requestsSent;
    assert.equal(await stateOf(plain, await createKek(ctx)), State.Active);
    assert.equal(ctx.cluster.requestsSent - second, 2, 'remembered: two messages from then on');
    const before = ctx.cluster.requestsSent;
    const key = await fetchKek(ctx, keyId);
    assert.equal(ctx.cluster.requestsSent - before, 1, 'straight to PyKMIP now');
    assert.equal(key.length, 32);
    const reference = await plain.get(keyId);
    assert.ok(key.equals(reference.material));
    key.fill(0);
    reference.material.fill(0);
  });

  test('fetchKeks: every key in one message, the unknown one reported alone', async () => {
    const a = await createKek(ctx);
    const b = await createKek(ctx);
    const before = ctx.cluster.requestsSent;
    const got = await fetchKeks(ctx, ['999999', a, b]);
    assert.equal(ctx.cluster.requestsSent - before, 1);
    assert.deepEqual([...got.keys.keys()].sort(), [a, b].sort());
    assert.deepEqual([...got.errors.keys()], ['999999']);
    assert.equal(got.errors.get('999999')?.code, 'HS_ERR_KEY_NOT_FOUND');
    for (const k of got.keys.values()) {
      assert.equal(k.length, 32);
      k.fill(0);
    }
  });

  test('destroyKek: Revoke + Destroy in one message; the key is gone afterwards', async () => {
    const keyId = await createKek(ctx);
    const before = ctx.cluster.requestsSent;
    await destroyKek(ctx, keyId);
    assert.equal(ctx.cluster.requestsSent - before, 1);
    await assert.rejects(fetchKek(ctx, keyId), (err) => {
      assert.ok(isHypersealError(err, 'HS_ERR_KEY_NOT_FOUND'), String(err));
      assert.match(err.message, /key provider 'pykmip' has no key/);
      return true;
    });
    await assert.rejects(destroyKek(ctx, keyId), (err) => isHypersealError(err, 'HS_ERR_KEY_NOT_FOUND'));
  });

  test('an unknown key is HS_ERR_KEY_NOT_FOUND, not a failover', async () => {
    const before = ctx.cluster.requestsSent;
    await assert.rejects(fetchKek(ctx, '424242'), (err) => isHypersealError(err, 'HS_ERR_KEY_NOT_FOUND'));
    assert.equal(ctx.cluster.requestsSent - before, 1);
  });
});
