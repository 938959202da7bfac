/**
 * Shared pieces of the HTTP integration tests: servers that close themselves after each test,
 * chat participants that keep and re-send their own history the way real chat clients do, and
 * raw requests for what the SDK cannot send.
 */
import { randomUUID } from 'node:crypto';
import { APIError as AnthropicAPIError } from '@anthropic-ai/sdk';
import OpenAI, { APIError } from 'openai';
import type { ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import { afterEach, expect } from 'vitest';
import type { OptionName } from '../../src/config.js';
import type { Side } from '../../machines/session.logic.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

export type Settings = Partial<Record<OptionName, string>>;

/** Registers an afterEach that closes every server the returned function started. */
export function useServers(): (settings?: Settings) => Promise<TestServer> {
  const servers: TestServer[] = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });
  return async (settings = {}) => {
    const server = await startTestServer(settings);
    servers.push(server);
    return server;
  };
}

export const uniqueId = (prefix: string): string => `${prefix}-${randomUUID().slice(0, 8)}`;

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls until `check` holds; the tests use it to order requests, never to assert. */
export async function until(check: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const started = Date.now();
  while (!check()) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting until ${what}`);
    await sleep(5);
  }
}

/** Waits until the session holds a request of `side` open (so the next request is ordered after it). */
export function untilHeld(server: TestServer, sessionId: string, side: Side): Promise<void> {
  return until(() => server.service.ctx.sessions.get(sessionId)?.context.sides[side].held != null, `side ${side} of '${sessionId}' is held`);
}

/** An SDK client whose every HTTP status is recorded (retries included), in order. */
export function recordingClient(server: TestServer, options: { maxRetries?: number } = {}) {
  const statuses: number[] = [];
  const listeners: Array<(status: number) => void> = [];
  const recording: typeof fetch = async (input, init) => {
    const response = await fetch(input, init);
    statuses.push(response.status);
    for (const listener of listeners) listener(response.status);
    return response;
  };
  const client = new OpenAI({
    baseURL: `${server.url}/v1`,
    apiKey: 'test-key',
    maxRetries: options.maxRetries ?? 2,
    timeout: 20_000,
    fetch: recording,
  });
  /** Resolves when a response with `status` has been received. */
  const nextStatus = (status: number): Promise<void> =>
    new Promise((resolve) => {
      if (statuses.includes(status)) return resolve();
      listeners.push((s) => {
        if (s === status) resolve();
      });
    });
  return { client, statuses, nextStatus };
}

/**
 * One chat client of a session: it keeps its own history and re-sends all of it with every
 * request, as chat UIs and agent frameworks do. `say` sends one user message and resolves
 * with the assistant reply (which is appended to the history).
 */
export class Participant {
  readonly history: ChatCompletionMessageParam[] = [];
  /** Every response of a streaming call, chunk by chunk, for shape checks. */
  readonly chunks: OpenAI.Chat.Completions.ChatCompletionChunk[][] = [];
  readonly completions: OpenAI.Chat.Completions.ChatCompletion[] = [];

  constructor(
    private readonly client: OpenAI,
    readonly model: string,
    private readonly options: { stream?: boolean; system?: string } = {},
  ) {
    if (options.system) this.history.push({ role: 'system', content: options.system });
  }

  async say(content: string, requestOptions: OpenAI.RequestOptions = {}): Promise<string> {
    this.history.push({ role: 'user', content });
    const messages = [...this.history];
    const reply = this.options.stream ? await this.streamed(messages, requestOptions) : await this.plain(messages, requestOptions);
    this.history.push({ role: 'assistant', content: reply });
    return reply;
  }

  private async plain(messages: ChatCompletionMessageParam[], requestOptions: OpenAI.RequestOptions): Promise<string> {
    const completion = await this.client.chat.completions.create({ model: this.model, messages }, requestOptions);
    this.completions.push(completion);
    return completion.choices[0]!.message.content ?? '';
  }

  private async streamed(messages: ChatCompletionMessageParam[], requestOptions: OpenAI.RequestOptions): Promise<string> {
    const stream = await this.client.chat.completions.create(
      { model: this.model, messages, stream: true, stream_options: { include_usage: true } },
      requestOptions,
    );
    const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
    let text = '';
    for await (const chunk of stream) {
      chunks.push(chunk);
      text += chunk.choices[0]?.delta.content ?? '';
    }
    this.chunks.push(chunks);
    return text;
  }
}

/** Awaits an SDK call that must fail with an `errorClass`, and returns that error. */
async function failure<E extends Error>(call: Promise<unknown>, errorClass: abstract new (...args: never[]) => E): Promise<E> {
  let value: unknown;
  try {
    value = await call;
  } catch (err) {
    if (err instanceof errorClass) return err;
    throw err;
  }
  throw new Error(`expected the call to fail with an ${errorClass.name}, but it succeeded: ${JSON.stringify(value).slice(0, 300)}`);
}

/** Awaits an OpenAI SDK call that must fail, and returns its APIError. */
export const apiError = (call: Promise<unknown>): Promise<APIError> => failure(call, APIError);

/** Awaits an Anthropic SDK call that must fail, and returns its APIError. */
export const anthropicError = (call: Promise<unknown>): Promise<AnthropicAPIError> => failure(call, AnthropicAPIError);

/** A raw POST (for inputs the SDK cannot send), with the parsed JSON body when there is one. */
export async function rawPost(
  server: TestServer,
  path: string,
  body: string | Buffer,
  headers: Record<string, string> = { 'content-type': 'application/json' },
): Promise<{ status: number; headers: Headers; json: any }> {
  const response = await fetch(`${server.url}${path}`, { method: 'POST', headers, body });
  const text = await response.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  return { status: response.status, headers: response.headers, json };
}

/** The OpenAI error body: {error:{message,type,param,code}} with a message that says something. */
export function expectOpenAIError(body: any, code: string): void {
  expect(body).toEqual({
    error: { message: expect.any(String), type: expect.any(String), param: expect.toSatisfy((p: unknown) => p === null || typeof p === 'string'), code },
  });
  expect(body.error.message.length).toBeGreaterThan(10);
}

export async function expectHealthy(server: TestServer): Promise<void> {
  const response = await fetch(`${server.url}/health`);
  expect(response.status).toBe(200);
  expect(((await response.json()) as { status: string }).status).toBe('ok');
}

/** Lines for PROTOCOL.md §1's alternation, with edge whitespace, a blank line, a tab and non-ASCII text. */
export const SCRIPT = {
  fromB: ['You wake in a cold cell.  ', 'The guard laughs.\nHe says: "Never."', '  Ein Schlüssel glänzt 🔑', 'You are free.'],
  fromA: ['I look around.', 'I ask the guard to let me out.\n\nPolitely!', 'I pick up the key\t(quietly)', 'The end?'],
} as const;

/** The knight and the dragon: a short script for sessions whose two sides speak different protocols. */
export const DUEL = {
  handshake: 'hello?',
  fromB: ['ROAR. Who dares?', 'Then draw your sword.\n\n'],
  fromA: ['Sir Gawain, 🛡️ at your service.', 'I do.'],
} as const;

/** Anything that sends a line and resolves with what the other side answered. */
export interface Speaker {
  say(content: string): Promise<string>;
}

/**
 * Plays PROTOCOL.md §1: A's handshake (held), B's opening answers it, then A and B in turn,
 * asserting that every request is answered with exactly the other side's next line. Needs
 * `fromA` as long as `fromB`. Returns A's last request, still held for B's next line (in an
 * object: an async function would otherwise wait for it).
 */
export async function converse(
  server: TestServer,
  session: string,
  a: Speaker,
  b: Speaker,
  script: { readonly handshake?: string; readonly fromA: readonly string[]; readonly fromB: readonly string[] },
): Promise<{ readonly held: Promise<string> }> {
  const { fromA, fromB } = script;
  let pendingA = a.say(script.handshake ?? 'ping');
  await untilHeld(server, session, 'A');
  let pendingB = b.say(fromB[0]!);
  expect(await pendingA).toBe(fromB[0]);
  for (let turn = 0; turn < fromA.length; turn++) {
    pendingA = a.say(fromA[turn]!);
    expect(await pendingB).toBe(fromA[turn]);
    if (turn === fromA.length - 1) break;
    pendingB = b.say(fromB[turn + 1]!);
    expect(await pendingA).toBe(fromB[turn + 1]);
  }
  return { held: pendingA };
}
