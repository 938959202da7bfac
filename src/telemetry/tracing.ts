/**
 * OpenTelemetry traces, on when the standard OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set and
 * absent otherwise (then nothing here is loaded or run). Every HTTP request gets a SERVER span
 * (continuing the caller's trace when it sends a W3C `traceparent`); this module adds the
 * session's attributes, one `session.transition` event per chart transition, and links between
 * the request whose message was delivered and the request that received it, so a trace viewer
 * shows who answered whom.
 *
 * Spans are passed explicitly (each request carries its own), never through an ambient
 * context: the SDK runs with a synchronous context manager. On Node 20 the default one
 * (AsyncLocalStorage) turns on promise hooks for the whole process, which costs a held relay
 * more than the spans themselves (docs/performance.md).
 */
import type { Attributes, Context, ContextManager, Span, Tracer } from '@opentelemetry/api';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ConfigError } from '../config.js';
import type { SessionStep } from '../sessions/fact-stream.js';

export function tracingRequested(env: NodeJS.ProcessEnv): boolean {
  return Boolean(env['OTEL_EXPORTER_OTLP_ENDPOINT'] || env['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT']) && env['OTEL_SDK_DISABLED'] !== 'true';
}

type Api = typeof import('@opentelemetry/api');

export const OTLP_PROTOCOLS = ['http/protobuf', 'http/json', 'grpc'] as const;
export type OtlpProtocol = (typeof OTLP_PROTOCOLS)[number];

/** The traces' OTLP protocol, from the standard variables; anything else is a usage error (the SDK would only warn and fall back). */
export function otlpProtocol(env: NodeJS.ProcessEnv): OtlpProtocol {
  for (const name of ['OTEL_EXPORTER_OTLP_TRACES_PROTOCOL', 'OTEL_EXPORTER_OTLP_PROTOCOL']) {
    const value = env[name]?.trim();
    if (!value) continue;
    if ((OTLP_PROTOCOLS as readonly string[]).includes(value)) return value as OtlpProtocol;
    throw new ConfigError(`${name} must be one of ${OTLP_PROTOCOLS.join(', ')} (got ${JSON.stringify(value)})`);
  }
  return 'http/protobuf';
}

/**
 * Context for code that runs synchronously inside `with` (the SDK's own export, which marks
 * itself untraced this way); nothing is carried across awaits or callbacks.
 */
class SynchronousContextManager implements ContextManager {
  private current: Context;

  constructor(private readonly root: Context) {
    this.current = root;
  }

  active(): Context {
    return this.current;
  }

  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(context: Context, fn: F, thisArg?: ThisParameterType<F>, ...args: A): ReturnType<F> {
    const previous = this.current;
    this.current = context;
    try {
      return fn.call(thisArg, ...args);
    } finally {
      this.current = previous;
    }
  }

  bind<T>(_context: Context, target: T): T {
    return target;
  }

  enable(): this {
    return this;
  }

  disable(): this {
    this.current = this.root;
    return this;
  }
}

export class Tracing {
  private readonly spans = new Map<string, Span>();

  private constructor(
    private readonly sdk: { shutdown(): Promise<void> },
    private readonly api: Api,
    private readonly tracer: Tracer,
  ) {}

  /**
   * Starts the OpenTelemetry SDK with the OTLP exporter for the standard
   * OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL (`http/protobuf` by default, as the specification
   * says; `http/json` or `grpc`); the other OTEL_* variables configure it.
   */
  static async start(env: NodeJS.ProcessEnv): Promise<Tracing> {
    const protocol = otlpProtocol(env);
    const [{ NodeSDK }, { OTLPTraceExporter }, api] = await Promise.all([
      import('@opentelemetry/sdk-node'),
      protocol === 'http/json'
        ? import('@opentelemetry/exporter-trace-otlp-http')
        : protocol === 'grpc'
          ? import('@opentelemetry/exporter-trace-otlp-grpc')
          : import('@opentelemetry/exporter-trace-otlp-proto'),
      import('@opentelemetry/api'),
    ]);
    const sdk = new NodeSDK({
      serviceName: env['OTEL_SERVICE_NAME'] ?? 'motive-proxy',
      traceExporter: new OTLPTraceExporter(),
      instrumentations: [],
      contextManager: new SynchronousContextManager(api.ROOT_CONTEXT),
    });
    sdk.start();
    return new Tracing(sdk, api, api.trace.getTracer('motive-proxy'));
  }

