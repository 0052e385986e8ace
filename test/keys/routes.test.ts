// The key-provider routes through the real manager (startTestPlatform) against the real
// embedded key server: add, list without secrets, test, set-default, the CSR flow with
// the key server's CA signing, servers updated, removal refused while a VM uses the
// provider, and 403 + access.denied for a role without crypto.manageKeyServers.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { readSealedFile } from '../../src/crypto/sealed-file.js';
import type { Event } from '../../src/events/index.js';
import type { KeyProvider, KeyProviderTestResult } from '../../src/keys/index.js';
import { loadMasterKey } from '../../src/kms/master-key.js';
import type { RunningKms } from '../../src/kms/service.js';
import { startKms } from '../../src/kms/service.js';
import type { CertifiedKey } from '../../src/pki/index.js';
import { signCsr } from '../../src/pki/index.js';
import type { ErrorAnswer, TestPlatform, UserClient } from '../support/manager.js';
import { startTestPlatform, useTempConfigHome } from '../support/manager.js';

describe('key provider routes', () => {
  let restoreConfig: () => void;
  let platform: TestPlatform;
  let root: string;
  let kms: RunningKms;
  let kmsCa: CertifiedKey;
  let noCrypto: UserClient;

  before(async () => {
    restoreConfig = useTempConfigHome();
    root = mkdtempSync(join(tmpdir(), 'hs-keys-routes-'));
    const masterKeyFile = join(root, 'kms-master.key');
    kms = await startKms({ dataDir: join(root, 'kms'), masterKeyFile, port: 0 });
    const kmsMaster = loadMasterKey({ description: 'test', path: masterKeyFile }, false);
    kmsCa = {
      certPem: kms.dataDir.caCertPem(),
      keyPem: readSealedFile(kms.dataDir.dir, 'ca.key.sealed', kmsMaster),
    };
    kmsMaster.fill(0);
    platform = await startTestPlatform({ agents: 0 });
    noCrypto = await platform.userClient('No Cryptography Administrator');
  });
  after(async () => {
    await platform?.close();
    await kms?.close();
    if (root !== undefined) rmSync(root, { recursive: true, force: true });
    restoreConfig();
  });

  const token = (): string => platform.adminToken;
  const servers = (): { host: string; port: number }[] => [{ host: '127.0.0.1', port: kms.port }];
  let primary: KeyProvider;

  test('POST /key-providers with a certificate and key: 201, the default; the list holds no secrets', async () => {
    const cert = await kms.dataDir.issueClientCertificate('hyperseal-manager');
    const res = await platform.request<KeyProvider>(token(), 'POST', '/key-providers', {
      name: 'embedded-kms',
      servers: servers(),
      caPem: kmsCa.certPem,
      clientCertPem: cert.certPem,
      clientKeyPem: cert.keyPem,
    });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    primary = res.body;
    assert.equal(primary.isDefault, true);
    assert.equal(primary.state, 'ready');

    const list = await platform.request<KeyProvider[]>(token(), 'GET', '/key-providers');
    assert.equal(list.status, 200);
    assert.deepEqual(
      list.body.map((p) => p.name),
      ['embedded-kms'],
    );
    const text =
      JSON.stringify(list.body) +
      JSON.stringify((await platform.request(token(), 'GET', `/key-providers/${primary.id}`)).body);
    assert.doesNotMatch(text, /PRIVATE KEY|sealed/i);
    assert.ok(!text.includes(cert.keyPem.replace(/-----[^-]+-----|\s/g, '').slice(0, 40)));

    const [row] = await platform.manager.services.db.query<{ client_key_sealed: string }>(
      `SELECT client_key_sealed FROM key_providers WHERE id = $1`,
      [primary.id],
    );
    assert.ok(row !== undefined);
    assert.doesNotMatch(row.client_key_sealed, /PRIVATE KEY/);
    assert.doesNotMatch(Buffer.from(row.client_key_sealed, 'base64').toString('latin1'), /PRIVATE KEY/);

    // The service the VM encryption code calls is wired to the same provider.
    const kp = platform.manager.services.keyProviders;
    const { providerId, keyId } = await kp.createKek();
    assert.equal(providerId, primary.id);
    const key = await kp.fetchKek(providerId, keyId);
    assert.equal(key.length, 32);
    key.fill(0);
    await kp.destroyKek(providerId, keyId);
  });

  test('POST /key-providers/:id/actions/test: every server with its answer and latency', async () => {
    const res = await platform.request<KeyProviderTestResult>(
      token(),
      'POST',
      `/key-providers/${primary.id}/actions/test`,
    );
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.ok, true);
    assert.equal(res.body.servers[0]?.vendor, 'Hyperseal KMS');
    assert.deepEqual(res.body.servers[0]?.versions, ['1.1', '1.0']);
    const ev = await platform.api.get<Event[]>('/events?type=kms.provider-tested&limit=1');
    assert.match(ev[0]?.message ?? '', /admin tested key provider embedded-kms: 1 of 1 servers answered/);
  });

  let csrProvider: KeyProvider;

  test('CSR flow: POST with csr → awaiting-certificate; PUT the signed certificate → ready', async () => {
    const res = await platform.request<KeyProvider>(token(), 'POST', '/key-providers', {
      name: 'via-csr',
      servers: servers(),
      caPem: kmsCa.certPem,
      csr: { commonName: 'hs-manager-csr' },
    });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    csrProvider = res.body;
    assert.equal(csrProvider.state, 'awaiting-certificate');
    assert.equal(csrProvider.isDefault, false);
    assert.match(csrProvider.csrPem ?? '', /BEGIN CERTIFICATE REQUEST/);

    const notReady = await platform.request<ErrorAnswer>(
      token(),
      'POST',
      `/key-providers/${csrProvider.id}/actions/test`,
    );
    assert.equal(notReady.status, 409);
    assert.equal(notReady.body.code, 'HS_ERR_KEY_PROVIDER_NOT_READY');

    const certPem = await signCsr(kmsCa, csrProvider.csrPem ?? '', { usage: 'client' });
    const put = await platform.request<KeyProvider>(
      token(),
      'PUT',
      `/key-providers/${csrProvider.id}/certificate`,
      {
        certPem,
      },
    );
    assert.equal(put.status, 200, JSON.stringify(put.body));
    assert.equal(put.body.state, 'ready');
    assert.equal(put.body.identity, 'hs-manager-csr');
    assert.equal(put.body.csrPem, null);

    const both = await platform.request<ErrorAnswer>(token(), 'POST', '/key-providers', {
      name: 'confused',
      servers: servers(),
      caPem: kmsCa.certPem,
      csr: {},
      clientCertPem: certPem,
    });
    assert.equal(both.status, 400);
    assert.equal(both.body.code, 'HS_ERR_INVALID_ARGUMENT');
  });

  test('set-default moves the default; PATCH replaces the servers', async () => {
    const res = await platform.request<KeyProvider>(
      token(),
      'POST',
      `/key-providers/${csrProvider.id}/actions/set-default`,
    );
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.isDefault, true);
    const list = await platform.api.get<KeyProvider[]>('/key-providers');
    assert.deepEqual(
      list.filter((p) => p.isDefault).map((p) => p.name),
      ['via-csr'],
    );
    const ev = await platform.api.get<Event[]>('/events?type=kms.provider-default-changed&limit=1');
    assert.deepEqual(ev[0]?.changes, [{ path: 'defaultProvider', from: 'embedded-kms', to: 'via-csr' }]);

    const patched = await platform.request<KeyProvider>(token(), 'PATCH', `/key-providers/${primary.id}`, {
      servers: [{ host: 'localhost', port: kms.port }, ...servers()],
    });
    assert.equal(patched.status, 200, JSON.stringify(patched.body));
    assert.deepEqual(
      patched.body.servers.map((s) => s.host),
      ['localhost', '127.0.0.1'],
    );
    const bad = await platform.request<ErrorAnswer>(token(), 'PATCH', `/key-providers/${primary.id}`, {
      servers: [{ host: 'bad host!', port: 1 }],
    });
    assert.equal(bad.status, 400);
  });

  test('DELETE is refused (409) while a VM’s crypto state names the provider, then allowed', async () => {
    const db = platform.manager.services.db;
    const now = Date.now();
    await db.run(
      `INSERT INTO vms (id, name, host_id, state, config, version, created_at, updated_at, crypto)
       VALUES ($1, $2, NULL, 'stopped', '{}', 1, $3, $3, $4)`,
      [
        'vm-keys-1',
        'encrypted-01',
        now,
        JSON.stringify({ policyId: 'p', providerId: primary.id, keyId: '1' }),
      ],
    );
    const refused = await platform.request<ErrorAnswer>(token(), 'DELETE', `/key-providers/${primary.id}`);
    assert.equal(refused.status, 409);
    assert.equal(refused.body.code, 'HS_ERR_CONFLICT');
    assert.match(refused.body.message, /encrypted-01/);
    await db.run(`DELETE FROM vms WHERE id = 'vm-keys-1'`);

    const removed = await platform.request(token(), 'DELETE', `/key-providers/${primary.id}`);
    assert.equal(removed.status, 204);
    const gone = await platform.request<ErrorAnswer>(token(), 'GET', `/key-providers/${primary.id}`);
    assert.equal(gone.status, 404);
    const ev = await platform.api.get<Event[]>('/events?type=kms.provider-removed&limit=1');
    assert.equal(ev[0]?.object.name, 'embedded-kms');
  });

  test('No Cryptography Administrator: 403 on every key-provider route, each an access.denied event', async () => {
    const calls: [string, string, unknown?][] = [
      ['GET', '/key-providers'],
      ['GET', `/key-providers/${csrProvider.id}`],
      ['POST', '/key-providers', { name: 'x', servers: servers(), caPem: kmsCa.certPem, csr: {} }],
      ['POST', `/key-providers/${csrProvider.id}/actions/test`],
      ['POST', `/key-providers/${csrProvider.id}/actions/set-default`],
      ['PUT', `/key-providers/${csrProvider.id}/certificate`, { certPem: 'x' }],
      ['PATCH', `/key-providers/${csrProvider.id}`, { servers: servers() }],
      ['DELETE', `/key-providers/${csrProvider.id}`],
    ];
    for (const [method, path, body] of calls) {
      const res = await platform.request<ErrorAnswer>(noCrypto.token, method, path, body);
      assert.equal(res.status, 403, `${method} ${path}`);
      assert.equal(res.body.code, 'HS_ERR_AUTH_FORBIDDEN');
      assert.match(res.body.message, /crypto\.manageKeyServers/);
    }
    const denied = await platform.api.get<Event[]>(
      `/events?type=access.denied&user=${encodeURIComponent(noCrypto.name)}&limit=100`,
    );
    assert.equal(denied.length, calls.length);
    assert.ok(denied.some((e) => e.object.id === 'GET /api/v1/key-providers'));
    // Nothing changed: still the one provider left.
    assert.deepEqual(
      (await platform.api.get<KeyProvider[]>('/key-providers')).map((p) => p.name),
      ['via-csr'],
    );
  });
});
