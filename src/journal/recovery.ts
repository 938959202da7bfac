/**
 * Recovery on start: sessions that were not closed and whose TTL (from their last activity)
 * has not run out are rebuilt by replaying their events; the journal is then compacted to
 * just those sessions, so replay time follows live sessions.
 */
import type { SessionEvent } from '../../machines/session.machine.js';
import type { SessionRegistry } from '../sessions/registry.js';
import type { Journal } from './journal.js';
import { RECORD_VERSION, type JournalRecord } from './records.js';

export interface RecoveryReport {
  readonly records: number;
  readonly restored: number;
  readonly dropped: number;
  readonly ms: number;
}

export async function recoverSessions(journal: Journal, sessions: SessionRegistry, options: { ttlMs: number; now: number }): Promise<RecoveryReport> {
  const started = performance.now();
  const incarnations = new Map<string, JournalRecord[]>();
  let records = 0;
  for await (const record of journal.store.read()) {
    records++;
    if (record.v !== RECORD_VERSION) continue;
    // seq 1 starts a new incarnation of the id: only the latest one can still be live.
    const list = record.seq === 1 ? [] : incarnations.get(record.session);
    if (!list) continue;
    list.push(record);
    incarnations.set(record.session, list);
  }
  let restored = 0;
  let dropped = 0;
  // Records of earlier incarnations of an id are garbage too.
  let kept = 0;
  for (const list of incarnations.values()) kept += list.length;
  let garbage = records - kept;
  for (const [id, list] of incarnations) {
    const last = list[list.length - 1]!;
    const closed = list.some(
      (r) => r.type === 'SessionExpired' || (r.type === 'SessionClosed' && (r.event as { reason?: string } | undefined)?.reason !== 'shutdown'),
    );
    if (closed || options.now - last.at >= options.ttlMs) {
      dropped++;
      garbage += list.length;
      continue;
    }
    // A graceful shutdown is not an end: the session carries on after the restart.
    const events: SessionEvent[] = [];
    for (const r of list) if (r.event) events.push(r.event);
    sessions.restore(id, events, last.seq);
    restored++;
  }
  // Rewriting the journal is only worth it when it holds something no live session needs.
  if (garbage > 0) await journal.compact(new Set(sessions.ids()));
  return { records, restored, dropped, ms: Math.round(performance.now() - started) };
}
