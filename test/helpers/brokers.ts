/**
 * Private brokers for the event tests, each on free ports with a data directory of its own,
 * never the ones the machine may already run: a nats-server with JetStream, and a RabbitMQ node
 * (Debian's rabbitmq-server, which runs as the `rabbitmq` user when started as root). Both can be
 * stopped and started again on the same ports and data, for the outage tests. `npm test`
 * installs them when missing (scripts/ensure-brokers.sh).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './net.js';

export interface PrivateBroker {
  readonly url: string;
  stop(): Promise<void>;
  start(): Promise<void>;
  destroy(): Promise<void>;
}

const bin = (name: string): string => (existsSync(`/usr/sbin/${name}`) ? `/usr/sbin/${name}` : name);

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.setTimeout(500, () => (socket.destroy(), resolve(false)));
    socket.once('error', () => resolve(false));
    socket.once('connect', () => (socket.destroy(), resolve(true)));
  });
}

async function waitListening(port: number, child: ChildProcess, output: () => string, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${what} exited (${child.exitCode}): ${output().slice(-2000)}`);
    if (await listening(port)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not listen on ${port}: ${output().slice(-2000)}`);
}

/** Stops a process group with `signal` and waits for its leader to exit. */
async function stopGroup(child: ChildProcess | null, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    process.kill(-child.pid!, signal);
  } catch {
    return;
  }
  await exited;
}

/**
 * Kills every process whose environment holds `marker` (NAME=value). The Erlang VM a private
 * RabbitMQ runs in is started through `su` in a session of its own and names its node only in
 * its environment, so neither its wrapper's process group nor its command line finds it.
 */
function killByEnvironment(marker: string): void {
  for (const pid of readdirSync('/proc').filter((entry) => /^\d+$/.test(entry))) {
    try {
      // Not epmd: a node may have started the machine's one port mapper, which other nodes use.
      if (readFileSync(`/proc/${pid}/comm`, 'latin1').trim() === 'epmd') continue;
      if (readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(marker)) process.kill(Number(pid), 'SIGKILL');
    } catch {
      // gone meanwhile, or another user's
    }
  }
}

export async function startNats(): Promise<PrivateBroker> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'motive-nats-'));
  let child: ChildProcess | null = null;
  const start = async (): Promise<void> => {
    let output = '';
    const started = spawn(bin('nats-server'), ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', dir, '-m', '0'], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    child = started;
    started.stdout!.on('data', (c: Buffer) => (output += c.toString()));
    started.stderr!.on('data', (c: Buffer) => (output += c.toString()));
    await waitListening(port, started, () => output, 'nats-server', 10_000);
  };
  await start();
  return {
    url: `nats://127.0.0.1:${port}`,
    start,
    stop: async () => {
      await stopGroup(child);
      child = null;
      while (await listening(port)) await new Promise((r) => setTimeout(r, 50));
    },
    destroy: async () => {
      await stopGroup(child, 'SIGKILL');
      child = null;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function startRabbit(): Promise<PrivateBroker> {
  const port = await freePort();
  const distPort = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'motive-rabbit-'));
  const name = `motivetest${process.pid}x${port}@localhost`;
  const asRoot = process.getuid?.() === 0;
  const owner = asRoot ? spawnSync('id', ['-u', 'rabbitmq'], { encoding: 'utf8' }) : null;
  if (asRoot && owner?.status === 0) {
    const uid = Number(owner.stdout.trim());
    const gid = Number(spawnSync('id', ['-g', 'rabbitmq'], { encoding: 'utf8' }).stdout.trim());
    chownSync(dir, uid, gid);
  }
  writeFileSync(join(dir, 'enabled_plugins'), '[].\n');
  if (asRoot) spawnSync('chown', ['rabbitmq:rabbitmq', join(dir, 'enabled_plugins')]);
  const env = {
    ...process.env,
    RABBITMQ_NODENAME: name,
    RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(distPort),
    RABBITMQ_MNESIA_BASE: join(dir, 'mnesia'),
    RABBITMQ_LOG_BASE: join(dir, 'log'),
    RABBITMQ_LOGS: '-',
    RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, 'enabled_plugins'),
    RABBITMQ_PID_FILE: join(dir, 'pid'),
    RABBITMQ_FEATURE_FLAGS_FILE: join(dir, 'feature_flags'),
    RABBITMQ_CONFIG_FILE: join(dir, 'rabbitmq'),
    RABBITMQ_ADVANCED_CONFIG_FILE: join(dir, 'advanced.config'),
    RABBITMQ_CONF_ENV_FILE: join(dir, 'rabbitmq-env.conf'),
  };
  let child: ChildProcess | null = null;
  const start = async (): Promise<void> => {
    let output = '';
    const started = spawn(bin('rabbitmq-server'), [], { detached: true, stdio: ['ignore', 'pipe', 'pipe'], env });
    child = started;
    started.stdout!.on('data', (c: Buffer) => (output = (output + c.toString()).slice(-20_000)));
    started.stderr!.on('data', (c: Buffer) => (output = (output + c.toString()).slice(-20_000)));
    await waitListening(port, started, () => output, 'rabbitmq-server', 60_000);
  };
  await start();
  return {
    url: `amqp://guest:guest@127.0.0.1:${port}`,
    start,
    stop: async () => {
      // The wrapper may hand the node to another session (su): stop it by name, and wait until it no longer listens.
      spawnSync(bin('rabbitmqctl'), ['-n', name, 'stop'], { env, stdio: 'ignore', timeout: 30_000 });
      await stopGroup(child);
      child = null;
      const deadline = Date.now() + 30_000;
      while (await listening(port)) {
        if (Date.now() > deadline) throw new Error(`rabbitmq-server ${name} still listens on ${port} after being stopped`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    destroy: async () => {
      await stopGroup(child, 'SIGKILL');
      child = null;
      // The node's Erlang VM outlives the wrapper: end it by the node name in its environment.
      killByEnvironment(`RABBITMQ_NODENAME=${name}`);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
