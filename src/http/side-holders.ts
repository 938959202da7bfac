/**
 * Which WebSocket connection holds each side of each session, per service: only one may (a
 * second tab must not answer for the same side), and the web console shows who holds what.
 */
import type { Side } from '../../machines/session.logic.js';
import type { AppContext } from './context.js';

/** A connection that holds a side: told when another one takes the side over. */
export interface SideHolder {
  takenOver(): void;
}

/** The WebSocket connections holding each side, per service; the web console shows them. */
export class SideHolders {
  private readonly held = new Map<string, SideHolder>();
  private readonly listeners = new Set<(sessionId: string) => void>();

  private static key(sessionId: string, side: Side): string {
    return `${side}:${sessionId}`;
  }

  /** Is `side` of the session held by an open WebSocket connection? */
  has(sessionId: string, side: Side): boolean {
    return this.held.has(SideHolders.key(sessionId, side));
  }

  /** Called with the session id whenever a side is taken or let go. Returns the unsubscribe. */
  onChange(listener: (sessionId: string) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** @internal */
  holder(sessionId: string, side: Side): SideHolder | undefined {
    return this.held.get(SideHolders.key(sessionId, side));
  }

  /** @internal */
  take(sessionId: string, side: Side, participant: SideHolder): void {
    this.held.set(SideHolders.key(sessionId, side), participant);
    this.changed(sessionId);
  }

  /** @internal */
  release(sessionId: string, side: Side, participant: SideHolder): void {
    const key = SideHolders.key(sessionId, side);
    if (this.held.get(key) !== participant) return;
    this.held.delete(key);
    this.changed(sessionId);
  }

  private changed(sessionId: string): void {
    for (const listener of this.listeners) {
      try {
        listener(sessionId);
      } catch {
        // a view's failure never disturbs a participant
      }
    }
  }
}

const holdersByService = new WeakMap<AppContext, SideHolders>();

export function sideHolders(ctx: AppContext): SideHolders {
  let holders = holdersByService.get(ctx);
  if (!holders) {
    holders = new SideHolders();
    holdersByService.set(ctx, holders);
  }
  return holders;
}

