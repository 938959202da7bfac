/**
 * Webhook endpoints: where events are sent, which ones, and the secrets they are signed with.
 * Kept like managed keys (src/auth/key-stores.ts): `webhooks.jsonl` in the journal's directory
 * on one instance, a Redis hash shared by every instance in cluster mode, memory with
 * JOURNAL_PATH=memory. A secret is shown once, when it is made; the store keeps it (it signs
 * every delivery), never a log or a response after that.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { RecordStore } from '../auth/keys.js';
import { isKnownPattern } from './catalogue.js';

export interface EndpointSecret {
  readonly secret: string;
  readonly created: number;
  /** After a rotation, the old secret signs too until then (ms since the epoch); null: no end. */
  readonly expires: number | null;
}

export interface WebhookEndpoint {
  readonly id: string;
  readonly url: string;
  readonly description: string;
  /** Event types or patterns (`*`, `session.*`). */
  readonly types: readonly string[];
  /** Whether message content is included in the events' data. */
  readonly content: boolean;
  /** The tenant whose events it receives (null: the default tenant), unless `allTenants`. */
  readonly tenant: string | null;
  /** Every tenant's events (only a global admin makes such an endpoint, and only one manages it). */
  readonly allTenants?: boolean;
  readonly secrets: readonly EndpointSecret[];
  readonly created: number;
  /** Events that happened before this (its creation, or its latest enabling) are not sent to it. */
  readonly since: number;
  /** Since when every attempt to it failed (null: its latest attempt succeeded); kept, so a restart does not forget a streak. */
  readonly failingSince?: number | null;
  /** Set when it was disabled, by an admin or for failing too long (with why). */
  readonly disabled: { readonly at: number; readonly reason: string } | null;
  readonly deleted?: boolean;
}

/** The endpoint as the API shows it: never a secret. */
export function endpointView(endpoint: WebhookEndpoint, now = Date.now()): Record<string, unknown> {
  return {
    id: endpoint.id,
    url: endpoint.url,
    description: endpoint.description,
    types: endpoint.types,
    include_content: endpoint.content,
    tenant: endpoint.tenant,
    all_tenants: endpoint.allTenants === true,
    created: new Date(endpoint.created).toISOString(),
    enabled: endpoint.disabled === null,
    failing_since: endpoint.failingSince ? new Date(endpoint.failingSince).toISOString() : null,
    disabled: endpoint.disabled ? { at: new Date(endpoint.disabled.at).toISOString(), reason: endpoint.disabled.reason } : null,
    secrets: liveSecrets(endpoint, now).map((s) => ({ created: new Date(s.created).toISOString(), expires: s.expires === null ? null : new Date(s.expires).toISOString() })),
  };
}

export const liveSecrets = (endpoint: WebhookEndpoint, now: number): EndpointSecret[] => endpoint.secrets.filter((s) => s.expires === null || s.expires > now);

/** The URL as logs and events show it: its origin only (a path or query may hold a token). */
export const shownUrl = (url: string): string => {
  try {
    return `${new URL(url).origin}/…`;
  } catch {
    return '(unreadable URL)';
  }
};

/** A Standard Webhooks secret: `whsec_` and 32 random bytes in base64. */
export const newSecret = (): string => `whsec_${randomBytes(32).toString('base64')}`;

const webhookUrl = z
  .string()
  .max(2048)
  .refine((value) => {
    try {
      const url = new URL(value);
      return (url.protocol === 'https:' || url.protocol === 'http:') && url.username === '' && url.password === '';
    } catch {
      return false;
    }
  }, 'must be an http:// or https:// URL without credentials');

const types = z
  .array(z.string().min(1).max(100).refine(isKnownPattern, 'names no event type (see docs/events.md): use a type, a family such as `session.*`, or `*`'))
  .min(1)
  .max(50);

export const createEndpointSchema = z
  .object({
    url: webhookUrl,
    types: types.default(['*']),
    include_content: z.boolean().default(false),
    description: z.string().max(500).default(''),
    /**
     * The tenant whose events it receives. A global admin may name any (null: the default
     * tenant's) or leave it out for every tenant's; a tenant's admin gets its own tenant's.
     */
    tenant: z.string().min(1).max(64).nullable().optional(),
  })
  .strict();

export const updateEndpointSchema = z
  .object({
    url: webhookUrl.optional(),
    types: types.optional(),
    include_content: z.boolean().optional(),
    description: z.string().max(500).optional(),
    enabled: z.boolean().optional(),
  })
  .strict();

export const rotateSecretSchema = z
  .object({
    /** How long the old secret keeps signing beside the new one (default an hour; 0 ends it now). */
    overlap_seconds: z.number().int().min(0).max(30 * 24 * 3600).default(3600),
  })
  .strict();

export class EndpointNotFound extends Error {}

/** The endpoints in force. Reads are in memory; writes go to the store first, then here. */
export class EndpointRegistry {
  private readonly endpoints = new Map<string, WebhookEndpoint>();
  private readonly listeners: Array<() => void> = [];

  constructor(
    private readonly store: RecordStore<WebhookEndpoint>,
    private readonly now: () => number = Date.now,
  ) {}