  /** Request spans: started when a request arrives, ended when its response is sent or its client leaves. */
  register(app: FastifyInstance): void {
    const { api, tracer } = this;
    app.addHook('onRequest', (request, reply, done) => {
      const parent = request.headers.traceparent ? api.propagation.extract(api.ROOT_CONTEXT, request.headers) : api.ROOT_CONTEXT;
      const route = request.routeOptions.url;
      const url = request.url;
      const query = url.indexOf('?');
      // Built as one literal, then extended: a spread-and-extend object gets a fresh hidden class each time.
      const attributes: Attributes = {
        'http.request.method': request.method,
        'url.path': query === -1 ? url : url.slice(0, query),
        'url.scheme': request.protocol,
        'network.protocol.version': request.raw.httpVersion,
        'client.address': request.ip,
      };
      if (route) attributes['http.route'] = route;
      const agent = request.headers['user-agent'];
      if (agent) attributes['user_agent.original'] = agent;
      const span = tracer.startSpan(route ? `${request.method} ${route}` : request.method, { kind: api.SpanKind.SERVER, attributes }, parent);
      this.spans.set(request.id, span);
      // A held request whose client goes away gets no response: its span ends here instead.
      reply.raw.once('close', () => {
        if (!reply.raw.writableFinished) this.end(request.id, null, 'client_aborted');
      });
      done();
    });
    app.addHook('onResponse', (request, reply, done) => {
      const status = (request.turnLog?.['stream_status'] as number | undefined) ?? reply.statusCode;
      this.end(request.id, status, request.turnLog?.['error']);
      done();
    });
  }

  private end(requestId: string, status: number | null, errorCode: unknown): void {
    const span = this.spans.get(requestId);
    if (!span) return;
    this.spans.delete(requestId);
    if (status !== null) span.setAttribute('http.response.status_code', status);
    if (typeof errorCode === 'string') span.setAttribute('error.type', errorCode);
    if (status === null || status >= 500) span.setStatus({ code: this.api.SpanStatusCode.ERROR });
    span.end();
  }

  /** Names the request's span after its session (before the session sees it), then its side. */
  annotate(request: FastifyRequest, attributes: { sessionId?: string; side?: string; protocol?: string }): void {
    const span = this.spans.get(request.id);
    if (!span) return;
    if (attributes.sessionId !== undefined) span.setAttribute('session.id', attributes.sessionId);
    if (attributes.side !== undefined) span.setAttribute('session.side', attributes.side);
    if (attributes.protocol !== undefined) span.setAttribute('protocol', attributes.protocol);
  }

  traceOf(requestId: string | null): string | null {
    return requestId ? (this.spans.get(requestId)?.spanContext().traceId ?? null) : null;
  }

  /**
   * A subscriber of the fact stream: each step becomes a `session.transition` event on the span
   * of the request that caused it, and a delivery it made links that span with the receiver's.
   */
  readonly onStep = (step: SessionStep): void => {
    const [first] = step.facts;
    const cause = first && 'request' in first ? first.request : null;
    const span = cause ? this.spans.get(cause) : undefined;
    if (!span) return;
    const event = step.facts.length === 1 ? first!.type : step.facts.map((f) => f.type).join(',');
    span.addEvent('session.transition', { event, 'state.from': step.previous, 'state.to': step.state });
    for (const fact of step.facts) {
      if (fact.type !== 'MessageDelivered' || !fact.request || fact.request === cause) continue;
      const receiver = this.spans.get(fact.request);
      if (!receiver) continue;
      span.addLink({ context: receiver.spanContext(), attributes: { 'motiveproxy.link': 'delivered_to' } });
      receiver.addLink({ context: span.spanContext(), attributes: { 'motiveproxy.link': 'answered_by' } });
    }
  };

  shutdown(): Promise<void> {
    return this.sdk.shutdown();
  }
}
