/** Activity: events (filters, live tail, from → to diffs), tasks (live progress), alerts. */
import type { AlertRule, AlertRuleCreate, AlertRuleUpdate, Event, Task } from '../sdk/api.gen.js';
import type { PageContext } from './app.js';
import type { UiElement } from './dom.js';
import { field, guarded, h, row, select, table } from './dom.js';
import { eventView, taskView, time } from './format.js';

const SEVERITIES = ['info', 'warning', 'error', 'critical'] as const;

/** The event filters, kept while the user moves between pages. */
const filters = { type: '', severity: '', object: '' };

/**
 * Follows the live event stream until the page is left; each event goes to `onEvent`.
 * A dropped stream (a manager restart) is followed again from the last event seen.
 */
function tail(ctx: PageContext, afterSeq: number | undefined, onEvent: (e: Event) => void): void {
  let last = afterSeq;
  const follow = async (): Promise<void> => {
    while (!ctx.signal.aborted) {
      try {
        await ctx.api.streamEvents(
          (data) => {
            let e: Event;
            try {
              e = JSON.parse(data) as Event;
            } catch {
              return; // not an event
            }
            last = e.seq;
            onEvent(e);
          },
          last === undefined ? {} : { afterSeq: last },
          ctx.signal,
        );
      } catch (err) {
        if (ctx.signal.aborted) return;
        ctx.flash(err);
      }
      await new Promise((resolve) => setTimeout(resolve, 3000));
    }
  };
  void follow();
}

/** Events shown per page (newest first). */
const PAGE = 200;

export async function eventsPage(ctx: PageContext): Promise<void> {
  const reason = ctx.access.reason('listEvents');
  if (reason !== null) return ctx.show(h('h1', {}, 'Events'), h('p', { class: 'reason' }, reason));
  const query = {
    limit: PAGE,
    ...(filters.type ? { type: filters.type } : {}),
    ...(filters.severity ? { severity: filters.severity as (typeof SEVERITIES)[number] } : {}),
    ...(filters.object ? { objectId: filters.object } : {}),
  };
  const events = await ctx.api.listEvents(query);
  const matches = (e: Event): boolean =>
    (!filters.type || e.type === filters.type) &&
    (!filters.severity || e.severity === filters.severity) &&
    (!filters.object || e.object.id === filters.object);
  const list = h('ul', { class: 'events', id: 'events' }, ...events.filter(matches).map(eventView));
  // Older events a page at a time, with the same filters (the server pages by seq).
  let oldest = events.at(-1)?.seq;
  const older: UiElement = h(
    'button',
    {
      type: 'button',
      id: 'older-events',
      hidden: events.length < PAGE,
      onclick: () =>
        void (async () => {
          if (oldest === undefined) return;
          const page = await ctx.api.listEvents({ ...query, beforeSeq: oldest });
          list.append(...page.map(eventView));
          oldest = page.at(-1)?.seq ?? oldest;
          older.hidden = page.length < PAGE;
        })(),
    },
    'Older events',
  );

  const type = h('input', {
    id: 'filter-type',
    list: 'event-types',
    value: filters.type,
    placeholder: 'any',
  });
  const severity = select({ id: 'filter-severity', value: filters.severity }, [
    ['', 'any'],
    ...SEVERITIES.map((s) => [s, s] as const),
  ]);
  const object = h('input', { id: 'filter-object', value: filters.object, placeholder: 'object id' });
  const known = [...new Set(events.map((e) => e.type))].sort();
  const live = h('span', { class: 'live', id: 'live' }, 'live');
  ctx.show(
    h('h1', {}, 'Events ', live),
    h(
      'form',
      {
        class: 'filters',
        id: 'event-filters',
        onsubmit: (ev) => {
          ev.preventDefault();
          filters.type = type.value.trim();
          filters.severity = severity.value;
          filters.object = object.value.trim();
          ctx.refresh();
        },
      },
      field('Type', type),
      h('datalist', { id: 'event-types' }, ...known.map((t) => h('option', { value: t }))),
      field('Severity', severity),
      field('Object', object),
      h('button', { type: 'submit' }, 'Filter'),
    ),
    list,
    older,
  );
  const newest = events[0]?.seq;
  tail(ctx, newest, (e) => {
    if (matches(e)) list.prepend(eventView(e));
  });
}

