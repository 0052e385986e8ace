/**
 * Property tests of diff() on random configurations (seeded PRNG, replayable):
 *
 *  - complete: applying each change's `to` at its path to `before` yields `after`, up to
 *    what diff() defines as insignificant (order of keyed lists and of tag sets, duplicate
 *    tags, null vs absent);
 *  - sound: each change's `from` is what `before` holds at that path;
 *  - quiet: a deep copy, or a copy with keyed lists, tags and property order shuffled,
 *    gives no change;
 *  - paths parse back to themselves, and no path appears twice.
 *
 * The generator avoids secret names (redaction withholds `to` by design) and covers odd
 * property names and keys (dots, spaces, quotes, brackets, '', __proto__). HYPERSEAL_FUZZ_SEED
 * and HYPERSEAL_FUZZ_ITERATIONS replay or extend a run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { diff, type DiffSchema } from './diff.js';
import type { Change } from './model.js';
import { compareNatural, formatPath, parsePath } from './path.js';

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 0)
    throw new Error(`${name} must be a non-negative integer, got ${raw}`);
  return n;
}
const SEED = envInt('HYPERSEAL_FUZZ_SEED', 0x5eed_e7e7) >>> 0;
const ITERATIONS = envInt('HYPERSEAL_FUZZ_ITERATIONS', 1500);

/** mulberry32, as in the TTLV fuzzer. */
class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  u32(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  below(n: number): number {
    return Math.floor((this.u32() / 0x1_0000_0000) * n);
  }
  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)] as T;
  }
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.below(i + 1);
      [items[i], items[j]] = [items[j] as T, items[i] as T];
    }
    return items;
  }
}

type V = null | boolean | number | string | V[] | Obj;
interface Obj {
  [k: string]: V;
}

const SCHEMA: DiffSchema = {
  nics: 'id',
  disks: 'id',
  'disks.snapshots': { key: 'name' },
  bootOrder: { ordered: true },
};
const PROPS = [
  'name',
  'memoryMiB',
  'cpus',
  'notes',
  'config',
  'cpu',
  'cores',
  'firmware',
  'labels',
  'network',
  'model',
  'sizeGiB',
  'a',
  'b',
  'odd.part',
  'with space',
  '',
  '__proto__',
  'ünï',
  'x[0]',
  '"q"',
];
const KEYS = ['nic0', 'nic1', 'nic2', 'nic10', 'a.b', 'x y', '0', '[', ']', '"', '', 'é', 'scsi0:1'];
const STRINGS = ['', 'PCI', 'Non-PCI', 'a', 'b', "it's", 'line\nbreak', '😀', '10', 'true', 'null'];
const TAGS = ['prod', 'pci', 'web', 'db', 'vm9', 'vm10', 'A', 'a', ''];

/** Builds an object with defineProperty semantics, so '__proto__' stays an own key. */
function obj(entries: [string, V][]): Obj {
  return Object.fromEntries(entries) as Obj;
}
function set(o: Obj, k: string, v: V): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}
function clone<T extends V>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T;
}
function isObj(v: V | undefined): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function scalar(r: Rng): V {
  switch (r.below(5)) {
    case 0:
      return r.below(20) - 5;
    case 1:
      return r.pick([0.5, -1.25, 1e21, 6144, 10240]);
    case 2:
      return r.chance(0.5);
    case 3:
      return null;
    default:
      return r.pick(STRINGS);
  }
}

function genObject(r: Rng, depth: number): Obj {
  const o = obj([]);
  for (let n = r.below(5); n > 0; n--) {
    const k = r.pick(PROPS);
    set(o, k, depth < 3 && r.chance(0.25) ? genObject(r, depth + 1) : scalar(r));
  }
  return o;
}

function genItem(r: Rng, keyField: string, key: string, withSnapshots: boolean): Obj {
  const o = genObject(r, 2);
  set(o, keyField, key);
  if (withSnapshots && r.chance(0.5)) set(o, 'snapshots', genKeyed(r, 'name', false));
  return o;
}

function genKeyed(r: Rng, keyField: string, withSnapshots: boolean): Obj[] {
  const keys = r.shuffle([...KEYS]).slice(0, r.below(4));
  return keys.map((k) => genItem(r, keyField, k, withSnapshots));
}

function genTags(r: Rng): V[] {
  return Array.from({ length: r.below(5) }, () => (r.chance(0.15) ? r.below(12) : r.pick(TAGS)));
}

