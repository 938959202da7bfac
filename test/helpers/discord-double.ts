/**
 * A stand-in for Discord, for tests of the Discord bridge: one local HTTP server that answers
 * Discord's REST API under `/api/v10` and runs its gateway (WebSocket) on the same port, following
 * the published API contract closely enough for discord.js to log in and work against it.
 *
 * Payloads are typed with discord.js's own API types (discord-api-types, which follow Discord's
 * documentation), so a shape that drifts from the contract does not compile.
 *
 * REST: GET /gateway/bot, GET /gateway, GET /users/@me, PUT /applications/{app}/commands (and the
 * per-guild form), GET and DELETE /channels/{id}, POST /channels/{id}/messages (with Discord's
 * nonce dedupe: with `enforce_nonce`, the same author's same nonce within a few minutes returns
 * the earlier message and creates nothing), POST /channels/{id}/typing, POST /channels/{id}/threads,
 * PUT /channels/{id}/thread-members/{user}, POST /interactions/{id}/{token}/callback (once, within
 * 3 s) and PATCH /webhooks/{app}/{token}/messages/@original. Bot routes need `Authorization: Bot
 * <token>` (401 otherwise); interaction routes are authorized by their token, as on Discord.
 *
 * Gateway: HELLO, IDENTIFY (a wrong token closes 4004; the privileged Message Content intent
 * closes 4014 unless the application has it), READY then GUILD_CREATE, HEARTBEAT → HEARTBEAT_ACK,
 * RESUME (replays what was missed, then RESUMED), and dispatches filtered by the session's intents
 * (no message content without Message Content, except the bot's own and messages that mention it).
 *
 * Tests drive it as a person would (`postMessage`, `invokeCommand`), read what the bot did
 * (`messages`, `typing`, `threads`, `commands`, `interaction`), and make it fail (`failNext`,
 * `closeNextIdentify`, `dropGateway`).
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  ApplicationCommandOptionType,
  ApplicationCommandType,
  ChannelType,
  GatewayDispatchEvents,
  GatewayIntentBits,
  GatewayOpcodes,
  GuildDefaultMessageNotifications,
  GuildExplicitContentFilter,
  GuildMFALevel,
  GuildNSFWLevel,
  GuildPremiumTier,
  GuildSystemChannelFlags,
  GuildVerificationLevel,
  InteractionContextType,
  InteractionResponseType,
  InteractionType,
  Locale,
  MessageFlags,
  MessageType,
  PermissionFlagsBits,
  ThreadAutoArchiveDuration,
  type APIApplicationCommand,
  type ApplicationFlags,
  type ChannelFlags,
  type GuildMemberFlags,
  type RoleFlags,
  type ThreadMemberFlags,
  type UserFlags,
  type APIApplicationCommandInteractionDataBasicOption,
  type APIApplicationCommandOption,
  type APIChatInputApplicationCommandGuildInteraction,
  type APIGuildMember,
  type APIInteractionGuildMember,
  type APIInteractionResponse,
  type APIMessage,
  type APIRole,
  type APITextChannel,
  type APIThreadChannel,
  type APIUser,
  type GatewayDispatchPayload,
  type GatewayGuildCreateDispatchData,
  type GatewayMessageCreateDispatchData,
  type GatewayReadyDispatchData,
  type GatewayReceivePayload,
  type GatewaySendPayload,
  type RESTGetAPIGatewayBotResult,
  type RESTPatchAPIWebhookWithTokenMessageJSONBody,
  type RESTPostAPIChannelMessageJSONBody,
  type RESTPostAPIChannelThreadsJSONBody,
  type RESTPostAPIInteractionCallbackWithResponseResult,
  type RESTPutAPIApplicationCommandsJSONBody,
} from 'discord.js';
import { WebSocket, WebSocketServer } from 'ws';

const DISCORD_EPOCH = 1_420_070_400_000n;
let increment = 0n;

/** A Discord snowflake for now: ms since Discord's epoch, worker 1, process 1, an increment. */
export function snowflake(at = Date.now()): string {
  increment = (increment + 1n) & 0xfffn;
  return (((BigInt(at) - DISCORD_EPOCH) << 22n) | (1n << 17n) | (1n << 12n) | increment).toString();
}

