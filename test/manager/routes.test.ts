// The route table is the manager's contract (CONVENTIONS §7): every route declares the
// privilege it needs, every non-public route refuses an anonymous caller before anything
// else happens, and the OpenAPI document is generated from the same table, so it must say
// exactly what the table says.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ALL_PRIVILEGES, assertEveryRouteDeclaresPrivilege, isPrivilege } from '../../src/auth/index.js';
import type { AnyRoute } from '../../src/manager/http.js';
import { allRoutes } from '../../src/manager/services.js';
import type { ErrorAnswer, TestPlatform } from '../support/manager.js';
import { startTestPlatform, useTempConfigHome } from '../support/manager.js';

/** The only routes reachable without credentials. Widening this list is a reviewed change. */
const PUBLIC_ROUTES = ['POST /session', 'POST /hosts/enroll'];

const key = (r: AnyRoute): string => `${r.method} ${r.url}`;
const withDummyParams = (url: string): string => url.replace(/:([A-Za-z0-9_]+)/g, 'dummy-$1');
const openApiPath = (url: string): string => `/api/v1${url}`.replace(/:([A-Za-z0-9_]+)/g, '{$1}');

type Json = Record<string, unknown>;
const obj = (v: unknown, what: string): Json => {
  assert.ok(typeof v === 'object' && v !== null && !Array.isArray(v), `${what} is an object`);
  return v as Json;
};
/** The JSON a TypeBox schema serializes to (its Symbol keys dropped), as the document holds it. */
const json = (v: unknown): unknown => JSON.parse(JSON.stringify(v)) as unknown;

/** Every `$ref` in a document, so each can be resolved. */
function refsIn(v: unknown, out: string[] = []): string[] {
  if (Array.isArray(v)) for (const x of v) refsIn(x, out);
  else if (typeof v === 'object' && v !== null) {
    for (const [k, x] of Object.entries(v)) {
      if (k === '$ref' && typeof x === 'string') out.push(x);
      else refsIn(x, out);
    }
  }
  return out;
}

