/**
 * The webhook sender. Events are offered in the order their records were made (from the outbox:
 * the journal, and the audit trail for admin events); each endpoint has one queue per stream (a
 * session, or the admin actions), so a session's events reach an endpoint in order while one
 * slow session never holds up another. The head of a queue is sent, signed as Standard Webhooks
 * says (`webhook-id`, `webhook-timestamp`, `webhook-signature`), until the receiver answers 2xx;
 * failures are tried again with exponential backoff and jitter (or when `Retry-After` says) over
 * the retry horizon, then given up. 410 Gone disables the endpoint at once; an endpoint with no
 * success for WEBHOOK_DISABLE_AFTER_HOURS is disabled too, and a `webhook.disabled` event says so.
 *
 * Each delivery moves the endpoint's mark for the stream (DeliveryState): after a crash the
 * outbox is read again and only events after the marks are sent, with the ids they had.
 */
import { Webhook } from 'standardwebhooks';
import { eventId, matchesType, toCloudEvent, type ProxyEvent } from './catalogue.js';
import { countPending, isAfter, MarkBook, oldestPosition, markKey, markOf, type Attempt, type DeliveryState, type Mark } from './delivery-state.js';
import { liveSecrets, type EndpointRegistry, type WebhookEndpoint } from './endpoints.js';
import type { PostResult, WebhookClient } from './http-post.js';

export interface SenderOptions {
  readonly registry: EndpointRegistry;
  readonly state: DeliveryState;
  readonly client: WebhookClient;
  /** How long an event is tried, from its first attempt. */
  readonly retryMs: number;
  /** An endpoint with no success for this long (and failures throughout) is disabled. */
  readonly disableAfterMs: number;
  /** Told when an endpoint was disabled for failing (the service records it, which sends `webhook.disabled`). */
  readonly onDisabled?: (endpoint: WebhookEndpoint, reason: string) => void;
  readonly onAttempt?: (attempt: Attempt) => void;
  readonly onError?: (err: unknown) => void;
  readonly now?: () => number;
  readonly random?: () => number;
  /** Deliveries in flight at once, across endpoints. */
  readonly concurrency?: number;
  readonly userAgent?: string;
}

interface Queue {
  readonly key: string;
  readonly endpoint: string;
  readonly stream: string;
  readonly events: ProxyEvent[];
  /** The mark of the last event taken into the queue (or delivered before it). */
  last: Mark | undefined;
  /** Tries of the head so far, and when the first was made. */
  tries: number;
  firstTry: number;
  nextAt: number;
  busy: boolean;
}

/** The first retry waits about this long (less when the horizon is short), doubling to the cap. */
const BASE_DELAY_MS = 5_000;
const MAX_DELAY_MS = 3_600_000;
/** Deliveries in flight at once to one endpoint (each of another session). */
const PER_ENDPOINT = 4;
/** However soon Retry-After asks, an attempt waits at least this long after a failure. */
const MIN_DELAY_MS = 1_000;

export class WebhookSender {
  private readonly queues = new Map<string, Queue>();
  private readonly marks: MarkBook;
  private inFlight = 0;
  /** Deliveries in flight per endpoint: one slow receiver never takes every slot. */
  private readonly inFlightOf = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;
  private wakeAt = Infinity;
  private running = false;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly concurrency: number;
  private readonly settled = new Set<Promise<void>>();

  constructor(private readonly options: SenderOptions) {
    this.now = options.now ?? Date.now;
    this.random = options.random ?? Math.random;
    this.concurrency = options.concurrency ?? 16;
    // Endpoints' marks (brokers keep theirs under `broker:`).
    this.marks = new MarkBook(options.state, (key) => !key.startsWith('broker:'));
    options.registry.onChange(() => this.pump());
  }

  /** Loads the marks and starts sending (on start, or when this instance becomes the cluster's sender). */
  async start(): Promise<void> {
    await this.marks.load();
    this.queues.clear();
    this.running = true;
  }

  /** Stops sending (shutdown, or another instance is the sender now); what was queued is dropped, not lost. */
  async stop(): Promise<void> {
    this.running = false;
    this.queues.clear();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.wakeAt = Infinity;
    await Promise.allSettled([...this.settled]);
  }

  get active(): boolean {
    return this.running;
  }



  /** Whether offered events can go anywhere: without endpoints, the outbox need not make them. */
  wantsEvents(): boolean {
    return this.running && this.options.registry.size > 0;
  }

