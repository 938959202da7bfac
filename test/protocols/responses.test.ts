// Proves the OpenAI Responses adapter (POST /v1/responses, PROTOCOL.md §6) over a real server
// with the official SDK: full item-list histories pair byte-exact; clients that send only their
// new input plus previous_response_id are attributed to the right side through the ids the proxy
// returned (even where the order rule would pick the other side); streams carry the
// response.created … response.completed events with sequence numbers and keep-alive comments,
// and end with the `error` event the SDK raises; sides may mix Responses and Chat Completions;
// bad requests get OpenAI's error body; and the SDK's own retry of a timed-out turn re-attaches
// without a duplicate.
import OpenAI from 'openai';
import type { ResponseInputItem, ResponseStreamEvent } from 'openai/resources/responses/responses';
import { describe, expect, it } from 'vitest';
import type { TestServer } from '../helpers/server.js';
import { Participant, apiError, expectOpenAIError, rawPost, recordingClient, sleep, uniqueId, until, untilHeld, useServers } from '../http/support.js';

const start = useServers();

const RESPONSE_ID = /^resp_[0-9a-f]{49}$/;

/** A Responses client that keeps its own item-list history and re-sends all of it. */
class HistoryParticipant {
  readonly input: ResponseInputItem[] = [];
  readonly responses: OpenAI.Responses.Response[] = [];

  constructor(
    private readonly client: OpenAI,
    readonly model: string,
    private readonly style: { parts: boolean; instructions?: string },
  ) {}

  async say(text: string): Promise<string> {
    // One side sends typed message items with input_text parts and appends the output items
    // as returned (type "message", output_text parts); the other sends bare {role, content}.
    this.input.push(this.style.parts ? { type: 'message', role: 'user', content: [{ type: 'input_text', text }] } : { role: 'user', content: text });
    const response = await this.client.responses.create({
      model: this.model,
      input: [...this.input],
      ...(this.style.instructions ? { instructions: this.style.instructions } : {}),
      temperature: 0.7,
      store: false,
    });
    this.responses.push(response);
    if (this.style.parts) this.input.push(...(response.output as ResponseInputItem[]));
    else this.input.push({ role: 'assistant', content: response.output_text });
    return response.output_text;
  }

  assistantTexts(): string[] {
    return this.input.flatMap((item) => {
      if (!('role' in item) || item.role !== 'assistant') return [];
      const content = (item as { content: unknown }).content;
      return [typeof content === 'string' ? content : (content as { text: string }[]).map((p) => p.text).join('')];
    });
  }
}

/** A Responses client that sends only its new input, continuing from its latest response. */
class ChainedParticipant {
  readonly ids: string[] = [];
  previous: string | null = null;

  constructor(
    private readonly client: OpenAI,
    readonly model: string,
  ) {}

  async say(text: string, options: OpenAI.RequestOptions = {}): Promise<string> {
    const response = await this.client.responses.create({ model: this.model, input: text, previous_response_id: this.previous }, options);
    this.previous = response.id;
    this.ids.push(response.id);
    return response.output_text;
  }
}

/** The SSE events of a raw response body: event name and parsed data; comments dropped. */
function sseEvents(text: string): { event: string | null; data: any }[] {
  return text
    .split('\n\n')
    .filter((frame) => frame.includes('data: '))
    .map((frame) => {
      const lines = frame.split('\n');
      const event = lines.find((l) => l.startsWith('event: '))?.slice('event: '.length) ?? null;
      const data = lines.find((l) => l.startsWith('data: '))!.slice('data: '.length);
      return { event, data: JSON.parse(data) };
    });
}

