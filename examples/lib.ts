/**
 * What every example needs around the SDK, kept out of them so they stay short: the
 * client from the credentials `hyperseal up` writes, errors reported as
 * `<example>: <message> [HS_ERR_…]` with a non-zero exit, every VM (page by page), a
 * progress line for tasks, and command-line options.
 */
import { parseArgs } from 'node:util';
import type { ParseArgsConfig } from 'node:util';
import type { Task, TaskProgress, Vm } from '../src/index.js';
import { ApiClient, HypersealError } from '../src/index.js';

/**
 * Runs an example: `main` gets a client made from $HYPERSEAL_CREDENTIALS or
 * ./.hyperseal/credentials.json. A failure is one line on stderr and exit code 1 (2 for
 * a bad argument), like the CLI.
 */
export async function runExample(name: string, main: (api: ApiClient) => Promise<void>): Promise<void> {
  let api: ApiClient | undefined;
  try {
    api = ApiClient.fromCredentials();
    await main(api);
  } catch (err) {
    if (err instanceof HypersealError) {
      process.stderr.write(`${name}: ${err.message} [${err.code}]\n`);
      process.exitCode = err.code === 'HS_ERR_INVALID_ARGUMENT' ? 2 : 1;
    } else {
      process.stderr.write(`${name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 1;
    }
  } finally {
    api?.close();
  }
}

/** Command-line options (node:util parseArgs); a mistake is an HS_ERR_INVALID_ARGUMENT with the usage. */
export function options<T extends NonNullable<ParseArgsConfig['options']>>(
  spec: T,
  usage: string,
): ReturnType<typeof parseArgs<{ options: T }>> {
  try {
    return parseArgs({ args: process.argv.slice(2), options: spec });
  } catch (err) {
    const why = (err as Error).message.replace(/\. To specify a positional argument.*$/s, '');
    throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `${why}; usage: ${usage}`);
  }
}

/** One VM by exact name, or HS_ERR_NOT_FOUND. */
export async function vmNamed(api: ApiClient, name: string): Promise<Vm> {
  const vm = (await api.listVms({ name }))[0];
  if (vm === undefined) throw new HypersealError('HS_ERR_NOT_FOUND', `no VM named '${name}'`);
  return vm;
}

/** A task progress callback: on a terminal it redraws `label 40%`; elsewhere it stays quiet. */
export function progress(label: string): TaskProgress {
  return (t: Task) => {
    if (!process.stdout.isTTY) return;
    process.stdout.write(`\r  ${label} ${t.progress}%`);
    if (t.state === 'succeeded' || t.state === 'failed') process.stdout.write('\r\x1b[K');
  };
}
