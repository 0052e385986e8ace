/**
 * Cross-checks our KMIP tag table and enumerations against PyKMIP's own tables
 * (kmip.core.enums, Debian's python3-pykmip 0.10): an independent source, written by other
 * people from the same spec. PyKMIP covers KMIP 1.0–2.0, so the comparison is both ways
 * within KMIP 1.1's range and one way (ours ⊆ PyKMIP) beyond it.
 *
 * Skipped, with the reason, when /usr/bin/python3 or python3-pykmip is not installed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Tag, tagName } from './tags.js';
import {
  CryptographicAlgorithm,
  KeyFormatType,
  NameType,
  ObjectType,
  Operation,
  QueryFunction,
  ResultReason,
  ResultStatus,
  RevocationReasonCode,
  State,
} from './enums.js';

const PYTHON = '/usr/bin/python3';
/** The last tag of KMIP 1.1 (X.509 Certificate Subject); later tags are KMIP 1.2+. */
const LAST_KMIP_1_1_TAG = 0x4200b7;

type Table = Readonly<Record<string, number>>;

/**
 * Our enumerations, PyKMIP's class name for each (the same here), and the values KMIP 1.1
 * defines (spec §9.1.3.2). PyKMIP also lists KMIP 1.2–2.0 values, which we do not carry.
 */
const ENUMS: ReadonlyArray<{ name: string; ours: Table; inKmip11: (v: number) => boolean }> = [
  { name: 'Operation', ours: Operation, inKmip11: (v) => v >= 0x01 && v <= 0x1e },
  { name: 'ObjectType', ours: ObjectType, inKmip11: (v) => v >= 0x01 && v <= 0x08 },
  { name: 'CryptographicAlgorithm', ours: CryptographicAlgorithm, inKmip11: (v) => v >= 0x01 && v <= 0x19 },
  { name: 'ResultStatus', ours: ResultStatus, inKmip11: (v) => v >= 0x00 && v <= 0x03 },
  // 0x01–0x12, plus General Failure 0x100.
  { name: 'ResultReason', ours: ResultReason, inKmip11: (v) => (v >= 0x01 && v <= 0x12) || v === 0x100 },
  { name: 'State', ours: State, inKmip11: (v) => v >= 0x01 && v <= 0x06 },
  { name: 'KeyFormatType', ours: KeyFormatType, inKmip11: (v) => v >= 0x01 && v <= 0x13 },
  { name: 'NameType', ours: NameType, inKmip11: (v) => v >= 0x01 && v <= 0x02 },
  { name: 'RevocationReasonCode', ours: RevocationReasonCode, inKmip11: (v) => v >= 0x01 && v <= 0x07 },
  { name: 'QueryFunction', ours: QueryFunction, inKmip11: (v) => v >= 0x01 && v <= 0x06 },
];

/**
 * Names are compared after normalising: PyKMIP writes CRYPTOGRAPHIC_ALGORITHM, we write
 * CryptographicAlgorithm; both become "cryptographicalgorithm" (X_509 / X509, Q_STRING /
 * QString, HMAC_SHA1 / HMACSHA1, CA_COMPROMISE / CACompromise all match this way).
 * The few that are spelled differently are listed here, ours → PyKMIP's; a test checks
 * that each alias is still needed and still points at the same value.
 */
const ALIASES: Readonly<Record<string, Readonly<Record<string, string>>>> = {
  // The spec calls object type 8 "Opaque Object" (and its tag 0x42005B is OPAQUE_OBJECT in
  // PyKMIP too), but PyKMIP's ObjectType enumeration names it OPAQUE_DATA.
  ObjectType: { OpaqueObject: 'OPAQUE_DATA' },
};
/**
 * PyKMIP entries that are not KMIP tags at all. DEFAULT (0x420000) is PyKMIP's own
 * placeholder for "no tag given"; the spec does not assign 0x420000.
 */
const PYKMIP_NOT_A_TAG = new Set(['DEFAULT']);

const normalise = (name: string): string => name.replace(/_/g, '').toLowerCase();

