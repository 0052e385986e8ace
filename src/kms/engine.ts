/**
 * The embedded key server's KMIP 1.1 engine: decodes a request frame, runs each batch
 * item against the object store on behalf of one client identity, and encodes the answer.
 * Every failure becomes a KMIP result (status, reason, message), never a crash. Objects
 * belong to the identity that created them; others see them only when granted, and an
 * object you may not see is reported exactly like one that does not exist.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { HypersealError } from '../errors.js';
import { zeroize } from '../crypto/aead.js';
import type { KmipAttribute } from '../kmip/attributes.js';
import {
  ATTRIBUTE_RULES,
  AttributeName,
  attr,
  decodeAttribute,
  decodeAttributes,
  decodeSymmetricKey,
  encodeAttribute,
  encodeSymmetricKey,
  isCustomAttribute,
  nameValueOf,
} from '../kmip/attributes.js';
import {
  BatchErrorContinuationOption,
  CryptographicAlgorithm,
  KeyFormatType,
  ObjectType,
  Operation,
  QueryFunction,
  ResultReason,
  ResultStatus,
  RevocationReasonCode,
  State,
  enumName,
} from '../kmip/enums.js';
import type {
  ProtocolVersion,
  RequestBatchItem,
  RequestMessage,
  ResponseBatchItem,
} from '../kmip/messages.js';
import {
  KMIP_1_0,
  KMIP_1_1,
  all,
  decodeRequest,
  decodeVersion,
  encodeResponse,
  encodeVersion,
  optional,
  required,
} from '../kmip/messages.js';
import { Tag } from '../kmip/tags.js';
import type { TtlvItem } from '../kmip/ttlv.js';
import { DEFAULT_TTLV_LIMITS, decodeTtlv, encodeTtlv, encodedLength, ttlv } from '../kmip/ttlv.js';
import { encodeServerInformation } from './server-information.js';
import type { ManagedObject, ObjectStore } from './store.js';

/** A refusal with a KMIP Result Reason; its message goes to the client verbatim. */
export class KmipResultError extends Error {
  constructor(
    readonly reason: number,
    message: string,
  ) {
    super(message);
  }
}

const refuse = (reason: number, message: string): never => {
  throw new KmipResultError(reason, message);
};

export const SUPPORTED_VERSIONS: readonly ProtocolVersion[] = [KMIP_1_1, KMIP_1_0];

const SUPPORTED_OPERATIONS = [
  Operation.Create,
  Operation.Register,
  Operation.Locate,
  Operation.Get,
  Operation.GetAttributes,
  Operation.GetAttributeList,
  Operation.AddAttribute,
  Operation.ModifyAttribute,
  Operation.DeleteAttribute,
  Operation.Activate,
  Operation.Revoke,
  Operation.Destroy,
  Operation.Query,
  Operation.DiscoverVersions,
] as const;

const AES_LENGTHS = new Set([128, 192, 256]);

/** Attributes derived from the object's columns, in the order Get Attributes lists them. */
function coreAttributes(o: ManagedObject): KmipAttribute[] {
  return [
    attr.text(AttributeName.UniqueIdentifier, o.uid),
    attr.objectType(o.objectType),
    attr.cryptographicAlgorithm(o.algorithm),
    attr.cryptographicLength(o.lengthBits),
    attr.state(o.state),
  ];
}

/** Zeroises every Key Material / Key byte string inside a payload once it is encoded. */
function wipeKeyMaterial(items: TtlvItem[] | undefined): void {
  for (const i of items ?? []) {
    if (i.type === 'Structure') wipeKeyMaterial(i.value);
    else if (i.type === 'ByteString' && (i.tag === Tag.KeyMaterial || i.tag === Tag.Key)) zeroize(i.value);
  }
}

/**
 * Bounds what one object may carry, well inside the codec's limits, so a stored object
 * always decodes again and one client cannot bloat the store through attributes.
 */
export const MAX_ATTRIBUTES_PER_OBJECT = 256;
export const MAX_ATTRIBUTE_BYTES_PER_OBJECT = 64 * 1024;

