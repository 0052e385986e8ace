/**
 * QMP (QEMU Machine Protocol, qemu docs/interop/qmp-spec.rst) wire codec. Pure: bytes in,
 * messages out, no sockets. QEMU writes one JSON object per line, terminated by "\r\n"
 * (QEMU 7.2 on the wire: `{"return": {}, "id": 1}\r\n`); the framer accepts a bare "\n"
 * too. Every line is bounded by `maxLineBytes`, so a hostile or broken peer costs bounded
 * memory: an over-long line is refused as soon as it is longer than the limit, before the
 * rest of it is buffered.
 *
 * Four kinds of message come from QEMU:
 *   greeting  {"QMP": {"version": {"qemu": {major, minor, micro}, "package": …}, "capabilities": […]}}
 *   return    {"return": <any JSON>, "id": <id>}
 *   error     {"error": {"class": …, "desc": …}, "id": <id>}
 *   event     {"event": …, "data": {…}, "timestamp": {"seconds": …, "microseconds": …}}
 */
import { HypersealError } from '../errors.js';

export interface QmpLimits {
  /** Longest line accepted from QEMU, terminator excluded. */
  maxLineBytes: number;
}

/**
 * 4 MiB: twenty times the largest reply QEMU 7.2 gives (`query-qmp-schema`, 207,009 bytes
 * on one line), small enough that a runaway peer cannot exhaust the agent's memory.
 */
export const DEFAULT_QMP_LIMITS: QmpLimits = { maxLineBytes: 4 << 20 };

/** Our requests carry numeric ids; QEMU echoes any JSON, we accept numbers and strings. */
export type QmpId = number | string;

export interface QmpVersion {
  major: number;
  minor: number;
  micro: number;
  /** Distribution build, e.g. "Debian 1:7.2+dfsg-7+deb12u18+b3". */
  package: string;
}

export interface QmpGreeting {
  kind: 'greeting';
  version: QmpVersion;
  capabilities: string[];
}
export interface QmpReturn {
  kind: 'return';
  id: QmpId | undefined;
  value: unknown;
}
export interface QmpErrorReply {
  kind: 'error';
  id: QmpId | undefined;
  /** QAPI ErrorClass: GenericError, CommandNotFound, DeviceNotActive, DeviceNotFound, KVMMissingCap. */
  errorClass: string;
  desc: string;
}
export interface QmpEvent {
  kind: 'event';
  event: string;
  data: Readonly<Record<string, unknown>>;
  timestamp: { seconds: number; microseconds: number };
}
export type QmpMessage = QmpGreeting | QmpReturn | QmpErrorReply | QmpEvent;

function bad(message: string): never {
  throw new HypersealError('HS_ERR_QMP_BAD_MESSAGE', message);
}

type JsonObject = Record<string, unknown>;
const isObject = (v: unknown): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Own properties only: a `__proto__` key from JSON.parse must not be mistaken for data. */
function field(o: JsonObject, key: string): unknown {
  return Object.hasOwn(o, key) ? o[key] : undefined;
}

function text(o: JsonObject, key: string, what: string): string {
  const v = field(o, key);
  if (typeof v !== 'string') bad(`${what}: "${key}" is not a string`);
  return v;
}

function count(o: JsonObject, key: string, what: string): number {
  const v = field(o, key);
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    bad(`${what}: "${key}" is not a non-negative integer`);
  }
  return v;
}

function idOf(o: JsonObject): QmpId | undefined {
  if (!Object.hasOwn(o, 'id')) return undefined;
  const id = o.id;
  if (typeof id === 'number' || typeof id === 'string') return id;
  return bad('reply id is neither a number nor a string');
}

const KINDS = ['QMP', 'return', 'error', 'event'] as const;

