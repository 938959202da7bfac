/**
 * One chat turn over HTTP, for any protocol adapter: parse, hand to the session, hold the
 * request (streaming: headers at once, keep-alives while held), render what comes back.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Side } from '../../machines/session.logic.js';
import type { ProtocolAdapter, RenderTurn, WireRequest } from '../protocols/adapter.js';
import type { ToolCall } from '../protocols/background-tasks.js';
import { ProxyError, WAIT_ENDED, type ErrorCode } from '../protocols/errors.js';
import type { Outcome, Submission } from '../sessions/session.js';
import { loggableUrl } from './access.js';
import { scopedId, tenantOfRequest } from '../auth/tenants.js';
import type { AppContext } from './context.js';
import type { Limits } from './limits.js';
import { holdsAreLimited, sessionsAreLimited } from './key-limits.js';
import { requestIdHeaders } from './errors.js';

export function turnHandler(adapter: ProtocolAdapter, ctx: AppContext, limits: Limits) {
  const keepAliveMs = ctx.config.keepaliveIntervalSeconds * 1000;

  return async function handleTurn(request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    if (request.body === undefined) {
      throw new ProxyError('unsupported_media_type', 'Send the request as JSON with Content-Type: application/json.');
    }
    const wire: WireRequest = {
      body: request.body,
      headers: request.headers,
      params: request.params as Record<string, string | undefined>,
      query: request.query as Record<string, unknown>,
    };
    const { turn: submitted, ...turn } = adapter.parse(wire, { answerBackgroundTasks: ctx.config.answerBackgroundTasks });
    const body = request.body;
    // A held request keeps only what its response needs: the body and its history are the session's now.
    request.body = null;
    // The session the name means for this caller: its tenant's (src/auth/tenants.ts).
    const sessionId = scopedId(tenantOfRequest(request), turn.sessionId);
    request.turnLog = { session_id: sessionId, protocol: adapter.name };

    if (turn.background !== null) {
      const { kind, reply: content, toolCall } = turn.background;
      request.turnLog.background = kind;
      const local: Outcome = { type: 'reply', content, delivery: -1, repeat: false };
      // A protocol without function calls gets the call's arguments as text (`content`).
      const call = toolCall && adapter.toolCalls ? { toolCall } : {};
      return respond(adapter, turn, request, reply, { side: null, outcome: Promise.resolve(local), ...call }, keepAliveMs);
    }

    ctx.tracing?.annotate(request, { sessionId, protocol: adapter.name });
    if (ctx.cluster) {
      // Cluster mode: the session's owner serves it; this instance claims it when nobody does.
      const cluster = ctx.cluster;
      const route = await cluster.route(sessionId, cluster.isForwarded(request));
      if (route.kind === 'remote') {
        request.turnLog.forwarded_to = route.owner;
        // An owner that dies after its append and before its answer: the journal has the answer.
        const recover = async () => {
          const delivered = await cluster.deliveryFor(sessionId, request.id);
          if (!delivered) return null;
          request.turnLog = { ...request.turnLog, side: delivered.side, recovered_from_journal: true };
          return (r: FastifyReply) => r.send(adapter.renderReply(turn, { content: delivered.content, side: delivered.side, delivery: delivered.delivery }));
        };
        return cluster.forwardTo(request, reply, body, route, turn.stream ? undefined : recover);
      }
    }
    const client = request.client.key;
    // The turn with its client's key (Object.assign, not a spread extended with `client`: V8
    // would give every such object a hidden class of its own).
    const keyed = client ? Object.assign({}, submitted, { client }) : submitted;
    // Authorisation first: a client that may not act on the session must not spend its budget.
    const bound = client ? ctx.sessions.get(sessionId)?.bindClient(keyed) : undefined;
    if (bound && 'error' in bound) throw new ProxyError(bound.error, bound.message);
    if (limits.checking) await limits.check(request, reply, sessionId);
    // A managed key's (and its tenant's) own limits on new sessions and held requests.
    if (sessionsAreLimited(ctx, request) && !ctx.sessions.get(sessionId)) await limits.checkKeySession(request, reply, sessionId);
    const releaseKey = holdsAreLimited(ctx, request) ? await limits.holdForKey(request) : null;
    let release: (() => void) | null;
    try {
      release = limits.hold(request);
    } catch (err) {
      releaseKey?.();
      throw err;
    }
    if (releaseKey) {
      const own = release;
      release = () => (own?.(), releaseKey());
    }
    const result = ctx.sessions.submit(sessionId, keyed, request.id, {
      protocol: adapter.name,
      ...(turn.stream ? { stream: true } : {}),
    });
    if ('error' in result) {
      release?.();
      const retryAfter = result.error === 'max_sessions' ? { retryAfterSeconds: 1 } : result.error === 'queue_full' ? { retryAfterSeconds: 5 } : {};
      throw new ProxyError(result.error, result.message, retryAfter);
    }
    if (release) void result.outcome.then(release);
    request.turnLog.side = result.side;
    request.turnLog.turn = result.kind;
    ctx.tracing?.annotate(request, { side: result.side });
    reply.raw.on('close', () => {
      if (reply.raw.writableFinished) return;
      result.disconnect();
      request.log.info({ request_id: request.id, method: request.method, url: loggableUrl(request.url), aborted: true, ...request.turnLog }, 'request aborted by client');
    });
    return respond(adapter, turn, request, reply, result, keepAliveMs);
  };
}

/** Adds to the request's log line (the object is the request's own: no copy, no new hidden class a request). */
function noteOn(request: FastifyRequest, key: string, value: unknown): void {
  if (request.turnLog) request.turnLog[key] = value;
  else request.turnLog = { [key]: value };
}

