/**
 * Key providers: named clusters of KMIP servers the manager takes KEKs from, stored in
 * the key_providers table (migration 3), and the KEK API the VM encryption code calls.
 *
 * What is stored: the servers (JSON), the CA bundle and the client certificate (PEM,
 * public), the client private key only sealed (credentials.ts), and, while a provider
 * waits for its certificate, the CSR. Nothing here ever returns the key or the sealed
 * blob; events carry certificate summaries, never PEM.
 *
 * Rules: exactly one provider is the default once any exists (the first one added
 * becomes it; the default cannot be removed while others exist). A provider named by a
 * VM's crypto state (vms.crypto JSON `providerId`) or by an encryption policy cannot be
 * removed. A provider added with a manager-generated key (`addWithCsr`) is
 * 'awaiting-certificate' and unusable until `setCertificate`.
 */
import { createHash, randomUUID } from 'node:crypto';
import { isIP } from 'node:net';
import { HypersealError } from '../errors.js';
import type { Actor, EventRecorder } from '../manager/events.js';
import type { KeyType } from '../pki/index.js';
import { createCsr } from '../pki/index.js';
import type { Db } from '../store/db.js';
import { fromJson, toJson } from '../store/db.js';
import type { KmipServerAddress, ServerTestResult } from './cluster.js';
import { KmipCluster, formatAddress } from './cluster.js';
import type { CertificateSummary } from './credentials.js';
import {
  checkCaBundle,
  checkClientCertificate,
  commonNameOf,
  parseCertificates,
  parsePrivateKey,
  sealClientKey,
  summarize,
  toPkcs8Pem,
  unsealClientKey,
} from './credentials.js';
import { QueryFunction } from '../kmip/enums.js';
import { Operation } from '../kmip/enums.js';
import { Tag } from '../kmip/tags.js';
import { ttlv } from '../kmip/ttlv.js';
import { decodeServerInformation } from '../kms/server-information.js';
import type { StoreBackupState } from '../kms/store.js';
import type { FetchedKeks, KekContext } from './kek.js';
import * as kek from './kek.js';

export type KeyProviderState = 'ready' | 'awaiting-certificate';

/** A key provider as the API shows it: no private key, no sealed blob. */
export interface KeyProvider {
  id: string;
  name: string;
  isDefault: boolean;
  state: KeyProviderState;
  servers: KmipServerAddress[];
  /** The CA bundle that verifies the servers' certificates. */
  caCertificates: CertificateSummary[];
  /** The manager's client certificate for this provider; null while awaiting it. */
  clientCertificate: CertificateSummary | null;
  /** The certificate's CN: the identity the key servers know the manager by. */
  identity: string | null;
  /** The CSR to have signed, while the state is 'awaiting-certificate'. */
  csrPem: string | null;
  createdAt: number;
  updatedAt: number;
}

export interface AddKeyProviderInput {
  name: string;
  servers: KmipServerAddress[];
  caPem: string;
  clientCertPem: string;
  clientKeyPem: string;
}

export interface AddKeyProviderCsrInput {
  name: string;
  servers: KmipServerAddress[];
  caPem: string;
  /** CN of the request: the identity the key manager will know us by (default hyperseal-manager). */
  commonName?: string;
  /** 'rsa' (default, RSA-2048: what every key manager takes) or 'ec' (P-256). */
  keyType?: KeyType;
}

export interface UpdateKeyProviderInput {
  servers?: KmipServerAddress[];
  caPem?: string;
}

export interface KeyProviderTestResult {
  providerId: string;
  name: string;
  /** True when every server answered. */
  ok: boolean;
  servers: ServerTestResult[];
}

export interface KeyProviderServiceOptions {
  /** Per-server TLS connect timeout (default 5000 ms): the delay a dead server adds. */
  connectTimeoutMs?: number;
  /** Per-answer timeout (default 15000 ms). */
  requestTimeoutMs?: number;
}

interface ProviderRow {
  id: string;
  name: string;
  is_default: boolean;
  servers: string;
  ca_pem: string;
  client_cert_pem: string | null;
  client_key_sealed: string;
  csr_pem: string | null;
  created_at: number;
  updated_at: number;
}

interface CachedCluster {
  fingerprint: string;
  ctx: KekContext;
}

export const MAX_SERVERS = 16;
const HOST_NAME =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;
const COMMON_NAME = /^[A-Za-z0-9._@-]{1,64}$/;
export const DEFAULT_CSR_COMMON_NAME = 'hyperseal-manager';

