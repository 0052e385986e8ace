/**
 * What an event looks like on the wire to a syslog collector — pure functions, no I/O:
 *
 *  - RFC 5424 with structured data (the default format):
 *      <134>1 2024-05-01T12:00:00.000Z mgr01 hyperseal 4242 vm.reconfigured
 *      [hyperseal@32473 id="…" type="vm.reconfigured" seq="7" user="ops@local"
 *      object="vm:…" result="success" hash="…"][hyperseal-changes@32473
 *      c1="memoryMiB: 6144 → 10240"] ops@local reconfigured VM web-01: memoryMiB 6144 → 10240
 *  - `json`: the same header and `[hyperseal@32473 id="…" seq="…"]`, MSG = toJsonLine(event);
 *  - `ocsf`: the same, MSG = JSON of toOcsf(event);
 *  - octet-counting framing for TCP and TLS (RFC 6587 §3.4.1, RFC 5425 §4.3): `LEN SP MSG`.
 *
 * A message longer than the transport's limit (UDP: one datagram, default 1400 bytes so it
 * is never IP-fragmented; TCP/TLS: what the collector accepts) is split into numbered
 * parts. Each part is a valid RFC 5424 message on its own, with the same header (MSGID =
 * event type), and its `hyperseal@32473` element starts with the same `id` and
 * `part="i/n"`. The other fields fill the parts in order: a parameter cut at a part
 * boundary continues, under the same name, at the start of the next part, and the MSG
 * text likewise; joinParts() puts an event back together.
 *
 * The changes and fields are written exactly as the event holds them (already redacted
 * when the event was created, see create.ts): the syslog copy must match what the hash
 * chain covers, so a collector can check `hash` against the JSON format's content.
 */
import { HypersealError } from '../../errors.js';
import { canonicalJson } from '../index.js';
import type { Change, Event, EventType, JsonValue, Severity } from '../index.js';

/**
 * The Private Enterprise Number in our SD-IDs. 32473 is the number IANA reserves for
 * documentation (RFC 5612); a deployment that registers its own PEN changes it here and
 * in its collector's rules.
 */
export const ENTERPRISE_NUMBER = 32473;
export const SD_ID_EVENT = `hyperseal@${ENTERPRISE_NUMBER}`;
export const SD_ID_CHANGES = `hyperseal-changes@${ENTERPRISE_NUMBER}`;

/** RFC 5424 §6.2.1 Table 1, names as syslog.conf spells them. */
export const Facility = {
  kern: 0,
  user: 1,
  mail: 2,
  daemon: 3,
  auth: 4,
  syslog: 5,
  lpr: 6,
  news: 7,
  uucp: 8,
  cron: 9,
  authpriv: 10,
  ftp: 11,
  ntp: 12,
  audit: 13,
  alert: 14,
  clock: 15,
  local0: 16,
  local1: 17,
  local2: 18,
  local3: 19,
  local4: 20,
  local5: 21,
  local6: 22,
  local7: 23,
} as const;
export type Facility = (typeof Facility)[keyof typeof Facility];

/** Operators route appliance logs by local facility; local0 unless configured. */
export const DEFAULT_FACILITY: Facility = Facility.local0;
export const DEFAULT_APP_NAME = 'hyperseal';

/** RFC 5424 §6.2.1 Table 2 codes of our severities (notice, alert, emergency unused). */
export const SYSLOG_SEVERITY: Readonly<Record<Severity, number>> = {
  info: 6, // Informational
  warning: 4, // Warning
  error: 3, // Error
  critical: 2, // Critical
};

/** RFC 5424 §6 header field limits (PRINTUSASCII, no spaces). */
export const HEADER_LIMITS = { hostname: 255, appName: 48, procId: 128, msgId: 32 } as const;

/** Smallest number of bytes a part must have free for fields after its fixed prefix. */
const MIN_PART_ROOM = 64;

export type SyslogFormat = 'rfc5424' | 'json' | 'ocsf';

export interface HeaderOptions {
  /** 0–23; default 16 (local0). */
  readonly facility?: number;
  /** RFC 5424 HOSTNAME; default `-` (NILVALUE). The sink passes os.hostname(). */
  readonly hostname?: string;
  /** Default `hyperseal`. */
  readonly appName?: string;
  /** Default `-`. The sink passes the process id. */
  readonly procId?: string;
}

