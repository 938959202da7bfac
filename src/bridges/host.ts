/**
 * The bridge host: ties each conversation of a channel (an email thread, a phone number, a
 * Discord channel) to its session's side, and owns everything the channels share.
 *
 * A bridged side is a WebSocket side like any other: the host holds one /v1/realtime
 * connection per open conversation, to this service's own listening address, with the bridges'
 * credential (BRIDGE_API_KEY). So a bridged side goes through the same route, limits and session
 * actor as every other persistent side, and in cluster mode the route relays it to whichever
 * instance runs the session. Its messages are new turns; deliveries are pushed; it never
 * re-sends history and never times out.
 *
 * Outbound, nothing is lost and nothing is sent twice. A delivery pushed to the side is first
 * written to the conversation's durable queue (bridges.jsonl beside the journal, or Redis in
 * cluster mode) and counted in `received`; the connection asks for the deliveries after
 * `received` when it (re)connects, so one pushed while the host was down comes again. The queue
 * is sent in order, one at a time per conversation, under the bridge's rate limit, with back-off
 * on failure; a delivery leaves the queue (and `sent` grows) only once the channel's service has
 * accepted it. A long one sent in parts records each part, so a crash resumes at the next part;
 * and each channel makes a repeated send idempotent where its service allows (docs/bridges.md).
 *
 * Inbound, a message becomes a turn once: the provider's message id is remembered per
 * conversation, and the channel acknowledges the message to its service (IMAP \Seen, the
 * webhook's 200) only after the session took it.
 */
import { WebSocket } from 'ws';
import type { RecordStore } from '../auth/keys.js';
import type { Logger } from '../telemetry/logger.js';
import { ChannelError, type BridgeName, type Channel, type ChannelHealth, type ChannelHost, type Conversation, type Inbound, type Opening, type Received } from './channel.js';

/** Provider ids of inbound messages remembered per conversation (a redelivery comes soon, or never). */
const SEEN_KEPT = 200;
/** How long an inbound message waits for the session to take it before the channel is told to try later (within the 15 s Twilio gives a webhook). */
const RECEIVE_TIMEOUT_MS = 10_000;
/** Back-off of failed sends and of reconnects: 2 s doubling to 10 minutes, with jitter. */
const BACKOFF_FIRST_MS = 2_000;
const BACKOFF_MAX_MS = 600_000;
const RECONNECT_MAX_MS = 30_000;

/** Error codes of a refused message that may work when sent again later. */
const RETRYABLE = new Set(['rate_limited', 'shutting_down', 'journal_unavailable', 'auth_unavailable', 'queue_full', 'max_sessions', 'cluster_unavailable', 'session_moved', 'bridge_unavailable']);

export interface BridgeCounters {
  /** A message in (a turn taken, or why not) or out (a delivery sent, or failed for good). */
  message(bridge: BridgeName, direction: 'in' | 'out', outcome: string): void;
}

export interface HostOptions {
  readonly store: RecordStore<Conversation>;
  readonly logger: Logger;
  /** The service's own base URL (http://127.0.0.1:PORT); known once it listens. */
  readonly serviceUrl: () => string;
  /** The bridges' credential for /v1/realtime (BRIDGE_API_KEY), when the service requires keys. */
  readonly apiKey: string;
  /** Outbound messages per minute per bridge (its service's quota), 0 for no limit. */
  readonly perMinute: Partial<Record<BridgeName, number>>;
  /** How long a failing delivery is retried before it is dropped as failed. */
  readonly retryMs: number;
  readonly counters?: BridgeCounters;
  readonly now?: () => number;
}

export interface BridgeHealth extends ChannelHealth {
  readonly bridge: BridgeName;
  /** Deliveries owed (queued and not yet accepted by the service), over all conversations. */
  readonly queueDepth: number;
  readonly conversations: number;
}

