/**
 * diff(): exact change lists for the cases an operator meets — the vSphere 6.5 demo
 * (memory added, a NIC moved from the 'PCI' to the 'Non-PCI' network), disks added and
 * removed, tags, nested settings — and the refusals that keep unloggable data out.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HypersealError } from '../errors.js';
import { diff, type DiffSchema } from './diff.js';
import { Secret } from './redact.js';

const SCHEMA: DiffSchema = { nics: 'id', disks: 'id' };

const demoBefore = {
  name: 'web-01',
  memoryMiB: 6144,
  cpus: 2,
  nics: [
    { id: 'nic0', network: 'PCI', mac: '52:54:00:00:00:01', model: 'virtio' },
    { id: 'nic1', network: 'Mgmt', mac: '52:54:00:00:00:02', model: 'virtio' },
  ],
};

void test('the classic demo: memory 6144 → 10240 and nic0 PCI → Non-PCI, with the NIC order swapped', () => {
  const after = {
    name: 'web-01',
    memoryMiB: 10240,
    cpus: 2,
    // Reordered, and nic1 untouched: a positional diff would report every field of both.
    nics: [
      { id: 'nic1', network: 'Mgmt', mac: '52:54:00:00:00:02', model: 'virtio' },
      { id: 'nic0', network: 'Non-PCI', mac: '52:54:00:00:00:01', model: 'virtio' },
    ],
  };
  assert.deepEqual(diff(demoBefore, after, SCHEMA), [
    { path: 'memoryMiB', from: 6144, to: 10240 },
    { path: 'nics[nic0].network', from: 'PCI', to: 'Non-PCI' },
  ]);
});

void test('without a key in the schema, a list of objects is one change of the whole list (never positional)', () => {
  const after = { ...demoBefore, nics: [demoBefore.nics[1], demoBefore.nics[0]] };
  const changes = diff(demoBefore, after, {});
  assert.equal(changes.length, 1);
  assert.equal(changes[0]?.path, 'nics');
  // …and with the key, the same reorder is no change at all.
  assert.deepEqual(diff(demoBefore, after, SCHEMA), []);
});

void test('disks added and removed by key; a changed disk by field', () => {
  const before = {
    disks: [
      { id: 'scsi0:0', sizeGiB: 40, datastore: 'ds1' },
      { id: 'scsi0:1', sizeGiB: 100, datastore: 'ds1' },
    ],
  };
  const after = {
    disks: [
      { id: 'scsi0:2', sizeGiB: 10, datastore: 'ds2', thin: true },
      { id: 'scsi0:0', sizeGiB: 60, datastore: 'ds1' },
    ],
  };
  assert.deepEqual(diff(before, after, SCHEMA), [
    { path: 'disks[scsi0:0].sizeGiB', from: 40, to: 60 },
    { path: 'disks[scsi0:1]', from: { datastore: 'ds1', id: 'scsi0:1', sizeGiB: 100 }, to: null },
    { path: 'disks[scsi0:2]', from: null, to: { datastore: 'ds2', id: 'scsi0:2', sizeGiB: 10, thin: true } },
  ]);
});

void test('item keys sort naturally (nic2 before nic10) and odd keys are JSON-quoted in the path', () => {
  const after = {
    nics: [
      { id: 'nic10', network: 'a' },
      { id: 'nic2', network: 'b' },
      { id: 'eth.0 x', network: 'c' },
    ],
  };
  assert.deepEqual(
    diff({ nics: [] }, after, SCHEMA).map((c) => c.path),
    ['nics["eth.0 x"]', 'nics[nic2]', 'nics[nic10]'],
  );
});

void test('numeric keys are compared as strings: 0 and "0" are the same item', () => {
  const changes = diff({ disks: [{ id: 0, sizeGiB: 1 }] }, { disks: [{ id: '0', sizeGiB: 2 }] }, SCHEMA);
  assert.deepEqual(changes, [
    { path: 'disks[0].id', from: 0, to: '0' },
    { path: 'disks[0].sizeGiB', from: 1, to: 2 },
  ]);
});

void test('a list that cannot be keyed (duplicate or missing keys) is one change of the whole list', () => {
  const dup = {
    disks: [
      { id: 'a', sizeGiB: 1 },
      { id: 'a', sizeGiB: 2 },
    ],
  };
  assert.deepEqual(diff(dup, { disks: [{ id: 'a', sizeGiB: 1 }] }, SCHEMA), [
    {
      path: 'disks',
      from: [
        { id: 'a', sizeGiB: 1 },
        { id: 'a', sizeGiB: 2 },
      ],
      to: [{ id: 'a', sizeGiB: 1 }],
    },
  ]);
  const nokey = { disks: [{ sizeGiB: 1 }] };
  assert.deepEqual(diff(nokey, { disks: [{ sizeGiB: 2 }] }, SCHEMA), [
    { path: 'disks', from: [{ sizeGiB: 1 }], to: [{ sizeGiB: 2 }] },
  ]);
  assert.deepEqual(diff(nokey, { disks: [{ sizeGiB: 1 }] }, SCHEMA), []);
});

void test('tags are a set: one change with sorted, de-duplicated from/to; order and duplicates are no change', () => {
  assert.deepEqual(diff({ tags: ['a'] }, { tags: ['b', 'a'] }), [
    { path: 'tags', from: ['a'], to: ['a', 'b'] },
  ]);
  assert.deepEqual(diff({ tags: ['b', 'a'] }, { tags: ['a', 'b', 'a'] }), []);
  assert.deepEqual(diff({ tags: ['x'] }, {}), [{ path: 'tags', from: ['x'], to: null }]);
  assert.deepEqual(diff({ tags: [] }, { tags: ['pci', 'prod'] }), [
    { path: 'tags', from: [], to: ['pci', 'prod'] },
  ]);
  // Natural order, numbers by value, and 1 is not '1'.
  assert.deepEqual(diff({ ports: [10, 9] }, { ports: [9, 10, 100, '1'] }), [
    { path: 'ports', from: [9, 10], to: [9, 10, 100, '1'] },
  ]);
  assert.deepEqual(diff({ t: ['vm10', 'vm9'] }, { t: ['vm9'] }), [
    { path: 't', from: ['vm9', 'vm10'], to: ['vm9'] },
  ]);
});

void test('an ordered list (boot order) is compared by position', () => {
  const before = { bootOrder: ['disk', 'net'] };
  const after = { bootOrder: ['net', 'disk'] };
  assert.deepEqual(diff(before, after), [], 'undeclared: a set, so reordering is no change');
  assert.deepEqual(diff(before, after, { bootOrder: { ordered: true } }), [
    { path: 'bootOrder', from: ['disk', 'net'], to: ['net', 'disk'] },
  ]);
});

void test('nested settings by dotted path; objects that appear or change type are one change', () => {
  const before = { config: { cpu: { cores: 2, sockets: 1 }, memoryMiB: 1024, firmware: 'bios' } };
  const after = {
    config: { cpu: { cores: 4, sockets: 1 }, memoryMiB: 1024, firmware: { type: 'efi', secureBoot: true } },
    labels: { env: 'prod' },
  };
  assert.deepEqual(diff(before, after), [
    { path: 'config.cpu.cores', from: 2, to: 4 },
    { path: 'config.firmware', from: 'bios', to: { secureBoot: true, type: 'efi' } },
    { path: 'labels', from: null, to: { env: 'prod' } },
  ]);
});

void test('schema by dotted path for nested keyed lists (disks[…].snapshots)', () => {
  const schema: DiffSchema = { disks: 'id', 'disks.snapshots': { key: 'name' } };
  const before = { disks: [{ id: 'd0', snapshots: [{ name: 's1', sizeMiB: 5 }] }] };
  const after = {
    disks: [
      {
        id: 'd0',
        snapshots: [
          { name: 's2', sizeMiB: 1 },
          { name: 's1', sizeMiB: 7 },
        ],
      },
    ],
  };
  assert.deepEqual(diff(before, after, schema), [
    { path: 'disks[d0].snapshots[s1].sizeMiB', from: 5, to: 7 },
    { path: 'disks[d0].snapshots[s2]', from: null, to: { name: 's2', sizeMiB: 1 } },
  ]);
  // A bare name matches a list of that name at any depth.
  assert.deepEqual(
    diff(
      { config: { nics: [{ id: 'n', net: 'a' }] } },
      { config: { nics: [{ id: 'n', net: 'b' }] } },
      SCHEMA,
    ),
    [{ path: 'config.nics[n].net', from: 'a', to: 'b' }],
  );
});

void test('no change gives [] (deep copies, undefined vs absent, null vs absent, Dates, -0)', () => {
  const v = {
    ...demoBefore,
    tags: ['b', 'a'],
    created: new Date('2024-05-01T00:00:00Z'),
    config: { a: { b: { c: [1, 2, { d: null }] } } },
  };
  assert.deepEqual(diff(v, structuredClone(v), SCHEMA), []);
  assert.deepEqual(diff({ a: 1, b: undefined }, { a: 1 }), []);
  assert.deepEqual(diff({ a: 1, b: null }, { a: 1 }), []);
  assert.deepEqual(diff({ z: 0 }, { z: -0 }), []);
  assert.deepEqual(diff({}, {}), []);
  assert.deepEqual(diff(null, undefined), []);
});

void test('created (before null) lists every setting; deleted (after null) every old value', () => {
  assert.deepEqual(diff(null, { name: 'a', memoryMiB: 512 }), [
    { path: 'memoryMiB', from: null, to: 512 },
    { path: 'name', from: null, to: 'a' },
  ]);
  assert.deepEqual(diff({ name: 'a' }, null), [{ path: 'name', from: 'a', to: null }]);
});

void test('Dates are ISO strings; property order does not matter; paths quote odd names', () => {
  assert.deepEqual(diff({ at: new Date(0) }, { at: new Date(1000) }), [
    { path: 'at', from: '1970-01-01T00:00:00.000Z', to: '1970-01-01T00:00:01.000Z' },
  ]);
  assert.deepEqual(
    diff({ b: 1, a: 1 }, { a: 2, b: 2 }).map((c) => c.path),
    ['a', 'b'],
  );
  assert.deepEqual(
    diff({ 'a.b': 1, 'x y': { '': 1 } }, { 'a.b': 2, 'x y': { '': 2 } }).map((c) => c.path),
    ['"a.b"', '"x y".""'],
  );
});

void test('own properties only: __proto__ and constructor are data, never the prototype', () => {
  const after = JSON.parse('{"a":1,"__proto__":{"x":1}}') as object;
  const changes = diff({ a: 1 }, after);
  assert.deepEqual(changes, [{ path: '__proto__', from: null, to: { x: 1 } }]);
  assert.equal(
    Object.getPrototypeOf(changes[0]?.to),
    Object.prototype,
    'the value is not an object with a prototype of {x: 1}',
  );
  assert.deepEqual(diff({}, { constructor: 'c' }), [{ path: 'constructor', from: null, to: 'c' }]);
  assert.deepEqual(diff({ nics: [{ id: 'a' }] }, { nics: [] }, { nics: 'constructor' }), [
    { path: 'nics', from: [{ id: 'a' }], to: [] },
  ]);
});

void test('a shallow copy (shared references) diffs only what changed', () => {
  const after = { ...demoBefore, memoryMiB: 8192 };
  assert.deepEqual(diff(demoBefore, after, SCHEMA), [{ path: 'memoryMiB', from: 6144, to: 8192 }]);
});

function assertInvalid(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof HypersealError, `not a HypersealError: ${String(err)}`);
    assert.equal(err.code, 'HS_ERR_EVENT_INVALID');
    assert.match(err.message, pattern);
    return true;
  });
}

void test('refuses what JSON would mangle, naming where: NaN, Map, class instances, bigint, functions', () => {
  assertInvalid(() => diff({ a: 1 }, { a: NaN }), /NaN cannot be logged \(at a\)/);
  assertInvalid(() => diff({ a: 1 }, { a: Infinity }), /Infinity/);
  assertInvalid(() => diff({ m: new Map() }, { m: new Map([[1, 2]]) }), /a Map cannot be logged \(at m\)/);
  assertInvalid(() => diff({}, { x: { y: new (class Vm {})() } }), /a Vm cannot be logged \(at x\.y\)/);
  assertInvalid(() => diff({ n: 1n } as object, { n: 2n } as object), /bigint/);
  assertInvalid(() => diff({}, { f: () => 1 }), /function/);
  assertInvalid(() => diff({}, { d: new Date('nope') }), /invalid Date/);
  assertInvalid(() => diff([] as object, {}), /plain objects/);
});

void test('refuses cycles and excessive nesting instead of hanging', () => {
  const a: Record<string, unknown> = { x: 1 };
  a['self'] = a;
  const b: Record<string, unknown> = { x: 1 };
  b['self'] = b;
  assertInvalid(() => diff(a, b), /cycle/);
  // Two branches to itself: exponential without cycle detection.
  const c: Record<string, unknown> = {};
  c['l'] = c;
  c['r'] = c;
  assertInvalid(() => diff({}, { c }), /cycle/);
  // Not a cycle: after holds one of before's objects one level deeper.
  const q = { q: { r: 1 } };
  assert.deepEqual(diff({ p: q }, { p: { q } }), [
    { path: 'p.q.q', from: null, to: { r: 1 } },
    { path: 'p.q.r', from: 1, to: null },
  ]);
  let deep: Record<string, unknown> = { v: 1 };
  for (let i = 0; i < 40; i++) deep = { d: deep };
  assertInvalid(() => diff({}, deep), /nested deeper than 32/);
  assertInvalid(
    () =>
      diff(
        { list: Array.from({ length: 10 }, (_, i) => i) },
        { list: [] },
        {},
        { maxDepth: 32, maxNodes: 5 },
      ),
    /more than 5 values/,
  );
});

void test('Secret and bytes compare by content: re-wrapping an unchanged value is no change', () => {
  assert.deepEqual(diff({ cred: new Secret('x') }, { cred: new Secret('x') }), []);
  assert.deepEqual(diff({ blob: Buffer.from('ab') }, { blob: new Uint8Array([0x61, 0x62]) }), []);
  assert.equal(diff({ blob: Buffer.from('ab') }, { blob: Buffer.from('ac') }).length, 1);
});
