/**
 * Assembles the service (actor system, telemetry, HTTP app), listens, and shuts down
 * gracefully: new requests refused, held requests answered 503, exit within 5 s.
 */
import type { FastifyInstance } from 'fastify';
import type { SimulatedClock } from 'xstate';
import { isLoopbackHost, OPTIONS, timingOf, type Config } from './config.js';
import { openAccess } from './auth/identity.js';
import { buildApp } from './http/app.js';
import type { AppContext } from './http/context.js';
import { Journal } from './journal/journal.js';
import { endsSessionRecord, isReadable, type JournalRecord } from './journal/records.js';
import { recoverSessions, type RecoveryReport } from './journal/recovery.js';
import { openJournal, type JournalStore } from './journal/store.js';
import type { Cluster } from './cluster/cluster.js';
import { advertisedUrl, redactRedisUrl } from './cluster/addresses.js';
import { endsSession } from '../machines/session.facts.js';
import { SessionRegistry } from './sessions/registry.js';
import type { Logger } from './telemetry/logger.js';
import type { Metrics } from './telemetry/metrics.js';
import type { Tracing } from './telemetry/tracing.js';
import { FactStream } from './sessions/fact-stream.js';
import { logSteps } from './telemetry/transitions.js';


/**
 * Where a person on this machine opens the console, given the listening URL (whose port is the
 * bound one): the console answers loopback callers only (docs/console.md), so a wildcard host
 * is shown as loopback, and a host that is neither has none (null).
 */
export function consoleUrlOf(host: string, url: string): string | null {
  if (!url) return null;
  const { port } = new URL(url);
  if (isLoopbackHost(host)) return `${url}/`;
  if (host === '0.0.0.0' || host === '') return `http://127.0.0.1:${port}/`;
  if (host === '::') return `http://[::1]:${port}/`;
  return null;
}

/** The listening URL as this machine reaches it: a wildcard host is reached on loopback. */
export function loopbackUrlOf(host: string, url: string): string {
  const { port, protocol } = new URL(url);
  if (host === '0.0.0.0' || host === '') return `${protocol}//127.0.0.1:${port}`;
  if (host === '::') return `${protocol}//[::1]:${port}`;
  return url;
}

export interface Service {
  readonly app: FastifyInstance;
  readonly ctx: AppContext;
  readonly url: string;
  /** The console's URL for a browser on this machine; null when not listening or not reachable from loopback. */
  readonly consoleUrl: string | null;
  /** Answers held requests with 503, stops listening, and resolves when the server is closed. */
  shutdown(): Promise<void>;
}

export interface ServiceOptions {
  readonly clock?: SimulatedClock;
  /** OpenTelemetry, when the process started it (see telemetry/tracing.ts). */
  readonly tracing?: Tracing | null;
  readonly listen?: boolean;
}

