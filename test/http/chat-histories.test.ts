// Histories as real chat clients build them (PROTOCOL.md §2–3), through a real listening server
// and the official SDKs: a chat UI's character greeting before the first user message (a
// preamble), several user messages in a row (a UI that kept a failed message, a user who
// pressed send twice, a Python client building its own list), instructions a UI injects after
// the user's message, and a superseded request sent again. Each message is delivered exactly
// once, in order, and nothing the client says of itself is forwarded.
import Anthropic from '@anthropic-ai/sdk';
import type { ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import { describe, expect, it } from 'vitest';
import type { TestServer } from '../helpers/server.js';
import { apiError, rawPost, sleep, uniqueId, until, untilHeld, useServers } from './support.js';

const start = useServers();

type Message = ChatCompletionMessageParam;
const user = (content: string): Message => ({ role: 'user', content });
const assistant = (content: string): Message => ({ role: 'assistant', content });
const system = (content: string): Message => ({ role: 'system', content });

/** The content of one plain chat completion. */
async function complete(server: TestServer, model: string, messages: Message[], options: { maxRetries?: number; signal?: AbortSignal } = {}): Promise<string> {
  const client = server.client({ maxRetries: options.maxRetries ?? 0 });
  const completion = await client.chat.completions.create({ model, messages }, options.signal ? { signal: options.signal } : {});
  return completion.choices[0]!.message.content ?? '';
}

/** Everything side `side` has been given so far, one entry per response. */
const deliveries = (server: TestServer, session: string, side: 'A' | 'B'): readonly string[] =>
  server.service.ctx.sessions.get(session)?.context.sides[side].deliveries ?? [];

describe('a preamble: assistant messages before the first user message', () => {
  const GREETING = '*The innkeeper looks up from the counter.* "Welcome to the Prancing Pony! What can I get you?"';

  it('starts a SillyTavern-style chat whose history opens with the character greeting; the greeting is kept, never compared or forwarded', async () => {
    const server = await start();
    const session = uniqueId('greeting');
    // Side A: a chat UI with a character card (system prompt, then the card's first message).
    const ui: Message[] = [system("You are Barliman, the innkeeper. Stay in character."), assistant(GREETING), user('An ale, please.')];
    const handshake = complete(server, session, ui);
    await untilHeld(server, session, 'A');
    // Side B: an agent that plays the innkeeper, starting with a greeting of its own too.
    const agent: Message[] = [assistant('(You are playing Barliman.)'), user('*pours an ale* Here you are, friend.')];
    const bFirst = complete(server, session, agent);
    expect(await handshake).toBe('*pours an ale* Here you are, friend.');
    ui.push(assistant('*pours an ale* Here you are, friend.'), user('Any news from the road?'));
    const aSecond = complete(server, session, ui);
    expect(await bFirst).toBe('Any news from the road?');
    agent.push(assistant('Any news from the road?'), user('Black riders, they say.'));
    const bSecond = complete(server, session, agent);
    expect(await aSecond).toBe('Black riders, they say.');

    // Nothing of either greeting reached the other side; both are in the transcript, as preambles.
    expect(deliveries(server, session, 'A')).toEqual(['*pours an ale* Here you are, friend.', 'Black riders, they say.']);
    expect(deliveries(server, session, 'B')).toEqual(['Any news from the road?']);
    const transcript = server.service.ctx.sessions.get(session)!.context.transcript;
    expect(transcript.filter((e) => e.kind === 'preamble').map((e) => [e.side, e.content])).toEqual([
      ['A', GREETING],
      ['B', '(You are playing Barliman.)'],
    ]);
    expect(transcript.filter((e) => e.kind === 'preamble')).toHaveLength(2); // recorded once each, not per turn
    const download = await fetch(`${server.url}/admin/sessions/${session}/transcript?format=json`);
    expect(download.status).toBe(200);
    await server.close();
    await bSecond.catch(() => undefined);
  });

  it('with the Anthropic SDK: a history opening with an assistant turn is not refused', async () => {
    const server = await start();
    const session = uniqueId('greeting-anthropic');
    const anthropic = new Anthropic({ baseURL: server.url, apiKey: 'unused', maxRetries: 0 });
    const a = anthropic.messages.create({
      model: session,
      max_tokens: 100,
      system: 'You are a dragon.',
      messages: [{ role: 'assistant', content: 'ROAR.' }, { role: 'user', content: 'Who dares?' }],
    });
    await untilHeld(server, session, 'A');
    const b = complete(server, session, [user('Sir Gawain.')]);
    const message = await a;
    expect(message.content).toEqual([{ type: 'text', text: 'Sir Gawain.' }]);
    expect(server.service.ctx.sessions.get(session)!.context.sides.A.preamble).toBe('ROAR.');
    await server.close();
    await b.catch(() => undefined);
  });
});

describe('several user messages after the last assistant message', () => {
  /** A's handshake answered by B's b1; B is held. Returns B's pending request. */
  async function opened(server: TestServer, session: string): Promise<{ b: Promise<string> }> {
    const handshake = complete(server, session, [user('ping')]);
    await untilHeld(server, session, 'A');
    const b = complete(server, session, [user('b1')]);
    expect(await handshake).toBe('b1');
    return { b };
  }

  it('delivers all of them, in order, joined by a blank line (a Python client building its own list)', async () => {
    const server = await start();
    const session = uniqueId('two-in-a-row');
    const { b } = await opened(server, session);
    const a = complete(server, session, [user('ping'), assistant('b1'), user('First thought.'), user('Second thought.')]);
    expect(await b).toBe('First thought.\n\nSecond thought.');
    expect(server.service.ctx.sessions.get(session)!.context.sides.A.lastTurn?.content).toBe('First thought.\n\nSecond thought.');
    await server.close();
    await a.catch(() => undefined);
  });

  it('a UI that kept a failed message: the one already sent is not sent again, the new one is', async () => {
    const server = await start();
    const session = uniqueId('kept-failed');
    const handshake = complete(server, session, [user('ping')]);
    await untilHeld(server, session, 'A');
    const bFirst = complete(server, session, [user('b1')]);
    expect(await handshake).toBe('b1');
    expect(await Promise.race([bFirst.then(() => 'answered'), sleep(50).then(() => 'held')])).toBe('held');

    // A's request with "a1" reaches the proxy (a1 goes to B at once), then A's client gives up.
    const abort = new AbortController();
    const lost = complete(server, session, [user('ping'), assistant('b1'), user('a1')], { signal: abort.signal });
    expect(await bFirst).toBe('a1');
    await untilHeld(server, session, 'A');
    abort.abort();
    await lost.catch(() => undefined);
    await until(() => server.service.ctx.sessions.get(session)!.context.sides.A.held === null, "A's request is gone");

    // The UI kept a1 in its history and sends a2 after it: only a2 is new.
    const bWaits = complete(server, session, [user('b1'), assistant('a1'), user('b2?')]);
    await untilHeld(server, session, 'B');
    const a = complete(server, session, [user('ping'), assistant('b1'), user('a1'), user('a2')]);
    expect(await a).toBe('b2?'); // A gets B's queued b2? at once
    const bNext = complete(server, session, [user('b1'), assistant('a1'), user('b2?'), assistant('a2'), user('b3')]);
    expect(await bWaits).toBe('a2');
    expect(deliveries(server, session, 'B')).toEqual(['a1', 'a2']); // a1 exactly once
    await server.close();
    await bNext.catch(() => undefined);
  });

  it('a user who pressed send twice: the same text twice in a row is sent twice', async () => {
    const server = await start();
    const session = uniqueId('send-twice');
    const { b } = await opened(server, session);
    const a = complete(server, session, [user('ping'), assistant('b1'), user('Hello?'), user('Hello?')]);
    expect(await b).toBe('Hello?\n\nHello?');
    await server.close();
    await a.catch(() => undefined);
  });

  it('ignores instructions a UI injects after the user message (a system message last)', async () => {
    const server = await start();
    const session = uniqueId('post-history');
    const { b } = await opened(server, session);
    const a = complete(server, session, [user('ping'), assistant('b1'), user('I draw my sword.'), system('[Write one reply only, in character.]')]);
    expect(await b).toBe('I draw my sword.');
    expect(server.service.ctx.sessions.get(session)!.context.sides.A.system).toBe('[Write one reply only, in character.]');
    await server.close();
    await a.catch(() => undefined);
  });

  it('refuses a history that ends with an assistant message: there is nothing new to send (422)', async () => {
    const server = await start();
    const session = uniqueId('ends-assistant');
    const err = await apiError(complete(server, session, [user('hi'), assistant('hello')]));
    expect(err.status).toBe(422);
    expect(err.message).toMatch(/ends with an assistant message/);
    expect(server.service.ctx.sessions.get(session)).toBeUndefined();
  });
});

describe('a delivery its client never read', () => {
  it('is given again, at once, to the client\'s next turn whose history stops short of it; the new message still goes on', async () => {
    const server = await start();
    const session = uniqueId('missed');
    const handshake = complete(server, session, [user('ping')]);
    await untilHeld(server, session, 'A');
    const bFirst = complete(server, session, [user('b1')]);
    expect(await handshake).toBe('b1');
    const aFirst = complete(server, session, [user('ping'), assistant('b1'), user('a1')]);
    expect(await bFirst).toBe('a1');
    await untilHeld(server, session, 'A');
    // B's b2 is written to A's held request, but A's client was gone by then and never reads it.
    const bSecond = complete(server, session, [user('b1'), assistant('a1'), user('b2')]);
    await aFirst; // (the proxy wrote it; the application drops it, as a client that aborted would)
    await untilHeld(server, session, 'B');
    // A goes on from the history it holds: it is answered with b2 at once, and a2 reaches B.
    const aNext = complete(server, session, [user('ping'), assistant('b1'), user('a1'), user('a2')]);
    expect(await aNext).toBe('b2');
    expect(await bSecond).toBe('a2');
    // From then on A's history matches what it was given, in order.
    const bThird = complete(server, session, [user('b1'), assistant('a1'), user('b2'), assistant('a2'), user('b3')]);
    const aThird = complete(server, session, [user('ping'), assistant('b1'), user('a1'), user('a2'), assistant('b2'), user('a3')]);
    expect(await aThird).toBe('b3');
    expect(await bThird).toBe('a3');
    expect(deliveries(server, session, 'A')).toEqual(['b1', 'b2', 'b3']);
    expect(deliveries(server, session, 'B')).toEqual(['a1', 'a2', 'a3']);
  });
});

describe('a superseded request sent again (PROTOCOL.md §2: a re-sent body is a retry)', () => {
  it('two requests of one side in flight, then the later and the earlier re-sent: each message reaches the other side once', async () => {
    const server = await start();
    const session = uniqueId('resend');
    const handshake = complete(server, session, [user('ping')]);
    await untilHeld(server, session, 'A');
    const bWaits = complete(server, session, [user('b1')]);
    expect(await handshake).toBe('b1');
    // B's wait is answered by A1 at once; B's next request then waits.
    const first = complete(server, session, [user('ping'), assistant('b1'), user('A1')]);
    expect(await bWaits).toBe('A1');
    await untilHeld(server, session, 'A');
    // A sends A2 before an answer to A1 (a UI that let the user type on): A1's request is superseded.
    const second = complete(server, session, [user('ping'), assistant('b1'), user('A1'), user('A2')]);
    expect((await apiError(first)).status).toBe(409);
    await untilHeld(server, session, 'A');
    // Both bodies are sent again (a client that retries on its own): both are retries.
    const again = rawPost(server, '/v1/chat/completions', JSON.stringify({ model: session, messages: [user('ping'), assistant('b1'), user('A1'), user('A2')] }));
    expect((await apiError(second)).status).toBe(409); // superseded by its own retry, which takes over
    await untilHeld(server, session, 'A');
    const earlier = rawPost(server, '/v1/chat/completions', JSON.stringify({ model: session, messages: [user('ping'), assistant('b1'), user('A1')] }));
    expect((await again).status).toBe(409);
    await untilHeld(server, session, 'A');

    // B now receives: A2 (queued once), nothing of A1 again.
    const bNext = complete(server, session, [user('b1'), assistant('A1'), user('b2')]);
    expect(await bNext).toBe('A2');
    expect((await earlier).json.choices[0].message.content).toBe('b2');
    expect(deliveries(server, session, 'B')).toEqual(['A1', 'A2']);
    const aTurns = server.service.ctx.sessions.get(session)!.context.transcript.filter((e) => e.side === 'A' && e.kind === 'message');
    expect(aTurns.map((e) => e.content)).toEqual(['A1', 'A2']);
  });
});
