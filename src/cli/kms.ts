/** `hyperseal kms …`: run and administer the embedded KMIP key server. */
import { writeFileSync } from 'node:fs';
import { HypersealError } from '../errors.js';
import { startKms, KmsDataDir } from '../kms/service.js';
import { flag, hostPort, need, parse, str, usageError } from './args.js';
import { printResult } from './output.js';

const SERVE_USAGE =
  'hyperseal kms serve --data-dir DIR [--listen HOST:PORT] [--master-key-file FILE] [--durability full|process]';
const CERT_USAGE =
  'hyperseal kms client-cert --data-dir DIR --name NAME --out PREFIX [--master-key-file FILE] [--json]';
const GRANT_USAGE = 'hyperseal kms grant --data-dir DIR --id UID --to NAME [--master-key-file FILE]';

export const KMS_HELP = `hyperseal kms — the embedded KMIP 1.1 key server
  ${SERVE_USAGE}
      Serves KMIP over mutual TLS (default 127.0.0.1:5696). On first start creates, in DIR,
      its CA (ca.pem), server certificate and encrypted object store.
  ${CERT_USAGE}
      Issues a client certificate and key (PREFIX.pem, PREFIX.key) signed by the server's CA.
      The certificate's CN is the client's identity: it sees only the objects it owns.
  ${GRANT_USAGE}
      Lets identity NAME use object UID (owned by another identity).`;

export async function kmsCommand(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  switch (verb) {
    case 'serve':
      return serve(rest);
    case 'client-cert':
      return clientCert(rest);
    case 'grant':
      return grant(rest);
    default:
      throw usageError(`unknown kms command '${verb ?? ''}'\n${KMS_HELP}`);
  }
}

async function serve(argv: string[]): Promise<number> {
  const p = parse(
    argv,
    {
      'data-dir': { type: 'string' },
      listen: { type: 'string' },
      'master-key-file': { type: 'string' },
      durability: { type: 'string' },
    },
    SERVE_USAGE,
  );
  const { host, port } = hostPort(str(p, 'listen') ?? '127.0.0.1:5696', 5696);
  const durability = str(p, 'durability') ?? 'full';
  if (durability !== 'full' && durability !== 'process') throw usageError('--durability is full or process');
  const masterKeyFile = str(p, 'master-key-file');
  const kms = await startKms({
    dataDir: need(p, 'data-dir', SERVE_USAGE),
    host,
    port,
    durability,
    ...(masterKeyFile !== undefined ? { masterKeyFile } : {}),
  });
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

async function openDataDir(p: ReturnType<typeof parse>, usage: string): Promise<KmsDataDir> {
  const masterKeyFile = str(p, 'master-key-file');
  return KmsDataDir.open({
    dataDir: need(p, 'data-dir', usage),
    ...(masterKeyFile !== undefined ? { masterKeyFile } : {}),
  });
}

async function clientCert(argv: string[]): Promise<number> {
  const p = parse(
    argv,
    {
      'data-dir': { type: 'string' },
      name: { type: 'string' },
      out: { type: 'string' },
      'master-key-file': { type: 'string' },
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
      'data-dir': { type: 'string' },
      id: { type: 'string' },
      to: { type: 'string' },
      'master-key-file': { type: 'string' },
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