export class BridgeHost {
  private readonly conversations = new Map<string, Conversation>();
  private readonly links = new Map<string, SideLink>();
  private readonly senders = new Map<string, Sender>();
  private readonly limiters = new Map<BridgeName, RateLimiter>();
  private readonly channels = new Map<BridgeName, Channel>();
  /** Inbound messages being taken now, by conversation and provider id. */
  private readonly taking = new Map<string, Promise<Received>>();
  private closing = false;
  private readonly now: () => number;

  constructor(
    channels: readonly Channel[],
    private readonly options: HostOptions,
  ) {
    this.now = options.now ?? Date.now;
    for (const channel of channels) {
      this.channels.set(channel.name, channel);
      this.limiters.set(channel.name, new RateLimiter(options.perMinute[channel.name] ?? 0, this.now));
    }
  }

  get names(): BridgeName[] {
    return [...this.channels.keys()];
  }

  channel(name: BridgeName): Channel | undefined {
    return this.channels.get(name);
  }

  /** Loads the conversations, starts each channel, and connects every open conversation's side. */
  async start(): Promise<void> {
    for (const conversation of await this.options.store.load()) {
      if (!this.channels.has(conversation.bridge)) continue; // a bridge turned off since: kept, not played
      this.conversations.set(conversation.id, conversation);
    }
    for (const [name, channel] of this.channels) {
      await channel.start(this.hostFor(name)).catch((err: unknown) => {
        // A channel that cannot connect now (its server down) is shown unhealthy; the service runs on.
        this.options.logger.error({ err, bridge: name }, `bridge ${name} could not start: ${(err as Error)?.message ?? String(err)}`);
      });
    }
    // A channel's start may have opened conversations (Discord's configured channels): those play already.
    for (const conversation of this.conversations.values()) if (conversation.ended === null && !this.links.has(conversation.id)) this.play(conversation);
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const sender of this.senders.values()) sender.stop();
    for (const link of this.links.values()) link.close();
    await Promise.all([...this.channels.values()].map((c) => c.close().catch(() => undefined)));
    await Promise.all([...this.senders.values()].map((s) => s.idle()));
    await this.options.store.close();
  }

  list(bridge?: BridgeName): Conversation[] {
    return [...this.conversations.values()].filter((c) => bridge === undefined || c.bridge === bridge);
  }

  get(id: string): Conversation | undefined {
    return this.conversations.get(id);
  }

  health(): BridgeHealth[] {
    return [...this.channels.entries()].map(([bridge, channel]) => {
      const own = this.list(bridge);
      return {
        bridge,
        ...channel.health(),
        queueDepth: own.reduce((n, c) => n + c.queue.length, 0),
        conversations: own.filter((c) => c.ended === null).length,
      };
    });
  }

  /** Whether the side of an open conversation is connected to its session now. */
  linked(id: string): boolean {
    return this.links.get(id)?.connected ?? false;
  }

  /** Ends a conversation (an admin, STOP, the person left); its side's connection lets go. */
  async end(conversation: Conversation, reason: string): Promise<void> {
    if (conversation.ended !== null) return;
    conversation.ended = new Date(this.now()).toISOString();
    conversation.data = { ...conversation.data, ended_because: reason };
    this.links.get(conversation.id)?.close();
    this.links.delete(conversation.id);
    // What is queued still goes out unless the person asked for nothing more (STOP).
    if (reason === 'stop') {
      this.senders.get(conversation.id)?.stop();
      conversation.queue = [];
    }
    await this.options.store.put(conversation);
    this.options.logger.info({ bridge: conversation.bridge, conversation: conversation.id, session_id: conversation.session, reason }, `bridge ${conversation.bridge}: conversation ${conversation.id} ended (${reason})`);
  }

  private hostFor(bridge: BridgeName): ChannelHost {
    return {
      conversation: (id) => this.conversations.get(id),
      open: (opening) => this.open(bridge, opening),
      save: (conversation) => this.options.store.put(conversation),
      end: (conversation, reason) => this.end(conversation, reason),
      receive: (inbound) => this.receive(inbound),
      ignored: (reason, details) => {
        this.options.counters?.message(bridge, 'in', `ignored_${reason}`);
        this.options.logger.info({ bridge, reason, ...details }, `bridge ${bridge}: a message was not taken as a turn (${reason})`);
      },
    };
  }

  private async open(bridge: BridgeName, opening: Opening): Promise<Conversation> {
    const existing = this.conversations.get(opening.id);
    if (existing && existing.ended === null && existing.session === opening.session && existing.tenant === opening.tenant) return existing;
    if (existing && existing.ended === null) await this.end(existing, 'moved to another session');
    if (existing) await this.archive(existing);
    const conversation = newConversation(bridge, opening, new Date(this.now()).toISOString(), existing?.seen ?? []);
    await this.options.store.put(conversation);
    this.conversations.set(conversation.id, conversation);
    this.options.logger.info({ bridge, conversation: conversation.id, session_id: conversation.session, side: conversation.side }, `bridge ${bridge}: ${conversation.peer} plays side ${conversation.side} of session '${conversation.session}'`);
    this.play(conversation);
    return conversation;
  }

  /**
   * An ended conversation whose id is wanted again (the same thread or phone, a new session): it
   * is kept under an id of its own (`<id>~<opened ms>`), and its sender goes on with what it
   * still owes under that id.
   */
  private async archive(ended: Conversation): Promise<void> {
    const old = ended.id;
    (ended as { id: string }).id = `${old}~${Date.parse(ended.opened)}`;
    this.conversations.delete(old);
    this.conversations.set(ended.id, ended);
    const sender = this.senders.get(old);
    this.senders.delete(old);
    if (sender) this.senders.set(ended.id, sender);
    await this.options.store.put(ended);
  }

  /** Connects the conversation's side and sends what it owes. */
  private play(conversation: Conversation): void {
    if (this.closing) return;
    const link = new SideLink(conversation, this.options, {
      delivery: (index, content) => this.queued(conversation, index, content),
      typing: () => this.channels.get(conversation.bridge)?.typing?.(conversation),
      closed: (reason) =>
        void this.sessionEnded(conversation, reason).catch((err: unknown) => this.options.logger.error({ err, conversation: conversation.id }, `bridge ${conversation.bridge}: could not record that the session ended`)),
    });
    this.links.set(conversation.id, link);
    link.connect();
    this.sender(conversation).kick();
  }

  private sender(conversation: Conversation): Sender {
    let sender = this.senders.get(conversation.id);
    if (!sender) {
      sender = new Sender(conversation, this.channels.get(conversation.bridge)!, this.limiters.get(conversation.bridge)!, this.options, this.now);
      this.senders.set(conversation.id, sender);
    }
    return sender;
  }

  /** A delivery pushed to the side: into the durable queue first, then out. */
  private async queued(conversation: Conversation, index: number, content: string): Promise<void> {
    if (index < conversation.received) return; // sent again on a reconnect: queued already
    conversation.queue.push({ index, content, attempts: 0, notBefore: 0 });
    conversation.received = index + 1;
    await this.options.store.put(conversation);
    this.sender(conversation).kick();
  }

  private async sessionEnded(conversation: Conversation, reason: string): Promise<void> {
    const channel = this.channels.get(conversation.bridge);
    await this.end(conversation, reason);
    // The person hears of it after what was owed to them (the sender keeps the order).
    await this.sender(conversation).idle();
    await channel?.ended?.(conversation, reason).catch((err: unknown) => this.options.logger.warn({ err, conversation: conversation.id }, 'bridge: could not tell the person the session ended'));
  }

  async receive(inbound: Inbound): Promise<Received> {
    // A copy that arrives while the first is still being taken (a webhook retried before it was
    // answered) waits for it: then it is a duplicate, or, if the first was refused, it is tried.
    const key = `${inbound.conversation.id}\n${inbound.messageId}`;
    for (let pending = this.taking.get(key); pending; pending = this.taking.get(key)) await pending.catch(() => undefined);
    const taking = this.take(inbound);
    this.taking.set(key, taking);
    try {
      return await taking;
    } finally {
      if (this.taking.get(key) === taking) this.taking.delete(key);
    }
  }

  private async take(inbound: Inbound): Promise<Received> {
    const { conversation } = inbound;
    const bridge = conversation.bridge;
    if (conversation.seen.includes(inbound.messageId)) {
      this.options.counters?.message(bridge, 'in', 'duplicate');
      return { ok: true, duplicate: true };
    }
    if (conversation.ended !== null) return this.refused(bridge, 'session_closed', `This conversation of session '${conversation.session}' has ended.`, false);
    const link = this.links.get(conversation.id);
    if (!link) return this.refused(bridge, 'bridge_unavailable', 'The bridge is not connected to the session.', true);
    const answer = await link.say(inbound.text, inbound.messageId);
    if (!answer.ok) return this.refused(bridge, answer.code, answer.message, RETRYABLE.has(answer.code));
    conversation.seen.push(inbound.messageId);
    if (conversation.seen.length > SEEN_KEPT) conversation.seen.splice(0, conversation.seen.length - SEEN_KEPT);
    await this.options.store.put(conversation);
    this.options.counters?.message(bridge, 'in', 'turn');
    return { ok: true, duplicate: false };
  }

  private refused(bridge: BridgeName, code: string, message: string, retryable: boolean): Received {
    this.options.counters?.message(bridge, 'in', `refused_${code}`);
    return { ok: false, code, message, retryable };
  }
}

