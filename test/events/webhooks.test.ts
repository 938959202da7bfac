/**
 * Webhooks through a real service and a real receiver: sessions played with the official OpenAI
 * SDK, events received over HTTP and verified with the `standardwebhooks` library, a receiver
 * that fails, is slow, redirects, answers 410; rotation, test events, sending again, and the
 * guard against loopback addresses.
 */
import { describe, expect, it } from 'vitest';
import type { Service } from '../../src/server.js';
import { useReceivers, verify } from '../helpers/webhook-receiver.js';
import { call, useServices } from '../security/support.js';
import { converse, until } from './support.js';

const ADMIN = 'admin-key-for-webhook-tests';
const services = useServices(ADMIN);
const receiver = useReceivers();

/** A service whose webhooks may reach the loopback receivers (the guard is tested on its own). */
const start = (settings: Record<string, string> = {}): Promise<Service> => services.start({ requireApiKey: 'false', webhookAllowNetworks: '127.0.0.1/32', ...settings });

async function endpoint(service: Service, body: Record<string, unknown>): Promise<{ id: string; secret: string }> {
  const created = await call(service.url, 'POST', '/admin/webhooks', ADMIN, body);
  expect(created.status, created.text).toBe(201);
  expect(created.body.secret).toMatch(/^whsec_[A-Za-z0-9+/]+=*$/);
  return { id: created.body.id, secret: created.body.secret };
}

