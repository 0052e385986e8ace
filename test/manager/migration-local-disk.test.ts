// Live migration of running VMs whose disks are on the source host's local datastore
// (real QEMU, TCG, OVMF at the UEFI shell): each disk is mirrored over NBD through the
// encrypted disk tunnel into a new image on the destination's local datastore, then the
// memory moves. The disk holds known random data written before power-on; afterwards the
// destination's image equals it, the VM runs there and the source's files are gone. An
// encrypted VM's copy is created with its own DEKs (checked after decrypting it through the
// API). A cut disk tunnel fails the migration and the VM keeps running on the source.
// A stopped VM's local disk goes cold, through the migration channel with its NVRAM: the
// image arrives byte for byte (ciphertext for an encrypted VM), the VM boots there, and a
// cut stream leaves nothing behind on the destination.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openQemuDriver } from '../../src/agent/qemu-driver.js';
import type { Vm } from '../../src/manager/model.js';
import type { Task } from '../../src/manager/tasks.js';
import { isPidAlive } from '../../src/qemu/vm-process.js';
import type { TestPlatform } from '../support/manager.js';
import { cutProxies } from '../support/cut-proxy.js';
import { startTestPlatform, useTempConfigHome } from '../support/manager.js';

const haveTools =
  existsSync('/usr/bin/qemu-system-x86_64') &&
  existsSync('/usr/share/OVMF') &&
  existsSync('/usr/bin/qemu-img');

const DISK_MIB = 16;

/** Between the agents: forwards, or cuts a connection after `relay.cutAfter` bytes. */
const relay = cutProxies({ once: false });

