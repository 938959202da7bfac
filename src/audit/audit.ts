/**
 * The audit trail: every admin action (keys made, rotated, revoked; tenants' limits; sessions
 * ended; transcripts read; refused admin credentials) with who, when, from where and what —
 * never a secret: keys by their id, sessions by their name and tenant. Kept through restarts:
 * `audit.jsonl` in the journal's directory on one instance (each entry fsynced), a Redis stream
 * `PREFIX:audit` in cluster mode (every instance writes to it and reads all of it), memory with
 * JOURNAL_PATH=memory. Read at GET /admin/audit.
 */
import { randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import type { Principal } from '../auth/principal.js';

export type AuditAction =
  | 'key.created'
  | 'key.rotated'
  | 'key.revoked'
  | 'tenant.limits_set'
  | 'tenant.limits_removed'
  | 'session.ended'
  | 'transcript.read'
  | 'admin.denied'
  | 'signin.ok'
  | 'signin.failed'
  | 'signout'
  | 'webhook.created'
  | 'webhook.updated'
  | 'webhook.rotated'
  | 'webhook.deleted'
  | 'webhook.disabled'
  | 'webhook.resent'
  | 'webhook.tested'
  | 'bridge.conversation_ended';

export interface AuditEntry {
  readonly id: string;
  readonly at: string;
  readonly action: AuditAction;
  readonly outcome: 'ok' | 'denied';
  /** Who: the admin key, a local caller, a managed key (name and id), a token's subject. */
  readonly actor: { readonly subject: string; readonly kind: Principal['kind'] | 'anonymous' | 'service'; readonly tenant: string | null };
  /** From where: the caller's address (TRUST_PROXY decides whose). */
  readonly from: string;
  /** The tenant acted on (null: the default tenant). */
  readonly tenant: string | null;
  /** What: a key id, a session name, a route. */
  readonly target: { readonly type: 'key' | 'tenant' | 'session' | 'route' | 'console' | 'endpoint' | 'bridge_conversation'; readonly id: string };
  readonly details?: Readonly<Record<string, string | number | boolean | null>>;
}

export interface AuditFilter {
  readonly tenant?: string | null;
  readonly actor?: string;
  readonly action?: string;
  /** ISO times or epoch ms, inclusive. */
  readonly since?: number;
  readonly until?: number;
  /** Which tenants the reader may see: null for every tenant. */
  readonly tenants?: ReadonlySet<string | null> | null;
}

export interface AuditStore {
  append(entry: AuditEntry): Promise<void>;
  /** Entries in the order they were written, those before `since` skipped where the store can. */
  read(since?: number): AsyncIterable<AuditEntry>;
  close(): Promise<void>;
}

export class MemoryAuditStore implements AuditStore {
  private readonly entries: AuditEntry[] = [];
  constructor(private readonly max = 100_000) {}

  async append(entry: AuditEntry): Promise<void> {
    this.entries.push(entry);
    if (this.entries.length > this.max) this.entries.splice(0, this.entries.length - this.max);
  }

  async *read(): AsyncIterable<AuditEntry> {
    yield* [...this.entries];
  }

  async close(): Promise<void> {}
}

export class FileAuditStore implements AuditStore {
  private handle: FileHandle | null = null;
  private writing: Promise<void> = Promise.resolve();

  constructor(private readonly directory: string) {}

  get path(): string {
    return join(this.directory, 'audit.jsonl');
  }

  async open(): Promise<this> {
    // Private, as the journal beside it: who did what is for the operators' eyes only.
    await mkdir(this.directory, { recursive: true, mode: 0o700 });
    this.handle = await open(this.path, 'a', 0o600);
    // A file made by an older version (or under a loose umask) is made private too.
    await this.handle.chmod(0o600).catch((error: Error) => process.emitWarning(`could not make ${this.path} private (mode 600): ${error.message}`, 'AuditWarning'));
    return this;
  }

  append(entry: AuditEntry): Promise<void> {
    const line = `${JSON.stringify(entry)}\n`;
    const write = this.writing.then(async () => {
      await this.handle!.write(line);
      await this.handle!.datasync();
    });
    this.writing = write.catch(() => undefined);
    return write;
  }

  async *read(): AsyncIterable<AuditEntry> {
    await this.writing;
    const lines = createInterface({ input: createReadStream(this.path, { encoding: 'utf8' }), crlfDelay: Infinity });
    for await (const line of lines) {
      if (line.trim() === '') continue;
      try {
        yield JSON.parse(line) as AuditEntry;
      } catch {
        // a torn last line after a crash
      }
    }
  }

  async close(): Promise<void> {
    await this.writing;
    await this.handle?.close();
    this.handle = null;
  }
}

/** A Redis stream, capped near a million entries; entry ids are times, so `since` skips to it. */
export class RedisAuditStore implements AuditStore {
  private readonly key: string;
  constructor(
    private readonly redis: Redis,
    prefix: string,
  ) {
    this.key = `${prefix}:audit`;
  }

  async append(entry: AuditEntry): Promise<void> {
    await this.redis.xadd(this.key, 'MAXLEN', '~', '1000000', '*', 'e', JSON.stringify(entry));
  }

  async *read(since = 0): AsyncIterable<AuditEntry> {
    let start = since > 0 ? String(since) : '-';
    for (;;) {
      const batch = (await this.redis.xrange(this.key, start, '+', 'COUNT', 1000)) as Array<[string, string[]]>;
      for (const [, fields] of batch) {
        const json = fields[1];
        if (json) yield JSON.parse(json) as AuditEntry;
      }
      if (batch.length < 1000) return;
      start = `(${batch[batch.length - 1]![0]}`;
    }
  }

  async close(): Promise<void> {}
}

export interface AuditRecord {
  readonly action: AuditAction;
  readonly tenant: string | null;
  readonly target: AuditEntry['target'];
  readonly outcome?: AuditEntry['outcome'];
  readonly details?: AuditEntry['details'];
}

export class AuditLog {
  private readonly listeners: Array<(entry: AuditEntry) => void> = [];

  constructor(
    private readonly store: AuditStore,
    private readonly onError: (err: unknown) => void = () => undefined,
    /** The caller's address (cluster mode: the one the first instance saw). */
    private readonly addressOf: (request: FastifyRequest) => string = (request) => request.ip,
    private readonly now: () => number = Date.now,
  ) {}

  /** Records what `request`'s caller did. The admin's answer does not wait on the write, and a failed write is logged. */
  record(request: FastifyRequest, what: AuditRecord): Promise<void> {
    const actor = request.actor;
    return this.write(
      actor ? { subject: actor.subject, kind: actor.kind, tenant: actor.tenant } : { subject: 'anonymous', kind: 'anonymous', tenant: null },
      this.addressOf(request),
      what,
    );
  }

  /** Records what the service itself did (an endpoint disabled for failing). */
  recordService(what: AuditRecord): Promise<void> {
    return this.write({ subject: 'motiveproxy', kind: 'service', tenant: null }, 'service', what);
  }

  /** Told of each entry once it is written (the outbox's live feed of admin events); returns its removal. */
  onRecorded(listener: (entry: AuditEntry) => void): () => void {
    this.listeners.push(listener);
    return () => {
      const i = this.listeners.indexOf(listener);
      if (i !== -1) this.listeners.splice(i, 1);
    };
  }

  /** Entries from `since` (ms) on, in the order written. */
  read(since?: number): AsyncIterable<AuditEntry> {
    return this.store.read(since);
  }

  private write(actor: AuditEntry['actor'], from: string, what: AuditRecord): Promise<void> {
    const entry: AuditEntry = {
      id: randomUUID(),
      at: new Date(this.now()).toISOString(),
      action: what.action,
      outcome: what.outcome ?? 'ok',
      actor,
      from,
      tenant: what.tenant,
      target: what.target,
      ...(what.details ? { details: what.details } : {}),
    };
    return this.store.append(entry).then(
      () => {
        for (const listener of this.listeners) {
          try {
            listener(entry);
          } catch (err) {
            this.onError(err);
          }
        }
      },
      (err: unknown) => this.onError(err),
    );
  }

  /** Entries matching `filter`, oldest first, at most `limit` (the newest ones when more match). */
  async query(filter: AuditFilter, limit: number): Promise<AuditEntry[]> {
    const found: AuditEntry[] = [];
    for await (const entry of this.matching(filter)) {
      found.push(entry);
      if (found.length > limit) found.shift();
    }
    return found;
  }

  /** Every matching entry, oldest first (the JSON-lines export). */
  async *matching(filter: AuditFilter): AsyncIterable<AuditEntry> {
    for await (const entry of this.store.read(filter.since)) {
      const at = Date.parse(entry.at);
      if (filter.since !== undefined && at < filter.since) continue;
      if (filter.until !== undefined && at > filter.until) continue;
      if (filter.tenants && !filter.tenants.has(entry.tenant)) continue;
      if (filter.tenant !== undefined && entry.tenant !== filter.tenant) continue;
      if (filter.actor !== undefined && entry.actor.subject !== filter.actor && !entry.actor.subject.includes(filter.actor)) continue;
      if (filter.action !== undefined && entry.action !== filter.action && !entry.action.startsWith(`${filter.action}.`)) continue;
      yield entry;
    }
  }

  close(): Promise<void> {
    return this.store.close();
  }
}
