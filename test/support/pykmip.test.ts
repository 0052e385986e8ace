// Self-test of the PyKMIP harness: a real PyKMIP server, driven by PyKMIP's own client,
// with certificates from Hyperseal's PKI module. If this passes, later interop tests can
// trust the harness and blame only the code they test.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createCertificateAuthority, issueCertificate } from '../../src/pki/index.js';
import type { CertifiedKey } from '../../src/pki/index.js';
import { pykmipAvailable, runPyKmipClient, startPyKmipServer } from './pykmip.js';
import type { PyKmipServer, TlsFiles } from './pykmip.js';

/** Walks a parsed JSON value; undefined if any step is missing or not an object. */
function at(value: unknown, ...path: string[]): unknown {
  let current = value;
  for (const key of path) {
    if (typeof current !== 'object' || current === null || Array.isArray(current)) return undefined;
    current = (current as Record<string, unknown>)[key];
  }
  return current;
}

function text(value: unknown, ...path: string[]): string {
  const found = at(value, ...path);
  assert.equal(typeof found, 'string', `${path.join('.')} should be a string in ${JSON.stringify(value)}`);
  return found as string;
}

/** Fails with the whole step when a step the test expects to succeed reported an error. */
function assertOk(value: unknown, ...path: string[]): void {
  assert.equal(at(value, ...path, 'error'), undefined, `${path.join('.')} failed: ${JSON.stringify(value)}`);
}

function writeTls(dir: string, name: string, ca: CertifiedKey, leaf: CertifiedKey): TlsFiles {
  const files = {
    caPath: join(dir, 'ca.pem'),
    certPath: join(dir, `${name}.pem`),
    keyPath: join(dir, `${name}.key`),
  };
  writeFileSync(files.caPath, ca.certPem);
  writeFileSync(files.certPath, leaf.certPem);
  writeFileSync(files.keyPath, leaf.keyPem, { mode: 0o600 });
  return files;
}

void test('PyKMIP harness: server and client interoperate', async (t) => {
  if (!pykmipAvailable()) {
    t.skip('/usr/bin/python3 cannot import kmip (install python3-pykmip)');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'hyperseal-pykmip-'));
  // One hook, so the server stops before its directory is removed (hooks run FIFO).
  const started: PyKmipServer[] = [];
  t.after(async () => {
    for (const server of started) await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  // RSA keys: the common PyKMIP setup (TLS 1.2 then negotiates AES128-SHA256, RSA key
  // transport). EC certificates work too (ECDHE-ECDSA-AES128-SHA256); not needed here.
  const ca = await createCertificateAuthority({ commonName: 'pykmip-harness-ca', keyType: 'rsa' });
  const [serverCert, clientCert, otherCert] = await Promise.all([
    issueCertificate(ca, {
      commonName: 'localhost',
      usage: 'server',
      dnsNames: ['localhost'],
      ipAddresses: ['127.0.0.1'],
      keyType: 'rsa',
    }),
    issueCertificate(ca, { commonName: 'pykmip-harness', usage: 'client', keyType: 'rsa' }),
    issueCertificate(ca, { commonName: 'pykmip-harness-other', usage: 'client', keyType: 'rsa' }),
  ]);
  const serverTls = writeTls(dir, 'server', ca, serverCert);
  const clientTls = writeTls(dir, 'client', ca, clientCert);
  const otherTls = writeTls(dir, 'other', ca, otherCert);

  const server = await startPyKmipServer({ dir: join(dir, 'server'), tls: serverTls });
  started.push(server);
  const client = (tls: TlsFiles, scenario: string, args: string[] = []): Promise<unknown> =>
    runPyKmipClient({ host: server.host, port: server.port, tls, scenario, args });

  await t.test('lifecycle: create, get, activate, locate, revoke, destroy', async () => {
    const out = await client(clientTls, 'lifecycle', ['harness-lifecycle-key']);
    assert.equal(at(out, 'error'), undefined, JSON.stringify(out));
    assert.equal(text(out, 'tls', 'version'), 'TLSv1.2');

    const uid = text(out, 'steps', 'create', 'result');
    assert.equal(at(out, 'steps', 'get', 'result', 'key_length'), 32);
    assert.match(text(out, 'steps', 'get', 'result', 'key_sha256'), /^[0-9a-f]{64}$/);
    assert.equal(text(out, 'steps', 'get_attributes', 'result', 'attributes', 'State'), 'PRE_ACTIVE');
    assertOk(out, 'steps', 'activate');
    assert.equal(
      text(out, 'steps', 'get_attributes_after_activate', 'result', 'attributes', 'State'),
      'ACTIVE',
    );
    assert.deepEqual(at(out, 'steps', 'locate', 'result'), [uid]);
    assertOk(out, 'steps', 'revoke');
    assertOk(out, 'steps', 'destroy');
    assert.deepEqual(at(out, 'steps', 'get_after_destroy', 'error'), {
      type: 'KmipOperationFailure',
      status: 'OPERATION_FAILED',
      reason: 'ITEM_NOT_FOUND',
      message: `Could not locate object: ${uid}`,
    });
  });

  await t.test('ownership: a second client identity cannot use the first one’s key', async () => {
    const created = await client(clientTls, 'create_many', ['1']);
    const uids = at(created, 'uids');
    assert.ok(Array.isArray(uids) && uids.length === 1, JSON.stringify(created));
    const uid = String(uids[0]);

    const [stranger, owner] = await Promise.all([
      client(otherTls, 'get', [uid]),
      client(clientTls, 'get', [uid]),
    ]);
    // PyKMIP says PERMISSION_DENIED, though its message reads "Could not locate object".
    assert.equal(text(stranger, 'error', 'reason'), 'PERMISSION_DENIED', JSON.stringify(stranger));
    assertOk(owner);
    assert.equal(at(owner, 'result', 'key_length'), 32);
  });

  await t.test('discover (with and without a credential) and query', async () => {
    const [discover, withCredential, query] = await Promise.all([
      client(clientTls, 'discover'),
      runPyKmipClient({
        host: server.host,
        port: server.port,
        tls: clientTls,
        scenario: 'discover',
        emptyCredential: true,
      }),
      client(clientTls, 'query'),
    ]);
    for (const out of [discover, withCredential]) {
      const versions = at(out, 'result', 'versions');
      assert.ok(Array.isArray(versions) && versions.includes('1.1'), JSON.stringify(out));
    }
    const operations = at(query, 'result', 'operations');
    assert.ok(Array.isArray(operations), JSON.stringify(query));
    for (const op of ['CREATE', 'GET', 'GET_ATTRIBUTES', 'ACTIVATE', 'REVOKE', 'DESTROY', 'LOCATE']) {
      assert.ok(operations.includes(op), `Query should list ${op}: ${JSON.stringify(query)}`);
    }
  });

  await t.test('stop() ends the server and frees its port', async () => {
    await server.stop();
    const after = await runPyKmipClient({
      host: server.host,
      port: server.port,
      tls: clientTls,
      scenario: 'discover',
      timeoutMs: 10_000,
    });
    assert.notEqual(at(after, 'error'), undefined, 'a stopped server must refuse connections');
    assert.match(server.logs(), /Session client identity: pykmip-harness/);
  });
});
