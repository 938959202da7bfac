/**
 * OpenAI Chat Completions: POST /v1/chat/completions, plain JSON and SSE
 * (`chat.completion.chunk` frames ending with `data: [DONE]`), errors as
 * {"error":{"message","type","param","code"}}.
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { detectBackgroundTask, type ChatText } from './background-tasks.js';
import { chatTurn, readHistory, sessionInPath, textOfParts, type JoinableSession, estimateTokens, parseBody, sessionModel, splitModel, type ParsedTurn, type RenderTurn, type ProtocolAdapter, type WireRequest } from './adapter.js';
import { ProxyError } from './errors.js';

const part = z.looseObject({ type: z.string(), text: z.unknown().optional() });
const message = z.looseObject({
  role: z.string({ error: 'each message needs a role' }),
  content: z.union([z.string(), z.array(part), z.null()]).optional(),
});
const request = z.looseObject({
  model: sessionModel,
  messages: z.array(message, { error: 'messages is required and must be an array' }).min(1, 'messages must not be empty'),
  stream: z.boolean().nullish(),
  stream_options: z.looseObject({ include_usage: z.boolean().nullish() }).nullish(),
});

/** Azure-style deployments name the session in the path; `model` in the body is optional. */
const deploymentRequest = request.extend({ model: z.string().optional() });

type ChatRequest = z.output<typeof request>;

/**
 * The shape almost every request has (a session `model`, messages with string roles and string
 * contents, no stream_options), recognised without zod's copy of the whole history. It accepts
 * only bodies the schema accepts; anything else goes through the schema, which names the problem.
 */
function plainChatRequest(body: unknown, modelRequired: boolean): ChatRequest | null {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return null;
  const { model, messages, stream, stream_options } = body as Record<string, unknown>;
  // A model the schema refuses (sessionModel: length, lone surrogates) takes the schema's path.
  if (typeof model === 'string' ? model.length === 0 || model.length > 256 || /\p{Surrogate}/u.test(model) : modelRequired || model !== undefined) return null;
  if (!Array.isArray(messages) || messages.length === 0) return null;
  if (stream !== undefined && stream !== null && typeof stream !== 'boolean') return null;
  if (stream_options !== undefined && stream_options !== null) return null;
  for (const m of messages as unknown[]) {
    if (typeof m !== 'object' || m === null || Array.isArray(m)) return null;
    const { role, content } = m as Record<string, unknown>;
    if (typeof role !== 'string' || typeof content !== 'string') return null;
  }
  return body as ChatRequest;
}

const OPENAI_ERROR_TYPES: Record<number, string> = {
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  408: 'timeout_error',
  409: 'conflict_error',
  429: 'rate_limit_error',
};

export function openAIErrorBody(error: ProxyError) {
  const type = OPENAI_ERROR_TYPES[error.status] ?? (error.status >= 500 ? 'server_error' : 'invalid_request_error');
  return { error: { message: error.message, type, param: error.options.param ?? null, code: error.code } };
}

// Unique per process start (a random prefix) and per response (a counter): no UUID per reply.
const idPrefix = randomBytes(6).toString('hex');
let idCounter = 0;
const completionId = (): string => `chatcmpl-${idPrefix}${(idCounter++).toString(36).padStart(8, '0')}`;
const callId = (): string => `call_${idPrefix}${(idCounter++).toString(36).padStart(8, '0')}`;
const nowSeconds = (): number => Math.floor(Date.now() / 1000);

function usage(turn: RenderTurn, content: string) {
  const completion = estimateTokens(content);
  return { prompt_tokens: turn.promptTokens, completion_tokens: completion, total_tokens: turn.promptTokens + completion };
}

const openAIModel = (s: JoinableSession) => ({ id: s.id, object: 'model', created: Math.floor(s.createdAt / 1000), owned_by: 'motive-proxy' });

const sse = (data: unknown): string => `data: ${JSON.stringify(data)}\n\n`;

/**
 * Parses a Chat Completions body. `sessionFromPath` is the session named by the route instead
 * of `model` (Azure-style deployments); the body's model is then optional.
 */
