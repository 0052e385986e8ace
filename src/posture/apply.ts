/**
 * Carrying out a plan through the typed SDK, one step at a time and in plan order. Every
 * change goes through the ordinary API, so each records its ordinary event (from → to).
 * The first step that is blocked (the plan says why) or that the manager refuses stops
 * the run: the steps before it stay done, the ones after it are not tried, and the
 * outcome lists both. Encryption and decryption run as tasks whose progress is reported.
 */
import { HypersealError } from '../errors.js';
import type { AlertRuleCreate, Task } from '../sdk/api.gen.js';
import type { Hyperseal } from '../sdk/hyperseal.js';
import { taskError } from '../sdk/hyperseal.js';
import { readReferenced } from './files.js';
import type { Plan, Snapshot, Step } from './plan.js';
import { alertRuleInput } from './plan.js';
import type { AlertRuleSpec, Posture, SyslogTargetSpec } from './schema.js';

/** Reads what the posture manages (only that: a section it omits needs no privilege). */
export async function readSnapshot(api: Hyperseal, posture: Posture): Promise<Snapshot> {
  const vmsManaged = (posture.vms?.length ?? 0) > 0;
  const [vms, policies, keySets, keyProviders, alertRules, syslogTargets] = await Promise.all([
    vmsManaged ? api.listAllVms() : Promise.resolve([]),
    vmsManaged ? api.listEncryptionPolicies() : Promise.resolve([]),
    vmsManaged && posture.vms?.some((r) => r.secureBoot?.keySet !== undefined)
      ? api.listSecureBootKeySets()
      : Promise.resolve([]),
    posture.keyProviders ? api.listKeyProviders() : Promise.resolve(undefined),
    posture.alertRules ? api.listAlertRules() : Promise.resolve(undefined),
    posture.syslogTargets ? api.listSyslogTargets() : Promise.resolve(undefined),
  ]);
  return snapshotOf({ vms, policies, keySets, keyProviders, alertRules, syslogTargets });
}

/** A snapshot from what was read; a section left unread (undefined) is not managed. */
export function snapshotOf(read: {
  vms: Snapshot['vms'];
  policies: Snapshot['policies'];
  keySets: readonly { id: string; name: string }[];
  keyProviders: Snapshot['keyProviders'] | undefined;
  alertRules: Snapshot['alertRules'] | undefined;
  syslogTargets: Snapshot['syslogTargets'] | undefined;
}): Snapshot {
  const { keyProviders, alertRules, syslogTargets } = read;
  return {
    vms: read.vms,
    policies: read.policies,
    keySets: read.keySets.map((k) => ({ id: k.id, name: k.name })),
    ...(keyProviders ? { keyProviders } : {}),
    ...(alertRules ? { alertRules } : {}),
    ...(syslogTargets ? { syslogTargets } : {}),
  };
}

export interface StepOutcome {
  step: Step;
  /** The task that carried it out (encrypt, decrypt). */
  taskId?: string;
}

export interface ApplyOutcome {
  done: StepOutcome[];
  /** The step that stopped the run (blocked or refused), first, then the ones not tried. */
  notDone: Step[];
  error?: HypersealError;
}

export interface ApplyOptions {
  acceptNoBackup?: boolean;
  /**
   * How many encrypt/decrypt tasks (the long steps) run at once when the plan has several
   * in a row (default 1). The first refusal still stops the run: no new one starts, those
   * under way finish, and done / not done say exactly which.
   */
  parallel?: number;
  /** Called as each step starts (index from 0), and with each task poll. */
  onStep?: (index: number, step: Step) => void;
  onTask?: (index: number, step: Step, task: Task) => void;
  onStepDone?: (index: number, step: Step) => void;
}

