/**
 * The SDK in a browser (the web UI): calls go with fetch to the page's own origin and
 * carry the session cookie (HttpOnly, SameSite=Strict), so no token is ever in script reach.
 */
import { HypersealError } from '../errors.js';
import { Hyperseal } from './hyperseal.js';
import type { Transport } from './transport.js';
import { errorFromResponse, parseBody, queryString, takeSseEvents } from './transport.js';

export class FetchTransport implements Transport {
  constructor(private readonly base = '') {}

  async request<T>(
    method: string,
    path: string,
    opts: { query?: object | undefined; body?: unknown } = {},
  ): Promise<T> {
    let res: Response;
    try {
      res = await fetch(`${this.base}/api/v1${path}${queryString(opts.query)}`, {
        method,
        credentials: 'same-origin',
        headers: opts.body === undefined ? {} : { 'content-type': 'application/json' },
        ...(opts.body === undefined ? {} : { body: JSON.stringify(opts.body) }),
      });
    } catch (err) {
      throw new HypersealError(
        'HS_ERR_HOST_UNAVAILABLE',
        `cannot reach the manager: ${(err as Error).message}`,
      );
    }
    const body = parseBody(await res.text());
    if (!res.ok) throw errorFromResponse(res.status, body);
    return body as T;
  }

  async stream(
    path: string,
    opts: { query?: object | undefined; onData: (data: string) => void; signal?: AbortSignal | undefined },
  ): Promise<void> {
    const res = await fetch(`${this.base}/api/v1${path}${queryString(opts.query)}`, {
      credentials: 'same-origin',
      headers: { accept: 'text/event-stream' },
      ...(opts.signal !== undefined ? { signal: opts.signal } : {}),
    });
    if (!res.ok || res.body === null) throw errorFromResponse(res.status, parseBody(await res.text()));
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffered = takeSseEvents(buffered + value, opts.onData);
      }
    } catch (err) {
      if (opts.signal?.aborted === true) return;
      throw err;
    }
  }
}

/** The typed client for the page's manager; log in with `login({ user, password })` first. */
export function browserClient(base = ''): Hyperseal {
  return new Hyperseal(new FetchTransport(base));
}
