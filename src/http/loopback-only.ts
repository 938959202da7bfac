/**
 * Admin routes answer trusted callers only: the admin key's holders when ADMIN_API_KEY is set,
 * else callers "on this machine": a request from a loopback address that no proxy relayed (a reverse proxy on the
 * same host would make every caller look local, so forwarding headers disqualify). Anyone
 * else gets the same 404 an unknown route gets, so the routes are not revealed.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { isIPv4 } from 'node:net';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ProxyError } from '../protocols/errors.js';
import { isRefusal, presentedKey, type AccessControl } from './access.js';
import type { AdminRole, Principal } from '../auth/principal.js';
import type { AuditLog } from '../audit/audit.js';
import { SESSION_COOKIE } from '../auth/console-signin.js';
import { isOwnOrigin } from './browser-guard.js';
import { sendError } from './errors.js';

const FORWARDING_HEADERS = ['forwarded', 'x-forwarded-for', 'x-real-ip'] as const;

/** 127.0.0.0/8, ::1, and IPv4-mapped ::ffff:127.x.y.z. */
export function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  const lower = address.toLowerCase();
  if (lower === '::1') return true;
  const v4 = lower.startsWith('::ffff:') ? lower.slice(7) : lower;
  return isIPv4(v4) && v4.startsWith('127.');
}

/** A caller on this machine: a loopback address (the socket's), and no proxy relayed the request. */
export function isLocalCaller(remoteAddress: string | undefined, headers: IncomingHttpHeaders): boolean {
  return isLoopback(remoteAddress) && !FORWARDING_HEADERS.some((name) => headers[name] !== undefined);
}

/** An onRequest hook: answers 404 not_found unless the request comes straight from loopback. */
export async function loopbackOnly(request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
  // The socket's address, not request.ip: that one follows X-Forwarded-For if trustProxy is ever set.
  if (isLocalCaller(request.socket.remoteAddress, request.headers)) return undefined;
  request.turnLog = { ...request.turnLog, refused: 'not a loopback caller' };
  return sendError(request, reply, new ProxyError('not_found', `There is no route ${request.method} ${request.url.split('?')[0]}.`));
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Who passed an admin check (set by adminOnly): the admin key, a local caller, or a principal with a role. */
    actor?: Principal;
  }
}

const RANK: Record<AdminRole, number> = { viewer: 0, operator: 1, admin: 2 };

/**
 * A person signed in to the console (its session cookie), or null. A change made with the
 * cookie must come from the console's own origin (the cookie is SameSite=Lax, and the Origin a
 * browser sends with a POST or DELETE says where the page was): 'cross-site' otherwise.
 */
export async function consolePrincipal(access: AccessControl, request: FastifyRequest): Promise<Principal | null | 'cross-site'> {
  const signIn = access.signIn;
  const cookie = (request as FastifyRequest & { cookies?: Record<string, string | undefined> }).cookies?.[SESSION_COOKIE];
  if (!signIn || cookie === undefined) return null;
  const principal = await signIn.principalOf(cookie).catch(() => null);
  if (principal === null) return null;
  if (request.method !== 'GET' && request.method !== 'HEAD') {
    const { origin, host } = request.headers;
    if (origin === undefined || !isOwnOrigin(origin, host)) return 'cross-site';
  }
  return principal;
}

/** The admin key's holder, and a caller on this machine when no admin key is set: admin of every tenant. */
export const OPERATOR_KEY: Principal = { kind: 'static-key', id: 'admin-key', subject: 'admin key', tenant: null, grants: [{ role: 'admin', global: true }] };
export const LOCAL_CALLER: Principal = { kind: 'static-key', id: 'local', subject: 'local caller', tenant: null, grants: [{ role: 'admin', global: true }] };

/**
 * Whether `principal` holds `role` (or a stronger one): over every tenant when `tenant` is
 * 'global'; over the given tenant otherwise (a global grant, or one for its own tenant).
 */
export function holds(principal: Principal, role: AdminRole, tenant: string | null | 'global'): boolean {
  return principal.grants.some((g) => RANK[g.role] >= RANK[role] && (g.global || (tenant !== 'global' && principal.tenant === tenant)));
}

/** The strongest role a principal holds anywhere, for messages. */
const strongest = (principal: Principal): string =>
  principal.grants.length === 0 ? 'no admin role' : `the ${[...principal.grants].sort((a, b) => RANK[b.role] - RANK[a.role]).map((g) => (g.global ? `global ${g.role}` : `${g.role} (tenant ${principal.tenant ?? 'default'})`))[0]} role`;

