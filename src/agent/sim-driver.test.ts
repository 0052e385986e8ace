// The sim driver's own rules and its store: state transitions, group-committed journal,
// compaction into the snapshot, a torn journal tail after a crash, corrupt files refused.
import assert from 'node:assert/strict';
import { appendFileSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { isHypersealError } from '../errors.js';
import type { VmSpec } from './api.js';
import { SIM_JOURNAL_FILE, SIM_STATE_FILE, SimDriver } from './sim-driver.js';
import { tempDir } from './testing.js';

const dirs: { remove(): void }[] = [];
after(() => dirs.forEach((d) => d.remove()));

function dataDir(): string {
  const d = tempDir('sim');
  dirs.push(d);
  return d.path;
}

const spec = (id: string, memoryMiB = 256): VmSpec => ({
  id,
  name: id,
  cpus: 1,
  memoryMiB,
  firmware: 'bios',
  secureBoot: false,
  disks: [],
  nics: [],
  encryption: null,
});

void test('states follow the driver rules', async () => {
  const d = SimDriver.open(dataDir());
  assert.deepEqual(await d.define(spec('a')), {
    id: 'a',
    state: 'stopped',
    simulated: true,
    encryption: null,
    locked: false,
  });
  await assert.rejects(d.reset('a'), (e: unknown) => isHypersealError(e, 'HS_ERR_CONFLICT'));
  await assert.rejects(d.shutdown('a', 0), (e: unknown) => isHypersealError(e, 'HS_ERR_CONFLICT'));
  assert.equal((await d.powerOff('a')).state, 'stopped', 'power-off of a stopped VM is a no-op');
  assert.equal((await d.powerOn('a')).state, 'running');
  await assert.rejects(d.define(spec('a', 512)), (e: unknown) => isHypersealError(e, 'HS_ERR_CONFLICT'));
  await assert.rejects(d.remove('a'), (e: unknown) => isHypersealError(e, 'HS_ERR_CONFLICT'));
  await assert.rejects(d.powerOn('nope'), (e: unknown) => isHypersealError(e, 'HS_ERR_NOT_FOUND'));
  await assert.rejects(d.define({ ...spec('b'), secureBoot: true }), (e: unknown) =>
    isHypersealError(e, 'HS_ERR_INVALID_ARGUMENT'),
  );
  await d.close();
});

void test('concurrent changes share writes; the journal is folded into the snapshot and replays exactly', async () => {
  const dir = dataDir();
  const d = SimDriver.open(dir);
  const n = 2500;
  await Promise.all(Array.from({ length: n }, (_, i) => d.define(spec(`vm-${i}`))));
  await Promise.all(Array.from({ length: n / 5 }, (_, i) => d.powerOn(`vm-${i * 5}`)));
  await Promise.all(Array.from({ length: 10 }, (_, i) => d.remove(`vm-${i * 5 + 1}`)));
  assert.ok(existsSync(join(dir, SIM_STATE_FILE)), 'the journal outgrew the minimum and was compacted');
  const want = (await d.list()).sort((a, b) => a.id.localeCompare(b.id));
  await d.close();

  const reopened = SimDriver.open(dir);
  assert.deepEqual(
    (await reopened.list()).sort((a, b) => a.id.localeCompare(b.id)),
    want,
  );
  assert.equal(want.length, n - 10);
  assert.equal(want.filter((v) => v.state === 'running').length, n / 5);
  await reopened.close();
});

void test('a journal line torn by a crash is dropped and cut off, so later appends stay readable', async () => {
  const dir = dataDir();
  const d = SimDriver.open(dir);
  await d.define(spec('a'));
  await d.powerOn('a');
  await d.close();
  const journal = join(dir, SIM_JOURNAL_FILE);
  const intact = statSync(journal).size;
  appendFileSync(journal, '{"put":{"spec":{"id":"half');

  const after1 = SimDriver.open(dir);
  assert.deepEqual(await after1.list(), [
    { id: 'a', state: 'running', simulated: true, encryption: null, locked: false },
  ]);
  assert.equal(statSync(journal).size, intact, 'the torn tail was truncated');
  await after1.define(spec('b'));
  await after1.close();

  const after2 = SimDriver.open(dir);
  assert.deepEqual((await after2.list()).map((v) => v.id).sort(), ['a', 'b']);
  await after2.close();
});

void test('damaged or hand-edited stores are refused with HS_ERR_CONFIG', () => {
  const dir = dataDir();
  writeFileSync(join(dir, SIM_JOURNAL_FILE), '{"put":{"spec":{"id":"x"},"state":"running"}}\n');
  assert.throws(
    () => SimDriver.open(dir),
    (e: unknown) => isHypersealError(e, 'HS_ERR_CONFIG'),
  );
  writeFileSync(join(dir, SIM_JOURNAL_FILE), 'garbage\n{"del":"a"}\n');
  assert.throws(
    () => SimDriver.open(dir),
    (e: unknown) => isHypersealError(e, 'HS_ERR_CONFIG'),
  );
  writeFileSync(join(dir, SIM_JOURNAL_FILE), '');
  writeFileSync(join(dir, SIM_STATE_FILE), '{"version":2,"vms":[]}');
  assert.throws(
    () => SimDriver.open(dir),
    (e: unknown) => isHypersealError(e, 'HS_ERR_CONFIG'),
  );
  assert.ok(readFileSync(join(dir, SIM_STATE_FILE), 'utf8').includes('"version":2'), 'left untouched');
});
