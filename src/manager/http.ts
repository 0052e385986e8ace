/**
 * The manager's REST plumbing: every route is declared with its schemas (TypeBox →
 * JSON Schema, validated by fastify) and the privilege it needs, and the OpenAPI document
 * is generated from those same declarations, so documentation and validation cannot
 * drift. Errors leave as `{ code, message }` with the status from the error registry.
 */
import type { Static, TSchema } from '@sinclair/typebox';
import { Type } from '@sinclair/typebox';
import Fastify from 'fastify';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { HypersealError, httpStatusOf } from '../errors.js';
import type { EventType } from '../events/index.js';

/** 'public': no login. 'authenticated': any logged-in user. Otherwise privilege id(s), all required. */
export type RoutePrivilege = 'public' | 'authenticated' | string | readonly string[];

export interface Principal {
  userId: string;
  name: string;
  privileges: ReadonlySet<string>;
  via: 'token' | 'session';
}

export interface RouteContext<P, Q, B> {
  params: P;
  query: Q;
  body: B;
  /** Undefined only on public routes. */
  user: Principal | undefined;
  ip: string;
  request: FastifyRequest;
  reply: FastifyReply;
}

export interface Route<P extends TSchema, Q extends TSchema, B extends TSchema, R extends TSchema> {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** fastify style: /vms/:id */
  url: string;
  summary: string;
  tag: string;
  privilege: RoutePrivilege;
  /** The event a successful call records (CONVENTIONS §7); required for state-changing routes. */
  event?: EventType;
  /** The SDK method's name, where the one derived from method and URL reads badly. */
  operationId?: string;
  params?: P;
  query?: Q;
  body?: B;
  response: R;
  /** Success status; 202 for actions answered with a task. */
  status?: 200 | 201 | 202 | 204;
  handler(ctx: RouteContext<Static<P>, Static<Q>, Static<B>>): Promise<Static<R>>;
}

/** A route with its types erased, for tables of routes. */
export interface AnyRoute {
  method: Route<TSchema, TSchema, TSchema, TSchema>['method'];
  url: string;
  summary: string;
  tag: string;
  privilege: RoutePrivilege;
  event?: EventType;
  operationId?: string;
  params?: TSchema;
  query?: TSchema;
  body?: TSchema;
  response: TSchema;
  status?: 200 | 201 | 202 | 204;
  handler(ctx: RouteContext<unknown, unknown, unknown>): Promise<unknown>;
}

/** Declares a route with full type inference for its handler. */
export function route<
  P extends TSchema = TSchema,
  Q extends TSchema = TSchema,
  B extends TSchema = TSchema,
  R extends TSchema = TSchema,
>(r: Route<P, Q, B, R>): AnyRoute {
  return r as unknown as AnyRoute;
}

export const ErrorBody = Type.Object(
  {
    code: Type.String({ description: 'Stable error code, see docs/errors.md' }),
    message: Type.String(),
  },
  { $id: 'Error' },
);

export interface HttpOptions {
  routes: readonly AnyRoute[];
  /** Resolves the caller from the request (bearer token or session cookie), or undefined. */
  authenticate(request: FastifyRequest): Promise<Principal | undefined>;
  /** Called on every refused request (401/403), for the audit trail. */
  onRefused?(request: FastifyRequest, principal: Principal | undefined, error: HypersealError): Promise<void>;
  bodyLimitBytes?: number;
  /** Serve HTTPS with this certificate (the manager always does; tests may not). */
  https?: { cert: string; key: string };
  title?: string;
  version?: string;
}

function requiredPrivileges(p: RoutePrivilege): string[] {
  if (p === 'public' || p === 'authenticated') return [];
  return typeof p === 'string' ? [p] : [...p];
}

