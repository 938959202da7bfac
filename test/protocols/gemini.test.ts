// Proves the Google Gemini adapter (PROTOCOL.md §6) with the official @google/genai SDK against
// a real listening server: POST /v1beta/models/{session}:generateContent and
// :streamGenerateContent?alt=sse pair two clients exactly as the OpenAI route does (A's
// handshake held, byte-exact deliveries, full `contents` histories re-sent, system
// instructions kept in the transcript), held streams carry SSE keep-alive comments the SDK
// skips, sides may mix protocols, and every refusal comes in Google's error shape
// {"error":{"code","message","status"}} — in-stream as a `data:` frame the SDK raises.
import { ApiError, GoogleGenAI, type Content, type GenerateContentResponse } from '@google/genai';
import { describe, expect, it } from 'vitest';
import type { TestServer } from '../helpers/server.js';
import { Participant, rawPost, sleep, uniqueId, untilHeld, useServers, converse, DUEL, SCRIPT } from '../http/support.js';

const start = useServers();

const genai = (server: TestServer): GoogleGenAI => new GoogleGenAI({ apiKey: 'test-key', httpOptions: { baseUrl: server.url } });

/** A Gemini chat client: keeps its `contents` and re-sends all of them with every call. */
class GeminiParticipant {
  readonly contents: Content[] = [];
  readonly responses: GenerateContentResponse[] = [];
  readonly chunks: GenerateContentResponse[][] = [];

  constructor(
    private readonly ai: GoogleGenAI,
    readonly model: string,
    private readonly options: { stream?: boolean; systemInstruction?: string } = {},
  ) {}

  async say(text: string): Promise<string> {
    this.contents.push({ role: 'user', parts: [{ text }] });
    const request = {
      model: this.model,
      contents: structuredClone(this.contents),
      config: this.options.systemInstruction ? { systemInstruction: this.options.systemInstruction, temperature: 0.2 } : {},
    };
    let reply = '';
    if (this.options.stream) {
      const chunks: GenerateContentResponse[] = [];
      for await (const chunk of await this.ai.models.generateContentStream(request)) {
        chunks.push(chunk);
        reply += chunk.text ?? '';
      }
      this.chunks.push(chunks);
    } else {
      const response = await this.ai.models.generateContent(request);
      this.responses.push(response);
      reply = response.text ?? '';
    }
    this.contents.push({ role: 'model', parts: [{ text: reply }] });
    return reply;
  }

  replies(): string[] {
    return this.contents.filter((c) => c.role === 'model').map((c) => c.parts![0]!.text!);
  }
}

/** Awaits a call that must fail with the SDK's ApiError; returns it with its parsed Google error body. */
async function geminiError(call: Promise<unknown>): Promise<{ status: number; body: any; message: string }> {
  try {
    await call;
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    const json = err.message.slice(err.message.indexOf('{'));
    return { status: err.status, body: JSON.parse(json), message: err.message };
  }
  throw new Error('expected the call to fail with an ApiError');
}

