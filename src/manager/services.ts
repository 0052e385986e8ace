/**
 * The manager process: its data directory (CA and TLS identities, sealed under the
 * manager's master key), the database, the services, and the HTTPS server.
 *
 * Data directory:
 *   ca.pem / ca.key.sealed            the manager CA (agents' and the manager's certificates)
 *   api.pem / api.key.sealed          HTTPS server certificate for the REST API and web UI
 *   client.pem / client.key.sealed    the manager's client certificate for agents (CN hyperseal-manager)
 *   manager.db                        SQLite database (unless --database postgres://…)
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { isIP } from 'node:net';
import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { MANAGER_IDENTITY } from '../agent/api.js';
import { deriveSealingKey } from '../crypto/aead.js';
import { readSealedFile, writeSealedFile } from '../crypto/sealed-file.js';
import { HypersealError } from '../errors.js';
import { trackConnections } from '../net-util.js';
import { writeFileAtomic } from '../fsutil.js';
import { KeyProviderService, deriveKeyProviderSealingKey } from '../keys/index.js';
import { loadMasterKey, resolveMasterKeySource } from '../kms/master-key.js';
import type { CertifiedKey } from '../pki/index.js';
import { createCertificateAuthority, issueCertificate } from '../pki/index.js';
import type { Db } from '../store/db.js';
import { migrate, openDatabase } from '../store/index.js';
import type { Actor } from './events.js';
import { ManagerEvents } from './events.js';
import { HostService } from './hosts.js';
import type { AnyRoute } from './http.js';
import { buildHttpApp, openApiDocument } from './http.js';
import { adminRoutes } from './routes/admin.js';
import { hostRoutes } from './routes/hosts.js';
import { keyProviderRoutes } from './routes/key-providers.js';
import { vmRoutes } from './routes/vms.js';
import { encryptionRoutes } from './routes/encryption.js';
import { KeySafetyService } from './key-safety.js';
import { EncryptionPolicies, VmCryptoService } from './vm-crypto.js';
import { loggingRoutes } from './routes/logging.js';
import { LoggingService } from './logging.js';
import { TaskEngine } from './tasks.js';
import { UserService } from './users.js';
import { VmService } from './vms.js';
import { SecureBootService } from './secure-boot.js';
import { secureBootRoutes } from './routes/secure-boot.js';
import { registerUi } from './ui.js';

export interface ManagerServices {
  db: Db;
  events: ManagerEvents;
  tasks: TaskEngine;
  hosts: HostService;
  vms: VmService;
  users: UserService;
  logging: LoggingService;
  keyProviders: KeyProviderService;
  crypto: VmCryptoService;
  keySafety: KeySafetyService;
  secureBoot: SecureBootService;
  createNetwork(actor: Actor, name: string): Promise<{ id: string; name: string; kind: string }>;
}

export function allRoutes(s: ManagerServices): AnyRoute[] {
  return [
    ...vmRoutes(s),
    ...hostRoutes(s),
    ...adminRoutes(s),
    ...loggingRoutes(s),
    ...keyProviderRoutes(s),
    ...encryptionRoutes(s),
    ...secureBootRoutes(s),
  ];
}

/** The API's OpenAPI document, from the route table alone (no database, no server): the SDK generator's input. */
export function managerOpenApi(): Record<string, unknown> {
  return openApiDocument(allRoutes({} as ManagerServices), API_TITLE, API_VERSION);
}

const API_TITLE = 'Hyperseal manager API';
/** How long requests under way may finish when the manager stops, before their connections are cut. */
const SHUTDOWN_GRACE_MS = 2_000;
/** HKDF label of the key that seals alert rules' webhook secrets in the database. */
const ALERT_SECRETS_KEY_LABEL = 'hyperseal manager: alert rule webhook secrets v1';
const API_VERSION = '1';

export interface ManagerIdentityFiles {
  ca: CertifiedKey;
  api: CertifiedKey;
  client: CertifiedKey;
}