export function buildHttpApp(opts: HttpOptions): FastifyInstance {
  const app = Fastify({
    logger: false,
    ...(opts.https
      ? { https: { cert: opts.https.cert, key: opts.https.key, minVersion: 'TLSv1.2' as const } }
      : {}),
    bodyLimit: opts.bodyLimitBytes ?? 1 << 20,
    ajv: {
      customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true, allErrors: false },
    },
  });

  app.setErrorHandler((err: unknown, _request, reply) => {
    const status = httpStatusOf(err);
    if (err instanceof HypersealError) {
      void reply.status(status).send({ code: err.code, message: err.message });
      return;
    }
    const fe = err as { validation?: unknown; statusCode?: number; message?: string; code?: string };
    if (fe.validation !== undefined) {
      void reply
        .status(400)
        .send({ code: 'HS_ERR_INVALID_ARGUMENT', message: fe.message ?? 'invalid request' });
      return;
    }
    if (fe.statusCode !== undefined && fe.statusCode >= 400 && fe.statusCode < 500) {
      // fastify's own client errors (bad JSON, body too large, unsupported media type),
      // with statuses from the error registry: 413 for too large, 400 for the rest.
      const tooLarge = fe.statusCode === 413;
      void reply.status(tooLarge ? 413 : 400).send({
        code: tooLarge ? 'HS_ERR_TOO_LARGE' : 'HS_ERR_INVALID_ARGUMENT',
        message: fe.message ?? '',
      });
      return;
    }
    process.emitWarning(
      `manager: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
    );
    void reply.status(500).send({ code: 'HS_ERR_INTERNAL', message: 'internal error' });
  });

  app.setNotFoundHandler((request, reply) => {
    void reply
      .status(404)
      .send({ code: 'HS_ERR_NOT_FOUND', message: `no route ${request.method} ${request.url}` });
  });

  /** Who sent each request, resolved in onRequest (before the body is parsed or validated). */
  const principals = new WeakMap<FastifyRequest, Principal>();
  const refuse = async (
    request: FastifyRequest,
    user: Principal | undefined,
    err: unknown,
  ): Promise<void> => {
    if (err instanceof HypersealError && (err.status === 401 || err.status === 403)) {
      await opts.onRefused?.(request, user, err);
    }
  };

  for (const r of opts.routes) {
    const required = requiredPrivileges(r.privilege);
    app.route({
      method: r.method,
      url: `/api/v1${r.url}`,
      schema: {
        ...(r.params ? { params: r.params } : {}),
        ...(r.query ? { querystring: r.query } : {}),
        ...(r.body ? { body: r.body } : {}),
      },
      // Authentication and the privilege check run first, in onRequest: an anonymous or
      // unprivileged caller gets 401/403 before its body is parsed or validated, so it
      // learns nothing of the schema (and a malformed body is not a way around the check).
      onRequest: async (request) => {
        if (r.privilege === 'public') return;
        let user: Principal | undefined;
        try {
          user = await opts.authenticate(request);
        } catch (err) {
          // A malformed, unknown or expired token is a refusal too, and is audited as one.
          await refuse(request, undefined, err);
          throw err;
        }
        if (user === undefined) {
          const e = new HypersealError(
            'HS_ERR_AUTH_REQUIRED',
            'log in or send an API token (Authorization: Bearer …)',
          );
          await refuse(request, undefined, e);
          throw e;
        }
        const missing = required.filter((p) => !user.privileges.has(p));
        if (missing.length > 0) {
          const e = new HypersealError(
            'HS_ERR_AUTH_FORBIDDEN',
            `${user.name} lacks the privilege${missing.length > 1 ? 's' : ''} ${missing.join(', ')} for ${r.method} /api/v1${r.url}`,
          );
          await refuse(request, user, e);
          throw e;
        }
        principals.set(request, user);
      },
      handler: async (request, reply) => {
        const user = principals.get(request);
        let result: unknown;
        try {
          result = await r.handler({
            params: request.params,
            query: request.query,
            body: request.body,
            user,
            ip: request.ip,
            request,
            reply,
          });
        } catch (err) {
          // Object-level refusals made by services (e.g. granting a role one does not hold).
          // Public routes (login, enrollment) record their own refusal events.
          if (r.privilege !== 'public') await refuse(request, user, err);
          throw err;
        }
        if (reply.sent) return reply;
        void reply.status(r.status ?? 200);
        return r.status === 204 ? reply.send() : reply.send(result);
      },
    });
  }

  const openapi = openApiDocument(
    opts.routes,
    opts.title ?? 'Hyperseal manager API',
    opts.version ?? '0.0.0',
  );
  app.get('/api/v1/openapi.json', async () => openapi);
  return app;
}

const pascal = (word: string): string =>
  word.replace(/(^|-)([a-z0-9])/g, (_m, _d, c: string) => c.toUpperCase());
const singular = (word: string): string =>
  word.endsWith('ies') ? `${word.slice(0, -3)}y` : word.endsWith('s') ? word.slice(0, -1) : word;

/**
 * The operation's name (and the SDK method's): a verb and the resource it acts on, e.g.
 * GET /vms → listVms, GET /vms/:id → getVm, POST /vms/:id/actions/power-on → powerOnVm,
 * PUT /users/:id/roles → setUserRoles. A segment followed by an id names one item (singular).
 */
export function operationIdOf(r: Pick<AnyRoute, 'method' | 'url' | 'response'>): string {
  const segments = r.url.split('/').filter((x) => x !== '');
  const words: string[] = [];
  let action: string | undefined;
  segments.forEach((seg, i) => {
    if (seg.startsWith(':')) return;
    if (segments[i - 1] === 'actions') {
      action = seg;
      return;
    }
    if (seg === 'actions') return;
    words.push(segments[i + 1]?.startsWith(':') === true ? singular(seg) : seg);
  });
  const noun = words.map(pascal).join('');
  if (action !== undefined) return `${pascal(action).replace(/^./, (c) => c.toLowerCase())}${noun}`;
  const last = segments.at(-1) ?? '';
  const isArray = (r.response as { type?: unknown }).type === 'array';
  switch (r.method) {
    case 'GET':
      return `${isArray && !last.startsWith(':') ? 'list' : 'get'}${noun}`;
    case 'POST':
      return `create${words.slice(0, -1).map(pascal).join('')}${pascal(singular(words.at(-1) ?? ''))}`;
    case 'PUT':
      return `set${noun}`;
    case 'PATCH':
      return `update${noun}`;
    case 'DELETE':
      return `delete${noun}`;
  }
}

/** OpenAPI 3.1 from the route table: the same schemas fastify validates with. */
export function openApiDocument(
  routes: readonly AnyRoute[],
  title: string,
  version: string,
): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  const strip = (s: TSchema): unknown => JSON.parse(JSON.stringify(s)) as unknown;
  for (const r of routes) {
    const path = `/api/v1${r.url}`.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
    const parameters: unknown[] = [];
    const props = (s: TSchema | undefined): Record<string, TSchema> =>
      (s as { properties?: Record<string, TSchema> } | undefined)?.properties ?? {};
    const requiredOf = (s: TSchema | undefined): string[] =>
      (s as { required?: string[] } | undefined)?.required ?? [];
    for (const [name, schema] of Object.entries(props(r.params))) {
      parameters.push({ name, in: 'path', required: true, schema: strip(schema) });
    }
    for (const [name, schema] of Object.entries(props(r.query))) {
      parameters.push({
        name,
        in: 'query',
        required: requiredOf(r.query).includes(name),
        schema: strip(schema),
      });
    }
    const status = String(r.status ?? 200);
    const op: Record<string, unknown> = {
      summary: r.summary,
      tags: [r.tag],
      operationId: r.operationId ?? operationIdOf(r),
      'x-privilege': r.privilege,
      ...(r.event !== undefined ? { 'x-event': r.event } : {}),
      parameters,
      responses: {
        [status]:
          status === '204'
            ? { description: 'No content' }
            : { description: 'OK', content: { 'application/json': { schema: strip(r.response) } } },
        default: {
          description: 'Error',
          content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
        },
      },
    };
    if (r.body)
      op.requestBody = { required: true, content: { 'application/json': { schema: strip(r.body) } } };
    if (r.privilege !== 'public') op.security = [{ bearer: [] }, { session: [] }];
    (paths[path] ??= {})[r.method.toLowerCase()] = op;
  }
  return {
    openapi: '3.1.0',
    info: { title, version },
    paths,
    components: {
      schemas: { Error: strip(ErrorBody) },
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer' },
        session: { type: 'apiKey', in: 'cookie', name: 'hs_session' },
      },
    },
  };
}
