// Proves that the session chart (machines/session.machine.ts) behaves as PROTOCOL.md §1, §4 and
// §5 say: its six states and their transitions, what each event does to the held requests
// (the emitted `reply` / `reject` events), and every timer (handshake, turn, TTL), driven on
// XState's SimulatedClock so that "at exactly N ms and not before" can be asserted.
import { describe, expect, it } from 'vitest';
import { createActor, SimulatedClock } from 'xstate';
import type { CloseReason, RejectCode, SessionTiming, TurnPayload } from '../../machines/session.logic.js';
import { replay, type SessionFact } from '../../machines/session.facts.js';
import { sessionMachine, type SessionEmitted, type SessionStateName } from '../../machines/session.machine.js';

const TIMING: SessionTiming = { handshakeTimeoutMs: 1_000, turnTimeoutMs: 3_000, streamTurnTimeoutMs: 3_000, sessionTtlMs: 60_000 };

function harness(timing: SessionTiming = TIMING) {
  const clock = new SimulatedClock();
  /** The state after every microstep, so transient states (CLOSING) are visible too. */
  const visited: string[] = [];
  const actor = createActor(sessionMachine, {
    clock,
    input: { sessionId: 'npc-guard', timing },
    inspect: (event) => {
      if (event.type === '@xstate.microstep' && 'value' in event.snapshot) visited.push(String(event.snapshot.value));
    },
  });
  const emitted: SessionEmitted[] = [];
  actor.on('reply', (e) => emitted.push(e));
  actor.on('reject', (e) => emitted.push(e));
  actor.start();

  const turn = (requestId: string, content: string, extra: Partial<TurnPayload> = {}): TurnPayload => ({
    requestId,
    seen: null,
    content,
    idempotencyKey: null,
    system: null,
    at: clock.now(),
    ...extra,
  });

  return {
    clock,
    actor,
    visited,
    get value(): SessionStateName {
      return actor.getSnapshot().value as SessionStateName;
    },
    get ctx() {
      return actor.getSnapshot().context;
    },
    get status() {
      return actor.getSnapshot().status;
    },
    /** The replies and rejects emitted since the previous call. */
    take: (): SessionEmitted[] => emitted.splice(0),
    advance: (ms: number) => clock.increment(ms),
    connectA: (id: string, content: string, extra?: Partial<TurnPayload>) =>
      actor.send({ type: 'CONNECT_A', turn: turn(id, content, extra) }),
    connectB: (id: string, content: string, extra?: Partial<TurnPayload>) =>
      actor.send({ type: 'CONNECT_B', turn: turn(id, content, extra) }),
    messageA: (id: string, content: string, extra?: Partial<TurnPayload>) =>
      actor.send({ type: 'MESSAGE_FROM_A', turn: turn(id, content, extra) }),
    messageB: (id: string, content: string, extra?: Partial<TurnPayload>) =>
      actor.send({ type: 'MESSAGE_FROM_B', turn: turn(id, content, extra) }),
    retryA: (id: string) => actor.send({ type: 'RETRY_FROM_A', requestId: id, at: clock.now() }),
    retryB: (id: string) => actor.send({ type: 'RETRY_FROM_B', requestId: id, at: clock.now() }),
    disconnectA: (id: string) => actor.send({ type: 'DISCONNECT_A', requestId: id, at: clock.now() }),
    disconnectB: (id: string) => actor.send({ type: 'DISCONNECT_B', requestId: id, at: clock.now() }),
    listenA: (id: string) => actor.send({ type: 'LISTEN_A', requestId: id, at: clock.now() }),
    listenB: (id: string) => actor.send({ type: 'LISTEN_B', requestId: id, at: clock.now() }),
    close: (reason: CloseReason) => actor.send({ type: 'CLOSE', reason }),
  };
}

type Harness = ReturnType<typeof harness>;

const reply = (side: 'A' | 'B', requestId: string, content: string, delivery: number, repeat = false): SessionEmitted => ({
  type: 'reply',
  side,
  requestId,
  content,
  delivery,
  repeat,
});

const reject = (side: 'A' | 'B', requestId: string, code: RejectCode): SessionEmitted => ({
  type: 'reject',
  side,
  requestId,
  code,
});

/** PROTOCOL.md §1's opening: A's handshake `ping` (held), then B's first prompt `b1`. */
function opened(timing?: SessionTiming): Harness {
  const s = harness(timing);
  s.connectA('a-hs', 'ping');
  s.connectB('b-1', 'b1');
  expect(s.take()).toEqual([reply('A', 'a-hs', 'b1', 0)]);
  return s;
}

