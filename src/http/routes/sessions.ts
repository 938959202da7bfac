import type { FastifyInstance } from 'fastify';
import { splitModel } from '../../protocols/adapter.js';
import { ProxyError } from '../../protocols/errors.js';
import { refuseOtherMethods } from '../errors.js';
import { scopedId, sessionName, tenantOfRequest } from '../../auth/tenants.js';
import type { AppContext } from '../context.js';

/** A participant ends the conversation; held requests get 410 session_closed. */
export async function sessionRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }): Promise<void> {
  app.delete<{ Params: { id: string } }>('/v1/sessions/:id', async (request, reply) => {
    const sessionId = scopedId(tenantOfRequest(request), splitModel(request.params.id).sessionId);
    request.turnLog = { session_id: sessionId };
    if (ctx.cluster) {
      // Cluster mode: the owner ends it; a session nobody runs is claimed (and rebuilt) to be ended.
      const route = await ctx.cluster.route(sessionId, ctx.cluster.isForwarded(request));
      if (route.kind === 'remote') return ctx.cluster.forwardTo(request, reply, undefined, route);
    }
    const session = ctx.sessions.get(sessionId);
    if (!session) throw new ProxyError('not_found', `There is no live session '${request.params.id}'.`, { param: 'id' });
    // With API keys, only the clients that joined the session may end it.
    if (!session.mayClose(request.client.key)) {
      throw new ProxyError('session_forbidden', `Session '${request.params.id}' belongs to the clients that joined it; this API key is not one of them.`);
    }
    session.close('deleted');
    return { id: sessionName(sessionId), object: 'session', deleted: true };
  });
  refuseOtherMethods(app, '/v1/sessions/:id', ['DELETE']);
}
