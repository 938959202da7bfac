/**
 * The managed-key admin API: create, list, read, rotate (with an overlap), revoke. Holders of
 * the admin key (and callers on this machine when none is set) and credentials with the global
 * admin role manage every key; a tenant's admins manage their own tenant's keys and cannot hand
 * out roles over every tenant.
 */
import { adminDoc } from '../openapi.js';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { createKeySchema, KeyNotActive, KeyNotFound, publicView, rotateKeySchema, type ManagedKey } from '../../auth/keys.js';
import type { Principal } from '../../auth/principal.js';
import { ProxyError } from '../../protocols/errors.js';
import type { AppContext } from '../context.js';
import { refuseOtherMethods } from '../errors.js';
import { adminOnly, holds } from '../loopback-only.js';

/** Rotation keeps the old secret working this long unless told otherwise. */
export const DEFAULT_OVERLAP_SECONDS = 3600;

export function invalidBody(error: z.ZodError): ProxyError {
  const issue = error.issues[0];
  const where = issue?.path.length ? issue.path.join('.') : null;
  return new ProxyError('invalid_request', `${where ? `${where}: ` : ''}${issue?.message ?? 'invalid body'}`, { param: where });
}

const isGlobalAdmin = (actor: Principal): boolean => holds(actor, 'admin', 'global');

/**
 * A global admin manages every key; a tenant's admin, its own tenant's keys, except those with a
 * role over every tenant (rotating one would hand it the secret of a global admin).
 */
const mayManage = (actor: Principal, key: ManagedKey): boolean =>
  isGlobalAdmin(actor) || (key.tenant === actor.tenant && !key.scopes.some((s) => s.startsWith('global:')));

