// The QEMU driver behind the agent's API, with a real EFI VM under TCG: power on, the
// firmware on the serial console, an agent restart that re-attaches to the running QEMU,
// reset, power off, and a QEMU killed behind the agent's back showing as crashed.
// Skipped where QEMU or OVMF is not installed. Every QEMU started is killed at the end.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { discoverOvmf } from '../qemu/firmware.js';
import { isPidAlive } from '../qemu/vm-process.js';
import type { ConsoleChunk, ErrorBody, VmRuntime, VmSpec } from './api.js';
import { AgentRoutes } from './api.js';
import { joinManager } from './join.js';
import { openQemuDriver } from './qemu-driver.js';
import type { AgentServer } from './server.js';
import { startAgent } from './server.js';
import type { AgentReply, FakeManager, ManagerPki } from './testing.js';
import { TestAgentClient, createManagerPki, startFakeManager, tempDir } from './testing.js';

const QEMU = '/usr/bin/qemu-system-x86_64';
const haveQemu =
  existsSync(QEMU) && existsSync('/usr/bin/qemu-img') && (await discoverOvmf()).some((b) => !b.secureBoot);

let pki: ManagerPki;
let manager: FakeManager;
let agent: AgentServer | undefined;
let client: TestAgentClient | undefined;
const dir = tempDir('qemu-agent');
const dataDir = dir.path;
const datastore = join(dataDir, 'datastore');
/** Every QEMU pid seen, killed in after() whatever happened. */
const pids = new Set<number>();

async function startQemuAgent(): Promise<void> {
  const driver = await openQemuDriver(dataDir, { accel: 'tcg' });
  agent = await startAgent({ dataDir, listen: { host: '127.0.0.1', port: 0 }, driver });
  client = new TestAgentClient(agent.port, pki.ca.certPem, pki.managerClient);
}

async function stopAgent(): Promise<void> {
  client?.close();
  await agent?.close();
  client = undefined;
  agent = undefined;
}

before(async () => {
  if (!haveQemu) return;
  pki = await createManagerPki();
  manager = await startFakeManager({ pki });
  manager.tokens.set('hs_enroll_qemu_test_token', 'valid');
  await joinManager({
    managerUrl: manager.url,
    token: 'hs_enroll_qemu_test_token',
    caSha256: pki.caSha256,
    name: 'kvm-qemu',
    address: 'https://127.0.0.1:8443',
    dataDir,
  });
});

after(async () => {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await stopAgent();
  await manager?.close();
  dir.remove();
});

function call(route: keyof typeof AgentRoutes, id: string, body?: unknown, query = ''): Promise<AgentReply> {
  assert.ok(client);
  return client.request(
    AgentRoutes[route].method,
    AgentRoutes[route].path.replace(':id', encodeURIComponent(id)) + query,
    body,
  );
}

async function runtime(route: keyof typeof AgentRoutes, id: string, body?: unknown): Promise<VmRuntime> {
  const reply = await call(route, id, body);
  assert.equal(reply.status, 200, JSON.stringify(reply.body));
  const rt = reply.body as VmRuntime;
  if (rt.pid !== undefined) pids.add(rt.pid);
  return rt;
}

/** Follows the console with offset/next until `pattern` shows up. */
async function waitForConsole(id: string, pattern: RegExp, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let text = '';
  let offset = 0;
  for (;;) {
    const chunk = (await call('console', id, undefined, `?offset=${offset}`)).body as ConsoleChunk;
    if (chunk.offset < offset) text = ''; // the log restarted
    text += chunk.data;
    offset = chunk.next;
    if (pattern.test(text)) return text;
    if (Date.now() > deadline)
      assert.fail(`no ${String(pattern)} on the console within ${timeoutMs} ms:\n${text}`);
    if (chunk.data === '') await new Promise((r) => setTimeout(r, 250));
  }
}

