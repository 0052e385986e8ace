/**
 * Builds the QEMU argv for a VM from a typed spec. Pure: no file system, no environment;
 * what depends on the host (accelerator, firmware paths) comes in as arguments, so the same
 * spec gives the same argv and the tests can pin it.
 *
 * Never a secret on the command line: /proc/PID/cmdline is world-readable. Key material
 * reaches QEMU only over QMP (`object-add` of a `secret` object encrypted with a master key
 * passed on an inherited fd), so this builder has no way to emit `-object secret` at all.
 */
import { isAbsolute } from 'node:path';
import { HypersealError } from '../errors.js';

export type Accelerator = 'kvm' | 'tcg';
export type FirmwareKind = 'bios' | 'efi';

export interface DiskSpec {
  /** Device id (QOM id of the virtio-blk device), e.g. "disk0". */
  id: string;
  /** Absolute path of the image. */
  path: string;
  format: 'qcow2';
}

export interface NicSpec {
  id: string;
  /** Unicast MAC, "52:54:00:12:34:56". */
  mac: string;
  /** Logical network name the NIC belongs to (recorded; see HostRuntime.nicBackend). */
  network: string;
}

export interface VmSpec {
  /** Human name, [A-Za-z0-9][A-Za-z0-9._-]{0,63}. */
  name: string;
  uuid: string;
  cpus: number;
  memoryMiB: number;
  firmware: FirmwareKind;
  secureBoot?: boolean;
  disks: readonly DiskSpec[];
  nics: readonly NicSpec[];
  serialLogPath: string;
  qmpSocketPath: string;
  pidFilePath: string;
  /** Per-VM copy of the OVMF variable store; required for `efi`. */
  nvramPath?: string;
}

/** How the NICs are realised. Neither touches the host's network configuration. */
export type NicBackend =
  /** QEMU user-mode networking (slirp) with restrict=on: the guest gets DHCP but cannot reach the host or beyond. */
  | 'user-isolated'
  /** No NIC devices at all (the `-nic none` equivalent); the spec's NICs are ignored. */
  | 'none';

export interface HostRuntime {
  accel: Accelerator;
  /** OVMF code image for `efi` VMs, and whether it needs SMM (the secure-boot build does). */
  ovmf?: { code: string; requiresSmm: boolean };
  /**
   * A 2-byte file holding 0x03f8 little-endian, for SeaBIOS's `etc/sercon-port`. SeaBIOS
   * prints nothing on the serial port by default (-nodefaults leaves no VGA for it to
   * write to); with this fw_cfg file it mirrors its console there. The file form is needed:
   * SeaBIOS reads the item as a raw little-endian integer, and `string=0x3f8` is ASCII.
   */
  biosSerialConsoleFile?: string;
  /** Default 'user-isolated'. */
  nicBackend?: NicBackend;
  /** Start with vCPUs stopped (-S) so the agent can set things up over QMP before `cont`. Default true. */
  startPaused?: boolean;
  /** pcie-root-ports created up front, because the q35 root bus is not hot-pluggable. Default 2. */
  hotplugPorts?: number;
  /** QEMU's seccomp sandbox. Default true. */
  sandbox?: boolean;
}

export const LIMITS = {
  minMemoryMiB: 32,
  maxMemoryMiB: 4 * 1024 * 1024,
  /** q35 without an IOMMU for x2APIC interrupt remapping tops out at 255 vCPUs. */
  maxCpus: 255,
  maxHotplugPorts: 16,
  /** sockaddr_un.sun_path is 108 bytes including the terminating NUL. */
  maxUnixSocketPathBytes: 107,
} as const;

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** QOM ids must start with a letter; "hs-" is ours (internal devices and chardevs). */
const DEVICE_ID = /^[A-Za-z][A-Za-z0-9_-]{0,31}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const MAC = /^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$/;
// eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
const CONTROL = /[\u0000-\u001f\u007f]/;

function invalid(message: string, field: string): never {
  throw new HypersealError('HS_ERR_QEMU_INVALID_SPEC', message, { field });
}

/** Lower-case canonical form; what QEMU's `query-uuid` returns and what the agent matches on. */
export function canonicalUuid(uuid: string): string {
  const u = uuid.toLowerCase();
  if (!UUID.test(u)) invalid(`"${uuid}" is not a UUID`, 'uuid');
  return u;
}

function checkPath(path: string, field: string): string {
  if (typeof path !== 'string' || path.length === 0) invalid(`${field} is empty`, field);
  if (!isAbsolute(path)) {
    // QEMU resolves relative paths against its cwd; an agent re-attaching after a restart
    // may run elsewhere, so only absolute paths mean the same thing for both.
    invalid(`${field} must be an absolute path: ${JSON.stringify(path)}`, field);
  }
  if (CONTROL.test(path)) invalid(`${field} contains a control character`, field);
  return path;
}

/** QEMU option values escape ',' by doubling it (`path=/a,,b` is "/a,b"). */
export function escapeOptionValue(value: string): string {
  return value.replaceAll(',', ',,');
}

