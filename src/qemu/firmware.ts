/**
 * What the host offers VMs: OVMF builds (plain and Secure Boot), the QEMU and OVMF versions,
 * whether KVM can really run guests, AES-NI, and the host's own UEFI Secure Boot state.
 *
 * OVMF is found the way libvirt finds it: through QEMU's firmware descriptors
 * (qemu docs/interop/firmware.json) in /etc/qemu/firmware then /usr/share/qemu/firmware,
 * where a file in /etc masks the one of the same name in /usr/share; Debian's
 * /usr/share/OVMF paths are the fallback when no descriptor is installed.
 *
 * Every probe takes a `root` so that tests can point it at a fixture tree.
 */
import { execFile } from 'node:child_process';
import { constants as fsc } from 'node:fs';
import { access, open, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { HypersealError } from '../errors.js';

export interface OvmfBuild {
  description: string;
  /** Read-only code image. */
  code: string;
  /** Variable store template, copied per VM. */
  varsTemplate: string;
  secureBoot: boolean;
  /** The template has PK/KEK/db enrolled (Secure Boot on from the first boot). */
  enrolledKeys: boolean;
  /** The code refuses to run (hangs silently) without `-machine smm=on`. */
  requiresSmm: boolean;
  /** The descriptor file it came from, or 'well-known' for the fallback paths. */
  source: string;
}

export const FIRMWARE_DESCRIPTOR_DIRS = ['/etc/qemu/firmware', '/usr/share/qemu/firmware'] as const;

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const strings = (v: unknown): string[] =>
  Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];

/**
 * One descriptor → an OvmfBuild, or undefined when it is not an x86_64 q35 UEFI flash
 * image with a raw code file and a raw variable store template (the only kind we run).
 */
export function parseFirmwareDescriptor(json: unknown, source: string): OvmfBuild | undefined {
  if (!isObject(json)) return undefined;
  if (!strings(json['interface-types']).includes('uefi')) return undefined;
  const targets = Array.isArray(json.targets) ? json.targets.filter(isObject) : [];
  const q35 = targets.some(
    (t) => t.architecture === 'x86_64' && strings(t.machines).some((m) => /^pc-q35-/.test(m)),
  );
  if (!q35) return undefined;
  const mapping = json.mapping;
  if (!isObject(mapping) || mapping.device !== 'flash') return undefined;
  const exe = mapping.executable;
  const vars = mapping['nvram-template'];
  if (!isObject(exe) || !isObject(vars)) return undefined;
  if (typeof exe.filename !== 'string' || typeof vars.filename !== 'string') return undefined;
  if ((exe.format ?? 'raw') !== 'raw' || (vars.format ?? 'raw') !== 'raw') return undefined;
  const features = strings(json.features);
  return {
    description: typeof json.description === 'string' ? json.description : source,
    code: exe.filename,
    varsTemplate: vars.filename,
    secureBoot: features.includes('secure-boot'),
    enrolledKeys: features.includes('enrolled-keys'),
    requiresSmm: features.includes('requires-smm'),
    source,
  };
}

/** Debian's layout (package ovmf ≥ 2022.11), used when no descriptor is installed. */
export const WELL_KNOWN_OVMF: readonly Omit<OvmfBuild, 'source'>[] = [
  {
    description: 'OVMF 4M, no Secure Boot',
    code: '/usr/share/OVMF/OVMF_CODE_4M.fd',
    varsTemplate: '/usr/share/OVMF/OVMF_VARS_4M.fd',
    secureBoot: false,
    enrolledKeys: false,
    requiresSmm: false,
  },
  {
    description: 'OVMF 4M, Secure Boot, Microsoft keys enrolled',
    code: '/usr/share/OVMF/OVMF_CODE_4M.ms.fd',
    varsTemplate: '/usr/share/OVMF/OVMF_VARS_4M.ms.fd',
    secureBoot: true,
    enrolledKeys: true,
    requiresSmm: true,
  },
  {
    description: 'OVMF 4M, Secure Boot, empty varstore (setup mode)',
    code: '/usr/share/OVMF/OVMF_CODE_4M.secboot.fd',
    varsTemplate: '/usr/share/OVMF/OVMF_VARS_4M.fd',
    secureBoot: true,
    enrolledKeys: false,
    requiresSmm: true,
  },
];

