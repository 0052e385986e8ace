// Test support: a real PyKMIP 0.10 (Debian's python3-pykmip) as KMIP server and as KMIP
// client, so integration tests check Hyperseal against an independent implementation
// instead of only against itself. Test-only code; nothing here ships.
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { dirname, join, parse, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CertifiedKey } from '../../src/pki/index.js';
import { createCertificateAuthority, issueCertificate } from '../../src/pki/index.js';

/** PEM files: the CA that signed the peer's certificate, our certificate and its key. */
export interface TlsFiles {
  caPath: string;
  certPath: string;
  keyPath: string;
}

export interface PyKmipServer {
  host: string;
  port: number;
  dir: string;
  stop(): Promise<void>;
  /** The server's log file (this run only) followed by anything it wrote to stderr. */
  logs(): string;
}

// Debian's interpreter, not whatever `python3` is first on PATH (a pyenv build there
// does not see /usr/lib/python3/dist-packages, where python3-pykmip lives).
const PYTHON = '/usr/bin/python3';
const HOST = '127.0.0.1';
const READY_TIMEOUT_MS = 20_000;
const STOP_GRACE_MS = 3_000;
const BIND_ATTEMPTS = 3;
const STDERR_KEEP = 64 * 1024;

let available: boolean | undefined;

/** Whether /usr/bin/python3 can import PyKMIP's client and server (cached). */
export function pykmipAvailable(): boolean {
  if (available === undefined) {
    const probe = spawnSync(PYTHON, ['-c', 'import kmip.pie.client, kmip.services.server.server'], {
      stdio: 'ignore',
      timeout: 30_000,
    });
    available = probe.status === 0;
  }
  return available;
}

// Runs PyKMIP's own `pykmip-server` entry point (kmip.services.server.server:main, so
// -f/-l work as documented) behind a watchdog. The server forks helpers (a
// multiprocessing manager and the policy-directory monitor), so it runs in its own
// process group and is always killed as a group. The watchdog covers the case where the
// Node process dies without running its 'exit' handler (SIGKILL, test-runner timeout):
// stdin is a pipe from Node, and EOF on it means Node is gone. It is a bare _thread
// rather than threading.Thread on purpose: KmipServer.stop() joins every
// threading.Thread with a 10 s timeout, and a reader blocked on stdin would stall it.
// It reads with os.read, not sys.stdin: a blocked sys.stdin read holds the buffer's lock,
// and the forked helpers close sys.stdin at startup, deadlocking on that lock.
const SERVER_LAUNCHER = `
import _thread, os, signal, sys
def _watch_parent():
    while os.read(0, 65536):
        pass
    os.killpg(0, signal.SIGKILL)
_thread.start_new_thread(_watch_parent, ())
sys.argv[0] = 'pykmip-server'
from kmip.services.server.server import main
main()
`;

// Process groups of servers still running, killed if the test process exits without
// stopping them (a failed assertion before stop(), a forgotten t.after()).
const liveGroups = new Set<number>();
let exitHookInstalled = false;

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: the whole group is already gone.
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const pid of liveGroups) killGroup(pid, 'SIGKILL');
  });
}

function delay(ms: number): Promise<void> {
  return new Promise((done) => setTimeout(done, ms));
}

/** A port the kernel just handed out; PyKMIP binds it a moment later (hence the retries). */
function pickFreePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, HOST, () => {
      const address = probe.address();
      probe.close(() => {
        if (address !== null && typeof address === 'object') resolvePort(address.port);
        else reject(new Error('could not determine a free port'));
      });
    });
  });
}

function acceptsTcp(port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = connect({ host: HOST, port });
    const finish = (ok: boolean): void => {
      socket.destroy();
      done(ok);
    };
    socket.setTimeout(1_000, () => finish(false));
    socket.once('connect', () => finish(true));
    socket.once('error', () => finish(false));
  });
}

/** Streams of a child we do not wait on must not keep the test process alive. */
function unrefStream(stream: unknown): void {
  if (typeof stream === 'object' && stream !== null && 'unref' in stream) {
    const unref: unknown = stream.unref;
    if (typeof unref === 'function') unref.call(stream);
  }
}

function readFrom(path: string, offset: number): string {
  if (!existsSync(path)) return '';
  const content = readFileSync(path);
  // The log handler rotates at 1 MB; after a rotation our offset points past the end.
  return content.subarray(offset <= content.length ? offset : 0).toString('utf8');
}

function tail(text: string, lines = 40): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

function renderConfig(settings: Record<string, string | number>): string {
  for (const [key, value] of Object.entries(settings)) {
    // configparser would treat these as interpolation or a new line; refuse early.
    if (/[%\n\r]/.test(String(value))) throw new Error(`unsupported character in PyKMIP setting ${key}`);
  }
  const lines = Object.entries(settings).map(([key, value]) => `${key}=${value}`);
  return `[server]\n${lines.join('\n')}\n`;
}

class ServerProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<void>;
  hasExited = false;
  private stderr = '';
  private stopping: Promise<void> | undefined;

  constructor(args: string[], cwd: string) {
    this.child = spawn(PYTHON, ['-c', SERVER_LAUNCHER, ...args], {
      cwd,
      // New session/process group, so stop() and the watchdog can kill the helpers too.
      detached: true,
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    if (this.child.pid === undefined) throw new Error(`could not start ${PYTHON}`);
    this.pid = this.child.pid;
    liveGroups.add(this.pid);
    installExitHook();
    this.exited = new Promise((done) => {
      // 'exit', not 'close': the forked helpers inherit stderr, so 'close' can lag.
      this.child.once('exit', () => {
        this.hasExited = true;
        done();
      });
      this.child.once('error', () => {
        this.hasExited = true;
        done();
      });
    });
    this.child.stderr?.setEncoding('utf8');
    this.child.stderr?.on('data', (chunk: string) => {
      this.stderr = (this.stderr + chunk).slice(-STDERR_KEEP);
    });
    this.child.unref();
    unrefStream(this.child.stdin);
    unrefStream(this.child.stderr);
  }

  stderrText(): string {
    return this.stderr;
  }

  // SIGINT, not SIGTERM: PyKMIP's SIGTERM handler only clears a flag that its accept
  // loop polls every 10 s (socket default timeout), while SIGINT raises
  // KeyboardInterrupt and shuts down in about 2 s (the policy monitor sleeps 1 s). After
  // STOP_GRACE_MS, or once the main process is gone, the group gets SIGKILL so no
  // forked helper survives.
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      if (!this.hasExited) {
        try {
          process.kill(this.pid, 'SIGINT');
        } catch {
          // Already gone.
        }
        // The child is unref'd; while we wait for it, it must keep the event loop alive.
        this.child.ref();
        const timer = setTimeout(() => killGroup(this.pid, 'SIGKILL'), STOP_GRACE_MS);
        await this.exited;
        clearTimeout(timer);
      }
      killGroup(this.pid, 'SIGKILL');
      liveGroups.delete(this.pid);
    })();
    return this.stopping;
  }
}

type Readiness = { kind: 'ready' } | { kind: 'bind-failed' } | { kind: 'failed'; why: string };

async function waitUntilReady(
  proc: ServerProcess,
  port: number,
  logPath: string,
  logOffset: number,
): Promise<Readiness> {
  const bound = `Server successfully bound socket handler to ${HOST}:${port}`;
  // Startup failures after PyKMIP has forked its helpers (a failed bind among them) do
  // not end the process: the traceback reaches stderr, then the interpreter waits forever
  // for the policy monitor. So failures are recognised on stderr, not by exit.
  const bindFailed = `Server failed to bind socket handler to ${HOST}:${port}`;
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const stderr = proc.stderrText();
    if (stderr.includes(bindFailed)) return { kind: 'bind-failed' };
    if (proc.hasExited || stderr.includes('Traceback (most recent call last)')) {
      return { kind: 'failed', why: 'PyKMIP server failed during startup' };
    }
    const log = readFrom(logPath, logOffset);
    // The log line first, so a stranger that grabbed the port cannot pass the TCP check.
    // The probe shows up in the server log as a failed TLS session; that is harmless.
    if (log.includes(bound) && (await acceptsTcp(port))) return { kind: 'ready' };
    await delay(100);
  }
  return { kind: 'failed', why: `PyKMIP server not accepting connections after ${READY_TIMEOUT_MS} ms` };
}

/**
 * Starts PyKMIP's server on 127.0.0.1 with the KMIP "TLS1.2" authentication suite and
 * client-certificate auth (clientAuth EKU required). Everything it writes lives in `dir`:
 * server.conf, server.log, pykmip.db and an empty policies/ directory. Reusing a dir
 * keeps the database, so a restarted server still has its keys.
 */
export async function startPyKmipServer(opts: { dir: string; tls: TlsFiles }): Promise<PyKmipServer> {
  const dir = resolve(opts.dir);
  // PyKMIP 0.10 crashes at startup unless policy_path is an existing directory.
  const policyDir = join(dir, 'policies');
  mkdirSync(policyDir, { recursive: true });
  const configPath = join(dir, 'server.conf');
  const logPath = join(dir, 'server.log');

  let lastFailure = '';
  for (let attempt = 1; attempt <= BIND_ATTEMPTS; attempt++) {
    const port = await pickFreePort();
    writeFileSync(
      configPath,
      renderConfig({
        hostname: HOST,
        port,
        certificate_path: resolve(opts.tls.certPath),
        key_path: resolve(opts.tls.keyPath),
        ca_path: resolve(opts.tls.caPath),
        auth_suite: 'TLS1.2',
        enable_tls_client_auth: 'True',
        policy_path: policyDir,
        database_path: join(dir, 'pykmip.db'),
        // INFO, not DEBUG: at DEBUG PyKMIP logs every response in hex, key material included.
        logging_level: 'INFO',
      }),
    );
    const logOffset = existsSync(logPath) ? statSync(logPath).size : 0;
    // The log path is a command-line option only; the config file has no key for it.
    const proc = new ServerProcess(['-f', configPath, '-l', logPath], dir);
    const logs = (): string => {
      const stderr = proc.stderrText();
      return readFrom(logPath, logOffset) + (stderr ? `\n--- stderr ---\n${stderr}` : '');
    };

    const readiness = await waitUntilReady(proc, port, logPath, logOffset);
    if (readiness.kind === 'ready') {
      return { host: HOST, port, dir, stop: () => proc.stop(), logs };
    }
    await proc.stop();
    lastFailure =
      readiness.kind === 'bind-failed'
        ? `port ${port} was taken before PyKMIP could bind it`
        : `${readiness.why}\n${tail(logs())}`;
    if (readiness.kind === 'failed') break;
  }
  throw new Error(`could not start PyKMIP server in ${dir}: ${lastFailure}`);
}

