/**
 * Host Secure Boot on the agent: its configuration, the check at start, and installed
 * bundles (docs/secure-boot.md, "Host bundles").
 *
 * Files in the agent's data directory:
 *   secure-boot.json   {enabled, acceptance, trustAnchors: [{certPem, maxAcceptance?}],
 *                      revokedCertificates: [sha256…], coreDir?}: written by `hyperseal agent
 *                      secure-boot …` on the host, never over the network
 *   bundles/<name>/    one directory per installed bundle (bundle.json, bundle.sig, files)
 *   bundles/.staging-* an upload being verified (removed at start if a crash left one)
 *
 * At start the agent verifies its core (coreDir, default the dist/ tree it runs from,
 * against hyperseal-manifest.json/.sig) and then every installed bundle. With Secure Boot
 * on, the first failure puts the agent in the failed state: it names the file on stderr
 * and, rather than exit and leave the manager guessing, answers only /v1/facts and
 * /v1/secure-boot (with the failure) and refuses everything else with
 * HS_ERR_HOST_VERIFICATION_FAILED. It never opens a VM or key route in that state. With
 * Secure Boot off the same checks run and are reported, but refuse nothing.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HypersealError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import { certificateCommonName, certificateFingerprint256 } from '../pki/index.js';
import type { AcceptanceLevel } from '../secureboot/acceptance.js';
import { isAcceptanceLevel, lowestAcceptance, parseAcceptanceLevel } from '../secureboot/acceptance.js';
import type { TrustAnchor, VerificationResult } from '../secureboot/index.js';
import { BUNDLE_FILES, parseDescriptor, verifyBundle, verifyManifest } from '../secureboot/index.js';
import type { BundleUpload, HostSecureBootReport, InstalledBundle } from './api.js';

export const SECURE_BOOT_FILE = 'secure-boot.json';
export const BUNDLES_DIR = 'bundles';
/** A bundle upload, decoded: bounds the agent's memory per request. */
export const MAX_BUNDLE_BYTES = 32 * 1024 * 1024;
const BUNDLE_NAME = /^[a-z0-9][a-z0-9._+-]{0,63}$/;

export interface HostSecureBootConfig {
  enabled: boolean;
  acceptance: AcceptanceLevel;
  trustAnchors: TrustAnchor[];
  revokedCertificates: string[];
  /** The agent's own files; default the dist/ directory this module runs from. */
  coreDir?: string;
}

/** dist/ when running from dist/src/agent/host-secure-boot.js. */
export function defaultCoreDir(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
}

function configError(message: string): HypersealError {
  return new HypersealError('HS_ERR_CONFIG', `${SECURE_BOOT_FILE}: ${message}`);
}

export function parseHostSecureBootConfig(value: unknown): HostSecureBootConfig {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw configError('not an object');
  const v = value as Record<string, unknown>;
  for (const k of Object.keys(v)) {
    if (!['enabled', 'acceptance', 'trustAnchors', 'revokedCertificates', 'coreDir'].includes(k)) {
      throw configError(`unknown field ${JSON.stringify(k)}`);
    }
  }
  if (typeof v.enabled !== 'boolean') throw configError('enabled must be true or false');
  const anchors = v.trustAnchors ?? [];
  if (!Array.isArray(anchors)) throw configError('trustAnchors must be a list');
  const trustAnchors = anchors.map((a, i): TrustAnchor => {
    const o = a as Record<string, unknown>;
    if (typeof o?.certPem !== 'string')
      throw configError(`trustAnchors[${i}].certPem must be a PEM certificate`);
    if (o.maxAcceptance !== undefined && !isAcceptanceLevel(o.maxAcceptance)) {
      throw configError(`trustAnchors[${i}].maxAcceptance is not an acceptance level`);
    }
    return {
      certPem: o.certPem,
      ...(o.maxAcceptance !== undefined ? { maxAcceptance: o.maxAcceptance } : {}),
    };
  });
  const revoked = v.revokedCertificates ?? [];
  if (!Array.isArray(revoked) || revoked.some((r) => typeof r !== 'string')) {
    throw configError('revokedCertificates must be a list of SHA-256 fingerprints');
  }
  if (v.coreDir !== undefined && typeof v.coreDir !== 'string') throw configError('coreDir must be a path');
  return {
    enabled: v.enabled,
    acceptance: parseAcceptanceLevel(v.acceptance ?? 'partner', `${SECURE_BOOT_FILE}: acceptance`),
    trustAnchors,
    revokedCertificates: revoked as string[],
    ...(typeof v.coreDir === 'string' ? { coreDir: v.coreDir } : {}),
  };
}

