/**
 * The clients a runner plays a side with: the official SDKs (OpenAI Chat Completions, OpenAI
 * Responses, Anthropic Messages) with their default retry behaviour, a stateless curl-style
 * client (raw HTTP, only the new message, no retries), and a WebSocket side.
 *
 * Every HTTP attempt goes through a recording fetch, so the report shows what the SDK did
 * (its retries, their statuses) and, in the retry-storm scenario, where the runner cut a
 * connection off on purpose.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Rng } from './rng.js';
import type { AttemptEvent, ClientProtocol, Injection, Side } from './types.js';

export const now = (): number => performance.timeOrigin + performance.now();

export type CallResult =
  | { readonly type: 'delivery'; readonly content: string; readonly firstChunkAt: number | null }
  /** The session was closed (by the peer) while this call waited: 410 / a `closed` frame. */
  | { readonly type: 'closed' };

/** A failure the application saw, after the SDK's own retries. */
export class CallError extends Error {
  constructor(
    message: string,
    readonly code: string,
    /** Calling again with the same messages may mend it (connection lost, 5xx, 408, …). */
    readonly retryable: boolean,
  ) {
    super(message);
  }
}

export interface ChatClient {
  /**
   * Sends the side's next message. `again`: re-sends the latest request as it was, after a
   * failure (its answer, when it comes, joins the history) or after it was answered (a
   * duplicate send: the history stays as it is).
   */
  call(content: string, options?: { again?: boolean }): Promise<CallResult>;
  /** True when the latest request carried assistant history (safe to duplicate). */
  readonly hasHistory: boolean;
  close(): Promise<void>;
}

export interface ClientContext {
  readonly url: string;
  readonly apiKey: string;
  readonly session: string;
  readonly side: Side;
  readonly stream: boolean;
  /** The message index the current call belongs to (set by the runner before each call). */
  current: { i: number };
  readonly record: (event: AttemptEvent) => void;
  readonly recordStream: (event: { ev: 'stream'; t: number; i: number; keepAlives: number; bytes: number; firstKeepAliveAt: number | null }) => void;
  readonly injection: Injection | null;
  readonly random: Rng;
}

/** A fetch that records every attempt and, when asked, cuts some of them off. */
export function recordingFetch(ctx: ClientContext): typeof fetch {
  let resetsThisCall = 0;
  let callOfResets = -1;
  return async (input, init) => {
    const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
    const headers = new Headers(init?.headers);
    const retryCount = Number(headers.get('x-stainless-retry-count') ?? 0) || 0;
    const method = init?.method ?? 'GET';
    const i = ctx.current.i;
    const base = { ev: 'http' as const, i, method, path: url.pathname, retryCount };
    const t = now();
    if (callOfResets !== i) {
      callOfResets = i;
      resetsThisCall = 0;
    }
    const injection = ctx.injection;
    const cut = injection !== null && method === 'POST' && resetsThisCall < injection.maxResetsPerCall && ctx.random() < injection.resetRate;
    if (cut) {
      // A connection reset after the server got the request (or even answered it): the SDK
      // sees a connection error and retries the identical body.
      resetsThisCall++;
      const controller = new AbortController();
      const outer = init?.signal;
      outer?.addEventListener('abort', () => controller.abort(outer.reason), { once: true });
      const attempt = fetch(input, { ...init, signal: controller.signal }).then(
        async (res) => {
          await res.body?.cancel().catch(() => undefined);
          return res.status;
        },
        () => null,
      );
      await Promise.race([attempt, sleep(20 + Math.floor(ctx.random() * 150))]);
      controller.abort(new Error('injected connection reset'));
      const seen = await attempt;
      ctx.record({ ...base, t, status: null, headersAt: null, error: `injected connection reset${seen ? ` (the response, ${seen}, was thrown away)` : ''}`, injected: 'reset' });
      const cause = Object.assign(new Error('read ECONNRESET (injected by the e2e runner)'), { code: 'ECONNRESET' });
      throw new TypeError('fetch failed', { cause });
    }
    try {
      const res = await fetch(input, init);
      ctx.record({ ...base, t, status: res.status, headersAt: now() });
      return watchStream(res, (keepAlives, bytes, firstKeepAliveAt) => ctx.recordStream({ ev: 'stream', t: now(), i, keepAlives, bytes, firstKeepAliveAt }));
    } catch (err) {
      const e = err as Error & { cause?: { code?: string; message?: string } };
      ctx.record({ ...base, t, status: null, headersAt: null, error: `${e.message}${e.cause ? `: ${e.cause.code ?? e.cause.message}` : ''}` });
      throw err;
    }
  };
}

