import type { FastifyInstance } from 'fastify';
import { refuseOtherMethods } from '../app.js';
import type { AppContext } from '../context.js';

export async function healthRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }): Promise<void> {
  // For load balancers: no key, no rate limit.
  app.get('/health', { config: { access: 'public', rateLimit: false } }, async () => {
    const byState: Record<string, number> = {};
    for (const session of ctx.sessions.list()) byState[session.state] = (byState[session.state] ?? 0) + 1;
    return {
      status: ctx.shuttingDown ? 'shutting_down' : 'ok',
      uptime_seconds: Math.round((Date.now() - ctx.startedAt) / 1000),
      sessions: { live: ctx.sessions.size, max: ctx.config.maxSessions, by_state: byState },
      journal: { path: ctx.config.journalPath, ...ctx.journal.store.stats(), recovery: ctx.journal.recovery },
    };
  });
  refuseOtherMethods(app, '/health', ['GET']);
}
