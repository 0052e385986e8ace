// Test support: a real, throwaway rsyslog collector. Test-only code; nothing here ships,
// and it installs nothing: rsyslogd and its TLS driver come from Debian's `rsyslog` and
// `rsyslog-gnutls` packages, which scripts/ensure-deps.sh installs.
//
// The daemon runs in the foreground (-n) with a config of its own in a temporary
// directory (-f; no system config, no /dev/log, $WorkDirectory in the same directory) and
// listens on 127.0.0.1 on free ports:
//   - tcpPort: imtcp with octet-counted framing (RFC 6587);
//   - udpPort: imudp;
//   - tlsPort: imtcp over TLS with the gtls driver, anonymous clients (RFC 5425);
//   - tlsClientAuthPort: the same, but clients must present a certificate from our CA.
// Every message is written raw (`%rawmsg%`: exactly the bytes of the message, framing
// stripped) as one line of out.log. The server certificate comes from src/pki and names
// localhost and 127.0.0.1, so the sink verifies it as it would a production collector's.
//
// The main queue gets a long shutdown timeout: on SIGTERM rsyslog writes out what it has
// read instead of dropping it after the default 1.5 s, like a collector configured not to
// lose messages would.
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CertifiedKey } from '../../pki/index.js';
import type { ChainHead, Event } from '../index.js';
import { chainEvent, createEvent, headOf } from '../index.js';
import { createCertificateAuthority, issueCertificate } from '../../pki/index.js';
import { parseRfc5424, SD_ID_EVENT, sdParam } from './format.js';

export interface Rsyslog {
  readonly dir: string;
  readonly tcpPort: number;
  readonly udpPort: number;
  readonly tlsPort: number;
  readonly tlsClientAuthPort: number;
  /** The CA that signed the collector's certificate (and `client`). */
  readonly ca: CertifiedKey;
  /** A client certificate for tlsClientAuthPort. */
  readonly client: CertifiedKey;
  readonly outFile: string;
  readonly running: boolean;
  /** Starts the daemon (again, on the same ports) and waits until its TCP ports answer. */
  start(): Promise<void>;
  /** Stops it and waits for its exit: SIGTERM lets it write out what it read, SIGKILL does not. */
  stop(signal?: 'SIGTERM' | 'SIGKILL'): Promise<void>;
  /** SIGSTOP: a hung collector — connections stay open, nothing is read. Follow with stop('SIGKILL'). */
  freeze(): void;
  /** Every line written so far (read incrementally). */
  lines(): string[];
  /** How many lines were written so far, without decoding them (cheap to poll in a benchmark). */
  lineCount(): number;
  /** Polls lines() until `done` holds; throws after timeoutMs with the last lines seen. */
  waitFor(done: (lines: string[]) => boolean, timeoutMs: number): Promise<string[]>;
  dispose(): Promise<void>;
}

export function rsyslogdPath(): string {
  const fromEnv = process.env.HYPERSEAL_RSYSLOGD;
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  return existsSync('/usr/sbin/rsyslogd') ? '/usr/sbin/rsyslogd' : 'rsyslogd';
}

async function freeTcpPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
  const port = s.address().port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** Whether the port accepts a connection (TLS: completes a handshake, so rsyslog logs no error). */
function canConnect(port: number, tlsOpts?: tls.ConnectionOptions): Promise<boolean> {
  return new Promise((resolve) => {
    const s =
      tlsOpts === undefined
        ? net.connect({ host: '127.0.0.1', port })
        : tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...tlsOpts });
    s.once(tlsOpts === undefined ? 'connect' : 'secureConnect', () => {
      s.end();
      resolve(true);
    });
    s.once('error', () => {
      s.destroy();
      resolve(false);
    });
  });
}

