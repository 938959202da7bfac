/**
 * The streaming scenario judges keep-alives by the interval of the proxy under test: with a
 * short known interval, a stream held two intervals or more must carry one per two intervals;
 * with a long or unknown one it holds streams no longer, checks only the headers, and says which
 * check it skipped and why. A keep-alive sent with the headers is reported, never required.
 */
import { describe, expect, it } from 'vitest';
import { keepAliveCheck, scenarioByName, type ScenarioOptions, type SessionView } from '../../src/e2e/scenarios.js';
import type { ProxyTimers, RecordEvent } from '../../src/e2e/types.js';
import type { SideRecord } from '../../src/e2e/verify.js';

const timers = (keepalive: number | null, source: ProxyTimers['source'] = 'health', timeouts = 30): ProxyTimers => ({
  keepaliveIntervalSeconds: keepalive,
  handshakeTimeoutSeconds: timeouts,
  turnTimeoutSeconds: timeouts,
  streamTurnTimeoutSeconds: null,
  source,
});

const streaming = scenarioByName('streaming')!;
const options = (proxy: ProxyTimers): ScenarioOptions => ({ turns: 2, concurrent: 1, protocol: 'openai', stream: true, seed: 1, runId: 'x', agentCommands: {}, proxy });

/**
 * One streamed exchange: A's handshake stream gets its headers at 1010 and is answered with
 * B's "[s0 B1] hi", which B sends at `sentAt`; the stream carried `keepAlives`.
 */
function session(sentAt: number, keepAlives: number, firstKeepAliveAt: number | null = null): SessionView {
  const a: RecordEvent[] = [
    { ev: 'start', t: 1000, session: 's', side: 'A', protocol: 'openai', stream: true, pid: 1, agent: null },
    { ev: 'send', t: 1000, i: 0, content: '[s0 A0] hello?', handshake: true },
    { ev: 'http', t: 1001, i: 0, method: 'POST', path: '/v1/chat/completions', retryCount: 0, status: 200, headersAt: 1010 },
    { ev: 'recv', t: sentAt + 20, i: 0, content: '[s0 B1] hi', firstChunkAt: sentAt + 15 },
    { ev: 'stream', t: sentAt + 21, i: 0, keepAlives, bytes: 500, firstKeepAliveAt },
  ];
  const b: RecordEvent[] = [
    { ev: 'start', t: 1000, session: 's', side: 'B', protocol: 'openai', stream: true, pid: 2, agent: null },
    { ev: 'send', t: sentAt, i: 0, content: '[s0 B1] hi', handshake: false },
  ];
  const record = (side: 'A' | 'B', events: RecordEvent[]): SideRecord => ({ side, events });
  const plan = streaming.plan(options(timers(0.1)))[0]!;
  return { plan, a: record('A', a), b: record('B', b), ab: { problems: [], arrivals: [] }, ba: { problems: [], arrivals: [] } };
}

describe('the streaming scenario and the keep-alive interval', () => {
  it('holds the first stream of each side two intervals (and some slack) when the interval is short', () => {
    expect(keepAliveCheck(timers(0.1, 'harness'))).toEqual({ intervalMs: 100, holdMs: 400 });
    expect(keepAliveCheck(timers(2))).toEqual({ intervalMs: 2000, holdMs: 4200 });
    const plan = streaming.plan(options(timers(2)))[0]!;
    expect(plan.sides.B.thinkMs[0]).toBe(4200); // answers A's handshake stream
    expect(plan.sides.A.thinkMs.slice(0, 3)).toEqual([0, 4200, 300]); // the handshake, then B's first stream
    expect(streaming.skippedChecks!(options(timers(2)))).toEqual([]);
  });

  it('skips the keep-alive check, saying why, for a long interval (the default 15 s), an unknown one, or one close to the timeouts', () => {
    const long = streaming.skippedChecks!(options(timers(15)));
    expect(long).toEqual([
      "keep-alives while held: KEEPALIVE_INTERVAL_SECONDS is 15 (reported by the proxy's GET /health); seeing one would hold a stream 30.2 s, longer than this scenario waits (8 s), so only the headers were checked",
    ]);
    expect(streaming.plan(options(timers(15)))[0]!.sides.B.thinkMs[0]).toBe(300);
    expect(streaming.skippedChecks!(options(timers(null, 'unknown')))[0]).toMatch(/does not report its KEEPALIVE_INTERVAL_SECONDS .*--keepalive-interval SECONDS/);
    expect(streaming.skippedChecks!(options(timers(3, 'flag', 10)))[0]).toMatch(/KEEPALIVE_INTERVAL_SECONDS is 3 \(given with --keepalive-interval\); holding a stream 6.2 s would come close to the proxy's 10 s timeout/);
  });

  it('with a short interval, a stream held two intervals needs a keep-alive per two intervals', () => {
    const proxy = options(timers(0.1, 'harness'));
    expect(streaming.check!(session(1410, 2), proxy)).toEqual([]);
    expect(streaming.check!(session(1410, 0), proxy)).toEqual([
      'side A: the stream for its message 1 was held 400 ms with no keep-alive; at KEEPALIVE_INTERVAL_SECONDS=0.1 at least 2 were due (one per two intervals)',
    ]);
    expect(streaming.check!(session(1410, 1), proxy)[0]).toContain('with 1 keep-alive;');
    // Held less than two intervals: nothing was due.
    expect(streaming.check!(session(1150, 0), proxy)).toEqual([]);
  });

  it('with a long interval, only the headers are judged; keep-alives are reported, not required', () => {
    const proxy = options(timers(15));
    expect(streaming.check!(session(1410, 0), proxy)).toEqual([]);
    // Headers that came only after the reply was sent are a failure whatever the interval.
    const late = session(1005, 0);
    expect(streaming.check!(late, proxy)).toEqual(['side A: the stream for its message 1 got its headers only 5 ms after the other side sent the reply']);
    expect(streaming.observe!([session(1410, 0)], proxy)).toEqual([
      'a keep-alive with the headers (within 250 ms): 0 of 1 held streams (optional: not required yet)',
      'a keep-alive while held: 0 of 1 held streams',
    ]);
    expect(streaming.observe!([session(1410, 1, 1012)], proxy)[0]).toBe('a keep-alive with the headers (within 250 ms): 1 of 1 held streams (optional: not required yet)');
  });
});
