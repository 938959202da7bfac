// Proves attributeRequest() follows PROTOCOL.md §3 rule by rule: which side sent a request
// (explicit `|A`/`|B`, history, retry of the latest turn, order) and whether it is a new turn
// or a retry, including the two documented ambiguities. Contexts come from driving the real
// session chart (on a SimulatedClock), so every case is one a live session can reach.
import { describe, expect, it } from 'vitest';
import { createActor, SimulatedClock } from 'xstate';
import type { SessionTiming, Side } from '../../machines/session.logic.js';
import { sessionMachine } from '../../machines/session.machine.js';
import { attributeRequest, type Attribution, type TurnRequest } from '../../src/sessions/attribution.js';

const TIMING: SessionTiming = { handshakeTimeoutMs: 1_000, turnTimeoutMs: 3_000, streamTurnTimeoutMs: 3_000, sessionTtlMs: 60_000 };

/** `content` is the request's one new user message (the usual case); `messages` overrides it. */
type RequestSpec = Partial<TurnRequest> & { readonly content: string };

const request = ({ content, ...spec }: RequestSpec): TurnRequest => ({
  explicitSide: null,
  assistantHistory: [],
  system: null,
  retryCount: 0,
  idempotencyKey: null,
  messages: [content],
  ...spec,
});

type Verdict = { kind: 'connect' | 'message' | 'retry'; side: Side; seen: number | null } | Extract<Attribution, { kind: 'conflict' }>;

/** Which side and kind (the new messages a turn carries are checked on their own, below). */
const summary = (a: Attribution): Verdict => (a.kind === 'conflict' ? a : { kind: a.kind, side: a.side, seen: a.seen });

/** A live session: each request is attributed against its current context, then applied. */
function conversation() {
  const clock = new SimulatedClock();
  const actor = createActor(sessionMachine, { clock, input: { sessionId: 'npc-guard', timing: TIMING } });
  actor.start();
  let counter = 0;
  const ctx = () => actor.getSnapshot().context;

  return {
    ctx,
    /** Attribution only; the session is not changed. */
    attribute: (spec: RequestSpec): Verdict => summary(attributeRequest(ctx(), request(spec))),
    /** Attributes the request and sends the event it implies, as Session.submit does. */
    send(spec: RequestSpec, requestId = `req-${++counter}`): Verdict {
      const req = request(spec);
      const verdict = attributeRequest(ctx(), req);
      if (verdict.kind === 'conflict') return verdict;
      const { side, seen } = verdict;
      const at = clock.now();
      if (verdict.kind === 'retry') {
        actor.send({ type: side === 'A' ? 'RETRY_FROM_A' : 'RETRY_FROM_B', requestId, at });
      } else {
        const { messages } = verdict;
        const turn = { requestId, seen, content: messages.join('\n\n'), messages, idempotencyKey: req.idempotencyKey, system: req.system, at };
        if (verdict.kind === 'connect') actor.send({ type: side === 'A' ? 'CONNECT_A' : 'CONNECT_B', turn });
        else actor.send({ type: side === 'A' ? 'MESSAGE_FROM_A' : 'MESSAGE_FROM_B', turn });
      }
      return summary(verdict);
    },
    heldRequest: (side: Side): string | null => ctx().sides[side].held?.requestId ?? null,
    leave(side: Side): void {
      const id = ctx().sides[side].held?.requestId;
      if (!id) throw new Error(`side ${side} holds nothing`);
      actor.send({ type: side === 'A' ? 'DISCONNECT_A' : 'DISCONNECT_B', requestId: id, at: clock.now() });
    },
    advance: (ms: number) => clock.increment(ms),
  };
}

type Conversation = ReturnType<typeof conversation>;

const verdict = (kind: 'connect' | 'message' | 'retry', side: Side, seen: number | null = null): Verdict => ({
  kind,
  side,
  seen,
});

/** A's handshake `ping`, then B's first prompt `b1` answers it; B is held. */
function opened(): Conversation {
  const c = conversation();
  expect(c.send({ content: 'ping' }, 'a-hs')).toEqual(verdict('connect', 'A'));
  expect(c.send({ content: 'b1' }, 'b-1')).toEqual(verdict('connect', 'B'));
  expect(c.ctx().sides.A.deliveries).toEqual(['b1']);
  expect(c.heldRequest('B')).toBe('b-1');
  return c;
}

