/**
 * `motive-proxy transcript <session>`: prints a session's transcript from the journal file,
 * with no server running. The file is only read (never opened for appending), so it is safe
 * to run next to a live service.
 */
import { displayId, scopedId } from './auth/tenants.js';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseCommandLine, UsageError } from './args.js';
import { OPTIONS } from './config.js';
import { JOURNAL_FILE, readRecords } from './journal/file-store.js';
import type { JournalRecord } from './journal/records.js';
import { buildTranscript, loadSessionRecords, toJson, toMarkdown } from './journal/transcript.js';
import { splitModel } from './protocols/adapter.js';

export const TRANSCRIPT_USAGE = 'motive-proxy transcript <session> [--tenant NAME] [--journal-path DIR] [--format md|json]';

export interface CommandResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

const usage = (problem: string): CommandResult => ({ code: 2, stdout: '', stderr: `motive-proxy: ${problem}\nUsage: ${TRANSCRIPT_USAGE}\n` });
const failure = (problem: string): CommandResult => ({ code: 1, stdout: '', stderr: `motive-proxy: ${problem}\n` });

/** Exit codes: 0 printed, 1 no such session or no journal there, 2 bad usage. */
export async function transcriptCommand(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<CommandResult> {
  let line;
  try {
    line = parseCommandLine(argv, { 'journal-path': { type: 'string' }, tenant: { type: 'string' }, format: { type: 'string', default: 'md' }, help: { type: 'boolean', short: 'h' } }, { allowPositionals: true });
  } catch (err) {
    if (err instanceof UsageError) return usage(err.message);
    throw err;
  }
  const { values, positionals } = line;
  if (values['help'] === true) return { code: 0, stdout: `Usage: ${TRANSCRIPT_USAGE}\n`, stderr: '' };
  const [model, ...extra] = positionals;
  if (model === undefined || model === '') return usage('name the session whose transcript to print');
  if (extra.length > 0) return usage(`unexpected argument '${extra[0]}'`);
  const format = values['format'];
  if (format !== 'md' && format !== 'json') return usage(`--format must be md or json, not '${format}'`);

  const fromEnv = env[OPTIONS.journalPath.env];
  const dir = (values['journal-path'] as string | undefined) ?? (fromEnv ? fromEnv : OPTIONS.journalPath.default);
  if (dir === 'memory') return usage(`a 'memory' journal keeps nothing on disk; ask the running service: GET /admin/sessions/<session>/transcript`);
  const file = join(dir, JOURNAL_FILE);
  if (!existsSync(file)) return failure(`there is no journal at ${dir} (no ${JOURNAL_FILE}); pass --journal-path or set ${OPTIONS.journalPath.env}`);

  const warnings: string[] = [];
  const source = { read: () => readRecords(file, (message) => warnings.push(`motive-proxy: ${message}\n`)) as AsyncIterable<JournalRecord> };
  if (model.includes('\u001f')) return usage('a session name may not contain the control character U+001F');
  const tenant = (values['tenant'] as string | undefined) || null;
  const sessionId = scopedId(tenant, splitModel(model).sessionId);
  let records: JournalRecord[];
  try {
    records = await loadSessionRecords(source, sessionId);
  } catch (err) {
    return failure(`cannot read the journal ${file}: ${(err as Error).message}`);
  }
  const transcript = buildTranscript(records);
  if (!transcript) {
    const result = failure(`the journal at ${dir} has no session '${displayId(sessionId)}' (closed sessions are dropped when the journal is compacted)`);
    return { ...result, stderr: warnings.join('') + result.stderr };
  }
  const stdout = format === 'json' ? `${JSON.stringify(toJson(transcript), null, 2)}\n` : toMarkdown(transcript);
  return { code: 0, stdout, stderr: warnings.join('') };
}
