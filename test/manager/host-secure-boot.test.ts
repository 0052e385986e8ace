// Host Secure Boot end to end: an agent with secure-boot.json (a test CA as its trust
// anchor, level partner, its "core" a small directory signed by the release step) behind a
// real manager. Bundles through the API: unsigned, tampered and too-low ones are refused
// and leave nothing behind; a good one installs. Then one byte of the core changes: the
// agent refuses to serve (only facts, naming the file), `hyperseal agent verify` exits 6
// naming it, and the manager shows the host failed with an event.
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { checkCanEnable, saveHostSecureBootConfig } from '../../src/agent/host-secure-boot.js';
import type { HostSecureBootConfig } from '../../src/agent/host-secure-boot.js';
import { startAgent } from '../../src/agent/server.js';
import { SimDriver } from '../../src/agent/sim-driver.js';
import { bundleUpload } from '../../src/cli/secure-boot.js';
import { isHypersealError } from '../../src/errors.js';
import type { CertifiedKey } from '../../src/pki/index.js';
import { createCertificateAuthority } from '../../src/pki/index.js';
import type { AcceptanceLevel, Signer } from '../../src/secureboot/index.js';
import {
  buildBundle,
  buildManifest,
  issueCodeSigningCertificate,
  signBundle,
  signManifest,
} from '../../src/secureboot/index.js';
import type { TestPlatform } from '../support/manager.js';
import { startTestPlatform, useTempConfigHome } from '../support/manager.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

