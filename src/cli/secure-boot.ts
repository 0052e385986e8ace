/**
 * Secure Boot commands: VM key sets (`secureboot keyset …`, over the API), host bundles
 * (`bundle build|sign|verify` offline, `bundle install|list|remove` through the manager),
 * the agent's own configuration (`agent secure-boot …`, `agent verify`, on the host),
 * `host secure-boot status`, and the release step (`release sign-manifest`).
 */
import { randomUUID } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import type { BundleUpload, HostSecureBootReport } from '../agent/api.js';
import {
  HostSecureBoot,
  checkCanEnable,
  defaultCoreDir,
  loadHostSecureBootConfig,
  saveHostSecureBootConfig,
} from '../agent/host-secure-boot.js';
import type { HostSecureBootConfig } from '../agent/host-secure-boot.js';
import { HypersealError } from '../errors.js';
import { certificateFingerprint256 } from '../pki/index.js';
import { parseAcceptanceLevel } from '../secureboot/acceptance.js';
import type { Signer } from '../secureboot/index.js';
import { buildBundle, buildManifest, signBundle, signManifest, verifyBundle } from '../secureboot/index.js';
import type { SecureBootKeySet, SecureBootKeySetCreate, SecureBootKeySetUpdate } from '../sdk/api.gen.js';
import { ApiClient } from '../sdk/client.js';
import { flag, need, parse, str, usageError } from './args.js';
import { printResult, table } from './output.js';

export const SECURE_BOOT_HELP = `secure boot commands
  vm set VM [--secure-boot on|off] [--key-set NAME|microsoft] [--vtpm on|off]
  secureboot keyset list | show NAME | remove NAME
  secureboot keyset create --name N --pk PK.pem --kek KEK.pem … --db DB.pem … [--db-hash HEX …]
      [--dbx DBX.pem …] [--dbx-hash HEX …] [--owner GUID]   (or --file KEYSET.json)
  secureboot keyset update NAME --pk … --kek … --db … (same flags: new keys, same name)
  bundle build DIR --name N --version V --vendor V --acceptance certified|accepted|partner|community
  bundle sign DIR --cert SIGNER.pem --key SIGNER.key [--chain CA.pem …]
  bundle verify DIR --anchor CA.pem … [--acceptance LEVEL]
  bundle install DIR --host HOST | bundle list --host HOST | bundle remove NAME --host HOST
  host secure-boot status [HOST] [--json]
  agent secure-boot --data-dir DIR status | enable | disable | acceptance LEVEL
      | trust-anchor add CA.pem [--max-acceptance LEVEL] | trust-anchor remove SHA256
      | revoke SHA256 | core-dir DIR
  agent verify --data-dir DIR        (the check the agent runs at start; exit 6 on failure)
  release sign-manifest [--dir dist] --cert SIGNER.pem --key SIGNER.key [--chain CA.pem …] [--version V]`;

const common = { json: { type: 'boolean' }, credentials: { type: 'string' } } as const;

function strings(p: ReturnType<typeof parse>, name: string): string[] {
  const v = p.values[name];
  return Array.isArray(v)
    ? v.filter((x): x is string => typeof x === 'string')
    : typeof v === 'string'
      ? [v]
      : [];
}

function readSigner(p: ReturnType<typeof parse>, usage: string): Signer {
  const chain = strings(p, 'chain').map((f) => readFileSync(f, 'utf8'));
  return {
    certPem: readFileSync(need(p, 'cert', usage), 'utf8'),
    keyPem: readFileSync(need(p, 'key', usage), 'utf8'),
    ...(chain.length > 0 ? { chainPems: chain } : {}),
  };
}

