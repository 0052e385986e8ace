/**
 * Secure Boot key sets for VMs and the variable stores they produce.
 *
 * What comes from where, for a VM's UEFI variable store (pflash1):
 *
 * - `microsoft` (the default): the store is Debian's OVMF_VARS_4M.ms.fd, copied byte for
 *   byte. Everything in it comes from OVMF's packagers: PK (Debian), KEK (Debian and
 *   Microsoft KEK CA 2011), db (Microsoft Windows Production PCA 2011 and Microsoft UEFI
 *   CA 2011, which signs shim), dbx (one placeholder hash), SecureBootEnable=1,
 *   CustomMode=0, certdb, VendorKeysNv and the boot entries of the packagers' first boot.
 *   Our code writes nothing; it only checks that the template really holds a PK and
 *   Microsoft certificates in db before handing it out.
 * - `custom` (an organisation's own keys): the store starts as OVMF's blank
 *   OVMF_VARS_4M.fd (no variables at all: setup mode). Our code (varstore.ts) appends
 *   exactly these records: PK, KEK, db and, when the set has entries, dbx — each
 *   NV|BS|RT|TIME_BASED_AUTHENTICATED_WRITE_ACCESS with the time of writing as its
 *   timestamp and bare EFI_SIGNATURE_LISTs (esl.ts) as data —, then SecureBootEnable=1
 *   and CustomMode=0 (NV|BS). The firmware adds the rest at first boot: certdb,
 *   VendorKeysNv (0: not the vendor's keys), MTC, boot entries, console variables, and
 *   computes the volatile SecureBoot, SetupMode, AuditMode, DeployedMode.
 *
 * Either way, from then on the firmware owns the store: updates inside the guest must be
 * signed (db/dbx by a KEK, KEK by the PK), and the store is written only by SMM code.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createPublicKey, randomUUID, webcrypto } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { HypersealError } from '../errors.js';
import { decodePem, encodePem } from '../pki/pem.js';
import type { OvmfRequirement } from '../qemu/firmware.js';
import type { EfiSignatureList } from './esl.js';
import { decodeSignatureLists, encodeSignatureLists, sha256SignatureList, x509SignatureList } from './esl.js';
import type { Guid } from './guid.js';
import { EfiGuids, parseGuid } from './guid.js';
import type { AppendOptions, SecureBootKeyVariables } from './varstore.js';
import {
  SECURE_BOOT_VARIABLES,
  findVariable,
  parseVarStore,
  readSecureBootState,
  writeSecureBootVariables,
} from './varstore.js';

x509.cryptoProvider.set(webcrypto);

export interface X509KeyEntry {
  type: 'x509';
  certPem: string;
  owner: Guid;
}

export interface Sha256KeyEntry {
  type: 'sha256';
  /** SHA-256 Authenticode digest of an EFI image, 64 lower-case hex digits. */
  sha256: string;
  owner: Guid;
}

export type KeyEntry = X509KeyEntry | Sha256KeyEntry;

/** Use OVMF's Microsoft-enrolled template as it is (see the header comment). */
export interface MicrosoftKeySet {
  kind: 'microsoft';
  name: 'microsoft';
}

/** An organisation's own keys, written into OVMF's blank template. */
export interface CustomKeySet {
  kind: 'custom';
  name: string;
  /** The platform key: exactly one RSA certificate (UEFI 2.10 §32.3.1). */
  pk: X509KeyEntry;
  /** Key exchange keys (RSA certificates): who may update db and dbx from inside the guest. */
  kek: X509KeyEntry[];
  /** Allowed: signers (certificates) and image hashes. */
  db: KeyEntry[];
  /** Forbidden: revoked signers and image hashes; may be empty. */
  dbx: KeyEntry[];
}

export type KeySet = MicrosoftKeySet | CustomKeySet;

export const MICROSOFT_KEY_SET: MicrosoftKeySet = Object.freeze({ kind: 'microsoft', name: 'microsoft' });

/** Debian's templates (package ovmf ≥ 2022.11); the agent normally finds them via src/qemu/firmware.ts. */
export const OVMF_TEMPLATES = {
  microsoft: '/usr/share/OVMF/OVMF_VARS_4M.ms.fd',
  blank: '/usr/share/OVMF/OVMF_VARS_4M.fd',
} as const;

