/**
 * The service under test, run as a real process (`node dist/src/cli.js --port P`) in its own
 * process group, with its log (JSON lines) collected in a file. It can be stopped gracefully,
 * killed with SIGKILL and started again on the same port and journal.
 */
import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './net.js';
import { CLI_PATH, closed, isRunning, signalGroup, spawnGroup, stopGroup } from './processes.js';

export interface ServiceHealth {
  status: string;
  sessions?: { live: number; max: number };
  journal?: { recovery?: { restored?: number; dropped?: number; records?: number } | null };
}

export class ServiceProcess {
  private child: ChildProcess | null = null;
  starts = 0;

  private constructor(
    readonly url: string,
    private readonly port: number,
    private readonly env: Record<string, string>,
    readonly logPath: string,
  ) {}

  /** Starts the service on a free port with `env` over the harness's own environment. */
  static async start(env: Record<string, string>, logPath: string): Promise<ServiceProcess> {
    const port = await freePort();
    const service = new ServiceProcess(`http://127.0.0.1:${port}`, port, env, logPath);
    await service.launch();
    return service;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Starts (or restarts) the process and waits until /health answers. */
  async launch(): Promise<void> {
    const child = spawnGroup(process.execPath, [CLI_PATH, '--host', '127.0.0.1', '--port', String(this.port)], {
      logPath: this.logPath,
      env: { ...process.env, LOG_FORMAT: 'json', ...this.env },
    });
    this.child = child;
    this.starts++;
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      if (!isRunning(child)) throw new Error(`the service exited with ${child.exitCode ?? child.signalCode} before answering /health (see ${this.logPath})`);
      if ((await this.health()) !== null) return;
      await sleep(50);
    }
    throw new Error(`the service did not answer ${this.url}/health within 60 s (see ${this.logPath})`);
  }

  async health(): Promise<ServiceHealth | null> {
    try {
      const res = await fetch(`${this.url}/health`, { signal: AbortSignal.timeout(5000) });
      return res.ok ? ((await res.json()) as ServiceHealth) : null;
    } catch {
      return null;
    }
  }

  /** SIGKILL to the whole group: no shutdown, no flush, as a crash. */
  async kill(): Promise<void> {
    if (!this.child) return;
    signalGroup(this.child, 'SIGKILL');
    await closed(this.child, 10_000);
  }

  /** A graceful stop (SIGTERM to the group, SIGKILL after the grace period). */
  async stop(): Promise<void> {
    if (this.child) await stopGroup(this.child);
  }
}
