// Transports against Node peers whose behaviour a test can dictate (reset, never answer,
// demand a client certificate): what the sink's acknowledgement rule relies on — a clean
// close is confirmed, a reset is not, a dead UDP port is noticed — and TLS verification.
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { after, before, test } from 'node:test';
import tls from 'node:tls';
import { isHypersealError } from '../../errors.js';
import type { CertifiedKey } from '../../pki/index.js';
import { createCertificateAuthority, issueCertificate } from '../../pki/index.js';
import { OctetCountedDecoder, frameOctetCounted } from './format.js';
import { connectTcp, connectTls, connectUdp } from './transport.js';

let ca: CertifiedKey;
let otherCa: CertifiedKey;
let serverCert: CertifiedKey;
let wrongNameCert: CertifiedKey;
let clientCert: CertifiedKey;

before(async () => {
  ca = await createCertificateAuthority({ commonName: 'transport test CA' });
  otherCa = await createCertificateAuthority({ commonName: 'someone else' });
  serverCert = await issueCertificate(ca, {
    commonName: 'collector',
    usage: 'server',
    dnsNames: ['localhost'],
    ipAddresses: ['127.0.0.1'],
  });
  wrongNameCert = await issueCertificate(ca, {
    commonName: 'other',
    usage: 'server',
    dnsNames: ['other.example'],
  });
  clientCert = await issueCertificate(ca, { commonName: 'hyperseal-manager', usage: 'client' });
});

const servers: { close(): void }[] = [];
after(() => servers.forEach((s) => s.close()));

type Behaviour = 'read-then-close' | 'reset-on-data' | 'close-at-once';

/** A collector: decodes frames into `got`; on our FIN it closes too (as rsyslog does). */
async function collector(
  behaviour: Behaviour,
  secure?: tls.TlsOptions,
): Promise<{ port: number; got: string[]; peers: string[] }> {
  const got: string[] = [];
  const peers: string[] = [];
  const onSocket = (s: net.Socket): void => {
    if (s instanceof tls.TLSSocket) peers.push(String(s.getPeerCertificate().subject?.CN ?? ''));
    if (behaviour === 'close-at-once') {
      s.destroy();
      return;
    }
    const d = new OctetCountedDecoder();
    s.on('data', (chunk: Buffer) => {
      if (behaviour === 'reset-on-data') {
        s.resetAndDestroy();
        return;
      }
      got.push(...d.push(chunk).map(String));
    });
    s.on('end', () => s.end());
    s.on('error', () => undefined);
  };
  const srv = secure === undefined ? net.createServer(onSocket) : tls.createServer(secure, onSocket);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  servers.push(srv);
  return { port: (srv.address() as net.AddressInfo).port, got, peers };
}

test('TCP: frames arrive as sent; end() is confirmed by the collector closing after reading all', async () => {
  const c = await collector('read-then-close');
  const conn = await connectTcp({ host: '127.0.0.1', port: c.port });
  await conn.write(Buffer.concat([frameOctetCounted('one'), frameOctetCounted('two → 2')]));
  await conn.write(frameOctetCounted('three'));
  assert.equal(conn.failure, null);
  assert.equal(await conn.end(2000), true);
  assert.deepEqual(c.got, ['one', 'two → 2', 'three']);
});

test('TCP: a reset is a failure — end() is not confirmed, closed resolves, writes reject', async () => {
  const c = await collector('reset-on-data');
  const conn = await connectTcp({ host: '127.0.0.1', port: c.port });
  await conn.write(frameOctetCounted('doomed'));
  const reason = await conn.closed;
  assert.ok(isHypersealError(reason, 'HS_ERR_SYSLOG_CONNECT'), String(reason));
  assert.match(reason.message, /ECONNRESET|closed/);
  await assert.rejects(conn.write(frameOctetCounted('more')), (e) =>
    isHypersealError(e, 'HS_ERR_SYSLOG_CONNECT'),
  );
  assert.equal(await conn.end(500), false);
});

