/**
 * Hosts: enrollment with one-time tokens, the manager's CA signing each agent's CSR,
 * the mutual-TLS client per host, facts, revocation. An agent's certificate carries the
 * host id as its CN; the manager talks only to the host id it enrolled, at its address.
 */
import { randomUUID } from 'node:crypto';
import { isIP } from 'node:net';
import type { EnrollRequest, EnrollResponse, HostFacts, VmRuntime } from '../agent/api.js';
import { hashToken, newEnrollmentToken, verifyEnrollmentToken } from '../auth/tokens.js';
import { HypersealError } from '../errors.js';
import type { CertifiedKey } from '../pki/index.js';
import { certificateFingerprint256, signCsr } from '../pki/index.js';
import type { Db } from '../store/db.js';
import { fromJson, toJson } from '../store/db.js';
import { AgentClient } from './agent-client.js';
import type { Actor, EventRecorder } from './events.js';

export interface HostRecord {
  id: string;
  name: string;
  address: string;
  /** failed: the agent answers, but its host Secure Boot check at start failed (facts say why). */
  state: 'connected' | 'disconnected' | 'failed' | 'revoked';
  simulated: boolean;
  certFingerprint: string;
  facts: HostFacts | null;
  joinedAt: number;
  revokedAt: number | null;
}

interface HostRow {
  id: string;
  name: string;
  address: string;
  state: HostRecord['state'];
  cert_fingerprint: string;
  facts: string | null;
  simulated: boolean;
  joined_at: number;
  revoked_at: number | null;
}

const toHost = (r: HostRow): HostRecord => ({
  id: r.id,
  name: r.name,
  address: r.address,
  state: r.state,
  simulated: r.simulated,
  certFingerprint: r.cert_fingerprint,
  facts: r.facts === null || r.facts === '{}' ? null : fromJson<HostFacts>(r.facts),
  joinedAt: r.joined_at,
  revokedAt: r.revoked_at,
});

export interface ManagerIdentity {
  ca: CertifiedKey;
  /** The manager's client certificate for agents (CN hyperseal-manager). */
  client: CertifiedKey;
}

export class HostService {
  private readonly clients = new Map<string, AgentClient>();
  private readonly simulated = new Map<string, boolean>();

  constructor(
    private readonly db: Db,
    private readonly identity: ManagerIdentity,
    private readonly events: EventRecorder,
  ) {}

  get caFingerprint(): string {
    return certificateFingerprint256(this.identity.ca.certPem);
  }

  /** Connects to every enrolled, non-revoked host (at start). Unreachable hosts are marked disconnected. */
  async connectAll(): Promise<void> {
    const rows = await this.db.query<HostRow>(`SELECT * FROM hosts WHERE revoked_at IS NULL`);
    await Promise.all(rows.map((r) => this.connect(toHost(r))));
  }

  private async connect(h: HostRecord): Promise<void> {
    // Reuse the client for an unchanged address: two connects at once (the health loop and
    // an attach) must not close each other's connections mid-request.
    let client = this.clients.get(h.id);
    if (client === undefined || client.address !== h.address) {
      client?.close();
      client = new AgentClient({
        address: h.address,
        hostId: h.id,
        caPem: this.identity.ca.certPem,
        certPem: this.identity.client.certPem,
        keyPem: this.identity.client.keyPem,
      });
      this.clients.set(h.id, client);
    }
    this.simulated.set(h.id, h.simulated);
    try {
      const facts = await client.facts();
      this.simulated.set(h.id, facts.simulated);
      // An agent whose Secure Boot check failed answers facts only: the host is failed.
      const failed = facts.secureBoot?.enabled === true && facts.secureBoot.verification.result === 'failed';
      // The event first: a crash between the two repeats it on the next connect rather than
      // leaving a failed host whose failure was never reported, and whoever sees the state
      // 'failed' finds its event already there.
      if (failed && h.state !== 'failed') await this.recordVerificationFailure({ ...h, facts });
      await this.db.run(
        `UPDATE hosts SET facts = $1, simulated = $2, state = $3 WHERE id = $4 AND revoked_at IS NULL`,
        [toJson(facts), facts.simulated, failed ? 'failed' : 'connected', h.id],
      );
    } catch {
      await this.db.run(`UPDATE hosts SET state = 'disconnected' WHERE id = $1 AND revoked_at IS NULL`, [
        h.id,
      ]);
    }
  }

  async createEnrollmentToken(
    actor: Actor,
    ttlMs?: number,
  ): Promise<{ token: string; caSha256: string; expiresAt: number }> {
    const t = newEnrollmentToken(new Date(), ttlMs);
    await this.db.run(
      `INSERT INTO enrollment_tokens (token_hash, expires_at, used_at) VALUES ($1, $2, NULL)`,
      [t.record.tokenHash, t.record.expiresAt.getTime()],
    );
    await this.events.record(actor, {
      type: 'host.enrollment-token-created',
      object: { kind: 'host', id: '-', name: t.hint },
      changes: [],
    });
    return { token: t.token, caSha256: this.caFingerprint, expiresAt: t.record.expiresAt.getTime() };
  }

