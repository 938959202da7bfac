/**
 * Events to message brokers, as CloudEvents: NATS JetStream (EVENTS_NATS_URL; subjects
 * `motive.<tenant>.<session>.<type>`, the stream made when missing) and RabbitMQ
 * (EVENTS_AMQP_URL; a durable topic exchange, the type as routing key). An event counts as
 * published only once the broker confirmed it (a JetStream PubAck, an AMQP publisher confirm);
 * until then it stays owed: the same outbox that feeds webhooks feeds these, each broker keeps
 * its marks like an endpoint, and a broker that is away (or a restart) only delays its events.
 * Each session's events are published in order; a JetStream stream drops a repeat of an event
 * id inside its duplicate window (`Nats-Msg-Id`), and AMQP messages carry the id as `messageId`.
 */
import type { ChannelModel } from 'amqplib';
import type { ProxyEvent } from './catalogue.js';
import { toCloudEvent } from './catalogue.js';
import { countPending, isAfter, MarkBook, oldestPosition, markKey, markOf, type DeliveryState, type Mark } from './delivery-state.js';

/** Publishes one event's body and resolves once the broker confirmed it. */
export interface BrokerTarget {
  readonly name: string;
  publish(event: ProxyEvent, body: string): Promise<void>;
  close(): Promise<void>;
}

interface Stream {
  readonly key: string;
  readonly events: ProxyEvent[];
  last: Mark | undefined;
  busy: boolean;
}

const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 30_000;

/** One broker's queues: per session, in order; a failed publish holds the queue and is tried again. */
export class BrokerPublisher {
  private readonly streams = new Map<string, Stream>();
  private readonly marks: MarkBook;
  private running = false;
  private inFlight = 0;
  private retryMs = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private failing = false;
  private readonly settled = new Set<Promise<void>>();
  private readonly who: string;

  constructor(
    private readonly target: BrokerTarget,
    state: DeliveryState,
    private readonly options: {
      readonly content: boolean;
      readonly concurrency?: number;
      readonly onDown?: (error: unknown) => void;
      readonly onUp?: () => void;
      readonly onPublished?: () => void;
    },
  ) {
    this.who = `broker:${target.name}`;
    this.marks = new MarkBook(state, (key) => key.startsWith(`${this.who}\u0000`));
  }

  async start(): Promise<void> {
    await this.marks.load();
    this.streams.clear();
    this.running = true;
  }

  async stop(): Promise<void> {
    this.running = false;
    this.streams.clear();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    await Promise.allSettled([...this.settled]);
  }

  wantsEvents(): boolean {
    return this.running;
  }

  offer(events: readonly ProxyEvent[]): void {
    if (!this.running) return;
    for (const event of events) {
      if (event.type === 'webhook.test') continue;
      const key = markKey(this.who, event.stream);
      let stream = this.streams.get(key);
      const last = stream ? stream.last : this.marks.get(key);
      if (!isAfter(event, last)) continue;
      if (!stream) {
        stream = { key, events: [], last, busy: false };
        this.streams.set(key, stream);
      }
      stream.events.push(event);
      stream.last = markOf(event, stream.last);
    }
    this.pump();
  }

  owes(stream: string): boolean {
    return (this.streams.get(markKey(this.who, stream))?.events.length ?? 0) > 0;
  }

  oldestPosition(): number | null {
    return oldestPosition(this.streams.values());
  }

  get pending(): number {
    return countPending(this.streams.values());
  }

  markedStreams(): Set<string> {
    return this.marks.streams();
  }

  forgetStreams(streams: ReadonlySet<string>): Promise<void> {
    return this.marks.forget(streams);
  }

  private pump(): void {
    if (!this.running || this.retryTimer) return;
    const limit = this.options.concurrency ?? 64;
    for (const stream of this.streams.values()) {
      if (this.inFlight >= limit) return;
      if (stream.busy) continue;
      if (stream.events.length === 0) {
        this.streams.delete(stream.key);
        continue;
      }
      this.publish(stream);
    }
  }

  private publish(stream: Stream): void {
    const event = stream.events[0]!;
    stream.busy = true;
    this.inFlight++;
    const work = this.target
      .publish(event, JSON.stringify(toCloudEvent(event, this.options.content)))
      .then(async () => {
        if (this.failing) {
          this.failing = false;
          this.options.onUp?.();
        }
        this.retryMs = 0;
        this.options.onPublished?.();
        if (this.streams.get(stream.key) !== stream) return;
        stream.events.shift();
        await this.marks.advance(stream.key, event);
      })
      .catch((error: unknown) => {
        // The broker is away or refused: everything waits (and stays owed) until it is back.
        if (!this.failing) {
          this.failing = true;
          this.options.onDown?.(error);
        }
        this.retryMs = Math.min(RETRY_MAX_MS, Math.max(RETRY_MIN_MS, this.retryMs * 2));
        if (!this.retryTimer && this.running) {
          this.retryTimer = setTimeout(() => {
            this.retryTimer = null;
            this.pump();
          }, this.retryMs);
          this.retryTimer.unref?.();
        }
      })
      .finally(() => {
        stream.busy = false;
        this.inFlight--;
        this.settled.delete(work);
        this.pump();
      });
    this.settled.add(work);
  }
}

