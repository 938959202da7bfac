/**
 * A cluster for tests: a private redis-server (test/helpers/redis.ts) and service processes
 * built from `dist/src/cli.js`, each in its own process group on its own free port, all with
 * the same REDIS_URL and a key prefix of their own test. Instances can be killed (SIGKILL),
 * stopped (SIGTERM), paused (SIGSTOP) and resumed, and started again.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { freePort } from '../helpers/net.js';

const cli = fileURLToPath(new URL('../../dist/src/cli.js', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const everyChild = new Set<ChildProcess>();

/** SIGKILLs every instance any test started (afterEach/afterAll). */
export function killAll(): void {
  for (const child of everyChild) {
    try {
      process.kill(-child.pid!, 'SIGCONT');
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  everyChild.clear();
}

export interface ClusterHealth {
  status: string;
  cluster: { instance: string; ready: boolean; takeovers: number; fenced_appends: number; owned_sessions: number };
}

export class Instance {
  readonly url: string;
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();
  output = '';

  constructor(
    readonly id: string,
    readonly port: number,
    private readonly env: Record<string, string>,
  ) {
    this.url = `http://127.0.0.1:${port}`;
  }

  static async start(id: string, env: Record<string, string>): Promise<Instance> {
    const instance = new Instance(id, await freePort(), env);
    await instance.start();
    return instance;
  }

  get running(): boolean {
    return this.child !== null;
  }

  private paused = false;

  /** Running and not paused: what a load balancer's health check would send requests to. */
  get serving(): boolean {
    return this.child !== null && !this.paused;
  }

  async start(): Promise<void> {
    const child = spawn(process.execPath, [cli, '--port', String(this.port)], {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, INSTANCE_ID: this.id, LOG_LEVEL: 'info', LOG_FORMAT: 'json', ...this.env },
    });
    everyChild.add(child);
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', () => (everyChild.delete(child), resolve())));
    const keep = (chunk: Buffer) => (this.output = (this.output + chunk.toString('utf8')).slice(-400_000));
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`instance ${this.id} exited on start:\n${this.output}`);
      const health = await this.health().catch(() => null);
      if (health?.cluster?.instance === this.id && health.cluster.ready) return;
      await sleep(25);
    }
    throw new Error(`instance ${this.id} did not become ready on port ${this.port}:\n${this.output}`);
  }

  async health(): Promise<ClusterHealth & { httpStatus: number }> {
    const res = await fetch(`${this.url}/health`, { signal: AbortSignal.timeout(2000) });
    return { ...((await res.json()) as ClusterHealth), httpStatus: res.status };
  }

  async kill(): Promise<void> {
    await this.signal('SIGKILL');
  }

  /** Graceful: SIGTERM to the process group, and wait for the exit. */
  async stop(): Promise<void> {
    await this.signal('SIGTERM');
  }

  pause(): void {
    if (this.child) process.kill(-this.child.pid!, 'SIGSTOP');
    this.paused = true;
  }

  resume(): void {
    if (this.child) process.kill(-this.child.pid!, 'SIGCONT');
    this.paused = false;
  }

  /** Log lines (JSON) whose message contains `text`. */
  logs(text: string): Array<Record<string, unknown>> {
    return this.output
      .split('\n')
      .filter((line) => line.includes(text))
      .map((line) => {
        try {
          return JSON.parse(line) as Record<string, unknown>;
        } catch {
          return { msg: line };
        }
      });
  }

  private async signal(signal: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child) return;
    try {
      process.kill(-child.pid!, 'SIGCONT');
      process.kill(-child.pid!, signal);
    } catch {
      // already gone
    }
    await this.exited;
    this.child = null;
  }
}

let clusters = 0;

/** `count` instances sharing `redisUrl` under a prefix of their own. */
export async function startCluster(redisUrl: string, count: number, env: Record<string, string> = {}): Promise<Instance[]> {
  const prefix = `c${process.pid}x${++clusters}`;
  const shared = { REDIS_URL: redisUrl, REDIS_PREFIX: prefix, CLUSTER_LEASE_MS: '1000', ...env };
  return Promise.all(Array.from({ length: count }, (_, i) => Instance.start(`${prefix}-i${i + 1}`, shared)));
}
