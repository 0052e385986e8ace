/**
 * KMIP request and response messages (spec §7): headers, batch items, result fields.
 * Payloads stay TTLV structures here; `operations.ts` gives them meaning. Pure, no I/O.
 */
import { HypersealError } from '../errors.js';
import { ResultStatus } from './enums.js';
import { Tag, tagName } from './tags.js';
import type { ItemTypeName, TtlvItem, TtlvOf } from './ttlv.js';
import { ttlv } from './ttlv.js';

export interface ProtocolVersion {
  major: number;
  minor: number;
}
export const KMIP_1_1: ProtocolVersion = { major: 1, minor: 1 };
export const KMIP_1_0: ProtocolVersion = { major: 1, minor: 0 };

export interface RequestBatchItem {
  operation: number;
  uniqueBatchItemId?: Buffer;
  payload: TtlvItem[];
}

export interface RequestMessage {
  protocolVersion: ProtocolVersion;
  maximumResponseSize?: number;
  /** Username from a Username-and-Password credential, if one was sent (PyKMIP always sends an empty one). */
  username?: string;
  batchErrorContinuation?: number;
  batchOrder?: boolean;
  timeStamp?: number;
  batchItems: RequestBatchItem[];
}

export interface ResponseBatchItem {
  /** Absent when the server could not parse the request (PyKMIP omits it then). */
  operation?: number;
  uniqueBatchItemId?: Buffer;
  resultStatus: number;
  resultReason?: number;
  resultMessage?: string;
  payload?: TtlvItem[];
}

export interface ResponseMessage {
  protocolVersion: ProtocolVersion;
  timeStamp: number;
  batchItems: ResponseBatchItem[];
}

// ---------------------------------------------------------------------------------------
// Structure access with precise errors: a request that is valid TTLV but not a valid
// message must produce Invalid Message naming the missing or mistyped field.

export function badMessage(message: string): HypersealError {
  return new HypersealError('HS_ERR_KMIP_BAD_MESSAGE', message);
}

export function children(item: TtlvItem | undefined, where: string): TtlvItem[] {
  if (item === undefined) return [];
  if (item.type !== 'Structure') throw badMessage(`${where} must be a Structure`);
  return item.value;
}

export function optional<T extends ItemTypeName>(
  items: TtlvItem[],
  tag: number,
  type: T,
): TtlvOf<T> | undefined {
  const found = items.find((i) => i.tag === tag);
  if (found === undefined) return undefined;
  if (found.type !== type) throw badMessage(`${tagName(tag)} must be ${type}, got ${found.type}`);
  return found as TtlvOf<T>;
}

export function required<T extends ItemTypeName>(
  items: TtlvItem[],
  tag: number,
  type: T,
  where: string,
): TtlvOf<T> {
  const found = optional(items, tag, type);
  if (found === undefined) throw badMessage(`${where} is missing ${tagName(tag)}`);
  return found;
}

export function all<T extends ItemTypeName>(items: TtlvItem[], tag: number, type: T): TtlvOf<T>[] {
  return items
    .filter((i) => i.tag === tag)
    .map((i) => {
      if (i.type !== type) throw badMessage(`${tagName(tag)} must be ${type}, got ${i.type}`);
      return i as TtlvOf<T>;
    });
}

function encodeVersion(v: ProtocolVersion): TtlvItem {
  return ttlv.struct(Tag.ProtocolVersion, [
    ttlv.int(Tag.ProtocolVersionMajor, v.major),
    ttlv.int(Tag.ProtocolVersionMinor, v.minor),
  ]);
}

export function decodeVersion(item: TtlvItem): ProtocolVersion {
  const c = children(item, 'Protocol Version');
  return {
    major: required(c, Tag.ProtocolVersionMajor, 'Integer', 'Protocol Version').value,
    minor: required(c, Tag.ProtocolVersionMinor, 'Integer', 'Protocol Version').value,
  };
}
export { encodeVersion };

// ---------------------------------------------------------------------------------------
// Requests

export function encodeRequest(msg: RequestMessage): TtlvItem {
  const header: TtlvItem[] = [encodeVersion(msg.protocolVersion)];
  if (msg.maximumResponseSize !== undefined)
    header.push(ttlv.int(Tag.MaximumResponseSize, msg.maximumResponseSize));
  if (msg.batchErrorContinuation !== undefined) {
    header.push(ttlv.enum(Tag.BatchErrorContinuationOption, msg.batchErrorContinuation));
  }
  if (msg.batchOrder !== undefined) header.push(ttlv.bool(Tag.BatchOrderOption, msg.batchOrder));
  if (msg.timeStamp !== undefined) header.push(ttlv.date(Tag.TimeStamp, msg.timeStamp));
  header.push(ttlv.int(Tag.BatchCount, msg.batchItems.length));
  return ttlv.struct(Tag.RequestMessage, [
    ttlv.struct(Tag.RequestHeader, header),
    ...msg.batchItems.map((b) => {
      const item: TtlvItem[] = [ttlv.enum(Tag.Operation, b.operation)];
      if (b.uniqueBatchItemId !== undefined)
        item.push(ttlv.bytes(Tag.UniqueBatchItemId, b.uniqueBatchItemId));
      item.push(ttlv.struct(Tag.RequestPayload, b.payload));
      return ttlv.struct(Tag.BatchItem, item);
    }),
  ]);
}

