/**
 * Per-subsystem tracing, switched on without touching code: HYPERSEAL_TRACE=kmip,qmp
 * (or `all`). Lines go to stderr as JSON. Callers pass already-redacted values: the
 * TTLV describer prints byte strings as their length only, so key material cannot leak.
 */
const enabled = new Set(
  (process.env.HYPERSEAL_TRACE ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean),
);

export function traceEnabled(subsystem: string): boolean {
  return enabled.has(subsystem) || enabled.has('all');
}

export function trace(subsystem: string, message: string, fields?: Record<string, unknown>): void {
  if (!traceEnabled(subsystem)) return;
  process.stderr.write(
    JSON.stringify({ time: new Date().toISOString(), subsystem, message, ...fields }) + '\n',
  );
}
