// Hostile input at every route: 10,000 generated requests (valid shapes with hostile values,
// invalid JSON, huge numbers, prototype-pollution keys, control characters, 1 MB strings, odd
// headers and query strings) against a real listening server. Never a 5xx, always the route's
// own error shape, the process alive with its heap flat, nothing polluted, and a normal
// conversation still works afterwards.
import fc from 'fast-check';
import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { Participant, uniqueId, untilHeld } from '../http/support.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const heapUsed = (): number => {
  gc();
  gc();
  return getHeapStatistics().used_heap_size;
};

type Shape = 'openai' | 'anthropic' | 'google' | 'ollama' | 'any';

interface Case {
  readonly method: string;
  readonly path: string;
  readonly shape: Shape;
  readonly headers: Record<string, string>;
  readonly body: string | null;
}

// ---- generators ---------------------------------------------------------------------------

const nasty = fc.constantFrom(
  '',
  ' ',
  '\u0000',
  '\u0000\u0001\u001f\u007f',
  '\r\n\r\n',
  '\u202e\u200b\ufeff',
  '\ud800',
  '__proto__',
  'constructor',
  'prototype',
  '💥🧨'.repeat(50),
  '%00%ff%',
  '../../../etc/passwd',
  '<script>alert(1)</script>',
  "'; DROP TABLE sessions; --",
  '|A',
  'x|B',
  'a'.repeat(300),
);
const hostileString = fc.oneof(
  { weight: 20, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 12, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 20, arbitrary: nasty },
  // 1 MB strings: rare per string, so that about one body in ten carries one.
  { weight: 1, arbitrary: fc.constant('m'.repeat(1_000_000)) },
);
/** Number tokens as JSON text, including ones no double holds. */
const numberToken = fc.oneof(
  fc.integer().map(String),
  fc.double({ noNaN: true, noDefaultInfinity: true }).map((d) => JSON.stringify(d)),
  fc.constantFrom('1e999', '-1e999', '123456789012345678901234567890', '-0', '0.0000000000000000000001', '9007199254740993'),
);
const keyText = fc.oneof(hostileString, fc.constantFrom('__proto__', 'constructor', 'prototype', 'model', 'messages', 'content', 'role', 'stream', 'input', 'contents', 'parts', 'system', 'text', 'type'));

/** Any JSON value as text; objects may repeat keys and carry __proto__ as an own key. */
const jsonText: fc.Arbitrary<string> = fc.letrec<{ value: string }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    hostileString.map((s) => JSON.stringify(s)),
    numberToken,
    fc.constantFrom('true', 'false', 'null'),
    fc.array(tie('value'), { maxLength: 4 }).map((items) => `[${items.join(',')}]`),
    fc.array(fc.tuple(keyText, tie('value')), { maxLength: 5 }).map((entries) => `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(',')}}`),
  ),
})).value;

const value = fc.oneof(jsonText, hostileString.map((s) => JSON.stringify(s)));
const obj = (fields: Record<string, fc.Arbitrary<string>>): fc.Arbitrary<string> =>
  fc.record(fields, { requiredKeys: [] }).map((r) => `{${Object.entries(r).map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(',')}}`);

const textMessage = obj({ role: fc.oneof(fc.constantFrom('"user"', '"assistant"', '"system"', '"developer"', '"tool"'), value), content: value });
const messages = fc.array(fc.oneof(textMessage, value), { maxLength: 4 }).map((m) => `[${m.join(',')}]`);
const modelValue = fc.oneof({ weight: 3, arbitrary: hostileString.map((s) => JSON.stringify(s)) }, { weight: 1, arbitrary: value });

const validShaped: Record<Exclude<Shape, 'any'>, fc.Arbitrary<string>> = {
  openai: obj({ model: modelValue, messages, stream: value, stream_options: value, temperature: numberToken, __proto__: value, constructor: value }),
  anthropic: obj({ model: modelValue, messages, system: value, max_tokens: numberToken, stream: value, __proto__: value }),
  google: obj({ contents: fc.array(obj({ role: value, parts: fc.array(obj({ text: value }), { maxLength: 3 }).map((p) => `[${p.join(',')}]`) }), { maxLength: 3 }).map((c) => `[${c.join(',')}]`), systemInstruction: value }),
  ollama: obj({ model: modelValue, messages, stream: value, options: value }),
};
const invalidJson = fc.oneof(
  fc.string({ maxLength: 60 }),
  fc.constantFrom('{', '{"model":', '[1,2', '{"a":1}}', 'nul', '{"model":"x",}', "{'model':'x'}", '\u0000{}', '{"__proto__":{"polluted":true}}'),
  jsonText.map((t) => t.slice(0, Math.max(0, t.length - 1))),
);

