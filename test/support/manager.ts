// Test support: the manager with real host agents (sim driver) in one process, wired the
// way `hyperseal up` wires them (src/cli/up.ts) but on free ports and in temporary
// directories: enrollment tokens, joinManager over HTTPS with the pinned CA fingerprint,
// startAgent, then services.hosts.attach. Nothing here ships.
//
// Master keys go to $XDG_CONFIG_HOME/hyperseal/: a test file calls useTempConfigHome()
// first so that they land in a temporary directory, never in the user's ~/.config.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { joinManager } from '../../src/agent/join.js';
import type { AgentServer } from '../../src/agent/server.js';
import { startAgent } from '../../src/agent/server.js';
import { SimDriver } from '../../src/agent/sim-driver.js';
import type { VmDriver } from '../../src/agent/driver.js';
import { readSealedFile } from '../../src/crypto/sealed-file.js';
import { loadMasterKey, resolveMasterKeySource } from '../../src/kms/master-key.js';
import type { Actor } from '../../src/manager/events.js';
import type { RunningManager } from '../../src/manager/services.js';
import { startManager } from '../../src/manager/services.js';
import type { RunningKms } from '../../src/kms/service.js';
import { startKms } from '../../src/kms/service.js';
import { ApiClient } from '../../src/sdk/client.js';

export const SYSTEM: Actor = { user: 'system', sourceIp: null };

/**
 * Points $XDG_CONFIG_HOME at a fresh temporary directory (master keys are created there)
 * and returns the function that restores the old value and removes the directory.
 */
export function useTempConfigHome(): () => void {
  const before = process.env.XDG_CONFIG_HOME;
  const dir = mkdtempSync(join(tmpdir(), 'hs-config-'));
  process.env.XDG_CONFIG_HOME = dir;
  return () => {
    if (before === undefined) delete process.env.XDG_CONFIG_HOME;
    else process.env.XDG_CONFIG_HOME = before;
    rmSync(dir, { recursive: true, force: true });
  };
}

/** A port that was free a moment ago (the agent's address must be known before it listens). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export interface TestAgent {
  server: AgentServer;
  hostId: string;
  name: string;
  dataDir: string;
  address: string;
  /** The agent's own TLS identity, as joinManager wrote it. */
  certPem: string;
  keyPem: string;
}

export interface HttpAnswer<T = unknown> {
  status: number;
  body: T;
  headers: Record<string, string | string[] | undefined>;
}

/** The `{ code, message }` body of an error answer. */
export interface ErrorAnswer {
  code: string;
  message: string;
}

