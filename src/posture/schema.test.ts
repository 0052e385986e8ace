/**
 * Posture files: a full file parses to the expected model; every refusal is
 * HS_ERR_POSTURE_INVALID naming the path (and the line); file references are resolved
 * against the posture file's directory.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { HypersealError } from '../errors.js';
import { parsePosture, validatePosture } from './schema.js';

const FULL = `version: 1
keyProviders:
  - name: corp-kms
    servers: ["kms1.example:5696", { host: kms2.example }]
    caFile: certs/ca.pem
    clientCertFile: certs/client.pem
    clientKeyFile: /etc/hyperseal/client-key.pem
    default: true
vms:
  - name: PCI web servers
    select: { namePattern: 'web-*', tag: pci, folder: '/prod/**', network: PCI }
    encryption: { policy: VM Encryption Policy }
    secureBoot: true
    vtpm: true
    migrationEncryption: required
  - select: { tag: lab }
    encryption: none
    secureBoot: { enabled: true, keySet: microsoft }
alertRules:
  - name: Secure Boot turned off
    severity: critical
    match: { types: [vm.secure-boot-disabled] }
    actions: { event: true, webhook: { url: 'https://siem.example/hook', secretFile: secrets/hook } }
syslogTargets:
  - { name: siem, host: 10.0.0.5, port: 6514, transport: tls, format: json, caFile: certs/siem-ca.pem }
`;

function refused(text: string, path: string, why: RegExp, line?: number): void {
  let caught: unknown;
  try {
    parsePosture(text, { file: 'p.yaml', baseDir: '/base' });
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof HypersealError, `expected a refusal for ${path}, got ${String(caught)}`);
  assert.equal(caught.code, 'HS_ERR_POSTURE_INVALID');
  assert.equal(caught.details?.path, path, caught.message);
  assert.match(caught.message, why);
  if (line !== undefined) {
    assert.equal(caught.details?.line, line, caught.message);
    assert.ok(caught.message.startsWith(`p.yaml:${line}: ${path} `), caught.message);
  }
}

void test('a full posture parses: selectors, settings, providers, rules, targets; paths resolved', () => {
  const p = parsePosture(FULL, { file: 'p.yaml', baseDir: '/base' });
  assert.equal(p.version, 1);
  assert.deepEqual(p.keyProviders?.[0], {
    key: 'keyProviders[0]',
    name: 'corp-kms',
    servers: [
      { host: 'kms1.example', port: 5696 },
      { host: 'kms2.example', port: 5696 },
    ],
    caFile: '/base/certs/ca.pem',
    clientCertFile: '/base/certs/client.pem',
    clientKeyFile: '/etc/hyperseal/client-key.pem',
    default: true,
  });
  assert.deepEqual(p.vms?.[0], {
    key: 'vms[0]',
    name: 'PCI web servers',
    select: { namePattern: 'web-*', tag: 'pci', folder: '/prod/**', network: 'PCI' },
    encryption: { policy: 'VM Encryption Policy' },
    secureBoot: { enabled: true },
    vtpm: true,
    migrationEncryption: 'required',
  });
  assert.deepEqual(p.vms?.[1]?.encryption, 'none');
  assert.deepEqual(p.vms?.[1]?.secureBoot, { enabled: true, keySet: 'microsoft' });
  assert.equal(p.alertRules?.[0]?.actions.webhook?.secretFile, '/base/secrets/hook');
  assert.equal(p.alertRules?.[0]?.enabled, true);
  assert.equal(p.syslogTargets?.[0]?.caFile, '/base/certs/siem-ca.pem');
  assert.equal(p.syslogTargets?.[0]?.format, 'json');
});

void test('wrong types and unknown keys are refused with their path and line', () => {
  refused(
    'version: 1\nvms:\n  - select: { namePattern: a }\n    vtpm: true\n  - select:\n      tag: 42\n    vtpm: true\n',
    'vms[1].select.tag',
    /must be a string, got a number/,
    6,
  );
  refused(
    'version: 1\nvms:\n  - select: { tag: pci }\n    secureBot: true\n',
    'vms[0].secureBot',
    /is not a known key here \(allowed: name, select, encryption, secureBoot, vtpm, migrationEncryption\)/,
    4,
  );
  refused('version: 1\nvmz: []\n', 'vmz', /is not a known key/, 2);
  refused('vms: []\n', 'version', /is required/);
  refused('version: 2\n', 'version', /must be 1, got "2"/, 1);
  refused('version: 1\nvms:\n  - vtpm: true\n', 'vms[0].select', /is required/, 3);
  refused('version: 1\nvms:\n  - select: {}\n    vtpm: true\n', 'vms[0].select', /at least one of/);
  refused('version: 1\nvms:\n  - select: { tag: a }\n', 'vms[0]', /sets nothing/);
  refused(
    'version: 1\nvms:\n  - select: { tag: a }\n    migrationEncryption: sometimes\n',
    'vms[0].migrationEncryption',
    /must be one of disabled, opportunistic, required, got "sometimes"/,
    4,
  );
  refused(
    'version: 1\nvms:\n  - select: { tag: a }\n    encryption: { policy: P }\n    migrationEncryption: disabled\n',
    'vms[0].migrationEncryption',
    /encrypted VMs always migrate encrypted/,
  );
  refused(
    'version: 1\nvms:\n  - select: { tag: a }\n    encryption: yes-please\n',
    'vms[0].encryption',
    /must be "none" or \{ policy: NAME \}/,
  );
  refused(
    'version: 1\nvms:\n  - select: { folder: prod }\n    vtpm: true\n',
    'vms[0].select.folder',
    /is not a folder path/,
  );
  refused(
    'version: 1\nvms:\n  - select: { namePattern: "web[1]" }\n    vtpm: true\n',
    'vms[0].select.namePattern',
    /is not a name glob/,
  );
  refused(
    'version: 1\nvms:\n  - select: { tag: a }\n    secureBoot: { enabled: false, keySet: microsoft }\n',
    'vms[0].secureBoot.keySet',
    /only meaningful with enabled: true/,
  );
});

void test('key providers, alert rules and syslog targets are checked too', () => {
  refused(
    'version: 1\nkeyProviders:\n  - { name: k, servers: ["h:99999"] }\n',
    'keyProviders[0].servers[0]',
    /between 1 and 65535/,
  );
  refused(
    'version: 1\nkeyProviders:\n  - { name: k, servers: [h], clientCertFile: c.pem }\n',
    'keyProviders[0].clientKeyFile',
    /is required with clientCertFile/,
  );
  refused(
    'version: 1\nkeyProviders:\n  - { name: a, servers: [h], default: true }\n  - { name: b, servers: [h], default: true }\n',
    'keyProviders[1].default',
    /only one key provider can be the default/,
  );
  refused(
    'version: 1\nkeyProviders:\n  - { name: a, servers: [h] }\n  - { name: a, servers: [h] }\n',
    'keyProviders',
    /names "a" twice \(keyProviders\[0\] and keyProviders\[1\]\)/,
  );
  // The manager's own rule validation, with the posture path in front.
  refused(
    'version: 1\nalertRules:\n  - name: r\n    severity: critical\n    match: { types: [vm.decrpyted] }\n',
    'alertRules[0].match.types[0]',
    /matches no event type/,
  );
  refused(
    'version: 1\nalertRules:\n  - name: r\n    severity: loud\n    match: {}\n',
    'alertRules[0].severity',
    /must be one of/,
  );
  refused(
    'version: 1\nalertRules:\n  - name: r\n    severity: info\n    match: {}\n    actions: { webhook: { url: "https://x.example/" } }\n',
    'alertRules[0].actions.webhook.secretFile',
    /is required/,
  );
  refused(
    'version: 1\nsyslogTargets:\n  - { name: s, host: h, port: 514, transport: tls }\n',
    'syslogTargets[0].caFile',
    /is required with transport tls/,
  );
  refused(
    'version: 1\nsyslogTargets:\n  - { name: s, host: h, port: "514", transport: udp }\n',
    'syslogTargets[0].port',
    /must be a whole number, got a string/,
  );
});

void test('broken YAML and duplicate keys are refused with their line', () => {
  for (const [text, line] of [
    ['version: 1\nvms: a: b\nsyslogTargets: []\n', 2],
    ['version: 1\nversion: 1\n', 2],
  ] as const) {
    assert.throws(
      () => parsePosture(text, { file: 'p.yaml', baseDir: '/' }),
      (err: unknown) =>
        err instanceof HypersealError &&
        err.code === 'HS_ERR_POSTURE_INVALID' &&
        err.details?.line === line &&
        err.message.startsWith(`p.yaml:${line}: not valid YAML`),
    );
  }
  assert.throws(
    () => validatePosture([], '/'),
    (err: unknown) => err instanceof HypersealError && err.code === 'HS_ERR_POSTURE_INVALID',
  );
});

void test('examples/posture-full.yaml and the full example of docs/posture.md are valid, and the same', () => {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
  const example = readFileSync(join(root, 'examples', 'posture-full.yaml'), 'utf8');
  const fromExample = parsePosture(example, { file: 'posture.yaml', baseDir: '/x' });
  assert.equal(fromExample.vms?.length, 3);
  assert.equal(fromExample.keyProviders?.[0]?.clientKeyFile, '/x/pki/hyperseal-manager.key');
  const doc = readFileSync(join(root, 'docs', 'posture.md'), 'utf8');
  const block = /## A full example[\s\S]*?```yaml\n([\s\S]*?)```/.exec(doc)?.[1];
  assert.ok(block !== undefined, 'docs/posture.md has its full example');
  assert.deepEqual(parsePosture(block, { file: 'posture.md', baseDir: '/x' }), fromExample);
});