export async function createService(config: Config, logger: Logger, options: ServiceOptions = {}): Promise<Service> {
  const tracing = options.tracing ?? null;
  const timing = timingOf(config);
  // Metrics first, so the journal can report its appends to them; they read the sessions lazily.
  let sessions: SessionRegistry | null = null;
  const metrics: Metrics | null = config.enablePrometheus ? new (await import('./telemetry/metrics.js')).Metrics(() => sessions?.list() ?? [], config.maxSessions) : null;
  const ends = (record: JournalRecord) => isReadable(record) && endsSessionRecord(record);
  // Cluster mode: the journal is in Redis, shared by every instance, and each session has one owner.
  const redisModule = config.redisUrl ? await import('./cluster/redis.js') : null;
  const redis = redisModule ? await redisModule.connectRedis(config.redisUrl, logger) : null;
  const ownership = redis
    ? new (await import('./cluster/ownership.js')).Ownership({
        redis,
        prefix: config.redisPrefix,
        instanceId: config.instanceId || (await import('./cluster/ownership.js')).defaultInstanceId(),
        leaseMs: config.clusterLeaseMs,
        address: config.clusterAdvertiseUrl,
        onLost: () => cluster?.lost(),
        onWarning: (message) => logger.warn(message),
      })
    : null;
  await ownership?.init();
  const access = await openAccess(config, logger, redis);
  let cluster: Cluster | null = null;
  const store: JournalStore<JournalRecord> = redis
    ? new (await import('./journal/redis-store.js')).RedisStore<JournalRecord>({ redis, prefix: config.redisPrefix, ends })
    : await openJournal<JournalRecord>(config.journalPath, { fsync: config.journalFsync, ends, onWarning: (message) => logger.warn({ journal: config.journalPath }, message) });
  if (redis && config.journalPath !== OPTIONS.journalPath.default) {
    logger.info({ journal: config.journalPath }, `cluster mode: the journal is in Redis, shared by every instance; JOURNAL_PATH (${config.journalPath}) is not used`);
  }
  if (metrics) metrics.journalPending = () => store.stats().pending;
  const journal = new Journal(store, logger, {
    ...(tracing ? { traceOf: (requestId: string | null) => tracing.traceOf(requestId) } : {}),
    ...(metrics ? { onAppended: (seconds: number) => metrics.journalAppend.observe(seconds) } : {}),
    ...(ownership
      ? { fenceOf: (session: string) => ownership.epochOf(session), onFenced: (session: string) => cluster?.fencedOut(session), compaction: false }
      : {}),
  });
  // The one stream of session facts, and everything that watches the sessions through it.
  const facts = new FactStream(options.clock ? () => options.clock!.now() : Date.now, (err) => logger.error({ err }, 'a subscriber of the session facts failed'));
  // FAULT_INJECTION=crash-before-turn-append (tests only) must see a step before the journal does.
  if (config.faultInjection === 'crash-before-turn-append' || config.faultInjection === 'stall-before-turn-append') {
    facts.subscribe((await import('./sessions/fault-injection.js')).beforeTurnAppend(config.faultInjection, logger));
  }
  facts.subscribe(journal.onStep);
  facts.subscribe(logSteps(logger));
  if (metrics) facts.subscribe(metrics.onStep);
  if (tracing) facts.subscribe(tracing.onStep);
  // Optional parts are loaded only when asked for, so a plain service carries none of them.
  const stately = config.inspect ? await (await import('./telemetry/stately.js')).startStatelyInspection({ host: config.host, port: config.inspectPort, access }) : null;
  if (stately) logger.info({ url: stately.url }, `Stately inspection: open ${stately.url} to watch sessions live (${stately.who})`);
  sessions = new SessionRegistry({
    timing,
    maxSessions: config.maxSessions,
    maxQueuedBytesPerSide: config.maxQueuedBytesPerSide,
    // A store whose appends are durable at once (memory) has nothing for replies to wait for.
    ...(store.durableOnAppend ? {} : { durable: (session: string) => journal.durable(session) }),
    // The actor systems' one inspection tap: the fact stream (and the Stately inspector when on).
    inspect: stately ? (event) => (facts.inspect(event), stately.inspect(event)) : facts.inspect,
    ...(options.clock ? { clock: options.clock } : {}),
  });
  // FAULT_INJECTION: for testing the e2e harness only (src/sessions/fault-injection.ts).
  if (config.faultInjection === 'duplicate-delivery' || config.faultInjection === 'drop-delivery' || config.faultInjection === 'crash-after-delivery-append') {
    (await import('./sessions/fault-injection.js')).installFaultInjection(sessions, config.faultInjection, logger);
  }
  if (ownership) {
    cluster = new (await import('./cluster/cluster.js')).Cluster({ ownership, store, journal, sessions, timing, logger, maxSessions: config.maxSessions, commandsSent: redisModule!.redisCommandsSent, ...(metrics ? { metrics: metrics.enableCluster() } : {}) });
    const running = cluster;
    facts.subscribe((step) => {
      for (const fact of step.facts) if (endsSession(fact)) running.ended(fact.session);
    });
  }
  // The audit trail, and events out: the outbox is the journal, so it is read before recovery
  // compacts it (records of ended sessions whose events are still owed are kept).
  const auditModule = await import('./audit/audit.js');
  const auditStore = redis
    ? new auditModule.RedisAuditStore(redis, config.redisPrefix)
    : config.journalPath === 'memory'
      ? new auditModule.MemoryAuditStore()
      : await new auditModule.FileAuditStore(config.journalPath).open();
  const audit = new auditModule.AuditLog(
    auditStore,
    (err) => logger.error({ err }, 'the audit trail could not record an admin action'),
    (request) => cluster?.clientAddress(request) ?? request.ip,
  );
  const events = await (await import('./events/events.js')).startEvents({
    config,
    logger,
    journal,
    audit,
    metrics,
    redis,
    ...(ownership ? { instanceId: ownership.instanceId, leaseMs: config.clusterLeaseMs } : {}),
  });
  // Bridges (email, SMS, Discord): each off unless configured, and none loaded when off.
  const bridges = await (await import('./bridges/bridges.js')).openBridges({
    config,
    logger,
    metrics,
    redis,
    access,
    ...(ownership ? { instanceId: ownership.instanceId, leaseMs: config.clusterLeaseMs, addressOf: (instance: string) => ownership.addressOf(instance) } : {}),
  });
  // A single instance rebuilds its live sessions on start; in a cluster, sessions are claimed
  // and rebuilt where they are needed next.
  const { rebuilt, report: recovery } = cluster ? { rebuilt: [], report: emptyRecovery() } : await recoverSessions(journal, { timing, now: Date.now() });
  for (const session of rebuilt) sessions.restore(session.id, session.restore);
  journal.recovery = recovery;
  if (recovery.records > 0) {
    const { damaged, ...counts } = recovery;
    logger.info({ journal: config.journalPath, ...counts, damaged: damaged.length }, `journal replayed: ${recovery.restored} sessions restored, ${recovery.dropped} closed or expired`);
  }
  for (const d of recovery.damaged) {
    logger.warn(
      { journal: config.journalPath, session_id: d.session, records: d.records },
      `session '${d.session}' was not restored: ${d.problem}; its readable records are kept in the journal (GET /admin/health lists such sessions)`,
    );
  }
  if (recovery.unreadable > 0) {
    logger.warn({ journal: config.journalPath, unreadable: recovery.unreadable }, `the journal held ${recovery.unreadable} unreadable line(s), now kept in journal.quarantine.jsonl beside it`);
  }
  const registry = sessions;
  const ctx: AppContext = { config, sessions: registry, metrics, journal, tracing, access, audit, events, bridges, facts, cluster, startedAt: Date.now(), shuttingDown: false };
  const app = await buildApp(ctx, logger);

  let url = '';
  if (options.listen !== false) {
    url = await app.listen({ host: config.host, port: config.port });
    if (ownership) {
      ownership.address = config.clusterAdvertiseUrl || advertisedUrl(config.host, url);
      await ownership.start();
      cluster?.startSweeping();
      logger.info({ instance: ownership.instanceId, address: ownership.address, lease_ms: ownership.leaseMs }, `cluster mode: instance '${ownership.instanceId}' joined the cluster at ${redactRedisUrl(config.redisUrl)}`);
    }
    // Bridged sides speak to this service's own /v1/realtime, on loopback when it listens there too.
    await bridges?.start(loopbackUrlOf(config.host, url));
    if (!isLoopbackHost(config.host) && !access.keysRequired) {
      logger.warn(
        { host: config.host },
        `NO API KEYS: listening on ${config.host}, reachable beyond this machine, and anyone who can reach it can join, read and speak in any session whose id they guess. Set API_KEYS (see docs/security.md).`,
      );
    }
  }

  let closing: Promise<void> | null = null;
  const shutdown = (): Promise<void> => {
    closing ??= (async () => {
      ctx.shuttingDown = true;
      logger.info({ live_sessions: registry.size }, 'shutting down: answering held requests');
      registry.closeAll('shutdown');
      // Held requests are answered once the journal has their records; let those answers be
      // written before closing, so that their connections are idle when the server closes.
      await journal.durable().catch(() => undefined);
      await new Promise((resolve) => setImmediate(resolve));
      await bridges?.close();
      await app.close();
      await events.close();
      await journal.close();
      await access.managed?.close();
      await access.tenants?.close();
      await audit.close();
      // Hand-over: the others claim this instance's sessions at once, not after the lease.
      cluster?.stopSweeping();
      await ownership?.stop().catch(() => undefined);
      redis?.disconnect();
      stately?.stop();
      await tracing?.shutdown();
      logger.info('stopped');
    })();
    return closing;
  };
  return { app, ctx, url, consoleUrl: consoleUrlOf(config.host, url), shutdown };
}

function emptyRecovery(): RecoveryReport {
  return { records: 0, restored: 0, dropped: 0, ms: 0, unreadable: 0, damaged: [], otherVersions: 0 };
}
