/** Enhanced logging: syslog targets, alert rules, the live event stream and export. */
import { Type } from '@sinclair/typebox';
import type { AnyRoute } from '../http.js';
import { route } from '../http.js';
import { IdParams, Name } from '../model.js';
import type { ManagerServices } from '../services.js';
import { actorOf } from './common.js';

const SyslogTargetBody = Type.Object(
  {
    name: Name,
    host: Type.String({ minLength: 1, maxLength: 253 }),
    port: Type.Integer({ minimum: 1, maximum: 65535 }),
    transport: Type.Union([Type.Literal('udp'), Type.Literal('tcp'), Type.Literal('tls')]),
    format: Type.Optional(Type.Union([Type.Literal('rfc5424'), Type.Literal('json'), Type.Literal('ocsf')])),
    caPem: Type.Optional(Type.String({ maxLength: 65_536 })),
    fromSeq: Type.Optional(Type.Union([Type.Literal('now'), Type.Literal('all')])),
  },
  { title: 'SyslogTargetCreate', additionalProperties: false },
);

const SyslogTargetPatch = Type.Object(
  {
    name: Type.Optional(Name),
    host: Type.Optional(Type.String({ minLength: 1, maxLength: 253 })),
    port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
    transport: Type.Optional(Type.Union([Type.Literal('udp'), Type.Literal('tcp'), Type.Literal('tls')])),
    format: Type.Optional(Type.Union([Type.Literal('rfc5424'), Type.Literal('json'), Type.Literal('ocsf')])),
    caPem: Type.Optional(Type.Union([Type.String({ maxLength: 65_536 }), Type.Null()])),
  },
  {
    title: 'SyslogTargetUpdate',
    additionalProperties: false,
    minProperties: 1,
    description: 'The fields to change; the others keep their values',
  },
);

const SyslogTarget = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    host: Type.String(),
    port: Type.Integer(),
    transport: Type.String(),
    format: Type.String(),
    queued: Type.Optional(Type.Integer()),
    sent: Type.Optional(Type.Integer()),
    connected: Type.Optional(Type.Boolean()),
    lastError: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  },
  { title: 'SyslogTarget' },
);

const AlertRule = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    enabled: Type.Boolean(),
    severity: Type.String(),
    match: Type.Object(
      {},
      { additionalProperties: true, description: 'types, objectKinds, result, changes' },
    ),
    actions: Type.Object(
      {},
      { additionalProperties: true, description: 'event, webhook {url, secret}, syslog' },
    ),
  },
  { title: 'AlertRule', additionalProperties: true },
);

const AlertRuleBody = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 120 }),
    enabled: Type.Optional(Type.Boolean()),
    severity: Type.Optional(Type.String()),
    match: Type.Object({}, { additionalProperties: true }),
    actions: Type.Optional(Type.Object({}, { additionalProperties: true })),
  },
  {
    title: 'AlertRuleCreate',
    additionalProperties: false,
    description: 'See docs/events.md#alert-rules; validated in full by the service',
  },
);

const AlertRulePatch = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 120 })),
    enabled: Type.Optional(Type.Boolean()),
    severity: Type.Optional(Type.String()),
    match: Type.Optional(Type.Object({}, { additionalProperties: true })),
    actions: Type.Optional(Type.Object({}, { additionalProperties: true })),
  },
  {
    title: 'AlertRuleUpdate',
    additionalProperties: false,
    minProperties: 1,
    description: 'The fields to change; the others keep their values',
  },
);

