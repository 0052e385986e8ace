// joinManager against a fake manager (src/pki CA signing the agent's CSR): the files it
// writes, the CA pin checked before the token leaves the host, the manager's refusal
// codes passed through, and the "no identity or a complete one" rule.
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { isHypersealError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { IDENTITY_FILES, joinManager, loadAgentIdentity } from './join.js';
import type { JoinOptions } from './join.js';
import type { FakeManager, ManagerPki } from './testing.js';
import { createManagerPki, forgeLookalikeServer, startFakeManager, tempDir } from './testing.js';

let pki: ManagerPki;
let manager: FakeManager;
const dirs: { remove(): void }[] = [];

before(async () => {
  pki = await createManagerPki();
  manager = await startFakeManager({ pki });
});
after(async () => {
  await manager.close();
  for (const d of dirs) d.remove();
});

function newDataDir(): string {
  const d = tempDir('join');
  dirs.push(d);
  return join(d.path, 'agent'); // not yet existing: join creates it
}

let tokenCounter = 0;
function newToken(kind: 'valid' | 'used' | 'expired' = 'valid', on: FakeManager = manager): string {
  const token = `hs_enroll_${kind}_${++tokenCounter}_${'x'.repeat(20)}`;
  on.tokens.set(token, kind);
  return token;
}

function options(overrides: Partial<JoinOptions> = {}): JoinOptions {
  return {
    managerUrl: manager.url,
    token: newToken(),
    caSha256: pki.caSha256,
    name: 'kvm-01',
    address: 'https://127.0.0.1:8443',
    dataDir: newDataDir(),
    ...overrides,
  };
}

async function expectCode(promise: Promise<unknown>, code: ErrorCode): Promise<Error> {
  const err = await promise.then(
    () => assert.fail(`expected ${code}, but it succeeded`),
    (e: unknown) => e,
  );
  assert.ok(isHypersealError(err, code), `expected ${code}, got ${String(err)}`);
  return err;
}

void test('join writes a complete identity: key (0600), certificate for that key, pinned CA, host.json', async () => {
  const opts = options();
  const host = await joinManager(opts);
  const files = Object.values(IDENTITY_FILES).map((f) => join(opts.dataDir, f));
  for (const f of files) assert.ok(existsSync(f), `${f} exists`);
  assert.equal(statSync(join(opts.dataDir, IDENTITY_FILES.key)).mode & 0o777, 0o600);

  const id = loadAgentIdentity(opts.dataDir);
  assert.equal(id.host.hostId, host.hostId);
  assert.equal(id.host.managerUrl, manager.url);
  assert.equal(id.host.managerCaSha256, pki.caSha256);
  assert.equal(id.managerCaPem.trim(), pki.ca.certPem.trim());
  const cert = new X509Certificate(id.certPem);
  assert.ok(cert.checkIssued(new X509Certificate(pki.ca.certPem)));
  assert.ok(
    cert.publicKey
      .export({ type: 'spki', format: 'der' })
      .equals(createPublicKey(createPrivateKey(id.keyPem)).export({ type: 'spki', format: 'der' })),
    'the certificate is for the key kept in agent.key',
  );
  assert.equal(createPrivateKey(id.keyPem).asymmetricKeyType, 'ec');
  assert.deepEqual(manager.enrolled.at(-1), { hostId: host.hostId, name: 'kvm-01', address: opts.address });
});

void test('a wrong CA fingerprint is refused before the token is sent', async () => {
  const before = manager.bodies.length;
  const handshakes = manager.handshakes;
  const opts = options({ caSha256: 'ab'.repeat(32) });
  const err = await expectCode(joinManager(opts), 'HS_ERR_AGENT_CA_MISMATCH');
  assert.match(err.message, /token was not sent/);
  // The probe's handshake may or may not have completed on the server's side by now.
  assert.ok(manager.handshakes <= handshakes + 1, 'at most the probing handshake');
  assert.equal(manager.bodies.length, before, 'the fake manager received no HTTP request at all');
  assert.ok(!manager.bodies.some((b) => b.includes(opts.token)));
  assert.ok(!existsSync(join(opts.dataDir, IDENTITY_FILES.host)));
  assert.ok(!existsSync(join(opts.dataDir, IDENTITY_FILES.key)), 'no key written');
});

void test('fingerprints are accepted in upper case with colons', async () => {
  const colons = pki.caSha256.toUpperCase().replace(/(..)(?!$)/g, '$1:');
  await joinManager(options({ caSha256: colons }));
});

void test('a man in the middle that copies the public CA into its chain never receives the token', async () => {
  // The CA certificate is public, but it does not certify the impostor's own certificate,
  // so the probe does not find the pin in the impostor's chain.
  const mitm = await startFakeManager({
    pki,
    certChainPem: pki.foreignServer.certPem + pki.ca.certPem,
    keyPem: pki.foreignServer.keyPem,
  });
  try {
    const opts = options({ managerUrl: mitm.url, token: newToken('valid', mitm) });
    await expectCode(joinManager(opts), 'HS_ERR_AGENT_CA_MISMATCH');
    assert.deepEqual(mitm.bodies, [], 'no request reached the impostor');
    assert.ok(!existsSync(join(opts.dataDir, IDENTITY_FILES.host)));
  } finally {
    await mitm.close();
  }
});

void test('a forged chain that passes the probe fails the verified connection: no token sent', async () => {
  // Issuer name and key id copied from the real CA: the probe links the real CA to it
  // and finds the pin; only the signature check of the verified connection exposes it.
  const d = tempDir('forge');
  dirs.push(d);
  const forged = forgeLookalikeServer(pki, d.path);
  const mitm = await startFakeManager({ pki, ...forged });
  try {
    const opts = options({ managerUrl: mitm.url, token: newToken('valid', mitm) });
    const err = await expectCode(joinManager(opts), 'HS_ERR_AGENT_CA_MISMATCH');
    // Only the verified connection (step 2) can say this: the probe accepted the chain.
    assert.match(err.message, /not issued by the pinned CA \(CERT_SIGNATURE_FAILURE\)/);
    assert.deepEqual(mitm.bodies, [], 'no request reached the impostor');
  } finally {
    await mitm.close();
  }
});

void test('a manager certificate without serverAuth (an agent-style client certificate) is refused', async () => {
  const impostor = await startFakeManager({
    pki,
    certChainPem: pki.managerClient.certPem + pki.ca.certPem,
    keyPem: pki.managerClient.keyPem,
  });
  try {
    const opts = options({ managerUrl: impostor.url, token: newToken('valid', impostor) });
    const err = await expectCode(joinManager(opts), 'HS_ERR_AGENT_CA_MISMATCH');
    assert.match(err.message, /not a TLS server certificate/);
    assert.deepEqual(impostor.bodies, []);
  } finally {
    await impostor.close();
  }
});

void test("the manager's refusal codes are passed through: used, expired, unknown token", async () => {
  await expectCode(joinManager(options({ token: newToken('used') })), 'HS_ERR_AUTH_TOKEN_USED');
  await expectCode(joinManager(options({ token: newToken('expired') })), 'HS_ERR_AUTH_TOKEN_EXPIRED');
  await expectCode(joinManager(options({ token: 'hs_enroll_never_issued' })), 'HS_ERR_AUTH_INVALID_TOKEN');
  // A token joins exactly one agent.
  const token = newToken();
  await joinManager(options({ token }));
  const err = await expectCode(joinManager(options({ token })), 'HS_ERR_AUTH_TOKEN_USED');
  assert.match(err.message, /manager refused the enrollment/);
});

void test('an unreachable manager is HS_ERR_AGENT_MANAGER_UNREACHABLE', async () => {
  // A port that was just free: nothing listens there.
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const err = await expectCode(
    joinManager(options({ managerUrl: `https://127.0.0.1:${port}` })),
    'HS_ERR_AGENT_MANAGER_UNREACHABLE',
  );
  assert.match(err.message, /ECONNREFUSED/);
});

void test('bad arguments are refused before any connection', async () => {
  const handshakes = manager.handshakes;
  await expectCode(joinManager(options({ caSha256: 'not-hex' })), 'HS_ERR_INVALID_ARGUMENT');
  await expectCode(
    joinManager(options({ managerUrl: manager.url.replace('https', 'http') })),
    'HS_ERR_INVALID_ARGUMENT',
  );
  await expectCode(joinManager(options({ address: 'https://127.0.0.1' })), 'HS_ERR_INVALID_ARGUMENT');
  await expectCode(joinManager(options({ token: '' })), 'HS_ERR_INVALID_ARGUMENT');
  assert.equal(manager.handshakes, handshakes);
});

void test('an existing identity is kept unless replace is asked for; a torn one counts as none', async () => {
  const opts = options();
  const first = await joinManager(opts);
  await expectCode(joinManager({ ...opts, token: newToken() }), 'HS_ERR_AGENT_ALREADY_JOINED');
  assert.equal(loadAgentIdentity(opts.dataDir).host.hostId, first.hostId);

  const second = await joinManager({ ...opts, token: newToken(), replace: true });
  assert.notEqual(second.hostId, first.hostId);
  assert.equal(loadAgentIdentity(opts.dataDir).host.hostId, second.hostId);

  // What a kill -9 between the key and host.json leaves: files without the marker. It is
  // no identity (the server refuses to start) and a plain join completes it.
  const torn = options();
  await joinManager(torn);
  const hostFile = join(torn.dataDir, IDENTITY_FILES.host);
  const keyBefore = readFileSync(join(torn.dataDir, IDENTITY_FILES.key), 'utf8');
  writeFileSync(hostFile + '.tmp-99999', '{"half":');
  rmSync(hostFile);
  assert.throws(
    () => loadAgentIdentity(torn.dataDir),
    (e: unknown) => isHypersealError(e, 'HS_ERR_AGENT_NOT_JOINED'),
  );
  await joinManager({ ...torn, token: newToken() });
  const id = loadAgentIdentity(torn.dataDir);
  assert.notEqual(id.keyPem, keyBefore, 'a fresh key');
  assert.ok(!existsSync(hostFile + '.tmp-99999'), 'temporary leftovers are removed');
});
