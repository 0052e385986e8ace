/**
 * createEvent(): from what a service knows (type, actor, object, changes, outcome) to a
 * complete, redacted event with its sentence, ready to be chained (chain.ts) and sent to
 * the sinks. The clock and the id source are parameters so that tests are deterministic.
 */
import { randomUUID } from 'node:crypto';
import type { Change, EventObject, EventResult, EventType, Severity, UnchainedEvent } from './model.js';
import { EventTypes, isEventType, severityRank } from './model.js';
import { renderMessage, type MessageOptions } from './message.js';
import { invalid, redactChange } from './redact.js';

export interface EventInput {
  readonly type: EventType;
  readonly user: string;
  readonly sourceIp?: string | null;
  readonly object: EventObject;
  /** Usually diff(before, after, schema); redacted again here whatever their origin. */
  readonly changes?: readonly Change[];
  readonly result?: EventResult;
  /** Why it failed; goes into the message only. */
  readonly reason?: string;
  /** Overrides the type's default (and the failure escalation). */
  readonly severity?: Severity;
}

export interface EventSource {
  now(): Date;
  uuid(): string;
}

export const systemEventSource: EventSource = { now: () => new Date(), uuid: () => randomUUID() };

export function createEvent(
  input: EventInput,
  source: EventSource = systemEventSource,
  messageOptions?: Partial<MessageOptions>,
): UnchainedEvent {
  // The type system checks this for TypeScript callers; JSON-fed ones are checked here.
  if (!isEventType(input.type)) throw invalid(`unknown event type ${JSON.stringify(input.type)}`, undefined);
  const result = input.result ?? 'success';
  const changes = (input.changes ?? []).map(redactChange);
  const base = EventTypes[input.type].severity;
  // A failed attempt deserves a look even when the action itself is routine.
  const severity =
    input.severity ??
    (result === 'failure' && severityRank(base) < severityRank('warning') ? 'warning' : base);
  const fields = {
    type: input.type,
    user: input.user,
    sourceIp: input.sourceIp ?? null,
    object: { kind: input.object.kind, id: input.object.id, name: input.object.name },
    changes,
    result,
  };
  return {
    id: source.uuid(),
    time: source.now().toISOString(),
    severity,
    ...fields,
    message: renderMessage({ ...fields, reason: input.reason }, messageOptions),
  };
}
