/**
 * The session's domain state and the pure functions that evolve it.
 *
 * Everything here is data in, data out: no clocks (timestamps arrive inside events), no I/O,
 * no timers (timers are requested as effects and armed by the state chart as XState delays).
 * The chart in session.machine.ts calls these from its named actions.
 */

export type Side = 'A' | 'B';
export const SIDES: readonly Side[] = ['A', 'B'];
export const otherSide = (side: Side): Side => (side === 'A' ? 'B' : 'A');

/** One request of a side as the proxy understood it (PROTOCOL.md §3). */
export interface Turn {
  /** 1-based count of this side's turns. */
  readonly seq: number;
  /** Deliveries to this side that the request's history shows; null when it shows none. */
  readonly seen: number | null;
  /** The turn's new content: its new user messages joined by a blank line. */
  readonly content: string;
  /** Those new user messages one by one (trimmed), so that a later request can tell which it already sent. */
  readonly messages: readonly string[];
  /** How many deliveries the side had been given when the turn arrived. */
  readonly after: number;
  readonly idempotencyKey: string | null;
  /** Side A's first turn: recorded, never forwarded. */
  readonly handshake: boolean;
  /** Index into the side's deliveries once a delivery has been written to this turn. */
  readonly answer: number | null;
}

/** handshake: A's first wait; turn: any other plain request's; stream: a streaming request's (kept alive, so longer). */
/** What a side's earlier turn sent, and when (see SideState.recent). */
export type SentTurn = Pick<Turn, 'after' | 'messages'>;

export type TimerKind = 'handshake' | 'turn' | 'stream';

/** A request held open, waiting for the other side. */
export interface Held {
  readonly requestId: string;
  /** 'none': a persistent connection's wait (a WebSocket side), which never times out. */
  readonly timer: TimerKind | 'none';
  /** When the wait began (the `at` of the event that started it), for countdowns. */
  readonly since: number;
}

export interface SideState {
  readonly joined: boolean;
  /** Everything this side has been given, one entry per response. */
  readonly deliveries: readonly string[];
  /** Contents from the other side not yet given to this side. */
  readonly queue: readonly string[];
  readonly lastTurn: Turn | null;
  /**
   * The side's latest turns (at most RECENT_TURNS), newest last: which user messages it already
   * sent since a given delivery (PROTOCOL.md §2), so that a re-sent one is never delivered twice.
   */
  readonly recent: readonly SentTurn[];
  readonly held: Held | null;
  readonly system: string | null;
  /** Assistant messages before the first user message of the side's history: its own, never forwarded. */
  readonly preamble: string | null;
  /** Fingerprint of the API key the side joined with (null without keys): it binds the side. */
  readonly client: string | null;
  /** The wire protocol of the side's latest turn (`openai`, `anthropic`, `websocket`, …), for views and metrics. */
  readonly protocol: string | null;
}

/** delivery: what one response gave a side (`side` is the receiver, `turn` its turn it answers). */
export type TranscriptKind = 'system' | 'preamble' | 'handshake' | 'message' | 'delivery';

export interface TranscriptEntry {
  readonly at: number;
  readonly side: Side;
  readonly kind: TranscriptKind;
  readonly turn: number;
  readonly content: string;
}

export interface SessionTiming {
  readonly handshakeTimeoutMs: number;
  readonly turnTimeoutMs: number;
  readonly streamTurnTimeoutMs: number;
  readonly sessionTtlMs: number;
  /**
   * Inactivity after which a session only one side joined ends, once nothing is held (the
   * service uses the handshake timeout). Absent: the session TTL.
   */
  readonly unjoinedTtlMs?: number;
}

/** How long a wait of `timer` may last. */
export function timerMs(timing: SessionTiming, timer: TimerKind): number {
  return timer === 'handshake' ? timing.handshakeTimeoutMs : timer === 'stream' ? timing.streamTurnTimeoutMs : timing.turnTimeoutMs;
}

export type CloseReason = 'deleted' | 'expired' | 'shutdown';

export interface SessionContext {
  readonly sessionId: string;
  readonly timing: SessionTiming;
  readonly sides: Readonly<Record<Side, SideState>>;
  /** The side that sent the latest turn, for the alternation of stateless clients. */
  readonly latestSide: Side | null;
  readonly transcript: readonly TranscriptEntry[];
  readonly lastActivityAt: number | null;
  readonly closeReason: CloseReason | null;
}