function genConfig(r: Rng): Obj {
  const o = genObject(r, 0);
  if (r.chance(0.7)) set(o, 'nics', genKeyed(r, 'id', false));
  if (r.chance(0.6)) set(o, 'disks', genKeyed(r, 'id', true));
  if (r.chance(0.6)) set(o, 'tags', genTags(r));
  if (r.chance(0.4)) set(o, 'bootOrder', r.shuffle(['disk', 'net', 'cdrom']).slice(0, 1 + r.below(3)));
  if (r.chance(0.3)) set(o, 'rules', [genObject(r, 2), genObject(r, 2)]);
  return o;
}

/** A few random edits in place; item keys are never edited (they are identities). */
function mutate(r: Rng, o: Obj, protect?: string): void {
  const keys = Object.keys(o).filter((k) => k !== protect);
  const k = keys.length > 0 && r.chance(0.7) ? r.pick(keys) : r.pick(PROPS);
  if (k === protect) return;
  const v = o[k];
  if (Array.isArray(v) && (k === 'nics' || k === 'disks' || k === 'snapshots')) {
    const keyField = k === 'snapshots' ? 'name' : 'id';
    const items = v.filter(isObj);
    switch (r.below(4)) {
      case 0:
        if (items.length > 0) items.splice(r.below(items.length), 1);
        break;
      case 1: {
        const used = new Set(items.map((i) => i[keyField]));
        const fresh = KEYS.filter((x) => !used.has(x));
        if (fresh.length > 0) items.push(genItem(r, keyField, r.pick(fresh), k === 'disks'));
        break;
      }
      case 2:
        if (items.length > 0) mutate(r, r.pick(items), keyField);
        break;
      default:
        r.shuffle(items);
    }
    set(o, k, items);
  } else if (Array.isArray(v) && k === 'tags') {
    const tags = [...v];
    if (r.chance(0.5)) tags.push(r.pick(TAGS));
    else if (tags.length > 0) tags.splice(r.below(tags.length), 1);
    set(o, k, r.shuffle(tags));
  } else if (Array.isArray(v)) {
    set(o, k, r.chance(0.5) ? r.shuffle([...v]) : [...v, scalar(r)]);
  } else if (isObj(v) && r.chance(0.6)) {
    mutate(r, v);
  } else {
    switch (r.below(4)) {
      case 0:
        delete o[k];
        break;
      case 1:
        set(o, k, genObject(r, 2));
        break;
      default:
        set(o, k, scalar(r));
    }
  }
}

// ---------------------------------------------------------------------------------------
// The model of "insignificant" differences, and applying changes.

function ruleFor(generic: string, name: string): DiffSchema[string] | undefined {
  return Object.hasOwn(SCHEMA, generic)
    ? SCHEMA[generic]
    : Object.hasOwn(SCHEMA, name)
      ? SCHEMA[name]
      : undefined;
}
function keyFieldOf(generic: string, name: string): string | undefined {
  const rule = ruleFor(generic, name);
  return typeof rule === 'string' ? rule : rule !== undefined && 'key' in rule ? rule.key : undefined;
}
const isScalar = (v: V): boolean => v === null || typeof v !== 'object';
const typed = (v: V): string => `${v === null ? 'z' : typeof v}:${String(v)}`;

/** Equal under diff()'s rules ⇔ equal normal forms. */
function normal(v: V | undefined, generic: string, name: string): V {
  if (v === undefined || v === null) return null;
  if (Array.isArray(v)) {
    const keyField = keyFieldOf(generic, name);
    if (keyField !== undefined) {
      const items = v.filter(isObj).map((i) => normal(i, generic, name) as Obj);
      return items.sort((x, y) => compareNatural(String(x[keyField]), String(y[keyField])));
    }
    if (ruleFor(generic, name) === undefined && v.every(isScalar)) {
      const unique = new Map(v.map((x) => [typed(x), x]));
      return [...unique.keys()].sort().map((k) => unique.get(k) as V);
    }
    return v.map((x) => normal(x, generic, ''));
  }
  if (isObj(v)) {
    return obj(
      Object.keys(v)
        .filter((k) => v[k] !== null)
        .sort()
        .map((k) => [k, normal(v[k], generic === '' ? k : `${generic}.${k}`, k)]),
    );
  }
  return v;
}

