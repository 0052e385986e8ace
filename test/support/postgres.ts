// Test support: a real, throwaway PostgreSQL server, so the store's one behavioural suite
// runs against PostgreSQL as well as SQLite. Test-only code; nothing here ships, and it
// installs nothing: the server binaries come from Debian's `postgresql` package, which
// scripts/ensure-deps.sh installs.
//
// One cluster per test process, one fresh database per startPostgres() call. initdb and
// a server start cost about a second; CREATE DATABASE about 0.1 s, and a database is as
// isolated as a cluster for everything the store does (schemas, tables, sequences, advisory
// locks are per database; only roles are shared, and tests create none). The cluster
// starts with the first call and stops (pg_ctl stop -m immediate) when the last handle is
// stopped; its directory is then removed.
//
// initdb, postgres and pg_ctl refuse to run as root. As root we run them as the
// `postgres` user the Debian package creates, in a temporary directory chowned to it.
// The server listens on 127.0.0.1 on a free port (unix socket in the same directory, so
// no clash with a system cluster on /var/run/postgresql), runs with fsync=off (the data
// is thrown away), and uses the C locale, which orders text by bytes like SQLite.
// Logins over TCP need the password (scram-sha-256), so URLs carry a real password.
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess, SpawnSyncReturns } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chownSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import pg from 'pg';

export interface PostgresServer {
  /** postgres://user:password@127.0.0.1:port/database of a fresh, empty database. */
  url: string;
  /** Drops the database; the last one stops the cluster. Idempotent. */
  stop(): Promise<void>;
}

const HOST = '127.0.0.1';
const SUPERUSER = 'hyperseal';
const START_ATTEMPTS = 3;
const START_TIMEOUT_S = 30;
const STOP_TIMEOUT_MS = 15_000;
const TOOLS = ['initdb', 'pg_ctl', 'postgres'];

interface Cluster {
  dir: string;
  port: number;
  password: string;
  watchdog: ChildProcess;
}

/**
 * The directory holding initdb, pg_ctl and postgres: $HYPERSEAL_PG_BINDIR, else Debian's
 * /usr/lib/postgresql/<newest>/bin, else the first PATH entry that has all three (Debian
 * puts only pg_ctl-like wrappers on PATH, not initdb). Undefined when none has them.
 */
export function postgresBinDir(): string | undefined {
  const hasAll = (dir: string): boolean => TOOLS.every((t) => existsSync(join(dir, t)));
  const candidates: string[] = [];
  const fromEnv = process.env.HYPERSEAL_PG_BINDIR;
  if (fromEnv !== undefined && fromEnv !== '') candidates.push(fromEnv);
  const debian = '/usr/lib/postgresql';
  if (existsSync(debian)) {
    const versions = readdirSync(debian)
      .filter((v) => /^\d+$/.test(v))
      .sort((a, b) => Number(b) - Number(a));
    candidates.push(...versions.map((v) => join(debian, v, 'bin')));
  }
  candidates.push(...(process.env.PATH ?? '').split(delimiter).filter(Boolean));
  return candidates.find(hasAll);
}

/** How to run a server tool: directly, or (as root) as the `postgres` user. */
function runAs(): { prefix: string[]; uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const uid = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  const gid = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
  if (uid.status !== 0 || gid.status !== 0) {
    throw new Error(
      "running as root, and there is no 'postgres' user to run initdb/postgres as (they refuse " +
        "root); the Debian package 'postgresql' creates it",
    );
  }
  return {
    prefix: ['runuser', '-u', 'postgres', '--'],
    uid: Number(uid.stdout.trim()),
    gid: Number(gid.stdout.trim()),
  };
}

function spawnArgv(argv: readonly string[], cwd: string, timeoutMs: number): SpawnSyncReturns<string> {
  const [cmd = '', ...args] = argv;
  return spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: timeoutMs });
}

