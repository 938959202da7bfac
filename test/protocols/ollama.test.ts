// Proves the Ollama adapter (PROTOCOL.md §6) with the official `ollama` npm client against a
// real listening server: POST /api/chat pairs two clients (streaming NDJSON by default, one
// object with `stream: false`), both re-sending their full histories, byte-exact, system
// messages kept in the transcript; held streams carry done:false keep-alive lines the client
// parses without complaint; sides may mix protocols; GET /api/tags lists joinable sessions in
// Ollama's shape; and every refusal is Ollama's {"error":"message"}, in-stream as an error line
// the client throws.
import { Ollama, type ChatResponse, type Message } from 'ollama';
import { afterEach, beforeEach, describe, expect, it, vi, type MockInstance } from 'vitest';
import type { TestServer } from '../helpers/server.js';
import { Participant, apiError, rawPost, sleep, uniqueId, untilHeld, useServers, converse, DUEL, SCRIPT } from '../http/support.js';

const start = useServers();

// ollama-js logs lines it cannot parse ("invalid json: ") with console.warn: none may occur.
let warn: MockInstance<typeof console.warn>;
beforeEach(() => {
  warn = vi.spyOn(console, 'warn');
});
afterEach(() => {
  const invalid = warn.mock.calls.filter((c) => String(c[0]).includes('invalid json'));
  warn.mockRestore();
  expect(invalid).toEqual([]);
});

const client = (server: TestServer): Ollama => new Ollama({ host: server.url });

/** An Ollama chat client: keeps its messages and re-sends all of them with every call. */
class OllamaParticipant {
  readonly messages: Message[] = [];
  readonly responses: ChatResponse[] = [];
  readonly chunks: ChatResponse[][] = [];

  constructor(
    private readonly ollama: Ollama,
    readonly model: string,
    private readonly options: { stream?: boolean; system?: string } = {},
  ) {
    if (options.system) this.messages.push({ role: 'system', content: options.system });
  }

  async say(content: string): Promise<string> {
    this.messages.push({ role: 'user', content });
    const messages = structuredClone(this.messages);
    let reply = '';
    if (this.options.stream) {
      const chunks: ChatResponse[] = [];
      for await (const chunk of await this.ollama.chat({ model: this.model, messages, stream: true, options: { temperature: 0.2 } })) {
        chunks.push(chunk);
        reply += chunk.message.content;
      }
      this.chunks.push(chunks);
    } else {
      const response = await this.ollama.chat({ model: this.model, messages, stream: false, keep_alive: '5m' });
      this.responses.push(response);
      reply = response.message.content;
    }
    this.messages.push({ role: 'assistant', content: reply });
    return reply;
  }

  replies(): string[] {
    return this.messages.filter((m) => m.role === 'assistant').map((m) => m.content);
  }
}

/** Awaits an ollama-js call that must fail; returns its error (a ResponseError has status_code). */
async function ollamaError(call: Promise<unknown>): Promise<Error & { status_code?: number; error?: string }> {
  try {
    await call;
  } catch (err) {
    return err as Error & { status_code?: number };
  }
  throw new Error('expected the call to fail');
}

/** Drains a stream that must end with an error; returns the error. */
async function streamError(stream: AsyncIterable<ChatResponse>): Promise<Error> {
  return ollamaError(
    (async () => {
      for await (const _chunk of stream) {
        // keep-alive lines only
      }
    })(),
  );
}

const ndjson = (text: string): any[] =>
  text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l));

const { fromA: FROM_A, fromB: FROM_B } = SCRIPT;

