/**
 * The CLI over the REST API (PowerCLI's place): login, hosts, VMs, tasks, events.
 * Every read command takes --json; power actions wait for their task with a progress
 * bar on stderr (unless --no-wait); failures exit with the code of the error's status.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { HypersealError } from '../errors.js';
import type {
  AlertRuleCreate,
  AlertRuleUpdate,
  Event,
  ListEventsQuery,
  SyslogTargetCreate,
  SyslogTargetUpdate,
  Task,
  Vm,
  VmCreate,
  VmPatch,
} from '../sdk/api.gen.js';
import { ApiClient } from '../sdk/client.js';
import { flag, int, need, parse, str, usageError } from './args.js';
import { printResult, table } from './output.js';
import { hostSecureBootCommand } from './secure-boot.js';

/** What the CLI shows of a host's facts (the API types them as unknown: each agent reports its own). */
type HostFacts = { accel?: string; qemuVersion?: string | null; uefiSecureBoot?: string } | null;
export const INVENTORY_HELP = `inventory commands (credentials: --credentials FILE, $HYPERSEAL_CREDENTIALS, ./.hyperseal/credentials.json)
  login --manager URL --ca CA.pem (--token TOKEN | --user NAME with $HYPERSEAL_PASSWORD)
  host list [--json]
  vm list [--search TEXT] [--tag T] [--json] | vm show VM [--json]
  vm create --name N [--host ID] [--cpus N] [--memory MIB] [--firmware efi|bios] [--network NAME …] [--disk MIB …] [--tag T …] [--folder /PATH]
  vm power-on|power-off|shutdown|reset VM [--no-wait] [--json]
  vm reconfigure VM [--memory MIB] [--cpus N] [--name N] [--tag T …]
  vm set VM [--secure-boot on|off] [--key-set NAME|microsoft] [--vtpm on|off]
         [--migration-encryption disabled|opportunistic|required] [--folder /PATH ('' : none)]
  vm migrate VM --to HOST [--no-wait] [--json]   (live; encrypted per the VM's migration encryption)
  vm console VM
  vm delete VM
  vm create … --encryption-policy P [--accept-no-backup]   (a new encrypted VM)
  vm encrypt VM [--policy P] [--accept-no-backup] | vm decrypt VM | vm rekey VM [--deep] [--policy P]
  vm clone VM --name NEW | vm unlock VM | vm crypto-shred VM --confirm VM-NAME
  encryption-policy list | create --name N [--provider ID] [--description D] | remove P
  encryption-policy apply P (--name-pattern 'web-*' | --tag T) [--accept-no-backup]
      --accept-no-backup: encrypt the first VM although the embedded key server was never backed up
  task list [--json] | task wait ID
  event list [--type T] [--object VM] [--user U] [--text T] [--since ISO] [--limit N] [--json]
  events verify | events tail [-f] [--json] | events export > events.jsonl
  syslog add --name N --host H --port P [--transport udp|tcp|tls] [--format rfc5424|json|ocsf] [--ca CA.pem] [--history]
  syslog list | syslog remove ID
  syslog set ID [--name N] [--host H] [--port P] [--transport T] [--format F] [--ca CA.pem]
  alert add --file RULE.json | alert list | alert remove ID
  alert set ID [--enable | --disable] [--severity S] [--name N] [--file FIELDS.json]
      (ID may be the name; a webhook in FIELDS.json without its secret keeps the current one)
  (VM is a name or an id)`;

const common = { json: { type: 'boolean' }, credentials: { type: 'string' } } as const;

function client(p: ReturnType<typeof parse>): ApiClient {
  return ApiClient.fromCredentials(str(p, 'credentials'));
}

async function resolveVm(api: ApiClient, nameOrId: string | undefined): Promise<Vm> {
  if (nameOrId === undefined) throw usageError('a VM name or id is required');
  const byName = await api.listVms({ name: nameOrId });
  if (byName[0] !== undefined) return byName[0];
  return api.getVm(nameOrId);
}

function progressBar(t: Task): void {
  if (!process.stderr.isTTY) return;
  const width = 30;
  const filled = Math.round((t.progress / 100) * width);
  process.stderr.write(
    `\r${t.kind} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(t.progress).padStart(3)}% ${t.state}   `,
  );
  if (t.state === 'succeeded' || t.state === 'failed') process.stderr.write('\n');
}

