// One behavioural suite for the VM lifecycle, run against SQLite and a real PostgreSQL
// (CONVENTIONS §13): create with two NICs on 'PCI' and 'Non-PCI', power on as a task,
// reconfigure while running (the event carries exactly what changed, lists diffed by key),
// power off, delete; the event hash chain verifies and names a tampered row; bad input
// changes nothing; a manager restart fails interrupted tasks and keeps the inventory.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Change, Event } from '../../src/events/index.js';
import type { HostRecord } from '../../src/manager/hosts.js';
import type { Vm } from '../../src/manager/model.js';
import type { Task } from '../../src/manager/tasks.js';
import type { ErrorAnswer, TestPlatform } from '../support/manager.js';
import { startTestPlatform, useTempConfigHome } from '../support/manager.js';
import type { PostgresServer } from '../support/postgres.js';
import { startPostgres } from '../support/postgres.js';

interface Verify {
  ok: boolean;
  count: number;
  firstBad?: { id: string; index: number; reason: string };
}

function lifecycleSuite(backend: 'sqlite' | 'postgres'): void {
  describe(`VM lifecycle (${backend})`, () => {
    let restoreConfig: () => void;
    let pg: PostgresServer | undefined;
    let platform: TestPlatform;
    let vm: Vm;

    before(async () => {
      restoreConfig = useTempConfigHome();
      if (backend === 'postgres') pg = await startPostgres();
      platform = await startTestPlatform({ agents: 1, ...(pg ? { database: pg.url } : {}) });
      for (const name of ['PCI', 'Non-PCI']) {
        const res = await platform.request(platform.adminToken, 'POST', '/networks', { name });
        assert.equal(res.status, 201);
      }
    });
    after(async () => {
      await platform?.close();
      await pg?.stop();
      restoreConfig();
    });

    const api = (): TestPlatform['api'] => platform.api;
    const eventsOf = (id: string, type?: string): Promise<Event[]> =>
      api().get<Event[]>(`/events?objectId=${id}${type ? `&type=${type}` : ''}&limit=1000`);
    const head = async (): Promise<number | undefined> =>
      (await api().get<Event[]>('/events?limit=1'))[0]?.seq;
    const action = async (id: string, verb: string): Promise<{ status: number; task: Task }> => {
      const res = await platform.request<Task>(
        platform.adminToken,
        'POST',
        `/vms/${id}/actions/${verb}?sync=true`,
      );
      return { status: res.status, task: res.body };
    };

    test('create a VM with two NICs on PCI and Non-PCI', async () => {
      vm = await api().post<Vm>('/vms', {
        name: 'web-01',
        memoryMiB: 64,
        firmware: 'efi',
        nics: [
          { id: 'nic0', network: 'Non-PCI' },
          { id: 'nic1', network: 'PCI' },
        ],
        tags: ['pci', 'demo', 'pci'],
      });
      assert.equal(vm.state, 'stopped');
      assert.equal(vm.simulated, true);
      // The tag filter matches whole tags in the config, on this database's JSON.
      const other = await api().createVm({ name: 'tag-probe', memoryMiB: 64, tags: ['pci-like', 'x'] });
      assert.deepEqual(
        (await api().listVms({ tag: 'pci' })).map((v) => v.name),
        ['web-01'],
      );
      assert.deepEqual(
        (await api().listVms({ tag: 'x' })).map((v) => v.name),
        ['tag-probe'],
      );
      assert.deepEqual(await api().listVms({ tag: 'pc' }), []);
      // The name search: a case-insensitive substring; LIKE's wildcards are matched as typed.
      const odd = await api().createVm({ name: 'Odd_50', memoryMiB: 64 });
      const names = async (search: string): Promise<string[]> =>
        (await api().listVms({ search })).map((v) => v.name);
      assert.deepEqual(await names('PROBE'), ['tag-probe']);
      assert.deepEqual(await names('-'), ['tag-probe', 'web-01']);
      assert.deepEqual(await names('_'), ['Odd_50']);
      assert.deepEqual(await names('odd_5'), ['Odd_50']);
      assert.deepEqual(await names('od_'), [], "'_' is no wildcard ('Odd' would match it)");
      assert.deepEqual(await names('%'), [], "'%' is no wildcard");
      assert.deepEqual(await api().listVms({ search: 'web', tag: 'x' }), []);
      await api().deleteVm(odd.id);
      await api().deleteVm(other.id);
      assert.equal(vm.hostId, platform.agents[0]?.hostId);
      assert.deepEqual(
        vm.config.nics.map((n) => [n.id, n.network]),
        [
          ['nic0', 'Non-PCI'],
          ['nic1', 'PCI'],
        ],
      );
      for (const n of vm.config.nics) assert.match(n.mac ?? '', /^52:54:00(:[0-9a-f]{2}){3}$/);
      assert.deepEqual(vm.config.tags, ['demo', 'pci']);
      const created = await eventsOf(vm.id, 'vm.created');
      assert.equal(created.length, 1);
      assert.equal(created[0]?.user, 'admin');
      const nics = created[0]?.changes.find((c) => c.path === 'nics');
      assert.equal(nics?.from, null);
      assert.deepEqual(nics?.to, vm.config.nics);
    });

    test('power on with ?sync=true: a succeeded task, the VM running', async () => {
      const { status, task } = await action(vm.id, 'power-on');
      assert.equal(status, 200);
      assert.equal(task.state, 'succeeded');
      assert.equal(task.kind, 'vm.power-on');
      assert.equal(task.objectId, vm.id);
      assert.deepEqual(task.result, { state: 'running' });
      assert.equal((await api().get<Vm>(`/vms/${vm.id}`)).state, 'running');
      const on = await eventsOf(vm.id, 'vm.powered-on');
      assert.deepEqual(on[0]?.changes, [{ path: 'state', from: 'stopped', to: 'running' }]);
    });

    test('reconfigure while running: exactly the changes, NICs diffed by key, restart pending', async () => {
      const before = await api().get<Vm>(`/vms/${vm.id}`);
      // nic1 moves to Non-PCI; the NICs come in the other order and without their MACs.
      const patched = await api().patch<Vm>(`/vms/${vm.id}`, {
        memoryMiB: 128,
        nics: [
          { id: 'nic1', network: 'Non-PCI' },
          { id: 'nic0', network: 'Non-PCI' },
        ],
      });
      assert.equal(patched.pendingRestart, true);
      assert.equal(patched.config.memoryMiB, 128);
      assert.equal(patched.version, before.version + 1);
      const macs = (v: Vm): Record<string, string | undefined> =>
        Object.fromEntries(v.config.nics.map((n) => [n.id, n.mac]));
      assert.deepEqual(macs(patched), macs(before), 'MACs are kept');
      const events = await eventsOf(vm.id, 'vm.reconfigured');
      assert.equal(events.length, 1);
      const expected: Change[] = [
        { path: 'memoryMiB', from: 64, to: 128 },
        { path: 'nics[nic1].network', from: 'PCI', to: 'Non-PCI' },
      ];
      assert.deepEqual(events[0]?.changes, expected);
      assert.match(events[0]?.message ?? '', /memoryMiB/);
      const now = await api().get<Vm>(`/vms/${vm.id}`);
      assert.equal(now.state, 'running');
      assert.equal(now.pendingRestart, true);

      // Reordering the NICs alone is not a change: no event, no new version.
      const seq = await head();
      const same = await api().patch<Vm>(`/vms/${vm.id}`, {
        nics: [
          { id: 'nic0', network: 'Non-PCI' },
          { id: 'nic1', network: 'Non-PCI' },
        ],
      });
      assert.equal(same.version, now.version);
      assert.equal(await head(), seq);
    });

    test('power off, power on applies the pending change, power off, delete', async () => {
      let r = await action(vm.id, 'power-off');
      assert.equal(r.task.state, 'succeeded');
      assert.equal((await api().get<Vm>(`/vms/${vm.id}`)).state, 'stopped');
      r = await action(vm.id, 'power-on');
      assert.equal(r.task.state, 'succeeded');
      assert.equal((await api().get<Vm>(`/vms/${vm.id}`)).pendingRestart, false);
      // Powering on a running VM fails as a task, with a conflict.
      const again = await action(vm.id, 'power-on');
      assert.equal(again.task.state, 'failed');
      assert.equal(again.task.error?.code, 'HS_ERR_CONFLICT');
      // A running VM cannot be deleted.
      const busy = await platform.request<ErrorAnswer>(platform.adminToken, 'DELETE', `/vms/${vm.id}`);
      assert.equal(busy.status, 409);
      assert.equal(busy.body.code, 'HS_ERR_CONFLICT');
      r = await action(vm.id, 'power-off');
      assert.equal(r.task.state, 'succeeded');

      const del = await platform.request(platform.adminToken, 'DELETE', `/vms/${vm.id}`);
      assert.equal(del.status, 204);
      const gone = await platform.request<ErrorAnswer>(platform.adminToken, 'GET', `/vms/${vm.id}`);
      assert.equal(gone.status, 404);
      assert.equal(gone.body.code, 'HS_ERR_NOT_FOUND');
      const types = (await eventsOf(vm.id)).map((e) => e.type).reverse();
      assert.deepEqual(types, [
        'vm.created',
        'vm.powered-on',
        'vm.reconfigured',
        'vm.powered-off',
        'vm.powered-on',
        'vm.powered-off',
        'vm.deleted',
      ]);
    });

    test('the event chain verifies', async () => {
      const v = await api().get<Verify>('/events/verify');
      assert.equal(v.ok, true, JSON.stringify(v));
      const all = await api().get<Event[]>('/events?limit=10000');
      assert.equal(v.count, all.length);
      // Linked: each event's prevHash is its predecessor's hash, seq without gaps.
      const ordered = [...all].reverse();
      ordered.forEach((e, i) => {
        assert.equal(e.seq, i);
        if (i > 0) assert.equal(e.prevHash, ordered[i - 1]?.hash);
      });
    });

    test('bad input is refused with a stable code and changes nothing', async () => {
      const bios = await api().post<Vm>('/vms', {
        name: 'legacy-01',
        memoryMiB: 64,
        firmware: 'bios',
        nics: [{ id: 'nic0', network: 'PCI' }],
      });
      await api().post<Vm>('/vms', { name: 'other-01', memoryMiB: 64 });
      const vmsBefore = await api().get<Vm[]>('/vms');
      const seqBefore = await head();
      const tasksBefore = await api().get<Task[]>('/tasks');
      const cases: [string, string, string, unknown, number, string][] = [
        ['unknown field', 'POST', '/vms', { name: 'x-01', colour: 'blue' }, 400, 'HS_ERR_INVALID_ARGUMENT'],
        ['negative memory', 'POST', '/vms', { name: 'x-01', memoryMiB: -64 }, 400, 'HS_ERR_INVALID_ARGUMENT'],
        [
          'memory of the wrong type',
          'POST',
          '/vms',
          { name: 'x-01', memoryMiB: 'lots' },
          400,
          'HS_ERR_INVALID_ARGUMENT',
        ],
        [
          'secure boot on BIOS',
          'POST',
          '/vms',
          { name: 'x-01', firmware: 'bios', secureBoot: true },
          400,
          'HS_ERR_INVALID_ARGUMENT',
        ],
        [
          'unknown network',
          'POST',
          '/vms',
          { name: 'x-01', nics: [{ id: 'nic0', network: 'DMZ' }] },
          400,
          'HS_ERR_INVALID_ARGUMENT',
        ],
        [
          'two NICs with one id',
          'POST',
          '/vms',
          {
            name: 'x-01',
            nics: [
              { id: 'nic0', network: 'PCI' },
              { id: 'nic0', network: 'Non-PCI' },
            ],
          },
          400,
          'HS_ERR_INVALID_ARGUMENT',
        ],
        ['unknown host', 'POST', '/vms', { name: 'x-01', hostId: 'no-such-host' }, 404, 'HS_ERR_NOT_FOUND'],
        ['duplicate VM name', 'POST', '/vms', { name: 'legacy-01' }, 409, 'HS_ERR_CONFLICT'],
        [
          'patch: unknown field',
          'PATCH',
          `/vms/${bios.id}`,
          { colour: 'blue' },
          400,
          'HS_ERR_INVALID_ARGUMENT',
        ],
        ['patch: nothing', 'PATCH', `/vms/${bios.id}`, {}, 400, 'HS_ERR_INVALID_ARGUMENT'],
        [
          'patch: negative memory',
          'PATCH',
          `/vms/${bios.id}`,
          { memoryMiB: -1 },
          400,
          'HS_ERR_INVALID_ARGUMENT',
        ],
        [
          'patch: secure boot on BIOS',
          'PATCH',
          `/vms/${bios.id}`,
          { secureBoot: true },
          400,
          'HS_ERR_INVALID_ARGUMENT',
        ],
        [
          'patch: unknown network',
          'PATCH',
          `/vms/${bios.id}`,
          { nics: [{ id: 'nic0', network: 'DMZ' }] },
          400,
          'HS_ERR_INVALID_ARGUMENT',
        ],
        ['patch: duplicate name', 'PATCH', `/vms/${bios.id}`, { name: 'other-01' }, 409, 'HS_ERR_CONFLICT'],
        ['patch: unknown VM', 'PATCH', '/vms/no-such-vm', { memoryMiB: 128 }, 404, 'HS_ERR_NOT_FOUND'],
        [
          'power on an unknown VM',
          'POST',
          '/vms/no-such-vm/actions/power-on',
          undefined,
          404,
          'HS_ERR_NOT_FOUND',
        ],
        ['delete an unknown VM', 'DELETE', '/vms/no-such-vm', undefined, 404, 'HS_ERR_NOT_FOUND'],
        ['an id that is not one', 'GET', '/vms/a%20b', undefined, 400, 'HS_ERR_INVALID_ARGUMENT'],
      ];
      for (const [what, method, path, body, status, code] of cases) {
        const res = await platform.request<ErrorAnswer>(platform.adminToken, method, path, body);
        assert.equal(res.status, status, `${what}: ${res.status} ${JSON.stringify(res.body)}`);
        assert.equal(res.body.code, code, what);
        assert.equal(typeof res.body.message, 'string');
      }
      const bad = await platform.requestRaw<ErrorAnswer>(
        platform.adminToken,
        'POST',
        '/vms',
        '{"name": "x-01",',
      );
      assert.equal(bad.status, 400);
      assert.equal(bad.body.code, 'HS_ERR_INVALID_ARGUMENT');
      assert.deepEqual(await api().get<Vm[]>('/vms'), vmsBefore, 'the inventory is unchanged');
      assert.equal(await head(), seqBefore, 'no event was recorded');
      assert.deepEqual(await api().get<Task[]>('/tasks'), tasksBefore, 'no task was started');
    });

    test('a manager restart fails the tasks that were running and keeps the inventory', async () => {
      const m = platform.manager;
      const busy = await api().post<Vm>('/vms', {
        name: 'busy-01',
        memoryMiB: 64,
        nics: [{ id: 'nic0', network: 'PCI' }],
      });
      assert.equal((await action(busy.id, 'power-on')).task.state, 'succeeded');
      // A NIC moved to another network while running waits for a restart like any hardware.
      const moved = await api().patch<Vm>(`/vms/${busy.id}`, { nics: [{ id: 'nic0', network: 'Non-PCI' }] });
      assert.equal(moved.pendingRestart, true, 'a NIC network change on a running VM is pending');

      // A task still running when the manager goes away (the sim driver finishes real
      // power actions at once, so this one never finishes on its own).
      const stuck = await m.services.tasks.submit(
        { kind: 'vm.power-on', objectKind: 'vm', objectId: busy.id, user: 'admin' },
        () => new Promise<never>(() => undefined),
      );
      const running = await api().get<Task>(`/tasks/${stuck.id}`);
      assert.equal(running.state, 'running');
      const vmsBefore = await api().get<Vm[]>('/vms');
      const hostsBefore = await api().get<HostRecord[]>('/hosts');
      const networksBefore = await api().get<unknown[]>('/networks');
      const usersBefore = await api().get<unknown[]>('/users');

      await platform.restartManager();

      const failed = await api().get<Task>(`/tasks/${stuck.id}`);
      assert.equal(failed.state, 'failed');
      assert.equal(failed.error?.code, 'HS_ERR_INTERNAL');
      assert.match(failed.error?.message ?? '', /restarted/);
      assert.ok(failed.finishedAt !== null);
      assert.deepEqual(await api().get<Task[]>('/tasks?state=running'), []);
      assert.deepEqual(await api().get<Vm[]>('/vms'), vmsBefore, 'VMs (and their pending restarts) survive');
      assert.deepEqual(await api().get<unknown[]>('/networks'), networksBefore);
      assert.deepEqual(await api().get<unknown[]>('/users'), usersBefore);
      const hosts = await api().get<HostRecord[]>('/hosts');
      assert.deepEqual(
        hosts.map((h) => [h.id, h.state]),
        hostsBefore.map((h) => [h.id, h.state]),
      );
      // The manager talks to the agent again, and the chain goes on across the restart.
      assert.equal((await action(busy.id, 'power-off')).task.state, 'succeeded');
      assert.equal((await action(busy.id, 'power-on')).task.state, 'succeeded');
      assert.equal((await api().get<Vm>(`/vms/${busy.id}`)).pendingRestart, false);
      const v = await api().get<Verify>('/events/verify');
      assert.equal(v.ok, true, JSON.stringify(v));
    });

    test('a tampered event row is found and named by /events/verify', async () => {
      const target = (await api().get<Event[]>('/events?type=vm.reconfigured&limit=1000')).at(-1);
      assert.ok(target);
      const db = platform.manager.services.db;
      await db.run(`UPDATE events SET message = $1 WHERE seq = $2`, ['nothing happened here', target.seq]);
      const v = await api().get<Verify>('/events/verify');
      assert.equal(v.ok, false);
      assert.equal(v.firstBad?.id, target.id);
      assert.equal(v.firstBad?.index, target.seq);
      assert.equal(v.firstBad?.reason, 'altered');
      // Put back exactly, and the chain is whole again.
      await db.run(`UPDATE events SET message = $1 WHERE seq = $2`, [target.message, target.seq]);
      assert.equal((await api().get<Verify>('/events/verify')).ok, true);
      // A changed change record is found as well.
      await db.run(`UPDATE events SET changes = $1 WHERE seq = $2`, ['[]', target.seq]);
      assert.equal((await api().get<Verify>('/events/verify')).firstBad?.id, target.id);
    });
  });
}

lifecycleSuite('sqlite');
lifecycleSuite('postgres');
