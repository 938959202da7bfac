/**
 * Transcripts read back from the journal. The invariant: folding a session's records gives
 * the same system prompts, handshake and messages (with sides, turns and times) as the live
 * session's own transcript, plus the deliveries; only the latest incarnation of a reused id
 * counts; the outcome says how the session ended. The renderers are pinned to their formats.
 */
import { createActor, SimulatedClock } from 'xstate';
import { describe, expect, it } from 'vitest';
import type { TurnPayload } from '../../machines/session.logic.js';
import { sessionMachine, type SessionEvent } from '../../machines/session.machine.js';
import { Journal } from '../../src/journal/journal.js';
import type { JournalRecord, JournalRecordV1 } from '../../src/journal/records.js';
import { FactStream } from '../../src/sessions/fact-stream.js';
import { MemoryStore } from '../../src/journal/store.js';
import { buildTranscript, loadSessionRecords, toJson, toMarkdown, type Transcript } from '../../src/journal/transcript.js';
import { createLogger } from '../../src/telemetry/logger.js';

const T0 = Date.parse('2026-03-01T12:00:00.000Z');
const iso = (offsetMs: number) => new Date(T0 + offsetMs).toISOString();

const turn = (at: number, content: string, system: string | null = null): TurnPayload => ({
  requestId: `req-${at}`,
  seen: null,
  content,
  idempotencyKey: null,
  system,
  at: T0 + at,
});

/** Runs the real chart with the journal's tap on it: the records are what the service writes. */
async function journalOf(sessionId: string, events: ReadonlyArray<readonly [number, SessionEvent]>) {
  const store = new MemoryStore<JournalRecord>();
  let now = T0;
  const journal = new Journal(store, createLogger({ logLevel: 'silent', logFormat: 'json' }));
  const facts = new FactStream(() => now);
  facts.subscribe(journal.onStep);
  const actor = createActor(sessionMachine, {
    input: { sessionId, timing: { handshakeTimeoutMs: 30_000, turnTimeoutMs: 30_000, streamTurnTimeoutMs: 30_000, sessionTtlMs: 3_600_000 } },
    clock: new SimulatedClock(),
    inspect: facts.inspect,
  }).start();
  for (const [at, event] of events) {
    now = T0 + at;
    actor.send(event);
  }
  await journal.durable();
  return { store, live: actor.getSnapshot().context };
}

let seqs = new Map<string, number>();
/**
 * A hand-made record, for the cases the chart makes slow to reach (expiry, reused ids). They are
 * written in the version-1 format, so these cases also read the journals written before facts.
 */
function rec(session: string, type: string, at: number, fields: Partial<JournalRecordV1> = {}): JournalRecordV1 {
  const seq = fields.seq ?? (seqs.get(session) ?? 0) + 1;
  seqs.set(session, seq);
  return { v: 1, session, seq, type, side: null, at: T0 + at, request: null, trace: null, ...fields };
}
const said = (session: string, type: 'SideConnected' | 'MessageSent', side: 'A' | 'B', at: number, content: string, seq?: number) =>
  rec(session, type, at, {
    side,
    content,
    event: { type: type === 'SideConnected' ? `CONNECT_${side}` : `MESSAGE_FROM_${side}`, turn: turn(at, content) },
    ...(seq ? { seq } : {}),
  });
const delivered = (session: string, side: 'A' | 'B', at: number, content: string) => rec(session, 'MessageDelivered', at, { side, content });

