/**
 * `hyperseal export`: the current posture as a posture file, such that applying it plans
 * nothing. Never a secret, nor key material: key providers are written with their servers
 * and default flag only (the manager gives out no certificate PEM and no private key, so
 * `caFile`, `clientCertFile` and `clientKeyFile` are for the operator to add when the
 * file is to create the provider elsewhere); a webhook's secret becomes a `secretFile`
 * path that the operator fills (read only when a rule is created); a TLS syslog target's
 * CA likewise becomes a `caFile` path.
 */
import { Document } from 'yaml';
import { isHypersealError } from '../errors.js';
import type { AlertRule, KeyProvider, SyslogTarget, Vm } from '../sdk/api.gen.js';
import type { Hyperseal } from '../sdk/hyperseal.js';
import { snapshotOf } from './apply.js';
import type { Snapshot } from './plan.js';
import type { Selector } from './schema.js';
import { POSTURE_VERSION } from './schema.js';
import { compileSelector } from './select.js';

/** Everything export reads; a section the user may not read is left out (and said). */
export async function readFullSnapshot(
  api: Hyperseal,
  warn: (message: string) => void = () => undefined,
): Promise<Snapshot> {
  const optional = async <T>(what: string, read: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await read();
    } catch (err) {
      if (!isHypersealError(err, 'HS_ERR_AUTH_FORBIDDEN')) throw err;
      warn(`${what} left out: ${err.message}`);
      return undefined;
    }
  };
  const [vms, policies, keySets] = await Promise.all([
    api.listAllVms(),
    api.listEncryptionPolicies(),
    api.listSecureBootKeySets(),
  ]);
  const keyProviders = await optional('keyProviders', () => api.listKeyProviders());
  const alertRules = await optional('alertRules', () => api.listAlertRules());
  const syslogTargets = await optional('syslogTargets', () => api.listSyslogTargets());
  return snapshotOf({ vms, policies, keySets, keyProviders, alertRules, syslogTargets });
}

/** A file-name-safe form of a name, for the paths export suggests. */
function slug(name: string): string {
  return (
    name
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '-')
      .replace(/^-|-$/g, '') || 'x'
  );
}

function vmEntry(vm: Vm, snap: Snapshot): Record<string, unknown> {
  const policy = vm.encryption
    ? (snap.policies.find((p) => p.id === vm.encryption?.policyId)?.name ?? vm.encryption.policyId)
    : undefined;
  const keySet = vm.config.secureBootKeySet ?? null;
  const keySetName =
    keySet === null ? undefined : (snap.keySets.find((k) => k.id === keySet)?.name ?? keySet);
  const mode = vm.config.migrationEncryption ?? 'opportunistic';
  return {
    name: `VM ${vm.name}`,
    select: { namePattern: vm.name },
    encryption: policy === undefined ? 'none' : { policy },
    secureBoot:
      keySetName !== undefined && vm.config.secureBoot
        ? { enabled: true, keySet: keySetName }
        : vm.config.secureBoot,
    vtpm: vm.config.vtpm === true,
    // An encrypted VM migrates encrypted whatever its setting says: only 'required' is
    // written for it (a posture cannot ask for less).
    ...(vm.encryption === null || mode === 'required' ? { migrationEncryption: mode } : {}),
  };
}

function keyProviderEntry(p: KeyProvider): Record<string, unknown> {
  return {
    name: p.name,
    servers: p.servers.map((s) => ({ host: s.host, port: s.port })),
    ...(p.isDefault ? { default: true } : {}),
  };
}

function alertRuleEntry(r: AlertRule): Record<string, unknown> {
  const { id: _id, actions, ...rest } = r;
  const hook = actions.webhook as { url?: string } | undefined;
  const { webhook: _w, ...otherActions } = actions;
  return {
    ...rest,
    actions: {
      ...otherActions,
      ...(hook?.url !== undefined
        ? { webhook: { url: hook.url, secretFile: `secrets/alert-${slug(r.name)}.webhook-secret` } }
        : {}),
    },
  };
}

function syslogEntry(t: SyslogTarget): Record<string, unknown> {
  return {
    name: t.name,
    host: t.host,
    port: t.port,
    transport: t.transport,
    format: t.format,
    ...(t.transport === 'tls' ? { caFile: `certs/syslog-${slug(t.name)}-ca.pem` } : {}),
  };
}

/** The posture document (plain data) for a snapshot; `select` limits the VMs. */
export function exportPosture(snap: Snapshot, select?: Selector): Record<string, unknown> {
  const matcher = select === undefined ? () => true : compileSelector(select);
  const vms = [...snap.vms].filter(matcher).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const byName = <T extends { name: string }>(xs: T[]): T[] =>
    [...xs].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return {
    version: POSTURE_VERSION,
    ...(snap.keyProviders ? { keyProviders: byName(snap.keyProviders).map(keyProviderEntry) } : {}),
    ...(snap.alertRules ? { alertRules: byName(snap.alertRules).map(alertRuleEntry) } : {}),
    ...(snap.syslogTargets ? { syslogTargets: byName(snap.syslogTargets).map(syslogEntry) } : {}),
    vms: vms.map((vm) => vmEntry(vm, snap)),
  };
}

const HEADER = `Hyperseal posture, written by \`hyperseal export\` (docs/posture.md).
Apply with: hyperseal apply -f FILE --dry-run, then without --dry-run.
No secret and no key material is in this file. Key providers list servers only: add
caFile, clientCertFile and clientKeyFile to create one where it does not exist.
secretFile and caFile paths are placeholders, read only when a rule or target is created.`;

export function renderPostureYaml(doc: Record<string, unknown>): string {
  const d = new Document(doc);
  d.commentBefore = HEADER.split('\n')
    .map((l) => ` ${l}`)
    .join('\n');
  return d.toString({ lineWidth: 0 });
}
