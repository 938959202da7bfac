/**
 * Anthropic Messages: POST /v1/messages, plain JSON and SSE (`event:` + `data:` frames from
 * `message_start` to `message_stop`, `ping` while held), errors as
 * {"type":"error","error":{"type","message"},"request_id"}.
 *
 * Shapes follow the real API as recorded on the wire (and as @anthropic-ai/sdk types them):
 * a message carries `stop_details`, usage carries the cache counters, `cache_creation`,
 * `service_tier` and `inference_geo`; a text block is just {type, text}.
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { detectBackgroundTask, type ChatText } from './background-tasks.js';
import { chatTurn, readHistory, sessionInPath, textOfParts, type JoinableSession, estimateTokens, parseBody, sessionModel, splitModel, type RenderTurn, type ProtocolAdapter } from './adapter.js';
import { ProxyError } from './errors.js';

const block = z.looseObject({ type: z.string({ error: 'each content block needs a type' }), text: z.unknown().optional() });
const content = z.union([z.string(), z.array(block)], { error: 'content must be a string or an array of content blocks' });
const messageParam = z.looseObject({
  role: z.string({ error: 'each message needs a role' }),
  content: content.nullish(),
});
const request = z.looseObject({
  model: sessionModel,
  messages: z.array(messageParam, { error: 'messages is required and must be an array' }).min(1, 'messages must not be empty'),
  system: content.nullish(),
  stream: z.boolean().nullish(),
});

// Anthropic's error types (the API's error documentation, and ErrorType in the SDK).
// Statuses the API does not list get invalid_request_error, as the API itself does for
// "other 4XX status codes"; 409 gets conflict_error and 408 timeout_error (both ErrorType values).
const ANTHROPIC_ERROR_TYPES: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  405: 'invalid_request_error',
  408: 'timeout_error',
  409: 'conflict_error',
  410: 'invalid_request_error',
  413: 'request_too_large',
  415: 'invalid_request_error',
  422: 'invalid_request_error',
  429: 'rate_limit_error',
  500: 'api_error',
  503: 'overloaded_error',
};

export function anthropicErrorType(error: ProxyError): string {
  if (error.code === 'journal_unavailable') return 'api_error';
  return ANTHROPIC_ERROR_TYPES[error.status] ?? (error.status >= 500 ? 'api_error' : 'invalid_request_error');
}

/**
 * The error object: Anthropic's type and the proxy's message, with the contract's code as
 * `details.error_code` (the SDK exposes it as `APIError.errorCode`; it treats codes it does
 * not know as the bare type).
 */
function errorObject(error: ProxyError) {
  return { type: anthropicErrorType(error), message: error.message, details: { error_code: error.code } };
}

/**
 * The HTTP error body. `request_id` is the request's id, as in the real shape (the same id is in
 * the `request-id` header and in the proxy's log lines); null where there is no request to name
 * (a refused CONNECT).
 */
export function anthropicErrorBody(error: ProxyError, requestId?: string) {
  return { type: 'error', error: errorObject(error), request_id: requestId ?? null };
}

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
/** `msg_01` and 22 base-62 characters, as the API's ids look. */
function messageId(): string {
  let id = 'msg_01';
  for (const byte of randomBytes(22)) id += BASE62[byte % 62];
  return id;
}

function usage(turn: RenderTurn, outputTokens: number) {
  return {
    input_tokens: turn.promptTokens,
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: 0,
    cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 0 },
    output_tokens: outputTokens,
    service_tier: 'standard',
    inference_geo: 'not_available',
  };
}

function message(turn: RenderTurn, id: string, text: string | null, outputTokens: number) {
  return {
    model: turn.model,
    id,
    type: 'message',
    role: 'assistant',
    content: text === null ? [] : [{ type: 'text', text }],
    stop_reason: text === null ? null : 'end_turn',
    stop_sequence: null,
    stop_details: null,
    usage: usage(turn, outputTokens),
  };
}

