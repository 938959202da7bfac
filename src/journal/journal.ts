/**
 * The journal's single tap on the actor system (XState inspection): every event a session
 * actor accepts becomes a record, and every reply it emits a MessageDelivered record. Replies
 * wait for `durable()`, so a delivery is in the journal before the response that carries it.
 */
import type { InspectionEvent } from 'xstate';
import type { SessionContext } from '../../machines/session.logic.js';
import type { SessionEmitted, SessionEvent } from '../../machines/session.machine.js';
import type { Logger } from '../telemetry/logger.js';
import { RECORD_VERSION, recordTypeOf, sideOf, type JournalRecord } from './records.js';
import type { RecoveryReport } from './recovery.js';
import type { JournalStore } from './store.js';

/** Identifies a stored record across compactions (which keep records as they are, in order). */
const keyOf = (record: JournalRecord): string => `${record.session}\u0000${record.seq}\u0000${record.at}\u0000${record.type}`;

export class Journal {
  private readonly seqs = new Map<string, number>();
  private last: Promise<void> = Promise.resolve();
  private closedSinceCompaction = 0;
  private compacting: Promise<unknown> | null = null;
  /** What recovery found on start, for /health. */
  recovery: RecoveryReport | null = null;
  /** Records no compaction may drop (of a session that could not be rebuilt, or of another format). */
  private readonly preserved = new Set<string>();

  /** The trace id of a request's span, when tracing is on. */
  traceOf: ((requestId: string | null) => string | null) | null = null;

  /** Told how long each append took to become durable, in seconds (for metrics). */
  onAppended: ((seconds: number) => void) | null = null;

  constructor(
    readonly store: JournalStore<JournalRecord>,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  /** Resolves when every record appended so far is as durable as the fsync policy promises. */
  durable(): Promise<void> {
    return this.last;
  }

  readonly tap = (inspection: InspectionEvent): void => {
    if (inspection.type !== '@xstate.event' && inspection.type !== '@xstate.action') return;
    const context = (inspection.actorRef.getSnapshot() as { context?: SessionContext } | undefined)?.context;
    if (!context) return;
    if (inspection.type === '@xstate.event') {
      const event = inspection.event as SessionEvent;
      const type = recordTypeOf(event.type);
      if (!type) return;
      const turn = 'turn' in event ? event.turn : null;
      const request = turn?.requestId ?? ('requestId' in event ? event.requestId : null);
      this.append({
        v: RECORD_VERSION,
        session: context.sessionId,
        seq: this.nextSeq(context.sessionId),
        type,
        side: sideOf(event.type),
        at: this.now(),
        request,
        trace: this.traceOf?.(request) ?? null,
        ...(turn ? { content: turn.content } : {}),
        event,
      });
      return;
    }
    const action = inspection.action as { type: string; params?: { event?: SessionEmitted } };
    const emitted = action.type === 'xstate.emit' ? action.params?.event : undefined;
    if (emitted?.type !== 'reply' || emitted.repeat) return;
    this.append({
      v: RECORD_VERSION,
      session: context.sessionId,
      seq: this.nextSeq(context.sessionId),
      type: 'MessageDelivered',
      side: emitted.side,
      at: this.now(),
      request: emitted.requestId,
      trace: this.traceOf?.(emitted.requestId) ?? null,
      content: emitted.content,
    });
  };

  /**
   * A delivery a replay re-derived that the journal lacks: the service stopped after the turn
   * that made it was recorded and before the delivery was (the client never got it then; its
   * retry will get it, as a repeat). Recorded now, so the records say what clients were given.
   */
  recordMissedDelivery(session: string, side: 'A' | 'B', content: string): void {
    this.append({ v: RECORD_VERSION, session, seq: this.nextSeq(session), type: 'MessageDelivered', side, at: this.now(), request: null, trace: null, content });
  }

  /** A session rebuilt from the journal carries on numbering its records after `lastSeq`. */
  resume(sessionId: string, lastSeq: number): void {
    this.seqs.set(sessionId, lastSeq);
  }

  /**
   * A session reached CLOSED: its records go at the next compaction. `liveCount` is how many
   * sessions are live; `liveSessions` snapshots their ids, only when a compaction starts.
   */
  sessionClosed(sessionId: string, liveCount: number, liveSessions: () => ReadonlySet<string>): void {
    this.seqs.delete(sessionId);
    this.closedSinceCompaction++;
    if (this.compacting || this.closedSinceCompaction < Math.max(1000, 2 * liveCount)) return;
    this.closedSinceCompaction = 0;
    this.compacting = this.compact(liveSessions()).finally(() => (this.compacting = null));
  }

  /** Keeps this record through every compaction: it was not understood, so it is not garbage. */
  preserve(record: JournalRecord): void {
    this.preserved.add(keyOf(record));
  }

  /** Keeps only the current incarnation of the given sessions, and what must be preserved. */
  async compact(live: ReadonlySet<string>): Promise<{ kept: number; dropped: number }> {
    const starts = new Map<string, number>();
    let index = 0;
    for await (const record of this.store.read()) {
      if (record.seq === 1) starts.set(record.session, index);
      index++;
    }
    let position = 0;
    const preserved = this.preserved;
    const result = await this.store.compact((record) => {
      const keep = (live.has(record.session) && position >= (starts.get(record.session) ?? 0)) || (preserved.size > 0 && preserved.has(keyOf(record)));
      position++;
      return keep;
    });
    this.logger.info({ kept: result.kept, dropped: result.dropped }, 'journal compacted');
    return result;
  }

  async close(): Promise<void> {
    await this.compacting;
    await this.last.catch(() => undefined);
    await this.store.close();
  }

  private nextSeq(sessionId: string): number {
    const seq = (this.seqs.get(sessionId) ?? 0) + 1;
    this.seqs.set(sessionId, seq);
    return seq;
  }

  private append(record: JournalRecord): void {
    const written = this.store.append(record);
    const observe = this.onAppended;
    if (observe) {
      const started = performance.now();
      written.then(() => observe((performance.now() - started) / 1000), () => undefined);
    }
    written.catch((err: Error) => this.logger.error({ err, session_id: record.session }, `journal append failed: ${err.message}`));
    this.last = written;
  }
}
