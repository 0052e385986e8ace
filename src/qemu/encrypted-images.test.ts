// Encrypted images with real qemu-img / qemu-io (16 MiB images, a 1 MiB marker). What is
// proven: data written through QEMU's block layer is on disk in clear in a plain image and
// nowhere in the encrypted one; encrypt → rekey → decrypt gives back the same data; a
// wrong key is refused without creating anything; nothing is ever overwritten; the NVRAM
// container's payload is exactly the OVMF template; no key file or FIFO is left behind.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { HypersealError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { escapeOptionValue } from './command-line.js';
import {
  checkDek,
  convertImage,
  convertNvram,
  createEncryptedNvram,
  createEncryptedQcow2,
  imageInfo,
  luksPassphrase,
  luksPayloadBytes,
  resizeEncryptedQcow2,
} from './encrypted-images.js';
import { withSecretFifos } from './secret-fifo.js';
import { createQcow2Image } from './vm-process.js';

// A comma in the directory: every path in an option string must be escaped.
const dir = mkdtempSync(join(tmpdir(), 'hs-img,'));
after(() => rmSync(dir, { recursive: true, force: true }));
const VARS_TEMPLATE = '/usr/share/OVMF/OVMF_VARS_4M.fd';

function run(file: string, args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, output }));
  });
}

/** qemu-io commands on an image, decrypting it with `dek` when given. */
async function qemuIo(path: string, dek: Buffer | undefined, ...commands: string[]): Promise<string> {
  const cmds = commands.flatMap((c) => ['-c', c]);
  const file = `file.filename=${escapeOptionValue(path)}`;
  if (dek === undefined) {
    const r = await run('qemu-io', ['--image-opts', `driver=qcow2,${file}`, ...cmds]);
    assert.equal(r.code, 0, r.output);
    return r.output;
  }
  const passphrase = luksPassphrase(dek);
  return withSecretFifos(dir, { k: passphrase }, async ({ paths }) => {
    const r = await run('qemu-io', [
      '--object',
      `secret,id=k,file=${escapeOptionValue(paths.k as string)},format=raw`,
      '--image-opts',
      `driver=qcow2,${file},encrypt.key-secret=k`,
      ...cmds,
    ]);
    assert.equal(r.code, 0, r.output);
    return r.output;
  });
}

/** A 4 KiB run of the marker byte: what a 1 MiB marker leaves in a plain image. */
const MARKER = Buffer.alloc(4096, 0x5a);
const holds = (path: string, needle: Buffer): boolean => readFileSync(path).includes(needle);

async function rejects(p: Promise<unknown>, code: ErrorCode): Promise<HypersealError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof HypersealError, `expected ${code}, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}, but it resolved`);
}

void test('luksPassphrase: the DEK as 64 lower-case hex characters (valid UTF-8 for QEMU)', () => {
  const dek = Buffer.from('00ff10ab'.repeat(8), 'hex');
  assert.equal(luksPassphrase(dek).toString('latin1'), '00ff10ab'.repeat(8));
  assert.throws(() => luksPassphrase(randomBytes(16)), /32 bytes/);
});

void test(
  'encrypt → rekey → decrypt: the marker is clear in the plain image, absent from the encrypted ones, and comes back',
  { timeout: 120_000 },
  async () => {
    const dek1 = randomBytes(32);
    const dek2 = randomBytes(32);
    const plain = join(dir, 'plain.qcow2');
    await createQcow2Image(plain, 16);
    await qemuIo(plain, undefined, 'write -P 0x5a 1M 1M');
    assert.ok(holds(plain, MARKER), 'the marker is on disk in clear');

    const enc = join(dir, 'enc.qcow2');
    const progress: number[] = [];
    const secretDir = mkdtempSync(join(tmpdir(), 'hs-img-secrets-'));
    await convertImage({
      src: { path: plain },
      dst: { path: enc, dek: dek1 },
      onProgress: (p) => progress.push(p),
      secretDir,
    });
    assert.deepEqual(readdirSync(secretDir), [], 'no FIFO left behind');
    rmSync(secretDir, { recursive: true });
    assert.ok(progress.length >= 2 && progress.at(-1) === 100, `progress ${progress.join(',')}`);
    assert.deepEqual(
      progress,
      [...progress].sort((a, b) => a - b),
    );
    assert.equal(statSync(enc).mode & 0o777, 0o600);
    assert.deepEqual(await imageInfo(enc, 'qcow2'), {
      format: 'qcow2',
      virtualSize: 16 << 20,
      encrypted: true,
    });
    assert.ok(!holds(enc, MARKER), 'the marker is not on disk in clear');
    assert.ok(!holds(enc, dek1) && !holds(enc, Buffer.from(dek1.toString('hex'))), 'nor the key');
    assert.match(
      await qemuIo(enc, dek1, 'read -P 0x5a 1M 1M', 'read -P 0 0 1M'),
      /read 1048576\/1048576 bytes/,
    );
    assert.equal(await checkDek(enc, dek1), true);
    assert.equal(await checkDek(enc, dek2), false);

    // Deep rekey: a new DEK, the data re-encrypted.
    const rekeyed = join(dir, 'rekeyed.qcow2');
    await convertImage({ src: { path: enc, dek: dek1 }, dst: { path: rekeyed, dek: dek2 } });
    assert.equal(await checkDek(rekeyed, dek1), false);
    assert.equal(await checkDek(rekeyed, dek2), true);
    assert.ok(!holds(rekeyed, MARKER));

    const back = join(dir, 'back.qcow2');
    // The decrypted copy being written is never readable by others (qemu-img would make it 0644).
    const modes = new Set<number>();
    await convertImage({
      src: { path: rekeyed, dek: dek2 },
      dst: { path: back },
      onProgress: () => {
        for (const f of readdirSync(dir).filter((n) => n.startsWith('back.qcow2.tmp-'))) {
          modes.add(statSync(join(dir, f)).mode & 0o777);
        }
      },
    });
    assert.deepEqual([...modes], [0o600]);
    assert.deepEqual(await imageInfo(back, 'qcow2'), {
      format: 'qcow2',
      virtualSize: 16 << 20,
      encrypted: false,
    });
    const cmp = await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', plain, back]);
    assert.equal(cmp.code, 0, cmp.output);
    assert.match(cmp.output, /Images are identical/);
    assert.ok(holds(back, MARKER));

    // A wrong key: refused, nothing created.
    const wrong = join(dir, 'wrong.qcow2');
    const err = await rejects(
      convertImage({ src: { path: rekeyed, dek: dek1 }, dst: { path: wrong } }),
      'HS_ERR_QEMU_KEY_REJECTED',
    );
    assert.doesNotMatch(err.message, new RegExp(dek1.toString('hex')));
    assert.equal(existsSync(wrong), false);
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.includes('.tmp-')),
      [],
    );

    // Never overwritten.
    const before = readFileSync(back);
    await rejects(
      convertImage({ src: { path: plain }, dst: { path: back, dek: dek1 } }),
      'HS_ERR_QEMU_DISK_EXISTS',
    );
    assert.ok(readFileSync(back).equals(before));
    // A plain image is not a key's to open.
    await rejects(checkDek(plain, dek1), 'HS_ERR_QEMU_TOOL_FAILED');
  },
);