/** opened(), then clients that send their histories: A `a1`, B `b2`, A `a2`. A is held. */
function withHistories(): Conversation {
  const c = opened();
  expect(c.send({ content: 'a1', assistantHistory: ['b1'] })).toEqual(verdict('message', 'A', 1));
  expect(c.send({ content: 'b2', assistantHistory: ['a1'] })).toEqual(verdict('message', 'B', 1));
  expect(c.send({ content: 'a2', assistantHistory: ['b1', 'b2'] })).toEqual(verdict('message', 'A', 2));
  expect(c.ctx().sides.A.deliveries).toEqual(['b1', 'b2']);
  expect(c.ctx().sides.B.deliveries).toEqual(['a1', 'a2']);
  expect(c.heldRequest('A')).not.toBeNull();
  return c;
}

const expectConflict = (result: Verdict, pattern: RegExp): void => {
  expect(result.kind).toBe('conflict');
  if (result.kind === 'conflict') expect(result.message).toMatch(pattern);
};

describe('rule 1: an explicit side', () => {
  it('names side A from the very first request', () => {
    const c = conversation();
    expect(c.send({ content: 'ping', explicitSide: 'A' })).toEqual(verdict('connect', 'A'));
  });

  it('lets B arrive first; A then connects after it', () => {
    const c = conversation();
    expect(c.send({ content: 'b1', explicitSide: 'B' })).toEqual(verdict('connect', 'B'));
    expect(c.send({ content: 'ping', explicitSide: 'A' })).toEqual(verdict('connect', 'A'));
    expect(c.ctx().sides.A.deliveries).toEqual(['b1']);
    expect(c.send({ content: 'a1', explicitSide: 'A' })).toEqual(verdict('message', 'A'));
    expect(c.ctx().sides.B.deliveries).toEqual(['a1']);
  });

  it('wins over the order: a side that is waiting can still send a new turn', () => {
    const c = opened(); // order would say A (B is waiting)
    expect(c.attribute({ content: 'b2', explicitSide: 'B' })).toEqual(verdict('message', 'B'));
  });

  it('wins over "a held repeat comes from the other side": its own unanswered repeat is a retry', () => {
    const c = opened();
    expect(c.attribute({ content: 'b1', explicitSide: 'B' })).toEqual(verdict('retry', 'B'));
  });

  it('accepts a history matching that side\'s deliveries (seen = its length)', () => {
    const c = opened();
    expect(c.attribute({ content: 'a1', explicitSide: 'A', assistantHistory: ['b1'] })).toEqual(verdict('message', 'A', 1));
  });

  it('refuses a history that does not match that side\'s deliveries, even if it matches the other side\'s', () => {
    const c = opened();
    const result = c.attribute({ content: 'b2', explicitSide: 'B', assistantHistory: ['b1'] });
    expectConflict(result, /side B/);
    expectConflict(result, /npc-guard/);
  });

  it('refuses a history on a brand-new session as belonging to an earlier conversation', () => {
    const c = conversation();
    expectConflict(c.attribute({ content: 'b9', explicitSide: 'B', assistantHistory: ['old'] }), /earlier conversation/);
  });
});

