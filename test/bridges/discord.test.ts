/**
 * The Discord bridge's channel against a local stand-in for Discord (test/helpers/discord-double.ts):
 * discord.js logs in over the double's gateway and calls its REST API, exactly as it would
 * Discord's. The ChannelHost here is a small recorder standing in for the real host
 * (src/bridges/host.ts), which is integrated with the channels separately; it keeps
 * conversations in memory the way the host does, and answers inbound messages as a test says.
 *
 * Every TCP connection the test process makes is watched (HTTP, TLS and WebSocket all connect a
 * net.Socket): none may go anywhere but the loopback address, so no default of discord.js
 * (discord.com's REST, its gateway, the CDN) slips through.
 */
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChannelError, type Conversation, type QueuedDelivery } from '../../src/bridges/channel.js';
import { DISCORD_MAX_CHARS, DiscordChannel, deliveryNonce, splitMessage, toChannelError, TYPING_EVERY_MS, type DiscordOptions } from '../../src/bridges/discord.js';
import { DiscordDouble, snowflake, waitFor } from '../helpers/discord-double.js';
import { conversationOf, RecordingHost, watchConnections, type ConnectionWatch } from './support.js';

// DISCORD_TEST_LOG=debug shows the channel's log when a test needs looking into.
const logger = pino({ level: process.env.DISCORD_TEST_LOG ?? 'silent' });

/** A conversation as the host would hand it to send(), for a channel the host did not open. */
function conversationFor(peer: string, session = 'direct'): Conversation {
  return conversationOf('discord', { id: `discord:${peer}`, session, tenant: null, side: 'B', peer });
}

const delivery = (index: number, content: string, parts?: number): QueuedDelivery => ({ index, content, attempts: 0, notBefore: 0, ...(parts === undefined ? {} : { parts }) });

/** Calls send() and collects what it reported as progress. */
async function sendAll(channel: DiscordChannel, conversation: Conversation, queued: QueuedDelivery): Promise<number[]> {
  const progress: number[] = [];
  await channel.send(conversation, queued, async (parts) => {
    progress.push(parts);
  });
  return progress;
}

async function sendError(promise: Promise<unknown>): Promise<ChannelError> {
  const error = await promise.then(
    () => null,
    (err: unknown) => err,
  );
  expect(error).toBeInstanceOf(ChannelError);
  return error as ChannelError;
}

