/**
 * Webhooks in cluster mode: two instances on a private Redis, a session whose sides use
 * different instances, and each event delivered by one of them, once; then the instance that
 * sends is SIGKILLed with events owed, and the other takes the sender's lease and delivers them
 * with the ids they had.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startRedis, type PrivateRedis } from '../helpers/redis.js';
import { startReceiver, verify, type Receiver } from '../helpers/webhook-receiver.js';
import { killAll, startCluster, type Instance } from '../cluster/instances.js';
import { call } from '../security/support.js';
import { converse, SESSION_EVENTS, until } from './support.js';

const ADMIN = 'admin-key-for-cluster-webhooks';
let redis: PrivateRedis;
const receivers: Receiver[] = [];
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  killAll();
  await redis?.destroy();
});
afterEach(async () => {
  killAll();
  await Promise.all(receivers.splice(0).map((r) => r.close()));
});

const env = { ADMIN_API_KEY: ADMIN, WEBHOOK_ALLOW_NETWORKS: '127.0.0.1/32', HANDSHAKE_TIMEOUT_SECONDS: '20', TURN_TIMEOUT_SECONDS: '20' };

/** The instance that holds the sender's lease, as the admin API says. */
async function senderOf(instances: Instance[]): Promise<Instance> {
  let found: Instance | undefined;
  await until(async () => {
    for (const instance of instances) {
      if (!instance.running) continue;
      const listed = await call(instance.url, 'GET', '/admin/webhooks', ADMIN).catch(() => null);
      if (listed?.body?.sending === true) {
        found = instance;
        return true;
      }
    }
    return false;
  }, 'an instance sends the webhooks', 15_000);
  return found!;
}

describe('webhooks in a cluster', () => {
  it('delivers each event once, from one instance, and carries on from the marks when that instance dies', async () => {
    const receiver = await startReceiver();
    receivers.push(receiver);
    const instances = await startCluster(redis.url, 2, env);
    const sending = await senderOf(instances);
    const other = instances.find((i) => i !== sending)!;
    expect((await call(other.url, 'GET', '/admin/webhooks', ADMIN)).body.sending).toBe(false);
    // Made on the instance that does not send, and used at once: the sender hears of it a moment
    // later, and still sends every event since the endpoint was made.
    const created = await call(other.url, 'POST', '/admin/webhooks', ADMIN, { url: receiver.url, types: ['session.*', 'message.*'] });
    expect(created.status).toBe(201);
    const secret = created.body.secret as string;
    await converse([instances[0]!.url, instances[1]!.url], ADMIN, 'npc-cluster');
    const got = await receiver.waitFor(SESSION_EVENTS.length);
    expect(got.map((r) => r.event.type)).toEqual(SESSION_EVENTS);
    for (const r of got) verify(secret, r);
    await new Promise((r) => setTimeout(r, 1500));
    expect(receiver.received).toHaveLength(SESSION_EVENTS.length);
    expect(new Set(receiver.received.map((r) => r.headers['webhook-id'])).size).toBe(SESSION_EVENTS.length);

    // Admin events too: a key made on each instance, each event sent once, in the order Redis took them.
    const keys = await startReceiver();
    receivers.push(keys);
    expect((await call(sending.url, 'POST', '/admin/webhooks', ADMIN, { url: keys.url, types: ['key.created'] })).status).toBe(201);
    expect((await call(other.url, 'POST', '/admin/keys', ADMIN, { name: 'made on one' })).status).toBe(201);
    expect((await call(sending.url, 'POST', '/admin/keys', ADMIN, { name: 'made on the other' })).status).toBe(201);
    const made = await keys.waitFor(2);
    expect(made.map((r) => r.event.data.name)).toEqual(['made on one', 'made on the other']);
    await new Promise((r) => setTimeout(r, 500));
    expect(keys.received).toHaveLength(2);

    // The receiver goes down; a second session's events are owed when the sender dies.
    let up = false;
    receiver.answer = () => (up ? { status: 200 } : { status: 503 });
    await converse([instances[1]!.url, instances[0]!.url], ADMIN, 'npc-cluster-2');
    await receiver.waitFor(SESSION_EVENTS.length + 1);
    const firstTry = receiver.received[SESSION_EVENTS.length]!.headers['webhook-id'];
    await sending.kill();
    const killedAt = Date.now();
    up = true;
    const survivor = instances.find((i) => i !== sending)!;
    expect(await senderOf([survivor])).toBe(survivor);
    const later = await receiver.waitFor(SESSION_EVENTS.length, (r) => r.event.subject === 'npc-cluster-2' && r.at > killedAt, 20_000);
    const delivered = later.filter((r, i, all) => all.findIndex((x) => x.headers['webhook-id'] === r.headers['webhook-id']) === i);
    expect(delivered.map((r) => r.event.type)).toEqual(SESSION_EVENTS);
    expect(delivered[0]!.headers['webhook-id']).toBe(firstTry);
    for (const r of delivered) verify(secret, r);
    // Nothing of the first session was sent again by the instance that took over.
    await new Promise((r) => setTimeout(r, 1000));
    expect(receiver.received.filter((r) => r.event.subject === 'npc-cluster')).toHaveLength(SESSION_EVENTS.length);
  });
});
