// The Connection header of every response is Node's to decide: a client that sends
// `Connection: close` is told so and its socket is closed, never kept for a request it will not
// send. node-fetch 2 (what SillyTavern's server calls the proxy with) sends `Connection: close`
// on every request while Node 20's global agent keeps sockets alive; when a streamed response
// claimed `keep-alive`, its next request went out on that socket and got a bare 400.
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import fetch from 'node-fetch';
import { describe, expect, it } from 'vitest';
import type { TestServer } from '../helpers/server.js';
import { uniqueId, untilHeld, useServers } from './support.js';

const start = useServers();

/** A raw HTTP/1.1 connection: everything the server sends, and whether it closed its side. */
function rawConnection(server: TestServer) {
  const { port } = new URL(server.url);
  const socket: Socket = connect(Number(port), '127.0.0.1');
  let received = '';
  let ended = false;
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => (received += chunk));
  socket.on('end', () => (ended = true));
  socket.on('error', () => undefined); // a write after the server closed: the test reads what arrived
  const closed = once(socket, 'close');
  return {
    socket,
    ready: once(socket, 'connect'),
    received: () => received,
    ended: () => ended,
    closed,
    send(path: string, body: unknown, headers: Record<string, string> = {}): void {
      const json = JSON.stringify(body);
      const lines = [`POST ${path} HTTP/1.1`, 'Host: 127.0.0.1', 'Content-Type: application/json', `Content-Length: ${Buffer.byteLength(json)}`];
      for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
      socket.write(`${lines.join('\r\n')}\r\n\r\n${json}`);
    },
  };
}

/** The status lines and headers of every response in a raw stream of responses. */
function responseHeads(raw: string): { status: number; headers: Record<string, string> }[] {
  const heads: { status: number; headers: Record<string, string> }[] = [];
  for (const match of raw.matchAll(/HTTP\/1\.1 (\d{3})[^\r\n]*\r\n((?:[^\r\n]+\r\n)*)\r\n/g)) {
    const headers: Record<string, string> = {};
    for (const line of match[2]!.split('\r\n').filter(Boolean)) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
    }
    heads.push({ status: Number(match[1]), headers });
  }
  return heads;
}

