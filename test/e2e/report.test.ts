/**
 * The HTML report is one self-contained file: no scripts, nothing fetched, everything inline;
 * it shows the verdicts, the timeline and histogram as inline SVG, and the service's log lines
 * of failed sessions (escaped).
 */
import { describe, expect, it } from 'vitest';
import { histogramSvg, renderHtml } from '../../src/e2e/report.js';
import { summaryTable } from '../../src/e2e/progress.js';
import { histogram, summarize } from '../../src/e2e/stats.js';
import type { RunReport, ScenarioReport, SessionReport } from '../../src/e2e/types.js';

function session(id: string, verdict: 'pass' | 'fail'): SessionReport {
  return {
    id,
    protocols: { A: 'openai', B: 'anthropic' },
    stream: false,
    verdict,
    reasons: verdict === 'fail' ? ['B→A: A received "<b2>" 2 times (duplicate delivery; said 1×)'] : [],
    startedAt: 1000,
    endedAt: 1400,
    turns: [
      { n: 1, from: 'B', to: 'A', content: 'b1', sentAt: 1000, receivedAt: 1012, latencyMs: 12, attempts: [200] },
      { n: 2, from: 'A', to: 'B', content: 'a1 & <tag>', sentAt: 1020, receivedAt: verdict === 'fail' ? null : 1100, latencyMs: verdict === 'fail' ? null : 80, attempts: [0, 200] },
    ],
    handshake: { sentAt: 990, answeredAt: 1012 },
    errors: [],
    counts: { attempts: 3, retries: 1, statuses: { '200': 2, 'reset (injected)': 1 }, injectedResets: 1, duplicates: 0, appRetries: 0 },
    notes: [],
    files: { A: 'x/sessions/s/A.jsonl', B: 'x/sessions/s/B.jsonl' },
    serverLog: verdict === 'fail' ? ['{"level":40,"msg":"FAULT_INJECTION=duplicate-delivery: <script>alert(1)</script>"}'] : [],
  };
}

const scenario = (name: string, sessions: SessionReport[]): ScenarioReport => ({
  name,
  summary: `what ${name} proves`,
  passCondition: 'exactly once, in order',
  verdict: sessions.every((s) => s.verdict === 'pass') ? 'pass' : 'fail',
  reasons: sessions.flatMap((s) => s.reasons),
  startedAt: 900,
  durationMs: 2500,
  settings: { concurrent: sessions.length, protocol: 'mixed' },
  stats: { sessions: sessions.length, sessionsPassed: sessions.filter((s) => s.verdict === 'pass').length, turns: 4, errors: 0, latency: summarize([12, 80]) },
  events: [{ t: 950, what: 'service killed with SIGKILL' }],
  sessions,
});

const run: RunReport = {
  tool: 'motive-proxy e2e',
  version: '0.1.0',
  ok: false,
  startedAt: '2026-01-01T00:00:00.000Z',
  durationMs: 5000,
  options: { seed: 7 },
  scenarios: [scenario('multi-turn', [session('s-0', 'pass'), session('s-1', 'fail')]), scenario('load', [session('s-2', 'pass')])],
};

describe('report.html', () => {
  const html = renderHtml(run);

  it('is self-contained: no script, no external resource, no URL', () => {
    expect(html).not.toMatch(/<script/i);
    expect(html).not.toMatch(/\bsrc=/i);
    expect(html).not.toMatch(/https?:\/\//i);
    expect(html).not.toMatch(/<link\b/i);
    expect(html).not.toMatch(/@import|url\(/i);
  });

  it('shows verdicts, reasons, the timeline and histogram as inline SVG, and escaped log lines of failed sessions', () => {
    expect(html).toContain('<span class="badge fail">FAIL</span> multi-turn');
    expect(html).toContain('<span class="badge pass">PASS</span> load');
    expect(html).toContain('A received &quot;&lt;b2&gt;&quot; 2 times');
    expect(html.match(/<svg /g)!.length).toBeGreaterThanOrEqual(4); // a histogram and a timeline per scenario
    expect(html).toContain('aria-label="session timeline"');
    expect(html).toContain('FAULT_INJECTION=duplicate-delivery: &lt;script&gt;');
    expect(html).toContain('never received'); // the lost message is marked on the timeline
    expect(html).toContain("A's handshake, held 22 ms until B spoke");
    expect(html).toContain('service killed with SIGKILL');
  });

  it('draws one histogram bar per log-spaced bucket', () => {
    expect(histogram([0.5, 3, 3, 40, 900]).map((b) => [b.le, b.count])).toEqual([
      [0.2, 0],
      [0.5, 1],
      [1, 0],
      [2, 0],
      [5, 2],
      [10, 0],
      [20, 0],
      [50, 1],
      [100, 0],
      [200, 0],
      [500, 0],
      [1000, 1],
    ]);
    expect(histogramSvg([]).includes('<svg')).toBe(false);
  });
});

describe('summary table', () => {
  it('lines up one row per scenario', () => {
    const table = summaryTable(run.scenarios).split('\n');
    expect(table[0]).toMatch(/^scenario\s+verdict\s+sessions\s+msgs\s+errors\s+p50 ms\s+p99 ms\s+max ms\s+time$/);
    expect(table[2]).toMatch(/^multi-turn\s+FAIL\s+1\/2\s+4\s+0\s+12\.0\s+80\.0\s+80\.0\s+2\.5s$/);
    expect(table[3]).toMatch(/^load\s+PASS\s+1\/1/);
  });
});
