/**
 * Alert rules: which events deserve an alert, and what to do then. A rule is data (it is
 * stored, shown in the UI, sent over the API), so everything that comes from outside goes
 * through validateRule(), which refuses anything it does not understand — an unknown key
 * is more likely a misspelt condition than something safe to ignore, and a silently
 * ignored condition turns a narrow rule into one that fires on everything (or a
 * misspelt event type into one that never fires).
 *
 *   { id: 'pci-nic', name: 'NIC left the PCI network', enabled: true, severity: 'critical',
 *     match: { types: ['vm.reconfigured'],
 *              changes: [{ path: 'nics[*].network', from: { glob: 'PCI*' }, to: { notGlob: 'PCI*' } }] },
 *     actions: { event: true, webhook: { url: 'https://siem.example/hook', secret: '…' } } }
 *
 * The webhook secret is the one secret in a rule: it never appears in an error message,
 * and ruleToPublic() is what the API and the logs show.
 */
import { HypersealError } from '../../errors.js';
import type { EventResult, JsonValue, ObjectKind, Severity } from '../model.js';
import { EventTypes, ObjectKinds, SEVERITY_ORDER } from '../model.js';
import { REDACTED } from '../redact.js';
import { compileGlob, parsePathGlob } from './glob.js';

/**
 * How one side (from or to) of a change must look. `null` is how an event says "absent"
 * (a setting unset, an item added or removed), so:
 *  - `glob`: a string matching the glob (anything that is not a string never matches);
 *  - `notGlob`: the exact complement of `glob` — any value that is not a string matching
 *    it, null and numbers included (leaving PCI for "no network" is still leaving PCI);
 *  - `equals`: the same JSON value (object key order does not matter);
 *  - `exists`: true for any value but null, false for null only.
 * Values of secret settings are '[redacted]' in events (redact.ts), so a rule can see that
 * a password changed but cannot match what it changed to.
 */
export type ValueMatch =
  | { readonly glob: string }
  | { readonly notGlob: string }
  | { readonly equals: JsonValue }
  | { readonly exists: boolean };

/** One condition on the changes of an event: some change must satisfy all of it. */
export interface ChangeMatch {
  /** A change-path glob, per segment: `nics[*].network`, `secureBoot`, `disks[*]`. */
  readonly path: string;
  readonly from?: ValueMatch;
  readonly to?: ValueMatch;
}

/** All present conditions must hold; an absent one does not constrain. */
export interface MatchSpec {
  /** Event-type globs (`vm.*`, `vm.secure-boot-disabled`); any one may match. */
  readonly types?: readonly string[];
  /** Object kinds (`vm`, `host`, …); any one may match. */
  readonly objectKinds?: readonly ObjectKind[];
  readonly result?: EventResult;
  /** Every condition must be satisfied by at least one change (not necessarily the same). */
  readonly changes?: readonly ChangeMatch[];
}

export interface WebhookAction {
  /** https://…, or http://127.0.0.1… for a receiver on the same machine (and tests). */
  readonly url: string;
  /** HMAC key for X-Hyperseal-Signature, at least 16 characters. Never shown. */
  readonly secret: string;
}

export interface AlertActions {
  /** Raise an 'alert.raised' event (default true). */
  readonly event?: boolean;
  readonly webhook?: WebhookAction;
  /** Send the alert to the syslog sink (default false). */
  readonly syslog?: boolean;
}

export interface AlertRule {
  readonly id: string;
  readonly name: string;
  readonly enabled: boolean;
  readonly match: MatchSpec;
  readonly severity: Severity;
  readonly actions: AlertActions;
}

/** What the API and the logs show of a rule: the webhook secret is replaced by '[redacted]'. */
export type PublicAlertRule = Omit<AlertRule, 'actions'> & {
  readonly actions: Omit<AlertActions, 'webhook'> & {
    readonly webhook?: { readonly url: string; readonly secret: typeof REDACTED };
  };
};

export const RULE_LIMITS = {
  idChars: 64,
  nameChars: 128,
  listItems: 64,
  globChars: 256,
  urlChars: 2048,
  secretMinChars: 16,
  secretMaxChars: 1024,
  /** Nesting and size of an `equals` value. */
  equalsDepth: 16,
  equalsValues: 1000,
} as const;

/** The event type an alert raises; events of this type never trigger rules (loop guard). */
export const ALERT_EVENT_TYPE = 'alert.raised';