/** A subject token: NATS forbids `.`, `*`, `>` and whitespace in one; `%` escapes them (and a leading `_`, kept for the service's own tokens). */
export function subjectToken(text: string): string {
  const escaped = text.replace(/[%.*>\s]/gu, (c) => `%${c.codePointAt(0)!.toString(16).toUpperCase().padStart(2, '0')}`);
  return escaped.startsWith('_') ? `%5F${escaped.slice(1)}` : escaped || '%20';
}

/** `motive.<tenant>.<session>.<type>`: `_` for the default tenant, `_admin` for events of no session. */
export function subjectOf(event: ProxyEvent, prefix = 'motive'): string {
  const tenant = event.tenant === null ? '_' : subjectToken(event.tenant);
  const session = event.session === null ? '_admin' : subjectToken(event.session);
  return `${prefix}.${tenant}.${session}.${event.type}`;
}

/** NATS JetStream: publishes with `Nats-Msg-Id` and waits for the stream's PubAck. */
export async function natsTarget(url: string, streamName: string, onWarning: (message: string) => void): Promise<BrokerTarget> {
  const { connect } = await import('@nats-io/transport-node');
  const { jetstream, jetstreamManager } = await import('@nats-io/jetstream');
  const { headers, nanos } = await import('@nats-io/nats-core');
  const servers = url.split(',').map((s) => s.trim().replace(/^nats:\/\//, ''));
  // Never gives up reconnecting; the first connection is waited for in the background, so the
  // service starts whether the broker is up or not.
  const connecting = connect({ servers, name: 'motive-proxy', maxReconnectAttempts: -1, reconnectTimeWait: 500, waitOnFirstConnect: true });
  let ensured = false;
  let failed: unknown = null;
  connecting.catch((err: unknown) => (failed = err));
  const ensureStream = async (nc: Awaited<typeof connecting>): Promise<void> => {
    if (ensured) return;
    const jsm = await jetstreamManager(nc);
    try {
      await jsm.streams.info(streamName);
    } catch {
      await jsm.streams.add({ name: streamName, subjects: ['motive.>'], duplicate_window: nanos(2 * 60_000) });
      onWarning(`events: created the JetStream stream ${streamName} for subjects motive.>`);
    }
    ensured = true;
  };
  return {
    name: 'nats',
    async publish(event, body) {
      if (failed) throw failed;
      let timer: NodeJS.Timeout | undefined;
      const nc = await Promise.race([connecting, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('NATS is not connected yet')), 2000)))]).finally(() => clearTimeout(timer));
      await ensureStream(nc);
      const h = headers();
      h.set('content-type', 'application/cloudevents+json; charset=utf-8');
      h.set('ce-id', event.id);
      h.set('ce-type', event.type);
      try {
        await jetstream(nc).publish(subjectOf(event), body, { msgID: event.id, headers: h, timeout: 5000 });
      } catch (err) {
        // A stream deleted while running (or a broker that lost its state) is made again.
        ensured = false;
        throw err;
      }
    },
    async close() {
      const nc = await Promise.race([connecting, Promise.resolve(null)]).catch(() => null);
      if (nc) await nc.drain().catch(() => nc.close());
      else void connecting.then((late) => late.close()).catch(() => undefined);
    },
  };
}

/** RabbitMQ: a durable topic exchange, persistent messages on a confirm channel, reconnecting by itself. */
export async function amqpTarget(url: string, exchange: string, onWarning: (message: string) => void): Promise<BrokerTarget> {
  const amqp = await import('amqplib');
  type Confirm = Awaited<ReturnType<Awaited<ReturnType<typeof amqp.connect>>['createConfirmChannel']>>;
  let channel: Confirm | null = null;
  const connection = await amqp.connect(url, {
    recovery: {
      waitForConnect: false,
      initialDelay: 200,
      maxDelay: 5000,
      async setup(model: ChannelModel) {
        const confirm = await model.createConfirmChannel();
        confirm.on('error', () => undefined);
        confirm.on('close', () => {
          if (channel === confirm) channel = null;
        });
        await confirm.assertExchange(exchange, 'topic', { durable: true });
        channel = confirm;
      },
    },
  });
  connection.on('error', () => undefined);
  connection.on('disconnect', (err: Error) => {
    channel = null;
    onWarning(`events: RabbitMQ connection lost (${err.message}); reconnecting`);
  });
  return {
    name: 'amqp',
    async publish(event, body) {
      const confirm = channel;
      if (!confirm) throw new Error('RabbitMQ is not connected');
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('RabbitMQ did not confirm the message within 10 s')), 10_000);
        const settle = (err: unknown): void => {
          clearTimeout(timer);
          if (err) reject(err instanceof Error ? err : new Error('the broker did not confirm the message'));
          else resolve();
        };
        confirm.publish(
          exchange,
          event.type,
          Buffer.from(body),
          {
            persistent: true,
            contentType: 'application/cloudevents+json',
            contentEncoding: 'utf-8',
            messageId: event.id,
            type: event.type,
            timestamp: Math.floor(event.at / 1000),
            appId: 'motive-proxy',
            headers: { 'cloudEvents:id': event.id, 'cloudEvents:type': event.type, ...(event.session === null ? {} : { 'cloudEvents:subject': event.session }) },
          },
          settle,
        );
      });
    },
    async close() {
      await connection.close().catch(() => undefined);
    },
  };
}