function rawResponses(server: TestServer, body: Record<string, unknown>): Promise<Response> {
  return fetch(`${server.url}/v1/responses`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

const FROM_A = ['I look around.', 'I ask the guard to let me out.\n\nPolitely!', '  I pick up the key\t(quietly) ', 'I step through the door. 🚪'];
const FROM_B = ['You wake in a cold cell.  ', 'The guard laughs.\nHe says: "Never."', 'A key glints on the floor.', 'The door creaks open…', 'You are free.'];

describe('Responses with full item-list histories', () => {
  it('pairs both sides byte-exact, in order, with Response objects the SDK parses', async () => {
    const server = await start();
    const session = uniqueId('resp-conv');
    const before = Math.floor(Date.now() / 1000);
    const a = new HistoryParticipant(server.client(), session, { parts: true });
    const b = new HistoryParticipant(server.client(), session, { parts: false, instructions: 'You are the dungeon master.' });

    let pendingA = a.say('ping');
    await untilHeld(server, session, 'A');
    let pendingB = b.say(FROM_B[0]!);
    expect(await pendingA).toBe(FROM_B[0]);
    for (let turn = 0; turn < FROM_A.length; turn++) {
      pendingA = a.say(FROM_A[turn]!);
      expect(await pendingB).toBe(FROM_A[turn]);
      pendingB = b.say(FROM_B[turn + 1]!);
      expect(await pendingA).toBe(FROM_B[turn + 1]);
    }
    expect(a.assistantTexts()).toEqual(FROM_B);
    expect(b.assistantTexts()).toEqual(FROM_A);

    // Instructions are kept as B's system prompt, never delivered as chat content.
    const context = server.service.ctx.sessions.get(session)!.context;
    expect(context.sides.B.system).toBe('You are the dungeon master.');
    expect(context.sides.A.deliveries).toEqual(FROM_B);

    // The shape of a Response, as the SDK types it.
    const response = b.responses[0]!;
    expect(response).toEqual({
      id: expect.stringMatching(RESPONSE_ID),
      object: 'response',
      created_at: expect.any(Number),
      status: 'completed',
      background: false,
      completed_at: expect.any(Number),
      error: null,
      incomplete_details: null,
      instructions: 'You are the dungeon master.',
      max_output_tokens: null,
      max_tool_calls: null,
      model: session,
      output: [
        {
          id: expect.stringMatching(/^msg_[0-9a-f]{32}$/),
          type: 'message',
          status: 'completed',
          role: 'assistant',
          content: [{ type: 'output_text', text: FROM_A[0], annotations: [], logprobs: [] }],
        },
      ],
      output_text: FROM_A[0],
      parallel_tool_calls: true,
      previous_response_id: null,
      prompt_cache_key: null,
      reasoning: { effort: null, summary: null },
      safety_identifier: null,
      service_tier: 'default',
      store: false,
      temperature: 0.7,
      text: { format: { type: 'text' }, verbosity: 'medium' },
      tool_choice: 'auto',
      tools: [],
      top_logprobs: 0,
      top_p: 1,
      truncation: 'disabled',
      usage: {
        input_tokens: expect.any(Number),
        input_tokens_details: { cache_write_tokens: 0, cached_tokens: 0 },
        output_tokens: expect.any(Number),
        output_tokens_details: { reasoning_tokens: 0 },
        total_tokens: expect.any(Number),
      },
      user: null,
      metadata: {},
    });
    expect(response.created_at).toBeGreaterThanOrEqual(before);
    expect(response.usage!.output_tokens).toBeGreaterThan(0);
    expect(response.usage!.total_tokens).toBe(response.usage!.input_tokens + response.usage!.output_tokens);
    const ids = [...a.responses, ...b.responses].map((r) => r.id);
    expect(new Set(ids).size).toBe(ids.length);

    const ended = apiError(pendingB);
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await ended).status).toBe(410);
  });

  it('takes the last user item as the new content, ignores other item types and parts, and keeps system/developer items', async () => {
    const server = await start();
    const session = uniqueId('resp-items');
    const client = server.client();
    const handshake = client.responses.create({ model: session, input: 'ping' });
    await untilHeld(server, session, 'A');
    const forB = client.responses.create({
      model: session,
      input: [
        { role: 'developer', content: 'Speak like a pirate.' },
        { type: 'message', role: 'system', content: [{ type: 'input_text', text: 'Be brief.' }] },
        {
          role: 'user',
          content: [
            { type: 'input_text', text: 'Ahoy, ' },
            { type: 'input_image', image_url: 'https://example.com/x.png', detail: 'auto' },
            { type: 'input_text', text: 'matey!' },
          ],
        },
        { type: 'function_call_output', call_id: 'call_1', output: '{"ok":true}' },
      ],
      tools: [{ type: 'function', name: 'noop', parameters: {}, strict: false }],
      reasoning: { effort: 'low' },
      metadata: { game: 'pirates' },
    });
    expect((await handshake).output_text).toBe('Ahoy, matey!');
    expect(server.service.ctx.sessions.get(session)!.context.sides.B.system).toBe('Speak like a pirate.\n\nBe brief.');

    const a1 = client.responses.create({ model: session, input: [{ role: 'user', content: 'ping' }, { role: 'assistant', content: 'Ahoy, matey!' }, { role: 'user', content: 'Arr.' }] });
    void a1.catch(() => undefined);
    const response = await forB;
    expect(response.output_text).toBe('Arr.');
    // Echoed as the real API echoes them.
    expect(response.tools).toHaveLength(1);
    expect(response.reasoning).toEqual({ effort: 'low' });
    expect(response.metadata).toEqual({ game: 'pirates' });
  });
});

