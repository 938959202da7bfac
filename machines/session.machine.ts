/**
 * The session state chart (PROTOCOL.md §5). Pure: no I/O, no clocks, no HTTP.
 *
 * The chart decides *when*; session.logic.ts decides *what* (queues, deliveries, supersession).
 * Replies leave the chart as emitted `reply`/`reject` events; timers are XState delays read
 * from context, so tests drive them with a SimulatedClock. `npm run chart` exports this
 * chart for the Stately visualizer (docs/state-chart.md).
 */
import { enqueueActions, setup } from 'xstate';
import {
  bothJoined,
  closeSession,
  disconnect,
  initialContext,
  isHeld,
  listen,
  receiveTurn,
  retryTurn,
  timeOut,
  type CloseReason,
  type Effect,
  type SessionContext,
  type SessionTiming,
  type Side,
  type Step,
  type TurnPayload,
} from './session.logic.js';

export type SessionEvent =
  | { type: 'CONNECT_A'; turn: TurnPayload }
  | { type: 'CONNECT_B'; turn: TurnPayload }
  | { type: 'MESSAGE_FROM_A'; turn: TurnPayload }
  | { type: 'MESSAGE_FROM_B'; turn: TurnPayload }
  /** `stream`: the retry is a streaming request (its wait, if it takes one over, is a stream's). */
  | { type: 'RETRY_FROM_A'; requestId: string; at: number; stream?: boolean }
  | { type: 'RETRY_FROM_B'; requestId: string; at: number; stream?: boolean }
  /** A persistent connection of a joined side waits for its next delivery (no turn, no timer). */
  | { type: 'LISTEN_A'; requestId: string; at: number }
  | { type: 'LISTEN_B'; requestId: string; at: number }
  | { type: 'DISCONNECT_A'; requestId: string; at: number }
  | { type: 'DISCONNECT_B'; requestId: string; at: number }
  | { type: 'TIMEOUT'; requestId: string }
  | { type: 'CLOSE'; reason: CloseReason }
  /**
   * The session was rebuilt from its journal (a restart, or another instance of a cluster took
   * it over): its idle timer runs on from its last recorded activity, not from `at`.
   */
  | { type: 'RESUMED'; at: number }
  /**
   * Cluster mode: another instance runs the session now (this one was fenced out, or handed it
   * over). The actor stops here with no fact: the session goes on from its journal elsewhere.
   */
  | { type: 'EVICT' };

export type SessionEmitted = Extract<Effect, { type: 'reply' | 'reject' }>;

export interface SessionInput {
  sessionId: string;
  timing: SessionTiming;
}

/** Turns of either side, once joined: they never change the state by themselves. */
const TURNS = {
  MESSAGE_FROM_A: { actions: 'receiveTurn' },
  MESSAGE_FROM_B: { actions: 'receiveTurn' },
  RETRY_FROM_A: { actions: 'retryTurn' },
  RETRY_FROM_B: { actions: 'retryTurn' },
  LISTEN_A: { actions: 'listen' },
  LISTEN_B: { actions: 'listen' },
} as const;

/** What can end a held request's wait other than a reply. */
const WAITS = {
  DISCONNECT_A: { actions: 'forgetRequest' },
  DISCONNECT_B: { actions: 'forgetRequest' },
  TIMEOUT: { actions: 'timeOutRequest' },
} as const;

/**
 * The same, as self-transitions that re-enter `state`: in an idle state every event is
 * activity, and re-entry restarts the state's `sessionTtl` timer, so the TTL counts from the
 * last activity.
 */
const renewing = <const S extends string, const T extends Record<string, { readonly actions: string }>>(state: S, transitions: T) =>
  Object.fromEntries(Object.entries(transitions).map(([event, t]) => [event, { ...t, target: state, reenter: true }])) as {
    [K in keyof T]: T[K] & { target: S; reenter: true };
  };

const sideOf = (event: { type: string }): Side => (event.type.endsWith('A') ? 'A' : 'B');

/**
 * How long an idle timer of `ttlMs` runs when its state is entered by `event`: all of it after
 * activity; after RESUMED (a rebuilt session), what is left of it since the last recorded
 * activity, so that a restart or a takeover does not extend a session's life.
 */
function idleLeft(context: SessionContext, event: SessionEvent, ttlMs: number): number {
  if (event.type !== 'RESUMED' || context.lastActivityAt === null) return ttlMs;
  return Math.max(0, ttlMs - Math.max(0, event.at - context.lastActivityAt));
}

