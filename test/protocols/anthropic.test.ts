// Proves the Anthropic Messages adapter (PROTOCOL.md §6, §7) over a real listening server with
// the official @anthropic-ai/sdk: a multi-turn conversation with system prompts and content
// blocks, delivered byte-exact; responses shaped as the API shapes them; streaming with
// message_start at once, `ping` keep-alives while held, live typing as several text deltas,
// and the proper ending that `messages.stream().finalMessage()` assembles; sessions whose sides
// speak different protocols; errors in Anthropic's shape (HTTP and in-stream); and the SDK's own
// retry of a timed-out turn, which re-attaches without delivering anything twice.
import Anthropic, { APIError } from '@anthropic-ai/sdk';
import { describe, expect, it } from 'vitest';
import type { TestServer } from '../helpers/server.js';
import { Participant, anthropicError, apiError as openAIError, sleep, uniqueId, until, untilHeld, useServers } from '../http/support.js';

const start = useServers();

type MessageParam = Anthropic.MessageParam;
type Content = MessageParam['content'];
type System = string | Anthropic.TextBlockParam[];

function anthropic(server: TestServer, options: { maxRetries?: number; fetch?: typeof fetch } = {}): Anthropic {
  return new Anthropic({ baseURL: server.url, apiKey: 'k', maxRetries: options.maxRetries ?? 2, timeout: 20_000, ...(options.fetch ? { fetch: options.fetch } : {}) });
}

/** An Anthropic client whose every HTTP status is recorded (retries included), in order. */
function recordingAnthropic(server: TestServer, options: { maxRetries?: number } = {}) {
  const statuses: number[] = [];
  const retryCounts: string[] = [];
  const listeners: Array<(status: number) => void> = [];
  const recording: typeof fetch = async (input, init) => {
    retryCounts.push(new Headers(init?.headers).get('x-stainless-retry-count') ?? '');
    const response = await fetch(input, init);
    statuses.push(response.status);
    for (const listener of listeners) listener(response.status);
    return response;
  };
  const client = anthropic(server, { maxRetries: options.maxRetries ?? 2, fetch: recording });
  const nextStatus = (status: number): Promise<void> =>
    new Promise((resolve) => {
      if (statuses.includes(status)) return resolve();
      listeners.push((s) => s === status && resolve());
    });
  return { client, statuses, retryCounts, nextStatus };
}

/** Anthropic's error body: {type:"error", error:{type, message, details:{error_code}}, request_id}. */
function expectAnthropicError(body: any, type: string, code: string, inStream = false): void {
  expect(body).toEqual({
    type: 'error',
    error: { type, message: expect.any(String), details: { error_code: code } },
    // The request's id, as the real API gives it (and in the request-id header the SDK reads).
    ...(inStream ? {} : { request_id: expect.stringMatching(/^[0-9a-f]{6}-[0-9a-z]+$/) }),
  });
  expect(body.error.message.length).toBeGreaterThan(10);
}

/** One chat client over the Anthropic SDK: keeps and re-sends its whole history, as chat UIs do. */
class AnthropicParticipant {
  readonly history: MessageParam[] = [];
  readonly messages: Anthropic.Message[] = [];
  /** For streamed calls: the event types of each response, and its text deltas. */
  readonly eventTypes: string[][] = [];
  readonly deltas: string[][] = [];

  constructor(
    private readonly client: Anthropic,
    readonly model: string,
    private readonly options: { system?: System; mode?: 'create' | 'stream' | 'create-stream' } = {},
  ) {}

