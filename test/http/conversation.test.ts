// Proves the core pairing of PROTOCOL.md §1 over a real server with the official SDK on both
// sides: A's handshake is held and never forwarded, B's first prompt answers it, and from then
// on every request of one side is the other's response, byte-exact, while both sides re-send
// their full histories. Also proves the response is shaped the way the SDK and OpenAI shape it.
import { describe, expect, it } from 'vitest';
import { Participant, apiError, uniqueId, untilHeld, useServers } from './support.js';

const start = useServers();

const FROM_B = ['You wake in a cold cell.  ', 'The guard laughs.\nHe says: "Never."', '  A key glints on the floor.', 'The door creaks open…', 'You are free. 🎉'];
const FROM_A = ['I look around.', 'I ask the guard to let me out.\n\nPolitely!', 'I pick up the key\t(quietly)', 'I step through the door. ', 'The end?'];

describe('a five-turn conversation with full histories', () => {
  for (const stream of [false, true]) {
    it(`delivers every turn byte-exact, in order (stream: ${stream})`, async () => {
      const server = await start(stream ? { keepaliveIntervalSeconds: '0.05' } : {});
      const session = uniqueId('conv');
      const a = new Participant(server.client(), session, { stream });
      const b = new Participant(server.client(), session, { stream, system: 'You are the dungeon master.' });

      // A: [ping] is held until B speaks.
      let pendingA = a.say('ping');
      await untilHeld(server, session, 'A');
      let pendingB = b.say(FROM_B[0]!);
      expect(await pendingA).toBe(FROM_B[0]);

      for (let turn = 0; turn < 5; turn++) {
        pendingA = a.say(FROM_A[turn]!);
        expect(await pendingB).toBe(FROM_A[turn]);
        if (turn === 4) break;
        pendingB = b.say(FROM_B[turn + 1]!);
        expect(await pendingA).toBe(FROM_B[turn + 1]);
      }

      // Both histories are exactly the alternation of PROTOCOL.md §1, and nothing else.
      expect(a.history.filter((m) => m.role === 'assistant').map((m) => m.content)).toEqual(FROM_B);
      expect(b.history.filter((m) => m.role === 'assistant').map((m) => m.content)).toEqual(FROM_A);
      expect(a.history[0]).toEqual({ role: 'user', content: 'ping' });

      // A's last request is still held; ending the session answers it.
      const ended = apiError(pendingA);
      const deleted = await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
      expect(deleted.status).toBe(200);
      expect((await ended).code).toBe('session_closed');

      if (stream) {
        // Every streamed answer had the role first, content deltas, a stop and a usage chunk.
        for (const chunks of [...a.chunks, ...b.chunks]) {
          expect(chunks[0]!.choices[0]!.delta.role).toBe('assistant');
          expect(chunks.some((c) => c.choices[0]?.finish_reason === 'stop')).toBe(true);
          expect(chunks[chunks.length - 1]!.usage?.total_tokens).toBeGreaterThan(0);
          for (const c of chunks) expect(c.model).toBe(session);
        }
        expect(a.chunks).toHaveLength(5);
        expect(b.chunks).toHaveLength(5);
      } else {
        expect(a.completions).toHaveLength(5);
        expect(b.completions).toHaveLength(5);
      }
    });
  }
});

describe('the response shape', () => {
  it('is a chat.completion the SDK parses, echoing the model as sent (with its |A / |B suffix)', async () => {
    const server = await start();
    const session = uniqueId('shape');
    const client = server.client();
    const before = Math.floor(Date.now() / 1000);

    const pendingA = client.chat.completions.create({ model: `${session}|A`, messages: [{ role: 'user', content: 'ping' }] }).withResponse();
    await untilHeld(server, session, 'A');
    const pendingB = client.chat.completions.create({ model: `${session}|B`, messages: [{ role: 'user', content: 'Hello there, A.' }], temperature: 0.3, max_tokens: 50 });
    const { data: completion, response } = await pendingA;

    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    expect(completion.id).toMatch(/^chatcmpl-[A-Za-z0-9]+$/);
    expect(completion.object).toBe('chat.completion');
    expect(completion.created).toBeGreaterThanOrEqual(before);
    expect(completion.created).toBeLessThanOrEqual(Math.floor(Date.now() / 1000) + 1);
    expect(completion.model).toBe(`${session}|A`);
    expect(completion.choices).toHaveLength(1);
    expect(completion.choices[0]!.index).toBe(0);
    expect(completion.choices[0]!.message.role).toBe('assistant');
    expect(completion.choices[0]!.message.content).toBe('Hello there, A.');
    expect(completion.choices[0]!.finish_reason).toBe('stop');
    expect(completion.usage).toEqual({
      prompt_tokens: expect.any(Number),
      completion_tokens: expect.any(Number),
      total_tokens: expect.any(Number),
    });
    expect(completion.usage!.completion_tokens).toBeGreaterThan(0);
    expect(completion.usage!.total_tokens).toBe(completion.usage!.prompt_tokens + completion.usage!.completion_tokens);

    // B is answered by A's next message, echoing B's own model string; ids are unique per response.
    const second = client.chat.completions.create({
      model: `${session}|A`,
      messages: [
        { role: 'user', content: 'ping' },
        { role: 'assistant', content: 'Hello there, A.' },
        { role: 'user', content: 'General Kenobi.' },
      ],
    });
    const forB = await pendingB;
    expect(forB.model).toBe(`${session}|B`);
    expect(forB.choices[0]!.message.content).toBe('General Kenobi.');
    expect(forB.id).not.toBe(completion.id);

    const ended = apiError(second);
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await ended).status).toBe(410);
  });
});
