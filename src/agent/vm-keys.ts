/**
 * The agent's keys: KEKs pushed by the manager, held in memory only, and each encrypted
 * VM's encryption bundle — its DEKs wrapped by its KEK (RFC 3394), the only form in which
 * a DEK is ever stored. One DEK per disk and one for the VM home (sealed configuration,
 * NVRAM). Shared by both drivers so the sim driver exercises the same key handling as QEMU.
 */
import { randomBytes } from 'node:crypto';
import { HypersealError } from '../errors.js';
import { open, seal, zeroize } from '../crypto/aead.js';
import { unwrapKey, wrapKey } from '../crypto/keywrap.js';

export const DEK_BYTES = 32;
const BUNDLE_VERSION = 1;
/** kekRef: "<providerId>/<keyId>" as the manager forms it; opaque here, but bounded and printable. */
const KEK_REF = /^[\x21-\x7e]{1,256}$/;

export function checkKekRef(ref: unknown, where = 'kekRef'): string {
  if (typeof ref !== 'string' || !KEK_REF.test(ref)) {
    throw new HypersealError(
      'HS_ERR_INVALID_ARGUMENT',
      `${where} must be 1 to 256 printable ASCII characters`,
    );
  }
  return ref;
}

/** Wrapped DEKs of one VM, stored beside its files. Nothing in it is secret without the KEK. */
export interface EncryptionBundle {
  version: number;
  kekRef: string;
  /** base64 of the wrapped home DEK. */
  home: string;
  /** base64 of each disk's wrapped DEK, by disk id. */
  disks: Record<string, string>;
}

/** Unwrapped DEKs: in memory only, zeroized by whoever is done with them. */
export interface Deks {
  home: Buffer;
  disks: Map<string, Buffer>;
}

export function newDek(): Buffer {
  return randomBytes(DEK_BYTES);
}

export function newDeks(diskIds: readonly string[]): Deks {
  return { home: newDek(), disks: new Map(diskIds.map((id) => [id, newDek()])) };
}

export function zeroizeDeks(deks: Deks | undefined): void {
  if (!deks) return;
  zeroize(deks.home, ...deks.disks.values());
}

export function wrapDeks(kek: Buffer, kekRef: string, deks: Deks): EncryptionBundle {
  const disks: Record<string, string> = {};
  for (const [id, dek] of deks.disks) disks[id] = wrapKey(kek, dek).toString('base64');
  return { version: BUNDLE_VERSION, kekRef, home: wrapKey(kek, deks.home).toString('base64'), disks };
}

/** HS_ERR_KEY_MISMATCH when `kek` is not the bundle's KEK. */
export function unwrapDeks(kek: Buffer, bundle: EncryptionBundle): Deks {
  const home = unwrapKey(kek, Buffer.from(bundle.home, 'base64'));
  const disks = new Map<string, Buffer>();
  try {
    for (const [id, w] of Object.entries(bundle.disks))
      disks.set(id, unwrapKey(kek, Buffer.from(w, 'base64')));
  } catch (err) {
    zeroizeDeks({ home, disks });
    throw err;
  }
  return { home, disks };
}

export function parseBundle(value: unknown, where: string): EncryptionBundle {
  const bad = (what: string): HypersealError =>
    new HypersealError('HS_ERR_CONFIG', `${where}: the encryption bundle ${what}`);
  if (typeof value !== 'object' || value === null) throw bad('is not an object');
  const b = value as Partial<EncryptionBundle>;
  if (b.version !== BUNDLE_VERSION) throw bad(`is not version ${BUNDLE_VERSION}`);
  const b64 = /^[A-Za-z0-9+/]{32,}={0,2}$/;
  if (typeof b.home !== 'string' || !b64.test(b.home)) throw bad('has no wrapped home key');
  if (typeof b.disks !== 'object' || b.disks === null) throw bad('has no disk keys');
  for (const [id, w] of Object.entries(b.disks)) {
    if (typeof w !== 'string' || !b64.test(w)) throw bad(`has a malformed key for disk ${id}`);
  }
  return {
    version: BUNDLE_VERSION,
    kekRef: checkKekRef(b.kekRef, `${where}.kekRef`),
    home: b.home,
    disks: { ...b.disks },
  };
}

/** Seals a VM's configuration (or any home file) under its home DEK, bound to the VM and purpose. */
export function sealWithHomeKey(homeDek: Buffer, vmId: string, purpose: string, data: Buffer): string {
  return seal(homeDek, data, Buffer.from(`hyperseal/${purpose}/${vmId}`)).toString('base64');
}

export function openWithHomeKey(homeDek: Buffer, vmId: string, purpose: string, sealed: string): Buffer {
  return open(homeDek, Buffer.from(sealed, 'base64'), Buffer.from(`hyperseal/${purpose}/${vmId}`));
}

/**
 * KEKs in memory, by ref. Copies what it is given (the caller zeroizes its own copy) and
 * zeroizes what it drops. Never persisted: an agent restart forgets every key, and the
 * manager pushes them again (its VMs are `locked` until then).
 */
export class Keyring {
  private readonly keys = new Map<string, Buffer>();

  put(ref: string, material: Buffer): void {
    checkKekRef(ref);
    if (material.length !== 32) {
      throw new HypersealError(
        'HS_ERR_KEY_INVALID',
        `the key for ${ref} is ${material.length} bytes, not 32`,
      );
    }
    const old = this.keys.get(ref);
    this.keys.set(ref, Buffer.from(material));
    zeroize(old);
  }

  has(ref: string): boolean {
    return this.keys.has(ref);
  }

  /** The KEK, or HS_ERR_VM_LOCKED naming what is missing. */
  require(ref: string, vmId: string): Buffer {
    const k = this.keys.get(ref);
    if (k === undefined) {
      throw new HypersealError(
        'HS_ERR_VM_LOCKED',
        `VM ${vmId} is locked: this host does not hold its key ${ref} (the manager pushes it; see hyperseal vm unlock)`,
        { vmId, kekRef: ref },
      );
    }
    return k;
  }

  drop(ref: string): void {
    zeroize(this.keys.get(ref));
    this.keys.delete(ref);
  }

  refs(): string[] {
    return [...this.keys.keys()];
  }

  clear(): void {
    for (const k of this.keys.values()) zeroize(k);
    this.keys.clear();
  }
}