const MAX_ENTRIES = 256;
const KEY_SET_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;
const MIN_RSA_BITS = 2048;

function invalid(message: string): never {
  throw new HypersealError('HS_ERR_SECUREBOOT_INVALID_KEYSET', message);
}

/* ------------------------------------------------------------------ validation */

/** Checks a key set given as data (API, file) and returns it typed; throws HS_ERR_SECUREBOOT_INVALID_KEYSET. */
export function validateKeySet(value: unknown): KeySet {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) invalid('a key set is an object');
  const v = value as Record<string, unknown>;
  if (v.kind === 'microsoft') return MICROSOFT_KEY_SET;
  if (v.kind !== 'custom') invalid(`key set kind must be "microsoft" or "custom"`);
  if (typeof v.name !== 'string' || !KEY_SET_NAME.test(v.name) || v.name === 'microsoft') {
    invalid('a custom key set needs a name of letters, digits, . _ - (at most 64), other than "microsoft"');
  }
  const pk = x509Entry(v.pk, 'pk', true);
  const kek = entryList(v.kek, 'kek', 1).map((e, i) => x509Entry(e, `kek[${i}]`, true));
  const db = entryList(v.db, 'db', 1).map((e, i) => keyEntry(e, `db[${i}]`));
  const dbx = entryList(v.dbx ?? [], 'dbx', 0).map((e, i) => keyEntry(e, `dbx[${i}]`));
  return { kind: 'custom', name: v.name, pk, kek, db, dbx };
}

function entryList(value: unknown, what: string, min: number): unknown[] {
  if (!Array.isArray(value) || value.length < min || value.length > MAX_ENTRIES) {
    invalid(`${what} must be a list of ${min} to ${MAX_ENTRIES} entries`);
  }
  return value;
}

function keyEntry(value: unknown, what: string): KeyEntry {
  const type = (value as { type?: unknown } | null)?.type;
  if (type === 'sha256') return sha256Entry(value, what);
  return x509Entry(value, what, false);
}

function sha256Entry(value: unknown, what: string): Sha256KeyEntry {
  const v = value as Record<string, unknown>;
  const hash = typeof v.sha256 === 'string' ? v.sha256.toLowerCase() : undefined;
  if (hash === undefined || !SHA256_HEX.test(hash)) invalid(`${what}.sha256 must be 64 hex digits`);
  return { type: 'sha256', sha256: hash, owner: ownerOf(v.owner, what) };
}

function x509Entry(value: unknown, what: string, rsaOnly: boolean): X509KeyEntry {
  if (typeof value !== 'object' || value === null) invalid(`${what} must be an object`);
  const v = value as Record<string, unknown>;
  if (v.type !== 'x509') invalid(`${what}.type must be "x509"`);
  const der = certificateDer(v.certPem, what);
  if (rsaOnly) {
    // PK and KEK verify signed variable updates; edk2 (and the UEFI spec) handle RSA-2048+ only.
    const key = createPublicKey({
      key: Buffer.from(new x509.X509Certificate(der).publicKey.rawData),
      format: 'der',
      type: 'spki',
    });
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (key.asymmetricKeyType !== 'rsa' || bits < MIN_RSA_BITS) {
      invalid(`${what} must be an RSA certificate of at least ${MIN_RSA_BITS} bits`);
    }
  }
  return { type: 'x509', certPem: encodePem(der, 'CERTIFICATE'), owner: ownerOf(v.owner, what) };
}

function certificateDer(certPem: unknown, what: string): Buffer {
  let der: Buffer;
  try {
    der = decodePem(certPem, 'CERTIFICATE', `${what}.certPem`);
    void new x509.X509Certificate(der).publicKey;
  } catch (err) {
    invalid(
      `${what}.certPem is not one PEM X.509 certificate${err instanceof HypersealError ? `: ${err.message}` : ''}`,
    );
  }
  return der;
}

function ownerOf(value: unknown, what: string): Guid {
  return parseGuid(value, `${what}.owner`, 'HS_ERR_SECUREBOOT_INVALID_KEYSET');
}

/* ------------------------------------------------------------------ encoding */

