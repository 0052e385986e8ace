// The QEMU driver's encryption on real images (qemu-img, no guest boot): create encrypted,
// add a disk, shallow rekey (only the record changes), deep rekey (new DEKs: the old ones
// no longer open the images), clone (own KEK, own DEKs), a wrong KEK refused, and an agent
// restart: the VM loads locked with its spec sealed, unlocks when its KEK is pushed.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { checkDek } from '../qemu/encrypted-images.js';
import type { VmSpec } from './api.js';
import type { QemuDriver } from './qemu-driver.js';
import { openQemuDriver } from './qemu-driver.js';
import { tempDir } from './testing.js';
import type { Deks } from './vm-keys.js';
import { parseBundle, unwrapDeks } from './vm-keys.js';

const haveQemu =
  existsSync('/usr/bin/qemu-img') && existsSync('/usr/bin/qemu-io') && existsSync('/usr/share/OVMF');

describe(
  'QEMU driver encryption',
  { skip: haveQemu ? false : 'qemu-utils or ovmf missing', concurrency: 1 },
  () => {
    const dir = tempDir('qemu-crypto');
    after(() => dir.remove());
    const kek1 = randomBytes(32);
    const kek2 = randomBytes(32);
    const kek3 = randomBytes(32);
    let driver: QemuDriver;
    const ds = (): string => driver.datastores[0]?.path ?? '';
    const spec = (id: string, kekRef: string | null, disks = ['disk0']): VmSpec => ({
      id,
      name: `VM ${id}`,
      cpus: 1,
      memoryMiB: 64,
      firmware: 'efi',
      secureBoot: false,
      disks: disks.map((d) => ({ id: d, sizeMiB: 8, datastorePath: ds() })),
      nics: [],
      encryption: kekRef === null ? null : { kekRef },
    });
    const record = (id: string): { generation: number; bundle: unknown; spec?: unknown } =>
      JSON.parse(readFileSync(join(ds(), id, 'spec.json'), 'utf8')) as {
        generation: number;
        bundle: unknown;
      };
    const deksOf = (id: string, kek: Buffer): Deks => unwrapDeks(kek, parseBundle(record(id).bundle, id));
    const images = (id: string): string[] =>
      readdirSync(join(ds(), id))
        .filter((f) => /\.(qcow2|luks|fd)$/.test(f))
        .sort();

    test('created encrypted, with a disk added later under the same KEK', async () => {
      driver = await openQemuDriver(dir.path, { accel: 'tcg' });
      await assert.rejects(driver.define(spec('vm1', 'p/k1')), { code: 'HS_ERR_VM_LOCKED' });
      await driver.putKey('p/k1', kek1);
      const rt = await driver.define(spec('vm1', 'p/k1'));
      assert.deepEqual(rt.encryption, { kekRef: 'p/k1' });
      assert.equal(rt.locked, false);
      assert.ok(!JSON.stringify(record('vm1')).includes('VM vm1'), 'the spec is sealed');
      assert.equal(record('vm1').spec, undefined);
      const d0 = deksOf('vm1', kek1).disks.get('disk0');
      assert.ok(d0 && (await checkDek(join(ds(), 'vm1', 'disk0.qcow2'), d0)));
      await driver.define(spec('vm1', 'p/k1', ['disk0', 'disk1']));
      const deks = deksOf('vm1', kek1);
      assert.deepEqual(deks.disks.get('disk0'), d0, 'the first disk keeps its DEK');
      const d1 = deks.disks.get('disk1');
      assert.ok(d1 && !d1.equals(d0));
      assert.ok(await checkDek(join(ds(), 'vm1', 'disk1.qcow2'), d1));
      // define never encrypts, decrypts or rekeys.
      await assert.rejects(driver.define(spec('vm1', null, ['disk0', 'disk1'])), { code: 'HS_ERR_CONFLICT' });
    });

    test('a wrong KEK is refused and nothing is kept', async () => {
      await assert.rejects(driver.putKey('p/k1', randomBytes(32)), { code: 'HS_ERR_KEY_MISMATCH' });
      assert.ok(driver.keyring.has('p/k1'), 'the right key is still there');
    });

    test('shallow rekey rewrites only the record; deep rekey re-encrypts with new DEKs', async () => {
      const before = images('vm1').map((f) => statSync(join(ds(), 'vm1', f)).mtimeMs);
      const old = deksOf('vm1', kek1);
      await driver.putKey('p/k2', kek2);
      await driver.rekey('vm1', 'p/k2', false);
      assert.deepEqual(
        images('vm1').map((f) => statSync(join(ds(), 'vm1', f)).mtimeMs),
        before,
        'no image was touched',
      );
      assert.throws(() => deksOf('vm1', kek1), { code: 'HS_ERR_KEY_MISMATCH' });
      assert.deepEqual(deksOf('vm1', kek2).disks.get('disk0'), old.disks.get('disk0'));

      await driver.putKey('p/k3', kek3);
      await driver.rekey('vm1', 'p/k3', true);
      assert.equal(record('vm1').generation, 1);
      assert.deepEqual(images('vm1'), ['disk0.g1.qcow2', 'disk1.g1.qcow2'], 'old generation removed');
      const fresh = deksOf('vm1', kek3);
      const path = join(ds(), 'vm1', 'disk0.g1.qcow2');
      assert.ok(await checkDek(path, fresh.disks.get('disk0') as Buffer));
      assert.equal(
        await checkDek(path, old.disks.get('disk0') as Buffer),
        false,
        'the old DEK opens nothing',
      );
    });

    test('clone: its own KEK and DEKs; a plain clone of an encrypted VM is plain', async () => {
      await driver.putKey('p/c1', kek1);
      const rt = await driver.clone('vm1', spec('vm2', 'p/c1', ['disk0', 'disk1']));
      assert.deepEqual(rt.encryption, { kekRef: 'p/c1' });
      const src = deksOf('vm1', kek3);
      const dst = deksOf('vm2', kek1);
      assert.ok(!dst.disks.get('disk0')?.equals(src.disks.get('disk0') as Buffer));
      assert.ok(await checkDek(join(ds(), 'vm2', 'disk0.qcow2'), dst.disks.get('disk0') as Buffer));
      await driver.clone('vm1', spec('vm3', null, ['disk0', 'disk1']));
      assert.equal(record('vm3').bundle, undefined);
      assert.deepEqual(images('vm3'), ['disk0.qcow2', 'disk1.qcow2']);
    });

    test('an agent restart: locked with the spec sealed, unlocked by the right key', async () => {
      await driver.close();
      driver = await openQemuDriver(dir.path, { accel: 'tcg' });
      const rt = await driver.runtime('vm1');
      assert.equal(rt.locked, true);
      assert.deepEqual((await driver.neededKeys()).sort(), ['p/c1', 'p/k3']);
      await assert.rejects(driver.powerOn('vm1'), { code: 'HS_ERR_VM_LOCKED' });
      await driver.putKey('p/k3', kek3);
      assert.equal((await driver.runtime('vm1')).locked, false);
      // Decrypt: plain images of the next generation, the record plain again.
      await driver.decrypt('vm1');
      assert.equal(record('vm1').bundle, undefined);
      assert.deepEqual(images('vm1'), ['disk0.g2.qcow2', 'disk1.g2.qcow2']);
      await driver.close();
    });
  },
);
