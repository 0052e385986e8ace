/**
 * Key encryption keys on a key provider: AES-256 keys created and activated through KMIP,
 * fetched when a host needs them, revoked and destroyed only for crypto-shredding.
 *
 * Round trips: createKek is one KMIP message (Create, then Activate through the ID
 * placeholder) on servers that take it, as ours does, and two elsewhere (PyKMIP: see
 * createKek); destroyKek is one (Revoke, Destroy); fetchKeks is one message for up to
 * FETCH_BATCH keys.
 *
 * KMIP refusals become codes an operator can act on: Item Not Found is
 * HS_ERR_KEY_NOT_FOUND (the key was destroyed, never existed there, or is not visible to
 * the manager's identity), every other refusal HS_ERR_KEY_PROVIDER_REFUSED with the
 * server's result reason. Key material never enters a message, an error or a trace.
 */
import type { ErrorCode } from '../errors.js';
import { HypersealError } from '../errors.js';
import { attr, decodeSymmetricKey, encodeAttribute } from '../kmip/attributes.js';
import { kmipFailure } from '../kmip/client.js';
import {
  CryptographicAlgorithm,
  CryptographicUsageMask,
  ObjectType,
  Operation,
  ResultReason,
  ResultStatus,
  RevocationReasonCode,
  enumName,
} from '../kmip/enums.js';
import type { ResponseBatchItem } from '../kmip/messages.js';
import { required } from '../kmip/messages.js';
import { Tag } from '../kmip/tags.js';
import type { TtlvItem } from '../kmip/ttlv.js';
import { ttlv } from '../kmip/ttlv.js';
import type { KmipCluster } from './cluster.js';
import type { BatchItem, BatchOptions } from './session.js';

export const KEK_LENGTH_BITS = 256;
export const KEK_USAGE_MASK =
  CryptographicUsageMask.WrapKey |
  CryptographicUsageMask.UnwrapKey |
  CryptographicUsageMask.Encrypt |
  CryptographicUsageMask.Decrypt;

/** Gets per KMIP message in fetchKeks: ~150 bytes of answer each, far below 1 MiB. */
export const FETCH_BATCH = 256;

/** Who asks, for messages: the provider's name and the client identity (certificate CN). */
export interface KekContext {
  cluster: KmipCluster;
  identity: string | null;
}

const uid = (id: string): TtlvItem => ttlv.text(Tag.UniqueIdentifier, id);

/** The KMIP failure codes (kmipFailure) that are refusals, not transport problems. */
const REFUSALS: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'HS_ERR_KMIP_PERMISSION_DENIED',
  'HS_ERR_KMIP_ILLEGAL_OPERATION',
  'HS_ERR_KMIP_OPERATION_FAILED',
  'HS_ERR_KMIP_AUTHENTICATION',
  'HS_ERR_KMIP_INVALID_REQUEST',
  'HS_ERR_KMIP_UNSUPPORTED',
]);

/** Turns a KMIP-level error into the key-level one; other errors pass unchanged. */
export function keyError(
  ctx: KekContext,
  operation: string,
  keyId: string | undefined,
  err: unknown,
): unknown {
  if (!(err instanceof HypersealError)) return err;
  const provider = ctx.cluster.name;
  const details = {
    provider,
    ...(keyId !== undefined ? { keyId } : {}),
    operation,
    kmipCode: err.code,
    ...(typeof err.details?.['resultReason'] === 'string'
      ? { resultReason: err.details['resultReason'] }
      : {}),
    ...(typeof err.details?.['server'] === 'string' ? { server: err.details['server'] } : {}),
  };
  const who = ctx.identity === null ? "the manager's identity" : `identity '${ctx.identity}'`;
  if (err.code === 'HS_ERR_KMIP_ITEM_NOT_FOUND') {
    return new HypersealError(
      'HS_ERR_KEY_NOT_FOUND',
      `key provider '${provider}' has no key ${keyId ?? '(new)'} (${operation}): it was destroyed, ` +
        `never existed there, or is not visible to ${who}`,
      details,
      { cause: err },
    );
  }
  if (REFUSALS.has(err.code)) {
    return new HypersealError(
      'HS_ERR_KEY_PROVIDER_REFUSED',
      `key provider '${provider}' refused ${operation}${keyId !== undefined ? ` of key ${keyId}` : ''} ` +
        `for ${who}: ${err.message}`,
      details,
      { cause: err },
    );
  }
  return err;
}

function failed(item: ResponseBatchItem): boolean {
  return item.resultStatus !== ResultStatus.Success;
}

/** Sends one batch through the cluster; `address` is the server that answered. */
async function send(
  ctx: KekContext,
  what: string,
  items: BatchItem[],
  opts: BatchOptions = {},
): Promise<{ results: (ResponseBatchItem | undefined)[]; address: string }> {
  let address = '';
  const results = await ctx.cluster.run(what, (s) => {
    address = s.address;
    return s.batch(items, opts);
  });
  return { results, address };
}

