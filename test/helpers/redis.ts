/**
 * A private redis-server for one test file: its own free port and data directory, append-only
 * file on with `appendfsync always` (what docs/cluster.md asks of a production Redis), never
 * the Redis the machine may already run. It can be stopped, paused and restarted on the same
 * port and data, for the fault tests. `npm test` installs redis-server when it is missing
 * (scripts/ensure-redis.sh).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
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

export interface RedisOptions {
  /** `requirepass`: clients must AUTH. */
  readonly password?: string;
  /** TLS only (no plain port), with this certificate and key; clients are not asked for one. */
  readonly tls?: { readonly cert: string; readonly key: string };
}

export async function startRedis(options: RedisOptions = {}): Promise<PrivateRedis> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'motive-redis-'));
  let child: ChildProcess | null = null;

  const start = async (): Promise<void> => {
    const listen = options.tls
      ? ['--port', '0', '--tls-port', String(port), '--tls-cert-file', options.tls.cert, '--tls-key-file', options.tls.key, '--tls-ca-cert-file', options.tls.cert, '--tls-auth-clients', 'no']
      : ['--port', String(port)];
    const args = [...listen, '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--protected-mode', 'no', '--loglevel', 'warning', ...(options.password ? ['--requirepass', options.password] : [])];
    const started = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    child = started;
    let stderr = '';
    started.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    for (let i = 0; i < 200; i++) {
      if (started.exitCode !== null) throw new Error(`redis-server exited (${started.exitCode}): ${stderr}`);
      if (await answersPing(port, options.tls?.cert)) return;
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
  const auth = options.password ? `:${encodeURIComponent(options.password)}@` : '';
  return {
    port,
    url: options.tls ? `rediss://${auth}localhost:${port}` : `redis://${auth}127.0.0.1:${port}`,
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

/** True when a Redis on the port answers a RESP PING (with PONG, or asking for a password). */
function answersPing(port: number, ca?: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = ca ? tlsConnect({ port, host: '127.0.0.1', servername: 'localhost', ca: readFileSync(ca) }) : connect(port, '127.0.0.1');
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.once('error', () => done(false));
    socket.once(ca ? 'secureConnect' : 'connect', () => socket.write('PING\r\n'));
    socket.once('data', (data) => done(/^(\+PONG|-NOAUTH)/.test(data.toString())));
  });
}

/** A self-signed certificate for `localhost` and 127.0.0.1 (openssl), its own CA: { cert, key } paths. */
export function selfSignedCertificate(): { cert: string; key: string } {
  const dir = mkdtempSync(join(tmpdir(), 'motive-tls-'));
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], {
    encoding: 'utf8',
  });
  if (made.status !== 0) throw new Error(`openssl could not make a certificate: ${made.stderr}`);
  return { cert, key };
}
