/**
 * The email bridge in cluster mode: two instances on a private Redis, both configured with the
 * same mailbox, and only one of them reading it (the bridges' lease). The game plays through
 * the instance that does not run the bridges; the admin API answers the same on both. Then the
 * instance running the bridges is SIGKILLed while the game waits for the player: the other
 * takes the lease, reads the conversation from Redis, reconnects the side and the mailbox, and
 * the thread goes on, nothing lost or sent twice.
 */
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { killAll, startCluster, type Instance } from '../cluster/instances.js';
import { startMailSystem, type MailSystem } from '../helpers/mail-servers.js';
import { startRedis, type PrivateRedis } from '../helpers/redis.js';
import { call } from '../security/support.js';
import { until } from './support.js';

const ADMIN = 'admin-key-for-cluster-bridges';
const BRIDGE = 'bridge@game.test';
const PLAYER = 'player@example.test';

let redis: PrivateRedis;
let mail: MailSystem;

beforeAll(async () => {
  redis = await startRedis();
  mail = await startMailSystem();
}, 60_000);

afterAll(async () => {
  killAll();
  await mail?.destroy();
  await redis?.destroy();
});

/** The instance whose /health says it runs the email bridge. */
async function runnerOf(instances: Instance[]): Promise<Instance> {
  let found: Instance | undefined;
  await until(async () => {
    for (const instance of instances) {
      if (!instance.running) continue;
      const health = await call(instance.url, 'GET', '/health', ADMIN).catch(() => null);
      if (health?.body?.bridges?.email?.connected === true) {
        found = instance;
        return true;
      }
    }
    return false;
  }, 'an instance runs the email bridge', 20_000);
  return found!;
}

describe('bridges in a cluster', () => {
  it('runs the bridges on one instance, and another carries the thread on when it dies', async () => {
    const instances = await startCluster(redis.url, 2, {
      ADMIN_API_KEY: ADMIN,
      CLUSTER_LEASE_MS: '2000',
      TURN_TIMEOUT_SECONDS: '60',
      HANDSHAKE_TIMEOUT_SECONDS: '60',
      BRIDGE_EMAIL_IMAP_URL: mail.imapUrl(BRIDGE),
      BRIDGE_EMAIL_SMTP_URL: mail.smtpUrl(BRIDGE),
      BRIDGE_EMAIL_ADDRESS: BRIDGE,
      BRIDGE_EMAIL_ALLOW: PLAYER,
    });
    const runner = await runnerOf(instances);
    const other = instances.find((i) => i !== runner)!;
    // The other one says who runs them, and passes the admin API on to it.
    expect((await call(other.url, 'GET', '/health', ADMIN)).body.bridges.email).toEqual({ running_on: expect.any(String) });
    const listed = await call(other.url, 'GET', '/admin/bridges', ADMIN);
    expect(listed.status).toBe(200);
    expect(listed.body.data[0]).toMatchObject({ bridge: 'email', connected: true });

    // The game plays through the instance that does not run the bridges.
    const model = 'npc-cluster';
    const game = new OpenAI({ baseURL: `${other.url}/v1`, apiKey: 'unused', maxRetries: 2, timeout: 90_000 });
    const system = { role: 'system' as const, content: 'You are the guard.' };
    const handshake = game.chat.completions.create({ model, messages: [system, { role: 'user', content: 'begin' }] });
    const first = await mail.send({ from: PLAYER, to: BRIDGE, subject: `[session:${model}] Hello`, text: 'Open the gate.' });
    expect((await handshake).choices[0]!.message.content).toBe('Open the gate.');
    const answer = game.chat.completions.create({
      model,
      messages: [system, { role: 'user', content: 'begin' }, { role: 'assistant', content: 'Open the gate.' }, { role: 'user', content: 'Not before dawn.' }],
    });
    const reply = await mail.waitForMail(PLAYER, (m) => m.inReplyTo === first, 20_000);
    expect(reply.text?.trim()).toBe('Not before dawn.');

    // The instance running the bridges dies; the other takes them over from Redis.
    await runner.kill();
    const survivor = await runnerOf([other]);
    expect(survivor).toBe(other);
    await mail.send({ from: PLAYER, to: BRIDGE, subject: `Re: [session:${model}] Hello`, inReplyTo: reply.messageId, references: [first, reply.messageId!], text: 'Then I will wait.' });
    expect((await answer).choices[0]!.message.content).toBe('Then I will wait.');
    const conversations = await call(other.url, 'GET', `/admin/bridges/conversations?session=${model}`, ADMIN);
    expect(conversations.body.data).toHaveLength(1);
    expect(conversations.body.data[0]).toMatchObject({ peer: PLAYER, deliveries_received: 1, deliveries_sent: 1, queue_depth: 0 });
    // One reply in the player's box: nothing was sent twice by the two instances.
    expect((await mail.inbox(PLAYER)).filter((m) => m.inReplyTo === first)).toHaveLength(1);
  }, 120_000);
});