export function decodeRequest(root: TtlvItem): RequestMessage {
  if (root.tag !== Tag.RequestMessage) throw badMessage(`expected Request Message, got ${tagName(root.tag)}`);
  const top = children(root, 'Request Message');
  const header = children(required(top, Tag.RequestHeader, 'Structure', 'Request Message'), 'Request Header');
  const msg: RequestMessage = {
    protocolVersion: decodeVersion(required(header, Tag.ProtocolVersion, 'Structure', 'Request Header')),
    batchItems: [],
  };
  const maxSize = optional(header, Tag.MaximumResponseSize, 'Integer');
  if (maxSize !== undefined) msg.maximumResponseSize = maxSize.value;
  const auth = optional(header, Tag.Authentication, 'Structure');
  if (auth !== undefined) {
    const cred = children(required(auth.value, Tag.Credential, 'Structure', 'Authentication'), 'Credential');
    const value = optional(cred, Tag.CredentialValue, 'Structure');
    const user = value && optional(value.value, Tag.Username, 'TextString');
    if (user !== undefined) msg.username = user.value;
  }
  const cont = optional(header, Tag.BatchErrorContinuationOption, 'Enumeration');
  if (cont !== undefined) msg.batchErrorContinuation = cont.value;
  const order = optional(header, Tag.BatchOrderOption, 'Boolean');
  if (order !== undefined) msg.batchOrder = order.value;
  const ts = optional(header, Tag.TimeStamp, 'DateTime');
  if (ts !== undefined) msg.timeStamp = ts.value;
  const count = required(header, Tag.BatchCount, 'Integer', 'Request Header').value;
  const items = all(top, Tag.BatchItem, 'Structure');
  if (items.length !== count)
    throw badMessage(`Batch Count says ${count} but ${items.length} batch items follow`);
  if (count < 1) throw badMessage('a request needs at least one batch item');
  for (const b of items) {
    const item: RequestBatchItem = {
      operation: required(b.value, Tag.Operation, 'Enumeration', 'Batch Item').value,
      payload: children(required(b.value, Tag.RequestPayload, 'Structure', 'Batch Item'), 'Request Payload'),
    };
    const id = optional(b.value, Tag.UniqueBatchItemId, 'ByteString');
    if (id !== undefined) item.uniqueBatchItemId = id.value;
    else if (count > 1) throw badMessage('Unique Batch Item ID is required when Batch Count > 1');
    msg.batchItems.push(item);
  }
  return msg;
}

// ---------------------------------------------------------------------------------------
// Responses

export function encodeResponse(msg: ResponseMessage): TtlvItem {
  return ttlv.struct(Tag.ResponseMessage, [
    ttlv.struct(Tag.ResponseHeader, [
      encodeVersion(msg.protocolVersion),
      ttlv.date(Tag.TimeStamp, msg.timeStamp),
      ttlv.int(Tag.BatchCount, msg.batchItems.length),
    ]),
    ...msg.batchItems.map((b) => {
      const item: TtlvItem[] = [];
      if (b.operation !== undefined) item.push(ttlv.enum(Tag.Operation, b.operation));
      if (b.uniqueBatchItemId !== undefined)
        item.push(ttlv.bytes(Tag.UniqueBatchItemId, b.uniqueBatchItemId));
      item.push(ttlv.enum(Tag.ResultStatus, b.resultStatus));
      if (b.resultReason !== undefined) item.push(ttlv.enum(Tag.ResultReason, b.resultReason));
      if (b.resultMessage !== undefined) item.push(ttlv.text(Tag.ResultMessage, b.resultMessage));
      if (b.payload !== undefined) item.push(ttlv.struct(Tag.ResponsePayload, b.payload));
      return ttlv.struct(Tag.BatchItem, item);
    }),
  ]);
}

export function decodeResponse(root: TtlvItem): ResponseMessage {
  if (root.tag !== Tag.ResponseMessage)
    throw badMessage(`expected Response Message, got ${tagName(root.tag)}`);
  const top = children(root, 'Response Message');
  const header = children(
    required(top, Tag.ResponseHeader, 'Structure', 'Response Message'),
    'Response Header',
  );
  const msg: ResponseMessage = {
    protocolVersion: decodeVersion(required(header, Tag.ProtocolVersion, 'Structure', 'Response Header')),
    timeStamp: required(header, Tag.TimeStamp, 'DateTime', 'Response Header').value,
    batchItems: [],
  };
  const count = required(header, Tag.BatchCount, 'Integer', 'Response Header').value;
  const items = all(top, Tag.BatchItem, 'Structure');
  if (items.length !== count)
    throw badMessage(`Batch Count says ${count} but ${items.length} batch items follow`);
  for (const b of items) {
    const item: ResponseBatchItem = {
      resultStatus: required(b.value, Tag.ResultStatus, 'Enumeration', 'Batch Item').value,
    };
    const op = optional(b.value, Tag.Operation, 'Enumeration');
    if (op !== undefined) item.operation = op.value;
    const id = optional(b.value, Tag.UniqueBatchItemId, 'ByteString');
    if (id !== undefined) item.uniqueBatchItemId = id.value;
    const reason = optional(b.value, Tag.ResultReason, 'Enumeration');
    if (reason !== undefined) item.resultReason = reason.value;
    const text = optional(b.value, Tag.ResultMessage, 'TextString');
    if (text !== undefined) item.resultMessage = text.value;
    const payload = optional(b.value, Tag.ResponsePayload, 'Structure');
    if (payload !== undefined) item.payload = payload.value;
    if (item.resultStatus === ResultStatus.OperationFailed && item.resultReason === undefined) {
      throw badMessage('a failed batch item must carry a Result Reason');
    }
    msg.batchItems.push(item);
  }
  return msg;
}
