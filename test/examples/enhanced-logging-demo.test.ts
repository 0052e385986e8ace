// The enhanced-logging example runs against a real manager (simulated host) and shows
// the two actionable records and the alert the PCI rule raised.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { Event } from '../../src/events/index.js';
import type { TestPlatform } from '../support/manager.js';
import { startTestPlatform, useTempConfigHome } from '../support/manager.js';

const EXAMPLE = join(
  dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  'examples',
  'enhanced-logging-demo.js',
);

let restore: () => void;
let platform: TestPlatform;
before(async () => {
  restore = useTempConfigHome();
  platform = await startTestPlatform({ agents: 1 });
});
after(async () => {
  await platform?.close();
  restore?.();
});

test('enhanced-logging demo: memory and PCI → Non-PCI are actionable records, and the rule fires', async () => {
  const creds = join(process.env.XDG_CONFIG_HOME ?? '', 'credentials.json');
  writeFileSync(
    creds,
    JSON.stringify({
      managerUrl: platform.manager.url,
      caPath: platform.manager.caPath,
      token: platform.adminToken,
    }),
    { mode: 0o600 },
  );
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn(process.execPath, [EXAMPLE], {
      env: { ...process.env, HYPERSEAL_CREDENTIALS: creds },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('exit', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`exit ${code}: ${stderr}`))));
  });
  assert.match(out, /vm\.reconfigured .*memoryMiB 6144 → 10240/);
  assert.match(out, /vm\.reconfigured .*nics\[nic0\]\.network 'PCI' → 'Non-PCI'/);
  assert.match(out, /alert\.raised .*PCI NIC moved out of PCI/);
  const alerts = await platform.api.get<Event[]>('/events?type=alert.raised');
  assert.equal(alerts.length, 1, 'exactly one alert: the memory change alone matches no rule');
  assert.deepEqual(alerts[0]?.changes, [{ path: 'nics[nic0].network', from: 'PCI', to: 'Non-PCI' }]);
  assert.equal(alerts[0]?.severity, 'critical');
});
