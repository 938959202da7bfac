// Proves PROTOCOL.md §2 on a live session: a chat UI's background request (Open WebUI's title
// prompt with its <chat_history>, SillyTavern's connection test, big-AGI's forced tool call,
// LobeChat's system-prompt title) is answered by the proxy itself, in the format the UI parses,
// plain or streamed, and never reaches the other side nor disturbs the conversation; with
// answerBackgroundTasks: 'false' the same request is forwarded like any other message.
import { readFileSync } from 'node:fs';
import Anthropic from '@anthropic-ai/sdk';
import type { ChatCompletionCreateParamsNonStreaming, ChatCompletionCreateParamsStreaming } from 'openai/resources/chat/completions';
import { describe, expect, it } from 'vitest';
import { anthropicError, apiError, sleep, uniqueId, untilHeld, useServers } from './support.js';
import type { TestServer } from '../helpers/server.js';

const start = useServers();

const TITLE_PROMPT = `### Task:
Generate a concise, 3-5 word title with an emoji summarizing the chat history.
### Guidelines:
- The title should clearly represent the main theme or subject of the conversation.
- Use emojis that enhance understanding of the topic, but avoid quotation marks or special formatting.
### Output:
JSON format: { "title": "your concise title here" }
### Examples:
- { "title": "📉 Stock Market Trends" },
- { "title": "🍪 Perfect Chocolate Chip Recipe" }
### Chat History:
<chat_history>
USER: Tell me about the dragon in the north tower
ASSISTANT: It sleeps on a pile of gold.
</chat_history>`;

/** A session with A held on its turn "a1" and B waiting for nothing (it just received "a1"). */
async function pairedSession(server: TestServer, session: string) {
  const client = server.client({ maxRetries: 0 });
  const handshake = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ping' }] });
  await untilHeld(server, session, 'A');
  const b1 = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'b1' }] });
  await handshake;
  return { client, b1 };
}

describe('chat UI background requests', () => {
  it('are answered locally and never reach the other side', async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.05' });
    const session = uniqueId('owui');
    const { client, b1 } = await pairedSession(server, session);
    // B is held waiting for A. A's UI asks "the model" for a title, plain and streamed.
    const title = await client.chat.completions.create({ model: session, messages: [{ role: 'user', content: TITLE_PROMPT }], stream: false });
    expect(title.model).toBe(session);
    expect(title.choices[0]!.message.role).toBe('assistant');
    const parsed = JSON.parse(title.choices[0]!.message.content!) as { title: string };
    expect(typeof parsed.title).toBe('string');
    expect(parsed.title.length).toBeGreaterThan(0);

    const streamed = await client.chat.completions.create({ model: session, messages: [{ role: 'user', content: TITLE_PROMPT }], stream: true });
    let text = '';
    for await (const chunk of streamed) text += chunk.choices[0]?.delta.content ?? '';
    expect(JSON.parse(text)).toEqual(parsed);

    // B is still held: the title prompts reached nobody. A's real message is B's answer, alone.
    expect(server.service.ctx.sessions.get(session)!.context.sides.B.held).not.toBeNull();
    const a1 = apiError(
      client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ping' }, { role: 'assistant', content: 'b1' }, { role: 'user', content: 'a1' }] }),
    );
    expect((await b1).choices[0]!.message.content).toBe('a1');
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await a1).status).toBe(410);
  });

  it('do not create a session of their own', async () => {
    const server = await start();
    const session = uniqueId('owui-alone');
    const title = await server.client().chat.completions.create({ model: session, messages: [{ role: 'user', content: TITLE_PROMPT }] });
    expect(JSON.parse(title.choices[0]!.message.content!)).toHaveProperty('title');
    expect(server.service.ctx.sessions.get(session)).toBeUndefined();
    const models = [];
    for await (const model of server.client().models.list()) models.push(model.id);
    expect(models).not.toContain(session);
  });

  it("are forwarded like any message with answerBackgroundTasks: 'false'", async () => {
    const server = await start({ answerBackgroundTasks: 'false' });
    const session = uniqueId('owui-off');
    const { client, b1 } = await pairedSession(server, session);
    const forwarded = apiError(client.chat.completions.create({ model: session, messages: [{ role: 'user', content: TITLE_PROMPT }] }));
    expect((await b1).choices[0]!.message.content).toBe(TITLE_PROMPT);
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await forwarded).status).toBe(410);
  });
});

/** A request body collected from a chat UI's source (test/fixtures/chat-ui-requests/), sent to `session`. */
function fixtureBody(name: string, session: string): Record<string, unknown> {
  const fixture = JSON.parse(readFileSync(new URL(`../fixtures/chat-ui-requests/${name}.json`, import.meta.url), 'utf8')) as { body: Record<string, unknown> };
  return { ...fixture.body, model: session };
}