/** One-line description of a step, for progress: `vm web-01: encrypt`. */
export function describeStep(s: Step): string {
  const what = s.changes
    .filter((c) => c.implied !== true)
    .map((c) => c.field)
    .join(', ');
  const verb: Record<Step['op'], string> = {
    'vm.update': 'set',
    'vm.encrypt': 'encrypt',
    'vm.decrypt': 'decrypt',
    'vm.rekey': 'rekey under its policy',
    'key-provider.create': 'create',
    'key-provider.update': 'update',
    'key-provider.set-certificate': 'install certificate',
    'key-provider.set-default': 'make default',
    'alert-rule.create': 'create',
    'alert-rule.update': 'update',
    'syslog-target.create': 'create',
    'syslog-target.update': 'update',
  };
  return `${s.kind} ${s.object}: ${verb[s.op]}${s.op === 'vm.update' ? ` ${what}` : ''}`;
}

/** The body of an encrypt or a rekey under a policy (both may meet a never-backed-up key server). */
function underPolicy(policyId: string, opts: ApplyOptions): { policyId: string; acceptNoBackup?: true } {
  return { policyId, ...(opts.acceptNoBackup === true ? { acceptNoBackup: true as const } : {}) };
}

function alertRuleBody(spec: AlertRuleSpec): AlertRuleCreate {
  return alertRuleInput(spec, () =>
    readReferenced(spec.actions.webhook?.secretFile ?? '', `${spec.key}.actions.webhook.secretFile`).trim(),
  );
}

function syslogBody(spec: SyslogTargetSpec): Parameters<Hyperseal['createSyslogTarget']>[0] {
  return {
    name: spec.name,
    host: spec.host,
    port: spec.port,
    transport: spec.transport,
    format: spec.format,
    ...(spec.caFile !== undefined ? { caPem: readReferenced(spec.caFile, `${spec.key}.caFile`) } : {}),
  };
}

async function runTask(api: Hyperseal, started: Promise<Task>, onTask: (t: Task) => void): Promise<Task> {
  const task = await started;
  onTask(task);
  const done = await api.waitTask(task, { onProgress: onTask, timeoutMs: 24 * 3600_000 });
  if (done.state === 'failed') throw taskError(done);
  return done;
}

async function runStep(
  api: Hyperseal,
  s: Step,
  opts: ApplyOptions,
  onTask: (t: Task) => void,
): Promise<string | undefined> {
  switch (s.op) {
    case 'vm.update':
      await api.updateVm(s.vmId, s.patch);
      return undefined;
    case 'vm.encrypt':
      return (await runTask(api, api.encryptVm(s.vmId, underPolicy(s.policyId, opts)), onTask)).id;
    case 'vm.decrypt':
      return (await runTask(api, api.decryptVm(s.vmId), onTask)).id;
    case 'vm.rekey':
      return (await runTask(api, api.rekeyVm(s.vmId, underPolicy(s.policyId, opts)), onTask)).id;
    case 'key-provider.create': {
      const spec = s.spec;
      if (
        spec.caFile === undefined ||
        spec.clientCertFile === undefined ||
        spec.clientKeyFile === undefined
      ) {
        throw new HypersealError(
          'HS_ERR_POSTURE_BLOCKED',
          `key provider ${spec.name}: ${s.blocked ?? 'files missing'}`,
        );
      }
      const created = await api.createKeyProvider({
        name: spec.name,
        servers: spec.servers,
        caPem: readReferenced(spec.caFile, `${spec.key}.caFile`),
        clientCertPem: readReferenced(spec.clientCertFile, `${spec.key}.clientCertFile`),
        // Read now, sent once over TLS, dropped with this scope: the manager stores it sealed.
        clientKeyPem: readReferenced(spec.clientKeyFile, `${spec.key}.clientKeyFile`),
      });
      if (spec.default === true) await api.setDefaultKeyProvider(created.id);
      return undefined;
    }
    case 'key-provider.update':
      await api.updateKeyProvider(s.providerId, {
        ...(s.servers !== undefined ? { servers: s.servers } : {}),
        ...(s.caFile !== undefined ? { caPem: readReferenced(s.caFile, `${s.rule}.caFile`) } : {}),
      });
      return undefined;
    case 'key-provider.set-certificate':
      await api.setKeyProviderCertificate(s.providerId, {
        certPem: readReferenced(s.certFile, `${s.rule}.clientCertFile`),
      });
      return undefined;
    case 'key-provider.set-default':
      await api.setDefaultKeyProvider(s.providerId);
      return undefined;
    case 'alert-rule.create':
      await api.createAlertRule(alertRuleBody(s.spec));
      return undefined;
    case 'alert-rule.update':
      // One call: the rule keeps its id, and the event shows each field from → to.
      await api.updateAlertRule(s.ruleId, alertRuleBody(s.spec));
      return undefined;
    case 'syslog-target.create':
      await api.createSyslogTarget(syslogBody(s.spec));
      return undefined;
    case 'syslog-target.update': {
      // In place: the target keeps its queue and its place in the event log.
      await api.updateSyslogTarget(s.targetId, syslogBody(s.spec));
      return undefined;
    }
  }
}

