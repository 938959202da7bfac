/**
 * The journal store port's contract, as one suite every store runs (the memory and file stores
 * now; a store on a shared database next): append order, appends that expect a sequence, one
 * session's latest incarnation, the live sessions, and compaction keeping all of it true.
 */
import { describe, expect, it } from 'vitest';
import type { JournalRecordBase, JournalStore } from '../../src/journal/store.js';

export interface ContractRecord extends JournalRecordBase {
  readonly type: string;
}

/** Records of type 'End' end their session (the stores are opened with this `ends`). */
export const endsContractRecord = (record: ContractRecord): boolean => record.type === 'End';

const rec = (session: string, seq: number, type = 'Said'): ContractRecord => ({ session, seq, type });

async function readAll<R>(store: { read(): AsyncIterable<R> }): Promise<R[]> {
  const out: R[] = [];
  for await (const r of store.read()) out.push(r);
  return out;
}

/** `open` gives a fresh, empty store whose `ends` is endsContractRecord. */
export function describeJournalStore(name: string, open: () => Promise<JournalStore<ContractRecord>>): void {
  describe(`${name}: the journal store contract`, () => {
    it('reads back every record in append order, across sessions', async () => {
      const store = await open();
      const records = [rec('a', 1), rec('b', 1), rec('a', 2), rec('b', 2), rec('a', 3)];
      for (const r of records) await store.append(r);
      expect(await readAll(store)).toEqual(records);
      await store.close();
    });

    it('takes an append that expects the session\'s last seq, refuses one that does not (seq_conflict), and stores nothing of it', async () => {
      const store = await open();
      await store.append(rec('a', 1), { expectedSeq: 0 });
      await store.append(rec('a', 2), { expectedSeq: 1 });
      await expect(store.append(rec('a', 3), { expectedSeq: 1 })).rejects.toMatchObject({ code: 'seq_conflict' });
      await expect(store.append(rec('b', 2), { expectedSeq: 1 })).rejects.toMatchObject({ code: 'seq_conflict' });
      await store.append(rec('a', 3), { expectedSeq: 2 });
      // 0 starts a new incarnation of the id, whatever came before.
      await store.append(rec('a', 1), { expectedSeq: 0 });
      await store.append(rec('a', 2), { expectedSeq: 1 });
      expect((await readAll(store)).map((r) => `${r.session}${r.seq}`)).toEqual(['a1', 'a2', 'a3', 'a1', 'a2']);
      await store.close();
    });

    it('reads one session\'s latest incarnation, and nothing for a session it has never seen', async () => {
      const store = await open();
      for (const r of [rec('a', 1), rec('b', 1), rec('a', 2), rec('a', 3, 'End'), rec('a', 1, 'Again'), rec('b', 2), rec('a', 2)]) await store.append(r);
      expect(await store.readSession('a')).toEqual([rec('a', 1, 'Again'), rec('a', 2)]);
      expect(await store.readSession('b')).toEqual([rec('b', 1), rec('b', 2)]);
      expect(await store.readSession('nobody')).toEqual([]);
      await store.close();
    });

    it('lists the sessions whose latest incarnation has not ended', async () => {
      const store = await open();
      for (const r of [rec('a', 1), rec('b', 1), rec('c', 1), rec('b', 2, 'End')]) await store.append(r);
      expect((await store.liveSessions()).sort()).toEqual(['a', 'c']);
      await store.append(rec('b', 1)); // b used again: live again
      await store.append(rec('c', 2, 'End'));
      expect((await store.liveSessions()).sort()).toEqual(['a', 'b']);
      await store.close();
    });

    it('keeps all of it true through a compaction', async () => {
      const store = await open();
      for (const r of [rec('a', 1), rec('b', 1), rec('a', 2), rec('b', 2)]) await store.append(r);
      const result = await store.compact((r) => r.session === 'a');
      expect(result).toEqual({ kept: 2, dropped: 2 });
      expect(await readAll(store)).toEqual([rec('a', 1), rec('a', 2)]);
      expect(await store.liveSessions()).toEqual(['a']);
      expect(await store.readSession('b')).toEqual([]);
      await store.append(rec('a', 3), { expectedSeq: 2 });
      await expect(store.append(rec('a', 5), { expectedSeq: 4 })).rejects.toMatchObject({ code: 'seq_conflict' });
      expect(await store.readSession('a')).toEqual([rec('a', 1), rec('a', 2), rec('a', 3)]);
      await store.close();
    });

    it('refuses appends once closed', async () => {
      const store = await open();
      await store.append(rec('a', 1));
      await store.close();
      await expect(store.append(rec('a', 2))).rejects.toMatchObject({ code: 'journal_closed' });
    });
  });
}
