// Test support for examples/: a real manager with two sim hosts holding exactly the data
// `hyperseal up --demo` creates (src/cli/demo-data.ts), a credentials file for it, and
// the compiled example run as a child process the way a user runs it
// (`node dist/examples/X.js`, credentials from $HYPERSEAL_CREDENTIALS).
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { seedDemo } from '../../src/cli/demo-data.js';
import type { Vm } from '../../src/index.js';
import type { PlatformOptions, TestPlatform } from './manager.js';
import { startTestPlatform, useTempConfigHome } from './manager.js';

/** dist/examples, next to this file's dist/test/support. */
export const EXAMPLES_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'examples');

export interface DemoPlatform {
  platform: TestPlatform;
  /** The credentials file the examples read (0600, in the test's temporary config home). */
  credentials: string;
  /** A VM as the API shows it now, by name. */
  vm(name: string): Promise<Vm>;
  close(): Promise<void>;
}

/** Starts a manager with two sim hosts (by default), seeds the demo data, writes credentials. */
export async function startDemoPlatform(opts: PlatformOptions = {}): Promise<DemoPlatform> {
  const restore = useTempConfigHome();
  let platform: TestPlatform | undefined;
  try {
    platform = await startTestPlatform({ agents: 2, ...opts });
    const p = platform;
    await seedDemo(
      p.manager.services,
      p.agents.map((a) => a.hostId),
    );
    const credentials = writeCredentials(p);
    return {
      platform: p,
      credentials,
      vm: async (name) => {
        const found = (await p.api.listVms({ name }))[0];
        if (found === undefined) throw new Error(`no VM ${name}`);
        return found;
      },
      close: async () => {
        await p.close();
        restore();
      },
    };
  } catch (err) {
    await platform?.close();
    restore();
    throw err;
  }
}

/** Writes a credentials file for the platform's admin token; returns its path. */
export function writeCredentials(platform: TestPlatform): string {
  const dir = mkdtempSync(join(process.env.XDG_CONFIG_HOME ?? '', 'example-'));
  const path = join(dir, 'credentials.json');
  writeFileSync(
    path,
    JSON.stringify({
      managerUrl: platform.manager.url,
      caPath: platform.manager.caPath,
      token: platform.adminToken,
    }),
    { mode: 0o600 },
  );
  return path;
}

export interface ExampleRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The compiled `hyperseal` command. */
export const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');

/**
 * Runs a compiled script with `args` and the credentials in $HYPERSEAL_CREDENTIALS (plus
 * `env`), in `cwd` (default: a fresh temporary directory, so nothing lands in the
 * checkout). Resolves with its exit code and output, whatever the code.
 */
export function runScript(
  script: string,
  args: readonly string[],
  credentials: string,
  opts: { cwd?: string; env?: Record<string, string> } = {},
): Promise<ExampleRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], {
      cwd: opts.cwd ?? mkdtempSync(join(process.env.XDG_CONFIG_HOME ?? '', 'cwd-')),
      env: { ...process.env, ...opts.env, HYPERSEAL_CREDENTIALS: credentials },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Runs dist/examples/<name>.js (see runScript). */
export function runExample(
  name: string,
  args: readonly string[],
  credentials: string,
  cwd?: string,
): Promise<ExampleRun> {
  return runScript(join(EXAMPLES_DIR, `${name}.js`), args, credentials, cwd !== undefined ? { cwd } : {});
}

/** Runs `hyperseal ARGS…` (see runScript). */
export function runCli(
  args: readonly string[],
  credentials: string,
  env: Record<string, string> = {},
): Promise<ExampleRun> {
  return runScript(CLI, args, credentials, { env });
}

/** runExample, failing with its stderr unless it exits 0; resolves with its stdout. */
export async function runExampleOk(
  name: string,
  args: readonly string[],
  credentials: string,
): Promise<string> {
  const r = await runExample(name, args, credentials);
  if (r.code !== 0) throw new Error(`${name} ${args.join(' ')} exited ${r.code}:\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}
