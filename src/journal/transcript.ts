/**
 * A session's conversation as read back from the journal: who said what, when, on which of
 * their turns, under which system prompt and preamble, what each response gave a side, and how
 * the session ended. It is the one fold over the session's facts (machines/session.facts.ts),
 * the same that replays a session and that the console shows live: its transcript, plus the
 * outcome. Rendered as JSON (a stable, documented shape, below) or as Markdown for people.
 */
import { displayId, splitScoped } from '../auth/tenants.js';
import { fold, type SessionFact } from '../../machines/session.facts.js';
import type { Side, TranscriptKind } from '../../machines/session.logic.js';
import { factsOf, isReadable, latestIncarnations, type JournalRecord } from './records.js';
import type { JournalStore } from './store.js';

/** system: a side's system prompt, recorded when it changes; preamble: the assistant messages before a
 *  side's first user message (a chat UI's character greeting; its own, never forwarded), recorded when it
 *  changes; handshake: A's first turn (never forwarded); message: a turn's new content; delivery: what one
 *  response gave a side (queued messages joined). */
export type TranscriptLineKind = TranscriptKind;

export interface TranscriptLine {
  /** ms since the epoch */
  readonly at: number;
  readonly side: Side;
  readonly kind: TranscriptLineKind;
  /** The side's turn it belongs to (for a delivery: the receiving side's turn it answers), from 1. */
  readonly turn: number;
  readonly content: string;
}

/** open: live (or interrupted by a shutdown, reason 'shutdown': it resumes after a restart while its TTL lasts);
 *  closed: ended by DELETE (reason 'deleted'); expired: its inactivity TTL ran out. */
export interface TranscriptOutcome {
  readonly status: 'open' | 'closed' | 'expired';
  readonly reason: 'deleted' | 'expired' | 'shutdown' | null;
  readonly at: number | null;
}

export interface Transcript {
  readonly session: string;
  readonly startedAt: number;
  readonly lastActivityAt: number;
  readonly turns: Readonly<Record<Side, number>>;
  readonly outcome: TranscriptOutcome;
  readonly lines: readonly TranscriptLine[];
}

/** Anything records can be read from: a JournalStore, or a journal file read directly. */
export type RecordSource = Pick<JournalStore<JournalRecord>, 'read'>;

/** The records of one session's latest incarnation, in journal order; empty if the journal has none. */
export async function loadSessionRecords(source: RecordSource, sessionId: string): Promise<JournalRecord[]> {
  const mine: JournalRecord[] = [];
  for await (const record of source.read()) if (record.session === sessionId && isReadable(record)) mine.push(record);
  return latestIncarnations(mine).get(sessionId) ?? [];
}

/** Folds one session's records (its latest incarnation is taken) into its transcript; null when there are none. */
export function buildTranscript(records: readonly JournalRecord[]): Transcript | null {
  const first = records[0];
  if (!first) return null;
  const latest = latestIncarnations(records.filter(isReadable)).get(first.session) ?? [];
  return transcriptOf(first.session, factsOf(latest));
}

/** The transcript a session's facts make (its latest incarnation's, from its first fact). */
export function transcriptOf(session: string, facts: readonly SessionFact[]): Transcript | null {
  const start = facts[0];
  if (!start) return null;
  // The timers play no part in a transcript.
  const context = fold(session, { handshakeTimeoutMs: 0, turnTimeoutMs: 0, streamTurnTimeoutMs: 0, sessionTtlMs: 0 }, facts);
  let outcome: TranscriptOutcome = { status: 'open', reason: null, at: null };
  let lastActivityAt = start.at;
  for (const fact of facts) {
    lastActivityAt = Math.max(lastActivityAt, fact.at);
    if (fact.type === 'SessionExpired') outcome = { status: 'expired', reason: 'expired', at: fact.at };
    else if (fact.type === 'SessionClosed') {
      // A graceful shutdown is not an end: recovery brings the session back (PROTOCOL.md §4).
      outcome = fact.reason === 'shutdown' ? { status: 'open', reason: 'shutdown', at: fact.at } : fact.reason === 'expired' ? { status: 'expired', reason: 'expired', at: fact.at } : { status: 'closed', reason: 'deleted', at: fact.at };
    } else if (fact.type !== 'MessageDelivered' && fact.type !== 'SessionResumed' && outcome.reason === 'shutdown') {
      outcome = { status: 'open', reason: null, at: null };
    }
  }
  const turns = { A: context.sides.A.lastTurn?.seq ?? 0, B: context.sides.B.lastTurn?.seq ?? 0 };
  return { session, startedAt: start.at, lastActivityAt, turns, outcome, lines: context.transcript };
}

