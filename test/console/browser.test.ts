// The console in a real browser (Debian's Chromium, headless, driven by playwright-core): a
// program on the official openai SDK opens a session, the console shows it live, the test plays
// the other side in the page, and the SDK receives exactly what was typed, streamed live when it
// asked for a stream. Also: one tab per side, ending a session from the console, a phone-sized
// screen, the keyboard, the themes, and the screenshots in docs/.
//
// `UPDATE_SCREENSHOTS=1` (npm run screenshots) writes docs/console-sessions.png and
// docs/console-conversation.png; otherwise they go to a temporary folder, so that a test run
// leaves the work tree as it was.
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI, { APIError } from 'openai';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FrameClient, launchBrowser, startTestServer, uniqueId, until, wsUrl, type Browser, type TestServer } from './support.js';

const DOCS = fileURLToPath(new URL('../../docs/', import.meta.url));
const LONG = 180_000;

let server: TestServer;
let browser: Browser;
let page: Page;
let shots: string;

const settings = { handshakeTimeoutSeconds: '240', turnTimeoutSeconds: '240', keepaliveIntervalSeconds: '1' } as const;

beforeAll(async () => {
  server = await startTestServer(settings);
  browser = await launchBrowser();
  page = await browser.page();
  shots = process.env['UPDATE_SCREENSHOTS'] ? DOCS : await mkdtemp(join(tmpdir(), 'motive-console-shots-'));
}, LONG);

afterAll(async () => {
  // The browser first, so that its pages do not see the server go and reconnect.
  await browser?.close();
  await server?.close();
  if (shots && shots !== DOCS) await rm(shots, { recursive: true, force: true });
}, LONG);

const sdk = (s: TestServer = server): OpenAI => new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'k', maxRetries: 0, timeout: 200_000 });

async function openConsole(p: Page, s: TestServer = server, hash = ''): Promise<void> {
  await p.goto(`${s.url}/${hash}`);
  await p.locator('#feed-status[data-state="live"]').waitFor();
}

async function openSession(p: Page, id: string, s: TestServer = server): Promise<void> {
  await openConsole(p, s, `#/s/${encodeURIComponent(id)}`);
  await p.locator('#conv-id', { hasText: id }).waitFor();
}

/** The handshake of side A through the SDK, held until the page answers as B; `greeting` opens the history as a chat UI's character card does. */
function handshake(id: string, system?: string, s: TestServer = server, greeting?: string) {
  const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [{ role: 'user', content: 'ping' }];
  if (greeting) messages.unshift({ role: 'assistant', content: greeting });
  if (system) messages.unshift({ role: 'system', content: system });
  return sdk(s).chat.completions.create({ model: id, messages });
}

/** Types into the page's composer as a person does, one key at a time. */
async function type(p: Page, text: string, delay = 35): Promise<void> {
  await p.locator('#composer').pressSequentially(text, { delay });
}

async function playStatus(p: Page, pattern: RegExp): Promise<void> {
  await p.locator('#play-status', { hasText: pattern }).waitFor();
}

/** The page plays side B: joins, answers A's handshake with `text`. */
async function answerAsB(p: Page, id: string, text: string): Promise<void> {
  await openSession(p, id);
  await p.getByRole('button', { name: 'Answer as B' }).click();
  await p.getByLabel('Your reply as B').waitFor();
  await type(p, text, 10);
  await p.keyboard.press('Enter');
}

