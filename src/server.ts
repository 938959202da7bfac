/**
 * Assembles the service (actor system, telemetry, HTTP app), listens, and shuts down
 * gracefully: new requests refused, held requests answered 503, exit within 5 s.
 */
import type { FastifyInstance } from 'fastify';
import type { SimulatedClock } from 'xstate';
import { timingOf, type Config } from './config.js';
import { buildApp } from './http/app.js';
import type { AppContext } from './http/context.js';
import { SessionRegistry } from './sessions/registry.js';
import type { Logger } from './telemetry/logger.js';
import { Metrics } from './telemetry/metrics.js';
import { logTransitions, transitionTap, type TransitionListener } from './telemetry/transitions.js';

export interface Service {
  readonly app: FastifyInstance;
  readonly ctx: AppContext;
  readonly url: string;
  /** Answers held requests with 503, stops listening, and resolves when the server is closed. */
  shutdown(): Promise<void>;
}

export interface ServiceOptions {
  readonly clock?: SimulatedClock;
  readonly listen?: boolean;
}

export async function createService(config: Config, logger: Logger, options: ServiceOptions = {}): Promise<Service> {
  const listeners: TransitionListener[] = [logTransitions(logger)];
  const sessions = new SessionRegistry({
    timing: timingOf(config),
    maxSessions: config.maxSessions,
    inspect: transitionTap(listeners),
    ...(options.clock ? { clock: options.clock } : {}),
  });
  const metrics = config.enablePrometheus ? new Metrics(sessions) : null;
  if (metrics) listeners.push(metrics.onTransition);
  const ctx: AppContext = { config, sessions, metrics, startedAt: Date.now(), shuttingDown: false };
  const app = await buildApp(ctx, logger);

  let url = '';
  if (options.listen !== false) {
    url = await app.listen({ host: config.host, port: config.port });
  }

  let closing: Promise<void> | null = null;
  const shutdown = (): Promise<void> => {
    closing ??= (async () => {
      ctx.shuttingDown = true;
      logger.info({ live_sessions: sessions.size }, 'shutting down: answering held requests');
      sessions.closeAll('shutdown');
      await app.close();
      logger.info('stopped');
    })();
    return closing;
  };
  return { app, ctx, url, shutdown };
}
