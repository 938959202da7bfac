// The WebSocket side (GET /v1/realtime) through a real listening server and a real `ws`
// client: deliveries pushed the moment they are made, no history re-sends, no timeouts, live
// typing shown to the other side's streaming request, reconnects that pick up what was
// missed, and bad frames answered with error frames on a connection that stays open.
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { Participant, sleep, uniqueId, until, untilHeld, useServers } from './support.js';
import type { TestServer } from '../helpers/server.js';
import { sideHolders } from '../../src/http/side-holders.js';

const start = useServers();

type Frame = Record<string, unknown> & { type: string };

/** A `ws` client that records every frame and lets a test wait for the next of a type. */
class Client {
  readonly frames: Frame[] = [];
  private readonly waiters: Array<() => void> = [];
  private taken = 0;
  closed: { code: number; reason: string } | null = null;

  private constructor(readonly socket: WebSocket) {
    socket.on('message', (data) => {
      this.frames.push(JSON.parse(data.toString()) as Frame);
      this.wake();
    });
    socket.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      this.wake();
    });
  }

  static async connect(server: TestServer, query: string): Promise<Client> {
    const socket = new WebSocket(`${server.url.replace('http', 'ws')}/v1/realtime?${query}`);
    const client = new Client(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('error', reject);
    });
    return client;
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  send(frame: unknown): void {
    this.socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** The next frame not yet taken (of `type`, skipping others), waiting up to 5 s. */
  async next(type?: string): Promise<Frame> {
    const deadline = Date.now() + 5_000;
    for (;;) {
      while (this.taken < this.frames.length) {
        const f = this.frames[this.taken++]!;
        if (!type || f.type === type) return f;
      }
      if (this.closed) throw new Error(`socket closed (${this.closed.code}) before a ${type ?? 'frame'} came`);
      if (Date.now() > deadline) throw new Error(`no ${type ?? 'frame'} within 5 s; got ${JSON.stringify(this.frames)}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
  }

  async closedWith(): Promise<{ code: number; reason: string }> {
    await until(() => this.closed !== null, 'the socket closes');
    return this.closed!;
  }

  close(): void {
    this.socket.close();
  }
}

describe('a WebSocket side paired with an OpenAI client', () => {
  it('gets each delivery pushed, needs no history, and its typing streams live to the other side', async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.05' });
    const session = uniqueId('ws');
    const a = new Participant(server.client(), session, { stream: true });
    const handshake = a.say('ping');
    await untilHeld(server, session, 'A');

    const b = await Client.connect(server, `session=${session}&side=B`);
    expect(await b.next('ready')).toMatchObject({ type: 'ready', session, side: 'B', state: 'AWAITING_PEER', deliveries: 0 });
    b.send({ type: 'message', content: 'Welcome, traveller.', id: 'm1' });
    expect(await b.next('accepted')).toEqual({ type: 'accepted', id: 'm1', content: 'Welcome, traveller.', turn: 'connect' });
    expect(await handshake).toBe('Welcome, traveller.');

    // A speaks (streaming): the WebSocket side has it at once, without sending anything.
    const seen: string[] = [];
    const stream = await server.client().chat.completions.create({
      model: session,
      stream: true,
      messages: [...a.history, { role: 'user', content: 'A room, please.' }],
    });
    const reading = (async () => {
      for await (const chunk of stream) {
        const text = chunk.choices[0]?.delta?.content;
        if (text) seen.push(text);
      }
    })();
    expect(await b.next('delivery')).toEqual({ type: 'delivery', content: 'A room, please.', index: 0 });

    // B types; A's held stream shows the text live, before B sends the message.
    await untilHeld(server, session, 'A');
    b.send({ type: 'typing', delta: 'That will be ' });
    await until(() => seen.join('') === 'That will be ', 'the typed text reaches the held stream');
    b.send({ type: 'typing', delta: 'two silver' });
    await until(() => seen.join('') === 'That will be two silver', 'more typed text reaches the held stream');
    b.send({ type: 'message', content: ', paid now.' });
    await reading;
    expect(seen.join('')).toBe('That will be two silver, paid now.');
    expect(await b.next('accepted')).toMatchObject({ content: 'That will be two silver, paid now.', turn: 'message' });

    const transcript = server.service.ctx.sessions.get(session)!.context.sides;
    expect(transcript.A.deliveries).toEqual(['Welcome, traveller.', 'That will be two silver, paid now.']);
    expect(transcript.B.deliveries).toEqual(['A room, please.']);
    b.close();
  });

  it('never times out while waiting, and queues for a side that is away until it reconnects', async () => {
    const server = await start({ turnTimeoutSeconds: '0.2', handshakeTimeoutSeconds: '0.2' });
    const session = uniqueId('ws-wait');
    const a = await Client.connect(server, `session=${session}&side=A`);
    await a.next('ready');
    a.send({ type: 'message', content: 'hello?' }); // A's handshake: recorded, never forwarded
    expect(await a.next('accepted')).toMatchObject({ turn: 'connect' });
    await sleep(500); // longer than both timeouts: a WebSocket wait has no timer
    expect(a.frames.some((f) => f.type === 'error')).toBe(false);

    const b = new Participant(server.client(), session);
    const opening = b.say('Who goes there?');
    expect(await a.next('delivery')).toEqual({ type: 'delivery', content: 'Who goes there?', index: 0 });
    a.send({ type: 'message', content: 'A friend.' });
    expect(await opening).toBe('A friend.');

    // A goes away; B speaks twice; A reconnects and gets both at once, as one delivery.
    a.close();
    await a.closedWith();
    await until(() => server.service.ctx.sessions.get(session)!.context.sides.A.held === null, 'the server sees A gone');
    const next = b.say('Prove it.');
    await expect(next).rejects.toMatchObject({ status: 408 }); // B's own wait times out; nothing is lost
    const again = await Client.connect(server, `session=${session}&side=A&since=0`);
    expect(await again.next('ready')).toMatchObject({ side: 'A', deliveries: 1 });
    // since=0: the delivery it already had comes again, then what was queued.
    expect(await again.next('delivery')).toEqual({ type: 'delivery', content: 'Who goes there?', index: 0 });
    expect(await again.next('delivery')).toEqual({ type: 'delivery', content: 'Prove it.', index: 1 });
    again.close();
  });

  it('finds the free side when none is named', async () => {
    const server = await start();
    const session = uniqueId('ws-free');
    const a = new Participant(server.client(), session);
    const handshake = a.say('ping');
    await untilHeld(server, session, 'A');
    const b = await Client.connect(server, `session=${session}`);
    expect(await b.next('ready')).toMatchObject({ side: 'B' });
    b.send({ type: 'message', content: 'pong' });
    expect(await handshake).toBe('pong');
    b.close();
  });
});

describe('two WebSocket sides', () => {
  it('talk to each other, typing included', async () => {
    const server = await start();
    const session = uniqueId('ws-pair');
    const a = await Client.connect(server, `session=${session}&side=A`);
    const b = await Client.connect(server, `session=${session}&side=B`);
    await a.next('ready');
    await b.next('ready');
    a.send({ type: 'message', content: 'handshake' });
    await a.next('accepted');
    b.send({ type: 'message', content: 'Hello A' });
    expect(await a.next('delivery')).toMatchObject({ content: 'Hello A', index: 0 });
    a.send({ type: 'typing', delta: 'Hel' });
    expect(await b.next('typing')).toEqual({ type: 'typing', delta: 'Hel' });
    a.send({ type: 'message', content: 'lo B' });
    expect(await b.next('delivery')).toEqual({ type: 'delivery', content: 'Hello B', index: 0 });
    // The same text twice is two messages on a WebSocket (never a retry).
    b.send({ type: 'message', content: 'again' });
    expect(await a.next('delivery')).toMatchObject({ content: 'again' });
    a.send({ type: 'message', content: 'same' });
    expect(await b.next('delivery')).toMatchObject({ content: 'same', index: 1 });
    b.send({ type: 'message', content: 'x' });
    await a.next('delivery');
    a.send({ type: 'message', content: 'same' });
    expect(await b.next('delivery')).toMatchObject({ content: 'same', index: 2 });
    a.close();
    b.close();
  });
});

describe('bad input', () => {
  it('answers every bad frame with an error frame and keeps the connection', async () => {
    const server = await start({ maxMessageBytes: '1024' });
    const session = uniqueId('ws-bad');
    const a = await Client.connect(server, `session=${session}&side=A`);
    await a.next('ready');
    const cases: Array<[unknown, string, RegExp]> = [
      ['{not json', 'invalid_json', /not valid JSON/],
      ['[1,2]', 'invalid_request', /JSON object/],
      [{ type: 'shout', content: 'hi' }, 'invalid_request', /type must be one of/],
      [{ type: 'typing' }, 'invalid_request', /delta/],
      [{ type: 'message', content: '   ' }, 'invalid_request', /no text/],
      [{ type: 'message', content: 'x'.repeat(2000) }, 'payload_too_large', /MAX_MESSAGE_BYTES/],
    ];
    for (const [sent, code, message] of cases) {
      a.send(sent);
      const error = await a.next('error');
      expect(error).toMatchObject({ type: 'error', code });
      expect(String(error['message'])).toMatch(message);
    }
    a.socket.send(Buffer.from([1, 2, 3]), { binary: true });
    expect(await a.next('error')).toMatchObject({ code: 'invalid_request', message: expect.stringMatching(/binary/) });
    a.send({ type: 'ping', id: 'p' });
    expect(await a.next('pong')).toEqual({ type: 'pong', id: 'p' });
    a.send({ type: 'message', content: 'still here' });
    expect(await a.next('accepted')).toMatchObject({ content: 'still here' });
    expect(a.closed).toBeNull();
    a.close();
  });

  it('refuses a connection that names no session, and a plain GET, in the contract error shape', async () => {
    const server = await start();
    const c = await Client.connect(server, 'side=A');
    expect(await c.next('error')).toMatchObject({ code: 'invalid_request', message: expect.stringMatching(/session/) });
    expect((await c.closedWith()).code).toBe(1008);
    const bad = await Client.connect(server, 'session=x&side=C');
    expect(await bad.next('error')).toMatchObject({ code: 'invalid_request', message: 'side must be A or B' });

    const plain = await fetch(`${server.url}/v1/realtime?session=x`);
    expect(plain.status).toBe(426);
    expect(((await plain.json()) as { error: { code: string } }).error.code).toBe('upgrade_required');
  });
});

describe('the session ends', () => {
  it('sends a closed frame and closes the socket when the session is deleted', async () => {
    const server = await start();
    const session = uniqueId('ws-del');
    const a = await Client.connect(server, `session=${session}&side=A`);
    await a.next('ready');
    a.send({ type: 'message', content: 'hi' });
    await a.next('accepted');
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect(await a.next('closed')).toMatchObject({ reason: 'session_closed' });
    expect((await a.closedWith()).code).toBe(1000);
  });

  it('tells connected sides the service is shutting down (close code 1012)', async () => {
    const server = await start();
    const session = uniqueId('ws-stop');
    const a = await Client.connect(server, `session=${session}&side=A`);
    await a.next('ready');
    a.send({ type: 'message', content: 'hi' });
    await a.next('accepted');
    await server.close();
    expect(a.frames.find((f) => f.type === 'closed')).toMatchObject({ reason: 'shutting_down' });
    expect((await a.closedWith()).code).toBe(1012);
  });
});

describe('live typing and a streaming client that calls again', () => {
  /** A streaming chat call whose deltas are collected as they come; `abort` cuts it. */
  function streamingCall(server: TestServer, model: string, messages: { role: 'user' | 'assistant'; content: string }[]) {
    const seen: string[] = [];
    const abort = new AbortController();
    const done = (async () => {
      const stream = await server.client({ maxRetries: 0 }).chat.completions.create({ model, stream: true, messages }, { signal: abort.signal });
      for await (const chunk of stream) {
        const text = chunk.choices[0]?.delta?.content;
        if (text) seen.push(text);
      }
      return seen.join('');
    })();
    done.catch(() => undefined);
    return { seen, text: () => seen.join(''), abort: () => abort.abort(), done };
  }

  /** A (OpenAI, streaming) and B (WebSocket) paired: A's handshake answered by B's first message. */
  async function paired(server: TestServer, session: string) {
    const handshake = server.client().chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ping' }] });
    await untilHeld(server, session, 'A');
    const b = await Client.connect(server, `session=${session}&side=B`);
    await b.next('ready');
    b.send({ type: 'message', content: 'Who are you?' });
    expect((await handshake).choices[0]!.message.content).toBe('Who are you?');
    const history: { role: 'user' | 'assistant'; content: string }[] = [{ role: 'user', content: 'ping' }, { role: 'assistant', content: 'Who are you?' }, { role: 'user', content: 'A traveller.' }];
    return { b, history };
  }

  it('a call made again while the other side types shows the whole typed text first: the assembled reply is the message exactly', async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.05' });
    const session = uniqueId('ws-retry-typing');
    const { b, history } = await paired(server, session);

    const first = streamingCall(server, session, history);
    expect(await b.next('delivery')).toMatchObject({ content: 'A traveller.' });
    await untilHeld(server, session, 'A');
    b.send({ type: 'typing', delta: 'Hello ' });
    await until(() => first.text() === 'Hello ', 'the first call shows the typed text');
    first.abort(); // the client gives up on the first call, then calls again with the same messages
    await until(() => server.service.ctx.sessions.get(session)!.context.sides.A.held === null, 'the first call is gone');

    const again = streamingCall(server, session, history);
    await until(() => again.text() === 'Hello ', 'the second call shows what was typed before it came');
    b.send({ type: 'typing', delta: 'there ' });
    await until(() => again.text() === 'Hello there ', 'and what is typed after');
    b.send({ type: 'message', content: 'friend.' });
    expect(await again.done).toBe('Hello there friend.');
    expect(again.seen[0]).toBe('Hello '); // one delta with the whole draft, not a replay of pieces

    // The conversation goes on: A's next turn, with the reply it assembled, is accepted.
    history.push({ role: 'assistant', content: 'Hello there friend.' }, { role: 'user', content: 'Well met.' });
    const next = streamingCall(server, session, history);
    expect(await b.next('delivery')).toMatchObject({ content: 'Well met.' });
    b.send({ type: 'message', content: 'Sit down.' });
    expect(await next.done).toBe('Sit down.');
    b.close();
  });

  it('after the stream times out (STREAM_TURN_TIMEOUT_SECONDS), the next call gets the typed text and the rest, consistently', async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.05', streamTurnTimeoutSeconds: '0.4' });
    const session = uniqueId('ws-timeout-typing');
    const { b, history } = await paired(server, session);
    const first = streamingCall(server, session, history);
    expect(await b.next('delivery')).toMatchObject({ content: 'A traveller.' });
    await untilHeld(server, session, 'A');
    b.send({ type: 'typing', delta: 'Let me think' });
    await until(() => first.text() === 'Let me think', 'the typed text reaches the stream');
    await expect(first.done).rejects.toThrow(/turn timeout|did not answer/);

    const again = streamingCall(server, session, history);
    await until(() => again.text() === 'Let me think', 'the call made again shows the draft');
    b.send({ type: 'message', content: '... yes.' });
    expect(await again.done).toBe('Let me think... yes.');
    expect(server.service.ctx.sessions.get(session)!.context.sides.A.deliveries).toEqual(['Who are you?', 'Let me think... yes.']);
    b.close();
  });

  it('a typist who reconnects carries on from its draft', async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.05' });
    const session = uniqueId('ws-reconnect-typing');
    const { b, history } = await paired(server, session);
    const call = streamingCall(server, session, history);
    expect(await b.next('delivery')).toMatchObject({ content: 'A traveller.' });
    await untilHeld(server, session, 'A');
    b.send({ type: 'typing', delta: 'One moment, ' });
    await until(() => call.text() === 'One moment, ', 'the stream shows the typing');
    b.close();
    await b.closedWith();
    await until(() => !sideHolders(server.service.ctx).has(session, 'B'), 'the side is let go');
    const back = await Client.connect(server, `session=${session}&side=B`);
    expect(await back.next('ready')).toMatchObject({ draft: 'One moment, ' });
    back.send({ type: 'message', content: 'please.' });
    expect(await back.next('accepted')).toMatchObject({ content: 'One moment, please.' });
    expect(await call.done).toBe('One moment, please.');
    back.close();
  });
});
