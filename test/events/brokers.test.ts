/**
 * Events to brokers, through a real service and private brokers: NATS JetStream (subjects
 * motive.<tenant>.<session>.<type>, its stream made when missing) and RabbitMQ (a topic
 * exchange, the type as routing key). Each broker is stopped mid-run and started again: the
 * events made meanwhile wait in the outbox and are published when it is back, in order per
 * session, none lost; after a SIGKILL of the service too.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect as natsConnect } from '@nats-io/transport-node';
import amqp from 'amqplib';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startNats, startRabbit, type PrivateBroker } from '../helpers/brokers.js';
import { freePort } from '../helpers/net.js';
import { converse, killAllProcs, launch, SESSION_EVENTS, until } from './support.js';

const ADMIN = 'admin-key-for-broker-tests';
const dirs: string[] = [];
afterEach(() => {
  killAllProcs();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function journalDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'motive-brokers-'));
  dirs.push(dir);
  return dir;
}

/** Every message of the JetStream stream, in stream order. */
async function streamMessages(url: string, stream: string): Promise<Array<{ subject: string; id: string | undefined; event: any }>> {
  const nc = await natsConnect({ servers: url.replace('nats://', '') });
  try {
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info(stream);
    const consumer = await jetstream(nc).consumers.get(stream);
    const out: Array<{ subject: string; id: string | undefined; event: any }> = [];
    if (info.state.messages === 0) return out;
    const batch = await consumer.fetch({ max_messages: info.state.messages, expires: 2000 });
    for await (const m of batch) {
      out.push({ subject: m.subject, id: m.headers?.get('Nats-Msg-Id'), event: m.json() });
      if (out.length >= info.state.messages) break;
    }
    return out;
  } finally {
    await nc.close();
  }
}

describe('NATS JetStream', () => {
  let nats: PrivateBroker;
  beforeAll(async () => {
    nats = await startNats();
  });
  afterAll(async () => {
    await nats?.destroy();
  });

  it('publishes every event as a CloudEvent with its id, and loses none while the broker is down or the service is killed', async () => {
    const port = await freePort();
    const env = { JOURNAL_PATH: journalDir(), ADMIN_API_KEY: ADMIN, EVENTS_NATS_URL: nats.url, EVENTS_NATS_STREAM: 'TEST_EVENTS', HANDSHAKE_TIMEOUT_SECONDS: '20', TURN_TIMEOUT_SECONDS: '20' };
    let service = await launch(port, env);
    await converse([service.url], ADMIN, 'npc.guard');
    let messages: Awaited<ReturnType<typeof streamMessages>> = [];
    await until(async () => (messages = await streamMessages(nats.url, 'TEST_EVENTS').catch(() => [])).length >= SESSION_EVENTS.length, 'the first session is in the stream');
    expect(messages.map((m) => m.event.type)).toEqual(SESSION_EVENTS);
    // A dot in a session name is escaped: it is one subject token.
    expect(messages[0]!.subject).toBe('motive._.npc%2Eguard.session.created');
    for (const m of messages) {
      expect(m.id).toBe(m.event.id);
      expect(m.event).toMatchObject({ specversion: '1.0', subject: 'npc.guard', source: '/motiveproxy/sessions' });
      expect(m.event.data.content).toBeUndefined();
    }

    // The broker goes away; a session's events wait; the service is killed; both come back.
    await nats.stop();
    await converse([service.url], ADMIN, 'npc-second');
    await service.kill();
    await nats.start();
    service = await launch(port, env);
    await until(async () => (messages = await streamMessages(nats.url, 'TEST_EVENTS').catch(() => [])).length >= 2 * SESSION_EVENTS.length, 'the second session is in the stream', 20_000);
    await new Promise((r) => setTimeout(r, 500));
    messages = await streamMessages(nats.url, 'TEST_EVENTS');
    expect(messages.filter((m) => m.event.subject === 'npc-second').map((m) => m.event.type)).toEqual(SESSION_EVENTS);
    expect(new Set(messages.map((m) => m.id)).size).toBe(messages.length);
    expect(messages).toHaveLength(2 * SESSION_EVENTS.length);
  });
});

describe('RabbitMQ', () => {
  let rabbit: PrivateBroker;
  beforeAll(async () => {
    rabbit = await startRabbit();
  }, 90_000);
  afterAll(async () => {
    await rabbit?.destroy();
  });

  it('publishes to a topic exchange with the type as routing key, confirmed, and loses none while the broker restarts', async () => {
    const port = await freePort();
    const env = { JOURNAL_PATH: journalDir(), ADMIN_API_KEY: ADMIN, EVENTS_AMQP_URL: rabbit.url, EVENTS_INCLUDE_CONTENT: 'true', HANDSHAKE_TIMEOUT_SECONDS: '20', TURN_TIMEOUT_SECONDS: '20' };
    // A consumer's durable queue bound to every session event, before anything is published.
    const setup = await amqp.connect(rabbit.url);
    const channel = await setup.createChannel();
    await channel.assertExchange('motive.events', 'topic', { durable: true });
    await channel.assertQueue('test-sessions', { durable: true });
    await channel.bindQueue('test-sessions', 'motive.events', 'session.#');
    await channel.bindQueue('test-sessions', 'motive.events', 'message.#');
    await setup.close();

    const service = await launch(port, env);
    await converse([service.url], ADMIN, 'npc-rabbit');
    await rabbit.stop();
    await converse([service.url], ADMIN, 'npc-rabbit-2');
    await rabbit.start();

    const got: Array<{ key: string; id: string | undefined; event: any }> = [];
    await until(
      async () => {
        const connection = await amqp.connect(rabbit.url).catch(() => null);
        if (!connection) return false;
        try {
          const ch = await connection.createChannel();
          for (;;) {
            const message = await ch.get('test-sessions', { noAck: true });
            if (!message) break;
            got.push({ key: message.fields.routingKey, id: message.properties.messageId, event: JSON.parse(message.content.toString('utf8')) });
          }
        } finally {
          await connection.close().catch(() => undefined);
        }
        return got.length >= 2 * SESSION_EVENTS.length;
      },
      'both sessions are in the queue',
      60_000,
    );
    for (const subject of ['npc-rabbit', 'npc-rabbit-2']) {
      expect(got.filter((m) => m.event.subject === subject).map((m) => m.event.type)).toEqual(SESSION_EVENTS);
    }
    for (const m of got) {
      expect(m.key).toBe(m.event.type);
      expect(m.id).toBe(m.event.id);
    }
    expect(got.find((m) => m.event.type === 'message.sent')!.event.data.content).toBe('Who goes there?');
    expect(new Set(got.map((m) => m.id)).size).toBe(got.length);
  }, 120_000);
});