/**
 * Passes an SSE body through unchanged, counting the keep-alives the SDK never shows: comment
 * lines (`: keep-alive`) and Anthropic's `event: ping`; and noting when the first one came.
 */
function watchStream(res: Response, done: (keepAlives: number, bytes: number, firstKeepAliveAt: number | null) => void): Response {
  if (!res.body || !(res.headers.get('content-type') ?? '').includes('text/event-stream')) return res;
  const decoder = new TextDecoder();
  let carry = '';
  let keepAlives = 0;
  let firstKeepAliveAt: number | null = null;
  let bytes = 0;
  const count = (text: string) => {
    const lines = (carry + text).split('\n');
    carry = lines.pop()!;
    for (const line of lines) {
      if (line.startsWith(':') || line === 'event: ping') {
        keepAlives++;
        firstKeepAliveAt ??= now();
      }
    }
  };
  const body = res.body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        bytes += chunk.byteLength;
        count(decoder.decode(chunk, { stream: true }));
        controller.enqueue(chunk);
      },
      flush() {
        count('\n');
        done(keepAlives, bytes, firstKeepAliveAt);
      },
    }),
  );
  return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
}

/** Reads the contract's error code from whatever an SDK threw. */
export function classify(err: unknown): CallError {
  if (err instanceof CallError) return err;
  const e = err as {
    status?: number;
    code?: string | null;
    errorCode?: string;
    error?: { error?: { details?: { error_code?: string } }; code?: string };
    message?: string;
    name?: string;
  };
  const message = String(e?.message ?? err);
  const code =
    e?.errorCode ??
    e?.error?.error?.details?.error_code ??
    (typeof e?.code === 'string' ? e.code : undefined) ??
    e?.error?.code ??
    (/session_closed|closed while this request was waiting/.test(message) ? 'session_closed' : undefined) ??
    (e?.status ? `status_${e.status}` : (e?.name ?? 'error'));
  const status = e?.status;
  const connection = status === undefined && /connection|fetch failed|ECONNRE|terminated|socket|other side closed|aborted|network/i.test(`${e?.name} ${message}`);
  const retryable = connection || status === 408 || status === 429 || (status !== undefined && status >= 500) || /timeout|shutting_down|journal_unavailable/.test(code);
  return new CallError(message.slice(0, 500), status === 410 ? 'session_closed' : code, retryable && code !== 'session_closed');
}

type Message = { role: 'user' | 'assistant'; content: string };

/** History kept the way chat clients keep it: every request re-sends all of it. */
abstract class HistoryClient implements ChatClient {
  protected readonly messages: Message[] = [];
  hasHistory = false;

  constructor(protected readonly ctx: ClientContext) {}

  async call(content: string, options: { again?: boolean } = {}): Promise<CallResult> {
    if (!options.again) this.messages.push({ role: 'user', content });
    // Sent again after it was answered (a duplicate send), or after a failure (a re-call)?
    const answered = this.messages.at(-1)?.role === 'assistant';
    // The request as it was: the history up to this side's latest message.
    const lastUser = this.messages.map((m) => m.role).lastIndexOf('user');
    const request = this.messages.slice(0, lastUser + 1);
    this.hasHistory = request.some((m) => m.role === 'assistant');
    let result: CallResult;
    try {
      result = await this.send(request);
    } catch (err) {
      const error = classify(err);
      if (error.code === 'session_closed') return { type: 'closed' };
      throw error;
    }
    if (result.type === 'delivery' && !answered) this.messages.push({ role: 'assistant', content: result.content });
    return result;
  }

