/**
 * What the orchestrator checks in every session, from what the two clients recorded (never
 * from the server's word): each side received exactly the other's messages, in order, once;
 * side A's handshake was never forwarded; nothing failed that the application could see.
 */
import type { AttemptEvent, RecordEvent, Side, TurnReport } from './types.js';

export interface SideRecord {
  readonly side: Side;
  readonly events: readonly RecordEvent[];
}

type Of<K extends RecordEvent['ev']> = Extract<RecordEvent, { ev: K }>;

export const eventsOf = <K extends RecordEvent['ev']>(record: SideRecord | undefined, ev: K): Of<K>[] =>
  (record?.events ?? []).filter((e): e is Of<K> => e.ev === ev);

/** Parses a JSON-lines record file; a torn last line (a runner killed mid-write) is skipped. */
export function parseRecord(side: Side, text: string): SideRecord {
  const events: RecordEvent[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      events.push(JSON.parse(line) as RecordEvent);
    } catch {
      // torn line
    }
  }
  return { side, events };
}

/** The messages a delivery carries: queued messages are joined by a blank line. */
export const splitDelivery = (content: string): string[] => (content === '' ? [] : content.split('\n\n'));

/** At most `max` characters, cut between code points (never inside an emoji's surrogate pair). */
export function clip(text: string, max: number): string {
  if (text.length <= max) return text;
  const points = Array.from(text);
  if (points.length <= max) return text;
  return `${points.slice(0, max - 3).join('')}...`;
}

const preview = (text: string): string => JSON.stringify(clip(text, 60));

/** Error codes of requests the proxy refused outright (their content was never accepted). */
const REFUSED = /^(session_conflict|invalid_request|invalid_json|payload_too_large|unsupported_media_type|not_found|method_not_allowed|invalid_api_key|max_sessions|rate_limited|status_4(0[0-7]|1[1-9]|[2-9]\d))$/;

export interface DirectionCheck {
  readonly problems: string[];
  /** For each message the sender said (handshake excluded): when it arrived, or null. */
  readonly arrivals: Array<{ content: string; sentAt: number; i: number; receivedAt: number | null }>;
}

/**
 * Compares what `to` received with what `from` said. The comparison is exact (content and
 * order); each problem names the message and the turn, so a report can say what went wrong.
 */
export function checkDirection(from: SideRecord, to: SideRecord): DirectionCheck {
  const problems: string[] = [];
  // A message whose request the proxy refused (409 session_conflict, 422, …) was never
  // accepted, so it is not owed to the other side; that error is reported on its own. One
  // whose wait failed later (closed, timed out) was accepted and must still arrive.
  // Refused means the first attempt was: a retry refused later may follow an accepted attempt.
  const firstRefused = (i: number): boolean => {
    const first = eventsOf(from, 'http').find((h) => h.i === i && h.method === 'POST');
    if (!first) return true; // no HTTP attempt recorded: the error code decides
    return first.status !== null && first.status >= 400 && first.status < 500 && first.status !== 408 && first.status !== 410;
  };
  const refused = new Set(
    eventsOf(from, 'error')
      .filter((e) => REFUSED.test(e.code ?? '') && firstRefused(e.i))
      .map((e) => e.i),
  );
  const said = eventsOf(from, 'send')
    .filter((e) => !e.handshake && !refused.has(e.i))
    .map((e) => ({ content: e.content, sentAt: e.t, i: e.i }));
  const handshake = eventsOf(from, 'send').find((e) => e.handshake)?.content;
  // Each message received, with the time of the delivery that carried it.
  const received: Array<{ content: string; at: number; delivery: number }> = [];
  eventsOf(to, 'recv').forEach((e, delivery) => {
    // Empty content is refused on the way in (422), so an empty delivery carries nothing.
    if (e.content.trim() === '') problems.push(`${from.side}→${to.side}: ${to.side} got an empty reply (delivery ${delivery + 1}, to its message ${e.i + 1})`);
    for (const content of splitDelivery(e.content)) received.push({ content, at: e.t, delivery: delivery + 1 });
  });
  const arrivals: DirectionCheck['arrivals'] = said.map((s) => ({ ...s, receivedAt: null }));
  const label = `${from.side}→${to.side}`;

  // Exactly once: count each content on both sides (message texts of a script are unique).
  const saidCount = new Map<string, number>();
  for (const s of said) saidCount.set(s.content, (saidCount.get(s.content) ?? 0) + 1);
  const gotCount = new Map<string, number>();
  for (const r of received) gotCount.set(r.content, (gotCount.get(r.content) ?? 0) + 1);
  for (const [content, n] of gotCount) {
    const expected = saidCount.get(content) ?? 0;
    if (content === handshake && expected === 0) problems.push(`${label}: side A's handshake ${preview(content)} was forwarded to B`);
    else if (expected === 0) problems.push(`${label}: ${to.side} received ${preview(content)}, which ${from.side} never said`);
    else if (n > expected) problems.push(`${label}: ${to.side} received ${preview(content)} ${n} times (duplicate delivery; said ${expected}×)`);
  }
  for (const [content, n] of saidCount) {
    const got = gotCount.get(content) ?? 0;
    if (got < n) {
      const index = said.findIndex((s) => s.content === content);
      problems.push(`${label}: message ${index + 1} ${preview(content)} never reached ${to.side} (lost; received ${got} of ${n})`);
    }
  }
  // In order: the received sequence, without unknown extras, must follow the said sequence.
  let cursor = 0;
  const known = received.filter((r) => saidCount.has(r.content));
  const unmatched = (content: string, from: number, to: number): number => {
    for (let k = from; k < to; k++) if (said[k]!.content === content && arrivals[k]!.receivedAt === null) return k;
    return -1;
  };
  for (const r of known) {
    const index = unmatched(r.content, cursor, said.length);
    if (index !== -1) {
      arrivals[index]!.receivedAt = r.at;
      cursor = index + 1;
      continue;
    }
    const earlier = unmatched(r.content, 0, cursor);
    if (earlier !== -1) {
      arrivals[earlier]!.receivedAt = r.at;
      problems.push(`${label}: message ${earlier + 1} ${preview(r.content)} arrived out of order (in delivery ${r.delivery} of ${to.side}, after a later message)`);
    }
    // otherwise a further copy of a message already matched: reported as a duplicate above
  }
  return { problems, arrivals };
}