export async function tasksPage(ctx: PageContext): Promise<void> {
  const reason = ctx.access.reason('listTasks');
  if (reason !== null) return ctx.show(h('h1', {}, 'Tasks'), h('p', { class: 'reason' }, reason));
  const body = h('div', { id: 'tasks' });
  // Tasks name their object by id; show VMs by name where the user may list them.
  const vmNames = new Map(
    ctx.access.can('listVms') ? (await ctx.api.listVms({ limit: 1000 })).map((v) => [v.id, v.name]) : [],
  );
  const render = (tasks: readonly Task[]): void =>
    body.replaceChildren(
      table(
        ['Task', 'Object', 'User', 'Progress', 'Started', 'Finished'],
        tasks.map((t) =>
          row(
            t.kind,
            t.objectKind === 'vm'
              ? h(
                  'a',
                  { href: `#/vms/${encodeURIComponent(t.objectId)}` },
                  vmNames.get(t.objectId) ?? t.objectId,
                )
              : `${t.objectKind} ${t.objectId}`,
            t.user,
            taskView(t, ''),
            time(t.startedAt),
            time(t.finishedAt),
          ),
        ),
        'No tasks yet.',
      ),
    );
  render(await ctx.api.listTasks({ limit: 50 }));
  ctx.show(h('h1', {}, 'Tasks'), body);
  // Live progress: poll while the page is shown (tasks are not in the event stream).
  ctx.every(1000, async () => render(await ctx.api.listTasks({ limit: 50 })));
}

export async function alertsPage(ctx: PageContext): Promise<void> {
  const sections: UiElement[] = [h('h1', {}, 'Alerts')];
  const rulesReason = ctx.access.reason('listAlertRules');
  // One form: adds a rule, or (after Edit) changes one in place.
  let form = ruleForm(ctx);
  const editRuleButton = (rule: AlertRule): UiElement =>
    guarded(
      h(
        'button',
        {
          type: 'button',
          class: 'rule-edit',
          'data-rule': rule.id,
          onclick: () => {
            const next = ruleForm(ctx, rule);
            form.replaceWith(next);
            form = next;
            next.querySelector('#rule-name')?.focus();
          },
        },
        'Edit',
      ),
      ctx.access.reason('updateAlertRule'),
    );
  if (rulesReason === null) {
    const rules = await ctx.api.listAlertRules();
    sections.push(
      h(
        'section',
        { class: 'card' },
        h('h2', {}, 'Alert rules'),
        table(
          ['Name', 'Severity', 'Enabled', 'Matches', 'Actions', ''],
          rules.map((r) =>
            row(
              h('span', { class: 'rule-name' }, r.name),
              ruleSeverity(ctx, r),
              ruleEnabled(ctx, r),
              h('code', {}, JSON.stringify(r.match)),
              h('code', {}, JSON.stringify(r.actions)),
              h('span', {}, editRuleButton(r), removeRuleButton(ctx, r)),
            ),
          ),
          'No alert rules.',
        ),
      ),
    );
  } else sections.push(h('p', { class: 'reason' }, `Alert rules: ${rulesReason}`));
  sections.push(form);

  const eventsReason = ctx.access.reason('listEvents');
  if (eventsReason !== null) {
    sections.push(
      h(
        'section',
        { class: 'card' },
        h('h2', {}, 'Raised alerts'),
        h('p', { class: 'reason' }, eventsReason),
      ),
    );
    return ctx.show(...sections);
  }
  const raised = h('ul', { class: 'events', id: 'alerts' });
  sections.push(h('section', { class: 'card' }, h('h2', {}, 'Raised alerts'), raised));
  const alerts = await ctx.api.listEvents({ type: 'alert.raised', limit: 100 });
  raised.append(...alerts.map(eventView));
  ctx.show(...sections);
  const newest = alerts[0]?.seq;
  // The newest seq of any type is not known here: replay from the newest alert, or follow only new ones.
  tail(ctx, newest, (e) => {
    if (e.type === 'alert.raised') raised.prepend(eventView(e));
  });
}

