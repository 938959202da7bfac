/**
 * Recovery on start: reads the journal and says which sessions to rebuild and as what. Sessions
 * that were not closed and whose TTL (from their last activity) has not run out are replayed:
 * their facts folded through the chart's pure logic. The composition root starts them (this
 * module knows no registry); the journal is compacted to them, so replay time follows live
 * sessions.
 *
 * Only what was understood is compacted away. A session whose records do not run 1, 2, 3, …
 * (a line of it could not be read: its first record, or one in the middle) is not rebuilt,
 * since its state cannot be known; it is reported, and its records are kept as they are.
 * Records of another format version are kept too.
 */
import { replay, type MessageDelivered } from '../../machines/session.facts.js';
import { SIDES, type SessionContext, type SessionTiming } from '../../machines/session.logic.js';
import type { Journal } from './journal.js';
import { endsSessionRecord, factsOf, isReadable, latestIncarnations, type JournalRecord } from './records.js';

/** A session the journal cannot rebuild faithfully. */
export interface DamagedSession {
  readonly session: string;
  /** Its records that could be read (kept in the journal). */
  readonly records: number;
  readonly problem: string;
}

export interface RecoveryReport {
  readonly records: number;
  readonly restored: number;
  readonly dropped: number;
  readonly ms: number;
  /** Lines of the journal that are not records (kept aside in the quarantine file at compaction). */
  readonly unreadable: number;
  readonly damaged: readonly DamagedSession[];
  /** Records of a format version this build does not read (kept). */
  readonly otherVersions: number;
}

/** A session to start again, as its journal rebuilt it. */
export interface RebuiltSession {
  readonly id: string;
  readonly restore: { readonly context: SessionContext; readonly state: 'AWAITING_PEER' | 'DORMANT' };
  /** Its last record's seq: the journal numbers on from it. */
  readonly lastSeq: number;
}

/** Why a session's latest records cannot be replayed, or null when they run 1, 2, 3, … */
function damageOf(records: readonly JournalRecord[]): string | null {
  const first = records[0]!;
  if (first.seq !== 1) return `its first ${first.seq - 1} record(s) could not be read`;
  for (let i = 1; i < records.length; i++) {
    const expected = records[i - 1]!.seq + 1;
    if (records[i]!.seq !== expected) {
      return records[i]!.seq > expected
        ? `record(s) ${expected}–${records[i]!.seq - 1} could not be read`
        : `its records are out of order at seq ${records[i]!.seq} (after ${records[i - 1]!.seq})`;
    }
  }
  return null;
}

const ended = (records: readonly JournalRecord[]): boolean => records.some(endsSessionRecord);

/** What one session's latest records rebuild to. */
export type SessionRebuild =
  | { readonly kind: 'rebuilt'; readonly session: RebuiltSession }
  | { readonly kind: 'ended' }
  | { readonly kind: 'damaged'; readonly damage: DamagedSession };

/**
 * Rebuilds one session from its latest incarnation's records (in seq order), the way recovery
 * on start does and the way an instance of a cluster does when it claims a session: its facts
 * folded through the chart's pure logic, its journal numbering resumed after its last record,
 * and deliveries a stop kept out of the journal recorded. Sessions that ended or whose TTL ran
 * out are not rebuilt; a session whose records do not run 1, 2, 3, … is damaged (its records
 * are kept as they are).
 */
export function rebuildSession(journal: Journal, id: string, list: readonly JournalRecord[], options: { timing: SessionTiming; now: number }): SessionRebuild {
  if (list.length === 0) return { kind: 'ended' };
  const problem = damageOf(list);
  if (problem) {
    for (const record of list) journal.preserve(record);
    return { kind: 'damaged', damage: { session: id, records: list.length, problem } };
  }
  const last = list[list.length - 1]!;
  if (ended(list) || options.now - last.at >= options.timing.sessionTtlMs) return { kind: 'ended' };
  const facts = factsOf(list);
  const restore = replay(id, options.timing, facts);
  journal.resume(id, last.seq);
  // A stop between a turn's record and its delivery's leaves the delivery out of the journal
  // (its client never got it; its retry will, as a repeat): recorded now, so the records say
  // what clients were given.
  const recorded = { A: 0, B: 0 };
  for (const fact of facts) if (fact.type === 'MessageDelivered') recorded[fact.side]++;
  for (const side of SIDES) {
    const deliveries = restore.context.sides[side].deliveries;
    for (let i = recorded[side]; i < deliveries.length; i++) {
      const missed: MessageDelivered = { type: 'MessageDelivered', session: id, at: options.now, side, request: null, content: deliveries[i]!, delivery: i, waitedMs: 0 };
      journal.append(missed);
    }
  }
  return { kind: 'rebuilt', session: { id, restore, lastSeq: last.seq } };
}

/**
 * Reads the journal, rebuilds every session that is still live, and readies the journal for
 * them: their numbering resumes, deliveries a stop kept out of it are recorded, and it is
 * compacted when it holds anything no live session needs. Returns what to start.
 */
export async function recoverSessions(journal: Journal, options: { timing: SessionTiming; now: number }): Promise<{ rebuilt: RebuiltSession[]; report: RecoveryReport }> {
  const started = performance.now();
  const readable: JournalRecord[] = [];
  let records = 0;
  let otherVersions = 0;
  for await (const record of journal.store.read()) {
    records++;
    if (isReadable(record)) {
      readable.push(record);
    } else {
      otherVersions++;
      journal.preserve(record);
    }
  }
  const latest = latestIncarnations(readable);
  const unreadable = journal.store.stats().unreadable ?? 0;
  const rebuilt: RebuiltSession[] = [];
  let dropped = 0;
  const damaged: DamagedSession[] = [];
  let kept = otherVersions;
  for (const list of latest.values()) kept += list.length;
  // Records of earlier incarnations of an id are garbage: a new one starts only after a close.
  let garbage = records - kept;
  for (const [id, list] of latest) {
    const outcome = rebuildSession(journal, id, list, options);
    if (outcome.kind === 'damaged') {
      damaged.push(outcome.damage);
    } else if (outcome.kind === 'ended') {
      dropped++;
      garbage += list.length;
    } else {
      rebuilt.push(outcome.session);
    }
  }
  // Rewriting the journal is only worth it when it holds something no live session needs.
  if (garbage > 0 || unreadable > 0) await journal.compact();
  const report: RecoveryReport = { records, restored: rebuilt.length, dropped, ms: Math.round(performance.now() - started), unreadable, damaged, otherVersions };
  return { rebuilt, report };
}