describe('Discord channel', () => {
  let double: DiscordDouble;
  let host: RecordingHost;
  let channel: DiscordChannel;
  let clock = 1_000_000;
  const started: DiscordChannel[] = [];
  // Where every socket of this process connects to (a host name, an address, or a pipe's path).
  let connections: ConnectionWatch;

  const options = (overrides: Partial<DiscordOptions> = {}): DiscordOptions => ({
    token: double.token,
    side: 'B',
    channels: { [double.general]: 'tavern' },
    tenant: null,
    apiBaseUrl: double.apiBaseUrl,
    logger,
    readyTimeoutMs: 15_000,
    ...overrides,
  });

  beforeAll(async () => {
    connections = watchConnections();
    double = await DiscordDouble.start({ heartbeatIntervalMs: 1_000 });
    host = new RecordingHost('discord');
    channel = new DiscordChannel(options({ now: () => clock }));
    started.push(channel);
    await channel.start(host);
  });

  afterAll(async () => {
    await Promise.all(started.map((c) => c.close()));
    await double?.close();
    connections.restore();
    // Nothing left the machine: every connection (REST and gateway alike) went to the double.
    expect(connections.destinations.length).toBeGreaterThan(0);
    expect(new Set(connections.destinations)).toEqual(new Set(['127.0.0.1']));
  });

  describe('login', () => {
    it('logs in over the gateway with the intents it needs and reports itself connected', () => {
      const health = channel.health();
      expect(health.connected).toBe(true);
      expect(health.lastError).toBeNull();
      expect(health.details).toMatchObject({ user: 'motive-bot', guilds: 1 });
      // Guilds (1), GuildMessages (512), MessageContent (32768).
      expect(double.identifies[0]).toBe(1 | 512 | 32768);
      expect(double.requests.find((r) => r.path === '/gateway/bot')?.authorization).toBe(`Bot ${double.token}`);
    });

    it('registers /motive with join <session> and leave, globally', () => {
      const [command, ...others] = double.commands();
      expect(others).toEqual([]);
      expect(command).toMatchObject({ name: 'motive', application_id: double.applicationId, contexts: [0] });
      const subcommands = command!.options!.map((o) => ({ name: o.name, type: o.type, options: 'options' in o ? o.options?.map((p) => ({ name: p.name, type: p.type, required: 'required' in p ? p.required : undefined })) : undefined }));
      expect(subcommands).toEqual([
        { name: 'join', type: 1, options: [{ name: 'session', type: 3, required: true }] },
        { name: 'leave', type: 1, options: [] },
      ]);
    });

    it('opens the configured channel as a conversation of its session', () => {
      expect(host.opened).toContainEqual({ id: `discord:${double.general}`, session: 'tavern', tenant: null, side: 'B', peer: double.general, data: { kind: 'channel', guild: double.guildId } });
    });

    it('rejects a bad token clearly, without trying the gateway', async () => {
      const identifies = double.identifies.length;
      const refused = new DiscordChannel(options({ token: 'not-the-token' }));
      await expect(refused.start(new RecordingHost('discord'))).rejects.toThrow(/Discord refused the bot token \(401 Unauthorized\)/);
      expect(double.identifies.length).toBe(identifies);
      expect(refused.health()).toMatchObject({ connected: false, lastError: expect.stringMatching(/refused the bot token/) });
    });

    it('rejects clearly when the gateway closes 4004 (authentication failed)', async () => {
      double.closeNextIdentify(4004, 'Authentication failed.');
      const refused = new DiscordChannel(options());
      await expect(refused.start(new RecordingHost('discord'))).rejects.toThrow(/gateway close 4004/);
      expect(refused.health().connected).toBe(false);
    });

    it('rejects clearly when the application may not use the Message Content intent (4014)', async () => {
      const strict = await DiscordDouble.start({ messageContentIntent: false });
      try {
        const refused = new DiscordChannel({ ...options(), token: strict.token, apiBaseUrl: strict.apiBaseUrl, channels: {} });
        await expect(refused.start(new RecordingHost('discord'))).rejects.toThrow(/Message Content Intent/);
      } finally {
        await strict.close();
      }
    });
  });

  describe('inbound', () => {
    it('relays a person\'s message in a conversation channel, and ignores its own and other channels\'', async () => {
      const person = double.person(snowflake(), 'ada');
      const conversation = host.conversation(`discord:${double.general}`)!;
      // The bot's own message comes back over the gateway, as on Discord.
      await sendAll(channel, conversation, delivery(100, 'the bot speaks'));
      double.postMessage(double.lobby, person.id, 'chatter elsewhere');
      const said = double.postMessage(double.general, person.id, 'hello, tavern');
      const inbound = await waitFor(() => host.received.find((r) => r.messageId === said.id), 'the relayed message');
      expect(inbound).toMatchObject({ conversation: { id: `discord:${double.general}` }, text: 'hello, tavern', from: `ada (${person.id})` });
      // Handled in order: the bot's message and the other channel's came first and made nothing.
      expect(host.received.map((r) => r.text)).not.toContain('the bot speaks');
      expect(host.received.map((r) => r.text)).not.toContain('chatter elsewhere');
      expect(host.ignoredCalls.filter((i) => i.details.conversation === `discord:${double.lobby}`)).toEqual([]);
    });

    it('counts another bot\'s message as ignored', async () => {
      const other = double.postMessage(double.general, snowflake(), 'beep', { bot: true });
      const ignored = await waitFor(() => host.ignoredCalls.find((i) => i.details.message === other.id), 'the ignored bot message');
      expect(ignored.reason).toBe('bot_author');
      expect(host.received.find((r) => r.messageId === other.id)).toBeUndefined();
    });

    it('answers a refused message with a short note in the channel', async () => {
      host.answer = () => ({ ok: false, code: 'session_closed', message: "This conversation of session 'tavern' has ended.", retryable: false });
      try {
        const said = double.postMessage(double.general, double.person().id, 'anyone there?');
        const note = await waitFor(() => double.messages(double.general).find((m) => m.message_reference?.message_id === said.id), 'the refusal note');
        expect(note.author.id).toBe(double.bot.id);
        expect(note.content).toBe("Not relayed: This conversation of session 'tavern' has ended.");
        expect(note.type).toBe(19); // a reply
      } finally {
        host.answer = () => ({ ok: true, duplicate: false });
      }
    });

    it('asks for the message again when the refusal may pass later', async () => {
      host.answer = () => ({ ok: false, code: 'bridge_unavailable', message: 'The bridge is not connected to the session.', retryable: true });
      try {
        const said = double.postMessage(double.general, double.person().id, 'knock knock');
        const note = await waitFor(() => double.messages(double.general).find((m) => m.message_reference?.message_id === said.id), 'the refusal note');
        expect(note.content).toBe('Not relayed just now (The bridge is not connected to the session.). Please send it again in a moment.');
      } finally {
        host.answer = () => ({ ok: true, duplicate: false });
      }
    });

    it('relays only the configured member\'s messages when `member` is set', async () => {
      const member = double.person(snowflake(), 'grace');
      const stranger = double.person(snowflake(), 'mallory');
      const ghost = snowflake();
      const cellar = new RecordingHost('discord');
      const filtered = new DiscordChannel(options({ member: member.id, channels: { [double.lobby]: 'cellar', [ghost]: 'ghost' } }));
      try {
        await filtered.start(cellar);
        expect(cellar.opened.map((o) => o.id)).toEqual([`discord:${double.lobby}`]);
        // A configured channel the bot cannot see is not opened, and says so.
        expect(filtered.health().lastError).toContain(ghost);
        const foreign = double.postMessage(double.lobby, stranger.id, 'let me in');
        const own = double.postMessage(double.lobby, member.id, 'it is me');
        await waitFor(() => cellar.received.find((r) => r.messageId === own.id), 'the member\'s message');
        expect(cellar.received.map((r) => r.text)).toEqual(['it is me']);
        expect(cellar.ignoredCalls).toContainEqual({ reason: 'not_allowed', details: { conversation: `discord:${double.lobby}`, message: foreign.id, author: stranger.id } });
      } finally {
        await filtered.close();
      }
    });
  });

  describe('/motive', () => {
    it('join opens a public thread for the session and a conversation in it; leave ends it', async () => {
      const person = double.person(snowflake(), 'linus');
      const interaction = double.invokeCommand(double.general, person.id, 'join', { session: 'dragon' });
      const answer = await waitFor(() => interaction.original?.edited_timestamp && interaction.original, 'the answer to /motive join');
      const thread = double.threads.find((t) => t.name === 'dragon')!;
      expect(thread).toMatchObject({ parent_id: double.general, type: 11, owner_id: double.bot.id, thread_metadata: { auto_archive_duration: 10080 } });
      // Deferred (thread and session may take longer than Discord's 3 s), then answered in public.
      expect(interaction.responses).toEqual([{ type: 5, data: { flags: 0 } }]);
      expect(answer.flags! & 64).toBe(0);
      expect(answer.content).toContain(`<#${thread.id}>`);
      expect(answer.content).toContain('**dragon**');
      expect(host.opened).toContainEqual({ id: `discord:${thread.id}`, session: 'dragon', tenant: null, side: 'B', peer: thread.id, data: { kind: 'thread', guild: double.guildId, parent: double.general, openedBy: person.id } });
      expect(double.requests.some((r) => r.method === 'PUT' && r.path === `/channels/${thread.id}/thread-members/${person.id}`)).toBe(true);

      const said = double.postMessage(thread.id, person.id, 'I draw my sword');
      const inbound = await waitFor(() => host.received.find((r) => r.messageId === said.id), 'the message in the thread');
      expect(inbound.conversation.id).toBe(`discord:${thread.id}`);

      const leave = double.invokeCommand(thread.id, person.id, 'leave');
      await waitFor(() => leave.original?.edited_timestamp, 'the answer to /motive leave');
      expect(host.endings).toContainEqual({ id: `discord:${thread.id}`, reason: 'left' });
      expect(leave.original!.content).toContain('Left session **dragon**');
    });

    it('a deleted thread ends its conversation', async () => {
      const interaction = double.invokeCommand(double.general, double.person().id, 'join', { session: 'phoenix' });
      await waitFor(() => interaction.original?.edited_timestamp, 'the answer to /motive join');
      const thread = double.threads.find((t) => t.name === 'phoenix')!;
      expect(host.conversation(`discord:${thread.id}`)?.ended).toBeNull();
      // A moderator deletes the thread (the same REST call Discord's client makes).
      const deleted = await fetch(`${double.apiBaseUrl}/v10/channels/${thread.id}`, { method: 'DELETE', headers: { authorization: `Bot ${double.token}` } });
      expect(deleted.status).toBe(200);
      await waitFor(() => host.endings.find((e) => e.id === `discord:${thread.id}`), 'the end of the conversation');
      expect(host.endings).toContainEqual({ id: `discord:${thread.id}`, reason: 'thread deleted' });
    });

    it('join in a thread is refused, only to the person who asked', async () => {
      const thread = double.threads.find((t) => t.name === 'dragon')!;
      const interaction = double.invokeCommand(thread.id, double.person().id, 'join', { session: 'wyvern' });
      await waitFor(() => interaction.responses.length > 0, 'the refusal');
      expect(interaction.responses[0]).toMatchObject({ type: 4, data: { flags: 64, content: expect.stringContaining('text channel') } });
      expect(double.threads.find((t) => t.name === 'wyvern')).toBeUndefined();
    });
  });

  describe('send', () => {
    it('splits a long delivery at 2000 characters, at line breaks, reporting each part', async () => {
      const lines = Array.from({ length: 120 }, (_, i) => `line ${i}: ${'word '.repeat(6 + (i % 5))}`.trimEnd());
      const content = lines.join('\n');
      expect(content.length).toBeGreaterThan(2 * DISCORD_MAX_CHARS);
      const conversation = host.conversation(`discord:${double.general}`)!;
      const before = double.posts.length;
      const progress = await sendAll(channel, conversation, delivery(0, content));
      const posts = double.posts.slice(before);
      expect(posts.length).toBe(3);
      expect(progress).toEqual([1, 2, 3]);
      for (const post of posts) {
        expect(post.created).toBe(true);
        expect(post.body.content!.length).toBeLessThanOrEqual(DISCORD_MAX_CHARS);
        expect(post.body.enforce_nonce).toBe(true);
        expect(String(post.body.nonce).length).toBeLessThanOrEqual(25);
        // Whatever the session wrote, nobody is pinged.
        expect(post.body.allowed_mentions).toEqual({ parse: [], replied_user: false });
      }
      // Cut at newlines: the parts are the lines, every one of them, in order.
      expect(posts.map((p) => p.body.content).join('\n')).toBe(content);
      expect(new Set(posts.map((p) => p.body.nonce)).size).toBe(3);
    });

    it('resumes a delivery after the parts already sent', async () => {
      const content = `${'a'.repeat(1500)}\n${'b'.repeat(1500)}\n${'c'.repeat(1500)}`;
      const conversation = host.conversation(`discord:${double.general}`)!;
      const before = double.posts.length;
      const progress = await sendAll(channel, conversation, delivery(1, content, 2));
      const posts = double.posts.slice(before);
      expect(posts.map((p) => p.body.content)).toEqual(['c'.repeat(1500)]);
      expect(posts[0]!.body.nonce).toBe(deliveryNonce(conversation, 1, 2));
      expect(progress).toEqual([3]);
    });

    it('posts a delivery sent twice (a crash before its progress was kept) once, thanks to its nonce', async () => {
      const conversation = host.conversation(`discord:${double.general}`)!;
      const before = double.posts.length;
      await sendAll(channel, conversation, delivery(7, 'only once, please'));
      await sendAll(channel, conversation, delivery(7, 'only once, please'));
      const posts = double.posts.slice(before);
      expect(posts.map((p) => p.created)).toEqual([true, false]);
      expect(posts[0]!.body.nonce).toBe(posts[1]!.body.nonce);
      expect(posts[1]!.message.id).toBe(posts[0]!.message.id);
      expect(double.messages(double.general).filter((m) => m.content === 'only once, please').length).toBe(1);
    });

    it('gives another incarnation of the same channel\'s conversation other nonces', () => {
      const first = conversationFor(double.general);
      const again = { ...first, opened: new Date(Date.parse(first.opened) + 1).toISOString() };
      expect(deliveryNonce(first, 0, 0)).not.toBe(deliveryNonce(again, 0, 0));
      expect(deliveryNonce(first, 0, 0)).toBe(deliveryNonce({ ...first }, 0, 0));
    });

    it('fails for good (not retryable) on an unknown channel (404) and on missing access (403)', async () => {
      const unknown = await sendError(channel.send(conversationFor(snowflake()), delivery(0, 'hello?'), async () => {}));
      expect(unknown.retryable).toBe(false);
      expect(unknown.message).toMatch(/404 \(10003: Unknown Channel\)/);
      double.failNext(`POST /channels/${double.general}/messages`, 403);
      const forbidden = await sendError(sendAll(channel, conversationFor(double.general), delivery(0, 'hello?')));
      expect(forbidden.retryable).toBe(false);
      expect(forbidden.message).toMatch(/403 \(50001: Missing Access\)/);
      expect(channel.health().lastError).toMatch(/403/);
    });

    it('fails retryably on a server error (500), after discord.js\'s own retries', async () => {
      double.failNext('POST /channels/*/messages', 500, { times: 4 });
      const before = double.requests.length;
      const progress: number[] = [];
      const failed = await sendError(channel.send(conversationFor(double.general), delivery(0, 'through the storm'), async (n) => void progress.push(n)));
      expect(failed.retryable).toBe(true);
      expect(failed.message).toMatch(/500/);
      expect(progress).toEqual([]);
      expect(double.requests.slice(before).filter((r) => r.method === 'POST' && r.status === 500).length).toBe(4);
    });

    it('waits out a short rate limit, and hands a long one back as retryable with its delay', async () => {
      const short = double.addTextChannel('short-limit');
      double.failNext(`POST /channels/${short}/messages`, 429, { retryAfterS: 0.3 });
      await sendAll(channel, conversationFor(short), delivery(0, 'after a breath'));
      expect(double.messages(short).map((m) => m.content)).toEqual(['after a breath']);

      const long = double.addTextChannel('long-limit');
      double.failNext(`POST /channels/${long}/messages`, 429, { retryAfterS: 30 });
      const limited = await sendError(sendAll(channel, conversationFor(long), delivery(0, 'not now')));
      expect(limited.retryable).toBe(true);
      expect(limited.retryAfterMs).toBeGreaterThanOrEqual(30_000);
      expect(double.messages(long)).toEqual([]);
    });

    it('maps network failures to retryable errors', () => {
      const error = toChannelError(Object.assign(new TypeError('fetch failed'), { cause: { code: 'ECONNREFUSED' } }), 'delivery 0');
      expect(error.retryable).toBe(true);
    });
  });

  describe('typing and the end', () => {
    it('shows typing at most once every 8 s per conversation', async () => {
      const conversation = host.conversation(`discord:${double.general}`)!;
      const before = double.typing.length;
      channel.typing(conversation);
      clock += 1_000;
      channel.typing(conversation);
      clock += TYPING_EVERY_MS - 1_001;
      channel.typing(conversation);
      await waitFor(() => double.typing.length >= before + 1, 'the typing indicator');
      clock += 1;
      channel.typing(conversation);
      await waitFor(() => double.typing.length >= before + 2, 'the second typing indicator');
      // Give a stray third call time to arrive before counting.
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(double.typing.slice(before).map((t) => t.channelId)).toEqual([double.general, double.general]);
    });

    it('tells the channel that the session ended', async () => {
      const conversation = host.conversation(`discord:${double.general}`)!;
      await channel.ended(conversation, 'session closed');
      const note = double.messages(double.general).at(-1)!;
      expect(note.author.id).toBe(double.bot.id);
      expect(note.content).toBe('Session **tavern** has ended (session closed). Nothing written here is relayed any more.');
    });
  });

  describe('gateway', () => {
    it('answers heartbeats, so the connection is never taken for a zombie', async () => {
      const resumes = double.resumes.length;
      const heartbeats = double.heartbeats;
      await waitFor(() => double.heartbeats >= heartbeats + 2, 'two heartbeats', 5_000);
      expect(double.resumes.length).toBe(resumes);
      expect(channel.health().connected).toBe(true);
    });

    it('resumes after the connection drops, and gets what was said meanwhile', async () => {
      const resumes = double.resumes.length;
      const identifies = double.identifies.length;
      const person = double.person();
      double.dropGateway(4000);
      // Said while the bot is away: Discord keeps it for the RESUME.
      const said = double.postMessage(double.general, person.id, 'did you miss me?');
      await waitFor(() => double.resumes.length > resumes, 'the RESUME');
      const inbound = await waitFor(() => host.received.find((r) => r.messageId === said.id), 'the replayed message');
      expect(inbound.text).toBe('did you miss me?');
      await waitFor(() => channel.health().connected, 'the channel connected again');
      // The same session went on: no new IDENTIFY (which would have lost what was said meanwhile).
      expect(double.identifies.length).toBe(identifies);
    });
  });
});