function invalid(message: string): HypersealError {
  return new HypersealError('HS_ERR_INVALID_ARGUMENT', message);
}

/** Validates and normalises a server list: 1–16 distinct host:port pairs. */
export function checkServers(servers: readonly KmipServerAddress[]): KmipServerAddress[] {
  if (!Array.isArray(servers) || servers.length === 0)
    throw invalid('a key provider needs at least one KMIP server');
  if (servers.length > MAX_SERVERS) throw invalid(`a key provider has at most ${MAX_SERVERS} KMIP servers`);
  const seen = new Set<string>();
  return servers.map((s) => {
    const host = typeof s.host === 'string' ? s.host.trim() : '';
    if (isIP(host) === 0 && !HOST_NAME.test(host))
      throw invalid(`'${host}' is not a host name or IP address`);
    if (!Number.isInteger(s.port) || s.port < 1 || s.port > 65535) {
      throw invalid(`port ${String(s.port)} of ${host} is not between 1 and 65535`);
    }
    const out = { host, port: s.port };
    const key = formatAddress(out).toLowerCase();
    if (seen.has(key)) throw invalid(`${formatAddress(out)} is listed twice`);
    seen.add(key);
    return out;
  });
}

function checkName(name: string): string {
  const n = typeof name === 'string' ? name.trim() : '';
  if (n.length === 0 || n.length > 80) throw invalid('a key provider name has 1 to 80 characters');
  // eslint-disable-next-line no-control-regex -- names go into event messages and syslog
  if (/[\u0000-\u001f\u007f]/.test(n)) throw invalid('a key provider name cannot contain control characters');
  return n;
}

const addresses = (servers: readonly KmipServerAddress[]): string[] => servers.map(formatAddress);

function certLabel(s: CertificateSummary | null): string | null {
  return s === null
    ? null
    : `${s.subject} (sha256 ${s.sha256.slice(0, 16)}…, until ${s.notAfter.slice(0, 10)})`;
}

export class KeyProviderService {
  private readonly clusters = new Map<string, CachedCluster>();
  private readonly sealingKey: Buffer;
  private closed = false;

  /**
   * @param sealingKey 32 bytes (deriveKeyProviderSealingKey of the manager's master key);
   *   the service keeps a copy and zeroizes it on close().
   */
  constructor(
    private readonly db: Db,
    private readonly events: EventRecorder,
    sealingKey: Buffer,
    private readonly opts: KeyProviderServiceOptions = {},
  ) {
    if (sealingKey.length !== 32)
      throw new HypersealError('HS_ERR_INTERNAL', 'the sealing key must be 32 bytes');
    this.sealingKey = Buffer.from(sealingKey);
  }

  // -- reading --------------------------------------------------------------------------

  private toProvider(r: ProviderRow): KeyProvider {
    const cert =
      r.client_cert_pem === null ? undefined : parseCertificates(r.client_cert_pem, 'client certificate')[0];
    return {
      id: r.id,
      name: r.name,
      isDefault: r.is_default,
      state: r.client_cert_pem === null ? 'awaiting-certificate' : 'ready',
      servers: fromJson<KmipServerAddress[]>(r.servers) ?? [],
      caCertificates: parseCertificates(r.ca_pem, 'CA bundle').map(summarize),
      clientCertificate: cert === undefined ? null : summarize(cert),
      identity: cert === undefined ? null : commonNameOf(cert),
      csrPem: r.client_cert_pem === null ? r.csr_pem : null,
      createdAt: Number(r.created_at),
      updatedAt: Number(r.updated_at),
    };
  }

  private async row(id: string, db: Db = this.db): Promise<ProviderRow> {
    const r = await db.one<ProviderRow>(`SELECT * FROM key_providers WHERE id = $1`, [id]);
    if (r === undefined) throw new HypersealError('HS_ERR_NOT_FOUND', `no key provider ${id}`);
    return r;
  }

  async list(): Promise<KeyProvider[]> {
    const rows = await this.db.query<ProviderRow>(`SELECT * FROM key_providers ORDER BY name`);
    return rows.map((r) => this.toProvider(r));
  }

  async get(id: string): Promise<KeyProvider> {
    return this.toProvider(await this.row(id));
  }

  /** The provider named `name`, or undefined. */
  async findByName(name: string): Promise<KeyProvider | undefined> {
    const r = await this.db.one<ProviderRow>(`SELECT * FROM key_providers WHERE name = $1`, [name]);
    return r === undefined ? undefined : this.toProvider(r);
  }

