/**
 * The SMS bridge end to end through the real service: the service runs in-process with a
 * journal directory (so the bridges' conversations and queues are kept in bridges.jsonl), its
 * SMS bridge pointed at a double of Twilio (test/helpers/twilio-double.ts) that answers the
 * Messages API and signs its webhooks as Twilio does. The game is side A on the official OpenAI
 * SDK; the person is side B, texting the service's number. PUBLIC_URL is the service's own
 * address, which the webhook signatures cover.
 *
 * Walked through: joining with `JOIN <session>`, turns both ways, status callbacks reaching the
 * admin API, the conversation and metrics views and /health; a long reply sent as ordered
 * parts; a configured number playing without JOIN; a webhook Twilio sends again (same
 * MessageSid) taken once; STOP and HELP; a delivery Twilio refuses with 500 kept queued
 * across a restart of the service and then sent exactly once; and a forged webhook refused.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/net.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { sendInbound, startTwilioDouble, twilioSignature, type InboundAnswer, type TwilioDouble } from '../helpers/twilio-double.js';
import { adminApi, gameIn, messageOf, metric, stays, until } from './support.js';

const SERVICE_NUMBER = '+15005550006';
const INBOUND = '/bridges/sms/inbound';
const EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>';

const { get, sessionSides } = adminApi();

const smsMessages = (direction: 'in' | 'out', outcome: string): string => `motiveproxy_bridge_messages_total{bridge="sms",direction="${direction}",outcome="${outcome}"}`;

/** The settings of a service whose SMS bridge talks to `double`, on `port`, keeping its journal in `journal`. */
function smsSettings(double: TwilioDouble, port: number, journal: string, numbers = '') {
  return {
    port: String(port),
    publicUrl: `http://127.0.0.1:${port}`,
    journalPath: journal,
    enablePrometheus: 'true',
    metricsPublic: 'true',
    bridgeSmsAccountSid: double.accountSid,
    bridgeSmsAuthToken: double.authToken,
    bridgeSmsFrom: SERVICE_NUMBER,
    bridgeSmsApiUrl: double.url,
    bridgeSmsNumbers: numbers,
    bridgeSmsAllow: '*',
    turnTimeoutSeconds: '60',
    logLevel: process.env['BRIDGE_TEST_LOG'] ?? 'silent',
  } as const;
}

/** Bodies the double accepted for a phone, in order. */
const textsTo = (double: TwilioDouble, phone: string): string[] => double.created.filter((c) => c.resource.to === phone).map((c) => c.resource.body);

