// The typed SDK against a real manager (sim host): typed calls, tasks awaited with
// progress, the server's error codes surfacing as HypersealErrors, the live event stream,
// and the document the server serves being the one the SDK was generated from.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { HypersealError } from '../../src/errors.js';
import { managerOpenApi } from '../../src/manager/services.js';
import type { Event } from '../../src/sdk/api.gen.js';
import type { TestPlatform } from '../support/manager.js';
import { startTestPlatform, useTempConfigHome } from '../support/manager.js';

let restore: () => void;
let p: TestPlatform;
before(async () => {
  restore = useTempConfigHome();
  p = await startTestPlatform({ agents: 1 });
});
after(async () => {
  await p?.close();
  restore?.();
});

describe('SDK against a real manager', { concurrency: 1 }, () => {
  test('the served OpenAPI document is the one the SDK is generated from', async () => {
    const served = await p.api.get<unknown>('/openapi.json');
    assert.deepEqual(served, JSON.parse(JSON.stringify(managerOpenApi())));
  });

  test('typed create, get, update; a power-on task awaited with progress', async () => {
    const vm = await p.api.createVm({ name: 'sdk-01', memoryMiB: 64, tags: ['sdk'] });
    assert.equal((await p.api.getVm(vm.id)).name, 'sdk-01');
    const updated = await p.api.updateVm(vm.id, { memoryMiB: 96 });
    assert.equal(updated.config.memoryMiB, 96);
    const seen: string[] = [];
    const done = await p.api.run(p.api.powerOnVm(vm.id), (t) => seen.push(t.state));
    assert.equal(done.state, 'succeeded');
    assert.equal(seen.at(-1), 'succeeded');
    assert.equal((await p.api.getVm(vm.id)).state, 'running');
    // A running VM cannot be deleted: the server's code comes back as is.
    await assert.rejects(p.api.deleteVm(vm.id), { code: 'HS_ERR_CONFLICT' });
    await p.api.run(p.api.powerOffVm(vm.id));
    await p.api.deleteVm(vm.id);
    await assert.rejects(p.api.getVm(vm.id), { code: 'HS_ERR_NOT_FOUND' });
  });

  test('server refusals keep their codes: invalid body, missing privilege', async () => {
    await assert.rejects(p.api.createVm({ name: '' }), (e: unknown) => {
      assert.ok(e instanceof HypersealError);
      assert.equal(e.code, 'HS_ERR_INVALID_ARGUMENT');
      return true;
    });
    const reader = await p.userClient('Read-only', 'sdk-reader');
    const vm = await p.api.createVm({ name: 'sdk-02', memoryMiB: 64 });
    assert.equal((await reader.api.listVms({ name: 'sdk-02' }))[0]?.id, vm.id);
    await assert.rejects(reader.api.powerOnVm(vm.id), { code: 'HS_ERR_AUTH_FORBIDDEN' });
    assert.equal((await p.api.getVm(vm.id)).state, 'stopped');
    reader.api.close();
  });

  test('streamEvents delivers a change as it happens, with from → to; abort ends it', async () => {
    const vm = await p.api.createVm({ name: 'sdk-03', memoryMiB: 64 });
    const newest = (await p.api.listEvents({ limit: 1 }))[0]?.seq ?? -1;
    const abort = new AbortController();
    const got = new Promise<Event>((resolve) => {
      void p.api.streamEvents(
        (data) => {
          const e = JSON.parse(data) as Event;
          if (e.type === 'vm.reconfigured' && e.object.id === vm.id) {
            resolve(e);
            abort.abort();
          }
        },
        { afterSeq: newest },
        abort.signal,
      );
    });
    await p.api.updateVm(vm.id, { memoryMiB: 128 });
    const e = await got;
    assert.deepEqual(e.changes, [{ path: 'memoryMiB', from: 64, to: 128 }]);
  });

  test('events filter by severity on the server and page with beforeSeq, without overlap or gap', async () => {
    const reader = await p.userClient('Read-only', 'sdk-pager');
    await assert.rejects(reader.api.powerOnVm('nope'), { code: 'HS_ERR_AUTH_FORBIDDEN' }); // a warning
    reader.api.close();
    const warnings = await p.api.listEvents({ severity: 'warning' });
    assert.ok(warnings.length > 0);
    assert.ok(warnings.every((e) => e.severity === 'warning'));
    const all = await p.api.listEvents({ limit: 10_000 });
    const first = await p.api.listEvents({ limit: 5 });
    const next = await p.api.listEvents({ limit: 5, beforeSeq: first.at(-1)?.seq ?? 0 });
    assert.deepEqual(
      [...first, ...next].map((e) => e.seq),
      all.slice(0, 10).map((e) => e.seq),
    );
  });

  test('an optional body may be left out (the SDK sends {})', async () => {
    const t = await p.api.createEnrollmentToken();
    assert.match(t.token, /\S{16,}/);
  });

  test('exportEvents returns the NDJSON text; verifyEvents says the chain holds', async () => {
    const text = await p.api.exportEvents();
    assert.equal(typeof text, 'string');
    const lines = text.trim().split('\n');
    assert.ok(lines.length > 3);
    assert.equal((JSON.parse(lines[0] ?? '') as Event).type.length > 0, true);
    const v = await p.api.verifyEvents();
    assert.equal(v.ok, true);
    assert.equal(v.firstBad, undefined);
  });
});
