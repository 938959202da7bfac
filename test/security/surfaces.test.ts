// The WebSocket side (GET /v1/realtime) as a surface open to web pages and to floods, through a
// real listening server and real `ws` clients: a page of another site (its Origin) or a hostile
// name pointed at 127.0.0.1 (its Host) is refused before the upgrade, while clients that send no
// Origin, the proxy's own pages and CORS_ORIGINS get in; and `message` frames count against the
// same rate limits as HTTP requests, answered with an error frame on a connection that stays open.
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { FrameClient, type Frame } from '../console/support.js';
import type { TestServer } from '../helpers/server.js';
import { uniqueId, until, useServers } from '../http/support.js';

const sockets: FrameClient[] = [];
afterEach(() => {
  for (const s of sockets.splice(0)) s.close();
});
const start = useServers();

const port = (server: TestServer): string => new URL(server.url).port;
const realtime = (server: TestServer, session: string): string => `ws://127.0.0.1:${port(server)}/v1/realtime?session=${session}&side=A`;

/** A connection that must open: it does, and the side is ready. */
async function joined(url: string, headers: Record<string, string> = {}): Promise<FrameClient> {
  const client = await FrameClient.connect(url, headers);
  sockets.push(client);
  await client.next('ready');
  return client;
}

/** An upgrade that must be refused: its HTTP status and body. */
function refused(url: string, headers: Record<string, string>): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { headers });
    socket.once('open', () => {
      socket.close();
      reject(new Error('the upgrade was accepted'));
    });
    socket.once('unexpected-response', (request, response) => {
      let text = '';
      response.on('data', (chunk: Buffer) => (text += chunk.toString()));
      response.on('end', () => {
        request.destroy();
        resolve({ status: response.statusCode ?? 0, body: JSON.parse(text) });
      });
    });
    socket.once('error', reject);
  });
}

describe('the WebSocket side against web pages (Origin and Host)', () => {
  it("refuses a page of another site with 403 in the contract's shape; lets in clients with no Origin and the proxy's own pages", async () => {
    const server = await start();
    const p = port(server);
    for (const origin of ['https://evil.example', `http://evil.example:${p}`, 'null']) {
      const { status, body } = await refused(realtime(server, uniqueId('o')), { origin });
      expect(status, origin).toBe(403);
      expect(body.error).toMatchObject({ code: 'session_forbidden', type: 'permission_error' });
      expect(body.error.message).toMatch(/origin .* CORS_ORIGINS/);
    }
    // Nobody joined anything.
    expect(server.service.ctx.sessions.size).toBe(0);

    // A bot or a bridge (no Origin), and the console's own page, whatever loopback name it uses.
    await joined(realtime(server, uniqueId('bot')));
    await joined(realtime(server, uniqueId('own')), { origin: `http://127.0.0.1:${p}` });
    await joined(`ws://127.0.0.1:${p}/v1/realtime?session=${uniqueId('own')}&side=A`, { origin: `http://localhost:${p}`, host: `localhost:${p}` });
  });

  it('lets in the origins CORS_ORIGINS lists, and any with *', async () => {
    const listed = await start({ corsOrigins: 'https://game.example, https://ui.example' });
    await joined(realtime(listed, uniqueId('cors')), { origin: 'https://ui.example' });
    expect((await refused(realtime(listed, uniqueId('cors')), { origin: 'https://other.example' })).status).toBe(403);

    const any = await start({ corsOrigins: '*' });
    await joined(realtime(any, uniqueId('any')), { origin: 'https://other.example' });
  });

  it('refuses a Host that is not a loopback name on a loopback service (DNS rebinding), even from that name’s own origin', async () => {
    const server = await start();
    const p = port(server);
    // A rebound page's requests look same-origin: Host and Origin both name the hostile domain.
    const rebound = await refused(realtime(server, uniqueId('dns')), { host: `evil.example:${p}`, origin: `http://evil.example:${p}` });
    expect(rebound.status).toBe(403);
    expect(rebound.body.error.message).toMatch(/Host/);
    expect((await refused(realtime(server, uniqueId('dns')), { host: 'evil.example' })).status).toBe(403);
    await joined(realtime(server, uniqueId('dns')), { host: `[::1]:${p}` });
  });

  it('beyond loopback, leaves Host to the reverse proxy but still checks Origin', async () => {
    const server = await start({ host: '0.0.0.0' });
    const p = port(server);
    await joined(realtime(server, uniqueId('far')), { host: 'proxy.example' });
    await joined(realtime(server, uniqueId('far')), { host: 'proxy.example', origin: 'https://proxy.example' });
    expect((await refused(realtime(server, uniqueId('far')), { host: `proxy.example:${p}`, origin: 'https://evil.example' })).status).toBe(403);
  });
});

