/**
 * Runs one scenario: starts the service (unless --url names one), starts the client runner
 * processes, lets every session begin at once, kills and restarts the service when the
 * scenario says so, then reads what the clients recorded and decides the verdict.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { createInterface } from 'node:readline';
import { OPTIONS } from '../config.js';
import { preflight, UNKNOWN_TIMERS } from './preflight.js';
import type { Progress } from './progress.js';
import { closed, RUNNER_PATH, signalGroup, spawnGroup } from './processes.js';
import type { ChosenOptions, RunFacts, Scenario, ScenarioOptions, SessionPlan, SessionView } from './scenarios.js';
import { ServiceProcess } from './service.js';
import { summarize } from './stats.js';
import type { ProgressLine, ProxyTimers, RunnerJob, ScenarioReport, SessionReport, Side, SideJob } from './types.js';
import { checkCompletion, checkDirection, checkEnding, eventsOf, parseRecord, turnsOf, type SideRecord } from './verify.js';

export interface RunSettings {
  /** An external service (--url); null: the harness runs its own. */
  readonly url: string | null;
  readonly outDir: string;
  /** Runner processes at most; sessions beyond share processes (one side per process). */
  readonly maxProcesses: number;
  readonly timeoutMs: number;
  /** The timers of the proxy at `url`, as its preflight found them; null for the harness's own. */
  readonly proxy: ProxyTimers | null;
  readonly faultInjection: string | null;
  readonly apiKey: string;
  readonly progress: Progress;
}

interface Runner {
  readonly child: ChildProcess;
  readonly label: string;
  ready: boolean;
}

const SERVER_LOG_LINES_PER_SESSION = 400;

/** The service's own settings, cleared of whatever the caller's environment says. */
function serviceEnvironment(scenarioEnv: Record<string, string>, options: ChosenOptions, fault: string | null): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) if (value !== undefined) env[key] = value;
  for (const option of Object.values(OPTIONS)) delete env[option.env];
  return {
    ...env,
    LOG_LEVEL: 'info',
    LOG_FORMAT: 'json',
    JOURNAL_PATH: 'memory',
    MAX_SESSIONS: String(Math.max(100, options.concurrent + 100)),
    ...(fault ? { FAULT_INJECTION: fault } : {}),
    ...scenarioEnv,
  };
}

/** The timers of the service the harness starts itself: its environment, else the defaults. */
function timersOfEnvironment(env: Record<string, string>): ProxyTimers {
  const value = (name: string): number | null => {
    const raw = env[name] ?? Object.values(OPTIONS).find((o) => o.env === name)?.default;
    const n = Number(raw);
    return raw === undefined || !Number.isFinite(n) ? null : n;
  };
  return {
    keepaliveIntervalSeconds: value('KEEPALIVE_INTERVAL_SECONDS'),
    handshakeTimeoutSeconds: value('HANDSHAKE_TIMEOUT_SECONDS'),
    turnTimeoutSeconds: value('TURN_TIMEOUT_SECONDS'),
    streamTurnTimeoutSeconds: value('STREAM_TURN_TIMEOUT_SECONDS'),
    source: 'harness',
  };
}

