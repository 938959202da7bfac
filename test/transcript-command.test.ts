/**
 * `motive-proxy transcript <session>` as users run it, with no server: after a conversation
 * against a service on a journal directory and its shutdown, the built command prints the
 * transcript from the journal file as Markdown (default) or JSON; the journal path comes from
 * --journal-path, else JOURNAL_PATH. An unknown session exits 1, bad usage exits 2.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { apiError, Participant, untilHeld } from './http/support.js';
import { startTestServer } from './helpers/server.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const cli = join(root, 'dist/src/cli.js');

/** `npm test` builds before vitest; when vitest runs alone on changed sources, build here (only then, so
 *  a parallel test running the built CLI never sees dist/ being rewritten). */
function buildIfStale(): void {
  const newest = (dir: string): number =>
    Math.max(0, ...readdirSync(dir, { withFileTypes: true }).map((e) => (e.isDirectory() ? newest(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs)));
  let built = 0;
  try {
    built = statSync(join(root, 'dist/src/transcript-command.js')).mtimeMs;
  } catch {
    // not built yet
  }
  if (built < Math.max(newest(join(root, 'src')), newest(join(root, 'machines')))) {
    execFileSync('npm', ['run', 'build', '--silent'], { cwd: root, stdio: 'inherit' });
  }
}

function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const { JOURNAL_PATH: _ignored, ...inherited } = process.env;
    execFile(process.execPath, [cli, ...args], { cwd: root, env: { ...inherited, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

const session = 'cli-transcript';
let journal = '';

beforeAll(async () => {
  buildIfStale();
  journal = mkdtempSync(join(tmpdir(), 'transcript-cli-'));
  const server = await startTestServer({ journalPath: journal });
  try {
    const client = server.client({ maxRetries: 0 });
    const a = new Participant(client, session, { system: 'You are the innkeeper.' });
    const b = new Participant(client, session);
    const handshake = a.say('hello?');
    await untilHeld(server, session, 'A');
    const opening = b.say('A room for the night, please.');
    expect(await handshake).toBe('A room for the night, please.');
    const held = a.say('That will be two silver.');
    held.catch(() => undefined); // awaited below, after the shutdown
    expect(await opening).toBe('That will be two silver.');
    await untilHeld(server, session, 'A');
    await server.close();
    // The shutdown answered A's held turn 503; it resumes after a restart.
    expect((await apiError(held)).status).toBe(503);
  } finally {
    await server.close();
  }
}, 120_000);

describe('motive-proxy transcript', () => {
  it('prints the Markdown transcript from --journal-path', async () => {
    const { code, stdout, stderr } = await run(['transcript', session, '--journal-path', journal]);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout).toMatch(/^# Transcript of session `cli-transcript`\n/);
    expect(stdout).toMatch(/^- Outcome: open \(the proxy shut down at .+Z; the session resumes after a restart\)$/m);
    expect(stdout).toContain('- Turns: A 2, B 1');
    expect(stdout).toMatch(/^> \*\*System prompt \(side A\)\*\* · from turn 1 · \S+Z\n>\n> You are the innkeeper\.$/m);
    expect(stdout).not.toContain('side B)');
    expect(stdout).toMatch(/^\*\*A\*\* · turn 1 · \S+Z · handshake \(not forwarded\)\n\nhello\?$/m);
    expect(stdout).toMatch(/^\*\*B\*\* · turn 1 · \S+Z\n\nA room for the night, please\.$/m);
    expect(stdout).toMatch(/^\*\*A\*\* · turn 2 · \S+Z\n\nThat will be two silver\.$/m);
  });

  it('prints JSON with --format json, finding the journal through JOURNAL_PATH', async () => {
    const { code, stdout } = await run(['transcript', session, '--format', 'json'], { JOURNAL_PATH: journal });
    expect(code).toBe(0);
    const body = JSON.parse(stdout);
    expect(body).toMatchObject({ object: 'session.transcript', session, turns: { A: 2, B: 1 }, outcome: { status: 'open', reason: 'shutdown' } });
    expect(body.entries.map((e: { side: string; kind: string; turn: number }) => `${e.side}${e.turn} ${e.kind}`)).toEqual([
      'A1 system',
      'A1 handshake',
      'B1 message',
      'A1 delivery',
      'A2 message',
      'B1 delivery',
    ]);
  });

  it('exits 1 with a message for an unknown session or a directory with no journal', async () => {
    const unknown = await run(['transcript', 'no-such-session', '--journal-path', journal]);
    expect(unknown.code).toBe(1);
    expect(unknown.stdout).toBe('');
    expect(unknown.stderr).toContain("no session 'no-such-session'");

    const empty = await run(['transcript', session, '--journal-path', mkdtempSync(join(tmpdir(), 'transcript-none-'))]);
    expect(empty.code).toBe(1);
    expect(empty.stderr).toContain('there is no journal at');
  });

  it('exits 2 with the usage line for bad usage', async () => {
    const cases = [['transcript'], ['transcript', session, '--format', 'html'], ['transcript', session, '--bogus'], ['transcript', 'a', 'b']];
    const results = await Promise.all(cases.map((args) => run([...args, '--journal-path', journal])));
    results.forEach(({ code, stderr }, i) => {
      expect(code, cases[i]!.join(' ')).toBe(2);
      expect(stderr).toContain('Usage: motive-proxy transcript <session> [--tenant NAME] [--journal-path DIR] [--format md|json]');
    });
    const memory = await run(['transcript', session], { JOURNAL_PATH: 'memory' });
    expect(memory.code).toBe(2);
    expect(memory.stderr).toContain('keeps nothing on disk');
  });

  it('is listed in --help', async () => {
    const { code, stdout } = await run(['--help']);
    expect(code).toBe(0);
    expect(stdout).toContain('motive-proxy transcript <session> [--tenant NAME] [--journal-path DIR] [--format md|json]');
  });
});
