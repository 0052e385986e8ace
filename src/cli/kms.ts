/** `hyperseal kms …`: run and administer the embedded KMIP key server. */
import { readFileSync, writeFileSync } from 'node:fs';
import { HypersealError } from '../errors.js';
import type { BackupOpener, BackupSecret } from '../kms/backup.js';
import { openBackup } from '../kms/backup.js';
import type { KmsOpenOptions, MasterKeyTarget } from '../kms/service.js';
import { startKms, KmsDataDir } from '../kms/service.js';
import { writeFileAtomic } from '../fsutil.js';
import { flag, hostPort, need, parse, str, usageError } from './args.js';
import { printResult } from './output.js';
import { readSecret } from './secret.js';

/** Options every command that opens a data directory takes. */
const OPEN_OPTIONS = {
  'data-dir': { type: 'string' },
  'master-key-file': { type: 'string' },
  'master-passphrase': { type: 'boolean' },
  store: { type: 'string' },
} as const;
const OPEN_USAGE = '[--master-key-file FILE | --master-passphrase] [--store postgres://…]';
const BACKUP_USAGE = `hyperseal kms backup --data-dir DIR --out FILE [--recipient PUBKEY.pem] [--passphrase-file FILE] ${OPEN_USAGE}`;
const VERIFY_USAGE =
  'hyperseal kms backup verify FILE [--identity KEY.pem] [--passphrase-file FILE] [--json]';
const RESTORE_USAGE = `hyperseal kms restore --data-dir DIR --from FILE [--force] [--identity KEY.pem] [--passphrase-file FILE] ${OPEN_USAGE}`;
const ROTATE_USAGE = `hyperseal kms rotate-master-key --data-dir DIR [--new-master-key-file FILE | --new-master-passphrase | --new-master-key-env VAR] ${OPEN_USAGE}`;
const REPLICA_USAGE = `hyperseal kms init-replica --from DIR --data-dir NEWDIR --store postgres://… [--server-name NAME …] [--master-key-file FILE | --master-passphrase]`;
const STATUS_USAGE = `hyperseal kms backup-status --data-dir DIR ${OPEN_USAGE} [--json]`;

const SERVE_USAGE =
  'hyperseal kms serve --data-dir DIR [--listen HOST:PORT] [--master-key-file FILE | --master-passphrase] [--store postgres://…] [--durability full|process]';
const CERT_USAGE =
  'hyperseal kms client-cert --data-dir DIR --name NAME --out PREFIX [--master-key-file FILE | --master-passphrase] [--store postgres://…] [--json]';
const GRANT_USAGE =
  'hyperseal kms grant --data-dir DIR --id UID --to NAME [--master-key-file FILE | --master-passphrase] [--store postgres://…]';

export const KMS_HELP = `hyperseal kms — the embedded KMIP 1.1 key server
  ${SERVE_USAGE}
      Serves KMIP over mutual TLS (default 127.0.0.1:5696). On first start creates, in DIR,
      its CA (ca.pem), server certificate and encrypted object store.
  ${CERT_USAGE}
      Issues a client certificate and key (PREFIX.pem, PREFIX.key) signed by the server's CA.
      The certificate's CN is the client's identity: it sees only the objects it owns.
  ${GRANT_USAGE}
      Lets identity NAME use object UID (owned by another identity).
  ${BACKUP_USAGE}
      Writes every object, its metadata and grants, and the server identity to FILE, encrypted
      for a passphrase (HYPERSEAL_KMS_BACKUP_PASSPHRASE, --passphrase-file, or a prompt) or for
      an RSA public key (--recipient). Records the backup in the store.
  ${VERIFY_USAGE}
      Decrypts and checks a backup completely without restoring it.
  ${RESTORE_USAGE}
      Rebuilds the key server from a backup (same ids, keys, CA). Refuses an existing store
      unless --force. Nothing is written when the backup is wrong or damaged.
  ${ROTATE_USAGE}
      Re-seals everything under a new master key (a new random key file by default). Stop
      the server first. Crash-safe.
  ${REPLICA_USAGE}
      Makes NEWDIR a key server for the same PostgreSQL store: same CA, its own server
      certificate. Needs the same master key.
  ${STATUS_USAGE}
      When the store was last backed up, and whether newer keys exist.
  See docs/key-safety.md.`;

