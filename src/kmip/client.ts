/**
 * KMIP 1.1 client: typed operations over one persistent, pipelined TLS connection.
 * Failures come back as HypersealErrors whose code reflects the KMIP Result Reason and
 * whose message names the operation, the server and the server's own words.
 */
import type { ErrorCode } from '../errors.js';
import { HypersealError } from '../errors.js';
import { trace, traceEnabled } from '../trace.js';
import type { KmipAttribute, SymmetricKeyValue } from './attributes.js';
import {
  attr,
  decodeAttributes,
  decodeSymmetricKey,
  encodeAttribute,
  encodeSymmetricKey,
} from './attributes.js';
import {
  CryptographicAlgorithm,
  CryptographicUsageMask,
  ObjectType,
  Operation,
  QueryFunction,
  ResultReason,
  ResultStatus,
  enumName,
} from './enums.js';
import type { ProtocolVersion, RequestBatchItem, ResponseBatchItem, ResponseMessage } from './messages.js';
import {
  KMIP_1_1,
  all,
  decodeResponse,
  decodeVersion,
  encodeRequest,
  encodeVersion,
  optional,
  required,
} from './messages.js';
import { Tag } from './tags.js';
import type { TtlvItem } from './ttlv.js';
import { decodeTtlv, describeTtlv, encodeTtlv, ttlv } from './ttlv.js';
import type { KmipTlsOptions } from './transport.js';
import { KmipConnection } from './transport.js';

export type KmipClientOptions = KmipTlsOptions & { protocolVersion?: ProtocolVersion };

export interface CreateSymmetricKeyRequest {
  algorithm?: number;
  lengthBits?: number;
  name?: string;
  usageMask?: number;
  extraAttributes?: KmipAttribute[];
}

export interface ManagedSymmetricKey extends SymmetricKeyValue {
  uniqueIdentifier: string;
  objectType: number;
}

export interface LocateRequest {
  name?: string;
  objectType?: number;
  state?: number;
  algorithm?: number;
  lengthBits?: number;
  maxItems?: number;
}

export interface QueryResult {
  operations: number[];
  objectTypes: number[];
  vendorIdentification?: string;
}

/** Operations safe to resend after the server dropped an idle connection. */
const IDEMPOTENT = new Set<number>([
  Operation.Get,
  Operation.GetAttributes,
  Operation.GetAttributeList,
  Operation.Locate,
  Operation.Query,
  Operation.DiscoverVersions,
]);

const REASON_CODES: Partial<Record<number, ErrorCode>> = {
  [ResultReason.ItemNotFound]: 'HS_ERR_KMIP_ITEM_NOT_FOUND',
  [ResultReason.PermissionDenied]: 'HS_ERR_KMIP_PERMISSION_DENIED',
  [ResultReason.IllegalOperation]: 'HS_ERR_KMIP_ILLEGAL_OPERATION',
  [ResultReason.AuthenticationNotSuccessful]: 'HS_ERR_KMIP_AUTHENTICATION',
  [ResultReason.OperationNotSupported]: 'HS_ERR_KMIP_UNSUPPORTED',
  [ResultReason.FeatureNotSupported]: 'HS_ERR_KMIP_UNSUPPORTED',
  [ResultReason.KeyFormatTypeNotSupported]: 'HS_ERR_KMIP_UNSUPPORTED',
  [ResultReason.KeyCompressionTypeNotSupported]: 'HS_ERR_KMIP_UNSUPPORTED',
  [ResultReason.InvalidField]: 'HS_ERR_KMIP_INVALID_REQUEST',
  [ResultReason.MissingData]: 'HS_ERR_KMIP_INVALID_REQUEST',
  [ResultReason.IndexOutOfBounds]: 'HS_ERR_KMIP_INVALID_REQUEST',
};

/** A malformed answer is the server's fault, not the caller's: report it as such. */
function decodeAnswer(address: string, frame: Buffer): ResponseMessage {
  try {
    const root = decodeTtlv(frame);
    if (traceEnabled('kmip')) trace('kmip', 'response', { address, ttlv: describeTtlv(root) });
    return decodeResponse(root);
  } catch (err) {
    if (err instanceof HypersealError && err.code.startsWith('HS_ERR_KMIP_')) {
      throw new HypersealError(
        'HS_ERR_KMIP_BAD_RESPONSE',
        `${address} sent an invalid KMIP response: ${err.message}`,
        {
          cause: err.code,
        },
      );
    }
    throw err;
  }
}

/** Turns a failed batch item into the error our callers handle. */
export function kmipFailure(address: string, operation: number, item: ResponseBatchItem): HypersealError {
  const reason = item.resultReason ?? ResultReason.GeneralFailure;
  const reasonName = enumName(ResultReason, reason);
  const opName = enumName(Operation, operation);
  const status = enumName(ResultStatus, item.resultStatus);
  const text = item.resultMessage ? `: ${item.resultMessage}` : '';
  return new HypersealError(
    REASON_CODES[reason] ?? 'HS_ERR_KMIP_OPERATION_FAILED',
    `KMIP ${opName} on ${address} failed (${status}, ${reasonName})${text}`,
    { operation: opName, resultStatus: status, resultReason: reasonName, server: address },
  );
}