// fatal: reject invalid UTF-8 instead of replacing it, so corruption is seen, not parsed.
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Decodes one line (terminator already removed). Throws HS_ERR_QMP_BAD_MESSAGE. */
export function decodeQmpLine(line: Uint8Array | string, limits: QmpLimits = DEFAULT_QMP_LIMITS): QmpMessage {
  const size = typeof line === 'string' ? Buffer.byteLength(line, 'utf8') : line.byteLength;
  if (size > limits.maxLineBytes) {
    throw new HypersealError(
      'HS_ERR_QMP_TOO_LARGE',
      `QMP line of ${size} bytes exceeds ${limits.maxLineBytes}`,
    );
  }
  let source: string;
  if (typeof line === 'string') source = line;
  else {
    try {
      source = utf8.decode(line);
    } catch {
      return bad('QMP line is not valid UTF-8');
    }
  }
  let parsed: unknown;
  try {
    // V8's JSON.parse is iterative: deep nesting within the line limit cannot overflow the stack.
    parsed = JSON.parse(source);
  } catch (err) {
    return bad(`QMP line is not JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (!isObject(parsed)) bad('QMP line is not a JSON object');
  const kinds = KINDS.filter((k) => Object.hasOwn(parsed, k));
  if (kinds.length !== 1) {
    bad(
      kinds.length === 0
        ? 'QMP message is none of greeting, return, error or event'
        : `QMP message is ambiguous (${kinds.join(', ')})`,
    );
  }
  switch (kinds[0]) {
    case 'QMP':
      return decodeGreeting(field(parsed, 'QMP'));
    case 'return':
      return { kind: 'return', id: idOf(parsed), value: field(parsed, 'return') };
    case 'error': {
      const err = field(parsed, 'error');
      if (!isObject(err)) bad('QMP error: "error" is not an object');
      return {
        kind: 'error',
        id: idOf(parsed),
        errorClass: text(err, 'class', 'QMP error'),
        desc: text(err, 'desc', 'QMP error'),
      };
    }
    default:
      return decodeEvent(parsed);
  }
}

function decodeGreeting(qmp: unknown): QmpGreeting {
  if (!isObject(qmp)) bad('QMP greeting: "QMP" is not an object');
  const version = field(qmp, 'version');
  if (!isObject(version)) bad('QMP greeting: "version" is not an object');
  const qemu = field(version, 'qemu');
  if (!isObject(qemu)) bad('QMP greeting: "version.qemu" is not an object');
  const caps = field(qmp, 'capabilities');
  if (!Array.isArray(caps) || !caps.every((c): c is string => typeof c === 'string')) {
    bad('QMP greeting: "capabilities" is not a list of strings');
  }
  const pkg = field(version, 'package');
  return {
    kind: 'greeting',
    version: {
      major: count(qemu, 'major', 'QMP greeting'),
      minor: count(qemu, 'minor', 'QMP greeting'),
      micro: count(qemu, 'micro', 'QMP greeting'),
      package: typeof pkg === 'string' ? pkg : '',
    },
    capabilities: caps,
  };
}

function decodeEvent(o: JsonObject): QmpEvent {
  const event = text(o, 'event', 'QMP event');
  const data = field(o, 'data');
  if (data !== undefined && !isObject(data)) bad(`QMP event ${event}: "data" is not an object`);
  const ts = field(o, 'timestamp');
  if (!isObject(ts)) bad(`QMP event ${event}: "timestamp" is not an object`);
  return {
    kind: 'event',
    event,
    data: data ?? {},
    timestamp: {
      // QEMU stamps events from the host clock; -1/-1 is not sent, so negatives are malformed.
      seconds: count(ts, 'seconds', `QMP event ${event}`),
      microseconds: count(ts, 'microseconds', `QMP event ${event}`),
    },
  };
}

// ---------------------------------------------------------------------------------------
// Framing

const LF = 0x0a;
const CR = 0x0d;

/**
 * Splits QEMU's byte stream into lines. Lines completed before a violation are still
 * delivered; the violation is raised then, or on the next push if lines came with it.
 * After a violation the framer stays failed: the stream cannot be trusted to resync.
 */
export class QmpLineFramer {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private failure: HypersealError | undefined;

  constructor(private readonly maxLineBytes: number = DEFAULT_QMP_LIMITS.maxLineBytes) {}

  /** Feeds bytes; returns each line they complete, without its "\n" or "\r\n". */
  push(chunk: Uint8Array): Buffer[] {
    if (this.failure !== undefined) throw this.failure;
    const out: Buffer[] = [];
    let buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    for (;;) {
      const nl = buf.indexOf(LF);
      if (nl === -1) break;
      const lineBytes = this.buffered + nl;
      // A CR right before LF is the terminator, not content (QEMU sends "\r\n").
      const limitBytes = lineBytes - (this.lastByteBefore(buf, nl) === CR ? 1 : 0);
      if (limitBytes > this.maxLineBytes) return this.fail(out, limitBytes);
      let line: Buffer;
      if (this.buffered === 0) line = buf.subarray(0, nl);
      else {
        line = Buffer.concat([...this.chunks, buf.subarray(0, nl)], lineBytes);
        this.chunks = [];
        this.buffered = 0;
      }
      if (line.length > 0 && line[line.length - 1] === CR) line = line.subarray(0, line.length - 1);
      // Copies, so that a caller keeping a line does not pin the whole socket chunk.
      if (line.length > 0) out.push(Buffer.from(line));
      buf = buf.subarray(nl + 1);
    }
    if (buf.length > 0) {
      // The pending partial line may end with a CR that belongs to the terminator: allow one byte.
      if (this.buffered + buf.length > this.maxLineBytes + 1) {
        return this.fail(out, this.buffered + buf.length);
      }
      this.chunks.push(Buffer.from(buf));
      this.buffered += buf.length;
    }
    return out;
  }

  /** Bytes of an unfinished line. Non-zero at end of stream means QEMU stopped mid-line. */
  get pendingBytes(): number {
    return this.buffered;
  }

  private lastByteBefore(buf: Buffer, nl: number): number | undefined {
    if (nl > 0) return buf[nl - 1];
    const last = this.chunks[this.chunks.length - 1];
    return last === undefined ? undefined : last[last.length - 1];
  }

  private fail(out: Buffer[], bytes: number): Buffer[] {
    this.failure = new HypersealError(
      'HS_ERR_QMP_TOO_LARGE',
      `QMP line of ${bytes}+ bytes exceeds ${this.maxLineBytes}`,
    );
    this.chunks = [];
    this.buffered = 0;
    if (out.length === 0) throw this.failure;
    return out;
  }
}

// ---------------------------------------------------------------------------------------
// Encoding

/** QAPI command names: letters, digits, '-' and '_' (e.g. `qmp_capabilities`, `query-status`). */
const COMMAND_NAME = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;

export interface QmpCommand {
  execute: string;
  arguments?: Readonly<Record<string, unknown>> | undefined;
  id?: QmpId | undefined;
}

/** One request line, "\n"-terminated. JSON.stringify escapes newlines inside strings. */
export function encodeQmpCommand(cmd: QmpCommand): Buffer {
  if (!COMMAND_NAME.test(cmd.execute)) {
    throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `"${cmd.execute}" is not a QMP command name`);
  }
  if (cmd.arguments !== undefined && !isObject(cmd.arguments)) {
    throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `arguments of ${cmd.execute} must be an object`);
  }
  const body: JsonObject = { execute: cmd.execute };
  if (cmd.arguments !== undefined) body.arguments = cmd.arguments;
  if (cmd.id !== undefined) body.id = cmd.id;
  let json: string;
  try {
    json = JSON.stringify(body);
  } catch (err) {
    // BigInt values and cycles: a caller bug, named with the command (values not echoed).
    throw new HypersealError(
      'HS_ERR_INVALID_ARGUMENT',
      `arguments of ${cmd.execute} cannot be encoded as JSON: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  return Buffer.from(json + '\n', 'utf8');
}

// ---------------------------------------------------------------------------------------
// Redaction: by the type of what is sent, never by remembering to.

export const REDACTED = '<redacted>';

/** QOM types whose properties carry key material (qom/object_interfaces: secret, secret_keyring). */
const SECRET_QOM_TYPES: ReadonlySet<string> = new Set(['secret', 'secret_keyring']);
/** Properties of a secret object that are (or locate) key material. */
const SECRET_PROPERTIES = ['data', 'iv', 'keyid'] as const;

export interface RedactedArguments {
  /** Safe to log and to put in errors. */
  arguments: Readonly<Record<string, unknown>> | undefined;
  /** The string values that were removed, so that text echoing them (QEMU's desc) can be scrubbed. */
  secrets: string[];
}

function redactProps(props: JsonObject, secrets: string[]): JsonObject {
  const out: JsonObject = { ...props };
  for (const key of SECRET_PROPERTIES) {
    if (Object.hasOwn(out, key)) {
      const v = out[key];
      if (typeof v === 'string' && v.length > 0) secrets.push(v);
      out[key] = REDACTED;
    }
  }
  return out;
}

/**
 * The arguments of `command` with key material replaced by REDACTED:
 *  - `object-add` of a `secret`/`secret_keyring` object: `data`, `iv`, `keyid` (flat, as in
 *    QEMU ≥ 6.0, and inside the legacy `props` wrapper);
 *  - `set_password`: `password`;
 *  - `human-monitor-command`: the whole `command-line` when it mentions a secret or password
 *    (HMP `object_add secret,…` would otherwise carry the key in one string).
 */
export function redactArguments(
  command: string,
  args: Readonly<Record<string, unknown>> | undefined,
): RedactedArguments {
  const secrets: string[] = [];
  if (args === undefined) return { arguments: undefined, secrets };
  switch (command) {
    case 'object-add': {
      const type = args['qom-type'];
      if (typeof type === 'string' && SECRET_QOM_TYPES.has(type)) {
        const out = redactProps(args, secrets);
        const props = args.props;
        if (isObject(props)) out.props = redactProps(props, secrets);
        return { arguments: out, secrets };
      }
      return { arguments: args, secrets };
    }
    case 'set_password': {
      if (!Object.hasOwn(args, 'password')) return { arguments: args, secrets };
      const v = args.password;
      if (typeof v === 'string' && v.length > 0) secrets.push(v);
      return { arguments: { ...args, password: REDACTED }, secrets };
    }
    case 'human-monitor-command': {
      const line = args['command-line'];
      if (typeof line === 'string' && /secret|password/i.test(line)) {
        secrets.push(line);
        return { arguments: { ...args, 'command-line': REDACTED }, secrets };
      }
      return { arguments: args, secrets };
    }
    default:
      return { arguments: args, secrets };
  }
}

/** Replaces every occurrence of each secret in `text` (e.g. a desc that quotes a value). */
export function scrub(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) if (s.length > 0) out = out.split(s).join(REDACTED);
  return out;
}
