/**
 * Users, roles, sessions and API tokens: the manager's side of src/auth (which stays
 * storage-agnostic). Passwords are scrypt hashes, tokens are stored only as SHA-256
 * hashes, and a failed login is an event.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import type { Privilege, Role } from '../auth/index.js';
import {
  BUILT_IN_ROLES,
  defineCustomRole,
  effectivePrivileges,
  isPrivilege,
  requireCanGrant,
} from '../auth/index.js';
import { authenticatePassword, checkPasswordPolicy, hashPassword } from '../auth/passwords.js';
import { hashToken, newApiToken, newSession, parseBearer, verifyToken } from '../auth/tokens.js';
import { HypersealError } from '../errors.js';
import type { Db } from '../store/db.js';
import { fromJson, toJson } from '../store/db.js';
import type { Actor, EventRecorder } from './events.js';
import type { Principal } from './http.js';

export const SESSION_COOKIE = 'hs_session';

export interface UserView {
  id: string;
  name: string;
  disabled: boolean;
  roles: string[];
  createdAt: number;
}

export class UserService {
  /** When each token's last_used_at was last written: at most one write a minute per token. */
  private readonly usageWritten = new Map<string, number>();

  constructor(
    private readonly db: Db,
    private readonly events: EventRecorder,
  ) {}

  /** Built-in roles in the database, kept in step with the code on every start. */
  async ensureBuiltInRoles(): Promise<void> {
    for (const r of BUILT_IN_ROLES) {
      await this.db.run(
        `INSERT INTO roles (id, name, privileges, builtin) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO UPDATE SET privileges = $3, builtin = $4`,
        [`builtin:${r.name}`, r.name, toJson(r.privileges), true],
      );
    }
  }

  async userCount(): Promise<number> {
    const row = await this.db.one<{ n: number }>(`SELECT CAST(count(*) AS INTEGER) AS n FROM users`);
    return Number(row?.n ?? 0);
  }

  async create(actor: Actor, name: string, password: string | undefined, roles: string[]): Promise<UserView> {
    if (password !== undefined) checkPasswordPolicy(password, name);
    const roleIds = await this.roleIds(roles);
    const id = randomUUID();
    const hash = password === undefined ? null : await hashPassword(password);
    await this.db.transaction(async (tx) => {
      try {
        await tx.run(
          `INSERT INTO users (id, name, password_hash, disabled, created_at) VALUES ($1, $2, $3, $4, $5)`,
          [id, name, hash, false, Date.now()],
        );
      } catch (err) {
        if (err instanceof HypersealError && err.code === 'HS_ERR_DB_CONFLICT') {
          throw new HypersealError('HS_ERR_CONFLICT', `a user named '${name}' already exists`);
        }
        throw err;
      }
      for (const roleId of roleIds) {
        await tx.run(`INSERT INTO user_roles (user_id, role_id) VALUES ($1, $2)`, [id, roleId]);
      }
    });
    await this.events.record(actor, {
      type: 'user.created',
      object: { kind: 'user', id, name },
      changes: [
        { path: 'roles', from: null, to: [...roles].sort() },
        { path: 'password', from: null, to: password === undefined ? null : '[redacted]' },
      ],
    });
    return this.get(id);
  }

  private async roleIds(names: string[]): Promise<string[]> {
    const ids: string[] = [];
    for (const n of names) {
      const row = await this.db.one<{ id: string }>(`SELECT id FROM roles WHERE name = $1`, [n]);
      if (row === undefined) throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `no role named '${n}'`);
      ids.push(row.id);
    }
    return ids;
  }

  async get(id: string): Promise<UserView> {
    const row = await this.db.one<{ id: string; name: string; disabled: boolean; created_at: number }>(
      `SELECT id, name, disabled, created_at FROM users WHERE id = $1`,
      [id],
    );
    if (row === undefined) throw new HypersealError('HS_ERR_NOT_FOUND', `no user ${id}`);
    const roles = await this.db.query<{ name: string }>(
      `SELECT r.name FROM roles r JOIN user_roles ur ON ur.role_id = r.id WHERE ur.user_id = $1 ORDER BY r.name`,
      [id],
    );
    return {
      id: row.id,
      name: row.name,
      disabled: row.disabled,
      roles: roles.map((r) => r.name),
      createdAt: row.created_at,
    };
  }

  async list(): Promise<UserView[]> {
    const rows = await this.db.query<{ id: string }>(`SELECT id FROM users ORDER BY name`);
    return Promise.all(rows.map((r) => this.get(r.id)));
  }

  async setRoles(actor: Actor, id: string, roles: string[]): Promise<UserView> {
    const before = await this.get(id);
    const roleIds = await this.roleIds(roles);
    await this.db.transaction(async (tx) => {
      await tx.run(`DELETE FROM user_roles WHERE user_id = $1`, [id]);
      for (const roleId of roleIds)
        await tx.run(`INSERT INTO user_roles (user_id, role_id) VALUES ($1, $2)`, [id, roleId]);
    });
    const after = await this.get(id);
    await this.events.record(actor, {
      type: 'user.roles-changed',
      object: { kind: 'user', id, name: before.name },
      changes: [{ path: 'roles', from: before.roles, to: after.roles }],
    });
    return after;
  }

  /**
   * No one grants what they do not hold: a user manager without crypto privileges cannot
   * make someone (or themselves) an Administrator.
   */
  async checkCanGrant(
    actor: Principal | undefined,
    roleNames: string[],
    privileges: string[] = [],
  ): Promise<void> {
    if (actor === undefined) throw new HypersealError('HS_ERR_AUTH_REQUIRED', 'log in first');
    const roles = (await this.listRoles()).filter((r) => roleNames.includes(r.name));
    const wanted = [...roles.flatMap((r) => r.privileges), ...privileges.filter(isPrivilege)];
    requireCanGrant(
      { name: actor.name, privileges: actor.privileges as ReadonlySet<Privilege> },
      wanted,
      `grant ${roleNames.length > 0 ? roleNames.join(', ') : 'these privileges'}`,
    );
  }

  async listRoles(): Promise<Role[]> {
    const rows = await this.db.query<{ name: string; privileges: string; builtin: boolean }>(
      `SELECT name, privileges, builtin FROM roles ORDER BY name`,
    );
    return rows.map((r) => ({
      name: r.name,
      description: BUILT_IN_ROLES.find((b) => b.name === r.name)?.description ?? '',
      builtIn: r.builtin,
      privileges: (fromJson<string[]>(r.privileges) ?? []).filter(isPrivilege),
    }));
  }

  async createRole(
    actor: Actor,
    input: { name: string; description?: string; privileges: string[] },
  ): Promise<Role> {
    const role = defineCustomRole(input);
    await this.db.run(`INSERT INTO roles (id, name, privileges, builtin) VALUES ($1, $2, $3, $4)`, [
      randomUUID(),
      role.name,
      toJson(role.privileges),
      false,
    ]);
    await this.events.record(actor, {
      type: 'role.created',
      object: { kind: 'role', id: role.name, name: role.name },
      changes: [{ path: 'privileges', from: null, to: [...role.privileges] }],
    });
    return role;
  }

  private async privilegesOf(userId: string): Promise<ReadonlySet<Privilege>> {
    const rows = await this.db.query<{ privileges: string }>(
      `SELECT r.privileges FROM roles r JOIN user_roles ur ON ur.role_id = r.id WHERE ur.user_id = $1`,
      [userId],
    );
    const roles: Role[] = rows.map((r) => ({
      name: '',
      description: '',
      builtIn: false,
      privileges: (fromJson<string[]>(r.privileges) ?? []).filter(isPrivilege),
    }));
    return effectivePrivileges(roles);
  }

  /** Password login: a session id (for the web UI's cookie) or an error, and an event either way. */
  async login(
    name: string,
    password: string,
    sourceIp: string,
  ): Promise<{ session: string; expiresAt: number; user: UserView }> {
    const row = await this.db.one<{ id: string; password_hash: string | null; disabled: boolean }>(
      `SELECT id, password_hash, disabled FROM users WHERE name = $1`,
      [name],
    );
    try {
      // Runs the same work for unknown users, so timing does not reveal which names exist.
      await authenticatePassword(
        password,
        row?.disabled === false ? (row.password_hash ?? undefined) : undefined,
      );
    } catch (err) {
      await this.events.record(
        { user: name, sourceIp },
        {
          type: 'user.login-failed',
          object: { kind: 'user', id: row?.id ?? '-', name },
          changes: [],
          result: 'failure',
          severity: 'warning',
        },
      );
      throw err;
    }
    const s = newSession(new Date());
    await this.db.run(`INSERT INTO sessions (id_hash, user_id, expires_at) VALUES ($1, $2, $3)`, [
      s.record.tokenHash,
      row?.id ?? '',
      s.record.expiresAt?.getTime() ?? 0,
    ]);
    const user = await this.get(row?.id ?? '');
    await this.events.record(
      { user: name, sourceIp },
      { type: 'user.logged-in', object: { kind: 'user', id: user.id, name }, changes: [] },
    );
    return { session: s.token, expiresAt: s.record.expiresAt?.getTime() ?? 0, user };
  }

  async logout(token: string): Promise<void> {
    await this.db.run(`DELETE FROM sessions WHERE id_hash = $1`, [hashToken(token)]);
  }

  /** Ends the browser session the request carries (its cookie), with an event. */
  async endSession(request: FastifyRequest, principal: Principal, sourceIp: string): Promise<void> {
    const cookie = parseCookie(request.headers.cookie ?? '')[SESSION_COOKIE];
    if (principal.via !== 'session' || cookie === undefined) {
      throw new HypersealError(
        'HS_ERR_INVALID_ARGUMENT',
        'only a browser session can be ended here; API tokens stay valid until they expire',
      );
    }
    await this.logout(cookie);
    await this.events.record(
      { user: principal.name, sourceIp },
      {
        type: 'user.logged-out',
        object: { kind: 'user', id: principal.userId, name: principal.name },
        changes: [],
      },
    );
  }

  async createToken(
    actor: Actor,
    userId: string,
    name: string,
    ttlMs: number | null,
  ): Promise<{ id: string; token: string }> {
    const t = newApiToken(new Date(), ttlMs);
    const id = randomUUID();
    await this.db.run(
      `INSERT INTO api_tokens (id, user_id, token_hash, name, created_at, last_used_at, expires_at, hint)
       VALUES ($1, $2, $3, $4, $5, NULL, $6, $7)`,
      [id, userId, t.record.tokenHash, name, Date.now(), t.record.expiresAt?.getTime() ?? null, t.hint],
    );
    const user = await this.get(userId);
    await this.events.record(actor, {
      type: 'user.token-created',
      object: { kind: 'user', id: userId, name: user.name },
      changes: [{ path: `tokens[${name}]`, from: null, to: t.hint }],
    });
    return { id, token: t.token };
  }

  /** A user's API tokens: names, dates and the first characters, never the token or its hash. */
  async listTokens(userId: string): Promise<ApiTokenInfo[]> {
    await this.get(userId);
    const rows = await this.db.query<{
      id: string;
      name: string;
      hint: string | null;
      created_at: number;
      expires_at: number | null;
      last_used_at: number | null;
    }>(
      `SELECT id, name, hint, created_at, expires_at, last_used_at FROM api_tokens WHERE user_id = $1
       ORDER BY created_at, id`,
      [userId],
    );
    return rows.map((r) => ({
      id: r.id,
      name: r.name,
      hint: r.hint ?? '',
      createdAt: Number(r.created_at),
      expiresAt: r.expires_at === null ? null : Number(r.expires_at),
      lastUsedAt: r.last_used_at === null ? null : Number(r.last_used_at),
    }));
  }

  /**
   * Revokes one of a user's API tokens: deleted, so the next request with it is refused
   * (401). A token id of another user is not found: nobody revokes a token through the
   * wrong user.
   */
  async revokeToken(actor: Actor, userId: string, tokenId: string): Promise<void> {
    const user = await this.get(userId);
    const row = await this.db.one<{ name: string; hint: string | null }>(
      `SELECT name, hint FROM api_tokens WHERE id = $1 AND user_id = $2`,
      [tokenId, userId],
    );
    if (row === undefined) {
      throw new HypersealError('HS_ERR_NOT_FOUND', `user ${user.name} has no API token ${tokenId}`);
    }
    await this.db.run(`DELETE FROM api_tokens WHERE id = $1 AND user_id = $2`, [tokenId, userId]);
    await this.events.record(actor, {
      type: 'user.token-revoked',
      object: { kind: 'user', id: userId, name: user.name },
      changes: [{ path: `tokens[${row.name}]`, from: row.hint ?? tokenId, to: null }],
    });
  }

  /** Records when a token was last used, at most once a minute per token (a write per call would cost). */
  private noteTokenUse(tokenHash: string, now: number): void {
    const last = this.usageWritten.get(tokenHash) ?? 0;
    if (now - last < 60_000) return;
    this.usageWritten.set(tokenHash, now);
    if (this.usageWritten.size > 10_000) this.usageWritten.clear();
    void this.db
      .run(`UPDATE api_tokens SET last_used_at = $1 WHERE token_hash = $2`, [now, tokenHash])
      .catch(() => undefined);
  }

  /** Bearer API token or session cookie → the caller, or undefined (then the route answers 401). */
  async authenticate(request: FastifyRequest): Promise<Principal | undefined> {
    const header = request.headers.authorization;
    const now = new Date();
    if (header !== undefined) {
      const parsed = parseBearer(header);
      const row = await this.db.one<{
        user_id: string;
        token_hash: string;
        created_at: number;
        expires_at: number | null;
      }>(`SELECT user_id, token_hash, created_at, expires_at FROM api_tokens WHERE token_hash = $1`, [
        hashToken(parsed.token),
      ]);
      verifyToken(
        parsed,
        'api',
        row === undefined
          ? undefined
          : {
              tokenHash: row.token_hash as ReturnType<typeof hashToken>,
              createdAt: new Date(row.created_at),
              expiresAt: row.expires_at === null ? null : new Date(row.expires_at),
            },
        now,
      );
      const principal = await this.principal(row?.user_id ?? '', 'token');
      if (principal !== undefined && row !== undefined) this.noteTokenUse(row.token_hash, now.getTime());
      return principal;
    }
    const cookie = parseCookie(request.headers.cookie ?? '')[SESSION_COOKIE];
    if (cookie !== undefined) {
      const row = await this.db.one<{ user_id: string; id_hash: string; expires_at: number }>(
        `SELECT user_id, id_hash, expires_at FROM sessions WHERE id_hash = $1`,
        [hashToken(cookie)],
      );
      if (row === undefined) return undefined;
      verifyToken(
        cookie,
        'session',
        {
          tokenHash: row.id_hash as ReturnType<typeof hashToken>,
          createdAt: now,
          expiresAt: new Date(row.expires_at),
        },
        now,
      );
      return this.principal(row.user_id, 'session');
    }
    return undefined;
  }

  private async principal(userId: string, via: 'token' | 'session'): Promise<Principal | undefined> {
    const user = await this.db.one<{ name: string; disabled: boolean }>(
      `SELECT name, disabled FROM users WHERE id = $1`,
      [userId],
    );
    if (user === undefined) return undefined;
    if (user.disabled) {
      // Said, and audited, as such: a disabled account still trying is worth knowing about.
      throw new HypersealError(
        'HS_ERR_AUTH_INVALID_TOKEN',
        `the ${via === 'token' ? 'API token' : 'session'} belongs to user ${user.name}, which is disabled`,
      );
    }
    return { userId, name: user.name, privileges: await this.privilegesOf(userId), via };
  }
}

export interface ApiTokenInfo {
  id: string;
  name: string;
  /** The token's first characters (`hs_abcd…`), to tell tokens apart. */
  hint: string;
  createdAt: number;
  expiresAt: number | null;
  lastUsedAt: number | null;
}

export function parseCookie(header: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i).trim()] = decodeURIComponent(part.slice(i + 1).trim());
  }
  return out;
}