/** Google's error body, naming what was wrong, with the contract's code as the ErrorInfo reason. */
function expectGoogleError(body: any, status: number, googleStatus: string, code: string): void {
  expect(body).toEqual({
    error: {
      code: status,
      message: expect.any(String),
      status: googleStatus,
      details: [{ '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: code.toUpperCase(), domain: 'motive-proxy', metadata: expect.objectContaining({ code }) }],
    },
  });
  expect(body.error.message.length).toBeGreaterThan(10);
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

const dataFrames = (sse: string): any[] =>
  sse
    .split('\n\n')
    .filter((frame) => frame.startsWith('data: '))
    .map((frame) => JSON.parse(frame.slice('data: '.length)));

const { fromA: FROM_A, fromB: FROM_B } = SCRIPT;

describe('a Gemini conversation with full histories', () => {
  for (const stream of [false, true]) {
    it(`delivers every turn byte-exact, in order, both sides on Gemini (stream: ${stream})`, async () => {
      const server = await start(stream ? { keepaliveIntervalSeconds: '0.05' } : {});
      const session = uniqueId('gem-conv');
      const ai = genai(server);
      const a = new GeminiParticipant(ai, session, { stream });
      const b = new GeminiParticipant(ai, session, { stream, systemInstruction: 'You are the dungeon master.' });

      const { held: pendingA } = await converse(server, session, a, b, SCRIPT);

      expect(a.replies()).toEqual(FROM_B);
      expect(b.replies()).toEqual(FROM_A);
      // B's systemInstruction is kept in the transcript, never delivered to A.
      const transcript = server.service.ctx.sessions.get(session)!.context.transcript;
      expect(transcript.filter((e) => e.kind === 'system').map((e) => [e.side, e.content])).toEqual([['B', 'You are the dungeon master.']]);
      expect(a.replies().some((r) => r.includes('dungeon master'))).toBe(false);

      if (stream) {
        for (const chunks of [...a.chunks, ...b.chunks]) {
          const last = chunks[chunks.length - 1]!;
          expect(last.candidates![0]!.finishReason).toBe('STOP');
          expect(last.usageMetadata!.candidatesTokenCount).toBeGreaterThan(0);
          expect(last.usageMetadata!.totalTokenCount).toBe(last.usageMetadata!.promptTokenCount! + last.usageMetadata!.candidatesTokenCount!);
          for (const c of chunks) {
            expect(c.modelVersion).toBe(session);
            expect(c.responseId).toBe(chunks[0]!.responseId);
            expect(c.candidates![0]!.content!.role).toBe('model');
          }
          expect(chunks.slice(0, -1).every((c) => c.candidates![0]!.finishReason === undefined)).toBe(true);
        }
        expect(a.chunks).toHaveLength(FROM_B.length);
      } else {
        for (const r of [...a.responses, ...b.responses]) {
          expect(r.candidates).toHaveLength(1);
          expect(r.candidates![0]!.finishReason).toBe('STOP');
          expect(r.candidates![0]!.index).toBe(0);
          expect(r.candidates![0]!.content!.role).toBe('model');
          expect(r.modelVersion).toBe(session);
          expect(r.responseId).toMatch(/^[A-Za-z0-9_-]{20,}$/);
          expect(r.usageMetadata!.totalTokenCount).toBe(r.usageMetadata!.promptTokenCount! + r.usageMetadata!.candidatesTokenCount!);
        }
        expect(new Set(a.responses.map((r) => r.responseId)).size).toBe(a.responses.length);
        expect(a.responses).toHaveLength(FROM_B.length);
      }

      // A's last request is still held; ending the session answers it with 410 in Google's shape.
      const ended = geminiError(pendingA);
      expect((await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' })).status).toBe(200);
      const err = await ended;
      expect(err.status).toBe(410);
      expectGoogleError(err.body, 410, 'ABORTED', 'session_closed');
    });
  }

  it('takes the side from a `|A` / `|B` suffix in the path, percent-encoded or not, and echoes the model as sent', async () => {
    const server = await start();
    const session = uniqueId('gem side');
    const ai = genai(server);
    // B first: the explicit side needs no order.
    const forB = ai.models.generateContent({ model: `${session}|B`, contents: [{ role: 'user', parts: [{ text: 'B opens.' }] }] });
    await untilHeld(server, session, 'B');
    const raw = await rawPost(
      server,
      `/v1beta/models/${encodeURIComponent(`${session}|A`)}:generateContent?key=test-key`,
      JSON.stringify({ contents: [{ parts: [{ text: 'handshake' }] }] }),
    );
    expect(raw.status).toBe(200);
    expect(raw.json.candidates[0].content).toEqual({ role: 'model', parts: [{ text: 'B opens.' }] });
    expect(raw.json.modelVersion).toBe(`${session}|A`);
    // A's next turn (snake_case system_instruction, as in Google's curl examples) answers B.
    const next = rawPost(
      server,
      `/v1beta/models/${encodeURIComponent(`${session}|A`)}:generateContent`,
      JSON.stringify({
        system_instruction: { parts: [{ text: 'Be brief.' }] },
        contents: [
          { role: 'user', parts: [{ text: 'handshake' }] },
          { role: 'model', parts: [{ text: 'B opens.' }] },
          { role: 'user', parts: [{ text: 'A, ' }, { inlineData: { mimeType: 'image/png', data: 'AAAA' } }, { text: 'answering.' }] },
        ],
        generationConfig: { temperature: 0.1, maxOutputTokens: 10 },
        safetySettings: [],
      }),
      { 'content-type': 'application/json', 'x-goog-api-key': 'test-key' },
    );
    const answer = await forB;
    expect(answer.text).toBe('A, answering.');
    expect(answer.modelVersion).toBe(`${session}|B`);
    const transcript = server.service.ctx.sessions.get(session)!.context.transcript;
    expect(transcript.find((e) => e.kind === 'system')).toMatchObject({ side: 'A', content: 'Be brief.' });
    await fetch(`${server.url}/v1/sessions/${encodeURIComponent(session)}`, { method: 'DELETE' });
    expect((await next).status).toBe(410);
  });
});

describe('Gemini streaming', () => {
  it('sends headers at once, `: keep-alive` comments while held, then GenerateContentResponse chunks', async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.05' });
    const session = uniqueId('gem-sse');
    const sentAt = Date.now();
    const response = await fetch(`${server.url}/v1beta/models/${session}:streamGenerateContent?alt=sse`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'ping' }] }] }),
    });
    expect(Date.now() - sentAt).toBeLessThan(1000);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const body = readBody(response);
    await sleep(300);
    const held = body.text();
    expect((held.match(/^: keep-alive\n\n/gm) ?? []).length).toBeGreaterThanOrEqual(2);
    expect(held.replaceAll(': keep-alive\n\n', '')).toBe('');

    const ai = genai(server);
    const forB = ai.models.generateContent({ model: session, contents: 'Hello, streaming world.\nSecond line.' });
    const frames = dataFrames(await body.done);
    expect(frames.length).toBeGreaterThanOrEqual(2);
    expect(frames.map((f) => f.candidates[0].content.parts.map((p: { text: string }) => p.text).join('')).join('')).toBe('Hello, streaming world.\nSecond line.');
    const last = frames[frames.length - 1];
    expect(last.candidates[0].finishReason).toBe('STOP');
    expect(frames.slice(0, -1).every((f) => f.candidates[0].finishReason === undefined)).toBe(true);
    expect(last.usageMetadata).toMatchObject({ promptTokenCount: expect.any(Number), candidatesTokenCount: expect.any(Number), totalTokenCount: expect.any(Number) });
    for (const f of frames) {
      expect(f.modelVersion).toBe(session);
      expect(f.responseId).toBe(frames[0].responseId);
      expect(f.candidates[0].content.role).toBe('model');
      expect(f.candidates[0].index).toBe(0);
    }
    // B's plain request is held in turn; the session's end answers it.
    await untilHeld(server, session, 'B');
    // Listen for the held request's end before ending the session: its 410 may come first.
    const ended = geminiError(forB);
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await ended).status).toBe(410);
  });

  it('lets the SDK iterate a stream that was held with keep-alives', async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.05' });
    const session = uniqueId('gem-sdk-stream');
    const ai = genai(server);
    const stream = await ai.models.generateContentStream({ model: session, contents: 'ping' });
    // The SDK call resolved while held: headers came at once.
    await untilHeld(server, session, 'A');
    await sleep(200); // several keep-alives go by
    const text = 'A long line '.repeat(300) + '— and the end. ✓';
    const forB = ai.models.generateContent({ model: session, contents: text });
    let assembled = '';
    let finish: string | undefined;
    for await (const chunk of stream) {
      assembled += chunk.text ?? '';
      finish = chunk.candidates?.[0]?.finishReason ?? finish;
    }
    expect(assembled).toBe(text);
    expect(finish).toBe('STOP');
    await untilHeld(server, session, 'B');
    // Listen for the held request's end before ending the session: its 410 may come first.
    const ended = geminiError(forB);
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await ended).status).toBe(410);
  });
});

