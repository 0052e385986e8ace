// The web UI end to end in real headless Chromium against a real manager with two sim
// agents and the embedded key server: sign in through the form, create a VM (EFI), tick
// Secure Boot, encrypt under the built-in policy and watch the task's progress bar finish,
// migrate through the dialog, see the from → to diff on the events page and the live tail,
// alerts (with a rule name that is markup, shown as text), tasks, key providers and
// policies; then a Read-only user sees the controls disabled with the reason, and the
// server refuses the calls when forced from the page. Every request the pages made went
// to the manager's origin. Screenshots go to test-results/ui/.
import assert from 'node:assert/strict';
import { X509Certificate, createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { chromium } from 'playwright-core';
import { createCertificateAuthority, issueCertificate, signCsr } from '../../src/pki/index.js';
import type { TestPlatform } from '../support/manager.js';
import { startTestPlatform, useTempConfigHome } from '../support/manager.js';

const SHOTS = 'test-results/ui';
const MARKUP_NAME = '<img src=x onerror="globalThis.__xss=1">Secure Boot turned on';

describe('web UI in headless Chromium', { concurrency: 1 }, () => {
  let restore: () => void;
  let p: TestPlatform;
  let browser: Browser;
  let origin = '';
  const contexts: BrowserContext[] = [];
  const requests: string[] = [];
  const pageErrors: string[] = [];
  const cspViolations: string[] = [];
  const admin = { user: 'ui-admin', password: randomBytes(18).toString('base64url') };
  const reader = { user: 'ui-reader', password: randomBytes(18).toString('base64url') };
  let page: Page;
  let vmId = '';

  before(async () => {
    restore = useTempConfigHome();
    p = await startTestPlatform({ agents: 2, kms: true });
    origin = new URL(p.manager.url).origin;
    await p.api.createUser({ name: admin.user, password: admin.password, roles: ['Administrator'] });
    await p.api.createUser({ name: reader.user, password: reader.password, roles: ['Read-only'] });
    mkdirSync(SHOTS, { recursive: true });
    // The manager's certificate is issued by its own CA. Only its key is trusted: the
    // browser ignores certificate errors for that public key alone, no other.
    const spki = createHash('sha256')
      .update(
        new X509Certificate(readFileSync(join(p.managerDir, 'api.pem'))).publicKey.export({
          type: 'spki',
          format: 'der',
        }),
      )
      .digest('base64');
    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--no-sandbox', `--ignore-certificate-errors-spki-list=${spki}`],
    });
    page = await newPage();
  });
  after(async () => {
    for (const c of contexts) await c.close().catch(() => undefined);
    await browser?.close();
    await p?.close();
    restore();
  });

  /** A fresh browser profile (own cookies). */
  async function newPage(): Promise<Page> {
    const context = await browser.newContext({
      viewport: { width: 1280, height: 900 },
    });
    contexts.push(context);
    const pg = await context.newPage();
    pg.setDefaultTimeout(20_000);
    pg.on('request', (r) => requests.push(r.url()));
    pg.on('pageerror', (e) => pageErrors.push(e.message));
    pg.on('console', (m) => {
      if (/Content.Security.Policy/i.test(m.text())) cspViolations.push(m.text());
    });
    return pg;
  }

  async function signIn(pg: Page, who: { user: string; password: string }): Promise<void> {
    await pg.goto(`${origin}/`);
    assert.equal(new URL(pg.url()).pathname, '/ui/', 'the root redirects to the UI');
    await pg.fill('#login-user', who.user);
    await pg.fill('#login-password', who.password);
    await pg.click('#login button[type=submit]');
    await pg.locator('#user-name', { hasText: who.user }).waitFor();
  }

  const shot = (pg: Page, name: string): Promise<Buffer> =>
    pg.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });

  /** The task panel of the VM page shows this action finished successfully. */
  const taskDone = async (label: string): Promise<void> => {
    try {
      await page.locator('#task .task[data-state="succeeded"]', { hasText: label }).waitFor();
    } catch (err) {
      await shot(page, `failed-${label}`);
      throw new Error(
        `${label}: ${await page.locator('#flash').textContent()} ${await page.locator('#task').textContent()}`,
        {
          cause: err,
        },
      );
    }
  };

  test('an administrator signs in through the form; the session cookie is HttpOnly', async () => {
    await page.goto(`${origin}/`);
    await page.locator('#login').waitFor();
    await shot(page, '01-login');
    await page.fill('#login-user', admin.user);
    await page.fill('#login-password', 'wrong password, surely');
    await page.click('#login button[type=submit]');
    await page.locator('#flash .error', { hasText: 'HS_ERR_AUTH' }).waitFor();
    await signIn(page, admin);
    const cookies = await page.context().cookies();
    const session = cookies.find((c) => c.name === 'hs_session');
    assert.ok(session, 'a session cookie');
    assert.equal(session.httpOnly, true);
    assert.equal(session.secure, true);
    assert.equal(session.sameSite, 'Strict');
    assert.equal(await page.evaluate('document.cookie'), '', 'no cookie is in script reach');
  });

  test('an alert rule whose name is markup is shown as text', async () => {
    await page.goto(`${origin}/ui/#/alerts`);
    await page.fill('#rule-name', MARKUP_NAME);
    await page.selectOption('#rule-severity', 'warning');
    await page.fill('#rule-types', 'vm.secure-boot-enabled');
    await page.click('#create-rule button[type=submit]');
    await page.locator('.rule-name', { hasText: MARKUP_NAME }).waitFor();
    assert.equal(await page.locator('main img').count(), 0, 'no element was made from the name');
    assert.equal(await page.evaluate('globalThis.__xss'), undefined);
  });

  test('an alert rule is disabled and its severity changed in place, each an event from → to', async () => {
    const rule = await p.api.createAlertRule({
      name: 'editable rule',
      severity: 'info',
      match: { types: ['vm.reset'] },
    });
    await page.goto(`${origin}/ui/#/alerts`);
    await page.reload();
    const row = page.locator('tr', { hasText: 'editable rule' });
    await row.locator('input.rule-enabled').uncheck();
    await page.locator('#flash', { hasText: 'Alert rule editable rule: disabled' }).waitFor();
    await page
      .locator('tr', { hasText: 'editable rule' })
      .locator('select.rule-severity')
      .selectOption('critical');
    await page.locator('#flash', { hasText: 'Alert rule editable rule: severity critical' }).waitFor();
    const after = (await p.api.listAlertRules()).find((r) => r.id === rule.id);
    assert.equal(after?.enabled, false);
    assert.equal(after?.severity, 'critical');
    const changes = (await p.api.listEvents({ type: 'alert.rule-changed', limit: 2 })).map((e) =>
      e.changes.map((c) => [c.path, c.from, c.to]),
    );
    assert.deepEqual(changes, [[['severity', 'info', 'critical']], [['enabled', true, false]]]);
    assert.equal(
      await page.locator('tr', { hasText: 'editable rule' }).locator('input.rule-enabled').isChecked(),
      false,
    );
    await p.api.deleteAlertRule(rule.id);
  });

  test("an alert rule's match and actions are edited in the page; its webhook secret is kept unless retyped", async () => {
    const rule = await p.api.createAlertRule({
      name: 'hooked rule',
      severity: 'warning',
      match: { types: ['vm.reset'] },
      actions: { event: true, webhook: { url: 'https://127.0.0.1:9/hook', secret: 'a-webhook-secret-0123' } },
    });
    await page.goto(`${origin}/ui/#/alerts`);
    await page.reload();
    await page.locator('tr', { hasText: 'hooked rule' }).locator('button.rule-edit').click();
    const form = page.locator(`form[data-editing="${rule.id}"]`);
    await form.waitFor();
    // The form shows the rule, never its secret.
    assert.equal(await form.locator('#rule-types').inputValue(), 'vm.reset');
    assert.equal(await form.locator('#rule-webhook-url').inputValue(), 'https://127.0.0.1:9/hook');
    assert.equal(await form.locator('#rule-webhook-secret').inputValue(), '');
    assert.ok(!(await page.content()).includes('a-webhook-secret-0123'), 'the secret is not in the page');
    await form.locator('#rule-types').fill('vm.reset, vm.secure-boot-*');
    await form.locator('#rule-kinds').fill('vm');
    await form.locator('#rule-result').selectOption('failure');
    await form.locator('#rule-changes').fill('[{"path": "secureBoot", "to": {"equals": false}}]');
    await form.locator('#rule-syslog').check();
    await form.locator('button[type=submit]').click();
    await page
      .locator('#flash', { hasText: 'Saved alert rule hooked rule' })
      .waitFor({ timeout: 5000 })
      .catch(async (err: unknown) => {
        throw new Error(`${String(err)}; the page says: ${await page.locator('#flash').textContent()}`);
      });
    const after = (await p.api.listAlertRules()).find((r) => r.id === rule.id);
    assert.deepEqual(after?.match, {
      types: ['vm.reset', 'vm.secure-boot-*'],
      objectKinds: ['vm'],
      result: 'failure',
      changes: [{ path: 'secureBoot', to: { equals: false } }],
    });
    assert.equal((after?.actions as { syslog?: boolean }).syslog, true);
    // One event, each field from → to; the secret was kept (no change of it recorded).
    const [changed] = await p.api.listEvents({ type: 'alert.rule-changed', limit: 1 });
    const paths = (changed?.changes ?? []).map((c) => c.path).sort();
    assert.deepEqual(paths, [
      'actions.syslog',
      'match.changes',
      'match.objectKinds',
      'match.result',
      'match.types',
    ]);
    // Bad JSON in Changes: a clear message, nothing saved.
    await page.locator('tr', { hasText: 'hooked rule' }).locator('button.rule-edit').click();
    await page.locator('#rule-changes').fill('[{"path": ');
    await page.locator(`form[data-editing="${rule.id}"] button[type=submit]`).click();
    await page.locator('#flash', { hasText: 'Changes must be a JSON list' }).waitFor();
    assert.deepEqual((await p.api.listAlertRules()).find((r) => r.id === rule.id)?.match, after?.match);
    await p.api.deleteAlertRule(rule.id);
  });

  test('an alert rule is removed in two clicks (the first only asks to confirm)', async () => {
    await p.api.createAlertRule({
      name: 'temporary rule',
      severity: 'info',
      match: { types: ['vm.reset'] },
    });
    await page.goto(`${origin}/ui/#/alerts`);
    await page.reload(); // the same hash: load the page again to see the rule made through the API
    const row = page.locator('tr', { hasText: 'temporary rule' });
    await row.locator('button.rule-remove').click();
    await row.locator('button.rule-remove', { hasText: 'Confirm removal' }).waitFor();
    assert.ok(
      (await p.api.listAlertRules()).some((r) => r.name === 'temporary rule'),
      'not yet removed',
    );
    await row.locator('button.rule-remove').click();
    await page.locator('#flash', { hasText: 'Removed alert rule temporary rule' }).waitFor();
    assert.equal(
      (await p.api.listAlertRules()).some((r) => r.name === 'temporary rule'),
      false,
    );
    assert.equal((await p.api.listEvents({ type: 'alert.rule-removed', limit: 1 }))[0]?.user, admin.user);
  });

  test('create a VM (EFI firmware) through the form', async () => {
    await page.goto(`${origin}/ui/#/vms`);
    await page.fill('#vm-name', 'ui-web-01');
    await page.selectOption('#vm-host', p.agents[0]?.hostId ?? '');
    await page.selectOption('#vm-firmware', 'efi');
    await page.fill('#vm-memory', '64');
    // No disk: the sim driver cannot copy local disks, so a VM with one could not migrate below.
    await page.fill('#vm-disk', '0');
    await page.click('#create-vm-submit');
    await page.locator('#vm-title', { hasText: 'ui-web-01' }).waitFor();
    vmId = decodeURIComponent(new URL(page.url()).hash.replace('#/vms/', ''));
    const vm = await p.api.getVm(vmId);
    assert.equal(vm.name, 'ui-web-01');
    assert.equal(vm.config.firmware, 'efi');
    assert.deepEqual(vm.config.disks, []);
    assert.equal(vm.hostId, p.agents[0]?.hostId);
    assert.equal(await page.locator('#vm-title .badge-simulated').count(), 1, 'sim host: a simulated badge');
  });

  test('ticking Secure Boot saves it, shows the badge and records the event', async () => {
    assert.equal(await page.isChecked('#secure-boot'), false);
    await page.check('#secure-boot');
    await page.locator('#vm-title .badge-secure-boot').waitFor();
    assert.equal(await page.isChecked('#secure-boot'), true);
    assert.equal((await p.api.getVm(vmId)).config.secureBoot, true);
    const events = await p.api.listEvents({ objectId: vmId, type: 'vm.secure-boot-enabled' });
    assert.equal(events.length, 1);
    assert.deepEqual(events[0]?.changes, [{ path: 'secureBoot', from: false, to: true }]);
  });

  test('encrypt under the built-in policy: the progress bar reaches done, the VM is encrypted', async () => {
    const builtin = (await p.api.listEncryptionPolicies()).find((x) => x.builtin);
    assert.ok(builtin);
    await page.selectOption('#encryption-policy', builtin.id);
    await page.click('#encrypt');
    await taskDone('Encrypt');
    assert.equal(await page.locator('#task progress').getAttribute('value'), '100');
    await page.locator('#vm-title .badge-encrypted').waitFor();
    const vm = await p.api.getVm(vmId);
    assert.equal(vm.encryption?.policyId, builtin.id);
    await page.locator('#decrypt').waitFor();
    await shot(page, '02-vm-encrypted');
  });

  test('power on, then migrate through the dialog to the other host', async () => {
    await page.click('#power-on');
    await taskDone('Power on');
    await page.locator('#vm-title .badge-state-running').waitFor();
    await page.locator('#console').waitFor();
    const dest = p.agents[1]?.hostId ?? '';
    await page.click('#migrate');
    await page.locator('#migrate-dialog').waitFor({ state: 'visible' });
    await page.selectOption('#migrate-host', dest);
    await shot(page, '03-migrate-dialog');
    await page.click('#migrate-confirm');
    await taskDone('Migrate');
    const vm = await p.api.getVm(vmId);
    assert.equal(vm.hostId, dest);
    assert.equal(vm.state, 'running');
  });

  test('migration mode select saves the setting', async () => {
    await page.selectOption('#migration-mode', 'required');
    await page.locator('#vm-title .badge-migration', { hasText: 'migration: required' }).waitFor();
    assert.equal((await p.api.getVm(vmId)).config.migrationEncryption, 'required');
  });

  test('a change made elsewhere is announced on the VM page, and Reload shows it', async () => {
    assert.equal(await page.locator('#vm-reload').count(), 0, 'nothing changed yet');
    await p.api.updateVm(vmId, { memoryMiB: 96 }); // as the CLI or a script would
    await page.locator('#vm-reload').waitFor();
    await page.click('#vm-reload');
    await page.locator('main dd', { hasText: '1 / 96 MiB' }).waitFor();
    assert.equal(await page.locator('#vm-reload').count(), 0);
  });

  test('the VM list shows each VM with its badges', async () => {
    await page.goto(`${origin}/ui/#/vms`);
    const row = page.locator('main tbody tr', { has: page.locator('a.vm-link', { hasText: 'ui-web-01' }) });
    await row.waitFor();
    for (const b of ['encrypted', 'secure-boot', 'simulated', 'state-running']) {
      assert.equal(await row.locator(`.badge-${b}`).count(), 1, b);
    }
    assert.equal(await row.locator('.badge-migration').textContent(), 'migration: required');
    assert.equal(
      await row.locator('td').nth(1).textContent(),
      p.agents[1]?.name,
      'on the host it migrated to',
    );
    await shot(page, '04-vms');
  });

  test('the VM list filters by tag on the server and pages', async () => {
    await p.api.createVm({ name: 'ui-tagged', memoryMiB: 64, tags: ['ui-only'] });
    await page.goto(`${origin}/ui/#/vms`);
    await page.reload();
    await page.fill('#vm-filter-tag', 'ui-only');
    await page.click('#vm-filters button[type=submit]');
    await page.locator('#vm-range', { hasText: '1–1' }).waitFor();
    assert.deepEqual(await page.locator('main a.vm-link').allTextContents(), ['ui-tagged']);
    assert.equal(await page.locator('#vms-next').isDisabled(), true);
    assert.equal(await page.locator('#vms-prev').isDisabled(), true);
    await page.fill('#vm-filter-tag', '');
    await page.fill('#vm-filter-name', 'WEB-0');
    await page.click('#vm-filters button[type=submit]');
    await page.locator('main a.vm-link', { hasText: 'ui-web-01' }).waitFor();
    assert.equal(
      await page.locator('main a.vm-link', { hasText: 'ui-tagged' }).count(),
      0,
      'searched by name',
    );
    await page.fill('#vm-filter-name', '');
    await page.click('#vm-filters button[type=submit]');
    await page.locator('main a.vm-link', { hasText: 'ui-tagged' }).waitFor();
  });

  test('events: the change as a diff (old struck, new inserted), filters and the live tail', async () => {
    await page.goto(`${origin}/ui/#/events`);
    const sb = page.locator('#events > li[data-type="vm.secure-boot-enabled"]');
    await sb.waitFor();
    assert.equal(await sb.locator('.change code.path').textContent(), 'secureBoot');
    assert.equal(await sb.locator('.change del.from').textContent(), 'false');
    assert.equal(await sb.locator('.change ins.to').textContent(), 'true');
    assert.equal(
      await sb.locator('.change del.from').evaluate((el) => {
        const w = globalThis as unknown as { getComputedStyle(e: unknown): { textDecorationLine: string } };
        return w.getComputedStyle(el).textDecorationLine;
      }),
      'line-through',
    );
    await shot(page, '05-events');

    // Live: an event recorded now appears without a reload.
    const before = await page.locator('#events > li').count();
    await p.api.createNetwork({ name: 'ui-live-net' });
    await page.locator('#events > li[data-type="network.created"]', { hasText: 'ui-live-net' }).waitFor();
    assert.equal(await page.locator('#events > li').first().getAttribute('data-type'), 'network.created');
    assert.ok((await page.locator('#events > li').count()) > before);

    // Filters: type and severity.
    await page.fill('#filter-type', 'vm.encrypted');
    await page.click('#event-filters button[type=submit]');
    await page.locator('#events > li[data-type="vm.encrypted"]').first().waitFor();
    const types = await page
      .locator('#events > li')
      .evaluateAll((els) => els.map((e) => (e as unknown as { dataset: { type: string } }).dataset.type));
    assert.deepEqual([...new Set(types)], ['vm.encrypted']);
    await page.fill('#filter-type', '');
    await page.selectOption('#filter-severity', 'warning');
    await page.click('#event-filters button[type=submit]');
    await page.locator('#events > li.severity-warning').first().waitFor();
    assert.equal(await page.locator('#events > li:not(.severity-warning)').count(), 0);
    await page.selectOption('#filter-severity', '');
    await page.click('#event-filters button[type=submit]');
  });

  test('alerts: the raised alert is listed, the markup in its message shown as text', async () => {
    await page.goto(`${origin}/ui/#/alerts`);
    const alert = page.locator('#alerts li[data-type="alert.raised"]');
    await alert.first().waitFor();
    assert.ok(
      ((await alert.first().locator('.message').textContent()) ?? '').includes('<img src=x onerror='),
    );
    assert.equal(await page.locator('main img').count(), 0);
    assert.equal(await page.evaluate('globalThis.__xss'), undefined);
    await shot(page, '06-alerts');
  });

  test('tasks: progress bars, finished ones full, new ones appear live', async () => {
    await page.goto(`${origin}/ui/#/tasks`);
    const done = page.locator('#tasks .task[data-state="succeeded"]');
    await done.first().waitFor();
    assert.ok((await done.count()) >= 3, 'encrypt, power on and migrate');
    const values = await done
      .locator('progress')
      .evaluateAll((els) => els.map((e) => (e as unknown as { value: number }).value));
    assert.ok(values.length >= 3);
    for (const v of values) assert.equal(v, 100);
    // Live: a task started elsewhere (the API) appears and finishes without a reload.
    const before = await done.count();
    await p.api.powerOffVm(vmId);
    await done.nth(before).waitFor();
    assert.equal((await p.api.getVm(vmId)).state, 'stopped');
    await shot(page, '07-tasks');
  });

  test('key providers: list, test, add, set default', async () => {
    await page.goto(`${origin}/ui/#/key-providers`);
    const embedded = page.locator('.provider[data-name="embedded"]');
    await embedded.locator('.badge-default').waitFor();
    await embedded.locator('button.test-provider').click();
    await embedded.locator('.test-result [data-ok="true"]').waitFor();

    const kms = p.kms;
    assert.ok(kms);
    const client = await kms.dataDir.issueClientCertificate('hyperseal-manager');
    await page.fill('#kp-name', 'ui-second');
    await page.fill('#kp-host', '127.0.0.1');
    await page.fill('#kp-port', String(kms.port));
    await page.fill('#kp-ca', kms.dataDir.caCertPem());
    await page.selectOption('#kp-mode', 'pem');
    await page.fill('#kp-cert', client.certPem);
    await page.fill('#kp-key', client.keyPem);
    await page.click('#add-provider button[type=submit]');
    const second = page.locator('.provider[data-name="ui-second"]');
    await second.waitFor();
    await second.locator('button.set-default').click();
    await second.locator('.badge-default').waitFor();
    assert.equal((await p.api.listKeyProviders()).find((x) => x.isDefault)?.name, 'ui-second');
    // Back to the embedded one (its "Make default" is enabled again, the new default's is not).
    assert.equal(await second.locator('button.set-default').isDisabled(), true);
    await embedded.locator('button.set-default').click();
    await embedded.locator('.badge-default').waitFor();
    await shot(page, '08-key-providers');
  });

  test('key providers: added with a CSR, its signed certificate installed from the page', async () => {
    // A key manager of its own CA (none listens: installing needs no connection).
    const ca = await createCertificateAuthority({ commonName: 'ui-test-kms-ca' });
    await page.goto(`${origin}/ui/#/key-providers`);
    await page.fill('#kp-name', 'ui-csr');
    await page.fill('#kp-host', '127.0.0.1');
    await page.fill('#kp-port', '9');
    await page.fill('#kp-ca', ca.certPem);
    await page.selectOption('#kp-mode', 'csr');
    await page.click('#add-provider button[type=submit]');
    const card = page.locator('.provider[data-name="ui-csr"]');
    await card.locator('pre.csr').waitFor({ state: 'attached' });
    const csrPem = (await card.locator('pre.csr').textContent()) ?? '';
    assert.match(csrPem, /BEGIN CERTIFICATE REQUEST/);
    const wrong = await createCertificateAuthority({ commonName: 'not-this-key' });
    await card.locator('textarea.kp-signed-cert').fill(wrong.certPem);
    await card.locator('button.install-cert').click();
    await page.locator('#flash', { hasText: 'HS_ERR' }).waitFor();
    assert.equal(
      (await p.api.listKeyProviders()).find((x) => x.name === 'ui-csr')?.state,
      'awaiting-certificate',
      'a certificate for another key is refused',
    );
    await card.locator('textarea.kp-signed-cert').fill(await signCsr(ca, csrPem, { usage: 'client' }));
    await card.locator('button.install-cert').click();
    await page.locator('#flash', { hasText: 'Installed the certificate of ui-csr' }).waitFor();
    const ready = page.locator('.provider[data-name="ui-csr"]');
    await ready.locator('.badge-ok', { hasText: 'ready' }).waitFor();
    assert.equal(await ready.locator('pre.csr').count(), 0, 'the CSR is gone');
    const after = (await p.api.listKeyProviders()).find((x) => x.name === 'ui-csr');
    assert.equal(after?.state, 'ready');
    assert.equal(after?.csrPem, null);
  });

  test('encryption policies: list and create', async () => {
    await page.goto(`${origin}/ui/#/policies`);
    await page.locator('.policy-name').first().waitFor();
    await page.fill('#policy-name', 'ui-policy');
    await page.fill('#policy-description', 'made in the web UI');
    await page.click('#create-policy button[type=submit]');
    await page.locator('.policy-name', { hasText: 'ui-policy' }).waitFor();
    assert.ok((await p.api.listEncryptionPolicies()).some((x) => x.name === 'ui-policy'));
  });

  test('hosts: both hosts with their state', async () => {
    await page.goto(`${origin}/ui/#/hosts`);
    await page.locator('main .badge-host-connected').nth(1).waitFor();
    assert.equal(await page.locator('main tbody tr').count(), 2);
    assert.equal(await page.locator('main .badge-host-connected').count(), 2);
  });

  test('a Read-only user sees the controls disabled with the reason; forced calls are refused', async () => {
    const plain = await p.api.createVm({
      name: 'ui-plain-01',
      memoryMiB: 64,
      hostId: p.agents[0]?.hostId ?? '',
    });
    const ro = await newPage();
    await signIn(ro, reader);
    await ro.goto(`${origin}/ui/#/vms/${plain.id}`);
    await ro.locator('#vm-title', { hasText: 'ui-plain-01' }).waitFor();
    for (const [control, reason] of [
      ['#power-on', 'needs vm.power'],
      ['#encrypt', 'needs crypto.encrypt'],
      ['#encryption-policy', 'needs crypto.encrypt'],
      ['#secure-boot', 'needs vm.reconfigure'],
      ['#migration-mode', 'needs vm.reconfigure'],
      ['#migrate', 'needs vm.migrate'],
    ] as const) {
      assert.equal(await ro.locator(control).isDisabled(), true, control);
      assert.equal(await ro.locator(control).getAttribute('title'), reason, control);
      assert.equal(await ro.locator(`.guarded:has(${control}) .reason`).textContent(), reason, control);
    }
    assert.equal(await ro.locator('#console-reason').textContent(), 'needs vm.console');
    await shot(ro, '09-read-only-vm');

    // The server enforces it all the same: the page's own session, forced calls.
    const status = (path: string): Promise<number> =>
      ro.evaluate(
        async (url) =>
          (
            await fetch(url, {
              method: 'POST',
              credentials: 'same-origin',
              headers: { 'content-type': 'application/json' },
              body: '{}',
            })
          ).status,
        path,
      );
    assert.equal(await status(`/api/v1/vms/${plain.id}/actions/encrypt`), 403);
    assert.equal(await status(`/api/v1/vms/${plain.id}/actions/power-on`), 403);
    const after = await p.api.getVm(plain.id);
    assert.equal(after.encryption, null);
    assert.equal(after.state, 'stopped');

    await ro.goto(`${origin}/ui/#/vms`);
    const create = ro.locator('#create-vm-submit');
    await create.waitFor();
    assert.equal(await create.isDisabled(), true);
    assert.equal(await create.getAttribute('title'), 'needs vm.create');
    await ro.goto(`${origin}/ui/#/key-providers`);
    await ro.locator('main .reason', { hasText: 'needs crypto.manageKeyServers' }).waitFor();
  });

  test('opening the page signed out asks nothing of the server (no access.denied noise)', async () => {
    const before = (await p.api.listEvents({ type: 'access.denied' })).length;
    const fresh = await newPage();
    await fresh.goto(`${origin}/`);
    await fresh.locator('#login').waitFor();
    assert.equal((await p.api.listEvents({ type: 'access.denied' })).length, before);
  });

  test('sign out ends the session on the server: the old cookie no longer works', async () => {
    const session = (await page.context().cookies()).find((c) => c.name === 'hs_session');
    assert.ok(session);
    await page.goto(`${origin}/ui/#/vms`);
    await page.click('#logout');
    await page.locator('#login').waitFor();
    assert.equal(
      (await page.context().cookies()).some((c) => c.name === 'hs_session'),
      false,
      'the cookie is cleared',
    );
    // Replaying the old session id is refused: it was deleted, not just forgotten by the browser.
    const replay = await p.request(undefined, 'GET', '/session', undefined, {
      cookie: `hs_session=${session.value}`,
    });
    assert.equal(replay.status, 401);
    const out = await p.api.listEvents({ type: 'user.logged-out', limit: 1 });
    assert.equal(out[0]?.user, admin.user);
  });

  test("the browser trusts the manager's key alone: a server with another certificate is refused", async () => {
    const ca = await createCertificateAuthority({ commonName: 'other-ca' });
    const leaf = await issueCertificate(ca, {
      commonName: 'other',
      usage: 'server',
      ipAddresses: ['127.0.0.1'],
    });
    const other = createServer({ cert: leaf.certPem, key: leaf.keyPem }, (_req, res) => res.end('other'));
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
    try {
      const pg = await newPage();
      const url = `https://127.0.0.1:${(other.address() as AddressInfo).port}/`;
      await assert.rejects(pg.goto(url), /ERR_CERT/);
      // The requests check below is about the manager's pages only.
      for (let i = requests.length - 1; i >= 0; i--) if (requests[i]?.startsWith(url)) requests.splice(i, 1);
    } finally {
      other.close();
    }
  });

  test('every request went to the manager; no script errors, no CSP violations', () => {
    assert.ok(requests.length > 20);
    assert.deepEqual(
      requests.filter((u) => !u.startsWith(`${origin}/`)),
      [],
    );
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(cspViolations, []);
  });
});