function createPayload(name: string | undefined): TtlvItem[] {
  const attributes = [
    attr.cryptographicAlgorithm(CryptographicAlgorithm.AES),
    attr.cryptographicLength(KEK_LENGTH_BITS),
    attr.cryptographicUsageMask(KEK_USAGE_MASK),
    ...(name !== undefined ? [attr.name(name)] : []),
  ];
  return [
    ttlv.enum(Tag.ObjectType, ObjectType.SymmetricKey),
    ttlv.struct(Tag.TemplateAttribute, attributes.map(encodeAttribute)),
  ];
}

/**
 * Creates an AES-256 KEK and activates it; returns its Unique Identifier.
 *
 * One message (Create, then Activate through the ID placeholder) where the server takes
 * it, as ours does. PyKMIP 0.10 implements the placeholder in its engine, but its parser
 * requires a Unique Identifier in every Activate payload, so it rejects the whole message
 * as Invalid Message (nothing was created); the cluster then remembers to send Create and
 * Activate as two messages.
 */
export async function createKek(ctx: KekContext, opts: { name?: string } = {}): Promise<string> {
  const { cluster } = ctx;
  if (cluster.features.idPlaceholder !== false) {
    const { results, address } = await send(ctx, 'Create + Activate', [
      { operation: Operation.Create, payload: createPayload(opts.name) },
      // No Unique Identifier: the ID placeholder, i.e. the key the Create just made.
      { operation: Operation.Activate, payload: [] },
    ]);
    const [create, activate] = results;
    if (create === undefined) throw noAnswer(ctx, address, 'Create');
    const unparsed =
      failed(create) &&
      create.resultReason === ResultReason.InvalidMessage &&
      activate !== undefined &&
      failed(activate) &&
      activate.resultReason === ResultReason.InvalidMessage;
    if (!unparsed) {
      if (failed(create))
        throw keyError(ctx, 'Create', undefined, kmipFailure(address, Operation.Create, create));
      const keyId = createdId(create);
      cluster.features.idPlaceholder = true;
      if (activate !== undefined && !failed(activate)) return keyId;
      // Not run, or refused through the placeholder: once more by id.
      return activateOrDiscard(ctx, keyId);
    }
    cluster.features.idPlaceholder = false;
  }
  const { results, address } = await send(ctx, 'Create', [
    { operation: Operation.Create, payload: createPayload(opts.name) },
  ]);
  const [create] = results;
  if (create === undefined) throw noAnswer(ctx, address, 'Create');
  if (failed(create))
    throw keyError(ctx, 'Create', undefined, kmipFailure(address, Operation.Create, create));
  return activateOrDiscard(ctx, createdId(create));
}

function createdId(create: ResponseBatchItem): string {
  return required(create.payload ?? [], Tag.UniqueIdentifier, 'TextString', 'Create response').value;
}

function noAnswer(ctx: KekContext, address: string, operation: string): HypersealError {
  return new HypersealError(
    'HS_ERR_KMIP_BAD_RESPONSE',
    `key provider '${ctx.cluster.name}' (${address}) did not answer ${operation}`,
  );
}

async function activateOrDiscard(ctx: KekContext, keyId: string): Promise<string> {
  try {
    await ctx.cluster.run('Activate', (s) => s.call(Operation.Activate, [uid(keyId)]));
    return keyId;
  } catch (err) {
    // A Pre-Active key is useless to us and may be destroyed without a Revoke.
    await ctx.cluster.run('Destroy', (s) => s.call(Operation.Destroy, [uid(keyId)])).catch(() => undefined);
    throw keyError(ctx, 'Activate', keyId, err);
  }
}

/** Checks a Get answer and returns the 32-byte key; zeroizes and throws otherwise. */
function keyFromGet(ctx: KekContext, keyId: string, payload: TtlvItem[]): Buffer {
  const objectType = required(payload, Tag.ObjectType, 'Enumeration', 'Get response').value;
  if (objectType !== ObjectType.SymmetricKey) {
    throw new HypersealError(
      'HS_ERR_KEY_UNUSABLE',
      `key ${keyId} on key provider '${ctx.cluster.name}' is a ${enumName(ObjectType, objectType)}, not a symmetric key`,
      { provider: ctx.cluster.name, keyId },
    );
  }
  const key = decodeSymmetricKey(required(payload, Tag.SymmetricKey, 'Structure', 'Get response'));
  const bits = key.material.length * 8;
  if (key.algorithm !== CryptographicAlgorithm.AES || bits !== KEK_LENGTH_BITS) {
    key.material.fill(0);
    throw new HypersealError(
      'HS_ERR_KEY_UNUSABLE',
      `key ${keyId} on key provider '${ctx.cluster.name}' is ${enumName(CryptographicAlgorithm, key.algorithm)} ` +
        `with ${bits} bits of material, not an AES-256 key`,
      { provider: ctx.cluster.name, keyId },
    );
  }
  return key.material;
}

