/**
 * Events out, assembled: the webhook endpoints, the sender, what it has done, and the outbox it
 * reads (the journal on one instance, Redis streams in cluster mode). Started with the service;
 * the admin routes (src/http/routes/webhooks.ts) and the console reach it through `ctx.events`.
 */
import type { Redis } from 'ioredis';
import type { AuditLog } from '../audit/audit.js';
import { FileRecordStore, MemoryRecordStore, RedisRecordStore } from '../auth/key-stores.js';
import type { Config } from '../config.js';
import type { Journal } from '../journal/journal.js';
import type { Logger } from '../telemetry/logger.js';
import type { Metrics } from '../telemetry/metrics.js';
import { FileDeliveryState, MemoryDeliveryState, RedisDeliveryState, type DeliveryState } from './delivery-state.js';
import { EndpointRegistry, shownUrl, type WebhookEndpoint } from './endpoints.js';
import { WebhookClient } from './http-post.js';
import { amqpTarget, BrokerPublisher, natsTarget, type BrokerTarget } from './brokers.js';
import { JournalOutbox, RedisOutbox, Sinks, type EventSink, type Outbox } from './outbox.js';
import { WebhookSender } from './webhooks.js';

export interface Events {
  readonly endpoints: EndpointRegistry;
  readonly sender: WebhookSender;
  readonly state: DeliveryState;
  readonly outbox: Outbox;
  /** A publisher per configured broker. */
  readonly brokers: readonly BrokerPublisher[];
  close(): Promise<void>;
}

export interface EventsOptions {
  readonly config: Config;
  readonly logger: Logger;
  readonly journal: Journal;
  readonly audit: AuditLog;
  readonly metrics: Metrics | null;
  /** Cluster mode: the shared Redis, and this instance's id and lease. */
  readonly redis: Redis | null;
  readonly instanceId?: string;
  readonly leaseMs?: number;
}

export async function startEvents(options: EventsOptions): Promise<Events> {
  const { config, logger, journal, audit, metrics, redis } = options;
  const store = redis
    ? new RedisRecordStore<WebhookEndpoint>(redis, config.redisPrefix, 'webhooks')
    : config.journalPath === 'memory'
      ? new MemoryRecordStore<WebhookEndpoint>()
      : new FileRecordStore<WebhookEndpoint>(config.journalPath, 'webhooks.jsonl', (message) => logger.warn(message));
  const endpoints = await new EndpointRegistry(store).open();
  const state: DeliveryState = redis
    ? new RedisDeliveryState(redis, config.redisPrefix)
    : config.journalPath === 'memory'
      ? new MemoryDeliveryState()
      : await new FileDeliveryState(config.journalPath).open();
  const unguarded = config.webhookAllowNetworks.includes('*');
  const client = new WebhookClient({ timeoutMs: config.webhookTimeoutSeconds * 1000, allowNetworks: config.webhookAllowNetworks.filter((n) => n !== '*'), unguarded });
  const retryMs = config.webhookRetryHours * 3_600_000;
  const deliveries = metrics?.enableWebhooks(() => sender.pending, () => endpoints.list().filter((e) => e.disabled !== null).length);
  const sender: WebhookSender = new WebhookSender({
    registry: endpoints,
    state,
    client,
    retryMs,
    disableAfterMs: config.webhookDisableAfterHours * 3_600_000,
    onDisabled: (endpoint, reason) => {
      logger.warn({ endpoint: endpoint.id, url: shownUrl(endpoint.url), reason }, `webhook endpoint ${endpoint.id} disabled: ${reason}`);
      void audit.recordService({
        action: 'webhook.disabled',
        tenant: endpoint.tenant,
        target: { type: 'endpoint', id: endpoint.id },
        details: { url: shownUrl(endpoint.url), reason, ...(endpoint.allTenants ? { all_tenants: true } : {}) },
      });
    },
    onAttempt: (attempt) => {
      deliveries?.(attempt.outcome, attempt.ms / 1000);
      if (attempt.outcome !== 'delivered') logger.debug({ endpoint: attempt.endpoint, event: attempt.event, status: attempt.status, error: attempt.error, outcome: attempt.outcome }, 'webhook attempt failed');
    },
    onError: (err) => logger.error({ err }, 'webhook sender failed'),
  });
  const targets: BrokerTarget[] = [];
  const warn = (message: string): void => logger.warn(message);
  if (config.eventsNatsUrl) targets.push(await natsTarget(config.eventsNatsUrl, config.eventsNatsStream, warn));
  if (config.eventsAmqpUrl) targets.push(await amqpTarget(config.eventsAmqpUrl, config.eventsAmqpExchange, warn));
  const published = metrics?.enableBrokers();
  const brokers = targets.map(
    (target) =>
      new BrokerPublisher(target, state, {
        content: config.eventsIncludeContent,
        onDown: (err) => logger.warn({ err: { message: (err as Error)?.message } }, `events: ${target.name} did not confirm an event (${(err as Error)?.message}); events wait in the outbox and are published when it is back`),
        onUp: () => logger.info(`events: ${target.name} confirms events again`),
        onPublished: () => published?.(target.name),
      }),
  );
  const sinks: EventSink = brokers.length === 0 ? sender : new Sinks([sender, ...brokers]);
  const outbox: Outbox = redis
    ? new RedisOutbox({ redis, prefix: config.redisPrefix, instanceId: options.instanceId ?? 'instance', sender: sinks, leaseMs: options.leaseMs ?? 10_000, retryMs, logger })
    : new JournalOutbox(journal, audit, sinks, { retryMs });
  await outbox.start();
  endpoints.onChange(() => outbox.rescan?.());
  return {
    endpoints,
    sender,
    state,
    outbox,
    brokers,
    async close() {
      // Connections first, so that deliveries in flight end now (their events stay owed) and
      // the shutdown keeps to its few seconds.
      client.close();
      await Promise.all(targets.map((target) => target.close()));
      await outbox.stop();
      await state.close();
      await endpoints.close();
    },
  };
}