  async say(content: Content): Promise<string> {
    this.history.push({ role: 'user', content });
    const params = {
      model: this.model,
      max_tokens: 1024,
      messages: [...this.history],
      ...(this.options.system !== undefined ? { system: this.options.system } : {}),
    };
    let message: Anthropic.Message;
    const mode = this.options.mode ?? 'create';
    if (mode === 'create') {
      message = await this.client.messages.create(params);
    } else if (mode === 'stream') {
      const stream = this.client.messages.stream(params);
      const types: string[] = [];
      const deltas: string[] = [];
      stream.on('streamEvent', (event) => types.push(event.type));
      stream.on('text', (delta) => deltas.push(delta));
      message = await stream.finalMessage();
      this.eventTypes.push(types);
      this.deltas.push(deltas);
      expect(deltas.join('')).toBe(textOf(message));
    } else {
      const stream = await this.client.messages.create({ ...params, stream: true });
      const types: string[] = [];
      const deltas: string[] = [];
      let start: Anthropic.Message | undefined;
      for await (const event of stream) {
        types.push(event.type);
        if (event.type === 'message_start') start = event.message;
        if (event.type === 'content_block_delta' && event.delta.type === 'text_delta') deltas.push(event.delta.text);
      }
      this.eventTypes.push(types);
      this.deltas.push(deltas);
      message = { ...start!, content: [{ type: 'text', text: deltas.join(''), citations: null }], stop_reason: 'end_turn' };
    }
    this.messages.push(message);
    const reply = textOf(message);
    this.history.push({ role: 'assistant', content: reply });
    return reply;
  }
}

function textOf(message: Anthropic.Message): string {
  return message.content.map((b) => (b.type === 'text' ? b.text : '')).join('');
}

const assistantTexts = (history: readonly { role: string; content?: unknown }[]) => history.filter((m) => m.role === 'assistant').map((m) => m.content);

async function closeSession(server: TestServer, session: string): Promise<void> {
  const deleted = await fetch(`${server.url}/v1/sessions/${encodeURIComponent(session)}`, { method: 'DELETE' });
  expect(deleted.status).toBe(200);
}

/** The frames of an SSE text: each `event:` name with its parsed `data:`. */
function sseFrames(text: string): { event: string; data: any; raw: string }[] {
  return text
    .split('\n\n')
    .filter((frame) => frame.length > 0)
    .map((raw) => {
      const lines = raw.split('\n');
      expect(lines).toHaveLength(2);
      expect(lines[0]).toMatch(/^event: [a-z_]+$/);
      expect(lines[1]).toMatch(/^data: /);
      return { event: lines[0]!.slice('event: '.length), data: JSON.parse(lines[1]!.slice('data: '.length)), raw };
    });
}

/** Reads a response body as it arrives. */
function readBody(response: Response) {
  const pieces: string[] = [];
  const decoder = new TextDecoder();
  const done = (async () => {
    const reader = response.body!.getReader();
    for (;;) {
      const { value, done: finished } = await reader.read();
      if (finished) break;
      pieces.push(decoder.decode(value, { stream: true }));
    }
    return pieces.join('');
  })();
  return { text: () => pieces.join(''), done };
}

function rawMessages(server: TestServer, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${server.url}/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': 'k', 'anthropic-version': '2023-06-01', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

const MESSAGE_ID = /^msg_01[0-9A-Za-z]{22}$/;
const PING = 'event: ping\ndata: {"type": "ping"}';

/** The message as the real API shapes it, with its usage block. */
function expectMessage(message: unknown, model: string, text: string): void {
  // messages.stream()'s finalMessage() adds its own parsed_output (null without a schema).
  const { parsed_output: parsed, ...wire } = message as Record<string, unknown>;
  if ('parsed_output' in (message as object)) expect(parsed).toBeNull();
  expect(wire).toEqual({
    model,
    id: expect.stringMatching(MESSAGE_ID),
    type: 'message',
    role: 'assistant',
    content: [{ type: 'text', text }],
    stop_reason: 'end_turn',
    stop_sequence: null,
    stop_details: null,
    usage: {
      input_tokens: expect.any(Number),
      cache_creation_input_tokens: 0,
      cache_read_input_tokens: 0,
      cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 0 },
      output_tokens: expect.any(Number),
      service_tier: 'standard',
      inference_geo: 'not_available',
    },
  });
  const { usage } = message as Anthropic.Message;
  expect(usage.input_tokens).toBeGreaterThan(0);
  expect(usage.output_tokens).toBeGreaterThan(0);
}

