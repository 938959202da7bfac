/**
 * The Discord bridge end to end through the real service: the service runs in-process with a
 * journal directory (so the bridges' conversations and queues are kept in bridges.jsonl), its
 * Discord bridge logged in to a local stand-in for Discord (test/helpers/discord-double.ts) that
 * runs Discord's gateway and answers its REST API, exactly as discord.js expects of Discord. The
 * game is side A on the official OpenAI SDK; the people of a Discord channel or thread are side B.
 * The admin routes are behind ADMIN_API_KEY, sent as a Bearer token; /metrics is public.
 *
 * Walked through: a configured channel playing its session (turns both ways, the bot's post with
 * its nonce, the admin views, metrics and /health); `/motive join` opening a thread that plays a
 * session; a WebSocket side A typing live, shown in the channel as Discord's typing indicator
 * before the bot posts its message; BRIDGE_DISCORD_MEMBER letting only that member's messages be
 * turns; a post Discord refuses with 500 kept queued and posted once after it recovers; and the
 * session's end, told to the channel.
 *
 * Every TCP connection the test process makes is watched (HTTP, TLS and WebSocket all connect a
 * net.Socket): none may go anywhere but the loopback address, so no default of discord.js
 * (discord.com's REST, its gateway, the CDN) slips through.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { deliveryNonce } from '../../src/bridges/discord.js';
import { DiscordDouble, snowflake } from '../helpers/discord-double.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { adminApi, gameIn, metric, stays, until, watchConnections, type ConnectionWatch } from './support.js';

const ADMIN_KEY = 'admin-key-for-the-discord-bridge-test';

const asAdmin = { authorization: `Bearer ${ADMIN_KEY}` };

const { get, sessionSides } = adminApi(asAdmin);

const discordMessages = (direction: 'in' | 'out', outcome: string): string => `motiveproxy_bridge_messages_total{bridge="discord",direction="${direction}",outcome="${outcome}"}`;

async function conversation(server: TestServer, channelId: string): Promise<any> {
  const { status, body } = await get(server, `/admin/bridges/conversations/discord:${channelId}`);
  expect(status).toBe(200);
  return body;
}

/** The settings of a service whose Discord bridge talks to `double`, keeping its journal in `journal`. */
function discordSettings(double: DiscordDouble, journal: string, channels: Record<string, string>, member = '') {
  return {
    journalPath: journal,
    enablePrometheus: 'true',
    metricsPublic: 'true',
    adminApiKey: ADMIN_KEY,
    bridgeDiscordToken: double.token,
    bridgeDiscordApiUrl: double.apiBaseUrl,
    bridgeDiscordChannels: Object.entries(channels)
      .map(([id, session]) => `${id}=${session}`)
      .join(','),
    bridgeDiscordMember: member,
    turnTimeoutSeconds: '60',
    logLevel: process.env['BRIDGE_TEST_LOG'] ?? 'silent',
  } as const;
}

/** What the bot posted in a channel or thread (its messages created there, not nonce repeats), in order. */
const botPosts = (double: DiscordDouble, channelId: string) => double.posts.filter((p) => p.channelId === channelId && p.created);

/** A WebSocket side of /v1/realtime, keeping every frame it receives. */
class RealtimeSide {
  readonly frames: Array<{ type: string; [k: string]: unknown }> = [];

  private constructor(private readonly socket: WebSocket) {
    socket.on('message', (data) => this.frames.push(JSON.parse(String(data)) as { type: string }));
  }

  static async open(server: TestServer, session: string, side: 'A' | 'B'): Promise<RealtimeSide> {
    const url = new URL('/v1/realtime', server.url.replace(/^http/, 'ws'));
    url.searchParams.set('session', session);
    url.searchParams.set('side', side);
    const socket = new WebSocket(url);
    const opened = new RealtimeSide(socket);
    await until(() => opened.frames.some((f) => f.type === 'ready'), `side ${side} of ${session} is ready`);
    return opened;
  }

  send(frame: Record<string, unknown>): void {
    this.socket.send(JSON.stringify(frame));
  }

  async frame(type: string, match: (f: { [k: string]: unknown }) => boolean = () => true): Promise<{ [k: string]: unknown }> {
    await until(() => this.frames.some((f) => f.type === type && match(f)), `a ${type} frame`);
    return this.frames.find((f) => f.type === type && match(f))!;
  }

  close(): void {
    this.socket.close();
  }
}

// Where every socket of this process connects to (a host name, an address, or a pipe's path).
let connections: ConnectionWatch;

beforeAll(() => {
  connections = watchConnections();
});

