/**
 * Every wire format the proxy speaks. Adding a protocol is one adapter file and one line here:
 * the HTTP layer registers each adapter's routes, error shape and model list from this table.
 */
import type { ProtocolAdapter } from './adapter.js';
import { openAIChat } from './openai-chat.js';
import { openAIResponses } from './openai-responses.js';
import { anthropicMessages } from './anthropic-messages.js';
import { gemini } from './gemini.js';
import { ollama } from './ollama.js';
import { azureOpenAI } from './azure-openai.js';

export const PROTOCOLS: readonly ProtocolAdapter[] = [openAIChat, openAIResponses, anthropicMessages, gemini, ollama, azureOpenAI];
