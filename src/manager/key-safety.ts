/**
 * Key safety: does the default key provider's key server have a backup of every key?
 *
 * The manager asks the provider with KMIP Query (Server Information), which Hyperseal's
 * key server answers with its backup state (src/kms/server-information.ts) — over the
 * network, with the credentials the manager already has, so it works for a key server on
 * another machine and for replicas on PostgreSQL alike. Other key managers do not answer
 * it; for them the state is `unknown` and nothing is required (their backups are their
 * administrator's business).
 *
 * - `missing`: the key server holds keys of encrypted VMs and no backup, or keys newer
 *   than its last backup: a warning (API, CLI listings) and a `kms.backup-missing` event
 *   once per change of state (`kms.backup-current` when it is over).
 * - Encrypting the first VM with a never-backed-up key server needs `acceptNoBackup`.
 */
import { HypersealError } from '../errors.js';
import type { KeyProviderService } from '../keys/index.js';
import type { StoreBackupState } from '../kms/store.js';
import type { Db } from '../store/db.js';
import type { Actor, EventRecorder } from './events.js';

export type BackupHealth = 'ok' | 'missing' | 'never-backed-up' | 'unknown' | 'no-provider';

export interface KeySafetyStatus {
  providerId: string | null;
  providerName: string | null;
  /** True when the provider reports a backup state (a Hyperseal key server). */
  embedded: boolean;
  health: BackupHealth;
  lastBackupAt: number | null;
  /** Creation time of the newest key in the last backup. */
  lastBackupNewestObjectAt: number | null;
  newestObjectAt: number | null;
  /** VMs encrypted with a KEK of this provider. */
  encryptedVms: number;
  /** A sentence to show, when there is something to do. */
  warning: string | null;
}

/** Listings ask often; the key server is asked at most this often for them. */
const CACHE_MS = 2_000;
const SYSTEM: Actor = { user: 'system', sourceIp: null };

export const BACKUP_HOW_TO =
  'back up the key server: hyperseal kms backup --data-dir DIR --out FILE (see docs/key-safety.md)';

export class KeySafetyService {
  private cache: { at: number; status: KeySafetyStatus } | undefined;
  private lastHealth: BackupHealth | undefined;

  constructor(
    private readonly db: Db,
    private readonly keys: KeyProviderService,
    private readonly events: EventRecorder,
  ) {}

  private async encryptedVms(providerId: string): Promise<number> {
    const row = await this.db.one<{ n: number | bigint }>(
      `SELECT count(*) AS n FROM vms WHERE crypto LIKE $1`,
      [`%"providerId":"${providerId}"%`],
    );
    return Number(row?.n ?? 0);
  }

  /** The default provider's backup state (cached a few seconds; `fresh` asks again). */
  async status(fresh = false): Promise<KeySafetyStatus> {
    if (!fresh && this.cache !== undefined && Date.now() - this.cache.at < CACHE_MS) return this.cache.status;
    const status = await this.compute(undefined);
    this.cache = { at: Date.now(), status };
    return status;
  }

  /** The state of one provider (GET /key-providers/:id). */
  async statusOf(providerId: string): Promise<KeySafetyStatus> {
    return this.compute(providerId);
  }

