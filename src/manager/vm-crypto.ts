/**
 * VM encryption, manager side: encryption policies, and the operations that apply them —
 * encrypt, decrypt, create encrypted, clone, shallow and deep rekey, crypto-shred — plus
 * key delivery (the KEK pushed to the VM's host before it needs it, again after an agent
 * restart) and locked VMs.
 *
 * What the manager keeps: for each encrypted VM its policy, key provider and the KEK's
 * KMIP unique identifier (vms.crypto). Never key material: a KEK is fetched from its
 * provider, pushed to the host over mutual TLS and its buffer zeroized; the agent holds it
 * in memory and generates and wraps the DEKs itself.
 *
 * Who is right after a crash: the host. Its VM record (written atomically, see
 * src/agent/qemu-driver.ts) says which KEK a VM's files are encrypted under; the health
 * loop compares that with vms.crypto and corrects the database, with an event, when an
 * operation was cut short between the host's commit and the manager's.
 */
import { randomUUID } from 'node:crypto';
import type { VmRuntime, VmSpec } from '../agent/api.js';
import { HypersealError, isHypersealError } from '../errors.js';
import type { Change } from '../events/index.js';
import type { Db } from '../store/db.js';
import type { Actor, EventRecorder } from './events.js';
import type { HostService } from './hosts.js';
import type { Principal } from './http.js';
import type { Vm, VmEncryption } from './model.js';
import type { Task, TaskContext, TaskEngine } from './tasks.js';
import type { VmService } from './vms.js';
import { kekRefOf, parseKekRef } from './vms.js';

/** What VM encryption needs from key providers (src/keys KeyProviderService). */
export interface KekSource {
  createKek(providerId?: string): Promise<{ providerId: string; keyId: string }>;
  fetchKek(providerId: string, keyId: string): Promise<Buffer>;
  destroyKek(providerId: string, keyId: string): Promise<void>;
}

export const BUILTIN_POLICY_ID = 'vm-encryption-policy';
export const BUILTIN_POLICY_NAME = 'VM Encryption Policy';

export interface EncryptionPolicy {
  id: string;
  name: string;
  description: string;
  /** null: the default key provider at the time a VM is encrypted. */
  providerId: string | null;
  builtin: boolean;
  createdAt: number;
}

interface PolicyRow {
  id: string;
  name: string;
  description: string;
  provider_id: string | null;
  builtin: boolean | number;
  created_at: number;
}

const toPolicy = (r: PolicyRow): EncryptionPolicy => ({
  id: r.id,
  name: r.name,
  description: r.description,
  providerId: r.provider_id,
  builtin: Boolean(r.builtin),
  createdAt: Number(r.created_at),
});

const SYSTEM: Actor = { user: 'system', sourceIp: null };
/** How a crypto-shredded VM's lock reason starts: such a lock is never lifted automatically. */
const SHREDDED = 'crypto-shredded:';
/** How often a locked VM's key is tried again by the health loop. */
const UNLOCK_RETRY_MS = 30_000;
/** VMs encrypted at once by one policy application (each copies whole disks). */
const APPLY_PARALLEL = 4;

function conflict(message: string): HypersealError {
  return new HypersealError('HS_ERR_CONFLICT', message);
}

/** Refuses, as a 403 the HTTP layer records as access.denied, what a route cannot check up front. */
export function requirePrivilege(user: Principal | undefined, privilege: string, what: string): void {
  if (user !== undefined && user.privileges.has(privilege)) return;
  throw new HypersealError(
    'HS_ERR_AUTH_FORBIDDEN',
    `${user?.name ?? 'anonymous'} lacks the privilege ${privilege} to ${what}`,
  );
}

