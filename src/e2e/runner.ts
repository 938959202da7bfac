/**
 * A client runner: one OS process that plays ONE side (A or B) of one or more sessions
 * against the proxy, over HTTP/WebSocket only, and records what it sent, what it received and
 * every HTTP attempt in each session's own file. The orchestrator (command.ts) starts one
 * runner per side; the two sides of a session are never in the same process.
 *
 *   node runner.js JOB.json
 *
 * Stdout carries progress lines (JSON) for the orchestrator; after printing {"p":"ready"} the
 * runner waits for a line `go` on stdin, so that every session starts at once.
 */
import { createWriteStream, readFileSync, type WriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentProcess } from './agent-host.js';
import { CallError, classify, createClient, now, type CallResult, type ChatClient, type ClientContext } from './clients.js';
import { rng } from './rng.js';
import type { AttemptEvent, ProgressLine, RecordEvent, RunnerJob, SideJob } from './types.js';

const progress = (line: ProgressLine): void => {
  process.stdout.write(`${JSON.stringify(line)}\n`);
};

/** Long enough for a person or an LLM behind an agent; scripted agents answer at once. */
const AGENT_SILENCE_MS = 10 * 60_000;

class Recorder {
  private readonly out: WriteStream;

  constructor(path: string) {
    this.out = createWriteStream(path, { flags: 'a' });
  }

  write(event: RecordEvent): void {
    this.out.write(`${JSON.stringify(event)}\n`);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.out.end(resolve));
  }
}

/**
 * A side whose every request so far failed without an answer (connection refused, reset, no
 * response) gives up after this long, instead of calling again for as long as its scenario
 * allows: the service is not there.
 */
const UNREACHABLE_MS = 10_000;
/** How long the model list may answer with errors (a service shedding load) before a side gives up. */
const MODEL_LIST_ERRORS_MS = 60_000;

/** One poller per process: which sessions are listed as joinable (GET /v1/models). */
class PeerWatch {
  private readonly waiting = new Map<string, { resolve: () => void; reject: (err: Error) => void }>();
  private running = false;

  constructor(
    private readonly url: string,
    private readonly apiKey: string,
  ) {}

  listed(session: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiting.set(session, { resolve, reject });
      if (!this.running) void this.poll();
    });
  }

  /** The session's other side ended before it was listed: stop waiting for it. */
  abandon(session: string, error: CallError): void {
    this.waiting.get(session)?.reject(error);
    this.waiting.delete(session);
  }

  private giveUp(error: CallError): void {
    for (const { reject } of this.waiting.values()) reject(error);
    this.waiting.clear();
  }

  private async poll(): Promise<void> {
    this.running = true;
    // Since when every poll has failed to get a model list.
    let failingSince: number | null = null;
    while (this.waiting.size > 0) {
      let failure: { connection: boolean; message: string } | null = null;
      try {
        const res = await fetch(`${this.url}/v1/models`, { headers: { authorization: `Bearer ${this.apiKey}` }, signal: AbortSignal.timeout(5000) });
        if (res.status === 401 || res.status === 403) {
          await res.body?.cancel();
          this.giveUp(new CallError(`GET /v1/models answered ${res.status}: the service refuses this API key (see --api-key)`, `status_${res.status}`, false));
          break;
        }
        const body = (await res.json().catch(() => ({}))) as { data?: Array<{ id: string }> };
        if (!Array.isArray(body.data)) failure = { connection: false, message: `GET /v1/models answered ${res.status} without a model list` };
        for (const { id } of body.data ?? []) {
          const waiter = this.waiting.get(id);
          if (waiter) {
            this.waiting.delete(id);
            waiter.resolve();
          }
        }
      } catch (err) {
        const e = err as Error & { cause?: { code?: string } };
        failure = { connection: true, message: `GET /v1/models: ${e.name === 'TimeoutError' ? 'no answer within 5 s' : `${e.message}${e.cause?.code ? ` (${e.cause.code})` : ''}`}` };
      }
      if (failure === null) failingSince = null;
      else {
        failingSince ??= now();
        const limit = failure.connection ? UNREACHABLE_MS : MODEL_LIST_ERRORS_MS;
        if (now() - failingSince >= limit) {
          this.giveUp(new CallError(`the service at ${this.url} did not list its sessions for ${Math.round(limit / 1000)} s: ${failure.message}`, 'unreachable', false));
          break;
        }
      }
      if (this.waiting.size > 0) await sleep(40);
    }
    this.running = false;
  }
}

