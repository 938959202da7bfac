/**
 * Managed API keys: issued, rotated and revoked through /admin/keys while the service runs.
 *
 * A key is `mp_` + 30 random base62 characters (178 bits) + a 6-character base62 CRC-32 of
 * them, so a leaked key is recognisable by its shape and a typo is caught before any lookup.
 * It is shown once, when made; the service keeps only its SHA-256 digest. Presented keys are
 * looked up by their digest, so the time a lookup takes depends on the digest, never on how
 * much of a stored key the guess got right. (A fast digest is enough for keys this random:
 * slow password hashes are for secrets people choose.)
 *
 * Records live in a KeyStore: a file beside the journal for one instance (so keys survive a
 * restart), Redis in cluster mode, where every change is published and every instance applies
 * it within moments.
 */
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { z } from 'zod';
import { fingerprintOf, grantsOf, type Principal } from './principal.js';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const BODY_LENGTH = 30;
export const KEY_PREFIX = 'mp_';
const KEY_SHAPE = /^mp_[0-9A-Za-z]{36}$/;

function base62(length: number): string {
  let out = '';
  for (let i = 0; i < length; i++) out += BASE62[randomInt(62)];
  return out;
}

function checksumOf(body: string): string {
  let n = crc32(body);
  let out = '';
  for (let i = 0; i < 6; i++) {
    out = BASE62[n % 62] + out;
    n = Math.floor(n / 62);
  }
  return out;
}

/** A new key: `mp_`, 30 random characters, a 6-character checksum. */
export function newKeySecret(): string {
  const body = base62(BODY_LENGTH);
  return `${KEY_PREFIX}${body}${checksumOf(body)}`;
}

/** Whether `candidate` has a managed key's shape and a right checksum (what a secret scanner checks). */
export function isManagedKeyShape(candidate: string): boolean {
  if (!KEY_SHAPE.test(candidate)) return false;
  const body = candidate.slice(KEY_PREFIX.length, KEY_PREFIX.length + BODY_LENGTH);
  return candidate.slice(KEY_PREFIX.length + BODY_LENGTH) === checksumOf(body);
}

export const secretDigest = (secret: string): string => createHash('sha256').update(secret, 'utf8').digest('hex');

export const SCOPES = ['client', 'viewer', 'operator', 'admin', 'global:viewer', 'global:operator', 'global:admin'] as const;

export const limitsSchema = z
  .object({
    requests_per_minute: z.number().int().min(0).max(1_000_000).optional(),
    new_sessions_per_minute: z.number().int().min(0).max(1_000_000).optional(),
    max_held: z.number().int().min(0).max(1_000_000).optional(),
    max_live_sessions: z.number().int().min(0).max(1_000_000).optional(),
  })
  .strict();
export type KeyLimits = z.infer<typeof limitsSchema>;

export const TENANT_NAME = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$/;

/** What POST /admin/keys takes. */
export const createKeySchema = z
  .object({
    name: z.string().trim().min(1).max(100),
    tenant: z.string().regex(TENANT_NAME, { error: 'letters, digits and . _ : @ -, at most 64, starting with a letter or digit' }).nullable().optional(),
    scopes: z.array(z.enum(SCOPES)).min(1).max(SCOPES.length).optional(),
    expires_at: z.iso.datetime({ offset: true }).optional(),
    expires_in_seconds: z.number().int().positive().max(10 * 365 * 24 * 3600).optional(),
    limits: limitsSchema.optional(),
  })
  .strict()
  .refine((v) => v.expires_at === undefined || v.expires_in_seconds === undefined, { error: 'give expires_at or expires_in_seconds, not both' });
export type CreateKey = z.infer<typeof createKeySchema>;

export const rotateKeySchema = z
  .object({
    /** How long the key's current secrets keep working beside the new one. */
    overlap_seconds: z.number().int().min(0).max(30 * 24 * 3600).optional(),
  })
  .strict();

export interface KeySecret {
  /** SHA-256 of the secret, hex. */
  readonly digest: string;
  /** The secret's first characters (`mp_` and 4 more), to tell secrets apart in lists. */
  readonly hint: string;
  readonly created_at: string;
  /** Set when a rotation retires the secret: it works until then. */
  readonly expires_at: string | null;
}

export interface ManagedKey {
  readonly id: string;
  readonly name: string;
  readonly tenant: string | null;
  readonly scopes: readonly string[];
  readonly limits: KeyLimits;
  readonly created_at: string;
  readonly created_by: string;
  readonly expires_at: string | null;
  readonly revoked_at: string | null;
  readonly secrets: readonly KeySecret[];
}

