// The real proof: variable stores written by varstore.ts, booted by Debian's Secure Boot
// OVMF under QEMU (TCG, ~4 s a boot), with a gnu-efi marker application on a FAT disk.
// Signed by the key set's db key it runs and sees SecureBoot=1; unsigned, or signed by
// another key, the firmware refuses it ("Access Denied"); in setup mode (blank store) the
// unsigned app runs — so these tests can fail. dbx and db hash entries are checked the
// same way, and Microsoft's keys (the .ms.fd template) are shown to turn Secure Boot on.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { certificateFingerprint256 } from '../pki/index.js';
import type { BootResult } from '../../test/support/efi.js';
import {
  OVMF,
  bootEfi,
  buildMarkerApp,
  efiToolchainMissing,
  makeEspImage,
  signEfi,
} from '../../test/support/efi.js';
import { decodeSignatureLists } from './esl.js';
import { EfiGuids } from './guid.js';
import type { CustomKeySet, GeneratedKeySet } from './keyset.js';
import { generateKeySet, keySetFromVarStore, varsForKeySet } from './keyset.js';
import { findVariable, parseVarStore, readSecureBootState } from './varstore.js';

const missing = await efiToolchainMissing();
if (missing !== undefined) console.log(`# skipping the OVMF boot tests: ${missing}`);
const BOOT = { timeout: 240_000 };