export interface TurnPayload {
  readonly requestId: string;
  readonly seen: number | null;
  /** The new content, as delivered: `messages` joined by a blank line. */
  readonly content: string;
  /** The new user messages one by one; absent in records written before it existed (then: [content]). */
  readonly messages?: readonly string[];
  readonly idempotencyKey: string | null;
  readonly system: string | null;
  /** The client's preamble (assistant messages before its first user message), when it has one. */
  readonly preamble?: string | null;
  readonly at: number;
  /** The request's wait has no timer (a persistent connection: a WebSocket side). */
  readonly untimed?: boolean;
  /** A streaming request: its wait is bounded by the stream timeout. */
  readonly stream?: boolean;
  /** Fingerprint of the client's API key, when keys are configured (never the key itself). */
  readonly client?: string | null;
  /** The wire protocol the request came in (a label; nothing in the chart depends on it). */
  readonly protocol?: string;
}

export type RejectCode =
  | 'superseded'
  | 'handshake_timeout'
  | 'turn_timeout'
  | 'session_closed'
  | 'shutting_down';

/** What the chart asks its surroundings to do; `reply` and `reject` are emitted to listeners. */
export type Effect =
  | {
      readonly type: 'reply';
      readonly side: Side;
      readonly requestId: string;
      readonly content: string;
      readonly delivery: number;
      readonly repeat: boolean;
    }
  | { readonly type: 'reject'; readonly side: Side; readonly requestId: string; readonly code: RejectCode }
  | { readonly type: 'arm'; readonly requestId: string; readonly timer: TimerKind }
  | { readonly type: 'disarm'; readonly requestId: string };

export interface Step {
  readonly context: SessionContext;
  readonly effects: readonly Effect[];
}

const emptySide: SideState = {
  joined: false,
  deliveries: [],
  queue: [],
  lastTurn: null,
  recent: [],
  held: null,
  system: null,
  preamble: null,
  client: null,
  protocol: null,
};

/** How many of a side's latest turns are kept to recognise re-sent messages. */
export const RECENT_TURNS = 32;

const trimmed = (text: string): string => text.trim();

/**
 * The user messages of `messages` this side has not already sent as turns since it was given
 * `seen` deliveries (null: since its latest delivery), in order (PROTOCOL.md §2). Each message
 * sent already cancels one equal message of the request; texts compare after trimming.
 */
export function unsentMessages(side: SideState, seen: number | null, messages: readonly string[]): string[] {
  const since = seen ?? side.deliveries.length;
  if (messages.length === 1) {
    // Almost every request: one message, sent already or not (no tally needed).
    const key = trimmed(messages[0]!);
    for (let i = side.recent.length - 1; i >= 0; i--) {
      const turn = side.recent[i]!;
      if (turn.after >= since && turn.messages.includes(key)) return [];
    }
    return [messages[0]!];
  }
  const sent = new Map<string, number>();
  for (const turn of side.recent) {
    if (turn.after < since) continue;
    for (const m of turn.messages) sent.set(m, (sent.get(m) ?? 0) + 1);
  }
  if (sent.size === 0) return [...messages];
  const unsent: string[] = [];
  for (const m of messages) {
    const key = trimmed(m);
    const count = sent.get(key) ?? 0;
    if (count > 0) sent.set(key, count - 1);
    else unsent.push(m);
  }
  return unsent;
}

export function initialContext(sessionId: string, timing: SessionTiming): SessionContext {
  return {
    sessionId,
    timing,
    sides: { A: emptySide, B: emptySide },
    latestSide: null,
    transcript: [],
    lastActivityAt: null,
    closeReason: null,
  };
}

export const isHeld = (ctx: SessionContext): boolean => ctx.sides.A.held !== null || ctx.sides.B.held !== null;
export const bothJoined = (ctx: SessionContext): boolean => ctx.sides.A.joined && ctx.sides.B.joined;
export const anyJoined = (ctx: SessionContext): boolean => ctx.sides.A.joined || ctx.sides.B.joined;
export const heldSide = (ctx: SessionContext, requestId: string): Side | null =>
  ctx.sides.A.held?.requestId === requestId ? 'A' : ctx.sides.B.held?.requestId === requestId ? 'B' : null;

/*
 * Lists in a context grow by `concat`, never by `[...list, item]`: a spread leaves the new
 * array room for 16 more items, and a held session keeps several of these arrays.
 */

/** Mutable working copy of one step; the step's result is frozen into a new context. */
class Draft {
  private readonly sides: Record<Side, SideState>;
  private readonly copied: Record<Side, boolean> = { A: false, B: false };
  /** Entries this step adds: the transcript is copied once, when the step ends. */
  private readonly added: TranscriptEntry[] = [];
  private latestSide: Side | null;
  private lastActivityAt: number | null;
  private closeReason: CloseReason | null;
  readonly effects: Effect[] = [];

