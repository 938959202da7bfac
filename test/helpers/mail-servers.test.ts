/**
 * Self-test of the private mail servers (test/helpers/mail-servers.ts) the email bridge tests run
 * against: mail sent through the SMTP server lands in dovecot, an IMAP client idling on the
 * INBOX is told at once, strangers are refused, and the IMAP server can be restarted in place.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImapFlow, type ExistsEvent } from 'imapflow';
import nodemailer from 'nodemailer';
import { MAIL_PASSWORD, startMailSystem, type MailSystem } from './mail-servers.js';

const BRIDGE = 'bridge@game.test';
const PLAYER = 'player@example.test';

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

describe('private mail servers', () => {
  let mail: MailSystem;

  beforeAll(async () => {
    mail = await startMailSystem();
  }, 30_000);

  afterAll(async () => {
    await mail?.destroy();
  }, 30_000);

  it('hands out connection URLs for the users', () => {
    expect(mail.users).toEqual(['bridge@game.test', 'player@example.test', 'stranger@elsewhere.test']);
    expect(mail.imapUrl(BRIDGE)).toBe(`imap://bridge%40game.test:${MAIL_PASSWORD}@127.0.0.1:${mail.imap.port}/INBOX`);
    expect(mail.smtpUrl(PLAYER)).toBe(`smtp://player%40example.test:${MAIL_PASSWORD}@127.0.0.1:${mail.smtp.port}`);
  });

  it('delivers authenticated SMTP mail into the IMAP inbox, and an idling client sees it arrive', async () => {
    const client = new ImapFlow({ host: mail.imap.host, port: mail.imap.port, secure: false, auth: { user: BRIDGE, pass: MAIL_PASSWORD }, logger: false });
    client.on('error', () => undefined);
    await client.connect();
    let messageId: string;
    let event: ExistsEvent;
    try {
      const lock = await client.getMailboxLock('INBOX');
      try {
        expect(client.mailbox && client.mailbox.exists).toBe(0);
        const arrived = new Promise<ExistsEvent>((resolve) => client.once('exists', resolve));
        const idling = client.idle();
        await within((async () => { while (!client.idling) await new Promise((r) => setTimeout(r, 10)); })(), 5_000, 'IDLE started');

        // As the bridge will: through the SMTP URL, authenticating as the sender.
        const transport = nodemailer.createTransport(mail.smtpUrl(PLAYER));
        try {
          const info = await transport.sendMail({ from: PLAYER, to: BRIDGE, subject: 'Opening move', text: 'e4\n' });
          expect(info.accepted).toEqual([BRIDGE]);
          messageId = info.messageId;
        } finally {
          transport.close();
        }

        event = await within(arrived, 10_000, 'EXISTS during IDLE');
        expect(event).toMatchObject({ path: 'INBOX', count: 1, prevCount: 0 });
        // Any command ends the IDLE; NOOP is the cheapest.
        await client.noop();
        await within(idling, 5_000, 'IDLE ended');
      } finally {
        lock.release();
      }
    } finally {
      await client.logout();
    }

    expect(mail.sent).toHaveLength(1);
    expect(mail.sent[0]).toMatchObject({ envelope: { from: PLAYER, to: [BRIDGE] }, authUser: PLAYER });

    const [received, ...rest] = await mail.inbox(BRIDGE);
    expect(rest).toEqual([]);
    expect(received).toMatchObject({ messageId, subject: 'Opening move', from: PLAYER, to: [BRIDGE], text: 'e4\n', references: [] });
    // Local delivery records the envelope at the top, as an MTA does.
    expect(received!.raw.startsWith(`Return-Path: <${PLAYER}>\r\nDelivered-To: ${BRIDGE}\r\n`)).toBe(true);
    // Reading the inbox leaves it as it was, for the bridge under test.
    expect(received!.flags).not.toContain('\\Seen');
  });

  it('sends raw replies with their threading headers, and waits for them', async () => {
    const raw = [
      `From: Bridge <${BRIDGE}>`,
      `To: ${PLAYER}`,
      'Subject: Re: Opening move',
      'Message-ID: <reply-1@game.test>',
      'In-Reply-To: <first@example.test>',
      'References: <root@example.test> <first@example.test>',
      'Content-Type: text/plain; charset=utf-8',
      '',
      'e5',
      '',
    ].join('\r\n');
    expect(await mail.send({ raw })).toBe('<reply-1@game.test>');
    const reply = await mail.waitForMail(PLAYER, (m) => m.inReplyTo === '<first@example.test>');
    expect(reply).toMatchObject({
      messageId: '<reply-1@game.test>',
      references: ['<root@example.test>', '<first@example.test>'],
      subject: 'Re: Opening move',
      from: BRIDGE,
      to: [PLAYER],
    });
    expect(mail.sent.at(-1)).toMatchObject({ envelope: { from: BRIDGE, to: [PLAYER] }, authUser: null });
  });

  it('refuses recipients that are not local users', async () => {
    const before = mail.sent.length;
    await expect(mail.send({ from: PLAYER, to: 'nobody@nowhere.test', subject: 'lost', text: 'x' })).rejects.toThrow(/550/);
    await expect(mail.send({ from: PLAYER, to: [BRIDGE, 'nobody@nowhere.test'], subject: 'half lost', text: 'x' })).rejects.toThrow(
      /nobody@nowhere\.test/,
    );
    // The second message still went to the recipient that was accepted.
    expect(mail.sent.slice(before).map((sent) => sent.envelope.to)).toEqual([[BRIDGE]]);
  });

  it('restarts the IMAP server on the same port with the same mail', async () => {
    await mail.restartImap();
    const subjects = (await mail.inbox(BRIDGE)).map((m) => m.subject);
    expect(subjects).toEqual(['Opening move', 'half lost']);
  });
});
