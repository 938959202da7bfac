// Model routes as chat UIs and SDKs use them: lists name only sessions someone could join now
// (a side waiting or listening, or active within MODEL_LIST_WINDOW_SECONDS), never one whose
// client left long ago; retrieving one model works for any id in every API's own shape (OpenAI
// and Anthropic share /v1/models/{id}, told apart by Anthropic's version header); with API keys a
// caller sees only its own sessions.
import Anthropic from '@anthropic-ai/sdk';
import { GoogleGenAI } from '@google/genai';
import { Ollama } from 'ollama';
import { describe, expect, it } from 'vitest';
import type { TestServer } from '../helpers/server.js';
import { sleep, uniqueId, until, untilHeld, useServers } from './support.js';

const start = useServers();

async function openAIModels(server: TestServer, apiKey = 'test-key'): Promise<string[]> {
  const response = await fetch(`${server.url}/v1/models`, { headers: { authorization: `Bearer ${apiKey}` } });
  expect(response.status).toBe(200);
  return ((await response.json()) as { data: { id: string }[] }).data.map((m) => m.id);
}

describe('model lists offer live sessions only', () => {
  it('drops a waiting session once its client has been gone for MODEL_LIST_WINDOW_SECONDS', async () => {
    const server = await start({ modelListWindowSeconds: '0.4', handshakeTimeoutSeconds: '30' });
    const session = uniqueId('left');
    const abort = new AbortController();
    const waiting = server.client({ maxRetries: 0 }).chat.completions.create({ model: session, messages: [{ role: 'user', content: 'anyone?' }] }, { signal: abort.signal });
    waiting.catch(() => undefined);
    await untilHeld(server, session, 'A');
    expect(await openAIModels(server)).toEqual([session]);

    abort.abort(); // the client leaves: the session stays (nothing is lost) but soon is not offered
    await until(() => server.service.ctx.sessions.get(session)?.context.sides.A.held === null, 'the wait ended');
    expect(await openAIModels(server)).toEqual([session]); // within the window
    await sleep(600);
    expect(server.service.ctx.sessions.get(session)).toBeDefined();
    expect(await openAIModels(server)).toEqual([]);

    // It comes back as soon as a side waits again.
    const again = server.client({ maxRetries: 0 }).chat.completions.create({ model: session, messages: [{ role: 'user', content: 'anyone?' }] });
    again.catch(() => undefined);
    await untilHeld(server, session, 'A');
    expect(await openAIModels(server)).toEqual([session]);
  });

  it('with API keys, lists only the sessions the caller\'s key joined', async () => {
    const server = await start({ apiKeys: 'key-one,key-two' });
    const mine = uniqueId('mine');
    const client = (apiKey: string) => new (server.client().constructor as typeof import('openai').default)({ baseURL: `${server.url}/v1`, apiKey, maxRetries: 0 });
    const held = client('key-one').chat.completions.create({ model: mine, messages: [{ role: 'user', content: 'anyone?' }] });
    held.catch(() => undefined);
    await untilHeld(server, mine, 'A');
    expect(await openAIModels(server, 'key-one')).toEqual([mine]);
    expect(await openAIModels(server, 'key-two')).toEqual([]);
    // Retrieving does not tell another key that the session exists either.
    const retrieved = await client('key-two').models.retrieve(mine);
    expect(retrieved.id).toBe(mine);
    expect(Math.abs(retrieved.created - Date.now() / 1000)).toBeLessThan(5);
  });
});

describe('retrieving one model', () => {
  it('OpenAI SDK: models.retrieve(id) for a live session and for an id not in use yet', async () => {
    const server = await start();
    const session = uniqueId('retrieve');
    const client = server.client({ maxRetries: 0 });
    const fresh = await client.models.retrieve(`${session}-new`);
    expect(fresh).toMatchObject({ id: `${session}-new`, object: 'model', owned_by: 'motive-proxy' });
    const held = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'anyone?' }] });
    held.catch(() => undefined);
    await untilHeld(server, session, 'A');
    const startedAt = server.service.ctx.sessions.get(session)!.context.transcript[0]!.at;
    expect(await client.models.retrieve(session)).toEqual({ id: session, object: 'model', created: Math.floor(startedAt / 1000), owned_by: 'motive-proxy' });
    expect((await client.models.retrieve(`${session}|B`)).id).toBe(`${session}|B`);
    const empty = await fetch(`${server.url}/v1/models/`);
    expect(empty.status).toBe(200); // the list (a trailing slash is the same route)
    const post = await fetch(`${server.url}/v1/models/${session}`, { method: 'POST' });
    expect(post.status).toBe(405);
  });

  it('Anthropic SDK: models.list() and models.retrieve(id) in Anthropic\'s shapes on the same routes', async () => {
    const server = await start();
    const session = uniqueId('anthropic-models');
    const anthropic = new Anthropic({ baseURL: server.url, apiKey: 'unused', maxRetries: 0 });
    const held = anthropic.messages.create({ model: session, max_tokens: 10, messages: [{ role: 'user', content: 'anyone?' }] });
    held.catch(() => undefined);
    await untilHeld(server, session, 'A');
    const listed = [];
    for await (const model of anthropic.models.list()) listed.push(model);
    expect(listed).toEqual([expect.objectContaining({ type: 'model', id: session, display_name: session, created_at: expect.any(String) })]);
    const info = await anthropic.models.retrieve(session);
    expect(info).toMatchObject({ type: 'model', id: session, lifecycle: 'active' });
    expect(Number.isNaN(Date.parse(info.created_at))).toBe(false);
    // Without Anthropic's header the same route answers in OpenAI's shape.
    expect(await openAIModels(server)).toEqual([session]);
  });

  it('Gemini SDK: models.get({ model }) answers a Model', async () => {
    const server = await start();
    const session = uniqueId('gem-get');
    const ai = new GoogleGenAI({ apiKey: 'unused', httpOptions: { baseUrl: server.url } });
    const model = await ai.models.get({ model: session });
    expect(model.name).toBe(`models/${session}`);
    expect(model.supportedActions).toEqual(['generateContent', 'streamGenerateContent']);
    // The chat route on the same path still takes POST.
    const held = ai.models.generateContent({ model: session, contents: 'anyone?' });
    held.catch(() => undefined);
    await untilHeld(server, session, 'A');
  });

  it('Ollama client: show({ model }) describes a session', async () => {
    const server = await start();
    const session = uniqueId('oll-show');
    const ollama = new Ollama({ host: server.url });
    const shown = await ollama.show({ model: session });
    expect(shown.capabilities).toEqual(['completion']);
    expect(shown.details.family).toBe('motive-proxy');
    const missing = await fetch(`${server.url}/api/show`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(missing.status).toBe(422);
    expect(((await missing.json()) as { error: string }).error).toMatch(/model/);
  });
});
