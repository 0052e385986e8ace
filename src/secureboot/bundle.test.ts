// Signed host bundles and the agent-core manifest: build/sign/verify, and each refusal with
// its own code — tampered, missing, extra file (named), unsigned, bad signature, another
// CA, wrong certificate usage, expired, revoked, too-low or over-claimed acceptance level —
// plus chains through an intermediate CA and the acceptance matrix.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import assert from 'node:assert/strict';
import { webcrypto } from 'node:crypto';
import {
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isHypersealError } from '../errors.js';
import type { CertifiedKey } from '../pki/index.js';
import { certificateFingerprint256, createCertificateAuthority, issueCertificate } from '../pki/index.js';
import { decodePem, encodePem } from '../pki/pem.js';
import type { AcceptanceLevel } from './acceptance.js';
import { ACCEPTANCE_LEVELS, admits, lowestAcceptance } from './acceptance.js';
import type { DescriptorMeta, Signer, VerificationResult } from './bundle.js';
import {
  assertVerified,
  buildBundle,
  buildManifest,
  canonicalDescriptorBytes,
  signBundle,
  signManifest,
  verifyBundle,
  verifyManifest,
} from './bundle.js';
import { canonicalJson } from './canonical-json.js';
import { issueCodeSigningCertificate } from './trust.js';

const META: DescriptorMeta = {
  name: 'nic-driver',
  version: '1.2.3',
  vendor: 'Example Networks, Inc.',
  acceptance: 'partner',
};

function failure(result: VerificationResult): Extract<VerificationResult, { ok: false }> {
  assert.equal(result.ok, false, 'verification should fail');
  return result as Extract<VerificationResult, { ok: false }>;
}

/**
 * A CA without a pathLen limit (src/pki's CAs are pathLen 0 by design), self-signed or
 * issued by `issuer` (an EC P-256 CA).
 */
async function makeCa(commonName: string, issuer?: CertifiedKey): Promise<CertifiedKey> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const name = new x509.Name([{ CN: [{ utf8String: commonName }] }]);
  const issuerCert =
    issuer === undefined
      ? undefined
      : new x509.X509Certificate(decodePem(issuer.certPem, 'CERTIFICATE', 'issuer'));
  const issuerKey =
    issuer === undefined
      ? keys.privateKey
      : await webcrypto.subtle.importKey(
          'pkcs8',
          decodePem(issuer.keyPem, 'PRIVATE KEY', 'issuer key'),
          alg,
          false,
          ['sign'],
        );
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: '01' + Buffer.from(webcrypto.getRandomValues(new Uint8Array(8))).toString('hex'),
      subject: name,
      issuer: issuerCert?.subjectName ?? name,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 86_400_000 * 30),
      publicKey: keys.publicKey,
      signingKey: issuerKey,
      signingAlgorithm: alg,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, webcrypto),
      ],
    },
    webcrypto,
  );
  return {
    certPem: encodePem(cert.rawData, 'CERTIFICATE'),
    keyPem: encodePem(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY'),
  };
}

