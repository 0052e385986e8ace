/** Login, tokens, users, roles, tasks and events. */
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import type { AnyRoute } from '../http.js';
import { route } from '../http.js';
import { Event, Id, IdParams, Name, Task } from '../model.js';
import type { ManagerServices } from '../services.js';
import { SESSION_COOKIE } from '../users.js';
import { actorOf } from './common.js';

const User = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    disabled: Type.Boolean(),
    roles: Type.Array(Type.String()),
    createdAt: Type.Integer(),
  },
  { title: 'User' },
);
const ApiToken = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    hint: Type.String({ description: "the token's first characters, to tell tokens apart" }),
    createdAt: Type.Integer(),
    expiresAt: Type.Union([Type.Integer(), Type.Null()]),
    lastUsedAt: Type.Union([Type.Integer(), Type.Null()], { description: 'to the minute' }),
  },
  { title: 'ApiToken' },
);
const UserTokenParams = Type.Object({ id: Id, tokenId: Id });
const Role = Type.Object(
  {
    name: Type.String(),
    description: Type.String(),
    builtIn: Type.Boolean(),
    privileges: Type.Array(Type.String()),
  },
  { title: 'Role' },
);

export function adminRoutes(s: ManagerServices): AnyRoute[] {
  return [
    route({
      method: 'POST',
      url: '/session',
      event: 'user.logged-in',
      operationId: 'login',
      summary: 'Log in with a password; sets the session cookie and returns the session id',
      tag: 'auth',
      privilege: 'public',
      body: Type.Object(
        { user: Type.String({ maxLength: 80 }), password: Type.String({ maxLength: 1024 }) },
        { additionalProperties: false },
      ),
      response: Type.Object({ session: Type.String(), expiresAt: Type.Integer(), user: User }),
      status: 201,
      handler: async ({ body, ip, reply }) => {
        const r = await s.users.login(body.user, body.password, ip);
        void reply.header(
          'set-cookie',
          `${SESSION_COOKIE}=${r.session}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=${Math.floor((r.expiresAt - Date.now()) / 1000)}`,
        );
        return r;
      },
    }),
    route({
      method: 'DELETE',
      url: '/session',
      operationId: 'logout',
      event: 'user.logged-out',
      summary: 'Log out: end the browser session of the cookie sent, and clear the cookie',
      tag: 'auth',
      privilege: 'authenticated',
      response: Type.Null(),
      status: 204,
      handler: async ({ request, reply, user, ip }) => {
        if (user !== undefined) await s.users.endSession(request, user, ip);
        void reply.header(
          'set-cookie',
          `${SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0`,
        );
        return null;
      },
    }),
    route({
      method: 'GET',
      url: '/session',
      summary: 'Who am I, with my privileges',
      tag: 'auth',
      privilege: 'authenticated',
      response: Type.Object({ user: Type.String(), privileges: Type.Array(Type.String()) }),
      handler: ({ user }) =>
        Promise.resolve({ user: user?.name ?? '', privileges: [...(user?.privileges ?? [])].sort() }),
    }),
    route({
      method: 'POST',
      url: '/tokens',
      event: 'user.token-created',
      summary: 'Create an API token for yourself (shown once)',
      tag: 'auth',
      privilege: 'authenticated',
      body: Type.Object(
        { name: Name, ttlMs: Type.Optional(Type.Integer({ minimum: 60_000 })) },
        { additionalProperties: false },
      ),
      response: Type.Object({ id: Type.String(), token: Type.String() }),
      status: 201,
      handler: ({ body, user, ip }) =>
        s.users.createToken(actorOf(user, ip), user?.userId ?? '', body.name, body.ttlMs ?? null),
    }),
    route({
      method: 'GET',
      url: '/tokens',
      summary: 'List your own API tokens (never the tokens themselves)',
      tag: 'auth',
      privilege: 'authenticated',
      response: Type.Array(ApiToken),
      handler: ({ user }) => s.users.listTokens(user?.userId ?? ''),
    }),
    route({
      method: 'DELETE',
      url: '/tokens/:id',
      event: 'user.token-revoked',
      summary: 'Revoke one of your own API tokens',
      tag: 'auth',
      privilege: 'authenticated',
      params: IdParams,
      response: Type.Null(),
      status: 204,
      handler: async ({ params, user, ip }) => {
        await s.users.revokeToken(actorOf(user, ip), user?.userId ?? '', params.id);
        return null;
      },
    }),
    route({
      method: 'GET',
      url: '/users/:id/tokens',
      summary: "List a user's API tokens (never the tokens themselves)",
      tag: 'users',
      privilege: 'user.read',
      params: IdParams,
      response: Type.Array(ApiToken),
      handler: ({ params }) => s.users.listTokens(params.id),
    }),
    route({
      method: 'DELETE',
      url: '/users/:id/tokens/:tokenId',
      event: 'user.token-revoked',
      summary: "Revoke a user's API token",
      tag: 'users',
      privilege: 'user.manage',
      params: UserTokenParams,
      response: Type.Null(),
      status: 204,
      handler: async ({ params, user, ip }) => {
        await s.users.revokeToken(actorOf(user, ip), params.id, params.tokenId);
        return null;
      },
    }),
    route({
      method: 'GET',
      url: '/users',
      summary: 'List users',
      tag: 'users',
      privilege: 'user.read',
      response: Type.Array(User),
      handler: () => s.users.list(),
    }),
    route({
      method: 'POST',
      url: '/users',
      event: 'user.created',
      summary: 'Create a user',
      tag: 'users',
      privilege: 'user.manage',
      body: Type.Object(
        {
          name: Name,
          password: Type.Optional(Type.String({ maxLength: 1024 })),
          roles: Type.Array(Type.String(), { maxItems: 16 }),
        },
        { additionalProperties: false },
      ),
      response: User,
      status: 201,
      handler: async ({ body, user, ip }) => {
        await s.users.checkCanGrant(user, body.roles);
        return s.users.create(actorOf(user, ip), body.name, body.password, body.roles);
      },
    }),
    route({
      method: 'PUT',
      url: '/users/:id/roles',
      event: 'user.roles-changed',
      summary: "Replace a user's roles",
      tag: 'users',
      privilege: ['user.manage', 'role.manage'],
      params: IdParams,
      body: Type.Object(
        { roles: Type.Array(Type.String(), { maxItems: 16 }) },
        { additionalProperties: false },
      ),
      response: User,
      handler: async ({ params, body, user, ip }) => {
        // Managing a user involves what it holds now, too: a No Cryptography Administrator
        // may not strip an Administrator of its roles.
        await s.users.checkCanGrant(user, [...body.roles, ...(await s.users.get(params.id)).roles]);
        return s.users.setRoles(actorOf(user, ip), params.id, body.roles);
      },
    }),
    route({
      method: 'POST',
      url: '/users/:id/tokens',
      event: 'user.token-created',
      summary: 'Create an API token for a user (shown once)',
      tag: 'users',
      privilege: 'user.manage',
      params: IdParams,
      body: Type.Object(
        { name: Name, ttlMs: Type.Optional(Type.Integer({ minimum: 60_000 })) },
        { additionalProperties: false },
      ),
      response: Type.Object({ id: Type.String(), token: Type.String() }),
      status: 201,
      handler: async ({ params, body, user, ip }) => {
        // A token acts as its user: minting one for someone who holds more is escalation.
        await s.users.checkCanGrant(user, (await s.users.get(params.id)).roles);
        return s.users.createToken(actorOf(user, ip), params.id, body.name, body.ttlMs ?? null);
      },
    }),
    route({
      method: 'GET',
      url: '/roles',
      summary: 'List roles and their privileges',
      tag: 'roles',
      privilege: 'user.read',
      response: Type.Array(Role),
      handler: async () => (await s.users.listRoles()).map((r) => ({ ...r, privileges: [...r.privileges] })),
    }),
    route({
      method: 'POST',
      url: '/roles',
      event: 'role.created',
      summary: 'Create a custom role',
      tag: 'roles',
      privilege: 'role.manage',
      body: Type.Object(
        {
          name: Type.String({ maxLength: 64 }),
          description: Type.Optional(Type.String({ maxLength: 500 })),
          privileges: Type.Array(Type.String(), { maxItems: 100 }),
        },
        { additionalProperties: false },
      ),
      response: Role,
      status: 201,
      handler: async ({ body, user, ip }) => {
        await s.users.checkCanGrant(user, [], body.privileges);
        const r = await s.users.createRole(actorOf(user, ip), body);
        return { ...r, privileges: [...r.privileges] };
      },
    }),
    route({
      method: 'GET',
      url: '/tasks',
      summary: 'List recent tasks',
      tag: 'tasks',
      privilege: 'task.read',
      query: Type.Object({
        limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
        state: Type.Optional(
          Type.Union([
            Type.Literal('queued'),
            Type.Literal('running'),
            Type.Literal('succeeded'),
            Type.Literal('failed'),
          ]),
        ),
        objectId: Type.Optional(Type.String()),
      }),
      response: Type.Array(Task),
      handler: ({ query }) =>
        s.tasks.list({
          limit: query.limit ?? 100,
          ...(query.state ? { state: query.state } : {}),
          ...(query.objectId ? { objectId: query.objectId } : {}),
        }),
    }),
    route({
      method: 'GET',
      url: '/tasks/:id',
      summary: 'Show a task; ?waitMs=N waits up to N ms for it to finish',
      tag: 'tasks',
      privilege: 'task.read',
      params: IdParams,
      query: Type.Object({ waitMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 600_000 })) }),
      response: Task,
      handler: ({ params, query }) =>
        query.waitMs ? s.tasks.wait(params.id, query.waitMs) : s.tasks.get(params.id),
    }),
    route({
      method: 'GET',
      url: '/events',
      summary: 'Query events (newest first)',
      tag: 'events',
      privilege: 'event.read',
      query: Type.Object({
        limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, default: 100 })),
        type: Type.Optional(Type.String()),
        objectId: Type.Optional(Type.String()),
        user: Type.Optional(Type.String()),
        since: Type.Optional(Type.Integer({ description: 'ms since epoch' })),
        until: Type.Optional(Type.Integer({ description: 'ms since epoch' })),
        text: Type.Optional(Type.String({ maxLength: 200 })),
        severity: Type.Optional(
          Type.Union([
            Type.Literal('info'),
            Type.Literal('warning'),
            Type.Literal('error'),
            Type.Literal('critical'),
          ]),
        ),
        beforeSeq: Type.Optional(
          Type.Integer({ minimum: 0, description: 'Only events older than this one (the next page)' }),
        ),
      }),
      response: Type.Array(Event),
      // Readonly arrays in the event model; the JSON is the same.
      handler: async ({ query }) => (await s.events.query(query)) as unknown as Static<typeof Event>[],
    }),
    route({
      method: 'GET',
      url: '/events/verify',
      operationId: 'verifyEvents',
      summary: 'Verify the hash chain of the event store; names the first bad event',
      tag: 'events',
      privilege: 'event.read',
      response: Type.Object({
        ok: Type.Boolean(),
        count: Type.Integer(),
        firstBad: Type.Optional(
          Type.Object(
            {
              ok: Type.Literal(false),
              index: Type.Integer({ description: 'Position in the chain of the first bad event' }),
              id: Type.String(),
              reason: Type.Union([
                Type.Literal('altered'),
                Type.Literal('missing'),
                Type.Literal('reordered'),
                Type.Literal('broken-link'),
              ]),
              detail: Type.String(),
            },
            { description: 'The first event that does not verify, and why' },
          ),
        ),
      }),
      handler: () => s.events.verify(),
    }),
  ];
}