async function finish(api: ApiClient, task: Task, json: boolean): Promise<number> {
  const done = await api.waitTask(task.id, { onProgress: progressBar });
  printResult(done, json, () => `${done.kind} ${done.state}${done.error ? `: ${done.error.message}` : ''}`);
  if (done.state === 'failed' && done.error) {
    throw new HypersealError(done.error.code as HypersealError['code'], done.error.message);
  }
  return 0;
}

function vmRow(v: Vm): (string | number)[] {
  return [
    v.name,
    v.state + (v.simulated ? ' (simulated)' : ''),
    v.config.cpus,
    `${v.config.memoryMiB} MiB`,
    v.config.firmware,
    v.encryption === null ? '-' : v.locked ? 'LOCKED' : 'yes',
    v.config.tags.join(','),
  ];
}

export async function loginCommand(argv: string[]): Promise<number> {
  const usage = 'hyperseal login --manager URL --ca CA.pem (--token TOKEN | --user NAME) [--out FILE]';
  const p = parse(
    argv,
    {
      manager: { type: 'string' },
      ca: { type: 'string' },
      token: { type: 'string' },
      user: { type: 'string' },
      out: { type: 'string' },
    },
    usage,
  );
  const managerUrl = need(p, 'manager', usage);
  const caPath = resolve(need(p, 'ca', usage));
  const caPem = readFileSync(caPath);
  let token = str(p, 'token');
  if (token === undefined) {
    const user = need(p, 'user', usage);
    const password = process.env.HYPERSEAL_PASSWORD;
    if (!password) throw usageError('set HYPERSEAL_PASSWORD (never pass a password on the command line)');
    const anon = new ApiClient({ managerUrl, caPem });
    try {
      const session = await anon.login({ user, password });
      // A session is for browsers; the CLI keeps a named API token instead.
      const asSession = new ApiClient({ managerUrl, caPem, session: session.session });
      try {
        token = (await asSession.createToken({ name: `cli-${Date.now()}` })).token;
        // The session has served its purpose: end it rather than leave it valid for 12 hours.
        await asSession.logout();
      } finally {
        asSession.close();
      }
    } finally {
      anon.close();
    }
  }
  const api = new ApiClient({ managerUrl, caPem, token });
  try {
    const me = await api.getSession();
    const out =
      str(p, 'out') ??
      join(process.env.XDG_CONFIG_HOME ?? join(homedir(), '.config'), 'hyperseal', 'credentials.json');
    mkdirSync(dirname(out), { recursive: true, mode: 0o700 });
    writeFileSync(out, JSON.stringify({ managerUrl, caPath, token }, null, 2) + '\n', { mode: 0o600 });
    process.stdout.write(`logged in to ${managerUrl} as ${me.user}; credentials in ${out}\n`);
  } finally {
    api.close();
  }
  return 0;
}

/** Key-safety warnings for listing footers (docs/key-safety.md); none when unreadable. */
async function keySafetyWarnings(api: ApiClient): Promise<string[]> {
  return (await api.getKeySafety().catch(() => ({ warnings: [] }))).warnings;
}

export async function hostCommand(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  if (verb === 'secure-boot') return hostSecureBootCommand(rest);
  const p = parse(rest, common, 'hyperseal host list [--json]');
  if (verb !== 'list') throw usageError(`unknown host command '${verb ?? ''}'\n${INVENTORY_HELP}`);
  const api = client(p);
  try {
    const hosts = await api.listHosts();
    const safety = flag(p, 'json') ? undefined : await keySafetyWarnings(api);
    printResult(hosts, flag(p, 'json'), () =>
      [
        table([
          ['NAME', 'STATE', 'ADDRESS', 'ACCEL', 'QEMU', 'UEFI SB', 'ID'],
          ...hosts.map((h) => {
            const facts = h.facts as HostFacts;
            return [
              h.name + (h.simulated ? ' (simulated)' : ''),
              h.state,
              h.address,
              facts?.accel ?? '-',
              facts?.qemuVersion ?? '-',
              facts?.uefiSecureBoot ?? '-',
              h.id,
            ];
          }),
        ]),
        ...(safety ?? []).map((w) => `WARNING: ${w}`),
      ].join('\n'),
    );
  } finally {
    api.close();
  }
  return 0;
}

