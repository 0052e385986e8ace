/**
 * Alert rules as the database keeps them. The webhook secret is the one secret in a rule,
 * and secrets are never stored in clear: the stored rule carries `secretSealed` (AES-256-GCM
 * under a key derived from the manager's master key, the rule id as associated data, so a
 * sealed secret copied onto another rule does not open) in place of `secret`. Everything
 * else stays readable JSON, so an operator inspecting the database still sees the rule.
 *
 * Rows written before secrets were sealed carry `secret` in clear: they still load
 * (`legacy: true`), and the manager reseals them at start.
 */
import { open, seal } from '../../crypto/aead.js';
import { HypersealError } from '../../errors.js';
import type { AlertRule } from './rule.js';
import { validateRule } from './rule.js';

const AAD_CONTEXT = 'hyperseal-alert-rule/v1/webhook-secret';

function aad(ruleId: string): Buffer {
  return Buffer.from(`${AAD_CONTEXT}\0${ruleId}`, 'utf8');
}

/** The JSON text for alert_rules.rule: the rule with its webhook secret sealed. */
export function ruleToStored(rule: AlertRule, sealingKey: Buffer): string {
  const hook = rule.actions.webhook;
  if (hook === undefined) return JSON.stringify(rule);
  const plain = Buffer.from(hook.secret, 'utf8');
  try {
    const secretSealed = seal(sealingKey, plain, aad(rule.id)).toString('base64');
    return JSON.stringify({
      ...rule,
      actions: { ...rule.actions, webhook: { url: hook.url, secretSealed } },
    });
  } finally {
    plain.fill(0);
  }
}

/** A stored rule, its secret opened and the whole rule validated again. */
export function ruleFromStored(text: string, sealingKey: Buffer): { rule: AlertRule; legacy: boolean } {
  const stored = JSON.parse(text) as { id?: unknown; actions?: { webhook?: Record<string, unknown> } };
  const hook = stored.actions?.webhook;
  if (hook === undefined || typeof hook['secretSealed'] !== 'string') {
    return { rule: validateRule(stored), legacy: hook !== undefined };
  }
  const { secretSealed, ...rest } = hook;
  let secret: string;
  try {
    secret = open(sealingKey, Buffer.from(secretSealed, 'base64'), aad(String(stored.id))).toString('utf8');
  } catch (err) {
    throw new HypersealError(
      'HS_ERR_CRYPTO_AUTH',
      `the sealed webhook secret of alert rule ${String(stored.id)} does not open with this manager's ` +
        'master key (the row was altered or copied, or the manager runs with another master key)',
      { ruleId: String(stored.id) },
      { cause: err },
    );
  }
  return {
    rule: validateRule({ ...stored, actions: { ...stored.actions, webhook: { ...rest, secret } } }),
    legacy: false,
  };
}
