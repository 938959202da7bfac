/**
 * The load generator: a separate process, forked by bench/run.ts, that drives one server
 * (the proxy or the baseline) with undici keep-alive pools and records latencies in HDR
 * histograms. No test framework is in the timing path.
 */
import { once, setMaxListeners } from 'node:events';
import { performance } from 'node:perf_hooks';
import hdr from 'hdr-histogram-js';
import { Pool } from 'undici';

export interface RelayJob {
  kind: 'relay';
  url: string;
  /** Concurrent sessions. */
  sessions: number;
  /** Turns per session before it is replaced by a fresh one. */
  turnsPerSession: number;
  /** Total turns to run across all sessions. */
  totalTurns: number;
  stream: boolean;
  messageBytes: number;
  prefix: string;
  /** Open loop: turns per second offered across all sessions; closed loop when absent. */
  rate?: number;
  /** Cluster cases: every request goes to one of these, at random (`url` is the first). */
  urls?: string[];
}

export interface HeldJob {
  kind: 'held';
  url: string;
  sessions: number;
  paired: boolean;
  prefix: string;
}

export type Job = RelayJob | HeldJob;

export interface LatencySummary {
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export interface RelayResult {
  turns: number;
  elapsedMs: number;
  turnsPerSecond: number;
  /** Milliseconds from a side's POST to the other side's held request having the content. */
  latency: LatencySummary;
  errors: Record<string, number>;
}

export interface HeldResult {
  held: number;
  errors: Record<string, number>;
}

type Message = { role: 'user' | 'assistant'; content: string };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function contentOf(body: string, stream: boolean): string {
  if (!stream) return (JSON.parse(body) as { choices: Array<{ message: { content: string } }> }).choices[0]!.message.content;
  let text = '';
  for (const line of body.split('\n')) {
    if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
    const data = JSON.parse(line.slice(6)) as { choices?: Array<{ delta?: { content?: string } }>; error?: { code: string } };
    if (data.error) throw new Error(`stream error ${data.error.code}`);
    text += data.choices?.[0]?.delta?.content ?? '';
  }
  return text;
}

class Client {
  readonly errors: Record<string, number> = {};
  /** Set before the pool is torn down, so that requests cut off then are not errors. */
  finished = false;
  private readonly pools: Pool[];

  /** Requests go to one of `pools` at random (one pool: all to it). */
  constructor(
    pools: Pool | Pool[],
    readonly stream: boolean,
  ) {
    this.pools = Array.isArray(pools) ? pools : [pools];
  }

  count(key: string): void {
    this.errors[key] = (this.errors[key] ?? 0) + 1;
  }

  /** POSTs a chat request; resolves with the reply's content, or null after an error. */
  async post(model: string, messages: Message[], signal?: AbortSignal): Promise<string | null> {
    try {
      const pool = this.pools.length === 1 ? this.pools[0]! : this.pools[Math.floor(Math.random() * this.pools.length)]!;
      const res = await pool.request({
        path: '/v1/chat/completions',
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model, messages, stream: this.stream }),
        ...(signal ? { signal } : {}),
        headersTimeout: 0,
        bodyTimeout: 0,
      });
      const body = await res.body.text();
      if (res.statusCode !== 200) {
        this.count(`status_${res.statusCode}`);
        return null;
      }
      return contentOf(body, this.stream);
    } catch (err) {
      if (signal?.aborted || this.finished) return null;
      this.count((err as { code?: string }).code ?? 'network_error');
      return null;
    }
  }
}

/** Waits until the servers (all instances of a cluster) report `expected` live sessions between them. */
async function waitForLive(urls: string | string[], expected: number): Promise<void> {
  const list = Array.isArray(urls) ? urls : [urls];
  for (let i = 0; i < 600; i++) {
    let live = 0;
    for (const url of list) {
      const res = await fetch(`${url}/health`);
      const health = (await res.json()) as { sessions?: { live: number }; held?: number };
      live += health.sessions?.live ?? health.held ?? 0;
    }
    if (live >= expected) return;
    await sleep(20);
  }
  throw new Error(`the server never reported ${expected} live sessions`);
}

const text = (label: string, bytes: number) => (label + ' ' + 'lorem ipsum dolor sit amet '.repeat(Math.ceil(bytes / 27))).slice(0, bytes);

function summarize(h: hdr.Histogram): LatencySummary {
  // Recorded in microseconds; reported in milliseconds.
  const ms = (v: number) => Math.round(v) / 1000;
  return {
    p50: ms(h.getValueAtPercentile(50)),
    p90: ms(h.getValueAtPercentile(90)),
    p99: ms(h.getValueAtPercentile(99)),
    max: ms(h.maxValue),
    mean: ms(h.mean),
  };
}

