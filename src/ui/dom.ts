/**
 * The slice of the DOM the web UI uses, and `h()`, its one way to build elements.
 *
 * The project compiles with Node's types only (adding the DOM library to the whole build
 * clashes with Node's crypto and Buffer types), so the few DOM members used are declared
 * here. `h()` sets text with `append(string)` — a text node, never parsed as HTML — and
 * there is no innerHTML anywhere in the UI: user data (VM names, event messages, alert
 * rule names) is always shown as text.
 */

export interface UiEvent {
  preventDefault(): void;
  readonly target: unknown;
}

/** An element; input/select/progress/dialog members are on it too (used where they apply). */
export interface UiElement {
  textContent: string | null;
  title: string;
  value: string;
  checked: boolean;
  disabled: boolean;
  hidden: boolean;
  className: string;
  readonly dataset: Record<string, string | undefined>;
  append(...nodes: (UiElement | string)[]): void;
  prepend(...nodes: (UiElement | string)[]): void;
  replaceChildren(...nodes: (UiElement | string)[]): void;
  setAttribute(name: string, value: string): void;
  removeAttribute(name: string): void;
  addEventListener(type: string, listener: (ev: UiEvent) => void): void;
  querySelector(selectors: string): UiElement | null;
  querySelectorAll(selectors: string): Iterable<UiElement>;
  getAttribute(name: string): string | null;
  remove(): void;
  replaceWith(...nodes: UiElement[]): void;
  focus(): void;
  readonly childElementCount: number;
  readonly lastElementChild: UiElement | null;
  /** <dialog> */
  showModal(): void;
  close(): void;
}

interface UiDocument {
  createElement(tag: string): UiElement;
  getElementById(id: string): UiElement | null;
}

interface UiWindow {
  location: { hash: string };
  addEventListener(type: string, listener: () => void): void;
  /** Holds one non-secret flag: whether this browser signed in (the session itself is an HttpOnly cookie). */
  localStorage: {
    getItem(key: string): string | null;
    setItem(key: string, value: string): void;
    removeItem(key: string): void;
  };
}

const g = globalThis as unknown as { document: UiDocument; window: UiWindow };

export const win = (): UiWindow => g.window;

/** An element of the page's static frame (index.html). */
export function byId(id: string): UiElement {
  const el = g.document.getElementById(id);
  if (el === null) throw new Error(`index.html has no #${id}`);
  return el;
}

export type Child = UiElement | string | number | null | undefined | false;
type Handler = (ev: UiEvent) => void;
/**
 * Attributes (strings), or properties (`value`, `checked`, `disabled`, `hidden`: set after
 * the children, so a <select> gets its value once its options exist), or listeners
 * (`onclick`, `onchange`, `onsubmit`…).
 */
export type Props = Record<string, string | number | boolean | Handler | undefined>;

const PROPERTIES = new Set(['value', 'checked', 'disabled', 'hidden']);

export function h(tag: string, props: Props = {}, ...children: Child[]): UiElement {
  const el = g.document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || PROPERTIES.has(k)) continue;
    if (typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (typeof v === 'boolean') {
      if (v) el.setAttribute(k, '');
    } else el.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === 'number' ? String(c) : c);
  }
  if (props['value'] !== undefined) el.value = String(props['value']);
  if (props['checked'] !== undefined) el.checked = props['checked'] === true;
  if (props['disabled'] !== undefined) el.disabled = props['disabled'] === true;
  if (props['hidden'] !== undefined) el.hidden = props['hidden'] === true;
  return el;
}

/** A labelled form field. */
export function field(label: string, control: UiElement, hint?: string): UiElement {
  return h('label', { class: 'field' }, h('span', {}, label), control, hint ? h('small', {}, hint) : null);
}

/** `<select>` with value/label options. */
export function select(props: Props, options: readonly (readonly [string, string])[]): UiElement {
  return h('select', props, ...options.map(([value, label]) => h('option', { value }, label)));
}

/** A table: headers and rows of cells. */
export function table(headers: readonly string[], rows: readonly UiElement[], empty = 'None.'): UiElement {
  if (rows.length === 0) return h('p', { class: 'muted' }, empty);
  return h(
    'table',
    {},
    h('thead', {}, h('tr', {}, ...headers.map((x) => h('th', {}, x)))),
    h('tbody', {}, ...rows),
  );
}

export function row(...cells: Child[]): UiElement {
  return h('tr', {}, ...cells.map((c) => h('td', {}, c)));
}

/**
 * A control that may be refused: with a reason (a missing privilege, the VM's state) it
 * is disabled, says why in its title, and shows the reason beside it. `shown` is what goes
 * on the page when it is not the control itself (a label around a checkbox).
 */
export function guarded(control: UiElement, reason: string | null, shown: UiElement = control): UiElement {
  if (reason === null) return shown;
  control.disabled = true;
  control.title = reason;
  return h('span', { class: 'guarded' }, shown, h('span', { class: 'reason' }, reason));
}
