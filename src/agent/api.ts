/**
 * The manager ↔ agent contract: JSON over HTTPS with mutual TLS (both sides hold
 * certificates from the manager's CA; the agent accepts only the manager's identity).
 * Enrollment is the one call an agent makes to the manager before it has a certificate.
 * Shared by the agent's server and the manager's agent client so they cannot drift.
 */

/** The CN of the manager's client certificate; agents refuse any other peer. */
export const MANAGER_IDENTITY = 'hyperseal-manager';

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
  /** PUT the full spec: defines or updates a stopped VM (creates missing disks). */
  defineVm: { method: 'PUT', path: '/v1/vms/:id' },
  deleteVm: { method: 'DELETE', path: '/v1/vms/:id' },
  powerOn: { method: 'POST', path: '/v1/vms/:id/power-on' },
  powerOff: { method: 'POST', path: '/v1/vms/:id/power-off' },
  shutdown: { method: 'POST', path: '/v1/vms/:id/shutdown' },
  reset: { method: 'POST', path: '/v1/vms/:id/reset' },
  /** GET ?offset=N → { offset, next, data (UTF-8 text) } */
  console: { method: 'GET', path: '/v1/vms/:id/console' },
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
