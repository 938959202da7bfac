// The console's bridges view in headless Chromium against a real server running the email
// bridge with only its SMTP listener: mail comes in there (sent with nodemailer, as a mail program
// would), the game is the other side on the official OpenAI SDK, and replies go out through an
// SMTP server started here (smtp-server) that accepts the player's and refuses, with an answer
// holding HTML, a hostile peer's. The view asks for the admin key, shows the bridge connected
// with its queue, lists each conversation with its session, peer and deliveries, reads them
// again every 5 s only while it is shown, shows a peer, a session and an error holding HTML as
// text, ends a conversation after a confirmation, and lists it under the ended filter.
import nodemailer, { type SendMailOptions } from 'nodemailer';
import OpenAI from 'openai';
import type { Page } from 'playwright-core';
import { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/net.js';
import { launchBrowser, startTestServer, until, type Browser, type TestServer } from './support.js';

const ADMIN = 'admin-secret-for-the-console';
const LONG = 120_000;
const BRIDGE = 'bridge@game.test';
const PLAYER = 'player@example.test';
const SESSION = 'npc-bridge';
/**
 * A sender whose address (a quoted local part is allowed) and session name hold HTML. No SMTP
 * server takes such an address as a recipient, so its mail names a Reply-To, where replies go.
 */
const HOSTILE_PEER = '"<img src=x onerror=alert(1)>"@example.test';
const HOSTILE_REPLY_TO = 'keeper@example.test';
const HOSTILE_SESSION = '<b>npc</b>';
/** What the outgoing SMTP server answers for any recipient but the player: retryable, and holding HTML. */
const REFUSAL = '<img src=y onerror=alert(2)> mailbox busy';

let server: TestServer;
let browser: Browser;
let page: Page;
let game: OpenAI;
let listenPort: number;
/** The outgoing SMTP server: the recipients of the mails it accepted, and how many it refused. */
interface Relay {
  readonly server: SMTPServer;
  readonly port: number;
  readonly accepted: string[];
  refused: number;
}
let relay: Relay;
/** Every alert, confirm and prompt the page opened. */
const dialogs: string[] = [];
/** Game turns still waiting for the player's next mail when the test ends (the server's close ends them). */
const pending: Array<Promise<unknown>> = [];

async function startRelay(): Promise<Relay> {
  const port = await freePort();
  const state = { accepted: [] as string[], refused: 0 };
  const smtp: SMTPServer = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    logger: false,
    onRcptTo: (address, _session, callback) => {
      if (address.address === PLAYER) return callback();
      state.refused++;
      callback(Object.assign(new Error(REFUSAL), { responseCode: 451 }));
    },
    onData: (stream, session, callback) => {
      stream.resume();
      stream.on('end', () => {
        state.accepted.push(...session.envelope.rcptTo.map((r) => r.address));
        callback();
      });
    },
  });
  await new Promise<void>((resolve) => smtp.listen(port, '127.0.0.1', resolve));
  // The same object the callbacks count into.
  return Object.assign(state, { server: smtp, port });
}

beforeAll(async () => {
  relay = await startRelay();
  listenPort = await freePort();
  server = await startTestServer({
    adminApiKey: ADMIN,
    bridgeEmailSmtpUrl: `smtp://127.0.0.1:${relay.port}`,
    bridgeEmailAddress: BRIDGE,
    bridgeEmailSmtpListen: `127.0.0.1:${listenPort}`,
    bridgeEmailAllow: 'example.test',
    bridgeEmailSession: SESSION,
    turnTimeoutSeconds: '60',
  });
  game = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
  browser = await launchBrowser();
  page = await browser.page();
  page.on('dialog', (dialog) => {
    dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    if (dialog.type() === 'alert') void dialog.dismiss();
  });
  // The page's timers run on a clock the test can move on: the view's 5 s refresh without waiting 5 s.
  await page.clock.install();
}, LONG);

afterAll(async () => {
  await browser?.close();
  await server?.close();
  await Promise.allSettled(pending);
  await new Promise<void>((resolve) => (relay ? relay.server.close(() => resolve()) : resolve()));
}, LONG);