/** `web-*` style patterns: `*` any run of characters, `?` one; everything else literal. */
export function globToRegExp(glob: string): RegExp {
  const body = glob
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

export class EncryptionPolicies {
  constructor(
    private readonly db: Db,
    private readonly events: EventRecorder,
  ) {}

  /** The built-in "VM Encryption Policy" (default provider), created on first start. */
  async ensureBuiltIn(): Promise<void> {
    const have = await this.db.one(`SELECT id FROM encryption_policies WHERE id = $1`, [BUILTIN_POLICY_ID]);
    if (have !== undefined) return;
    await this.db
      .run(
        `INSERT INTO encryption_policies (id, name, description, provider_id, builtin, created_at) VALUES ($1, $2, $3, NULL, TRUE, $4)`,
        [
          BUILTIN_POLICY_ID,
          BUILTIN_POLICY_NAME,
          'Encrypts the VM home (configuration, NVRAM) and every disk (AES-256-XTS) with a KEK from the default key provider.',
          Date.now(),
        ],
      )
      .catch((err: unknown) => {
        // Another manager on the same database created it first.
        if (!isHypersealError(err, 'HS_ERR_DB_CONFLICT')) throw err;
      });
  }

  async list(): Promise<EncryptionPolicy[]> {
    return (await this.db.query<PolicyRow>(`SELECT * FROM encryption_policies ORDER BY name`)).map(toPolicy);
  }

  /** By id or by name. */
  async get(idOrName: string): Promise<EncryptionPolicy> {
    const row = await this.db.one<PolicyRow>(`SELECT * FROM encryption_policies WHERE id = $1 OR name = $1`, [
      idOrName,
    ]);
    if (row === undefined) throw new HypersealError('HS_ERR_NOT_FOUND', `no encryption policy ${idOrName}`);
    return toPolicy(row);
  }

  async create(
    actor: Actor,
    input: { name: string; description?: string; providerId?: string },
  ): Promise<EncryptionPolicy> {
    if (input.providerId !== undefined) {
      const p = await this.db.one(`SELECT id FROM key_providers WHERE id = $1`, [input.providerId]);
      if (p === undefined)
        throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `no key provider ${input.providerId}`);
    }
    const row: PolicyRow = {
      id: randomUUID(),
      name: input.name,
      description: input.description ?? '',
      provider_id: input.providerId ?? null,
      builtin: false,
      created_at: Date.now(),
    };
    await this.db
      .run(
        `INSERT INTO encryption_policies (id, name, description, provider_id, builtin, created_at) VALUES ($1, $2, $3, $4, FALSE, $5)`,
        [row.id, row.name, row.description, row.provider_id, row.created_at],
      )
      .catch((err: unknown) => {
        if (isHypersealError(err, 'HS_ERR_DB_CONFLICT')) {
          throw conflict(`an encryption policy named '${input.name}' already exists`);
        }
        throw err;
      });
    const policy = toPolicy(row);
    await this.events.record(actor, {
      type: 'encryption.policy-created',
      object: { kind: 'encryption-policy', id: policy.id, name: policy.name },
      changes: this.events.diff({}, { name: policy.name, providerId: policy.providerId ?? 'default' }),
    });
    return policy;
  }

  async remove(actor: Actor, id: string): Promise<void> {
    const policy = await this.get(id);
    if (policy.builtin) throw conflict(`the built-in policy '${policy.name}' cannot be deleted`);
    const users = await this.db.query<{ name: string }>(
      `SELECT name FROM vms WHERE crypto LIKE $1 ORDER BY name LIMIT 5`,
      [`%"policyId":"${policy.id}"%`],
    );
    if (users.length > 0) {
      throw conflict(
        `encryption policy '${policy.name}' is applied to ${users.map((u) => u.name).join(', ')}: decrypt or re-encrypt them first`,
      );
    }
    await this.db.run(`DELETE FROM encryption_policies WHERE id = $1`, [policy.id]);
    await this.events.record(actor, {
      type: 'encryption.policy-deleted',
      object: { kind: 'encryption-policy', id: policy.id, name: policy.name },
      changes: [{ path: 'name', from: policy.name, to: null }],
    });
  }
}

export class VmCryptoService {
  /** When each locked VM's key was last tried by the health loop. */
  private readonly lastUnlockAttempt = new Map<string, number>();

  constructor(
    private readonly vms: VmService,
    private readonly hosts: HostService,
    private readonly events: EventRecorder,
    private readonly tasks: TaskEngine,
    private readonly keys: KekSource,
    readonly policies: EncryptionPolicies,
  ) {
    vms.ensureKey = (vm) => this.deliverKey(vm);
    vms.ensureKeyOn = (vm, hostId) => this.deliverKeyTo(vm, hostId);
  }

