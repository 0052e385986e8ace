// EFI_SIGNATURE_LIST codec and GUID encoding: annotated bytes, round trips, malformed
// input, byte equality with efitools (cert-to-efi-sig-list, hash-to-efi-sig-list) when it
// is installed, and a byte-exact round trip of the lists in Debian's Microsoft template.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isHypersealError } from '../errors.js';
import { decodePem } from '../pki/pem.js';
import {
  decodeSignatureLists,
  encodeSignatureLists,
  ESL_HEADER_BYTES,
  sha256SignatureList,
  x509SignatureList,
} from './esl.js';
import type { Guid } from './guid.js';
import { EfiGuids, guidToBytes, parseGuid, readGuid } from './guid.js';
import type { GeneratedKeySet } from './keyset.js';
import { generateKeySet } from './keyset.js';
import { findVariable, parseVarStore, SECURE_BOOT_VARIABLES } from './varstore.js';

const OWNER = parseGuid('e75d272b-d287-4272-b356-0520fda91ef0');
const isBadEsl = (err: unknown): boolean => isHypersealError(err, 'HS_ERR_SECUREBOOT_BAD_ESL');

function hasTool(tool: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('GUIDs', () => {
  void test('EFI_GLOBAL_VARIABLE is stored mixed-endian (first three fields little-endian)', () => {
    assert.equal(
      guidToBytes(EfiGuids.EFI_GLOBAL_VARIABLE).toString('hex'),
      // 8be4df61 → 61df e48b, 93ca → ca93, 11d2 → d211, then aa0d 00e098032b8c as written
      '61dfe48bca93d211aa0d00e098032b8c',
    );
    assert.equal(readGuid(guidToBytes(EfiGuids.EFI_GLOBAL_VARIABLE), 0), EfiGuids.EFI_GLOBAL_VARIABLE);
  });

  void test('random GUIDs round-trip; text is accepted in any case and with braces', () => {
    for (let i = 0; i < 100; i++) {
      const bytes = randomBytes(16);
      const guid = readGuid(bytes, 0);
      assert.deepEqual(guidToBytes(guid), bytes);
    }
    assert.equal(parseGuid('{8BE4DF61-93CA-11D2-AA0D-00E098032B8C}'), EfiGuids.EFI_GLOBAL_VARIABLE);
    assert.throws(() => parseGuid('8be4df61-93ca-11d2-aa0d-00e098032b8'), /GUID/);
    assert.throws(() => parseGuid(42), /GUID/);
  });
});

describe('EFI_SIGNATURE_LIST', () => {
  let keys: GeneratedKeySet;
  let der: Buffer;
  before(async () => {
    keys = await generateKeySet({ name: 'esl-test', owner: OWNER });
    der = decodePem(keys.db.certPem, 'CERTIFICATE', 'cert');
  });

  void test('an X.509 list: header fields, owner and certificate at the right offsets', () => {
    const bytes = encodeSignatureLists([x509SignatureList(der, OWNER)]);
    assert.equal(bytes.length, ESL_HEADER_BYTES + 16 + der.length);
    assert.equal(readGuid(bytes, 0), EfiGuids.EFI_CERT_X509_GUID);
    assert.equal(bytes.readUInt32LE(16), bytes.length); // SignatureListSize
    assert.equal(bytes.readUInt32LE(20), 0); // SignatureHeaderSize
    assert.equal(bytes.readUInt32LE(24), 16 + der.length); // SignatureSize
    assert.equal(readGuid(bytes, 28), OWNER);
    assert.deepEqual(bytes.subarray(44), der);
    const [list] = decodeSignatureLists(bytes);
    assert.equal(list?.signatureType, EfiGuids.EFI_CERT_X509_GUID);
    assert.deepEqual(list?.signatures, [{ owner: OWNER, data: der }]);
  });

  void test('several lists round-trip, SHA-256 entries share one list', () => {
    const other = parseGuid('77fa9abd-0359-4d32-bd60-28f4e78f784b');
    const hashes = [randomBytes(32), randomBytes(32), randomBytes(32)];
    const lists = [
      x509SignatureList(der, OWNER),
      sha256SignatureList(hashes.map((hash, i) => ({ hash, owner: i === 1 ? other : OWNER }))),
    ];
    const bytes = encodeSignatureLists(lists);
    assert.equal(bytes.length, ESL_HEADER_BYTES + 16 + der.length + ESL_HEADER_BYTES + 3 * 48);
    const decoded = decodeSignatureLists(bytes);
    assert.deepEqual(decoded, lists);
    assert.deepEqual(encodeSignatureLists(decoded), bytes);
    assert.equal(decoded[1]?.signatures[1]?.owner, other);
  });

  void test('malformed lists are refused with HS_ERR_SECUREBOOT_BAD_ESL', () => {
    const good = encodeSignatureLists([
      x509SignatureList(der, OWNER),
      sha256SignatureList([{ hash: randomBytes(32), owner: OWNER }]),
    ]);
    const mutate = (f: (b: Buffer) => void): Buffer => {
      const b = Buffer.from(good);
      f(b);
      return b;
    };
    const cases: [string, Buffer][] = [
      ['truncated', good.subarray(0, good.length - 1)],
      ['stray bytes after the last list', Buffer.concat([good, Buffer.alloc(5)])],
      ['list size beyond the buffer', mutate((b) => b.writeUInt32LE(b.readUInt32LE(16) + 1000, 16))],
      ['list size smaller than its header', mutate((b) => b.writeUInt32LE(20, 16))],
      ['entries not a multiple of SignatureSize', mutate((b) => b.writeUInt32LE(b.readUInt32LE(24) - 1, 24))],
      ['SignatureSize smaller than an owner GUID', mutate((b) => b.writeUInt32LE(16, 24))],
      [
        'SHA-256 list with 33-byte entries',
        mutate((b) => {
          const off = b.readUInt32LE(16);
          b.writeUInt32LE(ESL_HEADER_BYTES + 49, off + 16);
          b.writeUInt32LE(49, off + 24);
        }),
      ],
    ];
    for (const [what, bytes] of cases) {
      assert.throws(() => decodeSignatureLists(bytes), isBadEsl, what);
    }
    assert.throws(() => sha256SignatureList([{ hash: randomBytes(31), owner: OWNER }]), isBadEsl);
    assert.throws(() => sha256SignatureList([]), isBadEsl);
    assert.throws(() => x509SignatureList(Buffer.alloc(0), OWNER), isBadEsl);
    assert.deepEqual(decodeSignatureLists(Buffer.alloc(0)), []);
  });

  void test(
    'the Microsoft template’s db, KEK and dbx decode and re-encode byte for byte',
    { skip: !existsSync('/usr/share/OVMF/OVMF_VARS_4M.ms.fd') && 'ovmf not installed' },
    () => {
      const store = parseVarStore(readFileSync('/usr/share/OVMF/OVMF_VARS_4M.ms.fd'));
      for (const v of [
        SECURE_BOOT_VARIABLES.PK,
        SECURE_BOOT_VARIABLES.KEK,
        SECURE_BOOT_VARIABLES.db,
        SECURE_BOOT_VARIABLES.dbx,
      ]) {
        const record = findVariable(store, v.name, v.vendor);
        assert.ok(record, `${v.name} present`);
        assert.deepEqual(encodeSignatureLists(decodeSignatureLists(record.data)), record.data, v.name);
      }
      const db = decodeSignatureLists(
        findVariable(store, 'db', EfiGuids.EFI_IMAGE_SECURITY_DATABASE_GUID)?.data ?? Buffer.alloc(0),
      );
      assert.equal(db.length, 2);
      assert.ok(
        db.every((l) => l.signatureType === EfiGuids.EFI_CERT_X509_GUID && l.signatures.length === 1),
      );
    },
  );

  describe(
    'byte equality with efitools',
    {
      skip: !hasTool('cert-to-efi-sig-list') && 'efitools not installed (scripts/ensure-deps.sh installs it)',
    },
    () => {
      let dir: string;
      before(() => {
        dir = mkdtempSync(join(tmpdir(), 'hs-esl-'));
      });
      after(() => rmSync(dir, { recursive: true, force: true }));

      void test('cert-to-efi-sig-list writes exactly x509SignatureList’s bytes (RSA cert, random owner)', () => {
        for (const [i, key] of [keys.pk, keys.kek, keys.db].entries()) {
          const owner = readGuid(randomBytes(16), 0) as Guid;
          writeFileSync(join(dir, `c${i}.pem`), key.certPem);
          execFileSync('cert-to-efi-sig-list', ['-g', owner, join(dir, `c${i}.pem`), join(dir, `c${i}.esl`)]);
          const theirs = readFileSync(join(dir, `c${i}.esl`));
          const ours = encodeSignatureLists([
            x509SignatureList(decodePem(key.certPem, 'CERTIFICATE', 'c'), owner),
          ]);
          assert.deepEqual(ours, theirs);
        }
      });

      void test(
        'hash-to-efi-sig-list output decodes as one SHA-256 entry and re-encodes identically',
        {
          skip:
            !existsSync('/usr/lib/efitools/x86_64-linux-gnu/HelloWorld.efi') &&
            'no efitools EFI binary to hash',
        },
        () => {
          // hash-to-efi-sig-list takes no owner option: it writes its own fixed owner GUID.
          execFileSync(
            'hash-to-efi-sig-list',
            ['/usr/lib/efitools/x86_64-linux-gnu/HelloWorld.efi', join(dir, 'h.esl')],
            {
              stdio: 'ignore',
            },
          );
          const theirs = readFileSync(join(dir, 'h.esl'));
          const lists = decodeSignatureLists(theirs);
          assert.equal(lists.length, 1);
          assert.equal(lists[0]?.signatureType, EfiGuids.EFI_CERT_SHA256_GUID);
          assert.equal(lists[0]?.signatures.length, 1);
          const { owner, data: hash } = lists[0]?.signatures[0] ?? { owner: OWNER, data: Buffer.alloc(0) };
          assert.equal(hash.length, 32);
          assert.deepEqual(encodeSignatureLists([sha256SignatureList([{ hash, owner }])]), theirs);
        },
      );
    },
  );
});
