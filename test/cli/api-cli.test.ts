// The API commands of the CLI against one real manager, on the typed SDK:
// - `hyperseal user …` and `login`: the password comes from the environment (never argv),
//   the user can then sign in with it (the web UI's way), roles change, bad input is
//   refused with a usage error that creates nothing;
// - `hyperseal syslog …` and `alert …`: add, list, set, remove, each an event; bad flags
//   refused before anything is sent;
// - `hyperseal token …`: a token made, listed by its first characters only, used, then
//   revoked — and refused from then on; another user's tokens only with user.manage.
import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
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

describe('hyperseal syslog / alert', { concurrency: 1 }, () => {
  test('syslog add, list, remove; a bad transport is refused and adds nothing', async () => {
    const bad = await runCli(
      [
        'syslog',
        'add',
        '--name',
        'x',
        '--host',
        '127.0.0.1',
        '--port',
        '5514',
        '--transport',
        'carrier-pigeon',
      ],
      creds,
    );
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--transport is udp, tcp or tls/);
    assert.deepEqual(await p.api.listSyslogTargets(), []);

    const add = await runCli(
      [
        'syslog',
        'add',
        '--name',
        'siem',
        '--host',
        '127.0.0.1',
        '--port',
        '5514',
        '--transport',
        'udp',
        '--format',
        'json',
        '--json',
      ],
      creds,
    );
    assert.equal(add.code, 0, add.stderr);
    const created = JSON.parse(add.stdout) as { id: string; name: string; format: string };
    assert.equal(created.format, 'json');
    const list = await runCli(['syslog', 'list'], creds);
    assert.match(list.stdout, /siem\s+udp:\/\/127\.0\.0\.1:5514\s+json/);
    const set = await runCli(['syslog', 'set', 'siem', '--port', '5515', '--format', 'ocsf'], creds);
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stdout, /syslog target siem: udp:\/\/127\.0\.0\.1:5515 \(ocsf\)/);
    const same = (await p.api.listSyslogTargets())[0];
    assert.equal(same?.id, created.id, 'changed in place');
    const nothing = await runCli(['syslog', 'set', 'siem'], creds);
    assert.equal(nothing.code, 2);
    const removed = await runCli(['syslog', 'remove', created.id], creds);
    assert.equal(removed.code, 0, removed.stderr);
    assert.deepEqual(await p.api.listSyslogTargets(), []);
  });

  test('alert add from a file, list, remove: each an event', async () => {
    const file = join(process.env.XDG_CONFIG_HOME ?? '', 'rule.json');
    writeFileSync(
      file,
      JSON.stringify({ name: 'resets', severity: 'warning', match: { types: ['vm.reset'] } }),
    );
    const add = await runCli(['alert', 'add', '--file', file], creds);
    assert.equal(add.code, 0, add.stderr);
    const rule = (await p.api.listAlertRules()).find((r) => r.name === 'resets');
    assert.ok(rule);
    assert.match(
      (await runCli(['alert', 'list'], creds)).stdout,
      /resets {2}\[warning\] {2}\S+\n {2}\{"types":\["vm\.reset"\]\}/,
    );
    const off = await runCli(['alert', 'set', 'resets', '--disable', '--severity', 'critical'], creds);
    assert.equal(off.code, 0, off.stderr);
    assert.match(off.stdout, /alert rule resets: disabled, critical/);
    assert.match((await runCli(['alert', 'list'], creds)).stdout, /resets {2}\[critical, disabled\]/);
    const both = await runCli(['alert', 'set', 'resets', '--enable', '--disable'], creds);
    assert.equal(both.code, 2);
    const changed = (await p.api.listEvents({ type: 'alert.rule-changed', limit: 5 }))[0];
    assert.deepEqual(
      changed?.changes.map((c) => [c.path, c.from, c.to]),
      [
        ['enabled', true, false],
        ['severity', 'warning', 'critical'],
      ],
    );
    assert.equal((await runCli(['alert', 'remove', rule.id], creds)).code, 0);
    assert.equal((await p.api.listAlertRules()).length, 0);
    const types = (await p.api.listEvents({ limit: 20 })).map((e) => e.type);
    assert.ok(types.includes('alert.rule-added') && types.includes('alert.rule-removed'));
  });
});