export interface TestPlatform {
  manager: RunningManager;
  /** The manager's data directory and database (what a restart reuses). */
  managerDir: string;
  database: string | undefined;
  adminToken: string;
  api: ApiClient;
  agents: TestAgent[];
  /**
   * A raw HTTPS call to the manager API (path below /api/v1): never throws on a status,
   * so tests can look at 4xx answers. `token: undefined` sends no Authorization header.
   */
  request<T = unknown>(
    token: string | undefined,
    method: string,
    path: string,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<HttpAnswer<T>>;
  /** The same with a body sent as is (malformed JSON, say), as application/json unless told. */
  requestRaw<T = unknown>(
    token: string | undefined,
    method: string,
    path: string,
    body: string,
    headers?: Record<string, string>,
  ): Promise<HttpAnswer<T>>;
  /** Creates a user holding exactly `roleName`, with an API token, through the API. */
  userClient(roleName: string, userName?: string): Promise<UserClient>;
  /** Enrolls and starts one more agent (a real join with a fresh token). */
  addAgent(name?: string): Promise<TestAgent>;
  /** Closes the manager and starts it again on the same data directory, database and port. */
  restartManager(): Promise<RunningManager>;
  /** The embedded key server, with `kms: true`. */
  kms?: RunningKms;
  /** Its provider id in the manager. */
  keyProviderId?: string;
  /** The manager's own client identity (CN hyperseal-manager) for calling agents directly. */
  managerClientIdentity(): { certPem: string; keyPem: string; caPem: string };
  close(): Promise<void>;
}

export interface UserClient {
  api: ApiClient;
  userId: string;
  name: string;
  token: string;
}

export interface PlatformOptions {
  /** sqlite path or postgres://… (default: SQLite in the data directory). */
  database?: string;
  /** Agents to enroll and start (default 1). */
  agents?: number;
  /** The VM driver for each agent (default: the sim driver). */
  driver?: (dataDir: string) => Promise<VmDriver>;
  /** Start the embedded key server and register it as the default key provider. */
  kms?: boolean;
  /**
   * With `kms`: record a (fictitious) backup of the key server, so encrypting the first VM
   * needs no acceptNoBackup (default true; docs/key-safety.md).
   */
  kmsBackedUp?: boolean;
  /** The manager's host health / VM sync interval (default 5 s). */
  healthIntervalMs?: number;
}

let users = 0;

export async function startTestPlatform(opts: PlatformOptions = {}): Promise<TestPlatform> {
  if (process.env.XDG_CONFIG_HOME === undefined || !process.env.XDG_CONFIG_HOME.includes('hs-config-')) {
    throw new Error('call useTempConfigHome() first: master keys must not go to the real ~/.config');
  }
  const root = mkdtempSync(join(tmpdir(), 'hs-platform-'));
  const managerDir = join(root, 'manager');
  const clients: ApiClient[] = [];
  const agents: TestAgent[] = [];
  let manager: RunningManager | undefined;
  let kms: RunningKms | undefined;
  let keyProviderId: string | undefined;
  let closed = false;

  const start = (port = 0): Promise<RunningManager> =>
    startManager({
      dataDir: managerDir,
      port,
      ...(opts.database !== undefined ? { database: opts.database } : {}),
      ...(opts.healthIntervalMs !== undefined ? { healthIntervalMs: opts.healthIntervalMs } : {}),
    });

  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    for (const c of clients) c.close();
    for (const a of agents) await a.server.close().catch(() => undefined);
    await manager?.close().catch(() => undefined);
    await kms?.close().catch(() => undefined);
    rmSync(root, { recursive: true, force: true });
  };

