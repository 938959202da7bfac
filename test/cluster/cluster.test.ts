/**
 * Cluster mode through real processes: a private redis-server with AOF on, three service
 * instances sharing it, and a plain load balancer in front that sends each request to a random
 * instance. The clients are the official OpenAI SDK. PROTOCOL.md §3–4 must hold as on one
 * instance: per side, what was delivered is what the other side sent, once and in order.
 */
import { once } from 'node:events';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { Redis } from 'ioredis';
import OpenAI from 'openai';
import { selfSignedCertificate, startRedis, type PrivateRedis } from '../helpers/redis.js';
import { Conversation, startBalancer, type Balancer } from './clients.js';
import { killAll, startCluster, type Instance } from './instances.js';

let redis: PrivateRedis;
const open: Array<{ close(): unknown }> = [];

beforeAll(async () => {
  redis = await startRedis();
}, 20_000);

afterEach(async () => {
  for (const thing of open.splice(0)) await thing.close();
  killAll();
});

afterAll(async () => {
  killAll();
  await redis?.destroy();
});

async function cluster(count: number, env: Record<string, string> = {}): Promise<{ instances: Instance[]; balancer: Balancer }> {
  const instances = await startCluster(redis.url, count, env);
  const balancer = await startBalancer(instances);
  open.push(balancer);
  return { instances, balancer };
}

function conversation(balancer: Balancer, session: string, options?: ConstructorParameters<typeof Conversation>[2]): Conversation {
  const c = new Conversation(balancer.url, session, options);
  open.push(c);
  return c;
}

function expectDeliveredAsSent(c: Conversation): void {
  expect(c.received.A).toEqual(c.sent.B);
  expect(c.received.B).toEqual(c.sent.A);
}

async function ownerOf(instances: readonly Instance[], session: string): Promise<{ owner: string | null; epoch: number }> {
  const running = instances.find((i) => i.running)!;
  const res = await fetch(`${running.url}/admin/sessions/${encodeURIComponent(session)}`);
  return (await res.json()) as { owner: string | null; epoch: number };
}

