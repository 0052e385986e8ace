/**
 * The manager ↔ agent contract: JSON over HTTPS with mutual TLS (both sides hold
 * certificates from the manager's CA; the agent accepts only the manager's identity).
 * Enrollment is the one call an agent makes to the manager before it has a certificate.
 * Shared by the agent's server and the manager's agent client so they cannot drift.
 */

/** The CN of the manager's client certificate; agents refuse any other peer. */
export const MANAGER_IDENTITY = 'hyperseal-manager';

import type { AcceptanceLevel } from '../secureboot/acceptance.js';
import type { KeySet } from '../secureboot/keyset.js';

export type Firmware = 'bios' | 'efi';
export type DriverKind = 'qemu' | 'sim';

export interface VmDiskSpec {
  /** Stable key within the VM, e.g. 'disk0'. */
  id: string;
  sizeMiB: number;
  /** Datastore directory on the host; the agent creates `<datastore>/<vmId>/<id>.qcow2`. */
  datastorePath: string;
}

export interface VmNicSpec {
  id: string;
  mac: string;
  network: string;
}

/**
 * An encrypted VM's key reference. `kekRef` is opaque to the agent ("<providerId>/<keyId>"
 * as the manager forms it): it names the KEK whose material the manager pushes with
 * putKeys. The agent generates the DEKs (one per disk, one for the VM home) and keeps them
 * only wrapped by that KEK (AES key wrap, RFC 3394) in the VM's encryption bundle.
 */
export interface VmEncryptionSpec {
  kekRef: string;
}

/** What the agent needs to run a VM. The manager owns it; the agent keeps a copy. */
export interface VmSpec {
  id: string;
  name: string;
  cpus: number;
  memoryMiB: number;
  firmware: Firmware;
  secureBoot: boolean;
  disks: VmDiskSpec[];
  nics: VmNicSpec[];
  /**
   * null: plain. On a new VM, non-null creates it encrypted; on an existing VM it must
   * match what the VM is (encrypt/decrypt/rekey change it, define never does).
   */
  encryption: VmEncryptionSpec | null;
  /**
   * The keys enrolled in the VM's UEFI variable store when secureBoot is on: absent means
   * Microsoft's (OVMF's ms template as is); a custom set carries certificates and hashes
   * only, never private keys. Written when the store is (re)created: a change makes the
   * agent create it again at the next power-on.
   */
  secureBootKeySet?: KeySet;
  /** A vTPM 2.0 (swtpm, started by the agent per VM; EFI only). Absent means none. */
  vtpm?: boolean;
}

export type VmRuntimeState =
  'stopped' | 'starting' | 'running' | 'paused' | 'shutting-down' | 'crashed' | 'unknown';

export interface VmRuntime {
  id: string;
  state: VmRuntimeState;
  /** Set while QEMU runs (qemu driver). */
  pid?: number;
  /** True for the sim driver: nothing really runs. */
  simulated: boolean;
  /** The VM's encryption as its files on the datastore say; null when plain. */
  encryption: VmEncryptionSpec | null;
  /** Encrypted, and its KEK is not in this agent's memory: it cannot start until pushed. */
  locked: boolean;
  /** A long operation under way (encrypt, decrypt, rekey, clone, migrate) and how far it got. */
  operation?: {
    kind: VmCryptoOperation;
    progress: number;
    /** migrate: bytes of QEMU's stream sent so far, their rate, and RAM QEMU still has to send. */
    bytes?: number;
    bytesPerSecond?: number;
    remainingBytes?: number;
  };
  /**
   * Source of a live migration whose stream was sent whole: the VM is held paused until the
   * manager resolves it (migrationResolve) with the destination's answer.
   */
  unresolvedMigration?: string;
}

export type VmCryptoOperation = 'encrypt' | 'decrypt' | 'rekey' | 'deep-rekey' | 'clone' | 'migrate';

/** One KEK pushed by the manager: material only ever travels over the mutual-TLS channel. */
export interface KeyMaterial {
  ref: string;
  /** base64 of the 32-byte AES-256 key. */
  material: string;
}

export interface PutKeysRequest {
  keys: KeyMaterial[];
}

export interface PutKeysResponse {
  /** Refs now held; a key that does not unwrap the DEKs of a VM naming it is refused instead. */
  held: string[];
}

export interface KeyRefs {
  refs: string[];
}

export interface EncryptRequest {
  kekRef: string;
}

