/**
 * Bridges, assembled: which channels are configured, where their conversations are kept, and
 * who runs them. Each bridge is off unless its settings are given, and a channel's library is
 * imported only when it is on, so a service without bridges loads none of them.
 *
 * One instance runs the bridges: the only one in single-instance mode; in cluster mode the
 * holder of the lease `PREFIX:bridges:host` (a mailbox has one IDLE reader, a bot one gateway
 * connection). When it goes away the lease runs out and another instance takes the bridges
 * over, from the conversations and queues kept in Redis. Webhooks that reach another instance
 * (Twilio's) are passed on to the holder.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import { FileRecordStore, MemoryRecordStore, RedisRecordStore } from '../auth/key-stores.js';
import { ConfigError, sessionPairs, type Config } from '../config.js';
import { isRefusal, type AccessControl } from '../http/access.js';
import type { Logger } from '../telemetry/logger.js';
import type { Metrics } from '../telemetry/metrics.js';
import { Lease } from '../cluster/lease.js';
import type { BridgeName, Channel, Conversation } from './channel.js';
import { BridgeHost } from './host.js';

/** A channel that serves routes of its own (Twilio's webhooks). */
export interface ChannelRoutes {
  /** `forward` gives, for a request, the base URL of the instance running the bridges when it is another one. */
  routes(app: FastifyInstance, forward: (request: FastifyRequest) => string | null): void;
}

export interface Bridges {
  readonly names: readonly BridgeName[];
  /** Null on an instance of a cluster that does not run the bridges now. */
  readonly host: BridgeHost | null;
  /** Whether this instance runs the bridges. */
  readonly running: boolean;
  /** The instance that runs them, in cluster mode (as last seen). */
  readonly heldBy: string | null;
  /** Registers the channels' own routes (before the app listens). */
  routes(app: FastifyInstance): void;
  /** Starts the bridges (after the app listens: they speak to its /v1/realtime). */
  start(serviceUrl: string): Promise<void>;
  close(): Promise<void>;
}

export interface BridgesOptions {
  readonly config: Config;
  readonly logger: Logger;
  readonly metrics: Metrics | null;
  readonly redis: Redis | null;
  readonly instanceId?: string;
  readonly leaseMs?: number;
  /** Cluster mode: the address of a live instance (its heartbeat's), to pass webhooks on to the one running the bridges. */
  readonly addressOf?: (instance: string) => Promise<string | null>;
  /** Who may call: BRIDGE_API_KEY must be a client key it takes when it requires keys, and its tenant is the bridges'. */
  readonly access: AccessControl;
}

/** Which bridges the settings turn on. */
export function configuredBridges(config: Config): BridgeName[] {
  const names: BridgeName[] = [];
  if (config.bridgeEmailSmtpUrl) names.push('email');
  if (config.bridgeSmsAccountSid) names.push('sms');
  if (config.bridgeDiscordToken) names.push('discord');
  return names;
}

/** Settings a configured bridge cannot run without that the configuration alone cannot tell (config.ts checks the rest). */
function missingSettings(config: Config, keysRequired: boolean): string[] {
  return keysRequired && !config.bridgeApiKey ? ['BRIDGE_API_KEY (the service requires client keys, and bridged sides are clients)'] : [];
}

/**
 * The tenant the bridges play in: BRIDGE_API_KEY's (null, the default tenant, without one). A key
 * the service does not take stops the start, rather than every bridged message failing later.
 */
async function tenantOfKey(key: string, access: AccessControl): Promise<string | null> {
  if (!key) return null;
  const principal = await Promise.resolve(access.authenticate(key));
  if (principal === null || isRefusal(principal)) {
    if (isRefusal(principal) && principal.unavailable) throw new Error(`BRIDGE_API_KEY could not be checked: ${principal.refused}`);
    throw new ConfigError(`BRIDGE_API_KEY is not a client key this service takes${isRefusal(principal) ? ` (${principal.refused})` : ''}: use one of API_KEYS, or a managed key with the 'client' scope`);
  }
  return principal.tenant;
}

