/**
 * Roles (named sets of privileges) and the checks the manager runs before a handler.
 *
 * Privileges are global: a role applies to the whole inventory. Checks that depend on
 * the object (the console of an *encrypted* VM also needs crypto.access) are made by the
 * service that knows the object, with the same `requireAll`.
 */
import { HypersealError } from '../errors.js';
import type { Privilege } from './privileges.js';
import {
  ALL_PRIVILEGES,
  describePrivilege,
  isCryptoPrivilege,
  isPrivilege,
  unknownPrivileges,
} from './privileges.js';

export interface Role {
  readonly name: string;
  readonly description: string;
  readonly builtIn: boolean;
  /** Without duplicates, in catalogue order, so stored and displayed roles are stable. */
  readonly privileges: readonly Privilege[];
}

/** Whoever a request acts for, with the union of the privileges of their roles. */
export interface Principal {
  readonly name: string;
  readonly privileges: ReadonlySet<Privilege>;
}

function role(name: string, description: string, privileges: readonly Privilege[]): Role {
  return Object.freeze({
    name,
    description,
    builtIn: true,
    privileges: Object.freeze(inCatalogueOrder(privileges)),
  });
}

function inCatalogueOrder(privileges: Iterable<Privilege>): Privilege[] {
  const wanted = new Set(privileges);
  return ALL_PRIVILEGES.filter((p) => wanted.has(p));
}

export const ADMINISTRATOR: Role = role('Administrator', 'Every privilege.', ALL_PRIVILEGES);

/**
 * Runs the inventory without seeing or touching key material, as in vSphere: it can
 * power and reconfigure encrypted VMs, but not encrypt, decrypt, rekey, manage keys or
 * key servers, nor open an encrypted VM's console or files (crypto.access).
 */
export const NO_CRYPTOGRAPHY_ADMINISTRATOR: Role = role(
  'No Cryptography Administrator',
  'Every privilege except the cryptographic operations (crypto.*).',
  ALL_PRIVILEGES.filter((p) => !isCryptoPrivilege(p)),
);

/**
 * Every `*.read`. vm.console is deliberately absent, though it only reads: a serial log
 * shows what runs inside a VM, which for an encrypted VM is exactly what encryption hides.
 */
export const READ_ONLY: Role = role(
  'Read-only',
  'View the inventory, tasks, events and users; change nothing.',
  ALL_PRIVILEGES.filter((p) => p.endsWith('.read')),
);

export const AUDITOR: Role = role(
  'Auditor',
  'Read and export events, nothing else.',
  ALL_PRIVILEGES.filter((p) => p === 'event.read' || p === 'event.export'),
);

export const BUILT_IN_ROLES: readonly Role[] = Object.freeze([
  ADMINISTRATOR,
  NO_CRYPTOGRAPHY_ADMINISTRATOR,
  READ_ONLY,
  AUDITOR,
]);

export function builtInRole(name: string): Role | undefined {
  return BUILT_IN_ROLES.find((r) => r.name === name);
}

/**
 * ASCII letters or digits first, then those, single spaces, `.`, `_`, `-`; at most 64.
 * ASCII and single spaces so that a custom role cannot pass for another in a listing
 * (a Cyrillic 'А' or a double space in "No Cryptography  Administrator").
 */
const ROLE_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9._-]| (?! ))*$/;
const MAX_ROLE_NAME_CHARS = 64;
const MAX_DESCRIPTION_CHARS = 500;

export interface CustomRoleInput {
  readonly name: string;
  readonly description?: string;
  /** Strings from an API body or a database row: validated here. */
  readonly privileges: readonly string[];
}

/**
 * Validates a custom role. Every unknown privilege is named in one error
 * (HS_ERR_AUTH_UNKNOWN_PRIVILEGE), so a caller fixes them all at once. Built-in names are
 * refused in any letter case: "administrator" beside "Administrator" would mislead.
 */
