/**
 * What a chaos run shares between its actors: the run's counters, a timestamped trace of what
 * every client and the saboteur did (printed for a failing session), and each session's
 * conversation, which knows when both sides have said and received everything.
 */
import type { ChatApp } from './chat-app.js';

export type Side = 'A' | 'B';

export class Counters {
  calls = 0;
  streams = 0;
  /** Requests the clients gave up on themselves (random, or just as the other side spoke). */
  aborts = 0;
  /** The same body again after the client's own abort. */
  resends = 0;
  /** A new message after one that got no answer (kept in the history), instead of a re-send. */
  doubleSends = 0;
  /** The application called again after an error its SDK's own retries did not mend. */
  appRetries = 0;
  /** The client's own call was superseded (by its own later request). */
  superseded = 0;
  kills = 0;
  restarts = 0;
  /** HTTP statuses as the SDK saw them, its own retries included. */
  readonly statuses = new Map<number, number>();
  /** Errors the applications saw, by kind (`503`, `turn_timeout`, `connection`, …). */
  readonly errors = new Map<string, number>();

  status(code: number): void {
    this.statuses.set(code, (this.statuses.get(code) ?? 0) + 1);
  }

  error(kind: string): void {
    this.errors.set(kind, (this.errors.get(kind) ?? 0) + 1);
  }
}

export class Trace {
  private readonly lines: { session: string | null; text: string }[] = [];
  private readonly started = Date.now();

  note(session: string | null, text: string): void {
    const at = ((Date.now() - this.started) / 1000).toFixed(3).padStart(8);
    this.lines.push({ session, text: `${at}s ${session ?? '(service)'} ${text}` });
    if (this.lines.length > 50_000) this.lines.splice(0, 10_000);
  }

  /** The latest lines about `session` and the service. */
  tail(session: string, count = 120): string {
    return this.lines
      .filter((line) => line.session === session || line.session === null)
      .slice(-count)
      .map((line) => line.text)
      .join('\n');
  }
}

export class Conversation {
  readonly sides = {} as Record<Side, ChatApp>;
  finished = false;
  /** The first broken invariant, which ends this conversation. */
  failure: string | null = null;
  private stopped = false;
  private settle!: () => void;
  /** Resolves when the conversation finished, failed or was stopped. */
  readonly ended = new Promise<void>((resolve) => (this.settle = resolve));

  constructor(
    readonly session: string,
    /** Each side says at least this many messages (A's handshake aside). */
    readonly messages: number,
    readonly trace: Trace,
  ) {}

  get over(): boolean {
    return this.finished || this.failure !== null || this.stopped;
  }

  /** How many messages both sides have typed so far. */
  get typed(): number {
    return this.sides.A.sent.length + this.sides.B.sent.length;
  }

  /** Both sides said their share and each received all the other said: the clients stop. */
  checkFinished(): void {
    const { A, B } = this.sides;
    if (this.over || A.sent.length < this.messages || B.sent.length < this.messages) return;
    if (A.parts.length !== B.sent.length || B.parts.length !== A.sent.length) return;
    this.finished = true;
    this.trace.note(this.session, 'finished: each side received all the other said');
    this.end();
  }

  fail(side: Side | null, what: string): void {
    if (this.over) return;
    this.failure = `${this.session}${side ? ` side ${side}` : ''}: ${what}`;
    this.trace.note(this.session, `FAILED: ${what}`);
    this.end();
  }

  /** The run's deadline passed. */
  stop(): void {
    if (this.over) return;
    this.stopped = true;
    this.end();
  }

  private end(): void {
    this.sides.A.abandon();
    this.sides.B.abandon();
    this.settle();
  }
}
