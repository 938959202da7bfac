/**
 * Journal records: a public, versioned format. Each record is one fact about one session,
 * named in the past tense; `event` is the chart event itself, which recovery replays through
 * the same machine. Never reuse or rename a type; add new ones.
 */
import type { Side } from '../../machines/session.logic.js';
import type { SessionEvent } from '../../machines/session.machine.js';

export const RECORD_VERSION = 1;

export type RecordType =
  | 'SideConnected'
  | 'MessageSent'
  | 'RetryReceived'
  | 'ListenStarted'
  | 'ClientDisconnected'
  | 'TimedOut'
  | 'SessionExpired'
  | 'SessionClosed'
  | 'MessageDelivered'
  /** The session was rebuilt after a restart (graceful or not): no request of before is held any more. */
  | 'SessionResumed';

export interface JournalRecord {
  readonly v: typeof RECORD_VERSION;
  readonly session: string;
  /** Per session, from 1; a session id used again after its session closed starts at 1 again. */
  readonly seq: number;
  readonly type: RecordType;
  readonly side: Side | null;
  /** When the record was made, ms since the epoch. */
  readonly at: number;
  readonly request: string | null;
  readonly trace: string | null;
  /** The text a message carried or a delivery gave. */
  readonly content?: string;
  /** The chart event to replay (absent on MessageDelivered, which the replay derives). */
  readonly event?: SessionEvent;
}

const TYPES: Record<string, RecordType> = {
  CONNECT_A: 'SideConnected',
  CONNECT_B: 'SideConnected',
  MESSAGE_FROM_A: 'MessageSent',
  MESSAGE_FROM_B: 'MessageSent',
  RETRY_FROM_A: 'RetryReceived',
  RETRY_FROM_B: 'RetryReceived',
  LISTEN_A: 'ListenStarted',
  LISTEN_B: 'ListenStarted',
  DISCONNECT_A: 'ClientDisconnected',
  DISCONNECT_B: 'ClientDisconnected',
  TIMEOUT: 'TimedOut',
  CLOSE: 'SessionClosed',
  RESUMED: 'SessionResumed',
};

/** The record type of a chart event; null for events that are not facts (init, internals). */
export function recordTypeOf(eventType: string): RecordType | null {
  if (eventType.startsWith('xstate.after.sessionTtl') || eventType.startsWith('xstate.after.unjoinedTtl')) return 'SessionExpired';
  return TYPES[eventType] ?? null;
}

export function sideOf(eventType: string): Side | null {
  return eventType.endsWith('_A') ? 'A' : eventType.endsWith('_B') ? 'B' : null;
}
