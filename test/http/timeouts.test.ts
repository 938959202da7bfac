// Proves the timers of PROTOCOL.md §5 and the 408-and-retry path of §4: a held request that
// waits too long gets 408 handshake_timeout / turn_timeout in OpenAI's error shape (retryable:
// no x-should-retry: false), a held stream ends with the in-stream error instead, and the
// official SDK's own retries after a 408 re-attach to the same turn, so the answer arrives once
// and the retried content reaches the other side exactly once.
import { describe, expect, it } from 'vitest';
import { apiError, expectOpenAIError, recordingClient, uniqueId, until, untilHeld, useServers } from './support.js';

const start = useServers();

describe('timeouts', () => {
  it('answers a handshake nobody joins with 408 handshake_timeout', async () => {
    const server = await start({ handshakeTimeoutSeconds: '0.3', turnTimeoutSeconds: '5' });
    const recorded = recordingClient(server, { maxRetries: 0 });
    const startedAt = Date.now();
    const err = await apiError(recorded.client.chat.completions.create({ model: uniqueId('hs-timeout'), messages: [{ role: 'user', content: 'ping' }] }));
    const waited = Date.now() - startedAt;
    expect(err.status).toBe(408);
    expectOpenAIError({ error: err.error }, 'handshake_timeout');
    expect(err.headers?.get('x-should-retry')).toBeNull();
    expect(waited).toBeGreaterThanOrEqual(280);
    expect(waited).toBeLessThan(2_000);
    expect(recorded.statuses).toEqual([408]);
  });

  it('answers a turn the other side does not answer with 408 turn_timeout', async () => {
    const server = await start({ handshakeTimeoutSeconds: '5', turnTimeoutSeconds: '0.3' });
    const session = uniqueId('turn-timeout');
    const client = server.client({ maxRetries: 0 });
    const handshake = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ping' }] });
    await untilHeld(server, session, 'A');
    const startedAt = Date.now();
    const b1 = apiError(client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'b1' }] }));
    expect((await handshake).choices[0]!.message.content).toBe('b1');
    const err = await b1;
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(280);
    expect(err.status).toBe(408);
    expectOpenAIError({ error: err.error }, 'turn_timeout');
    expect(err.error).toMatchObject({ message: expect.stringMatching(/retry/i) });
    expect(err.headers?.get('x-should-retry')).toBeNull();
  });

  it('gives a streaming request its own, longer wait (STREAM_TURN_TIMEOUT_SECONDS) than a plain request\'s', async () => {
    const server = await start({ handshakeTimeoutSeconds: '5', turnTimeoutSeconds: '0.3', streamTurnTimeoutSeconds: '5', keepaliveIntervalSeconds: '0.1' });
    const session = uniqueId('stream-long');
    const client = server.client({ maxRetries: 0 });
    const handshake = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ping' }] });
    await untilHeld(server, session, 'A');
    // B streams its first prompt and waits for A, who takes three plain timeouts to answer.
    const startedAt = Date.now();
    const stream = await client.chat.completions.create({ model: session, stream: true, messages: [{ role: 'user', content: 'b1' }] });
    expect((await handshake).choices[0]!.message.content).toBe('b1');
    expect(server.service.ctx.sessions.get(session)!.context.sides.B.held?.timer).toBe('stream');
    const reading = (async () => {
      let text = '';
      for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
      return text;
    })();
    await new Promise((resolve) => setTimeout(resolve, 900));
    // A answers with a plain request: B's stream carries it; A's own wait is a plain one.
    const plain = apiError(client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ping' }, { role: 'assistant', content: 'b1' }, { role: 'user', content: 'Sorry, I was away.' }] }));
    expect(await reading).toBe('Sorry, I was away.');
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(850);
    const err = await plain;
    expect(err.status).toBe(408);
    expectOpenAIError({ error: err.error }, 'turn_timeout');
  });

  it('ends a held stream that times out with an in-stream turn_timeout error', async () => {
    const server = await start({ handshakeTimeoutSeconds: '5', turnTimeoutSeconds: '30', streamTurnTimeoutSeconds: '0.3', keepaliveIntervalSeconds: '0.1' });
    const session = uniqueId('stream-timeout');
    const client = server.client({ maxRetries: 0 });
    const handshake = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ping' }] });
    await untilHeld(server, session, 'A');
    const stream = await client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'b1' }], stream: true });
    expect((await handshake).choices[0]!.message.content).toBe('b1');
    const err = await apiError(
      (async () => {
        for await (const _chunk of stream) {
          // no content is expected before the error
        }
      })(),
    );
    expect(err.code).toBe('turn_timeout');
    expect(err.message).toMatch(/turn timeout/);
  });

  it('lets the SDK retry a timed-out handshake and receive the answer once', async () => {
    const server = await start({ handshakeTimeoutSeconds: '0.3', turnTimeoutSeconds: '5' });
    const session = uniqueId('hs-retry');
    const a = recordingClient(server); // default maxRetries (2)
    const b = server.client();
    const handshake = a.client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ping' }] });

    await a.nextStatus(408); // the first wait ran out; the SDK now backs off and retries
    const b1 = b.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'b1: you made it' }] });
    expect((await handshake).choices[0]!.message.content).toBe('b1: you made it');
    expect(a.statuses).toEqual([408, 200]);

    // B is answered by A's next message only: A's handshake text was never forwarded.
    const a1 = a.client.chat.completions.create({
      model: session,
      messages: [{ role: 'user', content: 'ping' }, { role: 'assistant', content: 'b1: you made it' }, { role: 'user', content: 'a1' }],
    });
    expect((await b1).choices[0]!.message.content).toBe('a1');
    const ended = apiError(a1);
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await ended).status).toBe(410);
  });

  it('does not queue a retried turn twice while the other side is away', async () => {
    const server = await start({ handshakeTimeoutSeconds: '5', turnTimeoutSeconds: '0.3' });
    const session = uniqueId('queued-retry');
    const b = server.client({ maxRetries: 0 });
    const a = recordingClient(server);
    const history = [{ role: 'user' as const, content: 'ping' }, { role: 'assistant' as const, content: 'b1' }];

    const handshake = a.client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ping' }] });
    await untilHeld(server, session, 'A');
    const b1 = b.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'b1' }] });
    await handshake;
    // B is answered at once and stays away: A's turn is queued for it, and A's wait runs out.
    const before = a.statuses.length;
    const a1 = a.client.chat.completions.create({ model: session, messages: [...history, { role: 'user', content: 'a1' }] });
    expect((await b1).choices[0]!.message.content).toBe('a1');
    const a2 = a.client.chat.completions.create({ model: session, messages: [...history, { role: 'user', content: 'a1' }, { role: 'user', content: 'a2 (queued)' }] });
    await expect(a1).rejects.toMatchObject({ status: 409, code: 'superseded' });
    await a.nextStatus(408);
    await until(() => server.service.ctx.sessions.get(session)!.context.sides.A.held !== null, "A's retry re-attached");

    // B comes back: it gets the queued turn once, and A's retried request gets B's answer.
    const b2 = await b.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'b1' }, { role: 'assistant', content: 'a1' }, { role: 'user', content: 'b2' }] });
    expect(b2.choices[0]!.message.content).toBe('a2 (queued)');
    expect((await a2).choices[0]!.message.content).toBe('b2');
    expect(a.statuses.slice(before)).toEqual([409, 408, 200]);
  });

  it('lets the SDK retry a timed-out turn: no loss, no duplicate on either side', async () => {
    const server = await start({ handshakeTimeoutSeconds: '5', turnTimeoutSeconds: '0.3' });
    const session = uniqueId('turn-retry');
    const a = recordingClient(server);
    const b = recordingClient(server);
    const send = (client: typeof a.client, messages: { role: 'user' | 'assistant'; content: string }[]) =>
      client.chat.completions.create({ model: session, messages }).then((c) => c.choices[0]!.message.content);

    const handshake = send(a.client, [{ role: 'user', content: 'ping' }]);
    await untilHeld(server, session, 'A');
    const b1 = send(b.client, [{ role: 'user', content: 'b1' }]);
    expect(await handshake).toBe('b1');

    // A's turn reaches the waiting B at once; then A waits for B, and runs out of time.
    const before = a.statuses.length;
    const a1 = send(a.client, [{ role: 'user', content: 'ping' }, { role: 'assistant', content: 'b1' }, { role: 'user', content: 'a1' }]);
    expect(await b1).toBe('a1');
    await a.nextStatus(408);

    // B answers after A's first timeout; A's retry picks the answer up.
    const b2 = send(b.client, [{ role: 'user', content: 'b1' }, { role: 'assistant', content: 'a1' }, { role: 'user', content: 'b2' }]);
    expect(await a1).toBe('b2');
    expect(a.statuses.slice(before)).toEqual([408, 200]);

    // A's retried "a1" was not delivered again: B's next answer is A's next message alone.
    const a2 = send(a.client, [
      { role: 'user', content: 'ping' },
      { role: 'assistant', content: 'b1' },
      { role: 'user', content: 'a1' },
      { role: 'assistant', content: 'b2' },
      { role: 'user', content: 'a2' },
    ]);
    expect(await b2).toBe('a2');
    // B may have timed out and retried too while A was backing off; it still got one answer each time.
    expect(b.statuses.filter((s) => s !== 408)).toEqual([200, 200]);

    // And A's next wait (held, or between its own retries) still gets B's next message.
    const last = server.client({ maxRetries: 0 });
    const b3 = apiError(
      last.chat.completions.create({
        model: session,
        messages: [
          { role: 'user', content: 'b1' },
          { role: 'assistant', content: 'a1' },
          { role: 'user', content: 'b2' },
          { role: 'assistant', content: 'a2' },
          { role: 'user', content: 'b3' },
        ],
      }),
    );
    expect(await a2).toBe('b3');
    expect((await b3).status).toBe(408); // nobody answers B's last turn
  });
});
