/**
 * GET /admin/sessions/:id/transcript, through a real listening server with a journal on
 * disk: a conversation held with the official openai SDK (each side with its own system
 * prompt) comes back from the journal as JSON and as Markdown, with sides, turns and times;
 * unknown sessions are 404 and other methods 405, in the OpenAI error shape; callers that are
 * not on loopback (or come through a proxy) get the same 404 as an unknown route.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { TestServer } from '../helpers/server.js';
import { apiError, expectOpenAIError, Participant, uniqueId, untilHeld, useServers } from './support.js';

const serve = useServers();
const transcriptUrl = (server: TestServer, id: string, query = '') => `${server.url}/admin/sessions/${encodeURIComponent(id)}/transcript${query}`;

/** A's handshake, then two turns each way; A's third turn is left held, waiting for B. */
async function converse(server: TestServer, id: string): Promise<{ held: Promise<string> }> {
  const client = server.client({ maxRetries: 0 });
  const a = new Participant(client, id, { system: 'You guard the city gate.' });
  const b = new Participant(client, id, { system: 'You are a weary traveller.' });
  const handshake = a.say('ping');
  await untilHeld(server, id, 'A');
  const opening = b.say('Good evening, guard.');
  expect(await handshake).toBe('Good evening, guard.');
  const question = a.say('Who goes there?');
  expect(await opening).toBe('Who goes there?');
  const answer = b.say('A weary traveller.');
  expect(await question).toBe('A weary traveller.');
  const held = a.say('State your business.');
  held.catch(() => undefined);
  expect(await answer).toBe('State your business.');
  await untilHeld(server, id, 'A');
  return { held };
}

