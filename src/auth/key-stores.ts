/**
 * Where managed keys are kept: in memory (JOURNAL_PATH=memory: nothing survives a restart), in
 * `keys.jsonl` in the journal's directory (one instance), or in Redis (cluster mode), where a
 * change is published to every instance.
 */
import { once } from 'node:events';
import { mkdir, open, readFile, rename, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import type { KeyStore, ManagedKey } from './keys.js';

export class MemoryKeyStore implements KeyStore {
  readonly durable = false;
  private readonly keys = new Map<string, ManagedKey>();

  async load(): Promise<ManagedKey[]> {
    return [...this.keys.values()];
  }

  async put(key: ManagedKey): Promise<void> {
    this.keys.set(key.id, key);
  }

  async close(): Promise<void> {}
}

/**
 * One JSON line per change, fsynced before the change takes effect; the last line of an id wins.
 * Opening rewrites the file when it holds more superseded lines than live ones.
 */
export class FileKeyStore implements KeyStore {
  readonly durable = true;
  private handle: FileHandle | null = null;
  private lines = 0;
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly directory: string,
    private readonly onWarning: (message: string) => void = () => undefined,
  ) {}

  get path(): string {
    return join(this.directory, 'keys.jsonl');
  }

  async load(): Promise<ManagedKey[]> {
    await mkdir(this.directory, { recursive: true });
    let text = '';
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const keys = new Map<string, ManagedKey>();
    let unreadable = 0;
    this.lines = 0;
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      this.lines++;
      try {
        const key = JSON.parse(line) as ManagedKey;
        if (typeof key.id !== 'string' || !Array.isArray(key.secrets)) throw new Error('not a key record');
        keys.set(key.id, key);
      } catch {
        unreadable++;
      }
    }
    // A torn last line (a crash mid-write) is the only expected damage; anything else is reported.
    if (unreadable > 0) this.onWarning(`${unreadable} unreadable line(s) in ${this.path} were skipped`);
    if (this.lines > 2 * keys.size + 16 || unreadable > 0) await this.rewrite([...keys.values()]);
    this.handle = await open(this.path, 'a');
    return [...keys.values()];
  }

  put(key: ManagedKey): Promise<void> {
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

  private async rewrite(keys: ManagedKey[]): Promise<void> {
    const temporary = `${this.path}.tmp`;
    const handle = await open(temporary, 'w');
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
 * A hash `PREFIX:keys` of id → record, a hash `PREFIX:keys:by-digest` of secret digest → id, and a channel `PREFIX:keys:changed` that names each
 * changed id. Every instance subscribes; when its subscription (re)connects it reloads all, so
 * a change published while it was away is not missed.
 */
export class RedisKeyStore implements KeyStore {
  readonly durable = true;
  private subscriber: Redis | null = null;
  private readonly hash: string;
  private readonly channel: string;
  /** digest → id, for a key this instance has not heard of yet. */
  private readonly digests: string;

  constructor(
    private readonly redis: Redis,
    prefix: string,
  ) {
    this.hash = `${prefix}:keys`;
    this.channel = `${prefix}:keys:changed`;
    this.digests = `${prefix}:keys:by-digest`;
  }

  async load(): Promise<ManagedKey[]> {
    const all = await this.redis.hgetall(this.hash);
    return Object.values(all).map((json) => JSON.parse(json) as ManagedKey);
  }

  async get(id: string): Promise<ManagedKey | null> {
    const json = await this.redis.hget(this.hash, id);
    return json === null ? null : (JSON.parse(json) as ManagedKey);
  }

  async findByDigest(digest: string): Promise<ManagedKey | null> {
    const id = await this.redis.hget(this.digests, digest);
    return id === null ? null : this.get(id);
  }

  async put(key: ManagedKey): Promise<void> {
    const digests = Object.fromEntries(key.secrets.map((s) => [s.digest, key.id]));
    const multi = this.redis.multi().hset(this.hash, key.id, JSON.stringify(key));
    if (key.secrets.length > 0) multi.hset(this.digests, digests);
    await multi.publish(this.channel, key.id).exec();
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
