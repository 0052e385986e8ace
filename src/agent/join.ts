/**
 * Joining a manager: the agent's one call made before it has a certificate.
 *
 * Why the CA fingerprint and not only the token. The token authenticates the agent to the
 * manager; nothing in it authenticates the manager to the agent. Without a pin, whoever
 * sits between host and manager (DNS spoofing, a rogue proxy) could present any
 * certificate, take the token, and then (a) spend it to enroll a host of its own with the
 * real manager and (b) sign our CSR with its own CA, after which this agent would obey
 * the attacker, since the agent trusts exactly the CA it receives here. So the operator
 * passes the SHA-256 fingerprint of the manager's CA (printed next to the token) and the
 * token only ever travels to a server that proves possession of a key certified by that
 * CA:
 *
 * 1. Probe: a TLS handshake that sends nothing. The server's chain must contain a
 *    certificate whose DER hashes to the pin (the manager serves its CA certificate after
 *    its own). Otherwise: HS_ERR_AGENT_CA_MISMATCH, and the token never left the host.
 *    This handshake is unverified on purpose: it only fetches a candidate CA, and a hash
 *    match on the DER makes that candidate the one the operator meant.
 * 2. Enroll: a fresh connection whose only trust anchor is that CA (`ca`, so the system
 *    roots do not count), with full OpenSSL chain, validity and host-name checks, plus a
 *    check that the chain OpenSSL verified ends in the pinned CA and that the leaf is a
 *    server certificate (an enrolled agent's client certificate from the same CA cannot
 *    pose as the manager). Only then is the request with the token written. A MITM now
 *    needs the manager's private key or a certificate from its CA, i.e. it is the manager.
 * 3. The answer's `caPem` must hash to the pin too, and `certPem` must be issued by it
 *    for the key we generated; the CA file we keep is therefore the pinned one.
 *
 * Crash safety: the private key exists only in memory until the manager has answered.
 * Files are written atomically one by one and `host.json` last; an identity counts only
 * when `host.json` exists. When replacing an identity, `host.json` is removed first. A
 * kill -9 at any point thus leaves either no identity or a complete one.
 */
import { X509Certificate, createHash, createPrivateKey, createPublicKey } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, unlinkSync } from 'node:fs';
import { closeSync, fsyncSync, openSync } from 'node:fs';
import https from 'node:https';
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import { ErrorCodes, HypersealError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import { createCsr } from '../pki/index.js';
import { trace } from '../trace.js';
import type { EnrollRequest, EnrollResponse, ErrorBody } from './api.js';

export const IDENTITY_FILES = {
  key: 'agent.key',
  cert: 'agent.pem',
  managerCa: 'manager-ca.pem',
  /** Written last: its presence is what makes an identity complete. */
  host: 'host.json',
} as const;

export const ENROLL_PATH = '/api/v1/hosts/enroll';
const SERVER_AUTH_OID = '1.3.6.1.5.5.7.3.1';
const MAX_RESPONSE_BYTES = 1024 * 1024;
const DEFAULT_TIMEOUT_MS = 30_000;
/** OpenSSL verification results meaning "this chain does not lead to the trust anchor". */
const NOT_FROM_PINNED_CA = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_SIGNATURE_FAILURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
]);
const HOST_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

export interface JoinOptions {
  /** https://HOST[:PORT] of the manager's API. */
  managerUrl: string;
  /** The one-time host enrollment token. */
  token: string;
  /** SHA-256 of the manager CA certificate's DER; hex, any case, colons allowed. */
  caSha256: string;
  /** The host's name in the manager's inventory (also the CSR's CN). */
  name: string;
  /** https://HOST:PORT where this agent will listen. */
  address: string;
  dataDir: string;
  /** Replace an existing identity (re-enrollment). Default false: refuse. */
  replace?: boolean;
  /** For the whole join (both connections). Default 30,000. */
  timeoutMs?: number;
}

/** What host.json holds. */
export interface HostRecord {
  hostId: string;
  managerUrl: string;
  managerCaSha256: string;
  name: string;
  address: string;
  joinedAt: string;
}

