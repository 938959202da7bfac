// Proves the actor system (src/sessions/registry.ts, session.ts): one session actor per id,
// MAX_SESSIONS refusing only new sessions, conflicting first requests creating nothing,
// closed sessions (TTL, close, closeAll) leaving memory so the id starts afresh, and each
// Submission's outcome settling as PROTOCOL.md §4-5 say (reply, reject, disconnected: a
// client that goes away loses nothing).
import { describe, expect, it } from 'vitest';
import { SimulatedClock } from 'xstate';
import type { SessionTiming } from '../../machines/session.logic.js';
import type { TurnRequest } from '../../src/sessions/attribution.js';
import { SessionRegistry, type RegistrySubmitResult } from '../../src/sessions/registry.js';
import type { Outcome, Submission } from '../../src/sessions/session.js';

const TIMING: SessionTiming = { handshakeTimeoutMs: 1_000, turnTimeoutMs: 3_000, streamTurnTimeoutMs: 3_000, sessionTtlMs: 5_000 };

/** `content` is the request's one new user message (the usual case). */
type RequestSpec = Partial<TurnRequest> & { readonly content: string };
const toRequest = ({ content, ...spec }: RequestSpec): TurnRequest => ({
  explicitSide: null,
  assistantHistory: [],
  system: null,
  retryCount: 0,
  idempotencyKey: null,
  messages: [content],
  ...spec,
});

function setup(maxSessions = 10) {
  const clock = new SimulatedClock();
  const registry = new SessionRegistry({ timing: TIMING, maxSessions, clock, now: () => clock.now() });
  let counter = 0;
  const submit = (sessionId: string, spec: RequestSpec, requestId = `req-${++counter}`): RegistrySubmitResult =>
    registry.submit(sessionId, toRequest(spec), requestId);
  return {
    clock,
    registry,
    submit,
    /** Submits a request that must be accepted. */
    accept(sessionId: string, spec: RequestSpec, requestId?: string): Submission {
      const result = submit(sessionId, spec, requestId);
      if ('error' in result) throw new Error(`expected a submission, got ${result.error}: ${result.message}`);
      return result;
    },
  };
}

const PENDING = Symbol('pending');

/** The outcome if it has settled by now, PENDING otherwise. */
async function settled(submission: Submission): Promise<Outcome | typeof PENDING> {
  return Promise.race([submission.outcome, new Promise<typeof PENDING>((resolve) => setImmediate(() => resolve(PENDING)))]);
}

