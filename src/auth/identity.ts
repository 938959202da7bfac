/**
 * Assembles who may call: static keys (API_KEYS), managed keys (kept beside the journal, or in
 * Redis in cluster mode), and JWT bearer tokens (OIDC_ISSUER or JWKS_URL).
 */
import type { Redis } from 'ioredis';
import type { Config } from '../config.js';
import { AccessControl } from '../http/access.js';
import type { Logger } from '../telemetry/logger.js';
import { JwtVerifier } from './jwt.js';
import { ConsoleSignIn, MemorySignInStore, RedisSignInStore } from './console-signin.js';
import { FileRecordStore, MemoryRecordStore, RedisRecordStore } from './key-stores.js';
import { KeyRegistry, type KeyStore, type ManagedKey, type RecordStore } from './keys.js';
import { TenantRegistry, type TenantRecord } from './tenant-registry.js';

export async function openAccess(config: Config, logger: Logger, redis: Redis | null): Promise<AccessControl> {
  const store: KeyStore = redis
    ? new RedisRecordStore<ManagedKey>(redis, config.redisPrefix, 'keys', (key) => key.secrets.map((s) => s.digest))
    : config.journalPath === 'memory'
      ? new MemoryRecordStore<ManagedKey>()
      : new FileRecordStore<ManagedKey>(config.journalPath, 'keys.jsonl', (message) => logger.warn(message));
  const changeLost = (err: unknown) => logger.warn({ err }, 'a key or tenant change made on another instance could not be read now; it is read when Redis is back');
  const managed = new KeyRegistry(store, Date.now, changeLost);
  await managed.open();
  const tenantStore: RecordStore<TenantRecord> = redis
    ? new RedisRecordStore<TenantRecord>(redis, config.redisPrefix, 'tenants')
    : config.journalPath === 'memory'
      ? new MemoryRecordStore<TenantRecord>()
      : new FileRecordStore<TenantRecord>(config.journalPath, 'tenants.jsonl', (message) => logger.warn(message));
  const tenants = new TenantRegistry(tenantStore, Date.now, changeLost);
  await tenants.open();
  const issuer = config.oidcIssuer || config.jwtIssuer;
  const jwt =
    (config.oidcIssuer || config.jwksUrl) && config.jwtAudience.length > 0
      ? new JwtVerifier({
          issuer,
          discovery: config.oidcIssuer !== '',
          jwksUrl: config.jwksUrl || null,
          audience: config.jwtAudience,
          tenantClaim: config.jwtTenantClaim,
          rolesClaim: config.jwtRolesClaim,
          clockSkewSeconds: config.jwtClockSkewSeconds,
        })
      : null;
  if (jwt) {
    const problem = await jwt.warmUp();
    if (problem) logger.warn({ issuer }, `JWT bearer tokens: ${problem} Tokens are refused with 503 until it answers.`);
    else logger.info({ issuer, audience: config.jwtAudience }, 'JWT bearer tokens accepted');
  }
  const signIn = config.oidcClientId
    ? new ConsoleSignIn(
        {
          issuer: config.oidcIssuer,
          clientId: config.oidcClientId,
          clientSecret: config.oidcClientSecret,
          publicUrl: config.publicUrl,
          sessionMs: config.consoleSessionHours * 3_600_000,
          tenantClaim: config.jwtTenantClaim,
          rolesClaim: config.jwtRolesClaim,
        },
        redis ? new RedisSignInStore(redis, config.redisPrefix) : new MemorySignInStore(),
      )
    : null;
  if (signIn) logger.info({ issuer: config.oidcIssuer, callback: signIn.callbackUrl }, 'console sign-in with OpenID Connect');
  return AccessControl.fromConfig(config, { jwt, managed, tenants, signIn });
}
