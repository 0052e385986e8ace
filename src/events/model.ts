/**
 * The event model of enhanced logging. One event per mutating API call or state change,
 * carrying what changed (from → to), who did it, from where, and a sentence a person can
 * act on — the opposite of vCenter's old "VM has been reconfigured". Events are chained
 * by hash (chain.ts) so that an altered, missing or reordered record is detected.
 *
 * Everything here is data: the registry below is the single list of event types, their
 * default severity, a one-line description (docs/events.md is generated from it) and the
 * phrase the message renderer uses.
 */

/** A value that survives JSON unchanged: what `from`/`to` of a change may hold. */
export type JsonValue = null | boolean | number | string | readonly JsonValue[] | JsonObject;
export interface JsonObject {
  readonly [key: string]: JsonValue;
}

export const Severity = {
  info: 'info',
  warning: 'warning',
  error: 'error',
  critical: 'critical',
} as const;
export type Severity = (typeof Severity)[keyof typeof Severity];

/** Severities in increasing order, for "at least warning" filters and escalation. */
export const SEVERITY_ORDER: readonly Severity[] = ['info', 'warning', 'error', 'critical'];

export function severityRank(s: Severity): number {
  return SEVERITY_ORDER.indexOf(s);
}

export const EventResult = { success: 'success', failure: 'failure' } as const;
export type EventResult = (typeof EventResult)[keyof typeof EventResult];

/** What an event is about; `label` is how the message names it ("VM web-01"). */
export const ObjectKinds = {
  vm: { label: 'VM' },
  host: { label: 'host' },
  user: { label: 'user' },
  role: { label: 'role' },
  'kms-provider': { label: 'key provider' },
  key: { label: 'key' },
  'event-log': { label: 'event log' },
  network: { label: 'network' },
  'syslog-target': { label: 'syslog target' },
  api: { label: 'API call' },
  'alert-rule': { label: 'alert rule' },
  'encryption-policy': { label: 'encryption policy' },
  'secureboot-key-set': { label: 'Secure Boot key set' },
} as const satisfies Record<string, { label: string }>;
export type ObjectKind = keyof typeof ObjectKinds;

export interface EventObject {
  readonly kind: ObjectKind;
  readonly id: string;
  readonly name: string;
}

/**
 * One setting that changed. `path` follows the convention of path.ts
 * (`nics[nic0].network`); `null` means "absent" on either side (an added or removed
 * item, a setting that was unset). Values are already redacted (redact.ts).
 */
export interface Change {
  readonly path: string;
  readonly from: JsonValue;
  readonly to: JsonValue;
}

/** A phrase with placeholders the renderer fills: {user}, {object}, {sourceIp}. */
export type Phrase = string;

export interface EventTypeInfo {
  readonly severity: Severity;
  /** One line, for docs/events.md. */
  readonly description: string;
  /** The sentence head when the action succeeded (or the state change was observed). */
  readonly done: Phrase;
  /** The sentence head when it was attempted and failed. */
  readonly failed: Phrase;
}

/**
 * The registry of event types: `<object>.<what-happened>`, lower case, hyphenated. Types
 * are never renamed (alert rules and SIEM queries match on them); a new meaning gets a new
 * type. Severities are defaults: a failed attempt is raised to at least `warning`
 * (create.ts), and a caller may raise one further when it knows more.
 */
