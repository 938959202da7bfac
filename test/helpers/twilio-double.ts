/**
 * A double of Twilio for tests: a local HTTP server that answers the Messages resource of the
 * REST API (2010-04-01) as Twilio documents it, and plays Twilio's side of the webhooks.
 *
 * - `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`: HTTP Basic auth with the account
 *   SID and auth token (401, error 20003, otherwise); form-encoded To, From or
 *   MessagingServiceSid, Body, StatusCallback; To must be E.164 (400, error 21211); answers 201
 *   with Twilio's message JSON. Errors have Twilio's shape `{code, message, more_info, status}`.
 * - `GET …/Messages/{Sid}.json` and `GET …/Messages.json` (newest first, To/From filters).
 * - After each create, the status callbacks Twilio would send (queued, sent, delivered; or
 *   undelivered with an ErrorCode for a number told to fail), POSTed form-encoded to the
 *   message's StatusCallback and signed the way Twilio signs: X-Twilio-Signature is the base64
 *   HMAC-SHA1, keyed with the auth token, of the URL followed by every parameter, sorted by
 *   name, as name and value with nothing between. The signing is written here from that
 *   description, not taken from the twilio package, so that the tests check the package's
 *   validation against an independent signer.
 *
 * `sendInbound` plays Twilio delivering a text to the service's inbound webhook.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parse as parseForm, stringify as formOf } from 'node:querystring';

export type Params = Record<string, string>;

/** Twilio's message resource as the API answers it (the fields this double fills). */
export interface MessageResource {
  account_sid: string;
  api_version: '2010-04-01';
  body: string;
  date_created: string;
  date_sent: string | null;
  date_updated: string;
  direction: 'outbound-api';
  error_code: number | null;
  error_message: string | null;
  from: string | null;
  messaging_service_sid: string | null;
  num_media: string;
  num_segments: string;
  price: string | null;
  price_unit: string;
  sid: string;
  status: string;
  subresource_uris: { media: string };
  to: string;
  uri: string;
}

/** A message the double accepted, with what the test may want to check. */
export interface CreatedMessage {
  readonly resource: MessageResource;
  /** The form parameters as sent. */
  readonly params: Params;
  /** Segments the body takes, counted here (GSM-7 or UCS-2), whatever num_segments says. */
  readonly segments: number;
  readonly encoding: 'GSM-7' | 'UCS-2';
}

/** A status callback the double sent, and how the service answered it. */
export interface SentCallback {
  readonly url: string;
  readonly params: Params;
  readonly answer: number;
}

export interface Failure {
  readonly status: number;
  /** Twilio's error code in the body (default: 20429, 20500, 20503 by status). */
  readonly code?: number;
  readonly retryAfterSeconds?: number;
}

export interface TwilioDouble {
  /** The API's base URL (http://127.0.0.1:PORT), for the client's base URL. */
  readonly url: string;
  readonly accountSid: string;
  readonly authToken: string;
  /** Messages accepted, in order. */
  readonly created: CreatedMessage[];
  /** Every POST to the Messages resource, accepted or not. */
  readonly attempts: Params[];
  readonly callbacks: SentCallback[];
  /** The next `count` creates fail with this answer. */
  failNext(count: number, failure: Failure): void;
  /** Numbers that opted out: a create to one is refused with 21610, as Twilio does. */
  readonly optedOut: Set<string>;
  /** Numbers whose messages end undelivered with this error code (e.g. 30003 unreachable). */
  readonly undeliverable: Map<string, number>;
  /** Resolves once every status callback scheduled so far was sent. */
  settled(): Promise<void>;
  close(): Promise<void>;
}

const E164 = /^\+[1-9]\d{1,14}$/;
const SID_HEX = () => randomBytes(16).toString('hex');

/** Twilio's signature of a request to `url` with these form parameters (HMAC-SHA1, base64). */
export function twilioSignature(authToken: string, url: string, params: Params): string {
  const data = Object.keys(params)
    .sort()
    .reduce((signed, name) => signed + name + params[name], url);
  return createHmac('sha1', authToken).update(Buffer.from(data, 'utf8')).digest('base64');
}