function checkAttributeBudget(attributes: KmipAttribute[]): void {
  if (attributes.length > MAX_ATTRIBUTES_PER_OBJECT) {
    refuse(ResultReason.InvalidField, `an object may carry at most ${MAX_ATTRIBUTES_PER_OBJECT} attributes`);
  }
  const bytes = attributes.reduce((n, a) => n + encodedLength(encodeAttribute(a)), 0);
  if (bytes > MAX_ATTRIBUTE_BYTES_PER_OBJECT) {
    refuse(
      ResultReason.InvalidField,
      `an object's attributes may take at most ${MAX_ATTRIBUTE_BYTES_PER_OBJECT} bytes`,
    );
  }
}

const now = (): number => Math.floor(Date.now() / 1000);

function setDate(attributes: KmipAttribute[], name: string, seconds: number): KmipAttribute[] {
  return [...attributes.filter((a) => a.name !== name), attr.date(name, seconds)];
}

function attributeValueEquals(a: TtlvItem, b: TtlvItem): boolean {
  return encodeTtlv({ ...a, tag: Tag.AttributeValue }).equals(encodeTtlv({ ...b, tag: Tag.AttributeValue }));
}

export interface KmsEngineOptions {
  vendorIdentification?: string;
  limits?: typeof DEFAULT_TTLV_LIMITS;
}

export class KmsEngine {
  private readonly vendor: string;
  private readonly limits: typeof DEFAULT_TTLV_LIMITS;

  constructor(
    private readonly store: ObjectStore,
    opts: KmsEngineOptions = {},
  ) {
    this.vendor = opts.vendorIdentification ?? 'Hyperseal KMS';
    this.limits = opts.limits ?? DEFAULT_TTLV_LIMITS;
  }

  /**
   * One request frame in, one response frame out. Never throws for client input.
   * Requests execute one at a time in call order (so two clients can never interleave
   * a read-check-write on the same object); answers wait until what they did or saw is
   * durable, which is where concurrent requests share one commit.
   */
  async handle(frame: Buffer, identity: string): Promise<Buffer> {
    const run = this.queue.then(() => this.execute(frame, identity));
    this.queue = run.then(
      () => undefined,
      () => undefined,
    );
    const response = await run;
    await this.store.settled();
    return response;
  }

  private queue: Promise<void> = Promise.resolve();

  private async execute(frame: Buffer, identity: string): Promise<Buffer> {
    let request: RequestMessage;
    try {
      request = decodeRequest(decodeTtlv(frame, this.limits));
    } catch (err) {
      const message = err instanceof HypersealError ? `Invalid message: ${err.message}` : 'Invalid message';
      return this.encode(KMIP_1_1, [
        {
          resultStatus: ResultStatus.OperationFailed,
          resultReason: ResultReason.InvalidMessage,
          resultMessage: message,
        },
      ]);
    }
    const version = this.negotiate(request.protocolVersion);
    if (version === undefined) {
      return this.encode(KMIP_1_1, [
        {
          resultStatus: ResultStatus.OperationFailed,
          resultReason: ResultReason.InvalidMessage,
          resultMessage: `protocol version ${request.protocolVersion.major}.${request.protocolVersion.minor} is not supported`,
        },
      ]);
    }
    const results = await this.runBatch(request, identity);
    const encoded = this.encode(version, results);
    // The encoded frame now holds the only copy the client needs; wipe ours.
    for (const r of results) wipeKeyMaterial(r.payload);
    if (request.maximumResponseSize !== undefined && encoded.length > request.maximumResponseSize) {
      return this.encode(
        version,
        results.map((r) => ({
          ...(r.operation !== undefined ? { operation: r.operation } : {}),
          ...(r.uniqueBatchItemId !== undefined ? { uniqueBatchItemId: r.uniqueBatchItemId } : {}),
          resultStatus: ResultStatus.OperationFailed,
          resultReason: ResultReason.ResponseTooLarge,
          resultMessage: `the response (${encoded.length} bytes) exceeds Maximum Response Size ${request.maximumResponseSize}`,
        })),
      );
    }
    return encoded;
  }

