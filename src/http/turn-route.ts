/**
 * One chat turn over HTTP, for any protocol adapter: parse, hand to the session, hold the
 * request (streaming: headers at once, keep-alives while held), render what comes back.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ParsedTurn, ProtocolAdapter } from '../protocols/adapter.js';
import { ProxyError, WAIT_ENDED, type ErrorCode } from '../protocols/errors.js';
import type { Outcome } from '../sessions/session.js';
import type { AppContext } from './context.js';

export function turnHandler(adapter: ProtocolAdapter, ctx: AppContext) {
  const keepAliveMs = ctx.config.keepaliveIntervalSeconds * 1000;

  return async function handleTurn(request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    if (request.body === undefined) {
      throw new ProxyError('unsupported_media_type', 'Send the request as JSON with Content-Type: application/json.');
    }
    const turn = adapter.parse(request.body, request.headers, { answerBackgroundTasks: ctx.config.answerBackgroundTasks });
    request.turnLog = { session_id: turn.sessionId, protocol: adapter.name };

    if (turn.localReply !== null) {
      request.turnLog.background = true;
      return respond(adapter, turn, request, reply, Promise.resolve({ type: 'reply', content: turn.localReply, delivery: -1, repeat: false }), keepAliveMs);
    }

    ctx.tracing?.annotate(request, { sessionId: turn.sessionId, protocol: adapter.name });
    const result = ctx.sessions.submit(turn.sessionId, turn.turn, request.id);
    if ('error' in result) {
      throw new ProxyError(result.error, result.message, result.error === 'max_sessions' ? { retryAfterSeconds: 1 } : {});
    }
    request.turnLog.side = result.side;
    request.turnLog.turn = result.kind;
    ctx.tracing?.annotate(request, { side: result.side });
    const metrics = ctx.metrics;
    if (metrics) {
      if (result.kind !== 'retry') metrics.messages.inc({ protocol: adapter.name, direction: 'in' });
      const started = performance.now();
      const handshake = result.side === 'A' && result.kind === 'connect';
      void result.outcome.then((outcome) => {
        if (outcome.type === 'reply') {
          metrics.messages.inc({ protocol: adapter.name, direction: 'out' });
          (handshake ? metrics.handshakeTime : metrics.turnLatency).observe(performance.now() - started);
        } else if (outcome.type === 'reject' && outcome.code.endsWith('_timeout')) {
          metrics.timeouts.inc({ kind: outcome.code === 'handshake_timeout' ? 'handshake' : 'turn' });
        }
      });
    }
    reply.raw.on('close', () => {
      if (reply.raw.writableFinished) return;
      result.disconnect();
      request.log.info({ request_id: request.id, method: request.method, url: request.url, aborted: true, ...request.turnLog }, 'request aborted by client');
    });
    return respond(adapter, turn, request, reply, result.outcome, keepAliveMs);
  };
}

function waitError(code: Exclude<Outcome, { type: 'reply' | 'disconnected' }>['code']): ProxyError {
  return new ProxyError(code as ErrorCode, WAIT_ENDED[code] ?? code);
}

async function respond(
  adapter: ProtocolAdapter,
  turn: ParsedTurn,
  request: FastifyRequest,
  reply: FastifyReply,
  pending: Promise<Outcome>,
  keepAliveMs: number,
): Promise<unknown> {
  if (!turn.stream) {
    const outcome = await pending;
    if (outcome.type === 'reply') return reply.send(adapter.renderReply(turn, outcome.content));
    if (outcome.type === 'reject') throw waitError(outcome.code);
    return reply; // the client is gone; there is nobody to answer
  }

  // Streaming: headers go out at once so clients never hit a header timeout while held.
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    'content-type': adapter.stream.contentType,
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
    'x-request-id': request.id,
  });
  res.flushHeaders();
  const keepAlive = setInterval(() => res.write(adapter.stream.keepAlive()), keepAliveMs);
  keepAlive.unref();
  let status = 200;
  try {
    const outcome = await pending;
    if (outcome.type === 'disconnected' || res.destroyed) return reply;
    if (outcome.type === 'reply') {
      res.end(adapter.stream.reply(turn, outcome.content));
    } else {
      const error = waitError(outcome.code);
      status = error.status;
      request.turnLog = { ...request.turnLog, error: error.code };
      res.end(adapter.stream.error(error));
    }
  } finally {
    clearInterval(keepAlive);
    request.turnLog = { ...request.turnLog, stream_status: status };
  }
  return reply;
}
