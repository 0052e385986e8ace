/**
 * bench/kmip — KMIP key server throughput, measured in one run so the machine's noise
 * hits every contender alike. Prints rates and ratios, not just absolute numbers.
 *
 *   1. sequential Create+Get+Destroy cycles over one TLS connection:
 *        our client → our server (durability full, then process)  vs  our client → PyKMIP
 *   2. concurrent: C clients (one TLS connection each), each pipelining P requests,
 *      against our server (durability full): total operations per second.
 *
 * Knobs (env): BENCH_SECONDS (per measurement, default 3), BENCH_CLIENTS (8),
 * BENCH_PIPELINE (16). Run: npm run bench -- kmip
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { KmipClient } from '../src/kmip/client.js';
import type { StoreDurability } from '../src/kms/sqlite-store.js';
import { KmsDataDir } from '../src/kms/service.js';
import { createCertificateAuthority, issueCertificate } from '../src/pki/index.js';
import { pykmipAvailable, startPyKmipServer } from '../test/support/pykmip.js';
import { freePort } from '../test/support/manager.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 8);
const PIPELINE = Number(process.env.BENCH_PIPELINE ?? 16);
const OPS_PER_CYCLE = 3;
const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'main.js');

async function cycle(client: KmipClient): Promise<void> {
  const id = await client.create();
  const key = await client.get(id);
  key.material.fill(0);
  await client.destroy(id);
}

/** Cycles per second for `workers` concurrent loops sharing `clients` round-robin. */
async function measure(clients: KmipClient[], workers: number): Promise<number> {
  // Warm up: TLS handshakes, JIT, SQLite caches.
  await Promise.all(clients.map((c) => cycle(c)));
  const deadline = performance.now() + SECONDS * 1000;
  let cycles = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      const client = clients[w % clients.length] as KmipClient;
      while (performance.now() < deadline) {
        await cycle(client);
        cycles++;
      }
    }),
  );
  return cycles / ((performance.now() - start) / 1000);
}

/**
 * Our key server in its own process (the CLI's `kms serve`), so that server and benchmark
 * client each get a core, as they would in production.
 */
async function ourServer(
  dir: string,
  durability: StoreDurability,
): Promise<{ connect(): KmipClient; close(): Promise<void> }> {
  const dataDir = join(dir, `kms-${durability}`);
  const env = { ...process.env, XDG_CONFIG_HOME: join(dir, 'config') };
  // Issue the client certificate first (this also creates the data directory).
  const setup = await KmsDataDir.open({ dataDir });
  const cert = await setup.issueClientCertificate('bench');
  const ca = setup.caCertPem();
  await setup.close();
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [CLI, 'kms', 'serve', '--data-dir', dataDir, '--listen', `127.0.0.1:${port}`, '--durability', durability],
    { env, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const early = (code: number | null): void => {
    throw new Error(`kms serve exited early with ${code}`);
  };
  child.once('exit', early);
  await new Promise<void>((resolve) => {
    child.stdout.on('data', (b: Buffer) => {
      if (b.toString().includes('serving')) resolve();
    });
  });
  const clients: KmipClient[] = [];
  return {
    connect: () => {
      const c = new KmipClient({ host: '127.0.0.1', port, ca, cert: cert.certPem, key: cert.keyPem });
      clients.push(c);
      return c;
    },
    close: async () => {
      for (const c of clients) c.close();
      child.off('exit', early);
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

function line(label: string, cyclesPerSecond: number): void {
  const ops = cyclesPerSecond * OPS_PER_CYCLE;
  console.log(
    `${label.padEnd(58)} ${cyclesPerSecond.toFixed(0).padStart(7)} cycles/s ${ops.toFixed(0).padStart(7)} ops/s`,
  );
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'hs-bench-kmip-'));
  process.env.XDG_CONFIG_HOME = join(dir, 'config');
  try {
    console.log(
      `bench/kmip: ${SECONDS}s per measurement; 1 cycle = Create + Get + Destroy (3 KMIP operations)\n`,
    );
    const results: Record<string, number> = {};

    for (const durability of ['full', 'process'] as const) {
      const server = await ourServer(dir, durability);
      results[`ours-${durability}`] = await measure([server.connect()], 1);
      line(`sequential, our server (durability ${durability})`, results[`ours-${durability}`] ?? 0);
      await server.close();
    }

    if (pykmipAvailable()) {
      const ca = await createCertificateAuthority({ commonName: 'bench CA', keyType: 'rsa' });
      const srv = await issueCertificate(ca, { commonName: 'pykmip', usage: 'server', keyType: 'rsa' });
      const cli = await issueCertificate(ca, { commonName: 'bench', usage: 'client', keyType: 'rsa' });
      const pdir = join(dir, 'pykmip');
      rmSync(pdir, { recursive: true, force: true });
      const files = {
        caPath: join(dir, 'ca.pem'),
        certPath: join(dir, 'srv.pem'),
        keyPath: join(dir, 'srv.key'),
      };
      writeFileSync(files.caPath, ca.certPem);
      writeFileSync(files.certPath, srv.certPem);
      writeFileSync(files.keyPath, srv.keyPem, { mode: 0o600 });
      const py = await startPyKmipServer({ dir: pdir, tls: files });
      const client = new KmipClient({
        host: py.host,
        port: py.port,
        ca: ca.certPem,
        cert: cli.certPem,
        key: cli.keyPem,
      });
      try {
        results.pykmip = await measure([client], 1);
        line('sequential, PyKMIP 0.10 server (same client)', results.pykmip);
      } finally {
        client.close();
        await py.stop();
      }
    } else {
      console.log('PyKMIP not installed (python3-pykmip): no baseline');
    }

    const server = await ourServer(dir, 'full');
    const clients = Array.from({ length: CLIENTS }, () => server.connect());
    results.concurrent = await measure(clients, CLIENTS * PIPELINE);
    line(`concurrent, our server (${CLIENTS} connections × ${PIPELINE} in flight)`, results.concurrent);
    await server.close();

    console.log('');
    if (results.pykmip !== undefined) {
      for (const d of ['full', 'process']) {
        const ratio = (results[`ours-${d}`] ?? 0) / results.pykmip;
        console.log(`ratio sequential ours(${d}) / PyKMIP: ${ratio.toFixed(1)}x   (target >= 20x)`);
      }
      console.log(
        `ratio concurrent ours / PyKMIP sequential: ${((results.concurrent ?? 0) / results.pykmip).toFixed(1)}x`,
      );
    }
    console.log(
      `concurrent operations/s: ${((results.concurrent ?? 0) * OPS_PER_CYCLE).toFixed(0)}   (target >= 10000)`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