describe('previous_response_id chains', () => {
  it('attributes clients that send only their new input to the right side, over several turns', async () => {
    const server = await start();
    const session = uniqueId('resp-chain');
    const a = new ChainedParticipant(server.client(), session);
    const b = new ChainedParticipant(server.client(), session);

    let pendingA = a.say('ping');
    await untilHeld(server, session, 'A');
    let pendingB = b.say(FROM_B[0]!);
    expect(await pendingA).toBe(FROM_B[0]);
    for (let turn = 0; turn < FROM_A.length; turn++) {
      pendingA = a.say(FROM_A[turn]!);
      expect(await pendingB).toBe(FROM_A[turn]);
      pendingB = b.say(FROM_B[turn + 1]!);
      expect(await pendingA).toBe(FROM_B[turn + 1]);
    }
    const context = server.service.ctx.sessions.get(session)!.context;
    expect(context.sides.A.deliveries).toEqual(FROM_B);
    expect(context.sides.B.deliveries).toEqual(FROM_A);
    for (const id of [...a.ids, ...b.ids]) expect(id).toMatch(RESPONSE_ID);

    const ended = apiError(pendingB);
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await ended).status).toBe(410);
  });

  it('names the side where the order rule would not: a held side sending again supersedes itself', async () => {
    const server = await start();
    const session = uniqueId('resp-double');
    const a = new ChainedParticipant(server.client(), session);
    const b = new ChainedParticipant(server.client(), session);

    const handshake = a.say('ping');
    await untilHeld(server, session, 'A');
    const b1 = b.say('b1');
    expect(await handshake).toBe('b1');
    const a1 = a.say('a1');
    expect(await b1).toBe('a1');
    await untilHeld(server, session, 'A');

    // A is held and B is away; A sends again from the same previous response. Without history,
    // "the side that is not waiting" would be B; the id says A.
    const again = server.client().responses.create({ model: session, input: 'a1b (second thought)', previous_response_id: a.previous });
    const superseded = await apiError(a1);
    expect(superseded.status).toBe(409);
    expect(superseded.code).toBe('superseded');

    // B comes back: it gets A's second message at once (queued), not its own echo; and its
    // message answers A's second request.
    const b2 = b.say('b2');
    expect((await again).output_text).toBe('b2');
    expect(await b2).toBe('a1b (second thought)');
    const context = server.service.ctx.sessions.get(session)!.context;
    expect(context.sides.A.deliveries).toEqual(['b1', 'b2']);
    expect(context.sides.B.deliveries).toEqual(['a1', 'a1b (second thought)']);
  });

  it('continues from the ids of streamed responses', async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.05' });
    const session = uniqueId('resp-stream-chain');
    const client = server.client();
    const b = new ChainedParticipant(client, session);

    const handshake = client.responses.stream({ model: session, input: 'ping' }).finalResponse();
    await untilHeld(server, session, 'A');
    const b1 = b.say('b1');
    const first = await handshake;
    expect(first.output_text).toBe('b1');
    expect(first.id).toMatch(RESPONSE_ID);

    const second = client.responses.stream({ model: session, input: 'a1', previous_response_id: first.id }).finalResponse();
    expect(await b1).toBe('a1');
    const b2 = b.say('b2');
    expect((await second).output_text).toBe('b2');
    expect((await second).previous_response_id).toBe(first.id);
    void b2.catch(() => undefined);
  });
});

