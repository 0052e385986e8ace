// End to end through the real `hyperseal` binary, as an operator would use it: the
// embedded key server (`kms serve`, `kms client-cert`, `kms grant`), the KMIP client
// (`kmip …`, exit codes, JSON errors, no key material in any output), and `up`.
// Every process gets its own temporary XDG_CONFIG_HOME, so master keys land there.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { KmipClient } from '../../src/kmip/client.js';

// Compiled to dist/test/cli/; the binary is dist/src/cli/main.js.
const BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
const HOST = '127.0.0.1';
const STEP_TIMEOUT_MS = 15_000;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function childEnv(xdg: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, XDG_CONFIG_HOME: xdg, ...extra };
  // Whatever the developer's shell has must not pick another master key or add traces.
  delete env.HYPERSEAL_KMS_MASTER_KEY;
  delete env.HYPERSEAL_KMS_MASTER_KEY_FILE;
  if (extra.HYPERSEAL_TRACE === undefined) delete env.HYPERSEAL_TRACE;
  return env;
}

/** Runs `hyperseal ARGS` to completion. */
function run(args: string[], opts: { env: NodeJS.ProcessEnv; cwd?: string }): Promise<Run> {
  return new Promise((done, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: opts.env,
      cwd: opts.cwd ?? process.cwd(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), STEP_TIMEOUT_MS);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      done({ code, stdout, stderr });
    });
  });
}

