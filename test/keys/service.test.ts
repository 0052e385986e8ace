// KeyProviderService over a real manager database (SQLite, migrated) and the real
// embedded key server: credentials checked and the client key stored only sealed, the
// CSR flow with the key server's CA signing, the default rules, removal refused while in
// use, a provider whose servers are all down (an error and no change), and `up`'s
// registration of the embedded key server.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { readSealedFile } from '../../src/crypto/sealed-file.js';
import { isHypersealError } from '../../src/errors.js';
import type { KeyProvider } from '../../src/keys/index.js';
import {
  KeyProviderService,
  deriveKeyProviderSealingKey,
  ensureEmbeddedKeyProvider,
} from '../../src/keys/index.js';
import { KmipClient } from '../../src/kmip/client.js';
import { loadMasterKey } from '../../src/kms/master-key.js';
import type { RunningKms } from '../../src/kms/service.js';
import { startKms } from '../../src/kms/service.js';
import type { Actor } from '../../src/manager/events.js';
import { ManagerEvents } from '../../src/manager/events.js';
import type { CertifiedKey } from '../../src/pki/index.js';
import { issueCertificate, signCsr } from '../../src/pki/index.js';
import type { Db } from '../../src/store/index.js';
import { migrate, openDatabase } from '../../src/store/index.js';

const ADMIN: Actor = { user: 'admin', sourceIp: '127.0.0.1' };

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return typeof address === 'object' && address !== null ? address.port : 0;
}

