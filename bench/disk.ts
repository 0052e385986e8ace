/**
 * bench/disk — what disk encryption costs, as ratios encrypted/plain measured in one run so
 * the machine's noise hits both alike. The same I/O goes through QEMU's block layer on a
 * plain image and on an encrypted one made by src/qemu/encrypted-images.ts (qcow2 with
 * LUKS inside, AES-256-XTS), each opened by a qemu-storage-daemon with the settings VMs
 * get (command-line.ts) and exported over NBD on a unix socket; `qemu-img bench` drives it
 * (it cannot open encrypted images itself: it has no --object, qemu-experiments §2.3).
 *
 *   sequential 64 KiB writes and reads at queue depth 1 and 16,
 *   4 KiB writes at depth 1 and 16, each into another 64 KiB cluster (a stride of 65537
 *   blocks: `qemu-img bench` has no random mode), so none is sequential.
 *
 * Images are filled once first: a VM disk in use has its clusters allocated, and the
 * allocation cost is the same with and without encryption. Each measurement alternates
 * plain and encrypted BENCH_ROUNDS times; the ratio printed is the median of the rounds'
 * ratios. Where the time goes: the storage daemon's CPU time per MiB moved, plain and
 * encrypted (the difference is the cipher's cost), next to what OpenSSL's AES-256-XTS does
 * on one core of this machine.
 *
 * Knobs (env): BENCH_IMAGE_MIB (image size, default 1024), BENCH_SEQ_MIB (per sequential
 * measurement, default 256), BENCH_RANDOM_OPS (per 4 KiB measurement, default 10000),
 * BENCH_ROUNDS (default 3), BENCH_DIR (where the images go, default the OS temp dir: put
 * it on the datastore's file system), BENCH_CONFIGS (other block settings to compare,
 * ";"-separated, each "layout,cache,aio[,cluster]" with layout qcow2|luks, cache
 * direct|cached, aio threads|io_uring|native, cluster e.g. 64k|2m; default: the product's),
 * BENCH_DAEMON_PRELOAD (a library LD_PRELOADed into qemu-storage-daemon only: the cipher
 * experiment of docs/disk-encryption-performance.md; never used by the product).
 * Run: npm run bench -- disk
 */
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { blockFileOptions } from '../src/qemu/command-line.js';
import { LUKS_OPTIONS, QCOW2_CLUSTER_SIZE, luksPassphrase } from '../src/qemu/encrypted-images.js';
import { raceDelivery, withSecretFifos } from '../src/qemu/secret-fifo.js';