export function loadHostSecureBootConfig(dataDir: string): HostSecureBootConfig | undefined {
  const file = join(dataDir, SECURE_BOOT_FILE);
  if (!existsSync(file)) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw configError(`cannot read it: ${err instanceof Error ? err.message : String(err)}`);
  }
  return parseHostSecureBootConfig(raw);
}

export function saveHostSecureBootConfig(dataDir: string, config: HostSecureBootConfig): void {
  writeFileAtomic(join(dataDir, SECURE_BOOT_FILE), JSON.stringify(config, null, 2) + '\n', 0o600);
}

type Verification = HostSecureBootReport['verification'];

/** The agent's Secure Boot state: configuration, result of the check at start, bundles. */
export class HostSecureBoot {
  private verification: Verification = { result: 'not-checked', checkedAt: null };
  private bundles: InstalledBundle[] = [];

  private constructor(
    private readonly dataDir: string,
    private readonly config: HostSecureBootConfig | undefined,
  ) {}

  /** Loads the configuration (or takes `config`) and runs the check at start (see the header). */
  static async open(dataDir: string, config?: HostSecureBootConfig): Promise<HostSecureBoot> {
    const sb = new HostSecureBoot(dataDir, config ?? loadHostSecureBootConfig(dataDir));
    const dir = join(dataDir, BUNDLES_DIR);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    // An upload that a crash interrupted was never installed.
    for (const name of readdirSync(dir)) {
      if (name.startsWith('.')) rmSync(join(dir, name), { recursive: true, force: true });
    }
    await sb.verifyAll();
    return sb;
  }

  /** Secure Boot is on and the check at start failed: serve nothing but facts. */
  get failed(): boolean {
    return this.config?.enabled === true && this.verification.result === 'failed';
  }

  get enabled(): boolean {
    return this.config?.enabled === true;
  }

  /** The failure as an error (for refused requests and stderr). */
  failure(): HypersealError {
    const v = this.verification;
    return new HypersealError(
      'HS_ERR_HOST_VERIFICATION_FAILED',
      `host Secure Boot: ${v.subject ?? 'verification'} failed verification${v.file !== undefined ? ` at ${v.file}` : ''}: ${v.message ?? ''} (${v.code ?? '?'})`,
      {
        ...(v.file !== undefined ? { file: v.file } : {}),
        ...(v.code !== undefined ? { cause: v.code } : {}),
      },
    );
  }

  report(): HostSecureBootReport {
    const anchors = (this.config?.trustAnchors ?? []).map((a) => ({
      subject: commonNameOrQuestionMark(a.certPem),
      sha256: certificateFingerprint256(a.certPem),
      ...(a.maxAcceptance !== undefined ? { maxAcceptance: a.maxAcceptance } : {}),
    }));
    return {
      configured: this.config !== undefined,
      enabled: this.enabled,
      acceptance: this.config?.acceptance ?? 'community',
      effectiveAcceptance: lowestAcceptance(this.bundles.map((b) => b.acceptance)) ?? null,
      verification: { ...this.verification },
      bundles: this.bundles.map((b) => ({ ...b })),
      trustAnchors: anchors,
    };
  }

  list(): InstalledBundle[] {
    return this.bundles.map((b) => ({ ...b }));
  }

  private verifyOptions(): { minAcceptance: AcceptanceLevel; revokedCertificates: string[] } {
    return {
      minAcceptance: this.config?.acceptance ?? 'community',
      revokedCertificates: this.config?.revokedCertificates ?? [],
    };
  }