  constructor(private readonly base: SessionContext) {
    this.sides = { A: base.sides.A, B: base.sides.B };
    this.latestSide = base.latestSide;
    this.lastActivityAt = base.lastActivityAt;
    this.closeReason = base.closeReason;
  }

  side(side: Side): SideState {
    return this.sides[side];
  }

  /**
   * A side's first change in a step copies it; later ones change that copy in place (one new
   * object a side a step, not one a change). The context the step started from is never touched.
   */
  update(side: Side, patch: Partial<SideState>): void {
    if (!this.copied[side]) {
      this.sides[side] = { ...this.sides[side] };
      this.copied[side] = true;
    }
    Object.assign(this.sides[side], patch);
  }

  record(entry: TranscriptEntry): void {
    this.added.push(entry);
  }

  touch(at: number): void {
    this.lastActivityAt = at;
  }

  /** The time of this step (every step that delivers touches the session first). */
  get now(): number {
    return this.lastActivityAt ?? 0;
  }

  setLatest(side: Side): void {
    this.latestSide = side;
  }

  close(reason: CloseReason): void {
    this.closeReason = reason;
  }

  finish(): Step {
    return {
      context: {
        ...this.base,
        sides: this.sides,
        transcript: this.added.length === 0 ? this.base.transcript : this.base.transcript.concat(this.added),
        latestSide: this.latestSide,
        lastActivityAt: this.lastActivityAt,
        closeReason: this.closeReason,
      },
      effects: this.effects,
    };
  }
}

/** Ends the wait of a side's held request, if any, with `code`. */
function release(d: Draft, side: Side, code: RejectCode): void {
  const held = d.side(side).held;
  if (!held) return;
  d.effects.push({ type: 'disarm', requestId: held.requestId });
  d.effects.push({ type: 'reject', side, requestId: held.requestId, code });
  d.update(side, { held: null });
}

/** Writes everything queued for `side` to its held request, as one delivery. */
function flush(d: Draft, side: Side): void {
  const state = d.side(side);
  if (!state.held || state.queue.length === 0 || !state.lastTurn) return;
  const content = state.queue.join('\n\n');
  const delivery = state.deliveries.length;
  d.effects.push({ type: 'disarm', requestId: state.held.requestId });
  d.effects.push({ type: 'reply', side, requestId: state.held.requestId, content, delivery, repeat: false });
  d.update(side, {
    deliveries: state.deliveries.concat(content),
    queue: [],
    held: null,
    lastTurn: { ...state.lastTurn, answer: delivery },
  });
  d.record({ at: d.now, side, kind: 'delivery', turn: state.lastTurn.seq, content });
}

/** How a request waits: no timer (a persistent connection), or a plain or streaming request's. */
export type WaitKind = 'untimed' | 'plain' | 'stream';

/** Holds `requestId` open for the side's latest turn, or answers it at once from the queue. */
function attach(d: Draft, side: Side, requestId: string, since: number, wait: WaitKind): void {
  // HANDSHAKE_TIMEOUT bounds only A's handshake; every other wait is a turn, a stream's longer.
  const timer: TimerKind | 'none' =
    wait === 'untimed' ? 'none' : d.side(side).lastTurn?.handshake ? 'handshake' : wait === 'stream' ? 'stream' : 'turn';
  d.update(side, { held: { requestId, timer, since } });
  if (d.side(side).queue.length > 0) {
    flush(d, side);
  } else if (timer !== 'none') {
    d.effects.push({ type: 'arm', requestId, timer });
  }
}

