// A migration the manager did not see finish (it was killed, or lost the answer) leaves
// the VM on the destination while its row still names the source. The health loop finds
// it there and records it — only when nothing is under way on it and the source answers
// that it no longer has it; a VM both hosts have is never moved. Two sim agents, driven
// directly the way the manager drives them in a migration.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { Event } from '../../src/events/index.js';
import type { Vm } from '../../src/manager/model.js';
import type { TestPlatform } from '../support/manager.js';
import { startTestPlatform, useTempConfigHome } from '../support/manager.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('VMs found on another host after an unrecorded migration', { concurrency: 1 }, () => {
  let restore: () => void;
  let p: TestPlatform;
  const host = (i: number): string => p.agents[i]?.hostId ?? '';
  before(async () => {
    restore = useTempConfigHome();
    p = await startTestPlatform({ agents: 2, healthIntervalMs: 200 });
  });
  after(async () => {
    await p?.close();
    restore?.();
  });

  /** The destination's half of a cold migration, as the manager would ask it. */
  async function receiveOn(i: number, vm: Vm): Promise<{ id: string; cipher: 'none' }> {
    const services = p.manager.services;
    const src = services.hosts.agent(vm.hostId);
    const migration = { id: randomUUID(), cipher: 'none' as const };
    await services.hosts.agent(host(i)).migrationIncoming(vm.id, {
      spec: await services.vms.spec(vm),
      record: await src.migrationRecord(vm.id),
      migration,
      cold: true,
    });
    return migration;
  }

  const waitFor = async <T>(what: string, get: () => Promise<T | undefined>, ms = 15_000): Promise<T> => {
    const deadline = Date.now() + ms;
    for (;;) {
      const v = await get();
      if (v !== undefined) return v;
      if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
      await sleep(100);
    }
  };

  test('on both hosts (the source still has it): never moved', async () => {
    const vm = await p.api.post<Vm>('/vms', { name: 'both', hostId: host(0), memoryMiB: 64 });
    await receiveOn(1, vm);
    await sleep(1500); // several health ticks
    assert.equal((await p.api.get<Vm>(`/vms/${vm.id}`)).hostId, host(0));
    const events = await p.api.get<Event[]>(`/events?objectId=${vm.id}&type=vm.relocated`);
    assert.deepEqual(events, []);
  });

  test('moved by an unrecorded migration: recorded on its new host, with an event', async () => {
    const vm = await p.api.post<Vm>('/vms', { name: 'moved', hostId: host(0), memoryMiB: 64 });
    const migration = await receiveOn(1, vm);
    // The source lets it go (the manager never hears the answer).
    await p.manager.services.hosts.agent(host(0)).migrationOutgoing(vm.id, {
      migration,
      peer: { host: '127.0.0.1', port: 9 },
      cold: true,
    });
    const moved = await waitFor('the VM recorded on host 2', async () => {
      const now = await p.api.get<Vm>(`/vms/${vm.id}`);
      return now.hostId === host(1) ? now : undefined;
    });
    assert.equal(moved.state, 'stopped');
    // The event follows the record's move (written just after it).
    const e = await waitFor('the vm.relocated event', async () =>
      (await p.api.get<Event[]>(`/events?objectId=${vm.id}&type=vm.relocated`)).at(0),
    );
    assert.equal(e.user, 'system');
    assert.deepEqual(
      e.changes.map((c) => [c.path, c.from, c.to]),
      [['hostId', host(0), host(1)]],
    );
    // And it works there: power-on goes to the host that has it.
    const on = await p.request<{ state: string }>(
      p.adminToken,
      'POST',
      `/vms/${vm.id}/actions/power-on?sync=true`,
    );
    assert.equal(on.body.state, 'succeeded', JSON.stringify(on.body));
  });
});