/** Percent-encodes any string, lone surrogates included (as their UTF-8 replacement bytes). */
const encode = (s: string): string => [...Buffer.from(s, 'utf8')].map((b) => (/[A-Za-z0-9_.~-]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).padStart(2, '0')}`)).join('');

const pathSegment = fc.oneof(hostileString.map((s) => encode(s.slice(0, 300))), fc.constantFrom('npc', '%E0%A4%A', '..', '%2e%2e', 'a%2Fb', 'x|A'));
const query = fc.oneof(
  fc.constant(''),
  fc.array(fc.tuple(fc.constantFrom('key', 'api-version', 'alt', 'format', 'session', 'side', 'since', '__proto__', 'x'), hostileString), { maxLength: 3 }).map(
    (pairs) => `?${pairs.map(([k, v]) => `${k}=${encode(v.slice(0, 200))}`).join('&')}`,
  ),
  fc.constantFrom('?%', '?a=%zz', '?&&&==', '?key'),
);
const headers = fc.record(
  {
    'content-type': fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=latin1', ''),
    'x-stainless-retry-count': fc.oneof(fc.constantFrom('1', '-1', '1e9', 'NaN', '99999999999999999999'), fc.string({ maxLength: 10 })),
    'idempotency-key': fc.string({ maxLength: 300 }),
    'anthropic-version': fc.constantFrom('2023-06-01', 'x'),
    authorization: fc.constantFrom('Bearer x', 'Bearer', 'Basic Zm9vOmJhcg=='),
  },
  { requiredKeys: ['content-type'] },
).map((h) => Object.fromEntries(Object.entries(h).filter(([, v]) => /^[\t\x20-\x7e]*$/.test(v))));

const route = fc.oneof(
  fc.record({ method: fc.constant('POST'), path: fc.constant('/v1/chat/completions'), shape: fc.constant<Shape>('openai'), body: fc.oneof(validShaped.openai, invalidJson, jsonText) }),
  fc.record({ method: fc.constant('POST'), path: fc.constant('/v1/messages'), shape: fc.constant<Shape>('anthropic'), body: fc.oneof(validShaped.anthropic, invalidJson, jsonText) }),
  fc.record({ method: fc.constant('POST'), path: fc.constant('/v1/responses'), shape: fc.constant<Shape>('openai'), body: fc.oneof(obj({ model: modelValue, input: fc.oneof(value, messages), instructions: value, previous_response_id: value, stream: value }), invalidJson) }),
  fc.record({ method: fc.constant('POST'), path: fc.tuple(pathSegment, fc.constantFrom(':generateContent', ':streamGenerateContent', ':bogus', '')).map(([s, m]) => `/v1beta/models/${s}${m}`), shape: fc.constant<Shape>('google'), body: fc.oneof(validShaped.google, invalidJson) }),
  fc.record({ method: fc.constant('POST'), path: fc.constant('/api/chat'), shape: fc.constant<Shape>('ollama'), body: fc.oneof(validShaped.ollama, invalidJson) }),
  fc.record({ method: fc.constant('POST'), path: pathSegment.map((s) => `/openai/deployments/${s}/chat/completions`), shape: fc.constant<Shape>('openai'), body: fc.oneof(validShaped.openai, invalidJson) }),
  fc.record({ method: fc.constantFrom('GET', 'DELETE', 'PUT', 'PATCH'), path: fc.constantFrom('/v1/models', '/api/tags', '/health', '/v1/realtime', '/admin/health', '/admin/sessions'), shape: fc.constant<Shape>('any'), body: fc.constant(null) }),
  fc.record({ method: fc.constantFrom('GET', 'DELETE', 'POST'), path: pathSegment.map((s) => `/v1/sessions/${s}`), shape: fc.constant<Shape>('openai'), body: fc.constant(null) }),
  fc.record({ method: fc.constant('GET'), path: pathSegment.map((s) => `/admin/sessions/${s}/transcript`), shape: fc.constant<Shape>('openai'), body: fc.constant(null) }),
  fc.record({ method: fc.constantFrom('GET', 'POST'), path: pathSegment.map((s) => `/${s}/${s}`), shape: fc.constant<Shape>('openai'), body: fc.oneof(fc.constant(null), invalidJson) }),
);

const cases: fc.Arbitrary<Case> = fc.tuple(route, query, headers).map(([r, q, h]) => ({ method: r.method, path: `${r.path}${q}`, shape: r.shape, headers: h, body: r.body }));

// ---- the error shape of each protocol -----------------------------------------------------

function errorShaped(shape: Shape, body: any): boolean {
  const openai = body?.error && typeof body.error.message === 'string' && typeof body.error.code === 'string';
  switch (shape) {
    case 'openai':
      return Boolean(openai);
    case 'anthropic':
      return body?.type === 'error' && typeof body.error?.type === 'string' && typeof body.error?.message === 'string';
    case 'google':
      return typeof body?.error?.code === 'number' && typeof body.error.status === 'string' && typeof body.error.message === 'string';
    case 'ollama':
      return typeof body?.error === 'string';
    case 'any':
      return Boolean(openai) || typeof body?.error === 'string' || typeof body?.error?.status === 'string';
  }
}

async function send(server: TestServer, c: Case): Promise<string | null> {
  let response: Response;
  try {
    response = await fetch(`${server.url}${c.path}`, {
      method: c.method,
      headers: c.headers,
      ...(c.body !== null && c.method !== 'GET' ? { body: c.body } : {}),
      signal: AbortSignal.timeout(20_000),
    });
  } catch (err) {
    // A malformed URL the client itself refuses to send is not the server's doing.
    if (err instanceof TypeError && /Invalid URL|invalid/i.test(String((err as Error).message))) return null;
    return `request failed: ${String(err)}`;
  }
  const text = await response.text();
  if (response.status >= 500) return `${response.status}: ${text.slice(0, 300)}`;
  if (response.status < 400) return null;
  if (response.status === 426 || c.method === 'HEAD') return null;
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return `${response.status} with a body that is not JSON: ${text.slice(0, 200)}`;
  }
  return errorShaped(c.shape, body) ? null : `${response.status} not in the ${c.shape} error shape: ${text.slice(0, 300)}`;
}

/** Runs the cases `concurrency` at a time; returns the failures with their cases. */
async function run(server: TestServer, all: readonly Case[], concurrency = 32): Promise<Array<{ c: Case; why: string }>> {
  const failures: Array<{ c: Case; why: string }> = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < all.length) {
        const c = all[next++]!;
        const why = await send(server, c);
        if (why) failures.push({ c: { ...c, body: c.body && c.body.length > 500 ? `${c.body.slice(0, 500)}…` : c.body }, why });
      }
    }),
  );
  return failures;
}

describe('hostile input at every route', () => {
  let server: TestServer;
  beforeAll(async () => {
    // Short waits, so valid-looking requests do not hold the run up; sessions expire quickly.
    server = await startTestServer({
      handshakeTimeoutSeconds: '0.05',
      turnTimeoutSeconds: '0.05',
      sessionTtlSeconds: '0.2',
      maxSessions: '100000',
      maxMessageBytes: '2097152',
    });
  });
  afterAll(() => server.close());

  it('10,000 generated requests: never a 5xx, always the route\'s error shape, heap flat, nothing polluted', async () => {
    const generated = fc.sample(cases, { numRuns: 10_000, seed: 20261125 });
    const first = await run(server, generated.slice(0, 5_000));
    const heapAfterFirst = heapUsed();
    const second = await run(server, generated.slice(5_000));
    const heapAfterSecond = heapUsed();

    expect([...first, ...second].slice(0, 5)).toEqual([]);
    // The second half ran on a warm server: its heap must not keep growing.
    expect(heapAfterSecond - heapAfterFirst).toBeLessThan(32 * 1024 * 1024);
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
    expect(Object.keys(Object.prototype)).toEqual([]);

    // Still serving, and a normal conversation works.
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
  }, 600_000);

  it('a normal conversation still works afterwards', async () => {
    const session = uniqueId('after-fuzz');
    const a = new Participant(server.client(), session);
    const b = new Participant(server.client(), session);
    // Longer waits than the fuzzing server's: retries re-attach, so 408s are absorbed.
    const handshake = a.say('ping', { maxRetries: 20 });
    await untilHeld(server, session, 'A');
    const opening = b.say('Hello after the storm.', { maxRetries: 20 });
    expect(await handshake).toBe('Hello after the storm.');
    const reply = a.say('All calm.', { maxRetries: 20 });
    expect(await opening).toBe('All calm.');
    reply.catch(() => undefined);
  }, 60_000);
});
