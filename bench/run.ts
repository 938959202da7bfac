/**
 * `npm run bench`: measures the proxy beside a raw node:http baseline relay in the same run,
 * each served by its own process and driven by a load generator in another process, and
 * reports every headline figure as a ratio to the baseline.
 *
 *   npm run bench                 the default run (under 5 minutes on 2 cores)
 *   npm run bench -- --quick      fewer turns and sessions (under 1 minute)
 *   npm run bench -- --smoke      a few seconds; proves the benchmark works (used by npm test)
 *   --out DIR                     where results go (default bench/results; smoke: a temp dir)
 *   --no-docs                     do not rewrite the table in docs/performance.md
 *   --cluster                     only the cluster cases (about a minute; the table is printed, the docs are left alone)
 *   --no-cluster                  leave out the cluster cases (S=100 through 1 and 2 instances
 *                                 on a private redis-server beside the single-process proxy,
 *                                 and takeover time after SIGKILL)
 *   --profile                     only the S=100 JSON relay, with the baseline, the proxy and the proxy
 *                                 with tracing on under --cpu-prof; the profiles go to the results folder
 *   --floors                      what the proxy's parts cost on their own: the S=100 JSON relay
 *                                 on the baseline, on a plain Fastify route (bench/fastify-relay.mjs)
 *                                 and on the proxy, interleaved 3 times, and the session layer
 *                                 alone in a loop (bench/session-loop.ts); about a minute
 *   --proxy-flags "FLAGS"         Node or V8 flags for the proxy's process only (the baseline and the
 *                                 load generator run as always), e.g. "--max-semi-space-size=8";
 *                                 the results record them and the docs are left alone
 *   --sweep-flags "A,B,…"         compares the proxy under each set of flags (comma-separated; each
 *                                 set space-separated) and under none, interleaved round by round
 *                                 (5 rounds; --quick 2): the S=100 JSON relay's CPU a turn against the
 *                                 baseline's in the same round, 10,000 paired sessions held (RSS), and
 *                                 the S=1 relay's p99; medians, as a table and a -flag-sweep.json
 */
import { fork, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeTraceExport } from '../test/helpers/otlp-protobuf.js';
import { writeJournalFixture } from './journal-fixture.js';
import type { HeldJob, HeldResult, Job, RelayJob, RelayResult } from './loadgen.js';

type Mode = 'default' | 'quick' | 'smoke';
type Target = 'baseline' | 'proxy' | 'framework';

const root = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
if (args.includes('--help') || args.includes('-h')) {
  process.stdout.write(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0]!.replace('/**', '').replace(/^ \* ?/gm, '') + '\n');
  process.exit(0);
}
const mode: Mode = args.includes('--smoke') ? 'smoke' : args.includes('--quick') ? 'quick' : 'default';
const outIndex = args.indexOf('--out');
const outDir = outIndex >= 0 ? args[outIndex + 1]! : mode === 'smoke' ? mkdtempSync(join(tmpdir(), 'motive-bench-')) : join(root, 'bench/results');
const profile = args.includes('--profile');
const floors = args.includes('--floors');
const proxyFlagsIndex = args.indexOf('--proxy-flags');
let proxyFlags = proxyFlagsIndex >= 0 ? (args[proxyFlagsIndex + 1] ?? '').split(/\s+/).filter(Boolean) : [];
if (proxyFlagsIndex >= 0 && proxyFlags.length === 0) {
  process.stderr.write('--proxy-flags needs the flags as one argument, e.g. --proxy-flags "--max-semi-space-size=8"\n');
  process.exit(2);
}
const sweepIndex = args.indexOf('--sweep-flags');
const sweep: string[][] | null = sweepIndex >= 0 ? (args[sweepIndex + 1] ?? '').split(',').map((set) => set.split(/\s+/).filter(Boolean)).filter((set) => set.length > 0) : null;
if (sweep !== null && (sweep.length === 0 || proxyFlagsIndex >= 0)) {
  process.stderr.write('--sweep-flags needs the flag sets as one argument, e.g. --sweep-flags "--max-semi-space-size=8,--max-semi-space-size=32", and does not go with --proxy-flags\n');
  process.exit(2);
}
// The table in the docs describes the service as it ships.
const writeDocs = mode !== 'smoke' && !profile && !floors && sweep === null && proxyFlags.length === 0 && !args.includes('--no-docs');

const PLAN = {
  default: {
    relay: [1, 10, 100, 1000],
    turns: { 1: 4000, 10: 10000, 100: 20000, 1000: 20000 } as Record<number, number>,
    openLoopSeconds: 8,
    openLoopStreams: [false, true],
    held: [1000, 10000],
    heldPaired: [false, true],
    journalTurns: 20000,
    replayEvents: 100000,
    /** Rounds of the headline case (S=100 JSON: baseline, proxy, proxy traced, interleaved); medians are reported. */
    headlineRounds: 3,
  },
  quick: {
    relay: [1, 10, 100, 1000],
    turns: { 1: 800, 10: 2000, 100: 4000, 1000: 4000 } as Record<number, number>,
    openLoopSeconds: 2,
    openLoopStreams: [false, true],
    held: [1000],
    heldPaired: [false, true],
    journalTurns: 4000,
    replayEvents: 20000,
    headlineRounds: 1,
  },
  smoke: {
    relay: [10],
    turns: { 10: 200 } as Record<number, number>,
    openLoopSeconds: 0.5,
    openLoopStreams: [false],
    held: [50],
    heldPaired: [false],
    journalTurns: 200,
    replayEvents: 2000,
    headlineRounds: 1,
  },
}[mode];
const TURNS_PER_SESSION = 20;
const MESSAGE_BYTES = 200;

