/**
 * The SMS bridge: a side of a session played by a person texting one of the service's Twilio
 * numbers (or a Messaging Service).
 *
 * Inbound, Twilio POSTs each text to /bridges/sms/inbound (form-encoded, signed with the
 * account's auth token in X-Twilio-Signature). A conversation is a phone number,
 * `sms:<E.164 number>`. A person starts one by texting `JOIN <session>`, or a number configured
 * for a session starts one with its first text. STOP and the other standard opt-out words end
 * it (Twilio also blocks further texts at its end); START, UNSTOP or YES take the person back to
 * the session they left; HELP says how it works. Every other text is a turn of the session. The
 * webhook is answered with TwiML: empty, or a short reply for the keywords and for refusals.
 *
 * Outbound, a delivery goes through Twilio's Messages API, split into parts that each stay
 * within ten SMS segments (splitSms); each part accepted by Twilio is recorded with the host, so
 * that a send interrupted by a crash resumes at the next part. Twilio reports what became of
 * each message to /bridges/sms/status; the channel counts those reports for health and metrics.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { parse as parseForm } from 'node:querystring';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import twilio from 'twilio';
import type RequestClient from 'twilio/lib/base/RequestClient.js';
import type * as TwilioResponse from 'twilio/lib/http/response.js';
import type { Side } from '../../machines/session.logic.js';
import type { Logger } from '../telemetry/logger.js';
import { ChannelError, type Channel, type ChannelHealth, type ChannelHost, type Conversation, type Progress, type QueuedDelivery } from './channel.js';

export const SMS_INBOUND_PATH = '/bridges/sms/inbound';
export const SMS_STATUS_PATH = '/bridges/sms/status';

export interface SmsOptions {
  readonly accountSid: string;
  readonly authToken: string;
  /** The sender: an E.164 number, or a Messaging Service SID (MG…), which then picks the number. */
  readonly from: string;
  /** The service's base URL as Twilio reaches it (https://proxy.example.com): callback URLs and signatures. */
  readonly publicUrl: string;
  /** The side people play over SMS. */
  readonly side: Side;
  /** Configured numbers (E.164) and the session each one plays, without a JOIN. */
  readonly numbers: Readonly<Record<string, string>>;
  /** Numbers (E.164) that may JOIN a session besides the configured ones; `*` for any phone. */
  readonly allow?: readonly string[];
  /** The word that joins a session: `JOIN <session>` (any case). */
  readonly joinKeyword: string;
  readonly tenant: string | null;
  /** Where Twilio's REST API is; only for tests, which point it at a double of the API. */
  readonly apiBaseUrl?: string;
  readonly logger: Pick<Logger, 'info' | 'warn' | 'error' | 'debug'>;
  /** Called with each status Twilio reports of a sent message (queued, sent, delivered, undelivered…), for metrics. */
  readonly onStatus?: (status: string) => void;
  /**
   * How long an inbound text refused for a passing reason (the side still connecting, a rate
   * limit) is offered to the session again before the person is asked to send it again.
   * Default 8 s: Twilio waits at most 15 s for the webhook's answer.
   */
  readonly inboundRetryMs?: number;
}

/** One status report of a sent message, as Twilio gave it. */
export interface SmsStatusReport {
  readonly messageSid: string;
  readonly status: string;
  readonly errorCode: string | null;
  readonly to: string | null;
  readonly at: string;
}

export interface SmsStatuses {
  /** Reports received, by status. */
  readonly counts: Readonly<Record<string, number>>;
  /** The latest reports, oldest first. */
  readonly recent: readonly SmsStatusReport[];
}

const RECENT_KEPT = 50;
/** Marks a webhook one instance passed on to another (cluster mode). */
const PASSED_ON = 'x-motive-sms-passed-on';
/** Within the 15 s Twilio waits for an answer. */
const PASS_ON_TIMEOUT_MS = 13_000;
const DEFAULT_INBOUND_RETRY_MS = 8_000;
/** Twilio's webhook bodies are a few hundred bytes; a text is at most 1600 characters. */
const FORM_BODY_LIMIT = 64 * 1024;

