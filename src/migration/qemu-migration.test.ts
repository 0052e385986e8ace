/**
 * Live migration of a real QEMU VM through the channel (TCG, 128 MiB, OVMF at the UEFI
 * shell; qemu-experiments §3), one VM booted once and moved along a chain:
 *
 *   A ──aes-256-gcm──▶ B ──none (plaintext)──▶ C ──aes-256-gcm, byte flipped──✗ D
 *                                              └─ a recording of A→B replayed ──✗ E
 *
 * Each hop goes sender → TCP on 127.0.0.1 → a tee proxy (the capture) → receiver. A marker
 * typed at the shell of A lives in guest RAM (the shell's line buffer and history, as
 * UTF-16 and ASCII): the capture of A→B must not contain it, that of B→C must (so the
 * test can fail). After each good hop the destination runs and its console answers;
 * after the bad ones the source still runs and answers, the destination never ran.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { HypersealError } from '../errors.js';
import type { ChannelAddress } from './channel.js';
import { MigrationReceiver } from './channel.js';
import { TestVm, migrateThroughChannel, qemuUnavailable } from './testing.js';

const skip = await qemuUnavailable();
const dir = mkdtempSync(join(tmpdir(), 'hs-qmig-'));
const vms: TestVm[] = [];
process.on('exit', () => vms.forEach((vm) => vm.killNow()));
after(async () => {
  await Promise.all(vms.map((vm) => vm.kill()));
  rmSync(dir, { recursive: true, force: true });
});

async function vm(name: string, incoming: boolean): Promise<TestVm> {
  const v = await TestVm.start({ dir, name, incoming });
  vms.push(v);
  return v;
}

/** A proxy between the agents that records what crosses it, and may flip one byte. */
function tee(flipAtByte?: number): {
  via: (to: ChannelAddress) => Promise<ChannelAddress>;
  captured: () => Buffer;
  close: () => void;
} {
  const chunks: Buffer[] = [];
  let server: net.Server | undefined;
  return {
    captured: () => Buffer.concat(chunks),
    close: () => server?.close(),
    via: async (to) => {
      server = net.createServer((client) => {
        const upstream = net.connect(to as { host: string; port: number });
        let offset = 0;
        client.on('data', (c: Buffer) => {
          let out = c;
          if (flipAtByte !== undefined && offset <= flipAtByte && flipAtByte < offset + c.length) {
            out = Buffer.from(c);
            out[flipAtByte - offset] = (out[flipAtByte - offset] as number) ^ 0x01;
          }
          offset += c.length;
          chunks.push(out);
          upstream.write(out);
        });
        upstream.on('data', (c: Buffer) => client.write(c));
        for (const [a, b] of [
          [client, upstream],
          [upstream, client],
        ] as const) {
          a.on('end', () => b.end());
          a.on('error', () => b.destroy());
          a.on('close', () => b.destroy());
        }
      });
      await new Promise<void>((r) => server?.listen(0, '127.0.0.1', r));
      return { host: '127.0.0.1', port: (server.address() as net.AddressInfo).port };
    },
  };
}

const QEVM = Buffer.from('5145564d00000003', 'hex');
const forms = (marker: string): Buffer[] => [Buffer.from(marker, 'latin1'), Buffer.from(marker, 'utf16le')];

