/**
 * VM inventory and lifecycle. The manager owns each VM's configuration (the `vms` row);
 * the host agent runs it. Changes are optimistic-concurrency guarded (`version`), and
 * each one is recorded as an event with the exact fields that changed, from → to.
 * Hardware changes made while a VM runs are kept and applied at its next power-on
 * (`pendingRestart`), the way vSphere queues a reconfiguration that needs a restart.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { MigrationOutgoingResponse, VmSpec } from '../agent/api.js';
import { HypersealError } from '../errors.js';
import { trace } from '../trace.js';
import type { Db } from '../store/db.js';
import { fromJson, toJson } from '../store/db.js';
import type { EventType } from '../events/index.js';
import type { EventRecorder, Actor } from './events.js';
import type { HostService } from './hosts.js';
import type { Vm, VmConfig, VmEncryption, VmPatch } from './model.js';
import type { Task, TaskEngine } from './tasks.js';
import type { KeySet } from '../secureboot/keyset.js';

interface VmRow {
  id: string;
  name: string;
  host_id: string;
  state: string;
  config: string;
  version: number;
  created_at: number;
  updated_at: number;
  crypto: string | null;
  locked_reason: string | null;
}

/** How the manager names a KEK to agents: opaque to them, parsed back here. */
export function kekRefOf(e: { providerId: string; keyId: string }): string {
  return `${e.providerId}/${e.keyId}`;
}

export function parseKekRef(ref: string): { providerId: string; keyId: string } | undefined {
  const i = ref.indexOf('/');
  return i <= 0 || i === ref.length - 1
    ? undefined
    : { providerId: ref.slice(0, i), keyId: ref.slice(i + 1) };
}

// NICs too: the running VM stays on its old network until the next power-on applies the
// spec (nothing hot-plugs), which is exactly what pendingRestart must say.
const HARDWARE: readonly (keyof VmConfig)[] = [
  'cpus',
  'memoryMiB',
  'firmware',
  'secureBoot',
  'secureBootKeySet',
  'vtpm',
  'disks',
  'nics',
];

export type VmAction = 'power-on' | 'power-off' | 'shutdown' | 'reset';

const ACTION_EVENT: Record<VmAction, { type: EventType; state: string }> = {
  'power-on': { type: 'vm.powered-on', state: 'running' },
  'power-off': { type: 'vm.powered-off', state: 'stopped' },
  shutdown: { type: 'vm.shut-down', state: 'stopped' },
  reset: { type: 'vm.reset', state: 'running' },
};

function randomMac(): string {
  // Locally administered unicast (x2:…), QEMU's own 52:54:00 prefix.
  const b = randomBytes(3);
  return `52:54:00:${[...b].map((x) => x.toString(16).padStart(2, '0')).join(':')}`;
}

export class VmService {
  /** VMs whose hardware changed while running; cleared at power-on. In memory: a restart re-derives it conservatively. */
  private readonly pending = new Set<string>();
  /**
   * Delivers an encrypted VM's KEK to its host before the host must use it (define with
   * new disks, power-on). Set by VmCryptoService; plain VMs never call it.
   */
  ensureKey: (vm: Vm) => Promise<void> = async () => undefined;
  /** Delivers an encrypted VM's KEK to another host (a migration's destination). Set by VmCryptoService. */
  ensureKeyOn: (vm: Vm, hostId: string) => Promise<void> = async () => {
    throw new HypersealError('HS_ERR_INTERNAL', 'no key delivery for migrations');
  };

  constructor(
    private readonly db: Db,
    private readonly hosts: HostService,
    private readonly events: EventRecorder,
    private readonly tasks: TaskEngine,
  ) {}

  private toVm(r: VmRow): Vm {
    return {
      id: r.id,
      name: r.name,
      hostId: r.host_id,
      state: r.state,
      simulated: this.hosts.isSimulated(r.host_id),
      pendingRestart: this.pending.has(r.id),
      encryption: r.crypto === null ? null : (fromJson<VmEncryption>(r.crypto) as VmEncryption),
      locked: r.locked_reason !== null,
      lockedReason: r.locked_reason,
      config: fromJson<VmConfig>(r.config) as VmConfig,
      version: r.version,
      createdAt: r.created_at,
      updatedAt: r.updated_at,
    };
  }

  /**
   * Re-derives `pendingRestart` after a manager restart (the set is in memory only). A VM
   * that runs and whose configuration changed after its last successful power-on began
   * (or that has no such power-on on record) may be running an older spec: it is marked
   * pending. Conservative: a change that needed no restart (a tag) counts as well.
   */
  async recoverPending(): Promise<void> {
    const rows = await this.db.query<{ id: string; updated_at: number; started: number | string | null }>(
      `SELECT v.id, v.updated_at,
              (SELECT max(t.started_at) FROM tasks t
                WHERE t.object_id = v.id AND t.kind = 'vm.power-on' AND t.state = 'succeeded') AS started
         FROM vms v WHERE v.state <> 'stopped'`,
    );
    for (const r of rows) {
      if (r.started === null || Number(r.updated_at) >= Number(r.started)) this.pending.add(r.id);
    }
  }