async function until(check: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const started = Date.now();
  while (!check()) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Side B has spoken first (explicit side), so A's first request is answered at once. */
async function peerWaiting(server: TestServer, session: string, text: string): Promise<{ reply: Promise<unknown> }> {
  const b = fetch(`${server.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: `${session}|B`, messages: [{ role: 'user', content: text }] }),
  }).then((r) => r.json());
  await untilHeld(server, session, 'B');
  return { reply: b };
}

describe('Connection: close', () => {
  it('is honoured by a streamed response: the response says close, the socket is closed, and a second request on it gets no bare 400', async () => {
    const server = await start();
    const session = uniqueId('conn-close');
    const { reply: b } = await peerWaiting(server, session, 'b1');
    const conn = rawConnection(server);
    await conn.ready;
    conn.send('/v1/chat/completions', { model: `${session}|A`, stream: true, messages: [{ role: 'user', content: 'ping' }] }, { Connection: 'close' });
    await until(() => conn.received().includes('data: [DONE]') || conn.ended(), 'the stream ended');
    // The client sends its next request on the same socket at once, as a pooling agent would.
    conn.send('/v1/chat/completions', { model: `${session}|A`, stream: true, messages: [{ role: 'user', content: 'ping' }, { role: 'assistant', content: 'b1' }, { role: 'user', content: 'a1' }] }, { Connection: 'close' });
    await conn.closed;

    const heads = responseHeads(conn.received());
    expect(heads).toHaveLength(1); // the second request was never read, so never refused
    expect(heads[0]!.status).toBe(200);
    expect(heads[0]!.headers['content-type']).toMatch(/^text\/event-stream/);
    expect(heads[0]!.headers['connection']).toBe('close');
    expect(conn.received()).toContain('"content":"b1"');
    expect(conn.received()).not.toMatch(/Client Error|400 Bad Request/);
    expect(conn.ended()).toBe(true);
    // The session is intact: B's wait is still open (A's second request never arrived).
    expect(server.service.ctx.sessions.get(session)?.context.sides.B.held).not.toBeNull();
    await server.close();
    await b.catch(() => undefined);
  });

  it('is honoured by plain responses and errors too, while a keep-alive connection carries several streamed turns', async () => {
    const server = await start();
    const session = uniqueId('conn-keep');
    const { reply: b } = await peerWaiting(server, session, 'b1');

    // Keep-alive (HTTP/1.1's default): two streamed responses on one socket, both keep-alive.
    const conn = rawConnection(server);
    await conn.ready;
    conn.send('/v1/chat/completions', { model: `${session}|A`, stream: true, messages: [{ role: 'user', content: 'ping' }] });
    await until(() => conn.received().includes('data: [DONE]'), 'the first stream ended');
    conn.send('/v1/chat/completions', { model: `${session}|A`, messages: [] });
    await until(() => responseHeads(conn.received()).length === 2 && conn.received().endsWith('}'), 'the second response');
    const heads = responseHeads(conn.received());
    expect(heads.map((h) => h.status)).toEqual([200, 422]);
    expect(heads.every((h) => h.headers['connection'] === 'keep-alive')).toBe(true);
    expect(conn.ended()).toBe(false);
    conn.socket.destroy();

    // Connection: close on an error response: told so, and closed.
    const closing = rawConnection(server);
    await closing.ready;
    closing.send('/v1/chat/completions', { model: `${session}|A` }, { Connection: 'close' });
    await closing.closed;
    const [head] = responseHeads(closing.received());
    expect(head!.status).toBe(422);
    expect(head!.headers['connection']).toBe('close');
    await server.close();
    await b.catch(() => undefined);
  });

  it('is honoured on the WebSocket upgrade path when the upgrade is refused', async () => {
    const server = await start({ apiKeys: 'right-key' });
    const conn = rawConnection(server);
    await conn.ready;
    conn.socket.write(
      [
        'GET /v1/realtime?session=ws-refused&side=A HTTP/1.1',
        'Host: 127.0.0.1',
        'Connection: Upgrade',
        'Upgrade: websocket',
        'Sec-WebSocket-Version: 13',
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
        'Authorization: Bearer wrong-key',
        '',
        '',
      ].join('\r\n'),
    );
    await conn.closed;
    const [head] = responseHeads(conn.received());
    expect(head!.status).toBe(401);
    expect(head!.headers['connection']).toBe('close');
    expect(head!.headers['upgrade']).toBeUndefined();
  });

  it('answers a request the HTTP parser refuses in the contract\'s error shape, and logs it', async () => {
    const server = await start();
    const conn = rawConnection(server);
    await conn.ready;
    conn.socket.write('POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ' + 'x'.repeat(20_000) + '\r\n\r\n');
    await conn.closed;
    const [head] = responseHeads(conn.received());
    expect(head!.status).toBe(431);
    expect(head!.headers['connection']).toBe('close');
    const body = JSON.parse(conn.received().slice(conn.received().indexOf('\r\n\r\n') + 4)) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('headers_too_large');
    expect(body.error.message).toMatch(/headers/);
  });
});

describe('node-fetch 2 (as SillyTavern calls the proxy)', () => {
  /**
   * One streamed turn through node-fetch 2 with Node's global agent (keep-alive in Node 20).
   * node-fetch up to 2.6.11 (the version pinned here, as in SillyTavern's lockfile) adds
   * `Connection: close` to every request made without an agent of its own, while the global
   * agent still pools the socket whenever the response claims keep-alive.
   */
  async function streamedTurn(server: TestServer, model: string, messages: { role: string; content: string }[]): Promise<string> {
    const response = await fetch(`${server.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model, stream: true, messages }),
    });
    expect(response.status).toBe(200);
    const sse = await response.text();
    let text = '';
    for (const line of sse.split('\n')) {
      if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
      text += (JSON.parse(line.slice(6)) as { choices: { delta: { content?: string } }[] }).choices[0]?.delta.content ?? '';
    }
    return text;
  }

  it('carries streamed turn after streamed turn in quick succession, none lost', async () => {
    const server = await start();
    const session = uniqueId('st-stream');
    const peer = server.client({ maxRetries: 0 });
    const history: { role: string; content: string }[] = [{ role: 'system', content: 'You are the innkeeper.' }];
    const bHistory: { role: 'user' | 'assistant'; content: string }[] = [];

    // A is the chat UI (node-fetch 2, streaming); B answers with the OpenAI SDK.
    history.push({ role: 'user', content: 'Hello?' });
    const first = streamedTurn(server, session, history);
    await untilHeld(server, session, 'A');
    let bTurn = peer.chat.completions.create({ model: session, messages: [...bHistory, { role: 'user', content: 'Welcome, traveller.' }] });
    bHistory.push({ role: 'user', content: 'Welcome, traveller.' });
    history.push({ role: 'assistant', content: await first });
    expect(history[history.length - 1]!.content).toBe('Welcome, traveller.');

    for (let i = 1; i <= 4; i++) {
      // The UI's next streamed turn follows the previous one at once, on the agent's pooled socket.
      history.push({ role: 'user', content: `A says ${i}` });
      const turn = streamedTurn(server, session, history);
      const heard = (await bTurn).choices[0]!.message.content!;
      expect(heard).toBe(`A says ${i}`);
      bHistory.push({ role: 'assistant', content: heard }, { role: 'user', content: `B says ${i}` });
      bTurn = peer.chat.completions.create({ model: session, messages: [...bHistory] });
      history.push({ role: 'assistant', content: await turn });
      expect(history[history.length - 1]!.content).toBe(`B says ${i}`);
    }
    await server.close();
    await bTurn.catch(() => undefined);
  });
});
