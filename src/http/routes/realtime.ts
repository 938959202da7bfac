/**
 * The WebSocket side: GET /v1/realtime?session=<id>&side=A|B upgraded to a WebSocket.
 *
 * A persistent participant: each `message` frame is a new turn of its side (never a retry),
 * each delivery to its side is pushed the moment it is made, and `typing` frames are shown
 * live to the other side's held streaming request. Between messages the connection keeps a
 * LISTEN wait on the session (no timer), so nothing needs re-sending and nothing times out.
 *
 * Only one connection may hold a side: a second one for the same session and side is refused
 * (an `error` frame, code `session_conflict`, then close 1008) unless it asks to take over with
 * `&takeover=true`, which ends the earlier connection instead (error frame `superseded`, 1008).
 *
 * Browsers open WebSockets to any address without CORS, so the upgrade checks Origin (and, on a
 * loopback service, Host) as docs/security.md says; and each `message` frame counts against the
 * same rate limits as an HTTP turn (limits.ts).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { WebSocket } from 'ws';
import type { Side } from '../../../machines/session.logic.js';
import { isLoopbackHost } from '../../config.js';
import { ProxyError } from '../../protocols/errors.js';
import { connectQuery, frame, FrameError, parseFrame, type ClientFrame, type ServerFrame } from '../../protocols/websocket.js';
import { openSide } from '../../sessions/attribution.js';
import type { Submission } from '../../sessions/session.js';
import { sendError } from '../errors.js';
import { isRefusal, presentedKey } from '../access.js';
import { browserRefusal } from '../browser-guard.js';
import type { AppContext } from '../context.js';
import { createLimits, type Limits } from '../limits.js';
import { sideHolders } from '../side-holders.js';
import { scopedId, splitScoped, tenantOfRequest } from '../../auth/tenants.js';
import { relaySocket } from '../../cluster/forward-socket.js';

/** Close codes: normal after the session closed, "service restart" when shutting down. */
const CLOSE_NORMAL = 1000;
const CLOSE_RESTART = 1012;
const CLOSE_POLICY = 1008;
const CLOSE_UNAVAILABLE = 1011;

const TAKEOVER = new Set(['1', 'true', 'yes']);

export async function realtimeRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }): Promise<void> {
  const limits = createLimits(app, ctx);
  // Beyond loopback a reverse proxy may set any Host; Origin is checked wherever the service listens.
  const rule = { loopbackHost: isLoopbackHost(ctx.config.host), origins: ctx.config.corsOrigins };
  app.route({
    method: 'GET',
    url: '/v1/realtime',
    // Before the upgrade: a page of another site in the user's browser must not join a session.
    onRequest: async (request, reply) => {
      const refused = browserRefusal(request.headers, rule);
      if (refused === null) return undefined;
      request.turnLog = { ...request.turnLog, refused: 'realtime: another origin or not a loopback host' };
      return sendError(request, reply, new ProxyError('session_forbidden', refused));
    },
    handler: async (request, reply) =>
      sendError(request, reply, new ProxyError('upgrade_required', 'GET /v1/realtime is a WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket).')),
    wsHandler: (socket, request) => {
      const cluster = ctx.cluster;
      if (!cluster) return new Participant(ctx, limits, socket, request).start();
      // Cluster mode: the side is held where the session runs; another instance's is relayed there.
      const query = connectQuery.safeParse(request.query);
      const session = query.success ? (query.data.session ?? query.data.model) : undefined;
      if (session === undefined) return new Participant(ctx, limits, socket, request).start(); // it explains the query
      // Frames that arrive while Redis is asked wait in the socket, not lost.
      socket.pause();
      cluster.route(scopedId(tenantOfRequest(request), session), cluster.isForwarded(request)).then(
        (route) => {
          socket.resume();
          if (route.kind === 'local') return new Participant(ctx, limits, socket, request).start();
          request.turnLog = { ...request.turnLog, session_id: session, forwarded_to: route.owner };
          return relaySocket(socket, request, route.address, { id: cluster.instanceId, token: cluster.ownership.token });
        },
        (err: unknown) => {
          socket.resume();
          const error = err instanceof ProxyError ? err : new ProxyError('cluster_unavailable', String(err));
          socket.send(frame({ type: 'error', code: error.code, message: error.message }));
          socket.close(CLOSE_UNAVAILABLE, error.code);
        },
      );
    },
  });
}