const FROM_B = ['You wake in a cold cell.  ', 'The guard laughs.\nHe says: "Never."', '  A key glints on the floor — 🗝️', 'You are free. 🎉'];
const FROM_A = ['I look around.', 'I ask the guard to let me out.\n\nPolitely!', 'I pick up the key\t(quietly)', 'The end?'];

describe('a conversation where both sides use the Anthropic SDK', () => {
  it('delivers every turn byte-exact, in order, with system prompts kept and content blocks joined', async () => {
    const server = await start();
    const session = uniqueId('anthropic-conv');
    const client = anthropic(server);
    const a = new AnthropicParticipant(client, session, { system: 'You are the prisoner.' });
    const b = new AnthropicParticipant(client, session, { system: [{ type: 'text', text: 'You are the ' }, { type: 'text', text: 'dungeon master.' }] });

    // A's handshake is held until B speaks; B's first prompt is A's answer.
    let pendingA = a.say('ping');
    await untilHeld(server, session, 'A');
    let pendingB = b.say(FROM_B[0]!);
    expect(await pendingA).toBe(FROM_B[0]);

    for (let turn = 0; turn < FROM_A.length; turn++) {
      // Turn 1 of A is sent as blocks: text blocks are joined, the image block is ignored.
      const content: Content =
        turn === 1
          ? [
              { type: 'text', text: 'I ask the guard ' },
              { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } },
              { type: 'text', text: 'to let me out.\n\nPolitely!' },
            ]
          : FROM_A[turn]!;
      pendingA = a.say(content);
      expect(await pendingB).toBe(FROM_A[turn]);
      if (turn === FROM_A.length - 1) break;
      pendingB = b.say(FROM_B[turn + 1]!);
      expect(await pendingA).toBe(FROM_B[turn + 1]);
    }

    expect(assistantTexts(a.history)).toEqual(FROM_B);
    expect(assistantTexts(b.history)).toEqual(FROM_A);
    expect(a.history[0]).toEqual({ role: 'user', content: 'ping' });
    for (const m of a.messages) expectMessage(m, session, textOf(m));
    for (const m of b.messages) expectMessage(m, session, textOf(m));
    expect(new Set([...a.messages, ...b.messages].map((m) => m.id)).size).toBe(a.messages.length + b.messages.length);

    // System prompts were kept in the session (never forwarded as content).
    const context = server.service.ctx.sessions.get(session)!.context;
    expect(context.sides.A.system).toBe('You are the prisoner.');
    expect(context.sides.B.system).toBe('You are the dungeon master.');
    expect(context.transcript.filter((e) => e.kind === 'system').map((e) => [e.side, e.content])).toEqual([
      ['A', 'You are the prisoner.'],
      ['B', 'You are the dungeon master.'],
    ]);

    // A's last request is still held; ending the session answers it with 410 in Anthropic's shape.
    const ended = anthropicError(pendingA);
    await closeSession(server, session);
    const err = await ended;
    expect(err.status).toBe(410);
    expectAnthropicError(err.error, 'invalid_request_error', 'session_closed');
    expect(err.type).toBe('invalid_request_error');
    expect(err.errorCode).toBe('session_closed');
  });

  it('answers in the exact Message shape, echoing the model as sent, and accepts requests without max_tokens', async () => {
    const server = await start();
    const session = uniqueId('anthropic-shape');
    const client = anthropic(server);
    const pendingA = client.messages.create({ model: `${session}|A`, max_tokens: 10, messages: [{ role: 'user', content: 'ping' }] }).withResponse();
    await untilHeld(server, session, 'A');

    // B: a raw request with no max_tokens, unknown fields, an API key and a version header.
    const forB = rawMessages(server, {
      model: `${session}|B`,
      messages: [{ role: 'user', content: [{ type: 'text', text: 'Hello there, A.' }] }],
      temperature: 0.3,
      tools: [{ name: 'x', input_schema: { type: 'object' } }],
      metadata: { user_id: 'u-1' },
      some_future_field: { nested: true },
    });
    const { data: message, response } = await pendingA;
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    expectMessage(message, `${session}|A`, 'Hello there, A.');

    // A's next message answers B's raw request, echoing B's own model string.
    const second = anthropicError(
      anthropic(server, { maxRetries: 0 }).messages.create({
        model: `${session}|A`,
        max_tokens: 10,
        messages: [
          { role: 'user', content: 'ping' },
          { role: 'assistant', content: 'Hello there, A.' },
          { role: 'user', content: 'General Kenobi.' },
        ],
      }),
    );
    const raw = await forB;
    expect(raw.status).toBe(200);
    const forBMessage = (await raw.json()) as Anthropic.Message;
    expectMessage(forBMessage, `${session}|B`, 'General Kenobi.');
    expect(forBMessage.id).not.toBe(message.id);

    await closeSession(server, session);
    expect((await second).status).toBe(410);
  });

  it('answers a chat UI background request itself, without creating a session', async () => {
    const server = await start();
    const session = uniqueId('anthropic-title');
    const message = await anthropic(server).messages.create({
      model: session,
      max_tokens: 50,
      system: 'You are a helpful assistant.',
      messages: [{ role: 'user', content: 'Provide a concise, 5-word-or-less title for the conversation, using title case.\n\nUser: Tell me about dragons\nAI: They fly.' }],
    });
    expect(textOf(message)).toBe('Tell me about dragons');
    expectMessage(message, session, 'Tell me about dragons');
    expect(server.service.ctx.sessions.get(session)).toBeUndefined();
  });
});