  /** The default provider's id; HS_ERR_NO_KEY_PROVIDER when there is none. */
  async defaultProviderId(): Promise<string> {
    const r = await this.db.one<{ id: string }>(`SELECT id FROM key_providers WHERE is_default LIMIT 1`);
    if (r === undefined) {
      throw new HypersealError(
        'HS_ERR_NO_KEY_PROVIDER',
        'no key provider is configured: add one with `hyperseal key-provider add` (or POST /api/v1/key-providers); ' +
          '`hyperseal up` registers its embedded key server as the default',
      );
    }
    return r.id;
  }

  // -- adding ---------------------------------------------------------------------------

  /** Adds a provider with an uploaded client certificate and key (checked to match). */
  async add(actor: Actor, input: AddKeyProviderInput): Promise<KeyProvider> {
    const name = checkName(input.name);
    const servers = checkServers(input.servers);
    checkCaBundle(input.caPem);
    const key = parsePrivateKey(input.clientKeyPem);
    checkClientCertificate(input.clientCertPem, key);
    return this.insert(actor, {
      name,
      servers,
      caPem: input.caPem,
      certPem: input.clientCertPem,
      keyPem: toPkcs8Pem(key),
      csrPem: null,
    });
  }

  /**
   * Adds a provider whose key pair the manager generates: the answer carries the CSR
   * (also in `csrPem` of get/list) for the key manager's CA to sign; setCertificate
   * completes it.
   */
  async addWithCsr(actor: Actor, input: AddKeyProviderCsrInput): Promise<KeyProvider> {
    const name = checkName(input.name);
    const servers = checkServers(input.servers);
    checkCaBundle(input.caPem);
    const commonName = input.commonName ?? DEFAULT_CSR_COMMON_NAME;
    if (!COMMON_NAME.test(commonName)) {
      throw invalid(
        `commonName '${commonName}' must be 1-64 characters of letters, digits, '.', '_', '@' or '-'`,
      );
    }
    const keyType = input.keyType ?? 'rsa';
    if (keyType !== 'rsa' && keyType !== 'ec') throw invalid(`keyType is 'rsa' or 'ec'`);
    const { csrPem, keyPem } = await createCsr({ commonName, keyType });
    return this.insert(actor, { name, servers, caPem: input.caPem, certPem: null, keyPem, csrPem });
  }

  private async insert(
    actor: Actor,
    p: {
      name: string;
      servers: KmipServerAddress[];
      caPem: string;
      certPem: string | null;
      keyPem: string;
      csrPem: string | null;
    },
  ): Promise<KeyProvider> {
    const id = randomUUID();
    const sealed = sealClientKey(this.sealingKey, id, p.keyPem);
    const now = Date.now();
    const write = (isDefault: boolean): Promise<unknown> =>
      this.db.run(
        `INSERT INTO key_providers (id, name, is_default, servers, ca_pem, client_cert_pem, client_key_sealed, csr_pem, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)`,
        [id, p.name, isDefault, toJson(p.servers), p.caPem, p.certPem, sealed, p.csrPem, now],
      );
    // The first provider becomes the default. Two added at once: the unique index on
    // is_default lets one win; the other is added as not default.
    const hasDefault =
      (await this.db.one(`SELECT id FROM key_providers WHERE is_default LIMIT 1`)) !== undefined;
    try {
      await write(!hasDefault);
    } catch (err) {
      if (!(err instanceof HypersealError) || err.code !== 'HS_ERR_DB_CONFLICT') throw err;
      if ((await this.db.one(`SELECT id FROM key_providers WHERE name = $1`, [p.name])) !== undefined) {
        throw new HypersealError('HS_ERR_CONFLICT', `a key provider named '${p.name}' already exists`);
      }
      if (hasDefault) throw err;
      await write(false);
    }
    const provider = await this.get(id);
    await this.events.record(actor, {
      type: 'kms.provider-added',
      object: { kind: 'kms-provider', id, name: p.name },
      changes: [
        { path: 'servers', from: null, to: addresses(p.servers) },
        { path: 'state', from: null, to: provider.state },
        { path: 'clientCertificate', from: null, to: certLabel(provider.clientCertificate) },
        { path: 'isDefault', from: null, to: provider.isDefault },
      ],
    });
    return provider;
  }

  // -- changing -------------------------------------------------------------------------

