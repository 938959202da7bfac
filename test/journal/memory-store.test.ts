// The in-memory journal (JOURNAL_PATH=memory) keeps the same contract as the file store, minus
// durability: records come back in append order (the objects themselves), compaction filters them,
// and a closed store refuses appends.
import { describe, expect, it } from 'vitest';
import { JournalError, MemoryStore, openJournal, type JournalRecordBase } from '../../src/journal/store.js';
import { describeJournalStore, endsContractRecord, type ContractRecord } from './store-contract.js';

interface TestRecord extends JournalRecordBase {
  readonly type: string;
  readonly content?: string;
}

const record = (seq: number, session = 'npc-guard'): TestRecord => ({ session, seq, type: 'TurnSubmitted', content: `line ${seq}` });

async function readAll<R>(store: { read(): AsyncIterable<R> }): Promise<R[]> {
  const out: R[] = [];
  for await (const r of store.read()) out.push(r);
  return out;
}

describe('MemoryStore', () => {
  it('is what openJournal gives for the path "memory"', async () => {
    const store = await openJournal('memory', { fsync: 'batch' });
    expect(store).toBeInstanceOf(MemoryStore);
    expect(store.stats()).toEqual({ bytes: 0, appended: 0, pending: 0, policy: 'memory' });
  });

  it('reads back every record in append order, including concurrent appends', async () => {
    const store = new MemoryStore<TestRecord>();
    const records = Array.from({ length: 1_000 }, (_, i) => record(i, `s${i % 7}`));
    await Promise.all(records.map((r) => store.append(r)));
    await store.flush();
    expect(await readAll(store)).toEqual(records);
    expect(store.stats()).toMatchObject({ appended: 1_000, pending: 0 });
  });

  it('keeps the records themselves, without a copy per append (records are immutable once appended)', async () => {
    const store = new MemoryStore<TestRecord>();
    const first = record(0);
    await store.append(first);
    const [read] = await readAll(store);
    expect(read).toBe(first);
  });

  it('rejects a record without a string session or a numeric seq', async () => {
    const store = new MemoryStore();
    await expect(store.append({ session: 's' } as unknown as JournalRecordBase)).rejects.toMatchObject({ code: 'invalid_record' });
    await expect(store.append({ session: 1, seq: 1 } as unknown as JournalRecordBase)).rejects.toBeInstanceOf(JournalError);
    expect(store.stats().appended).toBe(0);
  });

  it('compacts to the kept records and keeps appending after', async () => {
    const store = new MemoryStore<TestRecord>();
    for (let i = 0; i < 10; i++) await store.append(record(i, i % 2 === 0 ? 'open' : 'closed'));
    expect(await store.compact((r) => r.session === 'open')).toEqual({ kept: 5, dropped: 5 });
    await store.append(record(10, 'closed'));
    expect((await readAll(store)).map((r) => r.seq)).toEqual([0, 2, 4, 6, 8, 10]);
  });

  it('refuses appends once closed, with a clear error', async () => {
    const store = new MemoryStore();
    await store.append(record(0));
    await store.close();
    await expect(store.append(record(1))).rejects.toThrow(/closed/);
    expect(await readAll(store)).toHaveLength(1);
  });
});

describeJournalStore('MemoryStore', async () => new MemoryStore<ContractRecord>(endsContractRecord));
