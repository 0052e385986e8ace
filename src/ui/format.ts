/** Small renderers shared by the pages: badges, times, values, from → to diffs, task progress. */
import { HypersealError } from '../errors.js';
import type { Change, Event, Task, Vm } from '../sdk/api.gen.js';
import type { UiElement } from './dom.js';
import { h } from './dom.js';

export function badge(text: string, kind: string, title?: string): UiElement {
  return h('span', { class: `badge badge-${kind}`, title }, text);
}

export function vmBadges(vm: Vm): UiElement {
  const c = vm.config;
  return h(
    'span',
    { class: 'badges' },
    badge(vm.state, `state-${vm.state}`),
    vm.encryption ? badge('encrypted', 'encrypted', `key ${vm.encryption.keyId}`) : null,
    vm.locked ? badge('locked', 'locked', vm.lockedReason ?? undefined) : null,
    c.secureBoot ? badge('secure boot', 'secure-boot') : null,
    c.vtpm === true ? badge('vTPM', 'vtpm') : null,
    badge(`migration: ${c.migrationEncryption ?? 'opportunistic'}`, 'migration'),
    vm.simulated
      ? badge('simulated', 'simulated', 'the host runs the sim driver: nothing really runs')
      : null,
  );
}

export function time(ms: number | string | null): string {
  if (ms === null) return '—';
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? String(ms) : d.toLocaleString();
}

/** A change's value as text (strings as they are, the rest as JSON). */
export function valueText(v: unknown): string {
  if (typeof v === 'string') return v;
  if (v === undefined) return '(none)';
  return JSON.stringify(v);
}

/** One change: the old value struck through (red), the new one inserted (green). */
export function changeView(c: Change): UiElement {
  const absent = (v: unknown): boolean => v === null || v === undefined;
  return h(
    'li',
    { class: 'change' },
    h('code', { class: 'path' }, c.path),
    ' ',
    absent(c.from) ? null : h('del', { class: 'from' }, valueText(c.from)),
    absent(c.from) || absent(c.to) ? null : h('span', { class: 'arrow' }, ' → '),
    absent(c.to) ? null : h('ins', { class: 'to' }, valueText(c.to)),
  );
}

export function eventView(e: Event): UiElement {
  const object =
    e.object.kind === 'vm'
      ? h('a', { href: `#/vms/${encodeURIComponent(e.object.id)}` }, e.object.name)
      : h('span', {}, `${e.object.kind} ${e.object.name}`);
  return h(
    'li',
    { class: `event severity-${e.severity}`, 'data-type': e.type, 'data-seq': e.seq },
    h(
      'div',
      { class: 'event-head' },
      badge(e.severity, `severity-${e.severity}`),
      h('code', { class: 'type' }, e.type),
      object,
      h('span', { class: 'muted' }, `${e.user} · ${time(e.time)}`),
      e.result === 'success' ? null : badge(e.result, 'failure'),
    ),
    h('div', { class: 'message' }, e.message),
    e.changes.length ? h('ul', { class: 'changes' }, ...e.changes.map(changeView)) : null,
  );
}

function progressBar(percent: number): UiElement {
  const bar = h('progress', { max: 100 }, `${percent}%`);
  bar.setAttribute('value', String(percent));
  return bar;
}

/** A task's progress bar and state; `data-state` lets a reader (or a test) wait for the end. */
export function taskView(t: Task, label?: string): UiElement {
  const done = t.state === 'succeeded' || t.state === 'failed';
  const percent = t.state === 'succeeded' ? 100 : Math.max(0, Math.min(100, Math.round(t.progress)));
  return h(
    'div',
    { class: `task task-${t.state}`, 'data-state': t.state, 'data-task': t.id },
    h('span', { class: 'task-label' }, label ?? `${t.kind} ${t.objectKind} ${t.objectId}`),
    progressBar(percent),
    h('span', { class: 'task-state' }, done ? t.state : `${t.state} ${percent}%`),
    t.error ? h('span', { class: 'error' }, `${t.error.code}: ${t.error.message}`) : null,
  );
}

export function errorText(err: unknown): string {
  if (err instanceof HypersealError) return `${err.code}: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}
