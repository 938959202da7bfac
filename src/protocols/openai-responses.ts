/**
 * OpenAI Responses: POST /v1/responses, plain JSON and SSE (`event:` + `data:` frames from
 * `response.created` to `response.completed`, each with a `sequence_number`), errors as
 * {"error":{"message","type","param","code"}}.
 *
 * The Responses API lets a client send only its new input plus `previous_response_id` instead
 * of its history. The proxy keeps no store of responses: it writes what attribution needs into
 * the id itself and reads it back when a request continues from it.
 *
 * Response id format (all lowercase hex after the prefix, 49 digits, so it looks like OpenAI's):
 *
 *   resp_ <32: random> <8: session tag> <1: side> <8: delivery>
 *
 * - session tag: the first 8 hex digits of sha256(session id), so an id from another session
 *   is recognised (409 session_conflict) rather than taken for this one;
 * - side: `a` or `b`, the side the response was delivered to; `0` when unknown (a reply the
 *   proxy made itself, and the provisional id of `response.created` / `response.in_progress`,
 *   written before the delivery is known);
 * - delivery: the 0-based index of the delivery among that side's deliveries (`00000000` when
 *   the side is `0`). A client continuing from it has seen `delivery + 1` deliveries.
 *
 * A previous_response_id with side `0` continues nothing the proxy can name, so the request is
 * attributed like one without history. An id not of this form is a 422 (the proxy could not
 * have made it); one of this form made in another session is a 409 session_conflict; one that
 * names more deliveries than the side has had is refused by attribution (409 too).
 */
import { createHash, randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { Side } from '../../machines/session.logic.js';
import { detectBackgroundTask, type ChatText } from './background-tasks.js';
import {
  chatTurn,
  readHistory,
  estimateTokens,
  parseBody,
  sessionModel,
  splitModel,
  type ParsedTurn,
  type RenderTurn,
  type ProtocolAdapter,
  type Reply,
  type StreamWriter,
} from './adapter.js';
import { ProxyError } from './errors.js';
import { openAIErrorBody } from './openai-chat.js';

const request = z.looseObject({
  model: sessionModel,
  input: z.union([z.string(), z.array(z.unknown())], { error: 'input is required: a string, or a list of input items' }),
  instructions: z.string({ error: 'instructions must be a string' }).nullish(),
  previous_response_id: z.string({ error: 'previous_response_id must be a string' }).nullish(),
  stream: z.boolean().nullish(),
});

type Body = z.infer<typeof request>;

/** Content part types whose `text` counts as text; images, files, audio, refusals are ignored. */
const TEXT_PARTS = new Set(['input_text', 'output_text', 'text']);

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

/** String content, or the concatenated text parts of a content list. */
function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  let text = '';
  for (const part of content) {
    if (isRecord(part) && typeof part['type'] === 'string' && TEXT_PARTS.has(part['type']) && typeof part['text'] === 'string') text += part['text'];
  }
  return text;
}

interface InputMessage {
  readonly role: string;
  readonly content: string;
  /** Position in `input`, for error params. */
  readonly index: number;
}

/** The message items of `input` (a string is one user message); other item types are ignored. */
function messagesOf(input: Body['input']): InputMessage[] {
  if (typeof input === 'string') return [{ role: 'user', content: input, index: -1 }];
  const messages: InputMessage[] = [];
  input.forEach((item, index) => {
    if (!isRecord(item)) {
      throw new ProxyError('invalid_request', `input.${index}: each input item must be an object (e.g. {"role": "user", "content": "..."}).`, {
        param: `input.${index}`,
      });
    }
    const type = item['type'];
    const role = item['role'];
    if ((type !== undefined && type !== null && type !== 'message') || typeof role !== 'string') return;
    messages.push({ role, content: textOf(item['content']), index });
  });
  return messages;
}

// ---- response ids -------------------------------------------------------------------------

const RESPONSE_ID = /^resp_([0-9a-f]{32})([0-9a-f]{8})([ab0])([0-9a-f]{8})$/;

const sessionTag = (sessionId: string): string => createHash('sha256').update(sessionId, 'utf8').digest('hex').slice(0, 8);

const randomHex = (bytes: number): string => randomBytes(bytes).toString('hex');

function responseId(random: string, sessionId: string, side: Side | null, delivery: number): string {
  const known = side !== null && delivery >= 0;
  const sideDigit = known ? side.toLowerCase() : '0';
  const index = known ? delivery.toString(16).padStart(8, '0').slice(-8) : '00000000';
  return `resp_${random}${sessionTag(sessionId)}${sideDigit}${index}`;
}

