// Encrypting is copy + atomic swap: a kill -9 of the agent at any point leaves the VM
// either fully plain or fully encrypted, never unusable. The agent runs in its own process
// (test/support/agent-process.ts) and kills itself with SIGKILL at a named point
// (HYPERSEAL_CRASH_POINT): after the disk copy, just before the commit, just after it. It
// is then restarted; the VM must be whole — one generation of files, no strays, the
// manager's record corrected from the host's (event vm.encryption-reconciled when the host
// committed) — and its data intact (compared byte for byte after decrypting). The
// manager's side: it is restarted while the host copies; the host finishes, and the new
// manager adopts the result.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { joinManager } from '../../src/agent/join.js';
import type { Event } from '../../src/events/index.js';
import type { Vm } from '../../src/manager/model.js';
import type { Task } from '../../src/manager/tasks.js';
import { exitOf, spawnAgent, waitUntil } from '../support/agent-child.js';
import type { TestPlatform } from '../support/manager.js';
import { SYSTEM, freePort, startTestPlatform, useTempConfigHome } from '../support/manager.js';

const haveQemu = existsSync('/usr/bin/qemu-img') && existsSync('/usr/bin/qemu-system-x86_64');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe(
  'kill -9 during encryption',
  { skip: haveQemu ? false : 'qemu-utils is not installed', concurrency: 1 },
  () => {
    let restoreConfig: () => void;
    let p: TestPlatform;
    let work: string;
    let dataDir: string;
    let port: number;
    let hostId: string;
    let child: ChildProcess | undefined;
    let vm: Vm;
    let reference: string;

    const startChild = async (crashPoint?: string): Promise<ChildProcess> => {
      child = await spawnAgent(dataDir, port, crashPoint);
      return child;
    };
    const exited = exitOf;
    const getVm = (): Promise<Vm> => p.api.get<Vm>(`/vms/${vm.id}`);
    const vmDir = (): string => join(dataDir, 'datastore', vm.id);
    const images = (): string[] =>
      readdirSync(vmDir())
        .filter((f) => /\.(qcow2|fd|luks)$/.test(f))
        .sort();
    const waitFor = waitUntil;
    const sync = async (path: string, body: unknown = {}): Promise<Task> => {
      const r = await p.request<Task>(p.adminToken, 'POST', `${path}?sync=true&timeoutMs=120000`, body);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return r.body;
    };
    /** The disk's data equals the reference written before any of this. */
    const assertDataIntact = async (): Promise<void> => {
      const current = await getVm();
      if (current.encryption) {
        const t = await sync(`/vms/${vm.id}/actions/decrypt`);
        assert.equal(t.state, 'succeeded', JSON.stringify(t.error));
      }
      const [disk] = images().filter((f) => f.startsWith('disk0'));
      assert.ok(disk);
      execFileSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'qcow2', reference, join(vmDir(), disk)]);
    };

    before(async () => {
      restoreConfig = useTempConfigHome();
      work = mkdtempSync(join(tmpdir(), 'hs-crash-'));
      p = await startTestPlatform({ kms: true, agents: 0, healthIntervalMs: 300 });
      dataDir = join(work, 'agent');
      port = await freePort();
      const t = await p.manager.services.hosts.createEnrollmentToken(SYSTEM);
      const host = await joinManager({
        managerUrl: p.manager.url,
        token: t.token,
        caSha256: t.caSha256,
        name: 'crash-host',
        address: `https://127.0.0.1:${port}`,
        dataDir,
      });
      hostId = host.hostId;
      await startChild();
      await p.manager.services.hosts.attach(hostId);
      const ds = await p.api.get<{ id: string }[]>('/datastores');
      vm = await p.api.post<Vm>('/vms', {
        name: 'crash-01',
        memoryMiB: 64,
        firmware: 'bios',
        disks: [{ id: 'disk0', sizeMiB: 8, datastoreId: ds[0]?.id }],
      });
      // Known data on the disk, kept aside as the reference.
      reference = join(work, 'reference.raw');
      writeFileSync(reference, randomBytes(8 * 1024 * 1024));
      rmSync(join(vmDir(), 'disk0.qcow2'));
      execFileSync('qemu-img', [
        'convert',
        '-q',
        '-f',
        'raw',
        '-O',
        'qcow2',
        reference,
        join(vmDir(), 'disk0.qcow2'),
      ]);
    });
    after(async () => {
      child?.kill('SIGKILL');
      await p?.close();
      rmSync(work, { recursive: true, force: true });
      restoreConfig();
    });

    for (const point of ['encrypt:after-disk', 'encrypt:before-commit', 'encrypt:after-commit']) {
      test(`killed at ${point}: the VM is whole afterwards`, async () => {
        // The running agent makes way for one that dies at `point`.
        child?.kill('SIGTERM');
        if (child) await exited(child);
        const dying = await startChild(point);
        const before = await getVm();
        assert.equal(before.encryption, null, 'the VM starts plain');
        const task = await p.api.post<Task>(`/vms/${vm.id}/actions/encrypt`, {});
        const failed = await p.api.waitTask(task.id, { timeoutMs: 120_000 });
        assert.equal(failed.state, 'failed', 'the manager saw the operation fail');
        // The task fails when the agent dies; had it failed for another reason, the agent
        // would still run, and the message says why.
        const died = await Promise.race([exited(dying), sleep(30_000).then(() => 'still running')]);
        assert.equal(
          died,
          'SIGKILL',
          `the agent died at the crash point (task: ${JSON.stringify(failed.error)})`,
        );

        await startChild();
        const committed = point === 'encrypt:after-commit';
        // The restarted agent removed the losing generation; the manager follows the host.
        await waitFor('the manager to follow the host', async () => {
          const v = await getVm();
          return committed ? v.encryption !== null : v.encryption === null && !v.locked;
        });
        const files = images();
        const disks = files.filter((f) => f.startsWith('disk0'));
        assert.equal(disks.length, 1, `one disk image, no strays: ${files.join(', ')}`);
        assert.equal(disks[0]?.includes('.g') ?? false, committed || disks[0] !== 'disk0.qcow2');
        if (committed) {
          const evs = await p.api.get<Event[]>(`/events?objectId=${vm.id}&type=vm.encryption-reconciled`);
          assert.ok(evs.length >= 1, 'the correction is an event');
          // Its key was pushed again by the manager: not locked.
          await waitFor('the key to be delivered', async () => !(await getVm()).locked);
        }
        await assertDataIntact();
        assert.equal((await getVm()).encryption, null);
      });
    }

    test('the manager restarted while the host encrypts: the host finishes, the new manager adopts it', async () => {
      const task = await p.api.post<Task>(`/vms/${vm.id}/actions/encrypt`, {});
      // Cut the manager off mid-task (its process state is lost as in a crash; the
      // database keeps what was committed).
      await sleep(150);
      await p.restartManager();
      const recovered = await p.api.get<Task>(`/tasks/${task.id}`);
      assert.notEqual(recovered.state, 'succeeded');
      await waitFor(
        'the host to finish and the manager to adopt it',
        async () => (await getVm()).encryption !== null,
        60_000,
      );
      const disks = images().filter((f) => f.startsWith('disk0'));
      assert.equal(disks.length, 1, disks.join(', '));
      await assertDataIntact();
    });

    test('a crypto-shredded VM is locked for good after an agent restart, and can still be deleted', async () => {
      assert.equal((await sync(`/vms/${vm.id}/actions/encrypt`)).state, 'succeeded');
      const shred = await p.request(p.adminToken, 'POST', `/vms/${vm.id}/actions/crypto-shred`, {
        confirm: 'crash-01',
      });
      assert.equal(shred.status, 200, JSON.stringify(shred.body));
      child?.kill('SIGTERM');
      if (child) await exited(child);
      await startChild();
      await waitFor('the host to report it locked', async () => (await getVm()).locked);
      const del = await p.request(p.adminToken, 'DELETE', `/vms/${vm.id}`);
      assert.equal(del.status, 204, JSON.stringify(del.body));
      assert.ok(!existsSync(vmDir()), 'its files are gone');
    });
  },
);
