/**
 * A lingering close, as nginx does it, for a request answered before its body was read (413).
 * The answer goes out with `Connection: close`; then only our side of the connection is closed
 * and the rest of the body is read and dropped until it ends or a bound (bytes, time) is
 * reached. Closing both ways at once leaves the client's remaining bytes unread, so the kernel
 * resets the connection: a client still writing gets EPIPE or ECONNRESET instead of the answer.
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';

export interface LingerBounds {
  /** Bytes of the rest of the body read and dropped at most. */
  readonly maxBytes: number;
  /** Time the connection stays open at most, from the answer's decision. */
  readonly maxMs: number;
}

/** How to end each lingering socket's drain. */
const drains = new WeakMap<Socket, () => void>();

/** Call before sending the answer; the answer itself must carry `Connection: close`. */
export function lingerAfterAnswer(request: IncomingMessage, { maxBytes, maxMs }: LingerBounds): void {
  const socket = request.socket;
  if (request.complete || socket.destroyed || drains.has(socket)) return;
  const { destroySoon } = socket;
  let answered = false;
  // Node calls destroySoon() once a `Connection: close` response is written, which would close
  // both ways: for this socket it closes our side only (FIN), and reading goes on.
  socket.destroySoon = () => {
    answered = true;
    socket.end();
  };
  let dropped = 0;
  const onData = (chunk: Buffer): void => {
    dropped += chunk.length;
    if (dropped > maxBytes) stop();
  };
  const stop = (): void => {
    if (!drains.delete(socket)) return;
    clearTimeout(timer);
    request.off('data', onData);
    socket.destroySoon = destroySoon;
    // Once the answer is out, close (after it is flushed); before, Node closes after it as usual.
    if (answered) socket.destroySoon();
  };
  const timer = setTimeout(stop, maxMs);
  drains.set(socket, stop);
  socket.once('close', stop);
  request.once('end', stop);
  // Fastify stopped listening to a body over the limit (or never read it): read on, and drop.
  request.on('data', onData);
}

/** Ends a socket's drain at once (a malformed rest, a request timeout); true if it was draining. */
export function stopLingering(socket: Socket): boolean {
  const stop = drains.get(socket);
  stop?.();
  return stop !== undefined;
}
