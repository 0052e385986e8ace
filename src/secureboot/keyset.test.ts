// Key sets: validation of sets given as data, their encoding into signature lists, the
// Microsoft set (the template as is), and importing the keys of an existing store.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isHypersealError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { createCertificateAuthority } from '../pki/index.js';
import { decodeSignatureLists } from './esl.js';
import { EfiGuids, parseGuid } from './guid.js';
import type { CustomKeySet, GeneratedKeySet } from './keyset.js';
import {
  buildVarsForKeySet,
  generateKeySet,
  keySetFromVarStore,
  keySetVariables,
  MICROSOFT_KEY_SET,
  ovmfRequirementFor,
  validateKeySet,
  varsForKeySet,
} from './keyset.js';
import { readSecureBootState } from './varstore.js';

const BLANK = '/usr/share/OVMF/OVMF_VARS_4M.fd';
const MS = '/usr/share/OVMF/OVMF_VARS_4M.ms.fd';
const OWNER = parseGuid('e75d272b-d287-4272-b356-0520fda91ef0');
const HASH = 'ab'.repeat(32);
const is = (code: ErrorCode) => (err: unknown) => isHypersealError(err, code);
const invalidKeySet = is('HS_ERR_SECUREBOOT_INVALID_KEYSET');

describe('key sets', () => {
  let keys: GeneratedKeySet;
  let ecCertPem: string;
  let dir: string;
  before(async () => {
    keys = await generateKeySet({ name: 'org-keys', commonNamePrefix: 'Example Org', owner: OWNER });
    ecCertPem = (await createCertificateAuthority({ commonName: 'EC CA' })).certPem;
    dir = mkdtempSync(join(tmpdir(), 'hs-keyset-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  void test('generateKeySet: RSA PK/KEK/db with the given owner and names', () => {
    assert.equal(keys.keySet.kind, 'custom');
    assert.equal(keys.keySet.name, 'org-keys');
    assert.equal(keys.keySet.pk.owner, OWNER);
    assert.equal(keys.keySet.kek.length, 1);
    assert.equal(keys.keySet.db.length, 1);
    assert.deepEqual(keys.keySet.dbx, []);
    assert.match(keys.pk.keyPem, /BEGIN PRIVATE KEY/);
  });

  void test('validateKeySet accepts the Microsoft set and well-formed custom sets', () => {
    assert.equal(validateKeySet({ kind: 'microsoft' }), MICROSOFT_KEY_SET);
    const roundTrip = validateKeySet(JSON.parse(JSON.stringify(keys.keySet)));
    assert.deepEqual(roundTrip, keys.keySet);
    const upper = validateKeySet({
      ...keys.keySet,
      db: [
        ...keys.keySet.db,
        { type: 'sha256', sha256: HASH.toUpperCase(), owner: `{${OWNER.toUpperCase()}}` },
      ],
    }) as CustomKeySet;
    assert.deepEqual(upper.db[1], { type: 'sha256', sha256: HASH, owner: OWNER });
  });

  void test('validateKeySet refuses malformed sets with HS_ERR_SECUREBOOT_INVALID_KEYSET', () => {
    const base = keys.keySet;
    const cases: [string, unknown][] = [
      ['not an object', 'microsoft'],
      ['unknown kind', { kind: 'vendor' }],
      ['name "microsoft" for a custom set', { ...base, name: 'microsoft' }],
      ['name with a slash', { ...base, name: 'a/b' }],
      ['EC platform key', { ...base, pk: { type: 'x509', certPem: ecCertPem, owner: OWNER } }],
      ['EC KEK', { ...base, kek: [{ type: 'x509', certPem: ecCertPem, owner: OWNER }] }],
      ['PK as a hash', { ...base, pk: { type: 'sha256', sha256: HASH, owner: OWNER } }],
      ['no KEK', { ...base, kek: [] }],
      ['no db', { ...base, db: [] }],
      ['bad owner', { ...base, db: [{ ...base.db[0], owner: 'me' }] }],
      ['bad hash', { ...base, dbx: [{ type: 'sha256', sha256: 'abc', owner: OWNER }] }],
      ['two PEM blocks', { ...base, pk: { ...base.pk, certPem: base.pk.certPem + base.kek[0]?.certPem } }],
      ['not PEM', { ...base, db: [{ type: 'x509', certPem: 'hello', owner: OWNER }] }],
      [
        'too many entries',
        { ...base, dbx: Array.from({ length: 257 }, () => ({ type: 'sha256', sha256: HASH, owner: OWNER })) },
      ],
    ];
    for (const [what, value] of cases) assert.throws(() => validateKeySet(value), invalidKeySet, what);
    // An EC certificate is fine in db: the firmware only verifies images against it.
    assert.doesNotThrow(() =>
      validateKeySet({ ...base, db: [{ type: 'x509', certPem: ecCertPem, owner: OWNER }] }),
    );
  });

  void test('keySetVariables: one list per certificate, consecutive hashes share a list, no dbx when empty', () => {
    const keySet: CustomKeySet = {
      ...keys.keySet,
      db: [
        keys.keySet.db[0]!,
        { type: 'sha256', sha256: HASH, owner: OWNER },
        { type: 'sha256', sha256: 'cd'.repeat(32), owner: OWNER },
        keys.keySet.kek[0]!,
      ],
    };
    const vars = keySetVariables(keySet);
    const db = decodeSignatureLists(vars.db);
    assert.deepEqual(
      db.map((l) => [l.signatureType, l.signatures.length]),
      [
        [EfiGuids.EFI_CERT_X509_GUID, 1],
        [EfiGuids.EFI_CERT_SHA256_GUID, 2],
        [EfiGuids.EFI_CERT_X509_GUID, 1],
      ],
    );
    assert.equal(vars.dbx, undefined);
    assert.equal(decodeSignatureLists(vars.pk).length, 1);
  });

  void test('ovmfRequirementFor picks the enrolled template for Microsoft, the blank one for custom sets', () => {
    assert.deepEqual(ovmfRequirementFor(MICROSOFT_KEY_SET), { secureBoot: true, enrolledKeys: true });
    assert.deepEqual(ovmfRequirementFor(keys.keySet), { secureBoot: true, enrolledKeys: false });
  });

  describe(
    'with Debian’s templates',
    { skip: (!existsSync(BLANK) || !existsSync(MS)) && 'ovmf is not installed' },
    () => {
      void test('microsoft: the template itself, unchanged; a template without Microsoft keys is refused', async () => {
        const vars = await buildVarsForKeySet(MS, MICROSOFT_KEY_SET);
        assert.ok(vars.equals(readFileSync(MS)));
        await assert.rejects(
          buildVarsForKeySet(BLANK, MICROSOFT_KEY_SET),
          is('HS_ERR_SECUREBOOT_BAD_VARSTORE'),
        );
        const ours = varsForKeySet(readFileSync(BLANK), keys.keySet);
        assert.throws(() => varsForKeySet(ours, MICROSOFT_KEY_SET), /Microsoft certificates/);
      });

      void test('custom: written into the blank template; a missing template file is a clear error', async () => {
        const vars = await buildVarsForKeySet(BLANK, keys.keySet);
        const state = readSecureBootState(vars);
        assert.equal(state.secureBootAtNextBoot, true);
        assert.match(state.db[0]?.type === 'x509' ? state.db[0].subject : '', /CN=Example Org db/);
        await assert.rejects(buildVarsForKeySet(join(dir, 'nope.fd'), keys.keySet), /ENOENT/);
      });

      void test('keySetFromVarStore: Microsoft’s keys as a custom set reproduce the template’s lists byte for byte', () => {
        const msKeys = keySetFromVarStore(readFileSync(MS), 'microsoft-copy');
        assert.equal(msKeys.kek.length, 2);
        assert.equal(msKeys.db.length, 2);
        assert.equal(msKeys.dbx[0]?.type, 'sha256');
        const ours = readSecureBootState(varsForKeySet(readFileSync(BLANK), msKeys));
        const theirs = readSecureBootState(readFileSync(MS));
        for (const v of ['pk', 'kek', 'db', 'dbx'] as const) assert.deepEqual(ours[v], theirs[v], v);
        assert.throws(() => keySetFromVarStore(readFileSync(BLANK), 'empty'), /0 PK entries/);
      });
    },
  );
});
