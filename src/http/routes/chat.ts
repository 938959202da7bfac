import type { FastifyInstance } from 'fastify';
import { PROTOCOLS } from '../../protocols/index.js';
import { refuseOtherMethods } from '../errors.js';
import type { AppContext } from '../context.js';
import { createLimits } from '../limits.js';
import { turnHandler } from '../turn-route.js';

/** The chat routes of every protocol adapter; each answers errors in its own shape. */
export async function chatRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }): Promise<void> {
  const limits = createLimits(app, ctx);
  // A model route may share a chat route's path (Gemini's GET /v1beta/models/{id}).
  const retrievedByGet = new Set(PROTOCOLS.flatMap((a) => (a.models?.retrieve?.method === 'GET' ? [a.models.retrieve.route] : [])));
  for (const adapter of PROTOCOLS) {
    const handler = turnHandler(adapter, ctx, limits);
    for (const url of adapter.routes) {
      app.post(url, { config: { protocol: adapter } }, handler);
      // On a shared path, a chat URL (Gemini's models/{session}:generateContent) still takes POST only.
      if (retrievedByGet.has(url)) refuseOtherMethods(app, url, ['POST', 'GET'], adapter, (path) => (path.includes(':') ? ['POST'] : ['POST', 'GET']));
      else refuseOtherMethods(app, url, ['POST'], adapter);
    }
  }
}