const PREVIEW_WITHDRAWN =
  'The other side withdrew text it had typed live after this stream showed it, and sent a different message. Call again with the same messages to receive that message as sent.';

function waitError(code: Exclude<Outcome, { type: 'reply' | 'disconnected' }>['code']): ProxyError {
  return new ProxyError(code as ErrorCode, WAIT_ENDED[code] ?? code);
}

type Waiting = {
  readonly side: Side | null;
  readonly outcome: Promise<Outcome>;
  readonly onPreview?: Submission['onPreview'];
  /** The proxy's own reply is this function call (a background request that forces one). */
  readonly toolCall?: ToolCall;
};

/** Answers a held request when its outcome comes (a streaming one at once, then as it comes). */
const respond: typeof respondStreaming = (adapter, turn, request, reply, waiting, keepAliveMs) => {
  if (turn.stream) return respondStreaming(adapter, turn, request, reply, waiting, keepAliveMs);
  // A plain request waits on one reaction, not a suspended async function (it may wait long).
  return waiting.outcome.then((outcome) => {
    if (outcome.type === 'reply') {
      return reply.send(adapter.renderReply(turn, { content: outcome.content, side: waiting.side, delivery: outcome.delivery, ...(waiting.toolCall ? { toolCall: waiting.toolCall } : {}) }));
    }
    if (outcome.type === 'reject') throw waitError(outcome.code);
    return reply; // the client is gone; there is nobody to answer
  });
};

async function respondStreaming(
  adapter: ProtocolAdapter,
  turn: RenderTurn,
  request: FastifyRequest,
  reply: FastifyReply,
  waiting: Waiting,
  keepAliveMs: number,
): Promise<unknown> {
  const { side, outcome: pending } = waiting;
  // Streaming: headers go out at once so clients never hit a header timeout while held, with the
  // first keep-alive, since some clients (SillyTavern) show nothing until a body byte arrives.
  // Node decides the Connection header: a client that sent `Connection: close` is told so, and
  // its socket is not kept for a request it would never send (issue: node-fetch 2 reused it).
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    'content-type': adapter.stream.contentType,
    'cache-control': 'no-cache',
    'x-accel-buffering': 'no',
    ...requestIdHeaders(adapter, request.id),
  });
  const writer = adapter.stream.writer(turn);
  res.write(writer.open() + writer.keepAlive());
  const keepAlive = setInterval(() => res.write(writer.keepAlive()), keepAliveMs);
  keepAlive.unref();
  // What the other side typed live, already written here; the delivery starts with it.
  let previewed = '';
  waiting.onPreview?.((text) => {
    if (res.destroyed) return;
    previewed += text;
    res.write(writer.delta(text));
  });
  let status = 200;
  try {
    const outcome = await pending;
    if (outcome.type === 'disconnected' || res.destroyed) return reply;
    if (outcome.type === 'reply' && waiting.toolCall) {
      res.end(writer.end({ content: outcome.content, side, delivery: outcome.delivery, toolCall: waiting.toolCall }));
    } else if (outcome.type === 'reply' && outcome.content.startsWith(previewed)) {
      // Every request is shown the whole draft first, so its text is the delivery exactly.
      const { content } = outcome;
      const rest = content.slice(previewed.length);
      res.end((rest ? writer.delta(rest) : '') + writer.end({ content, side, delivery: outcome.delivery }));
    } else if (outcome.type === 'reply') {
      // The typist left and then sent something else: this stream showed text the message does
      // not start with. Rather than a garbled text, an error; the same call again (a retry)
      // gets the message as sent.
      const error = new ProxyError('preview_withdrawn', PREVIEW_WITHDRAWN);
      status = error.status;
      noteOn(request, 'error', error.code);
      res.end(writer.error(error));
    } else {
      const error = waitError(outcome.code);
      status = error.status;
      noteOn(request, 'error', error.code);
      res.end(writer.error(error));
    }
  } finally {
    clearInterval(keepAlive);
    noteOn(request, 'stream_status', status);
  }
  return reply;
}
