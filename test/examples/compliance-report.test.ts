// examples/compliance-report.ts against the demo data of `up --demo` (two sim hosts, the
// embedded key server), after an encryption, a crypto-shred (a locked VM), Secure Boot on
// one VM and a tag that needs CSV quoting: the CSV parses back (RFC 4180) to one row per
// VM, equal to what the API says, and the table shows the same.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { DemoPlatform } from '../support/examples.js';
import { runExample, runExampleOk, startDemoPlatform } from '../support/examples.js';

/** A strict RFC 4180 parser: CRLF records, quoted fields with doubled quotes. */
function parseCsv(text: string): string[][] {
  const records: string[][] = [];
  let record: string[] = [];
  let i = 0;
  while (i < text.length) {
    let field = '';
    if (text[i] === '"') {
      for (i++; ; i++) {
        if (i >= text.length) throw new Error('unterminated quoted field');
        if (text[i] === '"') {
          if (text[i + 1] !== '"') break;
          i++;
        }
        field += text[i];
      }
      i++; // the closing quote
    } else {
      while (i < text.length && text[i] !== ',' && text[i] !== '\r' && text[i] !== '\n') {
        if (text[i] === '"') throw new Error(`a quote inside an unquoted field at ${i}`);
        field += text[i++];
      }
    }
    record.push(field);
    if (text[i] === ',') {
      i++;
    } else if (text.startsWith('\r\n', i)) {
      records.push(record);
      record = [];
      i += 2;
    } else {
      throw new Error(`expected , or CRLF at ${i}: ${JSON.stringify(text.slice(i, i + 10))}`);
    }
  }
  if (record.length > 0) throw new Error('the last record does not end with CRLF');
  return records;
}

const HEADER = [
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

describe('example compliance-report', { concurrency: 1 }, () => {
  let demo: DemoPlatform;
  const TAG = 'team "blue", ops';
  before(async () => {
    demo = await startDemoPlatform({ kms: true });
    const api = demo.platform.api;
    // An encrypted VM, an encrypted VM whose key was destroyed (locked), Secure Boot on
    // another, and a tag with a comma and quotes.
    await api.run(api.encryptVm((await demo.vm('db-01')).id, {}));
    const web = await demo.vm('web-01');
    await api.run(api.encryptVm(web.id, {}));
    await api.cryptoShredVm(web.id, { confirm: 'web-01' });
    await api.updateVm((await demo.vm('web-02')).id, { secureBoot: true });
    await api.updateVm((await demo.vm('legacy-01')).id, { tags: ['demo', TAG] });
  });
  after(async () => {
    await demo?.close();
  });

  test('CSV: one row per VM, equal to the API state, properly quoted', async () => {
    const file = join(process.env.XDG_CONFIG_HOME ?? '', 'report.csv');
    const out = await runExampleOk('compliance-report', ['--csv', file], demo.credentials);
    assert.match(out, /CSV: .*report\.csv \(4 VMs\)/);
    const text = readFileSync(file, 'utf8');
    assert.ok(text.includes(`"demo, team ""blue"", ops"`), 'the tag field is quoted, its quotes doubled');
    const [header, ...rows] = parseCsv(text);
    assert.deepEqual(header, HEADER);
    const byName = new Map(rows.map((r) => [r[0], Object.fromEntries(HEADER.map((h, i) => [h, r[i]]))]));
    assert.equal(rows.length, 4);

    // The API's view, column by column.
    const api = demo.platform.api;
    const hosts = new Map((await api.listHosts()).map((h) => [h.id, h.name]));
    const providers = new Map((await api.listKeyProviders()).map((p) => [p.id, p.name]));
    for (const vm of await api.listVms()) {
      assert.deepEqual(
        byName.get(vm.name),
        {
          vm: vm.name,
          host: hosts.get(vm.hostId),
          state: vm.state,
          encrypted: String(vm.encryption !== null),
          keyProvider: vm.encryption ? providers.get(vm.encryption.providerId) : '',
          secureBoot: String(vm.config.secureBoot),
          vtpm: String(vm.config.vtpm === true),
          migrationEncryption: vm.encryption
            ? 'required'
            : (vm.config.migrationEncryption ?? 'opportunistic'),
          locked: String(vm.locked),
          lockedReason: vm.lockedReason ?? '',
          tags: vm.config.tags.join(', '),
        },
        vm.name,
      );
    }
    // And the rows that matter, spelled out.
    assert.deepEqual(
      [byName.get('db-01')?.encrypted, byName.get('db-01')?.keyProvider, byName.get('db-01')?.locked],
      ['true', 'embedded', 'false'],
    );
    assert.equal(byName.get('db-01')?.migrationEncryption, 'required');
    assert.equal(byName.get('web-01')?.locked, 'true');
    assert.match(byName.get('web-01')?.lockedReason ?? '', /^crypto-shredded: /);
    assert.deepEqual(
      [
        byName.get('legacy-01')?.encrypted,
        byName.get('legacy-01')?.keyProvider,
        byName.get('legacy-01')?.locked,
      ],
      ['false', '', 'false'],
    );
    assert.equal(byName.get('legacy-01')?.tags, `demo, ${TAG}`);
    assert.equal(byName.get('web-02')?.secureBoot, 'true');
    assert.equal(byName.get('legacy-01')?.migrationEncryption, 'opportunistic');
  });

  test('--csv - prints the same CSV on stdout; the table shows the same facts', async () => {
    const csv = await runExampleOk('compliance-report', ['--csv', '-'], demo.credentials);
    assert.equal(parseCsv(csv).length, 5);
    const table = await runExampleOk('compliance-report', [], demo.credentials);
    const lines = table.split('\n');
    assert.match(
      lines[0] ?? '',
      /^VM +HOST +STATE +ENCRYPTED +KEY PROVIDER +SECURE BOOT +VTPM +MIGRATION +LOCKED$/,
    );
    const line = (name: string): string[] =>
      (lines.find((l) => l.startsWith(`${name} `)) ?? '').split(/ {2,}/);
    assert.deepEqual(line('db-01').slice(3), ['yes', 'embedded', 'no', 'no', 'required', 'no']);
    assert.deepEqual(line('web-01').slice(3), ['yes', 'embedded', 'no', 'no', 'required', 'yes']);
    assert.deepEqual(line('legacy-01').slice(3), ['no', '-', 'no', 'no', 'opportunistic', 'no']);
    assert.deepEqual(line('web-02').slice(3), ['no', '-', 'yes', 'no', 'opportunistic', 'no']);
    assert.match(
      table,
      /4 VMs: 2 encrypted, 1 with Secure Boot, 1 locked\n {2}locked: web-01: crypto-shredded: /,
    );
  });

  test('a wrong option: exit 2, the usage and HS_ERR_INVALID_ARGUMENT, nothing on stdout', async () => {
    const r = await runExample('compliance-report', ['--html'], demo.credentials);
    assert.equal(r.code, 2);
    assert.equal(r.stdout, '');
    assert.match(
      r.stderr,
      /^compliance-report: Unknown option '--html'; usage: .*--csv FILE.* \[HS_ERR_INVALID_ARGUMENT\]\n$/,
    );
  });
});
