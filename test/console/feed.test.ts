// The console's server side without a browser: the page and its assets, the chart read from
// the machine, the live feed (pushed snapshots, transcripts, debouncing, bad frames), who may
// open it, and "only one connection may hold a side" on the WebSocket side.
import { existsSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { sessionMachine } from '../../machines/session.machine.js';
import { chartOf, sessionChart } from '../../src/http/console-chart.js';
import { PUSH_INTERVAL_MS } from '../../src/http/console-feed.js';
import { consoleAssetsDir } from '../../src/http/routes/console.js';
import { sideHolders } from '../../src/http/side-holders.js';
import { connectFeed, FrameClient, getWithHost, startTestServer, uniqueId, until, wsUrl, type TestServer } from './support.js';

const servers: TestServer[] = [];
const sockets: FrameClient[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.close();
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function start(settings: Parameters<typeof startTestServer>[0] = {}): Promise<TestServer> {
  const server = await startTestServer(settings);
  servers.push(server);
  return server;
}

async function feed(server: TestServer): Promise<FrameClient> {
  const client = await connectFeed(server);
  sockets.push(client);
  return client;
}

const sdk = (server: TestServer): OpenAI => new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'k', maxRetries: 0, timeout: 60_000 });

describe('the page', () => {
  it('is served at / with its assets from the service itself, and unknown routes keep their 404', async () => {
    const server = await start();
    const page = await fetch(`${server.url}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
    expect(page.headers.get('content-security-policy')).toMatch(/default-src 'self'/);
    const html = await page.text();
    expect(html).toContain('<script type="module" src="/console/app.js"></script>');
    // Everything the page loads is a path on this service: nothing from the internet.
    // (What it loads: scripts, styles, icons. Links, such as Sign in, are followed by people.)
    const assets = [...html.matchAll(/<(?:script|link|img)\b[^>]*\b(?:src|href)="([^"#]+)"/g)].map((m) => m[1]!);
    expect(assets.length).toBeGreaterThanOrEqual(4);
    for (const asset of assets) {
      expect(asset.startsWith('/'), asset).toBe(true);
      const response = await fetch(`${server.url}${asset}`);
      expect(response.status, asset).toBe(200);
    }
    for (const script of ['app.js', 'chart.js']) {
      const text = await (await fetch(`${server.url}/console/${script}`)).text();
      expect(text).not.toMatch(/https?:\/\/(?!www\.w3\.org)/);
    }

    const unknown = await fetch(`${server.url}/console/nope.js`);
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { error: { code: string } }).error.code).toBe('not_found');
    expect((await fetch(`${server.url}/no/such/route`)).status).toBe(404);
    const post = await fetch(`${server.url}/`, { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toContain('GET');
    const plain = await fetch(`${server.url}/console/live`);
    expect(plain.status).toBe(426);
  });

  it('finds its files from the build in dist/ as well as from the sources', async () => {
    expect(existsSync(`${consoleAssetsDir()}index.html`)).toBe(true);
    const built = new URL('../../dist/src/http/routes/console.js', import.meta.url);
    // `npm test` builds before it runs the tests; tsc copies no HTML, so the build must find the sources.
    expect(existsSync(built), 'dist/ is built by npm test before vitest runs').toBe(true);
    const module = (await import(pathToFileURL(built.pathname).href)) as { consoleAssetsDir(): string };
    expect(existsSync(`${module.consoleAssetsDir()}index.html`)).toBe(true);
  });

  it('answers callers on this machine only, naming a loopback host, from its own origin', async () => {
    const server = await start();
    const port = new URL(server.url).port;
    expect((await fetch(`${server.url}/`, { headers: { 'x-forwarded-for': '203.0.113.9' } })).status).toBe(404);
    // DNS rebinding: another site's name pointed at 127.0.0.1.
    expect(await getWithHost(server, '/', `rebound.example:${port}`)).toBe(404);
    expect(await getWithHost(server, '/console/chart.json', 'rebound.example')).toBe(404);
    expect(await getWithHost(server, '/', `localhost:${port}`)).toBe(200);
    expect(await getWithHost(server, '/', `[::1]:${port}`)).toBe(200);
    // Another web site's page may open WebSockets to 127.0.0.1; its origin gives it away.
    await expect(FrameClient.connect(wsUrl(server, '/console/live'), { origin: 'https://evil.example' })).rejects.toThrow(/404/);
    const ok = await FrameClient.connect(wsUrl(server, '/console/live'), { origin: `http://localhost:${port}`, host: `localhost:${port}` });
    sockets.push(ok);
    expect(await ok.next('hello')).toMatchObject({ admin: true });
  });
});

describe('with API keys', () => {
  it('opens without a client key (its own guard applies), and tells the page what keys are needed', async () => {
    const server = await start({ apiKeys: 'k1', adminApiKey: 'admin-secret' });
    expect((await fetch(`${server.url}/`)).status).toBe(200);
    expect((await fetch(`${server.url}/console/app.js`)).status).toBe(200);
    expect((await fetch(`${server.url}/console/chart.json`)).status).toBe(200);
    expect((await fetch(`${server.url}/`, { headers: { 'x-forwarded-for': '203.0.113.9' } })).status).toBe(404);
    const live = await feed(server);
    // Playing a side needs a client key; the admin actions need the admin key, which the page does not hold yet.
    expect(await live.next('hello')).toMatchObject({ keys: true, admin: false, adminKey: true });
    // The routes the page calls on the person's behalf still ask for a key.
    expect((await fetch(`${server.url}/v1/sessions/x`, { method: 'DELETE' })).status).toBe(401);

    // Given the admin key (typed in the page, sent as ?key=), the feed opens the admin actions; a wrong one does not.
    const wrong = await FrameClient.connect(wsUrl(server, '/console/live?key=guess'), { origin: server.url });
    expect(await wrong.next('hello')).toMatchObject({ admin: false });
    const unlocked = await FrameClient.connect(wsUrl(server, '/console/live?key=admin-secret'), { origin: server.url });
    expect(await unlocked.next('hello')).toMatchObject({ admin: true, adminKey: true });
    for (const c of [wrong, unlocked]) c.socket.close();
  });
});

describe('the chart', () => {
  it('is read from the machine definition, every state and transition of it', async () => {
    const chart = sessionChart();
    const config = sessionMachine.config as unknown as { initial: string; states: Record<string, { on?: Record<string, unknown>; always?: unknown; after?: Record<string, unknown> }> };
    expect(chart.initial).toBe(config.initial);
    expect(chart.states.map((s) => s.name)).toEqual(Object.keys(config.states));
    for (const state of chart.states) {
      const raw = config.states[state.name]!;
      const expected = Object.keys(raw.on ?? {}).length + (raw.always ? 1 : 0) + Object.keys(raw.after ?? {}).length;
      expect(state.transitions.length, state.name).toBe(expected);
      for (const t of state.transitions) expect(Object.keys(config.states)).toContain(t.target);
    }
    const find = (from: string, event: string) => chart.states.find((s) => s.name === from)!.transitions.find((t) => t.event === event);
    expect(find('DORMANT', 'always')).toMatchObject({ target: 'ACTIVE', guard: 'requestHeld', kind: 'always' });
    expect(find('AWAITING_PEER', 'after unjoinedTtl')).toMatchObject({ target: 'CLOSING', guard: 'nothingHeld', kind: 'after' });
    expect(find('EMPTY', 'CONNECT_B')).toMatchObject({ target: 'AWAITING_PEER', kind: 'event' });
    expect(chart.states.find((s) => s.name === 'CLOSED')).toMatchObject({ final: true, transitions: [] });

    const server = await start();
    expect(await (await fetch(`${server.url}/console/chart.json`)).json()).toEqual(chart);
  });

  it('follows a changed definition (targets in any of XState’s forms)', () => {
    const chart = chartOf({
      id: 'x',
      initial: 'ONE',
      states: {
        ONE: { on: { GO: 'TWO', BACK: { target: '.ONE' }, SPLIT: [{ target: '#x.TWO', guard: 'g' }, { target: 'THREE' }] } },
        TWO: { after: { 500: 'THREE' } },
        THREE: { type: 'final' },
      },
    });
    expect(chart.states[0]!.transitions).toEqual([
      { event: 'GO', kind: 'event', target: 'TWO', guard: null, actions: [] },
      { event: 'BACK', kind: 'event', target: 'ONE', guard: null, actions: [] },
      { event: 'SPLIT', kind: 'event', target: 'TWO', guard: 'g', actions: [] },
      { event: 'SPLIT', kind: 'event', target: 'THREE', guard: null, actions: [] },
    ]);
    expect(chart.states[1]!.transitions).toEqual([{ event: 'after 500', kind: 'after', target: 'THREE', guard: null, actions: [] }]);
    expect(chart.states[2]!.final).toBe(true);
    expect(chartOf(null)).toEqual({ id: 'session', initial: '', states: [] });
  });
});

describe('the live feed', () => {
  it('pushes each session as it changes: state, protocols, turns, who waits and until when', async () => {
    const server = await start({ handshakeTimeoutSeconds: '40', turnTimeoutSeconds: '50' });
    const live = await feed(server);
    expect(await live.next('hello')).toMatchObject({ admin: true, timing: { handshakeTimeoutMs: 40_000, turnTimeoutMs: 50_000 } });
    expect(await live.next('sessions')).toMatchObject({ sessions: [] });

    const id = uniqueId('feed');
    const before = Date.now();
    const handshake = sdk(server).chat.completions.create({ model: id, messages: [{ role: 'system', content: 'Guard the gate.' }, { role: 'user', content: 'ping' }] });
    const waiting = await live.next('sessions', (f) => f.sessions.some((s: any) => s.id === id && s.sides.A.held));
    const s = waiting.sessions.find((x: any) => x.id === id);
    expect(s).toMatchObject({ state: 'AWAITING_PEER', entries: 2, sides: { A: { joined: true, protocol: 'openai', turns: 1, held: { timer: 'handshake' } }, B: { joined: false, held: null } } });
    expect(s.sides.A.held.since).toBeGreaterThanOrEqual(before);
    expect(s.sides.A.held.deadline).toBe(s.sides.A.held.since + 40_000);

    // The transcript of a watched session: all of it at first, then what is new.
    live.send({ type: 'watch', session: id });
    const first = await live.next('transcript');
    expect(first).toMatchObject({ session: id, reset: true, closed: false, skipped: 0 });
    expect(first.entries.map((e: any) => [e.side, e.kind, e.content])).toEqual([
      ['A', 'system', 'Guard the gate.'],
      ['A', 'handshake', 'ping'],
    ]);

    // Side B joins on another protocol (a WebSocket): the feed names it.
    const b = await FrameClient.connect(wsUrl(server, `/v1/realtime?session=${id}&side=B`));
    sockets.push(b);
    await b.next('ready');
    b.send({ type: 'message', content: 'Who goes there?' });
    expect((await handshake).choices[0]!.message.content).toBe('Who goes there?');
    const more = await live.next('transcript');
    expect(more).toMatchObject({
      reset: false,
      entries: [
        { side: 'B', kind: 'message', turn: 1, content: 'Who goes there?' },
        { side: 'A', kind: 'delivery', turn: 1, content: 'Who goes there?' },
      ],
    });
    const paired = await live.next('sessions', (f) => f.sessions.some((x: any) => x.id === id && x.sides.B.protocol === 'websocket' && !x.sides.A.held));
    expect(paired.sessions.find((x: any) => x.id === id)).toMatchObject({ sides: { A: { deliveries: 1 }, B: { socket: true, turns: 1, held: { timer: 'none', deadline: null } } } });

    // Closed sessions leave the list; a page watching one is told.
    await fetch(`${server.url}/v1/sessions/${id}`, { method: 'DELETE' });
    await live.next('sessions', (f) => !f.sessions.some((x: any) => x.id === id));
    expect(await live.next('transcript')).toMatchObject({ session: id, closed: true, entries: [] });
  });

  it('debounces: a burst of changes reaches a page as a few pushes', async () => {
    const server = await start();
    const live = await feed(server);
    await live.next('sessions');
    const client = sdk(server);
    const ids = Array.from({ length: 30 }, (_, i) => uniqueId(`burst${i}`));
    const started = Date.now();
    const held = ids.map((id) => client.chat.completions.create({ model: id, messages: [{ role: 'user', content: 'hi' }] }).catch(() => undefined));
    const last = await live.next('sessions', (f) => ids.every((id) => f.sessions.some((s: any) => s.id === id)));
    const elapsed = Date.now() - started;
    const pushes = live.frames.filter((f) => f.type === 'sessions').length - 1;
    // 30 sessions, 60+ transitions: at most one push per interval, however they arrive.
    expect(pushes).toBeLessThanOrEqual(Math.ceil(elapsed / PUSH_INTERVAL_MS) + 1);
    expect(pushes).toBeLessThan(30);
    expect(last.sessions.length).toBe(30);
    for (const id of ids) await fetch(`${server.url}/v1/sessions/${id}`, { method: 'DELETE' });
    await Promise.all(held);
  });

  it('does not hold up a shutdown: open pages are disconnected', async () => {
    const server = await startTestServer();
    const live = await feed(server);
    await live.next('sessions');
    const started = Date.now();
    await server.close();
    expect(Date.now() - started).toBeLessThan(5_000);
    expect((await live.closedWith()).code).toBeGreaterThanOrEqual(1000);
  });

  it('answers bad frames with error frames and stays open', async () => {
    const server = await start();
    const live = await feed(server);
    await live.next('sessions');
    live.send('{nope');
    expect(await live.next('error')).toMatchObject({ code: 'invalid_json' });
    live.send({ type: 'shout' });
    expect(await live.next('error')).toMatchObject({ code: 'invalid_request', message: expect.stringMatching(/watch/) });
    live.send({ type: 'watch', session: 'x'.repeat(300) });
    expect(await live.next('error')).toMatchObject({ code: 'invalid_request', message: expect.stringMatching(/^session/) });
    live.socket.send(Buffer.from([0, 1, 2]), { binary: true });
    expect(await live.next('error')).toMatchObject({ code: 'invalid_request', message: expect.stringMatching(/binary/) });
    live.send({ type: 'watch', session: 'nobody-here' });
    expect(await live.next('transcript')).toMatchObject({ session: 'nobody-here', reset: true, closed: true });
    live.send({ type: 'ping', id: 'p1' });
    expect(await live.next('pong')).toEqual({ type: 'pong', id: 'p1' });
    expect(live.closed).toBeNull();
    const health = await fetch(`${server.url}/health`);
    expect(health.status).toBe(200);
  });
});

describe('one connection per side', () => {
  it('refuses a second WebSocket for a side that is held, until the first lets go or it takes over', async () => {
    const server = await start();
    const id = uniqueId('hold');
    const first = await FrameClient.connect(wsUrl(server, `/v1/realtime?session=${id}&side=B`));
    sockets.push(first);
    await first.next('ready');

    const second = await FrameClient.connect(wsUrl(server, `/v1/realtime?session=${id}&side=B`));
    sockets.push(second);
    const refused = await second.next('error');
    expect(refused).toMatchObject({ code: 'session_conflict', message: expect.stringMatching(/already held by another WebSocket connection/) });
    expect((await second.closedWith()).code).toBe(1008);
    expect(second.frames.some((f) => f.type === 'ready')).toBe(false);

    // The other side is free.
    const a = await FrameClient.connect(wsUrl(server, `/v1/realtime?session=${id}&side=A`));
    sockets.push(a);
    await a.next('ready');
    a.send({ type: 'message', content: 'hello?' });
    await a.next('accepted');

    // takeover=true: the new connection gets the side, the old one is told and closed.
    const third = await FrameClient.connect(wsUrl(server, `/v1/realtime?session=${id}&side=B&takeover=true`));
    sockets.push(third);
    await third.next('ready');
    expect(await first.next('error')).toMatchObject({ code: 'superseded', message: expect.stringMatching(/took over side B/) });
    expect((await first.closedWith()).code).toBe(1008);
    third.send({ type: 'message', content: 'Who is there?' });
    expect(await a.next('delivery')).toMatchObject({ content: 'Who is there?' });

    // Once it lets go, anyone may hold the side again.
    third.close();
    await third.closedWith();
    await until(() => !sideHolders(server.service.ctx).has(id, 'B'), 'the server sees B gone');
    const fourth = await FrameClient.connect(wsUrl(server, `/v1/realtime?session=${id}&side=B`));
    sockets.push(fourth);
    expect(await fourth.next('ready')).toMatchObject({ side: 'B' });
  });
});

describe('with an admin key, what was said is the admin’s to read', () => {
  it('sends the session list to every page, but transcripts only to a feed that presented ADMIN_API_KEY', async () => {
    const server = await start({ adminApiKey: 'admin-secret' });
    const id = uniqueId('private');
    const handshake = sdk(server).chat.completions.create({ model: id, messages: [{ role: 'system', content: 'sealed orders' }, { role: 'user', content: 'ping' }] });
    const b = await FrameClient.connect(wsUrl(server, `/v1/realtime?session=${id}&side=B`));
    sockets.push(b);
    await b.next('ready');
    b.send({ type: 'message', content: 'the password is swordfish' });
    expect((await handshake).choices[0]!.message.content).toBe('the password is swordfish');

    // A page on this machine without the key: the list (no text), and a clear refusal instead of the transcript.
    const keyless = await feed(server);
    expect(await keyless.next('hello')).toMatchObject({ admin: false, adminKey: true });
    expect((await keyless.next('sessions', (f) => f.sessions.some((s: any) => s.id === id))).sessions.find((s: any) => s.id === id)).toMatchObject({ entries: 4 });
    keyless.send({ type: 'watch', session: id });
    expect(await keyless.next('error')).toMatchObject({ code: 'invalid_api_key', message: expect.stringMatching(/admin key/) });
    // New entries do not reach it either.
    b.send({ type: 'message', content: 'and the gate code is 0451' });
    await until(() => server.service.ctx.sessions.get(id)!.context.transcript.length === 4, 'the entry is recorded');
    keyless.send({ type: 'ping', id: 'after' });
    await keyless.next('pong');
    await new Promise((resolve) => setTimeout(resolve, PUSH_INTERVAL_MS * 3));
    expect(keyless.frames.filter((f) => f.type === 'transcript')).toEqual([]);
    const seen = JSON.stringify(keyless.frames);
    for (const text of ['swordfish', '0451', 'sealed orders']) expect(seen).not.toContain(text);

    // With the key, the same page reads it.
    const admin = await FrameClient.connect(wsUrl(server, '/console/live?key=admin-secret'), { origin: server.url });
    sockets.push(admin);
    expect(await admin.next('hello')).toMatchObject({ admin: true });
    admin.send({ type: 'watch', session: id });
    const transcript = await admin.next('transcript');
    expect(transcript.entries.map((e: any) => e.content)).toEqual(['sealed orders', 'ping', 'the password is swordfish', 'the password is swordfish', 'and the gate code is 0451']);
  });
});
