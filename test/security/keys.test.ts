// API keys and the admin key through a real listening server: every protocol refuses a
// missing or wrong key with 401 in its own error shape and accepts a key where its clients
// put it; keys bind a session's sides, so a third client can neither read nor write it; the
// admin key guards the operator routes and /metrics; keys never reach the log.
import Anthropic from '@anthropic-ai/sdk';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { loadConfig, type OptionName } from '../../src/config.js';
import { createService, type Service } from '../../src/server.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { apiError, sleep, uniqueId, until } from '../http/support.js';

const KEY_A = 'sk-alice-0123456789';
const KEY_B = 'sk-bob-9876543210';
const KEY_EVE = 'sk-eve-5555555555';
const ADMIN = 'admin-secret-42';

interface Started {
  readonly url: string;
  readonly service: Service;
  readonly log: string[];
}

const running: Service[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.shutdown()));
});

async function start(settings: Partial<Record<OptionName, string>>): Promise<Started> {
  const { config } = loadConfig({ host: '127.0.0.1', port: '0', logLevel: 'info', logFormat: 'json', journalPath: 'memory', ...settings }, {});
  const log: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      log.push(chunk.toString());
      done();
    },
  });
  const service = await createService(config, createLogger(config, sink));
  running.push(service);
  return { url: service.url, service, log };
}

const openai = (s: Started, apiKey: string) => new OpenAI({ baseURL: `${s.url}/v1`, apiKey, maxRetries: 0 });
const user = (content: string) => ({ role: 'user' as const, content });
const said = (c: OpenAI.Chat.Completions.ChatCompletion) => c.choices[0]!.message.content;

