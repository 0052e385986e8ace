/**
 * Hands secrets to QEMU and its tools without them ever touching a file, argv or a log.
 *
 * QEMU reads a `secret` object's `file=` with g_file_get_contents() when the object is
 * created. We give it a FIFO: QEMU's open(O_RDONLY) waits for a writer, we open the other
 * end, write the bytes, close, and QEMU reads them up to EOF. The bytes live in the pipe's
 * kernel buffer for that moment and nowhere else; the FIFO is unlinked afterwards.
 *
 * Why not the spawned process's stdio: Node's 'pipe' stdio entries are socketpairs, and
 * QEMU cannot open /dev/fd/N (i.e. /proc/self/fd/N) when N is a socket (ENXIO). Why not an
 * inherited fd at all: QEMU outlives the agent, and a fd table entry is one more place a
 * key would sit for the life of the VM.
 *
 * Our side never blocks a libuv thread: open(O_WRONLY|O_NONBLOCK) on a FIFO fails with
 * ENXIO while no reader has it open, so we poll every few milliseconds until the reader
 * is there (a reader blocked in open() counts as one), and give up with
 * HS_ERR_QEMU_SECRET_TIMEOUT after `timeoutMs`.
 *
 * The directory must be private (ours, not writable by group or others): the FIFO name
 * is random and mkfifo refuses an existing path, and the opened fd is checked to be the
 * FIFO we made, so nobody can substitute a file of their own for it.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { lstat, open, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { HypersealError } from '../errors.js';
import { trace } from '../trace.js';

export interface SecretFifoOptions {
  /** Until every FIFO has been opened by its reader. Default 30,000. */
  timeoutMs?: number;
  /** Between open attempts while no reader is there. Default 5. */
  pollMs?: number;
  /** Binary that makes the FIFOs. Default 'mkfifo' (coreutils; Node has no mkfifo). */
  mkfifoBinary?: string;
}

/** What `run` gets: a path per secret, and a promise that settles when all were read. */
export interface SecretFifoPaths {
  /** Absolute FIFO path per secret name. */
  readonly paths: Readonly<Record<string, string>>;
  /**
   * Resolves once every secret has been written and its FIFO closed; rejects with
   * HS_ERR_QEMU_SECRET_TIMEOUT (or the write error) otherwise. Race it against the
   * process you wait for, so that a process that never opens its FIFO fails fast.
   */
  readonly delivered: Promise<void>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function mkfifo(binary: string, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    // -m: the mode exactly, without the umask.
    execFile(binary, ['-m', '600', '--', path], { timeout: 10_000 }, (err, _stdout, stderr) => {
      if (err === null) resolve();
      else
        reject(
          new HypersealError(
            'HS_ERR_QEMU_TOOL_FAILED',
            `mkfifo ${path} failed: ${stderr.trim() || err.message}`,
            {
              tool: binary,
            },
          ),
        );
    });
  });
}

async function checkPrivateDir(dir: string): Promise<void> {
  let st;
  try {
    st = await lstat(dir);
  } catch (err) {
    throw new HypersealError(
      'HS_ERR_CONFIG',
      `secret directory ${dir} is unusable: ${(err as Error).message}`,
      {
        path: dir,
      },
    );
  }
  const uid = process.getuid?.();
  if (!st.isDirectory() || (uid !== undefined && st.uid !== uid) || (st.mode & 0o022) !== 0) {
    throw new HypersealError(
      'HS_ERR_CONFIG',
      `secret directory ${dir} must be a directory of ours that group and others cannot write (mode ${(st.mode & 0o777).toString(8)})`,
      { path: dir },
    );
  }
}

interface Feeder {
  name: string;
  path: string;
  ino: number;
  cancelled: boolean;
  done: Promise<void>;
}

