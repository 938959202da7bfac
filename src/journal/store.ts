/**
 * The event journal's storage port and its in-memory store. A store keeps opaque records in
 * append order; it reads only `session` and `seq` (and asks the caller's `ends` which records end
 * a session), the rest belongs to the caller. The memory and file stores implement it, and pass
 * one shared test suite (test/journal/store-contract.ts); a store on a shared database (Redis)
 * implements the same port, checking the expected sequence where the data is.
 */

export type FsyncPolicy = 'always' | 'batch' | 'off';

export interface JournalRecordBase {
  readonly session: string;
  readonly seq: number;
}

/** How an append is checked. */
export interface AppendOptions {
  /**
   * The seq the session's last stored record must have for this append to be taken: it is the
   * session's next record, and nobody else appended meanwhile. 0 starts a new incarnation of
   * the id (any earlier records stay). Absent: not checked. A mismatch rejects with `seq_conflict`.
   */
  readonly expectedSeq?: number;
  /**
   * The fencing token (the session's epoch) the appender holds as the session's owner, in
   * cluster mode: a store shared by several instances refuses the append (`fenced`) once
   * another instance has claimed the session. The stores of one process have one writer and
   * ignore it.
   */
  readonly fence?: number;
}

export interface JournalStore<R extends JournalRecordBase = JournalRecordBase> {
  /** Appends in call order. The promise resolves when the record is as durable as the policy promises:
   *  'always' – written and fsynced (one fsync per record);
   *  'batch'  – written and fsynced, fsyncs of records appended close together are grouped (group commit: records
   *             appended while a write+fsync is in flight go in the next single write+fsync, after batchWindowMs);
   *  'off'    – handed to the OS with write(), no fsync (survives a process crash, not power loss).
   *  Rejects if the write fails; a failed store refuses further appends with a clear error. */
  append(record: R, options?: AppendOptions): Promise<void>;
  /** Every stored record in append order, skipping a torn last line and any corrupt line (each reported through onWarning). */
  read(): AsyncIterable<R>;
  /** One session's records, in order, from its latest seq 1 on (its latest incarnation); [] when it has none. */
  readSession(session: string): Promise<R[]>;
  /** A session's last record, without reading the others (stores that can). */
  lastRecord?(session: string): Promise<R | null>;
  /** The sessions whose latest incarnation has records and no record that ends it (`ends`). */
  liveSessions(): Promise<string[]>;
  /** Rewrites the journal keeping only records for which keep(record) is true (to drop closed/expired sessions).
   *  Atomic: write a new file, fsync, rename over, fsync the directory. Appends that arrive meanwhile are queued and
   *  written after it, unfiltered. */
  compact(keep: (record: R) => boolean): Promise<{ kept: number; dropped: number }>;
  /** Resolves when everything appended so far is as durable as the policy promises. */
  flush(): Promise<void>;
  close(): Promise<void>;
  /** For health: bytes on disk (0 for memory), records appended since open, and appends still pending. */
  stats(): JournalStats;
  /** Every append is as durable as the store promises when `append` returns (memory): nothing to wait for. */
  readonly durableOnAppend?: boolean;
}

export interface JournalStats {
  readonly bytes: number;
  readonly appended: number;
  readonly pending: number;
  readonly policy: FsyncPolicy | 'memory' | 'redis';
  /** Lines that are not records, as the latest full read found them (file store). */
  readonly unreadable?: number;
  /** Unreadable lines moved to the quarantine file since the store opened (file store). */
  readonly quarantined?: number;
}

export interface StoreOptions<R extends JournalRecordBase = JournalRecordBase> {
  readonly fsync: FsyncPolicy;
  /** Which records end a session (for liveSessions); none by default. */
  readonly ends?: (record: R) => boolean;
  /** 'batch' only: how long the first append after a quiet spell waits for company. Default 2. */
  readonly batchWindowMs?: number;
  readonly onWarning?: (message: string) => void;
  /** Test hook: called after every fsync of the journal file made for appends. */
  readonly onSync?: () => void;
}

export type JournalErrorCode = 'journal_closed' | 'journal_failed' | 'invalid_record' | 'seq_conflict' | 'fenced';

export class JournalError extends Error {
  override readonly name = 'JournalError';

