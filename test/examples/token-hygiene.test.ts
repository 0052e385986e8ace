// examples/token-hygiene.ts against the demo data of `up --demo`: a user with a token used
// 200 days ago, one never used and created 200 days ago, one used just now. The report
// names the two stale ones (and shows no token), --revoke revokes exactly those — their
// requests are refused from then on, the fresh one still works — each an event.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { ApiClient } from '../../src/index.js';
import type { DemoPlatform } from '../support/examples.js';
import { runExample, runExampleOk, startDemoPlatform } from '../support/examples.js';

const DAY_MS = 86_400_000;

describe('example token-hygiene', { concurrency: 1 }, () => {
  let demo: DemoPlatform;
  const tokens: Record<string, { id: string; token: string }> = {};
  const client = (token: string): ApiClient =>
    new ApiClient({
      managerUrl: demo.platform.manager.url,
      caPem: readFileSync(demo.platform.manager.caPath),
      token,
    });

  before(async () => {
    demo = await startDemoPlatform();
    const api = demo.platform.api;
    const ci = await api.createUser({ name: 'ci-bot', roles: ['Read-only'] });
    for (const name of ['old-used', 'never-used', 'fresh']) {
      tokens[name] = await api.createUserToken(ci.id, { name });
    }
    const fresh = client(tokens['fresh']?.token ?? '');
    await fresh.listVms();
    fresh.close();
    // Time passes: the first two are 200 days old (the manager's own table, as it would be).
    const db = demo.platform.manager.services.db;
    const old = Date.now() - 200 * DAY_MS;
    await db.run(`UPDATE api_tokens SET created_at = $1, last_used_at = $1 WHERE id = $2`, [
      old,
      tokens['old-used']?.id ?? '',
    ]);
    await db.run(`UPDATE api_tokens SET created_at = $1 WHERE id = $2`, [
      old,
      tokens['never-used']?.id ?? '',
    ]);
  });
  after(async () => {
    await demo?.close();
  });

  test('the report names the stale tokens by their first characters, never the token', async () => {
    const out = await runExampleOk('token-hygiene', [], demo.credentials);
    assert.match(out, /STALE {2}ci-bot {2}old-used {2}hs_\S+… {2}last used 200 days ago, never expires/);
    assert.match(out, /STALE {2}ci-bot {2}never-used {2}hs_\S+… {2}never used \(created 200 days ago\)/);
    assert.match(out, /ok {5}ci-bot {2}fresh /);
    assert.match(out, /ok {5}admin {2}initial /, "the script's own token was just used");
    for (const t of Object.values(tokens)) assert.equal(out.includes(t.token), false);
    assert.match(out, /4 tokens, 2 stale \(unused for 90 days or more\)/);
    const narrower = await runExampleOk('token-hygiene', ['--days', '365'], demo.credentials);
    assert.match(narrower, /4 tokens, 0 stale/);
  });

  test('--revoke revokes exactly the stale ones: refused from then on, each an event', async () => {
    const out = await runExampleOk('token-hygiene', ['--revoke'], demo.credentials);
    assert.match(out, /revoked ci-bot's token old-used/);
    assert.match(out, /revoked ci-bot's token never-used/);
    for (const [name, gone] of [
      ['old-used', true],
      ['never-used', true],
      ['fresh', false],
    ] as const) {
      const c = client(tokens[name]?.token ?? '');
      try {
        if (gone)
          await assert.rejects(c.listVms(), (err: Error & { code?: string }) =>
            /^HS_ERR_AUTH/.test(err.code ?? ''),
          );
        else await c.listVms();
      } finally {
        c.close();
      }
    }
    const events = await demo.platform.api.listEvents({ type: 'user.token-revoked', limit: 10 });
    assert.deepEqual(events.map((e) => e.changes[0]?.path).sort(), [
      'tokens[never-used]',
      'tokens[old-used]',
    ]);
  });

  test('a bad --days is a usage error (exit 2) that changes nothing', async () => {
    const revoked = async (): Promise<number> =>
      (await demo.platform.api.listEvents({ type: 'user.token-revoked', limit: 10 })).length;
    const before = await revoked();
    const r = await runExample('token-hygiene', ['--days', 'soon', '--revoke'], demo.credentials);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--days must be a whole number of days, got 'soon' \[HS_ERR_INVALID_ARGUMENT\]/);
    assert.equal(await revoked(), before, 'nothing revoked');
  });
});
