import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { decodeColdArchive, encodeColdArchive } from './cold-archive.js';

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
    const boundary = cut === 2 + 5 + 4 + 4;
    if (boundary) assert.equal(decodeColdArchive(part).length, 1);
    else
      assert.throws(() => decodeColdArchive(part), { code: 'HS_ERR_MIGRATION_TRUNCATED' }, `cut at ${cut}`);
  }
});

test('names outside the closed set are refused: no path leaves the VM home', () => {
  const entry = (name: string): Buffer => {
    const n = Buffer.from(name);
    const b = Buffer.alloc(2 + n.length + 4 + 1);
    b.writeUInt16BE(n.length, 0);
    n.copy(b, 2);
    b.writeUInt32BE(1, 2 + n.length);
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
  ]) {
    assert.throws(() => decodeColdArchive(entry(name)), { code: 'HS_ERR_MIGRATION_BAD_FRAME' }, name);
    assert.throws(() => encodeColdArchive([{ name, data: Buffer.alloc(1) }]), {
      code: 'HS_ERR_MIGRATION_BAD_FRAME',
    });
  }
  assert.throws(() => decodeColdArchive(Buffer.concat([entry('nvram'), entry('nvram')])), /nvram twice/);
});
