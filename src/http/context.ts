/** What routes are given: validated configuration and the shared parts of the service. */
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';
import type { AccessControl } from './access.js';
import type { Journal } from '../journal/journal.js';
import type { SessionRegistry } from '../sessions/registry.js';
import type { Metrics } from '../telemetry/metrics.js';
import type { Tracing } from '../telemetry/tracing.js';
import type { FactStream } from '../sessions/fact-stream.js';
import type { Cluster } from '../cluster/cluster.js';
import type { AuditLog } from '../audit/audit.js';
import type { Events } from '../events/events.js';
import type { Bridges } from '../bridges/bridges.js';

export interface AppContext {
  readonly config: Config;
  readonly sessions: SessionRegistry;
  readonly metrics: Metrics | null;
  readonly journal: Journal;
  readonly tracing: Tracing | null;
  readonly startedAt: number;
  /** The sessions' one stream of facts: a live view (the web console) may subscribe too. */
  readonly facts: FactStream;
  /** Cluster mode (REDIS_URL): who runs each session; null for a single instance. */
  readonly cluster: Cluster | null;
  /** API keys and the admin key. */
  readonly access: AccessControl;
  /** Who did what on the admin routes (GET /admin/audit). */
  readonly audit: AuditLog;
  /** Webhooks: endpoints, the sender and its attempts. */
  readonly events: Events;
  /** Bridges (email, SMS, Discord) when any is configured. */
  readonly bridges: Bridges | null;
  /** Set when the service begins to shut down: new requests are refused. */
  shuttingDown: boolean;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Fields of the request's one log line, filled in by the route as it learns them. */
    turnLog: Record<string, unknown> | null;
  }
}

/** One `T` per service, made by `build` on the first call: the routes that share it get the same one. */
export function perService<T>(build: (app: FastifyInstance, ctx: AppContext) => T): (app: FastifyInstance, ctx: AppContext) => T {
  const made = new WeakMap<AppContext, T>();
  return (app, ctx) => {
    let value = made.get(ctx);
    if (value === undefined) {
      value = build(app, ctx);
      made.set(ctx, value);
    }
    return value;
  };
}