async function post(s: Started, path: string, body: unknown, headers: Record<string, string> = {}) {
  const response = await fetch(`${s.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  return { status: response.status, headers: response.headers, body: (await response.json()) as any };
}

function wsOpen(url: string, headers: Record<string, string> = {}): Promise<{ status: number } | { socket: WebSocket; frames: any[] }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { headers });
    const frames: any[] = [];
    socket.on('message', (d) => frames.push(JSON.parse(d.toString())));
    socket.once('unexpected-response', (req, res) => {
      req.destroy();
      resolve({ status: res.statusCode ?? 0 });
    });
    socket.once('open', () => resolve({ socket, frames }));
    socket.once('error', reject);
  });
}

describe('API keys', () => {
  it('refuses a missing or wrong key with 401 in each protocol\'s own shape, and never retries it', async () => {
    const s = await start({ apiKeys: `${KEY_A},${KEY_B}` });
    const model = uniqueId('keys');

    const noKey = await post(s, '/v1/chat/completions', { model, messages: [user('hi')] });
    expect(noKey.status).toBe(401);
    expect(noKey.body).toMatchObject({ error: { code: 'invalid_api_key', type: 'authentication_error' } });
    const wrong = await apiError(openai(s, KEY_EVE).chat.completions.create({ model, messages: [user('hi')] }));
    expect(wrong.status).toBe(401);
    expect(wrong.headers?.get('x-should-retry')).toBe('false');

    const anthropic = new Anthropic({ baseURL: s.url, apiKey: KEY_EVE, maxRetries: 0 });
    const refused = await anthropic.messages.create({ model, max_tokens: 10, messages: [user('hi')] }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(Anthropic.APIError);
    expect((refused as InstanceType<typeof Anthropic.APIError>).status).toBe(401);
    expect((refused as { error: { type: string; error: { type: string } } }).error).toMatchObject({ type: 'error', error: { type: 'authentication_error' } });

    const gemini = await post(s, `/v1beta/models/${model}:generateContent`, { contents: [{ role: 'user', parts: [{ text: 'hi' }] }] });
    expect(gemini.status).toBe(401);
    expect(gemini.body).toMatchObject({ error: { code: 401, status: 'UNAUTHENTICATED' } });
    const ollama = await post(s, '/api/chat', { model, messages: [user('hi')], stream: false });
    expect(ollama.status).toBe(401);
    expect(typeof ollama.body.error).toBe('string');

    const models = await fetch(`${s.url}/v1/models`);
    expect(models.status).toBe(401);
    const ws = await wsOpen(`${s.url.replace('http', 'ws')}/v1/realtime?session=${model}&side=B`);
    expect(ws).toEqual({ status: 401 });
    // Public: the health check.
    expect((await fetch(`${s.url}/health`)).status).toBe(200);
    expect(s.service.ctx.sessions.size).toBe(0);
  });

  it('accepts a key where each client puts it: Bearer, x-api-key, x-goog-api-key, ?key=, api-key, and in the WebSocket handshake', async () => {
    const s = await start({ apiKeys: KEY_A });
    const session = uniqueId('where');
    const ok = (r: { status: number }) => expect(r.status).not.toBe(401);
    // Each request below is refused or held for reasons other than the key; none is a 401.
    ok(await post(s, '/v1/chat/completions', { model: `${session}-1`, messages: [] }, { authorization: `Bearer ${KEY_A}` }));
    ok(await post(s, '/v1/messages', { model: `${session}-2`, messages: [] }, { 'x-api-key': KEY_A }));
    ok(await post(s, `/v1beta/models/${session}-3:generateContent`, { contents: [] }, { 'x-goog-api-key': KEY_A }));
    ok(await post(s, `/v1beta/models/${session}-4:generateContent?key=${KEY_A}`, { contents: [] }));
    ok(await post(s, `/openai/deployments/${session}-5/chat/completions?api-version=2024-10-21`, { messages: [] }, { 'api-key': KEY_A }));
    const viaQuery = await wsOpen(`${s.url.replace('http', 'ws')}/v1/realtime?session=${session}&side=A&key=${KEY_A}`);
    expect('socket' in viaQuery).toBe(true);
    const viaHeader = await wsOpen(`${s.url.replace('http', 'ws')}/v1/realtime?session=${session}-6&side=A`, { authorization: `Bearer ${KEY_A}` });
    expect('socket' in viaHeader).toBe(true);
    for (const c of [viaQuery, viaHeader]) if ('socket' in c) c.socket.close();
  });

  it('reads keys from API_KEYS_FILE, one a line, with comments', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keys-'));
    const file = join(dir, 'keys.txt');
    writeFileSync(file, `# players\n${KEY_A}\n\n${KEY_B}   # the NPC\n`);
    const s = await start({ apiKeysFile: file });
    const model = uniqueId('file');
    const a = openai(s, KEY_A).chat.completions.create({ model, messages: [user('ping')] });
    await until(() => s.service.ctx.sessions.get(model)?.state === 'AWAITING_PEER', 'A is held');
    const b = openai(s, KEY_B).chat.completions.create({ model, messages: [user('pong')] });
    expect(said(await a)).toBe('pong');
    b.catch(() => undefined);
    expect((await apiError(openai(s, '# players').chat.completions.create({ model: 'x', messages: [user('hi')] }))).status).toBe(401);
  });

  it('never writes a key to the log, not even one sent in the query string', async () => {
    const s = await start({ apiKeys: KEY_A, adminApiKey: ADMIN, handshakeTimeoutSeconds: '0.1' });
    await post(s, `/v1beta/models/logged:generateContent?key=${KEY_A}`, { contents: [{ role: 'user', parts: [{ text: 'x' }] }] }).catch(() => undefined);
    await post(s, `/v1beta/models/logged:generateContent?key=${KEY_EVE}`, { contents: [] });
    await fetch(`${s.url}/admin/health`, { headers: { authorization: `Bearer ${ADMIN}` } });
    await openai(s, KEY_EVE).chat.completions.create({ model: 'x', messages: [user('hi')] }).catch(() => undefined);
    await sleep(50);
    const text = s.log.join('');
    expect(text).toContain('key=[redacted]');
    for (const secret of [KEY_A, KEY_EVE, ADMIN]) expect(text).not.toContain(secret);
  });
});

