/**
 * One session: its XState actor, and the requests waiting on it.
 *
 * The actor owns the state; this wrapper turns a protocol-neutral TurnRequest into the
 * event attribution chose, and turns the actor's emitted replies back into per-request
 * outcomes for the HTTP layer.
 */
import { sessionName } from '../auth/tenants.js';
import { createActor, type Actor, type AnyActorRef } from 'xstate';
import type { RejectCode, SessionContext, SessionTiming, Side } from '../../machines/session.logic.js';
import { sessionMachine, type SessionEmitted, type SessionEvent, type SessionStateName } from '../../machines/session.machine.js';
import { attributeRequest, joinMessages, type TurnRequest } from './attribution.js';

export type Outcome =
  | { readonly type: 'reply'; readonly content: string; readonly delivery: number; readonly repeat: boolean }
  | { readonly type: 'reject'; readonly code: RejectCode | 'journal_unavailable' | 'session_moved' }
  /** The client went away first; nothing was written to it. */
  | { readonly type: 'disconnected' };

export interface Submission {
  readonly side: Side;
  readonly kind: 'connect' | 'message' | 'retry';
  /** Settles when a delivery is written to the request or its wait ends. */
  readonly outcome: Promise<Outcome>;
  /** The client went away before the outcome: nothing is lost, the answer stays queued. */
  disconnect(): void;
  /**
   * Live text the other side is typing (a WebSocket side's `typing` frames) while this request
   * is held: a preview, not a delivery. The listener is first given everything typed so far
   * (so a retry shows the same text as the request it replaces), then each new piece; the
   * delivery that follows starts with all of it.
   */
  onPreview(listener: (text: string) => void): void;
}

export interface SubmitOptions {
  /** The request's wait has no timer (a persistent connection). */
  readonly untimed?: boolean;
  /** A streaming request: its wait is bounded by STREAM_TURN_TIMEOUT_SECONDS. */
  readonly stream?: boolean;
  /** The wire protocol the request came in (a label for views; the chart never sees it). */
  readonly protocol?: string;
}

export type SubmitResult = Submission | { readonly error: 'session_conflict' | 'session_forbidden' | 'queue_full'; readonly message: string };

export interface SessionOptions {
  readonly timing: SessionTiming;
  /** The actor system's root: the session actor is its child and uses its clock, scheduler and inspection. */
  readonly parent: AnyActorRef;
  /** Start from this context and state (a session rebuilt from its journal). */
  readonly restore?: { readonly context: SessionContext; readonly state: 'AWAITING_PEER' | 'DORMANT' };
  /** Resolves when what the session did so far is in the journal; replies wait for it. */
  readonly durable?: (session: string) => Promise<void>;
  /** Bytes of messages kept queued for a side that is not reading; a turn beyond is refused (none: no cap). */
  readonly maxQueuedBytes?: number;
  readonly now?: () => number;
}

/** A request waiting for its outcome, and who sees the other side's live typing meanwhile. */
interface Waiter {
  readonly requestId: string;
  readonly resolve: (outcome: Outcome) => void;
  preview: ((text: string) => void) | null;
}

/**
 * The requests waiting on one session: almost always one or two, so a list (a Map's table
 * costs every held session about 150 bytes more).
 */
class Waiters {
  private list: Waiter[] = [];

  get(requestId: string): Waiter | undefined {
    for (const waiter of this.list) if (waiter.requestId === requestId) return waiter;
    return undefined;
  }

  add(waiter: Waiter): void {
    // Not push: an array grown by push keeps room for 16 more.
    this.list = this.list.length === 0 ? [waiter] : this.list.concat(waiter);
  }

  delete(requestId: string): void {
    const i = this.list.findIndex((w) => w.requestId === requestId);
    if (i !== -1) this.list.splice(i, 1);
  }

  /** Every waiter, removed. */
  takeAll(): Waiter[] {
    const all = this.list;
    this.list = [];
    return all;
  }
}

export class Session {
  private readonly actor: Actor<typeof sessionMachine>;
  private readonly waiting = new Waiters();
  private readonly now: () => number;
  private readonly durable: ((session: string) => Promise<void>) | undefined;
  private readonly maxQueuedBytes: number;
  /**
   * What each side has typed live since its latest turn (previews, not journaled): every
   * request of the other side that starts waiting is shown all of it first.
   */
  private draftA = '';
  private draftB = '';

