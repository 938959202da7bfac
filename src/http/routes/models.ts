import type { FastifyInstance } from 'fastify';
import { refuseOtherMethods } from '../app.js';
import type { AppContext } from '../context.js';

/** OpenAI's model list, naming the sessions waiting for a peer so a chat UI's picker can join one. */
export async function modelRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }): Promise<void> {
  app.get('/v1/models', async () => {
    const data = [];
    for (const session of ctx.sessions.list()) {
      if (session.state !== 'AWAITING_PEER') continue;
      const first = session.context.transcript[0]?.at ?? ctx.startedAt;
      data.push({ id: session.id, object: 'model', created: Math.floor(first / 1000), owned_by: 'motive-proxy' });
    }
    return { object: 'list', data };
  });
  refuseOtherMethods(app, '/v1/models', ['GET']);
}
