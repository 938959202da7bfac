// Edges of HTTP itself (issue 13), through a real listening server, with raw sockets where the
// bytes matter: bodies that do not match their framing, key guessing, models that no URL can
// name, methods that no route takes, and bodies over MAX_MESSAGE_BYTES that must still be
// answered. Every answer is in the contract's error shape (PROTOCOL.md §7).
import { request as httpRequest } from 'node:http';
import { connect, type Socket } from 'node:net';
import OpenAI from 'openai';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { FailedKeyLimit } from '../../src/http/access.js';
import type { TestServer } from '../helpers/server.js';
import { apiError, expectHealthy, expectOpenAIError, rawPost, sleep, uniqueId, useServers } from '../http/support.js';

const start = useServers();
const portOf = (server: TestServer): number => Number(new URL(server.url).port);

interface RawAnswer {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: any;
  /** Whether the server closed the connection. */
  readonly closed: boolean;
}

/** The first whole response in `raw` (a Content-Length body), or null while it is incomplete. */
function firstResponse(raw: Buffer): Omit<RawAnswer, 'closed'> | null {
  const end = raw.indexOf('\r\n\r\n');
  if (end === -1) return null;
  const [statusLine, ...lines] = raw.subarray(0, end).toString('latin1').split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
  }
  const length = Number(headers['content-length'] ?? 0);
  if (raw.length < end + 4 + length) return null;
  const text = raw.subarray(end + 4, end + 4 + length).toString('utf8');
  return { status: Number(statusLine!.split(' ')[1]), headers, body: text ? JSON.parse(text) : null };
}

/**
 * Sends `bytes` on a new connection (then closes the client's side, with `halfClose`) and waits
 * for the first response and for the server to close, or `waitMs`.
 */
function exchange(server: TestServer, bytes: string, { halfClose = false, waitMs = 5_000 } = {}): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port: portOf(server), host: '127.0.0.1', allowHalfOpen: true });
    let raw = Buffer.alloc(0);
    let closed = false;
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      const answer = firstResponse(raw);
      if (answer) resolve({ ...answer, closed });
      else reject(new Error(`no whole response within ${waitMs} ms: ${JSON.stringify(raw.toString('latin1').slice(0, 300))}`));
    };
    const timer = setTimeout(finish, waitMs);
    socket.on('data', (d: Buffer) => (raw = Buffer.concat([raw, d])));
    socket.on('end', () => {
      closed = true;
      finish();
    });
    socket.on('error', () => undefined); // a reset after the answer: what arrived is what counts
    socket.on('close', finish);
    if (halfClose) socket.end(bytes);
    else socket.write(bytes);
  });
}

/** The first response on a connection the server keeps open (keep-alive). */
async function firstAnswer(server: TestServer, bytes: string): Promise<RawAnswer> {
  const socket = connect(portOf(server), '127.0.0.1');
  let raw = Buffer.alloc(0);
  socket.on('data', (d: Buffer) => (raw = Buffer.concat([raw, d])));
  socket.on('error', () => undefined);
  socket.write(bytes);
  for (const deadline = Date.now() + 5_000; firstResponse(raw) === null; await sleep(5)) {
    if (Date.now() > deadline) throw new Error(`no response: ${raw.toString('latin1').slice(0, 300)}`);
  }
  socket.destroy();
  return { ...firstResponse(raw)!, closed: false };
}

const CHAT = JSON.stringify({ model: 'edge', messages: [{ role: 'user', content: 'hi' }] });
const head = (lines: string[]): string => `${['POST /v1/chat/completions HTTP/1.1', 'Host: 127.0.0.1', 'Content-Type: application/json', ...lines].join('\r\n')}\r\n\r\n`;

function expectContractError(answer: RawAnswer, status: number, code: string): void {
  expect(answer.status).toBe(status);
  expect(answer.headers['content-type']).toMatch(/^application\/json/);
  expectOpenAIError(answer.body, code);
}