export const EventTypes = {
  'vm.created': {
    severity: 'info',
    description: 'A VM was created; changes list its initial settings.',
    done: '{user} created {object}',
    failed: '{user} failed to create {object}',
  },
  'vm.deleted': {
    severity: 'warning',
    description: 'A VM and its disks were deleted.',
    done: '{user} deleted {object}',
    failed: '{user} failed to delete {object}',
  },
  'vm.reconfigured': {
    severity: 'info',
    description: 'A VM’s settings changed; changes list each setting from → to (memory, NICs, disks).',
    done: '{user} reconfigured {object}',
    failed: '{user} failed to reconfigure {object}',
  },
  'vm.powered-on': {
    severity: 'info',
    description: 'A VM was started.',
    done: '{user} powered on {object}',
    failed: '{user} failed to power on {object}',
  },
  'vm.powered-off': {
    severity: 'info',
    description: 'A VM was stopped (or stopped by itself: user is `system`).',
    done: '{user} powered off {object}',
    failed: '{user} failed to power off {object}',
  },
  'vm.shut-down': {
    severity: 'info',
    description: 'A VM was asked to shut down its guest (ACPI power button).',
    done: '{user} shut down {object}',
    failed: '{user} failed to shut down {object}',
  },
  'vm.reset': {
    severity: 'info',
    description: 'A VM was reset (hard reboot, no guest shutdown).',
    done: '{user} reset {object}',
    failed: '{user} failed to reset {object}',
  },
  'vm.relocated': {
    severity: 'warning',
    description:
      'The manager found a VM on another host than recorded (a migration finished that it had not recorded, e.g. it was killed meanwhile) and recorded it there.',
    done: '{user} relocated {object}',
    failed: '{user} failed to relocate {object}',
  },
  'vm.migrated': {
    severity: 'info',
    description: 'A VM moved to another host; changes show the host and whether the stream was encrypted.',
    done: '{user} migrated {object}',
    failed: '{user} failed to migrate {object}',
  },
  'vm.encrypted': {
    severity: 'info',
    description: 'A VM’s disks and state were encrypted with a key from a key provider.',
    done: '{user} encrypted {object}',
    failed: '{user} failed to encrypt {object}',
  },
  'vm.decrypted': {
    severity: 'warning',
    description: 'A VM’s encryption was removed: its disks are stored in the clear from now on.',
    done: '{user} decrypted {object}',
    failed: '{user} failed to decrypt {object}',
  },
  'vm.rekeyed': {
    severity: 'info',
    description: 'A VM’s key encryption key (shallow) or data key (deep) was replaced.',
    done: '{user} rekeyed {object}',
    failed: '{user} failed to rekey {object}',
  },
  'vm.cloned': {
    severity: 'info',
    description:
      'A VM was copied to a new VM; an encrypted source gives an encrypted clone with its own KEK.',
    done: '{user} cloned {object}',
    failed: '{user} failed to clone {object}',
  },
  'vm.crypto-shredded': {
    severity: 'critical',
    description:
      'A VM’s KEK was destroyed on its key provider at an administrator’s request: the VM’s data is unrecoverable.',
    done: '{user} crypto-shredded {object}',
    failed: '{user} failed to crypto-shred {object}',
  },
  'vm.locked': {
    severity: 'error',
    description: 'An encrypted VM’s key could not be had (provider down, key destroyed): it cannot start.',
    done: '{object} is locked',
    failed: '{object} is locked',
  },
  'vm.unlocked': {
    severity: 'info',
    description: 'A locked VM’s key was delivered to its host again: it can start.',
    done: '{user} unlocked {object}',
    failed: '{user} failed to unlock {object}',
  },
  'vm.encryption-reconciled': {
    severity: 'warning',
    description:
      'The manager corrected a VM’s recorded encryption from what its host reports (an operation was cut short by a crash).',
    done: '{user} reconciled the encryption of {object}',
    failed: '{user} failed to reconcile the encryption of {object}',
  },
  'encryption.policy-created': {
    severity: 'info',
    description: 'An encryption policy was created.',
    done: '{user} created {object}',
    failed: '{user} failed to create {object}',
  },
  'encryption.policy-deleted': {
    severity: 'warning',
    description: 'An encryption policy was deleted.',
    done: '{user} deleted {object}',
    failed: '{user} failed to delete {object}',
  },
  'encryption.policy-applied': {
    severity: 'info',
    description: 'An encryption policy was applied to a set of VMs (one task per VM); changes list the VMs.',
    done: '{user} applied {object}',
    failed: '{user} failed to apply {object}',
  },
  'vm.secure-boot-enabled': {
    severity: 'info',
    description: 'UEFI Secure Boot was turned on for a VM.',
    done: '{user} enabled secure boot on {object}',
    failed: '{user} failed to enable secure boot on {object}',
  },
  'vm.secure-boot-disabled': {
    severity: 'warning',
    description: 'UEFI Secure Boot was turned off for a VM: unsigned boot loaders can run.',
    done: '{user} disabled secure boot on {object}',
    failed: '{user} failed to disable secure boot on {object}',
  },
  'secureboot.key-set-created': {
    severity: 'info',
    description:
      'A Secure Boot key set (PK, KEK, db, dbx certificates and hashes; never private keys) was created for VMs.',
    done: '{user} created {object}',
    failed: '{user} failed to create {object}',
  },
  'secureboot.key-set-changed': {
    severity: 'warning',
    description:
      'A Secure Boot key set’s keys changed; the VMs using it get a new variable store at their next power-on.',
    done: '{user} changed {object}',
    failed: '{user} failed to change {object}',
  },
  'secureboot.key-set-removed': {
    severity: 'warning',
    description: 'A Secure Boot key set was removed (only possible while no VM uses it).',
    done: '{user} removed {object}',
    failed: '{user} failed to remove {object}',
  },
  'host.bundle-installed': {
    severity: 'info',
    description:
      'A software bundle was installed on a host after verification (a refused install is recorded as a failure, naming why).',
    done: '{user} installed a bundle on {object}',
    failed: '{user} failed to install a bundle on {object}',
  },
  'host.bundle-removed': {
    severity: 'warning',
    description: 'A software bundle was removed from a host.',
    done: '{user} removed a bundle from {object}',
    failed: '{user} failed to remove a bundle from {object}',
  },
  'host.verification-failed': {
    severity: 'critical',
    description:
      'Host Secure Boot: the agent found a file of its own or of a bundle that does not match its signature, and refuses to serve; the message names the file.',
    done: '{object} failed Secure Boot verification',
    failed: '{object} failed Secure Boot verification',
  },
  'syslog.target-added': {
    severity: 'info',
    description: 'A syslog target was added; events stream to it from now on (or from the start).',
    done: '{user} added {object}',
    failed: '{user} failed to add {object}',
  },
  'syslog.target-changed': {
    severity: 'warning',
    description: 'A syslog target was changed (address, transport, format or CA); changes show from → to.',
    done: '{user} changed {object}',
    failed: '{user} failed to change {object}',
  },
  'syslog.target-removed': {
    severity: 'warning',
    description: 'A syslog target was removed; events no longer stream to it.',
    done: '{user} removed {object}',
    failed: '{user} failed to remove {object}',
  },
  'alert.rule-added': {
    severity: 'info',
    description: 'An alert rule was added (its webhook secret is never recorded).',
    done: '{user} added {object}',
    failed: '{user} failed to add {object}',
  },
  'alert.rule-changed': {
    severity: 'warning',
    description:
      'An alert rule was changed (enabled, disabled, edited); changes show from → to, a new webhook secret only as changed.',
    done: '{user} changed {object}',
    failed: '{user} failed to change {object}',
  },
  'alert.rule-removed': {
    severity: 'warning',
    description: 'An alert rule was removed.',
    done: '{user} removed {object}',
    failed: '{user} failed to remove {object}',
  },
  'network.created': {
    severity: 'info',
    description: 'A network (port group) was created.',
    done: '{user} created {object}',
    failed: '{user} failed to create {object}',
  },
  'access.denied': {
    severity: 'warning',
    description:
      'An API call was refused: not logged in, or lacking a privilege. The message names the missing privilege.',
    done: '{user} was refused {object}',
    failed: '{user} was refused {object}',
  },
  'host.joined': {
    severity: 'info',
    description: 'A host’s agent enrolled with the manager.',
    done: '{object} joined',
    failed: '{object} failed to join',
  },
  'host.join-refused': {
    severity: 'warning',
    description: 'An agent’s enrollment was refused (bad or expired token, name taken).',
    done: '{object} at {sourceIp} was not allowed to join',
    failed: '{object} at {sourceIp} was not allowed to join',
  },
  'host.enrollment-token-created': {
    severity: 'info',
    description: 'A one-time token for enrolling a host was issued.',
    done: '{user} created an enrollment token for {object}',
    failed: '{user} failed to create an enrollment token for {object}',
  },
  'host.reconnected': {
    severity: 'info',
    description: 'The manager reached a host again (after it was disconnected, or on request).',
    done: '{user} reconnected {object}',
    failed: '{user} failed to reconnect {object}',
  },
  'host.revoked': {
    severity: 'warning',
    description: 'A host’s certificate was revoked: the manager no longer trusts its agent.',
    done: '{user} revoked {object}',
    failed: '{user} failed to revoke {object}',
  },
  'host.disconnected': {
    severity: 'error',
    description: 'The manager lost contact with a host’s agent.',
    done: '{object} disconnected',
    failed: '{object} disconnected',
  },
  'user.created': {
    severity: 'info',
    description: 'A user account was created.',
    done: '{user} created {object}',
    failed: '{user} failed to create {object}',
  },
  'user.logged-in': {
    severity: 'info',
    description: 'A user signed in.',
    done: '{user} logged in from {sourceIp}',
    failed: '{user} failed to log in from {sourceIp}',
  },
  'user.login-failed': {
    severity: 'warning',
    description: 'A sign-in was refused (wrong password, unknown user, locked account).',
    done: '{user} failed to log in from {sourceIp}',
    failed: '{user} failed to log in from {sourceIp}',
  },
  'user.logged-out': {
    severity: 'info',
    description: 'A user signed out or a session was ended.',
    done: '{user} logged out',
    failed: '{user} failed to log out',
  },
  'user.token-created': {
    severity: 'info',
    description: 'An API token was issued to a user.',
    done: '{user} created an API token for {object}',
    failed: '{user} failed to create an API token for {object}',
  },
  'user.token-revoked': {
    severity: 'warning',
    description: 'An API token was revoked; requests with it are refused from then on.',
    done: '{user} revoked an API token of {object}',
    failed: '{user} failed to revoke an API token of {object}',
  },
  'user.roles-changed': {
    severity: 'warning',
    description: 'A user’s roles or privileges changed; changes show from → to.',
    done: '{user} changed the roles of {object}',
    failed: '{user} failed to change the roles of {object}',
  },
  'role.created': {
    severity: 'info',
    description: 'A role (a named set of privileges) was created; changes list its privileges.',
    done: '{user} created {object}',
    failed: '{user} failed to create {object}',
  },
  'kms.provider-added': {
    severity: 'info',
    description: 'A KMIP key provider was added.',
    done: '{user} added {object}',
    failed: '{user} failed to add {object}',
  },
  'kms.provider-changed': {
    severity: 'warning',
    description: 'A key provider’s address, certificates or credentials changed.',
    done: '{user} changed {object}',
    failed: '{user} failed to change {object}',
  },
  'kms.provider-removed': {
    severity: 'warning',
    description: 'A key provider was removed.',
    done: '{user} removed {object}',
    failed: '{user} failed to remove {object}',
  },
  'kms.provider-unreachable': {
    severity: 'error',
    description: 'A key provider did not answer: encrypted VMs cannot start while it is down.',
    done: '{object} is unreachable',
    failed: '{object} is unreachable',
  },
  'kms.provider-default-changed': {
    severity: 'warning',
    description: 'Another key provider became the default: new KEKs come from it from now on.',
    done: '{user} made {object} the default',
    failed: '{user} failed to make {object} the default',
  },
  'kms.provider-certificate-set': {
    severity: 'info',
    description:
      'A key provider’s client certificate was installed: a signed CSR completing it, or a renewal (never the key).',
    done: '{user} set the client certificate of {object}',
    failed: '{user} failed to set the client certificate of {object}',
  },
  'kms.backup-missing': {
    severity: 'warning',
    description:
      'The default key provider (an embedded key server) holds keys of encrypted VMs that no backup contains: back it up (hyperseal kms backup).',
    done: '{object} holds keys that are in no backup',
    failed: '{object} holds keys that are in no backup',
  },
  'kms.backup-current': {
    severity: 'info',
    description: 'The default key provider’s newest key is in a backup again (the backup warning is over).',
    done: 'every key of {object} is in a backup',
    failed: 'every key of {object} is in a backup',
  },
  'kms.provider-tested': {
    severity: 'info',
    description:
      'A key provider’s KMIP servers were tested; the message gives each server’s answer or failure.',
    done: '{user} tested {object}',
    failed: '{user} tested {object}: not every server answered',
  },
  'key.created': {
    severity: 'info',
    description: 'A key was created on a key provider.',
    done: '{user} created {object}',
    failed: '{user} failed to create {object}',
  },
  'key.revoked': {
    severity: 'warning',
    description: 'A key was revoked; VMs using it must be rekeyed.',
    done: '{user} revoked {object}',
    failed: '{user} failed to revoke {object}',
  },
  'key.destroyed': {
    severity: 'warning',
    description: 'A key was destroyed; data encrypted only with it is unrecoverable.',
    done: '{user} destroyed {object}',
    failed: '{user} failed to destroy {object}',
  },
  'alert.raised': {
    // The rule's severity replaces this default (alerts/alert.ts). The phrase reads
    // "ops@local triggered alert rule pci-nic"; events of this type never trigger rules.
    severity: 'warning',
    description: 'An alert rule matched an event.',
    done: '{user} triggered {object}',
    failed: '{user} triggered {object}',
  },
  'audit.integrity-failed': {
    severity: 'critical',
    description: 'Verifying the event chain found an altered, missing or reordered event.',
    done: '{object} failed verification',
    failed: '{object} failed verification',
  },
} as const satisfies Record<string, EventTypeInfo>;