/** The JSON form (GET /admin/sessions/:id/transcript, `motive-proxy transcript --format json`). Times are ISO 8601. */
export interface TranscriptJson {
  readonly object: 'session.transcript';
  /** The session's name, as its clients wrote it. */
  readonly session: string;
  /** Its tenant; null for the default tenant. */
  readonly tenant: string | null;
  readonly started_at: string;
  readonly last_activity_at: string;
  readonly outcome: { readonly status: TranscriptOutcome['status']; readonly reason: TranscriptOutcome['reason']; readonly at: string | null };
  readonly turns: Readonly<Record<Side, number>>;
  readonly entries: ReadonlyArray<{ readonly at: string; readonly side: Side; readonly kind: TranscriptLineKind; readonly turn: number; readonly content: string }>;
}

export function toJson(transcript: Transcript): TranscriptJson {
  const { outcome } = transcript;
  return {
    object: 'session.transcript',
    session: splitScoped(transcript.session).name,
    tenant: splitScoped(transcript.session).tenant,
    started_at: iso(transcript.startedAt),
    last_activity_at: iso(transcript.lastActivityAt),
    outcome: { status: outcome.status, reason: outcome.reason, at: outcome.at === null ? null : iso(outcome.at) },
    turns: { ...transcript.turns },
    entries: transcript.lines.map((line) => ({ at: iso(line.at), side: line.side, kind: line.kind, turn: line.turn, content: line.content })),
  };
}

/** A readable document: system prompts as blockquotes, each message under a `**A** · turn 2 · time` line. */
export function toMarkdown(transcript: Transcript): string {
  const { turns } = transcript;
  const parts = [
    `# Transcript of session ${inlineCode(displayId(transcript.session))}`,
    [
      `- Outcome: ${describeOutcome(transcript.outcome)}`,
      `- Started: ${iso(transcript.startedAt)}; last activity: ${iso(transcript.lastActivityAt)}`,
      `- Turns: A ${turns.A}, B ${turns.B}`,
    ].join('\n'),
  ];
  for (const line of transcript.lines) {
    const heading = `turn ${line.turn} · ${iso(line.at)}`;
    switch (line.kind) {
      case 'system':
        parts.push(quote(`**System prompt (side ${line.side})** · from ${heading}\n\n${line.content}`));
        break;
      case 'preamble':
        parts.push(quote(`**Preamble (side ${line.side}: its own greeting, not forwarded)** · from ${heading}\n\n${line.content}`));
        break;
      case 'handshake':
        parts.push(`**${line.side}** · ${heading} · handshake (not forwarded)\n\n${line.content}`);
        break;
      case 'message':
        parts.push(`**${line.side}** · ${heading}\n\n${line.content}`);
        break;
      case 'delivery':
        // The text is already above, as the other side's messages; only who got it, and when.
        parts.push(`_→ delivered to ${line.side}, answering its turn ${line.turn} · ${iso(line.at)}_`);
        break;
    }
  }
  return `${parts.join('\n\n')}\n`;
}

function describeOutcome(outcome: TranscriptOutcome): string {
  const at = outcome.at === null ? '' : iso(outcome.at);
  if (outcome.status === 'expired') return `expired (inactivity) at ${at}`;
  if (outcome.status === 'closed') return `closed (${outcome.reason ?? 'deleted'}) at ${at}`;
  if (outcome.reason === 'shutdown') return `open (the proxy shut down at ${at}; the session resumes after a restart)`;
  return 'open';
}

const iso = (ms: number): string => new Date(ms).toISOString();

function quote(text: string): string {
  return text
    .split('\n')
    .map((line) => (line === '' ? '>' : `> ${line}`))
    .join('\n');
}

/** Inline code that survives backticks and line breaks in the text. */
function inlineCode(text: string): string {
  const flat = text.replace(/\r?\n/g, ' ');
  const longest = Math.max(0, ...Array.from(flat.matchAll(/`+/g), (m) => m[0].length));
  const fence = '`'.repeat(longest + 1);
  const pad = flat.startsWith('`') || flat.endsWith('`') ? ' ' : '';
  return `${fence}${pad}${flat}${pad}${fence}`;
}
