/**
 * What the email bridge reads of a mail: the person's own words without the quote and the
 * signature their mail program added (in the shapes the common programs write them), who may
 * play which session, and which mails are automatic (bounces, auto-replies).
 */
import { simpleParser } from 'mailparser';
import { describe, expect, it } from 'vitest';
import { stripReply, textToHtml } from '../../src/bridges/email-text.js';
import { allowList, automatic, baseSubject, messageIdOf } from '../../src/bridges/email.js';

describe('stripReply', () => {
  it('drops a Gmail quote below its attribution line', () => {
    expect(stripReply('I will wait by the well.\n\nOn Fri, Dec 4, 2026 at 10:00 AM Guard <npc@game.example> wrote:\n> Halt!\n> Who goes there?\n')).toBe('I will wait by the well.');
  });

  it('drops an attribution line that the mail program wrapped over two lines', () => {
    expect(stripReply('Yes.\n\nOn Fri, 4 Dec 2026 at 10:00, The Gate Guard of the North <npc@game.example>\nwrote:\n> Halt!')).toBe('Yes.');
  });

  it("drops Outlook's original-message block and its From/Sent header block", () => {
    expect(stripReply('Agreed.\r\n\r\n-----Original Message-----\r\nFrom: Guard\r\nSent: Friday\r\n\r\nHalt!')).toBe('Agreed.');
    expect(stripReply('Agreed.\n\n________________________________\nFrom: Guard <npc@game.example>\nSent: Friday, December 4, 2026 10:00\nTo: Alice\nSubject: Gate\n\nHalt!')).toBe('Agreed.');
    expect(stripReply('Agreed.\n\nFrom: Guard <npc@game.example>\nSent: Friday\nTo: Alice\n\nHalt!')).toBe('Agreed.');
  });

  it('keeps a line that merely starts with "From:" when no header block follows', () => {
    expect(stripReply('From: the east, as I said.\nI seek shelter.')).toBe('From: the east, as I said.\nI seek shelter.');
  });

  it('drops signatures: the "-- " delimiter and mobile stock lines', () => {
    expect(stripReply('See you at dawn.\n\n-- \nAlice\nAdventurer, 3rd class')).toBe('See you at dawn.');
    expect(stripReply('See you at dawn.\n\nSent from my iPhone')).toBe('See you at dawn.');
    expect(stripReply('See you at dawn.\n\nGet Outlook for Android')).toBe('See you at dawn.');
  });

  it('keeps the lines of an inline reply and drops the quoted ones between them', () => {
    expect(stripReply('> Who goes there?\nAlice.\n> What is your business?\nTrade.')).toBe('Alice.\nTrade.');
  });

  it('recognises attribution lines in other languages', () => {
    expect(stripReply('Oui.\n\nLe ven. 4 déc. 2026 à 10:00, Garde <npc@game.example> a écrit :\n> Halte !')).toBe('Oui.');
    expect(stripReply('Ja.\n\nAm Fr., 4. Dez. 2026 um 10:00 Uhr schrieb Wache <npc@game.example>:\n> Halt!')).toBe('Ja.');
  });

  it('leaves a mail without quote or signature as it is, trimmed', () => {
    expect(stripReply('\n  Hello,\n\nis anyone there?  \n')).toBe('Hello,\n\nis anyone there?');
  });
});

describe('textToHtml', () => {
  it('escapes everything and keeps paragraphs and line breaks', () => {
    const html = textToHtml('Halt! <b>Who</b> goes "there"?\nName & business.\n\nSecond paragraph.');
    expect(html).toContain('<p>Halt! &lt;b&gt;Who&lt;/b&gt; goes &quot;there&quot;?<br>\nName &amp; business.</p>');
    expect(html).toContain('<p>Second paragraph.</p>');
  });
});

describe('allowList', () => {
  const allowed = allowList('npc-guard:alice@example.com, npc-guard:Studio.Example, @guild.example, npc-open:*');

  it('takes addresses and domains for one session, and bare entries for every session', () => {
    expect(allowed('npc-guard', 'Alice@Example.com')).toBe(true);
    expect(allowed('npc-guard', 'bob@studio.example')).toBe(true);
    expect(allowed('npc-guard', 'bob@example.com')).toBe(false);
    expect(allowed('npc-smith', 'alice@example.com')).toBe(false);
    expect(allowed('npc-smith', 'carol@guild.example')).toBe(true);
    expect(allowed('npc-open', 'anyone@anywhere.test')).toBe(true);
  });

  it('allows nobody when empty', () => {
    expect(allowList('')('npc-guard', 'alice@example.com')).toBe(false);
  });
});

describe('automatic', () => {
  const parse = (headers: string, body = 'text') => simpleParser(`${headers}\r\n\r\n${body}`);

  it('names bounces and automatic replies, and passes a person’s mail', async () => {
    expect(automatic(await parse('From: MAILER-DAEMON@example.test\r\nSubject: Undelivered'), 'mailer-daemon@example.test')).toBe('bounce');
    expect(automatic(await parse('From: a@x.test\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=x', '--x--'), 'a@x.test')).toBe('bounce');
    expect(automatic(await parse('From: a@x.test\r\nReturn-Path: <>'), 'a@x.test')).toBe('bounce');
    expect(automatic(await parse('From: a@x.test\r\nAuto-Submitted: auto-replied'), 'a@x.test')).toBe('auto-reply');
    expect(automatic(await parse('From: a@x.test\r\nAuto-Submitted: auto-generated'), 'a@x.test')).toBe('auto-reply');
    expect(automatic(await parse('From: a@x.test\r\nPrecedence: bulk'), 'a@x.test')).toBe('auto-reply');
    expect(automatic(await parse('From: a@x.test\r\nX-Autoreply: yes'), 'a@x.test')).toBe('auto-reply');
    expect(automatic(await parse('From: a@x.test\r\nAuto-Submitted: no\r\nReturn-Path: <a@x.test>'), 'a@x.test')).toBeNull();
    expect(automatic(await parse('From: a@x.test\r\nSubject: Hello'), 'a@x.test')).toBeNull();
  });
});

describe('message ids and subjects', () => {
  it("gives a delivery the same Message-ID on every try, naming its conversation", () => {
    const id = messageIdOf('email:abc@example.test', 3, 'npc@game.example');
    expect(id).toBe(messageIdOf('email:abc@example.test', 3, 'npc@game.example'));
    expect(id).toMatch(/^<motive\.[A-Za-z0-9_-]+\.3@game\.example>$/);
    expect(id).not.toBe(messageIdOf('email:abc@example.test', 4, 'npc@game.example'));
  });

  it('strips reply and forward prefixes in several languages', () => {
    expect(baseSubject('Re: RE: Fwd: At the gate')).toBe('At the gate');
    expect(baseSubject('AW: SV: At the gate')).toBe('At the gate');
    expect(baseSubject('Re[2]: At the gate')).toBe('At the gate');
    expect(baseSubject('Regarding the gate')).toBe('Regarding the gate');
  });
});
