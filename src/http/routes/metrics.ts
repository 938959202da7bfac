import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../context.js';

export async function metricsRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }): Promise<void> {
  const metrics = ctx.metrics!;
  app.get('/metrics', async (_request, reply) => {
    reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });
}
