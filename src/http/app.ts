/**
 * The Fastify app: body parsing, one error handler, one not-found handler, then routes.
 * Listening and shutdown live in server.ts so tests can build the app on any port.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import cors from '@fastify/cors';
import rateLimit from '@fastify/rate-limit';
import underPressure from '@fastify/under-pressure';
import websocket from '@fastify/websocket';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { ProxyError } from '../protocols/errors.js';
import type { Logger } from '../telemetry/logger.js';
import { identifyClient, loggableUrl, type Client } from './access.js';
import type { AppContext } from './context.js';
import { answerOnSocket, clientErrorHandler } from './client-errors.js';
import { protocolOfUrl, sendError, toProxyError } from './errors.js';
import { registerJsonBody } from './json-body.js';
import { lingerAfterAnswer } from './linger.js';
import { keyRoutes } from './routes/keys.js';
import { tenantRoutes } from './routes/tenants.js';
import { packageVersion, registerOpenApi } from './openapi.js';
import { auditRoutes } from './routes/audit.js';
import { webhookRoutes } from './routes/webhooks.js';
import { bridgeRoutes } from './routes/bridges.js';
import { createKeyLimits, rateHeaders, requestsAreLimited } from './key-limits.js';
import { adminRoutes } from './routes/admin.js';
import { chatRoutes } from './routes/chat.js';
import { consoleRoutes } from './routes/console.js';
import { healthRoutes } from './routes/health.js';
import { modelRoutes } from './routes/models.js';
import { compatRoutes } from './routes/compat.js';
import { realtimeRoutes } from './routes/realtime.js';
import { sessionRoutes } from './routes/sessions.js';
import { CLUSTER_TOKEN, FORWARDED_ID } from '../cluster/forward.js';
import { metricsRoutes } from './routes/metrics.js';


const requestIds = (ctx: AppContext): ((raw: IncomingMessage) => string) => {
  const prefix = randomBytes(3).toString('hex');
  let next = 0;
  const cluster = ctx.cluster;
  return (raw) => {
    // Cluster mode: a request another instance forwarded keeps the id that instance gave it, so
    // that the journal names it alike wherever it is looked up (src/cluster/forward.ts).
    if (cluster) {
      const given = raw.headers[FORWARDED_ID];
      if (typeof given === 'string' && /^[A-Za-z0-9_-]{1,64}$/.test(given) && cluster.ownership.isToken(raw.headers[CLUSTER_TOKEN])) return given;
    }
    return `${prefix}-${(next++).toString(36)}`;
  };
};

export async function buildApp(ctx: AppContext, logger: Logger): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    // Request lines are written once, by the onResponse hook below.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'request_id' }),
    // No child logger per request (it costs on every turn): lines name their request_id.
    childLoggerFactory: (parent) => parent,
    genReqId: requestIds(ctx),
    bodyLimit: ctx.config.maxMessageBytes,
    return503OnClosing: false,
    clientErrorHandler: clientErrorHandler(logger),
    // Slow clients (slowloris): a request's headers, and then all of it, must arrive in time.
    requestTimeout: ctx.config.bodyTimeoutSeconds * 1000,
    http: {
      // Node requires the headers' timeout to be within the whole request's.
      headersTimeout: Math.min(ctx.config.headersTimeoutSeconds, ctx.config.bodyTimeoutSeconds) * 1000,
      // How often Node looks for connections past those timeouts (its default is 30 s).
      connectionsCheckingInterval: Math.min(1000, (ctx.config.headersTimeoutSeconds * 1000) / 2),
    },
    // X-Forwarded-For is believed only from the proxies TRUST_PROXY names.
    ...(ctx.config.trustProxy ? { trustProxy: ctx.config.trustProxy.split(',').map((p) => p.trim()).filter(Boolean) } : {}),
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

  // First, so that every request's span covers all of its hooks.
  ctx.tracing?.register(app);
  app.decorateRequest('turnLog', null);
  app.decorateRequest('client', null as unknown as Client);
  registerJsonBody(app);
  // Before any hook that may answer a request: the plugin marks upgrade requests, so that one
  // refused with an HTTP error has its socket closed. Frames over MAX_MESSAGE_BYTES get an
  // error frame; only far larger ones drop the connection.
  await app.register(websocket, { options: { maxPayload: ctx.config.maxMessageBytes + 1024 * 1024 } });

  // Browsers: preflights for the headers the official SDKs send (the requested headers are
  // reflected, which covers the X-Stainless-* family), and the headers they read exposed.
  if (ctx.config.corsOrigins) {
    const origins = ctx.config.corsOrigins.split(',').map((o) => o.trim()).filter(Boolean);
    await app.register(cors, {
      origin: origins.includes('*') ? '*' : origins,
      methods: ['GET', 'HEAD', 'POST', 'DELETE'],
      exposedHeaders: ['retry-after', 'x-request-id', 'request-id', 'x-should-retry', 'x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset'],
      maxAge: 600,
    });
  }

  app.addHook('onRequest', (request, reply, done) => {
    if (!ctx.shuttingDown) return done();
    reply.header('connection', 'close');
    sendError(request, reply, new ProxyError('shutting_down', 'The proxy is shutting down; retry shortly.', { retryAfterSeconds: 1 }));
  });

  // API keys: who is calling (request.client), 401 without a valid key where one is needed.
  app.addHook('onRequest', identifyClient(ctx.access, sendError));

  // Overload: new requests get 503 with Retry-After while the event loop lags or memory is high.
  if (ctx.config.maxEventLoopDelayMs > 0 || ctx.config.maxRssBytes > 0) {
    await app.register(underPressure, {
      maxEventLoopDelay: ctx.config.maxEventLoopDelayMs,
      maxRssBytes: ctx.config.maxRssBytes,
      sampleInterval: Math.max(5, Math.min(1000, ctx.config.maxEventLoopDelayMs / 4 || 1000)),
      retryAfter: 1,
      pressureHandler: (request, reply, type) => {
        request.turnLog = { ...request.turnLog, refused: `under pressure: ${type}` };
        sendError(request, reply, new ProxyError('overloaded', 'The proxy is overloaded right now; retry shortly.', { retryAfterSeconds: 1 }));
      },
    });
  }

  // Rate limits per client (its key, or its address without keys); /health is exempt. The
  // plugin is always there: a managed key may carry limits of its own (key-limits.ts).
  await app.register(rateLimit, {
    global: ctx.config.rateLimitPerMinute > 0,
    max: Math.max(1, ctx.config.rateLimitPerMinute),
    timeWindow: 60_000,
    keyGenerator: (request) => `client:${request.client?.id ?? request.ip}`,
    // Cluster mode: one budget across the instances, counted in Redis; a request another
    // instance forwarded was counted there already. Without Redis the route answers 503.
    ...(ctx.cluster
      ? { redis: ctx.cluster.redis, nameSpace: `${ctx.config.redisPrefix}:ratelimit:`, skipOnError: true, allowList: (request: FastifyRequest) => ctx.cluster!.isForwarded(request) }
      : {}),
    errorResponseBuilder: (_request, context) =>
      new ProxyError('rate_limited', `Rate limit reached: ${context.max} requests a minute per client. Retry in ${context.after}.`, {
        retryAfterSeconds: Math.max(1, Math.ceil(context.ttl / 1000)),
      }),
  });

  // A managed key's (and its tenant's) own request rate, with the RateLimit headers on every answer to it.
  const keyLimits = createKeyLimits(app, ctx);
  const refuseOverRate = async (request: FastifyRequest, reply: FastifyReply): Promise<unknown> => {
    const rate = await keyLimits.requests(request);
    if (rate === null) return undefined;
    reply.headers(rateHeaders(rate));
    if (!rate.exceeded) return undefined;
    request.turnLog = { ...request.turnLog, refused: 'key request rate' };
    return sendError(
      request,
      reply,
      new ProxyError('rate_limited', `Rate limit reached: ${rate.max} ${rate.what}. Retry in ${rate.resetSeconds} s.`, { retryAfterSeconds: rate.resetSeconds }),
    );
  };
  // Callback-style: a request without limits of its own (almost all) costs no promise here.
  app.addHook('onRequest', (request, reply, done) => {
    // A request another instance forwarded was counted there.
    if (!requestsAreLimited(ctx, request) || ctx.cluster?.isForwarded(request)) return done();
    refuseOverRate(request, reply).then(
      (sent) => (sent === undefined ? done() : undefined),
      (err: Error) => done(err),
    );
  });

  // While shutting down, no connection is kept alive for another request; nor is a WebSocket
  // upgrade's that was refused with an HTTP error: its socket is closed after the answer, and
  // the answer must say so (Node would claim keep-alive, and a pooling client reuse it).
  app.addHook('onSend', (request, reply, payload, done) => {
    if (ctx.shuttingDown || request.headers.upgrade !== undefined) reply.header('connection', 'close');
    done(null, payload);
  });

  // One log line per request, with what the route learned about its session.
  app.addHook('onResponse', (request, reply, done) => {
    const status = (request.turnLog?.['stream_status'] as number | undefined) ?? reply.statusCode;
    if (logger.isLevelEnabled('info')) {
      logger.info(
        { request_id: request.id, method: request.method, url: loggableUrl(request.url), status, ms: Math.round(reply.elapsedTime * 10) / 10, ...request.turnLog },
        'request',
      );
    }
    const protocol = request.turnLog?.['protocol'];
    if (ctx.metrics && typeof protocol === 'string') ctx.metrics.requests.inc({ protocol, status: String(status) });
    const code = request.turnLog?.['error'];
    if (ctx.metrics && typeof code === 'string') ctx.metrics.errors.inc({ code });
    done();
  });

  // A client that overshot MAX_MESSAGE_BYTES may finish sending within these, and read its 413.
  const linger = { maxBytes: Math.max(8 * ctx.config.maxMessageBytes, 16 * 1024 * 1024), maxMs: 5_000 };
  app.setErrorHandler((err, request, reply) => {
    const error = toProxyError(err, ctx.config.maxMessageBytes);
    if (error.status >= 500 && !(err instanceof ProxyError)) request.log.error({ err, request_id: request.id }, 'unhandled error');
    request.turnLog = { ...request.turnLog, error: error.code };
    if (error.code === 'payload_too_large') {
      reply.header('connection', 'close');
      lingerAfterAnswer(request.raw, linger);
    }
    return sendError(request, reply, error);
  });

  // Node hands CONNECT to 'connect' listeners, never to the router, and without one drops the
  // connection unanswered. Outside routing there is no route to name an Allow for: 400.
  app.server.on('connect', (request: IncomingMessage, socket: Socket) => {
    const url = loggableUrl((request.url ?? '').slice(0, 200));
    const error = new ProxyError('bad_request', `CONNECT ${url} is not served: this is an API server, not a forwarding proxy.`);
    logger.info({ method: 'CONNECT', url, status: error.status, remote_address: socket.remoteAddress }, 'request refused: CONNECT');
    answerOnSocket(socket, error, protocolOfUrl(url).renderError(error));
  });

  app.setNotFoundHandler((request, reply) =>
    sendError(request, reply, new ProxyError('not_found', `There is no route ${request.method} ${request.url.split('?')[0]}.`)),
  );

  // Console sign-in keeps a person's session in a cookie (it is the only cookie the service reads).
  if (ctx.access.signIn) await app.register((await import('@fastify/cookie')).default);
  // The admin API's OpenAPI description collects the routes as they are added.
  await registerOpenApi(app, packageVersion());
  await app.register(chatRoutes, { ctx });
  await app.register(realtimeRoutes, { ctx });
  await app.register(modelRoutes, { ctx });
  await app.register(compatRoutes);
  await app.register(sessionRoutes, { ctx });
  await app.register(healthRoutes, { ctx });
  await app.register(adminRoutes, { ctx });
  await app.register(keyRoutes, { ctx });
  await app.register(tenantRoutes, { ctx });
  await app.register(auditRoutes, { ctx });
  await app.register(webhookRoutes, { ctx });
  await app.register(bridgeRoutes, { ctx });
  if (ctx.bridges) await app.register(async (scope) => ctx.bridges!.routes(scope));
  await app.register(consoleRoutes, { ctx });
  if (ctx.metrics) await app.register(metricsRoutes, { ctx });
  return app;
}
