// A journal with unreadable lines, read by a real listening service on restart: nothing it could
// not read is deleted (unreadable lines go to journal.quarantine.jsonl before the journal is
// rewritten), a session whose first record or a middle record is unreadable is not rebuilt
// into a state nobody can vouch for but reported in the log and /admin/health with its records
// kept, and every intact session comes back as before. The journal's files are private.
import { readFileSync, statSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createService, type Service } from '../../src/server.js';
import { createLogger } from '../../src/telemetry/logger.js';

type Msg = { role: 'user' | 'assistant'; content: string };
const user = (content: string): Msg => ({ role: 'user', content });
const asst = (content: string): Msg => ({ role: 'assistant', content });

const running: Service[] = [];
const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.shutdown()));
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

async function start(dir: string): Promise<{ service: Service; log: string[]; client: OpenAI }> {
  const { config } = loadConfig({ host: '127.0.0.1', port: '0', logLevel: 'info', logFormat: 'json', journalPath: dir, journalFsync: 'always', maxEventLoopDelayMs: '0' }, {});
  const log: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      log.push(chunk.toString());
      done();
    },
  });
  const service = await createService(config, createLogger(config, sink));
  running.push(service);
  return { service, log, client: new OpenAI({ baseURL: `${service.url}/v1`, apiKey: 'k', maxRetries: 0 }) };
}

async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (check()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`timed out waiting until ${what}`);
}

/** A paired session: A's handshake answered by b1, then A's a1 delivered to B; A is left held. */
async function converse(s: Awaited<ReturnType<typeof start>>, model: string): Promise<void> {
  const held = (side: 'A' | 'B') => s.service.ctx.sessions.get(model)?.context.sides[side].held != null;
  const handshake = s.client.chat.completions.create({ model, messages: [user('ping')] });
  await until(() => held('A'), 'A is held');
  const b1 = s.client.chat.completions.create({ model, messages: [user('b1')] });
  expect((await handshake).choices[0]!.message.content).toBe('b1');
  s.client.chat.completions.create({ model, messages: [user('ping'), asst('b1'), user('a1')] }).catch(() => undefined);
  expect((await b1).choices[0]!.message.content).toBe('a1');
  await until(() => held('A'), 'A is held again');
}

const lines = (file: string) => readFileSync(file, 'utf8').split('\n').filter(Boolean);

