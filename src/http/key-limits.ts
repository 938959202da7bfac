/**
 * A managed key's own limits (its `limits`), and its tenant's (/admin/tenants, shared by every
 * principal of the tenant): requests a minute, new sessions a minute, requests held at once,
 * live sessions. The two rates are @fastify/rate-limit limiters keyed by the key
 * (in cluster mode their counters are in Redis, shared by every instance). Held requests and
 * live sessions are counted in Redis in cluster mode (one sorted set and one set per key, which
 * heal themselves: an entry of a dead instance ages out, a session that ended is dropped when
 * next counted), in memory on one instance. Admins (the admin key, a local caller) have no key
 * limits.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import type { PrincipalLimits } from '../auth/principal.js';
import { perService, type AppContext } from './context.js';
import { ProxyError } from '../protocols/errors.js';

type Limiter = (request: FastifyRequest) => Promise<{ isAllowed?: boolean; isExceeded?: boolean; max: number; remaining: number; ttl: number }>;

export interface KeyRate {
  readonly what: string;
  readonly max: number;
  readonly remaining: number;
  readonly resetSeconds: number;
  readonly exceeded: boolean;
}

type LimitName = keyof PrincipalLimits;

/** Whose limits: the caller's managed key, or its tenant (every principal of it together). */
interface Scope {
  readonly label: 'key' | 'tenant';
  /** How messages name it. */
  describe(request: FastifyRequest): string;
  idOf(request: FastifyRequest): string;
  limitsOf(request: FastifyRequest): PrincipalLimits | undefined;
}

/** Counts a held request, cluster-wide: entries expire on their own if an instance dies holding them. */
const HOLD_SCRIPT = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
`;

/** Counts a new session against live sessions; members that are no longer live are dropped. */
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
  /** requests_per_minute: one request (or WebSocket message frame) of the caller's key and tenant; the tightest, or null when neither has the limit. */
  requests(request: FastifyRequest): Promise<KeyRate | null>;
  /** new_sessions_per_minute, for a turn that starts a session. */
  newSession(request: FastifyRequest): Promise<KeyRate | null>;
  /** max_live_sessions: null when the caller may start `sessionId` now (and it is counted), else the cap and whose. */
  admitSession(request: FastifyRequest, sessionId: string): Promise<{ max: number; whose: string } | null>;
  /** max_held: counts a held request; the release, or the cap and whose. */
  hold(request: FastifyRequest): Promise<{ release: () => void } | { max: number; whose: string }>;
}

/** The service's key and tenant limits, made on the first call (the request hook, the chat routes and the WebSocket side share their counters). */
export const createKeyLimits = perService((app, ctx): KeyLimits => buildKeyLimits(app, ctx));

const limitIn = (limits: PrincipalLimits | undefined, name: LimitName): number => limits?.[name] ?? 0;

/** Redis cannot be asked: the request gets 503, not a guess. */
const unavailable = (err: unknown): never => {
  throw new ProxyError('cluster_unavailable', `The cluster's Redis cannot be reached: ${err instanceof Error ? err.message : String(err)}. Retry shortly.`, { retryAfterSeconds: 1 });
};

