/**
 * `hyperseal user …`: users and their roles, over the REST API (user.manage / user.read).
 * The one way to give someone a password for the web UI: it is read from
 * $HYPERSEAL_PASSWORD or asked on the terminal without echo, never taken from argv.
 */
import { HypersealError } from '../errors.js';
import type { User } from '../sdk/api.gen.js';
import { ApiClient } from '../sdk/client.js';
import { flag, need, parse, str, usageError } from './args.js';
import { printResult, table } from './output.js';
import { readSecret } from './secret.js';

export const USER_HELP = `users (web UI sign-in and API tokens; needs user.manage)
  user list [--json]
  user create NAME --role ROLE … [--no-password]
      a user with these roles; the password (for the web UI) from $HYPERSEAL_PASSWORD or a
      hidden prompt; roles: Administrator, No Cryptography Administrator, Read-only, Auditor, or custom
  user set-roles NAME --role ROLE …`;

const OPTIONS = {
  json: { type: 'boolean' },
  credentials: { type: 'string' },
  role: { type: 'string', multiple: true },
  'no-password': { type: 'boolean' },
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
