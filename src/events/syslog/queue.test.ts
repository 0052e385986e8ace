// The on-disk queue: order, group commit, rotation and deletion, the cursor across a clean
// close, torn tails and real damage, the lock, and kill -9 at random moments of a process
// that is writing and acknowledging.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isHypersealError } from '../../errors.js';
import { recordBody } from './queue-child.testutil.js';
import type { QueueRecord } from './queue.js';
import { DiskQueue, SEGMENT_HEADER_BYTES, encodeRecord } from './queue.js';

const CHILD = join(dirname(fileURLToPath(import.meta.url)), 'queue-child.testutil.js');

function tempDir(): string {
  return fs.mkdtempSync(join(tmpdir(), 'hyperseal-queue-'));
}

async function readAll(q: DiskQueue): Promise<QueueRecord[]> {
  const out: QueueRecord[] = [];
  let pos = q.head;
  for (;;) {
    const batch = await q.read(pos, 64 * 1024);
    if (batch.length === 0) return out;
    out.push(...batch);
    pos = (batch.at(-1) as QueueRecord).next;
  }
}

const segments = (dir: string): string[] =>
  fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.seg'))
    .sort();

for (const memoryBytes of [undefined, 0]) {
  const where = memoryBytes === 0 ? 'read back from the file' : 'read from memory';
  test(`records come back in enqueue order (${where}); concurrent enqueues share fdatasyncs`, async () => {
    const dir = tempDir();
    const q = new DiskQueue({
      dir,
      segmentBytes: 64 * 1024,
      ...(memoryBytes === undefined ? {} : { memoryBytes }),
    });
    q.open();
    await Promise.all(Array.from({ length: 1000 }, (_, i) => q.enqueue(`e${i}`, Buffer.from(`body ${i}`))));
    assert.ok(q.groupsWritten <= 20, `1000 concurrent records took ${q.groupsWritten} groups`);
    const recs = await readAll(q);
    assert.deepEqual(
      recs.map((r) => r.id),
      Array.from({ length: 1000 }, (_, i) => `e${i}`),
    );
    assert.deepEqual(recs[999]?.body.toString(), 'body 999');
    // Messages are stored octet-counted, ready to send.
    await q.enqueue('m', ['<134>1 - - - - - - é', 'two']);
    assert.equal((await readAll(q)).at(-1)?.body.toString(), '21 <134>1 - - - - - - é3 two');
    assert.equal(q.count, 1001);
    await q.close();
    fs.rmSync(dir, { recursive: true });
  });
}

test('read returns a record larger than maxBytes whole, and nothing that is not yet durable', async () => {
  const dir = tempDir();
  const q = new DiskQueue({ dir });
  q.open();
  await q.enqueue('big', Buffer.alloc(100_000, 0x61));
  await q.enqueue('small', Buffer.from('x'));
  const [first, ...rest] = await q.read(q.head, 100);
  assert.equal(first?.id, 'big');
  assert.equal(first?.body.length, 100_000);
  assert.deepEqual(rest, []);
  const pending = q.enqueue('late', Buffer.from('y'));
  const seen = await q.read((await q.read(first?.next ?? q.head, 1 << 20)).at(-1)?.next ?? q.head, 1 << 20);
  await pending;
  assert.ok(seen.length <= 1);
  await q.close();
  fs.rmSync(dir, { recursive: true });
});

test('acknowledged records are never read again, also after a clean close; unacknowledged ones are', async () => {
  const dir = tempDir();
  let q = new DiskQueue({ dir, cursorIntervalMs: 1 });
  q.open();
  for (let i = 0; i < 10; i++) await q.enqueue(`e${i}`, Buffer.from(String(i)));
  const recs = await readAll(q);
  q.ack((recs[4] as QueueRecord).next, 5);
  assert.deepEqual(
    (await readAll(q)).map((r) => r.id),
    ['e5', 'e6', 'e7', 'e8', 'e9'],
  );
  assert.equal(q.count, 5);
  // An older position does not move the head back.
  q.ack((recs[1] as QueueRecord).next, 2);
  assert.equal(q.count, 5);
  await q.close();
  await assert.rejects(q.enqueue('x', Buffer.from('x')), (e) => isHypersealError(e, 'HS_ERR_SYSLOG_CLOSED'));

  q = new DiskQueue({ dir });
  q.open();
  assert.equal(q.count, 5);
  assert.deepEqual(
    (await readAll(q)).map((r) => r.id),
    ['e5', 'e6', 'e7', 'e8', 'e9'],
  );
  await q.enqueue('e10', Buffer.from('10'));
  assert.deepEqual((await readAll(q)).at(-1)?.id, 'e10');
  await q.close();
  fs.rmSync(dir, { recursive: true });
});

