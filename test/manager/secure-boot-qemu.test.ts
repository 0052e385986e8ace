// VM Secure Boot end to end, with a real guest: Debian's Secure Boot OVMF under QEMU
// (TCG), driven only through the manager API and a QEMU agent. The test's own key set is
// a managed object; the VM references it; the agent writes the keys into the VM's
// variable store when it creates it. Three boots:
//   1. secure boot on, the marker app signed by the key set's db key: it runs and sees
//      SecureBoot=1 (on the serial console, read through the API);
//   2. the same app unsigned: the firmware refuses it (Access Denied on the console);
//   3. secure boot off (vm set --secure-boot off): the unsigned app runs (SecureBoot=0)
//      — so the refusal in 2 is Secure Boot's doing, and the test can fail.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openQemuDriver } from '../../src/agent/qemu-driver.js';
import type { Vm } from '../../src/manager/model.js';
import type { Task } from '../../src/manager/tasks.js';
import { certificateFingerprint256 } from '../../src/pki/index.js';
import type { GeneratedKeySet } from '../../src/secureboot/index.js';
import { generateKeySet, readSecureBootState } from '../../src/secureboot/index.js';
import { MARKER, buildMarkerApp, efiToolchainMissing, makeEspImage, signEfi } from '../support/efi.js';
import type { TestPlatform } from '../support/manager.js';
import { startTestPlatform, useTempConfigHome } from '../support/manager.js';

