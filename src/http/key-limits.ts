/**
 * A managed key's own limits (its `limits`): requests a minute, new sessions a minute, requests
 * held at once, live sessions. The two rates are @fastify/rate-limit limiters keyed by the key
 * (in cluster mode their counters are in Redis, shared by every instance). Held requests and
 * live sessions are counted in Redis in cluster mode (one sorted set and one set per key, which
 * heal themselves: an entry of a dead instance ages out, a session that ended is dropped when
 * next counted), in memory on one instance. Admins (the admin key, a local caller) have no key
 * limits.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import type { PrincipalLimits } from '../auth/principal.js';
import type { AppContext } from './context.js';

type Limiter = (request: FastifyRequest) => Promise<{ isAllowed?: boolean; isExceeded?: boolean; max: number; remaining: number; ttl: number }>;

export interface KeyRate {
  readonly what: string;
  readonly max: number;
  readonly remaining: number;
  readonly resetSeconds: number;
  readonly exceeded: boolean;
}

const limitOf = (request: FastifyRequest, name: keyof PrincipalLimits): number => request.client?.principal?.limits?.[name] ?? 0;

/** Counts a held request of a key, cluster-wide: entries expire on their own if an instance dies holding them. */
const HOLD_SCRIPT = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
`;

/** Counts a new session of a key against its live sessions; members that are no longer live are dropped. */
const LIVE_SCRIPT = `
local n = 0
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if m == ARGV[1] then return 1 end
  if redis.call('SISMEMBER', KEYS[2], m) == 1 then n = n + 1 else redis.call('SREM', KEYS[1], m) end
end
if n >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
`;

export interface KeyLimits {
  /** requests_per_minute: one request (or WebSocket message frame) of the caller's key. */
  requests(request: FastifyRequest): Promise<KeyRate | null>;
  /** new_sessions_per_minute, for a turn that starts a session. */
  newSession(request: FastifyRequest): Promise<KeyRate | null>;
  /** max_live_sessions: whether the key may start `sessionId` now (and counts it). */
  admitSession(request: FastifyRequest, sessionId: string): Promise<{ max: number } | null>;
  /** max_held: counts a held request; the release, or a refusal naming the cap. */
  hold(request: FastifyRequest): Promise<{ release: () => void } | { max: number }>;
}

const keyLimitsByService = new WeakMap<AppContext, KeyLimits>();

/** The service's key limits, made on the first call (the request hook, the chat routes and the WebSocket side share their counters). */
export function createKeyLimits(app: FastifyInstance, ctx: AppContext): KeyLimits {
  let limits = keyLimitsByService.get(ctx);
  if (!limits) {
    limits = buildKeyLimits(app, ctx);
    keyLimitsByService.set(ctx, limits);
  }
  return limits;
}

function buildKeyLimits(app: FastifyInstance, ctx: AppContext): KeyLimits {
  const cluster = ctx.cluster;
  const redis: Redis | null = cluster?.redis ?? null;
  const prefix = ctx.config.redisPrefix;
  const limiter = (name: keyof PrincipalLimits, label: string): Limiter =>
    app.createRateLimit({
      max: (request) => limitOf(request, name),
      timeWindow: 60_000,
      keyGenerator: (request) => `${label}:${request.client.principal!.id}`,
      // Keys without this limit are not counted.
      allowList: (request) => limitOf(request, name) <= 0,
    }) as unknown as Limiter;
  const perMinute = limiter('requests_per_minute', 'key-requests');
  const newSessions = limiter('new_sessions_per_minute', 'key-new-sessions');

  const rate = async (limit: Limiter, request: FastifyRequest, what: string): Promise<KeyRate | null> => {
    const result = await limit(request);
    if (result.isAllowed === true || result.isExceeded === undefined) return null;
    return { what, max: result.max, remaining: Math.max(0, result.remaining), resetSeconds: Math.max(1, Math.ceil(result.ttl / 1000)), exceeded: result.isExceeded };
  };

  // One instance: held requests and live sessions per key, in memory.
  const heldHere = new Map<string, number>();
  const liveHere = new Map<string, Set<string>>();
  const holdMs = Math.max(ctx.config.streamTurnTimeoutSeconds, ctx.config.turnTimeoutSeconds, ctx.config.handshakeTimeoutSeconds) * 1000 + 60_000;
  let holds = 0;

  return {
    requests: (request) => (limitOf(request, 'requests_per_minute') > 0 ? rate(perMinute, request, 'requests per key') : Promise.resolve(null)),
    newSession: (request) => (limitOf(request, 'new_sessions_per_minute') > 0 ? rate(newSessions, request, 'new sessions per key') : Promise.resolve(null)),

    async admitSession(request, sessionId) {
      const max = limitOf(request, 'max_live_sessions');
      if (max <= 0) return null;
      const id = request.client.principal!.id;
      if (redis) {
        const admitted = await redis.eval(LIVE_SCRIPT, 2, `${prefix}:key-live:${id}`, `${prefix}:live`, sessionId, max);
        return admitted === 1 ? null : { max };
      }
      let live = liveHere.get(id);
      if (live === undefined) liveHere.set(id, (live = new Set()));
      for (const s of live) if (s !== sessionId && ctx.sessions.get(s) === undefined) live.delete(s);
      if (live.has(sessionId)) return null;
      if (live.size >= max) return { max };
      live.add(sessionId);
      return null;
    },

    async hold(request) {
      const max = limitOf(request, 'max_held');
      const id = request.client.principal!.id;
      if (redis) {
        const member = `${cluster!.instanceId}:${request.id}:${++holds}`;
        const key = `${prefix}:key-held:${id}`;
        const now = Date.now();
        const admitted = await redis.eval(HOLD_SCRIPT, 1, key, now, now + holdMs, max, member, holdMs);
        if (admitted !== 1) return { max };
        let released = false;
        return {
          release: () => {
            if (released) return;
            released = true;
            redis.zrem(key, member).catch(() => undefined);
          },
        };
      }
      const count = heldHere.get(id) ?? 0;
      if (count >= max) return { max };
      heldHere.set(id, count + 1);
      let released = false;
      return {
        release: () => {
          if (released) return;
          released = true;
          const left = (heldHere.get(id) ?? 1) - 1;
          if (left <= 0) heldHere.delete(id);
          else heldHere.set(id, left);
        },
      };
    },
  };
}

/** Whether a request's key has a limit on held requests (the turn awaits nothing otherwise). */
export const holdsAreLimited = (request: FastifyRequest): boolean => limitOf(request, 'max_held') > 0;
export const sessionsAreLimited = (request: FastifyRequest): boolean =>
  limitOf(request, 'max_live_sessions') > 0 || limitOf(request, 'new_sessions_per_minute') > 0;

/** The IETF RateLimit headers (and the X-RateLimit ones many clients still read) for a key's request rate. */
export function rateHeaders(rate: KeyRate): Record<string, string> {
  return {
    'ratelimit-limit': String(rate.max),
    'ratelimit-remaining': String(rate.remaining),
    'ratelimit-reset': String(rate.resetSeconds),
    'x-ratelimit-limit': String(rate.max),
    'x-ratelimit-remaining': String(rate.remaining),
    'x-ratelimit-reset': String(rate.resetSeconds),
  };
}
