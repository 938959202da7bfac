/**
 * JWT bearer tokens (OIDC_ISSUER or JWKS_URL, with JWT_AUDIENCE): a client sends a token its
 * identity provider issued wherever it would send a key, and it is verified with jose against
 * the issuer's published keys. The key set is fetched on first use, cached, and fetched again
 * when a token names a key id it does not hold (jose's remote JWK set, with a cooldown so
 * unknown ids cannot make it hammer the issuer).
 *
 * Refused: unsigned tokens (`alg: none`), symmetric algorithms (an HS256 token "signed" with the
 * issuer's public key is the classic confusion attack; only public-key algorithms are taken),
 * another issuer, another audience, expired or not-yet-valid tokens (beyond JWT_CLOCK_SKEW_SECONDS),
 * tokens without `sub` or `exp`. Each refusal says which rule failed and nothing about keys.
 */
import {
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors as joseErrors,
  jwtVerify,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';
import { fingerprintOf, grantsOf, type Principal } from './principal.js';

/** Public-key algorithms only: no HS*, no none. */
export const JWT_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];

/** Which claims name a principal's tenant and roles (JWT_TENANT_CLAIM, JWT_ROLES_CLAIM). */
export interface ClaimSettings {
  /** Claim (a dotted path reaches into objects) naming the principal's tenant. */
  readonly tenantClaim: string;
  /** Claim holding the principal's roles: an array, or a space-separated string. */
  readonly rolesClaim: string;
}

export interface JwtSettings extends ClaimSettings {
  /** The `iss` tokens must carry; with discovery, also where the metadata is. */
  readonly issuer: string;
  /** Fetch `issuer/.well-known/openid-configuration` for the key set's address. */
  readonly discovery: boolean;
  /** The key set's address when not discovered. */
  readonly jwksUrl: string | null;
  /** Accepted `aud` values (any one). */
  readonly audience: readonly string[];
  readonly clockSkewSeconds: number;
}

/** Why a token was not taken: 401 for the token's fault, 503 when the issuer cannot be reached. */
export class TokenRefused extends Error {
  constructor(
    message: string,
    readonly unavailable = false,
  ) {
    super(message);
    this.name = 'TokenRefused';
  }
}