export async function runScenario(scenario: Scenario, chosen: ChosenOptions, settings: RunSettings): Promise<ScenarioReport> {
  const startedAt = Date.now();
  const dir = join(settings.outDir, scenario.name);
  rmSync(dir, { recursive: true, force: true });
  for (const sub of ['sessions', 'clients', 'jobs']) mkdirSync(join(dir, sub), { recursive: true });
  const events: Array<{ t: number; what: string }> = [];
  const note = (what: string) => events.push({ t: Date.now(), what });
  const progress = settings.progress;

  const serverEnv = serviceEnvironment(scenario.serverEnv(chosen, dir), chosen, settings.faultInjection);
  const options: ScenarioOptions = { ...chosen, proxy: settings.url ? (settings.proxy ?? UNKNOWN_TIMERS) : timersOfEnvironment(serverEnv) };
  const plans = scenario.plan(options);
  const shownEnv = Object.fromEntries(Object.entries(serverEnv).filter(([k]) => Object.values(OPTIONS).some((o) => o.env === k)));
  const pairs = Math.max(1, Math.min(plans.length, Math.floor(settings.maxProcesses / 2)));
  const perProcess = Math.ceil(plans.length / pairs);
  const chunks: SessionPlan[][] = [];
  for (let i = 0; i < plans.length; i += perProcess) chunks.push(plans.slice(i, i + perProcess));
  const baseSettings = {
    ...options,
    server: settings.url ?? 'started by the harness',
    serverEnv: settings.url ? null : shownEnv,
    runnerProcesses: chunks.length * 2,
    sessionsPerProcess: perProcess,
    processModel:
      perProcess === 1
        ? 'one OS process per side per session'
        : `${chunks.length} processes for side A and ${chunks.length} for side B, each driving ${perProcess} sessions' same side; A and B of a session are always different processes`,
    notes: scenario.notes?.(options) ?? [],
  };
  const notRun = (reason: string): ScenarioReport => ({
    name: scenario.name,
    summary: scenario.summary,
    passCondition: scenario.passCondition,
    verdict: 'not-run',
    reasons: [reason],
    startedAt,
    durationMs: Date.now() - startedAt,
    settings: baseSettings,
    stats: { sessions: 0, sessionsPassed: 0, turns: 0, errors: 0, latency: summarize([]) },
    events,
    sessions: [],
  });

  if (settings.url && scenario.needsOwnServer) {
    const report = notRun(`not run against --url: ${scenario.needsOwnServer}`);
    progress.end(report);
    return report;
  }
  progress.begin(scenario.name, plans.length);

  const serverLog = join(dir, 'server.log');
  let service: ServiceProcess | null = null;
  let url = settings.url;
  const runners: Runner[] = [];
  let facts: RunFacts = { crash: null, peakConcurrent: 0 };
  let failure: string | null = null;
  try {
    progress.setPhase('server');
    if (!url) {
      service = await ServiceProcess.start(serverEnv, serverLog);
      url = service.url;
      note(`service started at ${url} (pid ${service.pid})`);
    } else {
      // It answered before the run; it may have gone since (an earlier scenario, a restart).
      const checked = await preflight(url, settings.apiKey);
      if (!checked.ok) throw new Error(checked.reason);
    }

    // The runners: one side of `perProcess` sessions each.
    progress.setPhase('clients');
    const sideJob = (plan: SessionPlan, side: Side): SideJob => {
      const sessionDir = join(dir, 'sessions', plan.id);
      mkdirSync(sessionDir, { recursive: true });
      return { ...plan.sides[side], session: plan.id, side, recordPath: join(sessionDir, `${side}.jsonl`) };
    };
    const doneSides = new Map<string, number>();
    const expected = plans.reduce((n, p) => n + Math.max(0, (p.sides.A.script?.length ?? 1) - 1) + (p.sides.B.script?.length ?? 1), 0);
    let crash: Promise<void> | null = null;
    const onLine = (line: string, side: Side, chunk: number) => {
      let msg: ProgressLine;
      try {
        msg = JSON.parse(line) as ProgressLine;
      } catch {
        return;
      }
      if (msg.p === 'recv') {
        progress.delivery();
        if (scenario.crashAt !== undefined && service && !crash && progress.deliveries >= scenario.crashAt * expected) {
          crash = crashAndRestart(service, progress.deliveries, expected).catch((err: Error) => {
            failure = `the service could not be restarted after the kill: ${err.message}`;
            note(failure);
          });
        }
      } else if (msg.p === 'error') progress.error();
      else if (msg.p === 'done') {
        // A side that failed: its peer may still wait to see the session listed, in vain.
        if (!msg.ok) runners.find((r) => r.label === `${side === 'A' ? 'B' : 'A'}-${chunk}`)?.child.stdin?.write(`peer-failed ${msg.s}\n`);
        const n = (doneSides.get(msg.s) ?? 0) + 1;
        doneSides.set(msg.s, n);
        if (n === 2) progress.sessionDone();
      }
    };
    const crashAndRestart = async (svc: ServiceProcess, relayed: number, total: number): Promise<void> => {
      progress.setPhase('crash');
      await svc.kill();
      const killedAt = Date.now();
      note(`service killed with SIGKILL after ${relayed} of ${total} deliveries`);
      if (scenario.downtimeMs) await new Promise((r) => setTimeout(r, scenario.downtimeMs));
      await svc.launch();
      const restartedAt = Date.now();
      const health = await svc.health();
      const recovered = health?.journal?.recovery?.restored ?? null;
      note(`service restarted on the same port and journal in ${restartedAt - killedAt} ms (pid ${svc.pid}); recovery restored ${recovered ?? '?'} sessions`);
      facts = { ...facts, crash: { killedAt, restartedAt, recovered, relayedBeforeKill: relayed, expected: total } };
      progress.setPhase('running');
    };

    chunks.forEach((chunk, k) => {
      for (const side of ['A', 'B'] as const) {
        const label = `${side}-${k}`;
        const job: RunnerJob = { url: url!, side, label, apiKey: settings.apiKey, sides: chunk.map((plan) => sideJob(plan, side)) };
        const jobPath = join(dir, 'jobs', `${label}.json`);
        writeFileSync(jobPath, JSON.stringify(job, null, 2));
        const child = spawnGroup(process.execPath, [RUNNER_PATH, jobPath], { logPath: join(dir, 'clients', `${label}.log`), pipeStdout: true });
        child.stdin!.on('error', () => undefined);
        const runner: Runner = { child, label, ready: false };
        createInterface({ input: child.stdout! }).on('line', (line) => {
          if (line.startsWith('{"p":"ready"')) runner.ready = true;
          else onLine(line, side, k);
        });
        runners.push(runner);
      }
    });

    // Everyone loaded and connected, then every session starts at once.
    const readyBy = Date.now() + 120_000;
    while (!runners.every((r) => r.ready)) {
      const dead = runners.find((r) => r.child.exitCode !== null || r.child.signalCode !== null);
      if (dead) throw new Error(`runner ${dead.label} exited before it was ready (see ${join(dir, 'clients', `${dead.label}.log`)})`);
      if (Date.now() > readyBy) throw new Error('the client runners were not ready within 120 s');
      await new Promise((r) => setTimeout(r, 20));
    }
    progress.setPhase('running');
    note(`${runners.length} client processes started ${plans.length} sessions`);
    for (const r of runners) r.child.stdin!.write('go\n');

    const deadline = Date.now() + settings.timeoutMs;
    for (const r of runners) {
      const left = Math.max(1, deadline - Date.now());
      if (!(await closed(r.child, left))) {
        failure = `the scenario did not finish within ${Math.round(settings.timeoutMs / 1000)} s; its client processes were stopped`;
        note(failure);
        break;
      }
    }
    if (crash) await crash;
  } catch (err) {
    failure = (err as Error).message;
    note(`harness error: ${failure}`);
  } finally {
    for (const r of runners) {
      signalGroup(r.child, 'SIGKILL');
      await closed(r.child, 5000);
    }
    progress.setPhase('stopping');
    if (service) {
      await service.stop();
      note('service stopped');
    }
  }

  // ---- verdict ------------------------------------------------------------------------------
  const serverLines = existsSync(serverLog) ? readFileSync(serverLog, 'utf8').split('\n') : [];
  for (const line of serverLines) {
    if (!line.includes('FAULT_INJECTION=')) continue;
    try {
      const entry = JSON.parse(line) as { time?: number; session_id?: string; msg?: string };
      events.push({ t: entry.time ?? Date.now(), what: `the service reports: ${entry.msg} (session ${entry.session_id})` });
    } catch {
      events.push({ t: Date.now(), what: `the service reports: ${line.slice(0, 300)}` });
    }
  }
  events.sort((x, y) => x.t - y.t);
  const views: SessionView[] = [];
  const sessions: SessionReport[] = [];
  const allLatencies: number[] = [];
  let receivedTotal = 0;
  let errorTotal = 0;
  for (const plan of plans) {
    const read = (side: Side): SideRecord => {
      const path = join(dir, 'sessions', plan.id, `${side}.jsonl`);
      return parseRecord(side, existsSync(path) ? readFileSync(path, 'utf8') : '');
    };
    const a = read('A');
    const b = read('B');
    const ab = checkDirection(a, b);
    const ba = checkDirection(b, a);
    const view: SessionView = { plan, a, b, ab, ba };
    views.push(view);
    // What went wrong in the relay first (the cause), then what the clients saw (the effects).
    const reasons = [...ab.problems, ...ba.problems, ...(scenario.check?.(view, options) ?? [])];
    reasons.push(...checkEnding(a, b), ...checkEnding(b, a));
    const errorsInOrder = [
      { side: 'A' as const, t: eventsOf(a, 'error')[0]?.t ?? Infinity, problems: checkCompletion(a, 'A') },
      { side: 'B' as const, t: eventsOf(b, 'error')[0]?.t ?? Infinity, problems: checkCompletion(b, 'B') },
    ].sort((x, y) => x.t - y.t);
    for (const e of errorsInOrder) reasons.push(...e.problems);
    for (const [record, side] of [
      [a, 'A'],
      [b, 'B'],
    ] as const) {
      const script = plan.sides[side].script;
      const said = eventsOf(record, 'send').length;
      if (script && said < script.length) reasons.push(`side ${side} said only ${said} of its ${script.length} messages`);
    }
    const turns = turnsOf(a, b, ab, ba);
    for (const t of turns) if (t.latencyMs !== null) allLatencies.push(t.latencyMs);
    receivedTotal += eventsOf(a, 'recv').length + eventsOf(b, 'recv').length;
    const errors = [...eventsOf(a, 'error').map((e) => `A: ${e.message}`), ...eventsOf(b, 'error').map((e) => `B: ${e.message}`)];
    errorTotal += errors.length;
    const http = [...eventsOf(a, 'http'), ...eventsOf(b, 'http')];
    const statuses: Record<string, number> = {};
    for (const h of http) {
      const key = h.injected ? 'reset (injected)' : h.status === null ? 'no response' : String(h.status);
      statuses[key] = (statuses[key] ?? 0) + 1;
    }
    // From the session's first message (the start barrier has passed) to its last event.
    const times = [...a.events, ...b.events].filter((e) => e.ev !== 'start').map((e) => e.t);
    const verdict = reasons.length === 0 && failure === null ? 'pass' : 'fail';
    const sessionDir = join(dir, 'sessions', plan.id);
    sessions.push({
      id: plan.id,
      protocols: { A: describeSide(plan, 'A'), B: describeSide(plan, 'B') },
      stream: plan.sides.A.stream || plan.sides.B.stream,
      verdict,
      reasons: reasons.length === 0 && failure !== null ? [failure] : reasons,
      startedAt: times.length ? Math.min(...times) : startedAt,
      endedAt: times.length ? Math.max(...times) : startedAt,
      turns,
      handshake: handshakeOf(a),
      errors,
      counts: {
        attempts: http.length,
        retries: http.filter((h) => h.retryCount > 0).length,
        statuses,
        injectedResets: http.filter((h) => h.injected).length,
        duplicates: eventsOf(a, 'duplicate').length + eventsOf(b, 'duplicate').length,
        appRetries: eventsOf(a, 'app-retry').length + eventsOf(b, 'app-retry').length,
      },
      notes: [...eventsOf(a, 'note'), ...eventsOf(b, 'note')].map((n) => n.data),
      files: {
        A: relative(settings.outDir, join(sessionDir, 'A.jsonl')),
        B: relative(settings.outDir, join(sessionDir, 'B.jsonl')),
        ...(existsSync(serverLog) ? { server: relative(settings.outDir, serverLog) } : {}),
      },
      serverLog: verdict === 'fail' ? linesOfSession(serverLines, plan.id) : [],
    });
  }
  facts = { ...facts, peakConcurrent: peakOverlap(sessions) };
  const scenarioProblems = failure === null ? (scenario.checkAll?.(views, facts, options) ?? []) : [failure];
  const failed = sessions.filter((s) => s.verdict === 'fail');
  const reasons = [...scenarioProblems, ...failed.flatMap((s) => s.reasons.map((r) => `${s.id}: ${r}`))];
  const report: ScenarioReport = {
    name: scenario.name,
    summary: scenario.summary,
    passCondition: scenario.passCondition,
    verdict: reasons.length === 0 ? 'pass' : 'fail',
    reasons,
    startedAt,
    durationMs: Date.now() - startedAt,
    settings: { ...baseSettings, peakConcurrentSessions: facts.peakConcurrent, crash: facts.crash },
    skippedChecks: scenario.skippedChecks?.(options) ?? [],
    observations: failure === null ? (scenario.observe?.(views, options) ?? []) : [],
    stats: { sessions: sessions.length, sessionsPassed: sessions.length - failed.length, turns: receivedTotal, errors: errorTotal, latency: summarize(allLatencies) },
    events,
    sessions,
  };
  progress.end(report);
  return report;
}

