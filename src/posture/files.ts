/**
 * The files a posture refers to. Certificates (not secret) are read before planning, to
 * compare their fingerprints with what the manager has; private keys and webhook secrets
 * only when a change sends them, and never logged, printed or kept.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { HypersealError } from '../errors.js';
import type { Posture } from './schema.js';

const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;
const MAX_FILE_BYTES = 1024 * 1024;

/** Reads a referenced file; `where` names the posture path in the error (never the content). */
export function readReferenced(file: string, where: string): string {
  let text: string;
  try {
    const buf = readFileSync(file);
    if (buf.length > MAX_FILE_BYTES) throw new Error(`larger than ${MAX_FILE_BYTES} bytes`);
    text = buf.toString('utf8');
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ?? (err instanceof Error ? err.message : String(err));
    throw new HypersealError('HS_ERR_POSTURE_INVALID', `${where}: cannot read ${file} (${why})`, {
      path: where,
      file,
    });
  }
  return text;
}

/** SHA-256 fingerprints (lower-case hex, as the manager reports them) of a PEM bundle. */
export function pemFingerprints(pem: string, where: string): string[] {
  const blocks = pem.match(CERT_BLOCK) ?? [];
  if (blocks.length === 0) {
    throw new HypersealError('HS_ERR_POSTURE_INVALID', `${where}: the file holds no PEM certificate`, {
      path: where,
    });
  }
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b).fingerprint256.replace(/:/g, '').toLowerCase();
    } catch {
      throw new HypersealError(
        'HS_ERR_POSTURE_INVALID',
        `${where}: certificate ${i + 1} is not a parseable X.509 certificate`,
        { path: where },
      );
    }
  });
}

/** Fills caSha256 / clientCertSha256 of the key providers from their files. */
export function loadFingerprints(posture: Posture): void {
  for (const kp of posture.keyProviders ?? []) {
    if (kp.caFile !== undefined) {
      const where = `${kp.key}.caFile`;
      kp.caSha256 = pemFingerprints(readReferenced(kp.caFile, where), where);
    }
    if (kp.clientCertFile !== undefined) {
      const where = `${kp.key}.clientCertFile`;
      const fps = pemFingerprints(readReferenced(kp.clientCertFile, where), where);
      kp.clientCertSha256 = fps[0] as string;
    }
  }
}
