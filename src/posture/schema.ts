/**
 * Posture files (docs/posture.md): the desired security state of VMs, key providers, alert
 * rules and syslog targets, as YAML. parsePosture() validates strictly — an unknown key is
 * more likely a misspelt setting than something safe to ignore, and a silently ignored
 * `secureBot: true` would leave VMs exactly as insecure as before while the operator
 * believes otherwise. Every refusal is HS_ERR_POSTURE_INVALID naming the path
 * (`vms[1].select.tag`) and, when known, the line.
 *
 * Files a posture refers to (CA bundles, client certificates and keys, webhook secrets)
 * are named by path, resolved relative to the posture file; they are read only when a
 * change needs them (src/posture/files.ts), never copied into the posture itself.
 */
import { isAbsolute, resolve } from 'node:path';
import { LineCounter, parseDocument } from 'yaml';
import { HypersealError } from '../errors.js';
import { validateRule } from '../events/alerts/rule.js';

export const POSTURE_VERSION = 1;
/** Bigger than any sane posture; a guard against feeding the parser a disk image. */
export const MAX_POSTURE_BYTES = 4 * 1024 * 1024;

export type MigrationMode = 'disabled' | 'opportunistic' | 'required';
export const MIGRATION_MODES: readonly MigrationMode[] = ['disabled', 'opportunistic', 'required'];

/** Which VMs a rule is about: every condition given must hold. */
export interface Selector {
  /** Glob on the VM name: `*` any run of characters, `?` one. */
  namePattern?: string;
  /** The VM carries this tag. */
  tag?: string;
  /** Exact folder (`/prod/payments`), or a folder glob: `*` within a segment, `**` any depth. */
  folder?: string;
  /** A NIC of the VM is on this network. */
  network?: string;
}

export type EncryptionWant = { policy: string } | 'none';

export interface SecureBootWant {
  enabled: boolean;
  /** `microsoft` (OVMF's template keys) or the name of a custom key set; absent: not managed. */
  keySet?: string;
}

export interface VmRule {
  /** `vms[2]`: where the rule is in the file (how the plan and errors name it). */
  key: string;
  name?: string;
  select: Selector;
  encryption?: EncryptionWant;
  secureBoot?: SecureBootWant;
  vtpm?: boolean;
  migrationEncryption?: MigrationMode;
}

export interface KeyServerSpec {
  host: string;
  port: number;
}

export interface KeyProviderSpec {
  key: string;
  name: string;
  servers: KeyServerSpec[];
  /** Absolute paths (resolved against the posture file's directory). */
  caFile?: string;
  clientCertFile?: string;
  clientKeyFile?: string;
  /** true: make it the default provider. false or absent: leave the default alone. */
  default?: boolean;
  /** Filled by loadFingerprints() (files.ts) before planning: SHA-256 of each CA certificate. */
  caSha256?: string[];
  /** Likewise, of the client certificate. */
  clientCertSha256?: string;
}

export interface WebhookSpec {
  url: string;
  /** Absolute path of the file holding the HMAC secret (read only when the rule is created). */
  secretFile: string;
}

export interface AlertRuleSpec {
  key: string;
  name: string;
  enabled: boolean;
  severity: string;
  match: Record<string, unknown>;
  actions: { event?: boolean; syslog?: boolean; webhook?: WebhookSpec };
}

export type SyslogTransport = 'udp' | 'tcp' | 'tls';
export type SyslogFormat = 'rfc5424' | 'json' | 'ocsf';

export interface SyslogTargetSpec {
  key: string;
  name: string;
  host: string;
  port: number;
  transport: SyslogTransport;
  format: SyslogFormat;
  caFile?: string;
}

export interface Posture {
  version: 1;
  /** Directory file references are resolved against. */
  baseDir: string;
  /** Absent section: not managed (nothing of that kind is read, compared or changed). */
  keyProviders?: KeyProviderSpec[];
  vms?: VmRule[];
  alertRules?: AlertRuleSpec[];
  syslogTargets?: SyslogTargetSpec[];
}

