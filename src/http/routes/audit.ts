/**
 * GET /admin/audit: the audit trail, filtered by tenant, actor, action and time; JSON by
 * default (the newest `limit` entries that match, oldest first), JSON lines with
 * `?format=jsonl` (every matching entry, streamed: the export). Admins of every tenant read it
 * all; a tenant's admin reads its own tenant's entries.
 */
import { adminDoc } from '../openapi.js';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { AuditFilter } from '../../audit/audit.js';
import { ProxyError } from '../../protocols/errors.js';
import type { AppContext } from '../context.js';
import { refuseOtherMethods } from '../errors.js';
import { adminOnly, holds } from '../loopback-only.js';
import { invalidBody } from './keys.js';

const time = z.union([z.coerce.number().int().min(0), z.iso.datetime({ offset: true }).transform((s) => Date.parse(s))]);
const query = z
  .object({
    tenant: z.string().max(64).optional(),
    actor: z.string().min(1).max(200).optional(),
    action: z.string().min(1).max(64).optional(),
    since: time.optional(),
    until: time.optional(),
    limit: z.coerce.number().int().min(1).max(10_000).default(100),
    format: z.enum(['json', 'jsonl']).default('json'),
  })
  .strict();

export async function auditRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }): Promise<void> {
  app.addHook('onRoute', (route) => {
    route.config = { ...(route.config as object), access: 'admin' };
  });
  app.addHook('onRequest', adminOnly(ctx.access, { role: 'admin', scope: 'any' }, ctx.audit));

  app.get(
    '/admin/audit',
    adminDoc({
      tag: 'audit',
      summary: 'Read or export the audit trail',
      description: 'The newest `limit` matching entries, oldest first; `format=jsonl` streams every matching entry as JSON lines.',
      querystring: query,
      responses: { 200: 'The entries (`data`), or JSON lines', 403: 'A tenant admin asked for another tenant', 422: 'A filter is not valid' },
    }),
    async (request, reply) => {
    const parsed = query.safeParse(request.query ?? {});
    if (!parsed.success) throw invalidBody(parsed.error);
    const { tenant, actor, action, since, until, limit, format } = parsed.data;
    const reader = request.actor!;
    const everyTenant = holds(reader, 'admin', 'global');
    // `?tenant=` with no value is the default tenant.
    const wanted = tenant === undefined ? undefined : tenant === '' ? null : tenant;
    if (!everyTenant && wanted !== undefined && wanted !== reader.tenant) {
      throw new ProxyError('admin_only', `This credential administers tenant '${reader.tenant ?? 'default'}' only.`, { param: 'tenant' });
    }
    const filter: AuditFilter = {
      ...(wanted !== undefined ? { tenant: wanted } : {}),
      ...(actor !== undefined ? { actor } : {}),
      ...(action !== undefined ? { action } : {}),
      ...(since !== undefined ? { since } : {}),
      ...(until !== undefined ? { until } : {}),
      tenants: everyTenant ? null : new Set([reader.tenant]),
    };
    if (format === 'json') return { object: 'list', data: await ctx.audit.query(filter, limit) };
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'application/x-ndjson; charset=utf-8', 'content-disposition': 'attachment; filename="audit.jsonl"' });
    try {
      for await (const entry of ctx.audit.matching(filter)) {
        // A client that goes away while the buffer is full never drains it: stop at its close.
        if (!res.write(`${JSON.stringify(entry)}\n`)) await new Promise((resolve) => (res.once('drain', resolve), res.once('close', resolve)));
        if (res.destroyed) break;
      }
    } finally {
      res.end();
    }
    return reply;
  });
  refuseOtherMethods(app, '/admin/audit', ['GET']);
}
