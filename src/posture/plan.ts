/**
 * The planner (docs/posture.md#semantics): the current state (a snapshot read through the
 * API) and a posture → the changes that would make the state match, grouped per rule,
 * each `{ kind, object, field, from, to }`, and the steps that carry them out. Pure and
 * deterministic: the same snapshot and posture give the same plan, in the same order.
 *
 * - Rules do not override each other: when two rules select the same VM and want
 *   different values for one setting, planning is refused (HS_ERR_POSTURE_CONFLICT);
 *   rules that agree, or set different settings, combine.
 * - What the manager would refuse is found here and marked `blocked` with the reason
 *   (Secure Boot or a vTPM on a BIOS VM, encrypting a running VM, …): the plan shows it
 *   up front, and apply stops when it reaches it.
 * - Nothing the posture does not mention is changed, and nothing is ever deleted: an alert
 *   rule or syslog target that differs is updated in place (one call, same id).
 */
import { HypersealError } from '../errors.js';
import { ruleToPublic, validateRule } from '../events/alerts/rule.js';
import type {
  AlertRule,
  AlertRuleCreate,
  EncryptionPolicy,
  KeyProvider,
  SecureBootKeySet,
  SyslogTarget,
  Vm,
  VmPatch,
} from '../sdk/api.gen.js';
import type {
  AlertRuleSpec,
  KeyProviderSpec,
  MigrationMode,
  Posture,
  SyslogTargetSpec,
  VmRule,
} from './schema.js';
import { compileSelector, describeSelector } from './select.js';

/** What the planner reads. Sections the posture does not manage may be left out. */
export interface Snapshot {
  vms: Vm[];
  policies: EncryptionPolicy[];
  keySets: Pick<SecureBootKeySet, 'id' | 'name'>[];
  keyProviders?: KeyProvider[];
  alertRules?: AlertRule[];
  syslogTargets?: SyslogTarget[];
}

export type ObjectKind = 'vm' | 'key-provider' | 'alert-rule' | 'syslog-target';

export interface PlannedChange {
  kind: ObjectKind;
  /** The object's name. */
  object: string;
  field: string;
  from: unknown;
  to: unknown;
  /** Why it cannot be done (the manager would refuse it); absent: it can. */
  blocked?: string;
  /** Done as a side effect of another change of the same step (shown, not sent). */
  implied?: boolean;
  note?: string;
}

/** One API operation that carries out some changes. */
export type StepOp =
  | { op: 'vm.update'; vmId: string; patch: VmPatch }
  | { op: 'vm.encrypt'; vmId: string; policyId: string }
  | { op: 'vm.decrypt'; vmId: string }
  | { op: 'vm.rekey'; vmId: string; policyId: string }
  | { op: 'key-provider.create'; spec: KeyProviderSpec }
  | {
      op: 'key-provider.update';
      providerId: string;
      servers?: { host: string; port: number }[];
      caFile?: string;
    }
  | { op: 'key-provider.set-certificate'; providerId: string; certFile: string }
  | { op: 'key-provider.set-default'; providerId: string }
  | { op: 'alert-rule.create'; spec: AlertRuleSpec }
  | { op: 'alert-rule.update'; ruleId: string; spec: AlertRuleSpec }
  | { op: 'syslog-target.create'; spec: SyslogTargetSpec }
  | { op: 'syslog-target.update'; targetId: string; spec: SyslogTargetSpec };

export type Step = StepOp & {
  /** The rule it comes from: `vms[0]`, `keyProviders[1]`, … */
  rule: string;
  kind: ObjectKind;
  object: string;
  changes: PlannedChange[];
  /** The first blocked change's reason: apply stops here. */
  blocked?: string;
};

export interface PlanGroup {
  rule: string;
  /** The rule's name, or its selector. */
  title: string;
  /** VM rules: how many VMs the selector matched, and how many of them change. */
  matched?: number;
  vmsChanged?: number;
  changes: PlannedChange[];
}

export interface PlanSummary {
  changes: number;
  vmChanges: number;
  vms: number;
  blocked: number;
  keyProviders: { create: number; update: number };
  alertRules: { create: number; update: number };
  syslogTargets: { create: number; update: number };
}

export interface Plan {
  groups: PlanGroup[];
  steps: Step[];
  summary: PlanSummary;
}