describe('streaming', () => {
  it('sends created/in_progress at once, keep-alive comments while held, then the events in order with sequence numbers', async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.05' });
    const session = uniqueId('resp-sse');
    const sentAt = Date.now();
    const response = await rawResponses(server, { model: `${session}|A`, input: 'ping', stream: true, instructions: 'Be a guard.' });
    expect(Date.now() - sentAt).toBeLessThan(500);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const text = response.text();
    await untilHeld(server, session, 'A');
    await sleep(300);
    const forB = server.client().responses.create({ model: `${session}|B`, input: 'Halt! Who goes there?\nSpeak.' });
    const body = await text;

    const keepAlives = body.match(/^: keep-alive\n\n/gm) ?? [];
    expect(keepAlives.length).toBeGreaterThanOrEqual(2);
    const events = sseEvents(body);
    for (const e of events) expect(e.event).toBe(e.data.type);
    expect(events.map((e) => e.data.sequence_number)).toEqual(events.map((_, i) => i));
    expect(events.map((e) => e.event)).toEqual([
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
      'response.output_text.delta',
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      'response.completed',
    ]);
    // Nothing but the two opening events before the keep-alives.
    const held = body.slice(0, body.indexOf('event: response.output_item.added'));
    expect(sseEvents(held).map((e) => e.event)).toEqual(['response.created', 'response.in_progress']);

    const [created, , added, partAdded, delta, textDone, partDone, itemDone, completed] = events.map((e) => e.data);
    expect(created.response).toMatchObject({ object: 'response', status: 'in_progress', model: `${session}|A`, output: [], instructions: 'Be a guard.', error: null });
    const messageId = added.item.id;
    expect(messageId).toMatch(/^msg_/);
    expect(added).toMatchObject({ output_index: 0, item: { id: messageId, type: 'message', status: 'in_progress', role: 'assistant', content: [] } });
    expect(partAdded).toMatchObject({ item_id: messageId, output_index: 0, content_index: 0, part: { type: 'output_text', text: '', annotations: [] } });
    expect(delta).toMatchObject({ item_id: messageId, output_index: 0, content_index: 0, delta: 'Halt! Who goes there?\nSpeak.', logprobs: [] });
    expect(textDone).toMatchObject({ item_id: messageId, text: 'Halt! Who goes there?\nSpeak.' });
    expect(partDone.part).toEqual({ type: 'output_text', text: 'Halt! Who goes there?\nSpeak.', annotations: [], logprobs: [] });
    expect(itemDone.item).toMatchObject({ id: messageId, status: 'completed', content: [{ type: 'output_text', text: 'Halt! Who goes there?\nSpeak.' }] });
    expect(completed.response).toMatchObject({
      status: 'completed',
      model: `${session}|A`,
      output: [itemDone.item],
      usage: { output_tokens: expect.any(Number), total_tokens: expect.any(Number) },
    });
    // The final id shares the random part of the provisional one and names side A, delivery 0.
    expect(completed.response.id).toMatch(RESPONSE_ID);
    expect(completed.response.id.slice(0, 37)).toBe(created.response.id.slice(0, 37));
    expect(completed.response.id.slice(-9)).toBe('a00000000');
    expect(created.response.id.slice(-9)).toBe('000000000');

    // B's answer continues the conversation (A speaks); B's stream of events via the SDK.
    const a1 = await server.client().responses.create({ model: `${session}|A`, input: 'A friend.', previous_response_id: completed.response.id, stream: true });
    expect((await forB).output_text).toBe('A friend.');
    const b2 = server.client().responses.create({ model: `${session}|B`, input: 'Pass, friend.' });
    void b2.catch(() => undefined);
    const seen: ResponseStreamEvent[] = [];
    let textOut = '';
    for await (const event of a1) {
      seen.push(event);
      if (event.type === 'response.output_text.delta') textOut += event.delta;
    }
    expect(textOut).toBe('Pass, friend.');
    expect(seen[seen.length - 1]!.type).toBe('response.completed');
  });

  it('gives responses.stream() a finalResponse with output_text, and text deltas as they come', async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.05' });
    const session = uniqueId('resp-helper');
    const client = server.client();
    const stream = client.responses.stream({ model: session, input: 'ping' });
    const deltas: string[] = [];
    stream.on('response.output_text.delta', (event) => deltas.push(event.delta));
    await untilHeld(server, session, 'A');
    const b1 = client.responses.create({ model: session, input: 'Line one.\nLine two: ünïcödé ✓' });
    const final = await stream.finalResponse();
    expect(final.output_text).toBe('Line one.\nLine two: ünïcödé ✓');
    expect(final.status).toBe('completed');
    expect(final.model).toBe(session);
    expect(deltas.join('')).toBe('Line one.\nLine two: ünïcödé ✓');
    void b1.catch(() => undefined);
  });
});

