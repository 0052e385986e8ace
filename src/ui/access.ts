/**
 * What the signed-in user may do, from their session's privileges and the privilege each
 * operation declares (the generated `operations` map). The UI only disables what would be
 * refused, and says why; the server checks every call regardless.
 */
import type { OperationId } from '../sdk/api.gen.js';
import { operations } from '../sdk/api.gen.js';

/** The privileges an operation needs ('public' and 'authenticated' need none beyond a session). */
export function requiredPrivileges(op: OperationId): readonly string[] {
  const p: string | readonly string[] = operations[op].privilege;
  if (p === 'public' || p === 'authenticated') return [];
  return typeof p === 'string' ? [p] : p;
}

export class Access {
  private readonly held: ReadonlySet<string>;

  constructor(
    readonly user: string,
    privileges: readonly string[],
  ) {
    this.held = new Set(privileges);
  }

  has(privilege: string): boolean {
    return this.held.has(privilege);
  }

  /** The privileges missing for the operation (and any extra ones the object needs). */
  missing(op: OperationId, extra: readonly string[] = []): string[] {
    return [...requiredPrivileges(op), ...extra].filter(
      (p, i, all) => !this.held.has(p) && all.indexOf(p) === i,
    );
  }

  /** Why the operation would be refused ("needs crypto.encrypt"), or null when it would not. */
  reason(op: OperationId, extra: readonly string[] = []): string | null {
    const m = this.missing(op, extra);
    return m.length === 0 ? null : `needs ${m.join(' + ')}`;
  }

  can(op: OperationId, extra: readonly string[] = []): boolean {
    return this.missing(op, extra).length === 0;
  }
}
