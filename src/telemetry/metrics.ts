/** Prometheus metrics (prom-client), served at GET /metrics when ENABLE_PROMETHEUS is on. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { SessionStep } from '../sessions/fact-stream.js';

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

  /** The journal's records not yet durable, read at each scrape (set once the journal exists). */
  journalPending: () => number = () => 0;

  /** `sessions` lists the live sessions when metrics are scraped; `maxSessions` is MAX_SESSIONS. */
  constructor(sessions: () => Iterable<ScrapedSession>, maxSessions = 0) {
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
    this.timeouts = new Counter({ name: 'motiveproxy_timeouts_total', help: 'Waits that ran out, by kind (handshake, turn, stream)', labelNames: ['kind'], registers });
    this.errors = new Counter({ name: 'motiveproxy_errors_total', help: 'Error responses, by contract error code', labelNames: ['code'], registers });
    this.journalAppend = new Histogram({
      name: 'motiveproxy_journal_append_seconds',
      help: 'From a journal append to the record being as durable as JOURNAL_FSYNC promises',
      buckets: [0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1],
      registers,
    });
    this.transitions = new Counter({
      name: 'motiveproxy_session_events_total',
      help: 'Session facts, by fact type and the state the session reached',
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
        for (const session of sessions()) this.inc({ state: session.state });
      },
    });
    new Gauge({
      name: 'motiveproxy_held_requests',
      help: 'Requests held open now, waiting for the other side (each is an open connection)',
      registers,
      collect() {
        let held = 0;
        for (const session of sessions()) held += (session.context.sides.A.held ? 1 : 0) + (session.context.sides.B.held ? 1 : 0);
        this.set(held);
      },
    });
    new Gauge({ name: 'motiveproxy_max_sessions', help: 'MAX_SESSIONS: live sessions this instance takes at most', registers }).set(maxSessions);
    const journalPending = () => this.journalPending();
    new Gauge({
      name: 'motiveproxy_journal_pending_records',
      help: 'Journal records appended but not yet as durable as JOURNAL_FSYNC promises (the journal lag)',
      registers,
      collect() {
        this.set(journalPending());
      },
    });
  }

  /** The webhook sender's metrics: deliveries by outcome, their time, what waits, endpoints disabled. */
  enableWebhooks(pending: () => number, disabled: () => number): (outcome: string, seconds: number) => void {
    const registers = [this.registry];
    const attempts = new Counter({
      name: 'motiveproxy_webhook_attempts_total',
      help: 'Webhook delivery attempts, by outcome (delivered, failed, gave_up, dropped)',
      labelNames: ['outcome'],
      registers,
    });
    for (const outcome of ['delivered', 'failed', 'gave_up', 'dropped']) attempts.inc({ outcome }, 0);
    const time = new Histogram({ name: 'motiveproxy_webhook_attempt_seconds', help: 'How long a webhook receiver took to answer an attempt', buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30], registers });
    new Gauge({
      name: 'motiveproxy_webhook_pending_events',
      help: 'Events owed to webhook endpoints and not yet delivered (on the instance that sends them)',
      registers,
      collect() {
        this.set(pending());
      },
    });
    new Gauge({
      name: 'motiveproxy_webhook_endpoints_disabled',
      help: 'Webhook endpoints disabled (by an admin, for answering 410, or for failing too long)',
      registers,
      collect() {
        this.set(disabled());
      },
    });
    return (outcome, seconds) => {
      attempts.inc({ outcome });
      time.observe(seconds);
    };
  }

  /** Events the brokers confirmed, by broker. */
  enableBrokers(): (broker: string) => void {
    const published = new Counter({ name: 'motiveproxy_broker_events_total', help: 'Events a broker confirmed (NATS JetStream PubAck, AMQP publisher confirm), by broker', labelNames: ['broker'], registers: [this.registry] });
    return (broker) => published.inc({ broker });
  }

  /** The bridges' metrics (registered only when a bridge is configured). */
  enableBridges(health: () => ReadonlyArray<{ readonly bridge: string; readonly connected: boolean; readonly queueDepth: number }>): { message(bridge: string, direction: 'in' | 'out', outcome: string): void } {
    const registers = [this.registry];
    const messages = new Counter({
      name: 'motiveproxy_bridge_messages_total',
      help: 'Bridge messages: in (turn, duplicate, refused_<code>, ignored_<reason>) and out (sent, retried, failed), by bridge',
      labelNames: ['bridge', 'direction', 'outcome'],
      registers,
    });
    new Gauge({
      name: 'motiveproxy_bridge_queue_depth',
      help: 'Deliveries a bridge owes (queued, not yet accepted by its service), by bridge',
      labelNames: ['bridge'],
      registers,
      collect() {
        for (const h of health()) this.set({ bridge: h.bridge }, h.queueDepth);
      },
    });
    new Gauge({
      name: 'motiveproxy_bridge_connected',
      help: "1 when a bridge is connected to its service (IMAP IDLE, the Discord gateway; Twilio: configured), by bridge",
      labelNames: ['bridge'],
      registers,
      collect() {
        for (const h of health()) this.set({ bridge: h.bridge }, h.connected ? 1 : 0);
      },
    });
    return { message: (bridge, direction, outcome) => messages.inc({ bridge, direction, outcome }) };
  }

  /** Cluster mode's own metrics (registered only in cluster mode). */
  enableCluster(): ClusterMetrics {
    const registers = [this.registry];
    const takeovers = new Counter({ name: 'motiveproxy_cluster_takeovers_total', help: 'Sessions this instance claimed and rebuilt from the journal', registers });
    const fenced = new Counter({ name: 'motiveproxy_cluster_fenced_appends_total', help: "Appends refused because another instance had claimed the session (this one's actor stopped)", registers });
    const rebuild = new Histogram({
      name: 'motiveproxy_cluster_replay_seconds',
      help: "Claiming a session: reading its journal from Redis and replaying it through the chart's logic",
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      registers,
    });
    const forwards = new Histogram({
      name: 'motiveproxy_cluster_forward_seconds',
      help: 'Requests forwarded to the instance that runs their session, until its answer ended (a held request: its wait included), by outcome',
      labelNames: ['outcome'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 300],
      registers,
    });
    return {
      takeover: (seconds) => (takeovers.inc(), rebuild.observe(seconds)),
      fenced: () => fenced.inc(),
      forwarded: (seconds, outcome) => forwards.observe({ outcome }, seconds),
    };
  }

  /** Every session metric is counted here, from the fact stream, and nowhere else. */
  readonly onStep = (step: SessionStep): void => {
    for (const fact of step.facts) {
      this.transitions.inc({ event: fact.type, state: step.state });
      switch (fact.type) {
        case 'SideConnected':
        case 'MessageSent':
          this.messages.inc({ protocol: fact.turn.protocol ?? 'unknown', direction: 'in' });
          break;
        case 'MessageDelivered': {
          this.messages.inc({ protocol: step.context.sides[fact.side].protocol ?? 'unknown', direction: 'out' });
          // A's first delivery answers its handshake.
          (fact.side === 'A' && fact.delivery === 0 ? this.handshakeTime : this.turnLatency).observe(fact.waitedMs);
          break;
        }
        case 'TimedOut':
          this.timeouts.inc({ kind: fact.timer ?? 'turn' });
          break;
        default:
          break;
      }
    }
  };
}

/** What a scrape reads of a live session. */
export interface ScrapedSession {
  readonly state: string;
  readonly context: { readonly sides: Readonly<Record<'A' | 'B', { readonly held: unknown }>> };
}

/** What cluster mode reports to the metrics. */
export interface ClusterMetrics {
  /** A session claimed and rebuilt, in `seconds`. */
  takeover(seconds: number): void;
  fenced(): void;
  /** A forward ended: `answered` by the owner, `recovered` from the journal, or `failed`. */
  forwarded(seconds: number, outcome: 'answered' | 'recovered' | 'failed'): void;
}