export class KmipClient {
  private readonly connection: KmipConnection;
  private readonly version: ProtocolVersion;

  constructor(opts: KmipClientOptions) {
    this.connection = new KmipConnection(opts);
    this.version = opts.protocolVersion ?? KMIP_1_1;
  }

  get address(): string {
    return this.connection.address;
  }

  close(): void {
    this.connection.close();
  }

  /**
   * Sends one message with the given batch items and returns their results in order.
   * Failed items are returned, not thrown: callers of batches decide.
   */
  async batch(items: { operation: number; payload: TtlvItem[] }[]): Promise<ResponseBatchItem[]> {
    const batchItems: RequestBatchItem[] = items.map((i, n) =>
      items.length > 1 ? { ...i, uniqueBatchItemId: Buffer.from([n + 1]) } : i,
    );
    const frame = encodeTtlv(encodeRequest({ protocolVersion: this.version, batchItems }));
    const retryable = items.every((i) => IDEMPOTENT.has(i.operation));
    let response: Buffer;
    try {
      response = await this.connection.roundTrip(frame);
    } catch (err) {
      if (!retryable || !(err instanceof HypersealError) || err.code !== 'HS_ERR_KMIP_CONNECTION_CLOSED')
        throw err;
      response = await this.connection.roundTrip(frame);
    }
    const msg = decodeAnswer(this.address, response);
    if (msg.batchItems.length !== items.length) {
      // PyKMIP answers a message it cannot parse with one unattributed failure item.
      const only = msg.batchItems[0];
      if (msg.batchItems.length === 1 && only !== undefined && only.resultStatus !== ResultStatus.Success) {
        return items.map(() => only);
      }
      throw new HypersealError(
        'HS_ERR_KMIP_BAD_RESPONSE',
        `${this.address} answered ${msg.batchItems.length} batch items to ${items.length}`,
      );
    }
    if (items.length === 1) return msg.batchItems;
    // Match by Unique Batch Item ID: the server may reorder only if we allowed it, but be exact anyway.
    return batchItems.map((b) => {
      const found = msg.batchItems.find((r) => r.uniqueBatchItemId?.equals(b.uniqueBatchItemId as Buffer));
      if (found === undefined) {
        throw new HypersealError(
          'HS_ERR_KMIP_BAD_RESPONSE',
          `${this.address} did not answer every batch item`,
        );
      }
      return found;
    });
  }

  /** One operation; throws on failure, returns the response payload on success. */
  async call(operation: number, payload: TtlvItem[]): Promise<TtlvItem[]> {
    const [item] = await this.batch([{ operation, payload }]);
    if (item === undefined)
      throw new HypersealError('HS_ERR_KMIP_BAD_RESPONSE', `${this.address} sent an empty response`);
    if (item.resultStatus !== ResultStatus.Success) throw kmipFailure(this.address, operation, item);
    return item.payload ?? [];
  }

  async discoverVersions(versions: ProtocolVersion[] = []): Promise<ProtocolVersion[]> {
    const out = await this.call(Operation.DiscoverVersions, versions.map(encodeVersion));
    return all(out, Tag.ProtocolVersion, 'Structure').map(decodeVersion);
  }

  async query(
    functions: number[] = [
      QueryFunction.QueryOperations,
      QueryFunction.QueryObjects,
      QueryFunction.QueryServerInformation,
    ],
  ): Promise<QueryResult> {
    const out = await this.call(
      Operation.Query,
      functions.map((f) => ttlv.enum(Tag.QueryFunction, f)),
    );
    const result: QueryResult = {
      operations: all(out, Tag.Operation, 'Enumeration').map((i) => i.value),
      objectTypes: all(out, Tag.ObjectType, 'Enumeration').map((i) => i.value),
    };
    const vendor = optional(out, Tag.VendorIdentification, 'TextString');
    if (vendor !== undefined) result.vendorIdentification = vendor.value;
    return result;
  }

  /** Creates a symmetric key (AES-256 for Encrypt|Decrypt by default); returns its Unique Identifier. */
  async create(req: CreateSymmetricKeyRequest = {}): Promise<string> {
    const attributes = [
      attr.cryptographicAlgorithm(req.algorithm ?? CryptographicAlgorithm.AES),
      attr.cryptographicLength(req.lengthBits ?? 256),
      attr.cryptographicUsageMask(
        req.usageMask ?? CryptographicUsageMask.Encrypt | CryptographicUsageMask.Decrypt,
      ),
      ...(req.name !== undefined ? [attr.name(req.name)] : []),
      ...(req.extraAttributes ?? []),
    ];
    const out = await this.call(Operation.Create, [
      ttlv.enum(Tag.ObjectType, ObjectType.SymmetricKey),
      ttlv.struct(Tag.TemplateAttribute, attributes.map(encodeAttribute)),
    ]);
    return required(out, Tag.UniqueIdentifier, 'TextString', 'Create response').value;
  }

