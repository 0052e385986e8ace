// SerialSocketReader against a stand-in for QEMU's socket chardev (a unix socket server
// serving one client). encrypted-vm.test.ts runs it against real QEMU.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { HypersealError } from '../errors.js';
import { SerialSocketReader } from './serial-socket.js';

const dir = mkdtempSync(join(tmpdir(), 'hs-serial-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(what: string, cond: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

interface FakeQemu {
  server: Server;
  clients: Socket[];
  received: Buffer[];
  close(): Promise<void>;
}

async function fakeQemu(path: string): Promise<FakeQemu> {
  const clients: Socket[] = [];
  const received: Buffer[] = [];
  const server = createServer((s) => {
    clients.push(s);
    s.on('data', (d: Buffer) => received.push(d));
    s.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return {
    server,
    clients,
    received,
    close: async () => {
      for (const c of clients) c.destroy();
      // Node's server unlinks its socket file on close, as QEMU does.
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

void test('output in memory with byte offsets, UTF-8-safe text chunks, input to the guest', async () => {
  const path = join(dir, 'a.sock');
  const qemu = await fakeQemu(path);
  const reader = new SerialSocketReader(path, { reconnectMs: 20 });
  try {
    await reader.waitConnected(5_000);
    await until('a client', () => qemu.clients.length === 1);
    const guest = qemu.clients[0] as Socket;
    guest.write('BdsDxe: loading\r\n');
    // "é" is two bytes: send its first byte alone.
    guest.write(Buffer.from([0x55, 0x45, 0x46, 0x49, 0x20, 0xc3]));
    await until('output', () => reader.end === 23);
    assert.equal(reader.read().data.toString('latin1'), 'BdsDxe: loading\r\nUEFI \xc3');
    const text = reader.chunk(0);
    assert.deepEqual(text, { offset: 0, next: 22, data: 'BdsDxe: loading\r\nUEFI ' });
    guest.write(Buffer.from([0xa9, 0x21]));
    await until('the rest', () => reader.end === 25);
    assert.deepEqual(reader.chunk(text.next), { offset: 22, next: 25, data: 'é!' });
    assert.deepEqual(reader.read(17, 4), {
      offset: 17,
      data: Buffer.from('UEFI'),
      nextOffset: 21,
      restarted: false,
    });
    assert.deepEqual(reader.read(25), {
      offset: 25,
      data: Buffer.alloc(0),
      nextOffset: 25,
      restarted: false,
    });

    await reader.write('dir\r');
    await until('input', () => Buffer.concat(qemu.received).toString() === 'dir\r');
  } finally {
    reader.close();
    await qemu.close();
  }
});

void test('bounded memory: the oldest bytes go first, reads from a dropped offset start at the oldest kept', async () => {
  const path = join(dir, 'b.sock');
  const qemu = await fakeQemu(path);
  const reader = new SerialSocketReader(path, { reconnectMs: 20, bufferBytes: 100 });
  try {
    await reader.waitConnected(5_000);
    await until('a client', () => qemu.clients.length === 1);
    const guest = qemu.clients[0] as Socket;
    for (let i = 0; i < 30; i++) guest.write(`line ${String(i).padStart(2, '0')}\n`); // 8 bytes each
    await until('all output', () => reader.end === 240);
    assert.equal(reader.start, 140);
    const r = reader.read(0);
    assert.equal(r.offset, 140);
    assert.equal(r.data.length, 100);
    assert.equal(r.nextOffset, 240);
    assert.equal(r.restarted, false);
    assert.ok(r.data.toString().endsWith('line 29\n'));
    assert.equal(reader.read(232).data.toString(), 'line 29\n');
  } finally {
    reader.close();
    await qemu.close();
  }
});

void test('reconnects to the same QEMU keeping offsets; a new QEMU restarts them at 0', async () => {
  const path = join(dir, 'c.sock');
  let qemu = await fakeQemu(path);
  const reader = new SerialSocketReader(path, { reconnectMs: 20 });
  try {
    await reader.waitConnected(5_000);
    await until('a client', () => qemu.clients.length === 1);
    (qemu.clients[0] as Socket).write('first boot\n');
    await until('output', () => reader.end === 11);

    // The connection drops, the same QEMU goes on (as after a chardev hiccup).
    (qemu.clients[0] as Socket).destroy();
    await until('a reconnect', () => qemu.clients.length === 2 && reader.connected);
    (qemu.clients[1] as Socket).write('more\n');
    await until('more output', () => reader.end === 16);
    assert.equal(reader.read(0).data.toString(), 'first boot\nmore\n');
    assert.equal(reader.connectionCount, 2);

    // QEMU exits; while nothing listens, the reader keeps trying; a new QEMU starts.
    await qemu.close();
    await until('the disconnect', () => !reader.connected);
    await sleep(100);
    assert.equal(reader.end, 16, 'what the old QEMU said is still readable');
    await assert.rejects(
      reader.write('x'),
      (err: unknown) => err instanceof HypersealError && err.code === 'HS_ERR_QEMU_NOT_RUNNING',
    );
    qemu = await fakeQemu(path);
    await reader.waitConnected(5_000);
    await until('a client', () => qemu.clients.length === 1);
    (qemu.clients[0] as Socket).write('second boot\n');
    await until('new output', () => reader.end === 12);
    assert.deepEqual(reader.read(16), {
      offset: 0,
      data: Buffer.from('second boot\n'),
      nextOffset: 12,
      restarted: true,
    });
  } finally {
    reader.close();
    await qemu.close();
  }
});

void test('close(): no more reconnects, memory wiped; waitConnected times out', async () => {
  const path = join(dir, 'd.sock');
  const reader = new SerialSocketReader(path, { reconnectMs: 20 });
  await assert.rejects(
    reader.waitConnected(100),
    (err: unknown) => err instanceof HypersealError && err.code === 'HS_ERR_QEMU_SERIAL_TIMEOUT',
  );
  reader.close();
  const qemu = await fakeQemu(path);
  try {
    await sleep(150);
    assert.equal(qemu.clients.length, 0);
    assert.equal(reader.connected, false);
    assert.equal(reader.end, 0);
  } finally {
    await qemu.close();
  }
});