const IMAGE_MIB = Number(process.env.BENCH_IMAGE_MIB ?? 1024);
const SEQ_MIB = Number(process.env.BENCH_SEQ_MIB ?? 256);
const RANDOM_OPS = Number(process.env.BENCH_RANDOM_OPS ?? 10_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const TARGET_SEQUENTIAL = 0.8;

interface Config {
  layout: 'qcow2' | 'luks';
  cacheDirect: boolean;
  aio: 'threads' | 'io_uring' | 'native';
  clusterBytes: number;
}

/** The settings VMs get: blockFileOptions() of command-line.ts, qcow2 as made by encrypted-images.ts. */
function productConfig(): Config {
  const file = blockFileOptions();
  return {
    layout: 'qcow2',
    cacheDirect: file.cache?.direct ?? false,
    aio: file.aio ?? 'threads',
    clusterBytes: QCOW2_CLUSTER_SIZE,
  };
}

function parseConfig(text: string): Config {
  const [layout, cache, aio, ...rest] = text.split(',').map((s) => s.trim());
  if ((layout !== 'qcow2' && layout !== 'luks') || (cache !== 'direct' && cache !== 'cached')) {
    throw new Error(`bad BENCH_CONFIGS entry "${text}"`);
  }
  if (aio !== 'threads' && aio !== 'io_uring' && aio !== 'native') throw new Error(`bad aio in "${text}"`);
  const cluster = rest.find((r) => /^\d+[km]$/i.test(r));
  const clusterBytes =
    cluster === undefined
      ? QCOW2_CLUSTER_SIZE
      : parseInt(cluster, 10) * (/m$/i.test(cluster) ? 1 << 20 : 1 << 10);
  return { layout, cacheDirect: cache === 'direct', aio, clusterBytes };
}

const describe = (c: Config): string =>
  `${c.layout === 'qcow2' ? `qcow2 (cluster ${c.clusterBytes >> 10} KiB)` : 'raw / LUKS container'}, cache.direct=${c.cacheDirect ? 'on' : 'off'}, aio=${c.aio}`;

function run(file: string, args: string[]): string {
  const r = spawnSync(file, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${file} ${args.join(' ')}: ${r.stderr || r.error?.message}`);
  return r.stdout;
}

/** A plain and an encrypted image of the layout, made as the product makes them. */
async function makeImages(
  dir: string,
  c: Config,
  passphrase: Buffer,
): Promise<{ plain: string; enc: string }> {
  const tag = `${c.layout}-${c.clusterBytes}`;
  const plain = join(dir, `plain-${tag}.img`);
  const enc = join(dir, `enc-${tag}.img`);
  if (existsSync(plain)) return { plain, enc };
  const luks = Object.entries(LUKS_OPTIONS).map(([k, v]) => `${k}=${String(v)}`);
  if (c.layout === 'qcow2') {
    run('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-o',
      `cluster_size=${c.clusterBytes}`,
      plain,
      `${IMAGE_MIB}M`,
    ]);
  } else {
    run('qemu-img', ['create', '-q', '-f', 'raw', plain, `${IMAGE_MIB}M`]);
  }
  for (let attempt = 1; ; attempt++) {
    try {
      await withSecretFifos(dir, { key: passphrase }, ({ paths, delivered }) => {
        const opts =
          c.layout === 'qcow2'
            ? `cluster_size=${c.clusterBytes},encrypt.format=luks,encrypt.key-secret=k,${luks.map((o) => `encrypt.${o}`).join(',')}`
            : `key-secret=k,${luks.join(',')}`;
        const child = spawn('qemu-img', [
          'create',
          '-q',
          '--object',
          `secret,id=k,file=${paths.key as string},format=raw`,
          '-f',
          c.layout,
          '-o',
          opts,
          enc,
          `${IMAGE_MIB}M`,
        ]);
        let err = '';
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        return raceDelivery(
          new Promise<void>((resolve, reject) =>
            child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(err)))),
          ),
          delivered,
        );
      });
      break;
    } catch (err) {
      // QEMU's PBKDF calibration glitch (see encrypted-images.ts): just try again.
      if (attempt >= 8 || !String(err).includes('Unable to get accurate CPU usage')) throw err;
    }
  }
  return { plain, enc };
}

interface Daemon {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

/** qemu-storage-daemon exporting `path` over NBD; the key (if any) through a FIFO. */
async function startDaemon(
  dir: string,
  name: string,
  path: string,
  c: Config,
  passphrase?: Buffer,
): Promise<Daemon> {
  const sock = join(dir, `${name}.sock`);
  rmSync(sock, { force: true });
  const file = { driver: 'file', filename: path, cache: { direct: c.cacheDirect }, aio: c.aio };
  const node: Record<string, unknown> =
    c.layout === 'qcow2'
      ? { 'node-name': 'd0', driver: 'qcow2', file }
      : { 'node-name': 'd0', driver: c.layout, file };
  if (passphrase !== undefined) {
    if (c.layout === 'qcow2') node.encrypt = { format: 'luks', 'key-secret': 'k' };
    else node['key-secret'] = 'k';
  } else if (c.layout === 'luks') {
    node.driver = 'raw';
  }
  const launch = async (secretFile?: string, delivered?: Promise<void>): Promise<Daemon> => {
    const args = [
      ...(secretFile === undefined ? [] : ['--object', `secret,id=k,file=${secretFile},format=raw`]),
      '--blockdev',
      JSON.stringify(node),
      '--nbd-server',
      `addr.type=unix,addr.path=${sock}`,
      '--export',
      // No iothread: QEMU 7.2's NBD export with one aborts when a client disconnects
      // (nbd_blockdev_client_closed: Assertion `qemu_in_main_thread() && nbd_server').
      'type=nbd,id=e0,node-name=d0,writable=on',
    ];
    const preload = process.env.BENCH_DAEMON_PRELOAD;
    const child: ChildProcess = spawn('qemu-storage-daemon', args, {
      stdio: ['ignore', 'ignore', 'pipe'],
      ...(preload === undefined ? {} : { env: { ...process.env, LD_PRELOAD: preload } }),
    });
    let err = '';
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const ready = (async () => {
      for (let i = 0; i < 400 && !existsSync(sock); i++) {
        if (child.exitCode !== null) throw new Error(`qemu-storage-daemon: ${err}`);
        await new Promise((r) => setTimeout(r, 25));
      }
      if (!existsSync(sock)) throw new Error(`qemu-storage-daemon did not start: ${err}`);
    })();
    await (delivered === undefined ? ready : raceDelivery(ready, delivered));
    return {
      url: `nbd+unix:///d0?socket=${sock}`,
      pid: child.pid as number,
      stop: async () => {
        child.kill('SIGTERM');
        await exited;
      },
    };
  };
  if (passphrase === undefined) return launch();
  return withSecretFifos(dir, { key: passphrase }, ({ paths, delivered }) => launch(paths.key, delivered));
}

