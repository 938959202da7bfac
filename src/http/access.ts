/**
 * Who may call what. Client API keys (API_KEYS, API_KEYS_FILE) guard every protocol route;
 * the admin key (ADMIN_API_KEY) guards /admin, /metrics and the console's admin actions.
 *
 * Keys are kept only as SHA-256 digests and compared in constant time; a key's fingerprint
 * (the first 16 hex digits of its digest) is what binds a session's sides and what rate limits
 * count by. Neither keys nor fingerprints are logged. Guessing is throttled per address
 * (FAILED_KEYS_PER_MINUTE).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config.js';
import { ProxyError } from '../protocols/errors.js';
import { looksLikeJwt, TokenRefused, type JwtVerifier } from '../auth/jwt.js';
import { mayChat, type KeyCheck, type KeyRegistry } from '../auth/keys.js';
import type { Principal } from '../auth/principal.js';
import type { TenantRegistry } from '../auth/tenant-registry.js';
import type { ConsoleSignIn } from '../auth/console-signin.js';

const digest = (key: string): Buffer => createHash('sha256').update(key, 'utf8').digest();

/** Where clients of each protocol put their key; the first one present counts. */
export function presentedKey(request: FastifyRequest): string | null {
  const h = request.headers;
  const auth = h.authorization;
  if (typeof auth === 'string') {
    const match = /^Bearer\s+(.+)$/i.exec(auth.trim());
    if (match) return match[1]!.trim();
  }
  for (const name of ['x-api-key', 'x-goog-api-key', 'api-key'] as const) {
    const value = h[name];
    if (typeof value === 'string' && value !== '') return value;
  }
  // Gemini clients may send ?key=; browsers' WebSockets cannot set headers.
  const query = request.query as Record<string, unknown> | undefined;
  for (const name of ['key', 'api_key'] as const) {
    const value = query?.[name];
    if (typeof value === 'string' && value !== '') return value;
  }
  return null;
}

/** Query parameters that carry a key (matched case-insensitively, after percent-decoding). */
const KEY_PARAMS = new Set(['key', 'api_key', 'api-key']);

function decodedName(name: string): string {
  try {
    return decodeURIComponent(name.replace(/\+/g, ' ')).toLowerCase();
  } catch {
    return name.toLowerCase();
  }
}

/**
 * The request URL as it may be logged: the value of every key parameter is blanked out. Names
 * are decoded first, as the query parser decodes them (`?k%65y=` is `?key=`), and every URL
 * that reaches a log goes through here.
 */
export function loggableUrl(url: string): string {
  const q = url.indexOf('?');
  if (q === -1) return url;
  const hash = url.indexOf('#', q);
  const query = url.slice(q + 1, hash === -1 ? undefined : hash);
  const redacted = query
    .split('&')
    .map((pair) => {
      const eq = pair.indexOf('=');
      const name = eq === -1 ? pair : pair.slice(0, eq);
      return KEY_PARAMS.has(decodedName(name)) ? `${name}=[redacted]` : pair;
    })
    .join('&');
  return `${url.slice(0, q + 1)}${redacted}`;
}

export interface Client {
  /** What binds a session's side: the principal's id, or null when no credentials are required. */
  readonly key: string | null;
  /** What per-client limits count by: the principal's id, or the address without one. */
  readonly id: string;
  /** Who is calling, when they showed credentials; null for an anonymous caller. */
  readonly principal: Principal | null;
}

declare module 'fastify' {
  interface FastifyRequest {
    client: Client;
  }
  interface FastifyContextConfig {
    /** Who may call the route: anyone, clients with a valid key, or the admin. Default: client. */
    access?: 'public' | 'client' | 'admin';
  }
}

const WINDOW_MS = 60_000;

/**
 * Requests with a missing or wrong key, counted per address in fixed one-minute windows. Past
 * the limit an address is refused until its window ends, even with a right key, so guessing
 * gains nothing. Windows are kept in the order they started, which makes dropping ended ones
 * cheap, and at most `maxAddresses` at once (the oldest go first): a spray of addresses cannot
 * grow memory without bound.
 */
export class FailedKeyLimit {
  private readonly windows = new Map<string, { readonly start: number; failures: number }>();

