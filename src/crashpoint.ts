/**
 * Named crash points for the tests that prove multi-step operations survive a `kill -9`
 * at any moment. When HYPERSEAL_CRASH_POINT names the point reached, the process kills
 * itself with SIGKILL right there: no cleanup, no flushing, exactly what a power cut or
 * an OOM kill does. Unset (always, outside those tests) it costs one string comparison.
 */
export function crashPoint(name: string): void {
  if (process.env.HYPERSEAL_CRASH_POINT === name) process.kill(process.pid, 'SIGKILL');
}