// Twilio's standard opt-out and opt-in words. Twilio matches them against the whole text, in
// any case, and acts on them itself (it blocks texts to a number that opted out, and answers
// the keyword); the bridge only keeps its side in step. OPTOUT and REVOKE joined Twilio's
// opt-out list later; they are kept here so that the queue stops whenever Twilio's does.
const STOP_WORDS = new Set(['STOP', 'STOPALL', 'UNSUBSCRIBE', 'CANCEL', 'END', 'QUIT', 'OPTOUT', 'REVOKE']);
const START_WORDS = new Set(['START', 'UNSTOP', 'YES']);
const HELP_WORDS = new Set(['HELP', 'INFO']);

/** Reasons an SMS conversation ends for which the person has been told already, or must not be texted. */
const SILENT_END_REASONS = new Set(['stop', 'joined another session', 'moved to another session']);

// --- Splitting texts into SMS-sized parts ------------------------------------------------------

/** The GSM 03.38 default alphabet (one septet each), without the escape character. */
const GSM_BASIC = new Set(
  '@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !"#¤%&\'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà',
);
/** The GSM 03.38 extension table: an escape and the character, two septets each. */
const GSM_EXTENDED = new Set('\f^{}\\[~]|€');

/** Segments a part may take: Twilio's 1600-character limit on a body is just above ten GSM-7 segments. */
const MAX_SEGMENTS = 10;
/** Per segment of a concatenated message (the rest of the 140 bytes carries the header that joins them). */
const GSM_PER_SEGMENT = 153;
const UCS2_PER_SEGMENT = 67;

const graphemes = new Intl.Segmenter(undefined, { granularity: 'grapheme' });

/**
 * The longest prefix of `text` (in UTF-16 code units) that fits in MAX_SEGMENTS segments when
 * sent as GSM-7 (`gsm`, stopping at the first character outside the GSM alphabet) or as UCS-2.
 * A character is never split across segments: not an escape sequence (handsets would show it
 * wrong) and not a surrogate pair. That makes the count a little conservative, never too low.
 */
function fitting(text: string, gsm: boolean): { end: number; complete: boolean } {
  const perSegment = gsm ? GSM_PER_SEGMENT : UCS2_PER_SEGMENT;
  let segments = 1;
  let used = 0;
  let end = 0;
  for (const char of text) {
    let width: number;
    if (gsm) {
      if (GSM_BASIC.has(char)) width = 1;
      else if (GSM_EXTENDED.has(char)) width = 2;
      else return { end, complete: false };
    } else {
      width = char.length;
    }
    if (used + width > perSegment) {
      segments++;
      used = 0;
    }
    if (segments > MAX_SEGMENTS) return { end, complete: false };
    used += width;
    end += char.length;
  }
  return { end, complete: true };
}

/** The last grapheme boundary at or before `cut`, so that a hard cut keeps an emoji sequence or an accent whole. */
function graphemeBoundary(text: string, cut: number): number {
  let boundary = 0;
  for (const { index } of graphemes.segment(text.slice(0, cut + 32))) {
    if (index > cut) break;
    boundary = index;
  }
  return boundary > 0 ? boundary : cut;
}

/**
 * Splits a text into the SMS messages it is sent as, in order. Each part is at most ten
 * segments: 1530 GSM-7 septets (characters of the extension table count two), or 670 UCS-2
 * code units when it has a character outside the GSM alphabet, so each stays within the
 * 1600-character body Twilio accepts and is billed as the segments it takes. A part uses GSM-7
 * when all its characters allow it, whatever the rest of the text needs. Parts end at
 * whitespace where there is some in the second half of a part (the whitespace between two
 * parts is dropped), else at a character boundary, never inside a surrogate pair. The text is
 * trimmed; an empty text gives no parts.
 */