/** Settings a VM rule can want, as the merge keeps them. */
interface Want {
  encryption?: { value: { policy: string } | 'none'; rule: string };
  secureBoot?: { value: boolean; rule: string };
  keySet?: { value: string; rule: string };
  vtpm?: { value: boolean; rule: string };
  migrationEncryption?: { value: MigrationMode; rule: string };
}

function same(a: unknown, b: unknown): boolean {
  return canonical(a) === canonical(b);
}

/** JSON with object keys sorted: equal values give equal strings. */
export function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    typeof x === 'object' && x !== null && !Array.isArray(x)
      ? Object.fromEntries(
          Object.keys(x)
            .sort()
            .map((k) => [k, (x as Record<string, unknown>)[k]]),
        )
      : x,
  );
}

function merge<K extends keyof Want>(
  want: Want,
  field: K,
  value: NonNullable<Want[K]>['value'],
  rule: string,
  vm: Vm,
  label: string,
): void {
  const have = want[field];
  if (have === undefined) {
    want[field] = { value, rule } as Want[K];
    return;
  }
  if (!same(have.value, value)) {
    throw new HypersealError(
      'HS_ERR_POSTURE_CONFLICT',
      `VM ${vm.name} is selected by ${have.rule} and ${rule}, which want different ${label}: ${show(have.value)} and ${show(value)}`,
      { vm: vm.name, field: label, rules: [have.rule, rule] },
    );
  }
}

function show(v: unknown): string {
  if (v === 'none') return 'none';
  if (typeof v === 'object' && v !== null && 'policy' in v) return `policy '${String(v.policy)}'`;
  return typeof v === 'string' ? `'${v}'` : JSON.stringify(v);
}

const isStopped = (vm: Vm): boolean => vm.state === 'stopped' || vm.state === 'crashed';

function ruleTitle(r: VmRule): string {
  return r.name ?? describeSelector(r.select);
}