export interface AgentIdentity {
  host: HostRecord;
  keyPem: string;
  certPem: string;
  managerCaPem: string;
}

export async function joinManager(opts: JoinOptions): Promise<HostRecord> {
  const pin = parseFingerprint(opts.caSha256);
  const target = parseManagerUrl(opts.managerUrl);
  if (typeof opts.token !== 'string' || opts.token.length === 0) {
    throw new HypersealError('HS_ERR_INVALID_ARGUMENT', 'the enrollment token is empty');
  }
  parseAddress(opts.address);
  const hostFile = join(opts.dataDir, IDENTITY_FILES.host);
  if (existsSync(hostFile) && opts.replace !== true) {
    throw new HypersealError(
      'HS_ERR_AGENT_ALREADY_JOINED',
      `${opts.dataDir} already holds an identity (${hostFile}); pass replace to enroll again`,
    );
  }
  const deadline = Date.now() + (opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);

  // Before any key is made or token sent: is the server at the URL the pinned manager?
  const caPem = await probeManagerCa(target, pin, deadline);
  const { csrPem, keyPem } = await createCsr({ commonName: opts.name, keyType: 'ec' });
  const request: EnrollRequest = { token: opts.token, name: opts.name, address: opts.address, csrPem };
  trace('agent', 'enrolling', { managerUrl: target.href, name: opts.name, address: opts.address });
  const answer = await postEnroll(target, caPem, pin, request, deadline);
  const certPem = checkEnrollResponse(answer, pin, keyPem);

  const host: HostRecord = {
    hostId: answer.hostId,
    managerUrl: target.origin,
    managerCaSha256: pin,
    name: opts.name,
    address: opts.address,
    joinedAt: new Date().toISOString(),
  };
  commitIdentity(opts.dataDir, { host, keyPem, certPem, managerCaPem: answer.caPem });
  trace('agent', 'joined', { hostId: host.hostId, managerUrl: host.managerUrl });
  return host;
}

/** Reads the identity written by joinManager; HS_ERR_AGENT_NOT_JOINED when there is none. */
export function loadAgentIdentity(dataDir: string): AgentIdentity {
  const hostFile = join(dataDir, IDENTITY_FILES.host);
  if (!existsSync(hostFile)) {
    throw new HypersealError(
      'HS_ERR_AGENT_NOT_JOINED',
      `${dataDir} holds no agent identity (no ${IDENTITY_FILES.host}): join a manager first`,
    );
  }
  const read = (name: string): string => {
    try {
      return readFileSync(join(dataDir, name), 'utf8');
    } catch (cause) {
      // host.json is written last, so this is damage after the fact, not a torn join.
      throw new HypersealError(
        'HS_ERR_CONFIG',
        `${join(dataDir, name)} is missing or unreadable`,
        undefined,
        {
          cause,
        },
      );
    }
  };
  let host: unknown;
  try {
    host = JSON.parse(read(IDENTITY_FILES.host));
  } catch (cause) {
    if (cause instanceof HypersealError) throw cause;
    throw new HypersealError('HS_ERR_CONFIG', `${hostFile} is not valid JSON`, undefined, { cause });
  }
  const h = host as Partial<HostRecord> | null;
  if (typeof h?.hostId !== 'string' || typeof h.managerUrl !== 'string') {
    throw new HypersealError('HS_ERR_CONFIG', `${hostFile} lacks hostId or managerUrl`);
  }
  return {
    host: h as HostRecord,
    keyPem: read(IDENTITY_FILES.key),
    certPem: read(IDENTITY_FILES.cert),
    managerCaPem: read(IDENTITY_FILES.managerCa),
  };
}

/* ------------------------------------------------------------------ input */

interface ManagerTarget {
  href: string;
  origin: string;
  /** For net.connect: IPv6 without brackets. */
  host: string;
  port: number;
  /** SNI name; TLS forbids IP addresses there. */
  servername: string | undefined;
  enrollPath: string;
}

