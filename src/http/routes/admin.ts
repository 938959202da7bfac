import { createHash } from 'node:crypto';
import { z } from 'zod';
import { adminDoc } from '../openapi.js';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { isReadable } from '../../journal/records.js';
import { buildTranscript, toJson, toMarkdown } from '../../journal/transcript.js';
import { splitModel } from '../../protocols/adapter.js';
import { ProxyError } from '../../protocols/errors.js';
import type { Session } from '../../sessions/session.js';
import { isRefusal, presentedKey } from '../access.js';
import { refuseOtherMethods } from '../errors.js';
import type { AppContext } from '../context.js';
import { adminOnly, holds } from '../loopback-only.js';
import type { AdminRole } from '../../auth/principal.js';
import { scopedId, sessionName, splitScoped, tenantOfSession } from '../../auth/tenants.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the admin routes: the caller holds the admin key (or is on loopback without one). */
    isAdmin?: boolean;
  }
}

/** A session id as shown to callers who are not the admin: stable, but not the id. */
const maskedId = (id: string): string => `session-${createHash('sha256').update(id).digest('hex').slice(0, 12)}`;

function summary(session: Session, admin: boolean) {
  const ctx = session.context;
  const side = (s: 'A' | 'B') => {
    const state = ctx.sides[s];
    return {
      joined: state.joined,
      waiting: state.held !== null,
      turns: state.lastTurn?.seq ?? 0,
      deliveries: state.deliveries.length,
      queued: state.queue.length,
      bound_to_key: state.client !== null,
    };
  };
  const { tenant, name } = splitScoped(session.id);
  return {
    id: admin ? name : maskedId(session.id),
    tenant,
    state: session.state,
    created_at: ctx.transcript[0]?.at ?? null,
    last_activity_at: ctx.lastActivityAt,
    sides: { A: side('A'), B: side('B') },
  };
}

/**
 * Routes for operators. With ADMIN_API_KEY they need it; without it they answer loopback
 * callers only (anyone else gets a 404, so they are not revealed). The session list is also
 * open to holders of a client key, with the ids masked.
 */