/** What a previous_response_id says: the side and how many deliveries it had seen, or null when unknown. */
function continuesFrom(id: string, sessionId: string): { side: Side; seen: number } | null {
  const match = RESPONSE_ID.exec(id);
  if (!match) {
    throw new ProxyError(
      'invalid_request',
      `previous_response_id '${id.slice(0, 100)}' is not a response this proxy gave (its ids look like resp_ followed by 49 hex digits). Send the conversation's history in input instead, or continue from a response of this session.`,
      { param: 'previous_response_id' },
    );
  }
  if (match[2] !== sessionTag(sessionId)) {
    throw new ProxyError(
      'session_conflict',
      `previous_response_id '${id}' was given in another session, not in session '${sessionId}'. Continue from a response of this session, or start a new conversation.`,
      { param: 'previous_response_id' },
    );
  }
  if (match[3] === '0') return null;
  return { side: match[3]!.toUpperCase() as Side, seen: Number.parseInt(match[4]!, 16) + 1 };
}

// ---- parsing ------------------------------------------------------------------------------

/** Request fields the real API echoes in its response object, with its defaults. */
function echoedFields(body: Body): Record<string, unknown> {
  const pick = <T>(key: string, ok: (v: unknown) => boolean, fallback: T): unknown => (ok(body[key]) ? body[key] : fallback);
  const isNumber = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
  const isString = (v: unknown) => typeof v === 'string';
  const isBoolean = (v: unknown) => typeof v === 'boolean';
  return {
    instructions: body.instructions ?? null,
    max_output_tokens: pick('max_output_tokens', isNumber, null),
    max_tool_calls: pick('max_tool_calls', isNumber, null),
    metadata: pick('metadata', isRecord, {}),
    parallel_tool_calls: pick('parallel_tool_calls', isBoolean, true),
    previous_response_id: body.previous_response_id ?? null,
    prompt_cache_key: pick('prompt_cache_key', isString, null),
    reasoning: pick('reasoning', isRecord, { effort: null, summary: null }),
    safety_identifier: pick('safety_identifier', isString, null),
    service_tier: 'default',
    store: pick('store', isBoolean, true),
    temperature: pick('temperature', isNumber, 1),
    text: pick('text', isRecord, { format: { type: 'text' }, verbosity: 'medium' }),
    tool_choice: pick('tool_choice', (v) => isString(v) || isRecord(v), 'auto'),
    tools: pick('tools', Array.isArray, []),
    top_logprobs: pick('top_logprobs', isNumber, 0),
    top_p: pick('top_p', isNumber, 1),
    truncation: pick('truncation', isString, 'disabled'),
    user: pick('user', isString, null),
  };
}

function parseResponsesRequest({ body, headers }: Parameters<ProtocolAdapter['parse']>[0], answerBackgroundTasks: boolean): ParsedTurn {
  const data = parseBody(request, body);
  const { model } = data;
  const { sessionId, explicitSide } = splitModel(model);

  const messages = messagesOf(data.input);
  const history = readHistory(messages, {
    list: 'input',
    text: (i) => {
      const index = messages[i]?.index ?? -1;
      return index === -1 ? 'input' : `input.${index}.content`;
    },
  });
  const system = [
    ...(data.instructions ? [data.instructions] : []),
    ...messages.filter((m) => m.role === 'system' || m.role === 'developer').map((m) => m.content),
  ];
  const continues = data.previous_response_id ? continuesFrom(data.previous_response_id, sessionId) : null;

  const texts: ChatText[] = [
    ...(data.instructions ? [{ role: 'system', content: data.instructions }] : []),
    ...messages.map((m) => ({ role: m.role, content: m.content })),
  ];
  let promptChars = 0;
  for (const t of texts) promptChars += t.content.length;

  return {
    model,
    sessionId,
    stream: data.stream === true,
    background: answerBackgroundTasks ? detectBackgroundTask(texts, data) : null,
    promptTokens: Math.ceil(promptChars / 4),
    options: { echo: echoedFields(data) },
    turn: chatTurn({ explicitSide, history, system }, headers, { continues }),
  };
}

// ---- rendering ----------------------------------------------------------------------------

const nowSeconds = (): number => Math.floor(Date.now() / 1000);

function usage(turn: RenderTurn, content: string) {
  const output = estimateTokens(content);
  return {
    input_tokens: turn.promptTokens,
    input_tokens_details: { cache_write_tokens: 0, cached_tokens: 0 },
    output_tokens: output,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: turn.promptTokens + output,
  };
}