describe('an Ollama conversation with full histories', () => {
  for (const stream of [false, true]) {
    it(`delivers every turn byte-exact, in order, both sides on Ollama (stream: ${stream})`, async () => {
      const server = await start(stream ? { keepaliveIntervalSeconds: '0.05' } : {});
      const session = uniqueId('oll-conv');
      const ollama = client(server);
      const a = new OllamaParticipant(ollama, session, { stream });
      const b = new OllamaParticipant(ollama, session, { stream, system: 'You are the dungeon master.' });

      const { held: pendingA } = await converse(server, session, a, b, SCRIPT);

      expect(a.replies()).toEqual(FROM_B);
      expect(b.replies()).toEqual(FROM_A);
      const transcript = server.service.ctx.sessions.get(session)!.context.transcript;
      expect(transcript.filter((e) => e.kind === 'system').map((e) => [e.side, e.content])).toEqual([['B', 'You are the dungeon master.']]);

      const all = stream ? [...a.chunks, ...b.chunks].map((chunks) => chunks[chunks.length - 1]!) : [...a.responses, ...b.responses];
      for (const final of all) {
        expect(final.model).toBe(session);
        expect(final.done).toBe(true);
        expect(final.done_reason).toBe('stop');
        expect(final.message.role).toBe('assistant');
        expect(Number.isNaN(Date.parse(String(final.created_at)))).toBe(false);
        expect(final.eval_count).toBeGreaterThan(0);
        expect(final.prompt_eval_count).toBeGreaterThan(0);
        expect(final.total_duration).toBeGreaterThan(0);
      }
      if (stream) {
        for (const chunks of [...a.chunks, ...b.chunks]) {
          expect(chunks[chunks.length - 1]!.message.content).toBe('');
          expect(chunks.slice(0, -1).every((c) => c.done === false && c.model === session)).toBe(true);
        }
        expect(a.chunks).toHaveLength(FROM_B.length);
      } else {
        expect(a.responses).toHaveLength(FROM_B.length);
      }

      // A's last request is still held; ending the session answers it (410, Ollama's error shape).
      const ended = ollamaError(pendingA);
      expect((await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' })).status).toBe(200);
      const err = await ended;
      if (stream) {
        expect(err.message).toMatch(/session was closed/);
      } else {
        expect(err.status_code).toBe(410);
        expect(err.message).toMatch(/session was closed/);
      }
    });
  }

  it('takes the side from a `|A` / `|B` suffix, echoing the model as sent', async () => {
    const server = await start();
    const session = uniqueId('oll-side');
    const ollama = client(server);
    const forB = ollama.chat({ model: `${session}|B`, messages: [{ role: 'user', content: 'B first.' }], stream: false });
    await untilHeld(server, session, 'B');
    const forA = await ollama.chat({ model: `${session}|A`, messages: [{ role: 'user', content: 'handshake' }], stream: false });
    expect(forA.message.content).toBe('B first.');
    expect(forA.model).toBe(`${session}|A`);
    const next = ollama.chat({
      model: `${session}|A`,
      messages: [
        { role: 'user', content: 'handshake' },
        { role: 'assistant', content: 'B first.' },
        { role: 'user', content: 'A second.', images: [] },
      ],
      stream: false,
    });
    const answer = await forB;
    expect(answer.message.content).toBe('A second.');
    expect(answer.model).toBe(`${session}|B`);
    next.catch(() => undefined); // handled below: its 410 may come before the DELETE's answer
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await ollamaError(next)).status_code).toBe(410);
  });
});

describe('Ollama streaming', () => {
  it('streams by default: NDJSON headers at once, done:false keep-alive lines while held, then deltas and a done line', async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.05' });
    const session = uniqueId('oll-ndjson');
    const sentAt = Date.now();
    // No `stream` field: Ollama's default is to stream.
    const response = await fetch(`${server.url}/api/chat`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: session, messages: [{ role: 'user', content: 'ping' }] }),
    });
    expect(Date.now() - sentAt).toBeLessThan(1000);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('application/x-ndjson');
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let text = '';
    const done = (async () => {
      for (;;) {
        const { value, done: finished } = await reader.read();
        if (finished) return text;
        text += decoder.decode(value, { stream: true });
      }
    })();
    await sleep(300);
    const held = ndjson(text);
    expect(held.length).toBeGreaterThanOrEqual(2);
    for (const line of held) {
      expect(line).toEqual({ model: session, created_at: expect.any(String), message: { role: 'assistant', content: '' }, done: false });
    }

    const forB = client(server).chat({ model: session, messages: [{ role: 'user', content: 'Hello, NDJSON.\nSecond line.' }], stream: false });
    const lines = ndjson(await done);
    expect(text.endsWith('\n')).toBe(true);
    const last = lines[lines.length - 1];
    expect(last).toEqual({
      model: session,
      created_at: expect.any(String),
      message: { role: 'assistant', content: '' },
      done: true,
      done_reason: 'stop',
      total_duration: expect.any(Number),
      load_duration: 0,
      prompt_eval_count: expect.any(Number),
      prompt_eval_duration: 0,
      eval_count: expect.any(Number),
      eval_duration: expect.any(Number),
    });
    expect(lines.slice(0, -1).every((l) => l.done === false)).toBe(true);
    expect(lines.map((l) => l.message.content).join('')).toBe('Hello, NDJSON.\nSecond line.');
    await untilHeld(server, session, 'B');
    forB.catch(() => undefined); // handled below: its 410 may come before the DELETE's answer
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await ollamaError(forB)).status_code).toBe(410);
  });

  it('lets the client iterate a stream held with keep-alives (no invalid-JSON warnings)', async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.05' });
    const session = uniqueId('oll-client-stream');
    const ollama = client(server);
    const stream = await ollama.chat({ model: session, messages: [{ role: 'user', content: 'ping' }], stream: true });
    await untilHeld(server, session, 'A');
    await sleep(200);
    const text = 'A long line '.repeat(300) + '— and the end. ✓';
    const forB = ollama.chat({ model: session, messages: [{ role: 'user', content: text }], stream: false });
    let assembled = '';
    let final: ChatResponse | undefined;
    let parts = 0;
    for await (const chunk of stream) {
      parts++;
      assembled += chunk.message.content;
      if (chunk.done) final = chunk;
    }
    expect(assembled).toBe(text);
    expect(parts).toBeGreaterThan(3); // keep-alives, the delta, the done line
    expect(final?.done_reason).toBe('stop');
    await untilHeld(server, session, 'B');
    forB.catch(() => undefined); // handled below: its 410 may come before the DELETE's answer
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await ollamaError(forB)).status_code).toBe(410);
  });
});

