// Proves PROTOCOL.md §2 on a live session: a chat UI's background request (Open WebUI's title
// prompt with its <chat_history>) is answered by the proxy itself, in the format the UI parses,
// plain or streamed, and never reaches the other side nor disturbs the conversation; with
// answerBackgroundTasks: 'false' the same request is forwarded like any other message.
import { describe, expect, it } from 'vitest';
import { apiError, uniqueId, untilHeld, useServers } from './support.js';
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