async function channelsOf(config: Config, names: readonly BridgeName[], logger: Logger, tenant: string | null): Promise<Channel[]> {
  const channels: Channel[] = [];
  for (const name of names) {
    const log = logger.child({ bridge: name });
    if (name === 'email') {
      const { EmailChannel } = await import('./email.js');
      channels.push(
        new EmailChannel({
          imapUrl: config.bridgeEmailImapUrl,
          smtpUrl: config.bridgeEmailSmtpUrl,
          address: config.bridgeEmailAddress,
          domain: config.bridgeEmailDomain,
          listen: config.bridgeEmailSmtpListen,
          side: config.bridgeEmailSide,
          allow: config.bridgeEmailAllow,
          session: config.bridgeEmailSession,
          tenant,
          maxBytes: Math.max(config.maxMessageBytes * 4, 1024 * 1024),
          logger: log,
        }),
      );
    }
    if (name === 'sms') {
      const { SmsChannel } = await import('./sms.js');
      channels.push(
        new SmsChannel({
          accountSid: config.bridgeSmsAccountSid,
          authToken: config.bridgeSmsAuthToken,
          from: config.bridgeSmsFrom,
          publicUrl: config.publicUrl.replace(/\/+$/, ''),
          side: config.bridgeSmsSide,
          numbers: sessionPairs(config.bridgeSmsNumbers, 'BRIDGE_SMS_NUMBERS'),
          allow: config.bridgeSmsAllow,
          joinKeyword: config.bridgeSmsJoinKeyword,
          tenant,
          ...(config.bridgeSmsApiUrl ? { apiBaseUrl: config.bridgeSmsApiUrl } : {}),
          logger: log,
        }),
      );
    }
    if (name === 'discord') {
      const { DiscordChannel } = await import('./discord.js');
      channels.push(
        new DiscordChannel({
          token: config.bridgeDiscordToken,
          ...(config.bridgeDiscordApplicationId ? { applicationId: config.bridgeDiscordApplicationId } : {}),
          side: config.bridgeDiscordSide,
          channels: sessionPairs(config.bridgeDiscordChannels, 'BRIDGE_DISCORD_CHANNELS'),
          ...(config.bridgeDiscordMember ? { member: config.bridgeDiscordMember } : {}),
          tenant,
          ...(config.bridgeDiscordApiUrl ? { apiBaseUrl: config.bridgeDiscordApiUrl } : {}),
          logger: log,
        }),
      );
    }
  }
  return channels;
}

/** Null when no bridge is configured. Throws with every missing setting named. */
export async function openBridges(options: BridgesOptions): Promise<Bridges | null> {
  const { config, logger, metrics, redis } = options;
  const names = configuredBridges(config);
  if (names.length === 0) return null;
  const missing = missingSettings(config, options.access.keysRequired);
  if (missing.length > 0) throw new ConfigError(`bridges (${names.join(', ')}) need: ${missing.join('; ')}`);
  const tenant = await tenantOfKey(config.bridgeApiKey, options.access);
  const counters = metrics?.enableBridges(() => host?.health() ?? []);
  const store = () =>
    redis
      ? new RedisRecordStore<Conversation>(redis, config.redisPrefix, 'bridges')
      : config.journalPath === 'memory'
        ? new MemoryRecordStore<Conversation>()
        : new FileRecordStore<Conversation>(config.journalPath, 'bridges.jsonl', (message) => logger.warn(message));
  // The channels are made once: their routes are registered before the app listens.
  const channels = await channelsOf(config, names, logger, tenant);
  let host: BridgeHost | null = null;
  let serviceUrl = '';
  const makeHost = (): BridgeHost =>
    new BridgeHost(channels, {
      store: store(),
      logger,
      serviceUrl: () => serviceUrl,
      apiKey: config.bridgeApiKey,
      perMinute: { email: config.bridgeEmailPerMinute, sms: config.bridgeSmsPerMinute, discord: config.bridgeDiscordPerMinute },
      retryMs: config.bridgeRetryHours * 3_600_000,
      ...(counters ? { counters } : {}),
    });
  const lease = redis ? new Lease({ redis, key: `${config.redisPrefix}:bridges:host`, holder: options.instanceId ?? 'instance', leaseMs: options.leaseMs ?? 10_000, logger, what: 'bridges' }) : null;
  let holderAddress: string | null = null;
  let addressTimer: NodeJS.Timeout | null = null;
  const bridges: Bridges = {
    names,
    get host() {
      return host;
    },
    get running() {
      return host !== null;
    },
    get heldBy() {
      return lease?.heldBy ?? null;
    },
    routes(app) {
      const forward = (): string | null => (host || !lease ? null : holderAddress);
      for (const channel of channels) (channel as Channel & Partial<ChannelRoutes>).routes?.(app, forward);
    },
    async start(url) {
      serviceUrl = url;
      const up = async (): Promise<void> => {
        host = makeHost();
        await host.start();
        logger.info({ bridges: names }, `bridges on: ${names.join(', ')}${lease ? ' (this instance runs them for the cluster)' : ''}`);
      };
      if (!lease) return up();
      // Where the holder is, kept fresh for webhooks that must be passed on to it.
      const refresh = async (): Promise<void> => {
        const holder = lease.heldBy;
        holderAddress = holder && holder !== options.instanceId ? ((await options.addressOf?.(holder).catch(() => null)) ?? null) : null;
      };
      addressTimer = setInterval(() => void refresh(), Math.max(200, Math.floor((options.leaseMs ?? 10_000) / 3)));
      addressTimer.unref();
      await lease.start({
        up,
        down: async () => {
          const running = host;
          host = null;
          await running?.close();
        },
      });
    },
    async close() {
      if (addressTimer) clearInterval(addressTimer);
      if (lease) await lease.stop();
      else await host?.close();
      host = null;
    },
  };
  return bridges;
}
