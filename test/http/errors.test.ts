// Proves PROTOCOL.md §7 for every bad input a client can send: each gets its status, the
// OpenAI error body {error:{message,type,param,code}} with a message naming what was wrong,
// and `x-should-retry: false` where a retry cannot mend it (so the SDK does not retry); hostile
// inputs (a 1 MB model, 100,000 levels of nesting, a body trickled in over two seconds) are
// answered without crashing or blocking other sessions; and the server stays healthy.
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import Anthropic from '@anthropic-ai/sdk';
import type OpenAI from 'openai';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { anthropicError, apiError, expectHealthy, expectOpenAIError, rawPost, recordingClient, uniqueId, untilHeld } from './support.js';

let server: TestServer; // default limits (MAX_MESSAGE_BYTES 65536)
let roomy: TestServer; // MAX_MESSAGE_BYTES raised to 1 MB, for the deep-nesting body

beforeAll(async () => {
  [server, roomy] = await Promise.all([startTestServer(), startTestServer({ maxMessageBytes: String(1024 * 1024) })]);
});
afterAll(async () => {
  await Promise.all([server.close(), roomy.close()]);
});

const CHAT = '/v1/chat/completions';

/** An SDK call that must fail once, without retries, with `status` and `code`; returns the error. */
async function expectRefused(call: (client: OpenAI) => Promise<unknown>, status: number, code: string, target = server) {
  const recorded = recordingClient(target); // default maxRetries: a retryable answer would show up twice
  const err = await apiError(call(recorded.client));
  expect(err.status).toBe(status);
  expectOpenAIError({ error: err.error }, code);
  expect(recorded.statuses).toEqual([status]);
  return err;
}

const asAny = (body: Record<string, unknown>) => body as unknown as OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming;

describe('400 invalid_json', () => {
  for (const [what, body] of [
    ['truncated JSON', '{"model": "x", "messages": ['],
    ['trailing garbage', '{"model":"x","messages":[{"role":"user","content":"hi"}]} extra'],
    ['single quotes', "{'model': 'x'}"],
    ['an empty body', ''],
  ] as const) {
    it(`answers ${what}`, async () => {
      const response = await rawPost(server, CHAT, body);
      expect(response.status).toBe(400);
      expectOpenAIError(response.json, 'invalid_json');
      expect(response.json.error.message).toMatch(/JSON|empty/);
      expect(response.headers.get('x-should-retry')).toBe('false');
      expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    });
  }
});

describe('the request id on errors', () => {
  it('is what the SDKs show as the error\'s request id (the id the proxy\'s log lines carry)', async () => {
    const err = await expectRefused((c) => c.chat.completions.create(asAny({ messages: [{ role: 'user', content: 'hi' }] })), 422, 'invalid_request');
    expect(err.requestID).toMatch(/^[0-9a-f]{6}-[0-9a-z]+$/);
    const anthropic = new Anthropic({ baseURL: server.url, apiKey: 'unused', maxRetries: 0 });
    const refused = await anthropicError(anthropic.messages.create({ model: 'x', max_tokens: 5, messages: [] }));
    expect(refused.requestID).toMatch(/^[0-9a-f]{6}-[0-9a-z]+$/);
    expect((refused.error as { request_id?: string }).request_id).toBe(refused.requestID);
    expect(refused.requestID).not.toBe(err.requestID);
  });
});

