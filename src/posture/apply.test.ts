/**
 * applyPlan against a recording fake of the SDK: steps run in order, the first refusal
 * stops the run with done / not done reported, a blocked step is never sent, and a
 * replacement whose secret file is missing deletes nothing.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { HypersealError } from '../errors.js';
import type { AlertRule, Vm } from '../sdk/api.gen.js';
import type { Hyperseal } from '../sdk/hyperseal.js';
import { applyPlan } from './apply.js';
import { planPosture, publicAlertRule } from './plan.js';
import { parsePosture } from './schema.js';
import { testVm } from './testing.js';

function vm(name: string, firmware: 'efi' | 'bios' = 'efi'): Vm {
  return testVm(name, {}, { firmware, nics: [], tags: [] });
}

/** Records calls; `refuse` names a method that answers with an error. */
function fakeApi(refuse?: string): { api: Hyperseal; calls: string[]; args: unknown[][] } {
  const calls: string[] = [];
  const argsOf: unknown[][] = [];
  const handler: ProxyHandler<object> = {
    get: (_t, method: string) =>
      method === 'then'
        ? undefined
        : async (...args: unknown[]) => {
            calls.push(`${method} ${typeof args[0] === 'string' ? args[0] : JSON.stringify(args[0])}`);
            argsOf.push(args);
            if (method === refuse) throw new HypersealError('HS_ERR_CONFLICT', `${method} refused`);
            return {};
          },
  };
  return { api: new Proxy({}, handler) as Hyperseal, calls, args: argsOf };
}

const snap = (vms: Vm[], alertRules: AlertRule[] = []) => ({
  vms,
  policies: [],
  keySets: [],
  alertRules,
});

void test('steps run in order; the first refusal stops the run, reporting done and not done', async () => {
  const posture = parsePosture(
    'version: 1\nvms:\n  - { select: { namePattern: "*" }, vtpm: true }\n  - { select: { namePattern: "b" }, migrationEncryption: required }\n',
    { baseDir: '/' },
  );
  const plan = planPosture(posture, snap([vm('a'), vm('b'), vm('c')]));
  const ok = fakeApi();
  const all = await applyPlan(ok.api, plan);
  assert.equal(all.error, undefined);
  assert.deepEqual(ok.calls, ['updateVm id-a', 'updateVm id-b', 'updateVm id-c', 'updateVm id-b']);
  // A refusal at the first call: nothing done, every step not done, the server's error.
  const refused = fakeApi('updateVm');
  const out = await applyPlan(refused.api, plan);
  assert.equal(out.error?.code, 'HS_ERR_CONFLICT');
  assert.deepEqual(out.done, []);
  assert.equal(out.notDone.length, 4);
  assert.deepEqual(refused.calls, ['updateVm id-a']);
});

void test('a blocked step is not sent: the run stops before it with HS_ERR_POSTURE_BLOCKED', async () => {
  const posture = parsePosture('version: 1\nvms:\n  - { select: { namePattern: "*" }, secureBoot: true }\n', {
    baseDir: '/',
  });
  const plan = planPosture(posture, snap([vm('a'), vm('b', 'bios'), vm('c')]));
  const { api, calls } = fakeApi();
  const out = await applyPlan(api, plan);
  assert.equal(out.error?.code, 'HS_ERR_POSTURE_BLOCKED');
  assert.match(
    out.error?.message ?? '',
    /vm b: BIOS firmware, secure boot impossible \(vms\[0\]\); stopped after 1 of 3 steps/,
  );
  assert.deepEqual(calls, ['updateVm id-a']);
  assert.deepEqual(
    out.notDone.map((s) => s.object),
    ['b', 'c'],
  );
});