describe('the chart definition', () => {
  it('has exactly the six states of the contract, starting in EMPTY and ending in a final CLOSED', () => {
    expect(Object.keys(sessionMachine.root.states).sort()).toEqual(
      ['ACTIVE', 'AWAITING_PEER', 'CLOSED', 'CLOSING', 'DORMANT', 'EMPTY'].sort(),
    );
    expect(sessionMachine.root.initial?.target.map((node) => node.key)).toEqual(['EMPTY']);
    expect(sessionMachine.root.states.CLOSED?.type).toBe('final');
    for (const name of ['EMPTY', 'AWAITING_PEER', 'ACTIVE', 'DORMANT', 'CLOSING']) {
      expect(sessionMachine.root.states[name]?.type).not.toBe('final');
    }
  });

  it('starts EMPTY with nobody joined and nothing held, queued or delivered', () => {
    const s = harness();
    expect(s.value).toBe('EMPTY');
    expect(s.status).toBe('active');
    expect(s.ctx.sessionId).toBe('npc-guard');
    for (const side of ['A', 'B'] as const) {
      expect(s.ctx.sides[side]).toMatchObject({ joined: false, deliveries: [], queue: [], lastTurn: null, held: null });
    }
    expect(s.ctx.closeReason).toBeNull();
  });
});

describe('EMPTY', () => {
  it('CONNECT_A: A is known, its handshake is held and nothing is forwarded', () => {
    const s = harness();
    s.connectA('a-hs', 'ping');
    expect(s.value).toBe('AWAITING_PEER');
    expect(s.take()).toEqual([]);
    expect(s.ctx.sides.A).toMatchObject({ joined: true, held: { requestId: 'a-hs', timer: 'handshake' } });
    expect(s.ctx.sides.A.lastTurn).toMatchObject({ seq: 1, content: 'ping', handshake: true, answer: null });
    expect(s.ctx.sides.B.joined).toBe(false);
    expect(s.ctx.sides.B.queue).toEqual([]);
    expect(s.ctx.latestSide).toBe('A');
  });

  it('CONNECT_B: B may arrive first; its prompt is queued for A and its request held', () => {
    const s = harness();
    s.connectB('b-1', 'b1');
    expect(s.value).toBe('AWAITING_PEER');
    expect(s.take()).toEqual([]);
    expect(s.ctx.sides.B).toMatchObject({ joined: true, held: { requestId: 'b-1' } });
    expect(s.ctx.sides.B.lastTurn).toMatchObject({ content: 'b1', handshake: false });
    expect(s.ctx.sides.A).toMatchObject({ joined: false, queue: ['b1'] });
  });

  it('CLOSE: an empty session closes at once', () => {
    const s = harness();
    s.close('deleted');
    expect(s.value).toBe('CLOSED');
    expect(s.status).toBe('done');
    expect(s.ctx.closeReason).toBe('deleted');
    expect(s.visited).toEqual(['CLOSING', 'CLOSED']);
  });
});

