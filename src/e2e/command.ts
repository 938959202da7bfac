/**
 * `motive-proxy e2e`: runs real client processes (the official SDKs, curl-style HTTP,
 * WebSocket, agent programs) through a real service, concurrently, checks each scenario's pass
 * condition from what the clients recorded, and writes report.json and report.html.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseCommandLine, UsageError, type OptionSpec } from '../args.js';
import { runScenario } from './orchestrator.js';
import { preflight } from './preflight.js';
import { killAll } from './processes.js';
import { Progress, summaryTable } from './progress.js';
import { writeReports } from './report.js';
import { effectiveOptions, SCENARIOS, scenarioByName, type Scenario } from './scenarios.js';
import type { ProtocolChoice, ProxyTimers, RunReport, ScenarioReport, Side } from './types.js';

export const E2E_USAGE = 'motive-proxy e2e [--scenario NAME ...|--all] [--turns N] [--concurrent C] [--protocol P] [--stream] [--url URL] [--output DIR] [--seed S]';

const PROTOCOLS: readonly ProtocolChoice[] = ['openai', 'anthropic', 'responses', 'mixed'];
const FAULTS = ['duplicate-delivery', 'drop-delivery'] as const;

export function e2eHelp(): string {
  const width = Math.max(...SCENARIOS.map((s) => s.name.length));
  const scenarios = SCENARIOS.map((s) => {
    const defaults = s.fixedTurns !== undefined ? `C=${s.defaults.concurrent}` : `C=${s.defaults.concurrent}, N=${s.defaults.turns}`;
    return `  ${s.name.padEnd(width)}  ${s.summary} [${defaults}]`;
  }).join('\n');
  return `Usage: ${E2E_USAGE}
       [--agent-cmd A=CMD [B=CMD]] [--max-processes N] [--timeout SECONDS] [--api-key KEY]
       [--fault-injection duplicate-delivery|drop-delivery] [--quiet]

Runs real clients through a real MotiveProxy: for every session, side A and side B are
separate OS processes using the official SDK of the chosen protocol (with its default
retries) and talking to the service only over HTTP/WebSocket; sessions run concurrently.
Every scenario has a pass condition checked from what the clients recorded. Exit code 0
only when every scenario passed (1: a scenario failed, 2: bad usage).

Scenarios (C = concurrent sessions, N = messages per side, by default):
${scenarios}

Options:
  --scenario NAME ...   run these scenarios (repeat, or separate with commas); default: all
  --all                 run every scenario
  --turns N             messages each side says (agents: at most, a side)
  --concurrent C        sessions at the same time
  --protocol P          openai (Chat Completions, default), anthropic (Messages), responses
                        (OpenAI Responses), or mixed (each session pairs two different SDKs)
  --stream              streaming requests (stream: true) on the SDK sides
  --url URL             test a service that is already running instead of starting one
                        (scenarios that must restart it or change its timeouts are not run);
                        it is asked for GET /health and GET /v1/models first, and a service
                        that does not answer them properly is refused within seconds
  --keepalive-interval SECONDS
                        with --url: the proxy's KEEPALIVE_INTERVAL_SECONDS, for a proxy that
                        does not report it on GET /health (the streaming scenario judges
                        keep-alives by it); it wins over what /health says
  --output DIR          where reports and logs go (default ./e2e-results/<time>)
  --seed S              seed of the messages, agents and injected failures (default: random)
  --agent-cmd A=CMD B=CMD
                        the agents scenario with your own program for side A and/or B: it
                        reads and writes JSON lines (docs/e2e.md), e.g. to put an LLM behind it
  --max-processes N     client processes at most (default 16); with more sessions than N/2,
                        each process drives several sessions' same side (A and B of a session
                        are always different processes)
  --timeout SECONDS     give up on a scenario after this long (default 300; agents with
                        --agent-cmd: 3600)
  --api-key KEY         API key the clients send (when the service is configured with keys)
  --fault-injection F   FOR TESTING THIS HARNESS ONLY: start the service with
                        FAULT_INJECTION=F (duplicate-delivery: one message is delivered twice;
                        drop-delivery: one is dropped), to see the scenarios that catch it fail.
                        Also taken from the FAULT_INJECTION environment variable. Off by default.
  --quiet               no live progress, only the summary
  -h, --help            show this help

Reports: DIR/report.json, DIR/report.html (self-contained); logs: DIR/<scenario>/server.log,
DIR/<scenario>/clients/*.log, DIR/<scenario>/sessions/<id>/{A,B}.jsonl.
`;
}

export interface E2eArgs {
  scenarios: Scenario[];
  turns?: number;
  concurrent?: number;
  protocol: ProtocolChoice;
  stream: boolean;
  url: string | null;
  output: string;
  seed: number;
  agentCommands: Partial<Record<Side, string>>;
  maxProcesses: number;
  timeoutSeconds: number | null;
  /** --keepalive-interval: the external proxy's keep-alive interval, as the user states it. */
  keepaliveIntervalSeconds: number | null;
  apiKey: string;
  faultInjection: string | null;
  quiet: boolean;
  help: boolean;
}

