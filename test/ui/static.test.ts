// The web UI's static files as the manager serves them: an explicit allowlist (no path
// reaches the file system, so traversal in any encoding is a 404), strict security
// headers on every file, `/` → `/ui/`, and none of it in the API's OpenAPI document.
// Also the UI's privilege logic (src/ui/access.ts), which runs without a DOM.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import https from 'node:https';
import { after, before, describe, test } from 'node:test';
import { UI_CSP, UI_MODULES, uiAssets } from '../../src/manager/ui.js';
import { Access, requiredPrivileges } from '../../src/ui/access.js';
import type { TestPlatform } from '../support/manager.js';
import { startTestPlatform, useTempConfigHome } from '../support/manager.js';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

describe('web UI static files', { concurrency: 1 }, () => {
  let restore: () => void;
  let p: TestPlatform;
  let caPem: string;

  before(async () => {
    restore = useTempConfigHome();
    p = await startTestPlatform({ agents: 0 });
    caPem = readFileSync(p.manager.caPath, 'utf8');
  });
  after(async () => {
    await p?.close();
    restore();
  });

  /** A raw GET: the path goes on the wire exactly as given (no normalization). */
  const get = (path: string): Promise<Answer> => {
    const url = new URL(p.manager.url);
    return new Promise((resolve, reject) => {
      const req = https.request(
        { host: url.hostname, port: url.port, method: 'GET', path, ca: caPem, agent: false },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: Buffer.concat(chunks).toString('utf8'),
            }),
          );
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end();
    });
  };

  test('/ and /ui redirect to /ui/', async () => {
    for (const path of ['/', '/ui']) {
      const r = await get(path);
      assert.equal(r.status, 302, path);
      assert.equal(r.headers['location'], '/ui/', path);
    }
  });

  test('every allowlisted file is served with its type, a strict CSP, nosniff and no-cache', async () => {
    const assets = uiAssets();
    assert.ok(assets.size >= UI_MODULES.length + 3);
    for (const [path, asset] of assets) {
      const r = await get(path);
      assert.equal(r.status, 200, `${path}: ${r.body.slice(0, 200)}`);
      assert.equal(r.headers['content-type'], asset.type, path);
      assert.equal(r.headers['content-security-policy'], UI_CSP, path);
      assert.equal(r.headers['x-content-type-options'], 'nosniff', path);
      assert.equal(r.headers['cache-control'], 'no-cache', path);
      assert.equal(r.headers['x-frame-options'], 'DENY', path);
      assert.equal(r.body, readFileSync(asset.file, 'utf8'), path);
    }
    const index = await get('/ui/');
    assert.match(index.headers['content-type'] as string, /^text\/html/);
    assert.match(index.body, /<script type="module" src="js\/ui\/app\.js"><\/script>/);
    assert.match((await get('/ui/js/ui/app.js')).headers['content-type'] as string, /^text\/javascript/);
    assert.match((await get('/ui/style.css')).headers['content-type'] as string, /^text\/css/);
  });

  test('the CSP allows only this origin: no inline script, no eval, no framing', () => {
    assert.match(UI_CSP, /(^|; )default-src 'self'(;|$)/);
    assert.match(UI_CSP, /(^|; )script-src 'self'(;|$)/);
    assert.match(UI_CSP, /frame-ancestors 'none'/);
    assert.doesNotMatch(UI_CSP, /unsafe-inline|unsafe-eval|\*|https?:/);
    // And the page carries no inline script or style for it to allow.
    const html = readFileSync(uiAssets().get('/ui/')?.file ?? '', 'utf8');
    assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>|<style|\sstyle=|\son[a-z]+=/i);
  });

  test('traversal and anything off the allowlist is a 404, in any encoding', async () => {
    const paths = [
      '/ui/../../package.json',
      '/ui/../package.json',
      '/ui/..%2f..%2fpackage.json',
      '/ui/%2e%2e/%2e%2e/package.json',
      '/ui/%2E%2E%2F%2E%2E%2Fpackage.json',
      '/ui/js/../../package.json',
      '/ui/js/ui/../../../../package.json',
      '/ui/js/ui/app.js/../../../../../package.json',
      '/ui/js/%2e%2e/%2e%2e/%2e%2e/package.json',
      '/ui/%252e%252e/package.json',
      '/ui/..\\..\\package.json',
      '/ui//etc/passwd',
      '/ui/%2fetc%2fpasswd',
      '/ui/index.html',
      '/ui/js/ui/app.js.map',
      '/ui/js/ui/app.d.ts',
      '/ui/js/ui/access.test.js',
      '/ui/js/sdk/client.js',
      '/ui/js/manager/services.js',
      '/ui/js/ui/APP.JS',
      '/ui/static/style.css',
      '/package.json',
      '/dist/src/ui/app.js',
    ];
    for (const path of paths) {
      const r = await get(path);
      assert.equal(r.status, 404, `${path} → ${r.status}`);
      assert.doesNotMatch(r.body, /"name": "hyperseal"|root:|import /, path);
    }
  });

  test('the allowlist covers every compiled UI module and static file', () => {
    const served = new Set([...uiAssets().values()].map((a) => a.file));
    const distUi = new URL('../../src/ui/', import.meta.url);
    for (const f of readdirSync(distUi).filter((n) => n.endsWith('.js') && !n.endsWith('.test.js'))) {
      assert.ok(
        UI_MODULES.includes(`ui/${f}` as (typeof UI_MODULES)[number]),
        `ui/${f} is not in UI_MODULES`,
      );
    }
    const staticDir =
      uiAssets()
        .get('/ui/style.css')
        ?.file.replace(/style\.css$/, '') ?? '';
    for (const f of readdirSync(staticDir))
      assert.ok(served.has(`${staticDir}${f}`), `static ${f} is not served`);
  });

  test('the UI routes are not API routes: absent from the OpenAPI document', async () => {
    const r = await get('/api/v1/openapi.json');
    assert.equal(r.status, 200);
    const paths = Object.keys((JSON.parse(r.body) as { paths: Record<string, unknown> }).paths);
    assert.ok(paths.length > 10);
    assert.deepEqual(
      paths.filter((x) => x === '/' || x.startsWith('/ui')),
      [],
    );
  });
});

describe('web UI privilege logic', () => {
  test('operations need their declared privileges; public and authenticated need none', () => {
    assert.deepEqual(requiredPrivileges('encryptVm'), ['crypto.encrypt']);
    assert.deepEqual(requiredPrivileges('setUserRoles'), ['user.manage', 'role.manage']);
    assert.deepEqual(requiredPrivileges('login'), []);
    assert.deepEqual(requiredPrivileges('getSession'), []);
  });

  test('reasons name every missing privilege, once', () => {
    const reader = new Access('reader', ['vm.read', 'user.manage']);
    assert.equal(reader.reason('getVm'), null);
    assert.equal(reader.reason('encryptVm'), 'needs crypto.encrypt');
    assert.equal(reader.reason('setUserRoles'), 'needs role.manage');
    assert.equal(reader.reason('migrateVm', ['crypto.migrate']), 'needs vm.migrate + crypto.migrate');
    assert.equal(reader.reason('powerOnVm', ['vm.power']), 'needs vm.power');
    assert.equal(reader.reason('getSession'), null);
    assert.equal(new Access('admin', ['role.manage', 'user.manage']).can('setUserRoles'), true);
  });
});