  private async compute(providerId: string | undefined): Promise<KeySafetyStatus> {
    let id: string;
    try {
      id = providerId ?? (await this.keys.defaultProviderId());
    } catch {
      return {
        providerId: null,
        providerName: null,
        embedded: false,
        health: 'no-provider',
        lastBackupAt: null,
        lastBackupNewestObjectAt: null,
        newestObjectAt: null,
        encryptedVms: 0,
        warning: null,
      };
    }
    const provider = await this.keys.get(id);
    const encryptedVms = await this.encryptedVms(id);
    let backup: StoreBackupState | undefined;
    try {
      backup = (await this.keys.backupState(id)).backup;
    } catch {
      backup = undefined; // unreachable or not ready: another warning's business
    }
    const base = {
      providerId: id,
      providerName: provider.name,
      embedded: backup !== undefined,
      lastBackupAt: backup?.lastBackup?.at ?? null,
      lastBackupNewestObjectAt: backup?.lastBackup?.newestObjectAt ?? null,
      newestObjectAt: backup?.newestObjectAt ?? null,
      encryptedVms,
    };
    if (backup === undefined) return { ...base, health: 'unknown', warning: null };
    const covered =
      backup.lastBackup !== null &&
      (backup.newestObjectAt === null || (backup.lastBackup.newestObjectAt ?? -1) >= backup.newestObjectAt);
    if (covered) return { ...base, health: 'ok', warning: null };
    const health: BackupHealth = backup.lastBackup === null ? 'never-backed-up' : 'missing';
    const warning =
      encryptedVms === 0
        ? null
        : backup.lastBackup === null
          ? `key provider '${provider.name}' holds the keys of ${encryptedVms} encrypted VM(s) and has never been backed up: ${BACKUP_HOW_TO}`
          : `key provider '${provider.name}' holds keys newer than its last backup (${new Date(backup.lastBackup.at).toISOString()}): ${BACKUP_HOW_TO}`;
    return { ...base, health, warning };
  }

  /** Warnings for listings: empty when all is well. */
  async warnings(): Promise<string[]> {
    const s = await this.status();
    return s.warning === null ? [] : [s.warning];
  }

  /**
   * Before encrypting a VM with a provider (undefined: the default): refuses the first
   * encrypted VM on a never-backed-up Hyperseal key server unless the caller accepts it.
   */
  async checkBeforeEncrypt(providerId: string | null | undefined, acceptNoBackup: boolean): Promise<void> {
    if (acceptNoBackup) return;
    const s = await this.compute(providerId ?? undefined);
    if (s.health === 'never-backed-up' && s.encryptedVms === 0) {
      throw new HypersealError(
        'HS_ERR_KMS_NOT_BACKED_UP',
        `key provider '${s.providerName ?? '?'}' (an embedded key server) has never been backed up: losing it would ` +
          `lose every VM encrypted with its keys. First ${BACKUP_HOW_TO}; or confirm with --accept-no-backup ` +
          `(API: "acceptNoBackup": true)`,
        { provider: s.providerName ?? '' },
      );
    }
  }

  private async lastRecorded(providerId: string | null): Promise<BackupHealth | undefined> {
    const row = await this.db.one<{ type: string }>(
      `SELECT type FROM events WHERE type IN ('kms.backup-missing', 'kms.backup-current') AND object_id = $1
       ORDER BY seq DESC LIMIT 1`,
      [providerId ?? ''],
    );
    return row === undefined ? undefined : row.type === 'kms.backup-missing' ? 'missing' : 'ok';
  }

  /** Health loop: one event per change of the warning state (remembered across restarts by the events). */
  async watch(): Promise<void> {
    const s = await this.status(true);
    const bad = s.warning !== null;
    const health: BackupHealth = bad ? 'missing' : 'ok';
    if (s.health === 'unknown' || s.health === 'no-provider') return;
    // After a restart, the last event recorded says what the state was.
    const previous = this.lastHealth ?? (await this.lastRecorded(s.providerId));
    this.lastHealth = health;
    if (previous === health || (previous === undefined && !bad)) return;
    await this.events.record(SYSTEM, {
      type: bad ? 'kms.backup-missing' : 'kms.backup-current',
      object: { kind: 'kms-provider', id: s.providerId ?? '', name: s.providerName ?? '' },
      changes: [{ path: 'backup', from: previous ?? null, to: health }],
      result: 'success',
      ...(bad ? { severity: 'warning' as const } : {}),
      message: s.warning ?? `every key of key provider '${s.providerName ?? ''}' is in a backup`,
    });
  }
}