export function parseFingerprint(value: string): string {
  const hex = typeof value === 'string' ? value.replace(/:/g, '').toLowerCase() : '';
  if (!/^[0-9a-f]{64}$/.test(hex)) {
    throw new HypersealError(
      'HS_ERR_INVALID_ARGUMENT',
      'the CA fingerprint must be a SHA-256 in hex (64 digits, colons allowed)',
    );
  }
  return hex;
}

function parseManagerUrl(value: string): ManagerTarget {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `manager URL ${JSON.stringify(value)} is not a URL`);
  }
  if (url.protocol !== 'https:' || url.username !== '' || url.password !== '' || url.search !== '') {
    throw new HypersealError(
      'HS_ERR_INVALID_ARGUMENT',
      `manager URL must be https://HOST[:PORT][/PATH] (got ${JSON.stringify(value)})`,
    );
  }
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  return {
    href: url.href,
    origin: url.origin + url.pathname.replace(/\/+$/, ''),
    host,
    port: url.port === '' ? 443 : Number(url.port),
    servername: isIP(host) === 0 ? host : undefined,
    enrollPath: url.pathname.replace(/\/+$/, '') + ENROLL_PATH,
  };
}

function parseAddress(value: string): void {
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    url = undefined;
  }
  if (url?.protocol !== 'https:' || url.port === '' || (url.pathname !== '/' && url.pathname !== '')) {
    throw new HypersealError(
      'HS_ERR_INVALID_ARGUMENT',
      `agent address must be https://HOST:PORT (got ${JSON.stringify(value)})`,
    );
  }
}

/* ------------------------------------------------------------------ step 1: probe */

function remaining(deadline: number): number {
  return Math.max(1, deadline - Date.now());
}

function unreachable(target: ManagerTarget, err: Error): HypersealError {
  const code = (err as NodeJS.ErrnoException).code;
  return new HypersealError(
    'HS_ERR_AGENT_MANAGER_UNREACHABLE',
    `cannot reach the manager at ${target.href}: ${err.message}${code && !err.message.includes(code) ? ` (${code})` : ''}`,
    undefined,
    { cause: err },
  );
}

function sha256Hex(der: Buffer): string {
  return createHash('sha256').update(der).digest('hex');
}

function derToPem(der: Buffer): string {
  const b64 = der.toString('base64').replace(/.{1,64}/g, '$&\n');
  return `-----BEGIN CERTIFICATE-----\n${b64}-----END CERTIFICATE-----\n`;
}

/** The certificates of a peer chain, leaf first, each once (a self-signed root points at itself). */
function chainOf(leaf: tls.DetailedPeerCertificate): tls.DetailedPeerCertificate[] {
  const out: tls.DetailedPeerCertificate[] = [];
  const seen = new Set<string>();
  let cert: tls.DetailedPeerCertificate | undefined = leaf;
  while (cert?.raw !== undefined && !seen.has(cert.fingerprint256)) {
    seen.add(cert.fingerprint256);
    out.push(cert);
    cert = cert.issuerCertificate;
  }
  return out;
}

/** Handshakes without sending a byte of HTTP and returns the chain member matching `pin`. */
function probeManagerCa(target: ManagerTarget, pin: string, deadline: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: target.host,
      port: target.port,
      ...(target.servername !== undefined ? { servername: target.servername } : {}),
      // Deliberately unverified: see step 1 above. Nothing is written on this socket.
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
    });
    const timer = setTimeout(
      () => socket.destroy(new Error(`no TLS handshake within the timeout`)),
      remaining(deadline),
    );
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(unreachable(target, err));
    });
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const chain = chainOf(socket.getPeerCertificate(true));
      socket.destroy();
      const hashes = chain.map((c) => sha256Hex(c.raw));
      const i = hashes.indexOf(pin);
      const match = chain[i];
      if (match === undefined) {
        trace('agent', 'manager CA fingerprint mismatch', { managerUrl: target.href, presented: hashes });
        reject(
          new HypersealError(
            'HS_ERR_AGENT_CA_MISMATCH',
            `the server at ${target.href} presents no certificate with SHA-256 ${pin} ` +
              `(its chain: ${hashes.join(', ') || 'empty'}); the token was not sent`,
            { presented: hashes },
          ),
        );
        return;
      }
      resolve(derToPem(match.raw));
    });
  });
}

