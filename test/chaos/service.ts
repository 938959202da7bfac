/**
 * The built service (`dist/src/cli.js`) as a real process in its own process group, on a
 * journal directory and a port that stay the same across kills and restarts. Every process
 * and directory made here is remembered, so that `cleanUp()` (called in afterEach) ends and
 * removes them whatever happened to the run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../helpers/net.js';

const cli = fileURLToPath(new URL('../../dist/src/cli.js', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const children = new Set<ChildProcess>();
const dirs = new Set<string>();

/** SIGKILLs every process group started here and removes every journal directory. */
export function cleanUp(): void {
  for (const child of children) {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  children.clear();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  dirs.clear();
}

export interface JournalLine {
  v: number;
  session: string;
  seq: number;
  type: string;
  side: 'A' | 'B' | null;
  content?: string;
  event?: { reason?: string };
  /** Why a session closed (version-2 records; version 1 had it in `event`). */
  reason?: string;
}

export interface Recovery {
  records: number;
  restored: number;
  dropped: number;
}

interface Proc {
  readonly child: ChildProcess;
  output: string;
  readonly exited: Promise<void>;
}

export class Service {
  readonly url: string;
  private proc: Proc | null = null;

  private constructor(
    readonly dir: string,
    readonly port: number,
    private readonly env: Record<string, string>,
  ) {
    this.url = `http://127.0.0.1:${port}`;
  }

  /** Starts on a free port with a new journal directory. */
  static async start(env: Record<string, string>): Promise<Service> {
    const dir = mkdtempSync(join(tmpdir(), 'chaos-'));
    dirs.add(dir);
    for (let attempt = 0; attempt < 20; attempt++) {
      const service = new Service(dir, await freePort(), env);
      if (await service.tryStart()) return service;
    }
    throw new Error('no free port found');
  }

  get journalFile(): string {
    return join(this.dir, 'journal.jsonl');
  }

  /** The last lines the process wrote (warnings and errors), for a failure report. */
  get output(): string {
    return (this.proc?.output ?? '').split('\n').slice(-20).join('\n');
  }

  /** kill -9 of the whole process group. */
  async kill(): Promise<void> {
    await this.signal('SIGKILL');
  }

  /** A graceful stop: SIGTERM to the whole group; held requests get 503 before it exits. */
  async stop(): Promise<void> {
    await this.signal('SIGTERM');
  }

  /** A new process on the same journal and port; returns what its recovery found. */
  async restart(): Promise<Recovery> {
    for (let attempt = 0; attempt < 100; attempt++) {
      if (await this.tryStart()) return this.recovery();
      await sleep(50);
    }
    throw new Error(`port ${this.port} stayed in use after the service stopped`);
  }

  journalText(): string {
    return existsSync(this.journalFile) ? readFileSync(this.journalFile, 'utf8') : '';
  }

  /** The journal's whole lines, parsed; a line cut by a kill (the service cuts it on start) is skipped. */
  journal(): JournalLine[] {
    const lines = this.journalText().split('\n').slice(0, -1);
    const records: JournalLine[] = [];
    for (const line of lines) {
      try {
        records.push(JSON.parse(line) as JournalLine);
      } catch {
        // torn by a kill
      }
    }
    return records;
  }

  private async recovery(): Promise<Recovery> {
    const health = (await (await fetch(`${this.url}/health`)).json()) as { journal: { recovery: Recovery } };
    return health.journal.recovery;
  }

  private async signal(signal: NodeJS.Signals): Promise<void> {
    const proc = this.proc;
    if (!proc) return;
    try {
      process.kill(-proc.child.pid!, signal);
    } catch {
      // already gone
    }
    await proc.exited;
    this.proc = null;
  }

  /** False when the port is taken; throws when the process fails for another reason. */
  private async tryStart(): Promise<boolean> {
    const child = spawn(process.execPath, [cli, '--port', String(this.port)], {
      detached: true, // its own process group, signalled as a whole
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, JOURNAL_PATH: this.dir, LOG_LEVEL: 'warn', LOG_FORMAT: 'json', ...this.env },
    });
    children.add(child);
    let exited = false;
    const proc: Proc = {
      child,
      output: '',
      exited: new Promise((resolve) =>
        child.once('exit', () => {
          exited = true;
          children.delete(child);
          resolve();
        }),
      ),
    };
    const keep = (chunk: Buffer) => (proc.output = (proc.output + chunk.toString('utf8')).slice(-20_000));
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      if (exited) {
        if (proc.output.includes('EADDRINUSE')) return false;
        throw new Error(`the service exited on start:\n${proc.output}`);
      }
      // Ours, not another test's service that took the port meanwhile: it names our journal.
      const health = await fetch(`${this.url}/health`)
        .then((res) => (res.ok ? (res.json() as Promise<{ journal?: { path?: string } }>) : null))
        .catch(() => null);
      if (health?.journal?.path === this.dir) {
        this.proc = proc;
        return true;
      }
      await sleep(20);
    }
    throw new Error(`the service did not answer on port ${this.port} within 15 s:\n${proc.output}`);
  }
}
