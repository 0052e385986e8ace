/**
 * Webhooks against a real HTTP server on 127.0.0.1: the body and headers that arrive, the
 * signature as a receiver checks it (right secret, wrong secret, altered body, replayed
 * timestamp), retries on 5xx/429 but not on 4xx or redirects, timeouts, unreachable
 * receivers, cancellation — and the secret in no error, even when the receiver echoes it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { HypersealError } from '../../errors.js';
import { sendWebhook, signWebhook, verifyWebhookSignature } from './webhook.js';

const SECRET = 'whsec-test-0123456789abcdef';
const PAYLOAD = {
  alert: { type: 'alert.raised', message: "Alert rule 'pci-nic' matched event #0: …" },
  n: 1,
};
/** Fast retries for tests; the schedule itself is checked in its own test. */
const FAST = { backoffMs: 1, timeoutMs: 2000 } as const;

interface Received {
  headers: IncomingMessage['headers'];
  body: string;
  at: number;
}

type Responder = (res: ServerResponse, req: Received) => void;

/** A receiver that answers the n-th request with responders[n] (the last one repeats). */
async function receiver(
  ...responders: Responder[]
): Promise<{ url: string; got: Received[]; close: () => Promise<void> }> {
  const got: Received[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const r = { headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), at: Date.now() };
      got.push(r);
      const respond = responders[Math.min(got.length, responders.length) - 1];
      respond?.(res, r);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hooks/hyperseal`,
    got,
    close: async () => {
      // Drops kept-alive and hanging connections, so close() does not wait for them.
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const status =
  (code: number, body = '', headers: Record<string, string> = {}): Responder =>
  (res) => {
    res.writeHead(code, { 'content-type': 'text/plain', ...headers });
    res.end(body);
  };

/** Runs `fn`, expecting a HypersealError; returns it after checking the secret is absent. */
async function rejection(fn: () => Promise<unknown>): Promise<HypersealError> {
  try {
    await fn();
  } catch (err) {
    assert.ok(err instanceof HypersealError, `not a HypersealError: ${String(err)}`);
    assert.ok(!err.message.includes(SECRET), `secret in message: ${err.message}`);
    assert.ok(!JSON.stringify(err.toJSON()).includes(SECRET), 'secret in details');
    return err;
  }
  assert.fail('expected a rejection');
}

void test('the body arrives as JSON with a signature that verifies with the secret only', async () => {
  const r = await receiver(status(204));
  try {
    const sent = await sendWebhook({ url: r.url, secret: SECRET }, PAYLOAD, { now: () => 1714564800000 });
    assert.deepEqual(sent, { status: 204, attempts: 1 });
    assert.equal(r.got.length, 1);
    const [req] = r.got as [Received];
    assert.deepEqual(JSON.parse(req.body), PAYLOAD);
    assert.equal(req.headers['content-type'], 'application/json; charset=utf-8');
    assert.equal(req.headers['x-hyperseal-timestamp'], '1714564800000');
    const sig = req.headers['x-hyperseal-signature'];
    assert.match(String(sig), /^sha256=[0-9a-f]{64}$/);
    assert.equal(sig, signWebhook(SECRET, '1714564800000', req.body));

    const ts = req.headers['x-hyperseal-timestamp'];
    const at = { now: 1714564800000 + 1000 };
    assert.equal(verifyWebhookSignature(SECRET, ts, req.body, sig, at), true);
    assert.equal(verifyWebhookSignature(SECRET, ts, Buffer.from(req.body), sig, at), true, 'raw bytes');
    assert.equal(verifyWebhookSignature('another-secret-0123456789', ts, req.body, sig, at), false);
    assert.equal(verifyWebhookSignature(SECRET, ts, req.body.replace('"n":1', '"n":2'), sig, at), false);
    assert.equal(
      verifyWebhookSignature(SECRET, '1714564800001', req.body, sig, at),
      false,
      'timestamp is signed',
    );
    assert.equal(
      verifyWebhookSignature(SECRET, ts, req.body, String(sig).toUpperCase().replace('SHA256', 'sha256'), at),
      true,
    );
    assert.equal(
      verifyWebhookSignature(SECRET, ts, req.body, [String(sig), String(sig)], at),
      false,
      'repeated header',
    );
    assert.equal(verifyWebhookSignature(SECRET, undefined, req.body, sig, at), false);
    assert.equal(verifyWebhookSignature(SECRET, ts, req.body, undefined, at), false);
    assert.equal(verifyWebhookSignature(SECRET, ts, req.body, String(sig).slice(0, -2), at), false);
    assert.equal(verifyWebhookSignature(SECRET, ts, req.body, `sha1=${'0'.repeat(64)}`, at), false);
    assert.equal(verifyWebhookSignature(SECRET, `${String(ts)}.5`, req.body, sig, at), false);
    // Replays: the same request 6 minutes later (or from the future) is refused by default,
    // accepted with a wider tolerance.
    const later = { now: 1714564800000 + 6 * 60_000 };
    assert.equal(verifyWebhookSignature(SECRET, ts, req.body, sig, later), false);
    assert.equal(
      verifyWebhookSignature(SECRET, ts, req.body, sig, { now: 1714564800000 - 6 * 60_000 }),
      false,
    );
    assert.equal(
      verifyWebhookSignature(SECRET, ts, req.body, sig, { ...later, toleranceMs: 10 * 60_000 }),
      true,
    );
  } finally {
    await r.close();
  }
});

void test('a 500 then a 200: retried once, succeeds, each attempt signed afresh', async () => {
  const r = await receiver(status(500, 'busy'), status(200, 'ok'));
  try {
    let clock = 1714564800000;
    const sent = await sendWebhook({ url: r.url, secret: SECRET }, PAYLOAD, {
      ...FAST,
      now: () => (clock += 1000),
    });
    assert.deepEqual(sent, { status: 200, attempts: 2 });
    assert.equal(r.got.length, 2);
    const [first, second] = r.got as [Received, Received];
    assert.equal(first.body, second.body);
    assert.equal(first.headers['x-hyperseal-timestamp'], '1714564801000');
    assert.equal(second.headers['x-hyperseal-timestamp'], '1714564802000');
    for (const req of r.got) {
      const ts = req.headers['x-hyperseal-timestamp'];
      const ok = verifyWebhookSignature(SECRET, ts, req.body, req.headers['x-hyperseal-signature'], {
        now: Number(ts),
      });
      assert.equal(ok, true);
    }
  } finally {
    await r.close();
  }
});

void test('a 400 is not retried: HS_ERR_ALERT_WEBHOOK_REJECTED, status and answer, never the secret', async () => {
  // A receiver that echoes its configuration, secret included.
  const r = await receiver(
    status(400, `bad signature; expected secret ${SECRET}\r\nX-Injected: 1`),
    status(200),
  );
  try {
    const err = await rejection(() => sendWebhook({ url: r.url, secret: SECRET }, PAYLOAD, FAST));
    assert.equal(err.code, 'HS_ERR_ALERT_WEBHOOK_REJECTED');
    assert.equal(r.got.length, 1, 'not retried');
    const origin = new URL(r.url).origin;
    assert.equal(
      err.message,
      `webhook to ${origin} was refused with HTTP 400 "bad signature; expected secret [redacted]\\r\\nX-Injected: 1" (not retried)`,
    );
    assert.deepEqual(err.details, { url: origin, attempts: 1, status: 400 });
    assert.ok(
      !err.message.includes('/hooks/hyperseal'),
      'the URL path (which may hold a token) is not shown',
    );
  } finally {
    await r.close();
  }
});

void test('5xx on every attempt: HS_ERR_ALERT_WEBHOOK_FAILED after 1 + retries attempts; 429 is retried', async () => {
  const r = await receiver(status(503, 'down'));
  try {
    const err = await rejection(() =>
      sendWebhook({ url: r.url, secret: SECRET }, PAYLOAD, { ...FAST, retries: 2 }),
    );
    assert.equal(err.code, 'HS_ERR_ALERT_WEBHOOK_FAILED');
    assert.match(err.message, /failed after 3 attempts: HTTP 503 "down"$/);
    assert.equal(r.got.length, 3);
  } finally {
    await r.close();
  }
  const limited = await receiver(status(429), status(202));
  try {
    assert.deepEqual(await sendWebhook({ url: limited.url, secret: SECRET }, PAYLOAD, FAST), {
      status: 202,
      attempts: 2,
    });
  } finally {
    await limited.close();
  }
});

void test('redirects are not followed and not retried', async () => {
  const other = await receiver(status(200));
  const r = await receiver(status(307, '', { location: other.url }));
  try {
    const err = await rejection(() => sendWebhook({ url: r.url, secret: SECRET }, PAYLOAD, FAST));
    assert.equal(err.code, 'HS_ERR_ALERT_WEBHOOK_REJECTED');
    assert.match(err.message, /HTTP 307 \(not retried: redirects are not followed\)$/);
    assert.equal(r.got.length, 1);
    assert.equal(other.got.length, 0);
  } finally {
    await r.close();
    await other.close();
  }
});

void test('a receiver that does not answer: HS_ERR_ALERT_WEBHOOK_TIMEOUT, retried, within the time', async () => {
  const r = await receiver(() => undefined);
  try {
    const start = Date.now();
    const err = await rejection(() =>
      sendWebhook({ url: r.url, secret: SECRET }, PAYLOAD, { timeoutMs: 150, retries: 1, backoffMs: 1 }),
    );
    const took = Date.now() - start;
    assert.equal(err.code, 'HS_ERR_ALERT_WEBHOOK_TIMEOUT');
    assert.match(err.message, /timed out after 2 attempts/);
    assert.equal(r.got.length, 2, 'a timeout is retried');
    assert.ok(took >= 290 && took < 2000, `took ${took} ms`);
  } finally {
    await r.close();
  }
});

void test('nothing listening: HS_ERR_ALERT_WEBHOOK_FAILED with the system’s words', async () => {
  const r = await receiver(status(200));
  const url = r.url;
  await r.close();
  const err = await rejection(() => sendWebhook({ url, secret: SECRET }, PAYLOAD, { ...FAST, retries: 1 }));
  assert.equal(err.code, 'HS_ERR_ALERT_WEBHOOK_FAILED');
  assert.match(err.message, /failed after 2 attempts: .*ECONNREFUSED/);
});

void test('backoff: waits grow between attempts', async () => {
  const r = await receiver(status(500), status(500), status(200));
  try {
    const sent = await sendWebhook({ url: r.url, secret: SECRET }, PAYLOAD, { backoffMs: 100, retries: 2 });
    assert.equal(sent.attempts, 3);
    const [a, b, c] = r.got.map((x) => x.at) as [number, number, number];
    // Jitter keeps each wait within [½, 1] of 100 ms, then of 200 ms.
    assert.ok(b - a >= 45 && b - a < 400, `first wait ${b - a} ms`);
    assert.ok(c - b >= 95 && c - b < 600, `second wait ${c - b} ms`);
  } finally {
    await r.close();
  }
});

void test('cancelled by the caller: stops waiting, HS_ERR_ALERT_WEBHOOK_FAILED', async () => {
  const r = await receiver(status(500));
  try {
    const ctl = new AbortController();
    setTimeout(() => ctl.abort(), 100);
    const start = Date.now();
    const err = await rejection(() =>
      sendWebhook({ url: r.url, secret: SECRET }, PAYLOAD, {
        backoffMs: 5000,
        retries: 3,
        signal: ctl.signal,
      }),
    );
    assert.equal(err.code, 'HS_ERR_ALERT_WEBHOOK_FAILED');
    assert.match(err.message, /was cancelled$/);
    assert.ok(Date.now() - start < 2000, 'did not sit out the 5 s backoff');
    assert.equal(r.got.length, 1);
  } finally {
    await r.close();
  }
});

void test('bad targets and payloads are refused before any request, without the secret', async () => {
  const cases: [Parameters<typeof sendWebhook>[0], object, string][] = [
    [{ url: 'http://example.com/hook', secret: SECRET }, PAYLOAD, 'url'],
    [{ url: `https://u:${SECRET}@example.com/`, secret: SECRET }, PAYLOAD, 'url'],
    [{ url: 'https://example.com/hook', secret: 'short' }, PAYLOAD, 'secret'],
    [{ url: 'https://example.com/hook', secret: SECRET }, { n: 1n }, 'payload'],
  ];
  for (const [target, payload, field] of cases) {
    const err = await rejection(() => sendWebhook(target, payload));
    assert.equal(err.code, 'HS_ERR_INVALID_ARGUMENT');
    assert.deepEqual(err.details, { field });
  }
  const err = await rejection(() =>
    sendWebhook({ url: 'https://example.com/', secret: SECRET }, PAYLOAD, { retries: -1 }),
  );
  assert.deepEqual(err.details, { field: 'retries' });
});
