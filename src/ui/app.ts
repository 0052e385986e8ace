/**
 * The web UI's entry: the session (log in through the form, the manager sets an HttpOnly
 * cookie), then hash routing between pages. Every call goes through the SDK
 * (`browserClient()`); each page gets a context whose signal aborts when the user leaves
 * the page, ending its live tails and polling.
 */
import { HypersealError } from '../errors.js';
import { browserClient } from '../sdk/browser.js';
import type { Hyperseal } from '../sdk/hyperseal.js';
import { Access } from './access.js';
import { alertsPage, eventsPage, tasksPage } from './activity.js';
import { keyProvidersPage, policiesPage } from './crypto.js';
import type { Child, UiElement } from './dom.js';
import { byId, field, h, win } from './dom.js';
import { errorText } from './format.js';
import { hostsPage, vmsPage } from './inventory.js';
import { vmPage } from './vm.js';

export interface PageContext {
  api: Hyperseal;
  access: Access;
  /** Aborted when the user navigates away. */
  signal: AbortSignal;
  /** Replaces the page's content (ignored once the page was left). */
  show(...nodes: Child[]): void;
  /** Reports an error (or a success message) at the top of the page. */
  flash(what: unknown): void;
  /** Runs fn every ms while the page is shown. */
  every(ms: number, fn: () => Promise<void>): void;
  /** Renders the current route again. */
  refresh(): void;
}

type Page = (ctx: PageContext, ...params: string[]) => Promise<void>;

const ROUTES: readonly (readonly [RegExp, Page])[] = [
  [/^\/vms$/, vmsPage],
  [/^\/vms\/([^/]+)$/, vmPage],
  [/^\/hosts$/, hostsPage],
  [/^\/events$/, eventsPage],
  [/^\/tasks$/, tasksPage],
  [/^\/key-providers$/, keyProvidersPage],
  [/^\/policies$/, policiesPage],
  [/^\/alerts$/, alertsPage],
];

const api = browserClient();
let access: Access | undefined;
let current: AbortController | undefined;

function flash(what: unknown): void {
  const box = byId('flash');
  const ok = typeof what === 'string';
  box.replaceChildren(h('p', { class: ok ? 'ok' : 'error' }, ok ? what : errorText(what)));
}

async function route(): Promise<void> {
  current?.abort();
  const controller = new AbortController();
  current = controller;
  const main = byId('main');
  if (access === undefined) {
    loginForm(main);
    return;
  }
  const path = win().location.hash.replace(/^#/, '') || '/vms';
  const match = ROUTES.map(([re, page]) => [re.exec(path), page] as const).find(([m]) => m !== null);
  const section = `#/${path.split('/')[1] ?? ''}`;
  for (const a of byId('nav').querySelectorAll('a'))
    a.className = a.getAttribute('href') === section ? 'active' : '';
  const ctx: PageContext = {
    api,
    access,
    signal: controller.signal,
    show: (...nodes) => {
      if (!controller.signal.aborted) main.replaceChildren(...nodes.filter(isNode));
    },
    flash,
    every: (ms, fn) => {
      let busy = false;
      const timer = setInterval(() => {
        if (busy) return;
        busy = true;
        fn()
          .catch(() => undefined)
          .finally(() => (busy = false));
      }, ms);
      controller.signal.addEventListener('abort', () => clearInterval(timer));
    },
    refresh: () => void route(),
  };
  if (match === undefined) {
    ctx.show(h('h1', {}, 'Not found'), h('p', {}, `No page ${path}.`));
    return;
  }
  const [m, page] = match;
  try {
    await page(ctx, ...(m ?? []).slice(1).map(decodeURIComponent));
  } catch (err) {
    if (controller.signal.aborted) return;
    if (err instanceof HypersealError && err.code === 'HS_ERR_AUTH_REQUIRED') {
      // The session ended (expired, or the user was disabled): sign in again.
      access = undefined;
      void route();
      return;
    }
    ctx.show(h('h1', {}, 'Error'), h('p', { class: 'error' }, errorText(err)));
  }
}

function isNode(n: Child): n is UiElement | string {
  return n !== null && n !== undefined && n !== false && typeof n !== 'number';
}

function loginForm(main: UiElement): void {
  byId('nav').hidden = true;
  byId('who').replaceChildren();
  const user = h('input', { name: 'user', id: 'login-user', autocomplete: 'username', required: true });
  const password = h('input', {
    name: 'password',
    id: 'login-password',
    type: 'password',
    autocomplete: 'current-password',
    required: true,
  });
  const submit = async (): Promise<void> => {
    try {
      await api.login({ user: user.value, password: password.value });
      win().localStorage.setItem(SIGNED_IN, '1');
      password.value = '';
      byId('flash').replaceChildren();
      await start();
    } catch (err) {
      flash(err);
    }
  };
  main.replaceChildren(
    h(
      'form',
      {
        class: 'login card',
        id: 'login',
        onsubmit: (ev) => {
          ev.preventDefault();
          void submit();
        },
      },
      h('h1', {}, 'Sign in to Hyperseal'),
      field('User', user),
      field('Password', password),
      h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
    ),
  );
  user.focus();
}

/**
 * This browser signed in before (a flag, not a secret: the session is an HttpOnly cookie).
 * Without it the page shows the login form without asking the server, so merely opening
 * the page does not leave an `access.denied` event in the audit trail.
 */
const SIGNED_IN = 'hyperseal.signedIn';

/** Reads the session; without one, shows the login form. */
async function start(): Promise<void> {
  access = undefined;
  if (win().localStorage.getItem(SIGNED_IN) !== null) {
    try {
      const s = await api.getSession();
      access = new Access(s.user, s.privileges);
      byId('nav').hidden = false;
      byId('who').replaceChildren(
        h('span', { id: 'user-name' }, s.user),
        ' ',
        h('button', { id: 'logout', type: 'button', onclick: () => void logout() }, 'Sign out'),
      );
    } catch (err) {
      if (err instanceof HypersealError && err.code === 'HS_ERR_AUTH_REQUIRED')
        win().localStorage.removeItem(SIGNED_IN);
      else flash(err);
    }
  }
  await route();
}

/** Ends the session on the server (which clears the cookie), then shows the login form. */
async function logout(): Promise<void> {
  try {
    await api.logout();
  } catch (err) {
    flash(err);
  }
  win().localStorage.removeItem(SIGNED_IN);
  await start();
}

win().addEventListener('hashchange', () => {
  byId('flash').replaceChildren();
  void route();
});
void start();
