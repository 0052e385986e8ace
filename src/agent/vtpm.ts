/**
 * A VM's vTPM 2.0: one swtpm per VM, started by the agent before QEMU, with its state in
 * the VM's home (`<home>/tpm/`) and its control socket beside it (`<home>/swtpm.sock`).
 *
 * - Lifetime. swtpm runs in its own session, detached from the agent, with `--terminate`:
 *   it ends when QEMU (its one client) closes the control channel, and it outlives an
 *   agent restart exactly as QEMU does. Not `--daemon`: swtpm 0.7 then reads its `--key`
 *   file twice (once before and once after forking), which a FIFO cannot serve.
 * - Encrypted VMs. The state files are encrypted by swtpm itself (`--key`, AES-256-CBC)
 *   under a key derived from the VM's home DEK with HKDF
 *   (domain-separated: the DEK itself never leaves the agent). The key reaches swtpm
 *   through a FIFO (secret-fifo.ts), read once at start; never a file, argv or log line.
 *   A plain VM's state is plain, like its NVRAM.
 */
import { spawn } from 'node:child_process';
import { hkdfSync } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { HypersealError } from '../errors.js';
import { withSecretFifos } from '../qemu/secret-fifo.js';
import { isPidAlive } from '../qemu/vm-process.js';
import { trace } from '../trace.js';

export const VTPM_FILES = {
  stateDir: 'tpm',
  socket: 'swtpm.sock',
  pid: 'swtpm.pid',
  log: 'swtpm.log',
} as const;

/** The swtpm state key of an encrypted VM (hex for swtpm's `format=hex`); the caller zeroizes it. */
export function vtpmStateKey(homeDek: Buffer): Buffer {
  const key = Buffer.from(hkdfSync('sha256', homeDek, Buffer.alloc(0), 'hyperseal vtpm state v1', 32));
  const hex = Buffer.from(key.toString('hex'));
  key.fill(0);
  return hex;
}

/** The pid of this VM's swtpm, when one runs (its pidfile names a live swtpm on this state dir). */
export function runningSwtpm(home: string): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(join(home, VTPM_FILES.pid), 'utf8').trim());
  } catch {
    return undefined;
  }
  if (!Number.isSafeInteger(pid) || pid <= 1 || !isPidAlive(pid)) return undefined;
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return argv.includes('swtpm') && argv.includes(join(home, VTPM_FILES.stateDir)) ? pid : undefined;
  } catch {
    return undefined;
  }
}

export interface StartSwtpmOptions {
  home: string;
  /** The home DEK of an encrypted VM: the state is then encrypted. */
  homeDek?: Buffer | undefined;
  binary?: string;
  timeoutMs?: number;
}

/**
 * Starts the VM's swtpm (or keeps the one that runs) and returns its control socket's
 * path once it listens.
 */
export async function startSwtpm(opts: StartSwtpmOptions): Promise<string> {
  const { home } = opts;
  const socket = join(home, VTPM_FILES.socket);
  if (runningSwtpm(home) !== undefined && existsSync(socket)) return socket;
  const stateDir = join(home, VTPM_FILES.stateDir);
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  rmSync(socket, { force: true });
  rmSync(join(home, VTPM_FILES.pid), { force: true });
  const args = [
    'socket',
    '--tpm2',
    '--tpmstate',
    `dir=${stateDir},mode=0600`,
    '--ctrl',
    `type=unixio,path=${socket}`,
    '--pid',
    `file=${join(home, VTPM_FILES.pid)}`,
    '--log',
    `file=${join(home, VTPM_FILES.log)},level=1`,
    '--terminate',
  ];
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const launch = (keyFifo?: string): Promise<void> =>
    new Promise((resolve, reject) => {
      const child = spawn(
        opts.binary ?? 'swtpm',
        keyFifo === undefined ? args : [...args, '--key', `file=${keyFifo},format=hex,mode=aes-256-cbc`],
        { detached: true, stdio: 'ignore' },
      );
      child.unref();
      let done = false;
      const finish = (err?: Error): void => {
        if (done) return;
        done = true;
        clearInterval(poll);
        if (err) reject(err);
        else resolve();
      };
      child.once('error', (err) =>
        finish(new HypersealError('HS_ERR_AGENT_DRIVER', `cannot start swtpm: ${err.message}`)),
      );
      child.once('exit', (code) =>
        finish(
          new HypersealError(
            'HS_ERR_AGENT_DRIVER',
            `swtpm exited (${code}) at start; see ${join(home, VTPM_FILES.log)}`,
          ),
        ),
      );
      const deadline = Date.now() + timeoutMs;
      const poll = setInterval(() => {
        if (existsSync(socket) && existsSync(join(home, VTPM_FILES.pid))) finish();
        else if (Date.now() > deadline) {
          child.kill('SIGKILL');
          finish(new HypersealError('HS_ERR_AGENT_DRIVER', `swtpm did not listen on ${socket} in time`));
        }
      }, 20);
    });
  if (opts.homeDek === undefined) await launch();
  else {
    const key = vtpmStateKey(opts.homeDek);
    try {
      await withSecretFifos(home, { key }, ({ paths }) => launch(paths.key), { timeoutMs });
    } finally {
      key.fill(0);
    }
  }
  trace('agent', 'swtpm started', { home, encrypted: opts.homeDek !== undefined });
  return socket;
}

/** Ends the VM's swtpm if it still runs (QEMU failed to start, or the VM is removed). */
export function stopSwtpm(home: string): void {
  const pid = runningSwtpm(home);
  if (pid !== undefined) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // gone meanwhile
    }
  }
}
