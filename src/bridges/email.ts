/**
 * The email bridge: a side of a session played by whoever answers the mail.
 *
 * In: a mailbox read over IMAP with IDLE (imapflow), and optionally an SMTP listener
 * (smtp-server) for a domain whose MX points at the proxy; each mail is read with mailparser.
 * Out: replies in the same thread through an SMTP server (nodemailer), as text and simple HTML.
 *
 * A session is a thread. A mail that answers one of the thread's messages (In-Reply-To or
 * References) is a turn of that thread's conversation; any other mail opens one, for the session
 * its address names (`<session>@BRIDGE_EMAIL_DOMAIN`), its subject's tag (`[session:<id>]`),
 * BRIDGE_EMAIL_SESSION, or else a session of its own (`mail-<8 hex>`), which the other side finds
 * in /v1/models. Only senders BRIDGE_EMAIL_ALLOW lets play the session are taken; bounces and
 * automatic replies (RFC 3834 Auto-Submitted, and the other marks responders set) never become
 * turns. What the person wrote is taken without the quoted message and signature; HTML mail is
 * turned into text.
 *
 * The ids of the proxy's own mails name their conversation and delivery
 * (`<motive.<conversation>.<index>@domain>`), so a reply to any of them finds its thread, and a
 * delivery sent again after a crash carries the same Message-ID as the first try.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import type { Readable } from 'node:stream';
import type { ImapFlow } from 'imapflow';
import type { ParsedMail } from 'mailparser';
import type { Transporter } from 'nodemailer';
import type { SMTPServer } from 'smtp-server';
import type { Side } from '../../machines/session.logic.js';
import type { Logger } from '../telemetry/logger.js';
import { ChannelError, type Channel, type ChannelHealth, type ChannelHost, type Conversation, type Progress, type QueuedDelivery } from './channel.js';
import { stripReply, textToHtml } from './email-text.js';

export interface EmailOptions {
  /** imap[s]://user:password@host[:port]/MAILBOX — the mailbox read for mail to the bridge ('' for none). */
  readonly imapUrl: string;
  /** smtp[s]://user:password@host[:port] — where replies are sent. */
  readonly smtpUrl: string;
  /** The bridge's own address: replies come from it, and mail to it opens a thread. */
  readonly address: string;
  /** Mail to `<session>@domain` plays that session ('' for none). */
  readonly domain: string;
  /** host:port of an SMTP listener for mail sent straight to the proxy ('' for none). */
  readonly listen: string;
  /** The side a thread plays. */
  readonly side: Side;
  /** Who may play: `address`, `domain` or `*`, each optionally for one session (`session:pattern`), comma-separated. */
  readonly allow: string;
  /** The session a new thread to the bridge's address plays ('' for a session of its own per thread). */
  readonly session: string;
  readonly tenant: string | null;
  /** Largest mail taken, in bytes. */
  readonly maxBytes: number;
  readonly logger: Logger;
  /** How often unread mail that could not be taken yet is tried again, in ms. */
  readonly retryMs?: number;
}

/** Where a new thread's session came from. */
type Routed = { session: string; how: 'address' | 'tag' | 'default' | 'thread' | 'own' } | null;

type Outcome = 'taken' | 'ignored' | 'retry';

const MAX_REFERENCES = 20;
const SUBJECT_TAG = /\[session:\s*([^\]\s]{1,256})\s*\]/i;
/** Senders whose mail is a bounce, never a person. */
const SYSTEM_SENDERS = /^(mailer-daemon|postmaster|mail-daemon|bounce[s]?|no-?reply)([+@]|$)/i;
const OURS = /^<?motive\.([A-Za-z0-9_-]+)\.(\d+)@/;

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64url');
const unb64 = (s: string): string => Buffer.from(s, 'base64url').toString('utf8');
const bare = (id: string): string => id.trim().replace(/^<|>$/g, '');
const domainOf = (address: string): string => address.slice(address.lastIndexOf('@') + 1).toLowerCase();

