/**
 * The SMS bridge's channel against a double of Twilio (test/helpers/twilio-double.ts): its
 * webhooks served by a real listening Fastify server and called the way Twilio calls them
 * (signed, form-encoded), and its sends made with the twilio package through the double's
 * Messages API. The host here is a small recording one; the real host (src/bridges/host.ts) is
 * tested with the channels in its own tests.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import twilio from 'twilio';
import { afterEach, describe, expect, it } from 'vitest';
import { ChannelError, type Conversation, type QueuedDelivery } from '../../src/bridges/channel.js';
import { SMS_INBOUND_PATH, SMS_STATUS_PATH, SmsChannel, splitSms, type SmsOptions } from '../../src/bridges/sms.js';
import { freePort } from '../helpers/net.js';
import { segmentsOf, sendInbound, startTwilioDouble, twilioSignature, type TwilioDouble } from '../helpers/twilio-double.js';
import { messageOf, RecordingHost } from './support.js';

const SERVICE_NUMBER = '+15005550006';
const PERSON = '+15551230001';
const CONFIGURED = '+15551230002';
const STRANGER = '+15551239999';
const silent = { info() {}, warn() {}, error() {}, debug() {} };

interface Rig {
  readonly twilio: TwilioDouble;
  readonly channel: SmsChannel;
  readonly host: RecordingHost;
  readonly app: FastifyInstance;
  readonly publicUrl: string;
  readonly statuses: string[];
  inbound(from: string, body: string, extra?: { MessageSid?: string; signature?: string | null }): ReturnType<typeof sendInbound>;
}

const closers: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

/** A Fastify app that, like the service's, has no body parsers but its own (no form parser). */
async function listeningApp(port: number, register: (app: FastifyInstance) => void): Promise<FastifyInstance> {
  const app = Fastify();
  app.removeAllContentTypeParsers();
  register(app);
  await app.listen({ port, host: '127.0.0.1' });
  closers.push(() => app.close());
  return app;
}

async function rig(overrides: Partial<SmsOptions> = {}, double?: TwilioDouble): Promise<Rig> {
  const twilioDouble = double ?? (await startTwilioDouble());
  if (!double) closers.push(() => twilioDouble.close());
  const port = await freePort();
  const publicUrl = `http://127.0.0.1:${port}`;
  const statuses: string[] = [];
  const channel = new SmsChannel({
    accountSid: twilioDouble.accountSid,
    authToken: twilioDouble.authToken,
    from: SERVICE_NUMBER,
    publicUrl,
    side: 'B',
    numbers: { [CONFIGURED]: 'standing-order' },
    allow: ['*'],
    joinKeyword: 'JOIN',
    tenant: null,
    apiBaseUrl: twilioDouble.url,
    logger: silent,
    onStatus: (status) => statuses.push(status),
    inboundRetryMs: 1_000,
    ...overrides,
  });
  const host = new RecordingHost('sms');
  const app = await listeningApp(port, (a) => channel.routes(a));
  await channel.start(host);
  closers.push(() => channel.close());
  return {
    twilio: twilioDouble,
    channel,
    host,
    app,
    publicUrl,
    statuses,
    inbound: (from, body, extra = {}) =>
      sendInbound(publicUrl + SMS_INBOUND_PATH, twilioDouble.authToken, { From: from, To: SERVICE_NUMBER, Body: body, ...(extra.MessageSid ? { MessageSid: extra.MessageSid } : {}) }, extra.signature === undefined ? {} : { signature: extra.signature }),
  };
}

const delivery = (content: string, parts?: number): QueuedDelivery => ({ index: 0, content, attempts: 0, notBefore: 0, ...(parts === undefined ? {} : { parts }) });

/** Resolves with the thrown ChannelError (fails if it resolved). */
async function channelError(promise: Promise<unknown>): Promise<ChannelError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(ChannelError);
    return err as ChannelError;
  }
  throw new Error('expected the send to fail');
}

describe('the double signs as Twilio does', () => {
  it('its signature is the example of Twilio’s webhook-security page, and what twilio.validateRequest accepts', () => {
    const params = { CallSid: 'CA1234567890ABCDE', Caller: '+12349013030', Digits: '1234', From: '+12349013030', To: '+18005551212' };
    const url = 'https://mycompany.com/myapp.php?foo=1&bar=2';
    // The worked example of Twilio's webhook-security page (auth token 12345).
    expect(twilioSignature('12345', url, params)).toBe('0/KCTR6DLpKmkAf8muzZqo1nDgQ=');
    expect(twilio.validateRequest('12345', twilioSignature('12345', url, params), url, params)).toBe(true);
    expect(twilio.validateRequest('12345', twilioSignature('12345', url, { ...params, Digits: '1235' }), url, params)).toBe(false);
  });
});

