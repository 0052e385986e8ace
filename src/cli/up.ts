/**
 * `hyperseal up`: the whole product on one machine with one data directory — the
 * embedded KMIP key server, the manager, and a local agent enrolled with it (with
 * --demo a second agent and two small VMs). Writes DIR/credentials.json (0600) so the
 * CLI works at once. Running it again reuses everything. Ctrl-C stops all cleanly.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { joinManager } from '../agent/join.js';
import type { AgentServer } from '../agent/server.js';
import { startAgent } from '../agent/server.js';
import { ensureEmbeddedKeyProvider } from '../keys/index.js';
import { startKms } from '../kms/service.js';
import type { Actor } from '../manager/events.js';
import { startManager } from '../manager/services.js';
import { flag, hostPort, parse, str } from './args.js';
import { driverFor, waitForSignal } from './daemons.js';
import { seedDemo } from './demo-data.js';

const USAGE =
  'hyperseal up [--data-dir DIR] [--demo] [--driver qemu|sim] [--kms-listen HOST:PORT] [--manager-listen HOST:PORT] [--agent-port N]';

export async function upCommand(argv: string[]): Promise<number> {
  const p = parse(
    argv,
    {
      'data-dir': { type: 'string' },
      demo: { type: 'boolean' },
      driver: { type: 'string' },
      'kms-listen': { type: 'string' },
      'manager-listen': { type: 'string' },
      'agent-port': { type: 'string' },
    },
    USAGE,
  );
  const dataDir = resolve(str(p, 'data-dir') ?? '.hyperseal');
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const rel = (path: string): string => relative(process.cwd(), path) || '.';
  const stops: (() => Promise<void>)[] = [];
  const stopAll = async (): Promise<void> => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
  };
  try {
    // 1. The embedded key server and the operator's KMIP client certificate.
    const kmsAddr = hostPort(str(p, 'kms-listen') ?? '127.0.0.1:5696', 5696);
    const kms = await startKms({ dataDir: join(dataDir, 'kms'), host: kmsAddr.host, port: kmsAddr.port });
    stops.push(() => kms.close());
    const operator = join(dataDir, 'operator');
    if (!existsSync(`${operator}.key`)) {
      const cert = await kms.dataDir.issueClientCertificate('operator');
      writeFileSync(`${operator}.pem`, cert.certPem, { mode: 0o644 });
      writeFileSync(`${operator}.key`, cert.keyPem, { mode: 0o600 });
    }

    // 2. The manager.
    const mAddr = hostPort(str(p, 'manager-listen') ?? '127.0.0.1:8443', 8443);
    const manager = await startManager({
      dataDir: join(dataDir, 'manager'),
      host: mAddr.host,
      port: mAddr.port,
    });
    stops.push(() => manager.close());
    const credentials = join(dataDir, 'credentials.json');
    if (manager.initialAdminToken !== undefined) {
      writeFileSync(
        credentials,
        JSON.stringify(
          { managerUrl: manager.url, caPath: manager.caPath, token: manager.initialAdminToken },
          null,
          2,
        ) + '\n',
        { mode: 0o600 },
      );
    }

    const system: Actor = { user: 'system', sourceIp: null };
    // The embedded key server becomes the manager's (default) key provider on first start.
    await ensureEmbeddedKeyProvider({
      service: manager.services.keyProviders,
      kms,
      markerPath: join(dataDir, 'manager', 'embedded-key-provider.json'),
      actor: system,
    });

    // 3. Local agents, enrolled on first start.
    const driverKind = str(p, 'driver') ?? 'qemu';
    const basePort = Number(str(p, 'agent-port') ?? '9443');
    // `npm run up --demo` (without `--`) reaches the script only as npm's config variable.
    const wantDemo = flag(p, 'demo') || process.env.npm_config_demo === 'true';
    const agentCount = wantDemo ? 2 : 1;
    const agents: AgentServer[] = [];
    for (let i = 0; i < agentCount; i++) {
      const agentDir = join(dataDir, `agent${i + 1}`);
      const port = basePort + i;
      if (!existsSync(join(agentDir, 'host.json'))) {
        const t = await manager.services.hosts.createEnrollmentToken(system);
        await joinManager({
          managerUrl: manager.url,
          token: t.token,
          caSha256: t.caSha256,
          name: `${hostname()}-${i + 1}`,
          address: `https://127.0.0.1:${port}`,
          dataDir: agentDir,
        });
      }
      const agent = await startAgent({
        dataDir: agentDir,
        listen: { host: '127.0.0.1', port },
        driver: await driverFor(driverKind, agentDir, true),
      });
      stops.push(() => agent.close());
      agents.push(agent);
      await manager.services.hosts.attach(agent.hostId);
    }

    // 4. --demo: the networks and small VMs the examples use (src/cli/demo-data.ts).
    const demo = wantDemo
      ? await seedDemo(
          manager.services,
          agents.map((a) => a.hostId),
          system,
        )
      : [];

    process.stdout.write(
      [
        '',
        `Hyperseal is up (data in ${rel(dataDir)}).`,
        `  manager (REST API)            ${manager.url}/api/v1   CA ${rel(manager.caPath)}`,
        `  web UI                        ${manager.url}/   (sign in: npx hyperseal user create NAME --role Administrator)`,
        `  embedded KMIP key server      ${kms.host}:${kms.port}`,
        ...agents.map(
          (a, i) => `  host agent ${i + 1}                  https://${a.host}:${a.port}  (host ${a.hostId})`,
        ),
        `  credentials (admin token)     ${rel(credentials)} (mode 0600)`,
        ...(demo.length > 0
          ? [
              `  demo VMs                      ${demo.map((v) => v.name).join(', ')}`,
              '  examples (see examples/README.md): node dist/examples/compliance-report.js',
            ]
          : []),
        '',
        'Next, in another terminal:',
        '  npx hyperseal host list',
        '  npx hyperseal vm create --name test-01 --memory 128',
        '  npx hyperseal vm power-on test-01 && npx hyperseal vm console test-01',
        `  HYPERSEAL_KMS_BACKUP_PASSPHRASE='…' npx hyperseal kms backup --data-dir ${rel(kms.dataDir.dir)} --out kms.backup   (see docs/key-safety.md)`,
        '  npx hyperseal vm power-off test-01 && npx hyperseal vm encrypt test-01 && npx hyperseal vm list',
        '  npx hyperseal event list',
        '  npx hyperseal key-provider list',
        `  npx hyperseal kmip --server ${kms.host}:${kms.port} --ca ${rel(kms.dataDir.caPath)} --cert ${rel(operator)}.pem --key ${rel(operator)}.key query`,
        '',
        'Docs: docs/ (install, API, encryption, key providers, manager and agents, KMIP, security model, errors). Ctrl-C stops everything.',
        '',
      ].join('\n'),
    );
    await waitForSignal();
  } finally {
    await stopAll();
  }
  process.stdout.write('hyperseal: stopped\n');
  return 0;
}
