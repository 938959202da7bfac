/**
 * The webhook admin API: endpoints (create, list, read, change, rotate the secret, delete),
 * their attempts, "send again" and "send a test event", and the event catalogue. Global admins
 * manage every endpoint and may make one for any tenant or for all; a tenant's admins manage
 * their own tenant's, which receive that tenant's events only. docs/events.md describes it.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Principal } from '../../auth/principal.js';
import { EVENT_TYPES, dataschemaOf } from '../../events/catalogue.js';
import { createEndpointSchema, endpointView, EndpointNotFound, rotateSecretSchema, shownUrl, updateEndpointSchema, type WebhookEndpoint } from '../../events/endpoints.js';
import type { Attempt } from '../../events/delivery-state.js';
import { ProxyError } from '../../protocols/errors.js';
import type { AppContext } from '../context.js';
import { refuseOtherMethods } from '../errors.js';
import { adminOnly, holds } from '../loopback-only.js';
import { adminDoc } from '../openapi.js';
import { invalidBody } from './keys.js';

const isGlobalAdmin = (actor: Principal): boolean => holds(actor, 'admin', 'global');

/** A global admin manages every endpoint; a tenant's admin (the default tenant's too), its own tenant's, never one of every tenant. */
const mayManage = (actor: Principal, endpoint: WebhookEndpoint): boolean => isGlobalAdmin(actor) || (endpoint.allTenants !== true && endpoint.tenant === actor.tenant);

/** An attempt as the API shows it; `body` only when asked for one attempt's. */
const attemptView = (attempt: Attempt): Record<string, unknown> => ({
  event: attempt.event,
  type: attempt.type,
  at: new Date(attempt.at).toISOString(),
  attempt: attempt.attempt,
  status: attempt.status,
  ms: attempt.ms,
  error: attempt.error,
  outcome: attempt.outcome,
  manual: attempt.manual === true,
});

