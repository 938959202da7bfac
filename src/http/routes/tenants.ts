/**
 * Tenants' limits: `PUT /admin/tenants/{name}` sets them (a global admin's to do), `GET` lists
 * and reads them (a tenant's own roles read their own tenant), `DELETE` removes them. A tenant
 * needs no record to exist: any key or token may name it; the record only adds limits.
 */
import { adminDoc } from '../openapi.js';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { putTenantSchema, type TenantRecord } from '../../auth/tenant-registry.js';
import { TENANT_NAME } from '../../auth/keys.js';
import { ProxyError } from '../../protocols/errors.js';
import type { AppContext } from '../context.js';
import { refuseOtherMethods } from '../errors.js';
import { adminOnly, holds } from '../loopback-only.js';
import { invalidBody } from './keys.js';

const view = ({ id, limits, updated_at, updated_by }: TenantRecord) => ({ object: 'tenant' as const, name: id, limits, updated_at, updated_by });

export async function tenantRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }): Promise<void> {
  const registry = ctx.access.tenants;
  if (!registry) return;
  app.addHook('onRoute', (route) => {
    route.config = { ...(route.config as object), access: 'admin' };
  });
  app.addHook('onRequest', adminOnly(ctx.access, (request) => (request.method === 'GET' ? { role: 'viewer', scope: 'any' } : { role: 'admin', scope: 'global' }), ctx.audit));

  const named = (request: FastifyRequest<{ Params: { name: string } }>): string => {
    const { name } = request.params;
    if (!TENANT_NAME.test(name)) throw new ProxyError('invalid_request', 'A tenant name is letters, digits and . _ : @ -, at most 64, starting with a letter or digit.', { param: 'name' });
    if (!holds(request.actor!, 'viewer', name)) throw new ProxyError('not_found', `There is no tenant '${name}' with limits.`, { param: 'name' });
    return name;
  };

  app.get('/admin/tenants', adminDoc({ tag: 'tenants', summary: 'List tenants with limits', responses: { 200: 'The tenants the caller\'s roles reach' } }), async (request) => ({
    object: 'list',
    data: registry
      .list()
      .filter((t) => holds(request.actor!, 'viewer', t.id))
      .map(view)
      .sort((a, b) => a.name.localeCompare(b.name)),
  }));
  refuseOtherMethods(app, '/admin/tenants', ['GET']);

  app.get<{ Params: { name: string } }>('/admin/tenants/:name', adminDoc({ tag: 'tenants', summary: "Read a tenant's limits", params: { name: 'the tenant' }, responses: { 200: 'The tenant', 404: 'No limits are set for it' } }), async (request) => {
    const record = registry.get(named(request));
    if (!record) throw new ProxyError('not_found', `There is no tenant '${request.params.name}' with limits.`, { param: 'name' });
    return view(record);
  });

  app.put<{ Params: { name: string } }>(
    '/admin/tenants/:name',
    adminDoc({ tag: 'tenants', summary: "Set a tenant's limits", description: 'Shared by every principal of the tenant. A global admin\'s to set.', params: { name: 'the tenant' }, body: putTenantSchema, responses: { 200: 'The tenant', 403: 'Not a global admin', 422: 'The body is not valid' } }),
    async (request) => {
    const name = named(request);
    const parsed = putTenantSchema.safeParse(request.body ?? {});
    if (!parsed.success) throw invalidBody(parsed.error);
    const record = await registry.put(name, parsed.data.limits, request.actor!.subject);
    request.turnLog = { ...request.turnLog, admin_action: 'tenant.limits_set', tenant: name, actor: request.actor!.subject };
    void ctx.audit.record(request, { action: 'tenant.limits_set', tenant: name, target: { type: 'tenant', id: name }, details: Object.fromEntries(Object.entries(record.limits)) });
    return view(record);
  });

  app.delete<{ Params: { name: string } }>('/admin/tenants/:name', adminDoc({ tag: 'tenants', summary: "Remove a tenant's limits", params: { name: 'the tenant' }, responses: { 200: 'Removed', 404: 'No limits were set' } }), async (request) => {
    const name = named(request);
    const record = await registry.remove(name, request.actor!.subject);
    if (!record) throw new ProxyError('not_found', `There is no tenant '${name}' with limits.`, { param: 'name' });
    request.turnLog = { ...request.turnLog, admin_action: 'tenant.limits_removed', tenant: name, actor: request.actor!.subject };
    void ctx.audit.record(request, { action: 'tenant.limits_removed', tenant: name, target: { type: 'tenant', id: name } });
    return { object: 'tenant', name, deleted: true };
  });
  refuseOtherMethods(app, '/admin/tenants/:name', ['GET', 'PUT', 'DELETE']);
}
