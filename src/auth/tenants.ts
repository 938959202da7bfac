/**
 * Tenants: every session belongs to the tenant of the principal that named it, and its id is
 * scoped to that tenant, so that two tenants may both use `npc-guard` without meeting.
 *
 * Inside the service (registry, journal, cluster keys) a tenant's session id is
 * `<tenant>\u001f<name>`; the default tenant's (static keys, no keys at all) is the name alone,
 * exactly as before tenants existed, so existing journals and clients are unchanged. U+001F
 * cannot appear in a session name (splitModel refuses it), so no name of one tenant can spell
 * another tenant's id. Clients only ever see and send names.
 */
import type { FastifyRequest } from 'fastify';

export const TENANT_SEPARATOR = '\u001f';

/** The service's id of session `name` in `tenant` (null: the default tenant). */
export const scopedId = (tenant: string | null, name: string): string => (tenant === null ? name : `${tenant}${TENANT_SEPARATOR}${name}`);

/** The tenant and name of a service-side session id. */
export function splitScoped(id: string): { readonly tenant: string | null; readonly name: string } {
  const at = id.indexOf(TENANT_SEPARATOR);
  return at === -1 ? { tenant: null, name: id } : { tenant: id.slice(0, at), name: id.slice(at + 1) };
}

/** The name a client gave a session (what messages to clients show). */
export const sessionName = (id: string): string => splitScoped(id).name;

export const tenantOfSession = (id: string): string | null => splitScoped(id).tenant;

/** The tenant a request acts in: its principal's, or the default tenant. */
export const tenantOfRequest = (request: FastifyRequest): string | null => request.client?.principal?.tenant ?? null;

/** A session id as people read it: `tenant/name`, or the name in the default tenant. */
export function displayId(id: string): string {
  const { tenant, name } = splitScoped(id);
  return tenant === null ? name : `${tenant}/${name}`;
}
