// Live migration between two agents in separate network namespaces, so the encrypted
// stream really crosses an interface (a veth pair between the namespaces). Each agent is
// its own process (`hyperseal agent serve --driver qemu`, started with `ip netns exec`);
// the manager runs in this process, in the root namespace, and reaches each agent over a
// veth pair of its own. Needs root and iproute2: skipped with the reason otherwise.
//
//   root ns: manager ──10.231.1.1 ═ veth ═ 10.231.1.2── ns A: agent A (source)
//                    ──10.231.2.1 ═ veth ═ 10.231.2.2── ns B: agent B (destination)
//   ns A 10.231.3.1 ═══════ veth (the migration stream) ═══════ 10.231.3.2 ns B
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { joinManager } from '../../src/agent/join.js';
import type { Vm } from '../../src/manager/model.js';
import type { Task } from '../../src/manager/tasks.js';
import type { TestPlatform } from '../support/manager.js';
import { SYSTEM, startTestPlatform, useTempConfigHome } from '../support/manager.js';

const tag = randomBytes(3).toString('hex');
const NS = { a: `hsmA${tag}`, b: `hsmB${tag}` };

function whyNot(): string | false {
  if (!existsSync('/usr/bin/qemu-system-x86_64') || !existsSync('/usr/share/OVMF')) {
    return 'qemu-system-x86 or ovmf is not installed';
  }
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  const probe = spawnSync('ip', ['netns', 'add', `hsprobe${tag}`], { encoding: 'utf8' });
  if (probe.status !== 0)
    return `ip netns is not permitted here: ${(probe.stderr || String(probe.error)).trim()}`;
  spawnSync('ip', ['netns', 'del', `hsprobe${tag}`]);
  return false;
}
const skip = whyNot();

const ip = (...args: string[]): void => {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
};

function setUpNetwork(): void {
  ip('netns', 'add', NS.a);
  ip('netns', 'add', NS.b);
  for (const [ns, n] of [
    [NS.a, 1],
    [NS.b, 2],
  ] as const) {
    const outer = `hs${n}o${tag}`;
    const inner = `hs${n}i${tag}`;
    ip('link', 'add', outer, 'type', 'veth', 'peer', 'name', inner);
    ip('link', 'set', inner, 'netns', ns);
    ip('addr', 'add', `10.231.${n}.1/24`, 'dev', outer);
    ip('link', 'set', outer, 'up');
    ip('-n', ns, 'addr', 'add', `10.231.${n}.2/24`, 'dev', inner);
    ip('-n', ns, 'link', 'set', inner, 'up');
    ip('-n', ns, 'link', 'set', 'lo', 'up');
  }
  // The link the migration crosses, and routes to the other agent's address through it.
  ip('link', 'add', `hsab${tag}`, 'type', 'veth', 'peer', 'name', `hsba${tag}`);
  ip('link', 'set', `hsab${tag}`, 'netns', NS.a);
  ip('link', 'set', `hsba${tag}`, 'netns', NS.b);
  ip('-n', NS.a, 'addr', 'add', '10.231.3.1/24', 'dev', `hsab${tag}`);
  ip('-n', NS.b, 'addr', 'add', '10.231.3.2/24', 'dev', `hsba${tag}`);
  ip('-n', NS.a, 'link', 'set', `hsab${tag}`, 'up');
  ip('-n', NS.b, 'link', 'set', `hsba${tag}`, 'up');
  ip('-n', NS.a, 'route', 'add', '10.231.2.0/24', 'via', '10.231.3.2');
  ip('-n', NS.b, 'route', 'add', '10.231.1.0/24', 'via', '10.231.3.1');
}

function tearDownNetwork(): void {
  // Deleting a namespace deletes the veth ends in it, and with them their peers.
  for (const ns of [NS.a, NS.b]) spawnSync('ip', ['netns', 'del', ns]);
  for (const n of [1, 2]) spawnSync('ip', ['link', 'del', `hs${n}o${tag}`]);
}

const txBytes = (): number =>
  Number(
    execFileSync('ip', ['netns', 'exec', NS.a, 'cat', `/sys/class/net/hsab${tag}/statistics/tx_bytes`], {
      encoding: 'utf8',
    }).trim(),
  );