export function splitSms(text: string): string[] {
  const parts: string[] = [];
  let rest = text.trim();
  while (rest.length > 0) {
    const gsm = fitting(rest, true);
    if (gsm.complete) {
      parts.push(rest);
      break;
    }
    const ucs2 = fitting(rest, false);
    if (ucs2.complete && ucs2.end >= gsm.end) {
      parts.push(rest);
      break;
    }
    // The longer of the two: GSM-7 up to its budget, or UCS-2 when a character needs it early on.
    let cut = Math.max(gsm.end, ucs2.end);
    let next = cut;
    const floor = Math.floor(cut / 2);
    let space = -1;
    for (let i = cut; i > floor; i--) {
      if (/\s/.test(rest[i]!)) {
        space = i;
        break;
      }
    }
    if (space > 0) {
      cut = space;
      next = space;
    } else {
      cut = graphemeBoundary(rest, cut);
      next = cut;
    }
    parts.push(rest.slice(0, cut).trimEnd());
    rest = rest.slice(next).trimStart();
  }
  return parts;
}

// --- TwiML and webhook helpers ------------------------------------------------------------------

const XML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' };
const xmlEscape = (text: string): string => text.replace(/[&<>"']/g, (c) => XML_ESCAPES[c]!);

/** A TwiML answer to an inbound text: nothing, or one reply to the person. */
function twiml(reply?: string): string {
  const body = reply === undefined ? '' : `<Message>${xmlEscape(reply)}</Message>`;
  return `<?xml version="1.0" encoding="UTF-8"?><Response>${body}</Response>`;
}

type Form = Record<string, string | string[] | undefined>;

/** A parameter's value; Twilio sends each once, so a repeated one counts as its first. */
function param(form: Form, name: string): string | undefined {
  const value = form[name];
  return Array.isArray(value) ? value[0] : value;
}

const escapeRegExp = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Seconds, or an HTTP date, as milliseconds from now. */
function retryAfterMs(value: unknown): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (typeof text !== 'string' || text.trim() === '') return undefined;
  const seconds = Number(text);
  if (Number.isFinite(seconds)) return Math.max(0, Math.round(seconds * 1000));
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The response headers of the Messages API call under way in this async context (for Retry-After). */
const lastResponse = new AsyncLocalStorage<{ headers?: Record<string, unknown> }>();

/**
 * The twilio package's HTTP client with two changes, passed as its documented `httpClient`
 * option: requests may go to another base URL (a double of the API in tests), and the headers
 * of each response are kept for the send that made it, because the errors the package throws
 * carry the status and Twilio's error code but not Retry-After.
 */
class SmsHttpClient extends twilio.RequestClient {
  constructor(private readonly apiBaseUrl: string | undefined) {
    // The host retries with back-off under its own rate limit: the package must not retry too.
    super({ autoRetry: false, timeout: 15_000 });
  }

  override async request<TData>(opts: RequestClient.RequestOptions<TData>): Promise<TwilioResponse.default<TData>> {
    let uri = opts.uri;
    if (this.apiBaseUrl) {
      const original = new URL(uri);
      uri = `${this.apiBaseUrl.replace(/\/+$/, '')}${original.pathname}${original.search}`;
    }
    const response = await super.request<TData>({ ...opts, uri });
    const slot = lastResponse.getStore();
    if (slot) slot.headers = response.headers as Record<string, unknown>;
    return response;
  }
}

/** The error the twilio package throws for an API error answer: RestException or TwilioServiceException. */
interface ApiError {
  status: number;
  code?: number;
  message: string;
}
const isApiError = (err: unknown): err is ApiError => typeof err === 'object' && err !== null && typeof (err as ApiError).status === 'number';

const NETWORK_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ECONNABORTED', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ERR_NETWORK']);

