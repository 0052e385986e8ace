/** Key providers (list, add, test, set default) and encryption policies (list, create). */
import type { KeyProvider, KeyProviderCreate } from '../sdk/api.gen.js';
import type { PageContext } from './app.js';
import type { UiElement } from './dom.js';
import { field, guarded, h, row, select, table } from './dom.js';
import { badge, time } from './format.js';

export async function keyProvidersPage(ctx: PageContext): Promise<void> {
  const reason = ctx.access.reason('listKeyProviders');
  if (reason !== null) return ctx.show(h('h1', {}, 'Key providers'), h('p', { class: 'reason' }, reason));
  const providers = await ctx.api.listKeyProviders();
  ctx.show(
    h('h1', {}, 'Key providers'),
    h('div', { id: 'providers' }, ...providers.map((p) => providerCard(ctx, p))),
    providers.length ? null : h('p', { class: 'muted' }, 'No key provider: VMs cannot be encrypted yet.'),
    addProviderForm(ctx),
  );
}

function providerCard(ctx: PageContext, p: KeyProvider): UiElement {
  const result = h('div', { class: 'test-result' });
  const test = h(
    'button',
    {
      class: 'test-provider',
      onclick: () => {
        result.replaceChildren('Testing…');
        ctx.api
          .testKeyProvider(p.id)
          .then((r) =>
            result.replaceChildren(
              h(
                'p',
                { class: r.ok ? 'ok' : 'error', 'data-ok': String(r.ok) },
                r.ok ? 'Every server answered.' : 'Failed.',
              ),
              h(
                'ul',
                {},
                ...r.servers.map((s) =>
                  h(
                    'li',
                    {},
                    `${s.host}:${s.port} — `,
                    s.ok
                      ? `ok, ${s.latencyMs} ms${s.vendor ? `, ${s.vendor}` : ''}${s.versions ? `, KMIP ${s.versions.join(', ')}` : ''}`
                      : `${s.error?.code ?? 'error'}: ${s.error?.message ?? ''}`,
                  ),
                ),
              ),
            ),
          )
          .catch((err: unknown) => {
            result.replaceChildren();
            ctx.flash(err);
          });
      },
    },
    'Test',
  );
  const makeDefault = h(
    'button',
    {
      class: 'set-default',
      onclick: () =>
        void ctx.api
          .setDefaultKeyProvider(p.id)
          .then(() => {
            ctx.flash(`${p.name} is the default key provider.`);
            ctx.refresh();
          })
          .catch(ctx.flash),
    },
    'Make default',
  );
  const backup = p.backup;
  return h(
    'section',
    { class: 'card provider', 'data-name': p.name },
    h(
      'h2',
      {},
      p.name,
      ' ',
      p.isDefault ? badge('default', 'default') : null,
      badge(p.state, p.state === 'ready' ? 'ok' : 'warn'),
    ),
    h(
      'dl',
      { class: 'details' },
      h('dt', {}, 'Servers'),
      h('dd', {}, p.servers.map((s) => `${s.host}:${s.port}`).join(', ')),
      h('dt', {}, 'Identity'),
      h('dd', {}, p.identity ?? '—'),
      h('dt', {}, 'Client certificate'),
      h('dd', {}, p.clientCertificate ? `expires ${p.clientCertificate.notAfter}` : 'none yet'),
      backup ? h('dt', {}, 'Backup') : null,
      backup ? h('dd', {}, backup.health, backup.warning ? ` — ${backup.warning}` : '') : null,
      h('dt', {}, 'Added'),
      h('dd', {}, time(p.createdAt)),
    ),
    p.csrPem ? h('details', {}, h('summary', {}, 'CSR to sign'), h('pre', { class: 'csr' }, p.csrPem)) : null,
    p.csrPem ? installCertificateForm(ctx, p) : null,
    h(
      'div',
      { class: 'actions' },
      guarded(test, ctx.access.reason('testKeyProvider')),
      guarded(
        makeDefault,
        ctx.access.reason('setDefaultKeyProvider') ?? (p.isDefault ? 'already the default' : null),
      ),
    ),
    result,
  );
}

/**
 * After a CSR: the certificate the key manager's CA signed, pasted and installed. The
 * manager checks it matches the key it holds; until then the provider cannot be used.
 */
function installCertificateForm(ctx: PageContext, p: KeyProvider): UiElement {
  const cert = h('textarea', {
    class: 'kp-signed-cert',
    rows: 4,
    required: true,
    placeholder: '-----BEGIN CERTIFICATE----- (signed from the CSR above)',
    'aria-label': `signed certificate for ${p.name}`,
  });
  const install = h('button', { type: 'submit', class: 'install-cert' }, 'Install certificate');
  return h(
    'form',
    {
      class: 'install-cert-form',
      onsubmit: (ev) => {
        ev.preventDefault();
        ctx.api
          .setKeyProviderCertificate(p.id, { certPem: cert.value })
          .then(() => {
            ctx.flash(`Installed the certificate of ${p.name}; test it next.`);
            ctx.refresh();
          })
          .catch(ctx.flash);
      },
    },
    field('Signed certificate', cert),
    guarded(install, ctx.access.reason('setKeyProviderCertificate')),
  );
}

