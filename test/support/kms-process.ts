// Test support: the `hyperseal` binary as a child process — `kms serve` daemons that a
// test can kill -9 (the HA and drill tests), and one-shot commands (backup, restore,
// rotate-master-key) with their exit code and output.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './manager.js';

// Compiled to dist/test/support/; the binary is dist/src/cli/main.js.
export const BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');

export interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `hyperseal ARGS` to completion. */
export function runHyperseal(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Run> {
  return new Promise((done, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.once('error', reject);
    child.once('exit', (code, signal) => done({ code, signal, stdout, stderr }));
  });
}

export interface KmsDaemon {
  child: ChildProcess;
  port: number;
  output(): string;
  /** SIGTERM (clean stop) or SIGKILL; resolves when it has exited. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts `hyperseal kms serve --data-dir DIR … --listen 127.0.0.1:PORT` and waits until it serves. */
export async function startKmsDaemon(
  dataDir: string,
  extra: string[] = [],
  env: NodeJS.ProcessEnv = process.env,
  port?: number,
): Promise<KmsDaemon> {
  let last = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    const p = port ?? (await freePort());
    const child = spawn(
      process.execPath,
      [BIN, 'kms', 'serve', '--data-dir', dataDir, '--listen', `127.0.0.1:${p}`, ...extra],
      { env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    const exited = new Promise<void>((done) => child.once('exit', () => done()));
    const outcome = await new Promise<'ready' | 'exited' | 'timeout'>((done) => {
      const timer = setTimeout(() => done('timeout'), 30_000);
      child.stdout?.setEncoding('utf8').on('data', (c: string) => {
        out += c;
        if (/serving KMIP/.test(out)) {
          clearTimeout(timer);
          done('ready');
        }
      });
      child.stderr?.setEncoding('utf8').on('data', (c: string) => (out += c));
      void exited.then(() => {
        clearTimeout(timer);
        done('exited');
      });
    });
    if (outcome === 'ready') {
      return {
        child,
        port: p,
        output: () => out,
        stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
          if (child.exitCode === null && child.signalCode === null) child.kill(signal);
          await exited;
        },
      };
    }
    child.kill('SIGKILL');
    await exited;
    last = `${outcome}: ${out}`;
    if (!out.includes('cannot listen') || port !== undefined) break;
  }
  throw new Error(`kms serve did not start: ${last}`);
}