  /** The agent's one unauthenticated call: token in, signed certificate out. */
  async enroll(req: EnrollRequest, sourceIp: string): Promise<EnrollResponse> {
    const now = new Date();
    const tokenHash = hashToken(req.token);
    const refused = async (err: unknown): Promise<never> => {
      await this.events.record(
        { user: 'agent', sourceIp },
        {
          type: 'host.join-refused',
          object: { kind: 'host', id: '-', name: req.name },
          changes: [],
          result: 'failure',
          message: `a host named '${req.name}' at ${req.address} was refused: ${err instanceof Error ? err.message : String(err)}`,
        },
      );
      throw err;
    };
    try {
      const row = await this.db.one<{ token_hash: string; expires_at: number; used_at: number | null }>(
        `SELECT token_hash, expires_at, used_at FROM enrollment_tokens WHERE token_hash = $1`,
        [tokenHash],
      );
      verifyEnrollmentToken(
        req.token,
        row === undefined
          ? undefined
          : {
              tokenHash: row.token_hash as ReturnType<typeof hashToken>,
              createdAt: now,
              expiresAt: new Date(row.expires_at),
              usedAt: row.used_at === null ? null : new Date(row.used_at),
            },
        now,
      );
      // Input from an unauthenticated caller: a bad address or CSR is its mistake (400),
      // not the manager's (a TypeError or HS_ERR_PKI would answer 500).
      let address: URL;
      try {
        address = new URL(req.address);
      } catch {
        throw new HypersealError(
          'HS_ERR_INVALID_ARGUMENT',
          `agent address must be https://HOST:PORT, got ${req.address}`,
        );
      }
      if (address.protocol !== 'https:') {
        throw new HypersealError(
          'HS_ERR_INVALID_ARGUMENT',
          `agent address must be https://HOST:PORT, got ${req.address}`,
        );
      }
      const hostId = randomUUID();
      const host = address.hostname.replace(/^\[|\]$/g, '');
      const certPem = await signCsr(this.identity.ca, req.csrPem, {
        usage: 'server',
        commonName: hostId,
        ...(isIP(host) === 0 ? { dnsNames: [host] } : { ipAddresses: [host] }),
      }).catch((err: unknown) => {
        if (err instanceof HypersealError && err.code === 'HS_ERR_PKI') {
          throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `the agent's CSR was refused: ${err.message}`);
        }
        throw err;
      });
      const record: HostRecord = {
        id: hostId,
        name: req.name,
        address: req.address,
        state: 'disconnected',
        simulated: false,
        certFingerprint: certificateFingerprint256(certPem),
        facts: null,
        joinedAt: now.getTime(),
        revokedAt: null,
      };
      // Spending the token and adding the host are one transaction: a host that cannot be
      // added (its name is taken) leaves the token unused.
      await this.db.transaction(async (tx) => {
        // One-time use: only the request that flips used_at may proceed.
        const used = await tx.run(
          `UPDATE enrollment_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1`,
          [now.getTime(), tokenHash],
        );
        if (used.changes !== 1)
          throw new HypersealError('HS_ERR_AUTH_TOKEN_USED', 'enrollment token was already used');
        try {
          await tx.run(
            `INSERT INTO hosts (id, name, address, state, cert_fingerprint, facts, simulated, joined_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5, '{}', $6, $7, NULL)`,
            [
              record.id,
              record.name,
              record.address,
              record.state,
              record.certFingerprint,
              false,
              record.joinedAt,
            ],
          );
        } catch (err) {
          if (err instanceof HypersealError && err.code === 'HS_ERR_DB_CONFLICT') {
            throw new HypersealError('HS_ERR_CONFLICT', `a host named '${req.name}' already exists`);
          }
          throw err;
        }
      });
      await this.events.record(
        { user: 'agent', sourceIp },
        {
          type: 'host.joined',
          object: { kind: 'host', id: hostId, name: req.name },
          changes: [
            { path: 'address', from: null, to: req.address },
            { path: 'certFingerprint', from: null, to: record.certFingerprint },
          ],
        },
      );
      return { hostId, certPem, caPem: this.identity.ca.certPem };
    } catch (err) {
      return refused(err);
    }
  }

  /** After enrollment the agent starts serving; the manager connects and reads its facts. */
  async attach(hostId: string): Promise<HostRecord> {
    // Reconnecting must not undo a revocation (connect() would set state 'connected').
    await this.requireUsable(hostId);
    const h = await this.get(hostId);
    await this.connect(h);
    const after = await this.get(hostId);
    if (h.state !== 'connected' && after.state === 'connected' && h.facts !== null) {
      await this.events.record(
        { user: 'system', sourceIp: null },
        {
          type: 'host.reconnected',
          object: { kind: 'host', id: hostId, name: h.name },
          changes: [{ path: 'state', from: h.state, to: 'connected' }],
        },
      );
    }
    if (after.facts?.datastores) {
      for (const ds of after.facts.datastores) {
        await this.db.run(
          `INSERT INTO datastores (id, host_id, name, path, shared) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING`,
          [`${hostId}:${ds.name}`, hostId, ds.name, ds.path, false],
        );
      }
    }
    return after;
  }

  /**
   * Keeps host states true: every interval each non-revoked host is asked for its facts
   * and its VMs. A host that stops answering becomes `disconnected` (an event), one that
   * answers again `connected` (its datastores registered); VM states follow the host's.
   */
  startHealthLoop<T>(
    intervalMs: number,
    syncVmState: (
      hostId: string,
      states: Map<string, string>,
      runtimes: VmRuntime[],
      /** Read before the host was asked: state from before the listing (see VmCryptoService.sync). */
      before: T,
    ) => Promise<void>,
    /** What to read about a host's VMs before asking it for them. */
    beforeListing: (hostId: string) => Promise<T>,
  ): () => void {
    let running = false;
    const tick = async (): Promise<void> => {
      if (running) return;
      running = true;
      try {
        for (const h of await this.db.query<HostRow>(`SELECT * FROM hosts WHERE revoked_at IS NULL`)) {
          const before = toHost(h);
          const client = this.clients.get(before.id);
          let ok = false;
          try {
            if (client === undefined) throw new Error('no client');
            const seen = await beforeListing(before.id);
            const vms = await client.listVms();
            ok = true;
            await syncVmState(before.id, new Map(vms.map((v) => [v.id, v.state])), vms, seen);
          } catch {
            ok = false;
          }
          if (ok && before.state !== 'connected') await this.attach(before.id);
          if (!ok && client !== undefined && before.state !== 'failed') {
            // Does it answer facts? An agent that failed its Secure Boot check does, to say why.
            await this.connect(before);
            if ((await this.get(before.id)).state === 'failed') continue;
          }
          if (!ok && before.state === 'connected') {
            await this.db.run(
              `UPDATE hosts SET state = 'disconnected' WHERE id = $1 AND revoked_at IS NULL`,
              [before.id],
            );
            await this.events.record(
              { user: 'system', sourceIp: null },
              {
                type: 'host.disconnected',
                object: { kind: 'host', id: before.id, name: before.name },
                changes: [{ path: 'state', from: 'connected', to: 'disconnected' }],
              },
            );
          }
          if (!ok && client === undefined) await this.connect(before).catch(() => undefined);
        }
      } catch {
        // The database may be briefly unavailable; the next tick tries again.
      } finally {
        running = false;
      }
    };
    const timer = setInterval(() => void tick(), intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  private async recordVerificationFailure(h: HostRecord): Promise<void> {
    const v = h.facts?.secureBoot?.verification;
    await this.events.record(
      { user: 'system', sourceIp: null },
      {
        type: 'host.verification-failed',
        object: { kind: 'host', id: h.id, name: h.name },
        changes: [{ path: 'state', from: h.state, to: 'failed' }],
        result: 'failure',
        message: `host ${h.name} failed Secure Boot verification and refuses to serve: ${v?.subject ?? '?'}${v?.file !== undefined ? ` at ${v.file}` : ''}: ${v?.message ?? ''} [${v?.code ?? '?'}]`,
      },
    );
  }

  async list(): Promise<HostRecord[]> {
    return (await this.db.query<HostRow>(`SELECT * FROM hosts ORDER BY name`)).map(toHost);
  }

  async get(id: string): Promise<HostRecord> {
    const row = await this.db.one<HostRow>(`SELECT * FROM hosts WHERE id = $1`, [id]);
    if (row === undefined) throw new HypersealError('HS_ERR_NOT_FOUND', `no host ${id}`);
    return toHost(row);
  }

  async revoke(actor: Actor, id: string): Promise<HostRecord> {
    const h = await this.get(id);
    if (h.revokedAt !== null) return h;
    await this.db.run(`UPDATE hosts SET state = 'revoked', revoked_at = $1 WHERE id = $2`, [Date.now(), id]);
    this.clients.get(id)?.close();
    this.clients.delete(id);
    await this.events.record(actor, {
      type: 'host.revoked',
      object: { kind: 'host', id, name: h.name },
      changes: [{ path: 'state', from: h.state, to: 'revoked' }],
      severity: 'warning',
    });
    return this.get(id);
  }

  async defaultHostId(): Promise<string> {
    const row = await this.db.one<{ id: string }>(
      `SELECT id FROM hosts WHERE revoked_at IS NULL ORDER BY joined_at LIMIT 1`,
    );
    if (row === undefined)
      throw new HypersealError('HS_ERR_INVALID_ARGUMENT', 'no host has joined yet; give hostId');
    return row.id;
  }

  async requireUsable(id: string): Promise<void> {
    const h = await this.get(id);
    if (h.revokedAt !== null) throw new HypersealError('HS_ERR_CONFLICT', `host ${h.name} is revoked`);
  }

  isSimulated(id: string): boolean {
    return this.simulated.get(id) ?? false;
  }

  /** The mutual-TLS client of an enrolled, non-revoked host. */
  agent(id: string): AgentClient {
    const c = this.clients.get(id);
    if (c === undefined)
      throw new HypersealError('HS_ERR_HOST_UNAVAILABLE', `host ${id} is not connected (revoked or unknown)`);
    return c;
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