export async function vmCommand(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const p = parse(
    rest,
    {
      ...common,
      name: { type: 'string' },
      host: { type: 'string' },
      cpus: { type: 'string' },
      memory: { type: 'string' },
      firmware: { type: 'string' },
      network: { type: 'string', multiple: true },
      disk: { type: 'string', multiple: true },
      tag: { type: 'string', multiple: true },
      search: { type: 'string' },
      'no-wait': { type: 'boolean' },
      'encryption-policy': { type: 'string' },
      'accept-no-backup': { type: 'boolean' },
      policy: { type: 'string' },
      deep: { type: 'boolean' },
      confirm: { type: 'string' },
      'secure-boot': { type: 'string' },
      'key-set': { type: 'string' },
      vtpm: { type: 'string' },
      to: { type: 'string' },
      'migration-encryption': { type: 'string' },
      folder: { type: 'string' },
    },
    INVENTORY_HELP,
  );
  const json = flag(p, 'json');
  const api = client(p);
  const run = async (started: Promise<Task>): Promise<number> => {
    const task = await started;
    if (flag(p, 'no-wait')) {
      printResult(task, json, () => task.id);
      return 0;
    }
    return finish(api, task, json);
  };
  const list = (name: string): string[] => {
    const v = p.values[name];
    return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
  };
  try {
    switch (verb) {
      case 'list': {
        const tags = p.values.tag;
        const tag = Array.isArray(tags) ? tags.find((t): t is string => typeof t === 'string') : undefined;
        const search = str(p, 'search');
        // Every VM, a page at a time (the API answers at most 10,000 per call).
        const vms = await api.listAllVms({
          ...(tag !== undefined ? { tag } : {}),
          ...(search !== undefined ? { search } : {}),
        });
        // Footer: key-safety warnings (e.g. the key server holding these VMs' keys has no backup).
        const safety =
          json || !vms.some((v) => v.encryption !== null) ? undefined : await keySafetyWarnings(api);
        printResult(vms, json, () =>
          [
            table([['NAME', 'STATE', 'CPUS', 'MEMORY', 'FIRMWARE', 'ENCRYPTED', 'TAGS'], ...vms.map(vmRow)]),
            ...(safety ?? []).map((w) => `WARNING: ${w}`),
          ].join('\n'),
        );
        return 0;
      }
      case 'show': {
        const vm = await resolveVm(api, p.positionals[0]);
        printResult(vm, json, () => JSON.stringify(vm, null, 2));
        return 0;
      }
      case 'create': {
        const cpus = int(p, 'cpus');
        const memoryMiB = int(p, 'memory');
        const firmware = str(p, 'firmware');
        if (firmware !== undefined && firmware !== 'efi' && firmware !== 'bios')
          throw usageError('--firmware is efi or bios');
        let datastoreId: string | undefined;
        const disks = list('disk');
        if (disks.length > 0) {
          const ds = await api.listDatastores();
          const host = str(p, 'host');
          datastoreId = (host === undefined ? ds[0] : ds.find((d) => d.hostId === host))?.id;
          if (datastoreId === undefined) throw usageError('no datastore for the disks; is a host joined?');
        }
        const [hostId, folder, encryptionPolicyId] = ['host', 'folder', 'encryption-policy'].map((k) =>
          str(p, k),
        );
        const body: VmCreate = {
          name: need(p, 'name', 'vm create --name N'),
          nics: list('network').map((network, i) => ({ id: `nic${i}`, network })),
          tags: list('tag'),
        };
        if (hostId !== undefined) body.hostId = hostId;
        if (cpus !== undefined) body.cpus = cpus;
        if (memoryMiB !== undefined) body.memoryMiB = memoryMiB;
        if (firmware !== undefined) body.firmware = firmware;
        if (datastoreId !== undefined)
          body.disks = disks.map((size, i) => ({ id: `disk${i}`, sizeMiB: Number(size), datastoreId }));
        if (folder !== undefined) body.folder = folder;
        if (encryptionPolicyId !== undefined) body.encryptionPolicyId = encryptionPolicyId;
        if (flag(p, 'accept-no-backup')) body.acceptNoBackup = true;
        const vm = await api.createVm(body);
        printResult(vm, json, () => `created VM ${vm.name} (${vm.id})${vm.encryption ? ', encrypted' : ''}`);
        return 0;
      }
      case 'encrypt': {
        const vm = await resolveVm(api, p.positionals[0]);
        const policy = str(p, 'policy');
        return await run(
          api.encryptVm(vm.id, {
            ...(policy === undefined ? {} : { policyId: policy }),
            ...(flag(p, 'accept-no-backup') ? { acceptNoBackup: true } : {}),
          }),
        );
      }
      case 'decrypt':
        return await run(api.decryptVm((await resolveVm(api, p.positionals[0])).id));
      case 'rekey': {
        const policy = str(p, 'policy');
        return await run(
          api.rekeyVm((await resolveVm(api, p.positionals[0])).id, {
            deep: flag(p, 'deep'),
            ...(policy !== undefined ? { policyId: policy } : {}),
            ...(flag(p, 'accept-no-backup') ? { acceptNoBackup: true } : {}),
          }),
        );
      }
      case 'clone':
        return await run(
          api.cloneVm((await resolveVm(api, p.positionals[0])).id, {
            name: need(p, 'name', 'vm clone VM --name NEW'),
          }),
        );
      case 'unlock': {
        const vm = await resolveVm(api, p.positionals[0]);
        const after = await api.unlockVm(vm.id);
        printResult(after, json, () => `VM ${after.name} is unlocked: its host holds its key`);
        return 0;
      }
      case 'crypto-shred': {
        const vm = await resolveVm(api, p.positionals[0]);
        const after = await api.cryptoShredVm(vm.id, {
          confirm: need(p, 'confirm', 'vm crypto-shred VM --confirm VM-NAME'),
        });
        printResult(after, json, () => `VM ${after.name}'s key was destroyed: its data is unrecoverable`);
        return 0;
      }
      case 'migrate': {
        const vm = await resolveVm(api, p.positionals[0]);
        const to = need(p, 'to', 'vm migrate VM --to HOST');
        const hosts = await api.listHosts();
        const host = hosts.find((h) => h.name === to) ?? hosts.find((h) => h.id === to);
        if (host === undefined) throw new HypersealError('HS_ERR_NOT_FOUND', `no host named ${to}`);
        return await run(api.migrateVm(vm.id, { hostId: host.id }));
      }
      case 'power-on':
      case 'power-off':
      case 'shutdown':
      case 'reset': {
        const vm = await resolveVm(api, p.positionals[0]);
        const task = await (verb === 'power-on'
          ? api.powerOnVm(vm.id)
          : verb === 'power-off'
            ? api.powerOffVm(vm.id)
            : verb === 'shutdown'
              ? api.shutdownVm(vm.id)
              : api.resetVm(vm.id));
        if (flag(p, 'no-wait')) {
          printResult(task, json, () => task.id);
          return 0;
        }
        return await finish(api, task, json);
      }
      case 'set': {
        const vm = await resolveVm(api, p.positionals[0]);
        const onOff = (name: string): boolean | undefined => {
          const v = str(p, name);
          if (v === undefined) return undefined;
          if (v !== 'on' && v !== 'off') throw usageError(`--${name} is on or off`);
          return v === 'on';
        };
        const secureBoot = onOff('secure-boot');
        const vtpm = onOff('vtpm');
        const keySetName = str(p, 'key-set');
        const keySet =
          keySetName === undefined
            ? undefined
            : keySetName === 'microsoft'
              ? null
              : (await api.getSecureBootKeySet(keySetName)).id;
        const migrationEncryption = str(p, 'migration-encryption');
        if (
          migrationEncryption !== undefined &&
          !['disabled', 'opportunistic', 'required'].includes(migrationEncryption)
        ) {
          throw usageError('--migration-encryption is disabled, opportunistic or required');
        }
        const folder = str(p, 'folder');
        const patch: VmPatch = {
          ...(migrationEncryption !== undefined
            ? { migrationEncryption: migrationEncryption as NonNullable<VmPatch['migrationEncryption']> }
            : {}),
          ...(secureBoot !== undefined ? { secureBoot } : {}),
          ...(vtpm !== undefined ? { vtpm } : {}),
          ...(keySet !== undefined ? { secureBootKeySet: keySet } : {}),
          ...(folder !== undefined ? { folder: folder || null } : {}),
        };
        if (Object.keys(patch).length === 0)
          throw usageError(
            'nothing to set: give --secure-boot, --key-set, --vtpm, --migration-encryption or --folder',
          );
        const after = await api.updateVm(vm.id, patch);
        printResult(
          after,
          json,
          () =>
            `VM ${after.name}: secure boot ${after.config.secureBoot ? 'on' : 'off'}, migration encryption ${after.config.migrationEncryption ?? 'opportunistic'}${after.pendingRestart ? ' (applies at the next power-on)' : ''}`,
        );
        return 0;
      }
      case 'reconfigure': {
        const vm = await resolveVm(api, p.positionals[0]);
        const cpus = int(p, 'cpus');
        const memoryMiB = int(p, 'memory');
        const tags = list('tag');
        const name = str(p, 'name');
        const patch: VmPatch = {
          ...(name !== undefined ? { name } : {}),
          ...(cpus !== undefined ? { cpus } : {}),
          ...(memoryMiB !== undefined ? { memoryMiB } : {}),
          ...(tags.length > 0 ? { tags } : {}),
        };
        if (Object.keys(patch).length === 0)
          throw usageError('nothing to change: give --memory, --cpus, --name or --tag');
        const after = await api.updateVm(vm.id, patch);
        printResult(
          after,
          json,
          () =>
            `reconfigured VM ${after.name}${after.pendingRestart ? ' (hardware changes apply at the next power-on)' : ''}`,
        );
        return 0;
      }
      case 'console': {
        const vm = await resolveVm(api, p.positionals[0]);
        const c = await api.getVmConsole(vm.id, { offset: 0 });
        process.stdout.write(c.data);
        return 0;
      }
      case 'delete': {
        const vm = await resolveVm(api, p.positionals[0]);
        await api.deleteVm(vm.id);
        printResult({ deleted: vm.id }, json, () => `deleted VM ${vm.name}`);
        return 0;
      }
      default:
        throw usageError(`unknown vm command '${verb ?? ''}'\n${INVENTORY_HELP}`);
    }
  } finally {
    api.close();
  }
}

