/**
 * Cluster mode's faults at exact points of a turn, through real processes and the official
 * OpenAI SDK, each request sent to a chosen instance: the owner killed after a delivery's
 * append and before its reply (the held request, forwarded from another instance, gets its
 * answer from the journal), the instance holding a forwarded request killed (the client's
 * retry re-attaches), and the owner killed before a turn's append (the retry makes exactly one
 * record).
 */
import { Redis } from 'ioredis';
import OpenAI from 'openai';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startRedis, type PrivateRedis } from '../helpers/redis.js';
import { Instance, killAll } from './instances.js';

let redis: PrivateRedis;
let prefixes = 0;

beforeAll(async () => {
  redis = await startRedis();
}, 20_000);

afterEach(() => killAll());

afterAll(async () => {
  killAll();
  await redis?.destroy();
});

type Message = { role: 'user' | 'assistant'; content: string };

/** Three instances; `faulty` gets FAULT_INJECTION=fault. */
async function threeInstances(fault: string): Promise<{ prefix: string; i1: Instance; i2: Instance; i3: Instance }> {
  const prefix = `f${process.pid}x${++prefixes}`;
  const env = { REDIS_URL: redis.url, REDIS_PREFIX: prefix, CLUSTER_LEASE_MS: '1000' };
  const [i1, i2, i3] = await Promise.all([
    Instance.start(`${prefix}-i1`, { ...env, FAULT_INJECTION: fault }),
    Instance.start(`${prefix}-i2`, env),
    Instance.start(`${prefix}-i3`, env),
  ]);
  return { prefix, i1: i1!, i2: i2!, i3: i3! };
}

