/**
 * The agent's HTTPS API (routes in api.ts), for the manager only.
 *
 * Who may call: TLS requires a client certificate chained to the manager CA this agent
 * received when it joined (the only trust anchor: system roots do not count), so a
 * certificate from any other CA fails in the handshake. Certificates from the manager CA
 * are also held by other agents, so each connection is then checked explicitly: the CN
 * must be MANAGER_IDENTITY and the extended key usage must include clientAuth. Anything
 * else gets 403 HS_ERR_AGENT_PEER_REFUSED on every request and the connection closed;
 * both kinds of refusal leave a trace line (HYPERSEAL_TRACE=agent).
 *
 * Routes stay thin: validate, call the driver, map errors. Error bodies are `{code,
 * message}` with the registry's status (httpStatusOf is the only mapping).
 */
import { mkdirSync } from 'node:fs';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { trackConnections } from '../net-util.js';
import { HypersealError, httpStatusOf } from '../errors.js';
import { trace } from '../trace.js';
import type { AgentBodies, ErrorBody } from './api.js';
import { AgentRoutes, MANAGER_IDENTITY } from './api.js';
import type { Datastore, VmDriver } from './driver.js';
import { defaultDatastores, serializedDriver } from './driver.js';
import { collectHostFacts } from './facts.js';
import { HostSecureBoot, MAX_BUNDLE_BYTES } from './host-secure-boot.js';
import type { HostRecord } from './join.js';
import { loadAgentIdentity } from './join.js';
import { zeroize } from '../crypto/aead.js';
import {
  parseCloneRequest,
  parseEncryptRequest,
  parseKeyRefs,
  parseMigrationIncoming,
  parseMigrationSettle,
  parseMigrationOutgoing,
  parseMigrationResolve,
  parseOffset,
  parsePutKeys,
  parseRekeyRequest,
  parseShutdownRequest,
  parseVmId,
  parseVmSpec,
} from './spec.js';

const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2';
/** A VmSpec is a few KiB; 1 MiB leaves room and still bounds memory per request. */
export const MAX_BODY_BYTES = 1024 * 1024;
const DEFAULT_MAX_CONNECTIONS = 256;

export interface AgentServerOptions {
  dataDir: string;
  listen: { host: string; port: number };
  driver: VmDriver;
  /**
   * Directories for VM files this agent offers, reported in facts so the manager can
   * place disks. Default: the driver's (the QEMU driver's are the only paths it accepts
   * disks in), else one named 'local' at `<dataDir>/datastore`. Created if missing.
   */
  datastores?: Datastore[];
  maxConnections?: number;
  /** Host Secure Boot state; default HostSecureBoot.open(dataDir), which runs the check at start. */
  secureBoot?: HostSecureBoot;
}

export type { Datastore } from './driver.js';

export interface AgentServer {
  host: string;
  port: number;
  /** This host's id in the manager's inventory. */
  hostId: string;
  /** Set when host Secure Boot is on and the check at start failed: only facts are served. */
  verificationFailure: HypersealError | undefined;
  /** Stops serving and releases the driver; running VMs keep running. */
  close(): Promise<void>;
}

type RouteName = keyof typeof AgentRoutes;

interface Route {
  name: RouteName;
  method: string;
  pattern: RegExp;
}