const TENANT_NAME = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$/;
const JWT_SHAPE = /^[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*$/;
const CACHE_MAX = 10_000;
const CACHE_MS = 60_000;
const DISCOVERY_RETRY_MS = 5_000;
/** An unknown key id fetches the key set again, at most once in this long (jose's cooldown). */
const JWKS_COOLDOWN_MS = 5_000;

/** Whether a presented credential is shaped like a JWS compact token (header.payload.signature). */
export const looksLikeJwt = (credential: string): boolean => credential.length < 16_384 && JWT_SHAPE.test(credential);

function claimAt(payload: JWTPayload, path: string): unknown {
  let value: unknown = payload;
  for (const part of path.split('.')) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}

/** The principal a verified token's (or ID token's) claims make: subject, tenant, roles. */
export function claimsPrincipal(payload: JWTPayload, settings: ClaimSettings): Principal {
  const sub = String(payload.sub);
  let tenant: string | null = null;
  const tenantValue = claimAt(payload, settings.tenantClaim);
  if (tenantValue !== undefined && tenantValue !== null && tenantValue !== '') {
    const name = typeof tenantValue === 'number' ? String(tenantValue) : tenantValue;
    if (typeof name !== 'string' || !TENANT_NAME.test(name)) {
      throw new TokenRefused(`The token's ${settings.tenantClaim} claim is not a tenant name (letters, digits and . _ : @ -, at most 64).`);
    }
    tenant = name;
  }
  const rolesValue = claimAt(payload, settings.rolesClaim);
  const roles = Array.isArray(rolesValue)
    ? rolesValue.filter((r): r is string => typeof r === 'string')
    : typeof rolesValue === 'string'
      ? rolesValue.split(/\s+/).filter(Boolean)
      : [];
  // A role for "its own tenant" needs a tenant claim: without one, only global: roles count, so
  // that an identity provider's plain `admin` (meant for another application, say) does not
  // become admin of the default tenant.
  const grants = grantsOf(roles).filter((g) => g.global || tenant !== null);
  return { kind: 'jwt', id: fingerprintOf(`jwt\n${payload.iss ?? ''}\n${sub}`), subject: sub.slice(0, 200), tenant, grants };
}

export class JwtVerifier {
  private keys: JWTVerifyGetKey | null = null;
  private discovering: Promise<JWTVerifyGetKey> | null = null;
  private discoveryFailedAt = 0;
  private discoveryError = '';
  /** Tokens verified lately, until they expire or for a minute: a turn does not verify again. */
  private readonly verified = new Map<string, { readonly principal: Principal; readonly until: number }>();

  constructor(
    readonly settings: JwtSettings,
    private readonly fetchImpl: typeof fetch = fetch,
  ) {
    if (!settings.discovery) this.keys = createRemoteJWKSet(new URL(settings.jwksUrl!), { timeoutDuration: 5_000, cooldownDuration: JWKS_COOLDOWN_MS });
  }

  /** Fetches the issuer's metadata now (at start), so that a wrong OIDC_ISSUER shows at once; never throws. */
  async warmUp(): Promise<string | null> {
    try {
      await this.keySet();
      return null;
    } catch (err) {
      return (err as Error).message;
    }
  }

  async verify(token: string): Promise<Principal> {
    const now = Date.now();
    const hit = this.verified.get(token);
    if (hit !== undefined) {
      if (hit.until > now) return hit.principal;
      this.verified.delete(token);
    }
    let alg: unknown;
    try {
      alg = decodeProtectedHeader(token).alg;
    } catch {
      throw new TokenRefused('The bearer token is not a well-formed JWT.');
    }
    if (typeof alg !== 'string' || alg.toLowerCase() === 'none') throw new TokenRefused('Unsigned tokens (alg: none) are refused.');
    if (!JWT_ALGORITHMS.includes(alg)) throw new TokenRefused(`Tokens signed with ${alg.slice(0, 16)} are refused: only the issuer's public-key algorithms are accepted.`);
    const keys = await this.keySet();
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keys, {
        issuer: this.settings.issuer,
        audience: [...this.settings.audience],
        algorithms: JWT_ALGORITHMS,
        clockTolerance: this.settings.clockSkewSeconds,
        requiredClaims: ['sub', 'exp'],
      }));
    } catch (err) {
      throw refusalFor(err);
    }
    const principal = claimsPrincipal(payload, this.settings);
    if (this.verified.size >= CACHE_MAX) this.verified.delete(this.verified.keys().next().value!);
    this.verified.set(token, { principal, until: Math.min(now + CACHE_MS, (payload.exp ?? 0) * 1000 + this.settings.clockSkewSeconds * 1000) });
    return principal;
  }

  private async keySet(): Promise<JWTVerifyGetKey> {
    if (this.keys) return this.keys;
    if (Date.now() - this.discoveryFailedAt < DISCOVERY_RETRY_MS) {
      throw new TokenRefused(`The identity provider cannot be reached now (${this.discoveryError}); retry shortly.`, true);
    }
    this.discovering ??= this.discover().finally(() => {
      this.discovering = null;
    });
    return this.discovering;
  }

  private async discover(): Promise<JWTVerifyGetKey> {
    const url = `${this.settings.issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
    try {
      const response = await this.fetchImpl(url, { signal: AbortSignal.timeout(5_000), headers: { accept: 'application/json' } });
      if (!response.ok) throw new Error(`discovery answered ${response.status}`);
      const metadata = (await response.json()) as { issuer?: unknown; jwks_uri?: unknown };
      if (metadata.issuer !== this.settings.issuer) throw new Error(`discovery names issuer '${String(metadata.issuer).slice(0, 200)}', not OIDC_ISSUER`);
      if (typeof metadata.jwks_uri !== 'string') throw new Error('discovery names no jwks_uri');
      this.keys = createRemoteJWKSet(new URL(metadata.jwks_uri), { timeoutDuration: 5_000, cooldownDuration: JWKS_COOLDOWN_MS });
      return this.keys;
    } catch (err) {
      this.discoveryFailedAt = Date.now();
      this.discoveryError = err instanceof Error ? err.message : String(err);
      throw new TokenRefused(`The identity provider cannot be reached now (${this.discoveryError}); retry shortly.`, true);
    }
  }
}

function refusalFor(err: unknown): TokenRefused {
  if (err instanceof TokenRefused) return err;
  if (err instanceof joseErrors.JWTExpired) return new TokenRefused('The bearer token has expired.');
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    switch (err.claim) {
      case 'iss':
        return new TokenRefused('The bearer token is from another issuer.');
      case 'aud':
        return new TokenRefused('The bearer token is meant for another audience (aud), not this proxy.');
      case 'nbf':
      case 'iat':
        return new TokenRefused('The bearer token is not valid yet (nbf).');
      default:
        return new TokenRefused(`The bearer token lacks a usable ${err.claim} claim.`);
    }
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return new TokenRefused("The bearer token's algorithm is refused: only the issuer's public-key algorithms are accepted.");
  if (err instanceof joseErrors.JWKSNoMatchingKey) return new TokenRefused("The bearer token is signed with a key the issuer does not publish.");
  if (err instanceof joseErrors.JWKSMultipleMatchingKeys) return new TokenRefused('The bearer token names no key id (kid) and the issuer publishes several keys.');
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return new TokenRefused("The bearer token's signature does not verify against the issuer's keys.");
  if (err instanceof joseErrors.JWKSTimeout) return new TokenRefused("The identity provider's keys could not be fetched in time; retry shortly.", true);
  // The key set answered something other than 200 or was not a key set: the provider's fault, not the token's.
  if (err instanceof joseErrors.JWKSInvalid || (err instanceof joseErrors.JOSEError && err.code === 'ERR_JOSE_GENERIC')) {
    return new TokenRefused("The identity provider's keys cannot be fetched now; retry shortly.", true);
  }
  if (err instanceof joseErrors.JOSEError) return new TokenRefused('The bearer token is not a well-formed JWT.');
  // A failed fetch of the key set (the issuer is down, refuses, answers nonsense).
  return new TokenRefused("The identity provider's keys cannot be fetched now; retry shortly.", true);
}
