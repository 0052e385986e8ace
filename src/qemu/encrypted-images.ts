/**
 * Encrypted VM files, made and converted with qemu-img: disks are qcow2 with LUKS
 * encryption inside (`encrypt.format=luks`), the UEFI variable store (NVRAM) is a raw LUKS
 * container whose payload is the OVMF VARS image. AES-256-XTS with plain64 IVs and a
 * SHA-256 PBKDF2 (qemu-experiments §2; docs/disk-encryption-performance.md says why this
 * layout and these settings).
 *
 * Keys reach qemu-img only through secret-fifo.ts: `--object secret,id=…,file=<fifo>`,
 * never a file, an argument or a log line. Every function that writes a file writes it
 * under a temporary name, fsyncs it and hard-links it into place, so an existing file is
 * never overwritten (link() fails with EEXIST) and a crash leaves no half-made image under
 * the final name. Temporary names contain ".tmp-" (the agent sweeps those after a crash).
 *
 * The LUKS passphrase is not the DEK itself but its lower-case hex: see luksPassphrase().
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { link, lstat, mkdtemp, open, rm, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { HypersealError } from '../errors.js';
import { trace } from '../trace.js';
import { escapeOptionValue } from './command-line.js';
import { raceDelivery, withSecretFifos } from './secret-fifo.js';

/** A DEK is an AES-256 key: 32 random bytes. */
export const DEK_BYTES = 32;

/**
 * LUKS settings for every encrypted image we make. iter-time is the PBKDF2 time QEMU
 * calibrates for, in ms; 1 ms gives a few thousand iterations (QEMU's floor is 1,000)
 * and opens in ~10 ms instead of the default's ~2.3 s. Key stretching protects weak
 * passphrases; ours is a random 256-bit key, which no amount of stretching makes stronger
 * or weaker (docs/disk-encryption-performance.md, "PBKDF cost").
 */
export const LUKS_OPTIONS = {
  'cipher-alg': 'aes-256',
  'cipher-mode': 'xts',
  'ivgen-alg': 'plain64',
  'hash-alg': 'sha256',
  'iter-time': 1,
} as const;

/** qcow2 cluster size of the images we make (QEMU's default; see the performance doc). */
export const QCOW2_CLUSTER_SIZE = 65536;

/**
 * QEMU's PBKDF2 calibration (crypto/pbkdf.c) times a first batch of iterations with the
 * thread's CPU clock and fails with this message when the clock did not advance, which on
 * a tick-based clock happens at random (~1 in 4 creations here, whatever iter-time is;
 * qemu-experiments §2.1 mistook it for an iter-time limit). Nothing was written: retry.
 */
const CALIBRATION_GLITCH = 'Unable to get accurate CPU usage';
const CALIBRATION_ATTEMPTS = 8;
/** What QEMU's LUKS code says for a wrong passphrase (crypto/block-luks.c). */
const WRONG_KEY = /Invalid password, cannot unlock any keyslot/;

export interface ImageToolOptions {
  qemuImgBinary?: string | undefined;
  /** For checkDek. Default 'qemu-io'. */
  qemuIoBinary?: string | undefined;
  /** A private directory for the secret FIFOs. Default: a fresh one under os.tmpdir(). */
  secretDir?: string | undefined;
  /** For the whole tool run. Default 1 hour (a large convert is slow). */
  timeoutMs?: number | undefined;
}

/** One end of a conversion: an image and, when it is (to be) encrypted, its DEK. */
export interface ImageEnd {
  path: string;
  dek?: Buffer | undefined;
}

export interface ConvertOptions extends ImageToolOptions {
  src: ImageEnd;
  /** Must not exist. */
  dst: ImageEnd;
  /** 0–100, from qemu-img's own progress meter. */
  onProgress?: ((percent: number) => void) | undefined;
}

/**
 * The LUKS passphrase for a DEK: its 64-character lower-case hex, as bytes. QEMU looks a
 * LUKS key-secret up as UTF-8 text (qcrypto_secret_lookup_as_utf8 in crypto/secret_common.c
 * refuses data that is not valid UTF-8, and the passphrase is then handled as a C string,
 * so a 0 byte would cut it short); 32 random bytes are almost never valid UTF-8. Hex keeps
 * all 256 bits. The caller owns (and should zeroize) the returned buffer.
 */
export function luksPassphrase(dek: Buffer): Buffer {
  checkDekBytes(dek, 'dek');
  return Buffer.from(dek.toString('hex'), 'latin1');
}

/** The same function under the name the integration was first written against. */
export const lukPassphrase = luksPassphrase;