describe('cluster mode', () => {
  it('runs a 1,000-turn conversation with every request on a random instance: nothing lost, duplicated or reordered', async () => {
    const { instances, balancer } = await cluster(3);
    const c = conversation(balancer, 'no-stickiness');
    await c.run(1000);
    expectDeliveredAsSent(c);
    expect(c.sent.A.length + c.sent.B.length).toBe(1001);
    // Every instance took requests; one of them ran the session, the others forwarded to it.
    for (const instance of instances) expect(balancer.spread.get(instance.id) ?? 0).toBeGreaterThan(100);
    const { owner, epoch } = await ownerOf(instances, 'no-stickiness');
    expect(instances.map((i) => i.id)).toContain(owner);
    expect(epoch).toBeGreaterThan(0);
  }, 120_000);

  it('shows the owner and epoch of a session on every instance', async () => {
    const { instances, balancer } = await cluster(3);
    const c = conversation(balancer, 'who-owns');
    await c.run(4);
    const seen = await Promise.all(instances.map(async (i) => (await (await fetch(`${i.url}/admin/sessions/who-owns`)).json()) as { owner: string; epoch: number; state: string }));
    expect(new Set(seen.map((s) => s.owner)).size).toBe(1);
    expect(new Set(seen.map((s) => s.epoch)).size).toBe(1);
    expect(seen[0]!.state).toBe('ACTIVE');
  }, 60_000);

  it('carries on within the lease and a second after the owner is killed with SIGKILL', async () => {
    const { instances, balancer } = await cluster(3);
    const c = conversation(balancer, 'owner-killed');
    let killedAt = 0;
    let owner: Instance | undefined;
    let before = 0;
    await c.run(40, async (turn) => {
      if (turn !== 20) return;
      const info = await ownerOf(instances, 'owner-killed');
      before = info.epoch;
      owner = instances.find((i) => i.id === info.owner)!;
      await owner.kill();
      killedAt = Date.now();
    });
    expectDeliveredAsSent(c);
    expect(owner).toBeDefined();
    const after = await ownerOf(instances, 'owner-killed');
    expect(after.owner).not.toBe(owner!.id);
    expect(after.epoch).toBeGreaterThan(before);
    // The survivor that claimed it says when: within the lease (1 s) and a second.
    const claims = instances.filter((i) => i.running).flatMap((i) => i.logs("claimed and rebuilt")).filter((l) => l['session_id'] === 'owner-killed');
    expect(claims.length).toBeGreaterThan(0);
    const claimedAt = Math.min(...claims.map((l) => Number(l['time'])));
    expect(claimedAt - killedAt).toBeLessThan(1000 + 1000);
  }, 60_000);

  it('hands its sessions over at once on SIGTERM, without waiting for the lease', async () => {
    const { instances, balancer } = await cluster(2, { CLUSTER_LEASE_MS: '30000' });
    const c = conversation(balancer, 'handed-over');
    let stoppedAt = 0;
    let owner: Instance | undefined;
    await c.run(20, async (turn) => {
      if (turn !== 10) return;
      const info = await ownerOf(instances, 'handed-over');
      owner = instances.find((i) => i.id === info.owner)!;
      await owner.stop();
      stoppedAt = Date.now();
    });
    expectDeliveredAsSent(c);
    const survivor = instances.find((i) => i.running)!;
    const claims = survivor.logs('claimed and rebuilt').filter((l) => l['session_id'] === 'handed-over');
    expect(claims.length).toBeGreaterThan(0);
    // A 30 s lease: the claim came from the hand-over, not from the lease running out.
    expect(Number(claims[0]!['time']) - stoppedAt).toBeLessThan(5000);
  }, 60_000);

  it('moves a session off an owner paused past its lease (SIGSTOP): a survivor takes over with a higher epoch, and the old owner stops its actor when it wakes', async () => {
    const { instances, balancer } = await cluster(3);
    const c = conversation(balancer, 'paused-owner');
    let paused: Instance | undefined;
    let before = 0;
    await c.run(30, async (turn) => {
      if (turn !== 10) return;
      const info = await ownerOf(instances, 'paused-owner');
      before = info.epoch;
      paused = instances.find((i) => i.id === info.owner)!;
      paused.pause();
      // It stays frozen well past its 1 s lease while the conversation goes on without it.
      setTimeout(() => paused!.resume(), 3000);
    });
    expectDeliveredAsSent(c);
    await new Promise((r) => setTimeout(r, 3500));
    const after = await ownerOf(instances, 'paused-owner');
    expect(after.owner).not.toBe(paused!.id);
    expect(after.epoch).toBeGreaterThan(before);
    // Awake again, it noticed at once that its lease had run out, and stopped its actor
    // before serving or appending anything (the fence inside Redis is the second line: see
    // test/cluster/faults.test.ts, an owner frozen between its checks and its append).
    await expect.poll(() => paused!.logs('stopping every session here').length, { timeout: 5000 }).toBeGreaterThan(0);
    const health = await paused!.health();
    expect(health.cluster.owned_sessions).toBe(0);
    expect(health.status).toBe('ok');
  }, 60_000);
});