describe('rule 2: the history', () => {
  it('names the side whose deliveries it shows, whatever the order would say', () => {
    const c = opened();
    c.send({ content: 'a1', assistantHistory: ['b1'] }); // B answered, A held: order would say B
    expect(c.heldRequest('A')).not.toBeNull();
    expect(c.attribute({ content: 'a1, rephrased', assistantHistory: ['b1'] })).toEqual(verdict('message', 'A', 1));
    expect(c.attribute({ content: 'b2', assistantHistory: ['a1'] })).toEqual(verdict('message', 'B', 1));
  });

  it('compares after trimming whitespace', () => {
    const c = opened();
    expect(c.attribute({ content: 'a1', assistantHistory: ['  b1\n'] })).toEqual(verdict('message', 'A', 1));
    expectConflict(c.attribute({ content: 'a1', assistantHistory: ['b 1'] }), /do not match/);
  });

  it('accepts a prefix of the deliveries, in order', () => {
    const c = withHistories();
    expect(c.attribute({ content: 'a1 again', assistantHistory: ['b1'] })).toEqual(verdict('message', 'A', 1));
    expectConflict(c.attribute({ content: 'x', assistantHistory: ['b2', 'b1'] }), /do not match/);
  });

  it('refuses a history longer than what the side was given', () => {
    const c = opened();
    expectConflict(c.attribute({ content: 'a1', assistantHistory: ['b1', 'b2'] }), /do not match/);
  });

  it('refuses a history matching neither side with session_conflict naming the session', () => {
    const c = withHistories();
    const result = c.attribute({ content: 'hello', assistantHistory: ['something the proxy never said'] });
    expectConflict(result, /npc-guard/);
    expectConflict(result, /either side/);
    if (result.kind === 'conflict') expect(result.message).not.toMatch(/earlier conversation/);
  });

  it('refuses any history on a brand-new session, saying it belongs to an earlier conversation', () => {
    const c = conversation();
    const result = c.attribute({ content: 'hello', assistantHistory: ['an old answer'] });
    expectConflict(result, /earlier conversation/);
    expectConflict(result, /npc-guard/);
    expect(c.ctx().sides.A.joined).toBe(false);
  });

  it('falls back to the order when the history matches both sides', () => {
    const c = conversation();
    c.send({ content: 'ping' });
    c.send({ content: 'ok' }); // A is given "ok"
    c.send({ content: 'ok', assistantHistory: ['ok'] }); // ... and so is B
    expect(c.ctx().sides.A.deliveries).toEqual(['ok']);
    expect(c.ctx().sides.B.deliveries).toEqual(['ok']);
    expect(c.heldRequest('A')).not.toBeNull();
    expect(c.attribute({ content: 'next', assistantHistory: ['ok'] })).toEqual(verdict('message', 'B', 1));
  });
});

describe('rule 3 and "is it new?": a retry of the latest turn', () => {
  it('belongs to its side once the turn is no longer held because it timed out (unanswered → retry)', () => {
    const c = opened();
    c.advance(3_000); // B's turn times out; neither side waits and the order would say A
    expect(c.heldRequest('B')).toBeNull();
    expect(c.attribute({ content: 'b1' })).toEqual(verdict('retry', 'B'));
    expect(c.attribute({ content: 'b1', retryCount: 0 })).toEqual(verdict('retry', 'B')); // 0 does not disprove it
  });

  it('belongs to its side once its client went away', () => {
    const c = opened();
    c.leave('B');
    expect(c.attribute({ content: 'b1' })).toEqual(verdict('retry', 'B'));
  });

  it('while the turn is held, a repeat without a hint comes from the other side (two players both say "hi")', () => {
    const c = opened();
    c.send({ content: 'a1' });
    c.send({ content: 'hi' }, 'b-hi'); // B says "hi" and is held
    expect(c.heldRequest('B')).toBe('b-hi');
    expect(c.send({ content: 'hi' })).toEqual(verdict('message', 'A'));
    expect(c.ctx().sides.B.deliveries).toEqual(['a1', 'hi']);
  });

  it('a held handshake repeated without a hint is side B connecting', () => {
    const c = conversation();
    c.send({ content: 'hi' }, 'a-hs');
    expect(c.send({ content: 'hi' })).toEqual(verdict('connect', 'B'));
    expect(c.ctx().sides.A.deliveries).toEqual(['hi']);
  });

  it.each([1, 2])('while held, X-Stainless-Retry-Count %i makes it a retry of that side', (retryCount) => {
    const c = opened();
    expect(c.attribute({ content: 'b1', retryCount })).toEqual(verdict('retry', 'B'));
  });

  it('while held, X-Stainless-Retry-Count 0 proves nothing: it comes from the other side', () => {
    const c = opened();
    expect(c.attribute({ content: 'b1', retryCount: 0 })).toEqual(verdict('message', 'A'));
  });

  it('while held, the same Idempotency-Key makes it a retry; another key does not', () => {
    const c = opened();
    c.send({ content: 'a1', idempotencyKey: 'key-a1' });
    c.send({ content: 'b2', idempotencyKey: 'key-b2' });
    expect(c.heldRequest('B')).not.toBeNull();
    expect(c.attribute({ content: 'b2', idempotencyKey: 'key-b2' })).toEqual(verdict('retry', 'B'));
    expect(c.attribute({ content: 'b2', idempotencyKey: 'key-other' })).toEqual(verdict('message', 'A'));
  });

  it('of an answered turn with no history and no hint (retry count 0) is a new turn', () => {
    const c = opened();
    c.send({ content: 'a1' }); // answers B's b1
    expect(c.ctx().sides.B.lastTurn?.answer).toBe(0);
    expect(c.attribute({ content: 'b1' })).toEqual(verdict('message', 'B'));
    expect(c.attribute({ content: 'b1', retryCount: 0 })).toEqual(verdict('message', 'B'));
  });

  it('of an answered turn with X-Stainless-Retry-Count ≥ 1 is a retry', () => {
    const c = opened();
    c.send({ content: 'a1' });
    expect(c.attribute({ content: 'b1', retryCount: 1 })).toEqual(verdict('retry', 'B'));
  });

  it('of an answered turn with the same Idempotency-Key is a retry; with another key it is new', () => {
    const c = conversation();
    c.send({ content: 'ping' });
    c.send({ content: 'b1', idempotencyKey: 'key-b1' });
    c.send({ content: 'a1' });
    expect(c.ctx().sides.B.lastTurn?.answer).toBe(0);
    expect(c.attribute({ content: 'b1', idempotencyKey: 'key-b1' })).toEqual(verdict('retry', 'B'));
    expect(c.attribute({ content: 'b1', idempotencyKey: 'key-b1-again' })).toEqual(verdict('message', 'B'));
  });

  it('of an answered turn whose client shows history with the same seen is a retry (it never got the answer)', () => {
    const c = withHistories(); // A's latest turn, a2 (seen 2), is held
    // a1 was sent since the delivery that history shows, so nothing in it is new: a retry of the
    // latest turn (PROTOCOL.md §2), never a second a1.
    expect(c.attribute({ content: 'a1', assistantHistory: ['b1'] })).toEqual(verdict('retry', 'A', 1));
    expect(c.attribute({ content: 'a2', assistantHistory: ['b1', 'b2'] })).toEqual(verdict('retry', 'A', 2));
    c.send({ content: 'b3', assistantHistory: ['a1', 'a2'] }); // answers A's a2 with b3
    expect(c.ctx().sides.A.lastTurn?.answer).toBe(2);
    expect(c.attribute({ content: 'a2', assistantHistory: ['b1', 'b2'] })).toEqual(verdict('retry', 'A', 2));
  });

  it('with the same content but a different seen is a new turn', () => {
    const c = withHistories();
    c.send({ content: 'b3', assistantHistory: ['a1', 'a2'] });
    expect(c.attribute({ content: 'a2', assistantHistory: ['b1', 'b2', 'b3'] })).toEqual(verdict('message', 'A', 3));
  });

  it('a retry is never delivered again', () => {
    const c = opened();
    c.send({ content: 'a1' });
    expect(c.send({ content: 'b1', retryCount: 1 })).toEqual(verdict('retry', 'B'));
    expect(c.ctx().sides.A.queue).toEqual([]);
    expect(c.ctx().sides.A.deliveries).toEqual(['b1']);
  });
});