const outputText = (text: string) => ({ type: 'output_text', annotations: [], logprobs: [], text });

const message = (id: string, status: 'in_progress' | 'completed', content: unknown[]) => ({ id, type: 'message', status, content, role: 'assistant' });

/** The Response object, in the real API's field order. */
function responseObject(
  turn: RenderTurn,
  fields: { id: string; createdAt: number; status: 'in_progress' | 'completed'; output: unknown[]; usage: unknown },
): Record<string, unknown> {
  const echo = turn.options['echo'] as Record<string, unknown>;
  return {
    id: fields.id,
    object: 'response',
    created_at: fields.createdAt,
    status: fields.status,
    background: false,
    completed_at: fields.status === 'completed' ? nowSeconds() : null,
    error: null,
    incomplete_details: null,
    instructions: echo['instructions'],
    max_output_tokens: echo['max_output_tokens'],
    max_tool_calls: echo['max_tool_calls'],
    model: turn.model,
    output: fields.output,
    parallel_tool_calls: echo['parallel_tool_calls'],
    previous_response_id: echo['previous_response_id'],
    prompt_cache_key: echo['prompt_cache_key'],
    reasoning: echo['reasoning'],
    safety_identifier: echo['safety_identifier'],
    service_tier: echo['service_tier'],
    store: echo['store'],
    temperature: echo['temperature'],
    text: echo['text'],
    tool_choice: echo['tool_choice'],
    tools: echo['tools'],
    top_logprobs: echo['top_logprobs'],
    top_p: echo['top_p'],
    truncation: echo['truncation'],
    usage: fields.usage,
    user: echo['user'],
    metadata: echo['metadata'],
  };
}

function completedResponse(turn: RenderTurn, random: string, createdAt: number, messageId: string, reply: Reply) {
  return responseObject(turn, {
    id: responseId(random, turn.sessionId, reply.side, reply.delivery),
    createdAt,
    status: 'completed',
    output: [message(messageId, 'completed', [outputText(reply.content)])],
    usage: usage(turn, reply.content),
  });
}

function streamWriter(turn: RenderTurn): StreamWriter {
  const random = randomHex(16);
  const createdAt = nowSeconds();
  const messageId = `msg_${randomHex(16)}`;
  let sequence = 0;
  const event = (type: string, payload: Record<string, unknown>): string =>
    `event: ${type}\ndata: ${JSON.stringify({ type, ...payload, sequence_number: sequence++ })}\n\n`;
  const where = { item_id: messageId, output_index: 0, content_index: 0 };

  let started = false;
  const start = (): string => {
    if (started) return '';
    started = true;
    return (
      event('response.output_item.added', { output_index: 0, item: message(messageId, 'in_progress', []) }) +
      event('response.content_part.added', { ...where, part: outputText('') })
    );
  };

  return {
    open() {
      // The delivery (and so the final id) is not known yet: the id here is provisional, with
      // side `0`; response.completed carries the id to continue from.
      const pending = responseObject(turn, { id: responseId(random, turn.sessionId, null, -1), createdAt, status: 'in_progress', output: [], usage: null });
      return event('response.created', { response: pending }) + event('response.in_progress', { response: pending });
    },
    keepAlive: () => ': keep-alive\n\n',
    delta: (text) => start() + event('response.output_text.delta', { ...where, delta: text, logprobs: [] }),
    end(reply) {
      const part = outputText(reply.content);
      return (
        start() +
        event('response.output_text.done', { ...where, text: reply.content, logprobs: [] }) +
        event('response.content_part.done', { ...where, part }) +
        event('response.output_item.done', { output_index: 0, item: message(messageId, 'completed', [part]) }) +
        event('response.completed', { response: completedResponse(turn, random, createdAt, messageId, reply) })
      );
    },
    error(error) {
      // The documented shape has code/message/param at the top level; the live API (and the
      // official SDKs, which raise on it) use a nested `error` object. Both are sent.
      const body = openAIErrorBody(error).error;
      return event('error', { code: body.code, message: body.message, param: body.param, error: body });
    },
  };
}

export const openAIResponses: ProtocolAdapter = {
  name: 'openai-responses',
  routes: ['/v1/responses'],

  parse: (wire, { answerBackgroundTasks }) => parseResponsesRequest(wire, answerBackgroundTasks),

  renderReply: (turn, reply) => completedResponse(turn, randomHex(16), nowSeconds(), `msg_${randomHex(16)}`, reply),

  stream: {
    contentType: 'text/event-stream; charset=utf-8',
    writer: streamWriter,
  },

  renderError: openAIErrorBody,
};
