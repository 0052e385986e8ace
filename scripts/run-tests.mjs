// Runs every compiled test file with node:test (a test that hangs fails after 5 minutes
// instead of holding CI until its limit). Node 20's runner takes no globs, so the
// files are listed here. Tests that start real peers pick free ports and their own
// directories, so files run in parallel (two at a time on these 2-core machines).
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

function findTests(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...findTests(path));
    else if (name.endsWith('.test.js')) out.push(path);
  }
  return out;
}

const filter = process.argv.slice(2);
const files = ['dist/src', 'dist/test']
  .flatMap((d) => {
    try {
      return findTests(d);
    } catch {
      return [];
    }
  })
  .filter((f) => filter.length === 0 || filter.some((x) => f.includes(x)))
  .sort();
if (files.length === 0) {
  console.error('no test files found');
  process.exit(1);
}
const concurrency = process.env.HYPERSEAL_TEST_CONCURRENCY ?? '2';
const result = spawnSync(
  process.execPath,
  ['--test', `--test-concurrency=${concurrency}`, '--test-timeout=300000', ...files],
  {
    stdio: 'inherit',
  },
);
process.exit(result.status ?? 1);