// ---------------------------------------------------------------------------------------
// Validation helpers. A path is a list of keys and indexes; errors format it as
// `vms[1].select.tag`.

type Path = readonly (string | number)[];

export function formatPosturePath(path: Path): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? p : `.${p}`;
  return out === '' ? '(top level)' : out;
}

class Invalid extends Error {
  constructor(
    readonly path: Path,
    readonly why: string,
  ) {
    super(why);
  }
}

function kindOf(v: unknown): string {
  if (v === null || v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  return typeof v === 'object' ? 'a mapping' : `a ${typeof v}`;
}

/** A short quoted echo of a value for messages (posture files hold no secrets, only paths). */
function echo(v: unknown): string {
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  return JSON.stringify(s.length > 60 ? `${s.slice(0, 59)}…` : s);
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function obj(v: unknown, path: Path, allowed: readonly string[], required: readonly string[] = []): Obj {
  if (!isObj(v)) throw new Invalid(path, `must be a mapping, got ${kindOf(v)}`);
  for (const k of Object.keys(v)) {
    if (!allowed.includes(k)) {
      throw new Invalid([...path, k], `is not a known key here (allowed: ${allowed.join(', ')})`);
    }
  }
  for (const k of required) {
    if (v[k] === undefined || v[k] === null) throw new Invalid([...path, k], 'is required');
  }
  return v;
}

function str(v: unknown, path: Path, opts: { max?: number; pattern?: RegExp; what?: string } = {}): string {
  if (typeof v !== 'string') throw new Invalid(path, `must be a string, got ${kindOf(v)}`);
  if (v.length === 0) throw new Invalid(path, 'must not be empty');
  const max = opts.max ?? 256;
  if (v.length > max) throw new Invalid(path, `must be at most ${max} characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(v)) throw new Invalid(path, 'must not contain control characters');
  if (opts.pattern && !opts.pattern.test(v)) {
    throw new Invalid(path, `${echo(v)} is not ${opts.what ?? `of the form ${String(opts.pattern)}`}`);
  }
  return v;
}

function bool(v: unknown, path: Path): boolean {
  if (typeof v !== 'boolean') throw new Invalid(path, `must be true or false, got ${kindOf(v)}`);
  return v;
}

function int(v: unknown, path: Path, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    throw new Invalid(path, `must be a whole number, got ${kindOf(v)}`);
  }
  if (v < min || v > max) throw new Invalid(path, `must be between ${min} and ${max}, got ${v}`);
  return v;
}

function oneOf<T extends string>(v: unknown, path: Path, values: readonly T[]): T {
  const found = values.find((x) => x === v);
  if (found !== undefined) return found;
  throw new Invalid(
    path,
    `must be one of ${values.join(', ')}, got ${typeof v === 'string' ? echo(v) : kindOf(v)}`,
  );
}

function list(v: unknown, path: Path, max: number): unknown[] {
  if (!Array.isArray(v)) throw new Invalid(path, `must be a list, got ${kindOf(v)}`);
  if (v.length > max) throw new Invalid(path, `must have at most ${max} items`);
  return v;
}

/** Object names as the manager accepts them (src/manager/model.ts Name). */
const NAME = /^[A-Za-z0-9][A-Za-z0-9 ._@()-]*$/;
/** Folder paths (src/manager/model.ts Folder). */
export const FOLDER = /^(\/[A-Za-z0-9][A-Za-z0-9._-]{0,63})+$/;
/** A folder condition: a path whose segments may be `*`-globs, or `**` (any depth). */
const FOLDER_GLOB = /^(\/(\*\*|[A-Za-z0-9._*?-]{1,64}))+$/;
const GLOB = /^[A-Za-z0-9 ._@()*?-]+$/;
const HOST = /^[A-Za-z0-9.:[\]_-]+$/;

function fileRef(v: unknown, path: Path, baseDir: string): string {
  const p = str(v, path, { max: 4096 });
  return isAbsolute(p) ? p : resolve(baseDir, p);
}

function selector(v: unknown, path: Path): Selector {
  const o = obj(v, path, ['namePattern', 'tag', 'folder', 'network']);
  const s: Selector = {};
  if (o.namePattern !== undefined)
    s.namePattern = str(o.namePattern, [...path, 'namePattern'], {
      max: 128,
      pattern: GLOB,
      what: 'a name glob (letters, digits, space . _ @ ( ) - and the wildcards * ?)',
    });
  if (o.tag !== undefined) s.tag = str(o.tag, [...path, 'tag'], { max: 64 });
  if (o.folder !== undefined)
    s.folder = str(o.folder, [...path, 'folder'], {
      max: 255,
      pattern: FOLDER_GLOB,
      what: 'a folder path like /prod/payments or a glob like /prod/**',
    });
  if (o.network !== undefined) s.network = str(o.network, [...path, 'network'], { max: 80 });
  if (Object.keys(s).length === 0) {
    throw new Invalid(
      path,
      'must give at least one of namePattern, tag, folder, network (namePattern: "*" for every VM)',
    );
  }
  return s;
}

function vmRule(v: unknown, path: Path): VmRule {
  const o = obj(
    v,
    path,
    ['name', 'select', 'encryption', 'secureBoot', 'vtpm', 'migrationEncryption'],
    ['select'],
  );
  const rule: VmRule = { key: formatPosturePath(path), select: selector(o.select, [...path, 'select']) };
  if (o.name !== undefined) rule.name = str(o.name, [...path, 'name'], { max: 120 });
  if (o.encryption !== undefined) {
    const e = o.encryption;
    if (e === 'none' || e === false) rule.encryption = 'none';
    else if (isObj(e)) {
      const eo = obj(e, [...path, 'encryption'], ['policy'], ['policy']);
      rule.encryption = { policy: str(eo.policy, [...path, 'encryption', 'policy'], { max: 80 }) };
    } else {
      throw new Invalid(
        [...path, 'encryption'],
        `must be "none" or { policy: NAME }, got ${typeof e === 'string' ? echo(e) : kindOf(e)}`,
      );
    }
  }
  if (o.secureBoot !== undefined) {
    const sb = o.secureBoot;
    if (typeof sb === 'boolean') rule.secureBoot = { enabled: sb };
    else if (isObj(sb)) {
      const so = obj(sb, [...path, 'secureBoot'], ['enabled', 'keySet'], ['enabled']);
      const want: SecureBootWant = { enabled: bool(so.enabled, [...path, 'secureBoot', 'enabled']) };
      if (so.keySet !== undefined) {
        want.keySet = str(so.keySet, [...path, 'secureBoot', 'keySet'], { max: 80 });
        if (!want.enabled) {
          throw new Invalid([...path, 'secureBoot', 'keySet'], 'is only meaningful with enabled: true');
        }
      }
      rule.secureBoot = want;
    } else {
      throw new Invalid(
        [...path, 'secureBoot'],
        `must be true, false or { enabled, keySet }, got ${kindOf(sb)}`,
      );
    }
  }
  if (o.vtpm !== undefined) rule.vtpm = bool(o.vtpm, [...path, 'vtpm']);
  if (o.migrationEncryption !== undefined) {
    rule.migrationEncryption = oneOf(
      o.migrationEncryption,
      [...path, 'migrationEncryption'],
      MIGRATION_MODES,
    );
  }
  if (
    rule.encryption !== undefined &&
    rule.encryption !== 'none' &&
    rule.migrationEncryption !== undefined &&
    rule.migrationEncryption !== 'required'
  ) {
    throw new Invalid(
      [...path, 'migrationEncryption'],
      `cannot be ${rule.migrationEncryption} for encrypted VMs: encrypted VMs always migrate encrypted (required)`,
    );
  }
  if (
    rule.encryption === undefined &&
    rule.secureBoot === undefined &&
    rule.vtpm === undefined &&
    rule.migrationEncryption === undefined
  ) {
    throw new Invalid(path, 'sets nothing: give encryption, secureBoot, vtpm or migrationEncryption');
  }
  return rule;
}

function keyProvider(v: unknown, path: Path, baseDir: string): KeyProviderSpec {
  const o = obj(
    v,
    path,
    ['name', 'servers', 'caFile', 'clientCertFile', 'clientKeyFile', 'default'],
    ['name', 'servers'],
  );
  const servers = list(o.servers, [...path, 'servers'], 16).map((s, i): KeyServerSpec => {
    const sp = [...path, 'servers', i];
    if (typeof s === 'string') {
      const m = /^(?:\[([^\]]+)\]|([^:[\]]+))(?::(\d+))?$/.exec(s);
      if (m === null) throw new Invalid(sp, `${echo(s)} is not HOST or HOST:PORT`);
      return {
        host: str(m[1] ?? m[2], sp, { max: 253, pattern: HOST, what: 'a host name or address' }),
        port: int(m[3] === undefined ? 5696 : Number(m[3]), sp, 1, 65535),
      };
    }
    const so = obj(s, sp, ['host', 'port'], ['host']);
    return {
      host: str(so.host, [...sp, 'host'], { max: 253, pattern: HOST, what: 'a host name or address' }),
      port: so.port === undefined ? 5696 : int(so.port, [...sp, 'port'], 1, 65535),
    };
  });
  if (servers.length === 0) throw new Invalid([...path, 'servers'], 'must name at least one server');
  const spec: KeyProviderSpec = {
    key: formatPosturePath(path),
    name: str(o.name, [...path, 'name'], { max: 80, pattern: NAME, what: 'a valid name' }),
    servers,
  };
  if (o.caFile !== undefined) spec.caFile = fileRef(o.caFile, [...path, 'caFile'], baseDir);
  if (o.clientCertFile !== undefined)
    spec.clientCertFile = fileRef(o.clientCertFile, [...path, 'clientCertFile'], baseDir);
  if (o.clientKeyFile !== undefined)
    spec.clientKeyFile = fileRef(o.clientKeyFile, [...path, 'clientKeyFile'], baseDir);
  if ((spec.clientCertFile === undefined) !== (spec.clientKeyFile === undefined)) {
    throw new Invalid(
      [...path, spec.clientCertFile === undefined ? 'clientCertFile' : 'clientKeyFile'],
      'is required with ' + (spec.clientCertFile === undefined ? 'clientKeyFile' : 'clientCertFile'),
    );
  }
  if (o.default !== undefined) spec.default = bool(o.default, [...path, 'default']);
  return spec;
}

/** A secret stand-in that passes validateRule; never sent anywhere. */
const PLACEHOLDER_SECRET = 'posture-validation-placeholder';

function alertRule(v: unknown, path: Path, baseDir: string): AlertRuleSpec {
  const o = obj(v, path, ['name', 'enabled', 'severity', 'match', 'actions'], ['name', 'severity', 'match']);
  const name = str(o.name, [...path, 'name'], { max: 120 });
  const actions: AlertRuleSpec['actions'] = {};
  let apiActions: Obj = {};
  if (o.actions !== undefined) {
    const a = obj(o.actions, [...path, 'actions'], ['event', 'syslog', 'webhook']);
    if (a.event !== undefined) actions.event = bool(a.event, [...path, 'actions', 'event']);
    if (a.syslog !== undefined) actions.syslog = bool(a.syslog, [...path, 'actions', 'syslog']);
    if (a.webhook !== undefined) {
      const wp = [...path, 'actions', 'webhook'];
      const w = obj(a.webhook, wp, ['url', 'secretFile'], ['url', 'secretFile']);
      actions.webhook = {
        url: str(w.url, [...wp, 'url'], { max: 2048 }),
        secretFile: fileRef(w.secretFile, [...wp, 'secretFile'], baseDir),
      };
    }
    apiActions = {
      ...(actions.event !== undefined ? { event: actions.event } : {}),
      ...(actions.syslog !== undefined ? { syslog: actions.syslog } : {}),
      ...(actions.webhook ? { webhook: { url: actions.webhook.url, secret: PLACEHOLDER_SECRET } } : {}),
    };
  }
  // The manager's own validation, so a bad match is refused here with its path, not
  // halfway through an apply.
  try {
    validateRule({
      id: 'posture',
      name,
      ...(o.enabled !== undefined ? { enabled: o.enabled } : {}),
      severity: o.severity,
      match: o.match,
      actions: apiActions,
    });
  } catch (err) {
    if (err instanceof HypersealError) {
      const field = typeof err.details?.field === 'string' ? err.details.field : '';
      throw new Invalid([...path, ...splitField(field)], err.message.replace(/^alert rule: \S+ /, ''));
    }
    throw err;
  }
  return {
    key: formatPosturePath(path),
    name,
    enabled: o.enabled === undefined ? true : bool(o.enabled, [...path, 'enabled']),
    severity: o.severity as string,
    match: o.match as Record<string, unknown>,
    actions,
  };
}

/** `match.changes[0].to.glob` → ['match', 'changes', 0, 'to', 'glob']. */
function splitField(field: string): (string | number)[] {
  const out: (string | number)[] = [];
  for (const m of field.matchAll(/([^.[\]]+)|\[(\d+)\]/g)) {
    if (m[2] !== undefined) out.push(Number(m[2]));
    else if (m[1] !== undefined && m[1] !== 'rule') out.push(m[1]);
  }
  return out;
}

function syslogTarget(v: unknown, path: Path, baseDir: string): SyslogTargetSpec {
  const o = obj(
    v,
    path,
    ['name', 'host', 'port', 'transport', 'format', 'caFile'],
    ['name', 'host', 'port', 'transport'],
  );
  const spec: SyslogTargetSpec = {
    key: formatPosturePath(path),
    name: str(o.name, [...path, 'name'], { max: 80, pattern: NAME, what: 'a valid name' }),
    host: str(o.host, [...path, 'host'], { max: 253, pattern: HOST, what: 'a host name or address' }),
    port: int(o.port, [...path, 'port'], 1, 65535),
    transport: oneOf(o.transport, [...path, 'transport'], ['udp', 'tcp', 'tls'] as const),
    format:
      o.format === undefined
        ? 'rfc5424'
        : oneOf(o.format, [...path, 'format'], ['rfc5424', 'json', 'ocsf'] as const),
  };
  if (o.caFile !== undefined) spec.caFile = fileRef(o.caFile, [...path, 'caFile'], baseDir);
  if (spec.transport === 'tls' && spec.caFile === undefined) {
    throw new Invalid(
      [...path, 'caFile'],
      'is required with transport tls (the CA that signed the collector)',
    );
  }
  return spec;
}

function unique(items: readonly { name: string; key: string }[], section: string): void {
  const seen = new Map<string, string>();
  for (const it of items) {
    const before = seen.get(it.name);
    if (before !== undefined) {
      throw new Invalid([section], `names ${echo(it.name)} twice (${before} and ${it.key})`);
    }
    seen.set(it.name, it.key);
  }
}

/** Validates an already-parsed document (JSON, or YAML turned to plain values). */
export function validatePosture(value: unknown, baseDir: string, file = 'posture'): Posture {
  try {
    return validateValue(value, baseDir);
  } catch (err) {
    if (!(err instanceof Invalid)) throw err;
    const path = formatPosturePath(err.path);
    throw new HypersealError('HS_ERR_POSTURE_INVALID', `${file}: ${path} ${err.why}`, { file, path });
  }
}

function validateValue(value: unknown, baseDir: string): Posture {
  const o = obj(value, [], ['version', 'keyProviders', 'vms', 'alertRules', 'syslogTargets'], ['version']);
  if (o.version !== POSTURE_VERSION) {
    throw new Invalid(['version'], `must be ${POSTURE_VERSION}, got ${echo(o.version)}`);
  }
  const posture: Posture = { version: 1, baseDir };
  if (o.keyProviders !== undefined) {
    posture.keyProviders = list(o.keyProviders, ['keyProviders'], 64).map((x, i) =>
      keyProvider(x, ['keyProviders', i], baseDir),
    );
    unique(posture.keyProviders, 'keyProviders');
    const defaults = posture.keyProviders.filter((k) => k.default === true);
    if (defaults.length > 1) {
      throw new Invalid(
        [defaults[1]?.key ?? 'keyProviders', 'default'],
        `only one key provider can be the default (${defaults.map((d) => d.name).join(', ')})`,
      );
    }
  }
  if (o.vms !== undefined) {
    posture.vms = list(o.vms, ['vms'], 1000).map((x, i) => vmRule(x, ['vms', i]));
  }
  if (o.alertRules !== undefined) {
    posture.alertRules = list(o.alertRules, ['alertRules'], 1000).map((x, i) =>
      alertRule(x, ['alertRules', i], baseDir),
    );
    unique(posture.alertRules, 'alertRules');
  }
  if (o.syslogTargets !== undefined) {
    posture.syslogTargets = list(o.syslogTargets, ['syslogTargets'], 64).map((x, i) =>
      syslogTarget(x, ['syslogTargets', i], baseDir),
    );
    unique(posture.syslogTargets, 'syslogTargets');
  }
  return posture;
}

/**
 * Parses and validates a posture file's text. `file` names it in messages; `baseDir`
 * resolves the file references in it (the posture file's directory).
 */
export function parsePosture(text: string, opts: { file?: string; baseDir: string }): Posture {
  const file = opts.file ?? 'posture';
  if (Buffer.byteLength(text) > MAX_POSTURE_BYTES) {
    throw new HypersealError('HS_ERR_POSTURE_INVALID', `${file}: larger than ${MAX_POSTURE_BYTES} bytes`, {
      file,
    });
  }
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false, strict: true });
  const yamlError = doc.errors[0];
  if (yamlError !== undefined) {
    const line = lineCounter.linePos(yamlError.pos[0]).line;
    throw new HypersealError(
      'HS_ERR_POSTURE_INVALID',
      `${file}:${line}: not valid YAML: ${yamlError.message.split('\n')[0] ?? yamlError.code}`,
      { file, line },
    );
  }
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new HypersealError(
      'HS_ERR_POSTURE_INVALID',
      `${file}: ${err instanceof Error ? err.message : String(err)}`,
      { file },
    );
  }
  try {
    return validateValue(value, opts.baseDir);
  } catch (err) {
    if (!(err instanceof Invalid)) throw err;
    const path = formatPosturePath(err.path);
    // The line of the deepest node the path reaches (an unknown key's value, a missing
    // key's parent).
    let line: number | undefined;
    for (let n = err.path.length; n >= 0 && line === undefined; n--) {
      const node: unknown = n === 0 ? doc.contents : doc.getIn(err.path.slice(0, n), true);
      const range = (node as { range?: [number, number, number] } | undefined)?.range;
      if (range) line = lineCounter.linePos(range[0]).line;
    }
    throw new HypersealError(
      'HS_ERR_POSTURE_INVALID',
      `${file}${line === undefined ? '' : `:${line}`}: ${path} ${err.why}`,
      { file, path, ...(line === undefined ? {} : { line }) },
    );
  }
}
