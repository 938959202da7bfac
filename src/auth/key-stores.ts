/**
 * Where managed keys and tenants are kept: in memory (JOURNAL_PATH=memory: nothing survives a
 * restart), in a JSON-lines file in the journal's directory (`keys.jsonl`, `tenants.jsonl`; one
 * instance), or in Redis (cluster mode), where a change is published to every instance.
 */
import { once } from 'node:events';
import { chmod, mkdir, open, readFile, rename, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import type { RecordStore } from './keys.js';

interface Identified {
  readonly id: string;
}

export class MemoryRecordStore<T extends Identified> implements RecordStore<T> {
  readonly durable = false;
  private readonly keys = new Map<string, T>();

  async load(): Promise<T[]> {
    return [...this.keys.values()];
  }

  async put(key: T): Promise<void> {
    this.keys.set(key.id, key);
  }

  async close(): Promise<void> {}
}

/**
 * One JSON line per change, fsynced before the change takes effect; the last line of an id wins.
 * Opening rewrites the file when it holds more superseded lines than live ones.
 */
export class FileRecordStore<T extends Identified> implements RecordStore<T> {
  readonly durable = true;
  private handle: FileHandle | null = null;
  private lines = 0;
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly directory: string,
    private readonly file: string,
    private readonly onWarning: (message: string) => void = () => undefined,
  ) {}

  get path(): string {
    return join(this.directory, this.file);
  }

  async load(): Promise<T[]> {
    await mkdir(this.directory, { recursive: true, mode: 0o700 });
    let text = '';
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const keys = new Map<string, T>();
    let unreadable = 0;
    this.lines = 0;
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      this.lines++;
      try {
        const key = JSON.parse(line) as T;
        if (typeof key?.id !== 'string') throw new Error('not a record');
        keys.set(key.id, key);
      } catch {
        unreadable++;
      }
    }
    // A torn last line (a crash mid-write) is the only expected damage; anything else is reported.
    if (unreadable > 0) this.onWarning(`${unreadable} unreadable line(s) in ${this.path} were skipped`);
    if (this.lines > 2 * keys.size + 16 || unreadable > 0) await this.rewrite([...keys.values()]);
    // Records may hold secrets (a webhook endpoint's signing secrets): the file is the owner's alone.
    this.handle = await open(this.path, 'a', 0o600);
    await chmod(this.path, 0o600).catch(() => undefined);
    return [...keys.values()];
  }

  put(key: T): Promise<void> {
    const line = `${JSON.stringify(key)}\n`;
    const write = this.writing.then(async () => {
      if (!this.handle) throw new Error('the key store is not open');
      await this.handle.write(line);
      await this.handle.datasync();
      this.lines++;
    });
    this.writing = write.catch(() => undefined);
    return write;
  }

  async close(): Promise<void> {
    await this.writing;
    await this.handle?.close();
    this.handle = null;
  }

  private async rewrite(keys: T[]): Promise<void> {
    const temporary = `${this.path}.tmp`;
    const handle = await open(temporary, 'w', 0o600);
    try {
      await handle.write(keys.map((k) => `${JSON.stringify(k)}\n`).join(''));
      await handle.datasync();
    } finally {
      await handle.close();
    }
    await rename(temporary, this.path);
    this.lines = keys.length;
  }
}

/**
 * A hash `PREFIX:<name>` of id → record, a hash `PREFIX:keys:by-digest` of secret digest → id, and a channel `PREFIX:<name>:changed` that names each
 * changed id. Every instance subscribes; when its subscription (re)connects it reloads all, so
 * a change published while it was away is not missed.
 */
export class RedisRecordStore<T extends Identified> implements RecordStore<T> {
  readonly durable = true;
  private subscriber: Redis | null = null;
  private readonly hash: string;
  private readonly channel: string;
  /** digest → id, for a key this instance has not heard of yet. */
  private readonly digests: string;

  /**
   * `name`: `keys` or `tenants`. `indexOf`: index entries a record adds to `PREFIX:<name>:by-digest`
   * (a key's secret digests, so that an instance finds a key it has not heard of yet).
   */
  constructor(
    private readonly redis: Redis,
    prefix: string,
    name: string,
    private readonly indexOf?: (record: T) => readonly string[],
  ) {
    this.hash = `${prefix}:${name}`;
    this.channel = `${prefix}:${name}:changed`;
    this.digests = `${prefix}:${name}:by-digest`;
  }

  async load(): Promise<T[]> {
    const all = await this.redis.hgetall(this.hash);
    return Object.values(all).map((json) => JSON.parse(json) as T);
  }

  async get(id: string): Promise<T | null> {
    const json = await this.redis.hget(this.hash, id);
    return json === null ? null : (JSON.parse(json) as T);
  }

  async findByDigest(digest: string): Promise<T | null> {
    const id = await this.redis.hget(this.digests, digest);
    return id === null ? null : this.get(id);
  }

  async put(record: T): Promise<void> {
    const multi = this.redis.multi().hset(this.hash, record.id, JSON.stringify(record));
    const index = this.indexOf?.(record) ?? [];
    if (index.length > 0) multi.hset(this.digests, Object.fromEntries(index.map((digest) => [digest, record.id])));
    await multi.publish(this.channel, record.id).exec();
  }

  onChange(listener: (id: string | null) => void): void {
    const subscriber = this.redis.duplicate();
    subscriber.on('error', () => undefined); // the main connection reports Redis being away
    subscriber.on('message', (_channel: string, id: string) => listener(id));
    // Once subscribed, and again after every reconnect (ioredis subscribes again by itself),
    // reload all: a change made before the subscription took is not missed.
    let subscribed = false;
    subscriber.on('ready', () => {
      if (subscribed) listener(null);
    });
    this.subscriber = subscriber;
    void subscriber
      .subscribe(this.channel)
      .then(() => {
        subscribed = true;
        listener(null);
      })
      .catch(() => undefined);
  }

  async close(): Promise<void> {
    const subscriber = this.subscriber;
    this.subscriber = null;
    if (subscriber) {
      subscriber.disconnect();
      if (subscriber.status !== 'end') await once(subscriber, 'end').catch(() => undefined);
    }
  }
}