export async function keyRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }): Promise<void> {
  const registry = ctx.access.managed;
  if (!registry) return;
  app.addHook('onRoute', (route) => {
    route.config = { ...(route.config as object), access: 'admin' };
  });
  app.addHook('onRequest', adminOnly(ctx.access, { role: 'admin', scope: 'any' }, ctx.audit));

  /** The key, if the actor may manage it; a key of another tenant is "not found". */
  const manageable = (request: FastifyRequest<{ Params: { id: string } }>): ManagedKey => {
    const actor = request.actor!;
    const key = registry.get(request.params.id);
    if (key === undefined || !mayManage(actor, key)) {
      throw new ProxyError('not_found', `There is no API key '${String(request.params.id).slice(0, 100)}'.`, { param: 'id' });
    }
    return key;
  };
  const audit = (request: FastifyRequest, action: 'key.created' | 'key.rotated' | 'key.revoked', key: ManagedKey): void => {
    request.turnLog = { ...request.turnLog, admin_action: action, key_id: key.id, tenant: key.tenant, actor: request.actor?.subject };
    void ctx.audit.record(request, { action, tenant: key.tenant, target: { type: 'key', id: key.id }, details: { name: key.name, scopes: key.scopes.join(' ') } });
  };

  const keyView = { description: 'The key, never its secret or digest', schema: { type: 'object', additionalProperties: true } };
  app.post(
    '/admin/keys',
    adminDoc({
      tag: 'keys',
      summary: 'Create a managed key',
      description: 'The answer holds the key itself in `key`, shown this once: the proxy keeps only its SHA-256 digest. A tenant admin creates keys of its own tenant, without global roles.',
      body: createKeySchema,
      responses: { 201: 'The new key, with `key` (shown once)', 401: 'No admin credential', 403: 'The credential may not create this key', 422: 'The body is not valid' },
    }),
    async (request, reply) => {
    const parsed = createKeySchema.safeParse(request.body ?? {});
    if (!parsed.success) throw invalidBody(parsed.error);
    const spec = parsed.data;
    const actor = request.actor!;
    if (!isGlobalAdmin(actor)) {
      // A tenant's admin issues keys for that tenant only, and no role beyond it.
      if (spec.tenant !== undefined && spec.tenant !== actor.tenant) {
        throw new ProxyError('admin_only', `This credential administers tenant '${actor.tenant ?? 'default'}' only.`, { param: 'tenant' });
      }
      if (spec.scopes?.some((s) => s.startsWith('global:'))) {
        throw new ProxyError('admin_only', 'Only a global admin may issue keys with global roles.', { param: 'scopes' });
      }
      spec.tenant = actor.tenant;
    }
    if (spec.expires_at !== undefined && Date.parse(spec.expires_at) <= Date.now()) {
      throw new ProxyError('invalid_request', 'expires_at is in the past.', { param: 'expires_at' });
    }
    const { key, secret } = await registry.create(spec, actor.subject);
    audit(request, 'key.created', key);
    reply.code(201);
    return {
      ...publicView(key),
      key: secret,
      note: 'This is the only time the key is shown: the proxy keeps only its digest.',
      ...(ctx.access.keysRequired ? {} : { warning: 'Client keys are not required on this service (set REQUIRE_API_KEY=true, API_KEYS or an issuer): callers without any key are still served.' }),
      ...(registry.durable ? {} : { warning_durability: 'JOURNAL_PATH=memory: managed keys are lost when the service restarts.' }),
    };
  });

  app.get<{ Querystring: { tenant?: string; status?: string } }>(
    '/admin/keys',
    adminDoc({
      tag: 'keys',
      summary: 'List managed keys',
      querystring: z.object({ tenant: z.string().optional(), status: z.enum(['active', 'revoked', 'expired']).optional() }),
      responses: { 200: 'The keys the caller may manage, oldest first', 401: 'No admin credential' },
    }),
    async (request) => {
    const actor = request.actor!;
    const { tenant, status } = request.query;
    const now = Date.now();
    const data = registry
      .list()
      .filter((k) => mayManage(actor, k))
      .filter((k) => tenant === undefined || (k.tenant ?? '') === tenant)
      .map((k) => publicView(k, now))
      .filter((k) => status === undefined || k.status === status)
      .sort((a, b) => a.created_at.localeCompare(b.created_at));
    return { object: 'list', data };
  });
  refuseOtherMethods(app, '/admin/keys', ['GET', 'POST']);

  app.get<{ Params: { id: string } }>(
    '/admin/keys/:id',
    adminDoc({ tag: 'keys', summary: 'Read one managed key', params: { id: 'the key id (key_…)' }, responses: { 200: keyView, 404: 'No such key (or one of another tenant)' } }),
    async (request) => publicView(manageable(request)),
  );

  app.post<{ Params: { id: string } }>(
    '/admin/keys/:id/rotate',
    adminDoc({
      tag: 'keys',
      summary: 'Rotate a managed key',
      description: 'A new secret, shown once; the current secrets keep working for `overlap_seconds` (default 3600). The key id, and so the sessions bound to it, stay.',
      params: { id: 'the key id (key_…)' },
      body: rotateKeySchema,
      responses: { 200: 'The key, with the new secret in `key`', 404: 'No such key', 409: 'The key is revoked or expired', 422: 'The body is not valid' },
    }),
    async (request) => {
    const parsed = rotateKeySchema.safeParse(request.body ?? {});
    if (!parsed.success) throw invalidBody(parsed.error);
    const current = manageable(request);
    try {
      const overlap = parsed.data.overlap_seconds ?? DEFAULT_OVERLAP_SECONDS;
      const { key, secret } = await registry.rotate(current.id, overlap);
      audit(request, 'key.rotated', key);
      return { ...publicView(key), key: secret, note: `This is the only time the new key is shown. The previous secret keeps working for ${overlap} s.` };
    } catch (err) {
      if (err instanceof KeyNotActive) throw new ProxyError('key_not_active', err.message);
      throw err;
    }
  });
  refuseOtherMethods(app, '/admin/keys/:id/rotate', ['POST']);

  app.delete<{ Params: { id: string } }>(
    '/admin/keys/:id',
    adminDoc({ tag: 'keys', summary: 'Revoke a managed key', description: 'Refused from the next request on, on every instance.', params: { id: 'the key id (key_…)' }, responses: { 200: keyView, 404: 'No such key' } }),
    async (request) => {
    const current = manageable(request);
    try {
      const key = await registry.revoke(current.id);
      audit(request, 'key.revoked', key);
      return publicView(key);
    } catch (err) {
      if (err instanceof KeyNotFound) throw new ProxyError('not_found', err.message, { param: 'id' });
      throw err;
    }
  });
  refuseOtherMethods(app, '/admin/keys/:id', ['GET', 'DELETE']);
}
