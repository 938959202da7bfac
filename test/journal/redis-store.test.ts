/**
 * The Redis journal store (cluster mode) against a private redis-server: the shared store
 * contract, then what only a store shared by several instances does: the fence checked inside
 * Redis, duplicates dropped, an ended session's keys expiring, and Redis going away.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisStore } from '../../src/journal/redis-store.js';
import { startRedis, type PrivateRedis } from '../helpers/redis.js';
import { describeJournalStore, endsContractRecord, type ContractRecord } from './store-contract.js';

let server: PrivateRedis;
const clients: Redis[] = [];
let prefixes = 0;

beforeAll(async () => {
  server = await startRedis();
}, 20_000);

afterAll(async () => {
  for (const client of clients) client.disconnect();
  await server?.destroy();
});

function client(): Redis {
  const redis = new Redis(server.url, { maxRetriesPerRequest: 1 });
  redis.on('error', () => undefined); // the test that stops Redis expects its errors
  clients.push(redis);
  return redis;
}

function open(options: { endedKeepMs?: number } = {}): { store: RedisStore<ContractRecord>; redis: Redis; prefix: string } {
  const redis = client();
  const prefix = `t${++prefixes}`;
  return { store: new RedisStore<ContractRecord>({ redis, prefix, ends: endsContractRecord, ...options }), redis, prefix };
}

const rec = (session: string, seq: number, type = 'Said', extra: Record<string, unknown> = {}): ContractRecord => ({ session, seq, type, ...extra });

describeJournalStore('RedisStore', async () => open().store);

describe('RedisStore: what a shared store adds', () => {
  it('refuses an append whose fence is not the session\'s epoch, inside Redis, and stores nothing of it', async () => {
    const { store, redis, prefix } = open();
    await redis.hset(`${prefix}:s:a:meta`, 'epoch', '7');
    await store.append(rec('a', 1), { expectedSeq: 0, fence: 7 });
    // Another instance claimed the session: epoch 8.
    await redis.hset(`${prefix}:s:a:meta`, 'epoch', '8');
    await expect(store.append(rec('a', 2), { expectedSeq: 1, fence: 7 })).rejects.toMatchObject({ code: 'fenced' });
    await store.append(rec('a', 2, 'FromTheNewOwner'), { expectedSeq: 1, fence: 8 });
    expect(await store.readSession('a')).toEqual([rec('a', 1), rec('a', 2, 'FromTheNewOwner')]);
    await store.close();
  });

  it('drops an append repeated as it was (a retried write): one record, and the retry succeeds', async () => {
    const { store } = open();
    await store.append(rec('a', 1), { expectedSeq: 0 });
    await store.append(rec('a', 2, 'Said', { text: 'hello' }), { expectedSeq: 1 });
    await store.append(rec('a', 2, 'Said', { text: 'hello' }), { expectedSeq: 1 });
    // The same seq with other content is another writer's: refused.
    await expect(store.append(rec('a', 2, 'Said', { text: 'other' }), { expectedSeq: 1 })).rejects.toMatchObject({ code: 'seq_conflict' });
    expect(await store.readSession('a')).toEqual([rec('a', 1), rec('a', 2, 'Said', { text: 'hello' })]);
    expect(store.stats()).toMatchObject({ appended: 2, pending: 0, policy: 'redis' });
    await store.close();
  });

  it('sees what another instance appended at once: the append is the commit point', async () => {
    const first = open();
    const second = new RedisStore<ContractRecord>({ redis: client(), prefix: first.prefix, ends: endsContractRecord });
    await first.store.append(rec('a', 1), { expectedSeq: 0 });
    expect(await second.readSession('a')).toEqual([rec('a', 1)]);
    await second.append(rec('a', 2), { expectedSeq: 1 });
    await expect(first.store.append(rec('a', 2, 'Mine'), { expectedSeq: 1 })).rejects.toMatchObject({ code: 'seq_conflict' });
    expect(await first.store.liveSessions()).toEqual(['a']);
  });

  it('lets an ended session\'s keys expire, and a new incarnation keeps them', async () => {
    const { store, redis, prefix } = open({ endedKeepMs: 200 });
    await store.append(rec('a', 1));
    await store.append(rec('a', 2, 'End'));
    await store.append(rec('b', 1));
    await store.append(rec('b', 2, 'End'));
    await store.append(rec('b', 1, 'Again'));
    expect(await redis.pttl(`${prefix}:s:a:log`)).toBeGreaterThan(0);
    expect(await redis.pttl(`${prefix}:s:b:log`)).toBe(-1);
    await new Promise((r) => setTimeout(r, 300));
    expect(await redis.exists(`${prefix}:s:a:log`, `${prefix}:s:a:meta`)).toBe(0);
    expect(await store.readSession('a')).toEqual([]);
    expect(await store.readSession('b')).toEqual([rec('b', 1, 'Again')]);
    expect(await store.liveSessions()).toEqual(['b']);
  });

  it('fails an append with journal_failed while Redis is away, and appends again once it is back', async () => {
    const { store } = open();
    await store.append(rec('a', 1));
    await server.stop();
    try {
      await expect(store.append(rec('a', 2), { expectedSeq: 1 })).rejects.toMatchObject({ code: 'journal_failed' });
    } finally {
      await server.start();
    }
    // Nothing of the failed append was stored (appendfsync always: the first record survived the restart).
    await expect.poll(() => store.append(rec('a', 2), { expectedSeq: 1 }).then(() => 'taken', (e: { code?: string }) => e.code ?? 'error'), { timeout: 5000 }).toBe('taken');
    expect(await store.readSession('a')).toEqual([rec('a', 1), rec('a', 2)]);
  }, 20_000);
});
