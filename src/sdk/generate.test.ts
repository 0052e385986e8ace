// The SDK cannot drift from the API: rendering it again from the live route table must
// give exactly the committed src/sdk/api.gen.ts, and every route must have its method.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { allRoutes, managerOpenApi } from '../manager/services.js';
import type { ManagerServices } from '../manager/services.js';
import { operations } from './api.gen.js';
import { HypersealApi } from './api.gen.js';
import type { OpenApiDocument } from './generate.js';
import { renderSdk } from './generate.js';
import { GENERATED_SDK_PATH, currentSdkSource } from './write-sdk.js';

test('src/sdk/api.gen.ts is what the route table generates (run `npm run sdk` after changing a route)', () => {
  const committed = readFileSync(GENERATED_SDK_PATH, 'utf8');
  const fresh = currentSdkSource();
  if (committed !== fresh) {
    const a = committed.split('\n');
    const b = fresh.split('\n');
    const line = a.findIndex((l, i) => l !== b[i]);
    assert.fail(
      `the SDK differs from the API at line ${line + 1}:\n  committed: ${a[line]}\n  generated: ${b[line]}\nrun \`npm run sdk\``,
    );
  }
});

test('every route has exactly one SDK method, with its method, path and privilege', () => {
  const routes = allRoutes({} as ManagerServices);
  assert.equal(Object.keys(operations).length, routes.length);
  const byKey = new Map(Object.values(operations).map((o) => [`${o.method} ${o.path}`, o]));
  for (const r of routes) {
    const op = byKey.get(`${r.method} ${r.url.replace(/:([A-Za-z0-9_]+)/g, '{$1}')}`);
    assert.ok(op, `no SDK operation for ${r.method} ${r.url}`);
    assert.deepEqual(op.privilege, r.privilege);
  }
  for (const id of Object.keys(operations)) {
    assert.equal(typeof (HypersealApi.prototype as unknown as Record<string, unknown>)[id], 'function', id);
  }
});

test('a changed route changes the SDK (the drift check can fail)', () => {
  const doc = managerOpenApi() as unknown as OpenApiDocument;
  const before = renderSdk(doc);
  const vms = doc.paths['/api/v1/vms'];
  assert.ok(vms?.get);
  vms.get.summary = 'List VMs, renamed';
  assert.notEqual(renderSdk(doc), before);
});

test('two different schemas under one title are refused, not silently merged', () => {
  const obj = (title: string, prop: string) => ({
    title,
    type: 'object',
    properties: { [prop]: { type: 'string' } },
    required: [prop],
  });
  const op = (operationId: string, schema: unknown) => ({
    operationId,
    summary: 's',
    'x-privilege': 'vm.read',
    parameters: [],
    responses: { '200': { content: { 'application/json': { schema } } } },
  });
  const doc = {
    paths: {
      '/api/v1/a': { get: op('getA', obj('Thing', 'a')) },
      '/api/v1/b': { get: op('getB', obj('Thing', 'b')) },
    },
  } as unknown as OpenApiDocument;
  assert.throws(() => renderSdk(doc), /two different schemas are titled Thing/);
});