describe('cluster mode: everything cluster-wide', () => {
  it('lists, shows, ends and transcribes a session from any instance, whichever one runs it', async () => {
    const [i1, i2, i3] = (await startCluster(redis.url, 3)).map((i) => i);
    // Side A's handshake is held on instance 1, which runs the session.
    const held = fetch(`${i1!.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'listed', messages: [{ role: 'user', content: 'anyone there?' }] }),
    });
    await expect.poll(async () => (await (await fetch(`${i3!.url}/admin/sessions/listed`)).json()) as { owner?: string }).toMatchObject({ owner: i1!.id });
    // Every instance's model list offers it (a chat UI on any of them can join).
    for (const instance of [i2!, i3!]) {
      const models = (await (await fetch(`${instance.url}/v1/models`)).json()) as { data: Array<{ id: string }> };
      expect(models.data.map((m) => m.id)).toContain('listed');
    }
    const list = (await (await fetch(`${i2!.url}/admin/sessions`)).json()) as { data: Array<{ id: string; owner: string }> };
    expect(list.data).toContainEqual(expect.objectContaining({ id: 'listed', owner: i1!.id }));
    // The transcript is read from the journal in Redis by whichever instance is asked.
    const transcript = (await (await fetch(`${i3!.url}/admin/sessions/listed/transcript`)).json()) as { entries?: unknown[] };
    expect(JSON.stringify(transcript)).toContain('anyone there?');
    // Ended from instance 2: the held request on instance 1 gets 410 session_closed.
    const deleted = await fetch(`${i2!.url}/v1/sessions/listed`, { method: 'DELETE' });
    expect(deleted.status).toBe(200);
    expect(await deleted.json()).toEqual({ id: 'listed', object: 'session', deleted: true });
    const answer = await held;
    expect(answer.status).toBe(410);
    expect(((await answer.json()) as { error: { code: string } }).error.code).toBe('session_closed');
    // The id used again starts a new incarnation, on whichever instance gets it first.
    const again = new Conversation(i3!.url, 'listed');
    open.push(again);
    await again.run(3);
    expectDeliveredAsSent(again);
  }, 60_000);
});

describe('cluster mode: API keys', () => {
  it('binds sides to the keys they joined with, whichever instance a request comes through', async () => {
    const [i1, i2] = await startCluster(redis.url, 2, { API_KEYS: 'key-a,key-b,key-c' });
    const post = (instance: Instance, key: string, model: string, content: string) =>
      fetch(`${instance.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
        body: JSON.stringify({ model, messages: [{ role: 'user', content }] }),
      });
    const handshake = post(i1!, 'key-a', 'bound|A', 'hello');
    await expect.poll(async () => ((await (await fetch(`${i2!.url}/admin/sessions/bound`)).json()) as { owner?: string }).owner).toBe(i1!.id);
    const b = post(i2!, 'key-b', 'bound|B', 'hi');
    expect((await handshake).status).toBe(200);
    // A third key cannot speak for either side, through either instance.
    for (const instance of [i1!, i2!]) {
      const refused = await post(instance, 'key-c', 'bound|A', 'let me in');
      expect(refused.status).toBe(403);
      expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('session_forbidden');
    }
    const deleted = await fetch(`${i2!.url}/v1/sessions/bound`, { method: 'DELETE', headers: { authorization: 'Bearer key-c' } });
    expect(deleted.status).toBe(403);
    void b.catch(() => undefined);
  }, 60_000);
});

