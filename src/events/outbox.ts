/**
 * The outbox: where owed events are read from. It is not a second store written beside the
 * journal but the journal itself (and the audit trail, for admin events): a fact and its event
 * are one record, written in one append, so no crash can keep the one and lose the other.
 *
 * One instance (JournalOutbox): on start, every record still in the journal is offered to the
 * sender, which skips what its marks say was delivered; then each record as it becomes durable.
 * A compaction keeps the records of sessions whose events are still owed.
 *
 * Cluster mode (RedisOutbox): the journal's append script also adds each record to the stream
 * `PREFIX:outbox` (the same script, so the same step inside Redis). One instance at a time holds
 * the sender's lease (`PREFIX:events:sender`) and sends; it reads the outbox and the audit
 * stream, and trims the outbox up to the oldest event still owed. When it stops or dies, the
 * lease runs out, another instance takes it, reads the outbox from its start, and carries on
 * from the marks in Redis: an event is sent by one instance, and again only if the one sending
 * it died before its mark was written.
 */
import type { Redis } from 'ioredis';
import type { AuditEntry, AuditLog } from '../audit/audit.js';
import type { Journal } from '../journal/journal.js';
import { endsSessionRecord, isReadable, type JournalRecord } from '../journal/records.js';
import type { Logger } from '../telemetry/logger.js';
import { defineLeaseCommands } from '../cluster/lease.js';
import { ADMIN_STREAM, eventOfAudit, eventsOfRecord, type ProxyEvent } from './catalogue.js';

/** What reads the outbox: the webhook sender, and a publisher per broker. Each keeps its own marks. */
export interface EventSink {
  start(): Promise<void>;
  stop(): Promise<void>;
  offer(events: readonly ProxyEvent[]): void;
  /**
   * Whether an event offered now could be sent anywhere. The outbox makes a record's events
   * only when one could: with no webhook endpoint and no broker, a turn makes none.
   */
  wantsEvents(): boolean;
  /** Whether events of `stream` are still owed (the outbox keeps its records). */
  owes(stream: string): boolean;
  /** The outbox position of the oldest event owed (cluster mode). */
  oldestPosition(): number | null;
  markedStreams(): Set<string>;
  forgetStreams(streams: ReadonlySet<string>): Promise<void>;
}

/** Several sinks read as one. */
export class Sinks implements EventSink {
  constructor(readonly all: readonly EventSink[]) {}

  async start(): Promise<void> {
    for (const sink of this.all) await sink.start();
  }

  async stop(): Promise<void> {
    await Promise.all(this.all.map((sink) => sink.stop()));
  }

  wantsEvents(): boolean {
    return this.all.some((sink) => sink.wantsEvents());
  }

  offer(events: readonly ProxyEvent[]): void {
    if (events.length > 0) for (const sink of this.all) sink.offer(events);
  }

  owes(stream: string): boolean {
    return this.all.some((sink) => sink.owes(stream));
  }

  oldestPosition(): number | null {
    const positions = this.all.map((sink) => sink.oldestPosition()).filter((p): p is number => p !== null);
    return positions.length === 0 ? null : Math.min(...positions);
  }

  markedStreams(): Set<string> {
    return new Set(this.all.flatMap((sink) => [...sink.markedStreams()]));
  }

  async forgetStreams(streams: ReadonlySet<string>): Promise<void> {
    for (const sink of this.all) await sink.forgetStreams(streams);
  }
}

/** Something that reads owed events into senders (webhooks now; brokers read the same events). */
export interface Outbox {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Whether this instance is the one sending (always, on one instance). */
  readonly sending: boolean;
  /** The endpoints changed: offer again what the outbox keeps (cluster mode), so a new one misses nothing. */
  rescan?(): void;
}

/**
 * The events of an audit entry. In cluster mode `streamId` is its entry in the audit stream,
 * whose time Redis gave: admin events are ordered (and marked) by it, one clock for every
 * instance, rather than by the clock of the instance that wrote them.
 */
