// The on-disk journal against real files: what was acknowledged is read back, in append order,
// under every fsync policy, across reopen, compaction and a SIGKILL; torn and corrupt lines
// never stop it from opening; 'always' syncs once per record and 'batch' groups the syncs.
import { spawn } from 'node:child_process';
import { appendFileSync, chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileStore, JOURNAL_FILE } from '../../src/journal/file-store.js';
import { describeJournalStore, endsContractRecord, type ContractRecord } from './store-contract.js';
import { openJournal, type FsyncPolicy, type JournalRecordBase, type JournalStore, type StoreOptions } from '../../src/journal/store.js';

interface TestRecord extends JournalRecordBase {
  readonly type: string;
  readonly content: string;
}

const record = (seq: number, session = 'npc-guard'): TestRecord => ({
  session,
  seq,
  type: 'TurnSubmitted',
  content: `line ${seq}: "quoted", multi\nline, ünïcødé 🛡️`,
});

let dir: string;
let warnings: string[];
let syncs: number;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'motive-journal-'));
  warnings = [];
  syncs = 0;
});
const contractDirs: string[] = [];
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
  for (const d of contractDirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const journalFile = () => join(dir, JOURNAL_FILE);

function open(fsync: FsyncPolicy, extra: Partial<StoreOptions> = {}): Promise<JournalStore<TestRecord>> {
  return openJournal<TestRecord>(dir, {
    fsync,
    onWarning: (message) => warnings.push(message),
    onSync: () => (syncs += 1),
    ...extra,
  });
}

async function readAll<R extends JournalRecordBase>(store: JournalStore<R>): Promise<R[]> {
  const out: R[] = [];
  for await (const r of store.read()) out.push(r);
  return out;
}

describe.each(['always', 'batch', 'off'] as const)("FileStore with fsync '%s'", (policy) => {
  it('reads back what was appended, and again after a reopen', async () => {
    const store = await open(policy);
    const records = Array.from({ length: 50 }, (_, i) => record(i, `s${i % 3}`));
    for (const r of records.slice(0, 10)) await store.append(r);
    await Promise.all(records.slice(10).map((r) => store.append(r)));
    expect(await readAll(store)).toEqual(records);
    expect(store.stats()).toEqual({ bytes: statSync(journalFile()).size, appended: 50, pending: 0, policy, unreadable: 0, quarantined: 0 });
    await store.close();
    await expect(store.append(record(50))).rejects.toThrow(/closed/);

    const reopened = await open(policy);
    expect(await readAll(reopened)).toEqual(records);
    expect(reopened.stats().appended).toBe(0);
    await reopened.close();
    expect(readFileSync(journalFile(), 'utf8').split('\n')).toHaveLength(51); // 50 lines, each ended by \n
    expect(warnings).toEqual([]);
  });
});

describe('FileStore durability', () => {
  it("'always' syncs once per record; 'off' never", async () => {
    const always = await open('always');
    await Promise.all(Array.from({ length: 100 }, (_, i) => always.append(record(i))));
    expect(syncs).toBe(100);
    await always.close();

    syncs = 0;
    const off = await open('off');
    await Promise.all(Array.from({ length: 100 }, (_, i) => off.append(record(100 + i))));
    await off.flush();
    expect(syncs).toBe(0);
    expect(await readAll(off)).toHaveLength(200);
    await off.close();
  });

  it("'batch' keeps call order under 1,000 concurrent appends with far fewer syncs than records", async () => {
    const store = await open('batch');
    const records = Array.from({ length: 1_000 }, (_, i) => record(i, `s${i % 10}`));
    await Promise.all(records.map((r) => store.append(r)));
    expect(syncs).toBeLessThanOrEqual(2);
    expect(await readAll(store)).toEqual(records);
    await store.close();
  });

  it("'batch' groups records appended while a sync is in flight, with no window too", async () => {
    const store = await open('batch', { batchWindowMs: 0 });
    // 50 clients, each appending its next record as soon as the previous one is acknowledged.
    let seq = 0;
    const client = async () => {
      for (let i = 0; i < 20; i++) await store.append(record(seq++));
    };
    await Promise.all(Array.from({ length: 50 }, client));
    expect(syncs).toBeLessThan(1_000 / 10);
    expect((await readAll(store)).map((r) => r.seq)).toEqual(Array.from({ length: 1_000 }, (_, i) => i));
    await store.close();
  });

  it('flush() resolves once every earlier append is durable; stats() shows the pending ones', async () => {
    const store = await open('batch');
    const appends = Array.from({ length: 10 }, (_, i) => store.append(record(i)));
    expect(store.stats()).toMatchObject({ appended: 0, pending: 10, policy: 'batch' });
    await store.flush();
    expect(store.stats()).toMatchObject({ appended: 10, pending: 0 });
    expect(syncs).toBe(1);
    await Promise.all(appends);
    await store.close();
  });

  it('close() waits for appends still pending', async () => {
    const store = await open('batch');
    void store.append(record(0));
    void store.append(record(1));
    await store.close();
    const reopened = await open('batch');
    expect((await readAll(reopened)).map((r) => r.seq)).toEqual([0, 1]);
    await reopened.close();
  });

  it.skipIf(!existsSync('/dev/full'))('rejects a failed write, then refuses every further append with a clear error', async () => {
    symlinkSync('/dev/full', journalFile()); // a real device whose every write fails with ENOSPC
    const store = await open('always');
    const [first, queued] = [store.append(record(0)), store.append(record(1))];
    await expect(first).rejects.toThrow(/Could not write to the journal .*ENOSPC/);
    await expect(queued).rejects.toThrow(/failed and accepts no more appends.*ENOSPC/);
    await expect(store.append(record(2))).rejects.toMatchObject({ code: 'journal_failed' });
    await expect(store.flush()).rejects.toThrow(/accepts no more appends/);
    expect(store.stats()).toMatchObject({ appended: 0, pending: 0 });
    await store.close();
  });
});

describe('FileStore damage', () => {
  it('skips a torn last line with a warning, cuts it on open, and the next append reads clean', async () => {
    const store = await open('always');
    for (let i = 0; i < 3; i++) await store.append(record(i));
    appendFileSync(journalFile(), '{"session":"npc-guard","seq":3,"type":"Turn'); // a write cut short
    expect((await readAll(store)).map((r) => r.seq)).toEqual([0, 1, 2]);
    expect(warnings).toEqual([expect.stringMatching(/line 4: skipped a torn last line/)]);
    await store.close();

    warnings = [];
    const reopened = await open('always');
    expect(warnings).toEqual([expect.stringMatching(/kept 1 unreadable journal line\(s\) there/), expect.stringMatching(/moved a torn last line \(\d+ bytes/)]);
    // Nothing unread is deleted: the torn bytes are in the quarantine file, as they were.
    const [kept] = readFileSync(join(dir, 'journal.quarantine.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { text: string; base64: string; problem: string });
    expect(kept!.text).toBe('{"session":"npc-guard","seq":3,"type":"Turn');
    expect(Buffer.from(kept!.base64, 'base64').toString('utf8')).toBe(kept!.text);
    expect(kept!.problem).toMatch(/torn last line/);
    await reopened.append(record(3));
    expect((await readAll(reopened)).map((r) => r.seq)).toEqual([0, 1, 2, 3]);
    expect(warnings).toHaveLength(2);
    await reopened.close();
    const lines = readFileSync(journalFile(), 'utf8').split('\n');
    expect(lines.pop()).toBe('');
    expect(lines.map((l) => (JSON.parse(l) as TestRecord).seq)).toEqual([0, 1, 2, 3]);
  });

  it('opens a file that is only a torn line', async () => {
    writeFileSync(journalFile(), '{"sess');
    const store = await open('batch');
    await store.append(record(0));
    expect(await readAll(store)).toEqual([record(0)]);
    await store.close();
  });

  it('skips corrupt lines in the middle with a warning and still opens', async () => {
    const good = (seq: number) => `${JSON.stringify(record(seq))}\n`;
    writeFileSync(journalFile(), `${good(0)}{"session":"npc-guard","se\n${good(1)}{"foo":1}\n\n${good(2)}`);
    const store = await open('batch');
    await store.append(record(3));
    expect((await readAll(store)).map((r) => r.seq)).toEqual([0, 1, 2, 3]);
    expect(warnings).toEqual([
      expect.stringMatching(/line 2: skipped a corrupt line \(not valid JSON\)/),
      expect.stringMatching(/line 4: skipped a line that is not a journal record/),
    ]);
    expect(store.stats().unreadable).toBe(2);
    // A compaction drops them from the journal only after they are kept in the quarantine file.
    await store.compact(() => true);
    const quarantined = readFileSync(join(dir, 'journal.quarantine.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { line: number; text: string });
    expect(quarantined.map((q) => [q.line, q.text])).toEqual([
      [2, '{"session":"npc-guard","se'],
      [4, '{"foo":1}'],
    ]);
    expect(store.stats().quarantined).toBe(2);
    expect((await readAll(store)).map((r) => r.seq)).toEqual([0, 1, 2, 3]);
    await store.close();
  });

  it('keeps the journal private: a 0700 directory and 0600 files, also for a journal made before', async () => {
    const fresh = join(dir, 'fresh');
    const store = await FileStore.open<TestRecord>(fresh, { fsync: 'off', onWarning: (w) => warnings.push(w) });
    await store.append(record(0));
    await store.compact(() => true);
    expect(statSync(fresh).mode & 0o777).toBe(0o700);
    expect(statSync(join(fresh, 'journal.jsonl')).mode & 0o777).toBe(0o600);
    await store.close();
    chmodSync(join(fresh, 'journal.jsonl'), 0o644);
    chmodSync(fresh, 0o755);
    const reopened = await FileStore.open<TestRecord>(fresh, { fsync: 'off', onWarning: (w) => warnings.push(w) });
    expect(statSync(fresh).mode & 0o777).toBe(0o700);
    expect(statSync(join(fresh, 'journal.jsonl')).mode & 0o777).toBe(0o600);
    await reopened.close();
  });

  it('removes the copy left by a compaction cut short, keeping the journal', async () => {
    writeFileSync(journalFile(), `${JSON.stringify(record(0))}\n`);
    writeFileSync(join(dir, 'journal.jsonl.compact'), '{"half":');
    const store = await open('off');
    expect(await readAll(store)).toEqual([record(0)]);
    expect(existsSync(join(dir, 'journal.jsonl.compact'))).toBe(false);
    await store.close();
  });
});

describe('FileStore compaction', () => {
  it('keeps only the kept records, shrinks the file, and loses no append made meanwhile', async () => {
    const store = await open('batch');
    const records = Array.from({ length: 300 }, (_, i) => record(i, i % 3 === 0 ? 'open' : 'closed'));
    await Promise.all(records.map((r) => store.append(r)));
    const before = statSync(journalFile()).size;

    let during: Promise<void>[] = [];
    const result = await store.compact((r) => {
      // Appended while compaction is reading the journal: must land after it, unfiltered.
      if (during.length === 0) during = [300, 301, 302].map((seq) => store.append(record(seq, 'closed')));
      return r.session === 'open';
    });
    await Promise.all(during);
    expect(result).toEqual({ kept: 100, dropped: 200 });

    const expected = [...records.filter((r) => r.session === 'open'), record(300, 'closed'), record(301, 'closed'), record(302, 'closed')];
    expect(await readAll(store)).toEqual(expected);
    const after = statSync(journalFile()).size;
    expect(after).toBeLessThan(before / 2);
    expect(store.stats().bytes).toBe(after);
    expect(existsSync(join(dir, 'journal.jsonl.compact'))).toBe(false);

    await store.append(record(303));
    await store.close();
    const reopened = await open('batch');
    expect(await readAll(reopened)).toEqual([...expected, record(303)]);
    await reopened.close();
    expect(warnings).toEqual([]);
  });

  it('runs compactions one after another while appends keep arriving', async () => {
    const store = await open('always');
    const appends: Promise<void>[] = [];
    for (let i = 0; i < 40; i++) {
      appends.push(store.append(record(i, `s${i % 4}`)));
      if (i % 10 === 5) void store.compact((r) => r.session !== `s${i % 4}`);
    }
    const last = await store.compact(() => true);
    await Promise.all(appends);
    const seqs = (await readAll(store)).map((r) => r.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b)); // still in append order
    expect(last.dropped).toBe(0);
    await store.close();
  });

  it('leaves the journal as it was when keep() throws', async () => {
    const store = await open('off');
    await store.append(record(0));
    await expect(store.compact(() => { throw new Error('boom'); })).rejects.toThrow('boom');
    await store.append(record(1));
    expect((await readAll(store)).map((r) => r.seq)).toEqual([0, 1]);
    await store.close();
  });
});

describe('FileStore crash', () => {
  it("after a SIGKILL mid-stream, 'always' gives back every acknowledged record, in order", async () => {
    const root = fileURLToPath(new URL('../../', import.meta.url));
    const child = join(dir, 'child.mjs');
    writeFileSync(
      child,
      `import { openJournal } from ${JSON.stringify(pathToFileURL(join(root, 'src/journal/store.ts')).href)};
const store = await openJournal(process.argv[2], { fsync: 'always' });
let next = 0;
const pad = 'x'.repeat(300);
// Four writers at once, so appends are queued when the kill lands; acks go out on a synchronous pipe.
const writer = async () => { for (;;) { const seq = next++; await store.append({ session: 'crash', seq, pad }); process.stdout.write(seq + '\\n'); } };
await Promise.all([writer(), writer(), writer(), writer()]);`,
    );
    const journalDir = join(dir, 'journal');
    const proc = spawn(process.execPath, ['--import', 'tsx', child, journalDir], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    const acked: number[] = [];
    let stderr = '';
    let partial = '';
    proc.stderr.on('data', (data: Buffer) => (stderr += data.toString()));
    const exited = new Promise<NodeJS.Signals | null>((resolve) => proc.on('exit', (_code, signal) => resolve(signal)));
    proc.stdout.on('data', (data: Buffer) => {
      const lines = (partial + data.toString()).split('\n');
      partial = lines.pop() ?? '';
      acked.push(...lines.map(Number));
      if (acked.length >= 300) proc.kill('SIGKILL');
    });
    const signal = await exited;
    expect(signal, stderr).toBe('SIGKILL');

    const store = await openJournal(journalDir, { fsync: 'always', onWarning: (m) => warnings.push(m) });
    const seqs = (await readAll(store)).map((r) => r.seq);
    await store.close();
    // Appends are written in call order, so the journal is a prefix 0..n-1 that covers every ack.
    expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => i));
    expect(acked.length).toBeGreaterThanOrEqual(300);
    expect(Math.max(...acked)).toBeLessThan(seqs.length);
    expect(new Set(acked).size).toBe(acked.length);
  });
});

describeJournalStore('FileStore', async () => {
  const fresh = mkdtempSync(join(tmpdir(), 'motive-journal-contract-'));
  contractDirs.push(fresh);
  return FileStore.open<ContractRecord>(fresh, { fsync: 'batch', ends: endsContractRecord, onWarning: () => {} });
});

describe('FileStore index', () => {
  it('knows each session\'s last seq and whether it ended after a reopen, from the file', async () => {
    const fresh = mkdtempSync(join(tmpdir(), 'motive-journal-index-'));
    contractDirs.push(fresh);
    const first = await FileStore.open<ContractRecord>(fresh, { fsync: 'off', ends: endsContractRecord });
    for (const r of [{ session: 'a', seq: 1, type: 'Said' }, { session: 'a', seq: 2, type: 'Said' }, { session: 'b', seq: 1, type: 'End' }]) await first.append(r);
    await first.close();
    const reopened = await FileStore.open<ContractRecord>(fresh, { fsync: 'off', ends: endsContractRecord });
    expect(await reopened.liveSessions()).toEqual(['a']);
    await expect(reopened.append({ session: 'a', seq: 2, type: 'Said' }, { expectedSeq: 1 })).rejects.toMatchObject({ code: 'seq_conflict' });
    await reopened.append({ session: 'a', seq: 3, type: 'Said' }, { expectedSeq: 2 });
    await reopened.close();
  });
});