describe('the documented ambiguities', () => {
  it('a no-history client sending the same text twice in a row, the first unanswered, is taken to be retrying', () => {
    const c = opened();
    c.send({ content: 'a1' }); // to B
    c.send({ content: 'same text' }, 'b-same'); // B's turn, held
    c.advance(3_000); // ... and timed out, unanswered
    expect(c.heldRequest('B')).toBeNull();
    expect(c.send({ content: 'same text' })).toEqual(verdict('retry', 'B'));
    expect(c.ctx().sides.A.deliveries).toEqual(['b1', 'same text']); // delivered once only
    expect(c.ctx().sides.A.queue).toEqual([]);
  });

  it("side B's opening text equal to A's handshake after that handshake timed out is taken for A retrying", () => {
    const c = conversation();
    c.send({ content: 'hello' }, 'a-hs');
    c.advance(1_000);
    expect(c.heldRequest('A')).toBeNull();
    expect(c.attribute({ content: 'hello' })).toEqual(verdict('retry', 'A'));
  });

  it('... and the |B suffix removes that ambiguity', () => {
    const c = conversation();
    c.send({ content: 'hello' }, 'a-hs');
    c.advance(1_000);
    expect(c.attribute({ content: 'hello', explicitSide: 'B' })).toEqual(verdict('connect', 'B'));
  });
});

