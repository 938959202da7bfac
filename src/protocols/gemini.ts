/**
 * Google Gemini (the Generative Language API, v1beta): POST
 * /v1beta/models/{session}:generateContent and :streamGenerateContent?alt=sse. The session is
 * the model named in the path; responses are GenerateContentResponse objects, streamed as SSE
 * `data:` frames of GenerateContentResponse chunks; errors are Google's
 * {"error":{"code","message","status","details"}}.
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { detectBackgroundTask, type ChatText } from './background-tasks.js';
import { chatTurn, readHistory, sessionInPath, estimateTokens, type JoinableSession, parseBody, splitModel, type ParsedTurn, type RenderTurn, type ProtocolAdapter, type WireRequest } from './adapter.js';
import { ProxyError } from './errors.js';

/** The methods a model path ends with (`…/models/{session}:{method}`). */
const METHODS = ['generateContent', 'streamGenerateContent'] as const;
type Method = (typeof METHODS)[number];

const part = z.looseObject({ text: z.unknown().optional(), thought: z.unknown().optional() });
const content = z.looseObject({
  role: z.string().nullish(),
  parts: z.array(part, { error: 'each content needs a parts array, e.g. {"role":"user","parts":[{"text":"hi"}]}' }),
});
/** Content as the REST API takes it, or a bare string (a common shorthand for system prompts). */
const systemInstruction = z.union([z.string(), z.looseObject({ parts: z.array(part).nullish() })], {
  error: 'systemInstruction must be a Content ({"parts":[{"text":"..."}]}) or a string',
});
const request = z.looseObject({
  contents: z
    .array(content, { error: 'contents is required and must be an array of {"role","parts"} contents' })
    .min(1, 'contents must not be empty'),
  // The REST API takes proto field names in both spellings; Google's curl examples use snake_case.
  systemInstruction: systemInstruction.nullish(),
  system_instruction: systemInstruction.nullish(),
});

type Part = z.infer<typeof part>;

/** The concatenated `text` of the parts; thought summaries and non-text parts are ignored. */
function textOf(parts: readonly Part[] | null | undefined): string {
  let text = '';
  for (const p of parts ?? []) if (typeof p.text === 'string' && p.thought !== true) text += p.text;
  return text;
}

/** Google's canonical status names (google.rpc.Code) for the statuses the proxy answers with. */
const GOOGLE_STATUS: Record<number, string> = {
  400: 'INVALID_ARGUMENT',
  401: 'UNAUTHENTICATED',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  405: 'UNIMPLEMENTED',
  408: 'DEADLINE_EXCEEDED',
  409: 'ABORTED',
  410: 'ABORTED',
  413: 'INVALID_ARGUMENT',
  415: 'INVALID_ARGUMENT',
  422: 'INVALID_ARGUMENT',
  429: 'RESOURCE_EXHAUSTED',
  500: 'INTERNAL',
  503: 'UNAVAILABLE',
};

