// Proves the session lifecycle of PROTOCOL.md §5 and its admin surface: DELETE
// /v1/sessions/{id} ends a session (held requests get 410 session_closed; an unknown session
// is a 404), a later request with the same id starts afresh, GET /v1/models lists the sessions
// waiting for a peer, MAX_SESSIONS refuses only new sessions (503 with Retry-After), and a
// graceful shutdown answers held requests with 503 and held streams with an in-stream error.
import { describe, expect, it } from 'vitest';
import { loadConfig, NEW_SESSIONS_BEYOND_LOOPBACK } from '../../src/config.js';
import { apiError, expectOpenAIError, recordingClient, uniqueId, untilHeld, useServers } from './support.js';

const start = useServers();

describe('DELETE /v1/sessions/{id}', () => {
  it('closes the session: its held request gets 410 session_closed, and the id starts afresh', async () => {
    const server = await start();
    const session = uniqueId('delete');
    const client = server.client(); // default retries: the 410 must not be retried
    const a = recordingClient(server);
    const handshake = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ping' }] });
    await untilHeld(server, session, 'A');
    const b1 = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'b1' }] });
    await handshake;
    const heldA = apiError(
      a.client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ping' }, { role: 'assistant', content: 'b1' }, { role: 'user', content: 'a1' }] }),
    );
    expect((await b1).choices[0]!.message.content).toBe('a1');
    await untilHeld(server, session, 'A');

    const response = await fetch(`${server.url}/v1/sessions/${encodeURIComponent(`${session}|A`)}`, { method: 'DELETE' });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ id: session, object: 'session', deleted: true });

    const closed = await heldA;
    expect(closed.status).toBe(410);
    expectOpenAIError({ error: closed.error }, 'session_closed');
    expect(closed.headers?.get('x-should-retry')).toBe('false');
    expect(a.statuses).toEqual([410]);

    // The id is free again: the next request starts a new session, and the old history is refused.
    expect(server.service.ctx.sessions.get(session)).toBeUndefined();
    const stale = await apiError(
      client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ping' }, { role: 'assistant', content: 'b1' }, { role: 'user', content: 'a2' }] }),
    );
    expect(stale.status).toBe(409);
    expect(stale.code).toBe('session_conflict');
    expect(stale.message).toMatch(/earlier conversation/);
    const fresh = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'hello again' }] });
    await untilHeld(server, session, 'A');
    const freshB = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'new b1' }] });
    expect((await fresh).choices[0]!.message.content).toBe('new b1');
    const ended = apiError(freshB);
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await ended).status).toBe(410);
  });

  it('takes a DELETE labelled JSON with no body, as openai-python sends it', async () => {
    const server = await start();
    const session = uniqueId('delete-py');
    const held = apiError(server.client({ maxRetries: 0 }).chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ping' }] }));
    await untilHeld(server, session, 'A');
    const response = await fetch(`${server.url}/v1/sessions/${session}`, {
      method: 'DELETE',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
    });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ id: session, object: 'session', deleted: true });
    expect((await held).status).toBe(410);
    // The SDK's own generic DELETE works as well.
    const missing = await apiError(server.client({ maxRetries: 0 }).delete(`/sessions/${session}`));
    expect(missing.status).toBe(404);
  });

  it('answers 404 not_found for a session that does not exist', async () => {
    const server = await start();
    const response = await fetch(`${server.url}/v1/sessions/${uniqueId('nobody')}`, { method: 'DELETE' });
    expect(response.status).toBe(404);
    expectOpenAIError(await response.json(), 'not_found');
  });
});

describe('GET /v1/models', () => {
  it('lists the sessions waiting for a peer, and only those', async () => {
    const server = await start();
    const client = server.client({ maxRetries: 0 });
    const waiting = uniqueId('lobby');
    const paired = uniqueId('paired');

    const waitingA = apiError(client.chat.completions.create({ model: waiting, messages: [{ role: 'user', content: 'anyone?' }] }));
    const pairedA = client.chat.completions.create({ model: paired, messages: [{ role: 'user', content: 'ping' }] });
    await untilHeld(server, waiting, 'A');
    await untilHeld(server, paired, 'A');
    const before = [];
    for await (const model of client.models.list()) before.push(model);
    expect(before.map((m) => m.id).sort()).toEqual([waiting, paired].sort());
    for (const model of before) {
      expect(model).toMatchObject({ object: 'model', owned_by: expect.any(String), created: expect.any(Number) });
    }

    const pairedB = apiError(client.chat.completions.create({ model: paired, messages: [{ role: 'user', content: 'b1' }] }));
    await pairedA;
    const after = [];
    for await (const model of client.models.list()) after.push(model.id);
    expect(after).toEqual([waiting]);

    await fetch(`${server.url}/v1/sessions/${waiting}`, { method: 'DELETE' });
    await fetch(`${server.url}/v1/sessions/${paired}`, { method: 'DELETE' });
    expect((await waitingA).status).toBe(410);
    expect((await pairedB).status).toBe(410);
    const none = [];
    for await (const model of client.models.list()) none.push(model.id);
    expect(none).toEqual([]);
  });
});