/** Signature lists for one variable: a list per certificate, consecutive hashes grouped into one. */
export function entriesToSignatureLists(entries: readonly KeyEntry[]): EfiSignatureList[] {
  const lists: EfiSignatureList[] = [];
  let hashes: { hash: Buffer; owner: Guid }[] = [];
  const flush = (): void => {
    if (hashes.length > 0) lists.push(sha256SignatureList(hashes));
    hashes = [];
  };
  for (const e of entries) {
    if (e.type === 'sha256') {
      hashes.push({ hash: Buffer.from(e.sha256, 'hex'), owner: e.owner });
    } else {
      flush();
      lists.push(x509SignatureList(decodePem(e.certPem, 'CERTIFICATE', 'certificate'), e.owner));
    }
  }
  flush();
  return lists;
}

/** The data of PK, KEK, db and dbx for a custom key set (dbx undefined when empty). */
export function keySetVariables(
  keySet: CustomKeySet,
): Pick<SecureBootKeyVariables, 'pk' | 'kek' | 'db' | 'dbx'> {
  const checked = validateKeySet(keySet) as CustomKeySet;
  const dbx = checked.dbx.length > 0 ? encodeSignatureLists(entriesToSignatureLists(checked.dbx)) : undefined;
  return {
    pk: encodeSignatureLists(entriesToSignatureLists([checked.pk])),
    kek: encodeSignatureLists(entriesToSignatureLists(checked.kek)),
    db: encodeSignatureLists(entriesToSignatureLists(checked.db)),
    ...(dbx === undefined ? {} : { dbx }),
  };
}

/** Which OVMF build a key set needs: Microsoft's enrolled template, or the blank one we write into. */
export function ovmfRequirementFor(keySet: KeySet): Required<OvmfRequirement> {
  return { secureBoot: true, enrolledKeys: keySet.kind === 'microsoft' };
}

export interface VarsOptions extends AppendOptions {
  /** Timestamp of the key variables (default now). */
  timestamp?: Date;
}

/**
 * The variable store for a key set, from its template's bytes: for `microsoft` the
 * template itself (checked), for `custom` a copy of the blank template with the keys.
 */
export function varsForKeySet(template: Uint8Array, keySet: KeySet, opts: VarsOptions = {}): Buffer {
  if (keySet.kind === 'microsoft') {
    const state = readSecureBootState(template);
    const microsoftDb = state.db.some(
      (e) => e.type === 'x509' && /\bO=Microsoft Corporation\b/.test(e.subject),
    );
    if (state.setupMode || !microsoftDb || !state.secureBootAtNextBoot) {
      throw new HypersealError(
        'HS_ERR_SECUREBOOT_BAD_VARSTORE',
        'the template for the microsoft key set must hold a PK, Microsoft certificates in db and Secure Boot enabled (OVMF_VARS_4M.ms.fd)',
      );
    }
    return Buffer.from(template);
  }
  const { reserveBytes, timestamp } = opts;
  return writeSecureBootVariables(
    template,
    { ...keySetVariables(keySet), ...(timestamp === undefined ? {} : { timestamp }) },
    reserveBytes === undefined ? {} : { reserveBytes },
  );
}

