// Proves the raw SSE of a streaming request (PROTOCOL.md §6): headers go out at once while the
// request is held, `: keep-alive` comments follow at the configured interval, and the delivery
// arrives as OpenAI-shaped `chat.completion.chunk` frames (role first, content, finish_reason
// "stop", a usage chunk when asked for) ending with `data: [DONE]`; and that the SDK's stream
// iteration assembles exactly the delivered content.
import { describe, expect, it } from 'vitest';
import { uniqueId, untilHeld, useServers } from './support.js';
import type { TestServer } from '../helpers/server.js';

const start = useServers();

/** Reads a response body as it arrives, remembering when each piece came. */
function readBody(response: Response) {
  const pieces: { at: number; text: string }[] = [];
  const decoder = new TextDecoder();
  const done = (async () => {
    const reader = response.body!.getReader();
    for (;;) {
      const { value, done: finished } = await reader.read();
      if (finished) break;
      pieces.push({ at: Date.now(), text: decoder.decode(value, { stream: true }) });
    }
    return pieces.map((p) => p.text).join('');
  })();
  return { pieces, text: () => pieces.map((p) => p.text).join(''), done };
}

function streamRequest(server: TestServer, model: string, content: string, extra: Record<string, unknown> = {}): Promise<Response> {
  return fetch(`${server.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content }], stream: true, ...extra }),
  });
}

/** The `data:` payloads of an SSE text, in order; comments are left out. */
const dataFrames = (sse: string): string[] =>
  sse
    .split('\n\n')
    .filter((frame) => frame.startsWith('data: '))
    .map((frame) => frame.slice('data: '.length));

describe('raw SSE of a held streaming request', () => {
  it('sends headers at once, keep-alives at the configured interval, then the chunks and [DONE]', async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.2' });
    const session = uniqueId('sse');
    const sentAt = Date.now();
    const response = await streamRequest(server, `${session}|A`, 'ping', { stream_options: { include_usage: true } });
    const headersAt = Date.now();

    // The headers arrived although nobody has answered yet.
    expect(Date.now() - sentAt).toBeLessThan(500);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(response.headers.get('cache-control')).toBe('no-cache');
    const body = readBody(response);

    await new Promise((resolve) => setTimeout(resolve, 700));
    const held = body.text();
    const keepAlives = held.match(/^: keep-alive\n\n/gm) ?? [];
    expect(keepAlives.length).toBeGreaterThanOrEqual(3);
    expect(keepAlives.length).toBeLessThanOrEqual(6);
    expect(held.replaceAll(': keep-alive\n\n', '')).toBe(''); // nothing but comments while held
    // The first keep-alive comes with the headers (a UI that waits for a body byte shows progress
    // at once); the rest are spaced by the interval, not a burst.
    expect(body.pieces[0]!.text).toBe(': keep-alive\n\n');
    // (Timed from the headers' arrival, not the request's sending: a busy machine may delay both alike.)
    expect(body.pieces[0]!.at - headersAt).toBeLessThan(150);
    expect(body.pieces[1]!.at - body.pieces[0]!.at).toBeGreaterThanOrEqual(150);

    // B speaks: A's stream carries it and ends properly.
    const forB = streamRequest(server, `${session}|B`, 'Hello, streaming world.\nSecond line.');
    const sse = await body.done;
    const frames = dataFrames(sse);
    expect(frames[frames.length - 1]).toBe('[DONE]');
    const chunks = frames.slice(0, -1).map((f) => JSON.parse(f));
    for (const chunk of chunks) {
      expect(chunk.object).toBe('chat.completion.chunk');
      expect(chunk.model).toBe(`${session}|A`);
      expect(chunk.id).toMatch(/^chatcmpl-/);
      expect(chunk.id).toBe(chunks[0].id);
    }
    expect(chunks[0].choices[0].delta.role).toBe('assistant');
    const withChoices = chunks.filter((c) => c.choices.length > 0);
    expect(withChoices.map((c) => c.choices[0].delta.content ?? '').join('')).toBe('Hello, streaming world.\nSecond line.');
    const stops = withChoices.filter((c) => c.choices[0].finish_reason !== null);
    expect(stops).toHaveLength(1);
    expect(stops[0].choices[0].finish_reason).toBe('stop');
    expect(withChoices[withChoices.length - 1]).toBe(stops[0]);
    // The usage chunk comes last, with no choices, as OpenAI sends it for include_usage.
    const usageChunk = chunks[chunks.length - 1];
    expect(usageChunk.choices).toEqual([]);
    expect(usageChunk.usage.completion_tokens).toBeGreaterThan(0);
    expect(usageChunk.usage.total_tokens).toBe(usageChunk.usage.prompt_tokens + usageChunk.usage.completion_tokens);

    // B's stream is held in turn; ending the session ends it with an in-stream error.
    const bBody = readBody(await forB);
    await untilHeld(server, session, 'B');
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    const bFrames = dataFrames(await bBody.done);
    expect(JSON.parse(bFrames[bFrames.length - 1]!).error.code).toBe('session_closed');
  });

  it('sends no usage chunk unless stream_options.include_usage is set', async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.2' });
    const session = uniqueId('sse-nousage');
    const body = readBody(await streamRequest(server, `${session}|A`, 'ping'));
    await untilHeld(server, session, 'A');
    const forB = streamRequest(server, `${session}|B`, 'no usage here');
    const chunks = dataFrames(await body.done);
    expect(chunks[chunks.length - 1]).toBe('[DONE]');
    const parsed = chunks.slice(0, -1).map((f) => JSON.parse(f));
    expect(parsed.every((c) => c.choices.length === 1 && c.usage === undefined)).toBe(true);
    expect(parsed.map((c) => c.choices[0].delta.content ?? '').join('')).toBe('no usage here');
    (await forB).body?.cancel();
  });
});

describe('SDK stream iteration', () => {
  it('assembles the delivered content from deltas while the other side uses plain requests', async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.05' });
    const session = uniqueId('sdk-stream');
    const client = server.client();
    const stream = await client.chat.completions.create({
      model: session,
      messages: [{ role: 'user', content: 'ping' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    // The SDK call itself resolved while held: the headers came at once.
    await untilHeld(server, session, 'A');
    const text = 'A long line '.repeat(500) + '— and the end.';
    const forB = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: text }] });
    let assembled = '';
    let role: string | undefined;
    let finish: string | null | undefined;
    let usage: unknown;
    for await (const chunk of stream) {
      role ??= chunk.choices[0]?.delta.role;
      assembled += chunk.choices[0]?.delta.content ?? '';
      if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(assembled).toBe(text);
    expect(role).toBe('assistant');
    expect(finish).toBe('stop');
    expect(usage).toMatchObject({ completion_tokens: expect.any(Number), prompt_tokens: expect.any(Number) });

    // A mixed session works the other way too: A's next streamed turn answers B's plain request.
    const next = await client.chat.completions.create({
      model: session,
      messages: [
        { role: 'user', content: 'ping' },
        { role: 'assistant', content: text },
        { role: 'user', content: 'Got it.' },
      ],
      stream: true,
    });
    expect((await forB).choices[0]!.message.content).toBe('Got it.');
    next.controller.abort();
  });
});