async function api(path: string, method = 'GET'): Promise<any> {
  const response = await fetch(`${server.url}${path}`, { method, headers: { authorization: `Bearer ${ADMIN}` } });
  expect(response.status).toBe(200);
  return response.json();
}

/** A mail to the bridge's SMTP listener; `raw` for a sender nodemailer would not write as given. */
async function mailIn(message: SendMailOptions): Promise<void> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: listenPort, secure: false, ignoreTLS: true });
  try {
    await transport.sendMail(message);
  } finally {
    transport.close();
  }
}

/**
 * Opens a conversation of `session`: the game's first request waits for a peer, the mail is
 * that peer's first turn; then the game answers, which is a delivery the bridge owes the peer.
 */
async function openConversation(session: string, mail: SendMailOptions, text: string): Promise<void> {
  const handshake = game.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'begin' }] });
  await mailIn(mail);
  expect((await handshake).choices[0]!.message.content).toBe(text);
  const turn = game.chat.completions.create({
    model: session,
    messages: [
      { role: 'user', content: 'begin' },
      { role: 'assistant', content: text },
      { role: 'user', content: 'Halt! Who goes there?' },
    ],
  });
  pending.push(turn.catch(() => undefined));
}

/** Answers the next dialog (a confirm) with OK. */
const acceptNextDialog = () => page.once('dialog', (dialog) => void dialog.accept());

/** Requests the page made to the bridges' admin routes. */
const bridgeReads: string[] = [];

