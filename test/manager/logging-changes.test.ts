// Alert rules and syslog targets change in place, against a real manager (SQLite), a real
// webhook receiver and a real rsyslog:
// - a rule's webhook secret is sealed in the database (the file holds it in no form), yet
//   the manager still signs with it; a rule stored in clear by an older manager is sealed
//   at the next start;
// - PATCH /alert-rules/:id enables, disables and edits a rule in one step; the event shows
//   each field from → to and a new secret only as a redacted change; bad input changes nothing;
// - PATCH /syslog-targets/:id moves a target to another collector, keeping what it had
//   queued: events held while the collector was unreachable arrive at the new one.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { IncomingMessage, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import type { Event } from '../../src/events/index.js';
import { SIGNATURE_HEADER, TIMESTAMP_HEADER, verifyWebhookSignature } from '../../src/events/alerts/index.js';
import type { Rsyslog } from '../../src/events/syslog/rsyslog.testutil.js';
import { eventIds, startRsyslog } from '../../src/events/syslog/rsyslog.testutil.js';
import type { Vm } from '../../src/manager/model.js';
import type { TestPlatform } from '../support/manager.js';
import { freePort, startTestPlatform, useTempConfigHome } from '../support/manager.js';

const SECRET = 'webhook-secret-4f1c9a7e2b6d';
const NEW_SECRET = 'rotated-secret-0d3e8b5a1c77';

interface Hit {
  body: string;
  timestamp: string | undefined;
  signature: string | undefined;
}

/** A webhook receiver on 127.0.0.1 that keeps what it got. */
async function startReceiver(): Promise<{ url: string; hits: Hit[]; server: Server }> {
  const hits: Hit[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const header = (name: string): string | undefined => {
        const v = req.headers[name.toLowerCase()];
        return typeof v === 'string' ? v : undefined;
      };
      hits.push({
        body: Buffer.concat(chunks).toString('utf8'),
        timestamp: header(TIMESTAMP_HEADER),
        signature: header(SIGNATURE_HEADER),
      });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, hits, server };
}