function vmSteps(vm: Vm, want: Want, snap: Snapshot): { steps: Step[]; changes: PlannedChange[] } {
  const steps: Step[] = [];
  const base = { kind: 'vm' as const, object: vm.name };
  const bios = vm.config.firmware !== 'efi';
  const policyName = (id: string): string => snap.policies.find((p) => p.id === id)?.name ?? id;
  const keySetName = (id: string | null | undefined): string =>
    id === null || id === undefined ? 'microsoft' : (snap.keySets.find((k) => k.id === id)?.name ?? id);

  // Configuration (one PATCH per rule that contributes): secureBoot, key set, vTPM, migration.
  const patches = new Map<string, { patch: VmPatch; changes: PlannedChange[] }>();
  const add = (rule: string, key: keyof VmPatch, value: unknown, c: PlannedChange): void => {
    const p = patches.get(rule) ?? { patch: {}, changes: [] };
    (p.patch as Record<string, unknown>)[key] = value;
    p.changes.push(c);
    patches.set(rule, p);
  };
  if (want.secureBoot && want.secureBoot.value !== vm.config.secureBoot) {
    add(want.secureBoot.rule, 'secureBoot', want.secureBoot.value, {
      ...base,
      field: 'secureBoot',
      from: vm.config.secureBoot,
      to: want.secureBoot.value,
      ...(want.secureBoot.value && bios ? { blocked: 'BIOS firmware, secure boot impossible' } : {}),
      ...(!isStopped(vm) ? { note: 'applies at the next power-on' } : {}),
    });
  }
  if (want.keySet) {
    const target =
      want.keySet.value === 'microsoft'
        ? null
        : (snap.keySets.find((k) => k.name === want.keySet?.value || k.id === want.keySet?.value)?.id ??
          undefined);
    const current = vm.config.secureBootKeySet ?? null;
    if (target === undefined) {
      add(want.keySet.rule, 'secureBootKeySet', null, {
        ...base,
        field: 'secureBootKeySet',
        from: keySetName(current),
        to: want.keySet.value,
        blocked: `no Secure Boot key set named '${want.keySet.value}'`,
      });
    } else if (target !== current) {
      add(want.keySet.rule, 'secureBootKeySet', target, {
        ...base,
        field: 'secureBootKeySet',
        from: keySetName(current),
        to: keySetName(target),
        ...(bios ? { blocked: 'BIOS firmware, secure boot impossible' } : {}),
      });
    }
  }
  if (want.vtpm && want.vtpm.value !== (vm.config.vtpm === true)) {
    add(want.vtpm.rule, 'vtpm', want.vtpm.value, {
      ...base,
      field: 'vtpm',
      from: vm.config.vtpm === true,
      to: want.vtpm.value,
      ...(want.vtpm.value && bios ? { blocked: 'BIOS firmware, a vTPM needs EFI' } : {}),
      ...(!isStopped(vm) ? { note: 'applies at the next power-on' } : {}),
    });
  }
  const encryptedNow = vm.encryption !== null;
  const encryptedAfter = want.encryption === undefined ? encryptedNow : want.encryption.value !== 'none';
  const currentMode: MigrationMode = vm.config.migrationEncryption ?? 'opportunistic';
  if (want.migrationEncryption && want.migrationEncryption.value !== currentMode) {
    add(want.migrationEncryption.rule, 'migrationEncryption', want.migrationEncryption.value, {
      ...base,
      field: 'migrationEncryption',
      from: currentMode,
      to: want.migrationEncryption.value,
      ...(encryptedAfter && want.migrationEncryption.value !== 'required'
        ? { blocked: 'encrypted VMs always migrate encrypted (required)' }
        : {}),
    });
  } else if (want.migrationEncryption && encryptedAfter && want.migrationEncryption.value !== 'required') {
    // Already so, but it contradicts the encryption the VM has (or gets).
    add(want.migrationEncryption.rule, 'migrationEncryption', want.migrationEncryption.value, {
      ...base,
      field: 'migrationEncryption',
      from: currentMode,
      to: want.migrationEncryption.value,
      blocked: 'encrypted VMs always migrate encrypted (required)',
    });
  }
  for (const [rule, { patch, changes }] of [...patches].sort(([a], [b]) => ruleOrder(a, b))) {
    steps.push(step({ op: 'vm.update', vmId: vm.id, patch }, rule, base, changes));
  }

  // Encryption last: it needs the VM powered off, and sets migrationEncryption itself.
  const enc = want.encryption;
  if (enc !== undefined) {
    const from = vm.encryption === null ? 'none' : policyName(vm.encryption.policyId);
    if (enc.value === 'none') {
      if (vm.encryption !== null) {
        steps.push(
          step({ op: 'vm.decrypt', vmId: vm.id }, enc.rule, base, [
            {
              ...base,
              field: 'encryption',
              from,
              to: 'none',
              ...(!isStopped(vm) ? { blocked: `${vm.state}: decrypting needs the VM powered off` } : {}),
            },
          ]),
        );
      }
    } else {
      const wanted = enc.value.policy;
      const policy = snap.policies.find((p) => p.name === wanted || p.id === wanted);
      if (vm.encryption === null) {
        const changes: PlannedChange[] = [
          {
            ...base,
            field: 'encryption',
            from: 'none',
            to: policy?.name ?? wanted,
            ...(policy === undefined
              ? { blocked: `no encryption policy named '${wanted}'` }
              : !isStopped(vm)
                ? { blocked: `${vm.state}: encrypting needs the VM powered off` }
                : {}),
          },
        ];
        const modeAfterPatches = want.migrationEncryption?.value ?? currentMode;
        if (modeAfterPatches !== 'required') {
          changes.push({
            ...base,
            field: 'migrationEncryption',
            from: modeAfterPatches,
            to: 'required',
            implied: true,
            note: 'set by encrypting',
          });
        }
        steps.push(
          step({ op: 'vm.encrypt', vmId: vm.id, policyId: policy?.id ?? wanted }, enc.rule, base, changes),
        );
      } else if (policy === undefined || vm.encryption.policyId !== policy.id) {
        // Another policy: a shallow rekey under it (a new KEK from its provider); the VM
        // stays encrypted throughout and may run.
        steps.push(
          step({ op: 'vm.rekey', vmId: vm.id, policyId: policy?.id ?? wanted }, enc.rule, base, [
            {
              ...base,
              field: 'encryption',
              from,
              to: policy?.name ?? wanted,
              ...(policy === undefined
                ? { blocked: `no encryption policy named '${wanted}'` }
                : { note: 'rekeyed under the new policy (new KEK from its provider)' }),
            },
          ]),
        );
      }
    }
  }
  return { steps, changes: steps.flatMap((s) => s.changes) };
}

