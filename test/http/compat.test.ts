// Endpoints real clients call beside chat and models, through a real listening server and the
// clients' own SDKs: the Anthropic SDK's messages.countTokens, and Ollama's /api/version (Open
// WebUI's "Verify connection" of an Ollama connection) and /api/ps. None of them touches a session.
import Anthropic from '@anthropic-ai/sdk';
import { Ollama } from 'ollama';
import { describe, expect, it } from 'vitest';
import { anthropicError, uniqueId, untilHeld, useServers } from './support.js';

const start = useServers();

describe('Anthropic: count_tokens', () => {
  it('answers messages.countTokens with an estimate, and starts no session', async () => {
    const server = await start();
    const anthropic = new Anthropic({ baseURL: server.url, apiKey: 'unused', maxRetries: 0 });
    const session = uniqueId('count');
    const short = await anthropic.messages.countTokens({ model: session, messages: [{ role: 'user', content: 'Halt! Who goes there?' }] });
    expect(short).toEqual({ input_tokens: Math.ceil('Halt! Who goes there?'.length / 4) });
    // The system prompt, every message's text and the tools all count.
    const long = await anthropic.messages.countTokens({
      model: session,
      system: 'You are the gate guard of Kharn.',
      messages: [
        { role: 'user', content: 'Halt! Who goes there?' },
        { role: 'assistant', content: [{ type: 'text', text: 'A traveller from the south.' }] },
        { role: 'user', content: 'State your business.' },
      ],
      tools: [{ name: 'open_gate', description: 'Opens the gate', input_schema: { type: 'object', properties: {} } }],
    });
    expect(long.input_tokens).toBeGreaterThan(short.input_tokens + 20);
    expect(server.service.ctx.sessions.get(session)).toBeUndefined();
  });

  it('counts what messages.create then reports as usage.input_tokens, for any text and with tools', async () => {
    const server = await start();
    const anthropic = new Anthropic({ baseURL: server.url, apiKey: 'unused', maxRetries: 0 });
    const session = uniqueId('count-usage');
    const openai = server.client({ maxRetries: 0 });
    const handshake = openai.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'Стой! Кто идёт?' }] });
    await untilHeld(server, session, 'A');
    const body = {
      model: session,
      max_tokens: 1024,
      system: 'Ты стражник у ворот Харна. 門番です。',
      messages: [{ role: 'user' as const, content: 'Путник с юга 🐎, ищу ночлег.' }],
      tools: [{ name: 'open_gate', description: 'Открывает ворота', input_schema: { type: 'object' as const, properties: {} } }],
    };
    const counted = await anthropic.messages.countTokens(body);
    const reply = anthropic.messages.create(body);
    expect((await handshake).choices[0]!.message.content).toBe('Путник с юга 🐎, ищу ночлег.');
    const a1 = openai.chat.completions.create({
      model: session,
      messages: [{ role: 'user', content: 'Стой! Кто идёт?' }, { role: 'assistant', content: 'Путник с юга 🐎, ищу ночлег.' }, { role: 'user', content: 'Проходи.' }],
    });
    a1.catch(() => undefined);
    const created = await reply;
    expect(created.content).toEqual([{ type: 'text', text: 'Проходи.' }]);
    expect(created.usage.input_tokens).toBe(counted.input_tokens);
    // About four bytes a token: these are UTF-8 bytes, not UTF-16 characters.
    const bytes = Buffer.byteLength(body.system + body.messages[0]!.content + JSON.stringify(body.tools), 'utf8');
    expect(counted.input_tokens).toBe(Math.ceil(bytes / 4));
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
  });

  it('refuses a model that is not a string as the chat route does', async () => {
    const server = await start();
    const response = await fetch(`${server.url}/v1/messages/count_tokens`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ model: 5, messages: [{ role: 'user', content: 'hi' }] }),
    });
    expect(response.status).toBe(422);
    expect(((await response.json()) as { error: { message: string } }).error.message).toMatch(/^model must be a string naming the session/);
  });

  it('refuses bad input in Anthropic\'s error shape, and other methods with 405', async () => {
    const server = await start();
    const anthropic = new Anthropic({ baseURL: server.url, apiKey: 'unused', maxRetries: 0 });
    const refused = await anthropicError(anthropic.messages.countTokens({ model: 'x', messages: [] }));
    expect(refused.status).toBe(422);
    expect(refused.error).toMatchObject({ type: 'error', error: { type: 'invalid_request_error', message: 'messages must not be empty' } });
    const get = await fetch(`${server.url}/v1/messages/count_tokens`);
    expect(get.status).toBe(405);
    expect(get.headers.get('allow')).toBe('POST');
  });

  it('answers a path under /v1/messages it does not serve with a 404 in Anthropic\'s shape', async () => {
    const server = await start();
    const anthropic = new Anthropic({ baseURL: server.url, apiKey: 'unused', maxRetries: 0 });
    const missing = await anthropicError(anthropic.messages.batches.list());
    expect(missing).toBeInstanceOf(Anthropic.NotFoundError);
    expect(missing.error).toMatchObject({ type: 'error', error: { type: 'not_found_error' } });
  });
});

describe('Ollama: version and loaded models', () => {
  it('answers version() as dotted numbers (as Open WebUI parses it) and ps() with no loaded model', async () => {
    const server = await start();
    const ollama = new Ollama({ host: server.url });
    const { version } = await ollama.version();
    expect(version).toMatch(/^\d+\.\d+\.\d+$/);
    expect(await ollama.ps()).toEqual({ models: [] });
    const post = await fetch(`${server.url}/api/version`, { method: 'POST' });
    expect(post.status).toBe(405);
    expect(((await post.json()) as { error: string }).error).toMatch(/use GET/);
  });

  it('asks for the client key like every other route when keys are set', async () => {
    const server = await start({ apiKeys: 'k-one' });
    expect((await fetch(`${server.url}/api/version`)).status).toBe(401);
    expect((await fetch(`${server.url}/api/version`, { headers: { authorization: 'Bearer k-one' } })).status).toBe(200);
    const anthropic = new Anthropic({ baseURL: server.url, apiKey: 'wrong', maxRetries: 0 });
    expect(await anthropicError(anthropic.messages.countTokens({ model: 'x', messages: [{ role: 'user', content: 'hi' }] }))).toBeInstanceOf(Anthropic.AuthenticationError);
  });
});
