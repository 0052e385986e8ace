/**
 * Webhook delivery of alerts, and the check a receiver runs.
 *
 * Each request is a JSON POST signed with the rule's secret:
 *
 *   X-Hyperseal-Timestamp: 1714564800000                  (ms since the epoch, when sent)
 *   X-Hyperseal-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>
 *
 * The timestamp is inside the HMAC so that a receiver can refuse a replayed request (one
 * captured and sent again later): verifyWebhookSignature() accepts only timestamps within
 * a tolerance of its own clock. Each attempt is signed afresh, so a retry after a long
 * backoff is not refused as stale.
 *
 * Retries: a network error, a timeout, a 5xx, 408 (Request Timeout) or 429 (Too Many
 * Requests) may pass, so they are retried with exponential backoff and jitter; any other
 * 4xx or a redirect says the request itself is wrong (URL, secret, clock) and sending it
 * again cannot help, so it is not. Redirects are never followed: the signed alert would
 * go to a URL nobody configured. A receiver may see an alert twice (a timeout after it
 * processed the request), so it should ignore an alert event id it has already seen.
 *
 * The secret never appears in an error: messages name the URL's origin only (a URL can
 * carry a token), and a receiver's answer quoted in an error has the secret blanked out
 * in case it echoes its configuration.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { HypersealError, type ErrorCode } from '../../errors.js';
import { REDACTED } from '../redact.js';
import { webhookSecretProblem, webhookUrlProblem, type WebhookAction } from './rule.js';

export const SIGNATURE_HEADER = 'X-Hyperseal-Signature';
export const TIMESTAMP_HEADER = 'X-Hyperseal-Timestamp';

export interface WebhookOptions {
  /** Per attempt, connecting and answering included (default 5000). */
  readonly timeoutMs?: number;
  /** Attempts after the first (default 3, so at most 4 requests). */
  readonly retries?: number;
  /** Wait before the first retry; doubled for each next one, with jitter (default 500). */
  readonly backoffMs?: number;
  /** Upper bound of one wait (default 30000). */
  readonly maxBackoffMs?: number;
  /** Cancels the delivery (manager shutdown); reported as HS_ERR_ALERT_WEBHOOK_FAILED. */
  readonly signal?: AbortSignal;
  /** Clock for the timestamp header, in ms since the epoch (tests). */
  readonly now?: () => number;
}

export interface WebhookDelivery {
  /** The receiver's 2xx status. */
  readonly status: number;
  /** Requests made, the successful one included. */
  readonly attempts: number;
}

/** `sha256=<hex>` over `<timestamp>.<body>`; body as the exact bytes sent. */
export function signWebhook(secret: string, timestamp: string, body: string | Uint8Array): string {
  return `sha256=${hmac(secret, timestamp, body).toString('hex')}`;
}

function hmac(secret: string, timestamp: string, body: string | Uint8Array): Buffer {
  return createHmac('sha256', secret).update(timestamp).update('.').update(body).digest();
}

export interface VerifyOptions {
  /** How far the timestamp may be from `now`, either way (default 5 minutes). */
  readonly toleranceMs?: number;
  /** The receiver's clock, ms since the epoch (default Date.now()). */
  readonly now?: number;
}

/**
 * For receivers: whether a request carries a valid signature by `secret` over `body`
 * (the raw bytes received — not a re-serialized parse, which would differ) and a fresh
 * timestamp. Header values may be passed as Node gives them: a repeated header (an
 * array) is refused, as is anything malformed. The comparison is constant-time, so the
 * answer's timing does not reveal how much of a forged signature was right.
 */