  private negotiate(v: ProtocolVersion): ProtocolVersion | undefined {
    if (v.major !== 1) return undefined;
    // A newer 1.x client is answered in 1.1, the newest we speak (spec §6.1).
    return v.minor >= 1 ? KMIP_1_1 : KMIP_1_0;
  }

  private encode(version: ProtocolVersion, batchItems: ResponseBatchItem[]): Buffer {
    return encodeTtlv(encodeResponse({ protocolVersion: version, timeStamp: now(), batchItems }));
  }

  private async runBatch(request: RequestMessage, identity: string): Promise<ResponseBatchItem[]> {
    const results: ResponseBatchItem[] = [];
    const ctx = { identity, lastUid: undefined as string | undefined };
    const continueOnError = request.batchErrorContinuation === BatchErrorContinuationOption.Continue;
    let stopped = false;
    for (const item of request.batchItems) {
      const base: ResponseBatchItem = {
        operation: item.operation,
        resultStatus: ResultStatus.Success,
        ...(item.uniqueBatchItemId !== undefined ? { uniqueBatchItemId: item.uniqueBatchItemId } : {}),
      };
      if (stopped) {
        // Stop (the default) and Undo: later items are not run. We never half-apply a
        // batch we could undo, so Undo behaves as Stop and says so.
        results.push({
          ...base,
          resultStatus: ResultStatus.OperationFailed,
          resultReason: ResultReason.OperationCanceledByRequester,
          resultMessage: 'not processed: an earlier batch item failed',
        });
        continue;
      }
      try {
        results.push({ ...base, payload: await this.run(item, ctx) });
      } catch (err) {
        const { reason, message } = this.failureOf(err);
        results.push({
          ...base,
          resultStatus: ResultStatus.OperationFailed,
          resultReason: reason,
          resultMessage: message,
        });
        if (!continueOnError) stopped = true;
      }
    }
    return results;
  }

  private failureOf(err: unknown): { reason: number; message: string } {
    if (err instanceof KmipResultError) return { reason: err.reason, message: err.message };
    if (err instanceof HypersealError && err.code.startsWith('HS_ERR_KMIP_')) {
      return { reason: ResultReason.InvalidField, message: err.message };
    }
    // Internal failures are reported without internals (which might name paths or state).
    process.emitWarning(`kms: internal error: ${err instanceof Error ? err.message : String(err)}`);
    return { reason: ResultReason.GeneralFailure, message: 'internal server error' };
  }

  private run(
    item: RequestBatchItem,
    ctx: { identity: string; lastUid: string | undefined },
  ): Promise<TtlvItem[]> {
    const p = item.payload;
    switch (item.operation) {
      case Operation.DiscoverVersions:
        return Promise.resolve(this.discoverVersions(p));
      case Operation.Query:
        return this.query(p);
      case Operation.Create:
        return this.create(p, ctx);
      case Operation.Register:
        return this.register(p, ctx);
      case Operation.Locate:
        return this.locate(p, ctx);
      case Operation.Get:
        return this.get(p, ctx);
      case Operation.GetAttributes:
        return this.getAttributes(p, ctx);
      case Operation.GetAttributeList:
        return this.getAttributeList(p, ctx);
      case Operation.AddAttribute:
        return this.addAttribute(p, ctx);
      case Operation.ModifyAttribute:
        return this.modifyAttribute(p, ctx);
      case Operation.DeleteAttribute:
        return this.deleteAttribute(p, ctx);
      case Operation.Activate:
        return this.activate(p, ctx);
      case Operation.Revoke:
        return this.revoke(p, ctx);
      case Operation.Destroy:
        return this.destroy(p, ctx);
      default:
        return refuse(
          ResultReason.OperationNotSupported,
          `operation ${enumName(Operation, item.operation)} is not supported by this server`,
        );
    }
  }

  // -- helpers -------------------------------------------------------------------------