/** Twilio writes dates as RFC 2822 with a numeric zone: "Tue, 03 Dec 2026 10:00:00 +0000". */
const rfc2822 = (date: Date): string => date.toUTCString().replace(/GMT$/, '+0000');

// Counted independently of the code under test, from GSM 03.38.
const GSM = '@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !"#¤%&\'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà';
const GSM_EXT = '\f^{}\\[~]|€';

/** Segments of a body: one up to 160 septets / 70 UCS-2 units, else 153 / 67 per segment, no character split. */
export function segmentsOf(body: string): { segments: number; encoding: 'GSM-7' | 'UCS-2' } {
  const chars = [...body];
  const gsm = chars.every((c) => GSM.includes(c) || GSM_EXT.includes(c));
  const widths = chars.map((c) => (gsm ? (GSM_EXT.includes(c) ? 2 : 1) : c.length));
  const total = widths.reduce((a, b) => a + b, 0);
  const single = gsm ? 160 : 70;
  const per = gsm ? 153 : 67;
  if (total <= single) return { segments: 1, encoding: gsm ? 'GSM-7' : 'UCS-2' };
  let segments = 1;
  let used = 0;
  for (const width of widths) {
    if (used + width > per) {
      segments++;
      used = 0;
    }
    used += width;
  }
  return { segments, encoding: gsm ? 'GSM-7' : 'UCS-2' };
}

const ERROR_TEXT: Record<number, string> = {
  20003: 'Authenticate',
  20404: 'The requested resource was not found',
  20429: 'Too Many Requests',
  20500: 'Internal Server Error',
  20503: 'Service Unavailable',
  21211: "Invalid 'To' Phone Number",
  21602: 'Message body is required.',
  21603: "A 'From' phone number is required.",
  21604: "A 'To' phone number is required.",
  21610: 'Attempt to send to unsubscribed recipient',
  21617: 'The concatenated message body exceeds the 1600 character limit.',
  21701: 'The Messaging Service Sid is invalid',
};

function sendJson(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  response.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
  response.end(JSON.stringify(body));
}

function sendError(response: ServerResponse, status: number, code: number, headers: Record<string, string> = {}, detail?: string): void {
  sendJson(response, status, { code, message: detail ? `${ERROR_TEXT[code] ?? 'Error'}: ${detail}` : (ERROR_TEXT[code] ?? 'Error'), more_info: `https://www.twilio.com/docs/errors/${code}`, status }, headers);
}

