/**
 * The Discord bridge: a side of a session played by the people of a Discord channel or thread.
 *
 * A bot (discord.js over the gateway, with the Guilds, Guild Messages and Message Content intents)
 * plays the side in two kinds of conversation, each `discord:<channel or thread id>`:
 *
 *   - configured channels (BRIDGE_DISCORD_CHANNELS: channel id → session), opened when the bot is
 *     ready, and again whenever it sees the channel's guild come (back) online;
 *   - threads opened by `/motive join <session>` in any text channel the bot can see: the bot
 *     starts a public thread named after the session and the thread plays it, until
 *     `/motive leave` in the thread, the thread's deletion, or the session's end.
 *
 * In: every message that a person (not a bot, not a system message; only `member` when it is
 * set) writes in such a channel is a turn; the Discord message id makes a redelivery harmless.
 * A message the session refuses gets a short reply saying so.
 * Out: a delivery is split into messages of at most 2000 characters, and each part carries a
 * nonce derived from the conversation, the delivery and the part with `enforce_nonce`, so that a
 * part sent again after a crash (within Discord's few minutes of nonce memory) returns the first
 * message instead of posting a second one. Nothing the session writes can ping anyone: mentions
 * are never parsed.
 */
import { createHash } from 'node:crypto';
import {
  ChannelType,
  Client,
  DiscordAPIError,
  DiscordjsErrorCodes,
  Events,
  GatewayIntentBits,
  HTTPError,
  InteractionContextType,
  MessageFlags,
  MessageType,
  Partials,
  PermissionFlagsBits,
  RateLimitError,
  Routes,
  SlashCommandBuilder,
  Status,
  ThreadAutoArchiveDuration,
  escapeMarkdown,
  type ChatInputCommandInteraction,
  type Interaction,
  type Message,
  type MessageMentionOptions,
  type SendableChannels,
  type ThreadChannel,
} from 'discord.js';
import type { Side } from '../../machines/session.logic.js';
import type { Logger } from '../telemetry/logger.js';
import { ChannelError, type Channel, type ChannelHealth, type ChannelHost, type Conversation, type Progress, type QueuedDelivery, type Received } from './channel.js';

export interface DiscordOptions {
  /** The bot's token (Developer Portal → Bot). */
  readonly token: string;
  /** The application whose `/motive` command is registered; by default the bot's own (from READY). */
  readonly applicationId?: string;
  /** The side every conversation of this bridge plays. */
  readonly side: Side;
  /** Configured channels: channel id → the session that channel plays. */
  readonly channels: Readonly<Record<string, string>>;
  /** Only this member's messages (a user id) are turns, and only they may use `/motive`; otherwise every person's. */
  readonly member?: string;
  readonly tenant: string | null;
  /**
   * Tests only: the REST base of a stand-in for Discord (discord.js's `rest.api`, e.g.
   * `http://127.0.0.1:PORT/api`); the gateway URL then comes from its `GET /gateway/bot`.
   */
  readonly apiBaseUrl?: string;
  readonly logger: Logger;
  /** How long start() waits for the gateway to be ready (default 60 s): discord.js itself retries a gateway it cannot reach forever. */
  readonly readyTimeoutMs?: number;
  /** The clock of the typing throttle (tests). */
  readonly now?: () => number;
}

/** Discord's limit on a message's content. Counted in UTF-16 code units, which never undercounts it. */
export const DISCORD_MAX_CHARS = 2000;
/** Discord shows the typing indicator for about 10 s; sending it every 8 s keeps it up without gaps. */
export const TYPING_EVERY_MS = 8_000;
/** Longest nonce Discord takes. */
const NONCE_MAX = 25;
/** What a delivery with no text is shown as (Discord refuses an empty message). */
const EMPTY_DELIVERY = '*(an empty reply)*';
/** Rate limits waited out inside discord.js; a longer one is handed back to the host's queue with its delay. */
const LONGEST_RATE_LIMIT_WAIT_MS = 10_000;
const COMMAND = 'motive';
/** Discord's longest thread name. */
const THREAD_NAME_MAX = 100;
/** Text a session writes must never ping anyone (@everyone, roles, users), whatever it contains. */
const NO_MENTIONS: MessageMentionOptions = { parse: [], repliedUser: false };