  /** The object named by the payload's UID (or the batch's ID placeholder), if the identity may see it. */
  private async target(
    payload: TtlvItem[],
    ctx: { identity: string; lastUid: string | undefined },
    withMaterial = false,
  ): Promise<ManagedObject> {
    const uid = optional(payload, Tag.UniqueIdentifier, 'TextString')?.value ?? ctx.lastUid;
    if (uid === undefined) {
      return refuse(
        ResultReason.MissingData,
        'no Unique Identifier given and no earlier batch item produced one',
      );
    }
    const obj = await this.store.get(uid, withMaterial, ctx.identity);
    if (obj === undefined) return refuse(ResultReason.ItemNotFound, `Could not locate object: ${uid}`);
    ctx.lastUid = uid;
    return obj;
  }

  private uidPayload(uid: string, extra: TtlvItem[] = []): TtlvItem[] {
    return [ttlv.text(Tag.UniqueIdentifier, uid), ...extra];
  }

  /** Validates client-supplied attributes for Create/Register; returns them split by role. */
  private clientAttributes(items: KmipAttribute[]): {
    algorithm?: number;
    lengthBits?: number;
    activationDate?: number;
    rest: KmipAttribute[];
  } {
    const out: { algorithm?: number; lengthBits?: number; activationDate?: number; rest: KmipAttribute[] } = {
      rest: [],
    };
    for (const a of items) {
      const rule = ATTRIBUTE_RULES[a.name];
      if (rule === undefined) {
        if (!a.name.startsWith('x-')) {
          refuse(
            ResultReason.InvalidField,
            `attribute '${a.name}' is not a KMIP 1.1 attribute a client may set`,
          );
        }
      } else if (rule.client === 'none') {
        refuse(ResultReason.InvalidField, `attribute '${a.name}' is set by the server, not the client`);
      } else if (!rule.multi && out.rest.some((r) => r.name === a.name)) {
        refuse(ResultReason.InvalidField, `attribute '${a.name}' may appear only once`);
      }
      if (a.name === AttributeName.CryptographicAlgorithm && a.value.type === 'Enumeration') {
        out.algorithm = a.value.value;
      } else if (a.name === AttributeName.CryptographicLength && a.value.type === 'Integer') {
        out.lengthBits = a.value.value;
      } else {
        if (a.name === AttributeName.ActivationDate && a.value.type === 'DateTime')
          out.activationDate = a.value.value;
        const index = out.rest.filter((r) => r.name === a.name).length;
        out.rest.push({ name: a.name, index, value: a.value });
      }
    }
    return out;
  }

  private templateAttributes(payload: TtlvItem[]): KmipAttribute[] {
    const template = optional(payload, Tag.TemplateAttribute, 'Structure');
    if (template === undefined) return [];
    if (template.value.some((i) => i.tag === Tag.Name)) {
      refuse(
        ResultReason.FeatureNotSupported,
        'named Templates are not supported; send the attributes themselves',
      );
    }
    return decodeAttributes(template.value);
  }

  private async createObject(
    ctx: { identity: string; lastUid: string | undefined },
    attributes: KmipAttribute[],
    material: Buffer,
    algorithm: number,
    lengthBits: number,
    activationDate: number | undefined,
  ): Promise<string> {
    checkAttributeBudget(attributes);
    const t = now();
    const active = activationDate !== undefined && activationDate <= t;
    let rest = setDate(attributes, AttributeName.InitialDate, t);
    rest = setDate(rest, AttributeName.LastChangeDate, t);
    if (!rest.some((a) => a.name === AttributeName.OperationPolicyName)) {
      rest.push(attr.text(AttributeName.OperationPolicyName, 'default'));
    }
    const obj: ManagedObject = {
      uid: randomUUID(),
      owner: ctx.identity,
      objectType: ObjectType.SymmetricKey,
      state: active ? State.Active : State.PreActive,
      algorithm,
      lengthBits,
      attributes: rest,
      material,
    };
    try {
      await this.store.insert(obj);
    } finally {
      zeroize(material);
    }
    ctx.lastUid = obj.uid;
    return obj.uid;
  }