  /* ------------------------------------------------------------------ keys */

  /**
   * Fetches the VM's KEK from its provider and pushes it to the VM's host. When it cannot
   * be had the VM is marked locked (with an event on the change) and HS_ERR_VM_LOCKED
   * says why; when it can and the VM was locked, the lock is cleared (with an event).
   */
  async deliverKey(vm: Vm, actor: Actor = SYSTEM): Promise<void> {
    const enc = vm.encryption;
    if (!enc) return;
    try {
      await this.push(vm.hostId, enc);
    } catch (err) {
      if (isHypersealError(err, 'HS_ERR_HOST_UNAVAILABLE')) throw err; // not the key's fault
      const reason = err instanceof Error ? err.message : String(err);
      await this.markLocked(vm, reason);
      throw new HypersealError('HS_ERR_VM_LOCKED', `VM ${vm.name} is locked: ${reason}`, { vmId: vm.id });
    }
    if (vm.lockedReason !== null) await this.markUnlocked(vm, actor);
  }

  /** Pushes an encrypted VM's KEK to another host (a migration's destination) before it needs it. */
  async deliverKeyTo(vm: Vm, hostId: string): Promise<void> {
    if (vm.encryption) await this.push(hostId, vm.encryption);
  }

  private async push(hostId: string, enc: { providerId: string; keyId: string }): Promise<void> {
    const material = await this.keys.fetchKek(enc.providerId, enc.keyId);
    try {
      await this.hosts.agent(hostId).putKeys([{ ref: kekRefOf(enc), material: material.toString('base64') }]);
    } finally {
      material.fill(0);
    }
  }

  private async markLocked(vm: Vm, reason: string): Promise<void> {
    if (vm.lockedReason === reason) return;
    await this.vms.setLockedReason(vm.id, reason);
    if (vm.lockedReason === null) {
      await this.events.record(SYSTEM, {
        type: 'vm.locked',
        object: { kind: 'vm', id: vm.id, name: vm.name },
        changes: [{ path: 'locked', from: false, to: true }],
        message: `VM ${vm.name} is locked: ${reason}. Fix the key provider, then run: hyperseal vm unlock ${vm.name}`,
      });
    }
  }

  private async markUnlocked(vm: Vm, actor: Actor): Promise<void> {
    await this.vms.setLockedReason(vm.id, null);
    await this.events.record(actor, {
      type: 'vm.unlocked',
      object: { kind: 'vm', id: vm.id, name: vm.name },
      changes: [{ path: 'locked', from: true, to: false }],
    });
  }

  /** `hyperseal vm unlock`: tries the key again now. */
  async unlock(actor: Actor, id: string): Promise<Vm> {
    const vm = await this.vms.get(id);
    if (!vm.encryption) throw conflict(`VM ${vm.name} is not encrypted: there is nothing to unlock`);
    await this.hosts.requireUsable(vm.hostId);
    await this.deliverKey(vm, actor);
    return this.vms.get(id);
  }

  /**
   * From the health loop, per host: corrects vms.crypto from what the host reports, and
   * delivers keys to VMs the host reports locked (after an agent restart), at most every
   * UNLOCK_RETRY_MS per VM. Never throws: the loop must go on for other hosts.
   */
  async sync(
    hostId: string,
    runtimes: readonly VmRuntime[],
    versionsBefore: ReadonlyMap<string, number>,
  ): Promise<void> {
    for (const rt of runtimes) {
      try {
        let vm = await this.vms.get(rt.id);
        if (vm.hostId !== hostId) continue;
        // Only a VM whose row no manager has changed since before the host was asked: a
        // listing may predate an operation that has since committed (host first, then the
        // record), and following it would undo that operation. The row's version says so
        // whichever manager made the change; the next tick's listing is newer.
        const version = versionsBefore.get(vm.id);
        if (version !== undefined && version === vm.version) vm = await this.reconcile(vm, rt, version);
        const now = Date.now();
        if (rt.locked && vm.encryption) {
          // A failed delivery is retried every UNLOCK_RETRY_MS, not at every tick: a key
          // provider that is down is not hammered by every locked VM.
          if (now - (this.lastUnlockAttempt.get(vm.id) ?? 0) < UNLOCK_RETRY_MS) continue;
          try {
            await this.deliverKey(vm);
            this.lastUnlockAttempt.delete(vm.id);
          } catch {
            this.lastUnlockAttempt.set(vm.id, now);
          }
        } else if (!rt.locked && vm.lockedReason !== null && !vm.lockedReason.startsWith(SHREDDED)) {
          // Its host holds the key again (pushed by an operation, or another manager).
          await this.markUnlocked(vm, SYSTEM);
        }
      } catch {
        // A VM the manager does not know (yet), or a database hiccup: next tick.
      }
    }
  }