export const conversationId = (channelId: string): string => `discord:${channelId}`;

/**
 * The nonce of one message the bridge posts: a hash of the conversation (and when it was opened,
 * since a channel that plays a new session reuses its conversation id) and of what the message
 * is (a delivery's index and part). The same message tried again gets the same nonce.
 */
export function messageNonce(conversation: Pick<Conversation, 'id' | 'opened'>, what: string): string {
  return createHash('sha256').update(`${conversation.id}\u0000${conversation.opened}\u0000${what}`).digest('hex').slice(0, NONCE_MAX);
}

export const deliveryNonce = (conversation: Pick<Conversation, 'id' | 'opened'>, index: number, part: number): string => messageNonce(conversation, `${index}.${part}`);

/**
 * Splits a delivery into Discord messages of at most `limit` characters: at a newline in the
 * second half of the window if there is one, else at whitespace there, else at the limit (never
 * between the two halves of a surrogate pair). A code block cut in two is closed at the end of
 * one part and opened again (with its language) at the start of the next, so both render as
 * code. Deterministic: the same content always gives the same parts, which is what lets a send
 * resume after the parts already sent.
 */
export function splitMessage(text: string, limit = DISCORD_MAX_CHARS): string[] {
  if (text.trim() === '') return [EMPTY_DELIVERY];
  const parts: string[] = [];
  let rest = text;
  while (rest.length > limit) {
    const room = limit - CLOSING_FENCE.length;
    const { end, next } = breakAt(rest, room);
    let part = rest.slice(0, end);
    rest = rest.slice(next);
    const open = openFence(part);
    if (open !== null) {
      part += CLOSING_FENCE;
      rest = `\`\`\`${open}\n${rest}`;
    }
    if (part.trim() !== '') parts.push(part);
  }
  if (rest.trim() !== '') parts.push(rest);
  return parts;
}

const CLOSING_FENCE = '\n```';

function breakAt(text: string, room: number): { end: number; next: number } {
  const half = Math.floor(room / 2);
  // A break exactly at `room` still leaves `room` characters before it.
  const newline = text.lastIndexOf('\n', room);
  if (newline >= half) return { end: newline, next: newline + 1 };
  for (let i = Math.min(room, text.length - 1); i >= half; i--) {
    if (/\s/.test(text[i]!)) return { end: i, next: i + 1 };
  }
  let end = room;
  const code = text.charCodeAt(end - 1);
  if (code >= 0xd800 && code <= 0xdbff) end -= 1;
  return { end, next: end };
}