function step(
  op: StepOp,
  rule: string,
  base: { kind: ObjectKind; object: string },
  changes: PlannedChange[],
): Step {
  const blocked = changes.find((c) => c.blocked !== undefined)?.blocked;
  return { ...op, rule, ...base, changes, ...(blocked !== undefined ? { blocked } : {}) };
}

/** `vms[2]` before `vms[10]`. */
function ruleOrder(a: string, b: string): number {
  const na = Number(/\[(\d+)\]/.exec(a)?.[1] ?? 0);
  const nb = Number(/\[(\d+)\]/.exec(b)?.[1] ?? 0);
  return na - nb || (a < b ? -1 : a > b ? 1 : 0);
}

function planKeyProvider(spec: KeyProviderSpec, current: KeyProvider[]): Step[] {
  const base = { kind: 'key-provider' as const, object: spec.name };
  const have = current.find((p) => p.name === spec.name);
  const servers = spec.servers.map((s) => `${s.host}:${s.port}`);
  if (have === undefined) {
    const missing = (['caFile', 'clientCertFile', 'clientKeyFile'] as const).filter(
      (k) => spec[k] === undefined,
    );
    const changes: PlannedChange[] = [
      {
        ...base,
        field: 'servers',
        from: null,
        to: servers,
        ...(missing.length > 0
          ? { blocked: `creating key provider ${spec.name} needs ${missing.join(', ')}` }
          : {}),
      },
    ];
    if (spec.default === true) changes.push({ ...base, field: 'default', from: false, to: true });
    return [step({ op: 'key-provider.create', spec }, spec.key, base, changes)];
  }
  const steps: Step[] = [];
  const haveServers = have.servers.map((s) => `${s.host}:${s.port}`);
  const update: { servers?: KeyServerList; caFile?: string } = {};
  const changes: PlannedChange[] = [];
  if (!same(haveServers, servers)) {
    update.servers = spec.servers;
    changes.push({ ...base, field: 'servers', from: haveServers, to: servers });
  }
  if (spec.caFile !== undefined && spec.caSha256 !== undefined) {
    const haveCa = have.caCertificates.map((c) => c.sha256).sort();
    const wantCa = [...spec.caSha256].sort();
    if (!same(haveCa, wantCa)) {
      update.caFile = spec.caFile;
      changes.push({ ...base, field: 'caCertificates', from: haveCa.map(short), to: wantCa.map(short) });
    }
  }
  if (changes.length > 0) {
    steps.push(step({ op: 'key-provider.update', providerId: have.id, ...update }, spec.key, base, changes));
  }
  if (
    spec.clientCertFile !== undefined &&
    spec.clientCertSha256 !== undefined &&
    spec.clientCertSha256 !== have.clientCertificate?.sha256
  ) {
    steps.push(
      step(
        { op: 'key-provider.set-certificate', providerId: have.id, certFile: spec.clientCertFile },
        spec.key,
        base,
        [
          {
            ...base,
            field: 'clientCertificate',
            from: have.clientCertificate ? short(have.clientCertificate.sha256) : null,
            to: short(spec.clientCertSha256),
            note: 'a renewal for the same key; a new key means a new provider',
          },
        ],
      ),
    );
  }
  if (spec.default === true && !have.isDefault) {
    steps.push(
      step({ op: 'key-provider.set-default', providerId: have.id }, spec.key, base, [
        { ...base, field: 'default', from: false, to: true },
      ]),
    );
  }
  return steps;
}

type KeyServerList = { host: string; port: number }[];

function short(sha256: string): string {
  return `sha256:${sha256.slice(0, 16)}`;
}

/**
 * The alert rule a posture entry asks for, as the API takes it; `webhookSecret` is read
 * from the entry's secret file only by the step that sends it (a placeholder for planning).
 */
export function alertRuleInput(spec: AlertRuleSpec, webhookSecret: () => string): AlertRuleCreate {
  const hook = spec.actions.webhook;
  return {
    name: spec.name,
    enabled: spec.enabled,
    severity: spec.severity,
    match: spec.match,
    actions: {
      ...(spec.actions.event !== undefined ? { event: spec.actions.event } : {}),
      ...(spec.actions.syslog !== undefined ? { syslog: spec.actions.syslog } : {}),
      ...(hook ? { webhook: { url: hook.url, secret: webhookSecret() } } : {}),
    },
  };
}

