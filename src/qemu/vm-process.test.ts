/**
 * VmProcess against real QEMU (TCG; 64–128 MiB guests, no OS). What a guest without an OS
 * reliably prints on serial, measured on QEMU 7.2 / OVMF 2022.11 / SeaBIOS 1.16.2:
 *  - OVMF with no disk: `BdsDxe: loading Boot0001 "EFI Internal Shell"` then
 *    `UEFI Interactive Shell v2.2` (~4 s under TCG), `Shell>` after a 5-s startup.nsh countdown;
 *  - Secure Boot OVMF with Microsoft keys: the internal shell is refused,
 *    `BdsDxe: failed to start Boot0001 "EFI Internal Shell" …: Security Violation`;
 *  - SeaBIOS: nothing at all on serial unless fw_cfg `etc/sercon-port` is set, then
 *    `SeaBIOS (version 1.16.2-debian-1.16.2-1)` and its boot attempts (< 1 s).
 * Every QEMU started here is SIGKILLed at the end, pass or fail.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { HypersealError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import type { VmSpec } from './command-line.js';
import { discoverOvmf, selectOvmf } from './firmware.js';
import type { StartOptions } from './vm-process.js';
import { VmProcess, createQcow2Image, isPidAlive, isQemuOf } from './vm-process.js';

// A comma in the directory: every path option must be escaped for QEMU to find its files.
const dir = mkdtempSync(join(tmpdir(), 'hs-vm,'));
const specs: VmSpec[] = [];

/** SIGKILLs every QEMU of this file that still runs. Synchronous, so it also works on 'exit'. */
function killAll(): void {
  for (const spec of specs) {
    let pid: number;
    try {
      pid = Number(readFileSync(spec.pidFilePath, 'utf8').trim());
    } catch {
      continue;
    }
    if (pid > 1 && isQemuOf(pid, spec.uuid)) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
  }
}
process.on('exit', killAll);
after(() => {
  killAll();
  rmSync(dir, { recursive: true, force: true });
});

const OPTS: StartOptions = { accel: 'tcg', qmp: { connectTimeoutMs: 5_000, commandTimeoutMs: 15_000 } };
const BOOT_TIMEOUT_MS = 40_000;

function specFor(name: string, firmware: 'bios' | 'efi', extra: Partial<VmSpec> = {}): VmSpec {
  const d = join(dir, name);
  mkdirSync(d, { recursive: true });
  const spec: VmSpec = {
    name,
    uuid: randomUUID(),
    cpus: 1,
    memoryMiB: 64,
    firmware,
    disks: [],
    nics: [],
    serialLogPath: join(d, 'serial.log'),
    qmpSocketPath: join(d, 'qmp.sock'),
    pidFilePath: join(d, 'qemu.pid'),
    ...(firmware === 'efi' ? { nvramPath: join(d, 'OVMF_VARS.fd') } : {}),
    ...extra,
  };
  specs.push(spec);
  return spec;
}

async function rejects(p: Promise<unknown>, code: ErrorCode): Promise<HypersealError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof HypersealError, `expected ${code}, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}, but it resolved`);
}

/** Fields 6 (session) and 5 (process group) of /proc/PID/stat. */
function sessionAndGroup(pid: number): { pgrp: number; session: number } {
  const text = readFileSync(`/proc/${pid}/stat`, 'latin1');
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { pgrp: Number(f[2]), session: Number(f[3]) };
}