export interface FormatOptions extends HeaderOptions {
  /** The largest message (one part) in bytes, framing excluded. */
  readonly maxMessageBytes: number;
}

// ---------------------------------------------------------------------------------------
// Header

export function priority(facility: number, severity: Severity): number {
  return facility * 8 + SYSLOG_SEVERITY[severity];
}

/** Whether `s` may be an RFC 5424 header field: 1..max printable US-ASCII characters. */
export function isHeaderToken(s: string, max: number): boolean {
  return s.length >= 1 && s.length <= max && /^[\x21-\x7e]+$/.test(s);
}

/** A header field as RFC 5424 allows it: NILVALUE when empty, other characters as '_'. */
function headerField(value: string | undefined, max: number): string {
  if (value === undefined || value === '') return '-';
  return value.replace(/[^\x21-\x7e]/g, '_').slice(0, max);
}

const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$/;

/** What the header of every message of one target shares, checked and sanitised once. */
interface HeaderParts {
  readonly facility: number;
  /** ` HOSTNAME APP-NAME PROCID ` */
  readonly middle: string;
}

function headerParts(opts: HeaderOptions): HeaderParts {
  const facility = opts.facility ?? DEFAULT_FACILITY;
  if (!Number.isInteger(facility) || facility < 0 || facility > 23) {
    throw new HypersealError('HS_ERR_SYSLOG_CONFIG', `facility ${facility} is not 0–23`);
  }
  const middle = [
    '',
    headerField(opts.hostname, HEADER_LIMITS.hostname),
    headerField(opts.appName ?? DEFAULT_APP_NAME, HEADER_LIMITS.appName),
    headerField(opts.procId, HEADER_LIMITS.procId),
    '',
  ].join(' ');
  return { facility, middle };
}

/** `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID ` (with the trailing space). */
function headerOf(event: Event, h: HeaderParts): string {
  // Event times are ISO 8601 UTC with milliseconds, which RFC 5424 takes as they are.
  const time = TIMESTAMP.test(event.time) ? event.time : '-';
  const msgId = /^[\x21-\x7e]{1,32}$/.test(event.type)
    ? event.type
    : headerField(event.type, HEADER_LIMITS.msgId);
  return `<${priority(h.facility, event.severity)}>1 ${time}${h.middle}${msgId} `;
}

// ---------------------------------------------------------------------------------------
// Structured data

interface Param {
  readonly name: string;
  readonly value: string;
}