describe('rule 4: the order, for stateless clients', () => {
  it('the first side to appear is A and the second is B', () => {
    const c = conversation();
    expect(c.send({ content: 'one' })).toEqual(verdict('connect', 'A'));
    expect(c.send({ content: 'two' })).toEqual(verdict('connect', 'B'));
  });

  it('after an A-first timeout with a different text, the second client is still B', () => {
    const c = conversation();
    c.send({ content: 'one' });
    c.advance(1_000);
    expect(c.attribute({ content: 'two' })).toEqual(verdict('connect', 'B'));
  });

  it('once both are known, a request is the side that is not waiting', () => {
    const c = opened(); // B waits
    expect(c.send({ content: 'a1' })).toEqual(verdict('message', 'A')); // now A waits
    expect(c.heldRequest('A')).not.toBeNull();
    expect(c.heldRequest('B')).toBeNull();
    expect(c.send({ content: 'b2' })).toEqual(verdict('message', 'B')); // now B waits
    expect(c.send({ content: 'a2' })).toEqual(verdict('message', 'A'));
    expect(c.ctx().sides.A.deliveries).toEqual(['b1', 'b2']);
    expect(c.ctx().sides.B.deliveries).toEqual(['a1', 'a2']);
  });

  it('when neither is waiting, it is the side that did not send the latest turn (latest B → A)', () => {
    const c = opened();
    c.leave('B');
    expect(c.ctx().latestSide).toBe('B');
    expect(c.attribute({ content: 'next' })).toEqual(verdict('message', 'A'));
  });

  it('when neither is waiting, it is the side that did not send the latest turn (latest A → B)', () => {
    const c = opened();
    c.send({ content: 'a1' });
    c.leave('A');
    expect(c.ctx().latestSide).toBe('A');
    expect(c.heldRequest('B')).toBeNull();
    expect(c.attribute({ content: 'next' })).toEqual(verdict('message', 'B'));
  });
});

describe('rule 3 applies only to a turn whose wait ended unanswered', () => {
  it('a repeat of an answered turn, with no history and no hint, goes by the order rule', () => {
    // Stateless clients: A `ping`, B `b1`; B leaves; A `a1` and leaves; B `b2` (answered at
    // once with `a1`); A `x` (answered at once with `b2`). Neither side waits, A sent the latest.
    const c = opened();
    c.leave('B');
    expect(c.send({ content: 'a1' })).toEqual(verdict('message', 'A'));
    c.leave('A');
    expect(c.send({ content: 'b2' })).toEqual(verdict('message', 'B'));
    expect(c.heldRequest('B')).toBeNull();
    expect(c.send({ content: 'x' })).toEqual(verdict('message', 'A'));
    expect(c.ctx().sides.A.lastTurn?.answer).not.toBeNull();
    expect(c.heldRequest('A')).toBeNull();
    // The other player now says `x` too: it is B's turn, not A repeating itself.
    expect(c.send({ content: 'x' })).toEqual(verdict('message', 'B'));
    expect(c.ctx().sides.B.deliveries).toEqual(['a1', 'x']); // A's `x`, once: no echo of B's own
    expect(c.ctx().sides.A.queue).toEqual(['x']); // B's `x`, waiting for A
  });

  it('with a retry hint, a repeat of an answered turn is that side retrying and gets the same answer', () => {
    const c = opened();
    c.leave('B');
    c.send({ content: 'a1' });
    c.leave('A');
    c.send({ content: 'b2' });
    c.send({ content: 'x' });
    expect(c.attribute({ content: 'x', retryCount: 1 })).toEqual(verdict('retry', 'A'));
  });
});

describe('a request that continues from a named delivery (previous_response_id)', () => {
  function opened() {
    const s = conversation();
    s.send({ content: 'ping' }); // A's handshake
    s.send({ content: 'b1' }); // B: answers the handshake
    s.send({ content: 'a1', assistantHistory: ['b1'] }); // A: delivered to B
    return s;
  }

  it('names the side and what it has seen, with no history in the request', () => {
    const s = opened();
    expect(s.attribute({ content: 'a2', continues: { side: 'A', seen: 1 } })).toEqual({ kind: 'message', side: 'A', seen: 1 });
    expect(s.attribute({ content: 'b2', continues: { side: 'B', seen: 1 } })).toEqual({ kind: 'message', side: 'B', seen: 1 });
  });

  it('is a retry when it repeats the latest turn with the same continuation', () => {
    const s = opened();
    expect(s.attribute({ content: 'a1', continues: { side: 'A', seen: 1 } })).toEqual({ kind: 'retry', side: 'A', seen: 1 });
  });

  it('refuses a delivery the side was never given, or an explicit side that contradicts it', () => {
    const s = opened();
    expect(s.attribute({ content: 'x', continues: { side: 'B', seen: 5 } })).toMatchObject({ kind: 'conflict' });
    expect(s.attribute({ content: 'x', continues: { side: 'A', seen: 1 }, explicitSide: 'B' })).toMatchObject({ kind: 'conflict' });
    const fresh = conversation();
    expect(fresh.attribute({ content: 'x', continues: { side: 'A', seen: 1 } })).toMatchObject({ kind: 'conflict' });
  });
});

