/**
 * bench/rekey — shallow rekey of 1,000 encrypted VMs (sim driver, embedded key server):
 * each VM gets a new KEK from the key server (KMIP Create + Activate), the host re-wraps
 * its DEKs, the manager records the new key id and an event. Issue target: under 10 s for
 * 1,000 VMs. Printed: the wall time, VMs per second, KMIP requests per VM, and the ratio
 * against a baseline run in the same process: power-on tasks for the same 1,000 VMs (the
 * task/agent/event path with no key work), so the cost of the keys themselves shows.
 * Run: npm run bench -- rekey   (BENCH_VMS=1000)
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { joinManager } from '../src/agent/join.js';
import { KmsDataDir } from '../src/kms/service.js';
import type { Actor } from '../src/manager/events.js';
import { startManager } from '../src/manager/services.js';
import type { Task } from '../src/manager/tasks.js';
import { freePort } from '../test/support/manager.js';

const VMS = Number(process.env.BENCH_VMS ?? 1000);
const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'main.js');
const ACTOR: Actor = { user: 'bench', sourceIp: null };

function child(args: string[], ready: RegExp): Promise<{ proc: ChildProcess; match: RegExpExecArray }> {
  const proc = spawn(process.execPath, [CLI, ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: process.env,
  });
  return new Promise((resolve, reject) => {
    proc.once('exit', (code) => reject(new Error(`${args.join(' ')} exited with ${code}`)));
    let out = '';
    proc.stdout?.on('data', (b: Buffer) => {
      out += b.toString();
      const m = ready.exec(out);
      if (m) resolve({ proc, match: m });
    });
  });
}

async function stop(proc: ChildProcess): Promise<void> {
  proc.removeAllListeners('exit');
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  await exited;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'hs-bench-rekey-'));
  process.env.XDG_CONFIG_HOME = join(dir, 'config');
  const procs: ChildProcess[] = [];
  try {
    // The key server in its own process, as `hyperseal up` runs it.
    const kmsPort = await freePort();
    const kms = await child(
      ['kms', 'serve', '--data-dir', join(dir, 'kms'), '--listen', `127.0.0.1:${kmsPort}`],
      /serving KMIP/,
    );
    procs.push(kms.proc);
    const kmsDir = await KmsDataDir.open({ dataDir: join(dir, 'kms') });
    const clientCert = await kmsDir.issueClientCertificate('hyperseal-manager');
    const caPem = kmsDir.caCertPem();
    await kmsDir.close();

    const manager = await startManager({ dataDir: join(dir, 'manager'), port: 0, healthIntervalMs: 60_000 });
    const provider = await manager.services.keyProviders.add(ACTOR, {
      name: 'embedded',
      servers: [{ host: '127.0.0.1', port: kmsPort }],
      caPem,
      clientCertPem: clientCert.certPem,
      clientKeyPem: clientCert.keyPem,
    });
    const agentDir = join(dir, 'agent');
    const port = await freePort();
    const t = await manager.services.hosts.createEnrollmentToken(ACTOR);
    await joinManager({
      managerUrl: manager.url,
      token: t.token,
      caSha256: t.caSha256,
      name: 'bench-host',
      address: `https://127.0.0.1:${port}`,
      dataDir: agentDir,
    });
    const agent = await child(
      ['agent', 'serve', '--data-dir', agentDir, '--listen', `127.0.0.1:${port}`, '--driver', 'sim'],
      /host (\S+) serving/,
    );
    procs.push(agent.proc);
    const hostId = agent.match[1] as string;
    await manager.services.hosts.attach(hostId);

    // Setup (not measured): 1,000 encrypted VMs through the normal create path, 32 at a time.
    process.stderr.write(`creating ${VMS} encrypted VMs…\n`);
    const ids: string[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        while (next < VMS) {
          const i = next++;
          const encryption = await manager.services.crypto.prepareNewVm('VM Encryption Policy', hostId);
          const vm = await manager.services.vms.create(
            ACTOR,
            { name: `vm-${String(i).padStart(5, '0')}`, hostId, memoryMiB: 64 },
            encryption,
          );
          ids.push(vm.id);
        }
      }),
    );

    const runAll = async (submit: (id: string) => Promise<Task>): Promise<number> => {
      const started = performance.now();
      const tasks = await Promise.all(ids.map(submit));
      const done = await Promise.all(tasks.map((task) => manager.services.tasks.wait(task.id, 600_000)));
      const failed = done.filter((d) => d.state !== 'succeeded');
      if (failed.length > 0)
        throw new Error(`${failed.length} tasks failed: ${JSON.stringify(failed[0]?.error)}`);
      return (performance.now() - started) / 1000;
    };

    const baseline = await runAll((id) => manager.services.vms.action(ACTOR, id, 'power-on'));
    const before = manager.services.keyProviders.requestsSent(provider.id);
    const rekey = await runAll((id) => manager.services.crypto.rekey(ACTOR, id, false));
    const kmipPerVm = (manager.services.keyProviders.requestsSent(provider.id) - before) / VMS;

    const line = (s: string): void => void process.stdout.write(`${s}\n`);
    line(`bench/rekey — ${VMS} encrypted VMs (sim driver), embedded key server in its own process`);
    line(
      `  baseline: ${VMS} power-on tasks        ${baseline.toFixed(2)} s  (${(VMS / baseline).toFixed(0)}/s)`,
    );
    line(
      `  shallow rekey of ${VMS} VMs            ${rekey.toFixed(2)} s  (${(VMS / rekey).toFixed(0)} VMs/s)`,
    );
    line(
      `  KMIP round trips per VM: ${kmipPerVm.toFixed(2)} (Create+Activate in one message, Get of the new KEK)`,
    );
    line(`  rekey / baseline time ratio: ${(rekey / baseline).toFixed(2)}×`);
    line(
      `  target: ${VMS} VMs in < 10 s (scaled: ${((rekey * 1000) / VMS).toFixed(2)} s per 1,000) — ${(rekey * 1000) / VMS < 10 ? 'met' : 'NOT met'}`,
    );
    await manager.close();
  } finally {
    for (const p of procs) await stop(p).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
