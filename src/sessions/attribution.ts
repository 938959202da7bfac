/**
 * Which side sent a request, and is it new? (PROTOCOL.md §3)
 *
 * A pure decision over the session's context: the result becomes the event the session
 * actor receives (CONNECT_x, MESSAGE_FROM_x, RETRY_FROM_x), so replaying events never has to
 * attribute anything again.
 */
import { sessionName } from '../auth/tenants.js';
import { otherSide, SIDES, unsentMessages, type SessionContext, type Side, type SideState } from '../../machines/session.logic.js';

/** A chat request reduced to what attribution and delivery need, whatever its wire format. */
export interface TurnRequest {
  /** From a `<session>|A` / `<session>|B` model suffix. */
  readonly explicitSide: Side | null;
  /** The assistant messages of the request's history after its preamble, in order: deliveries it shows. */
  readonly assistantHistory: readonly string[];
  /**
   * The user messages after the last assistant message (all of them without one), in order:
   * the candidates for the request's new content (PROTOCOL.md §2). Never empty.
   */
  readonly messages: readonly string[];
  readonly system: string | null;
  /** Assistant messages before the first user message (a character greeting): the client's own. */
  readonly preamble?: string | null;
  /** `X-Stainless-Retry-Count`, 0 when absent. */
  readonly retryCount: number;
  readonly idempotencyKey: string | null;
  /**
   * The request names a delivery it continues from instead of re-sending history (OpenAI
   * Responses' previous_response_id): the side it was made to and how many deliveries that
   * side had been given with it.
   */
  readonly continues?: { readonly side: Side; readonly seen: number } | null;
  /** Every request is a new turn, never a retry (a persistent connection's message frames). */
  readonly alwaysNew?: boolean;
  /** Fingerprint of the client's API key when keys are configured; it binds a side on joining. */
  readonly client?: string | null;
}

export type Attribution =
  | {
      readonly kind: 'connect' | 'message';
      readonly side: Side;
      readonly seen: number | null;
      /** The request's user messages that the side has not sent yet: its new content, one by one. */
      readonly messages: readonly string[];
    }
  | { readonly kind: 'retry'; readonly side: Side; readonly seen: number | null }
  | { readonly kind: 'conflict'; readonly message: string };

/** A new turn's content: its new messages joined by a blank line (PROTOCOL.md §2). */
export const joinMessages = (messages: readonly string[]): string => messages.join('\n\n');

const sameText = (a: string, b: string): boolean => a === b || a.trim() === b.trim();

/** The history shows exactly the first deliveries this side was given. */
function historyMatches(side: SideState, history: readonly string[]): boolean {
  if (!side.joined || history.length > side.deliveries.length) return false;
  for (let i = 0; i < history.length; i++) {
    if (!sameText(history[i]!, side.deliveries[i]!)) return false;
  }
  return true;
}

/** The request sent nothing new: every user message of it was sent already since the delivery it shows. */
function sentAlready(side: SideState, seen: number | null, req: TurnRequest): boolean {
  return side.lastTurn !== null && unsentMessages(side, seen, req.messages).length === 0;
}

/** The request is the side's latest turn once more (same `seen`, same messages). */
function repeatsLatestTurn(side: SideState, seen: number | null, req: TurnRequest): boolean {
  const turn = side.lastTurn;
  if (turn === null || turn.seen !== seen || turn.messages.length !== req.messages.length) return false;
  return turn.messages.every((m, i) => sameText(m, req.messages[i]!));
}

function hasRetryHint(side: SideState, req: TurnRequest): boolean {
  return (
    req.retryCount >= 1 ||
    (req.idempotencyKey !== null && side.lastTurn?.idempotencyKey === req.idempotencyKey)
  );
}

/**
 * Given the side, is the request a new turn or a retry of the side's latest one? New content is
 * what the side has not sent since the delivery the request shows; nothing new makes a retry,
 * and so does a retry hint on a repeat of an answered turn (a stateless client that lost its answer).
 */
