/**
 * Matching events against alert rules. Pure and synchronous: every event of the platform
 * passes through here, so a rule is compiled once (globs to RegExp, path globs to
 * segments) and matching an event is a few regex tests per rule, with no I/O and no
 * allocation beyond the result.
 *
 * Loop guard: an 'alert.raised' event is never matched, whatever the rule says. A rule
 * matching alerts would raise an alert about its own alert, forever.
 */
import type { Change, JsonValue, UnchainedEvent } from '../model.js';
import { parsePath, type PathSegment } from '../path.js';
import { compileGlob, matchPathGlob, parsePathGlob, type SegmentGlob } from './glob.js';
import { ALERT_EVENT_TYPE, validateRule, type AlertRule, type ValueMatch } from './rule.js';

/** What matching reads of an event; a chained Event qualifies too. */
export type MatchableEvent = Pick<UnchainedEvent, 'type' | 'object' | 'result' | 'changes'>;

export interface MatchResult {
  readonly matched: boolean;
  /**
   * The changes that satisfied at least one of the rule's change conditions, in the
   * event's order (the same objects). Empty when the rule has no change conditions: a
   * rule on the event type alone picks out no particular change.
   */
  readonly changes: readonly Change[];
}

export interface RuleMatch {
  /** The rule as given to evaluate() (the same object). */
  readonly rule: AlertRule;
  readonly changes: readonly Change[];
}

const NO_MATCH: MatchResult = Object.freeze({ matched: false, changes: Object.freeze([]) });

type ValueTest = (v: JsonValue) => boolean;

interface CompiledChangeMatch {
  readonly path: readonly SegmentGlob[];
  readonly from: ValueTest | undefined;
  readonly to: ValueTest | undefined;
}

function compileValueMatch(m: ValueMatch): ValueTest {
  if ('glob' in m) {
    const re = compileGlob(m.glob);
    return (v) => typeof v === 'string' && re.test(v);
  }
  if ('notGlob' in m) {
    const re = compileGlob(m.notGlob);
    return (v) => !(typeof v === 'string' && re.test(v));
  }
  if ('equals' in m) {
    const want = m.equals;
    return (v) => jsonEqual(v, want);
  }
  const want = m.exists;
  return (v) => (v !== null) === want;
}

/** Deep equality of JSON values; object key order does not matter, array order does. */
export function jsonEqual(a: JsonValue, b: JsonValue): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    const bl: readonly JsonValue[] = b;
    return a.every((x: JsonValue, i: number) => jsonEqual(x, bl[i] ?? null));
  }
  const ao = a as Readonly<Record<string, JsonValue>>;
  const bo = b as Readonly<Record<string, JsonValue>>;
  const keys = Object.keys(ao);
  if (keys.length !== Object.keys(bo).length) return false;
  return keys.every((k) => Object.hasOwn(bo, k) && jsonEqual(ao[k] ?? null, bo[k] ?? null));
}

/**
 * An event with its change paths parsed on demand, once, however many rules look at
 * them (evaluate() shares one across all rules). A path that does not parse matches no
 * path glob: the paths come from diff(), so that is a bug elsewhere, and throwing here
 * would stop every other rule from seeing the event.
 */
class PreparedEvent {
  readonly event: MatchableEvent;
  readonly #paths: (readonly PathSegment[] | null | undefined)[];

  constructor(event: MatchableEvent) {
    this.event = event;
    this.#paths = new Array<undefined>(event.changes.length);
  }

  path(i: number): readonly PathSegment[] | null {
    let p = this.#paths[i];
    if (p === undefined) {
      try {
        p = parsePath((this.event.changes[i] as Change).path);
      } catch {
        p = null;
      }
      this.#paths[i] = p;
    }
    return p;
  }
}

/**
 * A rule compiled for matching, built by compileRule(): call it with an event. A plain
 * function so that it can be passed around as a predicate; `rule` is the rule as given
 * to compileRule() (the same object).
 */
export type RuleMatcher = ((event: MatchableEvent) => MatchResult) & { readonly rule: AlertRule };

/**
 * The matching function behind each matcher, by matcher. Kept out of the interface so
 * that evaluate() can share one PreparedEvent across rules without making it public, and
 * so that only matchers made here are trusted as compiled (anything else is compiled).
 */
const internals = new WeakMap<object, (prepared: PreparedEvent) => MatchResult>();

