// A managed key's own limits through a real listening server and the official SDK: requests a
// minute (with the RateLimit headers clients read), new sessions a minute, requests held at
// once, live sessions; each refusal a 429 with Retry-After that the SDK sees as such; other keys
// and the admin untouched; WebSocket frames counted; and the limits held across two cluster
// instances sharing one Redis.
import OpenAI from 'openai';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { startCluster } from '../cluster/instances.js';
import { apiError, sleep, uniqueId, until } from '../http/support.js';

import { useServices } from './support.js';
const ADMIN = 'admin-secret-for-key-limits';
const { start, redis: privateRedis } = useServices(ADMIN);

async function issue(url: string, limits: Record<string, number>, name = uniqueId('key')): Promise<string> {
  const response = await fetch(`${url}/admin/keys`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name, limits }),
  });
  expect(response.status).toBe(201);
  return ((await response.json()) as { key: string }).key;
}

const get = (url: string, path: string, key: string) => fetch(`${url}${path}`, { headers: { authorization: `Bearer ${key}` } });
const user = (content: string) => ({ role: 'user' as const, content });
const sdk = (url: string, key: string) => new OpenAI({ baseURL: `${url}/v1`, apiKey: key, maxRetries: 0 });

/** A chat request that starts (or joins) `model`; its status once it is answered. */
async function chat(url: string, key: string, model: string): Promise<{ status: number; headers: Headers; body: any }> {
  const response = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: [user('hi')] }),
  });
  return { status: response.status, headers: response.headers, body: await response.json() };
}

