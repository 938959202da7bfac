/**
 * Conversations survive a restart on the same journal (real files): after a graceful
 * shutdown and after a crash (SIGKILL of the service process), the session, its deliveries
 * and its queues come back; held requests do not, but the clients' retries re-attach, and
 * nothing is lost or delivered twice.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';

const cli = fileURLToPath(new URL('../../dist/src/cli.js', import.meta.url));
const journalDir = () => mkdtempSync(join(tmpdir(), 'recovery-'));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
type Msg = { role: 'user' | 'assistant'; content: string };
const user = (content: string): Msg => ({ role: 'user', content });
const asst = (content: string): Msg => ({ role: 'assistant', content });

async function until(check: () => Promise<boolean> | boolean, what: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (await check()) return;
    await sleep(10);
  }
  throw new Error(`timed out waiting until ${what}`);
}

/** Marks a promise whose rejection the test awaits later as handled now. */
function later<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => undefined);
  return promise;
}

const servers: TestServer[] = [];
const processes: ChildProcess[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
  for (const child of processes.splice(0)) {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

async function serve(dir: string, fsync = 'batch'): Promise<TestServer> {
  const server = await startTestServer({ journalPath: dir, journalFsync: fsync, turnTimeoutSeconds: '20', handshakeTimeoutSeconds: '20' });
  servers.push(server);
  return server;
}

describe('recovery after a graceful restart', () => {
  it('restores the session; the held side re-attaches and the conversation goes on, exactly once', async () => {
    const dir = journalDir();
    const model = 'restart-graceful';
    const first = await serve(dir);
    const a = first.client();
    const b = first.client({ maxRetries: 0 });
    const handshake = a.chat.completions.create({ model, messages: [user('ping')] });
    await until(() => first.service.ctx.sessions.get(model)?.state === 'AWAITING_PEER', 'A is held');
    const bHeld = b.chat.completions.create({ model, messages: [user('b1')] });
    expect((await handshake).choices[0]!.message.content).toBe('b1');
    await until(() => first.service.ctx.sessions.get(model)?.context.sides.B.held !== null, 'B is held');
    // A answers while B waits; then the service stops with B held again on its next turn.
    const aHeld = later(a.chat.completions.create({ model, messages: [user('ping'), asst('b1'), user('a1')] }, { maxRetries: 0 }));
    expect((await bHeld).choices[0]!.message.content).toBe('a1');
    await first.close();
    await expect(aHeld).rejects.toMatchObject({ status: 503 });
    servers.splice(servers.indexOf(first), 1);

    const second = await serve(dir);
    const restored = second.service.ctx.sessions.get(model);
    expect(restored?.state).toBe('DORMANT');
    expect(restored?.context.sides.A.deliveries).toEqual(['b1']);
    expect(restored?.context.sides.B.deliveries).toEqual(['a1']);

    // A's retry (same request) re-attaches; B's next turn answers it once.
    const aRetry = second.client().chat.completions.create({ model, messages: [user('ping'), asst('b1'), user('a1')] });
    await until(() => second.service.ctx.sessions.get(model)?.context.sides.A.held !== null, 'A re-attached');
    const bNext = later(second.client().chat.completions.create({ model, messages: [user('b1'), asst('a1'), user('b2')] }));
    expect((await aRetry).choices[0]!.message.content).toBe('b2');
    await until(() => second.service.ctx.sessions.get(model)?.context.sides.B.held !== null, 'B is held');
    expect(second.service.ctx.sessions.get(model)?.context.sides.B.deliveries).toEqual(['a1']); // a1 not delivered again
    await second.service.app.inject({ method: 'DELETE', url: `/v1/sessions/${model}` });
    await expect(bNext).rejects.toMatchObject({ status: 410 });
  });

  it('does not restore closed sessions, and compacts them out of the journal', async () => {
    const dir = journalDir();
    const first = await serve(dir);
    const a = first.client();
    const handshake = later(a.chat.completions.create({ model: 'closed-one', messages: [user('ping')] }));
    await until(() => first.service.ctx.sessions.get('closed-one')?.state === 'AWAITING_PEER', 'A is held');
    await first.service.app.inject({ method: 'DELETE', url: '/v1/sessions/closed-one' });
    await expect(handshake).rejects.toMatchObject({ status: 410 });
    const kept = later(a.chat.completions.create({ model: 'kept-one', messages: [user('ping')] }, { maxRetries: 0 }));
    await until(() => first.service.ctx.sessions.get('kept-one')?.state === 'AWAITING_PEER', 'kept-one is held');
    await first.close();
    await expect(kept).rejects.toMatchObject({ status: 503 });
    servers.splice(servers.indexOf(first), 1);

    const second = await serve(dir);
    expect([...second.service.ctx.sessions.ids()]).toEqual(['kept-one']);
    const lines = readFileSync(join(dir, 'journal.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { session: string; type: string });
    expect(lines.every((r) => r.session === 'kept-one')).toBe(true);
    // The restart itself is a record of the session it rebuilt.
    expect(lines.map((r) => r.type)).toEqual(['SideConnected', 'SessionClosed', 'SessionResumed']);
  });
});

describe('recovery after a crash', () => {
  async function startProcess(dir: string, port: number): Promise<{ url: string; child: ChildProcess }> {
    const child = spawn(process.execPath, [cli, '--port', String(port)], {
      detached: true,
      stdio: 'ignore',
      env: { ...process.env, JOURNAL_PATH: dir, JOURNAL_FSYNC: 'always', LOG_LEVEL: 'warn', TURN_TIMEOUT_SECONDS: '20' },
    });
    processes.push(child);
    const url = `http://127.0.0.1:${port}`;
    await until(async () => (await fetch(`${url}/health`).catch(() => null))?.ok === true, 'the service answers');
    return { url, child };
  }

  it('after SIGKILL mid-conversation, a restart on the same journal loses and duplicates nothing', async () => {
    const dir = journalDir();
    const port = 20000 + Math.floor(Math.random() * 10000);
    const model = 'crash-1';
    const { url, child } = await startProcess(dir, port);
    const client = () => new OpenAI({ baseURL: `${url}/v1`, apiKey: 'k', maxRetries: 0 });
    const waiting = async (side: 'A' | 'B', count: number) =>
      until(async () => {
        const health = (await (await fetch(`${url}/health`)).json()) as { sessions: { by_state: Record<string, number> } };
        return side === 'A' ? (health.sessions.by_state['AWAITING_PEER'] ?? 0) === count : (health.sessions.by_state['ACTIVE'] ?? 0) === count;
      }, `side ${side} held`);

    const hs = client().chat.completions.create({ model, messages: [user('ping')] });
    await waiting('A', 1);
    const b1 = client().chat.completions.create({ model, messages: [user('b1')] });
    expect((await hs).choices[0]!.message.content).toBe('b1');
    const a1 = client().chat.completions.create({ model, messages: [user('ping'), asst('b1'), user('a1')] });
    expect((await b1).choices[0]!.message.content).toBe('a1');
    const b2 = later(client().chat.completions.create({ model, messages: [user('b1'), asst('a1'), user('b2')] }));
    expect((await a1).choices[0]!.message.content).toBe('b2');
    await waiting('B', 1); // B is held for A's next turn

    process.kill(-child.pid!, 'SIGKILL');
    await once(child, 'exit');
    await expect(b2).rejects.toThrow();

    const restarted = await startProcess(dir, port);
    const again = () => new OpenAI({ baseURL: `${restarted.url}/v1`, apiKey: 'k', maxRetries: 0 });
    // B's request died with the process: its application calls again with the same messages.
    const b2retry = again().chat.completions.create({ model, messages: [user('b1'), asst('a1'), user('b2')] });
    await sleep(200);
    // A goes on with its history: its a2 reaches B once, and b2 is not delivered to A again.
    const a2 = again().chat.completions.create({ model, messages: [user('ping'), asst('b1'), user('a1'), asst('b2'), user('a2')] });
    expect((await b2retry).choices[0]!.message.content).toBe('a2');
    const b3 = later(again().chat.completions.create({ model, messages: [user('b1'), asst('a1'), user('b2'), asst('a2'), user('b3')] }));
    expect((await a2).choices[0]!.message.content).toBe('b3');
    b3.catch(() => undefined); // handled below: its 410 may come before the DELETE's answer
    await fetch(`${restarted.url}/v1/sessions/${model}`, { method: 'DELETE' });
    await expect(b3).rejects.toMatchObject({ status: 410 });

    const types = readFileSync(join(dir, 'journal.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { type: string; content?: string; side: string });
    const deliveredToA = types.filter((r) => r.type === 'MessageDelivered' && r.side === 'A').map((r) => r.content);
    const deliveredToB = types.filter((r) => r.type === 'MessageDelivered' && r.side === 'B').map((r) => r.content);
    expect(deliveredToA).toEqual(['b1', 'b2', 'b3']);
    expect(deliveredToB).toEqual(['a1', 'a2']);
  }, 30_000);
});
