// Hostile input at every route: 10,000 generated requests (valid shapes with hostile values,
// invalid JSON, huge numbers, prototype-pollution keys, control characters, 1 MB strings, odd
// headers and query strings) against a real listening server. Never a 5xx, always the route's
// own error shape, the process alive with its heap flat, nothing polluted, and a normal
// conversation still works afterwards. Then hostile credentials in every place a key is sent:
// forged and malformed JWTs, mistyped managed keys, signed tokens with hostile claims.
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
  fc.record({ method: fc.constant('POST'), path: fc.constant('/v1/messages/count_tokens'), shape: fc.constant<Shape>('anthropic'), body: fc.oneof(validShaped.anthropic, invalidJson, jsonText) }),
  fc.record({ method: fc.constantFrom('POST', 'GET', 'DELETE'), path: fc.tuple(pathSegment, fc.constantFrom('batches', 'count_tokens/x')).map(([s, tail]) => `/v1/messages/${tail}/${s}`), shape: fc.constant<Shape>('anthropic'), body: fc.oneof(fc.constant(null), invalidJson) }),
  fc.record({ method: fc.constantFrom('GET', 'POST', 'DELETE'), path: fc.constantFrom('/api/version', '/api/ps'), shape: fc.constant<Shape>('ollama'), body: fc.oneof(fc.constant(null), invalidJson) }),
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

// ---- hostile credentials ------------------------------------------------------------------

const b64url = (text: string): string => Buffer.from(text, 'utf8').toString('base64url');