export type EventType = keyof typeof EventTypes;

export function isEventType(s: string): s is EventType {
  return Object.hasOwn(EventTypes, s);
}

/** An event before it joins a chain (no seq, prevHash, hash yet). */
export interface UnchainedEvent {
  /** Random UUID (v4). */
  readonly id: string;
  /** ISO 8601 UTC with milliseconds, e.g. 2024-05-01T12:00:00.000Z. */
  readonly time: string;
  readonly type: EventType;
  readonly severity: Severity;
  /** Who acted: `ops@local`, `system` for the platform itself, the attempted name for login failures. */
  readonly user: string;
  /** Where the call came from; null for events the platform raises itself. */
  readonly sourceIp: string | null;
  readonly object: EventObject;
  readonly changes: readonly Change[];
  readonly result: EventResult;
  readonly message: string;
}

/**
 * A chained event. `seq` is not in the design's field list: it is the event's position in
 * its chain (0, 1, 2, …), covered by the hash. Without it a deleted event and an altered,
 * re-hashed one look the same to the verifier (both leave an unknown prevHash), so the
 * verifier could not say 'missing' vs 'broken-link'.
 */
export interface Event extends UnchainedEvent {
  readonly seq: number;
  /** Hash of the previous event in the chain; GENESIS_HASH for the first. */
  readonly prevHash: string;
  /** SHA-256 (hex) of prevHash ‖ canonical JSON of this event without `hash`. */
  readonly hash: string;
}