const started = Date.now();
const log = (line: string) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s] ${line}\n`);

async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  server.close();
  return port;
}

interface Server {
  readonly target: Target;
  readonly url: string;
  readonly process: ChildProcess;
}

/** The proxy runs without a journal (JOURNAL_PATH=memory) unless a case says otherwise. */
async function startServer(target: Target, env: Record<string, string> = {}): Promise<Server> {
  const port = await freePort();
  const profileName = env['OTEL_EXPORTER_OTLP_ENDPOINT'] ? 'proxy-traced' : target;
  const [command, argv] =
    target === 'framework'
      ? [process.execPath, [join(root, 'bench/fastify-relay.mjs'), String(port)]]
      : target === 'baseline'
      ? [process.execPath, [...(profile ? ['--cpu-prof', `--cpu-prof-dir=${outDir}`, `--cpu-prof-name=${profileName}.cpuprofile`] : []), join(root, 'bench/baseline-relay.mjs'), String(port)]]
      : [process.execPath, [...proxyFlags, ...(profile ? ['--cpu-prof', `--cpu-prof-dir=${outDir}`, `--cpu-prof-name=${profileName}.cpuprofile`] : []), join(root, 'dist/src/cli.js'), '--port', String(port)]];
  const child = spawn(command, argv, {
    cwd: root,
    detached: true, // its own process group, stopped as a whole
    stdio: ['ignore', 'ignore', 'inherit'],
    env: {
      ...process.env,
      LOG_LEVEL: 'warn',
      LOG_FORMAT: 'json',
      HANDSHAKE_TIMEOUT_SECONDS: '600',
      TURN_TIMEOUT_SECONDS: '600',
      MAX_SESSIONS: '100000',
      MAX_MESSAGE_BYTES: String(8 * 1024 * 1024),
      JOURNAL_PATH: 'memory',
      // The relay's own cost is measured: no load shedding (the baseline has none either).
      MAX_EVENT_LOOP_DELAY_MS: '0',
      ...env,
    },
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 1200; i++) {
    try {
      if ((await fetch(`${url}/health`)).ok) return { target, url, process: child };
    } catch {
      // not yet listening
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${target} did not start`);
}

async function stopServer(server: Server): Promise<void> {
  try {
    // Under --profile the proxy must exit on its own for the profile to be written.
    process.kill(-server.process.pid!, profile ? 'SIGINT' : 'SIGKILL');
  } catch {
    // already gone
  }
  if (server.process.exitCode === null && server.process.signalCode === null) await once(server.process, 'exit');
}

