/**
 * What every wire format provides. A route parses a request into a ParsedTurn, the session
 * layer works on the protocol-neutral TurnRequest inside it, and the adapter renders the
 * outcome back in its own shape. Nothing below protocols/ knows a wire format.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Side } from '../../machines/session.logic.js';
import type { TurnRequest } from '../sessions/attribution.js';
import { z } from 'zod';
import type { BackgroundTask, ToolCall } from './background-tasks.js';
import { ProxyError } from './errors.js';

/** The parts of an HTTP request an adapter reads. */
export interface WireRequest {
  readonly body: unknown;
  readonly headers: IncomingHttpHeaders;
  /** Path parameters of the adapter's route (e.g. the session in a Gemini or Azure path). */
  readonly params: Readonly<Record<string, string | undefined>>;
  readonly query: Readonly<Record<string, unknown>>;
}

export interface ParsedTurn {
  /** The `model` exactly as the client sent it; echoed in responses. */
  readonly model: string;
  readonly sessionId: string;
  readonly turn: TurnRequest;
  readonly stream: boolean;
  /** A chat UI's background or connection-test request, answered by the proxy itself. */
  readonly background: BackgroundTask | null;
  /** Rough token estimate of the prompt, for the usage block. */
  readonly promptTokens: number;
  /** Adapter-specific options (e.g. OpenAI's stream_options.include_usage). */
  readonly options: Readonly<Record<string, unknown>>;
}

/** What rendering a response needs of its request: everything but the turn, which the session has taken. */
export type RenderTurn = Omit<ParsedTurn, 'turn'>;

/** What a response carries: one delivery to one side. */
export interface Reply {
  readonly content: string;
  /** The side it was delivered to; null for a reply the proxy made itself (background task). */
  readonly side: Side | null;
  /** 0-based index of the delivery among the side's deliveries; -1 for the proxy's own replies. */
  readonly delivery: number;
  /**
   * The proxy's own reply to a background request that forces a function call: that call,
   * instead of `content`. Protocols without function calls send `content`.
   */
  readonly toolCall?: ToolCall;
}

export interface ParseOptions {
  /** Recognise chat UIs' background requests and answer them locally. */
  readonly answerBackgroundTasks: boolean;
}

/** One streaming response, written frame by frame. Each method returns the bytes to write. */
export interface StreamWriter {
  /** Frames that go out with the headers, before anything is known (may be ''). */
  open(): string;
  /** A frame that keeps a held stream open; clients ignore it. */
  keepAlive(): string;
  /** More text of the reply: live typing of the other side, then the rest of the delivery. */
  delta(text: string): string;
  /** Ends the stream properly. `reply.content` is the whole delivery, deltas included. */
  end(reply: Reply): string;
  /** The in-stream error that ends a stream whose headers were already sent. */
  error(error: ProxyError): string;
}

/** A session a client could join (waiting for its peer), for model lists. */
export interface JoinableSession {
  readonly id: string;
  /** When the session started, ms since the epoch. */
  readonly createdAt: number;
}

export interface ProtocolAdapter {
  /** Short name, used in logs, metrics and traces. */
  readonly name: string;
  /** POST routes (Fastify syntax) whose requests are chat turns in this format. */
  readonly routes: readonly string[];
  parse(request: WireRequest, options: ParseOptions): ParsedTurn;
  /** The complete (non-streaming) response body. */
  renderReply(turn: RenderTurn, reply: Reply): unknown;
  readonly stream: {
    readonly contentType: string;
    writer(turn: RenderTurn): StreamWriter;
  };
  /** The error body; `requestId` is the request's id, for the protocols whose body carries one. */
  renderError(error: ProxyError, requestId?: string): unknown;
  /** Its replies can be function calls (`Reply.toolCall`); other protocols send the call's JSON as text. */
  readonly toolCalls?: boolean;
  /** URL prefixes that belong to this protocol: requests there that match no route get its error shape. */
  readonly pathPrefixes?: readonly string[];
  /** The protocol's model routes: sessions as the models a client can pick. */
  readonly models?: ModelRoutes;
}

export interface ModelRoutes {
  /** A GET route listing the sessions a client could join now, in this protocol's model-list shape. */
  readonly route: string;
  render(sessions: readonly JoinableSession[]): unknown;
  /**
   * Two protocols share the route (OpenAI's and Anthropic's /v1/models): this one answers
   * requests carrying this header (Anthropic's SDK always sends `anthropic-version`).
   */
  readonly header?: string;
  /** Retrieving one model. Any id names a session (one that does not exist yet starts on first use). */
  readonly retrieve?: {
    readonly method: 'GET' | 'POST';
    readonly route: string;
    /** The session the request names; a ProxyError when it names none. */
    sessionOf(request: WireRequest): string;
    render(session: JoinableSession): unknown;
  };
}

/** The session a model route's path names after its prefix (`/v1/models/{id}`); 404 when it names none. */
export function sessionInPath({ params }: WireRequest): string {
  const id = params['*'] ?? '';
  if (id === '') throw new ProxyError('not_found', 'Name the model (the session id) in the path, as in /v1/models/npc-guard.');
  if (id.length > 256) throw new ProxyError('not_found', 'The model in the path is longer than any session id (256 characters).');
  return id;
}

/** `<session>|A` / `<session>|B` names the side explicitly; anything else is the session id. */
export function splitModel(model: string): { sessionId: string; explicitSide: Side | null } {
  // U+001F separates a tenant from a session name inside the service (src/auth/tenants.ts).
  if (model.includes('\u001f')) throw new ProxyError('invalid_request', 'model may not contain the control character U+001F.', { param: 'model' });
  const match = /^(.*)\|([AaBb])$/s.exec(model);
  if (!match || match[1] === '') return { sessionId: model, explicitSide: null };
  return { sessionId: match[1]!, explicitSide: match[2]!.toUpperCase() as Side };
}

