/**
 * One side of one session: an application on the official OpenAI SDK (default retries) that
 * behaves as a real one does, and badly.
 *
 * Like a real one, it keeps its history (its user messages and the answers it read, in that
 * order), re-sends all of it on each call, reads streams as deltas, and never takes an error, a
 * cut stream or a stream it gave up on for an answer: after a 503, 408, connection error or
 * in-stream error it calls again with the same messages after a short backoff. At most one of
 * its calls is live; an abandoned one is aborted, and whatever it gets is ignored.
 *
 * Badly: it aborts calls at random and just as the other side speaks, re-sends the same body,
 * or instead types another message after the unanswered one (a chat UI that kept a failed
 * message: both are in the history, each must be delivered once), at once or after the
 * failure; it streams or not at random, and sometimes thinks longer than the turn timeout.
 *
 * A request whose history shows no answer yet (A's handshake, B's first message) carries the
 * same Idempotency-Key on every re-send: without assistant messages the proxy cannot tell a
 * re-send from the same text said twice (PROTOCOL.md §3, known ambiguities), and a key is the
 * contract's way to say "again". For the same reason such a request is never followed by a
 * second message before its answer. Everything with history relies on the history alone.
 */
import OpenAI, { APIConnectionError, APIError, APIUserAbortError } from 'openai';
import type { Conversation, Counters, Side } from './conversation.js';
import type { Random } from './random.js';

type Msg = { role: 'user' | 'assistant'; content: string };

type Outcome =
  | { kind: 'answer'; text: string }
  | { kind: 'aborted'; reason: AbortReason }
  | { kind: 'retryable'; why: string }
  | { kind: 'superseded' }
  | { kind: 'fatal'; why: string };

/** abort: at random; snipe: just as the other side spoke; double: to send a second message at once; end: the run is over. */
type AbortReason = 'abort' | 'snipe' | 'double' | 'end';

interface Call {
  readonly id: number;
  readonly controller: AbortController;
  reason: AbortReason | null;
}