/** CPU time (µs) and memory (KB) of a process, from /proc. */
function usage(pid: number): { cpuMicros: number; rssKb: number; peakRssKb: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]); // utime + stime
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
  return { cpuMicros: (ticks * 1_000_000) / clockTicks, rssKb: kb('VmRSS'), peakRssKb: kb('VmHWM') };
}
const clockTicks = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** Runs a job in a fresh load-generator process; `onSetupDone` runs before the measured part. */
function drive<T>(job: Job, onSetupDone: () => void = () => {}): Promise<{ result: T; loadgen: ChildProcess }> {
  const loadgen = fork(join(root, 'bench/loadgen.ts'), [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  return new Promise((resolve, reject) => {
    loadgen.on('message', (msg: { ok?: boolean; setupDone?: boolean; result?: T; error?: string }) => {
      if (msg.setupDone) {
        onSetupDone();
        loadgen.send({ go: true });
      } else if (msg.ok) resolve({ result: msg.result as T, loadgen });
      else reject(new Error(msg.error));
    });
    loadgen.once('exit', (code) => reject(new Error(`load generator exited with ${code}`)));
    loadgen.send(job);
  });
}

interface RelayCase {
  workload: 'relay' | 'open-loop' | 'journal-always' | 'journal-batch' | 'journal-off' | 'tracing-on';
  target: Target;
  sessions: number;
  stream: boolean;
  offeredRate: number | null;
  result: RelayResult;
  serverCpuMicrosPerTurn: number;
  serverPeakRssMb: number;
  /** Headline case: every round's figures; the case itself is the median round by throughput. */
  rounds?: Array<{ turnsPerSecond: number; serverCpuMicrosPerTurn: number }>;
}

/** The round with the median throughput, carrying every round's figures. */
function median(rounds: RelayCase[]): RelayCase {
  const sorted = [...rounds].sort((a, b) => a.result.turnsPerSecond - b.result.turnsPerSecond);
  const mid = sorted[Math.floor((sorted.length - 1) / 2)]!;
  return { ...mid, rounds: rounds.map((c) => ({ turnsPerSecond: c.result.turnsPerSecond, serverCpuMicrosPerTurn: c.serverCpuMicrosPerTurn })) };
}

interface HeldCase {
  workload: 'held';
  target: Target;
  sessions: number;
  paired: boolean;
  rssIdleMb: number;
  rssHeldMb: number;
  bytesPerSession: number;
  errors: Record<string, number>;
}

async function relayCase(
  target: Target,
  sessions: number,
  stream: boolean,
  totalTurns: number,
  rate?: number,
  fsync?: 'always' | 'batch' | 'off',
  otlpUrl?: string,
): Promise<RelayCase> {
  const journalDir = fsync ? mkdtempSync(join(tmpdir(), 'motive-bench-journal-')) : null;
  const env: Record<string, string> = journalDir ? { JOURNAL_PATH: journalDir, JOURNAL_FSYNC: fsync! } : {};
  if (otlpUrl) Object.assign(env, { OTEL_EXPORTER_OTLP_ENDPOINT: otlpUrl, OTEL_BSP_SCHEDULE_DELAY: '200' });
  const server = await startServer(target, env);
  try {
    const job: RelayJob = {
      kind: 'relay',
      url: server.url,
      sessions,
      turnsPerSession: TURNS_PER_SESSION,
      totalTurns,
      stream,
      messageBytes: MESSAGE_BYTES,
      prefix: `bench-${sessions}`,
      ...(rate ? { rate } : {}),
    };
    // Setup (every session's handshake) is outside the measured window.
    let before = usage(server.process.pid!);
    const { result, loadgen } = await drive<RelayResult>(job, () => (before = usage(server.process.pid!)));
    const after = usage(server.process.pid!);
    loadgen.kill();
    return {
      workload: otlpUrl ? 'tracing-on' : fsync ? `journal-${fsync}` : rate ? 'open-loop' : 'relay',
      target,
      sessions,
      stream,
      offeredRate: rate ?? null,
      result,
      serverCpuMicrosPerTurn: (after.cpuMicros - before.cpuMicros) / Math.max(1, result.turns),
      serverPeakRssMb: after.peakRssKb / 1024,
    };
  } finally {
    await stopServer(server);
    if (journalDir) rmSync(journalDir, { recursive: true, force: true });
  }
}

interface ReplayCase {
  events: number;
  sessions: number;
  restored: number;
  /** From spawn to the first answered /health. */
  startMs: number;
  /** Recovery itself (read, replay, compaction), as the service reports it. */
  recoveryMs: number;
}

async function replayCase(events: number): Promise<ReplayCase> {
  const dir = mkdtempSync(join(tmpdir(), 'motive-bench-replay-'));
  try {
    const { sessions } = writeJournalFixture(dir, events);
    const t0 = Date.now();
    const server = await startServer('proxy', { JOURNAL_PATH: dir });
    const startMs = Date.now() - t0;
    try {
      const health = (await (await fetch(`${server.url}/health`)).json()) as { journal: { recovery: { restored: number; ms: number } } };
      return { events, sessions, restored: health.journal.recovery.restored, startMs, recoveryMs: health.journal.recovery.ms };
    } finally {
      await stopServer(server);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * A minimal OTLP/HTTP receiver: accepts trace exports (protobuf, the default, or JSON) and
 * counts their spans. It keeps the bodies and decodes them when asked, between cases: a
 * collector runs beside the service, not on its thread, and decoding during a case would take
 * the shared cores from the proxy and charge the receiver's work to tracing.
 */
async function otlpReceiver(): Promise<{ url: string; spans(): number; close(): void }> {
  let spans = 0;
  const pending: Array<{ protobuf: boolean; body: Buffer }> = [];
  const server = createHttpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const protobuf = req.headers['content-type'] === 'application/x-protobuf';
      pending.push({ protobuf, body: Buffer.concat(chunks) });
      if (protobuf) res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
      else res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  const count = (): number => {
    for (const { protobuf, body } of pending.splice(0)) {
      if (protobuf) {
        for (const rs of decodeTraceExport(body).resourceSpans) for (const ss of rs.scopeSpans) spans += ss.spans.length;
      } else {
        const payload = JSON.parse(body.toString('utf8')) as { resourceSpans?: Array<{ scopeSpans?: Array<{ spans?: unknown[] }> }> };
        for (const rs of payload.resourceSpans ?? []) for (const ss of rs.scopeSpans ?? []) spans += ss.spans?.length ?? 0;
      }
    }
    return spans;
  };
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}`, spans: count, close: () => server.close() };
}

async function heldCase(target: Target, sessions: number, paired: boolean): Promise<HeldCase> {
  const server = await startServer(target);
  try {
    await new Promise((r) => setTimeout(r, 300));
    const idle = usage(server.process.pid!);
    const job: HeldJob = { kind: 'held', url: server.url, sessions, paired, prefix: 'held' };
    const { result, loadgen } = await drive<HeldResult>(job);
    const heldUsage = usage(server.process.pid!);
    loadgen.kill();
    return {
      workload: 'held',
      target,
      sessions,
      paired,
      rssIdleMb: idle.rssKb / 1024,
      rssHeldMb: heldUsage.rssKb / 1024,
      bytesPerSession: ((heldUsage.rssKb - idle.rssKb) * 1024) / sessions,
      errors: result.errors,
    };
  } finally {
    await stopServer(server);
  }
}

/** A private redis-server for the cluster cases: AOF on with `appendfsync always`, as docs/cluster.md asks. */
async function startRedisServer(): Promise<{ url: string; pid: number; stop: () => Promise<void> } | null> {
  if (spawnSync('sh', [join(root, 'scripts/ensure-redis.sh')], { stdio: 'inherit' }).status !== 0) return null;
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'motive-bench-redis-'));
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--loglevel', 'warning'], {
    stdio: 'ignore',
  });
  const url = `redis://127.0.0.1:${port}`;
  const { Redis } = await import('ioredis');
  for (let i = 0; i < 200; i++) {
    const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    probe.on('error', () => undefined);
    const ok = await probe.connect().then(() => probe.ping(), () => null);
    probe.disconnect();
    if (ok === 'PONG') {
      return {
        url,
        pid: child.pid!,
        stop: async () => {
          child.kill('SIGKILL');
          if (child.exitCode === null && child.signalCode === null) await once(child, 'exit');
          rmSync(dir, { recursive: true, force: true });
        },
      };
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  child.kill('SIGKILL');
  throw new Error('redis-server did not start');
}

interface ClusterRelayCase {
  instances: number;
  result: RelayResult;
  /** CPU of every instance together, per turn. */
  serverCpuMicrosPerTurn: number;
  /** redis-server's own CPU per turn. */
  redisCpuMicrosPerTurn: number;
  /** Commands the instances sent to Redis per turn (a script is one): its round trips. */
  redisCommandsPerTurn: number;
}

let clusterPrefixes = 0;

async function clusterRelayCase(redis: { url: string; pid: number }, count: number, turns: number): Promise<ClusterRelayCase> {
  const prefix = `bench${++clusterPrefixes}`;
  const servers = await Promise.all(
    Array.from({ length: count }, (_, i) => startServer('proxy', { REDIS_URL: redis.url, REDIS_PREFIX: prefix, INSTANCE_ID: `${prefix}-${i + 1}` })),
  );
  const commands = async () => {
    let total = 0;
    for (const server of servers) total += ((await (await fetch(`${server.url}/health`)).json()) as { cluster: { redis_commands: number } }).cluster.redis_commands;
    return total;
  };
  try {
    const job: RelayJob = {
      kind: 'relay',
      url: servers[0]!.url,
      urls: servers.map((s) => s.url),
      sessions: 100,
      turnsPerSession: TURNS_PER_SESSION,
      totalTurns: turns,
      stream: false,
      messageBytes: MESSAGE_BYTES,
      prefix: `cluster-${count}`,
    };
    let before = { cpu: 0, redisCpu: 0, commands: 0 };
    const measure = async () => ({
      cpu: servers.reduce((sum, s) => sum + usage(s.process.pid!).cpuMicros, 0),
      redisCpu: usage(redis.pid).cpuMicros,
      commands: await commands(),
    });
    let started: Promise<void> = Promise.resolve();
    const { result, loadgen } = await drive<RelayResult>(job, () => {
      started = measure().then((m) => void (before = m));
    });
    await started;
    const after = await measure();
    loadgen.kill();
    const turnsDone = Math.max(1, result.turns);
    return {
      instances: count,
      result,
      serverCpuMicrosPerTurn: (after.cpu - before.cpu) / turnsDone,
      redisCpuMicrosPerTurn: (after.redisCpu - before.redisCpu) / turnsDone,
      // The health checks read between the two counts are commands too, a handful in all.
      redisCommandsPerTurn: (after.commands - before.commands) / turnsDone,
    };
  } finally {
    await Promise.all(servers.map((server) => stopServer(server)));
  }
}

interface TakeoverCase {
  sessions: number;
  leaseMs: number;
  /** From the SIGKILL of the owner to each session's next request answered by the survivor. */
  medianMs: number;
  maxMs: number;
  answered: number;
}

/**
 * Takeover after SIGKILL: `sessions` sessions run by one instance, each with a message queued
 * for side A; the instance is killed, and each A asks the other instance for its message
 * (again every 50 ms while the lease holds) until it is answered.
 */
async function takeoverCase(redis: { url: string }, sessions: number, leaseMs: number): Promise<TakeoverCase> {
  const prefix = `takeover${++clusterPrefixes}`;
  const env = { REDIS_URL: redis.url, REDIS_PREFIX: prefix, CLUSTER_LEASE_MS: String(leaseMs) };
  const [owner, survivor] = await Promise.all([startServer('proxy', { ...env, INSTANCE_ID: `${prefix}-1` }), startServer('proxy', { ...env, INSTANCE_ID: `${prefix}-2` })]);
  const post = (url: string, model: string, messages: Array<{ role: string; content: string }>) =>
    fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model, messages }) });
  try {
    await Promise.all(
      Array.from({ length: sessions }, async (_, i) => {
        const id = `${prefix}-s${i}`;
        const handshake = post(owner!.url, `${id}|A`, [{ role: 'user', content: 'hello' }]);
        for (let t = 0; t < 100; t++) {
          const info = (await (await fetch(`${owner!.url}/admin/sessions/${id}`)).json()) as { state?: string };
          if (info.state === 'AWAITING_PEER') break;
          await new Promise((r) => setTimeout(r, 10));
        }
        // B's first message answers A's handshake; B's second (a new turn) is queued for A.
        void post(owner!.url, `${id}|B`, [{ role: 'user', content: 'b1' }]).catch(() => undefined);
        await handshake;
        void post(owner!.url, `${id}|B`, [
          { role: 'user', content: 'b1' },
          { role: 'user', content: 'b2' },
        ]).catch(() => undefined);
      }),
    );
    await new Promise((r) => setTimeout(r, 200));
    process.kill(-owner!.process.pid!, 'SIGKILL');
    const killedAt = performance.now();
    const times = await Promise.all(
      Array.from({ length: sessions }, async (_, i) => {
        const id = `${prefix}-s${i}`;
        const history = [
          { role: 'user', content: 'hello' },
          { role: 'assistant', content: 'b1' },
          { role: 'user', content: 'a2' },
        ];
        for (let attempt = 0; attempt < 400; attempt++) {
          const res = await post(survivor!.url, `${id}|A`, history).catch(() => null);
          if (res?.status === 200) return performance.now() - killedAt;
          await res?.body?.cancel();
          await new Promise((r) => setTimeout(r, 50));
        }
        return null;
      }),
    );
    const answered = times.filter((t): t is number => t !== null).sort((a, b) => a - b);
    return {
      sessions,
      leaseMs,
      medianMs: answered[Math.floor((answered.length - 1) / 2)] ?? NaN,
      maxMs: answered[answered.length - 1] ?? NaN,
      answered: answered.length,
    };
  } finally {
    await stopServer(owner!).catch(() => undefined);
    await stopServer(survivor!);
  }
}

interface ClusterReport {
  rounds: Array<{ single: RelayCase; cluster: ClusterRelayCase[] }>;
  /** The median round by the 2-instance cluster's ratio. */
  single: RelayCase;
  cluster: ClusterRelayCase[];
  takeover: TakeoverCase;
}

/** The cluster cases: S=100 JSON through 1 and 2 instances on Redis beside the single-process proxy, and takeover time. */
async function clusterCases(): Promise<ClusterReport | null> {
  const redis = await startRedisServer();
  if (!redis) {
    log('cluster cases skipped: redis-server could not be installed');
    return null;
  }
  try {
    const turns = PLAN.turns[100] ?? PLAN.turns[PLAN.relay[0]!]!;
    const rounds: ClusterReport['rounds'] = [];
    for (let round = 1; round <= PLAN.headlineRounds; round++) {
      const single = await relayCase('proxy', 100, false, turns);
      const cluster: ClusterRelayCase[] = [];
      for (const count of [1, 2]) {
        const c = await clusterRelayCase(redis, count, turns);
        cluster.push(c);
        log(
          `cluster S=100 json, ${count} instance${count > 1 ? 's' : ' '} ${fmt(c.result.turnsPerSecond).padStart(6)} turns/s (${(c.result.turnsPerSecond / single.result.turnsPerSecond).toFixed(2)}× single ${fmt(single.result.turnsPerSecond)})  p50 ${c.result.latency.p50} ms  p99 ${c.result.latency.p99} ms  cpu ${fmt(c.serverCpuMicrosPerTurn)} + redis ${fmt(c.redisCpuMicrosPerTurn)} µs/turn  ${c.redisCommandsPerTurn.toFixed(1)} Redis commands/turn  errors ${errorsOf(c.result.errors)}`,
        );
      }
      rounds.push({ single, cluster });
    }
    const ratio = (r: ClusterReport['rounds'][number]) => r.cluster[1]!.result.turnsPerSecond / r.single.result.turnsPerSecond;
    const mid = [...rounds].sort((a, b) => ratio(a) - ratio(b))[Math.floor((rounds.length - 1) / 2)]!;
    const takeover = await takeoverCase(redis, mode === 'smoke' ? 5 : 50, 1000);
    log(`cluster takeover after SIGKILL: ${takeover.answered}/${takeover.sessions} sessions answered by the survivor, median ${fmt(takeover.medianMs)} ms, max ${fmt(takeover.maxMs)} ms (lease ${takeover.leaseMs} ms)`);
    return { rounds, single: mid.single, cluster: mid.cluster, takeover };
  } finally {
    await redis.stop();
  }
}

function clusterMarkdown(report: ClusterReport): string {
  const single = report.single;
  const rows = [
    '| S=100 JSON relay | turns/s | ratio to single process | p50 / p99 ms | CPU µs/turn, instances | CPU µs/turn, redis-server | Redis commands/turn | errors |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
    `| single process (journal in memory) | ${fmt(single.result.turnsPerSecond)} | 1.00 | ${single.result.latency.p50} / ${single.result.latency.p99} | ${fmt(single.serverCpuMicrosPerTurn)} | – | – | ${errorsOf(single.result.errors)} |`,
    ...report.cluster.map(
      (c) =>
        `| cluster, ${c.instances} instance${c.instances > 1 ? 's' : ''}${c.instances > 1 ? ', requests spread' : ''} | ${fmt(c.result.turnsPerSecond)} | ${(c.result.turnsPerSecond / single.result.turnsPerSecond).toFixed(2)} | ${c.result.latency.p50} / ${c.result.latency.p99} | ${fmt(c.serverCpuMicrosPerTurn)} | ${fmt(c.redisCpuMicrosPerTurn)} | ${c.redisCommandsPerTurn.toFixed(1)} | ${errorsOf(c.result.errors)} |`,
    ),
  ];
  const t = report.takeover;
  return `Cluster mode (Redis with appendfsync always, medians of ${report.rounds.length} interleaved round${report.rounds.length > 1 ? 's' : ''}):\n\n${rows.join('\n')}\n\nTakeover after SIGKILL of the owner (lease ${t.leaseMs} ms): ${t.answered} of ${t.sessions} sessions answered by the survivor, median ${fmt(t.medianMs)} ms, max ${fmt(t.maxMs)} ms after the kill.`;
}

/** A results file named by the time it is written, with a suffix for runs other than the default. */
const resultFile = (suffix: string): string => join(outDir, `${new Date().toISOString().replace(/[:]/g, '-').replace(/\..*/, '')}${suffix}.json`);
const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
const errorsOf = (e: Record<string, number>) => (Object.keys(e).length === 0 ? 'none' : Object.entries(e).map(([k, v]) => `${k}×${v}`).join(' '));

async function main(): Promise<void> {
  if (mode !== 'smoke' || !args.includes('--no-build')) {
    log('building the production bundle (npm run build)');
    const build = spawnSync('npm', ['run', 'build', '--silent'], { cwd: root, stdio: 'inherit' });
    if (build.status !== 0) throw new Error('build failed');
  }
  if (proxyFlags.length) log(`the proxy runs with ${proxyFlags.join(' ')} (the docs' table is left alone)`);
  if (profile) {
    mkdirSync(outDir, { recursive: true });
    const receiver = await otlpReceiver();
    for (const [target, name, otlp] of [['baseline', 'baseline', undefined], ['proxy', 'proxy', undefined], ['proxy', 'proxy-traced', receiver.url]] as const) {
      const c = await relayCase(target, 100, false, PLAN.turns[100] ?? 20000, undefined, undefined, otlp);
      log(`${name} S=100: ${fmt(c.result.turnsPerSecond)} turns/s, ${fmt(c.serverCpuMicrosPerTurn)} µs CPU/turn; profile ${join(outDir, `${name}.cpuprofile`)}`);
    }
    log(`${fmt(receiver.spans())} spans received from the traced proxy`);
    receiver.close();
    log('open the .cpuprofile in Chrome DevTools (Performance → Load profile)');
    return;
  }
  if (floors) return runFloors();
  if (sweep) return runSweep(sweep);
  if (args.includes('--cluster')) {
    const cluster = await clusterCases();
    if (cluster) process.stdout.write(`\n${clusterMarkdown(cluster)}\n`);
    return;
  }
  const relay: RelayCase[] = [];
  const held: HeldCase[] = [];
  const headline = PLAN.relay.includes(100) ? 100 : PLAN.relay[0]!;
  const rounds = PLAN.headlineRounds;
  const total = PLAN.relay.length * 4 + 2 * (rounds - 1) + PLAN.openLoopStreams.length * 2 + PLAN.held.length * PLAN.heldPaired.length * 2 + 3 + rounds + 1;
  let step = 0;
  const progress = (what: string) => log(`[${++step}/${total}] ${what}`);
  const relayLine = (label: string, c: RelayCase) =>
    `${label} ${c.target.padEnd(8)} ${fmt(c.result.turnsPerSecond).padStart(6)} turns/s  p50 ${c.result.latency.p50} ms  p99 ${c.result.latency.p99} ms  cpu ${fmt(c.serverCpuMicrosPerTurn)} µs/turn  errors ${errorsOf(c.result.errors)}`;

  // Traces go to an OTLP/HTTP receiver in this process.
  const receiver = await otlpReceiver();
  let traced: RelayCase | null = null;
  for (const stream of [false, true]) {
    for (const sessions of PLAN.relay) {
      if (sessions === headline && !stream) {
        // The headline case: baseline, proxy and proxy with tracing, interleaved round by round
        // so that the machine's drifting load hits all three alike; medians are reported.
        const runs: Record<'baseline' | 'proxy' | 'traced', RelayCase[]> = { baseline: [], proxy: [], traced: [] };
        for (let round = 1; round <= rounds; round++) {
          const tag = rounds > 1 ? ` (round ${round}/${rounds})` : '';
          for (const target of ['baseline', 'proxy'] as const) {
            const c = await relayCase(target, sessions, false, PLAN.turns[sessions]!);
            runs[target].push(c);
            progress(relayLine(`relay json   S=${String(sessions).padEnd(4)}${tag}`, c));
          }
          const t = await relayCase('proxy', sessions, false, PLAN.turns[sessions]!, undefined, undefined, receiver.url);
          runs.traced.push(t);
          progress(`${relayLine(`tracing on   S=${String(sessions).padEnd(4)}${tag}`, t)}  ${fmt(receiver.spans())} spans received so far`);
        }
        relay.push(median(runs.baseline), median(runs.proxy));
        traced = median(runs.traced);
        continue;
      }
      for (const target of ['baseline', 'proxy'] as const) {
        const c = await relayCase(target, sessions, stream, PLAN.turns[sessions]!);
        relay.push(c);
        progress(relayLine(`relay ${stream ? 'stream' : 'json  '} S=${String(sessions).padEnd(4)}`, c));
      }
    }
  }
  receiver.close();

  // Open loop at half the proxy's measured maximum at S=100 (or the largest S measured).
  const openSessions = PLAN.relay.includes(100) ? 100 : PLAN.relay[PLAN.relay.length - 1]!;
  for (const stream of PLAN.openLoopStreams) {
    const max = relay.find((c) => c.target === 'proxy' && c.sessions === openSessions && c.stream === stream)!.result.turnsPerSecond;
    const rate = Math.max(10, Math.round(max / 2));
    for (const target of ['baseline', 'proxy'] as const) {
      const c = await relayCase(target, openSessions, stream, Math.round(rate * PLAN.openLoopSeconds), rate);
      relay.push(c);
      progress(`open loop ${stream ? 'stream' : 'json  '} ${fmt(rate)} turns/s offered, S=${openSessions} ${target.padEnd(8)} p50 ${c.result.latency.p50} ms  p90 ${c.result.latency.p90} ms  p99 ${c.result.latency.p99} ms  errors ${errorsOf(c.result.errors)}`);
    }
  }

  for (const sessions of PLAN.held) {
    for (const paired of PLAN.heldPaired) {
      for (const target of ['baseline', 'proxy'] as const) {
        const c = await heldCase(target, sessions, paired);
        held.push(c);
        progress(`held N=${sessions} ${paired ? 'paired   ' : 'handshake'} ${target.padEnd(8)} ${fmt(c.bytesPerSession)} B/session, RSS ${fmt(c.rssHeldMb, 1)} MB  errors ${errorsOf(c.errors)}`);
      }
    }
  }

  // The journal: the S=100 JSON relay (S=10 in a smoke run) with each flush policy on disk.
  const journalSessions = PLAN.relay.includes(100) ? 100 : PLAN.relay[0]!;
  for (const fsync of ['off', 'batch', 'always'] as const) {
    const c = await relayCase('proxy', journalSessions, false, PLAN.journalTurns, undefined, fsync);
    relay.push(c);
    progress(`journal ${fsync.padEnd(6)} S=${journalSessions} proxy ${fmt(c.result.turnsPerSecond).padStart(6)} turns/s  p50 ${c.result.latency.p50} ms  p99 ${c.result.latency.p99} ms  cpu ${fmt(c.serverCpuMicrosPerTurn)} µs/turn  errors ${errorsOf(c.result.errors)}`);
  }
  if (traced) relay.push(traced);
  const replay = await replayCase(PLAN.replayEvents);
  progress(`replay of ${fmt(replay.events)} journal events (${fmt(replay.sessions)} sessions): recovery ${fmt(replay.recoveryMs)} ms, start to first /health ${fmt(replay.startMs)} ms, ${fmt(replay.restored)} restored`);

  const cluster = args.includes('--no-cluster') ? null : await clusterCases();
  const report = { ...summarize(relay, held, replay, journalSessions), cluster };
  mkdirSync(outDir, { recursive: true });
  const file = resultFile(mode === 'default' ? '' : `-${mode}`);
  writeFileSync(file, JSON.stringify(report, null, 2) + '\n');
  log(`results: ${file}`);
  const table = markdown(report) + (cluster ? `\n\n${clusterMarkdown(cluster)}` : '');
  if (writeDocs) {
    const path = join(root, 'docs/performance.md');
    const doc = readFileSync(path, 'utf8');
    const begin = '<!-- bench:results:begin -->';
    const end = '<!-- bench:results:end -->';
    writeFileSync(path, doc.slice(0, doc.indexOf(begin) + begin.length) + '\n' + table + '\n' + doc.slice(doc.indexOf(end)));
    log('docs/performance.md updated');
  }
  process.stdout.write(`\n${table}\n`);
}

/** `--floors`: the relay on raw node:http, on a plain Fastify route and on the proxy, and the session layer alone. */
/** The proxy under each set of flags and under none, interleaved round by round with the baseline. */
async function runSweep(sets: string[][]): Promise<void> {
  const rounds = mode === 'default' ? 5 : mode === 'quick' ? 2 : 1;
  const turns = mode === 'smoke' ? 200 : (PLAN.turns[100] ?? 20000);
  const oneTurns = mode === 'smoke' ? 50 : (PLAN.turns[1] ?? 4000);
  const heldSessions = mode === 'default' ? 10000 : mode === 'quick' ? 1000 : 50;
  const variants = [[], ...sets];
  const name = (flags: string[]) => (flags.length ? flags.join(' ') : 'none');
  type Row = { round: number; cpuRatio: number; turnsPerSecondRatio: number; heldRssMb: number; s1P99Ms: number; errors: Record<string, number> };
  const rows = new Map<string, Row[]>(variants.map((v) => [name(v), []]));
  const baselines: Array<{ round: number; turnsPerSecond: number; cpu: number; s1P99Ms: number }> = [];
  for (let round = 1; round <= rounds; round++) {
    proxyFlags = [];
    const base = await relayCase('baseline', 100, false, turns);
    const baseOne = await relayCase('baseline', 1, false, oneTurns);
    baselines.push({ round, turnsPerSecond: base.result.turnsPerSecond, cpu: base.serverCpuMicrosPerTurn, s1P99Ms: baseOne.result.latency.p99 });
    log(`[round ${round}/${rounds}] baseline: ${fmt(base.result.turnsPerSecond)} turns/s, ${fmt(base.serverCpuMicrosPerTurn)} µs CPU/turn, S=1 p99 ${baseOne.result.latency.p99} ms`);
    for (const flags of variants) {
      proxyFlags = flags;
      const relay = await relayCase('proxy', 100, false, turns);
      const held = await heldCase('proxy', heldSessions, true);
      const one = await relayCase('proxy', 1, false, oneTurns);
      const errors = { ...relay.result.errors, ...held.errors, ...one.result.errors };
      const row = { round, cpuRatio: relay.serverCpuMicrosPerTurn / base.serverCpuMicrosPerTurn, turnsPerSecondRatio: relay.result.turnsPerSecond / base.result.turnsPerSecond, heldRssMb: held.rssHeldMb, s1P99Ms: one.result.latency.p99, errors };
      rows.get(name(flags))!.push(row);
      log(`[round ${round}/${rounds}] ${name(flags).padEnd(28)} CPU ${fmt(row.cpuRatio, 2)}× baseline, ${fmt(row.turnsPerSecondRatio, 2)}× its turns/s, ${fmt(held.sessions)} paired held ${fmt(row.heldRssMb)} MB, S=1 p99 ${row.s1P99Ms} ms, errors ${errorsOf(errors)}`);
    }
  }
  proxyFlags = [];
  const mid = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor((values.length - 1) / 2)]!;
  const range = (values: number[]) => `${fmt(Math.min(...values))}–${fmt(Math.max(...values))}`;
  const lines = [
    `Flag sweep ${new Date().toISOString().slice(0, 10)} on ${cpus().length} cores, ${cpus()[0]?.model ?? 'unknown'}, Node ${process.version} (medians of ${rounds} interleaved round${rounds > 1 ? 's' : ''}; baseline S=1 p99 ${fmt(mid(baselines.map((b) => b.s1P99Ms)), 2)} ms).`,
    '',
    `| proxy flags | CPU a turn, × baseline | turns/s, × baseline | ${fmt(heldSessions)} paired held | S=1 p99 |`,
    '| --- | ---: | ---: | ---: | ---: |',
    ...[...rows].map(([flags, r]) =>
      `| ${flags === 'none' ? 'none' : `\`${flags}\``} | ${fmt(mid(r.map((x) => x.cpuRatio)), 2)}× | ${fmt(mid(r.map((x) => x.turnsPerSecondRatio)), 2)}× | ${fmt(mid(r.map((x) => x.heldRssMb)))} MB (${range(r.map((x) => x.heldRssMb))}) | ${fmt(mid(r.map((x) => x.s1P99Ms)), 2)} ms |`,
    ),
  ];
  mkdirSync(outDir, { recursive: true });
  const file = resultFile('-flag-sweep');
  writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), mode, heldSessions, baselines, variants: Object.fromEntries(rows) }, null, 2) + '\n');
  log(`results: ${file}`);
  process.stdout.write(`\n${lines.join('\n')}\n`);
}

async function runFloors(): Promise<void> {
  const turns = PLAN.turns[100] ?? 20000;
  const runs: Record<Target, RelayCase[]> = { baseline: [], framework: [], proxy: [] };
  for (let round = 1; round <= 3; round++) {
    for (const target of ['baseline', 'framework', 'proxy'] as const) {
      const c = await relayCase(target, 100, false, turns);
      runs[target].push(c);
      log(`[round ${round}/3] relay json S=100 ${target.padEnd(9)} ${fmt(c.result.turnsPerSecond).padStart(6)} turns/s  cpu ${fmt(c.serverCpuMicrosPerTurn)} µs/turn  errors ${errorsOf(c.result.errors)}`);
    }
  }
  log('session layer alone (bench/session-loop.ts)');
  const loop = await new Promise<{ actor: number; journal: number; heldBytes: number | null }>((resolve, reject) => {
    const child = fork(join(root, 'bench/session-loop.ts'), [], { execArgv: ['--expose-gc', '--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    child.once('message', (msg: { result?: { actor: number; journal: number; heldBytes: number | null }; error?: string }) => (msg.result ? resolve(msg.result) : reject(new Error(msg.error))));
    child.once('exit', (code) => reject(new Error(`session loop exited with ${code}`)));
  });
  const med = (target: Target) => median(runs[target]);
  const base = med('baseline');
  const lines = [
    `Floors measured ${new Date().toISOString().slice(0, 10)} on ${cpus().length} cores, ${cpus()[0]?.model ?? 'unknown'}, Node ${process.version} (medians of 3 interleaved rounds).`,
    '',
    '| S=100 JSON relay on | turns/s | ratio | server CPU µs/turn | CPU ratio |',
    '| --- | ---: | ---: | ---: | ---: |',
    ...(['baseline', 'framework', 'proxy'] as const).map((target) => {
      const c = med(target);
      const name = { baseline: 'raw node:http (the baseline)', framework: 'a plain Fastify route', proxy: 'the proxy' }[target];
      return `| ${name} | ${fmt(c.result.turnsPerSecond)} | ${fmt(c.result.turnsPerSecond / base.result.turnsPerSecond, 2)} | ${fmt(c.serverCpuMicrosPerTurn)} | ${fmt(c.serverCpuMicrosPerTurn / base.serverCpuMicrosPerTurn, 2)} |`;
    }),
    '',
    `Session layer alone (attribution, the XState actor, replies; 100 sessions, no HTTP): ${fmt(loop.actor, 1)} µs/turn; with the inspection tap feeding the journal: ${fmt(loop.journal, 1)} µs/turn.` +
      (loop.heldBytes === null ? '' : ` A paired session with one side held keeps ${fmt(loop.heldBytes)} bytes of heap there (10,000 sessions, journal in memory).`),
  ];
  mkdirSync(outDir, { recursive: true });
  const file = resultFile('-floors');
  writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), runs, sessionLoop: loop }, null, 2) + '\n');
  log(`results: ${file}`);
  process.stdout.write(`\n${lines.join('\n')}\n`);
}

function summarize(relay: RelayCase[], held: HeldCase[], replay: ReplayCase, journalSessions: number) {
  const pick = (target: Target, sessions: number, stream: boolean, workload: RelayCase['workload'] = 'relay') =>
    relay.find((c) => c.target === target && c.sessions === sessions && c.stream === stream && c.workload === workload);
  const ratios = [];
  for (const c of relay) {
    if (c.target !== 'proxy') continue;
    // Journal cases compare with the baseline of the plain relay at the same S.
    const base = pick('baseline', c.sessions, c.stream, c.workload.startsWith('journal') || c.workload === 'tracing-on' ? 'relay' : c.workload)!;
    ratios.push({
      workload: c.workload,
      sessions: c.sessions,
      stream: c.stream,
      throughputRatio: c.result.turnsPerSecond / base.result.turnsPerSecond,
      cpuPerTurnRatio: c.serverCpuMicrosPerTurn / base.serverCpuMicrosPerTurn,
      p50Ratio: c.result.latency.p50 / base.result.latency.p50,
      p99Ratio: c.result.latency.p99 / base.result.latency.p99,
    });
  }
  const heldRatios = held
    .filter((c) => c.target === 'proxy')
    .map((c) => {
      const base = held.find((b) => b.target === 'baseline' && b.sessions === c.sessions && b.paired === c.paired)!;
      return { sessions: c.sessions, paired: c.paired, memoryRatio: c.bytesPerSession / base.bytesPerSession, proxyRssMb: c.rssHeldMb };
    });
  const s100 = ratios.find((r) => r.workload === 'relay' && r.sessions === 100 && !r.stream);
  const s1 = pick('proxy', 1, false);
  // Held memory: the worse of held handshakes and paired sessions with one side held.
  const h10k = heldRatios.filter((h) => h.sessions === 10000).sort((a, b) => b.memoryRatio - a.memoryRatio)[0];
  const batch = ratios.find((r) => r.workload === 'journal-batch' && r.sessions === 100);
  // Tracing's cost against the untraced proxy of the same rounds (medians of interleaved runs).
  const untraced = pick('proxy', journalSessions, false);
  const tracedCase = relay.find((c) => c.workload === 'tracing-on');
  const tracingCost = untraced && tracedCase ? 1 - tracedCase.result.turnsPerSecond / untraced.result.turnsPerSecond : null;
  // The targets of the fact-stream round (the actor per session stays on the hot path).
  const paired10k = heldRatios.find((h) => h.sessions === 10000 && h.paired);
  const targets = {
    'throughput at S=100 ≥ 60% of baseline': s100 ? { value: s100.throughputRatio, pass: s100.throughputRatio >= 0.6 } : null,
    'server CPU per turn ≤ 2.5× baseline (S=100)': s100 ? { value: s100.cpuPerTurnRatio, pass: s100.cpuPerTurnRatio <= 2.5 } : null,
    'tracing on costs ≤ 15% of throughput (cost)': tracingCost !== null && journalSessions === 100 ? { value: tracingCost, pass: tracingCost <= 0.15 } : null,
    'relay latency S=1 p99 ≤ 3 ms': s1 ? { value: s1.result.latency.p99, pass: s1.result.latency.p99 <= 3 } : null,
    '10,000 paired held sessions under 300 MB RSS': paired10k ? { value: paired10k.proxyRssMb, pass: paired10k.proxyRssMb < 300 } : null,
    'replay of 100,000 journal events under 2 s (ms)':
      replay.events >= 100000 ? { value: replay.recoveryMs, pass: replay.recoveryMs < 2000 && replay.restored === replay.sessions } : null,
    // Kept from the rounds before, for comparison.
    'throughput at S=100, journal batch, ≥ 60% of baseline': batch ? { value: batch.throughputRatio, pass: batch.throughputRatio >= 0.6 } : null,
    'held memory per session ≤ 2× baseline (10,000)': h10k ? { value: h10k.memoryRatio, pass: h10k.memoryRatio <= 2 } : null,
  };
  return {
    date: new Date().toISOString(),
    mode,
    machine: { cores: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', memoryGb: Math.round(totalmem() / 2 ** 30), node: process.version, platform: `${process.platform} ${process.arch}` },
    settings: { turnsPerSession: TURNS_PER_SESSION, messageBytes: MESSAGE_BYTES, proxyLogLevel: 'warn', journal: `memory, except the journal cases (S=${journalSessions})`, tracing: 'off, except the tracing-on case (OTLP/HTTP to a local receiver)', proxyNodeFlags: proxyFlags },
    relay,
    held,
    replay,
    ratios,
    heldRatios,
    targets,
  };
}

function markdown(report: ReturnType<typeof summarize>): string {
  const m = report.machine;
  const lines = [
    `Measured ${report.date.slice(0, 10)} (${report.mode} run) on ${m.cores} cores, ${m.cpu}, ${m.memoryGb} GB, Node ${m.node}; load generator on the same cores.`,
    '',
    '| workload | S | format | baseline turns/s | proxy turns/s | ratio | proxy p50 / p99 ms | baseline p50 / p99 ms | CPU µs/turn proxy / baseline | proxy peak RSS MB | errors |',
    '| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ];
  for (const r of report.ratios) {
    const p = report.relay.find((c) => c.target === 'proxy' && c.sessions === r.sessions && c.stream === r.stream && c.workload === r.workload)!;
    const baseWorkload = r.workload.startsWith('journal') || r.workload === 'tracing-on' ? 'relay' : r.workload;
    const b = report.relay.find((c) => c.target === 'baseline' && c.sessions === r.sessions && c.stream === r.stream && c.workload === baseWorkload)!;
    lines.push(
      `| ${r.workload}${p.offeredRate ? ` @ ${fmt(p.offeredRate)}/s` : ''} | ${r.sessions} | ${r.stream ? 'SSE' : 'JSON'} | ${fmt(b.result.turnsPerSecond)} | ${fmt(p.result.turnsPerSecond)} | ${fmt(r.throughputRatio, 2)} | ${p.result.latency.p50} / ${p.result.latency.p99} | ${b.result.latency.p50} / ${b.result.latency.p99} | ${fmt(p.serverCpuMicrosPerTurn)} / ${fmt(b.serverCpuMicrosPerTurn)} | ${fmt(p.serverPeakRssMb, 1)} | ${errorsOf({ ...p.result.errors, ...b.result.errors })} |`,
    );
  }
  lines.push('', '| held sessions | N | baseline B/session | proxy B/session | ratio | proxy RSS MB |', '| --- | ---: | ---: | ---: | ---: | ---: |');
  for (const h of report.heldRatios) {
    const p = report.held.find((c) => c.target === 'proxy' && c.sessions === h.sessions && c.paired === h.paired)!;
    const b = report.held.find((c) => c.target === 'baseline' && c.sessions === h.sessions && c.paired === h.paired)!;
    lines.push(`| ${h.paired ? 'paired, one side held' : 'handshake held'} | ${fmt(h.sessions)} | ${fmt(b.bytesPerSession)} | ${fmt(p.bytesPerSession)} | ${fmt(h.memoryRatio, 2)} | ${fmt(p.rssHeldMb, 1)} |`);
  }
  const r = report.replay;
  lines.push('', `Journal replay on start: ${fmt(r.events)} events of ${fmt(r.sessions)} sessions, ${fmt(r.restored)} restored, recovery ${fmt(r.recoveryMs)} ms (start to first answered /health ${fmt(r.startMs)} ms).`);
  lines.push('', '| target | measured | met |', '| --- | ---: | --- |');
  for (const [name, t] of Object.entries(report.targets)) {
    if (t) lines.push(`| ${name} | ${fmt(t.value, 2)} | ${t.pass ? 'yes' : '**no**'} |`);
  }
  return lines.join('\n');
}

main().catch((err) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
