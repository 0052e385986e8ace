// Key safety of the embedded key server, through the real `hyperseal` binary where an
// operator would use it: backup (passphrase and RSA public key), backup verify (wrong
// passphrase, a flipped byte anywhere), restore (same ids, values, attributes, owners,
// grants, server identity; refusal of a non-empty store; nothing written on failure),
// master key rotation (kill -9 at every step leaves a store that opens with the old or
// the new key; passphrase master keys), and two key servers on one real PostgreSQL.
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { KmipClient } from '../../src/kmip/client.js';
import { attr } from '../../src/kmip/attributes.js';
import { KMS_FILES, KmsDataDir } from '../../src/kms/service.js';
import { KmsEngine } from '../../src/kms/engine.js';
import { useTempConfigHome } from '../support/manager.js';
import { runHyperseal, startKmsDaemon } from '../support/kms-process.js';
import type { PostgresServer } from '../support/postgres.js';
import { startPostgres } from '../support/postgres.js';

const PASS = 'correct horse battery staple';

function envWith(extra: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('HYPERSEAL_')) delete env[k];
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) env[k] = v;
  return env;
}

/** Everything about the store's objects a restore must bring back, material included. */
async function snapshot(dir: KmsDataDir): Promise<string> {
  const objs = await dir.store.exportObjects();
  return JSON.stringify(
    objs.map((o) => ({ ...o, material: o.material?.toString('hex') ?? null })),
    (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v),
  );
}

