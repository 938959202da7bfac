/**
 * Cluster mode's composition: which instance serves a session's request, claiming and
 * rebuilding sessions nobody runs, and letting go of them.
 *
 * A request for a session this instance owns is served here. A session nobody owns (or whose
 * owner's heartbeat expired) is claimed, and its actor is rebuilt from its journal in Redis
 * through the chart's pure logic, the same path as recovery on start. A session a live
 * instance owns is that instance's: the request is forwarded to it (src/cluster/forward.ts).
 */
import { sessionName, displayId } from '../auth/tenants.js';
import { isReadable, type JournalRecord } from '../journal/records.js';
import { rebuildSession } from '../journal/recovery.js';
import type { Journal } from '../journal/journal.js';
import type { JournalStore } from '../journal/store.js';
import { ProxyError } from '../protocols/errors.js';
import type { SessionRegistry } from '../sessions/registry.js';
import type { Logger } from '../telemetry/logger.js';
import type { ClusterMetrics } from '../telemetry/metrics.js';
import type { SessionTiming } from '../../machines/session.logic.js';
import type { FastifyRequest } from 'fastify';
import type { FastifyReply } from 'fastify';
import type { Redis } from 'ioredis';
import { CLUSTER_TOKEN, FORWARDED_BY, FORWARDED_FOR, forward, forwardedBy, type ForwardOptions, type OwnerWatch } from './forward.js';
import type { Ownership } from './ownership.js';

export type Route = { readonly kind: 'local' } | { readonly kind: 'remote'; readonly owner: string; readonly address: string };

export interface ClusterOptions {
  readonly ownership: Ownership;
  readonly store: JournalStore<JournalRecord>;
  readonly journal: Journal;
  readonly sessions: SessionRegistry;
  readonly timing: SessionTiming;
  readonly logger: Logger;
  readonly metrics?: ClusterMetrics;
  /** MAX_SESSIONS, cluster-wide: a new session is refused while this many are live in Redis. */
  readonly maxSessions?: number;
  /** Commands this process has sent to Redis (for /health and the benchmark). */
  readonly commandsSent?: () => number;
}

export class Cluster {
  private readonly claiming = new Map<string, Promise<Route>>();
  /** Claims that took a session from another instance, and appends refused as fenced, since start. */
  takeovers = 0;
  fenced = 0;

  constructor(private readonly options: ClusterOptions) {}

  /** The cluster's Redis connection (shared with the rate limits' store). */
  get redis(): Redis {
    return this.options.ownership.redis;
  }

  get ownership(): Ownership {
    return this.options.ownership;
  }

  /** Commands sent to Redis since start. */
  get redisCommands(): number {
    return this.options.commandsSent?.() ?? 0;
  }

  get instanceId(): string {
    return this.options.ownership.instanceId;
  }

  /**
   * Where `sessionId`'s requests are served now. `forwarded`: the request already came from
   * another instance, which took this one for the owner; it is not sent on again (no loops).
   */
  async route(sessionId: string, forwarded = false): Promise<Route> {
    const { ownership } = this.options;
    if (!ownership.healthy) {
      // No heartbeat for a whole lease (Redis away, or this process was frozen): what it owned
      // may be another's now, so it lets go before serving anything.
      ownership.lose();
      throw unavailable('this instance has had no heartbeat to Redis for a whole lease');
    }
    if (ownership.owns(sessionId)) return { kind: 'local' };
    // Another instance ran it a moment ago: forward without asking Redis again (a stale answer
    // is safe: that instance claims it back or says `session_moved`, and a failed forward forgets it).
    const known = this.remote.get(sessionId);
    if (known && known.until > Date.now() && !forwarded) return known.route;
    let claim = this.claiming.get(sessionId);
    if (!claim) {
      claim = this.claim(sessionId).finally(() => this.claiming.delete(sessionId));
      this.claiming.set(sessionId, claim);
    }
    const route = await claim;
    if (route.kind === 'remote') this.remember(sessionId, route);
    if (route.kind === 'remote' && forwarded) {
      throw new ProxyError('session_moved', `Session '${sessionName(sessionId)}' is run by instance '${route.owner}' now. Retry the same request; nothing is lost.`, { retryAfterSeconds: 1 });
    }
    return route;
  }

  /** Where sessions another instance runs were found, for a short while (half a lease, at most a second). */
  private readonly remote = new Map<string, { route: Extract<Route, { kind: 'remote' }>; until: number }>();

  private remember(sessionId: string, route: Extract<Route, { kind: 'remote' }>): void {
    const now = Date.now();
    if (this.remote.size >= 10_000) for (const [id, entry] of this.remote) if (entry.until <= now) this.remote.delete(id);
    this.remote.set(sessionId, { route, until: now + Math.min(1_000, this.options.ownership.leaseMs / 2) });
  }