  /** Registers existing key material as a managed Symmetric Key. */
  async register(key: SymmetricKeyValue, attributes: KmipAttribute[] = []): Promise<string> {
    const out = await this.call(Operation.Register, [
      ttlv.enum(Tag.ObjectType, ObjectType.SymmetricKey),
      ttlv.struct(Tag.TemplateAttribute, attributes.map(encodeAttribute)),
      encodeSymmetricKey(key),
    ]);
    return required(out, Tag.UniqueIdentifier, 'TextString', 'Register response').value;
  }

  /** Fetches a symmetric key. The caller owns `material` and should zeroise it when done. */
  async get(uniqueIdentifier: string): Promise<ManagedSymmetricKey> {
    const out = await this.call(Operation.Get, [ttlv.text(Tag.UniqueIdentifier, uniqueIdentifier)]);
    const objectType = required(out, Tag.ObjectType, 'Enumeration', 'Get response').value;
    if (objectType !== ObjectType.SymmetricKey) {
      throw new HypersealError(
        'HS_ERR_KMIP_UNSUPPORTED',
        `object ${uniqueIdentifier} is a ${enumName(ObjectType, objectType)}, not a Symmetric Key`,
      );
    }
    const key = decodeSymmetricKey(required(out, Tag.SymmetricKey, 'Structure', 'Get response'));
    return {
      ...key,
      uniqueIdentifier: required(out, Tag.UniqueIdentifier, 'TextString', 'Get response').value,
      objectType,
    };
  }

  async getAttributes(uniqueIdentifier: string, names: string[] = []): Promise<KmipAttribute[]> {
    const out = await this.call(Operation.GetAttributes, [
      ttlv.text(Tag.UniqueIdentifier, uniqueIdentifier),
      ...names.map((n) => ttlv.text(Tag.AttributeName, n)),
    ]);
    return decodeAttributes(out);
  }

  async getAttributeList(uniqueIdentifier: string): Promise<string[]> {
    const out = await this.call(Operation.GetAttributeList, [
      ttlv.text(Tag.UniqueIdentifier, uniqueIdentifier),
    ]);
    return all(out, Tag.AttributeName, 'TextString').map((i) => i.value);
  }

  async addAttribute(uniqueIdentifier: string, attribute: KmipAttribute): Promise<void> {
    await this.call(Operation.AddAttribute, [
      ttlv.text(Tag.UniqueIdentifier, uniqueIdentifier),
      encodeAttribute(attribute),
    ]);
  }

  async modifyAttribute(uniqueIdentifier: string, attribute: KmipAttribute): Promise<void> {
    await this.call(Operation.ModifyAttribute, [
      ttlv.text(Tag.UniqueIdentifier, uniqueIdentifier),
      encodeAttribute(attribute),
    ]);
  }

  async activate(uniqueIdentifier: string): Promise<void> {
    await this.call(Operation.Activate, [ttlv.text(Tag.UniqueIdentifier, uniqueIdentifier)]);
  }

  async revoke(uniqueIdentifier: string, reasonCode: number, message?: string): Promise<void> {
    const reason = [ttlv.enum(Tag.RevocationReasonCode, reasonCode)];
    if (message !== undefined) reason.push(ttlv.text(Tag.RevocationMessage, message));
    await this.call(Operation.Revoke, [
      ttlv.text(Tag.UniqueIdentifier, uniqueIdentifier),
      ttlv.struct(Tag.RevocationReason, reason),
    ]);
  }

  async destroy(uniqueIdentifier: string): Promise<void> {
    await this.call(Operation.Destroy, [ttlv.text(Tag.UniqueIdentifier, uniqueIdentifier)]);
  }

  async locate(req: LocateRequest = {}): Promise<string[]> {
    const payload: TtlvItem[] = [];
    if (req.maxItems !== undefined) payload.push(ttlv.int(Tag.MaximumItems, req.maxItems));
    const attributes: KmipAttribute[] = [];
    if (req.objectType !== undefined) attributes.push(attr.objectType(req.objectType));
    if (req.name !== undefined) attributes.push(attr.name(req.name));
    if (req.state !== undefined) attributes.push(attr.state(req.state));
    if (req.algorithm !== undefined) attributes.push(attr.cryptographicAlgorithm(req.algorithm));
    if (req.lengthBits !== undefined) attributes.push(attr.cryptographicLength(req.lengthBits));
    payload.push(...attributes.map(encodeAttribute));
    const out = await this.call(Operation.Locate, payload);
    return all(out, Tag.UniqueIdentifier, 'TextString').map((i) => i.value);
  }
}