/** user + system CPU seconds of a process and all its threads. */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'latin1');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) / 100;
}

interface Sample {
  mbps: number;
  cpuMsPerMiB: number;
}

function bench(d: Daemon, args: string[], bytes: number): Sample {
  const cpu0 = cpuSeconds(d.pid);
  const out = run('qemu-img', ['bench', '-f', 'raw', ...args, d.url]);
  const cpu = cpuSeconds(d.pid) - cpu0;
  const m = /Run completed in ([\d.]+) seconds/.exec(out);
  if (m === null) throw new Error(`qemu-img bench said: ${out}`);
  return { mbps: bytes / Number(m[1]) / 1e6, cpuMsPerMiB: (cpu * 1000) / (bytes / (1 << 20)) };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
};

interface Case {
  label: string;
  args: string[];
  bytes: number;
  sequential: boolean;
}

function cases(): Case[] {
  const seqOps = (SEQ_MIB << 20) / 65536;
  const stride = 65537 * 4096; // every op in another 64 KiB cluster, wrapping around the image
  return [
    {
      label: 'seq write 64K QD1',
      args: ['-w', '-c', `${seqOps}`, '-s', '65536', '-d', '1'],
      bytes: SEQ_MIB << 20,
      sequential: true,
    },
    {
      label: 'seq read  64K QD1',
      args: ['-c', `${seqOps}`, '-s', '65536', '-d', '1'],
      bytes: SEQ_MIB << 20,
      sequential: true,
    },
    {
      label: 'seq write 64K QD16',
      args: ['-w', '-c', `${seqOps}`, '-s', '65536', '-d', '16'],
      bytes: SEQ_MIB << 20,
      sequential: true,
    },
    {
      label: 'seq read  64K QD16',
      args: ['-c', `${seqOps}`, '-s', '65536', '-d', '16'],
      bytes: SEQ_MIB << 20,
      sequential: true,
    },
    {
      label: '4K writes QD1',
      args: ['-w', '-c', `${RANDOM_OPS}`, '-s', '4096', '-S', `${stride}`, '-d', '1'],
      bytes: RANDOM_OPS * 4096,
      sequential: false,
    },
    {
      label: '4K writes QD16',
      args: ['-w', '-c', `${RANDOM_OPS}`, '-s', '4096', '-S', `${stride}`, '-d', '16'],
      bytes: RANDOM_OPS * 4096,
      sequential: false,
    },
  ];
}

function opensslXtsMBps(): number | undefined {
  const r = spawnSync(
    'openssl',
    ['speed', '-elapsed', '-seconds', '1', '-bytes', '65536', '-evp', 'aes-256-xts'],
    {
      encoding: 'utf8',
    },
  );
  const line = r.stdout?.split('\n').find((l) => l.startsWith('AES-256-XTS'));
  const k = line === undefined ? NaN : parseFloat(line.trim().split(/\s+/)[1] ?? '');
  return Number.isFinite(k) ? (k * 1000) / 1e6 : undefined;
}