describe('host Secure Boot: bundles and the check at start', { concurrency: 1 }, () => {
  let restoreConfig: () => void;
  let p: TestPlatform;
  let work: string;
  let ca: CertifiedKey;
  let signer: Signer;
  let coreDir: string;
  let config: HostSecureBootConfig;
  let n = 0;

  const agentDir = (): string => p.agents[0]?.dataDir ?? '';
  const hostId = (): string => p.agents[0]?.hostId ?? '';

  /** A bundle directory with two files, built (and signed unless told) at `acceptance`. */
  async function makeBundle(acceptance: AcceptanceLevel, sign = true): Promise<string> {
    const dir = join(work, `bundle-${n++}`);
    mkdirSync(join(dir, 'bin'), { recursive: true });
    writeFileSync(join(dir, 'bin', 'tool'), `#!/bin/sh\necho tool ${n}\n`);
    writeFileSync(join(dir, 'README'), 'a test bundle\n');
    await buildBundle(dir, {
      name: `tool-${acceptance}`,
      version: '1.0.0',
      vendor: 'Example, Inc.',
      acceptance,
    });
    if (sign) await signBundle(dir, signer);
    return dir;
  }

  /** Restarts the test agent on the same port (the manager keeps its address). */
  async function restartAgent(): Promise<void> {
    const a = p.agents[0];
    assert.ok(a);
    await a.server.close();
    a.server = await startAgent({
      dataDir: a.dataDir,
      listen: { host: '127.0.0.1', port: Number(new URL(a.address).port) },
      driver: SimDriver.open(a.dataDir),
    });
  }

  before(async () => {
    restoreConfig = useTempConfigHome();
    work = mkdtempSync(join(tmpdir(), 'hs-hsb-'));
    ca = await createCertificateAuthority({ commonName: 'Hyperseal test release CA' });
    signer = await issueCodeSigningCertificate(ca, { commonName: 'test release signer' });
    // The agent's "core": a stand-in for dist/, signed as the release step signs dist/.
    coreDir = join(work, 'core');
    mkdirSync(join(coreDir, 'src', 'agent'), { recursive: true });
    writeFileSync(join(coreDir, 'src', 'agent', 'server.js'), 'export const agent = "the real one";\n');
    writeFileSync(join(coreDir, 'package.json'), '{"name":"hyperseal"}\n');
    await buildManifest(coreDir, undefined, {
      name: 'hyperseal-agent',
      version: '0.1.0',
      vendor: 'Hyperseal',
      acceptance: 'certified',
    });
    await signManifest(coreDir, signer);
    p = await startTestPlatform({ healthIntervalMs: 300 });
    config = {
      enabled: true,
      acceptance: 'partner',
      trustAnchors: [{ certPem: ca.certPem }],
      revokedCertificates: [],
      coreDir,
    };
    saveHostSecureBootConfig(agentDir(), config);
    await restartAgent();
  });
  after(async () => {
    await p?.close();
    rmSync(work, { recursive: true, force: true });
    restoreConfig();
  });

  const install = (
    dir: string,
  ): Promise<{ status: number; body: { code?: string; name?: string; verified?: boolean } }> =>
    p.request(p.adminToken, 'POST', `/hosts/${hostId()}/bundles`, bundleUpload(dir));
  const installedDirs = (): string[] => readdirSync(join(agentDir(), 'bundles'));

  test('the core verifies: status shows Secure Boot on, passed, partner', async () => {
    const s = await p.api.get<{
      live: boolean;
      uefiSecureBoot: string;
      report: { enabled: boolean; acceptance: string; verification: { result: string } };
    }>(`/hosts/${hostId()}/secure-boot`);
    assert.equal(s.live, true);
    assert.equal(s.report.enabled, true);
    assert.equal(s.report.verification.result, 'passed');
    assert.equal(s.report.acceptance, 'partner');
    assert.ok(['enabled', 'disabled', 'not-uefi', 'unknown'].includes(s.uefiSecureBoot));
  });

  test('unsigned, tampered and too-low bundles are refused and leave nothing installed', async () => {
    const unsigned = await install(await makeBundle('partner', false));
    assert.equal(unsigned.status, 403);
    assert.equal(unsigned.body.code, 'HS_ERR_BUNDLE_UNSIGNED');

    const tamperedDir = await makeBundle('partner');
    writeFileSync(join(tamperedDir, 'bin', 'tool'), '#!/bin/sh\necho evil\n');
    const tampered = await install(tamperedDir);
    assert.equal(tampered.status, 403);
    assert.equal(tampered.body.code, 'HS_ERR_BUNDLE_FILE_MODIFIED');

    // The acceptance matrix through the API: a partner host refuses community bundles.
    const community = await install(await makeBundle('community'));
    assert.equal(community.status, 403);
    assert.equal(community.body.code, 'HS_ERR_BUNDLE_ACCEPTANCE_TOO_LOW');

    assert.deepEqual(installedDirs(), [], 'nothing installed, no staging left');
    assert.deepEqual(await p.api.get(`/hosts/${hostId()}/bundles`), []);
    const events = await p.api.get<{ type: string; result: string; message: string }[]>(
      '/events?type=host.bundle-installed',
    );
    assert.ok(
      events.some((e) => e.result === 'failure' && /no signature|unsigned|bundle\.sig/i.test(e.message)),
      JSON.stringify(events),
    );
  });

  test('a signed partner (and an accepted) bundle installs', async () => {
    const ok = await install(await makeBundle('partner'));
    assert.equal(ok.status, 201, JSON.stringify(ok.body));
    assert.equal(ok.body.verified, true);
    const higher = await install(await makeBundle('accepted'));
    assert.equal(higher.status, 201, JSON.stringify(higher.body));
    assert.deepEqual(installedDirs().sort(), ['tool-accepted', 'tool-partner']);
    const s = await p.api.get<{ report: { effectiveAcceptance: string; bundles: unknown[] } }>(
      `/hosts/${hostId()}/secure-boot`,
    );
    assert.equal(s.report.effectiveAcceptance, 'partner');
    assert.equal(s.report.bundles.length, 2);
  });

  test('a community bundle installed prevents enabling host Secure Boot', async () => {
    const off = join(work, 'agent-off');
    mkdirSync(join(off, 'bundles'), { recursive: true });
    cpSync(await makeBundle('community'), join(off, 'bundles', 'tool-community'), { recursive: true });
    await assert.rejects(
      checkCanEnable(off, { ...config, acceptance: 'community' }),
      (err) => isHypersealError(err, 'HS_ERR_CONFLICT') && /community/.test((err as Error).message),
    );
  });

  test('the CLI: host secure-boot status, bundle list, vm set on a BIOS VM', async () => {
    const creds = join(work, 'credentials.json');
    writeFileSync(
      creds,
      JSON.stringify({ managerUrl: p.manager.url, caPath: p.manager.caPath, token: p.adminToken }),
      { mode: 0o600 },
    );
    // Async: the manager answering the CLI runs in this process.
    const cli = (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
      new Promise((done) => {
        execFile(
          process.execPath,
          [CLI, ...args, '--credentials', creds],
          { encoding: 'utf8' },
          (err, stdout, stderr) =>
            done({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
        );
      });
    const status = await cli('host', 'secure-boot', 'status');
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /host Secure Boot: +on/);
    assert.match(status.stdout, /verification: +passed/);
    assert.match(status.stdout, /acceptance level: +partner/);
    assert.match(status.stdout, /bundle tool-partner 1\.0\.0 .* partner verified/);
    const list = await cli('bundle', 'list');
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /tool-accepted/);
    await p.api.post('/vms', { name: 'cli-bios', firmware: 'bios', memoryMiB: 64 });
    const set = await cli('vm', 'set', 'cli-bios', '--secure-boot', 'on');
    assert.equal(set.code, 2, set.stdout);
    assert.match(set.stderr, /Secure Boot needs firmware efi; this VM uses bios \[HS_ERR_INVALID_ARGUMENT\]/);
  });

  test('one byte of the core changed: the agent refuses to serve naming the file; the host shows failed', async () => {
    const file = join(coreDir, 'src', 'agent', 'server.js');
    const bytes = readFileSync(file);
    bytes[10] = (bytes[10] ?? 0) ^ 0x01;
    writeFileSync(file, bytes);

    // The offline check, as an operator runs it: exit 6, the file named.
    const cli = spawnSync(process.execPath, [CLI, 'agent', 'verify', '--data-dir', agentDir()], {
      encoding: 'utf8',
    });
    assert.equal(cli.status, 6, cli.stderr);
    assert.match(cli.stderr, /src\/agent\/server\.js/);
    assert.match(cli.stderr, /HS_ERR_HOST_VERIFICATION_FAILED/);

    await restartAgent();
    assert.match(
      p.agents[0]?.server.verificationFailure?.message ?? '',
      /core failed verification at .*src\/agent\/server\.js/,
    );
    // Nothing but facts: a VM call is refused.
    const vms = await p.request<{ code: string }>(p.adminToken, 'POST', '/vms', { name: 'after-tamper' });
    assert.notEqual(vms.status, 201);

    // The manager's health loop finds it failed, with an event naming the file.
    let state = '';
    for (let i = 0; i < 60 && state !== 'failed'; i++) {
      await new Promise((r) => setTimeout(r, 200));
      state = (await p.api.get<{ state: string }>(`/hosts/${hostId()}`)).state;
    }
    assert.equal(state, 'failed');
    const events = await p.api.get<{ type: string; message: string; severity: string }[]>(
      '/events?type=host.verification-failed',
    );
    const e = events.find((x) => x.type === 'host.verification-failed');
    assert.ok(e, 'a host.verification-failed event');
    assert.match(e.message, /server\.js/);
    assert.equal(e.severity, 'critical');
    const s = await p.api.get<{ report: { verification: { result: string; file: string; code: string } } }>(
      `/hosts/${hostId()}/secure-boot`,
    );
    assert.equal(s.report.verification.result, 'failed');
    assert.equal(s.report.verification.code, 'HS_ERR_BUNDLE_FILE_MODIFIED');
    assert.match(s.report.verification.file, /src\/agent\/server\.js$/);
  });
});