describe('WebSocket frames count against the rate limits', () => {
  const accepted = (c: FrameClient): Frame[] => c.frames.filter((f) => f.type === 'accepted');
  const limited = (c: FrameClient): Frame[] => c.frames.filter((f) => f.type === 'error' && f.code === 'rate_limited');

  it('per client: a burst of messages shares RATE_LIMIT_PER_MINUTE with HTTP requests; the rest get error frames and the socket stays open', async () => {
    const server = await start({ rateLimitPerMinute: '5' });
    const session = uniqueId('burst');
    const ws = await joined(realtime(server, session)); // the upgrade is the client's first request
    for (let i = 0; i < 20; i++) ws.send({ type: 'message', content: `m${i} ${'x'.repeat(1000)}`, id: `m${i}` });
    await until(() => accepted(ws).length + limited(ws).length === 20, 'every frame is answered');

    // Four frames fit in the minute's budget, in the order sent; the others were refused, each named.
    expect(accepted(ws).map((f) => f.id)).toEqual(['m0', 'm1', 'm2', 'm3']);
    const refusals = limited(ws);
    expect(refusals.map((f) => f.id)).toEqual(Array.from({ length: 16 }, (_, i) => `m${i + 4}`));
    expect(refusals[0]!.retry_after_seconds).toBeGreaterThan(0);
    expect(refusals[0]!.retry_after_seconds).toBeLessThanOrEqual(60);
    expect(refusals[0]!.message).toMatch(/5 requests per client a minute/);
    // Only what was accepted reached the session: A's handshake, then three messages queued for B.
    expect(server.service.ctx.sessions.get(session)!.context.sides.B.queue).toHaveLength(3);

    // Still open, and the same budget holds for this client's HTTP requests.
    ws.send({ type: 'ping', id: 'still' });
    expect(await ws.next('pong')).toMatchObject({ id: 'still' });
    const http = await fetch(`${server.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: uniqueId('http'), messages: [{ role: 'user', content: 'hi' }] }),
    });
    expect(http.status).toBe(429);
  });

  it('per session: messages count with the session’s HTTP turns under SESSION_RATE_LIMIT_PER_MINUTE', async () => {
    const server = await start({ sessionRateLimitPerMinute: '3', handshakeTimeoutSeconds: '0.05' });
    const session = uniqueId('sess');
    const ws = await joined(realtime(server, session));
    for (let i = 0; i < 4; i++) ws.send({ type: 'message', content: `m${i}`, id: `m${i}` });
    await until(() => accepted(ws).length + limited(ws).length === 4, 'every frame is answered');
    expect(accepted(ws)).toHaveLength(3);
    expect(limited(ws)[0]).toMatchObject({ id: 'm3' });
    expect(limited(ws)[0]!.message).toContain(session);
    // An HTTP client of the same session is over the same limit; another session is not.
    const turn = (model: string) =>
      fetch(`${server.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: `${model}|B`, messages: [{ role: 'user', content: 'hi' }] }),
      });
    expect((await turn(session)).status).toBe(429);
    const other = await joined(realtime(server, uniqueId('other')));
    other.send({ type: 'message', content: 'hello', id: 'h' });
    expect(await other.next('accepted')).toMatchObject({ id: 'h' });
  });

  it('does not count typing frames, but a typed draft holds one message (MAX_MESSAGE_BYTES) at most', async () => {
    const server = await start({ rateLimitPerMinute: '3', sessionRateLimitPerMinute: '2', maxMessageBytes: '1024' });
    const ws = await joined(realtime(server, uniqueId('typing')));
    // A person sends a frame a word, a bridge one a token: many per message, none refused.
    for (let i = 0; i < 50; i++) ws.send({ type: 'typing', delta: 'w ' });
    ws.send({ type: 'message', content: 'done', id: 'one' });
    expect(await ws.next('accepted')).toMatchObject({ id: 'one', content: `${'w '.repeat(50)}done` });
    expect(ws.frames.filter((f) => f.type === 'error')).toEqual([]);

    // Typing beyond one message's size is refused; what fit stays the draft.
    ws.send({ type: 'typing', delta: 'a'.repeat(900) });
    ws.send({ type: 'typing', delta: 'b'.repeat(200) });
    ws.send({ type: 'message', content: '!', id: 'two' });
    expect(await ws.next('error')).toMatchObject({ code: 'payload_too_large' });
    expect(await ws.next('accepted')).toMatchObject({ id: 'two', content: `${'a'.repeat(900)}!` });
  });
});