export async function adminRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }): Promise<void> {
  // Reading needs the viewer role; ending sessions and reading what was said, operator. Until
  // sessions belong to tenants, only grants over every tenant reach these routes.
  const roleFor = (request: FastifyRequest): AdminRole => (request.method === 'GET' && !request.routeOptions.url?.endsWith('/transcript') ? 'viewer' : 'operator');
  // The service's health spans every tenant: global roles only. Session routes take a tenant's
  // roles too, and each answers for the sessions of the tenants the caller's roles reach.
  const admin = adminOnly(ctx.access, (request) => ({ role: roleFor(request), scope: request.routeOptions.url === '/admin/health' ? 'global' : 'any' }), ctx.audit);
  /**
   * The tenant a session route acts in: `?tenant=` (a global role's to choose; the default
   * tenant without it), else the caller's own. A tenant the caller's roles do not reach gets the
   * same 404 as a session that does not exist.
   */
  const tenantFor = (request: FastifyRequest): string | null => {
    const actor = request.actor!;
    const asked = (request.query as { tenant?: unknown } | undefined)?.tenant;
    const tenant = typeof asked === 'string' && asked !== '' ? asked : holds(actor, 'viewer', 'global') ? null : actor.tenant;
    if (!holds(actor, roleFor(request), tenant)) {
      throw new ProxyError('not_found', `There is no live session '${String((request.params as { id?: string }).id ?? '').slice(0, 256)}'.`, { param: 'id' });
    }
    return tenant;
  };
  /** The service's id of the session a route names, in the tenant it acts in. */
  const sessionIdOf = (request: FastifyRequest<{ Params: { id: string } }>): string => scopedId(tenantFor(request), splitModel(request.params.id).sessionId);
  const reaches = (request: FastifyRequest, session: Session): boolean => {
    const actor = request.actor;
    return actor === undefined ? false : holds(actor, 'viewer', tenantOfSession(session.id));
  };
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  app.addHook('onClose', async () => loopDelay.disable());

  // Every route here is checked below, not by the client-key check.
  app.addHook('onRoute', (route) => {
    route.config = { ...(route.config as object), access: 'admin' };
  });
  app.addHook('onRequest', async (request, reply) => {
    const listing = request.method === 'GET' && request.routeOptions.url === '/admin/sessions';
    if (listing && ctx.access.adminKeySet && ctx.access.keysRequired && !ctx.access.isAdmin(presentedKey(request))) {
      // A client without a role sees the list with masked ids.
      const caller = await ctx.access.authenticate(presentedKey(request), false);
      if (caller !== null && !isRefusal(caller) && !holds(caller, 'viewer', caller.tenant)) {
        request.client = { key: caller.id, id: caller.id, principal: caller };
        return;
      }
    }
    const denied = await admin(request, reply);
    if (denied) return denied;
    request.isAdmin = true;
    return undefined;
  });

  const live = (request: FastifyRequest<{ Params: { id: string } }>): Session => {
    const sessionId = sessionIdOf(request);
    request.turnLog = { session_id: sessionId };
    const session = ctx.sessions.get(sessionId);
    if (!session) throw new ProxyError('not_found', `There is no live session '${request.params.id}'.`, { param: 'id' });
    return session;
  };

  app.get('/admin/sessions', adminDoc({ tag: 'sessions', summary: 'List live sessions', description: 'Every tenant the caller\'s roles reach; to a client key without a role, its own tenant\'s sessions with masked ids.', responses: { 200: 'The sessions (`data`), and `ids_masked`' } }), async (request) => {
    // The admin sees the sessions of every tenant its roles reach; a client, its own tenant's, masked.
    const visible = (session: Session): boolean =>
      request.isAdmin === true ? reaches(request, session) : tenantOfSession(session.id) === (request.client?.principal?.tenant ?? null);
    const data: unknown[] = [...ctx.sessions.list()]
      .filter(visible)
      .map((s) => ({ ...summary(s, request.isAdmin === true), ...(ctx.cluster ? { owner: ctx.cluster.instanceId } : {}) }));
    // Cluster mode: every instance's sessions (each answers for those it runs).
    if (ctx.cluster && !ctx.cluster.isForwarded(request)) {
      for (const answer of await ctx.cluster.askOthers<{ data?: unknown[] }>(request)) data.push(...(answer.data ?? []));
    }
    return { object: 'list', ids_masked: request.isAdmin !== true, data };
  });
  refuseOtherMethods(app, '/admin/sessions', ['GET']);

  app.get<{ Params: { id: string } }>('/admin/sessions/:id', adminDoc({ tag: 'sessions', summary: 'Read one session', params: { id: 'the session name' }, querystring: z.object({ tenant: z.string().optional().describe('the tenant (a global role\'s to choose; default tenant without it)') }), responses: { 200: 'The session: state, sides, system prompts, timing', 404: 'No live session of that name in that tenant' } }), async (request, reply) => {
    const sessionId = sessionIdOf(request);
    const cluster = ctx.cluster;
    if (cluster) {
      // Cluster mode: Redis says who runs the session; the owner answers for it.
      request.turnLog = { session_id: sessionId };
      const owner = await cluster.ownership.ownerOf(sessionId).catch((error: Error) => {
        throw new ProxyError('cluster_unavailable', `The cluster's Redis cannot be reached: ${error.message}. Retry shortly.`, { retryAfterSeconds: 1 });
      });
      const mine = owner.owner === cluster.instanceId && cluster.ownership.owns(sessionId) && ctx.sessions.get(sessionId) !== undefined;
      if (!mine) {
        if (owner.alive && owner.owner && owner.owner !== cluster.instanceId && owner.address && !cluster.isForwarded(request)) {
          return cluster.forwardTo(request, reply, undefined, { owner: owner.owner, address: owner.address });
        }
        if (owner.owner === null && owner.epoch === 0) throw new ProxyError('not_found', `There is no live session '${request.params.id}'.`, { param: 'id' });
        return { id: sessionName(sessionId), tenant: tenantOfSession(sessionId), object: 'session', state: null, owner: owner.alive ? owner.owner : null, epoch: owner.epoch, note: 'No instance runs this session now: the next request for it claims it and rebuilds it from its journal.' };
      }
    }
    const session = live(request);
    const ctxt = session.context;
    return {
      ...summary(session, true),
      ...(cluster ? { owner: cluster.instanceId, epoch: cluster.ownership.epochOf(session.id) ?? null } : {}),
      system: { A: ctxt.sides.A.system, B: ctxt.sides.B.system },
      transcript_entries: ctxt.transcript.length,
      timing: ctxt.timing,
    };
  });
  /** Ends a session: held requests get 410 session_closed. */
  app.delete<{ Params: { id: string } }>('/admin/sessions/:id', adminDoc({ tag: 'sessions', summary: 'End a session', description: 'Its held requests get 410 session_closed. Needs the operator role.', params: { id: 'the session name' }, querystring: z.object({ tenant: z.string().optional().describe('the tenant (a global role\'s to choose; default tenant without it)') }), responses: { 200: 'Ended', 404: 'No live session of that name in that tenant' } }), async (request, reply) => {
    if (ctx.cluster) {
      const sessionId = sessionIdOf(request);
      const route = await ctx.cluster.route(sessionId, ctx.cluster.isForwarded(request));
      if (route.kind === 'remote') return ctx.cluster.forwardTo(request, reply, undefined, route);
    }
    const session = live(request);
    session.close('deleted');
    void ctx.audit.record(request, { action: 'session.ended', tenant: tenantOfSession(session.id), target: { type: 'session', id: sessionName(session.id) } });
    return { id: sessionName(session.id), tenant: tenantOfSession(session.id), object: 'session', deleted: true };
  });
  refuseOtherMethods(app, '/admin/sessions/:id', ['GET', 'DELETE']);

  /** A session's conversation from the journal: JSON by default, Markdown with ?format=md. */
  app.get<{ Params: { id: string }; Querystring: { format?: string } }>(
    '/admin/sessions/:id/transcript',
    adminDoc({
      tag: 'sessions',
      summary: "Read a session's transcript",
      description: 'From the journal: JSON, or Markdown with `format=md`. Needs the operator role.',
      params: { id: 'the session name' },
      querystring: z.object({ tenant: z.string().optional(), format: z.enum(['json', 'md']).optional() }),
      responses: { 200: 'The transcript', 404: 'The journal has no such session' },
    }),
    async (request, reply) => {
    const sessionId = sessionIdOf(request);
    request.turnLog = { session_id: sessionId };
    const format = request.query.format ?? 'json';
    if (format !== 'json' && format !== 'md') {
      throw new ProxyError('invalid_request', `format must be json or md, not '${String(format).slice(0, 50)}'.`, { param: 'format' });
    }
    const transcript = buildTranscript((await ctx.journal.store.readSession(sessionId)).filter(isReadable));
    if (!transcript) {
      throw new ProxyError('not_found', `The journal has no session '${request.params.id}' (closed sessions are dropped when the journal is compacted).`, {
        param: 'id',
      });
    }
    void ctx.audit.record(request, { action: 'transcript.read', tenant: tenantOfSession(sessionId), target: { type: 'session', id: sessionName(sessionId) }, details: { format } });
    if (format === 'json') return toJson(transcript);
    reply.type('text/markdown; charset=utf-8');
    return toMarkdown(transcript);
  });
  refuseOtherMethods(app, '/admin/sessions/:id/transcript', ['GET']);

  /** The admin API in OpenAPI 3.1 (rendered by the console). */
  app.get('/admin/openapi.json', async () => app.swagger());
  refuseOtherMethods(app, '/admin/openapi.json', ['GET']);

  /** The service in detail: sessions, held requests, event-loop delay, memory, journal. */
  app.get('/admin/health', adminDoc({ tag: 'service', summary: 'The service in detail', description: 'Sessions by state, held requests, event-loop delay, memory, journal. Global roles only.', responses: { 200: 'The figures' } }), async () => {
    const byState: Record<string, number> = {};
    let held = 0;
    for (const session of ctx.sessions.list()) {
      byState[session.state] = (byState[session.state] ?? 0) + 1;
      if (session.context.sides.A.held) held++;
      if (session.context.sides.B.held) held++;
    }
    const ms = (ns: number): number => Math.round(ns / 1e4) / 100;
    const memory = process.memoryUsage();
    const journal = ctx.journal.store.stats();
    return {
      status: ctx.shuttingDown ? 'shutting_down' : 'ok',
      uptime_seconds: Math.round((Date.now() - ctx.startedAt) / 1000),
      sessions: { live: ctx.sessions.size, max: ctx.config.maxSessions, by_state: byState, held_requests: held },
      event_loop_delay_ms: { p50: ms(loopDelay.percentile(50)), p99: ms(loopDelay.percentile(99)), max: ms(loopDelay.max) },
      memory_bytes: { rss: memory.rss, heap_used: memory.heapUsed, heap_total: memory.heapTotal, external: memory.external },
      journal: { path: ctx.config.journalPath, ...journal, lag_records: journal.pending, recovery: ctx.journal.recovery },
      api_keys: { required: ctx.access.keysRequired, admin_key: ctx.access.adminKeySet, managed: ctx.access.managed?.size ?? 0, jwt: ctx.access.jwt !== null },
    };
  });
  refuseOtherMethods(app, '/admin/health', ['GET']);
}