const auditEvents = (entry: AuditEntry, streamId?: string): ProxyEvent[] => {
  const event = eventOfAudit(entry);
  if (!event) return [];
  const at = streamId === undefined ? NaN : Number(streamId.split('-')[0]);
  return [Number.isFinite(at) ? { ...event, at } : event];
};

/** Each session's incarnation start (its latest seq 1 record's time), as records are read in order. */
class Starts {
  private readonly starts = new Map<string, number>();

  of(record: JournalRecord): number | undefined {
    if (record.seq === 1 && typeof record.at === 'number') this.starts.set(record.session, record.at);
    return this.starts.get(record.session);
  }

  forget(session: string): void {
    this.starts.delete(session);
  }
}

const recordEvents = (record: JournalRecord, start: number | undefined, position?: number): ProxyEvent[] => {
  if (!isReadable(record)) return [];
  const events = eventsOfRecord(record, start);
  return position === undefined ? events : events.map((event) => ({ ...event, position }));
};

export class JournalOutbox implements Outbox {
  private readonly stops: Array<() => void> = [];
  readonly sending = true;

  constructor(
    private readonly journal: Journal,
    private readonly audit: AuditLog,
    private readonly sender: EventSink,
    private readonly options: { readonly retryMs: number; readonly now?: () => number },
  ) {}

  async start(): Promise<void> {
    // Records made while the journal is read are held back, then offered after it (the sender
    // skips any it was offered twice): none slips between the read and the live feed.
    let held: ProxyEvent[][] | null = [];
    const feed = (events: ProxyEvent[]): void => {
      if (events.length === 0) return;
      if (held) held.push(events);
      else this.sender.offer(events);
    };
    const starts = new Starts();
    this.stops.push(
      this.journal.onDurable((record) => {
        const start = starts.of(record);
        if (held === null && !this.sender.wantsEvents()) return; // nobody to send them to (yet)
        feed(recordEvents(record, start));
      }),
    );
    this.stops.push(this.audit.onRecorded((entry) => feed(auditEvents(entry))));
    await this.sender.start();
    const present = new Set<string>();
    const backlogStarts = new Starts();
    for await (const record of this.journal.store.read()) {
      present.add(record.session);
      this.sender.offer(recordEvents(record, backlogStarts.of(record)));
    }
    const now = (this.options.now ?? Date.now)();
    for await (const entry of this.audit.read(now - this.options.retryMs)) {
      if (Date.parse(entry.at) >= now - this.options.retryMs) this.sender.offer(auditEvents(entry));
    }
    const backlog = held;
    held = null;
    for (const events of backlog) this.sender.offer(events);
    // Marks of sessions no longer in the journal (compacted away) can never matter again.
    const gone = new Set([...this.sender.markedStreams()].filter((stream) => stream !== ADMIN_STREAM && !present.has(stream)));
    await this.sender.forgetStreams(gone);
    this.journal.retainWith((record) => this.sender.owes(record.session));
  }

  async stop(): Promise<void> {
    for (const stop of this.stops.splice(0)) stop();
    await this.sender.stop();
  }
}

/** How long the sender keeps outbox entries it no longer owes, for an endpoint another instance made a moment ago. */
const RESCAN_MS = 30_000;

export interface RedisOutboxOptions {
  readonly redis: Redis;
  readonly prefix: string;
  readonly instanceId: string;
  readonly sender: EventSink;
  readonly leaseMs: number;
  readonly retryMs: number;
  readonly logger: Logger;
}

export class RedisOutbox implements Outbox {
  private leader = false;
  private stopped = false;
  private ticker: NodeJS.Timeout | null = null;
  private reader: Redis | null = null;
  private following: Promise<void> | null = null;
  /** Sessions whose ending record was read, with its outbox position: their marks go once it is trimmed. */
  private readonly ended = new Map<string, number>();
  private lastTrim = 0;
  /** The position of the last outbox entry read. */
  private lastRead = 0;
  /** Outbox entries read in the last RESCAN_MS: [position, when read]. */
  private readonly recent: Array<[number, number]> = [];
  private rescanning = false;
  /** When the lease was last taken or renewed. */
  private renewedAt = 0;
  private starts = new Starts();
  private readonly lease: string;
  private readonly outbox: string;
  private readonly auditKey: string;

