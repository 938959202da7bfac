// CORS in a real browser: a page served from another origin runs the official openai SDK
// (with dangerouslyAllowBrowser, sending its X-Stainless-* headers and an API key) in headless
// Chromium against the proxy. With the page's origin in CORS_ORIGINS the SDK completes a turn
// (preflight and all); from an origin not listed, the browser blocks the call.
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchBrowser, type Browser } from '../console/support.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { uniqueId, until } from '../http/support.js';

const OPENAI_DIR = fileURLToPath(new URL('../../node_modules/openai/', import.meta.url));
const KEY = 'sk-browser-123';

/** Serves a blank page and the openai package's ES modules, from its own origin. */
function pageServer(): Promise<{ server: Server; origin: string }> {
  const server = createServer(async (req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>game</title><p>game page</p>');
      return;
    }
    if (path.startsWith('/openai/')) {
      const file = normalize(join(OPENAI_DIR, path.slice('/openai/'.length)));
      if (!file.startsWith(OPENAI_DIR)) return void res.writeHead(403).end();
      try {
        const body = await readFile(file);
        res.writeHead(200, { 'content-type': extname(file) === '.mjs' || extname(file) === '.js' ? 'text/javascript' : 'application/octet-stream' }).end(body);
      } catch {
        res.writeHead(404).end();
      }
      return;
    }
    res.writeHead(404).end();
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, origin: `http://127.0.0.1:${(server.address() as { port: number }).port}` })));
}

/** In the page: one chat completion with the browser build of the SDK; its text or its error. */
const callFromPage = `async ({ baseURL, apiKey, model, content }) => {
  const { default: OpenAI } = await import('/openai/index.mjs');
  const client = new OpenAI({ baseURL, apiKey, dangerouslyAllowBrowser: true, maxRetries: 0 });
  try {
    const reply = await client.chat.completions.create({ model, messages: [{ role: 'user', content }] });
    return { text: reply.choices[0].message.content };
  } catch (err) {
    return { error: String(err && err.message || err) };
  }
}`;

describe('CORS in headless Chromium with the official openai SDK', () => {
  let browser: Browser;
  let page: { server: Server; origin: string };
  let other: { server: Server; origin: string };
  let proxy: TestServer;

  beforeAll(async () => {
    page = await pageServer();
    other = await pageServer();
    proxy = await startTestServer({ corsOrigins: page.origin, apiKeys: KEY });
    browser = await launchBrowser();
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await proxy?.close();
    page?.server.close();
    other?.server.close();
  });

  it('lets the allowed origin hold a conversation through preflights, and blocks another origin', async () => {
    const session = uniqueId('browser');
    const tab = await browser.context.newPage();
    await tab.goto(page.origin);
    const call = (content: string) =>
      tab.evaluate(`(${callFromPage})(${JSON.stringify({ baseURL: `${proxy.url}/v1`, apiKey: KEY, model: session, content })})`) as Promise<{
        text?: string;
        error?: string;
      }>;

    // The page is side A; a program on the server side is B.
    const fromPage = call('Hello from the browser');
    await until(() => proxy.service.ctx.sessions.get(session)?.state === 'AWAITING_PEER', 'the page is held', 30_000);
    const b = proxy.client({ maxRetries: 0 });
    const opening = b.chat.completions.create(
      { model: session, messages: [{ role: 'user', content: 'Welcome, browser.' }] },
      { headers: { authorization: `Bearer ${KEY}` } },
    );
    expect(await fromPage).toEqual({ text: 'Welcome, browser.' });
    opening.catch(() => undefined);

    // From an origin that is not listed, the browser refuses to let the page read the answer.
    const stranger = await browser.context.newPage();
    await stranger.goto(other.origin);
    const blocked = (await stranger.evaluate(
      `(${callFromPage})(${JSON.stringify({ baseURL: `${proxy.url}/v1`, apiKey: KEY, model: uniqueId('blocked'), content: 'hi' })})`,
    )) as { text?: string; error?: string };
    expect(blocked.text).toBeUndefined();
    expect(blocked.error).toMatch(/Connection error|fetch/i);
    await tab.close();
    await stranger.close();
  }, 120_000);
});
