import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { promisify } from 'node:util';
import { isHypersealError } from '../errors.js';
import {
  certificateCommonName,
  certificateFingerprint256,
  createCertificateAuthority,
  createCsr,
  issueCertificate,
  signCsr,
} from './index.js';
import type { CertifiedKey, KeyType } from './index.js';

const execFileAsync = promisify(execFile);
const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const KEY_TYPES: readonly KeyType[] = ['ec', 'rsa'];

/* ------------------------------------------------------------------ fixtures */

interface Pki {
  ca: CertifiedKey;
  server: CertifiedKey;
  client: CertifiedKey;
  /** A client of an unrelated CA, which our server must refuse. */
  foreignClient: CertifiedKey;
}

// One PKI per key type, shared by all tests: RSA key generation dominates run time.
// Both start building at load so RSA keygen overlaps the EC tests; the unrelated CA is
// EC for both, since only its identity matters to the rejection test.
const otherCa = createCertificateAuthority({ commonName: 'Other CA' });
const pkis = new Map<KeyType, Promise<Pki>>(KEY_TYPES.map((keyType) => [keyType, buildPki(keyType)]));
for (const pki of pkis.values()) pki.catch(() => undefined); // failures surface in the tests

function pkiFor(keyType: KeyType): Promise<Pki> {
  const pki = pkis.get(keyType);
  assert.ok(pki);
  return pki;
}

async function buildPki(keyType: KeyType): Promise<Pki> {
  const ca = await createCertificateAuthority({ commonName: `Hyperseal Test CA (${keyType})`, keyType });
  const [server, client, foreignClient] = await Promise.all([
    issueCertificate(ca, { commonName: 'kmip-server', usage: 'server', keyType }),
    issueCertificate(ca, { commonName: `client-${keyType}`, usage: 'client', keyType }),
    issueCertificate(await otherCa, { commonName: 'intruder', usage: 'client', keyType }),
  ]);
  return { ca, server, client, foreignClient };
}

async function expectPkiError(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isHypersealError(err, 'HS_ERR_PKI'), `expected HS_ERR_PKI, got ${String(err)}`);
    assert.match(err.message, pattern);
    return true;
  });
}

/* ------------------------------------------------------------------ TLS harness */

interface HandshakeOptions {
  ca: CertifiedKey;
  server: CertifiedKey;
  client: CertifiedKey;
  tlsOptions?: tls.SecureContextOptions;
}

interface HandshakeResult {
  /** CN the server saw on the verified client certificate, if the handshake succeeded. */
  serverSawCn?: string;
  serverError?: Error;
  /** Node's verdict on the client certificate, set when the server refused it. */
  serverAuthorizationError?: string;
  clientCipher?: tls.CipherNameAndProtocol;
  clientReceived: string;
}

/**
 * Mutual TLS on 127.0.0.1 with both sides verifying against `ca`. Resolves once the
 * client socket has closed and the server has reported success or failure.
 */
