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
              removeRuleButton(ctx, r),
            ),
          ),
          'No alert rules.',
        ),
      ),
    );
  } else sections.push(h('p', { class: 'reason' }, `Alert rules: ${rulesReason}`));
  sections.push(ruleForm(ctx));

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

function ruleForm(ctx: PageContext): UiElement {
  const name = h('input', { id: 'rule-name', required: true, maxlength: 120 });
  const severity = select(
    { id: 'rule-severity', value: 'warning' },
    SEVERITIES.map((s) => [s, s] as const),
  );
  const types = h('input', { id: 'rule-types', placeholder: 'vm.reconfigured, vm.secure-boot-*' });
  const kinds = h('input', { id: 'rule-kinds', placeholder: 'vm, host (optional)' });
  const list = (s: string): string[] =>
    s
      .split(',')
      .map((x) => x.trim())
      .filter((x) => x !== '');
  const create = async (): Promise<void> => {
    const body: AlertRuleCreate = {
      name: name.value,
      severity: severity.value,
      match: {
        ...(list(types.value).length ? { types: list(types.value) } : {}),
        ...(list(kinds.value).length ? { objectKinds: list(kinds.value) } : {}),
      },
      actions: { event: true },
    };
    const r = await ctx.api.createAlertRule(body);
    ctx.flash(`Added alert rule ${r.name}.`);
    ctx.refresh();
  };
  return h(
    'form',
    {
      class: 'card',
      id: 'create-rule',
      onsubmit: (ev) => {
        ev.preventDefault();
        create().catch(ctx.flash);
      },
    },
    h('h2', {}, 'Add an alert rule'),
    h(
      'div',
      { class: 'fields' },
      field('Name', name),
      field('Severity', severity),
      field('Event types', types, 'comma-separated globs'),
      field('Object kinds', kinds),
    ),
    h('p', { class: 'muted' }, 'A match raises an alert.raised event (and reaches syslog targets).'),
    guarded(
      h('button', { type: 'submit', class: 'primary' }, 'Add rule'),
      ctx.access.reason('createAlertRule'),
    ),
  );
}