/** Google's error body; the contract's code rides along as an ErrorInfo reason. */
export function geminiErrorBody(error: ProxyError) {
  const metadata: Record<string, string> = { code: error.code };
  if (error.options.param) metadata['param'] = error.options.param;
  return {
    error: {
      code: error.status,
      message: error.message,
      status: GOOGLE_STATUS[error.status] ?? (error.status >= 500 ? 'INTERNAL' : 'INVALID_ARGUMENT'),
      details: [{ '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: error.code.toUpperCase(), domain: 'motive-proxy', metadata }],
    },
  };
}

/** `{session}:{method}` from the path's tail, split at its last ':' (session ids may hold ':'). */
function sessionAndMethod(params: WireRequest['params']): { model: string; method: Method } {
  const tail = params['*'] ?? '';
  const colon = tail.lastIndexOf(':');
  const method = colon === -1 ? '' : tail.slice(colon + 1);
  if (!(METHODS as readonly string[]).includes(method)) {
    const what = colon === -1 ? `models/${tail.slice(0, 200)} names no method` : `'${method.slice(0, 100)}' is not a method this proxy serves`;
    throw new ProxyError('not_found', `${what}: use POST /v1beta/models/{session}:generateContent or :streamGenerateContent?alt=sse.`);
  }
  const model = tail.slice(0, colon);
  if (model === '') {
    throw new ProxyError('invalid_request', 'The model in the path is empty: it names the session, as in /v1beta/models/npc-guard:generateContent.', { param: 'model' });
  }
  if (model.length > 256) throw new ProxyError('invalid_request', 'The model in the path is longer than 256 characters.', { param: 'model' });
  return { model, method: method as Method };
}

export function parseGenerateContent({ body, headers, params }: WireRequest, { answerBackgroundTasks }: { answerBackgroundTasks: boolean }): ParsedTurn {
  const { model, method } = sessionAndMethod(params);
  const fields = parseBody(request, body);
  const { contents } = fields;
  const instruction = fields.systemInstruction ?? fields.system_instruction;
  const system = typeof instruction === 'string' ? instruction : instruction ? textOf(instruction.parts) : '';
  const texts: ChatText[] = contents.map((c) => ({ role: c.role === 'model' ? 'assistant' : 'user', content: textOf(c.parts) }));
  const history = readHistory(texts, { list: 'contents', text: (i) => `contents.${i}.parts` });
  const { sessionId, explicitSide } = splitModel(model);
  const withSystem: ChatText[] = system !== '' ? [{ role: 'system', content: system }, ...texts] : texts;
  let promptTokens = 0;
  for (const m of withSystem) promptTokens += estimateTokens(m.content);
  return {
    model,
    sessionId,
    stream: method === 'streamGenerateContent',
    background: answerBackgroundTasks ? detectBackgroundTask(withSystem, fields) : null,
    promptTokens,
    options: { method },
    turn: chatTurn({ explicitSide, history, system: system !== '' ? [system] : [] }, headers),
  };
}

/** Gemini's response ids are 20-odd URL-safe base64 characters. */
const responseId = (): string => randomBytes(18).toString('base64url');

function usageMetadata(turn: RenderTurn, content: string | null) {
  const prompt = turn.promptTokens;
  const promptTokensDetails = [{ modality: 'TEXT', tokenCount: prompt }];
  if (content === null) return { promptTokenCount: prompt, totalTokenCount: prompt, promptTokensDetails };
  const candidates = estimateTokens(content);
  return { promptTokenCount: prompt, candidatesTokenCount: candidates, totalTokenCount: prompt + candidates, promptTokensDetails };
}

function response(turn: RenderTurn, id: string, text: string, finished: boolean, usageContent: string | null) {
  return {
    candidates: [{ content: { parts: [{ text }], role: 'model' }, ...(finished ? { finishReason: 'STOP' } : {}), index: 0 }],
    usageMetadata: usageMetadata(turn, usageContent),
    modelVersion: turn.model,
    responseId: id,
  };
}

const sse = (data: unknown): string => `data: ${JSON.stringify(data)}\n\n`;

export const gemini: ProtocolAdapter = {
  name: 'gemini',
  // The tail is `{session}:{method}`; a session id may contain '/' (the SDK sends it as is).
  routes: ['/v1beta/models/*'],
  pathPrefixes: ['/v1beta/'],

  parse: parseGenerateContent,

  renderReply: (turn, { content }) => response(turn, responseId(), content, true, content),

  stream: {
    contentType: 'text/event-stream; charset=utf-8',
    writer(turn) {
      const id = responseId();
      return {
        open: () => '',
        // @google/genai's SSE reader only acts on events that start with `data:`; comments
        // (and Python's line reader, and any EventSource) skip this.
        keepAlive: () => ': keep-alive\n\n',
        delta: (text) => sse(response(turn, id, text, false, null)),
        // The last chunk carries the finish reason and the full usage, with an empty text part
        // (as Gemini's own last chunk often does), since the text already went out as deltas.
        end: ({ content }) => sse(response(turn, id, '', true, content)),
        // The SDK raises an ApiError with this code for a `data:` frame holding {"error":{...}}.
        error: (error) => sse(geminiErrorBody(error)),
      };
    },
  },

  renderError: geminiErrorBody,

  models: {
    route: '/v1beta/models',
    render: (sessions) => ({ models: sessions.map(geminiModel) }),
    retrieve: {
      method: 'GET',
      route: '/v1beta/models/*',
      sessionOf: (request) => {
        const name = sessionInPath(request);
        // models/{session}:generateContent and the like are the chat routes: POST only.
        if (name.includes(':')) throw new ProxyError('method_not_allowed', `GET is not allowed on /v1beta/models/${name}; use POST.`, { allow: 'POST' });
        return name;
      },
      render: geminiModel,
    },
  },
};

/** A session as the Models API's Model. */
function geminiModel(s: JoinableSession) {
  return {
    name: `models/${s.id}`,
    version: '1',
    displayName: s.id,
    description: `MotiveProxy session '${s.id}', started ${new Date(s.createdAt).toISOString()}: the other side of it answers.`,
    inputTokenLimit: 1_048_576,
    outputTokenLimit: 65_536,
    supportedGenerationMethods: [...METHODS],
  };
}