describe('422 invalid_request', () => {
  it('answers a request without model, naming the field', async () => {
    const err = await expectRefused((c) => c.chat.completions.create(asAny({ messages: [{ role: 'user', content: 'hi' }] })), 422, 'invalid_request');
    expect(err.param).toBe('model');
    expect(err.message).toMatch(/model/);
    expect(err.headers?.get('x-should-retry')).toBe('false');
  });

  it('answers a model that is not a string by saying so, not that it is missing', async () => {
    for (const [model, kind] of [[5, 'a number'], [['s'], 'an array'], [{ id: 's' }, 'an object'], [true, 'a boolean']] as const) {
      const err = await expectRefused((c) => c.chat.completions.create(asAny({ model, messages: [{ role: 'user', content: 'hi' }] })), 422, 'invalid_request');
      expect(err.param).toBe('model');
      expect(err.message).toContain(`model must be a string naming the session`);
      expect(err.message).toContain(`not ${kind}`);
    }
    const missing = await expectRefused((c) => c.chat.completions.create(asAny({ model: null, messages: [{ role: 'user', content: 'hi' }] })), 422, 'invalid_request');
    expect(missing.message).toMatch(/model is required/);
    expect(missing.message).not.toContain('must be a string');
  });

  it('answers a request without messages, or with an empty list', async () => {
    const missing = await expectRefused((c) => c.chat.completions.create(asAny({ model: uniqueId('e') })), 422, 'invalid_request');
    expect(missing.param).toBe('messages');
    expect(missing.message).toMatch(/messages/);
    const empty = await expectRefused((c) => c.chat.completions.create({ model: uniqueId('e'), messages: [] }), 422, 'invalid_request');
    expect(empty.message).toMatch(/messages/);
    expect(empty.message).toMatch(/empty/);
  });

  it('answers empty new content: "", whitespace, or parts with no text', async () => {
    for (const content of ['', '   \n\t', [{ type: 'image_url', image_url: { url: 'https://example.com/x.png' } }]] as const) {
      const err = await expectRefused(
        (c) => c.chat.completions.create(asAny({ model: uniqueId('e'), messages: [{ role: 'user', content }] })),
        422,
        'invalid_request',
      );
      expect(err.message).toMatch(/content/);
      expect(err.param).toBe('messages.0.content');
    }
  });

  it('answers a model over 256 characters, and accepts one of exactly 256', async () => {
    const err = await expectRefused((c) => c.chat.completions.create({ model: 'm'.repeat(257), messages: [{ role: 'user', content: 'hi' }] }), 422, 'invalid_request');
    expect(err.message).toMatch(/256/);
    // The longest ids are whole sessions: they pair, and DELETE /v1/sessions/{id} finds them.
    for (const id of [`${uniqueId('e')}-`.padEnd(256, 'x'), `${uniqueId('e')}-`.padEnd(256, '会')]) {
      expect(id).toHaveLength(256);
      const held = apiError(server.client({ maxRetries: 0 }).chat.completions.create({ model: id, messages: [{ role: 'user', content: 'hi' }] }));
      await untilHeld(server, id, 'A');
      const deleted = await fetch(`${server.url}/v1/sessions/${encodeURIComponent(id)}`, { method: 'DELETE' });
      expect(deleted.status).toBe(200);
      expect((await held).status).toBe(410);
    }
  });

  it('answers a body nested deeper than 64 levels, and accepts 64', async () => {
    // The request object is level 1, messages 2, a message 3; `extra` adds the rest.
    const nested = (levels: number) => JSON.parse('['.repeat(levels) + ']'.repeat(levels)) as unknown;
    const err = await expectRefused(
      (c) => c.chat.completions.create(asAny({ model: uniqueId('e'), messages: [{ role: 'user', content: 'hi', extra: nested(62) }] })),
      422,
      'invalid_request',
    );
    expect(err.message).toMatch(/nested deeper than 64/);

    const session = uniqueId('e-depth');
    const held = apiError(
      server.client({ maxRetries: 0 }).chat.completions.create(asAny({ model: session, messages: [{ role: 'user', content: 'hi', extra: nested(61) }] })),
    );
    await untilHeld(server, session, 'A');
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await held).status).toBe(410);
  });

  it('answers 100,000 levels of nesting within the body limit with 422, not a crash', async () => {
    const deep = '['.repeat(100_000) + ']'.repeat(100_000);
    const body = `{"model":"${uniqueId('e-deep')}","messages":[{"role":"user","content":"hi"}],"extra":${deep}}`;
    expect(body.length).toBeLessThan(1024 * 1024);
    const response = await rawPost(roomy, CHAT, body);
    expect(response.status).toBe(422);
    expectOpenAIError(response.json, 'invalid_request');
    expect(response.json.error.message).toMatch(/nested/);
    expect(response.headers.get('x-should-retry')).toBe('false');
    // The same with objects instead of arrays.
    const objects = '{"a":'.repeat(100_000) + '1' + '}'.repeat(100_000);
    const second = await rawPost(roomy, CHAT, `{"model":"x","messages":[{"role":"user","content":"hi"}],"extra":${objects}}`);
    expect(second.status).toBe(422);
    await expectHealthy(roomy);
  });

  it('answers a body that is JSON but not an object', async () => {
    for (const body of ['null', '[]', '"text"', '42']) {
      const response = await rawPost(server, CHAT, body);
      expect(response.status).toBe(422);
      expectOpenAIError(response.json, 'invalid_request');
    }
  });
});

describe('413 payload_too_large', () => {
  it('answers a body over MAX_MESSAGE_BYTES, naming the limit', async () => {
    const err = await expectRefused(
      (c) => c.chat.completions.create({ model: uniqueId('e'), messages: [{ role: 'user', content: 'x'.repeat(70_000) }] }),
      413,
      'payload_too_large',
    );
    expect(err.message).toMatch(/MAX_MESSAGE_BYTES \(65536 bytes\)/);
    expect(err.headers?.get('x-should-retry')).toBe('false');
  });

  it('answers a 1 MB model with 413, since it exceeds the body limit', async () => {
    const live = server.service.ctx.sessions.size;
    const err = await expectRefused((c) => c.chat.completions.create({ model: 'm'.repeat(1024 * 1024), messages: [{ role: 'user', content: 'hi' }] }), 413, 'payload_too_large');
    expect(err.headers?.get('x-should-retry')).toBe('false');
    expect(server.service.ctx.sessions.size).toBe(live); // nothing was created
    await expectHealthy(server);
  });
});

