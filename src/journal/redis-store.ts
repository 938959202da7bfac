/**
 * The journal store on Redis (cluster mode): each session's records are a Redis Stream,
 * appended by one Lua script that checks, inside Redis and in one step, the owner's fencing
 * token (the session's epoch), the expected sequence, and whether the append is a duplicate
 * of the session's last record. The script's answer is the commit point: a record is in the
 * journal once it returns, whoever asks later and on whichever instance.
 *
 * Keys (PREFIX is `motive` unless configured), for one Redis (a primary with replicas or
 * Sentinel; not Redis Cluster, since the scripts keep cluster-wide indexes beside a session's
 * keys):
 *
 *   PREFIX:s:<id>:log   Stream   the session's records, field `r` = the record as JSON; entry ids
 *                                are `<n>-0` from PREFIX:clock, so they order records of all
 *                                sessions as they were appended
 *   PREFIX:s:<id>:meta  Hash     seq (last record), start (entry id of the latest seq 1),
 *                                ended (0/1), digest (SHA-1 of the last record), owner, epoch
 *   PREFIX:sessions     Set      every session id whose stream has not ended
 *   PREFIX:live         Set      sessions whose latest incarnation has not ended
 *   PREFIX:clock        String   the entry-id counter
 *   PREFIX:epoch        String   the fencing-token counter (cluster-wide, never reused)
 *   PREFIX:outbox       Stream   every record again, under the same entry id: the events' outbox,
 *                                read and trimmed by the instance that sends events
 *
 * A session's keys expire `endedKeepMs` after the record that ends it (a new incarnation of
 * the id keeps them), so a closed session leaves nothing behind.
 */
import type { Redis, Result } from 'ioredis';
import {
  closedError,
  describeError,
  encodeRecord,
  isJournalRecord,
  JournalError,
  type AppendOptions,
  type JournalRecordBase,
  type JournalStats,
  type JournalStore,
} from './store.js';

export interface RedisStoreOptions<R extends JournalRecordBase> {
  readonly redis: Redis;
  /** Key prefix; several independent clusters can share one Redis under different prefixes. */
  readonly prefix?: string;
  /** Which records end a session. */
  readonly ends?: (record: R) => boolean;
  /** How long an ended session's keys stay (for held requests still reading their reply). Default 60 s. */
  readonly endedKeepMs?: number;
}

