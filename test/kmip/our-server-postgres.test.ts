// The shared KMIP behavioural suite against our embedded key server with its object store
// in a real PostgreSQL (`hyperseal kms serve --store postgres://…`, docs/key-safety.md):
// the same answers as with the SQLite file.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe } from 'node:test';
import { KmipClient } from '../../src/kmip/client.js';
import type { RunningKms } from '../../src/kms/service.js';
import { startKms } from '../../src/kms/service.js';
import type { PostgresServer } from '../support/postgres.js';
import { startPostgres } from '../support/postgres.js';
import { kmipBehaviourSuite } from './behaviour.js';

let dir: string | undefined;
let kms: RunningKms | undefined;
let pg: PostgresServer | undefined;
const savedKey = process.env.HYPERSEAL_KMS_MASTER_KEY;

async function clientFor(identity: string): Promise<KmipClient> {
  assert.ok(kms !== undefined, 'the key server is not running');
  const cert = await kms.dataDir.issueClientCertificate(identity);
  return new KmipClient({
    host: kms.host,
    port: kms.port,
    ca: kms.dataDir.caCertPem(),
    cert: cert.certPem,
    key: cert.keyPem,
  });
}

void describe('our embedded key server on PostgreSQL', () => {
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hs-pgkms-'));
    pg = await startPostgres();
    // From the environment: nothing is written to $XDG_CONFIG_HOME / ~/.config.
    process.env.HYPERSEAL_KMS_MASTER_KEY = randomBytes(32).toString('base64');
    kms = await startKms({ dataDir: join(dir, 'kms'), store: pg.url, host: '127.0.0.1', port: 0 });
  });
  after(async () => {
    await kms?.close();
    await pg?.stop();
    if (savedKey === undefined) delete process.env.HYPERSEAL_KMS_MASTER_KEY;
    else process.env.HYPERSEAL_KMS_MASTER_KEY = savedKey;
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  kmipBehaviourSuite('KMIP behaviour (Hyperseal KMS, PostgreSQL store)', async () => {
    const [client, other] = await Promise.all([clientFor('hs-suite-owner'), clientFor('hs-suite-other')]);
    return {
      client,
      other,
      close: () => {
        client.close();
        other.close();
        return Promise.resolve();
      },
    };
  });
});
