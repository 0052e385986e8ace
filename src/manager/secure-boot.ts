/**
 * Secure Boot in the manager: VM key sets (managed objects: certificates and hashes only,
 * never private keys) and hosts' Secure Boot state and bundles (kept by each agent; the
 * manager relays and records events). docs/secure-boot.md describes both.
 */
import { randomUUID } from 'node:crypto';
import type { BundleUpload, HostSecureBootReport, InstalledBundle } from '../agent/api.js';
import { HypersealError } from '../errors.js';
import { certificateFingerprint256 } from '../pki/index.js';
import type { CustomKeySet } from '../secureboot/keyset.js';
import { validateKeySet } from '../secureboot/keyset.js';
import type { Db } from '../store/db.js';
import { fromJson, toJson } from '../store/db.js';
import type { Actor, EventRecorder } from './events.js';
import type { HostService } from './hosts.js';

interface KeySetRow {
  id: string;
  name: string;
  key_set: string;
  created_at: number;
  updated_at: number;
}

/** A key set as the API shows it: its keys, plus fingerprints to compare with tools. */
export interface KeySetView {
  id: string;
  name: string;
  keySet: CustomKeySet;
  summary: { pk: string; kek: string[]; db: string[]; dbx: string[] };
  usedBy: number;
  createdAt: number;
  updatedAt: number;
}

const fingerprint = (e: CustomKeySet['db'][number]): string =>
  e.type === 'x509' ? `x509 sha256:${certificateFingerprint256(e.certPem)}` : `hash ${e.sha256}`;

/** The key set from an API body: `{name, pk, kek, db, dbx}` of a custom set. */
export function parseCustomKeySet(body: unknown): CustomKeySet {
  const ks = validateKeySet({ ...(body as object), kind: 'custom' });
  if (ks.kind !== 'custom') throw new HypersealError('HS_ERR_SECUREBOOT_INVALID_KEYSET', 'a custom key set');
  return ks;
}

export class SecureBootService {
  constructor(
    private readonly db: Db,
    private readonly hosts: HostService,
    private readonly events: EventRecorder,
  ) {}

  private async view(r: KeySetRow): Promise<KeySetView> {
    const keySet = fromJson<CustomKeySet>(r.key_set) as CustomKeySet;
    return {
      id: r.id,
      name: r.name,
      keySet,
      summary: {
        pk: fingerprint(keySet.pk),
        kek: keySet.kek.map(fingerprint),
        db: keySet.db.map(fingerprint),
        dbx: keySet.dbx.map(fingerprint),
      },
      usedBy: (await this.vmsUsing(r.id)).length,
      createdAt: Number(r.created_at),
      updatedAt: Number(r.updated_at),
    };
  }

  private async vmsUsing(id: string): Promise<string[]> {
    const rows = await this.db.query<{ name: string; config: string }>(`SELECT name, config FROM vms`);
    return rows
      .filter(
        (r) => (fromJson<{ secureBootKeySet?: string | null }>(r.config)?.secureBootKeySet ?? null) === id,
      )
      .map((r) => r.name);
  }

  async listKeySets(): Promise<KeySetView[]> {
    const rows = await this.db.query<KeySetRow>(`SELECT * FROM secureboot_key_sets ORDER BY name`);
    return Promise.all(rows.map((r) => this.view(r)));
  }

  /** By id or name. */
  async getKeySet(idOrName: string): Promise<KeySetView> {
    const row = await this.db.one<KeySetRow>(`SELECT * FROM secureboot_key_sets WHERE id = $1 OR name = $1`, [
      idOrName,
    ]);
    if (row === undefined) throw new HypersealError('HS_ERR_NOT_FOUND', `no Secure Boot key set ${idOrName}`);
    return this.view(row);
  }

  async createKeySet(actor: Actor, body: unknown): Promise<KeySetView> {
    const keySet = parseCustomKeySet(body);
    const id = randomUUID();
    const now = Date.now();
    try {
      await this.db.run(
        `INSERT INTO secureboot_key_sets (id, name, key_set, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)`,
        [id, keySet.name, toJson(keySet), now, now],
      );
    } catch (err) {
      if (err instanceof HypersealError && err.code === 'HS_ERR_DB_CONFLICT') {
        throw new HypersealError('HS_ERR_CONFLICT', `a key set named '${keySet.name}' already exists`);
      }
      throw err;
    }
    const view = await this.getKeySet(id);
    await this.events.record(actor, {
      type: 'secureboot.key-set-created',
      object: { kind: 'secureboot-key-set', id, name: keySet.name },
      changes: this.events.diff({}, view.summary),
    });
    return view;
  }