describe('signed bundles', () => {
  let work: string;
  let ca: CertifiedKey;
  let signer: CertifiedKey;
  let rsaSigner: CertifiedKey;
  let otherCa: CertifiedKey;
  let otherSigner: CertifiedKey;
  let tlsClient: CertifiedKey;
  let n = 0;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'hs-bundle-'));
    ca = await createCertificateAuthority({ commonName: 'Hyperseal Release CA' });
    otherCa = await createCertificateAuthority({ commonName: 'Somebody Else CA' });
    [signer, rsaSigner, otherSigner, tlsClient] = await Promise.all([
      issueCodeSigningCertificate(ca, { commonName: 'Release Signing 2025' }),
      issueCodeSigningCertificate(ca, { commonName: 'Release Signing RSA', keyType: 'rsa' }),
      issueCodeSigningCertificate(otherCa, { commonName: 'Other Signing' }),
      issueCertificate(ca, { commonName: 'a-tls-client', usage: 'client' }),
    ]);
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  /** A fresh bundle directory with three files in two directories. */
  function stage(): string {
    const dir = join(work, `b${n++}`);
    mkdirSync(join(dir, 'bin'), { recursive: true });
    mkdirSync(join(dir, 'lib', 'modules'), { recursive: true });
    writeFileSync(join(dir, 'bin', 'tool'), '#!/bin/sh\necho tool\n', { mode: 0o755 });
    writeFileSync(join(dir, 'lib', 'modules', 'nic.ko'), Buffer.alloc(70_000, 7));
    writeFileSync(join(dir, 'README'), 'hello\n');
    return dir;
  }

  async function signedBundle(meta: DescriptorMeta = META, by: Signer = signer): Promise<string> {
    const dir = stage();
    await buildBundle(dir, meta);
    await signBundle(dir, by);
    return dir;
  }

  void test('build, sign, verify: the descriptor lists every file, sorted, and is canonical JSON', async () => {
    const dir = stage();
    const d = await buildBundle(dir, META);
    assert.deepEqual(
      d.files.map((f) => [f.path, f.size]),
      [
        ['README', 6],
        ['bin/tool', 20],
        ['lib/modules/nic.ko', 70_000],
      ],
    );
    assert.equal(readFileSync(join(dir, 'bundle.json'), 'utf8'), `${canonicalJson(d)}\n`);
    assert.deepEqual(canonicalDescriptorBytes(d), Buffer.from(canonicalJson(d)));
    const env = await signBundle(dir, signer);
    assert.equal(env.algorithm, 'ecdsa-p256-sha256');
    const result = await verifyBundle(dir, [ca.certPem]);
    assert.ok(result.ok, JSON.stringify(result));
    assert.equal(result.descriptor.name, 'nic-driver');
    assert.equal(result.signer.sha256, certificateFingerprint256(signer.certPem));
    assert.match(result.signer.anchorSubject, /Hyperseal Release CA/);
  });

  void test('an RSA signing key works too', async () => {
    const dir = await signedBundle(META, rsaSigner);
    assert.equal(JSON.parse(readFileSync(join(dir, 'bundle.sig'), 'utf8')).algorithm, 'rsa-pkcs1-sha256');
    assert.ok((await verifyBundle(dir, [ca.certPem])).ok);
  });

  void test('one byte changed in one file: HS_ERR_BUNDLE_FILE_MODIFIED naming that file', async () => {
    const dir = await signedBundle();
    const path = join(dir, 'lib', 'modules', 'nic.ko');
    const bytes = readFileSync(path);
    bytes[12_345] = (bytes[12_345] ?? 0) ^ 1;
    writeFileSync(path, bytes);
    const f = failure(await verifyBundle(dir, [ca.certPem]));
    assert.equal(f.code, 'HS_ERR_BUNDLE_FILE_MODIFIED');
    assert.equal(f.file, 'lib/modules/nic.ko');
    assert.match(f.message, /lib\/modules\/nic\.ko differs/);
    assert.throws(
      () => assertVerified(f),
      (err: unknown) =>
        isHypersealError(err, 'HS_ERR_BUNDLE_FILE_MODIFIED') &&
        err.details?.file === 'lib/modules/nic.ko' &&
        err.details.name === 'nic-driver',
    );
  });

  void test('missing, extra and replaced-by-symlink files each have their code; the first in path order is named', async () => {
    const missing = await signedBundle();
    unlinkSync(join(missing, 'bin', 'tool'));
    assert.deepEqual(
      (({ code, file }) => ({ code, file }))(failure(await verifyBundle(missing, [ca.certPem]))),
      { code: 'HS_ERR_BUNDLE_FILE_MISSING', file: 'bin/tool' },
    );

    const extra = await signedBundle();
    writeFileSync(join(extra, 'lib', 'evil.so'), 'x');
    const fe = failure(await verifyBundle(extra, [ca.certPem]));
    assert.equal(fe.code, 'HS_ERR_BUNDLE_FILE_EXTRA');
    assert.equal(fe.file, 'lib/evil.so');
    assert.ok((await verifyBundle(extra, [ca.certPem], { extraFiles: 'ignore' })).ok);

    const linked = await signedBundle();
    unlinkSync(join(linked, 'README'));
    symlinkSync('/etc/hostname', join(linked, 'README'));
    assert.equal(failure(await verifyBundle(linked, [ca.certPem])).code, 'HS_ERR_BUNDLE_FILE_MODIFIED');

    const several = await signedBundle();
    unlinkSync(join(several, 'README'));
    writeFileSync(join(several, 'bin', 'tool'), 'changed');
    writeFileSync(join(several, 'zzz'), 'new');
    const fs = failure(await verifyBundle(several, [ca.certPem]));
    assert.equal(fs.file, 'README');
    assert.deepEqual(
      fs.fileProblems.map((p) => [p.code, p.path]),
      [
        ['HS_ERR_BUNDLE_FILE_MISSING', 'README'],
        ['HS_ERR_BUNDLE_FILE_MODIFIED', 'bin/tool'],
        ['HS_ERR_BUNDLE_FILE_EXTRA', 'zzz'],
      ],
    );
  });

  void test('unsigned: HS_ERR_BUNDLE_UNSIGNED; rebuilding removes a stale signature', async () => {
    const dir = stage();
    await buildBundle(dir, META);
    assert.equal(failure(await verifyBundle(dir, [ca.certPem])).code, 'HS_ERR_BUNDLE_UNSIGNED');
    await signBundle(dir, signer);
    await buildBundle(dir, { ...META, version: '1.2.4' });
    assert.equal(failure(await verifyBundle(dir, [ca.certPem])).code, 'HS_ERR_BUNDLE_UNSIGNED');
  });

  void test('bad signature: descriptor edited after signing, signature bytes altered, malformed signature file', async () => {
    const edited = await signedBundle();
    const d = JSON.parse(readFileSync(join(edited, 'bundle.json'), 'utf8'));
    d.acceptance = 'certified';
    writeFileSync(join(edited, 'bundle.json'), JSON.stringify(d, null, 2));
    assert.equal(failure(await verifyBundle(edited, [ca.certPem])).code, 'HS_ERR_BUNDLE_BAD_SIGNATURE');

    const altered = await signedBundle();
    const env = JSON.parse(readFileSync(join(altered, 'bundle.sig'), 'utf8'));
    const sig = Buffer.from(env.signature, 'base64');
    sig[sig.length - 3] = (sig[sig.length - 3] ?? 0) ^ 0x40;
    env.signature = sig.toString('base64');
    writeFileSync(join(altered, 'bundle.sig'), JSON.stringify(env));
    assert.equal(failure(await verifyBundle(altered, [ca.certPem])).code, 'HS_ERR_BUNDLE_BAD_SIGNATURE');

    const swapped = await signedBundle();
    const env2 = JSON.parse(readFileSync(join(swapped, 'bundle.sig'), 'utf8'));
    env2.certificates = [rsaSigner.certPem]; // right CA, wrong key for this signature
    writeFileSync(join(swapped, 'bundle.sig'), JSON.stringify(env2));
    assert.equal(failure(await verifyBundle(swapped, [ca.certPem])).code, 'HS_ERR_BUNDLE_BAD_SIGNATURE');

    const garbage = await signedBundle();
    writeFileSync(join(garbage, 'bundle.sig'), 'not json');
    assert.equal(failure(await verifyBundle(garbage, [ca.certPem])).code, 'HS_ERR_BUNDLE_BAD_SIGNATURE');
  });

  void test('signed under another CA, by a TLS certificate, or expired: HS_ERR_BUNDLE_UNTRUSTED', async () => {
    const other = await signedBundle(META, otherSigner);
    const f = failure(await verifyBundle(other, [ca.certPem]));
    assert.equal(f.code, 'HS_ERR_BUNDLE_UNTRUSTED');
    assert.match(f.message, /Other Signing/);
    assert.ok(
      (await verifyBundle(other, [ca.certPem, otherCa.certPem])).ok,
      'trusted once its CA is an anchor',
    );

    const tls = await signedBundle(META, tlsClient);
    assert.match(failure(await verifyBundle(tls, [ca.certPem])).message, /codeSigning/);

    const ok = await signedBundle();
    const later = new Date(Date.now() + 900 * 86_400_000);
    const expired = failure(await verifyBundle(ok, [ca.certPem], { at: later }));
    assert.equal(expired.code, 'HS_ERR_BUNDLE_UNTRUSTED');
    assert.match(expired.message, /expired/);
  });

  void test('revoked signer or anchor: HS_ERR_BUNDLE_CERT_REVOKED', async () => {
    const dir = await signedBundle();
    const fp = certificateFingerprint256(signer.certPem);
    const colons = fp.toUpperCase().match(/../g)?.join(':') ?? '';
    assert.equal(
      failure(await verifyBundle(dir, [ca.certPem], { revokedCertificates: [colons] })).code,
      'HS_ERR_BUNDLE_CERT_REVOKED',
    );
    const caFp = certificateFingerprint256(ca.certPem);
    assert.equal(
      failure(await verifyBundle(dir, [ca.certPem], { revokedCertificates: [caFp] })).code,
      'HS_ERR_BUNDLE_CERT_REVOKED',
    );
    const rsa = await signedBundle(META, rsaSigner);
    assert.ok(
      (await verifyBundle(rsa, [ca.certPem], { revokedCertificates: [fp] })).ok,
      'other signers stay trusted',
    );
  });

  void test('a chain through an intermediate CA verifies when the signature carries it; pathLen is enforced', async () => {
    const root = await makeCa('Root CA');
    const intermediate = await makeCa('Intermediate CA', root);
    const leaf = await issueCodeSigningCertificate(intermediate, { commonName: 'Partner Signing' });
    const withChain = await signedBundle(META, { ...leaf, chainPems: [intermediate.certPem] });
    assert.ok((await verifyBundle(withChain, [root.certPem])).ok);
    const withoutChain = await signedBundle(META, leaf);
    assert.equal(failure(await verifyBundle(withoutChain, [root.certPem])).code, 'HS_ERR_BUNDLE_UNTRUSTED');
    // src/pki's CAs are pathLen 0: an intermediate below one may not issue signers.
    const below = await makeCa('Intermediate below a pathLen-0 CA', ca);
    const leaf2 = await issueCodeSigningCertificate(below, { commonName: 'Too Deep' });
    const tooDeep = await signedBundle(META, { ...leaf2, chainPems: [below.certPem] });
    assert.match(failure(await verifyBundle(tooDeep, [ca.certPem])).message, /pathLen 0 exceeded/);
  });

  void test('acceptance matrix: a host admits its own level and higher, nothing lower', async () => {
    const dirs = new Map<AcceptanceLevel, string>();
    for (const level of ACCEPTANCE_LEVELS)
      dirs.set(level, await signedBundle({ ...META, acceptance: level }));
    for (const bundle of ACCEPTANCE_LEVELS) {
      for (const host of ACCEPTANCE_LEVELS) {
        const r = await verifyBundle(dirs.get(bundle) ?? '', [ca.certPem], { minAcceptance: host });
        const expected = ACCEPTANCE_LEVELS.indexOf(bundle) >= ACCEPTANCE_LEVELS.indexOf(host);
        assert.equal(r.ok, expected, `${bundle} bundle on a ${host} host`);
        assert.equal(admits(host, bundle), expected);
        if (!r.ok) assert.equal(r.code, 'HS_ERR_BUNDLE_ACCEPTANCE_TOO_LOW');
      }
    }
    assert.equal(lowestAcceptance(['certified', 'partner', 'accepted']), 'partner');
    assert.equal(lowestAcceptance([]), undefined);
  });

  void test('an anchor capped at partner cannot vouch for a certified bundle', async () => {
    const certified = await signedBundle({ ...META, acceptance: 'certified' });
    const capped = [{ certPem: ca.certPem, maxAcceptance: 'partner' as const }];
    const f = failure(await verifyBundle(certified, capped));
    assert.equal(f.code, 'HS_ERR_BUNDLE_UNTRUSTED');
    assert.match(f.message, /at most partner/);
    assert.ok((await verifyBundle(await signedBundle(), capped)).ok);
  });

  void test('malformed descriptors and build inputs: HS_ERR_BUNDLE_INVALID', async () => {
    const empty = join(work, 'empty');
    mkdirSync(empty);
    assert.equal(failure(await verifyBundle(empty, [ca.certPem])).code, 'HS_ERR_BUNDLE_INVALID');

    const mutateDescriptor = async (f: (d: Record<string, unknown>) => void): Promise<string> => {
      const dir = await signedBundle();
      const d = JSON.parse(readFileSync(join(dir, 'bundle.json'), 'utf8'));
      f(d);
      writeFileSync(join(dir, 'bundle.json'), JSON.stringify(d));
      return failure(await verifyBundle(dir, [ca.certPem])).code;
    };
    assert.equal(await mutateDescriptor((d) => (d.extra = 1)), 'HS_ERR_BUNDLE_INVALID');
    assert.equal(await mutateDescriptor((d) => (d.kind = 'agent-core')), 'HS_ERR_BUNDLE_INVALID');
    assert.equal(await mutateDescriptor((d) => (d.files as unknown[]).reverse()), 'HS_ERR_BUNDLE_INVALID');
    assert.equal(
      await mutateDescriptor((d) => ((d.files as { path: string }[])[0]!.path = '../etc/passwd')),
      'HS_ERR_BUNDLE_INVALID',
    );
    assert.equal(await mutateDescriptor((d) => (d.acceptance = 'gold')), 'HS_ERR_BUNDLE_INVALID');

    const withLink = stage();
    symlinkSync('/etc/passwd', join(withLink, 'passwd'));
    await assert.rejects(buildBundle(withLink, META), (err: unknown) =>
      isHypersealError(err, 'HS_ERR_BUNDLE_INVALID'),
    );
    await assert.rejects(buildBundle(stage(), { ...META, name: 'Bad Name' }), /name must be/);
    await assert.rejects(signBundle(stage(), signer), /bundle.json is missing/);
    await assert.rejects(
      signBundle(await signedBundle(), { certPem: signer.certPem, keyPem: otherSigner.keyPem }),
      /does not match/,
    );
  });

  describe('agent-core manifest', () => {
    void test('over chosen files of an install directory: verifies, names a tampered file, ignores unlisted files on request', async () => {
      const root = join(work, 'dist');
      mkdirSync(join(root, 'src', 'agent'), { recursive: true });
      writeFileSync(join(root, 'src', 'agent', 'main.js'), 'console.log(1)\n');
      writeFileSync(join(root, 'src', 'index.js'), 'export {}\n');
      writeFileSync(join(root, 'src', 'index.js.map'), '{}\n');
      const d = await buildManifest(root, ['src/index.js', 'src/agent/main.js'], {
        ...META,
        name: 'hyperseal-agent',
        acceptance: 'certified',
      });
      assert.equal(d.kind, 'agent-core');
      assert.deepEqual(
        d.files.map((f) => f.path),
        ['src/agent/main.js', 'src/index.js'],
      );
      await signManifest(root, signer);
      assert.equal(failure(await verifyManifest(root, [ca.certPem])).code, 'HS_ERR_BUNDLE_FILE_EXTRA');
      assert.ok(
        (await verifyManifest(root, [ca.certPem], { extraFiles: 'ignore', minAcceptance: 'certified' })).ok,
      );

      writeFileSync(join(root, 'src', 'agent', 'main.js'), 'console.log(2)\n');
      const f = failure(await verifyManifest(root, [ca.certPem], { extraFiles: 'ignore' }));
      assert.equal(f.code, 'HS_ERR_BUNDLE_FILE_MODIFIED');
      assert.equal(f.file, 'src/agent/main.js');
    });

    void test('a bundle’s descriptor and signature do not pass as a manifest (kind is signed)', async () => {
      const dir = await signedBundle();
      writeFileSync(join(dir, 'hyperseal-manifest.json'), readFileSync(join(dir, 'bundle.json')));
      writeFileSync(join(dir, 'hyperseal-manifest.sig'), readFileSync(join(dir, 'bundle.sig')));
      const f = failure(await verifyManifest(dir, [ca.certPem], { extraFiles: 'ignore' }));
      assert.equal(f.code, 'HS_ERR_BUNDLE_INVALID');
      assert.match(f.message, /kind "bundle", not agent-core/);
    });
  });
});

describe('canonical JSON', () => {
  void test('sorted keys at every level, no whitespace, integers only', () => {
    assert.equal(
      canonicalJson({ b: [2, { d: 1, c: 'x' }], a: null, é: true }),
      '{"a":null,"b":[2,{"c":"x","d":1}],"é":true}',
    );
    assert.equal(canonicalJson({ s: 'line\n"q"' }), '{"s":"line\\n\\"q\\""}');
    assert.throws(() => canonicalJson({ x: 1.5 }), /safe integer/);
    assert.throws(() => canonicalJson({ x: new Date() }), /cannot be written/);
    assert.throws(() => canonicalJson({ x: '\ud800' }), /lone surrogate/);
  });
});
