/** `hyperseal kmip …`: a KMIP 1.1 client for operators and scripts, against any key manager. */
import { readFileSync } from 'node:fs';
import { HypersealError } from '../errors.js';
import { attributeToJson } from '../kmip/attributes.js';
import { KmipClient } from '../kmip/client.js';
import {
  CryptographicAlgorithm,
  ObjectType,
  Operation,
  RevocationReasonCode,
  State,
  enumName,
} from '../kmip/enums.js';
import { flag, hostPort, int, need, parse, str, usageError } from './args.js';
import { printResult, table } from './output.js';

const USAGE =
  'hyperseal kmip --server HOST:PORT --ca CA.pem --cert C.pem --key C.key [--json] [--timeout-ms N] <op> [...]';

export const KMIP_HELP = `hyperseal kmip — KMIP 1.1 client
  ${USAGE}
  operations:
    discover                                   protocol versions the server speaks
    query                                      operations and object types it supports
    create [--algorithm AES] [--length 256] [--name N]
    get ID                                     prints the key's length and SHA-256 fingerprint, never the key
    activate ID
    revoke ID --reason cessation|superseded|key-compromise|unspecified|affiliation-changed|privilege-withdrawn [--message TEXT]
    destroy ID
    locate [--name N] [--state pre-active|active|deactivated|compromised|destroyed] [--algorithm AES] [--length BITS] [--max N]
    attributes ID                              every attribute of the object`;

/** Accepts a spec name in any case/spelling: 'pre-active', 'PreActive', 'PRE_ACTIVE'. */
function enumFromText(table: Readonly<Record<string, number>>, text: string, what: string): number {
  const norm = (s: string): string => s.replace(/[^a-z0-9]/gi, '').toLowerCase();
  const hit = Object.entries(table).find(([k]) => norm(k) === norm(text));
  if (hit === undefined) {
    throw usageError(`unknown ${what} '${text}' (one of: ${Object.keys(table).join(', ')})`);
  }
  return hit[1];
}

