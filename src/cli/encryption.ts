/** `hyperseal encryption-policy …`: encryption policies and applying one to many VMs. */
import type { EncryptionPolicy } from '../sdk/api.gen.js';
import { ApiClient } from '../sdk/client.js';
import { flag, need, parse, str, usageError } from './args.js';
import { INVENTORY_HELP } from './inventory.js';
import { printResult, table } from './output.js';

export async function encryptionPolicyCommand(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const p = parse(
    rest,
    {
      json: { type: 'boolean' },
      credentials: { type: 'string' },
      name: { type: 'string' },
      description: { type: 'string' },
      provider: { type: 'string' },
      'name-pattern': { type: 'string' },
      tag: { type: 'string' },
      'accept-no-backup': { type: 'boolean' },
    },
    INVENTORY_HELP,
  );
  const json = flag(p, 'json');
  const api = ApiClient.fromCredentials(str(p, 'credentials'));
  try {
    switch (verb) {
      case 'list': {
        const policies = await api.listEncryptionPolicies();
        printResult(policies, json, () =>
          table([
            ['NAME', 'KEY PROVIDER', 'BUILT-IN', 'ID'],
            ...policies.map((x) => [x.name, x.providerId ?? '(default)', x.builtin ? 'yes' : '', x.id]),
          ]),
        );
        return 0;
      }
      case 'create': {
        const description = str(p, 'description');
        const providerId = str(p, 'provider');
        const policy = await api.createEncryptionPolicy({
          name: need(p, 'name', 'encryption-policy create --name N'),
          ...(description !== undefined ? { description } : {}),
          ...(providerId !== undefined ? { providerId } : {}),
        });
        printResult(policy, json, () => `created encryption policy ${policy.name} (${policy.id})`);
        return 0;
      }
      case 'remove': {
        const policy = await findPolicy(api, p.positionals[0]);
        await api.deleteEncryptionPolicy(policy.id);
        printResult({ removed: policy.id }, json, () => `removed encryption policy ${policy.name}`);
        return 0;
      }
      case 'apply': {
        const policy = await findPolicy(api, p.positionals[0]);
        const namePattern = str(p, 'name-pattern');
        const tag = str(p, 'tag');
        if (namePattern === undefined && tag === undefined) {
          throw usageError("encryption-policy apply P (--name-pattern 'web-*' | --tag T)");
        }
        const task = await api.applyEncryptionPolicy(policy.id, {
          ...(namePattern !== undefined ? { namePattern } : {}),
          ...(tag !== undefined ? { tag } : {}),
          ...(flag(p, 'accept-no-backup') ? { acceptNoBackup: true } : {}),
        });
        const done = await api.waitTask(task.id, {
          onProgress: (t) => {
            if (process.stderr.isTTY)
              process.stderr.write(`\rencrypting: ${String(t.progress).padStart(3)}%   `);
          },
        });
        if (process.stderr.isTTY) process.stderr.write('\n');
        const r = (done.result ?? {}) as { total?: number; succeeded?: number; failed?: number };
        printResult(
          done,
          json,
          () => `${r.succeeded ?? 0} of ${r.total ?? 0} VMs encrypted, ${r.failed ?? 0} failed`,
        );
        return r.failed ? 1 : 0;
      }
      default:
        throw usageError(`unknown encryption-policy command '${verb ?? ''}'\n${INVENTORY_HELP}`);
    }
  } finally {
    api.close();
  }
}

async function findPolicy(api: ApiClient, nameOrId: string | undefined): Promise<EncryptionPolicy> {
  if (nameOrId === undefined) throw usageError('a policy name or id is required');
  const all = await api.listEncryptionPolicies();
  const found = all.find((x) => x.id === nameOrId || x.name === nameOrId);
  if (found === undefined) throw usageError(`no encryption policy ${nameOrId}`);
  return found;
}
