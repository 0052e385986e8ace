// VM encryption proven with a real guest (QEMU software emulation, real OVMF, the embedded
// key server). An EFI VM's disk holds a FAT filesystem whose startup.nsh makes the UEFI
// shell write a marker — assembled at run time from two shell variables, so the marker's
// bytes exist nowhere until the guest writes them — through its virtual disk controller.
// The VM is encrypted through the API, boots, the guest writes the marker: the marker is in
// no host file (disk, NVRAM, configuration, logs), nor is the KEK or any DEK, in any form,
// nor on QEMU's command line. Then the VM is decrypted and boots again: the guest reads the
// marker back and prints it — so the test could fail.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openQemuDriver } from '../../src/agent/qemu-driver.js';
import { parseBundle, unwrapDeks } from '../../src/agent/vm-keys.js';
import type { Vm } from '../../src/manager/model.js';
import type { Task } from '../../src/manager/tasks.js';
import type { TestPlatform } from '../support/manager.js';
import { startTestPlatform, useTempConfigHome } from '../support/manager.js';
import { filesUnder, findIn, keyForms } from '../support/scan.js';

const haveTools =
  existsSync('/usr/bin/qemu-system-x86_64') &&
  existsSync('/usr/share/OVMF') &&
  existsSync('/usr/sbin/mkfs.vfat') &&
  existsSync('/usr/bin/mcopy');