/** The language of a code block left open at the end of `text` ('' for none), or null if every block is closed. */
function openFence(text: string): string | null {
  let open: string | null = null;
  for (const line of text.split('\n')) {
    const fences = line.match(/```/g)?.length ?? 0;
    if (fences % 2 === 0) continue;
    if (open !== null) {
      open = null;
      continue;
    }
    const info = /^\s*```([\w+#.-]{1,20})\s*$/.exec(line);
    open = info ? info[1]! : '';
  }
  return open;
}

/** What a failed Discord call means for the host's queue. */
export function toChannelError(err: unknown, what: string): ChannelError {
  if (err instanceof ChannelError) return err;
  if (err instanceof RateLimitError) {
    const wait = Math.max(err.retryAfter, err.timeToReset);
    return new ChannelError(`${what}: Discord rate limit on ${err.route} for ${Math.ceil(wait / 1000)} s`, true, wait);
  }
  if (err instanceof DiscordAPIError) {
    const detail = `${what}: Discord answered ${err.status} (${err.code}: ${err.message})`;
    if (err.status === 429) {
      const raw = err.rawError as { retry_after?: number };
      return new ChannelError(detail, true, typeof raw.retry_after === 'number' ? Math.ceil(raw.retry_after * 1000) : undefined);
    }
    // 401: the token was revoked. Kept for when the operator fixes it, rather than dropping what is owed.
    if (err.status === 401 || err.status === 408 || err.status >= 500) return new ChannelError(detail, true);
    // 400 (a message Discord will never take), 403 (missing access or permissions), 404 (unknown channel).
    return new ChannelError(detail, false);
  }
  if (err instanceof HTTPError) return new ChannelError(`${what}: Discord answered ${err.status} ${err.message}`, err.status >= 500 || err.status === 408 || err.status === 429);
  // The network (refused, reset, timed out) or a client not started yet: worth trying again.
  return new ChannelError(`${what}: ${err instanceof Error ? err.message : String(err)}`, true);
}

/** Why logging in failed, in words an operator can act on. */
function loginError(err: unknown, closeCode: number | null): Error {
  const code = (err as { code?: unknown })?.code;
  if (code === DiscordjsErrorCodes.TokenInvalid || (err instanceof DiscordAPIError && err.status === 401)) {
    return new Error('Discord refused the bot token (401 Unauthorized): check the discord bridge token', { cause: err });
  }
  if (closeCode === 4004) return new Error('Discord refused the bot token (gateway close 4004, authentication failed): check the discord bridge token', { cause: err });
  if (closeCode === 4014) {
    return new Error('Discord refused the Message Content intent (gateway close 4014): enable "Message Content Intent" on the bot\'s page in the Developer Portal', { cause: err });
  }
  if (closeCode !== null) return new Error(`Discord closed the gateway with ${closeCode} while logging in: ${(err as Error)?.message ?? String(err)}`, { cause: err });
  return new Error(`Discord login failed: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}

/** The `/motive` command: `join <session>` opens a thread that plays the session, `leave` (in it) stops. */
export function motiveCommand(): ReturnType<SlashCommandBuilder['toJSON']> {
  return new SlashCommandBuilder()
    .setName(COMMAND)
    .setDescription('Play a side of a MotiveProxy session')
    // Threads exist only in guilds; the command is not offered in DMs.
    .setContexts(InteractionContextType.Guild)
    .addSubcommand((join) =>
      join
        .setName('join')
        .setDescription('Open a thread in this channel that plays a side of a session')
        .addStringOption((session) => session.setName('session').setDescription('The session\'s name (its model name)').setRequired(true).setMaxLength(256)),
    )
    .addSubcommand((leave) => leave.setName('leave').setDescription('Stop playing the session in this thread'))
    .toJSON();
}

export class DiscordChannel implements Channel {
  readonly name = 'discord' as const;
  private client: Client | null = null;
  private host: ChannelHost | null = null;
  private closed = false;
  private lastError: string | null = null;
  private lastErrorAt: string | null = null;
  private lastCloseCode: number | null = null;
  /** Settles once the configured channels are open: a message that comes earlier waits for it. */
  private settled: Promise<void> = Promise.resolve();
  /** Inbound messages are handed over in order, one at a time per conversation. */
  private readonly inbound = new Map<string, Promise<void>>();
  private readonly typingAt = new Map<string, number>();
  private readonly now: () => number;

  constructor(private readonly options: DiscordOptions) {
    this.now = options.now ?? Date.now;
  }

  async start(host: ChannelHost): Promise<void> {
    if (this.client) throw new Error('the discord bridge is started already');
    // Started again after a close (in a cluster, this instance took the bridges back).
    this.closed = false;
    this.host = host;
    const client = new Client({
      intents: [GatewayIntentBits.Guilds, GatewayIntentBits.GuildMessages, GatewayIntentBits.MessageContent],
      // A message in a channel or thread missing from the cache (a thread unarchived while the bot
      // was away) still arrives, with a partial channel, instead of being dropped.
      partials: [Partials.Channel],
      allowedMentions: NO_MENTIONS,
      // A reply to a refused message that was deleted in the meantime is posted without the reference.
      failIfNotExists: false,
      rest: {
        ...(this.options.apiBaseUrl ? { api: this.options.apiBaseUrl } : {}),
        // Short rate limits are waited out; a long one goes back to the host's queue with its delay.
        rejectOnRateLimit: (limit) => Math.max(limit.retryAfter, limit.timeToReset) > LONGEST_RATE_LIMIT_WAIT_MS,
      },
    });
    this.client = client;
    this.listen(client);
    // Messages discord.js holds until it is ready come right after: they wait for the configured
    // channels to be open rather than find no conversation.
    let settle!: () => void;
    this.settled = new Promise<void>((resolve) => (settle = resolve));

    const ready = new Promise<void>((resolve) => client.once(Events.ClientReady, () => resolve()));
    const login = client.login(this.options.token).then(() => ready);
    login.catch(() => undefined); // judged below, or after the timeout when nobody waits for it
    const readyTimeoutMs = this.options.readyTimeoutMs ?? 60_000;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Error(`the Discord gateway was not ready within ${Math.round(readyTimeoutMs / 1000)} s`);
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(timedOut), readyTimeoutMs);
    });
    try {
      await Promise.race([login, timeout]);
    } catch (err) {
      const error = err === timedOut ? timedOut : loginError(err, this.lastCloseCode);
      this.failed(error.message);
      this.client = null;
      settle();
      await client.destroy().catch(() => undefined);
      throw error;
    } finally {
      clearTimeout(timer);
    }
    this.options.logger.info({ bridge: 'discord', user: client.user?.tag, guilds: client.guilds.cache.size }, `bridge discord: logged in as ${client.user?.tag ?? '?'}`);
    await Promise.all([this.registerCommand(client), this.openConfigured().finally(settle)]);
  }

  async send(conversation: Conversation, delivery: QueuedDelivery, progress: Progress): Promise<void> {
    const what = `delivery ${delivery.index} to ${conversation.id}`;
    const channel = await this.sendable(conversation.peer, what);
    const parts = splitMessage(delivery.content);
    for (let part = delivery.parts ?? 0; part < parts.length; part++) {
      try {
        await channel.send({ content: parts[part]!, nonce: deliveryNonce(conversation, delivery.index, part), enforceNonce: true, allowedMentions: NO_MENTIONS });
      } catch (err) {
        const error = toChannelError(err, `${what}, part ${part + 1} of ${parts.length}`);
        this.failed(error.message);
        throw error;
      }
      await progress(part + 1);
    }
  }

  typing(conversation: Conversation): void {
    const now = this.now();
    const last = this.typingAt.get(conversation.id);
    if (last !== undefined && now - last < TYPING_EVERY_MS) return;
    this.typingAt.set(conversation.id, now);
    void this.sendable(conversation.peer, `typing in ${conversation.id}`)
      .then((channel) => channel.sendTyping())
      // Only a courtesy: a lost indicator is not worth an error.
      .catch((err: unknown) => this.options.logger.debug({ err, conversation: conversation.id }, 'bridge discord: could not show typing'));
  }

  async ended(conversation: Conversation, reason: string): Promise<void> {
    this.typingAt.delete(conversation.id);
    const what = `the end note to ${conversation.id}`;
    const channel = await this.sendable(conversation.peer, what);
    const because = reason ? ` (${reason.slice(0, 200)})` : '';
    try {
      await channel.send({
        content: `Session **${escapeMarkdown(conversation.session)}** has ended${because}. Nothing written here is relayed any more.`,
        nonce: messageNonce(conversation, 'ended'),
        enforceNonce: true,
        allowedMentions: NO_MENTIONS,
      });
    } catch (err) {
      const error = toChannelError(err, what);
      this.failed(error.message);
      throw error;
    }
  }

  health(): ChannelHealth {
    const client = this.client;
    const connected = client !== null && !this.closed && client.ws.status === Status.Ready;
    const details: Record<string, unknown> = {};
    if (client?.user) {
      details.user = client.user.tag;
      details.guilds = client.guilds.cache.size;
      if (connected) details.ping = client.ws.ping;
    }
    details.channels = Object.keys(this.options.channels).length;
    return { connected, lastError: this.lastError, lastErrorAt: this.lastErrorAt, details };
  }

  async close(): Promise<void> {
    this.closed = true;
    const client = this.client;
    this.client = null;
    await client?.destroy();
  }

  private listen(client: Client): void {
    const { logger } = this.options;
    client.on(Events.MessageCreate, (message) => this.onMessage(message));
    client.on(Events.InteractionCreate, (interaction) => void this.onInteraction(interaction));
    // A guild that comes online after READY (the bot was invited, an outage ended) may hold
    // configured channels that could not be opened at the start.
    const guildOnline = (): void => {
      if (client.isReady()) this.settled = this.settled.then(() => this.openConfigured(false));
    };
    client.on(Events.GuildCreate, guildOnline);
    client.on(Events.GuildAvailable, guildOnline);
    client.on(Events.ThreadDelete, (thread) => void this.onThreadDeleted(thread));
    client.on(Events.ShardDisconnect, (event, shard) => {
      this.lastCloseCode = event.code;
      this.failed(`the gateway closed with ${event.code} and will not reconnect`);
      logger.error({ bridge: 'discord', code: event.code, shard }, `bridge discord: the gateway closed with ${event.code} and will not reconnect`);
    });
    client.on(Events.ShardReconnecting, (shard) => !this.closed && logger.info({ bridge: 'discord', shard }, 'bridge discord: reconnecting to the gateway'));
    client.on(Events.ShardResume, (shard, replayed) => logger.info({ bridge: 'discord', shard, replayed }, 'bridge discord: gateway session resumed'));
    client.on(Events.ShardError, (err, shard) => {
      this.failed(`gateway: ${err.message}`);
      logger.warn({ err, bridge: 'discord', shard }, `bridge discord: gateway error: ${err.message}`);
    });
    client.on(Events.Error, (err) => {
      this.failed(err.message);
      logger.error({ err, bridge: 'discord' }, `bridge discord: ${err.message}`);
    });
    client.on(Events.Warn, (message) => logger.warn({ bridge: 'discord' }, `bridge discord: ${message}`));
  }

  /**
   * Opens the conversation of every configured channel that the bot can see and that does not
   * play its session: at the start also one whose conversation ended (a configured channel plays
   * its session whenever the bridge runs), later only one never opened. Never rejects: inbound
   * messages wait on it.
   */
  private async openConfigured(atStart = true): Promise<void> {
    const client = this.client;
    const host = this.host;
    if (!client || !host || this.closed) return;
    for (const [channelId, session] of Object.entries(this.options.channels)) {
      const id = conversationId(channelId);
      const open = host.conversation(id);
      if (open && open.ended === null && open.session === session && open.tenant === this.options.tenant) continue;
      if (open && !atStart) continue;
      const channel = client.channels.cache.get(channelId);
      const me = client.user;
      const permissions = channel && 'permissionsFor' in channel && me ? channel.permissionsFor(me) : null;
      if (!channel || !channel.isSendable() || (permissions && !permissions.has([PermissionFlagsBits.ViewChannel, PermissionFlagsBits.SendMessages]))) {
        // Not in any of the bot's guilds, hidden from it, read-only to it, or its guild is offline:
        // opening it would only queue deliveries that can never be posted.
        const message = `configured channel ${channelId} (session '${session}') is not a channel the bot can see and write in`;
        this.failed(message);
        this.options.logger.warn({ bridge: 'discord', channel: channelId, session_id: session }, `bridge discord: ${message}`);
        continue;
      }
      try {
        const guild = 'guildId' in channel ? channel.guildId : null;
        await host.open({ id, session, tenant: this.options.tenant, side: this.options.side, peer: channelId, data: { kind: 'channel', guild } });
      } catch (err) {
        this.failed(`opening ${id}: ${(err as Error)?.message ?? String(err)}`);
        this.options.logger.error({ err, bridge: 'discord', conversation: id }, `bridge discord: could not open configured channel ${channelId}`);
      }
    }
  }

  private async registerCommand(client: Client): Promise<void> {
    const application = this.options.applicationId ?? client.application?.id;
    if (!application) {
      this.failed('no application id: /motive is not registered');
      return;
    }
    try {
      // Bulk overwrite of the application's global commands: idempotent, and global commands are
      // offered in every guild the bot is in, including ones it joins later. It replaces any other
      // global command of the application, which is why the bot should be MotiveProxy's own.
      await client.rest.put(Routes.applicationCommands(application), { body: [motiveCommand()] });
    } catch (err) {
      // Configured channels still work without the command: the bridge runs on, unhealthy.
      const error = toChannelError(err, 'registering /motive');
      this.failed(error.message);
      this.options.logger.error({ err, bridge: 'discord', application }, `bridge discord: ${error.message}`);
    }
  }

  private onMessage(message: Message): void {
    if (this.closed || message.author.id === this.client?.user?.id) return;
    const id = conversationId(message.channelId);
    const previous = this.inbound.get(id) ?? Promise.resolve();
    const next = previous
      .then(() => this.take(id, message))
      .catch((err: unknown) => {
        this.failed(`inbound message ${message.id}: ${(err as Error)?.message ?? String(err)}`);
        this.options.logger.error({ err, bridge: 'discord', conversation: id, message: message.id }, 'bridge discord: an inbound message could not be handed to the session');
      });
    this.inbound.set(id, next);
    void next.then(() => {
      if (this.inbound.get(id) === next) this.inbound.delete(id);
    });
  }

  private async take(id: string, message: Message): Promise<void> {
    await this.settled;
    const host = this.host;
    const conversation = host?.conversation(id);
    // Messages in channels that play nothing are the guild's own chatter: not ours to count.
    if (!host || !conversation) return;
    const details = { conversation: id, message: message.id, author: message.author.id };
    if (message.author.bot || message.webhookId) return host.ignored('bot_author', details);
    // Pins, joins, "started a thread" and the like are no one's turn.
    if (message.system || (message.type !== MessageType.Default && message.type !== MessageType.Reply)) return host.ignored('system_message', details);
    if (this.options.member && message.author.id !== this.options.member) return host.ignored('not_allowed', details);
    if (message.content.trim() === '') return host.ignored('empty', details);
    const received = await host.receive({ conversation, messageId: message.id, text: message.content, from: `${message.author.tag} (${message.author.id})` });
    if (!received.ok) await this.refusalNote(message, received);
  }

  private async refusalNote(message: Message, refusal: Extract<Received, { ok: false }>): Promise<void> {
    const why = refusal.message.slice(0, 300);
    const content = refusal.retryable ? `Not relayed just now (${why}). Please send it again in a moment.` : `Not relayed: ${why}`;
    try {
      await message.reply({ content, allowedMentions: NO_MENTIONS });
    } catch (err) {
      this.options.logger.warn({ err, bridge: 'discord', message: message.id }, 'bridge discord: could not reply that a message was not relayed');
    }
  }

  private async onInteraction(interaction: Interaction): Promise<void> {
    if (this.closed || !interaction.isChatInputCommand() || interaction.commandName !== COMMAND) return;
    try {
      if (this.options.member && interaction.user.id !== this.options.member) {
        await this.refuse(interaction, 'Only the member this bridge is set up for can use /motive here.');
        return;
      }
      const subcommand = interaction.options.getSubcommand(false);
      if (subcommand === 'join') await this.join(interaction);
      else if (subcommand === 'leave') await this.leave(interaction);
      else await this.refuse(interaction, 'Use `/motive join <session>` or `/motive leave`.');
    } catch (err) {
      this.failed(`/motive: ${(err as Error)?.message ?? String(err)}`);
      this.options.logger.error({ err, bridge: 'discord', interaction: interaction.id }, 'bridge discord: /motive failed');
    }
  }

  /** Errors are ephemeral: they concern only the person who typed the command. */
  private async refuse(interaction: ChatInputCommandInteraction, content: string): Promise<void> {
    await interaction.reply({ content, flags: MessageFlags.Ephemeral, allowedMentions: NO_MENTIONS });
  }

  private async join(interaction: ChatInputCommandInteraction): Promise<void> {
    const host = this.host!;
    const session = interaction.options.getString('session', true).trim();
    if (session === '' || session.includes('\u001f')) {
      await this.refuse(interaction, 'That is not a session name.');
      return;
    }
    const channel = interaction.channel;
    if (!channel || channel.type !== ChannelType.GuildText) {
      await this.refuse(interaction, 'Use `/motive join` in a text channel (not in a thread or a DM): the session gets a thread of its own there.');
      return;
    }
    // Creating the thread and opening the session can take longer than the 3 s Discord gives an
    // answer. The answer is public: the channel sees which session the new thread plays and who
    // opened it, and anyone can follow the link to play along.
    await interaction.deferReply();
    let thread: ThreadChannel | null = null;
    try {
      thread = await channel.threads.create({
        name: session.slice(0, THREAD_NAME_MAX),
        type: ChannelType.PublicThread,
        // The longest Discord allows: a session may wait days for its next turn.
        autoArchiveDuration: ThreadAutoArchiveDuration.OneWeek,
        reason: `MotiveProxy session '${session}', for ${interaction.user.tag}`,
      });
      await host.open({
        id: conversationId(thread.id),
        session,
        tenant: this.options.tenant,
        side: this.options.side,
        peer: thread.id,
        data: { kind: 'thread', guild: thread.guildId, parent: channel.id, openedBy: interaction.user.id },
      });
    } catch (err) {
      if (thread) await thread.delete('the session could not be opened').catch(() => undefined);
      const error = toChannelError(err, `opening a thread for '${session}'`);
      this.failed(error.message);
      this.options.logger.warn({ err, bridge: 'discord', channel: channel.id, session_id: session }, `bridge discord: ${error.message}`);
      await interaction.editReply({ content: `Could not open session **${escapeMarkdown(session)}** here: ${error.message}`, allowedMentions: NO_MENTIONS });
      return;
    }
    // The person who asked is added to the thread, so it shows in their channel list.
    await thread.members.add(interaction.user.id).catch((err: unknown) => this.options.logger.debug({ err, thread: thread.id }, 'bridge discord: could not add the member to the thread'));
    await interaction.editReply({
      content: `Session **${escapeMarkdown(session)}** (side ${this.options.side}) is played in <#${thread.id}>: what is written there is the side's turn, and \`/motive leave\` in the thread stops.`,
      allowedMentions: NO_MENTIONS,
    });
  }

  private async leave(interaction: ChatInputCommandInteraction): Promise<void> {
    const host = this.host!;
    const conversation = host.conversation(conversationId(interaction.channelId));
    if (!conversation || conversation.ended !== null) {
      await this.refuse(interaction, 'No session is played here.');
      return;
    }
    if (!interaction.channel?.isThread()) {
      // A configured channel is opened again at every start: it is left by changing the configuration.
      await this.refuse(interaction, `This channel is set up to play session **${escapeMarkdown(conversation.session)}**; it is left by changing the bridge's configuration.`);
      return;
    }
    await interaction.deferReply();
    await host.end(conversation, 'left');
    await interaction.editReply({ content: `Left session **${escapeMarkdown(conversation.session)}**: nothing written here is relayed any more.`, allowedMentions: NO_MENTIONS });
  }

  private async onThreadDeleted(thread: ThreadChannel): Promise<void> {
    const conversation = this.host?.conversation(conversationId(thread.id));
    if (!conversation || conversation.ended !== null) return;
    await this.host!.end(conversation, 'thread deleted').catch((err: unknown) => this.options.logger.warn({ err, conversation: conversation.id }, 'bridge discord: could not end the conversation of a deleted thread'));
  }

  /** The channel or thread a conversation posts in (from the cache, else fetched). */
  private async sendable(channelId: string, what: string): Promise<SendableChannels> {
    const client = this.client;
    if (!client || this.closed) throw new ChannelError(`${what}: the discord bridge is not running`, true);
    let channel;
    try {
      channel = await client.channels.fetch(channelId);
    } catch (err) {
      const error = toChannelError(err, what);
      this.failed(error.message);
      throw error;
    }
    if (!channel || !channel.isSendable()) throw new ChannelError(`${what}: Discord channel ${channelId} takes no messages`, false);
    return channel;
  }

  private failed(message: string): void {
    this.lastError = message;
    this.lastErrorAt = new Date().toISOString();
  }
}
