/**
 * The embedded on-disk journal: `<dir>/journal.jsonl`, one JSON record per `\n`-terminated line,
 * written through a single append-only handle by one writer loop, so lines land in call order.
 *
 * It holds conversations: the directory is created 0700 and the files 0600. Nothing the store
 * cannot read is ever deleted: a line that is not a record (or a torn last line cut at open) is
 * copied to `<dir>/journal.quarantine.jsonl` before a compaction or a trim would drop it.
 */
import { chmod, mkdir, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { closedError, decodeRecord, describeError, encodeRecord, JournalError, latestOf, SessionIndex } from './store.js';
import type { AppendOptions, FsyncPolicy, JournalRecordBase, JournalStats, JournalStore, StoreOptions } from './store.js';

export const JOURNAL_FILE = 'journal.jsonl';
export const QUARANTINE_FILE = 'journal.quarantine.jsonl';
const COMPACT_FILE = 'journal.jsonl.compact';
const PRIVATE_FILE = 0o600;
const PRIVATE_DIR = 0o700;
const NEWLINE = 0x0a;
const CHUNK_BYTES = 64 * 1024;

type Warn = (message: string) => void;

/** A line of the journal that is not a record, as it was on disk. */
interface Unreadable {
  readonly line: number;
  readonly bytes: Buffer;
  readonly problem: string;
}

interface PendingAppend {
  readonly record: JournalRecordBase;
  readonly line: string;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

export class FileStore<R extends JournalRecordBase = JournalRecordBase> implements JournalStore<R> {
  private queue: PendingAppend[] = [];
  private inFlight = 0;
  private writing = false;
  private writer: Promise<void> = Promise.resolve();
  /** Set while a compaction swaps the file; appends queue up meanwhile. */
  private paused = false;
  private compactions: Promise<unknown> = Promise.resolve();
  private tail: Promise<void> = Promise.resolve();
  private failure: JournalError | null = null;
  private closing: Promise<void> | null = null;
  private appended = 0;
  /** Lines that are not records, as the latest full read found them. */
  private unreadable = 0;
  private quarantined = 0;

  private readonly file: string;
  private readonly policy: FsyncPolicy;

  private constructor(
    private readonly dir: string,
    private handle: FileHandle,
    private bytes: number,
    private readonly settings: { policy: FsyncPolicy; batchWindowMs: number; warn: Warn; onSync: () => void },
    private index: SessionIndex<R>,
  ) {
    this.file = join(dir, JOURNAL_FILE);
    this.policy = settings.policy;
  }

  static async open<R extends JournalRecordBase = JournalRecordBase>(dir: string, options: StoreOptions<R>): Promise<FileStore<R>> {
    const { fsync, batchWindowMs = 2 } = options;
    if (fsync !== 'always' && fsync !== 'batch' && fsync !== 'off') throw new Error(`Unknown journal fsync policy '${String(fsync)}'.`);
    if (!(batchWindowMs >= 0)) throw new Error(`batchWindowMs must be a non-negative number, got ${batchWindowMs}.`);
    const warn = options.onWarning ?? ((message: string) => process.emitWarning(message, 'JournalWarning'));

    await mkdir(dir, { recursive: true, mode: PRIVATE_DIR });
    const file = join(dir, JOURNAL_FILE);
    // A compaction cut short by a crash leaves its unrenamed copy behind; the journal itself is intact.
    await unlink(join(dir, COMPACT_FILE)).catch(ignoreMissing);
    const handle = await open(file, 'a', PRIVATE_FILE);
    try {
      // Files made by older versions (or a umask) may be readable by others: make them private.
      await restrict(dir, PRIVATE_DIR, warn);
      await restrict(file, PRIVATE_FILE, warn);
      const bytes = await trimTornTail(handle, file, warn, (torn) => quarantine(dir, [torn], warn));
      // Makes the file's directory entry durable when this open created it.
      if (fsync !== 'off') await syncDirectory(dir);
      // Each session's last seq, for appends that expect one (read's own warnings come later).
      const index = new SessionIndex<R>(options.ends);
      if ((await handle.stat()).isFile()) for await (const record of readRecords(file, () => {})) index.note(record as R);
      return new FileStore<R>(dir, handle, bytes, { policy: fsync, batchWindowMs, warn, onSync: options.onSync ?? (() => {}) }, index);
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  append(record: R, options?: AppendOptions): Promise<void> {
    if (this.closing) return Promise.reject(closedError());
    if (this.failure) return Promise.reject(this.failure);
    let line: string;
    try {
      line = `${encodeRecord(record)}\n`;
    } catch (error) {
      return Promise.reject(error);
    }
    // Appends land in call order, so the index can take the record now.
    const conflict = this.index.conflict(record, options);
    if (conflict) return Promise.reject(conflict);
    this.index.note(record);
    const done = new Promise<void>((resolve, reject) => this.queue.push({ record, line, resolve, reject }));
    this.tail = done;
    this.startWriter();
    return done;
  }

  async *read(): AsyncIterable<R> {
    // Include what was appended before the read began; a failure already reached those callers.
    await this.tail.catch(() => undefined);
    let unreadable = 0;
    yield* readRecords(this.file, this.settings.warn, () => unreadable++) as AsyncIterable<R>;
    this.unreadable = unreadable;
  }

  async readSession(session: string): Promise<R[]> {
    const records: R[] = [];
    for await (const record of this.read()) if (record.session === session) records.push(record);
    return latestOf(records, session);
  }

  async liveSessions(): Promise<string[]> {
    return this.index.live();
  }

  compact(keep: (record: R) => boolean): Promise<{ kept: number; dropped: number }> {
    if (this.closing) return Promise.reject(closedError());
    // One compaction at a time, in call order.
    const run = this.compactions.then(() => this.runCompaction(keep));
    this.compactions = run.catch(() => undefined);
    return run;
  }

  flush(): Promise<void> {
    return this.failure ? Promise.reject(this.failure) : this.tail;
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.compactions;
      await this.tail.catch(() => undefined);
      await this.handle.close();
    })();
    return this.closing;
  }

  stats(): JournalStats {
    return {
      bytes: this.bytes,
      appended: this.appended,
      pending: this.queue.length + this.inFlight,
      policy: this.policy,
      unreadable: this.unreadable,
      quarantined: this.quarantined,
    };
  }

  private startWriter(): void {
    if (this.writing || this.paused || this.failure) return;
    this.writing = true;
    this.writer = this.drain();
  }

  /** The only writer. 'always' takes one record per write+fsync; the others take all that queued meanwhile. */
  private async drain(): Promise<void> {
    try {
      // Group commit: the first append after a quiet spell waits briefly for company.
      if (this.policy === 'batch' && this.settings.batchWindowMs > 0) await delay(this.settings.batchWindowMs);
      while (this.queue.length > 0 && !this.paused && !this.failure) {
        const batch = this.policy === 'always' ? this.queue.splice(0, 1) : this.queue.splice(0);
        this.inFlight = batch.length;
        try {
          await this.writeBatch(batch);
        } catch (error) {
          this.fail(error, batch);
          return;
        } finally {
          this.inFlight = 0;
        }
        this.appended += batch.length;
        for (const entry of batch) entry.resolve();
      }
    } finally {
      // Cleared with no await after the last queue check, so a later append always restarts the writer.
      this.writing = false;
    }
  }

  private async writeBatch(batch: readonly PendingAppend[]): Promise<void> {
    const buffer = Buffer.from(batch.length === 1 ? batch[0]!.line : batch.map((entry) => entry.line).join(''), 'utf8');
    let stage = 'write to';
    try {
      await writeAll(this.handle, buffer);
      this.bytes += buffer.length;
      if (this.policy !== 'off') {
        stage = 'fsync';
        await this.handle.datasync();
        this.settings.onSync();
      }
    } catch (error) {
      throw new JournalError('journal_failed', `Could not ${stage} the journal ${this.file}: ${describeError(error)}`, { cause: error });
    }
  }

  /** After a failed write or fsync the file's state is unknown, so the store refuses everything after it. */
  private fail(error: unknown, batch: readonly PendingAppend[]): void {
    const message = `The journal ${this.file} failed and accepts no more appends (records acknowledged before it are safe): ${describeError(error)}`;
    this.failure = new JournalError('journal_failed', message, { cause: error });
    for (const entry of batch) entry.reject(error);
    for (const entry of this.queue.splice(0)) entry.reject(this.failure);
  }

  private async runCompaction(keep: (record: R) => boolean): Promise<{ kept: number; dropped: number }> {
    if (this.failure) throw this.failure;
    this.paused = true;
    try {
      await this.writer; // the batch in flight lands in the old file; the rest waits for the new one
      if (this.failure) throw this.failure;
      const temp = join(this.dir, COMPACT_FILE);
      let result: { kept: number; dropped: number; bytes: number };
      try {
        const dropped: Unreadable[] = [];
        const index = this.index.emptyLike();
        result = await writeCompacted(
          this.file,
          temp,
          (record) => {
            const keeps = keep(record as R);
            if (keeps) index.note(record as R);
            return keeps;
          },
          this.settings.warn,
          (u) => dropped.push(u),
        );
        // The index follows the new file, then the appends that queued meanwhile.
        for (const entry of this.queue) index.note(entry.record as R);
        this.index = index;
        // What could not be read leaves the journal only once it is safe in the quarantine file.
        if (dropped.length > 0) {
          await quarantine(this.dir, dropped, this.settings.warn);
          this.quarantined += dropped.length;
        }
        await rename(temp, this.file);
      } catch (error) {
        await unlink(temp).catch(ignoreMissing); // the journal itself is untouched
        throw error;
      }
      // The rename is done: from here a failure would leave appends going to an unlinked or non-durable file.
      try {
        const previous = this.handle;
        this.handle = await open(this.file, 'a', PRIVATE_FILE);
        await previous.close().catch(() => undefined);
        this.bytes = result.bytes;
        await syncDirectory(this.dir);
      } catch (error) {
        this.fail(error, []);
        throw this.failure;
      }
      return { kept: result.kept, dropped: result.dropped };
    } finally {
      this.paused = false;
      this.startWriter();
    }
  }
}

/** Every well-formed record of the file in order; torn and corrupt lines are skipped with a warning (and told to `onUnreadable`). */
export async function* readRecords(file: string, warn: Warn, onUnreadable: (unreadable: Unreadable) => void = () => {}): AsyncGenerator<JournalRecordBase> {
  const handle = await open(file, 'r');
  try {
    const chunk = Buffer.allocUnsafe(CHUNK_BYTES);
    let carry = Buffer.alloc(0); // the start of a line split across chunks
    let lineNumber = 0;
    for (;;) {
      const { bytesRead } = await handle.read(chunk, 0, CHUNK_BYTES, null);
      if (bytesRead === 0) break;
      const data = carry.length > 0 ? Buffer.concat([carry, chunk.subarray(0, bytesRead)]) : chunk.subarray(0, bytesRead);
      let start = 0;
      for (let end = data.indexOf(NEWLINE); end !== -1; end = data.indexOf(NEWLINE, start)) {
        lineNumber += 1;
        const record = parseLine(data.subarray(start, end), lineNumber, file, warn, onUnreadable);
        start = end + 1;
        if (record) yield record;
      }
      carry = Buffer.from(data.subarray(start)); // a copy: `chunk` is reused
    }
    if (carry.length > 0) {
      const problem = `skipped a torn last line (${carry.length} bytes with no newline, from an interrupted write)`;
      warn(`${file} line ${lineNumber + 1}: ${problem}.`);
      onUnreadable({ line: lineNumber + 1, bytes: carry, problem });
    }
  } finally {
    await handle.close();
  }
}

function parseLine(bytes: Buffer, lineNumber: number, file: string, warn: Warn, onUnreadable: (unreadable: Unreadable) => void): JournalRecordBase | null {
  if (bytes.length === 0) return null; // a blank line carries nothing
  const decoded = decodeRecord(bytes.toString('utf8'));
  if ('problem' in decoded) {
    warn(`${file} line ${lineNumber}: ${decoded.problem}`);
    onUnreadable({ line: lineNumber, bytes: Buffer.from(bytes), problem: decoded.problem });
  }
  return 'record' in decoded ? decoded.record : null;
}

/** Writes the kept records of `source` to `target` and syncs it; `source` is only read. */
async function writeCompacted(
  source: string,
  target: string,
  keep: (record: JournalRecordBase) => boolean,
  warn: Warn,
  onUnreadable: (unreadable: Unreadable) => void,
) {
  const out = await open(target, 'w', PRIVATE_FILE);
  const result = { kept: 0, dropped: 0, bytes: 0 };
  let pending = '';
  try {
    for await (const record of readRecords(source, warn, onUnreadable)) {
      if (!keep(record)) {
        result.dropped += 1;
        continue;
      }
      result.kept += 1;
      pending += `${JSON.stringify(record)}\n`;
      // Written in chunks so a large journal never sits in memory whole.
      if (pending.length >= CHUNK_BYTES) [result.bytes, pending] = [result.bytes + (await writeAll(out, Buffer.from(pending))), ''];
    }
    result.bytes += await writeAll(out, Buffer.from(pending));
    await out.sync();
  } finally {
    await out.close();
  }
  return result;
}

/**
 * Cuts a last line that has no `\n` (a write cut short by a crash, never acknowledged) so the
 * next append starts clean; the cut bytes go to the quarantine first.
 */
async function trimTornTail(handle: FileHandle, file: string, warn: Warn, keepAside: (torn: Unreadable) => Promise<void>): Promise<number> {
  const { size } = await handle.stat();
  if (size === 0) return 0;
  const reader = await open(file, 'r');
  let cut = 0;
  try {
    const chunk = Buffer.allocUnsafe(CHUNK_BYTES);
    for (let end = size; end > 0; ) {
      const start = Math.max(0, end - CHUNK_BYTES);
      const { bytesRead } = await reader.read(chunk, 0, end - start, start);
      const newline = chunk.subarray(0, bytesRead).lastIndexOf(NEWLINE);
      if (newline !== -1) {
        cut = start + newline + 1;
        break;
      }
      end = start;
    }
  } finally {
    await reader.close();
  }
  if (cut === size) return size;
  const torn = Buffer.alloc(size - cut);
  const reread = await open(file, 'r');
  try {
    await reread.read(torn, 0, torn.length, cut);
  } finally {
    await reread.close();
  }
  await keepAside({ line: -1, bytes: torn, problem: `a torn last line (${torn.length} bytes at offset ${cut} with no newline, from an interrupted write)` });
  warn(`${file}: moved a torn last line (${size - cut} bytes at offset ${cut} with no newline, from an interrupted write) to ${QUARANTINE_FILE}.`);
  await handle.truncate(cut);
  await handle.datasync();
  return cut;
}

/** write() may take part of a buffer; loop until all of it is handed over. */
async function writeAll(handle: FileHandle, buffer: Buffer): Promise<number> {
  for (let offset = 0; offset < buffer.length; ) {
    const { bytesWritten } = await handle.write(buffer, offset, buffer.length - offset, null);
    if (bytesWritten <= 0) throw new Error('write() made no progress');
    offset += bytesWritten;
  }
  return buffer.length;
}

/** Appends unreadable lines to the quarantine file, durably, with where they came from. */
async function quarantine(dir: string, lines: readonly Unreadable[], warn: Warn): Promise<void> {
  const at = new Date().toISOString();
  const text = lines
    .map((u) => `${JSON.stringify({ at, file: JOURNAL_FILE, line: u.line, problem: u.problem, text: u.bytes.toString('utf8'), base64: u.bytes.toString('base64') })}\n`)
    .join('');
  const handle = await open(join(dir, QUARANTINE_FILE), 'a', PRIVATE_FILE);
  try {
    await writeAll(handle, Buffer.from(text, 'utf8'));
    await handle.sync();
  } finally {
    await handle.close();
  }
  warn(`${join(dir, QUARANTINE_FILE)}: kept ${lines.length} unreadable journal line(s) there; the journal no longer holds them.`);
}

/** Best effort: a journal the service does not own keeps its mode, with a warning. */
async function restrict(path: string, mode: number, warn: Warn): Promise<void> {
  try {
    await chmod(path, mode);
  } catch (error) {
    warn(`could not make ${path} private (mode ${mode.toString(8)}): ${describeError(error)}`);
  }
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function ignoreMissing(error: unknown): void {
  if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
}
