// The manager stops when asked even while clients follow the live event stream (the web
// UI's tail, `hyperseal events tail -f`): the streams are ended, not waited for — a
// follower would otherwise hold the manager's shutdown (and a restart) for as long as it
// stays connected. Nor does a connection that never finishes its TLS handshake: what is
// still open after a short grace period is cut.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import type { IncomingMessage } from 'node:http';
import { after, before, test } from 'node:test';
import type { TestPlatform } from '../support/manager.js';
import { startTestPlatform, useTempConfigHome } from '../support/manager.js';

let restore: () => void;
let p: TestPlatform;
before(async () => {
  restore = useTempConfigHome();
  p = await startTestPlatform({ agents: 0 });
});
after(async () => {
  await p?.close();
  restore?.();
});

function follow(): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = https.request(`${p.manager.url}/api/v1/events/stream`, {
      ca: readFileSync(p.manager.caPath),
      headers: { authorization: `Bearer ${p.adminToken}` },
    });
    req.once('response', resolve);
    req.once('error', reject);
    req.end();
  });
}

test('a restart with two live event streams open: the streams end, the manager comes back', async () => {
  const streams = await Promise.all([follow(), follow()]);
  for (const s of streams) {
    assert.equal(s.statusCode, 200);
    s.resume();
  }
  const ended = streams.map((s) => new Promise<void>((resolve) => s.once('close', () => resolve())));
  const outcome = await Promise.race([
    p.restartManager().then(() => 'restarted'),
    new Promise<string>((r) => setTimeout(() => r('still closing after 10 s'), 10_000).unref()),
  ]);
  assert.equal(outcome, 'restarted');
  await Promise.all(ended);
  // And it serves again.
  assert.ok(Array.isArray(await p.api.listVms()));
});

test('a restart with a connection stuck before its TLS handshake: cut after the grace period', async () => {
  const raw = net.connect(Number(new URL(p.manager.url).port), '127.0.0.1');
  await new Promise<void>((resolve, reject) => raw.once('connect', resolve).once('error', reject));
  raw.on('error', () => undefined);
  const cut = new Promise<void>((resolve) => raw.once('close', () => resolve()));
  const outcome = await Promise.race([
    p.restartManager().then(() => 'restarted'),
    new Promise<string>((r) => setTimeout(() => r('still closing after 10 s'), 10_000).unref()),
  ]);
  assert.equal(outcome, 'restarted');
  await cut;
  assert.ok(Array.isArray(await p.api.listVms()));
});
