/**
 * Endpoints real clients call beside chat and models, so that they work unchanged:
 *
 *   POST /v1/messages/count_tokens   Anthropic: the SDK's messages.countTokens (agents and CLIs
 *                                    count before a long request); an estimate, no session touched
 *   GET  /api/version                Ollama: Open WebUI's "Verify connection" of an Ollama
 *                                    connection, and clients that check the server's version
 *   GET  /api/ps                     Ollama: the loaded models (none: sessions are not loaded)
 */
import type { FastifyInstance } from 'fastify';
import { anthropicMessages, countTokens } from '../../protocols/anthropic-messages.js';
import { ollama } from '../../protocols/ollama.js';
import { ProxyError } from '../../protocols/errors.js';
import { refuseOtherMethods, sendError } from '../errors.js';

/** The Ollama API version the proxy's Ollama routes follow (clients compare it as dotted numbers). */
export const OLLAMA_API_VERSION = '0.12.0';

export async function compatRoutes(app: FastifyInstance): Promise<void> {
  app.post('/v1/messages/count_tokens', { config: { protocol: anthropicMessages } }, async (request, reply) => {
    try {
      return countTokens(request.body);
    } catch (error) {
      if (error instanceof ProxyError) return sendError(request, reply, error);
      throw error;
    }
  });
  refuseOtherMethods(app, '/v1/messages/count_tokens', ['POST'], anthropicMessages);

  app.get('/api/version', { config: { protocol: ollama } }, async () => ({ version: OLLAMA_API_VERSION }));
  refuseOtherMethods(app, '/api/version', ['GET'], ollama);
  app.get('/api/ps', { config: { protocol: ollama } }, async () => ({ models: [] }));
  refuseOtherMethods(app, '/api/ps', ['GET'], ollama);
}
