import type { FastifyInstance } from 'fastify';
import { PROTOCOLS } from '../../protocols/index.js';
import { refuseOtherMethods } from '../app.js';
import type { AppContext } from '../context.js';
import { createLimits } from '../limits.js';
import { turnHandler } from '../turn-route.js';

/** The chat routes of every protocol adapter; each answers errors in its own shape. */
export async function chatRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }): Promise<void> {
  const limits = createLimits(app, ctx);
  for (const adapter of PROTOCOLS) {
    const handler = turnHandler(adapter, ctx, limits);
    for (const url of adapter.routes) {
      app.post(url, { config: { protocol: adapter } }, handler);
      refuseOtherMethods(app, url, ['POST'], adapter);
    }
  }
}