  /**
   * Installs the client certificate: completes a CSR-flow provider, or renews the
   * certificate of a ready one. It must be for the key the provider holds.
   */
  async setCertificate(actor: Actor, id: string, certPem: string): Promise<KeyProvider> {
    const before = await this.row(id);
    const keyPem = unsealClientKey(this.sealingKey, id, before.client_key_sealed);
    checkClientCertificate(certPem, parsePrivateKey(keyPem, 'stored client key'));
    const result = await this.db.run(
      `UPDATE key_providers SET client_cert_pem = $1, csr_pem = NULL, updated_at = $2 WHERE id = $3 AND updated_at = $4`,
      [certPem, Math.max(Date.now(), Number(before.updated_at) + 1), id, before.updated_at],
    );
    if (result.changes === 0) throw this.changedMeanwhile(before.name);
    this.forget(id);
    const old = this.toProvider(before);
    const after = await this.get(id);
    await this.events.record(actor, {
      type: 'kms.provider-certificate-set',
      object: { kind: 'kms-provider', id, name: after.name },
      changes: [
        {
          path: 'clientCertificate',
          from: certLabel(old.clientCertificate),
          to: certLabel(after.clientCertificate),
        },
        ...(old.state !== after.state ? [{ path: 'state', from: old.state, to: after.state }] : []),
      ],
    });
    return after;
  }

  /** Replaces the server list and/or the CA bundle. */
  async update(actor: Actor, id: string, input: UpdateKeyProviderInput): Promise<KeyProvider> {
    const before = await this.row(id);
    const servers = input.servers === undefined ? undefined : checkServers(input.servers);
    if (input.caPem !== undefined) checkCaBundle(input.caPem);
    if (servers === undefined && input.caPem === undefined)
      throw invalid('nothing to change: give servers or caPem');
    const result = await this.db.run(
      `UPDATE key_providers SET servers = $1, ca_pem = $2, updated_at = $3 WHERE id = $4 AND updated_at = $5`,
      [
        servers === undefined ? before.servers : toJson(servers),
        input.caPem ?? before.ca_pem,
        Math.max(Date.now(), Number(before.updated_at) + 1),
        id,
        before.updated_at,
      ],
    );
    if (result.changes === 0) throw this.changedMeanwhile(before.name);
    this.forget(id);
    const old = this.toProvider(before);
    const after = await this.get(id);
    const changes = [];
    if (servers !== undefined && toJson(addresses(old.servers)) !== toJson(addresses(after.servers))) {
      changes.push({ path: 'servers', from: addresses(old.servers), to: addresses(after.servers) });
    }
    if (input.caPem !== undefined && before.ca_pem !== input.caPem) {
      changes.push({
        path: 'caCertificates',
        from: old.caCertificates.map((c) => c.subject),
        to: after.caCertificates.map((c) => c.subject),
      });
    }
    if (changes.length > 0) {
      await this.events.record(actor, {
        type: 'kms.provider-changed',
        object: { kind: 'kms-provider', id, name: after.name },
        changes,
      });
    }
    return after;
  }

  /** Makes `id` the default provider (the one VMs get keys from unless told otherwise). */
  async setDefault(actor: Actor, id: string): Promise<KeyProvider> {
    const previous = await this.db.transaction(async (tx) => {
      const target = await this.row(id, tx);
      if (target.is_default) return undefined;
      const old = await tx.one<{ id: string; name: string }>(
        `SELECT id, name FROM key_providers WHERE is_default LIMIT 1`,
      );
      // Clear first: the unique index allows one default row at any moment.
      await tx.run(`UPDATE key_providers SET is_default = FALSE WHERE is_default`);
      await tx.run(`UPDATE key_providers SET is_default = TRUE, updated_at = $1 WHERE id = $2`, [
        Math.max(Date.now(), Number(target.updated_at) + 1),
        id,
      ]);
      return { name: old?.name ?? null };
    });
    const after = await this.get(id);
    if (previous !== undefined) {
      await this.events.record(actor, {
        type: 'kms.provider-default-changed',
        object: { kind: 'kms-provider', id, name: after.name },
        changes: [{ path: 'defaultProvider', from: previous.name, to: after.name }],
      });
    }
    return after;
  }

