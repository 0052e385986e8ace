// The privilege catalogue and the built-in roles, checked against tables written out by
// hand from docs/DESIGN.md ("Privileges") rather than derived from the implementation:
// a privilege moved into or out of a role must show up here as a one-cell diff.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isHypersealError } from '../errors.js';
import type { Privilege } from './privileges.js';
import { ALL_PRIVILEGES, CRYPTO_PRIVILEGES, Priv, parsePrivilege } from './privileges.js';
import type { Principal, Role } from './roles.js';
import {
  ADMINISTRATOR,
  AUDITOR,
  BUILT_IN_ROLES,
  NO_CRYPTOGRAPHY_ADMINISTRATOR,
  READ_ONLY,
  can,
  defineCustomRole,
  effectivePrivileges,
  requireAll,
  requireCanGrant,
} from './roles.js';

/** DESIGN.md's crypto privileges, verbatim and in its order. */
const DESIGN_CRYPTO = [
  'crypto.encrypt',
  'crypto.encryptNew',
  'crypto.decrypt',
  'crypto.clone',
  'crypto.migrate',
  'crypto.recrypt',
  'crypto.addDisk',
  'crypto.manageKeys',
  'crypto.manageKeyServers',
  'crypto.manageEncryptionPolicy',
  'crypto.registerHost',
  'crypto.registerVm',
  'crypto.access',
];

// Columns: Administrator, No Cryptography Administrator, Read-only, Auditor.
// Y = allowed, - = denied. Every privilege in the catalogue has a row (checked below).
const MATRIX = `
host.read                       Y Y Y -
host.manage                     Y Y - -
host.enroll                     Y Y - -
datastore.read                  Y Y Y -
datastore.manage                Y Y - -
network.read                    Y Y Y -
network.manage                  Y Y - -
vm.read                         Y Y Y -
vm.create                       Y Y - -
vm.delete                       Y Y - -
vm.power                        Y Y - -
vm.reconfigure                  Y Y - -
vm.console                      Y Y - -
vm.migrate                      Y Y - -
task.read                       Y Y Y -
task.cancel                     Y Y - -
event.read                      Y Y Y Y
event.export                    Y Y - Y
alert.manage                    Y Y - -
syslog.manage                   Y Y - -
user.read                       Y Y Y -
user.manage                     Y Y - -
role.manage                     Y Y - -
secureboot.manage               Y Y - -
bundle.manage                   Y Y - -
crypto.encrypt                  Y - - -
crypto.encryptNew               Y - - -
crypto.decrypt                  Y - - -
crypto.clone                    Y - - -
crypto.migrate                  Y - - -
crypto.recrypt                  Y - - -
crypto.addDisk                  Y - - -
crypto.manageKeys               Y - - -
crypto.manageKeyServers         Y - - -
crypto.manageEncryptionPolicy   Y - - -
crypto.registerHost             Y - - -
crypto.registerVm               Y - - -
crypto.access                   Y - - -
`;
const COLUMNS: readonly Role[] = [ADMINISTRATOR, NO_CRYPTOGRAPHY_ADMINISTRATOR, READ_ONLY, AUDITOR];

interface MatrixRow {
  privilege: string;
  allowed: boolean[];
}

const matrixRows: MatrixRow[] = MATRIX.trim()
  .split('\n')
  .map((line) => {
    const [privilege, ...cells] = line.trim().split(/\s+/);
    assert.ok(privilege !== undefined && cells.length === COLUMNS.length, `bad matrix line: ${line}`);
    return { privilege, allowed: cells.map((c) => c === 'Y') };
  });

const principal = (name: string, ...roles: Role[]): Principal => ({
  name,
  privileges: effectivePrivileges(roles),
});

void test('the catalogue holds exactly the privileges of the matrix, crypto ones verbatim from DESIGN.md', () => {
  assert.deepEqual([...ALL_PRIVILEGES].sort(), matrixRows.map((r) => r.privilege).sort());
  assert.equal(ALL_PRIVILEGES.length, 38);
  assert.deepEqual([...CRYPTO_PRIVILEGES], DESIGN_CRYPTO);
});