describe('manager routes', () => {
  let restoreConfig: () => void;
  let platform: TestPlatform;
  let routes: AnyRoute[];

  before(async () => {
    restoreConfig = useTempConfigHome();
    platform = await startTestPlatform({ agents: 0 });
    routes = allRoutes(platform.manager.services);
  });
  after(async () => {
    await platform?.close();
    restoreConfig();
  });

  test('every route declares a known privilege, and only the listed routes are public', () => {
    assert.ok(routes.length >= 25, `the route table has ${routes.length} routes`);
    const problems: string[] = [];
    const seen = new Set<string>();
    for (const r of routes) {
      const p: unknown = r.privilege;
      if (seen.has(key(r))) problems.push(`${key(r)} is declared twice`);
      seen.add(key(r));
      if (p === undefined || p === null || p === '') problems.push(`${key(r)} declares no privilege`);
      else if (p === 'public') {
        if (!PUBLIC_ROUTES.includes(key(r))) problems.push(`${key(r)} is public but not in PUBLIC_ROUTES`);
      } else if (p === 'authenticated') {
        // any signed-in user
      } else if (typeof p === 'string') {
        if (!isPrivilege(p)) problems.push(`${key(r)} names unknown privilege ${p}`);
      } else if (Array.isArray(p)) {
        const list: unknown[] = p;
        if (list.length === 0) problems.push(`${key(r)} declares an empty privilege list`);
        for (const x of list) {
          if (typeof x !== 'string' || !isPrivilege(x))
            problems.push(`${key(r)} names unknown privilege ${String(x)}`);
        }
      } else problems.push(`${key(r)} has a privilege of type ${typeof p}`);
    }
    assert.deepEqual(problems, []);
    assert.deepEqual(
      routes
        .filter((r) => r.privilege === 'public')
        .map(key)
        .sort(),
      [...PUBLIC_ROUTES].sort(),
    );
    // The same check as the library's, on privileges only (events are a separate test).
    assertEveryRouteDeclaresPrivilege(
      routes.map((r) => ({ method: r.method, path: r.url, privilege: r.privilege, event: 'n/a' })),
      { publicRoutes: PUBLIC_ROUTES },
    );
  });

  test('every privilege the routes need is one some built-in role grants', () => {
    const needed = new Set(
      routes.flatMap((r) => (typeof r.privilege === 'string' ? [r.privilege] : [...r.privilege])),
    );
    for (const p of needed) {
      if (p === 'public' || p === 'authenticated') continue;
      assert.ok(ALL_PRIVILEGES.includes(p as (typeof ALL_PRIVILEGES)[number]), p);
    }
  });

  test('state-changing routes declare the event they record (CONVENTIONS §7)', () => {
    assertEveryRouteDeclaresPrivilege(
      routes.map((r) => ({
        method: r.method,
        path: r.url,
        privilege: r.privilege,
        event: r.event,
      })),
      { publicRoutes: PUBLIC_ROUTES },
    );
  });

  test('every declared route is registered with the server, under /api/v1', () => {
    for (const r of routes) {
      assert.ok(platform.manager.app.hasRoute({ method: r.method, url: `/api/v1${r.url}` }), key(r));
    }
  });

  test('every non-public route answers 401 without a token, before looking at params or body', async () => {
    const failures: string[] = [];
    const before = await platform.manager.services.events.query({ type: 'access.denied', limit: 10_000 });
    let calls = 0;
    for (const r of routes.filter((x) => x.privilege !== 'public')) {
      const path = withDummyParams(r.url);
      const hasBody = r.method !== 'GET' && r.method !== 'DELETE';
      // An empty body, a body that is not even JSON, and query values of the wrong type:
      // none of it may be looked at before the caller is known.
      const attempts: [string, () => Promise<{ status: number; body: ErrorAnswer }>][] = [
        ['no body', () => platform.request<ErrorAnswer>(undefined, r.method, path, hasBody ? {} : undefined)],
        [
          'bad query',
          () => platform.request<ErrorAnswer>(undefined, r.method, `${path}?limit=-5&sync=maybe&offset=x`),
        ],
      ];
      if (hasBody) {
        attempts.push([
          'malformed JSON',
          () => platform.requestRaw<ErrorAnswer>(undefined, r.method, path, '{not json'),
        ]);
      }
      for (const [what, call] of attempts) {
        calls++;
        const res = await call();
        if (res.status !== 401 || res.body.code !== 'HS_ERR_AUTH_REQUIRED') {
          failures.push(`${key(r)} (${what}) → ${res.status} ${JSON.stringify(res.body)}`);
        }
      }
      // A token that is not one of ours is refused with its own code.
      const bad = await platform.request<ErrorAnswer>(
        'hs_api_not-a-real-token',
        r.method,
        path,
        hasBody ? {} : undefined,
      );
      calls++;
      if (bad.status !== 401 || bad.body.code !== 'HS_ERR_AUTH_INVALID_TOKEN') {
        failures.push(`${key(r)} (bad token) → ${bad.status} ${JSON.stringify(bad.body)}`);
      }
    }
    assert.deepEqual(failures, []);
    // Each refusal is audited (HttpOptions.onRefused: "every refused request").
    const afterEvents = await platform.manager.services.events.query({
      type: 'access.denied',
      limit: 10_000,
    });
    assert.equal(afterEvents.length - before.length, calls);
  });

  test('the OpenAPI document is served without a token and is well-formed', async () => {
    const res = await platform.request<Json>(undefined, 'GET', '/openapi.json');
    assert.equal(res.status, 200);
    const doc = res.body;
    assert.equal(doc.openapi, '3.1.0');
    const info = obj(doc.info, 'info');
    assert.equal(typeof info.title, 'string');
    assert.equal(typeof info.version, 'string');
    const paths = obj(doc.paths, 'paths');
    const components = obj(doc.components, 'components');
    const schemes = obj(components.securitySchemes, 'securitySchemes');
    const operationIds = new Set<string>();
    for (const [path, item] of Object.entries(paths)) {
      assert.ok(path.startsWith('/api/v1/'), path);
      assert.doesNotMatch(path, /:/, `${path} uses {param}, not :param`);
      for (const [method, raw] of Object.entries(obj(item, path))) {
        const where = `${method.toUpperCase()} ${path}`;
        const op = obj(raw, where);
        assert.equal(typeof op.summary, 'string', `${where} summary`);
        assert.ok(typeof op.operationId === 'string' && op.operationId !== '', `${where} operationId`);
        assert.ok(!operationIds.has(op.operationId), `${where}: operationId ${op.operationId} is unique`);
        operationIds.add(op.operationId);
        const responses = obj(op.responses, `${where} responses`);
        const statuses = Object.keys(responses);
        assert.ok(
          statuses.some((s) => /^2\d\d$/.test(s)),
          `${where} has a success response`,
        );
        assert.ok(statuses.includes('default'), `${where} has an error response`);
        for (const [status, r] of Object.entries(responses)) {
          const resp = obj(r, `${where} ${status}`);
          assert.equal(typeof resp.description, 'string', `${where} ${status} description`);
          if (status !== '204') {
            const schema = obj(
              obj(obj(resp.content, `${where} ${status} content`)['application/json'], 'json').schema,
              'schema',
            );
            assert.ok(Object.keys(schema).length > 0, `${where} ${status} has a schema`);
          }
        }
        // Path parameters: exactly the {names} in the path, all required.
        const params = (op.parameters as Json[] | undefined) ?? [];
        const inPath = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
        assert.deepEqual(
          params.filter((p) => p.in === 'path').map((p) => p.name),
          inPath,
          `${where} path parameters`,
        );
        for (const p of params) {
          assert.ok(
            p.in === 'path' || p.in === 'query',
            `${where} parameter ${String(p.name)} in ${String(p.in)}`,
          );
          obj(p.schema, `${where} parameter ${String(p.name)} schema`);
          if (p.in === 'path') assert.equal(p.required, true);
        }
        if (op.requestBody !== undefined) {
          const body = obj(op.requestBody, `${where} requestBody`);
          const schema = obj(obj(obj(body.content, 'content')['application/json'], 'json').schema, 'schema');
          assert.equal(schema.type, 'object', `${where} body schema`);
        }
        assert.ok('x-privilege' in op, `${where} declares x-privilege`);
        if (op['x-privilege'] !== 'public') {
          for (const s of op.security as Json[])
            for (const name of Object.keys(s)) assert.ok(name in schemes, name);
        }
      }
    }
    for (const ref of refsIn(doc)) {
      const m = /^#\/components\/schemas\/(.+)$/.exec(ref);
      assert.ok(m?.[1] !== undefined && m[1] in obj(components.schemas, 'schemas'), `${ref} resolves`);
    }
  });

  test('the OpenAPI document says exactly what the route table declares', async () => {
    const doc = (await platform.request<Json>(undefined, 'GET', '/openapi.json')).body;
    const paths = obj(doc.paths, 'paths');
    const documented = Object.entries(paths).flatMap(([p, item]) =>
      Object.keys(obj(item, p)).map((m) => `${m.toUpperCase()} ${p}`),
    );
    assert.deepEqual(documented.sort(), routes.map((r) => `${r.method} ${openApiPath(r.url)}`).sort());
    for (const r of routes) {
      const where = key(r);
      const op = obj(obj(paths[openApiPath(r.url)], where)[r.method.toLowerCase()], where);
      assert.deepEqual(op['x-privilege'], json(r.privilege), `${where} x-privilege`);
      assert.deepEqual(op.tags, [r.tag], `${where} tag`);
      assert.equal(op.summary, r.summary, `${where} summary`);
      const responses = obj(op.responses, where);
      const status = String(r.status ?? 200);
      assert.ok(status in responses, `${where} documents its status ${status}`);
      if (status !== '204') {
        const schema = obj(
          obj(obj(responses[status], where).content, where)['application/json'],
          where,
        ).schema;
        assert.deepEqual(schema, json(r.response), `${where} response schema`);
      }
      if (r.body === undefined) assert.equal(op.requestBody, undefined, `${where} has no body`);
      else {
        const body = obj(op.requestBody, `${where} requestBody`);
        assert.equal(body.required, true);
        assert.deepEqual(
          obj(obj(body.content, where)['application/json'], where).schema,
          json(r.body),
          `${where} body`,
        );
      }
      const params = (op.parameters as Json[] | undefined) ?? [];
      const props = (s: unknown): Json => (s as { properties?: Json } | undefined)?.properties ?? {};
      assert.deepEqual(
        params.filter((p) => p.in === 'path').map((p) => [p.name, p.schema]),
        Object.entries(props(r.params)).map(([n, s]) => [n, json(s)]),
        `${where} path parameters`,
      );
      assert.deepEqual(
        params.filter((p) => p.in === 'query').map((p) => [p.name, p.schema]),
        Object.entries(props(r.query)).map(([n, s]) => [n, json(s)]),
        `${where} query parameters`,
      );
      if (r.privilege === 'public') assert.equal(op.security, undefined, `${where} needs no credentials`);
      else assert.deepEqual(op.security, [{ bearer: [] }, { session: [] }], `${where} security`);
    }
  });
});