async function mutualTlsHandshake(opts: HandshakeOptions): Promise<HandshakeResult> {
  const result: HandshakeResult = { clientReceived: '' };
  let serverDone!: () => void;
  const serverOutcome = new Promise<void>((resolve) => (serverDone = resolve));
  const server = tls.createServer(
    {
      key: opts.server.keyPem,
      cert: opts.server.certPem,
      ca: [opts.ca.certPem],
      requestCert: true,
      rejectUnauthorized: true,
      ...opts.tlsOptions,
    },
    (socket) => {
      const cn = String(socket.getPeerCertificate().subject.CN);
      result.serverSawCn = cn;
      serverDone();
      socket.end(`hello ${cn}`);
    },
  );
  server.on('tlsClientError', (err, socket) => {
    result.serverError = err;
    result.serverAuthorizationError = String(socket.authorizationError);
    serverDone();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  try {
    await new Promise<void>((resolve) => {
      // No servername: Node then checks the server cert's IP SAN against 127.0.0.1.
      const client = tls.connect({
        host: '127.0.0.1',
        port,
        ca: [opts.ca.certPem],
        key: opts.client.keyPem,
        cert: opts.client.certPem,
        ...opts.tlsOptions,
      });
      client.setEncoding('utf8');
      client.on('secureConnect', () => (result.clientCipher = client.getCipher()));
      client.on('data', (chunk: string) => (result.clientReceived += chunk));
      client.on('error', () => undefined); // the server's alert surfaces here; judged via serverError
      client.on('close', () => resolve());
    });
    await serverOutcome;
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  return result;
}

/* ------------------------------------------------------------------ openssl harness */

async function withTempFiles<T>(files: Record<string, string>, run: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'hyperseal-pki-'));
  try {
    await Promise.all(Object.entries(files).map(([name, text]) => writeFile(join(dir, name), text)));
    return await run(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function openssl(...args: string[]): Promise<{ ok: boolean; output: string }> {
  try {
    const { stdout, stderr } = await execFileAsync('openssl', args);
    return { ok: true, output: stdout + stderr };
  } catch (err: unknown) {
    const e = err as { stdout?: string; stderr?: string };
    return { ok: false, output: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

/* ------------------------------------------------------------------ tests */

for (const keyType of KEY_TYPES) {
  void test(`${keyType}: Node's X509Certificate sees CA flag, chain, EKU, SAN, serial and validity`, async () => {
    const { ca, server, client } = await pkiFor(keyType);
    const caCert = new X509Certificate(ca.certPem);
    const serverCert = new X509Certificate(server.certPem);
    const clientCert = new X509Certificate(client.certPem);

    assert.equal(caCert.ca, true);
    assert.equal(caCert.checkIssued(caCert), true, 'CA is self-issued');
    assert.equal(caCert.verify(caCert.publicKey), true, 'CA is self-signed');
    for (const leaf of [serverCert, clientCert]) {
      assert.equal(leaf.ca, false);
      assert.equal(leaf.checkIssued(caCert), true);
      assert.equal(leaf.verify(caCert.publicKey), true);
      assert.match(leaf.serialNumber, /^[0-7][0-9A-F]{31}$/i, '16-byte positive serial');
      const skewMs = Date.now() - Date.parse(leaf.validFrom);
      assert.ok(skewMs > 4 * 60_000 && skewMs < 7 * 60_000, `notBefore is ~5 min ago (${skewMs} ms)`);
    }
    assert.deepEqual(serverCert.keyUsage, [SERVER_AUTH]);
    assert.deepEqual(clientCert.keyUsage, [CLIENT_AUTH]);
    assert.equal(serverCert.subjectAltName, 'DNS:localhost, IP Address:127.0.0.1');
    assert.equal(clientCert.subjectAltName, undefined);
    assert.notEqual(serverCert.serialNumber, clientCert.serialNumber);
  });

  void test(`${keyType}: keys are PKCS#8 PEM matching their certificates`, async () => {
    const { ca, server } = await pkiFor(keyType);
    for (const { certPem, keyPem } of [ca, server]) {
      assert.match(keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
      const key = createPrivateKey(keyPem);
      assert.equal(key.asymmetricKeyType, keyType);
      assert.ok(createPublicKey(key).equals(new X509Certificate(certPem).publicKey));
    }
    if (keyType === 'rsa')
      assert.equal(createPrivateKey(server.keyPem).asymmetricKeyDetails?.modulusLength, 2048);
    if (keyType === 'ec')
      assert.equal(createPrivateKey(server.keyPem).asymmetricKeyDetails?.namedCurve, 'prime256v1');
  });

  void test(`${keyType}: mutual TLS handshake succeeds and the server sees the client CN`, async () => {
    const { ca, server, client } = await pkiFor(keyType);
    const result = await mutualTlsHandshake({ ca, server, client });
    assert.equal(result.serverError, undefined);
    assert.equal(result.serverSawCn, `client-${keyType}`);
    assert.equal(result.clientReceived, `hello client-${keyType}`);
  });

  void test(`${keyType}: a client certificate from another CA is rejected`, async () => {
    const { ca, server, foreignClient } = await pkiFor(keyType);
    const result = await mutualTlsHandshake({ ca, server, client: foreignClient });
    assert.equal(result.serverSawCn, undefined);
    assert.ok(result.serverError, 'server reported a TLS client error');
    // Node checks the chain right after the handshake and drops the connection.
    assert.equal(result.serverAuthorizationError, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
    assert.equal(result.clientReceived, '');
  });

  void test(`${keyType}: a server certificate cannot be used as a client certificate (EKU enforced)`, async () => {
    const { ca, server } = await pkiFor(keyType);
    const result = await mutualTlsHandshake({ ca, server, client: server });
    assert.equal(result.serverSawCn, undefined);
    assert.ok(result.serverError);
    // OpenSSL verifies client chains with the sslclient purpose, i.e. it requires clientAuth.
    assert.equal(result.serverAuthorizationError, 'INVALID_PURPOSE');
  });

  void test(`${keyType}: openssl verifies the chain and shows the claimed extensions`, async () => {
    const { ca, server, client } = await pkiFor(keyType);
    const files = { 'ca.pem': ca.certPem, 'server.pem': server.certPem, 'client.pem': client.certPem };
    await withTempFiles(files, async (dir) => {
      const [caFile, serverFile, clientFile] = ['ca.pem', 'server.pem', 'client.pem'].map((f) =>
        join(dir, f),
      );
      const verify = (purpose: string, file: string): Promise<{ ok: boolean; output: string }> =>
        openssl('verify', '-CAfile', caFile ?? '', '-purpose', purpose, file ?? '');
      assert.equal((await verify('sslserver', serverFile ?? '')).ok, true);
      assert.equal((await verify('sslclient', clientFile ?? '')).ok, true);
      const wrongPurpose = await verify('sslserver', clientFile ?? '');
      assert.equal(wrongPurpose.ok, false);
      assert.match(wrongPurpose.output, /unsuitable certificate purpose/);

      const sigAlg = keyType === 'ec' ? 'ecdsa-with-SHA256' : 'sha256WithRSAEncryption';
      const caText = (await openssl('x509', '-noout', '-text', '-in', caFile ?? '')).output;
      assert.match(caText, /X509v3 Basic Constraints: critical\s+CA:TRUE/);
      assert.match(caText, /X509v3 Key Usage: critical\s+Certificate Sign, CRL Sign\n/);
      assert.match(caText, new RegExp(`Signature Algorithm: ${sigAlg}`));

      const serverText = (await openssl('x509', '-noout', '-text', '-in', serverFile ?? '')).output;
      const leafKeyUsage = keyType === 'rsa' ? 'Digital Signature, Key Encipherment' : 'Digital Signature';
      assert.match(serverText, /X509v3 Basic Constraints: critical\s+CA:FALSE/);
      assert.match(serverText, new RegExp(`X509v3 Key Usage: critical\\s+${leafKeyUsage}\\n`));
      assert.match(serverText, /X509v3 Extended Key Usage: \s*\n\s+TLS Web Server Authentication\n/);
      assert.match(serverText, /DNS:localhost, IP Address:127\.0\.0\.1/);
      assert.match(serverText, /X509v3 Subject Key Identifier/);
      assert.match(serverText, /X509v3 Authority Key Identifier/);

      const clientText = (await openssl('x509', '-noout', '-text', '-in', clientFile ?? '')).output;
      assert.match(clientText, /X509v3 Extended Key Usage: \s*\n\s+TLS Web Client Authentication\n/);
    });
  });
}

void test('rsa: TLS 1.2 handshake restricted to AES128-SHA256 (TLS_RSA_WITH_AES_128_CBC_SHA256)', async () => {
  const { ca, server, client } = await pkiFor('rsa');
  const tlsOptions = { maxVersion: 'TLSv1.2', ciphers: 'AES128-SHA256' } as const;
  const result = await mutualTlsHandshake({ ca, server, client, tlsOptions });
  assert.equal(result.serverError, undefined);
  assert.equal(result.serverSawCn, 'client-rsa');
  assert.equal(result.clientCipher?.name, 'AES128-SHA256');
  assert.equal(result.clientCipher?.version, 'TLSv1.2');
});

void test('signCsr issues a client certificate that openssl and a TLS server accept', async () => {
  const { ca, server } = await pkiFor('ec');
  const csr = await createCsr({ commonName: 'agent-7', keyType: 'rsa' });
  assert.match(csr.csrPem, /^-----BEGIN CERTIFICATE REQUEST-----\n/);
  const certPem = await signCsr(ca, csr.csrPem, { usage: 'client' });
  const cert = new X509Certificate(certPem);
  assert.equal(cert.checkIssued(new X509Certificate(ca.certPem)), true);
  assert.deepEqual(cert.keyUsage, [CLIENT_AUTH]);
  assert.ok(createPublicKey(csr.keyPem).equals(cert.publicKey));
  assert.equal(certificateCommonName(certPem), 'agent-7');

  await withTempFiles({ 'csr.pem': csr.csrPem }, async (dir) => {
    assert.equal((await openssl('req', '-noout', '-verify', '-in', join(dir, 'csr.pem'))).ok, true);
  });
  const result = await mutualTlsHandshake({ ca, server, client: { certPem, keyPem: csr.keyPem } });
  assert.equal(result.serverSawCn, 'agent-7');
});

void test('signCsr applies the CN override and server names', async () => {
  const { ca } = await pkiFor('ec');
  const csr = await createCsr({ commonName: 'requested-name' });
  const certPem = await signCsr(ca, csr.csrPem, {
    usage: 'server',
    commonName: 'host-42',
    dnsNames: ['host-42.example.internal'],
    ipAddresses: ['10.0.0.42', '::1'],
    validityDays: 30,
  });
  const cert = new X509Certificate(certPem);
  assert.equal(certificateCommonName(certPem), 'host-42');
  assert.equal(
    cert.subjectAltName,
    'DNS:host-42.example.internal, IP Address:10.0.0.42, IP Address:0:0:0:0:0:0:0:1',
  );
  assert.deepEqual(cert.keyUsage, [SERVER_AUTH]);
  const lifetimeDays = (Date.parse(cert.validTo) - Date.now()) / 86_400_000;
  assert.ok(lifetimeDays > 29.9 && lifetimeDays <= 30, `validity ${lifetimeDays} days`);
});

void test('signCsr accepts an openssl-made CSR and rejects unsupported key types', async () => {
  const { ca } = await pkiFor('ec');
  await withTempFiles({}, async (dir) => {
    const req = (name: string, ...keyArgs: string[]): Promise<{ ok: boolean; output: string }> =>
      openssl(
        'req',
        '-new',
        '-nodes',
        ...keyArgs,
        '-subj',
        `/O=Agents/CN=${name}`,
        '-keyout',
        join(dir, `${name}.key`),
        '-out',
        join(dir, `${name}.csr`),
      );
    assert.equal((await req('ossl-agent', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256')).ok, true);
    assert.equal((await req('ed-agent', '-newkey', 'ed25519')).ok, true);
    const certPem = await signCsr(ca, await readFile(join(dir, 'ossl-agent.csr'), 'utf8'), {
      usage: 'client',
    });
    assert.equal(certificateCommonName(certPem), 'ossl-agent');
    // Only the CN is carried over; the requester's other subject attributes are dropped.
    assert.equal(new X509Certificate(certPem).subject, 'CN=ossl-agent');
    await expectPkiError(
      signCsr(ca, await readFile(join(dir, 'ed-agent.csr'), 'utf8'), { usage: 'client' }),
      /must be an EC or RSA key/,
    );
  });
});

void test('signCsr rejects a tampered CSR', async () => {
  const { ca } = await pkiFor('ec');
  const csr = await createCsr({ commonName: 'agent-aaaa' });
  const der = Buffer.from(csr.csrPem.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
  const at = der.indexOf('agent-aaaa');
  assert.ok(at > 0);
  der.write('agent-root', at); // same length: still parses, signature no longer matches
  const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
  await expectPkiError(signCsr(ca, tampered, { usage: 'client' }), /CSR signature is invalid/);
});

void test('bad input fails with HS_ERR_PKI and never echoes key material', async () => {
  const { ca, server } = await pkiFor('ec');
  const other = await pkiFor('rsa');
  await expectPkiError(signCsr(ca, 'not a csr', { usage: 'client' }), /exactly one PEM block/);
  await expectPkiError(signCsr(ca, server.certPem, { usage: 'client' }), /CERTIFICATE REQUEST/);
  const junkCsr = '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n';
  await expectPkiError(signCsr(ca, junkCsr, { usage: 'client' }), /not a parseable PKCS#10/);

  // A corrupted key: the error must not quote any of it.
  const body = ca.keyPem.split('\n')[1] ?? '';
  const corruptKey = ca.keyPem.replace(body, body.slice(0, 8) + 'AAAAAAAA' + body.slice(16));
  await assert.rejects(
    issueCertificate({ ...ca, keyPem: corruptKey }, { commonName: 'x', usage: 'server' }),
    (err) => {
      assert.ok(isHypersealError(err, 'HS_ERR_PKI'));
      assert.match(err.message, /CA private key/);
      assert.ok(
        !err.message.includes(body.slice(0, 8)) && !JSON.stringify(err.toJSON()).includes('AAAAAAAA'),
      );
      return true;
    },
  );
  await expectPkiError(
    issueCertificate({ ...ca, keyPem: other.ca.keyPem }, { commonName: 'x', usage: 'server' }),
    /does not match/,
  );
  await expectPkiError(issueCertificate(server, { commonName: 'x', usage: 'client' }), /CA:true/);
  await expectPkiError(issueCertificate(ca, { commonName: '', usage: 'client' }), /commonName/);
  await expectPkiError(
    issueCertificate(ca, { commonName: 'x', usage: 'server', dnsNames: ['bad name'] }),
    /DNS/,
  );
  await expectPkiError(
    issueCertificate(ca, { commonName: 'x', usage: 'server', ipAddresses: ['300.1.1.1'] }),
    /IP/,
  );
  await expectPkiError(
    issueCertificate(ca, { commonName: 'x', usage: 'client', validityDays: 0 }),
    /validityDays/,
  );
  assert.throws(
    () => certificateCommonName('garbage'),
    (err) => isHypersealError(err, 'HS_ERR_PKI'),
  );
  assert.throws(
    () => certificateFingerprint256(ca.keyPem),
    (err) => isHypersealError(err, 'HS_ERR_PKI'),
  );
});

void test('certificateFingerprint256 and certificateCommonName agree with Node', async () => {
  const { ca, server } = await pkiFor('ec');
  for (const pem of [ca.certPem, server.certPem]) {
    const expected = new X509Certificate(pem).fingerprint256.replaceAll(':', '').toLowerCase();
    assert.equal(certificateFingerprint256(pem), expected);
    assert.match(certificateFingerprint256(pem), /^[0-9a-f]{64}$/);
  }
  assert.equal(certificateCommonName(ca.certPem), 'Hyperseal Test CA (ec)');
  assert.equal(certificateCommonName(server.certPem), 'kmip-server');
});

void test('Python ssl loads the PKCS#8 keys', async (t) => {
  const hasPython = await execFileAsync('python3', ['-c', 'import ssl']).then(
    () => true,
    () => false,
  );
  if (!hasPython) return t.skip('python3 not installed');
  const files: Record<string, string> = {};
  for (const keyType of KEY_TYPES) {
    const { server } = await pkiFor(keyType);
    files[`${keyType}.crt`] = server.certPem;
    files[`${keyType}.key`] = server.keyPem;
  }
  await withTempFiles(files, async (dir) => {
    const script = [
      'import ssl, sys',
      'for kind in sys.argv[2:]:',
      '    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)',
      "    ctx.load_cert_chain(f'{sys.argv[1]}/{kind}.crt', f'{sys.argv[1]}/{kind}.key')",
    ].join('\n');
    await execFileAsync('python3', ['-c', script, dir, ...KEY_TYPES]);
  });
});
