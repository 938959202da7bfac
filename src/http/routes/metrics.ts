import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../context.js';
import { adminOnly } from '../loopback-only.js';

/** Prometheus metrics: for the admin (or loopback without an admin key) unless METRICS_PUBLIC. */
export async function metricsRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }): Promise<void> {
  const metrics = ctx.metrics!;
  const access = ctx.config.metricsPublic ? 'public' : 'admin';
  const onRequest = ctx.config.metricsPublic ? [] : [adminOnly(ctx.access)];
  app.get('/metrics', { config: { access, rateLimit: false }, onRequest }, async (_request, reply) => {
    reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });
}