test('segments rotate at segmentBytes and are deleted once acknowledged and the cursor is written', async () => {
  const dir = tempDir();
  const q = new DiskQueue({ dir, segmentBytes: 4096, cursorIntervalMs: 1 });
  q.open();
  for (let i = 0; i < 40; i++) await q.enqueue(`e${i}`, Buffer.alloc(500, 0x62));
  const before = segments(dir);
  assert.ok(before.length >= 5, `only ${before.length} segments`);
  const recs = await readAll(q);
  assert.equal(recs.length, 40);
  q.ack((recs[39] as QueueRecord).next, 40);
  assert.equal(q.count, 0);
  assert.equal(q.bytes, 0);
  for (let i = 0; i < 100 && segments(dir).length > 1; i++) await new Promise((r) => setTimeout(r, 5));
  const after = segments(dir);
  assert.equal(after.length, 1, `only the current segment remains: ${after.join(', ')}`);
  assert.ok((after[0] as string) >= (before.at(-1) as string));
  await q.close();
  fs.rmSync(dir, { recursive: true });
});

test('a torn last record (cut short, or bad CRC) is dropped at open; records before it survive', async () => {
  for (const damage of ['cut', 'crc', 'zeros'] as const) {
    const dir = tempDir();
    let q = new DiskQueue({ dir });
    q.open();
    for (let i = 0; i < 5; i++) await q.enqueue(`e${i}`, Buffer.from(`body ${i}`));
    await q.close();
    const seg = join(dir, segments(dir).at(-1) as string);
    const torn = encodeRecord('torn', Buffer.alloc(1000, 0x63));
    if (damage === 'cut') fs.appendFileSync(seg, torn.subarray(0, 500));
    if (damage === 'crc')
      fs.appendFileSync(seg, Buffer.concat([torn.subarray(0, 900), Buffer.alloc(torn.length - 900)]));
    if (damage === 'zeros') fs.appendFileSync(seg, Buffer.alloc(4096));
    const size = fs.statSync(seg).size;
    q = new DiskQueue({ dir });
    q.open();
    assert.ok(fs.statSync(seg).size < size, `${damage}: the torn tail was cut off`);
    assert.equal(q.count, 5);
    await q.enqueue('after', Buffer.from('ok'));
    assert.deepEqual(
      (await readAll(q)).map((r) => r.id),
      ['e0', 'e1', 'e2', 'e3', 'e4', 'after'],
      damage,
    );
    await q.close();
    fs.rmSync(dir, { recursive: true });
  }
});