describe('a cross-protocol session', () => {
  it('pairs a Responses side with a Chat Completions side', async () => {
    const server = await start();
    const session = uniqueId('resp-cross');
    const a = new HistoryParticipant(server.client(), session, { parts: true });
    const b = new Participant(server.client(), session, { system: 'You are the narrator.' });

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
    expect(a.assistantTexts()).toEqual(FROM_B.slice(0, 4));
    expect(b.history.filter((m) => m.role === 'assistant').map((m) => m.content)).toEqual(FROM_A.slice(0, 3));
    expect(b.completions[0]!.object).toBe('chat.completion');
    expect(a.responses[0]!.object).toBe('response');

    const ended = apiError(pendingB);
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await ended).status).toBe(410);
  });
});

describe('bad requests', () => {
  it('answers schema violations with 422 invalid_request in OpenAI’s error shape', async () => {
    const server = await start();
    const session = uniqueId('resp-bad');
    const cases: [Record<string, unknown>, string | null][] = [
      [{ model: session }, 'input'],
      [{ model: session, input: '' }, 'input'],
      [{ model: session, input: '   \n' }, 'input'],
      [{ model: session, input: [] }, 'input'],
      [{ model: session, input: [{ role: 'assistant', content: 'only me' }] }, 'input'],
      [{ model: session, input: [{ role: 'user', content: 'hi' }, { role: 'user', content: [{ type: 'input_image', image_url: 'x' }] }] }, 'input.1.content'],
      [{ model: session, input: ['hi'] }, 'input.0'],
      [{ input: 'hi' }, 'model'],
      [{ model: session, input: 'hi', previous_response_id: 42 }, 'previous_response_id'],
    ];
    for (const [body, param] of cases) {
      const response = await rawPost(server, '/v1/responses', JSON.stringify(body));
      expect(response.status, JSON.stringify(body)).toBe(422);
      expectOpenAIError(response.json, 'invalid_request');
      expect(response.json.error.param).toBe(param);
      expect(response.headers.get('x-should-retry')).toBe('false');
    }
    // Nothing reached the session.
    expect(server.service.ctx.sessions.get(session)).toBeUndefined();

    // The SDK surfaces it as an APIError, without retrying.
    const recorded = recordingClient(server);
    const err = await apiError(recorded.client.responses.create({ model: session, input: '' }));
    expect(err.status).toBe(422);
    expect(err.code).toBe('invalid_request');
    expect(recorded.statuses).toEqual([422]);
  });

  it('answers invalid JSON with 400 and GET with 405, in OpenAI’s error shape', async () => {
    const server = await start();
    const invalid = await rawPost(server, '/v1/responses', '{"model": "x", "input": ');
    expect(invalid.status).toBe(400);
    expectOpenAIError(invalid.json, 'invalid_json');

    const get = await fetch(`${server.url}/v1/responses`);
    expect(get.status).toBe(405);
    expect(get.headers.get('allow')).toBe('POST');
    expectOpenAIError(await get.json(), 'method_not_allowed');
  });

  it('refuses a previous_response_id the proxy did not give in this session', async () => {
    const server = await start();
    const session = uniqueId('resp-prev');
    const client = server.client({ maxRetries: 0 });

    // Not one of the proxy's ids (this is what OpenAI's look like): 422.
    const foreign = await apiError(client.responses.create({ model: session, input: 'hi', previous_response_id: 'resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b' }));
    expect(foreign.status).toBe(422);
    expectOpenAIError({ error: foreign.error }, 'invalid_request');
    expect(foreign.param).toBe('previous_response_id');
    expect(foreign.message).toMatch(/not a response this proxy gave/);

    // A real conversation, to get ids.
    const handshake = client.responses.create({ model: session, input: 'ping' });
    await untilHeld(server, session, 'A');
    const b1 = client.responses.create({ model: session, input: 'b1' });
    const first = await handshake;

    // An id of this proxy from another session: 409 session_conflict.
    const other = await apiError(client.responses.create({ model: uniqueId('resp-other'), input: 'hi', previous_response_id: first.id }));
    expect(other.status).toBe(409);
    expectOpenAIError({ error: other.error }, 'session_conflict');
    expect(other.message).toMatch(/another session/);
    expect(other.headers?.get('x-should-retry')).toBe('false');

    // An id of this session naming a delivery side A never had (delivery 5): 409 from attribution.
    const forged = `${first.id.slice(0, -8)}00000005`;
    const ahead = await apiError(client.responses.create({ model: session, input: 'hi', previous_response_id: forged }));
    expect(ahead.status).toBe(409);
    expect(ahead.code).toBe('session_conflict');

    // And one naming side B while the model names side A.
    const wrongSide = await apiError(client.responses.create({ model: `${session}|B`, input: 'hi', previous_response_id: first.id }));
    expect(wrongSide.status).toBe(409);
    expect(wrongSide.code).toBe('session_conflict');

    // None of it disturbed the session: A continues normally.
    const a1 = client.responses.create({ model: session, input: 'a1', previous_response_id: first.id });
    expect((await b1).output_text).toBe('a1');
    void a1.catch(() => undefined);
  });

  it('ends a held stream that times out with the in-stream error event, which the SDK raises', async () => {
    const server = await start({ handshakeTimeoutSeconds: '0.3', turnTimeoutSeconds: '30', streamTurnTimeoutSeconds: '0.3', keepaliveIntervalSeconds: '0.05' });
    const client = server.client({ maxRetries: 0 });

    // Raw: the error event in both the documented (top-level) and the live (nested) shape.
    const raw = await rawResponses(server, { model: uniqueId('resp-timeout-raw'), input: 'ping', stream: true });
    const events = sseEvents(await raw.text());
    expect(events.map((e) => e.event)).toEqual(['response.created', 'response.in_progress', 'error']);
    expect(events[2]!.data).toEqual({
      type: 'error',
      code: 'handshake_timeout',
      message: expect.stringMatching(/handshake timeout/),
      param: null,
      error: { type: 'timeout_error', code: 'handshake_timeout', message: expect.stringMatching(/handshake timeout/), param: null },
      sequence_number: 2,
    });

    // SDK: create({stream: true}) iteration throws; responses.stream().finalResponse() rejects.
    const session = uniqueId('resp-timeout');
    const handshake = client.responses.create({ model: session, input: 'ping' });
    await untilHeld(server, session, 'A');
    const stream = await client.responses.create({ model: session, input: 'b1', stream: true });
    expect((await handshake).output_text).toBe('b1');
    const types: string[] = [];
    const err = await apiError(
      (async () => {
        for await (const event of stream) types.push(event.type);
      })(),
    );
    expect(types).toEqual(['response.created', 'response.in_progress']);
    expect(err.code).toBe('turn_timeout');
    expect(err.message).toMatch(/turn timeout/);

    const helper = client.responses.stream({ model: uniqueId('resp-timeout-helper'), input: 'ping' });
    const failed = await apiError(helper.finalResponse());
    expect(failed.code).toBe('handshake_timeout');
  });
});