/** Polls until `check` returns something truthy, and returns it; or fails naming `what`. */
export async function waitFor<T>(check: () => T | undefined | null | false | '' | 0, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

export interface DiscordDoubleOptions {
  readonly token?: string;
  readonly applicationId?: string;
  readonly botName?: string;
  /** The gateway's heartbeat interval (Discord's is about 41 s). */
  readonly heartbeatIntervalMs?: number;
  /** Whether the application may use the privileged Message Content intent (Developer Portal switch); default true. */
  readonly messageContentIntent?: boolean;
  /** How long a nonce is remembered for `enforce_nonce` ("the past few minutes" on Discord). */
  readonly nonceWindowMs?: number;
}

/** A request the double answered, as it came. */
export interface RecordedRequest {
  readonly method: string;
  /** The path after `/api/v10`, with the query. */
  readonly path: string;
  readonly status: number;
  readonly body: unknown;
  readonly authorization: string | undefined;
}

/** A message creation the bot asked for: `created` false when the nonce returned an earlier message. */
export interface MessagePost {
  readonly channelId: string;
  readonly body: RESTPostAPIChannelMessageJSONBody;
  readonly created: boolean;
  readonly message: APIMessage;
}

export interface RecordedInteraction {
  readonly id: string;
  readonly token: string;
  readonly channelId: string;
  readonly userId: string;
  readonly at: number;
  /** The callbacks the bot made (the first one acknowledges; Discord refuses a second). */
  readonly responses: APIInteractionResponse[];
  /** The message the response made (or the deferred one, after its edits). */
  original: APIMessage | null;
}

interface Failure {
  readonly method: string;
  readonly path: RegExp;
  readonly status: number;
  remaining: number;
  readonly retryAfterS: number;
  readonly body: Record<string, unknown> | null;
}

interface GatewaySession {
  readonly id: string;
  readonly intents: number;
  seq: number;
  socket: WebSocket | null;
  readonly sent: GatewayDispatchPayload[];
}

/** A guild's text channel and thread, whose guild_id Discord always sends. */
type GuildText = APITextChannel & { guild_id: string };
type Thread = APIThreadChannel & { guild_id: string };

interface Reply {
  readonly status: number;
  readonly body?: unknown;
  readonly headers?: Record<string, string>;
}

type Handler = (request: { params: string[]; body: unknown; query: URLSearchParams; auth: string | undefined }) => Reply;

const json = (status: number, body: unknown, headers?: Record<string, string>): Reply => ({ status, body, ...(headers ? { headers } : {}) });
const error = (status: number, code: number, message: string): Reply => json(status, { message, code });
const unknownChannel = (): Reply => error(404, 10003, 'Unknown Channel');
const unknownInteraction = (): Reply => error(404, 10062, 'Unknown interaction');
/** What Discord says of a form it will not take (Invalid Form Body). */
const invalidForm = (field: string, code: string, message: string): Reply => json(400, { message: 'Invalid Form Body', code: 50035, errors: { [field]: { _errors: [{ code, message }] } } });

/** Every permission the bot needs here; Discord sends them as a decimal string. */
const BOT_PERMISSIONS = (
  PermissionFlagsBits.ViewChannel |
  PermissionFlagsBits.SendMessages |
  PermissionFlagsBits.SendMessagesInThreads |
  PermissionFlagsBits.CreatePublicThreads |
  PermissionFlagsBits.ManageThreads |
  PermissionFlagsBits.ReadMessageHistory |
  PermissionFlagsBits.UseApplicationCommands
).toString();
const EVERYONE_PERMISSIONS = (PermissionFlagsBits.ViewChannel | PermissionFlagsBits.SendMessages | PermissionFlagsBits.SendMessagesInThreads | PermissionFlagsBits.ReadMessageHistory | PermissionFlagsBits.UseApplicationCommands).toString();

/** Discord's limit on a message's content; counted here in UTF-16 code units, the strictest reading. */
const MAX_CONTENT = 2000;
/** Discord accepts an interaction's first answer within 3 s of it, and its token for 15 minutes. */
const INTERACTION_ANSWER_MS = 3_000;
const INTERACTION_TOKEN_MS = 15 * 60_000;

export class DiscordDouble {
  readonly token: string;
  readonly applicationId: string;
  readonly bot: APIUser;
  readonly guildId: string;
  /** The guild's first text channel (`general`) and a second one (`lobby`). */
  readonly general: string;
  readonly lobby: string;
  /** Every REST request, in order. */
  readonly requests: RecordedRequest[] = [];
  readonly posts: MessagePost[] = [];
  readonly typing: { readonly channelId: string; readonly at: number }[] = [];
  readonly threads: Thread[] = [];
  /** Global commands (key ''), and each guild's. */
  readonly commandSets = new Map<string, APIApplicationCommand[]>();
  readonly interactions = new Map<string, RecordedInteraction>();
  /** IDENTIFY and RESUME payloads the gateway took, in order. */
  readonly identifies: number[] = [];
  readonly resumes: string[] = [];
  /** HEARTBEATs the gateway acknowledged. */
  heartbeats = 0;

  private readonly server: Server;
  private readonly wss: WebSocketServer;
  private readonly options: Required<Omit<DiscordDoubleOptions, 'token' | 'applicationId' | 'botName'>>;
  private readonly users = new Map<string, APIUser>();
  private readonly members = new Map<string, APIGuildMember>();
  private readonly roles: APIRole[];
  private readonly channels = new Map<string, GuildText | Thread>();
  private readonly history = new Map<string, APIMessage[]>();
  private readonly nonces = new Map<string, { message: APIMessage; at: number }>();
  private readonly failures: Failure[] = [];
  private readonly sessions = new Map<string, GatewaySession>();
  private readonly routes: { method: string; path: RegExp; handler: Handler; botAuth: boolean }[] = [];
  private nextIdentifyClose: { code: number; reason: string } | null = null;
  private readonly joinedAt = new Date().toISOString();
  private port = 0;

  static async start(options: DiscordDoubleOptions = {}): Promise<DiscordDouble> {
    const double = new DiscordDouble(options);
    await new Promise<void>((resolve) => double.server.listen(0, '127.0.0.1', resolve));
    double.port = (double.server.address() as AddressInfo).port;
    return double;
  }

  private constructor(options: DiscordDoubleOptions) {
    this.token = options.token ?? `double.${randomBytes(12).toString('base64url')}`;
    this.applicationId = options.applicationId ?? snowflake();
    this.options = {
      heartbeatIntervalMs: options.heartbeatIntervalMs ?? 41_250,
      messageContentIntent: options.messageContentIntent ?? true,
      nonceWindowMs: options.nonceWindowMs ?? 5 * 60_000,
    };
    // A bot user's id is its application's id.
    this.bot = { id: this.applicationId, username: options.botName ?? 'motive-bot', discriminator: '0', global_name: null, avatar: null, bot: true, flags: 0 as UserFlags, public_flags: 0 as UserFlags, verified: true, mfa_enabled: false };
    this.users.set(this.bot.id, this.bot);
    this.guildId = snowflake();
    this.roles = [
      // @everyone's id is the guild's.
      { id: this.guildId, name: '@everyone', color: 0, colors: { primary_color: 0, secondary_color: null, tertiary_color: null }, hoist: false, icon: null, unicode_emoji: null, position: 0, permissions: EVERYONE_PERMISSIONS, managed: false, mentionable: false, flags: 0 as RoleFlags },
    ];
    this.members.set(this.bot.id, this.memberOf(this.bot));
    this.general = this.addTextChannel('general');
    this.lobby = this.addTextChannel('lobby');
    this.defineRoutes();
    this.server = createServer((request, response) => void this.onRequest(request, response));
    this.wss = new WebSocketServer({ server: this.server });
    this.wss.on('connection', (socket, request) => this.onGateway(socket, request));
  }

  /** discord.js's `rest.api` for this double. */
  get apiBaseUrl(): string {
    return `http://127.0.0.1:${this.port}/api`;
  }

  get gatewayUrl(): string {
    return `ws://127.0.0.1:${this.port}`;
  }

  /** Adds a text channel to the guild (announced with CHANNEL_CREATE to a connected bot). */
  addTextChannel(name: string): string {
    const channel: GuildText = {
      id: snowflake(),
      type: ChannelType.GuildText,
      guild_id: this.guildId,
      name,
      position: this.channels.size,
      permission_overwrites: [],
      parent_id: null,
      topic: null,
      nsfw: false,
      last_message_id: null,
      rate_limit_per_user: 0,
      default_auto_archive_duration: ThreadAutoArchiveDuration.OneDay,
      default_thread_rate_limit_per_user: 0,
      flags: 0 as ChannelFlags,
    };
    this.channels.set(channel.id, channel);
    this.history.set(channel.id, []);
    if (this.port) this.dispatch(GatewayDispatchEvents.ChannelCreate, channel);
    return channel.id;
  }

  /** A person in the guild (made a member on first use). */
  person(id: string = snowflake(), username = `person-${id.slice(-4)}`): APIUser {
    let user = this.users.get(id);
    if (!user) {
      user = { id, username, discriminator: '0', global_name: username, avatar: null, flags: 0 as UserFlags, public_flags: 0 as UserFlags };
      this.users.set(id, user);
      this.members.set(id, this.memberOf(user));
    }
    return user;
  }

  /** Someone writes in a channel or thread: MESSAGE_CREATE goes to the bot. */
  postMessage(channelId: string, authorId: string, content: string, extra: Partial<Pick<APIMessage, 'type' | 'webhook_id'>> & { bot?: boolean } = {}): APIMessage {
    if (!this.channels.has(channelId)) throw new Error(`no channel ${channelId} in the double`);
    const author = { ...this.person(authorId), ...(extra.bot ? { bot: true } : {}) };
    const message = this.message(channelId, author, content, extra.type ?? MessageType.Default);
    if (extra.webhook_id) message.webhook_id = extra.webhook_id;
    this.store(message);
    return message;
  }

  /**
   * Someone uses a registered slash command's subcommand (`/motive join session:x`): INTERACTION_CREATE
   * of type APPLICATION_COMMAND goes to the bot. Options are typed as the command declared them.
   */
  invokeCommand(channelId: string, userId: string, subcommand: string, values: Record<string, string | number | boolean> = {}): RecordedInteraction {
    const channel = this.channels.get(channelId);
    if (!channel) throw new Error(`no channel ${channelId} in the double`);
    const commands = [...(this.commandSets.get('') ?? []), ...(this.commandSets.get(this.guildId) ?? [])];
    const command = commands.find((c) => c.options?.some((o) => o.type === ApplicationCommandOptionType.Subcommand && o.name === subcommand));
    // A Discord client offers only registered commands.
    if (!command) throw new Error(`no registered command has a subcommand '${subcommand}'`);
    const declared = command.options!.find((o) => o.name === subcommand) as APIApplicationCommandOption & { options?: APIApplicationCommandOption[] };
    const options: APIApplicationCommandInteractionDataBasicOption[] = [];
    for (const option of declared.options ?? []) {
      const value = values[option.name];
      if (value === undefined) {
        if ('required' in option && option.required) throw new Error(`option '${option.name}' is required`);
        continue;
      }
      options.push({ name: option.name, type: option.type, value } as APIApplicationCommandInteractionDataBasicOption);
    }
    const user = this.person(userId);
    const member: APIInteractionGuildMember = { ...this.members.get(user.id)!, user, permissions: EVERYONE_PERMISSIONS };
    const id = snowflake();
    const token = `aW50ZXJhY3Rpb24.${randomBytes(24).toString('base64url')}`;
    const interaction: APIChatInputApplicationCommandGuildInteraction = {
      id,
      application_id: this.applicationId,
      type: InteractionType.ApplicationCommand,
      data: { id: command.id, name: command.name, type: ApplicationCommandType.ChatInput, options: [{ type: ApplicationCommandOptionType.Subcommand, name: subcommand, options }] },
      guild: { id: this.guildId, locale: Locale.EnglishUS, features: [] },
      guild_id: this.guildId,
      channel,
      channel_id: channelId,
      member,
      token,
      version: 1,
      app_permissions: BOT_PERMISSIONS,
      locale: Locale.EnglishUS,
      guild_locale: Locale.EnglishUS,
      entitlements: [],
      authorizing_integration_owners: { 0: this.guildId },
      context: InteractionContextType.Guild,
      attachment_size_limit: 10 * 1024 * 1024,
    };
    const recorded: RecordedInteraction = { id, token, channelId, userId: user.id, at: Date.now(), responses: [], original: null };
    this.interactions.set(id, recorded);
    this.dispatch(GatewayDispatchEvents.InteractionCreate, interaction);
    return recorded;
  }

  /** Every message of a channel or thread, oldest first (the bot's and people's). */
  messages(channelId: string): APIMessage[] {
    return [...(this.history.get(channelId) ?? [])];
  }

  /** The registered commands: global, or a guild's. */
  commands(guildId = ''): APIApplicationCommand[] {
    return [...(this.commandSets.get(guildId) ?? [])];
  }

  interaction(id: string): RecordedInteraction | undefined {
    return this.interactions.get(id);
  }

  /**
   * The next `times` requests matching `route` fail with `status`, with Discord's body for it.
   * `route` is `METHOD /path` after /api/v10, where `*` stands for one path segment:
   * `POST /channels/*\/messages`.
   */
  failNext(route: string, status: number, options: { times?: number; retryAfterS?: number; body?: Record<string, unknown> } = {}): void {
    const [method, path] = route.split(' ') as [string, string];
    const pattern = new RegExp(`^${path.split('/').map((segment) => (segment === '*' ? '[^/]+' : segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))).join('/')}$`);
    this.failures.push({ method: method.toUpperCase(), path: pattern, status, remaining: options.times ?? 1, retryAfterS: options.retryAfterS ?? 1, body: options.body ?? null });
  }

  /** The next IDENTIFY is answered by closing the connection with `code` (4004: authentication failed, 4014: disallowed intents). */
  closeNextIdentify(code: number, reason = 'Closed by the test.'): void {
    this.nextIdentifyClose = { code, reason };
  }

  /** Drops every gateway connection with `code` (4000, unknown error: a client resumes). */
  dropGateway(code = 4000): void {
    for (const client of this.wss.clients) client.close(code, 'Dropped by the test.');
  }

  /** Gateway connections open now. */
  get gatewayConnections(): number {
    return [...this.wss.clients].filter((c) => c.readyState === WebSocket.OPEN).length;
  }

  async close(): Promise<void> {
    for (const client of this.wss.clients) client.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // ---- gateway ----

  private onGateway(socket: WebSocket, request: IncomingMessage): void {
    const query = new URL(request.url ?? '/', 'ws://double').searchParams;
    if (query.get('v') !== '10') return socket.close(4012, 'Invalid API version.');
    // Only JSON without transport compression is spoken here (discord.js's default without zlib-sync).
    if ((query.get('encoding') ?? 'json') !== 'json' || query.has('compress')) return socket.close(4002, 'Error while decoding payload.');
    let session: GatewaySession | null = null;
    socket.on('message', (raw) => {
      let payload: GatewaySendPayload;
      try {
        payload = JSON.parse(raw.toString()) as GatewaySendPayload;
      } catch {
        return socket.close(4002, 'Error while decoding payload.');
      }
      switch (payload.op) {
        case GatewayOpcodes.Heartbeat:
          this.heartbeats += 1;
          return this.sendRaw(socket, { op: GatewayOpcodes.HeartbeatAck } as GatewayReceivePayload);
        case GatewayOpcodes.Identify: {
          if (session) return socket.close(4005, 'Already authenticated.');
          this.identifies.push(payload.d.intents);
          if (this.nextIdentifyClose) {
            const { code, reason } = this.nextIdentifyClose;
            this.nextIdentifyClose = null;
            return socket.close(code, reason);
          }
          if (payload.d.token !== this.token) return socket.close(4004, 'Authentication failed.');
          if ((payload.d.intents & GatewayIntentBits.MessageContent) !== 0 && !this.options.messageContentIntent) return socket.close(4014, 'Disallowed intent(s).');
          session = { id: randomBytes(16).toString('hex'), intents: payload.d.intents, seq: 0, socket, sent: [] };
          this.sessions.set(session.id, session);
          const ready: GatewayReadyDispatchData = {
            v: 10,
            user: this.bot,
            guilds: [{ id: this.guildId, unavailable: true }],
            session_id: session.id,
            resume_gateway_url: this.gatewayUrl,
            ...(payload.d.shard ? { shard: payload.d.shard } : {}),
            application: { id: this.applicationId, flags: 0 as ApplicationFlags, flags_new: '0' },
          };
          this.dispatchTo(session, GatewayDispatchEvents.Ready, ready);
          this.dispatchTo(session, GatewayDispatchEvents.GuildCreate, this.guildCreate());
          return;
        }
        case GatewayOpcodes.Resume: {
          const previous = this.sessions.get(payload.d.session_id);
          if (payload.d.token !== this.token) return socket.close(4004, 'Authentication failed.');
          if (!previous) return this.sendRaw(socket, { op: GatewayOpcodes.InvalidSession, d: false } as GatewayReceivePayload);
          this.resumes.push(previous.id);
          session = previous;
          session.socket = socket;
          for (const missed of session.sent.filter((p) => p.s > payload.d.seq)) this.sendRaw(socket, missed);
          this.dispatchTo(session, GatewayDispatchEvents.Resumed, {});
          return;
        }
        case GatewayOpcodes.PresenceUpdate:
        case GatewayOpcodes.VoiceStateUpdate:
        case GatewayOpcodes.RequestGuildMembers:
        case GatewayOpcodes.RequestSoundboardSounds:
          if (!session) return socket.close(4003, 'Not authenticated.');
          return;
        default:
          return socket.close(4001, 'Unknown opcode.');
      }
    });
    socket.on('close', () => {
      if (session?.socket === socket) session.socket = null;
    });
    this.sendRaw(socket, { op: GatewayOpcodes.Hello, d: { heartbeat_interval: this.options.heartbeatIntervalMs } } as GatewayReceivePayload);
  }

  private guildCreate(): GatewayGuildCreateDispatchData {
    return {
      id: this.guildId,
      name: 'Double Guild',
      icon: null,
      splash: null,
      discovery_splash: null,
      owner_id: snowflake(),
      afk_channel_id: null,
      afk_timeout: 300,
      verification_level: GuildVerificationLevel.None,
      default_message_notifications: GuildDefaultMessageNotifications.OnlyMentions,
      explicit_content_filter: GuildExplicitContentFilter.Disabled,
      roles: this.roles,
      emojis: [],
      features: [],
      mfa_level: GuildMFALevel.None,
      application_id: null,
      system_channel_id: this.general,
      system_channel_flags: GuildSystemChannelFlags.SuppressJoinNotifications,
      rules_channel_id: null,
      vanity_url_code: null,
      description: null,
      banner: null,
      premium_tier: GuildPremiumTier.None,
      preferred_locale: Locale.EnglishUS,
      public_updates_channel_id: null,
      nsfw_level: GuildNSFWLevel.Default,
      stickers: [],
      premium_progress_bar_enabled: false,
      hub_type: null,
      safety_alerts_channel_id: null,
      incidents_data: null,
      joined_at: this.joinedAt,
      large: false,
      unavailable: false,
      member_count: this.members.size,
      voice_states: [],
      members: [this.members.get(this.bot.id)!],
      channels: [...this.channels.values()].filter((c): c is GuildText => c.type === ChannelType.GuildText),
      // Active threads the bot can see, as Discord sends them.
      threads: this.threads.filter((t) => this.channels.has(t.id) && !t.thread_metadata?.archived),
      presences: [],
      stage_instances: [],
      guild_scheduled_events: [],
      soundboard_sounds: [],
    };
  }

  /** Sends a dispatch to every session (a closed one keeps it for its RESUME). */
  private dispatch(t: GatewayDispatchEvents, d: unknown): void {
    for (const session of this.sessions.values()) this.dispatchTo(session, t, d);
  }

  private dispatchTo(session: GatewaySession, t: GatewayDispatchEvents, d: unknown): void {
    const visible = this.visibleTo(session, t, d);
    if (visible === null) return;
    session.seq += 1;
    const payload = { op: GatewayOpcodes.Dispatch, t, s: session.seq, d: visible } as GatewayDispatchPayload;
    session.sent.push(payload);
    if (session.sent.length > 1000) session.sent.shift();
    if (session.socket) this.sendRaw(session.socket, payload);
  }

  /** What a session's intents let it see of an event (null: nothing). */
  private visibleTo(session: GatewaySession, t: GatewayDispatchEvents, d: unknown): unknown {
    if (t !== GatewayDispatchEvents.MessageCreate && t !== GatewayDispatchEvents.MessageUpdate) return d;
    if ((session.intents & GatewayIntentBits.GuildMessages) === 0) return null;
    const message = d as GatewayMessageCreateDispatchData;
    const readable = (session.intents & GatewayIntentBits.MessageContent) !== 0 || message.author.id === this.bot.id || message.mentions.some((u) => u.id === this.bot.id);
    return readable ? message : { ...message, content: '', embeds: [], attachments: [], components: [] };
  }

  private sendRaw(socket: WebSocket, payload: GatewayReceivePayload): void {
    if (socket.readyState !== WebSocket.OPEN) return;
    // Payloads other than dispatches carry null s and t, as Discord sends them.
    socket.send(JSON.stringify(payload.op === GatewayOpcodes.Dispatch ? payload : { ...payload, s: null, t: null }));
  }

  // ---- REST ----

  private route(method: string, path: string, handler: Handler, botAuth = true): void {
    this.routes.push({ method, path: new RegExp(`^${path.replace(/:\w+/g, '([^/]+)')}$`), handler, botAuth });
  }

  private defineRoutes(): void {
    this.route('GET', '/gateway/bot', () =>
      json(200, {
        url: this.gatewayUrl,
        shards: 1,
        session_start_limit: { total: 1000, remaining: 999, reset_after: 86_400_000, max_concurrency: 1 },
      } satisfies RESTGetAPIGatewayBotResult),
    );
    this.route('GET', '/gateway', () => json(200, { url: this.gatewayUrl }), false);
    this.route('GET', '/users/@me', () => json(200, this.bot));
    this.route('PUT', '/applications/:app/commands', ({ params, body }) => this.putCommands(params[0]!, '', body));
    this.route('PUT', '/applications/:app/guilds/:guild/commands', ({ params, body }) => this.putCommands(params[0]!, params[1]!, body));
    this.route('GET', '/channels/:channel', ({ params }) => {
      const channel = this.channels.get(params[0]!);
      return channel ? json(200, channel) : unknownChannel();
    });
    this.route('DELETE', '/channels/:channel', ({ params }) => this.deleteChannel(params[0]!));
    this.route('POST', '/channels/:channel/messages', ({ params, body }) => this.createMessage(params[0]!, body as RESTPostAPIChannelMessageJSONBody));
    this.route('POST', '/channels/:channel/typing', ({ params }) => {
      if (!this.channels.has(params[0]!)) return unknownChannel();
      this.typing.push({ channelId: params[0]!, at: Date.now() });
      return { status: 204 };
    });
    this.route('POST', '/channels/:channel/threads', ({ params, body }) => this.createThread(params[0]!, body as RESTPostAPIChannelThreadsJSONBody));
    this.route('PUT', '/channels/:channel/thread-members/:user', ({ params }) => {
      const thread = this.channels.get(params[0]!);
      if (!thread || thread.type !== ChannelType.PublicThread) return unknownChannel();
      if (!this.users.has(params[1]!)) return error(404, 10013, 'Unknown User');
      return { status: 204 };
    });
    this.route('POST', '/interactions/:id/:token/callback', ({ params, body, query }) => this.interactionCallback(params[0]!, params[1]!, body as APIInteractionResponse, query), false);
    this.route('PATCH', '/webhooks/:app/:token/messages/@original', ({ params, body }) => this.editOriginal(params[0]!, params[1]!, body as RESTPatchAPIWebhookWithTokenMessageJSONBody), false);
  }

  private async onRequest(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const url = new URL(request.url ?? '/', 'http://double');
    const method = request.method ?? 'GET';
    const raw = Buffer.concat(chunks).toString('utf8');
    let body: unknown = null;
    if (raw) {
      try {
        body = JSON.parse(raw);
      } catch {
        body = raw;
      }
    }
    const auth = request.headers.authorization;
    // discord.js percent-encodes path segments (`%40original`); Discord reads them decoded.
    const pathname = decodeURIComponent(url.pathname);
    const path = pathname.startsWith('/api/v10/') ? pathname.slice('/api/v10'.length) : null;
    const reply = path === null ? error(404, 0, '404: Not Found') : this.answer(method, path, body, url.searchParams, auth);
    this.requests.push({ method, path: `${path ?? url.pathname}${url.search}`, status: reply.status, body, authorization: auth });
    response.writeHead(reply.status, { ...(reply.body === undefined ? {} : { 'content-type': 'application/json' }), ...reply.headers });
    response.end(reply.body === undefined ? undefined : JSON.stringify(reply.body));
  }

  private answer(method: string, path: string, body: unknown, query: URLSearchParams, auth: string | undefined): Reply {
    const failure = this.failures.find((f) => f.remaining > 0 && f.method === method && f.path.test(path));
    if (failure) {
      failure.remaining -= 1;
      return this.failureReply(failure, path);
    }
    for (const route of this.routes) {
      if (route.method !== method) continue;
      const match = route.path.exec(path);
      if (!match) continue;
      if (route.botAuth && auth !== `Bot ${this.token}`) return error(401, 0, '401: Unauthorized');
      return route.handler({ params: match.slice(1), body, query, auth });
    }
    return error(404, 0, '404: Not Found');
  }

  private failureReply(failure: Failure, path: string): Reply {
    if (failure.body) return json(failure.status, failure.body);
    switch (failure.status) {
      case 400:
        return error(400, 50035, 'Invalid Form Body');
      case 401:
        return error(401, 0, '401: Unauthorized');
      case 403:
        return error(403, 50001, 'Missing Access');
      case 404:
        return path.startsWith('/channels/') ? unknownChannel() : error(404, 0, '404: Not Found');
      case 429:
        // As Discord answers a route's limit: the body's retry_after and the bucket's headers.
        return json(
          429,
          { message: 'You are being rate limited.', retry_after: failure.retryAfterS, global: false },
          {
            'retry-after': String(Math.ceil(failure.retryAfterS)),
            'x-ratelimit-limit': '5',
            'x-ratelimit-remaining': '0',
            'x-ratelimit-reset-after': String(failure.retryAfterS),
            'x-ratelimit-bucket': randomBytes(16).toString('hex'),
            'x-ratelimit-scope': 'user',
          },
        );
      default:
        return error(failure.status, 0, `${failure.status}: ${failure.status >= 500 ? 'Internal Server Error' : 'Error'}`);
    }
  }

  private putCommands(app: string, guild: string, body: unknown): Reply {
    if (app !== this.applicationId) return error(403, 20012, 'You are not authorized to perform this action on this application');
    if (guild && guild !== this.guildId) return error(403, 50001, 'Missing Access');
    if (!Array.isArray(body)) return invalidForm('_root', 'ARRAY_TYPE_CONVERT', 'Only iterables may be used in a ListType');
    const previous = this.commandSets.get(guild) ?? [];
    const made: APIApplicationCommand[] = [];
    for (const [i, command] of (body as RESTPutAPIApplicationCommandsJSONBody).entries()) {
      if (!/^[-_\p{Ll}\p{N}]{1,32}$/u.test(command.name)) return invalidForm(`${i}.name`, 'APPLICATION_COMMAND_INVALID_NAME', 'Command name is invalid');
      if (!('description' in command) || typeof command.description !== 'string' || command.description.length < 1 || command.description.length > 100) {
        return invalidForm(`${i}.description`, 'BASE_TYPE_BAD_LENGTH', 'Must be between 1 and 100 in length.');
      }
      made.push({
        id: previous.find((p) => p.name === command.name)?.id ?? snowflake(),
        type: ApplicationCommandType.ChatInput,
        application_id: this.applicationId,
        ...(guild ? { guild_id: guild } : {}),
        name: command.name,
        description: command.description,
        options: ('options' in command ? (command.options ?? []) : []) as APIApplicationCommandOption[],
        default_member_permissions: command.default_member_permissions ?? null,
        nsfw: command.nsfw ?? false,
        contexts: command.contexts ?? null,
        integration_types: command.integration_types ?? [0],
        version: snowflake(),
      } as APIApplicationCommand);
    }
    this.commandSets.set(guild, made);
    return json(200, made);
  }

  private createMessage(channelId: string, body: RESTPostAPIChannelMessageJSONBody, author: APIUser = this.bot): Reply {
    if (!this.channels.has(channelId)) return unknownChannel();
    const content = typeof body.content === 'string' ? body.content : '';
    if (content.length > MAX_CONTENT) return invalidForm('content', 'BASE_TYPE_MAX_LENGTH', `Must be ${MAX_CONTENT} or fewer in length.`);
    if (content.trim() === '' && !body.embeds?.length && !body.sticker_ids?.length && !body.components?.length && !body.poll) return error(400, 50006, 'Cannot send an empty message');
    const { nonce } = body;
    if (nonce !== undefined && (typeof nonce === 'string' ? nonce.length > 25 : !Number.isInteger(nonce))) return invalidForm('nonce', 'BASE_TYPE_BAD_LENGTH', 'Must be 25 or fewer in length.');
    const key = nonce === undefined ? null : `${author.id}:${nonce}`;
    if (key && body.enforce_nonce) {
      const earlier = this.nonces.get(key);
      if (earlier && Date.now() - earlier.at < this.options.nonceWindowMs) {
        this.posts.push({ channelId, body, created: false, message: earlier.message });
        return json(200, earlier.message);
      }
    }
    let type = MessageType.Default;
    let referenced: APIMessage | null = null;
    if (body.message_reference) {
      referenced = this.history.get(body.message_reference.channel_id ?? channelId)?.find((m) => m.id === body.message_reference!.message_id) ?? null;
      if (!referenced && body.message_reference.fail_if_not_exists !== false) return invalidForm('message_reference', 'MESSAGE_REFERENCE_UNKNOWN_MESSAGE', 'Unknown message');
      if (referenced) type = MessageType.Reply;
    }
    const message = this.message(channelId, author, content, type);
    if (nonce !== undefined) message.nonce = nonce;
    if (referenced) {
      message.message_reference = { type: 0, message_id: referenced.id, channel_id: channelId, guild_id: this.guildId };
      message.referenced_message = referenced;
    }
    if (key) this.nonces.set(key, { message, at: Date.now() });
    this.posts.push({ channelId, body, created: true, message });
    this.store(message);
    return json(200, message);
  }

  private createThread(parentId: string, body: RESTPostAPIChannelThreadsJSONBody): Reply {
    const parent = this.channels.get(parentId);
    if (!parent) return unknownChannel();
    if (parent.type !== ChannelType.GuildText) return error(400, 50024, 'Cannot execute action on this channel type');
    if (typeof body.name !== 'string' || body.name.length < 1 || body.name.length > 100) return invalidForm('name', 'BASE_TYPE_BAD_LENGTH', 'Must be between 1 and 100 in length.');
    const type = body.type ?? ChannelType.PrivateThread;
    if (type !== ChannelType.PublicThread) return error(400, 50024, 'Cannot execute action on this channel type');
    const now = new Date().toISOString();
    const id = snowflake();
    const thread: Thread = {
      id,
      type: ChannelType.PublicThread,
      guild_id: this.guildId,
      parent_id: parentId,
      owner_id: this.bot.id,
      name: body.name,
      last_message_id: null,
      rate_limit_per_user: body.rate_limit_per_user ?? 0,
      message_count: 0,
      member_count: 1,
      total_message_sent: 0,
      flags: 0 as ChannelFlags,
      thread_metadata: { archived: false, auto_archive_duration: body.auto_archive_duration ?? parent.default_auto_archive_duration ?? ThreadAutoArchiveDuration.OneDay, archive_timestamp: now, locked: false, create_timestamp: now },
      member: { id, user_id: this.bot.id, join_timestamp: now, flags: 0 as ThreadMemberFlags },
      applied_tags: [],
    };
    this.channels.set(id, thread);
    this.history.set(id, []);
    this.threads.push(thread);
    this.dispatch(GatewayDispatchEvents.ThreadCreate, { ...thread, newly_created: true });
    // A thread started without a message announces itself in its channel (a "started a thread" system message).
    const announcement = this.message(parentId, this.bot, thread.name, MessageType.ThreadCreated);
    announcement.message_reference = { type: 0, channel_id: id, guild_id: this.guildId };
    this.store(announcement);
    return json(201, thread);
  }

  private deleteChannel(channelId: string): Reply {
    const channel = this.channels.get(channelId);
    if (!channel) return unknownChannel();
    this.channels.delete(channelId);
    if (channel.type === ChannelType.PublicThread) {
      this.dispatch(GatewayDispatchEvents.ThreadDelete, { id: channel.id, guild_id: this.guildId, parent_id: channel.parent_id!, type: channel.type });
    } else {
      this.dispatch(GatewayDispatchEvents.ChannelDelete, channel);
    }
    return json(200, channel);
  }

  private interactionCallback(id: string, token: string, response: APIInteractionResponse, query: URLSearchParams): Reply {
    const interaction = this.interactions.get(id);
    if (!interaction || interaction.token !== token || Date.now() - interaction.at > INTERACTION_ANSWER_MS) return unknownInteraction();
    if (interaction.responses.length > 0) return error(400, 40060, 'Interaction has already been acknowledged.');
    interaction.responses.push(response);
    const ephemeral = 'data' in response && response.data && 'flags' in response.data && ((response.data.flags ?? 0) & MessageFlags.Ephemeral) !== 0;
    if (response.type === InteractionResponseType.ChannelMessageWithSource || response.type === InteractionResponseType.DeferredChannelMessageWithSource) {
      const deferred = response.type === InteractionResponseType.DeferredChannelMessageWithSource;
      const content = !deferred && response.data && 'content' in response.data ? (response.data.content ?? '') : '';
      const message = this.message(interaction.channelId, this.bot, content, MessageType.ChatInputCommand);
      message.webhook_id = this.applicationId;
      message.application_id = this.applicationId;
      message.flags = (ephemeral ? MessageFlags.Ephemeral : 0) | (deferred ? MessageFlags.Loading : 0);
      message.interaction_metadata = { id, type: InteractionType.ApplicationCommand, user: this.users.get(interaction.userId)!, authorizing_integration_owners: { 0: this.guildId } };
      interaction.original = message;
      // An ephemeral answer is shown to its user only: it is no message of the channel.
      if (!ephemeral) this.store(message);
    }
    if (query.get('with_response') !== 'true') return { status: 204 };
    const result: RESTPostAPIInteractionCallbackWithResponseResult = {
      interaction: {
        id,
        type: InteractionType.ApplicationCommand,
        ...(interaction.original ? { response_message_id: interaction.original.id, response_message_loading: response.type === InteractionResponseType.DeferredChannelMessageWithSource, response_message_ephemeral: Boolean(ephemeral) } : {}),
      },
      ...(interaction.original ? { resource: { type: response.type as InteractionResponseType.ChannelMessageWithSource, message: interaction.original } } : {}),
    };
    return json(200, result);
  }

  private editOriginal(app: string, token: string, body: RESTPatchAPIWebhookWithTokenMessageJSONBody): Reply {
    const interaction = [...this.interactions.values()].find((i) => i.token === token);
    if (app !== this.applicationId || !interaction || Date.now() - interaction.at > INTERACTION_TOKEN_MS) return error(401, 50027, 'Invalid Webhook Token');
    const original = interaction.original;
    if (!original) return error(404, 10008, 'Unknown Message');
    if (typeof body.content === 'string' && body.content.length > MAX_CONTENT) return invalidForm('content', 'BASE_TYPE_MAX_LENGTH', `Must be ${MAX_CONTENT} or fewer in length.`);
    if (typeof body.content === 'string') original.content = body.content;
    original.flags = (original.flags ?? 0) & ~MessageFlags.Loading;
    original.edited_timestamp = new Date().toISOString();
    if ((original.flags & MessageFlags.Ephemeral) === 0) this.dispatch(GatewayDispatchEvents.MessageUpdate, { ...original, guild_id: this.guildId, mentions: [] });
    return json(200, original);
  }

  // ---- the guild's state ----

  private memberOf(user: APIUser): APIGuildMember {
    return { user, nick: null, avatar: null, banner: null, roles: [], joined_at: this.joinedAt, premium_since: null, deaf: false, mute: false, flags: 0 as GuildMemberFlags, pending: false, communication_disabled_until: null };
  }

  private message(channelId: string, author: APIUser, content: string, type: MessageType): APIMessage {
    const mentions = [...content.matchAll(/<@!?(\d+)>/g)].map((m) => this.users.get(m[1]!)).filter((u): u is APIUser => u !== undefined);
    return {
      id: snowflake(),
      channel_id: channelId,
      author,
      content,
      timestamp: new Date().toISOString(),
      edited_timestamp: null,
      tts: false,
      mention_everyone: false,
      mentions,
      mention_roles: [],
      attachments: [],
      embeds: [],
      pinned: false,
      type,
      flags: 0 as MessageFlags,
      components: [],
    };
  }

  /** Keeps a message in its channel and tells the bot (MESSAGE_CREATE, with the guild's extra fields). */
  private store(message: APIMessage): void {
    this.history.get(message.channel_id)?.push(message);
    const channel = this.channels.get(message.channel_id);
    if (channel) channel.last_message_id = message.id;
    const { user: _user, ...member } = this.members.get(message.author.id) ?? this.memberOf(message.author);
    const event: GatewayMessageCreateDispatchData = {
      ...message,
      guild_id: this.guildId,
      ...(message.webhook_id ? {} : { member }),
      mentions: message.mentions.map((u) => ({ ...u, member: (({ user: _u, ...rest }) => rest)(this.members.get(u.id) ?? this.memberOf(u)) })),
      channel_type: channel?.type === ChannelType.PublicThread ? ChannelType.PublicThread : ChannelType.GuildText,
    };
    this.dispatch(GatewayDispatchEvents.MessageCreate, event);
  }
}
