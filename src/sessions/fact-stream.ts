/**
 * The fact stream: the one decoder of the actor system's inspection events (XState's one tap).
 * Each step a session actor takes (an event, the actions it runs, the state it reaches) becomes
 * the session facts it made, published once, in order, with the state before and after. The
 * journal, metrics, traces, the transition log and the console subscribe here; nothing else
 * reads inspection events or the chart's event names.
 */
import type { ActorRefLike, InspectionEvent } from 'xstate';
import type { MessageDelivered, SessionFact, TurnFacts } from '../../machines/session.facts.js';
import { heldSide, type SessionContext, type Side, type TurnPayload } from '../../machines/session.logic.js';
import type { SessionEmitted, SessionEvent, SessionStateName } from '../../machines/session.machine.js';

/** One step of one session: the facts it made, and where it left the session. */
export interface SessionStep {
  readonly session: string;
  readonly facts: readonly SessionFact[];
  readonly previous: SessionStateName;
  readonly state: SessionStateName;
  /** The session after the step. */
  readonly context: SessionContext;
}

export type StepListener = (step: SessionStep) => void;

interface Pending {
  readonly actor: ActorRefLike;
  readonly before: SessionContext;
  readonly previous: SessionStateName;
  readonly facts: SessionFact[];
  /** The time of the step: its event's own time, or the clock's for timers and closes. */
  readonly at: number;
}

const sideOf = (type: string): Side => (type.endsWith('A') ? 'A' : 'B');

function turnFacts(turn: TurnPayload): TurnFacts {
  const { requestId: _request, at: _at, ...facts } = turn;
  return facts;
}

export class FactStream {
  private readonly listeners: StepListener[] = [];
  private pending: Pending | null = null;

  /**
   * `now` times the facts whose events carry no time (timers, closes); `report` hears of a
   * listener that threw (the step still reaches the other listeners).
   */
  constructor(
    private readonly now: () => number = Date.now,
    private readonly report: (err: unknown) => void = (err) => process.emitWarning(err instanceof Error ? err : new Error(String(err)), 'FactListenerError'),
  ) {}

  /** Adds a listener; returns its removal. Listeners are called in the order they subscribed. */
  subscribe(listener: StepListener): () => void {
    this.listeners.push(listener);
    return () => {
      const i = this.listeners.indexOf(listener);
      if (i !== -1) this.listeners.splice(i, 1);
    };
  }

  /** Pass this to the actor system as its `inspect` option. */
  readonly inspect = (inspection: InspectionEvent): void => {
    switch (inspection.type) {
      case '@xstate.event':
        this.begin(inspection.actorRef, inspection.event as SessionEvent);
        return;
      case '@xstate.action':
        if (this.pending?.actor === inspection.actorRef) this.action(this.pending, inspection.action as { type: string; params?: { event?: SessionEmitted } });
        return;
      case '@xstate.snapshot':
        if (this.pending?.actor === inspection.actorRef) this.end(this.pending, inspection.snapshot as { value?: unknown; context?: SessionContext });
        return;
    }
  };

  private begin(actor: ActorRefLike, event: SessionEvent): void {
    const snapshot = actor.getSnapshot() as { value?: unknown; context?: SessionContext } | undefined;
    const before = snapshot?.context;
    // The systems' root and a session's own init are not session steps.
    if (!before?.sessionId || typeof snapshot?.value !== 'string') return;
    const at = 'turn' in event ? event.turn.at : 'at' in event ? event.at : this.now();
    const pending: Pending = { actor, before, previous: snapshot.value as SessionStateName, facts: [], at };
    const fact = this.factOf(event, before, at);
    if (fact) pending.facts.push(fact);
    this.pending = pending;
  }

  private factOf(event: SessionEvent, before: SessionContext, at: number): SessionFact | null {
    const session = before.sessionId;
    switch (event.type) {
      case 'CONNECT_A':
      case 'CONNECT_B':
        return { type: 'SideConnected', session, at, side: sideOf(event.type), request: event.turn.requestId, turn: turnFacts(event.turn) };
      case 'MESSAGE_FROM_A':
      case 'MESSAGE_FROM_B':
        return { type: 'MessageSent', session, at, side: sideOf(event.type), request: event.turn.requestId, turn: turnFacts(event.turn) };
      case 'RETRY_FROM_A':
      case 'RETRY_FROM_B':
        return { type: 'RetryReceived', session, at, side: sideOf(event.type), request: event.requestId, ...(event.stream ? { stream: true } : {}) };
      case 'LISTEN_A':
      case 'LISTEN_B':
        return { type: 'ListenStarted', session, at, side: sideOf(event.type), request: event.requestId };
      case 'DISCONNECT_A':
      case 'DISCONNECT_B': {
        // A request that no longer waits (answered, replaced) leaving changes nothing.
        const side = sideOf(event.type);
        return before.sides[side].held?.requestId === event.requestId ? { type: 'ClientDisconnected', session, at, side, request: event.requestId } : null;
      }
      case 'TIMEOUT': {
        const side = heldSide(before, event.requestId);
        const timer = side ? before.sides[side].held!.timer : null;
        return side && timer !== 'none' ? { type: 'TimedOut', session, at, side, request: event.requestId, timer } : null;
      }
      case 'CLOSE':
        return { type: 'SessionClosed', session, at, reason: event.reason };
      case 'RESUMED':
        return { type: 'SessionResumed', session, at };
      case 'EVICT':
        return null; // another instance runs the session: nothing happened to it

      default:
        // The chart's inactivity timers (its delayed transitions) end the session.
        return (event as { type: string }).type.startsWith('xstate.after.') ? { type: 'SessionExpired', session, at } : null;
    }
  }

  private action(pending: Pending, action: { type: string; params?: { event?: SessionEmitted } }): void {
    if (action.type !== 'xstate.emit') return;
    const emitted = action.params?.event;
    if (emitted?.type !== 'reply' || emitted.repeat) return;
    const held = pending.before.sides[emitted.side].held;
    const fact: MessageDelivered = {
      type: 'MessageDelivered',
      session: pending.before.sessionId,
      at: pending.at,
      side: emitted.side,
      request: emitted.requestId,
      content: emitted.content,
      delivery: emitted.delivery,
      waitedMs: held?.requestId === emitted.requestId ? Math.max(0, pending.at - held.since) : 0,
    };
    pending.facts.push(fact);
  }

  private end(pending: Pending, snapshot: { value?: unknown; context?: SessionContext }): void {
    this.pending = null;
    if (pending.facts.length === 0 || !snapshot.context) return;
    this.publish({
      session: pending.before.sessionId,
      facts: pending.facts,
      previous: pending.previous,
      state: String(snapshot.value) as SessionStateName,
      context: snapshot.context,
    });
  }

  /** Publishes a step to every listener; a listener's failure never disturbs a session or the others. */
  publish(step: SessionStep): void {
    for (const listener of this.listeners) {
      try {
        listener(step);
      } catch (err) {
        this.report(err);
      }
    }
  }
}