describe('AWAITING_PEER', () => {
  it("B's first prompt answers A's handshake; the handshake content is never forwarded", () => {
    const s = harness();
    s.connectA('a-hs', 'ping');
    s.connectB('b-1', 'b1');
    expect(s.take()).toEqual([reply('A', 'a-hs', 'b1', 0)]);
    expect(s.value).toBe('ACTIVE');
    expect(s.ctx.sides.A.deliveries).toEqual(['b1']);
    expect(s.ctx.sides.A.lastTurn?.answer).toBe(0);
    expect(s.ctx.sides.B).toMatchObject({ deliveries: [], queue: [], held: { requestId: 'b-1', timer: 'turn' } });

    // The whole §1 exchange: B's first answer is A's first *real* message, never "ping".
    s.messageA('a-1', 'a1', { seen: 1 });
    expect(s.take()).toEqual([reply('B', 'b-1', 'a1', 0)]);
    s.messageB('b-2', 'b2', { seen: 1 });
    expect(s.take()).toEqual([reply('A', 'a-1', 'b2', 1)]);
    expect(s.ctx.sides.B.deliveries).toEqual(['a1']);
    expect(s.ctx.sides.A.deliveries).toEqual(['b1', 'b2']);
  });

  it('keeps the handshake (and system prompts) in the transcript only', () => {
    const s = harness();
    s.connectA('a-hs', 'ping', { system: 'You are a guard.' });
    s.connectB('b-1', 'b1', { system: 'You are a thief.' });
    s.messageA('a-1', 'a1', { seen: 1, system: 'You are a guard.' });
    expect(s.ctx.transcript.map((e) => [e.side, e.kind, e.content])).toEqual([
      ['A', 'system', 'You are a guard.'],
      ['A', 'handshake', 'ping'],
      ['B', 'system', 'You are a thief.'],
      ['B', 'message', 'b1'],
      ['A', 'delivery', 'b1'],
      ['A', 'message', 'a1'],
      ['B', 'delivery', 'a1'],
    ]);
    expect(s.ctx.sides.B.deliveries).toEqual(['a1']);
    expect(s.ctx.sides.A.system).toBe('You are a guard.');
  });

  it('rejects the handshake with handshake_timeout at exactly handshakeTimeoutMs, not before', () => {
    const s = harness();
    s.connectA('a-hs', 'ping');
    s.advance(999);
    expect(s.take()).toEqual([]);
    expect(s.ctx.sides.A.held).not.toBeNull();
    s.advance(1);
    expect(s.take()).toEqual([reject('A', 'a-hs', 'handshake_timeout')]);
    expect(s.ctx.sides.A.held).toBeNull();
    expect(s.value).toBe('AWAITING_PEER');
    s.advance(10_000);
    expect(s.take()).toEqual([]);
  });

  it('a timed-out handshake loses nothing: B\'s prompt is queued and A\'s retry picks it up at once', () => {
    const s = harness();
    s.connectA('a-hs', 'ping');
    s.advance(1_000);
    expect(s.take()).toEqual([reject('A', 'a-hs', 'handshake_timeout')]);
    s.connectB('b-1', 'b1');
    expect(s.take()).toEqual([]);
    expect(s.value).toBe('ACTIVE');
    expect(s.ctx.sides.A.queue).toEqual(['b1']);
    s.retryA('a-hs-retry');
    expect(s.take()).toEqual([reply('A', 'a-hs-retry', 'b1', 0)]);
    expect(s.ctx.sides.A).toMatchObject({ queue: [], deliveries: ['b1'], held: null });
  });

  it('a retry of the held handshake takes over its wait and restarts its timer', () => {
    const s = harness();
    s.connectA('a-hs', 'ping');
    s.advance(600);
    s.retryA('a-hs-retry');
    expect(s.take()).toEqual([reject('A', 'a-hs', 'superseded')]);
    expect(s.ctx.sides.A.held).toEqual({ requestId: 'a-hs-retry', timer: 'handshake', since: 600 });
    s.advance(400); // t = 1000: the first request's timer would have run out here
    expect(s.take()).toEqual([]);
    s.advance(599);
    expect(s.take()).toEqual([]);
    s.advance(1); // t = 1600: 1000 ms after the retry
    expect(s.take()).toEqual([reject('A', 'a-hs-retry', 'handshake_timeout')]);
  });

  it('DISCONNECT_A: the handshake wait ends quietly and B\'s prompt waits for A\'s next request', () => {
    const s = harness();
    s.connectA('a-hs', 'ping');
    s.disconnectA('a-hs');
    expect(s.value).toBe('AWAITING_PEER');
    expect(s.ctx.sides.A.held).toBeNull();
    s.advance(5_000);
    expect(s.take()).toEqual([]); // its timer was cancelled
    s.connectB('b-1', 'b1');
    expect(s.take()).toEqual([]);
    s.retryA('a-hs-again');
    expect(s.take()).toEqual([reply('A', 'a-hs-again', 'b1', 0)]);
  });

  it('a new turn of A before B appears supersedes the handshake and is B\'s first answer', () => {
    const s = harness();
    s.connectA('a-hs', 'ping');
    s.messageA('a-2', 'anyone there?');
    expect(s.take()).toEqual([reject('A', 'a-hs', 'superseded')]);
    expect(s.ctx.sides.B.queue).toEqual(['anyone there?']);
    s.connectB('b-1', 'b1');
    expect(s.take()).toEqual([reply('A', 'a-2', 'b1', 0), reply('B', 'b-1', 'anyone there?', 0)]);
    expect(s.ctx.sides.B.deliveries).toEqual(['anyone there?']);
    expect(s.value).toBe('DORMANT');
  });

  it('B first: A\'s handshake is answered at once with B\'s prompt and is itself never forwarded', () => {
    const s = harness();
    s.connectB('b-1', 'b1');
    s.advance(200);
    s.connectA('a-hs', 'ping');
    expect(s.take()).toEqual([reply('A', 'a-hs', 'b1', 0)]);
    expect(s.value).toBe('ACTIVE'); // B is still held, waiting for A's first real message
    expect(s.ctx.sides.B).toMatchObject({ queue: [], deliveries: [], held: { requestId: 'b-1' } });
    expect(s.ctx.sides.A.lastTurn).toMatchObject({ handshake: true });
    s.messageA('a-1', 'a1', { seen: 1 });
    expect(s.take()).toEqual([reply('B', 'b-1', 'a1', 0)]);
    expect(s.ctx.sides.B.deliveries).toEqual(['a1']);
  });

  // PROTOCOL.md §5: "HANDSHAKE_TIMEOUT_SECONDS bounds A's handshake wait; TURN_TIMEOUT_SECONDS
  // bounds every other wait." B arriving first has no handshake (§1: its first request carries
  // the first real prompt), so its wait is a turn wait.
  it('B first: B\'s wait is a turn wait (turn_timeout at turnTimeoutMs), not a handshake', () => {
    const s = harness();
    s.connectB('b-1', 'b1');
    s.advance(1_000); // the handshake timeout must not apply to B
    expect(s.take()).toEqual([]);
    s.advance(1_999);
    expect(s.take()).toEqual([]);
    s.advance(1);
    expect(s.take()).toEqual([reject('B', 'b-1', 'turn_timeout')]);
  });

  it('a new turn of A before B appears is a turn wait too; only the handshake has the handshake timer', () => {
    const s = harness();
    s.connectA('a-hs', 'ping');
    s.messageA('a-2', 'anyone there?');
    expect(s.take()).toEqual([reject('A', 'a-hs', 'superseded')]);
    expect(s.ctx.sides.A.held).toEqual({ requestId: 'a-2', timer: 'turn', since: s.clock.now() });
    s.advance(2_999);
    expect(s.take()).toEqual([]);
    s.advance(1);
    expect(s.take()).toEqual([reject('A', 'a-2', 'turn_timeout')]);
  });

  it('CLOSE rejects the held handshake', () => {
    const s = harness();
    s.connectA('a-hs', 'ping');
    s.close('deleted');
    expect(s.take()).toEqual([reject('A', 'a-hs', 'session_closed')]);
    expect(s.value).toBe('CLOSED');
  });
});