describe('keys in URLs never reach the log', () => {
  it('redacts the key of a held request whose client went away, and a key parameter whose name is percent-encoded or in capitals', async () => {
    const s = await start({ apiKeys: `${KEY_A},${KEY_B}` });
    // A held Gemini request with its key in the query (its name percent-encoded), then the client leaves.
    const abort = new AbortController();
    const held = fetch(`${s.url}/v1beta/models/url-keys:generateContent?k%65y=${KEY_A}&alt=json`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'anyone?' }] }] }),
      signal: abort.signal,
    });
    held.catch(() => undefined);
    await until(() => s.service.ctx.sessions.get('url-keys')?.context.sides.A.held != null, 'the request is held');
    abort.abort();
    await until(() => s.log.join('').includes('request aborted by client'), 'the aborted request is logged');
    // Not a key parameter for the proxy (names are case-sensitive), but it looks like one: redacted too.
    expect((await post(s, `/v1beta/models/caps:generateContent?KEY=${KEY_B}`, { contents: [] })).status).toBe(401);
    expect((await post(s, `/v1beta/models/plus:generateContent?api%5Fkey=${KEY_B}`, { contents: [] })).status).toBe(422);
    await sleep(50);
    const text = s.log.join('');
    expect(text).toContain('k%65y=[redacted]&alt=json');
    expect(text).toContain('KEY=[redacted]');
    expect(text).toContain('api%5Fkey=[redacted]');
    for (const secret of [KEY_A, KEY_B]) expect(text).not.toContain(secret);
  });
});

describe('a session is bound to the keys that joined it', () => {
  it('gives a third client nothing: it cannot read, write, take a side, or end the session', async () => {
    const s = await start({ apiKeys: `${KEY_A},${KEY_B},${KEY_EVE}`, adminApiKey: ADMIN });
    const model = uniqueId('bound');
    const alice = openai(s, KEY_A);
    const bob = openai(s, KEY_B);
    const eve = openai(s, KEY_EVE);

    const hs = alice.chat.completions.create({ model, messages: [user('ping')] });
    await until(() => s.service.ctx.sessions.get(model)?.state === 'AWAITING_PEER', 'A is held');
    const b1 = bob.chat.completions.create({ model, messages: [user('The password is swordfish.')] });
    expect(said(await hs)).toBe('The password is swordfish.');
    const a1 = alice.chat.completions.create({ model, messages: [user('ping'), { role: 'assistant', content: 'The password is swordfish.' }, user('Noted.')] });
    expect(said(await b1)).toBe('Noted.');

    const attempts = [
      eve.chat.completions.create({ model, messages: [user('I am Bob.')] }),
      eve.chat.completions.create({ model: `${model}|B`, messages: [user('I am Bob.')] }),
      eve.chat.completions.create({ model: `${model}|A`, messages: [user('I am Alice.')] }),
      eve.chat.completions.create({ model, messages: [user('b1'), { role: 'assistant', content: 'Noted.' }, user('Tell me again.')] }),
      eve.chat.completions.create({ model, messages: [user('ping'), { role: 'assistant', content: 'The password is swordfish.' }, user('Noted.')] }),
    ];
    for (const attempt of attempts) {
      const error = await apiError(attempt);
      expect(error.status).toBe(403);
      expect(error.code).toBe('session_forbidden');
      expect(JSON.stringify(error.error)).not.toContain('swordfish');
    }
    // Alice cannot speak for Bob either.
    expect((await apiError(alice.chat.completions.create({ model: `${model}|B`, messages: [user('as Bob')] }))).code).toBe('session_forbidden');

    // Nor over a WebSocket, nor by ending the session, nor through the admin routes.
    const ws = await wsOpen(`${s.url.replace('http', 'ws')}/v1/realtime?session=${model}&side=B&key=${KEY_EVE}`);
    expect('socket' in ws).toBe(true);
    if ('socket' in ws) {
      await until(() => ws.frames.length > 0, 'the refusal frame');
      expect(ws.frames[0]).toMatchObject({ type: 'error', code: 'session_forbidden' });
      await until(() => ws.socket.readyState === WebSocket.CLOSED, 'the socket closes');
    }
    const del = await fetch(`${s.url}/v1/sessions/${model}`, { method: 'DELETE', headers: { authorization: `Bearer ${KEY_EVE}` } });
    expect(del.status).toBe(403);
    const transcript = await fetch(`${s.url}/admin/sessions/${model}/transcript`, { headers: { authorization: `Bearer ${KEY_EVE}` } });
    expect(transcript.status).toBe(401);
    expect(await transcript.text()).not.toContain('swordfish');

    // The conversation goes on untouched: Bob's next turn reaches Alice, and only it.
    const b2 = bob.chat.completions.create({ model, messages: [user('The password is swordfish.'), { role: 'assistant', content: 'Noted.' }, user('Good.')] });
    expect(said(await a1)).toBe('Good.');
    b2.catch(() => undefined);
    const sides = s.service.ctx.sessions.get(model)!.context.sides;
    expect(sides.A.deliveries).toEqual(['The password is swordfish.', 'Good.']);
    expect(sides.B.deliveries).toEqual(['Noted.']);
  });

  it('with one shared key, both sides use it as before', async () => {
    const s = await start({ apiKeys: KEY_A });
    const model = uniqueId('shared');
    const c = openai(s, KEY_A);
    const hs = c.chat.completions.create({ model, messages: [user('ping')] });
    await until(() => s.service.ctx.sessions.get(model)?.state === 'AWAITING_PEER', 'A is held');
    const b1 = c.chat.completions.create({ model, messages: [user('b1')] });
    expect(said(await hs)).toBe('b1');
    const a1 = c.chat.completions.create({ model, messages: [user('ping'), { role: 'assistant', content: 'b1' }, user('a1')] });
    expect(said(await b1)).toBe('a1');
    a1.catch(() => undefined);
  });
});

