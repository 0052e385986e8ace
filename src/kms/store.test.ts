// The key store at rest and across crashes: key material is sealed on disk, the master key
// is checked and never silently replaced, tampering is detected, first start survives
// kill -9 at any point, and a key the client was told about is never lost to kill -9.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { X509Certificate, createHash, createPrivateKey, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { open } from '../crypto/aead.js';
import { HypersealError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { attr, encodeAttribute, encodeSymmetricKey } from '../kmip/attributes.js';
import { KmipClient } from '../kmip/client.js';
import { CryptographicAlgorithm, ObjectType, Operation, ResultStatus, State } from '../kmip/enums.js';
import type { RequestBatchItem, ResponseBatchItem } from '../kmip/messages.js';
import { KMIP_1_1, decodeResponse, encodeRequest, optional } from '../kmip/messages.js';
import { Tag } from '../kmip/tags.js';
import { decodeTtlv, encodeTtlv, ttlv } from '../kmip/ttlv.js';
import { KmsEngine } from './engine.js';
import { defaultMasterKeyPath } from './master-key.js';
import { KMS_FILES, KmsDataDir, startKms } from './service.js';

const root = mkdtempSync(join(tmpdir(), 'hs-'));
process.env.XDG_CONFIG_HOME = join(root, 'xdg');
delete process.env.HYPERSEAL_KMS_MASTER_KEY;
delete process.env.HYPERSEAL_KMS_MASTER_KEY_FILE;
after(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
/** A fresh data directory and a master key file outside it. */
function place(): { dataDir: string; masterKeyFile: string } {
  const base = join(root, `case-${++n}`);
  return { dataDir: join(base, 'data'), masterKeyFile: join(base, 'secrets', 'master.key') };
}

/** Every file under `dir`, with its bytes. */
function filesUnder(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) for (const [p, b] of filesUnder(path)) out.set(p, b);
    else out.set(path, readFileSync(path));
  }
  return out;
}

/** Which files contain `needle` anywhere in their bytes. */
function filesContaining(files: Map<string, Buffer>, needle: Buffer): string[] {
  return [...files].filter(([, bytes]) => bytes.includes(needle)).map(([p]) => p);
}

function snapshot(dir: string): Record<string, string> {
  return Object.fromEntries(
    [...filesUnder(dir)].map(([p, b]) => [relative(dir, p), createHash('sha256').update(b).digest('hex')]),
  );
}

/** `p` may be a promise or a function returning one (which may also throw synchronously). */
async function rejectsWith(
  p: Promise<unknown> | (() => Promise<unknown>),
  code: ErrorCode,
): Promise<HypersealError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    assert.ok(err instanceof HypersealError, `expected HypersealError ${code}, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}, but it succeeded`);
}

function frame(items: RequestBatchItem[]): Buffer {
  return encodeTtlv(encodeRequest({ protocolVersion: KMIP_1_1, batchItems: items }));
}

const registerItem = (material: Buffer, name?: string): RequestBatchItem => ({
  operation: Operation.Register,
  payload: [
    ttlv.enum(Tag.ObjectType, ObjectType.SymmetricKey),
    ttlv.struct(Tag.TemplateAttribute, name === undefined ? [] : [encodeAttribute(attr.name(name))]),
    encodeSymmetricKey({ algorithm: CryptographicAlgorithm.AES, lengthBits: material.length * 8, material }),
  ],
});

const createItem = (): RequestBatchItem => ({
  operation: Operation.Create,
  payload: [
    ttlv.enum(Tag.ObjectType, ObjectType.SymmetricKey),
    ttlv.struct(Tag.TemplateAttribute, [
      encodeAttribute(attr.cryptographicAlgorithm(CryptographicAlgorithm.AES)),
      encodeAttribute(attr.cryptographicLength(256)),
    ]),
  ],
});

async function one(
  engine: KmsEngine,
  item: RequestBatchItem,
  identity = 'alice',
): Promise<ResponseBatchItem> {
  const res = decodeResponse(decodeTtlv(await engine.handle(frame([item]), identity)));
  assert.equal(res.batchItems.length, 1);
  return res.batchItems[0]!;
}

function uidOf(item: ResponseBatchItem): string {
  assert.equal(item.resultStatus, ResultStatus.Success, item.resultMessage);
  const uid = optional(item.payload ?? [], Tag.UniqueIdentifier, 'TextString')?.value;
  assert.ok(uid !== undefined);
  return uid;
}

