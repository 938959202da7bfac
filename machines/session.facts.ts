/**
 * Session facts: what happened to a session, named in the past tense, each with a payload of
 * its own. They are the one seam between the session actors and everything that watches them
 * (the journal, metrics, traces, the console, and later Redis and webhooks): the actors decide
 * (attribution, then the chart), the facts record the decision, and `evolve` folds them back
 * into a session, the same functions the chart's actions call. Replay, transcripts and the
 * console's conversation view are all that one fold.
 *
 * Pure: no I/O, no clocks (every fact carries its time), nothing of XState or of a wire format.
 * Fact types are a public format: never rename one or reuse a name; add new ones.
 */
import {
  bothJoined,
  closeSession,
  disconnect,
  initialContext,
  listen,
  receiveTurn,
  releaseAll,
  retryTurn,
  timeOut,
  type CloseReason,
  type SessionContext,
  type SessionTiming,
  type Side,
  type TimerKind,
  type TurnPayload,
} from './session.logic.js';

/** A turn as it was taken: everything of its request the session keeps (TurnPayload less its request id and time). */
export type TurnFacts = Omit<TurnPayload, 'requestId' | 'at'>;

interface Fact<T extends string> {
  readonly type: T;
  readonly session: string;
  /** When it happened, ms since the epoch. */
  readonly at: number;
}

/** A side's first turn (A's handshake, B's first prompt). */
export interface SideConnected extends Fact<'SideConnected'> {
  readonly side: Side;
  readonly request: string;
  readonly turn: TurnFacts;
}

/** A later new turn of a side. */
export interface MessageSent extends Fact<'MessageSent'> {
  readonly side: Side;
  readonly request: string;
  readonly turn: TurnFacts;
}

/** A request taken as a retry of its side's latest turn. */
export interface RetryReceived extends Fact<'RetryReceived'> {
  readonly side: Side;
  readonly request: string;
  readonly stream?: boolean;
}

/** A persistent connection (a WebSocket side) began waiting for its next delivery. */
export interface ListenStarted extends Fact<'ListenStarted'> {
  readonly side: Side;
  readonly request: string;
}

/** A held request's client went away; what it would have been given stays queued. */
export interface ClientDisconnected extends Fact<'ClientDisconnected'> {
  readonly side: Side;
  readonly request: string;
}

/** A held request's wait ran out (408). */
export interface TimedOut extends Fact<'TimedOut'> {
  readonly side: Side | null;
  readonly request: string;
  readonly timer: TimerKind | null;
}

/** A response carried content to a side (not a repeat of one given before). */
export interface MessageDelivered extends Fact<'MessageDelivered'> {
  readonly side: Side;
  /** The request it was written to; null for one recorded on start after a stop between two records. */
  readonly request: string | null;
  readonly content: string;
  /** Its index among the side's deliveries, from 0. */
  readonly delivery: number;
  /** How long that request had waited for it, in ms. */
  readonly waitedMs: number;
}

/** The session's inactivity timer ran out. */
export type SessionExpired = Fact<'SessionExpired'>;

/** The session was ended (DELETE, an admin) or the service shut down (it resumes after a restart). */
export interface SessionClosed extends Fact<'SessionClosed'> {
  readonly reason: CloseReason;
}

/** The service rebuilt the session on start; nothing of before is held any more. */
export type SessionResumed = Fact<'SessionResumed'>;

export type SessionFact =
  | SideConnected
  | MessageSent
  | RetryReceived
  | ListenStarted
  | ClientDisconnected
  | TimedOut
  | MessageDelivered
  | SessionExpired
  | SessionClosed
  | SessionResumed;

export type SessionFactType = SessionFact['type'];

export const SESSION_FACT_TYPES: readonly SessionFactType[] = [
  'SideConnected',
  'MessageSent',
  'RetryReceived',
  'ListenStarted',
  'ClientDisconnected',
  'TimedOut',
  'MessageDelivered',
  'SessionExpired',
  'SessionClosed',
  'SessionResumed',
];

/** Does this fact end the session for good (a shutdown does not: the session resumes)? */
export const endsSession = (fact: SessionFact): boolean => fact.type === 'SessionExpired' || (fact.type === 'SessionClosed' && fact.reason !== 'shutdown');

// The fields first, then the turn's: an object spread and then extended gets a hidden class of
// its own in V8, which replay would pay for every record.
const payloadOf = (fact: SideConnected | MessageSent): TurnPayload => ({ requestId: fact.request, at: fact.at, ...fact.turn });

/** The session after `fact`: the same functions the chart's actions call, without timers or replies. */
export function evolve(ctx: SessionContext, fact: SessionFact): SessionContext {
  switch (fact.type) {
    case 'SideConnected':
    case 'MessageSent':
      return receiveTurn(ctx, fact.side, payloadOf(fact)).context;
    case 'RetryReceived':
      return retryTurn(ctx, fact.side, fact.request, fact.at, fact.stream === true).context;
    case 'ListenStarted':
      return listen(ctx, fact.side, fact.request, fact.at).context;
    case 'ClientDisconnected':
      return disconnect(ctx, fact.side, fact.request, fact.at).context;
    case 'TimedOut':
      return timeOut(ctx, fact.request).context;
    case 'SessionExpired':
      return closeSession(ctx, 'expired').context;
    case 'SessionClosed':
      // A shutdown is not an end: what was held then is released, and the session goes on.
      return fact.reason === 'shutdown' ? releaseAll(ctx) : closeSession(ctx, fact.reason).context;
    case 'SessionResumed':
      // Held requests do not survive a restart: later messages queue instead of counting as
      // delivered to a connection that was gone.
      return releaseAll(ctx);
    case 'MessageDelivered':
      return ctx; // derived: the turn that made it delivered it already
  }
}

/** Folds a session's facts, from its first, into its context. */
export function fold(sessionId: string, timing: SessionTiming, facts: Iterable<SessionFact>): SessionContext {
  let ctx = initialContext(sessionId, timing);
  for (const fact of facts) ctx = evolve(ctx, fact);
  return ctx;
}

/** What a session's facts rebuild after a restart: its context, holding nothing, and its idle state. */
export function replay(sessionId: string, timing: SessionTiming, facts: Iterable<SessionFact>): { context: SessionContext; state: 'AWAITING_PEER' | 'DORMANT' } {
  const context = releaseAll(fold(sessionId, timing, facts));
  return { context, state: bothJoined(context) ? 'DORMANT' : 'AWAITING_PEER' };
}
