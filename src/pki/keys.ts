/**
 * Key generation, PKCS#8 import/export and the key-type policy. WebCrypto does the
 * signing (that is what @peculiar/x509 drives); node:crypto KeyObjects are used only
 * to inspect keys, because they report curve and modulus size without us parsing ASN.1.
 */
import { createPrivateKey, createPublicKey, webcrypto } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { HypersealError } from '../errors.js';
import { decodePem, encodePem } from './pem.js';

/** `ec` = ECDSA P-256 (default); `rsa` = RSA-2048 for peers limited to RSA key exchange (e.g. PyKMIP). */
export type KeyType = 'ec' | 'rsa';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

const RSA_MODULUS_BITS = 2048;
const MIN_RSA_MODULUS_BITS = 2048;
// P-384 is accepted in CSRs from peers; we only ever generate P-256.
const ACCEPTED_CURVES: ReadonlySet<string> = new Set(['prime256v1', 'secp384r1']);

/** WebCrypto import parameters: ECDSA P-256, or RSA PKCS#1 v1.5 bound to SHA-256. */
export function keyImportParams(
  keyType: KeyType,
): webcrypto.EcKeyImportParams | webcrypto.RsaHashedImportParams {
  return keyType === 'ec'
    ? { name: 'ECDSA', namedCurve: 'P-256' }
    : { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
}

/**
 * Signature parameters for @peculiar/x509. The hash is spelled out even for RSA (where
 * WebCrypto takes it from the key) because the library maps name+hash to the OID.
 */
export function signatureParams(keyType: KeyType): { name: string; hash: string } {
  return { name: keyType === 'ec' ? 'ECDSA' : 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
}

export function parseKeyType(value: unknown): KeyType {
  if (value === undefined || value === 'ec') return 'ec';
  if (value === 'rsa') return 'rsa';
  throw new HypersealError('HS_ERR_PKI', `keyType must be 'ec' or 'rsa'`);
}

export async function generateKeyPair(keyType: KeyType): Promise<CryptoKeyPair> {
  const usages: webcrypto.KeyUsage[] = ['sign', 'verify'];
  // Extractable, because the caller gets the private key back as PKCS#8 PEM.
  if (keyType === 'ec') {
    return webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, usages);
  }
  return webcrypto.subtle.generateKey(
    {
      name: 'RSASSA-PKCS1-v1_5',
      modulusLength: RSA_MODULUS_BITS,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: 'SHA-256',
    },
    true,
    usages,
  );
}

/** PKCS#8 ("BEGIN PRIVATE KEY") is the one format both Node's tls and Python's ssl load. */
export async function exportPrivateKeyPem(key: CryptoKey): Promise<string> {
  return encodePem(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

/**
 * Classifies a key by algorithm and size, rejecting anything outside our policy.
 * `what` names the key in errors.
 */
export function keyTypeOf(key: KeyObject, what: string): KeyType {
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'ec' && details.namedCurve !== undefined) {
    if (ACCEPTED_CURVES.has(details.namedCurve)) return 'ec';
    throw new HypersealError('HS_ERR_PKI', `${what} uses unsupported curve ${details.namedCurve}`);
  }
  if (key.asymmetricKeyType === 'rsa' && details.modulusLength !== undefined) {
    if (details.modulusLength >= MIN_RSA_MODULUS_BITS) return 'rsa';
    throw new HypersealError(
      'HS_ERR_PKI',
      `${what} is RSA-${details.modulusLength}; at least 2048 bits needed`,
    );
  }
  throw new HypersealError('HS_ERR_PKI', `${what} must be an EC or RSA key`);
}

/** Parses a DER SubjectPublicKeyInfo and applies the key policy. */
export function inspectPublicKey(spkiDer: ArrayBuffer | Uint8Array, what: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.from(new Uint8Array(spkiDer)), format: 'der', type: 'spki' });
  } catch {
    throw new HypersealError('HS_ERR_PKI', `${what} is not a parseable public key`);
  }
  keyTypeOf(key, what);
  return key;
}

export interface SigningKey {
  readonly cryptoKey: CryptoKey;
  readonly keyType: KeyType;
  readonly publicKey: KeyObject;
}

/**
 * Imports a PKCS#8 PEM private key for signing. Only EC P-256 and RSA are accepted for
 * signing, matching the two signature algorithms we promise. Parse errors deliberately
 * carry no `cause`: low-level messages could quote key bytes.
 */
export async function importSigningKey(keyPem: unknown, what: string): Promise<SigningKey> {
  const der = decodePem(keyPem, 'PRIVATE KEY', what);
  let keyObject: KeyObject;
  try {
    keyObject = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  } catch {
    throw new HypersealError('HS_ERR_PKI', `${what} is not a valid PKCS#8 private key`);
  }
  const keyType = keyTypeOf(keyObject, what);
  if (keyType === 'ec' && keyObject.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new HypersealError('HS_ERR_PKI', `${what} must be on curve P-256 to sign`);
  }
  try {
    const cryptoKey = await webcrypto.subtle.importKey('pkcs8', der, keyImportParams(keyType), false, [
      'sign',
    ]);
    return { cryptoKey, keyType, publicKey: createPublicKey(keyObject) };
  } catch {
    throw new HypersealError('HS_ERR_PKI', `${what} could not be imported for signing`);
  }
}
