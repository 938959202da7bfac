/**
 * Who runs each session's actor in cluster mode: one owner per session, fenced.
 *
 * Every instance keeps a heartbeat key in Redis (PREFIX:instance:<id>, with its address) that
 * expires `leaseMs` after its last renewal. A session's owner and its epoch are fields of the
 * session's meta hash. Claiming a session (a Lua script, so it is one step inside Redis)
 * succeeds when nobody owns it or its owner's heartbeat has expired, and bumps the epoch, a
 * cluster-wide counter that never repeats. The epoch is the fencing token: the journal's append
 * script refuses any append whose token is not the session's epoch, so an owner that was paused
 * past its lease (SIGSTOP, a long GC, a partition) and wakes up cannot write once another
 * instance has claimed its sessions, whatever its clock says. The ownership itself is therefore
 * Redis's, not a consensus of the instances': there is none to get wrong.
 *
 * An instance that cannot renew its heartbeat for a whole lease assumes the worst (others may
 * have claimed its sessions) and says so through `onLost`: the composition root drops its
 * actors, which are rebuilt from the journal by whoever needs them next.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { hostname } from 'node:os';
import type { Redis, Result } from 'ioredis';

/**
 * Claim KEYS: meta, epoch counter, live set. ARGV: me, heartbeat key prefix, session cap (0:
 * none). A session with no live incarnation is a new one: refused while the cluster already
 * has its cap of live sessions.
 */
const CLAIM = `
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= '' and owner ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. owner) == 1 then
  return {'owned', owner, redis.call('HGET', KEYS[1], 'epoch') or '0'}
end
local fresh = (not redis.call('HGET', KEYS[1], 'seq')) or redis.call('HGET', KEYS[1], 'ended') == '1'
if fresh and tonumber(ARGV[3]) > 0 and redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[3]) then
  return {'full', '', tostring(redis.call('SCARD', KEYS[3]))}
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'epoch', epoch)
return {'claimed', ARGV[1], tostring(epoch)}
`;