async function resolveHostId(api: ApiClient, nameOrId: string | undefined): Promise<string> {
  const hosts = await api.listHosts();
  if (nameOrId === undefined) {
    if (hosts.length === 1 && hosts[0] !== undefined) return hosts[0].id;
    throw usageError('give --host NAME (more than one host, or none)');
  }
  const h = hosts.find((x) => x.name === nameOrId || x.id === nameOrId);
  if (h === undefined) throw new HypersealError('HS_ERR_NOT_FOUND', `no host ${nameOrId}`);
  return h.id;
}

/* ------------------------------------------------------------------ key sets */

function keySetBody(p: ReturnType<typeof parse>): Record<string, unknown> {
  const file = str(p, 'file');
  if (file !== undefined) return JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  const owner = str(p, 'owner') ?? randomUUID();
  // Validated by the manager (validateKeySet): plain JSON here.
  const cert = (f: string): Record<string, string> => ({
    type: 'x509',
    certPem: readFileSync(f, 'utf8'),
    owner,
  });
  const hash = (h: string): Record<string, string> => ({ type: 'sha256', sha256: h, owner });
  const pk = str(p, 'pk');
  if (pk === undefined) throw usageError('--pk PK.pem is required (or --file)');
  return {
    pk: cert(pk),
    kek: strings(p, 'kek').map(cert),
    db: [...strings(p, 'db').map(cert), ...strings(p, 'db-hash').map(hash)],
    dbx: [...strings(p, 'dbx').map(cert), ...strings(p, 'dbx-hash').map(hash)],
  };
}

export async function secureBootCommand(argv: string[]): Promise<number> {
  const [noun, verb, ...rest] = argv;
  if (noun !== 'keyset' && noun !== 'key-set') throw usageError(SECURE_BOOT_HELP);
  const p = parse(
    rest,
    {
      ...common,
      name: { type: 'string' },
      file: { type: 'string' },
      owner: { type: 'string' },
      pk: { type: 'string' },
      kek: { type: 'string', multiple: true },
      db: { type: 'string', multiple: true },
      'db-hash': { type: 'string', multiple: true },
      dbx: { type: 'string', multiple: true },
      'dbx-hash': { type: 'string', multiple: true },
    },
    SECURE_BOOT_HELP,
  );
  const json = flag(p, 'json');
  const api = ApiClient.fromCredentials(str(p, 'credentials'));
  const show = (k: SecureBootKeySet): string =>
    [
      `key set ${k.name} (${k.id}), used by ${k.usedBy} VM(s)`,
      `  PK   ${k.summary.pk}`,
      ...k.summary.kek.map((e) => `  KEK  ${e}`),
      ...k.summary.db.map((e) => `  db   ${e}`),
      ...k.summary.dbx.map((e) => `  dbx  ${e}`),
    ].join('\n');
  try {
    switch (verb) {
      case 'list': {
        const sets = await api.listSecureBootKeySets();
        printResult(sets, json, () =>
          table([
            ['NAME', 'PK', 'KEK', 'DB', 'DBX', 'VMS', 'ID'],
            ...sets.map((k) => [
              k.name,
              k.summary.pk.slice(0, 30),
              k.summary.kek.length,
              k.summary.db.length,
              k.summary.dbx.length,
              k.usedBy,
              k.id,
            ]),
          ]),
        );
        return 0;
      }
      case 'show': {
        const k = await api.getSecureBootKeySet(p.positionals[0] ?? '');
        printResult(k, json, () => show(k));
        return 0;
      }
      case 'create': {
        const body = keySetBody(p);
        const k = await api.createSecureBootKeySet({
          ...body,
          name: str(p, 'name') ?? body.name ?? need(p, 'name', 'secureboot keyset create --name N …'),
        } as SecureBootKeySetCreate);
        printResult(k, json, () => `created ${show(k)}`);
        return 0;
      }
      case 'update': {
        const { name: _name, kind: _kind, ...body } = keySetBody(p);
        const k = await api.updateSecureBootKeySet(
          p.positionals[0] ?? '',
          body as unknown as SecureBootKeySetUpdate,
        );
        printResult(
          k,
          json,
          () => `updated ${show(k)}\n(VMs using it get the new keys at their next power-on)`,
        );
        return 0;
      }
      case 'remove': {
        const name = p.positionals[0] ?? '';
        await api.deleteSecureBootKeySet(name);
        printResult({ removed: name }, json, () => `removed key set ${name}`);
        return 0;
      }
      default:
        throw usageError(SECURE_BOOT_HELP);
    }
  } finally {
    api.close();
  }
}

