/**
 * Live progress on the terminal (stderr): sessions done, messages received, errors, elapsed;
 * one line rewritten in place on a terminal, a line every few seconds otherwise. And the
 * summary table printed at the end (stdout).
 */
import { formatMs } from './stats.js';
import type { ScenarioReport } from './types.js';

export class Progress {
  private scenario = '';
  private sessions = 0;
  private done = 0;
  private received = 0;
  private errors = 0;
  private started = Date.now();
  private phase = '';
  private timer: NodeJS.Timeout | null = null;
  private lastPrinted = 0;
  private readonly tty: boolean;

  constructor(
    private readonly out: NodeJS.WritableStream & { isTTY?: boolean },
    private readonly quiet = false,
  ) {
    this.tty = out.isTTY === true;
  }

  begin(scenario: string, sessions: number): void {
    Object.assign(this, { scenario, sessions, done: 0, received: 0, errors: 0, started: Date.now(), phase: 'starting' });
    if (this.quiet) return;
    this.timer = setInterval(() => this.render(false), this.tty ? 200 : 1000);
    this.timer.unref();
    this.render(true);
  }

  setPhase(phase: string): void {
    this.phase = phase;
    this.render(!this.tty);
  }

  sessionDone(): void {
    this.done++;
  }

  delivery(): void {
    this.received++;
  }

  error(): void {
    this.errors++;
  }

  get deliveries(): number {
    return this.received;
  }

  line(): string {
    const elapsed = ((Date.now() - this.started) / 1000).toFixed(1);
    return `${this.scenario.padEnd(16)} ${this.phase.padEnd(10)} sessions ${this.done}/${this.sessions}  received ${this.received}  errors ${this.errors}  ${elapsed}s`;
  }

  private render(force: boolean): void {
    if (this.quiet) return;
    if (this.tty) {
      this.out.write(`\r\x1b[2K${this.line()}`);
      return;
    }
    if (force || Date.now() - this.lastPrinted >= 5000) {
      this.lastPrinted = Date.now();
      this.out.write(`${this.line()}\n`);
    }
  }

  end(report: ScenarioReport): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.quiet) return;
    const verdict = report.verdict === 'pass' ? 'PASS' : report.verdict === 'fail' ? 'FAIL' : 'NOT RUN';
    const text = `${report.name.padEnd(16)} ${verdict.padEnd(10)} sessions ${report.stats.sessionsPassed}/${report.stats.sessions} passed  received ${report.stats.turns}  errors ${report.stats.errors}  ${(report.durationMs / 1000).toFixed(1)}s`;
    this.out.write(this.tty ? `\r\x1b[2K${text}\n` : `${text}\n`);
    for (const reason of report.reasons.slice(0, 5)) this.out.write(`    ${reason}\n`);
    if (report.reasons.length > 5) this.out.write(`    … ${report.reasons.length - 5} more in the report\n`);
  }
}

/** The table printed when the run ends. */
export function summaryTable(scenarios: readonly ScenarioReport[]): string {
  const header = ['scenario', 'verdict', 'sessions', 'msgs', 'errors', 'p50 ms', 'p99 ms', 'max ms', 'time'];
  const rows = scenarios.map((s) => [
    s.name,
    s.verdict === 'pass' ? 'PASS' : s.verdict === 'fail' ? 'FAIL' : 'not run',
    `${s.stats.sessionsPassed}/${s.stats.sessions}`,
    String(s.stats.turns),
    String(s.stats.errors),
    s.stats.latency.count ? formatMs(s.stats.latency.p50) : '-',
    s.stats.latency.count ? formatMs(s.stats.latency.p99) : '-',
    s.stats.latency.count ? formatMs(s.stats.latency.max) : '-',
    `${(s.durationMs / 1000).toFixed(1)}s`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const numeric = new Set([2, 3, 4, 5, 6, 7, 8]);
  const format = (cells: string[]) => cells.map((c, i) => (numeric.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ');
  return [format(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(format)].join('\n');
}
