/**
 * An encrypted VM against real QEMU (TCG, 128 MiB, OVMF, no OS): encrypted disk and
 * encrypted NVRAM opened through secrets sealed under a per-process master key that
 * reaches QEMU through a FIFO; no key in any form on its command line; the console read
 * from a socket into memory, with nothing in any file; input typed into the UEFI shell;
 * a second boot from the same encrypted NVRAM with a new master key, the caller's console
 * reader following the restart. Every QEMU started here is SIGKILLed at the end.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { VmSpec } from './command-line.js';
import { sealSecretForQemu } from './command-line.js';
import { checkDek, luksPassphrase } from './encrypted-images.js';
import { SerialSocketReader } from './serial-socket.js';
import type { StartOptions } from './vm-process.js';
import { VmProcess, isQemuOf } from './vm-process.js';

const dir = mkdtempSync(join(tmpdir(), 'hs-encvm-'));
const specs: VmSpec[] = [];
function killAll(): void {
  for (const spec of specs) {
    try {
      const pid = Number(readFileSync(spec.pidFilePath, 'utf8').trim());
      if (pid > 1 && isQemuOf(pid, spec.uuid)) process.kill(-pid, 'SIGKILL');
    } catch {
      // not running
    }
  }
}
process.on('exit', killAll);
after(() => {
  killAll();
  rmSync(dir, { recursive: true, force: true });
});

const OPTS: StartOptions = { accel: 'tcg', qmp: { connectTimeoutMs: 5_000, commandTimeoutMs: 15_000 } };
const BOOT_TIMEOUT_MS = 60_000;

/** Every form a 32-byte key could take in a string. */
function forms(key: Buffer): Buffer[] {
  return [
    key,
    Buffer.from(key.toString('hex')),
    Buffer.from(key.toString('hex').toUpperCase()),
    Buffer.from(key.toString('base64')),
    Buffer.from(key.toString('base64url')),
  ];
}

interface BlockNode {
  'node-name': string;
  drv: string;
  encrypted: boolean;
}

