/**
 * What every REST route declares about access, checked before its handler runs (as Xen
 * Orchestra attaches `permission` to each API method). A test walks all routes with
 * `assertEveryRouteDeclaresPrivilege`, so a route cannot ship without a decision.
 */
import { HypersealError } from '../errors.js';
import type { Privilege } from './privileges.js';
import { isPrivilege } from './privileges.js';
import type { Principal } from './roles.js';
import { requireAll } from './roles.js';

export type HttpMethod = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/**
 * - one privilege or several (all required);
 * - `'authenticated'`: any signed-in user (their own profile, logout);
 * - `'public'`: no credentials at all (login, health, host enrollment, which carries its
 *   own one-time token). Keep this list short; the route test pins it.
 */
export type RoutePrivilege = Privilege | readonly Privilege[] | 'authenticated' | 'public';

/**
 * The event type the route emits, e.g. `'vm.reconfigured'`. A plain string until the
 * event model (src/events/) exports its EventType union; narrow it then.
 */
export type EventTypeName = string;

export interface RoutePolicy {
  readonly method: HttpMethod;
  /** As registered with the router, e.g. `/vms/:id/actions/power-on`. */
  readonly path: string;
  readonly privilege: RoutePrivilege;
  /** Required for methods that change state: every change is an event. */
  readonly event?: EventTypeName;
}

/**
 * A route as the router reports it, before anyone has checked it: plugins in plain JS,
 * `as` casts and spread options can all lose the compile-time guarantee of RoutePolicy.
 */
export interface RouteDeclaration {
  readonly method: string;
  readonly path: string;
  readonly privilege?: unknown;
  readonly event?: unknown;
}

const METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']);
const SAFE_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD']);
const routeKey = (r: { method: string; path: string }): string => `${r.method} ${r.path}`;

export interface RouteCheckOptions {
  /**
   * The routes allowed to be `'public'`, as `"METHOD /path"`. When given, any other
   * public route is a failure: widening the unauthenticated surface is then a reviewed
   * change to the test, not a one-word change in a plugin.
   */
  readonly publicRoutes?: readonly string[];
}

function problemsOf(route: RouteDeclaration, publicRoutes: ReadonlySet<string> | undefined): string[] {
  const problems: string[] = [];
  if (!METHODS.has(route.method)) problems.push(`unknown HTTP method ${JSON.stringify(route.method)}`);
  const p = route.privilege;
  if (p === undefined || p === null) {
    problems.push(`declares no privilege (use a privilege, 'authenticated' or 'public')`);
  } else if (p === 'public') {
    if (publicRoutes !== undefined && !publicRoutes.has(routeKey(route))) {
      problems.push(`is public but not in the list of allowed public routes`);
    }
  } else if (p === 'authenticated') {
    // any signed-in user
  } else if (typeof p === 'string') {
    if (!isPrivilege(p)) problems.push(`names unknown privilege ${JSON.stringify(p)}`);
  } else if (Array.isArray(p)) {
    const list: readonly unknown[] = p;
    // An empty list would be met by every signed-in user: a silent 'authenticated'.
    if (list.length === 0) problems.push(`declares an empty privilege list`);
    for (const x of list) {
      if (typeof x !== 'string' || !isPrivilege(x))
        problems.push(`names unknown privilege ${JSON.stringify(x)}`);
    }
    if (new Set(list).size !== list.length) problems.push(`lists a privilege twice`);
  } else {
    problems.push(`has a privilege that is neither a string nor a list`);
  }
  if (route.event !== undefined && (typeof route.event !== 'string' || !/^\S+$/.test(route.event))) {
    problems.push(`has an invalid event type ${JSON.stringify(route.event)}`);
  }
  if (!SAFE_METHODS.has(route.method) && route.event === undefined) {
    problems.push(`changes state (${route.method}) but declares no event`);
  }
  return problems;
}

/**
 * Throws one HS_ERR_INTERNAL (a programming error, found by the test suite) listing
 * every route that declares no or an invalid privilege, a state-changing route without
 * an event, an unlisted public route, or a method and path registered twice.
 */
export function assertEveryRouteDeclaresPrivilege(
  routes: Iterable<RouteDeclaration>,
  options: RouteCheckOptions = {},
): void {
  const publicRoutes = options.publicRoutes === undefined ? undefined : new Set(options.publicRoutes);
  const seen = new Set<string>();
  const failures: string[] = [];
  let count = 0;
  for (const route of routes) {
    count++;
    const key = routeKey(route);
    if (seen.has(key)) failures.push(`${key} is declared twice`);
    seen.add(key);
    for (const problem of problemsOf(route, publicRoutes)) failures.push(`${key} ${problem}`);
  }
  // Walking nothing proves nothing: the route table was not collected.
  if (count === 0) failures.push('no routes to check');
  if (failures.length === 0) return;
  throw new HypersealError('HS_ERR_INTERNAL', `route policy check failed:\n  ${failures.join('\n  ')}`, {
    failures,
  });
}

/**
 * The check a route's preHandler runs. `principal` is `undefined` for an anonymous
 * request. Throws HS_ERR_AUTH_REQUIRED (401) before HS_ERR_AUTH_FORBIDDEN (403): an
 * anonymous caller learns only that it must sign in, not which privilege is needed.
 */
export function authorizeRoute(
  route: Pick<RoutePolicy, 'privilege'>,
  principal: Principal | undefined,
): void {
  const p = route.privilege;
  if (p === 'public') return;
  if (principal === undefined) {
    throw new HypersealError('HS_ERR_AUTH_REQUIRED', 'authentication required: sign in or send an API token');
  }
  if (p === 'authenticated') return;
  const required: readonly Privilege[] = typeof p === 'string' ? [p] : p;
  // Defence in depth: the route test refuses empty lists; if one slips through, deny.
  if (required.length === 0)
    throw new HypersealError('HS_ERR_INTERNAL', 'route declares an empty privilege list');
  requireAll(principal, required);
}