  private async claim(sessionId: string): Promise<Route> {
    const { ownership, sessions, journal, store, logger } = this.options;
    let claim;
    try {
      claim = await ownership.claim(sessionId, this.options.maxSessions ?? 0);
    } catch (error) {
      throw unavailable(`Redis did not answer (${error instanceof Error ? error.message : String(error)})`);
    }
    if (!claim.claimed) {
      if ('full' in claim) {
        throw new ProxyError('max_sessions', `The cluster holds its maximum of ${this.options.maxSessions} live sessions; session '${sessionName(sessionId)}' cannot start now.`, { retryAfterSeconds: 1 });
      }
      if (claim.address) return { kind: 'remote', owner: claim.owner, address: claim.address };
      throw new ProxyError('session_moved', `Session '${sessionName(sessionId)}' is changing owner. Retry the same request shortly; nothing is lost.`, { retryAfterSeconds: 1 });
    }
    // An actor left here from before another instance claimed the session is stale.
    sessions.evict(sessionId);
    journal.forget(sessionId);
    const started = performance.now();
    let records: JournalRecord[];
    try {
      records = (await store.readSession(sessionId)).filter(isReadable);
    } catch (error) {
      ownership.forget(sessionId);
      throw unavailable(`Redis did not answer (${error instanceof Error ? error.message : String(error)})`);
    }
    const outcome = rebuildSession(journal, sessionId, records, { timing: this.options.timing, now: Date.now() });
    if (outcome.kind === 'rebuilt') {
      sessions.restore(sessionId, outcome.session.restore);
      this.takeovers++;
      const seconds = (performance.now() - started) / 1000;
      this.options.metrics?.takeover(seconds);
      logger.info({ session_id: sessionId, epoch: claim.epoch, records: records.length, rebuild_ms: Math.round(seconds * 1000) }, `session '${displayId(sessionId)}' claimed and rebuilt from its journal`);
    } else if (outcome.kind === 'damaged') {
      logger.warn({ session_id: sessionId, records: outcome.damage.records }, `session '${displayId(sessionId)}' was not rebuilt: ${outcome.damage.problem}; a new request starts it anew`);
    }
    return { kind: 'local' };
  }

  /**
   * Asks every other live instance the same GET (path, query and credentials) for its own part
   * of a cluster-wide answer (lists of sessions); an instance that does not answer within two
   * seconds is left out. The answers are parsed JSON.
   */
  async askOthers<T>(request: FastifyRequest, path: string = request.url): Promise<T[]> {
    const others = (await this.options.ownership.instances().catch(() => [])).filter((i) => i.id !== this.instanceId && i.address);
    const headers: Record<string, string> = { [FORWARDED_BY]: this.instanceId, [CLUSTER_TOKEN]: this.options.ownership.token, [FORWARDED_FOR]: request.ip };
    for (const name of ['authorization', 'x-api-key', 'api-key', 'x-goog-api-key', 'anthropic-version']) {
      const value = request.headers[name];
      if (typeof value === 'string') headers[name] = value;
    }
    const answers = await Promise.all(
      others.map((instance) =>
        fetch(new URL(path, instance.address!), { headers, signal: AbortSignal.timeout(2000) })
          .then((res) => (res.ok ? (res.json() as Promise<T>) : null))
          .catch(() => null),
      ),
    );
    return answers.filter((a): a is Awaited<T> & T => a !== null);
  }

  /** A forward to `owner` failed: ask Redis again for its sessions. */
  private forgetRoutesTo(owner: string): void {
    for (const [id, entry] of this.remote) if (entry.route.owner === owner) this.remote.delete(id);
  }

  /** What the journal says request `requestId` of `sessionId` was given, if anything. */
  async deliveryFor(sessionId: string, requestId: string): Promise<{ side: 'A' | 'B'; content: string; delivery: number } | null> {
    const records = await this.options.store.readSession(sessionId);
    for (let i = records.length - 1; i >= 0; i--) {
      const record = records[i]!;
      if (record.v === 2 && record.type === 'MessageDelivered' && record.request === requestId) {
        return { side: record.side, content: record.content, delivery: record.delivery };
      }
    }
    return null;
  }

  /** Did another instance of this cluster forward `request` (it carries the cluster's token)? */
  isForwarded(request: FastifyRequest): boolean {
    return forwardedBy(request, (token) => this.options.ownership.isToken(token)) !== null;
  }

  /** The client's address: the one the first instance saw, for a request another instance forwarded. */
  clientAddress(request: FastifyRequest): string {
    const relayed = request.headers[FORWARDED_FOR];
    return typeof relayed === 'string' && relayed !== '' && this.isForwarded(request) ? relayed : request.ip;
  }