describe(
  'VM encryption with a real guest',
  {
    skip: haveTools ? false : 'qemu-system-x86, ovmf, dosfstools or mtools is not installed',
    concurrency: 1,
  },
  () => {
    let restoreConfig: () => void;
    let p: TestPlatform;
    let vm: Vm;
    let work: string;
    // The marker exists only once the guest has joined its halves.
    const left = `HSL${randomBytes(6).toString('hex')}`;
    const right = `HSR${randomBytes(6).toString('hex')}`;
    const marker = `${left}${right}`;
    const markerForms = [Buffer.from(marker), Buffer.from(marker, 'utf16le')];

    before(async () => {
      restoreConfig = useTempConfigHome();
      work = mkdtempSync(join(tmpdir(), 'hs-encq-'));
      p = await startTestPlatform({ kms: true, healthIntervalMs: 500, driver: (dir) => openQemuDriver(dir) });
    });
    after(async () => {
      if (vm !== undefined) {
        await p
          .request(p.adminToken, 'POST', `/vms/${vm.id}/actions/power-off?sync=true`)
          .catch(() => undefined);
      }
      await p?.close();
      rmSync(work, { recursive: true, force: true });
      restoreConfig();
    });

    const sync = async (path: string, body: unknown = {}): Promise<Task> => {
      const r = await p.request<Task>(p.adminToken, 'POST', `${path}?sync=true&timeoutMs=300000`, body);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return r.body;
    };
    const waitStopped = async (timeoutMs: number): Promise<void> => {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        if ((await p.api.get<Vm>(`/vms/${vm.id}`)).state === 'stopped') return;
        await new Promise((r) => setTimeout(r, 500));
      }
      const con = await p.api.get<{ data: string }>(`/vms/${vm.id}/console?offset=0`);
      assert.fail(`the guest did not power off; console:\n${con.data.slice(-3000)}`);
    };
    const vmDir = (): string => join(p.agents[0]?.dataDir ?? '', 'datastore', vm.id);

    test('the guest writes through an encrypted disk: no plaintext, no key, in any host file', async () => {
      const ds = await p.api.get<{ id: string }[]>('/datastores');
      vm = await p.api.post<Vm>('/vms', {
        name: 'enc-guest',
        memoryMiB: 96,
        firmware: 'efi',
        disks: [{ id: 'disk0', sizeMiB: 16, datastoreId: ds[0]?.id }],
      });
      // The "installer": a FAT filesystem with the guest's script, on the plain disk.
      const fat = join(work, 'fat.img');
      execFileSync('mkfs.vfat', ['-C', '-n', 'HSTEST', fat, String(16 * 1024)], { stdio: 'ignore' });
      const script = [
        '@echo -off',
        'fs0:',
        'if exist marker.txt then',
        '  type marker.txt',
        '  echo HS-READ-BACK-DONE',
        'else',
        `  set hsl ${left}`,
        `  echo %hsl%${right} >a marker.txt`,
        '  echo HS-WRITE-DONE',
        'endif',
        'reset -s',
        '',
      ].join('\r\n');
      writeFileSync(join(work, 'startup.nsh'), script);
      execFileSync('mcopy', ['-i', fat, join(work, 'startup.nsh'), '::/startup.nsh']);
      const disk = join(vmDir(), 'disk0.qcow2');
      rmSync(disk);
      execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', fat, disk]);

      const enc = await sync(`/vms/${vm.id}/actions/encrypt`);
      assert.equal(enc.state, 'succeeded', JSON.stringify(enc.error));
      vm = await p.api.get<Vm>(`/vms/${vm.id}`);
      assert.ok(vm.encryption);
      assert.ok(!existsSync(disk), 'the plain image is gone');
      assert.match(
        execFileSync('qemu-img', ['info', join(vmDir(), 'disk0.g1.qcow2')], { encoding: 'utf8' }),
        /encrypted: yes/,
      );

      // The keys, to look for: the KEK from the key server, the DEKs unwrapped with it.
      const kek = await p.manager.services.keyProviders.fetchKek(
        vm.encryption.providerId,
        vm.encryption.keyId,
      );
      const record = JSON.parse(readFileSync(join(vmDir(), 'spec.json'), 'utf8')) as { bundle: unknown };
      const deks = unwrapDeks(kek, parseBundle(record.bundle, 'spec.json'));
      const keyNeedles = [kek, deks.home, ...deks.disks.values()].flatMap(keyForms);
      assert.ok(
        !readFileSync(join(vmDir(), 'spec.json'), 'utf8').includes('enc-guest'),
        'the spec is sealed',
      );

      const on = await sync(`/vms/${vm.id}/actions/power-on`);
      assert.equal(on.state, 'succeeded', JSON.stringify(on.error));
      const rt = await p.manager.services.hosts.agent(vm.hostId).getVm(vm.id);
      assert.ok(rt.pid, 'QEMU runs');
      const cmdline = readFileSync(`/proc/${rt.pid}/cmdline`);
      assert.deepEqual(findIn([`/proc/${rt.pid}/cmdline`], keyNeedles), [], 'no key on the command line');
      assert.ok(cmdline.includes('luks'), 'QEMU opens the disk as LUKS');
      await waitStopped(180_000);

      const con = await p.api.get<{ data: string }>(`/vms/${vm.id}/console?offset=0`);
      assert.match(con.data, /HS-WRITE-DONE/, 'the guest ran its script');
      const files = filesUnder(p.agents[0]?.dataDir ?? '');
      assert.ok(
        files.some((f) => f.endsWith('.luks')),
        'the NVRAM is a LUKS container',
      );
      assert.deepEqual(findIn(files, markerForms), [], 'the marker is in no host file');
      assert.deepEqual(findIn(files, keyNeedles), [], 'no key in any agent file');
      assert.deepEqual(findIn(filesUnder(p.managerDir), keyNeedles), [], 'no key in any manager file');
      // Firmware variable names (UTF-16) the NVRAM holds after a boot are not readable either.
      assert.deepEqual(findIn(files, [Buffer.from('BootOrder', 'utf16le')]), []);
    });

    test('decrypted, the guest reads the marker back', async () => {
      const dec = await sync(`/vms/${vm.id}/actions/decrypt`);
      assert.equal(dec.state, 'succeeded', JSON.stringify(dec.error));
      assert.equal((await p.api.get<Vm>(`/vms/${vm.id}`)).encryption, null);
      assert.match(
        execFileSync('qemu-img', ['info', join(vmDir(), 'disk0.g2.qcow2')], { encoding: 'utf8' }),
        /encrypted: no|^(?![\s\S]*encrypted: yes)/,
      );
      const on = await sync(`/vms/${vm.id}/actions/power-on`);
      assert.equal(on.state, 'succeeded', JSON.stringify(on.error));
      await waitStopped(180_000);
      const con = await p.api.get<{ data: string }>(`/vms/${vm.id}/console?offset=0`);
      assert.match(con.data, /HS-READ-BACK-DONE/, con.data.slice(-2000));
      assert.ok(con.data.includes(marker), 'the guest printed the marker it wrote while encrypted');
    });
  },
);