/** Registers `material` through the engine (as a client would) and returns its uid. */
async function register(engine: KmsEngine, material: Buffer, name?: string): Promise<string> {
  return uidOf(await one(engine, registerItem(Buffer.from(material), name)));
}

const FILE_CONTEXT = (name: string): Buffer => Buffer.from(`hyperseal-kms-file/v1\0${name}`, 'utf8');
const readKey = (file: string): Buffer => Buffer.from(readFileSync(file, 'utf8').trim(), 'base64');

/** DER body of a PEM, to search for the key in binary form too. */
const pemBody = (pem: string): Buffer =>
  Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');

// ---------------------------------------------------------------------------------------

void test('key material, private keys and the master key are never in the data directory in plaintext', async () => {
  const { dataDir, masterKeyFile } = place();
  const kms = await startKms({ dataDir, masterKeyFile, port: 0 });
  const cert = await kms.dataDir.issueClientCertificate('alice');
  const client = new KmipClient({
    host: kms.host,
    port: kms.port,
    ca: kms.dataDir.caCertPem(),
    cert: cert.certPem,
    key: cert.keyPem,
  });
  // Controls: a text marker and raw bytes, stored in plaintext attributes on purpose.
  const marker = `plaintext-marker-${randomBytes(8).toString('hex')}`;
  const binaryMarker = randomBytes(32);
  const secrets: Buffer[] = [];
  let closed = false;
  try {
    for (let i = 0; i < 3; i++) {
      const uid = await client.create({ name: `created-${i}`, lengthBits: i === 0 ? 128 : 256 });
      secrets.push((await client.get(uid)).material);
    }
    for (let i = 0; i < 3; i++) {
      const material = randomBytes(32);
      const uid = await client.register(
        { algorithm: CryptographicAlgorithm.AES, lengthBits: 256, material },
        [
          attr.text('x-marker', marker),
          { name: 'x-binary-marker', value: ttlv.bytes(Tag.AttributeValue, binaryMarker) },
        ],
      );
      const got = await client.get(uid);
      assert.deepEqual(got.material, material);
      secrets.push(material);
    }
    const serverKeyPem = kms.dataDir.serverCredentials().keyPem;
    const masterKey = readKey(masterKeyFile);
    const caKeyPem = open(
      masterKey,
      readFileSync(join(dataDir, KMS_FILES.caKey)),
      FILE_CONTEXT(KMS_FILES.caKey),
    ).toString();
    assert.match(caKeyPem, /BEGIN PRIVATE KEY/);

    const needles: [string, Buffer][] = [
      ...secrets.flatMap((s, i): [string, Buffer][] => [
        [`key ${i} (raw)`, s],
        [`key ${i} (hex)`, Buffer.from(s.toString('hex'))],
        [`key ${i} (base64)`, Buffer.from(s.toString('base64'))],
      ]),
      ['server private key PEM', Buffer.from(serverKeyPem)],
      ['server private key DER', pemBody(serverKeyPem)],
      ['CA private key PEM', Buffer.from(caKeyPem)],
      ['CA private key DER', pemBody(caKeyPem)],
      ['master key (raw)', masterKey],
      ['master key (base64)', Buffer.from(masterKey.toString('base64'))],
    ];
    const check = (when: string, expectWal: boolean): void => {
      const files = filesUnder(dataDir);
      const names = [...files.keys()].map((p) => relative(dataDir, p)).sort();
      for (const f of [KMS_FILES.store, KMS_FILES.caKey, KMS_FILES.serverKey])
        assert.ok(names.includes(f), f);
      if (expectWal)
        assert.ok(names.includes(`${KMS_FILES.store}-wal`), `${when}: no WAL in ${names.join(', ')}`);
      // The search is real: what is stored in plaintext is found, in text and in binary.
      assert.notDeepEqual(filesContaining(files, Buffer.from(marker)), [], `${when}: text marker not found`);
      assert.notDeepEqual(filesContaining(files, binaryMarker), [], `${when}: binary marker not found`);
      for (const [what, needle] of needles) {
        assert.deepEqual(filesContaining(files, needle), [], `${when}: ${what} found in plaintext`);
      }
    };
    check('while serving', true);
    client.close();
    await kms.close();
    closed = true;
    check('after shutdown', false);
    // And the master key is not kept in the data directory at all.
    assert.ok(!resolve(masterKeyFile).startsWith(resolve(dataDir)));
  } finally {
    client.close();
    if (!closed) await kms.close();
  }
});

