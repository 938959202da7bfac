// Proves the delivery guarantees of PROTOCOL.md §4 around queues and held requests: messages
// sent while the other side is not waiting reach it as one delivery joined by a blank line; a
// new turn supersedes its side's held request (409 superseded, x-should-retry: false, which the
// SDK honours) with both contents delivered in order; a repeat of an unanswered turn takes over
// its wait without delivering twice.
import { describe, expect, it } from 'vitest';
import type OpenAI from 'openai';
import { apiError, recordingClient, uniqueId, untilHeld, useServers } from './support.js';
import type { TestServer } from '../helpers/server.js';

const start = useServers();

type Messages = OpenAI.Chat.Completions.ChatCompletionMessageParam[];
const user = (content: string) => ({ role: 'user' as const, content });
const assistant = (content: string) => ({ role: 'assistant' as const, content });

/** Pairs A and B and leaves A held on its turn "a1" with B not waiting (B has just received "a1"). */
async function pairAndLeaveBIdle(server: TestServer, session: string, client: OpenAI) {
  const send = (messages: Messages) => client.chat.completions.create({ model: session, messages });
  const handshake = send([user('ping')]);
  await untilHeld(server, session, 'A');
  const b1 = send([user('b1')]);
  expect((await handshake).choices[0]!.message.content).toBe('b1');
  const a1 = send([user('ping'), assistant('b1'), user('a1')]);
  expect((await b1).choices[0]!.message.content).toBe('a1');
  return { send, a1 };
}

describe('queueing and supersession', () => {
  it('joins several messages sent while the other side is not waiting into one delivery', async () => {
    const server = await start();
    const session = uniqueId('join');
    const client = server.client();
    const { send, a1 } = await pairAndLeaveBIdle(server, session, client);
    const first = apiError(a1);

    const recorded = recordingClient(server); // default retries: the 409 must not be retried
    const a2 = apiError(recorded.client.chat.completions.create({ model: session, messages: [user('ping'), assistant('b1'), user('a1'), user('a2: second line')] }));
    const firstSuperseded = await first; // a2 has reached the server and taken over A's wait
    const a3 = send([user('ping'), assistant('b1'), user('a1'), user('a2: second line'), user('a3\nwith a newline')]);

    // Each newer turn superseded the held one; the SDK did not retry the 409s.
    for (const superseded of [firstSuperseded, await a2]) {
      expect(superseded.status).toBe(409);
      expect(superseded.code).toBe('superseded');
      expect(superseded.headers?.get('x-should-retry')).toBe('false');
    }
    expect(recorded.statuses).toEqual([409]);

    // B's next request is answered at once with both queued messages, and A's held turn gets B's words.
    const b2 = await send([user('b1'), assistant('a1'), user('b2')]);
    expect(b2.choices[0]!.message.content).toBe('a2: second line\n\na3\nwith a newline');
    expect((await a3).choices[0]!.message.content).toBe('b2');

    // Nothing is delivered twice: B's next answer is only A's next message.
    const b3 = send([user('b1'), assistant('a1'), user('b2'), assistant('a2: second line\n\na3\nwith a newline'), user('b3')]);
    const a4 = send([user('ping'), assistant('b1'), user('a1'), user('a2: second line'), user('a3\nwith a newline'), assistant('b2'), user('a4')]);
    expect((await b3).choices[0]!.message.content).toBe('a4');
    expect((await a4).choices[0]!.message.content).toBe('b3'); // b3 was queued for A, which was not waiting
  });

  it('delivers a superseded turn and the turn that superseded it, in order, to a waiting side', async () => {
    const server = await start();
    const session = uniqueId('supersede');
    const client = server.client({ maxRetries: 0 });
    const { send, a1 } = await pairAndLeaveBIdle(server, session, client);
    const b2 = send([user('b1'), assistant('a1'), user('b2')]);
    expect((await a1).choices[0]!.message.content).toBe('b2');
    await untilHeld(server, session, 'B');

    // B is waiting: A's turn goes to it at once; A's later turn supersedes A's held request.
    const a2 = send([user('ping'), assistant('b1'), user('a1'), assistant('b2'), user('a2')]);
    expect((await b2).choices[0]!.message.content).toBe('a2');
    const superseded = apiError(a2);
    const a3 = send([user('ping'), assistant('b1'), user('a1'), assistant('b2'), user('a2'), user('a3')]);
    expect((await superseded).code).toBe('superseded');
    const b3 = await send([user('b1'), assistant('a1'), user('b2'), assistant('a2'), user('b3')]);
    expect(b3.choices[0]!.message.content).toBe('a3');
    expect((await a3).choices[0]!.message.content).toBe('b3');
  });

  it('lets a repeat of an unanswered turn take over its wait without delivering it twice', async () => {
    const server = await start();
    const session = uniqueId('takeover');
    const client = server.client({ maxRetries: 0 });
    const { send, a1 } = await pairAndLeaveBIdle(server, session, client);
    const first = apiError(a1);
    // The same request again (same history, same content): a retry, not a new turn.
    const again = send([user('ping'), assistant('b1'), user('a1')]);
    const superseded = await first;
    expect(superseded.status).toBe(409);
    expect(superseded.code).toBe('superseded');
    const b2 = send([user('b1'), assistant('a1'), user('b2')]);
    expect((await again).choices[0]!.message.content).toBe('b2');
    // B got "a1" once (above) and now only A's next message.
    const a2 = send([user('ping'), assistant('b1'), user('a1'), assistant('b2'), user('a2')]);
    expect((await b2).choices[0]!.message.content).toBe('a2');
    const ended = apiError(a2);
    await fetch(`${server.url}/v1/sessions/${session}`, { method: 'DELETE' });
    expect((await ended).status).toBe(410);
  });
});