/** Parses BRIDGE_EMAIL_ALLOW: who may play which session. */
export function allowList(raw: string): (session: string, address: string) => boolean {
  const entries = raw
    .split(',')
    .map((e) => e.trim())
    .filter(Boolean)
    .map((entry) => {
      // `session:pattern`, where the pattern is an address (has @ after the colon) or a domain
      const colon = entry.lastIndexOf(':');
      const session = colon > 0 ? entry.slice(0, colon) : null;
      const pattern = (colon > 0 ? entry.slice(colon + 1) : entry).toLowerCase();
      return { session, pattern };
    });
  return (session, address) => {
    const who = address.toLowerCase();
    return entries.some(({ session: only, pattern }) => {
      if (only !== null && only !== session) return false;
      if (pattern === '*') return true;
      if (pattern.startsWith('@')) return domainOf(who) === pattern.slice(1);
      if (!pattern.includes('@')) return domainOf(who) === pattern;
      return who === pattern;
    });
  };
}

/** Why a mail is automatic (a bounce, an auto-reply, list mail), or null when a person sent it. */
export function automatic(mail: ParsedMail, from: string): string | null {
  const header = (name: string): string => {
    const value = mail.headers.get(name);
    if (value === undefined || value === null) return '';
    if (typeof value === 'string') return value;
    // Address headers come parsed, with their text; structured ones (Content-Type) with a value.
    if (typeof value === 'object' && 'text' in value) return String((value as { text: unknown }).text);
    if (typeof value === 'object' && 'value' in value) return String((value as { value: unknown }).value);
    return String(value);
  };
  const type = mail.headers.get('content-type') as { value?: string; params?: Record<string, string> } | undefined;
  if (type?.value?.toLowerCase() === 'multipart/report') return 'bounce';
  if (SYSTEM_SENDERS.test(from)) return 'bounce';
  // An empty Return-Path (`<>`) is how bounces are sent; an absent one says nothing.
  if (mail.headers.has('return-path') && /^(<\s*>)?$/.test(header('return-path').trim())) return 'bounce';
  const auto = header('auto-submitted').trim().toLowerCase();
  if (auto !== '' && !auto.startsWith('no')) return 'auto-reply';
  if (mail.headers.has('x-autoreply') || mail.headers.has('x-autorespond') || mail.headers.has('x-autoresponse')) return 'auto-reply';
  if (/^(auto[-_]reply|bulk|junk|list)$/i.test(header('precedence').trim())) return 'auto-reply';
  if (/\b(OOF|AutoReply)\b/i.test(header('x-auto-response-suppress')) && /^(automatic reply|auto(matic)?[- ]reply|out of office)/i.test(mail.subject ?? '')) return 'auto-reply';
  return null;
}

/** The Message-ID of delivery `index` of a conversation: the same on every try. */
export function messageIdOf(conversationId: string, index: number, address: string): string {
  return `<motive.${b64(conversationId)}.${index}@${domainOf(address)}>`;
}

export class EmailChannel implements Channel {
  readonly name = 'email' as const;
  private host: ChannelHost | null = null;
  private transport: Transporter | null = null;
  private imap: ImapFlow | null = null;
  private smtp: SMTPServer | null = null;
  private closed = false;
  private imapConnected = false;
  private lastError: string | null = null;
  private lastErrorAt: string | null = null;
  private scanning: Promise<void> = Promise.resolve();
  private rescan: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private readonly allowed: (session: string, address: string) => boolean;

  constructor(private readonly options: EmailOptions) {
    this.allowed = allowList(options.allow);
  }

  async start(host: ChannelHost): Promise<void> {
    // Started again after a close (in a cluster, this instance took the bridges back).
    this.closed = false;
    this.host = host;
    const nodemailer = await import('nodemailer');
    this.transport = nodemailer.createTransport(this.options.smtpUrl);
    if (this.options.listen) await this.listen();
    if (this.options.imapUrl) {
      const first = new Promise<void>((resolve) => (this.firstConnect = resolve));
      this.running = this.readMailbox();
      // Start waits for the first connection (or its failure), so that health is right at once.
      await Promise.race([first, new Promise((r) => setTimeout(r, 10_000).unref())]);
    }
  }

