// The whole path with a real hypervisor: manager → mutual TLS → agent → QEMU (software
// emulation here) with real OVMF. An EFI VM of 64 MiB is created, powered on through a
// task, its serial console shows the UEFI shell through the API, its memory is changed
// (the event carries 64 → 128), the agent is restarted while the VM runs and finds it
// still running and controllable, and it is powered off with no QEMU left behind.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { openQemuDriver } from '../../src/agent/qemu-driver.js';
import { startAgent } from '../../src/agent/server.js';
import type { Event } from '../../src/events/index.js';
import type { Vm } from '../../src/manager/model.js';
import type { Task } from '../../src/manager/tasks.js';
import type { TestPlatform } from '../support/manager.js';
import { startTestPlatform, useTempConfigHome } from '../support/manager.js';

const qemuInstalled = existsSync('/usr/bin/qemu-system-x86_64') && existsSync('/usr/share/OVMF');

/** Alive and not a zombie (PID 1 reaps detached children lazily). */
function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

describe(
  'real QEMU end to end',
  { skip: qemuInstalled ? false : 'qemu-system-x86 and ovmf are not installed' },
  () => {
    let restoreConfig: () => void;
    let platform: TestPlatform;
    let vm: Vm;

    before(async () => {
      restoreConfig = useTempConfigHome();
      platform = await startTestPlatform({ agents: 1, driver: (dir) => openQemuDriver(dir) });
    });
    after(async () => {
      // Never leave a QEMU behind, whatever failed.
      if (vm !== undefined) {
        await platform
          .request(platform.adminToken, 'POST', `/vms/${vm.id}/actions/power-off?sync=true`)
          .catch(() => undefined);
      }
      await platform?.close();
      restoreConfig();
    });

    const sync = async (verb: string): Promise<Task> => {
      const res = await platform.request<Task>(
        platform.adminToken,
        'POST',
        `/vms/${vm.id}/actions/${verb}?sync=true&timeoutMs=120000`,
      );
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return res.body;
    };

    const waitForConsole = async (pattern: RegExp, timeoutMs: number): Promise<string> => {
      const deadline = Date.now() + timeoutMs;
      let text = '';
      while (Date.now() < deadline) {
        text = (await platform.api.get<{ data: string }>(`/vms/${vm.id}/console?offset=0`)).data;
        if (pattern.test(text)) return text;
        await new Promise((r) => setTimeout(r, 500));
      }
      assert.fail(`console never matched ${String(pattern)}; it shows:\n${text.slice(-2000)}`);
    };

    test('an EFI VM boots to the UEFI shell, seen through the API', async () => {
      vm = await platform.api.post<Vm>('/vms', { name: 'efi-01', memoryMiB: 64, firmware: 'efi' });
      assert.equal(vm.simulated, false);
      const task = await sync('power-on');
      assert.equal(task.state, 'succeeded', JSON.stringify(task.error));
      assert.equal((await platform.api.get<Vm>(`/vms/${vm.id}`)).state, 'running');
      await waitForConsole(/UEFI Interactive Shell|Shell>/, 120_000);
    });

    test('reconfiguring memory is an event with 64 → 128, applied at the next power-on', async () => {
      const after = await platform.api.patch<Vm>(`/vms/${vm.id}`, { memoryMiB: 128 });
      assert.equal(after.config.memoryMiB, 128);
      assert.equal(after.pendingRestart, true);
      const [event] = await platform.api.get<Event[]>(`/events?objectId=${vm.id}&type=vm.reconfigured`);
      assert.deepEqual(event?.changes, [{ path: 'memoryMiB', from: 64, to: 128 }]);
      assert.match(event?.message ?? '', /memoryMiB 64 → 128/);
    });

    test('the agent restarts while the VM runs and still manages it', async () => {
      const agent = platform.agents[0];
      assert.ok(agent !== undefined);
      const before = await platform.api.get<{ data: string }>(`/vms/${vm.id}/console?offset=0`);
      await agent.server.close();
      const port = Number(new URL(agent.address).port);
      agent.server = await startAgent({
        dataDir: agent.dataDir,
        listen: { host: '127.0.0.1', port },
        driver: await openQemuDriver(agent.dataDir),
      });
      // Same VM, same QEMU: the console log continues from where it was.
      const afterRestart = await platform.api.get<{ data: string }>(`/vms/${vm.id}/console?offset=0`);
      assert.ok(afterRestart.data.startsWith(before.data.slice(0, 200)));
      const reset = await sync('reset');
      assert.equal(reset.state, 'succeeded', JSON.stringify(reset.error));
    });

    test('power off leaves no QEMU process', async () => {
      const runtimes = await platform.manager.services.hosts.agent(vm.hostId).listVms();
      const pid = runtimes.find((r) => r.id === vm.id)?.pid;
      assert.ok(pid !== undefined && pidAlive(pid), 'QEMU runs before power off');
      const task = await sync('power-off');
      assert.equal(task.state, 'succeeded', JSON.stringify(task.error));
      assert.equal((await platform.api.get<Vm>(`/vms/${vm.id}`)).state, 'stopped');
      assert.equal(pidAlive(pid), false, `QEMU ${pid} still runs`);
    });
  },
);