  constructor(
    readonly code: JournalErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The one shape check a store makes: without a session id and a seq a record cannot be replayed. */
export function isJournalRecord(value: unknown): value is JournalRecordBase {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const { session, seq } = value as Record<string, unknown>;
  return typeof session === 'string' && typeof seq === 'number' && Number.isFinite(seq);
}

/** Serialises a record to one journal line (JSON escapes every newline inside strings). */
export function encodeRecord(record: unknown): string {
  if (!isJournalRecord(record)) throw invalidRecordError();
  let json: string | undefined;
  try {
    json = JSON.stringify(record);
  } catch (error) {
    throw new JournalError('invalid_record', `A journal record must be JSON-serialisable: ${describeError(error)}`, { cause: error });
  }
  if (json === undefined) throw new JournalError('invalid_record', 'A journal record must serialise to JSON.');
  return json;
}

/** Parses one journal line back into a record, or says why it is not one. */
export function decodeRecord(line: string): { record: JournalRecordBase } | { problem: string } {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return { problem: `skipped a corrupt line (not valid JSON): ${preview(line)}` };
  }
  if (isJournalRecord(value)) return { record: value };
  return { problem: `skipped a line that is not a journal record (needs a string session and a number seq): ${preview(line)}` };
}

export function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function preview(text: string): string {
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}…` : text);
}

/**
 * What a store knows of each session without reading it: the seq of its last record, and
 * whether its latest incarnation has ended. Both stores keep one, fed by every record.
 */
export class SessionIndex<R extends JournalRecordBase> {
  private readonly sessions = new Map<string, { seq: number; ended: boolean }>();

  constructor(private readonly ends: (record: R) => boolean = () => false) {}

  /** The conflict an append with these options would make, or null. */
  conflict(record: R, options: AppendOptions | undefined): JournalError | null {
    const expected = options?.expectedSeq;
    if (expected === undefined || expected === 0) return null;
    const last = this.sessions.get(record.session)?.seq ?? 0;
    if (last === expected) return null;
    return new JournalError('seq_conflict', `Session '${record.session}' has ${last} as its last record, not ${expected}: another writer appended meanwhile.`);
  }

  note(record: R): void {
    const entry = record.seq === 1 ? undefined : this.sessions.get(record.session);
    if (entry) {
      entry.seq = record.seq;
      entry.ended ||= this.ends(record);
    } else {
      this.sessions.set(record.session, { seq: record.seq, ended: this.ends(record) });
    }
  }

  live(): string[] {
    const ids: string[] = [];
    for (const [id, entry] of this.sessions) if (!entry.ended) ids.push(id);
    return ids;
  }

  clear(): void {
    this.sessions.clear();
  }

  /** A new, empty index that tells ends the same way. */
  emptyLike(): SessionIndex<R> {
    return new SessionIndex<R>(this.ends);
  }
}

/** Records of one session from its latest seq 1 on, from records in journal order. */
export function latestOf<R extends JournalRecordBase>(records: Iterable<R>, session: string): R[] {
  let mine: R[] = [];
  for (const record of records) {
    if (record.session !== session) continue;
    if (record.seq === 1) mine = [];
    mine.push(record);
  }
  return mine;
}

export async function openJournal<R extends JournalRecordBase = JournalRecordBase>(
  path: string,
  options: StoreOptions<R>,
): Promise<JournalStore<R>> {
  if (path === 'memory') return new MemoryStore<R>(options.ends);
  // Loaded on demand so an in-memory setup never touches the file code.
  const { FileStore } = await import('./file-store.js');
  return FileStore.open<R>(path, options);
}

/** Keeps records in process memory: nothing survives a restart. For tests and `JOURNAL_PATH=memory`.
 *  It keeps the record objects themselves: callers must not change a record after appending it. */
export class MemoryStore<R extends JournalRecordBase = JournalRecordBase> implements JournalStore<R> {
  readonly durableOnAppend = true;
  private records: R[] = [];
  private appended = 0;
  private closed = false;
  private readonly index: SessionIndex<R>;

  constructor(ends?: (record: R) => boolean) {
    this.index = new SessionIndex(ends);
  }

  append(record: R, options?: AppendOptions): Promise<void> {
    if (this.closed) return Promise.reject(closedError());
    // Records are never changed after they are appended (the journal builds each one afresh from
    // immutable facts), so the store keeps the object itself: no JSON round trip per record.
    if (!isJournalRecord(record)) return Promise.reject(invalidRecordError());
    const conflict = this.index.conflict(record, options);
    if (conflict) return Promise.reject(conflict);
    this.index.note(record);
    this.records.push(record);
    this.appended += 1;
    return Promise.resolve();
  }

  async *read(): AsyncIterable<R> {
    // A snapshot, so appends during iteration neither show up nor disturb it.
    yield* this.records.slice();
  }

  async readSession(session: string): Promise<R[]> {
    return latestOf(this.records, session);
  }

  async liveSessions(): Promise<string[]> {
    return this.index.live();
  }

  async compact(keep: (record: R) => boolean): Promise<{ kept: number; dropped: number }> {
    if (this.closed) throw closedError();
    const before = this.records.length;
    this.records = this.records.filter((record) => keep(record));
    this.index.clear();
    for (const record of this.records) this.index.note(record);
    return { kept: this.records.length, dropped: before - this.records.length };
  }

  async flush(): Promise<void> {}

  async close(): Promise<void> {
    this.closed = true;
  }

  stats(): JournalStats {
    return { bytes: 0, appended: this.appended, pending: 0, policy: 'memory' };
  }
}

function invalidRecordError(): JournalError {
  return new JournalError('invalid_record', 'A journal record needs a string `session` and a finite number `seq`.');
}

export function closedError(): JournalError {
  return new JournalError('journal_closed', 'The journal is closed; it accepts no more appends.');
}
