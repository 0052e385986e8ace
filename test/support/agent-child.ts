// Test support: an agent in a process of its own (agent-process.ts), for the tests that
// kill it with SIGKILL at a named crash point. Nothing here ships.
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const agentScript = join(dirname(fileURLToPath(import.meta.url)), 'agent-process.js');

/** Starts the agent (enrolled in `dataDir` already) on `port`; resolves once it serves. */
export async function spawnAgent(dataDir: string, port: number, crashPoint?: string): Promise<ChildProcess> {
  const c = spawn(process.execPath, [agentScript, dataDir, String(port)], {
    env: { ...process.env, ...(crashPoint ? { HYPERSEAL_CRASH_POINT: crashPoint } : {}) },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    c.stdout?.on('data', (d: Buffer) => {
      if (d.toString().includes('ready')) resolve();
    });
    c.once('exit', (code, sig) => reject(new Error(`agent exited early: ${code ?? sig}`)));
  });
  return c;
}

/** How the process ended: its signal, or its exit code. */
export function exitOf(c: ChildProcess): Promise<NodeJS.Signals | number | null> {
  return new Promise((resolve) => {
    if (c.exitCode !== null || c.signalCode !== null) resolve(c.signalCode ?? c.exitCode);
    else c.once('exit', (code, sig) => resolve(sig ?? code));
  });
}

/** Polls `ok` (a throw counts as not yet) every 200 ms until it holds, or fails the test. */
export async function waitUntil(what: string, ok: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await ok().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.fail(`timed out waiting for ${what}`);
}