describe('SessionRegistry', () => {
  it('runs one session actor per session id', async () => {
    const { registry, accept } = setup();
    const a = accept('npc-guard', { content: 'ping' });
    const session = registry.get('npc-guard');
    expect(session).toBeDefined();
    const b = accept('npc-guard', { content: 'b1' });
    expect(registry.size).toBe(1);
    expect(registry.get('npc-guard')).toBe(session);
    expect([a.side, a.kind, b.side, b.kind]).toEqual(['A', 'connect', 'B', 'connect']);
    expect(await a.outcome).toEqual({ type: 'reply', content: 'b1', delivery: 0, repeat: false });

    const other = accept('npc-thief', { content: 'ping' });
    expect(other).toMatchObject({ side: 'A', kind: 'connect' });
    expect(registry.size).toBe(2);
    expect([...registry.list()].map((s) => s.id).sort()).toEqual(['npc-guard', 'npc-thief']);
    expect(registry.get('npc-thief')).not.toBe(session);
    expect(registry.get('npc-thief')?.context.sides.A.deliveries).toEqual([]); // sessions share nothing
    expect(await settled(other)).toBe(PENDING);
  });

  it('MAX_SESSIONS refuses a new session but not the turns of existing ones', async () => {
    const { registry, submit, accept } = setup(1);
    const a = accept('s1', { content: 'ping' });
    const refused = submit('s2', { content: 'ping' });
    expect(refused).toMatchObject({ error: 'max_sessions' });
    if ('error' in refused) {
      expect(refused.message).toMatch(/s2/);
      expect(refused.message).toMatch(/1/);
    }
    expect(registry.size).toBe(1);
    expect(registry.get('s2')).toBeUndefined();

    const b = accept('s1', { content: 'b1' });
    expect(await a.outcome).toMatchObject({ type: 'reply', content: 'b1' });
    const a1 = accept('s1', { content: 'a1', assistantHistory: ['b1'] });
    expect(a1).toMatchObject({ side: 'A', kind: 'message' });
    expect(await b.outcome).toMatchObject({ type: 'reply', content: 'a1' });
    expect(registry.size).toBe(1);
  });

  it('MAX_SESSIONS counts live sessions only: a closed one frees its place', () => {
    const { registry, submit, accept } = setup(1);
    accept('s1', { content: 'ping' });
    expect(submit('s2', { content: 'ping' })).toMatchObject({ error: 'max_sessions' });
    registry.close('s1', 'deleted');
    expect(submit('s2', { content: 'ping' })).toMatchObject({ side: 'A', kind: 'connect' });
    expect(registry.size).toBe(1);
  });

  it('a conflicting first request does not create a session', () => {
    const { registry, submit } = setup();
    const result = submit('npc-guard', { content: 'hello', assistantHistory: ['an answer from long ago'] });
    expect(result).toMatchObject({ error: 'session_conflict' });
    if ('error' in result) expect(result.message).toMatch(/earlier conversation/);
    expect(registry.size).toBe(0);
    expect(registry.get('npc-guard')).toBeUndefined();
  });

  it('a conflicting request to a live session is refused and changes nothing', () => {
    const { registry, submit, accept } = setup();
    accept('npc-guard', { content: 'ping' });
    accept('npc-guard', { content: 'b1' });
    const before = registry.get('npc-guard')?.context;
    expect(submit('npc-guard', { content: 'x', assistantHistory: ['never said'] })).toMatchObject({ error: 'session_conflict' });
    expect(registry.get('npc-guard')?.context).toBe(before);
    expect(registry.size).toBe(1);
  });

  it('removes a session whose TTL ran out; a later request with its id starts a fresh session', async () => {
    const { clock, registry, submit, accept } = setup();
    const a = accept('npc-guard', { content: 'ping' });
    const b = accept('npc-guard', { content: 'b1' });
    expect(await a.outcome).toMatchObject({ type: 'reply', content: 'b1' });
    const old = registry.get('npc-guard');
    clock.increment(3_000);
    expect(await b.outcome).toEqual({ type: 'reject', code: 'turn_timeout' });
    expect(old?.state).toBe('DORMANT');
    clock.increment(4_999);
    expect(registry.size).toBe(1);
    clock.increment(1);
    expect(registry.size).toBe(0);
    expect(registry.get('npc-guard')).toBeUndefined();
    expect(old?.closed).toBe(true);
    expect(old?.state).toBe('CLOSED');
    expect(old?.context.closeReason).toBe('expired');

    // The old conversation's history is unknown to the new session: 409, saying so.
    const stale = submit('npc-guard', { content: 'a1', assistantHistory: ['b1'] });
    expect(stale).toMatchObject({ error: 'session_conflict' });
    if ('error' in stale) expect(stale.message).toMatch(/earlier conversation/);
    expect(registry.size).toBe(0);

    const fresh = accept('npc-guard', { content: 'ping' });
    expect(fresh).toMatchObject({ side: 'A', kind: 'connect' });
    const session = registry.get('npc-guard');
    expect(session).not.toBe(old);
    expect(session?.state).toBe('AWAITING_PEER');
    expect(session?.context.sides.A.deliveries).toEqual([]);
    expect(await settled(fresh)).toBe(PENDING);
  });

  it('close(): held requests get session_closed, the session is removed, its id starts afresh', async () => {
    const { registry, accept } = setup();
    const a = accept('npc-guard', { content: 'ping' });
    const old = registry.get('npc-guard');
    expect(registry.close('npc-guard', 'deleted')).toBe(true);
    expect(await a.outcome).toEqual({ type: 'reject', code: 'session_closed' });
    expect(registry.size).toBe(0);
    expect(old?.closed).toBe(true);
    expect(old?.context.closeReason).toBe('deleted');
    expect(registry.close('npc-guard', 'deleted')).toBe(false);
    expect(registry.close('never-existed', 'deleted')).toBe(false);

    const fresh = accept('npc-guard', { content: 'ping' });
    expect(fresh).toMatchObject({ side: 'A', kind: 'connect' });
    expect(registry.get('npc-guard')).not.toBe(old);
  });

  it("closeAll('shutdown'): every held request gets shutting_down and every session is removed", async () => {
    const { registry, accept } = setup();
    const guardA = accept('npc-guard', { content: 'ping' });
    accept('npc-guard', { content: 'b1' });
    const guardA1 = accept('npc-guard', { content: 'a1' }); // held: B is not waiting any more
    const thiefA = accept('npc-thief', { content: 'ping' });
    accept('npc-idle', { content: 'ping' });
    registry.get('npc-idle')?.close('expired');
    expect(registry.size).toBe(2);

    registry.closeAll('shutdown');
    expect(await guardA.outcome).toMatchObject({ type: 'reply', content: 'b1' });
    expect(await guardA1.outcome).toEqual({ type: 'reject', code: 'shutting_down' });
    expect(await thiefA.outcome).toEqual({ type: 'reject', code: 'shutting_down' });
    expect(registry.size).toBe(0);
    expect([...registry.list()]).toEqual([]);
  });

  it('runs sessions across several actor systems: timers, TTLs and closing work in every one of them', async () => {
    const { registry, accept, clock } = setup(2_000);
    const count = 700; // more than two systems' worth of sessions
    const handshakes = Array.from({ length: count }, (_, i) => accept(`npc-${i}`, { content: 'ping' }));
    const openings = handshakes.map((_, i) => accept(`npc-${i}`, { content: `b1 of ${i}` }));
    const answers = await Promise.all(handshakes.map((h) => h.outcome));
    expect(answers.every((a, i) => a.type === 'reply' && a.content === `b1 of ${i}`)).toBe(true);
    // Every B request is held with its own turn timer, whichever system its session is in.
    clock.increment(TIMING.turnTimeoutMs);
    const timedOut = await Promise.all(openings.map((o) => o.outcome));
    expect(timedOut.every((o) => o.type === 'reject' && o.code === 'turn_timeout')).toBe(true);
    // Half are deleted one by one, the rest closed at once: every one leaves memory, and an id starts afresh.
    for (let i = 0; i < count / 2; i++) registry.close(`npc-${i}`, 'deleted');
    expect(registry.size).toBe(count / 2);
    registry.closeAll('shutdown');
    expect(registry.size).toBe(0);
    expect(accept('npc-0', { content: 'ping again' })).toMatchObject({ side: 'A', kind: 'connect' });
  });
});