async function measureConfig(
  dir: string,
  c: Config,
  passphrase: Buffer,
): Promise<{ label: string; ratio: number; sequential: boolean }[]> {
  const { plain, enc } = await makeImages(dir, c, passphrase);
  const p = await startDaemon(dir, 'plain', plain, c);
  const e = await startDaemon(dir, 'enc', enc, c, passphrase);
  const results: { label: string; ratio: number; sequential: boolean }[] = [];
  try {
    // Fill both images once (allocates every cluster; untimed).
    const fillOps = (IMAGE_MIB << 20) / 65536;
    for (const d of [p, e])
      run('qemu-img', ['bench', '-f', 'raw', '-w', '-c', `${fillOps}`, '-s', '65536', '-d', '16', d.url]);
    console.log(`\n${describe(c)}`);
    console.log(
      `  ${'workload'.padEnd(20)} ${'plain MB/s'.padStart(11)} ${'encr. MB/s'.padStart(11)} ${'ratio'.padStart(7)}   CPU ms/MiB plain → encrypted`,
    );
    for (const k of cases()) {
      const ratios: number[] = [];
      const ps: Sample[] = [];
      const es: Sample[] = [];
      for (let r = 0; r < ROUNDS; r++) {
        // Alternate who goes first, so a drift in the machine's load favours neither.
        const first = r % 2 === 0;
        const a = bench(first ? p : e, k.args, k.bytes);
        const b = bench(first ? e : p, k.args, k.bytes);
        const [sp, se] = first ? [a, b] : [b, a];
        ps.push(sp);
        es.push(se);
        ratios.push(se.mbps / sp.mbps);
      }
      const ratio = median(ratios);
      results.push({ label: k.label, ratio, sequential: k.sequential });
      const cpuP = median(ps.map((s) => s.cpuMsPerMiB));
      const cpuE = median(es.map((s) => s.cpuMsPerMiB));
      console.log(
        `  ${k.label.padEnd(20)} ${median(ps.map((s) => s.mbps))
          .toFixed(0)
          .padStart(11)} ${median(es.map((s) => s.mbps))
          .toFixed(0)
          .padStart(11)} ${`${ratio.toFixed(2)}x`.padStart(7)}   ${cpuP.toFixed(2)} → ${cpuE.toFixed(2)}` +
          (k.sequential ? `   (target >= ${TARGET_SEQUENTIAL}x)` : ''),
      );
    }
  } finally {
    await p.stop();
    await e.stop();
  }
  return results;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(process.env.BENCH_DIR ?? tmpdir(), 'hs-bench-disk-'));
  const dek = randomBytes(32);
  const passphrase = luksPassphrase(dek);
  try {
    const configs = (process.env.BENCH_CONFIGS ?? '')
      .split(';')
      .map((s) => s.trim())
      .filter(Boolean)
      .map(parseConfig);
    if (configs.length === 0) configs.push(productConfig());
    if (process.env.BENCH_DAEMON_PRELOAD !== undefined) {
      console.log(
        `qemu-storage-daemon runs with LD_PRELOAD=${process.env.BENCH_DAEMON_PRELOAD} (experiment)`,
      );
    }
    console.log(
      `bench/disk: ${IMAGE_MIB} MiB images (pre-filled) in ${dir}, qemu-storage-daemon → NBD → qemu-img bench; ` +
        `${SEQ_MIB} MiB per sequential and ${RANDOM_OPS} ops per 4K measurement, ${ROUNDS} rounds, median ratio encrypted/plain`,
    );
    const openssl = opensslXtsMBps();
    if (openssl !== undefined) {
      console.log(
        `cipher reference: OpenSSL AES-256-XTS, one core, 64 KiB blocks: ${openssl.toFixed(0)} MB/s`,
      );
    }
    const all: { config: Config; results: { label: string; ratio: number; sequential: boolean }[] }[] = [];
    for (const c of configs) all.push({ config: c, results: await measureConfig(dir, c, passphrase) });
    console.log('');
    for (const { config, results } of all) {
      const seq = results.filter((r) => r.sequential).map((r) => r.ratio);
      const worst = Math.min(...seq);
      console.log(
        `${describe(config)}: sequential encrypted/plain ${Math.min(...seq).toFixed(2)}x–${Math.max(...seq).toFixed(2)}x ` +
          `(target >= ${TARGET_SEQUENTIAL}x: ${worst >= TARGET_SEQUENTIAL ? 'met' : 'NOT met'}; docs/disk-encryption-performance.md says why)`,
      );
    }
  } finally {
    passphrase.fill(0);
    dek.fill(0);
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