void test('a wrong or missing master key is refused and changes nothing; a missing key is never recreated', async () => {
  const { dataDir, masterKeyFile } = place();
  const material = randomBytes(32);
  let uid: string;
  {
    const dd = await KmsDataDir.open({ dataDir, masterKeyFile });
    uid = await register(new KmsEngine(dd.store), material, 'survivor');
    await dd.close();
  }
  const secrets = join(masterKeyFile, '..');
  const before = { data: snapshot(dataDir), secrets: snapshot(secrets) };
  const unchanged = (what: string): void => {
    assert.deepEqual(snapshot(dataDir), before.data, `${what} changed the data directory`);
    assert.deepEqual(snapshot(secrets), before.secrets, `${what} changed the key directory`);
  };

  const wrongKeyFile = join(root, `wrong-${n}.key`);
  writeFileSync(wrongKeyFile, randomBytes(32).toString('base64') + '\n', { mode: 0o600 });
  await rejectsWith(KmsDataDir.open({ dataDir, masterKeyFile: wrongKeyFile }), 'HS_ERR_KMS_MASTER_KEY');
  unchanged('opening with a wrong key');

  const malformed = join(root, `malformed-${n}.key`);
  writeFileSync(malformed, 'not base64 of 32 bytes\n', { mode: 0o600 });
  await rejectsWith(KmsDataDir.open({ dataDir, masterKeyFile: malformed }), 'HS_ERR_KMS_MASTER_KEY');
  unchanged('opening with a malformed key');

  const missing = join(root, `missing-${n}`, 'master.key');
  await rejectsWith(KmsDataDir.open({ dataDir, masterKeyFile: missing }), 'HS_ERR_KMS_MASTER_KEY');
  assert.equal(existsSync(missing), false, 'a missing master key must not be created for an existing store');
  unchanged('opening with a missing key file');

  // The default location ($XDG_CONFIG_HOME) holds no key for this store either.
  const defaultPath = defaultMasterKeyPath(dataDir);
  await rejectsWith(KmsDataDir.open({ dataDir }), 'HS_ERR_KMS_MASTER_KEY');
  assert.equal(existsSync(defaultPath), false);
  unchanged('opening with the default key location');

  const dd = await KmsDataDir.open({ dataDir, masterKeyFile });
  try {
    assert.deepEqual((await dd.store.get(uid))?.material, material);
  } finally {
    await dd.close();
  }
});

void test('swapped or altered sealed material fails authentication (HS_ERR_KMS_STORE_CORRUPT)', async () => {
  const { dataDir, masterKeyFile } = place();
  const [k1, k2, k3] = [randomBytes(32), randomBytes(32), randomBytes(32)];
  const uids: string[] = [];
  {
    const dd = await KmsDataDir.open({ dataDir, masterKeyFile });
    const engine = new KmsEngine(dd.store);
    for (const k of [k1, k2, k3]) uids.push(await register(engine, k));
    await dd.close();
  }
  const [u1, u2, u3] = uids as [string, string, string];
  const tamper = (fn: (db: Database.Database) => void): void => {
    const db = new Database(join(dataDir, KMS_FILES.store));
    try {
      fn(db);
    } finally {
      db.close();
    }
  };
  const sealedOf = (db: Database.Database, uid: string): Buffer =>
    (db.prepare('SELECT sealed_material FROM objects WHERE uid = ?').get(uid) as { sealed_material: Buffer })
      .sealed_material;
  tamper((db) => {
    const [s1, s2] = [sealedOf(db, u1), sealedOf(db, u2)];
    const set = db.prepare('UPDATE objects SET sealed_material = ? WHERE uid = ?');
    set.run(s2, u1);
    set.run(s1, u2);
  });
  let dd = await KmsDataDir.open({ dataDir, masterKeyFile });
  try {
    await rejectsWith(() => dd.store.get(u1), 'HS_ERR_KMS_STORE_CORRUPT');
    await rejectsWith(() => dd.store.get(u2), 'HS_ERR_KMS_STORE_CORRUPT');
    // Control: the untouched object still opens.
    assert.deepEqual((await dd.store.get(u3))?.material, k3);
    // Through KMIP: a failure, and neither key in the answer.
    const answer = await new KmsEngine(dd.store).handle(
      frame([{ operation: Operation.Get, payload: [ttlv.text(Tag.UniqueIdentifier, u1)] }]),
      'alice',
    );
    assert.equal(answer.indexOf(k1), -1);
    assert.equal(answer.indexOf(k2), -1);
    assert.equal(
      decodeResponse(decodeTtlv(answer)).batchItems[0]?.resultStatus,
      ResultStatus.OperationFailed,
    );
  } finally {
    await dd.close();
  }

  // One flipped bit, anywhere in the sealed blob (version, IV, tag or ciphertext).
  for (const at of [0, 5, 20, 40, 60]) {
    tamper((db) => {
      const s = Buffer.from(sealedOf(db, u3));
      s[at % s.length] = (s[at % s.length] as number) ^ 0x01;
      db.prepare('UPDATE objects SET sealed_material = ? WHERE uid = ?').run(s, u3);
    });
    dd = await KmsDataDir.open({ dataDir, masterKeyFile });
    try {
      await rejectsWith(() => dd.store.get(u3), 'HS_ERR_KMS_STORE_CORRUPT');
    } finally {
      await dd.close();
    }
    tamper((db) => {
      const s = Buffer.from(sealedOf(db, u3));
      s[at % s.length] = (s[at % s.length] as number) ^ 0x01;
      db.prepare('UPDATE objects SET sealed_material = ? WHERE uid = ?').run(s, u3);
    });
  }
  // The metadata the seal is bound to: moving the material to another owner fails too.
  tamper((db) => db.prepare("UPDATE objects SET owner = 'mallory' WHERE uid = ?").run(u3));
  dd = await KmsDataDir.open({ dataDir, masterKeyFile });
  try {
    await rejectsWith(() => dd.store.get(u3), 'HS_ERR_KMS_STORE_CORRUPT');
  } finally {
    await dd.close();
  }
});