function checkDekBytes(dek: Buffer, field: string): void {
  if (!Buffer.isBuffer(dek) || dek.length !== DEK_BYTES) {
    throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `${field} must be ${DEK_BYTES} bytes`, { field });
  }
}

function checkSizeMiB(sizeMiB: number): void {
  if (!Number.isSafeInteger(sizeMiB) || sizeMiB < 1 || sizeMiB > 64 * 1024 * 1024) {
    throw new HypersealError('HS_ERR_QEMU_INVALID_SPEC', `disk size ${sizeMiB} MiB is out of range`, {
      field: 'sizeMiB',
    });
  }
}

const luksOptionList = (prefix: string, secretId: string): string =>
  [
    `${prefix}key-secret=${secretId}`,
    ...Object.entries(LUKS_OPTIONS).map(([k, v]) => `${prefix}${k}=${String(v)}`),
  ].join(',');

const secretObject = (id: string, fifo: string): string =>
  `secret,id=${id},file=${escapeOptionValue(fifo)},format=raw`;

// ---------------------------------------------------------------------------------------
// Running qemu-img / qemu-io

interface ToolRun {
  binary: string;
  args: string[];
  timeoutMs: number;
  onProgress?: ((percent: number) => void) | undefined;
  delivered?: Promise<void>;
}

class ToolError extends Error {
  constructor(
    message: string,
    readonly output: string,
  ) {
    super(message);
  }
}

function runTool(run: ToolRun): Promise<void> {
  const work = new Promise<void>((resolve, reject) => {
    const child = spawn(run.binary, run.args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' },
    });
    let output = '';
    let progressLine = '';
    const keep = (text: string): void => {
      if (output.length < 8192) output += text;
    };
    child.stdout.on('data', (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      if (run.onProgress === undefined) return keep(text);
      // `qemu-img convert -p` redraws "    (12.34/100%)\r"; anything else is output.
      progressLine += text;
      const parts = progressLine.split(/[\r\n]/);
      progressLine = parts.pop() ?? '';
      for (const part of parts) {
        const m = /\((\d+(?:\.\d+)?)\/100%\)/.exec(part);
        if (m !== null) run.onProgress(Math.min(100, Number(m[1])));
        else if (part.trim() !== '') keep(`${part}\n`);
      }
    });
    child.stderr.on('data', (chunk: Buffer) => keep(chunk.toString('utf8')));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new ToolError(`${run.binary} did not finish within ${run.timeoutMs} ms`, output));
    }, run.timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new ToolError(`${run.binary} failed to start: ${err.message}`, ''));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new ToolError(`${run.binary} exited with ${code ?? signal}`, output.trim()));
    });
    // A tool that never opens its secret's FIFO is killed once the feeder gives up.
    run.delivered?.catch(() => child.kill('SIGKILL'));
  });
  return run.delivered === undefined ? work : raceDelivery(work, run.delivered);
}

function toolFailure(err: unknown, what: string, path: string, binary: string): HypersealError {
  if (err instanceof HypersealError) return err;
  const output = err instanceof ToolError ? err.output : '';
  if (WRONG_KEY.test(output)) {
    return new HypersealError(
      'HS_ERR_QEMU_KEY_REJECTED',
      `${what}: ${path} does not open with the key given`,
      {
        path,
      },
    );
  }
  const message = err instanceof Error ? err.message : String(err);
  return new HypersealError(
    'HS_ERR_QEMU_TOOL_FAILED',
    `${what}: ${message}${output === '' ? '' : `: ${output}`}`,
    { tool: binary, path },
    { cause: err },
  );
}

