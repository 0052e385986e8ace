// Test support for queue.test.ts: a process that fills a queue until it is killed.
// argv: DIR FIRST — enqueues records r<FIRST>, r<FIRST+1>, … (bodies from recordBody), up
// to 64 at a time, and now and then reads from the head and acknowledges a few. It prints
// `D <i>` once record i is durable (enqueue resolved) and `A <i>` once records up to i are
// acknowledged (in memory: the cursor follows within a few ms). The parent SIGKILLs it at a
// random moment and checks what survived.
import { DiskQueue } from './queue.js';

/** The body of record i: its number, then i-dependent filler of 0–3000 bytes. */
export function recordBody(i: number): Buffer {
  return Buffer.from(`${i}:${'abcdefghij'.repeat((i * 7919) % 300)}`);
}

async function main(): Promise<void> {
  const [dir, firstArg] = process.argv.slice(2);
  if (dir === undefined || firstArg === undefined) throw new Error('usage: DIR FIRST');
  const q = new DiskQueue({ dir, segmentBytes: 64 * 1024, cursorIntervalMs: 2 });
  q.open();
  let next = Number(firstArg);
  let outstanding = 0;
  process.stdout.write('ready\n');
  for (;;) {
    while (outstanding < 64) {
      const i = next++;
      outstanding++;
      void q.enqueue(`r${i}`, recordBody(i)).then(() => {
        outstanding--;
        process.stdout.write(`D ${i}\n`);
      });
    }
    if (Math.random() < 0.3) {
      const recs = await q.read(q.head, 4096);
      const upTo = recs.slice(0, 1 + Math.floor(Math.random() * recs.length));
      const last = upTo.at(-1);
      if (last !== undefined) {
        q.ack(last.next, upTo.length);
        process.stdout.write(`A ${last.id.slice(1)}\n`);
      }
    }
    await new Promise((r) => setImmediate(r));
  }
}

if (process.argv[1]?.endsWith('queue-child.testutil.js') === true) {
  main().catch((err: unknown) => {
    process.stderr.write(`${String(err)}\n`);
    process.exit(1);
  });
}
