/**
 * Enhanced logging in the manager: every event appended to the store is then evaluated
 * against the alert rules and delivered to every syslog target.
 *
 * Nothing is lost: the event store is the source of truth and each syslog target follows
 * it by sequence number. A target's `delivered_seq` advances only after its sink has the
 * event durably queued on disk, so a manager that dies between appending an event and
 * queueing it catches up from the store on its next start; a collector that is down only
 * makes the queue grow (it drains in order when the collector returns).
 */
import { createHash, randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Event } from '../events/index.js';
import type { AlertRule } from '../events/alerts/index.js';
import {
  alertFor,
  compileRule,
  ruleFromStored,
  ruleToPublic,
  ruleToStored,
  sendWebhook,
  validateRule,
} from '../events/alerts/index.js';
import { diff } from '../events/diff.js';
import { REDACTED } from '../events/redact.js';
import { SyslogSink } from '../events/syslog/sink.js';
import { HypersealError } from '../errors.js';
import type { Db } from '../store/db.js';
import { trace } from '../trace.js';
import type { Actor, ManagerEvents } from './events.js';

export interface SyslogTarget {
  id: string;
  name: string;
  host: string;
  port: number;
  transport: 'udp' | 'tcp' | 'tls';
  format: 'rfc5424' | 'json' | 'ocsf';
  caPem?: string | null;
}

interface TargetRow {
  id: string;
  name: string;
  host: string;
  port: number;
  transport: SyslogTarget['transport'];
  format: SyslogTarget['format'];
  ca_pem: string | null;
  delivered_seq: number;
}

interface RunningTarget {
  row: TargetRow;
  sink: SyslogSink;
  /** Serializes delivery in sequence order for this target. */
  tail: Promise<void>;
  deliveredSeq: number;
  saveTimer: NodeJS.Timeout | undefined;
}

type Compiled = { rule: AlertRule; matcher: ReturnType<typeof compileRule> };

export class LoggingService {
  private readonly targets = new Map<string, RunningTarget>();
  private rules: Compiled[] = [];
  private unsubscribe: (() => void) | undefined;

  constructor(
    private readonly db: Db,
    private readonly events: ManagerEvents,
    private readonly dataDir: string,
    /** Seals webhook secrets in alert_rules (deriveSealingKey of the master key). */
    private readonly secretsKey: Buffer,
  ) {}

  async start(): Promise<void> {
    await this.resealLegacyRules();
    await this.reloadRules();
    for (const row of await this.db.query<TargetRow>(`SELECT * FROM syslog_targets ORDER BY name`)) {
      await this.open(row);
    }
    this.unsubscribe = this.events.subscribe((e) => this.onEvent(e));
  }

  async close(): Promise<void> {
    this.unsubscribe?.();
    for (const t of this.targets.values()) {
      await t.tail.catch(() => undefined);
      await this.saveSeq(t);
      await t.sink.close();
    }
    this.targets.clear();
  }

  private onEvent(e: Event): void {
    for (const t of this.targets.values()) this.enqueue(t, e);
    if (e.type === 'alert.raised') return;
    for (const { rule, matcher } of this.rules) {
      const m = matcher(e);
      if (!m.matched) continue;
      void this.fire(rule, e, m.changes).catch((err: unknown) =>
        trace('events', 'alert action failed', { rule: rule.id, error: String(err) }),
      );
    }
  }

  private async fire(rule: AlertRule, e: Event, changes: Event['changes']): Promise<void> {
    const input = alertFor(rule, e, [...changes]);
    let raised: Event | undefined;
    if (rule.actions.event !== false || rule.actions.syslog === true) {
      // The alert names who triggered it: the user of the matched event.
      raised = await this.events.record({ user: input.user, sourceIp: input.sourceIp }, input);
    }
    if (rule.actions.webhook !== undefined) {
      await sendWebhook(rule.actions.webhook, { rule: ruleToPublic(rule), event: e, alert: raised ?? null });
    }
  }

  private enqueue(t: RunningTarget, e: Event): void {
    if (e.seq <= t.deliveredSeq) return;
    t.tail = t.tail
      .then(async () => {
        if (e.seq <= t.deliveredSeq) return;
        await t.sink.deliver(e);
        t.deliveredSeq = e.seq;
        // Persisted a moment later, in one write for a burst; a crash before it only
        // re-queues a few events (recognisable by id), never loses one.
        t.saveTimer ??= setTimeout(() => {
          t.saveTimer = undefined;
          void this.saveSeq(t);
        }, 200);
      })
      .catch((err: unknown) =>
        trace('events', 'syslog enqueue failed', { target: t.row.name, error: String(err) }),
      );
  }