describe('Submission.outcome', () => {
  it('settles with the reply: content, delivery index, repeat flag', async () => {
    const { accept } = setup();
    const a = accept('s', { content: 'ping' });
    expect(await settled(a)).toBe(PENDING);
    const b = accept('s', { content: 'b1' });
    expect(await a.outcome).toEqual({ type: 'reply', content: 'b1', delivery: 0, repeat: false });
    const a1 = accept('s', { content: 'a1', assistantHistory: ['b1'] });
    expect(await b.outcome).toEqual({ type: 'reply', content: 'a1', delivery: 0, repeat: false });
    const b2 = accept('s', { content: 'b2', assistantHistory: ['a1'] });
    expect(await a1.outcome).toEqual({ type: 'reply', content: 'b2', delivery: 1, repeat: false });
    expect(await settled(b2)).toBe(PENDING);
  });

  it('settles with the same answer again (repeat: true) for a retry of an answered turn', async () => {
    const { registry, accept } = setup();
    accept('s', { content: 'ping' });
    accept('s', { content: 'b1' });
    accept('s', { content: 'a1', assistantHistory: ['b1'] }); // answers B's b1
    const retry = accept('s', { content: 'b1', retryCount: 1 });
    expect(retry).toMatchObject({ side: 'B', kind: 'retry' });
    expect(await retry.outcome).toEqual({ type: 'reply', content: 'a1', delivery: 0, repeat: true });
    expect(registry.get('s')?.context.sides.B.deliveries).toEqual(['a1']);
  });

  it('settles with reject superseded when a retry takes over the wait', async () => {
    const { accept } = setup();
    accept('s', { content: 'ping' });
    const b = accept('s', { content: 'b1' });
    const retry = accept('s', { content: 'b1', retryCount: 1 });
    expect(retry).toMatchObject({ side: 'B', kind: 'retry' });
    expect(await b.outcome).toEqual({ type: 'reject', code: 'superseded' });
    expect(await settled(retry)).toBe(PENDING);
    accept('s', { content: 'a1' });
    expect(await retry.outcome).toMatchObject({ type: 'reply', content: 'a1' });
  });

  it('settles with reject handshake_timeout / turn_timeout when the wait runs out', async () => {
    const { clock, accept } = setup();
    const a = accept('s', { content: 'ping' });
    clock.increment(999);
    expect(await settled(a)).toBe(PENDING);
    clock.increment(1);
    expect(await a.outcome).toEqual({ type: 'reject', code: 'handshake_timeout' });
    const b = accept('s', { content: 'b1' });
    clock.increment(3_000);
    expect(await b.outcome).toEqual({ type: 'reject', code: 'turn_timeout' });
  });

  it('records activity at the time given by `now`', () => {
    const { clock, registry, accept } = setup();
    clock.increment(1_234);
    accept('s', { content: 'ping' });
    expect(registry.get('s')?.context.lastActivityAt).toBe(1_234);
  });
});