void test('the master key file: mode 0600, outside the data directory; or from HYPERSEAL_KMS_MASTER_KEY', async () => {
  const { dataDir } = place();
  const dd = await KmsDataDir.open({ dataDir });
  const keyPath = defaultMasterKeyPath(dataDir);
  try {
    assert.ok(keyPath.startsWith(join(root, 'xdg')), keyPath);
    assert.ok(!resolve(keyPath).startsWith(resolve(dataDir) + '/'));
    assert.equal(statSync(keyPath).mode & 0o777, 0o600);
    assert.equal(statSync(join(keyPath, '..')).mode & 0o077, 0, 'the key directory must be private');
    assert.equal(readKey(keyPath).length, 32);
    // No leftovers of its creation next to it.
    assert.deepEqual(readdirSync(join(keyPath, '..')), [keyPath.split('/').pop()]);
  } finally {
    await dd.close();
  }

  const envCase = place();
  const key = randomBytes(32);
  process.env.HYPERSEAL_KMS_MASTER_KEY = key.toString('base64');
  try {
    const a = await KmsDataDir.open({ dataDir: envCase.dataDir, masterKeyFile: envCase.masterKeyFile });
    const material = randomBytes(32);
    const uid = await register(new KmsEngine(a.store), material);
    a.serverCredentials(); // sealed under the key from the environment
    await a.close();
    assert.equal(
      existsSync(envCase.masterKeyFile),
      false,
      'no key file is written when the key comes from the env',
    );
    assert.equal(existsSync(defaultMasterKeyPath(envCase.dataDir)), false);
    // The sealed files really are under that key.
    open(key, readFileSync(join(envCase.dataDir, KMS_FILES.serverKey)), FILE_CONTEXT(KMS_FILES.serverKey));

    const b = await KmsDataDir.open({ dataDir: envCase.dataDir });
    assert.deepEqual((await b.store.get(uid))?.material, material);
    await b.close();

    process.env.HYPERSEAL_KMS_MASTER_KEY = randomBytes(32).toString('base64');
    await rejectsWith(KmsDataDir.open({ dataDir: envCase.dataDir }), 'HS_ERR_KMS_MASTER_KEY');
    process.env.HYPERSEAL_KMS_MASTER_KEY = randomBytes(16).toString('base64');
    await rejectsWith(KmsDataDir.open({ dataDir: envCase.dataDir }), 'HS_ERR_KMS_MASTER_KEY');
  } finally {
    delete process.env.HYPERSEAL_KMS_MASTER_KEY;
  }
  await rejectsWith(KmsDataDir.open({ dataDir: envCase.dataDir }), 'HS_ERR_KMS_MASTER_KEY');
});

// ---------------------------------------------------------------------------------------
// Child processes, killed with SIGKILL.

const here = fileURLToPath(new URL('.', import.meta.url));
const moduleUrl = (name: string): string => new URL(name, import.meta.url).href;

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Child {
  lines: string[];
  /** Resolves with the first line matching, or rejects if the child exits first. */
  waitFor(pred: (line: string) => boolean): Promise<string>;
  kill(): Promise<void>;
}

