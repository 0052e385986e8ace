/**
 * Alert rules: validate a rule (rule.ts), match events against it (match.ts, pure), build
 * the 'alert.raised' event (alert.ts) and deliver signed webhooks (webhook.ts).
 */
export {
  ALERT_EVENT_TYPE,
  RULE_LIMITS,
  ruleToPublic,
  validateRule,
  webhookSecretProblem,
  webhookUrlProblem,
  type AlertActions,
  type AlertRule,
  type ChangeMatch,
  type MatchSpec,
  type PublicAlertRule,
  type ValueMatch,
  type WebhookAction,
} from './rule.js';
export {
  compileRule,
  evaluate,
  jsonEqual,
  matchRule,
  type MatchResult,
  type MatchableEvent,
  type RuleMatch,
  type RuleMatcher,
} from './match.js';
export { alertFor, createAlertEvent, type AlertEventInput, type TriggerEvent } from './alert.js';
export {
  SIGNATURE_HEADER,
  TIMESTAMP_HEADER,
  sendWebhook,
  signWebhook,
  verifyWebhookSignature,
  type VerifyOptions,
  type WebhookDelivery,
  type WebhookOptions,
} from './webhook.js';
export { compileGlob } from './glob.js';
export { ruleFromStored, ruleToStored } from './stored.js';
