// Test support: a TCP relay between two agents that forwards everything, or cuts a
// connection once more than `cutAfter` bytes went through it (the migration tests' way to
// break a stream mid-flight). Nothing here ships.
import net from 'node:net';

export interface CutProxies {
  /** Bytes after which the next proxy made cuts its connections; undefined: never. */
  cutAfter: number | undefined;
  /** The next proxy made forwards nothing back (a lost ACK); the connection ends as usual. */
  dropReplies: boolean;
  /** A relay to `to` (an agent's migrationAdvertise hook). */
  proxy(to: { host: string; port: number }): Promise<{ host: string; port: number }>;
  close(): void;
}

/**
 * `once`: each relay takes one connection, then stops listening (a memory stream);
 * otherwise any number (a disk tunnel opens one per NBD connection), half-open kept.
 */
export function cutProxies(opts: { once: boolean }): CutProxies {
  const servers: net.Server[] = [];
  const proxies: CutProxies = {
    cutAfter: undefined,
    dropReplies: false,
    async proxy(to) {
      const limit = proxies.cutAfter;
      const drop = proxies.dropReplies;
      const server = net.createServer({ allowHalfOpen: !opts.once }, (client) => {
        if (opts.once) server.close();
        const upstream = net.connect({ ...to, allowHalfOpen: !opts.once });
        let seen = 0;
        client.on('data', (c: Buffer) => {
          seen += c.length;
          if (limit !== undefined && seen > limit) {
            client.destroy();
            upstream.destroy();
            return;
          }
          upstream.write(c);
        });
        upstream.on('data', (c: Buffer) => {
          if (!drop) client.write(c);
        });
        for (const [a, b] of [
          [client, upstream],
          [upstream, client],
        ] as const) {
          a.on('end', () => b.end());
          a.on('error', () => b.destroy());
          a.on('close', () => b.destroy());
        }
      });
      servers.push(server);
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      return { host: '127.0.0.1', port: (server.address() as net.AddressInfo).port };
    },
    close() {
      for (const s of servers) s.close();
    },
  };
  return proxies;
}
