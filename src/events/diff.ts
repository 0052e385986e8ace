/**
 * diff(before, after, schema): what changed between two versions of a configuration, as
 * `{path, from, to}` records an operator (and an alert rule) can act on.
 *
 *  - Scalars: one change where they differ. Absent, undefined and null are the same
 *    ("unset"); a Date is its ISO string; 0 and -0 are equal.
 *  - Plain objects: recursed into, dotted paths (`config.cpu.cores`). An object that
 *    appears or disappears, or changes type, is one change of the whole value.
 *  - Lists of objects declared in the schema with a key field: matched BY KEY, never by
 *    position. A NIC moved from network 'PCI' to 'Non-PCI' is
 *    `nics[nic0].network 'PCI' → 'Non-PCI'` however the list was reordered; an added item
 *    is `nics[nic1]: null → {…}`, a removed one `{…} → null`. Item keys are compared as
 *    strings. If a list cannot be keyed (an item without the key field, duplicate keys),
 *    the whole list is one change: coarser, never wrong.
 *  - Lists of scalars not declared otherwise (tags): SETS. Order and duplicates are not
 *    significant; a difference is ONE change of the whole list, from/to sorted and
 *    de-duplicated: `tags ['a'] → ['a', 'b']`. (One change per list reads better in a
 *    message than one per tag, and the value at the path is the whole set, so applying
 *    the change is a plain assignment.)
 *  - Lists declared `{ordered: true}` (boot order), and other lists (of mixed or unkeyed
 *    objects): one change of the whole list when they differ position by position.
 *  - Secrets (redact.ts): a secret-named property is compared but never descended into
 *    nor shown; Secret values and bytes compare by content and show as '[redacted]'.
 *
 * Changes come in a deterministic order: properties and item keys in natural order
 * (compareNatural), whatever order the objects were built in.
 *
 * Schema keys are the list's property name (`nics`), or its dotted path with item keys
 * left out (`disks.snapshots`, `config.nics`) when the same name means different lists;
 * the dotted path wins.
 */
import type { Change, JsonValue } from './model.js';
import { compareNatural, formatPath, type PathSegment } from './path.js';
import {
  DEFAULT_WALK_LIMITS,
  Secret,
  Walk,
  convert,
  describeValue,
  definedKeys,
  invalid,
  isBytes,
  isPlainObject,
  isSecretName,
  type WalkLimits,
} from './redact.js';

export type ListRule = string | { readonly key: string } | { readonly ordered: true };
export type DiffSchema = Readonly<Record<string, ListRule>>;

interface Ctx {
  readonly schema: DiffSchema;
  readonly walk: Walk;
  readonly out: Change[];
  /**
   * Objects on the current path, per side: a cycle would never end. Per side, because
   * `after` may legitimately hold one of `before`'s objects deeper down.
   */
  readonly stackA: Set<object>;
  readonly stackB: Set<object>;
}

type Obj = Record<string, unknown>;

/** An OWN property: `o['__proto__']` or `o['constructor']` must not read the prototype. */
function own(o: Obj, k: string): unknown {
  return Object.hasOwn(o, k) ? o[k] : undefined;
}

export function diff(
  before: object | null | undefined,
  after: object | null | undefined,
  schema: DiffSchema = {},
  limits: WalkLimits = DEFAULT_WALK_LIMITS,
): Change[] {
  const a = before ?? {};
  const b = after ?? {};
  if (!isPlainObject(a) || !isPlainObject(b)) throw invalid('diff() compares two plain objects', undefined);
  const ctx: Ctx = { schema, walk: new Walk(limits), out: [], stackA: new Set(), stackB: new Set() };
  diffObjects(ctx, [], '', a, b, 0);
  return ctx.out;
}

function push(
  ctx: Ctx,
  segs: readonly PathSegment[],
  name: string | undefined,
  a: unknown,
  b: unknown,
  depth: number,
): void {
  const where = formatPath(segs);
  ctx.out.push({
    path: where,
    from: convert(a, name, ctx.walk, depth, new Set(), where),
    to: convert(b, name, ctx.walk, depth, new Set(), where),
  });
}

function enter(ctx: Ctx, segs: readonly PathSegment[], a: object, b: object): void {
  if (ctx.stackA.has(a) || ctx.stackB.has(b)) throw invalid('a cycle cannot be logged', formatPath(segs));
  ctx.stackA.add(a);
  ctx.stackB.add(b);
}

function leave(ctx: Ctx, a: object, b: object): void {
  ctx.stackA.delete(a);
  ctx.stackB.delete(b);
}