describe('splitSms', () => {
  it('keeps a text that fits ten segments whole, and counts extension characters as two septets', () => {
    expect(splitSms('Hello there')).toEqual(['Hello there']);
    expect(splitSms('  padded \n')).toEqual(['padded']);
    expect(splitSms('   ')).toEqual([]);
    const gsm = 'a'.repeat(1530);
    expect(splitSms(gsm)).toEqual([gsm]);
    expect(splitSms('a'.repeat(1531))).toHaveLength(2);
    // € is an escape and a character: 76 fit in a segment of 153 septets without splitting one.
    expect(splitSms('€'.repeat(760))).toHaveLength(1);
    expect(splitSms('€'.repeat(761)).map((p) => p.length)).toEqual([760, 1]);
  });

  it('sends a text with a character outside GSM-7 as UCS-2, 670 code units a part, never splitting a surrogate pair', () => {
    expect(splitSms('ж'.repeat(670))).toHaveLength(1);
    expect(splitSms('ж'.repeat(671)).map((p) => p.length)).toEqual([670, 1]);
    const emoji = '😀'.repeat(400);
    const parts = splitSms(emoji);
    expect(parts.join('')).toBe(emoji);
    for (const part of parts) {
      expect(part).not.toMatch(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/);
      expect(segmentsOf(part)).toMatchObject({ encoding: 'UCS-2' });
      expect(segmentsOf(part).segments).toBeLessThanOrEqual(10);
    }
  });

  it('ends parts at whitespace, each within ten segments, and loses no word', () => {
    const words = Array.from({ length: 700 }, (_, i) => `word${i}`);
    const text = words.join(' ');
    const parts = splitSms(text);
    expect(parts.length).toBeGreaterThan(2);
    expect(parts.join(' ')).toBe(text);
    for (const part of parts) {
      expect(part).toMatch(/^word\d+( word\d+)*$/);
      expect(segmentsOf(part).segments).toBeLessThanOrEqual(10);
    }
  });

  it('gives a GSM-7 stretch its own part rather than sending it all as UCS-2', () => {
    const text = `${'plain '.repeat(250).trim()} ✓ done`;
    const parts = splitSms(text);
    expect(parts).toHaveLength(2);
    expect(segmentsOf(parts[0]!).encoding).toBe('GSM-7');
    expect(parts.join(' ')).toBe(text);
  });
});

describe('webhook signatures', () => {
  it('answers a correctly signed inbound text with 200 TwiML, and one without or with a wrong signature with 403', async () => {
    const { inbound, host } = await rig();

    const missing = await inbound(STRANGER, 'HELP', { signature: null });
    expect(missing.status).toBe(403);
    expect(missing.contentType).toMatch(/^application\/json/);
    expect(JSON.parse(missing.body)).toEqual({ error: { message: expect.stringMatching(/no X-Twilio-Signature/), type: 'invalid_request_error', param: null, code: 'invalid_signature' } });

    const wrong = await inbound(STRANGER, 'HELP', { signature: twilioSignature('not-the-token', 'http://x', {}) });
    expect(wrong.status).toBe(403);
    expect(JSON.parse(wrong.body).error.code).toBe('invalid_signature');

    const good = await inbound(STRANGER, 'HELP');
    expect(good.status).toBe(200);
    expect(good.contentType).toMatch(/^text\/xml/);
    expect(good.body).toMatch(/^<\?xml version="1.0" encoding="UTF-8"\?><Response><Message>.+<\/Message><\/Response>$/);
    // Refused requests reached nothing.
    expect(host.opened).toEqual([]);
    expect(host.ignoredCalls).toEqual([]);
  });

  it('refuses a status callback whose parameters were changed after signing', async () => {
    const { publicUrl, twilio: double, channel } = await rig();
    const url = publicUrl + SMS_STATUS_PATH;
    const params = { MessageSid: `SM${'1'.repeat(32)}`, MessageStatus: 'delivered', To: PERSON };
    const signature = twilioSignature(double.authToken, url, params);
    const tampered = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-twilio-signature': signature }, body: new URLSearchParams({ ...params, MessageStatus: 'failed' }).toString() });
    expect(tampered.status).toBe(403);
    const genuine = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-twilio-signature': signature }, body: new URLSearchParams(params).toString() });
    expect(genuine.status).toBe(204);
    expect(channel.statuses().counts).toEqual({ delivered: 1 });
  });
});

