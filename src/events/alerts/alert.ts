/**
 * The event an alert raises. It is an ordinary event (type 'alert.raised', object the
 * rule) so that it is chained, stored, sent to syslog and shown like any other — and it
 * carries what an operator needs to act without opening the original: the rule's
 * severity, the changes that made the rule match, and a message that names the rule and
 * repeats the original event's sentence.
 */
import { HypersealError } from '../../errors.js';
import type { Change, EventObject, EventResult, Severity, UnchainedEvent } from '../model.js';
import { renderValue } from '../message.js';
import { createEvent, type EventInput, type EventSource } from '../create.js';
import { ALERT_EVENT_TYPE, RULE_LIMITS, type AlertRule } from './rule.js';

/** The triggering event as alertFor() reads it; `seq` is there once it is chained. */
export type TriggerEvent = Pick<UnchainedEvent, 'type' | 'user' | 'sourceIp' | 'message'> & {
  readonly seq?: number;
};

/**
 * Input for createEvent() (or the manager's recorder): the EventInput fields plus the
 * finished `message`, which replaces the sentence createEvent() would render from the
 * type's phrase. `user` and `sourceIp` are the original event's: whoever made the change
 * triggered the alert.
 */
export interface AlertEventInput extends EventInput {
  readonly type: typeof ALERT_EVENT_TYPE;
  readonly severity: Severity;
  readonly object: EventObject & { readonly kind: 'alert-rule' };
  readonly changes: readonly Change[];
  readonly result: EventResult;
  readonly user: string;
  readonly sourceIp: string | null;
  readonly message: string;
}

/**
 * Builds the 'alert.raised' event for a rule that matched `event` on `matchedChanges`
 * (matchRule()'s result). Throws HS_ERR_INTERNAL for an alert event as trigger: the loop
 * guard in match.ts never lets one match, so getting one here is a bug in the caller.
 *
 *   Alert rule 'NIC left PCI' matched event #42: ops@local reconfigured VM web-01: …
 */
export function alertFor(
  rule: AlertRule,
  event: TriggerEvent,
  matchedChanges: readonly Change[],
): AlertEventInput {
  if (event.type === ALERT_EVENT_TYPE)
    throw new HypersealError(
      'HS_ERR_INTERNAL',
      `alert rule ${rule.id}: an alert event cannot raise an alert`,
      {
        rule: rule.id,
      },
    );
  // renderValue quotes and escapes the name; room for the longest valid name and quotes.
  const name = renderValue(rule.name, RULE_LIMITS.nameChars + 2);
  const which = event.seq === undefined ? 'an event' : `event #${event.seq}`;
  return {
    type: ALERT_EVENT_TYPE,
    severity: rule.severity,
    user: event.user,
    sourceIp: event.sourceIp,
    object: { kind: 'alert-rule', id: rule.id, name: rule.name },
    changes: [...matchedChanges],
    result: 'success',
    message: `Alert rule ${name} matched ${which}: ${event.message}`,
  };
}

/** The complete unchained alert event: createEvent() with the alert's own message. */
export function createAlertEvent(input: AlertEventInput, source?: EventSource): UnchainedEvent {
  return { ...createEvent(input, source), message: input.message };
}
