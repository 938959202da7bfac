/**
 * The cluster's delivery guarantee as a property (fast-check): for any schedule of instance
 * kills (SIGKILL, then a restart), pauses past the lease (SIGSTOP, SIGCONT) and graceful stops
 * while several conversations of official SDK clients run through a load balancer, per
 * session and per side, what was delivered equals what the other side sent, in order: nothing
 * lost, nothing twice. `CLUSTER_SEED=n` replays a seed; `CLUSTER_RUNS=n` runs more schedules.
 */
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startRedis, type PrivateRedis } from '../helpers/redis.js';
import { Conversation, startBalancer } from './clients.js';
import { killAll, startCluster, type Instance } from './instances.js';

let redis: PrivateRedis;

beforeAll(async () => {
  redis = await startRedis();
}, 20_000);

afterEach(() => killAll());

afterAll(async () => {
  killAll();
  await redis?.destroy();
});

type Fault = { readonly kind: 'kill' | 'pause' | 'stop'; readonly target: number; readonly afterMs: number };

const fault = fc.record({
  kind: fc.constantFrom<Fault['kind']>('kill', 'pause', 'stop'),
  target: fc.nat({ max: 2 }),
  afterMs: fc.integer({ min: 100, max: 800 }),
});

const schedule = fc.record({
  sessions: fc.integer({ min: 2, max: 4 }),
  turns: fc.integer({ min: 10, max: 20 }),
  /** A person's pause between turns, so that the faults fall inside the conversations. */
  thinkMs: fc.integer({ min: 100, max: 250 }),
  faults: fc.array(fault, { minLength: 1, maxLength: 3 }),
});

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Applies the faults one after the other while the conversations run; an instance is always back before the next. */
async function sabotage(instances: Instance[], faults: readonly Fault[], done: () => boolean, log: string[]): Promise<void> {
  for (const f of faults) {
    await sleep(f.afterMs);
    if (done()) return;
    const target = instances[f.target % instances.length]!;
    if (!target.running) continue;
    log.push(`${f.kind} ${target.id}`);
    if (f.kind === 'kill') {
      await target.kill();
      await sleep(300);
      await target.start();
    } else if (f.kind === 'stop') {
      await target.stop();
      await sleep(300);
      await target.start();
    } else {
      target.pause();
      await sleep(1800); // past the 1 s lease
      target.resume();
    }
  }
}

describe('cluster mode under random faults (property)', () => {
  it('delivers every message exactly once, in order, per side, whatever instances are killed, paused or stopped', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(schedule, async ({ sessions, turns, thinkMs, faults }) => {
        run++;
        const instances = await startCluster(redis.url, 3);
        const balancer = await startBalancer(instances);
        const log: string[] = [];
        const conversations = Array.from({ length: sessions }, (_, i) => new Conversation(balancer.url, `prop-${run}-${i}`, { maxRetries: 4, appRetries: 30 }));
        let finished = false;
        try {
          const saboteur = sabotage(instances, faults, () => finished, log);
          await Promise.all(conversations.map((c) => c.run(turns, () => sleep(thinkMs))));
          finished = true;
          const applied = log.length;
          await saboteur;
          // The faults fell while the conversations ran (a schedule that missed them proves nothing).
          expect(applied, `faults applied during the conversations: ${log.join(', ')}`).toBeGreaterThan(0);
          console.log(`cluster property run ${run}: ${sessions} sessions × ${turns} turns, faults ${log.join(', ')}; every side got what the other sent`);
          for (const c of conversations) {
            expect(c.received.A, `${c.session} after ${log.join(', ')}`).toEqual(c.sent.B);
            expect(c.received.B, `${c.session} after ${log.join(', ')}`).toEqual(c.sent.A);
          }
        } finally {
          finished = true;
          for (const c of conversations) c.close();
          await balancer.close();
          killAll();
        }
      }),
      {
        numRuns: Number(process.env.CLUSTER_RUNS ?? 3),
        ...(process.env.CLUSTER_SEED ? { seed: Number(process.env.CLUSTER_SEED) } : {}),
        endOnFailure: true,
      },
    );
  }, 300_000);
});
