// KmipConnection (through KmipClient) against small real TLS KMIP servers whose behaviour
// the test controls: reconnects, retries, timeouts, certificate checks, connection reuse,
// and the TLS 1.2 / AES128-SHA256 / RSA profile PyKMIP speaks.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import net from 'node:net';
import { after, before, test } from 'node:test';
import tls from 'node:tls';
import { HypersealError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import type { CertifiedKey } from '../pki/index.js';
import { createCertificateAuthority, issueCertificate } from '../pki/index.js';
import { encodeSymmetricKey } from './attributes.js';
import { KmipClient } from './client.js';
import type { KmipClientOptions } from './client.js';
import { CryptographicAlgorithm, ObjectType, Operation, ResultStatus } from './enums.js';
import type { ResponseBatchItem } from './messages.js';
import { KMIP_1_1, decodeRequest, encodeResponse, optional } from './messages.js';
import type { KmipPeer } from './server.js';
import { KmipServer } from './server.js';
import { Tag } from './tags.js';
import type { TtlvItem } from './ttlv.js';
import { TtlvFramer, decodeTtlv, encodeTtlv, ttlv } from './ttlv.js';

/** Key material the fake server returns for a uid: lets a test check answers match requests. */
const materialOf = (uid: string): Buffer => createHash('sha256').update(uid).digest();

interface Call {
  operation: number;
  uid: string | undefined;
  /** host:port of the client side: one value per TCP connection. */
  remote: string;
}

/** A scripted KMIP responder: records every call, and can hang or fail on demand. */
class Script {
  calls: Call[] = [];
  /** Operations whose handler never answers. */
  hang = new Set<number>();
  /** How many more times the handler fails (the server then drops the connection), per operation. */
  failures = new Map<number, number>();
  delayMs = 0;
  private created = 0;

  readonly handler = async (frame: Buffer, peer: KmipPeer): Promise<Buffer> => {
    const req = decodeRequest(decodeTtlv(frame));
    const items: ResponseBatchItem[] = [];
    for (const item of req.batchItems) {
      const uid = optional(item.payload, Tag.UniqueIdentifier, 'TextString')?.value;
      this.calls.push({ operation: item.operation, uid, remote: peer.remoteAddress });
      if (this.hang.has(item.operation)) return new Promise<Buffer>(() => {});
      const left = this.failures.get(item.operation) ?? 0;
      if (left > 0) {
        this.failures.set(item.operation, left - 1);
        throw new Error('scripted failure: the server drops the connection');
      }
      if (this.delayMs > 0) await new Promise((r) => setTimeout(r, Math.random() * this.delayMs));
      items.push({
        operation: item.operation,
        resultStatus: ResultStatus.Success,
        payload: this.payload(item.operation, uid),
      });
    }
    return encodeTtlv(
      encodeResponse({
        protocolVersion: KMIP_1_1,
        timeStamp: Math.floor(Date.now() / 1000),
        batchItems: items,
      }),
    );
  };

  private payload(operation: number, uid: string | undefined): TtlvItem[] {
    switch (operation) {
      case Operation.Create:
        return [
          ttlv.enum(Tag.ObjectType, ObjectType.SymmetricKey),
          ttlv.text(Tag.UniqueIdentifier, `k-${++this.created}`),
        ];
      case Operation.Get: {
        const id = uid ?? '?';
        return [
          ttlv.enum(Tag.ObjectType, ObjectType.SymmetricKey),
          ttlv.text(Tag.UniqueIdentifier, id),
          encodeSymmetricKey({
            algorithm: CryptographicAlgorithm.AES,
            lengthBits: 256,
            material: materialOf(id),
          }),
        ];
      }
      case Operation.Query:
        return [ttlv.enum(Tag.Operation, Operation.Get)];
      default:
        return [];
    }
  }

  connections(): number {
    return new Set(this.calls.map((c) => c.remote)).size;
  }

  count(operation: number): number {
    return this.calls.filter((c) => c.operation === operation).length;
  }
}

let ca: CertifiedKey;
let serverCert: CertifiedKey;
let clientCert: CertifiedKey;
const started: { close(): Promise<void> }[] = [];
const clients: KmipClient[] = [];

before(async () => {
  ca = await createCertificateAuthority({ commonName: 'transport-test-ca' });
  [serverCert, clientCert] = await Promise.all([
    issueCertificate(ca, {
      commonName: 'kms',
      usage: 'server',
      dnsNames: ['localhost'],
      ipAddresses: ['127.0.0.1'],
    }),
    issueCertificate(ca, { commonName: 'alice', usage: 'client' }),
  ]);
});

after(async () => {
  for (const c of clients) c.close();
  for (const s of started) await s.close();
});

async function startServer(
  script: Script,
  opts: { cert?: CertifiedKey; idleTimeoutMs?: number } = {},
): Promise<{ port: number; server: KmipServer }> {
  const cert = opts.cert ?? serverCert;
  const server = new KmipServer({
    host: '127.0.0.1',
    port: 0,
    ca: ca.certPem,
    cert: cert.certPem,
    key: cert.keyPem,
    handler: script.handler,
    ...(opts.idleTimeoutMs !== undefined ? { idleTimeoutMs: opts.idleTimeoutMs } : {}),
  });
  const address = await server.listen();
  started.push(server);
  return { port: address.port, server };
}

function newClient(port: number, extra: Partial<KmipClientOptions> = {}): KmipClient {
  const c = new KmipClient({
    host: '127.0.0.1',
    port,
    ca: ca.certPem,
    cert: clientCert.certPem,
    key: clientCert.keyPem,
    requestTimeoutMs: 5000,
    connectTimeoutMs: 5000,
    ...extra,
  });
  clients.push(c);
  return c;
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<HypersealError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof HypersealError, `expected HypersealError ${code}, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (message !== undefined) assert.match(err.message, message);
    return err;
  }
  assert.fail(`expected ${code}, but the call succeeded`);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------

void test('reconnects after the server drops an idle connection, and retries an in-flight idempotent Get once', async () => {
  const script = new Script();
  const { port } = await startServer(script, { idleTimeoutMs: 250 });
  const client = newClient(port);

  assert.equal((await client.get('a')).material.toString('hex'), materialOf('a').toString('hex'));
  await sleep(700); // the server's idle timeout closes the connection
  // A Create is not retried, so it only works if the client noticed the close and reconnected.
  assert.equal(await client.create(), 'k-1');
  assert.equal(script.connections(), 2, 'the second request must have used a new connection');

  // The server drops the connection while a Get is in flight: resent once, on a new connection.
  script.failures.set(Operation.Get, 1);
  const key = await client.get('b');
  assert.equal(key.uniqueIdentifier, 'b');
  assert.deepEqual(key.material, materialOf('b'));
  const gets = script.calls.filter((c) => c.operation === Operation.Get && c.uid === 'b');
  assert.equal(gets.length, 2);
  assert.notEqual(gets[0]?.remote, gets[1]?.remote);

  // Retried once, not forever.
  script.failures.set(Operation.Get, 10);
  await rejectsWith(client.get('c'), 'HS_ERR_KMIP_CONNECTION_CLOSED');
  assert.equal(script.calls.filter((c) => c.uid === 'c').length, 2);
  script.failures.clear();

  // A Create in flight when the connection dies is not resent: it may have happened.
  script.failures.set(Operation.Create, 1);
  const creates = script.count(Operation.Create);
  await rejectsWith(client.create(), 'HS_ERR_KMIP_CONNECTION_CLOSED');
  assert.equal(script.count(Operation.Create), creates + 1);

  // And after all that the client is still usable.
  assert.equal((await client.get('d')).uniqueIdentifier, 'd');
});

void test('a request the server never answers fails with HS_ERR_KMIP_TIMEOUT on time; the next one works', async () => {
  const script = new Script();
  const { port } = await startServer(script);
  const client = newClient(port, { requestTimeoutMs: 400 });
  await client.query(); // connection up, so the timer measures only the request
  script.hang.add(Operation.Get);
  const t0 = Date.now();
  const both = await Promise.allSettled([client.get('x'), client.get('y')]);
  const elapsed = Date.now() - t0;
  for (const r of both) {
    assert.equal(r.status, 'rejected');
    const err = (r as PromiseRejectedResult).reason as unknown;
    assert.ok(err instanceof HypersealError && err.code === 'HS_ERR_KMIP_TIMEOUT', String(err));
  }
  assert.ok(elapsed >= 380 && elapsed < 2000, `timed out after ${elapsed} ms, expected about 400`);
  // A timed-out Get is not resent (the server may still be working on it).
  // Both reached the server once (it runs pipelined requests concurrently); neither is resent.
  assert.deepEqual(
    script.calls.filter((c) => c.operation === Operation.Get).map((c) => c.uid),
    ['x', 'y'],
  );

  script.hang.clear();
  const before = script.connections();
  assert.equal((await client.get('z')).uniqueIdentifier, 'z');
  assert.equal(
    script.connections(),
    before + 1,
    'a late answer could pair with the wrong request: new connection',
  );
});

void test('connect failures: closed port, certificate from another CA, name mismatch, no TLS answer', async () => {
  // Closed port: refused at once.
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const closedPort = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  let t0 = Date.now();
  await rejectsWith(
    newClient(closedPort).query(),
    'HS_ERR_KMIP_CONNECT',
    new RegExp(`127\\.0\\.0\\.1:${closedPort}`),
  );
  assert.ok(Date.now() - t0 < 2000, `refused connection took ${Date.now() - t0} ms`);

  // A server whose certificate chains to another CA.
  const otherCa = await createCertificateAuthority({ commonName: 'another-ca' });
  const impostorCert = await issueCertificate(otherCa, {
    commonName: 'kms',
    usage: 'server',
    dnsNames: ['localhost'],
    ipAddresses: ['127.0.0.1'],
  });
  const impostorScript = new Script();
  const impostor = await startServer(impostorScript, { cert: impostorCert });
  await rejectsWith(newClient(impostor.port).query(), 'HS_ERR_KMIP_CONNECT', /certificate/i);
  assert.equal(impostorScript.calls.length, 0, 'nothing may be sent to an unverified server');

  // Our CA, but a certificate for another name.
  const elsewhere = await issueCertificate(ca, {
    commonName: 'kms',
    usage: 'server',
    dnsNames: ['kms.example.org'],
  });
  const wrongNameScript = new Script();
  const wrongName = await startServer(wrongNameScript, { cert: elsewhere });
  await rejectsWith(
    newClient(wrongName.port).query(),
    'HS_ERR_KMIP_CONNECT',
    /127\.0\.0\.1.*cert|cert.*127\.0\.0\.1/i,
  );
  assert.equal(wrongNameScript.calls.length, 0);
  // Control: the same server verified against the name it does carry is accepted.
  await newClient(wrongName.port, { serverName: 'kms.example.org' }).query();
  assert.equal(wrongNameScript.calls.length, 1);

  // A peer that accepts TCP but never speaks TLS: the connect timeout fires.
  const mute = net.createServer(() => {});
  const muteSockets = new Set<net.Socket>();
  mute.on('connection', (s) => muteSockets.add(s));
  await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r));
  started.push({
    close: () =>
      new Promise<void>((r) => {
        for (const s of muteSockets) s.destroy();
        mute.close(() => r());
      }),
  });
  t0 = Date.now();
  await rejectsWith(
    newClient((mute.address() as net.AddressInfo).port, { connectTimeoutMs: 300 }).query(),
    'HS_ERR_KMIP_TIMEOUT',
  );
  assert.ok(Date.now() - t0 < 2000);
});

void test('close() while the connection is still being set up aborts it: nothing is sent, nothing stays open', async () => {
  const script = new Script();
  const { port, server } = await startServer(script);
  const client = newClient(port);
  const pending = client.query();
  client.close();
  await rejectsWith(pending, 'HS_ERR_KMIP_CONNECTION_CLOSED');
  await rejectsWith(client.query(), 'HS_ERR_KMIP_CONNECTION_CLOSED');
  await sleep(300);
  assert.equal(script.calls.length, 0, 'a request of a closed client reached the server');
  // A socket left open here would keep the caller's process alive until the server's idle timeout.
  const open = (server as unknown as { sockets: Set<tls.TLSSocket> }).sockets;
  assert.equal(open.size, 0, 'the closed client left a connection open');
});

void test('one connection carries 100 sequential requests, and 50 pipelined ones are matched in order', async () => {
  const script = new Script();
  const { port } = await startServer(script);
  const client = newClient(port);
  for (let i = 0; i < 100; i++) assert.equal((await client.get(`s${i}`)).uniqueIdentifier, `s${i}`);
  assert.equal(script.calls.length, 100);
  assert.equal(script.connections(), 1);

  script.delayMs = 5;
  const keys = await Promise.all(Array.from({ length: 50 }, (_, i) => client.get(`p${i}`)));
  keys.forEach((k, i) => {
    assert.equal(k.uniqueIdentifier, `p${i}`);
    assert.deepEqual(k.material, materialOf(`p${i}`));
  });
  assert.equal(script.connections(), 1);
});

void test('talks to a TLS 1.2-only server with AES128-SHA256 and RSA certificates (the PyKMIP profile)', async () => {
  const rsaCa = await createCertificateAuthority({ commonName: 'rsa-ca', keyType: 'rsa' });
  const [rsaServer, rsaClient] = await Promise.all([
    issueCertificate(rsaCa, { commonName: 'localhost', usage: 'server', keyType: 'rsa' }),
    issueCertificate(rsaCa, { commonName: 'alice', usage: 'client', keyType: 'rsa' }),
  ]);
  const script = new Script();
  const seen: { protocol: string | null; cipher: string }[] = [];
  const server = tls.createServer({
    ca: rsaCa.certPem,
    cert: rsaServer.certPem,
    key: rsaServer.keyPem,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.2',
    maxVersion: 'TLSv1.2',
    ciphers: 'AES128-SHA256',
  });
  const sockets = new Set<tls.TLSSocket>();
  server.on('secureConnection', (socket) => {
    sockets.add(socket);
    seen.push({ protocol: socket.getProtocol(), cipher: socket.getCipher().name });
    const framer = new TtlvFramer();
    const peer = {
      identity: 'alice',
      remoteAddress: `${socket.remoteAddress ?? ''}:${socket.remotePort ?? 0}`,
    };
    socket.on('data', (chunk: Buffer) => {
      for (const frame of framer.push(chunk)) {
        void script.handler(frame, peer).then((answer) => socket.write(answer));
      }
    });
    socket.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  started.push({
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  });
  const client = new KmipClient({
    host: '127.0.0.1',
    port: (server.address() as net.AddressInfo).port,
    ca: rsaCa.certPem,
    cert: rsaClient.certPem,
    key: rsaClient.keyPem,
    requestTimeoutMs: 5000,
  });
  clients.push(client);
  const q = await client.query();
  assert.deepEqual(q.operations, [Operation.Get]);
  const key = await client.get('rsa-1');
  assert.deepEqual(key.material, materialOf('rsa-1'));
  assert.deepEqual(seen, [{ protocol: 'TLSv1.2', cipher: 'AES128-SHA256' }]);
});
