/**
 * The bridges' admin API: each configured bridge's health (connected, last error, queue depth),
 * its conversations (which session each plays, what it owes), and ending a conversation. Bridges
 * run on one instance of a cluster; another instance passes these requests on to it.
 * docs/bridges.md describes them.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { BRIDGE_NAMES, type Conversation } from '../../bridges/channel.js';
import { ProxyError } from '../../protocols/errors.js';
import type { AppContext } from '../context.js';
import { refuseOtherMethods } from '../errors.js';
import { adminOnly } from '../loopback-only.js';
import { adminDoc } from '../openapi.js';

/** A conversation as the API shows it (the queue's content is not: it is the session's text). */
export const conversationView = (c: Conversation, linked: boolean): Record<string, unknown> => ({
  id: c.id,
  bridge: c.bridge,
  session: c.session,
  tenant: c.tenant,
  side: c.side,
  peer: c.peer,
  opened: c.opened,
  ended: c.ended,
  ...(c.ended && typeof c.data['ended_because'] === 'string' ? { ended_because: c.data['ended_because'] } : {}),
  connected: linked,
  deliveries_received: c.received,
  deliveries_sent: c.sent,
  queue_depth: c.queue.length,
  ...(c.queue[0]?.lastError ? { last_error: c.queue[0].lastError, attempts: c.queue[0].attempts, next_attempt: new Date(c.queue[0].notBefore).toISOString() } : {}),
});

const listQuery = z.looseObject({
  bridge: z.enum(BRIDGE_NAMES as [string, ...string[]], { error: `bridge must be one of ${BRIDGE_NAMES.join(', ')}` }).optional(),
  session: z.string().max(256).optional(),
  state: z.enum(['open', 'ended', 'all'], { error: 'state must be open, ended or all' }).optional(),
});

export async function bridgeRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }): Promise<void> {
  const bridges = ctx.bridges;
  app.addHook('onRoute', (route) => {
    route.config = { ...(route.config as object), access: 'admin' };
  });
  app.addHook('onRequest', adminOnly(ctx.access, (request) => ({ role: request.method === 'GET' ? 'viewer' : 'operator', scope: 'global' }), ctx.audit));
  // Cluster mode: the instance that runs the bridges answers.
  app.addHook('preHandler', async (request: FastifyRequest, reply: FastifyReply) => {
    if (!bridges || bridges.running || !ctx.cluster || ctx.cluster.isForwarded(request)) return undefined;
    const holder = bridges.heldBy;
    const address = holder ? await ctx.cluster.ownership.addressOf(holder) : null;
    if (!holder || !address) return undefined; // nobody runs them this moment: answered from here
    await ctx.cluster.forwardTo(request, reply, request.body, { owner: holder, address });
    return reply;
  });

  const host = () => bridges?.host ?? null;
  const found = (id: string): Conversation => {
    const conversation = host()?.get(id);
    if (!conversation) throw new ProxyError('not_found', `There is no bridge conversation '${id.slice(0, 200)}'.`, { param: 'id' });
    return conversation;
  };

  app.get(
    '/admin/bridges',
    adminDoc({ tag: 'bridges', summary: 'Bridges and their health', description: 'Each configured bridge: connected, its last error, how many deliveries it owes (queue depth), and how many conversations are open.', responses: { 200: 'The bridges' } }),
    async () => {
      if (!bridges) return { object: 'list', data: [], note: 'No bridge is configured (docs/bridges.md).' };
      const running = host();
      if (!running) return { object: 'list', data: bridges.names.map((bridge) => ({ bridge, connected: false, running_on: bridges.heldBy })) };
      return { object: 'list', data: running.health().map(healthView) };
    },
  );
  refuseOtherMethods(app, '/admin/bridges', ['GET']);

  app.get(
    '/admin/bridges/conversations',
    adminDoc({ tag: 'bridges', summary: 'Bridge conversations', description: 'Open conversations (or `state=ended`, `state=all`), optionally of one bridge or session.', querystring: listQuery, responses: { 200: 'The conversations', 400: 'A filter is not valid' } }),
    async (request) => {
      const query = listQuery.safeParse(request.query);
      if (!query.success) throw new ProxyError('invalid_request', query.error.issues[0]!.message, { param: String(query.error.issues[0]!.path[0] ?? '') });
      const { bridge, session, state = 'open' } = query.data;
      const running = host();
      const list = (running?.list() ?? []).filter(
        (c) => (bridge === undefined || c.bridge === bridge) && (session === undefined || c.session === session) && (state === 'all' || (state === 'open') === (c.ended === null)),
      );
      return { object: 'list', data: list.map((c) => conversationView(c, running?.linked(c.id) ?? false)) };
    },
  );
  refuseOtherMethods(app, '/admin/bridges/conversations', ['GET']);

  app.get<{ Params: { id: string } }>(
    '/admin/bridges/conversations/:id',
    adminDoc({ tag: 'bridges', summary: 'One bridge conversation', params: { id: 'The conversation id (`email:<message id>`, `sms:<number>`, `discord:<channel id>`)' }, responses: { 200: 'The conversation', 404: 'No such conversation' } }),
    async (request) => conversationView(found(request.params.id), host()?.linked(request.params.id) ?? false),
  );

  app.delete<{ Params: { id: string } }>(
    '/admin/bridges/conversations/:id',
    adminDoc({ tag: 'bridges', summary: 'End a bridge conversation', description: 'The channel stops playing the session: its side lets go, and what it still owed is sent first.', params: { id: 'The conversation id' }, responses: { 200: 'Ended', 404: 'No such conversation' } }),
    async (request) => {
      const conversation = found(request.params.id);
      await host()!.end(conversation, 'ended by an admin');
      request.turnLog = { ...request.turnLog, admin_action: 'bridge.conversation_ended', conversation: conversation.id, actor: request.actor?.subject };
      void ctx.audit.record(request, { action: 'bridge.conversation_ended', tenant: conversation.tenant, target: { type: 'bridge_conversation', id: conversation.id }, details: { bridge: conversation.bridge, session: conversation.session } });
      return conversationView(conversation, false);
    },
  );
  refuseOtherMethods(app, '/admin/bridges/conversations/:id', ['GET', 'DELETE']);
}

export const healthView = (h: ReturnType<NonNullable<NonNullable<AppContext['bridges']>['host']>['health']>[number]): Record<string, unknown> => ({
  bridge: h.bridge,
  connected: h.connected,
  last_error: h.lastError,
  last_error_at: h.lastErrorAt,
  queue_depth: h.queueDepth,
  conversations: h.conversations,
  ...(h.details ? { details: h.details } : {}),
});
