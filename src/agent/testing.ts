/**
 * Test fixtures for the agent: a manager PKI made with src/pki, a fake manager that
 * enrolls agents (signing their CSR as the real one does), and a small mutual-TLS client
 * standing in for the manager's agent client. Used by the *.test.ts files beside it.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ErrorCode } from '../errors.js';
import type { CertifiedKey } from '../pki/index.js';
import { certificateFingerprint256, createCertificateAuthority, issueCertificate, signCsr } from '../pki/index.js';
import type { EnrollRequest, EnrollResponse, ErrorBody } from './api.js';
import { MANAGER_IDENTITY } from './api.js';
import { ENROLL_PATH } from './join.js';

export interface ManagerPki {
  ca: CertifiedKey;
  caSha256: string;
  /** The fake manager's HTTPS server certificate (localhost, 127.0.0.1). */
  server: CertifiedKey;
  /** CN hyperseal-manager, clientAuth: the only peer an agent accepts. */
  managerClient: CertifiedKey;
  /** Same CA, another CN (what another agent or a stolen tool certificate looks like). */
  otherCnClient: CertifiedKey;
  /** The right CN but server usage only (no clientAuth). */
  serverUsageManager: CertifiedKey;
  /** The right CN from a different CA. */
  foreignCaClient: CertifiedKey;
  /** A different CA with a server certificate: a man in the middle's own PKI. */
  foreignCa: CertifiedKey;
  foreignServer: CertifiedKey;
}

export async function createManagerPki(): Promise<ManagerPki> {
  const [ca, foreignCa] = await Promise.all([
    createCertificateAuthority({ commonName: 'Hyperseal Test Manager CA' }),
    createCertificateAuthority({ commonName: 'Intruder CA' }),
  ]);
  const [server, managerClient, otherCnClient, serverUsageManager, foreignCaClient, foreignServer] =
    await Promise.all([
      issueCertificate(ca, { commonName: 'manager.test', usage: 'server' }),
      issueCertificate(ca, { commonName: MANAGER_IDENTITY, usage: 'client' }),
      issueCertificate(ca, { commonName: 'some-other-host', usage: 'client' }),
      issueCertificate(ca, { commonName: MANAGER_IDENTITY, usage: 'server' }),
      issueCertificate(foreignCa, { commonName: MANAGER_IDENTITY, usage: 'client' }),
      issueCertificate(foreignCa, { commonName: 'manager.test', usage: 'server' }),
    ]);
  return {
    ca,
    caSha256: certificateFingerprint256(ca.certPem),
    server,
    managerClient,
    otherCnClient,
    serverUsageManager,
    foreignCaClient,
    foreignCa,
    foreignServer,
  };
}

export interface FakeManager {
  url: string;
  /** Every request body received, in order, raw: tests look for the token in them. */
  bodies: string[];
  /** TLS connections that completed a handshake. */
  handshakes: number;
  /** Tokens and what answering them does. */
  tokens: Map<string, 'valid' | 'used' | 'expired'>;
  enrolled: { hostId: string; name: string; address: string }[];
  close(): Promise<void>;
}

export interface FakeManagerOptions {
  pki: ManagerPki;
  /** Certificate chain the server presents; default its server cert followed by the CA. */
  certChainPem?: string;
  keyPem?: string;
}

/** An HTTPS server speaking the manager's enrollment route, no more. */
export async function startFakeManager(opts: FakeManagerOptions): Promise<FakeManager> {
  const { pki } = opts;
  const state: FakeManager = {
    url: '',
    bodies: [],
    handshakes: 0,
    tokens: new Map(),
    enrolled: [],
    close: () => Promise.resolve(),
  };
  const server = https.createServer({
    // The manager sends its CA after its own certificate: agents pin the CA from there.
    cert: opts.certChainPem ?? pki.server.certPem + pki.ca.certPem,
    key: opts.keyPem ?? pki.server.keyPem,
  });
  server.on('secureConnection', () => state.handshakes++);
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      state.bodies.push(text);
      void answer(req, text).then(([status, body]) => {
        const payload = JSON.stringify(body);
        res.writeHead(status, { 'content-type': 'application/json' }).end(payload);
      });
    });
  });
  const answer = async (req: IncomingMessage, text: string): Promise<[number, EnrollResponse | ErrorBody]> => {
    if (req.method !== 'POST' || req.url !== ENROLL_PATH) {
      return [404, { code: 'HS_ERR_NOT_FOUND', message: `no route ${req.method ?? ''} ${req.url ?? ''}` }];
    }
    const body = JSON.parse(text) as EnrollRequest;
    const verdict = state.tokens.get(body.token);
    const refuse = (code: ErrorCode, message: string): [number, ErrorBody] => [401, { code, message }];
    if (verdict === undefined) return refuse('HS_ERR_AUTH_INVALID_TOKEN', 'unknown enrollment token');
    if (verdict === 'used') return refuse('HS_ERR_AUTH_TOKEN_USED', 'enrollment token was already used');
    if (verdict === 'expired') return refuse('HS_ERR_AUTH_TOKEN_EXPIRED', 'enrollment token has expired');
    state.tokens.set(body.token, 'used');
    const hostId = `host-${createHash('sha256').update(body.csrPem).digest('hex').slice(0, 12)}`;
    // As the real manager: the CA decides the CN (the host id) and the names.
    const certPem = await signCsr(pki.ca, body.csrPem, {
      usage: 'server',
      commonName: hostId,
      ipAddresses: ['127.0.0.1'],
      dnsNames: ['localhost'],
    });
    state.enrolled.push({ hostId, name: body.name, address: body.address });
    return [200, { hostId, certPem, caPem: pki.ca.certPem }];
  };
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  state.url = `https://127.0.0.1:${port}`;
  state.close = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  return state;
}

export interface AgentReply {
  status: number;
  body: unknown;
}

/** A manager-side client for the agent API with a chosen client certificate. */
export class TestAgentClient {
  private readonly agent: https.Agent;

  constructor(
    private readonly port: number,
    caPem: string,
    client: CertifiedKey | null,
  ) {
    this.agent = new https.Agent({
      keepAlive: true,
      maxSockets: 32,
      ca: caPem,
      ...(client ? { cert: client.certPem, key: client.keyPem } : {}),
    });
  }

  request(method: string, path: string, body?: unknown): Promise<AgentReply> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return this.raw(method, path, payload);
  }

  raw(method: string, path: string, payload?: Buffer): Promise<AgentReply> {
    return new Promise((resolve, reject) => {
      const req = https.request(
        {
          host: '127.0.0.1',
          port: this.port,
          method,
          path,
          agent: this.agent,
          headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            resolve({ status: res.statusCode ?? 0, body: text === '' ? null : (JSON.parse(text) as unknown) });
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

export function tempDir(prefix: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), `hyperseal-${prefix}-`));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}