/* ------------------------------------------------------------------ step 2: enroll */

function postEnroll(
  target: ManagerTarget,
  caPem: string,
  pin: string,
  body: EnrollRequest,
  deadline: number,
): Promise<EnrollResponse> {
  const payload = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = https.request({
      method: 'POST',
      host: target.host,
      port: target.port,
      path: target.enrollPath,
      ...(target.servername !== undefined ? { servername: target.servername } : {}),
      headers: { 'content-type': 'application/json', 'content-length': payload.length },
      // The pinned CA is the only trust anchor; no pooled socket or resumed session,
      // since checkServerIdentity does not run on a resumed session.
      ca: caPem,
      rejectUnauthorized: true,
      agent: false,
      minVersion: 'TLSv1.2',
      checkServerIdentity: (hostname, cert) => checkManagerCertificate(hostname, cert, pin),
    });
    const timer = setTimeout(
      () => req.destroy(new Error('the manager did not answer within the timeout')),
      remaining(deadline),
    );
    req.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err instanceof HypersealError) reject(err);
      else if (err.code === 'INVALID_PURPOSE') {
        // A certificate of the right CA but for TLS clients: e.g. an enrolled agent's.
        reject(
          new HypersealError(
            'HS_ERR_AGENT_CA_MISMATCH',
            `the server at ${target.href} presents a certificate that is not a TLS server certificate ` +
              `(${err.code}); the token was not sent`,
            undefined,
            { cause: err },
          ),
        );
      } else if (err.code !== undefined && NOT_FROM_PINNED_CA.has(err.code)) {
        // A forged chain that names the pinned CA as issuer (and so passes step 1) but
        // is not signed by it ends here.
        reject(
          new HypersealError(
            'HS_ERR_AGENT_CA_MISMATCH',
            `the server at ${target.href} presents a certificate not issued by the pinned CA ` +
              `(${err.code}); the token was not sent`,
            undefined,
            { cause: err },
          ),
        );
      } else reject(unreachable(target, err));
    });
    req.once('response', (res) => {
      readBody(res)
        .then((text) => {
          clearTimeout(timer);
          resolve(interpretEnrollAnswer(target, res.statusCode ?? 0, text));
        })
        .catch((err: unknown) => {
          clearTimeout(timer);
          reject(err instanceof HypersealError ? err : unreachable(target, err as Error));
        });
    });
    // Reached only after the handshake passed checkServerIdentity: the token is safe.
    req.end(payload);
  });
}

/**
 * Runs during the handshake after OpenSSL verified the chain against the pinned CA:
 * the usual host-name check, then belt and braces on pin and usage.
 */
function checkManagerCertificate(
  hostname: string,
  cert: tls.PeerCertificate,
  pin: string,
): Error | undefined {
  const nameError = tls.checkServerIdentity(hostname, cert);
  if (nameError) return nameError;
  const chain = chainOf(cert as tls.DetailedPeerCertificate);
  const root = chain[chain.length - 1];
  if (root === undefined || sha256Hex(root.raw) !== pin) {
    return new HypersealError(
      'HS_ERR_AGENT_CA_MISMATCH',
      'the manager certificate does not chain to the pinned CA; the token was not sent',
    );
  }
  const eku = (cert as tls.PeerCertificate & { ext_key_usage?: string[] }).ext_key_usage;
  if (!eku?.includes(SERVER_AUTH_OID)) {
    return new HypersealError(
      'HS_ERR_AGENT_CA_MISMATCH',
      'the manager presented a certificate without the serverAuth usage; the token was not sent',
    );
  }
  return undefined;
}

function readBody(res: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_RESPONSE_BYTES) {
        res.destroy(
          new HypersealError('HS_ERR_AGENT_ENROLL_BAD_RESPONSE', 'the enrollment answer exceeds 1 MiB'),
        );
        return;
      }
      chunks.push(chunk);
    });
    res.once('error', reject);
    res.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
  });
}

const isErrorCode = (s: unknown): s is ErrorCode => typeof s === 'string' && Object.hasOwn(ErrorCodes, s);