describe('415 unsupported_media_type', () => {
  for (const contentType of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
    it(`answers ${contentType}`, async () => {
      const response = await rawPost(server, CHAT, '{"model":"x","messages":[{"role":"user","content":"hi"}]}', { 'content-type': contentType });
      expect(response.status).toBe(415);
      expectOpenAIError(response.json, 'unsupported_media_type');
      expect(response.json.error.message).toMatch(/JSON/);
      expect(response.headers.get('x-should-retry')).toBe('false');
    });
  }

  it('accepts application/json with a charset', async () => {
    const response = await rawPost(server, CHAT, '{"model":"x","messages":[]}', { 'content-type': 'application/json; charset=utf-8' });
    expect(response.status).toBe(422); // parsed as JSON, refused for its content
  });
});

describe('404 and 405', () => {
  it('answers an unknown route with 404 not_found, naming it', async () => {
    const viaSdk = await apiError(server.client({ maxRetries: 0 }).get('/no/such/route'));
    expect(viaSdk.status).toBe(404);
    expectOpenAIError({ error: viaSdk.error }, 'not_found');
    expect(viaSdk.message).toMatch(/\/v1\/no\/such\/route/);
    const raw = await rawPost(server, '/v1/completions', '{}');
    expect(raw.status).toBe(404);
    expectOpenAIError(raw.json, 'not_found');
  });

  it('answers URLs the router cannot take (bad percent-encoding, overlong ids) in the same shape', async () => {
    for (const path of ['/v1/sessions/%ZZ', '/v1/chat/completions%E0%A4%A', `/v1/sessions/${'x'.repeat(5_000)}`]) {
      const response = await fetch(`${server.url}${path}`, { method: 'DELETE' });
      expect(response.status).toBe(404);
      expectOpenAIError(await response.json(), 'not_found');
    }
  });

  it('answers a known route with the wrong method with 405 and Allow', async () => {
    const client = server.client({ maxRetries: 0 });
    for (const call of [client.get('/chat/completions'), client.put('/chat/completions', { body: {} }), client.delete('/chat/completions')]) {
      const err = await apiError(call);
      expect(err.status).toBe(405);
      expect(err.headers?.get('allow')).toBe('POST');
      expectOpenAIError({ error: err.error }, 'method_not_allowed');
      expect(err.message).toMatch(/use POST/);
    }
    const models = await fetch(`${server.url}/v1/models`, { method: 'POST' });
    expect(models.status).toBe(405);
    expect(models.headers.get('allow')).toContain('GET');
  });
});

describe('a body sent very slowly', () => {
  it('is answered correctly, and other sessions are not blocked meanwhile', async () => {
    const session = uniqueId('slow');
    const client = server.client();
    const handshake = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ping' }] });
    await untilHeld(server, session, 'A');

    // B's first prompt trickles in over ~2 s, split in the middle of multi-byte characters.
    const prompt = 'Slow and steady: 🐢🐢🐢 — 慢慢来 — ok';
    const body = Buffer.from(JSON.stringify({ model: session, messages: [{ role: 'user', content: prompt }] }));
    const pieces = 10;
    let finishedSendingAt = 0;
    const slow = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest(`${server.url}${CHAT}`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': body.length } }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      });
      req.on('error', reject);
      let sent = 0;
      const step = Math.ceil(body.length / pieces);
      const timer = setInterval(() => {
        req.write(body.subarray(sent, sent + step));
        sent += step;
        if (sent >= body.length) {
          clearInterval(timer);
          finishedSendingAt = Date.now();
          req.end();
        }
      }, 200);
    });

    // Meanwhile another session runs a whole exchange.
    const other = uniqueId('fast');
    const fastA = client.chat.completions.create({ model: other, messages: [{ role: 'user', content: 'ping' }] });
    await untilHeld(server, other, 'A');
    const fastB = apiError(server.client({ maxRetries: 0 }).chat.completions.create({ model: other, messages: [{ role: 'user', content: 'quick' }] }));
    expect((await fastA).choices[0]!.message.content).toBe('quick');
    const fastDoneAt = Date.now();
    await fetch(`${server.url}/v1/sessions/${other}`, { method: 'DELETE' });
    expect((await fastB).status).toBe(410);

    // The slow prompt arrives whole, and the slow request is answered by A's next message.
    expect((await handshake).choices[0]!.message.content).toBe(prompt);
    expect(finishedSendingAt).toBeGreaterThan(fastDoneAt);
    const a1 = client.chat.completions.create({
      model: session,
      messages: [{ role: 'user', content: 'ping' }, { role: 'assistant', content: prompt }, { role: 'user', content: 'worth the wait' }],
    });
    const answered = await slow;
    expect(answered.status).toBe(200);
    expect(JSON.parse(answered.body).choices[0].message.content).toBe('worth the wait');
    const ended = apiError(a1);
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await ended).status).toBe(410);
  });
});

describe('after every bad input', () => {
  it('the server still answers /health and pairs a new session', async () => {
    await expectHealthy(server);
    await expectHealthy(roomy);
    const session = uniqueId('after');
    const client = server.client();
    const handshake = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ping' }] });
    await untilHeld(server, session, 'A');
    const b1 = apiError(client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'still here' }] }));
    expect((await handshake).choices[0]!.message.content).toBe('still here');
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await b1).status).toBe(410);
  });
});
