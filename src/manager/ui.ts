/**
 * The web UI's static files, served by the manager beside the API: `/` redirects to
 * `/ui/`, and each file is one explicit route (the allowlist below), so no request path
 * ever reaches the file system — `/ui/../../package.json` and its encoded forms match no
 * route and get the API's 404. These are not API routes: they stay out of the route
 * table and the OpenAPI document.
 *
 * The browser code is the project's own compiled ES modules (dist/src/ui, the SDK's
 * browser-safe modules and the error registry), served under /ui/js/ with the same
 * relative layout as dist/src, so their relative imports resolve. index.html, style.css
 * and the icon are read from src/ui/static (package.json `files` ships that folder).
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { HypersealError } from '../errors.js';

/** Strict: only this origin's own scripts, styles and connections; no inline script, no eval, no framing. */
export const UI_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

const JS = 'text/javascript; charset=utf-8';

/** Compiled modules under dist/src (path relative to it) the browser loads. */
export const UI_MODULES = [
  'ui/app.js',
  'ui/dom.js',
  'ui/access.js',
  'ui/format.js',
  'ui/inventory.js',
  'ui/vm.js',
  'ui/activity.js',
  'ui/crypto.js',
  'sdk/browser.js',
  'sdk/hyperseal.js',
  'sdk/api.gen.js',
  'sdk/transport.js',
  'errors.js',
] as const;

/** URL path → file (absolute) and content type: every file the UI serves, and nothing else. */
export function uiAssets(): Map<string, { file: string; type: string }> {
  const distSrc = new URL('../', import.meta.url);
  const staticDir = new URL('../../../src/ui/static/', import.meta.url);
  const at = (base: URL, rel: string): string => fileURLToPath(new URL(rel, base));
  const assets = new Map<string, { file: string; type: string }>([
    ['/ui/', { file: at(staticDir, 'index.html'), type: 'text/html; charset=utf-8' }],
    ['/ui/style.css', { file: at(staticDir, 'style.css'), type: 'text/css; charset=utf-8' }],
    ['/ui/icon.svg', { file: at(staticDir, 'icon.svg'), type: 'image/svg+xml' }],
  ]);
  for (const m of UI_MODULES) assets.set(`/ui/js/${m}`, { file: at(distSrc, m), type: JS });
  return assets;
}

/** Registers the UI's routes on the manager's app (before it listens). */
export function registerUi(app: FastifyInstance): void {
  app.get('/', async (_req, reply) => reply.redirect('/ui/'));
  app.get('/ui', async (_req, reply) => reply.redirect('/ui/'));
  for (const [url, asset] of uiAssets()) {
    app.get(url, async (_req, reply) => {
      let body: Buffer;
      try {
        body = await readFile(asset.file);
      } catch {
        // A build without the UI (or a partial copy): the file is simply not there.
        throw new HypersealError('HS_ERR_NOT_FOUND', `the web UI file ${url} is not installed`);
      }
      return reply
        .header('content-type', asset.type)
        .header('content-security-policy', UI_CSP)
        .header('x-content-type-options', 'nosniff')
        .header('cache-control', 'no-cache')
        .header('referrer-policy', 'no-referrer')
        .header('x-frame-options', 'DENY')
        .header('cross-origin-opener-policy', 'same-origin')
        .send(body);
    });
  }
}