/** Tests run compiled from dist/test/support/, but the script stays in the source tree. */
function clientScriptPath(): string {
  const relative = join('test', 'support', 'pykmip_client.py');
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, relative);
    if (existsSync(candidate)) return candidate;
    if (dir === parse(dir).root) throw new Error(`${relative} not found above ${import.meta.url}`);
    dir = dirname(dir);
  }
}

/**
 * Runs one scenario of test/support/pykmip_client.py (see its docstring) against a KMIP
 * server and returns the JSON object it prints. KMIP failures are part of that object
 * ({"error": {type, status, reason, message}}); the promise rejects only if the script
 * itself fails, prints no JSON, or exceeds timeoutMs (default 30 s).
 */
export function runPyKmipClient(opts: {
  host: string;
  port: number;
  tls: TlsFiles;
  scenario: string;
  args?: string[];
  timeoutMs?: number;
  /**
   * Send an empty Username/Password credential in every request header, like the
   * ProxyKmipClient wire capture in kmip-vectors.md. A ProxyKmipClient with no pykmip.conf
   * sends no credential at all; empty ones come from a config file that sets them empty.
   */
  emptyCredential?: boolean;
}): Promise<unknown> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const argv = [
    clientScriptPath(),
    '--host',
    opts.host,
    '--port',
    String(opts.port),
    '--cert',
    resolve(opts.tls.certPath),
    '--key',
    resolve(opts.tls.keyPath),
    '--ca',
    resolve(opts.tls.caPath),
    // The socket timeout stays below ours, so a hung server yields JSON, not a kill.
    '--timeout',
    String(Math.max(1, Math.floor(timeoutMs / 2000))),
    ...(opts.emptyCredential === true ? ['--empty-credential'] : []),
    // '--' so scenario arguments that start with '-' are not taken as options.
    '--',
    opts.scenario,
    ...(opts.args ?? []),
  ];
  return new Promise((resolveRun, reject) => {
    const child = spawn(PYTHON, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => (stdout += chunk));
    child.stderr.on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-STDERR_KEEP)));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const what = `pykmip_client.py ${opts.scenario}`;
      if (timedOut) {
        reject(new Error(`${what} timed out after ${timeoutMs} ms\n${tail(stderr)}`));
      } else if (code !== 0) {
        reject(new Error(`${what} exited with ${code ?? signal}\n${tail(stderr)}`));
      } else {
        try {
          resolveRun(JSON.parse(stdout) as unknown);
        } catch {
          reject(new Error(`${what} printed no JSON: ${stdout.slice(0, 500)}\n${tail(stderr)}`));
        }
      }
    });
  });
}

/**
 * A PyKMIP server with a fresh RSA CA (PyKMIP's TLS 1.2 suite negotiates RSA key
 * transport), its server certificate, and a client identity `clientName` from the same CA.
 */
export async function startPyKmipWithIdentities(
  dir: string,
  clientName = 'hyperseal-manager',
): Promise<{ server: PyKmipServer; ca: CertifiedKey; client: CertifiedKey }> {
  const ca = await createCertificateAuthority({ commonName: `pykmip-ca-${clientName}`, keyType: 'rsa' });
  const serverCert = await issueCertificate(ca, {
    commonName: 'localhost',
    usage: 'server',
    dnsNames: ['localhost'],
    ipAddresses: ['127.0.0.1'],
    keyType: 'rsa',
  });
  const client = await issueCertificate(ca, { commonName: clientName, usage: 'client', keyType: 'rsa' });
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'ca.pem'), ca.certPem);
  writeFileSync(join(dir, 'server.pem'), serverCert.certPem);
  writeFileSync(join(dir, 'server.key'), serverCert.keyPem, { mode: 0o600 });
  const server = await startPyKmipServer({
    dir: join(dir, 'server'),
    tls: { caPath: join(dir, 'ca.pem'), certPath: join(dir, 'server.pem'), keyPath: join(dir, 'server.key') },
  });
  return { server, ca, client };
}