export interface AdminNeed {
  readonly role: AdminRole;
  /** 'global': the grant must reach every tenant; 'any': any grant of the role will do (the route narrows by tenant itself). */
  readonly scope: 'global' | 'any';
}

/**
 * An onRequest hook for operator routes. Who gets in: the admin key (ADMIN_API_KEY); a managed
 * key or token whose roles include `need.role`; and, when no admin key is set, callers on this
 * machine. Anyone else gets 401 (403 for a valid credential without the role), or, with no
 * admin key set and no credentials, the 404 an unknown route gets, so the routes stay hidden.
 * Wrong keys count against FAILED_KEYS_PER_MINUTE like wrong client keys. Sets request.actor.
 */
export function adminOnly(access: AccessControl, need: AdminNeed | ((request: FastifyRequest) => AdminNeed) = { role: 'admin', scope: 'global' }, audit?: AuditLog) {
  const denied = (request: FastifyRequest, reason: string): void => {
    void audit?.record(request, { action: 'admin.denied', outcome: 'denied', tenant: request.actor?.tenant ?? null, target: { type: 'route', id: `${request.method} ${request.routeOptions.url ?? ''}` }, details: { reason } });
  };
  return async function admin(request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
    const presented = presentedKey(request);
    const retryAfterSeconds = access.failedKeys?.retryAfter(request.ip) ?? 0;
    if (retryAfterSeconds > 0) {
      request.turnLog = { ...request.turnLog, refused: 'too many failed api keys' };
      return sendError(
        request,
        reply,
        new ProxyError('rate_limited', `This address sent too many requests with a missing or wrong key within a minute (FAILED_KEYS_PER_MINUTE); retry in ${retryAfterSeconds} s.`, {
          retryAfterSeconds,
        }),
      );
    }
    if (access.isAdmin(presented)) {
      request.actor = OPERATOR_KEY;
      return undefined;
    }
    const signedIn = presented === null ? await consolePrincipal(access, request) : null;
    if (signedIn === 'cross-site') {
      request.turnLog = { ...request.turnLog, refused: 'console session from another origin' };
      return sendError(request, reply, new ProxyError('admin_only', 'A console sign-in acts only from the console itself (this request came from another origin).'));
    }
    const outcome = presented === null ? signedIn : await access.authenticate(presented, false);
    const principal = outcome !== null && !isRefusal(outcome) ? outcome : null;
    // No admin key: this machine's callers are the operator; to anyone else without a role the
    // routes do not exist.
    if (!access.adminKeySet && (isLocalCaller(request.socket.remoteAddress, request.headers) || principal === null || principal.grants.length === 0)) {
      const hidden = await loopbackOnly(request, reply);
      if (hidden) return hidden;
      request.actor = LOCAL_CALLER;
      return undefined;
    }
    if (isRefusal(outcome) && outcome.unavailable) {
      return sendError(request, reply, new ProxyError('auth_unavailable', outcome.refused, { retryAfterSeconds: 5 }));
    }
    // A credential with no role at all is no admin credential: 401, as a wrong key.
    if (principal === null || principal.grants.length === 0) {
      if (principal === null) access.failedKeys?.recordFailure(request.ip);
      request.turnLog = { ...request.turnLog, refused: 'not an admin credential' };
      if (principal !== null) request.actor = principal;
      denied(request, principal === null ? (presented === null ? 'no credential' : 'unknown or refused credential') : 'credential without an admin role');
      request.actor = undefined;
      const why = isRefusal(outcome) ? `${outcome.refused} ` : '';
      return sendError(
        request,
        reply,
        new ProxyError('invalid_api_key', `${why}This route needs the admin key (ADMIN_API_KEY) or a key or token with an admin role, sent as Authorization: Bearer <key>.`),
      );
    }
    const { role, scope } = typeof need === 'function' ? need(request) : need;
    if (!holds(principal, role, scope === 'global' ? 'global' : principal.tenant)) {
      request.turnLog = { ...request.turnLog, refused: `needs ${role}` };
      request.actor = principal;
      denied(request, `needs the ${scope === 'global' ? 'global ' : ''}${role} role`);
      request.actor = undefined;
      return sendError(
        request,
        reply,
        new ProxyError('admin_only', `This route needs the ${scope === 'global' ? 'global ' : ''}${role} role; this credential has ${strongest(principal)}.`),
      );
    }
    request.actor = principal;
    return undefined;
  };
}
