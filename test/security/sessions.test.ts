// What a hostile client can do to other people's sessions, through a real listening server:
// a client whose key is not a session's cannot spend that session's rate budget (authorisation
// comes first), and one side cannot queue without bound for a side that is not reading
// (MAX_QUEUED_BYTES_PER_SIDE), over HTTP or a WebSocket.
import OpenAI from 'openai';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { apiError, expectOpenAIError, uniqueId, until, untilHeld, useServers } from '../http/support.js';

const start = useServers();
const user = (content: string) => ({ role: 'user' as const, content });
const asst = (content: string) => ({ role: 'assistant' as const, content });

describe('a client that is not a side of a session', () => {
  it('is refused before the session\'s rate budget is counted, so the real sides are never throttled by it', async () => {
    const server = await start({ apiKeys: 'key-alice,key-bob,key-eve', sessionRateLimitPerMinute: '4' });
    const as = (key: string) => new OpenAI({ baseURL: `${server.url}/v1`, apiKey: key, maxRetries: 0 });
    const session = uniqueId('budget');
    const handshake = as('key-alice').chat.completions.create({ model: session, messages: [user('ping')] });
    await untilHeld(server, session, 'A');
    const b1 = as('key-bob').chat.completions.create({ model: session, messages: [user('b1')] });
    expect((await handshake).choices[0]!.message.content).toBe('b1');

    // Eve hammers the session: every request is 403, none 429, and none counts.
    for (let i = 0; i < 12; i++) {
      const err = await apiError(as('key-eve').chat.completions.create({ model: session, messages: [user(`spam ${i}`)] }));
      expect(err.status).toBe(403);
      expectOpenAIError({ error: err.error }, 'session_forbidden');
    }
    // Alice's next turn is within the session's budget (2 of 4 used).
    const a1 = as('key-alice').chat.completions.create({ model: session, messages: [user('ping'), asst('b1'), user('a1')] });
    expect((await b1).choices[0]!.message.content).toBe('a1');
    await untilHeld(server, session, 'A');
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE', headers: { authorization: 'Bearer key-alice' } });
    expect((await apiError(a1)).status).toBe(410);
  });
});

describe('MAX_QUEUED_BYTES_PER_SIDE', () => {
  it('refuses a turn that would queue more for a side that is not reading (429 queue_full), and takes it once the side has read', async () => {
    const server = await start({ maxQueuedBytesPerSide: '2048' });
    const client = server.client({ maxRetries: 0 });
    const session = uniqueId('queue-cap');
    const handshake = client.chat.completions.create({ model: session, messages: [user('ping')] });
    await untilHeld(server, session, 'A');
    const leave = new AbortController();
    const b1 = client.chat.completions.create({ model: `${session}|B`, messages: [user('b1')] }, { signal: leave.signal });
    b1.catch(() => undefined);
    expect((await handshake).choices[0]!.message.content).toBe('b1');
    await untilHeld(server, session, 'B');
    leave.abort(); // B gives up waiting: it is not reading now
    await until(() => server.service.ctx.sessions.get(session)?.context.sides.B.held === null, 'B left');

    const big = (n: number) => `${n}`.padEnd(900, '.');
    const history = [user('ping'), asst('b1')];
    const send = (i: number) => client.chat.completions.create({ model: `${session}|A`, messages: [...history, user(big(i))] }, { signal: AbortSignal.timeout(100) });
    await send(1).catch(() => undefined);
    history.push(user(big(1)));
    await send(2).catch(() => undefined);
    history.push(user(big(2)));
    const refused = await apiError(send(3));
    expect(refused.status).toBe(429);
    expectOpenAIError({ error: refused.error }, 'queue_full');
    expect(refused.message).toMatch(/MAX_QUEUED_BYTES_PER_SIDE \(2048 bytes\)/);
    expect(refused.headers?.get('retry-after')).toBe('5');
    expect(server.service.ctx.sessions.get(session)!.context.sides.B.queue).toHaveLength(2);

    // B reads what waits for it; then A's third message fits.
    const read = client.chat.completions.create({ model: `${session}|B`, messages: [user('b1'), user('b2')] }).catch(() => null);
    void read;
    await until(() => server.service.ctx.sessions.get(session)!.context.sides.B.queue.length === 0, 'B read its queue');
    expect(server.service.ctx.sessions.get(session)!.context.sides.B.deliveries.at(-1)).toBe(`${big(1)}\n\n${big(2)}`);
  });

  it('answers a WebSocket message frame beyond it with an error frame, and keeps the connection', async () => {
    const server = await start({ maxQueuedBytesPerSide: '2048' });
    const session = uniqueId('queue-cap-ws');
    const ws = new WebSocket(`${server.url.replace('http', 'ws')}/v1/realtime?session=${session}&side=B`);
    const frames: { type: string; code?: string }[] = [];
    ws.on('message', (d) => frames.push(JSON.parse(d.toString()) as { type: string; code?: string }));
    await new Promise((resolve) => ws.once('open', resolve));
    // B speaks first (explicit side); A never reads.
    for (let i = 0; i < 3; i++) ws.send(JSON.stringify({ type: 'message', content: `${i}`.padEnd(900, '.') }));
    await until(() => frames.some((f) => f.type === 'error'), 'an error frame');
    expect(frames.filter((f) => f.type === 'accepted')).toHaveLength(2);
    expect(frames.find((f) => f.type === 'error')).toMatchObject({ code: 'queue_full' });
    expect(ws.readyState).toBe(WebSocket.OPEN);
    ws.close();
  });
});
