/**
 * What every wire format provides. A route parses a request into a ParsedTurn, the session
 * layer works on the protocol-neutral TurnRequest inside it, and the adapter renders the
 * outcome back in its own shape. Nothing below protocols/ knows a wire format.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Side } from '../../machines/session.logic.js';
import type { TurnRequest } from '../sessions/attribution.js';
import type { ProxyError } from './errors.js';

export interface ParsedTurn {
  /** The `model` exactly as the client sent it; echoed in responses. */
  readonly model: string;
  readonly sessionId: string;
  readonly turn: TurnRequest;
  readonly stream: boolean;
  /** A chat UI's background request, answered by the proxy itself. */
  readonly localReply: string | null;
  /** Rough token estimate of the prompt, for the usage block. */
  readonly promptTokens: number;
  /** Adapter-specific options (e.g. OpenAI's stream_options.include_usage). */
  readonly options: Readonly<Record<string, unknown>>;
}

export interface ParseOptions {
  /** Recognise chat UIs' background requests and answer them locally. */
  readonly answerBackgroundTasks: boolean;
}

export interface ProtocolAdapter {
  readonly name: string;
  parse(body: unknown, headers: IncomingHttpHeaders, options: ParseOptions): ParsedTurn;
  /** The complete (non-streaming) response body carrying `content`. */
  renderReply(turn: ParsedTurn, content: string): unknown;
  readonly stream: {
    readonly contentType: string;
    /** The frames that carry `content` and end the stream properly. */
    reply(turn: ParsedTurn, content: string): string;
    /** A frame that keeps a held stream open; ignored by clients. */
    keepAlive(): string;
    /** The in-stream error that ends a stream whose headers were already sent. */
    error(error: ProxyError): string;
  };
  renderError(error: ProxyError): unknown;
}

/** `<session>|A` / `<session>|B` names the side explicitly; anything else is the session id. */
export function splitModel(model: string): { sessionId: string; explicitSide: Side | null } {
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