export async function kmsCommand(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  switch (verb) {
    case 'serve':
      return serve(rest);
    case 'client-cert':
      return clientCert(rest);
    case 'grant':
      return grant(rest);
    case 'backup':
      return rest[0] === 'verify' ? verifyBackup(rest.slice(1)) : backup(rest);
    case 'backup-status':
      return backupStatus(rest);
    case 'restore':
      return restore(rest);
    case 'rotate-master-key':
      return rotate(rest);
    case 'init-replica':
      return initReplica(rest);
    default:
      throw usageError(`unknown kms command '${verb ?? ''}'\n${KMS_HELP}`);
  }
}

async function serve(argv: string[]): Promise<number> {
  const p = parse(
    argv,
    {
      ...OPEN_OPTIONS,
      listen: { type: 'string' },
      durability: { type: 'string' },
    },
    SERVE_USAGE,
  );
  const { host, port } = hostPort(str(p, 'listen') ?? '127.0.0.1:5696', 5696);
  const durability = str(p, 'durability') ?? 'full';
  if (durability !== 'full' && durability !== 'process') throw usageError('--durability is full or process');
  const kms = await startKms({ ...(await openOptions(p, SERVE_USAGE)), host, port, durability });
  process.stdout.write(
    `hyperseal kms: serving KMIP 1.1 on ${kms.host}:${kms.port} (data ${kms.dataDir.dir}, CA ${kms.dataDir.caPath})\n`,
  );
  await new Promise<void>((resolve) => {
    const stop = (): void => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await kms.close();
  process.stdout.write('hyperseal kms: stopped\n');
  return 0;
}

/** --data-dir, the master key's source (file, env, or a passphrase prompt) and --store. */
async function openOptions(p: ReturnType<typeof parse>, usage: string): Promise<KmsOpenOptions> {
  const masterKeyFile = str(p, 'master-key-file');
  const store = str(p, 'store') ?? process.env.HYPERSEAL_KMS_STORE;
  const passphrase = flag(p, 'master-passphrase')
    ? await readSecret({
        env: 'HYPERSEAL_KMS_MASTER_PASSPHRASE',
        prompt: 'master passphrase of the key server',
      })
    : undefined;
  return {
    dataDir: need(p, 'data-dir', usage),
    ...(masterKeyFile !== undefined ? { masterKeyFile } : {}),
    ...(store !== undefined && store !== '' ? { store } : {}),
    ...(passphrase !== undefined ? { masterPassphrase: passphrase } : {}),
  };
}

async function openDataDir(p: ReturnType<typeof parse>, usage: string): Promise<KmsDataDir> {
  return KmsDataDir.open(await openOptions(p, usage));
}

async function openExisting(p: ReturnType<typeof parse>, usage: string): Promise<KmsDataDir> {
  return KmsDataDir.open({ ...(await openOptions(p, usage)), mustExist: true });
}

/** How to encrypt a backup: --recipient, else a passphrase (env, file or prompt, twice). */
async function backupSecret(p: ReturnType<typeof parse>): Promise<BackupSecret> {
  const recipient = str(p, 'recipient');
  if (recipient !== undefined) return { publicKeyPem: readFileSync(recipient, 'utf8') };
  const file = str(p, 'passphrase-file');
  return {
    passphrase: await readSecret({
      env: 'HYPERSEAL_KMS_BACKUP_PASSPHRASE',
      ...(file !== undefined ? { file } : {}),
      prompt: 'backup passphrase',
      confirm: true,
    }),
  };
}

async function backupOpener(p: ReturnType<typeof parse>): Promise<BackupOpener> {
  const identity = str(p, 'identity');
  if (identity !== undefined) return { privateKeyPem: readFileSync(identity, 'utf8') };
  const file = str(p, 'passphrase-file');
  return {
    passphrase: await readSecret({
      env: 'HYPERSEAL_KMS_BACKUP_PASSPHRASE',
      ...(file !== undefined ? { file } : {}),
      prompt: 'backup passphrase',
    }),
  };
}

function readBackupFile(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new HypersealError('HS_ERR_NOT_FOUND', `cannot read backup ${path}: ${(err as Error).message}`);
  }
}

const iso = (t: number | null): string => (t === null ? '-' : new Date(t).toISOString());

async function backup(argv: string[]): Promise<number> {
  const p = parse(
    argv,
    {
      ...OPEN_OPTIONS,
      out: { type: 'string' },
      recipient: { type: 'string' },
      'passphrase-file': { type: 'string' },
      json: { type: 'boolean' },
    },
    BACKUP_USAGE,
  );
  const out = need(p, 'out', BACKUP_USAGE);
  const secret = await backupSecret(p);
  const dir = await openExisting(p, BACKUP_USAGE);
  try {
    const { file, marker } = await dir.createBackup(secret);
    // Complete and fsynced under its final name before the store says it is backed up.
    writeFileAtomic(out, file, 0o600);
    await dir.recordBackup(marker);
    const result = {
      file: out,
      objects: marker.objects,
      at: marker.at,
      newestObjectAt: marker.newestObjectAt,
    };
    printResult(result, flag(p, 'json'), () =>
      [
        `backed up ${marker.objects} objects and the server identity to ${out}`,
        `  newest object ${iso(marker.newestObjectAt)}; verify with: hyperseal kms backup verify ${out}`,
        '  keep it away from the master key and the data directory',
      ].join('\n'),
    );
  } finally {
    await dir.close();
  }
  return 0;
}

async function verifyBackup(argv: string[]): Promise<number> {
  const p = parse(
    argv,
    { identity: { type: 'string' }, 'passphrase-file': { type: 'string' }, json: { type: 'boolean' } },
    VERIFY_USAGE,
  );
  const path = p.positionals[0];
  if (path === undefined) throw usageError(`which backup file?\nusage: ${VERIFY_USAGE}`);
  const file = readBackupFile(path);
  const { header, payload } = openBackup(file, await backupOpener(p));
  const result = {
    ok: true,
    file: path,
    createdAt: header.createdAt,
    storeId: header.storeId,
    objects: payload.objects.length,
    withMaterial: payload.objects.filter((o) => o.material !== null).length,
    newestObjectAt: header.newestObjectAt,
    encryptedFor: header.kdf !== undefined ? 'passphrase (scrypt)' : 'RSA public key',
  };
  printResult(result, flag(p, 'json'), () =>
    [
      `backup ${path} is intact and opens: ${result.objects} objects (${result.withMaterial} with key material) and the server identity`,
      `  made ${iso(header.createdAt)}, newest object ${iso(header.newestObjectAt)}, store ${header.storeId}, for a ${result.encryptedFor}`,
    ].join('\n'),
  );
  return 0;
}

async function restore(argv: string[]): Promise<number> {
  const p = parse(
    argv,
    {
      ...OPEN_OPTIONS,
      from: { type: 'string' },
      force: { type: 'boolean' },
      identity: { type: 'string' },
      'passphrase-file': { type: 'string' },
      json: { type: 'boolean' },
    },
    RESTORE_USAGE,
  );
  const file = readBackupFile(need(p, 'from', RESTORE_USAGE));
  const opener = await backupOpener(p);
  const opts = await openOptions(p, RESTORE_USAGE);
  const r = await KmsDataDir.restore(opts, file, opener, flag(p, 'force'));
  printResult(
    { dataDir: opts.dataDir, ...r },
    flag(p, 'json'),
    () =>
      `restored ${r.objects} objects and the server identity into ${opts.dataDir}${opts.store !== undefined ? ' (store: PostgreSQL)' : ''}; start it with hyperseal kms serve`,
  );
  return 0;
}

async function rotate(argv: string[]): Promise<number> {
  const p = parse(
    argv,
    {
      ...OPEN_OPTIONS,
      'new-master-key-file': { type: 'string' },
      'new-master-passphrase': { type: 'boolean' },
      'new-master-key-env': { type: 'string' },
    },
    ROTATE_USAGE,
  );
  let target: MasterKeyTarget;
  const envName = str(p, 'new-master-key-env');
  const newFile = str(p, 'new-master-key-file');
  if (flag(p, 'new-master-passphrase')) {
    target = {
      kind: 'passphrase',
      passphrase: await readSecret({
        env: 'HYPERSEAL_KMS_NEW_MASTER_PASSPHRASE',
        prompt: 'new master passphrase',
        confirm: true,
      }),
    };
  } else if (envName !== undefined) {
    const key = Buffer.from(process.env[envName]?.trim() ?? '', 'base64');
    if (key.length !== 32) throw usageError(`${envName} must hold base64 of 32 bytes`);
    target = { kind: 'key', key };
  } else {
    target = { kind: 'file', ...(newFile !== undefined ? { path: newFile } : {}) };
  }
  const dir = await openExisting(p, ROTATE_USAGE);
  const { where } = await dir.rotateMasterKey(target);
  process.stdout.write(
    `re-sealed the key store and the server's private keys under the new master key (${where})\n`,
  );
  return 0;
}

async function initReplica(argv: string[]): Promise<number> {
  const p = parse(
    argv,
    { ...OPEN_OPTIONS, from: { type: 'string' }, 'server-name': { type: 'string', multiple: true } },
    REPLICA_USAGE,
  );
  const from = need(p, 'from', REPLICA_USAGE);
  const opts = await openOptions(p, REPLICA_USAGE);
  if (opts.store === undefined) throw usageError(`--store is required\nusage: ${REPLICA_USAGE}`);
  const source = await KmsDataDir.open({ ...opts, dataDir: from, mustExist: true });
  try {
    const names = (p.values['server-name'] as string[] | undefined) ?? [];
    await source.initReplica(opts.dataDir, names);
  } finally {
    await source.close();
  }
  // Opening it proves the master key and CA fit the shared store.
  await (await KmsDataDir.open({ ...opts, mustExist: true })).close();
  process.stdout.write(
    `${opts.dataDir} is a replica of ${from}: same CA and store, its own server certificate; start it with hyperseal kms serve --store …\n`,
  );
  return 0;
}

async function backupStatus(argv: string[]): Promise<number> {
  const p = parse(argv, { ...OPEN_OPTIONS, json: { type: 'boolean' } }, STATUS_USAGE);
  const dir = await openExisting(p, STATUS_USAGE);
  try {
    const st = await dir.store.backupState();
    printResult(st, flag(p, 'json'), () =>
      st.lastBackup === null
        ? `never backed up (${st.objects} objects)`
        : `last backup ${iso(st.lastBackup.at)} (${st.lastBackup.objects} objects); newest object ${iso(st.newestObjectAt)}` +
          ((st.newestObjectAt ?? 0) > (st.lastBackup.newestObjectAt ?? 0) ? ' — NEWER THAN THE BACKUP' : ''),
    );
  } finally {
    await dir.close();
  }
  return 0;
}

async function clientCert(argv: string[]): Promise<number> {
  const p = parse(
    argv,
    {
      ...OPEN_OPTIONS,
      name: { type: 'string' },
      out: { type: 'string' },
      json: { type: 'boolean' },
    },
    CERT_USAGE,
  );
  const name = need(p, 'name', CERT_USAGE);
  const out = need(p, 'out', CERT_USAGE);
  const dir = await openDataDir(p, CERT_USAGE);
  try {
    const cert = await dir.issueClientCertificate(name);
    writeFileSync(`${out}.pem`, cert.certPem, { mode: 0o644 });
    // The client's private key: readable by its owner only.
    writeFileSync(`${out}.key`, cert.keyPem, { mode: 0o600 });
    const result = { name, certificate: `${out}.pem`, key: `${out}.key`, ca: dir.caPath };
    printResult(result, flag(p, 'json'), () =>
      [
        `issued client certificate for '${name}'`,
        `  certificate ${out}.pem`,
        `  key         ${out}.key (mode 0600)`,
        `  CA          ${dir.caPath}`,
      ].join('\n'),
    );
  } finally {
    await dir.close();
  }
  return 0;
}

async function grant(argv: string[]): Promise<number> {
  const p = parse(
    argv,
    {
      ...OPEN_OPTIONS,
      id: { type: 'string' },
      to: { type: 'string' },
    },
    GRANT_USAGE,
  );
  const uid = need(p, 'id', GRANT_USAGE);
  const to = need(p, 'to', GRANT_USAGE);
  const dir = await openDataDir(p, GRANT_USAGE);
  try {
    if ((await dir.store.get(uid, false)) === undefined) {
      throw new HypersealError('HS_ERR_KMIP_ITEM_NOT_FOUND', `the key server has no object ${uid}`);
    }
    await dir.store.grant(uid, to);
    process.stdout.write(`granted '${to}' access to ${uid}\n`);
  } finally {
    await dir.close();
  }
  return 0;
}