async function readable(path: string): Promise<boolean> {
  try {
    await access(path, fsc.R_OK);
    return true;
  } catch {
    return false;
  }
}

export interface DiscoverOptions {
  /** Descriptor directories, highest priority first. */
  descriptorDirs?: readonly string[];
  /** Fallback builds when no descriptor yields one. */
  wellKnown?: readonly Omit<OvmfBuild, 'source'>[];
}

/**
 * Installed OVMF builds, in descriptor priority order (file name order, as QEMU's spec
 * says), keeping only those whose code and template files are readable.
 */
export async function discoverOvmf(opts: DiscoverOptions = {}): Promise<OvmfBuild[]> {
  const dirs = opts.descriptorDirs ?? FIRMWARE_DESCRIPTOR_DIRS;
  const chosen = new Map<string, string>(); // file name → path, first directory wins
  for (const dir of dirs) {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      continue;
    }
    for (const name of names) {
      if (name.endsWith('.json') && !chosen.has(name)) chosen.set(name, join(dir, name));
    }
  }
  const builds: OvmfBuild[] = [];
  for (const name of [...chosen.keys()].sort()) {
    const path = chosen.get(name) as string;
    let json: unknown;
    try {
      const text = await readFile(path, 'utf8');
      // An empty file masks a lower-priority descriptor of the same name (firmware.json).
      if (text.trim() === '') continue;
      json = JSON.parse(text);
    } catch {
      continue;
    }
    const build = parseFirmwareDescriptor(json, path);
    if (build !== undefined && (await readable(build.code)) && (await readable(build.varsTemplate))) {
      builds.push(build);
    }
  }
  if (builds.length > 0) return builds;
  const fallback: OvmfBuild[] = [];
  for (const b of opts.wellKnown ?? WELL_KNOWN_OVMF) {
    if ((await readable(b.code)) && (await readable(b.varsTemplate)))
      fallback.push({ ...b, source: 'well-known' });
  }
  return fallback;
}

export interface OvmfRequirement {
  secureBoot: boolean;
  /** With secureBoot: a template with keys enrolled (default) or an empty one to enroll our own. */
  enrolledKeys?: boolean;
}

/** The first build that fits; HS_ERR_QEMU_FIRMWARE_NOT_FOUND when none does. */
export function selectOvmf(builds: readonly OvmfBuild[], want: OvmfRequirement): OvmfBuild {
  const enrolled = want.enrolledKeys ?? true;
  const fits = (b: OvmfBuild): boolean =>
    want.secureBoot
      ? b.secureBoot && b.requiresSmm && b.enrolledKeys === enrolled
      : !b.secureBoot && !b.requiresSmm;
  const found = builds.find(fits);
  if (found === undefined) {
    const what = want.secureBoot
      ? `UEFI with Secure Boot (${enrolled ? 'keys enrolled' : 'empty varstore'})`
      : 'UEFI without Secure Boot';
    throw new HypersealError(
      'HS_ERR_QEMU_FIRMWARE_NOT_FOUND',
      `no installed OVMF build for ${what}; found ${builds.length} build(s): ${builds.map((b) => b.code).join(', ') || 'none'}`,
    );
  }
  return found;
}

// ---------------------------------------------------------------------------------------
// Host facts

export interface QemuVersion {
  /** "7.2.22" */
  version: string;
  major: number;
  minor: number;
  micro: number;
  /** Distribution build in parentheses, e.g. "Debian 1:7.2+dfsg-7+deb12u18+b3". */
  package: string | undefined;
}