  private firstConnect: (() => void) | null = null;

  health(): ChannelHealth {
    const connected = (this.options.imapUrl === '' || this.imapConnected) && (this.options.listen === '' || this.smtp !== null) && this.transport !== null;
    return {
      connected,
      lastError: this.lastError,
      lastErrorAt: this.lastErrorAt,
      details: {
        address: this.options.address,
        ...(this.options.imapUrl ? { imap: this.imapConnected ? 'idle' : 'disconnected', mailbox: this.mailbox().mailbox } : {}),
        ...(this.options.listen ? { smtp_listener: this.options.listen } : {}),
      },
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.rescan) clearTimeout(this.rescan);
    await this.imap?.logout().catch(() => this.imap?.close());
    await this.running?.catch(() => undefined);
    if (this.smtp) await new Promise<void>((resolve) => this.smtp!.close(() => resolve()));
    this.transport?.close();
  }

  private failed(err: unknown, what: string): void {
    this.lastError = `${what}: ${(err as Error)?.message ?? String(err)}`;
    this.lastErrorAt = new Date().toISOString();
    this.options.logger.warn({ bridge: 'email', err: { message: (err as Error)?.message } }, `bridge email: ${this.lastError}`);
  }

  // ---- out -------------------------------------------------------------------------------

  async send(conversation: Conversation, delivery: QueuedDelivery, _progress: Progress): Promise<void> {
    const messageId = messageIdOf(conversation.id, delivery.index, this.options.address);
    const references = (conversation.data['references'] as string[] | undefined) ?? [];
    const inReplyTo = (conversation.data['last'] as string | undefined) ?? references.at(-1);
    try {
      await this.transport!.sendMail({
        from: this.options.address,
        to: (conversation.data['reply_to'] as string | undefined) ?? conversation.peer,
        subject: replySubject((conversation.data['subject'] as string | undefined) ?? ''),
        text: delivery.content,
        html: textToHtml(delivery.content),
        messageId,
        ...(inReplyTo ? { inReplyTo } : {}),
        ...(references.length ? { references: references.slice(-MAX_REFERENCES) } : {}),
        // Out-of-office responders need not answer a game's letters.
        headers: { 'X-Auto-Response-Suppress': 'OOF, AutoReply' },
      });
    } catch (err) {
      const code = (err as { responseCode?: number }).responseCode;
      // 5xx is the server's final word (no such mailbox, refused); anything else may pass later.
      const retryable = code === undefined || code < 500;
      this.failed(err, 'sending a reply failed');
      throw new ChannelError(`SMTP: ${(err as Error).message}`, retryable);
    }
    conversation.data = { ...conversation.data, references: [...references, messageId].slice(-MAX_REFERENCES), last: messageId };
    await this.host!.save(conversation);
  }

  async ended(conversation: Conversation, reason: string): Promise<void> {
    if (reason === 'stop') return;
    await this.notice(conversation, `The conversation (session '${conversation.session}') has ended; replies to this thread are no longer read.`).catch(() => undefined);
  }

  /** A short automatic reply in the thread (Auto-Submitted, so that responders do not answer it). */
  private async notice(to: { peer: string; data: Record<string, unknown> } | Conversation, text: string, reply?: { id: string; subject: string; address: string }): Promise<void> {
    const references = (to.data['references'] as string[] | undefined) ?? [];
    await this.transport!.sendMail({
      from: this.options.address,
      to: reply?.address ?? (to.data['reply_to'] as string | undefined) ?? to.peer,
      subject: replySubject(reply?.subject ?? (to.data['subject'] as string | undefined) ?? ''),
      text,
      ...(reply ? { inReplyTo: reply.id, references: [reply.id] } : references.length ? { inReplyTo: references.at(-1)!, references } : {}),
      headers: { 'Auto-Submitted': 'auto-replied' },
    });
  }

