/**
 * Builds the QEMU argv for a VM from a typed spec. Pure: no file system, no environment;
 * what depends on the host (accelerator, firmware paths) comes in as arguments, so the same
 * spec gives the same argv and the tests can pin it.
 *
 * Never a plaintext secret on the command line: /proc/PID/cmdline is world-readable. An
 * encrypted VM gets one `secret` object read from a FIFO path (the per-process master key,
 * fed by secret-fifo.ts while QEMU starts, `HostRuntime.masterKeyFile`) and, per encrypted
 * disk and for the NVRAM, a `secret` object holding that disk's LUKS passphrase encrypted
 * under the master key (AES-256-CBC, `keyid`/`iv`, as libvirt does): ciphertext only, which
 * is worthless without a key that exists only in the agent's and QEMU's memory. Nothing
 * else a caller passes can become a `-object secret`: the builder makes them itself from
 * validated base64, and `sealSecretForQemu` is the one way to make those.
 */
import { createCipheriv, randomBytes } from 'node:crypto';
import { isAbsolute } from 'node:path';
import { HypersealError } from '../errors.js';

export type Accelerator = 'kvm' | 'tcg';
export type FirmwareKind = 'bios' | 'efi';

/**
 * A LUKS passphrase encrypted with the VM process's master key, in the form of QEMU's
 * `secret` object with `keyid`: AES-256-CBC with PKCS#7 padding, base64 ciphertext and IV.
 * Made by sealSecretForQemu().
 */
export interface SealedSecret {
  data: string;
  iv: string;
}