// Prints {"Tags": {NAME: value}, "Operation": {...}, ...} from PyKMIP's enum classes
// (canonical members only: Tags also has the aliases REQUEST_/RESPONSE_BATCH_ITEM).
const SCRIPT = `
import json, sys
try:
    from kmip.core import enums
except ImportError as e:
    sys.stderr.write("cannot import kmip.core.enums: %s\\n" % e)
    sys.exit(3)
print(json.dumps({n: {m.name: m.value for m in getattr(enums, n)} for n in sys.argv[1:]}))
`;

type PyTables = Record<string, Record<string, number>>;
let cached: { tables: PyTables } | { skip: string } | undefined;

function loadPyKmip(): { tables: PyTables } | { skip: string } {
  if (cached !== undefined) return cached;
  const names = ['Tags', ...ENUMS.map((e) => e.name)];
  const run = spawnSync(PYTHON, ['-c', SCRIPT, ...names], { encoding: 'utf8', timeout: 30_000 });
  if (run.error !== undefined && (run.error as NodeJS.ErrnoException).code === 'ENOENT') {
    return (cached = { skip: `${PYTHON} is not installed` });
  }
  if (run.status === 3) {
    return (cached = {
      skip: `python3-pykmip is not installed (apt-get install python3-pykmip): ${run.stderr.trim()}`,
    });
  }
  assert.equal(run.status, 0, `${PYTHON} failed (${String(run.error ?? run.signal)}): ${run.stderr}`);
  const parsed: unknown = JSON.parse(run.stdout);
  assert.ok(typeof parsed === 'object' && parsed !== null, 'PyKMIP dump is not an object');
  const tables: PyTables = {};
  for (const name of names) {
    const table: unknown = (parsed as Record<string, unknown>)[name];
    assert.ok(typeof table === 'object' && table !== null, `PyKMIP has no ${name}`);
    tables[name] = {};
    for (const [k, v] of Object.entries(table)) {
      assert.ok(Number.isInteger(v), `PyKMIP ${name}.${k} is not an integer`);
      (tables[name] as Record<string, number>)[k] = v as number;
    }
  }
  return (cached = { tables });
}

/** Index of a PyKMIP table by normalised name. */
function byName(table: Table): Map<string, { name: string; value: number }> {
  const out = new Map<string, { name: string; value: number }>();
  for (const [name, value] of Object.entries(table)) out.set(normalise(name), { name, value });
  return out;
}

/** The PyKMIP entry our `name` corresponds to, via the alias table or by normalised name. */
function counterpart(kind: string, py: Table, name: string): { name: string; value: number } | undefined {
  const alias = ALIASES[kind]?.[name];
  if (alias !== undefined) {
    const value = py[alias];
    return value === undefined ? undefined : { name: alias, value };
  }
  return byName(py).get(normalise(name));
}

const hex = (v: number): string => `0x${v.toString(16).padStart(6, '0')}`;

test('our Tag table matches PyKMIP kmip.core.enums.Tags up to 0x4200B7, both ways', (t) => {
  const py = loadPyKmip();
  if ('skip' in py) return t.skip(py.skip);
  const tags = py.tables.Tags as Table;
  assert.ok(Object.keys(tags).length > 300, 'PyKMIP Tags looks too small to be the real table');

  const problems: string[] = [];
  // Our table is a bijection of names and values (tagName's reverse map relies on it).
  const values = Object.values(Tag);
  const firstName = new Map<number, string>();
  for (const [name, value] of Object.entries(Tag)) {
    const other = firstName.get(value);
    if (other !== undefined) problems.push(`ours ${other} and ${name} share ${hex(value)}`);
    else firstName.set(value, name);
  }
  // Every tag of ours exists in PyKMIP under the same name with the same value (PyKMIP has
  // KMIP 1.2–2.0 too, so this holds beyond 0x4200B7; extension tags 0x54xxxx are ours alone).
  for (const [name, value] of Object.entries(Tag)) {
    if (value >= 0x540000) continue;
    const theirs = counterpart('Tags', tags, name);
    if (theirs === undefined) problems.push(`ours ${name}=${hex(value)} is not in PyKMIP`);
    else if (theirs.value !== value) {
      problems.push(`ours ${name}=${hex(value)} but PyKMIP ${theirs.name}=${hex(theirs.value)}`);
    }
  }
  // Every PyKMIP tag ≤ 0x4200B7 is in ours, under the same name with the same value.
  const oursByValue = new Map<number, string>(Object.entries(Tag).map(([k, v]) => [v, k]));
  for (const [pyName, value] of Object.entries(tags)) {
    if (value > LAST_KMIP_1_1_TAG || PYKMIP_NOT_A_TAG.has(pyName)) continue;
    const ours = oursByValue.get(value);
    if (ours === undefined) problems.push(`PyKMIP ${pyName}=${hex(value)} is missing from ours`);
    else if (normalise(ours) !== normalise(pyName)) {
      problems.push(`${hex(value)} is ${ours} in ours but ${pyName} in PyKMIP`);
    }
  }
  assert.deepEqual(problems, []);
  // KMIP 1.1 tags are exactly 0x420001–0x4200B7, with no gaps.
  const kmip11 = values.filter((v) => v <= LAST_KMIP_1_1_TAG).sort((a, b) => a - b);
  assert.deepEqual(
    kmip11,
    Array.from({ length: LAST_KMIP_1_1_TAG - 0x420000 }, (_, i) => 0x420001 + i),
  );
  // The exclusions are still real PyKMIP entries (so they do not hide anything by accident).
  for (const name of PYKMIP_NOT_A_TAG) assert.ok(name in tags, `PyKMIP no longer has ${name}`);
  assert.equal(tagName(0x42000f), 'BatchItem');
});