/** A conversation as it starts: nothing received, sent or queued yet (`seen` carries over from an earlier one of the same id). */
export function newConversation(bridge: BridgeName, opening: Opening, opened: string, seen: string[] = []): Conversation {
  return {
    id: opening.id,
    bridge,
    session: opening.session,
    tenant: opening.tenant,
    side: opening.side,
    peer: opening.peer,
    data: { ...(opening.data ?? {}) },
    opened,
    ended: null,
    received: 0,
    sent: 0,
    queue: [],
    seen,
  };
}

interface LinkEvents {
  delivery(index: number, content: string): Promise<void>;
  typing(): void;
  closed(reason: string): void;
}

/**
 * One conversation's side, held over /v1/realtime. Reconnects with back-off when the
 * connection drops (the service restarting, the session moving in a cluster), asking for the
 * deliveries after the ones already queued.
 */
class SideLink {
  private socket: WebSocket | null = null;
  private stopped = false;
  private ready = false;
  private failures = 0;
  private timer: NodeJS.Timeout | null = null;
  private readonly answers = new Map<string, (answer: { ok: true } | { ok: false; code: string; message: string }) => void>();
  /** Deliveries are queued one after another, in the order they came. */
  private deliveries: Promise<void> = Promise.resolve();
  /** Waiters for the connection to be ready. */
  private readonly whenReady: Array<() => void> = [];
  lastError: string | null = null;

