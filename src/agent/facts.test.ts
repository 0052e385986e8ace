// HostFacts as the agent reports them: the src/qemu/firmware.ts probes mapped onto the
// contract, checked against a fixture root (cpuinfo, efivars, /dev/kvm) and this host.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { agentVersion, collectHostFacts } from './facts.js';
import { SimDriver } from './sim-driver.js';
import { tempDir } from './testing.js';

const dir = tempDir('facts');
after(() => dir.remove());

void test('facts map the host probes: AES-NI, KVM, UEFI Secure Boot, versions', async () => {
  const root = join(dir.path, 'root');
  mkdirSync(join(root, 'proc'), { recursive: true });
  mkdirSync(join(root, 'dev'), { recursive: true });
  mkdirSync(join(root, 'sys/firmware/efi/efivars'), { recursive: true });
  writeFileSync(join(root, 'proc/cpuinfo'), 'processor\t: 0\nflags\t\t: fpu sse2 aes avx vmx\n');
  writeFileSync(join(root, 'dev/kvm'), ''); // opens read-write, and the CPU has vmx
  writeFileSync(
    join(root, 'sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c'),
    Buffer.from([0x06, 0, 0, 0, 1]),
  );
  const driver = SimDriver.open(dir.path);
  const facts = await collectHostFacts(driver, { root, qemuBinary: join(dir.path, 'no-qemu-here') });
  assert.equal(facts.driver, 'sim');
  assert.equal(facts.simulated, true);
  assert.equal(facts.accel, 'none', 'the accelerator is the driver’s, not the host’s');
  assert.equal(facts.cpuAesNi, true);
  assert.equal(facts.kvmUsable, true);
  assert.equal(facts.uefiSecureBoot, 'enabled');
  assert.equal(facts.qemuVersion, null, 'a missing QEMU is null, not an error');
  assert.equal(facts.agentVersion, agentVersion());
  assert.match(facts.agentVersion, /^\d+\.\d+\.\d+/);

  const bare = join(dir.path, 'bare');
  mkdirSync(join(bare, 'proc'), { recursive: true });
  writeFileSync(join(bare, 'proc/cpuinfo'), 'flags\t\t: fpu sse2\n');
  const none = await collectHostFacts(driver, { root: bare, qemuBinary: join(dir.path, 'no-qemu-here') });
  assert.equal(none.cpuAesNi, false);
  assert.equal(none.kvmUsable, false);
  assert.equal(none.uefiSecureBoot, 'not-uefi');
  await driver.close();
});

void test('facts of this host', async () => {
  const driver = SimDriver.open(dir.path);
  const facts = await collectHostFacts(driver);
  assert.equal(typeof facts.hostname, 'string');
  assert.equal(typeof facts.kvmUsable, 'boolean');
  assert.ok(facts.qemuVersion === null || /^\d+\.\d+\.\d+$/.test(facts.qemuVersion));
  await driver.close();
});