export function verifyWebhookSignature(
  secret: string,
  timestamp: string | readonly string[] | undefined,
  body: string | Uint8Array,
  header: string | readonly string[] | undefined,
  { toleranceMs = 5 * 60_000, now = Date.now() }: VerifyOptions = {},
): boolean {
  if (typeof secret !== 'string' || secret === '') return false;
  if (typeof timestamp !== 'string' || !/^\d{1,15}$/.test(timestamp)) return false;
  if (typeof header !== 'string') return false;
  const m = /^sha256=([0-9a-fA-F]{64})$/.exec(header.trim());
  if (m?.[1] === undefined) return false;
  if (!(Math.abs(now - Number(timestamp)) <= toleranceMs)) return false;
  return timingSafeEqual(hmac(secret, timestamp, body), Buffer.from(m[1], 'hex'));
}

// ---------------------------------------------------------------------------------------
// Sending.

type Outcome =
  | { kind: 'ok'; status: number }
  | { kind: 'http'; status: number; answer: string }
  | { kind: 'network'; reason: string }
  | { kind: 'timeout' }
  | { kind: 'cancelled' };

function badOption(name: string, why: string): HypersealError {
  return new HypersealError('HS_ERR_INVALID_ARGUMENT', `webhook: ${name} ${why}`, { field: name });
}

function intOption(v: number | undefined, name: string, dflt: number, min: number, max: number): number {
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || v < min || v > max)
    throw badOption(name, `must be an integer from ${min} to ${max}`);
  return v;
}

/**
 * POSTs `payload` as JSON to the webhook, signed, retrying as described above. Resolves
 * on the first 2xx; otherwise throws HS_ERR_ALERT_WEBHOOK_REJECTED (4xx or redirect, not
 * retried), HS_ERR_ALERT_WEBHOOK_TIMEOUT (the last attempt timed out) or
 * HS_ERR_ALERT_WEBHOOK_FAILED (unreachable or 5xx on every attempt, or cancelled);
 * HS_ERR_INVALID_ARGUMENT for a bad URL, secret, option or a payload that is not JSON.
 */
