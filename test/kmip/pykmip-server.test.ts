// Our KMIP client against a real PyKMIP 0.10 server: the shared behavioural suite, then
// how we cope with what PyKMIP cannot do. RSA certificates, so the TLS 1.2 suite runs
// PyKMIP's default AES128-SHA256 (RSA key transport) path.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { HypersealError } from '../../src/errors.js';
import { attr } from '../../src/kmip/attributes.js';
import { KmipClient } from '../../src/kmip/client.js';
import { State, enumName } from '../../src/kmip/enums.js';
import type { CertifiedKey } from '../../src/pki/index.js';
import { createCertificateAuthority, issueCertificate } from '../../src/pki/index.js';
import { pykmipAvailable, startPyKmipServer } from '../support/pykmip.js';
import type { PyKmipServer, TlsFiles } from '../support/pykmip.js';
import { kmipBehaviourSuite, stateOf, uniqueName } from './behaviour.js';

const SKIP = pykmipAvailable() ? false : '/usr/bin/python3 cannot import kmip (install python3-pykmip)';

let dir: string | undefined;
let server: PyKmipServer | undefined;
let ca: CertifiedKey | undefined;
const identities = new Map<string, CertifiedKey>();

function writeTls(at: string, name: string, authority: CertifiedKey, leaf: CertifiedKey): TlsFiles {
  const files = {
    caPath: join(at, 'ca.pem'),
    certPath: join(at, `${name}.pem`),
    keyPath: join(at, `${name}.key`),
  };
  writeFileSync(files.caPath, authority.certPem);
  writeFileSync(files.certPath, leaf.certPem);
  writeFileSync(files.keyPath, leaf.keyPem, { mode: 0o600 });
  return files;
}

function clientFor(identity: string): KmipClient {
  const cert = identities.get(identity);
  assert.ok(
    server !== undefined && ca !== undefined && cert !== undefined,
    'the PyKMIP server is not running',
  );
  return new KmipClient({
    host: server.host,
    port: server.port,
    ca: ca.certPem,
    cert: cert.certPem,
    key: cert.keyPem,
  });
}

/** Sessions PyKMIP has started so far (one per TLS connection). */
function sessionCount(): number {
  assert.ok(server !== undefined);
  return server.logs().match(/Starting session/g)?.length ?? 0;
}

void describe('PyKMIP server', { skip: SKIP }, () => {
  if (SKIP !== false) return;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hs-'));
    ca = await createCertificateAuthority({ commonName: 'hs-pykmip-server-ca', keyType: 'rsa' });
    const [serverCert, owner, stranger] = await Promise.all([
      issueCertificate(ca, {
        commonName: 'localhost',
        usage: 'server',
        dnsNames: ['localhost'],
        ipAddresses: ['127.0.0.1'],
        keyType: 'rsa',
      }),
      issueCertificate(ca, { commonName: 'hs-pykmip-owner', usage: 'client', keyType: 'rsa' }),
      issueCertificate(ca, { commonName: 'hs-pykmip-other', usage: 'client', keyType: 'rsa' }),
    ]);
    identities.set('owner', owner);
    identities.set('other', stranger);
    server = await startPyKmipServer({
      dir: join(dir, 'server'),
      tls: writeTls(dir, 'server', ca, serverCert),
    });
  });
  after(async () => {
    await server?.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  kmipBehaviourSuite('KMIP behaviour (PyKMIP 0.10)', () => {
    const client = clientFor('owner');
    const other = clientFor('other');
    return Promise.resolve({
      client,
      other,
      close: () => {
        client.close();
        other.close();
        return Promise.resolve();
      },
    });
  });

  void describe('PyKMIP only', () => {
    let client: KmipClient | undefined;
    const c = (): KmipClient => {
      assert.ok(client !== undefined);
      return client;
    };
    before(() => {
      client = clientFor('owner');
    });
    after(() => client?.close());

    void test('TLS: Node’s defaults negotiate TLS 1.2 AES128-SHA256 with PyKMIP and RSA certificates', async () => {
      // The same options KmipConnection uses (TLS 1.2 minimum, Node's default ciphers).
      const cert = identities.get('owner');
      assert.ok(server !== undefined && ca !== undefined && cert !== undefined);
      const socket = tls.connect({
        host: server.host,
        port: server.port,
        ca: ca.certPem,
        cert: cert.certPem,
        key: cert.keyPem,
        minVersion: 'TLSv1.2',
      });
      try {
        await new Promise<void>((resolve, reject) => {
          socket.once('secureConnect', resolve);
          socket.once('error', reject);
        });
        assert.equal(socket.getProtocol(), 'TLSv1.2');
        assert.equal(socket.getCipher().name, 'AES128-SHA256');
      } finally {
        socket.destroy();
      }
    });

    void test('an operation PyKMIP cannot parse (Add Attribute) fails cleanly; the connection keeps working', async () => {
      const uid = await c().create({ name: uniqueName('hs-pykmip-add') });
      const sessions = sessionCount();

      let caught: unknown;
      try {
        await c().addAttribute(uid, attr.text('x-custom', 'value'));
      } catch (err) {
        caught = err;
      }
      // PyKMIP 0.10 has no Add Attribute payload: it answers Invalid Message in a KMIP 1.0
      // header, with a batch item that carries no Operation.
      assert.ok(caught instanceof HypersealError, `expected a HypersealError, got ${String(caught)}`);
      assert.equal(caught.code, 'HS_ERR_KMIP_OPERATION_FAILED');
      assert.match(
        caught.message,
        /^KMIP AddAttribute on 127\.0\.0\.1:\d+ failed \(OperationFailed, InvalidMessage\): Error parsing request message/,
      );
      assert.equal(caught.details?.operation, 'AddAttribute');
      assert.equal(caught.details?.resultReason, 'InvalidMessage');

      // The next requests are answered on the same connection: no new PyKMIP session.
      const key = await c().get(uid);
      assert.equal(key.uniqueIdentifier, uid);
      assert.equal(key.material.length, 32);
      assert.equal(enumName(State, await stateOf(c(), uid)), 'PreActive');
      assert.equal(sessionCount(), sessions, 'the client must not have reconnected');
    });
  });
});
