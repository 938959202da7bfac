/**
 * `motive-proxy e2e` as users run it: the built command starts the service and the client
 * processes itself, passes on a sound build, and fails, naming the scenario and the fault, on a
 * deliberately faulty one (FAULT_INJECTION). The full set of scenarios is run by hand
 * (`motive-proxy e2e --all`); this is the quick subset.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { RecordEvent } from '../../src/e2e/types.js';
import { useE2eProcesses } from './process.js';

const cli = fileURLToPath(new URL('../../dist/src/cli.js', import.meta.url));
const fixture = fileURLToPath(new URL('./fixtures/counting-agent.mjs', import.meta.url));

const e2e = useE2eProcesses();

const records = (out: string, scenario: string, session: string, side: 'A' | 'B'): RecordEvent[] =>
  readFileSync(join(out, scenario, 'sessions', session, `${side}.jsonl`), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as RecordEvent);

describe('motive-proxy e2e', () => {
  it('--help lists every scenario with what it proves; the service --help shows the fault-injection setting', async () => {
    const help = await e2e(['--help']);
    expect(help.code).toBe(0);
    for (const name of ['basic-handshake', 'multi-turn', 'streaming', 'cross-protocol', 'stateless', 'timeout-recovery', 'retry-storm', 'crash-recovery', 'load', 'agents']) {
      expect(help.stdout).toMatch(new RegExp(`^  ${name} +\\S.{20,}`, 'm'));
    }
    expect(help.stdout).toContain('--fault-injection');
    const bad = await e2e(['--scenario', 'nope']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("unknown scenario 'nope'");

    const service = spawn(process.execPath, [cli, '--help'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let text = '';
    service.stdout!.on('data', (d: Buffer) => (text += d.toString()));
    await once(service, 'close');
    expect(text).toMatch(/--fault-injection <value>\s+env FAULT_INJECTION\n\s+FOR TESTING ONLY.*\n\s+= off/);
    expect(text).toContain('motive-proxy e2e');
  });

  it('passes on the real service: separate client processes per side, a report with verdicts, timings and logs', { timeout: 90_000 }, async () => {
    const run = await e2e(['--scenario', 'basic-handshake,multi-turn', '--turns', '3', '--concurrent', '2', '--seed', '11']);
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^multi-turn\s+PASS\s+2\/2\s+12\s+0\s/m);
    expect(run.stdout).toMatch(/^basic-handshake\s+PASS\s+2\/2\s+4\s+0\s/m);
    expect(run.stdout).toContain('PASS in');
    const report = run.report!;
    expect(report.ok).toBe(true);
    const multi = report.scenarios.find((s) => s.name === 'multi-turn')!;
    expect(multi.verdict).toBe('pass');
    expect(multi.sessions).toHaveLength(2);
    for (const session of multi.sessions) {
      expect(session.turns).toHaveLength(6); // 3 a side
      expect(session.turns.every((t) => t.latencyMs !== null && t.latencyMs >= 0)).toBe(true);
      // Each side was its own OS process.
      const pidA = records(run.out, 'multi-turn', session.id, 'A').find((e) => e.ev === 'start');
      const pidB = records(run.out, 'multi-turn', session.id, 'B').find((e) => e.ev === 'start');
      expect(pidA && pidB && pidA.ev === 'start' && pidB.ev === 'start' && pidA.pid !== pidB.pid).toBe(true);
    }
    expect(multi.settings['processModel']).toBe('one OS process per side per session');
    // The two sessions ran at the same time.
    expect(multi.settings['peakConcurrentSessions']).toBe(2);
    expect(readFileSync(join(run.out, 'multi-turn', 'server.log'), 'utf8')).toContain('"msg":"session transition"');
    const html = readFileSync(join(run.out, 'report.html'), 'utf8');
    expect(html).toContain('aria-label="session timeline"');
    expect(html).not.toMatch(/<script|\b(src|href)\s*=\s*["']?https?:/i); // nothing to fetch
  });

  it('fails on a faulty build and names the scenario and the fault (duplicate-delivery and drop-delivery)', { timeout: 90_000 }, async () => {
    // Seed 56's message B2 carries double quotes, which a reason shows JSON-escaped (\"); the
    // other run's seed is random, so other texts are tried too (the report names the seed).
    const [duplicate, drop] = await Promise.all([
      e2e(['--scenario', 'multi-turn', '--turns', '3', '--concurrent', '1', '--quiet', '--seed', '56'], { FAULT_INJECTION: 'duplicate-delivery' }),
      e2e(['--scenario', 'multi-turn', '--turns', '3', '--concurrent', '1', '--quiet', '--fault-injection', 'drop-delivery']),
    ]);
    // A reason quotes a message as JSON, so any character of it may be escaped (\", \\, \n).
    for (const [run, ...faults] of [
      [duplicate, /A received "\[s0 B2\] (?:[^"\\]|\\.)*" 2 times \(duplicate delivery; said 1×\)/],
      [drop, /A got an empty reply \(delivery 2, to its message 2\)/, /message 2 "\[s0 B2\] (?:[^"\\]|\\.)*" never reached A \(lost/],
    ] as const) {
      expect(run.code, run.stdout + run.stderr).toBe(1);
      expect(run.stdout).toMatch(/^multi-turn\s+FAIL\s+0\/1/m);
      expect(run.stdout).toContain('FAIL: multi-turn');
      const scenario = run.report!.scenarios[0]!;
      expect(scenario.verdict).toBe('fail');
      // The relay fault comes first, before its effects on the clients (a 409 for the
      // corrupted history, the other side's session closed early).
      faults.forEach((fault, i) => expect(scenario.reasons[i], `seed ${String(run.report!.options['seed'])}`).toMatch(fault));
      // The service's own log lines of the failed session are in the report, fault included.
      expect(scenario.sessions[0]!.serverLog.some((l) => l.includes('FAULT_INJECTION='))).toBe(true);
      expect(scenario.events.some((e) => e.what.includes('the service reports: FAULT_INJECTION='))).toBe(true);
    }
  });

  it('plays an agent game with external agent programs on both sides (JSON and plain-text lines)', { timeout: 90_000 }, async () => {
    const run = await e2e(['--agent-cmd', `A=node ${fixture}`, `B=node ${fixture} --plain`, '--quiet'], { COUNT_TO: '6' });
    expect(run.code, run.stdout + run.stderr).toBe(0);
    const scenario = run.report!.scenarios[0]!;
    expect(scenario.name).toBe('agents');
    const session = scenario.sessions[0]!;
    expect(session.turns.map((t) => `${t.from}:${t.content}`)).toEqual(['B:count: 1', 'A:count: 2', 'B:count: 3', 'A:count: 4', 'B:count: 5', 'A:count: 6']);
    expect(session.notes).toContainEqual({ type: 'note', heard: 6, side: 'B' });
  });
});