describe('inbound texts', () => {
  it('refuses JOIN from a number neither configured nor allowed, and opens nothing', async () => {
    const { inbound, host } = await rig({ allow: [] });
    const refused = await inbound(PERSON, 'JOIN night-shift');
    expect(refused.status).toBe(200);
    expect(messageOf(refused.body)).toBe('This number may not join sessions here.');
    expect(host.opened).toEqual([]);
    expect(host.ignoredCalls).toEqual([expect.objectContaining({ reason: 'not_allowed' })]);
    // A configured number still plays its session.
    const configured = await inbound(CONFIGURED, 'JOIN standing-order');
    expect(messageOf(configured.body)).toMatch(/session standing-order/);
  });

  it('JOIN <session> opens the conversation and confirms; later texts are turns; JOIN of another session ends the first', async () => {
    const { inbound, host } = await rig();
    const joined = await inbound(PERSON, 'join  night-shift');
    expect(joined.status).toBe(200);
    expect(messageOf(joined.body)).toMatch(/session night-shift \(side B\).*STOP/);
    expect(host.opened).toEqual([{ id: `sms:${PERSON}`, session: 'night-shift', tenant: null, side: 'B', peer: PERSON }]);

    const turn = await inbound(PERSON, 'Who is on duty tonight?', { MessageSid: `SM${'a'.repeat(32)}` });
    expect(turn.status).toBe(200);
    expect(turn.body).toBe('<?xml version="1.0" encoding="UTF-8"?><Response></Response>');
    expect(host.received).toHaveLength(1);
    expect(host.received[0]).toMatchObject({ messageId: `SM${'a'.repeat(32)}`, text: 'Who is on duty tonight?', from: PERSON, conversation: { id: `sms:${PERSON}`, session: 'night-shift' } });

    await inbound(PERSON, 'JOIN day-shift');
    expect(host.endings).toEqual([{ id: `sms:${PERSON}`, reason: 'joined another session' }]);
    expect(host.conversation(`sms:${PERSON}`)).toMatchObject({ session: 'day-shift', ended: null });
  });

  it('a configured number without a conversation opens one for its session with its first text, which is a turn', async () => {
    const { inbound, host } = await rig();
    const answer = await inbound(CONFIGURED, 'Reporting in.');
    expect(answer.status).toBe(200);
    expect(messageOf(answer.body)).toBeNull();
    expect(host.opened).toEqual([{ id: `sms:${CONFIGURED}`, session: 'standing-order', tenant: null, side: 'B', peer: CONFIGURED }]);
    expect(host.received.map((r) => [r.conversation.id, r.text])).toEqual([[`sms:${CONFIGURED}`, 'Reporting in.']]);
  });

  it('STOP ends the conversation and nothing follows; a configured number stays stopped until START, which takes it back', async () => {
    const { inbound, host } = await rig();
    await inbound(CONFIGURED, 'first');
    const stop = await inbound(CONFIGURED, 'stop');
    expect(stop.status).toBe(200);
    expect(messageOf(stop.body)).toBeNull();
    expect(host.endings).toEqual([{ id: `sms:${CONFIGURED}`, reason: 'stop' }]);

    const after = await inbound(CONFIGURED, 'are you there?');
    expect(messageOf(after.body)).toBeNull();
    expect(host.received.map((r) => r.text)).toEqual(['first']);
    expect(host.ignoredCalls).toEqual([{ reason: 'stopped', details: { from: CONFIGURED } }]);

    const start = await inbound(CONFIGURED, 'START');
    expect(messageOf(start.body)).toMatch(/back in session standing-order/);
    expect(host.conversation(`sms:${CONFIGURED}`)).toMatchObject({ session: 'standing-order', ended: null });
    await inbound(CONFIGURED, 'back again');
    expect(host.received.map((r) => r.text)).toEqual(['first', 'back again']);
  });

  it('"yes" and "join me …" in an open conversation are turns, not keywords', async () => {
    const { inbound, host } = await rig();
    await inbound(PERSON, 'JOIN quiz');
    await inbound(PERSON, 'Yes');
    await inbound(PERSON, 'Join me at the lighthouse');
    expect(host.received.map((r) => r.text)).toEqual(['Yes', 'Join me at the lighthouse']);
    expect(host.opened.map((o) => o.session)).toEqual(['quiz']);
  });

  it('HELP answers how to join and leave, naming the session when in one', async () => {
    const { inbound, host } = await rig();
    const help = messageOf((await inbound(STRANGER, 'help')).body);
    expect(help).toMatch(/JOIN &lt;session&gt;/);
    expect(help).toMatch(/STOP/);
    await inbound(PERSON, 'JOIN lighthouse');
    expect(messageOf((await inbound(PERSON, 'INFO')).body)).toMatch(/^You are in session lighthouse\. /);
    expect(host.received).toEqual([]);
  });

  it('a stranger without JOIN is not a turn: counted as ignored and told how to join', async () => {
    const { inbound, host } = await rig();
    const answer = await inbound(STRANGER, 'hello?');
    expect(answer.status).toBe(200);
    expect(messageOf(answer.body)).toMatch(/Text JOIN &lt;session&gt; to join/);
    expect(host.ignoredCalls).toEqual([{ reason: 'stranger', details: { from: STRANGER } }]);
    expect(host.opened).toEqual([]);
    expect(host.received).toEqual([]);
  });

  it('a refusal that will not pass is told to the person; one that may pass is offered again until taken', async () => {
    const { inbound, host } = await rig();
    await inbound(PERSON, 'JOIN relay');
    host.answers.push({ ok: false, code: 'message_too_long', message: 'The message is longer than the session takes.', retryable: false });
    const refused = await inbound(PERSON, 'x'.repeat(50));
    expect(messageOf(refused.body)).toBe('Not passed on: The message is longer than the session takes.');

    host.answers.push({ ok: false, code: 'bridge_unavailable', message: 'The bridge is not connected to the session.', retryable: true });
    const sid = `SM${'b'.repeat(32)}`;
    const retried = await inbound(PERSON, 'second try', { MessageSid: sid });
    expect(retried.status).toBe(200);
    expect(messageOf(retried.body)).toBeNull();
    expect(host.received.slice(1).map((r) => [r.messageId, r.text])).toEqual([
      [sid, 'second try'],
      [sid, 'second try'],
    ]);
  });

  it('a refusal that keeps failing past the retry time asks the person to send it again', async () => {
    const { inbound, host } = await rig({ inboundRetryMs: 300 });
    await inbound(PERSON, 'JOIN relay');
    for (let i = 0; i < 10; i++) host.answers.push({ ok: false, code: 'rate_limited', message: 'Too many messages.', retryable: true });
    const answer = await inbound(PERSON, 'hello');
    expect(answer.status).toBe(200);
    expect(messageOf(answer.body)).toBe('Not passed on yet (Too many messages.). Please send it again in a minute.');
    expect(host.received.length).toBeGreaterThanOrEqual(2);
  });

  it('an instance that does not run the bridges passes a webhook on to the one that does', async () => {
    const running = await rig();
    const port = await freePort();
    const standby = new SmsChannel({
      accountSid: running.twilio.accountSid,
      authToken: running.twilio.authToken,
      from: SERVICE_NUMBER,
      publicUrl: running.publicUrl, // one public URL for the cluster, behind its load balancer
      side: 'B',
      numbers: {},
      allow: ['*'],
      joinKeyword: 'JOIN',
      tenant: null,
      logger: silent,
    });
    await listeningApp(port, (app) => standby.routes(app, () => running.publicUrl));
    // Twilio reached the standby (the load balancer's choice), signing the public URL.
    const answer = await sendInbound(`http://127.0.0.1:${port}${SMS_INBOUND_PATH}`, running.twilio.authToken, { From: PERSON, To: SERVICE_NUMBER, Body: 'JOIN harbour' }, { signedUrl: running.publicUrl + SMS_INBOUND_PATH });
    expect(answer.status).toBe(200);
    expect(messageOf(answer.body)).toMatch(/session harbour/);
    expect(running.host.opened.map((o) => o.session)).toEqual(['harbour']);
  });
});

