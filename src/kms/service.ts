/**
 * The embedded key server as a service: its data directory (CA, server certificate,
 * sealed private keys, object store), issuing client certificates, and serving KMIP.
 *
 * Data directory layout (everything secret is sealed under the master key, which lives
 * elsewhere — see master-key.ts):
 *   ca.pem              CA certificate (public; give it to clients)
 *   server.pem          TLS server certificate (public)
 *   ca.key.sealed       CA private key, AES-256-GCM under the master key
 *   server.key.sealed   TLS server private key, likewise
 *   objects.db          the object store (SQLite); its presence marks a finished setup
 *
 * First start creates them in that order, each file atomically, and the store last: a
 * kill -9 at any point leaves either no store (the next start creates everything again)
 * or a complete setup.
 */
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { isIP } from 'node:net';
import { readSealedFile, writeSealedFile } from '../crypto/sealed-file.js';
import { HypersealError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import { KmipServer } from '../kmip/server.js';
import type { CertifiedKey } from '../pki/index.js';
import { createCertificateAuthority, issueCertificate } from '../pki/index.js';
import { KmsEngine } from './engine.js';
import { loadMasterKey, resolveMasterKeySource } from './master-key.js';
import type { StoreDurability } from './sqlite-store.js';
import { SqliteObjectStore } from './sqlite-store.js';

export const KMS_FILES = {
  ca: 'ca.pem',
  serverCert: 'server.pem',
  caKey: 'ca.key.sealed',
  serverKey: 'server.key.sealed',
  store: 'objects.db',
} as const;

export interface KmsOpenOptions {
  dataDir: string;
  masterKeyFile?: string;
  /** Host names and addresses the server certificate must be valid for (first start only). */
  serverNames?: string[];
  /** 'full' (default): every answer waits for fsync. 'process': survives kill -9, not power loss. */
  durability?: StoreDurability;
}

export class KmsDataDir {
  private constructor(
    readonly dir: string,
    private readonly masterKey: Buffer,
    readonly store: SqliteObjectStore,
  ) {}

  /** Opens the data directory, creating a new key server in it on first use. */
  static async open(opts: KmsOpenOptions): Promise<KmsDataDir> {
    const dir = resolve(opts.dataDir);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const storePath = join(dir, KMS_FILES.store);
    const fresh = !existsSync(storePath);
    const source = resolveMasterKeySource(dir, opts.masterKeyFile);
    const masterKey = loadMasterKey(source, fresh);
    if (fresh) await KmsDataDir.initialise(dir, masterKey, opts.serverNames ?? []);
    for (const f of [KMS_FILES.ca, KMS_FILES.serverCert, KMS_FILES.caKey, KMS_FILES.serverKey]) {
      if (!existsSync(join(dir, f))) {
        throw new HypersealError('HS_ERR_CONFIG', `key server data directory ${dir} is missing ${f}`);
      }
    }
    const store = new SqliteObjectStore(storePath, masterKey, source.description, opts.durability ?? 'full');
    const kms = new KmsDataDir(dir, masterKey, store);
    try {
      kms.verifyCertificates();
    } catch (err) {
      await kms.close();
      throw err;
    }
    return kms;
  }

  private static async initialise(dir: string, masterKey: Buffer, serverNames: string[]): Promise<void> {
    const ca = await createCertificateAuthority({
      commonName: `Hyperseal KMS CA (${hostname()})`,
      validityDays: 3650,
    });
    const names = [...new Set(['localhost', '127.0.0.1', hostname(), ...serverNames])];
    const server = await issueCertificate(ca, {
      commonName: 'hyperseal-kms',
      usage: 'server',
      dnsNames: names.filter((n) => isIP(n) === 0),
      ipAddresses: names.filter((n) => isIP(n) !== 0),
      validityDays: 825,
    });
    writeSealedFile(dir, KMS_FILES.caKey, masterKey, ca.keyPem);
    writeSealedFile(dir, KMS_FILES.serverKey, masterKey, server.keyPem);
    writeFileAtomic(join(dir, KMS_FILES.serverCert), server.certPem);
    writeFileAtomic(join(dir, KMS_FILES.ca), ca.certPem);
  }

  /**
   * ca.pem and server.pem are plain files; their private keys are sealed. Someone who can
   * write the directory could swap ca.pem for their own CA (and then connect as anyone),
   * so each certificate must match its sealed key, and the server's must chain to the CA.
   */
  private verifyCertificates(): void {
    const check = (certPem: string, keyPem: string, what: string): X509Certificate => {
      const cert = new X509Certificate(certPem);
      const pub = createPublicKey(createPrivateKey(keyPem)).export({ type: 'spki', format: 'der' });
      if (!pub.equals(cert.publicKey.export({ type: 'spki', format: 'der' }))) {
        throw new HypersealError(
          'HS_ERR_CONFIG',
          `${what} in ${this.dir} does not match its sealed private key: it was replaced`,
        );
      }
      return cert;
    };
    const ca = check(this.caCertPem(), this.unsealFile(KMS_FILES.caKey), KMS_FILES.ca);
    const creds = this.serverCredentials();
    const server = check(creds.certPem, creds.keyPem, KMS_FILES.serverCert);
    if (!server.checkIssued(ca) || !server.verify(ca.publicKey)) {
      throw new HypersealError(
        'HS_ERR_CONFIG',
        `${KMS_FILES.serverCert} in ${this.dir} was not issued by ${KMS_FILES.ca}`,
      );
    }
  }

  get caPath(): string {
    return join(this.dir, KMS_FILES.ca);
  }

  caCertPem(): string {
    return readFileSync(this.caPath, 'utf8');
  }

  private unsealFile(name: string): string {
    return readSealedFile(this.dir, name, this.masterKey);
  }

  serverCredentials(): { certPem: string; keyPem: string } {
    return {
      certPem: readFileSync(join(this.dir, KMS_FILES.serverCert), 'utf8'),
      keyPem: this.unsealFile(KMS_FILES.serverKey),
    };
  }

  /** Issues a client certificate (clientAuth) whose CN becomes the client's identity. */
  async issueClientCertificate(name: string, validityDays = 825): Promise<CertifiedKey> {
    if (!/^[A-Za-z0-9._@-]{1,64}$/.test(name)) {
      throw new HypersealError(
        'HS_ERR_INVALID_ARGUMENT',
        `client name '${name}' must be 1-64 characters of letters, digits, '.', '_', '@' or '-'`,
      );
    }
    const ca: CertifiedKey = { certPem: this.caCertPem(), keyPem: this.unsealFile(KMS_FILES.caKey) };
    return issueCertificate(ca, { commonName: name, usage: 'client', validityDays });
  }

  async close(): Promise<void> {
    await this.store.close();
    this.masterKey.fill(0);
  }
}

export interface RunningKms {
  host: string;
  port: number;
  dataDir: KmsDataDir;
  close(): Promise<void>;
}

/** Opens (or creates) a key server in `dataDir` and serves KMIP on host:port. */
export async function startKms(opts: KmsOpenOptions & { host?: string; port?: number }): Promise<RunningKms> {
  const host = opts.host ?? '127.0.0.1';
  const dataDir = await KmsDataDir.open({ ...opts, serverNames: [host, ...(opts.serverNames ?? [])] });
  const engine = new KmsEngine(dataDir.store, { vendorIdentification: 'Hyperseal KMS' });
  const creds = dataDir.serverCredentials();
  const server = new KmipServer({
    host,
    port: opts.port ?? 5696,
    ca: dataDir.caCertPem(),
    cert: creds.certPem,
    key: creds.keyPem,
    handler: (frame, peer) => engine.handle(frame, peer.identity),
  });
  try {
    const address = await server.listen();
    return {
      host: address.address,
      port: address.port,
      dataDir,
      close: async () => {
        await server.close();
        await dataDir.close();
      },
    };
  } catch (err) {
    await dataDir.close();
    throw new HypersealError(
      'HS_ERR_CONFIG',
      `cannot listen on ${host}:${opts.port ?? 5696}: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
}