/** Creates (first start) or loads the manager's CA and certificates. */
export async function loadManagerIdentity(
  dataDir: string,
  masterKey: Buffer,
  serverNames: string[],
): Promise<ManagerIdentityFiles> {
  if (!existsSync(join(dataDir, 'client.pem'))) {
    // Written in order, the client certificate last: its presence marks a finished setup.
    const ca = await createCertificateAuthority({
      commonName: `Hyperseal manager CA (${hostname()})`,
      validityDays: 3650,
    });
    const all = [...new Set(['localhost', '127.0.0.1', hostname(), ...serverNames])];
    const api = await issueCertificate(ca, {
      commonName: 'hyperseal-manager-api',
      usage: 'server',
      dnsNames: all.filter((n) => isIP(n) === 0),
      ipAddresses: all.filter((n) => isIP(n) !== 0),
    });
    const client = await issueCertificate(ca, { commonName: MANAGER_IDENTITY, usage: 'client' });
    for (const [name, c] of [
      ['ca', ca],
      ['api', api],
      ['client', client],
    ] as const) {
      writeSealedFile(dataDir, `${name}.key.sealed`, masterKey, c.keyPem);
      writeFileAtomic(join(dataDir, `${name}.pem`), c.certPem);
    }
  }
  const load = (name: 'ca' | 'api' | 'client'): CertifiedKey => ({
    certPem: readFileSync(join(dataDir, `${name}.pem`), 'utf8'),
    keyPem: readSealedFile(dataDir, `${name}.key.sealed`, masterKey),
  });
  return { ca: load('ca'), api: load('api'), client: load('client') };
}

export interface ManagerOptions {
  dataDir: string;
  /** sqlite path or postgres://… ; default DATA_DIR/manager.db */
  database?: string;
  host?: string;
  port?: number;
  masterKeyFile?: string;
  /** How often hosts are checked and VM states synced (default 5 s). */
  healthIntervalMs?: number;
}

export interface RunningManager {
  /** Set on the first start only: an API token for the initial administrator (shown once). */
  initialAdminToken?: string;
  url: string;
  caPath: string;
  caSha256: string;
  services: ManagerServices;
  app: FastifyInstance;
  close(): Promise<void>;
}