describe('live migration across network namespaces', { skip, concurrency: 1 }, () => {
  let restoreConfig: () => void;
  let p: TestPlatform;
  let work: string;
  const agents: { hostId: string; child: ChildProcess }[] = [];
  const vms: string[] = [];

  before(async () => {
    restoreConfig = useTempConfigHome();
    work = mkdtempSync(join(tmpdir(), 'hs-netns-'));
    setUpNetwork();
    p = await startTestPlatform({ agents: 0 });
    const main = resolve('dist/src/cli/main.js');
    for (const [ns, n] of [
      [NS.a, 1],
      [NS.b, 2],
    ] as const) {
      const dataDir = join(work, `agent-${n}`);
      const listen = `10.231.${n}.2:7443`;
      const t = await p.manager.services.hosts.createEnrollmentToken(SYSTEM);
      // Joined from here (the enrollment call goes to the manager on loopback); served from the namespace.
      const host = await joinManager({
        managerUrl: p.manager.url,
        token: t.token,
        caSha256: t.caSha256,
        name: `ns-host-${n}`,
        address: `https://${listen}`,
        dataDir,
      });
      const child = spawn(
        'ip',
        [
          'netns',
          'exec',
          ns,
          process.execPath,
          main,
          'agent',
          'serve',
          '--data-dir',
          dataDir,
          '--listen',
          listen,
          '--driver',
          'qemu',
        ],
        { stdio: ['ignore', 'ignore', 'inherit'] },
      );
      agents.push({ hostId: host.hostId, child });
      const deadline = Date.now() + 30_000;
      for (;;) {
        const h = await p.manager.services.hosts.attach(host.hostId).catch(() => undefined);
        if (h?.state === 'connected') break;
        if (Date.now() > deadline || child.exitCode !== null) {
          throw new Error(`agent ${n} in ${ns} did not come up (${child.exitCode ?? 'running'})`);
        }
        await new Promise((r) => setTimeout(r, 300));
      }
    }
  });

  after(async () => {
    for (const id of vms) {
      await p?.request(p.adminToken, 'POST', `/vms/${id}/actions/power-off?sync=true`).catch(() => undefined);
    }
    for (const a of agents) {
      a.child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 200));
      if (a.child.exitCode === null) a.child.kill('SIGKILL');
    }
    await p?.close();
    tearDownNetwork();
    rmSync(work, { recursive: true, force: true });
    restoreConfig();
  });

  test('the encrypted stream crosses the link between the namespaces; the VM runs in B', async () => {
    const [a, b] = agents;
    assert.ok(a && b);
    const vm = await p.api.post<Vm>('/vms', {
      name: 'ns-mig',
      hostId: a.hostId,
      memoryMiB: 128,
      firmware: 'efi',
    });
    vms.push(vm.id);
    const on = await p.request<Task>(p.adminToken, 'POST', `/vms/${vm.id}/actions/power-on?sync=true`);
    assert.equal(on.body.state, 'succeeded', JSON.stringify(on.body.error));
    const consoleHas = async (re: RegExp, timeoutMs: number): Promise<void> => {
      const deadline = Date.now() + timeoutMs;
      let data = '';
      while (Date.now() < deadline) {
        data = (await p.api.get<{ data: string }>(`/vms/${vm.id}/console?offset=0`)).data;
        if (re.test(data)) return;
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.fail(`no ${String(re)} on the console: …${data.slice(-400)}`);
    };
    await consoleHas(/\S/, 120_000);
    const before = txBytes();
    const r = await p.request<Task>(
      p.adminToken,
      'POST',
      `/vms/${vm.id}/actions/migrate?sync=true&timeoutMs=120000`,
      { hostId: b.hostId },
    );
    assert.equal(r.body.state, 'succeeded', JSON.stringify(r.body.error));
    const result = r.body.result as { cipher: string; bytes: number };
    assert.equal(result.cipher, 'aes-256-gcm');
    const crossed = txBytes() - before;
    assert.ok(crossed >= result.bytes, `${crossed} bytes left A on the link; the stream was ${result.bytes}`);
    const moved = await p.api.get<Vm>(`/vms/${vm.id}`);
    assert.equal(moved.hostId, b.hostId);
    await consoleHas(/Shell>/, 90_000);
  });
});
