// PyKMIP 0.10's own client (ProxyKmipClient, via test/support/pykmip_client.py) against
// our embedded key server: an independent client must get through the whole lifecycle,
// Discover Versions and Query, and must meet the same per-identity ownership.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { KmipClient } from '../../src/kmip/client.js';
import type { CertifiedKey } from '../../src/pki/index.js';
import type { RunningKms } from '../../src/kms/service.js';
import { startKms } from '../../src/kms/service.js';
import { pykmipAvailable, runPyKmipClient } from '../support/pykmip.js';
import type { TlsFiles } from '../support/pykmip.js';

const SKIP = pykmipAvailable() ? false : '/usr/bin/python3 cannot import kmip (install python3-pykmip)';

let dir: string | undefined;
let kms: RunningKms | undefined;
const identities = new Map<string, { cert: CertifiedKey; files: TlsFiles }>();

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

/** A step the test expects to succeed: no error, and the whole output on failure. */
function assertOk(value: unknown, ...path: string[]): void {
  assert.notEqual(at(value, ...path), undefined, `${path.join('.')} is missing: ${JSON.stringify(value)}`);
  assert.equal(at(value, ...path, 'error'), undefined, `${path.join('.')} failed: ${JSON.stringify(value)}`);
}

function identity(name: string): { cert: CertifiedKey; files: TlsFiles } {
  const found = identities.get(name);
  assert.ok(found !== undefined, `no client certificate for ${name}`);
  return found;
}

function pykmip(
  who: string,
  scenario: string,
  args: string[] = [],
  emptyCredential = false,
): Promise<unknown> {
  assert.ok(kms !== undefined, 'the key server is not running');
  return runPyKmipClient({
    host: kms.host,
    port: kms.port,
    tls: identity(who).files,
    scenario,
    args,
    emptyCredential,
  });
}

/** Asserts every step of the `lifecycle` scenario and returns the key's identifier. */
function assertLifecycle(out: unknown, name: string): string {
  assert.equal(at(out, 'error'), undefined, JSON.stringify(out));
  assert.equal(text(out, 'tls', 'version'), 'TLSv1.2');
  assert.equal(at(out, 'name'), name);

  assertOk(out, 'steps', 'create');
  const uid = text(out, 'steps', 'create', 'result');
  assert.equal(at(out, 'uid'), uid);

  assertOk(out, 'steps', 'get');
  assert.equal(at(out, 'steps', 'get', 'result', 'key_length'), 32);
  assert.equal(at(out, 'steps', 'get', 'result', 'length_bits'), 256);
  assert.equal(at(out, 'steps', 'get', 'result', 'algorithm'), 'AES');
  assert.equal(at(out, 'steps', 'get', 'result', 'object_type'), 'SYMMETRIC_KEY');
  assert.match(text(out, 'steps', 'get', 'result', 'key_sha256'), /^[0-9a-f]{64}$/);

  assertOk(out, 'steps', 'get_attributes');
  assert.equal(text(out, 'steps', 'get_attributes', 'result', 'uid'), uid);
  assert.equal(text(out, 'steps', 'get_attributes', 'result', 'attributes', 'State'), 'PRE_ACTIVE');
  assert.deepEqual(at(out, 'steps', 'get_attributes', 'result', 'attributes', 'Name'), {
    value: name,
    type: 'UNINTERPRETED_TEXT_STRING',
  });
  assert.equal(at(out, 'steps', 'get_attributes', 'result', 'attributes', 'Cryptographic Length'), 256);

  assertOk(out, 'steps', 'activate');
  assert.equal(
    text(out, 'steps', 'get_attributes_after_activate', 'result', 'attributes', 'State'),
    'ACTIVE',
  );

  assertOk(out, 'steps', 'locate');
  assert.deepEqual(at(out, 'steps', 'locate', 'result'), [uid]);

  assertOk(out, 'steps', 'revoke');
  assertOk(out, 'steps', 'destroy');
  assert.equal(at(out, 'steps', 'get_after_destroy', 'result'), undefined, JSON.stringify(out));
  assert.equal(text(out, 'steps', 'get_after_destroy', 'error', 'type'), 'KmipOperationFailure');
  assert.equal(text(out, 'steps', 'get_after_destroy', 'error', 'status'), 'OPERATION_FAILED');
  assert.equal(text(out, 'steps', 'get_after_destroy', 'error', 'reason'), 'ITEM_NOT_FOUND');
  return uid;
}

