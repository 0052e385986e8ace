/**
 * The one registry of Hyperseal's error codes. Codes are stable: never renamed, never
 * reused. Each has the HTTP status it maps to (the only place that mapping exists) and
 * a one-line meaning that docs/errors.md repeats (a test keeps the two in step).
 */
export const ErrorCodes = {
  HS_ERR_INTERNAL: { status: 500, meaning: 'An unexpected internal failure; the message says where.' },
  HS_ERR_INVALID_ARGUMENT: {
    status: 400,
    meaning: 'A command-line or API argument is missing or malformed.',
  },
  HS_ERR_NOT_FOUND: { status: 404, meaning: 'The API has no such route or object.' },
  HS_ERR_TOO_LARGE: { status: 413, meaning: 'The request body exceeds the configured limit.' },
  HS_ERR_HOST_UNAVAILABLE: {
    status: 503,
    meaning: 'The manager cannot reach a host agent, or the agent answered with something unusable.',
  },
  HS_ERR_EVENT_CHAIN_BROKEN: {
    status: 409,
    meaning: 'The event store’s hash chain does not verify: an event was altered, removed or reordered.',
  },
  HS_ERR_CONFLICT: {
    status: 409,
    meaning: 'The request conflicts with the object’s current state (e.g. deleting a running VM).',
  },
  HS_ERR_CONFIG: { status: 500, meaning: 'A configuration file or data directory is missing or unusable.' },
  HS_ERR_TASK_TIMEOUT: {
    status: 504,
    meaning: 'A task did not finish within the time the client waited for it (it may still finish).',
  },

  // KMIP codec (bytes on the wire)
  HS_ERR_KMIP_TRUNCATED: { status: 400, meaning: 'A TTLV item ends before its declared length.' },
  HS_ERR_KMIP_BAD_TYPE: { status: 400, meaning: 'A TTLV item has an unknown item type byte.' },
  HS_ERR_KMIP_BAD_LENGTH: {
    status: 400,
    meaning: 'A TTLV item length does not fit its type (e.g. an Integer that is not 4 bytes).',
  },
  HS_ERR_KMIP_BAD_PADDING: { status: 400, meaning: 'A TTLV item has non-zero padding bytes.' },
  HS_ERR_KMIP_TOO_LARGE: { status: 413, meaning: 'A KMIP message exceeds the configured maximum size.' },
  HS_ERR_KMIP_TOO_DEEP: { status: 400, meaning: 'A KMIP message nests structures deeper than allowed.' },
  HS_ERR_KMIP_BAD_TEXT: { status: 400, meaning: 'A TTLV Text String is not valid UTF-8.' },
  HS_ERR_KMIP_TRAILING_BYTES: { status: 400, meaning: 'Bytes follow the end of a TTLV message.' },
  HS_ERR_KMIP_BAD_MESSAGE: {
    status: 400,
    meaning: 'A KMIP message is well-formed TTLV but not a valid request or response.',
  },

  // KMIP operations (result reasons from a key manager)
  HS_ERR_KMIP_ITEM_NOT_FOUND: {
    status: 404,
    meaning: 'The key manager has no such object (or it is not yours).',
  },
  HS_ERR_KMIP_PERMISSION_DENIED: {
    status: 403,
    meaning:
      'The key manager refused the operation for this identity, or in the object’s current state (e.g. Destroy of an Active key).',
  },
  HS_ERR_KMIP_ILLEGAL_OPERATION: {
    status: 409,
    meaning:
      'The operation contradicts the object’s attributes (e.g. adding a second value to a single-valued attribute).',
  },
  HS_ERR_KMIP_OPERATION_FAILED: {
    status: 502,
    meaning: 'The key manager answered Operation Failed; the message carries its result reason.',
  },
  HS_ERR_KMIP_AUTHENTICATION: {
    status: 502,
    meaning: 'The key manager did not accept our client credentials.',
  },
  HS_ERR_KMIP_INVALID_REQUEST: {
    status: 400,
    meaning:
      'The key manager rejected a value in the request (Invalid Field, Missing Data, Index Out of Bounds).',
  },
  HS_ERR_KMIP_BAD_RESPONSE: {
    status: 502,
    meaning: 'The key manager’s answer is not valid KMIP (malformed TTLV or a malformed response message).',
  },
  HS_ERR_KMIP_UNSUPPORTED: {
    status: 501,
    meaning: 'The key manager does not support this operation or feature.',
  },

  // KMIP transport
  HS_ERR_KMIP_CONNECT: {
    status: 502,
    meaning: 'Could not connect to the key manager (refused, TLS failed).',
  },
  HS_ERR_KMIP_TIMEOUT: { status: 504, meaning: 'The key manager did not answer within the timeout.' },
  HS_ERR_KMIP_CONNECTION_CLOSED: {
    status: 502,
    meaning: 'The key manager closed the connection mid-request.',
  },

  // Embedded key server
  HS_ERR_KMS_MASTER_KEY: {
    status: 500,
    meaning: 'The key server’s master key is missing or wrong for this object store.',
  },
  HS_ERR_KMS_STORE_CORRUPT: {
    status: 500,
    meaning: 'A sealed record of the key store failed authentication.',
  },
  HS_ERR_KMS_BACKUP_CORRUPT: {
    status: 422,
    meaning: 'A key server backup file is damaged, truncated, altered or not a backup.',
  },
  HS_ERR_KMS_BACKUP_KEY: {
    status: 403,
    meaning: 'Wrong passphrase or private key for a key server backup.',
  },
  HS_ERR_KMS_RESTORE_NOT_EMPTY: {
    status: 409,
    meaning: 'A restore would overwrite a key server that already holds a store.',
  },
  HS_ERR_KMS_NOT_BACKED_UP: {
    status: 409,
    meaning: 'Encrypting the first VM with a never-backed-up embedded key server needs confirmation.',
  },

  // Cryptography
  HS_ERR_CRYPTO_AUTH: {
    status: 500,
    meaning: 'Sealed data failed authentication: it was altered, or the key is wrong.',
  },

  // VM encryption (agent and manager)
  HS_ERR_KEY_INVALID: {
    status: 400,
    meaning: 'Key material has the wrong size or form (a KEK is 32 bytes).',
  },
  HS_ERR_KEY_MISMATCH: {
    status: 409,
    meaning:
      'A key does not unwrap the DEKs it should: it is not the VM’s KEK, or the wrapped keys were altered.',
  },
  HS_ERR_VM_LOCKED: {
    status: 409,
    meaning:
      'The VM is encrypted and its key cannot be had (provider down, key destroyed); unlock it once fixed.',
  },

  // Key providers (src/keys): KMIP clusters the manager takes KEKs from
  HS_ERR_NO_KEY_PROVIDER: {
    status: 409,
    meaning: 'No key provider is configured, so there is no default to take keys from: add one first.',
  },
  HS_ERR_KEY_PROVIDER_UNAVAILABLE: {
    status: 503,
    meaning:
      'None of a key provider’s KMIP servers answered (refused, TLS failed, timeout); the message names each server’s failure.',
  },
  HS_ERR_KEY_PROVIDER_NOT_READY: {
    status: 409,
    meaning: 'The key provider awaits its client certificate: its CSR has not been signed and installed yet.',
  },
  HS_ERR_KEY_PROVIDER_REFUSED: {
    status: 502,
    meaning:
      'A key provider’s KMIP server refused the operation (permission denied, authentication, not supported); the message carries its result reason.',
  },
  HS_ERR_KEY_NOT_FOUND: {
    status: 404,
    meaning:
      'The key provider has no key with this id: it was destroyed, never existed there, or is not visible to the manager’s identity.',
  },
  HS_ERR_KEY_UNUSABLE: {
    status: 502,
    meaning: 'The key provider returned something other than an AES-256 key under this id.',
  },

  // Manager database (src/store)
  HS_ERR_DB_URL: {
    status: 500,
    meaning:
      'The database URL is malformed or of an unsupported kind (use a file path, sqlite:PATH or postgres://…).',
  },
  HS_ERR_DB_UNAVAILABLE: {
    status: 503,
    meaning:
      'The database cannot be opened or reached (file not openable, connection refused, login refused).',
  },
  HS_ERR_DB_CONFLICT: {
    status: 409,
    meaning: 'A write would duplicate a unique value (a name, a token or an id is already taken).',
  },
  HS_ERR_DB_CONSTRAINT: {
    status: 409,
    meaning:
      'A write breaks a database rule other than uniqueness (a referenced row is missing or still in use, a value out of range).',
  },
  HS_ERR_DB_BUSY: {
    status: 503,
    meaning:
      'The database stayed locked, or the transaction was chosen as a deadlock or serialization victim; retrying may succeed.',
  },
  HS_ERR_DB_SCHEMA: {
    status: 500,
    meaning:
      'The database schema is not one this Hyperseal can use (newer, or with a different migration history), or a migration failed.',
  },

  // QMP (QEMU Machine Protocol, the agent's control channel to each VM)
  HS_ERR_QMP_BAD_MESSAGE: {
    status: 502,
    meaning: 'QEMU sent a QMP line that is not valid UTF-8 JSON or not a greeting, return, error or event.',
  },
  HS_ERR_QMP_TOO_LARGE: { status: 502, meaning: 'QEMU sent a QMP line longer than the configured maximum.' },
  HS_ERR_QMP_CONNECT: {
    status: 502,
    meaning: 'Could not connect to a VM’s QMP socket (missing, refused, or capabilities negotiation failed).',
  },
  HS_ERR_QMP_TIMEOUT: {
    status: 504,
    meaning: 'QEMU did not send its QMP greeting or answer a command within the timeout.',
  },
  HS_ERR_QMP_CONNECTION_CLOSED: {
    status: 502,
    meaning: 'The QMP connection closed before QEMU answered (QEMU exited, or the client was closed).',
  },
  HS_ERR_QMP_COMMAND_FAILED: {
    status: 502,
    meaning: 'QEMU answered a QMP command with an error; the message carries its class and description.',
  },

  // QEMU processes
  HS_ERR_QEMU_INVALID_SPEC: {
    status: 400,
    meaning: 'A VM spec cannot be turned into a QEMU command line (bad name, id, path, MAC, size or option).',
  },
  HS_ERR_QEMU_FIRMWARE_NOT_FOUND: {
    status: 500,
    meaning: 'No installed OVMF firmware matches what the VM needs (UEFI, or UEFI with Secure Boot).',
  },
  HS_ERR_QEMU_TOOL_FAILED: {
    status: 500,
    meaning: 'A QEMU tool (qemu-img, qemu-system-x86_64 --version) failed; the message carries its output.',
  },
  HS_ERR_QEMU_DISK_EXISTS: {
    status: 409,
    meaning: 'A disk image to be created already exists; it is never overwritten.',
  },
  HS_ERR_QEMU_START_FAILED: {
    status: 500,
    meaning:
      'QEMU exited or did not open its QMP socket while starting a VM; the message carries its stderr.',
  },
  HS_ERR_QEMU_ALREADY_RUNNING: {
    status: 409,
    meaning: 'A QEMU process for this VM is already running.',
  },
  HS_ERR_QEMU_NOT_RUNNING: {
    status: 409,
    meaning: 'No QEMU process runs for this VM (no pidfile, a stale pid, or a pid that is another process).',
  },
  HS_ERR_QEMU_SERIAL_TIMEOUT: {
    status: 504,
    meaning: 'Text awaited on a VM’s serial console did not appear within the timeout.',
  },
  HS_ERR_QEMU_SHUTDOWN_TIMEOUT: {
    status: 504,
    meaning: 'The guest did not power off within the timeout after an ACPI power-button press.',
  },
  HS_ERR_QEMU_SECRET_TIMEOUT: {
    status: 504,
    meaning:
      'QEMU or qemu-img did not open a secret’s FIFO within the timeout; the secret was not handed over.',
  },
  HS_ERR_QEMU_KEY_REJECTED: {
    status: 409,
    meaning: 'An encrypted disk image or NVRAM store does not open with the key given.',
  },

  // Encrypted migration (src/migration): the frame codec and the data channel between agents
  HS_ERR_MIGRATION_BAD_PARAMS: {
    status: 400,
    meaning:
      'Migration channel parameters are invalid (a key that is not 32 bytes, a nonce that is not 8, a malformed migration id, a frame size out of range, an address that cannot be listened on).',
  },
  HS_ERR_MIGRATION_KEY_REUSED: {
    status: 409,
    meaning:
      'A migration nonce was given to a second sender in this agent process; a key and nonce seal one stream only.',
  },
  HS_ERR_MIGRATION_BAD_FRAME: {
    status: 502,
    meaning:
      'The migration peer sent bytes that are not a valid frame of this migration (bad magic or version, another cipher than agreed, a frame type out of place, bytes after END).',
  },
  HS_ERR_MIGRATION_FRAME_TOO_LARGE: {
    status: 502,
    meaning:
      'A migration frame declares a body longer than the protocol allows; it was refused from its header.',
  },
  HS_ERR_MIGRATION_OUT_OF_ORDER: {
    status: 502,
    meaning: 'A migration frame arrived out of counter order: replayed, reordered, or after dropped frames.',
  },
  HS_ERR_MIGRATION_BAD_TAG: {
    status: 502,
    meaning: 'A migration frame failed authentication: it was altered, or sealed with another key.',
  },
  HS_ERR_MIGRATION_WRONG_ID: {
    status: 502,
    meaning: 'The migration peer streams another migration than the one expected.',
  },
  HS_ERR_MIGRATION_TRUNCATED: {
    status: 502,
    meaning:
      'The migration stream ended before its authenticated END frame, or an END or ACK counts other bytes than were sent.',
  },
  HS_ERR_MIGRATION_COUNTER_EXHAUSTED: {
    status: 500,
    meaning: 'A migration stream used up its 32-bit frame counter; counters never wrap.',
  },
  HS_ERR_MIGRATION_CONNECT: {
    status: 502,
    meaning:
      'The migration channel could not reach its peer agent or QEMU’s migration socket (refused, unreachable, timed out).',
  },
  HS_ERR_MIGRATION_CONNECTION_LOST: {
    status: 502,
    meaning: 'A migration channel connection (to the peer agent or to QEMU) closed or failed mid-stream.',
  },
  HS_ERR_MIGRATION_TIMEOUT: {
    status: 504,
    meaning: 'The migration channel waited too long for a connection or for data.',
  },
  HS_ERR_MIGRATION_ENCRYPTION_UNAVAILABLE: {
    status: 409,
    meaning:
      'The VM must migrate encrypted (its migrationEncryption is required, or it is an encrypted VM) and the source or destination agent cannot encrypt migrations; nothing was sent.',
  },
  HS_ERR_MIGRATION_UNSUPPORTED: {
    status: 409,
    meaning:
      'This migration cannot be done: the VM has disks on a datastore the destination does not share, it is neither running nor stopped, it is stopped with a vTPM, or an agent cannot migrate.',
  },
  HS_ERR_MIGRATION_FAILED: {
    status: 502,
    meaning:
      'QEMU’s live migration failed or the destination did not run the VM; the VM keeps running on its source host.',
  },
  HS_ERR_MIGRATION_UNCONFIRMED: {
    status: 502,
    meaning:
      'The whole migration stream was sent but the destination’s acknowledgement never arrived: the source holds the VM paused until the manager has asked the destination which host keeps it.',
  },
  HS_ERR_MIGRATION_ABORTED: {
    status: 409,
    meaning:
      'The migration channel was aborted by its agent (the migration was cancelled or failed elsewhere).',
  },

  // PKI
  HS_ERR_PKI: { status: 500, meaning: 'A certificate or key could not be created, parsed or verified.' },

  // Events (enhanced logging)
  HS_ERR_EVENT_INVALID: {
    status: 500,
    meaning:
      'Data given to the event log cannot be represented in an event (a cycle, a non-finite number, a class instance, nesting too deep).',
  },
  HS_ERR_EVENT_BAD_PATH: {
    status: 400,
    meaning: 'A change path is malformed (an empty segment, an unclosed [ or quote).',
  },

  // Alert rules (src/events/alerts): webhook delivery
  HS_ERR_ALERT_WEBHOOK_REJECTED: {
    status: 502,
    meaning: 'The webhook receiver refused the alert with a 4xx answer or a redirect; it was not retried.',
  },
  HS_ERR_ALERT_WEBHOOK_FAILED: {
    status: 502,
    meaning:
      'The webhook receiver could not be reached, or answered with a server error (5xx), on every attempt.',
  },
  HS_ERR_ALERT_WEBHOOK_TIMEOUT: {
    status: 504,
    meaning: 'The webhook receiver did not answer within the timeout, on the last attempt.',
  },

  // Syslog sink (src/events/syslog): formatting, the on-disk queue, transports
  HS_ERR_SYSLOG_CONFIG: {
    status: 400,
    meaning:
      'A syslog target’s settings are invalid (host, port, transport, format, facility, names, certificates, message size).',
  },
  HS_ERR_SYSLOG_FRAMING: {
    status: 400,
    meaning:
      'Bytes are not a valid octet-counted (RFC 6587) or RFC 5424 syslog message, or exceed the size limit.',
  },
  HS_ERR_SYSLOG_CONNECT: {
    status: 502,
    meaning:
      'The syslog collector could not be reached or written to (refused, unreachable, TLS verification failed, connection lost).',
  },
  HS_ERR_SYSLOG_QUEUE_IO: {
    status: 500,
    meaning: 'The syslog sink’s on-disk queue could not be written or read; the event was not queued.',
  },
  HS_ERR_SYSLOG_QUEUE_FULL: {
    status: 503,
    meaning: 'The syslog sink’s on-disk queue reached its size limit; the event was not queued.',
  },
  HS_ERR_SYSLOG_QUEUE_CORRUPT: {
    status: 500,
    meaning: 'A syslog queue file fails its checks somewhere other than a torn last record.',
  },
  HS_ERR_SYSLOG_QUEUE_LOCKED: {
    status: 409,
    meaning: 'Another live process (or another sink in this one) uses the syslog queue directory.',
  },
  HS_ERR_SYSLOG_CLOSED: { status: 503, meaning: 'The syslog sink is closed, or was never started.' },

  // Authentication and authorization (manager)
  HS_ERR_AUTH_REQUIRED: {
    status: 401,
    meaning: 'The request carries no credentials: sign in or send an API token.',
  },
  HS_ERR_AUTH_INVALID_CREDENTIALS: { status: 401, meaning: 'The user name or password is wrong.' },
  HS_ERR_AUTH_INVALID_TOKEN: {
    status: 401,
    meaning: 'The token or session id is malformed, unknown or revoked.',
  },
  HS_ERR_AUTH_TOKEN_EXPIRED: { status: 401, meaning: 'The token or session has expired.' },
  HS_ERR_AUTH_TOKEN_USED: { status: 401, meaning: 'The one-time token has already been used.' },
  HS_ERR_AUTH_FORBIDDEN: {
    status: 403,
    meaning: 'The user lacks a privilege the operation requires; the message names it.',
  },
  HS_ERR_AUTH_UNKNOWN_PRIVILEGE: { status: 400, meaning: 'A role names a privilege that does not exist.' },
  HS_ERR_AUTH_BUILT_IN_ROLE: {
    status: 409,
    meaning: 'Built-in roles cannot be created, renamed, changed or deleted.',
  },
  HS_ERR_AUTH_WEAK_PASSWORD: { status: 400, meaning: 'The new password does not meet the password policy.' },

  // Host agent (src/agent): joining a manager, its mutual-TLS API, VM drivers
  HS_ERR_AGENT_NOT_JOINED: {
    status: 409,
    meaning: 'The agent has not joined a manager: its data directory holds no complete identity.',
  },
  HS_ERR_AGENT_ALREADY_JOINED: {
    status: 409,
    meaning: 'The agent’s data directory already holds an identity from a manager.',
  },
  HS_ERR_AGENT_CA_MISMATCH: {
    status: 502,
    meaning:
      'The manager’s CA certificate does not have the SHA-256 fingerprint given to join; the token was not sent.',
  },
  HS_ERR_AGENT_MANAGER_UNREACHABLE: {
    status: 502,
    meaning: 'The agent could not reach the manager (name not resolved, refused, TLS failed, timeout).',
  },
  HS_ERR_AGENT_ENROLL_BAD_RESPONSE: {
    status: 502,
    meaning:
      'The manager’s answer to an enrollment is not usable (not JSON, missing fields, wrong certificate).',
  },
  HS_ERR_AGENT_PEER_REFUSED: {
    status: 403,
    meaning: 'The agent accepts calls only from the manager: the client certificate names another identity.',
  },
  HS_ERR_AGENT_DRIVER: {
    status: 500,
    meaning: 'The VM driver failed (QEMU would not start or answer, a disk could not be created).',
  },

  // Secure Boot (src/secureboot): UEFI signature lists, OVMF variable stores, key sets
  HS_ERR_SECUREBOOT_BAD_ESL: {
    status: 400,
    meaning:
      'Bytes are not a valid EFI_SIGNATURE_LIST (sizes that do not add up, a wrong entry size for the type).',
  },
  HS_ERR_SECUREBOOT_BAD_VARSTORE: {
    status: 500,
    meaning:
      'A UEFI variable store file is not an edk2/OVMF authenticated variable store we understand, or not the template expected.',
  },
  HS_ERR_SECUREBOOT_VARSTORE_NOT_PRISTINE: {
    status: 409,
    meaning:
      'Keys are written only into a pristine template copy; this store already holds Secure Boot variables or unfinished writes.',
  },
  HS_ERR_SECUREBOOT_VARSTORE_FULL: {
    status: 413,
    meaning:
      'The key set does not fit in the variable store, or one variable exceeds the firmware’s size limit.',
  },
  HS_ERR_SECUREBOOT_INVALID_KEYSET: {
    status: 400,
    meaning:
      'A Secure Boot key set is malformed (PK not one RSA certificate, a bad certificate, hash or owner GUID).',
  },

  // Signed host bundles and the agent's core manifest (src/secureboot)
  HS_ERR_BUNDLE_INVALID: {
    status: 400,
    meaning: 'A bundle or manifest descriptor is missing or malformed, or of the wrong kind.',
  },
  HS_ERR_BUNDLE_UNSIGNED: { status: 403, meaning: 'The bundle or manifest carries no signature.' },
  HS_ERR_BUNDLE_BAD_SIGNATURE: {
    status: 403,
    meaning: 'The signature does not verify over the descriptor with the signer’s certificate.',
  },
  HS_ERR_BUNDLE_UNTRUSTED: {
    status: 403,
    meaning:
      'The signer’s certificate does not chain to a trust anchor of this host, is expired, is not for code signing, or may not sign this acceptance level.',
  },
  HS_ERR_BUNDLE_CERT_REVOKED: {
    status: 403,
    meaning: 'A certificate in the signer’s chain is on this host’s revocation list.',
  },
  HS_ERR_BUNDLE_ACCEPTANCE_TOO_LOW: {
    status: 403,
    meaning: 'The bundle’s acceptance level is below the host’s.',
  },
  HS_ERR_BUNDLE_FILE_MODIFIED: {
    status: 403,
    meaning: 'A file differs from its SHA-256 in the signed descriptor (or is no longer a regular file).',
  },
  HS_ERR_BUNDLE_FILE_MISSING: { status: 403, meaning: 'A file listed in the signed descriptor is missing.' },
  HS_ERR_BUNDLE_FILE_EXTRA: {
    status: 403,
    meaning: 'A file is present that the signed descriptor does not list.',
  },
  HS_ERR_HOST_VERIFICATION_FAILED: {
    status: 503,
    meaning:
      'Host Secure Boot: the agent’s own files or an installed bundle failed verification at start; the agent serves nothing but its facts.',
  },
  // Desired state (posture files: hyperseal apply / export, docs/posture.md)
  HS_ERR_POSTURE_INVALID: {
    status: 400,
    meaning:
      'A posture file is not valid YAML or does not follow the posture format; the message names the path.',
  },
  HS_ERR_POSTURE_CONFLICT: {
    status: 409,
    meaning:
      'Two rules of a posture file that select the same VM want different values for the same setting.',
  },
  HS_ERR_POSTURE_BLOCKED: {
    status: 409,
    meaning:
      'Applying a posture reached a change the plan marked impossible; the changes before it were made.',
  },
} as const satisfies Record<string, { status: number; meaning: string }>;

export type ErrorCode = keyof typeof ErrorCodes;

/** Every error Hyperseal raises on purpose. `details` must never hold secrets. */
export class HypersealError extends Error {
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>> | undefined;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, options?: ErrorOptions) {
    super(message, options);
    this.name = 'HypersealError';
    this.code = code;
    this.details = details;
  }

  get status(): number {
    return ErrorCodes[this.code].status;
  }

  toJSON(): { code: ErrorCode; message: string; details?: Readonly<Record<string, unknown>> } {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }
}

/** HTTP status for any thrown value: the single mapping point. */
export function httpStatusOf(err: unknown): number {
  return err instanceof HypersealError ? err.status : 500;
}

export function isHypersealError(err: unknown, code?: ErrorCode): err is HypersealError {
  return err instanceof HypersealError && (code === undefined || err.code === code);
}
