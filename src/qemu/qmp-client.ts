/**
 * QMP client: one connection to one QEMU monitor. Connects, reads the greeting, negotiates
 * `qmp_capabilities`, then runs commands with ids matched to replies and routes
 * asynchronous events to subscribers. The codec (qmp-codec.ts) knows nothing of sockets and
 * this file knows nothing of VMs; the socket sits behind the narrow QmpTransport interface.
 *
 * Errors are HypersealErrors that name the command and carry its arguments redacted by type
 * (see `redactArguments`): key material of `secret` objects never reaches an error or a
 * trace line (HYPERSEAL_TRACE=qmp).
 *
 * QEMU serves one QMP client at a time. A second client's connect() succeeds at the socket
 * level but QEMU holds back its greeting until the first one disconnects (seen on QEMU 7.2:
 * two `socket.connect`s, the second gets its greeting only after the first `close()`), so a
 * missing greeting is reported as a timeout that says so.
 */
import net from 'node:net';
import { HypersealError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { trace, traceEnabled } from '../trace.js';
import type { QmpEvent, QmpGreeting, QmpMessage, QmpVersion } from './qmp-codec.js';
import {
  DEFAULT_QMP_LIMITS,
  QmpLineFramer,
  decodeQmpLine,
  encodeQmpCommand,
  redactArguments,
  scrub,
} from './qmp-codec.js';

/** A byte stream to a QMP monitor. `onClose` fires once, with the error that ended it, if any. */
export interface QmpTransport {
  write(bytes: Buffer): void;
  onData(listener: (chunk: Buffer) => void): void;
  onClose(listener: (err: Error | undefined) => void): void;
  close(): void;
}

function socketTransport(socket: net.Socket): QmpTransport {
  const closeListeners: ((err: Error | undefined) => void)[] = [];
  let lastError: Error | undefined;
  let closed = false;
  socket.on('error', (err) => {
    lastError = err;
  });
  socket.on('close', () => {
    closed = true;
    for (const l of closeListeners) l(lastError);
  });
  return {
    write: (bytes) => {
      socket.write(bytes);
    },
    onData: (listener) => {
      socket.on('data', listener);
    },
    onClose: (listener) => {
      if (closed) queueMicrotask(() => listener(lastError));
      else closeListeners.push(listener);
    },
    // destroy(), not end(): the fd is closed at once, so QEMU sees the disconnect and
    // greets its next client (a half-closed socket would keep the monitor taken).
    close: () => {
      socket.destroy();
    },
  };
}

/** Opens a unix socket to a QMP monitor. ENOENT/ECONNREFUSED come back as HS_ERR_QMP_CONNECT. */
export function connectUnixSocket(path: string, timeoutMs: number): Promise<QmpTransport> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection({ path });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new HypersealError('HS_ERR_QMP_TIMEOUT', `connect to QMP socket ${path} took over ${timeoutMs} ms`, {
          socket: path,
        }),
      );
    }, timeoutMs);
    const onError = (err: NodeJS.ErrnoException): void => {
      clearTimeout(timer);
      reject(
        new HypersealError('HS_ERR_QMP_CONNECT', `cannot connect to QMP socket ${path}: ${err.message}`, {
          socket: path,
          errno: err.code,
        }),
      );
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.off('error', onError);
      resolve(socketTransport(socket));
    });
  });
}

export interface QmpClientOptions {
  /** Names the VM in errors and traces, e.g. its name or UUID. */
  label?: string;
  /** Socket connect + greeting + capabilities negotiation. Default 5,000. */
  connectTimeoutMs?: number;
  /** Per-command default. Default 30,000 (a LUKS blockdev-add alone blocks QEMU ~2.3 s). */
  commandTimeoutMs?: number;
  /** Longest line accepted from QEMU. Default 4 MiB. */
  maxLineBytes?: number;
}

export interface ExecuteOptions {
  timeoutMs?: number;
}

export interface WaitForEventOptions {
  timeoutMs?: number;
  /** Only an event for which this returns true settles the wait. */
  match?: (event: QmpEvent) => boolean;
}

