/**
 * INSPECT=true streams the live actor system to the Stately inspector: a browser-side client
 * of the local bridge (here a plain WebSocket client, as the bridge page is) receives each
 * session actor's snapshots as the conversation moves through the chart. The snapshots carry
 * what was said, so the bridge listens on HOST only, admits whom the admin routes admit, refuses
 * other sites' pages and DNS rebinding, and relays nothing a viewer sends.
 */
import { once } from 'node:events';
import { request as httpRequest } from 'node:http';
import { describe, expect, it } from 'vitest';
import { freePort } from '../helpers/net.js';
import WebSocket from 'ws';
import { uniqueId, until, useServers } from '../http/support.js';

const start = useServers();

describe('Stately inspection', () => {
  it('relays session snapshots to a viewer of the inspector bridge', async () => {
    const port = await freePort();
    const server = await start({ inspect: 'true', inspectPort: String(port) });
    const messages: Array<{ type: string; snapshot?: { value?: unknown }; event?: { type?: string } }> = [];
    let viewer: WebSocket | null = null;
    for (let i = 0; i < 50 && !viewer; i++) {
      const ws = new WebSocket(`ws://127.0.0.1:${port}`);
      const opened = await Promise.race([once(ws, 'open').then(() => true), once(ws, 'error').then(() => false)]);
      if (opened) viewer = ws;
      else await new Promise((r) => setTimeout(r, 50));
    }
    expect(viewer).not.toBeNull();
    viewer!.on('message', (data) => messages.push(JSON.parse(data.toString())));

    const model = uniqueId('inspected');
    const a = server.client();
    const handshake = a.chat.completions.create({ model, messages: [{ role: 'user', content: 'ping' }] });
    await until(() => server.service.ctx.sessions.get(model)?.state === 'AWAITING_PEER', 'A is held');
    const b = server.client().chat.completions.create({ model, messages: [{ role: 'user', content: 'b1' }] });
    expect((await handshake).choices[0]!.message.content).toBe('b1');

    await until(() => messages.some((m) => m.type === '@xstate.snapshot' && m.snapshot?.value === 'ACTIVE'), 'the viewer sees ACTIVE');
    expect(messages.some((m) => m.type === '@xstate.snapshot' && m.snapshot?.value === 'AWAITING_PEER')).toBe(true);
    expect(messages.some((m) => m.type === '@xstate.event' && m.event?.type === 'CONNECT_B')).toBe(true);
    viewer!.close();
    await server.service.app.inject({ method: 'DELETE', url: `/v1/sessions/${model}` });
    await expect(b).rejects.toMatchObject({ status: 410 });
  });
});