/** A rule as the manager would show it once stored: its public form without the id. */
export function publicAlertRule(spec: AlertRuleSpec): Record<string, unknown> {
  const rule = validateRule({ id: 'posture', ...alertRuleInput(spec, () => 'x'.repeat(16)) });
  const { id: _id, ...rest } = JSON.parse(JSON.stringify(ruleToPublic(rule))) as Record<string, unknown>;
  return rest;
}

function planAlertRule(spec: AlertRuleSpec, current: AlertRule[]): Step[] {
  const base = { kind: 'alert-rule' as const, object: spec.name };
  const want = publicAlertRule(spec);
  const have = current.find((r) => r.name === spec.name);
  if (have === undefined) {
    const { name: _name, ...shown } = want;
    return [
      step({ op: 'alert-rule.create', spec }, spec.key, base, [
        { ...base, field: 'rule', from: null, to: shown },
      ]),
    ];
  }
  const { id, ...haveRest } = JSON.parse(JSON.stringify(have)) as Record<string, unknown> & { id: string };
  const changes: PlannedChange[] = [];
  for (const field of [...new Set([...Object.keys(want), ...Object.keys(haveRest)])].sort()) {
    if (!same(haveRest[field], want[field])) {
      changes.push({
        ...base,
        field,
        from: haveRest[field] ?? null,
        to: want[field] ?? null,
      });
    }
  }
  return changes.length === 0
    ? []
    : [step({ op: 'alert-rule.update', ruleId: id, spec }, spec.key, base, changes)];
}

function planSyslogTarget(spec: SyslogTargetSpec, current: SyslogTarget[]): Step[] {
  const base = { kind: 'syslog-target' as const, object: spec.name };
  const want = { host: spec.host, port: spec.port, transport: spec.transport, format: spec.format };
  const have = current.find((t) => t.name === spec.name);
  if (have === undefined) {
    return [
      step({ op: 'syslog-target.create', spec }, spec.key, base, [
        {
          ...base,
          field: 'target',
          from: null,
          to: `${spec.transport}://${spec.host}:${spec.port} (${spec.format})`,
        },
      ]),
    ];
  }
  const changes: PlannedChange[] = [];
  for (const field of ['host', 'port', 'transport', 'format'] as const) {
    if (have[field] !== want[field]) {
      changes.push({
        ...base,
        field,
        from: have[field],
        to: want[field],
      });
    }
  }
  return changes.length === 0
    ? []
    : [step({ op: 'syslog-target.update', targetId: have.id, spec }, spec.key, base, changes)];
}

/** The plan that makes `snap` match `posture`. Throws HS_ERR_POSTURE_CONFLICT. */
export function planPosture(posture: Posture, snap: Snapshot): Plan {
  const groups: PlanGroup[] = [];
  const steps: Step[] = [];
  const push = (rule: string, title: string, ruleSteps: Step[], extra: Partial<PlanGroup> = {}): void => {
    groups.push({ rule, title, ...extra, changes: ruleSteps.flatMap((s) => s.changes) });
    steps.push(...ruleSteps);
  };
  for (const spec of posture.keyProviders ?? []) {
    push(spec.key, spec.name, planKeyProvider(spec, snap.keyProviders ?? []));
  }
  for (const spec of posture.alertRules ?? []) {
    push(spec.key, spec.name, planAlertRule(spec, snap.alertRules ?? []));
  }
  for (const spec of posture.syslogTargets ?? []) {
    push(spec.key, spec.name, planSyslogTarget(spec, snap.syslogTargets ?? []));
  }

  const rules = posture.vms ?? [];
  if (rules.length > 0) {
    const vms = [...snap.vms].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const matchers = rules.map((r) => compileSelector(r.select));
    const matched = rules.map(() => 0);
    const vmStepsAll: Step[] = [];
    for (const vm of vms) {
      const want: Want = {};
      rules.forEach((r, i) => {
        if (!(matchers[i] as (vm: Vm) => boolean)(vm)) return;
        matched[i] = (matched[i] ?? 0) + 1;
        if (r.encryption !== undefined) merge(want, 'encryption', r.encryption, r.key, vm, 'encryption');
        if (r.secureBoot !== undefined) {
          merge(want, 'secureBoot', r.secureBoot.enabled, r.key, vm, 'secureBoot');
          if (r.secureBoot.keySet !== undefined)
            merge(want, 'keySet', r.secureBoot.keySet, r.key, vm, 'secureBoot.keySet');
        }
        if (r.vtpm !== undefined) merge(want, 'vtpm', r.vtpm, r.key, vm, 'vtpm');
        if (r.migrationEncryption !== undefined)
          merge(want, 'migrationEncryption', r.migrationEncryption, r.key, vm, 'migrationEncryption');
      });
      vmStepsAll.push(...vmSteps(vm, want, snap).steps);
    }
    rules.forEach((r, i) => {
      const ruleSteps = vmStepsAll.filter((s) => s.rule === r.key);
      push(r.key, ruleTitle(r), ruleSteps, {
        matched: matched[i] ?? 0,
        vmsChanged: new Set(ruleSteps.map((s) => s.object)).size,
      });
    });
  }

  const all = steps.flatMap((s) => s.changes).filter((c) => c.implied !== true);
  const vmChanges = all.filter((c) => c.kind === 'vm');
  const count = (op: Step['op']): number => steps.filter((s) => s.op === op).length;
  return {
    groups,
    steps,
    summary: {
      changes: all.length,
      vmChanges: vmChanges.length,
      vms: new Set(vmChanges.map((c) => c.object)).size,
      blocked: all.filter((c) => c.blocked !== undefined).length,
      keyProviders: {
        create: count('key-provider.create'),
        update: new Set(
          steps
            .filter((s) => s.kind === 'key-provider' && s.op !== 'key-provider.create')
            .map((s) => s.object),
        ).size,
      },
      alertRules: { create: count('alert-rule.create'), update: count('alert-rule.update') },
      syslogTargets: { create: count('syslog-target.create'), update: count('syslog-target.update') },
    },
  };
}

