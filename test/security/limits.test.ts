// Rate limits, CORS preflights, overload protection and slow or oversized clients, through a
// real listening server: each refusal in the route's protocol's error shape with the headers
// clients act on (Retry-After, X-RateLimit-*), and the service unharmed afterwards.
import { connect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { apiError, expectHealthy, uniqueId, until } from '../http/support.js';

const servers: TestServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});
async function start(settings: Parameters<typeof startTestServer>[0]): Promise<TestServer> {
  const server = await startTestServer(settings);
  servers.push(server);
  return server;
}

const chat = (server: TestServer, model: string, headers: Record<string, string> = {}, path = '/v1/chat/completions', body?: unknown) =>
  fetch(`${server.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body ?? { model, messages: [{ role: 'user', content: 'hi' }] }),
  });

describe('rate limits', () => {
  it('per client: 429 with Retry-After and X-RateLimit-* headers, in the route\'s own error shape', async () => {
    const server = await start({ rateLimitPerMinute: '3', handshakeTimeoutSeconds: '0.05' });
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await chat(server, uniqueId('rl'))).status);
    expect(statuses).toEqual([408, 408, 408]);
    const limited = await chat(server, uniqueId('rl'));
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(limited.headers.get('x-ratelimit-limit')).toBe('3');
    expect(limited.headers.get('x-ratelimit-remaining')).toBe('0');
    expect(await limited.json()).toMatchObject({ error: { code: 'rate_limited', type: 'rate_limit_error' } });
    const anthropic = await chat(server, 'x', {}, '/v1/messages', { model: 'x', messages: [{ role: 'user', content: 'hi' }] });
    expect(anthropic.status).toBe(429);
    expect(await anthropic.json()).toMatchObject({ type: 'error', error: { type: 'rate_limit_error' } });
    // Health checks are never limited.
    await expectHealthy(server);
  });

  it('counts clients behind a reverse proxy apart only when TRUST_PROXY names it', async () => {
    for (const trusted of [true, false]) {
      const server = await start({ rateLimitPerMinute: '2', handshakeTimeoutSeconds: '0.05', ...(trusted ? { trustProxy: '127.0.0.1' } : {}) });
      const from = (ip: string) => chat(server, uniqueId('xff'), { 'x-forwarded-for': ip });
      expect((await from('203.0.113.1')).status).toBe(408);
      expect((await from('203.0.113.1')).status).toBe(408);
      expect((await from('203.0.113.1')).status).toBe(429);
      // Another client behind the same proxy has its own budget only if the proxy is trusted.
      expect((await from('203.0.113.2')).status).toBe(trusted ? 408 : 429);
    }
  });

  it('per session, and for new sessions per client, so throwaway names cannot exhaust MAX_SESSIONS', async () => {
    const server = await start({ sessionRateLimitPerMinute: '2', newSessionsPerMinute: '2', handshakeTimeoutSeconds: '0.05' });
    const busy = uniqueId('busy');
    expect((await chat(server, busy)).status).toBe(408);
    expect((await chat(server, busy)).status).toBe(408);
    const third = await chat(server, busy);
    expect(third.status).toBe(429);
    expect(((await third.json()) as { error: { message: string } }).error.message).toContain(busy);

    // The session above counted as this client's first new session; one more is allowed.
    expect((await chat(server, uniqueId('new'))).status).toBe(408);
    const refused = await chat(server, uniqueId('new'));
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as { error: { message: string } }).error.message).toMatch(/new sessions/);
    expect(server.service.ctx.sessions.size).toBeLessThanOrEqual(2);
  });

  it('caps the requests one client holds open at once', async () => {
    const server = await start({ maxHeldPerClient: '2' });
    const client = server.client({ maxRetries: 0 });
    const held = [uniqueId('h1'), uniqueId('h2')].map((model) => client.chat.completions.create({ model, messages: [{ role: 'user', content: 'ping' }] }));
    for (const h of held) h.catch(() => undefined);
    await until(() => server.service.ctx.sessions.size === 2, 'both are held');
    const third = await apiError(client.chat.completions.create({ model: uniqueId('h3'), messages: [{ role: 'user', content: 'ping' }] }));
    expect(third.status).toBe(429);
    expect(third.message).toMatch(/MAX_HELD_PER_CLIENT/);
    // Once one is answered, there is room again.
    await fetch(`${server.url}/v1/sessions/${(await firstSessionId(server))}`, { method: 'DELETE' });
    await until(() => server.service.ctx.sessions.size === 1, 'one session ended');
    const fourth = client.chat.completions.create({ model: uniqueId('h4'), messages: [{ role: 'user', content: 'ping' }] });
    fourth.catch(() => undefined);
    await until(() => server.service.ctx.sessions.size === 2, 'the new request is held');
  });
});

async function firstSessionId(server: TestServer): Promise<string> {
  return [...server.service.ctx.sessions.ids()][0]!;
}

describe('CORS', () => {
  const SDK_HEADERS = [
    'authorization',
    'content-type',
    'x-api-key',
    'anthropic-version',
    'anthropic-dangerous-direct-browser-access',
    'x-stainless-os',
    'x-stainless-lang',
    'x-stainless-package-version',
    'x-stainless-runtime',
    'x-stainless-runtime-version',
    'x-stainless-arch',
    'x-stainless-retry-count',
    'x-stainless-timeout',
    'idempotency-key',
  ].join(',');

  it('is off by default: OPTIONS is 405 and no CORS headers are sent', async () => {
    const server = await start({});
    const response = await fetch(`${server.url}/v1/chat/completions`, { method: 'OPTIONS', headers: { origin: 'https://game.example' } });
    expect(response.status).toBe(405);
    expect(response.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('answers preflights from allowed origins for every header the browser SDKs send, and only from those', async () => {
    const server = await start({ corsOrigins: 'https://game.example, https://ui.example' });
    for (const path of ['/v1/chat/completions', '/v1/messages', '/v1/responses']) {
      const preflight = await fetch(`${server.url}${path}`, {
        method: 'OPTIONS',
        headers: { origin: 'https://game.example', 'access-control-request-method': 'POST', 'access-control-request-headers': SDK_HEADERS },
      });
      expect(preflight.status).toBe(204);
      expect(preflight.headers.get('access-control-allow-origin')).toBe('https://game.example');
      const allowed = (preflight.headers.get('access-control-allow-headers') ?? '').toLowerCase().split(/\s*,\s*/);
      for (const h of SDK_HEADERS.split(',')) expect(allowed).toContain(h);
      expect(preflight.headers.get('access-control-allow-methods')).toContain('POST');
    }
    const stranger = await fetch(`${server.url}/v1/chat/completions`, {
      method: 'OPTIONS',
      headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' },
    });
    expect(stranger.headers.get('access-control-allow-origin')).toBeNull();
    // Actual requests carry the origin and expose the headers SDKs read.
    const actual = await chat(server, uniqueId('cors'), { origin: 'https://ui.example' }, '/v1/chat/completions', { model: 'x', messages: [] });
    expect(actual.headers.get('access-control-allow-origin')).toBe('https://ui.example');
    expect(actual.headers.get('access-control-expose-headers')).toContain('retry-after');
    // The request's id, as each SDK reads it from an error (OpenAI's and Anthropic's header).
    expect(actual.headers.get('access-control-expose-headers')).toContain('x-request-id');
    expect(actual.headers.get('access-control-expose-headers')).toMatch(/(^|,\s*)request-id(,|$)/);
  });
});

describe('overload and slow clients', () => {
  it('answers 503 with Retry-After while the event loop lags, then recovers', async () => {
    const server = await start({ maxEventLoopDelayMs: '50' });
    const answers = async (): Promise<number> => (await chat(server, 'x', {}, '/v1/chat/completions', { model: 'x', messages: [] })).status;
    // Starting the server itself may have lagged the loop: wait until it is calm.
    for (const deadline = Date.now() + 10_000; (await answers()) !== 422; ) {
      if (Date.now() > deadline) throw new Error('the service never got calm');
      await new Promise((r) => setTimeout(r, 50));
    }
    // Block this process's event loop (the server runs in it) well past the limit.
    const until0 = Date.now() + 400;
    while (Date.now() < until0) {
      // busy
    }
    const response = await chat(server, uniqueId('lag'), {}, '/v1/chat/completions', { model: 'x', messages: [] });
    expect(response.status).toBe(503);
    expect(response.headers.get('retry-after')).toBe('1');
    expect(await response.json()).toMatchObject({ error: { code: 'overloaded' } });
    for (const deadline = Date.now() + 10_000; (await answers()) !== 422; ) {
      if (Date.now() > deadline) throw new Error('the service did not recover');
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  /** Sends `head`, then `drip` every 100 ms until the server closes; what it answered and when. */
  async function trickle(server: TestServer, head: string, drip: string): Promise<{ received: string; ms: number }> {
    const { port } = new URL(server.url);
    const socket = connect(Number(port), '127.0.0.1');
    let received = '';
    socket.on('data', (d) => (received += d.toString()));
    const closed = new Promise<number>((resolve) => socket.on('close', () => resolve(Date.now())));
    const started = Date.now();
    socket.write(head);
    const timer = setInterval(() => socket.writable && socket.write(drip), 100);
    const at = await closed;
    clearInterval(timer);
    return { received, ms: at - started };
  }

  it('closes a connection whose headers trickle in too slowly (slowloris)', async () => {
    const server = await start({ headersTimeoutSeconds: '0.5', bodyTimeoutSeconds: '1' });
    const { received, ms } = await trickle(server, 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n', 'X-Slow: 1\r\n');
    expect(ms).toBeLessThan(5_000);
    expect(received).toMatch(/^HTTP\/1.1 408/);
    await expectHealthy(server);
  });

  it('closes a connection whose body trickles in too slowly', async () => {
    const server = await start({ headersTimeoutSeconds: '0.5', bodyTimeoutSeconds: '1' });
    const head = 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"model":';
    const { received, ms } = await trickle(server, head, ' ');
    expect(ms).toBeLessThan(6_000);
    expect(received).toMatch(/^HTTP\/1.1 408/);
    await expectHealthy(server);
  });

  it('refuses a body over MAX_MESSAGE_BYTES without reading it whole', async () => {
    const server = await start({ maxMessageBytes: '4096' });
    const { port } = new URL(server.url);
    const socket = connect(Number(port), '127.0.0.1');
    let received = '';
    socket.on('data', (d) => (received += d.toString()));
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    // Announces 50 MB but sends only a little: the answer must not wait for the rest.
    socket.write('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n{"model":"x"');
    await until(() => received.includes('\r\n\r\n'), 'the 413 arrives', 5_000);
    expect(received).toMatch(/^HTTP\/1.1 413/);
    expect(received).toContain('payload_too_large');
    socket.destroy();
    await closed;
    await expectHealthy(server);
  });
});