void test('role matrix: each built-in role allows exactly what the table says', () => {
  const wrong: string[] = [];
  for (const row of matrixRows) {
    const p = parsePrivilege(row.privilege);
    COLUMNS.forEach((role, i) => {
      const got = can(effectivePrivileges([role]), p);
      if (got !== row.allowed[i]) wrong.push(`${role.name} ${got ? 'allows' : 'denies'} ${row.privilege}`);
    });
  }
  assert.deepEqual(wrong, []);
});

void test('No Cryptography Administrator powers and reconfigures VMs but holds no crypto.* privilege', () => {
  const ops = principal('ops@local', NO_CRYPTOGRAPHY_ADMINISTRATOR);
  assert.equal(can(ops.privileges, Priv['vm.power']), true);
  assert.equal(can(ops.privileges, Priv['vm.reconfigure']), true);
  assert.equal(can(ops.privileges, [Priv['vm.power'], Priv['vm.reconfigure']]), true);
  for (const name of DESIGN_CRYPTO) {
    assert.equal(can(ops.privileges, parsePrivilege(name)), false, name);
  }
  assert.equal(
    [...ops.privileges].some((p) => p.startsWith('crypto.')),
    false,
  );
  // Everything else: it is an administrator in all other respects.
  assert.equal(ops.privileges.size, 38 - 13);
});

void test('Auditor can only read and export events', () => {
  assert.deepEqual([...AUDITOR.privileges], ['event.read', 'event.export']);
  const auditor = principal('audit@local', AUDITOR);
  assert.doesNotThrow(() => requireAll(auditor, [Priv['event.read'], Priv['event.export']]));
  for (const p of ALL_PRIVILEGES.filter((x) => !x.startsWith('event.'))) {
    assert.equal(can(auditor.privileges, p), false, p);
  }
});

void test('Read-only does not include vm.console (a serial log shows what encryption hides)', () => {
  assert.equal(can(effectivePrivileges([READ_ONLY]), Priv['vm.console']), false);
  assert.ok(READ_ONLY.privileges.every((p) => p.endsWith('.read')));
});

void test('effective privileges are the union of the roles', () => {
  const both = effectivePrivileges([AUDITOR, READ_ONLY]);
  assert.equal(can(both, Priv['event.export']), true); // from Auditor
  assert.equal(can(both, Priv['vm.read']), true); // from Read-only
  assert.equal(can(both, Priv['vm.power']), false);
  assert.equal(effectivePrivileges([]).size, 0);
  // A list requires all of its privileges, not any.
  assert.equal(can(both, [Priv['vm.read'], Priv['vm.power']]), false);
});

void test('built-in roles are frozen and named as in DESIGN.md', () => {
  assert.deepEqual(
    BUILT_IN_ROLES.map((r) => r.name),
    ['Administrator', 'No Cryptography Administrator', 'Read-only', 'Auditor'],
  );
  for (const r of BUILT_IN_ROLES) {
    assert.equal(r.builtIn, true);
    assert.ok(Object.isFrozen(r) && Object.isFrozen(r.privileges), r.name);
  }
});

void test('requireAll throws 403 HS_ERR_AUTH_FORBIDDEN naming each missing privilege', () => {
  const ops = principal('ops@local', NO_CRYPTOGRAPHY_ADMINISTRATOR);
  assert.throws(
    () => requireAll(ops, [Priv['vm.reconfigure'], Priv['crypto.encrypt'], Priv['crypto.manageKeys']]),
    (err: unknown) => {
      assert.ok(isHypersealError(err, 'HS_ERR_AUTH_FORBIDDEN'));
      assert.equal(err.status, 403);
      assert.match(err.message, /ops@local/);
      assert.match(err.message, /crypto\.encrypt\b/);
      assert.match(err.message, /crypto\.manageKeys\b/);
      assert.doesNotMatch(err.message, /vm\.reconfigure/, 'a held privilege is not reported missing');
      assert.deepEqual(err.details?.['missing'], ['crypto.encrypt', 'crypto.manageKeys']);
      return true;
    },
  );
  assert.doesNotThrow(() => requireAll(principal('root', ADMINISTRATOR), ALL_PRIVILEGES));
});