/** What a failed Messages API call means for the delivery: try again (when), or never. */
function toChannelError(err: unknown, headers: Record<string, unknown> | undefined): ChannelError {
  if (isApiError(err)) {
    const what = `Twilio answered ${err.status}${err.code ? ` (error ${err.code})` : ''}: ${err.message}`;
    const after = retryAfterMs(headers?.['retry-after']);
    if (err.status === 429 || err.status >= 500) return new ChannelError(what, true, after);
    // A wrong or rotated auth token fails every send alike: kept for when the configuration is
    // fixed, rather than every queued delivery dropped. Other 4xx (21211 not a valid number,
    // 21610 the person opted out, 21408 region not enabled…) fail the same way every time.
    if (err.status === 401) return new ChannelError(what, true, after);
    return new ChannelError(what, false);
  }
  const code = (err as { code?: unknown } | null)?.code;
  const message = (err as Error | null)?.message ?? String(err);
  if (typeof code === 'string' && NETWORK_ERRORS.has(code)) return new ChannelError(`Twilio could not be reached: ${code} ${message}`, true);
  // Anything else is not Twilio saying no: tried again, with the host's back-off, rather than lost.
  return new ChannelError(`Sending through Twilio failed: ${message}`, true);
}

// --- The channel ------------------------------------------------------------------------------

export class SmsChannel implements Channel {
  readonly name = 'sms' as const;
  private host: ChannelHost | null = null;
  private client: twilio.Twilio | null = null;
  private closed = false;
  private lastError: string | null = null;
  private lastErrorAt: string | null = null;
  /** By status as Twilio names it (no prototype: the names come from the request). */
  private readonly counts: Record<string, number> = Object.create(null) as Record<string, number>;
  private readonly recent: SmsStatusReport[] = [];
  private readonly publicUrl: string;
  private readonly joinPattern: RegExp;

  constructor(private readonly options: SmsOptions) {
    this.publicUrl = options.publicUrl.replace(/\/+$/, '');
    const keyword = escapeRegExp((options.joinKeyword || 'JOIN').trim());
    // One word after the keyword: a session id has no spaces, and "Join me at eight" sent in a
    // conversation stays a turn instead of moving the person to a session called "me at eight".
    this.joinPattern = new RegExp(`^${keyword}(?:\\s+(\\S+))?$`, 'i');
  }