  /** Takes events, in their outbox order, into the queues of the endpoints that want them. */
  offer(events: readonly ProxyEvent[]): void {
    if (!this.running || events.length === 0) return;
    const endpoints = this.options.registry.list().filter((e) => e.disabled === null);
    for (const event of events) {
      for (const endpoint of endpoints) {
        if (!wants(endpoint, event)) continue;
        const key = markKey(endpoint.id, event.stream);
        let queue = this.queues.get(key);
        const last = queue ? queue.last : this.marks.get(key);
        if (!isAfter(event, last)) continue;
        if (!queue) {
          queue = { key, endpoint: endpoint.id, stream: event.stream, events: [], last, tries: 0, firstTry: 0, nextAt: 0, busy: false };
          this.queues.set(key, queue);
        }
        queue.events.push(event);
        queue.last = markOf(event, queue.last);
      }
    }
    this.pump();
  }

  /** Whether any endpoint is still owed an event of `stream` (the outbox keeps its records). */
  owes(stream: string): boolean {
    for (const queue of this.queues.values()) if (queue.stream === stream && queue.events.length > 0) return true;
    return false;
  }

  /** The smallest outbox position of an event still owed (cluster mode trims the outbox before it). */
  oldestPosition(): number | null {
    return oldestPosition(this.queues.values());
  }

  /** Events waiting, across every queue. */
  get pending(): number {
    return countPending(this.queues.values());
  }

  forgetStreams(streams: ReadonlySet<string>): Promise<void> {
    return this.marks.forget(streams);
  }

  markedStreams(): Set<string> {
    return this.marks.streams();
  }

  /** Sends a kept attempt's body again, now, once (the console's "send again"): same id, new signature. */
  async sendAgain(endpoint: WebhookEndpoint, attempt: Attempt): Promise<Attempt> {
    return this.deliverOnce(endpoint, { id: attempt.event, type: attempt.type }, attempt.body, attempt.attempt + 1, true);
  }

  /** Sends a `webhook.test` event to one endpoint, now. */
  async sendTest(endpoint: WebhookEndpoint): Promise<Attempt> {
    const at = this.now();
    const id = eventId('test', endpoint.id, at, this.random());
    const event: ProxyEvent = { stream: 'test', seq: 0, part: 0, id, type: 'webhook.test', at, session: null, tenant: endpoint.tenant, trace: null, data: { endpoint: endpoint.id, message: 'A test event sent from the console or the admin API.' }, hasContent: false };
    return this.deliverOnce(endpoint, event, JSON.stringify(toCloudEvent(event, endpoint.content)), 1, true);
  }

  private pump(): void {
    if (!this.running) return;
    const now = this.now();
    let next = Infinity;
    for (const queue of this.queues.values()) {
      if (queue.busy) continue;
      const endpoint = this.options.registry.get(queue.endpoint);
      if (!endpoint || endpoint.disabled !== null) {
        this.queues.delete(queue.key);
        continue;
      }
      if (queue.events.length === 0) {
        this.queues.delete(queue.key);
        continue;
      }
      if (queue.nextAt > now) {
        next = Math.min(next, queue.nextAt);
        continue;
      }
      if (this.inFlight >= this.concurrency || (this.inFlightOf.get(endpoint.id) ?? 0) >= PER_ENDPOINT) {
        next = Math.min(next, now + 50);
        continue;
      }
      this.send(queue, endpoint);
    }
    this.wake(next);
  }

