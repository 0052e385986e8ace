// The manager streams every event to a real rsyslog over TCP: added through the API,
// the target receives each event as RFC 5424 structured data, in order, and after a
// manager restart it catches up from the event store (nothing appended is lost).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Event } from '../../src/events/index.js';
import type { Rsyslog } from '../../src/events/syslog/rsyslog.testutil.js';
import { dedupe, eventIds, startRsyslog } from '../../src/events/syslog/rsyslog.testutil.js';
import type { Vm } from '../../src/manager/model.js';
import type { TestPlatform } from '../support/manager.js';
import { startTestPlatform, useTempConfigHome } from '../support/manager.js';

let restore: () => void;
let platform: TestPlatform;
let rsyslog: Rsyslog;
before(async () => {
  restore = useTempConfigHome();
  rsyslog = await startRsyslog();
  platform = await startTestPlatform({ agents: 1 });
});
after(async () => {
  await platform?.close();
  await rsyslog?.dispose();
  restore?.();
});

test('every event reaches rsyslog over TCP as RFC 5424, in order, with the history when asked', async () => {
  const api = platform.api;
  await api.post('/syslog-targets', {
    name: 'rsyslog-tcp',
    host: '127.0.0.1',
    port: rsyslog.tcpPort,
    transport: 'tcp',
    fromSeq: 'all',
  });
  const vm = await api.post<Vm>('/vms', { name: 'syslog-01', memoryMiB: 64, nics: [] });
  await api.patch(`/vms/${vm.id}`, { memoryMiB: 128 });
  const all = (await api.get<Event[]>('/events?limit=10000')).reverse();
  const want = all.map((e) => e.id);
  const lines = await rsyslog.waitFor((l) => dedupe(eventIds(l)).length >= want.length, 20_000);
  assert.deepEqual(dedupe(eventIds(lines)).slice(0, want.length), want, 'every event, in store order');
  const reconfigured = lines.find((l) => l.includes('vm.reconfigured'));
  assert.ok(reconfigured?.includes('memoryMiB'), reconfigured);
  // The target's status comes from the sender's worker thread, posted at most every few
  // hundred ms: the lines can reach rsyslog before the status says so.
  let targets = await api.get<{ name: string; connected: boolean }[]>('/syslog-targets');
  for (let i = 0; i < 50 && targets[0]?.connected !== true; i++) {
    await new Promise((r) => setTimeout(r, 100));
    targets = await api.get<{ name: string; connected: boolean }[]>('/syslog-targets');
  }
  assert.equal(targets[0]?.connected, true);
});

test('events appended while the manager was down are delivered after its restart', async () => {
  await platform.restartManager();
  const api = platform.api;
  const vm = await api.post<Vm>('/vms', { name: 'syslog-02', memoryMiB: 64 });
  const last = (await api.get<Event[]>(`/events?objectId=${vm.id}`))[0];
  assert.ok(last !== undefined);
  const lines = await rsyslog.waitFor((l) => eventIds(l).includes(last.id), 20_000);
  const ids = dedupe(eventIds(lines));
  const all = (await api.get<Event[]>('/events?limit=10000')).reverse().map((e) => e.id);
  assert.deepEqual(ids.slice(0, all.length), all, 'still every event, in order, after the restart');
});