describe('ACTIVE', () => {
  it('delivers every new turn exactly once, in order, alternating as in PROTOCOL.md §1', () => {
    const s = opened();
    s.messageA('a-1', 'a1', { seen: 1 });
    s.messageB('b-2', 'b2', { seen: 1 });
    s.messageA('a-2', 'a2', { seen: 2 });
    s.messageB('b-3', 'b3', { seen: 2 });
    expect(s.take()).toEqual([
      reply('B', 'b-1', 'a1', 0),
      reply('A', 'a-1', 'b2', 1),
      reply('B', 'b-2', 'a2', 1),
      reply('A', 'a-2', 'b3', 2),
    ]);
    expect(s.ctx.sides.A.deliveries).toEqual(['b1', 'b2', 'b3']);
    expect(s.ctx.sides.B.deliveries).toEqual(['a1', 'a2']);
    expect(s.value).toBe('ACTIVE');
    expect(s.ctx.sides.B.held?.requestId).toBe('b-3');
    expect(s.ctx.latestSide).toBe('B');
  });

  it('rejects a held turn with turn_timeout at exactly turnTimeoutMs, not before, then goes DORMANT', () => {
    const s = opened();
    s.advance(2_999);
    expect(s.take()).toEqual([]);
    expect(s.value).toBe('ACTIVE');
    s.advance(1);
    expect(s.take()).toEqual([reject('B', 'b-1', 'turn_timeout')]);
    expect(s.value).toBe('DORMANT');
    expect(s.ctx.sides.B.held).toBeNull();
  });

  it('a streaming wait lasts streamTurnTimeoutMs, a plain one turnTimeoutMs; a retry takes over with its own kind of wait', () => {
    const s = opened({ ...TIMING, turnTimeoutMs: 3_000, streamTurnTimeoutMs: 10_000 });
    s.advance(3_000);
    expect(s.take()).toEqual([reject('B', 'b-1', 'turn_timeout')]);
    // B calls again, streaming now: its wait is a stream's.
    s.actor.send({ type: 'RETRY_FROM_B', requestId: 'b-1-stream', at: s.clock.now(), stream: true });
    expect(s.ctx.sides.B.held).toMatchObject({ requestId: 'b-1-stream', timer: 'stream' });
    s.advance(9_999);
    expect(s.take()).toEqual([]);
    s.advance(1);
    expect(s.take()).toEqual([reject('B', 'b-1-stream', 'turn_timeout')]);
    // A new streaming turn waits as long; a handshake keeps its own timeout even when streaming.
    s.messageA('a-1', 'a1', { seen: 1, stream: true });
    expect(s.ctx.sides.A.held).toMatchObject({ requestId: 'a-1', timer: 'stream' });
    const h = harness({ ...TIMING, streamTurnTimeoutMs: 10_000 });
    h.connectA('hs', 'ping', { stream: true });
    expect(h.ctx.sides.A.held?.timer).toBe('handshake');
    h.advance(1_000);
    expect(h.take()).toEqual([reject('A', 'hs', 'handshake_timeout')]);
  });

  it('a new turn whose history stops short of the deliveries gets the first one it lacks at once; its content still goes on', () => {
    const s = opened(); // A was given b1; B is held on b-1
    s.messageA('a-1', 'a1', { seen: 1 });
    expect(s.take()).toEqual([reply('B', 'b-1', 'a1', 0)]);
    s.messageB('b-2', 'b2', { seen: 1 });
    expect(s.take()).toEqual([reply('A', 'a-1', 'b2', 1)]); // written, but A's client had gone
    s.messageA('a-2', 'a2', { seen: 1 }); // A's history shows only b1
    expect(s.take()).toEqual([reply('B', 'b-2', 'a2', 1), { ...reply('A', 'a-2', 'b2', 1), repeat: true }]);
    expect(s.ctx.sides.A.held).toBeNull();
    expect(s.ctx.sides.A.lastTurn).toMatchObject({ content: 'a2', answer: 1 });
    expect(s.ctx.sides.A.deliveries).toEqual(['b1', 'b2']);
  });

  it('a timeout loses nothing: what arrives later is queued and the retry gets it', () => {
    const s = opened();
    s.advance(3_000);
    expect(s.take()).toEqual([reject('B', 'b-1', 'turn_timeout')]);
    s.messageA('a-1', 'a1', { seen: 1 });
    expect(s.take()).toEqual([]);
    expect(s.ctx.sides.B.queue).toEqual(['a1']);
    expect(s.value).toBe('ACTIVE'); // A is held now
    s.retryB('b-1-retry');
    expect(s.take()).toEqual([reply('B', 'b-1-retry', 'a1', 0)]);
    expect(s.ctx.sides.B).toMatchObject({ queue: [], deliveries: ['a1'], held: null });
    expect(s.ctx.sides.B.lastTurn?.seq).toBe(1); // the retry was not a new turn
  });

  it('queues for a side that is not waiting and answers its next request with everything, joined by a blank line', () => {
    const s = opened();
    s.disconnectB('b-1');
    s.messageA('a-1', 'a1', { seen: 1 });
    s.messageA('a-2', 'a2', { seen: 1 });
    expect(s.take()).toEqual([reject('A', 'a-1', 'superseded')]);
    expect(s.ctx.sides.B.queue).toEqual(['a1', 'a2']);
    s.messageB('b-2', 'b2');
    expect(s.take()).toEqual([reply('A', 'a-2', 'b2', 1), reply('B', 'b-2', 'a1\n\na2', 0)]);
    expect(s.ctx.sides.B.deliveries).toEqual(['a1\n\na2']); // one delivery
    expect(s.ctx.sides.B.queue).toEqual([]);
    expect(s.ctx.sides.B.lastTurn?.answer).toBe(0);
  });

  it('a new turn while the earlier one is held supersedes it; both contents are delivered, in order', () => {
    const s = opened();
    s.messageA('a-1', 'a1', { seen: 1 });
    expect(s.take()).toEqual([reply('B', 'b-1', 'a1', 0)]);
    s.messageA('a-2', 'a2', { seen: 1 });
    expect(s.take()).toEqual([reject('A', 'a-1', 'superseded')]);
    expect(s.ctx.sides.A.held).toEqual({ requestId: 'a-2', timer: 'turn', since: s.clock.now() });
    expect(s.ctx.sides.A.lastTurn).toMatchObject({ seq: 3, content: 'a2', answer: null });
    s.messageB('b-2', 'b2', { seen: 1 });
    expect(s.take()).toEqual([reply('A', 'a-2', 'b2', 1), reply('B', 'b-2', 'a2', 1)]);
    expect(s.ctx.sides.B.deliveries).toEqual(['a1', 'a2']);
  });

  it('a retry of an answered turn gets the same answer again, with nothing delivered anew', () => {
    const s = opened();
    s.messageA('a-1', 'a1', { seen: 1 });
    expect(s.take()).toEqual([reply('B', 'b-1', 'a1', 0)]);
    const before = s.ctx;
    s.retryB('b-1-retry');
    expect(s.take()).toEqual([reply('B', 'b-1-retry', 'a1', 0, true)]);
    expect(s.ctx.sides.B.deliveries).toEqual(['a1']);
    expect(s.ctx.sides.B.held).toBeNull();
    expect(s.ctx.sides.A.deliveries).toEqual(before.sides.A.deliveries);
    expect(s.ctx.sides.A.queue).toEqual([]); // b1 is not delivered to A again
    expect(s.ctx.sides.A.held?.requestId).toBe('a-1'); // A's wait is untouched
    expect(s.ctx.sides.B.lastTurn).toEqual(before.sides.B.lastTurn);
  });

  it('a retry of an unanswered turn takes over its wait; the earlier request is superseded', () => {
    const s = opened();
    s.advance(1_000);
    s.retryB('b-1-retry');
    expect(s.take()).toEqual([reject('B', 'b-1', 'superseded')]);
    expect(s.ctx.sides.B.held).toEqual({ requestId: 'b-1-retry', timer: 'turn', since: s.clock.now() });
    expect(s.ctx.sides.A.deliveries).toEqual(['b1']); // not delivered a second time
    expect(s.ctx.sides.A.queue).toEqual([]);
    expect(s.value).toBe('ACTIVE');
    // Its timer is its own: 3000 ms from the retry, not from the first request.
    s.advance(2_000);
    expect(s.take()).toEqual([]);
    s.messageA('a-1', 'a1', { seen: 1 });
    expect(s.take()).toEqual([reply('B', 'b-1-retry', 'a1', 0)]);
  });

  it('a retried turn times out on its own timer', () => {
    const s = opened();
    s.advance(1_000);
    s.retryB('b-1-retry');
    s.take();
    s.advance(2_999);
    expect(s.take()).toEqual([]);
    s.advance(1);
    expect(s.take()).toEqual([reject('B', 'b-1-retry', 'turn_timeout')]);
  });

  it('DISCONNECT loses nothing: the content stays queued and the next request gets it', () => {
    const s = opened();
    s.disconnectB('b-1');
    expect(s.take()).toEqual([]);
    expect(s.value).toBe('DORMANT');
    expect(s.ctx.sides.B.held).toBeNull();
    s.advance(10_000);
    expect(s.take()).toEqual([]); // no stray turn_timeout for the request that went away
    s.messageA('a-1', 'a1', { seen: 1 });
    expect(s.take()).toEqual([]);
    expect(s.ctx.sides.B.queue).toEqual(['a1']);
    s.retryB('b-1-again');
    expect(s.take()).toEqual([reply('B', 'b-1-again', 'a1', 0)]);
  });

  it('a DISCONNECT for a request that is not the held one changes nothing', () => {
    const s = opened();
    s.disconnectB('some-other-request');
    s.disconnectA('a-hs'); // already answered
    expect(s.take()).toEqual([]);
    expect(s.value).toBe('ACTIVE');
    expect(s.ctx.sides.B.held?.requestId).toBe('b-1');
    s.advance(3_000);
    expect(s.take()).toEqual([reject('B', 'b-1', 'turn_timeout')]);
  });

  it('cancels a timer once its request is answered: no stray TIMEOUT later', () => {
    const s = harness();
    s.connectA('a-hs', 'ping');
    s.advance(500);
    s.connectB('b-1', 'b1'); // answers the handshake at t=500
    s.advance(500); // t=1000: the handshake timer would have fired here
    s.messageA('a-1', 'a1', { seen: 1 }); // answers B at t=1000
    expect(s.take()).toEqual([reply('A', 'a-hs', 'b1', 0), reply('B', 'b-1', 'a1', 0)]);
    s.advance(2_999); // t=3999: B's timer would have fired at 3500
    expect(s.take()).toEqual([]);
    s.advance(1); // t=4000: A's own turn timer
    expect(s.take()).toEqual([reject('A', 'a-1', 'turn_timeout')]);
    s.advance(100_000);
    expect(s.take()).toEqual([]);
  });

  it('ignores a TIMEOUT for a request that is no longer held', () => {
    const s = opened();
    s.actor.send({ type: 'TIMEOUT', requestId: 'a-hs' });
    s.actor.send({ type: 'TIMEOUT', requestId: 'unknown' });
    expect(s.take()).toEqual([]);
    expect(s.ctx.sides.B.held?.requestId).toBe('b-1');
    expect(s.value).toBe('ACTIVE');
  });

  it('a TIMEOUT event for the held request rejects it like its timer would', () => {
    const s = opened();
    s.actor.send({ type: 'TIMEOUT', requestId: 'b-1' });
    expect(s.take()).toEqual([reject('B', 'b-1', 'turn_timeout')]);
    expect(s.value).toBe('DORMANT');
    s.advance(10_000);
    expect(s.take()).toEqual([]);
  });
});

