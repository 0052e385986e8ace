#!/usr/bin/env node
/** The `hyperseal` command: dispatches `hyperseal <noun> <verb>` to its module. */
import { encryptionPolicyCommand } from './encryption.js';
import { createRequire } from 'node:module';
import { kmipCommand, KMIP_HELP } from './kmip.js';
import { kmsCommand, KMS_HELP } from './kms.js';
import { keyProviderCommand, KEY_PROVIDER_HELP } from './key-providers.js';
import { ExitCode, exitCodeOf, printError } from './output.js';
import { applyCommand, exportCommand, POSTURE_HELP } from './posture.js';
import { upCommand } from './up.js';
import { tokenCommand, userCommand, TOKEN_HELP, USER_HELP } from './users.js';
import { agentCommand, DAEMON_HELP, managerCommand } from './daemons.js';
import {
  eventCommand,
  hostCommand,
  INVENTORY_HELP,
  loggingCommand,
  loginCommand,
  taskCommand,
  vmCommand,
} from './inventory.js';
import { usageError } from './args.js';
import { bundleCommand, releaseCommand, secureBootCommand, SECURE_BOOT_HELP } from './secure-boot.js';

const HELP = `hyperseal — security control plane for QEMU/KVM

usage: hyperseal <command> [options]

  up [--demo]        start the embedded key server, the manager and a local agent
  manager serve      the control plane;  agent join|serve: a host agent
  login, host, vm, task, event
                     inventory and lifecycle over the REST API
  user list|create|set-roles
                     users, their roles, passwords for the web UI
  token list|create|revoke
                     API tokens: yours, or another user's with --user
  key-provider add|add-csr|set-cert|list|show|test|default|remove
                     KMIP key providers of the manager (VM keys)
  kms serve|client-cert|grant|backup|backup verify|backup-status|restore|rotate-master-key|init-replica
                     run and administer the embedded KMIP 1.1 key server
  kmip <op>          talk KMIP 1.1 to any key manager
  secureboot, bundle, release
                     VM Secure Boot key sets, host bundles, the agent's signed manifest
  apply -f FILE [--dry-run], export [-o FILE]
                     desired state: VM security settings, key providers, alert rules, syslog
  version            print the version

Every command takes --help. Exit codes: 0 ok, 1 failure, 2 usage, 3 not found,
4 forbidden, 5 conflict, 6 unavailable, 7 timeout.

${DAEMON_HELP}

${INVENTORY_HELP}

${USER_HELP}

${TOKEN_HELP}

${KEY_PROVIDER_HELP}

${SECURE_BOOT_HELP}

${POSTURE_HELP}

${KMS_HELP}

${KMIP_HELP}`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (
    command === undefined ||
    command === 'help' ||
    command === '--help' ||
    command === '-h' ||
    rest.includes('--help')
  ) {
    process.stdout.write(HELP + '\n');
    return command === undefined ? ExitCode.usage : ExitCode.ok;
  }
  switch (command) {
    case 'version':
    case '--version': {
      const pkg = createRequire(import.meta.url)('../../../package.json') as { version: string };
      process.stdout.write(`hyperseal ${pkg.version}\n`);
      return ExitCode.ok;
    }
    case 'up':
      return upCommand(rest);
    case 'kms':
      return kmsCommand(rest);
    case 'kmip':
      return kmipCommand(rest);
    case 'key-provider':
    case 'key-providers':
      return keyProviderCommand(rest);
    case 'manager':
      return managerCommand(rest);
    case 'agent':
      return agentCommand(rest);
    case 'login':
      return loginCommand(rest);
    case 'host':
      return hostCommand(rest);
    case 'vm':
      return vmCommand(rest);
    case 'encryption-policy':
    case 'encryption-policies':
      return encryptionPolicyCommand(rest);
    case 'task':
      return taskCommand(rest);
    case 'event':
    case 'events':
      return eventCommand(rest);
    case 'syslog':
      return loggingCommand('syslog', rest);
    case 'alert':
      return loggingCommand('alert', rest);
    case 'secureboot':
    case 'secure-boot':
      return secureBootCommand(rest);
    case 'bundle':
    case 'bundles':
      return bundleCommand(rest);
    case 'release':
      return releaseCommand(rest);
    case 'user':
    case 'users':
      return userCommand(rest);
    case 'token':
    case 'tokens':
      return tokenCommand(rest);
    case 'apply':
      return applyCommand(rest);
    case 'export':
      return exportCommand(rest);
    default:
      throw usageError(`unknown command '${command}' (try: hyperseal help)`);
  }
}

const argv = process.argv.slice(2);
main(argv).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    printError(err, argv.includes('--json'));
    process.exitCode = exitCodeOf(err);
  },
);
