/**
 * A compliance report of every VM: encrypted or not and with which key provider, Secure
 * Boot, vTPM, how it migrates, whether it is locked — as a table, and as CSV.
 *
 * Shows: reading the inventory with the SDK's types (`Vm`, `Host`, `KeyProvider`) and
 * joining it: a VM's `encryption.providerId` names the key provider holding its KEK.
 *
 * Run:  npm run up -- --demo          (in another terminal: the manager, 2 hosts, demo VMs)
 *       node dist/examples/compliance-report.js                  the table on stdout
 *       node dist/examples/compliance-report.js --csv report.csv  the table, and CSV to report.csv
 *       node dist/examples/compliance-report.js --csv -           CSV on stdout instead of the table
 *
 * CSV per RFC 4180: a header line, CRLF line ends, fields with a comma, a quote or a line
 * break in double quotes (quotes doubled). Booleans are true/false.
 * Credentials: $HYPERSEAL_CREDENTIALS or ./.hyperseal/credentials.json (written by `up`).
 */
import { writeFileSync } from 'node:fs';
import type { ApiClient, Vm } from '../src/index.js';
import { HypersealError } from '../src/index.js';
import { options, runExample } from './lib.js';

/** One line of the report. */
interface Row {
  vm: string;
  host: string;
  state: string;
  encrypted: boolean;
  keyProvider: string;
  secureBoot: boolean;
  vtpm: boolean;
  migrationEncryption: string;
  locked: boolean;
  lockedReason: string;
  tags: string;
}

const COLUMNS: readonly (keyof Row)[] = [
  'vm',
  'host',
  'state',
  'encrypted',
  'keyProvider',
  'secureBoot',
  'vtpm',
  'migrationEncryption',
  'locked',
  'lockedReason',
  'tags',
];

await runExample('compliance-report', async (api) => {
  const { values } = options(
    { csv: { type: 'string' } },
    'node dist/examples/compliance-report.js [--csv FILE|-]',
  );
  const rows = await report(api);
  if (values.csv === '-') {
    process.stdout.write(toCsv(rows));
    return;
  }
  process.stdout.write(toTable(rows));
  if (values.csv !== undefined) {
    writeFileSync(values.csv, toCsv(rows));
    console.log(`\nCSV: ${values.csv} (${rows.length} VMs)`);
  }
});

async function report(api: ApiClient): Promise<Row[]> {
  const [vms, hosts] = await Promise.all([api.listAllVms(), api.listHosts()]);
  // Key provider names need crypto.manageKeyServers; without it the report shows ids.
  const providers = await api.listKeyProviders().catch((err: unknown) => {
    if (err instanceof HypersealError && err.code === 'HS_ERR_AUTH_FORBIDDEN') return [];
    throw err;
  });
  const hostName = new Map(hosts.map((h) => [h.id, h.name]));
  const providerName = new Map(providers.map((p) => [p.id, p.name]));
  return vms.map((vm: Vm): Row => ({
    vm: vm.name,
    host: hostName.get(vm.hostId) ?? vm.hostId,
    state: vm.state,
    encrypted: vm.encryption !== null,
    keyProvider: vm.encryption
      ? (providerName.get(vm.encryption.providerId) ?? vm.encryption.providerId)
      : '',
    secureBoot: vm.config.secureBoot,
    vtpm: vm.config.vtpm === true,
    // What the manager enforces: an encrypted VM always migrates encrypted.
    migrationEncryption: vm.encryption ? 'required' : (vm.config.migrationEncryption ?? 'opportunistic'),
    locked: vm.locked,
    lockedReason: vm.lockedReason ?? '',
    tags: vm.config.tags.join(', '),
  }));
}

/** RFC 4180: quote a field holding a comma, a double quote, CR or LF; double its quotes. */
function csvField(value: string | boolean): string {
  const s = String(value);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function toCsv(rows: readonly Row[]): string {
  const lines = [COLUMNS.join(','), ...rows.map((r) => COLUMNS.map((c) => csvField(r[c])).join(','))];
  return lines.map((l) => `${l}\r\n`).join('');
}

/** The table: the columns that fit a terminal, yes/no for booleans, '-' for none. */
function toTable(rows: readonly Row[]): string {
  const yes = (b: boolean): string => (b ? 'yes' : 'no');
  const header = [
    'VM',
    'HOST',
    'STATE',
    'ENCRYPTED',
    'KEY PROVIDER',
    'SECURE BOOT',
    'VTPM',
    'MIGRATION',
    'LOCKED',
  ];
  const cells = rows.map((r) => [
    r.vm,
    r.host,
    r.state,
    yes(r.encrypted),
    r.keyProvider || '-',
    yes(r.secureBoot),
    yes(r.vtpm),
    r.migrationEncryption,
    yes(r.locked),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] ?? '').length)));
  const line = (c: string[]): string =>
    c
      .map((x, i) => x.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  const locked = rows.filter((r) => r.locked);
  return [
    line(header),
    ...cells.map(line),
    '',
    `${rows.length} VMs: ${rows.filter((r) => r.encrypted).length} encrypted, ` +
      `${rows.filter((r) => r.secureBoot).length} with Secure Boot, ${locked.length} locked`,
    ...locked.map((r) => `  locked: ${r.vm}: ${r.lockedReason}`),
    '',
  ].join('\n');
}