export async function taskCommand(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const p = parse(rest, common, INVENTORY_HELP);
  const api = client(p);
  try {
    if (verb === 'list') {
      const tasks = await api.listTasks();
      printResult(tasks, flag(p, 'json'), () =>
        table([
          ['ID', 'KIND', 'STATE', 'PROGRESS', 'CREATED'],
          ...tasks.map((t) => [t.id, t.kind, t.state, `${t.progress}%`, new Date(t.createdAt).toISOString()]),
        ]),
      );
      return 0;
    }
    if (verb === 'wait') {
      const id = p.positionals[0];
      if (id === undefined) throw usageError('task wait ID');
      return await finish(api, await api.getTask(id), flag(p, 'json'));
    }
    throw usageError(`unknown task command '${verb ?? ''}'\n${INVENTORY_HELP}`);
  } finally {
    api.close();
  }
}

export async function eventCommand(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const p = parse(
    rest,
    {
      ...common,
      type: { type: 'string' },
      object: { type: 'string' },
      user: { type: 'string' },
      text: { type: 'string' },
      since: { type: 'string' },
      limit: { type: 'string' },
      follow: { type: 'boolean', short: 'f' },
    },
    INVENTORY_HELP,
  );
  const api = client(p);
  const json = flag(p, 'json');
  const line = (e: Event): string => `${e.time}  ${e.type.padEnd(24)} ${e.message}`;
  try {
    switch (verb) {
      case 'list': {
        const query: ListEventsQuery = { limit: int(p, 'limit', 50) ?? 50 };
        const [type, user, text, since, object] = ['type', 'user', 'text', 'since', 'object'].map((k) =>
          str(p, k),
        );
        if (type) query.type = type;
        if (user) query.user = user;
        if (text) query.text = text;
        if (since) {
          query.since = Date.parse(since);
          if (Number.isNaN(query.since))
            throw usageError('--since takes an ISO time, e.g. 2026-11-28T10:00:00Z');
        }
        if (object) query.objectId = (await resolveVm(api, object)).id;
        const events = await api.listEvents(query);
        printResult(events, json, () => events.map(line).join('\n'));
        return 0;
      }
      case 'verify': {
        const r = await api.verifyEvents();
        printResult(r, json, () =>
          r.ok
            ? `event chain intact: ${r.count} events verified`
            : `event chain BROKEN at event #${r.firstBad?.index ?? '?'} (${r.firstBad?.id ?? '?'}): ${r.firstBad?.reason ?? ''}${r.firstBad?.detail ? ` — ${r.firstBad.detail}` : ''}`,
        );
        if (!r.ok)
          throw new HypersealError(
            'HS_ERR_EVENT_CHAIN_BROKEN',
            `the event chain is broken at event ${r.firstBad?.id ?? '?'}`,
          );
        return 0;
      }
      case 'export': {
        const text = await api.exportEvents();
        process.stdout.write(typeof text === 'string' ? text : `${JSON.stringify(text)}\n`);
        return 0;
      }
      case 'tail': {
        const recent = await api.listEvents({ limit: int(p, 'limit', 10) ?? 10 });
        const ordered = [...recent].reverse();
        for (const e of ordered) process.stdout.write((json ? JSON.stringify(e) : line(e)) + '\n');
        if (!flag(p, 'follow')) return 0;
        const after = ordered.at(-1)?.seq ?? -1;
        await api.streamEvents(
          (data) => {
            const e = JSON.parse(data) as Event;
            process.stdout.write((json ? JSON.stringify(e) : line(e)) + '\n');
          },
          { afterSeq: after },
        );
        return 0;
      }
      default:
        throw usageError(`unknown event command '${verb ?? ''}'\n${INVENTORY_HELP}`);
    }
  } finally {
    api.close();
  }
}

