/**
 * The load generator of bench/api, run in its own process (as wrk would be) so that the
 * manager's own CPU is what is measured. Reads a JSON job on stdin, prints a JSON result.
 * Not a benchmark by itself: `npm run bench -- api` runs it.
 */
import { ApiClient } from '../../src/sdk/client.js';

interface Job {
  managerUrl: string;
  caPem: string;
  token: string;
  listRuns: number;
  expectPage: number;
  powerOn: string[];
  inFlight: number;
}

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
};

async function main(): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  const job = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Job;
  const api = new ApiClient({ managerUrl: job.managerUrl, caPem: job.caPem, token: job.token });
  try {
    for (let i = 0; i < 20; i++) await api.get('/vms');
    const lat: number[] = [];
    for (let i = 0; i < job.listRuns; i++) {
      const t0 = performance.now();
      const page = await api.get<unknown[]>('/vms');
      lat.push(performance.now() - t0);
      if (page.length !== job.expectPage) throw new Error(`expected a full page, got ${page.length}`);
    }
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: job.inFlight }, async () => {
        while (next < job.powerOn.length) {
          const id = job.powerOn[next++] as string;
          const task = await api.post<{ id: string }>(`/vms/${id}/actions/power-on`);
          const done = await api.waitTask(task.id);
          if (done.state !== 'succeeded') throw new Error(`power-on of ${id} ${done.state}`);
        }
      }),
    );
    const seconds = (performance.now() - t0) / 1000;
    process.stdout.write(
      JSON.stringify({ p50: pct(lat, 50), p99: pct(lat, 99), tasksPerSecond: job.powerOn.length / seconds }) +
        '\n',
    );
  } finally {
    api.close();
  }
}

await main();