describe('sending', () => {
  const conversationFor = async (r: Rig, peer = PERSON): Promise<Conversation> => r.host.open({ id: `sms:${peer}`, session: 'night-shift', tenant: null, side: 'B', peer });

  it('sends a long reply as parts in order through the Messages API, recording each part, with the status callback URL', async () => {
    const r = await rig();
    const conversation = await conversationFor(r);
    const text = Array.from({ length: 500 }, (_, i) => `line${i}`).join(' ');
    const expected = splitSms(text);
    expect(expected.length).toBeGreaterThan(1);
    const recorded: number[] = [];
    await r.channel.send(conversation, delivery(text), async (parts) => {
      // Each part was accepted before it is recorded.
      expect(r.twilio.created).toHaveLength(parts);
      recorded.push(parts);
    });
    expect(recorded).toEqual(expected.map((_, i) => i + 1));
    expect(r.twilio.created.map((c) => c.resource.body)).toEqual(expected);
    expect(r.twilio.created.map((c) => c.resource.body).join(' ')).toBe(text);
    for (const message of r.twilio.created) {
      expect(message.params).toMatchObject({ To: PERSON, From: SERVICE_NUMBER, StatusCallback: r.publicUrl + SMS_STATUS_PATH });
      expect(message.resource).toMatchObject({ status: 'queued', direction: 'outbound-api', to: PERSON, from: SERVICE_NUMBER });
      expect(message.resource.sid).toMatch(/^SM[0-9a-f]{32}$/);
      expect(message.segments).toBeLessThanOrEqual(10);
    }
  });

  it('sends unicode as UCS-2 parts and resumes after the parts already sent', async () => {
    const r = await rig();
    const conversation = await conversationFor(r);
    const text = `Привет! ${'Ночь тиха, луна светла. 🌙 '.repeat(60)}`.trim();
    const parts = splitSms(text);
    expect(parts.length).toBe(3);
    const recorded: number[] = [];
    await r.channel.send(conversation, delivery(text, 1), async (n) => void recorded.push(n));
    expect(recorded).toEqual([2, 3]);
    expect(r.twilio.created.map((c) => c.resource.body)).toEqual(parts.slice(1));
    expect(r.twilio.created.map((c) => c.encoding)).toEqual(['UCS-2', 'UCS-2']);
    // All sent already: nothing more goes.
    await r.channel.send(conversation, delivery(text, 3), async () => {
      throw new Error('no part is left to record');
    });
    expect(r.twilio.created).toHaveLength(2);
  });

  it('sends through a Messaging Service when `from` is its SID', async () => {
    const service = `MG${'d'.repeat(32)}`;
    const r = await rig({ from: service });
    await r.channel.send(await conversationFor(r), delivery('Through the service.'), async () => {});
    expect(r.twilio.created[0]!.params).toMatchObject({ MessagingServiceSid: service, To: PERSON, Body: 'Through the service.' });
    expect(r.twilio.created[0]!.params.From).toBeUndefined();
    expect(r.twilio.created[0]!.resource.status).toBe('accepted');
  });

  it('429 is retryable after Retry-After; 500 is retryable; a part that failed is not recorded', async () => {
    const r = await rig();
    const conversation = await conversationFor(r);
    r.twilio.failNext(1, { status: 429, retryAfterSeconds: 7 });
    const recorded: number[] = [];
    const limited = await channelError(r.channel.send(conversation, delivery('Hold on.'), async (n) => void recorded.push(n)));
    expect(limited.retryable).toBe(true);
    expect(limited.retryAfterMs).toBe(7_000);
    expect(limited.message).toMatch(/429.*20429/);
    expect(recorded).toEqual([]);

    r.twilio.failNext(1, { status: 500 });
    const failed = await channelError(r.channel.send(conversation, delivery('Hold on.'), async (n) => void recorded.push(n)));
    expect(failed.retryable).toBe(true);
    expect(failed.retryAfterMs).toBeUndefined();
    expect(r.channel.health()).toMatchObject({ connected: true, lastError: expect.stringMatching(/500/) });

    await r.channel.send(conversation, delivery('Hold on.'), async (n) => void recorded.push(n));
    expect(recorded).toEqual([1]);
    expect(r.twilio.attempts).toHaveLength(3);
    expect(r.twilio.created).toHaveLength(1);
  });

  it('an invalid number (21211) and an opted-out one (21610) are not retryable', async () => {
    const r = await rig();
    const invalid = await channelError(r.channel.send(await conversationFor(r, '555-0100'), delivery('Hello'), async () => {}));
    expect(invalid.retryable).toBe(false);
    expect(invalid.message).toMatch(/400 \(error 21211\)/);
    expect(r.channel.health().lastError).toBe(invalid.message);
    expect(r.channel.health().lastErrorAt).not.toBeNull();

    r.twilio.optedOut.add(PERSON);
    const unsubscribed = await channelError(r.channel.send(await conversationFor(r), delivery('Hello'), async () => {}));
    expect(unsubscribed.retryable).toBe(false);
    expect(unsubscribed.message).toMatch(/21610/);
    expect(r.twilio.created).toEqual([]);
  });

  it('a wrong auth token is kept for retry rather than dropping the delivery', async () => {
    const double = await startTwilioDouble();
    closers.push(() => double.close());
    const r = await rig({ authToken: 'rotated-away' }, double);
    const error = await channelError(r.channel.send(await conversationFor(r), delivery('Hello'), async () => {}));
    expect(error.message).toMatch(/401 \(error 20003\)/);
    expect(error.retryable).toBe(true);
  });

  it('tells the person when their session ended, but not after STOP', async () => {
    const r = await rig();
    const conversation = await conversationFor(r);
    await r.channel.ended(conversation, 'session closed');
    expect(r.twilio.created.map((c) => [c.resource.to, c.resource.body])).toEqual([[PERSON, 'Session night-shift has ended. Text JOIN <session> to join another.']]);
    await r.channel.ended(conversation, 'stop');
    expect(r.twilio.created).toHaveLength(1);
  });

  it('Twilio out of reach is retryable', async () => {
    const r = await rig({ apiBaseUrl: `http://127.0.0.1:${await freePort()}` });
    const error = await channelError(r.channel.send(await conversationFor(r), delivery('Hello'), async () => {}));
    expect(error.retryable).toBe(true);
    expect(error.message).toMatch(/ECONNREFUSED/);
  });
});

