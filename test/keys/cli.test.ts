// `hyperseal key-provider …` end to end: the real CLI binary against a real manager
// (startTestPlatform) and the embedded key server. Output, --json, and the exit codes
// scripts rely on (2 usage, 3 not found, 5 conflict, 6 a server that does not answer).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { readSealedFile } from '../../src/crypto/sealed-file.js';
import { loadMasterKey } from '../../src/kms/master-key.js';
import type { RunningKms } from '../../src/kms/service.js';
import { startKms } from '../../src/kms/service.js';
import type { CertifiedKey } from '../../src/pki/index.js';
import { signCsr } from '../../src/pki/index.js';
import type { TestPlatform } from '../support/manager.js';
import { startTestPlatform, useTempConfigHome } from '../support/manager.js';

// Compiled to dist/test/keys/; the binary is dist/src/cli/main.js.
const BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[]): Promise<Run> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolvePromise({ code, stdout, stderr }));
  });
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const address = server.address();
  await new Promise<void>((r) => server.close(() => r()));
  return typeof address === 'object' && address !== null ? address.port : 0;
}

describe('hyperseal key-provider', () => {
  let restoreConfig: () => void;
  let platform: TestPlatform;
  let root: string;
  let kms: RunningKms;
  let kmsCa: CertifiedKey;
  let creds: string;
  const files: Record<string, string> = {};

  before(async () => {
    restoreConfig = useTempConfigHome();
    root = mkdtempSync(join(tmpdir(), 'hs-keys-cli-'));
    const masterKeyFile = join(root, 'kms-master.key');
    kms = await startKms({ dataDir: join(root, 'kms'), masterKeyFile, port: 0 });
    const kmsMaster = loadMasterKey({ description: 'test', path: masterKeyFile }, false);
    kmsCa = {
      certPem: kms.dataDir.caCertPem(),
      keyPem: readSealedFile(kms.dataDir.dir, 'ca.key.sealed', kmsMaster),
    };
    kmsMaster.fill(0);
    platform = await startTestPlatform({ agents: 0 });
    creds = join(root, 'credentials.json');
    writeFileSync(
      creds,
      JSON.stringify({
        managerUrl: platform.manager.url,
        caPath: platform.manager.caPath,
        token: platform.adminToken,
      }),
    );
    const cert = await kms.dataDir.issueClientCertificate('hyperseal-manager');
    files.ca = join(root, 'kms-ca.pem');
    files.cert = join(root, 'client.pem');
    files.key = join(root, 'client.key');
    writeFileSync(files.ca, kmsCa.certPem);
    writeFileSync(files.cert, cert.certPem);
    writeFileSync(files.key, cert.keyPem, { mode: 0o600 });
  });
  after(async () => {
    await platform?.close();
    await kms?.close();
    if (root !== undefined) rmSync(root, { recursive: true, force: true });
    restoreConfig();
  });

  const kp = (...args: string[]): Promise<Run> => run(['key-provider', ...args, '--credentials', creds]);

  test('add, list, show, test: text and --json, never a key', async () => {
    const added = await kp(
      'add',
      '--name',
      'local',
      '--server',
      `127.0.0.1:${kms.port}`,
      '--ca',
      files.ca ?? '',
      '--cert',
      files.cert ?? '',
      '--key',
      files.key ?? '',
    );
    assert.equal(added.code, 0, added.stderr);
    assert.match(added.stdout, /added key provider local \(default\)/);

    const list = await kp('list');
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^NAME +DEFAULT +STATE/);
    assert.match(list.stdout, /local +yes +ready/);
    const json = await kp('list', '--json');
    const parsed = JSON.parse(json.stdout) as { name: string; identity: string }[];
    assert.equal(parsed[0]?.identity, 'hyperseal-manager');

    const show = await kp('show', 'local');
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /identity +hyperseal-manager/);
    for (const r of [added, list, json, show]) assert.doesNotMatch(r.stdout + r.stderr, /PRIVATE KEY/);

    const tested = await kp('test', 'local');
    assert.equal(tested.code, 0, tested.stderr);
    assert.match(tested.stdout, /1 of 1 servers answered/);
    assert.match(tested.stdout, /ok .* ms +KMIP 1\.1, 1\.0 +Hyperseal KMS/);
  });

  test('test exits 6 when a server does not answer; set-servers fixes it', async () => {
    const dead = await closedPort();
    const set = await kp(
      'set-servers',
      'local',
      '--server',
      `127.0.0.1:${kms.port}`,
      '--server',
      `127.0.0.1:${dead}`,
    );
    assert.equal(set.code, 0, set.stderr);
    const tested = await kp('test', 'local', '--json');
    assert.equal(tested.code, 6);
    const r = JSON.parse(tested.stdout) as {
      ok: boolean;
      servers: { ok: boolean; error?: { code: string } }[];
    };
    assert.equal(r.ok, false);
    assert.equal(r.servers[1]?.error?.code, 'HS_ERR_KMIP_CONNECT');
    assert.equal((await kp('set-servers', 'local', '--server', `127.0.0.1:${kms.port}`)).code, 0);
  });

  test('add-csr prints the CSR; set-cert completes it; default moves', async () => {
    const csrPath = join(root, 'req.csr');
    const added = await kp(
      'add-csr',
      '--name',
      'csr',
      '--server',
      `127.0.0.1:${kms.port}`,
      '--ca',
      files.ca ?? '',
      '--common-name',
      'hs-cli',
      '--csr-out',
      csrPath,
    );
    assert.equal(added.code, 0, added.stderr);
    assert.match(added.stdout, /awaiting its certificate; CSR in/);
    const signedPath = join(root, 'signed.pem');
    writeFileSync(signedPath, await signCsr(kmsCa, readFileSync(csrPath, 'utf8'), { usage: 'client' }));

    const early = await kp('default', 'csr');
    assert.equal(early.code, 0, early.stderr);
    const set = await kp('set-cert', 'csr', '--cert', signedPath);
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stdout, /key provider csr is ready \(identity hs-cli\)/);
    const back = await kp('default', 'local');
    assert.equal(back.code, 0, back.stderr);
    assert.match(back.stdout, /local is the default key provider/);
  });

  test('exit codes: 2 usage, 3 unknown provider, 5 conflict', async () => {
    const usage = await kp('frobnicate');
    assert.equal(usage.code, 2);
    const missing = await kp('add', '--name', 'x');
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /--server is required/);
    const unknown = await kp('show', 'nope');
    assert.equal(unknown.code, 3);
    assert.match(unknown.stderr, /no key provider 'nope' \[HS_ERR_NOT_FOUND\]/);
    const conflict = await kp('remove', 'local', '--json');
    assert.equal(conflict.code, 5, 'the default is not removed while another provider exists');
    const err = JSON.parse(conflict.stderr) as { error: { code: string } };
    assert.equal(err.error.code, 'HS_ERR_CONFLICT');
    const removed = await kp('remove', 'csr');
    assert.equal(removed.code, 0, removed.stderr);
  });
});
