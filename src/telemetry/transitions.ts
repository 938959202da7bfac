/**
 * The one tap on the actor system: XState's inspection API. Every event a session actor
 * takes is logged as one line with the state it leads to; metrics hang off the same tap.
 */
import type { InspectionEvent } from 'xstate';
import type { SessionContext } from '../../machines/session.logic.js';
import type { Logger } from './logger.js';

export interface TransitionRecord {
  readonly sessionId: string;
  readonly event: string;
  readonly side: 'A' | 'B' | null;
  readonly requestId: string | null;
  readonly state: string;
}

export type TransitionListener = (record: TransitionRecord) => void;

function describe(event: Record<string, unknown>): { side: 'A' | 'B' | null; requestId: string | null } {
  const type = String(event['type']);
  const side = /_(A|B)$/.exec(type)?.[1] as 'A' | 'B' | undefined;
  const turn = event['turn'] as { requestId?: string } | undefined;
  const requestId = (turn?.requestId ?? event['requestId']) as string | undefined;
  return { side: side ?? null, requestId: requestId ?? null };
}

export function transitionTap(listeners: readonly TransitionListener[]): (event: InspectionEvent) => void {
  return (inspection) => {
    if (inspection.type !== '@xstate.snapshot') return;
    const snapshot = inspection.snapshot as { value?: unknown; context?: SessionContext };
    if (!snapshot.context || typeof snapshot.value !== 'string') return;
    const event = inspection.event as unknown as Record<string, unknown>;
    const { side, requestId } = describe(event);
    const record: TransitionRecord = {
      sessionId: snapshot.context.sessionId,
      event: String(event['type']),
      side,
      requestId,
      state: snapshot.value,
    };
    for (const listener of listeners) listener(record);
  };
}

export function logTransitions(logger: Logger): TransitionListener {
  return (record) => {
    if (!logger.isLevelEnabled('info')) return;
    logger.info(
      { session_id: record.sessionId, event: record.event, side: record.side, request_id: record.requestId, state: record.state },
      'session transition',
    );
  };
}
