// Proves that sessions are isolated under load: 50 sessions run at once on one server, both
// sides of each re-sending full histories through the SDK (half of them streaming), several
// turns each, and every delivery is exactly the message the session's own peer sent — never
// another session's.
import { describe, expect, it } from 'vitest';
import { Participant, apiError, uniqueId, untilHeld, useServers } from './support.js';
import type { TestServer } from '../helpers/server.js';

const start = useServers();
const SESSIONS = 50;
const TURNS = 4;

async function converse(server: TestServer, index: number): Promise<void> {
  const session = uniqueId(`load-${index}`);
  const stream = index % 2 === 1;
  const a = new Participant(server.client(), session, { stream });
  const b = new Participant(server.client(), session, { stream });
  const fromA = (turn: number) => `${session} A#${turn} — ${'α'.repeat(index % 7)}`;
  const fromB = (turn: number) => `${session} B#${turn}\n${'β'.repeat(index % 5)}`;

  let pendingA = a.say('ping');
  await untilHeld(server, session, 'A');
  let pendingB = b.say(fromB(0));
  expect(await pendingA).toBe(fromB(0));
  for (let turn = 1; turn <= TURNS; turn++) {
    pendingA = a.say(fromA(turn));
    expect(await pendingB).toBe(fromA(turn));
    pendingB = b.say(fromB(turn));
    expect(await pendingA).toBe(fromB(turn));
  }
  const ended = apiError(pendingB);
  await fetch(`${server.url}/v1/sessions/${encodeURIComponent(session)}`, { method: 'DELETE' });
  expect((await ended).code).toBe('session_closed');
}

describe('50 concurrent sessions', () => {
  it('never cross messages', async () => {
    const server = await start({ keepaliveIntervalSeconds: '0.1' });
    const results = await Promise.allSettled(Array.from({ length: SESSIONS }, (_, i) => converse(server, i)));
    const failures = results.flatMap((r, i) => (r.status === 'rejected' ? [`session ${i}: ${String(r.reason)}`] : []));
    expect(failures).toEqual([]);
    expect(server.service.ctx.sessions.size).toBe(0);
  });
});
