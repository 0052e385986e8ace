/** Thin, strict wrapper over node:util parseArgs: unknown flags are usage errors. */
import { parseArgs } from 'node:util';
import { HypersealError } from '../errors.js';

type OptionSpec = Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>;

export interface Parsed {
  values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  positionals: string[];
}

export function parse(argv: string[], options: OptionSpec, usage: string): Parsed {
  try {
    const { values, positionals } = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
    return { values, positionals };
  } catch (err) {
    throw usageError(`${err instanceof Error ? err.message : String(err)}\nusage: ${usage}`);
  }
}

export function usageError(message: string): HypersealError {
  return new HypersealError('HS_ERR_INVALID_ARGUMENT', message);
}

export function str(p: Parsed, name: string): string | undefined {
  const v = p.values[name];
  return typeof v === 'string' ? v : undefined;
}

export function need(p: Parsed, name: string, usage: string): string {
  const v = str(p, name);
  if (v === undefined || v === '') throw usageError(`--${name} is required\nusage: ${usage}`);
  return v;
}

export function flag(p: Parsed, name: string): boolean {
  return p.values[name] === true;
}

export function int(p: Parsed, name: string, fallback?: number): number | undefined {
  const v = str(p, name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n)) throw usageError(`--${name} must be a whole number, got '${v}'`);
  return n;
}

/** Parses HOST:PORT (IPv6 as [::1]:5696). */
export function hostPort(value: string, defaultPort: number): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+))(?::(\d+))?$/.exec(value);
  if (m === null) throw usageError(`'${value}' is not HOST:PORT`);
  const port = m[3] === undefined ? defaultPort : Number(m[3]);
  if (port < 0 || port > 65535) throw usageError(`port ${port} is out of range`);
  return { host: m[1] ?? m[2] ?? '127.0.0.1', port };
}
