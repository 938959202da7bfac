/**
 * The journal: a subscriber of the fact stream that keeps every session fact as a record
 * (version 2: the fact, its seq and its trace). Replies wait for `durable()`, so a delivery is
 * in the journal before the response that carries it. It knows nothing of actors or the chart.
 */
import { endsSession, type SessionFact } from '../../machines/session.facts.js';
import type { SessionStep } from '../sessions/fact-stream.js';
import type { Logger } from '../telemetry/logger.js';
import { toRecord, type JournalRecord } from './records.js';
import type { RecoveryReport } from './recovery.js';
import { JournalError, type JournalStore } from './store.js';

/** Identifies a stored record across compactions (which keep records as they are, in order). */
const keyOf = (record: JournalRecord): string => `${record.session}\u0000${record.seq}\u0000${record.at}\u0000${record.type}`;

export interface JournalOptions {
  /** The trace id of a request's span, when tracing is on. */
  readonly traceOf?: (requestId: string | null) => string | null;
  /** Told how long each append took to become as durable as the store promises, in seconds (metrics). */
  readonly onAppended?: (seconds: number) => void;
  /**
   * Cluster mode: the fencing token (epoch) this instance holds for a session it owns, sent with
   * each of its appends; the store refuses an append once another instance claimed the session.
   */
  readonly fenceOf?: (session: string) => number | undefined;
  /** An append of `session` was refused as fenced: this instance no longer owns it. */
  readonly onFenced?: (session: string) => void;
  /**
   * Compact the store once enough sessions ended (default). Off in cluster mode: the journal is
   * shared, this instance knows only its own sessions, and Redis expires ended sessions' keys.
   */
  readonly compaction?: boolean;
}

const RESOLVED = Promise.resolve();

export class Journal {
  /** The last seq of every session not ended: the sessions a compaction keeps. */
  private readonly seqs = new Map<string, number>();
  private last: Promise<void> = Promise.resolve();
  /** Each session's latest append still in flight. */
  private readonly lastOf = new Map<string, Promise<void>>();
  private endedSinceCompaction = 0;
  private compacting: Promise<unknown> | null = null;
  /** Records no compaction may drop (of a session that could not be rebuilt, or of another format). */
  private readonly preserved = new Set<string>();
  /** What recovery found on start, for /health. */
  recovery: RecoveryReport | null = null;
  /** Told of each record once its append is durable, in append order (the outbox's live feed). */
  private readonly written: Array<(record: JournalRecord) => void> = [];
  /** Records a compaction must keep although their session ended (events still owed). */
  private retain: ((record: JournalRecord) => boolean) | null = null;

  constructor(
    readonly store: JournalStore<JournalRecord>,
    private readonly logger: Logger,
    private readonly options: JournalOptions = {},
  ) {}

  /**
   * Resolves when every record appended so far is as durable as the fsync policy promises; with
   * `session`, when that session's records are (in cluster mode another session's append may
   * succeed where this one's was refused as fenced: a reply waits for its own session's).
   */
  durable(session?: string): Promise<void> {
    if (session === undefined) return this.last;
    return this.lastOf.get(session) ?? RESOLVED;
  }

  /** Calls `listener` with each record once it is durable; returns its removal. */
  onDurable(listener: (record: JournalRecord) => void): () => void {
    this.written.push(listener);
    return () => {
      const i = this.written.indexOf(listener);
      if (i !== -1) this.written.splice(i, 1);
    };
  }

  /** Compactions also keep the records `keep` asks for (the webhook outbox's owed events). */
  retainWith(keep: (record: JournalRecord) => boolean): void {
    this.retain = keep;
  }

  /** Subscribe this to the fact stream. */
  readonly onStep = (step: SessionStep): void => {
    for (const fact of step.facts) {
      this.append(fact);
      if (endsSession(fact)) this.ended(fact.session);
    }
  };

  /** Appends one fact as the session's next record. */
  append(fact: SessionFact): void {
    const seq = (this.seqs.get(fact.session) ?? 0) + 1;
    this.seqs.set(fact.session, seq);
    const request = 'request' in fact ? fact.request : null;
    const record = toRecord(fact, seq, this.options.traceOf?.(request) ?? null);
    // The session's next record, after its last: a store shared by several writers refuses it otherwise.
    const fenceOf = this.options.fenceOf;
    const fence = fenceOf?.(record.session);
    // Cluster mode: a session this instance does not own (no epoch) never writes, whatever ran it.
    const written =
      fenceOf && fence === undefined
        ? Promise.reject(new JournalError('fenced', `Session '${record.session}' is not owned by this instance: its append was not made.`))
        : this.store.append(record, fence === undefined ? { expectedSeq: seq - 1 } : { expectedSeq: seq - 1, fence });
    const session = record.session;
    this.last = written;
    this.lastOf.set(session, written);
    // One reaction per append (a turn makes two): the metric, the readers, and forgetting it.
    const observe = this.options.onAppended;
    const started = observe ? performance.now() : 0;
    written.then(
      () => {
        for (const listener of this.written) {
          try {
            listener(record);
          } catch (err) {
            this.logger.error({ err, session_id: session }, 'a reader of the journal failed');
          }
        }
        if (this.lastOf.get(session) === written) this.lastOf.delete(session);
        if (observe) observe((performance.now() - started) / 1000);
      },
      // A failed append stays the session's answer until its next append.
      (err: Error & { code?: string }) => {
        if (err.code === 'fenced') {
          this.seqs.delete(session);
          this.logger.warn({ session_id: session }, `journal append refused: ${err.message}`);
          this.options.onFenced?.(session);
          return;
        }
        this.logger.error({ err, session_id: session }, `journal append failed: ${err.message}`);
      },
    );
  }

  /** A session rebuilt from the journal carries on numbering its records after `lastSeq`. */
  resume(sessionId: string, lastSeq: number): void {
    this.seqs.set(sessionId, lastSeq);
  }

  /** This instance no longer runs `sessionId` (cluster mode: handed over or fenced out). */
  forget(sessionId: string): void {
    this.seqs.delete(sessionId);
    this.lastOf.delete(sessionId);
  }

  /** Keeps this record through every compaction: it was not understood, so it is not garbage. */
  preserve(record: JournalRecord): void {
    this.preserved.add(keyOf(record));
  }

  /** A session ended: its records go at a compaction, once enough sessions have ended. */
  private ended(sessionId: string): void {
    this.seqs.delete(sessionId);
    this.endedSinceCompaction++;
    if (this.options.compaction === false) return;
    if (this.compacting || this.endedSinceCompaction < Math.max(1000, 2 * this.seqs.size)) return;
    this.endedSinceCompaction = 0;
    this.compacting = this.compact().finally(() => (this.compacting = null));
  }

  /** Keeps only the latest incarnation of the sessions not ended, and what must be preserved. */
  async compact(): Promise<{ kept: number; dropped: number }> {
    const live = new Set(this.seqs.keys());
    // A record is kept when it is one of its session's latest incarnation: the last seq 1 on.
    const starts = new Map<string, number>();
    let index = 0;
    for await (const record of this.store.read()) {
      if (record.seq === 1) starts.set(record.session, index);
      index++;
    }
    let position = 0;
    const preserved = this.preserved;
    const retain = this.retain;
    const result = await this.store.compact((record) => {
      const keep =
        (live.has(record.session) && position >= (starts.get(record.session) ?? 0)) || (preserved.size > 0 && preserved.has(keyOf(record))) || (retain !== null && retain(record));
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
}
