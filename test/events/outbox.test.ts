/**
 * Nothing owed is lost: the service is SIGKILLed while its receiver is down, with events
 * undelivered; started again on the same journal, it delivers every one of them, with the ids
 * they had, in order, and nothing delivered before is sent twice beyond the one in flight.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/net.js';
import { startReceiver, verify, type Receiver } from '../helpers/webhook-receiver.js';
import { call } from '../security/support.js';
import { converse, killAllProcs, launch, SESSION_EVENTS } from './support.js';

const ADMIN = 'admin-key-for-outbox-tests';
const dirs: string[] = [];
const receivers: Receiver[] = [];
afterEach(async () => {
  killAllProcs();
  await Promise.all(receivers.splice(0).map((r) => r.close()));
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('the outbox', () => {
  it('delivers after a SIGKILL every event owed, with the same ids, in order', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'motive-outbox-'));
    dirs.push(dir);
    const receiver = await startReceiver();
    receivers.push(receiver);
    let up = false;
    receiver.answer = () => (up ? { status: 200 } : { status: 503 });
    const port = await freePort();
    const env = { JOURNAL_PATH: dir, ADMIN_API_KEY: ADMIN, WEBHOOK_ALLOW_NETWORKS: '127.0.0.1/32', HANDSHAKE_TIMEOUT_SECONDS: '20', TURN_TIMEOUT_SECONDS: '20' };
    const first = await launch(port, env);
    const created = await call(first.url, 'POST', '/admin/webhooks', ADMIN, { url: receiver.url });
    expect(created.status).toBe(201);
    const secret = created.body.secret as string;
    await converse([first.url], ADMIN, 'npc-crash');
    // The first event failed at least once; the rest wait behind it (in order per session).
    await receiver.waitFor(2);
    const before = receiver.received.map((r) => r.headers['webhook-id']);
    expect(new Set(before).size).toBe(1);
    // The failure streak is kept with the endpoint, so a restart carries it on.
    const failing = (await call(first.url, 'GET', `/admin/webhooks/${created.body.id}`, ADMIN)).body.failing_since;
    expect(Date.parse(failing)).toBeGreaterThan(0);
    await first.kill();

    up = true;
    const second = await launch(port, env);
    const delivered = await receiver.waitFor(SESSION_EVENTS.length, (r) => receiver.received.indexOf(r) >= before.length, 20_000).catch((err) => {
      throw new Error(`${err.message}\n${second.output}\n${receiver.received.length}`);
    });
    expect(delivered.map((r) => r.event.type)).toEqual(SESSION_EVENTS);
    expect(delivered[0]!.headers['webhook-id']).toBe(before[0]);
    for (const r of delivered) verify(secret, r);
    expect((await call(second.url, 'GET', `/admin/webhooks/${created.body.id}`, ADMIN)).body.failing_since).toBeNull();
    // Delivered once each: a restart now sends nothing again.
    await second.kill();
    const count = receiver.received.length;
    const third = await launch(port, env);
    await new Promise((r) => setTimeout(r, 1000));
    expect(receiver.received.length).toBe(count);
    const attempts = await call(third.url, 'GET', `/admin/webhooks/${created.body.id}/attempts?limit=100`, ADMIN);
    expect(attempts.body.data.filter((a: any) => a.outcome === 'delivered')).toHaveLength(SESSION_EVENTS.length);
  });
});

describe('events and traces', () => {
  it('carries the trace id of the request an event concerns when tracing is on', async () => {
    const otlp = await startReceiver(); // takes the spans (any POST answered 204)
    const receiver = await startReceiver();
    receivers.push(otlp, receiver);
    const port = await freePort();
    const service = await launch(port, { JOURNAL_PATH: 'memory', ADMIN_API_KEY: ADMIN, WEBHOOK_ALLOW_NETWORKS: '127.0.0.1/32', OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_BSP_SCHEDULE_DELAY: '50' });
    expect((await call(service.url, 'POST', '/admin/webhooks', ADMIN, { url: receiver.url, types: ['message.*', 'session.created'] })).status).toBe(201);
    await converse([service.url], ADMIN, 'npc-traced');
    const events = await receiver.waitFor(5);
    for (const r of events) expect(r.event.traceid, r.event.type).toMatch(/^[0-9a-f]{32}$/);
    // A message and its delivery concern different requests: their traces differ.
    const sent = events.find((r) => r.event.type === 'message.sent')!;
    const delivered = events.find((r) => r.event.type === 'message.delivered')!;
    expect(sent.event.traceid).not.toBe(delivered.event.traceid);
  });
});