  constructor(
    readonly perMinute: number,
    private readonly maxAddresses = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Whole seconds until `address` may try again; 0 when it may now. */
  retryAfter(address: string): number {
    const window = this.current(address);
    if (window === undefined || window.failures < this.perMinute) return 0;
    return Math.max(1, Math.ceil((window.start + WINDOW_MS - this.now()) / 1000));
  }

  recordFailure(address: string): void {
    const window = this.current(address);
    if (window !== undefined) {
      window.failures++;
      return;
    }
    const now = this.now();
    for (const [tracked, { start }] of this.windows) {
      if (start + WINDOW_MS > now && this.windows.size < this.maxAddresses) break;
      this.windows.delete(tracked);
    }
    this.windows.set(address, { start: now, failures: 1 });
  }

  /** Addresses tracked now. */
  get size(): number {
    return this.windows.size;
  }

  private current(address: string) {
    const window = this.windows.get(address);
    if (window === undefined || window.start + WINDOW_MS > this.now()) return window;
    this.windows.delete(address);
    return undefined;
  }
}

/** Why presented credentials were not taken: 401, or 503 when the identity provider cannot be reached. */
export interface Refusal {
  readonly refused: string;
  readonly unavailable?: boolean;
}

export type Authentication = Principal | Refusal | null;

export const isRefusal = (a: Authentication | undefined): a is Refusal => a !== null && a !== undefined && 'refused' in a;

export interface AccessOptions {
  readonly failedKeysPerMinute?: number;
  /** JWT bearer tokens (OIDC_ISSUER / JWKS_URL). */
  readonly jwt?: JwtVerifier | null;
  /** Managed keys (/admin/keys). */
  readonly managed?: KeyRegistry | null;
  /** Tenants' limits (/admin/tenants). */
  readonly tenants?: TenantRegistry | null;
  /** Console sign-in (OIDC_CLIENT_ID). */
  readonly signIn?: ConsoleSignIn | null;
  /** REQUIRE_API_KEY: credentials are required even when no static key or issuer is configured. */
  readonly requireKeys?: boolean;
}

function managedOutcome(found: KeyCheck, forChat: boolean): Authentication {
  if (found === null || 'refused' in found) return found;
  if (forChat && !mayChat(found.key)) return { refused: "This API key has no 'client' scope: it may call the admin routes its roles allow, not the model routes." };
  return found.principal;
}

export class AccessControl {
  private readonly keys: readonly Buffer[];
  private readonly admin: Buffer | null;
  /** Null when FAILED_KEYS_PER_MINUTE is 0. */
  readonly failedKeys: FailedKeyLimit | null;
  readonly jwt: JwtVerifier | null;
  readonly managed: KeyRegistry | null;
  readonly tenants: TenantRegistry | null;
  readonly signIn: ConsoleSignIn | null;
  private readonly requireKeys: boolean;

  constructor(keys: readonly string[], adminKey: string, options: AccessOptions | number = {}) {
    const o: AccessOptions = typeof options === 'number' ? { failedKeysPerMinute: options } : options;
    this.keys = [...new Set(keys)].map(digest);
    this.admin = adminKey ? digest(adminKey) : null;
    const failed = o.failedKeysPerMinute ?? 0;
    this.failedKeys = failed > 0 ? new FailedKeyLimit(failed) : null;
    this.jwt = o.jwt ?? null;
    this.managed = o.managed ?? null;
    this.tenants = o.tenants ?? null;
    this.signIn = o.signIn ?? null;
    this.requireKeys = o.requireKeys ?? false;
  }