describe('a body that does not match its framing', () => {
  it('Content-Length larger than the body: 408 request_timeout after BODY_TIMEOUT_SECONDS, then the connection closes', async () => {
    const server = await start({ bodyTimeoutSeconds: '1', headersTimeoutSeconds: '1' });
    const started = Date.now();
    const answer = await exchange(server, head([`Content-Length: ${CHAT.length + 20}`]) + CHAT);
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expectContractError(answer, 408, 'request_timeout');
    expect(answer.headers['connection']).toBe('close');
    expect(answer.closed).toBe(true);
    expect(server.service.ctx.sessions.size).toBe(0);
  });

  it('Content-Length larger than the body, then the client closes its side: 400 bad_request at once', async () => {
    const server = await start({});
    const answer = await exchange(server, head([`Content-Length: ${CHAT.length + 20}`]) + CHAT, { halfClose: true });
    expectContractError(answer, 400, 'bad_request');
    expect(answer.body.error.message).toMatch(/closed before the request was sent in full/);
  });

  it('Content-Length smaller than the body: the extra bytes are read as a next request and refused with 400 bad_request', async () => {
    const server = await start({ handshakeTimeoutSeconds: '0.2' });
    // Cut inside the JSON, and cut after a whole JSON object: either way the rest is no request.
    for (const length of [CHAT.length - 5, CHAT.length]) {
      const answer = await exchange(server, head([`Content-Length: ${length}`]) + CHAT + (length === CHAT.length ? 'XYZ' : ''));
      expectContractError(answer, 400, 'bad_request');
      expect(answer.closed).toBe(true);
    }
    await expectHealthy(server);
  });

  it('both Content-Length and Transfer-Encoding: 400 bad_request, and nothing reaches a session', async () => {
    const server = await start({});
    const chunked = `${CHAT.length.toString(16)}\r\n${CHAT}\r\n0\r\n\r\n`;
    for (const framing of [
      [`Content-Length: ${CHAT.length}`, 'Transfer-Encoding: chunked'],
      ['Transfer-Encoding: chunked', `Content-Length: ${CHAT.length}`],
      ['Transfer-Encoding: chunked', 'Content-Length: 3'],
    ]) {
      const answer = await exchange(server, head(framing) + chunked);
      expectContractError(answer, 400, 'bad_request');
      expect(answer.body.error.message).toMatch(/Content-Length/);
      expect(answer.closed).toBe(true);
    }
    expect(server.service.ctx.sessions.size).toBe(0);
  });

  it('headers over 16 KB: 431 headers_too_large', async () => {
    const server = await start({});
    const answer = await exchange(server, head([`X-Padding: ${'a'.repeat(20_000)}`, `Content-Length: ${CHAT.length}`]) + CHAT);
    expectContractError(answer, 431, 'headers_too_large');
    expect(answer.closed).toBe(true);
  });
});