/** A coarse token count (about four bytes of UTF-8 a token) for usage blocks. */
export const estimateTokens = (text: string): number => Math.ceil(Buffer.byteLength(text, 'utf8') / 4);

export function retryCountOf(headers: IncomingHttpHeaders): number {
  const raw = headers['x-stainless-retry-count'];
  const n = Number.parseInt(Array.isArray(raw) ? (raw[0] ?? '') : (raw ?? ''), 10);
  return Number.isFinite(n) && n > 0 ? n : 0;
}

export function idempotencyKeyOf(headers: IncomingHttpHeaders): string | null {
  const raw = headers['idempotency-key'];
  const key = Array.isArray(raw) ? raw[0] : raw;
  return key ? key.slice(0, 256) : null;
}

/**
 * The `model` field that names the session, as every chat protocol's schema takes it. A lone
 * UTF-16 surrogate (JSON allows "\ud800") has no UTF-8 form, so no URL could name the session
 * to delete it. (`String.prototype.isWellFormed` says the same, but is past this project's lib.)
 */
export const sessionModel = z
  .string({
    error: (issue) =>
      issue.input === undefined || issue.input === null
        ? 'model is required: it names the session (e.g. "npc-guard", or "npc-guard|A" to pick a side)'
        : `model must be a string naming the session (e.g. "npc-guard"), not ${Array.isArray(issue.input) ? 'an array' : typeof issue.input === 'object' ? 'an object' : `a ${typeof issue.input}`}`,
  })
  .min(1, 'model must not be empty')
  .max(256, 'model is longer than 256 characters')
  .refine((model) => !/\p{Surrogate}/u.test(model), 'model must be well-formed Unicode (it holds a lone UTF-16 surrogate)');

/** Validates a body with `schema`; the first problem becomes a 422 that names its field. */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  const parsed = schema.safeParse(body);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const param = issue.path.length > 0 ? issue.path.join('.') : null;
  const where = param && !issue.message.startsWith(String(issue.path[0])) ? `${param}: ` : '';
  throw new ProxyError('invalid_request', `${where}${issue.message}`, { param });
}

/** A message of a chat history, normalised: its role (`user`, `assistant`, `system`, …) and its text. */
export interface ChatMessage {
  readonly role: string;
  readonly content: string;
}

/** A history read the way the contract reads it (PROTOCOL.md §2–3). */
export interface ReadHistory {
  /** Assistant messages before the first user message: the client's own (a greeting), never compared or forwarded. */
  readonly preamble: readonly string[];
  /** The assistant messages after the preamble: deliveries the request shows. */
  readonly assistantHistory: readonly string[];
  /** The user messages after the last of those (every user message without one): candidates for the new content. */
  readonly messages: readonly string[];
}

/**
 * Splits a history into preamble, shown deliveries and trailing user messages. Roles other than
 * user and assistant (system, developer, tool, …) are skipped, so a UI's instruction injected
 * after the user's message is never sent as chat. `params` name the list and a message's text in
 * the wire format, for errors. Throws a 422 when there is no user message with text to send.
 */
export function readHistory(history: readonly ChatMessage[], params: { readonly list: string; readonly text: (index: number) => string }): ReadHistory {
  const preamble: string[] = [];
  const assistantHistory: string[] = [];
  let messages: string[] = [];
  let sawUser = false;
  let lastUser = -1;
  let lastAssistant = -1;
  for (let i = 0; i < history.length; i++) {
    const { role, content } = history[i]!;
    if (role === 'assistant') {
      lastAssistant = i;
      if (!sawUser) {
        if (content.trim() !== '') preamble.push(content);
        continue;
      }
      assistantHistory.push(content);
      messages = [];
    } else if (role === 'user') {
      sawUser = true;
      lastUser = i;
      if (content.trim() !== '') messages.push(content);
    }
  }
  const refuse = (param: string, why: string) => new ProxyError('invalid_request', `${param}: ${why}`, { param });
  if (lastUser === -1) throw refuse(params.list, 'there is no user message, so there is nothing to send.');
  if (lastAssistant > lastUser) throw refuse(params.text(lastAssistant), 'the history ends with an assistant message; there is no new user message after it to send.');
  // A newest message with no text (an image alone) cannot be sent, and must not pass for a retry.
  if (history[lastUser]!.content.trim() === '') throw refuse(params.text(lastUser), 'the last user message has no text content; there is nothing to send.');
  return { preamble, assistantHistory, messages };
}

/** The protocol-neutral request of a chat turn; system prompts (and a preamble's messages) are joined by a blank line. */
export function chatTurn(
  fields: { explicitSide: Side | null; history: ReadHistory; system: readonly string[] },
  headers: IncomingHttpHeaders,
  extra: Pick<TurnRequest, 'continues'> = {},
): TurnRequest {
  const { preamble, assistantHistory, messages } = fields.history;
  return {
    explicitSide: fields.explicitSide,
    assistantHistory,
    messages,
    system: fields.system.length > 0 ? fields.system.join('\n\n') : null,
    preamble: preamble.length > 0 ? preamble.join('\n\n') : null,
    retryCount: retryCountOf(headers),
    idempotencyKey: idempotencyKeyOf(headers),
    ...extra,
  };
}

/** String content, or the concatenated `text` of its `text` parts; other parts are ignored. */
export function textOfParts(content: string | readonly { type: string; text?: unknown }[] | null | undefined): string {
  if (typeof content === 'string') return content;
  if (!content) return '';
  let text = '';
  for (const part of content) if (part.type === 'text' && typeof part.text === 'string') text += part.text;
  return text;
}
