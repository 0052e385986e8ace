/**
 * Acceptance levels of host bundles, lowest first (vSphere's VIB levels): a host set to a
 * level admits bundles of that level and higher, so `certified` admits only certified
 * bundles and `community` admits everything signed.
 */
import { HypersealError } from '../errors.js';

export const ACCEPTANCE_LEVELS = ['community', 'partner', 'accepted', 'certified'] as const;
export type AcceptanceLevel = (typeof ACCEPTANCE_LEVELS)[number];

export function isAcceptanceLevel(value: unknown): value is AcceptanceLevel {
  return typeof value === 'string' && (ACCEPTANCE_LEVELS as readonly string[]).includes(value);
}

export function parseAcceptanceLevel(value: unknown, what = 'acceptance level'): AcceptanceLevel {
  if (isAcceptanceLevel(value)) return value;
  throw new HypersealError(
    'HS_ERR_INVALID_ARGUMENT',
    `${what} must be one of ${[...ACCEPTANCE_LEVELS].reverse().join(' > ')}`,
  );
}

/** 0 for community … 3 for certified. */
export function acceptanceRank(level: AcceptanceLevel): number {
  return ACCEPTANCE_LEVELS.indexOf(level);
}

/** Whether a host at `hostLevel` admits a bundle at `bundleLevel`: its own level and higher. */
export function admits(hostLevel: AcceptanceLevel, bundleLevel: AcceptanceLevel): boolean {
  return acceptanceRank(bundleLevel) >= acceptanceRank(hostLevel);
}

/** The lowest of several levels (a host's effective level given its installed bundles). */
export function lowestAcceptance(levels: Iterable<AcceptanceLevel>): AcceptanceLevel | undefined {
  let lowest: AcceptanceLevel | undefined;
  for (const l of levels) if (lowest === undefined || acceptanceRank(l) < acceptanceRank(lowest)) lowest = l;
  return lowest;
}