  constructor(
    private readonly conversation: Conversation,
    private readonly options: HostOptions,
    private readonly events: LinkEvents,
  ) {}

  get connected(): boolean {
    return this.ready;
  }

  connect(): void {
    if (this.stopped) return;
    const base = new URL(this.options.serviceUrl());
    base.protocol = base.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = new URL('/v1/realtime', base);
    url.searchParams.set('session', this.conversation.session);
    url.searchParams.set('side', this.conversation.side);
    url.searchParams.set('since', String(this.conversation.received));
    const headers: Record<string, string> = { 'user-agent': `motive-proxy-bridge/${this.conversation.bridge}` };
    if (this.options.apiKey) headers['authorization'] = `Bearer ${this.options.apiKey}`;
    const socket = new WebSocket(url, { headers });
    this.socket = socket;
    socket.on('message', (data) => this.onFrame(String(data)));
    socket.on('error', (err) => {
      this.lastError = err.message;
    });
    socket.on('close', (code, reason) => {
      if (this.socket !== socket) return;
      this.ready = false;
      this.socket = null;
      for (const [, answer] of this.answers) answer({ ok: false, code: 'bridge_unavailable', message: 'The connection to the session closed before it answered.' });
      this.answers.clear();
      if (this.stopped) return;
      if (code !== 1000 && code !== 1012) this.lastError = `connection closed (${code}${reason.length ? `: ${reason.toString()}` : ''})`;
      this.retry();
    });
  }

