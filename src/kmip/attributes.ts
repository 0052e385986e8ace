/**
 * KMIP 1.x attributes (spec §2.1.1, §3): `Attribute { Attribute Name, [Attribute Index],
 * Attribute Value }`, named by text. Knows the standard attributes' value types and who
 * may set them, so both our client and our server validate the same way.
 */
import { KeyFormatType, NameType } from './enums.js';
import { all, badMessage, children, optional, required } from './messages.js';
import { Tag } from './tags.js';
import type { ItemTypeName, TtlvItem } from './ttlv.js';
import { ttlv } from './ttlv.js';

export interface KmipAttribute {
  name: string;
  index?: number;
  /** The Attribute Value item (tag 0x42000B) with the type the attribute defines. */
  value: TtlvItem;
}

export const AttributeName = {
  UniqueIdentifier: 'Unique Identifier',
  Name: 'Name',
  ObjectType: 'Object Type',
  CryptographicAlgorithm: 'Cryptographic Algorithm',
  CryptographicLength: 'Cryptographic Length',
  CryptographicUsageMask: 'Cryptographic Usage Mask',
  State: 'State',
  InitialDate: 'Initial Date',
  ActivationDate: 'Activation Date',
  DeactivationDate: 'Deactivation Date',
  DestroyDate: 'Destroy Date',
  CompromiseDate: 'Compromise Date',
  CompromiseOccurrenceDate: 'Compromise Occurrence Date',
  RevocationReason: 'Revocation Reason',
  LastChangeDate: 'Last Change Date',
  OperationPolicyName: 'Operation Policy Name',
  ObjectGroup: 'Object Group',
  ContactInformation: 'Contact Information',
  ApplicationSpecificInformation: 'Application Specific Information',
} as const;

/**
 * Standard attributes we understand. `client`: 'create' (only at Create/Register),
 * 'add' (Create, Add, Modify, Delete), or 'none' (server-managed, read-only).
 */
interface AttributeRule {
  type: ItemTypeName;
  multi: boolean;
  client: 'create' | 'add' | 'none';
}
export const ATTRIBUTE_RULES: Readonly<Record<string, AttributeRule>> = {
  [AttributeName.UniqueIdentifier]: { type: 'TextString', multi: false, client: 'none' },
  [AttributeName.Name]: { type: 'Structure', multi: true, client: 'add' },
  [AttributeName.ObjectType]: { type: 'Enumeration', multi: false, client: 'none' },
  [AttributeName.CryptographicAlgorithm]: { type: 'Enumeration', multi: false, client: 'create' },
  [AttributeName.CryptographicLength]: { type: 'Integer', multi: false, client: 'create' },
  [AttributeName.CryptographicUsageMask]: { type: 'Integer', multi: false, client: 'create' },
  [AttributeName.State]: { type: 'Enumeration', multi: false, client: 'none' },
  [AttributeName.InitialDate]: { type: 'DateTime', multi: false, client: 'none' },
  [AttributeName.ActivationDate]: { type: 'DateTime', multi: false, client: 'create' },
  [AttributeName.DeactivationDate]: { type: 'DateTime', multi: false, client: 'create' },
  [AttributeName.DestroyDate]: { type: 'DateTime', multi: false, client: 'none' },
  [AttributeName.CompromiseDate]: { type: 'DateTime', multi: false, client: 'none' },
  [AttributeName.CompromiseOccurrenceDate]: { type: 'DateTime', multi: false, client: 'none' },
  [AttributeName.RevocationReason]: { type: 'Structure', multi: false, client: 'none' },
  [AttributeName.LastChangeDate]: { type: 'DateTime', multi: false, client: 'none' },
  [AttributeName.OperationPolicyName]: { type: 'TextString', multi: false, client: 'create' },
  [AttributeName.ObjectGroup]: { type: 'TextString', multi: true, client: 'add' },
  [AttributeName.ContactInformation]: { type: 'TextString', multi: false, client: 'add' },
  [AttributeName.ApplicationSpecificInformation]: { type: 'Structure', multi: true, client: 'add' },
};

/** Custom attributes: `x-` set by clients, `y-` by servers (spec §3.39). */
export function isCustomAttribute(name: string): boolean {
  return name.startsWith('x-') || name.startsWith('y-');
}

export function encodeAttribute(a: KmipAttribute): TtlvItem {
  const items: TtlvItem[] = [ttlv.text(Tag.AttributeName, a.name)];
  if (a.index !== undefined) items.push(ttlv.int(Tag.AttributeIndex, a.index));
  items.push({ ...a.value, tag: Tag.AttributeValue });
  return ttlv.struct(Tag.Attribute, items);
}

export function decodeAttribute(item: TtlvItem): KmipAttribute {
  const c = children(item, 'Attribute');
  const a: KmipAttribute = {
    name: required(c, Tag.AttributeName, 'TextString', 'Attribute').value,
    value: (() => {
      const v = c.find((i) => i.tag === Tag.AttributeValue);
      if (v === undefined) throw badMessage('Attribute is missing Attribute Value');
      return v;
    })(),
  };
  const idx = optional(c, Tag.AttributeIndex, 'Integer');
  if (idx !== undefined) a.index = idx.value;
  const rule = ATTRIBUTE_RULES[a.name];
  if (rule !== undefined && rule.type !== a.value.type) {
    throw badMessage(`attribute '${a.name}' must be ${rule.type}, got ${a.value.type}`);
  }
  return a;
}

