/**
 * Writes a journal of `events` records shaped exactly as the service writes them (version 2:
 * one session fact a record): sessions of 20 records each (handshake, first prompt, then turns
 * with full histories and deliveries), all recent, so recovery restores every one of them.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SessionFact } from '../machines/session.facts.js';
import { toRecord } from '../src/journal/records.js';

export function writeJournalFixture(dir: string, events: number): { sessions: number } {
  mkdirSync(dir, { recursive: true });
  const lines: string[] = [];
  const at = Date.now();
  const perSession = 20;
  const sessions = Math.ceil(events / perSession);
  const text = (label: string) => `${label} ${'lorem ipsum dolor sit amet '.repeat(7)}`.slice(0, 200);
  for (let s = 0; s < sessions && lines.length < events; s++) {
    const session = `fixture-${s}`;
    let seq = 0;
    const push = (fact: SessionFact) => lines.push(JSON.stringify(toRecord(fact, ++seq, null)));
    const turn = (content: string, seen: number | null) => ({ seen, content, idempotencyKey: null, system: null });
    const delivered = { A: 0, B: 0 };
    const deliver = (side: 'A' | 'B', request: string, content: string) =>
      push({ type: 'MessageDelivered', session, at, side, request, content, delivery: delivered[side]++, waitedMs: 0 });
    push({ type: 'SideConnected', session, at, side: 'A', request: `${s}-a0`, turn: turn('ping', null) });
    push({ type: 'SideConnected', session, at, side: 'B', request: `${s}-b0`, turn: turn(text('b0'), null) });
    deliver('A', `${s}-a0`, text('b0'));
    const seen = { A: 1, B: 0 };
    for (let t = 1; seq < perSession; t++) {
      const side = t % 2 === 1 ? 'A' : 'B';
      const other = side === 'A' ? 'B' : 'A';
      const content = text(`${side}${t}`);
      push({ type: 'MessageSent', session, at, side, request: `${s}-${side}${t}`, turn: turn(content, seen[side] || null) });
      if (seq === perSession) break; // the last message is still waiting for its answer
      deliver(other, `${s}-${other}${t - 1}`, content);
      seen[other]++;
    }
  }
  writeFileSync(join(dir, 'journal.jsonl'), lines.slice(0, events).join('\n') + '\n');
  return { sessions };
}