describe('DORMANT', () => {
  it('goes DORMANT when nothing is held and back to ACTIVE when a request is held', () => {
    const s = opened();
    s.messageA('a-1', 'a1', { seen: 1 });
    s.disconnectA('a-1');
    expect(s.value).toBe('DORMANT');
    s.messageB('b-2', 'b2', { seen: 1 });
    expect(s.value).toBe('ACTIVE');
    expect(s.ctx.sides.A.queue).toEqual(['b2']);
    s.messageA('a-2', 'a2', { seen: 1 }); // answered at once from the queue, its content to held B
    expect(s.take()).toEqual([reply('B', 'b-1', 'a1', 0), reply('B', 'b-2', 'a2', 1), reply('A', 'a-2', 'b2', 1)]);
    expect(s.value).toBe('DORMANT');
  });

  it('a retry of an answered turn in DORMANT repeats the answer and stays DORMANT', () => {
    const s = opened();
    s.messageA('a-1', 'a1', { seen: 1 });
    s.disconnectA('a-1');
    s.take();
    expect(s.value).toBe('DORMANT');
    s.retryB('b-1-retry');
    expect(s.take()).toEqual([reply('B', 'b-1-retry', 'a1', 0, true)]);
    expect(s.value).toBe('DORMANT');
  });

  it('a retry of an unanswered turn in DORMANT holds again (ACTIVE) and restarts its timer', () => {
    const s = opened();
    s.advance(3_000);
    expect(s.take()).toEqual([reject('B', 'b-1', 'turn_timeout')]);
    expect(s.value).toBe('DORMANT');
    s.retryB('b-1-retry');
    expect(s.value).toBe('ACTIVE');
    s.advance(3_000);
    expect(s.take()).toEqual([reject('B', 'b-1-retry', 'turn_timeout')]);
    expect(s.value).toBe('DORMANT');
  });
});

