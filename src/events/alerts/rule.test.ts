/**
 * Rule validation: the normalized, frozen result; every refusal names its field; unknown
 * keys are refused at every level; globs, types, kinds, values and webhook settings are
 * checked; and the webhook secret never appears in an error or in ruleToPublic().
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HypersealError } from '../../errors.js';
import { REDACTED } from '../redact.js';
import { ruleToPublic, validateRule } from './rule.js';

const SECRET = 'whsec-0123456789-abcdef';

const VALID = {
  id: 'pci-nic',
  name: 'NIC left the PCI network',
  severity: 'critical',
  match: {
    types: ['vm.reconfigured'],
    changes: [{ path: 'nics[*].network', from: { glob: 'PCI*' }, to: { notGlob: 'PCI*' } }],
  },
  actions: { webhook: { url: 'https://siem.example/hooks/hyperseal', secret: SECRET } },
};

/** A copy of VALID with `edit` applied to it (a structured clone, so VALID stays intact). */
function variant(edit: (r: Record<string, unknown>) => void): unknown {
  const r: Record<string, unknown> = structuredClone(VALID);
  edit(r);
  return r;
}

/** Asserts the refusal: HS_ERR_INVALID_ARGUMENT naming `field`, saying `why`, no secret. */
function refused(input: unknown, field: string, why: RegExp): void {
  let caught: unknown;
  try {
    validateRule(input);
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof HypersealError, `expected a refusal naming ${field}`);
  assert.equal(caught.code, 'HS_ERR_INVALID_ARGUMENT');
  assert.deepEqual(caught.details, { field });
  assert.ok(caught.message.startsWith(`alert rule: ${field} `), caught.message);
  assert.match(caught.message, why);
  assert.ok(!caught.message.includes(SECRET), `secret in: ${caught.message}`);
  assert.ok(!JSON.stringify(caught.toJSON()).includes(SECRET));
}

void test('a valid rule comes back normalized (defaults filled in) and deeply frozen', () => {
  const r = validateRule(VALID);
  assert.deepEqual(r, {
    id: 'pci-nic',
    name: 'NIC left the PCI network',
    enabled: true,
    severity: 'critical',
    match: VALID.match,
    actions: { event: true, syslog: false, webhook: VALID.actions.webhook },
  });
  assert.ok(Object.isFrozen(r));
  assert.ok(Object.isFrozen(r.match.changes?.[0]?.from));
  assert.ok(Object.isFrozen(r.actions.webhook));
  assert.throws(() => {
    (r.match.types as string[]).push('vm.deleted');
  }, TypeError);
  // A copy: changing the input afterwards does not change the rule.
  const input = structuredClone(VALID);
  const copy = validateRule(input);
  input.match.changes[0]!.path = 'memoryMiB';
  assert.equal(copy.match.changes?.[0]?.path, 'nics[*].network');
});

void test('defaults: enabled true, actions { event: true }; `match: {}` is allowed', () => {
  const r = validateRule({
    id: 'x',
    name: 'decrypted',
    severity: 'warning',
    match: { types: ['vm.decrypted'] },
  });
  assert.equal(r.enabled, true);
  assert.deepEqual(r.actions, { event: true, syslog: false });
  assert.deepEqual(validateRule({ id: 'all', name: 'all', severity: 'info', match: {} }).match, {});
  const off = validateRule({ ...VALID, enabled: false, actions: { event: false, syslog: true } });
  assert.equal(off.enabled, false);
  assert.deepEqual(off.actions, { event: false, syslog: true });
  // Every ValueMatch form.
  const values = validateRule({
    ...VALID,
    match: {
      changes: [
        { path: 'secureBoot', from: { equals: true }, to: { equals: false } },
        { path: 'disks[*]', from: { exists: false } },
        { path: 'vars', to: { equals: { a: [1, 'x', null], b: { c: false } } } },
      ],
    },
  });
  assert.equal(values.match.changes?.length, 3);
});