describe('hostile credentials at every way a key is sent', () => {
  let server: TestServer;
  let jwks: import('node:http').Server;
  let sign: (claims: Record<string, unknown>) => Promise<string>;
  let managedKey: string;
  const ISSUER = 'https://idp.fuzz.test';
  const AUDIENCE = 'motive-fuzz';

  beforeAll(async () => {
    const { createServer } = await import('node:http');
    const { exportJWK, generateKeyPair, SignJWT } = await import('jose');
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
    const jwk = { ...(await exportJWK(publicKey)), kid: 'fuzz-key', alg: 'ES256' };
    jwks = createServer((_req, res) => res.setHeader('content-type', 'application/json').end(JSON.stringify({ keys: [jwk] })));
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
    sign = (claims) => new SignJWT(claims as never).setProtectedHeader({ alg: 'ES256', kid: 'fuzz-key' }).sign(privateKey);
    server = await startTestServer({
      apiKeys: 'sk-static-fuzz-key',
      adminApiKey: 'admin-fuzz-key',
      jwksUrl: `http://127.0.0.1:${(jwks.address() as { port: number }).port}/keys`,
      jwtIssuer: ISSUER,
      jwtAudience: AUDIENCE,
      failedKeysPerMinute: '0',
      handshakeTimeoutSeconds: '0.05',
      turnTimeoutSeconds: '0.05',
      sessionTtlSeconds: '0.2',
      maxSessions: '100000',
    });
    const made = await fetch(`${server.url}/admin/keys`, {
      method: 'POST',
      headers: { authorization: 'Bearer admin-fuzz-key', 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'fuzz', tenant: 'fuzz-tenant' }),
    });
    managedKey = ((await made.json()) as { key: string }).key;
  });
  afterAll(async () => {
    await server.close();
    jwks.closeAllConnections();
    await new Promise<void>((resolve) => jwks.close(() => resolve()));
  });

  it('3,000 forged, malformed and hostile credentials: never a 5xx, never let in, always the route\'s error shape', async () => {
    const now = Math.floor(Date.now() / 1000);
    const segment = fc.oneof(
      jsonText.map(b64url),
      fc.string({ maxLength: 60 }).map(b64url),
      fc.constantFrom('', '=', '.', '%', '!!!', 'A'.repeat(5_000)),
    );
    const header = fc.oneof(
      fc.constantFrom(
        { alg: 'none' },
        { alg: 'NONE', typ: 'JWT' },
        { alg: 'HS256', kid: 'fuzz-key' },
        { alg: 'ES256', kid: '../../../../etc/passwd' },
        { alg: 'ES256', kid: 'fuzz-key', jku: 'http://evil.test/keys' },
        { alg: 'ES256', kid: 'fuzz-key', crit: ['b64'], b64: false },
        { alg: 'RS256', kid: 'x'.repeat(10_000) },
        { alg: ['ES256'] },
        { alg: 'ES256', kid: { $ne: null } },
        { alg: 'ES256', kid: 'fuzz-key', jwk: { kty: 'EC' } },
      ),
      fc.dictionary(keyText, fc.oneof(hostileString, fc.integer()), { maxKeys: 4 }),
    );
    const payload = fc.record(
      {
        iss: fc.oneof(fc.constant(ISSUER), hostileString),
        aud: fc.oneof(fc.constant(AUDIENCE), hostileString, fc.array(hostileString, { maxLength: 3 })),
        sub: fc.oneof(hostileString, fc.integer()),
        exp: fc.oneof(fc.constant(now + 300), fc.constant(now - 300), numberToken.map(Number), hostileString),
        nbf: fc.oneof(fc.constant(now + 600), numberToken.map(Number)),
        tenant: fc.oneof(hostileString, fc.constant('a\u001fb'), fc.constant({ __proto__: { polluted: true } }), fc.array(hostileString)),
        roles: fc.oneof(fc.array(hostileString, { maxLength: 4 }), hostileString, fc.constant({ admin: true })),
      },
      { requiredKeys: [] },
    );
    const unsignedToken = fc.tuple(header, payload, segment).map(([h, p, s]) => `${b64url(JSON.stringify(h))}.${b64url(JSON.stringify(p))}.${s}`);
    const managedShaped = fc.oneof(
      fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF'), minLength: 36, maxLength: 36 }).map((s) => `mp_${s}`),
      fc.constant(managedKey.slice(0, -1) + (managedKey.endsWith('A') ? 'B' : 'A')),
      fc.constant(`${managedKey}x`),
      fc.constant(managedKey.toUpperCase()),
    );
    const credential = fc.oneof(
      { weight: 3, arbitrary: unsignedToken },
      { weight: 2, arbitrary: fc.tuple(segment, segment, segment).map((parts) => parts.join('.')) },
      { weight: 2, arbitrary: managedShaped },
      { weight: 2, arbitrary: hostileString },
      { weight: 1, arbitrary: fc.constantFrom('sk-static-fuzz-ke', 'sk-static-fuzz-key-', 'SK-STATIC-FUZZ-KEY', 'admin-fuzz-ke', 'Bearer sk-static-fuzz-key', 'sk-static-fuzz-key\u0000') },
    );
    const where = fc.constantFrom('bearer', 'bearer-lower', 'x-api-key', 'x-goog-api-key', 'api-key', 'query', 'basic', 'two-headers');
    const target = fc.constantFrom(
      { method: 'POST', path: '/v1/chat/completions', shape: 'openai' as Shape, body: '{"model":"fuzz","messages":[{"role":"user","content":"hi"}]}' },
      { method: 'POST', path: '/v1/messages', shape: 'anthropic' as Shape, body: '{"model":"fuzz","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}' },
      { method: 'POST', path: '/v1beta/models/fuzz:generateContent', shape: 'google' as Shape, body: '{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}' },
      { method: 'POST', path: '/api/chat', shape: 'ollama' as Shape, body: '{"model":"fuzz","messages":[{"role":"user","content":"hi"}],"stream":false}' },
      { method: 'GET', path: '/v1/models', shape: 'openai' as Shape, body: null },
      { method: 'GET', path: '/admin/keys', shape: 'openai' as Shape, body: null },
      { method: 'GET', path: '/admin/audit', shape: 'openai' as Shape, body: null },
    );
    const printable = (s: string): string => s.replace(/[^\t\x20-\x7e]/g, '?');
    const hostile = fc.tuple(credential, where, target).map(([cred, how, t]): Case => {
      const c = printable(cred).slice(0, 12_000);
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      let path: string = t.path;
      if (how === 'bearer') headers['authorization'] = `Bearer ${c}`;
      if (how === 'bearer-lower') headers['authorization'] = `bearer   ${c}`;
      if (how === 'basic') headers['authorization'] = `Basic ${Buffer.from(`user:${c}`).toString('base64')}`;
      if (how === 'x-api-key' || how === 'x-goog-api-key' || how === 'api-key') headers[how] = c;
      if (how === 'two-headers') Object.assign(headers, { authorization: `Bearer ${c}`, 'x-api-key': 'sk-wrong' });
      if (how === 'query') path = `${path}${path.includes('?') ? '&' : '?'}key=${encode(cred.slice(0, 2_000))}`;
      return { method: t.method, path, shape: t.shape, headers, body: t.body };
    });
    const generated = fc.sample(hostile, { numRuns: 3_000, seed: 20261205 });
    const failures: Array<{ c: Case; why: string }> = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < generated.length) {
          const c = generated[next++]!;
          const response = await fetch(`${server.url}${c.path}`, { method: c.method, headers: c.headers, ...(c.body ? { body: c.body } : {}) }).catch((err: unknown) => err as Error);
          if (response instanceof Error) {
            failures.push({ c, why: `request failed: ${response.message}` });
            continue;
          }
          const text = await response.text();
          if (response.status !== 401) {
            failures.push({ c, why: `${response.status}: ${text.slice(0, 200)}` });
            continue;
          }
          let body: unknown = null;
          try {
            body = JSON.parse(text);
          } catch {
            // not JSON: reported below
          }
          if (!errorShaped(c.shape, body)) failures.push({ c, why: `401 not in the ${c.shape} error shape: ${text.slice(0, 200)}` });
        }
      }),
    );
    expect(failures.slice(0, 5).map((f) => ({ why: f.why, path: f.c.path, headers: Object.fromEntries(Object.entries(f.c.headers).map(([k, v]) => [k, v.slice(0, 120)])) }))).toEqual([]);
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  }, 600_000);

  it('correctly signed tokens with hostile claims: taken or refused with 401 (431 when too large for a header), never a 5xx', async () => {
    const now = Math.floor(Date.now() / 1000);
    const claims = fc.record({
      sub: fc.oneof(hostileString, fc.integer().map(String)),
      tenant: fc.oneof(hostileString, fc.constant('a\u001fb'), fc.constant(42), fc.constant(null), fc.array(hostileString, { maxLength: 2 })),
      roles: fc.oneof(fc.array(fc.oneof(hostileString, fc.constantFrom('admin', 'global:admin', 'global:viewer', 'global:')), { maxLength: 4 }), hostileString, fc.constant(7)),
    });
    const samples = fc.sample(claims, { numRuns: 300, seed: 7 });
    const statuses = new Map<number, number>();
    for (const c of samples) {
      if (c.sub === '') continue; // no sub: refused, as tested elsewhere
      const token = await sign({ iss: ISSUER, aud: AUDIENCE, exp: now + 300, ...c });
      const response = await fetch(`${server.url}/v1/models`, { headers: { authorization: `Bearer ${token}` } });
      await response.arrayBuffer();
      statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
      // 431: a claim of a megabyte makes a token larger than any header may be.
      expect([200, 401, 431], `claims ${JSON.stringify(c).slice(0, 300)}`).toContain(response.status);
      // An admin role in a token reaches only what it names: never the static admin key's routes for a tenant it does not hold.
      if (response.status === 200 && typeof c.tenant === 'string' && /^[A-Za-z0-9]/.test(c.tenant) && Array.isArray(c.roles) && !c.roles.includes('global:admin')) {
        const audit = await fetch(`${server.url}/admin/audit?tenant=someone-else`, { headers: { authorization: `Bearer ${token}` } });
        await audit.arrayBuffer();
        expect([401, 403]).toContain(audit.status);
      }
    }
    expect(statuses.get(200) ?? 0).toBeGreaterThan(0);
    expect(statuses.get(401) ?? 0).toBeGreaterThan(0);
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
  }, 120_000);
});
