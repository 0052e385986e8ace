// buildQemuArgv is pure: the same spec and host give the same argv, pinned here option by
// option. That QEMU 7.2 accepts these argvs is proven by vm-process.test.ts, which boots them.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HypersealError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import type { HostRuntime, VmSpec } from './command-line.js';
import { buildQemuArgv, canonicalUuid, escapeOptionValue } from './command-line.js';

const EFI: VmSpec = {
  name: 'web-01',
  uuid: '6F1C1E3A-2B7D-4C55-9A8E-0123456789AB',
  cpus: 2,
  memoryMiB: 128,
  firmware: 'efi',
  disks: [{ id: 'disk0', path: '/vms/web-01/disk0.qcow2', format: 'qcow2' }],
  nics: [{ id: 'nic0', mac: '52:54:00:AB:CD:EF', network: 'PCI' }],
  serialLogPath: '/vms/web-01/serial.log',
  qmpSocketPath: '/run/hs/web-01.qmp',
  pidFilePath: '/run/hs/web-01.pid',
  nvramPath: '/vms/web-01/OVMF_VARS.fd',
};
const TCG: HostRuntime = {
  accel: 'tcg',
  ovmf: { code: '/usr/share/OVMF/OVMF_CODE_4M.fd', requiresSmm: false },
};

/** The value after each occurrence of `flag`. */
const values = (argv: string[], flag: string): string[] =>
  argv.flatMap((a, i) => (a === flag && argv[i + 1] !== undefined ? [argv[i + 1] as string] : []));

