/**
 * Azure-style OpenAI: POST /openai/deployments/{deployment}/chat/completions?api-version=…,
 * the deployment naming the session. Bodies, streams and errors are OpenAI's Chat Completions
 * (the `model` in the body is optional and ignored, as on Azure); `api-version` is accepted
 * whatever its value, and the `api-key` header like any other.
 */
import type { ProtocolAdapter } from './adapter.js';
import { ProxyError } from './errors.js';
import { openAIChat, parseChatCompletion } from './openai-chat.js';

export const azureOpenAI: ProtocolAdapter = {
  name: 'azure-openai',
  routes: ['/openai/deployments/:deployment/chat/completions'],
  toolCalls: true,

  parse(request, options) {
    const deployment = request.params['deployment'] ?? '';
    if (deployment === '') {
      throw new ProxyError('invalid_request', 'The deployment in the path is empty: it names the session, as in /openai/deployments/npc-guard/chat/completions.', {
        param: 'deployment',
      });
    }
    if (deployment.length > 256) throw new ProxyError('invalid_request', 'The deployment in the path is longer than 256 characters.', { param: 'deployment' });
    return parseChatCompletion(request, options, deployment);
  },

  renderReply: (turn, reply) => openAIChat.renderReply(turn, reply),
  stream: openAIChat.stream,
  renderError: (error) => openAIChat.renderError(error),
};