void test(
  'EFI VM with an encrypted disk and encrypted NVRAM: no key on its command line, console only in memory',
  { timeout: 240_000 },
  async () => {
    const diskDek = randomBytes(32);
    const nvramDek = randomBytes(32);
    const diskPath = join(dir, 'disk0.qcow2');

    const spec: VmSpec = {
      name: 'enc-1',
      uuid: randomUUID(),
      cpus: 1,
      memoryMiB: 128,
      firmware: 'efi',
      disks: [{ id: 'disk0', path: diskPath, format: 'qcow2' }],
      nics: [],
      serialSocketPath: join(dir, 'serial.sock'),
      qmpSocketPath: join(dir, 'qmp.sock'),
      pidFilePath: join(dir, 'qemu.pid'),
      nvramPath: join(dir, 'vars.luks'),
    };
    specs.push(spec);
    /** The spec for one QEMU process: passphrases sealed under that process's master key. */
    const sealed = (masterKey: Buffer): VmSpec => {
      const diskPass = luksPassphrase(diskDek);
      const nvramPass = luksPassphrase(nvramDek);
      try {
        return {
          ...spec,
          disks: [
            {
              ...(spec.disks[0] as VmSpec['disks'][number]),
              encryption: sealSecretForQemu(masterKey, diskPass),
            },
          ],
          nvramEncryption: sealSecretForQemu(masterKey, nvramPass),
        };
      } finally {
        diskPass.fill(0);
        nvramPass.fill(0);
      }
    };

    // The caller's console reader, kept across both boots (as the agent keeps one per VM).
    const reader = new SerialSocketReader(spec.serialSocketPath as string, { reconnectMs: 50 });
    const masterKey = randomBytes(32);
    // start() creates the encrypted disk and the encrypted NVRAM (from the template) itself.
    const vm = await VmProcess.start(sealed(masterKey), {
      ...OPTS,
      masterKey,
      nvramDek,
      serial: reader,
      createDisks: { disk0: { sizeMiB: 16, dek: diskDek } },
    });
    try {
      assert.equal(vm.serial, reader);
      // Both made encrypted, under their own keys; no FIFO left behind.
      assert.equal(await checkDek(spec.nvramPath as string, nvramDek, 'luks'), true);
      assert.equal(await checkDek(diskPath, diskDek), true);
      assert.deepEqual(
        readdirSync(dir).filter((f) => f.startsWith('.hs-secret-')),
        [],
      );

      const cmdline = readFileSync(`/proc/${vm.pid}/cmdline`);
      for (const key of [diskDek, nvramDek, masterKey]) {
        for (const form of forms(key)) assert.ok(!cmdline.includes(form), 'a key is on the command line');
      }
      assert.ok(cmdline.includes(Buffer.from('keyid=hs-master')), 'the sealed form is what QEMU got');

      const nodes = (await vm.qmp.execute('query-named-block-nodes')) as BlockNode[];
      const disk = nodes.find((n) => n['node-name'] === 'drive-disk0');
      const vars = nodes.find((n) => n['node-name'] === 'hs-fw-vars');
      assert.deepEqual([disk?.drv, disk?.encrypted], ['qcow2', true]);
      assert.deepEqual([vars?.drv, vars?.encrypted], ['luks', true]);

      // The console: in memory only.
      const banner = await vm.waitForSerial('UEFI Interactive Shell', { timeoutMs: BOOT_TIMEOUT_MS });
      const prompt = await vm.waitForSerial('Shell>', { fromOffset: banner.end, timeoutMs: BOOT_TIMEOUT_MS });
      await reader.write('echo hs-typed-marker\r');
      // The shell echoes each typed key between cursor escapes; the command's output is a line.
      await vm.waitForSerial(/\nhs-typed-marker\r?\n/, {
        fromOffset: prompt.end,
        timeoutMs: 30_000,
      });
      assert.match(reader.chunk(0).data, /BdsDxe: (loading|starting) Boot\d+ "EFI Internal Shell"/);
      const files = readdirSync(dir);
      for (const f of files) {
        if (f.endsWith('.sock')) continue;
        const content = readFileSync(join(dir, f));
        assert.ok(!content.includes(Buffer.from('UEFI Interactive Shell')), `console output in ${f}`);
        assert.ok(!content.includes(Buffer.from('hs-typed-marker')), `console input in ${f}`);
      }
      const endOfFirstBoot = reader.end;

      // Power off, boot again: a new master key, the same encrypted NVRAM (kept), the same reader.
      await vm.powerOff();
      const masterKey2 = randomBytes(32);
      const vm2 = await VmProcess.start(sealed(masterKey2), {
        ...OPTS,
        masterKey: masterKey2,
        serial: reader,
      });
      try {
        const cmdline2 = readFileSync(`/proc/${vm2.pid}/cmdline`);
        for (const form of forms(masterKey2)) assert.ok(!cmdline2.includes(form));
        await vm2.waitForSerial('UEFI Interactive Shell', { timeoutMs: BOOT_TIMEOUT_MS });
        // The new QEMU's output starts at offset 0 again, like a truncated log file.
        const r = await vm2.readSerialLog(endOfFirstBoot);
        assert.equal(r.restarted, true);
        assert.equal(r.offset, 0);
        await vm2.powerOff();
      } finally {
        await vm2.powerOff({ timeoutMs: 2_000 }).catch(() => undefined);
      }
    } finally {
      await vm.powerOff({ timeoutMs: 2_000 }).catch(() => undefined);
      reader.close();
    }
  },
);

void test('an encrypted VM refuses to start without the master key or with a missing NVRAM key', async () => {
  const masterKey = randomBytes(32);
  const spec: VmSpec = {
    name: 'enc-2',
    uuid: randomUUID(),
    cpus: 1,
    memoryMiB: 64,
    firmware: 'efi',
    disks: [],
    nics: [],
    serialSocketPath: join(dir, 'enc-2.sock'),
    qmpSocketPath: join(dir, 'enc-2.qmp'),
    pidFilePath: join(dir, 'enc-2.pid'),
    nvramPath: join(dir, 'enc-2-vars.luks'),
    nvramEncryption: sealSecretForQemu(masterKey, Buffer.from('0'.repeat(64))),
  };
  specs.push(spec);
  await assert.rejects(VmProcess.start(spec, OPTS), /no master key/);
  await assert.rejects(VmProcess.start(spec, { ...OPTS, masterKey }), /does not exist and no key was given/);
  await assert.rejects(VmProcess.start(spec, { ...OPTS, masterKey: randomBytes(16) }), /32 bytes/);
});
