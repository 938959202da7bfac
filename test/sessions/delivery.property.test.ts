/**
 * Delivery guarantees under random interleavings (PROTOCOL.md §3 attribution, §4 delivery,
 * §5 lifecycle), checked against the real SessionRegistry / Session / XState actors on a
 * SimulatedClock.
 *
 * Two simulated clients, A and B, behave like chat apps on an official SDK: they send new
 * messages (unique text, "A#3"), retry their latest request (an identical body, with or without
 * `X-Stainless-Retry-Count`), lose a connection (`disconnect()`), lose a reply that was written
 * (the SDK then retries), and wait while the clock runs past the timeouts. A client records every
 * reply it receives as an assistant message, once per turn. We only generate requests whose
 * side and newness the contract fixes; its "known ambiguities" are never produced.
 *
 * Invariants, checked after every step:
 * 1. Every new message reaches the other side exactly once and in order: the deliveries a side
 *    recorded, split on "\n\n", are a prefix of the other side's new messages in send order
 *    (A's handshake excluded, it is never forwarded); a side that is waiting is never owed
 *    anything; once both sides have retried / polled until drained, the two lists are equal
 *    (two stateless clients without sides may leave only the very last message queued, since
 *    fetching it takes another message).
 * 2. No content ever reaches the side that sent it, and every request is attributed to the
 *    client that sent it.
 * 3. A retry is taken as a retry and never delivers again; a retry of an answered turn gets
 *    the same answer again.
 * 4. The chart is always in EMPTY, AWAITING_PEER, ACTIVE, DORMANT, CLOSING or CLOSED, and,
 *    once both sides are known, it is ACTIVE exactly when some request is held.
 * 5. No request gets two outcomes; a superseded or disconnected request gets its outcome at
 *    once; a held request times out exactly at its deadline (A's handshake wait:
 *    HANDSHAKE_TIMEOUT, handshake_timeout; a wait while both sides are known: TURN_TIMEOUT,
 *    turn_timeout), so none outlives the longest timeout; closing answers everything held.
 * 6. (Its own test.) "HANDSHAKE_TIMEOUT_SECONDS bounds A's handshake wait;
 *    TURN_TIMEOUT_SECONDS bounds every other wait": also the waits before the peer is known
 *    that are not A's handshake (an explicit-side B that came first, A's later turns).
 *    The first two tests accept either timeout there.
 */
import fc from 'fast-check';
import { describe, it } from 'vitest';
import { SimulatedClock, type InspectionEvent } from 'xstate';
import { otherSide, type Side } from '../../machines/session.logic.js';
import type { TurnRequest } from '../../src/sessions/attribution.js';
import { SessionRegistry } from '../../src/sessions/registry.js';
import type { Outcome, Submission } from '../../src/sessions/session.js';

const HANDSHAKE_MS = 3_000;
const TURN_MS = 5_000;
const LONGEST_MS = Math.max(HANDSHAKE_MS, TURN_MS);
const SESSION = 'npc-guard';
const CHART_STATES = ['EMPTY', 'AWAITING_PEER', 'ACTIVE', 'DORMANT', 'CLOSING', 'CLOSED'];

// ---------------------------------------------------------------------------------------------
// Commands and client kinds

type Hint = 0 | 1 | 2;

type Command =
  | { readonly kind: 'send'; readonly client: Side; readonly lose: boolean }
  | { readonly kind: 'retry'; readonly client: Side; readonly hint: Hint; readonly lose: boolean }
  | { readonly kind: 'disconnect'; readonly client: Side }
  | { readonly kind: 'advance'; readonly ms: number };

interface ClientKind {
  /** Re-sends its full history (an SDK chat app) rather than only the new message (curl). */
  readonly history: boolean;
  /** Names its side with a `|A` / `|B` model suffix. */
  readonly explicit: boolean;
  /** Sends an Idempotency-Key with every turn (retries repeat it). */
  readonly keys: boolean;
}

type Ending = 'timeout' | 'close';

