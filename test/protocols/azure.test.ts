// Proves the Azure-style OpenAI adapter (PROTOCOL.md §6) with the openai SDK's AzureOpenAI
// client against a real listening server: POST
// /openai/deployments/{deployment}/chat/completions?api-version=… names the session by its
// deployment, pairs two clients exactly as the OpenAI route does (full histories, byte-exact,
// system prompts kept in the transcript, held streams with keep-alives), mixes with plain
// OpenAI sides, and answers every refusal in OpenAI's error shape.
import { AzureOpenAI } from 'openai';
import { describe, expect, it } from 'vitest';
import type { TestServer } from '../helpers/server.js';
import { Participant, apiError, expectOpenAIError, rawPost, sleep, uniqueId, untilHeld, useServers, converse, DUEL, SCRIPT } from '../http/support.js';

const start = useServers();

/** What the AzureOpenAI client sends, request by request. */
interface Seen {
  url: string;
  headers: Headers;
}

function azure(server: TestServer, deployment: string, seen: Seen[] = [], maxRetries = 2): AzureOpenAI {
  const recording: typeof fetch = async (input, init) => {
    seen.push({ url: String(input), headers: new Headers(init?.headers) });
    return fetch(input, init);
  };
  return new AzureOpenAI({ endpoint: server.url, apiKey: 'azure-key', apiVersion: '2024-10-21', deployment, maxRetries, fetch: recording });
}

const { fromA: FROM_A, fromB: FROM_B } = SCRIPT;