/** Release KEYS: meta. ARGV: me, epoch. Only the holder of the current epoch lets go. */
const RELEASE = `
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] and redis.call('HGET', KEYS[1], 'epoch') == ARGV[2] then
  redis.call('HDEL', KEYS[1], 'owner')
  return 1
end
return 0
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    motiveClaim(meta: string, epochCounter: string, live: string, me: string, heartbeatPrefix: string, cap: number): Result<[string, string, string], Context>;
    motiveRelease(meta: string, me: string, epoch: string): Result<number, Context>;
  }
}

export const defaultInstanceId = (): string => `${hostname()}-${process.pid}`;

export interface OwnershipOptions {
  readonly redis: Redis;
  readonly prefix: string;
  readonly instanceId: string;
  readonly leaseMs: number;
  /** The URL other instances reach this one at. */
  readonly address: string;
  /** The heartbeat could not be renewed for a whole lease: this instance may no longer own anything. */
  readonly onLost?: () => void;
  readonly onWarning?: (message: string, error?: unknown) => void;
}

/** Who owns a session, as Redis says now. */
export interface OwnerInfo {
  readonly owner: string | null;
  readonly epoch: number;
  /** The owner's heartbeat is current. */
  readonly alive: boolean;
  /** Where the owner is reached (null when it is not alive). */
  readonly address: string | null;
}

export type ClaimResult =
  | { readonly claimed: true; readonly epoch: number }
  | { readonly claimed: false; readonly owner: string; readonly epoch: number; readonly address: string | null }
  /** A new session, and the cluster already has its cap of live sessions. */
  | { readonly claimed: false; readonly full: true; readonly live: number };

export class Ownership {
  readonly redis: Redis;
  private readonly prefix: string;
  readonly instanceId: string;
  readonly leaseMs: number;
  /** The URL other instances reach this one at (known once the server listens). */
  address: string;
  /** The epoch this instance holds for each session it owns. */
  private readonly epochs = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;
  private lastBeat = 0;
  private lostSaid = false;

  constructor(private readonly options: OwnershipOptions) {
    this.redis = options.redis;
    this.prefix = options.prefix;
    this.instanceId = options.instanceId;
    this.leaseMs = options.leaseMs;
    this.address = options.address;
    this.redis.defineCommand('motiveClaim', { numberOfKeys: 3, lua: CLAIM });
    this.redis.defineCommand('motiveRelease', { numberOfKeys: 1, lua: RELEASE });
  }

  metaKey(session: string): string {
    return `${this.prefix}:s:${session}:meta`;
  }

  private heartbeatKey(instance: string): string {
    return `${this.prefix}:instance:${instance}`;
  }

  /**
   * The cluster's shared secret (created by the first instance, kept in Redis): requests one
   * instance forwards to another carry it, so that a client cannot pass for an instance.
   */
  token = '';

  /** Reads (or creates) the cluster's token; before the server takes requests. */
  async init(): Promise<void> {
    const key = `${this.prefix}:token`;
    await this.redis.set(key, randomBytes(24).toString('base64url'), 'NX');
    this.token = (await this.redis.get(key)) ?? '';
    if (!this.token) throw new Error('the cluster token could not be read from Redis');
  }

  /** Is `presented` the cluster's token (compared in constant time)? */
  isToken(presented: unknown): boolean {
    if (typeof presented !== 'string' || !this.token || presented.length !== this.token.length) return false;
    return timingSafeEqual(Buffer.from(presented), Buffer.from(this.token));
  }

  /** Beats once (so the instance is known before it serves), then every third of the lease. */
  async start(): Promise<void> {
    await this.beat();
    this.timer = setInterval(() => void this.beat().catch(() => undefined), Math.max(100, Math.floor(this.leaseMs / 3)));
    this.timer.unref();
  }

  /** True while the heartbeat is current: this instance may act as the owner of its sessions. */
  get healthy(): boolean {
    return Date.now() - this.lastBeat < this.leaseMs;
  }

  private async beat(): Promise<void> {
    const started = Date.now();
    // Frozen (SIGSTOP, a long pause) or cut off for a whole lease: the heartbeat key may have
    // expired meanwhile and others may own what this instance had. Let go before anything else.
    if (!this.healthy) this.lose();
    try {
      await this.redis.set(this.heartbeatKey(this.instanceId), JSON.stringify({ address: this.address, since: started }), 'PX', this.leaseMs);
      this.lastBeat = started;
      this.lostSaid = false;
    } catch (error) {
      this.options.onWarning?.(`cluster heartbeat failed: ${error instanceof Error ? error.message : String(error)}`, error);
      if (!this.healthy) this.lose();
      throw error;
    }
  }

  /**
   * The lease may have run out: forget every session this instance owned (their actors are
   * stopped by `onLost`), so that nothing is served from what may be stale. Said once a lapse.
   */
  lose(): void {
    if (this.lostSaid || this.lastBeat === 0) return;
    this.lostSaid = true;
    this.epochs.clear();
    this.options.onLost?.();
  }

  /** The epoch this instance holds for `session`, when it owns it. */
  epochOf(session: string): number | undefined {
    return this.epochs.get(session);
  }

  owns(session: string): boolean {
    return this.epochs.has(session);
  }

  /** Claims `session` for this instance unless a live instance owns it. */
  async claim(session: string, cap = 0): Promise<ClaimResult> {
    const [outcome, owner, epoch] = await this.redis.motiveClaim(this.metaKey(session), `${this.prefix}:epoch`, `${this.prefix}:live`, this.instanceId, `${this.prefix}:instance:`, cap);
    if (outcome === 'full') return { claimed: false, full: true, live: Number(epoch) };
    if (outcome === 'claimed') {
      this.epochs.set(session, Number(epoch));
      return { claimed: true, epoch: Number(epoch) };
    }
    return { claimed: false, owner, epoch: Number(epoch), address: await this.addressOf(owner) };
  }

  /** Forgets `session` here (its actor is gone: closed, fenced out, or handed over). */
  forget(session: string): void {
    this.epochs.delete(session);
  }

  /** Lets go of `session` so that the next instance to need it claims it at once (hand-over). */
  async release(session: string): Promise<void> {
    const epoch = this.epochs.get(session);
    this.epochs.delete(session);
    if (epoch !== undefined) await this.redis.motiveRelease(this.metaKey(session), this.instanceId, String(epoch));
  }

  /** The instance Redis names as `session`'s owner (alive or not), or null. */
  async ownerIdOf(session: string): Promise<string | null> {
    return (await this.redis.hget(this.metaKey(session), 'owner')) || null;
  }

  async ownerOf(session: string): Promise<OwnerInfo> {
    const [owner, epoch] = await this.redis.hmget(this.metaKey(session), 'owner', 'epoch');
    if (!owner) return { owner: null, epoch: Number(epoch ?? 0), alive: false, address: null };
    const address = await this.addressOf(owner);
    return { owner, epoch: Number(epoch ?? 0), alive: address !== null, address };
  }

  /** The address of a live instance; null when its heartbeat has expired. */
  async addressOf(instance: string): Promise<string | null> {
    if (instance === this.instanceId) return this.address;
    const beat = await this.redis.get(this.heartbeatKey(instance));
    if (!beat) return null;
    try {
      return (JSON.parse(beat) as { address?: string }).address ?? null;
    } catch {
      return null;
    }
  }

  /** The instances whose heartbeat is current. */
  async instances(): Promise<Array<{ id: string; address: string | null }>> {
    const out: Array<{ id: string; address: string | null }> = [];
    const pattern = `${this.prefix}:instance:*`;
    let cursor = '0';
    do {
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', pattern, 'COUNT', 200);
      cursor = next;
      for (const key of keys) {
        const id = key.slice(`${this.prefix}:instance:`.length);
        out.push({ id, address: await this.addressOf(id) });
      }
    } while (cursor !== '0');
    return out.sort((a, b) => a.id.localeCompare(b.id));
  }

  /**
   * Graceful stop: lets go of every session and ends the heartbeat, so that the others claim
   * them at once instead of waiting for the lease to run out.
   */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const sessions = [...this.epochs.keys()];
    await Promise.allSettled(sessions.map((session) => this.release(session)));
    await this.redis.del(this.heartbeatKey(this.instanceId)).catch(() => undefined);
  }
}
