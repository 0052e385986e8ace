/**
 * Writes that arrive in the same tick leave in one TLS record and one syscall: under
 * pipelining this halves the per-message cost on both ends (measured with bench/kmip).
 */
import type { Socket } from 'node:net';

const corked = new WeakSet<Socket>();

export function corkedWrite(socket: Socket, data: Buffer, done?: () => void): void {
  if (!corked.has(socket)) {
    corked.add(socket);
    socket.cork();
    process.nextTick(() => {
      corked.delete(socket);
      socket.uncork();
    });
  }
  socket.write(data, done);
}
