/**
 * Crash points (PROTOCOL.md §3, §4, §5, §8), with real processes, real files and the official
 * OpenAI SDK on both sides: the service (`node dist/src/cli.js`, JOURNAL_FSYNC=always) is
 * SIGKILLed at each point below, restarted at once on the same journal directory and the same
 * port, and the clients' own SDK retries (default maxRetries=2; the application calls again
 * with the same messages only when those run out before the restart listens) complete the
 * conversation:
 *
 *   1. a message queued for a side that is not waiting comes back and is given to that side's
 *      next request, once;
 *   2. both sides' SDK calls in flight across the kill (one held, one sent as the service dies)
 *      re-attach and pair up;
 *   3. right after a delivery was written (receiver answered, sender held), the receiver's
 *      retry of the same request gets the same answer again and nothing is delivered twice;
 *   4. a torn partial line appended to journal.jsonl while the service is down: it starts,
 *      warns, and the conversation goes on;
 *   5. a session deleted before the kill does not come back: /health shows no session and a
 *      request with its old history gets 409 session_conflict.
 *
 * Each scenario proves that every message is delivered exactly once and in order: each side's
 * received contents equal the other side's sent contents (A's handshake excluded), and equal
 * the journal's MessageDelivered records for that side.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI, { APIConnectionError, APIConnectionTimeoutError, APIError } from 'openai';
import { afterEach, describe, expect, it } from 'vitest';

const cli = fileURLToPath(new URL('../../dist/src/cli.js', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Msg = { role: 'user' | 'assistant'; content: string };
const user = (content: string): Msg => ({ role: 'user', content });
const asst = (content: string): Msg => ({ role: 'assistant', content });

async function until(check: () => Promise<boolean> | boolean, what: string, ms = 8000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return;
    await sleep(10);
  }
  throw new Error(`timed out waiting until ${what}`);
}

/** Marks a promise whose outcome the test awaits later as handled now. */
function later<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => undefined);
  return promise;
}

// ---------------------------------------------------------------------------------------------
// The service as a real process

interface Proc {
  readonly child: ChildProcess;
  /** stdout and stderr, as they arrive. */
  output: string;
  readonly exited: Promise<number | null>;
}

