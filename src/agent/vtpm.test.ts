// vTPM 2.0 with real QEMU, OVMF and swtpm: an encrypted EFI VM with `vtpm` (and Secure
// Boot with an organisation's key set, whose store the agent writes before encrypting it)
// starts with its own swtpm; QEMU reports the TPM (QMP query-tpm); swtpm outlives the agent (the
// driver closed, QEMU and swtpm run on); the state files are encrypted: swtpm cannot open
// them without the key derived from the VM's home DEK, and can with it — so the check
// could fail.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { certificateFingerprint256 } from '../pki/index.js';
import { convertNvram } from '../qemu/encrypted-images.js';
import { QmpClient } from '../qemu/qmp-client.js';
import { isPidAlive } from '../qemu/vm-process.js';
import { generateKeySet, readSecureBootState } from '../secureboot/index.js';
import { openQemuDriver } from './qemu-driver.js';
import { parseBundle, unwrapDeks } from './vm-keys.js';
import { readFileSync } from 'node:fs';
import { VTPM_FILES, runningSwtpm, vtpmStateKey } from './vtpm.js';

const haveTools =
  existsSync('/usr/bin/qemu-system-x86_64') && existsSync('/usr/share/OVMF') && existsSync('/usr/bin/swtpm');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitUntil(ok: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').slice(-2000);
  } catch {
    return '(none)';
  }
}

function run(file: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: 20_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: `${stdout}${stderr}` });
    });
  });
}

/**
 * Starts swtpm on a copy of a state directory (with or without a key) and asks it to
 * initialise the TPM, which reads the permanent state: swtpm_ioctl -i fails when the
 * state cannot be decrypted.
 */
async function initWith(stateDir: string, work: string, keyHex: Buffer | undefined): Promise<number> {
  const dir = mkdtempSync(join(work, 'probe-'));
  cpSync(stateDir, join(dir, 'state'), { recursive: true });
  const ctrl = join(dir, 'ctrl.sock');
  const args = [
    'socket',
    '--tpm2',
    '--tpmstate',
    `dir=${join(dir, 'state')}`,
    '--ctrl',
    `type=unixio,path=${ctrl}`,
  ];
  if (keyHex) {
    writeFileSync(join(dir, 'key'), keyHex, { mode: 0o600 }); // a test copy of a test VM's key
    args.push('--key', `file=${join(dir, 'key')},format=hex,mode=aes-256-cbc`);
  }
  const child = spawn('swtpm', args, { stdio: 'ignore' });
  try {
    for (let i = 0; i < 100 && !existsSync(ctrl); i++) await sleep(20);
    return (await run('swtpm_ioctl', ['--unix', ctrl, '-i'])).code;
  } finally {
    child.kill('SIGKILL');
  }
}

