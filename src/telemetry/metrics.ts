/** Prometheus metrics (prom-client), served at GET /metrics when ENABLE_PROMETHEUS is on. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { SessionRegistry } from '../sessions/registry.js';
import type { TransitionListener } from './transitions.js';

export class Metrics {
  readonly registry = new Registry();
  readonly requests: Counter<'protocol' | 'status'>;
  readonly waitSeconds: Histogram<'outcome'>;
  private readonly transitions: Counter<'event' | 'state'>;

  constructor(sessions: SessionRegistry) {
    collectDefaultMetrics({ register: this.registry, prefix: 'motiveproxy_' });
    this.requests = new Counter({
      name: 'motiveproxy_requests_total',
      help: 'Chat requests answered, by protocol and HTTP status',
      labelNames: ['protocol', 'status'],
      registers: [this.registry],
    });
    this.waitSeconds = new Histogram({
      name: 'motiveproxy_wait_seconds',
      help: 'How long a request waited for the other side, by outcome',
      labelNames: ['outcome'],
      buckets: [0.001, 0.01, 0.1, 0.5, 1, 5, 15, 30, 60, 120, 300],
      registers: [this.registry],
    });
    this.transitions = new Counter({
      name: 'motiveproxy_session_events_total',
      help: 'Events taken by session actors, by event type and resulting state',
      labelNames: ['event', 'state'],
      registers: [this.registry],
    });
    new Gauge({
      name: 'motiveproxy_sessions',
      help: 'Live sessions by state',
      labelNames: ['state'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const session of sessions.list()) this.inc({ state: session.state });
      },
    });
  }

  readonly onTransition: TransitionListener = (record) => {
    this.transitions.inc({ event: record.event, state: record.state });
  };
}