describe('Submission.disconnect()', () => {
  it('settles as disconnected and keeps what the request would have received for the next request', async () => {
    const { registry, accept } = setup();
    const a = accept('s', { content: 'ping' });
    a.disconnect();
    expect(await a.outcome).toEqual({ type: 'disconnected' });
    expect(registry.get('s')?.context.sides.A.held).toBeNull();

    const b = accept('s', { content: 'b1' });
    expect(b).toMatchObject({ side: 'B', kind: 'connect' });
    expect(registry.get('s')?.context.sides.A.queue).toEqual(['b1']);

    const again = accept('s', { content: 'ping' }); // A's client re-sends its handshake
    expect(again).toMatchObject({ side: 'A', kind: 'retry' });
    expect(await again.outcome).toEqual({ type: 'reply', content: 'b1', delivery: 0, repeat: false });
  });

  it('in mid-conversation: the queued content answers the side\'s next new turn', async () => {
    const { registry, accept } = setup();
    accept('s', { content: 'ping' });
    const b = accept('s', { content: 'b1' });
    b.disconnect();
    expect(await b.outcome).toEqual({ type: 'disconnected' });
    expect(registry.get('s')?.state).toBe('DORMANT');
    const a1 = accept('s', { content: 'a1', assistantHistory: ['b1'] });
    expect(await settled(a1)).toBe(PENDING);
    const b2 = accept('s', { content: 'b2', explicitSide: 'B' });
    expect(b2).toMatchObject({ side: 'B', kind: 'message' });
    expect(await b2.outcome).toEqual({ type: 'reply', content: 'a1', delivery: 0, repeat: false });
    expect(await a1.outcome).toMatchObject({ type: 'reply', content: 'b2' });
  });

  it('after the outcome settled, changes nothing', async () => {
    const { registry, accept } = setup();
    const a = accept('s', { content: 'ping' });
    const b = accept('s', { content: 'b1' });
    expect(await a.outcome).toMatchObject({ type: 'reply' });
    const before = registry.get('s')?.context;
    a.disconnect();
    expect(await a.outcome).toMatchObject({ type: 'reply', content: 'b1' });
    expect(registry.get('s')?.context).toBe(before);
    expect(await settled(b)).toBe(PENDING);
  });

  it('after the session closed, is harmless', async () => {
    const { registry, accept } = setup();
    const a = accept('s', { content: 'ping' });
    registry.close('s', 'deleted');
    expect(() => a.disconnect()).not.toThrow();
    expect(await a.outcome).toEqual({ type: 'reject', code: 'session_closed' });
  });
});

describe('a session rebuilt from its journal (restart, cluster takeover)', () => {
  /** A session both sides joined, left idle (nothing held), and its context. */
  async function idleSession() {
    const { registry, accept, clock } = setup();
    const a = accept('idle', { content: 'ping', explicitSide: 'A' });
    const b = accept('idle', { content: 'b1', explicitSide: 'B' });
    expect(await a.outcome).toMatchObject({ type: 'reply', content: 'b1' });
    b.disconnect();
    const session = registry.get('idle')!;
    expect(session.state).toBe('DORMANT');
    return { context: session.context, at: clock.now() };
  }

  it('runs its TTL on from its last recorded activity, not from the rebuild', async () => {
    const { context } = await idleSession();
    const { registry, clock } = setup();
    // Rebuilt 4 s after its last activity: 1 s of its 5 s TTL is left.
    clock.set(context.lastActivityAt! + 4_000);
    registry.restore('idle', { context, state: 'DORMANT' });
    clock.increment(999);
    expect(registry.get('idle')?.state).toBe('DORMANT');
    clock.increment(1);
    expect(registry.get('idle')).toBeUndefined();
  });

  it('still has its whole TTL after fresh activity', async () => {
    const { context } = await idleSession();
    const { registry, clock, accept } = setup();
    clock.set(context.lastActivityAt! + 4_000);
    registry.restore('idle', { context, state: 'DORMANT' });
    // A request at once: activity, so the TTL counts from it again once the session is idle.
    const a = accept('idle', { content: 'again', explicitSide: 'A' });
    a.disconnect();
    clock.increment(4_999);
    expect(registry.get('idle')?.state).toBe('DORMANT');
    clock.increment(1);
    expect(registry.get('idle')).toBeUndefined();
  });

  it('ends at once when its TTL ran out while nobody ran it', async () => {
    const { context } = await idleSession();
    const { registry, clock } = setup();
    clock.set(context.lastActivityAt! + 6_000);
    registry.restore('idle', { context, state: 'DORMANT' });
    clock.increment(0);
    await new Promise((r) => setImmediate(r));
    expect(registry.get('idle')).toBeUndefined();
  });
});