  private async reconcile(vm: Vm, rt: VmRuntime, version: number): Promise<Vm> {
    const hostRef = rt.encryption?.kekRef ?? null;
    const ourRef = vm.encryption ? kekRefOf(vm.encryption) : null;
    if (hostRef === ourRef) return vm;
    const parsed = hostRef === null ? undefined : parseKekRef(hostRef);
    if (hostRef !== null && parsed === undefined) return vm; // not a ref this manager made
    const next: VmEncryption | null = parsed
      ? { policyId: vm.encryption?.policyId ?? BUILTIN_POLICY_ID, ...parsed }
      : null;
    // Compare-and-set: a change that lands between our read and this write wins.
    if (!(await this.vms.setEncryptionIfVersion(vm.id, next, version))) return vm;
    await this.events.record(SYSTEM, {
      type: 'vm.encryption-reconciled',
      object: { kind: 'vm', id: vm.id, name: vm.name },
      changes: [
        { path: 'encrypted', from: ourRef !== null, to: hostRef !== null },
        { path: 'keyId', from: vm.encryption?.keyId ?? null, to: next?.keyId ?? null },
      ],
      message: `system reconciled the encryption of VM ${vm.name} with what host ${vm.hostId} reports (an operation was interrupted): keyId ${vm.encryption?.keyId ?? 'none'} → ${next?.keyId ?? 'none'}`,
    });
    return this.vms.get(vm.id);
  }

  /* ------------------------------------------------------------------ operations */

  /** Creates the KEK of a new encrypted VM and pushes it to its host (before it is defined). */
  async prepareNewVm(policyId: string, hostId: string): Promise<VmEncryption> {
    const policy = await this.policies.get(policyId);
    await this.hosts.requireUsable(hostId);
    const created = await this.keys.createKek(policy.providerId ?? undefined);
    const enc: VmEncryption = { policyId: policy.id, ...created };
    await this.push(hostId, enc);
    return enc;
  }

  async encrypt(actor: Actor, id: string, policyIdOrName = BUILTIN_POLICY_ID): Promise<Task> {
    const vm = await this.vms.get(id);
    const policy = await this.policies.get(policyIdOrName);
    if (vm.encryption) throw conflict(`VM ${vm.name} is already encrypted`);
    await this.hosts.requireUsable(vm.hostId);
    return this.operation(actor, vm, 'vm.encrypt', 'vm.encrypted', async (ctx, current) => {
      this.requireStopped(current, 'encrypt');
      const created = await this.keys.createKek(policy.providerId ?? undefined);
      const enc: VmEncryption = { policyId: policy.id, ...created };
      ctx.progress(5);
      await this.push(current.hostId, enc);
      await this.tracking(ctx, current, () => this.hosts.agent(current.hostId).encrypt(id, kekRefOf(enc)));
      await this.vms.setEncryption(id, enc);
      await this.vms.setMigrationEncryption(id, 'required'); // stays after a decrypt, until changed
      return {
        result: { encryption: enc },
        changes: [
          { path: 'encryption', from: null, to: policy.name },
          { path: 'keyProvider', from: null, to: enc.providerId },
          { path: 'keyId', from: null, to: enc.keyId },
        ],
      };
    });
  }