/** RFC 5424 §6.3.3: in a PARAM-VALUE, '"', '\' and ']' are escaped with a backslash. */
export function escapeParamValue(value: string): string {
  return SD_SPECIAL.test(value) ? value.replace(/["\\\]]/g, (c) => `\\${c}`) : value;
}
const SD_SPECIAL = /["\\\]]/;

function sdElement(id: string, params: readonly Param[]): string {
  let s = `[${id}`;
  for (const p of params) s += ` ${p.name}="${escapeParamValue(p.value)}"`;
  return `${s}]`;
}

// eslint-disable-next-line no-control-regex
const CONTROLS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

/** Control characters printed as escapes: no value may forge a log line. As message.ts does. */
function escapeControls(s: string): string {
  if (!CONTROLS.test(s)) return s;
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => {
    if (c === '\n') return '\\n';
    if (c === '\r') return '\\r';
    if (c === '\t') return '\\t';
    return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
  });
}

// eslint-disable-next-line no-control-regex
const QUOTE_SPECIAL = /[\\'\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

function quote(s: string): string {
  if (!QUOTE_SPECIAL.test(s)) return `'${s}'`;
  return `'${escapeControls(s.replace(/\\/g, '\\\\').replace(/'/g, "\\'"))}'`;
}

/**
 * A value in the notation of the event message (message.ts renderValue: strings quoted,
 * `(none)` for null, `[…]` and `{key: …}`), but never cut. Written out here because
 * renderValue splits every value into code points to measure it, which is most of the
 * cost of formatting an event; a test keeps the two notations identical.
 */
export function renderFullValue(v: JsonValue): string {
  if (v === null) return '(none)';
  if (typeof v === 'string') return quote(v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (isList(v)) return `[${v.map(renderFullValue).join(', ')}]`;
  const fields = Object.keys(v).map(
    (k) => `${/^[A-Za-z_$][\w$]*$/.test(k) ? k : quote(k)}: ${renderFullValue(v[k] ?? null)}`,
  );
  return `{${fields.join(', ')}}`;
}

function isList(v: JsonValue): v is readonly JsonValue[] {
  return Array.isArray(v);
}

/**
 * `path: from → to`, values in the notation of the event message (strings quoted, nothing
 * cut): `nics[nic0].network: 'PCI' → 'Non-PCI'`, `memoryMiB: 6144 → 10240`.
 */
export function renderChangeParam(change: Change): string {
  return `${escapeControls(change.path)}: ${renderFullValue(change.from)} → ${renderFullValue(change.to)}`;
}

/** The `hyperseal@32473` parameters of the rfc5424 format after `id`, in order. */
function eventParams(event: Event): Param[] {
  const params: Param[] = [
    { name: 'type', value: event.type },
    { name: 'seq', value: String(event.seq) },
    { name: 'user', value: event.user },
  ];
  // Not in the list of DESIGN.md's example, but "from which address" is half of "who".
  if (event.sourceIp !== null) params.push({ name: 'sourceIp', value: event.sourceIp });
  params.push(
    { name: 'object', value: `${event.object.kind}:${event.object.id}` },
    { name: 'result', value: event.result },
    { name: 'hash', value: event.hash },
  );
  return params;
}

// ---------------------------------------------------------------------------------------
// Messages and parts

/** One message's content before it is split: fields of the two SD elements, then MSG. */
interface Content {
  readonly id: string;
  readonly event: readonly Param[];
  readonly changes: readonly Param[];
  readonly msg: string;
}

function assemble(header: string, c: Content, part?: string): string {
  const fixed: Param[] = [{ name: 'id', value: c.id }];
  if (part !== undefined) fixed.push({ name: 'part', value: part });
  let s = header + sdElement(SD_ID_EVENT, [...fixed, ...c.event]);
  if (c.changes.length > 0) s += sdElement(SD_ID_CHANGES, c.changes);
  if (c.msg !== '') s += ` ${c.msg}`;
  return s;
}

function contentOf(event: Event, format: SyslogFormat): Content {
  switch (format) {
    case 'rfc5424':
      return {
        id: event.id,
        event: eventParams(event),
        changes: event.changes.map((c, i) => ({ name: `c${i + 1}`, value: renderChangeParam(c) })),
        msg: event.message,
      };
    case 'json':
      return {
        id: event.id,
        event: [{ name: 'seq', value: String(event.seq) }],
        changes: [],
        msg: toJsonLine(event),
      };
    case 'ocsf':
      return {
        id: event.id,
        event: [{ name: 'seq', value: String(event.seq) }],
        changes: [],
        msg: JSON.stringify(toOcsf(event)),
      };
  }
}

/**
 * The event as one RFC 5424 message, whatever its length. MSG is UTF-8 without the BOM
 * RFC 5424 §6.4 recommends: rsyslog, syslog-ng and most SIEMs show a BOM as garbage
 * or keep it in the text, and every one of them reads UTF-8 anyway.
 */
export function toRfc5424(event: Event, opts: HeaderOptions = {}, format: SyslogFormat = 'rfc5424'): string {
  return assemble(headerOf(event, headerParts(opts)), contentOf(event, format));
}

/**
 * A function from an event to its RFC 5424 messages of at most `maxMessageBytes` bytes
 * each: one message when it fits, else numbered parts (see the file comment). The header
 * options are checked and sanitised once, here (a sink formats every event with the same).
 * The function throws HS_ERR_SYSLOG_CONFIG when the limit cannot hold a part's header and id.
 */
export function createFormatter(format: SyslogFormat, opts: FormatOptions): (event: Event) => string[] {
  const h = headerParts(opts);
  const max = opts.maxMessageBytes;
  return (event) => {
    const header = headerOf(event, h);
    const whole =
      format === 'rfc5424' ? wholeRfc5424(header, event) : assemble(header, contentOf(event, format));
    // A string of n UTF-16 units has at most 3n UTF-8 bytes: most events need no count.
    if (whole.length * 3 <= max || Buffer.byteLength(whole) <= max) return [whole];
    return split(event, header, contentOf(event, format), max);
  };
}

/**
 * assemble(header, contentOf(event, 'rfc5424')) written out, without the intermediate
 * parameter objects: this runs for every event on the caller's thread. The fuzz test of
 * format.test.ts checks the two give the same text.
 */
function wholeRfc5424(header: string, e: Event): string {
  let s =
    `${header}[${SD_ID_EVENT} id="${escapeParamValue(e.id)}" type="${escapeParamValue(e.type)}"` +
    ` seq="${escapeParamValue(String(e.seq))}" user="${escapeParamValue(e.user)}"`;
  if (e.sourceIp !== null) s += ` sourceIp="${escapeParamValue(e.sourceIp)}"`;
  s +=
    ` object="${escapeParamValue(`${e.object.kind}:${e.object.id}`)}" result="${escapeParamValue(e.result)}"` +
    ` hash="${escapeParamValue(e.hash)}"]`;
  if (e.changes.length > 0) {
    s += `[${SD_ID_CHANGES}`;
    e.changes.forEach((c, i) => (s += ` c${i + 1}="${escapeParamValue(renderChangeParam(c))}"`));
    s += ']';
  }
  return e.message === '' ? s : `${s} ${e.message}`;
}

/** createFormatter(format, opts)(event), for one-off use. */
export function formatMessages(event: Event, format: SyslogFormat, opts: FormatOptions): string[] {
  return createFormatter(format, opts)(event);
}

function split(event: Event, header: string, content: Content, max: number): string[] {
  // The room per part depends on how many digits `part="i/n"` takes: try 1, 2, … digits.
  for (let digits = 1; digits <= 9; digits++) {
    const widest = `${'9'.repeat(digits)}/${'9'.repeat(digits)}`;
    const fixed = Buffer.byteLength(
      assemble(header, { ...content, event: [], changes: [], msg: '' }, widest),
    );
    const room = max - fixed;
    if (room < MIN_PART_ROOM) {
      throw new HypersealError(
        'HS_ERR_SYSLOG_CONFIG',
        `a syslog message limit of ${max} bytes cannot hold a part of event ${event.id} ` +
          `(its header and id take ${fixed} bytes, ${MIN_PART_ROOM} more are needed)`,
      );
    }
    const parts = pack(content, room);
    if (parts.length < 10 ** digits) {
      return parts.map((p, i) => assemble(header, p, `${i + 1}/${parts.length}`));
    }
  }
  throw new HypersealError('HS_ERR_SYSLOG_CONFIG', `event ${event.id} needs more than 999999999 parts`);
}

const CHANGES_ELEMENT_BYTES = `[${SD_ID_CHANGES}]`.length;

/** The bytes of a PARAM-VALUE once escaped. */
function escapedBytes(s: string): number {
  let n = Buffer.byteLength(s);
  for (const ch of s) if (ch === '"' || ch === '\\' || ch === ']') n++;
  return n;
}

/**
 * The longest prefix of `s` (whole code points) whose size — escaped, or raw for MSG —
 * is at most `room` bytes; and the rest.
 */
function cut(s: string, room: number, escaped: boolean): [string, string] {
  let used = 0;
  let i = 0;
  while (i < s.length) {
    const c = s.charCodeAt(i);
    // UTF-8 length from the UTF-16 unit; a surrogate pair is one 4-byte code point.
    const pair = c >= 0xd800 && c <= 0xdbff && i + 1 < s.length;
    let cost = c < 0x80 ? 1 : c < 0x800 ? 2 : pair ? 4 : 3;
    if (escaped && (c === 0x22 || c === 0x5c || c === 0x5d)) cost++;
    if (used + cost > room) break;
    used += cost;
    i += pair ? 2 : 1;
  }
  return [s.slice(0, i), s.slice(i)];
}

/** Fills parts of `room` bytes each with the content's fields in order, cutting where needed. */
function pack(c: Content, room: number): Content[] {
  const parts: Content[] = [];
  let event: Param[] = [];
  let changes: Param[] = [];
  let msg = '';
  let used = 0;
  const next = (): void => {
    parts.push({ id: c.id, event, changes, msg });
    event = [];
    changes = [];
    msg = '';
    used = 0;
  };
  const place = (p: Param, inChanges: boolean): void => {
    let rest = p.value;
    for (;;) {
      const opening = inChanges && changes.length === 0 ? CHANGES_ELEMENT_BYTES : 0;
      const overhead = opening + ` ${p.name}=""`.length;
      const [piece, after] = cut(rest, room - used - overhead, true);
      // Start a new part rather than write an empty piece of a non-empty value.
      if (used + overhead > room || (piece === '' && rest !== '')) {
        next();
        continue;
      }
      (inChanges ? changes : event).push({ name: p.name, value: piece });
      used += overhead + escapedBytes(piece);
      if (after === '') return;
      rest = after;
      next();
    }
  };
  for (const p of c.event) place(p, false);
  for (const p of c.changes) place(p, true);
  let rest = c.msg;
  while (rest !== '') {
    const [piece, after] = cut(rest, room - used - 1, false);
    if (piece === '') {
      next();
      continue;
    }
    msg = piece;
    used += 1 + Buffer.byteLength(piece);
    rest = after;
    if (rest !== '') next();
  }
  if (parts.length === 0 || event.length > 0 || changes.length > 0 || msg !== '') next();
  return parts;
}

// ---------------------------------------------------------------------------------------
// JSON and OCSF

/**
 * The event as one line of JSON (no trailing newline): canonical JSON (RFC 8785), the
 * exact text the hash chain covers, so a collector can recompute `hash` from it.
 */
export function toJsonLine(event: Event): string {
  return canonicalJson(event);
}

/** OCSF 1.3.0 classes we map to. */
export const OcsfClass = {
  authentication: {
    uid: 3002,
    name: 'Authentication',
    categoryUid: 3,
    categoryName: 'Identity & Access Management',
  },
  entityManagement: {
    uid: 3004,
    name: 'Entity Management',
    categoryUid: 3,
    categoryName: 'Identity & Access Management',
  },
  apiActivity: { uid: 6003, name: 'API Activity', categoryUid: 6, categoryName: 'Application Activity' },
} as const;
type OcsfClassKey = keyof typeof OcsfClass;

/** Activity ids of the classes above (OCSF 1.3.0), by name. */
const ENTITY_ACTIVITY = {
  Create: 1,
  Update: 3,
  Delete: 4,
  Move: 5,
  Enroll: 6,
  Unenroll: 7,
  Enable: 8,
  Disable: 9,
  Activate: 10,
  Deactivate: 11,
  Other: 99,
} as const;

interface OcsfMapping {
  readonly cls: OcsfClassKey;
  readonly activityId: number;
  readonly activityName: string;
  /** The event reports a refusal even when the recording succeeded (a failed login). */
  readonly failure?: true;
}

/** Types whose class or activity a verb rule (below) would get wrong. */
const OCSF_SPECIAL: Partial<Record<EventType, OcsfMapping>> = {
  'user.logged-in': { cls: 'authentication', activityId: 1, activityName: 'Logon' },
  'user.login-failed': { cls: 'authentication', activityId: 1, activityName: 'Logon', failure: true },
  'user.logged-out': { cls: 'authentication', activityId: 2, activityName: 'Logoff' },
  'access.denied': { cls: 'apiActivity', activityId: 99, activityName: 'Other', failure: true },
  'host.join-refused': { cls: 'entityManagement', activityId: 6, activityName: 'Enroll', failure: true },
  'host.joined': { cls: 'entityManagement', activityId: 6, activityName: 'Enroll' },
  'host.revoked': { cls: 'entityManagement', activityId: 7, activityName: 'Unenroll' },
};

/** By the verb that ends the type (`vm.powered-on` → `powered-on`): new types map themselves. */
const OCSF_VERBS: readonly (readonly [RegExp, keyof typeof ENTITY_ACTIVITY])[] = [
  [/(created|added)$/, 'Create'],
  [/(reconfigured|changed|rekeyed|encrypted|decrypted)$/, 'Update'],
  [/(deleted|removed|destroyed)$/, 'Delete'],
  [/migrated$/, 'Move'],
  [/enabled$/, 'Enable'],
  [/(disabled|revoked)$/, 'Disable'],
  [/powered-on$/, 'Activate'],
  [/(powered-off|shut-down)$/, 'Deactivate'],
];

function ocsfMapping(type: EventType): OcsfMapping {
  const special = OCSF_SPECIAL[type];
  if (special !== undefined) return special;
  for (const [re, name] of OCSF_VERBS) {
    if (re.test(type))
      return { cls: 'entityManagement', activityId: ENTITY_ACTIVITY[name], activityName: name };
  }
  return { cls: 'entityManagement', activityId: ENTITY_ACTIVITY.Other, activityName: 'Other' };
}

/** OCSF severity_id: 1 Informational, 3 Medium, 4 High, 5 Critical. */
const OCSF_SEVERITY: Readonly<Record<Severity, { id: number; name: string }>> = {
  info: { id: 1, name: 'Informational' },
  warning: { id: 3, name: 'Medium' },
  error: { id: 4, name: 'High' },
  critical: { id: 5, name: 'Critical' },
};

export interface OcsfEvent {
  readonly category_uid: number;
  readonly category_name: string;
  readonly class_uid: number;
  readonly class_name: string;
  readonly activity_id: number;
  readonly activity_name: string;
  /** class_uid × 100 + activity_id. */
  readonly type_uid: number;
  readonly type_name: string;
  /** Epoch milliseconds. */
  readonly time: number;
  readonly severity_id: number;
  readonly severity: string;
  readonly status_id: 1 | 2;
  readonly status: 'Success' | 'Failure';
  readonly message: string;
  readonly metadata: {
    readonly version: string;
    readonly uid: string;
    readonly sequence: number;
    readonly event_code: string;
    readonly product: { readonly name: string; readonly vendor_name: string };
  };
  readonly actor: { readonly user: { readonly name: string } };
  readonly src_endpoint?: { readonly ip: string };
  /** Entity Management and Authentication: what was acted on. */
  readonly entity?: { readonly uid: string; readonly name: string; readonly type: string };
  /** API Activity. */
  readonly api?: { readonly operation: string };
  readonly resources?: readonly { readonly uid: string; readonly name: string; readonly type: string }[];
  /** What OCSF has no attribute for: the changes (from → to) and the chain links. */
  readonly unmapped: {
    readonly changes: readonly Change[];
    readonly seq: number;
    readonly hash: string;
    readonly prev_hash: string;
  };
}

export const OCSF_VERSION = '1.3.0';

/**
 * The event in the Open Cybersecurity Schema Framework: Entity Management for changes to
 * VMs, hosts, keys, users…; Authentication for sign-in and sign-out; API Activity for a
 * refused API call. Changes have no OCSF attribute and go to `unmapped`.
 */
export function toOcsf(event: Event): OcsfEvent {
  const m = ocsfMapping(event.type);
  const cls = OcsfClass[m.cls];
  const failed = event.result === 'failure' || m.failure === true;
  const target = { uid: event.object.id, name: event.object.name, type: event.object.kind };
  return {
    category_uid: cls.categoryUid,
    category_name: cls.categoryName,
    class_uid: cls.uid,
    class_name: cls.name,
    activity_id: m.activityId,
    activity_name: m.activityName,
    type_uid: cls.uid * 100 + m.activityId,
    type_name: `${cls.name}: ${m.activityName}`,
    time: Date.parse(event.time),
    severity_id: OCSF_SEVERITY[event.severity].id,
    severity: OCSF_SEVERITY[event.severity].name,
    status_id: failed ? 2 : 1,
    status: failed ? 'Failure' : 'Success',
    message: event.message,
    metadata: {
      version: OCSF_VERSION,
      uid: event.id,
      sequence: event.seq,
      event_code: event.type,
      product: { name: 'Hyperseal', vendor_name: 'Hyperseal' },
    },
    actor: { user: { name: event.user } },
    ...(event.sourceIp === null ? {} : { src_endpoint: { ip: event.sourceIp } }),
    ...(m.cls === 'apiActivity'
      ? { api: { operation: event.type }, resources: [target] }
      : { entity: target }),
    unmapped: { changes: event.changes, seq: event.seq, hash: event.hash, prev_hash: event.prevHash },
  };
}

// ---------------------------------------------------------------------------------------
// Octet-counting framing (RFC 6587 §3.4.1)

/** `LEN SP MSG`, LEN the decimal byte count of MSG. */
export function frameOctetCounted(msg: string | Buffer): Buffer {
  const body = typeof msg === 'string' ? Buffer.from(msg, 'utf8') : msg;
  return Buffer.concat([Buffer.from(`${body.length} `, 'latin1'), body]);
}

/** Longest MSG-LEN we accept: more digits than any limit below 1 GB could need. */
const MAX_LEN_DIGITS = 9;

function framingError(message: string): HypersealError {
  return new HypersealError('HS_ERR_SYSLOG_FRAMING', message);
}

/**
 * Bytes in, messages out (for tests, fake collectors and tools). A state machine with an
 * explicit limit: a frame announcing more than `maxMessageBytes` is refused before its
 * body is buffered. After a throw the decoder is unusable (the stream is out of sync).
 */
export class OctetCountedDecoder {
  private len = 0;
  private digits = 0;
  /** The length prefix is complete: collecting `len` bytes of body. */
  private inBody = false;
  private chunks: Buffer[] = [];
  private have = 0;
  private failed = false;

  constructor(readonly maxMessageBytes: number = 64 * 1024) {}

  /** Bytes of an incomplete frame held back. */
  get pending(): number {
    return this.inBody ? this.have : this.digits;
  }

  push(data: Buffer): Buffer[] {
    if (this.failed) throw framingError('the decoder failed earlier: the stream is out of sync');
    const out: Buffer[] = [];
    let i = 0;
    try {
      while (i < data.length) {
        if (!this.inBody) {
          const b = data[i++] as number;
          if (b === 0x20) {
            if (this.digits === 0) throw framingError('a frame starts with a space: no length');
            this.inBody = true;
            this.chunks = [];
            this.have = 0;
            continue;
          }
          if (b < 0x30 || b > 0x39) throw framingError(`byte 0x${b.toString(16)} in a frame length`);
          if (this.digits === 0 && b === 0x30) throw framingError('a frame length starts with 0');
          if (++this.digits > MAX_LEN_DIGITS) throw framingError('a frame length has too many digits');
          this.len = this.len * 10 + (b - 0x30);
          if (this.len > this.maxMessageBytes) {
            throw framingError(`a frame of ${this.len}+ bytes exceeds the limit of ${this.maxMessageBytes}`);
          }
          continue;
        }
        const take = Math.min(this.len - this.have, data.length - i);
        this.chunks.push(data.subarray(i, i + take));
        this.have += take;
        i += take;
        if (this.have === this.len) {
          out.push(
            this.chunks.length === 1 ? Buffer.from(this.chunks[0] as Buffer) : Buffer.concat(this.chunks),
          );
          this.inBody = false;
          this.len = 0;
          this.digits = 0;
          this.chunks = [];
          this.have = 0;
        }
      }
    } catch (err) {
      this.failed = true;
      throw err;
    }
    return out;
  }
}

/** Splits a buffer of whole frames (what the queue stores) into its messages, zero-copy. */
export function splitFrames(data: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let i = 0;
  while (i < data.length) {
    const sp = data.indexOf(0x20, i);
    if (sp < 0 || sp === i || sp - i > MAX_LEN_DIGITS) throw framingError('a frame has no valid length');
    const len = Number(data.toString('latin1', i, sp));
    if (!Number.isInteger(len) || len <= 0 || sp + 1 + len > data.length) {
      throw framingError('a frame is cut short or has a bad length');
    }
    out.push(data.subarray(sp + 1, sp + 1 + len));
    i = sp + 1 + len;
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Reading messages back (tests, tools)

export interface SdElement {
  readonly id: string;
  readonly params: readonly (readonly [string, string])[];
}

export interface ParsedMessage {
  readonly pri: number;
  readonly version: number;
  readonly timestamp: string;
  readonly hostname: string;
  readonly appName: string;
  readonly procId: string;
  readonly msgId: string;
  readonly sd: readonly SdElement[];
  /** '' when absent. */
  readonly msg: string;
}

/** Parses an RFC 5424 message (structured data unescaped). Throws HS_ERR_SYSLOG_FRAMING. */
export function parseRfc5424(text: string): ParsedMessage {
  const head = /^<(\d{1,3})>(\d{1,2}) (\S+) (\S+) (\S+) (\S+) (\S+) /.exec(text);
  if (head === null) throw framingError(`not an RFC 5424 header: ${JSON.stringify(text.slice(0, 80))}`);
  let i = head[0].length;
  const sd: SdElement[] = [];
  if (text[i] === '-') {
    i++;
  } else {
    while (text[i] === '[') {
      const idEnd = text.slice(i + 1).search(/[ \]]/);
      if (idEnd < 1) throw framingError('an SD element has no SD-ID');
      const id = text.slice(i + 1, i + 1 + idEnd);
      i += 1 + idEnd;
      const params: [string, string][] = [];
      while (text[i] === ' ') {
        const eq = text.indexOf('="', i);
        if (eq < 0) throw framingError(`SD element ${id}: a parameter without ="`);
        const name = text.slice(i + 1, eq);
        let value = '';
        let j = eq + 2;
        for (;;) {
          const ch = text[j];
          if (ch === undefined) throw framingError(`SD element ${id}: unterminated value of ${name}`);
          if (ch === '"') break;
          const nextCh = text[j + 1];
          if (ch === '\\' && (nextCh === '"' || nextCh === '\\' || nextCh === ']')) {
            value += nextCh;
            j += 2;
          } else {
            value += ch;
            j++;
          }
        }
        params.push([name, value]);
        i = j + 1;
      }
      if (text[i] !== ']') throw framingError(`SD element ${id} is not closed`);
      i++;
      sd.push({ id, params });
    }
    if (sd.length === 0) throw framingError('no structured data (neither - nor [)');
  }
  let msg = '';
  if (i < text.length) {
    if (text[i] !== ' ') throw framingError('structured data is not followed by a space');
    msg = text.slice(i + 1);
  }
  const [, pri, version, timestamp, hostname, appName, procId, msgId] = head as unknown as string[];
  return {
    pri: Number(pri),
    version: Number(version),
    timestamp: timestamp ?? '',
    hostname: hostname ?? '',
    appName: appName ?? '',
    procId: procId ?? '',
    msgId: msgId ?? '',
    sd,
    msg,
  };
}

/** A parameter of one SD element, or undefined. */
export function sdParam(m: ParsedMessage, sdId: string, name: string): string | undefined {
  return m.sd.find((e) => e.id === sdId)?.params.find(([n]) => n === name)?.[1];
}

/**
 * Puts the parts of one event back together (any order in, `part` decides): the message as
 * it would have been unsplit. Throws HS_ERR_SYSLOG_FRAMING for a missing, repeated or
 * foreign part.
 */
export function joinParts(parts: readonly ParsedMessage[]): ParsedMessage {
  const first = parts[0];
  if (first === undefined) throw framingError('no parts to join');
  const id = sdParam(first, SD_ID_EVENT, 'id');
  const numbered = parts.map((p) => {
    const [i, n] = (sdParam(p, SD_ID_EVENT, 'part') ?? '').split('/').map(Number);
    if (sdParam(p, SD_ID_EVENT, 'id') !== id) throw framingError('parts of different events');
    return { p, i: i ?? NaN, n: n ?? NaN };
  });
  numbered.sort((a, b) => a.i - b.i);
  numbered.forEach(({ i, n }, k) => {
    if (i !== k + 1 || n !== parts.length) throw framingError(`part ${k + 1}/${parts.length} is missing`);
  });
  // Same-named parameters of consecutive parts are one value cut in two.
  const merged = new Map<string, [string, string][]>();
  let msg = '';
  for (const { p } of numbered) {
    for (const el of p.sd) {
      const list = merged.get(el.id) ?? [];
      merged.set(el.id, list);
      for (const [name, value] of el.params) {
        if (el.id === SD_ID_EVENT && name === 'part') continue;
        const last = list.at(-1);
        if (last !== undefined && last[0] === name && !(el.id === SD_ID_EVENT && name === 'id'))
          last[1] += value;
        else if (!(el.id === SD_ID_EVENT && name === 'id' && list.some(([n]) => n === 'id')))
          list.push([name, value]);
      }
    }
    msg += p.msg;
  }
  return { ...first, sd: [...merged].map(([sdId, params]) => ({ id: sdId, params })), msg };
}