describe('the session TTL', () => {
  const TTL: SessionTiming = { handshakeTimeoutMs: 1_000, turnTimeoutMs: 3_000, streamTurnTimeoutMs: 3_000, sessionTtlMs: 5_000, unjoinedTtlMs: 1_000 };

  it('closes a DORMANT session at exactly sessionTtlMs after its last activity (CLOSING → CLOSED)', () => {
    const s = opened(TTL);
    s.advance(100);
    s.disconnectB('b-1'); // last activity at t=100
    expect(s.value).toBe('DORMANT');
    s.visited.length = 0;
    s.advance(4_999);
    expect(s.value).toBe('DORMANT');
    s.advance(1);
    expect(s.value).toBe('CLOSED');
    expect(s.status).toBe('done');
    expect(s.ctx.closeReason).toBe('expired');
    expect(s.visited).toEqual(['CLOSING', 'CLOSED']);
    expect(s.take()).toEqual([]);
  });

  it('is renewed by activity', () => {
    const s = opened(TTL);
    s.disconnectB('b-1'); // t=0
    s.advance(4_000);
    s.retryA('a-hs-retry'); // repeats A's answer; activity at t=4000
    expect(s.take()).toEqual([reply('A', 'a-hs-retry', 'b1', 0, true)]);
    expect(s.ctx.lastActivityAt).toBe(4_000);
    s.advance(4_999); // t=8999: more than the TTL since the start, less since the activity
    expect(s.value).toBe('DORMANT');
    s.messageA('a-1', 'a1', { seen: 1 }); // activity at t=8999 (A is held now)
    s.disconnectA('a-1');
    s.advance(4_999);
    expect(s.value).toBe('DORMANT');
    s.advance(1);
    expect(s.value).toBe('CLOSED');
  });

  it('never closes a session while a handshake is held; it runs again once nothing is held', () => {
    const s = harness({ handshakeTimeoutMs: 1_000, turnTimeoutMs: 3_000, streamTurnTimeoutMs: 3_000, sessionTtlMs: 500 });
    s.connectA('a-hs', 'ping');
    s.advance(999);
    expect(s.value).toBe('AWAITING_PEER');
    expect(s.take()).toEqual([]);
    s.advance(1);
    expect(s.take()).toEqual([reject('A', 'a-hs', 'handshake_timeout')]);
    expect(s.value).toBe('AWAITING_PEER');
    s.advance(499);
    expect(s.value).toBe('AWAITING_PEER');
    s.advance(1);
    expect(s.value).toBe('CLOSED');
    expect(s.ctx.closeReason).toBe('expired');
  });

  it('never closes a session while a turn is held', () => {
    const s = opened({ handshakeTimeoutMs: 1_000, turnTimeoutMs: 3_000, streamTurnTimeoutMs: 3_000, sessionTtlMs: 500 });
    s.advance(2_999);
    expect(s.value).toBe('ACTIVE');
    s.advance(1);
    expect(s.take()).toEqual([reject('B', 'b-1', 'turn_timeout')]);
    expect(s.value).toBe('DORMANT');
    s.advance(499);
    expect(s.value).toBe('DORMANT');
    s.advance(1);
    expect(s.value).toBe('CLOSED');
  });

  it('closes an AWAITING_PEER session whose only side went away after the handshake timeout, not the TTL', () => {
    const s = harness(TTL);
    s.connectA('a-hs', 'ping');
    s.advance(200);
    s.disconnectA('a-hs');
    s.advance(999);
    expect(s.value).toBe('AWAITING_PEER');
    s.advance(1);
    expect(s.value).toBe('CLOSED');
    expect(s.ctx.closeReason).toBe('expired');
    expect(s.take()).toEqual([]);
  });

  it('keeps an AWAITING_PEER session while its side waits, and for a handshake timeout after each activity', () => {
    const s = harness(TTL);
    s.connectA('a-hs', 'ping');
    s.advance(1_000); // the handshake times out: the retry window starts now
    expect(s.take()).toEqual([reject('A', 'a-hs', 'handshake_timeout')]);
    s.advance(900);
    s.actor.send({ type: 'RETRY_FROM_A', requestId: 'a-hs-retry', at: s.clock.now() }); // the SDK's retry re-attaches
    s.advance(1_000);
    expect(s.take()).toEqual([reject('A', 'a-hs-retry', 'handshake_timeout')]);
    expect(s.value).toBe('AWAITING_PEER');
    s.advance(999);
    expect(s.value).toBe('AWAITING_PEER');
    s.advance(1);
    expect(s.value).toBe('CLOSED');
  });

  it('is cancelled by CLOSE (no second close)', () => {
    const s = opened(TTL);
    s.close('deleted');
    s.advance(100_000);
    expect(s.ctx.closeReason).toBe('deleted');
  });
});

