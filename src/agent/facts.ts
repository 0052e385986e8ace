/**
 * HostFacts: what the manager needs to know about this host to place and secure VMs (can
 * it encrypt fast, can it run KVM, which QEMU and firmware, is the host itself booted with
 * UEFI Secure Boot). The probes are src/qemu/firmware.ts's, shared with the QEMU driver
 * so that the accelerator the facts report is the one the driver picks; this module maps
 * them onto the contract's shape and caches them. Every probe degrades to a conservative
 * answer (false / null / 'unknown'): an agent must still start where, say, QEMU is absent.
 */
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join, parse } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hostFacts } from '../qemu/firmware.js';
import type { HostFactsOptions } from '../qemu/firmware.js';
import type { HostFacts } from './api.js';
import type { VmDriver } from './driver.js';

/**
 * Probing execs `qemu-system-x86_64 --version` and `dpkg-query` (~20 ms) and reads the
 * firmware descriptors; what they report changes only with package upgrades or module
 * loads, so a minute-old answer is good enough for inventory.
 */
const FACTS_CACHE_MS = 60_000;

type HostProbe = Omit<HostFacts, 'hostname' | 'driver' | 'simulated' | 'accel' | 'agentVersion'>;

const cache = new Map<string, { at: number; probe: Promise<HostProbe> }>();

/** `probe` is for tests: a fixture root for /proc, /sys and /dev, another QEMU binary. */
export async function collectHostFacts(driver: VmDriver, probe: HostFactsOptions = {}): Promise<HostFacts> {
  return {
    hostname: hostname(),
    driver: driver.kind,
    simulated: driver.kind === 'sim',
    ...(await probeHost(probe)),
    accel: driver.accel,
    agentVersion: agentVersion(),
  };
}

function probeHost(opts: HostFactsOptions): Promise<HostProbe> {
  const key = JSON.stringify(opts);
  const hit = cache.get(key);
  if (hit && Date.now() - hit.at < FACTS_CACHE_MS) return hit.probe;
  const probe = hostFacts(opts).then((f): HostProbe => ({
    cpuAesNi: f.aesNi,
    kvmUsable: f.kvm.usable,
    qemuVersion: f.qemu?.version ?? null,
    ovmfVersion: f.ovmfPackageVersion ?? null,
    uefiSecureBoot: f.hostSecureBoot,
  }));
  cache.set(key, { at: Date.now(), probe });
  // A failed probe is not cached: the next call tries again.
  probe.catch(() => cache.delete(key));
  return probe;
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
