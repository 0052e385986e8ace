/**
 * Change paths: how a change names the setting it is about.
 *
 *   memoryMiB                   a property
 *   config.cpu.cores            nested properties, dotted
 *   nics[nic0].network          an item of a keyed list, by its KEY (never its position)
 *   disks[scsi0:1]              a whole item (added or removed)
 *   disks["a.b"].sizeGiB        names and keys outside [A-Za-z0-9_$@:/+-] are JSON strings
 *
 * Brackets always hold an item key, never an index: lists are diffed by key (diff.ts), so
 * a reordered list produces no change and `nics[nic0]` means the same NIC in every event.
 * The list name stays in the path (`nics[nic0]`, not `nic0`) so that a NIC and a disk
 * with the same key cannot be confused and a path can be parsed back by alert rules.
 */
import { HypersealError } from '../errors.js';

export type PathSegment =
  { readonly kind: 'prop'; readonly name: string } | { readonly kind: 'item'; readonly key: string };

const BARE = /^[A-Za-z0-9_$@:/+-]+$/;

function token(s: string): string {
  return BARE.test(s) ? s : JSON.stringify(s);
}

export function formatPath(segments: readonly PathSegment[]): string {
  let out = '';
  for (const seg of segments) {
    if (seg.kind === 'item') out += `[${token(seg.key)}]`;
    else out += (out === '' ? '' : '.') + token(seg.name);
  }
  return out;
}

function badPath(path: string, why: string): HypersealError {
  return new HypersealError('HS_ERR_EVENT_BAD_PATH', `bad change path ${JSON.stringify(path)}: ${why}`, {
    path,
  });
}

/** Inverse of formatPath; throws HS_ERR_EVENT_BAD_PATH. Paths start with a property. */
export function parsePath(path: string): PathSegment[] {
  const segs: PathSegment[] = [];
  let i = 0;
  // Reads a bare or JSON-quoted token at i; returns it and advances i.
  const readToken = (): string => {
    if (path[i] === '"') {
      let j = i + 1;
      while (j < path.length && path[j] !== '"') j += path[j] === '\\' ? 2 : 1;
      if (j >= path.length) throw badPath(path, `unclosed quote at ${i}`);
      let value: unknown;
      try {
        value = JSON.parse(path.slice(i, j + 1));
      } catch {
        throw badPath(path, `bad quoted name at ${i}`);
      }
      if (typeof value !== 'string') throw badPath(path, `bad quoted name at ${i}`);
      i = j + 1;
      return value;
    }
    const m = /^[A-Za-z0-9_$@:/+-]+/.exec(path.slice(i));
    if (m === null) throw badPath(path, `empty segment at ${i}`);
    i += m[0].length;
    return m[0];
  };
  segs.push({ kind: 'prop', name: readToken() });
  while (i < path.length) {
    const c = path[i];
    if (c === '.') {
      i++;
      segs.push({ kind: 'prop', name: readToken() });
    } else if (c === '[') {
      i++;
      const key = readToken();
      if (path[i] !== ']') throw badPath(path, `unclosed [ at ${i}`);
      i++;
      segs.push({ kind: 'item', key });
    } else {
      throw badPath(path, `unexpected ${JSON.stringify(c)} at ${i}`);
    }
  }
  return segs;
}

/**
 * Total order for property names and item keys: digit runs compare by value, so nic2
 * sorts before nic10; ties fall back to code-unit order, so only equal strings compare 0.
 * Deterministic on every platform (no Intl, whose collation varies with the ICU version).
 */
export function compareNatural(a: string, b: string): number {
  const ra = a.match(/\d+|\D+/g) ?? [];
  const rb = b.match(/\d+|\D+/g) ?? [];
  for (let i = 0; i < Math.min(ra.length, rb.length); i++) {
    const x = ra[i] as string;
    const y = rb[i] as string;
    if (x === y) continue;
    const dx = /^\d/.test(x);
    const dy = /^\d/.test(y);
    if (dx && dy) {
      const nx = x.replace(/^0+(?=\d)/, '');
      const ny = y.replace(/^0+(?=\d)/, '');
      if (nx.length !== ny.length) return nx.length - ny.length;
      if (nx !== ny) return nx < ny ? -1 : 1;
      // Same value, different zero padding: decided by the code-unit tie-break below.
      continue;
    }
    return x < y ? -1 : 1;
  }
  if (ra.length !== rb.length) return ra.length - rb.length;
  return a === b ? 0 : a < b ? -1 : 1;
}