const sideArb = fc.constantFrom<Side>('A', 'B');
const loseArb = fc.integer({ min: 0, max: 5 }).map((n) => n === 0);
const commandArb: fc.Arbitrary<Command> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('send' as const), client: sideArb, lose: loseArb }) },
  {
    weight: 3,
    arbitrary: fc.record({ kind: fc.constant('retry' as const), client: sideArb, hint: fc.constantFrom<Hint>(0, 0, 1, 2), lose: loseArb }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('disconnect' as const), client: sideArb }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.constantFrom(HANDSHAKE_MS, TURN_MS, TURN_MS + 1, 2 * TURN_MS) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 1, max: 1_500 }) }) },
);
const commandsArb = fc.array(commandArb, { maxLength: 60, size: 'max' });
const endingArb = fc.constantFrom<Ending>('timeout', 'close');

// ---------------------------------------------------------------------------------------------
// The client model

interface Turn {
  readonly content: string;
  /** A's first turn: recorded, never forwarded. */
  readonly handshake: boolean;
  readonly request: TurnRequest;
  /** open: no answer written yet; lost: written but the client never got it. */
  status: 'open' | 'answered' | 'lost';
  answer: string | null;
}

interface Request {
  readonly id: string;
  readonly client: Client;
  readonly turn: Turn;
  readonly lose: boolean;
  readonly at: number;
  /**
   * Which wait this is, for its timer: A's handshake before B is known, a wait while both
   * sides are known, or another wait while the peer is unknown (an explicit-side B that came
   * first, or A's later turns before B came).
   */
  readonly wait: 'handshake' | 'turn' | 'before-peer';
  readonly submission: Submission;
  replaced: boolean;
  disconnected: boolean;
  outcome: Outcome | null;
}

interface Client {
  readonly side: Side;
  readonly kind: ClientKind;
  /** Every new message, in send order (A's first is its handshake). */
  readonly sent: string[];
  /** Every delivery recorded as an assistant message. */
  readonly received: string[];
  latest: Turn | null;
  /** The request this client is waiting on, if any. */
  open: Request | null;
}

const show = (c: ClientKind): string =>
  `${c.history ? 'full-history' : 'stateless'}${c.explicit ? ' explicit-side' : ''}${c.keys ? ' idempotency-keys' : ''}`;

class Violation extends Error {}

class Scenario {
  private readonly clock = new SimulatedClock();
  private readonly registry: SessionRegistry;
  private readonly clients: Record<Side, Client>;
  private readonly requests = new Map<string, Request>();
  /** The side of each request id, known before it is submitted (replies can come at once). */
  private readonly sideOf = new Map<string, Side>();
  private readonly arrived: Array<{ readonly request: Request; readonly outcome: Outcome }> = [];
  /** Time of each reply/reject the actor emitted, per request id. */
  private readonly emittedAt = new Map<string, number>();
  private readonly problems: string[] = [];
  private readonly log: string[] = [];
  private latestSide: Side | null = null;
  private lastMessage: string | null = null;
  private nextRequest = 0;
  private closing = false;

  constructor(
    kinds: Readonly<Record<Side, ClientKind>>,
    /** Hold waits before the peer is known to TURN_TIMEOUT too (invariant 6). */
    private readonly strictTimers: boolean,
  ) {
    const client = (side: Side): Client => ({ side, kind: kinds[side], sent: [], received: [], latest: null, open: null });
    this.clients = { A: client('A'), B: client('B') };
    this.registry = new SessionRegistry({
      timing: { handshakeTimeoutMs: HANDSHAKE_MS, turnTimeoutMs: TURN_MS, streamTurnTimeoutMs: TURN_MS, sessionTtlMs: 1e9 },
      maxSessions: 4,
      clock: this.clock,
      now: () => this.clock.now(),
      inspect: (event) => this.inspect(event),
    });
    this.log.push(`clients: A ${show(kinds.A)}, B ${show(kinds.B)}`);
  }

  // --- commands ------------------------------------------------------------------------------

