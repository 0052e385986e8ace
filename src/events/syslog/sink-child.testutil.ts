// Test support for sink.test.ts: a process with a SyslogSink that the test kills with
// SIGKILL. argv: one JSON object {queueDir, port, n, tag, paceEvery, paceMs, ackGraceMs}. Delivers
// makeEvents(n, tag) over TCP to 127.0.0.1:port, sleeping paceMs every paceEvery events,
// and prints `Q <i>` once event i is durably queued (deliver() resolved), in order.
import { makeEvents } from './rsyslog.testutil.js';
import { SyslogSink } from './sink.js';

interface Args {
  queueDir: string;
  port: number;
  n: number;
  tag: string;
  paceEvery: number;
  paceMs: number;
  ackGraceMs: number;
}

async function main(): Promise<void> {
  const args = JSON.parse(process.argv[2] ?? '{}') as Args;
  const sink = new SyslogSink(
    { id: 'child', host: '127.0.0.1', port: args.port, transport: 'tcp', format: 'rfc5424' },
    { queueDir: args.queueDir, reconnectMinMs: 20, reconnectMaxMs: 100, ackGraceMs: args.ackGraceMs },
  );
  sink.start();
  const events = makeEvents(args.n, args.tag);
  const done: Promise<void>[] = [];
  for (let i = 0; i < events.length; i++) {
    done.push(
      sink.deliver(events[i] as (typeof events)[number]).then(() => void process.stdout.write(`Q ${i}\n`)),
    );
    if ((i + 1) % args.paceEvery === 0) await new Promise((r) => setTimeout(r, args.paceMs));
  }
  await Promise.all(done);
  process.stdout.write('all queued\n');
  // Stay alive (sending) until killed.
  await new Promise((r) => setTimeout(r, 60_000));
}

if (process.argv[1]?.endsWith('sink-child.testutil.js') === true) {
  main().catch((err: unknown) => {
    process.stderr.write(`${String(err)}\n`);
    process.exit(1);
  });
}