  /** New keys for an existing set (same name): VMs using it get a new store at their next power-on. */
  async replaceKeySet(actor: Actor, idOrName: string, body: unknown): Promise<KeySetView> {
    const before = await this.getKeySet(idOrName);
    const keySet = parseCustomKeySet({ ...(body as object), name: before.name });
    await this.db.run(`UPDATE secureboot_key_sets SET key_set = $1, updated_at = $2 WHERE id = $3`, [
      toJson(keySet),
      Date.now(),
      before.id,
    ]);
    const after = await this.getKeySet(before.id);
    await this.events.record(actor, {
      type: 'secureboot.key-set-changed',
      object: { kind: 'secureboot-key-set', id: before.id, name: before.name },
      changes: this.events.diff(before.summary, after.summary),
    });
    return after;
  }

  async removeKeySet(actor: Actor, idOrName: string): Promise<void> {
    const ks = await this.getKeySet(idOrName);
    const users = await this.vmsUsing(ks.id);
    if (users.length > 0) {
      throw new HypersealError(
        'HS_ERR_CONFLICT',
        `key set ${ks.name} is used by ${users.length} VM(s): ${users.slice(0, 10).join(', ')}`,
      );
    }
    await this.db.run(`DELETE FROM secureboot_key_sets WHERE id = $1`, [ks.id]);
    await this.events.record(actor, {
      type: 'secureboot.key-set-removed',
      object: { kind: 'secureboot-key-set', id: ks.id, name: ks.name },
      changes: this.events.diff(ks.summary, {}),
    });
  }

  /* ---------------------------------------------------------------- hosts */

  /**
   * A host's Secure Boot state: asked of its agent (which answers even when its check at
   * start failed); when the agent cannot be reached, the last report from its facts.
   */
  async hostStatus(hostId: string): Promise<HostSecureBootStatus> {
    const host = await this.hosts.get(hostId);
    let report: HostSecureBootReport | null = host.facts?.secureBoot ?? null;
    let live = false;
    try {
      report = await this.hosts.agent(hostId).secureBootStatus();
      live = true;
    } catch {
      // unreachable: keep the last known report
    }
    return {
      hostId,
      hostName: host.name,
      hostState: host.state,
      uefiSecureBoot: host.facts?.uefiSecureBoot ?? 'unknown',
      live,
      report,
    };
  }

  async listBundles(hostId: string): Promise<InstalledBundle[]> {
    await this.hosts.requireUsable(hostId);
    return this.hosts.agent(hostId).listBundles();
  }

  async installBundle(actor: Actor, hostId: string, upload: BundleUpload): Promise<InstalledBundle> {
    await this.hosts.requireUsable(hostId);
    const host = await this.hosts.get(hostId);
    try {
      const b = await this.hosts.agent(hostId).installBundle(upload);
      await this.events.record(actor, {
        type: 'host.bundle-installed',
        object: { kind: 'host', id: hostId, name: host.name },
        changes: [
          {
            path: `bundles[${b.name}]`,
            from: null,
            to: { version: b.version, vendor: b.vendor, acceptance: b.acceptance, verified: b.verified },
          },
        ],
      });
      return b;
    } catch (err) {
      await this.events.record(actor, {
        type: 'host.bundle-installed',
        object: { kind: 'host', id: hostId, name: host.name },
        changes: [],
        result: 'failure',
        message: `${actor.user} failed to install a bundle on host ${host.name}: ${err instanceof Error ? err.message : String(err)}`,
      });
      throw err;
    }
  }

  async removeBundle(actor: Actor, hostId: string, name: string): Promise<void> {
    await this.hosts.requireUsable(hostId);
    const host = await this.hosts.get(hostId);
    await this.hosts.agent(hostId).removeBundle(name);
    await this.events.record(actor, {
      type: 'host.bundle-removed',
      object: { kind: 'host', id: hostId, name: host.name },
      changes: [{ path: `bundles[${name}]`, from: name, to: null }],
    });
  }
}

export interface HostSecureBootStatus {
  hostId: string;
  hostName: string;
  hostState: string;
  /** The machine's own UEFI Secure Boot (facts). */
  uefiSecureBoot: string;
  /** The report came from the agent just now (false: the last one its facts held). */
  live: boolean;
  report: HostSecureBootReport | null;
}