function interpretEnrollAnswer(target: ManagerTarget, status: number, text: string): EnrollResponse {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  if (status < 200 || status >= 300) {
    const err = json as Partial<ErrorBody> | undefined;
    // The manager's own code (wrong, expired or used token...) is the most useful thing
    // we can tell the operator, so it is passed through when this agent knows it.
    if (isErrorCode(err?.code)) {
      throw new HypersealError(
        err.code,
        `the manager refused the enrollment: ${typeof err.message === 'string' ? err.message : err.code}`,
        { httpStatus: status },
      );
    }
    throw new HypersealError(
      'HS_ERR_AGENT_ENROLL_BAD_RESPONSE',
      `the manager at ${target.href} answered HTTP ${status} without a known error code` +
        (typeof err?.code === 'string' ? ` (${err.code})` : ''),
      { httpStatus: status },
    );
  }
  const r = json as Partial<EnrollResponse> | undefined;
  if (
    typeof r?.hostId !== 'string' ||
    !HOST_ID.test(r.hostId) ||
    typeof r.certPem !== 'string' ||
    typeof r.caPem !== 'string'
  ) {
    throw new HypersealError(
      'HS_ERR_AGENT_ENROLL_BAD_RESPONSE',
      `the manager at ${target.href} answered without a valid hostId, certPem and caPem`,
    );
  }
  return { hostId: r.hostId, certPem: r.certPem, caPem: r.caPem };
}

/* ------------------------------------------------------------------ step 3: check the answer */

function checkEnrollResponse(answer: EnrollResponse, pin: string, keyPem: string): string {
  const bad = (message: string, cause?: unknown): HypersealError =>
    new HypersealError('HS_ERR_AGENT_ENROLL_BAD_RESPONSE', message, undefined, { cause });
  let ca: X509Certificate;
  let cert: X509Certificate;
  try {
    ca = new X509Certificate(answer.caPem);
    cert = new X509Certificate(answer.certPem);
  } catch (cause) {
    throw bad('the manager answered with a certificate that does not parse', cause);
  }
  if (sha256Hex(ca.raw) !== pin) {
    throw new HypersealError(
      'HS_ERR_AGENT_CA_MISMATCH',
      `the manager answered with a CA certificate whose SHA-256 is ${sha256Hex(ca.raw)}, not ${pin}`,
    );
  }
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) {
    throw bad('the certificate the manager issued is not signed by its CA');
  }
  const ours = createPublicKey(createPrivateKey(keyPem)).export({ type: 'spki', format: 'der' });
  if (!cert.publicKey.export({ type: 'spki', format: 'der' }).equals(ours)) {
    throw bad('the certificate the manager issued is not for the key this agent sent');
  }
  const now = Date.now();
  if (Date.parse(cert.validTo) <= now || Date.parse(cert.validFrom) > now + 5 * 60_000) {
    throw bad(`the certificate the manager issued is not valid now (${cert.validFrom} – ${cert.validTo})`);
  }
  return cert.toString();
}

/* ------------------------------------------------------------------ commit */

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function commitIdentity(dataDir: string, id: AgentIdentity): void {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  // Leftovers of a write killed half-way (writeFileAtomic's temporary files).
  const names = Object.values(IDENTITY_FILES) as string[];
  for (const entry of readdirSync(dataDir)) {
    if (names.some((n) => entry.startsWith(`${n}.tmp-`))) rmSync(join(dataDir, entry), { force: true });
  }
  const hostFile = join(dataDir, IDENTITY_FILES.host);
  if (existsSync(hostFile)) {
    // Replacing: drop the marker first, so a crash below leaves no identity, never a
    // mix of the old host.json with the new key.
    unlinkSync(hostFile);
    fsyncDir(dataDir);
  }
  writeFileAtomic(join(dataDir, IDENTITY_FILES.key), id.keyPem, 0o600);
  writeFileAtomic(join(dataDir, IDENTITY_FILES.cert), id.certPem);
  writeFileAtomic(join(dataDir, IDENTITY_FILES.managerCa), id.managerCaPem);
  writeFileAtomic(hostFile, JSON.stringify(id.host, null, 2) + '\n');
}