void test('updating an alert rule reads its secret file first: missing, nothing is called', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hs-posture-'));
  const text = `version: 1
alertRules:
  - name: r
    severity: critical
    match: { types: [vm.secure-boot-disabled] }
    actions: { webhook: { url: 'https://siem.example/hook', secretFile: hook.secret } }
`;
  const posture = parsePosture(text, { baseDir: dir });
  const spec = posture.alertRules?.[0];
  assert.ok(spec);
  const stored = { id: 'r1', ...publicAlertRule(spec), severity: 'warning' } as AlertRule;
  const plan = planPosture(posture, snap([], [stored]));
  assert.equal(plan.steps[0]?.op, 'alert-rule.update');
  const missing = fakeApi();
  const out = await applyPlan(missing.api, plan);
  assert.equal(out.error?.code, 'HS_ERR_POSTURE_INVALID');
  assert.match(
    out.error?.message ?? '',
    /alertRules\[0\]\.actions\.webhook\.secretFile: cannot read .*hook\.secret \(ENOENT\)/,
  );
  assert.deepEqual(missing.calls, [], 'the rule is left as it was');
  const secret = 'a-webhook-secret-of-some-length';
  writeFileSync(join(dir, 'hook.secret'), `${secret}\n`, { mode: 0o600 });
  const ok = fakeApi();
  const done = await applyPlan(ok.api, plan);
  assert.equal(done.error, undefined);
  assert.deepEqual(ok.calls, ['updateAlertRule r1'], 'one call, in place');
  assert.match(
    JSON.stringify(ok.args[0]?.[1]),
    /"severity":"critical".*"secret":"a-webhook-secret-of-some-length"/,
  );
});

/** Encrypt tasks that take a little while; `fail` names a VM whose task fails. Counts overlap. */
function taskApi(fail?: string): { api: Hyperseal; started: string[]; maxAtOnce: () => number } {
  const started: string[] = [];
  let now = 0;
  let max = 0;
  const api = {
    encryptVm: (id: string) => {
      started.push(id);
      now++;
      max = Math.max(max, now);
      return Promise.resolve({ id: `t-${id}`, objectId: id, kind: 'vm.encrypt' });
    },
    waitTask: async (task: { id: string; objectId: string }) => {
      await new Promise((r) => setTimeout(r, 20));
      now--;
      const failed = task.objectId === `id-${fail}`;
      return {
        ...task,
        objectKind: 'vm',
        state: failed ? 'failed' : 'succeeded',
        error: failed ? { code: 'HS_ERR_KEY_PROVIDER_UNAVAILABLE', message: 'no key server' } : null,
      };
    },
  };
  return { api: api as unknown as Hyperseal, started, maxAtOnce: () => max };
}

void test('encryptions run `parallel` at a time; a failure starts no more, and done / not done are exact', async () => {
  const names = ['a', 'b', 'c', 'd', 'e', 'f'];
  const posture = parsePosture(
    'version: 1\nvms:\n  - { select: { namePattern: "*" }, encryption: { policy: P } }\n',
    { baseDir: '/' },
  );
  const policies = [{ id: 'p1', name: 'P', description: '', providerId: null, builtin: false, createdAt: 0 }];
  const plan = planPosture(posture, { ...snap(names.map((n) => vm(n))), policies });
  assert.equal(plan.steps.length, 6);

  const fine = taskApi();
  const all = await applyPlan(fine.api, plan, { parallel: 3 });
  assert.equal(all.error, undefined);
  assert.equal(all.done.length, 6);
  assert.equal(fine.maxAtOnce(), 3, 'three at once, never more');

  const one = taskApi();
  await applyPlan(one.api, plan);
  assert.equal(one.maxAtOnce(), 1, 'one at a time by default');

  const failing = taskApi('b');
  const out = await applyPlan(failing.api, plan, { parallel: 2 });
  assert.equal(out.error?.code, 'HS_ERR_KEY_PROVIDER_UNAVAILABLE');
  // a and b started together; b failed, so only what was already under way may finish.
  assert.ok(failing.started.length <= 3, `started after the failure: ${failing.started.join(',')}`);
  const doneNames = out.done.map((s) => s.step.object);
  assert.ok(doneNames.includes('a') && !doneNames.includes('b'));
  assert.deepEqual(
    [...doneNames, ...out.notDone.map((s) => s.object)].sort(),
    names,
    'every step is either done or not done',
  );
  assert.ok(out.notDone.some((s) => s.object === 'b'));
});
