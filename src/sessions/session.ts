/**
 * One session: its XState actor, and the requests waiting on it.
 *
 * The actor owns the state; this wrapper turns a protocol-neutral TurnRequest into the
 * event attribution chose, and turns the actor's emitted replies back into per-request
 * outcomes for the HTTP layer.
 */
import { createActor, type Actor, type InspectionEvent, type SimulatedClock } from 'xstate';
import type { RejectCode, SessionContext, SessionTiming, Side } from '../../machines/session.logic.js';
import { sessionMachine, type SessionEmitted, type SessionEvent, type SessionStateName } from '../../machines/session.machine.js';
import { attributeRequest, type TurnRequest } from './attribution.js';

export type Outcome =
  | { readonly type: 'reply'; readonly content: string; readonly delivery: number; readonly repeat: boolean }
  | { readonly type: 'reject'; readonly code: RejectCode | 'journal_unavailable' }
  /** The client went away first; nothing was written to it. */
  | { readonly type: 'disconnected' };

export interface Submission {
  readonly side: Side;
  readonly kind: 'connect' | 'message' | 'retry';
  /** Settles when a delivery is written to the request or its wait ends. */
  readonly outcome: Promise<Outcome>;
  /** The client went away before the outcome: nothing is lost, the answer stays queued. */
  disconnect(): void;
}

export type SubmitResult = Submission | { readonly error: 'session_conflict'; readonly message: string };

export interface SessionOptions {
  readonly timing: SessionTiming;
  readonly clock?: SimulatedClock;
  /** Start from this context and state (a session rebuilt from its journal). */
  readonly restore?: { readonly context: SessionContext; readonly state: 'AWAITING_PEER' | 'DORMANT' };
  /** Resolves when what the session did so far is in the journal; replies wait for it. */
  readonly durable?: () => Promise<void>;
  readonly inspect?: (event: InspectionEvent) => void;
  readonly now?: () => number;
  readonly onClosed: (session: Session) => void;
}

export class Session {
  private readonly actor: Actor<typeof sessionMachine>;
  private readonly waiting = new Map<string, (outcome: Outcome) => void>();
  private readonly now: () => number;
  private readonly durable: (() => Promise<void>) | undefined;

  constructor(
    readonly id: string,
    options: SessionOptions,
  ) {
    this.now = options.now ?? Date.now;
    this.durable = options.durable;
    this.actor = createActor(sessionMachine, {
      input: { sessionId: id, timing: options.timing },
      ...(options.restore ? { snapshot: sessionMachine.resolveState({ value: options.restore.state, context: options.restore.context }) } : {}),
      ...(options.clock ? { clock: options.clock } : {}),
      ...(options.inspect ? { inspect: options.inspect } : {}),
    });
    this.actor.on('reply', (e) => this.settle(e));
    this.actor.on('reject', (e) => this.settle(e));
    this.actor.subscribe({ complete: () => options.onClosed(this) });
    this.actor.start();
    // A restored session re-enters its idle state, which starts its TTL anew.
    if (options.restore) this.actor.send({ type: 'RESUMED' });
  }

  get state(): SessionStateName {
    return this.actor.getSnapshot().value as SessionStateName;
  }

  get context(): SessionContext {
    return this.actor.getSnapshot().context;
  }

  get closed(): boolean {
    return this.actor.getSnapshot().status === 'done';
  }

  /** Attributes the request and sends the resulting event; the outcome follows the actor. */
  submit(request: TurnRequest, requestId: string): SubmitResult {
    const attribution = attributeRequest(this.context, request);
    if (attribution.kind === 'conflict') return { error: 'session_conflict', message: attribution.message };
    const { side, kind, seen } = attribution;
    const outcome = new Promise<Outcome>((resolve) => this.waiting.set(requestId, resolve));
    const at = this.now();
    let event: SessionEvent;
    if (kind === 'retry') {
      event = { type: side === 'A' ? 'RETRY_FROM_A' : 'RETRY_FROM_B', requestId, at };
    } else {
      const turn = { requestId, seen, content: request.content, idempotencyKey: request.idempotencyKey, system: request.system, at };
      const type = kind === 'connect' ? (side === 'A' ? 'CONNECT_A' : 'CONNECT_B') : side === 'A' ? 'MESSAGE_FROM_A' : 'MESSAGE_FROM_B';
      event = { type, turn };
    }
    this.actor.send(event);
    return {
      side,
      kind,
      outcome,
      disconnect: () => {
        const resolve = this.waiting.get(requestId);
        if (!resolve) return;
        this.waiting.delete(requestId);
        resolve({ type: 'disconnected' });
        if (this.closed) return;
        this.actor.send({ type: side === 'A' ? 'DISCONNECT_A' : 'DISCONNECT_B', requestId, at: this.now() });
      },
    };
  }

  close(reason: 'deleted' | 'expired' | 'shutdown'): void {
    if (!this.closed) this.actor.send({ type: 'CLOSE', reason });
  }

  private settle(event: SessionEmitted): void {
    const resolve = this.waiting.get(event.requestId);
    if (!resolve) return;
    this.waiting.delete(event.requestId);
    const outcome: Outcome =
      event.type === 'reply'
        ? { type: 'reply', content: event.content, delivery: event.delivery, repeat: event.repeat }
        : { type: 'reject', code: event.code };
    if (!this.durable) return resolve(outcome);
    // Nothing is written to a client before the journal holds it.
    this.durable().then(
      () => resolve(outcome),
      () => resolve({ type: 'reject', code: 'journal_unavailable' }),
    );
  }
}