/** `3 changes on 2 VMs, 1 alert rule to create, 1 blocked` — or `nothing to change`. */
export function summaryLine(s: PlanSummary): string {
  const parts: string[] = [];
  const n = (k: number, one: string, many = `${one}s`): string => `${k} ${k === 1 ? one : many}`;
  if (s.vmChanges > 0) parts.push(`${n(s.vmChanges, 'change')} on ${n(s.vms, 'VM')}`);
  if (s.keyProviders.create > 0) parts.push(`${n(s.keyProviders.create, 'key provider')} to create`);
  if (s.keyProviders.update > 0) parts.push(`${n(s.keyProviders.update, 'key provider')} to update`);
  if (s.alertRules.create > 0) parts.push(`${n(s.alertRules.create, 'alert rule')} to create`);
  if (s.alertRules.update > 0) parts.push(`${n(s.alertRules.update, 'alert rule')} to update`);
  if (s.syslogTargets.create > 0) parts.push(`${n(s.syslogTargets.create, 'syslog target')} to create`);
  if (s.syslogTargets.update > 0) parts.push(`${n(s.syslogTargets.update, 'syslog target')} to update`);
  if (parts.length === 0) return 'nothing to change: the state matches the posture';
  if (s.blocked > 0) parts.push(`${n(s.blocked, 'change')} blocked (apply stops at the first)`);
  return parts.join(', ');
}

/** A value as the plan table shows it. */
export function formatValue(v: unknown): string {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'string') return v;
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return `[${v.join(', ')}]`;
  return canonical(v);
}

/** The plan as a readable table: `vm web-01  secureBoot  false → true`, per rule. */
export function renderPlan(plan: Plan): string {
  const lines: string[] = [];
  for (const g of plan.groups) {
    const counts =
      g.matched === undefined
        ? ''
        : ` — ${g.matched} VM${g.matched === 1 ? '' : 's'} matched, ${g.vmsChanged ?? 0} to change`;
    lines.push(`${g.rule} ${g.title}${counts}`);
    if (g.changes.length === 0) {
      lines.push('  (no change)');
      continue;
    }
    const rows = g.changes.map((c) => [
      `${c.kind} ${c.object}`,
      c.field,
      `${formatValue(c.from)} → ${formatValue(c.to)}`,
      [c.blocked !== undefined ? `BLOCKED: ${c.blocked}` : '', c.note ?? '']
        .filter((x) => x !== '')
        .join('; '),
    ]);
    const widths = [0, 1, 2].map((i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
    for (const r of rows) {
      lines.push(
        ('  ' + r.map((cell, i) => (i < 3 ? cell.padEnd(widths[i] ?? 0) : cell)).join('  ')).trimEnd(),
      );
    }
  }
  lines.push(summaryLine(plan.summary));
  return lines.join('\n');
}