export const sessionMachine = setup({
  types: {
    context: {} as SessionContext,
    events: {} as SessionEvent,
    input: {} as SessionInput,
    emitted: {} as SessionEmitted,
  },
  delays: {
    handshakeTimeout: ({ context }) => context.timing.handshakeTimeoutMs,
    turnTimeout: ({ context }) => context.timing.turnTimeoutMs,
    streamTurnTimeout: ({ context }) => context.timing.streamTurnTimeoutMs,
    sessionTtl: ({ context, event }) => idleLeft(context, event, context.timing.sessionTtlMs),
    // A session only one side ever joined holds nothing worth an hour's slot once nobody waits.
    unjoinedTtl: ({ context, event }) => idleLeft(context, event, context.timing.unjoinedTtlMs ?? context.timing.sessionTtlMs),
  },
  guards: {
    bothSidesJoined: ({ context }) => bothJoined(context),
    requestHeld: ({ context }) => isHeld(context),
    nothingHeld: ({ context }) => !isHeld(context),
  },
  actions: {
    receiveTurn: enqueueActions(({ context, event, enqueue }) => {
      if (!('turn' in event)) return;
      applyStep(enqueue, receiveTurn(context, sideOf(event), event.turn));
    }),
    retryTurn: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'RETRY_FROM_A' && event.type !== 'RETRY_FROM_B') return;
      applyStep(enqueue, retryTurn(context, sideOf(event), event.requestId, event.at, event.stream === true));
    }),
    listen: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'LISTEN_A' && event.type !== 'LISTEN_B') return;
      applyStep(enqueue, listen(context, sideOf(event), event.requestId, event.at));
    }),
    forgetRequest: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'DISCONNECT_A' && event.type !== 'DISCONNECT_B') return;
      applyStep(enqueue, disconnect(context, sideOf(event), event.requestId, event.at));
    }),
    timeOutRequest: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'TIMEOUT') return;
      applyStep(enqueue, timeOut(context, event.requestId));
    }),
    closeSession: enqueueActions(({ context, event, enqueue }) => {
      const reason: CloseReason = event.type === 'CLOSE' ? event.reason : 'expired';
      applyStep(enqueue, closeSession(context, reason));
    }),
  },
}).createMachine({
  id: 'session',
  initial: 'EMPTY',
  context: ({ input }) => initialContext(input.sessionId, input.timing),
  on: {
    EVICT: { target: '.CLOSED' },
  },
  states: {
    EMPTY: {
      on: {
        CONNECT_A: { target: 'AWAITING_PEER', actions: 'receiveTurn' },
        CONNECT_B: { target: 'AWAITING_PEER', actions: 'receiveTurn' },
        CLOSE: { target: 'CLOSING', actions: 'closeSession' },
      },
    },
    AWAITING_PEER: {
      always: { guard: 'bothSidesJoined', target: 'ACTIVE' },
      // Inactivity: only while nothing is held (a held handshake has its own timeout), and as
      // short as a handshake's wait: a peer that never came, a client that left.
      after: { unjoinedTtl: { guard: 'nothingHeld', target: 'CLOSING', actions: 'closeSession' } },
      on: {
        ...renewing('AWAITING_PEER', { CONNECT_A: { actions: 'receiveTurn' }, CONNECT_B: { actions: 'receiveTurn' }, ...TURNS, ...WAITS }),
        RESUMED: { target: 'AWAITING_PEER', reenter: true },
        CLOSE: { target: 'CLOSING', actions: 'closeSession' },
      },
    },
    ACTIVE: {
      always: { guard: 'nothingHeld', target: 'DORMANT' },
      on: {
        ...TURNS,
        ...WAITS,
        CLOSE: { target: 'CLOSING', actions: 'closeSession' },
      },
    },
    DORMANT: {
      always: { guard: 'requestHeld', target: 'ACTIVE' },
      after: { sessionTtl: { target: 'CLOSING', actions: 'closeSession' } },
      on: {
        ...renewing('DORMANT', TURNS),
        RESUMED: { target: 'DORMANT', reenter: true },
        CLOSE: { target: 'CLOSING', actions: 'closeSession' },
      },
    },
    CLOSING: {
      always: { target: 'CLOSED' },
    },
    CLOSED: {
      type: 'final',
    },
  },
});

export type SessionStateName = 'EMPTY' | 'AWAITING_PEER' | 'ACTIVE' | 'DORMANT' | 'CLOSING' | 'CLOSED';

type Enqueue = Parameters<Parameters<typeof enqueueActions<SessionContext, SessionEvent, undefined, SessionEvent, never, never, never, 'handshakeTimeout' | 'turnTimeout' | 'streamTurnTimeout' | 'sessionTtl' | 'unjoinedTtl', SessionEmitted>>[0]>[0]['enqueue'];

const TIMER_DELAYS = { handshake: 'handshakeTimeout', turn: 'turnTimeout', stream: 'streamTurnTimeout' } as const;

/** Turns a logic step into chart actions: the new context, timers, and emitted replies. */
function applyStep(enqueue: Enqueue, step: Step): void {
  enqueue.assign(step.context);
  for (const effect of step.effects) {
    switch (effect.type) {
      case 'arm':
        enqueue.raise(
          { type: 'TIMEOUT', requestId: effect.requestId },
          { id: effect.requestId, delay: TIMER_DELAYS[effect.timer] },
        );
        break;
      case 'disarm':
        enqueue.cancel(effect.requestId);
        break;
      default:
        enqueue.emit(effect);
    }
  }
}