describe('failed API keys per address (FAILED_KEYS_PER_MINUTE)', () => {
  const KEY = 'sk-right-0123456789';
  const sdk = (server: TestServer, apiKey: string) => new OpenAI({ baseURL: `${server.url}/v1`, apiKey, maxRetries: 0 });
  const models = (server: TestServer, key: string, headers: Record<string, string> = {}) =>
    fetch(`${server.url}/v1/models`, { headers: { authorization: `Bearer ${key}`, ...headers } });

  it('refuses an address past the limit with 429 and Retry-After until its minute ends, even with the right key, in each route\'s shape', async () => {
    const server = await start({ apiKeys: KEY, failedKeysPerMinute: '3' });
    expect((await models(server, KEY)).status).toBe(200);
    for (let i = 0; i < 3; i++) {
      const wrong = await apiError(sdk(server, `sk-guess-${i}`).models.list());
      expect(wrong.status).toBe(401);
    }
    const guess = await apiError(sdk(server, 'sk-guess-3').models.list());
    expect(guess.status).toBe(429);
    const right = await apiError(sdk(server, KEY).chat.completions.create({ model: uniqueId('blocked'), messages: [{ role: 'user', content: 'hi' }] }));
    expect(right.status).toBe(429);
    expect(right.code).toBe('rate_limited');
    expect(right.message).toMatch(/FAILED_KEYS_PER_MINUTE/);
    const retryAfter = Number(right.headers?.get('retry-after'));
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(60);
    const anthropic = await rawPost(server, '/v1/messages', JSON.stringify({ model: 'x', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }), {
      'content-type': 'application/json',
      'x-api-key': KEY,
    });
    expect(anthropic.status).toBe(429);
    expect(anthropic.json).toMatchObject({ type: 'error', error: { type: 'rate_limit_error' } });
    expect(server.service.ctx.sessions.size).toBe(0);
    // Health checks need no key, and are never refused.
    await expectHealthy(server);
  });

  it('does not count requests with a right key; 0 turns the limit off', async () => {
    const limited = await start({ apiKeys: KEY, failedKeysPerMinute: '3' });
    for (let i = 0; i < 10; i++) {
      expect((await models(limited, KEY)).status).toBe(200);
      if (i % 5 === 0) expect((await models(limited, 'sk-wrong')).status).toBe(401);
    }
    expect((await models(limited, KEY)).status).toBe(200);
    expect((await fetch(`${limited.url}/v1/models`)).status).toBe(401); // no key at all counts too
    expect((await models(limited, KEY)).status).toBe(429);

    const unlimited = await start({ apiKeys: KEY, failedKeysPerMinute: '0' });
    for (let i = 0; i < 30; i++) expect((await models(unlimited, `sk-wrong-${i}`)).status).toBe(401);
    expect((await models(unlimited, KEY)).status).toBe(200);
  });

  it('counts wrong admin keys on the admin routes too', async () => {
    const server = await start({ adminApiKey: 'admin-right', failedKeysPerMinute: '3' });
    const admin = (key: string) => fetch(`${server.url}/admin/health`, { headers: { authorization: `Bearer ${key}` } });
    expect((await admin('admin-right')).status).toBe(200);
    for (let i = 0; i < 3; i++) expect((await admin(`admin-guess-${i}`)).status).toBe(401);
    const refused = await admin('admin-right');
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toMatch(/^\d+$/);
  });

  it('counts by client address: behind a trusted proxy each forwarded address apart, otherwise the proxy\'s own', async () => {
    for (const trusted of [true, false]) {
      const server = await start({ apiKeys: KEY, failedKeysPerMinute: '2', ...(trusted ? { trustProxy: '127.0.0.1' } : {}) });
      const from = (ip: string, key: string) => models(server, key, { 'x-forwarded-for': ip });
      expect((await from('203.0.113.1', 'sk-wrong')).status).toBe(401);
      expect((await from('203.0.113.1', 'sk-wrong')).status).toBe(401);
      expect((await from('203.0.113.1', KEY)).status).toBe(429);
      expect((await from('203.0.113.2', KEY)).status).toBe(trusted ? 200 : 429);
    }
  });

  it('counts WebSocket upgrades with a wrong key, and refuses upgrades past the limit', async () => {
    const server = await start({ apiKeys: KEY, failedKeysPerMinute: '2' });
    const upgrade = (key: string) =>
      new Promise<number>((resolve, reject) => {
        const socket = new WebSocket(`${server.url.replace('http', 'ws')}/v1/realtime?session=${uniqueId('ws')}&side=A`, { headers: { authorization: `Bearer ${key}` } });
        socket.once('unexpected-response', (req, res) => {
          req.destroy();
          resolve(res.statusCode ?? 0);
        });
        socket.once('open', () => {
          socket.close();
          resolve(101);
        });
        socket.once('error', reject);
      });
    expect(await upgrade(KEY)).toBe(101);
    expect(await upgrade('sk-wrong')).toBe(401);
    expect(await upgrade('sk-wrong')).toBe(401);
    expect(await upgrade(KEY)).toBe(429);
    expect((await models(server, KEY)).status).toBe(429);
  });

  it('keeps fixed one-minute windows, drops ended ones, and tracks at most 10,000 addresses', () => {
    let now = 1_000_000;
    const limit = new FailedKeyLimit(2, 10_000, () => now);
    limit.recordFailure('198.51.100.1');
    expect(limit.retryAfter('198.51.100.1')).toBe(0);
    now += 10_000;
    limit.recordFailure('198.51.100.1');
    expect(limit.retryAfter('198.51.100.1')).toBe(50); // the window started at the first failure
    now += 49_500;
    expect(limit.retryAfter('198.51.100.1')).toBe(1);
    now += 500;
    expect(limit.retryAfter('198.51.100.1')).toBe(0);

    // A spray of addresses: the oldest are dropped beyond the cap, the newest kept.
    for (let i = 0; i < 25_000; i++) limit.recordFailure(`10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`);
    expect(limit.size).toBe(10_000);
    limit.recordFailure('10.0.97.167'); // the 24,999th address, still tracked: now blocked
    expect(limit.retryAfter('10.0.97.167')).toBe(60);
    // Once their minute has passed, windows are dropped as new ones start.
    now += 60_000;
    limit.recordFailure('198.51.100.2');
    expect(limit.size).toBe(1);
  });
});