  private async saveSeq(t: RunningTarget): Promise<void> {
    if (t.saveTimer !== undefined) {
      clearTimeout(t.saveTimer);
      t.saveTimer = undefined;
    }
    await this.db
      .run(`UPDATE syslog_targets SET delivered_seq = $1 WHERE id = $2 AND delivered_seq < $1`, [
        t.deliveredSeq,
        t.row.id,
      ])
      .catch(() => undefined);
  }

  private async open(row: TargetRow): Promise<void> {
    const queueDir = join(this.dataDir, 'syslog', row.id);
    mkdirSync(queueDir, { recursive: true, mode: 0o700 });
    const sink = new SyslogSink(
      {
        id: row.id,
        host: row.host,
        port: row.port,
        transport: row.transport,
        format: row.format,
        ...(row.ca_pem ? { caPem: row.ca_pem } : {}),
      },
      { queueDir },
    );
    sink.start();
    const t: RunningTarget = {
      row,
      sink,
      tail: Promise.resolve(),
      deliveredSeq: Number(row.delivered_seq),
      saveTimer: undefined,
    };
    this.targets.set(row.id, t);
    // Catch up from the store: whatever was appended but never queued for this target.
    const missed = await this.events.since(t.deliveredSeq);
    for (const e of missed) this.enqueue(t, e);
  }

  // -- targets -------------------------------------------------------------------------

  async listTargets(): Promise<
    (SyslogTarget & { queued: number; sent: number; connected: boolean; lastError: string | null })[]
  > {
    const rows = await this.db.query<TargetRow>(`SELECT * FROM syslog_targets ORDER BY name`);
    return rows.map((r) => {
      const s = this.targets.get(r.id)?.sink.stats();
      return {
        ...publicTarget(r),
        queued: s?.queued ?? 0,
        sent: s?.sent ?? 0,
        connected: s?.connected ?? false,
        lastError: s?.lastError ?? null,
      };
    });
  }