class Participant {
  private sessionId = '';
  private holding = false;
  private side: Side = 'A';
  private waiting: Submission | null = null;
  private draft = '';
  private draftBytes = 0;
  private requests = 0;
  /** Frames are handled one at a time: a later typing frame must not slip into the draft of a message whose rate check is pending. */
  private frames: Promise<void> = Promise.resolve();

  constructor(
    private readonly ctx: AppContext,
    private readonly limits: Limits,
    private readonly socket: WebSocket,
    private readonly request: FastifyRequest,
  ) {}

  start(): void {
    const query = connectQuery.safeParse(this.request.query);
    const session = query.success ? (query.data.session ?? query.data.model) : undefined;
    if (!query.success || session === undefined) {
      const message = query.success ? 'Name the session: /v1/realtime?session=<id>&side=A|B.' : query.error.issues[0]!.message;
      this.send({ type: 'error', code: 'invalid_request', message });
      this.socket.close(CLOSE_POLICY, 'invalid query');
      return;
    }
    // The session the name means for this caller: its tenant's (src/auth/tenants.ts).
    this.sessionId = scopedId(tenantOfRequest(this.request), session);
    // The per-session rate limit counts by the session its request names (limits.ts).
    this.request.turnLog = { ...this.request.turnLog, session_id: this.sessionId };
    const current = this.ctx.sessions.get(this.sessionId);
    // Without a side named, the connection takes the one a newcomer would, by attribution's order.
    const side = (query.data.side as Side | undefined) ?? (current ? openSide(current.context) : 'A');
    if (side === null) {
      this.send({ type: 'error', code: 'invalid_request', message: `Both sides of session '${session}' have joined: name yours with &side=A or &side=B.` });
      this.socket.close(CLOSE_POLICY, 'side required');
      return;
    }
    this.side = side;
    // With API keys, a side that joined with another key is not this connection's to take.
    const bound = current?.bindClient({ explicitSide: this.side, assistantHistory: [], messages: [], system: null, retryCount: 0, idempotencyKey: null, client: this.request.client.key });
    if (bound && 'error' in bound) {
      this.send({ type: 'error', code: bound.error, message: bound.message });
      this.socket.close(CLOSE_POLICY, bound.error);
      return;
    }
    // One connection per side: two browser tabs must not both answer for it.
    const holders = sideHolders(this.ctx);
    const earlier = holders.holder(this.sessionId, this.side);
    if (earlier) {
      const takeover = TAKEOVER.has(String((this.request.query as Record<string, unknown>)['takeover'] ?? '').toLowerCase());
      if (!takeover) {
        this.send({
          type: 'error',
          code: 'session_conflict',
          message: `Side ${this.side} of session '${session}' is already held by another WebSocket connection (another tab or client); only one may hold a side. Close that one, or connect with &takeover=true to take the side over.`,
        });
        this.socket.close(CLOSE_POLICY, 'side already held');
        return;
      }
      earlier.takenOver();
    }
    holders.take(this.sessionId, this.side, this);
    this.holding = true;
    // What this side typed live on an earlier connection was seen already: carry on from it.
    this.draft = current?.draft(this.side) ?? '';
    this.draftBytes = Buffer.byteLength(this.draft);
    this.log('websocket connected');
    this.socket.on('message', (data, isBinary) => {
      const text = isBinary ? null : data.toString('utf8');
      this.frames = this.frames
        .then(() => this.onFrame(text))
        .catch((err: unknown) => this.request.log.error({ err, request_id: this.request.id }, 'websocket frame failed'));
    });
    this.socket.on('close', () => {
      this.letGo();
      this.log('websocket closed');
    });
    const delivered = current?.context.sides[this.side].deliveries ?? [];
    this.send({ type: 'ready', session, side: this.side, state: current?.state ?? 'EMPTY', deliveries: delivered.length, ...(this.draft ? { draft: this.draft } : {}) });
    // A reconnecting client names how many deliveries it has; the rest come again, in order.
    const since = query.data.since;
    if (since !== undefined) for (let i = since; i < delivered.length; i++) this.send({ type: 'delivery', content: delivered[i]!, index: i });
    // A side that already joined receives what is queued for it at once, then each delivery.
    this.listen();
  }