  /** Plays one command; a command the client cannot make now (see canSendNew) is skipped. */
  async run(command: Command): Promise<void> {
    if (command.kind === 'advance') {
      this.advance(command.ms);
    } else {
      const c = this.clients[command.client];
      if (command.kind === 'send') {
        if (c.latest?.status === 'lost' || !this.canSendNew(c)) return; // the SDK retries first
        this.send(c, command.lose);
      } else if (command.kind === 'retry') {
        if (!c.latest) return;
        this.retry(c, command.hint, command.lose);
      } else {
        const request = c.open;
        if (!request) return;
        this.note(`${c.side} disconnects ${request.id}`);
        request.disconnected = true;
        c.open = null;
        request.submission.disconnect();
      }
    }
    await this.settle();
  }

  /** Both sides retry or send until nothing is owed (or a stateless pair can go no further). */
  async drain(): Promise<void> {
    this.note('-- drain');
    for (let step = 0; step < 40; step++) {
      const [a, b] = [this.clients.A, this.clients.B];
      const lost = [a, b].find((c) => c.latest?.status === 'lost');
      const owed = [a, b].filter((c) => this.owed(c) > 0);
      const stale = owed.find((c) => c.latest?.status === 'open');
      const x = owed[0];
      if (lost) this.retry(lost, 1, false);
      else if (!x) return;
      else if (stale) this.retry(stale, 1, false);
      else {
        const y = this.other(x);
        if (y.open && this.canSendNew(x)) this.send(x, false);
        else if (!y.open && this.owed(y) === 0 && y.latest?.status !== 'lost' && this.canSendNew(y)) this.send(y, false);
        else if (this.canSendNew(x)) this.send(x, false);
        else return;
      }
      await this.settle();
    }
  }

  /** Invariant 1 after draining, then the session ends by timeouts and a close, or by a close. */
  async finish(ending: Ending): Promise<void> {
    const bothCurl = !this.clients.A.kind.history && !this.clients.A.kind.explicit && !this.clients.B.kind.history && !this.clients.B.kind.explicit;
    for (const c of [this.clients.A, this.clients.B]) {
      const owed = this.owed(c);
      if (owed === 0) continue;
      const waitsForLast = bothCurl && owed === 1 && !c.open && this.expectedFor(c).at(-1) === this.lastMessage;
      if (!waitsForLast) {
        this.fail(`1: after draining, ${c.side} is still owed ${JSON.stringify(this.expectedFor(c).slice(-owed))}`);
      }
    }
    const session = this.registry.get(SESSION);
    if (ending === 'timeout') {
      this.advance(LONGEST_MS);
      await this.settle();
      for (const request of this.requests.values()) {
        if (!request.outcome) this.fail(`5: ${request.id} has no outcome after every timeout passed`);
      }
    }
    this.note('-- close');
    this.closing = true;
    this.registry.close(SESSION, 'deleted');
    await this.settle();
    for (const request of this.requests.values()) {
      if (!request.outcome) this.fail(`5: ${request.id} has no outcome after the session closed`);
    }
    if (session && (session.state !== 'CLOSED' || !session.closed)) this.fail(`4: a closed session is in ${session.state}`);
    if (this.registry.get(SESSION)) this.fail('4: a closed session is still in the registry');
  }

  /**
   * Runs the clock forward, stopping at every deadline the contract allows a held request, so
   * that the time of each timeout can be read off the clock (SimulatedClock fires timers only
   * after moving to the end of an increment).
   */
  private advance(ms: number): void {
    this.note(`clock +${ms}`);
    const target = this.clock.now() + ms;
    const stops = new Set<number>();
    for (const c of [this.clients.A, this.clients.B]) {
      if (c.open) for (const limit of [HANDSHAKE_MS, TURN_MS]) stops.add(c.open.at + limit);
    }
    for (const stop of [...stops].filter((t) => t > this.clock.now() && t < target).sort((x, y) => x - y)) {
      this.clock.increment(stop - this.clock.now());
    }
    this.clock.increment(target - this.clock.now());
  }

