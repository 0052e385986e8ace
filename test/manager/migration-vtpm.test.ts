// A VM's vTPM travels with it on live migration: QEMU carries swtpm's state blobs in the
// (encrypted) migration stream, and the destination's swtpm — started empty, or for an
// encrypted VM with the state key derived from the VM's own home DEK — takes them. Shown
// by the TPM's permanent state (its seeds, which a fresh TPM would draw anew) on the
// destination being the source's, byte for byte, for a plain and an encrypted VM. Then the
// stopped VM moves back cold, its TPM state file (ciphertext for the encrypted one) with it.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openQemuDriver } from '../../src/agent/qemu-driver.js';
import type { TestPlatform } from '../support/manager.js';
import { startTestPlatform, useTempConfigHome } from '../support/manager.js';

const haveTools =
  existsSync('/usr/bin/qemu-system-x86_64') && existsSync('/usr/share/OVMF') && existsSync('/usr/bin/swtpm');

/** The vTPM's permanent-state file of a VM under an agent's data directory, if there is one. */
function permall(agentDir: string, vmId: string): string | undefined {
  const walk = (dir: string, depth: number): string | undefined => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (name === 'tpm2-00.permall' && dir.endsWith(join(vmId, 'tpm'))) return path;
      if (depth > 0 && statSync(path).isDirectory()) {
        const found = walk(path, depth - 1);
        if (found) return found;
      }
    }
    return undefined;
  };
  return walk(agentDir, 5);
}

describe(
  'vTPM state on live migration',
  { skip: haveTools ? false : 'qemu, ovmf or swtpm is not installed', concurrency: 1 },
  () => {
    let restoreConfig: () => void;
    let p: TestPlatform;
    const host = (i: number): string => p.agents[i]?.hostId ?? '';
    before(async () => {
      restoreConfig = useTempConfigHome();
      p = await startTestPlatform({
        agents: 2,
        kms: true,
        driver: (dir) => openQemuDriver(dir, { accel: 'tcg' }),
      });
    });
    after(async () => {
      for (const v of await p.api.listVms().catch(() => [])) {
        await p.api.run(p.api.powerOffVm(v.id)).catch(() => undefined);
      }
      await p?.close();
      restoreConfig();
    });

    const waitFor = async (what: string, check: () => boolean | Promise<boolean>, ms = 120_000) => {
      const deadline = Date.now() + ms;
      while (!(await check())) {
        if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    };

    for (const encrypted of [false, true]) {
      test(`${encrypted ? 'an encrypted' : 'a plain'} VM's TPM state is the same on the destination`, async () => {
        const vm = await p.api.createVm({
          name: encrypted ? 'tpm-enc' : 'tpm-plain',
          hostId: host(0),
          memoryMiB: 128,
          firmware: 'efi',
          vtpm: true,
        });
        if (encrypted) await p.api.run(p.api.encryptVm(vm.id));
        await p.api.run(p.api.powerOnVm(vm.id));
        // The firmware talks to the TPM early; its state file appears once the TPM is manufactured.
        const src = p.agents[0]?.dataDir ?? '';
        await waitFor('the source vTPM state', () => permall(src, vm.id) !== undefined);
        await waitFor('the console', async () => /\S/.test((await p.api.getVmConsole(vm.id)).data));
        const before = readFileSync(permall(src, vm.id) ?? '');
        const done = await p.api.waitTask(await p.api.migrateVm(vm.id, { hostId: host(1) }));
        assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
        const dst = p.agents[1]?.dataDir ?? '';
        await waitFor('the destination vTPM state', () => permall(dst, vm.id) !== undefined, 30_000);
        const moved = readFileSync(permall(dst, vm.id) ?? '');
        assert.ok(before.length > 100);
        // swtpm's state file: a header whose flags say whether the rest is encrypted (--key).
        const isEncrypted = (blob: Buffer): boolean => (blob.readUInt16BE(4) & 1) === 1;
        assert.equal(isEncrypted(before), encrypted, 'the source state is encrypted iff the VM is');
        assert.equal(isEncrypted(moved), encrypted, 'so is the destination’s: never plaintext on disk');
        if (!encrypted) {
          assert.ok(
            moved.equals(before),
            'the destination TPM holds the source TPM’s state, not a fresh one',
          );
        } else {
          // Ciphertext under a fresh IV each write: equal in length, and — below — it opens
          // under the key the destination derives from the VM's own home DEK.
          assert.equal(moved.length, before.length);
          assert.ok(!moved.equals(before));
        }
        const q = await p.manager.services.hosts.agent(host(1)).getVm(vm.id);
        assert.equal(q.state, 'running');
        // A power cycle on the destination starts swtpm again on that state file: with a
        // wrong key it fails its HMAC check and libtpms refuses to start (tried by hand:
        // "Verification of HMAC failed"), so the VM booting again shows the key is right.
        await p.api.run(p.api.powerOffVm(vm.id));
        await p.api.run(p.api.powerOnVm(vm.id));
        const console = (await p.api.getVmConsole(vm.id)).next;
        await waitFor('the firmware on the destination after a power cycle', async () => {
          const c = await p.api.getVmConsole(vm.id, { offset: console });
          return /\S/.test(c.data);
        });
        await p.api.run(p.api.powerOffVm(vm.id));

        // Stopped, it moves back cold: its NVRAM and TPM state files go as they are on disk.
        const atRest = readFileSync(permall(dst, vm.id) ?? '');
        const cold = await p.api.waitTask(await p.api.migrateVm(vm.id, { hostId: host(0) }));
        assert.equal(cold.state, 'succeeded', JSON.stringify(cold.error));
        assert.equal((cold.result as { cold?: boolean }).cold, true);
        const back = readFileSync(permall(src, vm.id) ?? '');
        assert.ok(back.equals(atRest), 'the state file arrives byte for byte (ciphertext stays ciphertext)');
        assert.equal(permall(dst, vm.id), undefined, 'nothing of the VM is left on the host it left');
        await p.api.run(p.api.powerOnVm(vm.id));
        const from = (await p.api.getVmConsole(vm.id)).next;
        await waitFor('the firmware after the cold move', async () =>
          /\S/.test((await p.api.getVmConsole(vm.id, { offset: from })).data),
        );
        await p.api.run(p.api.powerOffVm(vm.id));
      });
    }
  },
);
