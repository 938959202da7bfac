// Proves PROTOCOL.md §5 "a client that disconnects while held open loses nothing": when an SDK
// call is aborted (AbortController) while its request is held, what it would have received
// stays queued, and the client's next identical request picks it up; the other side is given
// the aborted request's content exactly once.
import { describe, expect, it } from 'vitest';
import { APIUserAbortError } from 'openai';
import { apiError, until, uniqueId, untilHeld, useServers } from './support.js';
import type { TestServer } from '../helpers/server.js';

const start = useServers();

const untilReleased = (server: TestServer, session: string, side: 'A' | 'B') =>
  until(() => server.service.ctx.sessions.get(session)?.context.sides[side].held === null, `side ${side} is no longer held`);

describe('a client that disconnects while held', () => {
  it('gets the answer to its handshake when it sends it again', async () => {
    const server = await start();
    const session = uniqueId('dc-handshake');
    const client = server.client({ maxRetries: 0 });
    const abort = new AbortController();
    const handshake = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ping' }] }, { signal: abort.signal });
    await untilHeld(server, session, 'A');
    abort.abort();
    await expect(handshake).rejects.toBeInstanceOf(APIUserAbortError);
    await untilReleased(server, session, 'A');

    const b1 = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'b1: are you there?' }] });
    await untilHeld(server, session, 'B');
    const again = await client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ping' }] });
    expect(again.choices[0]!.message.content).toBe('b1: are you there?');

    const a1 = client.chat.completions.create({
      model: session,
      messages: [{ role: 'user', content: 'ping' }, { role: 'assistant', content: 'b1: are you there?' }, { role: 'user', content: 'a1: yes' }],
    });
    expect((await b1).choices[0]!.message.content).toBe('a1: yes');
    const ended = apiError(a1);
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await ended).status).toBe(410);
  });

  it('loses nothing when a turn is aborted, even if the answer comes at once', async () => {
    const server = await start();
    const session = uniqueId('dc-turn');
    const client = server.client({ maxRetries: 0 });
    const handshake = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ping' }] });
    await untilHeld(server, session, 'A');
    const b1 = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'b1' }] });
    await handshake;

    const turn = [{ role: 'user' as const, content: 'ping' }, { role: 'assistant' as const, content: 'b1' }, { role: 'user' as const, content: 'a1' }];
    const abort = new AbortController();
    const a1 = client.chat.completions.create({ model: session, messages: turn }, { signal: abort.signal });
    expect((await b1).choices[0]!.message.content).toBe('a1');
    abort.abort();
    await expect(a1).rejects.toBeInstanceOf(APIUserAbortError);

    // B answers without waiting for the proxy to notice; either way A's repeat gets the answer.
    const b2 = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'b1' }, { role: 'assistant', content: 'a1' }, { role: 'user', content: 'b2' }] });
    await untilHeld(server, session, 'B');
    const again = await client.chat.completions.create({ model: session, messages: turn });
    expect(again.choices[0]!.message.content).toBe('b2');

    // B was given "a1" once: its next answer is A's next message alone.
    const a2 = client.chat.completions.create({ model: session, messages: [...turn, { role: 'assistant', content: 'b2' }, { role: 'user', content: 'a2' }] });
    expect((await b2).choices[0]!.message.content).toBe('a2');
    const ended = apiError(a2);
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await ended).status).toBe(410);
  });

  it('keeps what an aborted receiver would have got queued for its next request', async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.05' });
    const session = uniqueId('dc-receiver');
    const client = server.client({ maxRetries: 0 });
    const handshake = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ping' }] });
    await untilHeld(server, session, 'A');

    // B waits on a stream and goes away.
    const abort = new AbortController();
    const stream = await client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'b1' }], stream: true }, { signal: abort.signal });
    expect((await handshake).choices[0]!.message.content).toBe('b1');
    await untilHeld(server, session, 'B');
    abort.abort();
    // The SDK ends an aborted stream's iteration quietly; nothing had arrived.
    const received: unknown[] = [];
    for await (const chunk of stream) received.push(chunk);
    expect(received).toEqual([]);
    await untilReleased(server, session, 'B');

    // A's turn is queued for B, and B's repeat of its request (streaming again) receives it.
    const a1 = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ping' }, { role: 'assistant', content: 'b1' }, { role: 'user', content: 'a1 while you were away' }] });
    await untilHeld(server, session, 'A');
    const again = await client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'b1' }], stream: true });
    let text = '';
    for await (const chunk of again) text += chunk.choices[0]?.delta.content ?? '';
    expect(text).toBe('a1 while you were away');

    const b2 = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'b1' }, { role: 'assistant', content: 'a1 while you were away' }, { role: 'user', content: 'b2' }] });
    expect((await a1).choices[0]!.message.content).toBe('b2');
    const ended = apiError(b2);
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await ended).status).toBe(410);
  });
});