  private send(c: Client, lose: boolean): void {
    const content = `${c.side}#${c.sent.length}`;
    const request: TurnRequest = {
      explicitSide: c.kind.explicit ? c.side : null,
      assistantHistory: c.kind.history ? [...c.received] : [],
      messages: [content],
      system: null,
      retryCount: 0,
      idempotencyKey: c.kind.keys ? `key-${content}` : null,
    };
    const turn: Turn = { content, handshake: c.side === 'A' && c.sent.length === 0, request, status: 'open', answer: null };
    const kind = c.sent.length === 0 ? 'connect' : 'message';
    this.submit(c, turn, request, kind, lose, `sends ${content}`);
    c.sent.push(content);
    c.latest = turn;
    this.latestSide = c.side;
    this.lastMessage = content;
  }

  private retry(c: Client, wanted: Hint, lose: boolean): void {
    const turn = c.latest!;
    // Without one of these the contract takes the repeat for the other side or for a new turn.
    const history = turn.request.assistantHistory.length > 0;
    const hinted = wanted > 0 || turn.request.idempotencyKey !== null;
    const ownSide = c.kind.explicit || history || !c.open || hinted;
    const isRetry = turn.status === 'open' || history || hinted;
    const hint: Hint = ownSide && isRetry ? wanted : 1;
    const request: TurnRequest = { ...turn.request, retryCount: hint };
    this.submit(c, turn, request, 'retry', lose, `retries ${turn.content} (retry count ${hint}, turn ${turn.status})`);
  }

  private submit(c: Client, turn: Turn, body: TurnRequest, kind: Submission['kind'], lose: boolean, what: string): void {
    const id = `r${this.nextRequest++}`;
    const peer = this.other(c);
    const wait = peer.sent.length > 0 ? 'turn' : turn.handshake ? 'handshake' : 'before-peer';
    this.note(`${c.side} ${what} [history ${body.assistantHistory.length}]${lose ? ' (reply will be lost)' : ''} as ${id}`);
    this.sideOf.set(id, c.side);
    const result = this.registry.submit(SESSION, body, id);
    if ('error' in result) return this.fail(`2: ${c.side}'s request ${id} was refused: ${result.error}: ${result.message}`);
    if (result.side !== c.side) this.fail(`2: ${c.side}'s request ${id} was attributed to side ${result.side}`);
    if (result.kind !== kind) this.fail(`3: ${c.side}'s request ${id} was taken as ${result.kind}, not ${kind}`);
    if (c.open) c.open.replaced = true;
    const request: Request = {
      id,
      client: c,
      turn,
      lose,
      at: this.clock.now(),
      wait,
      submission: result,
      replaced: false,
      disconnected: false,
      outcome: null,
    };
    this.requests.set(id, request);
    c.open = request;
    void result.outcome.then((outcome) => this.arrived.push({ request, outcome }));
  }

  // --- outcomes --------------------------------------------------------------------------------

  private inspect(event: InspectionEvent): void {
    if (event.type !== '@xstate.action' || event.action.type !== 'xstate.emit') return;
    const emitted = (event.action.params as { event?: { type?: string; requestId?: string; side?: Side } } | undefined)?.event;
    if (!emitted?.requestId) return;
    const side = this.sideOf.get(emitted.requestId);
    if (this.emittedAt.has(emitted.requestId)) this.problems.push(`5: ${emitted.requestId} was answered twice (again with ${emitted.type})`);
    if (emitted.side !== side) this.problems.push(`2: ${emitted.requestId} of ${side ?? 'nobody'} was answered as side ${emitted.side}`);
    this.emittedAt.set(emitted.requestId, this.clock.now());
  }

  private async settle(): Promise<void> {
    await new Promise<void>((resolve) => setImmediate(resolve));
    for (const { request, outcome } of this.arrived.splice(0)) this.apply(request, outcome);
    this.check();
  }

