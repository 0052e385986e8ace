/**
 * `hyperseal apply -f posture.yaml [--dry-run]` and `hyperseal export` (docs/posture.md):
 * desired state for VM security settings, key providers, alert rules and syslog targets.
 * The plan goes to stdout (a table, or JSON with --json); progress to stderr (a bar on a
 * terminal, one line per step otherwise).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { HypersealError } from '../errors.js';
import { applyPlan, describeStep, readSnapshot } from '../posture/apply.js';
import { exportPosture, readFullSnapshot, renderPostureYaml } from '../posture/export.js';
import { loadFingerprints } from '../posture/files.js';
import type { Plan } from '../posture/plan.js';
import { planPosture, renderPlan } from '../posture/plan.js';
import type { Selector } from '../posture/schema.js';
import { parsePosture, validatePosture } from '../posture/schema.js';
import { ApiClient } from '../sdk/client.js';
import { flag, int, parse, str, usageError } from './args.js';
import { ExitCode } from './output.js';

export const POSTURE_HELP = `desired state (docs/posture.md)
  apply -f FILE [--dry-run] [--json] [--accept-no-backup] [--parallel N]
        plan the changes that make VMs, key providers, alert rules and syslog targets
        match FILE; --dry-run prints the plan and changes nothing; --parallel: encrypt or
        decrypt up to N VMs at once (default 4)
  export [-o FILE] [--select namePattern=web-* --select tag=pci …] [--json]
        the current posture as such a file (no secrets: file paths instead)`;

const common = { json: { type: 'boolean' }, credentials: { type: 'string' } } as const;

function planJson(plan: Plan): unknown {
  return {
    summary: plan.summary,
    groups: plan.groups,
    steps: plan.steps.map((s) => ({
      rule: s.rule,
      op: s.op,
      kind: s.kind,
      object: s.object,
      changes: s.changes,
      ...(s.blocked !== undefined ? { blocked: s.blocked } : {}),
    })),
  };
}

export async function applyCommand(argv: string[]): Promise<number> {
  const usage = 'hyperseal apply -f FILE [--dry-run] [--json] [--accept-no-backup] [--parallel N]';
  const p = parse(
    argv,
    {
      ...common,
      file: { type: 'string', short: 'f' },
      'dry-run': { type: 'boolean' },
      'accept-no-backup': { type: 'boolean' },
      parallel: { type: 'string' },
    },
    usage,
  );
  const parallel = int(p, 'parallel', 4) ?? 4;
  if (parallel < 1 || parallel > 64) throw usageError('--parallel is 1 to 64');
  const file = str(p, 'file');
  if (file === undefined || file === '') throw usageError(`-f FILE is required\nusage: ${usage}`);
  const json = flag(p, 'json');
  const dryRun = flag(p, 'dry-run');
  const path = resolve(file);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new HypersealError(
      'HS_ERR_POSTURE_INVALID',
      `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      { file },
    );
  }
  // Everything about the file is checked before the manager is asked anything.
  const posture = parsePosture(text, { file, baseDir: dirname(path) });
  loadFingerprints(posture);
  const api = ApiClient.fromCredentials(str(p, 'credentials'));
  try {
    const plan = planPosture(posture, await readSnapshot(api, posture));
    if (dryRun || plan.steps.length === 0) {
      process.stdout.write(
        (json ? JSON.stringify({ dryRun, plan: planJson(plan) }, null, 2) : renderPlan(plan)) + '\n',
      );
      // A plan that apply could not finish exits 5, so a pipeline can gate on the dry run.
      return plan.summary.blocked > 0 ? ExitCode.conflict : ExitCode.ok;
    }
    if (!json) process.stdout.write(renderPlan(plan) + '\n');
    const tty = process.stderr.isTTY;
    const total = plan.steps.length;
    const shown = new Map<string, number>();
    const outcome = await applyPlan(api, plan, {
      acceptNoBackup: flag(p, 'accept-no-backup'),
      parallel,
      onStep: (i, s) => {
        if (!tty) process.stderr.write(`[${i + 1}/${total}] ${describeStep(s)} …\n`);
      },
      onTask: (i, s, t) => {
        if (tty) {
          const width = 20;
          const filled = Math.round((t.progress / 100) * width);
          process.stderr.write(
            `\r[${i + 1}/${total}] ${describeStep(s)} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(t.progress).padStart(3)}% ${t.state}   `,
          );
        } else if ((t.state === 'running' || t.state === 'queued') && shown.get(t.id) !== t.progress) {
          // One line per progress change, not per poll.
          shown.set(t.id, t.progress);
          process.stderr.write(`[${i + 1}/${total}] task ${t.kind} ${t.progress}%\n`);
        }
      },
      onStepDone: (i, s) => {
        process.stderr.write(
          `${tty ? '\r' : ''}[${i + 1}/${total}] ${describeStep(s)}: done${tty ? '              ' : ''}\n`,
        );
      },
    });
    const done = outcome.done.map((d) => ({
      rule: d.step.rule,
      step: describeStep(d.step),
      ...(d.taskId ? { taskId: d.taskId } : {}),
    }));
    const notDone = outcome.notDone.map((s) => ({
      rule: s.rule,
      step: describeStep(s),
      ...(s.blocked ? { blocked: s.blocked } : {}),
    }));
    if (json) {
      process.stdout.write(
        JSON.stringify(
          {
            dryRun: false,
            plan: planJson(plan),
            done,
            notDone,
            ...(outcome.error ? { error: outcome.error.toJSON() } : {}),
          },
          null,
          2,
        ) + '\n',
      );
    } else if (outcome.error) {
      process.stdout.write(
        [
          `stopped: ${done.length} of ${total} steps done`,
          ...done.map((d) => `  done      ${d.step}`),
          ...notDone.map((d, i) => `  ${i === 0 ? 'stopped ' : 'not done'}  ${d.step}`),
        ].join('\n') + '\n',
      );
    } else {
      process.stdout.write(`applied: ${done.length} of ${total} steps done\n`);
    }
    if (outcome.error) throw outcome.error;
    return 0;
  } finally {
    api.close();
  }
}

/** `--select namePattern=web-*` (repeatable; all must hold). */
function selectorOf(values: unknown): Selector | undefined {
  const list = Array.isArray(values) ? values.filter((v): v is string => typeof v === 'string') : [];
  if (list.length === 0) return undefined;
  const raw: Record<string, string> = {};
  for (const item of list) {
    const i = item.indexOf('=');
    if (i <= 0)
      throw usageError(`--select takes KEY=VALUE (namePattern, tag, folder, network), got '${item}'`);
    raw[item.slice(0, i)] = item.slice(i + 1);
  }
  // The posture file's own rules validate it (a one-rule posture).
  try {
    const checked = validatePosture({ version: 1, vms: [{ select: raw, vtpm: false }] }, process.cwd());
    return checked.vms?.[0]?.select;
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw usageError(`--select: ${why.replace(/^posture: vms\[0\]\.select\.?/, '')}`);
  }
}

export async function exportCommand(argv: string[]): Promise<number> {
  const usage = 'hyperseal export [-o FILE] [--select KEY=VALUE …] [--json]';
  const p = parse(
    argv,
    { ...common, out: { type: 'string', short: 'o' }, select: { type: 'string', multiple: true } },
    usage,
  );
  const select = selectorOf(p.values.select);
  const api = ApiClient.fromCredentials(str(p, 'credentials'));
  try {
    const snap = await readFullSnapshot(api, (m) => process.stderr.write(`hyperseal export: ${m}\n`));
    const doc = exportPosture(snap, select);
    const text = flag(p, 'json') ? JSON.stringify(doc, null, 2) + '\n' : renderPostureYaml(doc);
    const out = str(p, 'out');
    if (out === undefined || out === '-') process.stdout.write(text);
    else {
      writeFileSync(out, text, { mode: 0o644 });
      process.stderr.write(`wrote ${out}\n`);
    }
    return 0;
  } finally {
    api.close();
  }
}