describe('Ollama paired with OpenAI', () => {
  it('pairs an OpenAI side A with an Ollama side B, both re-sending full histories', async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.05' });
    const session = uniqueId('oll-x');
    const a = new Participant(server.client(), session, { stream: true, system: 'You play the knight.' });
    const b = new OllamaParticipant(client(server), session, { stream: true, system: 'You play the dragon.' });

    const { held: pendingA } = await converse(server, session, a, b, DUEL);

    expect(b.replies()).toEqual(['Sir Gawain, 🛡️ at your service.', 'I do.']);
    expect(a.history.filter((m) => m.role === 'assistant').map((m) => m.content)).toEqual(['ROAR. Who dares?', 'Then draw your sword.\n\n']);
    const system = server.service.ctx.sessions.get(session)!.context.transcript.filter((e) => e.kind === 'system');
    expect(system.map((e) => [e.side, e.content])).toEqual([
      ['A', 'You play the knight.'],
      ['B', 'You play the dragon.'],
    ]);
    await untilHeld(server, session, 'A');
    // Listen for the held request's end before ending the session: its 410 may come first.
    const ended = apiError(pendingA);
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await ended).code).toBe('session_closed');
  });
});

describe('Ollama errors, in Ollama shape', () => {
  const expectOllamaError = (body: any, pattern: RegExp) => {
    expect(Object.keys(body)).toEqual(['error']);
    expect(body.error).toMatch(pattern);
  };

  it('answers invalid JSON with 400', async () => {
    const server = await start();
    const response = await rawPost(server, '/api/chat', '{"model": "x", "messages": [');
    expect(response.status).toBe(400);
    expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    expectOllamaError(response.json, /JSON/);
  });

  it('answers a missing model, missing or empty messages and empty content with 422, through the client', async () => {
    const server = await start();
    const ollama = client(server);
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ messages: [{ role: 'user', content: 'hi' }] }, /model/],
      [{ model: uniqueId('oll-e') }, /messages/],
      [{ model: uniqueId('oll-e'), messages: [] }, /messages must not be empty/],
      [{ model: uniqueId('oll-e'), messages: [{ role: 'user', content: '  \n' }] }, /content/],
      [{ model: uniqueId('oll-e'), messages: [{ role: 'user', content: '', images: ['AAAA'] }] }, /content/],
    ];
    for (const [body, pattern] of cases) {
      const err = await ollamaError(ollama.chat({ ...body, stream: false } as never));
      expect(err.status_code).toBe(422);
      expect(err.message).toMatch(pattern);
      // A streaming request is refused before any line is written, with the same status.
      const streamed = await ollamaError(ollama.chat({ ...body, stream: true } as never));
      expect(streamed.status_code).toBe(422);
    }
    const raw = await rawPost(server, '/api/chat', JSON.stringify({ model: uniqueId('oll-e'), messages: [{ role: 'user', content: '' }] }));
    expectOllamaError(raw.json, /content/);
    expect(raw.headers.get('x-should-retry')).toBe('false');
    expect([...server.service.ctx.sessions.list()]).toHaveLength(0);
  });

  it('answers a wrong method with 405', async () => {
    const server = await start();
    for (const [method, path, allow] of [
      ['GET', '/api/chat', 'POST'],
      ['PUT', '/api/chat', 'POST'],
      ['POST', '/api/tags', 'GET, HEAD'],
    ] as const) {
      const response = await fetch(`${server.url}${path}`, { method, ...(method === 'GET' ? {} : { headers: { 'content-type': 'application/json' }, body: '{}' }) });
      expect(response.status).toBe(405);
      expect(response.headers.get('allow')).toBe(allow);
      expectOllamaError(await response.json(), /not allowed/);
    }
  });

  it('ends a held stream that times out with an error line the client throws', async () => {
    const server = await start({ handshakeTimeoutSeconds: '5', turnTimeoutSeconds: '30', streamTurnTimeoutSeconds: '0.3', keepaliveIntervalSeconds: '0.05' });
    const session = uniqueId('oll-timeout');
    const ollama = client(server);
    const handshake = ollama.chat({ model: session, messages: [{ role: 'user', content: 'ping' }], stream: false });
    await untilHeld(server, session, 'A');
    const stream = await ollama.chat({ model: session, messages: [{ role: 'user', content: 'b1' }], stream: true });
    expect((await handshake).message.content).toBe('b1');
    const err = await streamError(stream);
    expect(err.message).toMatch(/turn timeout/);

    // The same wait, read raw: keep-alive lines, then one {"error": …} line.
    const raw = await fetch(`${server.url}/api/chat`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: `${session}|B`, messages: [{ role: 'user', content: 'b2' }] }),
    });
    const lines = ndjson(await raw.text());
    expect(Object.keys(lines[lines.length - 1])).toEqual(['error']);
    expect(lines[lines.length - 1].error).toMatch(/turn timeout/);
    expect(lines.slice(0, -1).every((l) => l.done === false && l.message.content === '')).toBe(true);
  });
});

