// Keeps the operator docs in step with the code: docs/errors.md lists every code of the
// error registry with its HTTP status, CLI exit code and meaning; no document names a
// code that does not exist; and the sources raise only registered codes.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, parse, relative } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { exitCodeOf } from '../src/cli/output.js';
import type { ErrorCode } from '../src/errors.js';
import { ErrorCodes, HypersealError } from '../src/errors.js';

/** The repository root: tests run compiled from dist/test/, the docs stay in the tree. */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'src', 'errors.ts'))) return dir;
    if (dir === parse(dir).root) throw new Error(`repository root not found above ${import.meta.url}`);
    dir = dirname(dir);
  }
}

const ROOT = repoRoot();
const CODES = Object.keys(ErrorCodes) as ErrorCode[];
const isCode = (s: string): s is ErrorCode => Object.hasOwn(ErrorCodes, s);
/** HS_ERR_ words; one ending in '_' is a prefix (e.g. `code.startsWith('HS_ERR_KMIP_')`). */
const CODE_PATTERN = /\bHS_ERR_[A-Z0-9_]*/g;

function filesUnder(dir: string, suffix: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...filesUnder(path, suffix));
    else if (name.endsWith(suffix)) out.push(path);
  }
  return out;
}

/** Checks one HS_ERR_ word found in `where`: a registered code, or a prefix of one. */
function checkMention(word: string, where: string): void {
  if (word.endsWith('_')) {
    assert.ok(
      CODES.some((c) => c.startsWith(word)),
      `${where} uses the prefix ${word}, which no registered code has`,
    );
  } else {
    assert.ok(isCode(word), `${where} names ${word}, which is not in src/errors.ts`);
  }
}

interface Row {
  code: string;
  cells: string[];
}

/** The rows of docs/errors.md's tables whose first cell is a code in backticks. */
function errorRows(markdown: string): Row[] {
  const rows: Row[] = [];
  for (const line of markdown.split('\n')) {
    if (!line.startsWith('|')) continue;
    const cells = line
      .slice(1, line.trimEnd().endsWith('|') ? line.trimEnd().length - 1 : undefined)
      .split('|')
      .map((c) => c.trim());
    const m = /^`(HS_ERR_[A-Z0-9_]+)`$/.exec(cells[0] ?? '');
    if (m?.[1] !== undefined) rows.push({ code: m[1], cells });
  }
  return rows;
}

const squash = (s: string): string => s.replace(/\s+/g, ' ').trim();

void test('docs/errors.md has one row per registered code: HTTP status, CLI exit code, meaning', () => {
  const markdown = readFileSync(join(ROOT, 'docs', 'errors.md'), 'utf8');
  const rows = errorRows(markdown);
  const seen = new Set<string>();
  for (const row of rows) {
    assert.ok(!seen.has(row.code), `docs/errors.md lists ${row.code} twice`);
    seen.add(row.code);
  }
  for (const code of CODES) {
    const row = rows.find((r) => r.code === code);
    assert.ok(row !== undefined, `docs/errors.md has no table row for ${code}`);
    const [, status, exit, meaning] = row.cells;
    assert.equal(status, String(ErrorCodes[code].status), `HTTP status of ${code} in docs/errors.md`);
    assert.equal(
      exit,
      String(exitCodeOf(new HypersealError(code, 'x'))),
      `CLI exit code of ${code} in docs/errors.md`,
    );
    assert.equal(
      squash(meaning ?? ''),
      squash(ErrorCodes[code].meaning),
      `meaning of ${code} in docs/errors.md`,
    );
  }
});

void test('the docs name only registered error codes', () => {
  const docs = filesUnder(join(ROOT, 'docs'), '.md');
  assert.ok(docs.length > 0, 'docs/ has Markdown files');
  for (const path of [...docs, join(ROOT, 'README.md')].filter((p) => existsSync(p))) {
    const text = readFileSync(path, 'utf8');
    for (const [word] of text.matchAll(CODE_PATTERN)) checkMention(word, relative(ROOT, path));
  }
});

void test('the sources under src/ use only registered error codes', () => {
  const sources = filesUnder(join(ROOT, 'src'), '.ts');
  assert.ok(sources.length > 0, 'src/ has TypeScript files');
  let mentions = 0;
  for (const path of sources) {
    const text = readFileSync(path, 'utf8');
    for (const [word] of text.matchAll(CODE_PATTERN)) {
      checkMention(word, relative(ROOT, path));
      mentions++;
    }
  }
  // The scan itself must see codes, or it proves nothing.
  assert.ok(mentions > CODES.length, `only ${mentions} HS_ERR_ mentions found under src/`);
});