function diffObjects(
  ctx: Ctx,
  segs: readonly PathSegment[],
  generic: string,
  a: Obj,
  b: Obj,
  depth: number,
): void {
  enter(ctx, segs, a, b);
  const keys = [...new Set([...definedKeys(a), ...definedKeys(b)])].sort(compareNatural);
  for (const k of keys) {
    diffNode(
      ctx,
      [...segs, { kind: 'prop', name: k }],
      generic === '' ? k : `${generic}.${k}`,
      k,
      own(a, k),
      own(b, k),
      depth + 1,
    );
  }
  leave(ctx, a, b);
}

function diffNode(
  ctx: Ctx,
  segs: readonly PathSegment[],
  generic: string,
  name: string,
  a: unknown,
  b: unknown,
  depth: number,
): void {
  // The same reference on both sides (after = {...before, x}) cannot hold a change: skip
  // it without walking, which keeps diffs of shallow copies cheap.
  if (a === b) return;
  ctx.walk.visit(depth, formatPath(segs));
  if (isSecretName(name) && !(isFlag(a) && isFlag(b))) {
    // Compared, never descended into: a secret object's fields are as secret as it is.
    if (!sameValue(ctx, a, b, depth, segs)) push(ctx, segs, name, a, b, depth);
    return;
  }
  if (isPlainObject(a) && isPlainObject(b)) return diffObjects(ctx, segs, generic, a, b, depth);
  if (Array.isArray(a) && Array.isArray(b)) return diffLists(ctx, segs, generic, name, a, b, depth);
  if (!sameValue(ctx, a, b, depth, segs)) push(ctx, segs, name, a, b, depth);
}

/** Booleans and unset: what stays visible under a secret name. */
function isFlag(v: unknown): boolean {
  return v === undefined || v === null || typeof v === 'boolean';
}

function ruleFor(schema: DiffSchema, generic: string, name: string): ListRule | undefined {
  if (Object.hasOwn(schema, generic)) return schema[generic];
  if (Object.hasOwn(schema, name)) return schema[name];
  return undefined;
}

function diffLists(
  ctx: Ctx,
  segs: readonly PathSegment[],
  generic: string,
  name: string,
  a: readonly unknown[],
  b: readonly unknown[],
  depth: number,
): void {
  const rule = ruleFor(ctx.schema, generic, name);
  const keyField =
    typeof rule === 'string' ? rule : rule !== undefined && 'key' in rule ? rule.key : undefined;
  if (keyField !== undefined) {
    const ia = keyed(a, keyField);
    const ib = keyed(b, keyField);
    if (ia !== undefined && ib !== undefined) {
      enter(ctx, segs, a, b);
      const keys = [...new Set([...ia.keys(), ...ib.keys()])].sort(compareNatural);
      for (const k of keys) {
        const itemSegs: PathSegment[] = [...segs, { kind: 'item', key: k }];
        const x = ia.get(k);
        const y = ib.get(k);
        if (x === undefined || y === undefined) push(ctx, itemSegs, undefined, x, y, depth + 1);
        else diffObjects(ctx, itemSegs, generic, x, y, depth + 1);
      }
      leave(ctx, a, b);
      return;
    }
  } else if (rule === undefined && a.every(isSetMember) && b.every(isSetMember)) {
    const sa = setKeys(a);
    const sb = setKeys(b);
    if (sa.size !== sb.size || [...sa].some((k) => !sb.has(k))) {
      const where = formatPath(segs);
      ctx.out.push({
        path: where,
        from: sortedSet(ctx, a, depth, where),
        to: sortedSet(ctx, b, depth, where),
      });
    }
    return;
  }
  if (!sameValue(ctx, a, b, depth, segs)) push(ctx, segs, name, a, b, depth);
}

/** Items by key, or undefined when the list cannot be keyed (then it is diffed whole). */
function keyed(items: readonly unknown[], field: string): Map<string, Obj> | undefined {
  const m = new Map<string, Obj>();
  for (const item of items) {
    if (!isPlainObject(item)) return undefined;
    const k = own(item, field);
    const key =
      typeof k === 'string' ? k : typeof k === 'number' && Number.isFinite(k) ? String(k) : undefined;
    if (key === undefined || m.has(key)) return undefined;
    m.set(key, item);
  }
  return m;
}

type SetMember = string | number | boolean | null | undefined | Date;

function isSetMember(v: unknown): v is SetMember {
  return (
    v === null || v === undefined || v instanceof Date || ['string', 'number', 'boolean'].includes(typeof v)
  );
}

/** A typed identity per member, so that 1 and '1' stay distinct (on RAW values: two
 * different PEM keys both redact to '[redacted]' but are still a change). */