async function waitFor<T>(what: string, get: () => Promise<T | undefined> | T | undefined): Promise<T> {
  for (let i = 0; i < 400; i++) {
    const v = await get();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Every byte the manager's SQLite database holds on disk (main file and WAL). */
function databaseBytes(dir: string): Buffer {
  return Buffer.concat(
    readdirSync(dir)
      .filter((f) => f.startsWith('manager.db'))
      .map((f) => readFileSync(join(dir, f))),
  );
}

describe('alert rules and syslog targets: sealed secrets, changes in place', { concurrency: 1 }, () => {
  let restore: () => void;
  let p: TestPlatform;
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  let rsyslog: Rsyslog;
  let ruleId = '';

  before(async () => {
    restore = useTempConfigHome();
    receiver = await startReceiver();
    rsyslog = await startRsyslog();
    p = await startTestPlatform({ agents: 1 });
  });
  after(async () => {
    await p?.close();
    await rsyslog?.dispose();
    receiver?.server.close();
    restore?.();
  });

  const ruleEvents = async (type: string): Promise<Event[]> =>
    (await p.api.get<Event[]>(`/events?type=${type}`)).filter((e) => e.object.id === ruleId);

  test('the webhook secret is sealed in the database, and the manager still signs with it', async () => {
    const rule = await p.api.post<{ id: string; actions: { webhook: { secret: string } } }>('/alert-rules', {
      name: 'memory-changed',
      severity: 'warning',
      match: { types: ['vm.reconfigured'], changes: [{ path: 'memoryMiB' }] },
      actions: { webhook: { url: receiver.url, secret: SECRET } },
    });
    ruleId = rule.id;
    assert.equal(rule.actions.webhook.secret, '[redacted]');
    const stored = new Database(join(p.managerDir, 'manager.db'), { readonly: true })
      .prepare('SELECT rule FROM alert_rules WHERE id = ?')
      .get(ruleId) as { rule: string };
    assert.match(stored.rule, /"secretSealed":"[A-Za-z0-9+/=]{40,}"/);
    const bytes = databaseBytes(p.managerDir);
    for (const form of [
      SECRET,
      Buffer.from(SECRET).toString('base64'),
      Buffer.from(SECRET).toString('hex'),
    ]) {
      assert.equal(bytes.includes(form), false, `the database holds the secret (${form.slice(0, 6)}…)`);
    }

    const vm = await p.api.post<Vm>('/vms', { name: 'alert-01', memoryMiB: 64 });
    await p.api.patch(`/vms/${vm.id}`, { memoryMiB: 96 });
    const hit = await waitFor('the webhook', () => receiver.hits[0]);
    assert.equal(verifyWebhookSignature(SECRET, hit.timestamp, hit.body, hit.signature), true);
  });

  test('PATCH disables and edits a rule in one step; the event shows from → to', async () => {
    const vm = (await p.api.get<Vm[]>('/vms')).find((v) => v.name === 'alert-01');
    assert.ok(vm);
    const changed = await p.api.patch<{ enabled: boolean; severity: string }>(`/alert-rules/${ruleId}`, {
      enabled: false,
      severity: 'critical',
    });
    assert.equal(changed.enabled, false);
    assert.equal(changed.severity, 'critical');
    const [e] = await ruleEvents('alert.rule-changed');
    assert.ok(e, 'an alert.rule-changed event');
    assert.deepEqual(
      e.changes.map((c) => [c.path, c.from, c.to]),
      [
        ['enabled', true, false],
        ['severity', 'warning', 'critical'],
      ],
    );
    const before = receiver.hits.length;
    await p.api.patch(`/vms/${vm.id}`, { memoryMiB: 128 });
    const reconfigured = (await p.api.get<Event[]>(`/events?type=vm.reconfigured&objectId=${vm.id}`))[0];
    assert.ok(reconfigured);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(receiver.hits.length, before, 'a disabled rule calls no webhook');

    // The same patch again changes nothing and records nothing.
    await p.api.patch(`/alert-rules/${ruleId}`, { enabled: false });
    assert.equal((await ruleEvents('alert.rule-changed')).length, 1);
  });

  test('a webhook sent back as read keeps its secret; a new secret shows only as changed', async () => {
    const rules = await p.api.get<{ id: string; actions: Record<string, unknown> }[]>('/alert-rules');
    const read = rules.find((r) => r.id === ruleId);
    assert.ok(read);
    // What a client read, sent back with another URL path and enabled: the secret stays.
    const hook = read.actions['webhook'] as { url: string; secret: string };
    await p.api.patch(`/alert-rules/${ruleId}`, {
      enabled: true,
      actions: { ...read.actions, webhook: { ...hook, url: `${receiver.url}/v2` } },
    });
    const vm = (await p.api.get<Vm[]>('/vms')).find((v) => v.name === 'alert-01');
    assert.ok(vm);
    const before = receiver.hits.length;
    await p.api.patch(`/vms/${vm.id}`, { memoryMiB: 160 });
    const kept = await waitFor('the webhook', () => receiver.hits[before]);
    assert.equal(verifyWebhookSignature(SECRET, kept.timestamp, kept.body, kept.signature), true);
    // To another origin, the secret must be given again: refused, nothing changed.
    const unchanged = JSON.stringify(await p.api.get('/alert-rules'));
    const moved = await p.request(p.adminToken, 'PATCH', `/alert-rules/${ruleId}`, {
      actions: { ...read.actions, webhook: { ...hook, url: 'https://203.0.113.9/hook' } },
    });
    assert.equal(moved.status, 400, JSON.stringify(moved.body));
    assert.match(JSON.stringify(moved.body), /HS_ERR_INVALID_ARGUMENT.*another origin needs its secret/);
    assert.equal(JSON.stringify(await p.api.get('/alert-rules')), unchanged);

    await p.api.patch(`/alert-rules/${ruleId}`, {
      actions: { webhook: { url: receiver.url, secret: NEW_SECRET } },
    });
    const [rotated] = await ruleEvents('alert.rule-changed');
    assert.ok(rotated);
    assert.deepEqual(
      rotated.changes.map((c) => [c.path, c.from, c.to]),
      [
        ['actions.webhook.url', `${receiver.url}/v2`, receiver.url],
        ['actions.webhook.secret', '[redacted]', '[redacted]'],
      ],
    );
    const all = JSON.stringify(await p.api.get<Event[]>('/events?limit=10000'));
    assert.equal(all.includes(SECRET) || all.includes(NEW_SECRET), false, 'no event holds a secret');
    const next = receiver.hits.length;
    await p.api.patch(`/vms/${vm.id}`, { memoryMiB: 192 });
    const hit = await waitFor('the webhook', () => receiver.hits[next]);
    assert.equal(verifyWebhookSignature(NEW_SECRET, hit.timestamp, hit.body, hit.signature), true);
    assert.equal(verifyWebhookSignature(SECRET, hit.timestamp, hit.body, hit.signature), false);
  });

  test('bad patches are refused with a stable code and change nothing', async () => {
    const before = JSON.stringify(await p.api.get('/alert-rules'));
    const events = (await p.api.get<Event[]>('/events?limit=1'))[0]?.seq;
    const other = await p.api.post<{ id: string }>('/alert-rules', {
      name: 'other',
      severity: 'info',
      match: { types: ['vm.created'] },
    });
    const cases: [unknown, number, string][] = [
      [{ severity: 'loud' }, 400, 'HS_ERR_INVALID_ARGUMENT'],
      [{ match: { types: ['no.such-type'] } }, 400, 'HS_ERR_INVALID_ARGUMENT'],
      [{ id: 'another-id' }, 400, 'HS_ERR_INVALID_ARGUMENT'],
      [{}, 400, 'HS_ERR_INVALID_ARGUMENT'],
      [{ name: 'other' }, 409, 'HS_ERR_CONFLICT'],
    ];
    for (const [body, status, code] of cases) {
      const r = await p.request<{ code: string }>(p.adminToken, 'PATCH', `/alert-rules/${ruleId}`, body);
      assert.equal(r.status, status, JSON.stringify(body));
      assert.equal(r.body.code, code, JSON.stringify(body));
    }
    const plain = await p.request<{ code: string }>(p.adminToken, 'PATCH', `/alert-rules/${other.id}`, {
      actions: { webhook: { url: receiver.url } },
    });
    assert.equal(plain.status, 400);
    assert.match(JSON.stringify(plain.body), /a new webhook needs its secret/);
    const missing = await p.request<{ code: string }>(p.adminToken, 'PATCH', '/alert-rules/nope', {
      enabled: false,
    });
    assert.equal(missing.status, 404);
    await p.api.delete(`/alert-rules/${other.id}`);
    assert.equal(JSON.stringify(await p.api.get('/alert-rules')), before);
    const changed = (await p.api.get<Event[]>(`/events?type=alert.rule-changed`)).filter(
      (e) => (e.seq ?? 0) > (events ?? 0),
    );
    assert.deepEqual(changed, [], 'no change recorded');
  });

  test('a rule stored in clear by an older manager is sealed at the next start and still works', async () => {
    const db = new Database(join(p.managerDir, 'manager.db'));
    const legacy = {
      id: 'legacy-rule',
      name: 'legacy',
      enabled: true,
      severity: 'info',
      match: { types: ['vm.created'] },
      actions: { webhook: { url: receiver.url, secret: SECRET } },
    };
    db.prepare('INSERT INTO alert_rules (id, name, rule, enabled, created_at) VALUES (?, ?, ?, 1, ?)').run(
      legacy.id,
      legacy.name,
      JSON.stringify(legacy),
      Date.now(),
    );
    db.close();
    await p.restartManager();
    const row = new Database(join(p.managerDir, 'manager.db'), { readonly: true })
      .prepare('SELECT rule FROM alert_rules WHERE id = ?')
      .get(legacy.id) as { rule: string };
    assert.equal(row.rule.includes(SECRET), false, 'sealed at start');
    assert.match(row.rule, /"secretSealed"/);
    const before = receiver.hits.length;
    await p.api.post<Vm>('/vms', { name: 'alert-02', memoryMiB: 64 });
    const hit = await waitFor('the webhook', () =>
      receiver.hits.slice(before).find((h) => h.body.includes('alert-02')),
    );
    assert.equal(verifyWebhookSignature(SECRET, hit.timestamp, hit.body, hit.signature), true);
  });

  test('PATCH /syslog-targets moves a target; what it queued meanwhile reaches the new collector', async () => {
    const deadPort = await freePort();
    const target = await p.api.post<{ id: string }>('/syslog-targets', {
      name: 'moving',
      host: '127.0.0.1',
      port: deadPort,
      transport: 'tcp',
    });
    // Nobody listens there: these events wait in the target's queue.
    const vm = await p.api.post<Vm>('/vms', { name: 'syslog-held', memoryMiB: 64 });
    const held = (await p.api.get<Event[]>(`/events?objectId=${vm.id}`))[0];
    assert.ok(held);
    const moved = await p.api.patch<{ port: number }>(`/syslog-targets/${target.id}`, {
      port: rsyslog.tcpPort,
    });
    assert.equal(moved.port, rsyslog.tcpPort);
    const lines = await rsyslog.waitFor((l) => eventIds(l).includes(held.id), 20_000);
    assert.ok(eventIds(lines).includes(held.id), 'the held event arrived');
    const [e] = (await p.api.get<Event[]>('/events?type=syslog.target-changed')).filter(
      (x) => x.object.id === target.id,
    );
    assert.ok(e);
    assert.deepEqual(
      e.changes.map((c) => [c.path, c.from, c.to]),
      [['port', deadPort, rsyslog.tcpPort]],
    );
    const tls = await p.request<{ code: string }>(p.adminToken, 'PATCH', `/syslog-targets/${target.id}`, {
      transport: 'tls',
    });
    assert.equal(tls.status, 400);
    assert.equal(tls.body.code, 'HS_ERR_INVALID_ARGUMENT');
    const list = await p.api.get<{ id: string; transport: string }[]>('/syslog-targets');
    assert.equal(list.find((t) => t.id === target.id)?.transport, 'tcp', 'unchanged');
  });
});