describe('the console in a browser', () => {
  it(
    'shows a session the moment a client opens it, counts down its wait, and drops it when it closes, without a reload',
    async () => {
      await openConsole(page);
      await page.evaluate('window.loadedOnce = true');
      const id = uniqueId('live');
      const held = handshake(id).catch((err: unknown) => err);

      const row = page.locator(`tr[data-session="${id}"]`);
      await row.waitFor();
      await row.locator('.badge', { hasText: 'AWAITING_PEER' }).waitFor();
      expect(await row.locator('td[data-label="Side A"]').innerText()).toMatch(/openai · 1 turn/);
      expect(await row.locator('td[data-label="Side B"]').innerText()).toMatch(/not joined/);
      const waiting = row.locator('td[data-label="Waiting"]');
      await waiting.locator('.timer', { hasText: /left/ }).waitFor();
      expect(await waiting.innerText()).toMatch(/A waits for a peer · \d:\d\d left/);
      const first = await waiting.locator('.timer').innerText();
      // It counts down by itself (the page ticks; the server pushes only changes).
      await waiting.locator('.timer').filter({ hasNotText: first }).waitFor({ timeout: 10_000 });

      expect((await fetch(`${server.url}/v1/sessions/${id}`, { method: 'DELETE' })).status).toBe(200);
      await row.waitFor({ state: 'detached' });
      expect(await held).toBeInstanceOf(APIError);
      expect(((await held) as APIError).status).toBe(410);
      expect(await page.evaluate('window.loadedOnce')).toBe(true);
    },
    LONG,
  );

  it(
    'plays side B: the SDK receives exactly the text typed in the page',
    async () => {
      const id = uniqueId('answer');
      const held = handshake(id, 'You guard the city gate.', server, '*The guard eyes you from the gate.*');
      await openConsole(page);
      await page.locator(`tr[data-session="${id}"] a`).click();
      await page.locator('#conv-id', { hasText: id }).waitFor();

      // The transcript: A's system prompt and its preamble (the card's greeting), collapsed, and its handshake.
      const system = page.locator('#transcript li[data-kind="system"]');
      await system.waitFor();
      expect(await system.locator('summary').innerText()).toMatch(/System prompt of A · turn 1/);
      expect(await system.locator('details').getAttribute('open')).toBeNull();
      expect(await system.locator('.text').isVisible()).toBe(false);
      const preamble = page.locator('#transcript li[data-kind="preamble"]');
      expect(await preamble.locator('summary').innerText()).toMatch(/Preamble \(its own greeting, not forwarded\) of A · turn 1/);
      expect(await preamble.locator('.text').isVisible()).toBe(false);
      await preamble.locator('summary').click();
      expect(await preamble.locator('.text').innerText()).toBe('*The guard eyes you from the gate.*');
      expect(await page.locator('#transcript li[data-kind="handshake"]').innerText()).toMatch(/A · turn 1 · .*handshake, not forwarded\s+ping/s);
      // The chart, drawn from the machine, with the session's state highlighted.
      expect(await page.locator('#chart g.state').count()).toBe(6);
      expect(await page.locator('#chart g.state.current').getAttribute('data-state')).toBe('AWAITING_PEER');

      await page.getByRole('button', { name: 'Answer as B' }).click();
      const composer = page.getByLabel('Your reply as B');
      await composer.waitFor();
      await playStatus(page, /A is waiting for your reply: .* left before its request times out/);
      await type(page, 'Halt! Who goes there?');
      await page.keyboard.press('Shift+Enter');
      await type(page, 'Name yourself.');
      await page.keyboard.press('Enter');

      const completion = await held;
      expect(completion.choices[0]!.message.content).toBe('Halt! Who goes there?\nName yourself.');
      expect(completion.model).toBe(id);
      await page.locator('#transcript li[data-side="B"]', { hasText: 'Name yourself.' }).waitFor();
      // The delivery is a marker under the message, not the text again.
      const delivered = page.locator('#transcript li[data-kind="delivery"][data-side="A"]');
      await delivered.waitFor();
      expect(await delivered.innerText()).toMatch(/^→ delivered to A, answering its turn 1 · /);
      await page.locator('#chart g.state.current[data-state="DORMANT"], #chart g.state.current[data-state="ACTIVE"]').waitFor();
      expect(await composer.inputValue()).toBe('');
      await playStatus(page, /A is thinking… \d:\d\d/);
      await fetch(`${server.url}/v1/sessions/${id}`, { method: 'DELETE' });
    },
    LONG,
  );

  it(
    'streams what the person types to a streaming SDK call as several deltas, live, before it is sent',
    async () => {
      const id = uniqueId('stream');
      const held = handshake(id);
      await answerAsB(page, id, 'Good evening.');
      expect((await held).choices[0]!.message.content).toBe('Good evening.');

      const stream = await sdk().chat.completions.create({
        model: id,
        stream: true,
        messages: [
          { role: 'user', content: 'ping' },
          { role: 'assistant', content: 'Good evening.' },
          { role: 'user', content: 'A room for the night, please.' },
        ],
      });
      const deltas: string[] = [];
      let ended = false;
      const reading = (async () => {
        for await (const chunk of stream) {
          const text = chunk.choices[0]?.delta?.content;
          if (text) deltas.push(text);
        }
        ended = true;
      })();
      reading.catch(() => undefined); // awaited below; a failed test must not leave it unhandled

      await page.locator('#transcript li[data-side="A"]', { hasText: 'A room for the night, please.' }).waitFor();
      await playStatus(page, /A is waiting for your reply/);
      const reply = 'That will be two silver, paid now. Breakfast is extra.';
      await type(page, reply, 45);
      // Before Enter: the SDK has already been shown the complete words, as deltas.
      await until(() => deltas.join('').startsWith('That will be two silver, paid now. Breakfast '), 'the typed words reach the SDK live', 30_000);
      expect(ended).toBe(false);
      expect(await page.locator('#shown-live').innerText()).toMatch(/^Sent live to A: “That will be two silver, paid now\. Breakfast /);
      await page.keyboard.press('Enter');
      await reading;
      expect(deltas.join('')).toBe(reply);
      expect(deltas.length).toBeGreaterThanOrEqual(4);
      await page.locator('#transcript li[data-side="B"]', { hasText: 'Breakfast is extra.' }).waitFor();
      await playStatus(page, /A is thinking…/);
      await fetch(`${server.url}/v1/sessions/${id}`, { method: 'DELETE' });
    },
    LONG,
  );

  it(
    'lets one tab hold a side: a second tab watching the session is told the side is taken',
    async () => {
      const id = uniqueId('tabs');
      const held = handshake(id);
      await answerAsB(page, id, 'Who knocks?');
      await held;
      await page.locator('.side-card[data-side="B"] .held-by', { hasText: 'played by you, in this tab' }).waitFor();

      const second = await browser.context.newPage();
      try {
        await openSession(second, id);
        await second.locator('#transcript li[data-side="B"]', { hasText: 'Who knocks?' }).waitFor();
        const joinB = second.getByRole('button', { name: 'Join as B' });
        await second.locator('#join-B:disabled').waitFor();
        expect(await joinB.isDisabled()).toBe(true);
        expect(await second.locator('#join-note').innerText()).toMatch(/Side B is held by another connection \(another tab or client\): only one may hold a side/);
        expect(await second.locator('.side-card[data-side="B"] .held-by').innerText()).toBe('held by a WebSocket connection');
        expect(await second.getByRole('button', { name: 'Join as A' }).isEnabled()).toBe(true);
      } finally {
        await second.close();
      }
      await fetch(`${server.url}/v1/sessions/${id}`, { method: 'DELETE' });
    },
    LONG,
  );

  it(
    'ends a session from the console: the SDK request held in it gets 410',
    async () => {
      const id = uniqueId('end');
      const held = handshake(id);
      await answerAsB(page, id, 'State your business.');
      await held;
      const next = sdk()
        .chat.completions.create({
          model: id,
          messages: [
            { role: 'user', content: 'ping' },
            { role: 'assistant', content: 'State your business.' },
            { role: 'user', content: 'Trade.' },
          ],
        })
        .catch((err: unknown) => err);
      await page.locator('#transcript li[data-side="A"]', { hasText: 'Trade.' }).waitFor();
      await playStatus(page, /A is waiting for your reply/);

      page.once('dialog', (dialog) => void dialog.accept());
      await page.getByRole('button', { name: 'End session' }).click();
      const error = await next;
      expect(error).toBeInstanceOf(APIError);
      expect((error as APIError).status).toBe(410);
      expect((error as APIError).code).toBe('session_closed');
      await page.locator('#conv-notice', { hasText: `Session “${id}” ended.` }).waitFor();
      await page.locator('#join-note', { hasText: 'The session ended.' }).waitFor();
      await page.goto(`${server.url}/#/`);
      await page.locator('#feed-status[data-state="live"]').waitFor();
      await page.locator('#sessions-view').waitFor();
      await page.locator(`tr[data-session="${id}"]`).waitFor({ state: 'detached' });
    },
    LONG,
  );

  it(
    'fits a phone-sized screen, works from the keyboard, and has light and dark themes',
    async () => {
      const phone = await browser.context.newPage();
      try {
        await phone.setViewportSize({ width: 390, height: 844 });
        await phone.emulateMedia({ colorScheme: 'dark' });
        const id = uniqueId('phone');
        const held = handshake(id);
        await openConsole(phone);
        const link = phone.locator(`tr[data-session="${id}"] a`);
        await link.waitFor();
        const fits = () => phone.evaluate('document.documentElement.scrollWidth <= window.innerWidth');
        expect(await fits()).toBe(true);
        const background = () => phone.evaluate('getComputedStyle(document.body).backgroundColor');
        expect(await background()).toBe('rgb(16, 20, 27)');

        // Keyboard only: open the session, answer, a new line with Shift+Enter, send with Enter.
        await link.focus();
        await phone.keyboard.press('Enter');
        await phone.locator('#conv-id', { hasText: id }).waitFor();
        await phone.getByRole('button', { name: 'Answer as B' }).focus();
        await phone.keyboard.press('Enter');
        await phone.getByLabel('Your reply as B').waitFor();
        await phone.locator('#composer:focus').waitFor();
        await phone.keyboard.type('line one');
        await phone.keyboard.press('Shift+Enter');
        await phone.keyboard.type('line two');
        await phone.keyboard.press('Enter');
        expect((await held).choices[0]!.message.content).toBe('line one\nline two');
        await phone.locator('#transcript li[data-side="B"]', { hasText: 'line two' }).waitFor();
        expect(await fits()).toBe(true);

        // The toggle overrides the system's theme, and is remembered.
        await phone.getByRole('button', { name: 'Switch to light theme' }).click();
        expect(await background()).toBe('rgb(246, 247, 249)');
        await phone.reload();
        await phone.locator('#feed-status[data-state="live"]').waitFor();
        expect(await background()).toBe('rgb(246, 247, 249)');
        expect(await phone.getByRole('button', { name: 'Switch to dark theme' }).count()).toBe(1);
        // Every control has a name a screen reader can read.
        const unnamed = await phone.evaluate(`[...document.querySelectorAll('button, a, textarea, input')].filter((el) => {
          const label = el.getAttribute('aria-label') ?? el.innerText ?? '';
          const labelled = el.id ? document.querySelector('label[for="' + el.id + '"]') : null;
          return !label.trim() && !labelled && !el.closest('label') && !el.hidden;
        }).map((el) => el.outerHTML.slice(0, 80))`);
        expect(unnamed).toEqual([]);
        await fetch(`${server.url}/v1/sessions/${id}`, { method: 'DELETE' });
      } finally {
        await phone.close();
      }
    },
    LONG,
  );

  it(
    'takes the screenshots of the sessions view and the conversation view',
    async () => {
      // A server of its own, so that the pictures show only these sessions.
      const s = await startTestServer(settings);
      const shooter = await browser.context.newPage();
      const a = await FrameClient.connect(wsUrl(s, '/v1/realtime?session=bridge-7&side=A'));
      try {
        await shooter.setViewportSize({ width: 1280, height: 900 });
        await shooter.emulateMedia({ colorScheme: 'light' });

        // npc-guard: a game (A, openai SDK) and a person in the console (B).
        const guard = handshake('npc-guard', 'You are the gate guard of Eldham. Stay in character; be gruff but fair.', s);
        await openSession(shooter, 'npc-guard', s);
        await shooter.getByRole('button', { name: 'Answer as B' }).click();
        await shooter.getByLabel('Your reply as B').waitFor();
        await shooter.locator('#composer').pressSequentially('Halt! Who goes there?', { delay: 5 });
        await shooter.keyboard.press('Enter');
        await guard;
        const history: OpenAI.Chat.ChatCompletionMessageParam[] = [
          { role: 'system', content: 'You are the gate guard of Eldham. Stay in character; be gruff but fair.' },
          { role: 'user', content: 'ping' },
          { role: 'assistant', content: 'Halt! Who goes there?' },
          { role: 'user', content: 'A weary traveller from the coast, looking for a bed for the night.' },
        ];
        const second = sdk(s).chat.completions.create({ model: 'npc-guard', messages: history }).catch(() => undefined);
        await shooter.locator('#transcript li[data-side="A"]', { hasText: 'weary traveller' }).waitFor();
        await shooter.locator('#composer').pressSequentially('The inn is past the well', { delay: 5 });

        // tavern: a client waiting for a peer. bridge-7: a bot on a WebSocket and an SDK client.
        const tavern = handshake('tavern', undefined, s).catch(() => undefined);
        await a.next('ready');
        a.send({ type: 'message', content: 'hello?' });
        await a.next('accepted');
        const bridged = sdk(s).chat.completions.create({ model: 'bridge-7', messages: [{ role: 'user', content: 'Status report, please.' }] });
        await a.next('delivery');
        a.send({ type: 'message', content: 'All quiet.' });
        expect((await bridged).choices[0]!.message.content).toBe('All quiet.');

        await shooter.locator('#chart g.state.current[data-state="ACTIVE"]').waitFor();
        await shooter.emulateMedia({ colorScheme: 'dark' });
        await shooter.waitForTimeout(300); // one frame for the theme's repaint
        const conversation = join(shots, 'console-conversation.png');
        await shooter.screenshot({ path: conversation, fullPage: false });

        await shooter.emulateMedia({ colorScheme: 'light' });
        await shooter.goto(`${s.url}/#/`);
        await shooter.locator('#feed-status[data-state="live"]').waitFor();
        for (const id of ['npc-guard', 'tavern', 'bridge-7']) await shooter.locator(`tr[data-session="${id}"]`).waitFor();
        await shooter.locator('tr[data-session="bridge-7"] .badge', { hasText: 'ACTIVE' }).waitFor().catch(() => undefined);
        const sessions = join(shots, 'console-sessions.png');
        await shooter.screenshot({ path: sessions, clip: { x: 0, y: 0, width: 1280, height: 420 } });

        for (const file of [conversation, sessions]) expect((await stat(file)).size).toBeGreaterThan(10_000);
        for (const id of ['npc-guard', 'tavern', 'bridge-7']) await fetch(`${s.url}/v1/sessions/${id}`, { method: 'DELETE' });
        await second;
        await tavern;
      } finally {
        a.close();
        await shooter.close();
        await s.close();
      }
    },
    LONG,
  );
});

