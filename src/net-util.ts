/**
 * Every TCP connection a server accepts, from accept on, so that a stop can end them all.
 * The HTTP layer's own closeAllConnections() does not see a connection still in its TLS
 * handshake, and a client that keeps polling over such a connection once it is through
 * would hold the server's close (and the process's exit) for ever.
 */
import type { Server } from 'node:net';
import type { Socket } from 'node:net';

export interface AcceptedConnections {
  /** Destroys every connection still open. */
  destroyAll(): void;
}

export function trackConnections(server: Server): AcceptedConnections {
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  return {
    destroyAll: () => {
      for (const socket of sockets) socket.destroy();
    },
  };
}