/** Per message: who said it, when it arrived, and the sender's HTTP attempts for it. */
export function turnsOf(a: SideRecord, b: SideRecord, ab: DirectionCheck, ba: DirectionCheck): TurnReport[] {
  const attempts = (record: SideRecord, i: number) =>
    eventsOf(record, 'http')
      .filter((h: AttemptEvent) => h.i === i && h.method !== 'DELETE')
      .map((h) => h.status ?? 0);
  const rows = [
    ...ab.arrivals.map((x) => ({ ...x, from: 'A' as const, to: 'B' as const, record: a })),
    ...ba.arrivals.map((x) => ({ ...x, from: 'B' as const, to: 'A' as const, record: b })),
  ].sort((x, y) => x.sentAt - y.sentAt);
  return rows.map((r, n) => ({
    n: n + 1,
    from: r.from,
    to: r.to,
    content: clip(r.content, 200),
    sentAt: r.sentAt,
    receivedAt: r.receivedAt,
    latencyMs: r.receivedAt === null ? null : Math.max(0, Math.round((r.receivedAt - r.sentAt) * 10) / 10),
    attempts: attempts(r.record, r.i),
  }));
}

/** Problems common to every scenario: application-visible errors, unfinished sides. */
export function checkCompletion(record: SideRecord | undefined, side: Side): string[] {
  if (!record || record.events.length === 0) return [`side ${side} recorded nothing (its runner did not start or crashed)`];
  const problems: string[] = [];
  for (const e of eventsOf(record, 'error')) problems.push(`side ${side} failed at message ${e.i + 1}: ${e.code ? `${e.code}: ` : ''}${e.message}`);
  const end = eventsOf(record, 'end')[0];
  if (!end) problems.push(`side ${side} did not finish (its runner was stopped or crashed)`);
  else if (!end.ok && problems.length === 0) problems.push(`side ${side} ended badly: ${end.reason}`);
  for (const d of eventsOf(record, 'duplicate')) {
    if (!d.same) problems.push(`side ${side} sent message ${d.i + 1} again and got a different answer: ${preview(d.content)}`);
  }
  return problems;
}

/**
 * A side whose last request was retried after the peer had closed the session gets 409 (the
 * id now names nothing it knows): acceptable only when the peer's delete really came first.
 */
export function checkEnding(record: SideRecord, peer: SideRecord): string[] {
  const problems: string[] = [];
  const deleted = eventsOf(peer, 'deleted')[0];
  for (const closed of eventsOf(record, 'closed')) {
    if (closed.by !== 'deleted-before-retry') continue;
    const conflict = eventsOf(record, 'http')
      .filter((h) => h.i === closed.i && h.status === 409)
      .at(-1);
    // The delete was sent before the 409 came back (the service handled it first).
    if (!deleted || !conflict || conflict.headersAt === null || !(deleted.sentAt < conflict.headersAt)) {
      problems.push(`side ${record.side}: its last message got 409 session_conflict although side ${peer.side} had not closed the session before`);
    }
  }
  return problems;
}