describe('the console with client API keys', () => {
  it(
    'loads without a key, and plays a side with the key the person enters',
    async () => {
      const s = await startTestServer({ ...settings, apiKeys: 'k-console' });
      const p = await browser.context.newPage();
      try {
        const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'k-console', maxRetries: 0, timeout: 200_000 });
        const id = uniqueId('keyed');
        const held = client.chat.completions.create({ model: id, messages: [{ role: 'user', content: 'ping' }] });
        await openSession(p, id, s);
        const key = p.getByLabel('API key');
        await key.waitFor();
        // Without the key the page says what is missing instead of trying.
        await p.getByRole('button', { name: 'Answer as B' }).click();
        await p.locator('#join-note', { hasText: 'Enter an API key first' }).waitFor();
        await key.fill('k-console');
        await key.press('Tab');
        await p.getByRole('button', { name: 'Answer as B' }).click();
        await p.getByLabel('Your reply as B').waitFor();
        await p.locator('#composer').pressSequentially('Keyed and ready.', { delay: 10 });
        await p.keyboard.press('Enter');
        expect((await held).choices[0]!.message.content).toBe('Keyed and ready.');
        // Ending the session carries the key too.
        p.once('dialog', (dialog) => void dialog.accept());
        await p.getByRole('button', { name: 'End session' }).click();
        await p.locator('#conv-notice', { hasText: `Session “${id}” ended.` }).waitFor();
        expect(s.service.ctx.sessions.get(id)).toBeUndefined();
      } finally {
        await p.close();
        await s.close();
      }
    },
    LONG,
  );
});