/* ------------------------------------------------------------------ bundles */

/** Every regular file under dir as an upload (bundle.json and bundle.sig included). */
export function bundleUpload(dir: string): BundleUpload {
  const files: BundleUpload['files'] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const path = join(d, name);
      const st = statSync(path);
      if (st.isDirectory()) walk(path);
      else if (st.isFile()) {
        files.push({
          path: relative(dir, path).split('\\').join('/'),
          data: readFileSync(path).toString('base64'),
        });
      }
    }
  };
  walk(resolve(dir));
  return { files };
}

export async function bundleCommand(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const p = parse(
    rest,
    {
      ...common,
      name: { type: 'string' },
      version: { type: 'string' },
      vendor: { type: 'string' },
      acceptance: { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
      chain: { type: 'string', multiple: true },
      anchor: { type: 'string', multiple: true },
      host: { type: 'string' },
    },
    SECURE_BOOT_HELP,
  );
  const json = flag(p, 'json');
  const dir = p.positionals[0];
  switch (verb) {
    case 'build': {
      if (dir === undefined) throw usageError('bundle build DIR …');
      const usage = 'bundle build DIR --name N --version V --vendor V --acceptance LEVEL';
      const d = await buildBundle(dir, {
        name: need(p, 'name', usage),
        version: need(p, 'version', usage),
        vendor: need(p, 'vendor', usage),
        acceptance: parseAcceptanceLevel(need(p, 'acceptance', usage), '--acceptance'),
      });
      printResult(
        d,
        json,
        () => `built bundle ${d.name} ${d.version} (${d.acceptance}, ${d.files.length} files); sign it next`,
      );
      return 0;
    }
    case 'sign': {
      if (dir === undefined) throw usageError('bundle sign DIR --cert C --key K');
      const env = await signBundle(dir, readSigner(p, 'bundle sign DIR --cert C --key K [--chain CA.pem …]'));
      printResult(env, json, () => `signed ${dir} (${env.algorithm})`);
      return 0;
    }
    case 'verify': {
      if (dir === undefined) throw usageError('bundle verify DIR --anchor CA.pem …');
      const anchors = strings(p, 'anchor').map((f) => readFileSync(f, 'utf8'));
      if (anchors.length === 0) throw usageError('give at least one --anchor CA.pem (the trust anchors)');
      const level = str(p, 'acceptance');
      const r = await verifyBundle(
        dir,
        anchors,
        level === undefined ? {} : { minAcceptance: parseAcceptanceLevel(level) },
      );
      if (!r.ok) {
        throw new HypersealError(r.code, r.message, r.file !== undefined ? { file: r.file } : undefined);
      }
      printResult(
        r,
        json,
        () =>
          `bundle ${r.descriptor.name} ${r.descriptor.version} verified: ${r.descriptor.acceptance}, signed by ${r.signer.subject}`,
      );
      return 0;
    }
    case 'install':
    case 'list':
    case 'remove': {
      const api = ApiClient.fromCredentials(str(p, 'credentials'));
      try {
        const hostId = await resolveHostId(api, str(p, 'host'));
        if (verb === 'list') {
          const bundles = await api.listHostBundles(hostId);
          printResult(bundles, json, () =>
            table([
              ['NAME', 'VERSION', 'VENDOR', 'ACCEPTANCE', 'VERIFIED'],
              ...bundles.map((b) => [
                b.name,
                b.version,
                b.vendor,
                b.acceptance,
                b.verified ? 'yes' : `NO: ${b.problem?.code ?? ''}`,
              ]),
            ]),
          );
        } else if (verb === 'install') {
          if (dir === undefined) throw usageError('bundle install DIR --host HOST');
          const b = await api.installHostBundle(hostId, bundleUpload(dir));
          printResult(
            b,
            json,
            () =>
              `installed bundle ${b.name} ${b.version} (${b.acceptance})${b.verified ? '' : ' UNVERIFIED (host Secure Boot is off)'}`,
          );
        } else {
          if (dir === undefined) throw usageError('bundle remove NAME --host HOST');
          await api.deleteHostBundle(hostId, dir);
          printResult({ removed: dir }, json, () => `removed bundle ${dir}`);
        }
      } finally {
        api.close();
      }
      return 0;
    }
    default:
      throw usageError(SECURE_BOOT_HELP);
  }
}

/* ------------------------------------------------------------------ host status */

interface HostStatus {
  hostName: string;
  hostState: string;
  uefiSecureBoot: string;
  live: boolean;
  report: HostSecureBootReport | null;
}

export function renderHostStatus(s: HostStatus): string {
  const r = s.report;
  const v = r?.verification;
  return [
    `host ${s.hostName} (${s.hostState})${s.live ? '' : ' — agent unreachable: last known report'}`,
    `  machine UEFI Secure Boot: ${s.uefiSecureBoot}`,
    `  host Secure Boot:         ${r === null ? 'unknown (agent predates it)' : !r.configured ? 'not configured' : r.enabled ? 'on' : 'off'}`,
    `  verification:             ${v === undefined ? '-' : v.result}${v?.result === 'failed' ? ` — ${v.subject ?? ''}: ${v.file ?? ''} [${v.code ?? ''}] ${v.message ?? ''}` : ''}`,
    `  acceptance level:         ${r?.acceptance ?? '-'} (installed bundles: ${r?.effectiveAcceptance ?? 'none'})`,
    ...(r?.bundles ?? []).map(
      (b) =>
        `  bundle ${b.name} ${b.version} ${b.vendor} ${b.acceptance} ${b.verified ? 'verified' : `NOT VERIFIED ${b.problem?.code ?? ''}`}`,
    ),
  ].join('\n');
}

export async function hostSecureBootCommand(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  if (verb !== 'status') throw usageError('hyperseal host secure-boot status [HOST] [--json]');
  const p = parse(rest, common, 'hyperseal host secure-boot status [HOST] [--json]');
  const api = ApiClient.fromCredentials(str(p, 'credentials'));
  try {
    const hostId = await resolveHostId(api, p.positionals[0]);
    const s = (await api.getHostSecureBoot(hostId)) as HostStatus;
    printResult(s, flag(p, 'json'), () => renderHostStatus(s));
    return 0;
  } finally {
    api.close();
  }
}

/* ------------------------------------------------------------------ agent (offline, on the host) */

const AGENT_SB_USAGE =
  'hyperseal agent secure-boot --data-dir DIR status|enable|disable|acceptance L|trust-anchor add F|trust-anchor remove SHA256|revoke SHA256|core-dir DIR';

export async function agentSecureBootCommand(argv: string[]): Promise<number> {
  const p = parse(
    argv,
    { 'data-dir': { type: 'string' }, 'max-acceptance': { type: 'string' }, json: { type: 'boolean' } },
    AGENT_SB_USAGE,
  );
  const dataDir = need(p, 'data-dir', AGENT_SB_USAGE);
  const [verb, arg1, arg2] = p.positionals;
  const current: HostSecureBootConfig = loadHostSecureBootConfig(dataDir) ?? {
    enabled: false,
    acceptance: 'partner',
    trustAnchors: [],
    revokedCertificates: [],
  };
  let next: HostSecureBootConfig = current;
  switch (verb) {
    case 'status': {
      const sb = await HostSecureBoot.open(dataDir);
      const r = sb.report();
      printResult(r, flag(p, 'json'), () =>
        renderHostStatus({
          hostName: 'this host',
          hostState: 'local',
          uefiSecureBoot: '-',
          live: true,
          report: r,
        }),
      );
      return sb.failed ? 6 : 0;
    }
    case 'enable':
      await checkCanEnable(dataDir, current);
      next = { ...current, enabled: true };
      break;
    case 'disable':
      next = { ...current, enabled: false };
      break;
    case 'acceptance':
      next = { ...current, acceptance: parseAcceptanceLevel(arg1, 'acceptance') };
      break;
    case 'trust-anchor':
      if (arg1 === 'add' && arg2 !== undefined) {
        const certPem = readFileSync(arg2, 'utf8');
        certificateFingerprint256(certPem); // a real certificate
        const max = str(p, 'max-acceptance');
        next = {
          ...current,
          trustAnchors: [
            ...current.trustAnchors,
            {
              certPem,
              ...(max !== undefined ? { maxAcceptance: parseAcceptanceLevel(max, '--max-acceptance') } : {}),
            },
          ],
        };
      } else if (arg1 === 'remove' && arg2 !== undefined) {
        const fp = arg2.replace(/:/g, '').toLowerCase();
        next = {
          ...current,
          trustAnchors: current.trustAnchors.filter((a) => certificateFingerprint256(a.certPem) !== fp),
        };
      } else throw usageError(AGENT_SB_USAGE);
      break;
    case 'revoke':
      if (arg1 === undefined) throw usageError(AGENT_SB_USAGE);
      next = { ...current, revokedCertificates: [...current.revokedCertificates, arg1] };
      break;
    case 'core-dir':
      if (arg1 === undefined) throw usageError(AGENT_SB_USAGE);
      next = { ...current, coreDir: resolve(arg1) };
      break;
    default:
      throw usageError(AGENT_SB_USAGE);
  }
  if (next.enabled && verb !== 'enable') await checkCanEnable(dataDir, next);
  saveHostSecureBootConfig(dataDir, next);
  process.stdout.write(
    `host Secure Boot ${next.enabled ? 'on' : 'off'}, acceptance ${next.acceptance}, ${next.trustAnchors.length} trust anchor(s); restart the agent to apply\n`,
  );
  return 0;
}

/** `agent verify`: the check at start, without serving; exit 6 (HS_ERR_HOST_VERIFICATION_FAILED) names the file. */
export async function agentVerifyCommand(argv: string[]): Promise<number> {
  const p = parse(argv, { 'data-dir': { type: 'string' } }, 'hyperseal agent verify --data-dir DIR');
  const sb = await HostSecureBoot.open(need(p, 'data-dir', 'hyperseal agent verify --data-dir DIR'));
  const r = sb.report();
  if (r.verification.result === 'failed') throw sb.failure();
  process.stdout.write(
    `verification ${r.verification.result}${r.configured ? '' : ' (host Secure Boot is not configured)'}\n`,
  );
  return 0;
}

/* ------------------------------------------------------------------ release */

export async function releaseCommand(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const usage =
    'hyperseal release sign-manifest [--dir dist] --cert SIGNER.pem --key SIGNER.key [--chain CA.pem …] [--version V]';
  if (verb !== 'sign-manifest') throw usageError(usage);
  const p = parse(
    rest,
    {
      dir: { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
      chain: { type: 'string', multiple: true },
      version: { type: 'string' },
    },
    usage,
  );
  const dir = resolve(str(p, 'dir') ?? defaultCoreDir());
  const signer = readSigner(p, usage);
  const d = await buildManifest(dir, undefined, {
    name: 'hyperseal-agent',
    version: str(p, 'version') ?? '0.0.0',
    vendor: 'Hyperseal',
    acceptance: 'certified',
  });
  await signManifest(dir, signer);
  process.stdout.write(`signed the agent manifest over ${d.files.length} files in ${dir}\n`);
  return 0;
}