  /** Another connection took this side over (takeover=true): this one ends. */
  takenOver(): void {
    this.letGo();
    this.send({ type: 'error', code: 'superseded', message: `Another connection took over side ${this.side} of session '${splitScoped(this.sessionId).name}'; this one is closed.` });
    this.socket.close(CLOSE_POLICY, 'taken over');
  }

  private letGo(): void {
    this.waiting?.disconnect();
    this.waiting = null;
    if (!this.holding) return;
    this.holding = false;
    sideHolders(this.ctx).release(this.sessionId, this.side, this);
  }

  private async onFrame(data: string | null): Promise<void> {
    if (!this.holding) return; // taken over: its frames are not this side's any more
    let parsed: ClientFrame;
    try {
      if (data === null) throw new FrameError('invalid_request', 'Send text frames holding JSON; binary frames are not understood.');
      if (Buffer.byteLength(data) > this.ctx.config.maxMessageBytes) {
        throw new FrameError('payload_too_large', `The frame is larger than MAX_MESSAGE_BYTES (${this.ctx.config.maxMessageBytes} bytes).`);
      }
      parsed = parseFrame(data);
    } catch (err) {
      const e = err instanceof FrameError ? err : new FrameError('invalid_request', String(err));
      this.send({ type: 'error', code: e.code, message: e.message });
      return;
    }
    switch (parsed.type) {
      case 'ping':
        this.send({ type: 'pong', id: parsed.id ?? null });
        return;
      case 'typing': {
        // Typing frames are not rate-limited (a person sends one a word, a bridge one a token),
        // but a draft holds one message's worth at most: typing adds no more than that to each
        // counted message.
        const bytes = Buffer.byteLength(parsed.delta);
        if (this.draftBytes + bytes > this.ctx.config.maxMessageBytes) {
          this.send({
            type: 'error',
            code: 'payload_too_large',
            message: `The typed draft would be larger than MAX_MESSAGE_BYTES (${this.ctx.config.maxMessageBytes} bytes); send it as a message first. This delta is not part of it.`,
          });
          return;
        }
        this.draft += parsed.delta;
        this.draftBytes += bytes;
        if (parsed.delta) this.ctx.sessions.get(this.sessionId)?.preview(this.side, parsed.delta);
        return;
      }
      case 'message': {
        const id = parsed.id ?? null;
        if (!(await this.stillAdmitted(id)) || !(await this.withinLimits(id)) || !this.holding) return;
        this.say(this.draft + (parsed.content ?? ''), id);
        return;
      }
    }
  }

  /**
   * The connection's credential, checked again for each message: a managed key revoked (or
   * expired) and a token expired since the connection opened stop it, as they stop HTTP
   * requests. The check is in memory (a token's verification is remembered until it expires).
   */
  private async stillAdmitted(id: string | null): Promise<boolean> {
    const principal = this.request.client.principal;
    if (principal === null || principal.kind === 'static-key') return true;
    const outcome = await Promise.resolve(this.ctx.access.authenticate(presentedKey(this.request))).catch(() => null);
    if (outcome !== null && !isRefusal(outcome) && outcome.id === principal.id) return true;
    const message = isRefusal(outcome) ? outcome.refused : 'The credential this connection opened with is no longer valid.';
    if (isRefusal(outcome) && outcome.unavailable) {
      this.send({ type: 'error', code: 'auth_unavailable', message, id, retry_after_seconds: 5 });
      return false;
    }
    this.send({ type: 'error', code: 'invalid_api_key', message, id });
    this.socket.close(CLOSE_POLICY, 'credential no longer valid');
    return false;
  }