describe('splitMessage', () => {
  it('keeps a short message whole, and shows an empty one as such', () => {
    expect(splitMessage('hi')).toEqual(['hi']);
    expect(splitMessage('x'.repeat(DISCORD_MAX_CHARS))).toEqual(['x'.repeat(DISCORD_MAX_CHARS)]);
    expect(splitMessage('  \n ')).toEqual(['*(an empty reply)*']);
  });

  it('cuts at whitespace when no line break is near the limit', () => {
    const words = Array.from({ length: 700 }, (_, i) => `w${i}`).join(' ');
    const parts = splitMessage(words);
    expect(parts.length).toBeGreaterThan(1);
    for (const part of parts) {
      expect(part.length).toBeLessThanOrEqual(DISCORD_MAX_CHARS);
      expect(part).not.toMatch(/^\s|\s$/);
    }
    expect(parts.join(' ')).toBe(words);
  });

  it('never cuts a surrogate pair in two', () => {
    const text = '😀'.repeat(1500); // 3000 UTF-16 code units, no whitespace
    const parts = splitMessage(text);
    expect(parts.join('')).toBe(text);
    for (const part of parts) {
      expect(part.length).toBeLessThanOrEqual(DISCORD_MAX_CHARS);
      // No lone surrogate at either end.
      expect(part).not.toMatch(/^[\udc00-\udfff]|[\ud800-\udbff]$/);
    }
  });

  it('closes a code block cut in two and opens it again, with its language', () => {
    const code = Array.from({ length: 150 }, (_, i) => `const value${i} = ${i};`).join('\n');
    const parts = splitMessage(`Here it is:\n\`\`\`ts\n${code}\n\`\`\`\nDone.`);
    expect(parts.length).toBe(2);
    expect(parts[0]).toMatch(/^Here it is:\n```ts\n/);
    expect(parts[0]).toMatch(/\n```$/);
    expect(parts[1]).toMatch(/^```ts\n/);
    expect(parts[1]).toMatch(/\n```\nDone\.$/);
    for (const part of parts) expect(part.length).toBeLessThanOrEqual(DISCORD_MAX_CHARS);
  });

  it('is deterministic, so a send can resume at a part', () => {
    const text = Array.from({ length: 400 }, (_, i) => `sentence number ${i}.`).join(' ');
    expect(splitMessage(text)).toEqual(splitMessage(text));
  });
});