  async addTarget(
    actor: Actor,
    input: Omit<SyslogTarget, 'id'> & { fromSeq?: 'now' | 'all' },
  ): Promise<SyslogTarget> {
    if (input.transport === 'tls' && !input.caPem) {
      throw new HypersealError(
        'HS_ERR_INVALID_ARGUMENT',
        'a TLS syslog target needs caPem: the CA that signed the collector',
      );
    }
    const id = randomUUID();
    const head = (await this.events.query({ limit: 1 }))[0]?.seq ?? -1;
    const row: TargetRow = {
      id,
      name: input.name,
      host: input.host,
      port: input.port,
      transport: input.transport,
      format: input.format,
      ca_pem: input.caPem ?? null,
      // New targets start with what happens from now on unless asked for the history.
      delivered_seq: input.fromSeq === 'all' ? -1 : head,
    };
    try {
      await this.db.run(
        `INSERT INTO syslog_targets (id, name, host, port, transport, format, ca_pem, delivered_seq, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
        [
          row.id,
          row.name,
          row.host,
          row.port,
          row.transport,
          row.format,
          row.ca_pem,
          row.delivered_seq,
          Date.now(),
        ],
      );
    } catch (err) {
      throw nameTaken(err, 'a syslog target', input.name);
    }
    await this.open(row);
    await this.events.record(actor, {
      type: 'syslog.target-added',
      object: { kind: 'syslog-target', id, name: input.name },
      changes: [
        {
          path: 'target',
          from: null,
          to: `${input.transport}://${input.host}:${input.port} (${input.format})`,
        },
      ],
    });
    return publicTarget(row);
  }

  async removeTarget(actor: Actor, id: string): Promise<void> {
    const row = await this.db.one<TargetRow>(`SELECT * FROM syslog_targets WHERE id = $1`, [id]);
    if (row === undefined) throw new HypersealError('HS_ERR_NOT_FOUND', `no syslog target ${id}`);
    const t = this.targets.get(id);
    this.targets.delete(id);
    await t?.sink.close();
    await this.db.run(`DELETE FROM syslog_targets WHERE id = $1`, [id]);
    await this.events.record(actor, {
      type: 'syslog.target-removed',
      object: { kind: 'syslog-target', id, name: row.name },
      changes: [
        { path: 'target', from: `${row.transport}://${row.host}:${row.port} (${row.format})`, to: null },
      ],
    });
  }

  /**
   * Changes a target's name, address, transport, format or CA in place. The target keeps
   * its id, its on-disk queue and its place in the event store, so nothing queued or not
   * yet queued is lost (records already queued go out as they were formatted). The row is
   * written first: a crash before the sink reopens leaves the new settings for the next start.
   */
  async updateTarget(
    actor: Actor,
    id: string,
    patch: Partial<Omit<SyslogTarget, 'id'>>,
  ): Promise<SyslogTarget> {
    const row = await this.db.one<TargetRow>(`SELECT * FROM syslog_targets WHERE id = $1`, [id]);
    if (row === undefined) throw new HypersealError('HS_ERR_NOT_FOUND', `no syslog target ${id}`);
    const next: TargetRow = {
      ...row,
      name: patch.name ?? row.name,
      host: patch.host ?? row.host,
      port: patch.port ?? row.port,
      transport: patch.transport ?? row.transport,
      format: patch.format ?? row.format,
      ca_pem: patch.caPem === undefined ? row.ca_pem : patch.caPem,
    };
    if (next.transport === 'tls' && !next.ca_pem) {
      throw new HypersealError(
        'HS_ERR_INVALID_ARGUMENT',
        'a TLS syslog target needs caPem: the CA that signed the collector',
      );
    }
    const changes = diff(targetView(row), targetView(next));
    if (changes.length === 0) return publicTarget(row);
    try {
      await this.db.run(
        `UPDATE syslog_targets SET name = $1, host = $2, port = $3, transport = $4, format = $5, ca_pem = $6
         WHERE id = $7`,
        [next.name, next.host, next.port, next.transport, next.format, next.ca_pem, id],
      );
    } catch (err) {
      throw nameTaken(err, 'a syslog target', next.name);
    }
    const t = this.targets.get(id);
    if (t !== undefined) {
      this.targets.delete(id);
      await t.tail.catch(() => undefined);
      await this.saveSeq(t);
      await t.sink.close();
    }
    const reread = await this.db.one<TargetRow>(`SELECT * FROM syslog_targets WHERE id = $1`, [id]);
    if (reread !== undefined) await this.open(reread);
    await this.events.record(actor, {
      type: 'syslog.target-changed',
      object: { kind: 'syslog-target', id, name: next.name },
      changes,
    });
    return publicTarget(next);
  }

  // -- alert rules ---------------------------------------------------------------------

  /**
   * Rules stored before webhook secrets were sealed hold theirs in clear: seal them now.
   * One UPDATE per rule, each complete in itself, so a crash midway leaves every rule
   * readable and the next start finishes the job.
   */
  private async resealLegacyRules(): Promise<void> {
    for (const row of await this.db.query<{ id: string; rule: string }>(`SELECT id, rule FROM alert_rules`)) {
      const { rule, legacy } = ruleFromStored(row.rule, this.secretsKey);
      if (!legacy) continue;
      await this.db.run(`UPDATE alert_rules SET rule = $1 WHERE id = $2`, [
        ruleToStored(rule, this.secretsKey),
        row.id,
      ]);
      trace('events', 'alert rule webhook secret sealed', { rule: row.id });
    }
  }

  private async loadRule(id: string): Promise<AlertRule> {
    const row = await this.db.one<{ rule: string }>(`SELECT rule FROM alert_rules WHERE id = $1`, [id]);
    if (row === undefined) throw new HypersealError('HS_ERR_NOT_FOUND', `no alert rule ${id}`);
    return ruleFromStored(row.rule, this.secretsKey).rule;
  }

  private async reloadRules(): Promise<void> {
    const rows = await this.db.query<{ rule: string }>(`SELECT rule FROM alert_rules`);
    this.rules = rows
      .map((r) => ruleFromStored(r.rule, this.secretsKey).rule)
      .filter((r) => r.enabled)
      .map((rule) => ({ rule, matcher: compileRule(rule) }));
  }

  async listRules(): Promise<unknown[]> {
    const rows = await this.db.query<{ rule: string }>(`SELECT rule FROM alert_rules ORDER BY name`);
    return rows.map((r) => ruleToPublic(ruleFromStored(r.rule, this.secretsKey).rule));
  }

  async addRule(actor: Actor, input: unknown): Promise<unknown> {
    const candidate = {
      id: randomUUID(),
      enabled: true,
      ...(typeof input === 'object' && input !== null ? input : {}),
    };
    const rule = validateRule(candidate);
    try {
      await this.db.run(
        `INSERT INTO alert_rules (id, name, rule, enabled, created_at) VALUES ($1, $2, $3, $4, $5)`,
        [rule.id, rule.name, ruleToStored(rule, this.secretsKey), rule.enabled, Date.now()],
      );
    } catch (err) {
      throw nameTaken(err, 'an alert rule', rule.name);
    }
    await this.reloadRules();
    const pub = ruleToPublic(rule);
    await this.events.record(actor, {
      type: 'alert.rule-added',
      object: { kind: 'alert-rule', id: rule.id, name: rule.name },
      changes: [{ path: 'rule', from: null, to: JSON.parse(JSON.stringify(pub)) as never }],
    });
    return pub;
  }

  /**
   * Changes some of a rule's fields (name, enabled, severity, match, actions) in one write.
   * A webhook given without its secret (or with '[redacted]', as the API shows it) keeps the
   * rule's current secret, so a client can send back what it read. The event carries each
   * changed field from → to; a new secret shows as a change of a redacted value, never the
   * value. A patch that changes nothing records nothing.
   */
  async updateRule(actor: Actor, id: string, patch: Record<string, unknown>): Promise<unknown> {
    const before = await this.loadRule(id);
    if (patch['id'] !== undefined && patch['id'] !== id) {
      throw new HypersealError('HS_ERR_INVALID_ARGUMENT', 'rule.id: a rule keeps its id');
    }
    let actions: unknown = patch['actions'] ?? before.actions;
    const hook = (actions as { webhook?: Record<string, unknown> }).webhook;
    if (
      typeof hook === 'object' &&
      hook !== null &&
      (hook['secret'] === undefined || hook['secret'] === REDACTED)
    ) {
      const current = before.actions.webhook;
      if (current === undefined) {
        throw new HypersealError(
          'HS_ERR_INVALID_ARGUMENT',
          'rule.actions.webhook.secret: a new webhook needs its secret',
        );
      }
      // Kept only for the same receiver (another path is fine): signed alerts do not go to
      // another origin unless whoever sends them there knows the secret.
      if (typeof hook['url'] === 'string' && originOf(hook['url']) !== originOf(current.url)) {
        throw new HypersealError(
          'HS_ERR_INVALID_ARGUMENT',
          'rule.actions.webhook.secret: a webhook moved to another origin needs its secret',
        );
      }
      actions = { ...(actions as object), webhook: { ...hook, secret: current.secret } };
    }
    const after = validateRule({ ...before, ...patch, id, actions });
    const changes = diff(withoutId(ruleToPublic(before)), withoutId(ruleToPublic(after)));
    const oldHook = before.actions.webhook;
    const newHook = after.actions.webhook;
    if (oldHook !== undefined && newHook !== undefined && oldHook.secret !== newHook.secret) {
      changes.push({ path: 'actions.webhook.secret', from: REDACTED, to: REDACTED });
    }
    if (changes.length === 0) return ruleToPublic(before);
    try {
      await this.db.run(`UPDATE alert_rules SET name = $1, rule = $2, enabled = $3 WHERE id = $4`, [
        after.name,
        ruleToStored(after, this.secretsKey),
        after.enabled,
        id,
      ]);
    } catch (err) {
      throw nameTaken(err, 'an alert rule', after.name);
    }
    await this.reloadRules();
    await this.events.record(actor, {
      type: 'alert.rule-changed',
      object: { kind: 'alert-rule', id, name: after.name },
      changes,
    });
    return ruleToPublic(after);
  }

  async removeRule(actor: Actor, id: string): Promise<void> {
    const row = await this.db.one<{ name: string }>(`SELECT name FROM alert_rules WHERE id = $1`, [id]);
    if (row === undefined) throw new HypersealError('HS_ERR_NOT_FOUND', `no alert rule ${id}`);
    await this.db.run(`DELETE FROM alert_rules WHERE id = $1`, [id]);
    await this.reloadRules();
    await this.events.record(actor, {
      type: 'alert.rule-removed',
      object: { kind: 'alert-rule', id, name: row.name },
      changes: [],
    });
  }
}

function withoutId(rule: object): object {
  const { id: _id, ...rest } = rule as { id: string };
  return rest;
}

/** The store's unique-name conflict as the API says it; anything else unchanged. */
function nameTaken(err: unknown, what: string, name: string): unknown {
  return err instanceof HypersealError && err.code === 'HS_ERR_DB_CONFLICT'
    ? new HypersealError('HS_ERR_CONFLICT', `${what} named '${name}' already exists`)
    : err;
}

/** What an event shows of a target's settings: the CA as a fingerprint, not the PEM. */
function targetView(r: TargetRow): Record<string, unknown> {
  return {
    name: r.name,
    host: r.host,
    port: r.port,
    transport: r.transport,
    format: r.format,
    ca: r.ca_pem ? `sha256:${createHash('sha256').update(r.ca_pem).digest('hex').slice(0, 16)}` : null,
  };
}

function publicTarget(r: TargetRow): SyslogTarget {
  return { id: r.id, name: r.name, host: r.host, port: r.port, transport: r.transport, format: r.format };
}

/** scheme://host:port of a URL; an unparsable one is its own origin (validation refuses it later). */
function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return url;
  }
}