async function bodyOf(request: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** A form's parameters as single strings (Twilio sends each once). */
function single(form: ReturnType<typeof parseForm>): Params {
  const params: Params = {};
  for (const [name, value] of Object.entries(form)) if (value !== undefined) params[name] = Array.isArray(value) ? value[0]! : value;
  return params;
}

export async function startTwilioDouble(options: { accountSid?: string; authToken?: string; callbackDelayMs?: number } = {}): Promise<TwilioDouble> {
  const accountSid = options.accountSid ?? `AC${SID_HEX()}`;
  const authToken = options.authToken ?? SID_HEX();
  const delayMs = options.callbackDelayMs ?? 5;
  const created: CreatedMessage[] = [];
  const attempts: Params[] = [];
  const callbacks: SentCallback[] = [];
  const failures: Failure[] = [];
  const pending = new Set<Promise<void>>();
  const optedOut = new Set<string>();
  const undeliverable = new Map<string, number>();
  const base = `/2010-04-01/Accounts/${accountSid}`;

  const authorized = (request: IncomingMessage): boolean => {
    const header = request.headers.authorization ?? '';
    if (!header.startsWith('Basic ')) return false;
    return Buffer.from(header.slice(6), 'base64').toString('utf8') === `${accountSid}:${authToken}`;
  };

  /** queued → sent → delivered (or undelivered), each POSTed once the previous was answered. */
  const reportStatuses = (message: MessageResource, callbackUrl: string): void => {
    const failing = undeliverable.get(message.to);
    const flow = [...(message.messaging_service_sid && !message.from ? ['accepted'] : []), 'queued', 'sent', failing ? 'undelivered' : 'delivered'];
    const run = (async () => {
      for (const status of flow) {
        await new Promise((resolve) => setTimeout(resolve, delayMs));
        message.status = status;
        message.date_updated = rfc2822(new Date());
        if (status === 'sent') message.date_sent = message.date_updated;
        const params: Params = {
          AccountSid: accountSid,
          ApiVersion: '2010-04-01',
          From: message.from ?? '',
          MessageSid: message.sid,
          MessageStatus: status,
          SmsSid: message.sid,
          SmsStatus: status,
          To: message.to,
        };
        if (message.messaging_service_sid) params.MessagingServiceSid = message.messaging_service_sid;
        if (status === 'undelivered') {
          params.ErrorCode = String(failing);
          message.error_code = failing ?? null;
        }
        if (status === 'delivered' || status === 'undelivered') params.RawDlrDoneDate = new Date().toISOString().slice(2, 16).replace(/[-T:]/g, '');
        let answer = 0;
        try {
          const response = await fetch(callbackUrl, {
            method: 'POST',
            headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-twilio-signature': twilioSignature(authToken, callbackUrl, params), 'i-twilio-idempotency-token': SID_HEX() },
            body: formOf(params),
          });
          await response.arrayBuffer();
          answer = response.status;
        } catch {
          answer = 0; // not reachable: Twilio gives up on a status callback too
        }
        callbacks.push({ url: callbackUrl, params, answer });
      }
    })();
    pending.add(run);
    void run.finally(() => pending.delete(run));
  };

  const create = async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    const params = single(parseForm(await bodyOf(request)));
    attempts.push(params);
    const failure = failures.shift();
    if (failure) {
      const code = failure.code ?? (failure.status === 429 ? 20429 : failure.status === 503 ? 20503 : 20500);
      sendError(response, failure.status, code, failure.retryAfterSeconds === undefined ? {} : { 'retry-after': String(failure.retryAfterSeconds) });
      return;
    }
    const { To: to, From: from, MessagingServiceSid: service, Body: body, StatusCallback: statusCallback } = params;
    if (!to) return sendError(response, 400, 21604);
    if (!E164.test(to)) return sendError(response, 400, 21211, {}, to);
    if (!from && !service) return sendError(response, 400, 21603);
    if (service !== undefined && !/^MG[0-9a-f]{32}$/.test(service)) return sendError(response, 400, 21701, {}, service);
    if (!body) return sendError(response, 400, 21602);
    if (body.length > 1600) return sendError(response, 400, 21617);
    if (optedOut.has(to)) return sendError(response, 400, 21610);
    const sid = `SM${SID_HEX()}`;
    const now = rfc2822(new Date());
    const { segments, encoding } = segmentsOf(body);
    const viaService = service !== undefined && !from;
    const resource: MessageResource = {
      account_sid: accountSid,
      api_version: '2010-04-01',
      body,
      date_created: now,
      date_sent: null,
      date_updated: now,
      direction: 'outbound-api',
      error_code: null,
      error_message: null,
      from: from ?? null,
      messaging_service_sid: service ?? null,
      num_media: '0',
      // Through a Messaging Service the sender (so the encoding) is chosen later: Twilio says 0 at first.
      num_segments: viaService ? '0' : String(segments),
      price: null,
      price_unit: 'USD',
      sid,
      status: viaService ? 'accepted' : 'queued',
      subresource_uris: { media: `${base}/Messages/${sid}/Media.json` },
      to,
      uri: `${base}/Messages/${sid}.json`,
    };
    created.push({ resource, params, segments, encoding });
    sendJson(response, 201, resource);
    if (statusCallback) reportStatuses(resource, statusCallback);
  };

  const server = createServer((request, response) => {
    void (async () => {
      const url = new URL(request.url ?? '/', 'http://double');
      const path = url.pathname;
      const account = /^\/2010-04-01\/Accounts\/([^/]+)\//.exec(path)?.[1];
      if (!account) return sendError(response, 404, 20404);
      if (!authorized(request)) return sendError(response, 401, 20003, { 'www-authenticate': 'Basic realm="Twilio API"' });
      if (account !== accountSid) return sendError(response, 404, 20404);
      if (path === `${base}/Messages.json` && request.method === 'POST') return create(request, response);
      if (path === `${base}/Messages.json` && request.method === 'GET') {
        const to = url.searchParams.get('To');
        const from = url.searchParams.get('From');
        const messages = created
          .map((c) => c.resource)
          .filter((m) => (to === null || m.to === to) && (from === null || m.from === from))
          .reverse();
        const page = `${base}/Messages.json?PageSize=50&Page=0`;
        return sendJson(response, 200, { first_page_uri: page, end: Math.max(0, messages.length - 1), previous_page_uri: null, messages, uri: page, page_size: 50, start: 0, next_page_uri: null, page: 0 });
      }
      const one = new RegExp(`^${base}/Messages/((?:SM|MM)[0-9a-f]{32})\\.json$`).exec(path);
      if (one && request.method === 'GET') {
        const found = created.find((c) => c.resource.sid === one[1]);
        return found ? sendJson(response, 200, found.resource) : sendError(response, 404, 20404);
      }
      return sendError(response, 404, 20404);
    })().catch((err: unknown) => {
      if (!response.headersSent) sendError(response, 500, 20500, {}, String(err));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    accountSid,
    authToken,
    created,
    attempts,
    callbacks,
    optedOut,
    undeliverable,
    failNext(count, failure) {
      for (let i = 0; i < count; i++) failures.push(failure);
    },
    async settled() {
      while (pending.size > 0) await Promise.all([...pending]);
    },
    async close() {
      await Promise.all([...pending]);
      await new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
    },
  };
}

export interface InboundText {
  readonly From: string;
  readonly To: string;
  readonly Body: string;
  /** Default: a new SM… SID. */
  readonly MessageSid?: string;
  readonly AccountSid?: string;
  /** Anything else Twilio would send, or a changed value. */
  readonly extra?: Params;
}

export interface InboundAnswer {
  readonly status: number;
  readonly contentType: string | null;
  readonly body: string;
  /** The parameters sent, as signed. */
  readonly params: Params;
}

export interface InboundOptions {
  /** Replaces the signature (null: the header is left out), for tests of refused requests. */
  readonly signature?: string | null;
  /** The URL Twilio signs, when it is not the one posted to (the public URL, behind a proxy or load balancer). */
  readonly signedUrl?: string;
}

/**
 * POSTs a text to the service's inbound webhook as Twilio does: form-encoded, with the
 * parameters Twilio sends for an SMS, signed with the auth token.
 */
export async function sendInbound(url: string, authToken: string, text: InboundText, options: InboundOptions = {}): Promise<InboundAnswer> {
  const sid = text.MessageSid ?? `SM${SID_HEX()}`;
  const params: Params = {
    ToCountry: 'US',
    ToState: 'CA',
    SmsMessageSid: sid,
    NumMedia: '0',
    ToCity: '',
    FromZip: '',
    SmsSid: sid,
    FromState: '',
    SmsStatus: 'received',
    FromCity: '',
    Body: text.Body,
    FromCountry: 'US',
    To: text.To,
    ToZip: '',
    NumSegments: String(segmentsOf(text.Body).segments),
    MessageSid: sid,
    AccountSid: text.AccountSid ?? `AC${'0'.repeat(32)}`,
    From: text.From,
    ApiVersion: '2010-04-01',
    ...text.extra,
  };
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', 'i-twilio-idempotency-token': SID_HEX() };
  const signed = options.signature === undefined ? twilioSignature(authToken, options.signedUrl ?? url, params) : options.signature;
  if (signed !== null) headers['x-twilio-signature'] = signed;
  const response = await fetch(url, { method: 'POST', headers, body: formOf(params) });
  return { status: response.status, contentType: response.headers.get('content-type'), body: await response.text(), params };
}
