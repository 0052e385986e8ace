/**
 * `hyperseal up`: everything that exists so far, started with one data directory.
 * Today that is the embedded KMIP key server plus an operator client certificate; the
 * manager and a local agent join here as they land. Ctrl-C stops everything cleanly.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { startKms } from '../kms/service.js';
import { hostPort, parse, str } from './args.js';

const USAGE = 'hyperseal up [--data-dir DIR] [--kms-listen HOST:PORT]';

export async function upCommand(argv: string[]): Promise<number> {
  const p = parse(argv, { 'data-dir': { type: 'string' }, 'kms-listen': { type: 'string' } }, USAGE);
  const dataDir = resolve(str(p, 'data-dir') ?? '.hyperseal');
  const kmsDir = join(dataDir, 'kms');
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const { host, port } = hostPort(str(p, 'kms-listen') ?? '127.0.0.1:5696', 5696);
  const kms = await startKms({ dataDir: kmsDir, host, port });

  // The operator's own KMIP identity, issued once, so the CLI works right away.
  const prefix = join(dataDir, 'operator');
  if (!existsSync(`${prefix}.key`)) {
    const cert = await kms.dataDir.issueClientCertificate('operator');
    writeFileSync(`${prefix}.pem`, cert.certPem, { mode: 0o644 });
    writeFileSync(`${prefix}.key`, cert.keyPem, { mode: 0o600 });
  }
  const rel = (path: string): string => relative(process.cwd(), path) || '.';
  const flags = `--server ${kms.host}:${kms.port} --ca ${rel(kms.dataDir.caPath)} --cert ${rel(prefix)}.pem --key ${rel(prefix)}.key`;
  process.stdout.write(
    [
      '',
      `Hyperseal is up (data in ${rel(dataDir)}).`,
      `  embedded KMIP 1.1 key server  ${kms.host}:${kms.port}   CA ${rel(kms.dataDir.caPath)}`,
      `  operator client certificate   ${rel(prefix)}.pem / .key`,
      '',
      'Next, in another terminal:',
      `  npx hyperseal kmip ${flags} query`,
      `  npx hyperseal kmip ${flags} create --name my-first-key`,
      `  npx hyperseal kmip ${flags} locate --name my-first-key`,
      '',
      'Docs: docs/kmip.md (key server, other key managers), docs/errors.md. Ctrl-C stops everything.',
      '',
    ].join('\n'),
  );
  await new Promise<void>((resolveStop) => {
    process.once('SIGINT', () => resolveStop());
    process.once('SIGTERM', () => resolveStop());
  });
  await kms.close();
  process.stdout.write('hyperseal: stopped\n');
  return 0;
}
