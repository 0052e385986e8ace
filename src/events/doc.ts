/**
 * docs/events.md is generated from the event type registry (model.ts), with one example
 * per type rendered by the same code that renders real events, so the reference cannot
 * drift: a test compares the file with this output. Regenerate: `npm run docs:events`.
 */
import { createEvent } from './create.js';
import type { Change, EventType, ObjectKind } from './model.js';
import { EventTypes } from './model.js';

/** Example changes for the types where a bare object would say little. */
const EXAMPLE_CHANGES: Partial<Record<EventType, Change[]>> = {
  'vm.reconfigured': [
    { path: 'memoryMiB', from: 6144, to: 10240 },
    { path: 'nics[nic0].network', from: 'PCI', to: 'Non-PCI' },
  ],
  'vm.powered-on': [{ path: 'state', from: 'stopped', to: 'running' }],
  'vm.powered-off': [{ path: 'state', from: 'running', to: 'stopped' }],
  'host.revoked': [{ path: 'state', from: 'connected', to: 'revoked' }],
  'host.disconnected': [{ path: 'state', from: 'connected', to: 'disconnected' }],
  'user.roles-changed': [{ path: 'roles', from: ['Read-only'], to: ['Administrator'] }],
};

function exampleObject(type: string): { kind: ObjectKind; id: string; name: string } {
  const kind = type.split('.')[0] ?? 'vm';
  const known: Record<string, { kind: ObjectKind; name: string }> = {
    vm: { kind: 'vm', name: 'web-01' },
    host: { kind: 'host', name: 'esx-01' },
    user: { kind: 'user', name: 'ops@local' },
    role: { kind: 'role', name: 'Auditors' },
    network: { kind: 'network', name: 'PCI' },
    access: { kind: 'api', name: 'POST /vms' },
    kms: { kind: 'kms-provider', name: 'primary' },
    key: { kind: 'key', name: 'kek-web-01' },
    audit: { kind: 'event-log', name: 'events' },
    alert: { kind: 'alert-rule', name: 'PCI NIC moved out of PCI' },
    syslog: { kind: 'syslog-target', name: 'siem-01' },
  };
  const k = known[kind] ?? { kind: 'vm' as ObjectKind, name: 'web-01' };
  return { kind: k.kind, id: '6f1c…', name: k.name };
}

export function renderEventsDoc(): string {
  const lines: string[] = [
    '# Events',
    '',
    'Every change and state change in Hyperseal is one event: who (`user`, `sourceIp`), what',
    '(`type`, `object`), from which value to which (`changes: [{path, from, to}]`), the',
    '`result`, and a sentence a person can act on. Events are appended to a hash chain',
    '(`prevHash`, `hash`; `hyperseal events verify`), streamed to syslog targets, and',
    'matched by alert rules. Paths name list items by key, not position',
    '(`nics[nic0].network`); secrets are redacted by type and name (`[redacted]`).',
    '',
    'This file is generated from the registry in `src/events/model.ts`',
    '(`npm run docs:events`); a test keeps the two in step.',
    '',
    '| type | severity | meaning |',
    '| --- | --- | --- |',
  ];
  const types = Object.keys(EventTypes).sort() as EventType[];
  for (const t of types)
    lines.push(`| \`${t}\` | ${EventTypes[t].severity} | ${EventTypes[t].description} |`);
  lines.push(
    '',
    '## Queries, streams and export',
    '',
    '- `GET /api/v1/events?type=&objectId=&user=&since=&until=&text=&limit=` (newest first);',
    '  CLI `hyperseal event list --type vm.reconfigured --since 2026-11-28T10:00:00Z`.',
    '- `GET /api/v1/events/stream?afterSeq=N` (server-sent events; replays after N, then live);',
    '  CLI `hyperseal events tail -f`.',
    '- `GET /api/v1/events/export` (JSON lines, oldest first); CLI `hyperseal events export`.',
    '- `GET /api/v1/events/verify` checks the hash chain and names the first altered, missing',
    '  or reordered event; CLI `hyperseal events verify` (exit 5 when broken).',
    '',
    '## Syslog',
    '',
    'Targets (`POST /api/v1/syslog-targets`, CLI `hyperseal syslog add --name siem --host H',
    '--port 6514 --transport tls --ca ca.pem`) receive every event as RFC 5424 with the event',
    'as structured data (`[hyperseal@32473 id=… type=… seq=… hash=…]`, one SD parameter per',
    'change), or as JSON lines or OCSF. TCP and TLS use octet-counted framing (RFC 6587, RFC',
    '5425); UDP splits long events into numbered parts. Each target follows the event store by',
    'sequence number through a durable on-disk queue: a collector that is down makes the queue',
    'grow and it drains in order when the collector returns; a manager crash re-queues from the',
    'store. Around a reconnect a few records may be sent twice; each carries its event id.',
    '`PATCH /api/v1/syslog-targets/{id}` (CLI `hyperseal syslog set ID --port 6514 …`) changes a',
    'target in place: it keeps its queue and its place in the store, so events held while the',
    'old collector was unreachable go to the new one.',
    '',
    '## Alert rules',
    '',
    'A rule (`POST /api/v1/alert-rules`, CLI `hyperseal alert add --file rule.json`) matches',
    'event types (globs), object kinds, the result and changes, and then raises an',
    "`alert.raised` event (at the rule's severity, so it reaches syslog too) and/or calls a",
    'webhook whose body is signed (`X-Hyperseal-Signature: sha256=HMAC(secret, timestamp.body)`).',
    'The webhook secret is sealed in the database (AES-256-GCM under a key derived from the',
    "manager's master key, bound to the rule's id) and shown nowhere. `PATCH /api/v1/alert-rules/{id}`",
    '(CLI `hyperseal alert set ID --disable`, `--enable`, `--severity S`, `--file rule.json`)',
    'changes a rule in one step; a webhook sent without its secret, or with `[redacted]` as',
    'the API shows it, keeps the current secret while its URL keeps its origin (scheme, host,',
    'port); a webhook moved to another origin needs its secret again. The classic PCI rule:',
    '',
    '```json',
    JSON.stringify(
      {
        name: 'PCI NIC moved out of PCI',
        severity: 'critical',
        match: {
          types: ['vm.reconfigured'],
          changes: [{ path: 'nics[*].network', from: { glob: 'PCI*' }, to: { notGlob: 'PCI*' } }],
        },
        actions: {
          event: true,
          webhook: { url: 'https://soar.example/hooks/hyperseal', secret: 'at-least-16-chars' },
        },
      },
      null,
      2,
    ),
    '```',
    '',
    'Value matches: `{ "glob": "PCI*" }`, `{ "notGlob": … }`, `{ "equals": <JSON> }`,',
    '`{ "exists": true }`. An alert never triggers rules itself.',
  );
  lines.push('', '## Examples', '');
  for (const t of types) {
    const e = createEvent(
      {
        type: t,
        user: 'ops@local',
        sourceIp: '192.0.2.10',
        object: exampleObject(t),
        changes: EXAMPLE_CHANGES[t] ?? [],
      },
      { now: () => new Date('2026-01-01T12:00:00.000Z'), uuid: () => '00000000-0000-4000-8000-000000000000' },
    );
    lines.push(`### \`${t}\``, '', `> ${e.message}`, '');
  }
  return lines.join('\n');
}