void test(
  'EFI VM: boots to the UEFI shell, resets, ignores the power button, survives re-attach, powers off',
  { timeout: 120_000 },
  async () => {
    const spec = specFor('efi-1', 'efi');
    const vm = await VmProcess.start(spec, OPTS);
    try {
      // Detached: its own session and process group, so the agent's signals never reach it.
      assert.deepEqual(sessionAndGroup(vm.pid), { pgrp: vm.pid, session: vm.pid });
      const template = selectOvmf(await discoverOvmf(), { secureBoot: false }).varsTemplate;
      assert.equal(statSync(spec.nvramPath as string).size, statSync(template).size);
      assert.equal(statSync(spec.nvramPath as string).mode & 0o777, 0o600);

      const banner = await vm.waitForSerial('UEFI Interactive Shell', { timeoutMs: BOOT_TIMEOUT_MS });
      assert.deepEqual(await vm.status(), { status: 'running', running: true });
      const log = await vm.readSerialLog();
      assert.match(log.data.toString('latin1'), /BdsDxe: (loading|starting) Boot\d+ "EFI Internal Shell"/);
      assert.equal((await vm.readSerialLog(log.nextOffset)).data.length >= 0, true);

      // Reset: QEMU reports it, and the firmware boots again from the start.
      const resetEvent = vm.qmp.waitForEvent('RESET', { timeoutMs: 10_000 });
      await vm.reset();
      assert.deepEqual((await resetEvent).data, { guest: false, reason: 'host-qmp-system-reset' });
      await vm.waitForSerial('UEFI Interactive Shell', {
        fromOffset: banner.end,
        timeoutMs: BOOT_TIMEOUT_MS,
      });

      // The UEFI shell ignores the ACPI power button: a clean timeout, the VM still runs.
      const powerdown = vm.qmp.waitForEvent('POWERDOWN', { timeoutMs: 10_000 });
      await rejects(vm.shutdown({ timeoutMs: 1_500 }), 'HS_ERR_QEMU_SHUTDOWN_TIMEOUT');
      await powerdown;
      assert.equal((await vm.status()).running, true);

      await rejects(VmProcess.start(spec, OPTS), 'HS_ERR_QEMU_ALREADY_RUNNING');
      // QEMU greets one QMP client at a time: a second agent cannot attach while we hold it.
      const busy = await rejects(
        VmProcess.attach(spec, { qmp: { connectTimeoutMs: 1_000 } }),
        'HS_ERR_QMP_TIMEOUT',
      );
      assert.match(busy.message, /another QMP client/);

      // Agent restart: the first object lets go, a fresh one finds the same VM and drives it.
      await vm.detach();
      const again = await VmProcess.attach(spec, OPTS);
      assert.equal(again.pid, vm.pid);
      assert.deepEqual(await again.status(), { status: 'running', running: true });
      await again.qmp.execute('stop');
      assert.deepEqual(await again.status(), { status: 'paused', running: false });
      await again.qmp.execute('cont');
      assert.equal((await again.status()).status, 'running');

      await again.powerOff();
      assert.equal(isPidAlive(vm.pid), false);
      assert.equal(existsSync(spec.pidFilePath), false, 'QEMU removed its pidfile');
      assert.equal(existsSync(spec.qmpSocketPath), false, 'QEMU removed its QMP socket');
      await rejects(VmProcess.attach(spec, OPTS), 'HS_ERR_QEMU_NOT_RUNNING');
      await rejects(again.status(), 'HS_ERR_QEMU_NOT_RUNNING');
      await again.powerOff(); // idempotent
      // The NVRAM is kept for the next start (it holds the VM's boot entries).
      assert.ok(existsSync(spec.nvramPath as string));
    } finally {
      await vm.powerOff({ timeoutMs: 2_000 }).catch(() => {});
    }
  },
);

void test(
  'Secure Boot VM: the enrolled-keys OVMF refuses the unsigned UEFI shell',
  { timeout: 90_000 },
  async () => {
    const spec = specFor('sb-1', 'efi', { secureBoot: true, memoryMiB: 128 });
    const vm = await VmProcess.start(spec, OPTS);
    try {
      const refusal = await vm.waitForSerial(
        /BdsDxe: failed to start Boot\d+ "EFI Internal Shell" [^\r\n]*: Security Violation/,
        { timeoutMs: BOOT_TIMEOUT_MS },
      );
      assert.ok(refusal.index > 0);
      assert.ok(readFileSync(`/proc/${vm.pid}/cmdline`, 'utf8').includes('OVMF_CODE_4M.ms.fd'));
      assert.equal((await vm.status()).running, true);
    } finally {
      await vm.powerOff();
    }
    assert.equal(isPidAlive(vm.pid), false);
  },
);