describe('Gemini paired with OpenAI', () => {
  it('pairs a Gemini side A with an OpenAI side B, both re-sending full histories', async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.05' });
    const session = uniqueId('gem-x');
    const a = new GeminiParticipant(genai(server), session, { stream: true, systemInstruction: 'You play the knight.' });
    const b = new Participant(server.client(), session, { system: 'You play the dragon.' });

    const { held: pendingA } = await converse(server, session, a, b, DUEL);

    expect(a.replies()).toEqual(['ROAR. Who dares?', 'Then draw your sword.\n\n']);
    expect(b.history.filter((m) => m.role === 'assistant').map((m) => m.content)).toEqual(['Sir Gawain, 🛡️ at your service.', 'I do.']);
    const system = server.service.ctx.sessions.get(session)!.context.transcript.filter((e) => e.kind === 'system');
    expect(system.map((e) => [e.side, e.content])).toEqual([
      ['A', 'You play the knight.'],
      ['B', 'You play the dragon.'],
    ]);
    // A's stream is held for B's next turn; ending the session ends it with an in-stream 410.
    await untilHeld(server, session, 'A');
    const ending = geminiError(pendingA); // listening first: the in-stream 410 may come before the DELETE's answer
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    const ended = await ending;
    expect(ended.status).toBe(410);
    expect(ended.body.error.status).toBe('ABORTED');
  });
});

