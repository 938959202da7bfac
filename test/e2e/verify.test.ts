/**
 * The e2e harness's checks, on hand-made client records: an exact relay passes, and each kind
 * of relay fault (duplicate, loss, reordering, a forwarded handshake, an empty reply, a message
 * nobody said) is caught and named.
 */
import { describe, expect, it } from 'vitest';
import { peakOverlap } from '../../src/e2e/orchestrator.js';
import type { RecordEvent, Side } from '../../src/e2e/types.js';
import { checkCompletion, checkDirection, checkEnding, clip, type SideRecord } from '../../src/e2e/verify.js';

let clock = 1000;
const t = () => (clock += 10);

/** A side's record: `said` in order (A's first is its handshake), `got` the deliveries it received. */
function record(side: Side, said: string[], got: string[], extra: RecordEvent[] = []): SideRecord {
  const events: RecordEvent[] = [{ ev: 'start', t: t(), session: 's', side, protocol: 'openai', stream: false, pid: 1, agent: null }];
  said.forEach((content, i) => {
    events.push({ ev: 'send', t: t(), i, content, handshake: side === 'A' && i === 0 });
    const reply = got[i];
    if (reply !== undefined) events.push({ ev: 'recv', t: t(), i, content: reply, firstChunkAt: null });
  });
  events.push(...extra, { ev: 'end', t: t(), ok: true, reason: 'done' });
  return { side, events };
}

describe('checkDirection', () => {
  it('passes an exact relay, and counts queued messages joined in one delivery', () => {
    const a = record('A', ['ping', 'a1', 'a2'], ['b1', 'b2\n\nb3']);
    const b = record('B', ['b1', 'b2', 'b3'], ['a1', 'a2']);
    expect(checkDirection(a, b).problems).toEqual([]);
    const ba = checkDirection(b, a);
    expect(ba.problems).toEqual([]);
    expect(ba.arrivals.map((x) => x.receivedAt !== null)).toEqual([true, true, true]);
  });

  it('names a message delivered twice', () => {
    const a = record('A', ['ping', 'a1', 'a2'], ['b1', 'b2\n\nb2']);
    const b = record('B', ['b1', 'b2'], ['a1', 'a2']);
    expect(checkDirection(b, a).problems).toEqual(['B→A: A received "b2" 2 times (duplicate delivery; said 1×)']);
  });

  it('names a lost message and an empty reply', () => {
    const a = record('A', ['ping', 'a1', 'a2'], ['b1', '']);
    const b = record('B', ['b1', 'b2'], ['a1', 'a2']);
    expect(checkDirection(b, a).problems).toEqual([
      'B→A: A got an empty reply (delivery 2, to its message 2)',
      'B→A: message 2 "b2" never reached A (lost; received 0 of 1)',
    ]);
  });

  it('names messages out of order, a forwarded handshake and a message nobody said', () => {
    const a = record('A', ['ping', 'a1', 'a2'], ['b2', 'b1']);
    const b = record('B', ['b1', 'b2'], ['ping\n\na1', 'zz']);
    expect(checkDirection(b, a).problems).toEqual(['B→A: message 1 "b1" arrived out of order (in delivery 2 of A, after a later message)']);
    const ab = checkDirection(a, b).problems;
    expect(ab).toContain("A→B: side A's handshake \"ping\" was forwarded to B");
    expect(ab).toContain('A→B: B received "zz", which A never said');
    expect(ab).toContain('A→B: message 2 "a2" never reached B (lost; received 0 of 1)');
  });

  it('does not owe a message the proxy refused (409), but does owe one whose wait failed later', () => {
    const refused: RecordEvent = { ev: 'error', t: t(), i: 2, message: 'history conflict', code: 'session_conflict' };
    const a = record('A', ['ping', 'a1', 'a2'], ['b1', 'b2'], [refused]);
    const b = record('B', ['b1', 'b2'], ['a1']);
    expect(checkDirection(a, b).problems).toEqual([]);
    // A 409 on a retry whose first attempt was cut off after sending: the message may well
    // have been accepted, so it is still owed.
    const attempts: RecordEvent[] = [
      { ev: 'http', t: t(), i: 2, method: 'POST', path: '/v1/chat/completions', retryCount: 0, status: null, headersAt: null, error: 'reset' },
      { ev: 'http', t: t(), i: 2, method: 'POST', path: '/v1/chat/completions', retryCount: 1, status: 409, headersAt: t() },
    ];
    const a1 = record('A', ['ping', 'a1', 'a2'], ['b1', 'b2'], [...attempts, refused]);
    expect(checkDirection(a1, b).problems).toEqual(['A→B: message 2 "a2" never reached B (lost; received 0 of 1)']);
    const timedOut: RecordEvent = { ev: 'error', t: t(), i: 2, message: 'gave up', code: 'turn_timeout' };
    const a2 = record('A', ['ping', 'a1', 'a2'], ['b1', 'b2'], [timedOut]);
    expect(checkDirection(a2, b).problems).toEqual(['A→B: message 2 "a2" never reached B (lost; received 0 of 1)']);
  });
});