void test(
  'BIOS VM started by another process: survives it, SeaBIOS on serial, disk and NIC present, SIGKILL fallback',
  { timeout: 90_000 },
  async () => {
    const spec = specFor('bios-1', 'bios', {
      disks: [{ id: 'disk0', path: join(dir, 'bios-1', 'disk0.qcow2'), format: 'qcow2' }],
      nics: [{ id: 'nic0', mac: '52:54:00:12:34:56', network: 'lab' }],
    });
    // The "agent": a separate Node process that starts the VM, detaches and exits.
    const agent = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const { VmProcess } = await import(${JSON.stringify(new URL('./vm-process.js', import.meta.url).href)});
       const [spec, opts] = JSON.parse(process.argv[1]);
       const vm = await VmProcess.start(spec, opts);
       await vm.detach();
       process.stdout.write(JSON.stringify({ pid: vm.pid }));`,
        JSON.stringify([spec, { ...OPTS, createDisks: { disk0: { sizeMiB: 16 } } }]),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    agent.stdout.on('data', (c: Buffer) => (out += c.toString()));
    agent.stderr.on('data', (c: Buffer) => (err += c.toString()));
    // 'close' = the agent exited and its pipes are closed: QEMU holds none of them.
    const code = await new Promise<number | null>((resolve) => agent.once('close', resolve));
    assert.equal(code, 0, err);
    const { pid } = JSON.parse(out) as { pid: number };
    assert.ok(isPidAlive(pid) && isQemuOf(pid, spec.uuid), 'QEMU outlived the agent that started it');

    const vm = await VmProcess.attach(spec, OPTS);
    try {
      assert.equal(vm.pid, pid);
      await vm.waitForSerial(/SeaBIOS \(version [^)]+\)/, { timeoutMs: BOOT_TIMEOUT_MS });
      assert.equal((await vm.status()).status, 'running');
      const blocks = (await vm.qmp.execute('query-named-block-nodes')) as {
        'node-name': string;
        drv: string;
        file: string;
      }[];
      const disk = blocks.find((b) => b['node-name'] === 'drive-disk0');
      assert.equal(disk?.drv, 'qcow2');
      assert.equal(disk?.file, spec.disks[0]?.path);
      assert.equal(
        await vm.qmp.execute('qom-get', { path: '/machine/peripheral/nic0', property: 'mac' }),
        '52:54:00:12:34:56',
      );
      await rejects(createQcow2Image(spec.disks[0]?.path as string, 16), 'HS_ERR_QEMU_DISK_EXISTS');

      // A frozen QEMU does not answer `quit`: powerOff falls back to SIGKILL of its group
      // and cleans up the pidfile and socket a killed QEMU leaves behind.
      process.kill(pid, 'SIGSTOP');
      const started = Date.now();
      await vm.powerOff({ timeoutMs: 1_000 });
      assert.ok(Date.now() - started < 10_000);
      assert.equal(isPidAlive(pid), false);
      assert.equal(existsSync(spec.pidFilePath), false);
      assert.equal(existsSync(spec.qmpSocketPath), false);
    } finally {
      await vm.powerOff({ timeoutMs: 1_000 }).catch(() => {});
    }
  },
);

void test(
  'start failures carry QEMU’s own words; stale pidfiles are never trusted',
  { timeout: 30_000 },
  async () => {
    const missing = specFor('bad-1', 'bios', {
      disks: [{ id: 'disk0', path: join(dir, 'bad-1', 'missing.qcow2'), format: 'qcow2' }],
    });
    const err = await rejects(VmProcess.start(missing, OPTS), 'HS_ERR_QEMU_START_FAILED');
    assert.match(err.message, /missing\.qcow2/);
    assert.match(err.message, /No such file or directory/);
    assert.equal(existsSync(missing.pidFilePath), false);

    // A pidfile naming a live process that is not this VM's QEMU (the pid was reused).
    const stale = specFor('stale-1', 'bios');
    writeFileSync(stale.pidFilePath, `${process.pid}\n`);
    const reused = await rejects(VmProcess.attach(stale, OPTS), 'HS_ERR_QEMU_NOT_RUNNING');
    assert.match(reused.message, /reused/);
    writeFileSync(stale.pidFilePath, '999999999\n');
    await rejects(VmProcess.attach(stale, OPTS), 'HS_ERR_QEMU_NOT_RUNNING');
    await rejects(
      VmProcess.start({ ...stale, disks: [] }, { ...OPTS, createDisks: { nope: { sizeMiB: 1 } } }),
      'HS_ERR_QEMU_INVALID_SPEC',
    );
    await rejects(VmProcess.start({ ...stale, secureBoot: true }, OPTS), 'HS_ERR_QEMU_INVALID_SPEC');
    const noBinary = await rejects(
      VmProcess.start(specFor('bad-2', 'bios'), { ...OPTS, qemuBinary: '/nonexistent/qemu-system-x86_64' }),
      'HS_ERR_QEMU_START_FAILED',
    );
    assert.match(noBinary.message, /ENOENT/);
  },
);
