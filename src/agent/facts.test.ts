// Host fact probes against fixture files (cpuinfo, efivars), and the real host's facts.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import {
  agentVersion,
  collectHostFacts,
  cpuHasAesNi,
  kvmUsable,
  parseQemuVersion,
  uefiSecureBoot,
} from './facts.js';
import { SimDriver } from './sim-driver.js';
import { tempDir } from './testing.js';

const dir = tempDir('facts');
after(() => dir.remove());

void test('AES-NI is read from the cpuinfo flags line', () => {
  const withAes = join(dir.path, 'cpuinfo-aes');
  writeFileSync(withAes, 'processor\t: 0\nflags\t\t: fpu vme sse2 aes avx\nbugs\t\t: none\n');
  const without = join(dir.path, 'cpuinfo-noaes');
  writeFileSync(without, 'processor\t: 0\nflags\t\t: fpu vme sse2 avx vaes_like\nmodel name\t: aes-less\n');
  assert.equal(cpuHasAesNi(withAes), true);
  assert.equal(cpuHasAesNi(without), false);
  assert.equal(cpuHasAesNi(join(dir.path, 'absent')), false);
});

void test('UEFI Secure Boot state comes from the SecureBoot EFI variable', () => {
  const efi = join(dir.path, 'efi');
  const vars = join(efi, 'efivars');
  mkdirSync(vars, { recursive: true });
  assert.equal(uefiSecureBoot(join(dir.path, 'no-efi')), 'not-uefi');
  assert.equal(uefiSecureBoot(efi), 'unknown', 'UEFI without the variable');
  const variable = join(vars, 'SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c');
  writeFileSync(variable, Buffer.from([0x06, 0, 0, 0, 1]));
  assert.equal(uefiSecureBoot(efi), 'enabled');
  writeFileSync(variable, Buffer.from([0x06, 0, 0, 0, 0]));
  assert.equal(uefiSecureBoot(efi), 'disabled');
});

void test('versions and KVM probes', () => {
  assert.equal(
    parseQemuVersion('QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n'),
    '7.2.22',
  );
  assert.equal(parseQemuVersion(null), null);
  assert.equal(kvmUsable(join(dir.path, 'no-kvm')), false);
  assert.match(agentVersion(), /^\d+\.\d+\.\d+/);
});

void test('facts of this host with the sim driver', async () => {
  const driver = SimDriver.open(dir.path);
  const facts = await collectHostFacts(driver, { qemuBinary: join(dir.path, 'no-qemu-here') });
  assert.equal(facts.driver, 'sim');
  assert.equal(facts.simulated, true);
  assert.equal(facts.accel, 'none');
  assert.equal(facts.qemuVersion, null, 'a missing QEMU is null, not an error');
  await driver.close();
});