function listing(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

describe('kms backup, restore and master key rotation', { concurrency: 1 }, () => {
  let restoreConfig: () => void;
  let root: string;
  let dataDir: string;
  let expected: string;
  const env = (): NodeJS.ProcessEnv => envWith({ HYPERSEAL_KMS_BACKUP_PASSPHRASE: PASS });

  before(async () => {
    restoreConfig = useTempConfigHome();
    root = mkdtempSync(join(tmpdir(), 'hs-keysafety-'));
    dataDir = join(root, 'kms');
    // A store with what a backup must keep: several owners, a grant, names and custom
    // attributes, an active key, a destroyed one (metadata only).
    const dd = await KmsDataDir.open({ dataDir });
    const engine = new KmsEngine(dd.store);
    void engine;
    const now = Date.now();
    for (let i = 0; i < 5; i++) {
      await dd.store.insert({
        uid: `obj-${i}`,
        owner: i % 2 === 0 ? 'hyperseal-manager' : 'operator',
        objectType: 2,
        state: i === 4 ? 5 : 2,
        algorithm: 3,
        lengthBits: 256,
        attributes: [attr.name(`key-${i}`), attr.text('x-purpose', `vm-${i}`)],
        material: i === 4 ? undefined : randomBytes(32),
      });
    }
    await dd.store.grant('obj-1', 'hyperseal-manager');
    await dd.store.settled();
    assert.ok(Date.now() >= now);
    expected = await snapshot(dd);
    await dd.close();
  });
  after(() => {
    rmSync(root, { recursive: true, force: true });
    restoreConfig();
  });

  test('backup → verify → status; the passphrase never on the command line', async () => {
    const out = join(root, 'kms.backup');
    const r = await runHyperseal(['kms', 'backup', '--data-dir', dataDir, '--out', out], env());
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /backed up 5 objects/);
    const v = await runHyperseal(['kms', 'backup', 'verify', out, '--json'], env());
    assert.equal(v.code, 0, v.stderr);
    const info = JSON.parse(v.stdout) as { ok: boolean; objects: number; withMaterial: number };
    assert.deepEqual([info.ok, info.objects, info.withMaterial], [true, 5, 4]);
    // The file holds no key material in clear.
    const bytes = readFileSync(out);
    const dd = await KmsDataDir.open({ dataDir });
    for (const o of await dd.store.exportObjects()) {
      if (o.material) assert.equal(bytes.indexOf(o.material), -1);
    }
    const st = await dd.store.backupState();
    assert.equal(st.lastBackup?.objects, 5);
    assert.equal(st.lastBackup?.newestObjectAt, st.newestObjectAt);
    await dd.close();
    const s = await runHyperseal(['kms', 'backup-status', '--data-dir', dataDir], env());
    assert.match(s.stdout, /last backup .* \(5 objects\)/);
    // A passphrase file works the same; no passphrase and no terminal is a clear error.
    writeFileSync(join(root, 'pass.txt'), `${PASS}\n`, { mode: 0o600 });
    const f = await runHyperseal(
      ['kms', 'backup', 'verify', out, '--passphrase-file', join(root, 'pass.txt')],
      envWith({}),
    );
    assert.equal(f.code, 0, f.stderr);
    const none = await runHyperseal(['kms', 'backup', 'verify', out], envWith({}));
    assert.equal(none.code, 2);
    assert.match(none.stderr, /HYPERSEAL_KMS_BACKUP_PASSPHRASE/);
  });

  test('wrong passphrase: a clear error; a flipped byte anywhere: detected', async () => {
    const out = join(root, 'kms.backup');
    const wrong = await runHyperseal(
      ['kms', 'backup', 'verify', out],
      envWith({ HYPERSEAL_KMS_BACKUP_PASSPHRASE: 'not the passphrase' }),
    );
    assert.equal(wrong.code, 4);
    assert.match(wrong.stderr, /wrong passphrase .*\[HS_ERR_KMS_BACKUP_KEY\]/);
    const bytes = readFileSync(out);
    // Magic, header length, header, ciphertext, tag, checksum: one position in each.
    const positions = [0, 9, 20, 200, bytes.length - 60, bytes.length - 40, bytes.length - 1];
    for (const pos of positions) {
      const bad = Buffer.from(bytes);
      bad[pos] = (bad[pos] ?? 0) ^ 0x01;
      const file = join(root, `flipped-${pos}.backup`);
      writeFileSync(file, bad);
      const r = await runHyperseal(['kms', 'backup', 'verify', file], env());
      assert.notEqual(r.code, 0, `flip at ${pos} not detected`);
      assert.match(r.stderr, /HS_ERR_KMS_BACKUP_CORRUPT/, `flip at ${pos}: ${r.stderr}`);
    }
    // Truncated.
    writeFileSync(join(root, 'short.backup'), bytes.subarray(0, bytes.length - 100));
    const t = await runHyperseal(['kms', 'backup', 'verify', join(root, 'short.backup')], env());
    assert.match(t.stderr, /HS_ERR_KMS_BACKUP_CORRUPT/);
  });

  test('restore: same ids, values, attributes, owners and grants; refuses a non-empty store; nothing written on failure', async () => {
    const out = join(root, 'kms.backup');
    const target = join(root, 'restored');
    // Wrong passphrase and corrupt file: nothing appears.
    const before = listing(root);
    const wrong = await runHyperseal(
      ['kms', 'restore', '--data-dir', target, '--from', out],
      envWith({ HYPERSEAL_KMS_BACKUP_PASSPHRASE: 'not the passphrase' }),
    );
    assert.equal(wrong.code, 4, wrong.stderr);
    const bad = await runHyperseal(
      ['kms', 'restore', '--data-dir', target, '--from', join(root, 'flipped-200.backup')],
      env(),
    );
    assert.match(bad.stderr, /HS_ERR_KMS_BACKUP_CORRUPT/);
    assert.deepEqual(listing(root), before);
    assert.equal(existsSync(target), false);

    const r = await runHyperseal(['kms', 'restore', '--data-dir', target, '--from', out], env());
    assert.equal(r.code, 0, r.stderr);
    const dd = await KmsDataDir.open({ dataDir: target });
    assert.equal(await snapshot(dd), expected);
    assert.equal(dd.caCertPem(), readFileSync(join(dataDir, KMS_FILES.ca), 'utf8'));
    // The restored store counts as backed up by the file it came from.
    assert.notEqual((await dd.store.backupState()).lastBackup, null);
    await dd.close();

    // Non-empty: refused (exit 5) and unchanged; --force replaces.
    const again = await runHyperseal(['kms', 'restore', '--data-dir', dataDir, '--from', out], env());
    assert.equal(again.code, 5);
    assert.match(again.stderr, /HS_ERR_KMS_RESTORE_NOT_EMPTY/);
    const forced = await runHyperseal(
      ['kms', 'restore', '--data-dir', target, '--from', out, '--force'],
      env(),
    );
    assert.equal(forced.code, 0, forced.stderr);
    const dd2 = await KmsDataDir.open({ dataDir: target });
    assert.equal(await snapshot(dd2), expected);
    await dd2.close();
  });

  test('backup for an RSA public key; only the matching private key opens it', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 3072 });
    writeFileSync(join(root, 'op.pub'), publicKey.export({ type: 'spki', format: 'pem' }));
    writeFileSync(join(root, 'op.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    writeFileSync(join(root, 'other.key'), other.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    const out = join(root, 'rsa.backup');
    const b = await runHyperseal(
      ['kms', 'backup', '--data-dir', dataDir, '--out', out, '--recipient', join(root, 'op.pub')],
      envWith({}),
    );
    assert.equal(b.code, 0, b.stderr);
    const v = await runHyperseal(
      ['kms', 'backup', 'verify', out, '--identity', join(root, 'op.key')],
      envWith({}),
    );
    assert.equal(v.code, 0, v.stderr);
    assert.match(v.stdout, /RSA public key/);
    const w = await runHyperseal(
      ['kms', 'backup', 'verify', out, '--identity', join(root, 'other.key')],
      envWith({}),
    );
    assert.match(w.stderr, /HS_ERR_KMS_BACKUP_KEY/);
    const target = join(root, 'restored-rsa');
    const r = await runHyperseal(
      ['kms', 'restore', '--data-dir', target, '--from', out, '--identity', join(root, 'op.key')],
      envWith({}),
    );
    assert.equal(r.code, 0, r.stderr);
    const dd = await KmsDataDir.open({ dataDir: target });
    assert.equal(await snapshot(dd), expected);
    await dd.close();
  });

  test('master key rotation: kill -9 at every step leaves a store that opens with the old or the new key', async () => {
    const points = [
      'kms-rotate-after-pending-key',
      'kms-rotate-after-sealed-files',
      'kms-rotate-after-store',
      'kms-rotate-after-key-file',
      '',
    ];
    for (const point of points) {
      const dir = join(root, `rot-${point || 'complete'}`);
      const keyFile = join(root, `rot-${point || 'complete'}.key`);
      const backup = join(root, 'kms.backup');
      assert.equal(
        (
          await runHyperseal(
            ['kms', 'restore', '--data-dir', dir, '--from', backup, '--master-key-file', keyFile],
            env(),
          )
        ).code,
        0,
      );
      const oldKey = readFileSync(keyFile, 'utf8');
      const r = await runHyperseal(
        ['kms', 'rotate-master-key', '--data-dir', dir, '--master-key-file', keyFile],
        envWith({ ...(point ? { HYPERSEAL_CRASH_POINT: point } : {}) }),
      );
      if (point) assert.equal(r.signal, 'SIGKILL', `${point}: ${r.stderr}`);
      else assert.equal(r.code, 0, r.stderr);
      // It opens (finishing or discarding the rotation) with whatever key file is in place.
      const dd = await KmsDataDir.open({ dataDir: dir, masterKeyFile: keyFile, mustExist: true });
      assert.equal(await snapshot(dd), expected, point);
      await dd.close();
      const nowKey = readFileSync(keyFile, 'utf8');
      const rotated =
        point === 'kms-rotate-after-store' || point === 'kms-rotate-after-key-file' || point === '';
      assert.equal(nowKey !== oldKey, rotated, `${point}: key ${rotated ? 'not ' : ''}changed`);
      assert.deepEqual(
        listing(dir).filter((f) => f.endsWith('.next')),
        [],
        `${point}: leftovers`,
      );
      assert.equal(existsSync(`${keyFile}.next`), false);
      if (rotated) {
        // The old key no longer opens it.
        writeFileSync(join(root, 'old.key'), oldKey);
        await assert.rejects(
          KmsDataDir.open({ dataDir: dir, masterKeyFile: join(root, 'old.key') }),
          /HS_ERR_KMS_MASTER_KEY|does not open/,
        );
      }
    }
  });

  test('rotation from a key file to a passphrase, cut short before and after its commit', async () => {
    for (const point of ['kms-rotate-after-pending-key', 'kms-rotate-after-store']) {
      const dir = join(root, `x-${point}`);
      const keyFile = join(root, `x-${point}.key`);
      const restored = await runHyperseal(
        [
          'kms',
          'restore',
          '--data-dir',
          dir,
          '--from',
          join(root, 'kms.backup'),
          '--master-key-file',
          keyFile,
        ],
        env(),
      );
      assert.equal(restored.code, 0, restored.stderr);
      const r = await runHyperseal(
        [
          'kms',
          'rotate-master-key',
          '--data-dir',
          dir,
          '--master-key-file',
          keyFile,
          '--new-master-passphrase',
        ],
        envWith({ HYPERSEAL_KMS_NEW_MASTER_PASSPHRASE: 'the new passphrase', HYPERSEAL_CRASH_POINT: point }),
      );
      assert.equal(r.signal, 'SIGKILL', r.stderr);
      const committed = point === 'kms-rotate-after-store';
      const dd = await KmsDataDir.open(
        committed
          ? { dataDir: dir, masterPassphrase: 'the new passphrase' }
          : { dataDir: dir, masterKeyFile: keyFile },
      );
      assert.equal(await snapshot(dd), expected, point);
      await dd.close();
      assert.equal(existsSync(join(dir, KMS_FILES.kdf)), committed, point);
      assert.deepEqual(
        listing(dir).filter((f) => f.endsWith('.next')),
        [],
        point,
      );
    }
  });

  test('a master key from a passphrase (scrypt), rotated to another passphrase', async () => {
    const dir = join(root, 'pass-kms');
    const p1 = envWith({
      HYPERSEAL_KMS_BACKUP_PASSPHRASE: PASS,
      HYPERSEAL_KMS_MASTER_PASSPHRASE: 'first master passphrase',
    });
    const r = await runHyperseal(
      ['kms', 'restore', '--data-dir', dir, '--from', join(root, 'kms.backup'), '--master-passphrase'],
      p1,
    );
    assert.equal(r.code, 0, r.stderr);
    assert.ok(existsSync(join(dir, KMS_FILES.kdf)));
    const rot = await runHyperseal(
      ['kms', 'rotate-master-key', '--data-dir', dir, '--master-passphrase', '--new-master-passphrase'],
      { ...p1, HYPERSEAL_KMS_NEW_MASTER_PASSPHRASE: 'second master passphrase' },
    );
    assert.equal(rot.code, 0, rot.stderr);
    await assert.rejects(
      KmsDataDir.open({ dataDir: dir, masterPassphrase: 'first master passphrase' }),
      /does not open/,
    );
    const dd = await KmsDataDir.open({ dataDir: dir, masterPassphrase: 'second master passphrase' });
    assert.equal(await snapshot(dd), expected);
    await dd.close();
  });
});

