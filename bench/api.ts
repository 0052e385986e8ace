/**
 * bench/api — the manager's REST API with 10,000 VMs in the inventory (sim driver), on
 * SQLite and on PostgreSQL side by side in one run:
 *   - GET /api/v1/vms (first page of 1,000 VMs): p50 / p99 latency, sequential
 *   - POST /api/v1/vms/:id/actions/power-on through the sim driver: tasks per second
 *     with 32 requests in flight, each task waited for until it succeeded
 * Targets (issue): list p99 ≤ 100 ms; ≥ 500 power-on tasks/s. Run: npm run bench -- api
 * Knobs: BENCH_VMS (10000), BENCH_LIST_RUNS (200), BENCH_POWER_ONS (2000).
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { joinManager } from '../src/agent/join.js';
import { startManager } from '../src/manager/services.js';
import { toJson } from '../src/store/db.js';
import { startPostgres } from '../test/support/postgres.js';
import { freePort } from '../test/support/manager.js';

const VMS = Number(process.env.BENCH_VMS ?? 10_000);
const LIST_RUNS = Number(process.env.BENCH_LIST_RUNS ?? 200);
const POWER_ONS = Number(process.env.BENCH_POWER_ONS ?? 2000);
const IN_FLIGHT = 32;
const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'main.js');
const LOAD = join(dirname(fileURLToPath(import.meta.url)), 'support', 'api-load.js');

async function run(
  label: string,
  dir: string,
  database?: string,
): Promise<{ p50: number; p99: number; tasksPerSecond: number }> {
  const manager = await startManager({
    dataDir: join(dir, 'manager'),
    port: 0,
    ...(database ? { database } : {}),
  });
  const agentDir = join(dir, 'agent');
  const port = await freePort();
  const t = await manager.services.hosts.createEnrollmentToken({ user: 'bench', sourceIp: null });
  await joinManager({
    managerUrl: manager.url,
    token: t.token,
    caSha256: t.caSha256,
    name: 'bench-host',
    address: `https://127.0.0.1:${port}`,
    dataDir: agentDir,
  });
  // The agent in its own process, as in production: manager and agent each get a core.
  const child = spawn(
    process.execPath,
    [CLI, 'agent', 'serve', '--data-dir', agentDir, '--listen', `127.0.0.1:${port}`, '--driver', 'sim'],
    { stdio: ['ignore', 'pipe', 'inherit'], env: process.env },
  );
  const hostId = await new Promise<string>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`agent exited with ${code}`)));
    child.stdout.on('data', (b: Buffer) => {
      const m = /host (\S+) serving/.exec(b.toString());
      if (m?.[1]) resolve(m[1]);
    });
  });
  const agent = {
    hostId,
    close: async (): Promise<void> => {
      child.removeAllListeners('exit');
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
  await manager.services.hosts.attach(agent.hostId);
  try {
    // Inventory: rows straight into the database, specs to the agent (the create path
    // is not what is measured; 10,000 creates through the API would only slow setup).
    const config = {
      cpus: 1,
      memoryMiB: 128,
      firmware: 'efi',
      secureBoot: false,
      disks: [],
      nics: [],
      tags: ['bench'],
    };
    const ids: string[] = [];
    const now = Date.now();
    await manager.services.db.transaction(async (tx) => {
      for (let i = 0; i < VMS; i++) {
        const id = randomUUID();
        ids.push(id);
        await tx.run(
          `INSERT INTO vms (id, name, host_id, state, config, version, created_at, updated_at) VALUES ($1, $2, $3, 'stopped', $4, 1, $5, $5)`,
          [id, `vm-${String(i).padStart(5, '0')}`, agent.hostId, toJson(config), now],
        );
      }
    });
    // Specs to the agent over its API (mutual TLS), 32 at a time.
    const client = manager.services.hosts.agent(agent.hostId);
    let k = 0;
    await Promise.all(
      Array.from({ length: IN_FLIGHT }, async () => {
        while (k < ids.length) {
          const id = ids[k++] as string;
          await client.defineVm({
            id,
            name: id,
            cpus: 1,
            memoryMiB: 128,
            firmware: 'efi',
            secureBoot: false,
            disks: [],
            nics: [],
            encryption: null,
          });
        }
      }),
    );

    const r = await new Promise<{ p50: number; p99: number; tasksPerSecond: number }>((resolve, reject) => {
      const load = spawn(process.execPath, [LOAD], { stdio: ['pipe', 'pipe', 'inherit'] });
      let out = '';
      load.stdout.on('data', (b: Buffer) => (out += b.toString()));
      load.once('exit', (code) =>
        code === 0
          ? resolve(JSON.parse(out) as { p50: number; p99: number; tasksPerSecond: number })
          : reject(new Error(`load generator exited with ${code}`)),
      );
      load.stdin.end(
        JSON.stringify({
          managerUrl: manager.url,
          caPem: readFileSync(manager.caPath, 'utf8'),
          token: manager.initialAdminToken ?? '',
          listRuns: LIST_RUNS,
          expectPage: Math.min(1000, VMS),
          powerOn: ids.slice(0, POWER_ONS),
          inFlight: IN_FLIGHT,
        }),
      );
    });
    console.log(
      `${label.padEnd(11)} GET /vms (1,000 of ${VMS}) p50 ${r.p50.toFixed(1)} ms  p99 ${r.p99.toFixed(1)} ms   power-on ${r.tasksPerSecond.toFixed(0)} tasks/s`,
    );
    return r;
  } finally {
    await agent.close();
    await manager.close();
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'hs-bench-api-'));
  process.env.XDG_CONFIG_HOME = join(dir, 'config');
  try {
    console.log(
      `bench/api: ${VMS} VMs (sim driver), ${LIST_RUNS} list calls, ${POWER_ONS} power-ons with ${IN_FLIGHT} in flight\n`,
    );
    const sqlite = await run('SQLite', join(dir, 'sqlite'));
    const pg = await startPostgres();
    let postgres;
    try {
      postgres = await run('PostgreSQL', join(dir, 'pg'), pg.url);
    } finally {
      await pg.stop();
    }
    console.log('');
    console.log(
      `ratio PostgreSQL / SQLite: list p99 ${(postgres.p99 / sqlite.p99).toFixed(2)}x, power-on ${(postgres.tasksPerSecond / sqlite.tasksPerSecond).toFixed(2)}x`,
    );
    console.log(`targets: list p99 <= 100 ms, power-on >= 500 tasks/s`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