/** Path patterns derived from AgentRoutes itself, so the contract cannot drift. */
const ROUTES: Route[] = (Object.keys(AgentRoutes) as RouteName[]).map((name) => {
  const { method, path } = AgentRoutes[name];
  const source = path
    .split('/')
    .map((part) => (part === ':id' ? '([^/]+)' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
    .join('/');
  return { name, method, pattern: new RegExp(`^${source}$`) };
});

interface Matched {
  route: Route;
  id: string | undefined;
}

function matchRoute(method: string, pathname: string): Matched {
  let pathMatched = false;
  for (const route of ROUTES) {
    const m = route.pattern.exec(pathname);
    if (!m) continue;
    pathMatched = true;
    if (route.method !== method) continue;
    const raw = m[1];
    let id: string | undefined;
    if (raw !== undefined) {
      let decoded: string;
      try {
        decoded = decodeURIComponent(raw);
      } catch {
        throw new HypersealError(
          'HS_ERR_INVALID_ARGUMENT',
          'the VM id in the path is not valid percent-encoding',
        );
      }
      id = parseVmId(decoded);
    }
    return { route, id };
  }
  throw new HypersealError(
    'HS_ERR_NOT_FOUND',
    pathMatched
      ? `${method} is not allowed on ${pathname}`
      : `no agent route ${method} ${pathname} (manager and agent versions may differ)`,
  );
}

/** Why a peer may not call us, or null when it is the manager. */
function refusalReason(socket: TLSSocket): string | null {
  const cert = socket.getPeerCertificate();
  const cn = cert.subject?.CN;
  if (typeof cn !== 'string' || cn !== MANAGER_IDENTITY) {
    return `client certificate CN ${JSON.stringify(cn ?? null)} is not ${MANAGER_IDENTITY}`;
  }
  const eku = (cert as typeof cert & { ext_key_usage?: string[] }).ext_key_usage;
  if (!eku?.includes(CLIENT_AUTH_OID)) return 'client certificate lacks the clientAuth usage';
  return null;
}

function readBody(req: IncomingMessage, limit = MAX_BODY_BYTES): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? '0');
    if (declared > limit) {
      reject(tooLarge());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.pause();
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.once('end', () => resolve(Buffer.concat(chunks)));
    req.once('error', reject);
  });
}

function tooLarge(): HypersealError {
  return new HypersealError('HS_ERR_TOO_LARGE', `request bodies are limited to ${MAX_BODY_BYTES} bytes`);
}

function parseJsonBody(body: Buffer): unknown {
  if (body.length === 0) return null;
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    throw new HypersealError('HS_ERR_INVALID_ARGUMENT', 'the request body is not valid JSON');
  }
}

function send(res: ServerResponse, status: number, body: unknown, close = false): void {
  const headers: Record<string, string | number> = { 'cache-control': 'no-store' };
  if (close) headers.connection = 'close';
  if (body === null) {
    res.writeHead(status, headers).end();
    return;
  }
  const payload = Buffer.from(JSON.stringify(body));
  headers['content-type'] = 'application/json';
  headers['content-length'] = payload.length;
  res.writeHead(status, headers).end(payload);
}

function errorBody(err: unknown): ErrorBody {
  if (err instanceof HypersealError) return err.toJSON();
  return {
    code: 'HS_ERR_INTERNAL',
    message: `agent internal error: ${err instanceof Error ? err.message : String(err)}`,
  };
}

