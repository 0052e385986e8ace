// A source agent killed (SIGKILL) during a live migration, right after the destination's
// ACK: the destination runs the VM, the source's QEMU (which outlives its agent) is paused
// and the VM is held there on disk. The manager never hears the source's answer; it asks
// the destination, which kept the VM, and records it there. When the source agent comes
// back, the manager's health loop ends its held copy. At no point does the VM run twice.
// The source agent runs in its own process (test/support/agent-process.ts) with
// HYPERSEAL_CRASH_POINT=migrate-out:after-ack; the destination is an in-process agent.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openQemuDriver } from '../../src/agent/qemu-driver.js';
import { joinManager } from '../../src/agent/join.js';
import type { Vm } from '../../src/manager/model.js';
import type { Task } from '../../src/manager/tasks.js';
import { isPidAlive } from '../../src/qemu/vm-process.js';
import { exitOf, spawnAgent, waitUntil } from '../support/agent-child.js';
import type { TestPlatform } from '../support/manager.js';
import { SYSTEM, freePort, startTestPlatform, useTempConfigHome } from '../support/manager.js';

const haveTools = existsSync('/usr/bin/qemu-system-x86_64') && existsSync('/usr/share/OVMF');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe(
  'kill -9 of the source agent during a live migration',
  { skip: haveTools ? false : 'qemu-system-x86 or ovmf is not installed', concurrency: 1 },
  () => {
    let restoreConfig: () => void;
    let p: TestPlatform;
    let work: string;
    let dataDir: string;
    let port: number;
    let sourceId: string;
    let child: ChildProcess | undefined;

    const startChild = async (crashPoint?: string): Promise<ChildProcess> => {
      child = await spawnAgent(dataDir, port, crashPoint);
      return child;
    };
    const waitFor = (what: string, ok: () => Promise<boolean>): Promise<void> => waitUntil(what, ok, 60_000);

    before(async () => {
      restoreConfig = useTempConfigHome();
      work = mkdtempSync(join(tmpdir(), 'hs-migcrash-'));
      p = await startTestPlatform({
        agents: 1,
        healthIntervalMs: 300,
        driver: (dir) => openQemuDriver(dir, { accel: 'tcg' }),
      });
      dataDir = join(work, 'agent');
      port = await freePort();
      const t = await p.manager.services.hosts.createEnrollmentToken(SYSTEM);
      const host = await joinManager({
        managerUrl: p.manager.url,
        token: t.token,
        caSha256: t.caSha256,
        name: 'source-host',
        address: `https://127.0.0.1:${port}`,
        dataDir,
      });
      sourceId = host.hostId;
      await startChild('migrate-out:after-ack');
      await p.manager.services.hosts.attach(sourceId);
    });
    after(async () => {
      for (const v of await p.api.get<Vm[]>('/vms').catch(() => [] as Vm[])) {
        await p
          .request(p.adminToken, 'POST', `/vms/${v.id}/actions/power-off?sync=true`)
          .catch(() => undefined);
      }
      child?.kill('SIGKILL');
      await p?.close();
      rmSync(work, { recursive: true, force: true });
      restoreConfig();
    });

    test('killed after the ACK: the VM runs on the destination alone; the held source copy ends when its agent is back', async () => {
      const destination = p.agents[0]?.hostId ?? '';
      const vm = await p.api.post<Vm>('/vms', {
        name: 'crash-mig',
        hostId: sourceId,
        memoryMiB: 64,
        firmware: 'efi',
      });
      const on = await p.request<Task>(p.adminToken, 'POST', `/vms/${vm.id}/actions/power-on?sync=true`);
      assert.equal(on.body.state, 'succeeded', JSON.stringify(on.body.error));
      const sourcePid = (await p.manager.services.hosts.agent(sourceId).getVm(vm.id)).pid;
      assert.ok(sourcePid);
      const dying = child as ChildProcess;

      const r = await p.request<Task>(
        p.adminToken,
        'POST',
        `/vms/${vm.id}/actions/migrate?sync=true&timeoutMs=120000`,
        { hostId: destination },
      );
      const died = await Promise.race([exitOf(dying), sleep(30_000).then(() => 'still running')]);
      assert.equal(
        died,
        'SIGKILL',
        `the source agent died at the crash point (task: ${JSON.stringify(r.body)})`,
      );
      // The destination's answer decided: moved.
      assert.equal(r.body.state, 'succeeded', JSON.stringify(r.body));
      assert.equal((await p.api.get<Vm>(`/vms/${vm.id}`)).hostId, destination);
      const there = await p.manager.services.hosts.agent(destination).getVm(vm.id);
      assert.equal(there.state, 'running');
      // The source's QEMU outlived its agent, paused after the migration: not running twice.
      assert.ok(isPidAlive(sourcePid), 'the source QEMU is still there, paused');

      // The source agent comes back: the VM is held there (from its disk), and the health
      // loop ends that copy because the host it is recorded on kept it.
      await startChild();
      await waitFor('the held source copy to end', async () => !isPidAlive(sourcePid));
      await waitFor('the source agent to forget the VM', () =>
        p.manager.services.hosts
          .agent(sourceId)
          .getVm(vm.id)
          .then(
            () => false,
            () => true,
          ),
      );
      assert.equal(existsSync(join(dataDir, 'datastore', vm.id)), false, "the source's home is gone");
      assert.equal((await p.manager.services.hosts.agent(destination).getVm(vm.id)).state, 'running');
      assert.equal((await p.api.get<Vm>(`/vms/${vm.id}`)).hostId, destination);
    });
  },
);