describe('cluster mode: limits, expiry and metrics across instances', () => {
  const post = (instance: Instance, model: string, content: string, headers: Record<string, string> = {}) =>
    fetch(`${instance.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify({ model, messages: [{ role: 'user', content }] }),
      signal: AbortSignal.timeout(10_000),
    });

  it('caps live sessions cluster-wide (MAX_SESSIONS), and counts rate limits in Redis, not per instance', async () => {
    const [i1, i2] = await startCluster(redis.url, 2, { MAX_SESSIONS: '2', SESSION_RATE_LIMIT_PER_MINUTE: '3', TURN_TIMEOUT_SECONDS: '0.3' });
    // Two sessions, one on each instance (A's handshake held, B answers it): the cluster is full.
    for (const [instance, id] of [[i1!, 'cap-one'], [i2!, 'cap-two']] as const) {
      const handshake = post(instance, `${id}|A`, 'hello');
      await expect.poll(async () => ((await (await fetch(`${instance.url}/admin/sessions/${id}`)).json()) as { state?: string }).state).toBe('AWAITING_PEER');
      expect((await post(instance, `${id}|B`, 'hi')).status).toBe(408); // B's own wait times out
      expect((await handshake).status).toBe(200);
    }
    const refused = await post(i1!, 'cap-three', 'hello');
    expect(refused.status).toBe(503);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('max_sessions');
    expect(refused.headers.get('retry-after')).toBe('1');
    // cap-one has had two requests; one more on the other instance is its third this minute, the next is refused.
    expect((await post(i2!, 'cap-one|B', 'hi')).status).toBe(408);
    const limited = await post(i1!, 'cap-one|B', 'hi');
    expect(limited.status).toBe(429);
    expect(((await limited.json()) as { error: { code: string } }).error.code).toBe('rate_limited');
  }, 60_000);

  it('shares one per-client budget (RATE_LIMIT_PER_MINUTE) across the instances', async () => {
    const [i1, i2] = await startCluster(redis.url, 2, { RATE_LIMIT_PER_MINUTE: '4' });
    const statuses: number[] = [];
    for (const instance of [i1!, i2!, i1!, i2!, i1!, i2!]) statuses.push((await fetch(`${instance.url}/v1/models`)).status);
    // Four a minute in all, not four on each: the fifth is refused, wherever it lands.
    expect(statuses).toEqual([200, 200, 200, 200, 429, 429]);
  }, 60_000);

  it('expires a session whose owner died once its TTL has run out, and removes its keys', async () => {
    const instances = await startCluster(redis.url, 2, { SESSION_TTL_SECONDS: '2', TURN_TIMEOUT_SECONDS: '0.3' });
    const [i1, i2] = instances;
    const prefix = i1!.id.replace(/-i1$/, '');
    const handshake = post(i1!, 'orphan|A', 'hello');
    await expect.poll(async () => ((await (await fetch(`${i1!.url}/admin/sessions/orphan`)).json()) as { state?: string }).state).toBe('AWAITING_PEER');
    expect((await post(i1!, 'orphan|B', 'hi')).status).toBe(408);
    expect((await handshake).status).toBe(200);
    const client = new Redis(redis.url);
    open.push({ close: () => client.disconnect() });
    expect(await client.sismember(`${prefix}:live`, 'orphan')).toBe(1);
    await i1!.kill();
    // Nobody asks for it again: the survivor's sweep ends it after the TTL.
    await expect.poll(() => client.sismember(`${prefix}:live`, 'orphan'), { timeout: 15_000, interval: 250 }).toBe(0);
    expect(i2!.logs('expired: nobody ran it').length).toBe(1);
    const [last] = await client.xrevrange(`${prefix}:s:orphan:log`, '+', '-', 'COUNT', 1);
    expect(JSON.parse(last![1][1]!)).toMatchObject({ type: 'SessionExpired', session: 'orphan' });
    expect(await client.pttl(`${prefix}:s:orphan:log`)).toBeGreaterThan(0);
  }, 60_000);

  it('reports takeovers, fenced appends, forwards and replay time in /metrics', async () => {
    const { instances, balancer } = await cluster(2, { ENABLE_PROMETHEUS: 'true' });
    const c = conversation(balancer, 'metered');
    await c.run(16, async (turn) => {
      if (turn !== 10) return;
      const info = (await (await fetch(`${instances[0]!.url}/admin/sessions/metered`)).json()) as { owner: string };
      await instances.find((i) => i.id === info.owner)!.kill();
    });
    expectDeliveredAsSent(c);
    const survivor = instances.find((i) => i.running)!;
    const text = await (await fetch(`${survivor.url}/metrics`)).text();
    expect(text).toMatch(/^motiveproxy_cluster_takeovers_total [1-9]/m);
    expect(text).toMatch(/^motiveproxy_cluster_replay_seconds_count [1-9]/m);
    expect(text).toMatch(/^motiveproxy_cluster_fenced_appends_total 0/m);
    // Its forwards to the owner before the kill: answered, or cut by the kill (failed).
    expect(text).toMatch(/^motiveproxy_cluster_forward_seconds_count\{outcome="(answered|failed)"\} [1-9]/m);
  }, 60_000);
});

describe('cluster mode: the console', () => {
  it('shows every instance\'s sessions live, and the transcript of one another instance runs', async () => {
    const [i1, i2] = await startCluster(redis.url, 2);
    const frames: Array<{ type: string; sessions?: Array<{ id: string; state: string }>; session?: string; entries?: Array<{ content: string }> }> = [];
    const page = new WebSocket(`${i2!.url.replace('http', 'ws')}/console/live`);
    open.push({ close: () => page.close() });
    page.on('message', (data) => frames.push(JSON.parse(data.toString()) as (typeof frames)[number]));
    await once(page, 'open');
    // A conversation on instance 1 only.
    const c = new Conversation(i1!.url, 'seen-from-afar');
    open.push(c);
    await c.run(3);
    const listed = () => frames.filter((f) => f.type === 'sessions').at(-1)?.sessions?.find((s) => s.id === 'seen-from-afar');
    await expect.poll(listed, { timeout: 10_000 }).toMatchObject({ id: 'seen-from-afar', state: 'ACTIVE' });
    page.send(JSON.stringify({ type: 'watch', session: 'seen-from-afar' }));
    const transcript = () => frames.filter((f) => f.type === 'transcript' && f.session === 'seen-from-afar').flatMap((f) => f.entries ?? []).map((e) => e.content);
    await expect.poll(transcript, { timeout: 10_000 }).toEqual(expect.arrayContaining(['seen-from-afar handshake', 'seen-from-afar B1', 'seen-from-afar A2']));
    // It goes on growing as instance 1's session does.
    const more = new Conversation(i1!.url, 'seen-from-afar-2');
    open.push(more);
    await more.run(2);
    await expect.poll(() => frames.filter((f) => f.type === 'sessions').at(-1)?.sessions?.map((s) => s.id), { timeout: 10_000 }).toEqual(
      expect.arrayContaining(['seen-from-afar', 'seen-from-afar-2']),
    );
  }, 60_000);
});

describe('cluster mode: a WebSocket side whose instance lets go of the session', () => {
  it('is told to reconnect (session_moved, close 1012) when its instance loses Redis for a lease', async () => {
    const own = await startRedis();
    try {
      const [i1] = await startCluster(own.url, 1);
      const handshake = fetch(`${i1!.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'ws-moved|A', messages: [{ role: 'user', content: 'hello' }] }),
      });
      await expect.poll(async () => ((await (await fetch(`${i1!.url}/admin/sessions/ws-moved`)).json()) as { state?: string }).state).toBe('AWAITING_PEER');
      const frames: Array<{ type: string; code?: string }> = [];
      const socket = new WebSocket(`${i1!.url.replace('http', 'ws')}/v1/realtime?session=ws-moved&side=B`);
      open.push({ close: () => socket.close() });
      socket.on('message', (data) => frames.push(JSON.parse(data.toString()) as { type: string; code?: string }));
      const closed = once(socket, 'close');
      await once(socket, 'open');
      socket.send(JSON.stringify({ type: 'message', content: 'hi' }));
      expect((await handshake).status).toBe(200);
      own.pause(); // past the 1 s lease: the instance lets go of what it ran
      const [code] = (await closed) as [number];
      own.resume();
      expect(code).toBe(1012);
      expect(frames).toContainEqual(expect.objectContaining({ type: 'error', code: 'session_moved' }));
    } finally {
      killAll();
      await own.destroy();
    }
  }, 60_000);
});