describe('buildTranscript from the records the service writes', () => {
  const conversation: Array<readonly [number, SessionEvent]> = [
    [1_000, { type: 'CONNECT_A', turn: turn(1_000, 'ping', 'You guard the gate.') }],
    [2_000, { type: 'CONNECT_B', turn: turn(2_000, 'Good evening.') }],
    [3_000, { type: 'MESSAGE_FROM_A', turn: turn(3_000, 'Who goes there?', 'You guard the gate.') }],
    [4_000, { type: 'MESSAGE_FROM_B', turn: turn(4_000, 'A traveller.', 'You are a traveller.') }],
    [5_000, { type: 'MESSAGE_FROM_A', turn: turn(5_000, 'Pass.', 'You guard the gate. Be brief.') }],
    [6_000, { type: 'CLOSE', reason: 'deleted' }],
  ];

  it('has each side, turn, time and text, system prompts where they change, and the deliveries', async () => {
    const { store } = await journalOf('gate', conversation);
    const transcript = buildTranscript(await loadSessionRecords(store, 'gate'))!;
    expect(transcript.lines.map((l) => [l.side, l.kind, l.turn, l.at - T0, l.content])).toEqual([
      ['A', 'system', 1, 1_000, 'You guard the gate.'],
      ['A', 'handshake', 1, 1_000, 'ping'],
      ['B', 'message', 1, 2_000, 'Good evening.'],
      ['A', 'delivery', 1, 2_000, 'Good evening.'],
      ['A', 'message', 2, 3_000, 'Who goes there?'],
      ['B', 'delivery', 1, 3_000, 'Who goes there?'],
      ['B', 'system', 2, 4_000, 'You are a traveller.'],
      ['B', 'message', 2, 4_000, 'A traveller.'],
      ['A', 'delivery', 2, 4_000, 'A traveller.'],
      ['A', 'system', 3, 5_000, 'You guard the gate. Be brief.'],
      ['A', 'message', 3, 5_000, 'Pass.'],
      ['B', 'delivery', 2, 5_000, 'Pass.'],
    ]);
    expect(transcript.turns).toEqual({ A: 3, B: 2 });
    expect(transcript.outcome).toEqual({ status: 'closed', reason: 'deleted', at: T0 + 6_000 });
    expect(transcript.startedAt).toBe(T0 + 1_000);
    expect(transcript.lastActivityAt).toBe(T0 + 6_000);
  });

  it('is the live session\'s own transcript, deliveries included: one fold over the facts', async () => {
    const { store, live } = await journalOf('gate', conversation);
    const transcript = buildTranscript(await loadSessionRecords(store, 'gate'))!;
    expect(transcript.lines).toEqual(live.transcript);
  });

  it('joins queued messages into one delivery, answering the turn that picked them up', async () => {
    const { store } = await journalOf('queue', [
      [1_000, { type: 'CONNECT_A', turn: turn(1_000, 'ping') }],
      [2_000, { type: 'CONNECT_B', turn: turn(2_000, 'one') }],
      [3_000, { type: 'MESSAGE_FROM_B', turn: turn(3_000, 'two') }],
      [4_000, { type: 'MESSAGE_FROM_B', turn: turn(4_000, 'three') }],
      [5_000, { type: 'MESSAGE_FROM_A', turn: turn(5_000, 'ok') }],
    ]);
    const transcript = buildTranscript(await loadSessionRecords(store, 'queue'))!;
    const deliveries = transcript.lines.filter((l) => l.kind === 'delivery').map((l) => [l.side, l.turn, l.content]);
    expect(deliveries).toEqual([
      ['A', 1, 'one'],
      ['B', 3, 'ok'],
      ['A', 2, 'two\n\nthree'],
    ]);
    expect(transcript.outcome).toEqual({ status: 'open', reason: null, at: null });
  });
});