/** One route: validated input in, driver call, typed answer out. */
async function dispatch(
  driver: VmDriver,
  datastores: Datastore[],
  secureBoot: HostSecureBoot,
  matched: Matched,
  body: unknown,
  query: URLSearchParams,
  listenHost: string,
): Promise<{ status: number; body: AgentBodies[RouteName]['response'] }> {
  const vmId = (): string => {
    if (matched.id === undefined) throw new HypersealError('HS_ERR_INTERNAL', 'route without :id');
    return matched.id;
  };
  // Failed verification: the manager may learn why, and nothing else.
  if (secureBoot.failed && !SERVED_WHEN_FAILED.has(matched.route.name)) throw secureBoot.failure();
  switch (matched.route.name) {
    case 'facts':
      return {
        status: 200,
        body: {
          ...(await collectHostFacts(driver)),
          datastores,
          secureBoot: secureBoot.report(),
          migration: driver.migration ?? { live: false, encrypted: false },
        },
      };
    case 'secureBootStatus':
      return { status: 200, body: secureBoot.report() };
    case 'listBundles':
      return { status: 200, body: secureBoot.list() };
    case 'installBundle':
      return { status: 200, body: await secureBoot.install(body as AgentBodies['installBundle']['request']) };
    case 'removeBundle': {
      const name = (body as { name?: unknown } | null)?.name;
      if (typeof name !== 'string') throw new HypersealError('HS_ERR_INVALID_ARGUMENT', 'name is required');
      secureBoot.remove(name);
      return { status: 204, body: null };
    }
    case 'listVms':
      return { status: 200, body: await driver.list() };
    case 'getVm':
      return { status: 200, body: await driver.runtime(vmId()) };
    case 'defineVm':
      return { status: 200, body: await driver.define(parseVmSpec(body, vmId())) };
    case 'deleteVm':
      await driver.remove(vmId());
      return { status: 204, body: null };
    case 'powerOn':
      return { status: 200, body: await driver.powerOn(vmId()) };
    case 'powerOff':
      return { status: 200, body: await driver.powerOff(vmId()) };
    case 'shutdown':
      return { status: 200, body: await driver.shutdown(vmId(), parseShutdownRequest(body).timeoutMs) };
    case 'reset':
      return { status: 200, body: await driver.reset(vmId()) };
    case 'console':
      return { status: 200, body: await driver.console(vmId(), parseOffset(query.get('offset'))) };
    case 'encrypt':
      return { status: 200, body: await driver.encrypt(vmId(), parseEncryptRequest(body).kekRef) };
    case 'decrypt':
      return { status: 200, body: await driver.decrypt(vmId()) };
    case 'rekey': {
      const r = parseRekeyRequest(body);
      return { status: 200, body: await driver.rekey(vmId(), r.kekRef, r.deep) };
    }
    case 'clone':
      return { status: 200, body: await driver.clone(vmId(), parseCloneRequest(body).spec) };
    case 'putKeys': {
      const keys = parsePutKeys(body);
      try {
        // One at a time: each is checked against the VMs that name it before it is kept.
        for (const k of keys) await driver.putKey(k.ref, k.material);
      } finally {
        for (const k of keys) zeroize(k.material);
      }
      return { status: 200, body: { held: keys.map((k) => k.ref) } };
    }
    case 'neededKeys':
      return { status: 200, body: { refs: await driver.neededKeys() } };
    case 'dropKeys':
      for (const ref of parseKeyRefs(body)) driver.keyring.drop(ref);
      return { status: 204, body: null };
    case 'migrationRecord':
      if (!driver.migrationRecord) throw noMigration();
      return { status: 200, body: await driver.migrationRecord(vmId()) };
    case 'migrationIncoming': {
      if (!driver.migrateIn) throw noMigration();
      const r = parseMigrationIncoming(body, vmId());
      return {
        status: 200,
        body: await driver.migrateIn(r.spec, r.record, r.migration, listenHost, r.cold, r.copyDisks),
      };
    }
    case 'migrationOutgoing': {
      if (!driver.migrateOut) throw noMigration();
      const r = parseMigrationOutgoing(body);
      return {
        status: 200,
        body: await driver.migrateOut(vmId(), r.migration, r.peer, {
          cold: r.cold,
          ...(r.nbdPeer ? { nbdPeer: r.nbdPeer } : {}),
          ...(r.copyDisks ? { copyDisks: r.copyDisks } : {}),
        }),
      };
    }
    case 'migrationSettle': {
      if (!driver.settleIncoming) throw noMigration();
      const r = parseMigrationSettle(body);
      return { status: 200, body: { outcome: await driver.settleIncoming(vmId(), r.migrationId) } };
    }
    case 'migrationResolve': {
      if (!driver.resolveOutgoing) throw noMigration();
      const r = parseMigrationResolve(body);
      return { status: 200, body: { outcome: await driver.resolveOutgoing(vmId(), r.migrationId, r.moved) } };
    }
  }
}

function noMigration(): HypersealError {
  return new HypersealError('HS_ERR_MIGRATION_UNSUPPORTED', 'this agent’s driver cannot live-migrate');
}

const SERVED_WHEN_FAILED: ReadonlySet<RouteName> = new Set(['facts', 'secureBootStatus', 'listBundles']);