describe('streaming', () => {
  it('messages.stream() assembles each delivery; create({stream:true}) sees the exact event sequence', async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.05' });
    const session = uniqueId('anthropic-stream');
    const client = anthropic(server);
    const a = new AnthropicParticipant(client, session, { mode: 'stream' });
    const b = new AnthropicParticipant(client, session, { mode: 'create-stream', system: 'Narrate.' });

    const pendingA = a.say('ping');
    await untilHeld(server, session, 'A');
    await sleep(300); // held long enough for several pings, which the SDK skips
    const long = 'A long line '.repeat(300) + '— and the end. 🐉';
    let pendingB = b.say(long);
    expect(await pendingA).toBe(long);

    let pendingA2 = a.say('Got it.');
    expect(await pendingB).toBe('Got it.');
    pendingB = b.say('Then the dragon wakes.');
    expect(await pendingA2).toBe('Then the dragon wakes.');
    pendingA2 = a.say('I run!');
    expect(await pendingB).toBe('I run!');

    const sequence = ['message_start', 'content_block_start', 'content_block_delta', 'content_block_stop', 'message_delta', 'message_stop'];
    for (const types of [...a.eventTypes, ...b.eventTypes]) expect(types).toEqual(sequence);
    // finalMessage() is the whole Message, as create() would have returned it.
    for (const m of a.messages) expectMessage(m, session, textOf(m));
    expect(b.messages.every((m) => m.model === session && MESSAGE_ID.test(m.id))).toBe(true);

    const ended = anthropicError(pendingA2);
    await closeSession(server, session);
    const err = await ended;
    expect(err.status).toBeUndefined(); // an in-stream error: the headers said 200 long ago
    expect(err.type).toBe('invalid_request_error');
    expect(err.errorCode).toBe('session_closed');
  });

  it('sends message_start at once, pings while held, then live typing and the rest as text deltas', async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.05' });
    const session = uniqueId('anthropic-sse');
    const sentAt = Date.now();
    const response = await rawMessages(server, { model: `${session}|A`, max_tokens: 5, messages: [{ role: 'user', content: 'ping' }], stream: true });
    expect(Date.now() - sentAt).toBeLessThan(500);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const body = readBody(response);
    await until(() => body.text().split(PING).length > 4, 'three pings arrived');

    // While held: message_start, then nothing but pings.
    const held = sseFrames(body.text());
    expect(held[0]!.event).toBe('message_start');
    expect(held[0]!.data).toEqual({
      type: 'message_start',
      message: {
        model: `${session}|A`,
        id: expect.stringMatching(MESSAGE_ID),
        type: 'message',
        role: 'assistant',
        content: [],
        stop_reason: null,
        stop_sequence: null,
        stop_details: null,
        usage: {
          input_tokens: expect.any(Number),
          cache_creation_input_tokens: 0,
          cache_read_input_tokens: 0,
          cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 0 },
          output_tokens: 1,
          service_tier: 'standard',
          inference_geo: 'not_available',
        },
      },
    });
    expect(held.slice(1).every((f) => f.raw === PING)).toBe(true);

    // B answers A's handshake; A's next turn is held, and B types before sending.
    const b = new AnthropicParticipant(anthropic(server), `${session}|B`);
    const b1 = b.say('b1');
    const handshake = sseFrames(await body.done);
    expect(handshake.filter((f) => f.event === 'content_block_delta').map((f) => f.data.delta.text).join('')).toBe('b1');

    const a1 = anthropic(server).messages.stream({
      model: `${session}|A`,
      max_tokens: 5,
      messages: [
        { role: 'user', content: 'ping' },
        { role: 'assistant', content: 'b1' },
        { role: 'user', content: 'a1' },
      ],
    });
    const typed: string[] = [];
    a1.on('text', (delta) => typed.push(delta));
    expect(await b1).toBe('a1');
    await untilHeld(server, session, 'A');
    const live = server.service.ctx.sessions.get(session)!;
    expect(live.preview('B', 'Hel')).toBe(true);
    expect(live.preview('B', 'lo, ')).toBe(true);
    await until(() => typed.length === 2, 'the typing reached A');
    const b2 = b.say('Hello, world');
    const final = await a1.finalMessage();
    expect(typed).toEqual(['Hel', 'lo, ', 'world']);
    expectMessage(final, `${session}|A`, 'Hello, world');

    // The same live typing, frame by frame on the wire.
    const a2 = readBody(
      await rawMessages(server, {
        model: `${session}|A`,
        messages: [
          { role: 'user', content: 'ping' },
          { role: 'assistant', content: 'b1' },
          { role: 'user', content: 'a1' },
          { role: 'assistant', content: 'Hello, world' },
          { role: 'user', content: 'a2' },
        ],
        stream: true,
      }),
    );
    expect(await b2).toBe('a2');
    await untilHeld(server, session, 'A');
    live.preview('B', 'Bye');
    await until(() => a2.text().includes('Bye'), 'the typing reached A');
    const b3 = anthropicError(b.say('Bye now.'));
    const frames = sseFrames(await a2.done).filter((f) => f.event !== 'ping');
    expect(frames.map((f) => f.event)).toEqual([
      'message_start',
      'content_block_start',
      'content_block_delta',
      'content_block_delta',
      'content_block_stop',
      'message_delta',
      'message_stop',
    ]);
    for (const f of frames) expect(f.data.type).toBe(f.event);
    expect(frames[1]!.data).toEqual({ type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } });
    expect(frames[2]!.data).toEqual({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Bye' } });
    expect(frames[3]!.data).toEqual({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: ' now.' } });
    expect(frames[4]!.data).toEqual({ type: 'content_block_stop', index: 0 });
    expect(frames[5]!.data).toEqual({
      type: 'message_delta',
      delta: { stop_reason: 'end_turn', stop_sequence: null, stop_details: null },
      usage: { input_tokens: expect.any(Number), cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: expect.any(Number) },
    });
    expect(frames[5]!.data.usage.output_tokens).toBeGreaterThan(0);
    expect(frames[6]!.data).toEqual({ type: 'message_stop' });

    await closeSession(server, session);
    expect((await b3).status).toBe(410);
  });

  it('ends a held stream that times out with the in-stream error event', async () => {
    const server = await start({ handshakeTimeoutSeconds: '0.3', turnTimeoutSeconds: '5', keepaliveIntervalSeconds: '0.05' });

    // Raw: message_start, pings, then `event: error` and the end of the stream.
    const raw = await rawMessages(server, { model: uniqueId('anthropic-hs'), max_tokens: 5, messages: [{ role: 'user', content: 'ping' }], stream: true });
    expect(raw.status).toBe(200);
    // The request's id is in the stream's headers as the API sends it (the SDK's requestID).
    expect(raw.headers.get('request-id')).toMatch(/^[0-9a-f]{6}-[0-9a-z]+$/);
    expect(raw.headers.get('x-request-id')).toBe(raw.headers.get('request-id'));
    const frames = sseFrames(await raw.text());
    expect(frames[0]!.event).toBe('message_start');
    expect(frames.some((f) => f.raw === PING)).toBe(true);
    const last = frames[frames.length - 1]!;
    expect(last.event).toBe('error');
    expectAnthropicError(last.data, 'timeout_error', 'handshake_timeout', true);
    expect(last.data.error.message).toMatch(/handshake timeout/);
    expect(frames.filter((f) => f.event !== 'ping' && f.event !== 'message_start')).toEqual([last]);

    // Through the SDK, both ways of streaming: the error surfaces as an APIError.
    const client = anthropic(server, { maxRetries: 0 });
    const stream = await client.messages.create({ model: uniqueId('anthropic-hs'), max_tokens: 5, messages: [{ role: 'user', content: 'ping' }], stream: true });
    const seen: string[] = [];
    const err = await anthropicError(
      (async () => {
        for await (const event of stream) seen.push(event.type);
      })(),
    );
    expect(seen).toEqual(['message_start']);
    expect(err.type).toBe('timeout_error');
    expect(err.errorCode).toBe('handshake_timeout');
    expectAnthropicError(err.error, 'timeout_error', 'handshake_timeout', true);

    const helper = anthropicError(client.messages.stream({ model: uniqueId('anthropic-hs'), max_tokens: 5, messages: [{ role: 'user', content: 'ping' }] }).finalMessage());
    expect((await helper).errorCode).toBe('handshake_timeout');
  });
});