export async function webhookRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }): Promise<void> {
  const { endpoints, sender, state } = ctx.events;
  app.addHook('onRoute', (route) => {
    route.config = { ...(route.config as object), access: 'admin' };
  });
  app.addHook('onRequest', adminOnly(ctx.access, { role: 'admin', scope: 'any' }, ctx.audit));

  const manageable = (request: FastifyRequest<{ Params: { id: string } }>): WebhookEndpoint => {
    const endpoint = endpoints.get(request.params.id);
    if (endpoint === undefined || !mayManage(request.actor!, endpoint)) {
      throw new ProxyError('not_found', `There is no webhook endpoint '${String(request.params.id).slice(0, 100)}'.`, { param: 'id' });
    }
    return endpoint;
  };
  type Action = 'webhook.created' | 'webhook.updated' | 'webhook.rotated' | 'webhook.deleted' | 'webhook.resent' | 'webhook.tested';
  const audit = (request: FastifyRequest, action: Action, endpoint: WebhookEndpoint, details: Record<string, string | number | boolean | null> = {}): void => {
    request.turnLog = { ...request.turnLog, admin_action: action, endpoint: endpoint.id, tenant: endpoint.tenant, actor: request.actor?.subject };
    void ctx.audit.record(request, {
      action,
      tenant: endpoint.tenant,
      target: { type: 'endpoint', id: endpoint.id },
      details: { url: shownUrl(endpoint.url), ...details, ...(endpoint.allTenants ? { all_tenants: true } : {}) },
    });
  };
  const durability =
    ctx.config.journalPath === 'memory' && !ctx.config.redisUrl
    ? { warning_durability: 'JOURNAL_PATH=memory: endpoints, and events not yet delivered, are lost when the service restarts.' }
    : {};

  app.get(
    '/admin/events/types',
    adminDoc({ tag: 'webhooks', summary: 'The event catalogue', description: 'Every event type the service sends, with its data schema id (docs/events.md shows an example of each).', responses: { 200: 'The types' } }),
    async () => ({ object: 'list', data: EVENT_TYPES.map((type) => ({ type, dataschema: dataschemaOf(type) })) }),
  );
  refuseOtherMethods(app, '/admin/events/types', ['GET']);

  app.post(
    '/admin/webhooks',
    adminDoc({
      tag: 'webhooks',
      summary: 'Create a webhook endpoint',
      description: 'The answer holds the signing secret (`whsec_…`) in `secret`, shown this once. Events that happen from now on, of the given types, are sent to the URL, signed as Standard Webhooks says.',
      body: createEndpointSchema,
      responses: { 201: 'The endpoint, with `secret` (shown once)', 401: 'No admin credential', 403: 'The credential may not make this endpoint', 422: 'The body is not valid' },
    }),
    async (request, reply) => {
      const parsed = createEndpointSchema.safeParse(request.body ?? {});
      if (!parsed.success) throw invalidBody(parsed.error);
      const actor = request.actor!;
      let tenant = parsed.data.tenant ?? null;
      // A global admin's endpoint without a tenant receives every tenant's events.
      let allTenants = parsed.data.tenant === undefined;
      if (!isGlobalAdmin(actor)) {
        if (parsed.data.tenant !== undefined && parsed.data.tenant !== actor.tenant) {
          throw new ProxyError('admin_only', `This credential administers tenant '${actor.tenant ?? 'default'}' only.`, { param: 'tenant' });
        }
        tenant = actor.tenant;
        allTenants = false;
      }
      const { endpoint, secret } = await endpoints.create(parsed.data, tenant, allTenants);
      audit(request, 'webhook.created', endpoint, { types: endpoint.types.join(' '), include_content: endpoint.content });
      reply.code(201);
      return { ...endpointView(endpoint), secret, note: 'This is the only time the secret is shown. Verify deliveries with it (docs/events.md).', ...durability };
    },
  );

  app.get(
    '/admin/webhooks',
    adminDoc({ tag: 'webhooks', summary: 'List webhook endpoints', responses: { 200: 'The endpoints the caller may manage, oldest first', 401: 'No admin credential' } }),
    async (request) => {
      const actor = request.actor!;
      const data = endpoints
        .list()
        .filter((e) => mayManage(actor, e))
        .sort((a, b) => a.created - b.created)
        .map((e) => endpointView(e));
      return { object: 'list', data, sending: ctx.events.outbox.sending, pending: sender.pending };
    },
  );
  refuseOtherMethods(app, '/admin/webhooks', ['GET', 'POST']);

  app.get<{ Params: { id: string } }>(
    '/admin/webhooks/:id',
    adminDoc({ tag: 'webhooks', summary: 'Read one webhook endpoint', params: { id: 'the endpoint id (ep_…)' }, responses: { 200: 'The endpoint, never its secret', 404: 'No such endpoint' } }),
    async (request) => endpointView(manageable(request)),
  );

  app.patch<{ Params: { id: string } }>(
    '/admin/webhooks/:id',
    adminDoc({
      tag: 'webhooks',
      summary: 'Change a webhook endpoint',
      description: '`enabled: false` stops deliveries; `enabled: true` starts them again with the events that happen from then on.',
      params: { id: 'the endpoint id (ep_…)' },
      body: updateEndpointSchema,
      responses: { 200: 'The endpoint', 404: 'No such endpoint', 422: 'The body is not valid' },
    }),
    async (request) => {
      const parsed = updateEndpointSchema.safeParse(request.body ?? {});
      if (!parsed.success) throw invalidBody(parsed.error);
      const current = manageable(request);
      const endpoint = await endpoints.update(current.id, parsed.data);
      audit(request, 'webhook.updated', endpoint, { changed: Object.keys(parsed.data).join(' ') });
      return endpointView(endpoint);
    },
  );

  app.delete<{ Params: { id: string } }>(
    '/admin/webhooks/:id',
    adminDoc({ tag: 'webhooks', summary: 'Delete a webhook endpoint', description: 'Nothing more is sent to it, from now on, on every instance.', params: { id: 'the endpoint id (ep_…)' }, responses: { 200: 'The endpoint as it was', 404: 'No such endpoint' } }),
    async (request) => {
      const current = manageable(request);
      try {
        const endpoint = await endpoints.remove(current.id);
        audit(request, 'webhook.deleted', endpoint);
        return { ...endpointView(endpoint), deleted: true };
      } catch (err) {
        if (err instanceof EndpointNotFound) throw new ProxyError('not_found', `There is no webhook endpoint '${current.id}'.`, { param: 'id' });
        throw err;
      }
    },
  );
  refuseOtherMethods(app, '/admin/webhooks/:id', ['GET', 'PATCH', 'DELETE']);

  app.post<{ Params: { id: string } }>(
    '/admin/webhooks/:id/rotate',
    adminDoc({
      tag: 'webhooks',
      summary: "Rotate a webhook endpoint's secret",
      description: 'A new secret, shown once. Until `overlap_seconds` (default 3600) have passed, deliveries carry a signature by each secret, so a receiver may switch whenever it likes.',
      params: { id: 'the endpoint id (ep_…)' },
      body: rotateSecretSchema,
      responses: { 200: 'The endpoint, with the new `secret`', 404: 'No such endpoint', 422: 'The body is not valid' },
    }),
    async (request) => {
      const parsed = rotateSecretSchema.safeParse(request.body ?? {});
      if (!parsed.success) throw invalidBody(parsed.error);
      const current = manageable(request);
      const { endpoint, secret } = await endpoints.rotate(current.id, parsed.data.overlap_seconds);
      audit(request, 'webhook.rotated', endpoint, { overlap_seconds: parsed.data.overlap_seconds });
      return { ...endpointView(endpoint), secret, note: `This is the only time the new secret is shown. The previous one keeps signing for ${parsed.data.overlap_seconds} s.` };
    },
  );
  refuseOtherMethods(app, '/admin/webhooks/:id/rotate', ['POST']);

  const attemptsQuery = z.object({ limit: z.coerce.number().int().min(1).max(500).default(50) }).strict();
  app.get<{ Params: { id: string }; Querystring: Record<string, string> }>(
    '/admin/webhooks/:id/attempts',
    adminDoc({
      tag: 'webhooks',
      summary: "An endpoint's latest delivery attempts",
      description: 'Newest first: the event, the status the receiver answered (null: none), how long it took, the error, and the outcome (delivered, failed and to be tried again, gave_up, dropped).',
      params: { id: 'the endpoint id (ep_…)' },
      querystring: attemptsQuery,
      responses: { 200: 'The attempts', 404: 'No such endpoint' },
    }),
    async (request) => {
      const endpoint = manageable(request);
      const parsed = attemptsQuery.safeParse(request.query ?? {});
      if (!parsed.success) throw invalidBody(parsed.error);
      const attempts = await state.attempts(endpoint.id, parsed.data.limit);
      return { object: 'list', data: attempts.map(attemptView) };
    },
  );
  refuseOtherMethods(app, '/admin/webhooks/:id/attempts', ['GET']);

  app.post<{ Params: { id: string; event: string } }>(
    '/admin/webhooks/:id/events/:event/resend',
    adminDoc({
      tag: 'webhooks',
      summary: 'Send an event again',
      description: 'Sends the event, as it was sent before, to the endpoint now, once: the same `webhook-id`, a new timestamp and signature.',
      params: { id: 'the endpoint id (ep_…)', event: 'the event id (evt_…)' },
      responses: { 200: 'The attempt', 404: 'No such endpoint, or no attempt of that event is kept', 409: 'The endpoint is disabled' },
    }),
    async (request) => {
      const endpoint = manageable(request);
      if (endpoint.disabled) throw new ProxyError('endpoint_disabled', `Webhook endpoint '${endpoint.id}' is disabled: enable it first.`, { param: 'id' });
      const kept = (await state.attempts(endpoint.id, 500)).find((a) => a.event === request.params.event);
      if (!kept) throw new ProxyError('not_found', `No attempt of event '${String(request.params.event).slice(0, 100)}' to this endpoint is kept.`, { param: 'event' });
      const attempt = await sender.sendAgain(endpoint, kept);
      audit(request, 'webhook.resent', endpoint, { event: kept.event, status: attempt.status });
      return attemptView(attempt);
    },
  );
  refuseOtherMethods(app, '/admin/webhooks/:id/events/:event/resend', ['POST']);

  app.post<{ Params: { id: string } }>(
    '/admin/webhooks/:id/test',
    adminDoc({
      tag: 'webhooks',
      summary: 'Send a test event',
      description: 'Sends a `webhook.test` event to the endpoint now, once, signed like any other.',
      params: { id: 'the endpoint id (ep_…)' },
      responses: { 200: 'The attempt', 404: 'No such endpoint', 409: 'The endpoint is disabled' },
    }),
    async (request) => {
      const endpoint = manageable(request);
      if (endpoint.disabled) throw new ProxyError('endpoint_disabled', `Webhook endpoint '${endpoint.id}' is disabled: enable it first.`, { param: 'id' });
      const attempt = await sender.sendTest(endpoint);
      audit(request, 'webhook.tested', endpoint, { status: attempt.status });
      return attemptView(attempt);
    },
  );
  refuseOtherMethods(app, '/admin/webhooks/:id/test', ['POST']);
}