/** Writes `secret` into the FIFO at `path` once a reader has it open. */
async function feed(
  f: Omit<Feeder, 'done'>,
  secret: Buffer,
  deadline: number,
  timeoutMs: number,
  pollMs: number,
): Promise<void> {
  let fh: FileHandle | undefined;
  for (;;) {
    if (f.cancelled) return;
    try {
      fh = await open(f.path, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOFOLLOW);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENXIO') throw err;
    }
    if (Date.now() >= deadline) {
      throw new HypersealError(
        'HS_ERR_QEMU_SECRET_TIMEOUT',
        `nobody opened the FIFO for secret "${f.name}" within ${timeoutMs} ms`,
        { secret: f.name, timeoutMs },
      );
    }
    await sleep(pollMs);
  }
  try {
    const st = await fh.stat();
    if (!st.isFIFO() || st.ino !== f.ino) {
      throw new HypersealError(
        'HS_ERR_CONFIG',
        `${f.path} is no longer the FIFO made for secret "${f.name}"`,
      );
    }
    let off = 0;
    while (off < secret.length) {
      try {
        const { bytesWritten } = await fh.write(secret, off, secret.length - off);
        off += bytesWritten;
      } catch (err) {
        // Larger than the pipe buffer (64 KiB) and the reader is slow: wait for room.
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
        if (f.cancelled || Date.now() >= deadline) {
          throw new HypersealError(
            'HS_ERR_QEMU_SECRET_TIMEOUT',
            `the reader of secret "${f.name}" did not take it within ${timeoutMs} ms`,
            { secret: f.name, timeoutMs },
          );
        }
        await sleep(1);
      }
    }
  } finally {
    await fh.close();
  }
}

async function removeQuietly(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      trace('qemu', 'secret FIFO not removed', { path, error: String(err) });
    }
  }
}

/**
 * Makes one FIFO per secret in `dir` (random names, mode 0600), runs `run` with their
 * paths while feeding each secret to whoever opens its FIFO first, and always removes the
 * FIFOs afterwards. Returns (or throws) what `run` does. Secrets not read by the time
 * `run` settles are never written. The buffers are not copied, so the caller may zeroize
 * them once this returns.
 */
export async function withSecretFifos<T>(
  dir: string,
  secrets: Readonly<Record<string, Buffer>>,
  run: (fifos: SecretFifoPaths) => Promise<T>,
  opts: SecretFifoOptions = {},
): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const pollMs = opts.pollMs ?? 5;
  await checkPrivateDir(dir);
  const feeders: Feeder[] = [];
  try {
    for (const [name, secret] of Object.entries(secrets)) {
      if (!Buffer.isBuffer(secret) || secret.length === 0) {
        throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `secret "${name}" is empty`);
      }
      const path = join(dir, `.hs-secret-${randomBytes(12).toString('hex')}`);
      await mkfifo(opts.mkfifoBinary ?? 'mkfifo', path);
      const st = await lstat(path);
      if (!st.isFIFO()) throw new HypersealError('HS_ERR_CONFIG', `${path} is not the FIFO just made`);
      feeders.push({ name, path, ino: st.ino, cancelled: false, done: Promise.resolve() });
    }
    const deadline = Date.now() + timeoutMs;
    // Each feeder polls its own `cancelled` flag, set below once `run` has settled.
    for (const f of feeders) f.done = feed(f, secrets[f.name] as Buffer, deadline, timeoutMs, pollMs);
    const delivered = Promise.all(feeders.map((f) => f.done)).then(() => undefined);
    // Handled here so an unobserved rejection is not fatal; `run` sees it through `delivered`.
    delivered.catch(() => undefined);
    const paths = Object.fromEntries(feeders.map((f) => [f.name, f.path]));
    return await run({ paths, delivered });
  } finally {
    for (const f of feeders) f.cancelled = true;
    await Promise.allSettled(feeders.map((f) => f.done));
    await Promise.all(feeders.map((f) => removeQuietly(f.path)));
  }
}

/**
 * Rejects with `delivered`'s error as soon as it fails, else settles like `work`. For
 * waiting on a process that must read its secrets first.
 */
export function raceDelivery<T>(work: Promise<T>, delivered: Promise<void>): Promise<T> {
  return Promise.race([work, delivered.then(() => work)]);
}