describe('limits of a managed key', () => {
  it('requests a minute: RateLimit headers on each answer, then 429 with Retry-After, for that key alone', async () => {
    const s = await start();
    const limited = await issue(s.url, { requests_per_minute: 3 });
    const free = await issue(s.url, {});
    for (const remaining of [2, 1, 0]) {
      const ok = await get(s.url, '/v1/models', limited);
      expect(ok.status).toBe(200);
      expect(ok.headers.get('ratelimit-limit')).toBe('3');
      expect(ok.headers.get('ratelimit-remaining')).toBe(String(remaining));
      expect(Number(ok.headers.get('ratelimit-reset'))).toBeGreaterThan(0);
    }
    const refused = await get(s.url, '/v1/models', limited);
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(refused.headers.get('ratelimit-remaining')).toBe('0');
    expect(refused.headers.get('x-should-retry')).toBe('true');
    expect(((await refused.json()) as any).error).toMatchObject({ code: 'rate_limited', message: expect.stringMatching(/3 requests a minute for this API key/) });
    const viaSdk = await apiError(sdk(s.url, limited).models.list());
    expect(viaSdk.status).toBe(429);
    // Admins are not limited: a key with an admin role is held to none of its limits.
    const adminKey = await (async () => {
      const response = await fetch(`${s.url}/admin/keys`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'admin with limits', scopes: ['client', 'admin'], limits: { requests_per_minute: 1 } }),
      });
      return ((await response.json()) as { key: string }).key;
    })();
    for (let i = 0; i < 3; i++) {
      const answer = await get(s.url, '/v1/models', adminKey);
      expect(answer.status).toBe(200);
      expect(answer.headers.get('ratelimit-limit')).toBeNull();
    }
    // Another key, and the admin, are not limited by it.
    expect((await get(s.url, '/v1/models', free)).status).toBe(200);
    expect((await get(s.url, '/v1/models', free)).headers.get('ratelimit-limit')).toBeNull();
    for (let i = 0; i < 5; i++) expect((await get(s.url, '/admin/keys', ADMIN)).status).toBe(200);
  });

  it('new sessions a minute, and live sessions at once', async () => {
    const s = await start({ handshakeTimeoutSeconds: '0.2' });
    const twoNew = await issue(s.url, { new_sessions_per_minute: 2 });
    expect((await chat(s.url, twoNew, 'n-1')).status).toBe(408);
    expect((await chat(s.url, twoNew, 'n-2')).status).toBe(408);
    const third = await chat(s.url, twoNew, 'n-3');
    expect(third.status).toBe(429);
    expect(third.body.error.message).toMatch(/2 new sessions a minute for this API key/);
    expect(third.headers.get('ratelimit-limit')).toBe('2');
    // Another key's new sessions are its own.
    expect((await chat(s.url, await issue(s.url, { new_sessions_per_minute: 2 }), 'n-3')).status).toBe(408);

    const oneLive = await issue(s.url, { max_live_sessions: 1 });
    const peer = await issue(s.url, {});
    const handshake = sdk(s.url, oneLive).chat.completions.create({ model: 'live-1', messages: [user('first')] });
    await until(() => s.ctx.sessions.get('live-1')?.state === 'AWAITING_PEER', 'live-1 is held');
    const answer = sdk(s.url, peer).chat.completions.create({ model: 'live-1', messages: [user('answer')] });
    answer.catch(() => undefined); // held until the session ends below
    await handshake;
    const second = await chat(s.url, oneLive, 'live-2');
    expect(second.status).toBe(429);
    expect(second.body.error.message).toMatch(/1 for this API key \(max_live_sessions\)/);
    // Ending the first frees the slot.
    expect((await fetch(`${s.url}/v1/sessions/live-1`, { method: 'DELETE', headers: { authorization: `Bearer ${oneLive}` } })).status).toBe(200);
    expect((await chat(s.url, oneLive, 'live-2')).status).toBe(408);
  });

  it('requests held at once, and WebSocket frames as requests', async () => {
    const s = await start({ handshakeTimeoutSeconds: '1' });
    const oneHeld = await issue(s.url, { max_held: 1 });
    const first = chat(s.url, oneHeld, 'held-1');
    await until(() => s.ctx.sessions.get('held-1')?.context.sides.A.held != null, 'held-1 is held');
    const second = await chat(s.url, oneHeld, 'held-2');
    expect(second.status).toBe(429);
    expect(second.body.error.message).toMatch(/1 for this API key \(max_held\)/);
    expect((await first).status).toBe(408);
    expect((await chat(s.url, oneHeld, 'held-2')).status).toBe(408);

    const frames = await issue(s.url, { requests_per_minute: 3 });
    const socket = new WebSocket(`${s.url.replace('http', 'ws')}/v1/realtime?session=ws-limited&side=A`, { headers: { authorization: `Bearer ${frames}` } });
    const received: any[] = [];
    socket.on('message', (d) => received.push(JSON.parse(d.toString())));
    await new Promise((resolve, reject) => (socket.once('open', resolve), socket.once('error', reject)));
    // The connection was request 1; two frames fit, the third does not.
    for (const id of ['m1', 'm2', 'm3']) socket.send(JSON.stringify({ type: 'message', content: `say ${id}`, id }));
    await until(() => received.some((f) => f.type === 'error' && f.id === 'm3'), 'the third frame is refused', 3_000);
    expect(received.find((f) => f.type === 'error' && f.id === 'm3')).toMatchObject({ code: 'rate_limited' });
    expect(received.some((f) => f.type === 'error' && (f.id === 'm1' || f.id === 'm2'))).toBe(false);
    socket.close();
  });

  it("a tenant's limits bind all its keys together, and only them", async () => {
    const s = await start({ handshakeTimeoutSeconds: '0.2' });
    const put = await fetch(`${s.url}/admin/tenants/studio-x`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ limits: { requests_per_minute: 3, new_sessions_per_minute: 1 } }),
    });
    expect(put.status).toBe(200);
    expect(await put.json()).toMatchObject({ object: 'tenant', name: 'studio-x', limits: { requests_per_minute: 3 }, updated_by: 'admin key' });
    const make = async (tenant: string, scopes = ['client']) => {
      const response = await fetch(`${s.url}/admin/keys`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: uniqueId('k'), tenant, scopes }),
      });
      return ((await response.json()) as { key: string }).key;
    };
    const x1 = await make('studio-x');
    const x2 = await make('studio-x');
    const y1 = await make('studio-y');
    expect((await get(s.url, '/v1/models', x1)).status).toBe(200);
    expect((await get(s.url, '/v1/models', x1)).headers.get('ratelimit-remaining')).toBe('1');
    expect((await get(s.url, '/v1/models', x2)).status).toBe(200);
    const refused = await get(s.url, '/v1/models', x2);
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as any).error.message).toMatch(/3 requests a minute for tenant 'studio-x'/);
    expect((await get(s.url, '/v1/models', y1)).status).toBe(200);

    // Reading: a global admin sees every tenant; a tenant's viewer its own; validation is clear.
    const viewerY = await make('studio-y', ['viewer']);
    expect((await (await get(s.url, '/admin/tenants', ADMIN)).json()) as any).toMatchObject({ data: [{ name: 'studio-x' }] });
    expect(((await (await get(s.url, '/admin/tenants', viewerY)).json()) as any).data).toEqual([]);
    expect((await get(s.url, '/admin/tenants/studio-x', viewerY)).status).toBe(404);
    const bad = await fetch(`${s.url}/admin/tenants/studio-x`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ limits: { requests_per_minute: 'lots' } }),
    });
    expect(bad.status).toBe(422);
    expect(((await bad.json()) as any).error.param).toBe('limits.requests_per_minute');
    const byViewer = await fetch(`${s.url}/admin/tenants/studio-y`, { method: 'PUT', headers: { authorization: `Bearer ${viewerY}`, 'content-type': 'application/json' }, body: '{"limits":{}}' });
    expect(byViewer.status).toBe(403);

    // Removed, the limits are gone at once.
    expect((await fetch(`${s.url}/admin/tenants/studio-x`, { method: 'DELETE', headers: { authorization: `Bearer ${ADMIN}` } })).status).toBe(200);
    expect((await get(s.url, '/v1/models', x2)).status).toBe(200);
  });

  it('holds across two cluster instances: one budget, one count of held requests', async () => {
    const redis = await privateRedis();
    const [one, two] = await startCluster(redis.url, 2, { ADMIN_API_KEY: ADMIN, REQUIRE_API_KEY: 'true', HANDSHAKE_TIMEOUT_SECONDS: '1' });
    const rate = await issue(one!.url, { requests_per_minute: 4 });
    const statuses: number[] = [];
    for (const instance of [one!, two!, one!, two!, one!, two!]) statuses.push((await get(instance.url, '/v1/models', rate)).status);
    expect(statuses).toEqual([200, 200, 200, 200, 429, 429]);

    // A tenant's limits set on one instance bind on the other within a second.
    const tenantKey = await (async () => {
      const response = await fetch(`${one!.url}/admin/keys`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'tenant key', tenant: 'studio-c' }),
      });
      return ((await response.json()) as { key: string }).key;
    })();
    const setAt = Date.now();
    await fetch(`${one!.url}/admin/tenants/studio-c`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ limits: { requests_per_minute: 1 } }),
    });
    let limitedThere = false;
    while (!limitedThere && Date.now() - setAt < 1_000) {
      limitedThere = (await get(two!.url, '/v1/models', tenantKey)).headers.get('ratelimit-limit') === '1';
      if (!limitedThere) await sleep(20);
    }
    expect(limitedThere).toBe(true);

    const held = await issue(one!.url, { max_held: 1 });
    const first = chat(one!.url, held, uniqueId('c-held'));
    await sleep(300);
    const second = await chat(two!.url, held, uniqueId('c-held'));
    expect(second.status).toBe(429);
    expect((await first).status).toBe(408);
    expect((await chat(two!.url, held, uniqueId('c-held'))).status).toBe(408);
  }, 40_000);
});