function handshakeOf(a: SideRecord): SessionReport['handshake'] {
  const sent = eventsOf(a, 'send').find((e) => e.handshake);
  if (!sent) return null;
  return { sentAt: sent.t, answeredAt: eventsOf(a, 'recv').find((e) => e.i === sent.i)?.t ?? null };
}

function describeSide(plan: SessionPlan, side: Side): string {
  const s = plan.sides[side];
  return s.agent ? `${s.protocol} + agent: ${s.agent.label}` : s.protocol;
}

/** The service's JSON log lines that name this session. */
function linesOfSession(lines: readonly string[], id: string): string[] {
  const needle = `"session_id":${JSON.stringify(id)}`;
  const picked = lines.filter((l) => l.includes(needle));
  return picked.length > SERVER_LOG_LINES_PER_SESSION ? [...picked.slice(0, 50), `… ${picked.length - SERVER_LOG_LINES_PER_SESSION} lines left out …`, ...picked.slice(-(SERVER_LOG_LINES_PER_SESSION - 50))] : picked;
}

/** Most sessions whose [start, end] intervals overlap at one moment. */
export function peakOverlap(sessions: ReadonlyArray<{ startedAt: number; endedAt: number }>): number {
  const points = sessions.flatMap((s) => [
    { t: s.startedAt, d: 1 },
    { t: s.endedAt, d: -1 },
  ]);
  points.sort((x, y) => x.t - y.t || y.d - x.d);
  let live = 0;
  let peak = 0;
  for (const p of points) {
    live += p.d;
    peak = Math.max(peak, live);
  }
  return peak;
}