test('TCP: a collector that closes at once fails the connection; refused connects reject', async () => {
  const c = await collector('close-at-once');
  const conn = await connectTcp({ host: '127.0.0.1', port: c.port });
  const reason = await conn.closed;
  assert.match(reason.message, /closed the connection|closed/);
  const unused = await new Promise<number>((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  await assert.rejects(
    connectTcp({ host: '127.0.0.1', port: unused }),
    (e) =>
      isHypersealError(e, 'HS_ERR_SYSLOG_CONNECT') &&
      /ECONNREFUSED/.test(e.message) &&
      /tcp:\/\/127\.0\.0\.1/.test(e.message),
  );
});

test('TLS: the collector is verified against the configured CA and the target name', async () => {
  const c = await collector('read-then-close', { cert: serverCert.certPem, key: serverCert.keyPem });
  for (const host of ['127.0.0.1', 'localhost']) {
    const conn = await connectTls({ host, port: c.port, caPem: ca.certPem });
    await conn.write(frameOctetCounted(`over tls to ${host}`));
    assert.equal(await conn.end(2000), true);
  }
  assert.deepEqual(c.got, ['over tls to 127.0.0.1', 'over tls to localhost']);
  await assert.rejects(
    connectTls({ host: '127.0.0.1', port: c.port, caPem: otherCa.certPem }),
    (e) => isHypersealError(e, 'HS_ERR_SYSLOG_CONNECT') && /certificate/i.test(e.message),
  );
  const wrong = await collector('read-then-close', {
    cert: wrongNameCert.certPem,
    key: wrongNameCert.keyPem,
  });
  await assert.rejects(
    connectTls({ host: '127.0.0.1', port: wrong.port, caPem: ca.certPem }),
    (e) =>
      isHypersealError(e, 'HS_ERR_SYSLOG_CONNECT') &&
      /IP: 127\.0\.0\.1 is not in the cert's list/.test(e.message),
  );
  await assert.rejects(connectTls({ host: '127.0.0.1', port: c.port }), (e) =>
    isHypersealError(e, 'HS_ERR_SYSLOG_CONFIG'),
  );
});

test('TLS: the client certificate is presented when configured', async () => {
  const c = await collector('read-then-close', {
    cert: serverCert.certPem,
    key: serverCert.keyPem,
    ca: [ca.certPem],
    requestCert: true,
    rejectUnauthorized: true,
  });
  const conn = await connectTls({
    host: '127.0.0.1',
    port: c.port,
    caPem: ca.certPem,
    certPem: clientCert.certPem,
    keyPem: clientCert.keyPem,
  });
  await conn.write(frameOctetCounted('with a client cert'));
  assert.equal(await conn.end(2000), true);
  assert.deepEqual(c.peers, ['hyperseal-manager']);
  // Without it, the collector refuses: the connection fails during or right after the handshake.
  const anon = await connectTls({ host: '127.0.0.1', port: c.port, caPem: ca.certPem }).then(
    async (cn) => {
      await cn.write(frameOctetCounted('x')).catch(() => undefined);
      return cn.closed;
    },
    (e: unknown) => e,
  );
  assert.ok(isHypersealError(anon, 'HS_ERR_SYSLOG_CONNECT'), String(anon));
});

test('TLS: a peer that never answers the handshake times out', async () => {
  const srv = net.createServer(() => undefined);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  servers.push(srv);
  const t0 = performance.now();
  await assert.rejects(
    connectTls({
      host: '127.0.0.1',
      port: (srv.address() as net.AddressInfo).port,
      caPem: ca.certPem,
      connectTimeoutMs: 200,
    }),
    (e) => isHypersealError(e, 'HS_ERR_SYSLOG_CONNECT') && /within 200 ms/.test(e.message),
  );
  assert.ok(performance.now() - t0 < 2000);
});

test('UDP: one datagram per message, no framing; a closed port is noticed (ICMP → ECONNREFUSED)', async () => {
  const rx = dgram.createSocket('udp4');
  await new Promise<void>((r) => rx.bind(0, '127.0.0.1', r));
  const got: string[] = [];
  rx.on('message', (m) => got.push(m.toString()));
  const conn = await connectUdp({ host: '127.0.0.1', port: rx.address().port });
  await conn.write(
    Buffer.concat([frameOctetCounted('<134>1 - - - - - - a'), frameOctetCounted('<134>1 - - - - - - b')]),
  );
  for (let i = 0; i < 100 && got.length < 2; i++) await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(got, ['<134>1 - - - - - - a', '<134>1 - - - - - - b']);
  assert.equal(await conn.end(50), true);
  const port = rx.address().port;
  await new Promise<void>((r) => rx.close(() => r()));

  const dead = await connectUdp({ host: '127.0.0.1', port });
  await dead.write(frameOctetCounted('nobody listens')).catch(() => undefined);
  const reason = await Promise.race([dead.closed, new Promise<null>((r) => setTimeout(() => r(null), 2000))]);
  assert.ok(reason !== null && /ECONNREFUSED/.test(reason.message), String(reason));
  dead.destroy();
});