describe(
  'live migration with disks on a local datastore',
  { skip: haveTools ? false : 'qemu-system-x86, qemu-img or ovmf is not installed', concurrency: 1 },
  () => {
    let restoreConfig: () => void;
    let p: TestPlatform;
    let work: string;
    const host = (i: number): string => p.agents[i]?.hostId ?? '';
    const datastoreDir = (i: number): string => join(p.agents[i]?.dataDir ?? '', 'datastore');

    before(async () => {
      restoreConfig = useTempConfigHome();
      work = mkdtempSync(join(tmpdir(), 'hs-migdisk-'));
      p = await startTestPlatform({
        agents: 2,
        kms: true,
        driver: (dir) => openQemuDriver(dir, { accel: 'tcg', migrationAdvertise: relay.proxy }),
      });
    });
    after(async () => {
      for (const v of await p.api.get<Vm[]>('/vms').catch(() => [] as Vm[])) {
        await p
          .request(p.adminToken, 'POST', `/vms/${v.id}/actions/power-off?sync=true`)
          .catch(() => undefined);
      }
      relay.close();
      await p?.close();
      rmSync(work, { recursive: true, force: true });
      restoreConfig();
    });

    const sync = async (path: string, body: unknown = {}): Promise<Task & { code?: string }> => {
      const r = await p.request<Task & { code?: string }>(
        p.adminToken,
        'POST',
        `${path}?sync=true&timeoutMs=180000`,
        body,
      );
      return r.body;
    };
    const migrate = (id: string, hostId: string) => sync(`/vms/${id}/actions/migrate`, { hostId });
    const pidOn = async (i: number, id: string): Promise<number | undefined> =>
      (await p.manager.services.hosts.agent(host(i)).getVm(id)).pid;
    const consoleOf = async (id: string): Promise<string> =>
      (await p.api.get<{ data: string }>(`/vms/${id}/console?offset=0`)).data;
    const waitConsole = async (id: string, pattern: RegExp, timeoutMs: number): Promise<void> => {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        if (pattern.test(await consoleOf(id))) return;
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.fail(`no ${String(pattern)} on the console: …${(await consoleOf(id)).slice(-500)}`);
    };
    const images = (i: number, id: string): string[] => {
      const dir = join(datastoreDir(i), id);
      return existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.qcow2')) : [];
    };

    /** A VM on host-1's local datastore whose disk holds `reference` (random data). */
    const createWithData = async (name: string, reference: string): Promise<Vm> => {
      const ds = await p.api.get<{ id: string; hostId: string | null }[]>('/datastores');
      const local = ds.find((d) => d.hostId === host(0));
      assert.ok(local, `a local datastore of host-1: ${JSON.stringify(ds)}`);
      const vm = await p.api.post<Vm>('/vms', {
        name,
        hostId: host(0),
        memoryMiB: 128,
        firmware: 'efi',
        disks: [{ id: 'disk0', sizeMiB: DISK_MIB, datastoreId: local.id }],
      });
      writeFileSync(reference, randomBytes(DISK_MIB * 1024 * 1024));
      const image = join(datastoreDir(0), vm.id, 'disk0.qcow2');
      assert.ok(existsSync(image), image);
      rmSync(image);
      execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', reference, image]);
      return vm;
    };
    const powerOn = async (id: string): Promise<void> => {
      const on = await sync(`/vms/${id}/actions/power-on`);
      assert.equal(on.state, 'succeeded', JSON.stringify(on.error));
      await waitConsole(id, /\S/, 120_000);
    };
    const compareOn = (i: number, id: string, reference: string): void => {
      const [disk] = images(i, id);
      assert.ok(disk, `an image on host-${i + 1}`);
      execFileSync('qemu-img', [
        'compare',
        '-q',
        // The destination QEMU holds the image open (the guest at the shell does not write).
        '-U',
        '-f',
        'raw',
        '-F',
        'qcow2',
        reference,
        join(datastoreDir(i), id, disk),
      ]);
    };

    test('a running plain VM with a local disk moves live; the copy equals the data', async () => {
      const reference = join(work, 'plain.raw');
      const vm = await createWithData('ld-plain', reference);
      await powerOn(vm.id);
      const sourcePid = await pidOn(0, vm.id);
      assert.ok(sourcePid);
      const r = await migrate(vm.id, host(1));
      assert.equal(r.state, 'succeeded', JSON.stringify(r.error));
      assert.equal((r.result as { cipher: string }).cipher, 'aes-256-gcm');
      const moved = await p.api.get<Vm>(`/vms/${vm.id}`);
      assert.equal(moved.hostId, host(1));
      assert.equal(moved.state, 'running');
      assert.equal((await p.manager.services.hosts.agent(host(1)).getVm(vm.id)).state, 'running');
      // The disk now lives on host-2's local datastore.
      const ds = await p.api.get<{ id: string; hostId: string | null }[]>('/datastores');
      const datastoreId = moved.config.disks[0]?.datastoreId;
      assert.equal(ds.find((d) => d.id === datastoreId)?.hostId, host(1));
      // The source's QEMU and files are gone.
      const deadline = Date.now() + 10_000;
      while (isPidAlive(sourcePid) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 100));
      assert.ok(!isPidAlive(sourcePid), 'the source QEMU exited');
      assert.deepEqual(images(0, vm.id), []);
      await assert.rejects(p.manager.services.hosts.agent(host(0)).getVm(vm.id), /no VM/);
      // The guest (at the UEFI shell) does not write to the disk: the copy equals the data.
      compareOn(1, vm.id, reference);
      await waitConsole(vm.id, /Shell>/, 120_000);
    });

    test('a cut disk tunnel fails the migration; the VM keeps running on the source', async (t) => {
      const vm = (await p.api.get<Vm[]>('/vms?name=ld-plain'))[0];
      assert.ok(vm);
      const pid = await pidOn(1, vm.id);
      // Both listeners go through the proxy: the memory stream is not reached before the
      // disk tunnel (the first connection) has been cut after 1 MiB.
      relay.cutAfter = 1024 * 1024;
      const r = await migrate(vm.id, host(0)).finally(() => (relay.cutAfter = undefined));
      assert.equal(r.state, 'failed', JSON.stringify(r));
      t.diagnostic(`failed as expected: ${JSON.stringify(r.error)}`);
      assert.match(JSON.stringify(r.error), /tunnel|disk|nbd|NBD/i, JSON.stringify(r.error));
      assert.equal((await p.api.get<Vm>(`/vms/${vm.id}`)).hostId, host(1));
      assert.equal((await p.manager.services.hosts.agent(host(1)).getVm(vm.id)).state, 'running');
      assert.equal(await pidOn(1, vm.id), pid);
      // The destination forgot the VM and removed the images it created.
      const deadline = Date.now() + 20_000;
      let gone = false;
      while (!gone && Date.now() < deadline) {
        gone = await p.manager.services.hosts
          .agent(host(0))
          .getVm(vm.id)
          .then(
            () => false,
            () => true,
          );
        if (!gone) await new Promise((res) => setTimeout(res, 200));
      }
      assert.ok(gone, 'the destination forgot the VM');
      assert.deepEqual(images(0, vm.id), []);
      assert.equal(images(1, vm.id).length, 1, 'the source keeps its image');
    });

    test('an encrypted VM with a local disk moves live; its copy is encrypted with its own DEK', async () => {
      const reference = join(work, 'enc.raw');
      const vm = await createWithData('ld-enc', reference);
      const enc = await sync(`/vms/${vm.id}/actions/encrypt`);
      assert.equal(enc.state, 'succeeded', JSON.stringify(enc));
      await powerOn(vm.id);
      const r = await migrate(vm.id, host(1));
      assert.equal(r.state, 'succeeded', JSON.stringify(r.error));
      const moved = await p.api.get<Vm>(`/vms/${vm.id}`);
      assert.equal(moved.hostId, host(1));
      assert.equal(moved.state, 'running');
      assert.equal((await p.manager.services.hosts.agent(host(1)).getVm(vm.id)).state, 'running');
      assert.deepEqual(images(0, vm.id), []);
      const [disk] = images(1, vm.id);
      assert.ok(disk);
      const info = execFileSync(
        'qemu-img',
        ['info', '-U', '--output=json', join(datastoreDir(1), vm.id, disk)],
        {
          encoding: 'utf8',
        },
      );
      assert.equal((JSON.parse(info) as { encrypted?: boolean }).encrypted, true, 'the copy is encrypted');
      // Decrypted through the API (with the DEK it was created with), it equals the data.
      const off = await sync(`/vms/${vm.id}/actions/power-off`);
      assert.equal(off.state, 'succeeded', JSON.stringify(off.error));
      const dec = await sync(`/vms/${vm.id}/actions/decrypt`);
      assert.equal(dec.state, 'succeeded', JSON.stringify(dec.error));
      compareOn(1, vm.id, reference);
    });

    test('a stopped VM with a local disk moves cold: a cut stream leaves nothing; then the image arrives byte for byte and boots', async (t) => {
      const vm = (await p.api.get<Vm[]>('/vms?name=ld-enc'))[0];
      assert.ok(vm);
      assert.equal(vm.state, 'stopped');
      const enc = await sync(`/vms/${vm.id}/actions/encrypt`);
      assert.equal(enc.state, 'succeeded', JSON.stringify(enc));
      const [disk] = images(1, vm.id);
      assert.ok(disk);
      const sourceImage = join(datastoreDir(1), vm.id, disk);
      const digest = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');
      const before = digest(sourceImage);
      const leftovers = (i: number): string[] => {
        const dir = join(datastoreDir(i), vm.id);
        return existsSync(dir) ? readdirSync(dir) : [];
      };

      // Cut after 1 MiB of the stream: refused, the VM and its image stay on the source.
      relay.cutAfter = 1024 * 1024;
      const cut = await migrate(vm.id, host(0)).finally(() => (relay.cutAfter = undefined));
      assert.equal(cut.state, 'failed', JSON.stringify(cut));
      t.diagnostic(`failed as expected: ${JSON.stringify(cut.error)}`);
      assert.match(JSON.stringify(cut.error), /HS_ERR_MIGRATION_/, 'named as a migration failure');
      assert.equal((await p.api.get<Vm>(`/vms/${vm.id}`)).hostId, host(1));
      assert.equal(digest(sourceImage), before, 'the source image is untouched');
      const deadline = Date.now() + 20_000;
      while (leftovers(0).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(leftovers(0), [], 'no home, no image, no partial file on the destination');

      const r = await migrate(vm.id, host(0));
      assert.equal(r.state, 'succeeded', JSON.stringify(r.error));
      assert.equal((r.result as { cipher: string }).cipher, 'aes-256-gcm');
      const moved = await p.api.get<Vm>(`/vms/${vm.id}`);
      assert.equal(moved.hostId, host(0));
      assert.equal(moved.state, 'stopped');
      const ds = await p.api.get<{ id: string; hostId: string | null }[]>('/datastores');
      assert.equal(ds.find((d) => d.id === moved.config.disks[0]?.datastoreId)?.hostId, host(0));
      assert.deepEqual(leftovers(1), [], "the source's image is gone");
      assert.deepEqual(images(0, vm.id), [disk], 'one image');
      assert.deepEqual(
        leftovers(0).filter((f) => f.includes('.incoming-')),
        [],
        'no temporary file',
      );
      assert.equal(digest(join(datastoreDir(0), vm.id, disk)), before, 'byte for byte: still ciphertext');

      // It boots there (disk and NVRAM open under its keys), and its data is intact.
      await powerOn(vm.id);
      const off = await sync(`/vms/${vm.id}/actions/power-off`);
      assert.equal(off.state, 'succeeded', JSON.stringify(off.error));
      const dec = await sync(`/vms/${vm.id}/actions/decrypt`);
      assert.equal(dec.state, 'succeeded', JSON.stringify(dec.error));
      compareOn(0, vm.id, join(work, 'enc.raw'));
    });
  },
);