describe('a model that no URL could name', () => {
  // Raw JSON: "\ud800" is a lone surrogate, which JSON.parse accepts.
  const LONE = ['\\ud800', 'npc-\\udfff', 'npc\\ud83d|A'];

  it('is refused with 422 invalid_request in every protocol, and starts no session', async () => {
    const server = await start({ handshakeTimeoutSeconds: '0.2' });
    for (const model of LONE) {
      const bodies: Array<[string, string]> = [
        ['/v1/chat/completions', `{"model":"${model}","messages":[{"role":"user","content":"hi"}]}`],
        ['/v1/chat/completions', `{"model":"${model}","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"stream":true}`],
        ['/v1/responses', `{"model":"${model}","input":"hi"}`],
        ['/v1/messages', `{"model":"${model}","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`],
        ['/api/chat', `{"model":"${model}","messages":[{"role":"user","content":"hi"}]}`],
      ];
      for (const [path, body] of bodies) {
        const { status, json } = await rawPost(server, path, body);
        expect(status, `${path} ${body}`).toBe(422);
        const message = json.error?.message ?? json.error;
        expect(message).toMatch(/model must be well-formed Unicode/);
        if (path === '/v1/messages') expect(json).toMatchObject({ type: 'error', error: { type: 'invalid_request_error' } });
        else if (path !== '/api/chat') expect(json.error).toMatchObject({ code: 'invalid_request', param: 'model' });
      }
    }
    expect(server.service.ctx.sessions.size).toBe(0);
  });

  it('is accepted when well-formed beyond the BMP, and the session is then named by a URL to delete it', async () => {
    const server = await start({ handshakeTimeoutSeconds: '0.05' });
    const { status } = await rawPost(server, '/v1/chat/completions', '{"model":"npc-\\ud83d\\ude00","messages":[{"role":"user","content":"hi"}]}');
    expect(status).toBe(408);
    expect([...server.service.ctx.sessions.ids()]).toEqual(['npc-😀']);
    const deleted = await fetch(`${server.url}/v1/sessions/${encodeURIComponent('npc-😀')}`, { method: 'DELETE' });
    expect(deleted.status).toBe(200);
  });

  it('cannot come from a URL (Gemini and Azure paths, the WebSocket query): percent-encoded surrogates are not UTF-8', async () => {
    const server = await start({ handshakeTimeoutSeconds: '0.05' });
    const json = { 'content-type': 'application/json' };
    const gemini = await rawPost(server, '/v1beta/models/npc%ED%A0%80:generateContent', '{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}', json);
    expect(gemini.status).toBe(404);
    expect(gemini.json.error).toMatchObject({ code: 404, status: 'NOT_FOUND' });
    const azure = await rawPost(server, '/openai/deployments/npc%ED%B0%80/chat/completions?api-version=2024-10-21', CHAT, json);
    expect(azure.status).toBe(404);
    expectOpenAIError(azure.json, 'not_found');
    expect(server.service.ctx.sessions.size).toBe(0);
    // The query parser leaves a sequence that is not UTF-8 as it was: a well-formed session id.
    const socket = new WebSocket(`${server.url.replace('http', 'ws')}/v1/realtime?session=npc%ED%A0%80&side=A`);
    const ready = await new Promise<any>((resolve, reject) => socket.once('message', (d) => resolve(JSON.parse(d.toString()))).once('error', reject));
    socket.close();
    expect(ready).toMatchObject({ type: 'ready', session: 'npc%ED%A0%80' });
  });
});