export async function startAgent(opts: AgentServerOptions): Promise<AgentServer> {
  const identity = loadAgentIdentity(opts.dataDir);
  const host: HostRecord = identity.host;
  const datastores = [...(opts.datastores ?? opts.driver.datastores ?? defaultDatastores(opts.dataDir))];
  for (const ds of datastores) mkdirSync(ds.path, { recursive: true, mode: 0o700 });
  const driver = serializedDriver(opts.driver);
  // Host Secure Boot: the agent's own files and every bundle, before anything else runs.
  const secureBoot = opts.secureBoot ?? (await HostSecureBoot.open(opts.dataDir));
  const verificationFailure = secureBoot.failed ? secureBoot.failure() : undefined;
  if (verificationFailure) trace('agent', 'verification failed', { error: verificationFailure.message });
  // Before serving: VMs that kept running while the agent was down are ours again.
  if (!verificationFailure) await driver.recover();

  const verdicts = new WeakMap<TLSSocket, string | null>();
  const server = https.createServer({
    key: identity.keyPem,
    cert: identity.certPem,
    ca: identity.managerCaPem,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.2',
  });
  server.maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;

  // The TLS socket has lost its address by the time a handshake fails; the TCP one has not.
  const remotes = new WeakMap<object, string>();
  server.on('connection', (tcp: Socket) =>
    remotes.set(tcp, `${tcp.remoteAddress ?? '?'}:${tcp.remotePort ?? 0}`),
  );
  server.on('tlsClientError', (err, socket) => {
    const tcp = (socket as TLSSocket & { _parent?: object })._parent;
    trace('agent', 'TLS handshake refused', {
      remote: (tcp && remotes.get(tcp)) ?? `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`,
      // With TLS 1.3 OpenSSL's verdict on a client certificate (another CA, no clientAuth
      // usage, expired) reaches us only as the peer hanging up after our alert.
      error: err.message,
    });
  });

  server.on('secureConnection', (socket: TLSSocket) => {
    const reason = refusalReason(socket);
    verdicts.set(socket, reason);
    if (reason !== null) {
      trace('agent', 'peer refused', {
        remote: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`,
        reason,
      });
    }
  });

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const started = Date.now();
    const socket = req.socket as TLSSocket;
    const method = req.method ?? 'GET';
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'https://agent');
    } catch {
      url = new URL('https://agent/');
      url.pathname = '/invalid-url'; // matches no route: answered 404 below
    }
    const done = (status: number, body: unknown, close = false): void => {
      send(res, status, body, close);
      trace('agent', 'request', {
        method,
        path: url.pathname,
        status,
        ms: Date.now() - started,
        ...(status >= 400 && body !== null ? { code: (body as ErrorBody).code } : {}),
      });
    };

    const reason = verdicts.has(socket) ? (verdicts.get(socket) ?? null) : refusalReason(socket);
    if (reason !== null) {
      const err = new HypersealError(
        'HS_ERR_AGENT_PEER_REFUSED',
        `this agent answers only its manager: ${reason}`,
      );
      done(err.status, err.toJSON(), true);
      return;
    }

    let matched: Matched;
    try {
      matched = matchRoute(method, url.pathname);
    } catch (err) {
      done(httpStatusOf(err), errorBody(err));
      return;
    }
    readBody(
      req,
      matched.route.name === 'installBundle' ? Math.ceil((MAX_BUNDLE_BYTES * 4) / 3) + 65536 : MAX_BODY_BYTES,
    )
      .then((raw) => {
        const body = parseJsonBody(raw);
        // Key material arrived in this buffer: overwrite it now (the parsed strings are
        // immutable and left to the garbage collector; the keys proper are Buffers).
        if (matched.route.name === 'putKeys' || matched.route.name.startsWith('migration')) raw.fill(0);
        return dispatch(driver, datastores, secureBoot, matched, body, url.searchParams, opts.listen.host);
      })
      .then(
        (answer) => done(answer.status, answer.body),
        (err: unknown) => {
          if (!(err instanceof HypersealError)) {
            trace('agent', 'internal error', { path: url.pathname, error: String(err) });
          }
          // An oversized body was left unread: close rather than read the rest.
          done(
            httpStatusOf(err),
            errorBody(err),
            err instanceof HypersealError && err.code === 'HS_ERR_TOO_LARGE',
          );
        },
      );
  });

  // A manager polling over a connection accepted just before close() would hold it open.
  const connections = trackConnections(server);
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(
        new HypersealError(
          'HS_ERR_CONFIG',
          `the agent cannot listen on ${opts.listen.host}:${opts.listen.port}: ${err.code ?? err.message}`,
          undefined,
          { cause: err },
        ),
      );
    };
    server.once('error', onError);
    server.listen(opts.listen.port, opts.listen.host, () => {
      server.off('error', onError);
      resolve();
    });
  }).catch(async (err: unknown) => {
    await driver.close();
    throw err;
  });

  const address = server.address() as AddressInfo;
  trace('agent', 'listening', { host: address.address, port: address.port, hostId: host.hostId });
  let closing: Promise<void> | null = null;
  return {
    host: address.address,
    port: address.port,
    hostId: host.hostId,
    verificationFailure,
    close: () => {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeAllConnections();
        connections.destroyAll();
        await closed;
        await driver.close();
      })();
      return closing;
    },
  };
}