  constructor(private readonly options: RedisOutboxOptions) {
    this.lease = `${options.prefix}:events:sender`;
    this.outbox = `${options.prefix}:outbox`;
    this.auditKey = `${options.prefix}:audit`;
    defineLeaseCommands(options.redis);
  }

  get sending(): boolean {
    return this.leader;
  }

  async start(): Promise<void> {
    await this.tick();
    this.ticker = setInterval(() => void this.tick(), Math.max(100, Math.floor(this.options.leaseMs / 3)));
    this.ticker.unref?.();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.ticker) clearInterval(this.ticker);
    await this.stepDown();
    await this.options.redis.motiveLeaseRelease(this.lease, this.options.instanceId).catch(() => undefined);
  }

  /** Takes the lease when it is free, renews it when held, steps down when it was lost. */
  private async tick(): Promise<void> {
    if (this.stopped) return;
    const { redis, instanceId, leaseMs, logger } = this.options;
    try {
      if (this.leader) {
        const renewed = await redis.motiveLeaseRenew(this.lease, instanceId, leaseMs).catch((err: unknown) => {
          // Cut off from Redis for a whole lease: another instance may hold it now.
          if (Date.now() - this.renewedAt >= leaseMs) return 0;
          throw err;
        });
        if (renewed === 1) this.renewedAt = Date.now();
        if (renewed !== 1) {
          logger.warn('events: another instance holds the sender lease now; this one stops sending');
          await this.stepDown();
        } else {
          await this.trim();
        }
        return;
      }
      const taken = await redis.set(this.lease, instanceId, 'PX', leaseMs, 'NX');
      if (taken === 'OK' && !this.stopped) {
        this.renewedAt = Date.now();
        try {
          await this.stepUp();
        } catch (err) {
          // Could not read the outbox or the marks: let another instance (or a later tick) try.
          await this.stepDown();
          await redis.motiveLeaseRelease(this.lease, instanceId).catch(() => undefined);
          throw err;
        }
      }
    } catch (err) {
      logger.warn({ err }, `events: the sender lease could not be checked (${(err as Error).message})`);
    }
  }

  private async stepUp(): Promise<void> {
    this.leader = true;
    this.options.logger.info({ instance: this.options.instanceId }, 'events: this instance sends the cluster’s webhooks');
    const { sender, redis } = this.options;
    await sender.start();
    this.lastRead = 0;
    this.starts = new Starts();
    // The whole outbox (it holds only what may still be owed), then the admin actions of the horizon.
    let lastOutbox = '0-0';
    for (;;) {
      const batch = (await redis.xrange(this.outbox, `(${lastOutbox}`, '+', 'COUNT', 1000)) as Array<[string, string[]]>;
      for (const [id, fields] of batch) this.offerEntry(id, fields);
      if (batch.length > 0) lastOutbox = batch[batch.length - 1]![0];
      if (batch.length < 1000) break;
    }
    let lastAudit = `${Date.now() - this.options.retryMs}-0`;
    let start = lastAudit;
    for (;;) {
      const batch = (await redis.xrange(this.auditKey, start, '+', 'COUNT', 1000)) as Array<[string, string[]]>;
      for (const [id, fields] of batch) {
        const entry = parseField<AuditEntry>(fields, 'e');
        if (entry) sender.offer(auditEvents(entry, id));
      }
      if (batch.length > 0) lastAudit = batch[batch.length - 1]![0];
      if (batch.length < 1000) break;
      start = `(${lastAudit}`;
    }
    this.reader = redis.duplicate();
    this.reader.on('error', () => undefined);
    this.following = this.follow(this.reader, lastOutbox, lastAudit);
  }

  private async stepDown(): Promise<void> {
    if (!this.leader) return;
    this.leader = false;
    this.reader?.disconnect();
    this.reader = null;
    await this.following?.catch(() => undefined);
    this.following = null;
    await this.options.sender.stop();
    this.ended.clear();
  }

  /**
   * An endpoint was made or changed, perhaps on another instance a moment ago: the outbox kept
   * (owed events, and the last RESCAN_MS of entries) is offered again before anything newer, so
   * that the endpoint gets the events that happened since it was made, though this instance
   * heard of it later. The sinks skip what they had.
   */
  rescan(): void {
    this.rescanning = true;
  }

  private async follow(reader: Redis, lastOutbox: string, lastAudit: string): Promise<void> {
    while (this.leader && this.reader === reader) {
      if (this.rescanning) {
        this.rescanning = false;
        try {
          let from = '-';
          for (;;) {
            const batch = (await this.options.redis.xrange(this.outbox, from, lastOutbox, 'COUNT', 1000)) as Array<[string, string[]]>;
            for (const [id, fields] of batch) this.offerEntry(id, fields);
            if (batch.length < 1000) break;
            from = `(${batch[batch.length - 1]![0]}`;
          }
        } catch {
          this.rescanning = true; // Redis away: the next round tries again
        }
      }
      let answer: Array<[string, Array<[string, string[]]>]> | null;
      try {
        answer = (await reader.xread('COUNT', 1000, 'BLOCK', 1000, 'STREAMS', this.outbox, this.auditKey, lastOutbox, lastAudit)) as typeof answer;
      } catch {
        if (!this.leader || this.reader !== reader) return;
        await new Promise((resolve) => setTimeout(resolve, 200));
        continue;
      }
      for (const [key, entries] of answer ?? []) {
        for (const [id, fields] of entries) {
          if (key === this.outbox) {
            lastOutbox = id;
            this.offerEntry(id, fields);
          } else {
            lastAudit = id;
            const entry = parseField<AuditEntry>(fields, 'e');
            if (entry) this.options.sender.offer(auditEvents(entry, id));
          }
        }
      }
    }
  }

  private offerEntry(id: string, fields: string[]): void {
    const record = parseField<JournalRecord>(fields, 'r');
    if (!record) return;
    const position = Number(id.split('-')[0]);
    if (position > this.lastRead) {
      this.lastRead = position;
      this.recent.push([position, Date.now()]);
    }
    if (isReadable(record) && endsSessionRecord(record)) this.ended.set(record.session, position);
    this.options.sender.offer(recordEvents(record, this.starts.of(record), position));
  }

  /** Drops outbox entries before the oldest owed event, and the marks of sessions wholly gone with them. */
  private async trim(): Promise<void> {
    const now = Date.now();
    if (now - this.lastTrim < 1000) return;
    this.lastTrim = now;
    const { redis, sender } = this.options;
    const oldest = sender.oldestPosition();
    // Nothing owed: everything read so far may go (not what was appended since: it is unread),
    // but the last RESCAN_MS of entries stay for a rescan.
    while (this.recent.length > 0 && this.recent[0]![1] < now - RESCAN_MS) this.recent.shift();
    const cut = Math.min(oldest ?? this.lastRead + 1, this.recent[0]?.[0] ?? this.lastRead + 1);
    await redis.xtrim(this.outbox, 'MINID', `${cut}-0`);
    const gone = new Set<string>();
    for (const [session, position] of this.ended) {
      if (position < cut) {
        gone.add(session);
        this.ended.delete(session);
        this.starts.forget(session);
      }
    }
    if (gone.size > 0) await sender.forgetStreams(gone);
  }
}

function parseField<T>(fields: string[], name: string): T | null {
  const at = fields.indexOf(name);
  if (at === -1 || at + 1 >= fields.length) return null;
  try {
    return JSON.parse(fields[at + 1]!) as T;
  } catch {
    return null;
  }
}
