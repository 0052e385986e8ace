/** Change paths: the format, parsing back, refusals, and the natural order of keys. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HypersealError } from '../errors.js';
import { compareNatural, formatPath, parsePath, type PathSegment } from './path.js';

const p = (name: string): PathSegment => ({ kind: 'prop', name });
const k = (key: string): PathSegment => ({ kind: 'item', key });

void test('format and parse: bare where safe, JSON strings otherwise', () => {
  const cases: [PathSegment[], string][] = [
    [[p('memoryMiB')], 'memoryMiB'],
    [[p('config'), p('cpu'), p('cores')], 'config.cpu.cores'],
    [[p('nics'), k('nic0'), p('network')], 'nics[nic0].network'],
    [[p('disks'), k('scsi0:1')], 'disks[scsi0:1]'],
    [[p('disks'), k('a.b'), p('sizeGiB')], 'disks["a.b"].sizeGiB'],
    [[p('disks'), k('d0'), p('snapshots'), k('s1')], 'disks[d0].snapshots[s1]'],
    [[p(''), k('')], '""[""]'],
    [[p('x y'), p('"q"'), k(']'), k('\n')], '"x y"."\\"q\\""["]"]["\\n"]'],
    [[p('user@realm'), p('a/b+c-d$e_f')], 'user@realm.a/b+c-d$e_f'],
  ];
  for (const [segs, text] of cases) {
    assert.equal(formatPath(segs), text);
    assert.deepEqual(parsePath(text), segs, text);
  }
});

void test('malformed paths are refused with HS_ERR_EVENT_BAD_PATH', () => {
  for (const bad of [
    '',
    '.a',
    'a.',
    'a..b',
    'a[',
    'a[b',
    'a[]',
    'a]',
    '[a]',
    'a b',
    'a."b',
    'a["\\x"]',
    'a.[b]',
    'a[b]c',
  ]) {
    assert.throws(
      () => parsePath(bad),
      (err: unknown) => err instanceof HypersealError && err.code === 'HS_ERR_EVENT_BAD_PATH',
      JSON.stringify(bad),
    );
  }
});

void test('natural order: numbers by value, a total order consistent with equality', () => {
  const sorted = ['nic10', 'nic2', 'nic1', 'a', 'B', 'nic02', 'scsi0:10', 'scsi0:9', ''].sort(compareNatural);
  assert.deepEqual(sorted, ['', 'B', 'a', 'nic1', 'nic02', 'nic2', 'nic10', 'scsi0:9', 'scsi0:10']);
  assert.equal(compareNatural('x', 'x'), 0);
  assert.notEqual(compareNatural('nic2', 'nic02'), 0);
  assert.equal(Math.sign(compareNatural('nic2', 'nic02')), -Math.sign(compareNatural('nic02', 'nic2')));
});