export async function kmipCommand(argv: string[]): Promise<number> {
  const p = parse(
    argv,
    {
      server: { type: 'string' },
      ca: { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
      json: { type: 'boolean' },
      'timeout-ms': { type: 'string' },
      'server-name': { type: 'string' },
      algorithm: { type: 'string' },
      length: { type: 'string' },
      name: { type: 'string' },
      reason: { type: 'string' },
      message: { type: 'string' },
      state: { type: 'string' },
      max: { type: 'string' },
    },
    USAGE,
  );
  const [op, id] = p.positionals;
  if (op === undefined) throw usageError(`an operation is required\n${KMIP_HELP}`);
  const { host, port } = hostPort(need(p, 'server', USAGE), 5696);
  const read = (name: string): Buffer => {
    const path = need(p, name, USAGE);
    try {
      return readFileSync(path);
    } catch (err) {
      throw usageError(`cannot read --${name} ${path}: ${(err as Error).message}`);
    }
  };
  const timeout = int(p, 'timeout-ms', 30_000) ?? 30_000;
  const serverName = str(p, 'server-name');
  const client = new KmipClient({
    host,
    port,
    ca: read('ca'),
    cert: read('cert'),
    key: read('key'),
    connectTimeoutMs: timeout,
    requestTimeoutMs: timeout,
    ...(serverName !== undefined ? { serverName } : {}),
  });
  const json = flag(p, 'json');
  const needId = (): string => {
    if (id === undefined) throw usageError(`'${op}' needs an object ID\n${KMIP_HELP}`);
    return id;
  };
  try {
    switch (op) {
      case 'discover': {
        const versions = await client.discoverVersions();
        printResult({ versions }, json, () => versions.map((v) => `${v.major}.${v.minor}`).join('\n'));
        return 0;
      }
      case 'query': {
        const q = await client.query();
        const result = {
          operations: q.operations.map((o) => enumName(Operation, o)),
          objectTypes: q.objectTypes.map((o) => enumName(ObjectType, o)),
          vendorIdentification: q.vendorIdentification ?? null,
        };
        printResult(result, json, () =>
          [
            `vendor:       ${result.vendorIdentification ?? '(not given)'}`,
            `operations:   ${result.operations.join(', ')}`,
            `object types: ${result.objectTypes.join(', ')}`,
          ].join('\n'),
        );
        return 0;
      }
      case 'create': {
        const algorithm = enumFromText(CryptographicAlgorithm, str(p, 'algorithm') ?? 'AES', 'algorithm');
        const lengthBits = int(p, 'length', 256) ?? 256;
        const name = str(p, 'name');
        const uid = await client.create({ algorithm, lengthBits, ...(name !== undefined ? { name } : {}) });
        printResult({ id: uid }, json, () => uid);
        return 0;
      }
      case 'get': {
        const key = await client.get(needId());
        const { createHash } = await import('node:crypto');
        const result = {
          id: key.uniqueIdentifier,
          algorithm: enumName(CryptographicAlgorithm, key.algorithm),
          lengthBits: key.lengthBits,
          materialBytes: key.material.length,
          sha256: createHash('sha256').update(key.material).digest('hex'),
        };
        key.material.fill(0);
        printResult(result, json, () =>
          table([
            ['id', result.id],
            ['algorithm', result.algorithm],
            ['length', `${result.lengthBits} bits`],
            ['sha256', result.sha256],
          ]),
        );
        return 0;
      }
      case 'activate':
      case 'destroy': {
        const uid = needId();
        await (op === 'activate' ? client.activate(uid) : client.destroy(uid));
        printResult(
          { id: uid, done: op },
          json,
          () => `${op === 'activate' ? 'activated' : 'destroyed'} ${uid}`,
        );
        return 0;
      }
      case 'revoke': {
        const uid = needId();
        // 'cessation' is the short name the help advertises for Cessation Of Operation.
        const reasonText = need(p, 'reason', USAGE);
        const reason = enumFromText(
          RevocationReasonCode,
          reasonText.toLowerCase() === 'cessation' ? 'CessationOfOperation' : reasonText,
          'revocation reason',
        );
        await client.revoke(uid, reason, str(p, 'message'));
        printResult(
          { id: uid, done: 'revoke', reason: enumName(RevocationReasonCode, reason) },
          json,
          () => `revoked ${uid}`,
        );
        return 0;
      }
      case 'locate': {
        const name = str(p, 'name');
        const state = str(p, 'state');
        const algorithm = str(p, 'algorithm');
        const lengthBits = int(p, 'length');
        const maxItems = int(p, 'max');
        const ids = await client.locate({
          ...(name !== undefined ? { name } : {}),
          ...(state !== undefined ? { state: enumFromText(State, state, 'state') } : {}),
          ...(algorithm !== undefined
            ? { algorithm: enumFromText(CryptographicAlgorithm, algorithm, 'algorithm') }
            : {}),
          ...(lengthBits !== undefined ? { lengthBits } : {}),
          ...(maxItems !== undefined ? { maxItems } : {}),
        });
        printResult({ ids }, json, () => ids.join('\n'));
        return 0;
      }
      case 'attributes': {
        const attributes = (await client.getAttributes(needId())).map(attributeToJson);
        const shown = attributes.map((a) => ({ ...a, value: describeValue(a.name, a.value) }));
        printResult({ attributes: shown }, json, () =>
          table(shown.map((a) => [a.index ? `${a.name}[${a.index}]` : a.name, String(a.value)])),
        );
        return 0;
      }
      default:
        throw usageError(`unknown kmip operation '${op}'\n${KMIP_HELP}`);
    }
  } finally {
    client.close();
  }
}

/** Spec names for enumerated attribute values in output. */
function describeValue(name: string, value: unknown): unknown {
  if (typeof value !== 'number') return value;
  switch (name) {
    case 'State':
      return enumName(State, value);
    case 'Object Type':
      return enumName(ObjectType, value);
    case 'Cryptographic Algorithm':
      return enumName(CryptographicAlgorithm, value);
    case 'Revocation Reason':
      return enumName(RevocationReasonCode, value);
    default:
      return value;
  }
}

export { HypersealError };