const ID = /^[A-Za-z0-9][A-Za-z0-9._:-]*$/;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
/** Characters an event type can have, plus the wildcards. */
const TYPE_GLOB = /^[a-z0-9.*?-]+$/;
/** Registered types a rule can see: all but the alert type itself. */
const MATCHABLE_TYPES = Object.keys(EventTypes).filter((t) => t !== ALERT_EVENT_TYPE);

// ---------------------------------------------------------------------------------------
// Errors. Every message names the field (`match.changes[0].to.glob`) and says what is
// wrong; values are echoed only for fields that cannot hold a secret, and never the
// webhook secret or URL (a URL can carry a token, as Slack's do).

function bad(field: string, why: string): HypersealError {
  return new HypersealError('HS_ERR_INVALID_ARGUMENT', `alert rule: ${field} ${why}`, { field });
}

/** The type of a value, for "must be a string, got a number" — never the value itself. */
function kindOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  const t = typeof v;
  return t === 'object' ? 'an object' : t === 'undefined' ? 'nothing' : `a ${t}`;
}

/** A short, quoted, control-free echo of a non-secret string. */
function echo(s: string): string {
  return JSON.stringify(s.length > 40 ? `${s.slice(0, 39)}…` : s);
}

type Obj = Readonly<Record<string, unknown>>;

function isPlainObject(v: unknown): v is Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function object(v: unknown, field: string, allowed: readonly string[]): Obj {
  if (!isPlainObject(v)) throw bad(field, `must be an object, got ${kindOf(v)}`);
  const unknown = Object.keys(v).filter((k) => !allowed.includes(k));
  if (unknown.length > 0) {
    const names = unknown.slice(0, 3).map(echo).join(', ') + (unknown.length > 3 ? ', …' : '');
    throw bad(
      field,
      `has unknown ${unknown.length === 1 ? 'key' : 'keys'} ${names} (allowed: ${allowed.join(', ')})`,
    );
  }
  return v;
}

function str(v: unknown, field: string, max: number): string {
  if (typeof v !== 'string') throw bad(field, `must be a string, got ${kindOf(v)}`);
  if (v.length === 0) throw bad(field, 'must not be empty');
  if (v.length > max) throw bad(field, `must be at most ${max} characters`);
  return v;
}

function bool(v: unknown, field: string): boolean {
  if (typeof v !== 'boolean') throw bad(field, `must be true or false, got ${kindOf(v)}`);
  return v;
}

/** A non-empty list: an empty one is ambiguous (match nothing? everything?), so omit it. */
function list(v: unknown, field: string): readonly unknown[] {
  if (!Array.isArray(v)) throw bad(field, `must be a list, got ${kindOf(v)}`);
  if (v.length === 0) throw bad(field, 'must not be empty (omit it to match any)');
  if (v.length > RULE_LIMITS.listItems) throw bad(field, `must have at most ${RULE_LIMITS.listItems} items`);
  return v;
}

function oneOf<T extends string>(v: unknown, field: string, values: readonly T[]): T {
  if (typeof v === 'string') {
    const found = values.find((x) => x === v);
    if (found !== undefined) return found;
    throw bad(field, `must be one of ${values.join(', ')}, got ${echo(v)}`);
  }
  throw bad(field, `must be one of ${values.join(', ')}, got ${kindOf(v)}`);
}

/** A glob of `*` and `?`; control characters are refused (they only hide what it matches). */
function glob(v: unknown, field: string): string {
  const g = str(v, field, RULE_LIMITS.globChars);
  if (CONTROL.test(g)) throw bad(field, 'must not contain control characters');
  return g;
}

// ---------------------------------------------------------------------------------------
// Parts of a rule.

function typeGlob(v: unknown, field: string): string {
  const g = glob(v, field);
  if (!TYPE_GLOB.test(g))
    throw bad(field, `${echo(g)} is not an event-type glob (lower case, '.', '-', '*' and '?' only)`);
  // A glob that matches no type is a typo ('vm.decrpyted'), not a rule waiting for one.
  const re = compileGlob(g);
  if (!MATCHABLE_TYPES.some((t) => re.test(t))) {
    const why = re.test(ALERT_EVENT_TYPE) ? ` (alert events never trigger rules)` : '';
    throw bad(field, `${echo(g)} matches no event type${why}`);
  }
  return g;
}