  async decrypt(actor: Actor, id: string): Promise<Task> {
    const vm = await this.vms.get(id);
    if (!vm.encryption) throw conflict(`VM ${vm.name} is not encrypted`);
    await this.hosts.requireUsable(vm.hostId);
    return this.operation(actor, vm, 'vm.decrypt', 'vm.decrypted', async (ctx, current) => {
      this.requireStopped(current, 'decrypt');
      const enc = this.requireEncryption(current);
      await this.deliverKey(current);
      await this.tracking(ctx, current, () => this.hosts.agent(current.hostId).decrypt(id));
      await this.vms.setEncryption(id, null);
      const policy = await this.policies.get(enc.policyId).catch(() => undefined);
      // The KEK stays on its provider: only crypto-shredding destroys a key.
      return {
        result: { encryption: null },
        changes: [
          { path: 'encryption', from: policy?.name ?? enc.policyId, to: null },
          { path: 'keyId', from: enc.keyId, to: null },
        ],
      };
    });
  }

  /**
   * A new KEK for the VM (shallow: its DEKs rewrapped, the VM may run), or new DEKs as well
   * (deep: the data re-encrypted, powered off). With `policyId`, the new KEK comes from that
   * policy's key provider and the VM is encrypted under that policy from then on: moving
   * a VM to another policy needs no decrypt-and-encrypt, and never leaves it in clear.
   */
  async rekey(actor: Actor, id: string, deep: boolean, policyId?: string): Promise<Task> {
    const vm = await this.vms.get(id);
    if (!vm.encryption) throw conflict(`VM ${vm.name} is not encrypted`);
    const target = policyId === undefined ? undefined : await this.policies.get(policyId);
    await this.hosts.requireUsable(vm.hostId);
    return this.operation(
      actor,
      vm,
      deep ? 'vm.deep-rekey' : 'vm.rekey',
      'vm.rekeyed',
      async (ctx, current) => {
        if (deep) this.requireStopped(current, 'deep-rekey');
        const old = this.requireEncryption(current);
        const policy = target ?? (await this.policies.get(old.policyId).catch(() => undefined));
        // The new KEK on the policy's provider (the VM's own when the policy is gone).
        const created = await this.keys.createKek(policy?.providerId ?? old.providerId);
        const enc: VmEncryption = { policyId: target?.id ?? old.policyId, ...created };
        await this.push(current.hostId, enc);
        ctx.progress(10);
        const agent = this.hosts.agent(current.hostId);
        // The host normally still holds the old KEK (it unwraps the DEKs with it): fetch
        // it again only when the host says it lacks it — one KMIP round trip less per VM.
        await this.tracking(ctx, current, () =>
          agent.rekey(id, kekRefOf(enc), deep).catch(async (err: unknown) => {
            if (!isHypersealError(err, 'HS_ERR_VM_LOCKED')) throw err;
            await this.deliverKey(current);
            return agent.rekey(id, kekRefOf(enc), deep);
          }),
        );
        await this.vms.setEncryption(id, enc);
        return {
          result: { encryption: enc, deep },
          changes: [
            ...(old.policyId !== enc.policyId
              ? [{ path: 'policyId', from: old.policyId, to: enc.policyId }]
              : []),
            { path: 'keyId', from: old.keyId, to: enc.keyId },
            ...(old.providerId !== enc.providerId
              ? [{ path: 'keyProvider', from: old.providerId, to: enc.providerId }]
              : []),
            {
              path: 'rekey',
              from: null,
              to: deep ? 'deep (new DEKs, data re-encrypted)' : 'shallow (new KEK)',
            },
          ],
        };
      },
    );
  }

