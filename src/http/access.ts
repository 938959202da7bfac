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
  /** Fingerprint of the client's API key, or null when keys are not configured. */
  readonly key: string | null;
  /** What per-client limits count by: the key's fingerprint, or the address without keys. */
  readonly id: string;
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

export class AccessControl {
  private readonly keys: readonly Buffer[];
  private readonly admin: Buffer | null;
  /** Null when FAILED_KEYS_PER_MINUTE is 0. */
  readonly failedKeys: FailedKeyLimit | null;

  constructor(keys: readonly string[], adminKey: string, failedKeysPerMinute = 0) {
    this.keys = [...new Set(keys)].map(digest);
    this.admin = adminKey ? digest(adminKey) : null;
    this.failedKeys = failedKeysPerMinute > 0 ? new FailedKeyLimit(failedKeysPerMinute) : null;
  }

  /** Keys from API_KEYS and API_KEYS_FILE (one a line, `#` comments, blank lines ignored). */
  static fromConfig(config: Config): AccessControl {
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
    return new AccessControl(keys, config.adminApiKey, config.failedKeysPerMinute);
  }

  get keysRequired(): boolean {
    return this.keys.length > 0;
  }

  get adminKeySet(): boolean {
    return this.admin !== null;
  }

  get keyCount(): number {
    return this.keys.length;
  }

  /** The fingerprint of a valid client key, or null. Takes the same time whichever key matches. */
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
}

/**
 * An onRequest hook: who is calling, and may they? 401 in the route's protocol's shape, and 429
 * to an address past FAILED_KEYS_PER_MINUTE (request.ip: TRUST_PROXY decides whose it is).
 */
export function identifyClient(access: AccessControl, sendError: (request: FastifyRequest, reply: FastifyReply, error: ProxyError) => FastifyReply) {
  return function identify(request: FastifyRequest, reply: FastifyReply, done: () => void): void {
    const { config, url } = request.routeOptions; // a getter that builds an object: read it once
    // Unknown routes are public, so that they get their 404.
    const needs = config?.access ?? (url === undefined ? 'public' : 'client');
    if (!access.keysRequired || needs !== 'client') {
      request.client = { key: null, id: request.ip };
      return done();
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
    const key = access.fingerprint(presented);
    if (key === null) {
      access.failedKeys?.recordFailure(request.ip);
      request.turnLog = { ...request.turnLog, refused: presented === null ? 'no api key' : 'unknown api key' };
      sendError(
        request,
        reply,
        new ProxyError(
          'invalid_api_key',
          presented === null
            ? 'This proxy requires an API key: send it as Authorization: Bearer <key> (or x-api-key, x-goog-api-key, ?key=).'
            : 'The API key is not valid for this proxy.',
        ),
      );
      return;
    }
    request.client = { key, id: key };
    done();
  };
}
