/**
 * `hyperseal user …`: users and their roles, over the REST API (user.manage / user.read).
 * The one way to give someone a password for the web UI: it is read from
 * $HYPERSEAL_PASSWORD or asked on the terminal without echo, never taken from argv.
 */
import { HypersealError } from '../errors.js';
import type { User } from '../sdk/api.gen.js';
import { ApiClient } from '../sdk/client.js';
import { flag, int, need, parse, str, usageError } from './args.js';
import { printResult, table } from './output.js';
import { readSecret } from './secret.js';

export const USER_HELP = `users (web UI sign-in and API tokens; needs user.manage)
  user list [--json]
  user create NAME --role ROLE … [--no-password]
      a user with these roles; the password (for the web UI) from $HYPERSEAL_PASSWORD or a
      hidden prompt; roles: Administrator, No Cryptography Administrator, Read-only, Auditor, or custom
  user set-roles NAME --role ROLE …`;

export const TOKEN_HELP = `API tokens (your own; another user's with --user, which needs user.read / user.manage)
  token list [--user NAME] [--json]
      name, first characters, created, expires, last used (to the minute); never the token
  token create NAME [--ttl-days N] [--user NAME]
      prints the new token once: store it like a password
  token revoke ID [--user NAME]
      requests with it are refused from then on`;

const OPTIONS = {
  json: { type: 'boolean' },
  credentials: { type: 'string' },
  role: { type: 'string', multiple: true },
  'no-password': { type: 'boolean' },
  user: { type: 'string' },
  'ttl-days': { type: 'string' },
} as const;

function roles(p: ReturnType<typeof parse>, usage: string): string[] {
  const v = p.values.role;
  const list = Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
  if (list.length === 0) throw usageError(`--role is required\nusage: hyperseal ${usage}`);
  return list;
}

async function findUser(api: ApiClient, name: string | undefined): Promise<User> {
  if (name === undefined) throw usageError('a user name is required');
  const found = (await api.listUsers()).find((u) => u.name === name || u.id === name);
  if (found === undefined) throw new HypersealError('HS_ERR_NOT_FOUND', `no user '${name}'`);
  return found;
}

export async function userCommand(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const p = parse(rest, OPTIONS, USER_HELP);
  const json = flag(p, 'json');
  const api = ApiClient.fromCredentials(str(p, 'credentials'));
  try {
    switch (verb) {
      case 'list': {
        const users = await api.listUsers();
        printResult(users, json, () =>
          table([
            ['NAME', 'ROLES', 'DISABLED', 'ID'],
            ...users.map((u) => [u.name, u.roles.join(', '), u.disabled ? 'yes' : '', u.id]),
          ]),
        );
        return 0;
      }
      case 'create': {
        const usage = 'user create NAME --role ROLE … [--no-password]';
        const name = p.positionals[0] ?? need(p, 'name', usage);
        const wanted = roles(p, usage);
        const password = flag(p, 'no-password')
          ? undefined
          : await readSecret({ env: 'HYPERSEAL_PASSWORD', prompt: `password for ${name}`, confirm: true });
        const user = await api.createUser({
          name,
          roles: wanted,
          ...(password !== undefined ? { password } : {}),
        });
        printResult(
          user,
          json,
          () =>
            `created user ${user.name} (${user.roles.join(', ')})${password !== undefined ? ': sign in to the web UI with it' : ''}`,
        );
        return 0;
      }
      case 'set-roles': {
        const user = await findUser(api, p.positionals[0]);
        const after = await api.setUserRoles(user.id, {
          roles: roles(p, 'user set-roles NAME --role ROLE …'),
        });
        printResult(after, json, () => `user ${after.name}: ${after.roles.join(', ')}`);
        return 0;
      }
      default:
        throw usageError(`unknown user command '${verb ?? ''}'\n${USER_HELP}`);
    }
  } finally {
    api.close();
  }
}

function day(ms: number | null): string {
  return ms === null ? '' : new Date(ms).toISOString().slice(0, 16).replace('T', ' ');
}

export async function tokenCommand(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const p = parse(rest, OPTIONS, TOKEN_HELP);
  const json = flag(p, 'json');
  const api = ApiClient.fromCredentials(str(p, 'credentials'));
  try {
    const userName = str(p, 'user');
    const user = userName === undefined ? undefined : await findUser(api, userName);
    switch (verb) {
      case 'list': {
        const tokens = user === undefined ? await api.listTokens() : await api.listUserTokens(user.id);
        printResult(tokens, json, () =>
          table([
            ['NAME', 'TOKEN', 'CREATED', 'EXPIRES', 'LAST USED', 'ID'],
            ...tokens.map((t) => [
              t.name,
              t.hint,
              day(t.createdAt),
              day(t.expiresAt),
              day(t.lastUsedAt),
              t.id,
            ]),
          ]),
        );
        return 0;
      }
      case 'create': {
        const name = p.positionals[0] ?? need(p, 'name', 'token create NAME [--ttl-days N]');
        const days = int(p, 'ttl-days');
        if (days !== undefined && days < 1) throw usageError('--ttl-days must be 1 or more');
        const body = { name, ...(days !== undefined ? { ttlMs: days * 86_400_000 } : {}) };
        const created =
          user === undefined ? await api.createToken(body) : await api.createUserToken(user.id, body);
        printResult(created, json, () => `${created.token}\n(token ${name}, id ${created.id}: shown once)`);
        return 0;
      }
      case 'revoke': {
        const id = p.positionals[0];
        if (id === undefined) throw usageError('token revoke ID [--user NAME]');
        await (user === undefined ? api.deleteToken(id) : api.deleteUserToken(user.id, id));
        printResult({ revoked: id }, json, () => `revoked token ${id}`);
        return 0;
      }
      default:
        throw usageError(`unknown token command '${verb ?? ''}'\n${TOKEN_HELP}`);
    }
  } finally {
    api.close();
  }
}
