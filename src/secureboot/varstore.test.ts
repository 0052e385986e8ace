// The OVMF variable store: parsing Debian's real templates (blank, Microsoft, snakeoil),
// writing keys into a blank copy and reading them back, and every refusal: stores that are
// not pristine, not known, or too small for the keys.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { before, describe, test } from 'node:test';
import { isHypersealError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { certificateFingerprint256 } from '../pki/index.js';
import { decodeSignatureLists, encodeSignatureLists, sha256SignatureList } from './esl.js';
import { EfiGuids, guidToBytes, parseGuid } from './guid.js';
import type { GeneratedKeySet } from './keyset.js';
import { generateKeySet, keySetVariables, varsForKeySet } from './keyset.js';
import {
  appendVariables,
  AUTH_VARIABLE_HEADER_BYTES,
  findVariable,
  liveVariables,
  parseVarStore,
  readSecureBootState,
  SECURE_BOOT_KEY_ATTRIBUTES,
  writeSecureBootVariables,
} from './varstore.js';

const BLANK = '/usr/share/OVMF/OVMF_VARS_4M.fd';
const MS = '/usr/share/OVMF/OVMF_VARS_4M.ms.fd';
const SNAKEOIL = '/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd';
const BLANK_2M = '/usr/share/OVMF/OVMF_VARS.fd';
const skip = !existsSync(BLANK) || !existsSync(MS) ? 'ovmf is not installed' : false;
const OWNER = parseGuid('e75d272b-d287-4272-b356-0520fda91ef0');
const is = (code: ErrorCode) => (err: unknown) => isHypersealError(err, code);
/** The empty string's SHA-256: Debian's placeholder dbx entry. */
const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

describe('OVMF variable store', { skip }, () => {
  let blank: Buffer;
  let ms: Buffer;
  let keys: GeneratedKeySet;
  const when = new Date(Date.UTC(2025, 0, 2, 3, 4, 5));
  before(async () => {
    blank = readFileSync(BLANK);
    ms = readFileSync(MS);
    keys = await generateKeySet({ name: 'varstore-test', owner: OWNER });
  });

  void test('the blank 4 MiB template: headers as in qemu-experiments §1.9, no variables, setup mode', () => {
    const s = parseVarStore(blank);
    assert.deepEqual(s.fv, {
      length: 0x84000,
      headerLength: 0x48,
      attributes: 0x4feff,
      revision: 2,
      blockSize: 0x1000,
      numBlocks: 0x84,
    });
    assert.equal(s.storeOffset, 0x48);
    assert.equal(s.storeSize, 0x3ffb8);
    assert.equal(s.storeEnd, 0x40000);
    assert.equal(s.variablesStart, 0x64);
    assert.equal(s.freeOffset, 0x64);
    assert.equal(s.records.length, 0);
    assert.ok(s.freeAreaErased);
    assert.deepEqual(s.ftw, { offset: 0x41000, writeQueueSize: 0xfe0, pendingWrite: false });
    assert.equal(s.maxAuthVariableBytes, 0x8400);
    const state = readSecureBootState(blank);
    assert.equal(state.setupMode, true);
    assert.equal(state.secureBootAtNextBoot, false);
    assert.equal(state.secureBootEnable, undefined);
  });

  void test(
    'the 2 MiB template parses too, with its smaller per-variable limit',
    { skip: !existsSync(BLANK_2M) && 'no OVMF_VARS.fd' },
    () => {
      const s = parseVarStore(readFileSync(BLANK_2M));
      assert.equal(s.storeEnd, 0xe000);
      assert.equal(s.ftw?.offset, 0xf000);
      assert.equal(s.maxAuthVariableBytes, 0x2800);
    },
  );

  void test('the Microsoft template: Debian PK, Debian + Microsoft KEK, Microsoft db, placeholder dbx, SecureBootEnable=1', () => {
    const s = parseVarStore(ms);
    // Debian's build left deleted copies behind (State 0x3C); only live copies count.
    assert.ok(s.records.some((r) => r.status === 'deleted'));
    const live = liveVariables(s);
    assert.equal(
      new Set(live.map((r) => `${r.vendor}:${r.name}`)).size,
      live.length,
      'one live copy per variable',
    );
    const state = readSecureBootState(ms);
    assert.deepEqual(state.problems, []);
    const subjects = (entries: typeof state.pk): string[] =>
      entries.map((e) => (e.type === 'x509' ? e.subject : e.type));
    assert.equal(state.pk.length, 1);
    assert.match(subjects(state.pk)[0] ?? '', /O=Debian, CN=Debian UEFI Secure Boot \(PK\/KEK key\)/);
    assert.equal(state.kek.length, 2);
    assert.ok(subjects(state.kek).some((s) => /CN=Microsoft Corporation KEK CA 2011/.test(s)));
    assert.deepEqual(
      subjects(state.db).map((s) => /CN=([^,]+)$/.exec(s)?.[1]),
      ['Microsoft Windows Production PCA 2011', 'Microsoft Corporation UEFI CA 2011'],
    );
    assert.deepEqual(state.dbx, [{ type: 'sha256', owner: state.dbx[0]?.owner, hash: EMPTY_SHA256 }]);
    assert.equal(state.secureBootEnable, true);
    assert.equal(state.customMode, false);
    assert.equal(state.setupMode, false);
    assert.equal(state.secureBootAtNextBoot, true);
  });

  void test(
    'the snakeoil template holds the SnakeOil test key everywhere',
    { skip: !existsSync(SNAKEOIL) && 'no snakeoil template' },
    () => {
      const state = readSecureBootState(readFileSync(SNAKEOIL));
      for (const list of [state.pk, state.kek, state.db]) {
        assert.equal(list.length, 1);
        assert.match(list[0]?.type === 'x509' ? list[0].subject : '', /O=SnakeOil/);
      }
    },
  );

  void test('writing a key set into the blank template: appended records, readable back, nothing else changed', () => {
    const vars = varsForKeySet(blank, keys.keySet, { timestamp: when });
    assert.equal(vars.length, blank.length);
    assert.ok(blank.equals(readFileSync(BLANK)), 'the template buffer is not modified');
    const s = parseVarStore(vars);
    assert.deepEqual(
      s.records.map((r) => [r.name, r.vendor, r.attributes, r.state]),
      [
        ['PK', EfiGuids.EFI_GLOBAL_VARIABLE, 0x27, 0x3f],
        ['KEK', EfiGuids.EFI_GLOBAL_VARIABLE, 0x27, 0x3f],
        ['db', EfiGuids.EFI_IMAGE_SECURITY_DATABASE_GUID, 0x27, 0x3f],
        ['SecureBootEnable', EfiGuids.EFI_SECURE_BOOT_ENABLE_DISABLE, 0x03, 0x3f],
        ['CustomMode', EfiGuids.EFI_CUSTOM_MODE_ENABLE_GUID, 0x03, 0x3f],
      ],
    );
    const pk = findVariable(s, 'PK', EfiGuids.EFI_GLOBAL_VARIABLE);
    assert.equal(pk?.offset, 0x64);
    assert.deepEqual(pk?.timestamp, {
      year: 2025,
      month: 1,
      day: 2,
      hour: 3,
      minute: 4,
      second: 5,
      nanosecond: 0,
      timeZone: 0,
      daylight: 0,
    });
    assert.deepEqual(
      findVariable(s, 'SecureBootEnable', EfiGuids.EFI_SECURE_BOOT_ENABLE_DISABLE)?.data,
      Buffer.of(1),
    );
    assert.deepEqual(findVariable(s, 'CustomMode', EfiGuids.EFI_CUSTOM_MODE_ENABLE_GUID)?.timestamp.year, 0);
    assert.deepEqual(pk?.data, keySetVariables(keys.keySet).pk);
    // Outside the appended records the file is the template, byte for byte.
    assert.ok(vars.subarray(0, 0x64).equals(blank.subarray(0, 0x64)));
    assert.ok(vars.subarray(s.freeOffset).equals(blank.subarray(s.freeOffset)));
    for (const r of s.records) assert.equal(r.offset % 4, 0);

    const state = readSecureBootState(vars);
    const fp = (e: (typeof state.pk)[number] | undefined): string | undefined =>
      e?.type === 'x509' ? e.sha256 : undefined;
    assert.equal(fp(state.pk[0]), certificateFingerprint256(keys.pk.certPem));
    assert.equal(fp(state.kek[0]), certificateFingerprint256(keys.kek.certPem));
    assert.equal(fp(state.db[0]), certificateFingerprint256(keys.db.certPem));
    assert.equal(state.pk[0]?.owner, OWNER);
    assert.deepEqual(state.dbx, []);
    assert.equal(state.secureBootAtNextBoot, true);
  });

  void test('dbx is written when the key set has entries; SecureBootEnable can be written as 0', () => {
    const keySet = { ...keys.keySet, dbx: [{ type: 'sha256' as const, sha256: EMPTY_SHA256, owner: OWNER }] };
    const s = readSecureBootState(varsForKeySet(blank, keySet, { timestamp: when }));
    assert.deepEqual(s.dbx, [{ type: 'sha256', owner: OWNER, hash: EMPTY_SHA256 }]);
    const off = writeSecureBootVariables(blank, {
      ...keySetVariables(keys.keySet),
      secureBootEnable: false,
      timestamp: when,
    });
    const state = readSecureBootState(off);
    assert.equal(state.secureBootEnable, false);
    assert.equal(state.setupMode, false);
    assert.equal(state.secureBootAtNextBoot, false);
  });

  void test('a PK whose lists do not decode is reported as a problem, not as setup mode', () => {
    const vars = varsForKeySet(blank, keys.keySet, { timestamp: when });
    const pk = findVariable(parseVarStore(vars), 'PK', EfiGuids.EFI_GLOBAL_VARIABLE);
    assert.ok(pk);
    // SignatureListSize of the PK's list, just after the header and the UTF-16 name "PK\0".
    vars.writeUInt32LE(0xffff, pk.offset + AUTH_VARIABLE_HEADER_BYTES + 6 + 16);
    const state = readSecureBootState(vars);
    assert.deepEqual(state.pk, []);
    assert.equal(state.setupMode, false);
    assert.match(state.problems[0] ?? '', /^PK: /);
  });

  void test('refuses stores that are not pristine templates', () => {
    const notPristine = is('HS_ERR_SECUREBOOT_VARSTORE_NOT_PRISTINE');
    // Keys already there: the Microsoft template, or our own output a second time.
    assert.throws(() => varsForKeySet(ms, keys.keySet), notPristine);
    const once = varsForKeySet(blank, keys.keySet);
    assert.throws(() => varsForKeySet(once, keys.keySet), notPristine);
    // A record caught mid-update (State 0x3E: in deleted transition).
    const mid = Buffer.from(once);
    mid.writeUInt8(0x3e, 0x64 + 2);
    assert.throws(() => varsForKeySet(mid, keys.keySet), /mid-update/);
    // Unknown bytes after the last record.
    const junk = Buffer.from(blank);
    junk.writeUInt32LE(0x12345678, 0x1000);
    assert.throws(() => varsForKeySet(junk, keys.keySet), /not erased/);
    // An unfinished fault-tolerant write in the FTW journal.
    const ftw = Buffer.from(blank);
    ftw.writeUInt8(0xfe, 0x41000 + 32);
    assert.throws(() => varsForKeySet(ftw, keys.keySet), /fault-tolerant-write journal/);
  });

  void test('refuses files that are not edk2 authenticated variable stores', () => {
    const badStore = is('HS_ERR_SECUREBOOT_BAD_VARSTORE');
    const mutate = (f: (b: Buffer) => void): Buffer => {
      const b = Buffer.from(blank);
      f(b);
      return b;
    };
    const cases: [string, Buffer][] = [
      ['empty', Buffer.alloc(0)],
      ['truncated', blank.subarray(0, 0x80000)],
      ['zeros', Buffer.alloc(blank.length)],
      ['header checksum', mutate((b) => b.writeUInt8(b.readUInt8(0x2c) ^ 1, 0x2c))],
      ['non-authenticated store', mutate((b) => guidToBytes(EfiGuids.EFI_VARIABLE_GUID).copy(b, 0x48))],
      ['store not healthy', mutate((b) => b.writeUInt8(0xff, 0x48 + 21))],
      ['store larger than the volume', mutate((b) => b.writeUInt32LE(0x100000, 0x48 + 16))],
      [
        'record running past the store',
        mutate((b) => {
          b.writeUInt16LE(0x55aa, 0x64);
          b.writeUInt8(0x3f, 0x66);
          b.writeUInt32LE(4, 0x64 + 36);
          b.writeUInt32LE(0x7fffffff, 0x64 + 40);
        }),
      ],
    ];
    for (const [what, bytes] of cases) assert.throws(() => parseVarStore(bytes), badStore, what);
    assert.throws(() => varsForKeySet(Buffer.alloc(64), keys.keySet), badStore);
  });

  void test('refuses keys that do not fit: one variable over the firmware limit, or the whole store', () => {
    const full = is('HS_ERR_SECUREBOOT_VARSTORE_FULL');
    const hashes = Array.from({ length: 800 }, (_, i) => ({ hash: Buffer.alloc(32, i % 251), owner: OWNER }));
    const hugeDb = encodeSignatureLists([sha256SignatureList(hashes)]);
    assert.ok(hugeDb.length + AUTH_VARIABLE_HEADER_BYTES > 0x8400);
    assert.throws(
      () => writeSecureBootVariables(blank, { ...keySetVariables(keys.keySet), db: hugeDb, timestamp: when }),
      (err: unknown) =>
        full(err) && /db would take \d+ bytes; this firmware allows 33792/.test((err as Error).message),
    );
    const big = (i: number) => ({
      name: `Big${i}`,
      vendor: OWNER,
      attributes: 0x03,
      data: Buffer.alloc(31_000, i),
    });
    assert.throws(
      () =>
        appendVariables(
          blank,
          Array.from({ length: 9 }, (_, i) => big(i)),
        ),
      full,
    );
    // 8 fit in the 256 KiB store; the 16 KiB reserve for the firmware then does not.
    assert.throws(
      () =>
        appendVariables(
          blank,
          Array.from({ length: 8 }, (_, i) => big(i)),
        ),
      full,
    );
    assert.equal(
      parseVarStore(
        appendVariables(
          blank,
          Array.from({ length: 7 }, (_, i) => big(i)),
        ),
      ).records.length,
      7,
    );
  });

  void test('appendVariables checks its input', () => {
    const invalidArg = is('HS_ERR_INVALID_ARGUMENT');
    const v = { name: 'X', vendor: OWNER, attributes: 0x03, data: Buffer.of(1) };
    assert.throws(() => appendVariables(blank, [v, v]), invalidArg);
    assert.throws(() => appendVariables(blank, [{ ...v, data: Buffer.alloc(0) }]), invalidArg);
    assert.throws(() => appendVariables(blank, [{ ...v, attributes: 0x06 }]), invalidArg);
    assert.throws(
      () => appendVariables(blank, [{ ...v, attributes: SECURE_BOOT_KEY_ATTRIBUTES }]),
      /needs a timestamp/,
    );
    assert.throws(() => appendVariables(blank, [{ ...v, name: 'a\nb' }]), invalidArg);
    assert.throws(
      () => writeSecureBootVariables(blank, { ...keySetVariables(keys.keySet), kek: Buffer.alloc(10) }),
      is('HS_ERR_SECUREBOOT_BAD_ESL'),
    );
    // A name in UTF-16 with non-ASCII characters round-trips.
    const s = parseVarStore(appendVariables(blank, [{ ...v, name: 'Größe' }]));
    assert.equal(s.records[0]?.name, 'Größe');
    assert.deepEqual(decodeSignatureLists(keySetVariables(keys.keySet).db).length, 1);
  });
});