export { UsageError };

/** The options of `motive-proxy e2e`, for the shared parser (src/args.ts). */
const E2E_OPTIONS: Record<string, OptionSpec> = {
  help: { type: 'boolean', short: 'h' },
  all: { type: 'boolean' },
  scenario: { type: 'string', multiple: true },
  scenarios: { type: 'string', multiple: true },
  turns: { type: 'string' },
  concurrent: { type: 'string' },
  protocol: { type: 'string' },
  stream: { type: 'string' },
  url: { type: 'string' },
  output: { type: 'string' },
  seed: { type: 'string' },
  'agent-cmd': { type: 'string', multiple: true },
  'max-processes': { type: 'string' },
  timeout: { type: 'string' },
  'keepalive-interval': { type: 'string' },
  'api-key': { type: 'string' },
  'fault-injection': { type: 'string' },
  quiet: { type: 'boolean' },
};

const positiveNumber = (flag: string, value: string | undefined): number => {
  const n = Number(value);
  if (value === undefined || value.trim() === '' || !Number.isFinite(n) || n <= 0) throw new UsageError(`${flag} needs a number of seconds above 0 (got ${value === undefined ? 'nothing' : `'${value}'`})`);
  return n;
};

const positiveInt = (flag: string, value: string | undefined): number => {
  const n = Number(value);
  if (value === undefined || !Number.isInteger(n) || n < 1) throw new UsageError(`${flag} needs a whole number of 1 or more (got ${value === undefined ? 'nothing' : `'${value}'`})`);
  return n;
};

