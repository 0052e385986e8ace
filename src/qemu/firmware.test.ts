// Firmware discovery and host probes: against fixture trees for every branch, and against
// this host for what it really has (Debian 12: QEMU 7.2, ovmf 2022.11, no usable KVM).
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { HypersealError } from '../errors.js';
import type { OvmfBuild } from './firmware.js';
import {
  cpuHasAesNi,
  debianPackageVersion,
  discoverOvmf,
  hostFacts,
  hostSecureBootState,
  parseFirmwareDescriptor,
  parseQemuVersion,
  probeKvm,
  qemuVersion,
  selectOvmf,
} from './firmware.js';

const dir = mkdtempSync(join(tmpdir(), 'hs-fw-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function put(path: string, data: string | Buffer): string {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, data);
  return path;
}

/** A descriptor as Debian ships it (60-edk2-x86_64.json and friends). */
function descriptor(
  code: string,
  vars: string,
  features: string[],
  machines = ['pc-i440fx-*', 'pc-q35-*'],
): string {
  return JSON.stringify({
    description: `fixture ${features.join(' ')}`,
    'interface-types': ['uefi'],
    mapping: {
      device: 'flash',
      executable: { filename: code, format: 'raw' },
      'nvram-template': { filename: vars, format: 'raw' },
    },
    targets: [{ architecture: 'x86_64', machines }],
    features,
    tags: [],
  });
}

void test('descriptors: priority by file name, /etc masks /usr/share, missing files dropped', async () => {
  const fw = join(dir, 'fw');
  const code = put(join(fw, 'CODE.fd'), 'c');
  const sbCode = put(join(fw, 'CODE.sb.fd'), 's');
  const vars = put(join(fw, 'VARS.fd'), 'v');
  const msVars = put(join(fw, 'VARS.ms.fd'), 'm');
  const etc = join(dir, 'etc');
  const share = join(dir, 'share');
  put(
    join(share, '40-sb-enrolled.json'),
    descriptor(sbCode, msVars, ['secure-boot', 'enrolled-keys', 'requires-smm']),
  );
  put(join(share, '50-sb.json'), descriptor(sbCode, vars, ['secure-boot', 'requires-smm']));
  put(join(share, '60-plain.json'), descriptor(code, vars, ['acpi-s3']));
  put(join(share, '10-missing.json'), descriptor(join(fw, 'nope.fd'), vars, []));
  put(join(share, '20-aarch64.json'), descriptor(code, vars, [], ['virt-*']));
  put(join(share, '30-broken.json'), '{not json');
  put(join(share, '35-masked.json'), descriptor(code, vars, []));
  put(join(etc, '35-masked.json'), ''); // an empty file in /etc masks the shipped one
  const builds = await discoverOvmf({ descriptorDirs: [etc, share] });
  assert.deepEqual(
    builds.map((b) => [b.code, b.varsTemplate, b.secureBoot, b.enrolledKeys, b.requiresSmm]),
    [
      [sbCode, msVars, true, true, true],
      [sbCode, vars, true, false, true],
      [code, vars, false, false, false],
    ],
  );
  assert.equal(selectOvmf(builds, { secureBoot: false }).code, code);
  assert.equal(selectOvmf(builds, { secureBoot: true }).varsTemplate, msVars);
  assert.equal(selectOvmf(builds, { secureBoot: true, enrolledKeys: false }).varsTemplate, vars);
  assert.throws(
    () => selectOvmf(builds.slice(2), { secureBoot: true }),
    (e: unknown) => e instanceof HypersealError && e.code === 'HS_ERR_QEMU_FIRMWARE_NOT_FOUND',
  );
  // No descriptors at all: the well-known paths, if present.
  const fallback = await discoverOvmf({
    descriptorDirs: [join(dir, 'none')],
    wellKnown: [
      {
        description: 'x',
        code,
        varsTemplate: vars,
        secureBoot: false,
        enrolledKeys: false,
        requiresSmm: false,
      },
      {
        description: 'y',
        code: join(fw, 'gone.fd'),
        varsTemplate: vars,
        secureBoot: true,
        enrolledKeys: true,
        requiresSmm: true,
      },
    ],
  });
  assert.deepEqual(
    fallback.map((b) => [b.code, b.source]),
    [[code, 'well-known']],
  );
  assert.equal(parseFirmwareDescriptor({ 'interface-types': ['bios'] }, 'x'), undefined);
  assert.equal(parseFirmwareDescriptor([], 'x'), undefined);
});

void test('this host: Debian descriptors give a plain and a Secure Boot OVMF build', async () => {
  const builds = await discoverOvmf();
  if (builds.length === 0) return; // no ovmf package: nothing to check here
  const plain: OvmfBuild = selectOvmf(builds, { secureBoot: false });
  const sb = selectOvmf(builds, { secureBoot: true });
  assert.ok(existsSync(plain.code) && existsSync(plain.varsTemplate));
  assert.ok(sb.requiresSmm && sb.enrolledKeys);
  assert.notEqual(plain.code, sb.code);
});

void test('QEMU version: parsed from --version, and from this host', async () => {
  assert.deepEqual(
    parseQemuVersion(
      'QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n',
    ),
    { version: '7.2.22', major: 7, minor: 2, micro: 22, package: 'Debian 1:7.2+dfsg-7+deb12u18+b3' },
  );
  assert.deepEqual(parseQemuVersion('QEMU emulator version 9.1.0\n'), {
    version: '9.1.0',
    major: 9,
    minor: 1,
    micro: 0,
    package: undefined,
  });
  assert.equal(parseQemuVersion('bash: qemu: command not found'), undefined);
  const v = await qemuVersion();
  assert.ok(v.major >= 7, v.version);
  await assert.rejects(qemuVersion('/nonexistent/qemu-system-x86_64'), (e: unknown) => {
    return e instanceof HypersealError && e.code === 'HS_ERR_QEMU_TOOL_FAILED';
  });
  assert.equal(await debianPackageVersion('hyperseal-no-such-package'), undefined);
});

void test('KVM probe: device, permission, vmx/svm and the kvm_pvm trap', async () => {
  const root = join(dir, 'kvm');
  const cpuinfo = (flags: string): void => {
    put(
      join(root, 'proc/cpuinfo'),
      `processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu vme ${flags} sse2\n\n`,
    );
  };
  cpuinfo('aes svm');
  assert.match((await probeKvm({ root })).reason, /no \/dev\/kvm/);
  put(join(root, 'dev/kvm'), ''); // a regular file stands in for the device node
  assert.deepEqual(await probeKvm({ root }), { usable: true, reason: '/dev/kvm usable (svm)' });
  cpuinfo('aes hypervisor');
  assert.match((await probeKvm({ root })).reason, /no vmx\/svm/);
  mkdirSync(join(root, 'sys/module/kvm_pvm'), { recursive: true });
  const pvm = await probeKvm({ root });
  assert.equal(pvm.usable, false);
  assert.match(pvm.reason, /kvm_pvm/);
  assert.equal(await cpuHasAesNi({ root }), true);
  cpuinfo('hypervisor');
  assert.equal(await cpuHasAesNi({ root }), false);
  assert.equal(await cpuHasAesNi({ root: join(dir, 'empty') }), false);
});

void test('host Secure Boot state from efivarfs', async () => {
  const root = join(dir, 'efi');
  assert.equal(await hostSecureBootState({ root }), 'not-uefi');
  const efivars = join(root, 'sys/firmware/efi/efivars');
  mkdirSync(efivars, { recursive: true });
  assert.equal(await hostSecureBootState({ root }), 'unknown', 'efivarfs not mounted');
  put(join(efivars, 'BootCurrent-8be4df61-93ca-11d2-aa0d-00e098032b8c'), Buffer.from([6, 0, 0, 0, 1, 0]));
  assert.equal(await hostSecureBootState({ root }), 'disabled', 'UEFI without Secure Boot support');
  const sb = join(efivars, 'SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c');
  put(sb, Buffer.from([6, 0, 0, 0, 1]));
  assert.equal(await hostSecureBootState({ root }), 'enabled');
  put(sb, Buffer.from([6, 0, 0, 0, 0]));
  assert.equal(await hostSecureBootState({ root }), 'disabled');
  put(sb, Buffer.from([6, 0]));
  assert.equal(await hostSecureBootState({ root }), 'unknown');
});

void test('hostFacts on this host agree with /proc and /sys', async () => {
  const facts = await hostFacts();
  const flags = /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.split(/\s+/) ?? [];
  assert.equal(facts.aesNi, flags.includes('aes'));
  if (!flags.includes('vmx') && !flags.includes('svm'))
    assert.equal(facts.kvm.usable, false, facts.kvm.reason);
  assert.equal(facts.hostSecureBoot === 'not-uefi', !existsSync('/sys/firmware/efi'));
  assert.ok(facts.qemu !== undefined, facts.qemuError);
  if (existsSync('/usr/bin/dpkg-query') && existsSync('/usr/share/doc/ovmf')) {
    assert.match(facts.ovmfPackageVersion ?? '', /^\d{4}\.\d+/);
  }
});