  private checkSymmetric(algorithm: number | undefined, lengthBits: number | undefined): [number, number] {
    if (algorithm === undefined)
      return refuse(ResultReason.MissingData, 'Cryptographic Algorithm is required');
    if (lengthBits === undefined) return refuse(ResultReason.MissingData, 'Cryptographic Length is required');
    if (algorithm !== CryptographicAlgorithm.AES) {
      return refuse(
        ResultReason.FeatureNotSupported,
        `Cryptographic Algorithm ${enumName(CryptographicAlgorithm, algorithm)} is not supported (AES only)`,
      );
    }
    if (!AES_LENGTHS.has(lengthBits)) {
      return refuse(ResultReason.InvalidField, `an AES key is 128, 192 or 256 bits, not ${lengthBits}`);
    }
    return [algorithm, lengthBits];
  }

  private checkObjectType(payload: TtlvItem[]): void {
    const type = required(payload, Tag.ObjectType, 'Enumeration', 'request payload').value;
    if (type !== ObjectType.SymmetricKey) {
      refuse(
        ResultReason.FeatureNotSupported,
        `object type ${enumName(ObjectType, type)} is not supported (Symmetric Key only)`,
      );
    }
  }

  // -- operations ----------------------------------------------------------------------

  private discoverVersions(payload: TtlvItem[]): TtlvItem[] {
    const asked = all(payload, Tag.ProtocolVersion, 'Structure').map(decodeVersion);
    const answer =
      asked.length === 0
        ? SUPPORTED_VERSIONS
        : SUPPORTED_VERSIONS.filter((s) => asked.some((a) => a.major === s.major && a.minor === s.minor));
    return answer.map(encodeVersion);
  }

  private async query(payload: TtlvItem[]): Promise<TtlvItem[]> {
    const functions = new Set(all(payload, Tag.QueryFunction, 'Enumeration').map((i) => i.value));
    const out: TtlvItem[] = [];
    if (functions.has(QueryFunction.QueryOperations)) {
      out.push(...SUPPORTED_OPERATIONS.map((op) => ttlv.enum(Tag.Operation, op)));
    }
    if (functions.has(QueryFunction.QueryObjects))
      out.push(ttlv.enum(Tag.ObjectType, ObjectType.SymmetricKey));
    if (functions.has(QueryFunction.QueryServerInformation)) {
      out.push(ttlv.text(Tag.VendorIdentification, this.vendor));
      // Vendor extension: the backup state (server-information.ts).
      out.push(encodeServerInformation(await this.store.backupState()));
    }
    return out;
  }

  private async create(
    payload: TtlvItem[],
    ctx: { identity: string; lastUid: string | undefined },
  ): Promise<TtlvItem[]> {
    this.checkObjectType(payload);
    const a = this.clientAttributes(this.templateAttributes(payload));
    const [algorithm, lengthBits] = this.checkSymmetric(a.algorithm, a.lengthBits);
    const uid = await this.createObject(
      ctx,
      a.rest,
      randomBytes(lengthBits / 8),
      algorithm,
      lengthBits,
      a.activationDate,
    );
    return [ttlv.enum(Tag.ObjectType, ObjectType.SymmetricKey), ttlv.text(Tag.UniqueIdentifier, uid)];
  }

  private async register(
    payload: TtlvItem[],
    ctx: { identity: string; lastUid: string | undefined },
  ): Promise<TtlvItem[]> {
    this.checkObjectType(payload);
    const key = decodeSymmetricKey(required(payload, Tag.SymmetricKey, 'Structure', 'Register payload'));
    const a = this.clientAttributes(this.templateAttributes(payload));
    if (
      (a.algorithm !== undefined && a.algorithm !== key.algorithm) ||
      (a.lengthBits ?? key.lengthBits) !== key.lengthBits
    ) {
      refuse(ResultReason.InvalidField, 'template attributes contradict the Key Block');
    }
    const [algorithm, lengthBits] = this.checkSymmetric(key.algorithm, key.lengthBits);
    if (key.material.length * 8 !== lengthBits) {
      zeroize(key.material);
      refuse(
        ResultReason.InvalidField,
        `key material is ${key.material.length * 8} bits, Cryptographic Length says ${lengthBits}`,
      );
    }
    const uid = await this.createObject(ctx, a.rest, key.material, algorithm, lengthBits, a.activationDate);
    return [ttlv.text(Tag.UniqueIdentifier, uid)];
  }