describe('an Azure-style conversation with full histories', () => {
  for (const stream of [false, true]) {
    it(`delivers every turn byte-exact, in order, both sides on AzureOpenAI (stream: ${stream})`, async () => {
      const server = await start(stream ? { keepaliveIntervalSeconds: '0.05' } : {});
      const session = uniqueId('az-conv');
      const seen: Seen[] = [];
      const client = azure(server, session, seen);
      // The body's model is what an Azure user often passes (the underlying model): ignored.
      const a = new Participant(client, 'gpt-4o', { stream });
      const b = new Participant(client, 'gpt-4o', { stream, system: 'You are the dungeon master.' });

      const { held: pendingA } = await converse(server, session, a, b, SCRIPT);

      expect(a.history.filter((m) => m.role === 'assistant').map((m) => m.content)).toEqual(FROM_B);
      expect(b.history.filter((m) => m.role === 'assistant').map((m) => m.content)).toEqual(FROM_A);
      const transcript = server.service.ctx.sessions.get(session)!.context.transcript;
      expect(transcript.filter((e) => e.kind === 'system').map((e) => [e.side, e.content])).toEqual([['B', 'You are the dungeon master.']]);

      // The client really spoke Azure: deployment path, api-version, api-key header.
      for (const request of seen) {
        const url = new URL(request.url);
        expect(url.pathname).toBe(`/openai/deployments/${session}/chat/completions`);
        expect(url.searchParams.get('api-version')).toBe('2024-10-21');
        expect(request.headers.get('api-key')).toBe('azure-key');
        expect(request.headers.get('authorization')).toBeNull();
      }

      if (stream) {
        for (const chunks of [...a.chunks, ...b.chunks]) {
          expect(chunks[0]!.choices[0]!.delta.role).toBe('assistant');
          expect(chunks.some((c) => c.choices[0]?.finish_reason === 'stop')).toBe(true);
          expect(chunks[chunks.length - 1]!.usage?.total_tokens).toBeGreaterThan(0);
          for (const c of chunks) {
            expect(c.object).toBe('chat.completion.chunk');
            expect(c.model).toBe(session); // the deployment, as sent
          }
        }
        expect(a.chunks).toHaveLength(FROM_B.length);
      } else {
        for (const c of [...a.completions, ...b.completions]) {
          expect(c.id).toMatch(/^chatcmpl-/);
          expect(c.object).toBe('chat.completion');
          expect(c.model).toBe(session);
          expect(c.choices[0]!.message.role).toBe('assistant');
          expect(c.choices[0]!.finish_reason).toBe('stop');
          expect(c.usage!.total_tokens).toBe(c.usage!.prompt_tokens + c.usage!.completion_tokens);
        }
        expect(a.completions).toHaveLength(FROM_B.length);
      }

      const ended = apiError(pendingA);
      expect((await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' })).status).toBe(200);
      const err = await ended;
      // A held stream ends with the in-stream error event (no status: the headers said 200).
      expect(err.status).toBe(stream ? undefined : 410);
      expect(err.code).toBe('session_closed');
    });
  }

  it('takes the side from a `|A` / `|B` suffix on the deployment (percent-encoded too) and echoes it', async () => {
    const server = await start();
    const session = uniqueId('az side');
    const forB = azure(server, `${session}|B`).chat.completions.create({ model: '', messages: [{ role: 'user', content: 'B first.' }] });
    await untilHeld(server, session, 'B');
    const raw = await rawPost(
      server,
      `/openai/deployments/${encodeURIComponent(`${session}|A`)}/chat/completions?api-version=2024-10-21`,
      JSON.stringify({ messages: [{ role: 'user', content: 'handshake' }] }),
      { 'content-type': 'application/json', 'api-key': 'k' },
    );
    expect(raw.status).toBe(200);
    expect(raw.json.model).toBe(`${session}|A`);
    expect(raw.json.choices[0].message.content).toBe('B first.');
    const next = azure(server, `${session}|A`).chat.completions.create({
      model: 'ignored',
      messages: [
        { role: 'user', content: 'handshake' },
        { role: 'assistant', content: 'B first.' },
        { role: 'user', content: 'A second.' },
      ],
    });
    const answer = await forB;
    expect(answer.choices[0]!.message.content).toBe('A second.');
    expect(answer.model).toBe(`${session}|B`);
    // Listen for the held request's end before ending the session: its 410 may come first.
    const ended = apiError(next);
    await fetch(`${server.url}/v1/sessions/${encodeURIComponent(session)}`, { method: 'DELETE' });
    expect((await ended).status).toBe(410);
  });
});

describe('Azure-style streaming', () => {
  it('holds a stream with keep-alive comments, then delivers the chunks and [DONE]', async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.05' });
    const session = uniqueId('az-sse');
    const response = await fetch(`${server.url}/openai/deployments/${session}/chat/completions?api-version=2024-10-21`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'api-key': 'k' },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'ping' }], stream: true }),
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    let text = '';
    const decoder = new TextDecoder();
    const reader = response.body!.getReader();
    const done = (async () => {
      for (;;) {
        const { value, done: finished } = await reader.read();
        if (finished) return text;
        text += decoder.decode(value, { stream: true });
      }
    })();
    await sleep(300);
    expect((text.match(/^: keep-alive\n\n/gm) ?? []).length).toBeGreaterThanOrEqual(2);
    expect(text.replaceAll(': keep-alive\n\n', '')).toBe('');

    const forB = azure(server, session).chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'Hello, Azure.' }] });
    const frames = (await done).split('\n\n').filter((f) => f.startsWith('data: ')).map((f) => f.slice(6));
    expect(frames[frames.length - 1]).toBe('[DONE]');
    const chunks = frames.slice(0, -1).map((f) => JSON.parse(f));
    expect(chunks.map((c) => c.choices[0].delta.content ?? '').join('')).toBe('Hello, Azure.');
    expect(chunks.every((c) => c.model === session && c.object === 'chat.completion.chunk')).toBe(true);
    await untilHeld(server, session, 'B');
    // Listen for the held request's end before ending the session: its 410 may come first.
    const ended = apiError(forB);
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await ended).status).toBe(410);
  });
});