describe('KeyProviderService', () => {
  let root: string;
  let kms: RunningKms;
  let kmsCa: CertifiedKey;
  let db: Db;
  let events: ManagerEvents;
  let service: KeyProviderService;
  const masterKey = randomBytes(32);

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'hs-keys-service-'));
    const masterKeyFile = join(root, 'kms-master.key');
    kms = await startKms({ dataDir: join(root, 'kms'), masterKeyFile, port: 0 });
    const kmsMaster = loadMasterKey({ description: 'test', path: masterKeyFile }, false);
    kmsCa = {
      certPem: kms.dataDir.caCertPem(),
      keyPem: readSealedFile(kms.dataDir.dir, 'ca.key.sealed', kmsMaster),
    };
    kmsMaster.fill(0);
    db = await openDatabase({ sqlitePath: join(root, 'manager.db') });
    await migrate(db);
    events = new ManagerEvents(db);
    service = new KeyProviderService(db, events, deriveKeyProviderSealingKey(masterKey), {
      connectTimeoutMs: 1000,
      requestTimeoutMs: 3000,
    });
  });
  after(async () => {
    service.close();
    await db.close();
    await kms.close();
    rmSync(root, { recursive: true, force: true });
  });

  const servers = (): { host: string; port: number }[] => [{ host: '127.0.0.1', port: kms.port }];
  const eventCount = async (): Promise<number> => (await events.query({ limit: 100_000 })).length;
  const providerRows = (): Promise<Record<string, unknown>[]> =>
    db.query(`SELECT * FROM key_providers ORDER BY id`) as Promise<Record<string, unknown>[]>;

  test('no provider: HS_ERR_NO_KEY_PROVIDER saying how to add one', async () => {
    await assert.rejects(service.createKek(), (err) => {
      assert.ok(isHypersealError(err, 'HS_ERR_NO_KEY_PROVIDER'), String(err));
      assert.equal(err.status, 409);
      assert.match(err.message, /hyperseal key-provider add/);
      return true;
    });
  });

  let first: KeyProvider;

  test('add: checked credentials, key stored only sealed, first provider becomes the default', async () => {
    const cert = await kms.dataDir.issueClientCertificate('hyperseal-manager');
    first = await service.add(ADMIN, {
      name: 'primary',
      servers: servers(),
      caPem: kmsCa.certPem,
      clientCertPem: cert.certPem,
      clientKeyPem: cert.keyPem,
    });
    assert.equal(first.isDefault, true);
    assert.equal(first.state, 'ready');
    assert.equal(first.identity, 'hyperseal-manager');
    const shown = JSON.stringify(await service.list());
    assert.doesNotMatch(shown, /PRIVATE KEY|client_key_sealed|clientKeySealed/);

    const [row] = await providerRows();
    const sealed = String(row?.['client_key_sealed']);
    assert.doesNotMatch(sealed, /PRIVATE KEY/);
    const keyBody = cert.keyPem.replace(/-----[^-]+-----|\s/g, '');
    assert.ok(!sealed.includes(keyBody.slice(0, 40)), 'no part of the key in clear, not even as base64');
    const decoded = Buffer.from(sealed, 'base64').toString('latin1');
    assert.doesNotMatch(decoded, /PRIVATE KEY/);

    const added = await events.query({ type: 'kms.provider-added', limit: 1 });
    assert.equal(added[0]?.object.kind, 'kms-provider');
    assert.doesNotMatch(JSON.stringify(added), /PRIVATE KEY|BEGIN CERTIFICATE/);

    // Goes to work at once: a KEK on the embedded key server, under the manager's identity.
    const { providerId, keyId } = await service.createKek();
    assert.equal(providerId, first.id);
    const key = await service.fetchKek(providerId, keyId);
    assert.equal(key.length, 32);
    key.fill(0);
    await service.destroyKek(providerId, keyId);
    await assert.rejects(service.fetchKek(providerId, keyId), (err) =>
      isHypersealError(err, 'HS_ERR_KEY_NOT_FOUND'),
    );
  });

  test('add refuses a key that is not the certificate’s, an encrypted key, junk, a server twice', async () => {
    const a = await kms.dataDir.issueClientCertificate('a');
    const b = await kms.dataDir.issueClientCertificate('b');
    const base = { name: 'bad', servers: servers(), caPem: kmsCa.certPem };
    const refused = async (
      input: Parameters<KeyProviderService['add']>[1],
      pattern: RegExp,
    ): Promise<void> => {
      await assert.rejects(service.add(ADMIN, input), (err) => {
        assert.ok(isHypersealError(err, 'HS_ERR_INVALID_ARGUMENT'), String(err));
        assert.match(err.message, pattern);
        assert.doesNotMatch(err.message, /PRIVATE KEY|MII/);
        return true;
      });
    };
    await refused({ ...base, clientCertPem: a.certPem, clientKeyPem: b.keyPem }, /not for this private key/);
    await refused(
      {
        ...base,
        clientCertPem: a.certPem,
        clientKeyPem: '-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n',
      },
      /passphrase-protected/,
    );
    await refused({ ...base, clientCertPem: a.certPem, clientKeyPem: 'not a key' }, /not a PEM private key/);
    await refused(
      { ...base, caPem: 'nope', clientCertPem: a.certPem, clientKeyPem: a.keyPem },
      /caPem holds no PEM/,
    );
    const serverCert = await issueCertificate(kmsCa, { commonName: 'srv', usage: 'server' });
    await refused(
      { ...base, clientCertPem: serverCert.certPem, clientKeyPem: serverCert.keyPem },
      /Extended Key Usage without clientAuth/,
    );
    await refused(
      { ...base, servers: [...servers(), ...servers()], clientCertPem: a.certPem, clientKeyPem: a.keyPem },
      /listed twice/,
    );
    await assert.rejects(
      service.add(ADMIN, { ...base, name: 'primary', clientCertPem: a.certPem, clientKeyPem: a.keyPem }),
      (err) => isHypersealError(err, 'HS_ERR_CONFLICT') && /already exists/.test(err.message),
    );
  });

  test('a sealed key copied to another provider’s row does not open (bound to the provider id)', async () => {
    const other = await kms.dataDir.issueClientCertificate('hyperseal-manager');
    const p = await service.add(ADMIN, {
      name: 'copy-target',
      servers: servers(),
      caPem: kmsCa.certPem,
      clientCertPem: other.certPem,
      clientKeyPem: other.keyPem,
    });
    await db.run(
      `UPDATE key_providers SET client_key_sealed = (SELECT client_key_sealed FROM key_providers WHERE id = $1) WHERE id = $2`,
      [first.id, p.id],
    );
    await assert.rejects(service.createKek(p.id), (err) => isHypersealError(err, 'HS_ERR_CRYPTO_AUTH'));
    await service.remove(ADMIN, p.id);
  });

  test('CSR flow: awaiting-certificate and unusable until the key server’s CA signs the CSR', async () => {
    const p = await service.addWithCsr(ADMIN, {
      name: 'csr-provider',
      servers: servers(),
      caPem: kmsCa.certPem,
      commonName: 'hyperseal-csr',
      keyType: 'ec',
    });
    assert.equal(p.state, 'awaiting-certificate');
    assert.equal(p.isDefault, false);
    assert.equal(p.clientCertificate, null);
    assert.match(p.csrPem ?? '', /BEGIN CERTIFICATE REQUEST/);
    await assert.rejects(service.createKek(p.id), (err) => {
      assert.ok(isHypersealError(err, 'HS_ERR_KEY_PROVIDER_NOT_READY'), String(err));
      assert.match(err.message, /set-cert csr-provider/);
      return true;
    });
    // A certificate for some other key is refused.
    const stranger = await kms.dataDir.issueClientCertificate('hyperseal-csr');
    await assert.rejects(service.setCertificate(ADMIN, p.id, stranger.certPem), (err) =>
      isHypersealError(err, 'HS_ERR_INVALID_ARGUMENT'),
    );

    const signed = await signCsr(kmsCa, p.csrPem ?? '', { usage: 'client' });
    const ready = await service.setCertificate(ADMIN, p.id, signed);
    assert.equal(ready.state, 'ready');
    assert.equal(ready.identity, 'hyperseal-csr');
    assert.equal(ready.csrPem, null);
    const set = await events.query({ type: 'kms.provider-certificate-set', limit: 1 });
    assert.deepEqual(
      set[0]?.changes.find((c) => c.path === 'state'),
      { path: 'state', from: 'awaiting-certificate', to: 'ready' },
    );

    // The key server knows the manager by the CSR's CN: the key belongs to 'hyperseal-csr'.
    const { keyId } = await service.createKek(p.id);
    const key = await service.fetchKek(p.id, keyId);
    key.fill(0);
    const asOther = await kms.dataDir.issueClientCertificate('hyperseal-manager');
    const otherClient = new KmipClient({
      host: '127.0.0.1',
      port: kms.port,
      ca: kmsCa.certPem,
      cert: asOther.certPem,
      key: asOther.keyPem,
    });
    try {
      await assert.rejects(otherClient.get(keyId), (err) =>
        isHypersealError(err, 'HS_ERR_KMIP_ITEM_NOT_FOUND'),
      );
    } finally {
      otherClient.close();
    }
    await service.destroyKek(p.id, keyId);
  });

  test('all servers down: HS_ERR_KEY_PROVIDER_UNAVAILABLE, and nothing in the database changes', async () => {
    const cert = await kms.dataDir.issueClientCertificate('hyperseal-manager');
    const p = await service.add(ADMIN, {
      name: 'down',
      servers: [
        { host: '127.0.0.1', port: await closedPort() },
        { host: '127.0.0.1', port: await closedPort() },
      ],
      caPem: kmsCa.certPem,
      clientCertPem: cert.certPem,
      clientKeyPem: cert.keyPem,
    });
    const rowsBefore = await providerRows();
    const eventsBefore = await eventCount();
    await assert.rejects(service.createKek(p.id), (err) => {
      assert.ok(isHypersealError(err, 'HS_ERR_KEY_PROVIDER_UNAVAILABLE'), String(err));
      assert.match(err.message, /key provider 'down' is unavailable: none of its 2 KMIP servers answered/);
      return true;
    });
    await assert.rejects(service.fetchKeks(p.id, ['1', '2']), (err) =>
      isHypersealError(err, 'HS_ERR_KEY_PROVIDER_UNAVAILABLE'),
    );
    assert.deepEqual(await providerRows(), rowsBefore);
    assert.equal(await eventCount(), eventsBefore);

    const tested = await service.test(ADMIN, p.id);
    assert.equal(tested.ok, false);
    assert.ok(tested.servers.every((s) => !s.ok && s.error?.code === 'HS_ERR_KMIP_CONNECT'));
    const ev = (await events.query({ type: 'kms.provider-tested', limit: 1 }))[0];
    assert.equal(ev?.result, 'failure');
    assert.match(ev?.message ?? '', /0 of 2 servers answered/);

    // Pointing it at the live server fixes it; the change is one event, servers from → to.
    const fixed = await service.update(ADMIN, p.id, { servers: servers() });
    assert.deepEqual(fixed.servers, servers());
    const changed = (await events.query({ type: 'kms.provider-changed', limit: 1 }))[0];
    assert.deepEqual(changed?.changes[0]?.to, [`127.0.0.1:${kms.port}`]);
    const { keyId } = await service.createKek(p.id);
    await service.destroyKek(p.id, keyId);
    await service.remove(ADMIN, p.id);
  });

  test('default: exactly one; the default is not removed while others exist; in-use providers stay', async () => {
    const cert = await kms.dataDir.issueClientCertificate('hyperseal-manager');
    const second = await service.add(ADMIN, {
      name: 'secondary',
      servers: servers(),
      caPem: kmsCa.certPem,
      clientCertPem: cert.certPem,
      clientKeyPem: cert.keyPem,
    });
    assert.equal(second.isDefault, false);
    await assert.rejects(service.remove(ADMIN, first.id), (err) => {
      assert.ok(isHypersealError(err, 'HS_ERR_CONFLICT'), String(err));
      assert.match(err.message, /is the default: make another one the default first/);
      return true;
    });
    await service.setDefault(ADMIN, second.id);
    const all = await service.list();
    assert.deepEqual(
      all.filter((p) => p.isDefault).map((p) => p.name),
      ['secondary'],
    );
    assert.equal(await service.defaultProviderId(), second.id);
    const ev = (await events.query({ type: 'kms.provider-default-changed', limit: 1 }))[0];
    assert.deepEqual(ev?.changes, [{ path: 'defaultProvider', from: 'primary', to: 'secondary' }]);
    assert.equal((await service.createKek()).providerId, second.id, 'new KEKs come from the new default');

    // A VM's crypto state names `first`: removal refused, naming the VM.
    const now = Date.now();
    await db.run(
      `INSERT INTO vms (id, name, host_id, state, config, version, created_at, updated_at, crypto)
       VALUES ($1, $2, NULL, 'stopped', '{}', 1, $3, $3, $4)`,
      ['vm-1', 'web-01', now, JSON.stringify({ policyId: 'p1', providerId: first.id, keyId: '7' })],
    );
    await assert.rejects(service.remove(ADMIN, first.id), (err) => {
      assert.ok(isHypersealError(err, 'HS_ERR_CONFLICT'), String(err));
      assert.match(err.message, /holds the keys of 1 VM \(web-01\)/);
      return true;
    });
    await db.run(`UPDATE vms SET crypto = NULL WHERE id = 'vm-1'`);
    await service.remove(ADMIN, first.id);
    assert.deepEqual(
      (await service.list()).map((p) => p.name),
      ['csr-provider', 'secondary'],
    );
    const removed = (await events.query({ type: 'kms.provider-removed', limit: 1 }))[0];
    assert.equal(removed?.object.name, 'primary');
  });

  test('`up`: the embedded key server is added once, follows its address, and stays removed', async () => {
    // A manager of its own, with no providers yet.
    const upDb = await openDatabase({ sqlitePath: join(root, 'up.db') });
    await migrate(upDb);
    const upService = new KeyProviderService(
      upDb,
      new ManagerEvents(upDb),
      deriveKeyProviderSealingKey(masterKey),
    );
    const markerPath = join(root, 'embedded-key-provider.json');
    const system: Actor = { user: 'system', sourceIp: null };
    try {
      const added = await ensureEmbeddedKeyProvider({ service: upService, kms, markerPath, actor: system });
      assert.equal(added?.action, 'added');
      assert.ok(existsSync(markerPath));
      const p = await upService.get(added?.providerId ?? '');
      assert.equal(p.name, 'embedded');
      assert.equal(p.isDefault, true);
      assert.equal(p.identity, 'hyperseal-manager');
      const { keyId } = await upService.createKek();
      await upService.destroyKek(p.id, keyId);

      const again = await ensureEmbeddedKeyProvider({ service: upService, kms, markerPath, actor: system });
      assert.deepEqual(again, { providerId: p.id, action: 'unchanged' });
      assert.equal((await upService.list()).length, 1);

      const moved = await ensureEmbeddedKeyProvider({
        service: upService,
        kms: { host: '0.0.0.0', port: kms.port + 1, dataDir: kms.dataDir },
        markerPath,
        actor: system,
      });
      assert.equal(moved?.action, 'updated');
      assert.deepEqual((await upService.get(p.id)).servers, [{ host: '127.0.0.1', port: kms.port + 1 }]);

      await upService.remove(system, p.id);
      assert.equal(
        await ensureEmbeddedKeyProvider({ service: upService, kms, markerPath, actor: system }),
        undefined,
      );
      assert.equal((await upService.list()).length, 0, 'an operator’s removal is respected');
    } finally {
      upService.close();
      await upDb.close();
    }
  });

  test('a CA bundle that does not parse is refused', async () => {
    await assert.rejects(
      service.addWithCsr(ADMIN, {
        name: 'junk-ca',
        servers: servers(),
        caPem: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n',
      }),
      (err) => isHypersealError(err, 'HS_ERR_INVALID_ARGUMENT') && /not a parseable X\.509/.test(err.message),
    );
  });
});
