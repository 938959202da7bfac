// Tenant isolation through a real listening server: two tenants' clients (managed keys) both
// use the same session names without meeting, and every route, tried as the wrong tenant,
// neither shows, joins, reads nor ends the other tenant's session: chat in four protocols,
// model lists, session ends, the WebSocket side, and the admin routes for tenant roles.
import OpenAI from 'openai';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { scopedId } from '../../src/auth/tenants.js';
import { apiError, sleep, until } from '../http/support.js';
import { startCluster } from '../cluster/instances.js';

import { call, useServices } from './support.js';
const ADMIN = 'admin-secret-for-tenants';
const { start, redis: privateRedis } = useServices(ADMIN);
async function issue(url: string, name: string, tenant: string | null, scopes: string[] = ['client']): Promise<string> {
  const made = await call(url, 'POST', '/admin/keys', ADMIN, { name, tenant, scopes });
  expect(made.status).toBe(201);
  return made.body.key as string;
}

const user = (content: string) => ({ role: 'user' as const, content });

describe('tenants', () => {
  it('keeps two tenants apart on every route, even where their session names are the same', async () => {
    const service = await start({ handshakeTimeoutSeconds: '5' });
    const url = service.url;
    const a1 = await issue(url, 'a1', 'studio-a');
    const a2 = await issue(url, 'a2', 'studio-a');
    const b1 = await issue(url, 'b1', 'studio-b');
    const viewerB = await issue(url, 'viewer b', 'studio-b', ['viewer']);
    const operatorA = await issue(url, 'operator a', 'studio-a', ['operator']);
    const sdk = (key: string) => new OpenAI({ baseURL: `${url}/v1`, apiKey: key, maxRetries: 0 });
    const sessionA = scopedId('studio-a', 'npc-guard');
    const sessionB = scopedId('studio-b', 'npc-guard');

    // studio-a's two clients talk in npc-guard.
    const handshake = sdk(a1).chat.completions.create({ model: 'npc-guard', messages: [user('Halt!')] });
    await until(() => service.ctx.sessions.get(sessionA)?.state === 'AWAITING_PEER', 'studio-a side A is held');
    // studio-b's client names npc-guard too: a session of its own, not side B of studio-a's.
    const stranger = sdk(b1).chat.completions.create({ model: 'npc-guard', messages: [user('I am B, let me in')] });
    await until(() => service.ctx.sessions.get(sessionB)?.state === 'AWAITING_PEER', "studio-b's own npc-guard");
    expect(service.ctx.sessions.get(sessionA)!.context.sides.B.joined).toBe(false);
    const answer = sdk(a2).chat.completions.create({ model: 'npc-guard', messages: [user('Friend.')] });
    answer.catch(() => undefined);
    stranger.catch(() => undefined);
    expect((await handshake).choices[0]!.message.content).toBe('Friend.');

    // Model lists: each tenant sees only its own sessions (in every protocol's list).
    const waitingA = sdk(a1).chat.completions.create({ model: 'only-a', messages: [user('anyone?')] });
    waitingA.catch(() => undefined);
    await until(() => service.ctx.sessions.get(scopedId('studio-a', 'only-a'))?.state === 'AWAITING_PEER', 'only-a waits');
    for (const path of ['/v1/models', '/v1beta/models', '/api/tags']) {
      const listedB = JSON.stringify((await call(url, 'GET', path, b1)).body);
      expect(listedB, path).not.toContain('only-a');
      expect(JSON.stringify((await call(url, 'GET', path, a1)).body), path).toContain('only-a');
    }

    // Ending: studio-b's client cannot end studio-a's session by its name; it ends its own.
    expect((await call(url, 'DELETE', '/v1/sessions/only-a', b1)).status).toBe(404);
    expect(service.ctx.sessions.get(scopedId('studio-a', 'only-a'))).toBeDefined();

    // Chat in other protocols, as studio-b, naming studio-a's waiting session: a new one in studio-b.
    const anthropic = fetch(`${url}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': b1 },
      body: JSON.stringify({ model: 'only-a', max_tokens: 10, messages: [user('join?')] }),
    });
    await until(() => service.ctx.sessions.get(scopedId('studio-b', 'only-a')) !== undefined, "studio-b's own only-a");
    expect(service.ctx.sessions.get(scopedId('studio-a', 'only-a'))!.context.sides.B.joined).toBe(false);

    // The WebSocket side: studio-b's socket on only-a sits in studio-b's session.
    const socket = new WebSocket(`${url.replace('http', 'ws')}/v1/realtime?session=only-a&side=B`, { headers: { authorization: `Bearer ${b1}` } });
    await new Promise((resolve, reject) => (socket.once('open', resolve), socket.once('error', reject)));
    socket.send(JSON.stringify({ type: 'message', content: 'hello from b', id: 'm1' }));
    await sleep(200);
    expect(service.ctx.sessions.get(scopedId('studio-a', 'only-a'))!.context.sides.B.joined).toBe(false);
    socket.close();

    // One WebSocket a side, per tenant: studio-a's socket on a side neither blocks nor is taken
    // over by studio-b's socket on the same name and side.
    const openSide = (key: string, extra = '') =>
      new Promise<{ socket: WebSocket; frames: any[] }>((resolve, reject) => {
        const s = new WebSocket(`${url.replace('http', 'ws')}/v1/realtime?session=shared-side&side=A${extra}`, { headers: { authorization: `Bearer ${key}` } });
        const frames: any[] = [];
        s.on('message', (d) => frames.push(JSON.parse(d.toString())));
        s.once('open', () => resolve({ socket: s, frames }));
        s.once('error', reject);
      });
    const sideA = await openSide(a1);
    const sideB = await openSide(b1);
    const takeover = await openSide(b1, '&takeover=true');
    await sleep(200);
    expect(sideA.socket.readyState).toBe(WebSocket.OPEN);
    expect(sideB.frames.some((f) => f.code === 'session_conflict')).toBe(false);
    expect(sideA.frames.some((f) => f.type === 'error')).toBe(false);
    for (const s of [sideA, sideB, takeover]) s.socket.close();

    // Admin routes with tenant roles: studio-b's viewer sees studio-b only, and cannot name studio-a.
    const listed = await call(url, 'GET', '/admin/sessions', viewerB);
    expect(listed.status).toBe(200);
    expect(listed.body.data.every((s: { tenant: string }) => s.tenant === 'studio-b')).toBe(true);
    expect(listed.body.data.map((s: { id: string }) => s.id)).toContain('npc-guard');
    expect((await call(url, 'GET', '/admin/sessions/npc-guard?tenant=studio-a', viewerB)).status).toBe(404);
    expect((await call(url, 'GET', '/admin/sessions/npc-guard', viewerB)).body).toMatchObject({ id: 'npc-guard', tenant: 'studio-b' });
    // A viewer reads no transcript and ends nothing, in any tenant.
    expect((await call(url, 'GET', '/admin/sessions/npc-guard/transcript?tenant=studio-a', viewerB)).status).toBe(403);
    expect((await call(url, 'DELETE', '/admin/sessions/npc-guard?tenant=studio-a', viewerB)).status).toBe(403);
    expect((await call(url, 'GET', '/admin/health', viewerB)).status).toBe(403);
    // studio-a's operator reads studio-a's transcript, not studio-b's.
    const transcript = await call(url, 'GET', '/admin/sessions/npc-guard/transcript', operatorA);
    expect(transcript.status).toBe(200);
    expect(transcript.body).toMatchObject({ session: 'npc-guard', tenant: 'studio-a' });
    expect(JSON.stringify(transcript.body)).toContain('Friend.');
    expect(JSON.stringify(transcript.body)).not.toContain('let me in');
    expect((await call(url, 'GET', '/admin/sessions/npc-guard/transcript?tenant=studio-b', operatorA)).status).toBe(404);
    // A client's masked list holds its own tenant's sessions only.
    const masked = await call(url, 'GET', '/admin/sessions', b1);
    expect(masked.body.ids_masked).toBe(true);
    expect(masked.body.data.every((s: { tenant: string }) => s.tenant === 'studio-b')).toBe(true);

    // The admin key reaches every tenant with ?tenant=, and ends studio-b's npc-guard alone.
    const all = await call(url, 'GET', '/admin/sessions', ADMIN);
    expect(new Set(all.body.data.map((s: { tenant: string }) => s.tenant))).toEqual(new Set(['studio-a', 'studio-b']));
    expect((await call(url, 'DELETE', '/admin/sessions/npc-guard?tenant=studio-b', ADMIN)).status).toBe(200);
    expect(service.ctx.sessions.get(sessionB)?.closed ?? true).toBe(true);
    expect(service.ctx.sessions.get(sessionA)?.closed).toBe(false);
    expect((await apiError(stranger)).status).toBe(410);

    anthropic.catch(() => undefined);
  });

  it('scopes a managed key\'s sessions to its tenant even where keys are not required', async () => {
    const service = await start({ requireApiKey: 'false', handshakeTimeoutSeconds: '5' });
    const a1 = await issue(service.url, 'a1', 'studio-a');
    const keyed = new OpenAI({ baseURL: `${service.url}/v1`, apiKey: a1, maxRetries: 0 }).chat.completions.create({ model: 'open-npc', messages: [user('with a key')] });
    keyed.catch(() => undefined);
    await until(() => service.ctx.sessions.get(scopedId('studio-a', 'open-npc'))?.state === 'AWAITING_PEER', "studio-a's open-npc");
    // A caller without a key is in the default tenant: its open-npc is another session.
    const anonymous = new OpenAI({ baseURL: `${service.url}/v1`, apiKey: 'none', maxRetries: 0 }).chat.completions.create({ model: 'open-npc', messages: [user('without')] });
    anonymous.catch(() => undefined);
    await until(() => service.ctx.sessions.get('open-npc')?.state === 'AWAITING_PEER', "the default tenant's open-npc");
    expect(service.ctx.sessions.get(scopedId('studio-a', 'open-npc'))!.context.sides.B.joined).toBe(false);
  });

  it('refuses a session name that would spell another tenant\'s id', async () => {
    const service = await start({ apiKeys: 'sk-default-tenant' });
    const forged = `studio-a\u001fnpc-guard`;
    const refused = await call(service.url, 'POST', '/v1/chat/completions', 'sk-default-tenant', { model: forged, messages: [user('hi')] });
    expect(refused.status).toBe(422);
    expect(refused.body.error).toMatchObject({ code: 'invalid_request', param: 'model' });
    const ws = new WebSocket(`${service.url.replace('http', 'ws')}/v1/realtime?session=${encodeURIComponent(forged)}&side=A&key=sk-default-tenant`);
    const frame = await new Promise<any>((resolve) => ws.once('message', (d) => resolve(JSON.parse(d.toString()))));
    expect(frame).toMatchObject({ type: 'error', code: 'invalid_request' });
    ws.close();
    expect(service.ctx.sessions.size).toBe(0);
  });

  it('keeps tenants apart in cluster mode: the same name on two instances is two sessions, and a tenant\'s peer reaches its own', async () => {
    const redis = await privateRedis();
    const [one, two] = await startCluster(redis.url, 2, { ADMIN_API_KEY: ADMIN, REQUIRE_API_KEY: 'true' });
    const a1 = await issue(one!.url, 'a1', 'studio-a');
    const a2 = await issue(one!.url, 'a2', 'studio-a');
    const b1 = await issue(one!.url, 'b1', 'studio-b');
    const sdk = (url: string, key: string) => new OpenAI({ baseURL: `${url}/v1`, apiKey: key, maxRetries: 0 });
    const handshakeA = sdk(one!.url, a1).chat.completions.create({ model: 'npc', messages: [user('A of studio-a')] });
    const handshakeB = sdk(two!.url, b1).chat.completions.create({ model: 'npc', messages: [user('A of studio-b')] });
    handshakeB.catch(() => undefined);
    const both = async () => ((await call(one!.url, 'GET', '/admin/sessions', ADMIN)).body.data as Array<{ id: string; tenant: string; state: string }>).filter((s) => s.id === 'npc');
    for (let i = 0; i < 100 && (await both()).length < 2; i++) await sleep(50);
    expect((await both()).map((s) => s.tenant).sort()).toEqual(['studio-a', 'studio-b']);
    // studio-a's peer, on the other instance, joins studio-a's npc (forwarded to its owner), not studio-b's.
    const answer = sdk(two!.url, a2).chat.completions.create({ model: 'npc', messages: [user('B of studio-a')] });
    answer.catch(() => undefined);
    expect((await handshakeA).choices[0]!.message.content).toBe('B of studio-a');
    const states = Object.fromEntries((await both()).map((s) => [s.tenant, s.state]));
    expect(states).toEqual({ 'studio-a': 'ACTIVE', 'studio-b': 'AWAITING_PEER' });
  }, 40_000);
});