  /**
   * Removes a provider. Refused (HS_ERR_CONFLICT) while a VM's crypto state or an
   * encryption policy names it, and for the default while other providers exist. Keys
   * on the key manager are left alone.
   */
  async remove(actor: Actor, id: string): Promise<void> {
    const removed = await this.db.transaction(async (tx) => {
      const r = await this.row(id, tx);
      const vms = (
        await tx.query<{ name: string; crypto: string }>(
          `SELECT name, crypto FROM vms WHERE crypto IS NOT NULL AND crypto LIKE $1 ORDER BY name`,
          [`%${id}%`],
        )
      ).filter((v) => {
        const c = fromJson<{ providerId?: unknown }>(v.crypto);
        return c !== null && typeof c === 'object' && c.providerId === id;
      });
      if (vms.length > 0) {
        const shown = vms.slice(0, 5).map((v) => v.name);
        throw new HypersealError(
          'HS_ERR_CONFLICT',
          `key provider '${r.name}' holds the keys of ${vms.length} VM${vms.length === 1 ? '' : 's'} ` +
            `(${shown.join(', ')}${vms.length > shown.length ? ', …' : ''}): rekey them to another provider or decrypt them first`,
          { vms: vms.length },
        );
      }
      const policies = await tx.query<{ name: string }>(
        `SELECT name FROM encryption_policies WHERE provider_id = $1 ORDER BY name`,
        [id],
      );
      if (policies.length > 0) {
        throw new HypersealError(
          'HS_ERR_CONFLICT',
          `key provider '${r.name}' is named by encryption polic${policies.length === 1 ? 'y' : 'ies'} ` +
            `${policies.map((p) => `'${p.name}'`).join(', ')}: change them first`,
        );
      }
      if (r.is_default) {
        const others = await tx.query<{ name: string }>(
          `SELECT name FROM key_providers WHERE id <> $1 ORDER BY name`,
          [id],
        );
        if (others.length > 0) {
          throw new HypersealError(
            'HS_ERR_CONFLICT',
            `key provider '${r.name}' is the default: make another one the default first ` +
              `(${others.map((o) => `'${o.name}'`).join(', ')})`,
          );
        }
      }
      await tx.run(`DELETE FROM key_providers WHERE id = $1`, [id]);
      return this.toProvider(r);
    });
    this.forget(id);
    await this.events.record(actor, {
      type: 'kms.provider-removed',
      object: { kind: 'kms-provider', id, name: removed.name },
      changes: [
        { path: 'servers', from: addresses(removed.servers), to: null },
        { path: 'clientCertificate', from: certLabel(removed.clientCertificate), to: null },
        ...(removed.isDefault ? [{ path: 'isDefault', from: true, to: null }] : []),
      ],
    });
  }

  private changedMeanwhile(name: string): HypersealError {
    return new HypersealError(
      'HS_ERR_CONFLICT',
      `key provider '${name}' changed meanwhile: read it again and retry`,
    );
  }

  // -- testing --------------------------------------------------------------------------

  /**
   * Connects to every server of the provider (a fresh TLS connection each) and asks
   * Discover Versions and Query; reports each server's answer or failure and latency.
   */
  async test(actor: Actor, id: string): Promise<KeyProviderTestResult> {
    const { ctx, name } = await this.clusterFor(id);
    const servers = await ctx.cluster.test();
    const ok = servers.every((s) => s.ok);
    const answered = servers.filter((s) => s.ok).length;
    const detail = servers
      .map((s) =>
        s.ok
          ? `${s.address} ok (${Math.round(s.latencyMs)} ms)`
          : `${s.address} ${s.error?.code ?? 'failed'}`,
      )
      .join('; ');
    await this.events.record(actor, {
      type: 'kms.provider-tested',
      object: { kind: 'kms-provider', id, name },
      changes: [],
      result: ok ? 'success' : 'failure',
      ...(answered === 0 ? { severity: 'error' as const } : {}),
      message: `${actor.user} tested key provider ${name}: ${answered} of ${servers.length} servers answered (${detail})`,
    });
    return { providerId: id, name, ok, servers };
  }

  // -- KEKs -----------------------------------------------------------------------------