  /**
   * Copies a stopped VM to a new one on the same host. An encrypted source gives an
   * encrypted clone with its own KEK and its own DEKs (the data is re-encrypted on copy).
   */
  async clone(actor: Actor, id: string, name: string): Promise<Task> {
    const source = await this.vms.get(id);
    await this.hosts.requireUsable(source.hostId);
    return this.operation(actor, source, 'vm.clone', 'vm.cloned', async (ctx, current) => {
      this.requireStopped(current, 'clone');
      let enc: VmEncryption | undefined;
      if (current.encryption) {
        const policy = await this.policies.get(current.encryption.policyId).catch(() => undefined);
        const created = await this.keys.createKek(policy?.providerId ?? current.encryption.providerId);
        enc = { policyId: current.encryption.policyId, ...created };
        await this.deliverKey(current);
        await this.push(current.hostId, enc);
      }
      const config = {
        ...current.config,
        nics: current.config.nics.map((n) => ({ ...n, mac: this.vms.newMac() })),
      };
      // The row first: a crash after the host's copy leaves a VM the inventory lists.
      const clone = await this.vms.insertRecord(name, current.hostId, config, enc);
      try {
        const spec: VmSpec = await this.vms.spec(clone);
        await this.tracking(ctx, current, () => this.hosts.agent(current.hostId).clone(id, spec));
      } catch (err) {
        await this.vms.deleteRecord(clone.id);
        throw err;
      }
      return {
        result: { vmId: clone.id, name: clone.name, encryption: enc ?? null },
        changes: [
          { path: 'clone', from: null, to: clone.name },
          ...(enc ? [{ path: 'clone.keyId', from: null, to: enc.keyId }] : []),
        ],
      };
    });
  }

  /**
   * Destroys the VM's KEK on its key provider (Revoke, Destroy): the VM's data is then
   * unrecoverable. `confirm` must repeat the VM's name.
   */
  async cryptoShred(actor: Actor, id: string, confirm: string): Promise<Vm> {
    const vm = await this.vms.get(id);
    const enc = vm.encryption;
    if (!enc) throw conflict(`VM ${vm.name} is not encrypted: there is no key to destroy`);
    if (confirm !== vm.name) {
      throw new HypersealError(
        'HS_ERR_INVALID_ARGUMENT',
        `crypto-shredding destroys VM ${vm.name}'s data for good: confirm with its exact name`,
      );
    }
    this.requireStopped(vm, 'crypto-shred');
    await this.keys.destroyKek(enc.providerId, enc.keyId);
    // The host forgets it first (a host that is down forgets it at its next restart), so the
    // health loop never sees the host holding a key the VM is recorded as locked without.
    await this.hosts
      .agent(vm.hostId)
      .dropKeys([kekRefOf(enc)])
      .catch(() => undefined);
    await this.vms.setLockedReason(id, `${SHREDDED} its key ${enc.keyId} was destroyed by ${actor.user}`);
    await this.events.record(actor, {
      type: 'vm.crypto-shredded',
      object: { kind: 'vm', id, name: vm.name },
      changes: [{ path: 'keyState', from: 'active', to: 'destroyed' }],
      message: `${actor.user} crypto-shredded VM ${vm.name}: its KEK ${enc.keyId} on key provider ${enc.providerId} was destroyed; the VM's data cannot be decrypted any more`,
    });
    return this.vms.get(id);
  }

  /**
   * Encrypts every plain VM matching `select` under the policy: one task per VM (at most
   * APPLY_PARALLEL at a time), and this parent task's progress is the share finished.
   */
  async applyPolicy(
    actor: Actor,
    policyIdOrName: string,
    select: { namePattern?: string; tag?: string },
  ): Promise<Task> {
    const policy = await this.policies.get(policyIdOrName);
    if (select.namePattern === undefined && select.tag === undefined) {
      throw new HypersealError('HS_ERR_INVALID_ARGUMENT', 'select VMs by namePattern, tag or both');
    }
    const pattern = select.namePattern === undefined ? undefined : globToRegExp(select.namePattern);
    const all = await this.vms.list({ limit: 100_000, offset: 0 });
    const chosen = all.filter(
      (v) =>
        v.encryption === null &&
        (pattern === undefined || pattern.test(v.name)) &&
        (select.tag === undefined || v.config.tags.includes(select.tag)),
    );
    return this.tasks.submit(
      {
        kind: 'encryption-policy.apply',
        objectKind: 'encryption-policy',
        objectId: policy.id,
        user: actor.user,
      },
      async (ctx) => {
        const outcomes: {
          vmId: string;
          name: string;
          taskId: string | null;
          state: string;
          error?: string;
        }[] = [];
        let next = 0;
        const worker = async (): Promise<void> => {
          while (next < chosen.length) {
            const vm = chosen[next++] as Vm;
            try {
              const task = await this.encrypt(actor, vm.id, policy.id);
              const done = await this.tasks.wait(task.id, 24 * 3600_000);
              outcomes.push({
                vmId: vm.id,
                name: vm.name,
                taskId: task.id,
                state: done.state,
                ...(done.error ? { error: done.error.message } : {}),
              });
            } catch (err) {
              outcomes.push({
                vmId: vm.id,
                name: vm.name,
                taskId: null,
                state: 'failed',
                error: err instanceof Error ? err.message : String(err),
              });
            }
            ctx.progress(Math.floor((100 * outcomes.length) / Math.max(1, chosen.length)));
          }
        };
        await Promise.all(Array.from({ length: Math.min(APPLY_PARALLEL, chosen.length) }, worker));
        const succeeded = outcomes.filter((o) => o.state === 'succeeded');
        await this.events.record(actor, {
          type: 'encryption.policy-applied',
          object: { kind: 'encryption-policy', id: policy.id, name: policy.name },
          changes: [{ path: 'vms', from: [], to: succeeded.map((o) => o.name).sort() }],
          ...(succeeded.length < outcomes.length ? { result: 'failure' as const } : {}),
        });
        return {
          total: chosen.length,
          succeeded: succeeded.length,
          failed: outcomes.length - succeeded.length,
          vms: outcomes,
        };
      },
    );
  }