function objectKind(v: unknown, field: string): ObjectKind {
  return oneOf(v, field, Object.keys(ObjectKinds) as ObjectKind[]);
}

/** A deep, frozen copy of a JSON value, with limits so a rule cannot be a memory bomb. */
function jsonValue(v: unknown, field: string): JsonValue {
  let budget: number = RULE_LIMITS.equalsValues;
  const walk = (x: unknown, depth: number): JsonValue => {
    if (--budget < 0) throw bad(field, `must have at most ${RULE_LIMITS.equalsValues} values`);
    if (depth > RULE_LIMITS.equalsDepth)
      throw bad(field, `must nest at most ${RULE_LIMITS.equalsDepth} levels`);
    if (x === null || typeof x === 'boolean' || typeof x === 'string') return x;
    if (typeof x === 'number') {
      if (!Number.isFinite(x)) throw bad(field, 'must be JSON (a finite number)');
      return x;
    }
    if (Array.isArray(x)) return Object.freeze(x.map((y) => walk(y, depth + 1)));
    if (isPlainObject(x)) {
      const out: Record<string, JsonValue> = {};
      for (const k of Object.keys(x)) out[k] = walk(x[k], depth + 1);
      return Object.freeze(out);
    }
    throw bad(field, `must be JSON, got ${kindOf(x)}`);
  };
  return walk(v, 0);
}

function valueMatch(v: unknown, field: string): ValueMatch {
  const o = object(v, field, ['glob', 'notGlob', 'equals', 'exists']);
  const keys = Object.keys(o);
  if (keys.length !== 1)
    throw bad(field, `must have exactly one of glob, notGlob, equals, exists (has ${keys.length})`);
  if (Object.hasOwn(o, 'glob')) return Object.freeze({ glob: glob(o['glob'], `${field}.glob`) });
  if (Object.hasOwn(o, 'notGlob')) return Object.freeze({ notGlob: glob(o['notGlob'], `${field}.notGlob`) });
  if (Object.hasOwn(o, 'equals')) return Object.freeze({ equals: jsonValue(o['equals'], `${field}.equals`) });
  return Object.freeze({ exists: bool(o['exists'], `${field}.exists`) });
}

function changeMatch(v: unknown, field: string): ChangeMatch {
  const o = object(v, field, ['path', 'from', 'to']);
  const path = glob(o['path'], `${field}.path`);
  const parsed = parsePathGlob(path);
  if (typeof parsed === 'string')
    throw bad(`${field}.path`, `${echo(path)} is not a change-path glob like nics[*].network (${parsed})`);
  const out: { path: string; from?: ValueMatch; to?: ValueMatch } = { path };
  if (o['from'] !== undefined) out.from = valueMatch(o['from'], `${field}.from`);
  if (o['to'] !== undefined) out.to = valueMatch(o['to'], `${field}.to`);
  return Object.freeze(out);
}

function matchSpec(v: unknown): MatchSpec {
  const o = object(v, 'match', ['types', 'objectKinds', 'result', 'changes']);
  const out: {
    types?: readonly string[];
    objectKinds?: readonly ObjectKind[];
    result?: EventResult;
    changes?: readonly ChangeMatch[];
  } = {};
  if (o['types'] !== undefined)
    out.types = Object.freeze(
      list(o['types'], 'match.types').map((t, i) => typeGlob(t, `match.types[${i}]`)),
    );
  if (o['objectKinds'] !== undefined)
    out.objectKinds = Object.freeze(
      list(o['objectKinds'], 'match.objectKinds').map((k, i) => objectKind(k, `match.objectKinds[${i}]`)),
    );
  if (o['result'] !== undefined) out.result = oneOf(o['result'], 'match.result', ['success', 'failure']);
  if (o['changes'] !== undefined)
    out.changes = Object.freeze(
      list(o['changes'], 'match.changes').map((c, i) => changeMatch(c, `match.changes[${i}]`)),
    );
  return Object.freeze(out);
}

/**
 * Why a webhook URL is refused, or undefined when it is fine. Plain http:// would send
 * alerts (VM names, users, addresses) in the clear and let anyone on the path read or
 * drop them, so only the loopback address may use it. User info is refused because the
 * URL is shown by ruleToPublic() and the signature is the authentication. The messages
 * never echo the URL: it may carry a token.
 */