  private async get(
    payload: TtlvItem[],
    ctx: { identity: string; lastUid: string | undefined },
  ): Promise<TtlvItem[]> {
    const obj = await this.target(payload, ctx, true);
    const format = optional(payload, Tag.KeyFormatType, 'Enumeration')?.value ?? KeyFormatType.Raw;
    if (format !== KeyFormatType.Raw && format !== KeyFormatType.TransparentSymmetricKey) {
      refuse(
        ResultReason.KeyFormatTypeNotSupported,
        `Key Format Type ${enumName(KeyFormatType, format)} is not supported`,
      );
    }
    if (optional(payload, Tag.KeyCompressionType, 'Enumeration') !== undefined) {
      refuse(ResultReason.KeyCompressionTypeNotSupported, 'key compression does not apply to symmetric keys');
    }
    if (optional(payload, Tag.KeyWrappingSpecification, 'Structure') !== undefined) {
      refuse(ResultReason.FeatureNotSupported, 'key wrapping on Get is not supported');
    }
    if (obj.material === undefined) {
      return refuse(ResultReason.ItemNotFound, `object ${obj.uid} was destroyed; only its attributes remain`);
    }
    const key = encodeSymmetricKey({
      algorithm: obj.algorithm,
      lengthBits: obj.lengthBits,
      material: obj.material,
      formatType: format,
    });
    return [ttlv.enum(Tag.ObjectType, obj.objectType), ttlv.text(Tag.UniqueIdentifier, obj.uid), key];
  }

  private allAttributes(obj: ManagedObject): KmipAttribute[] {
    return [...coreAttributes(obj), ...obj.attributes];
  }

  private async getAttributes(
    payload: TtlvItem[],
    ctx: { identity: string; lastUid: string | undefined },
  ): Promise<TtlvItem[]> {
    const obj = await this.target(payload, ctx);
    const names = all(payload, Tag.AttributeName, 'TextString').map((i) => i.value);
    const attributes = this.allAttributes(obj);
    const chosen =
      names.length === 0 ? attributes : names.flatMap((n) => attributes.filter((a) => a.name === n));
    return this.uidPayload(obj.uid, chosen.map(encodeAttribute));
  }

  private async getAttributeList(
    payload: TtlvItem[],
    ctx: { identity: string; lastUid: string | undefined },
  ): Promise<TtlvItem[]> {
    const obj = await this.target(payload, ctx);
    const names = [...new Set(this.allAttributes(obj).map((a) => a.name))];
    return this.uidPayload(
      obj.uid,
      names.map((n) => ttlv.text(Tag.AttributeName, n)),
    );
  }

  /** Checks that a client may add, modify or delete this attribute at all. */
  private checkMutable(name: string): void {
    const rule = ATTRIBUTE_RULES[name];
    if (rule === undefined ? !name.startsWith('x-') : rule.client !== 'add') {
      refuse(
        ResultReason.PermissionDenied,
        isCustomAttribute(name) || rule !== undefined
          ? `attribute '${name}' cannot be changed by a client`
          : `attribute '${name}' is not a KMIP 1.1 attribute`,
      );
    }
  }

  private async saveAttributes(
    obj: ManagedObject,
    attributes: KmipAttribute[],
    state?: number,
  ): Promise<void> {
    checkAttributeBudget(attributes);
    const withDate = setDate(attributes, AttributeName.LastChangeDate, now());
    await this.store.update(
      obj.uid,
      state === undefined ? { attributes: withDate } : { attributes: withDate, state },
    );
  }

  private async addAttribute(
    payload: TtlvItem[],
    ctx: { identity: string; lastUid: string | undefined },
  ): Promise<TtlvItem[]> {
    const obj = await this.target(payload, ctx);
    const a = decodeAttribute(required(payload, Tag.Attribute, 'Structure', 'Add Attribute payload'));
    this.checkMutable(a.name);
    const existing = obj.attributes.filter((x) => x.name === a.name);
    const rule = ATTRIBUTE_RULES[a.name];
    if (existing.length > 0 && rule?.multi !== true) {
      refuse(
        ResultReason.IllegalOperation,
        `attribute '${a.name}' already exists and is single-valued; use Modify Attribute`,
      );
    }
    const index = existing.reduce((m, x) => Math.max(m, (x.index ?? 0) + 1), 0);
    const added: KmipAttribute = { name: a.name, index, value: a.value };
    await this.saveAttributes(obj, [...obj.attributes, added]);
    return this.uidPayload(obj.uid, [encodeAttribute(added)]);
  }