/** One SDK call to one instance, with no retry of the SDK's own (the test decides). */
function ask(instance: Instance, model: string, messages: Message[]): Promise<string> {
  const client = new OpenAI({ baseURL: `${instance.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 20_000 });
  return client.chat.completions.create({ model, messages: [...messages] }).then((c) => c.choices[0]!.message.content ?? '');
}

/** An application's retry: the same call again until it is answered (503s while the session moves). */
async function askUntilAnswered(instance: Instance, model: string, messages: Message[], attempts = 40): Promise<string> {
  for (let i = 0; ; i++) {
    try {
      return await ask(instance, model, messages);
    } catch (error) {
      if (i >= attempts || (error as { status?: number }).status !== 503) throw error;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

async function ownerOf(instance: Instance, session: string): Promise<string | null> {
  const body = (await (await fetch(`${instance.url}/admin/sessions/${session}`)).json()) as { owner?: string | null };
  return body.owner ?? null;
}

async function records(prefix: string, session: string): Promise<Array<{ seq: number; type: string; side?: string; content?: string; turn?: { content: string } }>> {
  const client = new Redis(redis.url);
  try {
    const entries = await client.xrange(`${prefix}:s:${session}:log`, '-', '+');
    return entries.map(([, fields]) => JSON.parse(fields[1]!));
  } finally {
    client.disconnect();
  }
}

describe('cluster faults at exact points of a turn', () => {
  it('owner killed after the append and before the reply: the held request on another instance gets its answer from the journal, once', async () => {
    const { prefix, i1, i2, i3 } = await threeInstances('crash-after-delivery-append');
    const s = 'after-append';
    const a: Message[] = [{ role: 'user', content: 'hello' }];
    const b: Message[] = [{ role: 'user', content: 'b1' }];
    const a1 = ask(i1, `${s}|A`, a); // i1 claims the session and runs it
    await expect.poll(() => ownerOf(i1, s)).toBe(i1.id);
    const b1 = ask(i2, `${s}|B`, b); // forwarded to i1
    expect(await a1).toBe('b1');
    a.push({ role: 'assistant', content: 'b1' }, { role: 'user', content: 'a2' });
    const a2 = ask(i2, `${s}|A`, a); // A's held request sits on i2, forwarded to i1
    expect(await b1).toBe('a2');
    b.push({ role: 'assistant', content: 'a2' }, { role: 'user', content: 'b3' });
    // b3 is A's second delivery: i1 appends it and kills itself before answering.
    const b2 = ask(i3, `${s}|B`, b).then(
      () => 'answered',
      (e: { status?: number }) => e.status ?? 'error',
    );
    expect(await a2).toBe('b3');
    expect(i1.logs('FAULT_INJECTION=crash-after-delivery-append').length).toBe(1);
    await expect.poll(() => i2.logs('recovered_from_journal').length).toBeGreaterThan(0);
    // B's own request died with the owner before anything was written to it: 503, and its retry re-attaches.
    expect(await b2).toBe(503);
    await expect.poll(() => i1.running && i1.health().then(() => true, () => false), { timeout: 5000 }).toBe(false);
    const b3 = askUntilAnswered(i3, `${s}|B`, b);
    await new Promise((r) => setTimeout(r, 300));
    a.push({ role: 'assistant', content: 'b3' }, { role: 'user', content: 'a4' });
    void askUntilAnswered(i2, `${s}|A`, a).catch(() => undefined);
    expect(await b3).toBe('a4');
    // The journal has each message once: b3 delivered to A once.
    const deliveredToA = (await records(prefix, s)).filter((r) => r.type === 'MessageDelivered' && r.side === 'A').map((r) => r.content);
    expect(deliveredToA).toEqual(['b1', 'b3']);
  }, 60_000);

  it('the instance holding a forwarded request killed: the client\'s retry on another instance re-attaches, nothing twice', async () => {
    const { prefix, i1, i2, i3 } = await threeInstances('off');
    const s = 'edge-killed';
    const a: Message[] = [{ role: 'user', content: 'hello' }];
    const b: Message[] = [{ role: 'user', content: 'b1' }];
    const a1 = ask(i1, `${s}|A`, a);
    await expect.poll(() => ownerOf(i1, s)).toBe(i1.id);
    const lost = ask(i2, `${s}|B`, b).then(
      () => 'answered',
      () => 'connection lost',
    );
    expect(await a1).toBe('b1');
    // B's held request sits on i2; i2 dies.
    await new Promise((r) => setTimeout(r, 200));
    await i2.kill();
    expect(await lost).toBe('connection lost');
    const retried = askUntilAnswered(i3, `${s}|B`, b);
    await new Promise((r) => setTimeout(r, 300));
    a.push({ role: 'assistant', content: 'b1' }, { role: 'user', content: 'a2' });
    void ask(i1, `${s}|A`, a).catch(() => undefined);
    expect(await retried).toBe('a2');
    const log = await records(prefix, s);
    expect(log.filter((r) => r.type === 'MessageDelivered' && r.side === 'B').map((r) => r.content)).toEqual(['a2']);
    expect(log.filter((r) => r.type === 'MessageSent' || r.type === 'SideConnected').map((r) => r.turn?.content)).toEqual(['hello', 'b1', 'a2']);
  }, 60_000);

  it('owner killed before a turn\'s append: the retry makes exactly one record, delivered once', async () => {
    const { prefix, i1, i2, i3 } = await threeInstances('crash-before-turn-append');
    const s = 'before-append';
    const a: Message[] = [{ role: 'user', content: 'hello' }];
    const b: Message[] = [{ role: 'user', content: 'b1' }];
    const a1 = ask(i1, `${s}|A`, a);
    await expect.poll(() => ownerOf(i1, s)).toBe(i1.id);
    const b1 = ask(i2, `${s}|B`, b);
    expect(await a1).toBe('b1');
    a.push({ role: 'assistant', content: 'b1' }, { role: 'user', content: 'a2' });
    const a2 = ask(i3, `${s}|A`, a); // the first new turn: journaled
    const a2again = a2.then(
      () => 'answered',
      (e: { status?: number }) => e.status ?? 'error',
    );
    expect(await b1).toBe('a2');
    b.push({ role: 'assistant', content: 'a2' }, { role: 'user', content: 'b3' });
    // The second new turn: i1 dies before its record is appended.
    const b2 = ask(i2, `${s}|B`, b).then(
      () => 'answered',
      (e: { status?: number }) => e.status ?? 'error',
    );
    expect(await b2).toBe(503);
    expect(await a2again).toBe(503);
    expect((await records(prefix, s)).some((r) => r.turn?.content === 'b3')).toBe(false);
    // Both retry (as applications do); the session moves to a survivor and b3 is recorded once.
    const aRetry = askUntilAnswered(i3, `${s}|A`, a);
    await new Promise((r) => setTimeout(r, 1500));
    void askUntilAnswered(i2, `${s}|B`, b).catch(() => undefined);
    expect(await aRetry).toBe('b3');
    const log = await records(prefix, s);
    expect(log.filter((r) => r.turn?.content === 'b3')).toHaveLength(1);
    expect(log.filter((r) => r.type === 'MessageDelivered' && r.side === 'A').map((r) => r.content)).toEqual(['b1', 'b3']);
  }, 60_000);

  it('owner frozen past its lease between its checks and its append: the append is refused by the fence, it sends nothing, and the survivor delivers once', async () => {
    const { prefix, i1, i2, i3 } = await threeInstances('stall-before-turn-append');
    const s = 'frozen-owner';
    const a: Message[] = [{ role: 'user', content: 'hello' }];
    const b: Message[] = [{ role: 'user', content: 'b1' }];
    const a1 = ask(i1, `${s}|A`, a);
    await expect.poll(() => ownerOf(i1, s)).toBe(i1.id);
    const before = (await (await fetch(`${i1.url}/admin/sessions/${s}`)).json()) as { epoch: number };
    const b1 = ask(i2, `${s}|B`, b);
    expect(await a1).toBe('b1');
    a.push({ role: 'assistant', content: 'b1' }, { role: 'user', content: 'a2' });
    const a2 = ask(i2, `${s}|A`, a).then(
      (content) => content,
      (e: { status?: number }) => e.status ?? 'error',
    ); // held on i2, forwarded to i1
    expect(await b1).toBe('a2');
    b.push({ role: 'assistant', content: 'a2' }, { role: 'user', content: 'b3' });
    // The second new turn: i1 freezes for 3 s (lease 1 s) before appending it.
    void askUntilAnswered(i3, `${s}|B`, b).catch(() => undefined);
    // Both forwards to the frozen owner give up (503) once its heartbeat expires; the clients retry.
    expect(await a2).toBe(503);
    const aRetry = await askUntilAnswered(i2, `${s}|A`, a);
    expect(aRetry).toBe('b3');
    // Awake, i1 tried to append b3 with its old epoch: refused inside Redis, and it stopped.
    await expect.poll(async () => (await i1.health()).cluster.fenced_appends, { timeout: 10_000 }).toBeGreaterThan(0);
    expect(i1.logs('journal append refused').length).toBeGreaterThan(0);
    expect((await i1.health()).cluster.owned_sessions).toBe(0);
    const after = (await (await fetch(`${i2.url}/admin/sessions/${s}`)).json()) as { owner: string; epoch: number };
    expect(after.owner).not.toBe(i1.id);
    expect(after.epoch).toBeGreaterThan(before.epoch);
    const log = await records(prefix, s);
    expect(log.filter((r) => r.turn?.content === 'b3')).toHaveLength(1);
    expect(log.filter((r) => r.type === 'MessageDelivered' && r.side === 'A').map((r) => r.content)).toEqual(['b1', 'b3']);
    // Nothing of the frozen owner's reached a client once it froze: no chat request answered 200 after.
    const afterFreeze = i1.output.slice(i1.output.indexOf('FAULT_INJECTION=stall-before-turn-append'));
    const answered = afterFreeze.split('\n').filter((line) => line.includes('"url":"/v1/chat/completions"') && line.includes('"status":200'));
    expect(answered).toEqual([]);
  }, 60_000);
});
