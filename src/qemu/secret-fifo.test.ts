// withSecretFifos against real readers (a child `cat`, as QEMU would open the path); that
// qemu-img and QEMU themselves read them is proven by encrypted-images.test.ts and
// encrypted-vm.test.ts.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { HypersealError } from '../errors.js';
import { withSecretFifos } from './secret-fifo.js';

const dir = mkdtempSync(join(tmpdir(), 'hs-fifo-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** What a reader of `path` gets, read by another process. */
function readInChild(path: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn('cat', [path], { stdio: ['ignore', 'pipe', 'inherit'] });
    const parts: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => parts.push(c));
    child.once('error', reject);
    child.once('close', (code) =>
      code === 0 ? resolve(Buffer.concat(parts)) : reject(new Error(`cat: ${code}`)),
    );
  });
}

void test('each reader gets its secret exactly; the FIFOs are 0600 while they exist and gone after', async () => {
  const a = randomBytes(32);
  // Larger than a pipe's 64 KiB: the writer has to wait for room (EAGAIN) and go on.
  const b = randomBytes(200 * 1024);
  const got = await withSecretFifos(dir, { a, b }, async ({ paths, delivered }) => {
    assert.deepEqual(Object.keys(paths).sort(), ['a', 'b']);
    for (const p of Object.values(paths)) {
      const st = statSync(p);
      assert.ok(st.isFIFO());
      assert.equal(st.mode & 0o777, 0o600);
      assert.match(p, /\/\.hs-secret-[0-9a-f]{24}$/);
    }
    const [ra, rb] = await Promise.all([readInChild(paths.a as string), readInChild(paths.b as string)]);
    await delivered;
    return { ra, rb };
  });
  assert.deepEqual(got.ra, a);
  assert.deepEqual(got.rb, b);
  assert.deepEqual(readdirSync(dir), []);
});

void test('nobody reads: HS_ERR_QEMU_SECRET_TIMEOUT through `delivered`, and the FIFO is removed', async () => {
  const started = Date.now();
  let delivery: unknown;
  const result = await withSecretFifos(
    dir,
    { key: randomBytes(32) },
    async ({ delivered }) => {
      await delivered.catch((err: unknown) => (delivery = err));
      return 'run finished';
    },
    { timeoutMs: 300 },
  );
  assert.equal(result, 'run finished');
  assert.ok(delivery instanceof HypersealError);
  assert.equal(delivery.code, 'HS_ERR_QEMU_SECRET_TIMEOUT');
  assert.match(delivery.message, /"key"/);
  const elapsed = Date.now() - started;
  assert.ok(elapsed >= 300 && elapsed < 5_000, `took ${elapsed} ms`);
  assert.deepEqual(readdirSync(dir), []);
});

void test('run throws: the error passes through, unread secrets are never written, FIFOs removed', async () => {
  await assert.rejects(
    withSecretFifos(dir, { key: randomBytes(32) }, () => Promise.reject(new Error('tool failed'))),
    /tool failed/,
  );
  assert.deepEqual(readdirSync(dir), []);
  // A reader that comes after run settled finds nothing to open.
  let late = '';
  await withSecretFifos(dir, { key: randomBytes(32) }, ({ paths }) => {
    late = paths.key as string;
    return Promise.resolve();
  });
  await assert.rejects(readInChild(late), /cat: 1/);
});

void test('refuses a directory others can write to, and empty secrets', async () => {
  const open = join(dir, 'open');
  mkdirSync(open);
  chmodSync(open, 0o777);
  await assert.rejects(
    withSecretFifos(open, { key: randomBytes(32) }, () => Promise.resolve()),
    (err: unknown) => err instanceof HypersealError && err.code === 'HS_ERR_CONFIG',
  );
  await assert.rejects(
    withSecretFifos(join(dir, 'missing'), { key: randomBytes(32) }, () => Promise.resolve()),
    (err: unknown) => err instanceof HypersealError && err.code === 'HS_ERR_CONFIG',
  );
  rmSync(open, { recursive: true });
  await assert.rejects(
    withSecretFifos(dir, { key: Buffer.alloc(0) }, () => Promise.resolve()),
    (err: unknown) => err instanceof HypersealError && err.code === 'HS_ERR_INVALID_ARGUMENT',
  );
  assert.deepEqual(readdirSync(dir), []);
});