describe('a session whose sides speak different protocols', () => {
  for (const [first, second] of [
    ['openai', 'anthropic'],
    ['anthropic', 'openai'],
  ] as const) {
    it(`pairs ${first} (A) with ${second} (B), both directions byte-exact`, async () => {
      const server = await start({ keepaliveIntervalSeconds: '0.05' });
      const session = uniqueId(`mixed-${first}`);
      const make = (protocol: 'openai' | 'anthropic', stream: boolean) =>
        protocol === 'openai'
          ? new Participant(server.client(), session, { stream, system: 'OpenAI side.' })
          : new AnthropicParticipant(anthropic(server), session, { mode: stream ? 'stream' : 'create', system: 'Anthropic side.' });
      const a = make(first, first === 'anthropic');
      const b = make(second, second === 'anthropic');

      let pendingA = a.say('ping');
      await untilHeld(server, session, 'A');
      let pendingB = b.say(FROM_B[0]!);
      expect(await pendingA).toBe(FROM_B[0]);
      for (let turn = 0; turn < 3; turn++) {
        pendingA = a.say(FROM_A[turn]!);
        expect(await pendingB).toBe(FROM_A[turn]);
        pendingB = b.say(FROM_B[turn + 1]!);
        expect(await pendingA).toBe(FROM_B[turn + 1]);
      }
      expect(assistantTexts(a.history)).toEqual(FROM_B);
      expect(assistantTexts(b.history)).toEqual(FROM_A.slice(0, 3));

      // B's last turn is held; A's next message answers it, then A's own wait is ended by the
      // session closing, in A's protocol's error shape.
      pendingA = a.say(FROM_A[3]!);
      expect(await pendingB).toBe(FROM_A[3]);
      expect(assistantTexts(b.history)).toEqual(FROM_A);
      const endedA = first === 'anthropic' ? anthropicError(pendingA) : openAIError(pendingA);
      await untilHeld(server, session, 'A');
      await closeSession(server, session);
      const errA = await endedA;
      expect(errA.status).toBe(first === 'anthropic' ? undefined : 410); // Anthropic A streams: the error is in-stream
      if (first === 'anthropic') expect((errA as APIError).errorCode).toBe('session_closed');
      else expect((errA as { code?: string | null }).code).toBe('session_closed');
    });
  }
});

