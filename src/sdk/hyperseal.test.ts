// waitTask/run around a scripted transport (a unit test: the transport is the isolated edge;
// test/sdk/sdk.test.ts runs the SDK against a real manager).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HypersealError } from '../errors.js';
import type { Task } from './api.gen.js';
import { Hyperseal } from './hyperseal.js';
import type { Transport } from './transport.js';
import { queryString, takeSseEvents } from './transport.js';

function task(over: Partial<Task>): Task {
  return {
    id: 't1',
    kind: 'vm.encrypt',
    objectKind: 'vm',
    objectId: 'vm-1',
    user: 'admin',
    state: 'running',
    progress: 0,
    error: null,
    result: null,
    createdAt: 0,
    startedAt: 0,
    finishedAt: null,
    ...over,
  };
}

/** Answers GET /tasks/t1 with the scripted states in turn, recording each call. */
function scripted(states: Task[]): { transport: Transport; calls: string[] } {
  const calls: string[] = [];
  let i = 0;
  const transport: Transport = {
    request<T>(method: string, path: string, opts?: { query?: object | undefined }): Promise<T> {
      calls.push(`${method} ${path}${queryString(opts?.query)}`);
      const t = states[Math.min(i++, states.length - 1)];
      return Promise.resolve(t as T);
    },
    stream: () => Promise.reject(new Error('no stream')),
  };
  return { transport, calls };
}

test('waitTask long-polls until the task ends and reports each step', async () => {
  const { transport, calls } = scripted([
    task({ progress: 10 }),
    task({ progress: 60 }),
    task({ progress: 100, state: 'succeeded' }),
  ]);
  const seen: number[] = [];
  const done = await new Hyperseal(transport).waitTask('t1', { onProgress: (t) => seen.push(t.progress) });
  assert.equal(done.state, 'succeeded');
  assert.deepEqual(seen, [10, 60, 100]);
  assert.deepEqual(calls, Array(3).fill('GET /tasks/t1?waitMs=1000'));
});

test('run rejects a failed task with the task’s own error code', async () => {
  const { transport } = scripted([
    task({ state: 'failed', error: { code: 'HS_ERR_VM_LOCKED', message: 'locked' } }),
  ]);
  const api = new Hyperseal(transport);
  await assert.rejects(api.run(Promise.resolve(task({}))), (e: unknown) => {
    assert.ok(e instanceof HypersealError);
    assert.equal(e.code, 'HS_ERR_VM_LOCKED');
    assert.match(e.message, /vm\.encrypt on vm vm-1 failed: locked/);
    return true;
  });
  // waitTask without throwOnFailure resolves with the failed task instead.
  assert.equal((await api.waitTask('t1')).state, 'failed');
});

test('waitTask gives up with HS_ERR_TASK_TIMEOUT', async () => {
  const { transport } = scripted([task({ progress: 5 })]);
  await assert.rejects(new Hyperseal(transport).waitTask('t1', { timeoutMs: 0 }), {
    code: 'HS_ERR_TASK_TIMEOUT',
  });
});

test('path parameters are URL-encoded; undefined query entries are dropped', async () => {
  const { transport, calls } = scripted([task({ state: 'succeeded' })]);
  await new Hyperseal(transport).getVm('a/b?c');
  await new Hyperseal(transport).listVms({ name: 'web 01' });
  assert.deepEqual(calls, ['GET /vms/a%2Fb%3Fc', 'GET /vms?name=web%2001']);
  assert.equal(queryString({ a: undefined, b: 0, c: false }), '?b=0&c=false');
});

test('server-sent events split on blank lines; a partial event waits for the rest', () => {
  const seen: string[] = [];
  let rest = takeSseEvents('data: {"a":1}\n\ndata: {"b"', (d) => seen.push(d));
  assert.deepEqual(seen, ['{"a":1}']);
  rest = takeSseEvents(`${rest}:2}\n\n: keep-alive\n\n`, (d) => seen.push(d));
  assert.deepEqual(seen, ['{"a":1}', '{"b":2}']);
  assert.equal(rest, '');
});

test('listAllVms pages until a short page: no VM past the first page is missed', async () => {
  const all = Array.from({ length: 7 }, (_, i) => ({ id: `vm-${i}` }));
  const calls: string[] = [];
  const transport: Transport = {
    request<T>(_method: string, path: string, opts?: { query?: object | undefined }): Promise<T> {
      calls.push(path + queryString(opts?.query));
      const q = opts?.query as { limit: number; offset: number };
      return Promise.resolve(all.slice(q.offset, q.offset + q.limit) as T);
    },
    stream: () => Promise.reject(new Error('no stream')),
  };
  const vms = await new Hyperseal(transport).listAllVms({ name: 'x' }, 3);
  assert.deepEqual(
    vms.map((v) => v.id),
    all.map((v) => v.id),
  );
  assert.deepEqual(calls, [
    '/vms?name=x&limit=3&offset=0',
    '/vms?name=x&limit=3&offset=3',
    '/vms?name=x&limit=3&offset=6',
  ]);
});