/** Follows a path; returns the container and how to read/write the last segment. */
function locate(root: Obj, path: string): { get: () => V; put: (v: V) => void } {
  const segs = parsePath(path);
  let cur: V = root;
  let generic = '';
  let name = '';
  for (let i = 0; i < segs.length; i++) {
    const seg = segs[i];
    const last = i === segs.length - 1;
    if (seg === undefined) throw new Error('unreachable');
    if (seg.kind === 'prop') {
      if (!isObj(cur)) throw new Error(`${path}: not an object before ${seg.name}`);
      const container: Obj = cur;
      generic = generic === '' ? seg.name : `${generic}.${seg.name}`;
      name = seg.name;
      if (last) {
        return {
          get: () => (Object.hasOwn(container, seg.name) ? (container[seg.name] ?? null) : null),
          put: (v) => {
            if (v === null) delete container[seg.name];
            else set(container, seg.name, clone(v));
          },
        };
      }
      // hasOwn: a missing '__proto__' must not read Object.prototype.
      cur = Object.hasOwn(container, seg.name) ? (container[seg.name] ?? null) : null;
    } else {
      const keyField = keyFieldOf(generic, name);
      if (!Array.isArray(cur) || keyField === undefined) throw new Error(`${path}: not a keyed list`);
      const list: V[] = cur;
      const idx = list.findIndex((x) => isObj(x) && String(x[keyField]) === seg.key);
      if (last) {
        return {
          get: () => (idx < 0 ? null : (list[idx] ?? null)),
          put: (v) => {
            if (v === null) list.splice(idx, 1);
            else if (idx < 0) list.push(clone(v));
            else list[idx] = clone(v);
          },
        };
      }
      if (idx < 0) throw new Error(`${path}: no item ${seg.key}`);
      cur = list[idx] ?? null;
    }
  }
  throw new Error(`${path}: empty`);
}

function apply(before: Obj, changes: readonly Change[]): Obj {
  const out = clone(before);
  for (const c of changes) locate(out, c.path).put(c.to as V);
  return out;
}

/** Shuffles what diff() must not care about: keyed list order, tag order, key order. */
function shuffled(r: Rng, v: V, name = ''): V {
  if (Array.isArray(v)) {
    const items = v.map((x) => shuffled(r, x));
    return name === 'bootOrder' || name === 'rules' ? items : r.shuffle(items);
  }
  if (isObj(v)) return obj(r.shuffle(Object.keys(v)).map((k) => [k, shuffled(r, v[k] as V, k)]));
  return v;
}

void test(`diff is complete, sound and quiet on random configurations (seed 0x${SEED.toString(16)}, ${ITERATIONS} runs)`, () => {
  const r = new Rng(SEED);
  let changesSeen = 0;
  for (let i = 0; i < ITERATIONS; i++) {
    const before = genConfig(r);
    const after = r.chance(0.15) ? genConfig(r) : clone(before);
    if (after !== before) for (let n = 1 + r.below(4); n > 0; n--) mutate(r, after);
    const where = `iteration ${i} (HYPERSEAL_FUZZ_SEED=${SEED})\nbefore=${JSON.stringify(before)}\nafter=${JSON.stringify(after)}`;
    const changes = diff(before, after, SCHEMA);
    changesSeen += changes.length;

    assert.deepEqual(
      normal(apply(before, changes), '', ''),
      normal(after, '', ''),
      `complete: ${where}\n${JSON.stringify(changes)}`,
    );
    for (const c of changes) {
      const at = locate(clone(before), c.path).get();
      assert.deepEqual(normal(c.from as V, '', ''), normal(at, '', ''), `sound at ${c.path}: ${where}`);
      assert.equal(formatPath(parsePath(c.path)), c.path, `path round trip: ${where}`);
    }
    assert.equal(new Set(changes.map((c) => c.path)).size, changes.length, `duplicate path: ${where}`);
    assert.deepEqual(diff(before, clone(before), SCHEMA), [], `quiet on a copy: ${where}`);
    assert.deepEqual(diff(after, shuffled(r, after) as Obj, SCHEMA), [], `quiet on a shuffle: ${where}`);
  }
  // The generator must actually produce changes, or the properties hold vacuously.
  assert.ok(changesSeen > ITERATIONS, `only ${changesSeen} changes in ${ITERATIONS} runs`);
});