  constructor(
    readonly id: string,
    options: SessionOptions,
  ) {
    this.now = options.now ?? Date.now;
    this.durable = options.durable;
    this.maxQueuedBytes = options.maxQueuedBytes ?? Infinity;
    this.actor = createActor(sessionMachine, {
      id,
      input: { sessionId: id, timing: options.timing },
      ...(options.restore ? { snapshot: sessionMachine.resolveState({ value: options.restore.state, context: options.restore.context }) } : {}),
      parent: options.parent,
    });
    // One listener for both emitted events (a reply, a reject): each listener costs the actor
    // a set of its own. Its end reaches the parent (the registry's system root), not a listener.
    this.actor.on('*', (e) => this.settle(e));
    this.actor.start();
    // A restored session re-enters its idle state, whose TTL runs on from its last activity.
    if (options.restore) this.actor.send({ type: 'RESUMED', at: this.now() });
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
  submit(submitted: TurnRequest, requestId: string, options: SubmitOptions = {}): SubmitResult {
    const bound = this.bindClient(submitted);
    if ('error' in bound) return bound;
    const request = bound.request;
    const attribution = attributeRequest(this.context, request);
    if (attribution.kind === 'conflict') return { error: 'session_conflict', message: attribution.message };
    const { side, kind, seen } = attribution;
    const full = attribution.kind === 'retry' ? null : this.queueFull(side, attribution.kind, attribution.messages);
    if (full) return full;
    const outcome = this.wait(requestId);
    const at = this.now();
    let event: SessionEvent;
    if (attribution.kind === 'retry') {
      event = { type: side === 'A' ? 'RETRY_FROM_A' : 'RETRY_FROM_B', requestId, at, ...(options.stream ? { stream: true } : {}) };
    } else {
      const { messages } = attribution;
      const turn = {
        requestId,
        seen,
        content: joinMessages(messages),
        // One message (almost every turn) needs no list: it is the content.
        ...(messages.length > 1 ? { messages } : {}),
        idempotencyKey: request.idempotencyKey,
        system: request.system,
        ...(request.preamble ? { preamble: request.preamble } : {}),
        at,
        ...(options.untimed ? { untimed: true } : {}),
        ...(options.stream ? { stream: true } : {}),
        ...(request.client ? { client: request.client } : {}),
        ...(options.protocol ? { protocol: options.protocol } : {}),
      };
      // What the side typed live is now its turn (or abandoned for it).
      this.setDraft(side, '');
      const type = kind === 'connect' ? (side === 'A' ? 'CONNECT_A' : 'CONNECT_B') : side === 'A' ? 'MESSAGE_FROM_A' : 'MESSAGE_FROM_B';
      event = { type, turn };
    }
    this.actor.send(event);
    return this.submission(side, kind, requestId, outcome);
  }

  /**
   * API keys bind sides: a side that joined with a key speaks only with that key. A request
   * whose key is not a bound side's cannot be that side; when it can be neither, it is refused
   * (a third client cannot read or write the conversation, even naming session and side).
   */
  bindClient(request: TurnRequest): { request: TurnRequest } | { error: 'session_forbidden'; message: string } {
    const client = request.client ?? null;
    if (client === null) return { request };
    const sides = this.context.sides;
    const excluded = (side: Side): boolean => sides[side].joined && sides[side].client !== null && sides[side].client !== client;
    const notA = excluded('A');
    const notB = excluded('B');
    if (notA && notB) {
      return { error: 'session_forbidden', message: `Session '${this.id}' belongs to the clients that joined it; this API key is not one of them.` };
    }
    if (!notA && !notB) return { request };
    const side: Side = notA ? 'B' : 'A';
    if (request.explicitSide && request.explicitSide !== side) {
      return { error: 'session_forbidden', message: `Side ${request.explicitSide} of session '${sessionName(this.id)}' joined with another API key; this key cannot speak for it.` };
    }
    return { request: { ...request, explicitSide: side } };
  }

  /** May this client end the session? Without keys, or before anyone bound it, anyone may. */
  mayClose(client: string | null): boolean {
    if (client === null) return true;
    const { A, B } = this.context.sides;
    const bound = [A, B].filter((s) => s.joined && s.client !== null).map((s) => s.client);
    return bound.length === 0 || bound.includes(client);
  }

  /**
   * A persistent connection of a joined side waits for its next delivery without a new turn
   * (no timer). Null when the side has not joined yet: its first message must come first.
   */
  listen(side: Side, requestId: string): Submission | null {
    if (!this.context.sides[side].joined) return null;
    const outcome = this.wait(requestId);
    this.actor.send({ type: side === 'A' ? 'LISTEN_A' : 'LISTEN_B', requestId, at: this.now() });
    return this.submission(side, 'message', requestId, outcome);
  }

  /**
   * A side that is not reading cannot be sent more than MAX_QUEUED_BYTES_PER_SIDE: a turn that
   * would queue beyond it is refused (nothing of it is kept), so one client cannot fill memory.
   */
  private queueFull(side: Side, kind: 'connect' | 'message', messages: readonly string[]): { error: 'queue_full'; message: string } | null {
    if (this.maxQueuedBytes === Infinity || (side === 'A' && kind === 'connect')) return null; // A's handshake is never forwarded
    const peer: Side = side === 'A' ? 'B' : 'A';
    const state = this.context.sides[peer];
    if (state.held) return null; // delivered at once, never queued
    let bytes = 0;
    for (const queued of state.queue) bytes += Buffer.byteLength(queued);
    for (const m of messages) bytes += Buffer.byteLength(m);
    if (bytes <= this.maxQueuedBytes) return null;
    return {
      error: 'queue_full',
      message: `Side ${peer} of session '${sessionName(this.id)}' is not reading, and what waits for it would exceed MAX_QUEUED_BYTES_PER_SIDE (${this.maxQueuedBytes} bytes). Send this again once side ${peer} has read its messages.`,
    };
  }

  private setDraft(side: Side, text: string): void {
    if (side === 'A') this.draftA = text;
    else this.draftB = text;
  }

  /** What `side` has typed live since its latest turn (a reconnecting typist carries on from it). */
  draft(side: Side): string {
    return side === 'A' ? this.draftA : this.draftB;
  }

  /**
   * `side` is typing: forwards `text` (new characters only) to the other side's held request
   * as a preview. Not journaled and not a delivery. False when nobody is held to see it.
   */
  preview(side: Side, text: string): boolean {
    this.setDraft(side, this.draft(side) + text);
    const held = this.context.sides[side === 'A' ? 'B' : 'A'].held;
    const listener = held ? this.waiting.get(held.requestId)?.preview : undefined;
    if (!listener) return false;
    listener(text);
    return true;
  }

  private submission(side: Side, kind: Submission['kind'], requestId: string, outcome: Promise<Outcome>): Submission {
    return {
      side,
      kind,
      outcome,
      disconnect: () => {
        const waiter = this.waiting.get(requestId);
        if (!waiter) return;
        this.waiting.delete(requestId);
        waiter.resolve({ type: 'disconnected' });
        if (this.closed) return;
        this.actor.send({ type: side === 'A' ? 'DISCONNECT_A' : 'DISCONNECT_B', requestId, at: this.now() });
      },
      onPreview: (listener) => {
        const waiter = this.waiting.get(requestId);
        if (!waiter) return;
        waiter.preview = listener;
        const typed = this.draft(side === 'A' ? 'B' : 'A');
        if (typed) listener(typed);
      },
    };
  }

  /**
   * Cluster mode: another instance runs this session now. The actor stops without a fact (the
   * journal goes on there) and every request waiting here is told to retry (`session_moved`),
   * which re-attaches it on the owner.
   */
  evict(): void {
    if (this.closed) return;
    this.actor.send({ type: 'EVICT' });
    for (const waiter of this.waiting.takeAll()) {
      waiter.resolve({ type: 'reject', code: 'session_moved' });
    }
  }

  close(reason: 'deleted' | 'expired' | 'shutdown'): void {
    if (!this.closed) this.actor.send({ type: 'CLOSE', reason });
  }

  private wait(requestId: string): Promise<Outcome> {
    return new Promise<Outcome>((resolve) => this.waiting.add({ requestId, resolve, preview: null }));
  }

  private settle(event: SessionEmitted): void {
    const waiter = this.waiting.get(event.requestId);
    if (!waiter) return;
    this.waiting.delete(event.requestId);
    const { resolve } = waiter;
    const outcome: Outcome =
      event.type === 'reply'
        ? { type: 'reply', content: event.content, delivery: event.delivery, repeat: event.repeat }
        : { type: 'reject', code: event.code };
    if (!this.durable) return resolve(outcome);
    // Nothing is written to a client before the journal holds it. The journal hears of this
    // step's facts when the step ends, after this reply was emitted: wait for that, then for it.
    const durable = this.durable;
    void Promise.resolve().then(() => durable(this.id)).then(
      () => resolve(outcome),
      () => resolve({ type: 'reject', code: 'journal_unavailable' }),
    );
  }
}
