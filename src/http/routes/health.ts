import type { FastifyInstance } from 'fastify';
import { refuseOtherMethods } from '../errors.js';
import type { AppContext } from '../context.js';

/**
 * The timers a client (and `motive-proxy e2e --url`) must know to judge what it sees: how often
 * keep-alives come and how long a held request may wait. Nothing secret.
 */
function timerSettings(config: AppContext['config']): Record<string, number> {
  return {
    keepalive_interval_seconds: config.keepaliveIntervalSeconds,
    handshake_timeout_seconds: config.handshakeTimeoutSeconds,
    turn_timeout_seconds: config.turnTimeoutSeconds,
    stream_turn_timeout_seconds: config.streamTurnTimeoutSeconds,
  };
}

/** What recovery found, without session ids (this route answers anyone): how many were damaged. */
function publicRecovery(ctx: AppContext) {
  const recovery = ctx.journal.recovery;
  if (!recovery) return null;
  const { damaged, ...counts } = recovery;
  return { ...counts, damaged: damaged.length };
}

/** Each bridge's health, without addresses or errors' details (this route answers anyone): GET /admin/bridges has those. */
function bridgeHealth(ctx: AppContext): Record<string, unknown> {
  const bridges = ctx.bridges!;
  const host = bridges.host;
  if (!host) return Object.fromEntries(bridges.names.map((name) => [name, { running_on: bridges.heldBy }]));
  return Object.fromEntries(host.health().map((h) => [h.bridge, { connected: h.connected, last_error: h.lastError === null ? null : h.lastErrorAt, queue_depth: h.queueDepth, conversations: h.conversations }]));
}

export async function healthRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }): Promise<void> {
  // For load balancers: no key, no rate limit.
  app.get('/health', { config: { access: 'public', rateLimit: false } }, async (_request, reply) => {
    const byState: Record<string, number> = {};
    for (const session of ctx.sessions.list()) byState[session.state] = (byState[session.state] ?? 0) + 1;
    const cluster = ctx.cluster;
    // Cluster mode: an instance out of touch with Redis serves nothing; a load balancer should skip it.
    const ready = !cluster || cluster.ownership.healthy;
    if (!ready && !ctx.shuttingDown) reply.code(503).header('retry-after', '1');
    return {
      status: ctx.shuttingDown ? 'shutting_down' : ready ? 'ok' : 'not_ready',
      uptime_seconds: Math.round((Date.now() - ctx.startedAt) / 1000),
      sessions: { live: ctx.sessions.size, max: ctx.config.maxSessions, by_state: byState },
      journal: { path: cluster ? 'redis' : ctx.config.journalPath, ...ctx.journal.store.stats(), recovery: publicRecovery(ctx) },
      ...(cluster
        ? {
            cluster: {
              instance: cluster.instanceId,
              ready,
              lease_ms: cluster.ownership.leaseMs,
              owned_sessions: ctx.sessions.size,
              takeovers: cluster.takeovers,
              fenced_appends: cluster.fenced,
              redis_commands: cluster.redisCommands,
            },
          }
        : {}),
      ...(ctx.bridges ? { bridges: bridgeHealth(ctx) } : {}),
      settings: timerSettings(ctx.config),
    };
  });
  refuseOtherMethods(app, '/health', ['GET']);
}