export interface DiskSpec {
  /** Device id (QOM id of the virtio-blk device), e.g. "disk0". */
  id: string;
  /** Absolute path of the image. */
  path: string;
  format: 'qcow2';
  /**
   * The image is qcow2 with LUKS encryption inside; this is its passphrase sealed under
   * the master key (needs HostRuntime.masterKeyFile).
   */
  encryption?: SealedSecret;
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
  /** The serial console goes to this file (QEMU truncates it at each start)… */
  serialLogPath?: string;
  /**
   * …or to a unix socket QEMU listens on (read by serial-socket.ts into memory), so that
   * an encrypted VM's console output never lands on disk. Exactly one of the two.
   */
  serialSocketPath?: string;
  qmpSocketPath: string;
  pidFilePath: string;
  /** Per-VM copy of the OVMF variable store; required for `efi`. */
  nvramPath?: string;
  /**
   * The variable store is a raw LUKS container (payload: the VARS image); this is its
   * passphrase sealed under the master key (needs HostRuntime.masterKeyFile).
   */
  nvramEncryption?: SealedSecret;
  /**
   * A vTPM 2.0: the control socket of the VM's swtpm (which the caller starts first).
   * Becomes `-chardev socket` + `-tpmdev emulator` + `-device tpm-crb`; EFI only.
   */
  tpmSocketPath?: string;
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
  /**
   * Start as a live-migration destination (`-incoming defer`): QEMU waits for QMP
   * `migrate-incoming` and runs the VM once its state has arrived. Replaces -S.
   */
  incoming?: boolean;
  /** With `incoming`: -S as well, the VM stays paused after its state arrived (local-disk migration). */
  incomingPaused?: boolean;
  /** QEMU's seccomp sandbox. Default true. */
  sandbox?: boolean;
  /**
   * Where QEMU reads the 32-byte master key (`-object secret,id=hs-master,file=…`): a FIFO
   * that secret-fifo.ts feeds while QEMU starts, never a regular file. Required when a disk
   * or the NVRAM is encrypted; harmless without (QMP `object-add` of secrets with
   * `keyid: hs-master` can then hot-plug encrypted disks).
   */
  masterKeyFile?: string;
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

/** Performance settings of a disk's protocol (file) node; the same with and without encryption. */
export interface BlockFileOptions {
  cache?: { direct: boolean };
  aio?: 'threads' | 'io_uring' | 'native';
}

/**
 * What disks' file nodes get: QEMU's defaults (host page cache, aio=threads). Measured
 * against cache.direct=on, io_uring and native AIO with and without encryption in
 * docs/disk-encryption-performance.md; bench/disk uses this to measure what VMs get.
 */
export function blockFileOptions(): BlockFileOptions {
  return {};
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
  masterKeySecret: 'hs-master',
  /** Not "hs-sec-nvram": that is the secret id of a disk named "nvram". */
  firmwareVarsSecret: 'hs-fw-vars-sec',
  tpmChardev: 'hs-tpm-chr',
  tpmDev: 'hs-tpm',
} as const;

/** The `secret` object holding disk `id`'s sealed LUKS passphrase. */
export const diskSecretId = (id: string): string => `hs-sec-${id}`;

/** AES-256 master key of one QEMU process. */
export const MASTER_KEY_BYTES = 32;

/**
 * Encrypts `passphrase` (a LUKS passphrase, see encrypted-images.ts luksPassphrase) under
 * `masterKey` for a QEMU `secret` object with `keyid` (crypto/secret_common.c): AES-256-CBC,
 * PKCS#7 padding, a fresh random IV, both base64.
 */
export function sealSecretForQemu(masterKey: Buffer, passphrase: Buffer): SealedSecret {
  if (!Buffer.isBuffer(masterKey) || masterKey.length !== MASTER_KEY_BYTES) {
    throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `the master key must be ${MASTER_KEY_BYTES} bytes`);
  }
  if (!Buffer.isBuffer(passphrase) || passphrase.length === 0) {
    throw new HypersealError('HS_ERR_INVALID_ARGUMENT', 'the passphrase to seal is empty');
  }
  const iv = randomBytes(16);
  const cipher = createCipheriv('aes-256-cbc', masterKey, iv);
  const data = Buffer.concat([cipher.update(passphrase), cipher.final()]);
  return { data: data.toString('base64'), iv: iv.toString('base64') };
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
/** QEMU reads secret data into memory; a LUKS passphrase is short. */
const MAX_SEALED_BYTES = 4096;

function checkSealed(sealed: SealedSecret, field: string): SealedSecret {
  const { data, iv } = sealed ?? {};
  if (typeof data !== 'string' || !BASE64.test(data) || data.length === 0) {
    invalid(`${field}.data must be base64`, `${field}.data`);
  }
  const bytes = Buffer.byteLength(data, 'base64');
  if (bytes % 16 !== 0 || bytes > MAX_SEALED_BYTES) {
    invalid(`${field}.data must be whole AES blocks (at most ${MAX_SEALED_BYTES} bytes)`, `${field}.data`);
  }
  if (typeof iv !== 'string' || !BASE64.test(iv) || Buffer.byteLength(iv, 'base64') !== 16) {
    invalid(`${field}.iv must be base64 of 16 bytes`, `${field}.iv`);
  }
  return { data, iv };
}

/** `-object secret` for a sealed passphrase: base64 has no ',' to escape. */
const sealedSecretObject = (id: string, s: SealedSecret): string =>
  `secret,id=${id},data=${s.data},keyid=${INTERNAL_IDS.masterKeySecret},iv=${s.iv},format=base64`;

function checkSocketPath(path: string, field: string): string {
  checkPath(path, field);
  if (Buffer.byteLength(path) > LIMITS.maxUnixSocketPathBytes) {
    invalid(
      `${field} is ${Buffer.byteLength(path)} bytes; a unix socket path may have at most ${LIMITS.maxUnixSocketPathBytes}`,
      field,
    );
  }
  return path;
}

/**
 * The argv (without the binary) for `spec` on a host described by `host`. Throws
 * HS_ERR_QEMU_INVALID_SPEC naming the offending field.
 */
export function buildQemuArgv(spec: VmSpec, host: HostRuntime): string[] {
  if (!NAME.test(spec.name)) invalid(`VM name "${spec.name}" must match ${NAME.source}`, 'name');
  const uuid = canonicalUuid(spec.uuid);
  const cpus = checkInteger(spec.cpus, 1, LIMITS.maxCpus, 'cpus');
  const memoryMiB = checkInteger(spec.memoryMiB, LIMITS.minMemoryMiB, LIMITS.maxMemoryMiB, 'memoryMiB');
  if ((spec.serialLogPath === undefined) === (spec.serialSocketPath === undefined)) {
    invalid('exactly one of serialLogPath and serialSocketPath must be given', 'serialLogPath');
  }
  const serialChardev =
    spec.serialSocketPath !== undefined
      ? // wait=off: QEMU runs without a reader; output while none is connected is dropped.
        `socket,id=${INTERNAL_IDS.serialChardev},path=${escapeOptionValue(checkSocketPath(spec.serialSocketPath, 'serialSocketPath'))},server=on,wait=off`
      : `file,id=${INTERNAL_IDS.serialChardev},path=${escapeOptionValue(checkPath(spec.serialLogPath as string, 'serialLogPath'))}`;
  const qmpSocket = checkSocketPath(spec.qmpSocketPath, 'qmpSocketPath');
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

  // Secrets: the master key from its FIFO, then each sealed passphrase (ciphertext only).
  const secretArgs: string[] = [];
  const encrypted = spec.disks.some((d) => d.encryption !== undefined) || spec.nvramEncryption !== undefined;
  if (host.masterKeyFile !== undefined) {
    secretArgs.push(
      '-object',
      `secret,id=${INTERNAL_IDS.masterKeySecret},file=${escapeOptionValue(checkPath(host.masterKeyFile, 'masterKeyFile'))},format=raw`,
    );
  } else if (encrypted) {
    invalid(`VM ${spec.name} has encrypted storage but no master key`, 'masterKey');
  }

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
      JSON.stringify(
        spec.nvramEncryption === undefined
          ? {
              driver: 'raw',
              'node-name': INTERNAL_IDS.firmwareVars,
              file: `${INTERNAL_IDS.firmwareVars}-file`,
            }
          : // A LUKS container whose payload is the VARS image (qemu-experiments §2.4).
            {
              driver: 'luks',
              'node-name': INTERNAL_IDS.firmwareVars,
              file: `${INTERNAL_IDS.firmwareVars}-file`,
              'key-secret': INTERNAL_IDS.firmwareVarsSecret,
            },
      ),
    );
    if (spec.nvramEncryption !== undefined) {
      secretArgs.push(
        '-object',
        sealedSecretObject(
          INTERNAL_IDS.firmwareVarsSecret,
          checkSealed(spec.nvramEncryption, 'nvramEncryption'),
        ),
      );
    }
    if (host.ovmf.requiresSmm) {
      // Only SMM code may write the variable store: what makes the enrolled keys binding.
      firmwareArgs.push('-global', 'driver=cfi.pflash01,property=secure,value=on');
    }
  } else if (spec.firmware === 'bios') {
    if (spec.secureBoot === true)
      invalid(`Secure Boot needs firmware "efi"; VM ${spec.name} is "bios"`, 'secureBoot');
    if (spec.nvramEncryption !== undefined)
      invalid(`VM ${spec.name} is "bios": it has no NVRAM to encrypt`, 'nvramEncryption');
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
  if (host.incoming === true) {
    argv.push('-incoming', 'defer');
    if (host.incomingPaused === true) argv.push('-S');
  } else if (host.startPaused ?? true) argv.push('-S');
  // The disks' secrets are added below, after their ids are checked: build them first.
  const diskArgs: string[] = [];

  spec.disks.forEach((disk, i) => {
    const field = `disks[${i}]`;
    checkId(disk.id, `${field}.id`);
    if (disk.format !== 'qcow2') invalid(`${field}.format must be "qcow2"`, `${field}.format`);
    const path = checkPath(disk.path, `${field}.path`);
    const node = diskNodeName(disk.id);
    const qcow2: Record<string, unknown> = { driver: 'qcow2', 'node-name': node, file: `${node}-file` };
    if (disk.encryption !== undefined) {
      const secretId = diskSecretId(disk.id);
      secretArgs.push(
        '-object',
        sealedSecretObject(secretId, checkSealed(disk.encryption, `${field}.encryption`)),
      );
      // Strict -blockdev parsing wants the format named next to the secret (§2.2).
      qcow2.encrypt = { format: 'luks', 'key-secret': secretId };
    }
    // JSON -blockdev: a path needs no escaping at all there.
    diskArgs.push(
      '-blockdev',
      JSON.stringify({ driver: 'file', 'node-name': `${node}-file`, filename: path, ...blockFileOptions() }),
      '-blockdev',
      JSON.stringify(qcow2),
      '-device',
      `virtio-blk-pci,drive=${node},id=${disk.id},bootindex=${i + 1}`,
    );
  });
  // Objects before the block nodes that name them.
  argv.push(...secretArgs, ...firmwareArgs);
  for (let i = 1; i <= hotplugPorts; i++) {
    argv.push('-device', `pcie-root-port,id=${INTERNAL_IDS.rootPortPrefix}${i},bus=pcie.0,chassis=${i}`);
  }
  argv.push(...diskArgs);

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

  if (spec.tpmSocketPath !== undefined) {
    // tpm-crb is the TPM 2.0 interface OVMF and Linux find without ACPI tweaks; it needs
    // the UEFI firmware's TCG2 support, hence EFI only.
    if (spec.firmware !== 'efi') invalid(`a vTPM needs firmware "efi"; VM ${spec.name} is "bios"`, 'tpm');
    argv.push(
      '-chardev',
      `socket,id=${INTERNAL_IDS.tpmChardev},path=${escapeOptionValue(checkSocketPath(spec.tpmSocketPath, 'tpmSocketPath'))}`,
      '-tpmdev',
      `emulator,id=${INTERNAL_IDS.tpmDev},chardev=${INTERNAL_IDS.tpmChardev}`,
      '-device',
      `tpm-crb,tpmdev=${INTERNAL_IDS.tpmDev}`,
    );
  }
  argv.push(
    '-chardev',
    serialChardev,
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
