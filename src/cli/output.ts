/**
 * How the CLI reports: results to stdout (text, or JSON with --json), errors to stderr as
 * `hyperseal: <message> [<CODE>]`, and exit codes scripts can rely on, derived from the
 * error's HTTP status — the registry's single mapping — so API and CLI agree.
 */
import { ErrorCodes, HypersealError } from '../errors.js';

export const ExitCode = {
  ok: 0,
  failure: 1,
  usage: 2,
  notFound: 3,
  forbidden: 4,
  conflict: 5,
  unavailable: 6,
  timeout: 7,
} as const;

export function exitCodeOf(err: unknown): number {
  if (!(err instanceof HypersealError)) return ExitCode.failure;
  const status: number = ErrorCodes[err.code].status;
  if (status === 400 || status === 413) return ExitCode.usage;
  if (status === 404) return ExitCode.notFound;
  if (status === 401 || status === 403) return ExitCode.forbidden;
  if (status === 409) return ExitCode.conflict;
  if (status === 504) return ExitCode.timeout;
  if (status === 502 || status === 503) return ExitCode.unavailable;
  return ExitCode.failure;
}

export function printError(err: unknown, json: boolean): void {
  if (json) {
    const body =
      err instanceof HypersealError
        ? err.toJSON()
        : { code: 'HS_ERR_INTERNAL', message: err instanceof Error ? err.message : String(err) };
    process.stderr.write(JSON.stringify({ error: body }) + '\n');
    return;
  }
  if (err instanceof HypersealError) process.stderr.write(`hyperseal: ${err.message} [${err.code}]\n`);
  else
    process.stderr.write(
      `hyperseal: ${err instanceof Error ? err.message : String(err)} [HS_ERR_INTERNAL]\n`,
    );
}

export function printResult(value: unknown, json: boolean, text: () => string): void {
  process.stdout.write((json ? JSON.stringify(value, null, 2) : text()) + '\n');
}

/** Prints an aligned table (text mode). */
export function table(rows: (string | number)[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => String(r[i] ?? '').length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((c, i) => String(c).padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