describe('cluster mode: streaming', () => {
  it('streams an answer through the instance a request came to, from the one that runs the session (keep-alives, then the chunks)', async () => {
    const [i1, i2] = await startCluster(redis.url, 2, { KEEPALIVE_INTERVAL_SECONDS: '0.2' });
    const handshake = fetch(`${i1!.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'streamed|A', messages: [{ role: 'user', content: 'hello' }] }),
    });
    await expect.poll(async () => ((await (await fetch(`${i2!.url}/admin/sessions/streamed`)).json()) as { owner?: string }).owner).toBe(i1!.id);
    // B streams through instance 2; its held stream waits on instance 1.
    const sdk = new OpenAI({ baseURL: `${i2!.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const stream = await sdk.chat.completions.create({ model: 'streamed|B', messages: [{ role: 'user', content: 'hi' }], stream: true });
    expect((await handshake).status).toBe(200);
    const reader = (async () => {
      let text = '';
      for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
      return text;
    })();
    await new Promise((r) => setTimeout(r, 700)); // a few keep-alives pass through the relay
    const a2 = fetch(`${i1!.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'streamed|A', messages: [{ role: 'user', content: 'hello' }, { role: 'assistant', content: 'hi' }, { role: 'user', content: 'streamed to you' }] }),
    });
    void a2.catch(() => undefined);
    expect(await reader).toBe('streamed to you');
  }, 60_000);
});

describe('cluster mode: a WebSocket side', () => {
  it('holds a WebSocket side on the instance that runs the session, relayed from the one it connected to', async () => {
    const [i1, i2, i3] = await startCluster(redis.url, 3);
    const handshake = fetch(`${i1!.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'ws-side|A', messages: [{ role: 'user', content: 'hello' }] }),
    });
    await expect.poll(async () => ((await (await fetch(`${i3!.url}/admin/sessions/ws-side`)).json()) as { owner?: string }).owner).toBe(i1!.id);
    const frames: Array<{ type: string; content?: string }> = [];
    const socket = new WebSocket(`${i2!.url.replace('http', 'ws')}/v1/realtime?session=ws-side&side=B`);
    open.push({ close: () => socket.close() });
    socket.on('message', (data) => frames.push(JSON.parse(data.toString()) as { type: string; content?: string }));
    await once(socket, 'open');
    await expect.poll(() => frames.map((f) => f.type)).toContain('ready');
    socket.send(JSON.stringify({ type: 'message', content: 'hi from the socket' }));
    const answered = (await (await handshake).json()) as { choices: Array<{ message: { content: string } }> };
    expect(answered.choices[0]!.message.content).toBe('hi from the socket');
    // A answers through a third instance: the delivery reaches the socket on instance 2.
    const a2 = fetch(`${i3!.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'ws-side|A',
        messages: [
          { role: 'user', content: 'hello' },
          { role: 'assistant', content: 'hi from the socket' },
          { role: 'user', content: 'and hello to you' },
        ],
      }),
    });
    void a2.catch(() => undefined);
    await expect.poll(() => frames.filter((f) => f.type === 'delivery').map((f) => f.content)).toEqual(['and hello to you']);
    expect((await (await fetch(`${i2!.url}/admin/sessions/ws-side`)).json()) as { owner: string }).toMatchObject({ owner: i1!.id });
  }, 60_000);
});

describe('cluster mode: turning it on', () => {
  it('works over TLS (rediss://) with a password, says JOURNAL_PATH is not used, and never logs the password', async () => {
    const tls = selfSignedCertificate();
    const own = await startRedis({ password: 's3cret-pw', tls });
    try {
      expect(own.url).toMatch(/^rediss:\/\/:s3cret-pw@localhost:/);
      const instances = await startCluster(own.url, 2, { NODE_EXTRA_CA_CERTS: tls.cert, JOURNAL_PATH: '/tmp/not-used-journal' });
      const balancer = await startBalancer(instances);
      open.push(balancer);
      const c = conversation(balancer, 'over-tls');
      await c.run(10);
      expectDeliveredAsSent(c);
      for (const instance of instances) {
        expect(instance.logs('JOURNAL_PATH (/tmp/not-used-journal) is not used').length).toBe(1);
        expect(instance.logs('joined the cluster at rediss://:***@localhost').length).toBe(1);
        expect(instance.output).not.toContain('s3cret-pw');
      }
      // A wrong password: the service does not start, and says why without the password.
      const wrong = own.url.replace('s3cret-pw', 'wrong-pw');
      await expect(startCluster(wrong, 1, { NODE_EXTRA_CA_CERTS: tls.cert })).rejects.toThrow(/cannot reach Redis at rediss:\/\/:\*\*\*@localhost.*(WRONGPASS|invalid)/s);
    } finally {
      killAll();
      await own.destroy();
    }
  }, 60_000);
});

describe('cluster mode when Redis fails', () => {
  it('answers 503 with Retry-After in the API\'s own error shape while Redis is down, says it is not ready, and carries on once Redis is back', async () => {
    const own = await startRedis();
    try {
      const instances = await startCluster(own.url, 2);
      const balancer = await startBalancer(instances);
      open.push(balancer);
      const c = conversation(balancer, 'redis-down');
      await c.run(12, async (turn) => {
        if (turn !== 6) return;
        // Redis goes away with a request held (the receiver of turn 6's answer waits).
        await own.stop();
        const res = await fetch(`${instances[0]!.url}/v1/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'a-new-session', messages: [{ role: 'user', content: 'hello' }] }),
        });
        expect(res.status).toBe(503);
        expect(res.headers.get('retry-after')).toBe('1');
        const body = (await res.json()) as { error: { code: string; type: string; message: string } };
        expect(body.error.code).toBe('cluster_unavailable');
        expect(body.error.message).toMatch(/Redis/);
        await expect.poll(async () => (await instances[0]!.health()).httpStatus, { timeout: 5000 }).toBe(503);
        expect((await instances[0]!.health()).status).toBe('not_ready');
        await own.start();
        await expect.poll(async () => (await instances[0]!.health()).httpStatus, { timeout: 10_000 }).toBe(200);
      });
      // The same conversation went on: its session was claimed again and rebuilt from the
      // journal, which survived the restart (AOF), and the held request's retry re-attached.
      expectDeliveredAsSent(c);
    } finally {
      killAll();
      await own.destroy();
    }
  }, 60_000);

  it('stops every owner while Redis is paused past the lease (never two appenders), and carries on when it answers again', async () => {
    const own = await startRedis();
    try {
      const instances = await startCluster(own.url, 3);
      const balancer = await startBalancer(instances);
      open.push(balancer);
      const c = conversation(balancer, 'redis-paused', { appRetries: 40 });
      await c.run(16, async (turn) => {
        if (turn !== 8) return;
        own.pause();
        await new Promise((r) => setTimeout(r, 3000)); // three leases
        own.resume();
      });
      expectDeliveredAsSent(c);
      // Whoever ran the session stopped it when its heartbeat could not be renewed for a lease.
      const stopped = instances.flatMap((i) => i.logs('stopping every session here'));
      expect(stopped.length).toBeGreaterThan(0);
    } finally {
      killAll();
      await own.destroy();
    }
  }, 90_000);

  it('loses no acknowledged message across a Redis restart (appendonly yes, appendfsync always)', async () => {
    const own = await startRedis();
    try {
      const instances = await startCluster(own.url, 3);
      const balancer = await startBalancer(instances);
      open.push(balancer);
      const c = conversation(balancer, 'redis-restart');
      await c.run(30, async (turn) => {
        if (turn !== 15) return;
        await own.kill();
        await own.start();
      });
      expectDeliveredAsSent(c);
    } finally {
      killAll();
      await own.destroy();
    }
  }, 60_000);
});