function checkInteger(v: number, min: number, max: number, field: string): number {
  if (!Number.isSafeInteger(v) || v < min || v > max) {
    invalid(`${field} must be an integer from ${min} to ${max}, not ${v}`, field);
  }
  return v;
}

function checkMac(mac: string, field: string): string {
  const m = mac.toLowerCase();
  if (!MAC.test(m)) invalid(`${field} "${mac}" is not a MAC address`, field);
  if ((parseInt(m.slice(0, 2), 16) & 1) === 1) invalid(`${field} "${mac}" is a multicast address`, field);
  return m;
}

/** Node names of a disk's block graph: "drive-<id>" (format) over "drive-<id>-file" (protocol). */
export const diskNodeName = (id: string): string => `drive-${id}`;
export const netdevId = (id: string): string => `netdev-${id}`;

export const INTERNAL_IDS = {
  qmpChardev: 'hs-qmp',
  serialChardev: 'hs-serial0',
  firmwareCode: 'hs-fw-code',
  firmwareVars: 'hs-fw-vars',
  rootPortPrefix: 'hs-rp',
} as const;

/**
 * The argv (without the binary) for `spec` on a host described by `host`. Throws
 * HS_ERR_QEMU_INVALID_SPEC naming the offending field.
 */
export function buildQemuArgv(spec: VmSpec, host: HostRuntime): string[] {
  if (!NAME.test(spec.name)) invalid(`VM name "${spec.name}" must match ${NAME.source}`, 'name');
  const uuid = canonicalUuid(spec.uuid);
  const cpus = checkInteger(spec.cpus, 1, LIMITS.maxCpus, 'cpus');
  const memoryMiB = checkInteger(spec.memoryMiB, LIMITS.minMemoryMiB, LIMITS.maxMemoryMiB, 'memoryMiB');
  const serialLog = checkPath(spec.serialLogPath, 'serialLogPath');
  const qmpSocket = checkPath(spec.qmpSocketPath, 'qmpSocketPath');
  if (Buffer.byteLength(qmpSocket) > LIMITS.maxUnixSocketPathBytes) {
    invalid(
      `qmpSocketPath is ${Buffer.byteLength(qmpSocket)} bytes; a unix socket path may have at most ${LIMITS.maxUnixSocketPathBytes}`,
      'qmpSocketPath',
    );
  }
  const pidFile = checkPath(spec.pidFilePath, 'pidFilePath');
  const hotplugPorts = checkInteger(host.hotplugPorts ?? 2, 0, LIMITS.maxHotplugPorts, 'hotplugPorts');
  if (host.accel !== 'kvm' && host.accel !== 'tcg')
    invalid(`unknown accelerator ${String(host.accel)}`, 'accel');

  const ids = new Set<string>();
  const checkId = (id: string, field: string): void => {
    if (!DEVICE_ID.test(id)) invalid(`${field} "${id}" must match ${DEVICE_ID.source}`, field);
    if (id.startsWith('hs-')) invalid(`${field} "${id}": ids starting with "hs-" are reserved`, field);
    if (ids.has(id)) invalid(`${field} "${id}" is used twice`, field);
    ids.add(id);
  };

  const argv: string[] = ['-name', `guest=${escapeOptionValue(spec.name)}`, '-uuid', uuid];

  // The machine. dump-guest-core=off keeps guest RAM (and the keys a guest holds) out of
  // QEMU core dumps; mem-merge=off keeps guest pages out of KSM, a cross-VM side channel.
  const machine = ['q35', 'dump-guest-core=off', 'mem-merge=off'];
  const firmwareArgs: string[] = [];
  if (spec.firmware === 'efi') {
    if (host.ovmf === undefined) {
      throw new HypersealError(
        'HS_ERR_QEMU_FIRMWARE_NOT_FOUND',
        `no OVMF firmware given for EFI VM ${spec.name}`,
      );
    }
    if (spec.nvramPath === undefined) invalid(`EFI VM ${spec.name} needs nvramPath`, 'nvramPath');
    const nvram = checkPath(spec.nvramPath, 'nvramPath');
    const code = checkPath(host.ovmf.code, 'ovmf.code');
    if (spec.secureBoot === true && !host.ovmf.requiresSmm) {
      // Debian's secure-boot OVMF build is the one that needs SMM; a build without it
      // cannot protect its variable store from the guest, so Secure Boot would be moot.
      invalid(`Secure Boot needs the SMM build of OVMF, not ${code}`, 'ovmf.code');
    }
    // pflash through -blockdev (not -drive if=pflash) so the variable store can later sit
    // on a LUKS node like any disk (qemu-experiments §2.4): same graph, no special case.
    machine.push(`pflash0=${INTERNAL_IDS.firmwareCode}`, `pflash1=${INTERNAL_IDS.firmwareVars}`);
    // Secure-boot OVMF without SMM hangs silently: zero bytes on serial (qemu-experiments §1.6).
    machine.push(`smm=${host.ovmf.requiresSmm ? 'on' : 'off'}`);
    firmwareArgs.push(
      '-blockdev',
      JSON.stringify({
        driver: 'file',
        'node-name': `${INTERNAL_IDS.firmwareCode}-file`,
        filename: code,
        'read-only': true,
      }),
      '-blockdev',
      JSON.stringify({
        driver: 'raw',
        'node-name': INTERNAL_IDS.firmwareCode,
        file: `${INTERNAL_IDS.firmwareCode}-file`,
        'read-only': true,
      }),
      '-blockdev',
      JSON.stringify({ driver: 'file', 'node-name': `${INTERNAL_IDS.firmwareVars}-file`, filename: nvram }),
      '-blockdev',
      JSON.stringify({
        driver: 'raw',
        'node-name': INTERNAL_IDS.firmwareVars,
        file: `${INTERNAL_IDS.firmwareVars}-file`,
      }),
    );
    if (host.ovmf.requiresSmm) {
      // Only SMM code may write the variable store: what makes the enrolled keys binding.
      firmwareArgs.push('-global', 'driver=cfi.pflash01,property=secure,value=on');
    }
  } else if (spec.firmware === 'bios') {
    if (spec.secureBoot === true)
      invalid(`Secure Boot needs firmware "efi"; VM ${spec.name} is "bios"`, 'secureBoot');
    machine.push('smm=off');
    if (host.biosSerialConsoleFile !== undefined) {
      // QEMU warns 'externally provided fw_cfg item names should be prefixed with "opt/"':
      // harmless, etc/sercon-port is SeaBIOS's own name for this item.
      firmwareArgs.push(
        '-fw_cfg',
        `name=etc/sercon-port,file=${escapeOptionValue(checkPath(host.biosSerialConsoleFile, 'biosSerialConsoleFile'))}`,
      );
    }
  } else {
    invalid(`firmware must be "bios" or "efi", not ${String(spec.firmware)}`, 'firmware');
  }

  argv.push('-machine', machine.join(','), '-accel', host.accel);
  // kvm: the host CPU model (AES-NI and all) for the guest. tcg: QEMU's default model,
  // named so the argv says what the guest gets.
  argv.push('-cpu', host.accel === 'kvm' ? 'host' : 'qemu64');
  argv.push('-smp', `cpus=${cpus}`, '-m', `${memoryMiB}M`);
  argv.push('-nodefaults', '-no-user-config', '-display', 'none');
  // Timestamps on QEMU's own stderr lines (kept in the VM's qemu log).
  argv.push('-msg', 'timestamp=on');
  if (host.sandbox ?? true) {
    argv.push('-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny');
  }
  if (host.startPaused ?? true) argv.push('-S');
  argv.push(...firmwareArgs);

  for (let i = 1; i <= hotplugPorts; i++) {
    argv.push('-device', `pcie-root-port,id=${INTERNAL_IDS.rootPortPrefix}${i},bus=pcie.0,chassis=${i}`);
  }

  spec.disks.forEach((disk, i) => {
    const field = `disks[${i}]`;
    checkId(disk.id, `${field}.id`);
    if (disk.format !== 'qcow2') invalid(`${field}.format must be "qcow2"`, `${field}.format`);
    const path = checkPath(disk.path, `${field}.path`);
    const node = diskNodeName(disk.id);
    // JSON -blockdev: a path needs no escaping at all there.
    argv.push(
      '-blockdev',
      JSON.stringify({ driver: 'file', 'node-name': `${node}-file`, filename: path }),
      '-blockdev',
      JSON.stringify({ driver: 'qcow2', 'node-name': node, file: `${node}-file` }),
      '-device',
      `virtio-blk-pci,drive=${node},id=${disk.id},bootindex=${i + 1}`,
    );
  });

  const nicBackend = host.nicBackend ?? 'user-isolated';
  spec.nics.forEach((nic, i) => {
    const field = `nics[${i}]`;
    checkId(nic.id, `${field}.id`);
    const mac = checkMac(nic.mac, `${field}.mac`);
    if (typeof nic.network !== 'string' || nic.network.length === 0 || CONTROL.test(nic.network)) {
      invalid(`${field}.network must be a non-empty name`, `${field}.network`);
    }
    if (nicBackend === 'none') return;
    // romfile= (empty): no iPXE option ROM, so the firmware never tries network boot
    // (it delays every boot) and nothing depends on the ipxe-qemu package.
    argv.push(
      '-netdev',
      `user,id=${netdevId(nic.id)},restrict=on`,
      '-device',
      `virtio-net-pci,netdev=${netdevId(nic.id)},id=${nic.id},mac=${mac},romfile=`,
    );
  });

  argv.push(
    '-chardev',
    `file,id=${INTERNAL_IDS.serialChardev},path=${escapeOptionValue(serialLog)}`,
    '-serial',
    `chardev:${INTERNAL_IDS.serialChardev}`,
    '-chardev',
    `socket,id=${INTERNAL_IDS.qmpChardev},path=${escapeOptionValue(qmpSocket)},server=on,wait=off`,
    '-mon',
    `chardev=${INTERNAL_IDS.qmpChardev},mode=control`,
    // A plain argument, not an option list: no comma escaping.
    '-pidfile',
    pidFile,
  );
  return argv;
}