function classify(ctx: SessionContext, side: Side, req: TurnRequest, seen: number | null): Attribution {
  const state = ctx.sides[side];
  if (!state.joined) return { kind: 'connect', side, seen, messages: req.messages };
  if (req.alwaysNew) return { kind: 'message', side, seen, messages: req.messages };
  const unsent = unsentMessages(state, seen, req.messages);
  if (unsent.length === 0 || (hasRetryHint(state, req) && repeatsLatestTurn(state, seen, req))) return { kind: 'retry', side, seen };
  return { kind: 'message', side, seen, messages: unsent };
}

function unknownHistory(ctx: SessionContext, side: Side | null): Attribution {
  const who = side ? `side ${side}` : 'either side';
  const known = ctx.sides.A.joined || ctx.sides.B.joined;
  return {
    kind: 'conflict',
    message: known
      ? `The assistant messages in this request's history do not match what session '${sessionName(ctx.sessionId)}' delivered to ${who}. Start a new conversation or use a new session id.`
      : `Session '${sessionName(ctx.sessionId)}' has delivered nothing yet, but this request's history shows assistant messages: it belongs to an earlier conversation (one that ended, or from before a restart without a journal). Start a new conversation or use a new session id.`,
  };
}

/** The side a newcomer takes by order (§3 rule 4): A first, then B; null once both have joined. */
export function openSide(ctx: SessionContext): Side | null {
  return !ctx.sides.A.joined ? 'A' : !ctx.sides.B.joined ? 'B' : null;
}

export function attributeRequest(ctx: SessionContext, req: TurnRequest): Attribution {
  const history = req.assistantHistory;

  // 0. A named earlier delivery (previous_response_id) names the side and what it has seen.
  if (req.continues) {
    const { side, seen } = req.continues;
    const state = ctx.sides[side];
    if ((req.explicitSide && req.explicitSide !== side) || !state.joined || state.deliveries.length < seen) {
      return {
        kind: 'conflict',
        message: `The previous response this request continues from is not one session '${sessionName(ctx.sessionId)}' gave${req.explicitSide && req.explicitSide !== side ? ` to side ${req.explicitSide}` : ''}: it belongs to another conversation, or one that ended. Start a new conversation or use a new session id.`,
      };
    }
    return classify(ctx, side, req, seen + history.length);
  }

  const seen = history.length > 0 ? history.length : null;

  // 1. Explicit side.
  if (req.explicitSide) {
    if (history.length > 0 && !historyMatches(ctx.sides[req.explicitSide], history)) {
      return unknownHistory(ctx, req.explicitSide);
    }
    return classify(ctx, req.explicitSide, req, seen);
  }

  // 2. History names the side; a history matching neither is refused.
  let candidates: readonly Side[] = SIDES;
  if (history.length > 0) {
    candidates = SIDES.filter((side) => historyMatches(ctx.sides[side], history));
    if (candidates.length === 0) return unknownHistory(ctx, null);
    if (candidates.length === 1) return classify(ctx, candidates[0]!, req, seen);
  }

  // 3. A repeat of a side's latest turn whose wait ended unanswered (timed out, client gone),
  //    or that carries a retry hint.
  for (const side of candidates) {
    const state = ctx.sides[side];
    const waitEnded = state.held === null && state.lastTurn?.answer === null;
    if ((sentAlready(state, seen, req) || repeatsLatestTurn(state, seen, req)) && (waitEnded || hasRetryHint(state, req))) {
      return classify(ctx, side, req, seen);
    }
  }

  // 4. Order: first to appear is A, second is B; then alternation for stateless clients.
  const open = openSide(ctx);
  if (open) return classify(ctx, open, req, seen);
  const { A, B } = ctx.sides;
  const waitingA = A.held !== null;
  const waitingB = B.held !== null;
  let side: Side;
  if (waitingA !== waitingB) side = waitingA ? 'B' : 'A';
  else side = ctx.latestSide ? otherSide(ctx.latestSide) : 'A';
  return classify(ctx, side, req, seen);
}
