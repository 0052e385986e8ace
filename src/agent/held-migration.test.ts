// A VM its source holds after its stream went whole, until the manager resolves it with
// the destination's answer (QEMU driver, real qemu-img images, no QEMU run): the hold is
// on disk, so a restarted agent still has it; nothing may change the VM meanwhile; the
// answer ends the VM here (moved: home and copied images go) or keeps it (not moved).
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { VmSpec } from './api.js';
import { openQemuDriver } from './qemu-driver.js';
import type { QemuDriver } from './qemu-driver.js';
import { smallVmSpec, tempDir } from './testing.js';

const haveTools = existsSync('/usr/bin/qemu-img') && existsSync('/usr/share/OVMF');

describe(
  'a VM held for a migration',
  { skip: haveTools ? false : 'qemu-utils or ovmf missing', concurrency: 1 },
  () => {
    const dir = tempDir('held');
    let driver: QemuDriver | undefined;
    after(async () => {
      await driver?.close();
      dir.remove();
    });
    const ds = join(dir.path, 'datastore');
    const spec = (id: string): VmSpec => smallVmSpec(id, ds);
    const disk = (id: string): string => join(ds, id, 'disk0.qcow2');
    const conflict = (re: RegExp) => (err: unknown) => {
      assert.equal((err as { code?: string }).code, 'HS_ERR_CONFLICT');
      assert.match((err as Error).message, re);
      return true;
    };

    test('the hold survives a restart and refuses every change', async () => {
      const first = await openQemuDriver(dir.path, { accel: 'tcg' });
      for (const id of ['vm-kept', 'vm-moved']) await first.define(spec(id));
      await first.close();
      // As the source writes it when the stream went whole (then the agent restarted).
      for (const id of ['vm-kept', 'vm-moved']) {
        writeFileSync(
          join(ds, id, 'unresolved-migration.json'),
          JSON.stringify({ migrationId: 'mig-1', copiedImages: [disk(id)] }),
        );
      }
      driver = await openQemuDriver(dir.path, { accel: 'tcg' });
      const d = driver;
      assert.equal((await d.runtime('vm-kept')).unresolvedMigration, 'mig-1');
      await assert.rejects(d.powerOn('vm-kept'), conflict(/held for migration mig-1/));
      await assert.rejects(d.remove('vm-kept'), conflict(/held for migration mig-1/));
      await assert.rejects(d.encrypt('vm-kept', 'kek-1'), conflict(/held for migration mig-1/));
      await assert.rejects(
        d.migrateOut('vm-kept', { id: 'mig-2', cipher: 'none' }, { host: '127.0.0.1', port: 9 }),
        conflict(/held for migration mig-1/),
      );
      // Only its own migration ends it.
      await assert.rejects(d.resolveOutgoing('vm-kept', 'mig-2', true), conflict(/not held/));
      assert.ok(existsSync(disk('vm-kept')));
    });

    test('not moved: it stays, no longer held, its image untouched', async () => {
      const d = driver as QemuDriver;
      assert.equal(await d.resolveOutgoing('vm-kept', 'mig-1', false), 'kept');
      const rt = await d.runtime('vm-kept');
      assert.equal(rt.unresolvedMigration, undefined);
      assert.equal(rt.state, 'stopped');
      assert.ok(existsSync(disk('vm-kept')));
      assert.equal(existsSync(join(ds, 'vm-kept', 'unresolved-migration.json')), false);
      // Idempotent.
      assert.equal(await d.resolveOutgoing('vm-kept', 'mig-1', false), 'kept');
    });

    test('moved: its home and the images the destination copied go; asked again, still gone', async () => {
      const d = driver as QemuDriver;
      assert.equal(await d.resolveOutgoing('vm-moved', 'mig-1', true), 'gone');
      assert.equal(existsSync(join(ds, 'vm-moved')), false);
      await assert.rejects(async () => d.runtime('vm-moved'), { code: 'HS_ERR_NOT_FOUND' });
      assert.equal(await d.resolveOutgoing('vm-moved', 'mig-1', true), 'gone');
      await assert.rejects(d.resolveOutgoing('vm-moved', 'mig-1', false), { code: 'HS_ERR_NOT_FOUND' });
    });
  },
);