interface Pending {
  command: string;
  shown: Readonly<Record<string, unknown>> | undefined;
  secrets: string[];
  started: number;
  resolve(value: unknown): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

type EventListener = (event: QmpEvent) => void;

type State = 'greeting' | 'negotiating' | 'ready' | 'closed';

export class QmpClient {
  private state: State = 'greeting';
  private readonly framer: QmpLineFramer;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private readonly listeners = new Set<{ name: string | undefined; fn: EventListener }>();
  private readonly closeWaiters: ((err: Error) => void)[] = [];
  private greetingWaiter: { resolve(g: QmpGreeting): void; reject(err: Error): void } | undefined;
  private closeReason: Error | undefined;
  private greetingMessage: QmpGreeting | undefined;
  /** Settles when the transport has closed, whoever closed it. */
  readonly closed: Promise<void>;
  private readonly label: string;

  private constructor(
    private readonly transport: QmpTransport,
    private readonly opts: QmpClientOptions,
  ) {
    this.label = opts.label ?? 'qemu';
    this.framer = new QmpLineFramer(opts.maxLineBytes ?? DEFAULT_QMP_LIMITS.maxLineBytes);
    this.closed = new Promise<void>((resolve) => {
      transport.onClose((err) => {
        this.shutdown(
          new HypersealError(
            'HS_ERR_QMP_CONNECTION_CLOSED',
            `QMP connection to ${this.label} closed${err === undefined ? '' : `: ${err.message}`}`,
            { vm: this.label },
          ),
        );
        resolve();
      });
    });
    transport.onData((chunk) => this.onData(chunk));
  }

  /** Connects to a unix socket and negotiates capabilities. */
  static async connect(socketPath: string, opts: QmpClientOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.connectTimeoutMs ?? 5_000;
    const started = Date.now();
    const transport = await connectUnixSocket(socketPath, timeoutMs);
    return QmpClient.open(transport, {
      ...opts,
      label: opts.label ?? socketPath,
      connectTimeoutMs: Math.max(1, timeoutMs - (Date.now() - started)),
    });
  }

  /** Negotiates over an already open transport (any byte stream to a QMP monitor). */
  static async open(transport: QmpTransport, opts: QmpClientOptions = {}): Promise<QmpClient> {
    const client = new QmpClient(transport, opts);
    try {
      await client.handshake(opts.connectTimeoutMs ?? 5_000);
    } catch (err) {
      client.shutdown(err instanceof Error ? err : new Error(String(err)));
      transport.close();
      throw err;
    }
    return client;
  }

  /** QEMU's version from the greeting. */
  get version(): QmpVersion {
    return (this.greetingMessage as QmpGreeting).version;
  }

  get capabilities(): readonly string[] {
    return (this.greetingMessage as QmpGreeting).capabilities;
  }

  get isOpen(): boolean {
    return this.state !== 'closed';
  }

