/**
 * Hyperseal's vendor extension to KMIP Query: with Query Server Information, the
 * embedded key server answers, besides Vendor Identification, a Server Information
 * structure (KMIP 1.1 §4.25: "contents vendor-specific") holding its backup state, so a
 * manager anywhere on the network learns it with the same credentials it uses for keys.
 *
 * Tags are in the extension range 0x54xxxx (KMIP 1.1 §9.1.3.1 "Tag": 0x540000–0x54FFFF
 * are for extensions). Times are milliseconds since the epoch (Long Integer), not KMIP
 * Date-Time seconds: the comparison "newest object after the last backup" needs them.
 * Servers that do not know these tags send no Server Information, or one without them.
 */
import { all, optional } from '../kmip/messages.js';
import { Tag } from '../kmip/tags.js';
import type { TtlvItem } from '../kmip/ttlv.js';
import { ttlv } from '../kmip/ttlv.js';
import type { StoreBackupState } from './store.js';

export const HypersealTag = {
  BackupState: 0x540001,
  LastBackupTime: 0x540002,
  LastBackupNewestObjectTime: 0x540003,
  LastBackupObjectCount: 0x540004,
  NewestObjectTime: 0x540005,
  ObjectCount: 0x540006,
} as const;

export function encodeServerInformation(state: StoreBackupState): TtlvItem {
  const items: TtlvItem[] = [ttlv.int(HypersealTag.ObjectCount, state.objects)];
  if (state.newestObjectAt !== null)
    items.push(ttlv.long(HypersealTag.NewestObjectTime, BigInt(state.newestObjectAt)));
  if (state.lastBackup !== null) {
    items.push(ttlv.long(HypersealTag.LastBackupTime, BigInt(state.lastBackup.at)));
    items.push(ttlv.int(HypersealTag.LastBackupObjectCount, state.lastBackup.objects));
    if (state.lastBackup.newestObjectAt !== null) {
      items.push(ttlv.long(HypersealTag.LastBackupNewestObjectTime, BigInt(state.lastBackup.newestObjectAt)));
    }
  }
  return ttlv.struct(Tag.ServerInformation, [ttlv.struct(HypersealTag.BackupState, items)]);
}

/** The backup state in a Query answer's payload; undefined when the server sent none. */
export function decodeServerInformation(payload: TtlvItem[]): StoreBackupState | undefined {
  const info = optional(payload, Tag.ServerInformation, 'Structure');
  if (info === undefined) return undefined;
  const st = all(info.value, HypersealTag.BackupState, 'Structure')[0];
  if (st === undefined) return undefined;
  const long = (tag: number): number | null => {
    const v = optional(st.value, tag, 'LongInteger');
    return v === undefined ? null : Number(v.value);
  };
  const int = (tag: number): number => optional(st.value, tag, 'Integer')?.value ?? 0;
  const at = long(HypersealTag.LastBackupTime);
  return {
    objects: int(HypersealTag.ObjectCount),
    newestObjectAt: long(HypersealTag.NewestObjectTime),
    lastBackup:
      at === null
        ? null
        : {
            at,
            newestObjectAt: long(HypersealTag.LastBackupNewestObjectTime),
            objects: int(HypersealTag.LastBackupObjectCount),
          },
  };
}