/** One field of a rule changed in place (PATCH): the event shows it from → to. */
function updateRule(ctx: PageContext, rule: AlertRule, patch: AlertRuleUpdate, said: string): void {
  ctx.api
    .updateAlertRule(rule.id, patch)
    .then(() => {
      ctx.flash(`Alert rule ${rule.name}: ${said}.`);
      ctx.refresh();
    })
    .catch((err: unknown) => {
      ctx.flash(err);
      ctx.refresh();
    });
}

function ruleEnabled(ctx: PageContext, rule: AlertRule): UiElement {
  const box: UiElement = h('input', {
    type: 'checkbox',
    class: 'rule-enabled',
    'data-rule': rule.id,
    'aria-label': `${rule.name} enabled`,
    checked: rule.enabled,
    onchange: () => updateRule(ctx, rule, { enabled: box.checked }, box.checked ? 'enabled' : 'disabled'),
  });
  return guarded(box, ctx.access.reason('updateAlertRule'));
}

function ruleSeverity(ctx: PageContext, rule: AlertRule): UiElement {
  const choice: UiElement = select(
    {
      class: 'rule-severity',
      'data-rule': rule.id,
      'aria-label': `${rule.name} severity`,
      value: rule.severity,
      onchange: () => updateRule(ctx, rule, { severity: choice.value }, `severity ${choice.value}`),
    },
    SEVERITIES.map((s) => [s, s] as const),
  );
  return guarded(choice, ctx.access.reason('updateAlertRule'));
}

/** Remove, in two clicks: the first asks to confirm (the removal is an event, but not undoable). */
function removeRuleButton(ctx: PageContext, rule: AlertRule): UiElement {
  let armed = false;
  const button: UiElement = h(
    'button',
    {
      type: 'button',
      class: 'rule-remove',
      'data-rule': rule.id,
      onclick: () => {
        if (!armed) {
          armed = true;
          button.textContent = 'Confirm removal';
          button.className = 'rule-remove danger';
          return;
        }
        ctx.api
          .deleteAlertRule(rule.id)
          .then(() => {
            ctx.flash(`Removed alert rule ${rule.name}.`);
            ctx.refresh();
          })
          .catch(ctx.flash);
      },
    },
    'Remove',
  );
  return guarded(button, ctx.access.reason('deleteAlertRule'));
}