  private wake(at: number): void {
    if (at === Infinity || at >= this.wakeAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.wakeAt = at;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.wakeAt = Infinity;
      this.pump();
    }, Math.max(0, at - this.now()));
    this.timer.unref?.();
  }

  private send(queue: Queue, endpoint: WebhookEndpoint): void {
    const event = queue.events[0]!;
    queue.busy = true;
    this.inFlight++;
    this.inFlightOf.set(endpoint.id, (this.inFlightOf.get(endpoint.id) ?? 0) + 1);
    const now = this.now();
    if (queue.tries === 0) queue.firstTry = now;
    queue.tries++;
    const body = JSON.stringify(toCloudEvent(event, endpoint.content));
    const work = this.deliverOnce(endpoint, event, body, queue.tries, false, (result) => this.outcome(queue, event, result))
      .then((attempt) => this.after(queue, endpoint, event, attempt))
      .catch((err: unknown) => {
        // Whatever failed (a store, Redis), the event is tried again later, not at once.
        queue.nextAt = this.now() + Math.min(this.options.retryMs, 30_000);
        this.options.onError?.(err);
      })
      .finally(() => {
        this.inFlight--;
        const left = (this.inFlightOf.get(endpoint.id) ?? 1) - 1;
        if (left > 0) this.inFlightOf.set(endpoint.id, left);
        else this.inFlightOf.delete(endpoint.id);
        queue.busy = false;
        this.settled.delete(work);
        this.pump();
      });
    this.settled.add(work);
  }

  /** What became of an attempt, before it is recorded. */
  private outcome(queue: Queue, event: ProxyEvent, result: PostResult): Attempt['outcome'] {
    if (result.status !== null && result.status >= 200 && result.status < 300) return 'delivered';
    if (result.status === 410) return 'dropped';
    return this.now() - queue.firstTry >= this.options.retryMs ? 'gave_up' : 'failed';
  }

  private async after(queue: Queue, endpoint: WebhookEndpoint, event: ProxyEvent, attempt: Attempt & { retryAfterMs: number | null }): Promise<void> {
    if (!this.running || this.queues.get(queue.key) !== queue) return;
    const now = this.now();
    if (attempt.outcome === 'delivered' || attempt.outcome === 'gave_up') {
      queue.events.shift();
      queue.tries = 0;
      queue.nextAt = 0;
      await this.marks.advance(queue.key, event);
      if (attempt.outcome === 'delivered') {
        await this.options.registry.setFailing(endpoint.id, null);
        return;
      }
    }
    if (attempt.outcome === 'dropped') {
      await this.disable(endpoint, `the receiver answered 410 Gone for event ${event.id}`);
      return;
    }
    // The streak starts when its first failed attempt was made (as an event's horizon does), and
    // is kept with the endpoint: a restart, or another instance taking over, carries it on.
    const since = this.options.registry.get(endpoint.id)?.failingSince ?? attempt.at;
    await this.options.registry.setFailing(endpoint.id, since);
    if (now - since >= this.options.disableAfterMs) {
      await this.disable(endpoint, `no delivery succeeded for ${Math.round((now - since) / 60_000)} minutes (last: ${attempt.error ?? attempt.status})`);
      return;
    }
    if (attempt.outcome === 'failed') queue.nextAt = now + this.delay(queue.tries, attempt, queue.firstTry);
  }

  /** Exponential backoff with full jitter, or what Retry-After asks, never past the horizon. */
  private delay(tries: number, attempt: { retryAfterMs: number | null }, firstTry: number): number {
    const base = Math.min(BASE_DELAY_MS, this.options.retryMs / 100);
    const cap = Math.min(MAX_DELAY_MS, this.options.retryMs / 4);
    const backoff = Math.min(cap, base * 2 ** (tries - 1));
    const jittered = backoff / 2 + (this.random() * backoff) / 2;
    const left = Math.max(0, firstTry + this.options.retryMs - this.now());
    const asked = attempt.retryAfterMs;
    return Math.min(Math.max(asked === null ? jittered : asked, Math.min(MIN_DELAY_MS, this.options.retryMs / 100)), left);
  }

  private async disable(endpoint: WebhookEndpoint, reason: string): Promise<void> {
    for (const [key, queue] of this.queues) if (queue.endpoint === endpoint.id) this.queues.delete(key);
    const disabled = await this.options.registry.disable(endpoint.id, reason);
    if (disabled) this.options.onDisabled?.(disabled, reason);
  }

  private async deliverOnce(
    endpoint: WebhookEndpoint,
    event: { readonly id: string; readonly type: string },
    body: string,
    attemptNo: number,
    manual: boolean,
    judge: (result: PostResult) => Attempt['outcome'] = (result) => (result.status !== null && result.status >= 200 && result.status < 300 ? 'delivered' : 'failed'),
  ): Promise<Attempt & { retryAfterMs: number | null }> {
    const at = this.now();
    const secrets = liveSecrets(endpoint, at);
    const timestamp = new Date(Math.floor(at / 1000) * 1000);
    // Several secrets (a rotation's overlap) give several signatures: the receiver accepts any one.
    const signature = secrets.map((s) => new Webhook(s.secret).sign(event.id, timestamp, body)).join(' ');
    const result = await this.options.client.post(
      endpoint.url,
      {
        'content-type': 'application/cloudevents+json; charset=utf-8',
        'user-agent': this.options.userAgent ?? 'MotiveProxy-Webhooks/1',
        'webhook-id': event.id,
        'webhook-timestamp': String(Math.floor(at / 1000)),
        'webhook-signature': signature,
      },
      body,
    );
    const attempt: Attempt = {
      endpoint: endpoint.id,
      event: event.id,
      type: event.type,
      at,
      attempt: attemptNo,
      status: result.status,
      ms: result.ms,
      error: result.error,
      outcome: judge(result),
      ...(manual ? { manual: true } : {}),
      body,
    };
    this.options.onAttempt?.(attempt);
    await this.options.state.record(attempt).catch((err: unknown) => this.options.onError?.(err));
    return { ...attempt, retryAfterMs: result.retryAfterMs };
  }
}

/** Does the endpoint take this event: its type, its tenant, and not from before the endpoint was made or enabled? */
export function wants(endpoint: WebhookEndpoint, event: ProxyEvent): boolean {
  if (event.at < endpoint.since) return false;
  if (endpoint.allTenants !== true && (event.allTenants === true || event.tenant !== endpoint.tenant)) return false;
  return matchesType(endpoint.types, event.type);
}
