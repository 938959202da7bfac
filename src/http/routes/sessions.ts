import type { FastifyInstance } from 'fastify';
import { splitModel } from '../../protocols/adapter.js';
import { ProxyError } from '../../protocols/errors.js';
import { refuseOtherMethods } from '../app.js';
import type { AppContext } from '../context.js';

/** A participant ends the conversation; held requests get 410 session_closed. */
export async function sessionRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }): Promise<void> {
  app.delete<{ Params: { id: string } }>('/v1/sessions/:id', async (request) => {
    const { sessionId } = splitModel(request.params.id);
    request.turnLog = { session_id: sessionId };
    if (!ctx.sessions.close(sessionId, 'deleted')) {
      throw new ProxyError('not_found', `There is no live session '${sessionId}'.`, { param: 'id' });
    }
    return { id: sessionId, object: 'session', deleted: true };
  });
  refuseOtherMethods(app, '/v1/sessions/:id', ['DELETE']);
}