/** Compiles a rule that validateRule() has accepted; `source` is what callers get back. */
function build(rule: AlertRule, source: AlertRule): RuleMatcher {
  const m = rule.match;
  const types = m.types?.map(compileGlob);
  const kinds: ReadonlySet<string> | undefined =
    m.objectKinds === undefined ? undefined : new Set(m.objectKinds);
  const wantResult = m.result;
  const conds: readonly CompiledChangeMatch[] | undefined = m.changes?.map((c) => {
    const path = parsePathGlob(c.path);
    // validateRule() has parsed it already; this cannot happen for a validated rule.
    if (typeof path === 'string') throw new Error(`unvalidated change path glob: ${path}`);
    return {
      path,
      from: c.from === undefined ? undefined : compileValueMatch(c.from),
      to: c.to === undefined ? undefined : compileValueMatch(c.to),
    };
  });
  const enabled = rule.enabled;

  const matchPrepared = (prepared: PreparedEvent): MatchResult => {
    const event = prepared.event;
    if (!enabled || event.type === ALERT_EVENT_TYPE) return NO_MATCH;
    if (wantResult !== undefined && event.result !== wantResult) return NO_MATCH;
    if (kinds !== undefined && !kinds.has(event.object.kind)) return NO_MATCH;
    if (types !== undefined && !types.some((re) => re.test(event.type))) return NO_MATCH;
    if (conds === undefined) return { matched: true, changes: [] };
    // Each condition needs some change; the result is every change that met any of them.
    const hit = new Array<boolean>(event.changes.length).fill(false);
    for (const cond of conds) {
      let satisfied = false;
      for (let i = 0; i < event.changes.length; i++) {
        const change = event.changes[i] as Change;
        const path = prepared.path(i);
        if (path === null || !matchPathGlob(cond.path, path)) continue;
        if (cond.from !== undefined && !cond.from(change.from)) continue;
        if (cond.to !== undefined && !cond.to(change.to)) continue;
        satisfied = true;
        hit[i] = true;
      }
      if (!satisfied) return NO_MATCH;
    }
    return { matched: true, changes: event.changes.filter((_, i) => hit[i] === true) };
  };

  const matcher: RuleMatcher = Object.freeze(
    Object.assign((event: MatchableEvent) => matchPrepared(new PreparedEvent(event)), { rule: source }),
  );
  internals.set(matcher, matchPrepared);
  return matcher;
}

/**
 * Compiled matchers by rule object. Validated rules are frozen (validateRule), so a
 * cached matcher cannot go stale; a hand-built rule must not be mutated after its first
 * use, or its changes are not seen — compile the new version instead.
 */
const compiled = new WeakMap<AlertRule, RuleMatcher>();

/**
 * Compiles a rule once: validates it (a hand-built rule gets the same checks as one from
 * the API; throws HS_ERR_INVALID_ARGUMENT) and precompiles its globs.
 */
export function compileRule(rule: AlertRule): RuleMatcher {
  let m = compiled.get(rule);
  if (m === undefined) {
    m = build(validateRule(rule), rule);
    compiled.set(rule, m);
  }
  return m;
}

/** A matcher made here, or the compiled form of a rule; with its internal match function. */
function resolve(r: AlertRule | RuleMatcher): {
  matcher: RuleMatcher;
  run: (prepared: PreparedEvent) => MatchResult;
} {
  // Not one of ours means an AlertRule (a look-alike matcher object fails validation).
  const matcher = internals.has(r) ? (r as RuleMatcher) : compileRule(r as AlertRule);
  const run = internals.get(matcher);
  if (run === undefined) throw new Error('matcher without internals');
  return { matcher, run };
}

/** Whether one rule matches one event, and which changes made it match. */
export function matchRule(rule: AlertRule | RuleMatcher, event: MatchableEvent): MatchResult {
  return resolve(rule).run(new PreparedEvent(event));
}

/** The rules that match an event, in the order given, each with its matched changes. */
export function evaluate(rules: Iterable<AlertRule | RuleMatcher>, event: MatchableEvent): RuleMatch[] {
  const out: RuleMatch[] = [];
  if (event.type === ALERT_EVENT_TYPE) return out;
  const prepared = new PreparedEvent(event);
  for (const r of rules) {
    const { matcher, run } = resolve(r);
    const result = run(prepared);
    if (result.matched) out.push({ rule: matcher.rule, changes: result.changes });
  }
  return out;
}
