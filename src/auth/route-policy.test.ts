import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isHypersealError } from '../errors.js';
import { Priv } from './privileges.js';
import type { RouteDeclaration, RoutePolicy } from './route-policy.js';
import { assertEveryRouteDeclaresPrivilege, authorizeRoute } from './route-policy.js';
import type { Principal } from './roles.js';
import { AUDITOR, NO_CRYPTOGRAPHY_ADMINISTRATOR, effectivePrivileges } from './roles.js';

const GOOD: readonly RoutePolicy[] = [
  { method: 'POST', path: '/session', privilege: 'public', event: 'user.loggedIn' },
  { method: 'GET', path: '/me', privilege: 'authenticated' },
  { method: 'GET', path: '/vms', privilege: Priv['vm.read'] },
  { method: 'POST', path: '/vms/:id/actions/power-on', privilege: Priv['vm.power'], event: 'vm.poweredOn' },
  {
    method: 'POST',
    path: '/vms/:id/actions/encrypt',
    privilege: [Priv['vm.reconfigure'], Priv['crypto.encrypt']],
    event: 'vm.encrypted',
  },
];
const PUBLIC = ['POST /session'];

/** The list of failures the checker reports for `routes`, or [] when it passes. */
function failuresOf(routes: readonly RouteDeclaration[], publicRoutes?: readonly string[]): string[] {
  try {
    assertEveryRouteDeclaresPrivilege(routes, publicRoutes === undefined ? {} : { publicRoutes });
    return [];
  } catch (err) {
    assert.ok(isHypersealError(err, 'HS_ERR_INTERNAL'), String(err));
    const failures = err.details?.['failures'];
    assert.ok(Array.isArray(failures));
    return failures.map(String);
  }
}

void test('a route table where every route declares a privilege passes', () => {
  assert.deepEqual(failuresOf(GOOD, PUBLIC), []);
});

void test('each kind of bad declaration is reported, naming the route, all at once', () => {
  const bad: RouteDeclaration[] = [
    ...GOOD,
    { method: 'GET', path: '/hosts' },
    { method: 'GET', path: '/datastores', privilege: 'datastore.reed' },
    { method: 'GET', path: '/networks', privilege: [] },
    { method: 'GET', path: '/tasks', privilege: ['task.read', 'task.read'] },
    { method: 'GET', path: '/users', privilege: 42 },
    { method: 'DELETE', path: '/vms/:id', privilege: 'vm.delete' },
    { method: 'GET', path: '/health', privilege: 'public' },
    { method: 'GET', path: '/vms', privilege: 'vm.read' },
    { method: 'FETCH', path: '/x', privilege: 'vm.read' },
    { method: 'GET', path: '/events', privilege: 'event.read', event: 'has space' },
  ];
  assert.deepEqual(failuresOf(bad, PUBLIC), [
    `GET /hosts declares no privilege (use a privilege, 'authenticated' or 'public')`,
    'GET /datastores names unknown privilege "datastore.reed"',
    'GET /networks declares an empty privilege list',
    'GET /tasks lists a privilege twice',
    'GET /users has a privilege that is neither a string nor a list',
    'DELETE /vms/:id changes state (DELETE) but declares no event',
    'GET /health is public but not in the list of allowed public routes',
    'GET /vms is declared twice',
    'FETCH /x unknown HTTP method "FETCH"',
    'FETCH /x changes state (FETCH) but declares no event',
    'GET /events has an invalid event type "has space"',
  ]);
  // Without an allow-list, public routes are not restricted.
  assert.deepEqual(failuresOf([{ method: 'GET', path: '/health', privilege: 'public' }]), []);
});

void test('an empty route table fails: walking nothing proves nothing', () => {
  assert.deepEqual(failuresOf([]), ['no routes to check']);
});

const ops: Principal = {
  name: 'ops@local',
  privileges: effectivePrivileges([NO_CRYPTOGRAPHY_ADMINISTRATOR]),
};
const auditor: Principal = { name: 'audit@local', privileges: effectivePrivileges([AUDITOR]) };
const [login, me, listVms, powerOn, encrypt] = GOOD;

void test('authorizeRoute: public for anyone, authenticated for any user, privileges for holders', () => {
  assert.ok(login && me && listVms && powerOn && encrypt);
  assert.doesNotThrow(() => authorizeRoute(login, undefined));
  assert.doesNotThrow(() => authorizeRoute(me, auditor));
  assert.doesNotThrow(() => authorizeRoute(powerOn, ops));
  assert.throws(() => authorizeRoute(me, undefined), { code: 'HS_ERR_AUTH_REQUIRED' });
  // Anonymous gets 401 (sign in), not 403 naming the privilege.
  assert.throws(
    () => authorizeRoute(powerOn, undefined),
    (err: unknown) => {
      assert.ok(isHypersealError(err, 'HS_ERR_AUTH_REQUIRED'));
      assert.equal(err.status, 401);
      assert.doesNotMatch(err.message, /vm\.power/);
      return true;
    },
  );
  assert.throws(() => authorizeRoute(powerOn, auditor), {
    code: 'HS_ERR_AUTH_FORBIDDEN',
    message: /vm\.power/,
  });
  // A list needs all: ops holds vm.reconfigure but not crypto.encrypt.
  assert.throws(
    () => authorizeRoute(encrypt, ops),
    (err: unknown) => {
      assert.ok(isHypersealError(err, 'HS_ERR_AUTH_FORBIDDEN'));
      assert.deepEqual(err.details?.['missing'], ['crypto.encrypt']);
      return true;
    },
  );
  // An empty list that slipped past the route test denies instead of allowing.
  assert.throws(() => authorizeRoute({ privilege: [] }, ops), { code: 'HS_ERR_INTERNAL' });
});

// Compile-time guarantees; `tsc` fails if any of these lines stops being an error.
export const _typeChecks: readonly RoutePolicy[] = [
  // @ts-expect-error a route must declare its privilege
  { method: 'GET', path: '/a' },
  // @ts-expect-error a privilege must come from the catalogue, not a bare string
  { method: 'GET', path: '/b', privilege: 'vm.read' },
  // @ts-expect-error not an access level
  { method: 'GET', path: '/c', privilege: 'anyone' },
];