  private async modifyAttribute(
    payload: TtlvItem[],
    ctx: { identity: string; lastUid: string | undefined },
  ): Promise<TtlvItem[]> {
    const obj = await this.target(payload, ctx);
    const a = decodeAttribute(required(payload, Tag.Attribute, 'Structure', 'Modify Attribute payload'));
    this.checkMutable(a.name);
    const index = a.index ?? 0;
    const at = obj.attributes.findIndex((x) => x.name === a.name && (x.index ?? 0) === index);
    if (at < 0)
      return refuse(
        ResultReason.ItemNotFound,
        `object ${obj.uid} has no attribute '${a.name}' index ${index}`,
      );
    const modified: KmipAttribute = { name: a.name, index, value: a.value };
    const next = obj.attributes.map((x, i) => (i === at ? modified : x));
    if (
      a.name === AttributeName.Name &&
      next.some((x, i) => i !== at && x.name === a.name && attributeValueEquals(x.value, a.value))
    ) {
      refuse(
        ResultReason.IllegalOperation,
        `object ${obj.uid} already has the name '${nameValueOf(a.value) ?? ''}'`,
      );
    }
    await this.saveAttributes(obj, next);
    return this.uidPayload(obj.uid, [encodeAttribute(modified)]);
  }

  private async deleteAttribute(
    payload: TtlvItem[],
    ctx: { identity: string; lastUid: string | undefined },
  ): Promise<TtlvItem[]> {
    const obj = await this.target(payload, ctx);
    const name = required(payload, Tag.AttributeName, 'TextString', 'Delete Attribute payload').value;
    const index = optional(payload, Tag.AttributeIndex, 'Integer')?.value ?? 0;
    this.checkMutable(name);
    const victim = obj.attributes.find((x) => x.name === name && (x.index ?? 0) === index);
    if (victim === undefined)
      return refuse(ResultReason.ItemNotFound, `object ${obj.uid} has no attribute '${name}' index ${index}`);
    await this.saveAttributes(
      obj,
      obj.attributes.filter((x) => x !== victim),
    );
    return this.uidPayload(obj.uid, [encodeAttribute(victim)]);
  }

  private async activate(
    payload: TtlvItem[],
    ctx: { identity: string; lastUid: string | undefined },
  ): Promise<TtlvItem[]> {
    const obj = await this.target(payload, ctx);
    if (obj.state !== State.PreActive) {
      refuse(
        ResultReason.PermissionDenied,
        `object ${obj.uid} is ${enumName(State, obj.state)}; only a Pre-Active object can be activated`,
      );
    }
    await this.saveAttributes(
      obj,
      setDate(obj.attributes, AttributeName.ActivationDate, now()),
      State.Active,
    );
    return this.uidPayload(obj.uid);
  }

  private async revoke(
    payload: TtlvItem[],
    ctx: { identity: string; lastUid: string | undefined },
  ): Promise<TtlvItem[]> {
    const obj = await this.target(payload, ctx);
    const reasonItem = required(payload, Tag.RevocationReason, 'Structure', 'Revoke payload');
    const code = required(
      reasonItem.value,
      Tag.RevocationReasonCode,
      'Enumeration',
      'Revocation Reason',
    ).value;
    const t = now();
    let attributes = [
      ...obj.attributes.filter((a) => a.name !== AttributeName.RevocationReason),
      { name: AttributeName.RevocationReason, value: { ...reasonItem, tag: Tag.AttributeValue } },
    ];
    let state: number;
    if (code === RevocationReasonCode.KeyCompromise || code === RevocationReasonCode.CACompromise) {
      // Any state may become compromised; a destroyed object becomes Destroyed Compromised.
      if (obj.state === State.Compromised || obj.state === State.DestroyedCompromised) {
        return refuse(
          ResultReason.PermissionDenied,
          `object ${obj.uid} is already ${enumName(State, obj.state)}`,
        );
      }
      state = obj.state === State.Destroyed ? State.DestroyedCompromised : State.Compromised;
      const occurred = optional(payload, Tag.CompromiseOccurrenceDate, 'DateTime')?.value ?? t;
      attributes = setDate(
        setDate(attributes, AttributeName.CompromiseDate, t),
        AttributeName.CompromiseOccurrenceDate,
        occurred,
      );
    } else {
      if (obj.state !== State.Active) {
        return refuse(
          ResultReason.PermissionDenied,
          `object ${obj.uid} is ${enumName(State, obj.state)}; only an Active object can be deactivated by Revoke`,
        );
      }
      state = State.Deactivated;
      attributes = setDate(attributes, AttributeName.DeactivationDate, t);
    }
    await this.saveAttributes(obj, attributes, state);
    return this.uidPayload(obj.uid);
  }

