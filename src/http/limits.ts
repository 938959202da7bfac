/**
 * Limits beyond the per-client request rate (which @fastify/rate-limit applies to every
 * route): chat requests per session, new sessions per client, and requests held at once per
 * client. Each is off at 0. A refusal is a 429 rate_limited with Retry-After, in the route's
 * protocol's error shape. WebSocket `message` frames count against the same limiters
 * (`checkFrame`), so a socket is no way around them.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ProxyError } from '../protocols/errors.js';
import { perService, type AppContext } from './context.js';
import { sessionName } from '../auth/tenants.js';
import { createKeyLimits, rateHeaders, requestsAreLimited, sessionsAreLimited, type KeyRate } from './key-limits.js';

type Limiter = (request: FastifyRequest) => Promise<{ isExceeded: boolean; max: number; remaining: number; ttl: number }>;

export interface Limits {
  /** Whether `check` has anything to check (a turn skips it, and its await, when not). */
  readonly checking: boolean;
  /** Throws rate_limited when the session, or the client's new sessions, are over their rate. */
  check(request: FastifyRequest, reply: FastifyReply, sessionId: string): Promise<void>;
  /**
   * A WebSocket `message` frame, counted on the request that opened its connection: against the
   * client's request rate (the very counter its HTTP requests use), then as `check` counts a
   * turn. Throws rate_limited with retryAfterSeconds.
   */
  checkFrame(request: FastifyRequest, sessionId: string): Promise<void>;
  /**
   * Counts a held request against its client; throws rate_limited when over the cap. Returns
   * the release, or null when no cap is set (nothing to count).
   */
  hold(request: FastifyRequest): (() => void) | null;
  /** A managed key's (and its tenant's) new_sessions_per_minute and max_live_sessions, for a turn that starts `sessionId`; throws rate_limited. */
  checkKeySession(request: FastifyRequest, reply: FastifyReply | null, sessionId: string): Promise<void>;
  /** A managed key's (and its tenant's) max_held: the release; throws rate_limited at the cap. */
  holdForKey(request: FastifyRequest): Promise<() => void>;
}

/** The service's limits, made on the first call: the chat routes and the WebSocket side share them. */
export const createLimits = perService((app, ctx): Limits => buildLimits(app, ctx));

interface Exceeded {
  readonly what: string;
  readonly max: number;
  readonly seconds: number;
}

function buildLimits(app: FastifyInstance, ctx: AppContext): Limits {
  const { rateLimitPerMinute, sessionRateLimitPerMinute, newSessionsPerMinute, maxHeldPerClient } = ctx.config;
  // These run where the session runs (after a forward, on the owner): none is skipped there.
  const counted = { allowList: () => false };
  const limiter = (max: number, key: (request: FastifyRequest) => string): Limiter | null =>
    max > 0 ? (app.createRateLimit({ max, timeWindow: 60_000, keyGenerator: key, ...counted }) as unknown as Limiter) : null;
  const perSession = limiter(sessionRateLimitPerMinute, (r) => `session:${String(r.turnLog?.['session_id'])}`);
  const newSessions = limiter(newSessionsPerMinute, (r) => `new-session:${r.client.id}`);
  // Without options, @fastify/rate-limit hands out its global limiter: the same store, key and
  // budget as the hook that counts every HTTP request (app.ts).
  const perClient = rateLimitPerMinute > 0 ? (app.createRateLimit(ctx.cluster ? counted : undefined) as unknown as Limiter) : null;
  const held = new Map<string, number>();
  const keys = createKeyLimits(app, ctx);

  const over = async (limit: Limiter | null, request: FastifyRequest, what: string): Promise<Exceeded | null> => {
    if (!limit) return null;
    const result = await limit(request);
    return result.isExceeded ? { what, max: result.max, seconds: Math.max(1, Math.ceil(result.ttl / 1000)) } : null;
  };
  const turnLimits = async (request: FastifyRequest, sessionId: string): Promise<Exceeded | null> =>
    (await over(perSession, request, `requests to session '${sessionName(sessionId)}'`)) ??
    (ctx.sessions.get(sessionId) ? null : await over(newSessions, request, 'new sessions per client'));
  const keyRefusal = (rate: KeyRate): ProxyError =>
    new ProxyError('rate_limited', `Rate limit reached: ${rate.max} ${rate.what}. Retry in ${rate.resetSeconds} s.`, { retryAfterSeconds: rate.resetSeconds });
  const refusal = ({ what, max, seconds }: Exceeded): ProxyError =>
    new ProxyError('rate_limited', `Rate limit reached: ${max} ${what} a minute. Retry in ${seconds} s.`, { retryAfterSeconds: seconds });

  return {
    checking: perSession !== null || newSessions !== null,
    async check(request, reply, sessionId) {
      const exceeded = await turnLimits(request, sessionId);
      if (!exceeded) return;
      reply.header('x-ratelimit-limit', exceeded.max).header('x-ratelimit-remaining', 0).header('x-ratelimit-reset', exceeded.seconds);
      throw refusal(exceeded);
    },
    async checkFrame(request, sessionId) {
      const exceeded = (await over(perClient, request, 'requests per client')) ?? (await turnLimits(request, sessionId));
      if (exceeded) throw refusal(exceeded);
      // A managed key's own limits: each frame is one of its requests.
      const rate = requestsAreLimited(ctx, request) ? await keys.requests(request) : null;
      if (rate?.exceeded) throw keyRefusal(rate);
      if (sessionsAreLimited(ctx, request) && !ctx.sessions.get(sessionId)) await this.checkKeySession(request, null, sessionId);
    },
    async checkKeySession(request, reply, sessionId) {
      const rate = await keys.newSession(request);
      if (rate !== null) {
        reply?.headers(rateHeaders(rate));
        if (rate.exceeded) throw keyRefusal(rate);
      }
      const full = await keys.admitSession(request, sessionId);
      if (full) {
        throw new ProxyError('rate_limited', `Live sessions are at their limit: ${full.max} for ${full.whose} (max_live_sessions); end one, or retry when one closes.`, { retryAfterSeconds: 5 });
      }
    },
    async holdForKey(request) {
      const held = await keys.hold(request);
      if ('max' in held) {
        throw new ProxyError('rate_limited', `Held requests are at their limit: ${held.max} for ${held.whose} (max_held); retry when one is answered.`, { retryAfterSeconds: 1 });
      }
      return held.release;
    },
    hold(request) {
      if (maxHeldPerClient <= 0) return null;
      const id = request.client.id;
      const count = held.get(id) ?? 0;
      if (count >= maxHeldPerClient) {
        throw new ProxyError('rate_limited', `This client already has ${count} requests held open (MAX_HELD_PER_CLIENT); retry when one is answered.`, {
          retryAfterSeconds: 1,
        });
      }
      held.set(id, count + 1);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        const left = (held.get(id) ?? 1) - 1;
        if (left <= 0) held.delete(id);
        else held.set(id, left);
      };
    },
  };
}