describe('incarnations and outcomes', () => {
  it('reads only the latest incarnation of a reused session id, and no other session', async () => {
    seqs = new Map();
    const store = new MemoryStore<JournalRecord>();
    const records = [
      said('npc', 'SideConnected', 'A', 0, 'old ping'),
      said('other', 'SideConnected', 'A', 10, 'elsewhere'),
      said('npc', 'SideConnected', 'B', 20, 'old hello'),
      rec('npc', 'SessionClosed', 30, { event: { type: 'CLOSE', reason: 'deleted' } }),
      said('npc', 'SideConnected', 'A', 40, 'new ping', 1),
      said('other', 'SideConnected', 'B', 50, 'elsewhere too'),
      said('npc', 'SideConnected', 'B', 60, 'new hello'),
    ];
    for (const r of records) await store.append(r);

    const loaded = await loadSessionRecords(store, 'npc');
    expect(loaded.map((r) => (r as JournalRecordV1).content)).toEqual(['new ping', 'new hello']);
    const transcript = buildTranscript(loaded)!;
    expect(transcript.lines.map((l) => [l.side, l.kind, l.turn, l.content])).toEqual([
      ['A', 'handshake', 1, 'new ping'],
      ['B', 'message', 1, 'new hello'],
      ['A', 'delivery', 1, 'new hello'],
    ]);
    expect(transcript.outcome.status).toBe('open');
    // Given both incarnations at once, the transcript still starts at the latest seq 1.
    expect(buildTranscript(records.filter((r) => r.session === 'npc'))!.lines.map((l) => l.content)).toEqual(['new ping', 'new hello', 'new hello']);
    expect(await loadSessionRecords(store, 'nobody')).toEqual([]);
    expect(buildTranscript([])).toBeNull();
  });

  it('says expired when the TTL ran out, and open after a shutdown (the session resumes on restart)', () => {
    seqs = new Map();
    const expired = buildTranscript([said('e', 'SideConnected', 'A', 0, 'ping'), rec('e', 'SessionExpired', 100)])!;
    expect(expired.outcome).toEqual({ status: 'expired', reason: 'expired', at: T0 + 100 });

    const shutdown = [said('s', 'SideConnected', 'A', 0, 'ping'), rec('s', 'SessionClosed', 100, { event: { type: 'CLOSE', reason: 'shutdown' } })];
    expect(buildTranscript(shutdown)!.outcome).toEqual({ status: 'open', reason: 'shutdown', at: T0 + 100 });
    const resumed = buildTranscript([...shutdown, said('s', 'SideConnected', 'B', 200, 'hello')])!;
    expect(resumed.outcome).toEqual({ status: 'open', reason: null, at: null });
  });
});

describe('renderers', () => {
  const transcript = (): Transcript => {
    seqs = new Map();
    const system = 'You guard the gate.\nSpeak plainly.';
    return buildTranscript([
      rec('gate', 'SideConnected', 0, { side: 'A', content: 'ping', event: { type: 'CONNECT_A', turn: turn(0, 'ping', system) } }),
      said('gate', 'SideConnected', 'B', 1_000, 'Good evening.'),
      delivered('gate', 'A', 1_000, 'Good evening.'),
      rec('gate', 'SessionClosed', 2_000, { event: { type: 'CLOSE', reason: 'deleted' } }),
    ])!;
  };

  it('toJson is the documented object, with ISO times', () => {
    expect(toJson(transcript())).toEqual({
      object: 'session.transcript',
      session: 'gate',
      tenant: null,
      started_at: iso(0),
      last_activity_at: iso(2_000),
      outcome: { status: 'closed', reason: 'deleted', at: iso(2_000) },
      turns: { A: 1, B: 1 },
      entries: [
        { at: iso(0), side: 'A', kind: 'system', turn: 1, content: 'You guard the gate.\nSpeak plainly.' },
        { at: iso(0), side: 'A', kind: 'handshake', turn: 1, content: 'ping' },
        { at: iso(1_000), side: 'B', kind: 'message', turn: 1, content: 'Good evening.' },
        { at: iso(1_000), side: 'A', kind: 'delivery', turn: 1, content: 'Good evening.' },
      ],
    });
  });

  it('toMarkdown is a readable document: title, outcome, quoted system prompt, one heading line per message', () => {
    expect(toMarkdown(transcript())).toBe(
      [
        '# Transcript of session `gate`',
        '',
        '- Outcome: closed (deleted) at 2026-03-01T12:00:02.000Z',
        '- Started: 2026-03-01T12:00:00.000Z; last activity: 2026-03-01T12:00:02.000Z',
        '- Turns: A 1, B 1',
        '',
        '> **System prompt (side A)** · from turn 1 · 2026-03-01T12:00:00.000Z',
        '>',
        '> You guard the gate.',
        '> Speak plainly.',
        '',
        '**A** · turn 1 · 2026-03-01T12:00:00.000Z · handshake (not forwarded)',
        '',
        'ping',
        '',
        '**B** · turn 1 · 2026-03-01T12:00:01.000Z',
        '',
        'Good evening.',
        '',
        '_→ delivered to A, answering its turn 1 · 2026-03-01T12:00:01.000Z_',
        '',
      ].join('\n'),
    );
  });

  it('keeps a session id with backticks or line breaks inside its inline code', () => {
    seqs = new Map();
    const odd = buildTranscript([said('a`b\nc', 'SideConnected', 'A', 0, 'ping')])!;
    expect(toMarkdown(odd).split('\n')[0]).toBe('# Transcript of session ``a`b c``');
  });
});