describe('status callbacks', () => {
  it('records the signed callbacks Twilio sends for a message, by status, for health and metrics', async () => {
    const r = await rig();
    r.twilio.undeliverable.set('+15551230003', 30003);
    await r.channel.send(await r.host.open({ id: `sms:${PERSON}`, session: 's', tenant: null, side: 'B', peer: PERSON }), delivery('One'), async () => {});
    await r.channel.send(await r.host.open({ id: 'sms:+15551230003', session: 's', tenant: null, side: 'B', peer: '+15551230003' }), delivery('Two'), async () => {});
    await r.twilio.settled();

    expect(r.twilio.callbacks.map((c) => c.answer)).toEqual([204, 204, 204, 204, 204, 204]);
    const { counts, recent } = r.channel.statuses();
    expect(counts).toEqual({ queued: 2, sent: 2, delivered: 1, undelivered: 1 });
    expect(r.channel.health().details).toMatchObject({ statuses: { queued: 2, sent: 2, delivered: 1, undelivered: 1 } });
    const [first, second] = r.twilio.created.map((c) => c.resource.sid);
    expect(recent.filter((s) => s.messageSid === first).map((s) => s.status)).toEqual(['queued', 'sent', 'delivered']);
    expect(recent.find((s) => s.messageSid === second && s.status === 'undelivered')).toMatchObject({ errorCode: '30003', to: '+15551230003' });
    expect(r.statuses.filter((s) => s === 'delivered' || s === 'undelivered').sort()).toEqual(['delivered', 'undelivered']);
    expect(r.statuses).toHaveLength(6);
  });

  it('keeps the latest 50', async () => {
    const r = await rig();
    const url = r.publicUrl + SMS_STATUS_PATH;
    for (let i = 0; i < 55; i++) {
      const params = { MessageSid: `SM${String(i).padStart(32, '0')}`, MessageStatus: 'sent', To: PERSON };
      // With a charset parameter this time: the parser takes the media type with or without one.
      const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8', 'x-twilio-signature': twilioSignature(r.twilio.authToken, url, params) }, body: new URLSearchParams(params).toString() });
      expect(response.status).toBe(204);
    }
    const { counts, recent } = r.channel.statuses();
    expect(counts).toEqual({ sent: 55 });
    expect(recent).toHaveLength(50);
    expect(recent[0]!.messageSid).toBe(`SM${'5'.padStart(32, '0')}`);
  });
});

describe('health', () => {
  it('is connected from start until close, and inbound texts after close are answered 503', async () => {
    const r = await rig();
    expect(r.channel.health()).toMatchObject({ connected: true, lastError: null, lastErrorAt: null });
    await r.channel.close();
    expect(r.channel.health().connected).toBe(false);
    const answer = await r.inbound(PERSON, 'JOIN late');
    expect(answer.status).toBe(503);
    expect(r.host.opened).toEqual([]);
  });
});