/** Parses `qemu-system-x86_64 --version` ("QEMU emulator version 7.2.22 (Debian …)"). */
export function parseQemuVersion(stdout: string): QemuVersion | undefined {
  const m = /QEMU emulator version (\d+)\.(\d+)\.(\d+)(?:\s+\(([^)\n]*)\))?/.exec(stdout);
  if (m === null) return undefined;
  const [, major, minor, micro, pkg] = m;
  return {
    version: `${major}.${minor}.${micro}`,
    major: Number(major),
    minor: Number(minor),
    micro: Number(micro),
    package: pkg === undefined || pkg === '' ? undefined : pkg,
  };
}

interface RunResult {
  stdout: string;
  stderr: string;
}

function run(file: string, args: readonly string[], timeoutMs: number): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { timeout: timeoutMs, maxBuffer: 1 << 20, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (err !== null) {
          const output = `${stderr}`.trim();
          reject(
            new HypersealError(
              'HS_ERR_QEMU_TOOL_FAILED',
              `${file} ${args.join(' ')} failed: ${err.message}${output === '' ? '' : `: ${output}`}`,
              { tool: file },
              { cause: err },
            ),
          );
        } else resolve({ stdout, stderr });
      },
    );
  });
}

export async function qemuVersion(binary = 'qemu-system-x86_64'): Promise<QemuVersion> {
  const { stdout } = await run(binary, ['--version'], 10_000);
  const v = parseQemuVersion(stdout);
  if (v === undefined) {
    throw new HypersealError(
      'HS_ERR_QEMU_TOOL_FAILED',
      `${binary} --version printed no version: ${stdout.slice(0, 200)}`,
    );
  }
  return v;
}

/** The installed version of a Debian package, or undefined (not installed, or no dpkg). */
export async function debianPackageVersion(pkg: string): Promise<string | undefined> {
  try {
    const { stdout } = await run('dpkg-query', ['-W', '-f=${Status}\t${Version}', pkg], 10_000);
    const [status, version] = stdout.split('\t');
    return status?.endsWith(' installed') === true && version !== undefined && version !== ''
      ? version
      : undefined;
  } catch {
    return undefined;
  }
}

export interface ProbeOptions {
  /** Prefix for /dev, /proc and /sys paths (tests). Default "/". */
  root?: string;
}

const under = (root: string | undefined, path: string): string =>
  root === undefined ? path : join(root, path);

async function cpuFlags(root: string | undefined): Promise<Set<string>> {
  const text = await readFile(under(root, '/proc/cpuinfo'), 'utf8');
  const line = /^flags\s*:(.*)$/m.exec(text);
  return new Set((line?.[1] ?? '').trim().split(/\s+/).filter(Boolean));
}

export async function cpuHasAesNi(opts: ProbeOptions = {}): Promise<boolean> {
  try {
    return (await cpuFlags(opts.root)).has('aes');
  } catch {
    return false;
  }
}

export interface KvmState {
  usable: boolean;
  /** Why not, or what was found: for the host report and the accelerator choice. */
  reason: string;
}

/**
 * KVM is usable when /dev/kvm opens read-write AND the CPU exposes hardware virtualization
 * (vmx or svm). The second check is not redundant: on hosts whose /dev/kvm comes from the
 * kvm_pvm module (PVM, for PVM-enlightened Linux guests only) the device opens and QEMU
 * starts, but OVMF dies at its first FPU instruction: "KVM internal error. Suberror: 1 /
 * emulation failure" (reproduce: qemu-system-x86_64 -accel kvm -machine q35 -m 128
 * -nodefaults -display none -drive if=pflash,…OVMF_CODE_4M.fd,readonly=on …).
 */