export async function startManager(opts: ManagerOptions): Promise<RunningManager> {
  const dataDir = resolve(opts.dataDir);
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const fresh = !existsSync(join(dataDir, 'client.pem'));
  const masterKey = loadMasterKey(resolveMasterKeySource(dataDir, opts.masterKeyFile, 'manager'), fresh);
  const host = opts.host ?? '127.0.0.1';
  const identity = await loadManagerIdentity(dataDir, masterKey, [host]);
  // Seals key providers' client keys; derived before the master key is wiped.
  const keyProviderSealingKey = deriveKeyProviderSealingKey(masterKey);
  masterKey.fill(0);

  const db = await openDatabase(opts.database ?? { sqlitePath: join(dataDir, 'manager.db') });
  try {
    await migrate(db);
  } catch (err) {
    await db.close();
    throw err;
  }
  const events = new ManagerEvents(db);
  // One id per manager, the same across its restarts: where it runs and its data directory.
  const tasks = new TaskEngine(db, { owner: `${hostname()}:${resolve(dataDir)}` });
  await tasks.recover();
  const hosts = new HostService(db, { ca: identity.ca, client: identity.client }, events);
  const users = new UserService(db, events);
  await users.ensureBuiltInRoles();
  const vms = new VmService(db, hosts, events, tasks);
  await vms.recoverPending();
  const logging = new LoggingService(
    db,
    events,
    dataDir,
    deriveSealingKey(masterKey, ALERT_SECRETS_KEY_LABEL),
  );
  await logging.start();
  const keyProviders = new KeyProviderService(db, events, keyProviderSealingKey);
  keyProviderSealingKey.fill(0);
  const policies = new EncryptionPolicies(db, events);
  await policies.ensureBuiltIn();
  const crypto = new VmCryptoService(vms, hosts, events, tasks, keyProviders, policies);
  const keySafety = new KeySafetyService(db, keyProviders, events);
  const services: ManagerServices = {
    db,
    events,
    tasks,
    hosts,
    vms,
    users,
    logging,
    keyProviders,
    crypto,
    keySafety,
    secureBoot: new SecureBootService(db, hosts, events),
    createNetwork: async (actor, name) => {
      const id = randomUUID();
      try {
        await db.run(`INSERT INTO networks (id, name, kind) VALUES ($1, $2, 'port-group')`, [id, name]);
      } catch (err) {
        if (err instanceof HypersealError && err.code === 'HS_ERR_DB_CONFLICT') {
          throw new HypersealError('HS_ERR_CONFLICT', `a network named '${name}' already exists`);
        }
        throw err;
      }
      await events.record(actor, {
        type: 'network.created',
        object: { kind: 'network', id, name },
        changes: [{ path: 'name', from: null, to: name }],
      });
      return { id, name, kind: 'port-group' };
    },
  };
  await hosts.connectAll();
  let initialAdminToken: string | undefined;
  if ((await users.userCount()) === 0) {
    // First start: one administrator, reachable only through this token until it sets a password.
    const system: Actor = { user: 'system', sourceIp: null };
    const admin = await users.create(system, 'admin', undefined, ['Administrator']);
    initialAdminToken = (await users.createToken(system, admin.id, 'initial', null)).token;
    await services.createNetwork(system, 'VM Network');
  }

  // Host health and VM state sync (a crashed VM, an agent that went away).
  const stopHealth = hosts.startHealthLoop<Map<string, number>>(
    opts.healthIntervalMs ?? 5_000,
    async (hostId, states, runtimes, versionsBefore) => {
      for (const vm of await vms.list({ limit: 100_000, offset: 0, hostId })) {
        const actual = states.get(vm.id);
        if (actual !== undefined && actual !== vm.state) await vms.setState(vm.id, actual);
      }
      // Encryption the host reports, and keys for VMs locked by an agent restart.
      await crypto.sync(hostId, runtimes, versionsBefore);
      // VMs a finished but unrecorded migration left here.
      await vms.adoptReported(hostId, runtimes);
    },
    (hostId) => vms.versionsOn(hostId),
  );
  // Whether the default key server's keys are all in a backup (one event per change).
  const keySafetyTimer = setInterval(
    () => void keySafety.watch().catch(() => undefined),
    Math.max(opts.healthIntervalMs ?? 5_000, 1_000),
  );
  keySafetyTimer.unref();
  const app = buildHttpApp({
    routes: allRoutes(services),
    authenticate: (req) => users.authenticate(req),
    onRefused: async (req, principal, error) => {
      await events.record(
        { user: principal?.name ?? 'anonymous', sourceIp: req.ip },
        {
          type: 'access.denied',
          object: {
            kind: 'api',
            id: `${req.method} ${req.routeOptions.url ?? req.url}`,
            name: `${req.method} ${req.routeOptions.url ?? req.url}`,
          },
          changes: [],
          result: 'failure',
          message: error.message,
        },
      );
    },
    title: API_TITLE,
    version: API_VERSION,
    // The chain includes the CA, so an agent that pins the CA's fingerprint (join) finds it.
    https: { cert: identity.api.certPem + identity.ca.certPem, key: identity.api.keyPem },
  });
  registerUi(app);
  // At stop, what is still open after a grace period is cut: a client polling over a
  // kept-alive connection must not hold the manager's shutdown.
  const connections = trackConnections(app.server);
  const address = await app.listen({ host, port: opts.port ?? 8443 });
  const port = new URL(address).port;
  return {
    ...(initialAdminToken !== undefined ? { initialAdminToken } : {}),
    url: `https://${isIP(host) === 6 ? `[${host}]` : host}:${port}`,
    caPath: join(dataDir, 'ca.pem'),
    caSha256: hosts.caFingerprint,
    services,
    app,
    close: async () => {
      stopHealth();
      clearInterval(keySafetyTimer);
      tasks.close();
      events.endFollowers();
      const cut = setTimeout(() => connections.destroyAll(), SHUTDOWN_GRACE_MS);
      await app.close();
      clearTimeout(cut);
      await logging.close();
      keyProviders.close();
      hosts.close();
      await db.close();
    },
  };
}
