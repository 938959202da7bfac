/**
 * Ollama: POST /api/chat (streaming by default, as NDJSON; `"stream": false` for one JSON
 * object), GET /api/tags as the model list, errors as {"error":"message"}.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { detectBackgroundTask, type ChatText } from './background-tasks.js';
import { chatTurn, readHistory, estimateTokens, parseBody, sessionModel, splitModel, type ParsedTurn, type RenderTurn, type ProtocolAdapter, type WireRequest } from './adapter.js';
import { ProxyError } from './errors.js';

const message = z.looseObject({
  role: z.string({ error: 'each message needs a role' }),
  content: z.string({ error: 'message content must be a string' }).nullish(),
});
const DETAILS = { parent_model: '', format: 'motive-proxy', family: 'motive-proxy', families: ['motive-proxy'], parameter_size: '', quantization_level: '' };

const showRequest = z.preprocess(
  (body) => (body && typeof body === 'object' && !('model' in body) && 'name' in body ? { ...body, model: (body as { name: unknown }).name } : body),
  z.looseObject({ model: sessionModel }),
);

const request = z.looseObject({
  model: sessionModel,
  messages: z.array(message, { error: 'messages is required and must be an array' }).min(1, 'messages must not be empty'),
  stream: z.boolean().nullish(),
});

export const ollamaErrorBody = (error: ProxyError) => ({ error: error.message });

export function parseOllamaChat({ body, headers }: WireRequest, { answerBackgroundTasks }: { answerBackgroundTasks: boolean }): ParsedTurn {
  const fields = parseBody(request, body);
  const { model, messages } = fields;
  const texts: ChatText[] = messages.map((m) => ({ role: m.role, content: m.content ?? '' }));
  const history = readHistory(texts, { list: 'messages', text: (i) => `messages.${i}.content` });
  const system = texts.filter((m) => m.role === 'system').map((m) => m.content);
  const { sessionId, explicitSide } = splitModel(model);
  let promptTokens = 0;
  for (const m of texts) promptTokens += estimateTokens(m.content);
  return {
    model,
    sessionId,
    // Ollama streams unless told not to.
    stream: fields.stream !== false,
    background: answerBackgroundTasks ? detectBackgroundTask(texts, fields) : null,
    promptTokens,
    options: { receivedAt: Date.now() },
    turn: chatTurn({ explicitSide, history, system }, headers),
  };
}

const createdAt = (): string => new Date().toISOString();

/** The final object's statistics; durations are nanoseconds, the time spent waiting for the other side. */
function stats(turn: RenderTurn, content: string) {
  const received = typeof turn.options['receivedAt'] === 'number' ? turn.options['receivedAt'] : Date.now();
  const waited = Math.max(1, (Date.now() - received) * 1_000_000);
  return {
    done: true,
    done_reason: 'stop',
    total_duration: waited,
    load_duration: 0,
    prompt_eval_count: turn.promptTokens,
    prompt_eval_duration: 0,
    eval_count: estimateTokens(content),
    eval_duration: waited,
  };
}

const line = (data: unknown): string => `${JSON.stringify(data)}\n`;

export const ollama: ProtocolAdapter = {
  name: 'ollama',
  routes: ['/api/chat'],
  pathPrefixes: ['/api/'],

  parse: parseOllamaChat,

  renderReply: (turn, { content }) => ({
    model: turn.model,
    created_at: createdAt(),
    message: { role: 'assistant', content },
    ...stats(turn, content),
  }),

  stream: {
    contentType: 'application/x-ndjson',
    writer(turn) {
      const partial = (content: string) => line({ model: turn.model, created_at: createdAt(), message: { role: 'assistant', content }, done: false });
      return {
        open: () => '',
        // ollama-js parses every line as JSON (a blank line is logged as invalid), so the
        // keep-alive is a real chunk that adds no text, as a model's silent tokens would.
        keepAlive: () => partial(''),
        delta: (text) => partial(text),
        end: ({ content }) => line({ model: turn.model, created_at: createdAt(), message: { role: 'assistant', content: '' }, ...stats(turn, content) }),
        // ollama-js throws an Error with this message for a line holding "error".
        error: (error) => line(ollamaErrorBody(error)),
      };
    },
  },

  renderError: ollamaErrorBody,

  models: {
    route: '/api/tags',
    render: (sessions) => ({
      models: sessions.map((s) => ({
        name: s.id,
        model: s.id,
        modified_at: new Date(s.createdAt).toISOString(),
        size: 0,
        digest: createHash('sha256').update(s.id).digest('hex'),
        details: DETAILS,
      })),
    }),
    // POST /api/show {"model"} (older clients send "name").
    retrieve: {
      method: 'POST',
      route: '/api/show',
      sessionOf: ({ body }) => parseBody(showRequest, body).model,
      render: (s) => ({
        license: '',
        modelfile: `# MotiveProxy session '${s.id}': the other side of it answers.\nFROM ${s.id}\n`,
        parameters: '',
        template: '{{ .Prompt }}',
        details: DETAILS,
        model_info: { 'general.architecture': 'motive-proxy' },
        capabilities: ['completion'],
        modified_at: new Date(s.createdAt).toISOString(),
      }),
    },
  },
};