test('damage anywhere but the tail of the last segment is HS_ERR_SYSLOG_QUEUE_CORRUPT', async () => {
  const dir = tempDir();
  let q = new DiskQueue({ dir });
  q.open();
  for (let i = 0; i < 5; i++) await q.enqueue(`e${i}`, Buffer.from(`body ${i}`));
  await q.close();
  q = new DiskQueue({ dir }); // a second segment: the first is now complete
  q.open();
  await q.enqueue('e5', Buffer.from('body 5'));
  await q.close();
  const first = join(dir, segments(dir)[0] as string);
  const fd = fs.openSync(first, 'r+');
  fs.writeSync(fd, Buffer.from('X'), 0, 1, SEGMENT_HEADER_BYTES + 12); // inside e0's payload
  fs.closeSync(fd);
  assert.throws(
    () => new DiskQueue({ dir }).open(),
    (e) =>
      isHypersealError(e, 'HS_ERR_SYSLOG_QUEUE_CORRUPT') && /bad record at offset 8 \(CRC/.test(e.message),
  );
  // The failed open released the lock: a repaired queue opens.
  fs.writeFileSync(join(dir, 'cursor.json'), '{"version":1,"segment":99,"offset":8}');
  assert.throws(
    () => new DiskQueue({ dir }).open(),
    (e) => isHypersealError(e, 'HS_ERR_SYSLOG_QUEUE_CORRUPT'),
  );
  fs.writeFileSync(join(dir, 'cursor.json'), '{"version":1,"segment":2,"offset":9}');
  assert.throws(
    () => new DiskQueue({ dir }).open(),
    (e) => isHypersealError(e, 'HS_ERR_SYSLOG_QUEUE_CORRUPT') && /not a record boundary/.test(e.message),
  );
  fs.writeFileSync(join(dir, 'cursor.json'), 'nonsense');
  assert.throws(
    () => new DiskQueue({ dir }).open(),
    (e) => isHypersealError(e, 'HS_ERR_SYSLOG_QUEUE_CORRUPT'),
  );
  fs.rmSync(dir, { recursive: true });
});

test('the lock: a second open is refused while the first holds it; a dead process’s lock is taken over', async () => {
  const dir = tempDir();
  const q = new DiskQueue({ dir });
  q.open();
  assert.throws(
    () => new DiskQueue({ dir }).open(),
    (e) => isHypersealError(e, 'HS_ERR_SYSLOG_QUEUE_LOCKED'),
  );
  await q.close();
  // A pid that cannot be alive (above pid_max on Linux).
  fs.writeFileSync(join(dir, 'lock'), '99999999\n');
  const again = new DiskQueue({ dir });
  again.open();
  assert.equal(fs.readFileSync(join(dir, 'lock'), 'utf8').trim(), String(process.pid));
  await again.close();
  assert.ok(!fs.existsSync(join(dir, 'lock')), 'released on close');
  fs.rmSync(dir, { recursive: true });
});

test('the size limit refuses records with HS_ERR_SYSLOG_QUEUE_FULL, and frees up as records are acknowledged', async () => {
  const dir = tempDir();
  const q = new DiskQueue({ dir, maxQueueBytes: 10_000 });
  q.open();
  for (let i = 0; i < 9; i++) await q.enqueue(`e${i}`, Buffer.alloc(1000));
  await assert.rejects(q.enqueue('over', Buffer.alloc(1000)), (e) =>
    isHypersealError(e, 'HS_ERR_SYSLOG_QUEUE_FULL'),
  );
  const recs = await readAll(q);
  q.ack((recs[0] as QueueRecord).next, 1);
  await q.enqueue('fits', Buffer.alloc(1000));
  await q.close();
  fs.rmSync(dir, { recursive: true });
});

test('kill -9 at random moments while writing and acknowledging: nothing confirmed is lost, nothing torn is read', async () => {
  const dir = tempDir();
  let next = 0;
  let firstSeen = 0;
  for (let round = 0; round < 6; round++) {
    const child = spawn(process.execPath, [CHILD, dir, String(next)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    while (!out.includes('ready')) {
      assert.equal(child.exitCode, null, `child died: ${err}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    await new Promise((r) => setTimeout(r, 40 + Math.random() * 200));
    child.kill('SIGKILL');
    await exited;
    assert.equal(err, '', 'the child wrote no error');
    const durable = [...out.matchAll(/^D (\d+)$/gm)].map((m) => Number(m[1]));
    const acked = [...out.matchAll(/^A (\d+)$/gm)].map((m) => Number(m[1]));
    assert.ok(durable.length > 0, `round ${round}: the child confirmed records before it was killed`);

    const q = new DiskQueue({ dir });
    q.open();
    const recs = await readAll(q);
    const ids = recs.map((r) => Number(r.id.slice(1)));
    for (const r of recs)
      assert.deepEqual(r.body, recordBody(Number(r.id.slice(1))), `record ${r.id} intact`);
    // Consecutive: no gap, no repeat, nothing out of order.
    ids.forEach((id, k) => assert.equal(id, (ids[0] as number) + k, `round ${round}: record ${k} is r${id}`));
    // Every confirmed record not acknowledged is there.
    const maxAcked = acked.length === 0 ? -1 : Math.max(...acked);
    const mustHave = durable.filter((d) => d > maxAcked);
    for (const d of mustHave) assert.ok(ids.includes(d), `round ${round}: confirmed record r${d} lost`);
    if (ids.length > 0) {
      // The head never moves back, and at most the acknowledgements of the last ms are forgotten.
      const first = ids[0] as number;
      assert.ok(first >= firstSeen, `round ${round}: head moved back from r${firstSeen} to r${first}`);
      assert.ok(first <= maxAcked + 1, `round ${round}: r${maxAcked + 1}…r${first - 1} were lost`);
      firstSeen = first;
    }
    next = Math.max(ids.at(-1) ?? -1, ...durable) + 1;
    assert.equal(q.count, ids.length);
    await q.close();
  }
  fs.rmSync(dir, { recursive: true });
});