describe('MAX_SESSIONS', () => {
  it('refuses a new session with 503 max_sessions and Retry-After, but not a known one', async () => {
    const server = await start({ maxSessions: '2' });
    const client = server.client({ maxRetries: 0 });
    const [s1, s2, s3] = [uniqueId('max1'), uniqueId('max2'), uniqueId('max3')];
    const a1 = client.chat.completions.create({ model: s1, messages: [{ role: 'user', content: 'ping' }] });
    const a2 = apiError(client.chat.completions.create({ model: s2, messages: [{ role: 'user', content: 'ping' }] }));
    await untilHeld(server, s1, 'A');
    await untilHeld(server, s2, 'A');

    const refused = await apiError(client.chat.completions.create({ model: s3, messages: [{ role: 'user', content: 'ping' }] }));
    expect(refused.status).toBe(503);
    expectOpenAIError({ error: refused.error }, 'max_sessions');
    expect(refused.headers?.get('retry-after')).toMatch(/^\d+$/);
    expect(refused.headers?.get('x-should-retry')).toBeNull();
    expect(server.service.ctx.sessions.get(s3)).toBeUndefined();

    // A known session still takes its second side.
    const b1 = apiError(client.chat.completions.create({ model: s1, messages: [{ role: 'user', content: 'b1 joins a full house' }] }));
    expect((await a1).choices[0]!.message.content).toBe('b1 joins a full house');

    // Once a session ends, a new one fits again.
    await fetch(`${server.url}/v1/sessions/${s2}`, { method: 'DELETE' });
    expect((await a2).status).toBe(410);
    const a3 = apiError(client.chat.completions.create({ model: s3, messages: [{ role: 'user', content: 'ping' }] }));
    await untilHeld(server, s3, 'A');
    await fetch(`${server.url}/v1/sessions/${s3}`, { method: 'DELETE' });
    await fetch(`${server.url}/v1/sessions/${s1}`, { method: 'DELETE' });
    expect((await a3).status).toBe(410);
    expect((await b1).status).toBe(410);
  });
});

describe('sessions nobody joined', () => {
  it('do not hold MAX_SESSIONS slots once their only client left: they end after HANDSHAKE_TIMEOUT_SECONDS', async () => {
    const server = await start({ maxSessions: '5', handshakeTimeoutSeconds: '0.4' });
    const client = server.client({ maxRetries: 0 });
    // Five clients open sessions and give up at once (a hostile or buggy client's burst).
    const aborts = Array.from({ length: 5 }, () => new AbortController());
    const ids = aborts.map(() => uniqueId('gone'));
    ids.forEach((id, i) => client.chat.completions.create({ model: id, messages: [{ role: 'user', content: 'ping' }] }, { signal: aborts[i]!.signal }).catch(() => undefined));
    for (const id of ids) await untilHeld(server, id, 'A');
    for (const abort of aborts) abort.abort();
    const refused = await apiError(client.chat.completions.create({ model: uniqueId('newcomer'), messages: [{ role: 'user', content: 'ping' }] }));
    expect(refused.status).toBe(503);
    // A handshake timeout later the slots are free again, and the sessions are gone.
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(ids.map((id) => server.service.ctx.sessions.get(id))).toEqual([undefined, undefined, undefined, undefined, undefined]);
    const newcomer = uniqueId('newcomer');
    const held = apiError(client.chat.completions.create({ model: newcomer, messages: [{ role: 'user', content: 'ping' }] }));
    await untilHeld(server, newcomer, 'A');
    await fetch(`${server.url}/v1/sessions/${newcomer}`, { method: 'DELETE' });
    expect((await held).status).toBe(410);
  });

  it('limit new sessions per client by default when the service listens beyond loopback', () => {
    expect(loadConfig({ host: '0.0.0.0' }, {}).config.newSessionsPerMinute).toBe(NEW_SESSIONS_BEYOND_LOOPBACK);
    expect(loadConfig({ host: '127.0.0.1' }, {}).config.newSessionsPerMinute).toBe(0);
    expect(loadConfig({ host: '0.0.0.0', newSessionsPerMinute: '0' }, {}).config.newSessionsPerMinute).toBe(0); // set: as set
    expect(loadConfig({ host: '0.0.0.0' }, {}).raw.newSessionsPerMinute).toMatch(/not loopback/);
  });
});

describe('graceful shutdown', () => {
  it('answers a held request with 503 and a held stream with an in-stream error, then stops', async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.05' });
    const client = server.client({ maxRetries: 0 });
    const plain = uniqueId('shutdown-plain');
    const streamed = uniqueId('shutdown-stream');

    const heldPlain = apiError(client.chat.completions.create({ model: plain, messages: [{ role: 'user', content: 'ping' }] }));
    const stream = await client.chat.completions.create({ model: streamed, messages: [{ role: 'user', content: 'ping' }], stream: true });
    const heldStream = apiError(
      (async () => {
        for await (const _chunk of stream) {
          // nothing is delivered before the shutdown
        }
      })(),
    );
    await untilHeld(server, plain, 'A');
    await untilHeld(server, streamed, 'A');

    const startedAt = Date.now();
    await server.service.shutdown();
    expect(Date.now() - startedAt).toBeLessThan(5_000);

    const plainError = await heldPlain;
    expect(plainError.status).toBe(503);
    expectOpenAIError({ error: plainError.error }, 'shutting_down');
    expect(plainError.headers?.get('x-should-retry')).toBeNull(); // retryable: with a journal, the retry re-attaches

    const streamError = await heldStream;
    expect(streamError.code).toBe('shutting_down');
    expect(streamError.error).toMatchObject({ type: 'server_error', code: 'shutting_down' });

    // The server no longer listens.
    await expect(fetch(`${server.url}/health`)).rejects.toThrow();
  });
});
