/** `hyperseal manager serve`, `hyperseal agent join|serve`: the long-running processes. */
import { SimDriver } from '../agent/sim-driver.js';
import type { VmDriver } from '../agent/driver.js';
import { joinManager } from '../agent/join.js';
import { startAgent } from '../agent/server.js';
import { agentSecureBootCommand, agentVerifyCommand } from './secure-boot.js';
import { startManager } from '../manager/services.js';
import { hostPort, need, parse, str, usageError } from './args.js';

const MANAGER_USAGE =
  'hyperseal manager serve --data-dir DIR [--database sqlite:FILE|postgres://…] [--listen HOST:PORT]';
const JOIN_USAGE =
  'hyperseal agent join --manager URL --token TOKEN --ca-sha256 HEX --data-dir DIR [--name NAME] [--listen HOST:PORT]';
const AGENT_USAGE = 'hyperseal agent serve --data-dir DIR [--listen HOST:PORT] [--driver qemu|sim]';

export const DAEMON_HELP = `hyperseal manager — the control plane (REST API under /api/v1)
  ${MANAGER_USAGE}
hyperseal agent — the host agent
  ${JOIN_USAGE}
  ${AGENT_USAGE}`;

export function waitForSignal(): Promise<void> {
  return new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
}

export async function managerCommand(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  if (verb !== 'serve') throw usageError(`unknown manager command '${verb ?? ''}'\n${DAEMON_HELP}`);
  const p = parse(
    rest,
    {
      'data-dir': { type: 'string' },
      database: { type: 'string' },
      listen: { type: 'string' },
      'master-key-file': { type: 'string' },
    },
    MANAGER_USAGE,
  );
  const { host, port } = hostPort(str(p, 'listen') ?? '127.0.0.1:8443', 8443);
  const database = str(p, 'database');
  const masterKeyFile = str(p, 'master-key-file');
  const m = await startManager({
    dataDir: need(p, 'data-dir', MANAGER_USAGE),
    host,
    port,
    ...(database !== undefined ? { database } : {}),
    ...(masterKeyFile !== undefined ? { masterKeyFile } : {}),
  });
  process.stdout.write(
    `hyperseal manager: serving ${m.url}/api/v1 (CA ${m.caPath}, CA SHA-256 ${m.caSha256})\n`,
  );
  if (m.initialAdminToken !== undefined) {
    process.stdout.write(
      `hyperseal manager: first start; initial administrator token (shown once): ${m.initialAdminToken}\n`,
    );
  }
  await waitForSignal();
  await m.close();
  process.stdout.write('hyperseal manager: stopped\n');
  return 0;
}

/**
 * The VM driver an agent runs with. The QEMU one is loaded on demand (a sim-only host needs
 * no QEMU installed); with `fallbackToSim` (npm run up) a QEMU failure says so and
 * continues simulated, otherwise it is an error.
 */
export async function driverFor(kind: string, dataDir: string, fallbackToSim = false): Promise<VmDriver> {
  if (kind === 'sim') return SimDriver.open(dataDir);
  if (kind !== 'qemu') throw usageError(`--driver is qemu or sim, not '${kind}'`);
  try {
    const modulePath = '../agent/qemu-driver.js';
    const mod = (await import(modulePath)) as { openQemuDriver(dataDir: string): Promise<VmDriver> };
    return await mod.openQemuDriver(dataDir);
  } catch (err) {
    if (!fallbackToSim) throw usageError(`the qemu driver cannot start: ${(err as Error).message}`);
    process.stderr.write(
      `hyperseal: QEMU driver unavailable (${(err as Error).message}); using the simulated driver\n`,
    );
    return SimDriver.open(dataDir);
  }
}

export async function agentCommand(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  if (verb === 'secure-boot') return agentSecureBootCommand(rest);
  if (verb === 'verify') return agentVerifyCommand(rest);
  if (verb === 'join') {
    const p = parse(
      rest,
      {
        manager: { type: 'string' },
        token: { type: 'string' },
        'ca-sha256': { type: 'string' },
        'data-dir': { type: 'string' },
        name: { type: 'string' },
        listen: { type: 'string' },
      },
      JOIN_USAGE,
    );
    const { host, port } = hostPort(str(p, 'listen') ?? '127.0.0.1:9443', 9443);
    const record = await joinManager({
      managerUrl: need(p, 'manager', JOIN_USAGE),
      token: need(p, 'token', JOIN_USAGE),
      caSha256: need(p, 'ca-sha256', JOIN_USAGE),
      dataDir: need(p, 'data-dir', JOIN_USAGE),
      name: str(p, 'name') ?? (await import('node:os')).hostname(),
      address: `https://${host}:${port}`,
    });
    process.stdout.write(
      `joined the manager at ${record.managerUrl} as host ${record.name} (${record.hostId})\n`,
    );
    return 0;
  }
  if (verb === 'serve') {
    const p = parse(
      rest,
      { 'data-dir': { type: 'string' }, listen: { type: 'string' }, driver: { type: 'string' } },
      AGENT_USAGE,
    );
    const dataDir = need(p, 'data-dir', AGENT_USAGE);
    const { host, port } = hostPort(str(p, 'listen') ?? '127.0.0.1:9443', 9443);
    const agent = await startAgent({
      dataDir,
      listen: { host, port },
      driver: await driverFor(str(p, 'driver') ?? 'qemu', dataDir),
    });
    if (agent.verificationFailure) {
      // Refuses to serve (only facts, so the manager can show why); names the file.
      process.stderr.write(`hyperseal agent: ${agent.verificationFailure.message}\n`);
      process.stderr.write(
        'hyperseal agent: serving facts only until the file is restored and the agent restarted\n',
      );
    }
    process.stdout.write(
      `hyperseal agent: host ${agent.hostId} serving https://${agent.host}:${agent.port}${agent.verificationFailure ? ' (FAILED verification: facts only)' : ''}\n`,
    );
    await waitForSignal();
    await agent.close();
    process.stdout.write('hyperseal agent: stopped\n');
    return 0;
  }
  throw usageError(`unknown agent command '${verb ?? ''}'\n${DAEMON_HELP}`);
}