describe('fractional-millisecond timings', () => {
  const FRACTIONAL: SessionTiming = { handshakeTimeoutMs: 1.5, turnTimeoutMs: 2.25, streamTurnTimeoutMs: 2.25, sessionTtlMs: 3.75, unjoinedTtlMs: 1.5 };

  it('times out the handshake at exactly 1.5 ms and expires the unjoined session 1.5 ms later', () => {
    const s = harness(FRACTIONAL);
    s.connectA('a-hs', 'ping');
    s.advance(1.25);
    expect(s.take()).toEqual([]);
    s.advance(0.25);
    expect(s.take()).toEqual([reject('A', 'a-hs', 'handshake_timeout')]);
    s.advance(1.25);
    expect(s.value).toBe('AWAITING_PEER');
    s.advance(0.25);
    expect(s.value).toBe('CLOSED');
  });

  it('times out a turn at exactly 2.25 ms after it was held', () => {
    const s = harness(FRACTIONAL);
    s.connectA('a-hs', 'ping');
    s.advance(0.5);
    s.connectB('b-1', 'b1');
    expect(s.take()).toEqual([reply('A', 'a-hs', 'b1', 0)]);
    s.advance(2);
    expect(s.take()).toEqual([]);
    s.advance(0.25);
    expect(s.take()).toEqual([reject('B', 'b-1', 'turn_timeout')]);
  });
});

