// A journal written before session facts (record version 1, test/fixtures/journal-v1, written by
// the previous build through a real server: a system prompt, a preamble, two messages in one
// turn, a timeout and its retry, a client that left, a WebSocket side, a graceful restart) is
// read by this build: its sessions come back as they were, their transcripts read the same, the
// conversations go on, and what is written from then on is version 2.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';

const FIXTURE = new URL('../fixtures/journal-v1/journal.jsonl', import.meta.url);
const dirs: string[] = [];
const servers: TestServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

type Line = { v: number; session: string; seq: number; type: string; side?: string; content?: string; turn?: { content: string } };
/** The journal text with every time in it moved so the latest is a minute ago. */
function shiftedToNow(text: string): string {
  const records = text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { at: number; event?: { at?: number; turn?: { at: number } } });
  const delta = Date.now() - 60_000 - Math.max(...records.map((r) => r.at));
  for (const r of records) {
    r.at += delta;
    if (r.event?.at !== undefined) r.event.at += delta;
    if (r.event?.turn) r.event.turn.at += delta;
  }
  return records.map((r) => JSON.stringify(r)).join('\n') + '\n';
}

const lines = (file: string): Line[] => readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Line);

describe('a version-1 journal', () => {
  it('replays into the same sessions, whose conversations go on in version-2 records', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'upgrade-'));
    dirs.push(dir);
    const file = join(dir, 'journal.jsonl');
    // Recovery counts the TTL from a session's last activity: the fixture's times are moved, all by
    // the same amount, so that its last record is a minute old.
    writeFileSync(file, shiftedToNow(readFileSync(FIXTURE, 'utf8')));
    const server = await startTestServer({ journalPath: dir, journalFsync: 'always' });
    servers.push(server);
    const { sessions } = server.service.ctx;

    const tavern = sessions.get('tavern')!.context;
    expect(tavern.sides.A.deliveries).toEqual(['Here.', 'Riders.']);
    expect(tavern.sides.B.deliveries).toEqual(['Thanks.\n\nNews?']);
    expect(tavern.sides.A.system).toBe('You are Barliman.');
    expect(tavern.sides.A.preamble).toBe('Welcome!');
    expect(tavern.sides.A.lastTurn).toMatchObject({ content: 'Thanks.\n\nNews?', messages: ['Thanks.', 'News?'], answer: 1 });
    expect(tavern.sides.A.held).toBeNull();
    expect(tavern.sides.B.held).toBeNull();
    expect(sessions.get('ws')!.context.sides.A.deliveries).toEqual(['Hello from a bot.']);

    // Its transcript, read back from the journal, is the fold of the same facts.
    const transcript = (await (await fetch(`${server.url}/admin/sessions/tavern/transcript`)).json()) as { entries: { side: string; kind: string; content: string }[] };
    expect(transcript.entries.map((e) => [e.side, e.kind, e.content])).toEqual([
      ['A', 'system', 'You are Barliman.'],
      ['A', 'preamble', 'Welcome!'],
      ['A', 'handshake', 'An ale.'],
      ['B', 'message', 'Here.'],
      ['A', 'delivery', 'Here.'],
      ['A', 'message', 'Thanks.\n\nNews?'],
      ['B', 'delivery', 'Thanks.\n\nNews?'],
      ['B', 'message', 'Riders.'],
      ['A', 'delivery', 'Riders.'],
    ]);

    // The conversation goes on with the histories the clients hold.
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'k', maxRetries: 0 });
    const a = client.chat.completions.create({
      model: 'tavern',
      messages: [
        { role: 'system', content: 'You are Barliman.' },
        { role: 'assistant', content: 'Welcome!' },
        { role: 'user', content: 'An ale.' },
        { role: 'assistant', content: 'Here.' },
        { role: 'user', content: 'Thanks.' },
        { role: 'user', content: 'News?' },
        { role: 'assistant', content: 'Riders.' },
        { role: 'user', content: 'Black riders?' },
      ],
    });
    const b = await client.chat.completions.create({
      model: 'tavern',
      messages: [
        { role: 'user', content: 'Here.' },
        { role: 'assistant', content: 'Thanks.\n\nNews?' },
        { role: 'user', content: 'Riders.' },
      ],
    });
    expect(b.choices[0]!.message.content).toBe('Black riders?');
    a.catch(() => undefined);

    // Version-1 records stay as they were; what is written now is version 2, numbered on.
    await server.service.ctx.journal.store.flush();
    const records = lines(file).filter((r) => r.session === 'tavern');
    expect(records.map((r) => r.seq)).toEqual(records.map((_, i) => i + 1));
    const firstNew = records.findIndex((r) => r.v === 2);
    expect(firstNew).toBeGreaterThan(0);
    expect(records.slice(0, firstNew).every((r) => r.v === 1)).toBe(true);
    expect(records.slice(firstNew).every((r) => r.v === 2)).toBe(true);
    expect(records.slice(firstNew).map((r) => r.type)).toEqual(['SessionResumed', 'MessageSent', 'RetryReceived', 'MessageDelivered']);
    expect(records.find((r) => r.v === 2 && r.type === 'MessageSent')!.turn!.content).toBe('Black riders?');
  });
});
