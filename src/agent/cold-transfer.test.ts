// A destination agent killed during a cold migration recovers to a consistent state when
// it starts again (through the QEMU driver's load, with real qemu-img images):
// - killed before the ACK (marker `receiving`): the half-received VM is dropped, its
//   home and the temporary files of its disks gone — the source still has the VM;
// - killed after the ACK (marker `received`): the files are put in place and the VM is
//   kept — the source has already deleted its copy.
// The same for a live migration's destination: before the ACK its QEMU is ended and the
// images it created are deleted; after it the VM is kept running.
// And the stream itself: a file that grows while it is sent fails the transfer.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { VmSpec } from './api.js';
import { INCOMING_MARKER, sendColdStream, writeIncomingMarker } from './cold-transfer.js';
import { openQemuDriver } from './qemu-driver.js';
import { smallVmSpec, tempDir } from './testing.js';
import { isPidAlive } from '../qemu/vm-process.js';

const haveQemuImg = existsSync('/usr/bin/qemu-img') && existsSync('/usr/share/OVMF');

describe(
  'cold migration: recovery of an agent killed while receiving',
  { skip: haveQemuImg ? false : 'qemu-utils or ovmf missing', concurrency: 1 },
  () => {
    const dir = tempDir('cold-recover');
    after(() => dir.remove());
    const ds = join(dir.path, 'datastore');
    const spec = (id: string): VmSpec => smallVmSpec(id, ds);

    /** A VM as the destination would hold it mid-way: its disk still under the temporary name. */
    async function halfReceived(
      id: string,
      phase: 'receiving' | 'received',
    ): Promise<{ disk: string; tmp: string }> {
      const driver = await openQemuDriver(dir.path, { accel: 'tcg' });
      await driver.define(spec(id));
      await driver.close();
      const home = join(ds, id);
      const disk = join(home, 'disk0.qcow2');
      const tmp = `${disk}.incoming-mig-1`;
      renameSync(disk, tmp);
      writeIncomingMarker(home, {
        migrationId: 'mig-1',
        phase,
        disks: [disk],
        ...(phase === 'received' ? { received: [{ tmp, final: disk }] } : {}),
      });
      return { disk, tmp };
    }

    test('killed before the ACK: the half-received VM is dropped, nothing of it left', async () => {
      const { tmp } = await halfReceived('vm-before-ack', 'receiving');
      const driver = await openQemuDriver(dir.path, { accel: 'tcg' });
      try {
        assert.equal(existsSync(join(ds, 'vm-before-ack')), false, 'home and temporary files gone');
        assert.equal(existsSync(tmp), false);
        await assert.rejects(async () => driver.runtime('vm-before-ack'), { code: 'HS_ERR_NOT_FOUND' });
      } finally {
        await driver.close();
      }
    });

    test('killed after the ACK: the files are put in place and the VM is kept', async () => {
      const { disk, tmp } = await halfReceived('vm-after-ack', 'received');
      const driver = await openQemuDriver(dir.path, { accel: 'tcg' });
      try {
        assert.equal(existsSync(disk), true, 'the disk is in place');
        assert.equal(existsSync(tmp), false);
        assert.equal(existsSync(join(ds, 'vm-after-ack', INCOMING_MARKER)), false, 'the marker is gone');
        const rt = await driver.runtime('vm-after-ack');
        assert.equal(rt.state, 'stopped');
      } finally {
        await driver.close();
      }
      // A second start changes nothing more.
      const again = await openQemuDriver(dir.path, { accel: 'tcg' });
      assert.equal((await again.runtime('vm-after-ack')).state, 'stopped');
      await again.close();
      assert.deepEqual(
        readdirSync(join(ds, 'vm-after-ack')).filter((f) => f.includes('.incoming-')),
        [],
      );
    });

    /** A VM whose QEMU runs (as a live migration's destination QEMU would), its agent gone. */
    async function liveReceiving(
      id: string,
      phase: 'receiving' | 'received',
    ): Promise<{ pid: number; disk: string }> {
      const driver = await openQemuDriver(dir.path, { accel: 'tcg' });
      await driver.define(spec(id));
      const rt = await driver.powerOn(id);
      assert.ok(rt.pid);
      await driver.close(); // the agent dies; QEMU runs on
      const home = join(ds, id);
      const disk = join(home, 'disk0.qcow2');
      writeIncomingMarker(home, { migrationId: 'mig-1', kind: 'live', phase, disks: [disk] });
      return { pid: rt.pid, disk };
    }

    test('live, killed before the ACK: its QEMU ends, its home and the images made for it go', async () => {
      const { pid, disk } = await liveReceiving('vm-live-before', 'receiving');
      assert.ok(isPidAlive(pid));
      const driver = await openQemuDriver(dir.path, { accel: 'tcg' });
      try {
        const deadline = Date.now() + 10_000;
        while (isPidAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        assert.equal(isPidAlive(pid), false, 'the half-received QEMU ended');
        assert.equal(existsSync(disk), false);
        assert.equal(existsSync(join(ds, 'vm-live-before')), false);
        await assert.rejects(async () => driver.runtime('vm-live-before'), { code: 'HS_ERR_NOT_FOUND' });
      } finally {
        await driver.close();
      }
    });

    test('live, killed after the ACK: the VM is kept running, the marker goes', async () => {
      const { pid, disk } = await liveReceiving('vm-live-after', 'received');
      const driver = await openQemuDriver(dir.path, { accel: 'tcg' });
      try {
        const rt = await driver.runtime('vm-live-after');
        assert.equal(rt.pid, pid);
        assert.ok(isPidAlive(pid));
        assert.equal(existsSync(disk), true);
        assert.equal(existsSync(join(ds, 'vm-live-after', INCOMING_MARKER)), false);
        await driver.powerOff('vm-live-after');
      } finally {
        await driver.close();
      }
    });

    test('a marker torn before its first write counts as unfinished', async () => {
      await halfReceived('vm-torn', 'receiving');
      writeFileSync(join(ds, 'vm-torn', INCOMING_MARKER), '{"migrationId":"mig-1","pha');
      const driver = await openQemuDriver(dir.path, { accel: 'tcg' });
      await driver.close();
      assert.equal(existsSync(join(ds, 'vm-torn')), false);
    });
  },
);

test('a file that grows while it is sent fails the transfer', async () => {
  const dir = tempDir('cold-send');
  const path = join(dir.path, 'grows.img');
  writeFileSync(path, Buffer.alloc(4 * 1024 * 1024, 1));
  const socketPath = join(dir.path, 'out.sock');
  const server = net.createServer((sock) => {
    sock.once('data', () => writeFileSync(path, Buffer.alloc(8 * 1024 * 1024, 2)));
    sock.resume();
  });
  await new Promise<void>((r) => server.listen(socketPath, r));
  try {
    await assert.rejects(
      sendColdStream(socketPath, [], [{ name: 'disk/disk0', path }], () => undefined),
      {
        code: 'HS_ERR_MIGRATION_FAILED',
      },
    );
  } finally {
    server.close();
    rmSync(dir.path, { recursive: true, force: true });
  }
});