  /** Counts a message against the rate limits; an error frame answers one over them, and the connection stays open. */
  private async withinLimits(id: string | null): Promise<boolean> {
    try {
      await this.limits.checkFrame(this.request, this.sessionId);
      return true;
    } catch (err) {
      if (!(err instanceof ProxyError)) throw err;
      const refusal: ServerFrame = { type: 'error', code: err.code, message: err.message, id, retry_after_seconds: err.options.retryAfterSeconds };
      this.send(refusal);
      return false;
    }
  }

  private say(content: string, id: string | null): void {
    if (this.ctx.shuttingDown) {
      this.send({ type: 'error', code: 'shutting_down', message: 'The proxy is shutting down; send this again after it restarts.', id });
      return;
    }
    if (content.trim() === '') {
      this.send({ type: 'error', code: 'invalid_request', message: 'The message has no text; there is nothing to send.', id });
      return;
    }
    const result = this.ctx.sessions.submit(
      this.sessionId,
      { explicitSide: this.side, assistantHistory: [], messages: [content], system: null, retryCount: 0, idempotencyKey: null, alwaysNew: true, client: this.request.client.key },
      this.nextRequestId(),
      { untimed: true, protocol: 'websocket' },
    );
    if ('error' in result) {
      this.send({ type: 'error', code: result.error, message: result.message, id });
      return;
    }
    this.draft = '';
    this.draftBytes = 0;
    this.send({ type: 'accepted', id, content, turn: result.kind === 'connect' ? 'connect' : 'message' });
    this.wait(result);
  }

  /** Keeps a wait on the session so the next delivery is pushed the moment it is made. */
  private listen(): void {
    const session = this.ctx.sessions.get(this.sessionId);
    const submission = session?.listen(this.side, this.nextRequestId());
    if (submission) this.wait(submission);
  }

  private wait(submission: Submission): void {
    this.waiting = submission;
    submission.onPreview((delta) => this.send({ type: 'typing', delta }));
    void submission.outcome.then((outcome) => {
      if (this.waiting !== submission) return; // replaced by this connection's own newer wait
      this.waiting = null;
      switch (outcome.type) {
        case 'disconnected':
          return;
        case 'reply':
          this.send({ type: 'delivery', content: outcome.content, index: outcome.delivery });
          this.listen();
          return;
        case 'reject':
          if (outcome.code === 'session_closed' || outcome.code === 'shutting_down') {
            const message =
              outcome.code === 'session_closed'
                ? `Session '${splitScoped(this.sessionId).name}' was closed.`
                : 'The proxy is shutting down; reconnect after it restarts (with a journal, the session comes back).';
            this.send({ type: 'closed', reason: outcome.code, message });
            this.socket.close(outcome.code === 'session_closed' ? CLOSE_NORMAL : CLOSE_RESTART, outcome.code);
          } else if (outcome.code === 'session_moved') {
            // Cluster mode: another instance runs the session now; the reconnect lands there.
            this.send({ type: 'error', code: 'session_moved', message: `Another instance runs session '${splitScoped(this.sessionId).name}' now: reconnect (with ?since=<deliveries you have>) and carry on; nothing is lost.` });
            this.socket.close(CLOSE_RESTART, outcome.code);
          } else if (outcome.code === 'superseded') {
            this.send({
              type: 'error',
              code: 'superseded',
              message: `Another connection or request now speaks for side ${this.side}; this one receives nothing until it sends a message.`,
            });
          } else {
            // journal_unavailable: the delivery is withheld. Reconnecting with ?since=<count>
            // sends it again once the journal works.
            this.send({ type: 'error', code: outcome.code, message: 'The journal could not record a delivery, so it is withheld: reconnect with ?since=<deliveries you have> to receive it.' });
            this.socket.close(CLOSE_UNAVAILABLE, outcome.code);
          }
          return;
      }
    });
  }

  private nextRequestId(): string {
    return `${this.request.id}.${++this.requests}`;
  }

  private send(f: ServerFrame): void {
    if (this.socket.readyState === this.socket.OPEN) this.socket.send(frame(f));
  }

  private log(msg: string): void {
    this.request.log.info({ request_id: this.request.id, session_id: this.sessionId, side: this.side, protocol: 'websocket' }, msg);
  }
}