  async open(): Promise<this> {
    for (const endpoint of await this.store.load()) this.remember(endpoint);
    this.store.onChange?.((id) => void this.reload(id));
    return this;
  }

  /** Told when any endpoint changes (here or, in cluster mode, on another instance). */
  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  list(): WebhookEndpoint[] {
    return [...this.endpoints.values()];
  }

  /** How many endpoints there are (disabled ones included). */
  get size(): number {
    return this.endpoints.size;
  }

  get(id: string): WebhookEndpoint | undefined {
    return this.endpoints.get(id);
  }

  async create(input: z.infer<typeof createEndpointSchema>, tenant: string | null, allTenants = false): Promise<{ endpoint: WebhookEndpoint; secret: string }> {
    const now = this.now();
    const secret = newSecret();
    const endpoint: WebhookEndpoint = {
      id: `ep_${randomUUID().replaceAll('-', '').slice(0, 20)}`,
      url: input.url,
      description: input.description,
      types: [...new Set(input.types)],
      content: input.include_content,
      tenant: allTenants ? null : tenant,
      ...(allTenants ? { allTenants: true } : {}),
      secrets: [{ secret, created: now, expires: null }],
      created: now,
      since: now,
      disabled: null,
    };
    await this.put(endpoint);
    return { endpoint, secret };
  }

  async update(id: string, change: z.infer<typeof updateEndpointSchema>): Promise<WebhookEndpoint> {
    const current = this.require(id);
    const now = this.now();
    const enabling = change.enabled === true && current.disabled !== null;
    const next: WebhookEndpoint = {
      ...current,
      ...(change.url === undefined ? {} : { url: change.url }),
      ...(change.types === undefined ? {} : { types: [...new Set(change.types)] }),
      ...(change.include_content === undefined ? {} : { content: change.include_content }),
      ...(change.description === undefined ? {} : { description: change.description }),
      // Enabled again, it receives what happens from now on.
      ...(enabling ? { disabled: null, since: now, failingSince: null } : {}),
      ...(change.enabled === false && current.disabled === null ? { disabled: { at: now, reason: 'disabled by an admin' } } : {}),
    };
    await this.put(next);
    return next;
  }

  /** A new secret; the old ones keep signing for `overlapSeconds`. Returns the new secret, once. */
  async rotate(id: string, overlapSeconds: number): Promise<{ endpoint: WebhookEndpoint; secret: string }> {
    const current = this.require(id);
    const now = this.now();
    const secret = newSecret();
    const until = now + overlapSeconds * 1000;
    const kept = liveSecrets(current, now)
      .map((s) => ({ ...s, expires: s.expires === null ? until : Math.min(s.expires, until) }))
      .filter((s) => s.expires > now);
    const endpoint: WebhookEndpoint = { ...current, secrets: [{ secret, created: now, expires: null }, ...kept] };
    await this.put(endpoint);
    return { endpoint, secret };
  }

  /** Records the start (a time) or the end (null) of a streak of failed attempts. */
  async setFailing(id: string, since: number | null): Promise<void> {
    const current = this.endpoints.get(id);
    if (!current || (current.failingSince ?? null) === since) return;
    await this.put({ ...current, failingSince: since });
  }

  /** Disabled for a reason (failing too long, 410 Gone); null when it was disabled already or is gone. */
  async disable(id: string, reason: string): Promise<WebhookEndpoint | null> {
    const current = this.endpoints.get(id);
    if (!current || current.disabled !== null) return null;
    const endpoint: WebhookEndpoint = { ...current, disabled: { at: this.now(), reason } };
    await this.put(endpoint);
    return endpoint;
  }

  async remove(id: string): Promise<WebhookEndpoint> {
    const current = this.require(id);
    const endpoint: WebhookEndpoint = { ...current, secrets: [], deleted: true, disabled: current.disabled ?? { at: this.now(), reason: 'deleted' } };
    await this.put(endpoint);
    return current;
  }

  close(): Promise<void> {
    return this.store.close();
  }

  private require(id: string): WebhookEndpoint {
    const endpoint = this.endpoints.get(id);
    if (!endpoint) throw new EndpointNotFound(id);
    return endpoint;
  }

  /** Known here from the start of the write, so no event that becomes durable meanwhile misses it; undone if the write fails. */
  private async put(endpoint: WebhookEndpoint): Promise<void> {
    const before = this.endpoints.get(endpoint.id);
    this.remember(endpoint);
    try {
      await this.store.put(endpoint);
    } catch (err) {
      if (before) this.endpoints.set(before.id, before);
      else this.endpoints.delete(endpoint.id);
      throw err;
    }
    this.changed();
  }

  private remember(endpoint: WebhookEndpoint): void {
    if (endpoint.deleted) this.endpoints.delete(endpoint.id);
    else this.endpoints.set(endpoint.id, endpoint);
  }

  private async reload(id: string | null): Promise<void> {
    if (id === null) {
      const all = await this.store.load().catch(() => null);
      if (!all) return;
      this.endpoints.clear();
      for (const endpoint of all) this.remember(endpoint);
    } else {
      const endpoint = await this.store.get?.(id).catch(() => null);
      if (endpoint) this.remember(endpoint);
    }
    this.changed();
  }

  private changed(): void {
    for (const listener of this.listeners) listener();
  }
}
