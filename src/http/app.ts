/**
 * The Fastify app: body parsing, one error handler, one not-found handler, then routes.
 * Listening and shutdown live in server.ts so tests can build the app on any port.
 */
import { randomBytes } from 'node:crypto';
import websocket from '@fastify/websocket';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { openAIChat } from '../protocols/openai-chat.js';
import { ProxyError } from '../protocols/errors.js';
import type { ProtocolAdapter } from '../protocols/adapter.js';
import type { Logger } from '../telemetry/logger.js';
import type { AppContext } from './context.js';
import { registerJsonBody } from './json-body.js';
import { adminRoutes } from './routes/admin.js';
import { chatRoutes } from './routes/chat.js';
import { healthRoutes } from './routes/health.js';
import { modelRoutes } from './routes/models.js';
import { realtimeRoutes } from './routes/realtime.js';
import { sessionRoutes } from './routes/sessions.js';
import { metricsRoutes } from './routes/metrics.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The wire format whose error shape this route answers in. */
    protocol?: ProtocolAdapter;
  }
}

const requestIds = (): (() => string) => {
  const prefix = randomBytes(3).toString('hex');
  let next = 0;
  return () => `${prefix}-${(next++).toString(36)}`;
};

/** Maps whatever was thrown to a contract error. */
export function toProxyError(err: unknown, maxBytes: number): ProxyError {
  if (err instanceof ProxyError) return err;
  const e = err as FastifyError;
  switch (e.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ProxyError('unsupported_media_type', 'The request body must be JSON, sent with Content-Type: application/json.');
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ProxyError('payload_too_large', `The request body is larger than MAX_MESSAGE_BYTES (${maxBytes} bytes).`);
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new ProxyError('invalid_json', 'The request body does not match its Content-Length.');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new ProxyError('invalid_json', 'The request body is empty; send a JSON object.');
  }
  if (e.statusCode === 400) return new ProxyError('invalid_json', e.message);
  return new ProxyError('internal_error', 'The proxy failed to handle this request; see its log.');
}

export function sendError(request: FastifyRequest, reply: FastifyReply, error: ProxyError): FastifyReply {
  const adapter = request.routeOptions.config?.protocol ?? openAIChat;
  return reply.code(error.status).headers(error.headers()).send(adapter.renderError(error));
}

export async function buildApp(ctx: AppContext, logger: Logger): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    // Request lines are written once, by the onResponse hook below.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'request_id' }),
    // No child logger per request (it costs on every turn): lines name their request_id.
    childLoggerFactory: (parent) => parent,
    genReqId: requestIds(),
    bodyLimit: ctx.config.maxMessageBytes,
    return503OnClosing: false,
    // A session id in a path (DELETE /v1/sessions/{id}) may be any valid model: up to 256
    // characters, each up to 9 once percent-encoded. Fastify's default of 100 refused longer ones.
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 256 * 9 },
    // URLs the router cannot take (bad percent-encoding, an id longer than any session's) are
    // answered in the contract's error shape too, not Fastify's own.
    frameworkErrors: (err, request, reply) => {
      const path = request.url.split('?')[0] ?? request.url;
      const why = err.code === 'FST_ERR_MAX_PARAM_LENGTH' ? 'a path segment is longer than any session id' : 'its URL is not valid percent-encoding';
      return sendError(request, reply, new ProxyError('not_found', `There is no route ${request.method} ${path.slice(0, 200)} (${why}).`));
    },
  });

  // First, so that it sees every route and hook defined after it.
  if (ctx.tracing) await app.register(ctx.tracing.fastify.plugin() as never);
  app.decorateRequest('turnLog', null);
  registerJsonBody(app);

  app.addHook('onRequest', (request, reply, done) => {
    if (!ctx.shuttingDown) return done();
    reply.header('connection', 'close');
    sendError(request, reply, new ProxyError('shutting_down', 'The proxy is shutting down; retry shortly.', { retryAfterSeconds: 1 }));
  });

  // While shutting down, no connection is kept alive for another request.
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (ctx.shuttingDown) reply.header('connection', 'close');
    done(null, payload);
  });

  // One log line per request, with what the route learned about its session.
  app.addHook('onResponse', (request, reply, done) => {
    const status = (request.turnLog?.['stream_status'] as number | undefined) ?? reply.statusCode;
    if (logger.isLevelEnabled('info')) {
      logger.info(
        { request_id: request.id, method: request.method, url: request.url, status, ms: Math.round(reply.elapsedTime * 10) / 10, ...request.turnLog },
        'request',
      );
    }
    const protocol = request.turnLog?.['protocol'];
    if (ctx.metrics && typeof protocol === 'string') ctx.metrics.requests.inc({ protocol, status: String(status) });
    ctx.tracing?.forget(request.id);
    const code = request.turnLog?.['error'];
    if (ctx.metrics && typeof code === 'string') ctx.metrics.errors.inc({ code });
    done();
  });

  app.setErrorHandler((err, request, reply) => {
    const error = toProxyError(err, ctx.config.maxMessageBytes);
    if (error.status >= 500 && !(err instanceof ProxyError)) request.log.error({ err, request_id: request.id }, 'unhandled error');
    request.turnLog = { ...request.turnLog, error: error.code };
    return sendError(request, reply, error);
  });

  app.setNotFoundHandler((request, reply) =>
    sendError(request, reply, new ProxyError('not_found', `There is no route ${request.method} ${request.url.split('?')[0]}.`)),
  );

  // Frames over MAX_MESSAGE_BYTES get an error frame; only far larger ones drop the connection.
  await app.register(websocket, { options: { maxPayload: ctx.config.maxMessageBytes + 1024 * 1024 } });
  await app.register(chatRoutes, { ctx });
  await app.register(realtimeRoutes, { ctx });
  await app.register(modelRoutes, { ctx });
  await app.register(sessionRoutes, { ctx });
  await app.register(healthRoutes, { ctx });
  await app.register(adminRoutes, { ctx });
  if (ctx.metrics) await app.register(metricsRoutes, { ctx });
  return app;
}

// OPTIONS is refused too until CORS is configured (then the CORS plugin answers preflights).
const ALL_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

/** Answers 405 (with Allow) for every method a known route does not take. */
export function refuseOtherMethods(app: FastifyInstance, url: string, allowed: readonly string[], protocol: ProtocolAdapter = openAIChat): void {
  const allow = allowed.includes('GET') ? [...allowed, 'HEAD'] : allowed;
  app.route({
    method: ALL_METHODS.filter((m) => !allow.includes(m)),
    url,
    config: { protocol },
    handler: async (request, reply) => {
      reply.header('allow', allow.join(', '));
      return sendError(request, reply, new ProxyError('method_not_allowed', `${request.method} is not allowed on ${url}; use ${allowed.join(' or ')}.`));
    },
  });
}
