/**
 * OpenTelemetry traces, on when the standard OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set and
 * absent otherwise (then nothing here is loaded or run). A span per HTTP request comes from
 * @fastify/otel; this module adds the session's attributes, one `session.transition` event
 * per chart transition, and links between the request whose message was delivered and the
 * request that received it, so a trace viewer shows who answered whom.
 */
import type { Span } from '@opentelemetry/api';
import type { FastifyRequest } from 'fastify';
import type { InspectionEvent } from 'xstate';
import type { SessionContext } from '../../machines/session.logic.js';

export function tracingRequested(env: NodeJS.ProcessEnv): boolean {
  return Boolean(env['OTEL_EXPORTER_OTLP_ENDPOINT'] || env['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT']) && env['OTEL_SDK_DISABLED'] !== 'true';
}

export class Tracing {
  private readonly spans = new Map<string, Span>();
  private readonly states = new Map<string, string>();
  private current: string | null = null;

  private constructor(
    private readonly sdk: { shutdown(): Promise<void> },
    /** The @fastify/otel instrumentation; its plugin gives every request a span. */
    readonly fastify: { plugin(): (instance: never, opts: never, done: () => void) => void },
  ) {}

  /** Starts the OpenTelemetry SDK with the OTLP/HTTP exporter; OTEL_* variables configure it. */
  static async start(env: NodeJS.ProcessEnv): Promise<Tracing> {
    const [{ NodeSDK }, { OTLPTraceExporter }, otel] = await Promise.all([
      import('@opentelemetry/sdk-node'),
      import('@opentelemetry/exporter-trace-otlp-http'),
      import('@fastify/otel'),
    ]);
    const fastify = new otel.FastifyOtelInstrumentation({ instrumentHooks: false });
    const sdk = new NodeSDK({
      serviceName: env['OTEL_SERVICE_NAME'] ?? 'motive-proxy',
      traceExporter: new OTLPTraceExporter(),
      instrumentations: [fastify],
    });
    sdk.start();
    return new Tracing(sdk, fastify as never);
  }

  /** Names the request's span after its session (before the session sees it), then its side. */
  annotate(request: FastifyRequest, attributes: { sessionId?: string; side?: string; protocol?: string }): void {
    const otel = request.opentelemetry();
    if (!otel.enabled) return;
    if (attributes.sessionId !== undefined) otel.span.setAttribute('session.id', attributes.sessionId);
    if (attributes.side !== undefined) otel.span.setAttribute('session.side', attributes.side);
    if (attributes.protocol !== undefined) otel.span.setAttribute('protocol', attributes.protocol);
    this.spans.set(request.id, otel.span);
  }

  forget(requestId: string): void {
    this.spans.delete(requestId);
  }

  traceOf(requestId: string | null): string | null {
    return requestId ? (this.spans.get(requestId)?.spanContext().traceId ?? null) : null;
  }

  /** Part of the actor system's inspection tap. */
  readonly tap = (inspection: InspectionEvent): void => {
    if (inspection.type !== '@xstate.event' && inspection.type !== '@xstate.snapshot' && inspection.type !== '@xstate.action') return;
    const context = (inspection.actorRef.getSnapshot() as { context?: SessionContext } | undefined)?.context;
    if (!context) return;
    if (inspection.type === '@xstate.event') {
      const event = inspection.event as { type: string; requestId?: string; turn?: { requestId: string } };
      this.current = event.turn?.requestId ?? event.requestId ?? null;
      return;
    }
    if (inspection.type === '@xstate.snapshot') {
      const to = String((inspection.snapshot as { value?: unknown }).value);
      const from = this.states.get(context.sessionId) ?? 'EMPTY';
      if (to === 'CLOSED') this.states.delete(context.sessionId);
      else this.states.set(context.sessionId, to);
      const span = this.current ? this.spans.get(this.current) : undefined;
      span?.addEvent('session.transition', { 'session.id': context.sessionId, event: inspection.event.type, 'state.from': from, 'state.to': to });
      return;
    }
    if (inspection.type === '@xstate.action') {
      const action = inspection.action as { type: string; params?: { event?: { type: string; requestId: string } } };
      const emitted = action.type === 'xstate.emit' ? action.params?.event : undefined;
      if (emitted?.type !== 'reply' || !this.current || this.current === emitted.requestId) return;
      const sender = this.spans.get(this.current);
      const receiver = this.spans.get(emitted.requestId);
      if (!sender || !receiver) return;
      sender.addLink({ context: receiver.spanContext(), attributes: { 'motiveproxy.link': 'delivered_to' } });
      receiver.addLink({ context: sender.spanContext(), attributes: { 'motiveproxy.link': 'answered_by' } });
    }
  };

  shutdown(): Promise<void> {
    return this.sdk.shutdown();
  }
}
