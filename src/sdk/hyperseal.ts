/**
 * The SDK's client: every API operation (generated, typed) plus what scripts need around
 * tasks — await one with progress callbacks, or run an action and await its task in one
 * call. Browser-safe: the transport decides how calls travel.
 */
import type { ErrorCode } from '../errors.js';
import { ErrorCodes, HypersealError } from '../errors.js';
import type { ListVmsQuery, Task, Vm } from './api.gen.js';
import { HypersealApi } from './api.gen.js';

export type TaskProgress = (task: Task) => void;

export interface WaitOptions {
  /** Called with the task each time it is polled (about once a second while it runs). */
  onProgress?: TaskProgress | undefined;
  /** Give up (HS_ERR_TASK_TIMEOUT) after this long; default 10 minutes. */
  timeoutMs?: number | undefined;
  /** Reject a failed task with its error instead of resolving with it. */
  throwOnFailure?: boolean | undefined;
}

export class Hyperseal extends HypersealApi {
  /** Long-polls a task until it succeeds or fails, reporting progress; resolves with the final task. */
  async waitTask(task: string | Task, opts: WaitOptions = {}): Promise<Task> {
    const id = typeof task === 'string' ? task : task.id;
    const deadline = Date.now() + (opts.timeoutMs ?? 600_000);
    for (;;) {
      const t = await this.getTask(id, { waitMs: 1000 });
      opts.onProgress?.(t);
      if (t.state === 'succeeded' || t.state === 'failed') {
        if (t.state === 'failed' && opts.throwOnFailure === true) throw taskError(t);
        return t;
      }
      if (Date.now() > deadline) {
        throw new HypersealError('HS_ERR_TASK_TIMEOUT', `task ${id} (${t.kind}) did not finish in time`);
      }
    }
  }

  /** Every VM (matching `query`), page by page: one listVms call answers at most 1,000 by default. */
  async listAllVms(query: Omit<ListVmsQuery, 'limit' | 'offset'> = {}, pageSize = 1000): Promise<Vm[]> {
    const vms: Vm[] = [];
    for (let offset = 0; ; offset += pageSize) {
      const page = await this.listVms({ ...query, limit: pageSize, offset });
      vms.push(...page);
      if (page.length < pageSize) return vms;
    }
  }

  /** Starts an action that answers with a task and waits for it; a failed task rejects with its error. */
  async run(started: Promise<Task>, onProgress?: TaskProgress): Promise<Task> {
    return this.waitTask(await started, { onProgress, throwOnFailure: true });
  }
}

/** The error a failed task carries, as a HypersealError with the task's code. */
export function taskError(t: Task): HypersealError {
  const code = t.error?.code ?? 'HS_ERR_INTERNAL';
  return new HypersealError(
    (code in ErrorCodes ? code : 'HS_ERR_INTERNAL') as ErrorCode,
    `task ${t.kind} on ${t.objectKind} ${t.objectId} failed: ${t.error?.message ?? 'unknown error'}`,
  );
}
