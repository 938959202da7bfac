/**
 * Console sign-in (OIDC_ISSUER with OIDC_CLIENT_ID): the OpenID Connect authorization code
 * flow with PKCE, by openid-client. A person signs in at their identity provider and comes back
 * with an ID token, whose claims make their principal exactly as a JWT's do (subject, tenant,
 * roles); the console then knows them by a session cookie (HttpOnly, SameSite=Lax, Secure on
 * https), and shows and allows what their roles and tenant allow.
 *
 * Sign-ins in progress (state, nonce, PKCE verifier) and signed-in sessions are kept
 * server-side under random ids, in memory on one instance and in Redis in cluster mode, so a
 * callback may land on any instance. The cookie holds only the id.
 */
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import * as oidc from 'openid-client';
import { claimsPrincipal, type ClaimSettings } from './jwt.js';
import type { Principal } from './principal.js';

export const SESSION_COOKIE = 'motive_console';
export const LOGIN_COOKIE = 'motive_console_login';
const LOGIN_MS = 10 * 60_000;

export interface SignInSettings extends ClaimSettings {
  readonly issuer: string;
  readonly clientId: string;
  readonly clientSecret: string;
  /** Where people open the console: the callback is `${publicUrl}/console/callback`. */
  readonly publicUrl: string;
  readonly sessionMs: number;
}

interface PendingLogin {
  readonly state: string;
  readonly nonce: string;
  readonly verifier: string;
}

/** Short-lived records by id: memory, or Redis keys with a TTL in cluster mode. */
export interface SignInStore {
  put(kind: 'login' | 'session', id: string, value: unknown, ttlMs: number): Promise<void>;
  take(kind: 'login', id: string): Promise<unknown>;
  get(kind: 'session', id: string): Promise<unknown>;
  delete(kind: 'session', id: string): Promise<void>;
}

export class MemorySignInStore implements SignInStore {
  private readonly records = new Map<string, { value: unknown; until: number }>();

  async put(kind: string, id: string, value: unknown, ttlMs: number): Promise<void> {
    const now = Date.now();
    for (const [key, record] of this.records) if (record.until <= now) this.records.delete(key);
    this.records.set(`${kind}:${id}`, { value, until: now + ttlMs });
  }

  async take(kind: string, id: string): Promise<unknown> {
    const value = await this.get(kind, id);
    this.records.delete(`${kind}:${id}`);
    return value;
  }

  async get(kind: string, id: string): Promise<unknown> {
    const record = this.records.get(`${kind}:${id}`);
    return record && record.until > Date.now() ? record.value : undefined;
  }

  async delete(kind: string, id: string): Promise<void> {
    this.records.delete(`${kind}:${id}`);
  }
}

export class RedisSignInStore implements SignInStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private key(kind: string, id: string): string {
    return `${this.prefix}:console-${kind}:${id}`;
  }

  async put(kind: string, id: string, value: unknown, ttlMs: number): Promise<void> {
    await this.redis.set(this.key(kind, id), JSON.stringify(value), 'PX', ttlMs);
  }

  async take(kind: string, id: string): Promise<unknown> {
    const json = await this.redis.getdel(this.key(kind, id));
    return json === null ? undefined : JSON.parse(json);
  }

  async get(kind: string, id: string): Promise<unknown> {
    const json = await this.redis.get(this.key(kind, id));
    return json === null ? undefined : JSON.parse(json);
  }

  async delete(kind: string, id: string): Promise<void> {
    await this.redis.del(this.key(kind, id));
  }
}

const randomId = (): string => randomBytes(24).toString('base64url');
const ID_SHAPE = /^[A-Za-z0-9_-]{32}$/;

export class SignInFailed extends Error {
  override readonly name = 'SignInFailed';
}

export class ConsoleSignIn {
  private configuration: Promise<oidc.Configuration> | null = null;

  constructor(
    readonly settings: SignInSettings,
    private readonly store: SignInStore,
  ) {}

  get secureCookies(): boolean {
    return this.settings.publicUrl.startsWith('https:');
  }

  get callbackUrl(): string {
    return `${this.settings.publicUrl.replace(/\/+$/, '')}/console/callback`;
  }

  /** The provider's metadata, discovered once (again after a failure). */
  private config(): Promise<oidc.Configuration> {
    this.configuration ??= oidc
      .discovery(new URL(this.settings.issuer), this.settings.clientId, this.settings.clientSecret, undefined, {
        ...(this.settings.issuer.startsWith('http:') ? { execute: [oidc.allowInsecureRequests] } : {}),
        timeout: 5,
      })
      .catch((err: unknown) => {
        this.configuration = null;
        throw new SignInFailed(`the identity provider cannot be reached: ${err instanceof Error ? err.message : String(err)}`);
      });
    return this.configuration;
  }

  /** Starts a sign-in: the provider's authorization URL, and the id of the pending login (the login cookie). */
  async begin(): Promise<{ url: string; login: string }> {
    const config = await this.config();
    const pending: PendingLogin = { state: oidc.randomState(), nonce: oidc.randomNonce(), verifier: oidc.randomPKCECodeVerifier() };
    const login = randomId();
    await this.store.put('login', login, pending, LOGIN_MS);
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: this.callbackUrl,
      scope: 'openid profile email',
      code_challenge: await oidc.calculatePKCECodeChallenge(pending.verifier),
      code_challenge_method: 'S256',
      state: pending.state,
      nonce: pending.nonce,
    });
    return { url: url.href, login };
  }

  /** Completes a sign-in from the callback's URL: the person's principal. */
  async complete(callbackUrl: URL, login: string | undefined): Promise<Principal> {
    if (login === undefined || !ID_SHAPE.test(login)) throw new SignInFailed('no sign-in was started in this browser (or it took longer than 10 minutes)');
    const pending = (await this.store.take('login', login)) as PendingLogin | undefined;
    if (!pending) throw new SignInFailed('no sign-in was started in this browser (or it took longer than 10 minutes)');
    const config = await this.config();
    let claims: oidc.IDToken | undefined;
    try {
      const tokens = await oidc.authorizationCodeGrant(config, callbackUrl, {
        pkceCodeVerifier: pending.verifier,
        expectedState: pending.state,
        expectedNonce: pending.nonce,
        idTokenExpected: true,
      });
      claims = tokens.claims();
    } catch (err) {
      throw new SignInFailed(err instanceof Error ? err.message : String(err));
    }
    if (!claims) throw new SignInFailed('the identity provider sent no ID token');
    try {
      return claimsPrincipal(claims as Record<string, unknown> & { sub: string; iss: string }, this.settings);
    } catch (err) {
      throw new SignInFailed(err instanceof Error ? err.message : String(err));
    }
  }

  /** A signed-in session for `principal`; its id is the session cookie. */
  async open(principal: Principal): Promise<string> {
    const id = randomId();
    await this.store.put('session', id, principal, this.settings.sessionMs);
    return id;
  }

  async principalOf(session: string | undefined): Promise<Principal | null> {
    if (session === undefined || !ID_SHAPE.test(session)) return null;
    return ((await this.store.get('session', session)) as Principal | undefined) ?? null;
  }

  async close(session: string | undefined): Promise<void> {
    if (session !== undefined && ID_SHAPE.test(session)) await this.store.delete('session', session);
  }
}