describe('the console with an admin key', () => {
  it(
    'hides the admin actions until the person gives the admin key, then downloads and ends with it',
    async () => {
      const s = await startTestServer({ ...settings, adminApiKey: 'admin-console' });
      const p = await browser.context.newPage();
      try {
        const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'x', maxRetries: 0, timeout: 200_000 });
        const id = uniqueId('admin');
        const held = client.chat.completions.create({ model: id, messages: [{ role: 'user', content: 'ping' }] });
        held.catch(() => undefined);
        await openSession(p, id, s);
        const key = p.getByLabel('Admin key');
        await key.waitFor();
        expect(await p.locator('#admin-actions').isHidden()).toBe(true);
        await key.fill('wrong');
        await p.getByRole('button', { name: 'Unlock' }).click();
        await p.waitForTimeout(300);
        expect(await p.locator('#admin-actions').isHidden()).toBe(true);
        await key.fill('admin-console');
        await p.getByRole('button', { name: 'Unlock' }).click();
        await p.locator('#admin-actions').waitFor({ state: 'visible' });
        expect(await p.locator('#admin-key-box').isHidden()).toBe(true);
        // The transcript download carries the key (a plain link could not).
        const download = p.waitForEvent('download');
        await p.locator('#download-md').click();
        const saved = await (await download).path();
        expect(saved).toBeTruthy();
        // Ending goes through the admin route: the held request gets 410.
        p.once('dialog', (dialog) => void dialog.accept());
        await p.getByRole('button', { name: 'End session' }).click();
        await p.locator('#conv-notice', { hasText: `Session “${id}” ended.` }).waitFor();
        await expect(held).rejects.toMatchObject({ status: 410 });
      } finally {
        await p.close();
        await s.close();
      }
    },
    LONG,
  );
});