void test('the top level: required fields, types, formats, unknown keys', () => {
  refused(null, 'rule', /must be an object, got null/);
  refused([], 'rule', /must be an object, got an array/);
  refused(
    variant((r) => (r['extra'] = 1)),
    'rule',
    /unknown key "extra" \(allowed: id, name, enabled, match, severity, actions\)/,
  );
  refused(
    variant((r) => delete r['id']),
    'id',
    /must be a string, got nothing/,
  );
  refused(
    variant((r) => (r['id'] = '')),
    'id',
    /must not be empty/,
  );
  refused(
    variant((r) => (r['id'] = 'has space')),
    'id',
    /"has space" must be letters/,
  );
  refused(
    variant((r) => (r['id'] = 'x'.repeat(65))),
    'id',
    /at most 64 characters/,
  );
  refused(
    variant((r) => (r['name'] = 7)),
    'name',
    /must be a string, got a number/,
  );
  refused(
    variant((r) => (r['name'] = 'evil\nname')),
    'name',
    /control characters/,
  );
  refused(
    variant((r) => (r['name'] = '   ')),
    'name',
    /must not be blank/,
  );
  refused(
    variant((r) => (r['enabled'] = 'yes')),
    'enabled',
    /must be true or false, got a string/,
  );
  refused(
    variant((r) => (r['severity'] = 'warn')),
    'severity',
    /one of info, warning, error, critical, got "warn"/,
  );
  refused(
    variant((r) => delete r['match']),
    'match',
    /must be an object, got nothing/,
  );
  refused(
    variant((r) => (r['match'] = { type: ['vm.*'] })),
    'match',
    /unknown key "type"/,
  );
  // JSON.parse makes __proto__ an own key; it is refused like any other unknown key.
  refused(
    JSON.parse('{"__proto__": {"x": 1}, "id": "a", "name": "b", "severity": "info", "match": {}}'),
    'rule',
    /unknown key "__proto__"/,
  );
});

void test('match: types, objectKinds, result', () => {
  const m = (match: unknown): unknown => ({ ...VALID, match });
  refused(m({ types: [] }), 'match.types', /must not be empty \(omit it to match any\)/);
  refused(m({ types: 'vm.*' }), 'match.types', /must be a list, got a string/);
  refused(m({ types: ['vm.*', 3] }), 'match.types[1]', /must be a string, got a number/);
  refused(m({ types: ['VM.*'] }), 'match.types[0]', /"VM.\*" is not an event-type glob/);
  refused(m({ types: ['vm.decrpyted'] }), 'match.types[0]', /"vm.decrpyted" matches no event type$/);
  refused(
    m({ types: ['vm.decrypted', 'alert.raise?'] }),
    'match.types[1]',
    /matches no event type \(alert events never trigger rules\)/,
  );
  refused(m({ types: ['vm.[a-z]'] }), 'match.types[0]', /not an event-type glob/);
  refused(m({ objectKinds: ['vm', 'VM'] }), 'match.objectKinds[1]', /must be one of vm, host, .*, got "VM"/);
  refused(m({ result: 'failed' }), 'match.result', /must be one of success, failure, got "failed"/);
  refused(m({ types: Array.from({ length: 65 }, () => 'vm.*') }), 'match.types', /at most 64 items/);
});

