import type { FastifyInstance } from 'fastify';
import { openAIChat } from '../../protocols/openai-chat.js';
import { refuseOtherMethods } from '../app.js';
import type { AppContext } from '../context.js';
import { turnHandler } from '../turn-route.js';

export async function chatRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }): Promise<void> {
  app.post('/v1/chat/completions', { config: { protocol: openAIChat } }, turnHandler(openAIChat, ctx));
  refuseOtherMethods(app, '/v1/chat/completions', ['POST']);
}
