/**
 * Limits beyond the per-client request rate (which @fastify/rate-limit applies to every
 * route): chat requests per session, new sessions per client, and requests held at once per
 * client. Each is off at 0. A refusal is a 429 rate_limited with Retry-After, in the route's
 * protocol's error shape.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ProxyError } from '../protocols/errors.js';
import type { AppContext } from './context.js';

type Limiter = (request: FastifyRequest) => Promise<{ isExceeded: boolean; max: number; remaining: number; ttl: number }>;

export interface Limits {
  /** Whether `check` has anything to check (a turn skips it, and its await, when not). */
  readonly checking: boolean;
  /** Throws rate_limited when the session, or the client's new sessions, are over their rate. */
  check(request: FastifyRequest, reply: FastifyReply, sessionId: string): Promise<void>;
  /**
   * Counts a held request against its client; throws rate_limited when over the cap. Returns
   * the release, or null when no cap is set (nothing to count).
   */
  hold(request: FastifyRequest): (() => void) | null;
}

export function createLimits(app: FastifyInstance, ctx: AppContext): Limits {
  const { sessionRateLimitPerMinute, newSessionsPerMinute, maxHeldPerClient } = ctx.config;
  const limiter = (max: number, key: (request: FastifyRequest) => string): Limiter | null =>
    max > 0 ? (app.createRateLimit({ max, timeWindow: 60_000, keyGenerator: key }) as unknown as Limiter) : null;
  const perSession = limiter(sessionRateLimitPerMinute, (r) => `session:${String(r.turnLog?.['session_id'])}`);
  const newSessions = limiter(newSessionsPerMinute, (r) => `new-session:${r.client.id}`);
  const held = new Map<string, number>();

  const refuse = (reply: FastifyReply, what: string, result: { max: number; ttl: number }): never => {
    const seconds = Math.max(1, Math.ceil(result.ttl / 1000));
    reply.header('x-ratelimit-limit', result.max).header('x-ratelimit-remaining', 0).header('x-ratelimit-reset', seconds);
    throw new ProxyError('rate_limited', `Rate limit reached: ${result.max} ${what} a minute. Retry in ${seconds} s.`, { retryAfterSeconds: seconds });
  };

  return {
    checking: perSession !== null || newSessions !== null,
    async check(request, reply, sessionId) {
      if (perSession) {
        const result = await perSession(request);
        if (result.isExceeded) refuse(reply, `requests to session '${sessionId}'`, result);
      }
      if (newSessions && !ctx.sessions.get(sessionId)) {
        const result = await newSessions(request);
        if (result.isExceeded) refuse(reply, 'new sessions per client', result);
      }
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
