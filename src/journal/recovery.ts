/**
 * Recovery on start: sessions that were not closed and whose TTL (from their last activity)
 * has not run out are rebuilt by replaying their events; the journal is then compacted to
 * just those sessions, so replay time follows live sessions.
 *
 * Only what was understood is compacted away. A session whose records do not run 1, 2, 3, …
 * (a line of it could not be read: its first record, or one in the middle) is not rebuilt,
 * since its state cannot be known; it is reported, and its records are kept as they are.
 * Records of another format version are kept too.
 */
import { SIDES } from '../../machines/session.logic.js';
import { replayEvents, type SessionEvent } from '../../machines/session.machine.js';
import type { SessionRegistry } from '../sessions/registry.js';
import type { Journal } from './journal.js';
import { RECORD_VERSION, type JournalRecord } from './records.js';

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

export async function recoverSessions(journal: Journal, sessions: SessionRegistry, options: { ttlMs: number; now: number }): Promise<RecoveryReport> {
  const started = performance.now();
  // Per session, the records since its latest seq 1 (a new incarnation of the id), or, when no
  // seq 1 could be read, all of them.
  const latest = new Map<string, JournalRecord[]>();
  let records = 0;
  let otherVersions = 0;
  for await (const record of journal.store.read()) {
    records++;
    if (record.v !== RECORD_VERSION) {
      otherVersions++;
      journal.preserve(record);
      continue;
    }
    const list = record.seq === 1 ? [] : (latest.get(record.session) ?? []);
    list.push(record);
    latest.set(record.session, list);
  }
  const unreadable = journal.store.stats().unreadable ?? 0;
  let restored = 0;
  let dropped = 0;
  const damaged: DamagedSession[] = [];
  let kept = otherVersions;
  for (const list of latest.values()) kept += list.length;
  // Records of earlier incarnations of an id are garbage: a new one starts only after a close.
  let garbage = records - kept;
  for (const [id, list] of latest) {
    const problem = damageOf(list);
    if (problem) {
      for (const record of list) journal.preserve(record);
      damaged.push({ session: id, records: list.length, problem });
      continue;
    }
    const last = list[list.length - 1]!;
    const closed = list.some(
      (r) => r.type === 'SessionExpired' || (r.type === 'SessionClosed' && (r.event as { reason?: string } | undefined)?.reason !== 'shutdown'),
    );
    if (closed || options.now - last.at >= options.ttlMs) {
      dropped++;
      garbage += list.length;
      continue;
    }
    // A graceful shutdown is not an end: the session carries on after the restart (its CLOSE is
    // replayed, releasing what was held then).
    const events: SessionEvent[] = [];
    for (const r of list) if (r.event) events.push(r.event);
    const rebuilt = replayEvents(id, sessions.timing, events);
    journal.resume(id, last.seq);
    for (const side of SIDES) {
      const recorded = list.filter((r) => r.type === 'MessageDelivered' && r.side === side).length;
      const deliveries = rebuilt.context.sides[side].deliveries;
      for (let i = recorded; i < deliveries.length; i++) journal.recordMissedDelivery(id, side, deliveries[i]!);
    }
    sessions.restore(id, rebuilt);
    restored++;
  }
  // Rewriting the journal is only worth it when it holds something no live session needs.
  if (garbage > 0 || unreadable > 0) await journal.compact(new Set(sessions.ids()));
  return { records, restored, dropped, ms: Math.round(performance.now() - started), unreadable, damaged, otherVersions };
}
