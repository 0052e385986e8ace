// buildQemuArgv is pure: the same spec and host give the same argv, pinned here option by
// option. That QEMU 7.2 accepts these argvs is proven by vm-process.test.ts, which boots them.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HypersealError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { createDecipheriv, randomBytes } from 'node:crypto';
import type { HostRuntime, VmSpec } from './command-line.js';
import { buildQemuArgv, canonicalUuid, escapeOptionValue, sealSecretForQemu } from './command-line.js';

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

void test('a plain VM gets no secret objects at all', () => {
  const argv = buildQemuArgv(EFI, TCG);
  assert.ok(!argv.includes('-object'));
  assert.ok(!argv.some((a) => /secret|key-secret|password/i.test(a)));
  assert.equal(canonicalUuid('6F1C1E3A-2B7D-4C55-9A8E-0123456789AB'), '6f1c1e3a-2b7d-4c55-9a8e-0123456789ab');
});

void test('sealSecretForQemu: AES-256-CBC, PKCS#7, base64 — what QEMU decrypts with keyid/iv', () => {
  const master = randomBytes(32);
  const passphrase = Buffer.from('ab'.repeat(32));
  const sealed = sealSecretForQemu(master, passphrase);
  const iv = Buffer.from(sealed.iv, 'base64');
  const data = Buffer.from(sealed.data, 'base64');
  assert.equal(iv.length, 16);
  assert.equal(data.length, 80); // 64 bytes + a whole block of padding
  const d = createDecipheriv('aes-256-cbc', master, iv);
  assert.deepEqual(Buffer.concat([d.update(data), d.final()]), passphrase);
  // A fresh IV each time: the same passphrase never seals to the same bytes.
  assert.notEqual(sealSecretForQemu(master, passphrase).data, sealed.data);
  assertCode(() => sealSecretForQemu(randomBytes(16), passphrase), 'HS_ERR_INVALID_ARGUMENT');
  assertCode(() => sealSecretForQemu(master, Buffer.alloc(0)), 'HS_ERR_INVALID_ARGUMENT');
});

void test('encrypted disk and NVRAM: master key from its file, sealed secrets, LUKS nodes', () => {
  const master = randomBytes(32);
  const disk = sealSecretForQemu(master, Buffer.from('1'.repeat(64)));
  const nvram = sealSecretForQemu(master, Buffer.from('2'.repeat(64)));
  const spec: VmSpec = {
    ...EFI,
    disks: [
      { id: 'disk0', path: '/vms/web-01/disk0.qcow2', format: 'qcow2', encryption: disk },
      { id: 'nvram', path: '/vms/web-01/plain.qcow2', format: 'qcow2' },
    ],
    nvramEncryption: nvram,
  };
  const argv = buildQemuArgv(spec, { ...TCG, masterKeyFile: '/vms/web-01/.hs-secret-x,y' });
  // Objects first, before the block nodes naming them; ciphertext only.
  assert.deepEqual(values(argv, '-object'), [
    'secret,id=hs-master,file=/vms/web-01/.hs-secret-x,,y,format=raw',
    `secret,id=hs-fw-vars-sec,data=${nvram.data},keyid=hs-master,iv=${nvram.iv},format=base64`,
    `secret,id=hs-sec-disk0,data=${disk.data},keyid=hs-master,iv=${disk.iv},format=base64`,
  ]);
  assert.ok(argv.indexOf('-object') < argv.indexOf('-blockdev'));
  const nodes = values(argv, '-blockdev').map((b) => JSON.parse(b) as Record<string, unknown>);
  assert.deepEqual(
    nodes.find((n) => n['node-name'] === 'hs-fw-vars'),
    { driver: 'luks', 'node-name': 'hs-fw-vars', file: 'hs-fw-vars-file', 'key-secret': 'hs-fw-vars-sec' },
  );
  assert.deepEqual(
    nodes.find((n) => n['node-name'] === 'drive-disk0'),
    {
      driver: 'qcow2',
      'node-name': 'drive-disk0',
      file: 'drive-disk0-file',
      encrypt: { format: 'luks', 'key-secret': 'hs-sec-disk0' },
    },
  );
  // A disk named "nvram" does not collide with the NVRAM's secret, and stays plain.
  assert.deepEqual(
    nodes.find((n) => n['node-name'] === 'drive-nvram'),
    { driver: 'qcow2', 'node-name': 'drive-nvram', file: 'drive-nvram-file' },
  );
  // The master key file alone (for hot-plugging encrypted disks later) is fine.
  assert.deepEqual(values(buildQemuArgv(EFI, { ...TCG, masterKeyFile: '/k' }), '-object'), [
    'secret,id=hs-master,file=/k,format=raw',
  ]);

  const withDisk = (encryption: { data: string; iv: string }): VmSpec => ({
    ...EFI,
    disks: [{ id: 'disk0', path: '/d.qcow2', format: 'qcow2', encryption }],
  });
  const host = { ...TCG, masterKeyFile: '/k' };
  assertCode(() => buildQemuArgv(spec, TCG), 'HS_ERR_QEMU_INVALID_SPEC', 'masterKey');
  assertCode(
    () => buildQemuArgv(spec, { ...TCG, masterKeyFile: 'k' }),
    'HS_ERR_QEMU_INVALID_SPEC',
    'masterKeyFile',
  );
  assertCode(
    () => buildQemuArgv(withDisk({ ...disk, data: `${disk.data},id=x` }), host),
    'HS_ERR_QEMU_INVALID_SPEC',
    'disks[0].encryption.data',
  );
  assertCode(
    () => buildQemuArgv(withDisk({ ...disk, data: Buffer.alloc(15).toString('base64') }), host),
    'HS_ERR_QEMU_INVALID_SPEC',
    'disks[0].encryption.data',
  );
  assertCode(
    () => buildQemuArgv(withDisk({ ...disk, iv: Buffer.alloc(8).toString('base64') }), host),
    'HS_ERR_QEMU_INVALID_SPEC',
    'disks[0].encryption.iv',
  );
  const { nvramPath: _unused, ...rest } = EFI;
  assertCode(
    () => buildQemuArgv({ ...rest, firmware: 'bios', nvramEncryption: nvram }, host),
    'HS_ERR_QEMU_INVALID_SPEC',
    'nvramEncryption',
  );
});

void test('serial console on a unix socket instead of a file', () => {
  const { serialLogPath: _unused, ...rest } = EFI;
  const argv = buildQemuArgv({ ...rest, serialSocketPath: '/run/hs/web,01.serial' }, TCG);
  assert.deepEqual(
    values(argv, '-chardev')[0],
    'socket,id=hs-serial0,path=/run/hs/web,,01.serial,server=on,wait=off',
  );
  assert.deepEqual(values(argv, '-serial'), ['chardev:hs-serial0']);
  assertCode(() => buildQemuArgv(rest, TCG), 'HS_ERR_QEMU_INVALID_SPEC', 'serialLogPath');
  assertCode(
    () => buildQemuArgv({ ...EFI, serialSocketPath: '/run/hs/s' }, TCG),
    'HS_ERR_QEMU_INVALID_SPEC',
    'serialLogPath',
  );
  assertCode(
    () => buildQemuArgv({ ...rest, serialSocketPath: '/' + 's'.repeat(107) }, TCG),
    'HS_ERR_QEMU_INVALID_SPEC',
    'serialSocketPath',
  );
});
