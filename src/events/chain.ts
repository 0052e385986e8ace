/**
 * The tamper-evident chain (as Xen Orchestra's audit-core): each event carries the hash
 * of its predecessor, so altering, deleting or reordering a stored event breaks the chain
 * at that point, and verifyChain() names the first event where it breaks.
 *
 *   hash = SHA-256( utf8(prevHash) ‖ utf8(canonicalJson(event without `hash`)) ), hex
 *
 * prevHash is the predecessor's hash as 64 lower-case hex characters (GENESIS_HASH for the
 * first event of a chain); it is also inside the canonical JSON, the prefix only makes the
 * link explicit. canonicalJson is RFC 8785 (JCS) for the values events hold: keys sorted
 * by UTF-16 code units, no whitespace, strings and numbers as ECMAScript JSON.stringify
 * writes them. Every field but `hash` is covered, unknown extra fields included, so
 * adding a field is an alteration too.
 *
 * What a chain alone cannot prove: that nothing was cut from its END, or that the last
 * events were not rewritten and re-hashed — or the whole chain re-hashed from the point
 * of change. That needs the head (seq, hash) kept somewhere the attacker cannot write:
 * syslog, which gets every event as it is made, is that place.
 */
import { createHash } from 'node:crypto';
import type { Event, UnchainedEvent } from './model.js';
import { describeValue, invalid, isPlainObject } from './redact.js';

export const GENESIS_HASH = '0'.repeat(64);

/** Where a chain (or a verified segment of one) ends: the last event's seq and hash. */
export interface ChainHead {
  readonly seq: number;
  readonly hash: string;
}

const MAX_CANONICAL_DEPTH = 64;

/** RFC 8785 canonical JSON; throws HS_ERR_EVENT_INVALID for anything JSON cannot hold exactly. */
export function canonicalJson(value: unknown): string {
  return canon(value, 0);
}

function canon(v: unknown, depth: number): string {
  if (depth > MAX_CANONICAL_DEPTH) throw invalid(`nested deeper than ${MAX_CANONICAL_DEPTH}`, undefined);
  if (v === null) return 'null';
  switch (typeof v) {
    case 'boolean':
      return v ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(v)) throw invalid(`${v} has no canonical JSON form`, undefined);
      return JSON.stringify(v); // ECMAScript Number::toString, as JCS requires; -0 → 0
    case 'string':
      return JSON.stringify(v);
    case 'object':
      break;
    default:
      throw invalid(`a ${typeof v} has no canonical JSON form`, undefined);
  }
  if (Array.isArray(v)) {
    return `[${v
      .map((x: unknown) => {
        if (x === undefined) throw invalid('undefined in an array has no canonical JSON form', undefined);
        return canon(x, depth + 1);
      })
      .join(',')}]`;
  }
  if (!isPlainObject(v)) throw invalid(`a ${describeValue(v)} has no canonical JSON form`, undefined);
  // Default sort compares UTF-16 code units: exactly JCS's order. Undefined members are
  // absent, as in JSON.stringify.
  const keys = Object.keys(v)
    .filter((k) => v[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canon(v[k], depth + 1)}`).join(',')}}`;
}

/** The hash an event should carry: over everything but its own `hash` field. */
export function computeHash(event: Omit<Event, 'hash'> | Event): string {
  const rest: Record<string, unknown> = { ...event };
  delete rest['hash'];
  return createHash('sha256')
    .update(event.prevHash, 'utf8')
    .update(canonicalJson(rest), 'utf8')
    .digest('hex');
}

/** Links an event after `head` (null: the first event of a new chain). */
export function chainEvent(event: UnchainedEvent, head: ChainHead | null): Event {
  const linked: Omit<Event, 'hash'> = {
    ...event,
    seq: head === null ? 0 : head.seq + 1,
    prevHash: head === null ? GENESIS_HASH : head.hash,
  };
  return { ...linked, hash: computeHash(linked) };
}

export function headOf(event: Event): ChainHead {
  return { seq: event.seq, hash: event.hash };
}

/**
 * Why verification stopped at an event:
 *  - altered: its hash is not the hash of its content (a field was changed, added or
 *    removed), or it was re-hashed with a wrong seq;
 *  - missing: one or more events before it were deleted (its seq skips ahead and its
 *    prevHash is no event in the list);
 *  - reordered: its prevHash is the hash of an event elsewhere in the list (swapped,
 *    moved or replayed);
 *  - broken-link: it is intact, at the right seq, but its prevHash is not the previous
 *    event's hash: the previous event was altered and re-hashed to hide it (or this
 *    event's prevHash was rewritten). The chain cannot tell which of the two was
 *    rewritten; the events before the previous one are intact.
 */
export type ChainFault = 'altered' | 'missing' | 'reordered' | 'broken-link';

export type VerifyResult =
  | { readonly ok: true }
  | {
      readonly ok: false;
      /** Position in the list given to verifyChain of the first bad event. */
      readonly index: number;
      readonly id: string;
      readonly reason: ChainFault;
      readonly detail: string;
    };

/**
 * Checks a chain (or a segment of one, starting after `anchor`) in order and names the
 * FIRST bad event. Never throws: events read back from storage may be arbitrary JSON.
 */
export function verifyChain(events: readonly Event[], anchor?: ChainHead): VerifyResult {
  // Every event's claimed hash → its positions, to recognise a link to a moved event.
  const byHash = new Map<unknown, number>();
  events.forEach((e, i) => {
    if (!byHash.has(e.hash)) byHash.set(e.hash, i);
  });
  let expectedPrev = anchor?.hash ?? GENESIS_HASH;
  let expectedSeq = anchor === undefined ? 0 : anchor.seq + 1;
  for (let i = 0; i < events.length; i++) {
    const e = events[i] as Event;
    const id = typeof e.id === 'string' ? e.id : '';
    const fail = (reason: ChainFault, detail: string): VerifyResult => ({
      ok: false,
      index: i,
      id,
      reason,
      detail,
    });
    let actual: string | undefined;
    try {
      actual = typeof e.prevHash === 'string' ? computeHash(e) : undefined;
    } catch {
      actual = undefined; // not canonical JSON: cannot be what was hashed
    }
    if (actual === undefined || actual !== e.hash) {
      return fail('altered', `event ${i}'s content does not match its hash`);
    }
    const linked = e.prevHash === expectedPrev;
    if (linked && e.seq === expectedSeq) {
      expectedPrev = e.hash;
      expectedSeq++;
      continue;
    }
    if (linked) {
      return fail(
        'altered',
        `event ${i} has seq ${String(e.seq)}, expected ${expectedSeq}: rewritten and re-hashed`,
      );
    }
    const j = byHash.get(e.prevHash);
    if (j !== undefined && j !== i) {
      return fail('reordered', `event ${i} follows the event at position ${j}, not the one before it`);
    }
    if (typeof e.seq === 'number' && e.seq > expectedSeq) {
      const n = e.seq - expectedSeq;
      return fail(
        'missing',
        n === 1
          ? `event seq ${expectedSeq} missing before event ${i}`
          : `${n} events (seq ${expectedSeq}…${e.seq - 1}) missing before event ${i}`,
      );
    }
    return fail(
      'broken-link',
      i === 0
        ? `event 0 does not follow the chain's anchor`
        : `event ${i} does not follow event ${i - 1}: one of them was rewritten and re-hashed`,
    );
  }
  return { ok: true };
}