class SidePlayer {
  private readonly rec: Recorder;
  private readonly random;
  private readonly current = { i: 0 };
  private client: ChatClient | null = null;
  private lastWasDelivery = false;
  /** HTTP attempts per message index. */
  private readonly attempts = new Map<number, number>();
  /** Whether any request of this side got an answer (a status) from the service. */
  private reached = false;
  /** When the first request of this side failed without an answer, while none had one. */
  private unreachableSince: number | null = null;
  /** The latest HTTP attempt, whose error says more than an SDK's "Connection error.". */
  private lastAttempt: AttemptEvent | null = null;

  constructor(
    private readonly job: RunnerJob,
    private readonly side: SideJob,
    private readonly peers: PeerWatch,
  ) {
    this.rec = new Recorder(side.recordPath);
    this.random = rng(side.seed);
  }

  async prepare(): Promise<void> {
    const { side } = this;
    this.rec.write({ ev: 'start', t: now(), session: side.session, side: side.side, protocol: side.protocol, stream: side.stream, pid: process.pid, agent: side.agent?.label ?? null });
    const ctx: ClientContext = {
      url: this.job.url,
      apiKey: this.job.apiKey,
      session: side.session,
      side: side.side,
      stream: side.stream,
      current: this.current,
      record: (event) => {
        this.attempts.set(event.i, (this.attempts.get(event.i) ?? 0) + 1);
        this.lastAttempt = event;
        if (event.status !== null) this.reached = true;
        else if (!event.injected) this.unreachableSince ??= event.t;
        this.rec.write(event);
      },
      recordStream: (event) => this.rec.write(event),
      injection: side.injection,
      random: this.random,
    };
    this.client = await createClient(side.protocol, ctx);
  }

  async play(): Promise<void> {
    const { side } = this;
    let ok = false;
    let reason = 'finished';
    try {
      if (side.agent) reason = await this.playAgent(side.agent.command);
      else reason = await this.playScript(side.script ?? []);
      ok = true;
    } catch (err) {
      const e = err instanceof CallError ? err : classify(err);
      this.rec.write({ ev: 'error', t: now(), i: this.current.i, message: e.message, code: e.code });
      progress({ p: 'error', s: side.session, m: e.message.slice(0, 200) });
      reason = e.message;
      // Abandon the conversation as an application would: close the session, so that the
      // other side is told (410) instead of waiting through its timeouts and retries.
      if (e.code !== 'closed_early') await this.abandon();
    } finally {
      await this.client?.close().catch(() => undefined);
      this.rec.write({ ev: 'end', t: now(), ok, reason });
      await this.rec.close();
      progress({ p: 'done', s: side.session, ok });
    }
  }

  private async join(): Promise<void> {
    if (this.side.waitForPeer) await this.peers.listed(this.side.session);
    if (this.side.startDelayMs > 0) await sleep(this.side.startDelayMs);
  }

  private async playScript(script: readonly string[]): Promise<string> {
    await this.join();
    for (let i = 0; i < script.length; i++) {
      const think = this.side.thinkMs[i] ?? 0;
      if (think > 0) await sleep(think);
      const result = await this.say(i, script[i]!);
      if (result.type === 'closed') {
        if (i < script.length - 1) throw new CallError(`the session was closed before message ${i + 1} of ${script.length} was answered`, 'closed_early', false);
        return 'the peer closed the session after my last message';
      }
      await this.maybeDuplicate(i, script[i]!, result.content);
    }
    await this.deleteSession();
    return 'received the last message and closed the session';
  }