export function defineCustomRole(input: CustomRoleInput): Role {
  const name = input.name.trim();
  if (!ROLE_NAME.test(name) || name.length > MAX_ROLE_NAME_CHARS) {
    throw new HypersealError(
      'HS_ERR_INVALID_ARGUMENT',
      `invalid role name ${JSON.stringify(input.name.slice(0, 80))}: 1 to ${MAX_ROLE_NAME_CHARS} ASCII letters, digits, single spaces, '.', '_' or '-', starting with a letter or digit`,
    );
  }
  const clash = BUILT_IN_ROLES.find((r) => r.name.toLowerCase() === name.toLowerCase());
  if (clash !== undefined) {
    throw new HypersealError(
      'HS_ERR_AUTH_BUILT_IN_ROLE',
      `a custom role cannot be named ${JSON.stringify(name)}: ${clash.name} is a built-in role`,
    );
  }
  const description = (input.description ?? '').trim();
  if (description.length > MAX_DESCRIPTION_CHARS) {
    throw new HypersealError(
      'HS_ERR_INVALID_ARGUMENT',
      `role description is ${description.length} characters; at most ${MAX_DESCRIPTION_CHARS}`,
    );
  }
  const unknown = input.privileges.filter((p) => !isPrivilege(p));
  if (unknown.length > 0) throw unknownPrivileges([...new Set(unknown)]);
  return Object.freeze({
    name,
    description,
    builtIn: false,
    privileges: Object.freeze(inCatalogueOrder(input.privileges.filter(isPrivilege))),
  });
}

/** The union of the roles' privileges: what a user holding all of them may do. */
export function effectivePrivileges(roles: readonly Role[]): ReadonlySet<Privilege> {
  const out = new Set<Privilege>();
  for (const r of roles) for (const p of r.privileges) out.add(p);
  return out;
}

/** True when every required privilege is held. An empty requirement is met by anyone. */
export function can(held: ReadonlySet<Privilege>, required: Privilege | readonly Privilege[]): boolean {
  return missingPrivileges(held, required).length === 0;
}

export function missingPrivileges(
  held: ReadonlySet<Privilege>,
  required: Privilege | readonly Privilege[],
): Privilege[] {
  const list: readonly Privilege[] = typeof required === 'string' ? [required] : required;
  return [...new Set(list)].filter((p) => !held.has(p));
}

const describeMissing = (missing: readonly Privilege[]): string =>
  missing.map((p) => `${p} (${describePrivilege(p)})`).join(', ');

/**
 * Throws HS_ERR_AUTH_FORBIDDEN unless `user` holds every privilege, naming each missing
 * one: the message is what an operator forwards to whoever assigns roles.
 */
export function requireAll(user: Principal, required: readonly Privilege[]): void {
  const missing = missingPrivileges(user.privileges, required);
  if (missing.length === 0) return;
  throw new HypersealError(
    'HS_ERR_AUTH_FORBIDDEN',
    `${user.name} lacks the privilege${missing.length === 1 ? '' : 's'} ${describeMissing(missing)}`,
    { user: user.name, missing },
  );
}

/**
 * Refuses privilege escalation. Whoever holds user.manage or role.manage could otherwise
 * give themselves (or a user whose password they reset) any role, and the No Cryptography
 * Administrator would be an Administrator one API call away. So a role may be granted,
 * created or edited, and a user managed, only by someone who holds every privilege
 * involved: those of the role, or those the target user holds.
 */
export function requireCanGrant(actor: Principal, privileges: Iterable<Privilege>, what: string): void {
  const missing = missingPrivileges(actor.privileges, [...privileges]);
  if (missing.length === 0) return;
  throw new HypersealError(
    'HS_ERR_AUTH_FORBIDDEN',
    `${actor.name} cannot ${what}: it involves privilege${missing.length === 1 ? '' : 's'} ${actor.name} does not hold: ${describeMissing(missing)}`,
    { user: actor.name, missing },
  );
}
