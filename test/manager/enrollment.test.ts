// Host enrollment end to end: real agents join over HTTPS with one-time tokens and a
// pinned CA fingerprint; every refusal by the manager is a `host.join-refused` event; a
// pin mismatch stops the agent before the token leaves it; a revoked host is no longer
// used; and an agent answers only the manager's identity, not another agent's.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { joinManager } from '../../src/agent/join.js';
import { hashToken } from '../../src/auth/tokens.js';
import { readSealedFile } from '../../src/crypto/sealed-file.js';
import { isHypersealError } from '../../src/errors.js';
import type { Event } from '../../src/events/index.js';
import { loadMasterKey, resolveMasterKeySource } from '../../src/kms/master-key.js';
import type { HostRecord } from '../../src/manager/hosts.js';
import type { Vm } from '../../src/manager/model.js';
import { issueCertificate } from '../../src/pki/index.js';
import type { ErrorAnswer, TestPlatform } from '../support/manager.js';
import { callAgent, freePort, startTestPlatform, useTempConfigHome } from '../support/manager.js';

interface Token {
  token: string;
  caSha256: string;
  expiresAt: number;
}

describe('host enrollment', () => {
  let restoreConfig: () => void;
  let platform: TestPlatform;
  let scratch: string;
  let joins = 0;

  before(async () => {
    restoreConfig = useTempConfigHome();
    platform = await startTestPlatform({ agents: 2 });
    scratch = mkdtempSync(join(tmpdir(), 'hs-enroll-'));
  });
  after(async () => {
    await platform?.close();
    rmSync(scratch, { recursive: true, force: true });
    restoreConfig();
  });

  const newToken = (): Promise<Token> => platform.api.post<Token>('/hosts/enrollment-tokens', {});
  const refusals = async (): Promise<Event[]> =>
    platform.api.get<Event[]>('/events?type=host.join-refused&limit=10000');
  const tokenRow = (token: string): Promise<{ used_at: number | null } | undefined> =>
    platform.manager.services.db.one<{ used_at: number | null }>(
      `SELECT used_at FROM enrollment_tokens WHERE token_hash = $1`,
      [hashToken(token)],
    );
  /** A join from a fresh directory; resolves to the host or the refusal's code. */
  const tryJoin = async (
    token: string,
    caSha256: string,
  ): Promise<{ hostId: string } | { code: string; dir: string }> => {
    const dir = join(scratch, `join-${++joins}`);
    try {
      return await joinManager({
        managerUrl: platform.manager.url,
        token,
        caSha256,
        name: `joiner-${joins}`,
        address: `https://127.0.0.1:${await freePort()}`,
        dataDir: dir,
        timeoutMs: 10_000,
      });
    } catch (err) {
      if (!isHypersealError(err)) throw err;
      return { code: err.code, dir };
    }
  };
  const codeOf = (r: { hostId: string } | { code: string }): string =>
    'code' in r ? r.code : `joined ${r.hostId}`;

  test('agents joined with real tokens and are connected, with facts and datastores', async () => {
    const hosts = await platform.api.get<HostRecord[]>('/hosts');
    for (const a of platform.agents) {
      const h = hosts.find((x) => x.id === a.hostId);
      assert.ok(h, a.name);
      assert.equal(h.state, 'connected');
      assert.equal(h.simulated, true);
      assert.equal(h.address, a.address);
      assert.ok(h.facts !== null);
    }
    const joined = await platform.api.get<Event[]>('/events?type=host.joined');
    assert.deepEqual(new Set(joined.map((e) => e.object.id)), new Set(platform.agents.map((a) => a.hostId)));
    const ds = await platform.api.get<{ hostId: string }[]>('/datastores');
    for (const a of platform.agents)
      assert.ok(
        ds.some((d) => d.hostId === a.hostId),
        `a datastore on ${a.name}`,
      );
  });

  test('a token joins once; the second use is HS_ERR_AUTH_TOKEN_USED and an event', async () => {
    const t = await newToken();
    const first = await tryJoin(t.token, t.caSha256);
    assert.ok('hostId' in first, codeOf(first));
    const row = await tokenRow(t.token);
    assert.ok(row?.used_at !== null && row?.used_at !== undefined, 'the token is marked used');
    const before = (await refusals()).length;
    const second = await tryJoin(t.token, t.caSha256);
    assert.equal(codeOf(second), 'HS_ERR_AUTH_TOKEN_USED');
    assert.ok('dir' in second && !existsSync(join(second.dir, 'host.json')), 'no identity was written');
    const after = await refusals();
    assert.equal(after.length, before + 1);
    assert.match(after[0]?.message ?? '', /already used/);
    assert.equal(after[0]?.result, 'failure');
    // Only one host came of the token.
    const hosts = await platform.api.get<HostRecord[]>('/hosts');
    assert.equal(hosts.filter((h) => h.name.startsWith('joiner-')).length, 1);
  });

  test('an expired token is HS_ERR_AUTH_TOKEN_EXPIRED and an event', async () => {
    const t = await newToken();
    await platform.manager.services.db.run(
      `UPDATE enrollment_tokens SET expires_at = $1 WHERE token_hash = $2`,
      [Date.now() - 1000, hashToken(t.token)],
    );
    const before = (await refusals()).length;
    assert.equal(codeOf(await tryJoin(t.token, t.caSha256)), 'HS_ERR_AUTH_TOKEN_EXPIRED');
    const after = await refusals();
    assert.equal(after.length, before + 1);
    assert.match(after[0]?.message ?? '', /expired/);
    assert.equal((await tokenRow(t.token))?.used_at, null, 'an expired token is not consumed');
  });

  test('a garbage or unknown token is HS_ERR_AUTH_INVALID_TOKEN and an event', async () => {
    const { caSha256 } = await newToken();
    const before = (await refusals()).length;
    for (const token of [
      'garbage',
      `hs_enroll_${randomBytes(32).toString('base64url')}`,
      `hs_${randomBytes(32).toString('base64url')}`,
    ]) {
      assert.equal(codeOf(await tryJoin(token, caSha256)), 'HS_ERR_AUTH_INVALID_TOKEN', token.slice(0, 12));
    }
    assert.equal((await refusals()).length, before + 3);
  });

  test('an enroll call with a bad address, CSR or a taken name is a 4xx, recorded, and does not spend the token', async () => {
    const t = await newToken();
    const before = (await refusals()).length;
    const goodAddress = `https://127.0.0.1:${await freePort()}`;
    const badCsr = '-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n';
    const attempts: [string, Record<string, string>, string][] = [
      [
        'a CSR that does not parse',
        { name: 'bad-csr', address: goodAddress, csrPem: badCsr },
        'HS_ERR_INVALID_ARGUMENT',
      ],
      [
        'an address that is not a URL',
        { name: 'bad-address', address: 'not a url', csrPem: badCsr },
        'HS_ERR_INVALID_ARGUMENT',
      ],
      [
        'an http address',
        { name: 'http-address', address: 'http://127.0.0.1:9', csrPem: badCsr },
        'HS_ERR_INVALID_ARGUMENT',
      ],
    ];
    for (const [what, fields, code] of attempts) {
      const res = await platform.request<ErrorAnswer>(undefined, 'POST', '/hosts/enroll', {
        token: t.token,
        ...fields,
      });
      assert.equal(res.status, 400, `${what}: ${res.status} ${JSON.stringify(res.body)}`);
      assert.equal(res.body.code, code, what);
    }
    assert.equal((await refusals()).length, before + attempts.length);
    assert.equal((await tokenRow(t.token))?.used_at, null);
    // A real agent whose name is taken: refused as a conflict, the token not spent.
    const taken = platform.agents[0]?.name ?? '';
    const dir = join(scratch, 'taken-name');
    await assert.rejects(
      joinManager({
        managerUrl: platform.manager.url,
        token: t.token,
        caSha256: t.caSha256,
        name: taken,
        address: goodAddress,
        dataDir: dir,
      }),
      (err: unknown) => isHypersealError(err, 'HS_ERR_CONFLICT'),
    );
    assert.equal((await refusals()).length, before + attempts.length + 1);
    assert.equal((await tokenRow(t.token))?.used_at, null, 'a refused join does not spend the token');
    assert.equal((await platform.api.get<HostRecord[]>('/hosts')).filter((h) => h.name === taken).length, 1);
    // And the token still works for a proper join.
    const ok = await tryJoin(t.token, t.caSha256);
    assert.ok('hostId' in ok, codeOf(ok));
  });

  test('a join pinned to another CA stops at the agent: the manager never sees the token', async () => {
    const t = await newToken();
    const before = (await refusals()).length;
    const wrongPin = randomBytes(32).toString('hex');
    const r = await tryJoin(t.token, wrongPin);
    assert.equal(codeOf(r), 'HS_ERR_AGENT_CA_MISMATCH');
    assert.equal(
      (await refusals()).length,
      before,
      'no host.join-refused: the token never reached the manager',
    );
    assert.equal((await tokenRow(t.token))?.used_at, null, 'the token is still unused');
    // The same token, pinned right, then works: it really was never spent.
    const ok = await tryJoin(t.token, t.caSha256.toUpperCase().replace(/(..)(?!$)/g, '$1:'));
    assert.ok('hostId' in ok, codeOf(ok));
  });

  test('an agent answers its manager only: not another agent, not a stranger from the same CA', async () => {
    const [a1, a2] = platform.agents;
    assert.ok(a1 && a2);
    const caPem = readFileSync(platform.manager.caPath, 'utf8');
    // The manager's own identity works (the control).
    const manager = platform.managerClientIdentity();
    const ok = await callAgent(a1, manager, 'GET', '/v1/vms');
    assert.equal(ok.status, 200);

    // The other agent's certificate and key: issued by the same CA, but a server
    // certificate for another host. Refused in the TLS handshake (no clientAuth usage)
    // or with 403 HS_ERR_AGENT_PEER_REFUSED; never answered.
    const other = await callAgent(
      a1,
      { certPem: a2.certPem, keyPem: a2.keyPem, caPem },
      'GET',
      '/v1/vms',
    ).then(
      (r) => r,
      (err: NodeJS.ErrnoException) => ({ status: 0, body: err.code ?? err.message }),
    );
    assert.ok(
      other.status === 0 ||
        (other.status === 403 && (other.body as ErrorAnswer).code === 'HS_ERR_AGENT_PEER_REFUSED'),
      `another agent's certificate was answered: ${other.status} ${JSON.stringify(other.body)}`,
    );
    // Its own certificate, presented back to it: the same.
    const self = await callAgent(
      a1,
      { certPem: a1.certPem, keyPem: a1.keyPem, caPem },
      'GET',
      '/v1/facts',
    ).then(
      (r) => r,
      (err: NodeJS.ErrnoException) => ({ status: 0, body: err.code ?? err.message }),
    );
    assert.notEqual(self.status, 200, `the agent answered its own certificate: ${JSON.stringify(self.body)}`);

    // A client certificate from the manager's CA under another name passes TLS (right CA,
    // clientAuth usage) and must be refused by the agent's identity check.
    const key = loadMasterKey(resolveMasterKeySource(platform.managerDir, undefined, 'manager'), false);
    const ca = { certPem: caPem, keyPem: readSealedFile(platform.managerDir, 'ca.key.sealed', key) };
    key.fill(0);
    const stranger = await issueCertificate(ca, { commonName: 'not-the-manager', usage: 'client' });
    const refused = await callAgent(a1, { ...stranger, caPem }, 'GET', '/v1/vms');
    assert.equal(refused.status, 403);
    assert.equal((refused.body as ErrorAnswer).code, 'HS_ERR_AGENT_PEER_REFUSED');
  });

  test('an unreachable host: a reconfigure fails with HS_ERR_HOST_UNAVAILABLE and changes nothing', async () => {
    const agent = await platform.addAgent('to-stop');
    const vm = await platform.api.post<Vm>('/vms', {
      name: 'on-stopped-agent',
      memoryMiB: 64,
      hostId: agent.hostId,
    });
    await agent.server.close();
    const seq = (await platform.api.get<Event[]>('/events?limit=1'))[0]?.seq;
    const res = await platform.request<ErrorAnswer>(platform.adminToken, 'PATCH', `/vms/${vm.id}`, {
      memoryMiB: 256,
    });
    assert.equal(res.status, 503, JSON.stringify(res.body));
    assert.equal(res.body.code, 'HS_ERR_HOST_UNAVAILABLE');
    const after = await platform.api.get<Vm>(`/vms/${vm.id}`);
    assert.equal(after.config.memoryMiB, 64, 'the change was rolled back');
    assert.equal(after.version, vm.version);
    assert.equal((await platform.api.get<Event[]>('/events?limit=1'))[0]?.seq, seq, 'and no event claims it');
  });

  test('a revoked host: the manager stops acting on its VMs, and says so', async () => {
    // A host of its own, so the other tests' hosts stay usable.
    const agent = await platform.addAgent('to-revoke');
    const vm = await platform.api.post<Vm>('/vms', {
      name: 'on-revoked',
      memoryMiB: 64,
      hostId: agent.hostId,
    });
    const running = await platform.api.post<Vm>('/vms', {
      name: 'running-on-revoked',
      memoryMiB: 64,
      hostId: agent.hostId,
    });
    const on = await platform.request<{ state: string }>(
      platform.adminToken,
      'POST',
      `/vms/${running.id}/actions/power-on?sync=true`,
    );
    assert.equal(on.body.state, 'succeeded');

    const revoked = await platform.api.post<HostRecord>(`/hosts/${agent.hostId}/actions/revoke`);
    assert.equal(revoked.state, 'revoked');
    assert.ok(revoked.revokedAt !== null);
    const ev = await platform.api.get<Event[]>(`/events?type=host.revoked&objectId=${agent.hostId}`);
    assert.equal(ev.length, 1);
    assert.equal(ev[0]?.user, 'admin');
    assert.deepEqual(ev[0]?.changes, [{ path: 'state', from: 'connected', to: 'revoked' }]);

    const vmsBefore = await platform.api.get<Vm[]>('/vms');
    const eventsBefore = (await platform.api.get<Event[]>('/events?limit=1'))[0]?.seq;
    const refusedCodes = new Set(['HS_ERR_HOST_UNAVAILABLE', 'HS_ERR_CONFLICT']);
    const attempts: [string, string, string, unknown][] = [
      ['power on', 'POST', `/vms/${vm.id}/actions/power-on?sync=true`, undefined],
      ['power off', 'POST', `/vms/${running.id}/actions/power-off?sync=true`, undefined],
      ['reconfigure', 'PATCH', `/vms/${vm.id}`, { memoryMiB: 128 }],
      ['rename', 'PATCH', `/vms/${vm.id}`, { name: 'renamed-on-revoked' }],
      ['delete', 'DELETE', `/vms/${vm.id}`, undefined],
      ['read the console', 'GET', `/vms/${running.id}/console`, undefined],
      ['create a VM there', 'POST', '/vms', { name: 'new-on-revoked', hostId: agent.hostId }],
      ['reconnect it', 'POST', `/hosts/${agent.hostId}/actions/connect`, undefined],
    ];
    for (const [what, method, path, body] of attempts) {
      const res = await platform.request<ErrorAnswer>(platform.adminToken, method, path, body);
      assert.ok(
        res.status >= 400 && refusedCodes.has(res.body.code),
        `${what} on a revoked host: ${res.status} ${JSON.stringify(res.body)}`,
      );
    }
    // Nothing changed: not the inventory, not the host, and no event claims otherwise.
    assert.deepEqual(await platform.api.get<Vm[]>('/vms'), vmsBefore);
    assert.equal((await platform.api.get<HostRecord>(`/hosts/${agent.hostId}`)).state, 'revoked');
    assert.equal((await platform.api.get<Event[]>('/events?limit=1'))[0]?.seq, eventsBefore);
    // No task was even started for the refused power actions.
    const tasks = await platform.api.get<{ objectId: string; state: string }[]>(`/tasks?objectId=${vm.id}`);
    assert.deepEqual(
      tasks.filter((t) => t.state !== 'succeeded'),
      [],
    );

    // After a manager restart the revoked host stays unused.
    await platform.restartManager();
    const again = await platform.request<ErrorAnswer>(platform.adminToken, 'PATCH', `/vms/${vm.id}`, {
      memoryMiB: 128,
    });
    assert.ok(refusedCodes.has(again.body.code), JSON.stringify(again.body));
    assert.equal((await platform.api.get<HostRecord>(`/hosts/${agent.hostId}`)).state, 'revoked');
    // The other hosts are reconnected and usable.
    const other = platform.agents[0];
    assert.ok(other);
    assert.equal((await platform.api.get<HostRecord>(`/hosts/${other.hostId}`)).state, 'connected');
  });
});