test('our enumerations match PyKMIP kmip.core.enums, both ways within KMIP 1.1', (t) => {
  const py = loadPyKmip();
  if ('skip' in py) return t.skip(py.skip);
  const problems: string[] = [];
  for (const { name: kind, ours, inKmip11 } of ENUMS) {
    const theirs = py.tables[kind] as Table;
    // Every value of ours exists in PyKMIP, same name, same value; and is a KMIP 1.1 value.
    for (const [name, value] of Object.entries(ours)) {
      const match = counterpart(kind, theirs, name);
      if (match === undefined) problems.push(`${kind}: ours ${name}=${value} is not in PyKMIP`);
      else if (match.value !== value) {
        problems.push(`${kind}: ours ${name}=${value} but PyKMIP ${match.name}=${match.value}`);
      }
      if (!inKmip11(value)) problems.push(`${kind}: ours ${name}=${value} is not a KMIP 1.1 value`);
    }
    // Every KMIP 1.1 value in PyKMIP is in ours, under the matching name.
    const oursByValue = new Map<number, string>(Object.entries(ours).map(([k, v]) => [v, k]));
    for (const [pyName, value] of Object.entries(theirs)) {
      if (!inKmip11(value)) continue;
      const mine = oursByValue.get(value);
      if (mine === undefined) problems.push(`${kind}: PyKMIP ${pyName}=${value} is missing from ours`);
      else if (counterpart(kind, theirs, mine)?.name !== pyName) {
        problems.push(`${kind}: ${value} is ${mine} in ours but ${pyName} in PyKMIP`);
      }
    }
    assert.equal(new Set(Object.values(ours)).size, Object.keys(ours).length, `${kind}: duplicate values`);
  }
  assert.deepEqual(problems, []);
});

test('every alias is still needed and names a real PyKMIP entry', (t) => {
  const py = loadPyKmip();
  if ('skip' in py) return t.skip(py.skip);
  for (const [kind, aliases] of Object.entries(ALIASES)) {
    const theirs = py.tables[kind] as Table;
    const ours = ENUMS.find((e) => e.name === kind)?.ours ?? (kind === 'Tags' ? Tag : undefined);
    assert.ok(ours !== undefined, `alias table for unknown kind ${kind}`);
    for (const [mine, pyName] of Object.entries(aliases)) {
      assert.ok(mine in ours, `${kind}: alias for ${mine}, which we do not have`);
      assert.ok(pyName in theirs, `${kind}: PyKMIP has no ${pyName}`);
      assert.notEqual(normalise(mine), normalise(pyName), `${kind}: alias ${mine} → ${pyName} is not needed`);
      assert.equal(
        byName(theirs).get(normalise(mine)),
        undefined,
        `${kind}: PyKMIP now spells ${mine} our way`,
      );
    }
  }
});
