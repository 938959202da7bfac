/**
 * The pure parts of events out: the catalogue's ids and patterns, the marks that say what an
 * endpoint or broker got (an id used again after its session closed included), NATS subject
 * tokens, and Retry-After.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ADMIN_STREAM, eventsOfRecord, isKnownPattern, matchesType, type ProxyEvent } from '../../src/events/catalogue.js';
import { isAfter, markOf } from '../../src/events/delivery-state.js';
import { subjectOf, subjectToken } from '../../src/events/brokers.js';
import { retryAfter } from '../../src/events/http-post.js';
import type { JournalRecordV2 } from '../../src/journal/records.js';

const connected = (session: string, seq: number, at: number, side: 'A' | 'B'): JournalRecordV2 => ({
  v: 2,
  seq,
  trace: null,
  type: 'SideConnected',
  session,
  at,
  side,
  request: `r${seq}`,
  turn: { seen: null, content: 'hello', idempotencyKey: null, system: null, protocol: 'openai' },
});

describe('the catalogue', () => {
  it('gives the same record the same ids, and B’s first turn two events', () => {
    const a = eventsOfRecord(connected('npc', 2, 1000, 'B'), 900);
    const b = eventsOfRecord(connected('npc', 2, 1000, 'B'), 900);
    expect(a.map((e) => e.type)).toEqual(['session.paired', 'message.sent']);
    expect(a.map((e) => e.id)).toEqual(b.map((e) => e.id));
    expect(new Set(a.map((e) => e.id)).size).toBe(2);
    expect(eventsOfRecord(connected('npc', 2, 1001, 'B'))[0]!.id).not.toBe(a[0]!.id);
    expect(eventsOfRecord({ v: 2, seq: 3, trace: null, type: 'MessageSent', session: 'npc', at: 1 } as unknown as JournalRecordV2)).toEqual([]);
  });

  it('matches types by name, family and star, and refuses patterns that name nothing', () => {
    expect(matchesType(['session.*'], 'session.created')).toBe(true);
    expect(matchesType(['session.*'], 'message.sent')).toBe(false);
    expect(matchesType(['*'], 'key.revoked')).toBe(true);
    expect(isKnownPattern('sessoin.*')).toBe(false);
    expect(isKnownPattern('request.timed_out')).toBe(true);
  });
});

describe('marks', () => {
  const event = (start: number, seq: number, part: number, at: number): ProxyEvent => ({
    stream: 'npc',
    start,
    seq,
    part,
    at,
    id: `e${start}.${seq}.${part}`,
    type: 'message.sent',
    session: 'npc',
    tenant: null,
    trace: null,
    data: {},
    hasContent: false,
  });

  it('owes exactly the events after the mark, in one incarnation and across an id used again', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 1, max: 30 }), fc.integer({ min: 0, max: 1 })), { minLength: 1, maxLength: 40 }), fc.nat(), (places, cut) => {
        // Two incarnations of one id, each numbered from 1; the second began later.
        const sorted = [...new Map(places.map(([seq, part]) => [`${seq}.${part}`, [seq, part] as const])).values()].sort((x, y) => x[0] - y[0] || x[1] - y[1]);
        const events = [...sorted.map(([seq, part]) => event(1000, seq, part, 1000 + seq)), ...sorted.map(([seq, part]) => event(5000, seq, part, 5000 + seq))];
        const i = cut % events.length;
        const mark = markOf(events[i]!, undefined);
        events.forEach((e, j) => expect(isAfter(e, mark), `${e.id} after ${events[i]!.id}`).toBe(j > i));
      }),
    );
  });

  it('keeps the admin stream apart from any session', () => {
    expect(ADMIN_STREAM).not.toBe('admin');
    const first = { ...event(0, 0, 0, 10), stream: ADMIN_STREAM, seq: 0, start: undefined, id: 'a' };
    const second = { ...first, id: 'b' };
    const mark = markOf(first, undefined);
    expect(isAfter(first, mark)).toBe(false);
    expect(isAfter(second, mark)).toBe(true);
    expect(isAfter(second, markOf(second, mark))).toBe(false);
  });
});

describe('NATS subjects and Retry-After', () => {
  it('escapes what a subject token cannot hold', () => {
    expect(subjectToken('npc.guard')).toBe('npc%2Eguard');
    expect(subjectToken('a*b>c d%')).toBe('a%2Ab%3Ec%20d%25');
    expect(subjectToken('_admin')).toBe('%5Fadmin');
    fc.assert(fc.property(fc.string({ minLength: 1 }), (name) => !/[.*>\s]/u.test(subjectToken(name))));
    const e = eventsOfRecord(connected('studio\u001fnpc.1', 1, 5, 'A'))[0]!;
    expect(subjectOf(e)).toBe('motive.studio.npc%2E1.session.created');
  });

  it('reads Retry-After as seconds or a date', () => {
    expect(retryAfter('3')).toBe(3000);
    expect(retryAfter(new Date(Date.now() + 10_000).toUTCString(), Date.now())).toBeGreaterThan(8000);
    expect(retryAfter('soon')).toBeNull();
    expect(retryAfter(undefined)).toBeNull();
  });
});
