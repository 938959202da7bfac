/**
 * The email bridge against real mail servers: Debian's dovecot for IMAP (with IDLE) and an SMTP
 * server on the smtp-server package that delivers into dovecot's mailboxes
 * (test/helpers/mail-servers.ts). The game is side A on the official OpenAI SDK; the player is
 * side B, playing by mail through the bridge. Threads, HTML mail, quoted replies, bounces,
 * auto-replies, strangers, the inbound SMTP listener, and a delivery the SMTP server refuses
 * for a while are each walked end to end.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import OpenAI from 'openai';
import { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startMailSystem, type InboxMail, type MailSystem } from '../helpers/mail-servers.js';
import { freePort } from '../helpers/net.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { adminApi, until } from './support.js';

const BRIDGE = 'bridge@game.test';
const PLAYER = 'player@example.test';
const STRANGER = 'stranger@elsewhere.test';

const { get: admin } = adminApi();

describe('the email bridge', () => {
  let mail: MailSystem;
  let server: TestServer;
  let journal: string;
  let listenPort: number;
  let game: OpenAI;

  beforeAll(async () => {
    mail = await startMailSystem();
    journal = mkdtempSync(join(tmpdir(), 'motive-bridge-email-'));
    listenPort = await freePort();
    server = await startTestServer({
      journalPath: journal,
      enablePrometheus: 'true',
      metricsPublic: 'true',
      bridgeEmailImapUrl: mail.imapUrl(BRIDGE),
      bridgeEmailSmtpUrl: mail.smtpUrl(BRIDGE),
      bridgeEmailAddress: BRIDGE,
      bridgeEmailDomain: 'npc.game.test',
      bridgeEmailSmtpListen: `127.0.0.1:${listenPort}`,
      bridgeEmailAllow: `${PLAYER},npc-smith:example.test`,
      turnTimeoutSeconds: '60',
      logLevel: process.env['BRIDGE_TEST_LOG'] ?? 'silent',
    });
    game = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
    await until(async () => (await admin(server, '/admin/bridges')).body.data[0]?.connected === true, 'the email bridge is connected');
  }, 60_000);

  afterAll(async () => {
    await server?.close();
    await mail?.destroy();
    rmSync(journal, { recursive: true, force: true });
  });

  /** The player's mail from the bridge in answer to `inReplyTo`. */
  const replyTo = (inReplyTo: string, from = BRIDGE) => (m: InboxMail) => m.from === from && m.inReplyTo === inReplyTo;

  it('plays a session as a thread: the first mail joins, replies go out in the thread, quoted text and signatures are stripped', async () => {
    const model = 'npc-guard';
    const handshake = game.chat.completions.create({ model, messages: [{ role: 'system', content: 'You are a gate guard.' }, { role: 'user', content: 'begin' }] });
    const first = await mail.send({ from: PLAYER, to: BRIDGE, subject: '[session:npc-guard] At the gate', text: 'Good evening. May I pass?\n\n-- \nAlice, adventurer' });
    const opened = await handshake;
    expect(opened.choices[0]!.message.content).toBe('Good evening. May I pass?');
    expect(opened.model).toBe(model);

    // The game answers: it arrives in the player's mailbox as a reply in the thread.
    const answer = game.chat.completions.create({
      model,
      messages: [
        { role: 'system', content: 'You are a gate guard.' },
        { role: 'user', content: 'begin' },
        { role: 'assistant', content: 'Good evening. May I pass?' },
        { role: 'user', content: 'Halt! Who goes there? State your business & name.' },
      ],
    });
    const reply = await mail.waitForMail(PLAYER, replyTo(first), 20_000);
    expect(reply.subject).toBe('Re: [session:npc-guard] At the gate');
    expect(reply.text?.trim()).toBe('Halt! Who goes there? State your business & name.');
    expect(reply.html).toContain('Halt! Who goes there? State your business &amp; name.');
    expect(reply.references).toContain(first);
    expect(reply.messageId).toMatch(/^<motive\./);

    // The player answers that mail the way a mail program does: quoting it below an attribution line.
    await mail.send({
      from: PLAYER,
      to: BRIDGE,
      subject: 'Re: [session:npc-guard] At the gate',
      inReplyTo: reply.messageId,
      references: [first, reply.messageId!],
      text: 'A traveller from the east, seeking shelter.\n\nSent from my iPhone\n\nOn Fri, 4 Dec 2026 at 10:00, Gate <bridge@game.test> wrote:\n> Halt! Who goes there?\n',
    });
    expect((await answer).choices[0]!.message.content).toBe('A traveller from the east, seeking shelter.');

    const listed = await admin(server, `/admin/bridges/conversations?session=${model}`);
    expect(listed.body.data).toHaveLength(1);
    expect(listed.body.data[0]).toMatchObject({ bridge: 'email', session: model, side: 'B', peer: PLAYER, deliveries_received: 1, deliveries_sent: 1, queue_depth: 0, connected: true });
  }, 60_000);

  it('reads HTML-only mail as text, and never takes bounces, auto-replies or strangers as turns', async () => {
    const model = 'npc-html';
    const handshake = game.chat.completions.create({ model, messages: [{ role: 'user', content: 'begin' }] });
    const bounce = await mail.send({
      envelope: { from: '', to: [BRIDGE] },
      raw: [
        `From: Mail Delivery System <MAILER-DAEMON@example.test>`,
        `To: ${BRIDGE}`,
        `Subject: Undelivered Mail Returned to Sender [session:npc-html]`,
        `Message-ID: <bounce-1@example.test>`,
        `MIME-Version: 1.0`,
        `Content-Type: multipart/report; report-type=delivery-status; boundary="b1"`,
        ``,
        `--b1`,
        `Content-Type: text/plain`,
        ``,
        `This is the mail system. Your message could not be delivered.`,
        `--b1`,
        `Content-Type: message/delivery-status`,
        ``,
        `Reporting-MTA: dns; example.test`,
        ``,
        `Final-Recipient: rfc822; nobody@example.test`,
        `Action: failed`,
        `Status: 5.1.1`,
        `--b1--`,
        ``,
      ].join('\r\n'),
    });
    const outOfOffice = await mail.send({ from: PLAYER, to: BRIDGE, subject: 'Automatic reply: [session:npc-html] hello', text: 'I am away until Monday.', headers: { 'Auto-Submitted': 'auto-replied' } });
    const stranger = await mail.send({ from: STRANGER, to: BRIDGE, subject: '[session:npc-html] let me in', text: 'I am not on the list.' });
    await mail.send({
      from: PLAYER,
      to: BRIDGE,
      subject: '[session:npc-html] A letter',
      html: '<html><body><p>Dear guard,</p><p>I bring <b>bread</b> for the garrison.</p><div class="gmail_quote"><div>On Thu, Dec 3, 2026, Guard wrote:</div><blockquote>Old words</blockquote></div></body></html>',
    });
    const opened = await handshake;
    // The first turn is the person's letter: the bounce, the auto-reply and the stranger came before it and were not taken.
    expect(opened.choices[0]!.message.content).toBe('Dear guard,\n\nI bring bread for the garrison.');
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metrics).toMatch(/motiveproxy_bridge_messages_total\{bridge="email",direction="in",outcome="ignored_bounce"\} [1-9]/);
    expect(metrics).toMatch(/motiveproxy_bridge_messages_total\{bridge="email",direction="in",outcome="ignored_auto_reply"\} [1-9]/);
    expect(metrics).toMatch(/motiveproxy_bridge_messages_total\{bridge="email",direction="in",outcome="ignored_not_allowed"\} [1-9]/);
    // All of them were read (\Seen), and no answer went to the stranger (no backscatter).
    const inbox = await mail.inbox(BRIDGE);
    for (const id of [bounce, outOfOffice, stranger]) expect(inbox.find((m) => m.messageId === id)?.flags).toContain('\\Seen');
    expect((await mail.inbox(STRANGER)).length).toBe(0);
  }, 60_000);

  it('reconnects to the mailbox when the IMAP server restarts, and takes what arrived meanwhile', async () => {
    const model = 'npc-restart';
    const handshake = game.chat.completions.create({ model, messages: [{ role: 'user', content: 'begin' }] });
    await mail.restartImap();
    await mail.send({ from: PLAYER, to: BRIDGE, subject: `[session:${model}] Still there?`, text: 'Knock knock.' });
    expect((await handshake).choices[0]!.message.content).toBe('Knock knock.');
    await until(async () => (await admin(server, '/admin/bridges')).body.data[0]?.connected === true, 'the bridge is connected again');
  }, 60_000);

  it('takes mail sent straight to the proxy for <session>@domain on its SMTP listener', async () => {
    const model = 'npc-smith';
    const handshake = game.chat.completions.create({ model, messages: [{ role: 'user', content: 'begin' }] });
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: listenPort, secure: false, ignoreTLS: true });
    // Another address of the allowed domain may play this session (BRIDGE_EMAIL_ALLOW: npc-smith:example.test).
    await transport.sendMail({ from: 'someone@example.test', to: `${model}@npc.game.test`, subject: 'A sword', text: 'Can you forge me a sword?' });
    expect((await handshake).choices[0]!.message.content).toBe('Can you forge me a sword?');
    // A recipient of another domain is refused at RCPT.
    await expect(transport.sendMail({ from: PLAYER, to: 'someone@else.test', subject: 'x', text: 'x' })).rejects.toThrow(/550/);
    transport.close();
  }, 60_000);

  it('keeps a delivery the SMTP server refuses for a while, and sends it once when it accepts', async () => {
    // An SMTP server in front of the mail system that answers 451 to the first two attempts.
    let refusals = 2;
    const relayPort = await freePort();
    const relay = new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS'],
      onAuth: (_auth, _session, callback) => callback(null, { user: BRIDGE }),
      onData: (stream, session, callback) => {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          if (refusals > 0) {
            refusals--;
            return callback(Object.assign(new Error('try again later'), { responseCode: 451 }));
          }
          mail
            .send({ envelope: { from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '', to: session.envelope.rcptTo.map((r) => r.address) }, raw: Buffer.concat(chunks) })
            .then(() => callback(), (err: Error) => callback(err));
        });
      },
    });
    await new Promise<void>((resolve) => relay.listen(relayPort, '127.0.0.1', resolve));
    const other = await startTestServer({
      journalPath: mkdtempSync(join(tmpdir(), 'motive-bridge-email-retry-')),
      bridgeEmailSmtpUrl: `smtp://127.0.0.1:${relayPort}`,
      bridgeEmailAddress: 'other@game.test',
      bridgeEmailSmtpListen: `127.0.0.1:${await freePort()}`,
      bridgeEmailAllow: PLAYER,
      bridgeEmailSession: 'npc-retry',
      // Keys required: the bridge speaks with its own, and each side is bound to its key.
      apiKeys: 'game-key,bridge-key',
      bridgeApiKey: 'bridge-key',
    });
    try {
      const listen = (await admin(other, '/admin/bridges')).body.data[0].details.smtp_listener as string;
      const client = new OpenAI({ baseURL: `${other.url}/v1`, apiKey: 'game-key', maxRetries: 0, timeout: 60_000 });
      const handshake = client.chat.completions.create({ model: 'npc-retry', messages: [{ role: 'user', content: 'begin' }] });
      const transport = nodemailer.createTransport({ host: '127.0.0.1', port: Number(listen.split(':')[1]), secure: false, ignoreTLS: true });
      const first = (await transport.sendMail({ from: PLAYER, to: 'other@game.test', subject: 'Retry', text: 'Hello there.' })).messageId;
      transport.close();
      expect((await handshake).choices[0]!.message.content).toBe('Hello there.');
      const turn = client.chat.completions.create({
        model: 'npc-retry',
        messages: [
          { role: 'user', content: 'begin' },
          { role: 'assistant', content: 'Hello there.' },
          { role: 'user', content: 'General greetings.' },
        ],
      });
      // It waits for the player's next mail, which this test does not send.
      turn.catch(() => undefined);
      // Refused twice (back-off 2 s, then 4 s), then accepted: one mail in the player's box.
      const got = await mail.waitForMail(PLAYER, replyTo(first, 'other@game.test'), 30_000);
      expect(got.text?.trim()).toBe('General greetings.');
      expect(refusals).toBe(0);
      await new Promise((r) => setTimeout(r, 500));
      expect((await mail.inbox(PLAYER)).filter((m) => m.inReplyTo === first)).toHaveLength(1);
      const listed = await admin(other, '/admin/bridges/conversations');
      expect(listed.body.data[0]).toMatchObject({ deliveries_sent: 1, queue_depth: 0 });
    } finally {
      await other.close();
      await new Promise<void>((resolve) => relay.close(() => resolve()));
    }
  }, 60_000);
});