/** --transport, checked (undefined when not given). */
function transportOf(p: ReturnType<typeof parse>): SyslogTargetCreate['transport'] | undefined {
  const v = str(p, 'transport');
  if (v !== undefined && v !== 'udp' && v !== 'tcp' && v !== 'tls')
    throw usageError('--transport is udp, tcp or tls');
  return v;
}

/** --format, checked (undefined when not given). */
function formatOf(p: ReturnType<typeof parse>): NonNullable<SyslogTargetCreate['format']> | undefined {
  const v = str(p, 'format');
  if (v !== undefined && v !== 'rfc5424' && v !== 'json' && v !== 'ocsf')
    throw usageError('--format is rfc5424, json or ocsf');
  return v;
}

export async function loggingCommand(noun: 'syslog' | 'alert', argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const p = parse(
    rest,
    {
      ...common,
      name: { type: 'string' },
      host: { type: 'string' },
      port: { type: 'string' },
      transport: { type: 'string' },
      format: { type: 'string' },
      ca: { type: 'string' },
      file: { type: 'string' },
      history: { type: 'boolean' },
      enable: { type: 'boolean' },
      disable: { type: 'boolean' },
      severity: { type: 'string' },
    },
    INVENTORY_HELP,
  );
  const api = client(p);
  const json = flag(p, 'json');
  try {
    if (verb === 'list') {
      if (noun === 'syslog') {
        const targets = await api.listSyslogTargets();
        printResult(targets, json, () =>
          table([
            ['NAME', 'TARGET', 'FORMAT', 'CONNECTED', 'QUEUED', 'SENT', 'ID'],
            ...targets.map((t) => [
              t.name,
              `${t.transport}://${t.host}:${t.port}`,
              t.format,
              String(t.connected),
              String(t.queued),
              String(t.sent),
              t.id,
            ]),
          ]),
        );
      } else {
        const rules = await api.listAlertRules();
        printResult(rules, json, () =>
          rules
            .map(
              (r) =>
                `${r.name}  [${r.severity}${r.enabled ? '' : ', disabled'}]  ${r.id}\n  ${JSON.stringify(r.match)}`,
            )
            .join('\n'),
        );
      }
      return 0;
    }
    if (verb === 'set') {
      const given = p.positionals[0];
      if (given === undefined) throw usageError(`${noun} set ID …`);
      if (noun === 'syslog') {
        const target = (await api.listSyslogTargets()).find((t) => t.id === given || t.name === given);
        if (target === undefined) throw new HypersealError('HS_ERR_NOT_FOUND', `no syslog target ${given}`);
        const transport = transportOf(p);
        const format = formatOf(p);
        const caPath = str(p, 'ca');
        const name = str(p, 'name');
        const host = str(p, 'host');
        const port = int(p, 'port');
        const patch: SyslogTargetUpdate = {
          ...(name !== undefined ? { name } : {}),
          ...(host !== undefined ? { host } : {}),
          ...(port !== undefined ? { port } : {}),
          ...(transport !== undefined ? { transport } : {}),
          ...(format !== undefined ? { format } : {}),
          ...(caPath !== undefined ? { caPem: readFileSync(caPath, 'utf8') } : {}),
        };
        if (Object.keys(patch).length === 0) throw usageError('syslog set ID: say what to change');
        const t = await api.updateSyslogTarget(target.id, patch);
        printResult(
          t,
          json,
          () => `syslog target ${t.name}: ${t.transport}://${t.host}:${t.port} (${t.format})`,
        );
      } else {
        const rule = (await api.listAlertRules()).find((r) => r.id === given || r.name === given);
        if (rule === undefined) throw new HypersealError('HS_ERR_NOT_FOUND', `no alert rule ${given}`);
        if (flag(p, 'enable') && flag(p, 'disable')) throw usageError('--enable or --disable, not both');
        let fields: AlertRuleUpdate = {};
        const file = str(p, 'file');
        if (file !== undefined) {
          try {
            fields = JSON.parse(readFileSync(file, 'utf8')) as AlertRuleUpdate;
          } catch (err) {
            throw usageError(`cannot read the fields in ${file}: ${(err as Error).message}`);
          }
        }
        const severity = str(p, 'severity');
        const name = str(p, 'name');
        const patch: AlertRuleUpdate = {
          ...fields,
          ...(flag(p, 'enable') ? { enabled: true } : {}),
          ...(flag(p, 'disable') ? { enabled: false } : {}),
          ...(severity !== undefined ? { severity } : {}),
          ...(name !== undefined ? { name } : {}),
        };
        if (Object.keys(patch).length === 0) throw usageError('alert set ID: say what to change');
        const r = await api.updateAlertRule(rule.id, patch);
        printResult(
          r,
          json,
          () => `alert rule ${r.name}: ${r.enabled ? 'enabled' : 'disabled'}, ${r.severity}`,
        );
      }
      return 0;
    }
    if (verb === 'remove') {
      const id = p.positionals[0];
      if (id === undefined) throw usageError(`${noun} remove ID`);
      await (noun === 'syslog' ? api.deleteSyslogTarget(id) : api.deleteAlertRule(id));
      printResult({ removed: id }, json, () => `removed ${id}`);
      return 0;
    }
    if (verb === 'add') {
      let created: { id: string; name: string };
      if (noun === 'syslog') {
        const transport = transportOf(p) ?? 'tcp';
        const format = formatOf(p) ?? 'rfc5424';
        const caPath = str(p, 'ca');
        created = await api.createSyslogTarget({
          name: need(
            p,
            'name',
            'syslog add --name N --host H --port P [--transport udp|tcp|tls] [--format rfc5424|json|ocsf] [--ca CA.pem]',
          ),
          host: need(p, 'host', 'syslog add --host H'),
          port: int(p, 'port', 514) ?? 514,
          transport,
          format,
          ...(caPath !== undefined ? { caPem: readFileSync(caPath, 'utf8') } : {}),
          ...(flag(p, 'history') ? { fromSeq: 'all' as const } : {}),
        });
      } else {
        const file = need(p, 'file', 'alert add --file RULE.json');
        let rule: AlertRuleCreate;
        try {
          // Checked in full by the manager (it answers which field is wrong).
          rule = JSON.parse(readFileSync(file, 'utf8')) as AlertRuleCreate;
        } catch (err) {
          throw usageError(`cannot read the rule in ${file}: ${(err as Error).message}`);
        }
        created = await api.createAlertRule(rule);
      }
      printResult(
        created,
        json,
        () => `added ${noun === 'syslog' ? 'syslog target' : 'alert rule'} ${created.name} (${created.id})`,
      );
      return 0;
    }
    throw usageError(`unknown ${noun} command '${verb ?? ''}'\n${INVENTORY_HELP}`);
  } finally {
    api.close();
  }
}