/** The parts of a rule the form edits; what it does not show (actions.event) is kept. */
function ruleForm(ctx: PageContext, editing?: AlertRule): UiElement {
  const match = (editing?.match ?? {}) as {
    types?: string[];
    objectKinds?: string[];
    result?: string;
    changes?: unknown[];
  };
  const actions = (editing?.actions ?? {}) as {
    event?: boolean;
    syslog?: boolean;
    webhook?: { url?: string };
  };
  const name = h('input', { id: 'rule-name', required: true, maxlength: 120, value: editing?.name ?? '' });
  const severity = select(
    { id: 'rule-severity', value: editing?.severity ?? 'warning' },
    SEVERITIES.map((s) => [s, s] as const),
  );
  const types = h('input', {
    id: 'rule-types',
    placeholder: 'vm.reconfigured, vm.secure-boot-*',
    value: (match.types ?? []).join(', '),
  });
  const kinds = h('input', {
    id: 'rule-kinds',
    placeholder: 'vm, host (optional)',
    value: (match.objectKinds ?? []).join(', '),
  });
  const result = select({ id: 'rule-result', value: match.result ?? '' }, [
    ['', 'any'],
    ['success', 'success'],
    ['failure', 'failure'],
  ]);
  const changes = h('textarea', {
    id: 'rule-changes',
    rows: 2,
    placeholder: '[{"path": "secureBoot", "to": {"equals": false}}]',
    value: match.changes ? JSON.stringify(match.changes) : '',
  });
  const syslog = h('input', { type: 'checkbox', id: 'rule-syslog', checked: actions.syslog === true });
  const url = h('input', {
    id: 'rule-webhook-url',
    placeholder: 'https://alerts.example/hook (optional)',
    value: actions.webhook?.url ?? '',
  });
  // Never shown: on edit, left empty keeps the webhook's current secret.
  const secret = h('input', {
    id: 'rule-webhook-secret',
    type: 'password',
    autocomplete: 'off',
    placeholder: actions.webhook ? 'unchanged' : 'at least 16 characters',
  });
  const list = (s: string): string[] =>
    s
      .split(',')
      .map((x) => x.trim())
      .filter((x) => x !== '');
  const parsedChanges = (): unknown[] | undefined => {
    if (changes.value.trim() === '') return undefined;
    try {
      const v = JSON.parse(changes.value) as unknown;
      if (Array.isArray(v)) return v;
    } catch {
      // reported below
    }
    throw new Error('Changes must be a JSON list, e.g. [{"path": "secureBoot", "to": {"equals": false}}]');
  };
  const body = (): { match: Record<string, unknown>; actions: Record<string, unknown> } => {
    const changeList = parsedChanges();
    return {
      match: {
        ...(list(types.value).length ? { types: list(types.value) } : {}),
        ...(list(kinds.value).length ? { objectKinds: list(kinds.value) } : {}),
        ...(result.value !== '' ? { result: result.value } : {}),
        ...(changeList ? { changes: changeList } : {}),
      },
      actions: {
        event: actions.event ?? true,
        ...(syslog.checked ? { syslog: true } : {}),
        ...(url.value.trim() !== ''
          ? // '[redacted]' asks the manager to keep the secret it holds.
            { webhook: { url: url.value.trim(), secret: secret.value !== '' ? secret.value : '[redacted]' } }
          : {}),
      },
    };
  };
  const save = async (): Promise<void> => {
    if (editing) {
      const patch: AlertRuleUpdate = { name: name.value, severity: severity.value, ...body() };
      const r = await ctx.api.updateAlertRule(editing.id, patch);
      ctx.flash(`Saved alert rule ${r.name}.`);
    } else {
      const create: AlertRuleCreate = { name: name.value, severity: severity.value, ...body() };
      const r = await ctx.api.createAlertRule(create);
      ctx.flash(`Added alert rule ${r.name}.`);
    }
    ctx.refresh();
  };
  return h(
    'form',
    {
      class: 'card',
      id: 'create-rule',
      ...(editing ? { 'data-editing': editing.id } : {}),
      onsubmit: (ev) => {
        ev.preventDefault();
        save().catch(ctx.flash);
      },
    },
    h('h2', {}, editing ? `Edit alert rule ${editing.name}` : 'Add an alert rule'),
    h(
      'div',
      { class: 'fields' },
      field('Name', name),
      field('Severity', severity),
      field('Event types', types, 'comma-separated globs'),
      field('Object kinds', kinds),
      field('Result', result),
      field('Changes', changes, 'optional: JSON list of {path, from, to} conditions'),
      field('Also to syslog', syslog),
      field('Webhook URL', url),
      field('Webhook secret', secret, editing && actions.webhook ? 'empty: keep the current one' : ''),
    ),
    h('p', { class: 'muted' }, 'A match raises an alert.raised event (and reaches syslog targets).'),
    guarded(
      h('button', { type: 'submit', class: 'primary' }, editing ? 'Save changes' : 'Add rule'),
      ctx.access.reason(editing ? 'updateAlertRule' : 'createAlertRule'),
    ),
    editing
      ? h('button', { type: 'button', class: 'rule-cancel', onclick: () => ctx.refresh() }, 'Cancel')
      : null,
  );
}