export interface RekeyRequest {
  /** The new KEK (already pushed). */
  kekRef: string;
  /** false: shallow (DEKs re-wrapped, VM may run); true: new DEKs, data re-encrypted (stopped). */
  deep: boolean;
}

export interface CloneRequest {
  /** The clone's full spec (a new id; disks on this host's datastores). */
  spec: VmSpec;
}

export interface HostFacts {
  hostname: string;
  driver: DriverKind;
  simulated: boolean;
  cpuAesNi: boolean;
  kvmUsable: boolean;
  accel: 'kvm' | 'tcg' | 'none';
  qemuVersion: string | null;
  ovmfVersion: string | null;
  /** The host's own UEFI Secure Boot state. */
  uefiSecureBoot: 'enabled' | 'disabled' | 'not-uefi' | 'unknown';
  agentVersion: string;
  /** Local datastores (directories for VM files) this agent offers. */
  datastores?: { name: string; path: string }[];
  /** Host Secure Boot: what the agent verified at start (absent from agents before it). */
  secureBoot?: HostSecureBootReport;
  /**
   * Live migration (absent: the agent cannot migrate). `encrypted`: it can seal and open
   * the encrypted migration channel (aes-256-gcm); the manager encrypts a migration only
   * when both agents say so.
   */
  migration?: { live: boolean; encrypted: boolean };
}

/**
 * One migration's parameters, made by the manager for this migration only and sent to
 * both agents over mutual TLS; never stored, logged or returned. docs/encrypted-migration.md.
 */
export interface MigrationSpec {
  /** `[A-Za-z0-9][A-Za-z0-9._:-]{0,63}` */
  id: string;
  cipher: 'aes-256-gcm' | 'none';
  /** base64 of 32 bytes (aes-256-gcm only). */
  key?: string;
  /** base64 of 8 bytes (aes-256-gcm only). */
  nonce?: string;
}

/**
 * The VM's record as the source agent keeps it (opaque to the manager): its identity,
 * image generation and, for an encrypted VM, the sealed spec and the DEKs wrapped by its
 * KEK (nothing in it is readable without the KEK).
 */
export type VmMigrationRecord = Record<string, unknown>;

/** To the destination: define the VM from the source's record, start QEMU waiting for it. */
export interface MigrationIncomingRequest {
  spec: VmSpec;
  record: VmMigrationRecord;
  migration: MigrationSpec;
  /** A stopped VM: the stream is its files (cold-archive.ts), and no QEMU starts. */
  cold?: boolean;
  /**
   * Cold: disks that have no image on this host yet arrive in the stream.
   * Live, with disks on the source's local datastore: the destination creates empty images
   * (encrypted with the VM's own DEKs for an encrypted VM) at spec.disks' paths, exports
   * them over NBD and listens for the disk tunnel (migration/tunnel.ts) too.
   */
  copyDisks?: boolean;
}

/** Where the destination's migration listener waits (port chosen by the agent). */
export interface MigrationIncomingResponse {
  host: string;
  port: number;
  /** copyDisks: where the disk tunnel listens. */
  nbd?: { host: string; port: number };
}

/** To the source: stream the running VM to the destination's listener; answers when done. */
export interface MigrationOutgoingRequest {
  migration: MigrationSpec;
  peer: { host: string; port: number };
  /** A stopped VM: its NVRAM file goes through the channel instead of QEMU's stream. */
  cold?: boolean;
  /** Local disks: mirror them through the disk tunnel to this peer before the memory. */
  nbdPeer?: { host: string; port: number };
  /** Cold, local disks: the ids of the disks whose images go through the channel too. */
  copyDisks?: string[];
}

export interface MigrationOutgoingResponse {
  /** Bytes of QEMU's stream, on the wire, elapsed and average rate. */
  bytes: number;
  wireBytes: number;
  elapsedMs: number;
  bytesPerSecond: number;
  cipher: 'aes-256-gcm' | 'none';
}

/** To the destination: settle incoming migration `migrationId` (dropped unless acknowledged). */
export interface MigrationSettleRequest {
  migrationId: string;
}

/**
 * `aborted`: it was not acknowledged and is gone now; `absent`: this host has no such VM
 * (never received, or already dropped); `committed`: acknowledged, this host keeps the VM.
 */
export interface MigrationSettleResponse {
  outcome: 'aborted' | 'absent' | 'committed';
}

