/**
 * The globs of alert rules: `*` (any run of characters, possibly empty) and `?` (exactly
 * one character), nothing else — no classes, no braces, no escapes — anchored at both
 * ends and case-sensitive. Kept this small on purpose: a rule is security policy, and
 * `'PCI*'` must mean exactly "starts with PCI" to whoever reads it ('Non-PCI' does not
 * match). A literal `*` or `?` is matched with `equals` instead.
 *
 * Change-path globs (`nics[*].network`) are globs per segment: the pattern is parsed like
 * a change path (path.ts) whose names and keys may hold wildcards, and a wildcard never
 * reaches across a `.` or a `[…]`. So `nics[*].network` matches `nics[nic0].network` and
 * `nics["a.b"].network`, but not `nics[nic0]` or `nics[nic0].ipv4.network`.
 */
import type { PathSegment } from '../path.js';

/** Characters that mean something to RegExp (in `u` mode only these may be escaped). */
const REGEX_SYNTAX = /[\\^$.*+?()[\]{}|/]/g;

/**
 * Compiles a glob once into an anchored RegExp. Runs of `*` are collapsed first: `a**b`
 * means `a*b`, and two adjacent `.*` would only add backtracking. The `u` flag makes `?`
 * one code point (an emoji is one character), `s` lets `*` cover line breaks too.
 */
export function compileGlob(glob: string): RegExp {
  let src = '';
  for (const ch of glob.replace(/\*+/g, '*')) {
    if (ch === '*') src += '.*';
    else if (ch === '?') src += '.';
    else src += ch.replace(REGEX_SYNTAX, '\\$&');
  }
  return new RegExp(`^${src}$`, 'su');
}

export function hasWildcard(s: string): boolean {
  return s.includes('*') || s.includes('?');
}

/** One segment of a path glob: a property name or an item key, each a glob. */
export interface SegmentGlob {
  readonly kind: PathSegment['kind'];
  readonly source: string;
  readonly regex: RegExp;
}

/** Bare names of path.ts, plus the two wildcards. */
const BARE_GLOB = /^[A-Za-z0-9_$@:/+*?-]+/;

/**
 * Parses a change-path glob (`nics[*].network`, `disks["a.*"].sizeGiB`). Quoted tokens
 * are JSON strings as in path.ts; wildcards work inside them too, so a key with dots can
 * still be matched by pattern. Returns a reason instead of throwing, so that the caller
 * (rule validation) can name the field in its own error.
 */
export function parsePathGlob(pattern: string): SegmentGlob[] | string {
  const segs: SegmentGlob[] = [];
  let i = 0;
  const readToken = (): string | { error: string } => {
    if (pattern[i] === '"') {
      let j = i + 1;
      while (j < pattern.length && pattern[j] !== '"') j += pattern[j] === '\\' ? 2 : 1;
      if (j >= pattern.length) return { error: `unclosed quote at ${i}` };
      let value: unknown;
      try {
        value = JSON.parse(pattern.slice(i, j + 1));
      } catch {
        return { error: `bad quoted name at ${i}` };
      }
      if (typeof value !== 'string') return { error: `bad quoted name at ${i}` };
      i = j + 1;
      return value;
    }
    const m = BARE_GLOB.exec(pattern.slice(i));
    if (m === null) return { error: `empty segment at ${i}` };
    i += m[0].length;
    return m[0];
  };
  const push = (kind: PathSegment['kind']): string | undefined => {
    const t = readToken();
    if (typeof t !== 'string') return t.error;
    segs.push({ kind, source: t, regex: compileGlob(t) });
    return undefined;
  };
  let err = push('prop');
  while (err === undefined && i < pattern.length) {
    const c = pattern[i];
    if (c === '.') {
      i++;
      err = push('prop');
    } else if (c === '[') {
      i++;
      err = push('item');
      if (err === undefined) {
        if (pattern[i] !== ']') err = `unclosed [ at ${i}`;
        else i++;
      }
    } else {
      err = `unexpected ${JSON.stringify(c)} at ${i}`;
    }
  }
  return err ?? segs;
}

/** Whether a parsed change path matches a path glob, segment by segment. */
export function matchPathGlob(glob: readonly SegmentGlob[], path: readonly PathSegment[]): boolean {
  if (glob.length !== path.length) return false;
  for (let k = 0; k < glob.length; k++) {
    const g = glob[k] as SegmentGlob;
    const p = path[k] as PathSegment;
    if (g.kind !== p.kind) return false;
    if (!g.regex.test(p.kind === 'prop' ? p.name : p.key)) return false;
  }
  return true;
}
