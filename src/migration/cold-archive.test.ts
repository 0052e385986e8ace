import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import {
  ColdArchiveReader,
  decodeColdArchive,
  encodeColdArchive,
  encodeColdEntryHeader,
} from './cold-archive.js';

test('round trip: NVRAM and vTPM state, and the empty archive', () => {
  const entries = [
    { name: 'nvram', data: randomBytes(540_672) },
    { name: 'tpm/tpm2-00.permall', data: randomBytes(1404) },
  ];
  assert.deepEqual(decodeColdArchive(encodeColdArchive(entries)), entries);
  assert.deepEqual(decodeColdArchive(Buffer.alloc(0)), []);
  assert.equal(encodeColdArchive([]).length, 0);
});

test('every truncation is refused', () => {
  const archive = encodeColdArchive([
    { name: 'nvram', data: Buffer.from('vars') },
    { name: 'tpm/tpm2-00.permall', data: Buffer.from('state') },
  ]);
  for (let cut = 1; cut < archive.length; cut++) {
    const part = archive.subarray(0, cut);
    // Cuts that fall exactly between entries are whole archives of fewer entries.
    const boundary = cut === 2 + 5 + 8 + 4;
    if (boundary) assert.equal(decodeColdArchive(part).length, 1);
    else
      assert.throws(() => decodeColdArchive(part), { code: 'HS_ERR_MIGRATION_TRUNCATED' }, `cut at ${cut}`);
  }
});

test('names outside the closed set are refused: no path leaves the VM home', () => {
  const entry = (name: string): Buffer => {
    const n = Buffer.from(name);
    const b = Buffer.alloc(2 + n.length + 8 + 1);
    b.writeUInt16BE(n.length, 0);
    n.copy(b, 2);
    b.writeBigUInt64BE(1n, 2 + n.length);
    return b;
  };
  for (const name of [
    '../nvram',
    'tpm/../../etc/passwd',
    'tpm/.lock',
    'tpm/',
    'spec.json',
    '/nvram',
    'tpm/a/b',
    'disk/../x',
    'disk/',
    'disk/.hidden',
  ]) {
    assert.throws(() => decodeColdArchive(entry(name)), { code: 'HS_ERR_MIGRATION_BAD_FRAME' }, name);
    assert.throws(() => encodeColdArchive([{ name, data: Buffer.alloc(1) }]), {
      code: 'HS_ERR_MIGRATION_BAD_FRAME',
    });
  }
  assert.throws(() => decodeColdArchive(Buffer.concat([entry('nvram'), entry('nvram')])), /nvram twice/);
});

test('the reader streams: fed a byte at a time it yields the same entries; data is never gathered', () => {
  const entries = [
    { name: 'nvram', data: randomBytes(3000) },
    { name: 'disk/disk0', data: randomBytes(70_000) },
    { name: 'disk/empty', data: Buffer.alloc(0) },
    { name: 'tpm/tpm2-00.permall', data: randomBytes(100) },
  ];
  const archive = encodeColdArchive(entries);
  for (const size of [1, 7, 4096, archive.length]) {
    const reader = new ColdArchiveReader();
    const got = new Map<string, Buffer[]>();
    const order: string[] = [];
    for (let at = 0; at < archive.length; at += size) {
      for (const part of reader.push(archive.subarray(at, at + size))) {
        if (part.kind === 'start') {
          got.set(part.name, []);
          order.push(`start ${part.name} ${part.length}`);
        } else if (part.kind === 'data') {
          assert.ok(part.data.length <= size, 'pieces of what was pushed, no more');
          got.get(part.name)?.push(part.data);
        } else order.push(`end ${part.name}`);
      }
    }
    reader.finish();
    assert.deepEqual(
      order,
      entries.flatMap((e) => [`start ${e.name} ${e.data.length}`, `end ${e.name}`]),
    );
    for (const e of entries) assert.deepEqual(Buffer.concat(got.get(e.name) ?? []), e.data, e.name);
  }
});

test('a disk entry may be larger than a small entry may; lengths beyond 2^53 are refused', () => {
  const big = encodeColdEntryHeader('disk/disk0', 100 * 1024 ** 3);
  const parts = new ColdArchiveReader().push(big);
  assert.deepEqual(parts, [{ kind: 'start', name: 'disk/disk0', length: 100 * 1024 ** 3 }]);
  assert.throws(() => encodeColdEntryHeader('nvram', 65 * 1024 * 1024), /nvram is too large/);
  const huge = Buffer.from(big);
  huge.writeBigUInt64BE(2n ** 60n, 2 + 'disk/disk0'.length);
  assert.throws(() => new ColdArchiveReader().push(huge), { code: 'HS_ERR_MIGRATION_BAD_FRAME' });
  const reader = new ColdArchiveReader();
  reader.push(big.subarray(0, 5));
  assert.throws(() => reader.finish(), { code: 'HS_ERR_MIGRATION_TRUNCATED' });
});