describe('Azure-style paired with OpenAI', () => {
  it('pairs an Azure side A with a plain OpenAI side B on the same session id', async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.05' });
    const session = uniqueId('az-x');
    const a = new Participant(azure(server, session), 'gpt-4o', { stream: true, system: 'You play the knight.' });
    const b = new Participant(server.client(), session, { system: 'You play the dragon.' });

    const { held: pendingA } = await converse(server, session, a, b, DUEL);
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

describe('Azure-style API keys', () => {
  it('accepts the api-key header the client sends, and refuses a missing or wrong one with 401 in OpenAI shape', async () => {
    const server = await start({ apiKeys: 'azure-key' });
    const session = uniqueId('az-key');
    const client = azure(server, session);
    const held = client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'ping' }] });
    await untilHeld(server, session, 'A');
    const join = client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'b1' }] });
    expect((await held).choices[0]!.message.content).toBe('b1');
    const wrong = await apiError(
      new AzureOpenAI({ endpoint: server.url, apiKey: 'wrong', apiVersion: '2024-10-21', deployment: session, maxRetries: 0 }).chat.completions.create({
        model: 'gpt-4o',
        messages: [{ role: 'user', content: 'x' }],
      }),
    );
    expect(wrong.status).toBe(401);
    expectOpenAIError({ error: wrong.error }, 'invalid_api_key');
    const none = await rawPost(server, `/openai/deployments/${session}/chat/completions?api-version=2024-10-21`, JSON.stringify({ messages: [{ role: 'user', content: 'x' }] }));
    expect(none.status).toBe(401);
    expectOpenAIError(none.json, 'invalid_api_key');
    await untilHeld(server, session, 'B');
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE', headers: { 'api-key': 'azure-key' } });
    expect((await apiError(join)).status).toBe(410);
  });
});

describe('Azure-style errors, in OpenAI shape', () => {
  const path = (deployment: string) => `/openai/deployments/${deployment}/chat/completions?api-version=2024-10-21`;

  it('answers invalid JSON with 400', async () => {
    const server = await start();
    const response = await rawPost(server, path(uniqueId('az-e')), '{"messages": [');
    expect(response.status).toBe(400);
    expectOpenAIError(response.json, 'invalid_json');
    expect(response.headers.get('x-should-retry')).toBe('false');
  });

  it('answers missing or empty messages and empty content with 422, once (no SDK retry)', async () => {
    const server = await start();
    const cases: Array<[Record<string, unknown>, string, string | null]> = [
      [{}, 'messages', 'messages'],
      [{ messages: [] }, 'empty', 'messages'],
      [{ messages: [{ role: 'user', content: ' ' }] }, 'content', 'messages.0.content'],
      [{ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://example.com/x.png' } }] }] }, 'content', 'messages.0.content'],
    ];
    for (const [body, word, param] of cases) {
      const seen: Seen[] = [];
      const err = await apiError(azure(server, uniqueId('az-e'), seen).chat.completions.create({ model: 'gpt-4o', ...body } as never));
      expect(err.status).toBe(422);
      expectOpenAIError({ error: err.error }, 'invalid_request');
      expect(err.message).toContain(word);
      expect(err.param).toBe(param);
      expect(seen).toHaveLength(1);
    }
    expect([...server.service.ctx.sessions.list()]).toHaveLength(0);
  });

  it('answers a wrong method with 405 and Allow: POST', async () => {
    const server = await start();
    for (const method of ['GET', 'PUT', 'DELETE']) {
      const response = await fetch(`${server.url}${path(uniqueId('az-e'))}`, { method });
      expect(response.status).toBe(405);
      expect(response.headers.get('allow')).toBe('POST');
      expectOpenAIError(await response.json(), 'method_not_allowed');
    }
  });

  it('ends a held stream that times out with an in-stream turn_timeout error', async () => {
    const server = await start({ handshakeTimeoutSeconds: '5', turnTimeoutSeconds: '30', streamTurnTimeoutSeconds: '0.3', keepaliveIntervalSeconds: '0.05' });
    const session = uniqueId('az-timeout');
    const client = azure(server, session, [], 0);
    const handshake = client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'ping' }] });
    await untilHeld(server, session, 'A');
    const stream = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'b1' }], stream: true });
    expect((await handshake).choices[0]!.message.content).toBe('b1');
    const err = await apiError(
      (async () => {
        for await (const _chunk of stream) {
          // keep-alives only
        }
      })(),
    );
    expect(err.code).toBe('turn_timeout');
    expect(err.message).toMatch(/turn timeout/);
  });
});