describe('Gemini errors, in Google shape', () => {
  it('answers invalid JSON with 400 INVALID_ARGUMENT', async () => {
    const server = await start();
    const response = await rawPost(server, `/v1beta/models/${uniqueId('gem-e')}:generateContent`, '{"contents": [');
    expect(response.status).toBe(400);
    expectGoogleError(response.json, 400, 'INVALID_ARGUMENT', 'invalid_json');
    expect(response.json.error.message).toMatch(/JSON/);
    expect(response.headers.get('x-should-retry')).toBe('false');
  });

  it('answers missing contents, empty contents and text-less content with 422, naming the field', async () => {
    const server = await start();
    const path = `/v1beta/models/${uniqueId('gem-e')}:generateContent`;
    const missing = await rawPost(server, path, JSON.stringify({ generationConfig: {} }));
    expect(missing.status).toBe(422);
    expectGoogleError(missing.json, 422, 'INVALID_ARGUMENT', 'invalid_request');
    expect(missing.json.error.message).toMatch(/contents/);
    const empty = await rawPost(server, path, JSON.stringify({ contents: [] }));
    expect(empty.status).toBe(422);
    expect(empty.json.error.message).toMatch(/contents must not be empty/);
    const noParts = await rawPost(server, path, JSON.stringify({ contents: [{ role: 'user' }] }));
    expect(noParts.status).toBe(422);
    expect(noParts.json.error.message).toMatch(/parts/);

    const ai = genai(server);
    for (const parts of [[{ text: '   \n' }], [{ inlineData: { mimeType: 'image/png', data: 'AAAA' } }], [{ text: 'thinking…', thought: true }]]) {
      const err = await geminiError(ai.models.generateContent({ model: uniqueId('gem-e'), contents: [{ role: 'user', parts }] }));
      expect(err.status).toBe(422);
      expectGoogleError(err.body, 422, 'INVALID_ARGUMENT', 'invalid_request');
      expect(err.body.error.message).toMatch(/text/);
      expect(err.body.error.details[0].metadata.param).toBe('contents.0.parts');
    }
    // Nothing of it reached a session.
    expect([...server.service.ctx.sessions.list()]).toHaveLength(0);
  });

  it('answers an unknown method with 404 NOT_FOUND (the SDK’s countTokens, a path without a method)', async () => {
    const server = await start();
    const ai = genai(server);
    const err = await geminiError(ai.models.countTokens({ model: uniqueId('gem-e'), contents: 'how many?' }));
    expect(err.status).toBe(404);
    expectGoogleError(err.body, 404, 'NOT_FOUND', 'not_found');
    expect(err.body.error.message).toMatch(/countTokens/);
    const bare = await rawPost(server, `/v1beta/models/${uniqueId('gem-e')}`, JSON.stringify({ contents: [{ parts: [{ text: 'hi' }] }] }));
    expect(bare.status).toBe(404);
    expectGoogleError(bare.json, 404, 'NOT_FOUND', 'not_found');
    const emptySession = await rawPost(server, '/v1beta/models/:generateContent', JSON.stringify({ contents: [{ parts: [{ text: 'hi' }] }] }));
    expect(emptySession.status).toBe(422);
    expect(emptySession.json.error.message).toMatch(/session/);
  });

  it('answers a wrong method with 405 and Allow: POST', async () => {
    const server = await start();
    for (const method of ['GET', 'PUT', 'DELETE']) {
      const response = await fetch(`${server.url}/v1beta/models/${uniqueId('gem-e')}:generateContent`, { method });
      expect(response.status).toBe(405);
      expect(response.headers.get('allow')).toBe('POST');
      expectGoogleError(await response.json(), 405, 'UNIMPLEMENTED', 'method_not_allowed');
    }
    const list = await fetch(`${server.url}/v1beta/models`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(list.status).toBe(405);
    expectGoogleError(await list.json(), 405, 'UNIMPLEMENTED', 'method_not_allowed');
  });

  it('ends a held stream that times out with an in-stream error the SDK raises as ApiError 408', async () => {
    const server = await start({ handshakeTimeoutSeconds: '5', turnTimeoutSeconds: '30', streamTurnTimeoutSeconds: '0.3', keepaliveIntervalSeconds: '0.05' });
    const session = uniqueId('gem-timeout');
    const ai = genai(server);
    const handshake = ai.models.generateContent({ model: session, contents: 'ping' });
    await untilHeld(server, session, 'A');
    const stream = await ai.models.generateContentStream({ model: session, contents: 'b1' });
    expect((await handshake).text).toBe('b1');
    const err = await geminiError(
      (async () => {
        for await (const _chunk of stream) {
          // no content is expected before the error
        }
      })(),
    );
    expect(err.status).toBe(408);
    expect(err.message).toMatch(/DEADLINE_EXCEEDED/);
    expectGoogleError(err.body, 408, 'DEADLINE_EXCEEDED', 'turn_timeout');
    expect(err.body.error.message).toMatch(/turn timeout/);
  });
});

describe('Gemini API keys', () => {
  it('accepts the key as x-goog-api-key (the SDK) or ?key=, and refuses a missing or wrong one with 401 UNAUTHENTICATED', async () => {
    const server = await start({ apiKeys: 'gem-secret' });
    const session = uniqueId('gem-key');
    const ai = new GoogleGenAI({ apiKey: 'gem-secret', httpOptions: { baseUrl: server.url } });
    const held = ai.models.generateContent({ model: session, contents: 'ping' });
    await untilHeld(server, session, 'A');
    const viaQuery = rawPost(server, `/v1beta/models/${session}:generateContent?key=gem-secret`, JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'b1' }] }] }));
    expect((await held).text).toBe('b1');

    const wrong = await geminiError(new GoogleGenAI({ apiKey: 'nope', httpOptions: { baseUrl: server.url } }).models.generateContent({ model: session, contents: 'x' }));
    expect(wrong.status).toBe(401);
    expectGoogleError(wrong.body, 401, 'UNAUTHENTICATED', 'invalid_api_key');
    const none = await rawPost(server, `/v1beta/models/${session}:generateContent`, JSON.stringify({ contents: [{ parts: [{ text: 'x' }] }] }));
    expect(none.status).toBe(401);
    expectGoogleError(none.json, 401, 'UNAUTHENTICATED', 'invalid_api_key');

    await untilHeld(server, session, 'B');
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE', headers: { authorization: 'Bearer gem-secret' } });
    expect((await viaQuery).status).toBe(410);
  });
});

describe('the Gemini model list', () => {
  it('lists the sessions waiting for a peer as models/{session} the SDK can call', async () => {
    const server = await start();
    const session = uniqueId('gem-list');
    const ai = genai(server);
    const held = ai.models.generateContent({ model: session, contents: 'anyone?' });
    await untilHeld(server, session, 'A');
    const listed = [];
    for await (const model of await ai.models.list()) listed.push(model);
    expect(listed.map((m) => m.name)).toEqual([`models/${session}`]);
    expect(listed[0]!.supportedActions).toEqual(['generateContent', 'streamGenerateContent']);
    // Joining by the listed name pairs with the waiting side.
    const join = ai.models.generateContent({ model: listed[0]!.name!, contents: 'Here I am.' });
    expect((await held).text).toBe('Here I am.');
    await untilHeld(server, session, 'B');
    // Listen for the held request's end before ending the session: its 410 may come first.
    const ended = geminiError(join);
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await ended).status).toBe(410);
  });
});