export async function probeKvm(opts: ProbeOptions = {}): Promise<KvmState> {
  const dev = under(opts.root, '/dev/kvm');
  try {
    const fh = await open(dev, fsc.O_RDWR);
    await fh.close();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT')
      return { usable: false, reason: 'no /dev/kvm (no kvm module loaded, or no hardware virtualization)' };
    if (code === 'EACCES' || code === 'EPERM') {
      return {
        usable: false,
        reason: 'no permission to open /dev/kvm read-write (the agent user needs the kvm group)',
      };
    }
    return { usable: false, reason: `cannot open /dev/kvm: ${(err as Error).message}` };
  }
  let flags: Set<string>;
  try {
    flags = await cpuFlags(opts.root);
  } catch {
    return { usable: false, reason: '/proc/cpuinfo is unreadable' };
  }
  if (!flags.has('vmx') && !flags.has('svm')) {
    let pvm = false;
    try {
      await access(under(opts.root, '/sys/module/kvm_pvm'));
      pvm = true;
    } catch {
      // no PVM module: some other software-only KVM
    }
    return {
      usable: false,
      reason: pvm
        ? '/dev/kvm is provided by kvm_pvm, which runs only PVM-enlightened guests (OVMF fails with "KVM internal error")'
        : '/dev/kvm opens but the CPU exposes no vmx/svm (hardware virtualization)',
    };
  }
  return { usable: true, reason: `/dev/kvm usable (${flags.has('vmx') ? 'vmx' : 'svm'})` };
}

export type HostSecureBootState = 'enabled' | 'disabled' | 'not-uefi' | 'unknown';

/** EFI_GLOBAL_VARIABLE: the vendor GUID of SecureBoot, PK, KEK (UEFI spec §3.3). */
const EFI_GLOBAL_VARIABLE = '8be4df61-93ca-11d2-aa0d-00e098032b8c';

/**
 * The host firmware's Secure Boot state from efivarfs: a file of a 4-byte attribute word
 * followed by the variable's data (one byte, 1 = enabled). No /sys/firmware/efi at all:
 * the host booted by BIOS. efivarfs not mounted (empty directory) or unreadable: unknown.
 */
export async function hostSecureBootState(opts: ProbeOptions = {}): Promise<HostSecureBootState> {
  const efi = under(opts.root, '/sys/firmware/efi');
  try {
    await access(efi);
  } catch {
    return 'not-uefi';
  }
  const efivars = join(efi, 'efivars');
  let names: string[];
  try {
    names = await readdir(efivars);
  } catch {
    return 'unknown';
  }
  if (names.length === 0) return 'unknown';
  const name = `SecureBoot-${EFI_GLOBAL_VARIABLE}`;
  // UEFI firmware without Secure Boot support has no SecureBoot variable at all.
  if (!names.includes(name)) return 'disabled';
  try {
    const data = await readFile(join(efivars, name));
    if (data.length < 5) return 'unknown';
    return data[4] === 1 ? 'enabled' : 'disabled';
  } catch {
    return 'unknown';
  }
}

export interface HostFacts {
  qemu: QemuVersion | undefined;
  qemuError?: string;
  ovmfPackageVersion: string | undefined;
  kvm: KvmState;
  aesNi: boolean;
  hostSecureBoot: HostSecureBootState;
  ovmf: OvmfBuild[];
}

export interface HostFactsOptions extends ProbeOptions, DiscoverOptions {
  qemuBinary?: string;
}

/** Everything above in one report; a failing probe is reported, never thrown. */
export async function hostFacts(opts: HostFactsOptions = {}): Promise<HostFacts> {
  const [qemu, ovmfPackageVersion, kvm, aesNi, hostSecureBoot, ovmf] = await Promise.all([
    qemuVersion(opts.qemuBinary).then(
      (v) => ({ v, error: undefined }),
      (err: unknown) => ({ v: undefined, error: err instanceof Error ? err.message : String(err) }),
    ),
    debianPackageVersion('ovmf'),
    probeKvm(opts),
    cpuHasAesNi(opts),
    hostSecureBootState(opts),
    discoverOvmf(opts),
  ]);
  const facts: HostFacts = { qemu: qemu.v, ovmfPackageVersion, kvm, aesNi, hostSecureBoot, ovmf };
  if (qemu.error !== undefined) facts.qemuError = qemu.error;
  return facts;
}
