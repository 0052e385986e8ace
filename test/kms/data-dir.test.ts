// The key server's data directory holds two plain certificates next to their sealed keys.
// Swapping either for an attacker's own must stop the server from starting.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { isHypersealError } from '../../src/errors.js';
import { KMS_FILES, KmsDataDir } from '../../src/kms/service.js';
import { createCertificateAuthority, issueCertificate } from '../../src/pki/index.js';

test('a replaced ca.pem or server.pem is refused at open', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'hs-datadir-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const masterKeyFile = join(root, 'master.key');
  const dataDir = join(root, 'kms');
  const first = await KmsDataDir.open({ dataDir, masterKeyFile });
  await first.close();

  // Untouched: opens again.
  await (await KmsDataDir.open({ dataDir, masterKeyFile })).close();

  const evil = await createCertificateAuthority({ commonName: 'evil CA' });
  const original = (await import('node:fs')).readFileSync(join(dataDir, KMS_FILES.ca), 'utf8');
  writeFileSync(join(dataDir, KMS_FILES.ca), evil.certPem);
  await assert.rejects(KmsDataDir.open({ dataDir, masterKeyFile }), (err) => {
    assert.ok(isHypersealError(err, 'HS_ERR_CONFIG'), String(err));
    assert.match(err.message, /ca\.pem .* does not match its sealed private key/);
    return true;
  });
  writeFileSync(join(dataDir, KMS_FILES.ca), original);

  const evilServer = await issueCertificate(evil, { commonName: 'hyperseal-kms', usage: 'server' });
  writeFileSync(join(dataDir, KMS_FILES.serverCert), evilServer.certPem);
  await assert.rejects(KmsDataDir.open({ dataDir, masterKeyFile }), (err) => {
    assert.ok(isHypersealError(err, 'HS_ERR_CONFIG'), String(err));
    assert.match(err.message, /server\.pem/);
    return true;
  });
});