/** To the source: the destination's answer for migration `migrationId`. */
export interface MigrationResolveRequest {
  migrationId: string;
  /** True: the destination keeps the VM, the source's copy ends; false: the source resumes. */
  moved: boolean;
}

/** `gone`: the source no longer has the VM; `kept`: it runs here again. */
export interface MigrationResolveResponse {
  outcome: 'gone' | 'kept';
}

/** One bundle installed on a host (files under `<agent data dir>/bundles/<name>/`). */
export interface InstalledBundle {
  name: string;
  version: string;
  vendor: string;
  acceptance: AcceptanceLevel;
  /** It verified against the host's trust anchors and level (at start or install). */
  verified: boolean;
  /** The signer's subject, when it verified. */
  signer?: string;
  /** Why it did not verify (an HS_ERR_BUNDLE_* code and message). */
  problem?: { code: string; message: string; file?: string };
}

/**
 * Host Secure Boot as the agent sees it. `verification` is the result of the check at
 * start (its own core against its signed manifest, then every installed bundle): when it
 * failed with Secure Boot on, the agent answers nothing but facts and this report.
 */
export interface HostSecureBootReport {
  /** secure-boot.json exists in the agent's data directory. */
  configured: boolean;
  enabled: boolean;
  /** The lowest level this host admits. */
  acceptance: AcceptanceLevel;
  /** The lowest level among installed bundles (null: none installed). */
  effectiveAcceptance: AcceptanceLevel | null;
  verification: {
    result: 'passed' | 'failed' | 'not-checked';
    checkedAt: string | null;
    /** What failed: 'core' or 'bundle <name>'. */
    subject?: string;
    code?: string;
    file?: string;
    message?: string;
  };
  bundles: InstalledBundle[];
  trustAnchors: { subject: string; sha256: string; maxAcceptance?: AcceptanceLevel }[];
}

/** A bundle travels as its files: bundle.json, bundle.sig and the files it lists. */
export interface BundleUpload {
  files: { path: string; /** base64 */ data: string }[];
}

/** POST {manager}/api/v1/hosts/enroll — the agent's first and only unauthenticated call. */
export interface EnrollRequest {
  token: string;
  name: string;
  /** https://HOST:PORT where the agent will listen. */
  address: string;
  csrPem: string;
}

export interface EnrollResponse {
  hostId: string;
  certPem: string;
  caPem: string;
}

/** Agent routes (all under https://agent/v1, mutual TLS). */
export const AgentRoutes = {
  facts: { method: 'GET', path: '/v1/facts' },
  listVms: { method: 'GET', path: '/v1/vms' },
  /** One VM's runtime (progress of a long operation included). */
  getVm: { method: 'GET', path: '/v1/vms/:id' },
  /** PUT the full spec: defines or updates a stopped VM (creates missing disks). */
  defineVm: { method: 'PUT', path: '/v1/vms/:id' },
  deleteVm: { method: 'DELETE', path: '/v1/vms/:id' },
  powerOn: { method: 'POST', path: '/v1/vms/:id/power-on' },
  powerOff: { method: 'POST', path: '/v1/vms/:id/power-off' },
  shutdown: { method: 'POST', path: '/v1/vms/:id/shutdown' },
  reset: { method: 'POST', path: '/v1/vms/:id/reset' },
  /** GET ?offset=N → { offset, next, data (UTF-8 text) } */
  console: { method: 'GET', path: '/v1/vms/:id/console' },
  /** Encrypts a stopped plain VM (copy to encrypted images, atomic swap). */
  encrypt: { method: 'POST', path: '/v1/vms/:id/encrypt' },
  /** Decrypts a stopped encrypted VM (copy to plain images, atomic swap). */
  decrypt: { method: 'POST', path: '/v1/vms/:id/decrypt' },
  rekey: { method: 'POST', path: '/v1/vms/:id/rekey' },
  /** Copies a stopped VM to a new one (encrypted with its own KEK, or plain). */
  clone: { method: 'POST', path: '/v1/vms/:id/clone' },
  /** KEK material from the manager, held in memory only. */
  putKeys: { method: 'PUT', path: '/v1/keys' },
  /** KEK refs that VMs on this host need and the agent does not hold (after a restart). */
  neededKeys: { method: 'GET', path: '/v1/keys/needed' },
  /** Forget KEKs (crypto-shred, or a VM that left): zeroized at once. */
  dropKeys: { method: 'POST', path: '/v1/keys/drop' },
  /** Live migration, source: the VM's record for the destination (no key material in it). */
  migrationRecord: { method: 'GET', path: '/v1/vms/:id/migration/record' },
  /** Live migration, destination: define from the record, start QEMU -incoming, listen. */
  migrationIncoming: { method: 'POST', path: '/v1/vms/:id/migration/incoming' },
  /** Live migration, source: send the VM through the channel; answers when it is done. */
  migrationOutgoing: { method: 'POST', path: '/v1/vms/:id/migration/outgoing' },
  /**
   * Migration, destination, after the source's answer: drops an incoming migration not yet
   * acknowledged (its files and QEMU go), waits for an acknowledged one to run or fail here,
   * and answers whether this host keeps the VM. Idempotent.
   */
  migrationSettle: { method: 'POST', path: '/v1/vms/:id/migration/settle' },
  /**
   * Live migration, source, after the destination's answer: `moved` ends the paused source
   * (QEMU, home, copied disks); otherwise it resumes. Idempotent.
   */
  migrationResolve: { method: 'POST', path: '/v1/vms/:id/migration/resolve' },
  /** Host Secure Boot: the verification report (answered even when verification failed). */
  secureBootStatus: { method: 'GET', path: '/v1/secure-boot' },
  listBundles: { method: 'GET', path: '/v1/bundles' },
  /** Verified in a staging directory first, then moved into place; refused → nothing changes. */
  installBundle: { method: 'PUT', path: '/v1/bundles' },
  removeBundle: { method: 'POST', path: '/v1/bundles/remove' },
} as const;

