/**
 * Writes a journal of `events` records shaped exactly as the service writes them: sessions of
 * 20 records each (handshake, first prompt, then turns with full histories and deliveries),
 * all recent, so recovery restores every one of them.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

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
    const push = (type: string, side: 'A' | 'B', request: string, event?: object, content?: string) =>
      lines.push(JSON.stringify({ v: 1, session, seq: ++seq, type, side, at, request, trace: null, ...(content ? { content } : {}), ...(event ? { event } : {}) }));
    const turn = (requestId: string, content: string, seen: number | null) => ({ requestId, seen, content, idempotencyKey: null, system: null, at });
    push('SideConnected', 'A', `${s}-a0`, { type: 'CONNECT_A', turn: turn(`${s}-a0`, 'ping', null) }, 'ping');
    push('SideConnected', 'B', `${s}-b0`, { type: 'CONNECT_B', turn: turn(`${s}-b0`, text('b0'), null) }, text('b0'));
    push('MessageDelivered', 'A', `${s}-a0`, undefined, text('b0'));
    const seen = { A: 1, B: 0 };
    for (let t = 1; seq < perSession; t++) {
      const side = t % 2 === 1 ? 'A' : 'B';
      const other = side === 'A' ? 'B' : 'A';
      const content = text(`${side}${t}`);
      push('MessageSent', side, `${s}-${side}${t}`, { type: `MESSAGE_FROM_${side}`, turn: turn(`${s}-${side}${t}`, content, seen[side] || null) }, content);
      if (seq === perSession) break; // the last message is still waiting for its answer
      push('MessageDelivered', other, `${s}-${other}${t - 1}`, undefined, content);
      seen[other]++;
    }
  }
  writeFileSync(join(dir, 'journal.jsonl'), lines.slice(0, events).join('\n') + '\n');
  return { sessions };
}