describe('how a reason quotes a message', () => {
  it('as JSON, escapes and all (a random message may carry quotes, backslashes, line breaks), never cutting an emoji in half', () => {
    const short = '[s0 B1] quotes "double" and \\ a backslash\nline two';
    // 56 UTF-16 units before the emoji: a cut at 57 units would split its surrogate pair.
    const long = `[s0 B2] ${'x'.repeat(48)}🙂🚀 and more`;
    const problems = checkDirection(record('B', [short, long], []), record('A', ['ping'], [])).problems;
    const quoted = problems.map((p) => /^B→A: message \d ("\[s0 B\d\] (?:[^"\\]|\\.)*") never reached A \(lost; received 0 of 1\)$/.exec(p)?.[1]);
    expect(quoted.every((q) => q !== undefined), problems.join('\n')).toBe(true);
    expect(quoted.map((q) => JSON.parse(q!) as string)).toEqual([short, `[s0 B2] ${'x'.repeat(48)}🙂...`]);
    expect(clip(long, 200)).toBe(long);
    expect(clip('ab🙂cd', 4)).toBe('a...');
    expect(clip('ab🙂cd', 5)).toBe('ab🙂cd');
  });
});

describe('checkCompletion and checkEnding', () => {
  it('reports application-visible errors, unfinished sides and duplicates answered differently', () => {
    const failed = record('B', ['b1'], [], [{ ev: 'error', t: t(), i: 0, message: 'fetch failed', code: 'APIConnectionError' }]);
    expect(checkCompletion(failed, 'B')).toEqual(['side B failed at message 1: APIConnectionError: fetch failed']);
    const unfinished: SideRecord = { side: 'A', events: record('A', ['ping'], []).events.filter((e) => e.ev !== 'end') };
    expect(checkCompletion(unfinished, 'A')).toEqual(['side A did not finish (its runner was stopped or crashed)']);
    expect(checkCompletion(undefined, 'A')).toEqual(['side A recorded nothing (its runner did not start or crashed)']);
    const dup = record('A', ['ping', 'a1'], ['b1', 'b2'], [{ ev: 'duplicate', t: t(), i: 1, same: false, content: 'other' }]);
    expect(checkCompletion(dup, 'A')).toEqual(['side A sent message 2 again and got a different answer: "other"']);
  });

  it('accepts a 409 on a retried last message only after the peer closed the session', () => {
    const at = t();
    const conflict: RecordEvent[] = [
      { ev: 'http', t: at, i: 1, method: 'POST', path: '/v1/chat/completions', retryCount: 1, status: 409, headersAt: at + 5 },
      { ev: 'closed', t: at + 6, i: 1, by: 'deleted-before-retry' },
    ];
    const a = record('A', ['ping', 'a1'], ['b1'], conflict);
    const deletedFirst = record('B', ['b1'], ['a1'], [{ ev: 'deleted', t: at + 2, sentAt: at - 1, status: 200 }]);
    expect(checkEnding(a, deletedFirst)).toEqual([]);
    const deletedLater = record('B', ['b1'], ['a1'], [{ ev: 'deleted', t: at + 20, sentAt: at + 10, status: 200 }]);
    expect(checkEnding(a, deletedLater)).toEqual(['side A: its last message got 409 session_conflict although side B had not closed the session before']);
  });
});

describe('peakOverlap', () => {
  it('counts the sessions in flight at one moment', () => {
    expect(peakOverlap([])).toBe(0);
    expect(
      peakOverlap([
        { startedAt: 0, endedAt: 10 },
        { startedAt: 5, endedAt: 15 },
        { startedAt: 11, endedAt: 20 },
      ]),
    ).toBe(2);
    expect(peakOverlap(Array.from({ length: 5 }, (_, i) => ({ startedAt: i, endedAt: 100 })))).toBe(5);
  });
});
