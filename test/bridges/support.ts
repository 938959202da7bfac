/**
 * Shared pieces of the bridge tests: polling for what must come and for what must not, reading
 * a service's admin views and /metrics counters, the game playing side A on the official
 * OpenAI SDK, a recording ChannelHost for testing one channel on its own, and a watch on the
 * process's TCP connections.
 */
import { Socket } from 'node:net';
import OpenAI from 'openai';
import { expect } from 'vitest';
import type { BridgeName, ChannelHost, Conversation, Inbound, Opening, Received } from '../../src/bridges/channel.js';
import { newConversation } from '../../src/bridges/host.js';

/** A running service, as far as these helpers need it. */
export interface Served {
  readonly url: string;
}

/** Polls `check` until it holds; fails after `timeoutMs`, naming `what` it waited for. */
export async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Checks that `check` stays true for `ms` (polling), for things that must not happen. */
export async function stays(check: () => boolean | Promise<boolean>, what: string, ms = 1_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!(await check())) throw new Error(`no longer true: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Whether each side of a session waits, what it was given and what it still has queued. */
export interface SessionSides {
  A: { waiting: boolean; deliveries: number; queued: number };
  B: { waiting: boolean; deliveries: number; queued: number };
}

/**
 * Reading a service's admin API with `headers` on every request (the admin key, where the
 * service is configured with one): `get` answers a path's status and JSON body; `sessionSides`
 * a session's admin view, or null when there is no such session.
 */
export function adminApi(headers: Record<string, string> = {}) {
  async function get(server: Served, path: string): Promise<{ status: number; body: any }> {
    const response = await fetch(`${server.url}${path}`, { headers });
    return { status: response.status, body: await response.json() };
  }
  async function sessionSides(server: Served, model: string): Promise<SessionSides | null> {
    const { status, body } = await get(server, `/admin/sessions/${model}`);
    return status === 200 ? body.sides : null;
  }
  return { get, sessionSides };
}

/** A counter's value in /metrics (0 when the series is not there yet). */
export async function metric(server: Served, series: string): Promise<number> {
  const response = await fetch(`${server.url}/metrics`);
  expect(response.status).toBe(200);
  const line = (await response.text()).split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

/**
 * The game (side A) on the official SDK, playing `model` on the service `server()` answers
 * (asked on every request, so a test may restart the service): each request carries the whole
 * history, as a chat client's does, and is held until the bridged side's next message.
 */
export function gameIn(server: () => Served, model: string) {
  const messages: Array<{ role: 'system' | 'user' | 'assistant'; content: string }> = [
    { role: 'system', content: 'You are a character in a game.' },
    { role: 'user', content: 'begin' },
  ];
  const send = async (): Promise<OpenAI.ChatCompletion> => {
    const client = new OpenAI({ baseURL: `${server().url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
    const completion = await client.chat.completions.create({ model, messages: [...messages] });
    messages.push({ role: 'assistant', content: completion.choices[0]!.message.content ?? '' });
    return completion;
  };
  return {
    /** A's first request (the handshake), or its next line. */
    say: (line?: string): Promise<OpenAI.ChatCompletion> => {
      if (line !== undefined) messages.push({ role: 'user', content: line });
      return send();
    },
    /** The last request again, as a client does when it was cut off. */
    again: (): Promise<OpenAI.ChatCompletion> => send(),
  };
}

/** The text of a TwiML answer's <Message> (null when it has none). */
export const messageOf = (twiml: string): string | null => /<Message>([\s\S]*)<\/Message>/.exec(twiml)?.[1] ?? null;

/** A new conversation of `bridge` for `opening`, as the host makes one: nothing received, sent or queued yet. */
export function conversationOf(bridge: BridgeName, opening: Opening): Conversation {
  return newConversation(bridge, opening, new Date().toISOString());
}

/**
 * A ChannelHost standing in for the real one (src/bridges/host.ts) in a channel's own tests: it
 * keeps `bridge`'s conversations in memory the way the host does (an open one of the same
 * session and tenant is found, not opened again), records what the channel asked of it, and
 * answers inbound messages as the test says.
 */
export class RecordingHost implements ChannelHost {
  readonly conversations = new Map<string, Conversation>();
  /** Every open() call, in order. */
  readonly opened: Opening[] = [];
  readonly endings: Array<{ id: string; reason: string }> = [];
  readonly received: Inbound[] = [];
  readonly ignoredCalls: Array<{ reason: string; details: Record<string, unknown> }> = [];
  /** Answers for the next receive calls, in order; then `answer`. */
  readonly answers: Received[] = [];
  answer: (inbound: Inbound) => Received = () => ({ ok: true, duplicate: false });

  constructor(private readonly bridge: BridgeName) {}

  conversation(id: string): Conversation | undefined {
    return this.conversations.get(id);
  }

  async open(opening: Opening): Promise<Conversation> {
    this.opened.push(opening);
    const existing = this.conversations.get(opening.id);
    if (existing && existing.ended === null && existing.session === opening.session && existing.tenant === opening.tenant) return existing;
    const conversation = conversationOf(this.bridge, opening);
    this.conversations.set(conversation.id, conversation);
    return conversation;
  }

  async save(): Promise<void> {}

  async end(conversation: Conversation, reason: string): Promise<void> {
    this.endings.push({ id: conversation.id, reason });
    conversation.ended = new Date().toISOString();
  }

  async receive(inbound: Inbound): Promise<Received> {
    this.received.push(inbound);
    return this.answers.shift() ?? this.answer(inbound);
  }

  ignored(reason: string, details: Record<string, unknown>): void {
    this.ignoredCalls.push({ reason, details });
  }
}

/** Where the sockets of this process connected, while watched; `restore` stops watching. */
export interface ConnectionWatch {
  /** A host name, an address, or a pipe's path for each connection, in order. */
  readonly destinations: readonly string[];
  restore(): void;
}

/**
 * Watches every TCP connection the test process makes (HTTP, TLS and WebSocket all connect a
 * net.Socket), so that a test can check none went anywhere but the loopback address.
 */
export function watchConnections(): ConnectionWatch {
  const destinations: string[] = [];
  const connect = Socket.prototype.connect;
  Socket.prototype.connect = function (this: Socket, ...args: unknown[]) {
    // net.connect() passes its normalized arguments as one array; a direct call passes them as they are.
    const first = Array.isArray(args[0]) ? (args[0] as unknown[])[0] : args[0];
    const target = typeof first === 'object' && first !== null ? (first as { host?: string; path?: string }) : { host: typeof args[1] === 'string' ? args[1] : 'localhost' };
    destinations.push(target.host ?? target.path ?? 'localhost');
    return (connect as (...a: unknown[]) => Socket).apply(this, args);
  } as typeof connect;
  return {
    destinations,
    restore: () => {
      Socket.prototype.connect = connect;
    },
  };
}
