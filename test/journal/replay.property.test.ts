/**
 * Replay after any number of restarts (PROTOCOL.md §4, journal): a session rebuilt from its
 * journal equals what its MessageDelivered records say the clients were given, however kills
 * (nothing recorded), graceful restarts (a shutdown recorded) and turns interleave.
 *
 * Each run drives the real SessionRegistry, XState actors and Journal on one in-memory store.
 * A "kill" drops the whole actor system without writing anything (the tap is cut first, as a
 * SIGKILL would cut it); a "graceful restart" closes every session for shutdown, as the service
 * does. Both then start a new journal and registry on the same store and recover from it.
 *
 * The two clients are chat apps that keep their history: an answered turn adds the user message
 * and the answer; a failed request leaves its user message pending, and the client either sends
 * the same body again or adds a new message after it (a UI that kept a failed message).
 *
 * Checked after every step:
 * 1. the live session's deliveries to each side equal that side's MessageDelivered records;
 * 2. after every restart, the rebuilt session's deliveries equal them too, and no request is held;
 * 3. every answer a client reads is the session's delivery at the index it names, and a client's
 *    history is never refused (no 409 session_conflict);
 * 4. in the end, once both sides have drained their queues, each side has received exactly the
 *    other's messages, in order, each once (A's handshake excluded).
 */
import fc from 'fast-check';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { Side } from '../../machines/session.logic.js';
import { Journal } from '../../src/journal/journal.js';
import type { JournalRecord } from '../../src/journal/records.js';
import { recoverSessions } from '../../src/journal/recovery.js';
import { MemoryStore } from '../../src/journal/store.js';
import type { TurnRequest } from '../../src/sessions/attribution.js';
import { FactStream } from '../../src/sessions/fact-stream.js';
import { SessionRegistry } from '../../src/sessions/registry.js';
import type { Outcome } from '../../src/sessions/session.js';

const SESSION = 'replayed';
const TIMING = { handshakeTimeoutMs: 600_000, turnTimeoutMs: 600_000, streamTurnTimeoutMs: 600_000, sessionTtlMs: 3_600_000 };

type Command =
  | { readonly kind: 'send'; readonly side: Side }
  | { readonly kind: 'again'; readonly side: Side }
  | { readonly kind: 'abort'; readonly side: Side }
  | { readonly kind: 'kill' }
  | { readonly kind: 'graceful' };

const side = fc.constantFrom<Side>('A', 'B');
const command: fc.Arbitrary<Command> = fc.oneof(
  { weight: 5, arbitrary: side.map((s) => ({ kind: 'send' as const, side: s })) },
  { weight: 2, arbitrary: side.map((s) => ({ kind: 'again' as const, side: s })) },
  { weight: 2, arbitrary: side.map((s) => ({ kind: 'abort' as const, side: s })) },
  { weight: 1, arbitrary: fc.constant({ kind: 'kill' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'graceful' as const }) },
);

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

/** A chat client that keeps its history. */
class Client {
  /** The conversation as the client holds it: user messages and the answers it read. */
  readonly history: { role: 'user' | 'assistant'; content: string }[] = [];
  /** User messages sent after its last answer, whose answer it has not read. */
  pending: string[] = [];
  /** Every new message it typed, in order. */
  readonly said: string[] = [];
  /** The request now in flight. */
  inFlight: { disconnect(): void; settled: boolean } | null = null;
  private counter = 0;

  constructor(readonly side: Side) {}

  newMessage(): string {
    const text = `${this.side}${++this.counter}`;
    this.said.push(text);
    this.pending.push(text);
    return text;
  }

  request(): TurnRequest {
    const assistantHistory = this.history.filter((m) => m.role === 'assistant').map((m) => m.content);
    return {
      explicitSide: this.side,
      assistantHistory,
      messages: [...this.pending],
      system: null,
      retryCount: 0,
      idempotencyKey: null,
    };
  }

  answered(content: string): void {
    for (const m of this.pending) this.history.push({ role: 'user', content: m });
    this.history.push({ role: 'assistant', content });
    this.pending = [];
  }

  /** What it was given, one entry per answer read. */
  get received(): string[] {
    return this.history.filter((m) => m.role === 'assistant').map((m) => m.content);
  }
}

class World {
  readonly store = new MemoryStore<JournalRecord>();
  readonly clients: Record<Side, Client> = { A: new Client('A'), B: new Client('B') };
  private journal!: Journal;
  private registry!: SessionRegistry;
  private requests = 0;
  readonly log: string[] = [];

  async boot(): Promise<void> {
    this.journal = new Journal(this.store, pino({ level: 'silent' }));
    const journal = this.journal;
    const tap = { open: true };
    const facts = new FactStream();
    facts.subscribe((step) => {
      if (tap.open) journal.onStep(step);
    });
    this.registry = new SessionRegistry({ timing: TIMING, maxSessions: 10, inspect: facts.inspect });
    this.cutTap = () => (tap.open = false);
    const { rebuilt } = await recoverSessions(journal, { timing: TIMING, now: Date.now() });
    for (const session of rebuilt) this.registry.restore(session.id, session.restore);
  }

  private cutTap: () => void = () => undefined;