function expectExit(r: Run, code: number, what: string): void {
  assert.equal(r.code, code, `${what}: exit ${String(r.code)}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
}

function freePort(): Promise<number> {
  return new Promise((done, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, HOST, () => {
      const address = probe.address();
      probe.close(() => {
        if (address !== null && typeof address === 'object') done(address.port);
        else reject(new Error('no port'));
      });
    });
  });
}

/** A long-running `hyperseal` process (kms serve, up) and what it has printed so far. */
interface Daemon {
  child: ChildProcess;
  port: number;
  stdout(): string;
  stderr(): string;
  exited: Promise<number | null>;
}

/**
 * Starts a daemon on a free port and waits for `ready` on stdout. The port is free when
 * picked but may be taken before the child binds it; then it is tried again.
 */
async function startDaemon(
  argsFor: (port: number) => string[],
  ready: RegExp,
  opts: { env: NodeJS.ProcessEnv; cwd?: string },
): Promise<Daemon> {
  let last = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const child = spawn(process.execPath, [BIN, ...argsFor(port)], {
      env: opts.env,
      cwd: opts.cwd ?? process.cwd(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
    const outcome = await new Promise<'ready' | 'exited' | 'timeout'>((done) => {
      const timer = setTimeout(() => done('timeout'), STEP_TIMEOUT_MS);
      child.stdout?.setEncoding('utf8').on('data', (c: string) => {
        stdout += c;
        if (ready.test(stdout)) {
          clearTimeout(timer);
          done('ready');
        }
      });
      child.stderr?.setEncoding('utf8').on('data', (c: string) => (stderr += c));
      void exited.then(() => {
        clearTimeout(timer);
        done('exited');
      });
    });
    if (outcome === 'ready') return { child, port, stdout: () => stdout, stderr: () => stderr, exited };
    child.kill('SIGKILL');
    await exited;
    last = `${outcome}\nstdout: ${stdout}\nstderr: ${stderr}`;
    if (!stderr.includes('cannot listen')) break;
  }
  throw new Error(`hyperseal did not become ready: ${last}`);
}

async function stopDaemon(d: Daemon, signal: NodeJS.Signals): Promise<number | null> {
  const timer = setTimeout(() => d.child.kill('SIGKILL'), STEP_TIMEOUT_MS);
  d.child.kill(signal);
  const code = await d.exited;
  clearTimeout(timer);
  return code;
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    assert.fail(`${what} is not JSON: ${text}`);
  }
}

/** Every spelling in which key material could leak into text. */
function encodingsOf(key: Buffer): string[] {
  return [
    key.toString('hex'),
    key.toString('hex').toUpperCase(),
    key.toString('base64'),
    key.toString('base64url'),
  ];
}

void test('hyperseal kms serve + kmip client, end to end through the binary', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'hyperseal-cli-'));
  const xdg = join(root, 'xdg');
  const dataDir = join(root, 'kms');
  const env = childEnv(xdg);
  const daemons: Daemon[] = [];
  const clients: KmipClient[] = [];
  t.after(async () => {
    for (const c of clients) c.close();
    for (const d of daemons) if (d.child.exitCode === null) await stopDaemon(d, 'SIGKILL');
    rmSync(root, { recursive: true, force: true });
  });

  const serve = await startDaemon(
    (port) => ['kms', 'serve', '--data-dir', dataDir, '--listen', `${HOST}:${port}`],
    /serving KMIP 1\.1 on /,
    { env },
  );
  daemons.push(serve);
  assert.match(serve.stdout(), new RegExp(`serving KMIP 1\\.1 on ${HOST}:${serve.port} `));

  // The master key lives under XDG_CONFIG_HOME (mode 0600), never in the data directory.
  const keyDir = join(xdg, 'hyperseal');
  const masterFiles = readdirSync(keyDir).filter((f) => /^kms-master-[0-9a-f]{16}\.key$/.test(f));
  assert.equal(masterFiles.length, 1, `one master key file in ${keyDir}: ${readdirSync(keyDir).join(', ')}`);
  const masterPath = join(keyDir, masterFiles[0] ?? '');
  assert.equal(statSync(masterPath).mode & 0o777, 0o600);
  const masterKey = Buffer.from(readFileSync(masterPath, 'utf8').trim(), 'base64');
  assert.equal(masterKey.length, 32);
  const expected = ['ca.pem', 'server.pem', 'ca.key.sealed', 'server.key.sealed', 'objects.db'];
  for (const f of readdirSync(dataDir)) {
    assert.ok(
      expected.some((e) => f === e || f.startsWith('objects.db-')),
      `unexpected file ${f} in data dir`,
    );
    const bytes = readFileSync(join(dataDir, f));
    assert.ok(!bytes.includes(masterKey), `${f} holds the master key`);
    assert.ok(!bytes.includes(masterKey.toString('base64')), `${f} holds the master key (base64)`);
  }
  for (const f of ['ca.key.sealed', 'server.key.sealed']) {
    assert.equal(statSync(join(dataDir, f)).mode & 0o777, 0o600, `${f} mode`);
    assert.ok(!readFileSync(join(dataDir, f), 'utf8').includes('PRIVATE KEY'), `${f} is sealed`);
  }

  // Client identities.
  const issue = async (name: string): Promise<string> => {
    const prefix = join(root, name);
    const r = await run(['kms', 'client-cert', '--data-dir', dataDir, '--name', name, '--out', prefix], {
      env,
    });
    expectExit(r, 0, `client-cert ${name}`);
    assert.match(r.stdout, new RegExp(`issued client certificate for '${name}'`));
    assert.equal(statSync(`${prefix}.pem`).mode & 0o777, 0o644, `${name}.pem mode`);
    assert.equal(statSync(`${prefix}.key`).mode & 0o777, 0o600, `${name}.key mode`);
    assert.match(readFileSync(`${prefix}.pem`, 'utf8'), /^-----BEGIN CERTIFICATE-----/);
    assert.match(readFileSync(`${prefix}.key`, 'utf8'), /-----BEGIN PRIVATE KEY-----/);
    return prefix;
  };
  const [alice, bob] = await Promise.all([issue('alice'), issue('bob')]);
  const caPath = join(dataDir, 'ca.pem');
  const server = `${HOST}:${serve.port}`;
  const as = (prefix: string): string[] => [
    'kmip',
    '--server',
    server,
    '--ca',
    caPath,
    '--cert',
    `${prefix}.pem`,
    '--key',
    `${prefix}.key`,
  ];
  const kmip = (prefix: string, ...args: string[]): Promise<Run> => run([...as(prefix), ...args], { env });

  // Create, Locate.
  const created = await kmip(alice, 'create', '--name', 'k1');
  expectExit(created, 0, 'create');
  const id = created.stdout.trim();
  assert.match(id, /^[0-9a-f-]{36}$/, `create prints the new id, got '${created.stdout}'`);
  const located = await kmip(alice, '--json', 'locate', '--name', 'k1');
  expectExit(located, 0, 'locate');
  assert.deepEqual(parseJson(located.stdout, 'locate --json'), { ids: [id] });

  // Get prints a fingerprint, never the key; also not in KMIP traces (redacted by type).
  const inProcess = new KmipClient({
    host: HOST,
    port: serve.port,
    ca: readFileSync(caPath),
    cert: readFileSync(`${alice}.pem`),
    key: readFileSync(`${alice}.key`),
  });
  clients.push(inProcess);
  const key = await inProcess.get(id);
  assert.equal(key.material.length, 32);
  const fingerprint = createHash('sha256').update(key.material).digest('hex');
  const [got, gotText, traced, attrs] = await Promise.all([
    kmip(alice, 'get', id, '--json'),
    kmip(alice, 'get', id),
    run([...as(alice), 'get', id], { env: childEnv(xdg, { HYPERSEAL_TRACE: 'kmip' }) }),
    kmip(alice, 'attributes', id),
  ]);
  expectExit(got, 0, 'get --json');
  const info = parseJson(got.stdout, 'get --json') as Record<string, unknown>;
  assert.equal(info.id, id);
  assert.equal(info.algorithm, 'AES');
  assert.equal(info.lengthBits, 256);
  assert.match(String(info.sha256), /^[0-9a-f]{64}$/);
  assert.equal(info.sha256, fingerprint);
  expectExit(gotText, 0, 'get');
  assert.match(gotText.stdout, new RegExp(`sha256\\s+${fingerprint}`));
  expectExit(traced, 0, 'get with HYPERSEAL_TRACE=kmip');
  assert.match(traced.stderr, /"subsystem":"kmip"/, 'the trace is on');
  assert.match(traced.stderr, /KeyMaterial ByteString = <32 bytes>/, 'key material traced as its length');
  for (const r of [got, gotText, traced]) {
    for (const enc of encodingsOf(key.material)) {
      assert.ok(!r.stdout.includes(enc) && !r.stderr.includes(enc), 'key material in CLI output');
    }
  }

  expectExit(attrs, 0, 'attributes');
  assert.match(attrs.stdout, /^State\s+PreActive$/m);
  assert.match(attrs.stdout, /^Name\s+k1$/m);

  // Errors and exit codes (independent, so in parallel).
  const unreachable = await freePort();
  const [unknown, unknownJson, badOp, noServer, usageJson, down] = await Promise.all([
    kmip(alice, 'get', '00000000-0000-0000-0000-000000000000'),
    kmip(alice, '--json', 'get', 'no-such-object'),
    kmip(alice, 'frobnicate'),
    run(['kmip', '--ca', caPath, '--cert', `${alice}.pem`, '--key', `${alice}.key`, 'get', id], { env }),
    kmip(alice, '--json', 'revoke', id, '--reason', 'because'),
    run(['kmip', '--server', `${HOST}:${unreachable}`, ...as(alice).slice(3), 'query'], { env }),
  ]);
  expectExit(unknown, 3, 'get of an unknown id');
  assert.match(unknown.stderr, /\[HS_ERR_KMIP_ITEM_NOT_FOUND\]/);
  assert.equal(unknown.stdout, '');
  expectExit(unknownJson, 3, '--json get of an unknown id');
  const errorBody = parseJson(unknownJson.stderr, '--json error') as {
    error?: { code?: unknown; message?: unknown };
  };
  assert.equal(errorBody.error?.code, 'HS_ERR_KMIP_ITEM_NOT_FOUND');
  assert.equal(typeof errorBody.error?.message, 'string');
  expectExit(badOp, 2, 'unknown operation');
  assert.match(badOp.stderr, /unknown kmip operation 'frobnicate'.*\[HS_ERR_INVALID_ARGUMENT\]/s);
  expectExit(noServer, 2, 'missing --server');
  assert.match(noServer.stderr, /--server is required/);
  expectExit(usageJson, 2, '--json usage error');
  const usageBody = parseJson(usageJson.stderr, '--json usage error') as { error?: { code?: unknown } };
  assert.equal(usageBody.error?.code, 'HS_ERR_INVALID_ARGUMENT');
  expectExit(down, 6, 'unreachable server');
  assert.match(down.stderr, /\[HS_ERR_KMIP_CONNECT\]/);

  // Ownership: bob neither finds nor gets alice's key until the operator grants it to him.
  // The store is SQLite in WAL mode: `kms grant` works while the server runs.
  const [bobGet, bobLocate, badGrant] = await Promise.all([
    kmip(bob, 'get', id),
    kmip(bob, '--json', 'locate', '--name', 'k1'),
    run(['kms', 'grant', '--data-dir', dataDir, '--id', 'no-such-object', '--to', 'bob'], { env }),
  ]);
  expectExit(bobGet, 3, "bob's get of alice's key");
  assert.match(bobGet.stderr, /\[HS_ERR_KMIP_ITEM_NOT_FOUND\]/);
  expectExit(bobLocate, 0, "bob's locate");
  assert.deepEqual(parseJson(bobLocate.stdout, 'locate --json'), { ids: [] });
  expectExit(badGrant, 3, 'grant of an unknown id');
  const granted = await run(['kms', 'grant', '--data-dir', dataDir, '--id', id, '--to', 'bob'], { env });
  expectExit(granted, 0, 'grant');
  assert.match(granted.stdout, new RegExp(`granted 'bob' access to ${id}`));
  const bobGetAgain = await kmip(bob, '--json', 'get', id);
  expectExit(bobGetAgain, 0, "bob's get after the grant");
  assert.equal((parseJson(bobGetAgain.stdout, 'get --json') as { sha256?: unknown }).sha256, fingerprint);

  // Lifecycle: an Active key cannot be destroyed (Permission Denied → exit 4); revoke first.
  expectExit(await kmip(alice, 'activate', id), 0, 'activate');
  assert.match((await kmip(alice, 'attributes', id)).stdout, /^State\s+Active$/m);
  const destroyActive = await kmip(alice, 'destroy', id);
  expectExit(destroyActive, 4, 'destroy of an Active key');
  assert.match(destroyActive.stderr, /\[HS_ERR_KMIP_PERMISSION_DENIED\]/);
  const revoked = await kmip(alice, 'revoke', id, '--reason', 'cessation');
  expectExit(revoked, 0, 'revoke --reason cessation');
  const afterRevoke = await kmip(alice, 'attributes', id);
  assert.match(afterRevoke.stdout, /^State\s+Deactivated$/m);
  assert.match(afterRevoke.stdout, /^Revocation Reason\s+CessationOfOperation$/m);
  const destroyed = await kmip(alice, 'destroy', id);
  expectExit(destroyed, 0, 'destroy');
  assert.match(destroyed.stdout, new RegExp(`destroyed ${id}`));
  // Destroyed objects keep their attributes and are found only when asked for by state.
  const [getDestroyed, live, byState, attrsDestroyed] = await Promise.all([
    kmip(alice, 'get', id),
    kmip(alice, '--json', 'locate', '--name', 'k1'),
    kmip(alice, '--json', 'locate', '--name', 'k1', '--state', 'destroyed'),
    kmip(alice, 'attributes', id),
  ]);
  expectExit(getDestroyed, 3, 'get of a destroyed key');
  assert.deepEqual(parseJson(live.stdout, 'locate'), { ids: [] });
  assert.deepEqual(parseJson(byState.stdout, 'locate --state destroyed'), { ids: [id] });
  expectExit(attrsDestroyed, 0, 'attributes of a destroyed key');
  assert.match(attrsDestroyed.stdout, /^State\s+Destroyed$/m);

  // SIGTERM stops the server cleanly.
  assert.equal(await stopDaemon(serve, 'SIGTERM'), 0, `kms serve exit\nstderr: ${serve.stderr()}`);
  assert.match(serve.stdout(), /^hyperseal kms: stopped$/m);
  for (const enc of encodingsOf(key.material)) {
    assert.ok(
      !serve.stdout().includes(enc) && !serve.stderr().includes(enc),
      'key material in server output',
    );
  }
});

/**
 * `hyperseal up` (sim driver) in a fresh directory: the key server on a free port, the
 * manager on any (the agent's port is fixed at join time); killed and removed after `t`.
 */
async function upInTemp(
  t: TestContext,
  extraEnv: Record<string, string>,
): Promise<{ root: string; env: NodeJS.ProcessEnv; up: Daemon; agentPort: number }> {
  const root = mkdtempSync(join(tmpdir(), 'hyperseal-up-'));
  const env = childEnv(join(root, 'xdg'), extraEnv);
  const started: Daemon[] = [];
  t.after(async () => {
    for (const d of started) if (d.child.exitCode === null) await stopDaemon(d, 'SIGKILL');
    rmSync(root, { recursive: true, force: true });
  });
  const agentPort = await freePort();
  const up = await startUp(root, env, agentPort);
  started.push(up);
  return { root, env, up, agentPort };
}

function startUp(root: string, env: NodeJS.ProcessEnv, agentPort: number): Promise<Daemon> {
  return startDaemon(
    (port) => [
      'up',
      '--data-dir',
      'hs',
      '--kms-listen',
      `${HOST}:${port}`,
      '--manager-listen',
      `${HOST}:0`,
      '--agent-port',
      String(agentPort),
      '--driver',
      'sim',
    ],
    /Ctrl-C stops everything/,
    { env, cwd: root },
  );
}

void test('hyperseal up prints commands that work, and stops on SIGINT', async (t) => {
  const { root, env, up, agentPort } = await upInTemp(t, {});
  const out = up.stdout();
  assert.match(out, /Hyperseal is up/);
  assert.match(out, new RegExp(`embedded KMIP key server\\s+${HOST}:${up.port}`));
  assert.match(out, new RegExp(`host agent 1\\s+https://${HOST}:${agentPort}`));
  assert.equal(statSync(join(root, 'hs', 'credentials.json')).mode & 0o777, 0o600);
  // The CLI over the REST API works with the credentials `up` wrote.
  const hosts = await run(['host', 'list', '--json', '--credentials', join(root, 'hs', 'credentials.json')], {
    env,
    cwd: root,
  });
  expectExit(hosts, 0, 'host list');
  const listed = JSON.parse(hosts.stdout) as { state: string; simulated: boolean }[];
  assert.equal(listed.length, 1);
  assert.equal(listed[0]?.state, 'connected');
  assert.equal(listed[0]?.simulated, true);
  assert.equal(statSync(join(root, 'hs', 'operator.key')).mode & 0o777, 0o600);

  // Run the printed commands, with `npx hyperseal` replaced by this build's binary.
  const printed = (verb: string): string[] => {
    const line = out
      .split('\n')
      .find((l) => l.trim().startsWith('npx hyperseal kmip ') && l.includes(` ${verb}`));
    assert.ok(line !== undefined, `no '${verb}' command in:\n${out}`);
    const words = line.trim().split(/\s+/);
    assert.deepEqual(words.slice(0, 2), ['npx', 'hyperseal']);
    return words.slice(2);
  };
  const query = await run(printed('query'), { env, cwd: root });
  expectExit(query, 0, 'the printed query command');
  assert.match(query.stdout, /^vendor:\s+Hyperseal KMS$/m);
  assert.match(query.stdout, /^operations:.*\bCreate\b.*\bGet\b/m);
  assert.match(query.stdout, /^object types:\s+SymmetricKey$/m);
  // And the printed VM commands, against the simulated host.
  const creds = ['--credentials', join(root, 'hs', 'credentials.json')];
  expectExit(
    await run(['vm', 'create', '--name', 'test-01', '--memory', '128', ...creds], { env, cwd: root }),
    0,
    'vm create',
  );
  expectExit(await run(['vm', 'power-on', 'test-01', ...creds], { env, cwd: root }), 0, 'vm power-on');
  const vms = await run(['vm', 'list', '--json', ...creds], { env, cwd: root });
  assert.equal((JSON.parse(vms.stdout) as { name: string; state: string }[])[0]?.state, 'running');

  assert.equal(await stopDaemon(up, 'SIGINT'), 0, `up exit\nstderr: ${up.stderr()}`);
  assert.match(up.stdout(), /^hyperseal: stopped$/m);
});

void test('`npm run up --demo` (npm passes it as npm_config_demo): two hosts, the demo VMs, the web UI', async (t) => {
  const { root, up, agentPort } = await upInTemp(t, { npm_config_demo: 'true' });
  const out = up.stdout();
  assert.match(out, new RegExp(`host agent 2\\s+https://${HOST}:${agentPort + 1}`));
  assert.match(out, /demo VMs\s+web-01, db-01, web-02, legacy-01/);
  const ui = /web UI\s+(https:\/\/\S+)\//.exec(out)?.[1];
  assert.ok(ui !== undefined, `the web UI's address in:\n${out}`);
  const ca = readFileSync(join(root, 'hs', 'manager', 'ca.pem'));
  const status = await new Promise<[number | undefined, string | undefined]>((resolveStatus, reject) => {
    request(`${ui}/`, { ca }, (res) => {
      res.resume();
      resolveStatus([res.statusCode, res.headers.location]);
    })
      .on('error', reject)
      .end();
  });
  assert.deepEqual(status, [302, '/ui/']);
  assert.equal(await stopDaemon(up, 'SIGINT'), 0, `up exit\nstderr: ${up.stderr()}`);
});