/** Carries out the plan's steps in order; never throws for a step's failure (see ApplyOutcome). */
export async function applyPlan(api: Hyperseal, plan: Plan, opts: ApplyOptions = {}): Promise<ApplyOutcome> {
  const steps = plan.steps;
  const done: StepOutcome[] = [];
  const parallel = Math.max(1, Math.floor(opts.parallel ?? 1));
  const isTask = (s: Step): boolean => s.op === 'vm.encrypt' || s.op === 'vm.decrypt' || s.op === 'vm.rekey';
  let i = 0;
  while (i < steps.length) {
    const s = steps[i] as Step;
    if (s.blocked !== undefined) {
      return {
        done,
        notDone: steps.slice(i),
        error: new HypersealError(
          'HS_ERR_POSTURE_BLOCKED',
          `${s.kind} ${s.object}: ${s.blocked} (${s.rule}); stopped after ${done.length} of ${steps.length} steps`,
          { rule: s.rule, object: s.object, done: done.length, total: steps.length },
        ),
      };
    }
    // A run of encrypt/decrypt steps may go `parallel` at a time; any other step alone.
    let end = i + 1;
    if (isTask(s)) {
      while (end < steps.length && isTask(steps[end] as Step) && steps[end]?.blocked === undefined) end++;
    }
    const batch = await runBatch(api, steps, i, end, parallel, opts);
    for (const [index, r] of batch.entries()) {
      if (r?.ok)
        done.push({ step: steps[index] as Step, ...(r.taskId !== undefined ? { taskId: r.taskId } : {}) });
    }
    const failed = batch.find((r) => r !== undefined && !r.ok);
    if (failed !== undefined && !failed.ok) {
      const notDone = steps.slice(i, end).filter((_s, k) => batch[i + k]?.ok !== true);
      return { done, notDone: [...notDone, ...steps.slice(end)], error: failed.error };
    }
    i = end;
  }
  return { done, notDone: [] };
}

type BatchResult = { ok: true; taskId: string | undefined } | { ok: false; error: HypersealError };

/** Runs steps[from..to) with at most `parallel` under way; after a failure starts no more. */
async function runBatch(
  api: Hyperseal,
  steps: readonly Step[],
  from: number,
  to: number,
  parallel: number,
  opts: ApplyOptions,
): Promise<(BatchResult | undefined)[]> {
  const results: (BatchResult | undefined)[] = [];
  let next = from;
  let stopped = false;
  const worker = async (): Promise<void> => {
    while (!stopped && next < to) {
      const index = next++;
      const s = steps[index] as Step;
      opts.onStep?.(index, s);
      try {
        const taskId = await runStep(api, s, opts, (t) => opts.onTask?.(index, s, t));
        results[index] = { ok: true, taskId };
        opts.onStepDone?.(index, s);
      } catch (err) {
        stopped = true;
        results[index] = {
          ok: false,
          error:
            err instanceof HypersealError
              ? err
              : new HypersealError('HS_ERR_INTERNAL', err instanceof Error ? err.message : String(err)),
        };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, to - from) }, worker));
  // The first failure in plan order is the one reported.
  const firstFailed = results.findIndex((r) => r !== undefined && !r.ok);
  if (firstFailed >= 0) {
    const first = results[firstFailed];
    for (let k = firstFailed + 1; k < to; k++)
      if (results[k] !== undefined && !results[k]?.ok) results[k] = undefined;
    results[firstFailed] = first;
  }
  return results;
}