  /** Passes `request` to the instance that runs its session, and its answer back. */
  async forwardTo(request: FastifyRequest, reply: FastifyReply, body: unknown, to: { readonly owner: string; readonly address: string }, recover?: ForwardOptions['recover']): Promise<unknown> {
    const started = performance.now();
    const ended: { outcome: 'answered' | 'recovered' | 'failed' } = { outcome: 'failed' };
    const recovering = recover
      ? async () => {
          const answer = await recover();
          if (answer) ended.outcome = 'recovered';
          return answer;
        }
      : undefined;
    try {
      const result = await forward(request, reply, body, to.address, {
        self: this.instanceId,
        token: this.options.ownership.token,
        watch: this.watch(to.owner),
        ...(recovering ? { recover: recovering } : {}),
      });
      if (ended.outcome === 'recovered') this.forgetRoutesTo(to.owner);
      else ended.outcome = 'answered';
      return result;
    } catch (error) {
      this.forgetRoutesTo(to.owner);
      throw error;
    } finally {
      this.options.metrics?.forwarded((performance.now() - started) / 1000, ended.outcome);
    }
  }

  /** How a forward to `owner` notices that it died or froze: its heartbeat, checked twice a lease. */
  watch(owner: string): OwnerWatch {
    const { ownership } = this.options;
    return { alive: async () => (await ownership.addressOf(owner)) !== null, everyMs: Math.max(100, Math.floor(ownership.leaseMs / 2)) };
  }

  /** An append of `sessionId` was refused as fenced: another instance claimed it; stop here. */
  fencedOut(sessionId: string): void {
    this.fenced++;
    this.options.metrics?.fenced();
    this.options.ownership.forget(sessionId);
    this.options.sessions.evict(sessionId);
  }

  /** The heartbeat lapsed for a whole lease: others may have claimed anything of ours. */
  lost(): void {
    const ids = [...this.options.sessions.ids()];
    this.options.logger.error({ sessions: ids.length }, 'cluster: no heartbeat to Redis for a whole lease; stopping every session here (they are rebuilt from the journal where they are needed next)');
    for (const id of ids) {
      this.options.sessions.evict(id);
      this.options.journal.forget(id);
    }
  }

  /**
   * Sessions nobody runs (their owner died) still expire: now and then each instance looks at
   * the live sessions whose owner is gone, and one whose last record is older than the TTL is
   * claimed and ended (SessionExpired), which removes its keys. Claims are atomic, so several
   * instances sweeping at once end each session once.
   */
  startSweeping(everyMs = Math.min(60_000, Math.max(1_000, Math.floor(this.options.timing.sessionTtlMs / 4)))): void {
    this.sweeper = setInterval(() => void this.sweep().catch(() => undefined), everyMs);
    this.sweeper.unref();
  }

  stopSweeping(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = null;
  }

  private sweeper: NodeJS.Timeout | null = null;

  /** One sweep; returns the sessions it ended. */
  async sweep(now = Date.now()): Promise<string[]> {
    const { ownership, store, journal, logger } = this.options;
    if (!ownership.healthy) return [];
    const ended: string[] = [];
    // Whether each owner is alive, asked once a sweep (its sessions are many, its heartbeat one).
    const alive = new Map<string, boolean>();
    for (const id of await store.liveSessions()) {
      if (ownership.owns(id)) continue;
      const owner = await ownership.ownerIdOf(id);
      if (owner !== null) {
        if (!alive.has(owner)) alive.set(owner, (await ownership.addressOf(owner)) !== null);
        if (alive.get(owner)) continue;
      }
      const last = store.lastRecord ? await store.lastRecord(id) : (await store.readSession(id)).at(-1);
      if (!last || typeof last.at !== 'number' || now - last.at < this.options.timing.sessionTtlMs) continue;
      const claim = await ownership.claim(id);
      if (!claim.claimed) continue;
      journal.resume(id, last.seq);
      journal.append({ type: 'SessionExpired', session: id, at: now });
      await journal.durable(id).catch(() => undefined);
      journal.forget(id);
      await ownership.release(id).catch(() => undefined);
      ended.push(id);
      logger.info({ session_id: id, epoch: claim.epoch }, `session '${displayId(id)}' expired: nobody ran it since its owner went away, and its TTL has run out`);
    }
    return ended;
  }

  /** A session ended here: its next incarnation may start on any instance. */
  ended(sessionId: string): void {
    void this.options.ownership.release(sessionId).catch(() => undefined);
  }
}

function unavailable(why: string): ProxyError {
  return new ProxyError('cluster_unavailable', `The cluster's Redis cannot be reached: ${why}. Retry shortly; nothing is lost.`, { retryAfterSeconds: 1 });
}