  async list(opts: {
    limit: number;
    offset: number;
    name?: string;
    hostId?: string;
    tag?: string;
    /** A case-insensitive substring of the name. */
    search?: string;
  }): Promise<Vm[]> {
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (opts.name !== undefined) {
      params.push(opts.name);
      where.push(`name = $${params.length}`);
    }
    if (opts.hostId !== undefined) {
      params.push(opts.hostId);
      where.push(`host_id = $${params.length}`);
    }
    if (opts.tag !== undefined) {
      // Tags live in the config JSON: each database's own JSON operator, exact match.
      params.push(opts.tag);
      where.push(
        this.db.dialect === 'postgres'
          ? `(config::jsonb -> 'tags') @> to_jsonb($${params.length}::text)`
          : `EXISTS (SELECT 1 FROM json_each(vms.config, '$.tags') WHERE json_each.value = $${params.length})`,
      );
    }
    if (opts.search !== undefined) {
      // LIKE with its wildcards escaped: the text is matched as typed, `%` and `_` included.
      params.push(`%${opts.search.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)}%`);
      where.push(`LOWER(name) LIKE $${params.length} ESCAPE '\\'`);
    }
    params.push(opts.limit, opts.offset);
    const rows = await this.db.query<VmRow>(
      `SELECT * FROM vms ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY name LIMIT $${params.length - 1} OFFSET $${params.length}`,
      params,
    );
    return rows.map((r) => this.toVm(r));
  }

  async get(id: string): Promise<Vm> {
    const row = await this.db.one<VmRow>(`SELECT * FROM vms WHERE id = $1`, [id]);
    if (row === undefined) throw new HypersealError('HS_ERR_NOT_FOUND', `no VM ${id}`);
    return this.toVm(row);
  }