const missing = await efiToolchainMissing();
// eslint-disable-next-line no-control-regex -- ANSI escapes from the firmware are what is stripped
const ANSI = /\u001b\[[0-9;?=]*[A-Za-z]/g;

describe(
  'VM Secure Boot through the manager and a QEMU agent',
  { skip: missing ?? false, concurrency: 1 },
  () => {
    let restoreConfig: () => void;
    let p: TestPlatform;
    let work: string;
    let keys: GeneratedKeySet;
    let espSigned: string;
    let espUnsigned: string;
    let vm: Vm;

    before(async () => {
      restoreConfig = useTempConfigHome();
      work = mkdtempSync(join(tmpdir(), 'hs-sbq-'));
      keys = await generateKeySet({ name: 'hs-test-org' });
      const app = await buildMarkerApp(work);
      const signed = await signEfi(app, keys.db, join(work, 'signed.efi'), work);
      espSigned = await makeEspImage(join(work, 'esp-signed.img'), signed);
      espUnsigned = await makeEspImage(join(work, 'esp-unsigned.img'), app);
      p = await startTestPlatform({ healthIntervalMs: 500, driver: (dir) => openQemuDriver(dir) });
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

    const vmDir = (): string => join(p.agents[0]?.dataDir ?? '', 'datastore', vm.id);
    const putOnDisk = (esp: string): void => {
      const disk = join(vmDir(), 'disk0.qcow2');
      rmSync(disk, { force: true });
      execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', esp, disk]);
    };
    const powerOn = async (): Promise<void> => {
      // The manager learns that the app powered the VM off at its next health tick.
      for (let i = 0; i < 60 && (await p.api.get<Vm>(`/vms/${vm.id}`)).state !== 'stopped'; i++) {
        await new Promise((r) => setTimeout(r, 250));
      }
      const r = await p.request<Task>(
        p.adminToken,
        'POST',
        `/vms/${vm.id}/actions/power-on?sync=true&timeoutMs=120000`,
      );
      assert.equal(r.body.state, 'succeeded', JSON.stringify(r.body));
    };
    /** Waits for `pattern` on the serial console (read through the API). */
    const consoleMatch = async (pattern: RegExp, timeoutMs = 120_000): Promise<RegExpExecArray> => {
      const deadline = Date.now() + timeoutMs;
      let data = '';
      while (Date.now() < deadline) {
        data = (await p.api.get<{ data: string }>(`/vms/${vm.id}/console?offset=0`)).data.replace(ANSI, '');
        const m = pattern.exec(data);
        if (m) return m;
        await new Promise((r) => setTimeout(r, 500));
      }
      return assert.fail(`no ${pattern} on the console; it shows:\n${data.slice(-2500)}`);
    };
    const ran = new RegExp(`${MARKER} SecureBoot=(-?\\d+)`);

    test('a BIOS VM refuses Secure Boot, and nothing changes', async () => {
      const bios = await p.api.post<Vm>('/vms', { name: 'sb-bios', firmware: 'bios', memoryMiB: 64 });
      const r = await p.request<{ code: string; message: string }>(p.adminToken, 'PATCH', `/vms/${bios.id}`, {
        secureBoot: true,
      });
      assert.equal(r.status, 400);
      assert.equal(r.body.code, 'HS_ERR_INVALID_ARGUMENT');
      assert.match(r.body.message, /Secure Boot needs firmware efi/);
      assert.equal((await p.api.get<Vm>(`/vms/${bios.id}`)).config.secureBoot, false);
      // Like every refused change: no event, nothing written (vm-lifecycle.test.ts).
      await p.api.delete(`/vms/${bios.id}`);
    });

    test(
      'with the test key set: the signed app runs, the unsigned one is refused; secure boot off: it runs',
      { timeout: 600_000 },
      async () => {
        const ks = await p.api.post<{ id: string; name: string }>('/secure-boot/key-sets', {
          name: keys.keySet.name,
          pk: keys.keySet.pk,
          kek: keys.keySet.kek,
          db: keys.keySet.db,
          dbx: [],
        });
        const ds = await p.api.get<{ id: string }[]>('/datastores');
        vm = await p.api.post<Vm>('/vms', {
          name: 'sb-guest',
          memoryMiB: 128,
          firmware: 'efi',
          disks: [{ id: 'disk0', sizeMiB: 4, datastoreId: ds[0]?.id }],
        });
        // What `hyperseal vm set sb-guest --secure-boot on --key-set hs-test-org` sends.
        vm = await p.api.patch<Vm>(`/vms/${vm.id}`, { secureBoot: true, secureBootKeySet: ks.id });
        assert.equal(vm.config.secureBoot, true);
        const events = await p.api.get<{ type: string; object: { id: string } }[]>('/events?limit=200');
        assert.ok(events.some((e) => e.type === 'vm.secure-boot-enabled' && e.object.id === vm.id));
        assert.ok(events.some((e) => e.type === 'secureboot.key-set-created' && e.object.id === ks.id));
        // In use: the key set cannot be removed.
        const del = await p.request<{ code: string }>(
          p.adminToken,
          'DELETE',
          `/secure-boot/key-sets/${ks.id}`,
        );
        assert.equal(del.status, 409, JSON.stringify(del.body));

        // 1. signed by the key set's db key
        putOnDisk(espSigned);
        await powerOn();
        const m1 = await consoleMatch(ran);
        assert.equal(m1[1], '1', 'the guest sees SecureBoot=1');
        // The store the agent wrote holds the key set's PK (and the firmware kept it).
        const state = readSecureBootState(readFileSync(join(vmDir(), 'OVMF_VARS.fd')));
        assert.equal(
          state.pk[0]?.type === 'x509' ? state.pk[0].sha256 : '',
          certificateFingerprint256(keys.pk.certPem),
        );

        // 2. unsigned
        putOnDisk(espUnsigned);
        await powerOn();
        await consoleMatch(/BdsDxe: failed to load Boot\w+ "[^"]*" from \S+: Access Denied/);
        assert.doesNotMatch((await p.api.get<{ data: string }>(`/vms/${vm.id}/console?offset=0`)).data, ran);
        const off = await p.request<Task>(p.adminToken, 'POST', `/vms/${vm.id}/actions/power-off?sync=true`);
        assert.equal(off.body.state, 'succeeded');

        // 3. secure boot off: the standard OVMF, the same unsigned app runs (with a vTPM,
        // which the firmware initialises: swtpm writes its state)
        vm = await p.api.patch<Vm>(`/vms/${vm.id}`, { secureBoot: false, vtpm: true });
        await powerOn();
        const m3 = await consoleMatch(ran);
        assert.equal(m3[1], '0', 'the guest sees SecureBoot=0');
        assert.ok(existsSync(join(vmDir(), 'OVMF_VARS.fd')));
        assert.ok(existsSync(join(vmDir(), 'tpm', 'tpm2-00.permall')), 'the vTPM was used');
      },
    );
  },
);
