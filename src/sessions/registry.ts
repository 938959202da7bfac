/**
 * The actor system: one session actor per session id, spawned on first use and dropped
 * when it reaches CLOSED, so memory follows live sessions only.
 */
import { sessionName } from '../auth/tenants.js';
import { createActor, fromTransition, type AnyActorRef, type InspectionEvent, type SimulatedClock } from 'xstate';
import { initialContext, type CloseReason, type SessionTiming } from '../../machines/session.logic.js';
import { attributeRequest, type TurnRequest } from './attribution.js';
import { Session, type SessionOptions, type SubmitOptions, type SubmitResult } from './session.js';

export interface RegistryOptions {
  readonly timing: SessionTiming;
  readonly maxSessions: number;
  /** MAX_QUEUED_BYTES_PER_SIDE (none: no cap). */
  readonly maxQueuedBytesPerSide?: number;
  readonly clock?: SimulatedClock;
  /** The actor systems' one inspection tap (the fact stream's decoder, and the Stately inspector when on). */
  readonly inspect?: (event: InspectionEvent) => void;
  readonly now?: () => number;
  /** Resolves when what sessions did so far is durable; replies wait for it (none: they need not wait). */
  readonly durable?: (session: string) => Promise<void>;
}

export type RegistrySubmitResult = SubmitResult | { readonly error: 'max_sessions'; readonly message: string };

/**
 * The root of an actor system: session actors are spawned as its children and share its system
 * (clock, scheduler, inspection) instead of carrying one each, about 4 KB a session. A system
 * takes at most SESSIONS_PER_SYSTEM sessions, because XState cancels a stopping actor's timers
 * by scanning every timer of its system.
 *
 * The root is transition logic, not a machine: a machine memoizes its transitions per event
 * type, and every session's end reaches the root as an event type of its own
 * (xstate.done.actor.<id>), which is how the registry learns of it (a completion listener on
 * every session would cost each a set of observers). A failed session actor
 * (xstate.error.actor.<id>) is rethrown, so that the failure is not silent.
 */
const DONE = 'xstate.done.actor.';
const sessionSystem = (ended: (sessionId: string) => void) =>
  fromTransition((state: null, event: { type: string; error?: unknown }) => {
    if (event.type.startsWith(DONE)) ended(event.type.slice(DONE.length));
    else if (event.type.startsWith('xstate.error.actor')) throw event.error;
    return state;
  }, null);
const SESSIONS_PER_SYSTEM = 256;

interface ActorSystem {
  root: AnyActorRef;
  live: number;
}

export class SessionRegistry {
  private readonly sessions = new Map<string, Session>();
  private readonly systems: ActorSystem[] = [];

  constructor(private readonly options: RegistryOptions) {}

  /** A system with room for one more session (a new one when all are full). */
  private systemWithRoom(): ActorSystem {
    let system = this.systems.find((s) => s.live < SESSIONS_PER_SYSTEM);
    if (!system) {
      const created: ActorSystem = { root: null!, live: 0 };
      const root = createActor(sessionSystem((id) => this.ended(created, id)), {
        ...(this.options.clock ? { clock: this.options.clock } : {}),
        ...(this.options.inspect ? { inspect: this.options.inspect } : {}),
      });
      created.root = root;
      root.start();
      system = created;
      this.systems.push(system);
    }
    system.live++;
    return system;
  }

  /** A session of `system` reached CLOSED; an empty system other than the first is stopped. */
  private ended(system: ActorSystem, sessionId: string): void {
    const session = this.sessions.get(sessionId);
    if (session?.closed) this.sessions.delete(sessionId);
    system.live--;
    if (system.live > 0 || this.systems.length === 1) return;
    this.systems.splice(this.systems.indexOf(system), 1);
    // Not from inside its own step (this runs as the root takes the session's end).
    queueMicrotask(() => system.root.stop());
  }

  get size(): number {
    return this.sessions.size;
  }

  get(id: string): Session | undefined {
    return this.sessions.get(id);
  }

  list(): IterableIterator<Session> {
    return this.sessions.values();
  }

  ids(): IterableIterator<string> {
    return this.sessions.keys();
  }

  /** The timers sessions run with (recovery replays with them). */
  get timing(): SessionTiming {
    return this.options.timing;
  }

  /** Starts a session rebuilt from its journal (recovery on start). */
  restore(sessionId: string, rebuilt: NonNullable<SessionOptions['restore']>): Session {
    return this.spawn(sessionId, { restore: rebuilt });
  }

  submit(sessionId: string, request: TurnRequest, requestId: string, options: SubmitOptions = {}): RegistrySubmitResult {
    let session = this.sessions.get(sessionId);
    if (!session) {
      // Refuse before spawning, so a stray request never creates (or counts as) a session.
      const verdict = attributeRequest(initialContext(sessionId, this.options.timing), request);
      if (verdict.kind === 'conflict') return { error: 'session_conflict', message: verdict.message };
      if (this.sessions.size >= this.options.maxSessions) {
        return {
          error: 'max_sessions',
          message: `The proxy holds its maximum of ${this.options.maxSessions} live sessions; session '${sessionName(sessionId)}' cannot start now.`,
        };
      }
      session = this.spawn(sessionId);
    }
    return session.submit(request, requestId, options);
  }

  /** Ends a session; its held requests are answered. False when there is no such session. */
  close(sessionId: string, reason: CloseReason): boolean {
    const session = this.sessions.get(sessionId);
    if (!session) return false;
    session.close(reason);
    return true;
  }

  /** Cluster mode: stops the session's actor here without a fact (another instance runs it). */
  evict(sessionId: string): boolean {
    const session = this.sessions.get(sessionId);
    if (!session) return false;
    session.evict();
    return true;
  }

  closeAll(reason: CloseReason): void {
    for (const session of [...this.sessions.values()]) session.close(reason);
  }

  private spawn(sessionId: string, extra: Pick<SessionOptions, 'restore'> = {}): Session {
    const system = this.systemWithRoom();
    const session = new Session(sessionId, {
      ...extra,
      timing: this.options.timing,
      parent: system.root,
      ...(this.options.durable ? { durable: this.options.durable } : {}),
      ...(this.options.now ? { now: this.options.now } : {}),
      ...(this.options.maxQueuedBytesPerSide ? { maxQueuedBytes: this.options.maxQueuedBytesPerSide } : {}),
    });
    this.sessions.set(sessionId, session);
    return session;
  }
}
