// `npm run bench -- NAME [NAME…]`: runs compiled benchmarks from dist/bench (all when none named).
import { readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';

const available = readdirSync('dist/bench')
  .filter((f) => f.endsWith('.js'))
  .map((f) => f.slice(0, -3));
const wanted = process.argv.slice(2);
const names = wanted.length === 0 ? available : wanted;
for (const name of names) {
  if (!available.includes(name)) {
    console.error(`unknown benchmark '${name}' (available: ${available.join(', ')})`);
    process.exit(2);
  }
  const r = spawnSync(process.execPath, [`dist/bench/${name}.js`], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