describe('a persistent connection (alwaysNew)', () => {
  it('sends the same text twice as two turns, never a retry', () => {
    const s = conversation();
    s.send({ content: 'ping', explicitSide: 'A' });
    s.send({ content: 'b1', explicitSide: 'B', alwaysNew: true });
    expect(s.attribute({ content: 'b1', explicitSide: 'B' })).toMatchObject({ kind: 'retry', side: 'B' });
    expect(s.attribute({ content: 'b1', explicitSide: 'B', alwaysNew: true })).toEqual({ kind: 'message', side: 'B', seen: null });
  });
});

describe('new content: the user messages not already sent since the delivery a history shows (§2)', () => {
  const newMessages = (c: Conversation, spec: RequestSpec): readonly string[] | 'retry' | 'conflict' => {
    const result = attributeRequest(c.ctx(), request(spec));
    if (result.kind === 'conflict') return 'conflict';
    return result.kind === 'retry' ? 'retry' : result.messages;
  };

  it('takes every user message after the last assistant message, in order', () => {
    const c = opened();
    expect(newMessages(c, { content: '', messages: ['a1', 'a2', 'a3'], assistantHistory: ['b1'] })).toEqual(['a1', 'a2', 'a3']);
  });

  it('leaves out those the side already sent since that delivery, each once', () => {
    const c = opened();
    c.send({ content: 'a1', assistantHistory: ['b1'] });
    expect(newMessages(c, { content: '', messages: ['a1', 'a2'], assistantHistory: ['b1'] })).toEqual(['a2']);
    // The same text again after it is a new message: only one a1 was sent.
    expect(newMessages(c, { content: '', messages: ['a1', 'a1'], assistantHistory: ['b1'] })).toEqual(['a1']);
    // Compared after trimming, as histories are.
    expect(newMessages(c, { content: '', messages: [' a1\n', 'a2'], assistantHistory: ['b1'] })).toEqual(['a2']);
  });

  it('a request all of whose messages were sent is a retry of the latest turn, whichever earlier request it repeats', () => {
    const c = opened();
    c.send({ content: 'a1', assistantHistory: ['b1'] });
    c.send({ content: '', messages: ['a1', 'a2'], assistantHistory: ['b1'] });
    const { B } = c.ctx().sides;
    expect([...B.deliveries, ...B.queue]).toEqual(['a1', 'a2']);
    expect(newMessages(c, { content: '', messages: ['a1', 'a2'], assistantHistory: ['b1'] })).toBe('retry');
    expect(newMessages(c, { content: 'a1', assistantHistory: ['b1'] })).toBe('retry');
  });

  it('counts only what was sent since the delivery the history shows: an old text after a new delivery is new', () => {
    const c = withHistories(); // A sent a1 (after b1) and a2 (after b2)
    c.send({ content: 'b3', assistantHistory: ['a1', 'a2'] });
    expect(newMessages(c, { content: 'a1', assistantHistory: ['b1', 'b2', 'b3'] })).toEqual(['a1']);
  });

  it('a stateless client (no history) is compared with what it sent since its latest delivery', () => {
    const c = opened(); // A's handshake "ping" was answered with b1
    expect(newMessages(c, { content: 'ping' })).toEqual(['ping']); // answered: sending it again is new
    c.send({ content: 'a1' });
    expect(newMessages(c, { content: 'a1', explicitSide: 'A' })).toBe('retry'); // unanswered: the same again is a retry
  });

  it('keeps a side\'s latest RECENT_TURNS turns to recognise re-sent messages', () => {
    const c = opened();
    for (let i = 0; i < 40; i++) c.send({ content: `a${i}`, explicitSide: 'A', assistantHistory: ['b1'] });
    expect(c.ctx().sides.A.recent).toHaveLength(32);
    const { B } = c.ctx().sides;
    expect([...B.deliveries, ...B.queue]).toHaveLength(40);
  });
});