describe('two key servers on one PostgreSQL', { concurrency: 1 }, () => {
  let restoreConfig: () => void;
  let pg: PostgresServer;
  let root: string;

  before(async () => {
    restoreConfig = useTempConfigHome();
    pg = await startPostgres();
    root = mkdtempSync(join(tmpdir(), 'hs-kms-ha-'));
  });
  after(async () => {
    await pg?.stop();
    rmSync(root, { recursive: true, force: true });
    restoreConfig();
  });

  test('keys created through one are read through the other; a foreign CA is refused', async () => {
    const env = envWith({ HYPERSEAL_KMS_MASTER_KEY: randomBytes(32).toString('base64') });
    const a = join(root, 'a');
    const b = join(root, 'b');
    const first = await startKmsDaemon(a, ['--store', pg.url], env);
    const init = await runHyperseal(
      ['kms', 'init-replica', '--from', a, '--data-dir', b, '--store', pg.url],
      env,
    );
    assert.equal(init.code, 0, init.stderr);
    const second = await startKmsDaemon(b, ['--store', pg.url], env);
    const cert = await runHyperseal(
      ['kms', 'client-cert', '--data-dir', a, '--store', pg.url, '--name', 'app', '--out', join(root, 'app')],
      env,
    );
    assert.equal(cert.code, 0, cert.stderr);
    const client = (port: number): KmipClient =>
      new KmipClient({
        host: '127.0.0.1',
        port,
        ca: readFileSync(join(a, KMS_FILES.ca)),
        cert: readFileSync(join(root, 'app.pem')),
        key: readFileSync(join(root, 'app.key')),
      });
    const ca = client(first.port);
    const cb = client(second.port);
    try {
      // Each replica has its own server certificate from the same CA.
      assert.notEqual(
        readFileSync(join(a, KMS_FILES.serverCert), 'utf8'),
        readFileSync(join(b, KMS_FILES.serverCert), 'utf8'),
      );
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push(await ca.create({ name: `ha-${i}` }));
      for (const id of ids) {
        const [x, y] = [await ca.get(id), await cb.get(id)];
        assert.deepEqual(x.material, y.material);
      }
      const id = await cb.create({ name: 'from-b' });
      assert.deepEqual(await ca.locate({ name: 'from-b' }), [id]);
      // A key server with its own CA on the same store is refused.
      const rogue = await runHyperseal(
        [
          'kms',
          'client-cert',
          '--data-dir',
          join(root, 'rogue'),
          '--store',
          pg.url,
          '--name',
          'x',
          '--out',
          join(root, 'x'),
        ],
        env,
      );
      assert.notEqual(rogue.code, 0);
      assert.match(rogue.stderr, /init-replica/);
      // Backup of the shared store, through any replica.
      const bk = await runHyperseal(
        ['kms', 'backup', '--data-dir', b, '--store', pg.url, '--out', join(root, 'ha.backup')],
        { ...env, HYPERSEAL_KMS_BACKUP_PASSPHRASE: PASS },
      );
      assert.equal(bk.code, 0, bk.stderr);
      assert.match(bk.stdout, /backed up 6 objects/);
    } finally {
      ca.close();
      cb.close();
      await first.stop();
      await second.stop();
    }
  });
});