/** The append script. KEYS: log, meta, sessions, live, clock, outbox (the events' outbox: src/events/outbox.ts). ARGV: session, seq, expected ('' = unchecked), fence ('' = unfenced), record, ends (1/0), endedKeepMs. */
const APPEND = `
local log, meta = KEYS[1], KEYS[2]
local seq = tonumber(ARGV[2])
if ARGV[4] ~= '' then
  local epoch = redis.call('HGET', meta, 'epoch')
  if epoch ~= ARGV[4] then return {'fenced', epoch or '0'} end
end
local last = tonumber(redis.call('HGET', meta, 'seq') or '0')
local digest = redis.sha1hex(ARGV[5])
if seq == last and redis.call('HGET', meta, 'digest') == digest then return {'duplicate', tostring(last)} end
if ARGV[3] ~= '' then
  local expected = tonumber(ARGV[3])
  if expected ~= 0 and expected ~= last then return {'conflict', tostring(last)} end
end
local id = redis.call('INCR', KEYS[5]) .. '-0'
redis.call('XADD', log, id, 'r', ARGV[5])
redis.call('XADD', KEYS[6], id, 'r', ARGV[5])
redis.call('SADD', KEYS[3], ARGV[1])
if seq == 1 then
  redis.call('HSET', meta, 'start', id, 'ended', '0')
  redis.call('PERSIST', log)
  redis.call('PERSIST', meta)
end
redis.call('HSET', meta, 'seq', seq, 'digest', digest)
if ARGV[6] == '1' then
  redis.call('HSET', meta, 'ended', '1')
  redis.call('SREM', KEYS[4], ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[1])
  redis.call('PEXPIRE', log, ARGV[7])
  redis.call('PEXPIRE', meta, ARGV[7])
elseif redis.call('HGET', meta, 'ended') ~= '1' then
  redis.call('SADD', KEYS[4], ARGV[1])
end
return {'ok', id}
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    motiveAppend(log: string, meta: string, sessions: string, live: string, clock: string, outbox: string, session: string, seq: number, expected: string, fence: string, record: string, ends: '1' | '0', endedKeepMs: number): Result<[string, string], Context>;
  }
}

export class RedisStore<R extends JournalRecordBase = JournalRecordBase> implements JournalStore<R> {
  private readonly redis: Redis;
  private readonly prefix: string;
  private readonly ends: (record: R) => boolean;
  private readonly endedKeepMs: number;
  private appended = 0;
  private pending = 0;
  private closed = false;
  private last: Promise<void> = Promise.resolve();

  constructor(options: RedisStoreOptions<R>) {
    this.redis = options.redis;
    this.prefix = options.prefix ?? 'motive';
    this.ends = options.ends ?? (() => false);
    this.endedKeepMs = options.endedKeepMs ?? 60_000;
    this.redis.defineCommand('motiveAppend', { numberOfKeys: 6, lua: APPEND });
  }

  logKey(session: string): string {
    return `${this.prefix}:s:${session}:log`;
  }

  metaKey(session: string): string {
    return `${this.prefix}:s:${session}:meta`;
  }

  append(record: R, options?: AppendOptions): Promise<void> {
    if (this.closed) return Promise.reject(closedError());
    let json: string;
    try {
      json = encodeRecord(record);
    } catch (error) {
      return Promise.reject(error);
    }
    const { session, seq } = record;
    const expected = options?.expectedSeq === undefined ? '' : String(options.expectedSeq);
    const fence = options?.fence === undefined ? '' : String(options.fence);
    this.pending += 1;
    const written = this.redis
      .motiveAppend(this.logKey(session), this.metaKey(session), this.key('sessions'), this.key('live'), this.key('clock'), this.key('outbox'), session, seq, expected, fence, json, this.ends(record) ? '1' : '0', this.endedKeepMs)
      .then(
        ([outcome, detail]) => {
          if (outcome === 'ok' || outcome === 'duplicate') {
            this.appended += outcome === 'ok' ? 1 : 0;
            return;
          }
          if (outcome === 'fenced') {
            throw new JournalError('fenced', `Session '${session}' is owned under epoch ${detail} now, not ${fence}: this instance no longer owns it, and its append was refused.`);
          }
          throw new JournalError('seq_conflict', `Session '${session}' has ${detail} as its last record, not ${expected}: another writer appended meanwhile.`);
        },
        (error: unknown) => {
          throw new JournalError('journal_failed', `Redis did not take the append: ${describeError(error)}`, { cause: error });
        },
      )
      .finally(() => (this.pending -= 1));
    this.last = written.catch(() => undefined);
    return written;
  }

  async *read(): AsyncIterable<R> {
    const sessions = await this.redis.smembers(this.key('sessions'));
    const entries: Array<{ order: number; record: R }> = [];
    for (const session of sessions) {
      for (const [id, fields] of await this.redis.xrange(this.logKey(session), '-', '+')) {
        const record = parseEntry<R>(fields);
        if (record) entries.push({ order: Number(id.split('-')[0]), record });
      }
    }
    entries.sort((a, b) => a.order - b.order);
    for (const entry of entries) yield entry.record;
  }

  async readSession(session: string): Promise<R[]> {
    const start = await this.redis.hget(this.metaKey(session), 'start');
    if (!start) return [];
    const out: R[] = [];
    for (const [, fields] of await this.redis.xrange(this.logKey(session), start, '+')) {
      const record = parseEntry<R>(fields);
      if (record) out.push(record);
    }
    return out;
  }

  async lastRecord(session: string): Promise<R | null> {
    const [entry] = await this.redis.xrevrange(this.logKey(session), '+', '-', 'COUNT', 1);
    return entry ? parseEntry<R>(entry[1]) : null;
  }

  async liveSessions(): Promise<string[]> {
    return this.redis.smembers(this.key('live'));
  }

  /**
   * Drops the records `keep` refuses and re-derives each session's place (start, last seq,
   * ended) from what is left. For one writer at a time (maintenance): in cluster mode sessions
   * leave no records behind anyway, their keys expire once they end.
   */
  async compact(keep: (record: R) => boolean): Promise<{ kept: number; dropped: number }> {
    if (this.closed) throw closedError();
    let kept = 0;
    let dropped = 0;
    for (const session of await this.redis.smembers(this.key('sessions'))) {
      const entries = await this.redis.xrange(this.logKey(session), '-', '+');
      const remaining: Array<{ id: string; record: R }> = [];
      const gone: string[] = [];
      for (const [id, fields] of entries) {
        const record = parseEntry<R>(fields);
        if (record && keep(record)) remaining.push({ id, record });
        else gone.push(id);
      }
      kept += remaining.length;
      dropped += gone.length;
      const tx = this.redis.multi();
      if (remaining.length === 0) {
        tx.del(this.logKey(session)).hdel(this.metaKey(session), 'start', 'seq', 'digest', 'ended').srem(this.key('sessions'), session).srem(this.key('live'), session);
      } else {
        if (gone.length > 0) tx.xdel(this.logKey(session), ...gone);
        let start = remaining[0]!.id;
        let ended = false;
        for (const { id, record } of remaining) {
          if (record.seq === 1) {
            start = id;
            ended = false;
          }
          ended ||= this.ends(record);
        }
        const lastRecord = remaining[remaining.length - 1]!.record;
        tx.hset(this.metaKey(session), 'start', start, 'seq', lastRecord.seq, 'ended', ended ? '1' : '0');
        if (ended) tx.srem(this.key('live'), session);
        else tx.sadd(this.key('live'), session);
      }
      await tx.exec();
    }
    return { kept, dropped };
  }

  flush(): Promise<void> {
    return this.last;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.last;
  }

  stats(): JournalStats {
    return { bytes: 0, appended: this.appended, pending: this.pending, policy: 'redis' };
  }

  private key(name: string): string {
    return `${this.prefix}:${name}`;
  }
}

function parseEntry<R extends JournalRecordBase>(fields: string[]): R | null {
  const at = fields.indexOf('r');
  if (at === -1 || at + 1 >= fields.length) return null;
  try {
    const value: unknown = JSON.parse(fields[at + 1]!);
    return isJournalRecord(value) ? (value as R) : null;
  } catch {
    return null;
  }
}