describe('methods no route takes', () => {
  it('TRACE on a known route is 405 with Allow, in the route\'s shape; on an unknown one 404', async () => {
    const server = await start({});
    const trace = (path: string) => firstAnswer(server, `TRACE ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    const chat = await trace('/v1/chat/completions');
    expectContractError(chat, 405, 'method_not_allowed');
    expect(chat.headers['allow']).toBe('POST');
    const messages = await trace('/v1/messages');
    expect(messages.status).toBe(405);
    expect(messages.body).toMatchObject({ type: 'error', error: { type: 'invalid_request_error' } });
    const health = await trace('/health');
    expect(health.status).toBe(405);
    expect(health.headers['allow']).toBe('GET, HEAD');
    expect((await trace('/v1/nothing-here')).status).toBe(404);
  });

  it('CONNECT is answered 400 bad_request (Node never routes it) and the connection closed', async () => {
    const server = await start({});
    for (const target of ['/v1/chat/completions', 'example.com:443']) {
      const answer = await exchange(server, `CONNECT ${target} HTTP/1.1\r\nHost: ${target.startsWith('/') ? '127.0.0.1' : target}\r\n\r\n`);
      expectContractError(answer, 400, 'bad_request');
      expect(answer.body.error.message).toMatch(/not a forwarding proxy/);
      expect(answer.closed).toBe(true);
    }
    await expectHealthy(server);
  });
});

describe('a body over MAX_MESSAGE_BYTES', () => {
  interface Sent {
    status: number | null;
    connection: string | null;
    body: string;
    error: string | null;
  }

  /** POSTs a JSON body of `total` bytes the way node:http clients do: pieces written with short pauses. */
  function sendLarge(server: TestServer, { chunked, total = 1_300_000 }: { chunked: boolean; total?: number }): Promise<Sent> {
    return new Promise((resolve) => {
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (!chunked) headers['content-length'] = String(total);
      const req = httpRequest({ host: '127.0.0.1', port: portOf(server), method: 'POST', path: '/v1/chat/completions', headers, agent: false });
      const sent: Sent = { status: null, connection: null, body: '', error: null };
      req.on('response', (res) => {
        sent.status = res.statusCode ?? null;
        sent.connection = res.headers.connection ?? null;
        res.setEncoding('utf8');
        res.on('data', (d: string) => (sent.body += d));
        // What the client had when the answer was complete (its writes may fail after that).
        res.on('end', () => resolve({ ...sent }));
      });
      req.on('error', (err: NodeJS.ErrnoException) => {
        sent.error = err.code ?? err.message;
        resolve({ ...sent });
      });
      void (async () => {
        const opening = '{"model":"big","messages":[{"role":"user","content":"';
        const closing = '"}]}';
        const piece = 'a'.repeat(64 * 1024);
        req.write(opening);
        for (let left = total - opening.length - closing.length; left > 0 && !req.destroyed; left -= piece.length) {
          req.write(piece.slice(0, Math.min(left, piece.length)));
          await sleep(1);
        }
        if (!req.destroyed) req.end(closing);
      })();
    });
  }

  function expectAnswered413(sent: Sent): void {
    expect(sent.error).toBeNull();
    expect(sent.status).toBe(413);
    expect(sent.connection).toBe('close');
    expectOpenAIError(JSON.parse(sent.body), 'payload_too_large');
  }

  it('answers every one of 10 chunked and 10 Content-Length bodies of 1.3 MB with 413, never EPIPE or ECONNRESET', async () => {
    const server = await start({});
    // At once: the load that made the client's writes fail before it read the answer.
    for (const chunked of [true, false]) {
      const results = await Promise.all(Array.from({ length: 10 }, () => sendLarge(server, { chunked })));
      for (const sent of results) expectAnswered413(sent);
    }
    await expectHealthy(server);
  });

  it('answers the official SDK\'s oversized request with 413 payload_too_large', async () => {
    const server = await start({});
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'test-key', maxRetries: 0 });
    const results = await Promise.all(
      Array.from({ length: 5 }, () => apiError(client.chat.completions.create({ model: 'big', messages: [{ role: 'user', content: 'x'.repeat(1_300_000) }] }))),
    );
    for (const err of results) {
      expect(err.status).toBe(413);
      expect(err.code).toBe('payload_too_large');
    }
  });

  /**
   * A chunked POST that sends `chunkBytes` every `everyMs` until the server closes the
   * connection, whatever it answers (half-open: the server's FIN does not stop it).
   */
  function endlessUpload(server: TestServer, chunkBytes: number, everyMs: number) {
    const socket: Socket = connect({ port: portOf(server), host: '127.0.0.1', allowHalfOpen: true });
    let raw = Buffer.alloc(0);
    let written = 0;
    let answeredAt: number | null = null;
    const started = Date.now();
    socket.on('data', (d: Buffer) => {
      raw = Buffer.concat([raw, d]);
      if (answeredAt === null && firstResponse(raw)) answeredAt = Date.now() - started;
    });
    socket.on('error', () => undefined);
    const closed = new Promise<number>((resolve) => socket.on('close', () => resolve(Date.now() - started)));
    socket.write(head(['Transfer-Encoding: chunked']) + '5\r\n{"mod\r\n');
    const chunk = `${chunkBytes.toString(16)}\r\n${'a'.repeat(chunkBytes)}\r\n`;
    void (async () => {
      while (!socket.destroyed) {
        // Waits for each write to be taken, so that `written` counts what the server could read.
        await new Promise<void>((resolve) => socket.write(chunk, () => resolve()));
        written += chunk.length;
        if (everyMs > 0) await sleep(everyMs);
      }
    })();
    return { closed, written: () => written, answeredAt: () => answeredAt, answer: () => firstResponse(raw) };
  }

  it('reads and drops the rest for 5 s at most: a client that keeps sending slowly is then cut off', async () => {
    const server = await start({ maxMessageBytes: '4096' });
    const upload = endlessUpload(server, 4096, 20);
    const closedAfter = await upload.closed;
    expect(upload.answer()?.status).toBe(413);
    expect(upload.answeredAt()).toBeLessThan(1_000);
    expect(closedAfter).toBeGreaterThan(4_500);
    expect(closedAfter).toBeLessThan(7_500);
    await expectHealthy(server);
  }, 15_000);

  it('reads and drops 8 × MAX_MESSAGE_BYTES (at least 16 MiB) at most: a client that keeps sending fast is cut off sooner', async () => {
    const server = await start({ maxMessageBytes: '4096' });
    const upload = endlessUpload(server, 256 * 1024, 0);
    const closedAfter = await upload.closed;
    expect(upload.answer()?.status).toBe(413);
    expect(closedAfter).toBeLessThan(4_000);
    expect(upload.written()).toBeGreaterThan(16 * 1024 * 1024);
    expect(upload.written()).toBeLessThan(48 * 1024 * 1024);
    await expectHealthy(server);
  }, 15_000);
});