  /**
   * The provider's cluster, kept (with its persistent connections) while its servers and
   * credentials stay the same; rebuilt when the row changed, also by another manager.
   */
  private async clusterFor(
    providerId: string | undefined,
  ): Promise<{ id: string; name: string; ctx: KekContext }> {
    if (this.closed) throw new HypersealError('HS_ERR_INTERNAL', 'the key provider service is closed');
    const id = providerId ?? (await this.defaultProviderId());
    const r = await this.row(id);
    if (r.client_cert_pem === null) {
      throw new HypersealError(
        'HS_ERR_KEY_PROVIDER_NOT_READY',
        `key provider '${r.name}' awaits its client certificate: have its CSR signed by the key manager's CA ` +
          `and install it (hyperseal key-provider set-cert ${r.name} --cert FILE)`,
        { provider: r.name },
      );
    }
    const fingerprint = createHash('sha256')
      .update([r.servers, r.ca_pem, r.client_cert_pem, r.client_key_sealed].join('\0'))
      .digest('hex');
    const cached = this.clusters.get(id);
    if (cached !== undefined && cached.fingerprint === fingerprint)
      return { id, name: r.name, ctx: cached.ctx };
    // No await from here to the set: two callers cannot both build one.
    const cert = parseCertificates(r.client_cert_pem, 'client certificate')[0];
    const cluster = new KmipCluster({
      name: r.name,
      servers: fromJson<KmipServerAddress[]>(r.servers) ?? [],
      caPem: r.ca_pem,
      clientCertPem: r.client_cert_pem,
      clientKeyPem: unsealClientKey(this.sealingKey, id, r.client_key_sealed),
      ...(this.opts.connectTimeoutMs !== undefined ? { connectTimeoutMs: this.opts.connectTimeoutMs } : {}),
      ...(this.opts.requestTimeoutMs !== undefined ? { requestTimeoutMs: this.opts.requestTimeoutMs } : {}),
    });
    cached?.ctx.cluster.retire();
    const ctx: KekContext = { cluster, identity: cert === undefined ? null : commonNameOf(cert) };
    this.clusters.set(id, { fingerprint, ctx });
    return { id, name: r.name, ctx };
  }

  private forget(id: string): void {
    this.clusters.get(id)?.ctx.cluster.retire();
    this.clusters.delete(id);
  }

  /**
   * Creates and activates an AES-256 KEK (usage Wrap/Unwrap/Encrypt/Decrypt) on the given
   * provider, or on the default one. The manager stores only the returned ids.
   */
  async createKek(
    providerId?: string,
    opts: { name?: string } = {},
  ): Promise<{ providerId: string; keyId: string }> {
    const { id, ctx } = await this.clusterFor(providerId);
    return { providerId: id, keyId: await kek.createKek(ctx, opts) };
  }

  /** The KEK's 32 bytes. The caller owns the buffer and must zeroize it when done. */
  async fetchKek(providerId: string, keyId: string): Promise<Buffer> {
    const { ctx } = await this.clusterFor(providerId);
    return kek.fetchKek(ctx, keyId);
  }

  /**
   * Several KEKs of one provider in batched messages. Per-key failures (destroyed key,
   * refusal) are in `errors`; the call itself fails only when the provider is unusable.
   * The caller owns and must zeroize every buffer in `keys`.
   */
  async fetchKeks(providerId: string, keyIds: readonly string[]): Promise<FetchedKeks> {
    const { ctx } = await this.clusterFor(providerId);
    return kek.fetchKeks(ctx, keyIds);
  }

  /** Crypto-shredding: Revoke (Cessation of Operation), then Destroy, on the key manager. */
  async destroyKek(providerId: string, keyId: string): Promise<void> {
    const { ctx } = await this.clusterFor(providerId);
    await kek.destroyKek(ctx, keyId);
  }

  /**
   * What the provider says about its backups (Hyperseal's Query extension, see
   * src/kms/server-information.ts): undefined `backup` for key managers that do not say.
   */
  async backupState(providerId?: string): Promise<{
    providerId: string;
    name: string;
    vendor: string | null;
    backup: StoreBackupState | undefined;
  }> {
    const { id, name, ctx } = await this.clusterFor(providerId);
    const out = await ctx.cluster.run('Query', (s) =>
      s.call(Operation.Query, [ttlv.enum(Tag.QueryFunction, QueryFunction.QueryServerInformation)]),
    );
    const vendor = out.find((i) => i.tag === Tag.VendorIdentification && i.type === 'TextString');
    return {
      providerId: id,
      name,
      vendor: vendor?.type === 'TextString' ? vendor.value : null,
      backup: decodeServerInformation(out),
    };
  }

  /** KMIP request messages sent to a provider's servers so far (tests, diagnostics). */
  requestsSent(providerId: string): number {
    return this.clusters.get(providerId)?.ctx.cluster.requestsSent ?? 0;
  }

  /** Closes every connection and zeroizes the sealing key. */
  close(): void {
    this.closed = true;
    for (const c of this.clusters.values()) c.ctx.cluster.close();
    this.clusters.clear();
    this.sealingKey.fill(0);
  }
}
