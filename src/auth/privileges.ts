/**
 * The privilege catalogue: every privilege the manager checks, with a one-line meaning
 * (shown by the CLI and web UI when a role is edited).
 *
 * Crypto privileges are separate from VM administration, as in vSphere 6.5: the names
 * after `crypto.` are vSphere's Cryptographic operations privileges, so that the "No
 * Cryptography Administrator" role means the same thing here (docs/DESIGN.md,
 * "Privileges"). Ids are stable: stored custom roles name them, so never rename one.
 */
import { HypersealError } from '../errors.js';

export const PRIVILEGE_CATALOGUE = {
  // Inventory
  'host.read': 'View hosts, their state and their Secure Boot verification results.',
  'host.manage': 'Change host settings, put hosts in and out of maintenance, remove hosts.',
  'host.enroll': 'Create one-time enrollment tokens that let a new host agent join.',
  'datastore.read': 'View datastores and their capacity.',
  'datastore.manage': 'Add, change and remove datastores.',
  'network.read': 'View networks.',
  'network.manage': 'Add, change and remove networks.',
  'vm.read': 'View VMs, their configuration and their state.',
  'vm.create': 'Create VMs (an encrypted one also needs crypto.encryptNew).',
  'vm.delete': 'Delete VMs and their files.',
  'vm.power': 'Power VMs on and off, reset, suspend and resume them.',
  'vm.reconfigure':
    'Change VM hardware and settings: CPU, memory, disks, NICs, firmware, migration encryption.',
  'vm.console': "Read a VM's serial console log (of an encrypted VM only with crypto.access as well).",
  'vm.migrate': 'Migrate VMs between hosts (an encrypted one also needs crypto.migrate).',
  'task.read': 'View tasks and their progress.',
  'task.cancel': 'Cancel running tasks.',
  'event.read': 'View and query events and verify the event hash chain.',
  'event.export': 'Export events for archiving or external analysis.',
  'alert.manage': 'Create, change and remove alert rules and webhooks.',
  'syslog.manage': 'Configure syslog forwarding of events.',
  'user.read': 'View users and their role assignments.',
  'user.manage': 'Create, change and remove users, assign roles, reset passwords.',
  'role.manage': 'Create, change and remove custom roles.',
  'secureboot.manage': 'Manage Secure Boot: enrolled keys and certificates for VMs and hosts.',
  'bundle.manage': 'Upload, sign and remove the component bundles that hosts verify at start.',

  // Cryptographic operations (vSphere names)
  'crypto.encrypt': 'Encrypt an existing VM or virtual disk.',
  'crypto.encryptNew': 'Create a new encrypted VM.',
  'crypto.decrypt': 'Decrypt a VM or virtual disk.',
  'crypto.clone': 'Clone an encrypted VM.',
  'crypto.migrate': 'Migrate an encrypted VM to another host.',
  'crypto.recrypt': 'Rekey an encrypted VM or disk (shallow: new KEK; deep: new DEKs).',
  'crypto.addDisk': 'Add an encrypted disk to a VM.',
  'crypto.manageKeys': 'Manage keys: create, rekey, push to hosts, crypto-shred.',
  'crypto.manageKeyServers': 'Add, change and remove key providers and their KMIP servers.',
  'crypto.manageEncryptionPolicy': 'Create, change and remove encryption policies.',
  'crypto.registerHost': 'Enable encryption on a host, so that it may receive keys.',
  'crypto.registerVm': 'Register an existing encrypted VM with the manager.',
  'crypto.access': 'Open the console and files of encrypted VMs.',
} as const;

/** A privilege id as written in the catalogue, e.g. `'vm.power'`. */
export type PrivilegeId = keyof typeof PRIVILEGE_CATALOGUE;

declare const privilegeBrand: unique symbol;
/**
 * A privilege that is known to be in the catalogue. Branded so that the only ways to get
 * one are the catalogue itself (`Priv['vm.power']`) and `parsePrivilege`: a string read
 * from the database or a request body, even one a row type declares as `PrivilegeId`,
 * must be validated before it can grant anything.
 */
export type Privilege = PrivilegeId & { readonly [privilegeBrand]: true };

const isKnownId = (s: string): s is PrivilegeId => Object.hasOwn(PRIVILEGE_CATALOGUE, s);

/** Every privilege, in catalogue order (the order roles list them in). */
export const ALL_PRIVILEGES: readonly Privilege[] = Object.freeze(
  Object.keys(PRIVILEGE_CATALOGUE).filter(isKnownId) as Privilege[],
);

/** Each privilege by its id, for declarations in code: `privilege: Priv['vm.power']`. */
export const Priv: Readonly<{ [K in PrivilegeId]: K & Privilege }> = Object.freeze(
  Object.fromEntries(ALL_PRIVILEGES.map((p) => [p, p])) as { [K in PrivilegeId]: K & Privilege },
);

/** The `crypto.*` privileges: those the No Cryptography Administrator role lacks. */
export const CRYPTO_PRIVILEGES: readonly Privilege[] = Object.freeze(
  ALL_PRIVILEGES.filter((p) => p.startsWith('crypto.')),
);

export function isPrivilege(s: string): s is Privilege {
  return isKnownId(s);
}

export function isCryptoPrivilege(p: Privilege): boolean {
  return p.startsWith('crypto.');
}

export function describePrivilege(p: Privilege): string {
  const id: PrivilegeId = p; // widen: a branded key does not index the catalogue type
  return PRIVILEGE_CATALOGUE[id];
}

/** The catalogue id that differs from `s` only in letter case, for "did you mean" hints. */
export function suggestPrivilege(s: string): Privilege | undefined {
  const lower = s.toLowerCase();
  return ALL_PRIVILEGES.find((p) => p.toLowerCase() === lower);
}

/** Validates a privilege name from outside the code (API body, database row). */
export function parsePrivilege(s: string): Privilege {
  if (isPrivilege(s)) return s;
  throw unknownPrivileges([s]);
}

/** One error naming every unknown privilege, with a spelling hint where there is one. */
export function unknownPrivileges(names: readonly string[]): HypersealError {
  const described = names.map((n) => {
    const hint = suggestPrivilege(n);
    return hint === undefined ? JSON.stringify(n) : `${JSON.stringify(n)} (did you mean ${hint}?)`;
  });
  return new HypersealError(
    'HS_ERR_AUTH_UNKNOWN_PRIVILEGE',
    `unknown privilege${names.length === 1 ? '' : 's'}: ${described.join(', ')}`,
    { unknown: [...names] },
  );
}
