/**
 * Strict PEM helpers. We parse PEM ourselves instead of handing strings to
 * @peculiar/x509, because that library also accepts hex/base64/DER and silently
 * takes the first of several blocks; for trust material we want exactly one block
 * of the expected type and a clear error otherwise.
 */
import { HypersealError } from '../errors.js';

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END ([A-Z0-9 ]+)-----/g;
const BASE64_BODY = /^[A-Za-z0-9+/]+={0,2}$/;
const LINE_LENGTH = 64;

/**
 * Decodes the single PEM block in `pem`, which must carry one of `label`. `what` names the input in
 * error messages (e.g. "CA private key"); the input itself is never echoed, since it
 * may be key material.
 */
export function decodePem(pem: unknown, label: string | readonly string[], what: string): Buffer {
  const labels: readonly string[] = typeof label === 'string' ? [label] : label;
  if (typeof pem !== 'string') {
    throw new HypersealError('HS_ERR_PKI', `${what} must be a PEM string`);
  }
  const blocks = [...pem.matchAll(PEM_BLOCK)];
  if (blocks.length !== 1) {
    throw new HypersealError(
      'HS_ERR_PKI',
      `${what} must contain exactly one PEM block (found ${blocks.length})`,
    );
  }
  const [, begin, body = '', end] = blocks[0] ?? [];
  if (begin === undefined || begin !== end || !labels.includes(begin)) {
    throw new HypersealError('HS_ERR_PKI', `${what} must be a PEM "${labels[0] ?? ''}" block`);
  }
  // Encapsulated headers (e.g. "Proc-Type: 4,ENCRYPTED") fail here too, which is what
  // we want: encrypted or legacy-format keys are not supported.
  const base64 = body.replace(/\s+/g, '');
  if (base64.length === 0 || base64.length % 4 !== 0 || !BASE64_BODY.test(base64)) {
    throw new HypersealError('HS_ERR_PKI', `${what} has a malformed PEM body`);
  }
  return Buffer.from(base64, 'base64');
}

/** Encodes DER as PEM with 64-column lines, the layout OpenSSL and Python expect. */
export function encodePem(der: ArrayBuffer | Uint8Array, label: string): string {
  const base64 = Buffer.from(der instanceof Uint8Array ? der : new Uint8Array(der)).toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < base64.length; i += LINE_LENGTH) {
    lines.push(base64.slice(i, i + LINE_LENGTH));
  }
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}