void describe('PyKMIP client against our key server', { skip: SKIP }, () => {
  if (SKIP !== false) return;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hs-'));
    kms = await startKms({
      dataDir: join(dir, 'kms'),
      masterKeyFile: join(dir, 'master.key'),
      host: '127.0.0.1',
      port: 0,
    });
    for (const name of ['hs-pyclient-a', 'hs-pyclient-b']) {
      const cert = await kms.dataDir.issueClientCertificate(name);
      const files = {
        caPath: kms.dataDir.caPath,
        certPath: join(dir, `${name}.pem`),
        keyPath: join(dir, `${name}.key`),
      };
      writeFileSync(files.certPath, cert.certPem);
      writeFileSync(files.keyPath, cert.keyPem, { mode: 0o600 });
      identities.set(name, { cert, files });
    }
  });
  after(async () => {
    await kms?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  void test('lifecycle: create, get, get attributes, activate, locate, revoke, destroy', async () => {
    const name = `hs-pyclient-lifecycle-${Date.now()}`;
    assertLifecycle(await pykmip('hs-pyclient-a', 'lifecycle', [name]), name);
  });

  void test('lifecycle with an empty Username/Password credential', async () => {
    const name = `hs-pyclient-credential-${Date.now()}`;
    assertLifecycle(await pykmip('hs-pyclient-a', 'lifecycle', [name], true), name);
  });

  void test('Discover Versions and Query', async () => {
    const [discover, query] = await Promise.all([
      pykmip('hs-pyclient-a', 'discover'),
      pykmip('hs-pyclient-a', 'query'),
    ]);
    assertOk(discover, 'result');
    const versions = at(discover, 'result', 'versions');
    assert.ok(Array.isArray(versions) && versions.includes('1.1'), JSON.stringify(discover));

    assertOk(query, 'result');
    const operations = at(query, 'result', 'operations');
    assert.ok(Array.isArray(operations), JSON.stringify(query));
    for (const op of [
      'CREATE',
      'GET',
      'GET_ATTRIBUTES',
      'ACTIVATE',
      'REVOKE',
      'DESTROY',
      'LOCATE',
      'DISCOVER_VERSIONS',
    ]) {
      assert.ok(operations.includes(op), `Query should list ${op}: ${JSON.stringify(query)}`);
    }
    assert.deepEqual(at(query, 'result', 'object_types'), ['SYMMETRIC_KEY']);
    assert.equal(at(query, 'result', 'vendor_identification'), 'Hyperseal KMS');
  });

  void test('ownership: identity B cannot get, destroy or activate identity A’s key; A still can', async () => {
    const created = await pykmip('hs-pyclient-a', 'create_many', ['1']);
    const uids = at(created, 'uids');
    assert.ok(
      Array.isArray(uids) && uids.length === 1 && typeof uids[0] === 'string',
      JSON.stringify(created),
    );
    const uid = uids[0] as string;

    const refusals = await Promise.all(
      ['get', 'destroy', 'activate'].map((scenario) => pykmip('hs-pyclient-b', scenario, [uid])),
    );
    for (const out of refusals) {
      assert.equal(at(out, 'result'), undefined, `identity B must be refused: ${JSON.stringify(out)}`);
      assert.equal(text(out, 'error', 'status'), 'OPERATION_FAILED');
      // Ours does not reveal that someone else's object exists.
      assert.equal(text(out, 'error', 'reason'), 'ITEM_NOT_FOUND');
      assert.equal(text(out, 'error', 'message'), `Could not locate object: ${uid}`);
    }

    const owner = await pykmip('hs-pyclient-a', 'get', [uid]);
    assertOk(owner);
    assert.equal(at(owner, 'uid'), uid);
    assert.equal(at(owner, 'result', 'key_length'), 32);
    const attributes = await pykmip('hs-pyclient-a', 'get_attributes', [uid]);
    assertOk(attributes);
    assert.equal(
      text(attributes, 'result', 'attributes', 'State'),
      'PRE_ACTIVE',
      'B’s Activate had no effect',
    );

    // Our own client, as identity A, fetches the very key PyKMIP's client saw.
    assert.ok(kms !== undefined);
    const a = identity('hs-pyclient-a');
    const ours = new KmipClient({
      host: kms.host,
      port: kms.port,
      ca: kms.dataDir.caCertPem(),
      cert: a.cert.certPem,
      key: a.cert.keyPem,
    });
    try {
      const key = await ours.get(uid);
      assert.equal(
        createHash('sha256').update(key.material).digest('hex'),
        text(owner, 'result', 'key_sha256'),
      );
    } finally {
      ours.close();
    }
  });
});