describe('the admin key', () => {
  it('guards /admin and /metrics; client keys see masked session ids only', async () => {
    const s = await start({ apiKeys: KEY_A, adminApiKey: ADMIN, enablePrometheus: 'true' });
    const model = uniqueId('admin');
    const held = openai(s, KEY_A).chat.completions.create({ model, messages: [user('ping')] });
    await until(() => s.service.ctx.sessions.get(model)?.state === 'AWAITING_PEER', 'A is held');
    const admin = { authorization: `Bearer ${ADMIN}` };

    expect((await fetch(`${s.url}/admin/health`)).status).toBe(401);
    expect((await fetch(`${s.url}/admin/health`, { headers: { authorization: `Bearer ${KEY_A}` } })).status).toBe(401);
    const health = (await (await fetch(`${s.url}/admin/health`, { headers: admin })).json()) as any;
    expect(health).toMatchObject({ status: 'ok', sessions: { live: 1, held_requests: 1, by_state: { AWAITING_PEER: 1 } }, api_keys: { required: true, admin_key: true } });
    expect(health.event_loop_delay_ms.p99).toBeGreaterThanOrEqual(0);
    expect(health.memory_bytes.rss).toBeGreaterThan(0);
    expect(health.journal).toMatchObject({ lag_records: 0 });

    const masked = (await (await fetch(`${s.url}/admin/sessions`, { headers: { authorization: `Bearer ${KEY_A}` } })).json()) as any;
    expect(masked.ids_masked).toBe(true);
    expect(masked.data[0].id).toMatch(/^session-[0-9a-f]{12}$/);
    expect(JSON.stringify(masked)).not.toContain(model);
    const full = (await (await fetch(`${s.url}/admin/sessions`, { headers: admin })).json()) as any;
    expect(full.data.map((d: { id: string }) => d.id)).toEqual([model]);
    const detail = (await (await fetch(`${s.url}/admin/sessions/${model}`, { headers: admin })).json()) as any;
    expect(detail).toMatchObject({ id: model, state: 'AWAITING_PEER', sides: { A: { joined: true, waiting: true, bound_to_key: true } } });

    expect((await fetch(`${s.url}/metrics`)).status).toBe(401);
    expect((await fetch(`${s.url}/metrics`, { headers: admin })).status).toBe(200);

    // Ending a session from the admin route answers its held request 410.
    const end = await fetch(`${s.url}/admin/sessions/${model}`, { method: 'DELETE', headers: admin });
    expect(await end.json()).toEqual({ id: model, tenant: null, object: 'session', deleted: true });
    expect((await apiError(held)).status).toBe(410);
    expect((await fetch(`${s.url}/admin/sessions/${model}`, { headers: admin })).status).toBe(404);
  });

  it('METRICS_PUBLIC serves /metrics to anyone', async () => {
    const s = await start({ adminApiKey: ADMIN, enablePrometheus: 'true', metricsPublic: 'true' });
    expect((await fetch(`${s.url}/metrics`)).status).toBe(200);
  });
});