describe('GET /admin/sessions/:id/transcript', () => {
  it('returns the conversation from the journal as JSON: system prompts, each message with side, turn and time', async () => {
    const server = await serve({ journalPath: mkdtempSync(join(tmpdir(), 'admin-')) });
    const id = uniqueId('gate');
    await converse(server, id);

    const response = await fetch(transcriptUrl(server, id));
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    const body = (await response.json()) as any;
    expect(body).toMatchObject({ object: 'session.transcript', session: id, turns: { A: 3, B: 2 }, outcome: { status: 'open', reason: null, at: null } });
    const entries = body.entries as Array<{ at: string; side: string; kind: string; turn: number; content: string }>;
    expect(entries.map((e) => [e.side, e.kind, e.turn, e.content])).toEqual([
      ['A', 'system', 1, 'You guard the city gate.'],
      ['A', 'handshake', 1, 'ping'],
      ['B', 'system', 1, 'You are a weary traveller.'],
      ['B', 'message', 1, 'Good evening, guard.'],
      ['A', 'delivery', 1, 'Good evening, guard.'],
      ['A', 'message', 2, 'Who goes there?'],
      ['B', 'delivery', 1, 'Who goes there?'],
      ['B', 'message', 2, 'A weary traveller.'],
      ['A', 'delivery', 2, 'A weary traveller.'],
      ['A', 'message', 3, 'State your business.'],
      ['B', 'delivery', 2, 'State your business.'],
    ]);
    for (const entry of entries) expect(entry.at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(Date.parse(body.started_at)).toBeLessThanOrEqual(Date.parse(body.last_activity_at));
  });

  it('returns Markdown with ?format=md, and the outcome once the session is deleted', async () => {
    const server = await serve({ journalPath: mkdtempSync(join(tmpdir(), 'admin-')) });
    const id = uniqueId('gate');
    const { held } = await converse(server, id);
    // Listen for the held request's end before ending the session: its 410 may come first.
    const ended = apiError(held);
    expect((await fetch(`${server.url}/v1/sessions/${id}`, { method: 'DELETE' })).status).toBe(200);
    expect((await ended).status).toBe(410);

    const response = await fetch(transcriptUrl(server, id, '?format=md'));
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/markdown; charset=utf-8');
    const md = await response.text();
    const time = '\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z';
    expect(md.split('\n')[0]).toBe(`# Transcript of session \`${id}\``);
    expect(md).toMatch(new RegExp(`^- Outcome: closed \\(deleted\\) at ${time}$`, 'm'));
    expect(md).toMatch(new RegExp(`^> \\*\\*System prompt \\(side A\\)\\*\\* · from turn 1 · ${time}\\n>\\n> You guard the city gate\\.$`, 'm'));
    expect(md).toMatch(new RegExp(`^> \\*\\*System prompt \\(side B\\)\\*\\* · from turn 1 · ${time}\\n>\\n> You are a weary traveller\\.$`, 'm'));
    expect(md).toMatch(new RegExp(`^\\*\\*A\\*\\* · turn 1 · ${time} · handshake \\(not forwarded\\)\\n\\nping$`, 'm'));
    expect(md).toMatch(new RegExp(`^\\*\\*B\\*\\* · turn 1 · ${time}\\n\\nGood evening, guard\\.$`, 'm'));
    expect(md).toMatch(new RegExp(`^\\*\\*A\\*\\* · turn 2 · ${time}\\n\\nWho goes there\\?$`, 'm'));
    expect(md).toMatch(new RegExp(`^\\*\\*A\\*\\* · turn 3 · ${time}\\n\\nState your business\\.$`, 'm'));

    const json = (await (await fetch(transcriptUrl(server, id, '?format=json'))).json()) as any;
    expect(json.outcome).toEqual({ status: 'closed', reason: 'deleted', at: expect.stringMatching(new RegExp(`^${time}$`)) });
  });

  it('works with an in-memory journal too', async () => {
    const server = await serve();
    const id = uniqueId('mem');
    await converse(server, id);
    const body = (await (await fetch(transcriptUrl(server, id))).json()) as any;
    expect(body.entries.filter((e: any) => e.kind === 'message').map((e: any) => e.content)).toEqual(['Good evening, guard.', 'Who goes there?', 'A weary traveller.', 'State your business.']);
  });

  it('answers 404 not_found for an unknown session, 405 for other methods, 422 for an unknown format', async () => {
    const server = await serve();
    const unknown = await fetch(transcriptUrl(server, 'no-such-session'));
    expect(unknown.status).toBe(404);
    const body = (await unknown.json()) as any;
    expectOpenAIError(body, 'not_found');
    expect(body.error.message).toContain("'no-such-session'");

    const post = await fetch(transcriptUrl(server, 'any'), { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
    expectOpenAIError(await post.json(), 'method_not_allowed');

    const bad = await fetch(transcriptUrl(server, 'any', '?format=html'));
    expect(bad.status).toBe(422);
    expectOpenAIError(await bad.json(), 'invalid_request');
  });

  it('answers a caller that is not on loopback, or that came through a proxy, as if the route did not exist', async () => {
    const server = await serve();
    const id = uniqueId('hidden');
    await converse(server, id);
    const app = server.service.app;
    const url = `/admin/sessions/${id}/transcript`;
    const unknownRoute = await app.inject({ method: 'GET', url: '/admin/nothing-here', remoteAddress: '127.0.0.1' });

    for (const request of [
      { remoteAddress: '192.0.2.7' },
      { remoteAddress: '::ffff:10.1.2.3' },
      { remoteAddress: '127.0.0.1', headers: { 'x-forwarded-for': '203.0.113.9' } },
      { remoteAddress: '127.0.0.1', headers: { forwarded: 'for=203.0.113.9' } },
    ]) {
      for (const method of ['GET', 'POST'] as const) {
        const response = await app.inject({ method, url, ...request });
        expect(response.statusCode, `${method} from ${JSON.stringify(request)}`).toBe(404);
        expect(response.json().error).toEqual({ ...unknownRoute.json().error, message: `There is no route ${method} ${url}.` });
      }
    }
    for (const remoteAddress of ['127.0.0.1', '127.8.9.10', '::1', '::ffff:127.0.0.1']) {
      expect((await app.inject({ method: 'GET', url, remoteAddress })).statusCode, remoteAddress).toBe(200);
    }
  });
});