describe(
  'vTPM (swtpm) with real QEMU',
  { skip: haveTools ? false : 'qemu, ovmf or swtpm not installed' },
  () => {
    const work = mkdtempSync(join(tmpdir(), 'hs-vtpm-'));
    after(() => rmSync(work, { recursive: true, force: true }));

    void test(
      'an encrypted Secure Boot VM with vtpm: QEMU reports the TPM, swtpm outlives the agent, its state and NVRAM are encrypted',
      { timeout: 300_000 },
      async (t) => {
        const dataDir = join(work, 'agent');
        mkdirSync(dataDir);
        let driver = await openQemuDriver(dataDir, { accel: 'tcg' });
        const kek = randomBytes(32);
        const keys = await generateKeySet({ name: 'vtpm-test-org' });
        await driver.putKey('p/kek', kek);
        const id = 'vtpm-vm';
        await driver.define({
          id,
          name: id,
          cpus: 1,
          memoryMiB: 64,
          firmware: 'efi',
          secureBoot: true,
          disks: [],
          nics: [],
          encryption: { kekRef: 'p/kek' },
          secureBootKeySet: keys.keySet,
          vtpm: true,
        });
        const home = join(dataDir, 'datastore', id);
        let quit = false;
        try {
          await driver.powerOn(id);
          const swtpmPid = runningSwtpm(home);
          const qemuPid = Number(readFileSync(join(home, 'qemu.pid'), 'utf8').trim());
          assert.ok(swtpmPid !== undefined, 'swtpm runs');
          // OVMF initialises the TPM early in its boot: give it the time to do so.
          await sleep(6_000);
          // The agent goes away (as in a restart); QEMU and swtpm keep running.
          await driver.close();
          assert.equal(runningSwtpm(home), swtpmPid, 'swtpm outlived the agent');
          const qmp = await QmpClient.connect(join(home, 'qmp.sock'));
          try {
            const tpms = (await qmp.execute('query-tpm')) as {
              id: string;
              model: string;
              options: { type: string };
            }[];
            assert.equal(tpms.length, 1, JSON.stringify(tpms));
            assert.equal(tpms[0]?.model, 'tpm-crb');
            assert.equal(tpms[0]?.options.type, 'emulator');
            await qmp.execute('quit').catch((err: unknown) => t.diagnostic(`quit: ${String(err)}`));
            quit = true;
          } finally {
            await qmp.close().catch(() => undefined);
          }
          // QEMU ends first. QEMU 7.2 can hang in `quit` for good: its main thread waits in
          // pause_all_vcpus() for a vCPU that sits in a synchronous pflash write (OVMF
          // saving a variable) which only the main loop could complete — seen here under
          // load, with gdb. The product's powerOff() sends SIGKILL after 10 s for that reason;
          // the test does the same: what is under test is what swtpm does once QEMU is gone.
          if (!(await waitUntil(() => !isPidAlive(qemuPid), 15_000))) {
            t.diagnostic('QEMU did not end on quit within 15 s: SIGKILL, as powerOff() does');
            process.kill(qemuPid, 'SIGKILL');
          }
          assert.ok(await waitUntil(() => !isPidAlive(qemuPid), 30_000), 'QEMU ended');
          // --terminate: swtpm ends once its control connection from QEMU is gone.
          const swtpmEnded = await waitUntil(() => runningSwtpm(home) === undefined, 60_000);
          assert.ok(swtpmEnded, `swtpm ended with QEMU; its log: ${tail(join(home, VTPM_FILES.log))}`);

          const stateDir = join(home, VTPM_FILES.stateDir);
          const files = readdirSync(stateDir);
          assert.ok(
            files.some((f) => f.startsWith('tpm2-00.permall')),
            `state files: ${files.join(', ')}`,
          );
          // The key swtpm got: derived from the home DEK, which only the KEK unwraps.
          const record = JSON.parse(readFileSync(join(home, 'spec.json'), 'utf8')) as { bundle: unknown };
          const deks = unwrapDeks(kek, parseBundle(record.bundle, 'spec.json'));
          const key = vtpmStateKey(deks.home);
          assert.notEqual(
            await initWith(stateDir, work, undefined),
            0,
            'without the key swtpm cannot read the state',
          );
          assert.notEqual(
            await initWith(stateDir, work, Buffer.from(randomBytes(32).toString('hex'))),
            0,
            'with another key neither',
          );
          assert.equal(await initWith(stateDir, work, key), 0, 'with the VM’s key it can');
          // The encrypted variable store holds the key set's PK: written before encryption.
          const plainVars = join(work, 'vars.fd');
          await convertNvram({
            src: { path: join(home, 'OVMF_VARS.g0.luks'), dek: deks.home },
            dst: { path: plainVars },
          });
          const sb = readSecureBootState(readFileSync(plainVars));
          assert.equal(
            sb.pk[0]?.type === 'x509' ? sb.pk[0].sha256 : '',
            certificateFingerprint256(keys.pk.certPem),
          );
          assert.equal(sb.secureBootAtNextBoot, true);
        } finally {
          if (!quit) {
            driver = await openQemuDriver(dataDir, { accel: 'tcg' });
            await driver.putKey('p/kek', kek).catch(() => undefined);
            await driver.powerOff(id).catch(() => undefined);
            await driver.close();
          }
        }
      },
    );
  },
);