  private async verifyAll(): Promise<void> {
    const checkedAt = new Date().toISOString();
    this.bundles = [];
    if (this.config === undefined) {
      this.verification = { result: 'not-checked', checkedAt: null };
      this.bundles = await this.scanBundles();
      return;
    }
    let first: Verification | undefined;
    const coreDir = this.config.coreDir ?? defaultCoreDir();
    const core = await verifyManifest(coreDir, this.config.trustAnchors, this.verifyOptions());
    if (!core.ok) first = failed('core', coreDir, core, checkedAt);
    this.bundles = await this.scanBundles();
    for (const b of this.bundles) {
      if (first === undefined && !b.verified && b.problem !== undefined) {
        first = {
          result: 'failed',
          checkedAt,
          subject: `bundle ${b.name}`,
          code: b.problem.code,
          message: b.problem.message,
          ...(b.problem.file !== undefined ? { file: b.problem.file } : {}),
        };
      }
    }
    this.verification = first ?? { result: 'passed', checkedAt };
  }

  /** Every installed bundle, verified (or, unconfigured, just read). */
  private async scanBundles(): Promise<InstalledBundle[]> {
    const dir = join(this.dataDir, BUNDLES_DIR);
    const out: InstalledBundle[] = [];
    for (const name of readdirSync(dir).sort()) {
      if (name.startsWith('.')) continue;
      out.push(await this.inspect(join(dir, name), name));
    }
    return out;
  }

  private async inspect(path: string, dirName: string): Promise<InstalledBundle> {
    let meta: Pick<InstalledBundle, 'name' | 'version' | 'vendor' | 'acceptance'> = {
      name: dirName,
      version: '?',
      vendor: '?',
      acceptance: 'community',
    };
    try {
      const d = parseDescriptor(readFileSync(join(path, BUNDLE_FILES.descriptor)), 'bundle');
      meta = { name: d.name, version: d.version, vendor: d.vendor, acceptance: d.acceptance };
    } catch {
      // reported as the verification problem below
    }
    if (this.config === undefined) return { ...meta, verified: false };
    const r = await verifyBundle(path, this.config.trustAnchors, this.verifyOptions());
    if (r.ok) return { ...meta, verified: true, signer: r.signer.subject };
    return {
      ...meta,
      verified: false,
      problem: {
        code: r.code,
        message: r.message,
        ...(r.file !== undefined ? { file: join(path, r.file) } : {}),
      },
    };
  }

  /**
   * Installs a bundle: its files are written to a staging directory and verified there;
   * only a bundle that passes (with Secure Boot on: signed under an anchor, intact, at the
   * host's level or higher, and not community) is moved into place, replacing an older
   * version with two renames. A refused upload leaves nothing behind.
   */
  async install(upload: BundleUpload): Promise<InstalledBundle> {
    const root = join(this.dataDir, BUNDLES_DIR);
    const staging = join(root, `.staging-${randomBytes(8).toString('hex')}`);
    mkdirSync(staging, { mode: 0o700 });
    try {
      writeUpload(staging, upload);
      let descriptorName: string;
      try {
        descriptorName = parseDescriptor(readFileSync(join(staging, BUNDLE_FILES.descriptor)), 'bundle').name;
      } catch (err) {
        if (err instanceof HypersealError) throw err;
        throw new HypersealError('HS_ERR_BUNDLE_INVALID', `the upload has no ${BUNDLE_FILES.descriptor}`);
      }
      if (!BUNDLE_NAME.test(descriptorName)) {
        throw new HypersealError(
          'HS_ERR_BUNDLE_INVALID',
          `bundle name ${JSON.stringify(descriptorName)} is not allowed`,
        );
      }
      const bundle = await this.inspect(staging, descriptorName);
      if (this.enabled) {
        if (!bundle.verified && bundle.problem !== undefined) {
          throw new HypersealError(
            bundle.problem.code as 'HS_ERR_BUNDLE_INVALID',
            `bundle ${descriptorName} refused (host Secure Boot is on): ${bundle.problem.message}`,
            bundle.problem.file !== undefined
              ? { file: bundle.problem.file.replace(staging + '/', '') }
              : undefined,
          );
        }
        if (bundle.acceptance === 'community') {
          throw new HypersealError(
            'HS_ERR_BUNDLE_ACCEPTANCE_TOO_LOW',
            `bundle ${descriptorName} is community-supported: host Secure Boot admits no community bundle`,
          );
        }
      }
      const target = join(root, descriptorName);
      const old = join(root, `.old-${randomBytes(8).toString('hex')}`);
      const replacing = existsSync(target);
      if (replacing) renameSync(target, old);
      renameSync(staging, target);
      if (replacing) rmSync(old, { recursive: true, force: true });
      const installed = {
        ...bundle,
        ...(bundle.problem?.file !== undefined
          ? { problem: { ...bundle.problem, file: bundle.problem.file.replace(staging, target) } }
          : {}),
      };
      this.bundles = [...this.bundles.filter((b) => b.name !== descriptorName), installed].sort((a, b) =>
        a.name.localeCompare(b.name),
      );
      return installed;
    } finally {
      rmSync(staging, { recursive: true, force: true });
    }
  }