  /* ------------------------------------------------------------------ helpers */

  private requireStopped(vm: Vm, what: string): void {
    if (vm.state !== 'stopped' && vm.state !== 'crashed') {
      throw conflict(`VM ${vm.name} is ${vm.state}: power it off to ${what} it`);
    }
  }

  private requireEncryption(vm: Vm): VmEncryption {
    if (!vm.encryption) throw conflict(`VM ${vm.name} is not encrypted`);
    return vm.encryption;
  }

  /**
   * Runs a crypto operation as a task on `vm`: the event is recorded when the host
   * confirms (or, with result failure, when it refuses, so a failed attempt is visible
   * and the KEK it may have created can be traced).
   */
  private operation(
    actor: Actor,
    vm: Vm,
    kind: string,
    type: 'vm.encrypted' | 'vm.decrypted' | 'vm.rekeyed' | 'vm.cloned',
    work: (ctx: TaskContext, current: Vm) => Promise<{ result: unknown; changes: Change[] }>,
  ): Promise<Task> {
    return this.tasks.submit({ kind, objectKind: 'vm', objectId: vm.id, user: actor.user }, async (ctx) => {
      ctx.progress(1);
      try {
        const current = await this.vms.get(vm.id);
        const { result, changes } = await work(ctx, current);
        await this.events.record(actor, { type, object: { kind: 'vm', id: vm.id, name: vm.name }, changes });
        return result;
      } catch (err) {
        await this.events
          .record(actor, {
            type,
            object: { kind: 'vm', id: vm.id, name: vm.name },
            changes: [],
            result: 'failure',
            message: `${actor.user} failed to ${kind.replace(/^vm\./, '')} VM ${vm.name}: ${err instanceof Error ? err.message : String(err)}`,
          })
          .catch(() => undefined);
        throw err;
      }
    });
  }

  /**
   * Awaits a long host operation, copying the host's progress into the task meanwhile
   * (polled every 500 ms; an operation that ends sooner costs no poll and no wait).
   */
  private async tracking<T>(ctx: TaskContext, vm: Vm, op: () => Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    let done = false;
    const poll = (): void => {
      timer = setTimeout(() => {
        // Through a promise: agent() throws at once for a host that went away meanwhile.
        void Promise.resolve()
          .then(() => this.hosts.agent(vm.hostId).getVm(vm.id))
          .then(
            (rt) => {
              if (!done && rt.operation) ctx.progress(10 + Math.floor((rt.operation.progress * 85) / 100));
            },
            () => undefined,
          )
          .finally(() => {
            if (!done) poll();
          });
      }, 500);
      timer.unref();
    };
    poll();
    try {
      return await op();
    } finally {
      done = true;
      clearTimeout(timer);
      ctx.progress(95);
    }
  }
}
