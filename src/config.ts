/**
 * Configuration: every setting is read once here, from CLI flags (which win) and the
 * environment, validated with zod, and passed down. Nothing else reads process.env.
 */
import { z } from 'zod';
import { parseCommandLine, UsageError, type OptionSpec } from './args.js';

const seconds = z.coerce.number().finite().positive().max(365 * 24 * 3600);
const flag = z.preprocess((v) => {
  if (typeof v !== 'string') return v;
  const s = v.trim().toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(s)) return true;
  if (['false', '0', 'no', 'off'].includes(s)) return false;
  return v;
}, z.boolean({ error: 'expected true or false' }));

const perMinute = z.coerce.number().int().min(0);
/** Comma-separated; blanks dropped. */
const keyList = z.string().transform((s) =>
  s
    .split(',')
    .map((k) => k.trim())
    .filter(Boolean),
);

/** NEW_SESSIONS_PER_MINUTE when it is not set and the service listens beyond loopback. */
export const NEW_SESSIONS_BEYOND_LOOPBACK = 30;

export const isLoopbackHost = (host: string): boolean => host === 'localhost' || host === '::1' || host.startsWith('127.');

/** One row per setting: how it is named, what it means, how it is checked. `secret` values are never printed. */
export const OPTIONS = {
  host: { env: 'HOST', default: '127.0.0.1', schema: z.string().min(1), help: 'address to listen on (0.0.0.0 for every interface)' },
  port: { env: 'PORT', default: '8000', schema: z.coerce.number().int().min(0).max(65535), help: 'TCP port to listen on (0 picks a free one)' },
  logLevel: {
    env: 'LOG_LEVEL',
    default: 'info',
    schema: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
    help: 'log level: fatal, error, warn, info, debug, trace or silent',
  },
  logFormat: {
    env: 'LOG_FORMAT',
    default: 'auto',
    schema: z.enum(['auto', 'json', 'pretty']),
    help: 'json lines, pretty, or auto (pretty when stdout is a terminal)',
  },
  sessionTtlSeconds: { env: 'SESSION_TTL_SECONDS', default: '3600', schema: seconds, help: 'inactivity after which a session closes' },
  handshakeTimeoutSeconds: { env: 'HANDSHAKE_TIMEOUT_SECONDS', default: '30', schema: seconds, help: "how long side A's handshake waits for a peer" },
  turnTimeoutSeconds: { env: 'TURN_TIMEOUT_SECONDS', default: '30', schema: seconds, help: 'how long any other (non-streaming) request waits for the other side' },
  streamTurnTimeoutSeconds: {
    env: 'STREAM_TURN_TIMEOUT_SECONDS',
    default: '600',
    schema: seconds,
    help: "how long a streaming request waits for the other side (its keep-alives keep the client patient; a person may take minutes)",
  },
  modelListWindowSeconds: {
    env: 'MODEL_LIST_WINDOW_SECONDS',
    default: '300',
    schema: z.coerce.number().finite().min(0).max(365 * 24 * 3600),
    help: 'model lists show a session waiting for its peer while a side waits now, or for this long after its last activity',
  },
  maxSessions: { env: 'MAX_SESSIONS', default: '100', schema: z.coerce.number().int().positive(), help: 'live sessions at most; a new one beyond gets 503' },
  maxMessageBytes: {
    env: 'MAX_MESSAGE_BYTES',
    default: '65536',
    schema: z.coerce.number().int().min(1024).max(512 * 1024 * 1024),
    help: 'largest request body accepted, in bytes (413 beyond)',
  },
  keepaliveIntervalSeconds: {
    env: 'KEEPALIVE_INTERVAL_SECONDS',
    default: '15',
    schema: seconds,
    help: 'interval of SSE keep-alive comments on held streaming requests',
  },
  answerBackgroundTasks: {
    env: 'ANSWER_BACKGROUND_TASKS',
    default: 'true',
    schema: flag,
    help: "answer chat UIs' title/tag/follow-up requests locally instead of forwarding them",
  },
  journalPath: {
    env: 'JOURNAL_PATH',
    default: './data/journal',
    schema: z.string().min(1),
    help: "directory of the event journal ('memory' keeps nothing on disk)",
  },
  journalFsync: {
    env: 'JOURNAL_FSYNC',
    default: 'batch',
    schema: z.enum(['always', 'batch', 'off']),
    help: 'journal flushing: always (fsync each record), batch (group commit), off (leave it to the OS)',
  },
  redisUrl: {
    env: 'REDIS_URL',
    default: '',
    schema: z.union([z.literal(''), z.string().regex(/^rediss?:\/\/[^\s]+$/, { error: 'expected redis://[user:password@]host:port[/db] or rediss:// for TLS' })]),
    help: 'cluster mode: every instance with the same Redis shares every session (docs/cluster.md); the journal is then in Redis',
    secret: true,
  },
  instanceId: {
    env: 'INSTANCE_ID',
    default: '',
    schema: z.string().regex(/^[A-Za-z0-9._:@-]{0,128}$/, { error: 'letters, digits and . _ : @ - only, at most 128' }),
    help: "this instance's name in the cluster (default: host name and pid)",
  },
  clusterLeaseMs: {
    env: 'CLUSTER_LEASE_MS',
    default: '5000',
    schema: z.coerce.number().int().min(500).max(600_000),
    help: "how long an instance's ownership of its sessions outlives its last heartbeat to Redis (a dead instance's sessions move after this)",
  },
  clusterAdvertiseUrl: {
    env: 'CLUSTER_ADVERTISE_URL',
    default: '',
    schema: z.union([z.literal(''), z.url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL' })]),
    help: 'the URL other instances reach this one at (default: http://HOST:PORT, with the host name for a wildcard HOST)',
  },
  redisPrefix: {
    env: 'REDIS_PREFIX',
    default: 'motive',
    schema: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, { error: 'letters, digits and . _ - only, at most 64' }),
    help: 'prefix of every key the cluster writes (clusters sharing one Redis need different ones)',
  },
  inspect: {
    env: 'INSPECT',
    default: 'false',
    schema: flag,
    help: 'stream every session actor to the Stately inspector (open http://localhost:INSPECT_PORT)',
  },
  inspectPort: { env: 'INSPECT_PORT', default: '8080', schema: z.coerce.number().int().min(1).max(65535), help: 'port of the local Stately inspector bridge' },
  enablePrometheus: { env: 'ENABLE_PROMETHEUS', default: 'false', schema: flag, help: 'serve Prometheus metrics at GET /metrics' },
  apiKeys: {
    env: 'API_KEYS',
    default: '',
    schema: keyList,
    help: 'client API keys, comma-separated; when set (or API_KEYS_FILE), every client must send one',
    secret: true,
  },
  apiKeysFile: { env: 'API_KEYS_FILE', default: '', schema: z.string(), help: 'file of client API keys, one per line (# starts a comment)' },
  adminApiKey: {
    env: 'ADMIN_API_KEY',
    default: '',
    schema: z.string(),
    help: 'key for /admin routes, /metrics and the console admin actions (without it they answer on loopback only)',
    secret: true,
  },
  requireApiKey: {
    env: 'REQUIRE_API_KEY',
    default: 'false',
    schema: flag,
    help: 'require a client key (or token) on the model routes even when only managed keys (/admin/keys) exist; on by itself with API_KEYS or an issuer',
  },
  oidcIssuer: {
    env: 'OIDC_ISSUER',
    default: '',
    schema: z.union([z.literal(''), z.url({ protocol: /^https?$/, error: 'expected the issuer URL, e.g. https://login.example.com/realms/games' })]),
    help: "accept JWT bearer tokens from this OpenID Connect issuer (its keys found by discovery); needs JWT_AUDIENCE",
  },
  jwksUrl: {
    env: 'JWKS_URL',
    default: '',
    schema: z.union([z.literal(''), z.url({ protocol: /^https?$/, error: 'expected the URL of a JSON Web Key Set' })]),
    help: 'accept JWT bearer tokens signed by the keys at this URL (instead of OIDC_ISSUER discovery); needs JWT_ISSUER and JWT_AUDIENCE',
  },
  jwtIssuer: { env: 'JWT_ISSUER', default: '', schema: z.string(), help: 'the iss that tokens must carry (default: OIDC_ISSUER)' },
  jwtAudience: { env: 'JWT_AUDIENCE', default: '', schema: keyList, help: 'the aud that tokens must carry (comma-separated: any one)' },
  jwtTenantClaim: {
    env: 'JWT_TENANT_CLAIM',
    default: 'tenant',
    schema: z.string().regex(/^[A-Za-z0-9_:/.-]{1,100}$/, { error: 'a claim name, or a dotted path into an object claim' }),
    help: "the claim naming a token's tenant (a dotted path reaches into objects, e.g. org.id); absent: the default tenant",
  },
  jwtRolesClaim: {
    env: 'JWT_ROLES_CLAIM',
    default: 'roles',
    schema: z.string().regex(/^[A-Za-z0-9_:/.-]{1,100}$/, { error: 'a claim name, or a dotted path into an object claim' }),
    help: "the claim holding a token's roles (viewer, operator, admin; global:… for every tenant)",
  },
  oidcClientId: {
    env: 'OIDC_CLIENT_ID',
    default: '',
    schema: z.string().max(500),
    help: 'console sign-in: the client id registered at OIDC_ISSUER (authorization code flow with PKCE); needs PUBLIC_URL',
  },
  oidcClientSecret: { env: 'OIDC_CLIENT_SECRET', default: '', schema: z.string().max(2000), help: 'console sign-in: the client secret (empty for a public client)', secret: true },
  publicUrl: {
    env: 'PUBLIC_URL',
    default: '',
    schema: z.union([z.literal(''), z.url({ protocol: /^https?$/, error: 'expected the URL people open the console at, e.g. https://proxy.example.com' })]),
    help: 'the URL people open the console at; with sign-in, the identity provider sends them back to PUBLIC_URL/console/callback',
  },
  consoleSessionHours: { env: 'CONSOLE_SESSION_HOURS', default: '8', schema: z.coerce.number().positive().max(24 * 30), help: 'how long a console sign-in lasts' },
  jwtClockSkewSeconds: { env: 'JWT_CLOCK_SKEW_SECONDS', default: '30', schema: z.coerce.number().int().min(0).max(600), help: "seconds of clock difference allowed when checking a token's exp and nbf" },
  metricsPublic: { env: 'METRICS_PUBLIC', default: 'false', schema: flag, help: 'serve /metrics without the admin key' },
  corsOrigins: {
    env: 'CORS_ORIGINS',
    default: '',
    schema: z.string(),
    help: "origins that browsers may call from, comma-separated ('*' for any); CORS is off when empty",
  },
  trustProxy: {
    env: 'TRUST_PROXY',
    default: '',
    schema: z.string(),
    help: 'addresses or CIDRs of reverse proxies whose X-Forwarded-For is trusted (comma-separated)',
  },
  rateLimitPerMinute: { env: 'RATE_LIMIT_PER_MINUTE', default: '0', schema: perMinute, help: 'requests a minute per client key (per IP without keys); 0: no limit' },
  sessionRateLimitPerMinute: { env: 'SESSION_RATE_LIMIT_PER_MINUTE', default: '0', schema: perMinute, help: 'chat requests a minute per session; 0: no limit' },
  newSessionsPerMinute: {
    env: 'NEW_SESSIONS_PER_MINUTE',
    default: '0',
    schema: perMinute,
    help: `new sessions a minute per client key (per IP without keys); 0: no limit (by default: none on a loopback HOST, ${NEW_SESSIONS_BEYOND_LOOPBACK} elsewhere)`,
  },
  maxQueuedBytesPerSide: {
    env: 'MAX_QUEUED_BYTES_PER_SIDE',
    default: String(1024 * 1024),
    schema: z.coerce.number().int().min(1024),
    help: "bytes of messages a session keeps queued for a side that is not reading; a turn beyond gets 429 queue_full",
  },
  failedKeysPerMinute: {
    env: 'FAILED_KEYS_PER_MINUTE',
    default: '20',
    schema: perMinute,
    help: 'requests with a wrong API key a minute per address, beyond which the address gets 429 for the rest of the minute; 0: no limit',
  },
  maxHeldPerClient: { env: 'MAX_HELD_PER_CLIENT', default: '0', schema: perMinute, help: 'requests held open at once per client key (per IP without keys); 0: no limit' },
  maxEventLoopDelayMs: {
    env: 'MAX_EVENT_LOOP_DELAY_MS',
    default: '1000',
    schema: z.coerce.number().min(0),
    help: 'event-loop delay beyond which new requests get 503 with Retry-After; 0: never',
  },
  maxRssBytes: { env: 'MAX_RSS_BYTES', default: '0', schema: z.coerce.number().int().min(0), help: 'resident memory beyond which new requests get 503; 0: never' },
  headersTimeoutSeconds: { env: 'HEADERS_TIMEOUT_SECONDS', default: '10', schema: seconds, help: "time a client has to send a request's headers" },
  bodyTimeoutSeconds: { env: 'BODY_TIMEOUT_SECONDS', default: '30', schema: seconds, help: 'time a client has to send a whole request (headers and body)' },
  webhookTimeoutSeconds: { env: 'WEBHOOK_TIMEOUT_SECONDS', default: '10', schema: z.coerce.number().positive().max(300), help: 'how long a webhook receiver has to answer one delivery' },
  webhookRetryHours: {
    env: 'WEBHOOK_RETRY_HOURS',
    default: '24',
    schema: z.coerce.number().positive().max(24 * 30),
    help: 'how long an event is retried for, from its first attempt, before it is given up (backoff doubles from 5 s to an hour)',
  },
  webhookDisableAfterHours: {
    env: 'WEBHOOK_DISABLE_AFTER_HOURS',
    default: '48',
    schema: z.coerce.number().positive().max(24 * 60),
    help: 'an endpoint with no successful delivery for this long, failing throughout, is disabled (a webhook.disabled event says so)',
  },
  webhookAllowNetworks: {
    env: 'WEBHOOK_ALLOW_NETWORKS',
    default: '',
    schema: keyList,
    help: "CIDRs webhooks may reach although private, loopback or link-local (127.0.0.1/32, 10.0.0.0/8), comma-separated; '*' turns the guard off",
  },
  eventsNatsUrl: {
    env: 'EVENTS_NATS_URL',
    default: '',
    schema: z.string(),
    secret: true,
    help: 'NATS server(s) to publish every event to, on JetStream subjects motive.<tenant>.<session>.<type> (nats://host:4222, comma-separated)',
  },
  eventsNatsStream: { env: 'EVENTS_NATS_STREAM', default: 'MOTIVE_EVENTS', schema: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'letters, digits, _ and -'), help: 'the JetStream stream for the events (made when missing, for subjects motive.>)' },
  eventsAmqpUrl: {
    env: 'EVENTS_AMQP_URL',
    default: '',
    schema: z.string().refine((v) => v === '' || /^amqps?:\/\//.test(v), 'expected amqp:// or amqps://'),
    secret: true,
    help: 'RabbitMQ (AMQP 0-9-1) to publish every event to, on a topic exchange with the type as routing key (amqp://user:pass@host:5672/vhost)',
  },
  eventsAmqpExchange: { env: 'EVENTS_AMQP_EXCHANGE', default: 'motive.events', schema: z.string().min(1).max(255), help: 'the durable topic exchange the events go to (declared when missing)' },
  eventsIncludeContent: { env: 'EVENTS_INCLUDE_CONTENT', default: 'false', schema: flag, help: "include message content in the events published to brokers (webhook endpoints choose for themselves)" },
  bridgeApiKey: {
    env: 'BRIDGE_API_KEY',
    default: '',
    schema: z.string(),
    secret: true,
    help: "the client key bridged sides speak with on /v1/realtime, when the service requires keys (its tenant is the bridges' tenant)",
  },
  bridgeRetryHours: { env: 'BRIDGE_RETRY_HOURS', default: '24', schema: z.coerce.number().positive().max(24 * 30), help: 'how long a bridge retries a delivery its channel keeps refusing before it is dropped as failed' },
  bridgeEmailImapUrl: {
    env: 'BRIDGE_EMAIL_IMAP_URL',
    default: '',
    schema: z.string().refine((v) => v === '' || /^imaps?:\/\//.test(v), 'expected imap:// or imaps://user:password@host/MAILBOX'),
    secret: true,
    help: 'email bridge: the mailbox read (with IDLE) for mail to the bridge, imaps://user:password@host:993/INBOX',
  },
  bridgeEmailSmtpUrl: {
    env: 'BRIDGE_EMAIL_SMTP_URL',
    default: '',
    schema: z.string().refine((v) => v === '' || /^smtps?:\/\//.test(v), 'expected smtp:// or smtps://user:password@host:port'),
    secret: true,
    help: 'email bridge: where replies are sent, smtps://user:password@host:465 (setting it turns the email bridge on)',
  },
  bridgeEmailAddress: { env: 'BRIDGE_EMAIL_ADDRESS', default: '', schema: z.string().refine((v) => v === '' || /^[^\s@]+@[^\s@]+$/.test(v), 'expected an email address'), help: "email bridge: the bridge's address (replies come from it; mail to it opens a thread)" },
  bridgeEmailDomain: { env: 'BRIDGE_EMAIL_DOMAIN', default: '', schema: z.string(), help: 'email bridge: mail to <session>@this domain plays that session' },
  bridgeEmailSmtpListen: {
    env: 'BRIDGE_EMAIL_SMTP_LISTEN',
    default: '',
    schema: z.string().refine((v) => v === '' || /^(\[[^\]]+\]|[^:]*):\d{1,5}$/.test(v), 'expected host:port (e.g. 0.0.0.0:25)'),
    help: "email bridge: host:port of an SMTP listener taking mail sent straight to the proxy (the domain's MX)",
  },
  bridgeEmailSide: { env: 'BRIDGE_EMAIL_SIDE', default: 'B', schema: z.enum(['A', 'B']), help: 'email bridge: the side an email thread plays' },
  bridgeEmailAllow: {
    env: 'BRIDGE_EMAIL_ALLOW',
    default: '',
    schema: z.string(),
    help: "email bridge: who may play, comma-separated addresses, domains or *, each optionally for one session (npc-guard:alice@example.com); nobody when empty",
  },
  bridgeEmailSession: { env: 'BRIDGE_EMAIL_SESSION', default: '', schema: z.string().max(256), help: "email bridge: the session a new thread to the bridge's address plays (empty: a session of its own per thread)" },
  bridgeEmailPerMinute: { env: 'BRIDGE_EMAIL_PER_MINUTE', default: '60', schema: perMinute, help: 'email bridge: mails sent a minute at most (the mail provider\'s quota); 0: no limit' },
  bridgeSmsAccountSid: { env: 'BRIDGE_SMS_ACCOUNT_SID', default: '', schema: z.string().refine((v) => v === '' || /^AC[0-9a-fA-F]{32}$/.test(v), 'expected a Twilio Account SID (AC followed by 32 hex digits)'), help: 'SMS bridge: the Twilio Account SID (setting it turns the SMS bridge on)' },
  bridgeSmsAuthToken: { env: 'BRIDGE_SMS_AUTH_TOKEN', default: '', schema: z.string(), secret: true, help: "SMS bridge: the Twilio auth token (sends messages, and checks X-Twilio-Signature on Twilio's webhooks)" },
  bridgeSmsFrom: { env: 'BRIDGE_SMS_FROM', default: '', schema: z.string().refine((v) => v === '' || /^(\+[1-9]\d{6,14}|MG[0-9a-fA-F]{32})$/.test(v), 'expected an E.164 number (+15551234567) or a Messaging Service SID (MG…)'), help: 'SMS bridge: the number (E.164) or Messaging Service SID messages are sent from' },
  bridgeSmsNumbers: { env: 'BRIDGE_SMS_NUMBERS', default: '', schema: z.string(), help: 'SMS bridge: phone numbers that play a session without JOIN, +15551234567=npc-guard, comma-separated' },
  bridgeSmsAllow: { env: 'BRIDGE_SMS_ALLOW', default: '', schema: keyList, help: "SMS bridge: phone numbers that may JOIN a session besides BRIDGE_SMS_NUMBERS, comma-separated; '*' for any phone (empty: only the configured numbers play)" },
  bridgeSmsSide: { env: 'BRIDGE_SMS_SIDE', default: 'B', schema: z.enum(['A', 'B']), help: 'SMS bridge: the side a phone plays' },
  bridgeSmsJoinKeyword: { env: 'BRIDGE_SMS_JOIN_KEYWORD', default: 'JOIN', schema: z.string().regex(/^[A-Za-z]{2,20}$/, 'letters only'), help: "SMS bridge: the keyword that joins a session ('JOIN npc-guard')" },
  bridgeSmsPerMinute: { env: 'BRIDGE_SMS_PER_MINUTE', default: '60', schema: perMinute, help: "SMS bridge: messages sent a minute at most (a long code's rate is about one a second); 0: no limit" },
  bridgeSmsApiUrl: { env: 'BRIDGE_SMS_API_URL', default: '', schema: z.string(), help: "SMS bridge: Twilio's REST API base, for trying the bridge against a local server that follows Twilio's contract (default: Twilio's own)" },
  bridgeDiscordToken: { env: 'BRIDGE_DISCORD_TOKEN', default: '', schema: z.string(), secret: true, help: "Discord bridge: the bot's token (setting it turns the Discord bridge on)" },
  bridgeDiscordApplicationId: { env: 'BRIDGE_DISCORD_APPLICATION_ID', default: '', schema: z.string().regex(/^(\d{5,25})?$/, 'expected a Discord application id (digits)'), help: "Discord bridge: the bot's application id, for the /motive slash command (default: read at login)" },
  bridgeDiscordChannels: { env: 'BRIDGE_DISCORD_CHANNELS', default: '', schema: z.string(), help: 'Discord bridge: channels that play a session, 123456789012345678=npc-guard, comma-separated (threads are opened with /motive join)' },
  bridgeDiscordMember: { env: 'BRIDGE_DISCORD_MEMBER', default: '', schema: z.string().regex(/^(\d{5,25})?$/, 'expected a Discord user id (digits)'), help: "Discord bridge: relay only this member's messages (default: every member's)" },
  bridgeDiscordSide: { env: 'BRIDGE_DISCORD_SIDE', default: 'B', schema: z.enum(['A', 'B']), help: 'Discord bridge: the side a channel or thread plays' },
  bridgeDiscordPerMinute: { env: 'BRIDGE_DISCORD_PER_MINUTE', default: '50', schema: perMinute, help: "Discord bridge: messages posted a minute at most (Discord allows about 5 per 5 s a channel); 0: no limit" },
  bridgeDiscordApiUrl: { env: 'BRIDGE_DISCORD_API_URL', default: '', schema: z.string(), help: "Discord bridge: Discord's REST API base, for trying the bridge against a local server that follows Discord's contract (default: Discord's own)" },
  // For testing the e2e harness only (src/sessions/fault-injection.ts): a deliberately faulty build.
  faultInjection: {
    env: 'FAULT_INJECTION',
    default: 'off',
    schema: z.enum(['off', 'duplicate-delivery', 'drop-delivery', 'crash-after-delivery-append', 'crash-before-turn-append', 'stall-before-turn-append']),
    help: 'FOR TESTING ONLY: duplicate-delivery sends one message twice, drop-delivery loses one, crash-after-delivery-append kills the process between a delivery\'s journal append and its reply, crash-before-turn-append before a turn\'s append, stall-before-turn-append freezes it there for 3 s; never set it in production',
  },
} as const;

export type OptionName = keyof typeof OPTIONS;

export const isSecret = (name: OptionName): boolean => 'secret' in OPTIONS[name] && OPTIONS[name].secret === true;

export type Config = { readonly [K in OptionName]: z.output<(typeof OPTIONS)[K]['schema']> };

export type Source = 'flag' | 'env' | 'default';

export interface LoadedConfig {
  readonly config: Config;
  readonly sources: Readonly<Record<OptionName, Source>>;
  readonly raw: Readonly<Record<OptionName, string>>;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

const kebab = (name: string): string => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
export const flagName = (name: OptionName): string => `--${kebab(name)}`;
const isBoolean = (name: OptionName): boolean => OPTIONS[name].default === 'true' || OPTIONS[name].default === 'false';

export interface ParsedArgs {
  readonly values: Partial<Record<OptionName, string>>;
  readonly help: boolean;
  readonly version: boolean;
}

/** `--name value`, `--name=value`, bare `--flag` / `--no-flag` for booleans, `-h`, `-v` (the shared parser, src/args.ts). */
export function parseArgs(argv: readonly string[]): ParsedArgs {
  const names = Object.keys(OPTIONS) as OptionName[];
  const options: Record<string, OptionSpec> = { help: { type: 'boolean', short: 'h' }, version: { type: 'boolean', short: 'v' } };
  for (const name of names) options[kebab(name)] = { type: 'string' };
  let line;
  try {
    line = parseCommandLine(argv, options, { switches: names.filter(isBoolean).map(kebab) });
  } catch (err) {
    throw err instanceof UsageError ? new ConfigError(err.message) : err;
  }
  const values: Partial<Record<OptionName, string>> = {};
  for (const name of names) {
    const value = line.values[kebab(name)];
    if (typeof value === 'string') values[name] = value;
  }
  return { values, help: line.values['help'] === true, version: line.values['version'] === true };
}

/** Resolves every option from flags, then the environment, then defaults; throws ConfigError. */
export function loadConfig(flags: Partial<Record<OptionName, string>>, env: NodeJS.ProcessEnv): LoadedConfig {
  const config: Record<string, unknown> = {};
  const sources = {} as Record<OptionName, Source>;
  const raw = {} as Record<OptionName, string>;
  const problems: string[] = [];
  for (const name of Object.keys(OPTIONS) as OptionName[]) {
    const option = OPTIONS[name];
    const fromEnv = env[option.env];
    const source: Source = flags[name] !== undefined ? 'flag' : fromEnv !== undefined && fromEnv !== '' ? 'env' : 'default';
    const value = source === 'flag' ? flags[name]! : source === 'env' ? fromEnv! : option.default;
    sources[name] = source;
    raw[name] = value;
    const parsed = option.schema.safeParse(value);
    if (parsed.success) {
      config[name] = parsed.data;
    } else {
      const where = source === 'flag' ? flagName(name) : source === 'env' ? option.env : `default of ${option.env}`;
      const shown = isSecret(name) ? '(hidden)' : `'${value}'`;
      problems.push(`invalid value for ${where}: ${shown} (${option.help}; ${parsed.error.issues[0]?.message ?? 'invalid'})`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems.join('\n'));
  // A service others can reach limits new sessions per client unless told otherwise.
  if (sources.newSessionsPerMinute === 'default' && !isLoopbackHost(config['host'] as string)) {
    config['newSessionsPerMinute'] = NEW_SESSIONS_BEYOND_LOOPBACK;
    raw.newSessionsPerMinute = `${NEW_SESSIONS_BEYOND_LOOPBACK} (HOST is not loopback)`;
  }
  const c = config as Config;
  if (c.oidcIssuer && c.jwksUrl) problems.push('set OIDC_ISSUER (discovery) or JWKS_URL, not both');
  // OIDC_ISSUER with OIDC_CLIENT_ID and no audience signs people in to the console and takes no bearer tokens.
  if ((c.jwksUrl || (c.oidcIssuer && !c.oidcClientId)) && c.jwtAudience.length === 0) {
    problems.push('JWT_AUDIENCE is required with OIDC_ISSUER or JWKS_URL: without it, a token your identity provider issued to any other application would be accepted');
  }
  if (c.oidcClientId && !c.oidcIssuer) problems.push('OIDC_CLIENT_ID (console sign-in) needs OIDC_ISSUER: the provider people sign in at');
  if (c.oidcClientId && !c.publicUrl) problems.push('OIDC_CLIENT_ID (console sign-in) needs PUBLIC_URL: where the identity provider sends people back (PUBLIC_URL/console/callback)');
  if (c.jwksUrl && !c.jwtIssuer) problems.push("JWT_ISSUER is required with JWKS_URL: the iss your tokens carry, so that tokens from another issuer are refused");
  problems.push(...bridgeProblems(c));
  if (problems.length > 0) throw new ConfigError(problems.join('\n'));
  return { config: config as Config, sources, raw };
}

/** `key=session` pairs, comma-separated (BRIDGE_SMS_NUMBERS, BRIDGE_DISCORD_CHANNELS); throws naming the bad entry. */
export function sessionPairs(raw: string, what: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of raw.split(',').map((e) => e.trim()).filter(Boolean)) {
    const eq = entry.indexOf('=');
    if (eq <= 0 || eq === entry.length - 1) throw new ConfigError(`${what}: '${entry}' is not <key>=<session>`);
    out[entry.slice(0, eq).trim()] = entry.slice(eq + 1).trim();
  }
  return out;
}

/** What a configured bridge lacks: each missing setting, named. */
function bridgeProblems(c: Config): string[] {
  const problems: string[] = [];
  const pairsOf = (raw: string, what: string, key: RegExp, keyIs: string): void => {
    try {
      for (const k of Object.keys(sessionPairs(raw, what))) if (!key.test(k)) problems.push(`${what}: '${k}' is not ${keyIs}`);
    } catch (err) {
      problems.push((err as Error).message);
    }
  };
  if (c.bridgeEmailSmtpUrl) {
    if (!c.bridgeEmailAddress) problems.push('the email bridge (BRIDGE_EMAIL_SMTP_URL) needs BRIDGE_EMAIL_ADDRESS: the address its replies come from');
    if (!c.bridgeEmailImapUrl && !c.bridgeEmailSmtpListen) problems.push('the email bridge (BRIDGE_EMAIL_SMTP_URL) needs BRIDGE_EMAIL_IMAP_URL or BRIDGE_EMAIL_SMTP_LISTEN: where mail comes in');
  } else if (c.bridgeEmailImapUrl || c.bridgeEmailSmtpListen) {
    problems.push('the email bridge needs BRIDGE_EMAIL_SMTP_URL: where its replies are sent');
  }
  if (c.bridgeSmsAccountSid) {
    if (!c.bridgeSmsAuthToken) problems.push('the SMS bridge (BRIDGE_SMS_ACCOUNT_SID) needs BRIDGE_SMS_AUTH_TOKEN');
    if (!c.bridgeSmsFrom) problems.push('the SMS bridge (BRIDGE_SMS_ACCOUNT_SID) needs BRIDGE_SMS_FROM: the number or Messaging Service messages are sent from');
    if (!c.publicUrl) problems.push("the SMS bridge (BRIDGE_SMS_ACCOUNT_SID) needs PUBLIC_URL: the address Twilio calls the service at, which its webhook signatures cover");
  }
  pairsOf(c.bridgeSmsNumbers, 'BRIDGE_SMS_NUMBERS', /^\+[1-9]\d{6,14}$/, 'an E.164 phone number (+15551234567)');
  pairsOf(c.bridgeDiscordChannels, 'BRIDGE_DISCORD_CHANNELS', /^\d{5,25}$/, 'a Discord channel id (digits)');
  return problems;
}

export function timingOf(config: Config) {
  return {
    handshakeTimeoutMs: config.handshakeTimeoutSeconds * 1000,
    turnTimeoutMs: config.turnTimeoutSeconds * 1000,
    streamTurnTimeoutMs: config.streamTurnTimeoutSeconds * 1000,
    sessionTtlMs: config.sessionTtlSeconds * 1000,
    // A session whose peer never came ends as soon as a handshake would have given up (issue: empty
    // sessions held MAX_SESSIONS slots for an hour).
    unjoinedTtlMs: Math.min(config.handshakeTimeoutSeconds, config.sessionTtlSeconds) * 1000,
  };
}
