/**
 * API token hygiene: every user's tokens, which are stale (never used, or not for --days
 * days) and which never expire — and, with --revoke, the stale ones revoked.
 *
 * Shows: paging through users and their tokens with the SDK (`listUsers`,
 * `listUserTokens`), and revoking (`deleteUserToken`), each revocation an event
 * (`user.token-revoked`). A token is never shown: only its first characters.
 *
 * Run:  npm run up -- --demo
 *       node dist/examples/token-hygiene.js                 report only
 *       node dist/examples/token-hygiene.js --days 30       stale after 30 days (default 90)
 *       node dist/examples/token-hygiene.js --revoke        revoke the stale ones
 *
 * Needs user.read to report, user.manage to revoke. The token this script runs with was
 * just used, so it is never stale.
 */
import type { ApiClient, ApiToken, User } from '../src/index.js';
import { HypersealError } from '../src/index.js';
import { options, runExample } from './lib.js';

const DAY_MS = 86_400_000;

interface Finding {
  user: User;
  token: ApiToken;
  stale: boolean;
  why: string;
}

/** What the script concludes about each token, `now` and `days` given. */
function judge(user: User, token: ApiToken, now: number, days: number): Finding {
  const cutoff = now - days * DAY_MS;
  const last = token.lastUsedAt;
  const stale = last === null ? token.createdAt < cutoff : last < cutoff;
  const age = (ms: number): string => `${Math.floor((now - ms) / DAY_MS)} days ago`;
  const why = last === null ? `never used (created ${age(token.createdAt)})` : `last used ${age(last)}`;
  return { user, token, stale, why };
}

await runExample('token-hygiene', async (api: ApiClient) => {
  const { values } = options(
    { days: { type: 'string' }, revoke: { type: 'boolean' } },
    'node dist/examples/token-hygiene.js [--days N] [--revoke]',
  );
  const days = Number(values.days ?? 90);
  if (!Number.isInteger(days) || days < 0) {
    throw new HypersealError(
      'HS_ERR_INVALID_ARGUMENT',
      `--days must be a whole number of days, got '${values.days}'`,
    );
  }
  const now = Date.now();
  const findings: Finding[] = [];
  for (const user of await api.listUsers()) {
    for (const token of await api.listUserTokens(user.id)) findings.push(judge(user, token, now, days));
  }
  for (const f of findings) {
    const expiry =
      f.token.expiresAt === null ? 'never expires' : `expires ${new Date(f.token.expiresAt).toISOString()}`;
    console.log(
      `${f.stale ? 'STALE' : 'ok   '}  ${f.user.name}  ${f.token.name}  ${f.token.hint}  ${f.why}, ${expiry}`,
    );
  }
  const stale = findings.filter((f) => f.stale);
  console.log(`${findings.length} tokens, ${stale.length} stale (unused for ${days} days or more)`);
  if (!values.revoke) return;
  for (const f of stale) {
    await api.deleteUserToken(f.user.id, f.token.id);
    console.log(`revoked ${f.user.name}'s token ${f.token.name} (${f.token.hint})`);
  }
});
