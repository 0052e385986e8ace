/**
 * How SDK calls travel: one interface, two implementations — Node (https, trusting only the
 * manager's CA, bearer token: `./node.ts`) and the browser (fetch with the session cookie:
 * `./browser.ts`). Browser-safe: no Node imports here.
 */
import type { ErrorCode } from '../errors.js';
import { ErrorCodes, HypersealError } from '../errors.js';

export type Query = Readonly<Record<string, string | number | boolean | undefined>>;

export interface Transport {
  /** Calls `/api/v1{path}`; resolves with the JSON (or text) body, rejects with a HypersealError. */
  request<T>(method: string, path: string, opts?: { query?: object | undefined; body?: unknown }): Promise<T>;
  /** Follows a server-sent-events stream, calling `onData` with each event's data, until it ends or `signal` aborts. */
  stream(
    path: string,
    opts: { query?: object | undefined; onData: (data: string) => void; signal?: AbortSignal | undefined },
  ): Promise<void>;
}

/** `?a=1&b=x` from the defined entries of a query object ('' when none). */
export function queryString(query: object | undefined): string {
  if (query === undefined) return '';
  const parts = Object.entries(query as Query)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`);
  return parts.length === 0 ? '' : `?${parts.join('&')}`;
}

/** Parses a response body: JSON when it is JSON, else the text itself (NDJSON exports). */
export function parseBody(text: string): unknown {
  if (text === '') return null;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

/** The HypersealError an error response stands for: the server's code when it is one we know. */
export function errorFromResponse(status: number, body: unknown): HypersealError {
  const e = body as { code?: string; message?: string } | null;
  const code = (e?.code !== undefined && e.code in ErrorCodes ? e.code : 'HS_ERR_INTERNAL') as ErrorCode;
  return new HypersealError(code, e?.message ?? `HTTP ${status}`);
}

/** Splits a server-sent-events buffer into complete events' data; returns the rest. */
export function takeSseEvents(buffered: string, onData: (data: string) => void): string {
  let rest = buffered;
  let end: number;
  while ((end = rest.indexOf('\n\n')) >= 0) {
    const block = rest.slice(0, end);
    rest = rest.slice(end + 2);
    const data = block
      .split('\n')
      .filter((l) => l.startsWith('data: '))
      .map((l) => l.slice(6))
      .join('\n');
    if (data) onData(data);
  }
  return rest;
}