  private apply(r: Request, o: Outcome): void {
    const c = r.client;
    const text = o.type === 'reply' ? `reply ${JSON.stringify(o.content)}` : o.type === 'reject' ? `reject ${o.code}` : 'disconnected';
    this.note(`  ${r.id} (${c.side}) <- ${text}`);
    if (r.outcome) this.fail(`5: ${r.id} got a second outcome`);
    r.outcome = o;
    if (r.disconnected) {
      if (o.type !== 'disconnected') this.fail(`5: ${r.id} was disconnected but got ${text}`);
      return;
    }
    if (o.type === 'disconnected') return this.fail(`5: ${r.id} reports a disconnect that never happened`);
    if (r.replaced) {
      if (o.type !== 'reject' || o.code !== 'superseded') this.fail(`4: ${r.id} was superseded by a later request of ${c.side} but got ${text}`);
      return;
    }
    if (c.open !== r) return this.fail(`5: ${r.id} got ${text} but ${c.side} no longer waits on it`);
    c.open = null;
    const turn = r.turn;
    if (o.type === 'reply') {
      if (turn.answer !== null) {
        if (o.content !== turn.answer) this.fail(`3: a retry of ${turn.content} got ${JSON.stringify(o.content)}, not its answer ${JSON.stringify(turn.answer)}`);
        if (turn.status === 'lost' && !r.lose) this.record(c, turn);
      } else {
        turn.answer = o.content;
        if (r.lose) turn.status = 'lost';
        else this.record(c, turn);
      }
      return;
    }
    switch (o.code) {
      case 'superseded':
        return this.fail(`4: ${r.id} was superseded although ${c.side} sent nothing since`);
      case 'session_closed':
        if (!this.closing) this.fail(`5: ${r.id} got session_closed while the session was open`);
        return;
      case 'shutting_down':
        return this.fail(`5: ${r.id} got shutting_down without a shutdown`);
      default: {
        const elapsed = (this.emittedAt.get(r.id) ?? this.clock.now()) - r.at;
        const handshake = { code: 'handshake_timeout', ms: HANDSHAKE_MS };
        const turnWait = { code: 'turn_timeout', ms: TURN_MS };
        const allowed = r.wait === 'handshake' ? [handshake] : r.wait === 'turn' || this.strictTimers ? [turnWait] : [handshake, turnWait];
        if (!allowed.some((want) => want.code === o.code && want.ms === elapsed)) {
          const wants = allowed.map((want) => `${want.code} after ${want.ms} ms`).join(' or ');
          this.fail(`${r.wait === 'before-peer' ? 6 : 5}: ${r.id} (${r.wait} wait of ${c.side}) got ${o.code} after ${elapsed} ms, not ${wants}`);
        }
        if (turn.status !== 'open') this.fail(`5: ${r.id} timed out although its turn was answered`);
      }
    }
  }

  private record(c: Client, turn: Turn): void {
    c.received.push(turn.answer!);
    turn.status = 'answered';
  }

  private check(): void {
    const problem = this.problems.shift();
    if (problem) this.fail(problem);
    for (const c of [this.clients.A, this.clients.B]) {
      const got = pieces(c.received);
      const own = got.find((piece) => piece.startsWith(`${c.side}#`));
      if (own) this.fail(`2: ${c.side} received its own message ${own}`);
      const expected = this.expectedFor(c);
      const isPrefix = got.length <= expected.length && got.every((piece, i) => piece === expected[i]);
      if (!isPrefix) this.fail(`1: ${c.side} received ${JSON.stringify(got)}, but ${this.other(c).side} sent ${JSON.stringify(expected)}`);
      if (c.open && this.owed(c) > 0) {
        this.fail(`1: ${c.side} is waiting (${c.open.id}) but is owed ${JSON.stringify(expected.slice(got.length))}`);
      }
      if (c.open && this.clock.now() - c.open.at >= LONGEST_MS) this.fail(`5: ${c.open.id} is still held after every timeout`);
    }
    for (const r of this.requests.values()) {
      if ((r.replaced || r.disconnected) && !r.outcome) this.fail(`5: ${r.id} was ${r.replaced ? 'superseded' : 'disconnected'} but has no outcome`);
    }
    const session = this.registry.get(SESSION);
    const [a, b] = [this.clients.A, this.clients.B];
    if (!session) {
      if (!this.closing && (a.sent.length > 0 || b.sent.length > 0)) this.fail('4: the session vanished');
      return;
    }
    const state = session.state;
    if (!CHART_STATES.includes(state)) this.fail(`4: the chart is in ${JSON.stringify(state)}`);
    if (this.closing) return;
    const held = a.open !== null || b.open !== null;
    const want = a.sent.length > 0 && b.sent.length > 0 ? (held ? 'ACTIVE' : 'DORMANT') : 'AWAITING_PEER';
    if (state !== want) this.fail(`4: the chart is in ${state}, expected ${want} (${held ? 'a request is held' : 'nothing held'})`);
  }