  private async handshake(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const greeting = await new Promise<QmpGreeting>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(
          new HypersealError(
            'HS_ERR_QMP_TIMEOUT',
            `no QMP greeting from ${this.label} within ${timeoutMs} ms ` +
              '(QEMU greets one client at a time: is another QMP client connected?)',
            { vm: this.label },
          ),
        );
      }, timeoutMs);
      this.greetingWaiter = {
        resolve: (g) => {
          clearTimeout(timer);
          resolve(g);
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
    });
    this.greetingMessage = greeting;
    this.state = 'negotiating';
    try {
      await this.send('qmp_capabilities', undefined, Math.max(1, deadline - Date.now()));
    } catch (err) {
      if (err instanceof HypersealError && err.code === 'HS_ERR_QMP_COMMAND_FAILED') {
        throw new HypersealError(
          'HS_ERR_QMP_CONNECT',
          `${this.label} refused qmp_capabilities: ${err.message}`,
          {
            vm: this.label,
          },
        );
      }
      throw err;
    }
    this.state = 'ready';
    trace('qmp', 'connected', {
      vm: this.label,
      qemu: `${greeting.version.major}.${greeting.version.minor}.${greeting.version.micro}`,
      package: greeting.version.package,
    });
  }

  /**
   * Runs one command; resolves with its `return` value. A command that times out is
   * forgotten: its late reply is recognised by id and dropped, the connection stays usable.
   */
  execute(
    command: string,
    args?: Readonly<Record<string, unknown>>,
    opts: ExecuteOptions = {},
  ): Promise<unknown> {
    if (this.state !== 'ready') {
      const { arguments: shown } = redactArguments(command, args);
      return Promise.reject(
        this.closeReason !== undefined
          ? this.wrap(this.closeReason, command, shown, [], 0)
          : new HypersealError(
              'HS_ERR_QMP_CONNECTION_CLOSED',
              `QMP ${command} on ${this.label}: not connected`,
              {
                vm: this.label,
                command,
              },
            ),
      );
    }
    return this.send(command, args, opts.timeoutMs ?? this.opts.commandTimeoutMs ?? 30_000);
  }

  private send(
    command: string,
    args: Readonly<Record<string, unknown>> | undefined,
    timeoutMs: number,
  ): Promise<unknown> {
    const { arguments: shown, secrets } = redactArguments(command, args);
    const id = this.nextId++;
    let line: Buffer;
    try {
      line = encodeQmpCommand({ execute: command, arguments: args, id });
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    return new Promise<unknown>((resolve, reject) => {
      const started = Date.now();
      const timer = setTimeout(() => {
        this.pending.delete(id);
        trace('qmp', 'timeout', { vm: this.label, id, command });
        reject(
          new HypersealError(
            'HS_ERR_QMP_TIMEOUT',
            `QMP ${command} on ${this.label}: no answer within ${timeoutMs} ms`,
            this.details(command, shown, Date.now() - started),
          ),
        );
      }, timeoutMs);
      this.pending.set(id, { command, shown, secrets, started, resolve, reject, timer });
      if (traceEnabled('qmp')) trace('qmp', 'execute', { vm: this.label, id, command, arguments: shown });
      this.transport.write(line);
    });
  }

  /** Subscribes to events, all of them or those named `name`; returns the unsubscribe function. */
  onEvent(listener: EventListener, name?: string): () => void {
    const entry = { name, fn: listener };
    this.listeners.add(entry);
    return () => {
      this.listeners.delete(entry);
    };
  }

  /**
   * Resolves with the next event named `name` (and matching `match`). Subscribe before
   * sending the command that causes it: events are not buffered.
   */
  waitForEvent(name: string, opts: WaitForEventOptions = {}): Promise<QmpEvent> {
    const timeoutMs = opts.timeoutMs ?? this.opts.commandTimeoutMs ?? 30_000;
    return new Promise<QmpEvent>((resolve, reject) => {
      if (this.state === 'closed') {
        reject(
          this.closeReason ?? new HypersealError('HS_ERR_QMP_CONNECTION_CLOSED', 'QMP connection closed'),
        );
        return;
      }
      const finish = (): void => {
        clearTimeout(timer);
        unsubscribe();
        const i = this.closeWaiters.indexOf(onClose);
        if (i >= 0) this.closeWaiters.splice(i, 1);
      };
      const onClose = (err: Error): void => {
        finish();
        reject(err);
      };
      const timer = setTimeout(() => {
        finish();
        reject(
          new HypersealError(
            'HS_ERR_QMP_TIMEOUT',
            `no QMP event ${name} from ${this.label} within ${timeoutMs} ms`,
            { vm: this.label, event: name },
          ),
        );
      }, timeoutMs);
      const unsubscribe = this.onEvent((event) => {
        if (opts.match !== undefined && !opts.match(event)) return;
        finish();
        resolve(event);
      }, name);
      this.closeWaiters.push(onClose);
    });
  }

  /** Closes the connection; commands in flight fail with HS_ERR_QMP_CONNECTION_CLOSED. */
  async close(): Promise<void> {
    if (this.state !== 'closed') {
      this.shutdown(
        new HypersealError(
          'HS_ERR_QMP_CONNECTION_CLOSED',
          `QMP connection to ${this.label} was closed by the client`,
          {
            vm: this.label,
          },
        ),
      );
      this.transport.close();
    }
    await this.closed;
  }

  private onData(chunk: Buffer): void {
    if (this.state === 'closed') return;
    let lines: Buffer[];
    let failure: unknown;
    try {
      lines = this.framer.push(chunk);
    } catch (err) {
      lines = [];
      failure = err;
    }
    for (const line of lines) {
      let msg: QmpMessage;
      try {
        msg = decodeQmpLine(line, { maxLineBytes: Number.MAX_SAFE_INTEGER });
      } catch (err) {
        this.protocolFailure(err);
        return;
      }
      this.onMessage(msg);
      // onMessage may have closed the connection (a protocol failure): drop the rest.
      if (!this.isOpen) return;
    }
    if (failure !== undefined) this.protocolFailure(failure);
  }

  private onMessage(msg: QmpMessage): void {
    if (this.state === 'greeting') {
      if (msg.kind !== 'greeting') {
        this.protocolFailure(
          new HypersealError(
            'HS_ERR_QMP_BAD_MESSAGE',
            `${this.label} sent a ${msg.kind} before its QMP greeting`,
          ),
        );
        return;
      }
      this.greetingWaiter?.resolve(msg);
      this.greetingWaiter = undefined;
      return;
    }
    switch (msg.kind) {
      case 'greeting':
        this.protocolFailure(new HypersealError('HS_ERR_QMP_BAD_MESSAGE', `${this.label} greeted twice`));
        return;
      case 'event':
        if (traceEnabled('qmp')) trace('qmp', 'event', { vm: this.label, event: msg.event, data: msg.data });
        for (const l of [...this.listeners]) {
          if (l.name !== undefined && l.name !== msg.event) continue;
          try {
            l.fn(msg);
          } catch (err) {
            // A subscriber's bug must not break the connection other callers depend on.
            trace('qmp', 'event listener threw', { vm: this.label, event: msg.event, error: String(err) });
          }
        }
        return;
      case 'return':
      case 'error': {
        if (msg.id === undefined) {
          // Every request we send has an id; an id-less reply means QEMU could not parse
          // a request, and which one is unknown: the stream is out of step.
          this.protocolFailure(
            new HypersealError(
              'HS_ERR_QMP_BAD_MESSAGE',
              `${this.label} sent a reply without id${msg.kind === 'error' ? `: ${msg.errorClass}: ${msg.desc}` : ''}`,
            ),
          );
          return;
        }
        const p = typeof msg.id === 'number' ? this.pending.get(msg.id) : undefined;
        if (p === undefined) {
          // The late answer to a command that timed out: its caller has already been told.
          trace('qmp', 'discarded reply', { vm: this.label, id: msg.id, kind: msg.kind });
          return;
        }
        this.pending.delete(msg.id as number);
        clearTimeout(p.timer);
        const durationMs = Date.now() - p.started;
        if (msg.kind === 'return') {
          trace('qmp', 'return', { vm: this.label, id: msg.id, command: p.command, durationMs });
          p.resolve(msg.value);
        } else {
          const desc = scrub(msg.desc, p.secrets);
          trace('qmp', 'error', {
            vm: this.label,
            id: msg.id,
            command: p.command,
            errorClass: msg.errorClass,
            desc,
          });
          p.reject(
            new HypersealError(
              'HS_ERR_QMP_COMMAND_FAILED',
              `QMP ${p.command} on ${this.label} failed: ${msg.errorClass}: ${desc}`,
              {
                ...this.details(p.command, p.shown, durationMs),
                errorClass: msg.errorClass,
                desc,
              },
            ),
          );
        }
        return;
      }
    }
  }

  private details(
    command: string,
    shown: Readonly<Record<string, unknown>> | undefined,
    durationMs: number,
  ): Record<string, unknown> {
    return shown === undefined
      ? { vm: this.label, command, durationMs }
      : { vm: this.label, command, arguments: shown, durationMs };
  }

  /** A command-specific copy of a connection-level error (closed, malformed line). */
  private wrap(
    err: Error,
    command: string,
    shown: Readonly<Record<string, unknown>> | undefined,
    secrets: string[],
    durationMs: number,
  ): HypersealError {
    const code: ErrorCode = err instanceof HypersealError ? err.code : 'HS_ERR_QMP_CONNECTION_CLOSED';
    return new HypersealError(
      code,
      `QMP ${command} on ${this.label}: ${scrub(err.message, secrets)}`,
      this.details(command, shown, durationMs),
      {
        cause: err,
      },
    );
  }

  private protocolFailure(err: unknown): void {
    const e = err instanceof Error ? err : new Error(String(err));
    trace('qmp', 'protocol failure', { vm: this.label, error: e.message });
    this.shutdown(e);
    this.transport.close();
  }

  /** Moves to `closed` once: fails every waiter with a command-specific copy of `reason`. */
  private shutdown(reason: Error): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.closeReason = reason;
    this.greetingWaiter?.reject(reason);
    this.greetingWaiter = undefined;
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(this.wrap(reason, p.command, p.shown, p.secrets, Date.now() - p.started));
    }
    for (const w of this.closeWaiters.splice(0)) w(reason);
    this.listeners.clear();
  }
}