async function waitUntilDead(pid: number): Promise<void> {
  for (let i = 0; i < 100 && isPidAlive(pid); i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(!isPidAlive(pid), `pid ${pid} is gone`);
}

void test(
  'a real EFI VM: boots to the firmware, survives an agent restart, powers off; a killed QEMU is crashed',
  { skip: haveQemu ? false : 'QEMU, qemu-img or OVMF is not installed', timeout: 90_000 },
  async () => {
    await startQemuAgent();
    const id = 'efi-vm';
    const spec: VmSpec = {
      id,
      name: 'EFI test VM',
      cpus: 1,
      memoryMiB: 96,
      firmware: 'efi',
      secureBoot: false,
      disks: [{ id: 'disk0', sizeMiB: 16, datastorePath: datastore }],
      nics: [],
      encryption: null,
    };
    assert.deepEqual(await runtime('defineVm', id, spec), {
      id,
      state: 'stopped',
      simulated: false,
      encryption: null,
      locked: false,
    });
    assert.ok(existsSync(join(datastore, id, 'disk0.qcow2')), 'the disk was created');
    assert.ok(existsSync(join(datastore, id, 'spec.json')));
    const outside = await call('defineVm', 'elsewhere', {
      ...spec,
      id: 'elsewhere',
      disks: [{ id: 'disk0', sizeMiB: 16, datastorePath: '/tmp' }],
    });
    assert.equal(outside.status, 400);
    assert.match((outside.body as ErrorBody).message, /not a datastore of this host/);

    // A read during power-on answers at once (it must not queue behind QEMU's monitor).
    const [on, during] = await Promise.all([
      runtime('powerOn', id),
      (async () => {
        await new Promise((r) => setTimeout(r, 30));
        const started = Date.now();
        const reply = await call('listVms', '');
        return { states: (reply.body as VmRuntime[]).map((v) => v.state), ms: Date.now() - started };
      })(),
    ]);
    assert.ok(during.ms < 1_000, `listing during power-on took ${during.ms} ms`);
    assert.ok(['starting', 'running'].includes(during.states[0] ?? ''), String(during.states));
    assert.equal(on.state, 'running');
    assert.ok(on.pid !== undefined && isPidAlive(on.pid));
    const banner = await waitForConsole(id, /UEFI Interactive Shell|BdsDxe/, 45_000);
    assert.match(banner, /BdsDxe|UEFI/);

    // Hardware changes and deletion wait until QEMU is gone.
    assert.equal((await call('defineVm', id, { ...spec, memoryMiB: 128 })).status, 409);
    assert.equal((await call('deleteVm', id)).status, 409);

    // Agent restart: a new server and a new driver on the same data directory.
    await stopAgent();
    assert.ok(isPidAlive(on.pid), 'QEMU outlives the agent');
    await startQemuAgent();
    const listed = (await call('listVms', '')).body as VmRuntime[];
    assert.deepEqual(listed, [
      { id, state: 'running', pid: on.pid, simulated: false, encryption: null, locked: false },
    ]);
    assert.equal((await runtime('reset', id)).state, 'running');
    const replay = (await call('console', id, undefined, '?offset=0')).body as ConsoleChunk;
    assert.match(replay.data, /BdsDxe|UEFI/, 'the console log is still readable after the restart');

    const off = await runtime('powerOff', id);
    assert.deepEqual(off, { id, state: 'stopped', simulated: false, encryption: null, locked: false });
    await waitUntilDead(on.pid);

    // A QEMU killed behind the agent's back is crashed; a crashed VM may be deleted.
    const again = await runtime('powerOn', id);
    assert.ok(again.pid !== undefined && again.pid !== on.pid);
    process.kill(again.pid, 'SIGKILL');
    await waitUntilDead(again.pid);
    const crashed = (await call('listVms', '')).body as VmRuntime[];
    assert.deepEqual(crashed, [{ id, state: 'crashed', simulated: false, encryption: null, locked: false }]);
    assert.equal((await call('deleteVm', id)).status, 204);
    assert.ok(!existsSync(join(datastore, id)), 'its files are gone');
  },
);