/** A new turn of `side`: its content goes to the other side (unless it is A's handshake). */
export function receiveTurn(ctx: SessionContext, side: Side, turn: TurnPayload): Step {
  const d = new Draft(ctx);
  const state = d.side(side);
  d.touch(turn.at);
  release(d, side, 'superseded');
  const seq = (state.lastTurn?.seq ?? 0) + 1;
  if (turn.system !== null && turn.system !== state.system) {
    d.update(side, { system: turn.system });
    d.record({ at: turn.at, side, kind: 'system', turn: seq, content: turn.system });
  }
  const preamble = turn.preamble ?? null;
  if (preamble !== null && preamble !== state.preamble) {
    d.update(side, { preamble });
    d.record({ at: turn.at, side, kind: 'preamble', turn: seq, content: preamble });
  }
  const handshake = side === 'A' && !state.joined;
  const latest: Turn = {
    seq,
    seen: turn.seen,
    content: turn.content,
    messages: (turn.messages ?? [turn.content]).map(trimmed),
    after: state.deliveries.length,
    idempotencyKey: turn.idempotencyKey,
    handshake,
    answer: null,
  };
  const recent = (state.recent.length < RECENT_TURNS ? state.recent : state.recent.slice(1 - RECENT_TURNS)).concat(latest);
  d.update(side, {
    joined: true,
    client: state.joined ? state.client : (turn.client ?? null),
    protocol: turn.protocol ?? state.protocol,
    lastTurn: latest,
    recent,
  });
  d.record({ at: turn.at, side, kind: handshake ? 'handshake' : 'message', turn: seq, content: turn.content });
  d.setLatest(side);
  if (!handshake) {
    const peer = otherSide(side);
    d.update(peer, { queue: d.side(peer).queue.concat(turn.content) });
    flush(d, peer);
  }
  const given = d.side(side).deliveries;
  if (turn.seen !== null && turn.seen < given.length) {
    // The client's history stops short of what it was given: a delivery was written to a
    // request whose client had just gone. That delivery answers this turn, given again, so the
    // client's history goes on matching the deliveries in order; what answers this turn's
    // message comes to its next request.
    d.update(side, { lastTurn: { ...d.side(side).lastTurn!, answer: turn.seen } });
    d.effects.push({ type: 'reply', side, requestId: turn.requestId, content: given[turn.seen]!, delivery: turn.seen, repeat: true });
    return d.finish();
  }
  attach(d, side, turn.requestId, turn.at, turn.untimed === true ? 'untimed' : turn.stream === true ? 'stream' : 'plain');
  return d.finish();
}

/** A retry of the side's latest turn: same answer again, or it takes over the wait. */
export function retryTurn(ctx: SessionContext, side: Side, requestId: string, at: number, stream = false): Step {
  const d = new Draft(ctx);
  d.touch(at);
  const state = d.side(side);
  const turn = state.lastTurn;
  if (!turn) return d.finish();
  if (turn.answer !== null) {
    const content = state.deliveries[turn.answer] ?? '';
    d.effects.push({ type: 'reply', side, requestId, content, delivery: turn.answer, repeat: true });
    return d.finish();
  }
  release(d, side, 'superseded');
  attach(d, side, requestId, at, stream ? 'stream' : 'plain');
  return d.finish();
}

/**
 * A persistent connection of a joined side waits for what comes next without sending a turn
 * (a WebSocket side after each delivery). Its wait has no timer; what is queued comes at once.
 */
export function listen(ctx: SessionContext, side: Side, requestId: string, at: number): Step {
  const d = new Draft(ctx);
  if (!d.side(side).joined || d.side(side).lastTurn === null) return d.finish();
  d.touch(at);
  release(d, side, 'superseded');
  attach(d, side, requestId, at, 'untimed');
  return d.finish();
}

/** The client of a held request went away: nothing is lost, its answer stays queued. */
export function disconnect(ctx: SessionContext, side: Side, requestId: string, at: number): Step {
  const d = new Draft(ctx);
  if (d.side(side).held?.requestId !== requestId) return d.finish();
  d.touch(at);
  d.effects.push({ type: 'disarm', requestId });
  d.update(side, { held: null });
  return d.finish();
}

/** A held request's timer ran out. */
export function timeOut(ctx: SessionContext, requestId: string): Step {
  const d = new Draft(ctx);
  const side = heldSide(ctx, requestId);
  if (!side) return d.finish();
  const timer = d.side(side).held?.timer ?? 'turn';
  if (timer === 'none') return d.finish();
  release(d, side, timer === 'handshake' ? 'handshake_timeout' : 'turn_timeout');
  return d.finish();
}

/** The session ends: every held request is answered with the reason. */
export function closeSession(ctx: SessionContext, reason: CloseReason): Step {
  const d = new Draft(ctx);
  d.close(reason);
  const code: RejectCode = reason === 'shutdown' ? 'shutting_down' : 'session_closed';
  for (const side of SIDES) release(d, side, code);
  return d.finish();
}

/** After a restart no request is held: what each would have received stays queued. */
export function releaseAll(ctx: SessionContext): SessionContext {
  if (!isHeld(ctx)) return ctx;
  return { ...ctx, sides: { A: { ...ctx.sides.A, held: null }, B: { ...ctx.sides.B, held: null } } };
}