/** A key as the admin API shows it: never a digest. */
export function publicView(key: ManagedKey, now = Date.now()) {
  const { secrets, ...rest } = key;
  return {
    object: 'api_key' as const,
    ...rest,
    status: statusOf(key, now),
    secrets: secrets.filter((s) => s.expires_at === null || Date.parse(s.expires_at) > now).map(({ hint, created_at, expires_at }) => ({ hint: `${hint}…`, created_at, expires_at })),
  };
}

export function statusOf(key: ManagedKey, now = Date.now()): 'active' | 'revoked' | 'expired' {
  if (key.revoked_at !== null) return 'revoked';
  if (key.expires_at !== null && Date.parse(key.expires_at) <= now) return 'expired';
  return 'active';
}

/** Where records (keys, tenants) are kept. `put` replaces a record whole; `onChange` hears other instances' puts. */
export interface RecordStore<T> {
  load(): Promise<T[]>;
  put(record: T): Promise<void>;
  /** A record changed elsewhere (cluster mode): the registry reloads it. Null id: reload all. */
  onChange?(listener: (id: string | null) => void): void;
  get?(id: string): Promise<T | null>;
  /**
   * The key holding a secret's digest, read from the store itself (cluster mode): a key another
   * instance made a moment ago is usable here before its change notice arrives.
   */
  findByDigest?(digest: string): Promise<T | null>;
  close(): Promise<void>;
  /** Whether records survive a restart. */
  readonly durable: boolean;
}

export type KeyStore = RecordStore<ManagedKey>;

export type KeyCheck = { readonly principal: Principal; readonly key: ManagedKey } | { readonly refused: string; readonly unavailable?: boolean } | null;

/**
 * The keys in force, indexed by digest. Reads are in memory; writes go to the store first, then
 * here, so a key is never usable before it is recorded.
 */
export class KeyRegistry {
  private readonly keys = new Map<string, ManagedKey>();
  private readonly byDigest = new Map<string, string>();
  /** Each key's principal, made when the key is applied, not on every request. */
  private readonly principals = new Map<string, Principal>();

  constructor(
    private readonly store: KeyStore,
    private readonly now: () => number = Date.now,
    /** A change another instance made could not be read (Redis away): it is read at the next reconnect. */
    private readonly onError: (err: unknown) => void = () => undefined,
  ) {}

  async open(): Promise<void> {
    for (const key of await this.store.load()) this.apply(key);
    this.store.onChange?.((id) => void this.reload(id).catch(this.onError));
  }

  get durable(): boolean {
    return this.store.durable;
  }

  get size(): number {
    return this.keys.size;
  }

  /** Whether any key could be presented now (the hot path skips digesting otherwise). */
  get any(): boolean {
    return this.byDigest.size > 0;
  }

  list(): ManagedKey[] {
    return [...this.keys.values()];
  }

  get(id: string): ManagedKey | undefined {
    return this.keys.get(id);
  }

  /**
   * A presented credential: the principal of an active key, a refusal naming why, or null when
   * it is no managed key. A well-formed key this instance does not know is looked up in the
   * store (cluster mode), and only then is a promise returned.
   */
  check(presented: string): KeyCheck | Promise<KeyCheck> {
    if (!presented.startsWith(KEY_PREFIX)) return null;
    if (!isManagedKeyShape(presented)) return { refused: 'The API key is not a valid key of this proxy (its checksum does not match: a typo or a truncated copy?).' };
    const digest = secretDigest(presented);
    const id = this.byDigest.get(digest);
    const key = id === undefined ? undefined : this.keys.get(id);
    if (key !== undefined) return this.verdict(key, digest);
    if (!this.store.findByDigest) return null;
    return this.store.findByDigest(digest).then(
      (found): KeyCheck => {
        if (found === null || typeof found.id !== 'string' || !Array.isArray(found.secrets)) return null;
        this.apply(found);
        return this.verdict(found, digest);
      },
      (): KeyCheck => ({ refused: 'The API key cannot be checked now: the cluster\'s Redis cannot be reached. Retry shortly.', unavailable: true }),
    );
  }

  private verdict(key: ManagedKey, digest: string): KeyCheck {
    const now = this.now();
    const status = statusOf(key, now);
    if (status === 'revoked') return { refused: 'The API key has been revoked.' };
    if (status === 'expired') return { refused: 'The API key has expired.' };
    const secret = key.secrets.find((s) => s.digest === digest);
    if (secret === undefined) return null; // a secret a rotation dropped
    if (secret.expires_at && Date.parse(secret.expires_at) <= now) return { refused: 'The API key was rotated and this secret has been retired; use the new one.' };
    return { principal: this.principals.get(key.id) ?? principalOf(key), key };
  }

