/**
 * A real webhook receiver for tests: an HTTP server on a free loopback port that keeps every
 * request it gets (headers and raw body) and answers as the test says — 2xx, a failure, slowly,
 * a redirect, 410. Signatures are checked by the tests with the `standardwebhooks` library, the
 * way a receiver would.
 */
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';
import { afterEach } from 'vitest';

export interface Received {
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  readonly at: number;
  /** The body as JSON. */
  readonly event: any;
}

/** How to answer one request: a status (and headers), after a delay; or nothing (hang). */
export type Answer = { status: number; headers?: Record<string, string>; delayMs?: number; body?: string } | 'hang';

export interface Receiver {
  readonly url: string;
  readonly received: Received[];
  /** Decides each answer (default 204). */
  answer: (request: Received, index: number) => Answer;
  /** Resolves once `count` requests that `where` accepts have come. */
  waitFor(count: number, where?: (r: Received) => boolean, timeoutMs?: number): Promise<Received[]>;
  close(): Promise<void>;
}

export async function startReceiver(): Promise<Receiver> {
  const received: Received[] = [];
  const waiters: Array<() => void> = [];
  const open = new Set<ServerResponse>();
  const receiver: Receiver = {
    url: '',
    received,
    answer: () => ({ status: 204 }),
    async waitFor(count, where = () => true, timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const matching = received.filter(where);
        if (matching.length >= count) return matching;
        if (Date.now() > deadline) throw new Error(`expected ${count} webhook request(s), got ${matching.length}: ${matching.map((r) => r.event?.type).join(', ')}`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 100);
          waiters.push(() => (clearTimeout(timer), resolve()));
        });
      }
    },
    async close() {
      for (const response of open) response.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
    },
  };
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      let event: unknown = null;
      try {
        event = JSON.parse(body);
      } catch {
        // not JSON: the test will say so
      }
      const entry: Received = { path: request.url ?? '/', headers: request.headers, body, at: Date.now(), event };
      const index = received.length;
      received.push(entry);
      for (const wake of waiters.splice(0)) wake();
      const answer = receiver.answer(entry, index);
      if (answer === 'hang') {
        open.add(response);
        return;
      }
      const send = () => {
        response.writeHead(answer.status, answer.headers ?? {});
        response.end(answer.body ?? '');
      };
      if (answer.delayMs) {
        open.add(response);
        setTimeout(send, answer.delayMs);
      } else send();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  (receiver as { url: string }).url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return receiver;
}

/** Verifies a request as a receiver does with the `standardwebhooks` library; returns the parsed payload or throws. */
export function verify(secret: string, request: Received): unknown {
  return new Webhook(secret).verify(request.body, {
    'webhook-id': String(request.headers['webhook-id']),
    'webhook-timestamp': String(request.headers['webhook-timestamp']),
    'webhook-signature': String(request.headers['webhook-signature']),
  });
}

/** `receiver()` starts a receiver that is closed after the test (an afterEach registered here). */
export function useReceivers(): () => Promise<Receiver> {
  const open: Receiver[] = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((r) => r.close()));
  });
  return async () => {
    const r = await startReceiver();
    open.push(r);
    return r;
  };
}