function buildKeyLimits(app: FastifyInstance, ctx: AppContext): KeyLimits {
  const cluster = ctx.cluster;
  const redis: Redis | null = cluster?.redis ?? null;
  const prefix = ctx.config.redisPrefix;
  const scopes: readonly Scope[] = [
    { label: 'key', describe: () => 'this API key', idOf: (r) => r.client.principal!.id, limitsOf: (r) => limitsOf(ctx, r).key },
    { label: 'tenant', describe: (r) => `tenant '${r.client.principal!.tenant}'`, idOf: (r) => r.client.principal!.tenant!, limitsOf: (r) => limitsOf(ctx, r).tenant },
  ];
  const limiter = (scope: Scope, name: LimitName): Limiter =>
    app.createRateLimit({
      max: (request) => limitIn(scope.limitsOf(request), name),
      timeWindow: 60_000,
      keyGenerator: (request) => `${scope.label}-${name}:${scope.idOf(request)}`,
      allowList: (request) => limitIn(scope.limitsOf(request), name) <= 0,
    }) as unknown as Limiter;
  const limiters = new Map(scopes.map((scope) => [scope, { requests: limiter(scope, 'requests_per_minute'), newSessions: limiter(scope, 'new_sessions_per_minute') }]));

  /** The tightest of the scopes' rates: an exceeded one first, else the one with the fewest left. */
  const rate = async (request: FastifyRequest, name: 'requests_per_minute' | 'new_sessions_per_minute', what: string): Promise<KeyRate | null> => {
    let tightest: KeyRate | null = null;
    for (const scope of scopes) {
      if (limitIn(scope.limitsOf(request), name) <= 0) continue;
      const pair = limiters.get(scope)!;
      const result = await (name === 'requests_per_minute' ? pair.requests : pair.newSessions)(request);
      if (result.isAllowed === true || result.isExceeded === undefined) continue;
      const found: KeyRate = {
        what: `${what} for ${scope.describe(request)}`,
        max: result.max,
        remaining: Math.max(0, result.remaining),
        resetSeconds: Math.max(1, Math.ceil(result.ttl / 1000)),
        exceeded: result.isExceeded,
      };
      if (tightest === null || (found.exceeded && !tightest.exceeded) || (found.exceeded === tightest.exceeded && found.remaining < tightest.remaining)) tightest = found;
    }
    return tightest;
  };

  // One instance: held requests and live sessions per key and tenant, in memory.
  const heldHere = new Map<string, number>();
  const liveHere = new Map<string, Set<string>>();
  const holdMs = Math.max(ctx.config.streamTurnTimeoutSeconds, ctx.config.turnTimeoutSeconds, ctx.config.handshakeTimeoutSeconds) * 1000 + 60_000;
  let holds = 0;

  const admitOne = async (scope: Scope, request: FastifyRequest, sessionId: string, max: number): Promise<boolean> => {
    const id = `${scope.label}:${scope.idOf(request)}`;
    if (redis) return (await redis.eval(LIVE_SCRIPT, 2, `${prefix}:live-of:${id}`, `${prefix}:live`, sessionId, max).catch(unavailable)) === 1;
    let live = liveHere.get(id);
    if (live === undefined) liveHere.set(id, (live = new Set()));
    for (const s of live) if (s !== sessionId && ctx.sessions.get(s) === undefined) live.delete(s);
    if (live.has(sessionId)) return true;
    if (live.size >= max) return false;
    live.add(sessionId);
    return true;
  };

  const holdOne = async (scope: Scope, request: FastifyRequest, max: number): Promise<(() => void) | null> => {
    const id = `${scope.label}:${scope.idOf(request)}`;
    let released = false;
    if (redis) {
      const member = `${cluster!.instanceId}:${request.id}:${++holds}`;
      const key = `${prefix}:held-of:${id}`;
      const now = Date.now();
      if ((await redis.eval(HOLD_SCRIPT, 1, key, now, now + holdMs, max, member, holdMs).catch(unavailable)) !== 1) return null;
      return () => {
        if (released) return;
        released = true;
        redis.zrem(key, member).catch(() => undefined);
      };
    }
    const count = heldHere.get(id) ?? 0;
    if (count >= max) return null;
    heldHere.set(id, count + 1);
    return () => {
      if (released) return;
      released = true;
      const left = (heldHere.get(id) ?? 1) - 1;
      if (left <= 0) heldHere.delete(id);
      else heldHere.set(id, left);
    };
  };

  return {
    requests: (request) => rate(request, 'requests_per_minute', 'requests a minute'),
    newSession: (request) => rate(request, 'new_sessions_per_minute', 'new sessions a minute'),

    async admitSession(request, sessionId) {
      for (const scope of scopes) {
        const max = limitIn(scope.limitsOf(request), 'max_live_sessions');
        if (max > 0 && !(await admitOne(scope, request, sessionId, max))) return { max, whose: scope.describe(request) };
      }
      return null;
    },

    async hold(request) {
      const releases: Array<() => void> = [];
      const release = () => releases.forEach((r) => r());
      for (const scope of scopes) {
        const max = limitIn(scope.limitsOf(request), 'max_held');
        if (max <= 0) continue;
        const held = await holdOne(scope, request, max);
        if (held === null) {
          release();
          return { max, whose: scope.describe(request) };
        }
        releases.push(held);
      }
      return { release };
    },
  };
}

/** The limits that bind a request: its key's and its tenant's (the hot path checks these first and awaits nothing when there are none). */
export function limitsOf(ctx: AppContext, request: FastifyRequest): { key: PrincipalLimits | undefined; tenant: PrincipalLimits | undefined } {
  const principal = request.client?.principal;
  // Admins are not limited: a key or token with an admin role is held to no key or tenant limit.
  if (!principal || principal.grants.some((g) => g.role === 'admin')) return { key: undefined, tenant: undefined };
  return { key: principal.limits, tenant: ctx.access.tenants?.limitsOf(principal.tenant) };
}

const any = (ctx: AppContext, request: FastifyRequest, ...names: LimitName[]): boolean => {
  const { key, tenant } = limitsOf(ctx, request);
  if (key === undefined && tenant === undefined) return false;
  return names.some((name) => limitIn(key, name) > 0 || limitIn(tenant, name) > 0);
};
export const requestsAreLimited = (ctx: AppContext, request: FastifyRequest): boolean => any(ctx, request, 'requests_per_minute');
export const holdsAreLimited = (ctx: AppContext, request: FastifyRequest): boolean => any(ctx, request, 'max_held');
export const sessionsAreLimited = (ctx: AppContext, request: FastifyRequest): boolean => any(ctx, request, 'max_live_sessions', 'new_sessions_per_minute');

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