  async create(spec: CreateKey, createdBy: string): Promise<{ key: ManagedKey; secret: string }> {
    const now = new Date(this.now());
    const secret = newKeySecret();
    const expiresAt = spec.expires_at ?? (spec.expires_in_seconds ? new Date(now.getTime() + spec.expires_in_seconds * 1000).toISOString() : null);
    const key: ManagedKey = {
      id: `key_${randomBytes(9).toString('base64url')}`,
      name: spec.name,
      tenant: spec.tenant ?? null,
      scopes: spec.scopes ?? ['client'],
      limits: spec.limits ?? {},
      created_at: now.toISOString(),
      created_by: createdBy,
      expires_at: expiresAt === null ? null : new Date(expiresAt).toISOString(),
      revoked_at: null,
      secrets: [secretRecord(secret, now)],
    };
    await this.save(key);
    return { key, secret };
  }

  /** A new secret; the current ones keep working for `overlapSeconds` (0: they stop now). */
  async rotate(id: string, overlapSeconds: number): Promise<{ key: ManagedKey; secret: string }> {
    const current = this.requireActive(id);
    const now = new Date(this.now());
    const retireAt = new Date(now.getTime() + overlapSeconds * 1000).toISOString();
    const secret = newKeySecret();
    const kept = current.secrets
      .filter((s) => s.expires_at === null || Date.parse(s.expires_at) > now.getTime())
      .map((s) => ({ ...s, expires_at: s.expires_at !== null && s.expires_at < retireAt ? s.expires_at : retireAt }))
      .filter((s) => overlapSeconds > 0 || Date.parse(s.expires_at) > now.getTime());
    const key: ManagedKey = { ...current, secrets: [...kept, secretRecord(secret, now)] };
    await this.save(key);
    return { key, secret };
  }

  async revoke(id: string): Promise<ManagedKey> {
    const current = this.keys.get(id);
    if (current === undefined) throw new KeyNotFound(id);
    if (current.revoked_at !== null) return current;
    const key: ManagedKey = { ...current, revoked_at: new Date(this.now()).toISOString() };
    await this.save(key);
    return key;
  }

  async close(): Promise<void> {
    await this.store.close();
  }

  private requireActive(id: string): ManagedKey {
    const key = this.keys.get(id);
    if (key === undefined) throw new KeyNotFound(id);
    if (statusOf(key, this.now()) !== 'active') throw new KeyNotActive(id, statusOf(key, this.now()));
    return key;
  }

  private async save(key: ManagedKey): Promise<void> {
    await this.store.put(key);
    this.apply(key);
  }

  private apply(key: ManagedKey): void {
    const previous = this.keys.get(key.id);
    for (const s of previous?.secrets ?? []) this.byDigest.delete(s.digest);
    this.keys.set(key.id, key);
    this.principals.set(key.id, principalOf(key));
    for (const s of key.secrets) this.byDigest.set(s.digest, key.id);
  }

  private async reload(id: string | null): Promise<void> {
    if (id === null || !this.store.get) {
      for (const key of await this.store.load()) this.apply(key);
      return;
    }
    const key = await this.store.get(id);
    if (key) this.apply(key);
  }
}

export class KeyNotFound extends Error {
  constructor(readonly id: string) {
    super(`There is no API key '${id}'.`);
  }
}

export class KeyNotActive extends Error {
  constructor(
    readonly id: string,
    readonly status: string,
  ) {
    super(`The API key '${id}' is ${status}; only an active key can be rotated.`);
  }
}

function secretRecord(secret: string, now: Date): KeySecret {
  return { digest: secretDigest(secret), hint: secret.slice(0, KEY_PREFIX.length + 4), created_at: now.toISOString(), expires_at: null };
}

export function principalOf(key: ManagedKey): Principal {
  const limited = Object.values(key.limits ?? {}).some((n) => typeof n === 'number' && n > 0);
  return {
    kind: 'managed-key',
    id: fingerprintOf(`managed-key\n${key.id}`),
    subject: `${key.name} (${key.id})`,
    tenant: key.tenant,
    grants: grantsOf(key.scopes),
    ...(limited ? { limits: key.limits } : {}),
  };
}

/** Whether a key may call the protocol routes (its `client` scope). */
export const mayChat = (key: ManagedKey): boolean => key.scopes.includes('client');