/**
 * Request and response bodies per route (added by the agent's author: the routes above
 * left them open). Status 200 with a JSON body unless noted; errors are ErrorBody with the
 * registry's status. powerOn/powerOff are idempotent (a manager retrying after a timeout
 * gets the state, not an error); shutdown/reset of a stopped VM are HS_ERR_CONFLICT.
 */
export interface AgentBodies {
  facts: { request: null; response: HostFacts };
  listVms: { request: null; response: VmRuntime[] };
  getVm: { request: null; response: VmRuntime };
  /** The spec's id must equal the path's :id. */
  defineVm: { request: VmSpec; response: VmRuntime };
  /** 204, no body. */
  deleteVm: { request: null; response: null };
  powerOn: { request: null; response: VmRuntime };
  powerOff: { request: null; response: VmRuntime };
  /** ACPI power button; waits up to timeoutMs (default 0) for the guest to stop. */
  shutdown: { request: ShutdownRequest | null; response: VmRuntime };
  reset: { request: null; response: VmRuntime };
  console: { request: null; response: ConsoleChunk };
  encrypt: { request: EncryptRequest; response: VmRuntime };
  decrypt: { request: null; response: VmRuntime };
  rekey: { request: RekeyRequest; response: VmRuntime };
  clone: { request: CloneRequest; response: VmRuntime };
  putKeys: { request: PutKeysRequest; response: PutKeysResponse };
  neededKeys: { request: null; response: KeyRefs };
  /** 204, no body. */
  dropKeys: { request: KeyRefs; response: null };
  migrationRecord: { request: null; response: VmMigrationRecord };
  migrationIncoming: { request: MigrationIncomingRequest; response: MigrationIncomingResponse };
  migrationOutgoing: { request: MigrationOutgoingRequest; response: MigrationOutgoingResponse };
  migrationSettle: { request: MigrationSettleRequest; response: MigrationSettleResponse };
  migrationResolve: { request: MigrationResolveRequest; response: MigrationResolveResponse };
  secureBootStatus: { request: null; response: HostSecureBootReport };
  listBundles: { request: null; response: InstalledBundle[] };
  installBundle: { request: BundleUpload; response: InstalledBundle };
  /** 204, no body. */
  removeBundle: { request: { name: string }; response: null };
}

export interface ShutdownRequest {
  timeoutMs?: number;
}

/**
 * Serial console output. `offset` is where `data` starts (byte offset into the VM's
 * serial log), `next` the offset to ask for next; at most 64 KiB per answer, cut on a
 * UTF-8 character boundary. An offset past the end means the log was recreated (QEMU
 * truncates it at each power-on): the answer then starts at 0, so `offset` < the one asked.
 */
export interface ConsoleChunk {
  offset: number;
  next: number;
  data: string;
}

/** Agent error bodies follow the manager's: { code, message } with HS_ERR_* codes. */
export interface ErrorBody {
  code: string;
  message: string;
}
