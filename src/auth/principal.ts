/**
 * Who a request speaks for. Every way in (a static key, a managed key, a JWT, nothing at all)
 * ends as one Principal, and everything after the door reads only this: sessions bind a side to
 * `id`, limits count by it, and (issue: tenants) isolation and admin roles read `tenant` and
 * `roles`.
 */
import { createHash } from 'node:crypto';

/** Admin roles, weakest first: each includes what the ones before it may do. */
export const ADMIN_ROLES = ['viewer', 'operator', 'admin'] as const;
export type AdminRole = (typeof ADMIN_ROLES)[number];

/** An admin role, either over every tenant (`tenant: null` and `global`) or over one. */
export interface Grant {
  readonly role: AdminRole;
  /** True when the role reaches every tenant; false when only the principal's own. */
  readonly global: boolean;
}

export interface Principal {
  readonly kind: 'static-key' | 'managed-key' | 'jwt';
  /**
   * What binds a session's side and what per-client limits count by: 16 hex digits of a
   * SHA-256 digest, never the secret. A static key's digest; a managed key's id (so a rotated
   * key keeps its sessions); a token's issuer and subject (so a refreshed token does too).
   */
  readonly id: string;
  /** Shown to people (audit trail, console): `key:<fingerprint>`, the key's name, the token's `sub`. */
  readonly subject: string;
  /** The tenant the principal acts in; null is the default tenant (static keys, tokens without the claim). */
  readonly tenant: string | null;
  readonly grants: readonly Grant[];
  /** A managed key's own limits (0 or absent: none). */
  readonly limits?: PrincipalLimits;
}

export interface PrincipalLimits {
  readonly requests_per_minute?: number;
  readonly new_sessions_per_minute?: number;
  readonly max_held?: number;
  readonly max_live_sessions?: number;
}

export const fingerprintOf = (material: string): string => createHash('sha256').update(material, 'utf8').digest('hex').slice(0, 16);

/**
 * Roles as tokens and managed keys write them: `viewer`, `operator`, `admin` for the
 * principal's own tenant, `global:viewer` … for every tenant. Anything else is ignored (an
 * identity provider's roles are shared with other applications).
 */
export function grantsOf(roles: readonly string[]): Grant[] {
  const grants: Grant[] = [];
  for (const raw of roles) {
    const global = raw.startsWith('global:');
    const role = global ? raw.slice('global:'.length) : raw;
    if ((ADMIN_ROLES as readonly string[]).includes(role)) grants.push({ role: role as AdminRole, global });
  }
  return grants;
}

/** The roles a grant list spells, as grantsOf reads them. */
export const rolesOf = (grants: readonly Grant[]): string[] => grants.map((g) => (g.global ? `global:${g.role}` : g.role));