/** The KEK's 32 bytes. The caller owns the buffer and must zeroize it. */
export async function fetchKek(ctx: KekContext, keyId: string): Promise<Buffer> {
  const { results, address } = await send(ctx, 'Get', [{ operation: Operation.Get, payload: [uid(keyId)] }]);
  const [item] = results;
  if (item === undefined) throw noAnswer(ctx, address, 'Get');
  if (failed(item)) throw keyError(ctx, 'Get', keyId, kmipFailure(address, Operation.Get, item));
  return keyFromGet(ctx, keyId, item.payload ?? []);
}

export interface FetchedKeks {
  /** keyId → 32-byte key; the caller owns every buffer and must zeroize them. */
  keys: Map<string, Buffer>;
  /** keyId → why it could not be had (HS_ERR_KEY_NOT_FOUND, HS_ERR_KEY_PROVIDER_REFUSED, …). */
  errors: Map<string, HypersealError>;
}

/**
 * Fetches several KEKs in one message per FETCH_BATCH keys, asking the server to go on
 * after a failure (Batch Error Continuation Option Continue), so one missing key does not
 * fail the others. Items a server did not run anyway (it stopped the batch, or answered
 * them as cancelled) are sent again in the next message.
 */
export async function fetchKeks(ctx: KekContext, keyIds: readonly string[]): Promise<FetchedKeks> {
  const out: FetchedKeks = { keys: new Map(), errors: new Map() };
  let pending = [...new Set(keyIds)];
  try {
    while (pending.length > 0) {
      const chunk = pending.slice(0, FETCH_BATCH);
      const rest = pending.slice(FETCH_BATCH);
      const { results, address } = await send(
        ctx,
        `Get of ${chunk.length} key${chunk.length === 1 ? '' : 's'}`,
        chunk.map((id) => ({ operation: Operation.Get, payload: [uid(id)] })),
        { continueOnError: true },
      );
      const again: string[] = [];
      let answered = 0;
      chunk.forEach((id, i) => {
        const item = results[i];
        if (
          item === undefined ||
          (failed(item) && item.resultReason === ResultReason.OperationCanceledByRequester)
        ) {
          again.push(id);
          return;
        }
        answered++;
        if (failed(item)) {
          out.errors.set(
            id,
            keyError(ctx, 'Get', id, kmipFailure(address, Operation.Get, item)) as HypersealError,
          );
          return;
        }
        try {
          out.keys.set(id, keyFromGet(ctx, id, item.payload ?? []));
        } catch (err) {
          if (!(err instanceof HypersealError)) throw err;
          out.errors.set(id, err);
        }
      });
      if (answered === 0) throw noAnswer(ctx, address, `Get of ${chunk.length} keys`);
      pending = [...again, ...rest];
    }
  } catch (err) {
    for (const k of out.keys.values()) k.fill(0);
    throw err;
  }
  return out;
}

/**
 * Revokes (Cessation of Operation) and destroys a KEK: crypto-shredding. One message,
 * with Continue, so a key that was not Active (Pre-Active, already revoked: the Revoke is
 * refused) is destroyed all the same. An unknown or already destroyed key is
 * HS_ERR_KEY_NOT_FOUND.
 */
export async function destroyKek(ctx: KekContext, keyId: string): Promise<void> {
  const revokePayload = [
    uid(keyId),
    ttlv.struct(Tag.RevocationReason, [
      ttlv.enum(Tag.RevocationReasonCode, RevocationReasonCode.CessationOfOperation),
    ]),
  ];
  const { results, address } = await send(
    ctx,
    'Revoke + Destroy',
    [
      { operation: Operation.Revoke, payload: revokePayload },
      { operation: Operation.Destroy, payload: [uid(keyId)] },
    ],
    { continueOnError: true },
  );
  const [revoke, destroy] = results;
  if (revoke === undefined) throw noAnswer(ctx, address, 'Revoke');
  if (failed(revoke) && revoke.resultReason !== ResultReason.PermissionDenied) {
    // Item Not Found, and anything but "not Active", end here.
    throw keyError(ctx, 'Revoke', keyId, kmipFailure(address, Operation.Revoke, revoke));
  }
  if (destroy !== undefined && !failed(destroy)) return;
  if (destroy === undefined || destroy.resultReason === ResultReason.OperationCanceledByRequester) {
    // A server that stopped the batch at the refused Revoke after all: destroy alone.
    try {
      await ctx.cluster.run('Destroy', (s) => s.call(Operation.Destroy, [uid(keyId)]));
      return;
    } catch (err) {
      throw keyError(ctx, 'Destroy', keyId, err);
    }
  }
  throw keyError(ctx, 'Destroy', keyId, kmipFailure(address, Operation.Destroy, destroy));
}
