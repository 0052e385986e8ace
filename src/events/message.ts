/**
 * The human sentence of an event:
 *
 *   ops@local reconfigured VM web-01: memoryMiB 6144 → 10240; nics[nic0].network 'PCI' → 'Non-PCI'
 *
 * The head comes from the event type's phrase (model.ts), then the failure reason in
 * parentheses if there is one, then up to `maxChanges` changes
 * `path from → to`, then `+K more`. Values: strings in single quotes, numbers and booleans
 * bare, null as `(none)`, lists and objects in the same notation (`['a', 'b']`,
 * `{id: 'nic1', network: 'DMZ'}`), each cut to `maxValueChars` characters with '…'.
 *
 * The sentence goes to syslog and SIEMs, so nothing in it may forge a line or a field:
 * control characters (CR, LF, …) in any string — VM names included — are escaped, never
 * printed raw. Changes are redacted again here (redactChange), so a change built by hand
 * cannot print a password.
 */
import type { Change, EventObject, EventResult, EventType, JsonValue } from './model.js';
import { EventTypes, ObjectKinds } from './model.js';
import { redactChange } from './redact.js';

export interface MessageOptions {
  /** Changes shown before `+K more`. */
  readonly maxChanges: number;
  /** Characters of one rendered value, quotes and '…' included. */
  readonly maxValueChars: number;
  /** Characters of the failure reason, '…' included. */
  readonly maxReasonChars: number;
}

export const DEFAULT_MESSAGE_OPTIONS: MessageOptions = {
  maxChanges: 5,
  maxValueChars: 64,
  maxReasonChars: 160,
};

export interface MessageInput {
  readonly type: EventType;
  readonly user: string;
  readonly sourceIp: string | null;
  readonly object: EventObject;
  readonly changes: readonly Change[];
  readonly result: EventResult;
  /** Why it failed, in a few words ("token expired"); printed after the head, in parentheses. */
  readonly reason?: string | undefined;
}

export function renderMessage(event: MessageInput, options: Partial<MessageOptions> = {}): string {
  const opts = { ...DEFAULT_MESSAGE_OPTIONS, ...options };
  const info = EventTypes[event.type];
  const phrase = event.result === 'failure' ? info.failed : info.done;
  const head = phrase.replace(/\{(user|object|sourceIp)\}/g, (_, field: string) => {
    if (field === 'user') return displayName(event.user === '' ? '(unknown)' : event.user);
    if (field === 'sourceIp')
      return event.sourceIp === null ? '(unknown address)' : displayName(event.sourceIp);
    return objectLabel(event.object);
  });
  const reason =
    event.reason === undefined || event.reason === ''
      ? ''
      : ` (${escapeControls(cut(event.reason, opts.maxReasonChars))})`;
  const shown = event.changes.slice(0, Math.max(0, opts.maxChanges)).map((c) => renderChange(c, opts));
  const more = event.changes.length - shown.length;
  if (more > 0) shown.push(`+${more} more`);
  return shown.length === 0 ? head + reason : `${head}${reason}: ${shown.join('; ')}`;
}

export function renderChange(change: Change, options: Partial<MessageOptions> = {}): string {
  const opts = { ...DEFAULT_MESSAGE_OPTIONS, ...options };
  const c = redactChange(change);
  return `${escapeControls(c.path)} ${renderValue(c.from, opts.maxValueChars)} → ${renderValue(c.to, opts.maxValueChars)}`;
}

/** `VM web-01`; the name falls back to the id; an unknown kind is printed as is. */
function objectLabel(o: EventObject): string {
  const kind: string = Object.hasOwn(ObjectKinds, o.kind) ? ObjectKinds[o.kind].label : String(o.kind);
  return `${kind} ${displayName(o.name === '' ? o.id : o.name)}`;
}

/** Names are bare when unambiguous (`web-01`, `ops@local`, `10.0.0.5`), else quoted. */
function displayName(s: string): string {
  return /^[\w.@:/+-]+$/.test(s) ? s : quote(s);
}

/** One value, at most `max` characters (code points, so '…' never splits a character). */
export function renderValue(v: JsonValue, max: number = DEFAULT_MESSAGE_OPTIONS.maxValueChars): string {
  if (typeof v === 'string') {
    // Cut the content, keep the quotes: 'aaaa…'.
    const cps = Array.from(v);
    const room = Math.max(1, max - 2);
    return quote(cps.length > room ? cps.slice(0, room - 1).join('') + '…' : v);
  }
  return cut(render(v), max);
}

function cut(s: string, max: number): string {
  const cps = Array.from(s);
  return cps.length > max ? cps.slice(0, Math.max(0, max - 1)).join('') + '…' : s;
}

function render(v: JsonValue): string {
  if (v === null) return '(none)';
  if (typeof v === 'string') return quote(v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (isList(v)) return `[${v.map(render).join(', ')}]`;
  const fields = Object.keys(v).map(
    (k) => `${/^[A-Za-z_$][\w$]*$/.test(k) ? k : quote(k)}: ${render(v[k] ?? null)}`,
  );
  return `{${fields.join(', ')}}`;
}

function isList(v: JsonValue): v is readonly JsonValue[] {
  return Array.isArray(v);
}

/** Single-quoted, with \ and ' escaped and control characters as escapes. */
function quote(s: string): string {
  return `'${escapeControls(s.replace(/\\/g, '\\\\').replace(/'/g, "\\'"))}'`;
}

/**
 * C0 and C1 controls, DEL, and the Unicode line and paragraph separators: anything a log
 * viewer might take for a new line or a terminal for a command.
 */
function escapeControls(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => {
    if (c === '\n') return '\\n';
    if (c === '\r') return '\\r';
    if (c === '\t') return '\\t';
    return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
  });
}
