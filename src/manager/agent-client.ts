/**
 * The manager's side of the agent contract (src/agent/api.ts): JSON over HTTPS with
 * mutual TLS. The manager presents its client certificate (CN hyperseal-manager) and
 * trusts only agent certificates issued by its own CA for that host's id: a certificate
 * from elsewhere, or one issued to another host, is refused.
 */
import https from 'node:https';
import type {
  BundleUpload,
  ConsoleChunk,
  HostFacts,
  HostSecureBootReport,
  InstalledBundle,
  KeyMaterial,
  MigrationIncomingRequest,
  MigrationIncomingResponse,
  MigrationOutgoingRequest,
  MigrationSettleRequest,
  MigrationSettleResponse,
  MigrationOutgoingResponse,
  MigrationResolveRequest,
  MigrationResolveResponse,
  PutKeysResponse,
  VmMigrationRecord,
  VmRuntime,
  VmSpec,
} from '../agent/api.js';
import { AgentRoutes } from '../agent/api.js';
import type { ErrorCode } from '../errors.js';
import { ErrorCodes, HypersealError } from '../errors.js';

export interface AgentClientOptions {
  /** https://host:port of the agent. */
  address: string;
  /** The host's id: its certificate's CN must equal it. */
  hostId: string;
  caPem: string;
  certPem: string;
  keyPem: string;
  timeoutMs?: number;
}

const LONG_OPERATION_MS = 24 * 3600_000;

export class AgentClient {
  private readonly agent: https.Agent;
  private readonly base: URL;

  constructor(private readonly opts: AgentClientOptions) {
    this.base = new URL(opts.address);
    // keepAlive: one TLS session reused across calls, as for KMIP.
    this.agent = new https.Agent({
      keepAlive: true,
      maxSockets: 16,
      ca: opts.caPem,
      cert: opts.certPem,
      key: opts.keyPem,
      checkServerIdentity: (_host, cert) => {
        const cn = cert.subject?.CN;
        return cn === opts.hostId
          ? undefined
          : new Error(
              `the agent at ${opts.address} presented a certificate for '${String(cn)}', not host ${opts.hostId}`,
            );
      },
    });
  }

  get address(): string {
    return this.opts.address;
  }

  close(): void {
    this.agent.destroy();
  }