export function decodeAttributes(items: TtlvItem[]): KmipAttribute[] {
  return all(items, Tag.Attribute, 'Structure').map(decodeAttribute);
}

/** Typed constructors for the attributes clients send. */
export const attr = {
  name: (value: string, type: number = NameType.UninterpretedTextString): KmipAttribute => ({
    name: AttributeName.Name,
    value: ttlv.struct(Tag.AttributeValue, [ttlv.text(Tag.NameValue, value), ttlv.enum(Tag.NameType, type)]),
  }),
  cryptographicAlgorithm: (v: number): KmipAttribute => ({
    name: AttributeName.CryptographicAlgorithm,
    value: ttlv.enum(Tag.AttributeValue, v),
  }),
  cryptographicLength: (bits: number): KmipAttribute => ({
    name: AttributeName.CryptographicLength,
    value: ttlv.int(Tag.AttributeValue, bits),
  }),
  cryptographicUsageMask: (mask: number): KmipAttribute => ({
    name: AttributeName.CryptographicUsageMask,
    value: ttlv.int(Tag.AttributeValue, mask),
  }),
  state: (v: number): KmipAttribute => ({
    name: AttributeName.State,
    value: ttlv.enum(Tag.AttributeValue, v),
  }),
  objectType: (v: number): KmipAttribute => ({
    name: AttributeName.ObjectType,
    value: ttlv.enum(Tag.AttributeValue, v),
  }),
  text: (name: string, v: string): KmipAttribute => ({ name, value: ttlv.text(Tag.AttributeValue, v) }),
  date: (name: string, seconds: number): KmipAttribute => ({
    name,
    value: ttlv.date(Tag.AttributeValue, seconds),
  }),
};

/** The text of a Name attribute value, or undefined when the value is not a Name. */
export function nameValueOf(value: TtlvItem): string | undefined {
  if (value.type !== 'Structure') return undefined;
  return optional(value.value, Tag.NameValue, 'TextString')?.value;
}

/** A JSON-friendly rendering (CLI --json, events). Byte strings are never printed. */
export function attributeToJson(a: KmipAttribute): { name: string; index?: number; value: unknown } {
  const plain = (v: TtlvItem): unknown => {
    switch (v.type) {
      case 'Structure':
        return Object.fromEntries(v.value.map((c) => [c.tag.toString(16), plain(c)]));
      case 'ByteString':
        return `<${v.value.length} bytes>`;
      case 'LongInteger':
      case 'BigInteger':
        return v.value.toString();
      case 'DateTime':
        return new Date(v.value * 1000).toISOString();
      default:
        return v.value;
    }
  };
  let value: unknown;
  if (a.name === AttributeName.Name) value = nameValueOf(a.value);
  else if (a.name === AttributeName.RevocationReason && a.value.type === 'Structure') {
    value = optional(a.value.value, Tag.RevocationReasonCode, 'Enumeration')?.value;
  } else value = plain(a.value);
  return a.index === undefined ? { name: a.name, value } : { name: a.name, index: a.index, value };
}

// ---------------------------------------------------------------------------------------
// Symmetric Key object (spec §2.2.2) with a Key Block of Raw or Transparent key material.

export interface SymmetricKeyValue {
  algorithm: number;
  lengthBits: number;
  material: Buffer;
  formatType?: number;
}

export function encodeSymmetricKey(k: SymmetricKeyValue): TtlvItem {
  const format = k.formatType ?? KeyFormatType.Raw;
  const material =
    format === KeyFormatType.TransparentSymmetricKey
      ? ttlv.struct(Tag.KeyMaterial, [ttlv.bytes(Tag.Key, k.material)])
      : ttlv.bytes(Tag.KeyMaterial, k.material);
  return ttlv.struct(Tag.SymmetricKey, [
    ttlv.struct(Tag.KeyBlock, [
      ttlv.enum(Tag.KeyFormatType, format),
      ttlv.struct(Tag.KeyValue, [material]),
      ttlv.enum(Tag.CryptographicAlgorithm, k.algorithm),
      ttlv.int(Tag.CryptographicLength, k.lengthBits),
    ]),
  ]);
}

export function decodeSymmetricKey(item: TtlvItem): SymmetricKeyValue {
  const block = children(
    required(children(item, 'Symmetric Key'), Tag.KeyBlock, 'Structure', 'Symmetric Key'),
    'Key Block',
  );
  const formatType = required(block, Tag.KeyFormatType, 'Enumeration', 'Key Block').value;
  const keyValue = block.find((i) => i.tag === Tag.KeyValue);
  if (keyValue === undefined) throw badMessage('Key Block is missing Key Value');
  if (keyValue.type !== 'Structure')
    throw badMessage('wrapped keys (Key Value as Byte String) are not supported');
  const mat = keyValue.value.find((i) => i.tag === Tag.KeyMaterial);
  let material: Buffer;
  if (mat?.type === 'ByteString') material = mat.value;
  else if (mat?.type === 'Structure')
    material = required(mat.value, Tag.Key, 'ByteString', 'Key Material').value;
  else throw badMessage('Key Value is missing Key Material');
  const algorithm = optional(block, Tag.CryptographicAlgorithm, 'Enumeration')?.value;
  const lengthBits = optional(block, Tag.CryptographicLength, 'Integer')?.value;
  if (algorithm === undefined || lengthBits === undefined) {
    throw badMessage('a symmetric Key Block needs Cryptographic Algorithm and Length');
  }
  return { algorithm, lengthBits, material, formatType };
}
