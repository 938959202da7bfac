// The WebSocket side against web pages, in a real browser: browsers apply no CORS to
// WebSockets, so without its Origin check any site the user visits could join a session on
// ws://127.0.0.1 and read it. In headless Chromium, a page of a site not in CORS_ORIGINS fails
// to open /v1/realtime (no session is touched), while a listed site's page joins and speaks.
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchBrowser, type Browser } from '../console/support.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { uniqueId } from '../http/support.js';

/** A blank page from an origin of its own. */
function pageServer(): Promise<{ server: Server; origin: string }> {
  const server = createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>site</title><p>a site</p>'));
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, origin: `http://127.0.0.1:${(server.address() as { port: number }).port}` })));
}

/** In the page: open the WebSocket side, send one message; what came back, or how it ended. */
const joinFromPage = `(url) => new Promise((resolve) => {
  const ws = new WebSocket(url);
  const frames = [];
  ws.onopen = () => ws.send(JSON.stringify({ type: 'message', content: 'hello from a page', id: 'p' }));
  ws.onmessage = (m) => {
    frames.push(JSON.parse(m.data));
    if (frames.some((f) => f.type === 'accepted')) { ws.close(); resolve({ opened: true, frames }); }
  };
  ws.onclose = (e) => resolve({ opened: frames.length > 0, frames, code: e.code });
})`;

describe('the WebSocket side in headless Chromium', () => {
  let browser: Browser;
  let listed: { server: Server; origin: string };
  let stranger: { server: Server; origin: string };
  let proxy: TestServer;

  beforeAll(async () => {
    listed = await pageServer();
    stranger = await pageServer();
    proxy = await startTestServer({ corsOrigins: listed.origin });
    browser = await launchBrowser();
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await proxy?.close();
    listed?.server.close();
    stranger?.server.close();
  });

  it('refuses a page of a site not in CORS_ORIGINS, and lets a listed one join', async () => {
    const join = async (origin: string, session: string) => {
      const tab = await browser.context.newPage();
      await tab.goto(origin);
      const url = `${proxy.url.replace(/^http/, 'ws')}/v1/realtime?session=${session}&side=A`;
      const result = (await tab.evaluate(`(${joinFromPage})(${JSON.stringify(url)})`)) as { opened: boolean; frames: Array<{ type: string }>; code?: number };
      await tab.close();
      return result;
    };

    const hostile = uniqueId('hostile');
    const refused = await join(stranger.origin, hostile);
    expect(refused).toMatchObject({ opened: false, frames: [], code: 1006 });
    expect(proxy.service.ctx.sessions.get(hostile)).toBeUndefined();

    const friendly = uniqueId('friendly');
    const joined = await join(listed.origin, friendly);
    expect(joined.opened).toBe(true);
    expect(joined.frames.map((f) => f.type)).toEqual(['ready', 'accepted']);
    expect(proxy.service.ctx.sessions.get(friendly)?.context.sides.A.joined).toBe(true);
  }, 120_000);
});