  private retry(): void {
    this.failures++;
    const ms = Math.min(RECONNECT_MAX_MS, 500 * 2 ** Math.min(this.failures - 1, 6)) * (0.75 + Math.random() / 2);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, ms);
    this.timer.unref?.();
  }

  close(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.socket?.close(1000, 'bridge conversation ended');
    this.socket = null;
    this.ready = false;
  }

  /** Sends a message as the side's turn; resolves with the session's answer. */
  async say(content: string, id: string): Promise<{ ok: true } | { ok: false; code: string; message: string }> {
    if (!this.ready && !(await this.waitReady(RECEIVE_TIMEOUT_MS))) {
      return { ok: false, code: 'bridge_unavailable', message: `The bridge could not reach session '${this.conversation.session}' (${this.lastError ?? 'not connected'}).` };
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.answers.delete(id);
        resolve({ ok: false, code: 'bridge_unavailable', message: 'The session did not answer in time.' });
      }, RECEIVE_TIMEOUT_MS);
      this.answers.set(id, (answer) => {
        clearTimeout(timer);
        this.answers.delete(id);
        resolve(answer);
      });
      this.socket!.send(JSON.stringify({ type: 'message', content, id }));
    });
  }

  private waitReady(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      this.whenReady.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  private onFrame(text: string): void {
    let frame: { type?: string; [k: string]: unknown };
    try {
      frame = JSON.parse(text) as typeof frame;
    } catch {
      return;
    }
    switch (frame.type) {
      case 'ready':
        this.ready = true;
        this.failures = 0;
        this.lastError = null;
        for (const waiter of this.whenReady.splice(0)) waiter();
        return;
      case 'delivery': {
        const index = Number(frame['index']);
        const content = String(frame['content'] ?? '');
        this.deliveries = this.deliveries
          .then(() => this.events.delivery(index, content))
          .catch((err: unknown) => {
            // Not queued (the store failed): reconnecting asks for it again.
            this.lastError = `could not queue a delivery: ${(err as Error)?.message ?? String(err)}`;
            this.options.logger.error({ err, conversation: this.conversation.id }, 'bridge: a delivery could not be queued; reconnecting to receive it again');
            this.socket?.close(1011, 'delivery not queued');
          });
        return;
      }
      case 'typing':
        this.events.typing();
        return;
      case 'accepted': {
        const id = typeof frame['id'] === 'string' ? frame['id'] : null;
        if (id !== null) this.answers.get(id)?.({ ok: true });
        return;
      }
      case 'error': {
        const id = typeof frame['id'] === 'string' ? frame['id'] : null;
        const code = String(frame['code'] ?? 'error');
        const message = String(frame['message'] ?? '');
        if (id !== null && this.answers.has(id)) {
          this.answers.get(id)!({ ok: false, code, message });
          return;
        }
        this.lastError = `${code}: ${message}`;
        this.options.logger.warn({ conversation: this.conversation.id, session_id: this.conversation.session, code }, `bridge ${this.conversation.bridge}: ${message}`);
        return;
      }
      case 'closed':
        if (frame['reason'] === 'session_closed') {
          this.stopped = true;
          // Queued deliveries are written first: the end follows them.
          void this.deliveries.then(() => this.events.closed('session closed'));
        }
        return;
    }
  }
}