  private async call<T>(
    route: { method: string; path: string },
    id?: string,
    body?: unknown,
    query = '',
    timeoutMs = this.opts.timeoutMs ?? 60_000,
    attempt = 0,
  ): Promise<T> {
    const path = route.path.replace(':id', encodeURIComponent(id ?? '')) + query;
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise<T>((resolve, reject) => {
      const req = https.request(
        {
          host: this.base.hostname,
          port: this.base.port,
          method: route.method,
          path,
          agent: this.agent,
          timeout: timeoutMs,
          headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown;
            try {
              parsed = text === '' ? null : JSON.parse(text);
            } catch {
              reject(
                new HypersealError(
                  'HS_ERR_HOST_UNAVAILABLE',
                  `host ${this.opts.hostId} sent a non-JSON answer`,
                ),
              );
              return;
            }
            if ((res.statusCode ?? 500) >= 400) {
              const e = parsed as { code?: string; message?: string } | null;
              const code = (
                e?.code !== undefined && e.code in ErrorCodes ? e.code : 'HS_ERR_HOST_UNAVAILABLE'
              ) as ErrorCode;
              reject(
                new HypersealError(
                  code,
                  `host ${this.opts.hostId}: ${e?.message ?? `HTTP ${res.statusCode}`}`,
                ),
              );
              return;
            }
            resolve(parsed as T);
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.on('error', (err: NodeJS.ErrnoException) => {
        // A kept-alive connection the agent closed meanwhile (it restarted): the request
        // never reached it, so sending it again on a fresh connection is safe.
        if (req.reusedSocket && err.code === 'ECONNRESET' && attempt === 0) {
          resolve(this.call<T>(route, id, body, query, timeoutMs, 1));
          return;
        }
        reject(
          new HypersealError(
            'HS_ERR_HOST_UNAVAILABLE',
            `cannot reach host ${this.opts.hostId} at ${this.opts.address}: ${err.message}`,
          ),
        );
      });
      req.end(payload);
    });
  }

  facts(): Promise<HostFacts> {
    return this.call(AgentRoutes.facts);
  }
  listVms(): Promise<VmRuntime[]> {
    return this.call(AgentRoutes.listVms);
  }
  defineVm(spec: VmSpec): Promise<VmRuntime> {
    return this.call(AgentRoutes.defineVm, spec.id, spec);
  }
  deleteVm(id: string): Promise<void> {
    return this.call(AgentRoutes.deleteVm, id);
  }
  powerOn(id: string): Promise<VmRuntime> {
    return this.call(AgentRoutes.powerOn, id, {});
  }
  powerOff(id: string): Promise<VmRuntime> {
    return this.call(AgentRoutes.powerOff, id, {});
  }
  shutdown(id: string): Promise<VmRuntime> {
    return this.call(AgentRoutes.shutdown, id, {});
  }
  reset(id: string): Promise<VmRuntime> {
    return this.call(AgentRoutes.reset, id, {});
  }
  console(id: string, offset: number): Promise<ConsoleChunk> {
    return this.call(AgentRoutes.console, id, undefined, `?offset=${offset}`);
  }
  getVm(id: string): Promise<VmRuntime> {
    return this.call(AgentRoutes.getVm, id);
  }
  /** Copies whole disks: allowed up to a day (the task shows the agent's progress meanwhile). */
  encrypt(id: string, kekRef: string): Promise<VmRuntime> {
    return this.call(AgentRoutes.encrypt, id, { kekRef }, '', LONG_OPERATION_MS);
  }
  decrypt(id: string): Promise<VmRuntime> {
    return this.call(AgentRoutes.decrypt, id, {}, '', LONG_OPERATION_MS);
  }
  rekey(id: string, kekRef: string, deep: boolean): Promise<VmRuntime> {
    return this.call(AgentRoutes.rekey, id, { kekRef, deep }, '', LONG_OPERATION_MS);
  }
  clone(id: string, spec: VmSpec): Promise<VmRuntime> {
    return this.call(AgentRoutes.clone, id, { spec }, '', LONG_OPERATION_MS);
  }
  migrationRecord(id: string): Promise<VmMigrationRecord> {
    return this.call(AgentRoutes.migrationRecord, id);
  }
  /** Carries a migration key: over mutual TLS only, never logged. */
  migrationIncoming(id: string, body: MigrationIncomingRequest): Promise<MigrationIncomingResponse> {
    return this.call(AgentRoutes.migrationIncoming, id, body);
  }
  /** Destination: drop an unacknowledged incoming migration; says which host keeps the VM. */
  migrationSettle(id: string, body: MigrationSettleRequest): Promise<MigrationSettleResponse> {
    return this.call(AgentRoutes.migrationSettle, id, body, '', LONG_OPERATION_MS);
  }
  /** Source: end (moved) or resume the VM held paused after its stream went whole. */
  migrationResolve(id: string, body: MigrationResolveRequest): Promise<MigrationResolveResponse> {
    return this.call(AgentRoutes.migrationResolve, id, body, '', LONG_OPERATION_MS);
  }
  /** Answers when the stream is done: as long as a migration may take. */
  migrationOutgoing(id: string, body: MigrationOutgoingRequest): Promise<MigrationOutgoingResponse> {
    return this.call(AgentRoutes.migrationOutgoing, id, body, '', LONG_OPERATION_MS);
  }
  /** Key material travels only here, over mutual TLS; the caller zeroizes its buffers. */
  putKeys(keys: KeyMaterial[]): Promise<PutKeysResponse> {
    return this.call(AgentRoutes.putKeys, undefined, { keys });
  }
  neededKeys(): Promise<string[]> {
    return this.call<{ refs: string[] }>(AgentRoutes.neededKeys).then((r) => r.refs);
  }
  dropKeys(refs: string[]): Promise<void> {
    return this.call(AgentRoutes.dropKeys, undefined, { refs });
  }
  secureBootStatus(): Promise<HostSecureBootReport> {
    return this.call(AgentRoutes.secureBootStatus);
  }
  listBundles(): Promise<InstalledBundle[]> {
    return this.call(AgentRoutes.listBundles);
  }
  installBundle(upload: BundleUpload): Promise<InstalledBundle> {
    return this.call(AgentRoutes.installBundle, undefined, upload, '', 10 * 60_000);
  }
  removeBundle(name: string): Promise<void> {
    return this.call(AgentRoutes.removeBundle, undefined, { name });
  }
}