  private async playAgent(command: string): Promise<string> {
    const agent = new AgentProcess(command, { E2E_SESSION: this.side.session, E2E_SIDE: this.side.side, E2E_URL: this.job.url }, (line) =>
      process.stderr.write(`[agent ${this.side.session} ${this.side.side}] ${line}\n`),
    );
    try {
      agent.send({ type: 'start', session: this.side.session, side: this.side.side, handshake: this.side.side === 'A' });
      let joined = false;
      for (let i = 0; ; ) {
        const output = await agent.next(AGENT_SILENCE_MS);
        if (output.type === 'note') {
          this.rec.write({ ev: 'note', t: now(), data: output.data });
          continue;
        }
        if (output.type === 'end') {
          if (this.lastWasDelivery) await this.deleteSession();
          return 'the agent ended the game';
        }
        if (!joined) {
          await this.join();
          joined = true;
        }
        const result = await this.say(i, output.content);
        i++;
        if (result.type === 'closed') {
          agent.send({ type: 'closed' });
          await this.drainNotes(agent);
          return 'the peer ended the game';
        }
        agent.send({ type: 'message', content: result.content });
        if (i >= this.side.maxTurns) {
          this.rec.write({ ev: 'note', t: now(), data: { type: 'note', turn_cap: this.side.maxTurns } });
          await this.deleteSession();
          agent.send({ type: 'closed' });
          return `reached the cap of ${this.side.maxTurns} messages and closed the session`;
        }
      }
    } finally {
      await agent.stop();
    }
  }

  /** Notes an agent writes after it learned the game is over. */
  private async drainNotes(agent: AgentProcess): Promise<void> {
    for (;;) {
      const output = await agent.next(2000).catch(() => null);
      if (!output) return;
      if (output.type === 'note') this.rec.write({ ev: 'note', t: now(), data: output.data });
    }
  }

  /** One message: the SDK's call (with its own retries), then the application's re-calls. */
  private async say(i: number, content: string): Promise<CallResult> {
    this.current.i = i;
    const t0 = now();
    this.rec.write({ ev: 'send', t: t0, i, content, handshake: this.side.side === 'A' && i === 0 });
    let again = false;
    for (let delay = 250; ; delay = Math.min(delay * 2, 2000)) {
      try {
        const result = await this.client!.call(content, { again });
        this.lastWasDelivery = result.type === 'delivery';
        if (result.type === 'delivery') {
          this.rec.write({ ev: 'recv', t: now(), i, content: result.content, firstChunkAt: result.firstChunkAt });
          progress({ p: 'recv', s: this.side.session });
        } else {
          this.rec.write({ ev: 'closed', t: now(), i, by: 'peer' });
        }
        return result;
      } catch (err) {
        let error = classify(err);
        const last = this.lastAttempt;
        if (last && last.i === i && last.status === null && !last.injected && last.error && !error.message.includes(last.error)) {
          error = new CallError(`${error.message} (${last.path}: ${last.error})`, error.code, error.retryable);
        }
        const script = this.side.script;
        if (error.code === 'session_conflict' && script && i === script.length - 1 && (this.attempts.get(i) ?? 0) > 1) {
          // The peer got this last message and closed the session before a retry of it arrived.
          this.rec.write({ ev: 'closed', t: now(), i, by: 'deleted-before-retry' });
          return { type: 'closed' };
        }
        if (!this.reached && this.unreachableSince !== null && now() - this.unreachableSince >= UNREACHABLE_MS) {
          throw new CallError(`the service at ${this.job.url} never answered this side (no answer for ${Math.round((now() - this.unreachableSince) / 1000)} s): ${error.message}`, 'unreachable', false);
        }
        if (!error.retryable || now() - t0 > this.side.appRetryMs) throw error;
        // What the docs tell applications: after the SDK's retries, call again with the same
        // messages; the proxy recognises the repeat and nothing is lost or doubled.
        this.rec.write({ ev: 'app-retry', t: now(), i, error: `${error.code}: ${error.message.slice(0, 200)}` });
        again = true;
        await sleep(delay);
      }
    }
  }