/** Sends a conversation's queue in order, one at a time, with back-off. */
class Sender {
  private running: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(
    private readonly conversation: Conversation,
    private readonly channel: Channel,
    private readonly limiter: RateLimiter,
    private readonly options: HostOptions,
    private readonly now: () => number,
  ) {}

  kick(): void {
    if (this.stopped || this.running || this.conversation.queue.length === 0) return;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.running = this.drain()
      .catch((err: unknown) => {
        // The queue could not be saved: what is unsent stays owed, and is tried again shortly.
        this.options.logger.error({ err, conversation: this.conversation.id }, `bridge ${this.conversation.bridge}: the queue could not be saved; trying again shortly`);
        this.later(BACKOFF_FIRST_MS);
      })
      .finally(() => {
        this.running = null;
      });
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  /** Resolves when nothing is being sent. */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  private later(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.kick();
    }, Math.max(10, ms));
    this.timer.unref?.();
  }

  private async drain(): Promise<void> {
    const { conversation, channel, options } = this;
    while (!this.stopped && conversation.queue.length > 0) {
      const head = conversation.queue[0]!;
      const wait = Math.max(head.notBefore - this.now(), this.limiter.wait());
      if (wait > 0) return this.later(wait);
      this.limiter.take();
      try {
        await channel.send(conversation, head, async (parts) => {
          head.parts = parts;
          await options.store.put(conversation);
        });
      } catch (err) {
        const error = err instanceof ChannelError ? err : new ChannelError((err as Error)?.message ?? String(err), true);
        head.attempts++;
        head.lastError = error.message;
        head.firstFailedAt ??= this.now();
        if (!error.retryable || this.now() - head.firstFailedAt > options.retryMs) {
          conversation.queue.shift();
          conversation.sent = head.index + 1;
          options.counters?.message(conversation.bridge, 'out', 'failed');
          options.logger.error(
            { bridge: conversation.bridge, conversation: conversation.id, session_id: conversation.session, delivery: head.index, attempts: head.attempts, err: error.message },
            `bridge ${conversation.bridge}: delivery ${head.index} of session '${conversation.session}' to ${conversation.peer} failed for good: ${error.message}`,
          );
          await options.store.put(conversation).catch(() => undefined);
          continue;
        }
        const backoff = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** Math.min(head.attempts - 1, 20)) * (0.75 + Math.random() / 2);
        head.notBefore = this.now() + Math.max(backoff, error.retryAfterMs ?? 0);
        options.counters?.message(conversation.bridge, 'out', 'retried');
        options.logger.warn({ bridge: conversation.bridge, conversation: conversation.id, delivery: head.index, attempts: head.attempts, err: error.message }, `bridge ${conversation.bridge}: sending failed, trying again later: ${error.message}`);
        await options.store.put(conversation).catch(() => undefined);
        return this.later(head.notBefore - this.now());
      }
      conversation.queue.shift();
      conversation.sent = head.index + 1;
      // Counted as the service accepted it, before the mark is saved (a view of the conversation may show the mark at once).
      options.counters?.message(conversation.bridge, 'out', 'sent');
      await options.store.put(conversation);
    }
  }
}

/** At most `perMinute` sends a minute, spread evenly (a token bucket of one minute's worth). */
export class RateLimiter {
  private tokens: number;
  private last: number;

  constructor(
    private readonly perMinute: number,
    private readonly now: () => number,
  ) {
    this.tokens = perMinute;
    this.last = now();
  }

  /** Milliseconds until a send may go (0: now). */
  wait(): number {
    if (this.perMinute <= 0) return 0;
    this.refill();
    return this.tokens >= 1 ? 0 : Math.ceil(((1 - this.tokens) * 60_000) / this.perMinute);
  }

  take(): void {
    if (this.perMinute <= 0) return;
    this.refill();
    this.tokens -= 1;
  }

  private refill(): void {
    const now = this.now();
    this.tokens = Math.min(this.perMinute, this.tokens + ((now - this.last) * this.perMinute) / 60_000);
    this.last = now;
  }
}
