// Proves that content is delivered byte-exact whatever it contains: emoji (with ZWJ sequences,
// skin tones and flags), CJK, right-to-left text, combining characters (never normalised),
// CRLF and blank lines, tabs, surrounding whitespace and control characters, in both directions
// and in streams — including a message large enough to cross many TCP packets, so multi-byte
// characters are split between reads.
import { describe, expect, it } from 'vitest';
import { Participant, apiError, uniqueId, untilHeld, useServers } from './support.js';

const start = useServers();

const SAMPLES = [
  'Family: 👩‍👩‍👧‍👦, thumbs 👍🏽, flags 🇯🇵🇧🇷, keycap 1️⃣',
  '你好，世界。日本語のテキスト、한국어 문장。',
  'مرحبا بالعالم — שלום עולם (right to left)',
  'cafe\u0301 (decomposed) vs café (composed); Z̸̢͓a̵l̶g̷o',
  '  leading and trailing spaces  ',
  'line one\r\nline two\n\nafter a blank line\ttab\u000b\u001b[31mansi\u001b[0m',
  '"quotes", \\backslashes\\, </script> & <b>tags</b> \u2028 \u2029',
  '𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 and 🧑🏿‍🚀 astronaut',
];

const big = '🌍世'.repeat(6000) + ' end'; // ~43 KB of UTF-8

const utf8 = (text: string) => Buffer.from(text, 'utf8');

describe('unicode and whitespace', () => {
  for (const stream of [false, true]) {
    it(`are delivered byte-exact in both directions (stream: ${stream})`, async () => {
      const server = await start({ maxMessageBytes: String(1024 * 1024), keepaliveIntervalSeconds: '0.05' });
      const session = uniqueId('unicode');
      const a = new Participant(server.client(), session, { stream });
      const b = new Participant(server.client(), session, { stream });
      const fromB = [...SAMPLES, big];
      const fromA = [...SAMPLES].reverse().concat(`${big}!`);

      let pendingA = a.say('ping 🏓');
      await untilHeld(server, session, 'A');
      let pendingB = b.say(fromB[0]!);
      for (let i = 0; i < fromB.length; i++) {
        const gotA = await pendingA;
        expect(utf8(gotA).equals(utf8(fromB[i]!))).toBe(true);
        expect(gotA).toBe(fromB[i]);
        pendingA = a.say(fromA[i]!);
        const gotB = await pendingB;
        expect(utf8(gotB).equals(utf8(fromA[i]!))).toBe(true);
        expect(gotB).toBe(fromA[i]);
        if (i + 1 < fromB.length) pendingB = b.say(fromB[i + 1]!);
      }
      // Combining characters were not normalised on the way.
      expect(b.history.some((m) => m.role === 'assistant' && typeof m.content === 'string' && m.content.includes('cafe\u0301'))).toBe(true);

      const ended = apiError(pendingA);
      await fetch(`${server.url}/v1/sessions/${encodeURIComponent(session)}`, { method: 'DELETE' });
      expect((await ended).code).toBe('session_closed');
    });
  }

  it('accept a session id with unicode and echo it unchanged', async () => {
    const server = await start();
    const session = uniqueId('会话-🎲');
    const client = server.client();
    const pendingA = client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ping' }] });
    await untilHeld(server, session, 'A');
    const pendingB = apiError(client.chat.completions.create({ model: session, messages: [{ role: 'user', content: 'ça va ? 😊' }] }));
    const answer = await pendingA;
    expect(answer.model).toBe(session);
    expect(answer.choices[0]!.message.content).toBe('ça va ? 😊');
    const deleted = await fetch(`${server.url}/v1/sessions/${encodeURIComponent(session)}`, { method: 'DELETE' });
    expect(await deleted.json()).toEqual({ id: session, object: 'session', deleted: true });
    expect((await pendingB).status).toBe(410);
  });
});
