/** Prometheus metrics (prom-client), served at GET /metrics when ENABLE_PROMETHEUS is on. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { SessionRegistry } from '../sessions/registry.js';
import type { TransitionListener } from './transitions.js';

const MS_BUCKETS = [1, 5, 10, 50, 100, 500, 1_000, 5_000, 15_000, 30_000, 60_000, 300_000];

export class Metrics {
  readonly registry = new Registry();
  readonly requests: Counter<'protocol' | 'status'>;
  /** Messages in from clients and deliveries out to them. */
  readonly messages: Counter<'protocol' | 'direction'>;
  readonly handshakeTime: Histogram;
  readonly turnLatency: Histogram;
  readonly timeouts: Counter<'kind'>;
  readonly errors: Counter<'code'>;
  readonly journalAppend: Histogram;
  private readonly transitions: Counter<'event' | 'state'>;

  constructor(sessions: SessionRegistry) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'motiveproxy_' });
    this.requests = new Counter({ name: 'motiveproxy_requests_total', help: 'Chat requests answered, by protocol and HTTP status', labelNames: ['protocol', 'status'], registers });
    this.messages = new Counter({
      name: 'motiveproxy_messages_total',
      help: 'Messages by protocol and direction: in (new turns received) and out (deliveries written)',
      labelNames: ['protocol', 'direction'],
      registers,
    });
    this.handshakeTime = new Histogram({ name: 'motiveproxy_handshake_time_ms', help: "How long side A's handshake waited for its answer", buckets: MS_BUCKETS, registers });
    this.turnLatency = new Histogram({ name: 'motiveproxy_turn_latency_ms', help: 'How long a turn waited for the other side’s answer', buckets: MS_BUCKETS, registers });
    this.timeouts = new Counter({ name: 'motiveproxy_timeouts_total', help: 'Waits that ran out, by kind (handshake, turn)', labelNames: ['kind'], registers });
    this.errors = new Counter({ name: 'motiveproxy_errors_total', help: 'Error responses, by contract error code', labelNames: ['code'], registers });
    this.journalAppend = new Histogram({
      name: 'motiveproxy_journal_append_seconds',
      help: 'From a journal append to the record being as durable as JOURNAL_FSYNC promises',
      buckets: [0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1],
      registers,
    });
    this.transitions = new Counter({
      name: 'motiveproxy_session_events_total',
      help: 'Events taken by session actors, by event type and resulting state',
      labelNames: ['event', 'state'],
      registers,
    });
    new Gauge({
      name: 'motiveproxy_sessions_active',
      help: 'Live sessions by state',
      labelNames: ['state'],
      registers,
      collect() {
        this.reset();
        for (const session of sessions.list()) this.inc({ state: session.state });
      },
    });
  }

  readonly onTransition: TransitionListener = (record) => {
    this.transitions.inc({ event: record.event.startsWith('xstate.after') ? 'TTL_EXPIRED' : record.event, state: record.state });
  };
}
