/**
 * A private redis-server for one test file: its own free port and data directory, append-only
 * file on with `appendfsync always` (what docs/cluster.md asks of a production Redis), never
 * the Redis the machine may already run. It can be stopped, paused and restarted on the same
 * port and data, for the fault tests. `npm test` installs redis-server when it is missing
 * (scripts/ensure-redis.sh).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './net.js';

export interface PrivateRedis {
  readonly port: number;
  readonly url: string;
  /** Stops it (SIGTERM: Redis writes and closes its append-only file). */
  stop(): Promise<void>;
  /** SIGKILL: no goodbye, the append-only file is as the last fsync left it. */
  kill(): Promise<void>;
  /** Starts it again on the same port and data directory. */
  start(): Promise<void>;
  /** SIGSTOP / SIGCONT: connections stay open, nothing is answered. */
  pause(): void;
  resume(): void;
  /** Stops it and removes its data. */
  destroy(): Promise<void>;
}

const binary = process.env.REDIS_SERVER_PATH ?? 'redis-server';

export async function startRedis(): Promise<PrivateRedis> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'motive-redis-'));
  let child: ChildProcess | null = null;

  const start = async (): Promise<void> => {
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--protected-mode', 'no', '--loglevel', 'warning'];
    const started = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    child = started;
    let stderr = '';
    started.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    for (let i = 0; i < 200; i++) {
      if (started.exitCode !== null) throw new Error(`redis-server exited (${started.exitCode}): ${stderr}`);
      if (await answersPing(port)) return;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`redis-server did not answer on port ${port}: ${stderr}`);
  };

  const signal = async (sig: NodeJS.Signals): Promise<void> => {
    const running = child;
    child = null;
    if (!running || running.exitCode !== null || running.signalCode !== null) return;
    if (sig === 'SIGTERM' || sig === 'SIGKILL') running.kill('SIGCONT');
    const exited = once(running, 'exit');
    running.kill(sig);
    await exited;
  };

  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    stop: () => signal('SIGTERM'),
    kill: () => signal('SIGKILL'),
    start,
    pause: () => void child?.kill('SIGSTOP'),
    resume: () => void child?.kill('SIGCONT'),
    destroy: async () => {
      await signal('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** True when something on the port answers a RESP PING with PONG. */
function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (data) => done(data.toString().startsWith('+PONG')));
  });
}
