/**
 * Test fixtures for the agent: a manager PKI made with src/pki, a fake manager that
 * enrolls agents (signing their CSR as the real one does), and a small mutual-TLS client
 * standing in for the manager's agent client. Used by the *.test.ts files beside it.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ErrorCode } from '../errors.js';
import type { CertifiedKey } from '../pki/index.js';
import {
  certificateFingerprint256,
  createCertificateAuthority,
  issueCertificate,
  signCsr,
} from '../pki/index.js';
import type { EnrollRequest, EnrollResponse, ErrorBody, VmSpec } from './api.js';
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
  const answer = async (
    req: IncomingMessage,
    text: string,
  ): Promise<[number, EnrollResponse | ErrorBody]> => {
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
            resolve({
              status: res.statusCode ?? 0,
              body: text === '' ? null : (JSON.parse(text) as unknown),
            });
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

/**
 * A man in the middle's best forgery: a server certificate whose issuer name and
 * authority key id are those of the real CA (so certificate-chain linking, which goes by
 * name and key id, attaches the real, public CA certificate to it), signed by a look-alike
 * CA key of its own. Made with the openssl CLI, since src/pki rightly cannot forge.
 */
export function forgeLookalikeServer(pki: ManagerPki, dir: string): { certChainPem: string; keyPem: string } {
  const p = (name: string): string => join(dir, name);
  const openssl = (...args: string[]): string =>
    execFileSync('openssl', args, { encoding: 'utf8', stdio: 'pipe' });
  writeFileSync(p('real-ca.pem'), pki.ca.certPem);
  const skiText = openssl('x509', '-in', p('real-ca.pem'), '-noout', '-ext', 'subjectKeyIdentifier');
  const ski = /([0-9A-F]{2}(?::[0-9A-F]{2})+)/.exec(skiText)?.[1];
  if (ski === undefined) throw new Error(`no SKI in ${skiText}`);
  const subject = openssl('x509', '-in', p('real-ca.pem'), '-noout', '-subject', '-nameopt', 'compat');
  const cn = /CN=([^/\n]+)/.exec(subject)?.[1]?.trim();
  if (cn === undefined) throw new Error(`no CN in ${subject}`);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl(
    'req',
    '-x509',
    ...ec,
    '-keyout',
    p('fake-ca.key'),
    '-out',
    p('fake-ca.pem'),
    '-subj',
    `/CN=${cn}`,
    '-days',
    '1',
    '-addext',
    `subjectKeyIdentifier=${ski}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign',
  );
  openssl('req', '-new', ...ec, '-keyout', p('leaf.key'), '-out', p('leaf.csr'), '-subj', '/CN=manager.test');
  writeFileSync(
    p('leaf.ext'),
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\n',
  );
  openssl(
    'x509',
    '-req',
    '-in',
    p('leaf.csr'),
    '-CA',
    p('fake-ca.pem'),
    '-CAkey',
    p('fake-ca.key'),
    '-days',
    '1',
    '-extfile',
    p('leaf.ext'),
    '-out',
    p('leaf.pem'),
  );
  return {
    certChainPem: readFileSync(p('leaf.pem'), 'utf8') + pki.ca.certPem,
    keyPem: readFileSync(p('leaf.key'), 'utf8'),
  };
}

export function tempDir(prefix: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), `hyperseal-${prefix}-`));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** A small plain EFI VM with one 8 MiB disk on the datastore at `datastorePath`. */
export function smallVmSpec(id: string, datastorePath: string): VmSpec {
  return {
    id,
    name: id,
    cpus: 1,
    memoryMiB: 64,
    firmware: 'efi',
    secureBoot: false,
    disks: [{ id: 'disk0', sizeMiB: 8, datastorePath }],
    nics: [],
    encryption: null,
  };
}
