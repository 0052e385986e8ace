/**
 * A small typed client for the manager's REST API, used by the CLI and scripts. It trusts
 * only the manager's CA (from credentials), sends the API token as a bearer token, and
 * turns `{ code, message }` error bodies back into HypersealErrors with the same code.
 */
import { readFileSync } from 'node:fs';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import https from 'node:https';
import type { ErrorCode } from '../errors.js';
import { ErrorCodes, HypersealError } from '../errors.js';

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

export class ApiClient {
  private readonly agent: https.Agent;
  private readonly base: URL;

  constructor(private readonly creds: { managerUrl: string; caPem: string | Buffer; token?: string }) {
    this.base = new URL(creds.managerUrl);
    this.agent = new https.Agent({ keepAlive: true, ca: creds.caPem });
  }

  static fromCredentials(path?: string): ApiClient {
    const c = loadCredentials(findCredentials(path));
    return new ApiClient({ managerUrl: c.managerUrl, caPem: readFileSync(c.caPath), token: c.token });
  }

  close(): void {
    this.agent.destroy();
  }

  request<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolvePromise, reject) => {
      const req = https.request(
        {
          host: this.base.hostname,
          port: this.base.port,
          method,
          path: `/api/v1${path}`,
          agent: this.agent,
          headers: {
            ...(this.creds.token ? { authorization: `Bearer ${this.creds.token}` } : {}),
            ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown = null;
            try {
              parsed = text === '' ? null : JSON.parse(text);
            } catch {
              parsed = text;
            }
            const status = res.statusCode ?? 500;
            if (status >= 400) {
              const e = parsed as { code?: string; message?: string } | null;
              const code = (
                e?.code !== undefined && e.code in ErrorCodes ? e.code : 'HS_ERR_INTERNAL'
              ) as ErrorCode;
              reject(new HypersealError(code, e?.message ?? `HTTP ${status}`));
              return;
            }
            resolvePromise({ status, body: parsed as T });
          });
        },
      );
      req.on('error', (err) =>
        reject(
          new HypersealError(
            'HS_ERR_HOST_UNAVAILABLE',
            `cannot reach the manager at ${this.creds.managerUrl}: ${err.message}`,
          ),
        ),
      );
      req.end(payload);
    });
  }

  /** Follows a server-sent-events stream, calling `onData` with each event's data, until it ends. */
  stream(path: string, onData: (data: string) => void): Promise<void> {
    return new Promise((resolvePromise, reject) => {
      const req = https.request(
        {
          host: this.base.hostname,
          port: this.base.port,
          method: 'GET',
          path: `/api/v1${path}`,
          agent: this.agent,
          headers: {
            accept: 'text/event-stream',
            ...(this.creds.token ? { authorization: `Bearer ${this.creds.token}` } : {}),
          },
        },
        (res) => {
          if ((res.statusCode ?? 500) >= 400) {
            reject(new HypersealError('HS_ERR_INTERNAL', `stream ${path} answered HTTP ${res.statusCode}`));
            res.resume();
            return;
          }
          let buffered = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            buffered += chunk;
            let end: number;
            while ((end = buffered.indexOf('\n\n')) >= 0) {
              const block = buffered.slice(0, end);
              buffered = buffered.slice(end + 2);
              const data = block
                .split('\n')
                .filter((l) => l.startsWith('data: '))
                .map((l) => l.slice(6))
                .join('\n');
              if (data) onData(data);
            }
          });
          res.on('end', () => resolvePromise());
        },
      );
      req.on('error', (err) =>
        reject(new HypersealError('HS_ERR_HOST_UNAVAILABLE', `stream failed: ${err.message}`)),
      );
      req.end();
    });
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

  /** Polls a task until it finishes, reporting progress; returns the final task. */
  async waitTask<T extends { id: string; state: string; progress: number }>(
    id: string,
    onProgress?: (t: T) => void,
    timeoutMs = 600_000,
  ): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const t = await this.get<T>(`/tasks/${encodeURIComponent(id)}?waitMs=1000`);
      onProgress?.(t);
      if (t.state === 'succeeded' || t.state === 'failed') return t;
      if (Date.now() > deadline)
        throw new HypersealError('HS_ERR_INTERNAL', `task ${id} did not finish in ${timeoutMs} ms`);
    }
  }
}