  // --- the contract's view -------------------------------------------------------------------

  /** Whether the contract attributes a new message of `c` to `c` (§3): never a known ambiguity. */
  private canSendNew(c: Client): boolean {
    if (c.kind.explicit || (c.kind.history && c.received.length > 0)) return true;
    // No history and no side: rule 4, order.
    const peer = this.other(c);
    if (c.sent.length === 0) return peer.sent.length > 0 || c.side === 'A';
    if (peer.sent.length === 0) return false;
    const waiting = c.open !== null;
    const peerWaiting = peer.open !== null;
    if (waiting !== peerWaiting) return !waiting;
    return !waiting && this.latestSide !== c.side;
  }

  private other(c: Client): Client {
    return this.clients[otherSide(c.side)];
  }

  /** The other side's new messages, in order, that `c` must receive. */
  private expectedFor(c: Client): string[] {
    const peer = this.other(c);
    return peer.side === 'A' ? peer.sent.slice(1) : [...peer.sent];
  }

  private owed(c: Client): number {
    return this.expectedFor(c).length - pieces(c.received).length;
  }

  private note(line: string): void {
    this.log.push(`t=${this.clock.now()} ${line}`);
  }

  private fail(message: string): never {
    throw new Violation(`invariant ${message}\n  trace:\n    ${this.log.join('\n    ')}`);
  }
}

const pieces = (deliveries: readonly string[]): string[] => deliveries.flatMap((d) => d.split('\n\n'));

async function play(
  kinds: Readonly<Record<Side, ClientKind>>,
  commands: readonly Command[],
  ending: Ending,
  strictTimers = false,
): Promise<void> {
  const scenario = new Scenario(kinds, strictTimers);
  for (const command of commands) await scenario.run(command);
  await scenario.drain();
  await scenario.finish(ending);
}

// ---------------------------------------------------------------------------------------------

const sdkClient = fc.record({ history: fc.constant(true), explicit: fc.constant(false), keys: fc.boolean() });
const anyClient = fc.record({ history: fc.boolean(), explicit: fc.boolean(), keys: fc.boolean() });

describe('delivery under random interleavings of two clients', () => {
  it('SDK chat clients that re-send their full history', async () => {
    await fc.assert(
      fc.asyncProperty(fc.record({ A: sdkClient, B: sdkClient }), commandsArb, endingArb, (k, c, e) => play(k, c, e)),
      { numRuns: 500 },
    );
  });

  it('explicit-side and stateless clients, alone or mixed with full-history ones', async () => {
    const kinds = fc
      .record({ A: anyClient, B: anyClient })
      .filter(({ A, B }) => !(A.history && !A.explicit && B.history && !B.explicit));
    await fc.assert(fc.asyncProperty(kinds, commandsArb, endingArb, (k, c, e) => play(k, c, e)), { numRuns: 500 });
  });

  it('a wait before the peer is known, other than A\'s handshake, is bounded by the turn timeout', async () => {
    const explicitClient = fc.record({ history: fc.boolean(), explicit: fc.constant(true), keys: fc.boolean() });
    await fc.assert(
      fc.asyncProperty(fc.record({ A: explicitClient, B: explicitClient }), commandsArb, endingArb, (k, c, e) => play(k, c, e, true)),
      { numRuns: 200 },
    );
  });
});
