// `hyperseal syslog …` and `hyperseal alert …` against a real manager, on the typed SDK:
// add, list, remove, each an event; bad flags refused before anything is sent.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
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
      /resets {2}\S+\n {2}\{"types":\["vm\.reset"\]\}/,
    );
    assert.equal((await runCli(['alert', 'remove', rule.id], creds)).code, 0);
    assert.equal((await p.api.listAlertRules()).length, 0);
    const types = (await p.api.listEvents({ limit: 20 })).map((e) => e.type);
    assert.ok(types.includes('alert.rule-added') && types.includes('alert.rule-removed'));
  });
});