void test(
  'a VM migrates through the channel, encrypted and not, and tampering is refused',
  { skip },
  async (t) => {
    const marker = `HSMARK${randomBytes(8).toString('hex').toUpperCase()}`;
    const a = await vm('a', false);
    await a.waitForConsole('Shell>', 90_000);
    await a.echo(marker);
    const stream = tee();
    let recordingAB: Buffer | undefined;
    let b: TestVm | undefined;

    await t.test(
      'A → B encrypted: B runs and answers; the wire holds no marker, no QEMU header',
      async () => {
        b = await vm('b', true);
        assert.equal(await b.status(), 'inmigrate');
        const out = await migrateThroughChannel(a, b, { cipher: 'aes-256-gcm', via: stream.via });
        stream.close();
        assert.equal(out.sourceStatus, 'completed');
        assert.ok(!(out.sender instanceof HypersealError), String(out.sender));
        assert.ok(!(out.receiver instanceof HypersealError), String(out.receiver));
        // ~45 MB for 128 MiB of mostly-zero RAM (qemu-experiments §3).
        assert.ok(out.sender.bytes > 10_000_000, `${out.sender.bytes} bytes`);
        assert.equal(out.receiver.bytes, out.sender.bytes);
        assert.equal(await a.status(), 'postmigrate');
        await b.qmp.waitForEvent('RESUME', { timeoutMs: 10_000 }).catch(() => undefined);
        assert.equal(await b.status(), 'running');
        await b.echo('migrated-ok');
        recordingAB = stream.captured();
        assert.equal(recordingAB.length, out.sender.wireBytes);
        for (const form of forms(marker))
          assert.ok(!recordingAB.includes(form), 'marker on the encrypted wire');
        // QEMU's stream starts with "QEVM": in the clear it would be at offset 16+id+16+16.
        assert.ok(!recordingAB.includes(Buffer.from('QEVM')), 'QEMU stream header on the encrypted wire');
        await a.kill();
      },
    );

    let c: TestVm | undefined;
    await t.test('B → C plaintext: C runs and answers; the wire does hold the marker', async (st) => {
      assert.ok(b !== undefined);
      c = await vm('c', true);
      const plain = tee();
      const out = await migrateThroughChannel(b, c, { cipher: 'none', via: plain.via });
      plain.close();
      assert.equal(out.sourceStatus, 'completed');
      assert.ok(!(out.receiver instanceof HypersealError), String(out.receiver));
      assert.equal(await c.status(), 'running');
      await c.echo('migrated-again');
      const wire = plain.captured();
      assert.ok(
        forms(marker).some((form) => wire.includes(form)),
        'the marker typed on A is not in the plaintext capture: the encrypted check above proves nothing',
      );
      assert.ok(wire.includes(QEVM));
      st.diagnostic(`B→C none: ${wire.length} wire bytes, migrate ${out.migrateMs.toFixed(0)} ms`);
      await b.kill();
    });

    await t.test('C → D with one byte flipped between the agents: refused, C keeps running', async () => {
      assert.ok(c !== undefined);
      const d = await vm('d', true);
      const bad = tee(8 * 1024 * 1024 + 123);
      const out = await migrateThroughChannel(c, d, { cipher: 'aes-256-gcm', via: bad.via });
      bad.close();
      assert.equal(out.sourceStatus, 'failed');
      assert.ok(out.receiver instanceof HypersealError);
      assert.equal(out.receiver.code, 'HS_ERR_MIGRATION_BAD_TAG');
      assert.ok(out.sender instanceof HypersealError);
      assert.match(out.sender.code, /^HS_ERR_MIGRATION_/);
      // The source VM was never stopped (the flip came in the first pass) or was resumed.
      let status = await c.status();
      if (status === 'paused') {
        await c.qmp.execute('cont');
        status = await c.status();
      }
      assert.equal(status, 'running');
      await c.echo('still-here');
      // The destination's load failed: QEMU 7.2 exits when an incoming migration fails.
      assert.ok(await d.waitForExit(30_000), `D is still ${await d.status().catch(() => '?')}`);
    });

    await t.test(
      'the A → B recording replayed to a later migration’s receiver: refused before QEMU',
      async () => {
        assert.ok(recordingAB !== undefined);
        const e = await vm('e', true);
        await e.qmp.execute('migrate-incoming', { uri: `unix:${e.incomingSocketPath}` });
        const receiver = await MigrationReceiver.listen({
          migrationId: 'mig-later',
          cipher: 'aes-256-gcm',
          key: randomBytes(32),
          nonce: randomBytes(8),
          listen: { host: '127.0.0.1', port: 0 },
          qemuSocketPath: e.incomingSocketPath,
        });
        const attacker = net.connect(receiver.address as { host: string; port: number });
        attacker.on('error', () => undefined);
        attacker.write(recordingAB);
        await assert.rejects(receiver.done, (err: unknown) => {
          assert.ok(err instanceof HypersealError);
          assert.equal(err.code, 'HS_ERR_MIGRATION_WRONG_ID');
          return true;
        });
        attacker.destroy();
        // E's QEMU never got a connection: still waiting, unharmed.
        assert.equal(await e.status(), 'inmigrate');
      },
    );
  },
);