/** varsForKeySet over a template file; the caller writes the result as the VM's NVRAM. */
export async function buildVarsForKeySet(
  templatePath: string,
  keySet: KeySet,
  opts: VarsOptions = {},
): Promise<Buffer> {
  let template: Buffer;
  try {
    template = await readFile(templatePath);
  } catch (err) {
    throw new HypersealError(
      'HS_ERR_SECUREBOOT_BAD_VARSTORE',
      `cannot read variable store template ${templatePath}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
    );
  }
  return varsForKeySet(template, keySet, opts);
}

/**
 * The PK, KEK, db and dbx of an existing store as a custom key set, e.g. to start from
 * Microsoft's keys (OVMF_VARS_4M.ms.fd) and add an organisation's own db entries. Owner
 * GUIDs are kept; entries of other signature types are refused.
 */
export function keySetFromVarStore(bytes: Uint8Array, name: string): CustomKeySet {
  const store = parseVarStore(bytes);
  const entriesOf = (v: { name: string; vendor: Guid }): KeyEntry[] => {
    const record = findVariable(store, v.name, v.vendor);
    if (record === undefined) return [];
    return decodeSignatureLists(record.data).flatMap((list) =>
      list.signatures.map((s): KeyEntry => {
        if (list.signatureType === EfiGuids.EFI_CERT_X509_GUID) {
          return { type: 'x509', certPem: encodePem(s.data, 'CERTIFICATE'), owner: s.owner };
        }
        if (list.signatureType === EfiGuids.EFI_CERT_SHA256_GUID) {
          return { type: 'sha256', sha256: s.data.toString('hex'), owner: s.owner };
        }
        return invalid(`${v.name} holds a ${list.signatureType} entry, which key sets cannot express`);
      }),
    );
  };
  const pk = entriesOf(SECURE_BOOT_VARIABLES.PK);
  if (pk.length !== 1) invalid(`the store holds ${pk.length} PK entries; a key set needs exactly one`);
  return validateKeySet({
    kind: 'custom',
    name,
    pk: pk[0],
    kek: entriesOf(SECURE_BOOT_VARIABLES.KEK),
    db: entriesOf(SECURE_BOOT_VARIABLES.db),
    dbx: entriesOf(SECURE_BOOT_VARIABLES.dbx),
  }) as CustomKeySet;
}

/* ------------------------------------------------------------------ generation */

export interface GeneratedKey {
  certPem: string;
  /** PKCS#8 PEM; sbsign and sign-efi-sig-list read it as is. */
  keyPem: string;
}

export interface GeneratedKeySet {
  keySet: CustomKeySet;
  pk: GeneratedKey;
  kek: GeneratedKey;
  db: GeneratedKey;
}

export interface GenerateKeySetOptions {
  name: string;
  /** CN prefix: "<prefix> PK", "<prefix> KEK", "<prefix> db". Default: the name. */
  commonNamePrefix?: string;
  /** Owner GUID of every entry; default a random one. */
  owner?: string;
  validityDays?: number;
}

/**
 * A fresh PK/KEK/db (RSA-2048, SHA-256, self-signed, CA:true like `openssl req -x509`)
 * and the key set that enrolls them. UEFI ignores certificate validity periods, so the
 * default of 10 years matters only to tools that check it.
 */
export async function generateKeySet(opts: GenerateKeySetOptions): Promise<GeneratedKeySet> {
  const owner = parseGuid(opts.owner ?? randomUUID(), 'owner', 'HS_ERR_SECUREBOOT_INVALID_KEYSET');
  const prefix = opts.commonNamePrefix ?? opts.name;
  const days = opts.validityDays ?? 3650;
  const [pk, kek, db] = await Promise.all([
    selfSignedRsa(`${prefix} PK`, days),
    selfSignedRsa(`${prefix} KEK`, days),
    selfSignedRsa(`${prefix} db`, days),
  ]);
  const keySet = validateKeySet({
    kind: 'custom',
    name: opts.name,
    pk: { type: 'x509', certPem: pk.certPem, owner },
    kek: [{ type: 'x509', certPem: kek.certPem, owner }],
    db: [{ type: 'x509', certPem: db.certPem, owner }],
    dbx: [],
  }) as CustomKeySet;
  return { keySet, pk, kek, db };
}

async function selfSignedRsa(commonName: string, days: number): Promise<GeneratedKey> {
  const alg = {
    name: 'RSASSA-PKCS1-v1_5',
    hash: 'SHA-256',
    publicExponent: new Uint8Array([1, 0, 1]),
    modulusLength: 2048,
  };
  const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const name = new x509.Name([{ CN: [{ utf8String: commonName }] }]);
  const ski = await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, webcrypto);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: Buffer.from(
        webcrypto.getRandomValues(new Uint8Array(16)).map((b, i) => (i === 0 ? (b & 0x7f) | 0x40 : b)),
      ).toString('hex'),
      subject: name,
      issuer: name,
      notBefore: new Date(now - 5 * 60_000),
      notAfter: new Date(now + days * 86_400_000),
      publicKey: keys.publicKey,
      signingKey: keys.privateKey,
      signingAlgorithm: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        ski,
        new x509.AuthorityKeyIdentifierExtension(ski.keyId),
      ],
    },
    webcrypto,
  );
  return {
    certPem: encodePem(cert.rawData, 'CERTIFICATE'),
    keyPem: encodePem(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY'),
  };
}