export function parseChatCompletion({ body, headers }: WireRequest, { answerBackgroundTasks }: { answerBackgroundTasks: boolean }, sessionFromPath?: string): ParsedTurn {
  const fields =
    plainChatRequest(body, sessionFromPath === undefined) ?? parseBody(sessionFromPath === undefined ? request : deploymentRequest, body);
  const { messages } = fields;
  const model = sessionFromPath ?? (fields.model as string);
  const texts: ChatText[] = messages.map((m) => ({ role: m.role, content: textOfParts(m.content) }));
  const history = readHistory(texts, { list: 'messages', text: (i) => `messages.${i}.content` });
  const system = texts.filter((m) => m.role === 'system' || m.role === 'developer').map((m) => m.content);
  const { sessionId, explicitSide } = splitModel(model);
  let promptChars = 0;
  for (const m of texts) promptChars += m.content.length;
  return {
    model,
    sessionId,
    stream: fields.stream === true,
    background: answerBackgroundTasks ? detectBackgroundTask(texts, fields) : null,
    promptTokens: Math.ceil(promptChars / 4),
    options: { includeUsage: fields.stream_options?.include_usage === true },
    turn: chatTurn({ explicitSide, history, system }, headers),
  };
}

export const openAIChat: ProtocolAdapter = {
  name: 'openai',
  routes: ['/v1/chat/completions'],
  toolCalls: true,

  parse: (request, options) => parseChatCompletion(request, options),

  renderReply(turn, { content, toolCall }) {
    return {
      id: completionId(),
      object: 'chat.completion',
      created: nowSeconds(),
      model: turn.model,
      choices: [
        {
          index: 0,
          message: toolCall
            ? { role: 'assistant', content: null, refusal: null, annotations: [], tool_calls: [{ id: callId(), type: 'function', function: toolCall }] }
            : { role: 'assistant', content, refusal: null, annotations: [] },
          logprobs: null,
          finish_reason: toolCall ? 'tool_calls' : 'stop',
        },
      ],
      usage: usage(turn, content),
      service_tier: 'default',
      system_fingerprint: null,
    };
  },

  stream: {
    contentType: 'text/event-stream; charset=utf-8',
    writer(turn) {
      const includeUsage = turn.options['includeUsage'] === true;
      const id = completionId();
      const created = nowSeconds();
      const { model } = turn;
      // Each chunk is one literal (not the stream's fields spread and extended: V8 would give
      // every such object a hidden class of its own).
      const frame = (choices: unknown[], usage: unknown = null) =>
        sse(
          includeUsage
            ? { id, object: 'chat.completion.chunk', created, model, system_fingerprint: null, choices, usage }
            : { id, object: 'chat.completion.chunk', created, model, system_fingerprint: null, choices },
        );
      const chunk = (delta: Record<string, unknown>, finish: string | null) => frame([{ index: 0, delta, logprobs: null, finish_reason: finish }]);
      let started = false;
      const start = (): string => {
        if (started) return '';
        started = true;
        return chunk({ role: 'assistant', content: '', refusal: null }, null);
      };
      return {
        open: () => '',
        keepAlive: () => ': keep-alive\n\n',
        delta: (text) => start() + chunk({ content: text }, null),
        end({ content, toolCall }) {
          let out = start();
          if (toolCall) {
            out += chunk({ tool_calls: [{ index: 0, id: callId(), type: 'function', function: toolCall }] }, null) + chunk({}, 'tool_calls');
          } else {
            out += chunk({}, 'stop');
          }
          if (includeUsage) out += frame([], usage(turn, content));
          return `${out}data: [DONE]\n\n`;
        },
        error: (error) => sse(openAIErrorBody(error)),
      };
    },
  },

  renderError: openAIErrorBody,

  models: {
    route: '/v1/models',
    render: (sessions) => ({ object: 'list', data: sessions.map(openAIModel) }),
    retrieve: { method: 'GET', route: '/v1/models/*', sessionOf: sessionInPath, render: openAIModel },
  },
};