void test('a custom role with an unknown privilege is refused, naming every unknown one', () => {
  assert.throws(
    () =>
      defineCustomRole({
        name: 'Operators',
        privileges: ['vm.power', 'vm.teleport', 'crypto.encryptnew', 'crypto.*'],
      }),
    (err: unknown) => {
      assert.ok(isHypersealError(err, 'HS_ERR_AUTH_UNKNOWN_PRIVILEGE'));
      assert.equal(err.status, 400);
      assert.match(err.message, /"vm\.teleport"/);
      assert.match(err.message, /"crypto\.\*"/, 'no wildcards: a role lists privileges explicitly');
      assert.match(err.message, /did you mean crypto\.encryptNew\?/);
      assert.doesNotMatch(err.message, /"vm\.power"/);
      return true;
    },
  );
  assert.throws(() => parsePrivilege('VM.POWER'), { code: 'HS_ERR_AUTH_UNKNOWN_PRIVILEGE' });
});

void test('a valid custom role keeps its privileges once each, in catalogue order', () => {
  const r = defineCustomRole({
    name: ' VM operators ',
    description: 'Power only',
    privileges: ['vm.power', 'vm.read', 'vm.power'],
  });
  assert.equal(r.name, 'VM operators');
  assert.equal(r.builtIn, false);
  assert.deepEqual([...r.privileges], ['vm.read', 'vm.power']);
  assert.equal(can(effectivePrivileges([r]), Priv['vm.power']), true);
  assert.equal(can(effectivePrivileges([r]), Priv['vm.delete']), false);
});

void test('custom role names: no built-in name in any case, no look-alikes', () => {
  for (const name of ['Administrator', 'administrator', 'AUDITOR', 'no cryptography administrator']) {
    assert.throws(
      () => defineCustomRole({ name, privileges: [] }),
      { code: 'HS_ERR_AUTH_BUILT_IN_ROLE' },
      name,
    );
  }
  // Cyrillic 'А', a double space, an empty name, a leading dot, too long.
  for (const name of [
    '\u0410dministrator',
    'No Cryptography  Administrator',
    '',
    '  ',
    '.ops',
    'x'.repeat(65),
  ]) {
    assert.throws(
      () => defineCustomRole({ name, privileges: [] }),
      { code: 'HS_ERR_INVALID_ARGUMENT' },
      JSON.stringify(name),
    );
  }
  assert.equal(defineCustomRole({ name: 'x'.repeat(64), privileges: [] }).name.length, 64);
});

void test('nobody grants what they do not hold: No Cryptography Administrator cannot make an Administrator', () => {
  const ops = principal('ops@local', NO_CRYPTOGRAPHY_ADMINISTRATOR);
  assert.throws(
    () => requireCanGrant(ops, ADMINISTRATOR.privileges, 'grant the role Administrator'),
    (err: unknown) => {
      assert.ok(isHypersealError(err, 'HS_ERR_AUTH_FORBIDDEN'));
      assert.match(err.message, /grant the role Administrator/);
      assert.deepEqual(err.details?.['missing'], DESIGN_CRYPTO);
      return true;
    },
  );
  const sneaky = defineCustomRole({ name: 'Helpers', privileges: ['vm.read', 'crypto.access'] });
  assert.throws(() => requireCanGrant(ops, sneaky.privileges, 'create the role Helpers'), {
    code: 'HS_ERR_AUTH_FORBIDDEN',
  });
  assert.doesNotThrow(() => requireCanGrant(ops, READ_ONLY.privileges, 'grant the role Read-only'));
  const root = principal('root@local', ADMINISTRATOR);
  assert.doesNotThrow(() => requireCanGrant(root, ADMINISTRATOR.privileges, 'grant the role Administrator'));
});

// Compile-time guarantees; `tsc` fails if any of these lines stops being an error.
export function _typeChecks(): Privilege[] {
  // @ts-expect-error a bare string is not a Privilege: it must come from Priv or parsePrivilege
  const fromString: Privilege = 'vm.power';
  // @ts-expect-error not in the catalogue
  const unknown = Priv['vm.teleport'];
  return [fromString, unknown];
}
