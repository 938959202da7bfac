/**
 * Tenants with limits of their own (/admin/tenants). A tenant exists as soon as a key or token
 * names it; a record here only adds limits, shared by every principal of the tenant. Records
 * are kept like managed keys: beside the journal on one instance, in Redis in a cluster.
 */
import { z } from 'zod';
import { limitsSchema, type RecordStore } from './keys.js';
import type { PrincipalLimits } from './principal.js';

export interface TenantRecord {
  /** The tenant's name. */
  readonly id: string;
  readonly limits: PrincipalLimits;
  readonly updated_at: string;
  readonly updated_by: string;
  /** Set when its limits were removed (the record stays, so every instance hears of it). */
  readonly deleted_at: string | null;
}

export const putTenantSchema = z.object({ limits: limitsSchema }).strict();

export class TenantRegistry {
  private readonly tenants = new Map<string, TenantRecord>();

  constructor(
    private readonly store: RecordStore<TenantRecord>,
    private readonly now: () => number = Date.now,
    private readonly onError: (err: unknown) => void = () => undefined,
  ) {}

  async open(): Promise<void> {
    for (const record of await this.store.load()) this.tenants.set(record.id, record);
    this.store.onChange?.((id) => void this.reload(id).catch(this.onError));
  }

  /** A tenant's limits in force, if any. */
  limitsOf(tenant: string | null): PrincipalLimits | undefined {
    if (tenant === null) return undefined;
    const record = this.tenants.get(tenant);
    return record && record.deleted_at === null ? record.limits : undefined;
  }

  get(tenant: string): TenantRecord | undefined {
    const record = this.tenants.get(tenant);
    return record && record.deleted_at === null ? record : undefined;
  }

  list(): TenantRecord[] {
    return [...this.tenants.values()].filter((r) => r.deleted_at === null);
  }

  async put(tenant: string, limits: PrincipalLimits, by: string): Promise<TenantRecord> {
    const record: TenantRecord = { id: tenant, limits, updated_at: new Date(this.now()).toISOString(), updated_by: by, deleted_at: null };
    await this.store.put(record);
    this.tenants.set(tenant, record);
    return record;
  }

  async remove(tenant: string, by: string): Promise<TenantRecord | undefined> {
    const current = this.get(tenant);
    if (!current) return undefined;
    const at = new Date(this.now()).toISOString();
    const record: TenantRecord = { ...current, limits: {}, updated_at: at, updated_by: by, deleted_at: at };
    await this.store.put(record);
    this.tenants.set(tenant, record);
    return record;
  }

  async close(): Promise<void> {
    await this.store.close();
  }

  private async reload(id: string | null): Promise<void> {
    if (id !== null && this.store.get) {
      const record = await this.store.get(id);
      if (record) this.tenants.set(record.id, record);
      return;
    }
    for (const record of await this.store.load()) this.tenants.set(record.id, record);
  }
}