describe('errors in Anthropic shape', () => {
  it('refuses a request without messages, or with empty new content, with 422 and no retry', async () => {
    const server = await start();
    const recorded = recordingAnthropic(server);
    const missing = await anthropicError(recorded.client.messages.create({ model: uniqueId('e'), max_tokens: 5 } as unknown as Anthropic.MessageCreateParamsNonStreaming));
    expect(missing.status).toBe(422);
    expectAnthropicError(missing.error, 'invalid_request_error', 'invalid_request');
    expect(missing.message).toMatch(/messages/);
    expect(missing.headers?.get('x-should-retry')).toBe('false');
    expect(recorded.statuses).toEqual([422]);

    const contents: Content[] = ['', '  \n\t', [{ type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } }]];
    for (const content of contents) {
      const err = await anthropicError(
        recorded.client.messages.create({ model: uniqueId('e'), max_tokens: 5, messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'x' }, { role: 'user', content }] }),
      );
      expect(err.status).toBe(422);
      expectAnthropicError(err.error, 'invalid_request_error', 'invalid_request');
      expect(err.message).toMatch(/messages\.2\.content/);
    }
    const empty = await anthropicError(recorded.client.messages.create({ model: uniqueId('e'), max_tokens: 5, messages: [] }));
    expect(empty.message).toMatch(/messages must not be empty/);
    const noModel = await anthropicError(recorded.client.messages.create({ max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] } as unknown as Anthropic.MessageCreateParamsNonStreaming));
    expect(noModel.message).toMatch(/model is required/);
    expect(recorded.statuses).toEqual([422, 422, 422, 422, 422, 422]);
  });

  it('answers raw bad input: invalid JSON 400, missing messages 422, wrong content type 415, too large 413', async () => {
    const server = await start();
    const invalid = await rawMessages(server, '{"model": "x", "messages": [');
    expect(invalid.status).toBe(400);
    expect(invalid.headers.get('x-should-retry')).toBe('false');
    expect(invalid.headers.get('content-type')).toMatch(/^application\/json/);
    const invalidBody = (await invalid.json()) as any;
    expectAnthropicError(invalidBody, 'invalid_request_error', 'invalid_json');
    expect(invalidBody.error.message).toMatch(/JSON/);

    const missing = await rawMessages(server, { model: uniqueId('e'), max_tokens: 5 });
    expect(missing.status).toBe(422);
    expectAnthropicError(await missing.json(), 'invalid_request_error', 'invalid_request');

    const empty = await rawMessages(server, { model: uniqueId('e'), messages: [{ role: 'user', content: [{ type: 'text', text: '' }] }] });
    expect(empty.status).toBe(422);
    expect(((await empty.json()) as any).error.message).toMatch(/no text content/);

    const badBlocks = await rawMessages(server, { model: uniqueId('e'), messages: [{ role: 'user', content: 42 }] });
    expect(badBlocks.status).toBe(422);
    expectAnthropicError(await badBlocks.json(), 'invalid_request_error', 'invalid_request');

    const text = await rawMessages(server, '{}', { 'content-type': 'text/plain' });
    expect(text.status).toBe(415);
    expectAnthropicError(await text.json(), 'invalid_request_error', 'unsupported_media_type');

    const large = await rawMessages(server, { model: uniqueId('e'), messages: [{ role: 'user', content: 'x'.repeat(70_000) }] });
    expect(large.status).toBe(413);
    expectAnthropicError(await large.json(), 'request_too_large', 'payload_too_large');
  });

  it('answers the wrong method with 405 and Allow', async () => {
    const server = await start();
    const client = anthropic(server, { maxRetries: 0 });
    for (const call of [() => client.get('/v1/messages'), () => client.put('/v1/messages', { body: {} }), () => client.delete('/v1/messages')]) {
      const err = await anthropicError(call());
      expect(err.status).toBe(405);
      expect(err.headers?.get('allow')).toBe('POST');
      expectAnthropicError(err.error, 'invalid_request_error', 'method_not_allowed');
      expect(err.message).toMatch(/use POST/);
    }
  });

  it('answers a non-streaming wait that runs out with 408 timeout_error, retryable', async () => {
    const server = await start({ handshakeTimeoutSeconds: '0.3', turnTimeoutSeconds: '5' });
    const recorded = recordingAnthropic(server, { maxRetries: 0 });
    const err = await anthropicError(recorded.client.messages.create({ model: uniqueId('anthropic-408'), max_tokens: 5, messages: [{ role: 'user', content: 'ping' }] }));
    expect(err.status).toBe(408);
    expectAnthropicError(err.error, 'timeout_error', 'handshake_timeout');
    expect(err.headers?.get('x-should-retry')).toBeNull();
    expect(recorded.statuses).toEqual([408]);
  });
});