describe('the console bridges view', () => {
  it(
    'shows the bridge connected with its queue, and a conversation with its session, peer and deliveries',
    async () => {
      await openConversation(SESSION, { from: PLAYER, to: BRIDGE, subject: 'At the gate', text: 'Good evening. May I pass?' }, 'Good evening. May I pass?');
      // The game's answer goes out to the player through the outgoing SMTP server.
      await until(() => relay.accepted.includes(PLAYER), 'the reply is sent to the player');
      const [conversation] = (await api('/admin/bridges/conversations')).data;
      expect(conversation).toMatchObject({ bridge: 'email', session: SESSION, side: 'B', peer: PLAYER, deliveries_received: 1, deliveries_sent: 1, queue_depth: 0 });

      page.on('request', (request) => {
        if (new URL(request.url()).pathname.startsWith('/admin/bridges')) bridgeReads.push(request.url());
      });
      await page.goto(`${server.url}/#/bridges`);
      await page.locator('#bridges-key-box').waitFor();
      await page.locator('#bridges-admin-key').fill(ADMIN);
      await page.locator('#bridges-key-box button[type="submit"]').click();
      const bridge = page.locator('#bridges-body tr[data-bridge="email"]');
      await bridge.waitFor();
      expect(await page.locator('.bar-nav a[aria-current="page"]').innerText()).toBe('Bridges');
      expect(await page.locator('#bridges-key-box').isHidden()).toBe(true);
      expect(await bridge.getAttribute('data-connected')).toBe('true');
      expect(await bridge.locator('td[data-label="Status"]').innerText()).toBe('connected');
      expect(await bridge.locator('.badge.bridge-connected').isVisible()).toBe(true);
      expect(await bridge.locator('th').innerText()).toContain(`smtp listener: 127.0.0.1:${listenPort}`);
      expect(await bridge.locator('td[data-label="Last error"]').innerText()).toBe('—');
      expect(await bridge.locator('td[data-label="Queue depth"]').innerText()).toBe('0');
      expect(await bridge.locator('td[data-label="Open conversations"]').innerText()).toBe('1');

      const row = page.locator(`#bridge-conversations-body tr[data-conversation="${conversation.id}"]`);
      await row.waitFor();
      expect(await page.locator('#bridge-conversations-body tr').count()).toBe(1);
      const link = row.locator('td[data-label="Session"] a');
      expect(await link.innerText()).toBe(SESSION);
      expect(await link.getAttribute('href')).toBe(`#/s/${SESSION}`);
      expect(await row.locator('th').innerText()).toContain(conversation.id);
      expect(await row.locator('td[data-label="Side"]').innerText()).toBe('B');
      expect(await row.locator('td[data-label="Peer"]').innerText()).toBe(PLAYER);
      expect(await row.locator('td[data-label="Opened"]').innerText()).not.toBe('—');
      expect(await row.locator('td[data-label="Received"]').innerText()).toBe('1');
      expect(await row.locator('td[data-label="Sent"]').innerText()).toBe('1');
      expect(await row.locator('td[data-label="Queue depth"]').innerText()).toBe('0');
      expect(await row.locator('td[data-label="Last error"]').innerText()).toBe('—');
      expect(await row.locator('td[data-label="State"]').innerText()).toBe('open');
      expect(await row.getByRole('button', { name: 'End' }).isVisible()).toBe(true);

      // The session's link opens its view; while the bridges view is hidden it reads nothing.
      await link.click();
      await page.locator('#conversation-view').waitFor();
      expect(await page.locator('#conv-id').innerText()).toBe(SESSION);
      expect(await page.locator('#bridges-view').isHidden()).toBe(true);
      const readsWhileShown = bridgeReads.length;
      await page.clock.fastForward(16_000);
      expect(bridgeReads.length).toBe(readsWhileShown);

      // Shown again, it reads at once, and again every 5 s.
      await page.goBack();
      await row.waitFor();
      await until(() => bridgeReads.length >= readsWhileShown + 2, 'the view reads the bridges and the conversations again');
      const readsOnReturn = bridgeReads.length;
      await page.clock.fastForward(5_000);
      await until(() => bridgeReads.length >= readsOnReturn + 2, 'the view reads them again after 5 s');
    },
    LONG,
  );

  it(
    'shows a peer, a session and an error holding HTML as text, ends a conversation after a confirmation, and lists it as ended',
    async () => {
      await openConversation(
        HOSTILE_SESSION,
        {
          envelope: { from: 'someone@example.test', to: [BRIDGE] },
          raw: [`From: ${HOSTILE_PEER}`, `Reply-To: ${HOSTILE_REPLY_TO}`, `To: ${BRIDGE}`, `Subject: [session:${HOSTILE_SESSION}] hello`, `Message-ID: <hostile-1@example.test>`, '', 'Let me in.', ''].join('\r\n'),
        },
        'Let me in.',
      );
      // The game's answer is refused by the outgoing SMTP server: the conversation owes it, with the refusal as its error.
      let hostile: Record<string, any> | undefined;
      await until(() => relay.refused > 0, 'the reply to the hostile peer is refused');
      for (const started = Date.now(); !hostile?.last_error && Date.now() - started < 15_000; await new Promise((r) => setTimeout(r, 50))) {
        hostile = (await api('/admin/bridges/conversations')).data.find((c: Record<string, any>) => c.session === HOSTILE_SESSION);
      }
      expect(hostile).toMatchObject({ peer: HOSTILE_PEER, queue_depth: 1, deliveries_sent: 0 });
      expect(hostile!.last_error).toContain(REFUSAL);
      const [health] = (await api('/admin/bridges')).data;
      expect(health.last_error).toContain(REFUSAL);

      // The next refresh shows it, without a reload.
      await page.clock.fastForward(5_000);
      const row = page.locator(`#bridge-conversations-body tr[data-conversation="${hostile!.id}"]`);
      await row.waitFor();
      expect(await row.locator('td[data-label="Peer"]').innerText()).toBe(HOSTILE_PEER);
      const link = row.locator('td[data-label="Session"] a');
      expect(await link.innerText()).toBe(HOSTILE_SESSION);
      expect(await link.getAttribute('href')).toBe(`#/s/${encodeURIComponent(HOSTILE_SESSION)}`);
      expect(await row.locator('.conversation-error').innerText()).toBe(hostile!.last_error);
      expect(await row.locator('td[data-label="Last error"]').innerText()).toMatch(/1 attempt/);
      expect(await row.locator('td[data-label="Queue depth"]').innerText()).toBe('1');
      const bridge = page.locator('#bridges-body tr[data-bridge="email"]');
      expect(await bridge.locator('.bridge-error').innerText()).toBe(health.last_error);
      expect(await bridge.locator('.bridge-error-at').innerText()).not.toBe('');
      expect(await bridge.locator('td[data-label="Queue depth"]').innerText()).toBe('1');
      expect(await bridge.locator('td[data-label="Open conversations"]').innerText()).toBe('2');
      expect(await page.locator('#bridges-view img, #bridges-view b').count()).toBe(0);
      expect(await page.evaluate("document.body.innerHTML.includes('<img src=')")).toBe(false);

      // End, after the page asks: gone from the open ones; the API lists it as ended by an admin.
      acceptNextDialog();
      await row.getByRole('button', { name: 'End' }).click();
      await row.waitFor({ state: 'detached' });
      expect(dialogs.at(-1)).toMatch(/^confirm: End the email conversation with "<img src=x onerror=alert\(1\)>"@example\.test \(session <b>npc<\/b>, side B\)\?.*1 delivery it still owes is sent first\.$/);
      expect(await page.locator('#bridges-notice').innerText()).toContain('is ended');
      const ended = (await api('/admin/bridges/conversations?state=ended')).data;
      expect(ended).toHaveLength(1);
      expect(ended[0]).toMatchObject({ id: hostile!.id, peer: HOSTILE_PEER, ended_because: 'ended by an admin' });
      expect((await api('/admin/bridges/conversations')).data.map((c: Record<string, any>) => c.session)).toEqual([SESSION]);
      expect(await page.locator('#bridge-conversations-body tr').count()).toBe(1);
      expect(await bridge.locator('td[data-label="Open conversations"]').innerText()).toBe('1');

      // Under the ended filter: the ended one, with when and why, and nothing to end.
      await page.locator('#bridge-conversations-state').selectOption('ended');
      const endedRow = page.locator(`#bridge-conversations-body tr[data-conversation="${hostile!.id}"][data-state="ended"]`);
      await endedRow.waitFor();
      expect(await page.locator('#bridge-conversations-body tr').count()).toBe(1);
      expect(await endedRow.locator('td[data-label="State"]').innerText()).toMatch(/^ended\n.+\nended by an admin$/);
      expect(await endedRow.getByRole('button', { name: 'End' }).count()).toBe(0);
      expect(await endedRow.locator('td[data-label="Peer"]').innerText()).toBe(HOSTILE_PEER);
      await page.locator('#bridge-conversations-state').selectOption('all');
      await page.locator('#bridge-conversations-body tr:nth-child(2)').waitFor();
      expect(await page.locator('#bridge-conversations-body tr[data-state="open"]').count()).toBe(1);

      expect(await page.locator('#bridges-view img, #bridges-view b').count()).toBe(0);
      // The only dialog was the page's own confirmation: no script of the peer or the error ran.
      expect(dialogs.filter((d) => d.startsWith('alert'))).toEqual([]);
    },
    LONG,
  );

  it(
    "shows the API's note when no bridge is configured",
    async () => {
      const bare = await startTestServer({ adminApiKey: ADMIN });
      try {
        await page.goto(`${bare.url}/#/bridges`);
        // Another origin: the key is asked for again (it is kept per tab and origin).
        await page.locator('#bridges-key-box').waitFor();
        await page.locator('#bridges-admin-key').fill(ADMIN);
        await page.locator('#bridges-key-box button[type="submit"]').click();
        await page.locator('#bridges-empty').waitFor();
        expect(await page.locator('#bridges-empty').innerText()).toBe('No bridge is configured (docs/bridges.md).');
        expect(await page.locator('#bridges-table').isHidden()).toBe(true);
        expect(await page.locator('#bridge-conversations').isHidden()).toBe(true);
      } finally {
        await page.goto('about:blank');
        await bare.close();
      }
    },
    LONG,
  );
});