describe('the console when the other side waits too long', () => {
  it(
    'warns while the wait runs out, says when it did, and keeps the reply for the retry',
    async () => {
      const s = await startTestServer({ handshakeTimeoutSeconds: '120', turnTimeoutSeconds: '4' });
      const p = await browser.context.newPage();
      try {
        const id = uniqueId('slow');
        const held = handshake(id, undefined, s);
        await openSession(p, id, s);
        await p.getByRole('button', { name: 'Answer as B' }).click();
        await p.getByLabel('Your reply as B').waitFor();
        await p.locator('#composer').pressSequentially('Who is it?', { delay: 10 });
        await p.keyboard.press('Enter');
        await held;

        const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [
          { role: 'user', content: 'ping' },
          { role: 'assistant', content: 'Who is it?' },
          { role: 'user', content: 'The baker.' },
        ];
        const first = sdk(s).chat.completions.create({ model: id, messages }).catch((err: unknown) => err);
        // 4 s is little: the page says so, in red, with the time left.
        await p.locator('#play-status.warn', { hasText: /A has been waiting a long time: 0:0\d left before its request times out\. Answer soon\./ }).waitFor();
        expect(((await first) as APIError).status).toBe(408);
        await p.locator('#play-status.warn', { hasText: 'A stopped waiting (its request timed out or went away)' }).waitFor();

        // The reply is kept: the client's retry picks it up.
        await p.locator('#composer').pressSequentially('Come in.', { delay: 10 });
        await p.keyboard.press('Enter');
        await p.locator('#play-status', { hasText: 'Your message is queued for A' }).waitFor();
        const retry = await sdk(s).chat.completions.create({ model: id, messages });
        expect(retry.choices[0]!.message.content).toBe('Come in.');
      } finally {
        await p.close();
        await s.close();
      }
    },
    LONG,
  );
});
