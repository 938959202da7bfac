import type { FastifyInstance } from 'fastify';
import type { JoinableSession } from '../../protocols/adapter.js';
import { PROTOCOLS } from '../../protocols/index.js';
import { refuseOtherMethods } from '../app.js';
import type { AppContext } from '../context.js';

/**
 * Model lists (OpenAI's /v1/models, Ollama's /api/tags, …) name the sessions waiting for a
 * peer, so a chat UI's model picker can join one.
 */
export async function modelRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }): Promise<void> {
  const joinable = (): JoinableSession[] => {
    const list: JoinableSession[] = [];
    for (const session of ctx.sessions.list()) {
      if (session.state !== 'AWAITING_PEER') continue;
      list.push({ id: session.id, createdAt: session.context.transcript[0]?.at ?? ctx.startedAt });
    }
    return list;
  };
  for (const adapter of PROTOCOLS) {
    const models = adapter.models;
    if (!models) continue;
    app.get(models.route, { config: { protocol: adapter } }, async () => models.render(joinable()));
    refuseOtherMethods(app, models.route, ['GET'], adapter);
  }
}
