/**
 * The SDK on Node.js: an https transport that trusts only the manager's CA (from
 * credentials) and sends the API token as a bearer token, and `ApiClient` — the typed
 * client (every operation, `waitTask`, `run`) plus untyped `get`/`post`/… for scripts.
 * Error bodies `{ code, message }` come back as HypersealErrors with the same code.
 */
import { readFileSync } from 'node:fs';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import https from 'node:https';
import { HypersealError } from '../errors.js';
import { Hyperseal } from './hyperseal.js';
import type { Transport } from './transport.js';
import { errorFromResponse, parseBody, queryString, takeSseEvents } from './transport.js';

export interface Credentials {
  managerUrl: string;
  /** Path of the manager's CA certificate (relative paths are relative to the credentials file). */
  caPath: string;
  token: string;
}

/** Where credentials are looked for: --credentials, $HYPERSEAL_CREDENTIALS, ./.hyperseal, ~/.config/hyperseal. */
export function findCredentials(explicit?: string): string {
  const candidates = [
    explicit,
    process.env.HYPERSEAL_CREDENTIALS,
    join(process.cwd(), '.hyperseal', 'credentials.json'),
    join(process.env.XDG_CONFIG_HOME ?? join(homedir(), '.config'), 'hyperseal', 'credentials.json'),
  ].filter((c): c is string => c !== undefined && c !== '');
  const found = candidates.find((c) => existsSync(c));
  if (found === undefined) {
    throw new HypersealError(
      'HS_ERR_AUTH_REQUIRED',
      'no credentials: run `hyperseal login`, or `npm run up` (writes .hyperseal/credentials.json), or pass --credentials FILE',
    );
  }
  return found;
}

export function loadCredentials(path: string): Credentials {
  let parsed: Partial<Credentials>;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8')) as Partial<Credentials>;
  } catch (err) {
    throw new HypersealError('HS_ERR_CONFIG', `cannot read credentials ${path}: ${(err as Error).message}`);
  }
  if (!parsed.managerUrl || !parsed.caPath || !parsed.token) {
    throw new HypersealError('HS_ERR_CONFIG', `credentials ${path} need managerUrl, caPath and token`);
  }
  return {
    managerUrl: parsed.managerUrl,
    caPath: resolve(dirname(path), parsed.caPath),
    token: parsed.token,
  };
}

export interface ClientOptions {
  managerUrl: string;
  /** The manager's CA certificate: the only one trusted. */
  caPem: string | Buffer;
  /** An API token, sent as a bearer token. */
  token?: string;
  /** Or a session id from `login` (sent as the browser's cookie would be): for `hyperseal login`. */
  session?: string;
}

/** Calls over https to one manager, trusting only its CA. */
export class NodeTransport implements Transport {
  readonly agent: https.Agent;
  private readonly base: URL;

  constructor(private readonly creds: ClientOptions) {
    this.base = new URL(creds.managerUrl);
    this.agent = new https.Agent({ keepAlive: true, ca: creds.caPem });
  }

  private headers(extra: Record<string, string | number>): Record<string, string | number> {
    return {
      ...(this.creds.token ? { authorization: `Bearer ${this.creds.token}` } : {}),
      ...(this.creds.session ? { cookie: `hs_session=${this.creds.session}` } : {}),
      ...extra,
    };
  }

  private unreachable(err: Error): HypersealError {
    return new HypersealError(
      'HS_ERR_HOST_UNAVAILABLE',
      `cannot reach the manager at ${this.creds.managerUrl}: ${err.message}`,
    );
  }

  async request<T>(
    method: string,
    path: string,
    opts: { query?: object | undefined; body?: unknown } = {},
  ): Promise<T> {
    return (await this.exchange<T>(method, path + queryString(opts.query), opts.body)).body;
  }

  /** One call, with its status (tests look at 201 vs 202). */
  exchange<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolvePromise, reject) => {
      const req = https.request(
        {
          host: this.base.hostname,
          port: this.base.port,
          method,
          path: `/api/v1${path}`,
          agent: this.agent,
          headers: this.headers(
            payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
          ),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const parsed = parseBody(Buffer.concat(chunks).toString('utf8'));
            const status = res.statusCode ?? 500;
            if (status >= 400) reject(errorFromResponse(status, parsed));
            else resolvePromise({ status, body: parsed as T });
          });
        },
      );
      req.on('error', (err) => reject(this.unreachable(err)));
      req.end(payload);
    });
  }

  stream(
    path: string,
    opts: { query?: object | undefined; onData: (data: string) => void; signal?: AbortSignal | undefined },
  ): Promise<void> {
    return new Promise((resolvePromise, reject) => {
      const req = https.request(
        {
          host: this.base.hostname,
          port: this.base.port,
          method: 'GET',
          path: `/api/v1${path}${queryString(opts.query)}`,
          agent: this.agent,
          headers: this.headers({ accept: 'text/event-stream' }),
          ...(opts.signal !== undefined ? { signal: opts.signal } : {}),
        },
        (res) => {
          if ((res.statusCode ?? 500) >= 400) {
            reject(new HypersealError('HS_ERR_INTERNAL', `stream ${path} answered HTTP ${res.statusCode}`));
            res.resume();
            return;
          }
          let buffered = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => (buffered = takeSseEvents(buffered + chunk, opts.onData)));
          res.on('end', () => resolvePromise());
          res.on('error', () => resolvePromise());
        },
      );
      req.on('error', (err) => {
        if (opts.signal?.aborted === true) resolvePromise();
        else reject(new HypersealError('HS_ERR_HOST_UNAVAILABLE', `stream failed: ${err.message}`));
      });
      req.end();
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

/**
 * The typed client on Node: `api.listVms()`, `await api.run(api.encryptVm(id, {}), onProgress)`,
 * plus untyped `get`/`post`/`patch`/`put`/`delete` for quick scripts.
 */
export class ApiClient extends Hyperseal {
  declare readonly transport: NodeTransport;

  constructor(creds: ClientOptions) {
    super(new NodeTransport(creds));
  }

  /** From a credentials file: --credentials, $HYPERSEAL_CREDENTIALS, ./.hyperseal, ~/.config/hyperseal. */
  static fromCredentials(path?: string): ApiClient {
    const c = loadCredentials(findCredentials(path));
    return new ApiClient({ managerUrl: c.managerUrl, caPem: readFileSync(c.caPath), token: c.token });
  }

  close(): void {
    this.transport.close();
  }

  request<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
    return this.transport.exchange<T>(method, path, body);
  }

  stream(path: string, onData: (data: string) => void, signal?: AbortSignal): Promise<void> {
    return this.transport.stream(path, { onData, signal });
  }

  async get<T>(path: string): Promise<T> {
    return (await this.request<T>('GET', path)).body;
  }
  async post<T>(path: string, body: unknown = {}): Promise<T> {
    return (await this.request<T>('POST', path, body)).body;
  }
  async patch<T>(path: string, body: unknown): Promise<T> {
    return (await this.request<T>('PATCH', path, body)).body;
  }
  async put<T>(path: string, body: unknown): Promise<T> {
    return (await this.request<T>('PUT', path, body)).body;
  }
  async delete(path: string): Promise<void> {
    await this.request('DELETE', path);
  }
}
