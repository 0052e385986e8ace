/**
 * `hyperseal up`'s embedded key server as a key provider of its manager. On first start
 * the manager gets a client certificate from the key server's CA (CN hyperseal-manager,
 * as `hyperseal kms client-cert` issues them) and the provider is added; being the first
 * provider, it becomes the default. A marker file remembers the provider's id, so later
 * starts only follow a changed listen address, and a provider an operator removed stays
 * removed.
 */
import { existsSync, readFileSync } from 'node:fs';
import { writeFileAtomic } from '../fsutil.js';
import type { KmsDataDir } from '../kms/service.js';
import type { Actor } from '../manager/events.js';
import type { KmipServerAddress } from './cluster.js';
import type { KeyProviderService } from './service.js';

export const EMBEDDED_PROVIDER_NAME = 'embedded';
/** The identity (certificate CN) the manager has on the embedded key server. */
export const EMBEDDED_CLIENT_NAME = 'hyperseal-manager';

export interface EmbeddedKeyProviderOptions {
  service: KeyProviderService;
  kms: { host: string; port: number; dataDir: KmsDataDir };
  /** Remembers the provider's id across starts (e.g. DATA_DIR/manager/embedded-key-provider.json). */
  markerPath: string;
  actor: Actor;
}

export interface EmbeddedKeyProviderResult {
  providerId: string;
  action: 'added' | 'adopted' | 'updated' | 'unchanged';
}

/** A wildcard listen address is reached on loopback, a name the server certificate has. */
function dialable(host: string): string {
  return host === '0.0.0.0' || host === '::' || host === '' ? '127.0.0.1' : host;
}

/**
 * Adds (first start) or keeps up to date the embedded key server's provider. Returns
 * undefined when an operator removed it: it is not added again.
 */
export async function ensureEmbeddedKeyProvider(
  opts: EmbeddedKeyProviderOptions,
): Promise<EmbeddedKeyProviderResult | undefined> {
  const { service, kms, markerPath, actor } = opts;
  const servers: KmipServerAddress[] = [{ host: dialable(kms.host), port: kms.port }];
  if (existsSync(markerPath)) {
    const { providerId } = JSON.parse(readFileSync(markerPath, 'utf8')) as { providerId: string };
    const current = await service.get(providerId).catch(() => undefined);
    if (current === undefined) return undefined;
    const same =
      current.servers.length === 1 &&
      current.servers[0]?.host === servers[0]?.host &&
      current.servers[0]?.port === servers[0]?.port;
    if (same) return { providerId, action: 'unchanged' };
    await service.update(actor, providerId, { servers });
    return { providerId, action: 'updated' };
  }
  // A start interrupted between adding and writing the marker left the provider: adopt it.
  const existing = await service.findByName(EMBEDDED_PROVIDER_NAME);
  if (existing !== undefined) {
    writeFileAtomic(markerPath, JSON.stringify({ providerId: existing.id }) + '\n', 0o600);
    return { providerId: existing.id, action: 'adopted' };
  }
  const cert = await kms.dataDir.issueClientCertificate(EMBEDDED_CLIENT_NAME);
  const added = await service.add(actor, {
    name: EMBEDDED_PROVIDER_NAME,
    servers,
    caPem: kms.dataDir.caCertPem(),
    clientCertPem: cert.certPem,
    clientKeyPem: cert.keyPem,
  });
  writeFileAtomic(markerPath, JSON.stringify({ providerId: added.id }) + '\n', 0o600);
  return { providerId: added.id, action: 'added' };
}