function assertCode(fn: () => unknown, code: ErrorCode, field?: string): HypersealError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof HypersealError, `expected ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  if (field !== undefined) assert.equal(caught.details?.field, field, caught.message);
  return caught;
}

void test('EFI VM: the whole argv, pinned', () => {
  // One option and its value per line (prettier would put each on its own).
  // prettier-ignore
  assert.deepEqual(buildQemuArgv(EFI, TCG), [
    '-name', 'guest=web-01',
    '-uuid', '6f1c1e3a-2b7d-4c55-9a8e-0123456789ab',
    '-machine', 'q35,dump-guest-core=off,mem-merge=off,pflash0=hs-fw-code,pflash1=hs-fw-vars,smm=off',
    '-accel', 'tcg',
    '-cpu', 'qemu64',
    '-smp', 'cpus=2',
    '-m', '128M',
    '-nodefaults', '-no-user-config', '-display', 'none',
    '-msg', 'timestamp=on',
    '-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
    '-S',
    '-blockdev', '{"driver":"file","node-name":"hs-fw-code-file","filename":"/usr/share/OVMF/OVMF_CODE_4M.fd","read-only":true}',
    '-blockdev', '{"driver":"raw","node-name":"hs-fw-code","file":"hs-fw-code-file","read-only":true}',
    '-blockdev', '{"driver":"file","node-name":"hs-fw-vars-file","filename":"/vms/web-01/OVMF_VARS.fd"}',
    '-blockdev', '{"driver":"raw","node-name":"hs-fw-vars","file":"hs-fw-vars-file"}',
    '-device', 'pcie-root-port,id=hs-rp1,bus=pcie.0,chassis=1',
    '-device', 'pcie-root-port,id=hs-rp2,bus=pcie.0,chassis=2',
    '-blockdev', '{"driver":"file","node-name":"drive-disk0-file","filename":"/vms/web-01/disk0.qcow2"}',
    '-blockdev', '{"driver":"qcow2","node-name":"drive-disk0","file":"drive-disk0-file"}',
    '-device', 'virtio-blk-pci,drive=drive-disk0,id=disk0,bootindex=1',
    '-netdev', 'user,id=netdev-nic0,restrict=on',
    '-device', 'virtio-net-pci,netdev=netdev-nic0,id=nic0,mac=52:54:00:ab:cd:ef,romfile=',
    '-chardev', 'file,id=hs-serial0,path=/vms/web-01/serial.log',
    '-serial', 'chardev:hs-serial0',
    '-chardev', 'socket,id=hs-qmp,path=/run/hs/web-01.qmp,server=on,wait=off',
    '-mon', 'chardev=hs-qmp,mode=control',
    '-pidfile', '/run/hs/web-01.pid',
  ]);
});

void test('Secure Boot: SMM, secure pflash, the given SB code image', () => {
  const argv = buildQemuArgv(
    { ...EFI, secureBoot: true },
    { accel: 'kvm', ovmf: { code: '/usr/share/OVMF/OVMF_CODE_4M.ms.fd', requiresSmm: true } },
  );
  assert.match(values(argv, '-machine')[0] ?? '', /,smm=on$/);
  assert.ok(values(argv, '-global').includes('driver=cfi.pflash01,property=secure,value=on'));
  assert.ok(values(argv, '-blockdev').some((b) => b.includes('OVMF_CODE_4M.ms.fd')));
  assert.deepEqual(values(argv, '-accel'), ['kvm']);
  assert.deepEqual(values(argv, '-cpu'), ['host']);
  // Secure Boot with a non-SMM build would be Secure Boot in name only.
  assertCode(() => buildQemuArgv({ ...EFI, secureBoot: true }, TCG), 'HS_ERR_QEMU_INVALID_SPEC', 'ovmf.code');
});

void test('BIOS VM: SeaBIOS serial console via fw_cfg, no pflash; secure boot refused', () => {
  const { nvramPath: _unused, ...rest } = EFI;
  const bios: VmSpec = { ...rest, firmware: 'bios' };
  const argv = buildQemuArgv(bios, {
    accel: 'tcg',
    biosSerialConsoleFile: '/run/hs/sercon,1.bin',
    startPaused: false,
  });
  assert.equal(values(argv, '-machine')[0], 'q35,dump-guest-core=off,mem-merge=off,smm=off');
  assert.deepEqual(values(argv, '-fw_cfg'), ['name=etc/sercon-port,file=/run/hs/sercon,,1.bin']);
  assert.ok(!argv.includes('-S'));
  assert.ok(!values(argv, '-blockdev').some((b) => b.includes('hs-fw')));
  assertCode(
    () => buildQemuArgv({ ...bios, secureBoot: true }, { accel: 'tcg' }),
    'HS_ERR_QEMU_INVALID_SPEC',
    'secureBoot',
  );
});

void test('options: no NICs with backend none, hot-plug ports, no sandbox, commas escaped', () => {
  const spec: VmSpec = {
    ...EFI,
    serialLogPath: '/vms/a,b/serial.log',
    qmpSocketPath: '/run/a,b/q.sock',
    pidFilePath: '/run/a,b/q.pid',
    disks: [
      { id: 'disk0', path: '/vms/a,b/d0.qcow2', format: 'qcow2' },
      { id: 'data', path: '/vms/a,b/"quoted".qcow2', format: 'qcow2' },
    ],
  };
  const argv = buildQemuArgv(spec, { ...TCG, nicBackend: 'none', hotplugPorts: 0, sandbox: false });
  assert.deepEqual(values(argv, '-netdev'), []);
  assert.ok(
    !values(argv, '-device').some((d) => d.startsWith('virtio-net') || d.startsWith('pcie-root-port')),
  );
  assert.ok(!argv.includes('-sandbox'));
  assert.deepEqual(values(argv, '-chardev'), [
    'file,id=hs-serial0,path=/vms/a,,b/serial.log',
    'socket,id=hs-qmp,path=/run/a,,b/q.sock,server=on,wait=off',
  ]);
  // -pidfile takes a plain path; -blockdev JSON needs no comma escaping.
  assert.deepEqual(values(argv, '-pidfile'), ['/run/a,b/q.pid']);
  const disks = values(argv, '-blockdev').filter(
    (b) => b.includes('"driver":"file"') && b.includes('drive-'),
  );
  assert.deepEqual(
    disks.map((b) => (JSON.parse(b) as { filename: string }).filename),
    ['/vms/a,b/d0.qcow2', '/vms/a,b/"quoted".qcow2'],
  );
  assert.deepEqual(
    values(argv, '-device').filter((d) => d.startsWith('virtio-blk')),
    [
      'virtio-blk-pci,drive=drive-disk0,id=disk0,bootindex=1',
      'virtio-blk-pci,drive=drive-data,id=data,bootindex=2',
    ],
  );
  assert.equal(escapeOptionValue('a,,b,'), 'a,,,,b,,');
});

void test('invalid specs are refused with the offending field', () => {
  const cases: [Partial<VmSpec> | ((s: VmSpec) => VmSpec), string, ErrorCode?][] = [
    [{ name: 'bad name' }, 'name'],
    [{ name: '' }, 'name'],
    [{ name: 'a,b' }, 'name'],
    [{ uuid: 'not-a-uuid' }, 'uuid'],
    [{ cpus: 0 }, 'cpus'],
    [{ cpus: 1.5 }, 'cpus'],
    [{ cpus: 256 }, 'cpus'],
    [{ memoryMiB: 16 }, 'memoryMiB'],
    [{ memoryMiB: Number.NaN }, 'memoryMiB'],
    [{ serialLogPath: 'serial.log' }, 'serialLogPath'],
    [{ pidFilePath: '/run/x\n.pid' }, 'pidFilePath'],
    [{ qmpSocketPath: '/' + 'q'.repeat(107) }, 'qmpSocketPath'],
    [{ nvramPath: 'vars.fd' }, 'nvramPath'],
    [({ nvramPath: _unused, ...s }) => s, 'nvramPath'],
    [{ disks: [{ id: '0disk', path: '/d.qcow2', format: 'qcow2' }] }, 'disks[0].id'],
    [{ disks: [{ id: 'hs-x', path: '/d.qcow2', format: 'qcow2' }] }, 'disks[0].id'],
    [{ disks: [{ id: 'd', path: 'rel.qcow2', format: 'qcow2' }] }, 'disks[0].path'],
    [{ disks: [{ id: 'd', path: '/d.raw', format: 'raw' as 'qcow2' }] }, 'disks[0].format'],
    [{ nics: [{ id: 'disk0', mac: '52:54:00:00:00:01', network: 'n' }] }, 'nics[0].id'],
    [{ nics: [{ id: 'n0', mac: '01:00:5e:00:00:01', network: 'n' }] }, 'nics[0].mac'],
    [{ nics: [{ id: 'n0', mac: '52:54:00:00:00', network: 'n' }] }, 'nics[0].mac'],
    [{ nics: [{ id: 'n0', mac: '52:54:00:00:00:01', network: '' }] }, 'nics[0].network'],
    [{ firmware: 'coreboot' as 'bios' }, 'firmware'],
  ];
  for (const [change, field] of cases) {
    const spec = typeof change === 'function' ? change(EFI) : { ...EFI, ...change };
    assertCode(() => buildQemuArgv(spec, TCG), 'HS_ERR_QEMU_INVALID_SPEC', field);
  }
  assertCode(() => buildQemuArgv(EFI, { accel: 'tcg' }), 'HS_ERR_QEMU_FIRMWARE_NOT_FOUND');
  assertCode(
    () => buildQemuArgv(EFI, { ...TCG, hotplugPorts: 17 }),
    'HS_ERR_QEMU_INVALID_SPEC',
    'hotplugPorts',
  );
  assertCode(
    () => buildQemuArgv(EFI, { ...TCG, accel: 'hvf' as 'tcg' }),
    'HS_ERR_QEMU_INVALID_SPEC',
    'accel',
  );
  // 107 bytes is the most a unix socket path may have.
  assert.ok(buildQemuArgv({ ...EFI, qmpSocketPath: '/' + 'q'.repeat(106) }, TCG).length > 0);
});

void test('no secret can reach the argv: no -object secret, nothing but the spec', () => {
  const argv = buildQemuArgv(EFI, TCG);
  assert.ok(!argv.includes('-object'));
  assert.ok(!argv.some((a) => /secret|key-secret|password/i.test(a)));
  assert.equal(canonicalUuid('6F1C1E3A-2B7D-4C55-9A8E-0123456789AB'), '6f1c1e3a-2b7d-4c55-9a8e-0123456789ab');
});