  /** Static keys from API_KEYS and API_KEYS_FILE (one a line, `#` comments, blank lines ignored). */
  static staticKeys(config: Config): string[] {
    const keys = [...config.apiKeys];
    if (config.apiKeysFile) {
      let text: string;
      try {
        text = readFileSync(config.apiKeysFile, 'utf8');
      } catch (err) {
        throw new Error(`cannot read API_KEYS_FILE '${config.apiKeysFile}': ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      }
      for (const line of text.split(/\r?\n/)) {
        const key = line.replace(/#.*/, '').trim();
        if (key) keys.push(key);
      }
      if (keys.length === 0) throw new Error(`API_KEYS_FILE '${config.apiKeysFile}' holds no keys`);
    }
    return keys;
  }

  static fromConfig(config: Config, options: Omit<AccessOptions, 'failedKeysPerMinute' | 'requireKeys'> = {}): AccessControl {
    return new AccessControl(AccessControl.staticKeys(config), config.adminApiKey, {
      ...options,
      failedKeysPerMinute: config.failedKeysPerMinute,
      requireKeys: config.requireApiKey,
    });
  }

  /** Whether protocol routes need credentials: static keys, an issuer, or REQUIRE_API_KEY. */
  get keysRequired(): boolean {
    return this.keys.length > 0 || this.jwt !== null || this.requireKeys;
  }

  get adminKeySet(): boolean {
    return this.admin !== null;
  }

  get keyCount(): number {
    return this.keys.length;
  }

  /** The fingerprint of a valid static client key, or null. Takes the same time whichever key matches. */
  fingerprint(key: string | null): string | null {
    if (key === null) return null;
    const d = digest(key);
    let found = false;
    for (const k of this.keys) found = timingSafeEqual(k, d) || found;
    return found ? d.toString('hex').slice(0, 16) : null;
  }

  isAdmin(key: string | null): boolean {
    return this.admin !== null && key !== null && timingSafeEqual(this.admin, digest(key));
  }

  /**
   * Who presented credentials speak for: a static key, a managed key or a token (verified
   * asynchronously: only then is a promise returned). Null when they are none of these.
   * `forChat` refuses a managed key without the `client` scope.
   */
  authenticate(presented: string | null, forChat = true): Authentication | Promise<Authentication> {
    if (presented === null) return null;
    const fp = this.fingerprint(presented);
    if (fp !== null) return { kind: 'static-key', id: fp, subject: `key:${fp}`, tenant: null, grants: [] };
    const managed = this.managed?.check(presented) ?? null;
    if (managed instanceof Promise) return managed.then((found) => managedOutcome(found, forChat));
    if (managed !== null) return managedOutcome(managed, forChat);
    if (this.jwt !== null && looksLikeJwt(presented)) {
      return this.jwt.verify(presented).then(
        (principal): Authentication => principal,
        (err: unknown): Authentication => (err instanceof TokenRefused ? { refused: err.message, unavailable: err.unavailable } : { refused: 'The bearer token could not be verified.', unavailable: true }),
      );
    }
    return null;
  }
}

/**
 * An onRequest hook: who is calling, and may they? 401 in the route's protocol's shape, and 429
 * to an address past FAILED_KEYS_PER_MINUTE (request.ip: TRUST_PROXY decides whose it is).
 */
export function identifyClient(access: AccessControl, sendError: (request: FastifyRequest, reply: FastifyReply, error: ProxyError) => FastifyReply) {
  const refuse = (request: FastifyRequest, reply: FastifyReply, presented: string | null, outcome: Authentication): void => {
    if (isRefusal(outcome) && outcome.unavailable) {
      request.turnLog = { ...request.turnLog, refused: 'identity provider unavailable' };
      sendError(request, reply, new ProxyError('auth_unavailable', outcome.refused, { retryAfterSeconds: 5 }));
      return;
    }
    access.failedKeys?.recordFailure(request.ip);
    request.turnLog = { ...request.turnLog, refused: presented === null ? 'no api key' : isRefusal(outcome) ? outcome.refused : 'unknown api key' };
    sendError(
      request,
      reply,
      new ProxyError(
        'invalid_api_key',
        presented === null
          ? `This proxy requires an API key${access.jwt ? ' or a token from its identity provider' : ''}: send it as Authorization: Bearer <key> (or x-api-key, x-goog-api-key, ?key=).`
          : isRefusal(outcome)
            ? outcome.refused
            : 'The API key is not valid for this proxy.',
      ),
    );
  };
  const admit = (request: FastifyRequest, principal: Principal): void => {
    request.client = { key: principal.id, id: principal.id, principal };
  };

  return function identify(request: FastifyRequest, reply: FastifyReply, done: () => void): void {
    const { config, url } = request.routeOptions; // a getter that builds an object: read it once
    // Unknown routes are public, so that they get their 404.
    const needs = config?.access ?? (url === undefined ? 'public' : 'client');
    if (!access.keysRequired || needs !== 'client') {
      // Without required keys, a managed key still says who is calling (its tenant, its limits).
      const managed = needs === 'client' && access.managed?.any ? access.managed.check(presentedKey(request) ?? '') : null;
      const settle = (found: KeyCheck): void => {
        request.client = found !== null && 'principal' in found ? { key: null, id: found.principal.id, principal: found.principal } : { key: null, id: request.ip, principal: null };
        done();
      };
      if (managed instanceof Promise) void managed.then(settle, () => settle(null));
      else settle(managed);
      return;
    }
    const retryAfterSeconds = access.failedKeys?.retryAfter(request.ip) ?? 0;
    if (retryAfterSeconds > 0) {
      request.turnLog = { ...request.turnLog, refused: 'too many failed api keys' };
      const limit = access.failedKeys!.perMinute;
      sendError(
        request,
        reply,
        new ProxyError(
          'rate_limited',
          `This address sent ${limit} requests with a missing or wrong API key within a minute (FAILED_KEYS_PER_MINUTE); its requests are refused for ${retryAfterSeconds} s more.`,
          { retryAfterSeconds },
        ),
      );
      return;
    }
    const presented = presentedKey(request);
    const outcome = access.authenticate(presented);
    if (outcome instanceof Promise) {
      void outcome
        .then((settled) => {
          if (settled === null || isRefusal(settled)) return refuse(request, reply, presented, settled);
          admit(request, settled);
          done();
        })
        .catch(() => refuse(request, reply, presented, { refused: 'The credential could not be checked now; retry shortly.', unavailable: true }));
      return;
    }
    if (outcome === null || isRefusal(outcome)) return refuse(request, reply, presented, outcome);
    admit(request, outcome);
    done();
  };
}