  try {
    manager = await start();
    if (opts.kms === true) {
      kms = await startKms({ dataDir: join(root, 'kms'), port: 0 });
      if (opts.kmsBackedUp !== false) {
        await kms.dataDir.recordBackup({ at: Date.now(), newestObjectAt: null, objects: 0 });
      }
      const client = await kms.dataDir.issueClientCertificate('hyperseal-manager');
      const provider = await manager.services.keyProviders.add(SYSTEM, {
        name: 'embedded',
        servers: [{ host: '127.0.0.1', port: kms.port }],
        caPem: kms.dataDir.caCertPem(),
        clientCertPem: client.certPem,
        clientKeyPem: client.keyPem,
      });
      keyProviderId = provider.id;
    }
    const adminToken = manager.initialAdminToken;
    if (adminToken === undefined) throw new Error('a fresh manager did not create an initial admin token');
    const caPem = readFileSync(manager.caPath, 'utf8');
    const clientFor = (token: string): ApiClient => {
      const m = manager as RunningManager;
      const c = new ApiClient({ managerUrl: m.url, caPem, token });
      clients.push(c);
      return c;
    };
    const api = clientFor(adminToken);

    const addAgent = async (name = `host-${agents.length + 1}`): Promise<TestAgent> => {
      const m = manager as RunningManager;
      const t = await m.services.hosts.createEnrollmentToken(SYSTEM);
      const dataDir = join(root, `agent-${agents.length + 1}`);
      const port = await freePort();
      const address = `https://127.0.0.1:${port}`;
      const host = await joinManager({
        managerUrl: m.url,
        token: t.token,
        caSha256: t.caSha256,
        name,
        address,
        dataDir,
      });
      const server = await startAgent({
        dataDir,
        listen: { host: '127.0.0.1', port },
        driver: opts.driver ? await opts.driver(dataDir) : SimDriver.open(dataDir),
      });
      const agent: TestAgent = {
        server,
        hostId: host.hostId,
        name,
        dataDir,
        address,
        certPem: readFileSync(join(dataDir, 'agent.pem'), 'utf8'),
        keyPem: readFileSync(join(dataDir, 'agent.key'), 'utf8'),
      };
      agents.push(agent);
      await m.services.hosts.attach(host.hostId);
      return agent;
    };
    for (let i = 0; i < (opts.agents ?? 1); i++) await addAgent();

    const requestRaw = <T>(
      token: string | undefined,
      method: string,
      path: string,
      payload: Buffer | undefined,
      headers: Record<string, string> = {},
    ): Promise<HttpAnswer<T>> => {
      const m = manager as RunningManager;
      const url = new URL(m.url);
      return new Promise((resolve, reject) => {
        const req = https.request(
          {
            host: url.hostname,
            port: url.port,
            method,
            path: `/api/v1${path}`,
            ca: caPem,
            agent: false,
            headers: {
              ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}),
              ...(payload
                ? { 'content-type': 'application/json', 'content-length': String(payload.length) }
                : {}),
              ...headers,
            },
          },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => {
              const text = Buffer.concat(chunks).toString('utf8');
              let parsed: unknown = text;
              try {
                parsed = text === '' ? null : JSON.parse(text);
              } catch {
                // not JSON: keep the text
              }
              resolve({ status: res.statusCode ?? 0, body: parsed as T, headers: res.headers });
            });
            res.on('error', reject);
          },
        );
        req.on('error', reject);
        req.end(payload);
      });
    };
    const request = <T>(
      token: string | undefined,
      method: string,
      path: string,
      body?: unknown,
      headers: Record<string, string> = {},
    ): Promise<HttpAnswer<T>> =>
      requestRaw<T>(
        token,
        method,
        path,
        body === undefined ? undefined : Buffer.from(JSON.stringify(body)),
        headers,
      );

    const userClient = async (roleName: string, userName?: string): Promise<UserClient> => {
      const name = userName ?? `user-${++users}-${roleName.replace(/[^A-Za-z0-9]+/g, '-').toLowerCase()}`;
      const user = await api.post<{ id: string }>('/users', { name, roles: [roleName] });
      const t = await api.post<{ token: string }>(`/users/${user.id}/tokens`, { name: 'test' });
      return { api: clientFor(t.token), userId: user.id, name, token: t.token };
    };

    return {
      get manager() {
        return manager as RunningManager;
      },
      managerDir,
      database: opts.database,
      adminToken,
      api,
      agents,
      request,
      requestRaw: (token, method, path, body, headers) =>
        requestRaw(token, method, path, Buffer.from(body), {
          'content-type': 'application/json',
          ...headers,
        }),
      userClient,
      addAgent,
      ...(kms ? { kms } : {}),
      ...(keyProviderId !== undefined ? { keyProviderId } : {}),
      restartManager: async () => {
        const port = Number(new URL((manager as RunningManager).url).port);
        await (manager as RunningManager).close();
        // The same port, so clients made before the restart (api, userClient) keep working.
        manager = await start(port);
        // The agents kept running; the manager reconnects to them at start (connectAll).
        return manager;
      },
      managerClientIdentity: () => {
        const key = loadMasterKey(resolveMasterKeySource(managerDir, undefined, 'manager'), false);
        try {
          return {
            certPem: readFileSync(join(managerDir, 'client.pem'), 'utf8'),
            keyPem: readSealedFile(managerDir, 'client.key.sealed', key),
            caPem,
          };
        } finally {
          key.fill(0);
        }
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Calls an agent's API directly with the given client identity (mutual TLS). */
export function callAgent(
  agent: TestAgent,
  identity: { certPem: string; keyPem: string; caPem: string },
  method: string,
  path: string,
): Promise<{ status: number; body: unknown }> {
  const url = new URL(agent.address);
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: url.hostname,
        port: url.port,
        method,
        path,
        agent: false,
        ca: identity.caPem,
        cert: identity.certPem,
        key: identity.keyPem,
        // The agent's certificate names its host id, not 127.0.0.1's host name.
        checkServerIdentity: () => undefined,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown = text;
          try {
            body = text === '' ? null : JSON.parse(text);
          } catch {
            // keep the text
          }
          resolve({ status: res.statusCode ?? 0, body });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}