export async function runRelay(job: RelayJob): Promise<RelayResult> {
  // Every session's handshake is opened and held before the clock starts, so that side A is
  // always first (the baseline knows no sides) and setup never counts as relay time.
  const sessionCount = Math.max(job.sessions, Math.ceil(job.totalTurns / job.turnsPerSession));
  const urls = job.urls ?? [job.url];
  const pools = urls.map((url) => new Pool(url, { connections: sessionCount + job.sessions * 2 + 8, pipelining: 1, keepAliveTimeout: 60_000 }));
  const client = new Client(pools, job.stream);
  // No abort signals: listeners on one shared signal cost O(n) per request. Whatever is still
  // held at the end is cut off by destroying the pool.
  const sessions = Array.from({ length: sessionCount }, (_, i) => {
    const model = `${job.prefix}-${i}`;
    const history: Record<'A' | 'B', Message[]> = { A: [{ role: 'user', content: 'ping' }], B: [] };
    return { model, history, handshake: client.post(model, history.A) };
  });
  await waitForLive(urls, sessionCount);
  await setupDone();

  const histogram = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });
  let turnsLeft = job.totalTurns;
  let turnsDone = 0;
  let nextSession = 0;
  const interval = job.rate ? (1000 * job.sessions) / job.rate : 0;
  const start = performance.now();

  // One slot runs sessions back to back; `sessions` slots run at once.
  async function slot(index: number): Promise<void> {
    let nextStart = start + (interval * index) / job.sessions;
    while (turnsLeft > 0 && nextSession < sessions.length) {
      const turns = Math.min(job.turnsPerSession, turnsLeft);
      turnsLeft -= turns;
      const { model, history, handshake } = sessions[nextSession++]!;
      const pending: Record<'A' | 'B', Promise<string | null> | null> = { A: handshake, B: null };
      let sender: 'A' | 'B' = 'B';
      for (let t = 1; t <= turns; t++) {
        const receiver: 'A' | 'B' = sender === 'A' ? 'B' : 'A';
        const content = text(`${model} ${sender}${t}`, job.messageBytes);
        history[sender].push({ role: 'user', content });
        if (interval > 0) {
          const wait = nextStart - performance.now();
          if (wait > 0) await sleep(wait);
        }
        // Open loop measures from the intended start, so queueing behind a slow turn counts.
        const t0 = interval > 0 ? Math.min(nextStart, performance.now()) : performance.now();
        nextStart += interval;
        pending[sender] = client.post(model, history[sender]);
        const got = await pending[receiver];
        const t1 = performance.now();
        if (got === null) break;
        if (got !== content) client.count('wrong_content');
        histogram.recordValue(Math.max(1, Math.round((t1 - t0) * 1000)));
        turnsDone++;
        history[receiver].push({ role: 'assistant', content: got });
        sender = receiver;
      }
    }
  }

  await Promise.all(Array.from({ length: job.sessions }, (_, i) => slot(i)));
  const elapsedMs = performance.now() - start;
  client.finished = true;
  await Promise.all(pools.map((pool) => pool.destroy()));
  return { turns: turnsDone, elapsedMs, turnsPerSecond: (turnsDone * 1000) / elapsedMs, latency: summarize(histogram), errors: client.errors };
}

export async function runHeld(job: HeldJob): Promise<HeldResult> {
  const pool = new Pool(job.url, { connections: job.sessions * (job.paired ? 2 : 1) + 8, pipelining: 1, keepAliveTimeout: 120_000 });
  const client = new Client(pool, false);
  const abort = new AbortController();
  setMaxListeners(0, abort.signal);
  const batch = 500;
  for (let i = 0; i < job.sessions; i += batch) {
    const n = Math.min(batch, job.sessions - i);
    for (let j = 0; j < n; j++) {
      const model = `${job.prefix}-${i + j}`;
      void client.post(model, [{ role: 'user', content: 'ping' }], abort.signal);
    }
    await waitForLive(job.url, i + n);
    if (job.paired) {
      const answered = Array.from({ length: n }, (_, j) =>
        client.post(`${job.prefix}-${i + j}`, [{ role: 'user', content: text('opening', 200) }], abort.signal),
      );
      void answered;
    }
  }
  await sleep(500);
  return { held: job.sessions, errors: client.errors };
}

/** Tells the orchestrator that setup is over (so it can sample CPU) and waits for its go. */
async function setupDone(): Promise<void> {
  if (!process.send) return;
  process.send({ setupDone: true });
  await once(process, 'message');
}

/** Releases everything the held workload opened. */
export function stopHeld(): void {
  process.exit(0);
}

process.once('message', (job: Job | { kind: 'stop' }) => {
  const run = job.kind === 'relay' ? runRelay(job) : job.kind === 'held' ? runHeld(job) : Promise.resolve(stopHeld());
  run.then(
    (result) => process.send!({ ok: true, result }),
    (err: Error) => process.send!({ ok: false, error: err.stack ?? String(err) }),
  );
});
