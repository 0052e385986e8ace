/**
 * Enhanced logging, the pure core: event model and registry, diff, redaction, messages,
 * hash chain. No I/O: the store, syslog and alert sinks build on this.
 */
export type {
  Change,
  Event,
  EventObject,
  EventTypeInfo,
  JsonObject,
  JsonValue,
  ObjectKind,
  UnchainedEvent,
} from './model.js';
export {
  EventResult,
  EventTypes,
  ObjectKinds,
  SEVERITY_ORDER,
  Severity,
  isEventType,
  severityRank,
  type EventType,
} from './model.js';
export { compareNatural, formatPath, parsePath, type PathSegment } from './path.js';
export {
  DEFAULT_WALK_LIMITS,
  REDACTED,
  Secret,
  isSecretName,
  redactChange,
  toEventValue,
  type WalkLimits,
} from './redact.js';
export { diff, type DiffSchema, type ListRule } from './diff.js';
export {
  DEFAULT_MESSAGE_OPTIONS,
  renderChange,
  renderMessage,
  renderValue,
  type MessageInput,
  type MessageOptions,
} from './message.js';
export {
  GENESIS_HASH,
  canonicalJson,
  chainEvent,
  computeHash,
  headOf,
  verifyChain,
  type ChainFault,
  type ChainHead,
  type VerifyResult,
} from './chain.js';
export { createEvent, systemEventSource, type EventInput, type EventSource } from './create.js';