describe('webhooks', () => {
  it('sends a session’s events in order, signed as Standard Webhooks says, as CloudEvents without content unless asked', async () => {
    const service = await start();
    const plain = await receiver();
    const full = await receiver();
    const a = await endpoint(service, { url: `${plain.url}/hooks`, types: ['session.*', 'message.*'] });
    const b = await endpoint(service, { url: full.url, types: ['message.sent'], include_content: true });
    await converse([service.url], ADMIN, 'npc-guard');

    const events = await plain.waitFor(6);
    expect(events.map((r) => r.event.type)).toEqual(['session.created', 'session.paired', 'message.sent', 'message.delivered', 'message.sent', 'message.delivered', 'session.closed'].slice(0, events.length));
    const all = await plain.waitFor(7);
    expect(all.map((r) => r.event.type)).toEqual(['session.created', 'session.paired', 'message.sent', 'message.delivered', 'message.sent', 'message.delivered', 'session.closed']);
    for (const request of all) {
      expect(request.path).toBe('/hooks');
      expect(verify(a.secret, request)).toMatchObject({ id: request.headers['webhook-id'] });
      expect(() => verify(b.secret, request)).toThrow();
      expect(request.headers['content-type']).toMatch(/^application\/cloudevents\+json/);
      expect(request.event).toMatchObject({ specversion: '1.0', source: '/motiveproxy/sessions', subject: 'npc-guard', datacontenttype: 'application/json' });
      expect(request.event.dataschema).toBe(`urn:motiveproxy:events:${request.event.type}:v1`);
      expect(request.event.data.content).toBeUndefined();
      expect(request.event.data.handshake).toBeUndefined();
    }
    expect(new Set(all.map((r) => r.event.id)).size).toBe(7);
    expect(all[6]!.event.data).toMatchObject({ session: 'npc-guard', reason: 'deleted' });
    expect(all[3]!.event.data).toMatchObject({ session: 'npc-guard', side: 'A', delivery: 0, chars: 'Who goes there?'.length });

    const sent = await full.waitFor(2);
    expect(sent.map((r) => [r.event.data.side, r.event.data.content])).toEqual([
      ['B', 'Who goes there?'],
      ['A', 'A friend.'],
    ]);
    for (const request of sent) verify(b.secret, request);
    // The same event has the same id whichever endpoint gets it.
    expect(sent[0]!.event.id).toBe(all[2]!.event.id);

    const attempts = await call(service.url, 'GET', `/admin/webhooks/${a.id}/attempts`, ADMIN);
    expect(attempts.body.data).toHaveLength(7);
    expect(attempts.body.data[0]).toMatchObject({ outcome: 'delivered', status: 204, attempt: 1, type: 'session.closed' });
  });

  it('tries a failing receiver again with the same webhook-id, honouring Retry-After, in order per session', async () => {
    const service = await start({ webhookRetryHours: '0.01' });
    const r = await receiver();
    let failures = 0;
    r.answer = (request) => {
      if (request.event?.type === 'session.created' && failures < 2) {
        failures++;
        return failures === 1 ? { status: 500 } : { status: 429, headers: { 'retry-after': '1' } };
      }
      return { status: 200 };
    };
    const ep = await endpoint(service, { url: r.url, types: ['session.created', 'session.paired'] });
    await converse([service.url], ADMIN, 'npc-retry');
    const got = await r.waitFor(4);
    expect(got.map((x) => x.event.type)).toEqual(['session.created', 'session.created', 'session.created', 'session.paired']);
    expect(new Set(got.slice(0, 3).map((x) => x.headers['webhook-id'])).size).toBe(1);
    expect(got[2]!.at - got[1]!.at).toBeGreaterThanOrEqual(950);
    for (const x of got) verify(ep.secret, x);
    const attempts = (await call(service.url, 'GET', `/admin/webhooks/${ep.id}/attempts`, ADMIN)).body.data.reverse();
    expect(attempts.map((x: any) => [x.attempt, x.status, x.outcome])).toEqual([
      [1, 500, 'failed'],
      [2, 429, 'failed'],
      [3, 200, 'delivered'],
      [1, 200, 'delivered'],
    ]);
  });

  it('gives an event up after its horizon and disables an endpoint that only fails, with a webhook.disabled event', async () => {
    const service = await start({ webhookRetryHours: '0.0005', webhookDisableAfterHours: '0.0005' });
    const down = await receiver();
    down.answer = () => ({ status: 503 });
    const watcher = await receiver();
    const failing = await endpoint(service, { url: down.url, types: ['session.created'] });
    await endpoint(service, { url: watcher.url, types: ['webhook.*'] });
    await converse([service.url], ADMIN, 'npc-down');
    const [disabled] = await watcher.waitFor(1);
    expect(disabled!.event).toMatchObject({ type: 'webhook.disabled', source: '/motiveproxy/admin', data: { endpoint: failing.id } });
    expect(disabled!.event.data.reason).toMatch(/no delivery succeeded/);
    const view = await call(service.url, 'GET', `/admin/webhooks/${failing.id}`, ADMIN);
    expect(view.body).toMatchObject({ enabled: false });
    expect(down.received.length).toBeGreaterThan(2);
  });

  it('disables an endpoint at once when it answers 410 Gone', async () => {
    const service = await start();
    const gone = await receiver();
    gone.answer = () => ({ status: 410 });
    const ep = await endpoint(service, { url: gone.url });
    await converse([service.url], ADMIN, 'npc-gone');
    await gone.waitFor(1);
    await until(() => service.ctx.events.endpoints.get(ep.id)?.disabled != null, 'the endpoint is disabled');
    expect(service.ctx.events.endpoints.get(ep.id)!.disabled!.reason).toMatch(/410/);
    await new Promise((r) => setTimeout(r, 300));
    expect(gone.received).toHaveLength(1);
    const test = await call(service.url, 'POST', `/admin/webhooks/${ep.id}/test`, ADMIN);
    expect(test.status).toBe(409);
    expect(test.body.error.code).toBe('endpoint_disabled');
  });

  it('times out a slow receiver, follows a same-origin 307 but no redirect to another host', async () => {
    const service = await start({ webhookTimeoutSeconds: '0.3' });
    const other = await receiver();
    const r = await receiver();
    r.answer = (request) => {
      if (request.path === '/slow') return { status: 200, delayMs: 2000 };
      if (request.path === '/moved') return { status: 307, headers: { location: '/here' } };
      if (request.path === '/away') return { status: 302, headers: { location: `${other.url}/stolen` } };
      return { status: 200 };
    };
    const slow = await endpoint(service, { url: `${r.url}/slow` });
    const moved = await endpoint(service, { url: `${r.url}/moved` });
    const away = await endpoint(service, { url: `${r.url}/away` });
    const test = async (id: string) => (await call(service.url, 'POST', `/admin/webhooks/${id}/test`, ADMIN)).body;
    const slowAttempt = await test(slow.id);
    expect(slowAttempt).toMatchObject({ status: null, outcome: 'failed', type: 'webhook.test' });
    expect(slowAttempt.error).toMatch(/no answer within 300 ms/);
    expect(await test(moved.id)).toMatchObject({ status: 200, outcome: 'delivered' });
    expect(r.received.filter((x) => x.path === '/here')).toHaveLength(1);
    const awayAttempt = await test(away.id);
    expect(awayAttempt).toMatchObject({ status: 302, outcome: 'failed' });
    expect(awayAttempt.error).toMatch(/another origin/);
    expect(other.received).toHaveLength(0);
  });

  it('refuses loopback receivers unless WEBHOOK_ALLOW_NETWORKS lets them through', async () => {
    const service = await services.start({ requireApiKey: 'false' });
    const r = await receiver();
    for (const url of [r.url, r.url.replace('127.0.0.1', 'localhost'), `http://[::1]:${new URL(r.url).port}`, 'http://169.254.169.254/latest/meta-data']) {
      const ep = await endpoint(service, { url });
      const attempt = (await call(service.url, 'POST', `/admin/webhooks/${ep.id}/test`, ADMIN)).body;
      expect(attempt, url).toMatchObject({ status: null, outcome: 'failed' });
      expect(attempt.error, url).toMatch(/blocked|not allowed/);
    }
    expect(r.received).toHaveLength(0);
  });

  it('signs with both secrets while a rotation overlaps, sends again with the same id, and sends test events', async () => {
    const service = await start();
    const r = await receiver();
    const ep = await endpoint(service, { url: r.url, types: ['webhook.test'] });
    const rotated = await call(service.url, 'POST', `/admin/webhooks/${ep.id}/rotate`, ADMIN, { overlap_seconds: 60 });
    expect(rotated.status).toBe(200);
    const fresh = rotated.body.secret as string;
    expect(fresh).not.toBe(ep.secret);
    expect(rotated.body.secrets).toHaveLength(2);
    const test = await call(service.url, 'POST', `/admin/webhooks/${ep.id}/test`, ADMIN);
    expect(test.body).toMatchObject({ status: 204, outcome: 'delivered', type: 'webhook.test' });
    const [first] = await r.waitFor(1);
    expect(String(first!.headers['webhook-signature']).split(' ')).toHaveLength(2);
    verify(ep.secret, first!);
    verify(fresh, first!);
    const again = await call(service.url, 'POST', `/admin/webhooks/${ep.id}/events/${test.body.event}/resend`, ADMIN);
    expect(again.body).toMatchObject({ event: test.body.event, outcome: 'delivered', manual: true, attempt: 2 });
    const both = await r.waitFor(2);
    expect(both[1]!.headers['webhook-id']).toBe(both[0]!.headers['webhook-id']);
    expect(both[1]!.body).toBe(both[0]!.body);
    // Ending the overlap now: only the new secret signs.
    await call(service.url, 'POST', `/admin/webhooks/${ep.id}/rotate`, ADMIN, { overlap_seconds: 0 });
    expect((await call(service.url, 'GET', `/admin/webhooks/${ep.id}`, ADMIN)).body.secrets).toHaveLength(1);
  });

  it('refuses bad endpoint definitions and other tenants’ endpoints with clear errors', async () => {
    const service = await start();
    for (const [body, param] of [
      [{ url: 'ftp://example.com/' }, 'url'],
      [{ url: 'https://user:pw@example.com/' }, 'url'],
      [{ url: 'https://example.com/', types: ['sessoin.*'] }, 'types.0'],
      [{ url: 'https://example.com/', types: [] }, 'types'],
      [{ url: 'https://example.com/', colour: 'blue' }, null],
    ] as const) {
      const answer = await call(service.url, 'POST', '/admin/webhooks', ADMIN, body);
      expect(answer.status, JSON.stringify(body)).toBe(422);
      expect(answer.body.error.code).toBe('invalid_request');
      if (param) expect(answer.body.error.param).toBe(param);
    }
    expect((await call(service.url, 'GET', '/admin/webhooks/ep_nope', ADMIN)).status).toBe(404);
    expect((await call(service.url, 'POST', '/admin/webhooks', 'not-the-admin-key', { url: 'https://example.com/' })).status).toBe(401);
    expect((await call(service.url, 'PUT', '/admin/webhooks', ADMIN, {})).status).toBe(405);
    const types = await call(service.url, 'GET', '/admin/events/types', ADMIN);
    expect(types.body.data.map((t: any) => t.type)).toContain('request.timed_out');
  });
});

