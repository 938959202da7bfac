/**
 * A cluster-wide lease: one instance at a time does a job that must not run twice (the bridges'
 * mailbox reader and gateway connection). The holder renews it every third of the lease; an
 * instance that cannot renew for a whole lease steps down, and when the holder dies the key
 * expires and another instance takes it on its next tick.
 */
import type { Redis, Result } from 'ioredis';
import type { Logger } from '../telemetry/logger.js';

/** Renews the lease if `holder` has it. KEYS: lease. ARGV: holder, ms. */
const RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`;

/** Lets go of the lease if `holder` has it. KEYS: lease. ARGV: holder. */
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    motiveLeaseRenew(lease: string, holder: string, ms: number): Result<number, Context>;
    motiveLeaseRelease(lease: string, holder: string): Result<number, Context>;
  }
}

/** Defines the lease scripts on a connection (the events sender's lease uses them too). */
export function defineLeaseCommands(redis: Redis): void {
  redis.defineCommand('motiveLeaseRenew', { numberOfKeys: 1, lua: RENEW });
  redis.defineCommand('motiveLeaseRelease', { numberOfKeys: 1, lua: RELEASE });
}

export interface LeaseOptions {
  readonly redis: Redis;
  readonly key: string;
  readonly holder: string;
  readonly leaseMs: number;
  readonly logger: Logger;
  /** What the lease is for, in log lines. */
  readonly what: string;
}

export interface LeaseJob {
  /** This instance took the lease: start the job (a failure gives the lease back). */
  up(): Promise<void>;
  /** It lost or gave up the lease: stop the job. */
  down(): Promise<void>;
}

export class Lease {
  private held = false;
  private stopped = false;
  private ticker: NodeJS.Timeout | null = null;
  private renewedAt = 0;
  private job: LeaseJob | null = null;
  private ticking: Promise<void> = Promise.resolve();
  /** The job's start, while it runs (stepping down waits for it, so that down follows up). */
  private starting: Promise<void> = Promise.resolve();
  /** The instance holding the lease as last seen (this one's id when it does). */
  heldBy: string | null = null;

  constructor(private readonly options: LeaseOptions) {
    defineLeaseCommands(options.redis);
  }

  get holding(): boolean {
    return this.held;
  }

  async start(job: LeaseJob): Promise<void> {
    this.job = job;
    await this.tick();
    await this.starting;
    this.ticker = setInterval(() => {
      this.ticking = this.ticking.then(() => this.tick());
    }, Math.max(100, Math.floor(this.options.leaseMs / 3)));
    this.ticker.unref?.();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.ticker) clearInterval(this.ticker);
    await this.ticking;
    if (this.held) await this.stepDown();
    await this.options.redis.motiveLeaseRelease(this.options.key, this.options.holder).catch(() => undefined);
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    const { redis, key, holder, leaseMs, logger, what } = this.options;
    try {
      if (this.held) {
        const renewed = await redis.motiveLeaseRenew(key, holder, leaseMs).catch((err: unknown) => {
          // Cut off from Redis for a whole lease: another instance may hold it now.
          if (Date.now() - this.renewedAt >= leaseMs) return 0;
          throw err;
        });
        if (renewed === 1) {
          this.renewedAt = Date.now();
          return;
        }
        logger.warn(`${what}: another instance holds the lease now; this one stops`);
        await this.stepDown();
        return;
      }
      const taken = await redis.set(key, holder, 'PX', leaseMs, 'NX');
      if (taken !== 'OK') {
        this.heldBy = await redis.get(key);
        return;
      }
      this.held = true;
      this.heldBy = holder;
      this.renewedAt = Date.now();
      // Starting the job may take longer than the lease (a gateway login): it runs beside the
      // renewals, never in their way, so the lease cannot lapse while it starts.
      this.starting = Promise.resolve(this.job?.up()).catch(async (err: unknown) => {
        logger.warn({ err }, `${what}: could not start (${(err as Error)?.message ?? String(err)}); letting the lease go`);
        if (!this.held) return;
        await this.stepDown();
        await redis.motiveLeaseRelease(key, holder).catch(() => undefined);
      });
    } catch (err) {
      logger.warn({ err }, `${what}: the lease could not be checked (${(err as Error).message})`);
    }
  }

  private async stepDown(): Promise<void> {
    this.held = false;
    this.heldBy = null;
    await this.starting;
    await this.job?.down().catch((err: unknown) => this.options.logger.error({ err }, `${this.options.what}: stopping failed`));
  }
}