function setKeys(items: readonly unknown[]): Set<string> {
  return new Set(
    items.map((v) =>
      v === null || v === undefined
        ? 'z'
        : v instanceof Date
          ? `s${Number.isNaN(v.getTime()) ? 'Invalid' : v.toISOString()}`
          : `${(typeof v)[0] ?? ''}${String(v)}`,
    ),
  );
}

const TYPE_RANK: Record<string, number> = { object: 0, boolean: 1, number: 2, string: 3 };

function compareScalars(x: JsonValue, y: JsonValue): number {
  const tx = TYPE_RANK[typeof x] ?? 4;
  const ty = TYPE_RANK[typeof y] ?? 4;
  if (tx !== ty) return tx - ty;
  if (typeof x === 'number' && typeof y === 'number') return x - y;
  if (typeof x === 'string' && typeof y === 'string') return compareNatural(x, y);
  if (typeof x === 'boolean' && typeof y === 'boolean') return Number(x) - Number(y);
  return 0;
}

function sortedSet(ctx: Ctx, items: readonly unknown[], depth: number, where: string): JsonValue[] {
  const values = items.map((v) => convert(v, undefined, ctx.walk, depth + 1, new Set(), where));
  values.sort(compareScalars);
  return values.filter((v, i) => i === 0 || compareScalars(values[i - 1] as JsonValue, v) !== 0);
}

/**
 * Deep equality on RAW values, as they will be logged: a Secret equals its revealed value
 * (wrapping is not a change), bytes compare by content, Dates by instant, arrays by
 * position, objects ignoring undefined members. Other objects are refused as convert()
 * refuses them, so unloggable data fails loudly even where it did not change (except a
 * value shared by reference between before and after, which is not examined at all).
 */
function sameValue(ctx: Ctx, a: unknown, b: unknown, depth: number, segs: readonly PathSegment[]): boolean {
  ctx.walk.visit(depth, formatPath(segs));
  if (a instanceof Secret) return sameValue(ctx, a.reveal(), b, depth, segs);
  if (b instanceof Secret) return sameValue(ctx, a, b.reveal(), depth, segs);
  if (a === undefined) a = null;
  if (b === undefined) b = null;
  if (a === b) return !(typeof a === 'number' && !Number.isFinite(a)) || refuse(a, segs);
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) {
    // Different primitives (or object vs primitive): unequal, if loggable at all.
    refuse(a, segs);
    refuse(b, segs);
    return false;
  }
  if (isBytes(a) || isBytes(b)) return isBytes(a) && isBytes(b) && Buffer.from(bytesOf(a)).equals(bytesOf(b));
  if (a instanceof Date || b instanceof Date) {
    return a instanceof Date && b instanceof Date && refuse(a, segs) && a.getTime() === b.getTime();
  }
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b)) return false;
    enter(ctx, segs, a, b);
    const same =
      a.length === b.length && a.every((x: unknown, i) => sameValue(ctx, x, b[i], depth + 1, segs));
    leave(ctx, a, b);
    return same;
  }
  for (const v of [a, b])
    if (!isPlainObject(v)) throw invalid(`a ${describeValue(v)} cannot be logged`, formatPath(segs));
  if (!isPlainObject(a) || !isPlainObject(b)) return false; // (narrowing only; thrown above)
  const ka = definedKeys(a);
  const kb = definedKeys(b);
  if (ka.length !== kb.length || ka.some((k) => own(b, k) === undefined)) return false;
  enter(ctx, segs, a, b);
  const same = ka.every((k) => sameValue(ctx, a[k], own(b, k), depth + 1, segs));
  leave(ctx, a, b);
  return same;
}

/** Throws for a value convert() would refuse; true otherwise (for use in expressions). */
function refuse(v: unknown, segs: readonly PathSegment[]): true {
  const bad =
    (typeof v === 'number' && !Number.isFinite(v)) ||
    typeof v === 'bigint' ||
    typeof v === 'function' ||
    typeof v === 'symbol' ||
    (v instanceof Date && Number.isNaN(v.getTime()));
  if (bad) {
    const what = typeof v === 'number' ? String(v) : v instanceof Date ? 'an invalid Date' : `a ${typeof v}`;
    throw invalid(`${what} cannot be logged`, formatPath(segs));
  }
  return true;
}

function bytesOf(v: ArrayBufferView | ArrayBuffer | SharedArrayBuffer): Uint8Array {
  return ArrayBuffer.isView(v) ? new Uint8Array(v.buffer, v.byteOffset, v.byteLength) : new Uint8Array(v);
}
