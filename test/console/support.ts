/**
 * Shared pieces of the console tests: servers closed after the tests, a WebSocket client that
 * records frames, and a headless Chromium (Debian's, installed by scripts/ensure-chromium.sh
 * when `npm test` runs) with a fresh profile and nothing that reaches the network.
 */
import { randomUUID } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import WebSocket from 'ws';
import { startTestServer, type TestServer } from '../helpers/server.js';

export const uniqueId = (prefix: string): string => `${prefix}-${randomUUID().slice(0, 8)}`;

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls until `check` holds; used to order steps, never to assert. */
export async function until(check: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const started = Date.now();
  while (!check()) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting until ${what}`);
    await sleep(10);
  }
}

export type Frame = Record<string, any> & { type: string };

/** A `ws` client that records every frame and lets a test wait for the next one of a type. */
export class FrameClient {
  readonly frames: Frame[] = [];
  closed: { code: number; reason: string } | null = null;
  /** Per frame type: how far next() has read. */
  private readonly read = new Map<string, number>();

  private constructor(readonly socket: WebSocket) {
    socket.on('message', (data) => this.frames.push(JSON.parse(data.toString()) as Frame));
    socket.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
    });
  }

  static async connect(url: string, headers: Record<string, string> = {}): Promise<FrameClient> {
    const socket = new WebSocket(url, { headers });
    const client = new FrameClient(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('error', reject); // an upgrade answered otherwise: "Unexpected server response: 404"

    });
    return client;
  }

  send(frame: unknown): void {
    this.socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /**
   * The next frame of `type` after the last one this returned, that passes `match` (frames of
   * the type that do not are passed over; frames of other types are left for their own calls).
   */
  async next(type: string, match: (f: Frame) => boolean = () => true, timeoutMs = 15_000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let i = this.read.get(type) ?? 0;
      for (; i < this.frames.length; i++) {
        const f = this.frames[i]!;
        if (f.type === type && match(f)) {
          this.read.set(type, i + 1);
          return f;
        }
      }
      this.read.set(type, i);
      if (this.closed) throw new Error(`socket closed (${this.closed.code}) before a ${type} frame came; got ${JSON.stringify(this.frames).slice(0, 500)}`);
      if (Date.now() > deadline) throw new Error(`no ${type} frame within ${timeoutMs} ms; got ${JSON.stringify(this.frames).slice(0, 800)}`);
      await sleep(10);
    }
  }

  async closedWith(): Promise<{ code: number; reason: string }> {
    await until(() => this.closed !== null, 'the socket closes');
    return this.closed!;
  }

  close(): void {
    this.socket.close();
  }
}

/** A GET with a Host header of the test's choosing (fetch may not set one). */
export function getWithHost(server: TestServer, path: string, host: string): Promise<number> {
  const url = new URL(path, server.url);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, path: url.pathname, headers: { host } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}

export const wsUrl = (server: TestServer, path: string): string => `${server.url.replace(/^http/, 'ws')}${path}`;

/** The console's live feed, connected as the page would be (its own origin). */
export function connectFeed(server: TestServer): Promise<FrameClient> {
  return FrameClient.connect(wsUrl(server, '/console/live'), { origin: server.url });
}

export { startTestServer, type TestServer };

export const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';

/** Flags that keep Chromium off the network (there is none here) and out of the way. */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

export interface Browser {
  readonly context: BrowserContext;
  /** A new tab (pages share the profile, as a person's tabs do). */
  page(): Promise<Page>;
  close(): Promise<void>;
}

export async function launchBrowser(options: { viewport?: { width: number; height: number } } = {}): Promise<Browser> {
  const profile = await mkdtemp(join(tmpdir(), 'motive-console-profile-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: options.viewport ?? { width: 1280, height: 860 },
    timeout: 90_000,
    // The same pixels on any machine: no animations, one scale.
    deviceScaleFactor: 1,
    reducedMotion: 'reduce',
  });
  context.setDefaultTimeout(20_000);
  const errors: string[] = [];
  const watchPage = (p: Page) => p.on('pageerror', (err) => errors.push(err.message));
  context.on('page', watchPage);
  for (const p of context.pages()) watchPage(p);
  return {
    context,
    page: async () => {
      const blank = context.pages().find((p) => p.url() === 'about:blank');
      return blank ?? context.newPage();
    },
    close: async () => {
      await context.close().catch(() => undefined);
      await rm(profile, { recursive: true, force: true });
      if (errors.length > 0) throw new Error(`the page threw: ${errors.join('; ')}`);
    },
  };
}