describe('hyperseal token', { concurrency: 1 }, () => {
  test('create, list (never the token), use, revoke: refused from then on; each an event', async () => {
    const made = await runCli(['token', 'create', 'ci-bot', '--ttl-days', '7', '--json'], creds);
    assert.equal(made.code, 0, made.stderr);
    const { id, token } = JSON.parse(made.stdout) as { id: string; token: string };
    const asBot = new ApiClient({ managerUrl: p.manager.url, caPem: readFileSync(p.manager.caPath), token });
    try {
      await asBot.listVms();
      const mine = await p.api.listTokens();
      const listed = mine.find((t) => t.id === id);
      assert.ok(listed, 'listed');
      assert.equal(listed.hint, `${token.slice(0, listed.hint.length - 1)}…`);
      assert.ok(listed.hint.length < 12, 'only the first characters');
      assert.ok(listed.expiresAt !== null && listed.expiresAt > Date.now() + 6 * 86_400_000);
      assert.ok(listed.lastUsedAt !== null, 'its use is recorded');
      const text = await runCli(['token', 'list'], creds);
      assert.match(text.stdout, new RegExp(`ci-bot +${listed.hint.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
      assert.equal(text.stdout.includes(token), false, 'the list never shows a token');
      assert.equal(JSON.stringify(mine).includes(token.slice(8)), false);

      const revoked = await runCli(['token', 'revoke', id], creds);
      assert.equal(revoked.code, 0, revoked.stderr);
      await assert.rejects(asBot.listVms(), (err: Error & { code?: string }) => {
        assert.match(err.code ?? '', /^HS_ERR_AUTH/);
        return true;
      });
      assert.equal(
        (await p.api.listTokens()).some((t) => t.id === id),
        false,
      );
      const again = await runCli(['token', 'revoke', id], creds);
      assert.equal(again.code, 3, 'not found the second time');
      const e = (await p.api.listEvents({ type: 'user.token-revoked', limit: 1 }))[0];
      assert.deepEqual(
        e?.changes.map((c) => [c.path, c.from, c.to]),
        [['tokens[ci-bot]', '[redacted]', null]],
      );
    } finally {
      asBot.close();
    }
  });

  test("another user's tokens: listed with user.read, revoked with user.manage only, never through the wrong user", async () => {
    const reader = await p.userClient('Read-only', 'token-reader');
    const other = await p.userClient('Read-only', 'token-owner');
    const theirs = (await p.api.listUserTokens(other.userId))[0];
    assert.ok(theirs);
    // Read-only holds user.read, not user.manage: it may list them, not revoke them.
    assert.deepEqual(
      (await reader.api.listUserTokens(other.userId)).map((t) => t.id),
      [theirs.id],
    );
    await assert.rejects(reader.api.deleteUserToken(other.userId, theirs.id), {
      code: 'HS_ERR_AUTH_FORBIDDEN',
    });
    // Through the wrong user the token is not found, and it still works.
    await assert.rejects(p.api.deleteUserToken(reader.userId, theirs.id), { code: 'HS_ERR_NOT_FOUND' });
    await assert.rejects(reader.api.deleteToken(theirs.id), { code: 'HS_ERR_NOT_FOUND' });
    await other.api.listVms();
    const byName = await runCli(['token', 'revoke', theirs.id, '--user', 'token-owner'], creds);
    assert.equal(byName.code, 0, byName.stderr);
    await assert.rejects(other.api.listVms(), (err: Error & { code?: string }) =>
      /^HS_ERR_AUTH/.test(err.code ?? ''),
    );
    reader.api.close();
    other.api.close();
  });
});