export async function startRsyslog(): Promise<Rsyslog> {
  const dir = mkdtempSync(join(tmpdir(), 'hyperseal-rsyslog-'));
  const ca = await createCertificateAuthority({ commonName: 'Hyperseal test syslog CA' });
  const server = await issueCertificate(ca, {
    commonName: 'localhost',
    usage: 'server',
    dnsNames: ['localhost'],
    ipAddresses: ['127.0.0.1'],
  });
  const client = await issueCertificate(ca, { commonName: 'hyperseal-manager', usage: 'client' });
  writeFileSync(join(dir, 'ca.pem'), ca.certPem);
  writeFileSync(join(dir, 'server.pem'), server.certPem);
  writeFileSync(join(dir, 'server.key'), server.keyPem, { mode: 0o600 });
  const [tcpPort, udpPort, tlsPort, tlsClientAuthPort] = [
    await freeTcpPort(),
    await freeUdpPort(),
    await freeTcpPort(),
    await freeTcpPort(),
  ] as [number, number, number, number];
  const outFile = join(dir, 'out.log');
  const tlsParams = (authMode: string): string =>
    `streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="${authMode}" ` +
    `streamDriver.CAFile="${dir}/ca.pem" streamDriver.CertFile="${dir}/server.pem" ` +
    `streamDriver.KeyFile="${dir}/server.key"`;
  const conf = `
global(workDirectory="${dir}" maxMessageSize="64k")
module(load="imtcp")
module(load="imudp")
main_queue(queue.timeoutShutdown="20000" queue.timeoutActionCompletion="20000")
template(name="raw" type="string" string="%rawmsg%\\n")
input(type="imtcp" address="127.0.0.1" port="${tcpPort}" supportOctetCountedFraming="on" ruleset="out")
input(type="imudp" address="127.0.0.1" port="${udpPort}" ruleset="out")
input(type="imtcp" address="127.0.0.1" port="${tlsPort}" supportOctetCountedFraming="on" ruleset="out" ${tlsParams('anon')})
input(type="imtcp" address="127.0.0.1" port="${tlsClientAuthPort}" supportOctetCountedFraming="on" ruleset="out" ${tlsParams('x509/certvalid')})
ruleset(name="out") {
  action(type="omfile" file="${outFile}" template="raw")
}
`;
  const confPath = join(dir, 'rsyslog.conf');
  writeFileSync(confPath, conf);

  let child: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();
  let stderr = '';
  // Incremental reader of out.log.
  let readOffset = 0;
  let partial = '';
  const seen: string[] = [];
  let countOffset = 0;
  let counted = 0;

  const readNew = (): void => {
    if (!existsSync(outFile)) return;
    const size = statSync(outFile).size;
    if (size <= readOffset) return;
    const fd = openSync(outFile, 'r');
    try {
      const buf = Buffer.allocUnsafe(size - readOffset);
      const n = readSync(fd, buf, 0, buf.length, readOffset);
      readOffset += n;
      const text = partial + buf.toString('utf8', 0, n);
      const parts = text.split('\n');
      partial = parts.pop() ?? '';
      seen.push(...parts);
    } finally {
      closeSync(fd);
    }
  };

  const r: Rsyslog = {
    dir,
    tcpPort,
    udpPort,
    tlsPort,
    tlsClientAuthPort,
    ca,
    client,
    outFile,
    get running() {
      return child !== null;
    },
    async start() {
      if (child !== null) return;
      stderr = '';
      const c = spawn(rsyslogdPath(), ['-f', confPath, '-i', join(dir, 'rsyslogd.pid'), '-n'], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      child = c;
      c.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
      // A test process that dies of an uncaught error must not leave the daemon behind
      // (rsyslogd runs with -n but is not killed with its parent).
      const reap = (): void => void c.kill('SIGKILL');
      process.once('exit', reap);
      exited = new Promise((resolve) =>
        c.once('exit', () => {
          process.removeListener('exit', reap);
          resolve();
        }),
      );
      let spawnError: Error | null = null;
      c.once('error', (err) => (spawnError = err));
      const deadline = Date.now() + 10_000;
      for (;;) {
        if (spawnError !== null) throw new Error(`cannot run ${rsyslogdPath()}: ${String(spawnError)}`);
        if (c.exitCode !== null) throw new Error(`rsyslogd exited with ${c.exitCode}: ${stderr}`);
        if (
          (await canConnect(tcpPort)) &&
          (await canConnect(tlsPort, {})) &&
          (await canConnect(tlsClientAuthPort, { cert: client.certPem, key: client.keyPem }))
        ) {
          return;
        }
        if (Date.now() > deadline) throw new Error(`rsyslogd did not listen within 10 s: ${stderr}`);
        await new Promise((res) => setTimeout(res, 20));
      }
    },
    async stop(signal = 'SIGTERM') {
      const c = child;
      if (c === null) return;
      c.kill(signal);
      await exited;
      child = null;
    },
    freeze() {
      child?.kill('SIGSTOP');
    },
    lines() {
      readNew();
      return seen;
    },
    lineCount() {
      if (!existsSync(outFile)) return 0;
      const size = statSync(outFile).size;
      if (size > countOffset) {
        const fd = openSync(outFile, 'r');
        try {
          const buf = Buffer.allocUnsafe(Math.min(size - countOffset, 1 << 20));
          const n = readSync(fd, buf, 0, buf.length, countOffset);
          countOffset += n;
          for (let i = buf.indexOf(10, 0); i >= 0 && i < n; i = buf.indexOf(10, i + 1)) counted++;
        } finally {
          closeSync(fd);
        }
      }
      return counted;
    },
    async waitFor(done, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const lines = r.lines();
        if (done(lines)) return lines;
        if (Date.now() > deadline) {
          throw new Error(
            `collector: condition not met within ${timeoutMs} ms; ${lines.length} lines, last: ${lines.at(-1) ?? '(none)'}` +
              (stderr === '' ? '' : `; rsyslogd stderr: ${stderr.slice(-500)}`),
          );
        }
        await new Promise((res) => setTimeout(res, 25));
      }
    },
    async dispose() {
      await r.stop('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await r.start();
  return r;
}

/** The event id of each collected line that is a Hyperseal message, in order. */
export function eventIds(lines: readonly string[]): string[] {
  const out: string[] = [];
  for (const line of lines) {
    if (line === '') continue;
    const id = sdParam(parseRfc5424(line), SD_ID_EVENT, 'id');
    if (id !== undefined) out.push(id);
  }
  return out;
}

/** Ids with repeats removed (first occurrence kept), in order. */
export function dedupe(ids: readonly string[]): string[] {
  const seen = new Set<string>();
  return ids.filter((id) => (seen.has(id) ? false : (seen.add(id), true)));
}

/**
 * `n` chained events (seq from `head`), each a VM reconfiguration with two changes, their
 * object ids `${tag}-${i}` so that a test can tell its events apart from another test's.
 */
export function makeEvents(n: number, tag: string, head: ChainHead | null = null): Event[] {
  const out: Event[] = [];
  let h = head;
  for (let i = 0; i < n; i++) {
    const e = chainEvent(
      createEvent({
        type: 'vm.reconfigured',
        user: 'ops@local',
        sourceIp: '10.0.0.5',
        object: { kind: 'vm', id: `${tag}-${i}`, name: 'web-01' },
        changes: [
          { path: 'memoryMiB', from: 6144, to: 10240 + i },
          { path: 'nics[nic0].network', from: 'PCI', to: 'Non-PCI' },
        ],
      }),
      h,
    );
    h = headOf(e);
    out.push(e);
  }
  return out;
}
