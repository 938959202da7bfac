/**
 * Journal records: a public, versioned format. Version 2 (written now) is a session fact as it
 * is (machines/session.facts.ts) with its place in the journal: `v`, `seq` (per session, from
 * 1) and the request's `trace` id. Version 1 (written before) held the chart's own event; it
 * is still read, turned into the same facts.
 */
import type { MessageDelivered, SessionFact, SessionFactType, TurnFacts } from '../../machines/session.facts.js';
import type { CloseReason, Side, TurnPayload } from '../../machines/session.logic.js';

export const RECORD_VERSION = 2;

/** What every record has, whatever its version: the store reads only `session` and `seq`. */
interface RecordPlace {
  readonly session: string;
  /** Per session, from 1; a session id used again after its session closed starts at 1 again. */
  readonly seq: number;
}

/** Version 2: one fact, where it is in the journal, and the trace of the request it concerns. */
export type JournalRecordV2 = SessionFact & RecordPlace & { readonly v: 2; readonly trace: string | null };

/** Version 1, as written before: `event` is the chart event itself. */
export interface JournalRecordV1 extends RecordPlace {
  readonly v: 1;
  readonly type: string;
  readonly side: Side | null;
  readonly at: number;
  readonly request: string | null;
  readonly trace: string | null;
  readonly content?: string;
  readonly event?: { readonly type: string; readonly turn?: TurnPayload; readonly requestId?: string; readonly at?: number; readonly stream?: boolean; readonly reason?: CloseReason };
}

export type JournalRecord = JournalRecordV2 | JournalRecordV1;

/** Versions this build reads; a record of another is kept as it is, untouched. */
export const isReadable = (record: { v?: unknown }): record is JournalRecord => record.v === 1 || record.v === 2;

export function toRecord(fact: SessionFact, seq: number, trace: string | null): JournalRecordV2 {
  return { v: RECORD_VERSION, seq, trace, ...fact };
}

/** The type of fact a record holds, whatever its version. */
export const factTypeOf = (record: JournalRecord): SessionFactType | null => {
  if (record.v === 2) return record.type;
  return (V1_TYPES as Record<string, SessionFactType | undefined>)[record.type] ?? null;
};

const V1_TYPES = {
  SideConnected: 'SideConnected',
  MessageSent: 'MessageSent',
  RetryReceived: 'RetryReceived',
  ListenStarted: 'ListenStarted',
  ClientDisconnected: 'ClientDisconnected',
  TimedOut: 'TimedOut',
  SessionExpired: 'SessionExpired',
  SessionClosed: 'SessionClosed',
  SessionResumed: 'SessionResumed',
  MessageDelivered: 'MessageDelivered',
} as const;

/** Does this record end its session for good (a shutdown's close does not: the session resumes)? */
export function endsSessionRecord(record: JournalRecord): boolean {
  const type = factTypeOf(record);
  if (type === 'SessionExpired') return true;
  if (type !== 'SessionClosed') return false;
  const reason = record.v === 2 ? (record as { reason?: string }).reason : record.event?.reason;
  return reason !== 'shutdown';
}

/**
 * The facts of one session's records (one incarnation, in journal order), whatever their
 * version. Version 1 knew no delivery index nor wait: the index is counted, the wait is 0.
 */
export function factsOf(records: readonly JournalRecord[]): SessionFact[] {
  const delivered: Record<Side, number> = { A: 0, B: 0 };
  const facts: SessionFact[] = [];
  for (const record of records) {
    const fact = record.v === 2 ? stripPlace(record) : upgrade(record, delivered);
    if (fact?.type === 'MessageDelivered') delivered[fact.side] = fact.delivery + 1;
    if (fact) facts.push(fact);
  }
  return facts;
}

function stripPlace(record: JournalRecordV2): SessionFact {
  const { v: _v, seq: _seq, trace: _trace, ...fact } = record;
  return fact as SessionFact;
}

function upgrade(record: JournalRecordV1, delivered: Record<Side, number>): SessionFact | null {
  const { session, at, event } = record;
  const side = record.side ?? (event?.type.endsWith('_A') ? 'A' : event?.type.endsWith('_B') ? 'B' : null);
  switch (record.type) {
    case 'SideConnected':
    case 'MessageSent': {
      if (!event?.turn || !side) return null;
      const { requestId, at: turnAt, ...turn } = event.turn;
      return { type: record.type, session, at: turnAt, side, request: requestId, turn: turn as TurnFacts };
    }
    case 'RetryReceived':
      return side && event?.requestId ? { type: 'RetryReceived', session, at: event.at ?? at, side, request: event.requestId, ...(event.stream ? { stream: true } : {}) } : null;
    case 'ListenStarted':
    case 'ClientDisconnected':
      return side && event?.requestId ? { type: record.type, session, at: event.at ?? at, side, request: event.requestId } : null;
    case 'TimedOut':
      return event?.requestId ? { type: 'TimedOut', session, at, side, request: event.requestId, timer: null } : null;
    case 'SessionExpired':
      return { type: 'SessionExpired', session, at };
    case 'SessionClosed':
      return { type: 'SessionClosed', session, at, reason: event?.reason ?? 'deleted' };
    case 'SessionResumed':
      return { type: 'SessionResumed', session, at };
    case 'MessageDelivered': {
      if (!side) return null;
      const fact: MessageDelivered = { type: 'MessageDelivered', session, at, side, request: record.request, content: record.content ?? '', delivery: delivered[side], waitedMs: 0 };
      return fact;
    }
    default:
      return null;
  }
}

/**
 * Per session, its latest incarnation's records, in journal order: a record with seq 1 starts a
 * new incarnation (the id was used again after a close), so only records from the last one on
 * are the session's now. With no seq 1 to be read, all its records.
 */
export function latestIncarnations<R extends RecordPlace>(records: Iterable<R>): Map<string, R[]> {
  const latest = new Map<string, R[]>();
  for (const record of records) {
    const list = record.seq === 1 ? [] : (latest.get(record.session) ?? []);
    list.push(record);
    latest.set(record.session, list);
  }
  return latest;
}