function hasTool(tool: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Authenticode SHA-256 of a PE image, computed by efitools (the firmware's own notion of the hash). */
function authenticodeHash(efi: string, dir: string): string {
  const out = join(dir, 'hash.esl');
  execFileSync('hash-to-efi-sig-list', [efi, out], { stdio: 'ignore' });
  const [list] = decodeSignatureLists(readFileSync(out));
  const hash = list?.signatures[0]?.data;
  assert.ok(list?.signatureType === EfiGuids.EFI_CERT_SHA256_GUID && hash !== undefined);
  return hash.toString('hex');
}

function explain(r: BootResult): string {
  return `verdict ${r.verdict} after ${r.elapsedMs} ms; serial:\n${r.serial.slice(-2000)}`;
}

describe('Secure Boot under real OVMF', { skip: missing ?? false }, () => {
  let dir: string;
  let keys: GeneratedKeySet;
  let rogue: GeneratedKeySet;
  let app: string;
  let signedApp: string;
  const esp: Record<'signed' | 'unsigned' | 'rogue', string> = { signed: '', unsigned: '', rogue: '' };
  let blank: Buffer;
  let n = 0;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hs-ovmf-'));
    blank = readFileSync(OVMF.blankVars);
    [keys, rogue] = await Promise.all([
      generateKeySet({ name: 'boot-test' }),
      generateKeySet({ name: 'rogue' }),
    ]);
    app = await buildMarkerApp(dir);
    signedApp = await signEfi(app, keys.db, join(dir, 'signed.efi'), dir);
    const rogueApp = await signEfi(app, rogue.db, join(dir, 'rogue.efi'), dir);
    esp.signed = await makeEspImage(join(dir, 'esp-signed.img'), signedApp);
    esp.unsigned = await makeEspImage(join(dir, 'esp-unsigned.img'), app);
    esp.rogue = await makeEspImage(join(dir, 'esp-rogue.img'), rogueApp);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** Writes a store for one boot (the firmware writes into it) and boots `disk` with it. */
  async function boot(
    vars: Buffer,
    disk: string,
    code: string = OVMF.secbootCode,
  ): Promise<{ result: BootResult; varsPath: string }> {
    const varsPath = join(dir, `vars-${n++}.fd`);
    writeFileSync(varsPath, vars);
    return { result: await bootEfi({ code, vars: varsPath, disk }), varsPath };
  }

  void test(
    'our key set: the app signed by its db key runs and the guest sees SecureBoot=1',
    BOOT,
    async () => {
      const { result, varsPath } = await boot(varsForKeySet(blank, keys.keySet), esp.signed);
      assert.equal(result.verdict, 'ran', explain(result));
      assert.equal(result.secureBoot, 1, explain(result));
      // The firmware accepted the store as its own: it added its bookkeeping and kept our keys.
      const after = readFileSync(varsPath);
      const store = parseVarStore(after);
      assert.ok(findVariable(store, 'certdb', EfiGuids.EFI_CERT_DB_GUID), 'firmware wrote certdb');
      assert.ok(
        findVariable(store, 'VendorKeysNv', EfiGuids.EFI_VENDOR_KEYS_NV_GUID),
        'firmware wrote VendorKeysNv',
      );
      const state = readSecureBootState(after);
      assert.equal(
        state.pk[0]?.type === 'x509' ? state.pk[0].sha256 : '',
        certificateFingerprint256(keys.pk.certPem),
      );
      assert.equal(state.secureBootAtNextBoot, true);
    },
  );

  void test('our key set: the same app unsigned is refused (Access Denied)', BOOT, async () => {
    const { result } = await boot(varsForKeySet(blank, keys.keySet), esp.unsigned);
    assert.equal(result.verdict, 'refused', explain(result));
    assert.match(result.refusal ?? '', /Access Denied/);
  });

  void test('our key set: the same app signed by another key is refused', BOOT, async () => {
    const { result } = await boot(varsForKeySet(blank, keys.keySet), esp.rogue);
    assert.equal(result.verdict, 'refused', explain(result));
  });

  void test(
    'blank store (setup mode, Secure Boot off): the unsigned app runs and sees SecureBoot=0',
    BOOT,
    async () => {
      const { result } = await boot(blank, esp.unsigned);
      assert.equal(result.verdict, 'ran', explain(result));
      assert.equal(result.secureBoot, 0, explain(result));
    },
  );

  describe(
    'hash entries',
    {
      skip: !hasTool('hash-to-efi-sig-list') && 'efitools not installed (scripts/ensure-deps.sh installs it)',
    },
    () => {
      void test('dbx: the db-signed app is refused once its hash is in dbx', BOOT, async () => {
        const revoked: CustomKeySet = {
          ...keys.keySet,
          dbx: [{ type: 'sha256', sha256: authenticodeHash(signedApp, dir), owner: keys.keySet.pk.owner }],
        };
        const { result } = await boot(varsForKeySet(blank, revoked), esp.signed);
        assert.equal(result.verdict, 'refused', explain(result));
      });

      void test('db: an unsigned app runs when its hash alone is in db', BOOT, async () => {
        const byHash: CustomKeySet = {
          ...keys.keySet,
          db: [{ type: 'sha256', sha256: authenticodeHash(app, dir), owner: keys.keySet.pk.owner }],
        };
        const { result } = await boot(varsForKeySet(blank, byHash), esp.unsigned);
        assert.equal(result.verdict, 'ran', explain(result));
        assert.equal(result.secureBoot, 1, explain(result));
      });
    },
  );

  describe('Microsoft keys', () => {
    void test(
      'Microsoft’s PK/KEK/db/dbx, written by us with our db key added: SecureBoot=1 in the guest',
      BOOT,
      async () => {
        const ms = keySetFromVarStore(readFileSync(OVMF.msVars), 'microsoft-plus-ours');
        const withOurs: CustomKeySet = { ...ms, db: [...ms.db, ...keys.keySet.db] };
        const { result } = await boot(varsForKeySet(blank, withOurs), esp.signed);
        assert.equal(result.verdict, 'ran', explain(result));
        assert.equal(result.secureBoot, 1, explain(result));
      },
    );

    void test(
      'the .ms.fd template as is: Secure Boot is enforced (our app, not signed by Microsoft, is refused)',
      BOOT,
      async () => {
        const { result } = await boot(readFileSync(OVMF.msVars), esp.signed, OVMF.msCode);
        assert.equal(result.verdict, 'refused', explain(result));
      },
    );
  });
});