/** Runs `attempt` with a private directory for FIFOs; retries QEMU's calibration glitch. */
async function withSecretDir<T>(opts: ImageToolOptions, attempt: (dir: string) => Promise<T>): Promise<T> {
  const own = opts.secretDir === undefined ? await mkdtemp(join(tmpdir(), 'hs-secrets-')) : undefined;
  try {
    const dir = opts.secretDir ?? (own as string);
    for (let i = 1; ; i++) {
      try {
        return await attempt(dir);
      } catch (err) {
        const output = err instanceof ToolError ? err.output : '';
        if (!output.includes(CALIBRATION_GLITCH) || i >= CALIBRATION_ATTEMPTS) throw err;
        trace('qemu', 'PBKDF calibration glitch, retrying', { attempt: i });
      }
    }
  } finally {
    if (own !== undefined) await rm(own, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------
// Files

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

async function removeIfExists(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

const tempNameFor = (path: string): string => `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;

/**
 * Makes `path` from a temporary file that `make` fills: refuses an existing `path`, sets
 * mode 0600 (guest data), fsyncs, links into place, fsyncs the directory.
 */
async function createInPlace(path: string, make: (tmp: string) => Promise<void>): Promise<void> {
  if (await exists(path)) {
    throw new HypersealError('HS_ERR_QEMU_DISK_EXISTS', `${path} already exists`, { path });
  }
  const tmp = tempNameFor(path);
  // Made here first, exclusively and 0600: qemu-img then writes into this inode and keeps
  // its mode, so a decrypted copy is never readable by others while it is being written
  // (qemu-img would create it 0644), and no one can have put a link at the name.
  await (await open(tmp, 'wx', 0o600)).close();
  try {
    await make(tmp);
    const fh = await open(tmp, 'r');
    try {
      await fh.chmod(0o600);
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await link(tmp, path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new HypersealError('HS_ERR_QEMU_DISK_EXISTS', `${path} already exists`, { path });
      }
      throw err;
    }
  } finally {
    await removeIfExists(tmp);
  }
  await fsyncPath(dirname(path));
}

// ---------------------------------------------------------------------------------------
// Inspection

export interface ImageInfo {
  format: string;
  virtualSize: number;
  encrypted: boolean;
}

/**
 * `qemu-img info` of an image in a known format (never probed: a guest-written raw file
 * could pose as qcow2 with a backing file). Needs no key: it does not unlock anything,
 * so it proves nothing about a key (checkDek does).
 */
export async function imageInfo(
  path: string,
  format: 'qcow2' | 'luks' | 'raw',
  opts: Pick<ImageToolOptions, 'qemuImgBinary'> = {},
): Promise<ImageInfo> {
  const binary = opts.qemuImgBinary ?? 'qemu-img';
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn(binary, ['info', '-U', '--output=json', '-f', format, path], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    child.once('error', (err) => reject(new ToolError(`${binary} failed to start: ${err.message}`, '')));
    child.once('close', (code) =>
      code === 0
        ? resolve(stdout)
        : reject(new ToolError(`${binary} info exited with ${code}`, stderr.trim())),
    );
  }).catch((err: unknown) => {
    throw toolFailure(err, 'reading image information', path, binary);
  });
  const j = JSON.parse(out) as { format?: unknown; 'virtual-size'?: unknown; encrypted?: unknown };
  if (typeof j.format !== 'string' || typeof j['virtual-size'] !== 'number') {
    throw new HypersealError(
      'HS_ERR_QEMU_TOOL_FAILED',
      `qemu-img info of ${path} gave ${out.slice(0, 200)}`,
      {
        tool: binary,
        path,
      },
    );
  }
  return { format: j.format, virtualSize: j['virtual-size'], encrypted: j.encrypted === true };
}

/**
 * Whether `dek` opens the encrypted image at `path` (qcow2 with LUKS inside, or a raw
 * LUKS container such as an encrypted NVRAM store): qemu-io unlocks a key slot and quits.
 * Read-only and with shared locks, so it also works on the image of a running VM.
 * Resolves false for a wrong key; throws for anything else (no such file, not encrypted).
 */
export async function checkDek(
  path: string,
  dek: Buffer,
  format: 'qcow2' | 'luks' = 'qcow2',
  opts: ImageToolOptions = {},
): Promise<boolean> {
  const passphrase = luksPassphrase(dek);
  const binary = opts.qemuIoBinary ?? 'qemu-io';
  try {
    await withSecretDir(opts, (dir) =>
      withSecretFifos(dir, { key: passphrase }, ({ paths, delivered }) =>
        runTool({
          binary,
          args: [
            '--object',
            secretObject('hs-key', paths.key as string),
            '-r',
            '-U',
            '--image-opts',
            openOptions(format, path, 'hs-key'),
            '-c',
            'quit',
          ],
          timeoutMs: opts.timeoutMs ?? 60_000,
          delivered,
        }),
      ),
    );
    return true;
  } catch (err) {
    const e = toolFailure(err, 'checking a key', path, binary);
    if (e.code === 'HS_ERR_QEMU_KEY_REJECTED') return false;
    throw e;
  } finally {
    passphrase.fill(0);
  }
}

/** --image-opts for opening an image, decrypting it with secret `secretId` when given. */
function openOptions(format: 'qcow2' | 'luks' | 'raw', path: string, secretId?: string): string {
  const file = `file.driver=file,file.filename=${escapeOptionValue(path)}`;
  if (secretId === undefined) return `driver=${format},${file}`;
  // -blockdev style strictness wants encrypt.format next to encrypt.key-secret (§2.2).
  return format === 'qcow2'
    ? `driver=qcow2,${file},encrypt.format=luks,encrypt.key-secret=${secretId}`
    : `driver=luks,${file},key-secret=${secretId}`;
}

// ---------------------------------------------------------------------------------------
// Creating, converting, resizing

/** An empty qcow2 disk of `sizeMiB` MiB encrypted with `dek`; mode 0600; never overwrites. */
export async function createEncryptedQcow2(
  path: string,
  sizeMiB: number,
  dek: Buffer,
  qemuImgBinary?: string,
  opts: ImageToolOptions = {},
): Promise<void> {
  checkSizeMiB(sizeMiB);
  const passphrase = luksPassphrase(dek);
  const binary = qemuImgBinary ?? opts.qemuImgBinary ?? 'qemu-img';
  try {
    await createInPlace(path, (tmp) =>
      withSecretDir(opts, (dir) =>
        withSecretFifos(dir, { key: passphrase }, ({ paths, delivered }) =>
          runTool({
            binary,
            args: [
              'create',
              '-q',
              '--object',
              secretObject('hs-key', paths.key as string),
              '-f',
              'qcow2',
              '-o',
              `cluster_size=${QCOW2_CLUSTER_SIZE},encrypt.format=luks,${luksOptionList('encrypt.', 'hs-key')}`,
              tmp,
              `${sizeMiB}M`,
            ],
            timeoutMs: opts.timeoutMs ?? 120_000,
            delivered,
          }),
        ),
      ),
    );
  } catch (err) {
    throw toolFailure(err, `creating encrypted disk ${path}`, path, binary);
  } finally {
    passphrase.fill(0);
  }
}

/** Grows an encrypted qcow2 disk to `sizeMiB` MiB (qemu-img refuses to shrink it). */
export async function resizeEncryptedQcow2(
  path: string,
  sizeMiB: number,
  dek: Buffer,
  qemuImgBinary?: string,
  opts: ImageToolOptions = {},
): Promise<void> {
  checkSizeMiB(sizeMiB);
  const passphrase = luksPassphrase(dek);
  const binary = qemuImgBinary ?? opts.qemuImgBinary ?? 'qemu-img';
  try {
    await withSecretDir(opts, (dir) =>
      withSecretFifos(dir, { key: passphrase }, ({ paths, delivered }) =>
        runTool({
          binary,
          args: [
            'resize',
            '-q',
            '--object',
            secretObject('hs-key', paths.key as string),
            '--image-opts',
            openOptions('qcow2', path, 'hs-key'),
            `${sizeMiB}M`,
          ],
          timeoutMs: opts.timeoutMs ?? 120_000,
          delivered,
        }),
      ),
    );
    await fsyncPath(path);
  } catch (err) {
    throw toolFailure(err, `resizing encrypted disk ${path}`, path, binary);
  } finally {
    passphrase.fill(0);
  }
}

type Layout = { plain: 'qcow2'; encrypted: 'qcow2' } | { plain: 'raw'; encrypted: 'luks' };
const DISK: Layout = { plain: 'qcow2', encrypted: 'qcow2' };
const NVRAM: Layout = { plain: 'raw', encrypted: 'luks' };

async function convert(layout: Layout, opts: ConvertOptions, what: string): Promise<void> {
  const { src, dst } = opts;
  if (src.dek !== undefined) checkDekBytes(src.dek, 'src.dek');
  if (dst.dek !== undefined) checkDekBytes(dst.dek, 'dst.dek');
  const binary = opts.qemuImgBinary ?? 'qemu-img';
  const srcFormat = src.dek === undefined ? layout.plain : layout.encrypted;
  const dstFormat = dst.dek === undefined ? layout.plain : layout.encrypted;
  const secrets: Record<string, Buffer> = {};
  if (src.dek !== undefined) secrets.src = luksPassphrase(src.dek);
  if (dst.dek !== undefined) secrets.dst = luksPassphrase(dst.dek);
  try {
    const before = await imageInfo(src.path, srcFormat, opts);
    await createInPlace(dst.path, (tmp) =>
      withSecretDir(opts, (dir) =>
        withSecretFifos(dir, secrets, ({ paths, delivered }) => {
          const args = ['convert', ...(opts.onProgress === undefined ? [] : ['-p'])];
          for (const [id, fifo] of Object.entries(paths))
            args.push('--object', secretObject(`hs-${id}`, fifo));
          if (src.dek === undefined) args.push('-f', srcFormat, src.path);
          else args.push('--image-opts', openOptions(srcFormat, src.path, 'hs-src'));
          args.push('-O', dstFormat);
          const create: string[] = [];
          if (dstFormat === 'qcow2') create.push(`cluster_size=${QCOW2_CLUSTER_SIZE}`);
          if (dst.dek !== undefined) {
            create.push(
              dstFormat === 'qcow2'
                ? `encrypt.format=luks,${luksOptionList('encrypt.', 'hs-dst')}`
                : luksOptionList('', 'hs-dst'),
            );
          }
          if (create.length > 0) args.push('-o', create.join(','));
          args.push(tmp);
          return runTool({
            binary,
            args,
            timeoutMs: opts.timeoutMs ?? 3_600_000,
            onProgress: opts.onProgress,
            delivered,
          });
        }),
      ).then(async () => {
        const after = await imageInfo(tmp, dstFormat, opts);
        if (after.virtualSize !== before.virtualSize || after.encrypted !== (dst.dek !== undefined)) {
          throw new HypersealError(
            'HS_ERR_QEMU_TOOL_FAILED',
            `${what}: ${tmp} came out ${after.virtualSize} bytes (encrypted: ${after.encrypted}), expected ${before.virtualSize} (encrypted: ${dst.dek !== undefined})`,
            { tool: binary, path: dst.path },
          );
        }
      }),
    );
    opts.onProgress?.(100);
  } catch (err) {
    throw toolFailure(err, what, src.path, binary);
  } finally {
    for (const s of Object.values(secrets)) s.fill(0);
  }
}

/**
 * Copies a qcow2 disk to a new qcow2 disk, decrypting the source with `src.dek` and
 * encrypting the copy with `dst.dek` when given: encrypt (no src.dek), decrypt (no
 * dst.dek), deep rekey (both) or clone. Keeps the virtual size; unallocated clusters stay
 * unallocated. `dst.path` must not exist; the copy is fsynced when this returns, so the
 * caller's atomic swap publishes complete data.
 */
export function convertImage(opts: ConvertOptions): Promise<void> {
  return convert(DISK, opts, `converting disk ${opts.src.path} to ${opts.dst.path}`);
}

/**
 * The same for a UEFI variable store: plain (raw OVMF VARS file) or encrypted (raw LUKS
 * container whose payload is exactly the VARS file, qemu-experiments §2.4).
 */
export function convertNvram(opts: ConvertOptions): Promise<void> {
  return convert(NVRAM, opts, `converting NVRAM ${opts.src.path} to ${opts.dst.path}`);
}

/**
 * A VM's encrypted variable store, made from the firmware's VARS template. The payload
 * must be a valid VARS image of exactly the template's size: OVMF crashes (#GP on serial,
 * no QEMU error) on anything else, so it is always converted from the template.
 */
export function createEncryptedNvram(
  templatePath: string,
  dstPath: string,
  dek: Buffer,
  qemuImgBinary?: string,
  opts: ImageToolOptions = {},
): Promise<void> {
  return convertNvram({
    ...opts,
    ...(qemuImgBinary === undefined ? {} : { qemuImgBinary }),
    src: { path: templatePath },
    dst: { path: dstPath, dek },
  });
}

/**
 * createEncryptedNvram from a store given as bytes (a Secure Boot store with an
 * organisation's keys, written by src/secureboot before the VM's first boot). The bytes
 * pass through a temporary file in a private directory: a store that never booted holds
 * only the firmware's template and public certificates, nothing of the guest's.
 */
export async function createEncryptedNvramFromBytes(
  store: Uint8Array,
  dstPath: string,
  dek: Buffer,
  qemuImgBinary?: string,
  opts: ImageToolOptions = {},
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'hs-vars-'));
  try {
    const src = join(dir, 'OVMF_VARS.fd');
    const fh = await open(src, 'wx', 0o600);
    try {
      await fh.writeFile(store);
    } finally {
      await fh.close();
    }
    await createEncryptedNvram(src, dstPath, dek, qemuImgBinary, opts);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** LUKS1 header: magic "LUKS\xba\xbe", then payload-offset (512-byte sectors, BE u32) at 104. */
const LUKS_MAGIC = Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]);

/**
 * The payload size of a raw LUKS container, from its header (no key, no qemu-img), or
 * undefined when `path` is not one.
 */
export async function luksPayloadBytes(path: string): Promise<number | undefined> {
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(108);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    if (bytesRead < head.length || !head.subarray(0, 6).equals(LUKS_MAGIC)) return undefined;
    const { size } = await fh.stat();
    return size - head.readUInt32BE(104) * 512;
  } finally {
    await fh.close();
  }
}