  remove(name: string): void {
    if (!BUNDLE_NAME.test(name) || !existsSync(join(this.dataDir, BUNDLES_DIR, name))) {
      throw new HypersealError('HS_ERR_NOT_FOUND', `no bundle ${JSON.stringify(name)} on this host`);
    }
    const root = join(this.dataDir, BUNDLES_DIR);
    const old = join(root, `.old-${randomBytes(8).toString('hex')}`);
    renameSync(join(root, name), old);
    rmSync(old, { recursive: true, force: true });
    this.bundles = this.bundles.filter((b) => b.name !== name);
  }
}

function commonNameOrQuestionMark(certPem: string): string {
  try {
    return certificateCommonName(certPem);
  } catch {
    return '?';
  }
}

function failed(subject: string, dir: string, r: VerificationResult, checkedAt: string): Verification {
  if (r.ok) return { result: 'passed', checkedAt };
  return {
    result: 'failed',
    checkedAt,
    subject,
    code: r.code,
    message: r.message,
    ...(r.file !== undefined ? { file: join(dir, r.file) } : {}),
  };
}

/** Writes an upload's files below `dir` (relative POSIX paths only, total size bounded). */
function writeUpload(dir: string, upload: BundleUpload): void {
  if (
    typeof upload !== 'object' ||
    upload === null ||
    !Array.isArray(upload.files) ||
    upload.files.length > 10_000
  ) {
    throw new HypersealError('HS_ERR_INVALID_ARGUMENT', 'a bundle upload is {files: [{path, data}]}');
  }
  let total = 0;
  for (const [i, f] of upload.files.entries()) {
    const path = f?.path;
    if (
      typeof path !== 'string' ||
      path.length === 0 ||
      path.length > 1024 ||
      path.startsWith('/') ||
      path.includes('\\') ||
      path.split('/').some((s) => s === '' || s === '.' || s === '..' || s.startsWith('.staging'))
    ) {
      throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `files[${i}].path is not a plain relative path`);
    }
    if (typeof f.data !== 'string')
      throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `files[${i}].data must be base64`);
    const bytes = Buffer.from(f.data, 'base64');
    total += bytes.length;
    if (total > MAX_BUNDLE_BYTES) {
      throw new HypersealError('HS_ERR_TOO_LARGE', `bundles are limited to ${MAX_BUNDLE_BYTES} bytes`);
    }
    const target = join(dir, path);
    mkdirSync(dirname(target), { recursive: true, mode: 0o700 });
    writeFileSync(target, bytes, { mode: 0o644, flag: 'wx' });
  }
}

/**
 * Enabling host Secure Boot (offline, on the host): refused while the check at start
 * would fail, or while a community bundle is installed (as in vSphere).
 */
export async function checkCanEnable(dataDir: string, config: HostSecureBootConfig): Promise<HostSecureBoot> {
  const sb = await HostSecureBoot.open(dataDir, { ...config, enabled: true });
  if (sb.failed) throw sb.failure();
  const community = sb.list().filter((b) => b.acceptance === 'community');
  if (community.length > 0) {
    throw new HypersealError(
      'HS_ERR_CONFLICT',
      `host Secure Boot cannot be enabled while community bundles are installed: ${community.map((b) => b.name).join(', ')} (remove them first)`,
    );
  }
  return sb;
}