  /** Deliveries to `side` as the journal's MessageDelivered records tell them (latest incarnation). */
  async recorded(s: Side): Promise<string[]> {
    const out: string[] = [];
    for await (const r of this.store.read()) {
      if (r.session !== SESSION) continue;
      if (r.seq === 1) out.length = 0;
      if (r.type === 'MessageDelivered' && r.side === s) out.push(r.content ?? '');
    }
    return out;
  }

  deliveries(s: Side): readonly string[] {
    return this.registry.get(SESSION)?.context.sides[s].deliveries ?? [];
  }

  async run(c: Command): Promise<void> {
    this.log.push(JSON.stringify(c));
    switch (c.kind) {
      case 'send':
        this.clients[c.side].newMessage();
        this.submit(this.clients[c.side]);
        break;
      case 'again':
        if (this.clients[c.side].pending.length > 0) this.submit(this.clients[c.side]);
        break;
      case 'abort':
        this.clients[c.side].inFlight?.disconnect();
        break;
      case 'kill':
        // Nothing is written at a SIGKILL: cut the journal's tap, then drop the actors.
        this.cutTap();
        this.dropRequests();
        this.registry.closeAll('shutdown');
        await this.restart();
        break;
      case 'graceful':
        this.registry.closeAll('shutdown');
        await tick();
        this.dropRequests();
        await this.restart();
        break;
    }
    await tick();
    await this.check();
  }

  private dropRequests(): void {
    for (const client of Object.values(this.clients)) {
      if (client.inFlight) client.inFlight.settled = true;
      client.inFlight = null;
    }
  }

  private async restart(): Promise<void> {
    // The old journal is dropped, not closed: closing would close the store the next process reads.
    await this.boot();
    const session = this.registry.get(SESSION);
    if (session) {
      expect(session.context.sides.A.held, 'nothing is held after a restart').toBeNull();
      expect(session.context.sides.B.held).toBeNull();
      for (const s of ['A', 'B'] as const) expect([...session.context.sides[s].deliveries], `rebuilt deliveries to ${s}`).toEqual(await this.recorded(s));
    }
  }

  private submit(client: Client): void {
    if (client.pending.length === 0) return;
    const result = this.registry.submit(SESSION, client.request(), `r${++this.requests}`);
    if ('error' in result) throw new Error(`${client.side}'s request was refused: ${result.error}: ${result.message}\n${this.log.join('\n')}`);
    const flight = { disconnect: () => result.disconnect(), settled: false };
    client.inFlight = flight;
    void result.outcome.then((outcome: Outcome) => {
      if (flight.settled) return; // a request of an actor system that was killed: its client saw the connection drop
      flight.settled = true;
      if (client.inFlight === flight) client.inFlight = null;
      if (outcome.type !== 'reply') return;
      const given = this.deliveries(client.side)[outcome.delivery];
      expect(outcome.content, `the answer to ${client.side} is its delivery ${outcome.delivery}`).toBe(given);
      client.answered(outcome.content);
    });
  }

  async check(): Promise<void> {
    for (const s of ['A', 'B'] as const) {
      if (!this.registry.get(SESSION)) continue;
      expect([...this.deliveries(s)], `live deliveries to ${s}`).toEqual(await this.recorded(s));
    }
  }

  /** Both sides call again until nothing is owed to them, then compare what each got with what the other said. */
  async drain(): Promise<void> {
    for (let round = 0; round < 6; round++) {
      for (const client of Object.values(this.clients)) {
        if (!client.inFlight && client.pending.length > 0) this.submit(client);
        await tick();
      }
    }
    const pieces = (client: Client) => client.received.flatMap((d) => d.split('\n\n'));
    const { A, B } = this.clients;
    // A's first message is its handshake, never forwarded.
    const fromA = A.said.slice(1);
    expect(pieces(B), 'B got what A said, once each, in order').toEqual(fromA.slice(0, pieces(B).length));
    expect(pieces(A), 'A got what B said, once each, in order').toEqual(B.said.slice(0, pieces(A).length));
    // What is not yet read is exactly what is queued for that side: nothing is lost.
    const session = this.registry.get(SESSION);
    const queued = (s: Side) => (session?.context.sides[s].queue ?? []).flatMap((q) => q.split('\n\n'));
    expect([...pieces(B), ...queued('B')], 'what B has not read is queued for it').toEqual(fromA.slice(0, pieces(B).length + queued('B').length));
    expect([...pieces(A), ...queued('A')], 'what A has not read is queued for it').toEqual(B.said.slice(0, pieces(A).length + queued('A').length));
  }

  async close(): Promise<void> {
    this.cutTap();
    this.registry.closeAll('shutdown');
    await this.journal.close().catch(() => undefined);
  }
}

describe('replay after kills and graceful restarts', () => {
  it('rebuilds each session as its MessageDelivered records say, whatever the order of kills, restarts and turns', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(command, { minLength: 4, maxLength: 40 }), async (commands) => {
        const world = new World();
        await world.boot();
        try {
          // A's handshake, then B's first message, so the session is paired early in most runs.
          await world.run({ kind: 'send', side: 'A' });
          await world.run({ kind: 'send', side: 'B' });
          for (const c of commands) await world.run(c);
          await world.drain();
        } finally {
          await world.close();
        }
      }),
      { numRuns: Number(process.env.REPLAY_RUNS ?? 150) },
    );
  });
});