  async start(host: ChannelHost): Promise<void> {
    this.host = host;
    this.closed = false;
    this.client = twilio(this.options.accountSid, this.options.authToken, { httpClient: new SmsHttpClient(this.options.apiBaseUrl) });
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  health(): ChannelHealth {
    return {
      connected: this.client !== null && !this.closed,
      lastError: this.lastError,
      lastErrorAt: this.lastErrorAt,
      details: { from: this.options.from, statuses: { ...this.counts } },
    };
  }

  /** Status reports Twilio sent of the messages sent: counts by status, and the latest 50. */
  statuses(): SmsStatuses {
    return { counts: { ...this.counts }, recent: [...this.recent] };
  }

  /**
   * Registers the webhook routes (POST /bridges/sms/inbound and /bridges/sms/status) in a
   * plugin of their own, so that the form body parser they need applies to them only. Call it
   * before the app is ready. The routes are public (Twilio shows no API key; its signature is
   * the proof) and exempt from the per-client rate limit: Twilio does not send a refused text
   * again, so a 429 would lose it.
   *
   * `forward` (cluster mode) says, for a request, the base URL of the instance that runs the
   * bridges when it is another one, or null: a verified webhook is then passed on to it.
   */
  routes(app: FastifyInstance, forward?: (request: FastifyRequest) => string | null): void {
    const raw = new WeakMap<FastifyRequest, string>();
    void app.register(async (scope) => {
      scope.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: FORM_BODY_LIMIT }, (request, body, done) => {
        raw.set(request, body as string);
        done(null, parseForm(body as string));
      });
      const config = { access: 'public' as const, rateLimit: false as const };
      // Cluster mode: an instance that does not run the bridges passes the webhook on, as it
      // came, to the one that does (once: a request passed on is never passed on again).
      const holder = (request: FastifyRequest): string | null => (request.headers[PASSED_ON] === undefined ? (forward?.(request) ?? null) : null);
      scope.post(SMS_INBOUND_PATH, { config, bodyLimit: FORM_BODY_LIMIT }, async (request, reply) => {
        const form = this.verified(request, reply);
        if (!form) return reply;
        const to = holder(request);
        if (to) return this.passOn(request, reply, to, raw.get(request) ?? '');
        const answer = await this.inbound(form);
        if (answer.status !== 200) return reply.code(answer.status).header('retry-after', '5').type('text/xml; charset=utf-8').send(twiml());
        return reply.code(200).type('text/xml; charset=utf-8').send(twiml(answer.reply));
      });
      scope.post(SMS_STATUS_PATH, { config, bodyLimit: FORM_BODY_LIMIT }, async (request, reply) => {
        const form = this.verified(request, reply);
        if (!form) return reply;
        const to = holder(request);
        if (to) return this.passOn(request, reply, to, raw.get(request) ?? '');
        this.status(form);
        return reply.code(204).send();
      });
    });
  }

  /**
   * Sends a verified webhook on to the instance at `address` (its base URL) with its body and
   * signature as they came (the signature holds there too: it covers the public URL and the
   * parameters), and answers Twilio with that instance's answer; 503 if it cannot be reached.
   */
  private async passOn(request: FastifyRequest, reply: FastifyReply, address: string, body: string): Promise<FastifyReply> {
    try {
      const response = await fetch(new URL(request.url, address), {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-twilio-signature': String(request.headers['x-twilio-signature']), [PASSED_ON]: '1' },
        body,
        signal: AbortSignal.timeout(PASS_ON_TIMEOUT_MS),
      });
      const type = response.headers.get('content-type');
      if (type) void reply.header('content-type', type);
      return reply.code(response.status).send(await response.text());
    } catch (err) {
      this.options.logger.warn({ err, bridge: 'sms', address }, 'bridge sms: a webhook could not be passed on to the instance that runs the bridges');
      return reply.code(503).header('retry-after', '5').type('text/xml; charset=utf-8').send(twiml());
    }
  }

  /**
   * The request's form if Twilio signed it, else answers 403. Twilio signs the URL it called
   * (the public URL, with the path and query as they reach us) followed by the sorted parameters.
   */
  private verified(request: FastifyRequest, reply: FastifyReply): Form | null {
    const signature = request.headers['x-twilio-signature'];
    const form = (request.body && typeof request.body === 'object' ? request.body : {}) as Form;
    const url = this.publicUrl + request.url;
    if (typeof signature !== 'string' || signature === '' || !twilio.validateRequest(this.options.authToken, signature, url, form)) {
      this.options.logger.warn({ bridge: 'sms', url: request.url, signed: typeof signature === 'string' }, 'bridge sms: a webhook request without a valid Twilio signature was refused');
      void reply.code(403).send({
        error: {
          message: typeof signature === 'string' && signature !== '' ? 'The X-Twilio-Signature header does not match this request.' : 'The request has no X-Twilio-Signature header.',
          type: 'invalid_request_error',
          param: null,
          code: 'invalid_signature',
        },
      });
      return null;
    }
    return form;
  }

  private status(form: Form): void {
    const status = param(form, 'MessageStatus') ?? param(form, 'SmsStatus') ?? 'unknown';
    const report: SmsStatusReport = {
      messageSid: param(form, 'MessageSid') ?? param(form, 'SmsSid') ?? '',
      status,
      errorCode: param(form, 'ErrorCode') || null,
      to: param(form, 'To') ?? null,
      at: new Date().toISOString(),
    };
    this.counts[status] = (this.counts[status] ?? 0) + 1;
    this.recent.push(report);
    if (this.recent.length > RECENT_KEPT) this.recent.splice(0, this.recent.length - RECENT_KEPT);
    if (status === 'failed' || status === 'undelivered') {
      this.options.logger.warn({ bridge: 'sms', message_sid: report.messageSid, status, error_code: report.errorCode }, `bridge sms: message ${report.messageSid} was ${status}${report.errorCode ? ` (error ${report.errorCode})` : ''}`);
    }
    this.options.onStatus?.(status);
  }

  private help(conversation?: Conversation): string {
    const keyword = (this.options.joinKeyword || 'JOIN').trim().toUpperCase();
    const where = conversation && conversation.ended === null ? `You are in session ${conversation.session}. ` : '';
    return `${where}Text ${keyword} <session> to join a session, STOP to leave, HELP for this message.`;
  }

  /** What to answer an inbound text: 200 with an optional reply, or 503 while the channel is not running. */
  private async inbound(form: Form): Promise<{ status: number; reply?: string }> {
    const host = this.host;
    // Before start or after close there is no session to give the text to. A 5xx goes to the
    // number's fallback URL, if one is configured, and shows in Twilio's error log.
    if (!host || this.closed) return { status: 503 };
    const from = param(form, 'From');
    const messageSid = param(form, 'MessageSid') ?? param(form, 'SmsSid');
    const body = (param(form, 'Body') ?? '').trim();
    if (!from || !messageSid) {
      host.ignored('malformed', { has_from: Boolean(from), has_message_sid: Boolean(messageSid) });
      return { status: 200 };
    }
    const id = `sms:${from}`;
    const existing = host.conversation(id);
    const open = existing && existing.ended === null ? existing : undefined;
    const word = body.toUpperCase();

    const join = this.joinPattern.exec(body);
    if (join) {
      const session = (join[1] ?? '').trim();
      if (!session) return { status: 200, reply: this.help(open) };
      // Only the numbers the operator named may take a side: a stranger's JOIN would lock the session's real player out.
      const allow = this.options.allow ?? [];
      if (!allow.includes('*') && !allow.includes(from) && this.options.numbers[from] === undefined) {
        host.ignored('not_allowed', { from, session });
        return { status: 200, reply: 'This number may not join sessions here.' };
      }
      try {
        if (open && (open.session !== session || open.tenant !== this.options.tenant)) await host.end(open, 'joined another session');
        const conversation = await host.open({ id, session, tenant: this.options.tenant, side: this.options.side, peer: from });
        return { status: 200, reply: `You are in session ${conversation.session} (side ${conversation.side}). Your texts are its turns. Text STOP to leave.` };
      } catch (err) {
        this.options.logger.warn({ err, bridge: 'sms', conversation: id, session_id: session }, `bridge sms: ${id} could not join session '${session}'`);
        return { status: 200, reply: `Could not join session ${session}: ${(err as Error)?.message ?? String(err)}` };
      }
    }

    if (STOP_WORDS.has(word)) {
      // Marked in the channel's data, so that a later text from a configured number does not
      // start the session again behind the opt-out (the host saves the data with the end).
      if (open) {
        open.data = { ...open.data, stopped: new Date().toISOString() };
        await host.end(open, 'stop');
      } else if (existing && !existing.data.stopped) {
        existing.data = { ...existing.data, stopped: new Date().toISOString() };
        await host.save(existing);
      }
      // Twilio answers the opt-out itself, and would not deliver a reply after it anyway.
      return { status: 200 };
    }

    if (HELP_WORDS.has(word)) return { status: 200, reply: this.help(open) };

    // Opt-in words are a keyword only for a person who left; in a conversation "yes" is a turn.
    if (!open && START_WORDS.has(word)) {
      const session = existing?.session ?? this.options.numbers[from];
      if (!session) {
        host.ignored('stranger', { from });
        return { status: 200, reply: this.help() };
      }
      const conversation = await host.open({ id, session, tenant: existing?.tenant ?? this.options.tenant, side: existing?.side ?? this.options.side, peer: from });
      return { status: 200, reply: `You are back in session ${conversation.session}. Text STOP to leave.` };
    }

    let conversation = open;
    if (!conversation) {
      const configured = this.options.numbers[from];
      if (existing?.data.stopped) {
        // They opted out: nothing reaches them until they text START (Twilio would refuse to send anyway).
        host.ignored('stopped', { from });
        return { status: 200 };
      }
      if (!configured) {
        host.ignored(existing ? 'ended' : 'stranger', { from });
        return { status: 200, reply: existing ? `Session ${existing.session} has ended. ${this.help()}` : this.help() };
      }
      conversation = await host.open({ id, session: configured, tenant: this.options.tenant, side: this.options.side, peer: from });
    }
    if (!body) {
      host.ignored(Number(param(form, 'NumMedia') ?? 0) > 0 ? 'media' : 'empty', { from });
      return { status: 200, reply: 'Only text is passed on to the session; your message had none.' };
    }
    return this.turn(host, conversation, messageSid, body, from);
  }

  /**
   * Hands a text to the session. Twilio does not send an inbound text again when the webhook
   * fails (a 5xx is only retried if the URL carries connection overrides asking for it, and
   * then within the same 15 s), so a 503 would lose it. A refusal that may pass (the side still
   * connecting, a rate limit) is offered again for a few seconds, within the time Twilio waits;
   * if it still fails the person is told to send it again, so nothing is lost without their
   * knowing. Offering it again is safe: the host drops a text it has taken once (by MessageSid).
   */
  private async turn(host: ChannelHost, conversation: Conversation, messageId: string, text: string, from: string): Promise<{ status: number; reply?: string }> {
    const deadline = Date.now() + (this.options.inboundRetryMs ?? DEFAULT_INBOUND_RETRY_MS);
    let delay = 250;
    for (;;) {
      const received = await host.receive({ conversation, messageId, text, from });
      if (received.ok) return { status: 200 };
      if (!received.retryable) return { status: 200, reply: `Not passed on: ${received.message}` };
      if (Date.now() + delay > deadline) {
        this.options.logger.warn({ bridge: 'sms', conversation: conversation.id, code: received.code }, `bridge sms: a text from ${conversation.id} was refused (${received.code}); the person was asked to send it again`);
        return { status: 200, reply: `Not passed on yet (${received.message}). Please send it again in a minute.` };
      }
      await sleep(delay);
      delay = Math.min(delay * 2, 2_000);
    }
  }

  async send(conversation: Conversation, delivery: QueuedDelivery, progress: Progress): Promise<void> {
    const client = this.client;
    if (!client || this.closed) throw new ChannelError('The SMS bridge is not running.', true);
    const parts = splitSms(delivery.content);
    // Twilio's Messages API has no idempotency key: a part accepted just before a crash, and
    // not yet recorded, is sent again. Recording each part as soon as it is accepted keeps
    // that to at most one part.
    for (let i = delivery.parts ?? 0; i < parts.length; i++) {
      const sid = await this.create(client, conversation.peer, parts[i]!);
      this.options.logger.debug({ bridge: 'sms', conversation: conversation.id, index: delivery.index, part: i + 1, parts: parts.length, message_sid: sid }, 'bridge sms: part accepted by Twilio');
      await progress(i + 1);
    }
  }

  /** Tells the person their session ended, unless they left (STOP, another JOIN) and know it. */
  async ended(conversation: Conversation, reason: string): Promise<void> {
    if (SILENT_END_REASONS.has(reason) || conversation.data.stopped || !this.client || this.closed) return;
    const keyword = (this.options.joinKeyword || 'JOIN').trim().toUpperCase();
    await this.create(this.client, conversation.peer, `Session ${conversation.session} has ended. Text ${keyword} <session> to join another.`);
  }

  /** Creates one message; its SID, or a ChannelError saying whether to try again. */
  private async create(client: twilio.Twilio, to: string, body: string): Promise<string> {
    const sender = this.options.from.startsWith('MG') ? { messagingServiceSid: this.options.from } : { from: this.options.from };
    const slot: { headers?: Record<string, unknown> } = {};
    try {
      const message = await lastResponse.run(slot, () => client.messages.create({ to, body, ...sender, statusCallback: this.publicUrl + SMS_STATUS_PATH }));
      return message.sid;
    } catch (err) {
      const error = toChannelError(err, slot.headers);
      this.lastError = error.message;
      this.lastErrorAt = new Date().toISOString();
      throw error;
    }
  }
}