  private async validate(config: VmConfig, hostId: string): Promise<void> {
    if (config.secureBoot && config.firmware !== 'efi') {
      throw new HypersealError(
        'HS_ERR_INVALID_ARGUMENT',
        'Secure Boot needs firmware efi; this VM uses bios',
      );
    }
    if (config.vtpm === true && config.firmware !== 'efi') {
      throw new HypersealError('HS_ERR_INVALID_ARGUMENT', 'a vTPM needs firmware efi; this VM uses bios');
    }
    if (config.secureBootKeySet !== undefined && config.secureBootKeySet !== null) {
      const ks = await this.db.one(`SELECT id FROM secureboot_key_sets WHERE id = $1`, [
        config.secureBootKeySet,
      ]);
      if (ks === undefined) {
        throw new HypersealError(
          'HS_ERR_INVALID_ARGUMENT',
          `no Secure Boot key set ${config.secureBootKeySet}`,
        );
      }
    }
    const ids = (xs: { id: string }[]): void => {
      const seen = new Set<string>();
      for (const x of xs) {
        if (seen.has(x.id))
          throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `duplicate device id '${x.id}'`);
        seen.add(x.id);
      }
    };
    ids(config.disks);
    ids(config.nics);
    for (const nic of config.nics) {
      const known = await this.db.one(`SELECT id FROM networks WHERE name = $1`, [nic.network]);
      if (known === undefined)
        throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `no network named '${nic.network}'`);
    }
    for (const disk of config.disks) {
      const ds = await this.db.one<{ host_id: string | null }>(
        `SELECT host_id FROM datastores WHERE id = $1`,
        [disk.datastoreId],
      );
      if (ds === undefined)
        throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `no datastore ${disk.datastoreId}`);
      if (ds.host_id !== null && ds.host_id !== hostId) {
        throw new HypersealError(
          'HS_ERR_INVALID_ARGUMENT',
          `datastore ${disk.datastoreId} is not on host ${hostId}`,
        );
      }
    }
  }

  async create(
    actor: Actor,
    input: Omit<Partial<VmConfig>, 'nics'> & {
      name: string;
      hostId?: string;
      nics?: { id: string; network: string; mac?: string }[];
    },
    /** Creates it encrypted: the KEK exists on its provider and was pushed to the host. */
    encryption?: VmEncryption,
  ): Promise<Vm> {
    const hostId = input.hostId ?? (await this.hosts.defaultHostId());
    await this.hosts.requireUsable(hostId);
    const config: VmConfig = {
      cpus: input.cpus ?? 1,
      memoryMiB: input.memoryMiB ?? 128,
      firmware: input.firmware ?? 'efi',
      secureBoot: input.secureBoot ?? false,
      ...(input.secureBootKeySet !== undefined && input.secureBootKeySet !== null
        ? { secureBootKeySet: input.secureBootKeySet }
        : {}),
      ...(input.vtpm === true ? { vtpm: true } : {}),
      disks: input.disks ?? [],
      nics: (input.nics ?? []).map((n) => ({ ...n, mac: n.mac ?? randomMac() })),
      tags: [...new Set(input.tags ?? [])].sort(),
      ...(input.folder !== undefined ? { folder: input.folder } : {}),
      // Encrypted VMs always migrate encrypted; say so in their setting from the start.
      ...(input.migrationEncryption !== undefined || encryption
        ? { migrationEncryption: input.migrationEncryption ?? 'required' }
        : {}),
    };
    await this.validate(config, hostId);
    const vm = await this.insertRecord(input.name, hostId, config, encryption);
    // Tell the host now, so disks exist before the first power-on; roll back if it refuses.
    try {
      await this.hosts.agent(hostId).defineVm(await this.spec(vm));
    } catch (err) {
      await this.db.run(`DELETE FROM vms WHERE id = $1`, [vm.id]);
      throw err;
    }
    await this.events.record(actor, {
      type: 'vm.created',
      object: { kind: 'vm', id: vm.id, name: vm.name },
      changes: this.events.diff(
        {},
        {
          name: vm.name,
          hostId,
          ...config,
          ...(encryption ? { encryption: encryption.policyId, keyId: encryption.keyId } : {}),
        },
      ),
    });
    return vm;
  }

  /** Adds the inventory row of a new stopped VM (its host is told by the caller). */
  async insertRecord(name: string, hostId: string, config: VmConfig, encryption?: VmEncryption): Promise<Vm> {
    const now = Date.now();
    const row: VmRow = {
      id: randomUUID(),
      name,
      host_id: hostId,
      state: 'stopped',
      config: toJson(config),
      version: 1,
      created_at: now,
      updated_at: now,
      crypto: encryption ? toJson(encryption) : null,
      locked_reason: null,
    };
    try {
      await this.db.run(
        `INSERT INTO vms (id, name, host_id, state, config, version, created_at, updated_at, crypto) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
        [
          row.id,
          row.name,
          row.host_id,
          row.state,
          row.config,
          row.version,
          row.created_at,
          row.updated_at,
          row.crypto,
        ],
      );
    } catch (err) {
      if (err instanceof HypersealError && err.code === 'HS_ERR_DB_CONFLICT') {
        throw new HypersealError('HS_ERR_CONFLICT', `a VM named '${name}' already exists`);
      }
      throw err;
    }
    return this.toVm(row);
  }

  /** Removes the row of a VM that never reached its host (a failed clone). */
  async deleteRecord(id: string): Promise<void> {
    await this.db.run(`DELETE FROM vms WHERE id = $1`, [id]);
  }

  /** Records a VM's encryption (null: plain) and clears its lock; bumps the version. */
  async setEncryption(id: string, encryption: VmEncryption | null): Promise<void> {
    await this.db.run(
      `UPDATE vms SET crypto = $1, locked_reason = NULL, version = version + 1 WHERE id = $2`,
      [encryption ? toJson(encryption) : null, id],
    );
  }

  /**
   * The same, only if the VM's row is still at `version` (compare-and-set): false when any
   * manager changed the VM since that version was read.
   */
  async setEncryptionIfVersion(
    id: string,
    encryption: VmEncryption | null,
    version: number,
  ): Promise<boolean> {
    const r = await this.db.run(
      `UPDATE vms SET crypto = $1, locked_reason = NULL, version = version + 1 WHERE id = $2 AND version = $3`,
      [encryption ? toJson(encryption) : null, id, version],
    );
    return r.changes === 1;
  }

  /** Each VM of a host with its row version (read before asking the host, see VmCryptoService.sync). */
  async versionsOn(hostId: string): Promise<Map<string, number>> {
    const rows = await this.db.query<{ id: string; version: number }>(
      `SELECT id, version FROM vms WHERE host_id = $1`,
      [hostId],
    );
    return new Map(rows.map((r) => [r.id, Number(r.version)]));
  }

  /** A host's name for messages (its id when it is gone). */
  private hostName(id: string): Promise<string> {
    return this.hosts.get(id).then(
      (h) => h.name,
      () => id,
    );
  }

  /** Where a disk from another host's local datastore goes on `hostId`: the same name when it has one. */
  private localDatastoreFor(hostId: string, name: string): Promise<{ id: string; path: string } | undefined> {
    return this.db.one<{ id: string; path: string }>(
      `SELECT id, path FROM datastores WHERE host_id = $1 ORDER BY (name = $2) DESC, id LIMIT 1`,
      [hostId, name],
    );
  }

  /**
   * From the health loop: a VM that `hostId` reports while its row names another host
   * is one whose migration completed without the manager recording it (the manager was
   * killed, or lost the answer). It is moved to `hostId` — with disks that were on the old
   * host's local datastores on the new host's, as the migration put them — when, and only
   * when, nothing is under way on it (no unfinished task, by any manager; no operation on
   * the host) and its recorded host answers and no longer has it. Anything else is left
   * for the next tick or for an operator: a VM is never moved away from a host that has it.
   */
  async adoptReported(
    hostId: string,
    runtimes: readonly { id: string; state: string; operation?: unknown; unresolvedMigration?: string }[],
  ): Promise<void> {
    for (const rt of runtimes) {
      if (rt.operation !== undefined) continue;
      const row = await this.db.one<VmRow>(`SELECT * FROM vms WHERE id = $1`, [rt.id]);
      if (row === undefined) continue;
      if (row.host_id === hostId) {
        if (rt.unresolvedMigration !== undefined && !(await this.taskUnderWay(rt.id))) {
          await this.resumeIfNowhereElse(hostId, rt.id, rt.unresolvedMigration);
        }
        continue;
      }
      if (await this.taskUnderWay(rt.id)) continue;
      if (rt.unresolvedMigration !== undefined) {
        // Held here for a migration recorded as done elsewhere (this host's answer was
        // lost): when the host it is recorded on kept it, this copy ends.
        await this.endHeldCopy({
          heldOn: hostId,
          keptOn: row.host_id,
          vmId: rt.id,
          migrationId: rt.unresolvedMigration,
        });
        continue;
      }
      const gone = await this.hosts
        .agent(row.host_id)
        .getVm(rt.id)
        .then(
          // The source holds it for a migration whose answer the manager never gave:
          // when this host kept it, the source's copy ends.
          (there) =>
            there.unresolvedMigration !== undefined &&
            this.endHeldCopy({
              heldOn: row.host_id,
              keptOn: hostId,
              vmId: rt.id,
              migrationId: there.unresolvedMigration,
            }),
          (err: unknown) =>
            err instanceof HypersealError && err.code === 'HS_ERR_NOT_FOUND' ? true : undefined,
        )
        .catch(() => undefined);
      if (gone !== true) continue;
      const vm = this.toVm(row);
      const disks = [];
      for (const d of vm.config.disks) {
        const ds = await this.db.one<{ host_id: string | null; name: string }>(
          `SELECT host_id, name FROM datastores WHERE id = $1`,
          [d.datastoreId],
        );
        const target =
          ds?.host_id === row.host_id ? await this.localDatastoreFor(hostId, ds.name) : undefined;
        disks.push(target ? { ...d, datastoreId: target.id } : d);
      }
      const moved = await this.db.run(
        `UPDATE vms SET host_id = $1, state = $2, config = $3, version = version + 1
         WHERE id = $4 AND host_id = $5 AND version = $6`,
        [hostId, rt.state, toJson({ ...vm.config, disks }), rt.id, row.host_id, row.version],
      );
      if (moved.changes !== 1) continue;
      const [fromName, toName] = await Promise.all([this.hostName(row.host_id), this.hostName(hostId)]);
      await this.events.record(
        { user: 'system', sourceIp: null },
        {
          type: 'vm.relocated',
          object: { kind: 'vm', id: vm.id, name: vm.name },
          changes: [{ path: 'hostId', from: row.host_id, to: hostId }],
          message: `system found VM ${vm.name} on host ${toName}, no longer on ${fromName} (a migration finished that the manager had not recorded) and recorded it there`,
        },
      );
    }
  }

  /**
   * Ends the copy of a VM that host `heldOn` holds for `migrationId` when host `keptOn`
   * says it kept the VM; true once that copy is gone. Anything else decides nothing.
   */
  private async endHeldCopy(o: {
    heldOn: string;
    keptOn: string;
    vmId: string;
    migrationId: string;
  }): Promise<boolean> {
    const { heldOn, keptOn, vmId, migrationId } = o;
    const settled = await this.hosts
      .agent(keptOn)
      .migrationSettle(vmId, { migrationId })
      .catch(() => undefined);
    if (settled?.outcome !== 'committed') return false;
    const ended = await this.hosts.agent(heldOn).migrationResolve(vmId, { migrationId, moved: true });
    trace('manager', 'ended the held copy of a VM another host kept', { vmId, heldOn, keptOn });
    return ended.outcome === 'gone';
  }

  private async taskUnderWay(vmId: string): Promise<boolean> {
    const busy = await this.db.one<{ id: string }>(
      `SELECT id FROM tasks WHERE object_kind = 'vm' AND object_id = $1 AND state IN ('queued', 'running') LIMIT 1`,
      [vmId],
    );
    return busy !== undefined;
  }

  /**
   * A VM its recorded host holds paused for a migration nobody settled (the manager died
   * in between): when no other host kept it, it resumes there.
   */
  private async resumeIfNowhereElse(hostId: string, vmId: string, migrationId: string): Promise<void> {
    for (const h of await this.hosts.list()) {
      if (h.id === hostId || h.revokedAt !== null) continue;
      const settled = await this.hosts
        .agent(h.id)
        .migrationSettle(vmId, { migrationId })
        .catch(() => undefined);
      // Kept elsewhere (that host's pass moves the record), or a host that cannot answer
      // now: nothing is decided this time.
      if (settled?.outcome !== 'absent' && settled?.outcome !== 'aborted') return;
    }
    await this.hosts.agent(hostId).migrationResolve(vmId, { migrationId, moved: false });
    trace('manager', 'resumed a VM held for an unsettled migration', { vmId, migrationId });
  }

  async setLockedReason(id: string, reason: string | null): Promise<void> {
    await this.db.run(`UPDATE vms SET locked_reason = $1 WHERE id = $2`, [reason, id]);
  }

  /** A fresh locally administered MAC (clones get new ones). */
  newMac(): string {
    return randomMac();
  }

  /** The agent's view of a VM: datastore ids resolved to paths on its host. */
  async spec(vm: Vm): Promise<VmSpec> {
    const disks = [];
    for (const d of vm.config.disks) {
      const ds = await this.db.one<{ path: string }>(`SELECT path FROM datastores WHERE id = $1`, [
        d.datastoreId,
      ]);
      if (ds === undefined) throw new HypersealError('HS_ERR_NOT_FOUND', `no datastore ${d.datastoreId}`);
      disks.push({ id: d.id, sizeMiB: d.sizeMiB, datastorePath: ds.path });
    }
    return {
      id: vm.id,
      name: vm.name,
      cpus: vm.config.cpus,
      memoryMiB: vm.config.memoryMiB,
      firmware: vm.config.firmware,
      secureBoot: vm.config.secureBoot,
      disks,
      nics: vm.config.nics.map((n) => ({ id: n.id, mac: n.mac ?? randomMac(), network: n.network })),
      encryption: vm.encryption ? { kekRef: kekRefOf(vm.encryption) } : null,
      ...(await this.secureBootSpec(vm.config)),
    };
  }

  /** The key set's certificates (never private keys) for a Secure Boot VM, and the vTPM switch. */
  private async secureBootSpec(config: VmConfig): Promise<Pick<VmSpec, 'secureBootKeySet' | 'vtpm'>> {
    let keySet: KeySet | undefined;
    if (config.secureBoot && config.secureBootKeySet !== undefined && config.secureBootKeySet !== null) {
      const row = await this.db.one<{ key_set: string }>(
        `SELECT key_set FROM secureboot_key_sets WHERE id = $1`,
        [config.secureBootKeySet],
      );
      if (row === undefined) {
        throw new HypersealError('HS_ERR_NOT_FOUND', `no Secure Boot key set ${config.secureBootKeySet}`);
      }
      keySet = fromJson<KeySet>(row.key_set) as KeySet;
    }
    return {
      ...(keySet ? { secureBootKeySet: keySet } : {}),
      ...(config.vtpm === true ? { vtpm: true } : {}),
    };
  }

  async reconfigure(actor: Actor, id: string, patch: VmPatch): Promise<Vm> {
    const before = await this.get(id);
    // Checked before anything is written: a VM on a revoked host is not ours to change.
    await this.hosts.requireUsable(before.hostId);
    const { name, folder, ...configPatch } = patch;
    const { folder: oldFolder, ...beforeConfig } = before.config;
    // A folder is an inventory label: null moves the VM out of any folder, absent keeps it.
    const nextFolder = folder === undefined ? oldFolder : (folder ?? undefined);
    const config: VmConfig = {
      ...beforeConfig,
      ...configPatch,
      ...(nextFolder !== undefined ? { folder: nextFolder } : {}),
      nics: (configPatch.nics ?? before.config.nics).map((n) => ({
        ...n,
        mac: n.mac ?? before.config.nics.find((o) => o.id === n.id)?.mac ?? randomMac(),
      })),
      tags: [...new Set(configPatch.tags ?? before.config.tags)].sort(),
    };
    await this.validate(config, before.hostId);
    const newName = name ?? before.name;
    const changes = this.events.diff({ name: before.name, ...before.config }, { name: newName, ...config });
    if (changes.length === 0) return before;
    const r = await this.db
      .run(
        `UPDATE vms SET name = $1, config = $2, version = version + 1, updated_at = $3 WHERE id = $4 AND version = $5`,
        [newName, toJson(config), Date.now(), id, before.version],
      )
      .catch((err: unknown) => {
        if (err instanceof HypersealError && err.code === 'HS_ERR_DB_CONFLICT') {
          throw new HypersealError('HS_ERR_CONFLICT', `a VM named '${newName}' already exists`);
        }
        throw err;
      });
    if (r.changes === 0) {
      throw new HypersealError(
        'HS_ERR_CONFLICT',
        `VM ${before.name} was changed concurrently; read it again and retry`,
      );
    }
    const after = await this.get(id);
    const hardware = changes.some((c) =>
      HARDWARE.some((h) => c.path === h || c.path.startsWith(`${h}.`) || c.path.startsWith(`${h}[`)),
    );
    if (before.state === 'stopped') {
      try {
        // A new disk of an encrypted VM gets a DEK wrapped by the VM's KEK: the host needs it.
        if (after.encryption) await this.ensureKey(after);
        await this.hosts.agent(before.hostId).defineVm(await this.spec(after));
      } catch (err) {
        // The host refused or is unreachable: put the row back, so the inventory never
        // holds a change that was neither applied nor recorded as an event.
        await this.db.run(
          `UPDATE vms SET name = $1, config = $2, version = $3, updated_at = $4 WHERE id = $5 AND version = $6`,
          [before.name, toJson(before.config), before.version, before.updatedAt, id, after.version],
        );
        throw err;
      }
    } else if (hardware) this.pending.add(id);
    await this.events.record(actor, {
      type: 'vm.reconfigured',
      object: { kind: 'vm', id, name: after.name },
      changes,
    });
    if (before.config.secureBoot !== config.secureBoot) {
      await this.events.record(actor, {
        type: config.secureBoot ? 'vm.secure-boot-enabled' : 'vm.secure-boot-disabled',
        object: { kind: 'vm', id, name: after.name },
        changes: [{ path: 'secureBoot', from: before.config.secureBoot, to: config.secureBoot }],
      });
    }
    return { ...after, pendingRestart: this.pending.has(id) };
  }

  async remove(actor: Actor, id: string): Promise<void> {
    const vm = await this.get(id);
    if (vm.state !== 'stopped' && vm.state !== 'crashed') {
      throw new HypersealError(
        'HS_ERR_CONFLICT',
        `VM ${vm.name} is ${vm.state}; power it off before deleting it`,
      );
    }
    await this.hosts.agent(vm.hostId).deleteVm(id);
    await this.db.run(`DELETE FROM vms WHERE id = $1`, [id]);
    this.pending.delete(id);
    await this.events.record(actor, {
      type: 'vm.deleted',
      object: { kind: 'vm', id, name: vm.name },
      changes: this.events.diff({ name: vm.name, hostId: vm.hostId, ...vm.config }, {}),
    });
  }

  /** Runs a power action as a task; the event is recorded when the host confirms. */
  async action(actor: Actor, id: string, action: VmAction): Promise<Task> {
    const vm = await this.get(id);
    // Refused up front (409), not as a failed task: the manager does not act on a revoked host.
    await this.hosts.requireUsable(vm.hostId);
    return this.tasks.submit(
      { kind: `vm.${action}`, objectKind: 'vm', objectId: id, user: actor.user },
      async (ctx) => {
        const agent = this.hosts.agent(vm.hostId);
        ctx.progress(10);
        if (action === 'power-on') {
          // Apply configuration changes made while it ran.
          const current = await this.get(id);
          if (current.state === 'running')
            throw new HypersealError('HS_ERR_CONFLICT', `VM ${vm.name} is already running`);
          if (current.encryption) await this.ensureKey(current);
          await agent.defineVm(await this.spec(current));
          this.pending.delete(id);
        }
        ctx.progress(30);
        const runtime =
          action === 'power-on'
            ? await agent.powerOn(id)
            : action === 'power-off'
              ? await agent.powerOff(id)
              : action === 'shutdown'
                ? await agent.shutdown(id)
                : await agent.reset(id);
        const from = vm.state;
        await this.setState(id, runtime.state);
        await this.events.record(actor, {
          type: ACTION_EVENT[action].type,
          object: { kind: 'vm', id, name: vm.name },
          changes: from === runtime.state ? [] : [{ path: 'state', from, to: runtime.state }],
        });
        return { state: runtime.state };
      },
    );
  }

  /**
   * Migrates a VM to `hostId` (docs/encrypted-migration.md): live when it runs, cold when
   * it is stopped (its NVRAM file through the same channel). Refused up front
   * (nothing sent) when the hosts cannot honour the VM's migrationEncryption; otherwise a
   * task: KEK to the destination (encrypted VMs), the source's record to the destination,
   * which starts QEMU waiting; then the source streams through the channel. The key,
   * nonce and id are made here for this migration, go to the two agents only and are
   * zeroized when it ends. On failure the source keeps running and the event says why.
   */
  async migrate(actor: Actor, id: string, hostId: string): Promise<Task> {
    const vm = await this.get(id);
    const object = { kind: 'vm' as const, id, name: vm.name };
    // Messages name hosts as operators do (the changes keep the ids).
    const [fromName, toName] = await Promise.all([this.hostName(vm.hostId), this.hostName(hostId)]);
    const refuse = async (err: HypersealError): Promise<never> => {
      await this.events.record(actor, {
        type: 'vm.migrated',
        object,
        changes: [{ path: 'hostId', from: vm.hostId, to: hostId }],
        result: 'failure',
        message: `migration of VM ${vm.name} to host ${toName} refused: ${err.message}`,
      });
      throw err;
    };
    if (hostId === vm.hostId) {
      throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `VM ${vm.name} is already on host ${toName}`);
    }
    await this.hosts.requireUsable(vm.hostId);
    await this.hosts.requireUsable(hostId);
    // Running: live migration. Stopped: cold (its NVRAM goes through the same channel).
    const cold = vm.state === 'stopped';
    if (!cold && vm.state !== 'running' && vm.state !== 'paused') {
      return refuse(
        new HypersealError(
          'HS_ERR_MIGRATION_UNSUPPORTED',
          `VM ${vm.name} is ${vm.state}: only a running or stopped VM migrates`,
        ),
      );
    }
    // Disks on a shared datastore stay in place; disks on the VM's host's local datastore
    // are copied to a local datastore of the destination (the same name when it has one):
    // a running VM's live, through the encrypted disk tunnel; a stopped VM's images through
    // the migration channel with its other files.
    const moved = new Map<string, { id: string; path: string }>();
    for (const d of vm.config.disks) {
      const ds = await this.db.one<{ host_id: string | null; name: string }>(
        `SELECT host_id, name FROM datastores WHERE id = $1`,
        [d.datastoreId],
      );
      if (ds === undefined) throw new HypersealError('HS_ERR_NOT_FOUND', `no datastore ${d.datastoreId}`);
      if (ds.host_id === null) continue;
      if (ds.host_id !== vm.hostId) {
        return refuse(
          new HypersealError(
            'HS_ERR_MIGRATION_UNSUPPORTED',
            `disk ${d.id} of VM ${vm.name} is on a datastore of another host (${ds.host_id})`,
          ),
        );
      }
      const target = await this.localDatastoreFor(hostId, ds.name);
      if (target === undefined) {
        return refuse(
          new HypersealError(
            'HS_ERR_MIGRATION_UNSUPPORTED',
            `disk ${d.id} of VM ${vm.name} is on a local datastore and host ${hostId} has none to copy it to`,
          ),
        );
      }
      moved.set(d.id, target);
    }
    const copyDisks = moved.size > 0;
    const mode = vm.encryption ? 'required' : (vm.config.migrationEncryption ?? 'opportunistic');
    const [srcFacts, dstFacts] = await Promise.all([
      this.hosts.agent(vm.hostId).facts(),
      this.hosts.agent(hostId).facts(),
    ]);
    for (const [facts, which] of [
      [srcFacts, vm.hostId],
      [dstFacts, hostId],
    ] as const) {
      if (facts.migration?.live !== true) {
        return refuse(
          new HypersealError(
            'HS_ERR_MIGRATION_UNSUPPORTED',
            `the agent of host ${which} cannot live-migrate`,
          ),
        );
      }
    }
    const bothEncrypt = srcFacts.migration?.encrypted === true && dstFacts.migration?.encrypted === true;
    if (mode === 'required' && !bothEncrypt) {
      const which = srcFacts.migration?.encrypted === true ? hostId : vm.hostId;
      return refuse(
        new HypersealError(
          'HS_ERR_MIGRATION_ENCRYPTION_UNAVAILABLE',
          `VM ${vm.name} must migrate encrypted (${vm.encryption ? 'it is an encrypted VM' : 'migrationEncryption is required'}) and the agent of host ${which} cannot encrypt migrations`,
        ),
      );
    }
    const cipher = mode !== 'disabled' && bothEncrypt ? 'aes-256-gcm' : 'none';
    const destination = new URL(await this.hosts.get(hostId).then((h) => h.address));
    return this.tasks.submit(
      { kind: cold ? 'vm.migrate-cold' : 'vm.migrate', objectKind: 'vm', objectId: id, user: actor.user },
      async (ctx) => {
        const src = this.hosts.agent(vm.hostId);
        const dst = this.hosts.agent(hostId);
        const migrationId = randomUUID();
        const key = cipher === 'none' ? undefined : randomBytes(32);
        const nonce = cipher === 'none' ? undefined : randomBytes(8);
        const migration = {
          id: migrationId,
          cipher,
          ...(key && nonce ? { key: key.toString('base64'), nonce: nonce.toString('base64') } : {}),
        } as const;
        const changes = [
          { path: 'hostId', from: vm.hostId, to: hostId },
          { path: 'encrypted', from: null, to: cipher !== 'none' },
        ];
        let poll: NodeJS.Timeout | undefined;
        try {
          ctx.progress(2);
          const current = await this.get(id);
          if (current.encryption) await this.ensureKeyOn(current, hostId);
          const record = await src.migrationRecord(id);
          const base = await this.spec(current);
          // The destination's paths for copied disks.
          const spec = {
            ...base,
            disks: base.disks.map((d) => {
              const to = moved.get(d.id);
              return to ? { ...d, datastorePath: to.path } : d;
            }),
          };
          ctx.progress(5);
          const listener = await dst.migrationIncoming(id, {
            spec,
            record,
            migration,
            ...(cold ? { cold } : {}),
            ...(copyDisks ? { copyDisks } : {}),
          });
          if (copyDisks && !cold && !listener.nbd) {
            throw new HypersealError('HS_ERR_MIGRATION_FAILED', `host ${hostId} did not open a disk tunnel`);
          }
          const peerOf = (l: { host: string; port: number }): { host: string; port: number } => ({
            host:
              l.host === '0.0.0.0' || l.host === '::' ? destination.hostname.replace(/^\[|\]$/g, '') : l.host,
            port: l.port,
          });
          // The destination's address as the manager knows it, unless it listens on a specific one.
          const peerHost =
            listener.host === '0.0.0.0' || listener.host === '::'
              ? destination.hostname.replace(/^\[|\]$/g, '')
              : listener.host;
          poll = setInterval(() => {
            void src
              .getVm(id)
              .then((rt) => {
                if (rt.operation?.kind !== 'migrate') return;
                ctx.progress(5 + Math.floor(rt.operation.progress * 0.9));
                const { bytes, bytesPerSecond, remainingBytes } = rt.operation;
                ctx.detail?.({ migrationId, cipher, bytes, bytesPerSecond, remainingBytes });
              })
              .catch(() => undefined);
          }, 1000);
          let result: MigrationOutgoingResponse | undefined;
          let outgoingError: unknown;
          try {
            result = await src.migrationOutgoing(id, {
              migration,
              peer: { host: peerHost, port: listener.port },
              ...(cold ? { cold } : {}),
              ...(cold && copyDisks ? { copyDisks: [...moved.keys()] } : {}),
              ...(listener.nbd ? { nbdPeer: peerOf(listener.nbd) } : {}),
            });
          } catch (err) {
            // Whatever the source says (or if its answer is lost), only the destination
            // knows whether it has the VM: asked below.
            outgoingError = err;
          }
          clearInterval(poll);
          poll = undefined;
          // The destination's answer decides: an acknowledged stream runs there (or failed
          // to start); one never acknowledged is dropped. Until then the source holds the VM
          // paused, so it never runs on both hosts.
          const { outcome } = await dst.migrationSettle(id, { migrationId }).catch((err: unknown) => {
            // Unknown which host has it: the source keeps it held (paused) until the
            // destination answers the health loop.
            throw new HypersealError(
              'HS_ERR_MIGRATION_UNCONFIRMED',
              `host ${toName} did not answer whether it kept VM ${vm.name} (${err instanceof Error ? err.message : String(err)}); the VM is held paused on ${fromName} until it does`,
            );
          });
          if (outcome !== 'committed') {
            // Resumed at the source; one that cannot be reached now is resumed by the
            // health loop once it can.
            await src.migrationResolve(id, { migrationId, moved: false }).catch((err: unknown) => {
              trace('manager', 'resuming the source copy failed; left to the health loop', {
                vmId: id,
                error: String(err),
              });
            });
            if (outgoingError !== undefined && !isUnconfirmed(outgoingError)) throw outgoingError;
            throw new HypersealError(
              'HS_ERR_MIGRATION_FAILED',
              outgoingError instanceof Error
                ? `the destination never acknowledged the stream and did not keep VM ${vm.name}; it runs on ${fromName} again (${outgoingError.message})`
                : `the destination did not keep VM ${vm.name} after the whole stream arrived; it runs on ${fromName} again`,
            );
          }
          if (outgoingError !== undefined) {
            trace('manager', 'the source failed but the destination kept the VM', {
              vmId: id,
              error: String(outgoingError),
            });
          }
          const want = cold ? 'stopped' : 'running';
          const rt = await dst.getVm(id);
          if (rt.state !== want) {
            trace('manager', 'migrated VM in an unexpected state', { vmId: id, state: rt.state, want });
          }
          // The destination keeps it: the source's copy ends. An agent that cannot be
          // reached now ends it later (the health loop resolves held VMs).
          await src.migrationResolve(id, { migrationId, moved: true }).catch((err: unknown) => {
            trace('manager', 'ending the source copy failed; left to the health loop', {
              vmId: id,
              error: String(err),
            });
          });
          await this.db.run(`UPDATE vms SET host_id = $1, state = $2, version = version + 1 WHERE id = $3`, [
            hostId,
            rt.state === 'paused' ? 'paused' : want,
            id,
          ]);
          if (copyDisks) {
            // The copied disks now live on the destination's datastores.
            const now = await this.get(id);
            await this.db.run(`UPDATE vms SET config = $1 WHERE id = $2`, [
              toJson({
                ...now.config,
                disks: now.config.disks.map((d) => {
                  const to = moved.get(d.id);
                  return to ? { ...d, datastoreId: to.id } : d;
                }),
              }),
              id,
            ]);
          }
          // The source no longer needs an encrypted VM's KEK (unless another VM there uses it).
          if (current.encryption) {
            const keyId = current.encryption.keyId;
            const others = (await this.list({ limit: 10_000, offset: 0, hostId: vm.hostId })).some(
              (o) => o.encryption?.keyId === keyId,
            );
            if (!others) await src.dropKeys([kekRefOf(current.encryption)]).catch(() => undefined);
          }
          await this.events.record(actor, {
            type: 'vm.migrated',
            object,
            changes,
            message: `${actor.user} migrated VM ${vm.name} from host ${fromName} to ${toName} (${cold ? 'stopped, ' : ''}${cipher === 'none' ? 'plaintext' : 'encrypted, aes-256-gcm'}, migration ${migrationId})`,
          });
          return {
            migrationId,
            from: vm.hostId,
            to: hostId,
            encrypted: cipher !== 'none',
            cipher,
            cold,
            // Unknown when the ACK was lost (the destination's answer settled it).
            bytes: result?.bytes ?? null,
            elapsedMs: result?.elapsedMs ?? null,
            bytesPerSecond: result?.bytesPerSecond ?? null,
          };
        } catch (err) {
          // The destination drops whatever it holds of this attempt before the task ends, so
          // a retry finds it clean (its own cleanup would race the retry).
          await this.hosts
            .agent(hostId)
            .migrationSettle(id, { migrationId })
            .catch((e: unknown) =>
              trace('manager', 'settling a failed migration failed', { vmId: id, error: String(e) }),
            );
          const why = err instanceof Error ? err.message : String(err);
          await this.events.record(actor, {
            type: 'vm.migrated',
            object,
            changes,
            result: 'failure',
            message: isUnconfirmed(err)
              ? `migration ${migrationId} of VM ${vm.name} from host ${fromName} to ${toName} is unsettled: ${why}`
              : `migration ${migrationId} of VM ${vm.name} from host ${fromName} to ${toName} failed; it keeps running on ${fromName}: ${why}`,
          });
          throw err;
        } finally {
          if (poll) clearInterval(poll);
          key?.fill(0);
          nonce?.fill(0);
        }
      },
    );
  }

  /** Sets migrationEncryption without an event of its own (encrypting a VM records one). */
  async setMigrationEncryption(id: string, mode: 'disabled' | 'opportunistic' | 'required'): Promise<void> {
    const vm = await this.get(id);
    await this.db.run(`UPDATE vms SET config = $1 WHERE id = $2`, [
      toJson({ ...vm.config, migrationEncryption: mode }),
      id,
    ]);
  }

  async setState(id: string, state: string): Promise<void> {
    await this.db.run(`UPDATE vms SET state = $1 WHERE id = $2`, [state, id]);
  }

  async console(id: string, offset: number): Promise<{ offset: number; next: number; data: string }> {
    const vm = await this.get(id);
    return this.hosts.agent(vm.hostId).console(id, offset);
  }
}

function isUnconfirmed(err: unknown): boolean {
  return err instanceof HypersealError && err.code === 'HS_ERR_MIGRATION_UNCONFIRMED';
}
