/**
 * The agent line protocol: how a runner lets an external program decide what its side says.
 * The program reads JSON lines on stdin and writes JSON lines on stdout (docs/e2e.md):
 *
 *   runner → agent  {"type":"start","session","side","handshake"}   once, first
 *                   {"type":"message","content"}                     what the other side said
 *                   {"type":"closed"}                                the other side ended it
 *   agent → runner  {"type":"say","content"}                         send this as my next message
 *                   {"type":"end"}                                   I am done: close the session
 *                   {"type":"note", …}                               anything, kept in the report
 *
 * A stdout line that is not JSON is said as it is (so `echo`-style scripts work); an empty
 * line is ignored. Side A's first `say` is its handshake, which the proxy never forwards.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

export type AgentOutput = { readonly type: 'say'; readonly content: string } | { readonly type: 'end' } | { readonly type: 'note'; readonly data: unknown };

export class AgentProcess {
  private readonly child: ChildProcess;
  private readonly queue: AgentOutput[] = [];
  private waiter: (() => void) | null = null;
  private exited: string | null = null;

  constructor(command: string, env: Record<string, string>, onStderr: (line: string) => void) {
    // A shell runs the command, so users can write `python3 agent.py --model x`.
    this.child = spawn(command, { shell: true, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    this.child.stdin!.on('error', () => undefined); // an agent that exits early must not crash the runner
    createInterface({ input: this.child.stdout! }).on('line', (line) => this.onLine(line));
    createInterface({ input: this.child.stderr! }).on('line', onStderr);
    this.child.on('error', (err) => this.finish(`could not start: ${err.message}`));
    this.child.on('close', (code, signal) => this.finish(`exited with ${signal ?? code}`));
  }

  private finish(why: string): void {
    this.exited ??= why;
    this.waiter?.();
  }

  private onLine(line: string): void {
    const text = line.trim();
    if (text === '') return;
    let output: AgentOutput;
    try {
      const json = JSON.parse(text) as { type?: string; content?: unknown };
      if (json.type === 'say' && typeof json.content === 'string') output = { type: 'say', content: json.content };
      else if (json.type === 'end') output = { type: 'end' };
      else if (json.type === 'note') output = { type: 'note', data: json };
      else output = { type: 'say', content: text };
    } catch {
      output = { type: 'say', content: line };
    }
    this.queue.push(output);
    this.waiter?.();
  }

  send(message: Record<string, unknown>): void {
    if (this.exited === null && this.child.stdin!.writable) this.child.stdin!.write(`${JSON.stringify(message)}\n`);
  }

  /** The agent's next say/end/note; throws when it exits or stays silent past `timeoutMs`. */
  async next(timeoutMs: number): Promise<AgentOutput> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const output = this.queue.shift();
      if (output) return output;
      if (this.exited !== null) throw new Error(`the agent ${this.exited} without saying anything more`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`the agent said nothing for ${Math.round(timeoutMs / 1000)} s`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = null;
    }
  }

  /** Closes its stdin and gives it a moment to exit before it is killed. */
  async stop(): Promise<void> {
    this.child.stdin!.end();
    if (this.exited !== null) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.child.kill('SIGKILL');
        resolve();
      }, 2000);
      this.child.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