describe('the inspector bridge as a surface', () => {
  type Opened = { ws: WebSocket; frames: Array<{ type: string; sessionId?: string; snapshot?: { value?: unknown } }> };
  /** Opens a viewer: the socket and what it receives, or the refusal's HTTP status. */
  const view = (url: string, headers: Record<string, string> = {}): Promise<Opened | number> =>
    new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers });
      const frames: Opened['frames'] = [];
      ws.on('message', (data) => frames.push(JSON.parse(data.toString())));
      ws.once('open', () => resolve({ ws, frames }));
      ws.once('unexpected-response', (request, response) => {
        request.destroy();
        resolve(response.statusCode ?? 0);
      });
      ws.once('error', reject);
    });
  const page = (url: string, headers: Record<string, string> = {}) => fetch(url, { headers });

  /** A session that reaches AWAITING_PEER: its actor's snapshots go to the viewers. */
  async function handshake(server: Awaited<ReturnType<typeof start>>, model: string): Promise<void> {
    server.client().chat.completions.create({ model, messages: [{ role: 'user', content: 'the secret handshake' }] }).catch(() => undefined);
    await until(() => server.service.ctx.sessions.get(model)?.state === 'AWAITING_PEER', 'A is held');
  }

  it('listens on HOST only (loopback by default), not on every interface', async () => {
    const port = await freePort();
    await start({ inspect: 'true', inspectPort: String(port) });
    expect((await page(`http://127.0.0.1:${port}/`)).status).toBe(200);
    // 127.0.0.2 is this machine too, but not the address HOST names.
    await expect(fetch(`http://127.0.0.2:${port}/`)).rejects.toThrow();
  });

  it('with ADMIN_API_KEY, the page and the stream need the key (?key= or Authorization)', async () => {
    const port = await freePort();
    const server = await start({ inspect: 'true', inspectPort: String(port), adminApiKey: 'admin-secret' });
    const base = `http://127.0.0.1:${port}/`;
    expect((await page(base)).status).toBe(401);
    expect((await page(`${base}?key=guess`)).status).toBe(401);
    const opened = await page(`${base}?key=admin-secret`);
    expect(opened.status).toBe(200);
    expect(opened.headers.get('referrer-policy')).toBe('no-referrer');
    expect(await opened.text()).toContain('src="https://stately.ai/inspect"');

    expect(await view(`ws://127.0.0.1:${port}/`)).toBe(401);
    expect(await view(`ws://127.0.0.1:${port}/?key=guess`)).toBe(401);
    const viaQuery = (await view(`ws://127.0.0.1:${port}/?key=admin-secret`)) as Opened;
    const viaHeader = (await view(`ws://127.0.0.1:${port}/`, { authorization: 'Bearer admin-secret' })) as Opened;
    const model = uniqueId('keyed');
    await handshake(server, model);
    for (const viewer of [viaQuery, viaHeader]) {
      await until(() => viewer.frames.some((m) => m.type === '@xstate.snapshot' && m.snapshot?.value === 'AWAITING_PEER'), 'the viewer sees the session');
      viewer.ws.close();
    }
    await server.service.app.inject({ method: 'DELETE', url: `/v1/sessions/${model}` });
  });

  it('without an admin key, refuses callers not on this machine, pages of other sites and DNS rebinding', async () => {
    const port = await freePort();
    await start({ inspect: 'true', inspectPort: String(port) });
    const base = `http://127.0.0.1:${port}/`;
    expect((await page(base, { 'x-forwarded-for': '203.0.113.9' })).status).toBe(404);
    expect(await view(`ws://127.0.0.1:${port}/`, { 'x-forwarded-for': '203.0.113.9' })).toBe(404);
    // Another site's page in the user's browser, and a hostile name pointed at 127.0.0.1.
    expect(await view(`ws://127.0.0.1:${port}/`, { origin: 'https://evil.example' })).toBe(403);
    expect(await view(`ws://127.0.0.1:${port}/`, { host: `evil.example:${port}`, origin: `http://evil.example:${port}` })).toBe(403);
    expect(await getWithHost(`${base}`, `evil.example:${port}`)).toBe(403);
    // The bridge's own page, by any loopback name.
    const own = await view(`ws://127.0.0.1:${port}/`, { host: `localhost:${port}`, origin: `http://localhost:${port}` });
    expect(typeof own).toBe('object');
    (own as Opened).ws.close();
  });

  it('relays nothing a viewer sends to the others', async () => {
    const port = await freePort();
    const server = await start({ inspect: 'true', inspectPort: String(port) });
    const writer = (await view(`ws://127.0.0.1:${port}/`)) as Opened;
    const reader = (await view(`ws://127.0.0.1:${port}/`)) as Opened;
    writer.ws.send(JSON.stringify({ type: '@xstate.snapshot', sessionId: 'forged', snapshot: { value: 'CLOSED' } }));
    const model = uniqueId('relay');
    await handshake(server, model);
    await until(() => reader.frames.some((m) => m.type === '@xstate.snapshot' && m.snapshot?.value === 'AWAITING_PEER'), 'the reader sees the real session');
    expect(reader.frames.some((m) => m.sessionId === 'forged')).toBe(false);
    for (const v of [writer, reader]) v.ws.close();
    await server.service.app.inject({ method: 'DELETE', url: `/v1/sessions/${model}` });
  });
});

/** A GET with a Host header of the test's choosing (fetch may not set one). */
function getWithHost(url: string, host: string): Promise<number> {
  const { hostname, port, pathname } = new URL(url);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: hostname, port, path: pathname, headers: { host } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}