afterAll(() => {
  connections.restore();
  // Nothing left the machine: the gateway, Discord's REST, /v1/realtime and the SDK all went to loopback.
  expect(connections.destinations.length).toBeGreaterThan(0);
  expect(new Set(connections.destinations)).toEqual(new Set(['127.0.0.1']));
});

describe('the Discord bridge through the service', () => {
  let double: DiscordDouble;
  let server: TestServer;
  let journal: string;
  let typingRoom: string;
  let storm: string;
  let finale: string;
  const member = () => double.person('310000000000000001', 'ada');

  beforeAll(async () => {
    double = await DiscordDouble.start({ heartbeatIntervalMs: 1_000 });
    typingRoom = double.addTextChannel('typing-room');
    storm = double.addTextChannel('storm');
    finale = double.addTextChannel('finale');
    journal = mkdtempSync(join(tmpdir(), 'motive-bridge-discord-'));
    server = await startTestServer(
      discordSettings(double, journal, { [double.general]: 'npc-tavern', [typingRoom]: 'npc-typist', [storm]: 'npc-storm', [finale]: 'npc-finale' }),
    );
    await until(async () => (await get(server, '/admin/bridges')).body.data[0]?.connected === true, 'the Discord bridge is connected');
    await until(async () => {
      const listed = (await get(server, '/admin/bridges/conversations?bridge=discord')).body.data as Array<{ connected: boolean }>;
      return listed.length === 4 && listed.every((c) => c.connected);
    }, 'the configured channels are connected to their sessions');
  }, 30_000);

  afterAll(async () => {
    await server?.close();
    await double?.close();
    if (journal) rmSync(journal, { recursive: true, force: true });
  });

  const gameFor = (model: string) => gameIn(() => server, model);

  it('a configured channel plays its session: turns both ways, the post with its nonce, admin views, metrics and health', async () => {
    const model = 'npc-tavern';
    const person = member();
    const turnsBefore = await metric(server, discordMessages('in', 'turn'));
    const sentBefore = await metric(server, discordMessages('out', 'sent'));

    // The game's handshake is held until someone in the channel speaks; their message answers it.
    const game = gameFor(model);
    const handshake = game.say();
    await until(async () => (await sessionSides(server, model))?.A.waiting === true, 'the game waits for the channel');
    double.postMessage(double.general, person.id, 'A round for everyone!');
    const opened = await handshake;
    expect(opened.choices[0]!.message.content).toBe('A round for everyone!');
    expect(opened.model).toBe(model);

    // The game answers: the bot posts it in the channel, with the delivery's nonce and no pings.
    const line = 'The barkeep nods. "Coming right up, @everyone."';
    const answer = game.say(line);
    await until(() => botPosts(double, double.general).length === 1, 'the bot posts the reply');
    const [post] = botPosts(double, double.general);
    const view = await conversation(server, double.general);
    expect(post!.body).toMatchObject({ content: line, nonce: deliveryNonce({ id: view.id, opened: view.opened }, 0, 0), enforce_nonce: true, allowed_mentions: { parse: [], replied_user: false } });
    expect(post!.message.author.id).toBe(double.bot.id);
    expect(double.messages(double.general).map((m) => [m.author.id, m.content])).toEqual([
      [person.id, 'A round for everyone!'],
      [double.bot.id, line],
    ]);

    // The channel's next message answers the game's held reply.
    double.postMessage(double.general, person.id, 'Cheers!');
    expect((await answer).choices[0]!.message.content).toBe('Cheers!');

    const bridges = await get(server, '/admin/bridges');
    expect(bridges.status).toBe(200);
    expect(bridges.body.data).toEqual([
      expect.objectContaining({ bridge: 'discord', connected: true, last_error: null, queue_depth: 0, conversations: 4, details: { user: 'motive-bot', guilds: 1, ping: expect.any(Number), channels: 4 } }),
    ]);
    // Without the admin key the admin views are refused.
    expect((await fetch(`${server.url}/admin/bridges`)).status).toBe(401);

    const listed = await get(server, `/admin/bridges/conversations?session=${model}`);
    expect(listed.body.data).toEqual([
      expect.objectContaining({ id: `discord:${double.general}`, bridge: 'discord', session: model, tenant: null, side: 'B', peer: double.general, ended: null, connected: true, deliveries_received: 1, deliveries_sent: 1, queue_depth: 0 }),
    ]);
    expect(listed.body.data[0].last_error).toBeUndefined();

    expect(await metric(server, discordMessages('in', 'turn'))).toBe(turnsBefore + 2);
    expect(await metric(server, discordMessages('out', 'sent'))).toBe(sentBefore + 1);
    expect(await metric(server, 'motiveproxy_bridge_connected{bridge="discord"}')).toBe(1);

    const health = await fetch(`${server.url}/health`);
    expect(health.status).toBe(200);
    const bridgesHealth = ((await health.json()) as { bridges: Record<string, unknown> }).bridges;
    expect(bridgesHealth['discord']).toEqual({ connected: true, last_error: null, queue_depth: 0, conversations: 4 });

    // The conversation is kept in the journal directory's bridges.jsonl.
    const records = readFileSync(join(journal, 'bridges.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(records.filter((r) => r.id === `discord:${double.general}`).at(-1)).toMatchObject({ bridge: 'discord', session: model, peer: double.general, received: 1, sent: 1, queue: [], data: { kind: 'channel', guild: double.guildId } });
  }, 30_000);

  it('`/motive join` opens a thread that plays the session: its messages are the game\'s turns, and the game\'s replies land in it', async () => {
    const model = 'npc-thread';
    const person = double.person(snowflake(), 'linus');
    const interaction = double.invokeCommand(double.lobby, person.id, 'join', { session: model });
    await until(() => Boolean(interaction.original?.edited_timestamp), 'the answer to /motive join');
    const thread = double.threads.find((t) => t.name === model)!;
    expect(thread).toMatchObject({ parent_id: double.lobby, owner_id: double.bot.id });
    expect(interaction.original!.content).toContain(`<#${thread.id}>`);
    await until(async () => (await conversation(server, thread.id)).connected === true, 'the thread is connected to its session');
    expect(await conversation(server, thread.id)).toMatchObject({ id: `discord:${thread.id}`, session: model, side: 'B', peer: thread.id, ended: null });

    const game = gameFor(model);
    const handshake = game.say();
    await until(async () => (await sessionSides(server, model))?.A.waiting === true, 'the game waits for the thread');
    double.postMessage(thread.id, person.id, 'I draw my sword.');
    expect((await handshake).choices[0]!.message.content).toBe('I draw my sword.');

    const answer = game.say('The goblin flees into the dark.');
    await until(() => botPosts(double, thread.id).length === 1, 'the reply is posted in the thread');
    expect(botPosts(double, thread.id).map((p) => p.body.content)).toEqual(['The goblin flees into the dark.']);
    // Nothing of the session is posted in the channel the thread hangs off.
    expect(botPosts(double, double.lobby)).toEqual([]);

    double.postMessage(thread.id, person.id, 'I follow it.');
    expect((await answer).choices[0]!.message.content).toBe('I follow it.');
    expect(await conversation(server, thread.id)).toMatchObject({ deliveries_received: 1, deliveries_sent: 1, queue_depth: 0 });
  }, 30_000);

  it('shows typing in the channel while a WebSocket side types its reply, before the bot posts it', async () => {
    const model = 'npc-typist';
    const person = member();
    // Side A is a WebSocket client; its first message is its handshake.
    const typist = await RealtimeSide.open(server, model, 'A');
    try {
      typist.send({ type: 'message', content: 'hello', id: 'handshake' });
      await typist.frame('accepted', (f) => f['id'] === 'handshake');
      await until(async () => (await sessionSides(server, model))?.A.waiting === true, 'side A waits for the channel');

      // The channel's message reaches side A; the bridged side B is then held for A's answer.
      double.postMessage(typingRoom, person.id, 'Is anyone awake?');
      expect((await typist.frame('delivery')).content).toBe('Is anyone awake?');
      await until(async () => (await sessionSides(server, model))?.B.waiting === true, 'the bridged side waits for side A');

      // Side A types: the bridge shows Discord's typing indicator in the channel, and posts nothing yet.
      const typingBefore = double.typing.length;
      typist.send({ type: 'typing', delta: 'The dragon ' });
      typist.send({ type: 'typing', delta: 'stirs' });
      await until(() => double.typing.slice(typingBefore).some((t) => t.channelId === typingRoom), 'the typing indicator in the channel');
      expect(botPosts(double, typingRoom)).toEqual([]);

      // Side A sends its message: the draft it typed and the rest, posted as one message.
      typist.send({ type: 'message', content: ' and opens one eye.', id: 'reply' });
      await typist.frame('accepted', (f) => f['id'] === 'reply');
      await until(() => botPosts(double, typingRoom).length === 1, 'the bot posts side A\'s message');
      expect(botPosts(double, typingRoom).map((p) => p.body.content)).toEqual(['The dragon stirs and opens one eye.']);
      // The typing call came first: in the requests the double took, it precedes the post.
      const typed = double.requests.findIndex((r) => r.method === 'POST' && r.path === `/channels/${typingRoom}/typing`);
      const posted = double.requests.findIndex((r) => r.method === 'POST' && r.path === `/channels/${typingRoom}/messages` && r.status === 200);
      expect(typed).toBeGreaterThanOrEqual(0);
      expect(typed).toBeLessThan(posted);
      expect(double.requests[typed]!.status).toBe(204);
    } finally {
      typist.close();
    }
  }, 30_000);

  it('keeps a post Discord refuses with 500 queued, with the error shown, and posts it once after Discord recovers', async () => {
    const model = 'npc-storm';
    const person = member();
    const line = 'Lightning splits the mast.';
    const game = gameFor(model);
    const handshake = game.say();
    await until(async () => (await sessionSides(server, model))?.A.waiting === true, 'the game waits for the channel');
    double.postMessage(storm, person.id, 'Batten down the hatches!');
    expect((await handshake).choices[0]!.message.content).toBe('Batten down the hatches!');
    const retriedBefore = await metric(server, discordMessages('out', 'retried'));

    // Discord answers 500 to the post and to discord.js's own three retries of it.
    double.failNext(`POST /channels/${storm}/messages`, 500, { times: 4 });
    const answer = game.say(line);
    await until(async () => {
      const view = await conversation(server, storm);
      return view.queue_depth === 1 && view.last_error !== undefined;
    }, 'the refused delivery is queued with its error');
    expect(await conversation(server, storm)).toMatchObject({ deliveries_received: 1, deliveries_sent: 0, queue_depth: 1, attempts: 1, last_error: expect.stringMatching(/Discord answered 500/) });
    expect(botPosts(double, storm)).toEqual([]);
    expect(double.requests.filter((r) => r.method === 'POST' && r.path === `/channels/${storm}/messages` && r.status === 500)).toHaveLength(4);
    expect(await metric(server, discordMessages('out', 'retried'))).toBe(retriedBefore + 1);
    const health = (await get(server, '/admin/bridges')).body.data[0];
    expect(health).toMatchObject({ bridge: 'discord', connected: true, queue_depth: 1, last_error: expect.stringMatching(/500/) });
    expect(await metric(server, 'motiveproxy_bridge_queue_depth{bridge="discord"}')).toBe(1);
    // What is owed is on disk, with its content.
    const kept = readFileSync(join(journal, 'bridges.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.id === `discord:${storm}`).at(-1);
    expect(kept).toMatchObject({ received: 1, sent: 0, queue: [{ index: 0, content: line, attempts: 1 }] });

    // Discord works again: after the back-off (about 2 s) the delivery is posted, once.
    await until(() => botPosts(double, storm).length === 1, 'the kept delivery is posted', 10_000);
    await until(async () => (await conversation(server, storm)).deliveries_sent === 1, 'the delivery is marked sent');
    const view = await conversation(server, storm);
    expect(view).toMatchObject({ deliveries_received: 1, deliveries_sent: 1, queue_depth: 0 });
    expect(view.last_error).toBeUndefined();
    await stays(() => double.posts.filter((p) => p.channelId === storm).length === 1, 'the delivery is posted once', 500);
    expect(botPosts(double, storm)[0]!.body).toMatchObject({ content: line, nonce: deliveryNonce({ id: view.id, opened: view.opened }, 0, 0) });
    expect(double.messages(storm).filter((m) => m.content === line)).toHaveLength(1);

    double.postMessage(storm, person.id, 'Aye, captain.');
    expect((await answer).choices[0]!.message.content).toBe('Aye, captain.');
  }, 30_000);

  it('tells the channel when the session ends, and lists the conversation as ended', async () => {
    const model = 'npc-finale';
    const person = member();
    const game = gameFor(model);
    const handshake = game.say();
    await until(async () => (await sessionSides(server, model))?.A.waiting === true, 'the game waits for the channel');
    double.postMessage(finale, person.id, 'Is this the end?');
    expect((await handshake).choices[0]!.message.content).toBe('Is this the end?');
    const answer = game.say('The curtain falls.');
    const cut = answer.then(
      () => null,
      (err: unknown) => err,
    );
    await until(() => botPosts(double, finale).length === 1, 'the game\'s last line is posted');
    await until(async () => (await sessionSides(server, model))?.B.waiting === true, 'the bridged side listens for what comes next');

    // Without the admin key the session is not ended; with it, it is.
    expect((await fetch(`${server.url}/admin/sessions/${model}`, { method: 'DELETE' })).status).toBe(401);
    const deleted = await fetch(`${server.url}/admin/sessions/${model}`, { method: 'DELETE', headers: asAdmin });
    expect(deleted.status).toBe(200);
    expect(await deleted.json()).toMatchObject({ id: model, object: 'session', deleted: true });
    // The game's held request is answered 410 session_closed.
    const error = await cut;
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect((error as InstanceType<typeof OpenAI.APIError>).status).toBe(410);

    await until(() => botPosts(double, finale).length === 2, 'the end note is posted');
    expect(botPosts(double, finale).map((p) => p.body.content)).toEqual(['The curtain falls.', 'Session **npc-finale** has ended (session closed). Nothing written here is relayed any more.']);
    await until(async () => (await get(server, `/admin/bridges/conversations?session=${model}&state=ended`)).body.data.length === 1, 'the conversation is listed as ended');
    const ended = (await get(server, `/admin/bridges/conversations?session=${model}&state=ended`)).body.data[0];
    expect(ended).toMatchObject({ id: `discord:${finale}`, ended: expect.any(String), ended_because: 'session closed', connected: false, deliveries_received: 1, deliveries_sent: 1, queue_depth: 0 });
    expect((await get(server, `/admin/bridges/conversations?session=${model}`)).body.data).toEqual([]);

    // What is written in the channel afterwards is not relayed, and the bot says so.
    const late = double.postMessage(finale, person.id, 'Encore!');
    await until(() => double.messages(finale).some((m) => m.message_reference?.message_id === late.id), 'the note that the message was not relayed');
    expect(double.messages(finale).find((m) => m.message_reference?.message_id === late.id)!.content).toBe("Not relayed: This conversation of session 'npc-finale' has ended.");
  }, 30_000);
});

describe('the Discord bridge with BRIDGE_DISCORD_MEMBER', () => {
  let double: DiscordDouble;
  let server: TestServer;
  let journal: string;
  const MEMBER = '320000000000000001';

  beforeAll(async () => {
    double = await DiscordDouble.start({ heartbeatIntervalMs: 1_000 });
    journal = mkdtempSync(join(tmpdir(), 'motive-bridge-discord-member-'));
    server = await startTestServer(discordSettings(double, journal, { [double.general]: 'npc-sentry' }, MEMBER));
    await until(async () => (await get(server, `/admin/bridges/conversations/discord:${double.general}`)).body.connected === true, 'the configured channel is connected');
  }, 30_000);

  afterAll(async () => {
    await server?.close();
    await double?.close();
    if (journal) rmSync(journal, { recursive: true, force: true });
  });

  it('takes only the named member\'s messages as turns; another member\'s is counted as ignored', async () => {
    const model = 'npc-sentry';
    const member = double.person(MEMBER, 'grace');
    const stranger = double.person(snowflake(), 'mallory');
    const ignoredBefore = await metric(server, discordMessages('in', 'ignored_not_allowed'));
    const turnsBefore = await metric(server, discordMessages('in', 'turn'));
    const game = gameIn(() => server, model);
    const handshake = game.say();
    await until(async () => (await sessionSides(server, model))?.A.waiting === true, 'the game waits for the channel');

    double.postMessage(double.general, stranger.id, 'Let me through, I am the captain.');
    await until(async () => (await metric(server, discordMessages('in', 'ignored_not_allowed'))) === ignoredBefore + 1, 'the stranger\'s message is counted as ignored');
    await stays(async () => (await sessionSides(server, model))?.A.waiting === true, 'the game still waits', 500);
    expect(await metric(server, discordMessages('in', 'turn'))).toBe(turnsBefore);
    // Not a turn, and not answered either: the stranger gets no note.
    expect(double.messages(double.general).filter((m) => m.author.id === double.bot.id)).toEqual([]);

    double.postMessage(double.general, member.id, 'Password: swordfish.');
    expect((await handshake).choices[0]!.message.content).toBe('Password: swordfish.');
    expect(await metric(server, discordMessages('in', 'turn'))).toBe(turnsBefore + 1);
    expect(await metric(server, discordMessages('in', 'ignored_not_allowed'))).toBe(ignoredBefore + 1);
    expect((await sessionSides(server, model))?.A.deliveries).toBe(1);

    const answer = game.say('You may pass.');
    await until(() => botPosts(double, double.general).length === 1, 'the reply is posted');
    double.postMessage(double.general, member.id, 'Thank you.');
    expect((await answer).choices[0]!.message.content).toBe('Thank you.');
  }, 30_000);
});