describe('webhook endpoints and tenants', () => {
  it('gives a tenant’s admin (the default tenant’s too) its own tenant’s events only, and never an endpoint of every tenant', async () => {
    const service = await start();
    const made = async (body: Record<string, unknown>) => (await call(service.url, 'POST', '/admin/keys', ADMIN, body)).body.key as string;
    const defaultAdmin = await made({ name: 'default admin', scopes: ['admin'] });
    const studioAdmin = await made({ name: 'studio admin', scopes: ['admin'], tenant: 'studio-b' });
    const seenByDefault = await receiver();
    const seenByStudio = await receiver();
    const seenByAll = await receiver();
    const mine = await call(service.url, 'POST', '/admin/webhooks', defaultAdmin, { url: seenByDefault.url, types: ['key.*'] });
    expect(mine.body).toMatchObject({ tenant: null, all_tenants: false });
    const studio = await call(service.url, 'POST', '/admin/webhooks', studioAdmin, { url: seenByStudio.url, types: ['key.*'] });
    expect(studio.body).toMatchObject({ tenant: 'studio-b', all_tenants: false });
    const all = await call(service.url, 'POST', '/admin/webhooks', ADMIN, { url: seenByAll.url, types: ['key.*'] });
    expect(all.body).toMatchObject({ tenant: null, all_tenants: true });
    // Naming another tenant is refused; an endpoint of every tenant is not the default tenant's admin's.
    expect((await call(service.url, 'POST', '/admin/webhooks', defaultAdmin, { url: seenByDefault.url, tenant: 'studio-b' })).status).toBe(403);
    expect((await call(service.url, 'GET', `/admin/webhooks/${all.body.id}`, defaultAdmin)).status).toBe(404);
    expect((await call(service.url, 'GET', '/admin/webhooks', defaultAdmin)).body.data.map((e: any) => e.id)).toEqual([mine.body.id]);

    await made({ name: 'a studio key', tenant: 'studio-b' });
    await made({ name: 'a default key' });
    await seenByAll.waitFor(2, (r) => r.event.data.name === 'a studio key' || r.event.data.name === 'a default key');
    await seenByStudio.waitFor(1, (r) => r.event.data.name === 'a studio key');
    await seenByDefault.waitFor(1, (r) => r.event.data.name === 'a default key');
    await new Promise((r) => setTimeout(r, 300));
    expect(seenByDefault.received.every((r) => r.event.tenant === undefined)).toBe(true);
    expect(seenByStudio.received.every((r) => r.event.tenant === 'studio-b')).toBe(true);
  });
});