describe('the SDK retrying a timed-out turn', () => {
  it('re-attaches: the answer arrives once, and nothing is delivered twice', async () => {
    // A turn times out after 1 s: long enough that the last step (A held, then the session
    // closed) cannot lose the race to the timeout and the SDK's retry on a loaded machine.
    const server = await start({ handshakeTimeoutSeconds: '5', turnTimeoutSeconds: '1' });
    const session = uniqueId('anthropic-retry');
    const a = recordingAnthropic(server); // default maxRetries (2)
    const b = recordingAnthropic(server);
    const send = (client: Anthropic, messages: MessageParam[]) =>
      client.messages.create({ model: session, max_tokens: 100, messages }).then((m) => textOf(m));

    const handshake = send(a.client, [{ role: 'user', content: 'ping' }]);
    await untilHeld(server, session, 'A');
    const b1 = send(b.client, [{ role: 'user', content: 'b1' }]);
    expect(await handshake).toBe('b1');

    // A's turn reaches the waiting B at once; then A waits for B and runs out of time.
    const before = a.statuses.length;
    const a1 = send(a.client, [{ role: 'user', content: 'ping' }, { role: 'assistant', content: 'b1' }, { role: 'user', content: 'a1' }]);
    expect(await b1).toBe('a1');
    await a.nextStatus(408);

    // B answers after A's first timeout; the SDK's retry (X-Stainless-Retry-Count: 1) picks it up.
    const b2 = send(b.client, [{ role: 'user', content: 'b1' }, { role: 'assistant', content: 'a1' }, { role: 'user', content: 'b2' }]);
    expect(await a1).toBe('b2');
    expect(a.statuses.slice(before)).toEqual([408, 200]);
    expect(a.retryCounts.slice(before)).toEqual(['0', '1']);

    // A's retried "a1" was not delivered again: B's answer is A's next message alone.
    const a2 = send(a.client, [
      { role: 'user', content: 'ping' },
      { role: 'assistant', content: 'b1' },
      { role: 'user', content: 'a1' },
      { role: 'assistant', content: 'b2' },
      { role: 'user', content: 'a2' },
    ]);
    expect(await b2).toBe('a2');
    expect(b.statuses.filter((s) => s !== 408)).toEqual([200, 200]);
    const deliveredToB = server.service.ctx.sessions.get(session)!.context.sides.B.deliveries;
    expect(deliveredToB).toEqual(['a1', 'a2']);

    const ended = anthropicError(a2);
    await until(() => server.service.ctx.sessions.get(session)!.context.sides.A.held !== null, "A's turn is held");
    await closeSession(server, session);
    expect((await ended).status).toBe(410);
  });
});
