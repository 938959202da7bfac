/**
 * The session layer alone, without HTTP: attribution, the XState session actor, replies, and
 * (in the `journal` variant) the fact stream feeding the in-memory journal as the service
 * does. 100 sessions ping-pong 20 turns each, as in the relay workload; prints µs per turn.
 * Then the heap a paired session keeps with one side held (10,000 of them).
 * Forked by `npm run bench -- --floors`; also runs on its own: node --expose-gc --import tsx bench/session-loop.ts
 */
import { performance } from 'node:perf_hooks';
import { pino } from 'pino';
import { Journal } from '../src/journal/journal.js';
import { MemoryStore } from '../src/journal/store.js';
import type { JournalRecord } from '../src/journal/records.js';
import type { TurnRequest } from '../src/sessions/attribution.js';
import { FactStream } from '../src/sessions/fact-stream.js';
import { SessionRegistry } from '../src/sessions/registry.js';

type Variant = 'actor' | 'journal';
const TURNS = 20;
const CONCURRENT = 100;

function registryFor(variant: Variant): SessionRegistry {
  const timing = { handshakeTimeoutMs: 600_000, turnTimeoutMs: 600_000, streamTurnTimeoutMs: 600_000, sessionTtlMs: 3_600_000 };
  if (variant === 'actor') return new SessionRegistry({ timing, maxSessions: 1_000_000 });
  const journal = new Journal(new MemoryStore<JournalRecord>(), pino({ level: 'silent' }));
  const facts = new FactStream();
  facts.subscribe(journal.onStep);
  facts.subscribe(() => undefined); // the transition log, silenced
  return new SessionRegistry({ timing, maxSessions: 1_000_000, inspect: facts.inspect });
}

const text = (label: string) => `${label} ${'lorem ipsum dolor sit amet '.repeat(8)}`.slice(0, 200);
let requests = 0;

async function session(registry: SessionRegistry, id: string): Promise<void> {
  const history: Record<'A' | 'B', string[]> = { A: [], B: [] };
  const request = (side: 'A' | 'B', content: string): TurnRequest => ({ explicitSide: null, assistantHistory: history[side], messages: [content], system: null, retryCount: 0, idempotencyKey: null });
  const submit = (side: 'A' | 'B', content: string) => {
    const result = registry.submit(id, request(side, content), `r${requests++}`);
    if ('error' in result) throw new Error(result.message);
    return result.outcome;
  };
  const pending: Record<'A' | 'B', Promise<unknown> | null> = { A: submit('A', 'ping'), B: null };
  let sender: 'A' | 'B' = 'B';
  for (let t = 1; t <= TURNS; t++) {
    const receiver: 'A' | 'B' = sender === 'A' ? 'B' : 'A';
    pending[sender] = submit(sender, text(`${id} ${sender}${t}`));
    const outcome = (await pending[receiver]) as { type: string; content?: string };
    if (outcome.type !== 'reply') throw new Error(`turn ${t} of ${id}: ${outcome.type}`);
    history[receiver] = [...history[receiver], outcome.content!];
    sender = receiver;
  }
  registry.close(id, 'deleted');
}

async function run(variant: Variant, turns: number): Promise<number> {
  const registry = registryFor(variant);
  let next = 0;
  const total = Math.ceil(turns / TURNS);
  const started = performance.now();
  await Promise.all(Array.from({ length: CONCURRENT }, async () => { while (next < total) await session(registry, `${variant}-${next++}`); }));
  return ((performance.now() - started) * 1000) / (total * TURNS);
}

/**
 * Heap bytes a paired session keeps while one side is held, in the session layer with the
 * journal tap (memory store) as the service runs it: A's handshake answered by B's first
 * message, B's request held. Needs `--expose-gc`; null without it.
 */
export async function heldBytes(sessions = 10_000): Promise<number | null> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) return null;
  const settle = async () => {
    await new Promise((r) => setTimeout(r, 20));
    gc();
  };
  const registry = registryFor('journal');
  await settle();
  const before = process.memoryUsage().heapUsed;
  const request = (content: string): TurnRequest => ({ explicitSide: null, assistantHistory: [], messages: [content], system: null, retryCount: 0, idempotencyKey: null });
  const kept: unknown[] = [];
  for (let i = 0; i < sessions; i++) registry.submit(`held-${i}`, request('ping'), `a${i}`);
  for (let i = 0; i < sessions; i++) {
    const held = registry.submit(`held-${i}`, request(text('opening')), `b${i}`);
    if ('error' in held) throw new Error(held.message);
    kept.push(held.outcome); // B's request waits, as a held HTTP request would
  }
  await settle();
  const bytes = (process.memoryUsage().heapUsed - before) / sessions;
  registry.closeAll('shutdown');
  return kept.length === sessions ? bytes : null;
}

export async function sessionLoop(turns = 40_000): Promise<Record<Variant, number> & { heldBytes: number | null }> {
  const out = {} as Record<Variant, number>;
  for (const variant of ['actor', 'journal'] as const) {
    await run(variant, turns / 2); // warm-up
    const rounds = [await run(variant, turns), await run(variant, turns), await run(variant, turns)].sort((a, b) => a - b);
    out[variant] = rounds[1]!;
  }
  return { ...out, heldBytes: await heldBytes() };
}

if (process.send) {
  sessionLoop().then((result) => process.send!({ result }), (err: Error) => process.send!({ error: err.stack }));
} else if (import.meta.url === `file://${process.argv[1]}`) {
  sessionLoop().then((r) =>
    process.stdout.write(
      `session layer: ${r.actor.toFixed(1)} µs/turn (actor), ${r.journal.toFixed(1)} µs/turn (with the journal tap)` +
        (r.heldBytes === null ? '' : `; ${Math.round(r.heldBytes)} heap bytes a paired session with one side held`) +
        '\n',
    ),
  );
}