const event = (name: string, data: unknown): string => `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
/** Byte for byte what the API sends while a response is being produced. */
const PING = 'event: ping\ndata: {"type": "ping"}\n\n';

const countTokensRequest = z.looseObject({
  model: sessionModel,
  messages: z.array(messageParam, { error: 'messages is required and must be an array' }).min(1, 'messages must not be empty'),
  system: content.nullish(),
  tools: z.array(z.unknown(), { error: 'tools must be an array' }).nullish(),
});

type Content = Parameters<typeof textOfParts>[0];
type Fields = { readonly messages: readonly { role: string; content?: Content }[]; readonly system?: Content };

/** The message texts, and the system prompt: the top-level one and system-role messages (which this SDK's MessageParam allows). */
function textsOf(fields: Fields): { texts: ChatText[]; system: string[] } {
  const texts: ChatText[] = fields.messages.map((m) => ({ role: m.role, content: textOfParts(m.content) }));
  const system = [textOfParts(fields.system), ...texts.filter((m) => m.role === 'system').map((m) => m.content)].filter((s) => s !== '');
  return { texts, system };
}

/**
 * A request's input tokens, as both `usage.input_tokens` and count_tokens report them: about
 * four bytes a token over the system prompt, the other messages' text and the tools' definitions.
 */
function inputTokens({ texts, system }: { texts: readonly ChatText[]; system: readonly string[] }, tools: unknown): number {
  let text = system.join('\n\n');
  for (const m of texts) if (m.role !== 'system') text += m.content;
  if (Array.isArray(tools) && tools.length > 0) text += JSON.stringify(tools);
  return Math.max(1, estimateTokens(text));
}

/**
 * POST /v1/messages/count_tokens (the SDK's `messages.countTokens`, which agents and CLIs call
 * before a long request): the estimate `usage.input_tokens` reports for the same request. No
 * session is touched: counting is not a turn.
 */
export function countTokens(body: unknown): { input_tokens: number } {
  const fields = parseBody(countTokensRequest, body);
  return { input_tokens: inputTokens(textsOf(fields), fields.tools) };
}

export const anthropicMessages: ProtocolAdapter = {
  name: 'anthropic',
  routes: ['/v1/messages'],
  // Errors on paths under it the proxy does not serve (the API's batches, say) take its shape.
  pathPrefixes: ['/v1/messages/'],

  // x-api-key / authorization and anthropic-version are accepted and not checked.
  parse({ body, headers }, { answerBackgroundTasks }) {
    const fields = parseBody(request, body);
    const { model } = fields;
    const read = textsOf(fields);
    const { texts, system } = read;
    const history = readHistory(texts, { list: 'messages', text: (i) => `messages.${i}.content` });
    const withSystem: ChatText[] = system.length > 0 ? [{ role: 'system', content: system.join('\n\n') }, ...texts] : texts;
    const { sessionId, explicitSide } = splitModel(model);
    return {
      model,
      sessionId,
      stream: fields.stream === true,
      background: answerBackgroundTasks ? detectBackgroundTask(withSystem, fields) : null,
      promptTokens: inputTokens(read, fields['tools']),
      options: {},
      turn: chatTurn({ explicitSide, history, system }, headers),
    };
  },

  renderReply(turn, { content: text }) {
    return message(turn, messageId(), text, estimateTokens(text));
  },

  stream: {
    contentType: 'text/event-stream; charset=utf-8',
    writer(turn) {
      const id = messageId();
      let started = false;
      // The text block opens before its first delta (or at the end, should there be none).
      const startBlock = (): string => {
        if (started) return '';
        started = true;
        return event('content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } });
      };
      return {
        // The API's message_start counts the first token already; so does this one.
        open: () => event('message_start', { type: 'message_start', message: message(turn, id, null, 1) }),
        keepAlive: () => PING,
        delta: (text) => startBlock() + event('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text } }),
        end: ({ content: text }) =>
          startBlock() +
          event('content_block_stop', { type: 'content_block_stop', index: 0 }) +
          event('message_delta', {
            type: 'message_delta',
            delta: { stop_reason: 'end_turn', stop_sequence: null, stop_details: null },
            usage: { input_tokens: turn.promptTokens, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: estimateTokens(text) },
          }) +
          event('message_stop', { type: 'message_stop' }),
        error: (error) => event('error', { type: 'error', error: errorObject(error) }),
      };
    },
  },

  renderError: anthropicErrorBody,

  // The route is OpenAI's too: requests with Anthropic's version header get Anthropic's shapes.
  models: {
    route: '/v1/models',
    header: 'anthropic-version',
    render: (sessions) => ({
      data: sessions.map(anthropicModel),
      has_more: false,
      first_id: sessions[0]?.id ?? null,
      last_id: sessions[sessions.length - 1]?.id ?? null,
    }),
    retrieve: { method: 'GET', route: '/v1/models/*', sessionOf: sessionInPath, render: anthropicModel },
  },
};

/** A session as the Models API's ModelInfo. */
function anthropicModel(s: JoinableSession) {
  return {
    type: 'model',
    id: s.id,
    display_name: s.id,
    created_at: new Date(s.createdAt).toISOString(),
    capabilities: null,
    deprecated_at: null,
    lifecycle: 'active',
    line: null,
    max_input_tokens: null,
    max_tokens: null,
    retires_at: null,
  };
}
