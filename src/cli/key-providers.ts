/**
 * `hyperseal key-provider …`: the KMIP key providers of a manager, over the REST API
 * (crypto.manageKeyServers). Providers are named by name or id. Exit codes as every API
 * command (docs/errors.md); `test` exits 6 when any server did not answer.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { HypersealError } from '../errors.js';
import type { KeyProvider } from '../sdk/api.gen.js';
import { ApiClient } from '../sdk/client.js';
import type { Parsed } from './args.js';
import { flag, hostPort, need, parse, str, usageError } from './args.js';
import { ExitCode, printResult, table } from './output.js';

const ADD = 'key-provider add --name N --server HOST[:PORT] … --ca CA.pem --cert CLIENT.pem --key CLIENT.key';
const ADD_CSR =
  'key-provider add-csr --name N --server HOST[:PORT] … --ca CA.pem [--common-name CN] [--key-type rsa|ec] [--csr-out FILE]';
const SET_CERT = 'key-provider set-cert PROVIDER --cert CLIENT.pem';
const SET_SERVERS = 'key-provider set-servers PROVIDER --server HOST[:PORT] … [--ca CA.pem]';

export const KEY_PROVIDER_HELP = `key providers (KMIP clusters VM keys come from; needs crypto.manageKeyServers)
  ${ADD}
      add a provider with a client certificate and key (the key is stored sealed)
  ${ADD_CSR}
      add a provider whose key the manager generates; prints the CSR for the key manager's CA
  ${SET_CERT}
      install the signed certificate (completes add-csr, or renews)
  key-provider list [--json] | key-provider show PROVIDER [--json]
  key-provider test PROVIDER [--json]      connect to every server (exit 6 if one does not answer)
  key-provider default PROVIDER            make it the default provider
  ${SET_SERVERS}
  key-provider remove PROVIDER             refused while VMs or policies use it
  (PROVIDER is a name or an id; --server is repeated, in failover order; port 5696 by default)`;

const VERBS = new Set([
  'list',
  'show',
  'add',
  'add-csr',
  'set-cert',
  'set-servers',
  'test',
  'default',
  'remove',
]);

const OPTIONS = {
  json: { type: 'boolean' },
  credentials: { type: 'string' },
  name: { type: 'string' },
  server: { type: 'string', multiple: true },
  ca: { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  'common-name': { type: 'string' },
  'key-type': { type: 'string' },
  'csr-out': { type: 'string' },
} as const;

function readPem(path: string, flagName: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw usageError(
      `cannot read --${flagName} ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
    );
  }
}

function servers(p: Parsed, usage: string): { host: string; port: number }[] {
  const v = p.values.server;
  const list = Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
  if (list.length === 0) throw usageError(`--server is required\nusage: hyperseal ${usage}`);
  return list.map((s) => hostPort(s, 5696));
}

async function resolveProvider(api: ApiClient, nameOrId: string | undefined): Promise<KeyProvider> {
  if (nameOrId === undefined || nameOrId === '') throw usageError('a key provider name or id is required');
  const all = await api.listKeyProviders();
  const found = all.find((k) => k.name === nameOrId) ?? all.find((k) => k.id === nameOrId);
  if (found === undefined) throw new HypersealError('HS_ERR_NOT_FOUND', `no key provider '${nameOrId}'`);
  return found;
}

function describe(k: KeyProvider): string {
  const cert = k.clientCertificate;
  const lines = [
    `${k.name}${k.isDefault ? ' (default)' : ''}  ${k.state}`,
    `  id          ${k.id}`,
    `  servers     ${k.servers.map((s) => `${s.host}:${s.port}`).join(', ')}`,
    `  identity    ${k.identity ?? '-'}`,
    `  client cert ${cert === null ? '-' : `${cert.subject}, until ${cert.notAfter}, sha256 ${cert.sha256}`}`,
    ...k.caCertificates.map(
      (c, i) => `  ${i === 0 ? 'CA         ' : '           '} ${c.subject}, until ${c.notAfter}`,
    ),
  ];
  if (k.csrPem !== null)
    lines.push('  CSR (have the key manager’s CA sign it, then set-cert):', k.csrPem.trimEnd());
  return lines.join('\n');
}

export async function keyProviderCommand(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  if (verb === undefined || !VERBS.has(verb)) {
    throw usageError(`unknown key-provider command '${verb ?? ''}'\n${KEY_PROVIDER_HELP}`);
  }
  const p = parse(rest, OPTIONS, KEY_PROVIDER_HELP);
  const json = flag(p, 'json');
  const api = ApiClient.fromCredentials(str(p, 'credentials'));
  try {
    switch (verb) {
      case 'list': {
        const all = await api.listKeyProviders();
        const warnings = all.flatMap((k) =>
          k.backup?.warning !== undefined && k.backup.warning !== null ? [k.backup.warning] : [],
        );
        const backupOf = (k: KeyProvider): string =>
          k.backup === undefined || k.backup.health === 'unknown'
            ? '-'
            : k.backup.lastBackupAt === null
              ? 'never'
              : `${new Date(k.backup.lastBackupAt).toISOString().slice(0, 16)}${k.backup.health === 'ok' ? '' : ' (stale)'}`;
        printResult(all, json, () =>
          all.length === 0
            ? 'no key providers (add one: hyperseal key-provider add …)'
            : [
                table([
                  ['NAME', 'DEFAULT', 'STATE', 'SERVERS', 'IDENTITY', 'CERT UNTIL', 'BACKUP', 'ID'],
                  ...all.map((k) => [
                    k.name,
                    k.isDefault ? 'yes' : '',
                    k.state,
                    k.servers.map((s) => `${s.host}:${s.port}`).join(','),
                    k.identity ?? '-',
                    k.clientCertificate?.notAfter.slice(0, 10) ?? '-',
                    backupOf(k),
                    k.id,
                  ]),
                ]),
                ...warnings.map((w) => `WARNING: ${w}`),
              ].join('\n'),
        );
        return ExitCode.ok;
      }
      case 'show': {
        const k = await resolveProvider(api, p.positionals[0]);
        const full = await api.getKeyProvider(k.id);
        printResult(full, json, () => describe(full));
        return ExitCode.ok;
      }
      case 'add': {
        const k = await api.createKeyProvider({
          name: need(p, 'name', ADD),
          servers: servers(p, ADD),
          caPem: readPem(need(p, 'ca', ADD), 'ca'),
          clientCertPem: readPem(need(p, 'cert', ADD), 'cert'),
          clientKeyPem: readPem(need(p, 'key', ADD), 'key'),
        });
        printResult(
          k,
          json,
          () => `added key provider ${k.name}${k.isDefault ? ' (default)' : ''} (${k.id})`,
        );
        return ExitCode.ok;
      }
      case 'add-csr': {
        const keyType = str(p, 'key-type');
        if (keyType !== undefined && keyType !== 'rsa' && keyType !== 'ec')
          throw usageError('--key-type is rsa or ec');
        const commonName = str(p, 'common-name');
        const k = await api.createKeyProvider({
          name: need(p, 'name', ADD_CSR),
          servers: servers(p, ADD_CSR),
          caPem: readPem(need(p, 'ca', ADD_CSR), 'ca'),
          csr: {
            ...(commonName !== undefined ? { commonName } : {}),
            ...(keyType !== undefined ? { keyType } : {}),
          },
        });
        const out = str(p, 'csr-out');
        if (out !== undefined && k.csrPem !== null) writeFileSync(out, k.csrPem, { mode: 0o644 });
        if (json) printResult(k, true, () => '');
        else if (out !== undefined) {
          process.stdout.write(
            `added key provider ${k.name} (${k.id}), awaiting its certificate; CSR in ${out}\n` +
              `have the key manager's CA sign it, then: hyperseal key-provider set-cert ${k.name} --cert FILE\n`,
          );
        } else {
          // The CSR alone on stdout (pipe it to a file); the next step on stderr.
          process.stdout.write(k.csrPem ?? '');
          process.stderr.write(
            `added key provider ${k.name} (${k.id}), awaiting its certificate: have the CSR above signed, then\n` +
              `  hyperseal key-provider set-cert ${k.name} --cert FILE\n`,
          );
        }
        return ExitCode.ok;
      }
      case 'set-cert': {
        const k = await resolveProvider(api, p.positionals[0]);
        const after = await api.setKeyProviderCertificate(k.id, {
          certPem: readPem(need(p, 'cert', SET_CERT), 'cert'),
        });
        printResult(
          after,
          json,
          () => `key provider ${after.name} is ${after.state} (identity ${after.identity ?? '-'})`,
        );
        return ExitCode.ok;
      }
      case 'set-servers': {
        const k = await resolveProvider(api, p.positionals[0]);
        const ca = str(p, 'ca');
        const after = await api.updateKeyProvider(k.id, {
          servers: servers(p, SET_SERVERS),
          ...(ca !== undefined ? { caPem: readPem(ca, 'ca') } : {}),
        });
        printResult(
          after,
          json,
          () => `key provider ${after.name}: ${after.servers.map((s) => `${s.host}:${s.port}`).join(', ')}`,
        );
        return ExitCode.ok;
      }
      case 'test': {
        const k = await resolveProvider(api, p.positionals[0]);
        const r = await api.testKeyProvider(k.id);
        printResult(r, json, () =>
          [
            `key provider ${r.name}: ${r.servers.filter((s) => s.ok).length} of ${r.servers.length} servers answered`,
            ...r.servers.map((s) =>
              s.ok
                ? `  ${s.address}  ok  ${s.latencyMs} ms  KMIP ${(s.versions ?? []).join(', ')}${s.vendor ? `  ${s.vendor}` : ''}`
                : `  ${s.address}  FAILED  ${s.error?.message ?? ''} [${s.error?.code ?? ''}]`,
            ),
          ].join('\n'),
        );
        return r.ok ? ExitCode.ok : ExitCode.unavailable;
      }
      case 'default': {
        const k = await resolveProvider(api, p.positionals[0]);
        const after = await api.setDefaultKeyProvider(k.id);
        printResult(after, json, () => `${after.name} is the default key provider`);
        return ExitCode.ok;
      }
      case 'remove': {
        const k = await resolveProvider(api, p.positionals[0]);
        await api.deleteKeyProvider(k.id);
        printResult({ removed: k.id, name: k.name }, json, () => `removed key provider ${k.name}`);
        return ExitCode.ok;
      }
      default:
        throw usageError(`unknown key-provider command '${verb ?? ''}'\n${KEY_PROVIDER_HELP}`);
    }
  } finally {
    api.close();
  }
}
