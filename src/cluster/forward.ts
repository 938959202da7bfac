/**
 * Forwarding a request to the instance that owns its session: the same method, path, headers
 * and body, and the owner's response (status, headers, body, streamed as it comes) back to the
 * client. The owner sees the request as any other, with `x-motive-forwarded-by` naming the
 * instance it came through, so that it is never sent on again. A client that goes away aborts
 * the forwarded request, so the owner sees it go away too.
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ProxyError } from '../protocols/errors.js';

export const FORWARDED_BY = 'x-motive-forwarded-by';
/** The cluster's token (src/cluster/ownership.ts): proves a forwarded request came from an instance. */
export const CLUSTER_TOKEN = 'x-motive-cluster-token';
/** The id the forwarding instance gave the request: the owner uses it too, so both name it alike in the journal. */
export const FORWARDED_ID = 'x-motive-request-id';
/** The client's address, as the instance that took the request saw it (believed only with the cluster token). */
export const FORWARDED_FOR = 'x-motive-client-address';

/** Headers that belong to one connection, not to the request (RFC 9110 §7.6.1), and what is recomputed. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'host', 'content-length', FORWARDED_BY, CLUSTER_TOKEN, FORWARDED_ID, FORWARDED_FOR]);

const httpAgent = new HttpAgent({ keepAlive: true });
const httpsAgent = new HttpsAgent({ keepAlive: true });

/** The instance a request was forwarded by, when it carries the cluster's token; null otherwise. */
export function forwardedBy(request: FastifyRequest, isToken: (presented: unknown) => boolean): string | null {
  const value = request.headers[FORWARDED_BY];
  if (typeof value !== 'string' || value === '' || !isToken(request.headers[CLUSTER_TOKEN])) return null;
  return value;
}

/**
 * Sends `request` (whose parsed JSON body is `body`) to `address` and answers the client with
 * what the owner answers. Resolves once the response has been passed on (or the client left).
 */
export interface ForwardOptions {
  /** This instance's id and the cluster's token. */
  readonly self: string;
  readonly token: string;
  /** Checks the owner's heartbeat while the request waits. */
  readonly watch?: OwnerWatch;
  /**
   * The owner could not answer (it died or froze): what the journal says the request got, if
   * it got anything. Answered to the client instead of an error: the append was the commit.
   */
  readonly recover?: () => Promise<((reply: FastifyReply) => unknown) | null>;
}

export interface OwnerWatch {
  /** False once the owner's heartbeat is gone (it died, or is paused past its lease). */
  readonly alive: () => Promise<boolean>;
  readonly everyMs: number;
}

export async function forward(request: FastifyRequest, reply: FastifyReply, body: unknown, address: string, options: ForwardOptions): Promise<unknown> {
  const { self, watch } = options;
  const target = new URL(request.url, address);
  const headers: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(request.headers)) {
    if (value !== undefined && !HOP_BY_HOP.has(name)) headers[name] = value;
  }
  const payload = body === undefined || body === null ? undefined : Buffer.from(JSON.stringify(body));
  if (payload) headers['content-length'] = String(payload.length);
  headers[FORWARDED_BY] = self;
  headers[CLUSTER_TOKEN] = options.token;
  headers[FORWARDED_ID] = request.id;
  headers[FORWARDED_FOR] = request.ip;

  const https = target.protocol === 'https:';
  const outgoing = (https ? httpsRequest : httpRequest)(target, { method: request.method, headers, agent: https ? httpsAgent : httpAgent });
  // The client went away: so does the forwarded request (the owner sees a disconnect).
  const onClientClose = () => {
    if (!reply.raw.writableFinished) outgoing.destroy();
  };
  reply.raw.on('close', onClientClose);
  // An owner that dies or freezes (SIGSTOP, a partition) would hold this request for ever: while
  // it waits, its heartbeat is checked; once it is gone the forward is given up, and the client
  // retries (503 before any byte of the answer, a cut connection after).
  const watcher = watch
    ? setInterval(() => {
        void watch.alive().then(
          (alive) => {
            if (alive || outgoing.destroyed) return;
            outgoing.destroy(new Error('the owner stopped answering (its heartbeat expired)'));
          },
          () => undefined,
        );
      }, watch.everyMs)
    : null;
  watcher?.unref();
  const stopWatching = () => {
    if (watcher) clearInterval(watcher);
  };

  let response: IncomingMessage;
  try {
    response = await new Promise<IncomingMessage>((resolve, reject) => {
      outgoing.once('response', resolve);
      outgoing.once('error', reject);
      outgoing.end(payload);
    });
  } catch (error) {
    stopWatching();
    reply.raw.off('close', onClientClose);
    if (reply.raw.destroyed) return reply;
    // Died after its append and before its answer: the journal has what this request was given.
    const recovered = await options.recover?.().catch(() => null);
    if (recovered) return recovered(reply);
    throw new ProxyError('session_moved', `The instance that runs this session could not be reached (${error instanceof Error ? error.message : String(error)}). Retry the same request; nothing is lost.`, { retryAfterSeconds: 1 });
  }
  reply.hijack();
  const res = reply.raw;
  res.writeHead(response.statusCode ?? 502, passOn(response.headers));
  res.flushHeaders();
  response.on('data', (chunk: Buffer) => res.write(chunk));
  const complete = await new Promise<boolean>((resolve) => {
    response.once('end', () => resolve(true));
    response.once('close', () => resolve(response.complete));
    response.once('error', () => resolve(false));
  });
  stopWatching();
  reply.raw.off('close', onClientClose);
  // Cut short (the owner died mid-response): the client's connection is cut too, so that its
  // SDK sees a failed call and retries, rather than a response that looks whole.
  if (!res.destroyed) complete ? res.end() : res.destroy();
  return reply;
}

function passOn(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
  }
  return out;
}