void test(
  'createEncryptedQcow2: cheap to open, 0600, never overwrites; resize keeps the key',
  { timeout: 60_000 },
  async () => {
    const dek = randomBytes(32);
    const path = join(dir, 'new.qcow2');
    await createEncryptedQcow2(path, 16, dek);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const info = JSON.parse((await run('qemu-img', ['info', '--output=json', path])).output) as {
      'format-specific': { data: { encrypt: Record<string, unknown> & { slots: { iters?: number }[] } } };
    };
    const luks = info['format-specific'].data.encrypt;
    assert.equal(luks.format, 'luks');
    assert.equal(luks['cipher-alg'], 'aes-256');
    assert.equal(luks['cipher-mode'], 'xts');
    assert.equal(luks['ivgen-alg'], 'plain64');
    assert.equal(luks['hash-alg'], 'sha256');
    // iter-time=1: thousands of PBKDF2 iterations, not the default's millions.
    const iters = luks.slots.find((s) => s.iters !== undefined)?.iters ?? 0;
    assert.ok(iters >= 1000 && iters < 200_000, `slot iterations ${iters}`);
    const t = Date.now();
    assert.equal(await checkDek(path, dek), true);
    assert.ok(Date.now() - t < 1_500, `opening took ${Date.now() - t} ms`);

    writeFileSync(join(dir, 'taken.qcow2'), 'not an image');
    await rejects(createEncryptedQcow2(join(dir, 'taken.qcow2'), 16, dek), 'HS_ERR_QEMU_DISK_EXISTS');
    assert.equal(readFileSync(join(dir, 'taken.qcow2'), 'utf8'), 'not an image');

    await resizeEncryptedQcow2(path, 32, dek);
    assert.equal((await imageInfo(path, 'qcow2')).virtualSize, 32 << 20);
    assert.equal(await checkDek(path, dek), true);
    await rejects(resizeEncryptedQcow2(path, 64, randomBytes(32)), 'HS_ERR_QEMU_KEY_REJECTED');
  },
);

void test(
  'NVRAM: a LUKS container whose payload is exactly the OVMF template, and back',
  { timeout: 60_000 },
  async () => {
    const dek = randomBytes(32);
    const template = readFileSync(VARS_TEMPLATE);
    const luks = join(dir, 'vars.luks');
    await createEncryptedNvram(VARS_TEMPLATE, luks, dek);
    assert.equal(await luksPayloadBytes(luks), template.length);
    assert.equal(await luksPayloadBytes(VARS_TEMPLATE), undefined);
    assert.equal(statSync(luks).mode & 0o777, 0o600);
    assert.equal(await checkDek(luks, dek, 'luks'), true);
    assert.equal(await checkDek(luks, randomBytes(32), 'luks'), false);
    // The firmware volume header ("_FVH") is in the template, not in the container.
    assert.ok(template.includes(Buffer.from('_FVH')));
    assert.ok(!holds(luks, Buffer.from('_FVH')));

    const plain = join(dir, 'vars.fd');
    await convertNvram({ src: { path: luks, dek }, dst: { path: plain } });
    assert.ok(readFileSync(plain).equals(template));
    // Plain → encrypted → plain of a store that is not the pristine template.
    const edited = Buffer.from(template);
    edited.write('hs-nvram-marker', template.length - 4096, 'latin1');
    const editedPath = join(dir, 'edited.fd');
    writeFileSync(editedPath, edited);
    await convertNvram({ src: { path: editedPath }, dst: { path: join(dir, 'edited.luks'), dek } });
    assert.ok(!holds(join(dir, 'edited.luks'), Buffer.from('hs-nvram-marker')));
    await convertNvram({
      src: { path: join(dir, 'edited.luks'), dek },
      dst: { path: join(dir, 'edited2.fd') },
    });
    assert.ok(readFileSync(join(dir, 'edited2.fd')).equals(edited));
  },
);
