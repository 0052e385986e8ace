/**
 * HostFacts: what the manager needs to know about this host to place and secure VMs
 * (can it encrypt fast, can it run KVM, which firmware, is the host itself booted with
 * UEFI Secure Boot). Every probe degrades to a conservative answer (false / null /
 * 'unknown') instead of failing: facts are informative, and an agent must still start on
 * a host where, say, dpkg-query is missing.
 */
import { execFile } from 'node:child_process';
import { closeSync, constants, existsSync, openSync, readFileSync, readdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join, parse } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { HostFacts } from './api.js';
import type { VmDriver } from './driver.js';

/** Versions of installed packages change only on upgrades; probing is ~20 ms of exec. */
const VERSION_CACHE_MS = 60_000;
const EXEC_TIMEOUT_MS = 5_000;
/** EFI_GLOBAL_VARIABLE: the SecureBoot variable lives under this vendor GUID. */
const SECURE_BOOT_VAR = 'SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c';

export interface FactsProbeOptions {
  /** Tests point these at fixtures. */
  cpuinfoPath?: string;
  kvmPath?: string;
  efiDir?: string;
  qemuBinary?: string;
}

interface Versions {
  qemuVersion: string | null;
  ovmfVersion: string | null;
  at: number;
}

/** Per QEMU binary: tests and hosts with several QEMUs ask about different ones. */
const versionCache = new Map<string, Versions>();

export async function collectHostFacts(driver: VmDriver, opts: FactsProbeOptions = {}): Promise<HostFacts> {
  const simulated = driver.kind === 'sim';
  const versions = await packageVersions(opts.qemuBinary ?? 'qemu-system-x86_64');
  return {
    hostname: hostname(),
    driver: driver.kind,
    simulated,
    cpuAesNi: cpuHasAesNi(opts.cpuinfoPath ?? '/proc/cpuinfo'),
    kvmUsable: kvmUsable(opts.kvmPath ?? '/dev/kvm'),
    accel: driver.accel,
    qemuVersion: versions.qemuVersion,
    ovmfVersion: versions.ovmfVersion,
    uefiSecureBoot: uefiSecureBoot(opts.efiDir ?? '/sys/firmware/efi'),
    agentVersion: agentVersion(),
  };
}

/** The `aes` CPU flag (AES-NI on x86): QEMU's LUKS/XTS runs at memory speed with it. */
export function cpuHasAesNi(cpuinfoPath: string): boolean {
  try {
    const text = readFileSync(cpuinfoPath, 'utf8');
    return /^flags\s*:.*\baes\b/m.test(text);
  } catch {
    return false;
  }
}

/**
 * /dev/kvm opened read-write is what QEMU's `-accel kvm` needs. Existence alone is not
 * enough (mode 0600 root:kvm for a non-member), and access(2) lies for root in
 * containers where the device cgroup still denies it, so we really open it.
 */
export function kvmUsable(kvmPath: string): boolean {
  try {
    closeSync(openSync(kvmPath, constants.O_RDWR));
    return true;
  } catch {
    return false;
  }
}

/** Reads the SecureBoot EFI variable: 4 bytes of attributes, then one byte 0 or 1. */
export function uefiSecureBoot(efiDir: string): HostFacts['uefiSecureBoot'] {
  if (!existsSync(efiDir)) return 'not-uefi';
  try {
    const dir = join(efiDir, 'efivars');
    const name = readdirSync(dir).find((n) => n.toLowerCase() === SECURE_BOOT_VAR.toLowerCase());
    if (name === undefined) return 'unknown';
    const value = readFileSync(join(dir, name));
    if (value.length < 5) return 'unknown';
    return value[4] === 1 ? 'enabled' : 'disabled';
  } catch {
    return 'unknown';
  }
}

function run(file: string, args: string[]): Promise<string | null> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: EXEC_TIMEOUT_MS, encoding: 'utf8' }, (err, stdout) =>
      resolve(err ? null : stdout),
    );
  });
}

/** "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)" → "7.2.22". */
export function parseQemuVersion(text: string | null): string | null {
  const m = /QEMU emulator version (\S+)/.exec(text ?? '');
  return m?.[1] ?? null;
}

async function packageVersions(qemuBinary: string): Promise<Versions> {
  const cached = versionCache.get(qemuBinary);
  if (cached && Date.now() - cached.at < VERSION_CACHE_MS) return cached;
  const [qemu, ovmf] = await Promise.all([
    run(qemuBinary, ['--version']),
    // OVMF has no version inside its image that is cheap to read; the package's is what
    // security advisories refer to anyway.
    run('dpkg-query', ['-W', '-f=${Version}', 'ovmf']),
  ]);
  const versions: Versions = {
    qemuVersion: parseQemuVersion(qemu),
    ovmfVersion: ovmf !== null && ovmf.trim() !== '' ? ovmf.trim() : null,
    at: Date.now(),
  };
  versionCache.set(qemuBinary, versions);
  return versions;
}

let cachedAgentVersion: string | null = null;

/** The version in the package.json above this module (src/ when run from the tree, dist/ when built). */
export function agentVersion(): string {
  if (cachedAgentVersion !== null) return cachedAgentVersion;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, 'package.json');
    if (existsSync(candidate)) {
      try {
        const pkg = JSON.parse(readFileSync(candidate, 'utf8')) as { name?: unknown; version?: unknown };
        if (pkg.name === 'hyperseal' && typeof pkg.version === 'string') {
          cachedAgentVersion = pkg.version;
          return pkg.version;
        }
      } catch {
        // an unrelated or broken package.json: keep walking up
      }
    }
    if (dir === parse(dir).root) return 'unknown';
    dir = dirname(dir);
  }
}