function run(argv: readonly string[], cwd: string, what: string): void {
  const r = spawnArgv(argv, cwd, 60_000);
  if (r.status !== 0) {
    throw new Error(`${what} failed (${r.error?.message ?? `exit ${r.status}`}): ${r.stderr}${r.stdout}`);
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, HOST, () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

function tail(path: string, chars = 2000): string {
  try {
    return readFileSync(path, 'utf8').slice(-chars);
  } catch {
    return '(no log)';
  }
}

async function startCluster(): Promise<Cluster> {
  const bin = postgresBinDir();
  if (bin === undefined) {
    throw new Error(
      'PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in /usr/lib/postgresql/*/bin ' +
        "or on PATH: install the Debian package 'postgresql' (scripts/ensure-deps.sh does), or set " +
        'HYPERSEAL_PG_BINDIR',
    );
  }
  const as = runAs();
  const prefix = as?.prefix ?? [];
  const dir = mkdtempSync(join(tmpdir(), 'hyperseal-pg-'));
  const data = join(dir, 'data');
  const log = join(dir, 'server.log');
  const password = randomBytes(18).toString('base64url');
  let watchdog: ChildProcess | undefined;
  try {
    if (as !== undefined) chownSync(dir, as.uid, as.gid);
    const pwfile = join(dir, 'pwfile');
    writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
    if (as !== undefined) chownSync(pwfile, as.uid, as.gid);
    run(
      [
        ...prefix,
        join(bin, 'initdb'),
        '-D',
        data,
        '-U',
        SUPERUSER,
        `--pwfile=${pwfile}`,
        '--auth-host=scram-sha-256',
        '--auth-local=trust',
        '--locale=C',
        '--encoding=UTF8',
        '--no-sync',
      ],
      dir,
      'initdb',
    );
    rmSync(pwfile);

    // The port is free when picked but could be taken before the server binds it: retry.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const settings = [
        `port=${port}`,
        `listen_addresses=${HOST}`,
        `unix_socket_directories=${dir}`,
        'fsync=off',
        'synchronous_commit=off',
        'full_page_writes=off',
      ];
      const start = spawnArgv(
        [
          ...prefix,
          join(bin, 'pg_ctl'),
          'start',
          '-w',
          '-t',
          String(START_TIMEOUT_S),
          '-D',
          data,
          '-l',
          log,
          '-o',
          settings.map((s) => `-c ${s}`).join(' '),
        ],
        dir,
        (START_TIMEOUT_S + 10) * 1000,
      );
      if (start.status === 0) {
        watchdog = startWatchdog(
          [...prefix, join(bin, 'pg_ctl'), 'stop', '-D', data, '-m', 'immediate'],
          dir,
        );
        return { dir, port, password, watchdog };
      }
      if (attempt >= START_ATTEMPTS) {
        throw new Error(`pg_ctl start failed: ${start.stderr}${start.stdout}\nserver log:\n${tail(log)}`);
      }
    }
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/**
 * A shell that waits for EOF on its stdin, then stops the server and removes its
 * directory. stop() closes the pipe; if the test process dies first (a crash, SIGKILL,
 * the runner's timeout), the pipe closes anyway, so no server or directory outlives it.
 * Its own process group: a Ctrl-C to the runner's group must not kill it before cleanup.
 */
function startWatchdog(stopCommand: string[], dir: string): ChildProcess {
  const child = spawn(
    'sh',
    ['-c', 'cat >/dev/null; "$@" >/dev/null 2>&1; rm -rf -- "$HS_PG_DIR"', 'hs-pg-watchdog', ...stopCommand],
    {
      stdio: ['pipe', 'ignore', 'ignore'],
      detached: true,
      env: { ...process.env, HS_PG_DIR: dir },
    },
  );
  // Not a reason for the test process to stay alive: the server is stopped when it ends.
  child.unref();
  (child.stdin as Socket | null)?.unref();
  return child;
}

async function stopCluster(c: Cluster): Promise<void> {
  const { watchdog } = c;
  if (watchdog.exitCode !== null || watchdog.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => watchdog.once('exit', () => resolve()));
  // Referenced again while we wait, or the process could end with this promise pending.
  watchdog.ref();
  watchdog.stdin?.end();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    exited,
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, STOP_TIMEOUT_MS);
    }),
  ]);
  clearTimeout(timer);
}

async function admin(c: Cluster, sql: string): Promise<void> {
  const client = new pg.Client({
    host: HOST,
    port: c.port,
    user: SUPERUSER,
    password: c.password,
    database: 'postgres',
  });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

let shared: { cluster: Promise<Cluster>; refs: number } | undefined;
let databases = 0;

/** A fresh empty database on this process's throwaway cluster (started on first use). */
export async function startPostgres(): Promise<PostgresServer> {
  // Counted synchronously, before any await, so a concurrent stop() of the last other
  // handle cannot stop the cluster this call is about to use.
  const entry = (shared ??= { cluster: startCluster(), refs: 0 });
  entry.refs++;
  const release = async (): Promise<void> => {
    entry.refs--;
    if (entry.refs === 0) {
      if (shared === entry) shared = undefined;
      await stopCluster(await entry.cluster);
    }
  };
  let cluster: Cluster;
  const name = `hs_test_${process.pid}_${++databases}`;
  try {
    cluster = await entry.cluster;
    await admin(cluster, `CREATE DATABASE ${name}`);
  } catch (err) {
    await release().catch(() => undefined);
    if (shared === entry) shared = undefined;
    throw err;
  }
  let stopped: Promise<void> | undefined;
  return {
    url: `postgres://${SUPERUSER}:${encodeURIComponent(cluster.password)}@${HOST}:${cluster.port}/${name}`,
    stop: () =>
      (stopped ??= (async () => {
        // WITH (FORCE) ends connections a test left open (PostgreSQL 13+).
        if (entry.refs > 1) await admin(cluster, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
        await release();
      })()),
  };
}