describe('connection tests and other chat UIs', () => {
  it("answer SillyTavern's Test Message at once while side A waits, and change nothing", async () => {
    const server = await start();
    const session = uniqueId('tavern');
    const client = server.client({ maxRetries: 0 });
    let handshakeAnswered = false;
    const handshake = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ping' }] }).finally(() => {
      handshakeAnswered = true;
    });
    await untilHeld(server, session, 'A');
    const live = server.service.ctx.sessions.get(session)!;
    const state = live.state;
    const context = live.context;

    const test = await client.chat.completions.create(fixtureBody('sillytavern-connection-test', session) as unknown as ChatCompletionCreateParamsNonStreaming);
    expect(test.choices[0]!.message.content).toContain('forwarded nothing');
    expect(test.choices[0]!.finish_reason).toBe('stop');
    expect(test.model).toBe(session);

    // Nothing reached A, and the session did not see the request at all.
    await sleep(50);
    expect(handshakeAnswered).toBe(false);
    expect(live.state).toBe(state);
    expect(live.context).toBe(context);
    const b1 = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'b1' }] });
    expect((await handshake).choices[0]!.message.content).toBe('b1');
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await apiError(b1)).status).toBe(410);
  });

  it("answer big-AGI's forced follow-up with a call of its tool, plain and streamed", async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.05' });
    const session = uniqueId('bigagi');
    const client = server.client({ maxRetries: 0 });
    const body = fixtureBody('big-agi-auto-diagram', session);
    const nothingToDo = { rating_short_reason: 'not needed', rating_number: 1 };

    const plain = await client.chat.completions.create(body as unknown as ChatCompletionCreateParamsNonStreaming);
    expect(plain.choices[0]!.finish_reason).toBe('tool_calls');
    const call = plain.choices[0]!.message.tool_calls![0]!;
    expect(call.type === 'function' && call.function.name).toBe('draw_plantuml_diagram');
    expect(call.type === 'function' && JSON.parse(call.function.arguments)).toEqual(nothingToDo);

    const streamed = await client.chat.completions.stream({ ...body, stream: true } as unknown as ChatCompletionCreateParamsStreaming).finalChatCompletion();
    expect(streamed.choices[0]!.finish_reason).toBe('tool_calls');
    const streamedCall = streamed.choices[0]!.message.tool_calls![0]!;
    expect(streamedCall.type === 'function' && streamedCall.function.name).toBe('draw_plantuml_diagram');
    expect(streamedCall.type === 'function' && JSON.parse(streamedCall.function.arguments)).toEqual(nothingToDo);
    expect(server.service.ctx.sessions.get(session)).toBeUndefined();
  });

  it("answer LobeChat's title request, marked by its first system message, without reaching the other side", async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.05' });
    const session = uniqueId('lobe');
    const { client, b1 } = await pairedSession(server, session);
    // LobeChat streams the plain-text title; the structured one comes back as JSON.
    const streamed = await client.chat.completions.create(fixtureBody('lobechat-title-plain', session) as unknown as ChatCompletionCreateParamsStreaming);
    let title = '';
    for await (const chunk of streamed) title += chunk.choices[0]?.delta.content ?? '';
    expect(title).toBe('How do I bake sourdough bread');
    const structured = await client.chat.completions.create(fixtureBody('lobechat-title-json', session) as unknown as ChatCompletionCreateParamsNonStreaming);
    expect(JSON.parse(structured.choices[0]!.message.content!)).toEqual({ title: 'How do I bake sourdough bread' });

    expect(server.service.ctx.sessions.get(session)!.context.sides.B.held).not.toBeNull();
    const a1 = apiError(
      client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ping' }, { role: 'assistant', content: 'b1' }, { role: 'user', content: 'a1' }] }),
    );
    expect((await b1).choices[0]!.message.content).toBe('a1');
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await a1).status).toBe(410);
  });

  it('forward an Anthropic SDK client\'s opening "hello" (its required max_tokens is not LobeChat\'s check)', async () => {
    const server = await start();
    const session = uniqueId('hello');
    const client = server.client({ maxRetries: 0 });
    const handshake = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'Are you there?' }] });
    await untilHeld(server, session, 'A');
    const anthropic = new Anthropic({ baseURL: server.url, apiKey: 'unused', maxRetries: 0 });
    const b1 = anthropic.messages.create({ model: session, max_tokens: 1024, messages: [{ role: 'user', content: 'hello' }] });
    expect((await handshake).choices[0]!.message.content).toBe('hello');
    // LobeChat's own check, with its cap of 256, is still answered by the proxy, now from the other side.
    const check = await client.chat.completions.create(fixtureBody('lobechat-connection-check', session) as unknown as ChatCompletionCreateParamsNonStreaming);
    expect(check.choices[0]!.message.content).toContain('forwarded nothing');
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await anthropicError(b1)).status).toBe(410);
  });

  it("forward the Hi test like a normal turn with answerBackgroundTasks: 'false'", async () => {
    const server = await start({ answerBackgroundTasks: 'false' });
    const session = uniqueId('tavern-off');
    const { client, b1 } = await pairedSession(server, session);
    const forwarded = apiError(client.chat.completions.create(fixtureBody('sillytavern-connection-test', session) as unknown as ChatCompletionCreateParamsNonStreaming));
    expect((await b1).choices[0]!.message.content).toBe('Hi');
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await forwarded).status).toBe(410);
  });
});