const WORDS = ['lantern', 'gate', 'troll', 'riddle', 'ember', 'moss', 'ferry', 'owl', 'salt', 'copper', 'thistle', 'vault'];
const EXTRAS = ['', '', '', ' — déjà vu 🙂', '\nsecond line', ' (whispers)', ' 火'];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class ChatApp {
  /** What this side typed, in order (A's handshake excluded): what the other side must receive. */
  readonly sent: string[] = [];
  /** The answers it read, whole, in order: what the journal must say it was given. */
  readonly received: string[] = [];
  /** Those answers split on the blank line: the other side's messages, in order, once each. */
  readonly parts: string[] = [];
  peer!: ChatApp;
  private readonly client: OpenAI;
  private readonly model: string;
  private history: Msg[] = [];
  /** Typed messages that got no answer yet: they follow the history in every call. */
  private pending: string[] = [];
  private current: Call | null = null;
  private calls = 0;
  private handshake: string | null = null;

  constructor(
    readonly side: Side,
    private readonly conversation: Conversation,
    private readonly options: { url: string; explicit: boolean; random: Random; counters: Counters },
  ) {
    const { counters } = options;
    const counting: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      counters.status(res.status);
      return res;
    };
    this.client = new OpenAI({ baseURL: `${options.url}/v1`, apiKey: 'chaos', timeout: 20_000, fetch: counting });
    this.model = options.explicit ? `${conversation.session}|${side}` : conversation.session;
    conversation.sides[side] = this;
  }

  private get random(): Random {
    return this.options.random;
  }

  private get counters(): Counters {
    return this.options.counters;
  }

  /** Says its first message (A: the handshake), then goes on until the conversation is over. */
  async run(): Promise<void> {
    if (this.side === 'A') {
      this.handshake = `hello from ${this.conversation.session} A`;
      this.pending.push(this.handshake);
    } else {
      this.type();
    }
    let failures = 0;
    while (!this.conversation.over) {
      const outcome = await this.call();
      if (this.conversation.over) return;
      if (outcome.kind === 'answer') {
        failures = 0;
        this.commit(outcome.text);
        if (this.conversation.over) return;
        await sleep(this.random.chance(0.03) ? this.random.int(2200, 3200) : this.random.int(0, 40));
        if (this.conversation.over) return;
        this.type();
        continue;
      }
      if (outcome.kind === 'fatal') return this.conversation.fail(this.side, outcome.why);
      if (++failures > 80) return this.conversation.fail(this.side, `${failures} failed calls in a row, the last: ${JSON.stringify(outcome)}`);
      if (outcome.kind === 'aborted' && outcome.reason === 'double') {
        this.counters.doubleSends++;
        this.type();
        continue;
      }
      await sleep(outcome.kind === 'retryable' ? this.random.int(50, 300) : this.random.int(5, 150));
      if (this.conversation.over) return;
      if (this.mayDouble() && this.random.chance(outcome.kind === 'aborted' ? 0.4 : 0.25)) {
        this.counters.doubleSends++;
        this.type();
      } else if (outcome.kind === 'aborted') {
        this.counters.resends++;
      } else if (outcome.kind === 'retryable') {
        this.counters.appRetries++;
      }
    }
  }

  /** The conversation is over: the call still open is given up. */
  abandon(): void {
    this.abort('end');
  }

  /** The other side has just said something: maybe give up the call it is about to answer. */
  private snipePeer(): void {
    const snipe = this.random.chance(0.08);
    const delay = this.random.int(0, 4);
    const target = this.peer.current;
    if (!snipe || !target) return;
    setTimeout(() => this.peer.current === target && this.peer.abort('snipe'), delay);
  }

  private abort(reason: AbortReason): void {
    const call = this.current;
    if (!call || call.reason !== null) return;
    call.reason = reason;
    call.controller.abort();
  }

  /** A second message before an answer: only after an answer exists, and while it has messages of its share left. */
  private mayDouble(): boolean {
    return this.history.some((m) => m.role === 'assistant') && this.sent.length < this.conversation.messages;
  }

  private type(): void {
    const n = this.sent.length + 1;
    const words = Array.from({ length: this.random.int(1, 4) }, () => this.random.pick(WORDS)).join(' ');
    const text = `${this.conversation.session}/${this.side}${n} ${words}${this.random.pick(EXTRAS)}`;
    this.sent.push(text);
    this.pending.push(text);
    this.conversation.trace.note(this.conversation.session, `${this.side} types ${JSON.stringify(text)}`);
    this.snipePeer();
  }

  /** An answer read: it follows the messages it answers; each of its parts must be the other side's next message. */
  private commit(text: string): void {
    const { trace, session } = this.conversation;
    for (const part of text.split('\n\n')) {
      const expected = this.peer.sent[this.parts.length];
      this.parts.push(part);
      if (part === expected) continue;
      const index = this.peer.sent.indexOf(part);
      const what =
        index === -1
          ? part === this.peer.handshake
            ? "the other side's handshake, which is never forwarded"
            : this.sent.includes(part)
              ? 'its own message, echoed back'
              : 'content the other side never said'
          : index < this.parts.length - 1 && this.parts.slice(0, -1).includes(part)
            ? 'a message it had received already (duplicate)'
            : `the other side's message #${index + 1}, where #${this.parts.length} was due (${index + 1 < this.parts.length ? 'reordered' : 'skipped one'})`;
      this.received.push(text);
      trace.note(session, `${this.side} received ${JSON.stringify(text)}`);
      return this.conversation.fail(this.side, `answered with ${JSON.stringify(part)}: ${what}; expected ${JSON.stringify(expected)}`);
    }
    this.received.push(text);
    this.history = [...this.history, ...this.pending.map((content): Msg => ({ role: 'user', content })), { role: 'assistant', content: text }];
    this.pending = [];
    this.conversation.checkFinished();
  }

  /** One SDK call with the whole history and what is pending; chaos may abort it. */
  private async call(): Promise<Outcome> {
    const { trace, session } = this.conversation;
    const messages: Msg[] = [...this.history, ...this.pending.map((content): Msg => ({ role: 'user', content }))];
    const seen = this.history.filter((m) => m.role === 'assistant').length;
    const call: Call = { id: ++this.calls, controller: new AbortController(), reason: null };
    this.current = call;
    const stream = this.random.chance(0.5);
    const timers: NodeJS.Timeout[] = [];
    if (this.random.chance(0.12)) timers.push(setTimeout(() => this.abort('abort'), this.random.int(0, 800)));
    if (this.mayDouble() && this.random.chance(0.05)) timers.push(setTimeout(() => this.abort('double'), this.random.int(0, 500)));
    this.counters.calls++;
    if (stream) this.counters.streams++;
    const label = `${this.side}#${call.id}`;
    trace.note(session, `${label} → seen ${seen}, pending ${JSON.stringify(this.pending)}${stream ? ', stream' : ''}`);
    const headers = seen === 0 ? { 'Idempotency-Key': `chaos-${session}-${this.side}-first` } : undefined;
    const options = { signal: call.controller.signal, ...(headers ? { headers } : {}) };
    let outcome: Outcome;
    try {
      if (stream) {
        const chunks = await this.client.chat.completions.create({ model: this.model, messages, stream: true }, options);
        let text = '';
        let finished = false;
        for await (const chunk of chunks) {
          const choice = chunk.choices[0];
          text += choice?.delta?.content ?? '';
          if (choice?.finish_reason === 'stop') finished = true;
        }
        // The SDK ends an aborted stream quietly: what it read is not an answer.
        if (call.reason !== null) outcome = { kind: 'aborted', reason: call.reason };
        else if (!finished) outcome = { kind: 'retryable', why: 'the stream ended without finish_reason "stop"' };
        else outcome = { kind: 'answer', text };
      } else {
        const res = await this.client.chat.completions.create({ model: this.model, messages }, options);
        outcome = { kind: 'answer', text: res.choices[0]?.message.content ?? '' };
      }
    } catch (error) {
      outcome = call.reason !== null ? { kind: 'aborted', reason: call.reason } : this.classify(error);
    } finally {
      for (const timer of timers) clearTimeout(timer);
      if (this.current === call) this.current = null;
    }
    if (outcome.kind === 'aborted' && outcome.reason !== 'end') this.counters.aborts++;
    if (outcome.kind === 'superseded') this.counters.superseded++;
    if (outcome.kind === 'answer' && outcome.text === '') outcome = { kind: 'fatal', why: 'answered with empty content' };
    trace.note(session, `${label} ${outcome.kind === 'answer' ? `← ${JSON.stringify(outcome.text)}` : `✗ ${JSON.stringify(outcome)}`}`);
    return outcome;
  }

  private classify(error: unknown): Outcome {
    if (error instanceof APIUserAbortError) return { kind: 'fatal', why: 'aborted, but not by the client' };
    if (error instanceof APIConnectionError) {
      this.counters.error('connection');
      return { kind: 'retryable', why: `connection: ${error.message}` };
    }
    if (error instanceof APIError) {
      // In-stream errors come with no status, only the code.
      const code = typeof error.code === 'string' ? error.code : '';
      const status = error.status;
      this.counters.error(code || String(status));
      if (code === 'superseded') return { kind: 'superseded' };
      if (code === 'session_conflict') return { kind: 'fatal', why: `409 session_conflict for the history it holds: ${error.message}` };
      const retryable = ['turn_timeout', 'handshake_timeout', 'shutting_down', 'journal_unavailable', 'overloaded', 'rate_limited'];
      if (retryable.includes(code) || status === 408 || status === 429 || (status !== undefined && status >= 500)) {
        return { kind: 'retryable', why: `${status ?? 'in-stream'} ${code}` };
      }
      return { kind: 'fatal', why: `unexpected error ${status ?? 'in-stream'} ${code}: ${error.message}` };
    }
    // A stream cut by a kill: undici's "terminated", a reset socket.
    this.counters.error('stream cut');
    return { kind: 'retryable', why: `stream cut: ${error instanceof Error ? error.message : String(error)}` };
  }
}
