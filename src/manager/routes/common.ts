/** Small helpers shared by the resource routes. */
import type { FastifyReply } from 'fastify';
import type { Actor } from '../events.js';
import type { Principal } from '../http.js';
import type { ManagerServices } from '../services.js';
import type { Task } from '../tasks.js';

export function actorOf(user: Principal | undefined, ip: string): Actor {
  return { user: user?.name ?? 'anonymous', sourceIp: ip };
}

/** 202 with the task, or — with ?sync=true — 200 with the finished task (202 if it is still running). */
export async function taskReply(
  s: ManagerServices,
  task: Task,
  query: { sync?: boolean; timeoutMs?: number },
  reply: FastifyReply,
): Promise<Task> {
  if (query.sync !== true) return task;
  const done = await s.tasks.wait(task.id, query.timeoutMs ?? 120_000);
  if (done.state === 'succeeded' || done.state === 'failed') void reply.status(200);
  else void reply.status(202);
  await reply.send(done);
  return done;
}
