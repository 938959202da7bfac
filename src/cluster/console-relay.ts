/**
 * The web console in cluster mode: every page sees every session of every instance, live.
 *
 * Each instance runs the sessions it owns and knows only those; it publishes their summaries
 * on a Redis channel (PREFIX:console) whenever they change, and every instance keeps what the
 * others published. Publishing happens only while a console page is open somewhere in the
 * cluster (PREFIX:console:watching, refreshed by instances with pages), so a cluster nobody
 * watches pays nothing for it. An instance that stops publishing (it died) drops out of the
 * list after a few seconds. A page watching a session another instance runs gets its
 * transcript folded from the journal in Redis.
 */
import type { Redis } from 'ioredis';
import { fold } from '../../machines/session.facts.js';
import type { SessionTiming, TranscriptEntry } from '../../machines/session.logic.js';
import { factsOf, isReadable, type JournalRecord } from '../journal/records.js';
import type { JournalStore } from '../journal/store.js';
import type { SessionSummary } from '../http/console-feed.js';

/** Every this often a publishing instance says it is still there (its list, even unchanged). */
const REFRESH_MS = 2_000;
/** A list not refreshed for this long is of an instance that is gone. */
const STALE_MS = 3 * REFRESH_MS;

interface Published {
  readonly instance: string;
  readonly sessions: SessionSummary[];
}

export interface ConsoleRelayOptions {
  readonly redis: Redis;
  readonly prefix: string;
  readonly instanceId: string;
  readonly store: JournalStore<JournalRecord>;
  readonly timing: SessionTiming;
  /** This instance's own sessions, summarised. */
  readonly local: () => SessionSummary[];
  /** Told when another instance's list changed. */
  readonly onRemoteChange: () => void;
}

export class ConsoleRelay {
  private readonly remote = new Map<string, { sessions: SessionSummary[]; at: number }>();
  private subscriber: Redis | null = null;
  private timer: NodeJS.Timeout | null = null;
  private someoneWatching = false;
  private localViewers = 0;

  constructor(private readonly options: ConsoleRelayOptions) {}

  private get channel(): string {
    return `${this.options.prefix}:console`;
  }

  private get watchingKey(): string {
    return `${this.options.prefix}:console:watching`;
  }

  async start(): Promise<void> {
    const subscriber = this.options.redis.duplicate();
    subscriber.on('error', () => undefined); // the main connection reports Redis being away
    this.subscriber = subscriber;
    subscriber.on('message', (_channel: string, message: string) => this.received(message));
    await subscriber.subscribe(this.channel);
    this.timer = setInterval(() => void this.tick().catch(() => undefined), REFRESH_MS);
    this.timer.unref();
    await this.tick().catch(() => undefined);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.subscriber?.disconnect();
    this.subscriber = null;
  }

  /** How many console pages this instance has open (it tells the cluster someone watches). */
  viewers(count: number): void {
    const first = this.localViewers === 0 && count > 0;
    this.localViewers = count;
    if (first) void this.tick().catch(() => undefined);
  }

  /** This instance's sessions changed: the others hear of it, if anyone watches. */
  changed(): void {
    if (this.someoneWatching || this.localViewers > 0) void this.publish().catch(() => undefined);
  }

  /** The other instances' sessions, as they last published them. */
  others(): SessionSummary[] {
    const now = Date.now();
    const list: SessionSummary[] = [];
    for (const [instance, entry] of this.remote) {
      if (now - entry.at > STALE_MS) {
        this.remote.delete(instance);
        continue;
      }
      list.push(...entry.sessions);
    }
    return list;
  }

  /** Is `sessionId` one of the sessions another instance runs? */
  runsElsewhere(sessionId: string): boolean {
    return this.others().some((s) => s.id === sessionId);
  }

  /** A session's transcript from the journal in Redis (a session another instance runs). */
  async transcript(sessionId: string): Promise<readonly TranscriptEntry[] | null> {
    const records = (await this.options.store.readSession(sessionId)).filter(isReadable);
    if (records.length === 0) return null;
    return fold(sessionId, this.options.timing, factsOf(records)).transcript;
  }

  private async tick(): Promise<void> {
    const { redis } = this.options;
    if (this.localViewers > 0) await redis.set(this.watchingKey, this.options.instanceId, 'PX', STALE_MS);
    this.someoneWatching = (await redis.exists(this.watchingKey)) === 1;
    if (this.someoneWatching) await this.publish();
    if (this.others().length === 0 && this.remote.size === 0) return;
    this.options.onRemoteChange(); // stale lists dropped
  }

  private async publish(): Promise<void> {
    const message: Published = { instance: this.options.instanceId, sessions: this.options.local() };
    await this.options.redis.publish(this.channel, JSON.stringify(message));
  }

  private received(message: string): void {
    let published: Published;
    try {
      published = JSON.parse(message) as Published;
    } catch {
      return;
    }
    if (typeof published?.instance !== 'string' || !Array.isArray(published.sessions) || published.instance === this.options.instanceId) return;
    this.remote.set(published.instance, { sessions: published.sessions, at: Date.now() });
    this.options.onRemoteChange();
  }
}