void test('match.changes: paths, value matches, unknown keys', () => {
  const c = (...changes: unknown[]): unknown => ({ ...VALID, match: { changes } });
  refused(c(), 'match.changes', /must not be empty/);
  refused(c({ path: 'a' }, 'b'), 'match.changes[1]', /must be an object, got a string/);
  refused(
    c({ path: 'a', form: { glob: 'x' } }),
    'match.changes[0]',
    /unknown key "form" \(allowed: path, from, to\)/,
  );
  refused(c({ from: { glob: 'x' } }), 'match.changes[0].path', /must be a string, got nothing/);
  refused(
    c({ path: 'nics[*' }),
    'match.changes[0].path',
    /"nics\[\*" is not a change-path glob like nics\[\*\]\.network \(unclosed \[ at 6\)/,
  );
  refused(c({ path: 'nics..x' }), 'match.changes[0].path', /empty segment at 5/);
  refused(c({ path: 'a b' }), 'match.changes[0].path', /unexpected " " at 1/);
  refused(c({ path: '' }), 'match.changes[0].path', /must not be empty/);
  refused(c({ path: 'x'.repeat(257) }), 'match.changes[0].path', /at most 256 characters/);
  refused(
    c({ path: 'a', from: {} }),
    'match.changes[0].from',
    /exactly one of glob, notGlob, equals, exists \(has 0\)/,
  );
  refused(
    c({ path: 'a', to: { glob: 'a', notGlob: 'b' } }),
    'match.changes[0].to',
    /exactly one .* \(has 2\)/,
  );
  refused(c({ path: 'a', to: { regex: '.*' } }), 'match.changes[0].to', /unknown key "regex"/);
  refused(c({ path: 'a', to: { glob: '' } }), 'match.changes[0].to.glob', /must not be empty/);
  refused(c({ path: 'a', to: { notGlob: 'a\tb' } }), 'match.changes[0].to.notGlob', /control characters/);
  refused(c({ path: 'a', to: { exists: 'yes' } }), 'match.changes[0].to.exists', /true or false/);
  refused(
    c({ path: 'a', to: { equals: undefined } }),
    'match.changes[0].to.equals',
    /must be JSON, got nothing/,
  );
  refused(c({ path: 'a', to: { equals: [1, Number.NaN] } }), 'match.changes[0].to.equals', /finite number/);
  refused(
    c({ path: 'a', to: { equals: new Date(0) } }),
    'match.changes[0].to.equals',
    /must be JSON, got an object/,
  );
  let deep: unknown = 1;
  for (let i = 0; i < 20; i++) deep = [deep];
  refused(c({ path: 'a', to: { equals: deep } }), 'match.changes[0].to.equals', /nest at most 16 levels/);
  refused(
    c({ path: 'a', to: { equals: Array.from({ length: 2000 }, () => 0) } }),
    'match.changes[0].to.equals',
    /at most 1000 values/,
  );
});

void test('actions and the webhook: URL scheme, secret length; the secret is never in an error', () => {
  const a = (actions: unknown): unknown => ({ ...VALID, actions });
  const hook = (webhook: Record<string, unknown>): unknown =>
    a({ webhook: { url: VALID.actions.webhook.url, secret: SECRET, ...webhook } });
  refused(a({ event: false }), 'actions', /must do something: event, syslog or webhook/);
  refused(a({ event: 'no' }), 'actions.event', /true or false/);
  refused(a({ email: 'x@y' }), 'actions', /unknown key "email"/);
  refused(a({ webhook: 'https://x' }), 'actions.webhook', /must be an object, got a string/);
  refused(
    hook({ headers: { a: SECRET } }),
    'actions.webhook',
    /unknown key "headers" \(allowed: url, secret\)/,
  );
  refused(
    hook({ url: 'http://siem.example/hook' }),
    'actions.webhook.url',
    /must be https:\/\/ \(plain http:\/\/ is allowed only to 127.0.0.1\)/,
  );
  refused(hook({ url: 'http://127.0.0.1.evil.example/hook' }), 'actions.webhook.url', /must be https/);
  refused(hook({ url: 'ftp://siem.example/' }), 'actions.webhook.url', /must be https/);
  refused(hook({ url: 'siem.example/hook' }), 'actions.webhook.url', /is not an absolute URL/);
  refused(
    hook({ url: `https://user:${SECRET}@siem.example/` }),
    'actions.webhook.url',
    /must not contain a user name or password/,
  );
  refused(hook({ url: `https://siem.example/#${SECRET}` }), 'actions.webhook.url', /#fragment/);
  refused(hook({ url: 42 }), 'actions.webhook.url', /must be a string, got a number/);
  refused(hook({ secret: SECRET.slice(0, 15) }), 'actions.webhook.secret', /at least 16 characters$/);
  refused(hook({ secret: REDACTED }), 'actions.webhook.secret', /at least 16 characters/);
  refused(hook({ secret: undefined }), 'actions.webhook.secret', /must be a string, got nothing/);
  refused(hook({ secret: 'x'.repeat(1025) }), 'actions.webhook.secret', /at most 1024 characters/);
  // The short secret itself must not be echoed either.
  const shortSecret = 'tooshort-secret';
  assert.throws(
    () => validateRule(hook({ secret: shortSecret })),
    (err: unknown) => err instanceof HypersealError && !err.message.includes(shortSecret),
  );
  // Loopback over plain http is fine (local receivers, tests), with any port and path.
  assert.equal(
    validateRule(hook({ url: 'http://127.0.0.1:8080/hook?x=1' })).actions.webhook?.url,
    'http://127.0.0.1:8080/hook?x=1',
  );
});

void test('ruleToPublic: the webhook secret is redacted, everything else kept, the rule untouched', () => {
  const r = validateRule(VALID);
  const pub = ruleToPublic(r);
  assert.deepEqual(pub, {
    ...r,
    actions: { ...r.actions, webhook: { url: VALID.actions.webhook.url, secret: REDACTED } },
  });
  assert.ok(!JSON.stringify(pub).includes(SECRET));
  assert.equal(r.actions.webhook?.secret, SECRET);
  const noHook = validateRule({ ...VALID, actions: { syslog: true } });
  assert.deepEqual(ruleToPublic(noHook), noHook);
  assert.ok(!('webhook' in ruleToPublic(noHook).actions));
  // The public form of a rule with a webhook cannot be stored back by mistake.
  assert.throws(() => validateRule(pub), { details: { field: 'actions.webhook.secret' } });
});
