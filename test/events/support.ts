/**
 * Shared pieces of the event tests that run the service as processes: a conversation played
 * with the official OpenAI SDK against any URL (the order of its requests is kept by polling
 * the admin API for the side that waits), and processes started in their own process group.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { expect } from 'vitest';
import { call } from '../security/support.js';

const cli = fileURLToPath(new URL('../../dist/src/cli.js', import.meta.url));

export async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Waits until `side` of `model` holds a request open, as the admin API reports it. */
async function untilWaiting(url: string, admin: string, model: string, side: 'A' | 'B'): Promise<void> {
  await until(async () => (await call(url, 'GET', `/admin/sessions/${model}`, admin)).body?.sides?.[side]?.waiting === true, `side ${side} of ${model} waits`);
}

/**
 * A's handshake, B's first prompt, A's answer, then the session is ended: 7 public events
 * (session.created, session.paired, message.sent, message.delivered, message.sent,
 * message.delivered, session.closed). `urls` may name several instances: A uses the first, B the last.
 */
export async function converse(urls: readonly string[], admin: string, model: string): Promise<void> {
  const aUrl = urls[0]!;
  const bUrl = urls[urls.length - 1]!;
  const a = new OpenAI({ baseURL: `${aUrl}/v1`, apiKey: admin, maxRetries: 0 });
  const b = new OpenAI({ baseURL: `${bUrl}/v1`, apiKey: admin, maxRetries: 0 });
  const handshake = a.chat.completions.create({ model, messages: [{ role: 'user', content: 'ping' }] });
  await untilWaiting(aUrl, admin, model, 'A');
  const bFirst = b.chat.completions.create({ model, messages: [{ role: 'user', content: 'Who goes there?' }] });
  expect((await handshake).choices[0]!.message.content).toBe('Who goes there?');
  await untilWaiting(aUrl, admin, model, 'B');
  const aTurn = a.chat.completions.create({
    model,
    messages: [
      { role: 'user', content: 'ping' },
      { role: 'assistant', content: 'Who goes there?' },
      { role: 'user', content: 'A friend.' },
    ],
  });
  expect((await bFirst).choices[0]!.message.content).toBe('A friend.');
  await untilWaiting(aUrl, admin, model, 'A');
  const deleted = await call(aUrl, 'DELETE', `/admin/sessions/${model}`, admin);
  expect(deleted.status, deleted.text).toBe(200);
  await aTurn.catch(() => undefined);
}

export const SESSION_EVENTS = ['session.created', 'session.paired', 'message.sent', 'message.delivered', 'message.sent', 'message.delivered', 'session.closed'];

export interface Proc {
  readonly child: ChildProcess;
  readonly url: string;
  output: string;
  readonly exited: Promise<void>;
  /** SIGKILL to its process group. */
  kill(): Promise<void>;
}

const running = new Set<Proc>();

export function killAllProcs(): void {
  for (const proc of running) {
    try {
      process.kill(-proc.child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  running.clear();
}

/** The built service on `port` in its own process group, with `env`; resolves once it answers /health. */
export async function launch(port: number, env: Record<string, string>): Promise<Proc> {
  const child = spawn(process.execPath, [cli, '--port', String(port)], {
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, LOG_LEVEL: 'warn', LOG_FORMAT: 'json', ...env },
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const proc: Proc = {
    child,
    url: `http://127.0.0.1:${port}`,
    output: '',
    exited,
    async kill() {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
      await exited;
      running.delete(proc);
    },
  };
  running.add(proc);
  child.stdout!.on('data', (chunk: Buffer) => (proc.output += chunk.toString('utf8')));
  child.stderr!.on('data', (chunk: Buffer) => (proc.output += chunk.toString('utf8')));
  let gone = false;
  void exited.then(() => (gone = true));
  await until(async () => gone || (await fetch(`${proc.url}/health`).catch(() => null))?.ok === true, `the service on port ${port} answers`, 15_000);
  if (gone) throw new Error(`the service exited on start:\n${proc.output}`);
  return proc;
}