  protected abstract send(messages: readonly Message[]): Promise<CallResult>;

  async close(): Promise<void> {}
}

class OpenAIChatClient extends HistoryClient {
  private client!: import('openai').OpenAI;

  async init(): Promise<this> {
    const { OpenAI } = await import('openai');
    this.client = new OpenAI({ baseURL: `${this.ctx.url}/v1`, apiKey: this.ctx.apiKey, fetch: recordingFetch(this.ctx) });
    return this;
  }

  protected async send(messages: readonly Message[]): Promise<CallResult> {
    const model = this.ctx.session;
    if (!this.ctx.stream) {
      const reply = await this.client.chat.completions.create({ model, messages: [...messages] });
      return { type: 'delivery', content: reply.choices[0]?.message.content ?? '', firstChunkAt: null };
    }
    const stream = await this.client.chat.completions.create({ model, messages: [...messages], stream: true });
    let content = '';
    let firstChunkAt: number | null = null;
    for await (const chunk of stream) {
      const delta = chunk.choices[0]?.delta?.content;
      if (delta) {
        firstChunkAt ??= now();
        content += delta;
      }
    }
    return { type: 'delivery', content, firstChunkAt };
  }
}

class OpenAIResponsesClient extends HistoryClient {
  private client!: import('openai').OpenAI;

  async init(): Promise<this> {
    const { OpenAI } = await import('openai');
    this.client = new OpenAI({ baseURL: `${this.ctx.url}/v1`, apiKey: this.ctx.apiKey, fetch: recordingFetch(this.ctx) });
    return this;
  }

  protected async send(messages: readonly Message[]): Promise<CallResult> {
    const model = this.ctx.session;
    const input = messages.map((m) => ({ role: m.role, content: m.content }));
    if (!this.ctx.stream) {
      const response = await this.client.responses.create({ model, input });
      return { type: 'delivery', content: response.output_text, firstChunkAt: null };
    }
    const stream = await this.client.responses.create({ model, input, stream: true });
    let content = '';
    let firstChunkAt: number | null = null;
    let completed: string | null = null;
    for await (const event of stream) {
      if (event.type === 'response.output_text.delta') {
        firstChunkAt ??= now();
        content += event.delta;
      } else if (event.type === 'response.completed') {
        completed = event.response.output_text;
      } else if (event.type === 'error') {
        throw Object.assign(new Error(event.message), { code: event.code });
      }
    }
    if (completed === null) throw new CallError('the Responses stream ended without response.completed', 'stream_incomplete', true);
    return { type: 'delivery', content, firstChunkAt };
  }
}

class AnthropicClient extends HistoryClient {
  private client!: import('@anthropic-ai/sdk').Anthropic;

  async init(): Promise<this> {
    const { Anthropic } = await import('@anthropic-ai/sdk');
    this.client = new Anthropic({ baseURL: this.ctx.url, apiKey: this.ctx.apiKey, fetch: recordingFetch(this.ctx) });
    return this;
  }

  protected async send(messages: readonly Message[]): Promise<CallResult> {
    const model = this.ctx.session;
    const params = { model, max_tokens: 1024, messages: messages.map((m) => ({ role: m.role, content: m.content })) };
    if (!this.ctx.stream) {
      const message = await this.client.messages.create(params);
      const content = message.content.map((block) => (block.type === 'text' ? block.text : '')).join('');
      return { type: 'delivery', content, firstChunkAt: null };
    }
    const stream = await this.client.messages.create({ ...params, stream: true });
    let content = '';
    let firstChunkAt: number | null = null;
    let stopped = false;
    for await (const event of stream) {
      if (event.type === 'content_block_delta' && event.delta.type === 'text_delta') {
        firstChunkAt ??= now();
        content += event.delta.text;
      } else if (event.type === 'message_stop') {
        stopped = true;
      }
    }
    if (!stopped) throw new CallError('the Messages stream ended without message_stop', 'stream_incomplete', true);
    return { type: 'delivery', content, firstChunkAt };
  }
}