function runChild(script: string, env: Record<string, string> = {}): Child {
  const path = join(root, `child-${++n}.mjs`);
  writeFileSync(path, script);
  const child = spawn(process.execPath, [path], {
    cwd: here,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  let partial = '';
  let stderr = '';
  const listeners = new Set<() => void>();
  let exited = false;
  const exit = new Promise<void>((r) =>
    child.on('exit', () => {
      exited = true;
      for (const l of listeners) l();
      r();
    }),
  );
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout.on('data', (d: Buffer) => {
    const parts = (partial + d.toString()).split('\n');
    partial = parts.pop() ?? '';
    lines.push(...parts);
    for (const l of listeners) l();
  });
  return {
    lines,
    waitFor: (pred) =>
      new Promise((resolveLine, reject) => {
        const check = (): void => {
          const found = lines.find(pred);
          if (found !== undefined) {
            listeners.delete(check);
            resolveLine(found);
          } else if (exited) {
            listeners.delete(check);
            reject(new Error(`child exited early: ${stderr}`));
          }
        };
        listeners.add(check);
        check();
      }),
    kill: async () => {
      if (!exited) child.kill('SIGKILL');
      await exit;
    },
  };
}

void test('first start survives kill -9 at any point: the next open succeeds and works', async () => {
  const rand = mulberry32(0xc0ffee);
  const script = `
    const { KmsDataDir } = await import(${JSON.stringify(moduleUrl('./service.js'))});
    const [dataDir, masterKeyFile] = JSON.parse(process.env.HS_ARGS);
    process.stdout.write('go\\n');
    const dd = await KmsDataDir.open({ dataDir, masterKeyFile });
    process.stdout.write('done\\n');
    await dd.close();
    setInterval(() => {}, 1000);
  `;
  const outcomes: string[] = [];
  // Run 0 is not interrupted: it measures how long a first start takes here, so that the
  // kills of the later runs (spread over 0-300 ms, or longer on a slow machine) cover it.
  let span = 300;
  const runs = 8;
  for (let i = 0; i < runs; i++) {
    const { dataDir, masterKeyFile } = place();
    const child = runChild(script, { HS_ARGS: JSON.stringify([dataDir, masterKeyFile]) });
    await child.waitFor((l) => l === 'go');
    const t0 = Date.now();
    let delay: number;
    if (i === 0) {
      await child.waitFor((l) => l === 'done');
      delay = Date.now() - t0;
      span = Math.max(300, Math.ceil(delay * 1.2));
    } else {
      delay = Math.floor(((i - 1 + rand()) * span) / (runs - 1));
      await new Promise((r) => setTimeout(r, delay));
    }
    await child.kill();
    const finished = child.lines.includes('done');
    const storeExisted = existsSync(join(dataDir, KMS_FILES.store));
    const caBefore = existsSync(join(dataDir, KMS_FILES.ca))
      ? readFileSync(join(dataDir, KMS_FILES.ca), 'utf8')
      : '';
    outcomes.push(
      `${delay}ms:${finished ? 'done' : storeExisted ? 'store' : existsSync(masterKeyFile) ? 'key' : 'none'}`,
    );

    const dd = await KmsDataDir.open({ dataDir, masterKeyFile });
    try {
      const caPem = dd.caCertPem();
      // A finished setup (its store exists) is used as it is, never created again.
      if (storeExisted) assert.equal(caPem, caBefore, `case ${i} (${delay} ms): the CA was replaced`);
      const caCert = new X509Certificate(caPem);
      const creds = dd.serverCredentials();
      const serverCert = new X509Certificate(creds.certPem);
      assert.ok(serverCert.verify(caCert.publicKey), 'the server certificate is not from this CA');
      assert.ok(
        serverCert.checkPrivateKey(createPrivateKey(creds.keyPem)),
        'server key and certificate differ',
      );
      const clientCert = await dd.issueClientCertificate('probe');
      assert.ok(new X509Certificate(clientCert.certPem).verify(caCert.publicKey));
      const material = randomBytes(32);
      const uid = await register(new KmsEngine(dd.store), material);
      assert.deepEqual((await dd.store.get(uid))?.material, material);
    } finally {
      await dd.close();
    }
  }
  // The delays must have hit more than one phase, or this proves little.
  assert.ok(new Set(outcomes.map((o) => o.split(':')[1])).size >= 2, outcomes.join(' '));
});

void test('group commit: 100 concurrent creates are all committed before any is answered', async () => {
  const { dataDir, masterKeyFile } = place();
  const dd = await KmsDataDir.open({ dataDir, masterKeyFile });
  const engine = new KmsEngine(dd.store);
  // A second connection sees only what is committed.
  const reader = new Database(join(dataDir, KMS_FILES.store), { readonly: true });
  const exists = reader.prepare('SELECT 1 FROM objects WHERE uid = ?');
  const committed = reader.prepare<[], { n: number }>('SELECT count(*) AS n FROM objects');
  const uids: string[] = [];
  const notYetCommitted: string[] = [];
  /** How many objects were committed when each answer came: one value per commit group. */
  const groups = new Set<number>();
  try {
    await Promise.all(
      Array.from({ length: 100 }, async (_, i) => {
        const item = await one(engine, i % 2 === 0 ? createItem() : registerItem(randomBytes(32)));
        const uid = uidOf(item);
        if (exists.get(uid) === undefined) notYetCommitted.push(uid);
        groups.add(committed.get()?.n ?? -1);
        uids.push(uid);
      }),
    );
  } finally {
    reader.close();
    await dd.close();
  }
  assert.equal(new Set(uids).size, 100);
  assert.deepEqual(notYetCommitted, [], 'answers were sent for objects not yet committed');
  // Shared commits: 100 separate ones would show up as up to 100 different counts.
  assert.ok(groups.size <= 10, `${groups.size} commit groups for 100 concurrent creates`);
  const again = await KmsDataDir.open({ dataDir, masterKeyFile });
  try {
    assert.equal(await again.store.count(), 100);
    for (const uid of uids) {
      const obj = await again.store.get(uid);
      assert.equal(obj?.material?.length, 32, uid);
      assert.equal(obj?.state, State.PreActive);
    }
  } finally {
    await again.close();
  }
});

void test('kill -9 of a serving key server never loses a key its client was given', async () => {
  const { dataDir, masterKeyFile } = place();
  const script = `
    const { startKms } = await import(${JSON.stringify(moduleUrl('./service.js'))});
    const [dataDir, masterKeyFile] = JSON.parse(process.env.HS_ARGS);
    const kms = await startKms({ dataDir, masterKeyFile, port: 0 });
    const cert = await kms.dataDir.issueClientCertificate('alice');
    process.stdout.write(JSON.stringify({ port: kms.port, ca: kms.dataDir.caCertPem(), ...cert }) + '\\n');
  `;
  const child = runChild(script, { HS_ARGS: JSON.stringify([dataDir, masterKeyFile]) });
  const info = JSON.parse(await child.waitFor((l) => l.startsWith('{'))) as {
    port: number;
    ca: string;
    certPem: string;
    keyPem: string;
  };
  const client = new KmipClient({
    host: '127.0.0.1',
    port: info.port,
    ca: info.ca,
    cert: info.certPem,
    key: info.keyPem,
    requestTimeoutMs: 5000,
  });
  const confirmed = new Map<string, Buffer | undefined>();
  let stop = false;
  const worker = async (w: number): Promise<void> => {
    while (!stop) {
      try {
        if (w % 2 === 0) {
          const material = randomBytes(32);
          const uid = await client.register({
            algorithm: CryptographicAlgorithm.AES,
            lengthBits: 256,
            material,
          });
          confirmed.set(uid, material);
        } else {
          confirmed.set(await client.create(), undefined);
        }
      } catch {
        return; // the server is gone
      }
    }
  };
  const workers = Promise.all([0, 1, 2, 3, 4, 5].map(worker));
  const started = Date.now();
  while (confirmed.size < 60 && Date.now() - started < 10_000) await new Promise((r) => setTimeout(r, 5));
  await child.kill();
  const atKill = confirmed.size;
  stop = true;
  await workers;
  client.close();
  assert.ok(atKill >= 60, `only ${atKill} keys were created before the kill`);

  const dd = await KmsDataDir.open({ dataDir, masterKeyFile });
  try {
    const missing: string[] = [];
    for (const [uid, material] of confirmed) {
      const obj = await dd.store.get(uid);
      if (obj === undefined || obj.material?.length !== 32) missing.push(uid);
      else if (material !== undefined) assert.deepEqual(obj.material, material, uid);
    }
    assert.deepEqual(missing, [], `${missing.length} of ${confirmed.size} confirmed keys are gone`);
    assert.ok((await dd.store.count()) >= confirmed.size);
  } finally {
    await dd.close();
  }
});