function addProviderForm(ctx: PageContext): UiElement {
  const name = h('input', { id: 'kp-name', required: true });
  const host = h('input', { id: 'kp-host', required: true, placeholder: 'kms.example' });
  const port = h('input', { id: 'kp-port', type: 'number', min: 1, max: 65535, value: 5696 });
  const ca = h('textarea', {
    id: 'kp-ca',
    rows: 4,
    required: true,
    placeholder: '-----BEGIN CERTIFICATE-----',
  });
  const cert = h('textarea', { id: 'kp-cert', rows: 4 });
  const key = h('textarea', { id: 'kp-key', rows: 4, autocomplete: 'off' });
  const upload = h(
    'div',
    { hidden: true },
    field('Client certificate (PEM)', cert),
    field('Client private key (PEM)', key, 'stored sealed; never shown again'),
  );
  const mode = select(
    { id: 'kp-mode', value: 'csr', onchange: () => (upload.hidden = mode.value === 'csr') },
    [
      ['csr', 'The manager generates a key pair and a CSR'],
      ['pem', 'Upload a client certificate and key'],
    ],
  );
  const add = async (): Promise<void> => {
    const body: KeyProviderCreate = {
      name: name.value.trim(),
      servers: [{ host: host.value.trim(), port: Number(port.value) }],
      caPem: ca.value,
      ...(mode.value === 'csr' ? { csr: {} } : { clientCertPem: cert.value, clientKeyPem: key.value }),
    };
    const p = await ctx.api.createKeyProvider(body);
    key.value = '';
    ctx.flash(
      `Added key provider ${p.name}${p.csrPem ? ': have its CSR signed, then install the certificate' : ''}.`,
    );
    ctx.refresh();
  };
  return h(
    'form',
    {
      class: 'card',
      id: 'add-provider',
      onsubmit: (ev) => {
        ev.preventDefault();
        add().catch(ctx.flash);
      },
    },
    h('h2', {}, 'Add a KMIP key provider'),
    h('div', { class: 'fields' }, field('Name', name), field('Server host', host), field('Port', port)),
    field('CA certificate(s) of the KMIP server (PEM)', ca),
    field('Client identity', mode),
    upload,
    guarded(
      h('button', { type: 'submit', class: 'primary' }, 'Add provider'),
      ctx.access.reason('createKeyProvider'),
    ),
  );
}

export async function policiesPage(ctx: PageContext): Promise<void> {
  const reason = ctx.access.reason('listEncryptionPolicies');
  if (reason !== null)
    return ctx.show(h('h1', {}, 'Encryption policies'), h('p', { class: 'reason' }, reason));
  const [policies, providers] = await Promise.all([
    ctx.api.listEncryptionPolicies(),
    ctx.access.can('listKeyProviders') ? ctx.api.listKeyProviders() : Promise.resolve([]),
  ]);
  const providerName = (id: string | null): string =>
    id === null ? 'the default provider' : (providers.find((p) => p.id === id)?.name ?? id);
  const name = h('input', { id: 'policy-name', required: true });
  const description = h('input', { id: 'policy-description' });
  const provider = select({ id: 'policy-provider' }, [
    ['', 'the default provider'],
    ...providers.map((p) => [p.id, p.name] as const),
  ]);
  const create = async (): Promise<void> => {
    const p = await ctx.api.createEncryptionPolicy({
      name: name.value.trim(),
      ...(description.value.trim() ? { description: description.value.trim() } : {}),
      ...(provider.value ? { providerId: provider.value } : {}),
    });
    ctx.flash(`Created encryption policy ${p.name}.`);
    ctx.refresh();
  };
  ctx.show(
    h('h1', {}, 'Encryption policies'),
    table(
      ['Name', 'Description', 'Key provider', ''],
      policies.map((p) =>
        row(
          h('span', { class: 'policy-name' }, p.name),
          p.description,
          providerName(p.providerId),
          p.builtin ? badge('built-in', 'builtin') : null,
        ),
      ),
    ),
    h(
      'form',
      {
        class: 'card',
        id: 'create-policy',
        onsubmit: (ev) => {
          ev.preventDefault();
          create().catch(ctx.flash);
        },
      },
      h('h2', {}, 'Create a policy'),
      h(
        'div',
        { class: 'fields' },
        field('Name', name),
        field('Description', description),
        field('Key provider', provider),
      ),
      guarded(
        h('button', { type: 'submit', class: 'primary' }, 'Create policy'),
        ctx.access.reason('createEncryptionPolicy'),
      ),
    ),
  );
}
