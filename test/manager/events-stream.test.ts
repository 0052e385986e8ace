// Queries, the live stream and export of the event store, through the API and the SDK.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Event } from '../../src/events/index.js';
import type { Vm } from '../../src/manager/model.js';
import type { TestPlatform } from '../support/manager.js';
import { startTestPlatform, useTempConfigHome } from '../support/manager.js';

let restore: () => void;
let platform: TestPlatform;
before(async () => {
  restore = useTempConfigHome();
  platform = await startTestPlatform({ agents: 1 });
});
after(async () => {
  await platform?.close();
  restore?.();
});

test('tail -f: the stream replays after a sequence number, then delivers new events live, in order', async () => {
  const api = platform.api;
  const head = (await api.get<Event[]>('/events?limit=1'))[0]?.seq ?? -1;
  const seen: Event[] = [];
  const controller = { done: (): void => undefined };
  const finished = new Promise<void>((resolve) => (controller.done = resolve));
  void api.stream(`/events/stream?afterSeq=${head - 2}`, (data) => {
    seen.push(JSON.parse(data) as Event);
    if (seen.some((e) => e.type === 'vm.reconfigured')) controller.done();
  });
  const vm = await api.post<Vm>('/vms', { name: 'tail-01', memoryMiB: 64 });
  await api.patch(`/vms/${vm.id}`, { memoryMiB: 96 });
  await Promise.race([
    finished,
    new Promise((_, reject) => setTimeout(() => reject(new Error('no live event')), 10_000)),
  ]);
  const seqs = seen.map((e) => e.seq);
  assert.deepEqual(
    seqs,
    [...seqs].sort((a, b) => a - b),
    'in order',
  );
  assert.equal(new Set(seqs).size, seqs.length, 'no duplicates');
  assert.equal(seqs[0], head - 1, 'replay starts right after afterSeq');
  const reconfigured = seen.find((e) => e.type === 'vm.reconfigured');
  assert.deepEqual(reconfigured?.changes, [{ path: 'memoryMiB', from: 64, to: 96 }]);
});

test('queries filter by type, user, text and time; export is every event as JSON lines, oldest first', async () => {
  const api = platform.api;
  const t0 = Date.now();
  const vm = await api.post<Vm>('/vms', { name: 'query-01', memoryMiB: 64 });
  const byType = await api.get<Event[]>(`/events?type=vm.created&since=${t0}`);
  assert.deepEqual(
    byType.map((e) => e.object.name),
    ['query-01'],
  );
  assert.ok((await api.get<Event[]>(`/events?text=query-01`)).every((e) => e.message.includes('query-01')));
  assert.equal((await api.get<Event[]>(`/events?user=nobody-at-all`)).length, 0);
  assert.equal(
    (await api.get<Event[]>(`/events?until=${t0}&type=vm.created`)).some((e) => e.object.id === vm.id),
    false,
  );
  const text = (await api.request<string>('GET', '/events/export')).body;
  const lines = String(text)
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Event);
  assert.deepEqual(
    lines.map((e) => e.seq),
    lines.map((_, i) => i),
    'every event, from the genesis one, in order',
  );
  const v = await api.get<{ ok: boolean; count: number }>('/events/verify');
  assert.deepEqual(v, { ok: true, count: lines.length });
});