export async function sendWebhook(
  target: WebhookAction,
  payload: object,
  options: WebhookOptions = {},
): Promise<WebhookDelivery> {
  const urlProblem = typeof target.url === 'string' ? webhookUrlProblem(target.url) : 'must be a string';
  if (urlProblem !== undefined) throw badOption('url', urlProblem);
  const secretProblem = webhookSecretProblem(target.secret);
  if (secretProblem !== undefined) throw badOption('secret', secretProblem);
  const timeoutMs = intOption(options.timeoutMs, 'timeoutMs', 5000, 1, 600_000);
  const retries = intOption(options.retries, 'retries', 3, 0, 20);
  const backoffMs = intOption(options.backoffMs, 'backoffMs', 500, 0, 600_000);
  const maxBackoffMs = intOption(options.maxBackoffMs, 'maxBackoffMs', 30_000, 0, 3_600_000);
  const now = options.now ?? Date.now;

  let body: string | undefined;
  try {
    body = JSON.stringify(payload);
  } catch (err) {
    throw badOption('payload', `is not JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  if (typeof body !== 'string') throw badOption('payload', 'is not JSON');

  const origin = new URL(target.url).origin;
  const scrub = (s: string): string => s.split(target.secret).join(REDACTED).split(target.url).join(origin);

  for (let attempt = 1; ; attempt++) {
    const outcome = await attemptOnce(target, body, String(now()), timeoutMs, options.signal);
    if (outcome.kind === 'ok') return { status: outcome.status, attempts: attempt };
    const retryable =
      outcome.kind === 'network' ||
      outcome.kind === 'timeout' ||
      (outcome.kind === 'http' &&
        (outcome.status >= 500 || outcome.status === 408 || outcome.status === 429));
    if (!retryable || attempt > retries || options.signal?.aborted === true)
      throw failure(outcome, origin, attempt, retryable, scrub);
    const wait = Math.min(maxBackoffMs, backoffMs * 2 ** (attempt - 1));
    // Jitter: receivers recovering from an outage are not hit by every sender at once.
    await sleep(wait * (0.5 + Math.random() / 2), options.signal);
  }
}

function failure(
  outcome: Exclude<Outcome, { kind: 'ok' }>,
  origin: string,
  attempts: number,
  retryable: boolean,
  scrub: (s: string) => string,
): HypersealError {
  const tries = attempts === 1 ? '1 attempt' : `${attempts} attempts`;
  const details = { url: origin, attempts };
  let code: ErrorCode;
  let what: string;
  switch (outcome.kind) {
    case 'http': {
      const answer = outcome.answer === '' ? '' : ` ${JSON.stringify(scrub(outcome.answer))}`;
      code =
        retryable || outcome.status >= 500 ? 'HS_ERR_ALERT_WEBHOOK_FAILED' : 'HS_ERR_ALERT_WEBHOOK_REJECTED';
      what =
        code === 'HS_ERR_ALERT_WEBHOOK_REJECTED'
          ? `was refused with HTTP ${outcome.status}${answer} (not retried${outcome.status < 400 ? ': redirects are not followed' : ''})`
          : `failed after ${tries}: HTTP ${outcome.status}${answer}`;
      return new HypersealError(code, `webhook to ${origin} ${what}`, { ...details, status: outcome.status });
    }
    case 'timeout':
      return new HypersealError(
        'HS_ERR_ALERT_WEBHOOK_TIMEOUT',
        `webhook to ${origin} timed out after ${tries} (no answer within the timeout)`,
        details,
      );
    case 'network':
      return new HypersealError(
        'HS_ERR_ALERT_WEBHOOK_FAILED',
        `webhook to ${origin} failed after ${tries}: ${scrub(outcome.reason)}`,
        details,
      );
    case 'cancelled':
      return new HypersealError('HS_ERR_ALERT_WEBHOOK_FAILED', `webhook to ${origin} was cancelled`, details);
  }
}

async function attemptOnce(
  target: WebhookAction,
  body: string,
  timestamp: string,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<Outcome> {
  if (signal?.aborted === true) return { kind: 'cancelled' };
  const ctl = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    ctl.abort();
  }, timeoutMs);
  let cancelled = false;
  const onCancel = (): void => {
    cancelled = true;
    ctl.abort();
  };
  signal?.addEventListener('abort', onCancel, { once: true });
  try {
    const res = await fetch(target.url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json; charset=utf-8',
        'user-agent': 'hyperseal-alerts',
        [TIMESTAMP_HEADER]: timestamp,
        [SIGNATURE_HEADER]: signWebhook(target.secret, timestamp, body),
      },
      body,
      redirect: 'manual',
      signal: ctl.signal,
    });
    if (res.status >= 200 && res.status < 300) {
      // Not read, but released, so the connection can be reused.
      await res.body?.cancel().catch(() => undefined);
      return { kind: 'ok', status: res.status };
    }
    return { kind: 'http', status: res.status, answer: await answerStart(res) };
  } catch (err) {
    if (cancelled) return { kind: 'cancelled' };
    if (timedOut) return { kind: 'timeout' };
    return { kind: 'network', reason: networkReason(err) };
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onCancel);
  }
}

/** The first bytes of an error answer, for the message; the rest is not read. */
async function answerStart(res: Response, max = 512): Promise<string> {
  if (res.body === null) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let n = 0;
  while (n < max) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    n += value.length;
  }
  await reader.cancel().catch(() => undefined);
  const text = Buffer.concat(chunks).subarray(0, max).toString('utf8').trim();
  return text.length > 200 ? `${text.slice(0, 199)}…` : text;
}

/** fetch() says only "fetch failed"; the system's words (ECONNREFUSED …) are in the cause. */
function networkReason(err: unknown): string {
  const cause: unknown = err instanceof Error && err.cause !== undefined ? err.cause : err;
  if (cause instanceof Error) {
    const code = (cause as Error & { code?: unknown }).code;
    const msg = cause.message.slice(0, 200);
    return typeof code === 'string' && !msg.includes(code) ? `${code}: ${msg}` : msg;
  }
  return String(cause).slice(0, 200);
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    // Resolves early when cancelled; the loop then sees the aborted signal.
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
