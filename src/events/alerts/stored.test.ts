// The stored form of an alert rule: the webhook secret sealed, bound to the rule's id.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { validateRule } from './rule.js';
import { ruleFromStored, ruleToStored } from './stored.js';

const SECRET = 'a-webhook-secret-0123456789';
const rule = validateRule({
  id: 'r1',
  name: 'r1',
  severity: 'warning',
  match: { types: ['vm.created'] },
  actions: { webhook: { url: 'https://siem.example/hook', secret: SECRET } },
});

void test('the stored text holds the secret in no form; it opens to the same rule', () => {
  const key = randomBytes(32);
  const text = ruleToStored(rule, key);
  for (const form of [SECRET, Buffer.from(SECRET).toString('base64'), Buffer.from(SECRET).toString('hex')]) {
    assert.equal(text.includes(form), false);
  }
  assert.deepEqual(ruleFromStored(text, key), { rule, legacy: false });
  // Sealed afresh each time (random IV): two stored texts of one rule differ.
  assert.notEqual(ruleToStored(rule, key), text);
});

void test('a sealed secret moved to another rule, altered, or opened with another key is refused', () => {
  const key = randomBytes(32);
  const stored = JSON.parse(ruleToStored(rule, key)) as {
    id: string;
    name: string;
    actions: { webhook: { secretSealed: string } };
  };
  const moved = JSON.stringify({ ...stored, id: 'r2', name: 'r2' });
  assert.throws(() => ruleFromStored(moved, key), { code: 'HS_ERR_CRYPTO_AUTH' });
  const sealed = Buffer.from(stored.actions.webhook.secretSealed, 'base64');
  sealed[sealed.length - 1] = (sealed[sealed.length - 1] ?? 0) ^ 1;
  const altered = JSON.stringify({
    ...stored,
    actions: { webhook: { ...stored.actions.webhook, secretSealed: sealed.toString('base64') } },
  });
  assert.throws(() => ruleFromStored(altered, key), { code: 'HS_ERR_CRYPTO_AUTH' });
  assert.throws(
    () => ruleFromStored(JSON.stringify(stored), randomBytes(32)),
    (err: Error) => {
      assert.equal((err as { code?: string }).code, 'HS_ERR_CRYPTO_AUTH');
      assert.equal(err.message.includes(SECRET), false);
      return true;
    },
  );
});

void test('a rule stored in clear is read and flagged legacy; one without a webhook is not', () => {
  const key = randomBytes(32);
  assert.deepEqual(ruleFromStored(JSON.stringify(rule), key), { rule, legacy: true });
  const plain = validateRule({ id: 'p', name: 'p', severity: 'info', match: {}, actions: {} });
  assert.equal(ruleToStored(plain, key), JSON.stringify(plain));
  assert.deepEqual(ruleFromStored(JSON.stringify(plain), key), { rule: plain, legacy: false });
});
