// Test support for the "secrets never appear" checks: every file under a directory, the
// forms a key could take in a file, and where any of them occurs. Nothing here ships.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** Every regular file under `dir`, recursively. */
export function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = statSync(p);
    if (st.isDirectory()) out.push(...filesUnder(p));
    else if (st.isFile()) out.push(p);
  }
  return out;
}

/** The forms a key could take in a file or a log: raw, hex, base64. */
export function keyForms(key: Buffer): Buffer[] {
  return [key, Buffer.from(key.toString('hex')), Buffer.from(key.toString('base64'))];
}

/** "FILE contains …" for each file holding one of `needles` (empty when none does). */
export function findIn(files: readonly string[], needles: readonly Buffer[]): string[] {
  const hits: string[] = [];
  for (const f of files) {
    const data = readFileSync(f);
    for (const n of needles) {
      if (data.indexOf(n) >= 0) hits.push(`${f} contains ${n.toString('latin1').slice(0, 40)}`);
    }
  }
  return hits;
}
