/**
 * What the webhook sender has done: for each endpoint and each stream of events (a session, or
 * the admin actions), the last event delivered (or given up on) — its mark — and the attempts
 * made, kept for the console. The events themselves are not here: they are the journal's
 * records (the outbox is the journal), so an event is never lost between its fact and its
 * delivery. A mark lost in a crash only makes an event be delivered again, with the same id.
 *
 * Memory (JOURNAL_PATH=memory), files beside the journal (`webhook-marks.jsonl`,
 * `webhook-attempts.jsonl`), or Redis in cluster mode (`PREFIX:webhooks:marks`,
 * `PREFIX:webhooks:attempts:<endpoint>`).
 */
import { mkdir, open, readFile, rename, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import type { EventPlace } from './catalogue.js';

/** The last event of a stream delivered to an endpoint. */
export interface Mark {
  /** The session incarnation's start (its seq 1 record's time), when it was known. */
  readonly start?: number;
  readonly seq: number;
  readonly part: number;
  readonly at: number;
  /** Admin events (seq 0): the ids of those delivered at `at` exactly. */
  readonly ids?: readonly string[];
}

/** Is an event (its place, time and id) after `mark` in its stream, so still owed? */
export function isAfter(event: EventPlace & { readonly at: number; readonly id: string }, mark: Mark | undefined): boolean {
  if (!mark) return true;
  if (event.seq === 0) return event.at > mark.at || (event.at === mark.at && !(mark.ids ?? []).includes(event.id));
  // An id used again after its session closed is another incarnation: the later one is after.
  if (event.start !== undefined && mark.start !== undefined && event.start !== mark.start) return event.start > mark.start;
  if (event.seq === mark.seq && event.at === mark.at) return event.part > mark.part;
  // Without starts: a later incarnation starts again at 1, later than the mark.
  return event.seq > mark.seq || event.at > mark.at;
}

/** The mark once `event` is done. */
export function markOf(event: EventPlace & { readonly at: number; readonly id: string }, previous: Mark | undefined): Mark {
  if (event.seq !== 0) return { ...(event.start === undefined ? {} : { start: event.start }), seq: event.seq, part: event.part, at: event.at };
  const ids = previous && previous.at === event.at ? [...(previous.ids ?? []), event.id] : [event.id];
  return { seq: 0, part: 0, at: event.at, ids };
}

export interface Attempt {
  readonly endpoint: string;
  readonly event: string;
  readonly type: string;
  /** When it was made, ms since the epoch. */
  readonly at: number;
  /** Which try of this event, from 1 (a manual send again counts on). */
  readonly attempt: number;
  /** The receiver's status; null when none came (refused, timed out, blocked). */
  readonly status: number | null;
  readonly ms: number;
  readonly error: string | null;
  /** delivered; failed (will be tried again); gave_up (its retry horizon passed); dropped (the endpoint was disabled). */
  readonly outcome: 'delivered' | 'failed' | 'gave_up' | 'dropped';
  readonly manual?: boolean;
  /** The body sent (to send it again). */
  readonly body: string;
}

export interface DeliveryState {
  /** Every mark, keyed `endpoint\0stream`. */
  loadMarks(): Promise<Map<string, Mark>>;
  setMark(key: string, mark: Mark): Promise<void>;
  dropMarks(keys: readonly string[]): Promise<void>;
  record(attempt: Attempt): Promise<void>;
  /** The endpoint's latest attempts, newest first. */
  attempts(endpoint: string, limit: number): Promise<Attempt[]>;
  close(): Promise<void>;
}

/** The smallest outbox position of an event still owed in `queues` (each queue's head is its oldest). */
export function oldestPosition(queues: Iterable<{ readonly events: readonly EventPlace[] }>): number | null {
  let oldest: number | null = null;
  for (const queue of queues) {
    const position = queue.events[0]?.position;
    if (position !== undefined && (oldest === null || position < oldest)) oldest = position;
  }
  return oldest;
}

/** Events waiting across `queues`. */
export function countPending(queues: Iterable<{ readonly events: readonly unknown[] }>): number {
  let n = 0;
  for (const queue of queues) n += queue.events.length;
  return n;
}

export const markKey = (endpoint: string, stream: string): string => `${endpoint}\u0000${stream}`;

const streamOfKey = (key: string): string => key.slice(key.indexOf('\u0000') + 1);

/** One sink's marks (the webhook sender's, or a broker's): loaded, advanced as events are done, forgotten with their streams. */
export class MarkBook {
  private marks = new Map<string, Mark>();

  constructor(
    private readonly state: DeliveryState,
    /** Which keys are this sink's. */
    private readonly owns: (key: string) => boolean,
  ) {}

  async load(): Promise<void> {
    const all = await this.state.loadMarks();
    this.marks = new Map([...all].filter(([key]) => this.owns(key)));
  }

  get(key: string): Mark | undefined {
    return this.marks.get(key);
  }

  /** `event` is done (delivered, confirmed, given up): its stream's mark moves past it. */
  async advance(key: string, event: EventPlace & { readonly at: number; readonly id: string }): Promise<void> {
    const mark = markOf(event, this.marks.get(key));
    this.marks.set(key, mark);
    await this.state.setMark(key, mark);
  }

  /** The streams marked. */
  streams(): Set<string> {
    return new Set([...this.marks.keys()].map(streamOfKey));
  }

  /** Forgets the marks of streams whose records are gone from the outbox (they can never be owed again). */
  async forget(streams: ReadonlySet<string>): Promise<void> {
    const keys = [...this.marks.keys()].filter((key) => streams.has(streamOfKey(key)));
    for (const key of keys) this.marks.delete(key);
    await this.state.dropMarks(keys);
  }
}

/** How many attempts are kept per endpoint. */
export const ATTEMPTS_KEPT = 500;

export class MemoryDeliveryState implements DeliveryState {
  private readonly marks = new Map<string, Mark>();
  private readonly tried = new Map<string, Attempt[]>();

  async loadMarks(): Promise<Map<string, Mark>> {
    return new Map(this.marks);
  }

  async setMark(key: string, mark: Mark): Promise<void> {
    this.marks.set(key, mark);
  }

  async dropMarks(keys: readonly string[]): Promise<void> {
    for (const key of keys) this.marks.delete(key);
  }

  async record(attempt: Attempt): Promise<void> {
    const list = this.tried.get(attempt.endpoint) ?? [];
    list.push(attempt);
    if (list.length > ATTEMPTS_KEPT) list.splice(0, list.length - ATTEMPTS_KEPT);
    this.tried.set(attempt.endpoint, list);
  }

  async attempts(endpoint: string, limit: number): Promise<Attempt[]> {
    return (this.tried.get(endpoint) ?? []).slice(-limit).reverse();
  }

  async close(): Promise<void> {}
}

/**
 * Two JSON-lines files, appended without fsync (a process crash loses nothing written; a power
 * loss may lose marks, and the events are delivered again). Each is rewritten on open when it
 * has grown well past what it holds.
 */
export class FileDeliveryState implements DeliveryState {
  private marksFile: FileHandle | null = null;
  private attemptsFile: FileHandle | null = null;
  private writing: Promise<void> = Promise.resolve();
  private readonly tried = new Map<string, Attempt[]>();

  constructor(private readonly directory: string) {}

  async open(): Promise<this> {
    await mkdir(this.directory, { recursive: true, mode: 0o700 });
    const attempts = await readLines<Attempt>(join(this.directory, 'webhook-attempts.jsonl'));
    for (const attempt of attempts) if (typeof attempt.endpoint === 'string') this.remember(attempt);
    const kept = [...this.tried.values()].flat().sort((a, b) => a.at - b.at);
    if (attempts.length > kept.length + 1000) await rewrite(join(this.directory, 'webhook-attempts.jsonl'), kept);
    this.attemptsFile = await open(join(this.directory, 'webhook-attempts.jsonl'), 'a', 0o600);
    return this;
  }

  async loadMarks(): Promise<Map<string, Mark>> {
    const path = join(this.directory, 'webhook-marks.jsonl');
    const lines = await readLines<{ k: string; m?: Mark }>(path);
    const marks = new Map<string, Mark>();
    for (const line of lines) {
      if (typeof line.k !== 'string') continue;
      if (line.m) marks.set(line.k, line.m);
      else marks.delete(line.k);
    }
    if (lines.length > 2 * marks.size + 1000) await rewrite(path, [...marks].map(([k, m]) => ({ k, m })));
    this.marksFile ??= await open(path, 'a', 0o600);
    return marks;
  }

  setMark(key: string, mark: Mark): Promise<void> {
    return this.write(() => this.marksFile, `${JSON.stringify({ k: key, m: mark })}\n`);
  }

  dropMarks(keys: readonly string[]): Promise<void> {
    if (keys.length === 0) return Promise.resolve();
    return this.write(() => this.marksFile, keys.map((k) => `${JSON.stringify({ k })}\n`).join(''));
  }

  record(attempt: Attempt): Promise<void> {
    this.remember(attempt);
    return this.write(() => this.attemptsFile, `${JSON.stringify(attempt)}\n`);
  }

  async attempts(endpoint: string, limit: number): Promise<Attempt[]> {
    return (this.tried.get(endpoint) ?? []).slice(-limit).reverse();
  }

  async close(): Promise<void> {
    await this.writing;
    await this.marksFile?.close();
    await this.attemptsFile?.close();
    this.marksFile = this.attemptsFile = null;
  }

  private remember(attempt: Attempt): void {
    const list = this.tried.get(attempt.endpoint) ?? [];
    list.push(attempt);
    if (list.length > ATTEMPTS_KEPT) list.splice(0, list.length - ATTEMPTS_KEPT);
    this.tried.set(attempt.endpoint, list);
  }

  private write(file: () => FileHandle | null, text: string): Promise<void> {
    const done = this.writing.then(async () => {
      const handle = file();
      if (handle) await handle.write(text);
    });
    this.writing = done.catch(() => undefined);
    return done;
  }
}

async function readLines<T>(path: string): Promise<T[]> {
  let text = '';
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const out: T[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    try {
      out.push(JSON.parse(line) as T);
    } catch {
      // a torn last line after a crash
    }
  }
  return out;
}

async function rewrite(path: string, values: readonly unknown[]): Promise<void> {
  const temporary = `${path}.tmp`;
  const handle = await open(temporary, 'w', 0o600);
  try {
    await handle.write(values.map((v) => `${JSON.stringify(v)}\n`).join(''));
    await handle.datasync();
  } finally {
    await handle.close();
  }
  await rename(temporary, path);
}

/** Cluster mode: a hash of marks and a capped stream of attempts per endpoint, shared by every instance. */
export class RedisDeliveryState implements DeliveryState {
  private readonly marks: string;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {
    this.marks = `${prefix}:webhooks:marks`;
  }

  async loadMarks(): Promise<Map<string, Mark>> {
    const all = await this.redis.hgetall(this.marks);
    return new Map(Object.entries(all).map(([k, json]) => [k, JSON.parse(json) as Mark]));
  }

  async setMark(key: string, mark: Mark): Promise<void> {
    await this.redis.hset(this.marks, key, JSON.stringify(mark));
  }

  async dropMarks(keys: readonly string[]): Promise<void> {
    if (keys.length > 0) await this.redis.hdel(this.marks, ...keys);
  }

  async record(attempt: Attempt): Promise<void> {
    await this.redis.xadd(this.attemptsKey(attempt.endpoint), 'MAXLEN', '~', String(ATTEMPTS_KEPT), '*', 'a', JSON.stringify(attempt));
  }

  async attempts(endpoint: string, limit: number): Promise<Attempt[]> {
    const entries = (await this.redis.xrevrange(this.attemptsKey(endpoint), '+', '-', 'COUNT', limit)) as Array<[string, string[]]>;
    return entries.map(([, fields]) => JSON.parse(fields[1]!) as Attempt);
  }

  async close(): Promise<void> {}

  private attemptsKey(endpoint: string): string {
    return `${this.prefix}:webhooks:attempts:${endpoint}`;
  }
}