describe('chat UI background requests on /api/chat', () => {
  it('answers Open WebUI’s title prompt itself (as Open WebUI sends it to an Ollama connection), creating no session', async () => {
    const server = await start();
    const prompt = [
      '### Task:',
      'Generate a concise, 3-5 word title with an emoji summarizing the chat history.',
      '### Output:',
      'JSON format: { "title": "your concise title here" }',
      '### Chat History:',
      '<chat_history>',
      'USER: Tell me about the dragon in the north tower',
      'ASSISTANT: It sleeps on a pile of gold.',
      '</chat_history>',
    ].join('\n');
    const session = uniqueId('oll-owui');
    const reply = await client(server).chat({ model: session, messages: [{ role: 'user', content: prompt }], stream: false });
    expect(reply.model).toBe(session);
    expect(reply.done).toBe(true);
    expect(typeof (JSON.parse(reply.message.content) as { title: unknown }).title).toBe('string');
    expect(server.service.ctx.sessions.get(session)).toBeUndefined();
  });
});

describe('Ollama API keys', () => {
  it('accepts the key the client sends in its headers, and refuses a missing or wrong one with 401 {"error"}', async () => {
    const server = await start({ apiKeys: 'oll-secret' });
    const session = uniqueId('oll-key');
    const ollama = new Ollama({ host: server.url, headers: { Authorization: 'Bearer oll-secret' } });
    const held = ollama.chat({ model: session, messages: [{ role: 'user', content: 'ping' }], stream: false });
    await untilHeld(server, session, 'A');
    const join = ollama.chat({ model: session, messages: [{ role: 'user', content: 'b1' }], stream: false });
    expect((await held).message.content).toBe('b1');
    for (const keyless of [client(server), new Ollama({ host: server.url, headers: { Authorization: 'Bearer wrong' } })]) {
      const err = await ollamaError(keyless.chat({ model: session, messages: [{ role: 'user', content: 'x' }], stream: false }));
      expect(err.status_code).toBe(401);
      expect(err.message).toMatch(/API key/);
      expect((await ollamaError(keyless.list())).status_code).toBe(401);
    }
    expect((await ollama.list()).models).toEqual([]);
    await untilHeld(server, session, 'B');
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE', headers: { authorization: 'Bearer oll-secret' } });
    expect((await ollamaError(join)).status_code).toBe(410);
  });
});

describe('GET /api/tags', () => {
  it('lists the sessions waiting for a peer in Ollama’s shape, and joining by the listed name pairs', async () => {
    const server = await start();
    const session = uniqueId('oll-tags');
    const ollama = client(server);
    expect((await ollama.list()).models).toEqual([]);
    const held = ollama.chat({ model: session, messages: [{ role: 'user', content: 'anyone?' }], stream: false });
    await untilHeld(server, session, 'A');
    const { models } = await ollama.list();
    expect(models).toEqual([
      {
        name: session,
        model: session,
        modified_at: expect.any(String),
        size: 0,
        digest: expect.stringMatching(/^[0-9a-f]{64}$/),
        details: expect.objectContaining({ format: expect.any(String), family: expect.any(String), families: expect.any(Array) }),
      },
    ]);
    expect(Number.isNaN(Date.parse(String(models[0]!.modified_at)))).toBe(false);
    const join = ollama.chat({ model: models[0]!.name, messages: [{ role: 'user', content: 'Here I am.' }], stream: false });
    expect((await held).message.content).toBe('Here I am.');
    // Paired now: no longer joinable.
    expect((await ollama.list()).models).toEqual([]);
    await untilHeld(server, session, 'B');
    join.catch(() => undefined); // handled below: its 410 may come before the DELETE's answer
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await ollamaError(join)).status_code).toBe(410);
  });
});