export function parseE2eArgs(argv: readonly string[], env: NodeJS.ProcessEnv): E2eArgs {
  const names: string[] = [];
  let all = false;
  const args: E2eArgs = {
    scenarios: [],
    protocol: 'openai',
    stream: false,
    url: null,
    output: '',
    // From 1: --seed takes only what it prints, and it takes no 0.
    seed: 1 + Math.floor(Math.random() * 999_999),
    agentCommands: {},
    maxProcesses: 16,
    timeoutSeconds: null,
    keepaliveIntervalSeconds: null,
    apiKey: 'e2e-harness',
    faultInjection: null,
    quiet: false,
    help: false,
  };
  const envFault = env['FAULT_INJECTION'];
  if (envFault && envFault !== 'off') args.faultInjection = envFault;
  const line = parseCommandLine(argv, E2E_OPTIONS, { switches: ['stream'], allowPositionals: true });
  const v = line.values;
  const str = (name: string): string | undefined => v[name] as string | undefined;
  const list = (name: string): string[] => (v[name] as string[] | undefined) ?? [];
  args.help = v['help'] === true;
  all = v['all'] === true;
  args.quiet = v['quiet'] === true;
  // `--scenario a b c` and `--agent-cmd A=x B=y`: the arguments that follow those two options.
  const scenarioNames = [...list('scenario'), ...list('scenarios')];
  const agentSpecs = list('agent-cmd');
  for (const { value, option } of line.after) {
    if (option === '--scenario' || option === '--scenarios') scenarioNames.push(value);
    else if (option === '--agent-cmd') agentSpecs.push(value);
    else throw new UsageError(`unexpected argument '${value}' (see motive-proxy e2e --help)`);
  }
  for (const name of scenarioNames) names.push(...name.split(','));
  for (const spec of agentSpecs) {
    const m = /^([AB])=(.+)$/s.exec(spec);
    if (!m) throw new UsageError(`--agent-cmd takes A=COMMAND and/or B=COMMAND (got '${spec}')`);
    args.agentCommands[m[1] as Side] = m[2]!;
  }
  if (str('turns') !== undefined) args.turns = positiveInt('--turns', str('turns'));
  if (str('concurrent') !== undefined) args.concurrent = positiveInt('--concurrent', str('concurrent'));
  const protocol = str('protocol');
  if (protocol !== undefined) {
    if (!PROTOCOLS.includes(protocol as ProtocolChoice)) throw new UsageError(`--protocol must be one of ${PROTOCOLS.join(', ')} (got '${protocol}')`);
    args.protocol = protocol as ProtocolChoice;
  }
  const stream = str('stream');
  if (stream !== undefined) args.stream = !['false', '0', 'no', 'off'].includes(stream);
  const url = str('url');
  if (url !== undefined) {
    const u = url.replace(/\/+$/, '').replace(/\/v1$/, '');
    if (!/^https?:\/\/[^/]+/.test(u)) throw new UsageError(`--url must be an http(s) URL such as http://127.0.0.1:8000 (got '${u}')`);
    args.url = u;
  }
  if (str('output') !== undefined) args.output = str('output')!;
  if (str('seed') !== undefined) args.seed = positiveInt('--seed', str('seed'));
  if (str('max-processes') !== undefined) args.maxProcesses = Math.max(2, positiveInt('--max-processes', str('max-processes')));
  if (str('timeout') !== undefined) args.timeoutSeconds = positiveInt('--timeout', str('timeout'));
  if (str('keepalive-interval') !== undefined) args.keepaliveIntervalSeconds = positiveNumber('--keepalive-interval', str('keepalive-interval'));
  if (str('api-key') !== undefined) args.apiKey = str('api-key')!;
  const fault = str('fault-injection');
  if (fault !== undefined) args.faultInjection = fault === 'off' ? null : fault;
  if (args.faultInjection !== null && !(FAULTS as readonly string[]).includes(args.faultInjection)) {
    throw new UsageError(`--fault-injection / FAULT_INJECTION must be one of ${FAULTS.join(', ')} or off (got '${args.faultInjection}')`);
  }
  if (args.faultInjection && args.url) throw new UsageError('--fault-injection needs the harness to start the service itself; it cannot be used with --url');
  if (args.keepaliveIntervalSeconds !== null && !args.url) {
    throw new UsageError('--keepalive-interval describes a proxy you run (--url); the service the harness starts itself has the interval each scenario sets');
  }
  for (const name of names.filter(Boolean)) {
    const scenario = scenarioByName(name);
    if (!scenario) throw new UsageError(`unknown scenario '${name}'; the scenarios are: ${SCENARIOS.map((s) => s.name).join(', ')}`);
    if (!args.scenarios.includes(scenario)) args.scenarios.push(scenario);
  }
  const hasAgents = Object.keys(args.agentCommands).length > 0;
  if (all || args.scenarios.length === 0) {
    args.scenarios = all || !hasAgents ? [...SCENARIOS] : [scenarioByName('agents')!];
  }
  if (args.url && !all && names.length > 0) {
    const refused = args.scenarios.filter((s) => s.needsOwnServer);
    if (refused.length > 0) throw new UsageError(`${refused.map((s) => `${s.name} cannot run with --url: ${s.needsOwnServer}`).join('; ')}`);
  }
  if (hasAgents && !args.scenarios.some((s) => s.name === 'agents')) throw new UsageError('--agent-cmd applies to the agents scenario; add --scenario agents');
  if (!args.output) args.output = `e2e-results/${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}`;
  return args;
}

/** --keepalive-interval wins over what the proxy reports (and the report says so when they differ). */
function withFlag(found: ProxyTimers, flag: number | null, notes: string[]): ProxyTimers {
  if (flag === null) return found;
  if (found.keepaliveIntervalSeconds !== null && found.keepaliveIntervalSeconds !== flag) {
    notes.push(`--keepalive-interval ${flag} is used, although the proxy reports KEEPALIVE_INTERVAL_SECONDS=${found.keepaliveIntervalSeconds}`);
  }
  return { ...found, keepaliveIntervalSeconds: flag, source: 'flag' };
}