describe('retries', () => {
  it('lets the SDK retry a timed-out chained turn: the answer arrives once, nothing is delivered twice', async () => {
    const server = await start({ handshakeTimeoutSeconds: '5', turnTimeoutSeconds: '0.3' });
    const session = uniqueId('resp-retry');
    const a = recordingClient(server); // default maxRetries (2)
    const b = recordingClient(server);
    const chainA = new ChainedParticipant(a.client, session);
    const chainB = new ChainedParticipant(b.client, session);

    const handshake = chainA.say('ping');
    await untilHeld(server, session, 'A');
    const b1 = chainB.say('b1');
    expect(await handshake).toBe('b1');

    // A's turn reaches B at once; A then waits for B and runs out of time; the SDK retries
    // the identical body (same previous_response_id, same input).
    const before = a.statuses.length;
    const a1 = chainA.say('a1');
    expect(await b1).toBe('a1');
    await a.nextStatus(408);
    await until(() => server.service.ctx.sessions.get(session)!.context.sides.A.held !== null, "A's retry re-attached");

    const b2 = chainB.say('b2');
    expect(await a1).toBe('b2');
    expect(a.statuses.slice(before)).toEqual([408, 200]);

    // A's retried "a1" was not delivered again: B's answer is A's next message alone.
    const a2 = chainA.say('a2');
    expect(await b2).toBe('a2');
    const context = server.service.ctx.sessions.get(session)!.context;
    expect(context.sides.B.deliveries).toEqual(['a1', 'a2']);
    expect(context.sides.A.deliveries).toEqual(['b1', 'b2']);
    expect(b.statuses.filter((s) => s !== 408)).toEqual([200, 200]);
    void a2.catch(() => undefined);
  });
});