/** curl-style: raw HTTP, only the new message each time (no history), no retries. */
class StatelessClient implements ChatClient {
  readonly hasHistory = false;
  private readonly fetch: typeof fetch;

  constructor(private readonly ctx: ClientContext) {
    this.fetch = recordingFetch(ctx);
  }

  async call(content: string): Promise<CallResult> {
    let res: Response;
    try {
      res = await this.fetch(`${this.ctx.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${this.ctx.apiKey}` },
        body: JSON.stringify({ model: this.ctx.session, messages: [{ role: 'user', content }] }),
      });
    } catch (err) {
      throw classify(err);
    }
    const text = await res.text();
    let body: { choices?: Array<{ message?: { content?: string } }>; error?: { code?: string; message?: string } } = {};
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      throw new CallError(`status ${res.status}: the body is not JSON: ${text.slice(0, 200)}`, `status_${res.status}`, res.status >= 500);
    }
    if (res.status === 410) return { type: 'closed' };
    if (res.status !== 200) {
      const code = body.error?.code ?? `status_${res.status}`;
      throw new CallError(`${res.status} ${body.error?.message ?? text.slice(0, 200)}`, code, false);
    }
    return { type: 'delivery', content: body.choices?.[0]?.message?.content ?? '', firstChunkAt: null };
  }

  async close(): Promise<void> {}
}

/** A WebSocket side: message frames out, delivery frames in (pushed the moment they are made). */
class WebSocketClient implements ChatClient {
  readonly hasHistory = false;
  private socket!: import('ws').WebSocket;
  private readonly deliveries: string[] = [];
  private closed = false;
  private failure: CallError | null = null;
  private wake: (() => void) | null = null;
  private sent = 0;

  constructor(private readonly ctx: ClientContext) {}

  async init(): Promise<this> {
    const { WebSocket } = await import('ws');
    const base = this.ctx.url.replace(/^http/, 'ws');
    const socket = new WebSocket(`${base}/v1/realtime?session=${encodeURIComponent(this.ctx.session)}&side=${this.ctx.side}`);
    this.socket = socket;
    const ready = new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.on('message', (data) => {
        const frame = JSON.parse(data.toString()) as { type: string; content?: string; code?: string; message?: string };
        if (frame.type === 'ready') resolve();
        else if (frame.type === 'delivery') this.deliveries.push(frame.content ?? '');
        else if (frame.type === 'closed') this.closed = true;
        else if (frame.type === 'error') this.failure = new CallError(`error frame: ${frame.code}: ${frame.message}`, frame.code ?? 'error', false);
        this.wake?.();
      });
      socket.on('close', () => {
        if (!this.closed) this.failure ??= new CallError('the WebSocket closed', 'websocket_closed', false);
        this.wake?.();
      });
    });
    await ready;
    return this;
  }

  /** The delivery that answers this message (the next one not yet taken), or closed. */
  async call(content: string): Promise<CallResult> {
    const t = now();
    this.socket.send(JSON.stringify({ type: 'message', content, id: `m${this.sent++}` }));
    this.ctx.record({ ev: 'http', t, i: this.ctx.current.i, method: 'WS', path: '/v1/realtime', retryCount: 0, status: 101, headersAt: t });
    for (;;) {
      const next = this.deliveries.shift();
      if (next !== undefined) return { type: 'delivery', content: next, firstChunkAt: null };
      if (this.closed) return { type: 'closed' };
      if (this.failure) throw this.failure;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = null;
    }
  }

  async close(): Promise<void> {
    if (this.socket.readyState === this.socket.OPEN) this.socket.close(1000);
  }
}

export async function createClient(protocol: ClientProtocol, ctx: ClientContext): Promise<ChatClient> {
  switch (protocol) {
    case 'openai':
      return new OpenAIChatClient(ctx).init();
    case 'responses':
      return new OpenAIResponsesClient(ctx).init();
    case 'anthropic':
      return new AnthropicClient(ctx).init();
    case 'stateless':
      return new StatelessClient(ctx);
    case 'websocket':
      return new WebSocketClient(ctx).init();
  }
}