  private async destroy(
    payload: TtlvItem[],
    ctx: { identity: string; lastUid: string | undefined },
  ): Promise<TtlvItem[]> {
    const obj = await this.target(payload, ctx);
    let state: number;
    if (obj.state === State.PreActive || obj.state === State.Deactivated) state = State.Destroyed;
    else if (obj.state === State.Compromised) state = State.DestroyedCompromised;
    else if (obj.state === State.Active) {
      return refuse(
        ResultReason.PermissionDenied,
        `object ${obj.uid} is Active; revoke it before destroying it`,
      );
    } else return refuse(ResultReason.ItemNotFound, `object ${obj.uid} was already destroyed`);
    const attributes = setDate(obj.attributes, AttributeName.DestroyDate, now());
    await this.store.update(obj.uid, {
      state,
      attributes: setDate(attributes, AttributeName.LastChangeDate, now()),
      destroyMaterial: true,
    });
    return this.uidPayload(obj.uid);
  }

  private async locate(
    payload: TtlvItem[],
    ctx: { identity: string; lastUid: string | undefined },
  ): Promise<TtlvItem[]> {
    const maxItems = optional(payload, Tag.MaximumItems, 'Integer')?.value;
    if (maxItems !== undefined && maxItems < 0)
      refuse(ResultReason.InvalidField, 'Maximum Items must not be negative');
    const filters = decodeAttributes(payload);
    const f: Parameters<ObjectStore['locate']>[0] = { accessibleBy: ctx.identity };
    const others: KmipAttribute[] = [];
    for (const a of filters) {
      if (a.name === AttributeName.ObjectType && a.value.type === 'Enumeration') f.objectType = a.value.value;
      else if (a.name === AttributeName.State && a.value.type === 'Enumeration') f.state = a.value.value;
      else if (a.name === AttributeName.CryptographicAlgorithm && a.value.type === 'Enumeration')
        f.algorithm = a.value.value;
      else if (a.name === AttributeName.CryptographicLength && a.value.type === 'Integer')
        f.lengthBits = a.value.value;
      else if (a.name === AttributeName.Name && f.name === undefined) f.name = nameValueOf(a.value) ?? '';
      else others.push(a);
    }
    // Destroyed objects keep their attributes but are found only when asked for by state.
    const wantDestroyed = f.state === State.Destroyed || f.state === State.DestroyedCompromised;
    if (!wantDestroyed) f.liveOnly = true;
    if (others.length === 0) {
      const uids = await this.store.locate(maxItems !== undefined ? { ...f, limit: maxItems } : f);
      return uids.map((u) => ttlv.text(Tag.UniqueIdentifier, u));
    }
    const uids: string[] = [];
    for (const uid of await this.store.locate(f)) {
      const obj = await this.store.get(uid, false);
      if (obj === undefined) continue;
      const mine = this.allAttributes(obj);
      if (
        others.every((want) =>
          mine.some((m) => m.name === want.name && attributeValueEquals(m.value, want.value)),
        )
      ) {
        uids.push(uid);
      }
      if (maxItems !== undefined && uids.length >= maxItems) break;
    }
    return uids.map((u) => ttlv.text(Tag.UniqueIdentifier, u));
  }
}