export function loggingRoutes(s: ManagerServices): AnyRoute[] {
  return [
    route({
      method: 'GET',
      url: '/syslog-targets',
      summary: 'List syslog targets with their queue and connection state',
      tag: 'logging',
      privilege: 'syslog.manage',
      response: Type.Array(SyslogTarget),
      handler: () => s.logging.listTargets(),
    }),
    route({
      method: 'POST',
      url: '/syslog-targets',
      summary: 'Add a syslog target (UDP, TCP or TLS; RFC 5424, JSON lines or OCSF)',
      tag: 'logging',
      privilege: 'syslog.manage',
      event: 'syslog.target-added',
      body: SyslogTargetBody,
      response: SyslogTarget,
      status: 201,
      handler: ({ body, user, ip }) =>
        s.logging.addTarget(actorOf(user, ip), {
          name: body.name,
          host: body.host,
          port: body.port,
          transport: body.transport,
          format: body.format ?? 'rfc5424',
          ...(body.caPem !== undefined ? { caPem: body.caPem } : {}),
          ...(body.fromSeq !== undefined ? { fromSeq: body.fromSeq } : {}),
        }),
    }),
    route({
      method: 'PATCH',
      url: '/syslog-targets/:id',
      summary: 'Change a syslog target in place; its queue and position in the event log are kept',
      tag: 'logging',
      privilege: 'syslog.manage',
      event: 'syslog.target-changed',
      params: IdParams,
      body: SyslogTargetPatch,
      response: SyslogTarget,
      handler: ({ params, body, user, ip }) =>
        s.logging.updateTarget(actorOf(user, ip), params.id, {
          ...(body.name !== undefined ? { name: body.name } : {}),
          ...(body.host !== undefined ? { host: body.host } : {}),
          ...(body.port !== undefined ? { port: body.port } : {}),
          ...(body.transport !== undefined ? { transport: body.transport } : {}),
          ...(body.format !== undefined ? { format: body.format } : {}),
          ...(body.caPem !== undefined ? { caPem: body.caPem } : {}),
        }),
    }),
    route({
      method: 'DELETE',
      url: '/syslog-targets/:id',
      summary: 'Remove a syslog target',
      tag: 'logging',
      privilege: 'syslog.manage',
      event: 'syslog.target-removed',
      params: IdParams,
      response: Type.Null(),
      status: 204,
      handler: async ({ params, user, ip }) => {
        await s.logging.removeTarget(actorOf(user, ip), params.id);
        return null;
      },
    }),
    route({
      method: 'GET',
      url: '/alert-rules',
      summary: 'List alert rules (webhook secrets redacted)',
      tag: 'logging',
      privilege: 'alert.manage',
      response: Type.Array(AlertRule),
      handler: async () => (await s.logging.listRules()) as never,
    }),
    route({
      method: 'POST',
      url: '/alert-rules',
      summary: 'Add an alert rule: match event types and changes; raise an alert, call a webhook',
      tag: 'logging',
      privilege: 'alert.manage',
      event: 'alert.rule-added',
      body: AlertRuleBody,
      response: AlertRule,
      status: 201,
      handler: async ({ body, user, ip }) => (await s.logging.addRule(actorOf(user, ip), body)) as never,
    }),
    route({
      method: 'PATCH',
      url: '/alert-rules/:id',
      summary:
        'Change an alert rule (enable, disable, edit) in one step; a webhook sent without its secret keeps the current one',
      tag: 'logging',
      privilege: 'alert.manage',
      event: 'alert.rule-changed',
      params: IdParams,
      body: AlertRulePatch,
      response: AlertRule,
      handler: async ({ params, body, user, ip }) =>
        (await s.logging.updateRule(actorOf(user, ip), params.id, body)) as never,
    }),
    route({
      method: 'DELETE',
      url: '/alert-rules/:id',
      summary: 'Remove an alert rule',
      tag: 'logging',
      privilege: 'alert.manage',
      event: 'alert.rule-removed',
      params: IdParams,
      response: Type.Null(),
      status: 204,
      handler: async ({ params, user, ip }) => {
        await s.logging.removeRule(actorOf(user, ip), params.id);
        return null;
      },
    }),
    route({
      method: 'GET',
      url: '/events/stream',
      operationId: 'streamEvents',
      summary: 'Follow events live (server-sent events); ?afterSeq=N replays from there first',
      tag: 'events',
      privilege: 'event.read',
      query: Type.Object({ afterSeq: Type.Optional(Type.Integer({ minimum: -1 })) }),
      response: Type.String({ description: 'text/event-stream' }),
      handler: async ({ query, reply, request }) => {
        reply.hijack();
        const res = reply.raw;
        res.writeHead(200, {
          'content-type': 'text/event-stream',
          'cache-control': 'no-store',
          connection: 'keep-alive',
        });
        let last = query.afterSeq ?? Number.MAX_SAFE_INTEGER;
        const send = (e: { seq: number }): void => {
          if (e.seq <= last) return;
          last = e.seq;
          res.write(`id: ${e.seq}\nevent: event\ndata: ${JSON.stringify(e)}\n\n`);
        };
        const pending: { seq: number }[] = [];
        let replaying = query.afterSeq !== undefined;
        const unsubscribe = s.events.subscribe((e) => (replaying ? pending.push(e) : send(e)));
        if (replaying) {
          for (const e of await s.events.since(query.afterSeq ?? -1)) send(e);
          for (const e of pending) send(e);
          replaying = false;
        }
        if (query.afterSeq === undefined) last = -1;
        const ping = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
        const stop = (): void => {
          clearInterval(ping);
          unsubscribe();
          unfollow();
        };
        // The manager stopping ends the stream (the client reconnects to the next one).
        const unfollow = s.events.follow(() => {
          stop();
          res.end();
        });
        request.raw.on('close', stop);
        return '';
      },
    }),
    route({
      method: 'GET',
      url: '/events/export',
      operationId: 'exportEvents',
      summary: 'Export events as JSON lines (oldest first), optionally after a sequence number',
      tag: 'events',
      privilege: 'event.export',
      query: Type.Object({
        afterSeq: Type.Optional(Type.Integer({ minimum: -1 })),
        limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, default: 100_000 })),
      }),
      response: Type.String({ description: 'application/x-ndjson' }),
      handler: async ({ query, reply }) => {
        const events = await s.events.since(query.afterSeq ?? -1, query.limit ?? 100_000);
        void reply.header('content-type', 'application/x-ndjson');
        return events.map((e) => JSON.stringify(e)).join('\n') + (events.length ? '\n' : '');
      },
    }),
  ];
}
