// Proves which side a request is taken for (PROTOCOL.md §3) on a real server: stateless
// clients that send only their new message alternate correctly, an explicit `|A`/`|B` suffix
// lets B arrive first, two players may say the same words, and a history that matches neither
// side's deliveries is refused with 409 session_conflict.
import { describe, expect, it } from 'vitest';
import { apiError, recordingClient, uniqueId, untilHeld, useServers } from './support.js';
import type { TestServer } from '../helpers/server.js';

const start = useServers();

/** A curl-style client: every request carries only its new message, never a history. */
function stateless(server: TestServer, model: string) {
  const client = server.client({ maxRetries: 0 });
  return (content: string) =>
    client.chat.completions.create({ model, messages: [{ role: 'user', content }] }).then((c) => c.choices[0]!.message.content);
}

describe('attribution', () => {
  it('alternates stateless clients that send no history', async () => {
    const server = await start();
    const session = uniqueId('curl');
    const a = stateless(server, session);
    const b = stateless(server, session);

    let pendingA = a('hello');
    await untilHeld(server, session, 'A');
    let pendingB = b('b1: who goes there?');
    expect(await pendingA).toBe('b1: who goes there?');
    for (let turn = 1; turn <= 4; turn++) {
      pendingA = a(`a${turn}: a friend, number ${turn}`);
      expect(await pendingB).toBe(`a${turn}: a friend, number ${turn}`);
      pendingB = b(`b${turn + 1}: advance, friend ${turn}`);
      expect(await pendingA).toBe(`b${turn + 1}: advance, friend ${turn}`);
    }
    const ended = apiError(pendingB);
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await ended).status).toBe(410);
  });

  it('lets side B arrive first with an explicit suffix', async () => {
    const server = await start();
    const session = uniqueId('b-first');
    const client = server.client();

    const pendingB = client.chat.completions.create({ model: `${session}|B`, messages: [{ role: 'user', content: 'B speaks first.' }] });
    await untilHeld(server, session, 'B');
    // A's handshake is answered at once with what B queued; its own text goes nowhere.
    const handshake = await client.chat.completions.create({ model: `${session}|A`, messages: [{ role: 'user', content: 'ping' }] });
    expect(handshake.choices[0]!.message.content).toBe('B speaks first.');
    expect(handshake.model).toBe(`${session}|A`);

    const pendingA = client.chat.completions.create({
      model: `${session}|A`,
      messages: [
        { role: 'user', content: 'ping' },
        { role: 'assistant', content: 'B speaks first.' },
        { role: 'user', content: 'A answers.' },
      ],
    });
    const forB = await pendingB;
    expect(forB.choices[0]!.message.content).toBe('A answers.');
    expect(forB.model).toBe(`${session}|B`);

    const ended = apiError(pendingA);
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await ended).status).toBe(410);
  });

  it('takes the same words from the other player for that player, while the first is held', async () => {
    const server = await start();
    const session = uniqueId('both-hi');
    const client = server.client();
    const pendingA = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'hi' }] });
    await untilHeld(server, session, 'A');
    const pendingB = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'hi' }] });
    expect((await pendingA).choices[0]!.message.content).toBe('hi');
    await untilHeld(server, session, 'B');
    const pendingA2 = client.chat.completions.create({
      model: session,
      messages: [
        { role: 'user', content: 'hi' },
        { role: 'assistant', content: 'hi' },
        { role: 'user', content: 'hi again' },
      ],
    });
    expect((await pendingB).choices[0]!.message.content).toBe('hi again');
    const ended = apiError(pendingA2);
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await ended).status).toBe(410);
  });

  it('refuses a history that matches neither side with 409 session_conflict', async () => {
    const server = await start();
    const session = uniqueId('conflict');
    const client = server.client();
    const pendingA = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ping' }] });
    await untilHeld(server, session, 'A');
    const pendingB = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'b1' }] });
    await pendingA;

    const recorded = recordingClient(server); // default retries: x-should-retry false must stop them
    const conflict = await apiError(
      recorded.client.chat.completions.create({
        model: session,
        messages: [
          { role: 'user', content: 'ping' },
          { role: 'assistant', content: 'something this session never said' },
          { role: 'user', content: 'a1' },
        ],
      }),
    );
    expect(conflict.status).toBe(409);
    expect(conflict.code).toBe('session_conflict');
    expect(conflict.headers?.get('x-should-retry')).toBe('false');
    expect(conflict.message).toMatch(/history/);
    expect(recorded.statuses).toEqual([409]);

    // A history on a session that has delivered nothing yet is refused too, and creates nothing.
    const fresh = uniqueId('conflict-fresh');
    const stale = await apiError(
      client.chat.completions.create({
        model: fresh,
        messages: [
          { role: 'user', content: 'x' },
          { role: 'assistant', content: 'from an old conversation' },
          { role: 'user', content: 'y' },
        ],
      }),
    );
    expect(stale.status).toBe(409);
    expect(stale.code).toBe('session_conflict');
    expect(stale.message).toMatch(/earlier conversation/);
    expect(server.service.ctx.sessions.get(fresh)).toBeUndefined();

    // The conflict delivered nothing: B still gets A's real next message alone.
    const pendingA2 = client.chat.completions.create({
      model: session,
      messages: [
        { role: 'user', content: 'ping' },
        { role: 'assistant', content: 'b1' },
        { role: 'user', content: 'a1' },
      ],
    });
    expect((await pendingB).choices[0]!.message.content).toBe('a1');
    const ended = apiError(pendingA2);
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await ended).status).toBe(410);
  });
});