export async function e2eCommand(argv: readonly string[], env: NodeJS.ProcessEnv, version: string): Promise<number> {
  let args: E2eArgs;
  try {
    args = parseE2eArgs(argv, env);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`motive-proxy e2e: ${err.message}\n`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(e2eHelp());
    return 0;
  }
  // A proxy the user runs: refuse a plainly broken one at once, and learn its timers.
  let proxy: ProxyTimers | null = null;
  const preflightNotes: string[] = [];
  if (args.url) {
    const checked = await preflight(args.url, args.apiKey);
    if (!checked.ok) {
      process.stderr.write(`motive-proxy e2e: ${checked.reason}\n`);
      return 1;
    }
    preflightNotes.push(...checked.notes);
    proxy = withFlag(checked.timers, args.keepaliveIntervalSeconds, preflightNotes);
    for (const line of preflightNotes) process.stderr.write(`motive-proxy e2e: ${line}\n`);
  }
  const outDir = resolve(args.output);
  mkdirSync(outDir, { recursive: true });
  const onSignal = () => {
    killAll();
    process.stderr.write('\nmotive-proxy e2e: interrupted; every process it started was stopped\n');
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.once('exit', killAll);

  const started = Date.now();
  const runId = randomBytes(3).toString('hex');
  const progress = new Progress(process.stderr, args.quiet);
  const options = {
    scenarios: args.scenarios.map((s) => s.name),
    turns: args.turns ?? null,
    concurrent: args.concurrent ?? null,
    protocol: args.protocol,
    stream: args.stream,
    url: args.url,
    proxyTimers: proxy,
    preflight: preflightNotes.length ? preflightNotes : null,
    seed: args.seed,
    agentCommands: Object.keys(args.agentCommands).length ? args.agentCommands : null,
    faultInjection: args.faultInjection,
    maxProcesses: args.maxProcesses,
    output: args.output,
  };
  if (!args.quiet) {
    process.stderr.write(
      `motive-proxy e2e: ${args.scenarios.length} scenario(s), seed ${args.seed}, output ${outDir}${args.faultInjection ? `\n  FAULT_INJECTION=${args.faultInjection}: the service will deliberately corrupt one delivery (testing the harness)` : ''}\n`,
    );
  }
  const reports: ScenarioReport[] = [];
  let paths = { json: '', html: '' };
  const write = () => {
    const report: RunReport = {
      tool: 'motive-proxy e2e',
      version,
      ok: reports.length > 0 && reports.every((r) => r.verdict !== 'fail') && reports.some((r) => r.verdict === 'pass'),
      startedAt: new Date(started).toISOString(),
      durationMs: Date.now() - started,
      options,
      scenarios: reports,
    };
    paths = writeReports(report, outDir);
    return report;
  };
  for (const scenario of args.scenarios) {
    const scenarioOptions = effectiveOptions(scenario, {
      ...(args.turns !== undefined ? { turns: args.turns } : {}),
      ...(args.concurrent !== undefined ? { concurrent: args.concurrent } : {}),
      protocol: args.protocol,
      stream: args.stream,
      seed: args.seed,
      runId,
      agentCommands: args.agentCommands,
    });
    const external = scenario.name === 'agents' && Object.keys(args.agentCommands).length > 0;
    const timeoutMs = (args.timeoutSeconds ?? (external ? 3600 : 300)) * 1000;
    reports.push(
      await runScenario(scenario, scenarioOptions, {
        url: args.url,
        outDir,
        maxProcesses: args.maxProcesses,
        timeoutMs,
        proxy,
        faultInjection: args.faultInjection,
        apiKey: args.apiKey,
        progress,
      }),
    );
    write();
  }
  const report = write();
  process.stdout.write(`\n${summaryTable(reports)}\n\n`);
  const failed = reports.filter((r) => r.verdict === 'fail').map((r) => r.name);
  for (const r of reports.filter((x) => x.verdict === 'not-run')) process.stdout.write(`${r.name}: ${r.reasons[0]}\n`);
  for (const r of reports) {
    for (const skipped of r.skippedChecks ?? []) process.stdout.write(`${r.name}: not checked: ${skipped}\n`);
    for (const seen of r.observations ?? []) process.stdout.write(`${r.name}: seen: ${seen}\n`);
  }
  process.stdout.write(`${report.ok ? 'PASS' : `FAIL: ${failed.join(', ') || 'nothing passed'}`} in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  process.stdout.write(`report: ${paths.html}\n        ${paths.json}\n`);
  process.removeListener('SIGINT', onSignal);
  process.removeListener('SIGTERM', onSignal);
  return report.ok ? 0 : 1;
}