const procs: Proc[] = [];
const dirs: string[] = [];
afterEach(() => {
  for (const proc of procs.splice(0)) {
    try {
      process.kill(-proc.child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function launch(dir: string, port: number): Proc {
  const child = spawn(process.execPath, [cli, '--port', String(port)], {
    detached: true, // its own process group, killed as a whole
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      JOURNAL_PATH: dir,
      JOURNAL_FSYNC: 'always',
      LOG_LEVEL: 'warn',
      LOG_FORMAT: 'json',
      TURN_TIMEOUT_SECONDS: '20',
      HANDSHAKE_TIMEOUT_SECONDS: '20',
    },
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const proc: Proc = { child, output: '', exited };
  child.stdout!.on('data', (chunk: Buffer) => (proc.output += chunk.toString('utf8')));
  child.stderr!.on('data', (chunk: Buffer) => (proc.output += chunk.toString('utf8')));
  procs.push(proc);
  return proc;
}

async function healthy(url: string): Promise<boolean> {
  return (await fetch(`${url}/health`).catch(() => null))?.ok === true;
}

/** Starts a process on `port`; 'in-use' when the port is taken. */
async function tryStart(dir: string, port: number): Promise<Proc | 'in-use'> {
  const proc = launch(dir, port);
  const url = `http://127.0.0.1:${port}`;
  let exit: number | null | undefined;
  void proc.exited.then((code) => (exit = code));
  await until(async () => exit !== undefined || (await healthy(url)), `the service on port ${port} answers`, 15_000);
  if (exit === undefined) return proc;
  if (proc.output.includes('EADDRINUSE')) return 'in-use';
  throw new Error(`the service exited with ${exit} on start:\n${proc.output}`);
}

class Service {
  readonly url: string;
  private constructor(
    readonly dir: string,
    readonly port: number,
    public proc: Proc,
  ) {
    this.url = `http://127.0.0.1:${port}`;
  }

  static async start(): Promise<Service> {
    const dir = mkdtempSync(join(tmpdir(), 'crash-'));
    dirs.push(dir);
    for (let attempt = 0; attempt < 20; attempt++) {
      const port = 20000 + Math.floor(Math.random() * 10000);
      const proc = await tryStart(dir, port);
      if (proc !== 'in-use') return new Service(dir, port, proc);
    }
    throw new Error('no free port found in 20000-29999');
  }

  get journalFile(): string {
    return join(this.dir, 'journal.jsonl');
  }

  /** SIGKILLs the whole process group and waits until the process is gone. */
  async kill(): Promise<void> {
    process.kill(-this.proc.child.pid!, 'SIGKILL');
    await this.proc.exited;
  }

  /** A graceful stop: SIGTERM to the whole process group; held requests get 503 first. */
  async stop(): Promise<void> {
    process.kill(-this.proc.child.pid!, 'SIGTERM');
    await this.proc.exited;
  }

  /** A new process on the same journal and the same port, started at once. */
  async restart(): Promise<void> {
    for (let attempt = 0; attempt < 50; attempt++) {
      const proc = await tryStart(this.dir, this.port);
      if (proc !== 'in-use') {
        this.proc = proc;
        return;
      }
      await sleep(20);
    }
    throw new Error(`port ${this.port} stayed in use after the kill`);
  }

  async health(): Promise<Health> {
    return (await (await fetch(`${this.url}/health`)).json()) as Health;
  }

  async inState(state: string, count = 1): Promise<void> {
    await until(async () => ((await this.health()).sessions.by_state[state] ?? 0) === count, `${count} session(s) ${state}`);
  }

  async deleteSession(id: string): Promise<void> {
    const res = await fetch(`${this.url}/v1/sessions/${encodeURIComponent(id)}`, { method: 'DELETE' });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ id, object: 'session', deleted: true });
  }

  client(): OpenAI {
    // The SDK's defaults (maxRetries 2), with a timeout longer than any wait here.
    return new OpenAI({ baseURL: `${this.url}/v1`, apiKey: 'k', timeout: 20_000 });
  }
}

interface Health {
  status: string;
  sessions: { live: number; by_state: Record<string, number> };
  journal: { recovery: { records: number; restored: number; dropped: number } | null };
}

interface JournalLine {
  v: number;
  session: string;
  seq: number;
  type: string;
  side: 'A' | 'B' | null;
  content?: string;
  turn?: { content: string };
}

/** The journal's records; `strict` also requires every line to be whole, well-formed JSON. */
function readJournal(file: string, strict = true): JournalLine[] {
  if (!existsSync(file)) return [];
  const text = readFileSync(file, 'utf8');
  if (strict && text.length > 0) expect(text.endsWith('\n'), 'the journal ends with a whole line').toBe(true);
  const lines = text.split('\n').slice(0, -1); // the part after the last newline is not a whole line
  const records: JournalLine[] = [];
  for (const line of lines) {
    try {
      records.push(JSON.parse(line) as JournalLine);
    } catch (error) {
      if (strict) throw new Error(`journal line is not JSON: ${line}`, { cause: error });
    }
  }
  return records;
}

const deliveredTo = (records: readonly JournalLine[], session: string, side: 'A' | 'B') =>
  records.filter((r) => r.session === session && r.type === 'MessageDelivered' && r.side === side).map((r) => r.content);

// ---------------------------------------------------------------------------------------------
// The two applications

/** How often an application had to call again because the SDK's own retries ran out. */
let applicationRetries = 0;

class Player {
  /** New contents of its new turns, in order (A's handshake excluded). */
  readonly sent: string[] = [];
  /** Contents of the answers it got, one per turn. */
  readonly received: string[] = [];
  private history: Msg[] = [];
  private pending: Msg[] | null = null;
  private lastAnswered: { messages: Msg[]; answer: string } | null = null;

  constructor(
    private readonly client: OpenAI,
    private readonly service: Service,
    private readonly model: string,
  ) {}

  /** A new turn: `content` after its history. The promise is marked handled; await it to see how it ends. */
  say(content: string, options: { handshake?: boolean; signal?: AbortSignal } = {}): Promise<string> {
    if (!options.handshake) this.sent.push(content);
    this.pending = [...this.history, user(content)];
    return later(this.call(this.pending, options.signal));
  }

  /** The application calls again with the same messages (its earlier call failed or was abandoned). */
  again(): Promise<string> {
    if (!this.pending) throw new Error('nothing to call again');
    return later(this.call(this.pending));
  }

  /** Sends the last answered request again, as a retry (X-Stainless-Retry-Count: 1); returns the answer. */
  async repeatAnswered(): Promise<string> {
    const last = this.lastAnswered!;
    const res = await this.client.chat.completions.create(
      { model: this.model, messages: last.messages },
      { headers: { 'X-Stainless-Retry-Count': '1' } },
    );
    return res.choices[0]!.message.content!;
  }

  private async call(messages: Msg[], signal?: AbortSignal): Promise<string> {
    for (let calls = 1; ; calls++) {
      try {
        const res = await this.client.chat.completions.create({ model: this.model, messages }, signal ? { signal } : {});
        const answer = res.choices[0]!.message.content!;
        this.received.push(answer);
        this.history = [...messages, asst(answer)];
        this.pending = null;
        this.lastAnswered = { messages, answer };
        return answer;
      } catch (error) {
        // The SDK's retries ran out while the service was down: call again once it is back.
        const down = error instanceof APIConnectionError && !(error instanceof APIConnectionTimeoutError);
        if (!down || calls >= 4) throw error;
        applicationRetries++;
        await until(() => healthy(this.service.url), 'the service is back', 15_000);
      }
    }
  }
}

/** A starts (handshake 'ping'), B opens with b1, then A answers a1; A is left held. */
async function opening(service: Service, model: string): Promise<{ a: Player; b: Player; a1: Promise<string> }> {
  const a = new Player(service.client(), service, model);
  const b = new Player(service.client(), service, model);
  const handshake = a.say('ping', { handshake: true });
  await service.inState('AWAITING_PEER');
  const b1 = b.say('b1');
  expect(await handshake).toBe('b1');
  const a1 = a.say('a1');
  expect(await b1).toBe('a1');
  return { a, b, a1 };
}

/** Exactly once, in order: what each side got is what the other sent, and what the journal says it was given. */
function expectExactlyOnce(service: Service, model: string, a: Player, b: Player, records = readJournal(service.journalFile)): void {
  expect(a.received).toEqual(b.sent);
  expect(b.received).toEqual(a.sent);
  expect(deliveredTo(records, model, 'A')).toEqual(a.received);
  expect(deliveredTo(records, model, 'B')).toEqual(b.received);
}

/** Ends the session; the request still held gets 410 session_closed (which no SDK retries). */
async function endSession(service: Service, model: string, held: Promise<string>): Promise<void> {
  await service.deleteSession(model);
  await expect(held).rejects.toMatchObject({ status: 410, code: 'session_closed' });
}

// ---------------------------------------------------------------------------------------------

describe('crash (SIGKILL) and restart on the same journal and port', () => {
  it('1. a message queued for a side that is not waiting is given to its next request after the restart, once', async () => {
    const service = await Service.start();
    const model = 'crash-queued';
    const { a, b, a1 } = await opening(service, model);
    const controller = new AbortController();
    const b2 = b.say('b2', { signal: controller.signal });
    expect(await a1).toBe('b2');
    await service.inState('ACTIVE'); // B is held for A's next message
    controller.abort(); // B's application gives up on its request
    await expect(b2).rejects.toThrow();
    await service.inState('DORMANT'); // nobody waits now

    const a2 = a.say('a2'); // B is not waiting: a2 is queued for it, A is held
    await service.inState('ACTIVE');
    await until(
      () => readJournal(service.journalFile, false).some((r) => r.type === 'MessageSent' && r.side === 'A' && r.turn?.content === 'a2'),
      'a2 is in the journal',
    );
    expect(deliveredTo(readJournal(service.journalFile, false), model, 'B')).toEqual(['a1']);

    await service.kill(); // A's call is in flight: its SDK retries
    await service.restart();
    expect((await service.health()).journal.recovery).toMatchObject({ restored: 1 });

    // B's application calls again with the same messages: the queued a2 is its answer.
    expect(await b.again()).toBe('a2');
    const b3 = b.say('b3');
    expect(await a2).toBe('b3'); // A's SDK retry (or its application's call) gets B's next message
    const a3 = a.say('a3');
    expect(await b3).toBe('a3');
    await endSession(service, model, a3);

    expect(a.sent).toEqual(['a1', 'a2', 'a3']);
    expect(b.sent).toEqual(['b1', 'b2', 'b3']);
    expectExactlyOnce(service, model, a, b);
  });

  it('2. both sides in flight across the kill re-attach and pair up', async () => {
    const service = await Service.start();
    const model = 'crash-held';
    const { a, b, a1 } = await opening(service, model);
    const b2 = b.say('b2');
    expect(await a1).toBe('b2');
    const a2 = a.say('a2');
    expect(await b2).toBe('a2');
    await service.inState('ACTIVE'); // A is held for B's next message

    // B sends b3 as the service dies: both SDK calls are in flight across the kill and restart.
    const killed = service.kill();
    const b3 = b.say('b3');
    await killed;
    await service.restart();

    expect(await a2).toBe('b3');
    const a3 = a.say('a3');
    expect(await b3).toBe('a3');
    await endSession(service, model, a3);

    expect(a.sent).toEqual(['a1', 'a2', 'a3']);
    expect(b.sent).toEqual(['b1', 'b2', 'b3']);
    expectExactlyOnce(service, model, a, b);
  });

  it("3. right after a delivery was written, the receiver's retry gets the same answer again, and nothing is delivered twice", async () => {
    const service = await Service.start();
    const model = 'crash-delivered';
    const { a, b, a1 } = await opening(service, model);
    const b2 = b.say('b2');
    expect(await a1).toBe('b2');
    const a2 = a.say('a2');
    expect(await b2).toBe('a2'); // B got its answer; A is held
    await service.kill();
    // §8: a delivery is in the journal before the response that carries it.
    expect(deliveredTo(readJournal(service.journalFile, false), model, 'B')).toEqual(['a1', 'a2']);
    await service.restart();

    // B's client retries the request it already got an answer to: the same answer, not a new delivery.
    expect(await b.repeatAnswered()).toBe('a2');
    const b3 = b.say('b3');
    expect(await a2).toBe('b3'); // A's call re-attached and got B's next message
    const a3 = a.say('a3');
    expect(await b3).toBe('a3');
    await endSession(service, model, a3);

    expect(a.sent).toEqual(['a1', 'a2', 'a3']);
    expect(b.sent).toEqual(['b1', 'b2', 'b3']);
    expectExactlyOnce(service, model, a, b);
  });

  it('4. a torn partial line appended to the journal: the service starts, warns, and the conversation goes on', async () => {
    const service = await Service.start();
    const model = 'crash-torn';
    const { a, b, a1 } = await opening(service, model);
    await service.inState('ACTIVE'); // A is held for B's next message
    await service.kill();
    appendFileSync(service.journalFile, '{"v":1,"session":"x","se');
    await service.restart();

    await until(() => /torn/i.test(service.proc.output), 'the service warns about the torn line');
    const warning = service.proc.output.split('\n').find((line) => /torn/i.test(line))!;
    expect(JSON.parse(warning)).toMatchObject({ level: 40 }); // pino's warn
    expect((await service.health()).journal.recovery).toMatchObject({ restored: 1 });

    const b2 = b.say('b2');
    expect(await a1).toBe('b2');
    const a2 = a.say('a2');
    expect(await b2).toBe('a2');
    await endSession(service, model, a2);

    expect(a.sent).toEqual(['a1', 'a2']);
    expect(b.sent).toEqual(['b1', 'b2']);
    const records = readJournal(service.journalFile); // every line whole and well-formed again
    expect(records.some((r) => r.session === 'x')).toBe(false);
    expectExactlyOnce(service, model, a, b, records);
  });

  it('5. a session deleted before the kill does not come back; its old history gets 409 session_conflict', async () => {
    const service = await Service.start();
    const model = 'crash-deleted';
    const { a, b, a1 } = await opening(service, model);
    const b2 = b.say('b2');
    expect(await a1).toBe('b2');
    await service.inState('ACTIVE'); // B is held
    await endSession(service, model, b2);
    const before = readJournal(service.journalFile);
    expect(before.some((r) => r.session === model && r.type === 'SessionClosed')).toBe(true);
    expect(a.sent).toEqual(['a1']);
    expect(b.sent).toEqual(['b1', 'b2']);
    // b2 was never received: the session ended while B waited for its answer.
    expect(a.received).toEqual(['b1', 'b2']);
    expect(b.received).toEqual(['a1']);
    expect(deliveredTo(before, model, 'A')).toEqual(['b1', 'b2']);
    expect(deliveredTo(before, model, 'B')).toEqual(['a1']);

    await service.kill();
    await service.restart();

    const health = await service.health();
    expect(health.sessions.live).toBe(0);
    expect(health.sessions.by_state).toEqual({});
    expect(health.journal.recovery).toMatchObject({ restored: 0, dropped: 1 });
    expect(readJournal(service.journalFile).filter((r) => r.session === model)).toEqual([]);

    // A's application goes on with its old history: refused, and no SDK retries it.
    const old = [user('ping'), asst('b1'), user('a1'), asst('b2'), user('a2')];
    const refused = await service
      .client()
      .chat.completions.create({ model, messages: old })
      .then(
        () => null,
        (error: unknown) => error,
      );
    expect(refused).toBeInstanceOf(APIError);
    expect(refused).toMatchObject({ status: 409, code: 'session_conflict' });
    expect((refused as APIError).headers?.get('x-should-retry')).toBe('false');
    expect((refused as APIError).message).toMatch(/earlier conversation|restart/);
    expect((await service.health()).sessions.live).toBe(0); // the refused request did not bring it back either

    // A new conversation under the same id starts afresh.
    const c = new Player(service.client(), service, model);
    const d = new Player(service.client(), service, model);
    const handshake = c.say('hello', { handshake: true });
    await service.inState('AWAITING_PEER');
    const d1 = d.say('d1');
    expect(await handshake).toBe('d1');
    await endSession(service, model, d1);
    const after = readJournal(service.journalFile);
    expect(deliveredTo(after, model, 'A')).toEqual(['d1']);
    expect(deliveredTo(after, model, 'B')).toEqual([]);
  });

  it('6. a second restart, graceful or not, rebuilds exactly what the clients were given: no request of before counts as held', async () => {
    const service = await Service.start();
    const model = 'crash-twice';
    const raw = (messages: Msg[]) => later(new OpenAI({ baseURL: `${service.url}/v1`, apiKey: 'k', maxRetries: 0, timeout: 20_000 }).chat.completions.create({ model, messages }));
    const said = async (call: Promise<OpenAI.Chat.Completions.ChatCompletion>) => (await call).choices[0]!.message.content;
    const history = { A: [user('ping'), asst('b1'), user('a1')], B: [user('b1'), asst('a1')] };

    const handshake = raw([user('ping')]);
    await service.inState('AWAITING_PEER');
    const b1 = raw([user('b1')]);
    expect(await said(handshake)).toBe('b1');
    const a1 = raw(history.A); // A is held on its turn a1 ...
    expect(await said(b1)).toBe('a1');
    await service.inState('ACTIVE');
    await service.kill(); // ... when the process is killed
    await expect(a1).rejects.toThrow();
    await service.restart();

    // B says b2, then b3 before an answer; both are queued for A, whose retry gets them as one delivery.
    const b2 = raw([...history.B, user('b2')]);
    await service.inState('ACTIVE');
    const b3 = raw([...history.B, user('b2'), user('b3')]);
    await expect(b2).rejects.toMatchObject({ status: 409, code: 'superseded' });
    expect(await said(raw(history.A))).toBe('b2\n\nb3');
    history.A.push(asst('b2\n\nb3'));

    // A graceful restart (B's held request gets 503), then a kill, then another start.
    await service.stop();
    await expect(b3).rejects.toMatchObject({ status: 503 });
    await service.restart();
    // A's next turn, with exactly the history it was given, is accepted: it goes to B's retry.
    const a2 = raw([...history.A, user('a2')]);
    await service.inState('ACTIVE');
    await service.kill();
    await expect(a2).rejects.toThrow();
    await service.restart();
    const bRetry = raw([...history.B, user('b2'), user('b3')]);
    expect(await said(bRetry)).toBe('a2');
    // And a message queued for A before a graceful restart reaches A after two more.
    const b4 = raw([...history.B, user('b2'), user('b3'), asst('a2'), user('b4')]);
    await service.inState('ACTIVE');
    await service.stop();
    await expect(b4).rejects.toMatchObject({ status: 503 });
    await service.restart();
    await service.stop();
    await service.restart();
    expect(await said(raw([...history.A, user('a2')]))).toBe('b4');

    const records = readJournal(service.journalFile);
    expect(deliveredTo(records, model, 'A')).toEqual(['b1', 'b2\n\nb3', 'b4']);
    expect(deliveredTo(records, model, 'B')).toEqual(['a1', 'a2']);
    expect(records.filter((r) => r.session === model && r.type === 'SessionResumed')).toHaveLength(5);
  });

  afterEach(({ task }) => {
    if (process.env.CRASH_TEST_VERBOSE) console.log(`${task.name}: ${applicationRetries} application retries`);
    applicationRetries = 0;
  });
});