describe('CLOSE', () => {
  const codes: [CloseReason, RejectCode][] = [
    ['deleted', 'session_closed'],
    ['expired', 'session_closed'],
    ['shutdown', 'shutting_down'],
  ];

  it.each(codes)("CLOSE '%s' in ACTIVE rejects the held request with %s and ends the actor", (reason, code) => {
    const s = opened();
    s.visited.length = 0;
    s.close(reason);
    expect(s.take()).toEqual([reject('B', 'b-1', code)]);
    expect(s.value).toBe('CLOSED');
    expect(s.status).toBe('done');
    expect(s.ctx.closeReason).toBe(reason);
    expect(s.ctx.sides.B.held).toBeNull();
    expect(s.visited).toEqual(['CLOSING', 'CLOSED']);
  });

  it.each(codes)("CLOSE '%s' in AWAITING_PEER rejects the held handshake with %s", (reason, code) => {
    const s = harness();
    s.connectA('a-hs', 'ping');
    s.close(reason);
    expect(s.take()).toEqual([reject('A', 'a-hs', code)]);
    expect(s.value).toBe('CLOSED');
    expect(s.ctx.closeReason).toBe(reason);
  });

  it.each(codes)("CLOSE '%s' in DORMANT closes with nothing to answer", (reason) => {
    const s = opened();
    s.disconnectB('b-1');
    s.close(reason);
    expect(s.take()).toEqual([]);
    expect(s.value).toBe('CLOSED');
    expect(s.status).toBe('done');
    expect(s.ctx.closeReason).toBe(reason);
  });

  it('leaves no timer running and ignores every later event', () => {
    const s = opened();
    s.messageA('a-1', 'a1', { seen: 1 }); // A held, with a turn timer
    s.take();
    s.close('deleted');
    expect(s.take()).toEqual([reject('A', 'a-1', 'session_closed')]);
    s.advance(1_000_000);
    s.messageB('b-2', 'b2', { seen: 1 });
    s.retryA('a-1-retry');
    s.connectA('a-new', 'ping');
    expect(s.take()).toEqual([]);
    expect(s.value).toBe('CLOSED');
  });
});

describe('LISTEN (a persistent connection: the WebSocket side)', () => {
  it('waits without a timer and is answered with the next delivery, then goes DORMANT', () => {
    const s = opened();
    s.messageA('a-1', 'a1'); // delivered to B's held b-1
    expect(s.take()).toEqual([reply('B', 'b-1', 'a1', 0)]);
    s.listenB('b-listen');
    s.advance(TIMING.turnTimeoutMs * 10); // A's turn times out; B's listen has no timer
    expect(s.take()).toEqual([reject('A', 'a-1', 'turn_timeout')]);
    expect(s.value).toBe('ACTIVE');
    s.messageA('a-2', 'a2');
    expect(s.take()).toEqual([reply('B', 'b-listen', 'a2', 1)]);
  });

  it('answers at once with everything queued', () => {
    const s = opened();
    s.messageA('a-1', 'a1');
    s.take();
    s.messageA('a-2', 'a2'); // supersedes a-1; B is not waiting, so it queues
    expect(s.take()).toEqual([reject('A', 'a-1', 'superseded')]);
    s.listenB('b-listen');
    expect(s.take()).toEqual([reply('B', 'b-listen', 'a2', 1)]);
    expect(s.value).toBe('ACTIVE'); // A's a-2 is still held
  });

  it('a turn that asks for no timer (untimed) never times out either', () => {
    const s = opened();
    const since = s.clock.now();
    s.messageB('b-2', 'b2', { untimed: true });
    expect(s.take()).toEqual([reject('B', 'b-1', 'superseded')]);
    s.advance(TIMING.turnTimeoutMs * 10);
    expect(s.take()).toEqual([]);
    expect(s.ctx.sides.B.held).toEqual({ requestId: 'b-2', timer: 'none', since });
  });

  it('is ignored for a side that has not joined, and is superseded by the side\'s next turn', () => {
    const s = harness();
    s.connectA('a-hs', 'ping');
    s.listenB('b-listen');
    expect(s.ctx.sides.B.held).toBeNull();
    s.listenA('a-listen'); // replaces the held handshake
    expect(s.take()).toEqual([reject('A', 'a-hs', 'superseded')]);
    s.messageA('a-1', 'more');
    expect(s.take()).toEqual([reject('A', 'a-listen', 'superseded')]);
  });

  it('replays: a delivery made to a LISTEN wait is a delivery after a restart too', () => {
    const turn = (content: string) => ({ seen: null, content, idempotencyKey: null, system: null });
    const facts: SessionFact[] = [
      { type: 'SideConnected', session: 'npc', side: 'A', request: 'a-hs', at: 1, turn: turn('ping') },
      { type: 'SideConnected', session: 'npc', side: 'B', request: 'b-1', at: 2, turn: turn('b1') },
      { type: 'ListenStarted', session: 'npc', side: 'A', request: 'a-listen', at: 3 },
      { type: 'MessageSent', session: 'npc', side: 'B', request: 'b-2', at: 4, turn: turn('b2') },
    ];
    const { context, state } = replay('npc', TIMING, facts);
    expect(context.sides.A.deliveries).toEqual(['b1', 'b2']);
    expect(context.sides.A.queue).toEqual([]);
    expect(state).toBe('DORMANT');
  });
});