  // ---- in --------------------------------------------------------------------------------

  private mailbox(): { host: string; port: number; secure: boolean; user: string; pass: string; mailbox: string } {
    const url = new URL(this.options.imapUrl);
    const secure = url.protocol === 'imaps:';
    return {
      host: url.hostname,
      port: url.port ? Number(url.port) : secure ? 993 : 143,
      secure,
      user: decodeURIComponent(url.username),
      pass: decodeURIComponent(url.password),
      mailbox: decodeURIComponent(url.pathname.replace(/^\//, '')) || 'INBOX',
    };
  }

  /** Keeps an IMAP connection on the mailbox, idling; reconnects with back-off when it drops. */
  private async readMailbox(): Promise<void> {
    const { ImapFlow } = await import('imapflow');
    const where = this.mailbox();
    let failures = 0;
    while (!this.closed) {
      const client = new ImapFlow({ host: where.host, port: where.port, secure: where.secure, auth: { user: where.user, pass: where.pass }, logger: false, autoIdleDelay: 500 });
      this.imap = client;
      client.on('error', (err: Error) => this.failed(err, 'IMAP'));
      const gone = once(client, 'close').catch(() => undefined);
      try {
        await client.connect();
        await client.mailboxOpen(where.mailbox);
        this.imapConnected = true;
        failures = 0;
        this.lastError = null;
        this.firstConnect?.();
        this.options.logger.info({ bridge: 'email', mailbox: where.mailbox, host: where.host }, `bridge email: reading ${where.mailbox} on ${where.host} (IDLE)`);
        // New mail while idling: read it. The scan also takes what arrived while away.
        client.on('exists', () => this.scanSoon(client));
        this.scanSoon(client);
        await gone;
      } catch (err) {
        this.failed(err, `IMAP ${where.host}:${where.port}`);
        this.firstConnect?.();
        client.close();
      }
      this.imapConnected = false;
      if (this.closed) break;
      failures++;
      await new Promise((r) => setTimeout(r, Math.min(60_000, 1000 * 2 ** Math.min(failures - 1, 6))).unref());
    }
  }

  private scanSoon(client: ImapFlow): void {
    this.scanning = this.scanning.then(() => this.scan(client)).catch((err: unknown) => this.failed(err, 'reading the mailbox'));
  }

  /** Takes every unread mail in the mailbox, oldest first; one that cannot be taken yet stays unread. */
  private async scan(client: ImapFlow): Promise<void> {
    if (this.closed || !client.usable) return;
    const uids = (await client.search({ seen: false }, { uid: true })) || [];
    let later = false;
    for (const uid of uids) {
      const message = await client.fetchOne(String(uid), { source: true }, { uid: true });
      if (!message || !message.source) continue;
      const outcome = await this.take(message.source, []);
      if (outcome === 'retry') {
        later = true;
        continue;
      }
      await client.messageFlagsAdd(String(uid), ['\\Seen'], { uid: true });
    }
    if (later && !this.rescan) {
      this.rescan = setTimeout(() => {
        this.rescan = null;
        if (this.imap === client) this.scanSoon(client);
      }, this.options.retryMs ?? 30_000);
      this.rescan.unref();
    }
  }

  /** The SMTP listener: mail sent straight to the proxy; 451 asks the sender to try again later. */
  private async listen(): Promise<void> {
    const { SMTPServer } = await import('smtp-server');
    const [host, port] = splitHostPort(this.options.listen);
    const ours = (address: string): boolean => {
      const a = address.toLowerCase();
      return a === this.options.address.toLowerCase() || (this.options.domain !== '' && domainOf(a) === this.options.domain.toLowerCase());
    };
    const server = new SMTPServer({
      authOptional: true,
      disabledCommands: ['AUTH', 'STARTTLS'],
      size: this.options.maxBytes,
      // Mail from the internet: a bounded number of senders at once.
      maxClients: 50,
      banner: 'MotiveProxy email bridge',
      logger: false,
      onRcptTo: (address, _session, callback) => {
        if (ours(address.address)) return callback();
        const err = Object.assign(new Error(`<${address.address}>: no such mailbox here`), { responseCode: 550 });
        callback(err);
      },
      onData: (stream, session, callback) => {
        readAll(stream, this.options.maxBytes)
          .then(async (raw) => {
            if ((stream as Readable & { sizeExceeded?: boolean }).sizeExceeded) {
              return callback(Object.assign(new Error(`message larger than ${this.options.maxBytes} bytes`), { responseCode: 552 }));
            }
            const outcome = await this.take(raw, session.envelope.rcptTo.map((r) => r.address));
            if (outcome === 'retry') return callback(Object.assign(new Error('the session cannot take this now; try again later'), { responseCode: 451 }));
            callback();
          })
          .catch((err: unknown) => {
            this.failed(err, 'SMTP listener');
            callback(Object.assign(new Error('temporary failure'), { responseCode: 451 }));
          });
      },
    });
    server.on('error', (err) => this.failed(err, 'SMTP listener'));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.smtp = server;
    this.options.logger.info({ bridge: 'email', listen: this.options.listen }, `bridge email: receiving mail on ${this.options.listen}`);
  }

  /** One mail: a turn of its thread, ignored (with the reason counted), or left for later. */
  async take(raw: Buffer, envelopeTo: readonly string[]): Promise<Outcome> {
    const host = this.host!;
    const { simpleParser } = await import('mailparser');
    const mail = await simpleParser(raw, { skipImageLinks: true });
    const from = mail.from?.value[0]?.address?.toLowerCase() ?? '';
    const messageId = mail.messageId ? bare(mail.messageId) : `sha256:${createHash('sha256').update(raw).digest('hex').slice(0, 32)}`;
    if (from === '' || from === this.options.address.toLowerCase()) {
      host.ignored(from === '' ? 'no_sender' : 'own_mail', { message_id: messageId });
      return 'ignored';
    }
    const auto = automatic(mail, from);
    if (auto !== null) {
      host.ignored(auto === 'bounce' ? 'bounce' : 'auto_reply', { from, message_id: messageId, subject: mail.subject ?? '' });
      return 'ignored';
    }
    const asked = mail.replyTo?.value[0]?.address?.toLowerCase();
    const threadIds = [...(mail.inReplyTo ? [mail.inReplyTo] : []), ...[...asList(mail.references)].reverse()].map(bare);
    let conversation = this.threadOf(threadIds);
    let routed: Routed = conversation ? { session: conversation.session, how: 'thread' } : this.route(mail, envelopeTo);
    if (conversation && conversation.ended !== null) {
      // A reply to a thread whose session ended: a new thread of the same session, if allowed.
      routed = { session: conversation.session, how: 'thread' };
      conversation = undefined;
    }
    if (routed === null) {
      host.ignored('no_session', { from, message_id: messageId });
      return 'ignored';
    }
    if (!this.allowed(routed.session, from)) {
      // No answer to a stranger: a reply would be backscatter to forged senders.
      host.ignored('not_allowed', { from, session: routed.session, message_id: messageId });
      return 'ignored';
    }
    // Replies go to Reply-To only when it may play too: a forged From must not send the session elsewhere.
    const replyTo = asked && this.allowed(routed.session, asked) ? asked : from;
    const text = stripReply(mail.text ?? '');
    if (text === '') {
      host.ignored('empty', { from, message_id: messageId });
      return 'ignored';
    }
    const subject = baseSubject(mail.subject ?? '');
    if (!conversation) {
      const root = threadIds.at(-1) ?? messageId;
      conversation = await host.open({
        id: `email:${root}`,
        session: routed.session,
        tenant: this.options.tenant,
        side: this.options.side,
        peer: from,
        data: { subject, references: [...threadIds.reverse(), messageId].slice(-MAX_REFERENCES), last: messageId, reply_to: replyTo },
      });
    }
    const received = await host.receive({ conversation, messageId, text, from });
    if (received.ok) {
      // Replies go to whoever wrote last, in answer to what they wrote.
      const references = ((conversation.data['references'] as string[] | undefined) ?? []).filter((id) => id !== messageId);
      conversation.data = { ...conversation.data, references: [...references, messageId].slice(-MAX_REFERENCES), last: messageId, reply_to: replyTo };
      await host.save(conversation);
      return 'taken';
    }
    if (received.retryable) return 'retry';
    // Refused for good (another client holds the side, the session closed): the person is told.
    await this.notice(conversation, `Your message could not be passed on: ${received.message}`, { id: messageId, subject, address: replyTo }).catch((err: unknown) => this.failed(err, 'sending a notice'));
    return 'ignored';
  }

  /** The open conversation a mail answers, by the ids it refers to (newest first). */
  private threadOf(ids: readonly string[]): Conversation | undefined {
    const host = this.host!;
    for (const id of ids) {
      const ours = OURS.exec(id);
      if (ours) {
        const found = host.conversation(unb64(ours[1]!));
        if (found) return found;
      }
      const found = host.conversation(`email:${id}`);
      if (found) return found;
    }
    return undefined;
  }

  /** The session a new thread plays: its address, its subject tag, the default, or its own. */
  private route(mail: ParsedMail, envelopeTo: readonly string[]): Routed {
    const recipients = envelopeTo.length > 0 ? envelopeTo : [...addressesOf(mail.to), ...addressesOf(mail.cc), ...headerAddresses(mail, 'delivered-to'), ...headerAddresses(mail, 'x-original-to')];
    if (this.options.domain) {
      const domain = this.options.domain.toLowerCase();
      for (const r of recipients) {
        const a = r.toLowerCase();
        if (domainOf(a) === domain && a !== this.options.address.toLowerCase()) return { session: r.slice(0, r.lastIndexOf('@')), how: 'address' };
      }
    }
    const tag = SUBJECT_TAG.exec(mail.subject ?? '');
    if (tag) return { session: tag[1]!, how: 'tag' };
    if (this.options.session) return { session: this.options.session, how: 'default' };
    const seed = mail.messageId ?? `${mail.date?.toISOString()}${mail.subject}`;
    return { session: `mail-${createHash('sha256').update(seed).digest('hex').slice(0, 8)}`, how: 'own' };
  }
}

function asList(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : value.split(/\s+/).filter(Boolean);
}

function addressesOf(field: ParsedMail['to']): string[] {
  if (!field) return [];
  const list = Array.isArray(field) ? field : [field];
  return list.flatMap((f) => f.value.map((v) => v.address ?? '')).filter(Boolean);
}

function headerAddresses(mail: ParsedMail, name: string): string[] {
  const value = mail.headers.get(name);
  if (typeof value !== 'string') return [];
  return [...value.matchAll(/[^\s<>,;"]+@[^\s<>,;"]+/g)].map((m) => m[0]);
}

/** The subject without its Re:/Fwd:/AW: prefixes and session tag's surroundings kept as is. */
export function baseSubject(subject: string): string {
  return subject.replace(/^(\s*(re|fwd?|aw|sv|vs|antw)\s*(\[\d+\])?\s*:\s*)+/i, '').trim();
}

function replySubject(subject: string): string {
  return subject ? `Re: ${subject}` : 'Re: (no subject)';
}

function splitHostPort(listen: string): [string, number] {
  const i = listen.lastIndexOf(':');
  const host = i > 0 ? listen.slice(0, i).replace(/^\[|\]$/g, '') : '0.0.0.0';
  return [host, Number(i >= 0 ? listen.slice(i + 1) : listen)];
}

/** The message, up to `max` bytes: beyond it the rest is read and dropped (the sender gets 552). */
async function readAll(stream: Readable, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of stream) {
    bytes += (chunk as Buffer).length;
    if (bytes <= max) chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}