describe('a journal with unreadable lines', () => {
  it('keeps every line it cannot read, restores intact sessions, and reports the others without deleting them', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'corrupt-'));
    dirs.push(dir);
    const file = join(dir, 'journal.jsonl');
    const first = await start(dir);
    for (const model of ['headless', 'holed', 'intact']) await converse(first, model);
    await first.service.shutdown();
    running.splice(0);

    // Damage: the first record of one session, a middle record of another.
    const before = lines(file);
    const index = (session: string, seq: number) => before.findIndex((l) => (JSON.parse(l) as { session: string; seq: number }).session === session && JSON.parse(l).seq === seq);
    const damaged = [...before];
    damaged[index('headless', 1)] = '{"v":1,"session":"headless","seq":1,"type":"SideConn\u0000ected"';
    damaged[index('holed', 3)] = 'garbage from a bad sector \u0001\u0002';
    writeFileSync(file, `${damaged.join('\n')}\n`);
    const readable = (session: string) => damaged.filter((l) => l.includes(`"session":"${session}"`) && l.startsWith('{') && l.endsWith('}')).length;
    const headlessReadable = readable('headless'); // its first line no longer parses
    const holedReadable = readable('holed');

    const second = await start(dir);
    // Intact: back as it was; the others: not rebuilt.
    expect(second.service.ctx.sessions.get('intact')?.context.sides.A.deliveries).toEqual(['b1']);
    expect(second.service.ctx.sessions.get('headless')).toBeUndefined();
    expect(second.service.ctx.sessions.get('holed')).toBeUndefined();

    // Reported: in the log, per session, and in /admin/health; /health gives counts only.
    const log = second.log.join('');
    expect(log).toMatch(/session 'headless' was not restored: its first 1 record\(s\) could not be read/);
    expect(log).toMatch(/session 'holed' was not restored: record\(s\) 3–3 could not be read/);
    expect(log).toMatch(/2 unreadable line\(s\), now kept in journal.quarantine.jsonl/);
    const admin = (await (await fetch(`${second.service.url}/admin/health`)).json()) as { journal: { recovery: { damaged: { session: string; problem: string; records: number }[]; unreadable: number } } };
    expect(admin.journal.recovery.unreadable).toBe(2);
    expect(admin.journal.recovery.damaged.map((d) => d.session).sort()).toEqual(['headless', 'holed']);
    const pub = (await (await fetch(`${second.service.url}/health`)).json()) as { journal: { recovery: { damaged: number } } };
    expect(pub.journal.recovery.damaged).toBe(2);
    expect(JSON.stringify(pub)).not.toContain('headless');

    // Nothing unread was deleted: both bad lines are in the quarantine file, byte for byte, and
    // every readable record of the damaged sessions is still in the journal.
    const quarantine = lines(join(dir, 'journal.quarantine.jsonl')).map((l) => JSON.parse(l) as { base64: string });
    expect(quarantine.map((q) => Buffer.from(q.base64, 'base64').toString('utf8')).sort()).toEqual(
      [damaged[index('headless', 1)]!, damaged[index('holed', 3)]!].sort(),
    );
    const after = lines(file);
    expect(after.filter((l) => l.includes('"session":"headless"'))).toHaveLength(headlessReadable);
    expect(after.filter((l) => l.includes('"session":"holed"'))).toHaveLength(holedReadable);
    expect(after.every((l) => JSON.parse(l))).toBeTruthy();

    // A third start still keeps them (only what was understood is ever compacted).
    await second.service.shutdown();
    running.splice(0);
    const third = await start(dir);
    expect(lines(file).filter((l) => l.includes('"session":"holed"'))).toHaveLength(holedReadable);
    expect(third.service.ctx.sessions.get('intact')).toBeDefined();

    // The journal is private.
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    for (const f of ['journal.jsonl', 'journal.quarantine.jsonl']) expect(statSync(join(dir, f)).mode & 0o777).toBe(0o600);
  });

  it('records, on start, a delivery the replay re-derived but the journal lacks (the service stopped between the two records)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'missed-'));
    dirs.push(dir);
    const file = join(dir, 'journal.jsonl');
    const first = await start(dir);
    await converse(first, 'missed');
    await first.service.shutdown();
    running.splice(0);
    // The disk holds B's first turn, but not the record of the delivery it made to A, nor anything
    // after it (a SIGKILL between the two appends: the writer is one ordered loop).
    const all = lines(file);
    const bFirst = all.findIndex((l) => l.includes('"type":"SideConnected"') && l.includes('"side":"B"'));
    expect(all[bFirst + 1]).toContain('"type":"MessageDelivered"');
    writeFileSync(file, `${all.slice(0, bFirst + 1).join('\n')}\n`);

    const second = await start(dir);
    expect(second.service.ctx.sessions.get('missed')?.context.sides.A.deliveries).toEqual(['b1']);
    await second.service.ctx.journal.store.flush();
    const delivered = lines(file)
      .map((l) => JSON.parse(l) as { session: string; type: string; side: string; content: string; seq: number })
      .filter((r) => r.session === 'missed' && r.type === 'MessageDelivered');
    expect(delivered.map((r) => [r.side, r.content])).toEqual([['A', 'b1']]);
    // Numbered on from the session's last record, before the restart's own record.
    const seqs = lines(file).map((l) => JSON.parse(l) as { session: string; seq: number; type: string }).filter((r) => r.session === 'missed');
    expect(seqs.map((r) => r.seq)).toEqual(seqs.map((_, i) => i + 1));
    expect(seqs.at(-1)!.type).toBe('SessionResumed');
  });
});