describe('the SMS bridge through the service', () => {
  let double: TwilioDouble;
  let server: TestServer;
  let journal: string;
  const CONFIGURED = '+15551230003';

  beforeAll(async () => {
    double = await startTwilioDouble();
    journal = mkdtempSync(join(tmpdir(), 'motive-bridge-sms-'));
    server = await startTestServer(smsSettings(double, await freePort(), journal, `${CONFIGURED}=npc-standing`));
    await until(async () => (await get(server, '/admin/bridges')).body.data[0]?.connected === true, 'the SMS bridge is connected');
  }, 30_000);

  afterAll(async () => {
    await server?.close();
    await double?.close();
    if (journal) rmSync(journal, { recursive: true, force: true });
  });

  const text = (from: string, body: string, options: { MessageSid?: string; signature?: string | null; signedUrl?: string } = {}): Promise<InboundAnswer> => {
    const { signature, signedUrl, MessageSid } = options;
    return sendInbound(
      `${server.url}${INBOUND}`,
      double.authToken,
      { From: from, To: SERVICE_NUMBER, Body: body, ...(MessageSid ? { MessageSid } : {}) },
      { ...(signature === undefined ? {} : { signature }), ...(signedUrl ? { signedUrl } : {}) },
    );
  };

  const gameFor = (model: string) => gameIn(() => server, model);

  /** The game's handshake in `model`, once the service holds it for the phone's next text; the game, to play on. */
  async function waitingGame(model: string, what: string) {
    const game = gameFor(model);
    const handshake = game.say();
    await until(async () => (await sessionSides(server, model))?.A.waiting === true, what);
    return { game, handshake };
  }

  /** The phone joins `model` and the game's handshake gets the phone's `first` text; the game, to play on. */
  async function joined(phone: string, model: string, first: string): Promise<ReturnType<typeof gameIn>> {
    const joining = await text(phone, `JOIN ${model}`);
    expect(joining.status).toBe(200);
    expect(messageOf(joining.body)).toBe(`You are in session ${model} (side B). Your texts are its turns. Text STOP to leave.`);
    const { game, handshake } = await waitingGame(model, `the game waits in ${model}`);
    expect((await text(phone, first)).body).toBe(EMPTY_TWIML);
    expect((await handshake).choices[0]!.message.content).toBe(first);
    return game;
  }

  it('plays a session by text: JOIN, turns both ways through the Messages API, status callbacks, admin views, metrics and health', async () => {
    const phone = '+15551230001';
    const model = 'npc-guard';
    const turnsBefore = await metric(server, smsMessages('in', 'turn'));
    const sentBefore = await metric(server, smsMessages('out', 'sent'));

    // JOIN is answered with TwiML confirming the session and the side.
    const joining = await text(phone, 'JOIN npc-guard');
    expect(joining.status).toBe(200);
    expect(joining.contentType).toMatch(/^text\/xml/);
    expect(joining.body).toBe(
      '<?xml version="1.0" encoding="UTF-8"?><Response><Message>You are in session npc-guard (side B). Your texts are its turns. Text STOP to leave.</Message></Response>',
    );
    await until(async () => (await get(server, '/admin/bridges/conversations?bridge=sms')).body.data.some((c: any) => c.id === `sms:${phone}` && c.connected), 'the phone side is connected');

    // The game's handshake is held until the phone speaks; the phone's next text answers it.
    const { game, handshake } = await waitingGame(model, 'the game waits for the phone');
    const first = await text(phone, 'Good evening. May I pass?');
    expect(first.status).toBe(200);
    expect(first.body).toBe(EMPTY_TWIML);
    const opened = await handshake;
    expect(opened.choices[0]!.message.content).toBe('Good evening. May I pass?');
    expect(opened.model).toBe(model);

    // The game answers: the reply is sent to the phone through the Messages API, from the service's number.
    const answer = game.say('Halt! Who goes there? State your business & name.');
    await until(() => textsTo(double, phone).length === 1, 'the reply is sent to the phone');
    const sent = double.created.find((c) => c.resource.to === phone)!;
    expect(sent.params).toMatchObject({ To: phone, From: SERVICE_NUMBER, Body: 'Halt! Who goes there? State your business & name.', StatusCallback: `${server.url}/bridges/sms/status` });
    expect(sent.resource).toMatchObject({ to: phone, from: SERVICE_NUMBER, body: 'Halt! Who goes there? State your business & name.' });

    // Twilio's status callbacks (queued, sent, delivered) reach the service, signed, and show in the bridge's details.
    await until(() => double.callbacks.filter((c) => c.params.MessageSid === sent.resource.sid).length === 3, 'the status callbacks were sent');
    expect(double.callbacks.filter((c) => c.params.MessageSid === sent.resource.sid).map((c) => [c.params.MessageStatus, c.answer])).toEqual([
      ['queued', 204],
      ['sent', 204],
      ['delivered', 204],
    ]);
    const bridges = await get(server, '/admin/bridges');
    expect(bridges.status).toBe(200);
    expect(bridges.body.data).toHaveLength(1);
    expect(bridges.body.data[0]).toMatchObject({ bridge: 'sms', connected: true, last_error: null, queue_depth: 0, details: { from: SERVICE_NUMBER, statuses: { queued: 1, sent: 1, delivered: 1 } } });

    // The phone's next text answers the game's held reply.
    expect((await text(phone, 'A traveller from the east, seeking shelter.')).body).toBe(EMPTY_TWIML);
    expect((await answer).choices[0]!.message.content).toBe('A traveller from the east, seeking shelter.');

    const listed = await get(server, `/admin/bridges/conversations?session=${model}`);
    expect(listed.body.data).toHaveLength(1);
    expect(listed.body.data[0]).toMatchObject({ id: `sms:${phone}`, bridge: 'sms', session: model, tenant: null, side: 'B', peer: phone, ended: null, connected: true, deliveries_received: 1, deliveries_sent: 1, queue_depth: 0 });
    expect(listed.body.data[0].last_error).toBeUndefined();

    expect(await metric(server, smsMessages('in', 'turn'))).toBe(turnsBefore + 2);
    expect(await metric(server, smsMessages('out', 'sent'))).toBe(sentBefore + 1);
    expect(await metric(server, 'motiveproxy_bridge_connected{bridge="sms"}')).toBe(1);

    const health = await get(server, '/health');
    expect(health.status).toBe(200);
    expect(health.body.bridges.sms).toMatchObject({ connected: true, last_error: null, queue_depth: 0 });
    expect(health.body.bridges.sms.conversations).toBeGreaterThanOrEqual(1);

    // The conversation is kept in the journal directory's bridges.jsonl.
    const records = readFileSync(join(journal, 'bridges.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(records.filter((r) => r.id === `sms:${phone}`).at(-1)).toMatchObject({ bridge: 'sms', session: model, peer: phone, received: 1, sent: 1, queue: [] });
  }, 60_000);

  it('sends a long reply as several parts, in order, each within ten segments, with the emoji whole', async () => {
    const phone = '+15551230002';
    const model = 'npc-bard';
    const game = await joined(phone, model, 'Sing me the ballad.');
    const verses = Array.from({ length: 60 }, (_, i) => `Verse ${i + 1}: the road runs on past hill and sea,`);
    const ballad = `🎻 ${verses.join(' ')} and home at last.`;
    // An emoji makes it UCS-2 (67 code units a segment): well over the ten segments one part may take.
    expect(ballad.length).toBeGreaterThan(1400);
    const answer = game.say(ballad);
    await until(async () => (await get(server, `/admin/bridges/conversations/sms:${encodeURIComponent(phone)}`)).body.deliveries_sent === 1, 'the ballad is sent');

    const parts = double.created.filter((c) => c.resource.to === phone);
    expect(parts.length).toBeGreaterThanOrEqual(3);
    expect(parts.map((p) => p.resource.body).join(' ').replace(/\s+/g, ' ')).toBe(ballad.replace(/\s+/g, ' '));
    expect(parts[0]!.resource.body.startsWith('🎻 Verse 1:')).toBe(true);
    expect(parts.at(-1)!.resource.body.endsWith('and home at last.')).toBe(true);
    for (const part of parts) {
      expect(part.params).toMatchObject({ To: phone, From: SERVICE_NUMBER });
      expect(part.segments).toBeLessThanOrEqual(10);
      expect(part.resource.body).not.toMatch(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/);
    }
    expect(parts[0]!.encoding).toBe('UCS-2');
    // One delivery, however many parts: counted once.
    const view = await get(server, `/admin/bridges/conversations/sms:${encodeURIComponent(phone)}`);
    expect(view.body).toMatchObject({ deliveries_received: 1, deliveries_sent: 1, queue_depth: 0 });

    expect((await text(phone, 'Bravo!')).body).toBe(EMPTY_TWIML);
    expect((await answer).choices[0]!.message.content).toBe('Bravo!');
  }, 60_000);

  it('a configured number plays its session without JOIN', async () => {
    const model = 'npc-standing';
    const { game, handshake } = await waitingGame(model, 'the game waits for the configured number');
    const first = await text(CONFIGURED, 'Reporting for duty.');
    expect(first.status).toBe(200);
    expect(first.body).toBe(EMPTY_TWIML);
    expect((await handshake).choices[0]!.message.content).toBe('Reporting for duty.');

    const listed = await get(server, `/admin/bridges/conversations?session=${model}`);
    expect(listed.body.data).toEqual([expect.objectContaining({ id: `sms:${CONFIGURED}`, session: model, side: 'B', peer: CONFIGURED })]);

    const answer = game.say('Take the north tower.');
    await until(() => textsTo(double, CONFIGURED).length === 1, 'the order is sent to the configured number');
    expect(textsTo(double, CONFIGURED)).toEqual(['Take the north tower.']);
    await text(CONFIGURED, 'On my way.');
    expect((await answer).choices[0]!.message.content).toBe('On my way.');
  }, 60_000);

  it('a text Twilio sends again with the same MessageSid is one turn, also when the copies arrive together', async () => {
    const phone = '+15551230004';
    const model = 'npc-echo';
    const game = await joined(phone, model, 'Hello?');
    const duplicatesBefore = await metric(server, smsMessages('in', 'duplicate'));

    const answer = game.say('Who is there?');
    await until(() => textsTo(double, phone).length === 1, 'the game’s line is sent');
    const sid = `SM${'e'.repeat(32)}`;
    const once = await text(phone, 'It is me, Mario.', { MessageSid: sid });
    expect(once.body).toBe(EMPTY_TWIML);
    expect((await answer).choices[0]!.message.content).toBe('It is me, Mario.');

    // Twilio sends the webhook again (it timed out at its end): answered 200, and not a new turn.
    const again = await text(phone, 'It is me, Mario.', { MessageSid: sid });
    expect(again.status).toBe(200);
    expect(again.body).toBe(EMPTY_TWIML);
    expect(await metric(server, smsMessages('in', 'duplicate'))).toBe(duplicatesBefore + 1);

    // The game's next line is answered by the phone's next text, not by the copy.
    const next = game.say('Which Mario?');
    await until(() => textsTo(double, phone).length === 2, 'the game’s next line is sent');
    await stays(async () => {
      const sides = await sessionSides(server, model);
      return sides?.A.waiting === true && sides.A.queued === 0;
    }, 'the game still waits for the phone (the copy was not queued for it)', 500);
    expect((await text(phone, 'The plumber.')).body).toBe(EMPTY_TWIML);
    expect((await next).choices[0]!.message.content).toBe('The plumber.');

    // Two copies of one text arriving at once (a retry while the first is still being taken): one turn.
    const last = game.say('Come in.');
    await until(() => textsTo(double, phone).length === 3, 'the game’s third line is sent');
    const twin = `SM${'f'.repeat(32)}`;
    const [a, b] = await Promise.all([text(phone, 'Thanks!', { MessageSid: twin }), text(phone, 'Thanks!', { MessageSid: twin })]);
    expect([a.status, a.body, b.status, b.body]).toEqual([200, EMPTY_TWIML, 200, EMPTY_TWIML]);
    expect((await last).choices[0]!.message.content).toBe('Thanks!');
    const sides = await sessionSides(server, model);
    // Side A got the phone's four texts once each, and nothing more is queued for it.
    expect(sides?.A).toMatchObject({ deliveries: 4, queued: 0 });
    expect(await metric(server, smsMessages('in', 'duplicate'))).toBe(duplicatesBefore + 2);
  }, 60_000);

  it('STOP ends the conversation and nothing more is sent to the phone; HELP answers with help', async () => {
    const phone = '+15551230005';
    const model = 'npc-stop';
    const game = await joined(phone, model, 'I am here.');

    const stop = await text(phone, 'STOP');
    expect(stop.status).toBe(200);
    // Twilio answers an opt-out itself: the service's answer is empty.
    expect(stop.body).toBe(EMPTY_TWIML);
    const ended = await get(server, `/admin/bridges/conversations?session=${model}&state=ended`);
    expect(ended.body.data).toEqual([expect.objectContaining({ id: `sms:${phone}`, ended_because: 'stop', connected: false })]);
    expect((await get(server, `/admin/bridges/conversations?session=${model}`)).body.data).toEqual([]);

    // The game's later line stays in the session for side B; it is not sent to the phone.
    const answer = game.say('Then stand guard.');
    answer.catch(() => undefined); // held until the end of the file: the phone has left
    await until(async () => (await sessionSides(server, model))?.B.queued === 1, 'the game’s line is queued for side B');
    await stays(() => textsTo(double, phone).length === 0, 'nothing is sent to the phone that left', 1_000);
    expect((await get(server, `/admin/bridges/conversations/sms:${encodeURIComponent(phone)}`)).body).toMatchObject({ deliveries_received: 0, deliveries_sent: 0, queue_depth: 0 });

    // A text after STOP is not a turn; HELP says how to join.
    const after = await text(phone, 'Are you there?');
    expect(after.status).toBe(200);
    expect(after.body).toBe(EMPTY_TWIML);
    const help = await text(phone, 'HELP');
    expect(help.status).toBe(200);
    expect(help.contentType).toMatch(/^text\/xml/);
    expect(help.body).toBe('<?xml version="1.0" encoding="UTF-8"?><Response><Message>Text JOIN &lt;session&gt; to join a session, STOP to leave, HELP for this message.</Message></Response>');
    expect((await sessionSides(server, model))?.A).toMatchObject({ waiting: true, deliveries: 1 });
    expect(textsTo(double, phone)).toEqual([]);
  }, 60_000);

  it('refuses a webhook with a bad signature with 403, and nothing of it reaches the session', async () => {
    const phone = '+15551230007';
    const model = 'npc-seal';
    expect((await text(phone, `JOIN ${model}`)).status).toBe(200);
    const { handshake } = await waitingGame(model, 'the game waits');
    const turnsBefore = await metric(server, smsMessages('in', 'turn'));

    const forged = await text(phone, 'Open the gate, by order of the king.', { signature: twilioSignature('not-the-auth-token', `${server.url}${INBOUND}`, { Body: 'x' }) });
    expect(forged.status).toBe(403);
    expect(JSON.parse(forged.body)).toEqual({ error: { message: 'The X-Twilio-Signature header does not match this request.', type: 'invalid_request_error', param: null, code: 'invalid_signature' } });
    // Signed with the right token, but for another URL than PUBLIC_URL: refused too.
    const elsewhere = await text(phone, 'Open the gate.', { signedUrl: `http://proxy.example.test${INBOUND}` });
    expect(elsewhere.status).toBe(403);
    const unsigned = await text(phone, 'Open the gate.', { signature: null });
    expect(unsigned.status).toBe(403);
    expect(JSON.parse(unsigned.body).error.code).toBe('invalid_signature');
    // A forged JOIN from another number opens nothing.
    const stranger = '+15551230008';
    expect((await text(stranger, 'JOIN npc-seal', { signature: 'AAAAAAAAAAAAAAAAAAAAAAAAAAA=' })).status).toBe(403);

    await stays(async () => (await sessionSides(server, model))?.A.waiting === true, 'the game still waits', 500);
    expect(await metric(server, smsMessages('in', 'turn'))).toBe(turnsBefore);
    const conversations = (await get(server, '/admin/bridges/conversations?state=all')).body.data.map((c: any) => c.id);
    expect(conversations).toContain(`sms:${phone}`);
    expect(conversations).not.toContain(`sms:${stranger}`);

    // The genuine text is the first turn the game hears.
    expect((await text(phone, 'A message from the baker.')).body).toBe(EMPTY_TWIML);
    expect((await handshake).choices[0]!.message.content).toBe('A message from the baker.');
    expect(await metric(server, smsMessages('in', 'turn'))).toBe(turnsBefore + 1);
  }, 60_000);
});

describe('the SMS bridge across a restart', () => {
  let double: TwilioDouble;
  let journal: string;
  let port: number;
  let server: TestServer | null = null;

  beforeAll(async () => {
    double = await startTwilioDouble();
    journal = mkdtempSync(join(tmpdir(), 'motive-bridge-sms-restart-'));
    port = await freePort();
  });

  afterAll(async () => {
    await server?.close();
    await double?.close();
    if (journal) rmSync(journal, { recursive: true, force: true });
  });

  it('keeps a delivery Twilio refuses with 500 queued through a restart, and sends it exactly once when Twilio accepts', async () => {
    const phone = '+15551230009';
    const model = 'npc-keeper';
    const line = 'The lighthouse keeper will see you at dawn.';
    const url = `http://127.0.0.1:${port}`;
    const inbound = (body: string) => sendInbound(`${url}${INBOUND}`, double.authToken, { From: phone, To: SERVICE_NUMBER, Body: body });
    const conversation = (s: TestServer) => get(s, `/admin/bridges/conversations/sms:${encodeURIComponent(phone)}`);

    const first = await startTestServer(smsSettings(double, port, journal));
    server = first;
    expect(first.url).toBe(url);
    const game = gameIn(() => server!, model);
    expect((await inbound(`JOIN ${model}`)).status).toBe(200);
    const handshake = game.say();
    await until(async () => (await sessionSides(first, model))?.A.waiting === true, 'the game waits');
    await inbound('Is anyone there?');
    expect((await handshake).choices[0]!.message.content).toBe('Is anyone there?');

    // Twilio answers the next create with 500: the delivery stays queued, with the error shown.
    double.failNext(1, { status: 500 });
    const answer = game.say(line);
    answer.catch(() => undefined); // cut off by the restart
    await until(async () => (await conversation(first)).body.queue_depth === 1 && (await conversation(first)).body.last_error !== undefined, 'the failed delivery is queued with its error');
    const queued = (await conversation(first)).body;
    expect(queued).toMatchObject({ deliveries_received: 1, deliveries_sent: 0, queue_depth: 1, attempts: 1, last_error: expect.stringMatching(/^Twilio answered 500 \(error 20500\)/) });
    expect(double.attempts.filter((a) => a.Body === line)).toHaveLength(1);
    expect(textsTo(double, phone)).toEqual([]);
    expect(await metric(first, smsMessages('out', 'retried'))).toBe(1);
    const health = await get(first, '/health');
    expect(health.body.bridges.sms).toMatchObject({ connected: true, queue_depth: 1 });
    // What is owed is on disk, with its content.
    const kept = readFileSync(join(journal, 'bridges.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.id === `sms:${phone}`).at(-1);
    expect(kept).toMatchObject({ received: 1, sent: 0, queue: [{ index: 0, content: line, attempts: 1 }] });

    // The service stops before the retry, and a new one starts on the same journal and port.
    await first.close();
    server = null;
    expect(double.attempts.filter((a) => a.Body === line)).toHaveLength(1);
    const second = await startTestServer(smsSettings(double, port, journal));
    server = second;
    expect(second.url).toBe(url);

    // Twilio accepts now: the delivery is sent once, after the back-off.
    await until(() => textsTo(double, phone).length === 1, 'the kept delivery is sent after the restart', 20_000);
    await until(async () => (await conversation(second)).body.deliveries_sent === 1, 'the delivery is marked sent');
    expect((await conversation(second)).body).toMatchObject({ session: model, ended: null, deliveries_received: 1, deliveries_sent: 1, queue_depth: 0 });
    expect((await conversation(second)).body.last_error).toBeUndefined();
    expect(await metric(second, smsMessages('out', 'sent'))).toBe(1);

    // The game asks again (its request was cut off by the restart); the line it already said is not sent again.
    const again = game.again();
    await until(async () => (await sessionSides(second, model))?.A.waiting === true, 'the game waits again');
    await until(async () => (await conversation(second)).body.connected === true, 'the phone side is connected again');
    expect((await inbound('Thank you, I will wait.')).body).toBe(EMPTY_TWIML);
    expect((await again).choices[0]!.message.content).toBe('Thank you, I will wait.');
    await stays(() => double.created.filter((c) => c.resource.body === line).length === 1, 'the line is sent once', 500);

    const succeeded = double.created.filter((c) => c.resource.body === line);
    expect(succeeded).toHaveLength(1);
    expect(succeeded[0]!.params).toMatchObject({ To: phone, From: SERVICE_NUMBER });
    // Two attempts in all: the one refused with 500 and the one accepted.
    expect(double.attempts.filter((a) => a.Body === line)).toHaveLength(2);
    expect(textsTo(double, phone)).toEqual([line]);
  }, 60_000);
});
