/**
 * Every wire format the proxy speaks. Adding a protocol is one adapter file and one line here:
 * the HTTP layer registers each adapter's routes, error shape and model list from this table.
 */
import type { ProtocolAdapter } from './adapter.js';
import { openAIChat } from './openai-chat.js';

export const PROTOCOLS: readonly ProtocolAdapter[] = [openAIChat];
