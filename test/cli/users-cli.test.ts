// `hyperseal user …` against a real manager: the password comes from the environment
// (never argv), the user can then sign in with it (the web UI's way), roles change, and
// bad input is refused with a usage error that creates nothing.
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ApiClient } from '../../src/sdk/client.js';
import { runCli, writeCredentials } from '../support/examples.js';
import type { TestPlatform } from '../support/manager.js';
import { startTestPlatform, useTempConfigHome } from '../support/manager.js';

let restore: () => void;
let p: TestPlatform;
let creds: string;
before(async () => {
  restore = useTempConfigHome();
  p = await startTestPlatform({ agents: 0 });
  creds = writeCredentials(p);
});
after(async () => {
  await p?.close();
  restore?.();
});

describe('hyperseal user', { concurrency: 1 }, () => {
  const password = 'correct horse battery staple 42';

  test('create with a password from $HYPERSEAL_PASSWORD; the user signs in with it', async () => {
    const r = await runCli(['user', 'create', 'alice', '--role', 'Read-only'], creds, {
      HYPERSEAL_PASSWORD: password,
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /created user alice \(Read-only\)/);
    assert.ok(!r.stdout.includes(password) && !r.stderr.includes(password));
    const anon = new ApiClient({ managerUrl: p.manager.url, caPem: readFileSync(p.manager.caPath) });
    try {
      const session = await anon.login({ user: 'alice', password });
      assert.equal(session.user.name, 'alice');
      await assert.rejects(anon.login({ user: 'alice', password: 'wrong' }), {
        code: 'HS_ERR_AUTH_INVALID_CREDENTIALS',
      });
    } finally {
      anon.close();
    }
    const created = (await p.api.listEvents({ type: 'user.created', limit: 1 }))[0];
    assert.equal(created?.object.name, 'alice');
    assert.ok(!JSON.stringify(created).includes(password), 'the event redacts the password');
  });

  test('login with that password writes credentials (0600) holding a working token; the session is ended', async () => {
    const out = join(process.env.XDG_CONFIG_HOME ?? '', 'alice-credentials.json');
    const r = await runCli(
      ['login', '--manager', p.manager.url, '--ca', p.manager.caPath, '--user', 'alice', '--out', out],
      creds,
      { HYPERSEAL_PASSWORD: password },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /logged in to .* as alice/);
    assert.equal(statSync(out).mode & 0o777, 0o600);
    assert.ok(!readFileSync(out, 'utf8').includes(password));
    const asAlice = ApiClient.fromCredentials(out);
    try {
      assert.equal((await asAlice.getSession()).user, 'alice');
    } finally {
      asAlice.close();
    }
    const loggedOut = (await p.api.listEvents({ type: 'user.logged-out', limit: 1 }))[0];
    assert.equal(loggedOut?.user, 'alice', 'the login session was ended once the token existed');
  });

  test('set-roles changes the roles; list shows them', async () => {
    const r = await runCli(['user', 'set-roles', 'alice', '--role', 'Auditor'], creds);
    assert.equal(r.code, 0, r.stderr);
    const list = await runCli(['user', 'list', '--json'], creds);
    const users = JSON.parse(list.stdout) as { name: string; roles: string[] }[];
    assert.deepEqual(users.find((u) => u.name === 'alice')?.roles, ['Auditor']);
  });

  test('no role, or no password source off a terminal: refused, nothing created', async () => {
    const noRole = await runCli(['user', 'create', 'bob'], creds, { HYPERSEAL_PASSWORD: password });
    assert.equal(noRole.code, 2);
    assert.match(noRole.stderr, /--role is required/);
    const noPassword = await runCli(['user', 'create', 'bob', '--role', 'Auditor'], creds, {
      HYPERSEAL_PASSWORD: '',
    });
    assert.equal(noPassword.code, 2);
    assert.match(noPassword.stderr, /HYPERSEAL_PASSWORD/);
    assert.equal(
      (await p.api.listUsers()).some((u) => u.name === 'bob'),
      false,
    );
  });
});