export function webhookUrlProblem(url: string): string | undefined {
  if (url.length > RULE_LIMITS.urlChars) return `must be at most ${RULE_LIMITS.urlChars} characters`;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return 'is not an absolute URL';
  }
  if (u.username !== '' || u.password !== '') return 'must not contain a user name or password';
  if (u.hash !== '') return 'must not contain a #fragment';
  if (u.protocol === 'https:') return undefined;
  if (u.protocol === 'http:' && u.hostname === '127.0.0.1') return undefined;
  return 'must be https:// (plain http:// is allowed only to 127.0.0.1)';
}

/** Why a webhook secret is refused, or undefined; never mentions the secret itself. */
export function webhookSecretProblem(secret: unknown): string | undefined {
  if (typeof secret !== 'string') return `must be a string, got ${kindOf(secret)}`;
  if (secret.length < RULE_LIMITS.secretMinChars)
    return `must be at least ${RULE_LIMITS.secretMinChars} characters`;
  if (secret.length > RULE_LIMITS.secretMaxChars)
    return `must be at most ${RULE_LIMITS.secretMaxChars} characters`;
  return undefined;
}

function webhook(v: unknown): WebhookAction {
  const o = object(v, 'actions.webhook', ['url', 'secret']);
  const url = o['url'];
  if (typeof url !== 'string') throw bad('actions.webhook.url', `must be a string, got ${kindOf(url)}`);
  const urlProblem = webhookUrlProblem(url);
  if (urlProblem !== undefined) throw bad('actions.webhook.url', urlProblem);
  const secretProblem = webhookSecretProblem(o['secret']);
  if (secretProblem !== undefined) throw bad('actions.webhook.secret', secretProblem);
  return Object.freeze({ url, secret: o['secret'] as string });
}

function actions(v: unknown): AlertActions {
  const o = object(v, 'actions', ['event', 'webhook', 'syslog']);
  const event = o['event'] === undefined ? true : bool(o['event'], 'actions.event');
  const syslog = o['syslog'] === undefined ? false : bool(o['syslog'], 'actions.syslog');
  const hook = o['webhook'] === undefined ? undefined : webhook(o['webhook']);
  // A rule that does nothing is almost certainly a mistake in the form that made it.
  if (!event && !syslog && hook === undefined)
    throw bad('actions', 'must do something: event, syslog or webhook');
  return Object.freeze(hook === undefined ? { event, syslog } : { event, webhook: hook, syslog });
}

/**
 * Checks a rule from outside (API body, stored JSON) and returns a normalized, deeply
 * frozen copy: `match` is required (`{}` matches every event), `enabled` defaults to true, `actions` to { event: true }, and
 * `actions.event`/`actions.syslog` are filled in. Throws HS_ERR_INVALID_ARGUMENT naming
 * the first bad field. Frozen so that a compiled matcher (match.ts) can never disagree
 * with the rule it was compiled from.
 */
export function validateRule(input: unknown): AlertRule {
  const o = object(input, 'rule', ['id', 'name', 'enabled', 'match', 'severity', 'actions']);
  const id = str(o['id'], 'id', RULE_LIMITS.idChars);
  if (!ID.test(id))
    throw bad('id', `${echo(id)} must be letters, digits and . _ : - (starting with one of the first two)`);
  const name = str(o['name'], 'name', RULE_LIMITS.nameChars);
  if (CONTROL.test(name)) throw bad('name', 'must not contain control characters');
  if (name.trim() === '') throw bad('name', 'must not be blank');
  const enabled = o['enabled'] === undefined ? true : bool(o['enabled'], 'enabled');
  const severity = oneOf(o['severity'], 'severity', SEVERITY_ORDER);
  // Required, even though `{}` is allowed: a rule without `match` is more likely a form
  // that lost its conditions than a wish to alert on every event.
  const match = matchSpec(o['match']);
  const acts = actions(o['actions'] ?? {});
  return Object.freeze({ id, name, enabled, match, severity, actions: acts });
}

/** The rule as the API, the UI and the logs may show it: the webhook secret redacted. */
export function ruleToPublic(rule: AlertRule): PublicAlertRule {
  const { webhook: hook, ...rest } = rule.actions;
  return {
    ...rule,
    actions: hook === undefined ? rest : { ...rest, webhook: { url: hook.url, secret: REDACTED } },
  };
}