  /** retry-storm: the application sends the same request again; it must get the same answer. */
  private async maybeDuplicate(i: number, content: string, answer: string): Promise<void> {
    const injection = this.side.injection;
    if (!injection || !this.client!.hasHistory || this.random() >= injection.duplicateRate) return;
    const result = await this.client!.call(content, { again: true }).catch((err: unknown) => {
      throw classify(err);
    });
    const got = result.type === 'delivery' ? result.content : '(session closed)';
    this.rec.write({ ev: 'duplicate', t: now(), i, same: got === answer, content: got });
  }

  private async abandon(): Promise<void> {
    const sentAt = now();
    try {
      const res = await fetch(`${this.job.url}/v1/sessions/${encodeURIComponent(this.side.session)}`, {
        method: 'DELETE',
        headers: { authorization: `Bearer ${this.job.apiKey}` },
        signal: AbortSignal.timeout(5000),
      });
      await res.body?.cancel();
      this.rec.write({ ev: 'deleted', t: now(), sentAt, status: res.status });
    } catch {
      // the service is gone; nobody is waiting
    }
  }

  /**
   * Closes the session (DELETE /v1/sessions/{id}), retrying what an SDK would retry: a busy or
   * restarting service (429, 5xx, honouring Retry-After) and lost connections.
   */
  private async deleteSession(): Promise<void> {
    const t0 = now();
    const budgetMs = Math.max(this.side.appRetryMs, 30_000);
    for (let delay = 250; ; delay = Math.min(delay * 2, 2000)) {
      const sentAt = now();
      const base = { ev: 'http' as const, t: sentAt, i: this.current.i, method: 'DELETE', path: '/v1/sessions/{id}', retryCount: 0 };
      let wait = delay;
      try {
        const res = await fetch(`${this.job.url}/v1/sessions/${encodeURIComponent(this.side.session)}`, {
          method: 'DELETE',
          headers: { authorization: `Bearer ${this.job.apiKey}` },
        });
        await res.body?.cancel();
        this.rec.write({ ...base, status: res.status, headersAt: now() });
        const busy = res.status === 429 || res.status >= 500;
        if (!busy) {
          this.rec.write({ ev: 'deleted', t: now(), sentAt, status: res.status });
          if (res.status !== 200) throw new CallError(`closing the session answered ${res.status}`, `status_${res.status}`, false);
          return;
        }
        if (now() - t0 > budgetMs) throw new CallError(`closing the session still answered ${res.status} after ${Math.round(budgetMs / 1000)} s`, `status_${res.status}`, false);
        const retryAfter = Number(res.headers.get('retry-after'));
        if (retryAfter > 0) wait = Math.min(retryAfter * 1000, 10_000);
      } catch (err) {
        if (err instanceof CallError) throw err;
        this.rec.write({ ...base, status: null, headersAt: null, error: (err as Error).message });
        if (now() - t0 > budgetMs) throw classify(err);
      }
      await sleep(wait);
    }
  }
}

async function main(): Promise<void> {
  const path = process.argv[2];
  if (!path) throw new Error('usage: runner.js JOB.json');
  const job = JSON.parse(readFileSync(path, 'utf8')) as RunnerJob;
  const peers = new PeerWatch(job.url, job.apiKey);
  const players = job.sides.map((side) => new SidePlayer(job, side, peers));
  await Promise.all(players.map((p) => p.prepare()));
  progress({ p: 'ready' });
  let started = false;
  await new Promise<void>((resolve, reject) => {
    const lines = createInterface({ input: process.stdin });
    lines.on('line', (line) => {
      const command = line.trim();
      if (command === 'go') {
        started = true;
        resolve();
      } else if (command.startsWith('peer-failed ')) {
        // The orchestrator: the other side of this session failed and ended.
        const session = command.slice('peer-failed '.length);
        peers.abandon(session, new CallError('the other side failed and ended before this session was listed as joinable', 'peer_failed', false));
      }
    });
    // The orchestrator keeps stdin open until this process ends: if it closes, it is gone.
    lines.on('close', () => {
      if (!started) reject(new Error('the orchestrator went away before the start'));
      else process.exit(3);
    });
  });
  await Promise.all(players.map((p) => p.play()));
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`runner: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
